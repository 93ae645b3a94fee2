//! Tests of the pipeline turn-taking: every event sequence a call lives through.

use super::*;
use crate::call::interruption::Backchannel;
use crate::plugin::tools::ToolOutcome;

const PCM8K: AudioFormat = AudioFormat {
    encoding: AudioEncoding::Pcm16,
    sample_rate: 8000,
};

fn test_config() -> TurnConfig {
    TurnConfig {
        instructions: "Be brief.".into(),
        endpointing: DEFAULT_ENDPOINTING,
        greeting: None,
        filler: Some("One moment, please.".into()),
        keypad_timeout: Duration::from_millis(2000),
        resume_false_interruptions: true,
        min_interruption: Duration::ZERO,
    }
}

fn turns() -> Turns {
    Turns::new(test_config())
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
            Message::text(Role::System, "Be brief."),
            Message::text(Role::User, "What are your hours?"),
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
        Message::text(
            Role::Assistant,
            "We are open from nine to five, Monday to Friday. Anything else?"
        )
    );
    assert_eq!(t.latencies.len(), 1);
    assert!(t.latencies[0].tts_first_audio.is_some());
    // 400 ms of speech; the decision came the endpointing silence after its last frame.
    assert_eq!(t.latencies[0].speech, Some(Duration::from_millis(400)));
    assert_eq!(t.latencies[0].endpointing, Some(DEFAULT_ENDPOINTING));
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
        Message::text(
            Role::Assistant,
            "We are open from nine to five, Monday to Friday"
        )
    );
}

