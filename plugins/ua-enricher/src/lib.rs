//! Enriches events from their user agent and URL:
//!
//! - `$user_agent` → `$browser`, `$os`, `$device_type` (and `$browser_version`
//!   with the `browser-version` feature);
//! - `$current_url` → `$host` (with port, like `location.host`) and
//!   `$pathname` (no query or fragment; `/` if empty).
//!
//! Existing values of these properties are overwritten. Only what is
//! recognised is set. Parsing is a single pass over bytes with no allocation;
//! it is benchmarked per event.

use eddy_plugin_sdk::{Config, Event, Outcome, Processor};

mod ua;
mod url;

pub use ua::{UserAgent, parse_user_agent};
pub use url::split_url;

/// The enricher. The buffers hold copies of borrowed results: an event's
/// values borrow the event, which `set_str` needs mutably.
pub struct UaEnricher {
    #[cfg(feature = "browser-version")]
    version: String,
    host: String,
    pathname: String,
}

impl Processor for UaEnricher {
    const CONFIG_SCHEMA: &'static str =
        r#"{"type":"object","properties":{},"additionalProperties":false}"#;

    fn new(config: Config) -> Result<Self, String> {
        config.only(&[])?;
        Ok(UaEnricher {
            #[cfg(feature = "browser-version")]
            version: String::with_capacity(32),
            host: String::with_capacity(64),
            pathname: String::with_capacity(128),
        })
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        // Read both inputs first (reads are cheapest before any edit), keep
        // what borrows the event in our buffers, then write.
        let (mut browser, mut os, mut device_type) = (None, None, None);
        if let Some(ua) = event.str("$user_agent") {
            let parsed = parse_user_agent(ua);
            #[cfg(feature = "browser-version")]
            {
                self.version.clear();
                self.version.push_str(parsed.version);
            }
            (browser, os, device_type) = (parsed.browser, parsed.os, parsed.device_type);
        }
        let mut url = (false, false);
        if let Some(current_url) = event.str("$current_url") {
            let (host, pathname) = split_url(current_url);
            url = (host.is_some(), pathname.is_some());
            self.host.clear();
            self.host.push_str(host.unwrap_or(""));
            self.pathname.clear();
            self.pathname.push_str(pathname.unwrap_or(""));
        }

        if let Some(browser) = browser {
            event.set_str("$browser", browser);
            #[cfg(feature = "browser-version")]
            if !self.version.is_empty() {
                event.set_str("$browser_version", &self.version);
            }
        }
        if let Some(os) = os {
            event.set_str("$os", os);
        }
        if let Some(device_type) = device_type {
            event.set_str("$device_type", device_type);
        }
        if url.0 {
            event.set_str("$host", &self.host);
        }
        if url.1 {
            event.set_str("$pathname", &self.pathname);
        }
        Outcome::Keep
    }
}

eddy_plugin_sdk::processor!(UaEnricher);

#[cfg(test)]
mod tests;
