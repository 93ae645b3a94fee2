//! Offline speech to text: the speech-to-text stage of a pipeline agent, running OpenAI's Whisper
//! tiny.en on the CPU in pure Rust (candle), with no service and no network. A **native** plugin
//! only (it needs threads, files and ~150 MB of memory a WASM sandbox does not give).
//!
//! It asks the host for PCM16 at 16 kHz (the host resamples Twilio's 8 kHz μ-law), buffers the
//! caller's turn, and on `end-of-turn` transcribes it and answers with the final transcript
//! (trimmed; empty when nothing was said) followed by `end-of-turn`, which hands the turn to the
//! language model. There are no interim transcripts, except when a turn outgrows Whisper's 30 s
//! window (see [`MAX_TURN_SAMPLES`]).
//!
//! Settings (the agent's `pipeline.stt.settings` in agents.toml), all optional:
//! ```json
//! { "model_dir": "models/whisper-tiny.en", "window_ms": 30000 }
//! ```
//! `model_dir` holds `model.bin` (CTranslate2, fp16), `tokenizer.json` and `config.json`, as
//! `scripts/fetch-whisper.sh` fetches them. A relative path is taken from the gateway's current
//! directory. Default: `$SWITCHBOARD_MODELS/whisper-tiny.en` when `SWITCHBOARD_MODELS` is set,
//! else `models/whisper-tiny.en`. A missing or malformed model is refused at `open`.
//! `window_ms` is the smallest encoder window ([`DEFAULT_WINDOW_MS`]); 30000 encodes Whisper's
//! full window every time.
//!
//! Cost (2-core x86-64, `plugin` profile): the first `open` in a process loads the model in
//! 0.25–0.6 s (~0.7 s in a debug build); later `open`s share it (a map lookup, tens of µs). With
//! Whisper's full 30 s window (the default) a turn costs 1.8 s for 3 s of speech, 2.6 s for 10 s
//! and 3.9 s for a wordy 12 s on a machine busy with a build (about half that idle); a smaller
//! `window_ms` is faster but less safe (see [`DEFAULT_WINDOW_MS`]). Each token adds a decoder
//! step. Inference runs on [`INFERENCE_THREADS`] threads
//! for the whole process. Candle also keeps a small element-wise helper pool sized by
//! `CANDLE_NUM_THREADS` (default: physical cores); set that in the gateway's environment to bound
//! it too.
//!
//! **Budget.** The host budgets a `handle` at 200 ms by default and ends a call that overruns;
//! the `end-of-turn` transcription takes longer, so give this plugin a `budget_ms` of several
//! seconds in its `[plugins.NAME]` table (the shipped agents.toml uses 15000). The host runs
//! native stages off its async workers, so the wait delays only this call.

#![forbid(unsafe_code)]

pub mod ct2;
pub mod decoding;
pub mod mel;
pub mod model;
pub mod vocab;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use switchboard_plugin_api::audio::pcm16_from_bytes;
use switchboard_plugin_api::prelude::*;

pub use decoding::{INFERENCE_THREADS, Transcription};
pub use model::Model;

/// Sample rate the plugin asks the host for (Hz): Whisper's.
pub const SAMPLE_RATE: u32 = mel::SAMPLE_RATE;

/// Most audio buffered for one turn (samples, 30 s at [`SAMPLE_RATE`]): Whisper's window. When a
/// turn reaches it, that much is transcribed at once (in the `handle` of the frame that filled
/// it, answered with an interim transcript of the turn so far) and buffering starts again; the
/// final transcript joins the pieces. A word spoken across the cut may be lost or garbled.
pub const MAX_TURN_SAMPLES: usize = mel::WINDOW_SAMPLES;

/// A turn quieter than this RMS (full scale 1.0; −60 dBFS, well under a phone line's noise
/// floor) is silence: it is answered with empty text without running the model, which would
/// otherwise sometimes "hear" a word in nothing.
pub const SILENCE_RMS: f32 = 0.001;

/// Default smallest encoder window (ms): Whisper's full 30 s, as Whisper itself (and the
/// CTranslate2 reference this port matches token for token) encodes every turn. Smaller windows
/// are faster (`examples/rtf.rs`: a 3 s turn 3–5× faster at 1 s) but not safe with tiny.en:
/// through the gateway a 2.8 s question came back at a 1 s window as a loop ("So what are your
/// opening hours? Well, you're opening hours. So what…"), and at 10 s one fixture lost a word
/// the full window keeps. Opt in with `window_ms` only after checking on your own audio.
pub const DEFAULT_WINDOW_MS: u32 = 30_000;

