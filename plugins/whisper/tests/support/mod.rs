//! What the end-to-end tests and the `rtf` example share: the model directory (fetched once if
//! missing), the phone-quality fixtures (8 kHz μ-law WAV) and the host's 8 → 16 kHz step.

#![allow(dead_code)] // Each user takes what it needs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use switchboard_plugin_api::audio::mulaw_decode;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The model directory the tests use, fetched with `scripts/fetch-whisper.sh` on first use when
/// it is missing. Panics with the script's output when that fails.
pub fn model_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let models = std::env::var_os("SWITCHBOARD_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("models"));
        let dir = models.join("whisper-tiny.en");
        let complete = ["model.bin", "tokenizer.json", "config.json"]
            .iter()
            .all(|f| dir.join(f).is_file());
        if !complete {
            let script = repo().join("scripts/fetch-whisper.sh");
            let out = std::process::Command::new("bash")
                .arg(&script)
                .env("SWITCHBOARD_MODELS", &models)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "the Whisper model is missing from {} and {} failed:\n{}{}",
                dir.display(),
                script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        dir
    })
    .clone()
}

/// Settings JSON pointing the plugin at [`model_dir`].
pub fn settings() -> String {
    serde_json::json!({ "model_dir": model_dir() }).to_string()
}

/// A fixture: mono 8 kHz G.711 μ-law WAV (as `sox x.wav -r 8000 -e mu-law y.wav` writes it),
/// decoded to PCM16 as the host decodes Twilio's audio.
pub fn read_mulaw_wav(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE",
        "{}: not a WAV file",
        path.display()
    );
    let mut at = 12;
    let mut format = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..(at + 8 + len).min(bytes.len())];
        match id {
            b"fmt " => {
                let tag = u16::from_le_bytes([body[0], body[1]]);
                let channels = u16::from_le_bytes([body[2], body[3]]);
                let rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
                format = Some((tag, channels, rate));
            }
            b"data" => {
                assert_eq!(
                    format,
                    Some((7, 1, 8000)),
                    "{}: need mono 8 kHz μ-law (format tag 7)",
                    path.display()
                );
                return body.iter().map(|b| mulaw_decode(*b)).collect();
            }
            _ => {}
        }
        at += 8 + len + len % 2;
    }
    panic!("{}: no data chunk", path.display());
}

/// Half-band windowed-sinc filter taps per side for [`upsample_2x`].
const TAPS: usize = 16;

/// 8 kHz → 16 kHz as the host does it (band-limited; the host uses rubato's FFT resampler, this
/// is a windowed-sinc half-band interpolator of similar quality): even output samples are the
/// input, odd ones are interpolated between their neighbours.
pub fn upsample_2x(input: &[i16]) -> Vec<i16> {
    // h[k] = sinc(k + 1/2) · Blackman window, for k = 0..TAPS on each side.
    let taps: Vec<f64> = (0..TAPS)
        .map(|k| {
            let x = k as f64 + 0.5;
            let sinc = (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x);
            let n = (TAPS as f64 + x) / (2.0 * TAPS as f64); // 0.5..1 across the half window
            let w = 0.42 - 0.5 * (2.0 * std::f64::consts::PI * n).cos()
                + 0.08 * (4.0 * std::f64::consts::PI * n).cos();
            sinc * w
        })
        .collect();
    let at = |i: isize| -> f64 {
        if i < 0 {
            0.0
        } else {
            input.get(i as usize).map_or(0.0, |s| f64::from(*s))
        }
    };
    let mut out = Vec::with_capacity(input.len() * 2);
    for (n, s) in input.iter().enumerate() {
        out.push(*s);
        let n = n as isize;
        let v: f64 = taps
            .iter()
            .enumerate()
            .map(|(k, h)| h * (at(n - k as isize) + at(n + 1 + k as isize)))
            .sum();
        out.push(v.round().clamp(-32768.0, 32767.0) as i16);
    }
    out
}

/// Lowercase words without punctuation ("Hello, world!" → ["hello", "world"]).
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Word error rate of `heard` against `said`: word-level edit distance / words said.
pub fn word_error_rate(said: &str, heard: &str) -> f64 {
    let (s, h) = (words(said), words(heard));
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, sw) in s.iter().enumerate() {
        let mut row = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            row[j + 1] = (prev[j] + usize::from(sw != hw))
                .min(prev[j + 1] + 1)
                .min(row[j] + 1);
        }
        prev = row;
    }
    prev[h.len()] as f64 / s.len().max(1) as f64
}
