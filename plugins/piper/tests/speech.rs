//! The Piper synthesizer, driven by the plugin test kit as the pipeline host would drive it.
//!
//! Needs the voice and ONNX Runtime (fetched once by `scripts/fetch-piper.sh` when missing) and
//! the `espeak-ng` program (Debian package `espeak-ng`).

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use piper::Piper;
use switchboard_plugin_api::prelude::*;
use switchboard_plugin_api::stage::AsTts;
use switchboard_plugin_api::testing::StageHarness;

type Call = StageHarness<AsTts<Piper>>;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn models() -> PathBuf {
    std::env::var_os("SWITCHBOARD_MODELS")
        .filter(|v| !v.is_empty())
        .map_or_else(|| repo().join("models"), PathBuf::from)
}

/// Settings naming the fetched files by absolute path (tests run in `plugins/piper`), plus `extra`
/// JSON members.
fn settings(extra: &str) -> String {
    static FETCH: Once = Once::new();
    FETCH.call_once(|| {
        let voice = models().join(piper::DEFAULT_VOICE);
        let runtime = models().join(piper::DEFAULT_ONNXRUNTIME);
        if voice.is_file() && runtime.is_file() {
            return;
        }
        let status = std::process::Command::new("bash")
            .arg(repo().join(piper::FETCH_SCRIPT))
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => panic!(
                "the Piper voice is missing and {} failed ({other:?}); run it by hand to see why",
                piper::FETCH_SCRIPT
            ),
        }
    });
    let path = |p: &str| serde_json::to_string(&models().join(p)).unwrap();
    let mut json = format!(
        r#"{{"voice": {}, "onnxruntime": {}"#,
        path(piper::DEFAULT_VOICE),
        path(piper::DEFAULT_ONNXRUNTIME)
    );
    if !extra.is_empty() {
        json.push_str(", ");
        json.push_str(extra);
    }
    json.push('}');
    json
}

/// The PCM16 samples of each audio frame (checking the format), and whether the outputs end
/// with `UtteranceDone`.
fn frames(outputs: &[TtsOutput]) -> (Vec<Vec<i16>>, bool) {
    let mut frames = Vec::new();
    for output in outputs {
        if let TtsOutput::Audio(frame) = output {
            assert_eq!(frame.format.encoding, AudioEncoding::Pcm16);
            assert_eq!(frame.format.sample_rate, 22050);
            assert_eq!(frame.data.len() % 2, 0);
            frames.push(
                frame
                    .data
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            );
        }
    }
    let done = outputs.last() == Some(&TtsOutput::UtteranceDone);
    let dones = outputs
        .iter()
        .filter(|o| **o == TtsOutput::UtteranceDone)
        .count();
    assert!(dones <= 1, "{dones} UtteranceDone");
    (frames, done)
}

fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

fn say(call: &mut Call, text: &str) -> Vec<TtsOutput> {
    assert_eq!(call.send(TtsInput::Text(text.into())).unwrap(), []);
    call.send(TtsInput::Flush).unwrap()
}

#[test]
fn a_sentence_becomes_speech_of_plausible_length() {
    let mut call = Call::open(&settings("")).unwrap();
    let (frames, done) = frames(&say(&mut call, "Thanks for calling, how can I help?"));
    assert!(done);
    assert_eq!(frames.len(), 1, "one frame per sentence");
    let seconds = frames[0].len() as f64 / 22050.0;
    assert!((0.6..4.0).contains(&seconds), "{seconds} s");
    let level = rms(&frames[0]);
    assert!(level > 1000.0, "RMS {level}: too quiet to be speech");
    let peak = frames[0].iter().map(|s| s.unsigned_abs()).max().unwrap();
    assert!(peak < 32767, "clipped");
}

