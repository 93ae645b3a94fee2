//! The call loop without a socket: `switchboard::call::run` on an in-memory Media Streams socket
//! driven by a scripted Twilio peer, under paused tokio time (no wall-clock waits), through every
//! way a call ends, for both engines. Real plugins built from source; no TCP, no HTTP.

use switchboard::call::{CallContext, CallStats, EndReason, START_TIMEOUT};
use switchboard::plugin::Stage;
use switchboard_tests::SANDBOX_CONFIG;
use switchboard_tests::memory_socket::{self, Peer, dtmf, media, start, stop};
use tokio::task::JoinHandle;

const SID: &str = "MZ1";

async fn context(body: &str) -> anyhow::Result<CallContext> {
    switchboard_tests::call_context(body).await
}

fn sandbox(behaviour: &str) -> String {
    SANDBOX_CONFIG
        .replace("MISBEHAVE", "{plugins}/misbehave.wasm")
        .replace("BEHAVIOUR", behaviour)
}

fn call(ctx: CallContext) -> (JoinHandle<(EndReason, CallStats)>, Peer) {
    let (socket, peer) = memory_socket::pair();
    (tokio::spawn(switchboard::call::run(socket, ctx)), peer)
}

fn payload(msg: &serde_json::Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(msg["media"]["payload"].as_str().unwrap_or_default())
        .unwrap_or_default()
}

/// The live events a call emitted so far on `live` (`crate::events`): (type, data).
fn events_of(
    live: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<switchboard::events::Event>>,
) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    while let Ok(event) = live.try_recv() {
        let v: serde_json::Value = serde_json::from_str(&event.json).unwrap_or_default();
        out.push((event.kind.to_string(), v["data"].clone()));
    }
    out
}

/// Waits for the apology's mark (its audio queued before it) and echoes it, as Twilio does once
/// the apology has played.
async fn hears_the_apology(peer: &mut Peer) -> anyhow::Result<()> {
    let apology = peer.until("mark", SID).await.expect("the apology's mark");
    assert_eq!(apology["mark"]["name"], "switchboard:apology");
    peer.send(memory_socket::mark(SID, "switchboard:apology"))
        .await
}

