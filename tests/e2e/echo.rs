//! The agent's own echo: a real gateway, a pipeline agent whose "voice" is a real human
//! recording (the fixture TTS with `voice = "recording"`), and a test phone that feeds what it
//! plays back into the caller's audio at a given delay and level — a line hybrid's or a
//! speakerphone's echo. The agent must not interrupt itself on it, and the recognizer must not
//! hear it; a caller who really speaks over it must still cut the agent off at once.

use std::time::Duration;

use serde_json::json;
use switchboard::call::{EndReason, Side};
use switchboard_tests::noise;
use switchboard_tests::phone::{self, CallOptions, EchoPath, silence, wav_frames};
use switchboard_tests::{Gateway, fixture, write_config};

/// What the fixture STT reports the caller said.
const QUESTION: &str = "What are your opening hours?";

/// The reply: ≈ 5.5 s of the recorded voice at 50 ms per character.
const REPLY: &str = "We are open from nine in the morning until five in the evening, Monday to \
                     Friday, and from ten until two on Saturdays. On Sundays we are closed.";

/// The greeting: ≈ 3 s.
const GREETING: &str = "Hello, thanks for calling the shop. How can I help you today?";

fn config() -> String {
    format!(
        r#"
[plugins.stt]
path = "{{plugins}}/fixed_stt.wasm"
[plugins.llm]
path = "{{plugins}}/scripted.wasm"
[plugins.tts]
path = "{{plugins}}/tone_tts.wasm"

[[agents]]
name = "front-desk"
greeting = "{GREETING}"

[agents.pipeline]
instructions = "You answer questions about the shop."
endpointing_ms = 600
stt = {{ plugin = "stt", settings = {{ text = "{QUESTION}" }} }}
llm = {{ plugin = "llm", settings = {{ intents = [{{ name = "hours", keywords = ["hours", "open"], reply = "{REPLY}" }}], fallback = "Sorry?" }} }}
tts = {{ plugin = "tts", settings = {{ ms_per_char = 50, voice = "recording" }} }}

[routing]
default = "front-desk"
"#
    )
}

async fn ended(
    rx: &mut tokio::sync::broadcast::Receiver<switchboard::server::CallEnded>,
) -> anyhow::Result<switchboard::server::CallEnded> {
    Ok(tokio::time::timeout(Duration::from_secs(20), rx.recv()).await??)
}

/// The greeting and a whole reply play with the agent's echo at −20, −30 and −40 dB, 60 and
/// 250 ms late: nothing is cut (no `clear`), the caller's one question is the only caller turn
/// (the echo never reaches the recognizer as a turn), and both agent turns are recorded whole.
/// The six lines are called at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_does_not_interrupt_itself_on_its_echo() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(&config())?).await?;
    let mut events = gw.state.subscribe();
    // The greeting (≈ 3 s) plays out; the question; the reply (≈ 5.5 s) plays out.
    let mut script = silence(4000);
    script.extend(wav_frames(&fixture("speech/hours-question.wav"))?);
    let duration = Duration::from_millis(script.len() as u64 * 20 + 8000);
    let mut calls = Vec::new();
    for level_db in [-20.0, -30.0, -40.0] {
        for delay_ms in [60, 250] {
            let (url, script) = (gw.url.clone(), script.clone());
            let echo = EchoPath { delay_ms, level_db };
            calls.push(tokio::spawn(async move {
                let options = CallOptions { echo: Some(echo) };
                (
                    echo,
                    phone::call_with(&url, json!({}), script, duration, options).await,
                )
            }));
        }
    }
    let mut ends = Vec::new();
    for _ in 0..calls.len() {
        ends.push(ended(&mut events).await?);
    }
    for (call, end) in calls.into_iter().zip(&ends) {
        let (echo, log) = call.await?;
        let log = log?;
        // Calls end in any order; each has the whole dialogue, so any end shows the same.
        assert_eq!(end.reason, EndReason::Stop);
        assert!(
            log.clears.is_empty(),
            "{echo:?}: cut by its own echo {} time(s), first {:?} into the call",
            log.clears.len(),
            log.clears
                .first()
                .map(|c| c.at.saturating_duration_since(log.started.unwrap_or(c.at)))
        );
    }
    for end in &ends {
        let turns: Vec<(Side, &str, Option<u64>)> = end
            .stats
            .transcript
            .iter()
            .map(|t| (t.side, t.text.as_str(), t.heard_ms))
            .collect();
        assert_eq!(
            turns,
            [
                (Side::Agent, GREETING, None),
                (Side::Caller, QUESTION, None),
                (Side::Agent, REPLY, None)
            ],
            "{:?}",
            end.stats
        );
        println!(
            "echo frames the VAD heard as speech, held back: {}",
            end.stats.echo_frames
        );
    }
    assert!(
        ends.iter().any(|e| e.stats.echo_frames > 0),
        "the VAD never heard the echo as speech: this test tests nothing"
    );
    Ok(())
}

