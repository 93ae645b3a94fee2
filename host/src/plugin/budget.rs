//! How much of the machine one plugin session may use, over time.
//!
//! Two limits hold every session, WASM or native:
//! - a **time budget per call** into the plugin (`handle`, `open`, `hangup`): the *run time* of
//!   that one call — the time its code held a thread, time it spent suspended while other calls
//!   ran not counted — may not pass the plugin's `budget_ms` (200 ms by default);
//! - a **CPU share over the call** ([`CpuBucket`]): a token bucket that fills at `cpu_percent`
//!   of one core per second of call and holds at most `cpu_burst_ms`. Every call's run time, and
//!   host work the plugin caused (resampling its audio), is taken from it; a session that
//!   empties it ends its call with [`CpuExceeded`]. So a plugin that stays just under its
//!   per-call budget on every frame — busy 150 ms of every 20 ms frame — is stopped within a
//!   few seconds instead of loading the gateway for as long as its call lasts.
//!
//! A WASM guest is also **sliced**: it runs at most about one [`super::wasm::EPOCH_TICK`] per
//! poll before it yields to the runtime (wasmtime's epoch callback), so it never holds an async
//! worker thread that other calls' frames need for longer than that.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default `cpu_percent`: a quarter of one core per call. The first-party WASM plugins use far
/// under 1 % (an echo frame costs microseconds); local speech models (Whisper) need more and
/// say so in agents.toml.
pub const DEFAULT_CPU_PERCENT: u32 = 25;

/// Accepted `cpu_percent` (1 % to four cores).
pub const CPU_PERCENT_RANGE: std::ops::RangeInclusive<u64> = 1..=400;

/// Default `cpu_burst_ms`: the bucket's size, and what a session starts with. Enough for a
/// session's set-up and a few heavy turns; a plugin whose `budget_ms` is larger gets twice its
/// budget (see [`CpuLimits::new`]).
pub const DEFAULT_CPU_BURST: Duration = Duration::from_secs(3);

/// Accepted `cpu_burst_ms` (100 ms to 10 min).
pub const CPU_BURST_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=600_000;

/// A session's CPU share: what its [`CpuBucket`] is filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuLimits {
    /// Percent of one core the session may use on average over its call.
    pub percent: u32,
    /// Most run time the session may bank (and what it starts with).
    pub burst: Duration,
}

impl Default for CpuLimits {
    fn default() -> Self {
        Self {
            percent: DEFAULT_CPU_PERCENT,
            burst: DEFAULT_CPU_BURST,
        }
    }
}

impl CpuLimits {
    /// The limits of a plugin from its `[plugins.NAME]` table: `cpu_percent` and `cpu_burst_ms`
    /// when written, else the defaults — with a burst of at least twice `budget` (its per-call
    /// time budget), so one call that uses its whole budget never empties the bucket by itself.
    pub fn new(percent: Option<u32>, burst: Option<Duration>, budget: Option<Duration>) -> Self {
        let burst = burst.unwrap_or_else(|| {
            DEFAULT_CPU_BURST.max(budget.map_or(Duration::ZERO, |b| b.saturating_mul(2)))
        });
        Self {
            percent: percent.unwrap_or(DEFAULT_CPU_PERCENT),
            burst,
        }
    }
}

/// A session used more than its CPU share.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "used more than its CPU share ({percent} % of a core, {burst_ms} ms burst): {used_ms} ms of \
     run time in {call_ms} ms of call"
)]
pub struct CpuExceeded {
    /// The session's `cpu_percent`.
    pub percent: u32,
    /// The session's `cpu_burst_ms`.
    pub burst_ms: u64,
    /// Run time charged to the session so far (ms).
    pub used_ms: u64,
    /// Time since the session opened (ms).
    pub call_ms: u64,
}

/// A token bucket of run time: fills at [`CpuLimits::percent`] of real time, holds at most
/// [`CpuLimits::burst`], starts full. Kept in nanoseconds, signed (a charge may overdraw it).
#[derive(Debug, Clone)]
pub struct CpuBucket {
    limits: CpuLimits,
    balance_ns: i128,
    refilled: Instant,
    opened: Instant,
    used: Duration,
}

impl CpuBucket {
    /// A full bucket for a session opened at `now`.
    pub fn new(limits: CpuLimits, now: Instant) -> Self {
        Self {
            limits,
            balance_ns: limits.burst.as_nanos() as i128,
            refilled: now,
            opened: now,
            used: Duration::ZERO,
        }
    }

    /// The limits it was made with.
    pub fn limits(&self) -> CpuLimits {
        self.limits
    }

    /// Run time charged so far.
    pub fn used(&self) -> Duration {
        self.used
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_nanos() as i128;
        self.refilled = now;
        let earned = elapsed * i128::from(self.limits.percent) / 100;
        self.balance_ns = (self.balance_ns + earned).min(self.limits.burst.as_nanos() as i128);
    }

    fn exceeded(&self, now: Instant, extra: Duration) -> CpuExceeded {
        CpuExceeded {
            percent: self.limits.percent,
            burst_ms: self.limits.burst.as_millis() as u64,
            used_ms: (self.used + extra).as_millis() as u64,
            call_ms: now.saturating_duration_since(self.opened).as_millis() as u64,
        }
    }

