//! The playback clock: paces a call's outbound audio to Twilio at real time and knows, from
//! Twilio's mark echoes, how much of each reply the caller has actually heard.
//!
//! Audio from the plugin arrives in bursts (a TTS or speech-to-speech model produces it faster
//! than real time). The clock queues it as 20 ms μ-law frames and releases frames only while the
//! audio already sent is less than [`PLAYBACK_LEAD`] ahead of what Twilio has played, so a `clear`
//! drops at most that much audio inside Twilio and everything else never leaves the host.
//!
//! Every [`CLOCK_MARK_FRAMES`] frames, and at the end of each run of audio, the clock sends a mark
//! of its own (`switchboard:clock:N`). Twilio echoes a mark when the audio before it has played
//! (Twilio Media Streams, "mark" message), so an echo pins the playback position; between echoes
//! the position advances with the wall clock, never past the next mark not yet echoed. A run ends
//! when the queue has run dry and no audio follows within [`RUN_END_GRACE`]: audio that arrives at
//! real time, a frame every 20 ms, is one run with a mark every [`CLOCK_MARK_FRAMES`] frames, not a
//! run (and a mark and its echo) per frame. After a `clear`, Twilio returns every pending mark at
//! once: those echoes are ignored, and plugin marks among them are not reported as played.
//!
//! A **reply** is the audio from the first frame queued while the caller heard nothing from us
//! (playback idle) or after a `clear`, to the next `clear` or idle. [`Playback::clear`] returns
//! how many milliseconds of the current reply were heard: the `interrupted(heard-ms)` a plugin
//! receives on barge-in.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::audio::{FRAME_MS, FRAME_SAMPLES};

/// How far the audio sent may run ahead of what Twilio has played (ms). Twilio starts a frame
/// as soon as it arrives when idle, so the lead is what rides over network jitter and the
/// host's 20 ms scheduling; 100 ms (five frames) covers both on a healthy path, and bounds what a
/// `clear` must discard inside Twilio and what a slow estimate can get wrong.
pub const PLAYBACK_LEAD: Duration = Duration::from_millis(100);

/// A clock mark goes out after this many frames (100 ms): enough echoes to keep the position
/// within a frame, few enough that marks are a small share of the socket's messages.
pub const CLOCK_MARK_FRAMES: u32 = 5;

/// How long the clock waits, once its queue has run dry, for more audio before it sends the mark
/// that ends the run. A source that plays at real time (a loopback, a model streaming its reply)
/// queues its next frame about 20 ms after the last one; a frame and a half of grace keeps such a
/// stream one run, so it costs a mark and an echo every [`CLOCK_MARK_FRAMES`] frames instead of
/// after every frame (which made them two of the four socket messages per frame). Twilio starts
/// a frame no earlier than it arrives and plays it for 20 ms, so the late mark still lands right
/// behind the run's last frame, and its echo comes at most 10 ms after that frame finished.
pub const RUN_END_GRACE: Duration = Duration::from_millis(30);

/// Most audio one call may have queued in the host (120 s of frames); more is a runaway plugin.
pub const MAX_QUEUED_FRAMES: usize = 6_000;

/// Prefix of the clock's own mark names.
pub const CLOCK_MARK_PREFIX: &str = "switchboard:clock:";

/// What the call task must send to Twilio, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// One 20 ms frame of μ-law.
    Media(Vec<u8>),
    /// A mark with this wire name (a plugin mark, or a clock mark).
    Mark(String),
}

/// What a mark echo from Twilio means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Echo {
    /// A plugin mark whose audio has played: tell the plugin.
    Played(String),
    /// A plugin mark returned by a `clear`: its audio was not heard.
    Cleared(String),
    /// One of the clock's own marks (already accounted for).
    Clock,
    /// Not a mark this clock sent (e.g. the gateway's own hang-up or apology marks).
    Unknown(String),
}

/// Why audio could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaybackError {
    /// The plugin queued more than [`MAX_QUEUED_FRAMES`].
    #[error("the plugin queued more than {} s of audio", MAX_QUEUED_FRAMES as u64 * FRAME_MS / 1000)]
    QueueFull,
}

#[derive(Debug)]
enum Item {
    Frame(Vec<u8>),
    Mark(String),
}

