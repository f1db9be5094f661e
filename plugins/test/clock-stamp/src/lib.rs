//! Stamps every event with what the plugin sees of the world: the wall
//! clock (`clock_ms`) and a value derived from WASI randomness (`random`),
//! so tests can check that `eddy plugin test` runs on a virtual clock with
//! fixed-seed randomness.

use std::hash::{BuildHasher, Hasher};

use eddy_plugin_sdk::{Config, Event, Outcome, Processor};

/// The stamper.
pub struct ClockStamp;

impl Processor for ClockStamp {
    fn new(config: Config) -> Result<Self, String> {
        config.only(&[])?;
        Ok(ClockStamp)
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(-1);
        event.set("clock_ms", now);
        // std seeds its hash keys from WASI random.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(0);
        event.set("random", (h.finish() >> 1) as i64);
        Outcome::Keep
    }
}

eddy_plugin_sdk::processor!(ClockStamp);