/// start → media → the echo back, with its clock marks echoed → stop.
#[tokio::test(start_paused = true)]
async fn realtime_call_echoes_and_ends_on_stop() -> anyhow::Result<()> {
    let (task, mut peer) = call(context(&sandbox("none")).await?);
    peer.send(start(SID, serde_json::json!({}))).await?;
    for (chunk, byte) in [(1, 0x11), (2, 0x22), (3, 0x33)] {
        peer.send(media(SID, chunk, byte)).await?;
        let echoed = peer.until("media", SID).await.expect("an echo");
        assert_eq!(payload(&echoed), vec![byte; 160]);
    }
    // The playback clock marks the audio; the peer echoes each mark as it plays.
    peer.until("mark", SID).await.expect("a clock mark");
    peer.send(stop(SID)).await?;
    assert!(
        peer.until("close", SID).await.is_some(),
        "the gateway closes"
    );
    let (reason, stats) = task.await?;
    assert_eq!(reason, EndReason::Stop);
    assert_eq!((stats.frames_in, stats.frames_out), (3, 3));
    assert_eq!(stats.agent.as_deref(), Some("good"));
    assert!(stats.marks_sent >= 1, "{stats:?}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_socket_that_closes_ends_the_call() -> anyhow::Result<()> {
    let (task, mut peer) = call(context(&sandbox("none")).await?);
    peer.send(start(SID, serde_json::json!({}))).await?;
    peer.send(media(SID, 1, 0x11)).await?;
    peer.until("media", SID).await.expect("an echo");
    peer.close();
    assert_eq!(task.await?.0, EndReason::SocketClosed);
    Ok(())
}

/// Sends what axum's socket yields for an oversized message (a socket error) and checks that
/// it ended the call.
async fn ends_on_an_oversized_message(
    task: JoinHandle<(EndReason, CallStats)>,
    peer: &Peer,
) -> anyhow::Result<()> {
    peer.raw(Err(axum::Error::new(std::io::Error::other(
        "Space limit exceeded: Message too long",
    ))))
    .await?;
    let (reason, _) = task.await?;
    assert!(
        matches!(&reason, EndReason::SocketError(e) if e.contains("too long")),
        "{reason:?}"
    );
    Ok(())
}

/// A socket error (axum reports an oversized message this way) ends the call.
#[tokio::test(start_paused = true)]
async fn a_socket_error_ends_the_call() -> anyhow::Result<()> {
    let (task, peer) = call(context(&sandbox("none")).await?);
    peer.send(start(SID, serde_json::json!({}))).await?;
    ends_on_an_oversized_message(task, &peer).await
}

/// Opens a call on `ctx` and sends nothing: it must end as `NoStart` after [`START_TIMEOUT`] of
/// (paused, auto-advanced) time.
async fn ends_without_start(ctx: CallContext) -> anyhow::Result<()> {
    let began = tokio::time::Instant::now();
    let (task, _peer) = call(ctx);
    assert_eq!(task.await?.0, EndReason::NoStart);
    assert!(began.elapsed() >= START_TIMEOUT);
    Ok(())
}

/// No `start`: the call ends after [`START_TIMEOUT`].
#[tokio::test(start_paused = true)]
async fn a_socket_without_start_ends_at_the_start_timeout() -> anyhow::Result<()> {
    ends_without_start(context(&sandbox("none")).await?).await
}

/// The plugin hangs up: the host marks the end of its audio and ends when the mark comes back.
#[tokio::test(start_paused = true)]
async fn the_plugin_hanging_up_ends_the_call() -> anyhow::Result<()> {
    let (task, mut peer) = call(context(&sandbox("hangup")).await?);
    peer.send(start(SID, serde_json::json!({"merchantId": "bad"})))
        .await?;
    peer.send(dtmf(SID, "1")).await?;
    assert!(peer.until("close", SID).await.is_some());
    assert_eq!(task.await?.0, EndReason::HungUp);
    Ok(())
}

/// The plugin traps: `clear`, the apology, its mark (echoed), then the end.
#[tokio::test(start_paused = true)]
async fn a_failing_plugin_ends_the_call_with_the_apology() -> anyhow::Result<()> {
    let ctx = context(&sandbox("trap")).await?;
    let mut live = ctx.events.subscribe(None).live;
    let (task, mut peer) = call(ctx);
    peer.send(start(SID, serde_json::json!({"merchantId": "bad"})))
        .await?;
    peer.send(dtmf(SID, "1")).await?;
    peer.until("clear", SID).await.expect("a clear");
    hears_the_apology(&mut peer).await?;
    let (reason, _) = task.await?;
    assert!(
        matches!(&reason, EndReason::PluginFailed(why) if why.error.kind() == "trap" && why.to_string().contains("unreachable")),
        "{reason:?}"
    );
    // The live events: the failure, then the end, last.
    let events = events_of(&mut live);
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types.first(), Some(&"call.started"), "{events:?}");
    assert_eq!(
        types[types.len() - 2..],
        ["plugin.failed", "call.ended"],
        "{events:?}"
    );
    let failed = &events[events.len() - 2].1;
    assert_eq!(failed["kind"], "trap", "{failed}");
    assert_eq!(failed["plugin"], "misbehave", "{failed}");
    assert_eq!(events[events.len() - 1].1["outcome"], "plugin-failed");
    Ok(())
}

/// The gateway's drain deadline: the call hears the apology and ends as `shutdown`.
#[tokio::test(start_paused = true)]
async fn the_drain_deadline_ends_the_call() -> anyhow::Result<()> {
    let mut ctx = context(&sandbox("none")).await?;
    let (drain, shutdown) = tokio::sync::watch::channel(false);
    ctx.shutdown = shutdown;
    let (task, mut peer) = call(ctx);
    peer.send(start(SID, serde_json::json!({}))).await?;
    peer.send(media(SID, 1, 0x11)).await?;
    peer.until("media", SID).await.expect("an echo");
    drain.send(true)?;
    peer.until("clear", SID).await.expect("the apology's clear");
    assert!(peer.until("close", SID).await.is_some());
    assert_eq!(task.await?.0, EndReason::Shutdown);
    Ok(())
}

