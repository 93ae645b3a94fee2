//! Offline speech to text: the speech-to-text stage of a pipeline agent, running OpenAI's Whisper
//! tiny.en on the CPU in pure Rust (candle), with no service and no network. A **native** plugin
//! only (it needs threads, files and ~150 MB of memory a WASM sandbox does not give).
//!
//! It asks the host for PCM16 at 16 kHz (the host resamples Twilio's 8 kHz μ-law), buffers the
//! caller's turn, and on `end-of-turn` answers with the final transcript (trimmed; empty when
//! nothing was said) followed by `end-of-turn`, which hands the turn to the language model.
//! When the caller pauses ([`speculation`]: 200 ms 15 dB under the turn's speech), the turn so far
//! is transcribed on a background thread and sent as an interim transcript; `end-of-turn` with
//! no sound since is answered with it at once (the host's early endpointing ends the turn on
//! such an interim when it is a whole sentence). Interim transcripts also come when a turn
//! outgrows Whisper's 30 s window (see [`MAX_TURN_SAMPLES`]).
//!
//! Measured through the gateway (`cargo bench -p switchboard-tests --bench offline_turns`, five
//! fixture questions twice, 2-core machine with other builds running): end of speech → first
//! agent audio went from 1917 ms to 955 ms median (p90 1982 → 1127 ms) on clean speech and from
//! 1875 ms to 1113 ms (p90 1930 → 2048 ms) with pink noise at 20 dB SNR (before:
//! `window_ms = 30000`, `speculate = false`); word error rate 0.129 both clean, 0.274 → 0.145
//! noisy. The noisy p90 is fitted-window loops redone with a larger window on a turn buffer
//! that holds the noise since the last turn (see [`recognizer`]).
//!
//! Settings (the agent's `pipeline.stt.settings` in agents.toml), all optional:
//! ```json
//! { "model_dir": "models/whisper-tiny.en", "window_ms": 1000, "speculate": true }
//! ```
//! `model_dir` holds `model.bin` (CTranslate2, fp16), `tokenizer.json` and `config.json`, as
//! `scripts/fetch-whisper.sh` fetches them. A relative path is taken from the gateway's current
//! directory. Default: `$SWITCHBOARD_MODELS/whisper-tiny.en` when `SWITCHBOARD_MODELS` is set,
//! else `models/whisper-tiny.en`. A missing or malformed model is refused at `open`.
//! `window_ms` is the smallest encoder window ([`DEFAULT_WINDOW_MS`]); 30000 encodes Whisper's
//! full window every time. `speculate` (default true) transcribes in the caller's pauses;
//! false waits for `end-of-turn` and sends no interim transcripts (so no early endpointing).
//!
//! Cost (2-core x86-64, `plugin` profile): the first `open` in a process loads the model in
//! 0.25–0.6 s (~0.7 s in a debug build); later `open`s share it (a map lookup, tens of µs). With
//! Whisper's full 30 s window a turn costs 1.8 s for 3 s of speech, 2.6 s for 10 s and 3.9 s for
//! a wordy 12 s on a machine busy with a build (about half that idle); the fitted window (the
//! default, see [`DEFAULT_WINDOW_MS`]) costs a fraction of that for short turns. Each token adds
//! a decoder
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
pub mod recognizer;
pub mod speculation;
pub mod vocab;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use serde::Deserialize;
use switchboard_plugin_api::audio::pcm16_from_bytes;
use switchboard_plugin_api::prelude::*;

pub use decoding::{INFERENCE_THREADS, Transcription};
pub use model::Model;
pub use recognizer::{Recognized, Recognizer, SILENCE_RMS, Suspect};

use speculation::{Job, Pauses};

/// Sample rate the plugin asks the host for (Hz): Whisper's.
pub const SAMPLE_RATE: u32 = mel::SAMPLE_RATE;

/// Most audio buffered for one turn (samples, 30 s at [`SAMPLE_RATE`]): Whisper's window. When a
/// turn reaches it, that much is transcribed at once (in the `handle` of the frame that filled
/// it, answered with an interim transcript of the turn so far) and buffering starts again; the
/// final transcript joins the pieces. A word spoken across the cut may be lost or garbled.
pub const MAX_TURN_SAMPLES: usize = mel::WINDOW_SAMPLES;

