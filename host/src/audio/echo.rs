//! Echo-aware barge-in: tells the caller's speech from the echo of the agent's own audio.
//!
//! A phone line returns part of what it plays: the hybrid of an analogue line, a speakerphone's
//! microphone hearing its loudspeaker. The agent's reply comes back in the caller's audio some
//! 60–250 ms later (plus the network's round trip), weaker by the line's *echo return loss*
//! (ERL, in the terms of ITU-T G.168). A voice activity detector hears that echo as speech — it
//! is speech — and without this gate the agent interrupts itself on its own words, and the
//! recognizer transcribes them.
//!
//! The host knows exactly what it played and when (the playback clock), so it needs no adaptive
//! filter: [`EchoGate`] keeps the level of every 20 ms frame sent to the caller for
//! [`ECHO_WINDOW`], and judges each caller frame against the loudest of them. The frame is the
//! caller's own sound only when it is louder than the loudest echo the line can return of that
//! audio: `loudest played level + echo return + `[`MARGIN_DB`]. The echo return starts at
//! [`PRIOR_ECHO_RETURN_DB`] (−20 dB: the strongest echo the gateway promises to ride out) and
//! then follows the line: it tracks the peak of what came back while only echo could have (fast
//! up, slowly down), so a quiet line makes the agent easier to
//! interrupt and an echoing one harder.
//!
//! A frame judged echo is not speech for barge-in and endpointing, and reaches the recognizer as
//! silence (the non-linear processing of an echo suppressor), so the agent's words are never
//! transcribed as the caller's. Where the agent played nothing within the window the gate is
//! open: every frame is the caller's.
//!
//! Measured with the test phone (`tests/e2e/echo.rs`): the agent's recorded-voice reply fed back
//! at −20, −30 and −40 dB with 60 and 250 ms of delay cuts nothing, while a caller speaking over
//! the same echo still clears playback within 100 ms of their speech onset.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::FRAME_MS;
use super::mulaw;

/// How long a played frame can still come back as echo: the line's echo path (up to 250 ms on
/// the lines we test) plus the network's round trip to the caller's phone and back, plus one
/// frame of framing (ms of wall time after the frame began to play).
pub const ECHO_WINDOW: Duration = Duration::from_millis(500);

/// How far (dB) above the expected echo a caller frame must be to count as the caller's:
/// covers the frame-to-frame spread of the echo's level around its estimate.
pub const MARGIN_DB: f32 = 6.0;

/// The echo return assumed before the line has been heard (dB, relative to what was played): the
/// strongest echo the gateway rides out without a false barge-in.
pub const PRIOR_ECHO_RETURN_DB: f32 = -20.0;

/// How fast the echo return estimate falls when the line returns less (dB per 20 ms frame;
/// 5 dB a second).
pub const ECHO_RETURN_DECAY_DB: f32 = 0.1;

/// How fast the echo return estimate rises when the line returns more (dB per 20 ms frame).
pub const ECHO_RETURN_ATTACK_DB: f32 = 1.0;

/// The echo return estimate never falls below this (dB): a line this quiet has no echo to speak
/// of, and a floor keeps a long silent stretch from making every breath an interruption.
pub const MIN_ECHO_RETURN_DB: f32 = -45.0;

/// The echo return estimate never rises above this (dB): an echo louder than this is not echo.
pub const MAX_ECHO_RETURN_DB: f32 = -6.0;

/// Played audio quieter than this (dBFS) cannot return an echo worth gating: silence and
/// comfort noise between the agent's words.
pub const QUIET_DBFS: f32 = -60.0;

/// Most frames the gate remembers: [`ECHO_WINDOW`] and the playback clock's 100 ms lead are
/// about 31; a bound keeps a burst from growing it.
const MAX_PLAYED: usize = 64;

/// What a caller frame is, next to what the agent played.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The agent played nothing audible within [`ECHO_WINDOW`]: the frame is the caller's.
    Open,
    /// No louder than the echo of what the agent played: not the caller's speech.
    Echo,
    /// Louder than any echo of what the agent played: the caller's own sound.
    Caller,
}

/// One frame sent to the caller.
#[derive(Debug, Clone, Copy)]
struct Played {
    /// When it starts playing on the caller's phone (the playback clock's estimate).
    at: Instant,
    /// Its level (dBFS).
    dbfs: f32,
}

/// One call's echo gate. Owned by the call task; about 1 KiB.
#[derive(Debug)]
pub struct EchoGate {
    played: VecDeque<Played>,
    /// The line's echo return estimate (dB, negative).
    echo_return_db: f32,
    /// Scratch for decoding.
    pcm: Vec<i16>,
}

impl Default for EchoGate {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoGate {
    /// A gate for a line not heard yet.
    pub fn new() -> Self {
        Self {
            played: VecDeque::with_capacity(MAX_PLAYED),
            echo_return_db: PRIOR_ECHO_RETURN_DB,
            pcm: Vec::with_capacity(super::FRAME_SAMPLES),
        }
    }

    /// The line's echo return as estimated so far (dB, relative to the played audio).
    pub fn echo_return_db(&self) -> f32 {
        self.echo_return_db
    }

    /// Notes one frame of G.711 μ-law sent to the caller that starts playing at `plays_at`.
    pub fn played(&mut self, mulaw_frame: &[u8], plays_at: Instant) {
        let dbfs = self.level(mulaw_frame);
        if self.played.len() == MAX_PLAYED {
            self.played.pop_front();
        }
        self.played.push_back(Played { at: plays_at, dbfs });
    }

    /// Playback was cleared at `now`: frames that had not started playing never will.
    pub fn cleared(&mut self, now: Instant) {
        while self.played.back().is_some_and(|p| p.at > now) {
            self.played.pop_back();
        }
    }

