//! A pattern plugin: a burst of failed logins that ends in a successful
//! one — a password guessed — per user, within a minute.
//!
//! Contiguity, and why: the failures are `consecutive` and the success
//! comes `next`, both strict, so the user's events form an unbroken run
//! `login_failed × n, login_succeeded` (n ≥ 3). A failure streak with
//! anything else of the same user in between is a person fumbling, not a
//! burst; relaxed contiguity (`followed_by`) would also match a success
//! after a browse. Contiguity is per key: other users' events in between
//! do not count. After a match, matching resumes past its last event, so one
//! burst is reported once, not once per suffix of the streak.

use eddy_plugin_sdk::Config;
#[cfg(feature = "stamped")]
use eddy_plugin_sdk::pattern::{Match, Verdict};
use eddy_plugin_sdk::pattern::{Pattern, PatternPlugin, Skip, minutes};

/// Failed logins that make a burst.
#[cfg(not(feature = "four-failures"))]
pub const FAILURES: u32 = 3;
/// Failed logins that make a burst (version 2 of the plugin).
#[cfg(feature = "four-failures")]
pub const FAILURES: u32 = 4;

/// The plugin; it has no configuration.
pub struct LoginBurst;

impl PatternPlugin for LoginBurst {
    #[cfg(feature = "stamped")]
    const WANTS_MATCHES: bool = true;

    fn new(config: Config) -> Result<Self, String> {
        config.only(&[])?;
        Ok(LoginBurst)
    }

    fn pattern(&self) -> Pattern {
        Pattern::begin("failures")
            .matching(|e| e.name() == "login_failed")
            .times_or_more(FAILURES)
            .consecutive()
            .next("success")
            .matching(|e| e.name() == "login_succeeded")
            .within(minutes(1))
            .key("distinct_id")
            .skip(Skip::PastLastEvent)
    }

    #[cfg(feature = "stamped")]
    fn on_match(&mut self, _m: &Match<'_>) -> Verdict {
        Verdict::Keep(Some(eddy_plugin_sdk::serde_json::json!({"version": 2})))
    }
}

eddy_plugin_sdk::pattern!(LoginBurst);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use eddy_plugin_sdk::NewEvent;
    use eddy_plugin_sdk::testing;

    #[test]
    fn each_event_satisfies_its_own_step() {
        let events: Vec<NewEvent> = ["login_failed", "login_succeeded", "$pageview"]
            .into_iter()
            .map(|name| NewEvent {
                name: name.into(),
                distinct_id: "u".into(),
                ..Default::default()
            })
            .collect();
        let bits = testing::classify::<LoginBurst>("{}", &events).unwrap();
        assert_eq!(bits, vec![(0b01, 0), (0b10, 0), (0, 0)]);
    }

    #[test]
    fn configuration_is_refused() {
        assert!(LoginBurst::new(Config::from_json(r#"{"x":1}"#).unwrap()).is_err());
    }
}
