//! A `[[sinks.kafka]]`: one channel of the hub published to a Kafka
//! topic, on a task of its own.
//!
//! Each message's value is its JSON as stream clients get it (`data`);
//! its key is what the message is about: the `distinct_id` of an event,
//! the `group` of a window result, the `key` of a pattern match, the
//! `fingerprint` of an alert (none otherwise). librdkafka's queue is
//! bounded (`queue_messages`): a message that does not fit is counted as
//! dropped, never waited for, so a slow broker never holds the pipeline
//! back; delivery reports count what the broker acknowledged and what
//! failed. A sink that falls behind the channel's ring by more than
//! `streams.client_queue` counts the messages it missed and carries on
//! live.
//!
//! A sink starts after recovery and reads its channel from the oldest
//! message in the channel's ring: what the recovery replayed (the log after
//! the last checkpoint) is published again, so a message the channel
//! published after the last checkpoint before a crash reaches the topic
//! even if librdkafka had not sent it; one that had been sent is sent
//! twice. Not covered: messages published before that checkpoint and still
//! in librdkafka's queue at the crash (checkpoints do not wait for
//! deliveries), and the oldest of a replay longer than the channel's ring
//! (counted as `missed`). A merging window takes each instance's partial once (see
//! [`crate::window::merge`]); to other consumers a repeat is the same
//! message again (an event keeps its id).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;
use serde_json::Value as Json;

use crate::config::KafkaSinkConfig;
use crate::hub::{Hub, Message, Payload};

/// Messages taken from the channel at once.
const READ_BATCH: usize = 1024;
/// How long the messages still queued may take to be sent at shutdown.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// A sink's figures, shown on `/v1/stats`.
#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    missed: AtomicU64,
}

/// A copy of a sink's figures.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaSinkStats {
    /// The channel.
    pub channel: String,
    /// The topic.
    pub topic: String,
    /// Messages handed to librdkafka.
    pub queued: u64,
    /// Messages the broker acknowledged.
    pub delivered: u64,
    /// Messages whose delivery failed.
    pub failed: u64,
    /// Messages dropped because librdkafka's queue was full.
    pub dropped: u64,
    /// Messages the sink fell too far behind to read.
    pub missed: u64,
}

struct Context {
    counters: Arc<Counters>,
}

impl rdkafka::ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.counters.delivered.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                tracing::warn!(error = %e, "kafka sink: a message was not delivered");
                self.counters.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// A running Kafka sink.
pub struct KafkaSink {
    config: KafkaSinkConfig,
    counters: Arc<Counters>,
    producer: Arc<ThreadedProducer<Context>>,
    task: tokio::task::JoinHandle<()>,
}

/// The key of a message: what it is about.
pub fn message_key(payload: &Payload) -> Option<String> {
    match payload {
        Payload::Event(e) => Some(e.distinct_id.to_string()),
        Payload::Json(v) => ["group", "key", "fingerprint"]
            .iter()
            .find_map(|k| v.get(*k))
            .filter(|k| !k.is_null())
            .map(|k| match k {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            }),
    }
}

impl KafkaSink {
    /// Subscribe to the channel (from the oldest message in its ring: what
    /// recovery replayed) and start publishing.
    pub fn start(config: KafkaSinkConfig, hub: &Hub) -> anyhow::Result<KafkaSink> {
        let counters = Arc::new(Counters::default());
        let mut client = ClientConfig::new();
        for (k, v) in &config.options {
            client.set(k, v);
        }
        client.set("bootstrap.servers", &config.brokers).set(
            "queue.buffering.max.messages",
            config.queue_messages.to_string(),
        );
        let producer: ThreadedProducer<Context> = client
            .create_with_context(Context {
                counters: counters.clone(),
            })
            .with_context(|| format!("creating the Kafka producer for {}", config.topic))?;
        let producer = Arc::new(producer);
        let (mut sub, evicted) = hub
            .subscribe_oldest(&config.channel)
            .map_err(|e| anyhow::anyhow!("sinks.kafka: channel {}: {e}", config.channel))?;
        if evicted > 0 {
            // Recovery replayed more than the channel's ring holds.
            counters.missed.fetch_add(evicted, Ordering::Relaxed);
            tracing::warn!(
                channel = %config.channel,
                missed = evicted,
                "kafka sink: recovery replayed more messages than the channel's ring holds (streams.replay_capacity, replay_bytes); the oldest are not published again"
            );
        }
        let task = {
            let (producer, counters, topic) =
                (producer.clone(), counters.clone(), config.topic.clone());
            let (hub, channel) = (hub.clone(), config.channel.clone());
            tokio::spawn(async move {
                let mut batch: Vec<Arc<Message>> = Vec::with_capacity(READ_BATCH);
                loop {
                    batch.clear();
                    if let Err(lagged) = sub.next_batch(READ_BATCH, &mut batch).await {
                        let missed = lagged.head - lagged.last_delivered;
                        counters.missed.fetch_add(missed, Ordering::Relaxed);
                        tracing::warn!(
                            missed,
                            "kafka sink fell behind its channel; carrying on live"
                        );
                        match hub.subscribe(&channel, None) {
                            Ok(again) => sub = again,
                            Err(_) => return,
                        }
                        continue;
                    }
                    for m in &batch {
                        let key = message_key(&m.payload);
                        let value = m.payload_json();
                        let mut record = BaseRecord::<str, str>::to(&topic).payload(value);
                        if let Some(k) = &key {
                            record = record.key(k.as_str());
                        }
                        match producer.send(record) {
                            Ok(()) => counters.queued.fetch_add(1, Ordering::Relaxed),
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                _,
                            )) => counters.dropped.fetch_add(1, Ordering::Relaxed),
                            Err((e, _)) => {
                                tracing::warn!(error = %e, "kafka sink: a message could not be queued");
                                counters.failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                }
            })
        };
        tracing::info!(channel = %config.channel, topic = %config.topic, "kafka sink started");
        Ok(KafkaSink {
            config,
            counters,
            producer,
            task,
        })
    }

    /// Stop reading the channel and give what is queued a moment to go.
    pub fn finish(&self) {
        self.task.abort();
        if let Err(e) = self.producer.flush(FLUSH_LIMIT) {
            tracing::warn!(error = %e, topic = %self.config.topic, "kafka sink: messages still unsent at shutdown");
        }
    }

    /// The sink's figures.
    pub fn stats(&self) -> KafkaSinkStats {
        let c = &self.counters;
        let get = |v: &AtomicU64| v.load(Ordering::Relaxed);
        KafkaSinkStats {
            channel: self.config.channel.clone(),
            topic: self.config.topic.clone(),
            queued: get(&c.queued),
            delivered: get(&c.delivered),
            failed: get(&c.failed),
            dropped: get(&c.dropped),
            missed: get(&c.missed),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_keyed_by_what_they_are_about() {
        let w = Payload::Json(serde_json::json!({"group": {"distinct_id": "u1"}, "values": {}}));
        assert_eq!(message_key(&w).as_deref(), Some(r#"{"distinct_id":"u1"}"#));
        let p = Payload::Json(serde_json::json!({"key": "u2", "pattern": "p"}));
        assert_eq!(message_key(&p).as_deref(), Some("u2"));
        assert_eq!(
            message_key(&Payload::Json(serde_json::json!({"x": 1}))),
            None
        );
    }
}
