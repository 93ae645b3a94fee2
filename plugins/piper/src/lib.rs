//! Piper: offline text to speech with a natural voice, as the text-to-speech stage of a pipeline
//! agent. A **native** plugin only (it loads ONNX Runtime and runs a child process); never built
//! for `wasm32`.
//!
//! The voice is Piper's `en_US-joe-medium` (22050 Hz), run through ONNX Runtime (`ort`, loading
//! `libonnxruntime.so` at run time). Phonemes come from the `espeak-ng` program, run as a child
//! process because espeak-ng is GPL-3 (see [`phonemes`]). Fetch the voice and the library with
//! `scripts/fetch-piper.sh`; install `espeak-ng` from Debian.
//!
//! Settings (the agent's `pipeline.tts.settings` in agents.toml), all optional:
//! ```json
//! { "voice": "models/piper/en_US-joe-medium.onnx",
//!   "onnxruntime": "models/piper/libonnxruntime.so.1.32.0",
//!   "espeak_ng": "espeak-ng",
//!   "length_scale": 1.0, "noise_scale": 0.667, "noise_w": 0.8 }
//! ```
//! Relative paths are relative to the current directory; the default paths are under
//! `$SWITCHBOARD_MODELS` (default `models`). The voice's config is the model's path plus `.json`.
//! The scales default to the voice config's `inference` values.
//!
//! The voice and ONNX Runtime load once per process and are shared by every call (the first
//! `open` takes about half a second, later ones under a millisecond); calls that synthesise at
//! the same moment take turns, each on one thread.
//!
//! Each `flush` synthesises the buffered text one sentence at a time and returns one
//! [`TtsOutput::Audio`] frame per sentence (PCM16 mono at the voice's 22050 Hz), then
//! [`TtsOutput::UtteranceDone`]. Synthesis costs about 80 ms of CPU per second of speech
//! (real-time factor ≈ 0.08 on one thread), so `flush` takes that long: feed it a clause or a
//! sentence at a time, and give the plugin a `handle` budget above the host's default 200 ms
//! (`budget_ms = 2000` in its `[plugins.NAME]` table): a three-second sentence takes ~250 ms of
//! CPU, more on a busy machine.

#![forbid(unsafe_code)]

pub mod phonemes;
pub mod voice;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Deserialize;
use switchboard_plugin_api::prelude::*;

use crate::phonemes::{Espeak, PhonemeError, phoneme_ids};
use crate::voice::{Voice, VoiceError};

/// The voice fetched by `scripts/fetch-piper.sh`, under `$SWITCHBOARD_MODELS/piper/`.
pub const DEFAULT_VOICE: &str = "piper/en_US-joe-medium.onnx";
/// The ONNX Runtime library fetched by `scripts/fetch-piper.sh`, under `$SWITCHBOARD_MODELS/`.
pub const DEFAULT_ONNXRUNTIME: &str = "piper/libonnxruntime.so.1.32.0";
/// Where models are when `$SWITCHBOARD_MODELS` is not set (relative to the current directory).
pub const DEFAULT_MODELS_DIR: &str = "models";
/// The script that fetches the voice and ONNX Runtime; named in every "missing file" error.
pub const FETCH_SCRIPT: &str = "scripts/fetch-piper.sh";

/// Most text (bytes of UTF-8) one utterance may buffer before `flush`: about two minutes of
/// speech. More would take seconds to synthesise, far past the host's per-`handle` budget; the
/// pipeline sends a clause at a time, so this only stops a runaway.
pub const MAX_UTTERANCE_BYTES: usize = 16 * 1024;

/// Peak level of each sentence's audio, as a fraction of full scale. Piper normalises each
/// sentence to its peak; this leaves headroom for the host's resampling to 8 kHz, whose filter
/// overshoots a little, so the phone line never clips.
pub const PEAK_LEVEL: f32 = 0.9;

/// Largest accepted `noise_scale` and `noise_w` (dimensionless): Piper's defaults are 0.667 and
/// 0.8; past 2 the voice slurs.
const MAX_NOISE: f32 = 2.0;

