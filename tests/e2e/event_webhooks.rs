//! Event webhooks, end to end: a real gateway POSTs a call's live events to the agent's
//! `[agents.events]` URL, signed by the Standard Webhooks scheme and checked by a receiver that
//! verifies the signature itself; and a receiver that takes the connection and never answers
//! does not delay the call's audio (timed against the same calls with no webhook configured).

use std::time::Duration;

use serde_json::json;
use switchboard::call::EndReason;
use switchboard_tests::callback_receiver::{CallbackReceiver, HungReceiver};
use switchboard_tests::phone::{self, silence, wav_frames};
use switchboard_tests::{Gateway, fixture, write_config};

/// The agents' signing secret (the Standard Webhooks specification's example).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the fixture STT reports the caller said.
const QUESTION: &str = "What are your opening hours?";

/// The reply.
const REPLY: &str = "We are open from nine to five.";

/// A pipeline agent `front-desk` (the default) and an echo agent `echo`, both sending their
/// events to `url` when given.
fn config(url: Option<&str>) -> String {
    let events = url
        .map(|url| format!("\n[agents.events]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n"))
        .unwrap_or_default();
    format!(
        r#"
# Generous budgets: the fixture plugins are quick, but this machine may be busy (a debug build,
# other tests beside), and a plugin over its budget would end the call for the wrong reason.
[plugins.stt]
path = "{{plugins}}/fixed_stt.wasm"
budget_ms = 5000
[plugins.llm]
path = "{{plugins}}/scripted.wasm"
budget_ms = 5000
[plugins.tts]
path = "{{plugins}}/tone_tts.wasm"
budget_ms = 5000
[plugins.echo]
path = "{{plugins}}/echo.wasm"

[[agents]]
name = "front-desk"
[agents.pipeline]
endpointing_ms = 600
stt = {{ plugin = "stt", settings = {{ text = "{QUESTION}" }} }}
llm = {{ plugin = "llm", settings = {{ intents = [{{ name = "hours", keywords = ["hours"], reply = "{REPLY}" }}], fallback = "Sorry?" }} }}
tts = {{ plugin = "tts" }}
{events}
[[agents]]
name = "echo"
match = {{ line = "echo" }}
realtime = {{ plugin = "echo", settings = {{ mode = "immediate" }} }}
{events}
[routing]
default = "front-desk"
"#
    )
}

/// The `seq` of an event id (`<boot>-<seq>`).
fn seq(id: &str) -> u64 {
    id.rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_default()
}

