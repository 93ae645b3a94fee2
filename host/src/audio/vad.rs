//! Voice activity detection on the caller's audio: one verdict (speech or not) per 20 ms
//! G.711 μ-law frame, for the pipeline orchestrator's endpointing and barge-in.
//!
//! The detector is `earshot` (a small neural VAD in pure Rust; no false positives on line noise
//! in our measurements, see `DEPENDENCIES.md`). It takes 256-sample (16 ms) frames at 16 kHz, so
//! each 8 kHz frame is decoded, upsampled to 16 kHz ([`Resampler`], 10 ms of filter delay) and
//! cut into 256-sample windows; a 20 ms frame yields one or two scores and counts as speech when
//! its best score passes the threshold. Hysteresis keeps a word's quiet tail from flickering:
//! speech starts at [`ONSET_SCORE`] and continues while the score stays above
//! [`HOLD_SCORE`].
//!
//! `earshot` alone scores steady noise as speech once it is loud enough: pink noise at −45 dBFS
//! and louder (a caller outside, a fan) scores above the hold threshold, so noise that starts
//! before or during a question held the turn open until it stopped (issue 18). An adaptive
//! [`NoiseFloor`] gates the network: a frame is speech only when its level is at least
//! [`SPEECH_MARGIN_DB`] above the background, tracked as the quietest level of the last
//! [`FLOOR_WINDOW_FRAMES`] and, when the level has stayed steady for [`STEADY_FRAMES`], as that
//! steady level. Speech rises and falls by 10–30 dB between syllables; steady noise does not.
//! `cargo bench -p switchboard-tests --bench vad` measures both against Silero VAD.

use super::mulaw;
use super::resample::{ResampleError, Resampler};
use super::{FRAME_SAMPLES, TWILIO_SAMPLE_RATE};

/// Sample rate `earshot` works at (Hz).
pub const VAD_SAMPLE_RATE: u32 = 16_000;

/// Samples per `earshot` window (16 ms at 16 kHz).
pub const WINDOW_SAMPLES: usize = 256;

/// Score (0–1) at which silence turns into speech. Measured through this path (μ-law, 8 → 16
/// kHz): hiss at -40 dBFS peaks near 0.48, speech holds above 0.8.
pub const ONSET_SCORE: f32 = 0.6;

/// Score (0–1) above which speech stays speech.
pub const HOLD_SCORE: f32 = 0.45;

/// Level (dBFS) below which a frame counts as digital silence: the floor of the level scale.
pub const SILENCE_DBFS: f32 = -90.0;

/// Frames (20 ms each) the level is averaged over before the floor and the gate see it:
/// 100 ms, so one quiet or loud 20 ms frame of noise neither moves the floor nor opens the gate.
pub const LEVEL_FRAMES: usize = 5;

/// Frames (20 ms each) of history the background floor is the quietest of: 1 s, longer than
/// the pauses between a sentence's words (so speech never raises the floor to itself) and short
/// enough that noise that starts mid-turn is learned within a second.
pub const FLOOR_WINDOW_FRAMES: usize = 50;

/// Frames (20 ms each) of level within [`STEADY_RANGE_DB`] after which that level is taken as the
/// background at once: 400 ms, longer than a sustained vowel, so noise that starts just before
/// or just after the caller's speech is learned without waiting for [`FLOOR_WINDOW_FRAMES`].
pub const STEADY_FRAMES: usize = 20;

/// Spread (dB) of the 100 ms level within which audio counts as steady. Pink noise stays within
/// 3 dB; speech swings 10–30 dB between syllables.
pub const STEADY_RANGE_DB: f32 = 6.0;

/// How far (dB) above the background floor a frame must be to count as speech: above steady
/// noise's own swing ([`STEADY_RANGE_DB`]), below a quiet syllable at 10 dB SNR.
pub const SPEECH_MARGIN_DB: f32 = 6.0;

/// One frame's loudness against the background, in dBFS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    /// The 100 ms level ([`LEVEL_FRAMES`]) ending with this frame (dBFS).
    pub level: f32,
    /// The background floor learned before this frame (dBFS).
    pub floor: f32,
}

/// What a speech segment (a run of speech frames) turned out to be, once it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// The level fell after it, or speech followed within [`SEGMENT_VERDICT_FRAMES`]: the
    /// caller spoke.
    Speech,
    /// The level after it stayed within [`NOISE_SEGMENT_DB`] of its loudest for
    /// [`SEGMENT_VERDICT_FRAMES`]: noise the floor had not learned when it started (the first
    /// ≈ 300–500 ms of steady noise that starts on a quiet line or just after the caller's
    /// speech), which ended when the floor learned it — not the caller.
    Noise,
}

