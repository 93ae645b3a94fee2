//! Pipeline agents end to end: a real gateway, a caller speaking a real recording over a real
//! Media Streams socket, and three stage plugins built from source — fixture STT and TTS (so the
//! test knows exactly what was "said" and how long each clause plays) around the scripted
//! dialogue plugin.

use std::time::Duration;

use serde_json::json;
use switchboard::audio::vad::Vad;
use switchboard::call::{EndReason, Side};
use switchboard_tests::phone::{self, silence, wav_frames};
use switchboard_tests::{Gateway, fixture, write_config};

/// What the fixture STT reports the caller said.
const QUESTION: &str = "What are your opening hours?";

/// The reply to it: long enough (≈ 5 s at 50 ms per character) to barge into.
const REPLY: &str = "We are open from nine in the morning until five in the evening, Monday to \
                     Friday, and from ten until two on Saturdays. On Sundays we are closed.";

fn config(build: &str, greeting: Option<&str>) -> String {
    let lib = |name: &str| match build {
        "wasm" => format!("{{plugins}}/{name}.wasm"),
        _ => format!("{{native:{name}}}"),
    };
    let greeting = greeting.map_or(String::new(), |g| format!("greeting = \"{g}\""));
    format!(
        r#"
[plugins.stt]
path = "{stt}"
[plugins.llm]
path = "{llm}"
[plugins.tts]
path = "{tts}"

[[agents]]
name = "front-desk"
{greeting}

[agents.pipeline]
instructions = "You answer questions about the shop."
endpointing_ms = 600
stt = {{ plugin = "stt", settings = {{ text = "{QUESTION}" }} }}
llm = {{ plugin = "llm", settings = {{ intents = [{{ name = "hours", keywords = ["hours", "open"], reply = "{{hours}}" }}], slots = {{ hours = "{REPLY}" }}, fallback = "Sorry?" }} }}
tts = {{ plugin = "tts", settings = {{ ms_per_char = 50 }} }}

[routing]
default = "front-desk"
"#,
        stt = lib("fixed_stt"),
        llm = lib("scripted"),
        tts = lib("tone_tts"),
    )
}

async fn ended(
    rx: &mut tokio::sync::broadcast::Receiver<switchboard::server::CallEnded>,
) -> anyhow::Result<switchboard::server::CallEnded> {
    Ok(tokio::time::timeout(Duration::from_secs(10), rx.recv()).await??)
}

/// The caller asks; after the endpointing silence the reply streams clause by clause through
/// the TTS and plays in full; both turns enter the transcript and the turn's latency breakdown
/// is recorded. The greeting is spoken first. Same for the stages built as WASM components and
/// as native libraries (which run off the async workers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_is_answered_in_both_builds() -> anyhow::Result<()> {
    for build in ["wasm", "native"] {
        let gw = Gateway::start(&write_config(&config(build, Some("Hello.")))?).await?;
        let mut events = gw.state.subscribe();
        // The greeting (300 ms) has long played when the caller speaks, even on a busy machine.
        let mut script = silence(2000);
        script.extend(wav_frames(&fixture("speech/hours-question.wav"))?);
        let log = phone::call(&gw.url, json!({}), script, Duration::from_secs(16)).await?;
        let end = ended(&mut events).await?;
        assert_eq!(end.reason, EndReason::Stop, "{build}");
        assert!(
            log.clears.is_empty(),
            "{build}: nothing to barge into, but cleared at {:?} (first audio at {:?}); {:?}",
            log.clears
                .iter()
                .map(|c| c.at.saturating_duration_since(log.started.unwrap_or(c.at)))
                .collect::<Vec<_>>(),
            log.first_media
                .zip(log.started)
                .map(|(f, s)| f.saturating_duration_since(s)),
            end.stats
        );
        let turns: Vec<(Side, &str)> = end
            .stats
            .transcript
            .iter()
            .map(|t| (t.side, t.text.as_str()))
            .collect();
        assert_eq!(
            turns,
            [
                (Side::Agent, "Hello."),
                (Side::Caller, QUESTION),
                (Side::Agent, REPLY)
            ],
            "{build}"
        );
        // Greeting (6 chars) + reply, at 50 ms per character, all played.
        let played_ms = log.media.len() as u64 * 20;
        let expected_ms = (6 + REPLY.chars().count() as u64) * 50;
        assert!(
            played_ms.abs_diff(expected_ms) <= 200,
            "{build}: played {played_ms} ms, expected about {expected_ms}"
        );
        let latency = end.stats.turn_latency.first().copied().unwrap_or_default();
        println!("{build}: turn latency {latency:?}");
        let first_audio = latency.first_audio_out.expect("first audio of the reply");
        assert!(
            first_audio >= Duration::from_millis(600),
            "{build}: the reply began {first_audio:?} after the caller stopped, before the endpointing silence"
        );
        assert!(latency.stt_final <= latency.llm_first_text);
        assert!(latency.llm_first_text <= latency.tts_first_audio);
    }
    Ok(())
}

