//! A `[[sources.kafka]]`: one consumer-group member on its own thread,
//! decoding each record with the ingest decoder and handing the records to
//! the engine thread as [`KafkaBatch`]es, through the same bounded queue
//! as HTTP ingest.
//!
//! - **Offsets.** Where each partition stands is engine state: a batch
//!   carries the offsets it read from and up to, the engine applies it only
//!   if it follows on from where it stands, and checkpoints hold the
//!   offsets with the state they produced. On start (and whenever the group
//!   assigns a partition) the consumer reads from the engine's offsets, not
//!   from the group's committed ones.
//! - **Commits.** Offsets are committed to the group once a checkpoint
//!   covering them is durable, and those same durable offsets again when
//!   partitions are revoked and when eddy stops: the group's offsets are for
//!   monitoring and other tools, never ahead of a checkpoint.
//! - **Back-pressure.** When the queue is full the source pauses its
//!   partitions (librdkafka stops fetching) and offers the batch again until
//!   it fits; at most one batch waits here.
//! - **Bad records.** A record the decoder refuses becomes a dead letter
//!   naming its topic, partition and offset; the partition keeps flowing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext};
use serde::Serialize;

use super::decode::{Record, decode_record};
use crate::config::KafkaSourceConfig;
use crate::durability::WalStatus;
use crate::engine::time::SourceId;
use crate::engine::{Batch, KafkaBatch, KafkaOffsets, PartitionOffset};
use crate::ingest::{self, Limits};
use crate::runner::{PushError, Rewind, SourceQueue};

/// How long a poll waits for the first record of a batch: the loop wakes
/// this often to commit, rewind and notice a stop.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How long a full queue is waited on before the batch is offered again.
const FULL_RETRY: Duration = Duration::from_millis(10);
/// How long a synchronous commit (on revoke and at stop) or a seek may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// How often each assigned partition's high watermark is fetched, for
/// its lag on `/v1/stats` and `/metrics`.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// A source's figures, shown on `/v1/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct KafkaStats {
    records: AtomicU64,
    events: AtomicU64,
    rejected: AtomicU64,
    pauses: AtomicU64,
    rebalances: AtomicU64,
    rewinds: AtomicU64,
    commits: AtomicU64,
    commit_errors: AtomicU64,
    errors: AtomicU64,
    redelivered: AtomicU64,
    assigned: Mutex<Vec<(String, i32)>>,
    partitions: Mutex<Vec<PartitionStats>>,
    paused: AtomicBool,
}

/// Where one assigned partition stands.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStats {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset this instance reads.
    pub next: Option<i64>,
    /// The partition's high watermark (the offset after its last record),
    /// as last fetched.
    pub high_watermark: i64,
    /// Records not read yet: `high_watermark - next`.
    pub lag: Option<i64>,
}

/// A copy of [`KafkaStats`].
#[derive(Debug, Clone, Serialize)]
pub struct KafkaStatsSnapshot {
    /// The consumer group.
    pub group_id: String,
    /// The topics.
    pub topics: Vec<String>,
    /// Records consumed since start.
    pub records: u64,
    /// Events decoded from them.
    pub events: u64,
    /// Records (or items of a record) refused and dead-lettered.
    pub rejected: u64,
    /// Times the partitions were paused because the queue was full.
    pub pauses: u64,
    /// Paused right now.
    pub paused: bool,
    /// Rebalances (assignments and revocations) seen.
    pub rebalances: u64,
    /// Times the partitions were read again from the engine's offsets.
    pub rewinds: u64,
    /// Offset commits to the group.
    pub commits: u64,
    /// Commits that failed.
    pub commit_errors: u64,
    /// Consumer errors (broker unreachable, …).
    pub errors: u64,
    /// Records delivered again below an offset already read, skipped.
    pub redelivered: u64,
    /// The partitions assigned now, as `topic/partition`.
    pub assigned: Vec<String>,
    /// Each assigned partition's offsets and lag (refreshed every second).
    pub partitions: Vec<PartitionStats>,
}