/// Frames (20 ms each) after a speech segment ends before the detector tells what it was
/// ([`Vad::segment_ended`]): 200 ms, enough for the 100 ms level to leave the segment behind, and
/// well within the pipeline's endpointing silence (600 ms by default), which the verdict has to
/// beat to keep a noise segment from becoming a turn.
pub const SEGMENT_VERDICT_FRAMES: usize = 10;

/// A speech segment is [`Segment::Noise`] when the level after it stays within this many dB
/// (100 ms level) of its loudest: the background went on as loud as the "speech" was. Steady
/// noise's 100 ms level swings by about 3 dB (pink) to 8 dB (street); speech ends with a fall of
/// 15 dB and more at 10 dB SNR.
pub const NOISE_SEGMENT_DB: f32 = 10.0;

/// The caller's background level, learned from the audio itself (no calibration, no settings).
#[derive(Debug, Clone, Default)]
pub struct NoiseFloor {
    /// Mean square of the last [`LEVEL_FRAMES`] frames (PCM16 units squared).
    powers: std::collections::VecDeque<f64>,
    /// The 100 ms level (dBFS) of the last [`FLOOR_WINDOW_FRAMES`] frames, newest last.
    levels: std::collections::VecDeque<f32>,
}

impl NoiseFloor {
    /// Takes one frame's PCM16 samples (8 kHz) and returns whether it stands out from the
    /// background: its 100 ms level at least [`SPEECH_MARGIN_DB`] above the floor learned
    /// before it.
    pub fn loud(&mut self, pcm: &[i16]) -> bool {
        let Level { level, floor } = self.push(pcm);
        level >= floor + SPEECH_MARGIN_DB
    }

    /// Takes one frame's PCM16 samples (8 kHz) and returns its 100 ms level and the floor
    /// learned before it.
    pub fn push(&mut self, pcm: &[i16]) -> Level {
        let power = if pcm.is_empty() {
            0.0
        } else {
            pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64
        };
        if self.powers.len() == LEVEL_FRAMES {
            self.powers.pop_front();
        }
        self.powers.push_back(power);
        let mean = self.powers.iter().sum::<f64>() / self.powers.len() as f64;
        let level = ((10.0 * (mean / 32768f64.powi(2)).log10()) as f32).max(SILENCE_DBFS);
        let floor = self.floor().unwrap_or(level);
        if self.levels.len() == FLOOR_WINDOW_FRAMES {
            self.levels.pop_front();
        }
        self.levels.push_back(level);
        Level { level, floor }
    }

    /// The background level (dBFS) learned so far; `None` before the first frame.
    pub fn floor(&self) -> Option<f32> {
        let quietest = self.levels.iter().copied().reduce(f32::min)?;
        let recent = self.levels.iter().rev().take(STEADY_FRAMES);
        let (lo, hi) = recent.fold((f32::MAX, f32::MIN), |(lo, hi), &l| (lo.min(l), hi.max(l)));
        if self.levels.len() >= STEADY_FRAMES && hi - lo <= STEADY_RANGE_DB {
            Some(quietest.max(lo))
        } else {
            Some(quietest)
        }
    }
}

/// One call's voice activity detector. About 9 KiB of state.
pub struct Vad {
    detector: Box<earshot::Detector>,
    upsampler: Resampler,
    pcm: Vec<i16>,
    /// 16 kHz samples not yet scored (fewer than one window between frames).
    pending: Vec<i16>,
    floor: NoiseFloor,
    speaking: bool,
    /// The loudest 100 ms level (dBFS) of the speech segment in progress.
    segment_peak: f32,
    /// The last segment, ended and waiting for its verdict: its loudest 100 ms level (dBFS),
    /// frames since it ended, the quietest 100 ms level (dBFS) since.
    unjudged: Option<(f32, usize, f32)>,
    /// What the segment judged on the last frame was.
    ended: Option<Segment>,
}

impl std::fmt::Debug for Vad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vad")
            .field("speaking", &self.speaking)
            .finish_non_exhaustive()
    }
}

