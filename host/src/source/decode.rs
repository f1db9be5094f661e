//! Kafka records through the ingest decoder: what a `[[sources.kafka]]`
//! does with each record's value, apart from the consumer.

use crate::config::{KafkaFormat, KafkaSourceConfig, KafkaTimestamp};
use crate::engine::Rejected;
use crate::event::Event;
use crate::ingest::{self, Encoding, Format, Limits, PostHogRequest};
use crate::window::merge::Partial;

/// How much of a refused record's value is kept for its dead letter.
const REJECTED_PREVIEW_BYTES: usize = 1024;

/// One record as consumed.
pub struct Record<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp (ms since the Unix epoch), if it has one.
    pub timestamp: Option<i64>,
    /// Its value.
    pub value: Option<&'a [u8]>,
}

/// What a source hands on from its records.
#[derive(Default)]
pub struct Decoded {
    /// Events (`format = "eddy"` or `"posthog"`).
    pub events: Vec<Event>,
    /// Partial window results (`format = "partials"`).
    pub partials: Vec<Partial>,
    /// Records refused, saying why and where.
    pub rejected: Vec<Rejected>,
    /// Early results in a partials topic: read and passed over, since only
    /// final results carry state.
    pub skipped: u64,
}

/// Decode `record` with the ingest decoder (or, for `format =
/// "partials"`, as a partial window result) into `out`.
pub fn decode_record(
    config: &KafkaSourceConfig,
    limits: &Limits,
    now_ms: i64,
    record: &Record<'_>,
    out: &mut Decoded,
) {
    let (events, rejected) = (&mut out.events, &mut out.rejected);
    let value = record.value.unwrap_or_default();
    let reject = |reason: String| Rejected {
        topic: record.topic.to_owned(),
        partition: record.partition,
        offset: record.offset,
        reason,
        value: preview(value),
    };
    if record.value.is_none() {
        rejected.push(reject("the record has no value (a tombstone)".to_owned()));
        return;
    }
    let decoded = match config.format {
        KafkaFormat::Partials => {
            match Partial::from_message(value, record.topic, record.partition, record.offset) {
                Ok(Some(p)) => out.partials.push(p),
                Ok(None) => out.skipped += 1,
                Err(why) => rejected.push(reject(why)),
            }
            return;
        }
        KafkaFormat::Eddy => {
            ingest::decode(value, Format::Json, Encoding::Identity, limits, now_ms)
        }
        KafkaFormat::PostHog => ingest::decode_posthog(
            value,
            Encoding::Identity,
            &PostHogRequest::default(),
            limits,
            now_ms,
        ),
    };
    match decoded {
        Ok(d) => {
            for e in d.errors {
                rejected.push(reject(e.to_string()));
            }
            let at = match (config.timestamp, record.timestamp) {
                (KafkaTimestamp::Record, Some(ts)) => Some(ts),
                _ => None,
            };
            events.extend(d.events.into_iter().map(|mut e| {
                if let Some(ts) = at {
                    e.timestamp = ts;
                }
                e
            }));
        }
        Err(e) => rejected.push(reject(e.to_string())),
    }
}

fn preview(value: &[u8]) -> String {
    let cut = &value[..value.len().min(REJECTED_PREVIEW_BYTES)];
    String::from_utf8_lossy(cut).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config(format: KafkaFormat, timestamp: KafkaTimestamp) -> KafkaSourceConfig {
        KafkaSourceConfig {
            brokers: "127.0.0.1:9092".into(),
            topics: vec!["events".into()],
            group_id: "g".into(),
            format,
            timestamp,
            options: BTreeMap::new(),
            revoke_wait: std::time::Duration::from_secs(30),
        }
    }

    fn decode(c: &KafkaSourceConfig, value: &[u8], ts: Option<i64>) -> (Vec<Event>, Vec<Rejected>) {
        let mut out = Decoded::default();
        let now = 1_764_979_200_000;
        let record = Record {
            topic: "events",
            partition: 2,
            offset: 41,
            timestamp: ts,
            value: Some(value),
        };
        decode_record(c, &Limits::default(), now, &record, &mut out);
        (out.events, out.rejected)
    }

    #[test]
    fn records_decode_as_http_ingest_does_and_bad_ones_say_where_they_are() {
        let c = config(KafkaFormat::Eddy, KafkaTimestamp::Event);
        let (ev, rej) = decode(
            &c,
            br#"{"id":"a","name":"signup","distinct_id":"u1","timestamp":1764979100000}"#,
            Some(5),
        );
        assert!(rej.is_empty(), "{rej:?}");
        assert_eq!(
            (ev[0].name.as_str(), ev[0].timestamp),
            ("signup", 1_764_979_100_000)
        );
        let (ev, rej) = decode(&c, b"not json", None);
        assert!(ev.is_empty());
        assert_eq!((rej[0].partition, rej[0].offset), (2, 41));
        assert_eq!(rej[0].value, "not json");
        let (ev, rej) = decode(&c, br#"{"name":"x","distinct_id":7}"#, None);
        assert!(ev.is_empty());
        assert!(rej[0].reason.contains("distinct_id"), "{}", rej[0].reason);
    }

    #[test]
    fn the_record_timestamp_replaces_the_events_when_asked() {
        let c = config(KafkaFormat::PostHog, KafkaTimestamp::Record);
        let (ev, rej) = decode(
            &c,
            br#"{"event":"$pageview","distinct_id":"u1","properties":{"$current_url":"/a"},"timestamp":"2025-12-05T23:58:20Z"}"#,
            Some(1_764_979_000_000),
        );
        assert!(rej.is_empty(), "{rej:?}");
        assert_eq!(ev[0].timestamp, 1_764_979_000_000);
        assert_eq!(ev[0].name.as_str(), "$pageview");
    }
}