/// The caller cuts in while the reply plays: `clear` goes out within one frame of the VAD's
/// onset, the LLM and TTS are cancelled (no more reply audio), and the history keeps only what
/// the playback clock says was heard — within 20 ms of what the caller's phone played.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_clears_within_a_frame_and_keeps_what_was_heard() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(&config("wasm", None))?).await?;
    let mut events = gw.state.subscribe();
    let question = wav_frames(&fixture("speech/hours-question.wav"))?;
    let mut script = silence(400);
    script.extend(question.iter().cloned());
    // The reply starts ≈ 600 ms after the question ends; cut in 2 s into it.
    script.extend(silence(2600));
    let barge_at = script.len();
    script.extend(question.iter().cloned());
    let log = phone::call(&gw.url, json!({}), script.clone(), Duration::from_secs(11)).await?;
    let end = ended(&mut events).await?;
    assert_eq!(end.reason, EndReason::Stop);

    // Where the host's VAD turns on in the barge-in speech: the same detector, same frames.
    let mut vad = Vad::new()?;
    let mut onset = None;
    let mut was = false;
    for (i, frame) in script.iter().enumerate() {
        let now = vad.frame(frame)?;
        if now && !was && i >= barge_at {
            onset = Some(i);
            break;
        }
        was = now;
    }
    let onset = onset.expect("the VAD hears the barge-in");
    let clear = log.clears.first().expect("a clear on barge-in");
    let sent = log.sent_at[onset];
    let delay = clear.at.saturating_duration_since(sent);
    println!(
        "VAD onset {} ms into the barge-in; clear {delay:?} after that frame was sent",
        (onset - barge_at) * 20
    );
    assert!(
        clear.at >= sent && delay <= Duration::from_millis(20),
        "clear {delay:?} after the onset frame"
    );

    // No reply audio after the clear until the caller's new turn is answered (≥ endpointing).
    if let Some((first, _)) = log.media.iter().find(|(at, _)| *at > clear.at) {
        assert!(
            first.saturating_duration_since(clear.at) >= Duration::from_millis(600),
            "audio of the cancelled reply {:?} after the clear",
            first.saturating_duration_since(clear.at)
        );
    }

    let cut = end
        .stats
        .transcript
        .iter()
        .find(|t| t.side == Side::Agent && t.heard_ms.is_some())
        .expect("the interrupted reply in the transcript");
    let heard_ms = cut.heard_ms.unwrap_or_default();
    println!(
        "phone played {} ms, host says heard {heard_ms} ms: {:?}",
        clear.heard_ms, cut.text
    );
    assert!(
        heard_ms.abs_diff(clear.heard_ms) <= 20,
        "host heard {heard_ms} ms, phone played {} ms",
        clear.heard_ms
    );
    assert!(REPLY.starts_with(&cut.text), "{:?}", cut.text);
    assert!(!cut.text.is_empty() && cut.text.len() < REPLY.len());
    // Whole words of what was heard: at most one word (≤ 12 chars) short of the heard ms.
    let text_ms = cut.text.chars().count() as u64 * 50;
    assert!(
        text_ms <= heard_ms + 20 && text_ms + 12 * 50 >= heard_ms,
        "kept {text_ms} ms of text for {heard_ms} ms heard"
    );
    Ok(())
}

