//! One turn's audio to text: silence trimmed, the encoder window fitted to the sound, and a
//! guard that re-runs a 10 s window ([`FALLBACK_WINDOW`]), then Whisper's full 30 s one, when the
//! text looks like one of tiny.en's failure modes (a decoder loop, more words than the audio
//! could hold, nothing heard in plain sound). A fitted window's decoder stops as soon as its text
//! repeats itself, so a loop costs a few tokens rather than the token limit. Shared by the
//! `end-of-turn` transcription and the speculative one that runs on a background thread while
//! the caller pauses ([`crate::speculation`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::decoding::{DecodeError, Transcription, WINDOW_MARGIN};
use crate::mel::{SAMPLE_RATE, WINDOW_SAMPLES};
use crate::model::Model;

/// A turn quieter than this RMS (full scale 1.0; −60 dBFS, well under a phone line's noise
/// floor) is silence: it is answered with empty text without running the model, which would
/// otherwise sometimes "hear" a word in nothing.
pub const SILENCE_RMS: f32 = 0.001;

/// Blocks of 20 ms (samples) scanned by [`trim_silence`].
pub const BLOCK: usize = SAMPLE_RATE as usize / 50;

/// Margin of quiet kept before and after the sound (samples, 300 ms).
const TRIM_MARGIN: usize = SAMPLE_RATE as usize * 3 / 10;

/// Most tokens a second of audio plausibly holds: fast speech is 3–4 words (4–5 tokens) a
/// second; a decoder that repeats itself writes far more.
const MAX_TOKENS_PER_SECOND: f32 = 6.0;

/// Tokens allowed on top of [`MAX_TOKENS_PER_SECOND`] (punctuation and short turns: "Yes." is
/// 2 tokens in 0.3 s).
const TOKEN_SLACK: f32 = 8.0;

/// Sound at least this long (ms) that the fitted window hears as nothing is re-heard with the
/// full window: a missed short answer costs a turn, a second look costs one encoder pass.
const EMPTY_BUT_LOUD_MS: usize = 500;

/// The first fallback window (samples, 10 s): a suspect fitted-window result is heard again
/// with this much encoded, and only a suspect result of that with Whisper's full 30 s. Measured
/// on the phone fixtures, tiny.en looped at every window up to 5.7 s on a 2.7 s question and at
/// none from 7.7 s; 10 s costs about half of 30 s (260–530 ms against 890–1550 ms for 1.6–2.9 s
/// questions on two busy cores).
pub const FALLBACK_WINDOW: usize = 10 * SAMPLE_RATE as usize;

/// Why a fitted-window result is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspect {
    /// The decoder reached its token limit without ending the text.
    Truncated,
    /// More tokens than [`MAX_TOKENS_PER_SECOND`] allows for the audio's length.
    TooManyTokens,
    /// A word sequence repeats (the shape of tiny.en's loops: "…opening hours? Well, you're
    /// opening hours. So what…"), standing in for Whisper's gzip compression-ratio test.
    Repeats,
    /// No text for audio with sound in it.
    EmptyButLoud,
}

/// What one turn was heard as, and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Recognized {
    /// Trimmed text; empty when nothing was said.
    pub text: String,
    /// Milliseconds of audio transcribed (after trimming).
    pub audio_ms: u64,
    /// Wall time of the transcription.
    pub took: Duration,
    /// Tokens of the answer.
    pub tokens: usize,
    /// The fitted window's result was suspect and a larger window's ([`FALLBACK_WINDOW`], then the
    /// full 30 s) is the answer.
    pub fell_back: Option<Suspect>,
}

impl Recognized {
    fn empty() -> Self {
        Self {
            text: String::new(),
            audio_ms: 0,
            took: Duration::ZERO,
            tokens: 0,
            fell_back: None,
        }
    }
}

/// The model and the window policy of one call; cheap to clone onto a background thread.
#[derive(Clone)]
pub struct Recognizer {
    model: Arc<Model>,
    /// Smallest encoder window (samples); [`WINDOW_SAMPLES`] encodes Whisper's full 30 s and
    /// turns the guard off (there is nothing bigger to fall back to).
    min_window: usize,
}

impl Recognizer {
    /// A recognizer on `model` encoding at least `min_window` samples (clamped to 30 s).
    pub fn new(model: Arc<Model>, min_window: usize) -> Self {
        Self {
            model,
            min_window: min_window.min(WINDOW_SAMPLES),
        }
    }

    /// Transcribes `all` (mono, [`SAMPLE_RATE`] Hz, ±1.0; a turn of at most 30 s): silence
    /// around the sound trimmed, the fitted window first, the full one when that looks wrong.
    ///
    /// # Errors
    /// [`DecodeError`] when inference fails or `cancel` was set.
    pub fn recognize(&self, all: &[f32], cancel: &AtomicBool) -> Result<Recognized, DecodeError> {
        let samples = trim_silence(all);
        if rms(samples) < SILENCE_RMS {
            return Ok(Recognized::empty());
        }
        let started = Instant::now();
        let seconds = samples.len() as f32 / SAMPLE_RATE as f32;
        let loud = loud_ms(samples);
        let mut result = self
            .model
            .transcribe_cancellable(samples, self.min_window, cancel)?;
        let mut fell_back = None;
        let fitted = (samples.len() + WINDOW_MARGIN).max(self.min_window);
        for window in [FALLBACK_WINDOW, WINDOW_SAMPLES] {
            if window <= fitted.min(WINDOW_SAMPLES) {
                continue; // that window was the one just tried (or a smaller one)
            }
            let Some(why) = suspect(&result, seconds, loud) else {
                break;
            };
            fell_back = Some(why);
            result = self.model.transcribe_cancellable(samples, window, cancel)?;
        }
        Ok(Recognized {
            text: result.text.trim().to_string(),
            audio_ms: samples.len() as u64 * 1000 / u64::from(SAMPLE_RATE),
            took: started.elapsed(),
            tokens: result.tokens,
            fell_back,
        })
    }
}

