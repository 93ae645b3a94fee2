//! Hot reload: an edit to agents.toml reaches new calls while live calls keep the config and the
//! plugin session they started with (even when the edit removes their agent); a broken edit is
//! refused and the old config goes on serving.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchboard::call::EndReason;
use switchboard::reload::ReloadError;
use switchboard::server::CallEnded;
use switchboard::simulate::{self, Options, Summary};
use switchboard_tests::phone::{self, PhoneLog};
use switchboard_tests::{Gateway, render_config, write_config};
use tokio::time::Instant;

/// An agents file with one echo agent, `name`, that takes every call, with echo's `settings`
/// (TOML inline-table contents). The agent's `realtime` line is line 10, `routing.default` 13.
fn one_agent(name: &str, settings: &str) -> String {
    format!(
        r#"
[twilio]
validate_signatures = false

[plugins.echo]
path = "{{plugins}}/echo.wasm"

[[agents]]
name = "{name}"
realtime = {{ plugin = "echo", settings = {{ {settings} }} }}

[routing]
default = "{name}"
"#
    )
}

/// Every caller frame comes straight back.
const IMMEDIATE: &str = r#"mode = "immediate""#;

/// Answers only after the caller pauses.
const UTTERANCE: &str = r#"mode = "utterance", silence_ms = 400"#;

/// How long the live call lasts: long enough for a reload (plugins are compiled again, seconds
/// in a debug build on a busy machine) and a second call while it is live.
const LIVE_CALL: Duration = Duration::from_secs(15);

