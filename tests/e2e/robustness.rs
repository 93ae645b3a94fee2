//! Bad input from the network ends at most its own call, with a clear reason, and the gateway
//! and every other call keep going.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use switchboard::call::EndReason;
use switchboard::plugin::wasm::{Allocator, WasmEngine};
use switchboard::plugin::{LoadProblem, Plugins};
use switchboard::server::CallEnded;
use switchboard_tests::SANDBOX_CONFIG as SANDBOX;
use switchboard_tests::apology::{Ws, hear_apology};
use switchboard_tests::{Gateway, write_config};
use tokio_tungstenite::tungstenite::Message;

const LOOPBACK: &str = r#"
[plugins.echo]
path = "{plugins}/echo.wasm"

[[agents]]
name = "loopback"
realtime = { plugin = "echo", settings = { mode = "immediate" } }

[routing]
default = "loopback"
"#;

/// Opens a Media Streams WebSocket to the gateway (shared with the Python plugin tests).
pub(crate) async fn connect(gw: &Gateway) -> anyhow::Result<Ws> {
    let url = format!("{}/twilio/media-stream", gw.url.replace("http://", "ws://"));
    Ok(tokio_tungstenite::connect_async(url).await?.0)
}

/// Sends one Twilio message as a text frame.
pub(crate) async fn send(ws: &mut Ws, msg: impl ToString) -> anyhow::Result<()> {
    ws.send(Message::Text(msg.to_string().into())).await?;
    Ok(())
}

/// Twilio's `start` message for stream `MZ1` of call `CA1`, with these customParameters.
pub(crate) fn start(params: serde_json::Value) -> serde_json::Value {
    json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1", "start": {
        "accountSid": "AC1", "streamSid": "MZ1", "callSid": "CA1", "tracks": ["inbound"],
        "customParameters": params,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
}

/// Twilio's `media` message: inbound chunk `chunk` (1-based), 20 ms apart, base64 `payload`.
pub(crate) fn media(chunk: u64, payload: &str) -> serde_json::Value {
    json!({"event": "media", "sequenceNumber": (chunk + 1).to_string(), "streamSid": "MZ1",
        "media": {"track": "inbound", "chunk": chunk.to_string(),
                  "timestamp": (chunk * 20).to_string(), "payload": payload}})
}

/// 160 bytes of `byte` (20 ms of μ-law), base64.
pub(crate) fn frame(byte: u8) -> String {
    BASE64.encode([byte; 160])
}

/// Waits for the next `media` the gateway sends and returns its decoded payload.
pub(crate) async fn next_media(ws: &mut Ws) -> anyhow::Result<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("socket closed"))??;
        let Message::Text(text) = msg else { continue };
        let v: serde_json::Value = serde_json::from_str(text.as_str())?;
        if v["event"] == "media" {
            assert_eq!(v["streamSid"], "MZ1");
            let payload = v["media"]["payload"].as_str().unwrap_or_default();
            return Ok(BASE64.decode(payload)?);
        }
    }
}

async fn ended(rx: &mut tokio::sync::broadcast::Receiver<CallEnded>) -> anyhow::Result<CallEnded> {
    Ok(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await??)
}

/// Malformed JSON, unknown events, media before start, bad base64 and an oversized payload are
/// each dropped; the call goes on and still echoes the next good frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_dropped_and_the_call_goes_on() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(LOOPBACK)?).await?;
    let mut events = gw.state.subscribe();
    let mut ws = connect(&gw).await?;
    send(
        &mut ws,
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
    )
    .await?;
    send(&mut ws, media(1, &frame(0x11))).await?; // media before start
    send(&mut ws, start(json!({}))).await?;
    send(&mut ws, "{not json").await?;
    send(&mut ws, json!({"event": "surprise", "streamSid": "MZ1"})).await?;
    send(&mut ws, json!({"event": "media", "streamSid": "MZ1"})).await?; // missing fields
    send(&mut ws, media(2, "!!!not base64!!!")).await?;
    send(&mut ws, media(3, &BASE64.encode(vec![0x22u8; 4000]))).await?; // 500 ms in one frame
    ws.send(Message::Binary(vec![1, 2, 3].into())).await?;
    send(&mut ws, media(4, &frame(0x33))).await?;
    assert_eq!(
        next_media(&mut ws).await?,
        vec![0x33; 160],
        "good frame echoed"
    );
    send(
        &mut ws,
        json!({"event": "stop", "sequenceNumber": "9", "streamSid": "MZ1",
        "stop": {"accountSid": "AC1", "callSid": "CA1"}}),
    )
    .await?;
    let event = ended(&mut events).await?;
    assert_eq!(event.reason, EndReason::Stop);
    assert_eq!(event.stats.dropped, 7, "{:?}", event.stats);
    assert_eq!(event.stats.frames_in, 1);
    Ok(())
}