    /// Takes `used` of run time out of the bucket.
    ///
    /// # Errors
    /// [`CpuExceeded`] when the bucket is empty afterwards: the session has used more than its
    /// share and its call ends.
    pub fn charge(&mut self, used: Duration, now: Instant) -> Result<(), CpuExceeded> {
        self.refill(now);
        self.used += used;
        self.balance_ns -= used.as_nanos() as i128;
        if self.balance_ns < 0 {
            Err(self.exceeded(now, Duration::ZERO))
        } else {
            Ok(())
        }
    }

    /// Checks, during a call that has run for `running` and is not charged yet, whether
    /// charging it would empty the bucket (so a single long call is stopped at once, not when
    /// it returns).
    ///
    /// # Errors
    /// [`CpuExceeded`], as [`CpuBucket::charge`] would return.
    pub fn check(&mut self, running: Duration, now: Instant) -> Result<(), CpuExceeded> {
        self.refill(now);
        if self.balance_ns - (running.as_nanos() as i128) < 0 {
            Err(self.exceeded(now, running))
        } else {
            Ok(())
        }
    }
}

/// When the current slice of a WASM guest call started, shared between the epoch callback (in
/// the store) and the yield future that resumes the guest (outside it). Nanoseconds since the
/// clock was made; one per session, touched only by the call's own task.
#[derive(Debug)]
pub struct SliceClock {
    base: Instant,
    slice_start_ns: AtomicU64,
}

impl SliceClock {
    /// A clock whose first slice starts now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            slice_start_ns: AtomicU64::new(0),
        })
    }

    /// Marks the start of a slice: the guest runs (again) from now.
    pub fn start_slice(&self) {
        let ns = self.base.elapsed().as_nanos() as u64;
        self.slice_start_ns.store(ns, Ordering::Relaxed);
    }

    /// Time since the current slice started.
    pub fn in_slice(&self) -> Duration {
        let now = self.base.elapsed().as_nanos() as u64;
        Duration::from_nanos(now.saturating_sub(self.slice_start_ns.load(Ordering::Relaxed)))
    }
}

/// Lines a session may log per second on average ([`LineLimiter`]): a chatty plugin's
/// progress fits; a flood (20 MB/s was measured) does not reach the log.
pub const LOG_LINES_PER_SECOND: u32 = 20;

/// Lines a session may log at once before [`LOG_LINES_PER_SECOND`] applies.
pub const LOG_LINE_BURST: u32 = 100;

/// Longest log line kept from a plugin (bytes); the rest is cut and marked.
pub const MAX_LOG_LINE_BYTES: usize = 1024;

/// A token bucket of log lines ([`LOG_LINES_PER_SECOND`], [`LOG_LINE_BURST`]) that counts what
/// it refuses, so the next line it admits can say how many were suppressed. Used for a plugin's
/// `log` lines and for the host's warnings about a plugin (denied I/O), per session.
#[derive(Debug, Clone)]
pub struct LineLimiter {
    tokens: f64,
    refilled: Option<Instant>,
    suppressed: u64,
}

impl Default for LineLimiter {
    fn default() -> Self {
        Self {
            tokens: f64::from(LOG_LINE_BURST),
            refilled: None,
            suppressed: 0,
        }
    }
}

impl LineLimiter {
    /// Whether a line may be logged at `now`: `Some(n)` when it may, `n` being how many lines
    /// were refused since the last one admitted (log that first); `None` when it may not.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if let Some(last) = self.refilled {
            let earned =
                now.saturating_duration_since(last).as_secs_f64() * f64::from(LOG_LINES_PER_SECOND);
            self.tokens = (self.tokens + earned).min(f64::from(LOG_LINE_BURST));
        }
        self.refilled = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Timer events one session may be handed per second on average ([`TimerPacer`]): one per
/// 4 ms, the clamp HTML puts on nested `setTimeout(0)`. A voice plugin's timers (silence
/// timeouts, pacing 20 ms frames) fire far less often; a plugin that re-arms zero-delay timers
/// as they fire (64 at once, the cap) would otherwise spin its call task through the host.
pub const TIMER_EVENTS_PER_SECOND: u32 = 250;

/// Timer events one session may be handed at once before [`TIMER_EVENTS_PER_SECOND`] applies:
/// enough for every timer of a session ([`super::io::MAX_TIMERS_PER_SESSION`]) to fall due
/// together.
pub const TIMER_EVENT_BURST: u32 = 64;

/// A token bucket of timer events ([`TIMER_EVENTS_PER_SECOND`], [`TIMER_EVENT_BURST`]): when a
/// fired timer may be handed to the plugin. Times are tokio's, so paused-time tests pace too.
#[derive(Debug, Clone)]
pub struct TimerPacer {
    tokens: f64,
    refilled: Option<tokio::time::Instant>,
}

impl Default for TimerPacer {
    fn default() -> Self {
        Self {
            tokens: f64::from(TIMER_EVENT_BURST),
            refilled: None,
        }
    }
}