/// A caller who really speaks over the agent and its −20 dB echo (250 ms late) still cuts it
/// off: `clear` reaches the phone within 100 ms of the onset of the caller's speech.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_interruption_over_the_echo_still_clears_within_100_ms() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(&config())?).await?;
    let mut events = gw.state.subscribe();
    let mut live = gw.state.context().events.subscribe(None).live;
    let question = wav_frames(&fixture("speech/hours-question.wav"))?;
    let mut script = silence(4000);
    script.extend(question.iter().cloned());
    // The reply starts ≈ 600 ms after the question ends; cut in 2 s into it.
    script.extend(silence(2600));
    let barge_at = script.len();
    script.extend(question.iter().cloned());
    let duration = Duration::from_millis(script.len() as u64 * 20 + 3000);
    let echo = EchoPath {
        delay_ms: 250,
        level_db: -20.0,
    };
    let options = CallOptions { echo: Some(echo) };
    let log = phone::call_with(&gw.url, json!({}), script.clone(), duration, options).await?;
    let end = ended(&mut events).await?;
    assert_eq!(end.reason, EndReason::Stop);

    // The onset of the caller's speech: the first frame of the barge-in louder than −40 dBFS.
    let onset = (barge_at..script.len())
        .find(|&i| {
            let pcm: Vec<i16> = script[i]
                .iter()
                .map(|&b| switchboard::audio::mulaw::decode(b))
                .collect();
            noise::dbfs(&pcm) > -40.0
        })
        .expect("the barge-in has speech");
    assert_eq!(log.clears.len(), 1, "one clear, for the interruption");
    let clear = &log.clears[0];
    let sent = log.sent_at[onset];
    let delay = clear.at.saturating_duration_since(sent);
    println!(
        "speech onset {} ms into the barge-in; clear {delay:?} after it",
        (onset - barge_at) * 20
    );
    assert!(
        clear.at >= sent && delay <= Duration::from_millis(100),
        "clear {delay:?} after the caller's speech onset"
    );
    let cut = end
        .stats
        .transcript
        .iter()
        .find(|t| t.side == Side::Agent && t.heard_ms.is_some())
        .expect("the interrupted reply in the transcript");
    assert!(REPLY.starts_with(&cut.text), "{:?}", cut.text);
    // The live event feed told of it: one `agent.barge_in`, with what the caller heard as the
    // phone counted it (within two frames), before the cut reply's final text.
    let mut feed = Vec::new();
    while let Ok(event) = live.try_recv() {
        let v: serde_json::Value = serde_json::from_str(&event.json)?;
        feed.push((event.kind, v["data"].clone()));
    }
    let barge_ins: Vec<_> = feed
        .iter()
        .filter(|(k, _)| *k == "agent.barge_in")
        .collect();
    assert_eq!(barge_ins.len(), 1, "{feed:?}");
    let heard = barge_ins[0].1["heard_ms"].as_u64().unwrap_or(u64::MAX);
    assert!(
        heard.abs_diff(clear.heard_ms) <= 40,
        "event heard_ms {heard}, phone {}",
        clear.heard_ms
    );
    assert_eq!(Some(heard), cut.heard_ms);
    Ok(())
}
