//! The embedded default's declared `purchase_funnel` written as a pattern
//! plugin: a product view, one to five adds to cart, a purchase, within 30
//! minutes per user, skipping past the last event. `scripts/bench-patterns`
//! runs both forms over the same events; the plugin classifies in
//! WebAssembly what the declared form classifies with filters.

use eddy_plugin_sdk::Config;
use eddy_plugin_sdk::pattern::{Pattern, PatternPlugin, Skip, minutes};

/// The plugin; it has no configuration.
pub struct PurchaseFunnel;

impl PatternPlugin for PurchaseFunnel {
    fn new(config: Config) -> Result<Self, String> {
        config.only(&[])?;
        Ok(PurchaseFunnel)
    }

    fn pattern(&self) -> Pattern {
        Pattern::begin("view")
            .matching(|e| {
                e.name() == "$pageview"
                    && e.str("$pathname").is_some_and(|p| p.contains("/product/"))
            })
            .followed_by("cart")
            .matching(|e| e.name() == "add_to_cart")
            .times(1, 5)
            .followed_by("purchase")
            .matching(|e| e.name() == "purchase")
            .within(minutes(30))
            .key("distinct_id")
            .skip(Skip::PastLastEvent)
    }
}

eddy_plugin_sdk::pattern!(PurchaseFunnel);
