//! Run a [`Processor`](crate::Processor) natively, in a plugin's own unit
//! tests, through the same batch encoding the host uses.

use crate::bindings::eddy::plugin::types as wit;
use crate::event::{self, NewEvent};
use crate::{Config, Processor};

/// Configure `P` from `config` (JSON) and run `events` through it as one
/// batch; returns the events that come out, with edits applied, in order.
pub fn run<P: Processor>(config: &str, events: Vec<NewEvent>) -> Result<Vec<NewEvent>, String> {
    let mut instance = P::new(Config::from_json(config)?)?;
    let input = event::Input::new(event::encode(&events))?;
    let result = event::run_batch(&input, |e| instance.process(e));
    let text = String::from_utf8(result.output.text)
        .map_err(|e| format!("output text is not UTF-8: {e}"))?;
    let mut out = Vec::new();
    for (input_event, outcome) in events.into_iter().zip(result.outcomes) {
        match outcome {
            wit::Outcome::Keep => out.push(input_event),
            wit::Outcome::Drop => {}
            wit::Outcome::Modify(r) => {
                let mut e = input_event;
                let edits = &result.edits[r.start as usize..(r.start + r.len) as usize];
                for edit in edits {
                    match event::read_edit(&text, edit) {
                        (k, Some(v)) => e.set(&k, v),
                        (k, None) => e.properties.retain(|(name, _)| *name != k),
                    }
                }
                out.push(e);
            }
            wit::Outcome::Replace(i) => {
                let raw = &result.output.events[i as usize];
                out.push(event::decode_event(&text, &result.output.properties, raw));
            }
            wit::Outcome::Split(r) => {
                for raw in &result.output.events[r.start as usize..(r.start + r.len) as usize] {
                    out.push(event::decode_event(&text, &result.output.properties, raw));
                }
            }
        }
    }
    Ok(out)
}