/// Whether a fitted-window `result` for `seconds` of audio, `loud_ms` of it sound, looks like a
/// failure the full window avoids.
pub fn suspect(result: &Transcription, seconds: f32, loud_ms: usize) -> Option<Suspect> {
    if result.truncated && !result.text.trim().is_empty() {
        return Some(Suspect::Truncated);
    }
    if result.tokens as f32 > TOKEN_SLACK + MAX_TOKENS_PER_SECOND * seconds {
        return Some(Suspect::TooManyTokens);
    }
    if repeats(&result.text) {
        return Some(Suspect::Repeats);
    }
    if result.text.trim().is_empty() && loud_ms >= EMPTY_BUT_LOUD_MS {
        return Some(Suspect::EmptyButLoud);
    }
    None
}

/// Whether `text` repeats itself: a sequence of three words said twice, or two different pairs
/// of words each said twice (case and punctuation ignored).
pub fn repeats(text: &str) -> bool {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect();
    let mut triples: HashMap<&[String], usize> = HashMap::new();
    for t in words.windows(3) {
        let n = triples.entry(t).or_default();
        *n += 1;
        if *n > 1 {
            return true;
        }
    }
    let mut pairs: HashMap<&[String], usize> = HashMap::new();
    for p in words.windows(2) {
        *pairs.entry(p).or_default() += 1;
    }
    pairs.values().filter(|&&n| n > 1).count() >= 2
}

/// Milliseconds of `samples` in 20 ms blocks louder than [`SILENCE_RMS`] × 3 (−50 dBFS).
fn loud_ms(samples: &[f32]) -> usize {
    samples
        .chunks(BLOCK)
        .filter(|b| rms(b) >= SILENCE_RMS * 3.0)
        .count()
        * 20
}

/// `samples` without their leading and trailing blocks quieter than [`SILENCE_RMS`] × 3
/// (−50 dBFS), keeping [`TRIM_MARGIN`] on each side; all of it when nothing is louder.
pub fn trim_silence(samples: &[f32]) -> &[f32] {
    let loud = |block: &[f32]| rms(block) >= SILENCE_RMS * 3.0;
    let blocks: Vec<&[f32]> = samples.chunks(BLOCK).collect();
    let (Some(first), Some(last)) = (
        blocks.iter().position(|b| loud(b)),
        blocks.iter().rposition(|b| loud(b)),
    ) else {
        return samples;
    };
    let start = (first * BLOCK).saturating_sub(TRIM_MARGIN);
    let end = ((last + 1) * BLOCK + TRIM_MARGIN).min(samples.len());
    &samples[start..end]
}

/// Root mean square of `samples` (0 for none).
pub fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(text: &str, tokens: usize, truncated: bool) -> Transcription {
        Transcription {
            text: text.into(),
            tokens,
            no_speech_prob: 0.0,
            avg_logprob: -0.2,
            truncated,
        }
    }

    #[test]
    fn the_loop_tiny_en_hit_at_a_one_second_window_is_suspect() {
        // Measured through the gateway: a 2.8 s question at a 1 s window.
        let looped = " So what are your opening hours? Well, you're opening hours. So what";
        assert!(repeats(looped));
        assert_eq!(
            suspect(&heard(looped, 17, false), 2.8, 2000),
            Some(Suspect::Repeats)
        );
        assert_eq!(
            suspect(&heard(" So so so so", 40, true), 2.8, 2000),
            Some(Suspect::Truncated)
        );
        assert_eq!(
            suspect(&heard(" Hello there friend", 30, false), 2.0, 2000),
            Some(Suspect::TooManyTokens)
        );
        assert_eq!(
            suspect(&heard("", 0, false), 2.0, 1500),
            Some(Suspect::EmptyButLoud)
        );
    }

    #[test]
    fn ordinary_turns_are_trusted() {
        for (text, tokens, seconds) in [
            (" What are your opening hours?", 7, 2.0),
            (" Where is order 1043?", 8, 2.5),
            (" Yes.", 2, 0.4),
            (
                " My name is John Smith and I am calling about my order. It was supposed to \
                 arrive last Tuesday, but nothing has come yet. Could you please check the \
                 delivery status for me?",
                40,
                12.0,
            ),
        ] {
            assert_eq!(
                suspect(&heard(text, tokens, false), seconds, 1000),
                None,
                "{text}"
            );
        }
        // A quiet click heard as nothing is fine.
        assert_eq!(suspect(&heard("", 0, false), 0.6, 100), None);
    }

    #[test]
    fn repeated_words_alone_are_not_a_loop() {
        assert!(!repeats("No, no, I said the blue one."));
        assert!(!repeats("one zero four three"));
        assert!(repeats("one one two one one two"));
    }

    #[test]
    fn silence_around_the_sound_is_trimmed_to_a_margin() {
        let mut samples = vec![0.0f32; 5 * BLOCK * 50];
        let sound = 100 * BLOCK..110 * BLOCK;
        for s in &mut samples[sound.clone()] {
            *s = 0.1;
        }
        let trimmed = trim_silence(&samples);
        assert_eq!(trimmed.len(), sound.len() + 2 * TRIM_MARGIN);
        assert_eq!(trim_silence(&samples[..BLOCK * 10]).len(), BLOCK * 10);
    }

    #[test]
    fn rms_of_nothing_and_of_a_square_wave() {
        assert_eq!(rms(&[]), 0.0);
        assert!((rms(&[0.5, -0.5, 0.5, -0.5]) - 0.5).abs() < 1e-6);
    }
}
