//! Graceful drain, as a rollout does it: SIGTERM to a gateway carrying calls. `/readyz` turns
//! unready and new webhooks get 503 at once; a call that ends within `drain_seconds` ends
//! normally; a call still live at the deadline hears the apology and is closed; both records are
//! written; the process exits 0. The same with `serve --shards 2` (thread-per-core), where the
//! calls live on the shards' runtimes and the drain runs on the main one.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, KEYS, api_get, block_on, echo_wasm, serve, serve_with, temp};

#[test]
fn sigterm_drains_live_calls_then_exits_zero() {
    drains("drain", &[]);
}

#[test]
fn sigterm_drains_a_sharded_gateway_too() {
    drains("drain-shards", &["--shards", "2"]);
}

/// SIGTERM to `serve` (with `extra` arguments) carrying a short and a long call.
fn drains(name: &str, extra: &[&str]) {
    let echo = echo_wasm();
    let dir = temp(name);
    let _ = std::fs::remove_file(dir.join("calls.db"));
    let config = dir.join("agents.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
drain_seconds = 4

[twilio]
auth_token = "${{TWILIO_AUTH_TOKEN}}"

[api]
tokens = ["${{SWITCHBOARD_API_TOKEN}}"]

[records]
path = "calls.db"

[plugins.echo]
path = "{}"

[[agents]]
name = "echo"
realtime = {{ plugin = "echo", settings = {{ mode = "immediate" }} }}

[routing]
default = "echo"
"#,
            echo.display()
        ),
    )
    .expect("write config");
    let tone = |seconds: usize| -> Vec<i16> {
        (0..8000 * seconds)
            .map(|i| ((i as f64 * 0.2).sin() * 8000.0) as i16)
            .collect()
    };
    let short = dir.join("short.wav");
    let long = dir.join("long.wav");
    switchboard::simulate::write_wav(&short, &tone(2)).expect("short.wav");
    switchboard::simulate::write_wav(&long, &tone(60)).expect("long.wav");

    let (mut server, address, _log) = serve_with(&config, extra);
    let shards = extra
        .iter()
        .position(|a| *a == "--shards")
        .and_then(|i| extra.get(i + 1))
        .map_or(1, |n| n.parse::<u64>().expect("shards"));
    let health = api_get(&address, "/healthz");
    assert_eq!(health["shards"], shards, "{health}");
    if shards > 1 {
        // A shard's single-threaded runtime answered.
        assert_eq!(health["workers"], 1, "{health}");
    }
    let simulate = |wav: &std::path::Path| {
        Command::new(BIN)
            .args(["simulate", "--idle-hangup", "0.2", "--wav"])
            .arg(wav)
            .args(["--url", &format!("http://{address}")])
            .arg("--config")
            .arg(&config)
            .envs(KEYS)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("simulate starts")
    };
    let long_call = simulate(&long);
    let short_call = simulate(&short);
    let deadline = Instant::now() + Duration::from_secs(20);
    while api_get(&address, "/calls?outcome=in-progress")["calls"]
        .as_array()
        .map_or(0, Vec::len)
        < 2
    {
        assert!(Instant::now() < deadline, "the calls never went live");
        std::thread::sleep(Duration::from_millis(50));
    }

    let pid = server.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let sent = Instant::now();
    // Unready at once, and new calls are refused while the live ones go on.
    std::thread::sleep(Duration::from_millis(200));
    let (ready, _) = block_on(async {
        let r = reqwest::get(format!("http://{address}/readyz"))
            .await
            .expect("readyz");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    });
    assert_eq!(ready, 503);
    let webhook = block_on(async {
        let form = [("CallSid", "CA0123456789abcdef0123456789abcdef")];
        let url = format!("http://{address}/twilio/voice");
        let signature = switchboard::twilio::signature::compute(
            KEYS[0].1,
            &url,
            &[(form[0].0.to_string(), form[0].1.to_string())],
            switchboard::twilio::signature::Algorithm::HmacSha1,
        );
        reqwest::Client::new()
            .post(url)
            .header("X-Twilio-Signature", signature)
            .form(&form)
            .send()
            .await
            .expect("webhook")
            .status()
            .as_u16()
    });
    assert_eq!(webhook, 503, "a new call was taken while draining");

    // The short call ends by itself; the long one is ended at the deadline, politely.
    let short_out = short_call.wait_with_output().expect("short call");
    let short_stdout = String::from_utf8_lossy(&short_out.stdout).to_string();
    assert!(short_out.status.success(), "{short_stdout}");
    assert!(
        short_stdout.contains("ended by         caller"),
        "{short_stdout}"
    );
    let long_out = long_call.wait_with_output().expect("long call");
    let long_stdout = String::from_utf8_lossy(&long_out.stdout).to_string();
    assert!(
        long_stdout.contains("ended by         gateway"),
        "{long_stdout}"
    );
    let status = server.0.wait().expect("the gateway exits");
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(20),
        "drained in {took:?} with a 4 s deadline"
    );

    // Both records were written before the exit.
    let (_server, address) = serve(&config);
    let calls = api_get(&address, "/calls");
    let calls = calls["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let mut outcomes: Vec<&str> = calls.iter().filter_map(|c| c["outcome"].as_str()).collect();
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["completed", "shutdown"], "{calls:#?}");
    for c in calls {
        assert!(c["ended_at_ms"].is_i64(), "{c}");
    }
}
