//! `--log-format json`: one JSON object per line, and a call's lines carry its span fields.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, KEYS, Server, echo_config, temp};

#[test]
fn json_logs_carry_the_call_span() {
    let dir = temp("logs");
    let config = echo_config(&dir);
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .envs(KEYS)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let _server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let value: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            if tx.send(value).is_err() {
                return;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(60))
            .expect("a log line")
    };
    let address = loop {
        let line = next();
        if let Some(a) = line["fields"]["address"].as_str() {
            break a.to_string();
        }
    };
    let wav = dir.join("tone.wav");
    let tone: Vec<i16> = (0..8000)
        .map(|i| ((f64::from(i) * 0.2).sin() * 8000.0) as i16)
        .collect();
    switchboard::simulate::write_wav(&wav, &tone).expect("wav");
    let out = Command::new(BIN)
        .args(["simulate", "--idle-hangup", "0.2", "--wav"])
        .arg(&wav)
        .args(["--url", &format!("http://{address}")])
        .arg("--config")
        .arg(&config)
        .envs(KEYS)
        .output()
        .expect("simulate runs");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let sid = stdout
        .split_whitespace()
        .skip_while(|w| *w != "call")
        .nth(1)
        .expect("call sid printed")
        .to_string();
    // The "call ended" line is inside the call's span, with its fields.
    loop {
        let line = next();
        if line["fields"]["message"] == "call ended" {
            assert_eq!(line["span"]["call_sid"], sid.as_str(), "{line}");
            assert_eq!(line["span"]["agent"], "echo", "{line}");
            assert_eq!(line["span"]["plugin"], "echo", "{line}");
            assert!(line["span"]["stream_sid"].is_string(), "{line}");
            break;
        }
    }
}