/// Prometheus text for `sources`' figures (appended to `/metrics`), one
/// series per source labelled with its group and topics.
pub fn prometheus(sources: &[KafkaSource]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if sources.is_empty() {
        return out;
    }
    let snaps: Vec<KafkaStatsSnapshot> = sources.iter().map(KafkaSource::snapshot).collect();
    let series: [Series; 8] = [
        (
            "eddy_kafka_records_total",
            "counter",
            "Records consumed.",
            |s| s.records,
        ),
        (
            "eddy_kafka_rejected_total",
            "counter",
            "Records refused by the decoder and dead-lettered.",
            |s| s.rejected,
        ),
        (
            "eddy_kafka_pauses_total",
            "counter",
            "Times fetching was paused because the ingest queue was full.",
            |s| s.pauses,
        ),
        (
            "eddy_kafka_rebalances_total",
            "counter",
            "Assignments and revocations.",
            |s| s.rebalances,
        ),
        (
            "eddy_kafka_rewinds_total",
            "counter",
            "Times partitions were read again from the engine's offsets.",
            |s| s.rewinds,
        ),
        (
            "eddy_kafka_commits_total",
            "counter",
            "Offset commits to the group (after durable checkpoints).",
            |s| s.commits,
        ),
        (
            "eddy_kafka_commit_errors_total",
            "counter",
            "Offset commits that failed.",
            |s| s.commit_errors,
        ),
        (
            "eddy_kafka_assigned_partitions",
            "gauge",
            "Partitions assigned to this member.",
            |s| s.assigned.len() as u64,
        ),
    ];
    let _ = writeln!(
        out,
        "# HELP eddy_kafka_partition_lag Records of an assigned partition not read yet.\n# TYPE eddy_kafka_partition_lag gauge"
    );
    for s in &snaps {
        for p in &s.partitions {
            if let Some(lag) = p.lag {
                let _ = writeln!(
                    out,
                    "eddy_kafka_partition_lag{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {lag}",
                    label(&s.group_id),
                    label(&p.topic),
                    p.partition
                );
            }
        }
    }
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in &snaps {
            let _ = writeln!(
                out,
                "{name}{{group=\"{}\",topics=\"{}\"}} {}",
                label(&s.group_id),
                label(&s.topics.join(",")),
                get(s)
            );
        }
    }
    out
}

/// A metric family: name, type, help, and its value in a snapshot.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&KafkaStatsSnapshot) -> u64,
);

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The consumer's callbacks: where assigned partitions start, and the
/// commit on revoke.
struct Context {
    /// The next offset of every partition this instance has read or
    /// restored (shared with the loop; callbacks run inside its polls).
    next: Arc<Mutex<BTreeMap<(String, i32), i64>>>,
    wal: Arc<WalStatus>,
    stats: Arc<KafkaStats>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Start every partition where the engine stands; one it has
                // never seen starts at the group's offset (or
                // `auto.offset.reset`).
                let next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
                let starts: Vec<(String, i32, i64)> = tpl
                    .elements()
                    .iter()
                    .filter_map(|e| {
                        let key = (e.topic().to_owned(), e.partition());
                        next.get(&key).map(|n| (key.0, key.1, *n))
                    })
                    .collect();
                drop(next);
                for (topic, partition, n) in starts {
                    let _ = tpl.set_partition_offset(&topic, partition, Offset::Offset(n));
                }
                tracing::info!(partitions = %list(tpl), "kafka: partitions assigned");
                let done = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = done {
                    tracing::error!(error = %e, "kafka: the assignment failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = %list(tpl), "kafka: partitions revoked");
                commit_durable(consumer, &self.wal, &self.stats, Some(tpl));
                let done = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = done {
                    tracing::error!(error = %e, "kafka: giving partitions up failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "kafka: rebalance error");
                let _ = consumer.unassign();
            }
        }
        let assigned = consumer
            .assignment()
            .map(|a| {
                a.elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect()
            })
            .unwrap_or_default();
        *self
            .stats
            .assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = assigned;
    }
}

fn list(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Commit the offsets of the newest durable checkpoint, synchronously,
/// for the partitions of `only` (every partition they name when `None`)
/// that are assigned to this member.
fn commit_durable<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    wal: &WalStatus,
    stats: &KafkaStats,
    only: Option<&TopicPartitionList>,
) {
    let Some((_, offsets)) = wal.kafka_durable_since(0) else {
        return;
    };
    let keep = |topic: &str, partition: i32| {
        only.is_none_or(|tpl| tpl.find_partition(topic, partition).is_some())
    };
    commit(consumer, stats, &offsets, keep, CommitMode::Sync);
}

fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    stats: &KafkaStats,
    offsets: &KafkaOffsets,
    keep: impl Fn(&str, i32) -> bool,
    mode: CommitMode,
) {
    let assigned = consumer.assignment().unwrap_or_default();
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in offsets {
        if assigned.find_partition(topic, *partition).is_some() && keep(topic, *partition) {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
    }
    if tpl.count() == 0 {
        return;
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.commit_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "kafka: committing offsets to the group failed (the checkpoint keeps them)");
        }
    }
}