#[test]
fn greeting_is_spoken_first_and_remembered() {
    let mut t = Turns::new(TurnConfig {
        instructions: String::new(),
        endpointing: DEFAULT_ENDPOINTING,
        greeting: Some("Hello, how can I help?".into()),
        filler: None,
        keypad_timeout: Duration::from_millis(2000),
        resume_false_interruptions: true,
        min_interruption: Duration::ZERO,
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
        &[Message::text(Role::Assistant, "Hello, how can I help?")]
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

/// The caller asked; returns the time after their turn closed.
fn ask(t: &mut Turns, text: &str, mut now: Instant) -> Instant {
    for _ in 0..10 {
        let _ = frame(t, true, now);
        now += Duration::from_millis(20);
    }
    for _ in 0..30 {
        let _ = frame(t, false, now);
        now += Duration::from_millis(20);
    }
    let _ = t.on(
        Event::Stt(StageOutput::Transcript {
            text: text.into(),
            is_final: true,
        }),
        now,
    );
    now
}

fn tool_call(id: &str) -> crate::plugin::tools::ToolCall {
    crate::plugin::tools::ToolCall {
        id: id.into(),
        name: "order_status".into(),
        arguments: r#"{"order":"1042"}"#.into(),
    }
}

fn result(id: &str, output: &str) -> Event {
    Event::ToolResult {
        result: ToolResult {
            id: id.into(),
            outcome: ToolOutcome::Output(output.into()),
        },
        continue_reply: true,
    }
}

#[test]
fn tool_calls_run_and_the_reply_continues_with_their_results() {
    let mut t = turns();
    let now = ask(&mut t, "Where is my order?", Instant::now());
    let out = t.on(
        Event::Llm(StageOutput::TextDelta("Let me check that. ".into())),
        now,
    );
    assert!(out.contains(&Action::Tts(StageInput::Text("Let me check that. ".into()))));
    // Two calls in one reply (parallel).
    assert_eq!(
        t.on(Event::Llm(StageOutput::ToolCall(tool_call("a"))), now),
        vec![Action::RunTool(tool_call("a"))]
    );
    let _ = t.on(Event::Llm(StageOutput::ToolCall(tool_call("b"))), now);
    // One result before the LLM is done, one after: nothing is asked until both are in.
    assert!(t.on(result("a", r#"{"status":"shipped"}"#), now).is_empty());
    assert!(t.on(Event::Llm(StageOutput::Done), now).is_empty());
    assert!(t.tools_pending());
    let out = t.on(result("b", r#"{"eta":"Tuesday"}"#), now);
    let [Action::Llm(StageInput::Reply(request))] = out.as_slice() else {
        panic!("expected the continuation, got {out:?}");
    };
    // system, user, assistant (text + calls), tool a, tool b — in that order.
    assert_eq!(request.len(), 5);
    assert_eq!(request[2].role, Role::Assistant);
    assert_eq!(request[2].content, "Let me check that.");
    assert_eq!(request[2].tool_calls, vec![tool_call("a"), tool_call("b")]);
    assert_eq!(request[3].tool_call_id.as_deref(), Some("a"));
    assert_eq!(request[4].role, Role::Tool);
    assert_eq!(request[4].content, r#"{"eta":"Tuesday"}"#);
    // The continuation is spoken and, once played, only it enters the history as new text.
    let _ = t.on(
        Event::Llm(StageOutput::TextDelta("It ships Tuesday.".into())),
        now,
    );
    let _ = t.on(Event::Llm(StageOutput::Done), now);
    let _ = t.on(Event::Tts(audio(500)), now);
    let _ = t.on(Event::Tts(StageOutput::UtteranceDone), now);
    let _ = t.on(Event::Tts(audio(500)), now);
    let _ = t.on(Event::Tts(StageOutput::UtteranceDone), now);
    let _ = t.on(Event::PlaybackIdle, now);
    assert!(t.is_quiet());
    let last = t.history().last().unwrap();
    assert_eq!(*last, Message::text(Role::Assistant, "It ships Tuesday."));
}

#[test]
fn an_error_result_reaches_the_model_as_a_tool_message() {
    let mut t = turns();
    let now = ask(&mut t, "Where is my order?", Instant::now());
    let _ = t.on(Event::Llm(StageOutput::ToolCall(tool_call("a"))), now);
    let _ = t.on(Event::Llm(StageOutput::Done), now);
    let out = t.on(
        Event::ToolResult {
            result: ToolResult {
                id: "a".into(),
                outcome: ToolOutcome::Error("the tool timed out after 5.0 s".into()),
            },
            continue_reply: true,
        },
        now,
    );
    let [Action::Llm(StageInput::Reply(request))] = out.as_slice() else {
        panic!("expected the continuation, got {out:?}");
    };
    assert_eq!(
        request.last().unwrap().content,
        r#"{"error":"the tool timed out after 5.0 s"}"#
    );
}

#[test]
fn a_slow_tool_gets_the_filler_once_and_it_never_enters_the_history() {
    let mut t = turns();
    let now = ask(&mut t, "Where is my order?", Instant::now());
    let _ = t.on(Event::Llm(StageOutput::ToolCall(tool_call("a"))), now);
    let _ = t.on(Event::Llm(StageOutput::Done), now);
    assert_eq!(
        t.on(Event::ToolsSlow, now),
        vec![
            Action::Tts(StageInput::Text("One moment, please.".into())),
            Action::Tts(StageInput::Flush)
        ]
    );
    let _ = t.on(Event::Tts(audio(900)), now);
    let _ = t.on(Event::Tts(StageOutput::UtteranceDone), now);
    assert!(t.on(Event::ToolsSlow, now).is_empty(), "said once");
    let _ = t.on(Event::PlaybackIdle, now);
    let out = t.on(result("a", "{}"), now);
    let [Action::Llm(StageInput::Reply(request))] = out.as_slice() else {
        panic!("expected the continuation, got {out:?}");
    };
    assert!(request.iter().all(|m| !m.content.contains("One moment")));
}

#[test]
fn a_barge_in_during_a_tool_call_keeps_its_result_for_the_next_turn() {
    let mut t = turns();
    let mut now = ask(&mut t, "Where is my order?", Instant::now());
    let _ = t.on(Event::Llm(StageOutput::ToolCall(tool_call("a"))), now);
    let _ = t.on(Event::Llm(StageOutput::Done), now);
    // The caller speaks while the tool runs: barge-in.
    let out = frame(&mut t, true, now);
    assert!(out.contains(&Action::ClearPlayback));
    let _ = t.on(Event::Interrupted { heard_ms: 0 }, now);
    now += Duration::from_millis(20);
    // The result arrives: into the history, no continuation (the caller has the floor).
    assert!(t.on(result("a", r#"{"status":"shipped"}"#), now).is_empty());
    let h = t.history();
    assert_eq!(h[h.len() - 2].tool_calls, vec![tool_call("a")]);
    assert_eq!(h[h.len() - 1].tool_call_id.as_deref(), Some("a"));
}

#[test]
fn end_call_stops_the_reply_from_continuing() {
    let mut t = turns();
    let now = ask(&mut t, "Bye", Instant::now());
    let _ = t.on(Event::Llm(StageOutput::TextDelta("Goodbye!".into())), now);
    let _ = t.on(Event::Llm(StageOutput::ToolCall(tool_call("end"))), now);
    let _ = t.on(
        Event::ToolResult {
            result: ToolResult {
                id: "end".into(),
                outcome: ToolOutcome::Output("{}".into()),
            },
            continue_reply: false,
        },
        now,
    );
    let out = t.on(Event::Llm(StageOutput::Done), now);
    assert!(!out.iter().any(|a| matches!(a, Action::Llm(_))), "{out:?}");
    let _ = t.on(Event::Tts(audio(500)), now);
    let _ = t.on(Event::Tts(StageOutput::UtteranceDone), now);
    assert!(!t.is_quiet(), "the goodbye is still playing");
    let _ = t.on(Event::PlaybackIdle, now);
    assert!(t.is_quiet());
}

fn key(t: &mut Turns, digit: &str, now: Instant) -> Vec<Action> {
    t.on(Event::Dtmf(digit.into()), now)
}

fn asked(out: &[Action]) -> Option<&str> {
    out.iter().find_map(|a| match a {
        Action::Llm(StageInput::Reply(h)) => h.last().map(|m| m.content.as_str()),
        _ => None,
    })
}

#[test]
fn keys_become_a_caller_turn_at_the_terminator_or_the_timeout() {
    let mut t = turns();
    let now = Instant::now();
    assert!(key(&mut t, "1", now).is_empty());
    assert!(key(&mut t, "0", now).is_empty());
    assert_eq!(t.keypad_deadline(), Some(now + Duration::from_millis(2000)));
    let out = key(&mut t, "#", now);
    assert_eq!(asked(&out), Some("DTMF: 10"));
    assert_eq!(t.keypad_deadline(), None);
    // Answered; then one key and a pause.
    let _ = t.on(Event::Llm(StageOutput::Done), now);
    let _ = t.on(Event::PlaybackIdle, now);
    assert!(t.is_quiet());
    let _ = key(&mut t, "3", now);
    let later = now + Duration::from_millis(2000);
    assert_eq!(t.keypad_deadline(), Some(later));
    let out = t.on(Event::KeypadTimeout, later);
    assert_eq!(asked(&out), Some("DTMF: 3"));
    // A lone terminator is nothing.
    let _ = t.on(Event::Llm(StageOutput::Done), later);
    assert!(key(&mut t, "#", later).is_empty());
}

#[test]
fn a_key_press_interrupts_the_agent() {
    let mut t = Turns::new(TurnConfig {
        instructions: String::new(),
        endpointing: DEFAULT_ENDPOINTING,
        greeting: Some("Press one for our opening hours.".into()),
        filler: None,
        keypad_timeout: Duration::from_millis(2000),
        resume_false_interruptions: true,
        min_interruption: Duration::ZERO,
    });
    let now = Instant::now();
    let _ = t.on(Event::Started, now);
    let _ = t.on(Event::Tts(audio(2000)), now);
    let out = key(&mut t, "1", now);
    assert_eq!(
        out,
        vec![
            Action::ClearPlayback,
            Action::Llm(StageInput::Cancel),
            Action::Tts(StageInput::Cancel)
        ]
    );
    let _ = t.on(Event::Interrupted { heard_ms: 900 }, now);
    let out = t.on(Event::KeypadTimeout, now + Duration::from_millis(2000));
    assert_eq!(asked(&out), Some("DTMF: 1"));
}

#[path = "pipeline_caller_tests.rs"]
mod caller;
