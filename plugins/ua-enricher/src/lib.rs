//! Enriches events from their user agent and URL:
//!
//! - `$user_agent` → `$browser`, `$os`, `$device_type` (and `$browser_version`
//!   with the `browser-version` feature);
//! - `$current_url` → `$host` (with port, like `location.host`) and
//!   `$pathname` (no query or fragment; `/` if empty).
//!
//! Existing values of these properties are overwritten. Only what is
//! recognised is set. Parsing works on bytes, eight at a time where it can,
//! and allocates nothing; it is benchmarked per event.

use eddy_plugin_sdk::{Config, Event, Outcome, Processor};

mod bytes;
mod ua;
mod url;

pub use ua::{UserAgent, parse_user_agent};
pub use url::split_url;

/// The enricher (no state: everything it reads borrows the batch).
pub struct UaEnricher;

impl Processor for UaEnricher {
    const CONFIG_SCHEMA: &'static str =
        r#"{"type":"object","properties":{},"additionalProperties":false}"#;

    fn new(config: Config) -> Result<Self, String> {
        config.only(&[])?;
        Ok(UaEnricher)
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        // `original` borrows the batch, not the event, so the parsed slices
        // can be written straight back without copies.
        if let Some(ua) = event.original("$user_agent").and_then(|v| v.as_str()) {
            let parsed = parse_user_agent(ua);
            if let Some(browser) = parsed.browser {
                event.set_str("$browser", browser);
                #[cfg(feature = "browser-version")]
                if !parsed.version.is_empty() {
                    event.set_str("$browser_version", parsed.version);
                }
            }
            if let Some(os) = parsed.os {
                event.set_str("$os", os);
            }
            if let Some(device_type) = parsed.device_type {
                event.set_str("$device_type", device_type);
            }
        }
        if let Some(url) = event.original("$current_url").and_then(|v| v.as_str()) {
            let (host, pathname) = split_url(url);
            if let Some(host) = host {
                event.set_str("$host", host);
            }
            if let Some(pathname) = pathname {
                event.set_str("$pathname", pathname);
            }
        }
        Outcome::Keep
    }
}

eddy_plugin_sdk::processor!(UaEnricher);

#[cfg(test)]
mod tests;