/// Default smallest encoder window (ms): 1 s, so the window is fitted to the turn (its sound
/// plus [`decoding::WINDOW_MARGIN`]), with a 10 s window ([`recognizer::FALLBACK_WINDOW`]), then
/// Whisper's full 30 s, as the fallbacks for a suspect result ([`recognizer::suspect`]: the
/// decoder's token limit reached or its text repeating, more tokens than the audio's length
/// allows, or nothing heard in plain sound). Unguarded, tiny.en looped at a 1 s window: through
/// the gateway a 2.8 s question came back as "So what are your opening hours? Well, you're
/// opening hours. So what…", and "Where is my order?" as "Where is my order? Where is my
/// order? …" at every window up to 6.6 s. `window_ms = 30000` encodes the full window every
/// time (the behaviour before).
pub const DEFAULT_WINDOW_MS: u32 = 1000;

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
    /// Default [`DEFAULT_WINDOW_MS`] (fitted to the turn, with the full window as fallback).
    #[serde(default)]
    window_ms: Option<u32>,
    /// Transcribe during the caller's pauses (default true); see [`speculation`].
    #[serde(default)]
    speculate: Option<bool>,
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
    recognizer: Recognizer,
    /// Transcribe during pauses ([`speculation`]).
    speculate: bool,
    /// The current turn's audio not yet transcribed: mono, [`SAMPLE_RATE`] Hz, full scale ±1.0.
    samples: Vec<f32>,
    /// Text of this turn's earlier 30 s pieces, when it outgrew [`MAX_TURN_SAMPLES`].
    earlier: String,
    /// The current turn's level, for pauses.
    pauses: Pauses,
    /// The latest transcription of the turn so far, running or done.
    job: Option<Job>,
    /// The job's result was answered as an interim transcript (or dropped).
    job_reported: bool,
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
        let min_window = match settings.window_ms.unwrap_or(DEFAULT_WINDOW_MS) {
            ms if (1000..=30_000).contains(&ms) => ms as usize * SAMPLE_RATE as usize / 1000,
            ms => {
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
            recognizer: Recognizer::new(model, min_window),
            speculate: settings.speculate.unwrap_or(true),
            samples: Vec::with_capacity(MAX_TURN_SAMPLES),
            earlier: String::new(),
            pauses: Pauses::default(),
            job: None,
            job_reported: false,
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
                let fresh: Vec<f32> = pcm16_from_bytes(&frame.data)
                    .into_iter()
                    .map(|s| f32::from(s) / 32_768.0)
                    .collect();
                let mut fresh = fresh.as_slice();
                while !fresh.is_empty() {
                    let take = fresh.len().min(MAX_TURN_SAMPLES - self.samples.len());
                    let (now, later) = fresh.split_at(take);
                    self.samples.extend_from_slice(now);
                    self.pauses.push(now);
                    fresh = later;
                    if self.samples.len() == MAX_TURN_SAMPLES {
                        self.job = None;
                        let piece = self.transcribe()?;
                        join(&mut self.earlier, &piece);
                        self.pauses.restart();
                        out.push(SttOutput::Transcript(SttTranscript {
                            text: self.earlier.clone(),
                            is_final: false,
                        }));
                    }
                }
                if self.speculate {
                    out.extend(self.speculation());
                }
                Ok(out)
            }
            SttInput::EndOfTurn => {
                let last = match self.speculated() {
                    Some(text) => text,
                    None => self.transcribe()?,
                };
                self.samples.clear();
                self.pauses = Pauses::default();
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
                self.job = None;
                self.samples = Vec::new();
                self.pauses = Pauses::default();
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
        let all = std::mem::replace(&mut self.samples, Vec::with_capacity(MAX_TURN_SAMPLES));
        let result = self
            .recognizer
            .recognize(&all, &AtomicBool::new(false))
            .map_err(|e| PluginError::Internal(format!("whisper: {e}")))?;
        log_result("end of turn", &result);
        Ok(result.text)
    }

    /// The speculative job's text at `end-of-turn`, when it covers every sound of the turn
    /// (waiting for it if it still runs); `None` otherwise (a stale job is cancelled).
    fn speculated(&mut self) -> Option<String> {
        let mut job = self.job.take()?;
        if job.upto < self.pauses.sound_end() {
            job.cancel();
            return None;
        }
        let text = job.wait().map(|r| {
            log_result("speculative, used", r);
            r.text.clone()
        });
        if let Some(e) = job.error() {
            host::log(LogLevel::Warn, &format!("whisper: speculation failed: {e}"));
        }
        text
    }

    /// Keeps the speculative job in step with the turn: cancels one overtaken by new sound,
    /// reports a finished one as an interim transcript, and starts one at a pause.
    fn speculation(&mut self) -> Option<SttOutput> {
        let sound_end = self.pauses.sound_end();
        if let Some(job) = &self.job
            && job.upto < sound_end
        {
            job.cancel();
            if job.is_done() {
                self.job = None; // dropped: the next pause starts a fresh one
            }
        }
        let mut interim = None;
        if let Some(job) = &mut self.job
            && !self.job_reported
            && job.upto >= sound_end
            && job.is_done()
        {
            self.job_reported = true;
            if let Some(result) = job.wait() {
                log_result("speculative", result);
                if !result.text.is_empty() {
                    let mut text = self.earlier.clone();
                    join(&mut text, &result.text);
                    interim = Some(SttOutput::Transcript(SttTranscript {
                        text,
                        is_final: false,
                    }));
                }
            }
        }
        let covered = self.job.as_ref().is_some_and(|j| j.upto >= sound_end);
        if self.pauses.paused() && !covered && self.job.is_none() {
            self.job = Job::start(self.recognizer.clone(), self.samples.clone());
            self.job_reported = false;
        }
        interim
    }
}

/// Logs one transcription's cost at debug level (never its text).
fn log_result(kind: &str, r: &Recognized) {
    host::log(
        LogLevel::Debug,
        &format!(
            "whisper ({kind}): {} ms of audio in {} ms, {} tokens{}",
            r.audio_ms,
            r.took.as_millis(),
            r.tokens,
            r.fell_back
                .map(|why| format!(", fitted window suspect ({why:?}): redone with a larger one"))
                .unwrap_or_default()
        ),
    );
}

/// Appends `piece` to `text` with one space between non-empty parts.
fn join(text: &mut String, piece: &str) {
    if !text.is_empty() && !piece.is_empty() {
        text.push(' ');
    }
    text.push_str(piece);
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
}
