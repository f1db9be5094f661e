//! Outputs what an event's `bad` property asks for, so tests can check that
//! the host refuses events the ingest rules would have refused:
//!
//! - `empty-distinct-id`: replaced by an event with an empty `distinct_id`;
//! - `duplicate-keys`: split into one event carrying property `k` twice;
//! - `long-string`: kept, with a 20,000-byte string property `blob` added;
//! - `split-ok`: split into two valid events (ids `<id>-0`, `<id>-1`).
//!
//! Events without `bad` are kept unchanged.

use eddy_plugin_sdk::{Config, Event, NewEvent, Outcome, OwnedValue, Processor};

/// The plugin.
pub struct BadEvents;

/// A valid event built from `event`.
fn copy(event: &Event<'_>) -> NewEvent {
    NewEvent {
        id: String::new(),
        name: event.name().to_owned(),
        timestamp: event.timestamp(),
        distinct_id: event.distinct_id().to_owned(),
        session_id: None,
        properties: Vec::new(),
    }
}

impl Processor for BadEvents {
    const CONFIG_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false}"#;

    fn new(config: Config) -> Result<Self, String> {
        config.only(&[])?;
        Ok(BadEvents)
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        let Some(bad) = event.str("bad").map(str::to_owned) else {
            return Outcome::Keep;
        };
        match bad.as_str() {
            "empty-distinct-id" => Outcome::Replace(NewEvent {
                distinct_id: String::new(),
                ..copy(event)
            }),
            "duplicate-keys" => {
                let mut e = copy(event);
                // Pushed directly: `NewEvent::set` would replace the first.
                e.properties.push(("k".into(), OwnedValue::Int(1)));
                e.properties.push(("k".into(), OwnedValue::Int(2)));
                Outcome::Split(vec![e])
            }
            "long-string" => {
                event.set("blob", "x".repeat(20_000));
                Outcome::Keep
            }
            "split-ok" => Outcome::Split(vec![copy(event), copy(event)]),
            _ => Outcome::Keep,
        }
    }
}

eddy_plugin_sdk::processor!(BadEvents);