/// Largest accepted `length_scale` (duration multiplier): 4× slower is already barely usable.
const MAX_LENGTH_SCALE: f32 = 4.0;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    voice: Option<PathBuf>,
    onnxruntime: Option<PathBuf>,
    espeak_ng: Option<String>,
    length_scale: Option<f32>,
    noise_scale: Option<f32>,
    noise_w: Option<f32>,
}

/// One call's synthesizer.
pub struct Piper {
    voice: Arc<Voice>,
    espeak: Espeak,
    /// `[noise_scale, length_scale, noise_w]`, as the model takes them.
    scales: [f32; 3],
    /// Text given since the last `flush`.
    text: String,
}

impl Tts for Piper {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "piper".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Offline text to speech: Piper voice en_US-joe-medium (22050 Hz) \
                          through ONNX Runtime, phonemes from espeak-ng"
                .into(),
            input_format: AudioFormat {
                encoding: AudioEncoding::Pcm16,
                sample_rate: 8000,
            },
        }
    }

    fn open(config: SessionConfig) -> Result<Self, PluginError> {
        let settings: Settings = if config.settings.trim().is_empty() {
            Settings::default()
        } else {
            serde_json::from_str(&config.settings)
                .map_err(|e| PluginError::InvalidConfig(format!("piper settings: {e}")))?
        };
        let voice_path = existing(
            "voice",
            settings
                .voice
                .unwrap_or_else(|| default_path(DEFAULT_VOICE)),
        )?;
        existing("voice", voice::config_path(&voice_path))?;
        let onnxruntime = existing(
            "onnxruntime",
            settings
                .onnxruntime
                .unwrap_or_else(|| default_path(DEFAULT_ONNXRUNTIME)),
        )?;
        let voice = Voice::shared(&voice_path, &onnxruntime).map_err(|e| match e {
            VoiceError::Inference(m) => PluginError::Internal(m),
            other => PluginError::InvalidConfig(format!("{other} (fetch with {FETCH_SCRIPT})")),
        })?;
        let program = settings.espeak_ng.unwrap_or_else(|| "espeak-ng".into());
        let espeak = Espeak::new(&program, &voice.config.espeak_voice);
        check_once(&espeak, &program)?;
        // Noise may be 0 (no variation); a duration multiplier may not.
        let scale =
            |key: &str, value: Option<f32>, default: f32, zero_ok: bool, max: f32| match value {
                None => Ok(default),
                Some(v) if v.is_finite() && v <= max && (v > 0.0 || zero_ok && v == 0.0) => Ok(v),
                Some(v) => Err(PluginError::InvalidConfig(format!(
                    "{key}: {v} is out of range {}0, {max}]",
                    if zero_ok { "[" } else { "(" }
                ))),
            };
        let c = &voice.config;
        let scales = [
            scale(
                "noise_scale",
                settings.noise_scale,
                c.noise_scale,
                true,
                MAX_NOISE,
            )?,
            scale(
                "length_scale",
                settings.length_scale,
                c.length_scale,
                false,
                MAX_LENGTH_SCALE,
            )?,
            scale("noise_w", settings.noise_w, c.noise_w, true, MAX_NOISE)?,
        ];
        Ok(Self {
            voice,
            espeak,
            scales,
            text: String::new(),
        })
    }

    fn handle(&mut self, input: TtsInput) -> Result<Vec<TtsOutput>, PluginError> {
        match input {
            TtsInput::Text(text) => {
                if self.text.len() + text.len() > MAX_UTTERANCE_BYTES {
                    self.text.clear();
                    return Err(PluginError::Unsupported(format!(
                        "more than {MAX_UTTERANCE_BYTES} bytes of text in one utterance"
                    )));
                }
                self.text.push_str(&text);
                Ok(Vec::new())
            }
            TtsInput::Flush => self.flush(),
            TtsInput::Cancel | TtsInput::Hangup => {
                self.text.clear();
                Ok(Vec::new())
            }
            TtsInput::Io(_) => Ok(Vec::new()),
        }
    }
}

impl Piper {
    /// Sample rate of the audio this session returns, Hz (the voice's: 22050 for `medium`).
    pub fn sample_rate(&self) -> u32 {
        self.voice.config.sample_rate
    }

