//! Marks the first event of each `distinct_id` with `$is_first_seen = true`.
//!
//! "Seen" lives in the host's state store (`seen:<distinct_id>`), not in
//! guest memory, so it survives traps and hot swaps. With the
//! `mark-returning` feature, returning users' events get `false`.

use eddy_plugin_sdk::{Config, Event, Outcome, Processor, log, metrics, state};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_property")]
    property: String,
}

fn default_property() -> String {
    "$is_first_seen".to_owned()
}

/// The marker.
pub struct FirstSeen {
    property: String,
    /// Reused `seen:<distinct_id>` key.
    key: String,
    /// Whether a state error was already logged (logged once per instance).
    warned: bool,
}

impl Processor for FirstSeen {
    const CONFIG_SCHEMA: &'static str = r#"{
  "type": "object",
  "properties": {
    "property": {"type": "string", "default": "$is_first_seen", "description": "Boolean property set on a user's first event"}
  },
  "additionalProperties": false
}"#;

    fn new(config: Config) -> Result<Self, String> {
        let Settings { property } = config.parse()?;
        if property.is_empty() {
            return Err("config key `property` must not be empty".to_owned());
        }
        Ok(FirstSeen {
            property,
            key: String::with_capacity(64),
            warned: false,
        })
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        let distinct_id = event.distinct_id();
        if distinct_id.is_empty() {
            return Outcome::Keep;
        }
        self.key.clear();
        self.key.push_str("seen:");
        self.key.push_str(distinct_id);
        match state::set_if_absent(&self.key, &()) {
            Ok(true) => event.set(&self.property, true),
            Ok(false) => {
                #[cfg(feature = "mark-returning")]
                event.set(&self.property, false);
            }
            Err(e) => {
                // Full store: leave the event unmarked rather than guess.
                metrics::counter_add("state_errors", 1);
                if !std::mem::replace(&mut self.warned, true) {
                    log::warn(&format!("first-seen cannot record users: {e}"));
                }
            }
        }
        Outcome::Keep
    }
}

eddy_plugin_sdk::processor!(FirstSeen);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_plugin_sdk::{NewEvent, testing};

    fn event(user: &str) -> NewEvent {
        NewEvent {
            name: "$pageview".into(),
            distinct_id: user.into(),
            ..Default::default()
        }
    }

    /// The `property` value of each output event.
    fn marks_of(config: &str, property: &str, users: &[&str]) -> Vec<Option<bool>> {
        let events = users.iter().map(|u| event(u)).collect();
        testing::run::<FirstSeen>(config, events)
            .unwrap()
            .iter()
            .map(|e| e.get(property).and_then(|v| v.as_bool()))
            .collect()
    }

    fn marks(config: &str, users: &[&str]) -> Vec<Option<bool>> {
        marks_of(config, "$is_first_seen", users)
    }

    /// What a returning user's event carries.
    const RETURNING: Option<bool> = if cfg!(feature = "mark-returning") {
        Some(false)
    } else {
        None
    };

    #[test]
    fn marks_only_first_event_per_user() {
        let out = marks("{}", &["fs-a", "fs-b", "fs-a", "fs-c", "fs-b", "fs-a"]);
        let t = Some(true);
        assert_eq!(out, vec![t, t, RETURNING, t, RETURNING, RETURNING]);
    }

    #[test]
    fn remembers_users_across_batches_and_instances() {
        assert_eq!(marks("{}", &["fs-x"]), vec![Some(true)]);
        // A new instance (as after a trap or hot swap) sees the same state.
        assert_eq!(marks("{}", &["fs-x", "fs-y"]), vec![RETURNING, Some(true)]);
    }

    #[test]
    fn returning_events_are_otherwise_unchanged() {
        let first = testing::run::<FirstSeen>("{}", vec![event("fs-r").with("k", "v")]).unwrap();
        assert_eq!(first[0].properties.len(), 2);
        let again = testing::run::<FirstSeen>("{}", vec![event("fs-r").with("k", "v")]).unwrap();
        let expected = if cfg!(feature = "mark-returning") {
            2
        } else {
            1
        };
        assert_eq!(again[0].properties.len(), expected);
        assert_eq!(again[0].get("k").and_then(|v| v.as_str()), Some("v"));
    }

    #[test]
    fn property_is_configurable() {
        assert_eq!(
            marks_of(r#"{"property": "seen_first"}"#, "seen_first", &["fs-p"]),
            vec![Some(true)]
        );
    }

    #[test]
    fn empty_distinct_id_is_left_alone() {
        assert_eq!(marks("{}", &["", ""]), vec![None, None]);
    }

    #[test]
    fn unknown_config_key_is_named() {
        let err = testing::run::<FirstSeen>(r#"{"propety": "x"}"#, vec![])
            .err()
            .unwrap();
        assert!(err.contains("unknown field `propety`"), "{err}");
    }
}
