//! Greedy decoding of one 30 s window, as Whisper's `DecodingTask` does at temperature 0 without
//! timestamps: prompt, then the most likely token each step under the suppression rules until
//! end of text or [`MAX_TOKENS`], then Whisper's no-speech test (made stricter for phone noise,
//! see `NO_SPEECH_CERTAIN`). No temperature fallback or beam search: one greedy pass keeps a
//! turn's cost fixed.
//!
//! Inference runs on a dedicated pool of [`INFERENCE_THREADS`] threads shared by every call, so
//! transcriptions never take more than that many cores from the gateway however many calls end a
//! turn at once (they queue for the pool instead).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{D, IndexOp, Tensor};

use crate::mel::{HOP, N_FRAMES, SAMPLE_RATE, WINDOW_SAMPLES};
use crate::model::{MAX_TOKENS, Model};

/// Threads inference runs on, for the whole process: 2, the cores of the machines the gateway
/// runs on. The gateway's own work per 20 ms frame is microseconds, so it loses little to two
/// busy threads, while the caller waits less: a 3 s turn took 0.88 s on two idle cores and
/// 1.32 s pinned to one. Concurrent turns share these threads rather than adding their own.
pub const INFERENCE_THREADS: usize = 2;

/// Audio encoded after the end of the samples when the window is fitted to them (samples, 1 s at
/// 16 kHz): Whisper hears the end of the last word and the silence that closes the text.
pub const WINDOW_MARGIN: usize = SAMPLE_RATE as usize;

/// Tokens generated before a fitted window's text is checked for a loop, step by step (a
/// repeated three-word sequence needs at least six words).
const LOOP_CHECK_FROM: usize = 6;

/// Whisper's `no_speech_threshold`: above this probability of "no speech" after the prompt's
/// first token, with a low average log-probability, the window is taken as silence.
const NO_SPEECH_THRESHOLD: f64 = 0.6;
/// Whisper's `logprob_threshold`: average log-probability per token below which a window
/// judged probably silent is dropped.
const LOGPROB_THRESHOLD: f64 = -1.0;
/// Above this probability of "no speech" the window is dropped however confident the text: on
/// line noise tiny.en says a confident "you" with a no-speech probability of 0.94, while short
/// real answers ("Yes.", "No.", "Hi.") measured 0.05–0.35 on the phone path.
const NO_SPEECH_CERTAIN: f64 = 0.8;

/// What one window decoded to.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcription {
    /// The text, untrimmed (Whisper's text starts with a space); empty for no speech.
    pub text: String,
    /// Tokens generated (without prompt and end of text).
    pub tokens: usize,
    /// Probability of the no-speech token after the prompt's first token (0–1).
    pub no_speech_prob: f64,
    /// Mean log-probability per generated token, end of text included.
    pub avg_logprob: f64,
    /// The decoder stopped at its token limit for the audio's length instead of ending the
    /// text, or (a window shorter than 30 s) as soon as the text repeated itself
    /// ([`crate::recognizer::repeats`]): it was looping.
    pub truncated: bool,
}

/// Why a window could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// candle failed (out of memory, or a shape bug).
    #[error("inference failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The inference thread pool could not start.
    #[error("cannot start the inference threads: {0}")]
    Threads(String),
    /// The caller's `cancel` flag was raised (checked between decoder steps).
    #[error("cancelled")]
    Cancelled,
}

static POOL: OnceLock<Result<rayon::ThreadPool, String>> = OnceLock::new();

fn pool() -> Result<&'static rayon::ThreadPool, DecodeError> {
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(INFERENCE_THREADS)
            .thread_name(|i| format!("whisper-{i}"))
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| DecodeError::Threads(e.clone()))
}

impl Model {
    /// Transcribes `samples` (mono, 16 kHz, full scale ±1.0; the first 30 s, the rest is
    /// ignored) on the inference pool.
    ///
    /// # Errors
    /// [`DecodeError`] when candle fails or the pool cannot start.
    /// `min_window` (samples): encode only the audio plus [`WINDOW_MARGIN`], but at least this much (the full
    /// 30 s window when it is [`WINDOW_SAMPLES`]); the encoder's cost is linear in it.
    pub fn transcribe(
        &self,
        samples: &[f32],
        min_window: usize,
    ) -> Result<Transcription, DecodeError> {
        self.transcribe_cancellable(samples, min_window, &AtomicBool::new(false))
    }