/// A running Kafka source.
pub struct KafkaSource {
    config: KafkaSourceConfig,
    stats: Arc<KafkaStats>,
    stop: Arc<AtomicBool>,
    handle: Mutex<Option<JoinHandle<()>>>,
    finish: std::sync::mpsc::Sender<()>,
}

/// What a source starts from: the engine as recovery left it.
pub struct StartAt {
    /// The source's id (its `position` lives under it in the engine).
    pub source: SourceId,
    /// Records the source had consumed ([`Batch::position`]).
    pub position: u64,
    /// The engine's offsets.
    pub offsets: KafkaOffsets,
}

impl KafkaSource {
    /// Join the group and start consuming on a thread of its own.
    pub fn start(
        config: KafkaSourceConfig,
        start: StartAt,
        limits: Limits,
        batch_size: usize,
        queue: SourceQueue,
        wal: Arc<WalStatus>,
        rewinds: std::sync::mpsc::Receiver<Rewind>,
    ) -> anyhow::Result<KafkaSource> {
        let stats = Arc::new(KafkaStats::default());
        let next: BTreeMap<(String, i32), i64> = start
            .offsets
            .into_iter()
            .filter(|((topic, _), _)| config.topics.contains(topic))
            .collect();
        let next = Arc::new(Mutex::new(next));
        let context = Context {
            next: next.clone(),
            wal: wal.clone(),
            stats: stats.clone(),
        };
        let mut client = ClientConfig::new();
        for (k, v) in &config.options {
            client.set(k, v);
        }
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer<Context> = client
            .create_with_context(context)
            .with_context(|| format!("creating the Kafka consumer of group {}", config.group_id))?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .with_context(|| format!("subscribing to {}", config.topics.join(", ")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (finish, finish_rx) = std::sync::mpsc::channel();
        let mut run = Loop {
            consumer,
            config: config.clone(),
            source: start.source,
            position: start.position,
            next,
            limits,
            batch_size: batch_size.max(1),
            queue,
            wal,
            rewinds,
            stats: stats.clone(),
            stop: stop.clone(),
            committed_version: 0,
            lag_at: std::time::Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("eddy-kafka-{}", start.source))
            .spawn(move || {
                run.run();
                // Wait until the engine has stopped and written its final
                // checkpoint, then commit its offsets and leave the group.
                let _ = finish_rx.recv_timeout(Duration::from_secs(60));
                commit_durable(&run.consumer, &run.wal, &run.stats, None);
                run.consumer.unsubscribe();
            })
            .context("starting the Kafka source thread")?;
        tracing::info!(
            source = start.source,
            group = %config.group_id,
            topics = %config.topics.join(","),
            brokers = %config.brokers,
            "kafka source started"
        );
        Ok(KafkaSource {
            config,
            stats,
            stop,
            handle: Mutex::new(Some(handle)),
            finish,
        })
    }

    /// Stop consuming (the records already queued are still applied).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Once the engine has stopped: commit the final checkpoint's offsets,
    /// leave the group and wait for the thread.
    pub fn finish(&self) {
        self.stop();
        let _ = self.finish.send(());
        let handle = self
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            tracing::error!("the Kafka source thread panicked");
        }
    }

    /// The source's figures.
    pub fn snapshot(&self) -> KafkaStatsSnapshot {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        KafkaStatsSnapshot {
            group_id: self.config.group_id.clone(),
            topics: self.config.topics.clone(),
            records: get(&s.records),
            events: get(&s.events),
            rejected: get(&s.rejected),
            pauses: get(&s.pauses),
            paused: s.paused.load(Ordering::Relaxed),
            rebalances: get(&s.rebalances),
            rewinds: get(&s.rewinds),
            commits: get(&s.commits),
            commit_errors: get(&s.commit_errors),
            errors: get(&s.errors),
            redelivered: get(&s.redelivered),
            assigned: s
                .assigned
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(t, p)| format!("{t}/{p}"))
                .collect(),
            partitions: s
                .partitions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// The consuming thread's state.
struct Loop {
    consumer: BaseConsumer<Context>,
    config: KafkaSourceConfig,
    source: SourceId,
    position: u64,
    next: Arc<Mutex<BTreeMap<(String, i32), i64>>>,
    limits: Limits,
    batch_size: usize,
    queue: SourceQueue,
    wal: Arc<WalStatus>,
    rewinds: std::sync::mpsc::Receiver<Rewind>,
    stats: Arc<KafkaStats>,
    stop: Arc<AtomicBool>,
    committed_version: u64,
    lag_at: std::time::Instant,
}

impl Loop {
    fn run(&mut self) {
        while !self.stop.load(Ordering::Acquire) {
            self.commit_new_checkpoint();
            self.apply_rewinds();
            if self.lag_at.elapsed() >= LAG_EVERY {
                self.lag_at = std::time::Instant::now();
                self.refresh_lag();
            }
            let Some(batch) = self.read_batch() else {
                continue;
            };
            if !self.push(batch) {
                return;
            }
        }
    }

    /// Commit the offsets of a checkpoint made durable since the last
    /// commit.
    fn commit_new_checkpoint(&mut self) {
        if let Some((version, offsets)) = self.wal.kafka_durable_since(self.committed_version) {
            self.committed_version = version;
            let topics = &self.config.topics;
            commit(
                &self.consumer,
                &self.stats,
                &offsets,
                |t, _| topics.iter().any(|x| x == t),
                CommitMode::Async,
            );
        }
    }

    /// Fetch the high watermark of every assigned partition.
    fn refresh_lag(&mut self) {
        let assigned = self
            .stats
            .assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let next = self
            .next
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut out = Vec::with_capacity(assigned.len());
        for (topic, partition) in assigned {
            let high = match self
                .consumer
                .fetch_watermarks(&topic, partition, SYNC_TIMEOUT)
            {
                Ok((_, high)) => high,
                Err(e) => {
                    tracing::debug!(topic = %topic, partition, error = %e, "kafka: fetching the watermark failed");
                    continue;
                }
            };
            let at = next.get(&(topic.clone(), partition)).copied();
            out.push(PartitionStats {
                lag: at.map(|n| (high - n).max(0)),
                topic,
                partition,
                next: at,
                high_watermark: high,
            });
        }
        *self
            .stats
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = out;
    }

    /// Seek partitions back where the engine stands.
    fn apply_rewinds(&mut self) {
        while let Ok(to) = self.rewinds.try_recv() {
            self.stats.rewinds.fetch_add(1, Ordering::Relaxed);
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            for ((topic, partition), at) in to {
                if let Err(e) =
                    self.consumer
                        .seek(&topic, partition, Offset::Offset(at), SYNC_TIMEOUT)
                {
                    tracing::warn!(topic = %topic, partition, error = %e, "kafka: seeking back failed");
                }
                next.insert((topic, partition), at);
            }
        }
    }

    /// Up to a batch of records, decoded; `None` when none came.
    fn read_batch(&mut self) -> Option<KafkaBatch> {
        let mut events = Vec::new();
        let mut rejected = Vec::new();
        let mut offsets: Vec<PartitionOffset> = Vec::new();
        let mut records = 0u64;
        let mut wait = POLL_WAIT;
        while events.len() < self.batch_size {
            let Some(polled) = self.consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            let m = match polled {
                Ok(m) => m,
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "kafka: consumer error");
                    break;
                }
            };
            let (topic, partition, offset) = (m.topic().to_owned(), m.partition(), m.offset());
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let key = (topic.clone(), partition);
            let from = next.get(&key).copied().unwrap_or(offset);
            if offset < from {
                // Delivered again (a broker re-sending a batch it had
                // sent): already handed on, so not counted twice.
                self.stats.redelivered.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            next.insert(key, offset + 1);
            drop(next);
            match offsets
                .iter_mut()
                .find(|o| o.partition == partition && o.topic == topic)
            {
                Some(o) => o.next = offset + 1,
                None => offsets.push(PartitionOffset {
                    topic: topic.clone(),
                    partition,
                    from,
                    next: offset + 1,
                }),
            }
            records += 1;
            let record = Record {
                topic: &topic,
                partition,
                offset,
                timestamp: m.timestamp().to_millis(),
                value: m.payload(),
            };
            decode_record(
                &self.config,
                &self.limits,
                ingest::now_ms(),
                &record,
                &mut events,
                &mut rejected,
            );
        }
        if records == 0 {
            return None;
        }
        self.position += records;
        self.stats.records.fetch_add(records, Ordering::Relaxed);
        self.stats
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        self.stats
            .rejected
            .fetch_add(rejected.len() as u64, Ordering::Relaxed);
        Some(KafkaBatch {
            batch: Batch {
                source: self.source,
                position: self.position,
                // Stamped by the engine thread when it takes the batch.
                wall_ms: None,
                events,
            },
            rejected,
            offsets,
        })
    }

    /// Queue `batch`, pausing the partitions while the queue is full.
    /// False if eddy is stopping.
    fn push(&mut self, mut batch: KafkaBatch) -> bool {
        let mut paused: Option<TopicPartitionList> = None;
        let pushed = loop {
            match self.queue.try_push(batch) {
                Ok(()) => break true,
                Err((PushError::Closed, _)) => break false,
                Err((_, back)) => {
                    batch = back;
                    if paused.is_none() {
                        let assigned = self.consumer.assignment().unwrap_or_default();
                        if let Err(e) = self.consumer.pause(&assigned) {
                            tracing::warn!(error = %e, "kafka: pausing failed");
                        }
                        self.stats.pauses.fetch_add(1, Ordering::Relaxed);
                        self.stats.paused.store(true, Ordering::Relaxed);
                        paused = Some(assigned);
                    }
                    if self.stop.load(Ordering::Acquire) {
                        break false;
                    }
                    std::thread::sleep(FULL_RETRY);
                }
            }
        };
        if let Some(assigned) = paused {
            if let Err(e) = self.consumer.resume(&assigned) {
                tracing::warn!(error = %e, "kafka: resuming failed");
            }
            self.stats.paused.store(false, Ordering::Relaxed);
        }
        pushed
    }
}