/// A mark sent to Twilio and not echoed yet.
#[derive(Debug)]
struct InFlight {
    name: String,
    /// Position (ms of audio sent) the mark stands at.
    position_ms: u64,
    /// A plugin mark (as opposed to a clock mark).
    plugin: bool,
    /// Sent before the last `clear`: its echo says nothing about what was heard.
    cleared: bool,
}

/// One call's playback clock. Owned by the call task; no locks.
#[derive(Debug)]
pub struct Playback {
    queue: VecDeque<Item>,
    queued_frames: usize,
    /// Milliseconds of audio sent to Twilio since the stream began (minus cleared audio).
    sent_ms: u64,
    /// Position and time of the last echo (or of the start of the current run of audio).
    anchor_ms: u64,
    anchor_at: Instant,
    in_flight: VecDeque<InFlight>,
    frames_since_mark: u32,
    next_clock_mark: u64,
    /// The queue ran dry after frames with no mark behind them: unless more audio is queued
    /// before this instant, the run's closing clock mark goes out then ([`RUN_END_GRACE`]).
    run_end_at: Option<Instant>,
    /// Position where the current reply began, if one is playing or queued.
    reply_start_ms: Option<u64>,
    /// Replies begin and end where the engine says ([`Playback::begin_reply`]), not with the
    /// first frame queued while idle.
    explicit_replies: bool,
}