fn pipeline_config() -> String {
    r#"
[plugins.stt]
path = "{plugins}/fixed_stt.wasm"
[plugins.llm]
path = "{plugins}/scripted.wasm"
[plugins.tts]
path = "{plugins}/tone_tts.wasm"

[[agents]]
name = "front-desk"
greeting = "Hello there."

[agents.pipeline]
endpointing_ms = 600
stt = { plugin = "stt", settings = { text = "What are your hours?" } }
llm = { plugin = "llm", settings = { intents = [{ name = "hours", keywords = ["hours"], reply = "Nine to five." }], fallback = "Sorry?" } }
tts = { plugin = "tts", settings = { ms_per_char = 20 } }

[routing]
default = "front-desk"
"#
    .to_string()
}

/// A pipeline call: the greeting plays (its marks echoed), then `stop` ends it, with the
/// greeting in the transcript.
#[tokio::test(start_paused = true)]
async fn pipeline_call_greets_and_ends_on_stop() -> anyhow::Result<()> {
    let (task, mut peer) = call(context(&pipeline_config()).await?);
    peer.send(start(SID, serde_json::json!({}))).await?;
    peer.until("media", SID)
        .await
        .expect("the greeting's audio");
    peer.until("mark", SID).await.expect("its clock marks");
    peer.send(stop(SID)).await?;
    let (reason, stats) = task.await?;
    assert_eq!(reason, EndReason::Stop);
    assert_eq!(stats.agent.as_deref(), Some("front-desk"));
    assert!(stats.frames_out > 0, "{stats:?}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn pipeline_call_ends_when_the_socket_closes() -> anyhow::Result<()> {
    let (task, mut peer) = call(context(&pipeline_config()).await?);
    peer.send(start(SID, serde_json::json!({}))).await?;
    peer.until("media", SID)
        .await
        .expect("the greeting's audio");
    peer.close();
    assert_eq!(task.await?.0, EndReason::SocketClosed);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn pipeline_call_ends_at_the_drain_deadline() -> anyhow::Result<()> {
    let mut ctx = context(&pipeline_config()).await?;
    let (drain, shutdown) = tokio::sync::watch::channel(false);
    ctx.shutdown = shutdown;
    let (task, mut peer) = call(ctx);
    peer.send(start(SID, serde_json::json!({}))).await?;
    peer.until("media", SID)
        .await
        .expect("the greeting's audio");
    drain.send(true)?;
    assert!(peer.until("close", SID).await.is_some());
    assert_eq!(task.await?.0, EndReason::Shutdown);
    Ok(())
}

/// A pipeline stage that fails mid-call ends the call with the apology, blamed on that stage:
/// the TTS stage returns 132 s of audio for the greeting, past the host's 120 s bound on queued
/// audio (an output error).
#[tokio::test(start_paused = true)]
async fn a_failing_pipeline_stage_ends_the_call_with_the_apology() -> anyhow::Result<()> {
    // A budget that generating 132 s of tone fits on a loaded machine: the failure is the
    // output's size, not the time taken.
    let config = pipeline_config()
        .replace("ms_per_char = 20", "ms_per_char = 11000")
        .replace(
            "path = \"{plugins}/tone_tts.wasm\"",
            "path = \"{plugins}/tone_tts.wasm\"\nbudget_ms = 20000\ncpu_percent = 400\ncpu_burst_ms = 60000",
        );
    let (task, mut peer) = call(context(&config).await?);
    peer.send(start(SID, serde_json::json!({}))).await?;
    hears_the_apology(&mut peer).await?;
    let (reason, _) = task.await?;
    match &reason {
        EndReason::PluginFailed(failure) => {
            assert_eq!(failure.error.kind(), "output", "{failure}");
            assert_eq!(failure.plugin.as_deref(), Some("tts"), "{failure}");
            assert_eq!(failure.stage, Some(Stage::Tts), "{failure}");
        }
        other => panic!("ended by {other:?}"),
    }
    Ok(())
}

/// A stage that refuses its settings at `open` fails the call at `start`, blamed on it, with the
/// plugin's own error kind.
#[tokio::test(start_paused = true)]
async fn a_pipeline_stage_that_cannot_open_fails_the_call() -> anyhow::Result<()> {
    let config = pipeline_config().replace(
        r#"settings = { text = "What are your hours?" }"#,
        r#"settings = { text = "x", unknown = 1 }"#,
    );
    let (task, mut peer) = call(context(&config).await?);
    peer.send(start(SID, serde_json::json!({}))).await?;
    hears_the_apology(&mut peer).await?;
    let (reason, _) = task.await?;
    match &reason {
        EndReason::PluginFailed(failure) => {
            assert_eq!(failure.error.kind(), "error", "{failure}");
            assert_eq!(failure.plugin.as_deref(), Some("stt"), "{failure}");
        }
        other => panic!("ended by {other:?}"),
    }
    Ok(())
}

/// A socket error (an oversized message) ends a pipeline call too.
#[tokio::test(start_paused = true)]
async fn pipeline_call_ends_on_a_socket_error() -> anyhow::Result<()> {
    let (task, mut peer) = call(context(&pipeline_config()).await?);
    peer.send(start(SID, serde_json::json!({}))).await?;
    peer.until("media", SID)
        .await
        .expect("the greeting's audio");
    ends_on_an_oversized_message(task, &peer).await
}

/// No `start` on the stream of a pipeline agent's number: the start timeout holds before any
/// engine is chosen, as for a realtime one.
#[tokio::test(start_paused = true)]
async fn pipeline_agent_socket_without_start_ends_at_the_start_timeout() -> anyhow::Result<()> {
    ends_without_start(context(&pipeline_config()).await?).await
}

/// The plugin asks for a transfer without Twilio's REST API configured: refused (logged), and
/// the call goes on until `stop`.
#[tokio::test(start_paused = true)]
async fn a_transfer_without_the_rest_api_is_refused_and_the_call_goes_on() -> anyhow::Result<()> {
    let (task, mut peer) = call(context(&sandbox("transfer")).await?);
    peer.send(start(SID, serde_json::json!({"merchantId": "bad"})))
        .await?;
    peer.send(dtmf(SID, "1")).await?;
    peer.send(media(SID, 1, 0x11)).await?;
    peer.until("media", SID).await.expect("the call goes on");
    peer.send(stop(SID)).await?;
    assert_eq!(task.await?.0, EndReason::Stop);
    Ok(())
}

/// A plugin calls a tool (contract 0.2.0) on an agent that has none: the host hands it an error
/// result naming the tool, the plugin goes on (here, says the result), and the call goes on —
/// through the WASM component and the native library alike.
#[tokio::test(start_paused = true)]
async fn a_tool_call_to_an_agent_without_tools_gets_an_error_result() -> anyhow::Result<()> {
    for path in ["{plugins}/misbehave.wasm", "{native:misbehave}"] {
        let config = switchboard_tests::SANDBOX_CONFIG
            .replace("MISBEHAVE", path)
            .replace("BEHAVIOUR", "toolcall");
        let ctx = context(&config).await?;
        let mut live = ctx.events.subscribe(None).live;
        let (task, mut peer) = call(ctx);
        peer.send(start(SID, serde_json::json!({"merchantId": "bad"})))
            .await?;
        peer.send(dtmf(SID, "1")).await?;
        peer.send(media(SID, 1, 0x11)).await?;
        peer.until("media", SID).await.expect("the call goes on");
        peer.send(stop(SID)).await?;
        let (reason, stats) = task.await?;
        assert_eq!(reason, EndReason::Stop, "{path}");
        let said: Vec<&str> = stats
            .transcript
            .iter()
            .filter(|t| t.side == switchboard::call::Side::Agent)
            .map(|t| t.text.as_str())
            .collect();
        assert_eq!(
            said,
            [r#"call_1: error no tool named "lookup_order" is available to this agent"#],
            "{path}"
        );
        let tool = stats.transcript.iter().find_map(|t| t.tool.as_ref());
        assert!(
            tool.is_some_and(|t| t.name == "lookup_order" && !t.ok),
            "{path}"
        );
        // The live events: the call, then its result, then what the agent said about it.
        let events = events_of(&mut live);
        let tools: Vec<_> = events
            .iter()
            .filter(|(t, _)| t.starts_with("tool."))
            .map(|(t, d)| {
                (
                    t.as_str(),
                    d["id"].clone(),
                    d["name"].clone(),
                    d["ok"].clone(),
                )
            })
            .collect();
        assert_eq!(
            tools,
            [
                (
                    "tool.call",
                    "call_1".into(),
                    "lookup_order".into(),
                    serde_json::Value::Null
                ),
                (
                    "tool.result",
                    "call_1".into(),
                    "lookup_order".into(),
                    false.into()
                ),
            ],
            "{path}: {events:?}"
        );
    }
    Ok(())
}