    /// Judges one frame of the caller's G.711 μ-law audio, arrived at `now`.
    pub fn judge(&mut self, mulaw_frame: &[u8], now: Instant) -> Verdict {
        self.forget_before(now);
        let loudest = self
            .played
            .iter()
            .filter(|p| p.at <= now)
            .map(|p| p.dbfs)
            .fold(f32::NEG_INFINITY, f32::max);
        if loudest < QUIET_DBFS {
            return Verdict::Open;
        }
        let heard = self.level(mulaw_frame);
        let returned = heard - loudest;
        if returned > self.echo_return_db + MARGIN_DB {
            return Verdict::Caller;
        }
        // Only echo (and the line's noise) could be in this frame: follow its level, up by at
        // most [`ECHO_RETURN_ATTACK_DB`] a frame (so a caller talking softly cannot ratchet the
        // bar up), down by [`ECHO_RETURN_DECAY_DB`].
        let step =
            (returned - self.echo_return_db).clamp(-ECHO_RETURN_DECAY_DB, ECHO_RETURN_ATTACK_DB);
        self.echo_return_db =
            (self.echo_return_db + step).clamp(MIN_ECHO_RETURN_DB, MAX_ECHO_RETURN_DB);
        Verdict::Echo
    }

    /// Drops frames that finished playing more than [`ECHO_WINDOW`] before `now`.
    fn forget_before(&mut self, now: Instant) {
        let frame = Duration::from_millis(FRAME_MS);
        while self
            .played
            .front()
            .is_some_and(|p| p.at + frame + ECHO_WINDOW < now)
        {
            self.played.pop_front();
        }
    }

    /// RMS level of a μ-law frame (dBFS; −100 for digital silence).
    fn level(&mut self, mulaw_frame: &[u8]) -> f32 {
        self.pcm.clear();
        mulaw::decode_into(mulaw_frame, &mut self.pcm);
        level_dbfs(&self.pcm)
    }
}

/// RMS level of PCM16 samples in dBFS (full scale 32768); −100 for silence or no samples.
pub fn level_dbfs(pcm: &[i16]) -> f32 {
    if pcm.is_empty() {
        return -100.0;
    }
    let power = pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64;
    if power < 1.0 {
        return -100.0;
    }
    (10.0 * (power / 32768f64.powi(2)).log10()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::FRAME_SAMPLES;

    /// A 20 ms frame of a 300 Hz tone at `dbfs` RMS, as μ-law.
    fn tone(dbfs: f32) -> Vec<u8> {
        let amplitude = 32768.0 * 10f64.powf(f64::from(dbfs) / 20.0) * 2f64.sqrt();
        let pcm: Vec<i16> = (0..FRAME_SAMPLES)
            .map(|i| {
                (amplitude * (2.0 * std::f64::consts::PI * 300.0 * i as f64 / 8000.0).sin()) as i16
            })
            .collect();
        let mut out = Vec::new();
        mulaw::encode_into(&pcm, &mut out);
        out
    }

    #[test]
    fn levels_are_rms_dbfs() {
        let mut pcm = Vec::new();
        mulaw::decode_into(&tone(-20.0), &mut pcm);
        assert!((level_dbfs(&pcm) + 20.0).abs() < 0.5);
        assert_eq!(level_dbfs(&[0; 160]), -100.0);
    }

    #[test]
    fn open_when_nothing_was_played() {
        let mut gate = EchoGate::new();
        let now = Instant::now();
        assert_eq!(gate.judge(&tone(-50.0), now), Verdict::Open);
        gate.played(&tone(-80.0), now);
        assert_eq!(gate.judge(&tone(-50.0), now), Verdict::Open, "inaudible");
    }

    #[test]
    fn echo_of_what_played_is_echo_and_louder_sound_is_the_caller() {
        let mut gate = EchoGate::new();
        let t0 = Instant::now();
        for i in 0..20 {
            gate.played(&tone(-15.0), t0 + Duration::from_millis(20 * i));
        }
        let at = t0 + Duration::from_millis(300);
        // Echo at −20 dB and weaker.
        for echo in [-35.0, -45.0, -55.0] {
            assert_eq!(gate.judge(&tone(echo), at), Verdict::Echo, "{echo} dBFS");
        }
        // The caller at a normal level over it.
        assert_eq!(gate.judge(&tone(-22.0), at), Verdict::Caller);
        // The window passes after the last frame: the gate opens.
        let later = t0 + Duration::from_millis(20 * 20) + ECHO_WINDOW + Duration::from_millis(40);
        assert_eq!(gate.judge(&tone(-45.0), later), Verdict::Open);
    }

    #[test]
    fn a_quiet_line_lowers_the_bar_and_a_cleared_reply_is_forgotten() {
        let mut gate = EchoGate::new();
        let t0 = Instant::now();
        // Ten seconds of a line returning −45 dB.
        for i in 0..500 {
            gate.played(&tone(-15.0), t0 + Duration::from_millis(20 * i));
            let at = t0 + Duration::from_millis(20 * i + 10);
            assert_eq!(gate.judge(&tone(-60.0), at), Verdict::Echo);
        }
        assert!(
            gate.echo_return_db() < -40.0,
            "estimate {} dB",
            gate.echo_return_db()
        );
        // A soft caller (−35 dBFS, 20 dB under the agent) now gets through.
        let at = t0 + Duration::from_millis(20 * 499 + 10);
        assert_eq!(gate.judge(&tone(-35.0), at), Verdict::Caller);

        // A clear drops what had not started playing.
        let mut gate = EchoGate::new();
        for i in 0..10 {
            gate.played(&tone(-15.0), t0 + Duration::from_millis(20 * i));
        }
        gate.cleared(t0);
        assert_eq!(gate.played.len(), 1);
    }
}