/// A gap in `media.chunk` is filled with silence so the plugin's timeline stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_filled_with_silence() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(LOOPBACK)?).await?;
    let mut ws = connect(&gw).await?;
    send(&mut ws, start(json!({}))).await?;
    send(&mut ws, media(1, &frame(0x44))).await?;
    assert_eq!(next_media(&mut ws).await?, vec![0x44; 160]);
    send(&mut ws, media(4, &frame(0x55))).await?; // chunks 2 and 3 lost
    assert_eq!(next_media(&mut ws).await?, vec![0xFF; 160]);
    assert_eq!(next_media(&mut ws).await?, vec![0xFF; 160]);
    assert_eq!(next_media(&mut ws).await?, vec![0x55; 160]);
    Ok(())
}

/// An unknown agent named in `customParameters` ends that call with a reason; a WebSocket
/// message over the size limit ends that call; meanwhile another call keeps echoing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_input_ends_only_its_own_call() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(LOOPBACK)?).await?;
    let mut events = gw.state.subscribe();

    let mut healthy = connect(&gw).await?;
    send(&mut healthy, start(json!({}))).await?;
    send(&mut healthy, media(1, &frame(0x01))).await?;
    assert_eq!(next_media(&mut healthy).await?, vec![0x01; 160]);

    let mut unknown = connect(&gw).await?;
    send(&mut unknown, start(json!({"agent": "nobody"}))).await?;
    let event = ended(&mut events).await?;
    assert!(
        matches!(&event.reason, EndReason::NotRouted(why) if why.contains("nobody")),
        "{:?}",
        event.reason
    );
    // The gateway closed that socket.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = unknown.next().await {
            if matches!(m, Message::Close(_)) {
                return true;
            }
        }
        true
    })
    .await?;
    assert!(closed);

    let mut huge = connect(&gw).await?;
    send(&mut huge, start(json!({}))).await?;
    let big = "x".repeat(switchboard::server::MAX_WS_MESSAGE_BYTES + 1);
    let _ = send(&mut huge, big).await; // the gateway may reset the socket mid-send
    let event = ended(&mut events).await?;
    assert!(
        matches!(event.reason, EndReason::SocketError(_)),
        "{:?}",
        event.reason
    );

    send(&mut healthy, media(2, &frame(0x02))).await?;
    assert_eq!(
        next_media(&mut healthy).await?,
        vec![0x02; 160],
        "other call unharmed"
    );
    let health: serde_json::Value = serde_json::from_str(
        &reqwest::get(format!("{}/healthz", gw.url))
            .await?
            .text()
            .await?,
    )?;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["active_calls"], 1);
    Ok(())
}

/// A socket that never sends `start` is closed after the start timeout, not kept forever.
#[tokio::test(start_paused = true)]
async fn socket_without_start_is_closed() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(LOOPBACK)?).await?;
    let mut events = gw.state.subscribe();
    let _ws = connect(&gw).await?;
    // The clock is paused: it jumps to the call's start deadline once everything is idle.
    let event = events.recv().await?;
    assert_eq!(event.reason, EndReason::NoStart);
    Ok(())
}

