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