    /// Speaks the buffered text: one audio frame per sentence, then `UtteranceDone`.
    fn flush(&mut self) -> Result<Vec<TtsOutput>, PluginError> {
        let text = std::mem::take(&mut self.text);
        let mut out = Vec::new();
        let sentences = self.espeak.phonemize(&text).map_err(phoneme_error)?;
        for sentence in sentences {
            let ids = phoneme_ids(&sentence, &self.voice.config.phoneme_id_map);
            let audio = self
                .voice
                .synthesize(&ids, self.scales)
                .map_err(|e| PluginError::Internal(e.to_string()))?;
            if audio.is_empty() {
                continue;
            }
            out.push(TtsOutput::Audio(AudioFrame {
                format: AudioFormat {
                    encoding: AudioEncoding::Pcm16,
                    sample_rate: self.sample_rate(),
                },
                data: pcm16_bytes(&audio),
                timestamp_ms: 0,
            }));
        }
        out.push(TtsOutput::UtteranceDone);
        Ok(out)
    }
}

/// `samples` (floats, any level) as PCM16 little-endian bytes, peak-normalised to
/// [`PEAK_LEVEL`]; silence stays silence.
fn pcm16_bytes(samples: &[f32]) -> Vec<u8> {
    let peak = samples
        .iter()
        .filter(|s| s.is_finite())
        .fold(0.0f32, |m, s| m.max(s.abs()));
    let gain = if peak < 1e-8 { 0.0 } else { PEAK_LEVEL / peak };
    samples
        .iter()
        .flat_map(|&s| {
            let s = if s.is_finite() { s * gain } else { 0.0 };
            ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes()
        })
        .collect()
}

/// `path` made absolute (against the current directory) if it exists; otherwise an
/// [`PluginError::InvalidConfig`] naming the setting, the path and the fetch script.
fn existing(key: &str, path: PathBuf) -> Result<PathBuf, PluginError> {
    let absolute = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
    if absolute.is_file() {
        return Ok(absolute);
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    Err(PluginError::InvalidConfig(format!(
        "{key}: {} not found (relative to {}); fetch it with {FETCH_SCRIPT} or set \"{key}\"",
        path.display(),
        cwd.display()
    )))
}

/// Checks the espeak-ng program once per process per program name.
fn check_once(espeak: &Espeak, program: &str) -> Result<(), PluginError> {
    static CHECKED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut checked = CHECKED.lock().unwrap_or_else(PoisonError::into_inner);
    if checked.iter().any(|p| p == program) {
        return Ok(());
    }
    espeak.check().map_err(phoneme_error)?;
    checked.push(program.to_string());
    Ok(())
}

fn phoneme_error(e: PhonemeError) -> PluginError {
    match e {
        PhonemeError::NotFound { .. } => PluginError::InvalidConfig(e.to_string()),
        PhonemeError::Failed { .. } => PluginError::Internal(e.to_string()),
    }
}

/// Logs a warning through the host.
pub(crate) fn log_warn(message: &str) {
    host::log(LogLevel::Warn, message);
}

/// Where a file of the default model set is: `$SWITCHBOARD_MODELS` (or `models`) joined with
/// `relative` ([`DEFAULT_VOICE`], [`DEFAULT_ONNXRUNTIME`]).
pub fn default_path(relative: &str) -> PathBuf {
    let models = std::env::var_os("SWITCHBOARD_MODELS")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_MODELS_DIR), PathBuf::from);
    Path::new(&models).join(relative)
}

switchboard_plugin_api::export_plugin!(tts: Piper);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm16_is_peak_normalised_little_endian() {
        let bytes = pcm16_bytes(&[0.0, 0.5, -0.25]);
        let samples: Vec<i16> = bytes
            .chunks(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(samples, [0, 29490, -14745]);
        assert_eq!(pcm16_bytes(&[0.0, 0.0]), [0, 0, 0, 0]);
        assert_eq!(pcm16_bytes(&[f32::NAN, 1.0]).len(), 4);
    }

    #[test]
    fn unknown_settings_are_refused() {
        let err = serde_json::from_str::<Settings>(r#"{"voices": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("voices"), "{err}");
    }
}
