//! The Whisper recognizer end to end, driven by the plugin test kit as the pipeline host drives
//! it: phone audio (8 kHz μ-law fixtures, decoded and resampled to 16 kHz as the host does) in
//! 20 ms PCM16 frames, then `end-of-turn`.
//!
//! Needs the model: fetched with `scripts/fetch-whisper.sh` on first use when missing.

mod support;

use std::path::Path;

use switchboard_plugin_api::audio::pcm16_to_bytes;
use switchboard_plugin_api::prelude::*;
use switchboard_plugin_api::stage::AsStt;
use switchboard_plugin_api::testing::StageHarness;
use whisper::Whisper;

type Call = StageHarness<AsStt<Whisper>>;

/// 20 ms at 16 kHz.
const FRAME_SAMPLES: usize = 320;

fn open() -> Call {
    Call::open(&support::settings()).expect("opens with the fetched model")
}

/// Feeds `samples` (PCM16, 16 kHz) as 20 ms frames; returns what the frames caused.
fn speak(call: &mut Call, samples: &[i16]) -> Vec<SttOutput> {
    let mut out = Vec::new();
    for (i, chunk) in samples.chunks(FRAME_SAMPLES).enumerate() {
        let frame = AudioFrame {
            format: AudioFormat {
                encoding: AudioEncoding::Pcm16,
                sample_rate: 16_000,
            },
            data: pcm16_to_bytes(chunk),
            timestamp_ms: i as u64 * 20,
        };
        out.extend(call.send(SttInput::Audio(frame)).unwrap());
    }
    out
}

/// Ends the turn; returns the final transcript, checking the outputs' shape.
fn end_turn(call: &mut Call) -> String {
    let out = call.send(SttInput::EndOfTurn).unwrap();
    match out.as_slice() {
        [
            SttOutput::Transcript(SttTranscript {
                text,
                is_final: true,
            }),
            SttOutput::EndOfTurn,
        ] => text.clone(),
        other => panic!("expected a final transcript then end-of-turn, got {other:?}"),
    }
}

/// The fixture `name` as the plugin receives it: μ-law decoded, 8 → 16 kHz.
fn phone_audio(name: &str) -> Vec<i16> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.wav"));
    support::upsample_2x(&support::read_mulaw_wav(&path))
}

fn assert_heard(name: &str, said: &str, max_wer: f64) {
    let mut call = open();
    assert!(speak(&mut call, &phone_audio(name)).is_empty());
    let heard = end_turn(&mut call);
    let wer = support::word_error_rate(said, &heard);
    eprintln!("{name}: heard {heard:?}, WER {wer:.2}");
    assert_eq!(heard, heard.trim(), "transcripts are trimmed");
    assert!(
        wer <= max_wer,
        "{name}: said {said:?}, heard {heard:?} (WER {wer:.2} > {max_wer})"
    );
}

#[test]
fn a_short_question_is_heard() {
    assert_heard(
        "opening_hours",
        "What time do you open tomorrow morning?",
        0.2,
    );
}

#[test]
fn a_short_request_is_heard() {
    assert_heard("invoice", "Please send me a copy of the invoice.", 0.15);
}

#[test]
fn a_long_turn_is_heard() {
    assert_heard(
        "late_order",
        "My name is John Smith and I am calling about my order. It was supposed to arrive last \
         Tuesday, but nothing has come yet. Could you please check the delivery status for me?",
        0.1,
    );
}

#[test]
fn silence_and_an_empty_turn_give_empty_text() {
    let mut call = open();
    assert_eq!(end_turn(&mut call), "", "no audio at all");
    speak(&mut call, &[0; 16_000]);
    assert_eq!(end_turn(&mut call), "", "a second of digital silence");
    // Faint noise just above the silence gate (uniform ±80 of 32768: RMS ≈ −57 dBFS): the model
    // runs, and must still hear nothing.
    let mut seed = 1u32;
    let hiss: Vec<i16> = (0..16_000)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((seed >> 16) % 161) as i16 - 80
        })
        .collect();
    speak(&mut call, &hiss);
    assert_eq!(end_turn(&mut call), "", "faint noise");
}

#[test]
fn turns_are_independent_and_hangup_drops_the_buffer() {
    let mut call = open();
    speak(&mut call, &phone_audio("invoice"));
    let first = end_turn(&mut call);
    assert!(first.to_lowercase().contains("invoice"), "{first}");
    // The next turn starts empty.
    assert_eq!(end_turn(&mut call), "");
    speak(&mut call, &phone_audio("invoice"));
    assert!(call.send(SttInput::Hangup).unwrap().is_empty());
    assert_eq!(end_turn(&mut call), "", "hangup dropped the audio");
}