/// A pipeline call's events reach the agent's webhook, each signed (checked by the receiver
/// with its own HMAC), `webhook-id` the event's id, in the call's order from `call.started` to
/// `call.ended` — the first refused with a 500 and delivered again with the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_events_arrive_signed_and_in_order() -> anyhow::Result<()> {
    let receiver = CallbackReceiver::start(SECRET, 1).await?;
    let gw = Gateway::start(&write_config(&config(Some(&receiver.url)))?).await?;
    let mut ended = gw.state.subscribe();
    let mut script = silence(500);
    script.extend(wav_frames(&fixture("speech/hours-question.wav"))?);
    let duration = Duration::from_millis(script.len() as u64 * 20 + 3000);
    phone::call(&gw.url, json!({}), script, duration).await?;
    let end = tokio::time::timeout(Duration::from_secs(10), ended.recv()).await??;
    assert_eq!(end.reason, EndReason::Stop);

    let seen = receiver
        .wait_until(Duration::from_secs(15), |seen| {
            seen.iter()
                .any(|d| d.accepted && d.body["type"] == "call.ended")
        })
        .await?;
    let refused: Vec<_> = seen.iter().filter(|d| !d.accepted).collect();
    assert_eq!(refused.len(), 1, "{seen:#?}");
    assert!(refused[0].signature_valid, "{:?}", refused[0]);
    let delivered: Vec<_> = seen.iter().filter(|d| d.accepted).collect();
    assert_eq!(
        delivered[0].id, refused[0].id,
        "the refused event came again with the same webhook-id"
    );
    let types: Vec<&str> = delivered
        .iter()
        .map(|d| d.body["type"].as_str().unwrap_or_default())
        .collect();
    println!("delivered: {types:?}");
    assert_eq!(types.first(), Some(&"call.started"), "{types:?}");
    assert_eq!(types.last(), Some(&"call.ended"), "{types:?}");
    for needed in ["caller.transcript", "agent.text"] {
        assert!(types.contains(&needed), "no {needed}: {types:?}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let mut last = 0;
    for d in &delivered {
        assert!(d.signature_valid, "{d:?}");
        assert_eq!(d.body["id"], d.id.as_str(), "webhook-id is the event id");
        assert_eq!(d.body["call_sid"], "CA1");
        assert_eq!(d.body["agent"], "front-desk");
        assert!((now - d.timestamp).abs() < 60, "timestamp {}", d.timestamp);
        assert!(seq(&d.id) > last, "out of order: {types:?}");
        last = seq(&d.id);
    }
    let transcript = delivered
        .iter()
        .find(|d| d.body["type"] == "caller.transcript" && d.body["data"]["final"] == true)
        .expect("a final caller transcript");
    assert_eq!(transcript.body["data"]["text"], QUESTION);
    Ok(())
}

/// Round trips of an echo call's frames (send a frame, time until its echo returns), in ms,
/// beside a pipeline call that talks (more events), and how long after its `stop` the gateway
/// closed the echo call.
async fn echo_beside_a_pipeline_call(gw: &Gateway) -> anyhow::Result<(Vec<f64>, Duration)> {
    let mut ended = gw.state.subscribe();
    let mut script = silence(300);
    script.extend(wav_frames(&fixture("speech/hours-question.wav"))?);
    let talking = Duration::from_millis(script.len() as u64 * 20 + 2500);
    let url = gw.url.clone();
    let pipeline = tokio::spawn(async move { phone::call(&url, json!({}), script, talking).await });
    let duration = Duration::from_secs(4);
    let started = tokio::time::Instant::now();
    let echo = phone::call(
        &gw.url,
        json!({"line": "echo"}),
        phone::speech(3800),
        duration,
    )
    .await?;
    // The phone hangs up (`stop`) at `duration` and returns when the gateway has closed the
    // socket (or after 3 s).
    let echo_end = started.elapsed().saturating_sub(duration);
    let mut agents = Vec::new();
    for _ in 0..2 {
        let end = tokio::time::timeout(Duration::from_secs(10), ended.recv()).await??;
        assert_eq!(end.reason, EndReason::Stop, "{:?}", end.stats.agent);
        agents.push(end.stats.agent.clone().unwrap_or_default());
    }
    agents.sort();
    assert_eq!(agents, ["echo", "front-desk"]);
    pipeline.await??;
    let rtts: Vec<f64> = echo
        .media
        .iter()
        .zip(&echo.sent_at)
        .map(|((at, _), sent)| at.saturating_duration_since(*sent).as_secs_f64() * 1000.0)
        .collect();
    anyhow::ensure!(rtts.len() >= 150, "{} frames echoed", rtts.len());
    Ok((rtts, echo_end))
}

fn p95(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() * 95 / 100).min(values.len() - 1)]
}

/// A receiver that accepts the connection and never answers: the calls whose events it should
/// get keep their audio timing (the echo call's per-frame round trip p95 within 50 ms of the
/// same calls on a gateway with no webhook configured, measured in this test) and end on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_receiver_does_not_delay_the_calls_audio() -> anyhow::Result<()> {
    let plain = Gateway::start(&write_config(&config(None))?).await?;
    let (baseline, baseline_end) = echo_beside_a_pipeline_call(&plain).await?;
    drop(plain);

    let hung = HungReceiver::start().await?;
    let hooked = Gateway::start(&write_config(&config(Some(&hung.url)))?).await?;
    let (measured, measured_end) = echo_beside_a_pipeline_call(&hooked).await?;
    let (base_p95, hooked_p95) = (p95(baseline.clone()), p95(measured.clone()));
    println!(
        "echo round trip p95: {base_p95:.1} ms without webhooks, {hooked_p95:.1} ms with a hung \
         receiver ({} connections held); ended {baseline_end:?} / {measured_end:?} after stop",
        hung.connections()
    );
    assert!(
        hung.connections() >= 1,
        "the gateway never reached the hung receiver: this test tests nothing"
    );
    assert!(
        hooked_p95 < base_p95 + 50.0,
        "p95 {hooked_p95:.1} ms with a hung receiver vs {base_p95:.1} ms without"
    );
    assert!(
        measured_end < Duration::from_secs(2)
            && measured_end < baseline_end + Duration::from_secs(1),
        "the echo call ended {measured_end:?} after its stop ({baseline_end:?} without webhooks)"
    );
    Ok(())
}
