//! Tests of the caller's side of the turn-taking: interruptions (false ones, backchannels,
//! words), endpointing on interim transcripts, the first clause, and noise segments.

use super::*;

#[test]
fn a_false_interruption_resumes_the_rest_of_the_reply() {
    let mut t = turns();
    let mut now = Instant::now();
    let _ = caller_turn(&mut t, "hours?", &mut now);
    let _ = t.on(
        Event::Llm(StageOutput::TextDelta(
            "We are open from nine to five, Monday to Friday. Anything else?".into(),
        )),
        now,
    );
    let _ = t.on(Event::Llm(StageOutput::Done), now);
    for _ in 0..3 {
        let _ = t.on(Event::Tts(audio(1000)), now);
        let _ = t.on(Event::Tts(StageOutput::UtteranceDone), now);
    }
    // A cough 1.5 s in: barge-in, then the caller's turn closes with no words.
    let out = frame(&mut t, true, now);
    assert!(out.contains(&Action::ClearPlayback));
    let _ = t.on(Event::Interrupted { heard_ms: 1500 }, now);
    let out = caller_turn(&mut t, "", &mut now);
    let said: Vec<&str> = out
        .iter()
        .filter_map(|a| match a {
            Action::Tts(StageInput::Text(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    // From the start of the clause that was cut.
    assert_eq!(said, ["Monday to Friday. Anything else?"], "{out:?}");
    // Played: the rest enters the history after what was heard.
    let _ = t.on(Event::Tts(audio(800)), now);
    let _ = t.on(Event::Tts(StageOutput::UtteranceDone), now);
    let _ = t.on(Event::PlaybackIdle, now);
    let h: Vec<&str> = t.history().iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        h,
        [
            "hours?",
            "We are open from nine to five, Monday",
            "Monday to Friday. Anything else?"
        ]
    );
}

#[test]
fn a_real_interruption_does_not_resume() {
    let mut t = turns();
    let mut now = Instant::now();
    let _ = caller_turn(&mut t, "hours?", &mut now);
    let _ = t.on(
        Event::Llm(StageOutput::TextDelta(
            "We are open from nine to five.".into(),
        )),
        now,
    );
    let _ = t.on(Event::Llm(StageOutput::Done), now);
    let _ = t.on(Event::Tts(audio(2000)), now);
    let _ = frame(&mut t, true, now);
    let _ = t.on(Event::Interrupted { heard_ms: 500 }, now);
    let out = caller_turn(&mut t, "What about Sunday?", &mut now);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Llm(StageInput::Reply(_)))),
        "{out:?}"
    );
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Tts(StageInput::Text(_))))
    );
}

#[test]
fn a_minimum_interruption_lets_short_sounds_pass() {
    let mut t = Turns::new(TurnConfig {
        instructions: String::new(),
        endpointing: DEFAULT_ENDPOINTING,
        greeting: Some("Thank you for calling the front desk.".into()),
        filler: None,
        keypad_timeout: Duration::from_millis(2000),
        resume_false_interruptions: true,
        min_interruption: Duration::from_millis(200),
    });
    let mut now = Instant::now();
    let _ = t.on(Event::Started, now);
    let _ = t.on(Event::Tts(audio(3000)), now);
    // 100 ms of sound: no interruption.
    for _ in 0..5 {
        assert!(!frame(&mut t, true, now).contains(&Action::ClearPlayback));
        now += Duration::from_millis(20);
    }
    let _ = frame(&mut t, false, now);
    now += Duration::from_millis(20);
    // Speech that goes on: interrupts at 200 ms, once.
    let mut clears = 0;
    for n in 1..=20 {
        let out = frame(&mut t, true, now);
        if out.contains(&Action::ClearPlayback) {
            clears += 1;
            assert_eq!(n, 5, "the 5th frame makes 200 ms with the 5 before the gap");
            let _ = t.on(Event::Interrupted { heard_ms: 300 }, now);
        }
        now += Duration::from_millis(20);
    }
    assert_eq!(clears, 1);
}

/// The caller speaks for 400 ms, then is silent for `silence_ms`.
fn speak_then_pause(t: &mut Turns, silence_ms: u64, now: &mut Instant) -> Vec<Action> {
    for _ in 0..20 {
        let _ = frame(t, true, *now);
        *now += Duration::from_millis(20);
    }
    let mut out = Vec::new();
    for _ in 0..silence_ms / 20 {
        out.extend(frame(t, false, *now));
        *now += Duration::from_millis(20);
    }
    out
}

fn interim(t: &mut Turns, text: &str, now: Instant) -> Vec<Action> {
    t.on(
        Event::Stt(StageOutput::Transcript {
            text: text.into(),
            is_final: false,
        }),
        now,
    )
}

