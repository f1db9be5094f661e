//! What a stage that calls a plugin counts for `/metrics`: calls, what
//! went in and came out, failures, and a histogram of how long each call
//! took.
//!
//! Counting is plain field arithmetic on the engine thread (the stage owns
//! its meter, nothing is shared or atomic); `/metrics` reads a copy the
//! engine hands out with its stage reports, so a scrape costs the hot path
//! nothing and recording a call costs a bucket search over
//! [`BATCH_SECONDS_BOUNDS`] and three additions.

/// Upper bounds (seconds) of the per-call latency histogram's buckets. A
/// call takes from ~10 µs (a no-op plugin on a small batch, DESIGN.md's
/// figures) to the stage deadline (seconds), so the buckets run from 10 µs
/// to 10 s in 1-2.5-5 steps; `+Inf` is implied.
pub const BATCH_SECONDS_BOUNDS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// [`BATCH_SECONDS_BOUNDS`] in nanoseconds, for the search.
const BOUNDS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A histogram of call durations with the fixed buckets
/// [`BATCH_SECONDS_BOUNDS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latency {
    /// Calls per bucket (not cumulative); the last entry is `+Inf`.
    counts: [u64; BOUNDS_NS.len() + 1],
    /// Sum of all durations, nanoseconds.
    sum_ns: u64,
}

impl Latency {
    /// Count one call of `ns` nanoseconds.
    pub fn record(&mut self, ns: u64) {
        // The bucket is the first bound the duration does not exceed
        // (Prometheus buckets are `le`, less than or equal).
        let i = BOUNDS_NS.partition_point(|&b| b < ns);
        self.counts[i] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Calls counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of the durations counted, seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// Cumulative counts per bound (`None`: `+Inf`), in order, as the
    /// exposition format lists buckets.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<f64>, u64)> + '_ {
        let bounds = BATCH_SECONDS_BOUNDS.iter().copied().map(Some).chain([None]);
        bounds.zip(self.counts.iter().scan(0u64, |total, c| {
            *total += c;
            Some(*total)
        }))
    }
}

/// What kind of stage calls a plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StageKind {
    /// A `[[stages]]` entry: a processor plugin in the pipeline.
    #[default]
    Processor,
    /// A pattern plugin: its classifier runs in the pattern operator.
    Pattern,
    /// An `[[alerts]]` entry with a plugin: its evaluator runs in the alert
    /// operator.
    Alert,
}

impl StageKind {
    /// The `kind` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Processor => "processor",
            StageKind::Pattern => "pattern",
            StageKind::Alert => "alert",
        }
    }
}

/// A pattern or alert plugin stage's counters (processor stages keep theirs
/// in [`crate::pipeline::StageStats`]).
#[derive(Debug, Clone, Default)]
pub struct CallMeter {
    /// Calls into the plugin (refused calls while quarantined included).
    pub calls: u64,
    /// Calls that failed.
    pub failed_calls: u64,
    /// What the calls were handed: events classified (pattern) or results
    /// evaluated (alert).
    pub items_in: u64,
    /// What they gave back: completed matches kept (pattern) or evaluations
    /// (alert).
    pub items_out: u64,
    /// Times this stage quarantined the plugin.
    pub quarantines: u64,
    /// Rollbacks this stage asked for.
    pub rollbacks: u64,
    /// Call durations.
    pub latency: Latency,
}

/// A plugin stage's meter with what the report needs to label it.
#[derive(Debug, Clone)]
pub struct MeterReport {
    /// The plugin's name.
    pub plugin: String,
    /// The content hash of the version this stage runs.
    pub hash: String,
    /// Its self-reported version.
    pub version: String,
    /// Whether calls are refused now (quarantine backoff).
    pub quarantined: bool,
    /// Consecutive failed calls.
    pub consecutive_failures: u32,
    /// The counters.
    pub meter: CallMeter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree() {
        for (s, ns) in BATCH_SECONDS_BOUNDS.iter().zip(BOUNDS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
    }

    #[test]
    fn buckets_are_less_or_equal_and_cumulative() {
        let mut l = Latency::default();
        l.record(10_000); // exactly the first bound: in it
        l.record(10_001); // just above: the second
        l.record(20_000_000_000); // beyond the last bound: +Inf only
        let c: Vec<(Option<f64>, u64)> = l.cumulative().collect();
        assert_eq!(c.len(), BATCH_SECONDS_BOUNDS.len() + 1);
        assert_eq!(c[0], (Some(0.000_01), 1));
        assert_eq!(c[1], (Some(0.000_025), 2));
        assert_eq!(c[c.len() - 2], (Some(10.0), 2));
        assert_eq!(c[c.len() - 1], (None, 3));
        assert_eq!(l.count(), 3);
        assert!((l.sum_seconds() - 20.000_020_001).abs() < 1e-9);
    }
}