/// Model directory under `SWITCHBOARD_MODELS` (or `models/`) when the settings name none.
pub const DEFAULT_MODEL_SUBDIR: &str = "whisper-tiny.en";

/// The script that fetches the default model, named in errors.
const FETCH_SCRIPT: &str = "scripts/fetch-whisper.sh";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Directory of the model files; see the crate docs for the default.
    #[serde(default)]
    model_dir: Option<PathBuf>,
    /// Smallest encoder window (ms): the turn plus 1 s is encoded, but at least this much.
    /// Default [`DEFAULT_WINDOW_MS`] (Whisper's full window).
    #[serde(default)]
    window_ms: Option<u32>,
}

impl Settings {
    fn parse(json: &str) -> Result<Self, PluginError> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(json)
            .map_err(|e| PluginError::InvalidConfig(format!("whisper settings: {e}")))
    }

    fn model_dir(&self) -> PathBuf {
        self.model_dir.clone().unwrap_or_else(|| {
            std::env::var_os("SWITCHBOARD_MODELS")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("models"))
                .join(DEFAULT_MODEL_SUBDIR)
        })
    }
}

/// One call's recognizer: the caller's current turn, waiting for `end-of-turn`.
pub struct Whisper {
    model: Arc<Model>,
    /// Smallest encoder window (samples); [`MAX_TURN_SAMPLES`] encodes Whisper's full 30 s.
    min_window: usize,
    /// The current turn's audio not yet transcribed: mono, [`SAMPLE_RATE`] Hz, full scale ±1.0.
    samples: Vec<f32>,
    /// Text of this turn's earlier 30 s pieces, when it outgrew [`MAX_TURN_SAMPLES`].
    earlier: String,
}

impl Stt for Whisper {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "whisper".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Offline speech to text: Whisper tiny.en (English) on the CPU".into(),
            input_format: AudioFormat {
                encoding: AudioEncoding::Pcm16,
                sample_rate: SAMPLE_RATE,
            },
        }
    }

    fn open(config: SessionConfig) -> Result<Self, PluginError> {
        let settings = Settings::parse(&config.settings)?;
        let dir = settings.model_dir();
        let min_window = match settings.window_ms.or(Some(DEFAULT_WINDOW_MS)) {
            None => MAX_TURN_SAMPLES,
            Some(ms) if (1000..=30_000).contains(&ms) => ms as usize * SAMPLE_RATE as usize / 1000,
            Some(ms) => {
                return Err(PluginError::InvalidConfig(format!(
                    "whisper window_ms {ms} is outside 1000..=30000"
                )));
            }
        };
        let model = model::cached(&dir).map_err(|e| {
            PluginError::InvalidConfig(format!(
                "whisper model_dir {}: {e}; fetch the model with {FETCH_SCRIPT} or set \
                 model_dir to a directory holding model.bin, tokenizer.json and config.json",
                dir.display()
            ))
        })?;
        Ok(Self {
            model,
            min_window,
            samples: Vec::with_capacity(MAX_TURN_SAMPLES),
            earlier: String::new(),
        })
    }

    fn handle(&mut self, input: SttInput) -> Result<Vec<SttOutput>, PluginError> {
        match input {
            SttInput::Audio(frame) => {
                let wanted = Self::describe().input_format;
                if frame.format != wanted {
                    return Err(PluginError::Unsupported(format!(
                        "caller audio in {:?}, asked for {wanted:?}",
                        frame.format
                    )));
                }
                let mut out = Vec::new();
                for sample in pcm16_from_bytes(&frame.data) {
                    self.samples.push(f32::from(sample) / 32_768.0);
                    if self.samples.len() == MAX_TURN_SAMPLES {
                        let piece = self.transcribe()?;
                        join(&mut self.earlier, &piece);
                        out.push(SttOutput::Transcript(SttTranscript {
                            text: self.earlier.clone(),
                            is_final: false,
                        }));
                    }
                }
                Ok(out)
            }
            SttInput::EndOfTurn => {
                let last = self.transcribe()?;
                let mut text = std::mem::take(&mut self.earlier);
                join(&mut text, &last);
                Ok(vec![
                    SttOutput::Transcript(SttTranscript {
                        text,
                        is_final: true,
                    }),
                    SttOutput::EndOfTurn,
                ])
            }
            SttInput::Hangup => {
                self.samples = Vec::new();
                self.earlier.clear();
                Ok(Vec::new())
            }
            _ => Ok(Vec::new()),
        }
    }
}