    /// [`Model::transcribe`], giving up with [`DecodeError::Cancelled`] at the next decoder
    /// step (tens of ms) once `cancel` is set; the encoder pass, once started, runs to its end.
    ///
    /// # Errors
    /// As [`Model::transcribe`], and [`DecodeError::Cancelled`].
    pub fn transcribe_cancellable(
        &self,
        samples: &[f32],
        min_window: usize,
        cancel: &AtomicBool,
    ) -> Result<Transcription, DecodeError> {
        let samples = &samples[..samples.len().min(WINDOW_SAMPLES)];
        let window =
            (samples.len() + WINDOW_MARGIN).clamp(min_window.min(WINDOW_SAMPLES), WINDOW_SAMPLES);
        pool()?.install(|| self.decode(samples, window, cancel))
    }

    fn decode(
        &self,
        samples: &[f32],
        window: usize,
        cancel: &AtomicBool,
    ) -> Result<Transcription, DecodeError> {
        let mel = self.mel.compute(samples)?;
        // Mel frames of the window, even (the encoder's stride-2 convolution halves them).
        let frames = (window / HOP).div_ceil(2) * 2;
        let mel = if frames < N_FRAMES {
            mel.narrow(2, 0, frames)?
        } else {
            mel
        };
        let mut whisper = self.whisper.clone();
        let audio = whisper.encoder.forward(&mel, true)?;
        let eot = self.vocab.tokens.end_of_text;
        let mut tokens = self.prompt.clone();
        let mut no_speech_prob = 0.0;
        let mut sum_logprob = 0.0;
        // Speech runs at 2–4 tokens a second; far more is the decoder repeating itself, which
        // would cost ~35 ms a token.
        let max_tokens = (16 + samples.len() * 8 / SAMPLE_RATE as usize).min(MAX_TOKENS);
        let mut truncated = true;
        for step in 0..max_tokens {
            if cancel.load(Ordering::Relaxed) {
                return Err(DecodeError::Cancelled);
            }
            let input = Tensor::new(tokens.as_slice(), &self.device)?.unsqueeze(0)?;
            // The cross-attention keys and values of `audio` are computed on the first step and
            // cached; self-attention runs over the whole prefix each step (candle's decoder has
            // no self-attention cache). Measured: ~35 ms per generated token on 2 cores.
            let hidden = whisper.decoder.forward(&input, &audio, step == 0)?;
            if step == 0
                && let Some(no_speech) = self.vocab.tokens.no_speech
            {
                let first = whisper.decoder.final_linear(&hidden.i((..1, ..1))?)?;
                let probs = candle_nn::ops::softmax_last_dim(&first.flatten_all()?)?;
                no_speech_prob = f64::from(probs.i(no_speech as usize)?.to_scalar::<f32>()?);
            }
            let len = hidden.dim(1)?;
            let logits = whisper
                .decoder
                .final_linear(&hidden.i((..1, len - 1..))?)?
                .flatten_all()?;
            let mask = if step == 0 {
                &self.suppress_first
            } else {
                &self.suppress
            };
            let logits = (logits + mask)?;
            let next = logits.argmax(D::Minus1)?.to_scalar::<u32>()?;
            let logprobs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            sum_logprob += f64::from(logprobs.i(next as usize)?.to_scalar::<f32>()?);
            if next == eot {
                truncated = false;
                break;
            }
            tokens.push(next);
            // A window short of Whisper's 30 s has a fallback (`crate::recognizer`): stop as
            // soon as the text repeats itself rather than writing the loop out to the limit.
            if window < WINDOW_SAMPLES
                && step + 1 >= LOOP_CHECK_FROM
                && crate::recognizer::repeats(&self.vocab.decode(&tokens[self.prompt.len()..]))
            {
                break;
            }
        }
        let generated = &tokens[self.prompt.len()..];
        let avg_logprob = sum_logprob / (generated.len() + 1) as f64;
        let silent = no_speech_prob > NO_SPEECH_CERTAIN
            || (no_speech_prob > NO_SPEECH_THRESHOLD && avg_logprob < LOGPROB_THRESHOLD);
        Ok(Transcription {
            text: if silent {
                String::new()
            } else {
                self.vocab.decode(generated)
            },
            tokens: generated.len(),
            no_speech_prob,
            avg_logprob,
            truncated,
        })
    }
}