#[test]
fn a_whole_sentence_heard_in_a_pause_ends_the_turn_before_the_endpointing_silence() {
    let mut t = turns();
    let mut now = Instant::now();
    assert!(!speak_then_pause(&mut t, 300, &mut now).contains(&Action::Stt(StageInput::EndOfTurn)));
    let out = interim(&mut t, "What are your opening hours?", now);
    assert_eq!(out, vec![Action::Stt(StageInput::EndOfTurn)]);
    // The final transcript closes the turn as after the silence.
    let out = t.on(
        Event::Stt(StageOutput::Transcript {
            text: "What are your opening hours?".into(),
            is_final: true,
        }),
        now,
    );
    assert!(
        matches!(out.as_slice(), [Action::Llm(StageInput::Reply(_))]),
        "{out:?}"
    );
    // The silence that follows does not end another turn.
    for _ in 0..40 {
        assert!(!frame(&mut t, false, now).contains(&Action::Stt(StageInput::EndOfTurn)));
        now += Duration::from_millis(20);
    }
    let _ = t.on(Event::Llm(StageOutput::Done), now);
    t.on(Event::PlaybackIdle, now);
    assert_eq!(
        t.latencies[0].endpointing,
        Some(Duration::from_millis(300)),
        "{:?}",
        t.latencies
    );
}

/// The recognizer's pause detector may finish before the host's detector has counted the
/// early-endpointing silence: the whole sentence is remembered, and the turn ends once the
/// silence reaches it — unless the caller speaks again first.
#[test]
fn a_whole_sentence_heard_before_the_silence_ends_the_turn_when_the_silence_comes() {
    let mut t = turns();
    let mut now = Instant::now();
    let _ = speak_then_pause(&mut t, 100, &mut now);
    assert!(interim(&mut t, "What are your opening hours?", now).is_empty());
    let mut ended_after = None;
    for ms in (120..=600).step_by(20) {
        if frame(&mut t, false, now).contains(&Action::Stt(StageInput::EndOfTurn)) {
            ended_after = Some(ms);
            break;
        }
        now += Duration::from_millis(20);
    }
    assert_eq!(
        ended_after,
        Some(300),
        "ms of silence at the end of the turn"
    );

    // Speech after the interim: the caller went on; the endpointing silence decides.
    let mut t = turns();
    let _ = speak_then_pause(&mut t, 100, &mut now);
    let _ = interim(&mut t, "What are your opening hours?", now);
    let _ = frame(&mut t, true, now);
    let out = speak_then_pause(&mut t, 400, &mut now);
    assert!(
        !out.contains(&Action::Stt(StageInput::EndOfTurn)),
        "{out:?}"
    );
    let out = speak_then_pause(&mut t, 600, &mut now);
    assert!(out.contains(&Action::Stt(StageInput::EndOfTurn)));
}

#[test]
fn an_unfinished_sentence_or_a_short_gap_waits_for_the_endpointing_silence() {
    let mut t = turns();
    let mut now = Instant::now();
    let _ = speak_then_pause(&mut t, 300, &mut now);
    assert!(
        interim(&mut t, "What are your", now).is_empty(),
        "no end mark"
    );
    assert!(interim(&mut t, "Well...", now).is_empty(), "trailing off");
    let mut t = turns();
    let _ = speak_then_pause(&mut t, 200, &mut now);
    assert!(
        interim(&mut t, "What are your hours?", now).is_empty(),
        "gap too short"
    );
    // Speech again: no early end while the caller talks.
    let _ = frame(&mut t, true, now);
    assert!(interim(&mut t, "What are your hours?", now).is_empty());
    // The endpointing silence still ends the turn.
    let out = speak_then_pause(&mut t, 600, &mut now);
    assert!(out.contains(&Action::Stt(StageInput::EndOfTurn)));
}

#[test]
fn a_long_first_sentence_is_cut_before_a_connecting_word() {
    let mut t = turns();
    let mut now = Instant::now();
    let _ = caller_turn(&mut t, "hours?", &mut now);
    let out = t.on(
        Event::Llm(StageOutput::TextDelta(
            "We are open from eight in the morning until eight in the evening.".into(),
        )),
        now,
    );
    assert_eq!(
        out,
        vec![
            Action::Tts(StageInput::Text("We are open ".into())),
            Action::Tts(StageInput::Flush),
        ]
    );
    let out = t.on(Event::Llm(StageOutput::Done), now);
    assert_eq!(
        out,
        vec![
            Action::Tts(StageInput::Text(
                "from eight in the morning until eight in the evening.".into()
            )),
            Action::Tts(StageInput::Flush),
        ]
    );
    // Short replies and later sentences are not cut.
    assert_eq!(first_clause_end("Sorry, I did not get that."), None);
    assert_eq!(
        first_clause_end("I can't find an order for this number."),
        None
    );
    assert_eq!(
        first_clause_end("We are open from"),
        None,
        "more may stream in"
    );
}