impl Vad {
    /// A detector for one call's 8 kHz μ-law audio.
    ///
    /// # Errors
    /// The upsampler could not be built (it can always be for 8 → 16 kHz).
    pub fn new() -> Result<Self, ResampleError> {
        Ok(Self {
            detector: earshot::Detector::default_boxed(),
            upsampler: Resampler::new(TWILIO_SAMPLE_RATE, VAD_SAMPLE_RATE)?,
            pcm: Vec::with_capacity(FRAME_SAMPLES),
            pending: Vec::with_capacity(2 * WINDOW_SAMPLES),
            floor: NoiseFloor::default(),
            speaking: false,
            segment_peak: SILENCE_DBFS,
            unjudged: None,
            ended: None,
        })
    }

    /// Scores one frame of G.711 μ-law (any length; Twilio's are 160 bytes, 20 ms) and returns
    /// whether the caller is speaking: the network says so and the frame stands out from the
    /// background ([`NoiseFloor`]).
    ///
    /// # Errors
    /// The upsampler failed (it does not on well-formed input).
    pub fn frame(&mut self, mulaw_in: &[u8]) -> Result<bool, ResampleError> {
        self.pcm.clear();
        mulaw::decode_into(mulaw_in, &mut self.pcm);
        let Level { level, floor } = self.floor.push(&self.pcm);
        let loud = level >= floor + SPEECH_MARGIN_DB;
        self.upsampler.process(&self.pcm, &mut self.pending)?;
        let mut best: Option<f32> = None;
        let mut start = 0;
        while self.pending.len() - start >= WINDOW_SAMPLES {
            let score = self
                .detector
                .predict_i16(&self.pending[start..start + WINDOW_SAMPLES]);
            best = Some(best.map_or(score, |b: f32| b.max(score)));
            start += WINDOW_SAMPLES;
        }
        self.pending.drain(..start);
        let was_speaking = self.speaking;
        if let Some(score) = best {
            let threshold = if self.speaking {
                HOLD_SCORE
            } else {
                ONSET_SCORE
            };
            self.speaking = score >= threshold;
        }
        // Below the floor's margin a frame is never speech, and speech that stops there must
        // start again at the onset score.
        self.speaking &= loud;
        self.ended = None;
        if self.speaking {
            if !was_speaking {
                self.segment_peak = level;
                // Speech again before the last segment's verdict: that one was speech too (or
                // noise just before the caller spoke, which does no harm in their turn).
                if self.unjudged.take().is_some() {
                    self.ended = Some(Segment::Speech);
                }
            }
            self.segment_peak = self.segment_peak.max(level);
        } else {
            if was_speaking {
                self.unjudged = Some((self.segment_peak, 0, f32::MAX));
            }
            if let Some((peak, frames, quietest)) = &mut self.unjudged {
                *frames += 1;
                *quietest = quietest.min(level);
                if *frames >= SEGMENT_VERDICT_FRAMES {
                    self.ended = Some(if *quietest >= *peak - NOISE_SEGMENT_DB {
                        Segment::Noise
                    } else {
                        Segment::Speech
                    });
                    self.unjudged = None;
                }
            }
        }
        Ok(self.speaking)
    }

    /// What the last speech segment was, on the frame the detector could tell:
    /// [`SEGMENT_VERDICT_FRAMES`] after it ended, or when speech began again before that
    /// ([`Segment::Speech`]). `None` on every other frame.
    pub fn segment_ended(&self) -> Option<Segment> {
        self.ended
    }

    /// Whether the last frame was speech.
    pub fn speaking(&self) -> bool {
        self.speaking
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(pcm: &[i16]) -> Vec<Vec<u8>> {
        pcm.chunks(FRAME_SAMPLES)
            .map(|c| {
                let mut out = Vec::new();
                mulaw::encode_into(c, &mut out);
                out.resize(FRAME_SAMPLES, mulaw::SILENCE);
                out
            })
            .collect()
    }

    #[test]
    fn silence_and_line_noise_are_not_speech() {
        let mut vad = Vad::new().expect("vad");
        for f in frames(&vec![0; 8000]) {
            assert!(!vad.frame(&f).expect("frame"));
        }
        // Steady hiss at about -40 dBFS on a line (a xorshift generator: deterministic).
        let mut vad = Vad::new().expect("vad");
        let mut x: u32 = 0x9E37_79B9;
        let noise: Vec<i16> = (0..16000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                ((x % 600) as i16) - 300
            })
            .collect();
        let speech = frames(&noise)
            .iter()
            .filter(|f| vad.frame(f).expect("frame"))
            .count();
        assert!(
            speech < 3,
            "line noise scored as speech in {speech} of 100 frames"
        );
    }