impl Playback {
    /// An idle clock at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            queue: VecDeque::new(),
            queued_frames: 0,
            sent_ms: 0,
            anchor_ms: 0,
            anchor_at: now,
            in_flight: VecDeque::new(),
            frames_since_mark: 0,
            next_clock_mark: 0,
            run_end_at: None,
            reply_start_ms: None,
            explicit_replies: false,
        }
    }

    /// The clock with replies marked by the engine: a reply begins at
    /// [`begin_reply`](Self::begin_reply) and ends at [`end_reply`](Self::end_reply) (or a
    /// clear), spanning any gaps between its parts — a pipeline speaks a reply clause by clause.
    /// By default a reply begins with the first frame queued while playback is idle.
    pub fn with_explicit_replies(mut self) -> Self {
        self.explicit_replies = true;
        self
    }

    /// A reply begins with the next frame queued, unless one has begun already.
    pub fn begin_reply(&mut self) {
        if self.reply_start_ms.is_none() {
            self.reply_start_ms = Some(self.end_ms());
        }
    }

    /// The current reply is over: the audio queued next belongs to another.
    pub fn end_reply(&mut self) {
        self.reply_start_ms = None;
    }

    /// True while a reply is playing or queued.
    pub fn in_reply(&self) -> bool {
        self.reply_start_ms.is_some()
    }

    /// How much of the current reply the caller has heard by `now` (ms, by
    /// [`heard_ms`](Self::heard_ms)); `None` when no reply is playing. The one place the
    /// gateway computes "heard ms", for barge-in and for the transcript of both engines.
    pub fn reply_heard_ms(&self, now: Instant) -> Option<u64> {
        self.reply_start_ms
            .map(|start| self.heard_ms(now).saturating_sub(start))
    }

    /// The playback position at `now` (ms on the sent-audio timeline) for pacing: the last echo
    /// (or the start of the run) plus the time since, never past what was sent. Pacing must not
    /// wait for echoes: a lost or late echo would stall the caller's audio.
    pub fn position_ms(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.anchor_at).as_millis() as u64;
        (self.anchor_ms + elapsed).min(self.sent_ms)
    }

    /// What the caller has heard by `now` (ms on the sent-audio timeline): as
    /// [`position_ms`](Self::position_ms), but never past the first mark Twilio has not echoed
    /// yet — the echo is the proof that audio played.
    pub fn heard_ms(&self, now: Instant) -> u64 {
        let ceiling = self
            .in_flight
            .iter()
            .find(|m| !m.cleared)
            .map_or(self.sent_ms, |m| m.position_ms);
        self.position_ms(now).min(ceiling)
    }

    /// True when nothing is queued and everything sent has (by the estimate) played.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.queue.is_empty() && self.position_ms(now) >= self.sent_ms
    }

    /// Milliseconds of queued and unplayed audio at `now` (how long until playback ends).
    pub fn remaining(&self, now: Instant) -> Duration {
        let unplayed = self.sent_ms - self.position_ms(now);
        Duration::from_millis(unplayed + self.queued_frames as u64 * FRAME_MS)
    }

    /// Queues one 20 ms frame ([`FRAME_SAMPLES`] bytes of μ-law).
    ///
    /// # Errors
    /// [`PlaybackError::QueueFull`] past [`MAX_QUEUED_FRAMES`].
    pub fn push_frame(&mut self, frame: Vec<u8>, now: Instant) -> Result<(), PlaybackError> {
        debug_assert_eq!(frame.len(), FRAME_SAMPLES);
        if self.queued_frames >= MAX_QUEUED_FRAMES {
            return Err(PlaybackError::QueueFull);
        }
        if !self.explicit_replies && (self.reply_start_ms.is_none() || self.is_idle(now)) {
            self.reply_start_ms = Some(self.sent_ms);
        }
        if self.run_end_at.is_some_and(|at| now < at) {
            // More audio within the grace: the run goes on.
            self.run_end_at = None;
        }
        self.queue.push_back(Item::Frame(frame));
        self.queued_frames += 1;
        Ok(())
    }

    /// Queues a plugin mark (or the gateway's hang-up mark) after the audio queued so far.
    pub fn push_mark(&mut self, name: String) {
        self.queue.push_back(Item::Mark(name));
    }

    /// When the next queued item may be sent: now if the lead allows, else when it will; or when
    /// the mark that ends the current run is due. `None` when nothing is queued or due.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        let run_end = self.run_end_at.map(|at| at.max(now));
        if self.queue.is_empty() {
            return run_end;
        }
        let lead = PLAYBACK_LEAD.as_millis() as u64;
        let ahead = self.sent_ms.saturating_sub(self.position_ms(now));
        let next = if ahead < lead {
            now
        } else {
            now + Duration::from_millis(ahead - lead + 1)
        };
        Some(run_end.map_or(next, |at| at.min(next)))
    }

    /// Takes what may be sent at `now`: frames while the lead allows, with the marks queued
    /// between them and the clock's own marks.
    pub fn due(&mut self, now: Instant) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let lead = PLAYBACK_LEAD.as_millis() as u64;
        if let Some(at) = self.run_end_at
            && (at <= now || matches!(self.queue.front(), Some(Item::Mark(_))))
        {
            // The run is over (or a plugin mark closes it): its own mark goes first.
            out.push(self.clock_mark());
        }
        if self.position_ms(now) >= self.sent_ms {
            // Everything sent has played: a new run of audio starts playing on arrival.
            self.anchor_ms = self.sent_ms;
            self.anchor_at = now;
        }
        while let Some(item) = self.queue.front() {
            if matches!(item, Item::Frame(_))
                && self.sent_ms.saturating_sub(self.position_ms(now)) >= lead
            {
                break;
            }
            match self.queue.pop_front() {
                Some(Item::Frame(frame)) => {
                    self.queued_frames -= 1;
                    self.sent_ms += FRAME_MS;
                    self.frames_since_mark += 1;
                    out.push(Outgoing::Media(frame));
                    if self.frames_since_mark >= CLOCK_MARK_FRAMES {
                        out.push(self.clock_mark());
                    } else if self.queue.is_empty() {
                        self.run_end_at = Some(now + RUN_END_GRACE);
                    }
                }
                Some(Item::Mark(name)) => {
                    self.in_flight.push_back(InFlight {
                        name: name.clone(),
                        position_ms: self.sent_ms,
                        plugin: true,
                        cleared: false,
                    });
                    out.push(Outgoing::Mark(name));
                }
                None => break,
            }
        }
        out
    }

    fn clock_mark(&mut self) -> Outgoing {
        self.frames_since_mark = 0;
        self.run_end_at = None;
        let name = format!("{CLOCK_MARK_PREFIX}{}", self.next_clock_mark);
        self.next_clock_mark += 1;
        self.in_flight.push_back(InFlight {
            name: name.clone(),
            position_ms: self.sent_ms,
            plugin: false,
            cleared: false,
        });
        Outgoing::Mark(name)
    }

    /// Accounts for Twilio echoing the mark `name` at `now`.
    pub fn on_echo(&mut self, name: &str, now: Instant) -> Echo {
        let Some(index) = self.in_flight.iter().position(|m| m.name == name) else {
            return Echo::Unknown(name.to_string());
        };
        // Marks are echoed in order; any earlier one still listed was lost or is cleared.
        let mut mark = None;
        for _ in 0..=index {
            mark = self.in_flight.pop_front();
        }
        let Some(mark) = mark else {
            return Echo::Unknown(name.to_string());
        };
        if mark.cleared {
            return if mark.plugin {
                Echo::Cleared(mark.name)
            } else {
                Echo::Clock
            };
        }
        self.anchor_ms = mark.position_ms;
        self.anchor_at = now;
        if mark.plugin {
            Echo::Played(mark.name)
        } else {
            Echo::Clock
        }
    }

    /// Drops everything queued and unplayed (the call task sends Twilio `clear`), and returns
    /// how many ms of the current reply the caller heard (0 when no reply was playing).
    /// Plugin marks not yet sent are dropped; those in flight will echo as [`Echo::Cleared`].
    pub fn clear(&mut self, now: Instant) -> u64 {
        let heard_at = self.heard_ms(now);
        let heard = self.reply_heard_ms(now).unwrap_or(0);
        self.queue.clear();
        self.queued_frames = 0;
        for mark in &mut self.in_flight {
            mark.cleared = true;
        }
        self.sent_ms = heard_at;
        self.anchor_ms = heard_at;
        self.anchor_at = now;
        self.frames_since_mark = 0;
        self.run_end_at = None;
        self.reply_start_ms = None;
        heard
    }

    /// Where the next frame queued will sit on the sent-audio timeline (ms): everything sent so
    /// far plus everything queued. [`heard_ms`](Self::heard_ms) minus this value taken when a
    /// reply's first frame was queued is how much of that reply the caller heard, across gaps.
    pub fn end_ms(&self) -> u64 {
        self.sent_ms + self.queued_frames as u64 * FRAME_MS
    }

    /// Milliseconds of audio sent to Twilio so far (after clears, what was played of it).
    pub fn sent_ms(&self) -> u64 {
        self.sent_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Vec<u8> {
        vec![0x55; FRAME_SAMPLES]
    }

    fn media(out: &[Outgoing]) -> usize {
        out.iter()
            .filter(|o| matches!(o, Outgoing::Media(_)))
            .count()
    }

    #[test]
    fn paces_at_real_time_with_a_bounded_lead() {
        // The call has been up for a while before the first reply.
        let mut p = Playback::new(Instant::now());
        let t0 = Instant::now() + Duration::from_secs(3);
        for _ in 0..50 {
            p.push_frame(frame(), t0).unwrap();
        }
        // At once: the lead's worth (100 ms = 5 frames).
        assert_eq!(media(&p.due(t0)), 5);
        assert_eq!(p.next_due(t0), Some(t0 + Duration::from_millis(1)));
        // 20 ms later, one more frame is due.
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(media(&p.due(t1)), 1);
        // Pumped every 20 ms, the 50 frames take a second of real time.
        let mut t = t1;
        while p.next_due(t).is_some() {
            t += Duration::from_millis(20);
            let _ = p.due(t);
        }
        assert_eq!(p.sent_ms(), 1000);
        let took = t - t0;
        assert!(
            took >= Duration::from_millis(880) && took <= Duration::from_millis(920),
            "took {took:?}"
        );
    }

    #[test]
    fn clock_marks_every_five_frames_and_at_the_end() {
        let t0 = Instant::now();
        let mut p = Playback::new(t0);
        for _ in 0..7 {
            p.push_frame(frame(), t0).unwrap();
        }
        let mut out = p.due(t0);
        let t1 = t0 + Duration::from_millis(60);
        out.extend(p.due(t1));
        // The queue ran dry: the run's closing mark waits for the grace, in case more follows.
        assert_eq!(p.next_due(t1), Some(t1 + RUN_END_GRACE));
        assert!(p.due(t1 + Duration::from_millis(10)).is_empty());
        out.extend(p.due(t1 + RUN_END_GRACE));
        assert_eq!(p.next_due(t1 + RUN_END_GRACE), None);
        let marks: Vec<&str> = out
            .iter()
            .filter_map(|o| match o {
                Outgoing::Mark(m) => Some(m.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(marks, ["switchboard:clock:0", "switchboard:clock:1"]);
        assert_eq!(media(&out), 7);
    }

    fn marks(out: &[Outgoing]) -> Vec<&str> {
        out.iter()
            .filter_map(|o| match o {
                Outgoing::Mark(m) => Some(m.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn audio_at_real_time_is_one_run_with_a_mark_every_five_frames() {
        // A loopback: one frame queued and sent every 20 ms, each a little early or late.
        let t0 = Instant::now();
        let mut p = Playback::new(t0);
        let mut out = Vec::new();
        for i in 0..20u64 {
            let t = t0 + Duration::from_millis(i * 20 + [0, 7, 2, 9][i as usize % 4]);
            out.extend(p.due(t)); // the loop wakes for anything due before the next frame
            p.push_frame(frame(), t).unwrap();
            out.extend(p.due(t));
        }
        assert_eq!(media(&out), 20);
        assert_eq!(
            marks(&out),
            [
                "switchboard:clock:0",
                "switchboard:clock:1",
                "switchboard:clock:2",
                "switchboard:clock:3"
            ]
        );
        assert_eq!(p.next_due(t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn a_run_that_stops_is_closed_by_a_mark_and_the_next_frame_starts_another() {
        let t0 = Instant::now();
        let mut p = Playback::new(t0);
        for _ in 0..2 {
            p.push_frame(frame(), t0).unwrap();
        }
        assert_eq!(media(&p.due(t0)), 2);
        // Nothing more within the grace: the run's mark goes out, standing after both frames.
        let t1 = t0 + RUN_END_GRACE;
        assert_eq!(p.next_due(t0), Some(t1));
        assert_eq!(p.due(t1), [Outgoing::Mark("switchboard:clock:0".into())]);
        // A frame queued after the grace, before the clock was pumped, comes after the mark.
        let mut q = Playback::new(t0);
        q.push_frame(frame(), t0).unwrap();
        let _ = q.due(t0);
        q.push_frame(frame(), t1 + Duration::from_millis(5))
            .unwrap();
        let out = q.due(t1 + Duration::from_millis(5));
        assert_eq!(
            out.first(),
            Some(&Outgoing::Mark("switchboard:clock:0".into()))
        );
        assert_eq!(media(&out), 1);
        // The mark stands after the first frame only: its echo pins the position at 20 ms.
        let echoed = t1 + Duration::from_millis(25);
        assert_eq!(q.on_echo("switchboard:clock:0", echoed), Echo::Clock);
        assert_eq!(q.position_ms(echoed), 20);
    }

    #[test]
    fn a_plugin_mark_after_a_run_follows_the_runs_clock_mark() {
        let t0 = Instant::now();
        let mut p = Playback::new(t0);
        p.push_frame(frame(), t0).unwrap();
        let mut out = p.due(t0);
        p.push_mark("reply-1".into());
        out.extend(p.due(t0));
        assert_eq!(marks(&out), ["switchboard:clock:0", "reply-1"]);
        assert_eq!(p.next_due(t0), None);
    }

    #[test]
    fn clear_drops_the_pending_run_mark() {
        let t0 = Instant::now();
        let mut p = Playback::new(t0);
        p.push_frame(frame(), t0).unwrap();
        let _ = p.due(t0);
        let _ = p.clear(t0 + Duration::from_millis(5));
        assert_eq!(p.next_due(t0 + Duration::from_millis(5)), None);
        assert!(p.due(t0 + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn echoes_pin_the_position_and_plugin_marks_report_played() {
        let t0 = Instant::now();
        let mut p = Playback::new(t0);
        for _ in 0..5 {
            p.push_frame(frame(), t0).unwrap();
        }
        p.push_mark("reply-1".into());
        let out = p.due(t0);
        assert_eq!(out.last(), Some(&Outgoing::Mark("reply-1".into())));
        // Twilio is slow: at 150 ms nothing is echoed yet, the estimate stops at the first mark.
        let t1 = t0 + Duration::from_millis(150);
        assert_eq!(p.heard_ms(t1), 100);
        assert_eq!(p.position_ms(t1), 100, "all that was sent");
        assert_eq!(p.on_echo("switchboard:clock:0", t1), Echo::Clock);
        assert_eq!(p.on_echo("reply-1", t1), Echo::Played("reply-1".into()));
        assert!(p.is_idle(t1));
    }

    /// Plays `frames` frames queued at `at`, with Twilio echoing every mark as it plays;
    /// returns when everything has played.
    fn play_out(p: &mut Playback, frames: usize, at: Instant) -> Instant {
        for _ in 0..frames {
            p.push_frame(frame(), at).unwrap();
        }
        let mut t = at;
        for _ in 0..(frames * 4 + 200) {
            for o in p.due(t) {
                if let Outgoing::Mark(m) = o {
                    let _ = p.on_echo(&m, t);
                }
            }
            t += Duration::from_millis(5);
        }
        t
    }

    /// A reply spoken in parts with a silent gap between them (a pipeline's clauses): with
    /// explicit replies, what the caller heard counts from the reply's start across the gap;
    /// by default a reply starts again with the first frame after playback went idle.
    #[test]
    fn explicit_replies_span_gaps_between_their_parts() {
        for explicit in [true, false] {
            let t0 = Instant::now();
            let mut p = Playback::new(t0);
            if explicit {
                p = p.with_explicit_replies();
                p.begin_reply();
            }
            assert_eq!(p.in_reply(), explicit);
            // The first clause (200 ms) plays out, then idles.
            let t1 = play_out(&mut p, 10, t0);
            assert!(p.is_idle(t1));
            // The second clause: cut after 100 ms of it.
            for _ in 0..10 {
                p.push_frame(frame(), t1).unwrap();
            }
            let mut t = t1;
            while t < t1 + Duration::from_millis(100) {
                let _ = p.due(t);
                t += Duration::from_millis(5);
            }
            let reply_heard = p.reply_heard_ms(t).unwrap_or_default();
            let heard = p.clear(t);
            assert_eq!(heard, reply_heard);
            let expected = if explicit { 300 } else { 100 };
            assert!(
                heard.abs_diff(expected) <= 20,
                "explicit {explicit}: heard {heard} ms, expected about {expected}"
            );
            assert!(!p.in_reply(), "a clear ends the reply");
        }
    }

    /// `end_reply` closes a reply: the next `begin_reply` starts counting afresh.
    #[test]
    fn end_reply_starts_the_next_reply_afresh() {
        let t0 = Instant::now();
        let mut p = Playback::new(t0).with_explicit_replies();
        p.begin_reply();
        let t1 = play_out(&mut p, 10, t0);
        p.begin_reply(); // no-op: a reply has begun
        assert_eq!(p.reply_heard_ms(t1), Some(200));
        p.end_reply();
        assert_eq!(p.reply_heard_ms(t1), None);
        p.begin_reply();
        assert_eq!(p.reply_heard_ms(t1), Some(0));
    }

    #[test]
    fn clear_reports_heard_ms_of_the_reply_and_voids_pending_marks() {
        let t0 = Instant::now();
        let mut p = Playback::new(t0);
        // An earlier reply, fully played.
        p.push_frame(frame(), t0).unwrap();
        let _ = p.due(t0);
        // Its mark goes out once the run is over, and is echoed on arrival.
        let _ = p.due(t0 + RUN_END_GRACE);
        assert_eq!(
            p.on_echo("switchboard:clock:0", t0 + RUN_END_GRACE),
            Echo::Clock
        );
        // The reply that gets interrupted starts at 1 s.
        let t1 = t0 + Duration::from_millis(1000);
        for _ in 0..100 {
            p.push_frame(frame(), t1).unwrap();
        }
        p.push_mark("reply-2".into());
        // Twilio plays each frame 20 ms after the one before and echoes a mark when the
        // audio before it has played.
        let mut t = t1;
        let mut sent = 0u64;
        let mut pending: Vec<(String, Instant)> = Vec::new();
        while t < t1 + Duration::from_millis(730) {
            for o in p.due(t) {
                match o {
                    Outgoing::Media(_) => sent += 1,
                    Outgoing::Mark(m) => {
                        pending.push((m, t1 + Duration::from_millis(sent * FRAME_MS)))
                    }
                }
            }
            t += Duration::from_millis(5);
            pending.retain(|(m, at)| {
                if *at <= t {
                    let _ = p.on_echo(m, *at);
                    false
                } else {
                    true
                }
            });
        }
        let heard = p.clear(t);
        assert!((720..=740).contains(&heard), "heard {heard} ms");
        assert!(p.due(t).is_empty(), "nothing queued after clear");
        // Twilio returns the in-flight marks at once; they were not heard.
        assert_eq!(
            p.on_echo("reply-2", t),
            Echo::Unknown("reply-2".into()),
            "never sent"
        );
    }

    #[test]
    fn queue_is_bounded() {
        let t0 = Instant::now();
        let mut p = Playback::new(t0);
        for _ in 0..MAX_QUEUED_FRAMES {
            p.push_frame(frame(), t0).unwrap();
        }
        assert_eq!(p.push_frame(frame(), t0), Err(PlaybackError::QueueFull));
    }
}
