//! Records every user in host state (`seen_before` tells whether the user
//! was already there), then panics if the event has a `boom` property — so a
//! test can check that state written by a failed call is discarded.

use eddy_plugin_sdk::{Config, Event, Outcome, Processor, state};

/// The plugin.
pub struct StateThenTrap;

impl Processor for StateThenTrap {
    fn new(config: Config) -> Result<Self, String> {
        config.only(&[])?;
        Ok(StateThenTrap)
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        let key = format!("seen:{}", event.distinct_id());
        let first = state::set_if_absent(&key, &()).unwrap_or(false);
        event.set("seen_before", !first);
        if event.has("boom") {
            panic!("boom after writing state");
        }
        Outcome::Keep
    }
}

eddy_plugin_sdk::processor!(StateThenTrap);