/// A stage that computes for a long time (a native recognizer blocking its thread for 1.5 s per
/// turn) delays only its own call: an echo call beside it keeps its frames' round trip short,
/// because native stages run off the async workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_native_stage_does_not_delay_other_calls() -> anyhow::Result<()> {
    slow_native_stage_beside_an_echo_call().await
}

/// The same on a single-threaded runtime, as in a `serve --shards` shard: the native stage's
/// calls go to the blocking pool, so the thread's other calls keep their timing.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_native_stage_does_not_delay_other_calls_on_one_thread() -> anyhow::Result<()> {
    slow_native_stage_beside_an_echo_call().await
}

async fn slow_native_stage_beside_an_echo_call() -> anyhow::Result<()> {
    let config = format!(
        r#"
[plugins.stt]
path = "{{native:fixed_stt}}"
budget_ms = 5000
[plugins.llm]
path = "{{plugins}}/scripted.wasm"
[plugins.tts]
path = "{{plugins}}/tone_tts.wasm"
[plugins.echo]
path = "{{plugins}}/echo.wasm"

[[agents]]
name = "slow"
[agents.pipeline]
stt = {{ plugin = "stt", settings = {{ text = "{QUESTION}", delay_ms = 1500 }} }}
llm = {{ plugin = "llm", settings = {{ intents = [], fallback = "Sorry?" }} }}
tts = {{ plugin = "tts" }}

[[agents]]
name = "echo"
realtime = {{ plugin = "echo", settings = {{ mode = "immediate" }} }}

[routing]
default = "slow"
"#
    );
    let gw = Gateway::start(&write_config(&config)?).await?;
    let mut events = gw.state.subscribe();
    let mut script = silence(300);
    script.extend(wav_frames(&fixture("speech/hours-question.wav"))?);
    // The slow turn ends ≈ 3.7 s in and computes until ≈ 5.2 s; the echo call spans it.
    let url = gw.url.clone();
    let slow =
        tokio::spawn(
            async move { phone::call(&url, json!({}), script, Duration::from_secs(7)).await },
        );
    let echo = phone::call(
        &gw.url,
        json!({"agent": "echo"}),
        phone::speech(6500),
        Duration::from_secs(7),
    )
    .await?;
    slow.await??;
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let end = tokio::time::timeout(Duration::from_secs(10), events.recv()).await??;
        reasons.push((
            end.stats.agent.clone(),
            end.reason.clone(),
            end.stats.transcript.len(),
        ));
    }
    assert!(
        reasons
            .iter()
            .all(|(_, reason, _)| *reason == EndReason::Stop),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(agent, _, turns)| agent.as_deref() == Some("slow") && *turns >= 2),
        "the slow call answered its turn: {reasons:?}"
    );
    // Echo immediate: frame i comes back right after caller frame i was sent.
    let mut worst = Duration::ZERO;
    for (i, (at, _)) in echo.media.iter().enumerate() {
        if let Some(sent) = echo.sent_at.get(i) {
            worst = worst.max(at.saturating_duration_since(*sent));
        }
    }
    println!(
        "echo beside a 1.5 s native computation: {} frames, worst round trip {worst:?}",
        echo.media.len()
    );
    assert!(
        echo.media.len() >= 300,
        "{} frames echoed",
        echo.media.len()
    );
    assert!(
        worst < Duration::from_millis(200),
        "worst echo round trip {worst:?}"
    );
    Ok(())
}

