//! Transcribing while the caller is still in the turn. The host sends `end-of-turn` only after
//! its endpointing silence (hundreds of ms); by then the words are all in. [`Pauses`] watches
//! the turn's level and reports a pause as soon as the audio has been [`PAUSE_MS`] quieter than
//! the turn's speech; a [`Job`] then transcribes the turn so far on a background thread (one at
//! a time per call). At `end-of-turn`, a job whose snapshot has had no sound after it is the
//! answer; otherwise the turn is transcribed again. A job overtaken by new sound is cancelled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::decoding::DecodeError;
use crate::recognizer::{BLOCK, Recognized, Recognizer, SILENCE_RMS, rms};

/// Quiet that makes a pause (ms): longer than the gaps between words (espeak's and people's are
/// under 150 ms), shorter than any endpointing silence a phone agent uses (500–800 ms), so the
/// transcription has the rest of the endpointing silence to run in.
pub const PAUSE_MS: usize = 200;

/// How far under the turn's loudest 20 ms the audio must stay to be quiet (dB): speech
/// syllables vary by 10–15 dB among themselves, and a phone line's noise sits 20 dB or more
/// under the speech at a usable SNR.
pub const PAUSE_DEPTH_DB: f32 = 15.0;

/// Sound needed before a pause is worth transcribing (ms): shorter is a click or a breath.
pub const MIN_SOUND_MS: usize = 200;

/// Watches one turn's level, 20 ms block by block.
#[derive(Debug, Default)]
pub struct Pauses {
    /// Samples of the block in progress.
    block: Vec<f32>,
    /// Samples seen this turn.
    seen: usize,
    /// RMS of the turn's loudest block so far.
    peak: f32,
    /// Blocks that were not quiet.
    sound_blocks: usize,
    /// Quiet blocks since the last sound.
    quiet_run: usize,
    /// Sample index just after the last block that was not quiet (0: none yet).
    sound_end: usize,
}

impl Pauses {
    /// Takes the turn's next samples.
    pub fn push(&mut self, samples: &[f32]) {
        for &s in samples {
            self.block.push(s);
            self.seen += 1;
            if self.block.len() == BLOCK {
                let level = rms(&self.block);
                self.block.clear();
                self.peak = self.peak.max(level);
                let floor = (self.peak * 10f32.powf(-PAUSE_DEPTH_DB / 20.0)).max(SILENCE_RMS * 3.0);
                if level >= floor {
                    self.sound_blocks += 1;
                    self.quiet_run = 0;
                    self.sound_end = self.seen;
                } else {
                    self.quiet_run += 1;
                }
            }
        }
    }

    /// The caller has spoken and has now paused for [`PAUSE_MS`].
    pub fn paused(&self) -> bool {
        self.sound_blocks * 20 >= MIN_SOUND_MS && self.quiet_run * 20 >= PAUSE_MS
    }

    /// Sample index just after the turn's last sound.
    pub fn sound_end(&self) -> usize {
        self.sound_end
    }

    /// The buffer was emptied (a 30 s piece was cut off): indexes restart, the level stays.
    pub fn restart(&mut self) {
        self.seen = 0;
        self.sound_end = 0;
        self.block.clear();
    }
}

/// A transcription of the turn's first `upto` samples, running or done.
pub struct Job {
    /// Samples of the turn it covers.
    pub upto: usize,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Recognized, DecodeError>>>,
    result: Option<Result<Recognized, DecodeError>>,
}

impl Job {
    /// Starts transcribing `samples` (the turn's first `samples.len()`) on a new thread; `None`
    /// when the thread cannot start (the turn is then transcribed at `end-of-turn`).
    pub fn start(recognizer: Recognizer, samples: Vec<f32>) -> Option<Self> {
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let upto = samples.len();
        let thread = std::thread::Builder::new()
            .name("whisper-speculate".into())
            .spawn(move || recognizer.recognize(&samples, &flag))
            .ok()?;
        Some(Self {
            upto,
            cancel,
            thread: Some(thread),
            result: None,
        })
    }

    /// Whether the result is in (without waiting).
    pub fn is_done(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Asks the job to stop at its next decoder step; its result will be `Cancelled`.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// The result, waiting for it; `None` when the job failed, was cancelled or panicked.
    pub fn wait(&mut self) -> Option<&Recognized> {
        if let Some(thread) = self.thread.take() {
            self.result = Some(
                thread
                    .join()
                    .unwrap_or_else(|_| Err(DecodeError::Threads("speculation panicked".into()))),
            );
        }
        self.result.as_ref().and_then(|r| r.as_ref().ok())
    }

    /// Why the job has no result, once done.
    pub fn error(&self) -> Option<&DecodeError> {
        self.result.as_ref().and_then(|r| r.as_ref().err())
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // A dropped job's thread finishes on its own (it owns its samples and the model); stop
        // it so it frees the inference threads sooner.
        self.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: usize, amplitude: f32) -> Vec<f32> {
        (0..ms * 16)
            .map(|i| amplitude * (i as f32 * 0.2).sin())
            .collect()
    }

    #[test]
    fn a_pause_is_quiet_under_the_speech_level_after_enough_sound() {
        let mut p = Pauses::default();
        p.push(&tone(100, 0.3));
        p.push(&tone(300, 0.0));
        assert!(!p.paused(), "100 ms of sound is a click");
        p.push(&tone(400, 0.3));
        assert_eq!(p.sound_end(), 800 * 16);
        p.push(&tone(PAUSE_MS - 20, 0.01));
        assert!(!p.paused(), "not long enough yet");
        p.push(&tone(20, 0.01));
        assert!(p.paused(), "noise 30 dB under the speech is quiet");
        p.push(&tone(20, 0.3));
        assert!(!p.paused(), "speech again");
    }

    #[test]
    fn steady_noise_alone_never_pauses() {
        let mut p = Pauses::default();
        p.push(&tone(2000, 0.02));
        assert!(!p.paused());
    }
}