impl TimerPacer {
    fn refill(&mut self, now: tokio::time::Instant) {
        if let Some(last) = self.refilled {
            let earned = now.saturating_duration_since(last).as_secs_f64()
                * f64::from(TIMER_EVENTS_PER_SECOND);
            self.tokens = (self.tokens + earned).min(f64::from(TIMER_EVENT_BURST));
        }
        self.refilled = Some(now);
    }

    /// How long to hold a timer event that fired at `now`: zero when it may be handed over
    /// at once (it is then counted), else the wait until it may (nothing is counted; ask
    /// again then).
    pub fn wait(&mut self, now: tokio::time::Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / f64::from(TIMER_EVENTS_PER_SECOND))
                .max(Duration::from_micros(100))
        }
    }
}

/// `text` made safe for one log line: cut at [`MAX_LOG_LINE_BYTES`] (on a character boundary,
/// marked with `…[N bytes cut]`), and every control character (newline, NUL, DEL, escape)
/// written as its Rust escape (`\n`, `\u{0}`), so a plugin cannot forge log lines or send
/// terminal codes.
pub fn escape_log(text: &str) -> String {
    let mut cut = text.len().min(MAX_LOG_LINE_BYTES);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = crate::logging::escape_controls(&text[..cut]).into_owned();
    if cut < text.len() {
        out.push_str(&format!("…[{} bytes cut]", text.len() - cut));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_quiet_plugin_never_empties_its_bucket() {
        let t0 = Instant::now();
        let mut bucket = CpuBucket::new(CpuLimits::default(), t0);
        // 1 ms of every 20 ms frame for ten minutes: 5 % of a core against a 25 % share.
        for frame in 0..30_000u32 {
            let now = t0 + frame * 20 * MS;
            bucket.charge(MS, now).expect("within its share");
        }
    }

    #[test]
    fn a_plugin_just_under_its_call_budget_every_frame_is_stopped_within_seconds() {
        let t0 = Instant::now();
        let mut bucket = CpuBucket::new(CpuLimits::default(), t0);
        // 150 ms busy per call, calls back to back (the plugin is as busy as a core).
        let mut now = t0;
        let mut calls = 0;
        let error = loop {
            now += 150 * MS;
            calls += 1;
            if let Err(e) = bucket.charge(150 * MS, now) {
                break e;
            }
            assert!(calls < 1000, "never stopped");
        };
        // 3 s of burst drains at 75 % of real time: four seconds.
        let call_ms = now.duration_since(t0).as_millis();
        assert!(
            (3_500..=4_500).contains(&call_ms),
            "stopped after {call_ms} ms"
        );
        assert_eq!(error.percent, DEFAULT_CPU_PERCENT);
        assert!(error.to_string().contains("CPU share"), "{error}");
    }

    #[test]
    fn a_long_single_call_is_seen_before_it_returns() {
        let t0 = Instant::now();
        let mut bucket = CpuBucket::new(
            CpuLimits {
                percent: 10,
                burst: 500 * MS,
            },
            t0,
        );
        assert!(bucket.check(400 * MS, t0 + 400 * MS).is_ok());
        assert!(bucket.check(600 * MS, t0 + 600 * MS).is_err());
    }

    #[test]
    fn log_lines_are_limited_and_the_suppressed_are_counted() {
        let t0 = Instant::now();
        let mut lines = LineLimiter::default();
        for _ in 0..LOG_LINE_BURST {
            assert_eq!(lines.admit(t0), Some(0));
        }
        for _ in 0..500 {
            assert_eq!(lines.admit(t0), None);
        }
        // A second later, 20 lines more; the first says how many were refused.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(lines.admit(t1), Some(500));
        let admitted = (0..100).filter(|_| lines.admit(t1).is_some()).count();
        assert_eq!(admitted, LOG_LINES_PER_SECOND as usize - 1);
    }

    #[test]
    fn log_text_is_escaped_and_cut() {
        assert_eq!(escape_log("fine"), "fine");
        assert_eq!(
            escape_log("a\nINFO forged line\u{0}\u{7f}\u{1b}[31m"),
            "a\\nINFO forged line\\u{0}\\u{7f}\\u{1b}[31m"
        );
        let long = "é".repeat(MAX_LOG_LINE_BYTES);
        let cut = escape_log(&long);
        assert!(cut.len() < MAX_LOG_LINE_BYTES + 32, "{}", cut.len());
        assert!(cut.ends_with(&format!("…[{} bytes cut]", long.len() - MAX_LOG_LINE_BYTES)));
    }

    #[test]
    fn the_burst_covers_twice_a_raised_call_budget() {
        assert_eq!(CpuLimits::new(None, None, None), CpuLimits::default());
        let raised = CpuLimits::new(None, None, Some(Duration::from_secs(15)));
        assert_eq!(raised.burst, Duration::from_secs(30));
        let written = CpuLimits::new(Some(100), Some(Duration::from_secs(1)), None);
        assert_eq!(
            (written.percent, written.burst),
            (100, Duration::from_secs(1))
        );
    }
}
