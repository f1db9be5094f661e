//! Keeps every event unchanged: the cost of a plugin call with no work in it.

use eddy_plugin_sdk::{Config, Event, Outcome, Processor};

/// The no-op processor.
pub struct PassThrough;

impl Processor for PassThrough {
    const CONFIG_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false}"#;

    fn new(config: Config) -> Result<Self, String> {
        config.only(&[])?;
        Ok(PassThrough)
    }

    fn process(&mut self, _event: &mut Event<'_>) -> Outcome {
        Outcome::Keep
    }
}

eddy_plugin_sdk::processor!(PassThrough);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_plugin_sdk::{NewEvent, testing};

    #[test]
    fn keeps_events_unchanged() {
        let events = vec![
            NewEvent {
                name: "a".into(),
                ..Default::default()
            }
            .with("x", 1),
            NewEvent {
                name: "b".into(),
                ..Default::default()
            },
        ];
        let out = testing::run::<PassThrough>("{}", events.clone()).unwrap();
        assert_eq!(out, events);
    }

    #[test]
    fn rejects_config_keys() {
        let err = testing::run::<PassThrough>(r#"{"x":1}"#, vec![])
            .err()
            .unwrap();
        assert!(err.contains("`x`"), "{err}");
    }
}