#[test]
fn audio_in_another_format_is_an_error_not_a_panic() {
    let mut call = open();
    let frame = AudioFrame {
        format: AudioFormat {
            encoding: AudioEncoding::Mulaw,
            sample_rate: 8000,
        },
        data: vec![0xFF; 160],
        timestamp_ms: 0,
    };
    assert!(matches!(
        call.send(SttInput::Audio(frame)),
        Err(PluginError::Unsupported(_))
    ));
    // An odd trailing byte is ignored.
    let frame = AudioFrame {
        format: Whisper::describe().input_format,
        data: vec![0; 641],
        timestamp_ms: 0,
    };
    assert!(call.send(SttInput::Audio(frame)).unwrap().is_empty());
}

#[test]
fn describe_asks_for_16khz_pcm() {
    let info = Whisper::describe();
    assert_eq!(
        info.input_format,
        AudioFormat {
            encoding: AudioEncoding::Pcm16,
            sample_rate: 16_000
        }
    );
    assert_eq!(info.name, "whisper");
}

#[test]
fn a_missing_model_is_refused_at_open_naming_the_path_and_the_script() {
    let dir = std::env::temp_dir().join("switchboard-whisper-no-such-model");
    let settings = serde_json::json!({ "model_dir": dir }).to_string();
    let Err(PluginError::InvalidConfig(message)) = Call::open(&settings) else {
        panic!("opened without a model");
    };
    assert!(message.contains(&dir.display().to_string()), "{message}");
    assert!(message.contains("scripts/fetch-whisper.sh"), "{message}");
}

#[test]
fn a_malformed_model_is_refused_at_open() {
    let dir = std::env::temp_dir().join(format!("switchboard-whisper-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let real = support::model_dir();
    for file in ["tokenizer.json", "config.json"] {
        std::fs::copy(real.join(file), dir.join(file)).unwrap();
    }
    std::fs::write(dir.join("model.bin"), b"not a model").unwrap();
    let settings = serde_json::json!({ "model_dir": dir }).to_string();
    let result = Call::open(&settings);
    std::fs::remove_dir_all(&dir).unwrap();
    let Err(PluginError::InvalidConfig(message)) = result else {
        panic!("opened a malformed model");
    };
    assert!(message.contains("model.bin"), "{message}");
    assert!(message.contains("scripts/fetch-whisper.sh"), "{message}");
}

#[test]
fn unknown_settings_are_refused() {
    assert!(matches!(
        Call::open(r#"{"modle_dir": "x"}"#),
        Err(PluginError::InvalidConfig(_))
    ));
}

#[test]
fn every_open_shares_one_loaded_model() {
    let dir = support::model_dir();
    let first = whisper::model::cached(&dir).unwrap();
    // The same directory by another spelling is the same model.
    let second = whisper::model::cached(&dir.join("../whisper-tiny.en")).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &second));
}

#[test]
fn a_pause_is_transcribed_before_end_of_turn_and_answers_it() {
    let mut call = open();
    let mut out = speak(&mut call, &phone_audio("invoice"));
    // The caller pauses: 20 ms frames of silence, at real time, until the interim transcript.
    let started = std::time::Instant::now();
    let interim = loop {
        out.extend(speak(&mut call, &[0; FRAME_SAMPLES]));
        if let Some(SttOutput::Transcript(t)) = out.first() {
            break t.clone();
        }
        assert!(
            started.elapsed().as_secs() < 20,
            "no interim transcript during the pause"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!interim.is_final);
    assert!(
        interim.text.to_lowercase().contains("invoice"),
        "{interim:?}"
    );
    // End of turn answers at once with the same text.
    let answered = std::time::Instant::now();
    assert_eq!(end_turn(&mut call), interim.text);
    assert!(answered.elapsed().as_millis() < 50, "transcribed again");
}

#[test]
fn sound_after_the_pause_is_transcribed_again() {
    let mut call = open();
    // A question, the pause after it (a speculative transcription starts), then more: the
    // speculative text is stale.
    speak(&mut call, &phone_audio("opening_hours"));
    for _ in 0..10 {
        speak(&mut call, &[0; FRAME_SAMPLES]);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    speak(&mut call, &phone_audio("invoice"));
    let heard = end_turn(&mut call).to_lowercase();
    assert!(heard.contains("invoice"), "{heard}");
}

#[test]
fn without_speculation_nothing_comes_before_end_of_turn() {
    let settings = serde_json::json!({ "model_dir": support::model_dir(), "speculate": false, "window_ms": 30000 });
    let mut call = Call::open(&settings.to_string()).unwrap();
    speak(&mut call, &phone_audio("invoice"));
    for _ in 0..50 {
        assert!(speak(&mut call, &[0; FRAME_SAMPLES]).is_empty());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(end_turn(&mut call).to_lowercase().contains("invoice"));
}