    /// Pink noise (Paul Kellet's refined filter over a xorshift white source): deterministic,
    /// `n` samples at `dbfs` RMS.
    fn pink_noise(n: usize, dbfs: f64) -> Vec<i16> {
        let mut x: u32 = 0x2545_F491;
        let mut b = [0f64; 7];
        let raw: Vec<f64> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let white = f64::from(x) / f64::from(u32::MAX) * 2.0 - 1.0;
                b[0] = 0.99886 * b[0] + white * 0.0555179;
                b[1] = 0.99332 * b[1] + white * 0.0750759;
                b[2] = 0.96900 * b[2] + white * 0.1538520;
                b[3] = 0.86650 * b[3] + white * 0.3104856;
                b[4] = 0.55000 * b[4] + white * 0.5329522;
                b[5] = -0.7616 * b[5] - white * 0.0168980;
                let out = b.iter().sum::<f64>() + white * 0.5362;
                b[6] = white * 0.115926;
                out
            })
            .collect();
        let rms = (raw.iter().map(|v| v * v).sum::<f64>() / n as f64).sqrt();
        let gain = 32768.0 * 10f64.powf(dbfs / 20.0) / rms;
        raw.iter().map(|v| (v * gain).round() as i16).collect()
    }

    /// The question, with pink noise at 20 dB SNR starting 1 s before it and going on 3 s
    /// after: the detector's speech ends with the question, not with the noise.
    #[test]
    fn noise_around_speech_does_not_hold_the_turn_open() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/speech/hours-question.wav");
        let mut reader = hound::WavReader::open(&path).expect("fixture");
        let speech: Vec<i16> = reader
            .samples::<i16>()
            .map(|s| s.expect("sample"))
            .collect();
        // The question's RMS is about -21 dBFS: 20 dB SNR is noise at -41 dBFS.
        let lead = 8000;
        let noise = pink_noise(lead + speech.len() + 3 * 8000, -41.0);
        let mut mixed = noise.clone();
        for (m, s) in mixed[lead..].iter_mut().zip(&speech) {
            *m = m.saturating_add(*s);
        }
        let mut vad = Vad::new().expect("vad");
        let verdicts: Vec<bool> = frames(&mixed)
            .iter()
            .map(|f| vad.frame(f).expect("frame"))
            .collect();
        // The question ends 2.34 s into the file.
        let speech_end = (lead + 2340 * 8) / FRAME_SAMPLES;
        let last_speech = verdicts.iter().rposition(|&v| v).unwrap_or(0);
        assert!(
            verdicts[..lead / FRAME_SAMPLES]
                .iter()
                .filter(|&&v| v)
                .count()
                < 3,
            "noise before the question scored as speech"
        );
        assert!(
            last_speech <= speech_end + 15,
            "speech held {} ms past the question's end",
            (last_speech.saturating_sub(speech_end)) * 20
        );
    }

    /// Pink noise loud enough that `earshot` alone scores it as speech throughout (−35 dBFS),
    /// starting abruptly after a quiet line: the floor learns it within half a second and no
    /// frame after that is speech.
    #[test]
    fn steady_noise_from_a_quiet_line_is_learned_as_background() {
        let mut pcm = vec![0i16; 8000];
        pcm.extend(pink_noise(8 * 8000, -35.0));
        let mut vad = Vad::new().expect("vad");
        let verdicts: Vec<bool> = frames(&pcm)
            .iter()
            .map(|f| vad.frame(f).expect("frame"))
            .collect();
        let learned = 50 + (STEADY_FRAMES + LEVEL_FRAMES + 5);
        assert!(
            !verdicts[learned..].iter().any(|&v| v),
            "steady noise still speech after it was learned: {} frames",
            verdicts[learned..].iter().filter(|&&v| v).count()
        );
    }

    fn question() -> Vec<i16> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/speech/hours-question.wav");
        let mut reader = hound::WavReader::open(&path).expect("fixture");
        reader
            .samples::<i16>()
            .map(|s| s.expect("sample"))
            .collect()
    }

    /// Each frame's verdict and segment verdict.
    fn run(pcm: &[i16]) -> Vec<(bool, Option<Segment>)> {
        let mut vad = Vad::new().expect("vad");
        frames(pcm)
            .iter()
            .map(|f| {
                let speech = vad.frame(f).expect("frame");
                (speech, vad.segment_ended())
            })
            .collect()
    }

    /// Steady noise from a quiet line reads as speech until the floor learns it; that segment
    /// is then judged noise, [`SEGMENT_VERDICT_FRAMES`] after it ended.
    #[test]
    fn the_onset_of_steady_noise_is_judged_noise() {
        let mut pcm = vec![0i16; 8000];
        pcm.extend(pink_noise(4 * 8000, -35.0));
        let verdicts = run(&pcm);
        let ended: Vec<(usize, Segment)> = verdicts
            .iter()
            .enumerate()
            .filter_map(|(i, (_, s))| s.map(|s| (i, s)))
            .collect();
        assert!(!ended.is_empty(), "the noise's onset read as speech");
        assert!(ended.iter().all(|(_, s)| *s == Segment::Noise), "{ended:?}");
        let last_speech = verdicts.iter().rposition(|(v, _)| *v).unwrap_or(0);
        assert_eq!(ended[0].0, last_speech + SEGMENT_VERDICT_FRAMES);
    }

    /// The question's segments are speech, on a quiet line and with pink noise at 20 dB SNR
    /// starting 200 ms after it; the noise's own segment (before the floor learns it) is noise.
    #[test]
    fn speech_is_judged_speech_and_noise_after_it_noise() {
        let speech = question();
        let mut pcm = speech.clone();
        pcm.extend(vec![0; 8000]);
        let clean = run(&pcm);
        let judged: Vec<Segment> = clean.iter().filter_map(|(_, s)| *s).collect();
        assert!(!judged.is_empty());
        assert!(judged.iter().all(|s| *s == Segment::Speech), "{judged:?}");

        // The question ends 2.34 s into the file.
        let noise_from = 2540 * 8;
        let mut pcm = speech.clone();
        pcm.resize(noise_from, 0);
        pcm.extend(pink_noise(3 * 8000, -41.0));
        let noisy = run(&pcm);
        // Verdicts on the question's segments come up to SEGMENT_VERDICT_FRAMES after it.
        let after = noise_from / FRAME_SAMPLES + SEGMENT_VERDICT_FRAMES;
        let before: Vec<Segment> = noisy[..after].iter().filter_map(|(_, s)| *s).collect();
        assert!(before.iter().all(|s| *s == Segment::Speech), "{before:?}");
        let later: Vec<Segment> = noisy[after..].iter().filter_map(|(_, s)| *s).collect();
        assert!(
            later.iter().all(|s| *s == Segment::Noise),
            "noise after the question judged {later:?}"
        );
    }

    /// The floor: the quietest level of the window, or the level that has stayed steady.
    #[test]
    fn noise_floor_tracks_steady_level_and_gates_frames_near_it() {
        let mut floor = NoiseFloor::default();
        assert_eq!(floor.floor(), None);
        let tone = |amp: i16| vec![amp; 160];
        for _ in 0..STEADY_FRAMES + LEVEL_FRAMES {
            floor.loud(&tone(100));
        }
        let learned = floor.floor().expect("floor");
        assert!((learned + 50.3).abs() < 0.5, "floor {learned} dBFS");
        assert!(
            !floor.loud(&tone(150)),
            "3.5 dB above the floor is not speech"
        );
        let mut floor = NoiseFloor::default();
        floor.loud(&tone(0));
        assert!(
            floor.loud(&tone(3000)),
            "a voice on a silent line stands out"
        );
    }

    #[test]
    fn recorded_speech_is_speech_and_silence_after_it_is_not() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/speech/hours-question.wav");
        let mut reader = hound::WavReader::open(&path).expect("fixture");
        let spec = reader.spec();
        assert_eq!(spec.sample_rate, 8000, "fixture is 8 kHz");
        let pcm: Vec<i16> = reader
            .samples::<i16>()
            .map(|s| s.expect("sample"))
            .collect();
        let mut vad = Vad::new().expect("vad");
        let verdicts: Vec<bool> = frames(&pcm)
            .iter()
            .map(|f| vad.frame(f).expect("frame"))
            .collect();
        let speech = verdicts.iter().filter(|&&s| s).count();
        assert!(
            speech * 2 > verdicts.len() / 2,
            "only {speech} of {} frames of speech scored as speech",
            verdicts.len()
        );
        let tail: Vec<bool> = frames(&vec![0; 8000])
            .iter()
            .map(|f| vad.frame(f).expect("frame"))
            .collect();
        assert!(
            !tail[10..].iter().any(|&s| s),
            "silence after speech stays speech"
        );
    }
}
