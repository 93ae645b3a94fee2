//! A per-plugin circuit breaker: after [`BREAKER_THRESHOLD`] calls in a row end in a plugin
//! failure (trap, time or memory overrun, error), new calls stop reaching the plugin for
//! [`BREAKER_COOLDOWN`] and go to the agent's `fallback` (or hear an apology). After the cooldown
//! the next call tries the plugin again (half-open); one more failure re-opens the breaker at once,
//! one call that ends cleanly closes it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Consecutive failed calls that open the breaker. One failure may be the caller's input or bad
/// luck; five in a row with no success between them is a broken plugin or upstream.
pub const BREAKER_THRESHOLD: u32 = 5;

/// How long an open breaker keeps calls away from the plugin before trying it again: long enough
/// that a flood of calls does not each pay for the failure, short enough that a recovered plugin
/// is back within a minute.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(30);

/// Where a [`CircuitBreaker`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls reach the plugin.
    Closed,
    /// Calls are kept away from the plugin until the cooldown passes.
    Open,
    /// The cooldown passed: the next call tries the plugin; a failure re-opens the breaker at
    /// once, a clean end closes it.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half-open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

/// Failure accounting for one plugin, shared by every call that uses it. Lock-free.
#[derive(Debug)]
pub struct CircuitBreaker {
    consecutive: AtomicU32,
    /// Milliseconds since `epoch` until which the breaker is open; 0 when closed.
    open_until_ms: AtomicU64,
    failures: AtomicU64,
    epoch: Instant,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            consecutive: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl CircuitBreaker {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// True while new calls must not reach the plugin.
    pub fn is_open(&self) -> bool {
        self.now_ms() < self.open_until_ms.load(Ordering::Relaxed)
    }

    /// Where the breaker stands now (for the console's overview).
    pub fn state(&self) -> BreakerState {
        if self.is_open() {
            BreakerState::Open
        } else if self.open_until_ms.load(Ordering::Relaxed) != 0 {
            // Opened, its cooldown passed, and no call has ended cleanly since.
            BreakerState::HalfOpen
        } else {
            BreakerState::Closed
        }
    }

    /// Records a call that ended in a plugin failure; returns true when this failure opened the
    /// breaker.
    pub fn record_failure(&self) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let consecutive = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if consecutive >= BREAKER_THRESHOLD && !self.is_open() {
            let until = self.now_ms() + BREAKER_COOLDOWN.as_millis() as u64;
            self.open_until_ms.store(until, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Records a call that ended without a plugin failure: the breaker closes.
    pub fn record_success(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
        self.open_until_ms.store(0, Ordering::Relaxed);
    }

    /// Calls that ended in a plugin failure since the gateway started.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_closes_on_success() {
        let b = CircuitBreaker::default();
        for _ in 1..BREAKER_THRESHOLD {
            assert!(!b.record_failure());
            assert!(!b.is_open());
        }
        assert!(b.record_failure(), "the threshold-th failure opens it");
        assert!(b.is_open());
        assert_eq!(b.failures(), u64::from(BREAKER_THRESHOLD));
        b.record_success();
        assert!(!b.is_open());
        assert!(!b.record_failure(), "the count starts again");
    }

    #[test]
    fn half_open_failure_reopens_at_once() {
        let b = CircuitBreaker::default();
        for _ in 0..BREAKER_THRESHOLD {
            b.record_failure();
        }
        assert_eq!(b.state(), BreakerState::Open);
        // Pretend the cooldown passed (it ended 1 ms after the epoch, which is behind us).
        b.open_until_ms.store(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
        assert!(!b.is_open());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.record_failure());
        assert!(b.is_open());
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
