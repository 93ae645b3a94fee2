//! Measures model load time and the real-time factor (transcription time / audio duration) of
//! the phone path: 8 kHz μ-law fixtures → 16 kHz → Whisper, plus the 10 s human recording in
//! `../shared/fixtures/speech/beckett.wav` when it is there — each with Whisper's full 30 s
//! encoder window (the baseline), the plugin's default (the clip plus 1 s, at least 10 s) and the
//! window fitted to the clip plus 1 s (`window_ms` setting), with ratios to the baseline.
//!
//! ```sh
//! cargo run -p switchboard-plugin-whisper --profile plugin --example rtf
//! ```
//! Fetches the model first if it is missing (`scripts/fetch-whisper.sh`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Instant;

/// Runs per clip; the median is reported.
const RUNS: usize = 5;

fn main() {
    let dir = support::model_dir();
    let started = Instant::now();
    let model = whisper::model::cached(&dir).expect("model loads");
    println!(
        "model load: {} ms (first open in the process); threads: {}",
        started.elapsed().as_millis(),
        whisper::INFERENCE_THREADS
    );
    let started = Instant::now();
    let _again = whisper::model::cached(&dir).expect("model loads");
    println!("cached open: {} µs", started.elapsed().as_micros());

    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut clips: Vec<(String, Vec<i16>)> = ["opening_hours", "invoice", "late_order"]
        .iter()
        .map(|name| {
            let pcm8k = support::read_mulaw_wav(&fixtures.join(format!("{name}.wav")));
            (
                format!("{name} (μ-law 8k→16k)"),
                support::upsample_2x(&pcm8k),
            )
        })
        .collect();
    let beckett = support::repo().join("../shared/fixtures/speech/beckett.wav");
    if let Ok(samples) = switchboard_plugin_api::testing::read_wav(&beckett, 16_000) {
        clips.push(("beckett (human, 16k)".into(), samples));
    }

    for (name, pcm) in clips {
        let samples: Vec<f32> = pcm.iter().map(|s| f32::from(*s) / 32_768.0).collect();
        let seconds = samples.len() as f64 / 16_000.0;
        let mut medians = Vec::new();
        for (label, window) in [
            ("full 30 s", 30 * 16_000),
            ("default (≥ 10 s)", 10 * 16_000),
            ("fitted (≥ 1 s)", 16_000),
        ] {
            let mut times = Vec::new();
            let mut text = String::new();
            for _ in 0..RUNS {
                let t = Instant::now();
                text = model
                    .transcribe(&samples, window)
                    .expect("transcribes")
                    .text;
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let median = times[RUNS / 2];
            medians.push(median);
            println!(
                "{name}, {label} window: {seconds:.2} s audio, median {:.0} ms (min {:.0}, max {:.0}) → RTF {:.3}\n    {:?}",
                median * 1000.0,
                times[0] * 1000.0,
                times[RUNS - 1] * 1000.0,
                median / seconds,
                text.trim()
            );
        }
        println!(
            "    default / full = {:.2}; fitted / full = {:.2}",
            medians[1] / medians[0],
            medians[2] / medians[0]
        );
    }
}