#[test]
fn sentence_ends() {
    for text in ["Hours?", "Yes. ", "Stop!", "He said \"yes.\""] {
        assert!(ends_sentence(text), "{text}");
    }
    for text in ["", "What are your", "Well...", "So…", "one, two,"] {
        assert!(!ends_sentence(text), "{text}");
    }
}

/// A reply of three clauses, 1 s of audio each, playing.
fn replying(t: &mut Turns, now: &mut Instant) {
    let _ = caller_turn(t, "hours?", now);
    let _ = t.on(
        Event::Llm(StageOutput::TextDelta(
            "We are open from nine to five, Monday to Friday. Anything else?".into(),
        )),
        *now,
    );
    let _ = t.on(Event::Llm(StageOutput::Done), *now);
    for _ in 0..3 {
        let _ = t.on(Event::Tts(audio(1000)), *now);
        let _ = t.on(Event::Tts(StageOutput::UtteranceDone), *now);
    }
}

fn spoken(out: &[Action]) -> Vec<&str> {
    out.iter()
        .filter_map(|a| match a {
            Action::Tts(StageInput::Text(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// With a recognizer that has no interim transcripts (Whisper), a backchannel over the agent
/// cuts it on the detector's onset; its final transcript shows a backchannel: no caller turn,
/// and the agent resumes from the clause it was on.
#[test]
fn a_backchannel_is_no_turn_and_the_agent_resumes() {
    let mut t = turns();
    let mut now = Instant::now();
    replying(&mut t, &mut now);
    let out = frame(&mut t, true, now);
    assert!(out.contains(&Action::ClearPlayback));
    let _ = t.on(Event::Interrupted { heard_ms: 1500 }, now);
    let out = caller_turn(&mut t, "Mm-hmm.", &mut now);
    assert_eq!(
        spoken(&out),
        ["Monday to Friday. Anything else?"],
        "{out:?}"
    );
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Llm(StageInput::Reply(_))))
    );
    assert!(
        !t.history().iter().any(|m| m.content.contains("Mm")),
        "{:?}",
        t.history()
    );

    // Backchannels that interrupt: the same words are a turn.
    let mut t = turns().with_interruption_rules(0, Backchannel::Interrupt);
    let mut now = Instant::now();
    replying(&mut t, &mut now);
    let _ = frame(&mut t, true, now);
    let _ = t.on(Event::Interrupted { heard_ms: 1500 }, now);
    let out = caller_turn(&mut t, "Mm-hmm.", &mut now);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Llm(StageInput::Reply(_)))),
        "{out:?}"
    );
}

/// With a recognizer that sends interim transcripts and `min_interruption_words = 2`, speech
/// over the agent does not cut it until an interim holds two words that are not backchannels;
/// a backchannel never cuts it and is no turn.
#[test]
fn words_decide_an_interruption_when_the_recognizer_tells_them_early() {
    let mut t = turns().with_interruption_rules(2, Backchannel::Ignore);
    let mut now = Instant::now();
    replying(&mut t, &mut now);
    let interim = |t: &mut Turns, text: &str, now| {
        t.on(
            Event::Stt(StageOutput::Transcript {
                text: text.into(),
                is_final: false,
            }),
            now,
        )
    };
    // The recognizer is seen to send interims.
    let _ = interim(&mut t, "", now);
    // "Okay, yeah." over the agent: held, never cut, no turn.
    for _ in 0..15 {
        assert!(!frame(&mut t, true, now).contains(&Action::ClearPlayback));
        now += Duration::from_millis(20);
    }
    assert!(!interim(&mut t, "Okay, yeah.", now).contains(&Action::ClearPlayback));
    let out = caller_turn(&mut t, "Okay, yeah.", &mut now);
    assert!(!out.contains(&Action::ClearPlayback), "{out:?}");
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Llm(StageInput::Reply(_)))),
        "{out:?}"
    );
    // "Wait, what about Sunday?": held until the interim has two words, then cut at once.
    for _ in 0..10 {
        assert!(!frame(&mut t, true, now).contains(&Action::ClearPlayback));
        now += Duration::from_millis(20);
    }
    assert!(!interim(&mut t, "Wait,", now).contains(&Action::ClearPlayback));
    let out = interim(&mut t, "Wait, what", now);
    assert!(out.contains(&Action::ClearPlayback), "{out:?}");
    let _ = t.on(Event::Interrupted { heard_ms: 2500 }, now);
    let out = caller_turn(&mut t, "Wait, what about Sunday?", &mut now);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Llm(StageInput::Reply(_)))),
        "{out:?}"
    );
    assert!(
        spoken(&out).is_empty(),
        "no resume after a real interruption"
    );
}

