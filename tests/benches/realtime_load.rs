//! Load through the realtime path: N concurrent calls, each a Twilio-side phone talking to the
//! gateway at real time, the gateway bridging each to the fake OpenAI Realtime server through the
//! OpenAI plugin (WASM) and host I/O. The same N calls through the echo plugin (WASM, immediate
//! mode) are the baseline of the same run.
//!
//! Reports, per scenario and N: gateway CPU per call-minute (CPU time of the gateway's own
//! runtime threads, from `/proc/self/task/*/stat`), and per-frame latency — realtime: caller frame
//! sent by the phone → the same frame appended at the fake server; echo: caller frame sent → the
//! same frame back at the phone. Both include two loopback WebSocket hops.
//!
//! Run: `cargo bench -p switchboard-tests --bench realtime_load` (`LOAD_CALLS=50,100` and
//! `LOAD_SECONDS=20` to change the sizes).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use switchboard::plugin::wasm::{Allocator, MAX_POOLED_SESSIONS};
use switchboard_tests::fake_openai::{FakeOpenAi, FakeOptions};
use switchboard_tests::phone::{self, PhoneLog};
use switchboard_tests::{Gateway, write_config};
use tokio::time::Instant;

fn main() -> anyhow::Result<()> {
    let calls: Vec<usize> = std::env::var("LOAD_CALLS")
        .unwrap_or_else(|_| "50,100".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let seconds: u64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // The gateway gets its own runtime and named threads, so its CPU can be told apart from the
    // phones' and the fake's.
    let gateway_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gw-runtime")
        .enable_all()
        .build()?;
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load")
        .enable_all()
        .build()?;
    let fake = load_rt.block_on(FakeOpenAi::start(FakeOptions {
        reply_ms: 1000,
        ..FakeOptions::default()
    }))?;
    println!("# Load: {seconds} s calls, gateway on 2 worker threads\n");
    println!(
        "| scenario | calls | CPU ms per call-minute | × echo | latency p50 | p99 | max | frames |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &calls {
        let mut echo_cpu = None;
        for scenario in ["echo", "realtime"] {
            let config = match scenario {
                "echo" => r#"
[plugins.echo]
path = "{plugins}/echo.wasm"

[[agents]]
name = "echo"
realtime = { plugin = "echo", settings = { mode = "immediate" } }

[routing]
default = "echo"
"#
                .to_string(),
                _ => format!(
                    r#"
[plugins.openai]
path = "{{plugins}}/openai_realtime.wasm"

[[agents]]
name = "assistant"
realtime = {{ plugin = "openai", settings = {{ base_url = "{}" }}, secrets = {{ api_key = "sk-load" }}, allowed_hosts = ["127.0.0.1"] }}

[routing]
default = "assistant"
"#,
                    fake.url
                ),
            };
            let path = write_config(&config)?;
            let gw = gateway_rt.block_on(Gateway::start_with(
                &path,
                Allocator::Pooling {
                    sessions: MAX_POOLED_SESSIONS,
                },
            ))?;
            let appends_before = fake.record().appends.len();
            let cpu_before = gateway_cpu()?;
            let url = gw.url.clone();
            let logs: Vec<PhoneLog> = load_rt.block_on(async move {
                let mut tasks = Vec::new();
                for call in 0..n {
                    let url = url.clone();
                    tasks.push(tokio::spawn(async move {
                        // Spread the call starts over a second.
                        tokio::time::sleep(Duration::from_millis((call as u64 * 1000) / n as u64))
                            .await;
                        phone::call(
                            &url,
                            json!({}),
                            script(call, seconds),
                            Duration::from_secs(seconds),
                        )
                        .await
                    }));
                }
                let mut logs = Vec::new();
                for t in tasks {
                    if let Ok(Ok(log)) = t.await {
                        logs.push(log);
                    }
                }
                logs
            });
            let cpu = gateway_cpu()? - cpu_before;
            drop(gw);
            let call_minutes = n as f64 * seconds as f64 / 60.0;
            let cpu_per_call_minute = cpu.as_secs_f64() * 1000.0 / call_minutes;
            let mut latencies = match scenario {
                "echo" => echo_latencies(&logs),
                _ => upstream_latencies(&logs, &fake.record().appends[appends_before..]),
            };
            latencies.sort();
            let pct = |p: f64| {
                latencies
                    .get(((latencies.len() as f64 - 1.0) * p) as usize)
                    .copied()
                    .unwrap_or_default()
            };
            let ratio = match echo_cpu {
                None => {
                    echo_cpu = Some(cpu_per_call_minute);
                    1.0
                }
                Some(base) => cpu_per_call_minute / base,
            };
            println!(
                "| {scenario} | {} of {n} | {cpu_per_call_minute:.0} | {ratio:.2} | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
                logs.len(),
                ms(pct(0.5)),
                ms(pct(0.99)),
                ms(latencies.last().copied().unwrap_or_default()),
                latencies.len()
            );
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Tags frame `seq` of call `call` in its first 6 bytes, as μ-law codes 0xF0–0xFF (quiet
/// samples, so the tag does not look like speech to a VAD).
fn tag(call: usize, seq: usize) -> [u8; 6] {
    let v = ((call as u32) << 14) | (seq as u32 & 0x3FFF);
    let mut t = [0u8; 6];
    for (i, b) in t.iter_mut().enumerate() {
        *b = 0xF0 | ((v >> (4 * (5 - i))) & 0xF) as u8;
    }
    t
}

fn untag(bytes: &[u8]) -> Option<(usize, usize)> {
    if bytes.len() < 6 || bytes[..6].iter().any(|b| b & 0xF0 != 0xF0) {
        return None;
    }
    let v = bytes[..6]
        .iter()
        .fold(0u32, |v, b| (v << 4) | u32::from(b & 0xF));
    Some(((v >> 14) as usize, (v & 0x3FFF) as usize))
}

/// One second of a loud tone, one second of quiet, repeated; every frame tagged.
fn script(call: usize, seconds: u64) -> Vec<Vec<u8>> {
    let tone = switchboard_tests::phone::speech(1000);
    (0..(seconds as usize * 50))
        .map(|seq| {
            let mut frame = if (seq / 50) % 2 == 0 {
                tone[seq % 50].clone()
            } else {
                vec![0xFF; 160]
            };
            frame[..6].copy_from_slice(&tag(call, seq));
            frame
        })
        .collect()
}

fn echo_latencies(logs: &[PhoneLog]) -> Vec<Duration> {
    let mut out = Vec::new();
    for log in logs {
        for (at, payload) in &log.media {
            if let Some((_, seq)) = untag(payload)
                && let Some(sent) = log.sent_at.get(seq)
            {
                out.push(at.saturating_duration_since(*sent));
            }
        }
    }
    out
}

fn upstream_latencies(logs: &[PhoneLog], appends: &[(Instant, [u8; 4])]) -> Vec<Duration> {
    // The fake keeps 4 bytes of each frame: enough for the call and the high bits of the
    // sequence; frames of one call arrive in order, so walk them with a per-call cursor.
    let mut by_call: HashMap<usize, Vec<Instant>> = HashMap::new();
    for (at, tag4) in appends {
        let mut six = [0xF0u8; 6];
        six[..4].copy_from_slice(tag4);
        if let Some((call, _)) = untag(&six) {
            by_call.entry(call).or_default().push(*at);
        }
    }
    let mut out = Vec::new();
    for (call, log) in logs.iter().enumerate() {
        let Some(arrivals) = by_call.get(&call) else {
            continue;
        };
        // The first second is buffered while the upstream session opens: not steady state.
        for (sent, arrived) in log.sent_at.iter().zip(arrivals).skip(50) {
            out.push(arrived.saturating_duration_since(*sent));
        }
    }
    out
}

/// CPU time (user + system) of this process's gateway threads (named `gw-runtime`, plus the
/// wasm epoch thread), from `/proc/self/task/*/stat` (clock ticks of 10 ms).
fn gateway_cpu() -> anyhow::Result<Duration> {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task")? {
        let task = task?.path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !(comm.starts_with("gw-runtime") || comm.starts_with("wasm-epoch")) {
            continue;
        }
        let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
        // Fields after the `(comm)`: state is field 3; utime and stime are 14 and 15.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
            let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
            ticks += utime + stime;
        }
    }
    Ok(Duration::from_millis(ticks * 10))
}