/// A barge-in that cuts the greeting before a whole word was heard enters nothing in the
/// record, and its heard ms does not stick to the next reply (which played whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_before_a_whole_word_leaves_no_heard_ms_on_the_next_reply() -> anyhow::Result<()> {
    // 100 ms a character: the greeting's first word lasts over half a second.
    let config = config("wasm", Some("Thank you for calling the front desk."))
        .replace("ms_per_char = 50", "ms_per_char = 100")
        .replace(&format!("text = \"{QUESTION}\""), "text = \"Hello\"");
    let gw = Gateway::start(&write_config(&config)?).await?;
    let mut events = gw.state.subscribe();
    let mut script = silence(60);
    script.extend(phone::speech(700));
    script.extend(silence(3500));
    let log = phone::call(&gw.url, json!({}), script, Duration::from_millis(4300)).await?;
    let end = ended(&mut events).await?;
    assert_eq!(end.reason, EndReason::Stop);
    let cut = log.clears.first().expect("the caller cut the greeting");
    assert!(cut.heard_ms < 500, "cut after {} ms", cut.heard_ms);
    let agent: Vec<_> = end
        .stats
        .transcript
        .iter()
        .filter(|t| t.side == Side::Agent)
        .collect();
    assert_eq!(agent.len(), 1, "{:?}", end.stats.transcript);
    assert_eq!(agent[0].text, "Sorry?");
    assert_eq!(agent[0].heard_ms, None, "the reply played whole");
    Ok(())
}

/// The caller says "mm-hmm" over the reply (the recognizer, like Whisper, tells words only at
/// the end of the utterance): the detector cuts the agent at once, the final transcript shows a
/// backchannel, and the agent says the rest of its reply from the clause it was on — the caller
/// hears it go on, and the record has no caller turn for the backchannel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backchannel_over_the_reply_is_no_turn_and_the_agent_resumes() -> anyhow::Result<()> {
    let body = config("wasm", None).replace(
        &format!("text = \"{QUESTION}\""),
        &format!("text = \"{QUESTION}\", then = [\"Mm-hmm.\"]"),
    );
    assert!(body.contains("Mm-hmm"), "the fixture STT is scripted");
    let gw = Gateway::start(&write_config(&body)?).await?;
    let mut events = gw.state.subscribe();
    let question = wav_frames(&fixture("speech/hours-question.wav"))?;
    let mut script = silence(400);
    script.extend(question.iter().cloned());
    // The reply starts ≈ 600 ms after the question ends; "mm-hmm" 2 s into it (the question's
    // first 600 ms of sound stand in for it: the fixture STT says what was said).
    script.extend(silence(2600));
    let lead = question
        .iter()
        .position(|f| f.iter().any(|&b| b != 0xFF && b != 0x7F))
        .unwrap_or(0);
    script.extend(
        question[lead..(lead + 30).min(question.len())]
            .iter()
            .cloned(),
    );
    let log = phone::call(&gw.url, json!({}), script, Duration::from_secs(16)).await?;
    let end = ended(&mut events).await?;
    assert_eq!(end.reason, EndReason::Stop);
    let turns: Vec<(Side, &str, Option<u64>)> = end
        .stats
        .transcript
        .iter()
        .map(|t| (t.side, t.text.as_str(), t.heard_ms))
        .collect();
    println!("{turns:#?}");
    assert_eq!(log.clears.len(), 1, "the detector cut the agent once");
    let clear = &log.clears[0];
    let callers: Vec<&str> = turns
        .iter()
        .filter(|t| t.0 == Side::Caller)
        .map(|t| t.1)
        .collect();
    assert_eq!(callers, [QUESTION], "the backchannel is no turn");
    // The agent's turns: the cut reply (as heard), then the rest, played whole.
    let agent: Vec<&(Side, &str, Option<u64>)> =
        turns.iter().filter(|t| t.0 == Side::Agent).collect();
    assert_eq!(agent.len(), 2, "{agent:?}");
    assert!(agent[0].2.is_some() && REPLY.starts_with(agent[0].1));
    assert!(
        agent[1].2.is_none() && REPLY.ends_with(agent[1].1),
        "{agent:?}"
    );
    // The caller heard the reply go on after the clear.
    let after: u64 = log.media.iter().filter(|(at, _)| *at > clear.at).count() as u64 * 20;
    let rest_ms = agent[1].1.chars().count() as u64 * 50;
    assert!(
        after + 200 >= rest_ms,
        "{after} ms played after the clear, the rest is {rest_ms} ms"
    );
    Ok(())
}
