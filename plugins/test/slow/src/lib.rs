//! Works for about `ms` milliseconds (default 50) on every batch, then keeps
//! all events: a plugin that is slow but well-behaved, for timeout and
//! back-pressure tests.
//!
//! It cannot wait on a clock: eddy gives plugins the batch's time, which
//! stands still during a call (so a replay sees what the live run saw), and
//! a loop waiting for it to move would only end at the call's deadline.
//! It spins a fixed amount of work instead, [`STEPS_PER_MS`] steps per
//! millisecond asked for.

use eddy_plugin_sdk::{Config, Event, Outcome, Processor};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "Settings::default_ms")]
    ms: u64,
}

impl Settings {
    const DEFAULT_MS: u64 = 50;
    fn default_ms() -> u64 {
        Self::DEFAULT_MS
    }
}

/// Keeps every event; the waiting happens once per batch.
pub struct Slow {
    /// Milliseconds to spin per batch.
    pub ms: u64,
}

impl Processor for Slow {
    const CONFIG_SCHEMA: &'static str = r#"{
  "type": "object",
  "properties": {
    "ms": {"type": "integer", "minimum": 0, "default": 50, "description": "Milliseconds of work per batch (about: a fixed number of steps, calibrated on a 2-vCPU x86-64 VM)"}
  },
  "additionalProperties": false
}"#;

    fn new(config: Config) -> Result<Self, String> {
        let Settings { ms } = config.parse()?;
        Ok(Slow { ms })
    }

    fn on_batch(&mut self, _events: usize) {
        spin(self.ms);
    }

    fn process(&mut self, _event: &mut Event<'_>) -> Outcome {
        Outcome::Keep
    }
}

eddy_plugin_sdk::processor!(Slow);

/// Steps of [`spin`] per millisecond: measured under wasmtime on the
/// 2-vCPU AMD EPYC VM the test suite runs on (a native build is about as
/// fast). A faster machine finishes sooner; the tests that use this plugin
/// need it slow, not exact.
pub const STEPS_PER_MS: u64 = 475_000;

/// Spin about `ms` milliseconds: a chain of xorshift steps no compiler can
/// shorten. Returns the last state so the work is observable.
pub fn spin(ms: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..ms.saturating_mul(STEPS_PER_MS) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = std::hint::black_box(x);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_plugin_sdk::{NewEvent, testing};

    #[test]
    fn keeps_events_and_reads_ms() {
        let slow = Slow::new(Config::from_json(r#"{"ms": 5}"#).unwrap()).unwrap();
        assert_eq!(slow.ms, 5);
        let default = Slow::new(Config::default()).unwrap();
        assert_eq!(default.ms, 50);
        let events = vec![NewEvent::default(), NewEvent::default()];
        assert_eq!(
            testing::run::<Slow>(r#"{"ms": 0}"#, events.clone()).unwrap(),
            events
        );
    }

    #[test]
    fn spin_does_work_in_proportion_to_ms() {
        assert_eq!(spin(0), 0x9E37_79B9_7F4A_7C15);
        assert_ne!(spin(1), spin(0));
        assert_eq!(spin(1), spin(1));
        assert_ne!(spin(2), spin(1));
    }

    #[test]
    fn rejects_unknown_key() {
        let err = testing::run::<Slow>(r#"{"millis": 5}"#, vec![])
            .err()
            .unwrap();
        assert!(err.contains("millis"), "{err}");
    }
}
