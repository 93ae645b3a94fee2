//! The per-frame histograms ([`FRAME`], [`LEAD`]): recorded on a call's hot path 50 times a
//! second per call, so they bypass the recorder.
//!
//! A call counts into its own [`LocalHistogram`] (plain integers, no atomics, no allocation) and
//! merges it into the process-wide [`SharedHistogram`] once a second of frames has been counted,
//! when asked, and when dropped. Recording every frame through the Prometheus recorder stored each
//! sample until its upkeep folded them into buckets: at 1,000 calls, 100,000 samples a second and
//! a stall of several milliseconds on the runtime thread that ran the upkeep. A scrape therefore
//! sees a live call's frames up to one second late; an ended call's frames are all there.
//!
//! Rendered in the Prometheus text exposition format by [`render`], beside the recorder's output,
//! with the buckets of [`super::SECONDS_BUCKETS`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::SECONDS_BUCKETS;

/// Bucket count: the finite upper bounds of [`SECONDS_BUCKETS`] plus `+Inf`.
const BUCKETS: usize = SECONDS_BUCKETS.len() + 1;

/// Samples a call counts before it merges them (one second of 20 ms frames).
pub const MERGE_EVERY: u32 = 50;

/// Host time per inbound Media Streams frame; see [`super::FRAME_SECONDS`].
pub static FRAME: SharedHistogram = SharedHistogram::new(
    super::FRAME_SECONDS,
    "Host time per inbound Media Streams frame: Twilio frame in, plugin, frames out.",
);

/// Playback lead when frames are sent; see [`super::PLAYBACK_LEAD_SECONDS`].
pub static LEAD: SharedHistogram = SharedHistogram::new(
    super::PLAYBACK_LEAD_SECONDS,
    "Audio sent to Twilio ahead of what the caller has heard.",
);

/// A process-wide histogram of durations in the buckets of [`SECONDS_BUCKETS`]. Counts per
/// bucket (not cumulative) and the sum in nanoseconds, each a relaxed atomic.
pub struct SharedHistogram {
    name: &'static str,
    help: &'static str,
    counts: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

impl SharedHistogram {
    const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            counts: [const { AtomicU64::new(0) }; BUCKETS],
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Appends the histogram to `out`: `# HELP`, `# TYPE`, cumulative `_bucket{le}` lines ending
    /// in `+Inf`, `_sum` (seconds) and `_count` (equal to the `+Inf` bucket, whatever merges run
    /// meanwhile).
    pub fn render(&self, out: &mut String) {
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            match SECONDS_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// One call's counts for a [`SharedHistogram`], merged into it every [`MERGE_EVERY`] samples,
/// on [`LocalHistogram::merge`] and on drop.
pub struct LocalHistogram {
    shared: &'static SharedHistogram,
    counts: [u32; BUCKETS],
    sum_nanos: u64,
    pending: u32,
}

impl LocalHistogram {
    /// Empty counts for `shared`.
    pub fn new(shared: &'static SharedHistogram) -> Self {
        Self {
            shared,
            counts: [0; BUCKETS],
            sum_nanos: 0,
            pending: 0,
        }
    }

    /// Counts one duration: in the first bucket whose bound is at least `value` (`le`), else
    /// `+Inf`.
    pub fn record(&mut self, value: Duration) {
        let secs = value.as_secs_f64();
        let bucket = SECONDS_BUCKETS.partition_point(|&le| le < secs);
        self.counts[bucket] += 1;
        self.sum_nanos = self
            .sum_nanos
            .saturating_add(u64::try_from(value.as_nanos()).unwrap_or(u64::MAX));
        self.pending += 1;
        if self.pending >= MERGE_EVERY {
            self.merge();
        }
    }

    /// Adds the counts into the shared histogram and clears them.
    pub fn merge(&mut self) {
        if self.pending == 0 {
            return;
        }
        for (shared, local) in self.shared.counts.iter().zip(&mut self.counts) {
            if *local > 0 {
                shared.fetch_add(u64::from(*local), Ordering::Relaxed);
                *local = 0;
            }
        }
        self.shared
            .sum_nanos
            .fetch_add(self.sum_nanos, Ordering::Relaxed);
        self.sum_nanos = 0;
        self.pending = 0;
    }
}

impl Drop for LocalHistogram {
    fn drop(&mut self) {
        self.merge();
    }
}

/// Appends every per-frame histogram to `out` (Prometheus text format).
pub fn render(out: &mut String) {
    FRAME.render(out);
    LEAD.render(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `name_suffix{labels} value` lines of `text` into (line head, value).
    fn samples(text: &str) -> Vec<(String, f64)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (head, value) = l.rsplit_once(' ')?;
                Some((head.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn counts_merge_into_cumulative_buckets_with_le_semantics() {
        static H: SharedHistogram = SharedHistogram::new("t_seconds", "test");
        let mut local = LocalHistogram::new(&H);
        local.record(Duration::from_micros(100)); // exactly the first bound: le="0.0001"
        local.record(Duration::from_micros(101)); // le="0.00025"
        local.record(Duration::from_millis(3)); // le="0.005"
        local.record(Duration::from_secs(11)); // +Inf only
        let mut before = String::new();
        H.render(&mut before);
        assert!(
            before.contains("t_seconds_count 0"),
            "not merged before MERGE_EVERY: {before}"
        );
        drop(local);
        let mut text = String::new();
        H.render(&mut text);
        let s = samples(&text);
        let get = |head: &str| {
            s.iter()
                .find(|(h, _)| h == head)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("{head} missing in {text}"))
        };
        assert_eq!(get(r#"t_seconds_bucket{le="0.0001"}"#), 1.0);
        assert_eq!(get(r#"t_seconds_bucket{le="0.00025"}"#), 2.0);
        assert_eq!(get(r#"t_seconds_bucket{le="0.0025"}"#), 2.0);
        assert_eq!(get(r#"t_seconds_bucket{le="0.005"}"#), 3.0);
        assert_eq!(get(r#"t_seconds_bucket{le="10"}"#), 3.0);
        assert_eq!(get(r#"t_seconds_bucket{le="+Inf"}"#), 4.0);
        assert_eq!(get("t_seconds_count"), 4.0);
        assert!((get("t_seconds_sum") - 11.003201).abs() < 1e-9);
        assert!(text.contains("# TYPE t_seconds histogram"));
    }

    #[test]
    fn a_second_of_frames_merges_without_waiting_for_the_call_to_end() {
        static H: SharedHistogram = SharedHistogram::new("u_seconds", "test");
        let mut local = LocalHistogram::new(&H);
        for _ in 0..MERGE_EVERY {
            local.record(Duration::from_micros(20));
        }
        let mut text = String::new();
        H.render(&mut text);
        assert!(
            text.contains(&format!("u_seconds_count {MERGE_EVERY}")),
            "{text}"
        );
        std::mem::forget(local);
    }
}