/// Opens a call on the `bad` agent, checks it echoes, makes it misbehave with DTMF `1`, hears
/// the apology, and returns how the call ended.
async fn failing_call(
    gw: &Gateway,
    events: &mut tokio::sync::broadcast::Receiver<CallEnded>,
) -> anyhow::Result<CallEnded> {
    let mut bad = connect(gw).await?;
    send(&mut bad, start(json!({"merchantId": "bad"}))).await?;
    send(&mut bad, media(1, &frame(0x07))).await?;
    assert_eq!(
        next_media(&mut bad).await?,
        vec![0x07; 160],
        "works until told"
    );
    send(
        &mut bad,
        json!({"event": "dtmf", "sequenceNumber": "3", "streamSid": "MZ1",
        "dtmf": {"track": "inbound_track", "digit": "1"}}),
    )
    .await?;
    let apology_ms = hear_apology(&mut bad, "MZ1", Duration::from_secs(10)).await?;
    assert!(apology_ms >= 2000, "apology of {apology_ms} ms");
    ended(events).await
}

/// The byte the `beside` call puts in its `i`th frame: never 0x7F or 0xFF, the two μ-law codes
/// for zero, which do not survive the decode/encode round trip through a PCM16 plugin unchanged.
pub(crate) fn beside_byte(i: u64) -> u8 {
    0x01 + (i % 0x70) as u8
}

/// A call on the default (`good`, echo immediate) agent that runs beside a failing one: it sends
/// a frame every 20 ms, each with its own byte, until told to stop, then waits for the last
/// echoes. Returns how many frames it sent; fails unless every frame came back, in order, intact.
pub(crate) async fn beside(
    gw: &Gateway,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<u64>>> {
    let mut ws = connect(gw).await?;
    send(&mut ws, start(json!({}))).await?;
    Ok(tokio::spawn(async move {
        // At least this many frames (1 s), so the call surely overlaps the failure beside it.
        const MIN_FRAMES: u64 = 50;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let (mut sent, mut heard) = (0u64, 0u64);
        let mut stopping = false;
        let mut tail_deadline = None;
        loop {
            if tail_deadline.is_some() && heard == sent {
                return Ok(sent);
            }
            tokio::select! {
                _ = tick.tick(), if tail_deadline.is_none() => {
                    if stopping && sent >= MIN_FRAMES {
                        tail_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                    } else {
                        send(&mut ws, media(sent + 1, &frame(beside_byte(sent)))).await?;
                        sent += 1;
                    }
                }
                _ = &mut stop, if !stopping => stopping = true,
                _ = tokio::time::sleep_until(tail_deadline.unwrap_or_else(tokio::time::Instant::now)), if tail_deadline.is_some() => {
                    anyhow::bail!("heard {heard} of {sent} frames");
                }
                msg = ws.next() => {
                    let msg = msg.ok_or_else(|| anyhow::anyhow!("socket closed"))??;
                    let Message::Text(text) = msg else { continue };
                    let v: serde_json::Value = serde_json::from_str(text.as_str())?;
                    if v["event"] == "media" {
                        let payload = BASE64.decode(v["media"]["payload"].as_str().unwrap_or_default())?;
                        anyhow::ensure!(
                            payload == vec![beside_byte(heard); 160],
                            "frame {heard} came back wrong: {:?}…",
                            &payload[..4.min(payload.len())]
                        );
                        heard += 1;
                    }
                }
            }
        }
    }))
}

/// A plugin that loops, exhausts its memory, panics, overruns its time budget or floods the host
/// with outputs ends its own call — the caller hears `clear` and an apology, and the reason names
/// what happened — while a call on another agent, streaming beside it the whole time, loses no
/// frame and hears its own audio back. WASM cases are stopped by the sandbox; native ones are
/// caught (panic), reported by the watchdog (slow) or refused (flood).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_plugin_ends_only_its_own_call() -> anyhow::Result<()> {
    let cases = [
        (
            "{plugins}/misbehave.wasm",
            "spin",
            "ran past its 200 ms budget",
        ),
        (
            "{plugins}/misbehave.wasm",
            "slow",
            "ran past its 200 ms budget",
        ),
        ("{plugins}/misbehave.wasm", "hog", "memory"),
        ("{plugins}/misbehave.wasm", "trap", "unreachable"),
        ("{plugins}/misbehave.wasm", "flood", "outputs"),
        (
            "{native:misbehave}",
            "panic",
            "panicked: misbehave: trap on purpose",
        ),
        ("{native:misbehave}", "slow", "ran past its 200 ms budget"),
        ("{native:misbehave}", "flood", "outputs"),
    ];
    for (path, behaviour, why) in cases {
        let config = SANDBOX
            .replace("MISBEHAVE", path)
            .replace("BEHAVIOUR", behaviour);
        let case = format!("{behaviour} ({path})");
        let gw = Gateway::start(&write_config(&config)?).await?;
        let mut events = gw.state.subscribe();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let good = beside(&gw, stopped).await?;
        let event = failing_call(&gw, &mut events).await?;
        assert_eq!(event.stats.agent.as_deref(), Some("bad"), "{case}");
        match &event.reason {
            EndReason::PluginFailed(reason) => assert!(
                reason.to_string().to_lowercase().contains(why),
                "{case}: reason {reason:?} should mention {why:?}"
            ),
            other => panic!("{case}: ended with {other:?}"),
        }
        assert_eq!(gw.state.active_calls(), 1, "{case}: the other call is live");
        let _ = stop.send(());
        let frames = good.await??;
        assert!(frames >= 50, "{case}: the other call sent {frames} frames");
    }
    Ok(())
}

