//! Tests of the pipeline turn-taking: every event sequence a call lives through.

use super::*;

const PCM8K: AudioFormat = AudioFormat {
    encoding: AudioEncoding::Pcm16,
    sample_rate: 8000,
};

fn turns() -> Turns {
    Turns::new(TurnConfig {
        instructions: "Be brief.".into(),
        endpointing: DEFAULT_ENDPOINTING,
        greeting: None,
    })
}

fn frame(t: &mut Turns, speech: bool, now: Instant) -> Vec<Action> {
    t.on(
        Event::CallerFrame {
            speech,
            data: vec![0; 320],
            timestamp_ms: 0,
        },
        now,
    )
}

/// `ms` of PCM16 audio at 8 kHz.
fn audio(ms: usize) -> StageOutput {
    StageOutput::Audio {
        format: PCM8K,
        data: vec![0; ms * 16],
    }
}

/// The caller speaks for 400 ms then stays quiet until the host ends the turn.
fn caller_turn(t: &mut Turns, text: &str, now: &mut Instant) -> Vec<Action> {
    for _ in 0..20 {
        let _ = frame(t, true, *now);
        *now += Duration::from_millis(20);
    }
    let mut ended = false;
    for _ in 0..40 {
        let out = frame(t, false, *now);
        *now += Duration::from_millis(20);
        if out.contains(&Action::Stt(StageInput::EndOfTurn)) {
            ended = true;
            break;
        }
    }
    assert!(ended, "the host ended the turn");
    let mut out = t.on(
        Event::Stt(StageOutput::Transcript {
            text: text.into(),
            is_final: true,
        }),
        *now,
    );
    out.extend(t.on(Event::Stt(StageOutput::EndOfTurn), *now));
    out
}

#[test]
fn endpointing_after_the_configured_silence_then_history_goes_to_the_llm() {
    let mut t = turns();
    let mut now = Instant::now();
    let start = now;
    let out = caller_turn(&mut t, "What are your hours?", &mut now);
    // 400 ms of speech + 600 ms of silence.
    assert_eq!(now - start, Duration::from_millis(1000));
    assert_eq!(
        out,
        vec![Action::Llm(StageInput::Reply(vec![
            (Role::System, "Be brief.".into()),
            (Role::User, "What are your hours?".into()),
        ]))]
    );
}

#[test]
fn llm_text_streams_to_tts_clause_by_clause_and_enters_history_once_played() {
    let mut t = turns();
    let mut now = Instant::now();
    let _ = caller_turn(&mut t, "hours?", &mut now);
    let out = t.on(
        Event::Llm(StageOutput::TextDelta("We are open from nine".into())),
        now,
    );
    assert!(out.is_empty(), "no clause yet: {out:?}");
    let out = t.on(
        Event::Llm(StageOutput::TextDelta(
            " to five, Monday to Friday. Anything".into(),
        )),
        now,
    );
    assert_eq!(
        out,
        vec![
            Action::Tts(StageInput::Text("We are open from nine to five, ".into())),
            Action::Tts(StageInput::Flush),
            Action::Tts(StageInput::Text("Monday to Friday. ".into())),
            Action::Tts(StageInput::Flush),
        ]
    );
    let out = t.on(Event::Llm(StageOutput::TextDelta(" else?".into())), now);
    assert!(out.is_empty());
    let out = t.on(Event::Llm(StageOutput::Done), now);
    assert_eq!(
        out,
        vec![
            Action::Tts(StageInput::Text("Anything else?".into())),
            Action::Tts(StageInput::Flush)
        ]
    );
    for _ in 0..3 {
        let out = t.on(Event::Tts(audio(500)), now);
        assert!(matches!(out[0], Action::Play { .. }));
        let _ = t.on(Event::Tts(StageOutput::UtteranceDone), now);
    }
    assert_eq!(t.history().len(), 1, "not played yet");
    let _ = t.on(Event::PlaybackIdle, now);
    assert_eq!(
        t.history()[1],
        (
            Role::Assistant,
            "We are open from nine to five, Monday to Friday. Anything else?".into()
        )
    );
    assert_eq!(t.latencies.len(), 1);
    assert!(t.latencies[0].tts_first_audio.is_some());
}

#[test]
fn barge_in_clears_cancels_and_keeps_only_what_was_heard() {
    let mut t = turns();
    let mut now = Instant::now();
    let _ = caller_turn(&mut t, "hours?", &mut now);
    let _ = t.on(
        Event::Llm(StageOutput::TextDelta(
            "We are open from nine to five, Monday to Friday and on Saturday mornings. ".into(),
        )),
        now,
    );
    let _ = t.on(Event::Llm(StageOutput::Done), now);
    // Clause 1 (8 words): 1000 ms; clause 2 (8 words): 1000 ms.
    for _ in 0..2 {
        let _ = t.on(Event::Tts(audio(1000)), now);
        let _ = t.on(Event::Tts(StageOutput::UtteranceDone), now);
    }
    // The caller talks over the agent.
    let out = frame(&mut t, true, now);
    assert_eq!(
        &out[1..],
        &[
            Action::ClearPlayback,
            Action::Llm(StageInput::Cancel),
            Action::Tts(StageInput::Cancel)
        ]
    );
    // Late audio of the cancelled utterance is not played.
    assert!(t.on(Event::Tts(audio(100)), now).is_empty());
    // The caller heard all of clause 1 and half of clause 2.
    let _ = t.on(Event::Interrupted { heard_ms: 1500 }, now);
    assert_eq!(
        t.history()[1],
        (
            Role::Assistant,
            "We are open from nine to five, Monday to Friday".into()
        )
    );
}

#[test]
fn greeting_is_spoken_first_and_remembered() {
    let mut t = Turns::new(TurnConfig {
        instructions: String::new(),
        endpointing: DEFAULT_ENDPOINTING,
        greeting: Some("Hello, how can I help?".into()),
    });
    let now = Instant::now();
    let out = t.on(Event::Started, now);
    assert_eq!(
        out,
        vec![
            Action::Tts(StageInput::Text("Hello, how can I help?".into())),
            Action::Tts(StageInput::Flush)
        ]
    );
    let _ = t.on(Event::Tts(audio(800)), now);
    let _ = t.on(Event::Tts(StageOutput::UtteranceDone), now);
    let _ = t.on(Event::PlaybackIdle, now);
    assert_eq!(
        t.history(),
        &[(Role::Assistant, "Hello, how can I help?".into())]
    );
}

#[test]
fn the_recognizers_own_end_of_turn_wins() {
    let mut t = turns();
    let now = Instant::now();
    let _ = frame(&mut t, true, now);
    let _ = t.on(
        Event::Stt(StageOutput::Transcript {
            text: "bye".into(),
            is_final: true,
        }),
        now,
    );
    let out = t.on(Event::Stt(StageOutput::EndOfTurn), now);
    assert!(matches!(&out[0], Action::Llm(StageInput::Reply(h)) if h.len() == 2));
}
