//! Panics on every batch: a panic is a trap, so the host fails the batch and
//! discards the instance.

use eddy_plugin_sdk::{Config, Event, Outcome, Processor};

/// Fails on the first event of every batch.
pub struct Trap;

impl Processor for Trap {
    fn new(_config: Config) -> Result<Self, String> {
        Ok(Trap)
    }

    fn process(&mut self, _event: &mut Event<'_>) -> Outcome {
        panic!("trap plugin always fails")
    }
}

eddy_plugin_sdk::processor!(Trap);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_plugin_sdk::{NewEvent, testing};

    #[test]
    #[should_panic(expected = "trap plugin always fails")]
    fn panics() {
        let _ = testing::run::<Trap>("{}", vec![NewEvent::default()]);
    }
}