/// After five calls in a row fail, the plugin's circuit breaker opens: the next call to the
/// failing agent goes to its `fallback` agent without touching the plugin; with no fallback the
/// caller hears the apology and the call ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_sends_new_calls_to_the_fallback() -> anyhow::Result<()> {
    let with_fallback = SANDBOX.replace("BEHAVIOUR", "trap").replace(
        "match = { merchantId = \"bad\" }",
        "match = { merchantId = \"bad\" }\nfallback = \"good\"",
    );
    for fallback in [true, false] {
        let config = if fallback {
            with_fallback.clone()
        } else {
            SANDBOX.replace("BEHAVIOUR", "trap")
        }
        .replace("MISBEHAVE", "{plugins}/misbehave.wasm");
        let gw = Gateway::start(&write_config(&config)?).await?;
        let mut events = gw.state.subscribe();
        for _ in 0..switchboard::plugin::breaker::BREAKER_THRESHOLD {
            let e = failing_call(&gw, &mut events).await?;
            assert!(
                matches!(e.reason, EndReason::PluginFailed(_)),
                "{:?}",
                e.reason
            );
        }
        let health: serde_json::Value = serde_json::from_str(
            &reqwest::get(format!("{}/healthz", gw.url))
                .await?
                .text()
                .await?,
        )?;
        let misbehave = &health["plugins"]["misbehave"];
        assert_eq!(misbehave["kind"], "wasm", "{health}");
        assert_eq!(
            misbehave["failed_calls"],
            u64::from(switchboard::plugin::breaker::BREAKER_THRESHOLD),
            "{health}"
        );
        assert_eq!(misbehave["circuit"], "open", "{health}");
        assert_eq!(health["plugins"]["echo"]["circuit"], "closed", "{health}");
        let mut next = connect(&gw).await?;
        send(&mut next, start(json!({"merchantId": "bad"}))).await?;
        if fallback {
            send(&mut next, media(1, &frame(0x0A))).await?;
            assert_eq!(
                next_media(&mut next).await?,
                vec![0x0A; 160],
                "the fallback answers"
            );
            send(
                &mut next,
                json!({"event": "stop", "sequenceNumber": "3", "streamSid": "MZ1",
                "stop": {"accountSid": "AC1", "callSid": "CA1"}}),
            )
            .await?;
            let e = ended(&mut events).await?;
            assert_eq!(e.stats.agent.as_deref(), Some("good"));
            assert_eq!(e.reason, EndReason::Stop);
        } else {
            assert!(hear_apology(&mut next, "MZ1", Duration::from_secs(10)).await? >= 2000);
            let e = ended(&mut events).await?;
            assert_eq!(e.reason, EndReason::CircuitOpen("misbehave".into()));
        }
    }
    Ok(())
}

