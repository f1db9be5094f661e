//! Busy-waits for `ms` milliseconds (default 50) on every batch, then keeps
//! all events: a plugin that is slow but well-behaved, for timeout and
//! back-pressure tests.

use eddy_plugin_sdk::{Config, Event, Outcome, Processor};
use serde::Deserialize;
use std::time::{Duration, Instant};

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
    "ms": {"type": "integer", "minimum": 0, "default": 50, "description": "Milliseconds to busy-wait per batch"}
  },
  "additionalProperties": false
}"#;

    fn new(config: Config) -> Result<Self, String> {
        let Settings { ms } = config.parse()?;
        Ok(Slow { ms })
    }

    fn on_batch(&mut self, _events: usize) {
        busy_wait(self.ms);
    }

    fn process(&mut self, _event: &mut Event<'_>) -> Outcome {
        Outcome::Keep
    }
}

eddy_plugin_sdk::processor!(Slow);

/// Spin (no sleeping: plugins get no timers) until `ms` milliseconds passed.
pub fn busy_wait(ms: u64) {
    let deadline = Duration::from_millis(ms);
    let start = Instant::now();
    while start.elapsed() < deadline {
        std::hint::spin_loop();
    }
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
    fn busy_wait_waits() {
        let start = Instant::now();
        busy_wait(20);
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn rejects_unknown_key() {
        let err = testing::run::<Slow>(r#"{"millis": 5}"#, vec![])
            .err()
            .unwrap();
        assert!(err.contains("millis"), "{err}");
    }
}