/// Words known only at the turn's end (no interims), over an agent a minimum interruption
/// kept talking: the agent is cut then, and the turn closes once the clear is answered —
/// after the cut reply in the history.
#[test]
fn a_turn_over_a_held_agent_cuts_it_then_closes() {
    let mut t = Turns::new(TurnConfig {
        min_interruption: Duration::from_millis(2000),
        ..test_config()
    });
    let mut now = Instant::now();
    replying(&mut t, &mut now);
    now += Duration::from_millis(1000);
    // "No." — too short to cut the agent by the detector.
    let out = caller_turn(&mut t, "No.", &mut now);
    assert!(out.contains(&Action::ClearPlayback), "{out:?}");
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Llm(StageInput::Reply(_)))),
        "the turn waits for the clear: {out:?}"
    );
    let out = t.on(Event::Interrupted { heard_ms: 1500 }, now);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Llm(StageInput::Reply(_)))),
        "{out:?}"
    );
    let h: Vec<&str> = t.history().iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        h,
        ["hours?", "We are open from nine to five, Monday", "No."]
    );
}

/// `n` frames of `speech` (or silence) from `now`; the actions of the last.
fn frames(t: &mut Turns, speech: bool, n: usize, now: &mut Instant) -> Vec<Action> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend(frame(t, speech, *now));
        *now += Duration::from_millis(20);
    }
    out
}

#[test]
fn a_noise_segment_that_began_the_speech_is_no_turn() {
    let mut t = turns();
    let mut now = Instant::now();
    // Steady noise on a quiet line reads as speech for 300 ms, then 200 ms of silence until
    // the VAD's verdict: noise. The endpointing silence then passes with nothing to end.
    let _ = frames(&mut t, true, 15, &mut now);
    let _ = frames(&mut t, false, 10, &mut now);
    let mut out = Vec::new();
    t.segment_ended(true, now, &mut out);
    assert!(out.is_empty(), "{out:?}");
    let out = frames(&mut t, false, 40, &mut now);
    assert!(
        !out.contains(&Action::Stt(StageInput::EndOfTurn)),
        "noise became a turn"
    );
    // The caller's question after it is a turn as usual, its speech timed from its own onset.
    let out = caller_turn(&mut t, "What are your hours?", &mut now);
    assert!(asked(&out).is_some(), "{out:?}");
    assert_eq!(
        t.latencies.len(),
        0,
        "latency recorded once the reply plays"
    );
}

#[test]
fn a_noise_segment_after_speech_counts_as_silence() {
    let mut t = turns();
    let mut now = Instant::now();
    // 400 ms of speech (its verdict: speech), 200 ms of silence, then 500 ms of noise the
    // detector took for speech, and 200 ms later its verdict: noise. 900 ms of silence by then:
    // the turn ends at once, dated at the speech's last frame.
    let _ = frames(&mut t, true, 20, &mut now);
    let _ = frames(&mut t, false, 10, &mut now);
    let mut out = Vec::new();
    t.segment_ended(false, now, &mut out);
    assert!(out.is_empty());
    let _ = frames(&mut t, true, 25, &mut now);
    let out = frames(&mut t, false, 10, &mut now);
    assert!(!out.contains(&Action::Stt(StageInput::EndOfTurn)));
    // The verdict comes with the last frame (counted already).
    let mut out = Vec::new();
    t.segment_ended(true, now - Duration::from_millis(20), &mut out);
    assert_eq!(out, vec![Action::Stt(StageInput::EndOfTurn)]);
    let _ = t.on(
        Event::Stt(StageOutput::Transcript {
            text: "What are your hours?".into(),
            is_final: true,
        }),
        now,
    );
    assert_eq!(
        t.latency.endpointing,
        Some(Duration::from_millis(900)),
        "the noise counted as silence"
    );
    assert_eq!(t.latency.speech, Some(Duration::from_millis(400)));
}

#[test]
fn a_short_noise_run_after_speech_does_not_undo_the_speech() {
    let mut t = turns();
    let mut now = Instant::now();
    let _ = frames(&mut t, true, 20, &mut now);
    let _ = frames(&mut t, false, 10, &mut now);
    let mut out = Vec::new();
    t.segment_ended(false, now, &mut out);
    // A later noise run does not undo the speech before it.
    let _ = frames(&mut t, true, 5, &mut now);
    let _ = frames(&mut t, false, 10, &mut now);
    t.segment_ended(true, now, &mut out);
    assert!(out.is_empty());
    let out = frames(&mut t, false, 40, &mut now);
    assert!(out.contains(&Action::Stt(StageInput::EndOfTurn)));
}
