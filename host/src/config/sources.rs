//! `[[sources.kafka]]`: topics `eddy serve` consumes as a member of a
//! Kafka consumer group, besides HTTP ingest.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ConfigError;
use super::raw::Validator;

/// The first source id of Kafka sources (0 is HTTP ingest and files):
/// `sources.kafka[i]` is source `KAFKA_SOURCE_BASE + i`.
pub const KAFKA_SOURCE_BASE: u32 = 1;

/// librdkafka settings eddy sets itself: the group, the brokers and how
/// offsets are stored and committed (eddy commits after its checkpoints).
const RESERVED_OPTIONS: &[&str] = &[
    "group.id",
    "bootstrap.servers",
    "metadata.broker.list",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
];

/// Longest topic name Kafka accepts.
const MAX_TOPIC_BYTES: usize = 249;

/// `[sources]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourcesConfig {
    /// `[[sources.kafka]]`, in order.
    pub kafka: Vec<KafkaSourceConfig>,
}

/// How a record's value is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaFormat {
    /// eddy's JSON: one event object (or an array of them), as `POST
    /// /v1/events` takes.
    Eddy,
    /// PostHog's capture JSON (one event, or a `batch`), as `POST
    /// /capture` takes.
    PostHog,
    /// Window results with their state, published by windows with
    /// `partials = true`, for the windows with `merge_from`.
    Partials,
}

/// Where an event's timestamp comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaTimestamp {
    /// The event's own `timestamp` (the receive time when it has none), as
    /// over HTTP.
    Event,
    /// The Kafka record's timestamp, replacing the event's.
    Record,
}

/// One `[[sources.kafka]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSourceConfig {
    /// `brokers`: the bootstrap servers, `host:port` separated by commas.
    pub brokers: String,
    /// `topics`: what to consume.
    pub topics: Vec<String>,
    /// `group_id`: the consumer group.
    pub group_id: String,
    /// `format`: how a record's value is decoded.
    pub format: KafkaFormat,
    /// `timestamp`: the event's or the record's.
    pub timestamp: KafkaTimestamp,
    /// `options`: further librdkafka settings, passed through (checked by
    /// librdkafka when the configuration is loaded).
    pub options: BTreeMap<String, String>,
    /// `revoke_wait`: the longest a revocation waits for a durable
    /// checkpoint covering the revoked partitions' records (it asks for one
    /// at once) before committing what is durable.
    pub revoke_wait: std::time::Duration,
}