#[test]
fn each_sentence_is_its_own_frame_and_text_accumulates_until_flush() {
    let mut call = Call::open(&settings(r#""length_scale": 1.2"#)).unwrap();
    assert_eq!(
        call.send(TtsInput::Text("Hello there. ".into())).unwrap(),
        []
    );
    let outputs = say(&mut call, "Our office opens at 9:30 on Monday.");
    let (frames, done) = frames(&outputs);
    assert!(done);
    assert_eq!(frames.len(), 2, "{outputs:?}");
    assert!(frames.iter().all(|f| rms(f) > 500.0));
}

#[test]
fn cancel_drops_buffered_text_and_empty_text_is_just_done() {
    let mut call = Call::open(&settings(r#""noise_scale": 0, "noise_w": 0"#)).unwrap();
    assert_eq!(
        call.send(TtsInput::Text("Hello there.".into())).unwrap(),
        []
    );
    assert_eq!(call.send(TtsInput::Cancel).unwrap(), []);
    assert_eq!(
        call.send(TtsInput::Flush).unwrap(),
        [TtsOutput::UtteranceDone]
    );
    assert_eq!(say(&mut call, "  \n\t "), [TtsOutput::UtteranceDone]);
    assert_eq!(say(&mut call, "... !"), [TtsOutput::UtteranceDone]);
    assert_eq!(call.send(TtsInput::Text("Bye.".into())).unwrap(), []);
    assert_eq!(call.send(TtsInput::Hangup).unwrap(), []);
}

#[test]
fn a_missing_voice_is_invalid_config_naming_path_and_script() {
    let settings = r#"{"voice": "/nonexistent/piper/voice.onnx"}"#;
    match Call::open(settings) {
        Err(PluginError::InvalidConfig(message)) => {
            assert!(
                message.contains("/nonexistent/piper/voice.onnx"),
                "{message}"
            );
            assert!(message.contains(piper::FETCH_SCRIPT), "{message}");
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("opened without a voice"),
    }
}

#[test]
fn a_missing_espeak_and_bad_settings_are_invalid_config() {
    let missing = settings(r#""espeak_ng": "/nonexistent/espeak-ng""#);
    match Call::open(&missing) {
        Err(PluginError::InvalidConfig(message)) => {
            assert!(message.contains("espeak-ng"), "{message}")
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("opened without espeak-ng"),
    }
    for bad in [
        r#""length_scale": 0"#,
        r#""length_scale": -1"#,
        r#""noise_w": -0.5"#,
        r#""noise_scale": 3"#,
        r#""speed": 2"#,
    ] {
        assert!(
            matches!(
                Call::open(&settings(bad)),
                Err(PluginError::InvalidConfig(_))
            ),
            "{bad}"
        );
    }
}

/// Measures the real-time factor (synthesis time / audio duration) and the time to first audio
/// (`flush` of one sentence until its audio returns), and writes the speech as 22050 Hz and
/// phone-line (8 kHz μ-law, with `sox`) WAV files under `target/` to listen to. Not a timed
/// assertion: run with `cargo test -p switchboard-plugin-piper --release -- --ignored
/// --nocapture`.
#[test]
#[ignore = "a measurement; prints figures"]
fn measure_real_time_factor_and_first_audio() {
    let started = Instant::now();
    let mut call = Call::open(&settings("")).unwrap();
    println!(
        "first open (loads ONNX Runtime and the voice): {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let _second = Call::open(&settings("")).unwrap();
    println!("second open (cached): {:?}", started.elapsed());

    let sentences = [
        "Thanks for calling Switchboard, how can I help you today?",
        "Our office is open from nine to five, Monday to Friday.",
        "I have booked your appointment for Tuesday at half past ten.",
        "Is there anything else I can do for you?",
    ];
    let cold = Instant::now();
    say(&mut call, sentences[0]);
    println!("first flush in the process (cold): {:?}", cold.elapsed());

    let mut all = Vec::new();
    let (mut busy, mut cpu, mut audio_s) = (Duration::ZERO, Duration::ZERO, 0.0);
    for text in sentences {
        let (started, cpu_started) = (Instant::now(), thread_cpu());
        let outputs = say(&mut call, text);
        let (took, cpu_took) = (started.elapsed(), thread_cpu() - cpu_started);
        let (frames, _) = frames(&outputs);
        let seconds = frames.iter().map(Vec::len).sum::<usize>() as f64 / 22050.0;
        println!(
            "{text:?}: first audio after {took:?} ({cpu_took:?} CPU) for {seconds:.2} s of audio, \
             RTF {:.3} (CPU {:.3})",
            took.as_secs_f64() / seconds,
            cpu_took.as_secs_f64() / seconds
        );
        busy += took;
        cpu += cpu_took;
        audio_s += seconds;
        all.extend(frames.into_iter().flatten());
    }
    println!(
        "total: {busy:?} ({cpu:?} CPU) for {audio_s:.2} s of audio, RTF {:.3} (CPU {:.3})",
        busy.as_secs_f64() / audio_s,
        cpu.as_secs_f64() / audio_s
    );

    let dir = repo().join("target");
    let wav = dir.join("piper-sample.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 22050,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&wav, spec).unwrap();
    for s in &all {
        writer.write_sample(*s).unwrap();
    }
    writer.finalize().unwrap();
    let phone = dir.join("piper-sample-8k-mulaw.wav");
    let sox = std::process::Command::new("sox")
        .arg(&wav)
        .args(["-r", "8000", "-e", "mu-law"])
        .arg(&phone)
        .status();
    println!(
        "wrote {} and {} (sox: {sox:?})",
        wav.display(),
        phone.display()
    );
}

/// CPU time this thread has used (Linux `schedstat`), which ONNX Runtime's one intra-op thread
/// is: a figure that other work on the machine does not inflate. Zero where unavailable.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}
