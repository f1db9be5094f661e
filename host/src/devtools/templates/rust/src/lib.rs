//! {{name}}: tags every event with the team that owns it (`$team`, from the
//! `team` setting) and drops debug events (names starting with `debug_`).

use eddy_plugin_sdk::{Config, Event, Outcome, Processor};

/// The processor; one instance per stage.
pub struct Plugin {
    team: String,
}

impl Processor for Plugin {
    const CONFIG_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false,
        "properties":{"team":{"type":"string","description":"value of $team"}}}"#;

    fn new(config: Config) -> Result<Self, String> {
        config.only(&["team"])?;
        Ok(Plugin {
            team: config.string_or("team", "web")?,
        })
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        if event.name().starts_with("debug_") {
            return Outcome::Drop;
        }
        event.set("$team", self.team.as_str());
        Outcome::Keep
    }
}

eddy_plugin_sdk::processor!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_plugin_sdk::{NewEvent, testing};

    #[test]
    fn tags_events_and_drops_debug_ones() {
        let events = vec![
            NewEvent {
                name: "$pageview".into(),
                ..Default::default()
            },
            NewEvent {
                name: "debug_ping".into(),
                ..Default::default()
            },
        ];
        let out = testing::run::<Plugin>(r#"{"team":"growth"}"#, events).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].get("$team").and_then(|v| v.as_str()), Some("growth"));
    }
}