/// Rewrites `path` as an editor saves: a new file renamed over the old one.
fn save(path: &Path, body: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, render_config(body)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Starts a live call of [`LIVE_CALL`] (a caller talking throughout) and waits until the
/// gateway runs it.
async fn live_call(gw: &Gateway) -> anyhow::Result<tokio::task::JoinHandle<PhoneLog>> {
    let url = gw.url.clone();
    let call = tokio::spawn(async move {
        phone::call(&url, json!({}), phone::speech(15_000), LIVE_CALL)
            .await
            .expect("the live call's socket works")
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.state.active_calls() == 0 {
        anyhow::ensure!(Instant::now() < deadline, "the live call never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let it settle into its echo.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(call)
}

/// Waits (at most 20 s) until the default agent new calls get is `name`; when that happened.
async fn until_default_is(gw: &Gateway, name: &str) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if gw.state.context().config.default_agent.as_deref() == Some(name) {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the edit never took effect: default agent is {:?}",
            gw.state.context().config.default_agent
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A short call to the default agent: 1 s of tone, then hang up after 1.5 s of quiet.
async fn short_call(url: &str) -> anyhow::Result<Summary> {
    let tone: Vec<i16> = (0..8000)
        .map(|i| (8000.0 * (f64::from(i) * 0.3).sin()) as i16)
        .collect();
    let mut options = Options::new(url, tone);
    options.idle_hangup = Duration::from_millis(1500);
    Ok(simulate::run(options).await?)
}

fn agent_of(summary: &Summary) -> Option<&str> {
    summary
        .parameters
        .iter()
        .find(|(k, _)| k == "agent")
        .map(|(_, v)| v.as_str())
}

/// Frames the live call heard in `window` after `from`.
fn frames_between(log: &PhoneLog, from: Instant, window: Duration) -> usize {
    log.media
        .iter()
        .filter(|(at, _)| *at >= from && *at < from + window)
        .count()
}

/// The call-ended event of the call routed to `agent`, waiting at most 10 s.
async fn ended_call(
    events: &mut tokio::sync::broadcast::Receiver<CallEnded>,
    agent: &str,
) -> anyhow::Result<CallEnded> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv()).await??;
        if event.stats.agent.as_deref() == Some(agent) {
            return Ok(event);
        }
    }
}

/// The watcher sees an editor's save: new calls go to the new default agent while the live
/// call of the agent the edit removed goes on, echoing, on the config it started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_edit_reaches_new_calls_while_the_live_call_keeps_its_agent() -> anyhow::Result<()> {
    let path = write_config(&one_agent("first", IMMEDIATE))?;
    let gw = Gateway::start_watching(&path).await?;
    let mut ended = gw.state.subscribe();
    let before = gw.state.context();
    let live = live_call(&gw).await?;
    let call_started = Instant::now();

    save(&path, &one_agent("second", IMMEDIATE))?;
    let reloaded = until_default_is(&gw, "second").await?;
    assert!(
        reloaded < call_started + LIVE_CALL - Duration::from_secs(3),
        "the reload took too long to test the live call"
    );
    let now = gw.state.context();
    assert!(now.config.agent("first").is_none(), "the edit removed it");
    assert!(!Arc::ptr_eq(&before.config, &now.config));

    let summary = short_call(&gw.url).await?;
    assert_eq!(agent_of(&summary), Some("second"), "{}", summary.twiml);
    assert!(summary.frames_received > 0, "the new agent answered");
    assert!(!live.is_finished(), "the live call is still on");

    let log = live.await?;
    let after = frames_between(&log, reloaded, Duration::from_secs(2));
    assert!(
        after >= 50,
        "the live call kept echoing after the reload: {after} frames in 2 s"
    );
    let event = ended_call(&mut ended, "first").await?;
    assert_eq!(event.reason, EndReason::Stop, "ended by its caller");
    // The reload stalled no live call: compiling plugins on an async worker held this call's
    // frames for seconds (a backlog still queued at hang-up); off the workers, at most a
    // second's worth is left on a busy machine.
    let gap = log
        .media
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    assert!(
        event.stats.frames_out + 50 >= event.stats.frames_in,
        "echoed {} of {} frames; longest gap between frames {gap:?}",
        event.stats.frames_out,
        event.stats.frames_in
    );
    Ok(())
}

/// A reload that changes an agent's settings: the live call keeps the session it opened (still
/// echoing every frame at once), a new call gets the new settings (replies only after a pause).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_settings_reach_new_calls_only() -> anyhow::Result<()> {
    let path = write_config(&one_agent("first", IMMEDIATE))?;
    let gw = Gateway::start(&path).await?;
    let mut ended = gw.state.subscribe();
    let live = live_call(&gw).await?;

    save(&path, &one_agent("first", UTTERANCE))?;
    let summary = gw.reload().await?;
    let reloaded = Instant::now();
    assert_eq!(summary.config.agents, 1);
    assert_eq!(summary.config.default_agent.as_deref(), Some("first"));
    assert_eq!(
        gw.state.context().config.agents[0]
            .realtime()
            .map(|r| r.effective_settings["mode"].clone()),
        Some(json!("utterance"))
    );

    let new = short_call(&gw.url).await?;
    assert_eq!(agent_of(&new), Some("first"));
    let first_audio = new
        .time_to_first_audio
        .expect("the new call heard its echo");
    assert!(
        first_audio >= Duration::from_millis(1000),
        "utterance mode replies after the second of tone, not at once: {first_audio:?}"
    );

    let log = live.await?;
    let after = frames_between(&log, reloaded, Duration::from_secs(1));
    assert!(
        after >= 25,
        "the live call still echoes at once after the reload: {after} frames in 1 s"
    );
    let event = ended_call(&mut ended, "first").await?;
    assert_eq!(event.reason, EndReason::Stop);
    Ok(())
}

/// The configuration reloads the watcher refused, from `/metrics`.
async fn failed_reloads(url: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("switchboard_config_reloads_total{result=\"failed\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64))
}

/// A broken edit is refused with every problem located, by a direct reload and by the watcher
/// (which counts it); the old config keeps serving; a plugin that does not load is refused at
/// its `path`; the next good edit still takes effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_edit_is_refused_and_the_old_config_still_serves() -> anyhow::Result<()> {
    let path = write_config(&one_agent("first", IMMEDIATE))?;
    let gw = Gateway::start_watching(&path).await?;
    let before = gw.state.context();
    let failed_before = failed_reloads(&gw.url).await?;

    // Line 10: an unknown plugin. Line 13: an unknown default agent.
    let broken = one_agent("first", IMMEDIATE)
        .replace(
            "realtime = { plugin = \"echo\"",
            "realtime = { plugin = \"ekko\"",
        )
        .replace("default = \"first\"", "default = \"nobody\"");
    save(&path, &broken)?;
    let Err(ReloadError::Config(errors)) = gw.reload().await else {
        panic!("the broken file was accepted");
    };
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].contains("agents.toml:10:"), "{lines:#?}");
    assert!(lines[0].contains("agents[0].realtime.plugin"), "{lines:#?}");
    assert!(lines[0].contains("\"ekko\""), "{lines:#?}");
    assert!(lines[1].contains("agents.toml:13:"), "{lines:#?}");
    assert!(lines[1].contains("routing.default"), "{lines:#?}");

    // The watcher saw the save too, and refused it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while failed_reloads(&gw.url).await? <= failed_before {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the watcher never refused the file"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        Arc::ptr_eq(&before.config, &gw.state.context().config),
        "nothing was replaced"
    );
    let summary = short_call(&gw.url).await?;
    assert_eq!(agent_of(&summary), Some("first"), "the old config serves");
    assert!(summary.frames_received > 0, "and its agent answers");

    // A plugin file that is not a component: refused at its path, old config kept.
    let dir = path.parent().expect("a directory");
    std::fs::write(dir.join("broken.wasm"), b"not a component")?;
    let bad_plugin = one_agent("first", IMMEDIATE).replace(
        "[[agents]]",
        "[plugins.broken]\npath = \"broken.wasm\"\n\n[[agents]]",
    );
    save(&path, &bad_plugin)?;
    match gw.reload().await {
        Err(ReloadError::Plugins(e)) => {
            assert_eq!(e.key(), Some("plugins.broken.path"), "{e}");
            assert_eq!(e.line(), Some(9), "{e}");
            assert!(e.to_string().contains("not a valid WASM component"), "{e}");
        }
        other => panic!("expected a plugin error, got {other:?}"),
    }
    assert!(Arc::ptr_eq(&before.config, &gw.state.context().config));

    // The next good save still takes effect through the watcher.
    save(&path, &one_agent("second", IMMEDIATE))?;
    until_default_is(&gw, "second").await?;
    Ok(())
}
