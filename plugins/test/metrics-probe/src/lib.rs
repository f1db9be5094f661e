//! Keeps every event unchanged and counts it through the `metrics` import:
//! the plugin-defined counters and gauge that `/metrics` exports.
//!
//! - counter `events_seen`: every event;
//! - counter `page.views`: `$pageview` events (its name is not in the
//!   Prometheus charset, so the host exports it as
//!   `eddy_plugin_metric_page_views_total`);
//! - gauge `last_timestamp_ms`: the timestamp of the last event seen.

use eddy_plugin_sdk::{Config, Event, Outcome, Processor, metrics};

/// The counting processor.
pub struct MetricsProbe;

impl Processor for MetricsProbe {
    const CONFIG_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false}"#;

    fn new(config: Config) -> Result<Self, String> {
        config.only(&[])?;
        Ok(MetricsProbe)
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        metrics::counter_add("events_seen", 1);
        if event.name() == "$pageview" {
            metrics::counter_add("page.views", 1);
        }
        metrics::gauge_set("last_timestamp_ms", event.timestamp() as f64);
        Outcome::Keep
    }
}

eddy_plugin_sdk::processor!(MetricsProbe);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_plugin_sdk::{NewEvent, testing};

    #[test]
    fn keeps_events_unchanged() {
        let events = vec![NewEvent {
            name: "$pageview".into(),
            ..Default::default()
        }];
        let out = testing::run::<MetricsProbe>("{}", events.clone()).unwrap();
        assert_eq!(out, events);
    }
}
