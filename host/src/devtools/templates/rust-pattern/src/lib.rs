//! {{name}}: a pattern plugin. One or more `add_to_cart`, then a `purchase`,
//! per user, within 30 minutes; a match is kept (with the basket total
//! attached) when the carts' `price` adds up to `min_total` or more.

use eddy_plugin_sdk::Config;
use eddy_plugin_sdk::pattern::{Match, Pattern, PatternPlugin, Skip, Verdict, minutes};

/// The plugin, configured.
pub struct Plugin {
    min_total: f64,
}

impl PatternPlugin for Plugin {
    const CONFIG_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false,"properties":{"min_total":{"type":"number"}}}"#;
    const WANTS_MATCHES: bool = true;

    fn new(config: Config) -> Result<Self, String> {
        config.only(&["min_total"])?;
        let min_total = match config.get("min_total") {
            None => 100.0,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("config key `min_total` must be a number, got {v}"))?,
        };
        Ok(Plugin { min_total })
    }

    fn pattern(&self) -> Pattern {
        Pattern::begin("cart")
            .matching(|e| e.name() == "add_to_cart")
            .one_or_more()
            .followed_by("purchase")
            .matching(|e| e.name() == "purchase")
            .within(minutes(30))
            .skip(Skip::PastLastEvent)
    }

    fn on_match(&mut self, m: &Match<'_>) -> Verdict {
        let total = m.sum("cart", "price");
        if total < self.min_total {
            return Verdict::Reject;
        }
        Verdict::Keep(Some(eddy_plugin_sdk::serde_json::json!({ "basket_total": total })))
    }
}

eddy_plugin_sdk::pattern!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_plugin_sdk::{NewEvent, testing};

    #[test]
    fn carts_and_purchases_satisfy_their_steps() {
        let events: Vec<NewEvent> = ["add_to_cart", "purchase", "$pageview"]
            .into_iter()
            .map(|name| NewEvent {
                name: name.into(),
                ..Default::default()
            })
            .collect();
        let bits = testing::classify::<Plugin>("{}", &events);
        assert_eq!(bits, Ok(vec![(0b01, 0), (0b10, 0), (0, 0)]));
    }
}