/// Loads a config whose one agent's realtime plugin is the file at `path` (`{plugins}/…` or
/// `{native:…}`), and returns the load error.
async fn load_error(path: &str) -> anyhow::Result<String> {
    let config = write_config(&format!(
        "[plugins.future]\npath = \"{path}\"\n\n[[agents]]\nname = \"a\"\nrealtime = {{ plugin = \"future\" }}\n"
    ))?;
    match Gateway::start(&config).await {
        Err(error) => Ok(format!("{error:#}")),
        Ok(_) => anyhow::bail!("{path} was loaded"),
    }
}

/// A plugin built for a contract version the host does not load (a WIT 0.3.0 component) or another native ABI
/// version (a table saying 2) is refused when agents.toml is loaded, with an error that names
/// both versions; the host reads nothing of a native table past its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_for_another_version_is_refused() -> anyhow::Result<()> {
    for (path, versions) in [
        (
            "{plugins}/future_version.wasm",
            [
                "switchboard:plugin@0.3.0",
                "switchboard:plugin 0.2.0 or 0.1.0",
            ],
        ),
        (
            "{native:future_version}",
            ["native ABI version 2", "native ABI version 1"],
        ),
    ] {
        let error = load_error(path).await?;
        for v in versions.iter().chain(&["future"]) {
            assert!(error.contains(v), "{path}: {error}");
        }
    }
    Ok(())
}

/// A pipeline-stage plugin (here the scripted language model) is refused as an agent's
/// realtime plugin with an error that says what it is, as a WASM component and as a native
/// library, until pipeline mode can run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_plugin_is_refused_as_a_realtime_plugin() -> anyhow::Result<()> {
    for path in ["{plugins}/scripted.wasm", "{native:scripted}"] {
        let error = load_error(path).await?;
        assert!(
            error.contains("is a language-model plugin"),
            "{path}: {error}"
        );
    }
    Ok(())
}

/// Loads a config whose one agent's realtime plugin is the file at `path` and returns what the
/// loader said was wrong, typed. `vanish`: the file is deleted after the config was validated
/// (as by a deploy racing a reload), before the plugin is loaded.
async fn load_problem(path: &str, vanish: bool) -> anyhow::Result<LoadProblem> {
    let file = write_config(&format!(
        "[plugins.p]\npath = \"{path}\"\n\n[[agents]]\nname = \"a\"\nrealtime = {{ plugin = \"p\" }}\n"
    ))?;
    let config = switchboard::config::from_file(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    if vanish {
        std::fs::remove_file(path)?;
    }
    let engine = WasmEngine::with_allocator(Allocator::OnDemand)?;
    match Plugins::load(&engine, &config).await {
        Err(e) => {
            assert_eq!(e.name, "p");
            Ok(*e.problem)
        }
        Ok(_) => anyhow::bail!("{path} was loaded"),
    }
}

/// Each way a plugin file can be wrong is its own `LoadProblem`, so `switchboard check`, logs
/// and operators can tell them apart without reading the message: a file that is not a
/// component, a file gone between validation and loading, another contract version (both versions named), another native ABI
/// version (both named), and a stage plugin used as a realtime one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_errors_say_what_was_wrong() -> anyhow::Result<()> {
    let dir = switchboard_tests::temp_dir()?;
    let text = dir.join("text.wasm");
    std::fs::write(&text, "not a component")?;
    let path = text.display().to_string();
    let problem = load_problem(&path, false).await?;
    assert!(
        matches!(problem, LoadProblem::NotAComponent(_)),
        "{problem:?}"
    );
    let problem = load_problem(&path, true).await?;
    assert!(matches!(problem, LoadProblem::Unreadable(_)), "{problem:?}");
    let problem = load_problem("{plugins}/future_version.wasm", false).await?;
    assert!(
        matches!(&problem, LoadProblem::ContractVersion { found, supported, .. }
            if found == "0.3.0" && *supported == "0.2.0 or 0.1.0"),
        "{problem:?}"
    );
    let problem = load_problem("{native:future_version}", false).await?;
    assert!(
        matches!(
            problem,
            LoadProblem::NativeAbi {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{problem:?}"
    );
    let problem = load_problem("{plugins}/scripted.wasm", false).await?;
    assert!(
        matches!(&problem, LoadProblem::WrongStage { found, role, .. }
            if *found == "language-model" && *role == "realtime"),
        "{problem:?}"
    );
    Ok(())
}