impl Whisper {
    /// Transcribes and clears the buffered audio; trimmed text, empty for silence.
    fn transcribe(&mut self) -> Result<String, PluginError> {
        let all = std::mem::take(&mut self.samples);
        self.samples = Vec::with_capacity(MAX_TURN_SAMPLES);
        // The host feeds every caller frame, so a turn starts with whatever silence the caller
        // kept while the agent spoke: encode only the sound, with a margin.
        let samples = trim_silence(&all);
        if rms(samples) < SILENCE_RMS {
            return Ok(String::new());
        }
        let started = Instant::now();
        let result = self
            .model
            .transcribe(samples, self.min_window)
            .map_err(|e| PluginError::Internal(format!("whisper: {e}")))?;
        host::log(
            LogLevel::Debug,
            &format!(
                "whisper: {} ms of audio in {} ms, {} tokens, no_speech_prob {:.2}",
                samples.len() as u64 * 1000 / u64::from(SAMPLE_RATE),
                started.elapsed().as_millis(),
                result.tokens,
                result.no_speech_prob
            ),
        );
        Ok(result.text.trim().to_string())
    }
}

/// Blocks of 20 ms (samples) scanned by [`trim_silence`].
const TRIM_BLOCK: usize = SAMPLE_RATE as usize / 50;

/// Margin of quiet kept before and after the sound (samples, 300 ms).
const TRIM_MARGIN: usize = SAMPLE_RATE as usize * 3 / 10;

/// `samples` without their leading and trailing blocks quieter than [`SILENCE_RMS`] × 3
/// (−50 dBFS), keeping [`TRIM_MARGIN`] on each side; all of it when nothing is louder.
fn trim_silence(samples: &[f32]) -> &[f32] {
    let loud = |block: &[f32]| rms(block) >= SILENCE_RMS * 3.0;
    let blocks: Vec<&[f32]> = samples.chunks(TRIM_BLOCK).collect();
    let (Some(first), Some(last)) = (
        blocks.iter().position(|b| loud(b)),
        blocks.iter().rposition(|b| loud(b)),
    ) else {
        return samples;
    };
    let start = (first * TRIM_BLOCK).saturating_sub(TRIM_MARGIN);
    let end = ((last + 1) * TRIM_BLOCK + TRIM_MARGIN).min(samples.len());
    &samples[start..end]
}

/// Appends `piece` to `text` with one space between non-empty parts.
fn join(text: &mut String, piece: &str) {
    if !text.is_empty() && !piece.is_empty() {
        text.push(' ');
    }
    text.push_str(piece);
}

/// Root mean square of `samples` (0 for none).
fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt()
}

switchboard_plugin_api::export_plugin!(stt: Whisper);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_refuse_unknown_keys() {
        assert_eq!(Settings::parse("").unwrap().model_dir, None);
        assert_eq!(Settings::parse("{}").unwrap().model_dir, None);
        assert_eq!(
            Settings::parse(r#"{"model_dir": "/m"}"#).unwrap().model_dir,
            Some(PathBuf::from("/m"))
        );
        let Err(PluginError::InvalidConfig(m)) = Settings::parse(r#"{"model": "x"}"#) else {
            panic!("accepted an unknown key");
        };
        assert!(m.contains("model"), "{m}");
    }

    #[test]
    fn pieces_join_with_single_spaces() {
        let mut t = String::new();
        join(&mut t, "");
        join(&mut t, "one");
        join(&mut t, "");
        join(&mut t, "two");
        assert_eq!(t, "one two");
    }

    #[test]
    fn silence_around_the_sound_is_trimmed_to_a_margin() {
        let mut samples = vec![0.0f32; 5 * TRIM_BLOCK * 50];
        let sound = 100 * TRIM_BLOCK..110 * TRIM_BLOCK;
        for s in &mut samples[sound.clone()] {
            *s = 0.1;
        }
        let trimmed = trim_silence(&samples);
        assert_eq!(trimmed.len(), sound.len() + 2 * TRIM_MARGIN);
        assert_eq!(
            trim_silence(&samples[..TRIM_BLOCK * 10]).len(),
            TRIM_BLOCK * 10
        );
    }

    #[test]
    fn rms_of_nothing_and_of_a_square_wave() {
        assert_eq!(rms(&[]), 0.0);
        assert!((rms(&[0.5, -0.5, 0.5, -0.5]) - 0.5).abs() < 1e-6);
    }
}
