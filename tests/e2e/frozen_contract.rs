//! Plugins built for an older contract keep working: `tests/plugins/frozen-v0-1`, built
//! against the frozen `switchboard:plugin@0.1.0` WIT (`plugin-api/wit-0.1.0/`) without the
//! SDK, loads as a WASM component and as a native library, and serves a whole call in each:
//! the caller hears their audio back, and a mark the plugin queued on DTMF `1` is reported
//! played to it (it says so in the transcript).

use std::time::Duration;

use switchboard::call::{EndReason, Side};
use switchboard::simulate::{self, Options};
use switchboard_tests::{Gateway, beckett, write_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_for_contract_0_1_0_serves_calls_in_both_builds() -> anyhow::Result<()> {
    for path in ["{plugins}/frozen_v0_1.wasm", "{native:frozen_v0_1}"] {
        let config = format!(
            r#"
[plugins.frozen]
path = "{path}"

[[agents]]
name = "frozen"
realtime = {{ plugin = "frozen" }}

[routing]
default = "frozen"
"#
        );
        let gateway = Gateway::start(&write_config(&config)?).await?;
        let mut ended = gateway.state.subscribe();
        let mut audio = beckett()?;
        audio.truncate(8000 * 3);
        let mut opts = Options::new(&gateway.url, audio);
        opts.dtmf = vec![(Duration::from_millis(500), "1".into())];
        let summary = simulate::run(opts).await?;
        assert_eq!(summary.rejected, None, "{path}: {}", summary.twiml);
        assert!(
            summary.frames_received * 10 >= summary.frames_sent * 9,
            "{path}: sent {} frames, heard {} back",
            summary.frames_sent,
            summary.frames_received
        );
        assert!(
            summary.heard.iter().any(|s| *s != 0),
            "{path}: the echo was silent"
        );
        let end = tokio::time::timeout(Duration::from_secs(10), ended.recv()).await??;
        assert_eq!(end.reason, EndReason::Stop, "{path}");
        let said: Vec<&str> = end
            .stats
            .transcript
            .iter()
            .filter(|t| t.side == Side::Agent)
            .map(|t| t.text.as_str())
            .collect();
        assert_eq!(said, ["played one"], "{path}");
    }
    Ok(())
}

/// The frozen contract is never edited: its bytes are the ones 0.1.0 was released with.
#[test]
fn the_frozen_0_1_0_wit_is_unchanged() -> anyhow::Result<()> {
    use sha2::Digest as _;
    let path = switchboard_tests::workspace_root().join("plugin-api/wit-0.1.0/plugin.wit");
    let digest = sha2::Sha256::digest(std::fs::read(&path)?);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "e6fa885020866a358e89d619594b9686fcbf164f03d22c6d6d7a0f7ef76bf7d4",
        "{} was edited: a released contract is frozen; put new shapes in a new version",
        path.display()
    );
    Ok(())
}
