//! Run a [`Processor`](crate::Processor) natively, in a plugin's own unit
//! tests, through the same batch encoding the host uses.

use crate::event::{self, NewEvent};
use crate::{Config, Processor};

/// Configure `P` from `config` (JSON) and run `events` through it as one
/// batch; returns the events that come out, with edits applied, in order.
pub fn run<P: Processor>(config: &str, events: Vec<NewEvent>) -> Result<Vec<NewEvent>, String> {
    let mut instance = P::new(Config::from_json(config)?)?;
    let input = event::Input::new(event::encode(&events))?;
    instance.on_batch(input.len());
    let result = event::run_batch(&input, |e| instance.process(e));
    event::apply(events, result)
}

/// A batch encoded once, the way the host sends it, to run a processor over
/// many times natively: what a plugin benchmark uses to measure the
/// plugin's own work (reading the columns, its logic, writing its edits)
/// apart from the WebAssembly boundary and the host.
pub struct Encoded {
    input: event::Input,
}

impl Encoded {
    /// Encode `events` as one batch.
    pub fn new(events: &[NewEvent]) -> Result<Encoded, String> {
        Ok(Encoded {
            input: event::Input::new(event::encode(events))?,
        })
    }

    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.input.len()
    }

    /// Whether the batch has no events.
    pub fn is_empty(&self) -> bool {
        self.input.len() == 0
    }

    /// Run `instance` over the batch as the exported `process` does and
    /// return how many edits it made (so the work cannot be optimised away).
    pub fn process<P: Processor>(&self, instance: &mut P) -> usize {
        instance.on_batch(self.input.len());
        event::run_batch(&self.input, |e| instance.process(e))
            .edit_keys
            .len()
    }
}

/// Configure pattern plugin `P` from `config` (JSON) and classify `events`
/// as one batch: per event, the bits of the steps whose condition holds and
/// of the steps whose `until` condition holds.
pub fn classify<P: crate::pattern::PatternPlugin>(
    config: &str,
    events: &[NewEvent],
) -> Result<Vec<(u32, u32)>, String> {
    crate::pattern::__private::classify_native::<P>(config, event::encode(events))
}
