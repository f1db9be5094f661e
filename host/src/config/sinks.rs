//! `[[sinks.kafka]]`: channels `eddy serve` publishes to Kafka topics.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ConfigError;
use super::raw::{Int, Range, Validator, int};
use super::sources::{RawBrokers, RawOption};

/// Default [`KafkaSinkConfig::queue_messages`]: librdkafka's own default
/// bound on messages waiting to be sent.
pub const DEFAULT_SINK_QUEUE_MESSAGES: u64 = 100_000;

const QUEUE_MESSAGES: Range = Range {
    min: 1,
    // librdkafka's upper limit for queue.buffering.max.messages.
    max: Some(2_147_483_647),
    unit: "messages",
};

/// `[sinks]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinksConfig {
    /// `[[sinks.kafka]]`, in order.
    pub kafka: Vec<KafkaSinkConfig>,
}

/// One `[[sinks.kafka]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSinkConfig {
    /// `brokers`: the bootstrap servers, `host:port` separated by commas.
    pub brokers: String,
    /// `channel`: the hub channel published (`events`, `windows/<name>`,
    /// `patterns/<name>`, `alerts`, `dead-letters`, `late`, `plugins`).
    pub channel: String,
    /// `topic`: where its messages go.
    pub topic: String,
    /// `queue_messages`: messages waiting to be sent, at most; a message
    /// that does not fit is counted as dropped.
    pub queue_messages: u64,
    /// `options`: further librdkafka producer settings.
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSinks {
    kafka: Vec<RawKafkaSink>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafkaSink {
    brokers: RawBrokers,
    channel: String,
    topic: String,
    #[serde(default = "default_queue")]
    queue_messages: Int,
    #[serde(default)]
    options: BTreeMap<String, RawOption>,
}

fn default_queue() -> Int {
    int(DEFAULT_SINK_QUEUE_MESSAGES)
}

impl Validator<'_> {
    pub(super) fn sinks(
        &self,
        raw: RawSinks,
        windows: &[crate::window::WindowConfig],
    ) -> Result<SinksConfig, ConfigError> {
        let mut kafka = Vec::new();
        for (i, k) in raw.kafka.into_iter().enumerate() {
            let key = |k: &str| format!("sinks.kafka[{i}].{k}");
            let brokers = self.brokers(&key("brokers"), k.brokers)?;
            let fixed = ["events", "dead-letters", "plugins", "late", "alerts"];
            let known = fixed.contains(&k.channel.as_str())
                || k.channel
                    .strip_prefix("windows/")
                    .is_some_and(|w| windows.iter().any(|d| d.name == w))
                || k.channel
                    .strip_prefix("patterns/")
                    .is_some_and(|p| !p.is_empty());
            if !known {
                return Err(self.invalid(
                    key("channel"),
                    format!(
                        "`{}` is not a channel: one of {}, `windows/<a declared window>` or `patterns/<name>`",
                        k.channel,
                        fixed.map(|c| format!("`{c}`")).join(", ")
                    ),
                ));
            }
            if k.topic.is_empty()
                || k.topic.len() > 249
                || !k
                    .topic
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(self.invalid(
                    key("topic"),
                    format!("`{}` is not a Kafka topic name", k.topic),
                ));
            }
            let queue_messages =
                self.range(&key("queue_messages"), k.queue_messages, QUEUE_MESSAGES)?;
            let options = self.kafka_options(&key("options"), k.options)?;
            kafka.push(KafkaSinkConfig {
                brokers,
                channel: k.channel,
                topic: k.topic,
                queue_messages,
                options,
            });
        }
        Ok(SinksConfig { kafka })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "eddy.toml", &|_| None).map_err(|e| e.to_string())
    }

    const OK: &str = r#"
[[windows]]
name = "per_minute"
kind = "tumbling"
size = "1m"
aggregates = ["count"]

[[sinks.kafka]]
brokers = ["127.0.0.1:9092"]
channel = "windows/per_minute"
topic = "eddy-per-minute"
"#;

    #[test]
    fn a_kafka_sink_parses_and_bad_ones_name_the_key() {
        let c = parse(OK).unwrap();
        assert_eq!(c.sinks.kafka[0].channel, "windows/per_minute");
        assert_eq!(c.sinks.kafka[0].queue_messages, 100_000);
        for (text, key) in [
            (
                OK.replace("windows/per_minute", "windows/nope"),
                "sinks.kafka[0].channel",
            ),
            (OK.replace("eddy-per-minute", "a b"), "sinks.kafka[0].topic"),
            (
                format!("{OK}queue_messages = 0\n"),
                "sinks.kafka[0].queue_messages",
            ),
        ] {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(key), "{key}: {err}");
        }
    }
}