/// Default `revoke_wait`: 30 s, well inside librdkafka's default
/// `max.poll.interval.ms` (5 minutes).
pub const DEFAULT_REVOKE_WAIT_MS: i64 = 30_000;
/// Largest `revoke_wait`: a rebalance callback that takes longer than
/// `max.poll.interval.ms` (default 5 minutes) gets the member expelled.
const MAX_REVOKE_WAIT_MS: i64 = 240_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSources {
    kafka: Vec<RawKafka>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawFormat {
    Eddy,
    #[serde(rename = "posthog")]
    PostHog,
    Partials,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawTimestamp {
    Event,
    Record,
}

/// A librdkafka setting as written: a string, a number or a boolean.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawOption {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// `brokers` as a string or a list of `host:port`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawBrokers {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    brokers: RawBrokers,
    topics: Vec<String>,
    group_id: String,
    #[serde(default)]
    format: Option<RawFormat>,
    #[serde(default)]
    timestamp: Option<RawTimestamp>,
    #[serde(default)]
    options: BTreeMap<String, RawOption>,
    #[serde(default)]
    revoke_wait: Option<String>,
}

fn is_topic(name: &str) -> bool {
    (1..=MAX_TOPIC_BYTES).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Validator<'_> {
    pub(super) fn sources(
        &self,
        raw: RawSources,
        wal_enabled: bool,
        windows: &[crate::window::WindowConfig],
    ) -> Result<SourcesConfig, ConfigError> {
        if !raw.kafka.is_empty() && !wal_enabled {
            return Err(self.invalid(
                "sources.kafka",
                "needs the write-ahead log ([wal] enabled = true): a Kafka source's offsets live in eddy's checkpoints",
            ));
        }
        let kafka = raw
            .kafka
            .into_iter()
            .enumerate()
            .map(|(i, k)| self.kafka(i, k))
            .collect::<Result<Vec<_>, _>>()?;
        // Partial results and the windows that merge them come together.
        let merging = windows.iter().position(|w| w.merge_from.is_some());
        let partials = kafka.iter().position(|k| k.format == KafkaFormat::Partials);
        match (merging, partials) {
            (Some(w), None) => {
                return Err(self.invalid(
                    format!("windows[{w}].merge_from"),
                    "no [[sources.kafka]] has format = \"partials\" to read the partial results it merges",
                ));
            }
            (None, Some(k)) => {
                return Err(self.invalid(
                    format!("sources.kafka[{k}].format"),
                    "\"partials\" feeds windows with `merge_from`, and no window has one",
                ));
            }
            _ => {}
        }
        Ok(SourcesConfig { kafka })
    }

    /// `brokers` checked and joined with commas.
    pub(super) fn brokers(&self, key: &str, raw: RawBrokers) -> Result<String, ConfigError> {
        let brokers: Vec<String> = match raw {
            RawBrokers::One(s) => s.split(',').map(|b| b.trim().to_owned()).collect(),
            RawBrokers::Many(v) => v,
        };
        if brokers.is_empty() || brokers.iter().any(|b| b.trim().is_empty()) {
            return Err(self.invalid(
                key,
                "must name at least one broker, and no empty one (\"host:port\")",
            ));
        }
        for b in &brokers {
            let port = b.rsplit_once(':').map(|(_, p)| p);
            if port.is_none_or(|p| p.parse::<u16>().is_err()) {
                return Err(self.invalid(
                    key,
                    format!("`{b}` is not host:port (e.g. \"127.0.0.1:9092\")"),
                ));
            }
        }
        Ok(brokers.join(","))
    }

    /// librdkafka settings passed through, checked by librdkafka.
    pub(super) fn kafka_options(
        &self,
        key: &str,
        raw: BTreeMap<String, RawOption>,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut options = BTreeMap::new();
        for (name, value) in raw {
            if RESERVED_OPTIONS.contains(&name.as_str()) {
                return Err(self.invalid(
                    format!("{key}.\"{name}\""),
                    "is set by eddy (brokers, group_id, and offsets, which eddy commits after its checkpoints); remove it",
                ));
            }
            let value = match value {
                RawOption::Str(s) => s,
                RawOption::Int(n) => n.to_string(),
                RawOption::Bool(b) => b.to_string(),
            };
            // librdkafka checks every name and value when it is set,
            // without connecting to anything.
            let mut one = rdkafka::ClientConfig::new();
            one.set(&name, &value);
            if let Err(e) = one.create_native_config() {
                return Err(self.invalid(
                    format!("{key}.\"{name}\""),
                    format!("librdkafka refuses it: {e}"),
                ));
            }
            options.insert(name, value);
        }
        Ok(options)
    }

    fn kafka(&self, i: usize, raw: RawKafka) -> Result<KafkaSourceConfig, ConfigError> {
        let key = |k: &str| format!("sources.kafka[{i}].{k}");
        let brokers = self.brokers(&key("brokers"), raw.brokers)?;
        if raw.topics.is_empty() {
            return Err(self.invalid(key("topics"), "must name at least one topic"));
        }
        for (t, topic) in raw.topics.iter().enumerate() {
            if !is_topic(topic) {
                return Err(self.invalid(
                    format!("{}[{t}]", key("topics")),
                    format!("`{topic}` is not a Kafka topic name (1 to {MAX_TOPIC_BYTES} ASCII letters, digits, `.`, `_` or `-`)"),
                ));
            }
            if raw.topics[..t].contains(topic) {
                return Err(self.invalid(
                    format!("{}[{t}]", key("topics")),
                    format!("topic `{topic}` is listed twice"),
                ));
            }
        }
        if raw.group_id.trim().is_empty() {
            return Err(self.invalid(key("group_id"), "must not be empty"));
        }
        let options = self.kafka_options(&key("options"), raw.options)?;
        if matches!(raw.format, Some(RawFormat::Partials)) && raw.timestamp.is_some() {
            return Err(self.invalid(
                key("timestamp"),
                "is not used with format = \"partials\" (a partial result's time is its window's)",
            ));
        }
        let revoke_wait = match raw.revoke_wait {
            None => DEFAULT_REVOKE_WAIT_MS,
            Some(text) => {
                let ms = self.duration(&key("revoke_wait"), &text, 0)?;
                if ms > MAX_REVOKE_WAIT_MS {
                    return Err(self.invalid(
                        key("revoke_wait"),
                        format!("`{text}` must be at most 4m: a rebalance that takes longer than librdkafka's max.poll.interval.ms (5m) expels the member"),
                    ));
                }
                ms
            }
        };
        Ok(KafkaSourceConfig {
            brokers,
            topics: raw.topics,
            group_id: raw.group_id,
            format: match raw.format {
                None | Some(RawFormat::Eddy) => KafkaFormat::Eddy,
                Some(RawFormat::PostHog) => KafkaFormat::PostHog,
                Some(RawFormat::Partials) => KafkaFormat::Partials,
            },
            timestamp: match raw.timestamp {
                None | Some(RawTimestamp::Event) => KafkaTimestamp::Event,
                Some(RawTimestamp::Record) => KafkaTimestamp::Record,
            },
            options,
            revoke_wait: std::time::Duration::from_millis(revoke_wait.unsigned_abs()),
        })
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
[[sources.kafka]]
brokers = "127.0.0.1:9092"
topics = ["events"]
group_id = "eddy"
format = "posthog"
timestamp = "record"
[sources.kafka.options]
"fetch.wait.max.ms" = 50
"client.id" = "eddy-1"
"#;

    #[test]
    fn a_kafka_source_parses_with_its_options() {
        let c = parse(OK).unwrap();
        let k = &c.sources.kafka[0];
        assert_eq!(k.brokers, "127.0.0.1:9092");
        assert_eq!(k.topics, ["events"]);
        assert_eq!(k.format, super::KafkaFormat::PostHog);
        assert_eq!(k.timestamp, super::KafkaTimestamp::Record);
        assert_eq!(k.options["fetch.wait.max.ms"], "50");
        assert_eq!(k.revoke_wait, std::time::Duration::from_secs(30));
        let c = parse(&OK.replace("timestamp = ", "revoke_wait = \"2s\"\ntimestamp = ")).unwrap();
        assert_eq!(
            c.sources.kafka[0].revoke_wait,
            std::time::Duration::from_secs(2)
        );
        let c = parse("").unwrap();
        assert!(c.sources.kafka.is_empty());
    }

    #[test]
    fn bad_kafka_sources_are_refused_naming_the_key() {
        let cases = [
            (
                OK.replace("127.0.0.1:9092", "localhost"),
                "sources.kafka[0].brokers",
            ),
            (OK.replace("[\"events\"]", "[]"), "sources.kafka[0].topics"),
            (
                OK.replace("[\"events\"]", "[\"ev ents\"]"),
                "sources.kafka[0].topics[0]",
            ),
            (
                OK.replace("group_id = \"eddy\"", "group_id = \"\""),
                "sources.kafka[0].group_id",
            ),
            (
                OK.replace("\"client.id\"", "\"enable.auto.commit\""),
                "sources.kafka[0].options.\"enable.auto.commit\"",
            ),
            (
                OK.replace("\"client.id\"", "\"no.such.setting\""),
                "sources.kafka[0].options.\"no.such.setting\"",
            ),
            (
                OK.replace("= 50", "= \"soon\""),
                "sources.kafka[0].options.\"fetch.wait.max.ms\"",
            ),
            (format!("{OK}\n[wal]\nenabled = false\n"), "sources.kafka"),
            (
                OK.replace("timestamp = ", "revoke_wait = \"soon\"\ntimestamp = "),
                "sources.kafka[0].revoke_wait",
            ),
            (
                OK.replace("timestamp = ", "revoke_wait = \"10m\"\ntimestamp = "),
                "sources.kafka[0].revoke_wait",
            ),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(key), "{key}: {err}");
        }
        let err = parse(&OK.replace("\"posthog\"", "\"avro\"")).unwrap_err();
        assert!(err.contains("format"), "{err}");
    }
}
