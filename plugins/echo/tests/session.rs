//! Echo's session logic, driven by the plugin test kit: no gateway, no sockets. The same code
//! runs inside the WASM component and the native library.

use switchboard_plugin_api::prelude::*;
use switchboard_plugin_api::testing::{Harness, load_recording, marks, played_samples, read_wav};

use echo::EchoSession;

const BECKETT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/speech/beckett.wav"
);

/// The speech fixture (16 kHz) at 8 kHz: pairs averaged, which is plenty for a test input.
fn speech_8k() -> Vec<i16> {
    let mut reader = hound::WavReader::open(BECKETT).unwrap();
    assert_eq!(reader.spec().sample_rate, 16_000);
    let wide: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    wide.chunks_exact(2)
        .map(|p| ((i32::from(p[0]) + i32::from(p[1])) / 2) as i16)
        .collect()
}

/// Writes `samples` as a mono 16-bit WAV in the temp dir and returns its path.
fn wav_file(name: &str, samples: &[i16], rate: u32) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("echo-{}-{name}.wav", std::process::id()));
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for s in samples {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
    path
}

/// The recording played back by echo in utterance mode: one `play` and one mark per utterance,
/// and together the replies carry the speech, sample for sample, minus leading pre-roll trims.
#[test]
fn utterances_are_played_back_after_a_pause() {
    let mut call = Harness::<EchoSession>::open(r#"{"mode": "utterance"}"#).unwrap();
    let spoken = speech_8k();
    let wav = wav_file("speech", &spoken, 8000);
    assert_eq!(read_wav(&wav, 8000).unwrap(), spoken);
    let mut outputs = call.speak_wav(&wav).unwrap();
    outputs.extend(call.silence(1000).unwrap());
    let names = marks(&outputs);
    assert!(names.len() >= 2, "marks {names:?}");
    assert!(
        names
            .iter()
            .enumerate()
            .all(|(i, n)| *n == format!("utterance-{}", i + 1))
    );
    let played = played_samples(&outputs);
    assert!(
        played.len() > spoken.len() * 4 / 10,
        "{} of {}",
        played.len(),
        spoken.len()
    );
    // Every reply is a contiguous run of what was said.
    for output in &outputs {
        if let SessionOutput::Play(frame) = output {
            let reply = played_samples(std::slice::from_ref(output));
            assert_eq!(frame.format.sample_rate, 8000);
            let found = spoken.windows(reply.len()).any(|w| w == reply.as_slice());
            assert!(
                found,
                "a reply of {} samples is not in the recording",
                reply.len()
            );
        }
    }
}

/// Immediate mode plays every frame straight back.
#[test]
fn immediate_mode_is_a_loopback() {
    let mut call = Harness::<EchoSession>::open(r#"{"mode": "immediate"}"#).unwrap();
    let tone: Vec<i16> = (0..800).map(|i| ((i % 16) * 1000 - 8000) as i16).collect();
    let outputs = call.speak(&tone).unwrap();
    assert_eq!(outputs.len(), 5, "one play per 20 ms frame");
    assert_eq!(played_samples(&outputs), tone);
}

/// A recorded list of inputs: a key other than `#` stops playback, `#` hangs up.
#[test]
fn recorded_keys_clear_and_hang_up() {
    let inputs = load_recording(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keys.jsonl"
    ))
    .unwrap();
    assert_eq!(inputs.len(), 5);
    let mut call = Harness::<EchoSession>::open("{}").unwrap();
    let outputs = call.replay(inputs).unwrap();
    assert_eq!(
        outputs,
        vec![SessionOutput::ClearPlayback, SessionOutput::HangUp]
    );
}

/// The greeting tone comes first, with its mark.
#[test]
fn greeting_tone_comes_first() {
    let mut call = Harness::<EchoSession>::open(r#"{"greeting_tone": true}"#).unwrap();
    let outputs = call.silence(20).unwrap();
    assert_eq!(marks(&outputs), ["greeting"]);
    assert_eq!(played_samples(&outputs).len(), 3200, "400 ms at 8 kHz");
}

/// Unknown settings are refused at open, naming the key.
#[test]
fn bad_settings_are_refused() {
    let Err(PluginError::InvalidConfig(message)) =
        Harness::<EchoSession>::open(r#"{"mode": "immediate", "volume": 3}"#)
    else {
        panic!("opened with an unknown key");
    };
    assert!(message.contains("volume"), "{message}");
}

/// A WAV at another rate than the session's is refused with a message that says what to do.
#[test]
fn wav_at_the_wrong_rate_is_refused() {
    let mut call = Harness::<EchoSession>::open("{}").unwrap();
    let err = call.speak_wav(BECKETT).unwrap_err().to_string();
    assert!(err.contains("16000 Hz") && err.contains("8000 Hz"), "{err}");
}
