//! `GET /metrics` after a real call: the call is counted by agent and outcome, and the
//! per-frame host-latency histogram holds the call's frames (Prometheus text format).

use switchboard::simulate::{self, Options};
use switchboard_tests::{Gateway, beckett, write_config};

const CONFIG: &str = r#"
[plugins.echo]
path = "{plugins}/echo.wasm"

[[agents]]
name = "metrics-echo"
realtime = { plugin = "echo", settings = { mode = "immediate" } }

[routing]
default = "metrics-echo"
"#;

async fn scrape(gateway: &Gateway) -> anyhow::Result<String> {
    let response = reqwest::get(format!("{}/metrics", gateway.url)).await?;
    anyhow::ensure!(response.status().is_success(), "HTTP {}", response.status());
    Ok(response.text().await?)
}

/// The value of the sample line that starts with `series` (name and labels), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_counted_and_its_frames_timed() -> anyhow::Result<()> {
    let gateway = Gateway::start(&write_config(CONFIG)?).await?;
    let before = scrape(&gateway).await?;
    let frames_before = sample(&before, "switchboard_frame_host_seconds_count").unwrap_or(0.0);

    let audio: Vec<i16> = beckett()?.into_iter().take(2 * 8000).collect();
    let mut opts = Options::new(&gateway.url, audio);
    opts.idle_hangup = std::time::Duration::from_millis(300);
    let mut ended = gateway.state.subscribe();
    let summary = simulate::run(opts).await?;
    assert!(summary.frames_sent >= 100);
    tokio::time::timeout(std::time::Duration::from_secs(5), ended.recv()).await??;

    let text = scrape(&gateway).await?;
    assert_eq!(
        sample(
            &text,
            r#"switchboard_calls_total{agent="metrics-echo",outcome="completed"}"#
        ),
        Some(1.0),
        "{text}"
    );
    let frames = sample(&text, "switchboard_frame_host_seconds_count").unwrap_or(0.0);
    assert!(
        frames - frames_before >= summary.frames_sent as f64,
        "{frames} - {frames_before} frames timed for {} sent",
        summary.frames_sent
    );
    // A real histogram: cumulative buckets ending in +Inf, and a sum.
    let le_5ms = sample(
        &text,
        r#"switchboard_frame_host_seconds_bucket{le="0.005"}"#,
    );
    let le_inf = sample(&text, r#"switchboard_frame_host_seconds_bucket{le="+Inf"}"#);
    assert!(le_5ms.is_some() && le_inf == Some(frames), "{text}");
    assert!(sample(&text, "switchboard_frame_host_seconds_sum").is_some_and(|s| s > 0.0));
    assert!(
        text.contains("# TYPE switchboard_frame_host_seconds histogram"),
        "{text}"
    );
    assert!(sample(&text, "switchboard_playback_lead_seconds_count").is_some_and(|c| c > 0.0));
    assert_eq!(sample(&text, "switchboard_active_calls"), Some(0.0));
    Ok(())
}
