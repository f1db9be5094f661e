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
//! - **Back-pressure.** When the queue is full the source stops polling
//!   and offers the batch again until it fits; at most one batch waits
//!   here, and librdkafka stops fetching once its bounded prefetch queue is
//!   full.
//! - **Bad records.** A record the decoder refuses becomes a dead letter
//!   naming its topic, partition and offset; the partition keeps flowing.
//! - **Giving partitions up.** When the group revokes partitions, the
//!   source asks for a checkpoint at once and waits (at most
//!   `revoke_wait`, default 30 s) until a durable checkpoint covers every
//!   record of theirs it handed to the engine, and commits that: the next
//!   owner starts exactly where this instance's counted records end, so a graceful rebalance counts nothing twice and
//!   loses nothing. Records read but not yet handed on are dropped and read
//!   again by whoever owns the partition next.
//! - **Visibility.** Every assignment and revocation is counted, kept in
//!   the last [`REBALANCE_HISTORY`] under `kafka` in `/v1/stats`, and
//!   published on the `plugins` channel as a notice of kind `rebalanced`
//!   (`plugin` = `kafka:<group_id>`).

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

use super::decode::{Decoded, Record, decode_record};
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
/// How often each assigned partition's lag on `/v1/stats` and `/metrics`
/// is worked out again, and how often librdkafka reports the high
/// watermarks it is computed from (`statistics.interval.ms`, unless the
/// source's options set it).
const LAG_EVERY: Duration = Duration::from_secs(1);
/// How often a revocation's wait (at most `revoke_wait`) looks at the
/// checkpoints, asking for one while none covers the revoked records.
const REVOKE_POLL: Duration = Duration::from_millis(20);
/// Rebalance events kept for `/v1/stats`.
pub const REBALANCE_HISTORY: usize = 32;

/// A source's figures, shown on `/v1/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct KafkaStats {
    records: AtomicU64,
    events: AtomicU64,
    partials: AtomicU64,
    skipped: AtomicU64,
    rejected: AtomicU64,
    pauses: AtomicU64,
    rebalances: AtomicU64,
    rewinds: AtomicU64,
    commits: AtomicU64,
    commit_errors: AtomicU64,
    errors: AtomicU64,
    redelivered: AtomicU64,
    partitions_assigned: AtomicU64,
    partitions_revoked: AtomicU64,
    dropped_on_revoke: AtomicU64,
    history: Mutex<std::collections::VecDeque<RebalanceEvent>>,
    assigned: Mutex<Vec<(String, i32)>>,
    partitions: Mutex<Vec<PartitionStats>>,
    /// Each partition's high watermark as the last fetch response gave it
    /// (from librdkafka's statistics).
    highs: Mutex<BTreeMap<(String, i32), i64>>,
    paused: AtomicBool,
}

/// The part of librdkafka's statistics (`statistics.interval.ms`) eddy
/// reads: each partition's high watermark from its last fetch response.
#[derive(serde::Deserialize)]
struct RawStatistics {
    #[serde(default)]
    topics: BTreeMap<String, RawTopicStatistics>,
}

#[derive(serde::Deserialize)]
struct RawTopicStatistics {
    #[serde(default)]
    partitions: BTreeMap<String, RawPartitionStatistics>,
}

#[derive(serde::Deserialize)]
struct RawPartitionStatistics {
    partition: i32,
    /// -1001 while unknown.
    hi_offset: i64,
}

/// One assignment or revocation, as `/v1/stats` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RebalanceEvent {
    /// Wall time (ms since the Unix epoch).
    pub at_ms: i64,
    /// `assigned` or `revoked`.
    pub kind: &'static str,
    /// The partitions, as `topic/partition`.
    pub partitions: Vec<String>,
    /// For a revocation: the offsets committed for them (`topic/partition`
    /// → next offset), those a durable checkpoint covers.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub committed: BTreeMap<String, i64>,
    /// For a revocation: how long it waited for a durable checkpoint
    /// covering the records it had counted (milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
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
    /// as the last fetch response gave it.
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
    /// Partial window results read from them (`format = "partials"`).
    pub partials: u64,
    /// Early window results passed over (`format = "partials"`: only
    /// final results carry state).
    pub skipped: u64,
    /// Records (or items of a record) refused and dead-lettered.
    pub rejected: u64,
    /// Times the ingest queue was full and the source waited for room
    /// (not polling, so librdkafka fetches only until its prefetch queue is
    /// full).
    pub pauses: u64,
    /// Waiting for room in the ingest queue right now.
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
    /// Partitions assigned to this member, counted over every rebalance.
    pub partitions_assigned: u64,
    /// Partitions revoked from it.
    pub partitions_revoked: u64,
    /// Records read but not yet handed to the engine when their partitions
    /// were revoked: dropped here, read by the next owner.
    pub dropped_on_revoke: u64,
    /// The latest assignments and revocations, oldest first (at most
    /// [`REBALANCE_HISTORY`]).
    pub rebalance_events: Vec<RebalanceEvent>,
    /// The partitions assigned now, as `topic/partition`.
    pub assigned: Vec<String>,
    /// Each assigned partition's offsets and lag, worked out every second from
    /// the high watermarks librdkafka last reported (a lower bound while
    /// back-pressure keeps it from fetching).
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
    let series: [Series; 10] = [
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
            "Times the ingest queue was full and the source stopped reading until it had room.",
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
            "eddy_kafka_partitions_assigned_total",
            "counter",
            "Partitions assigned to this member, over every rebalance.",
            |s| s.partitions_assigned,
        ),
        (
            "eddy_kafka_partitions_revoked_total",
            "counter",
            "Partitions revoked from this member.",
            |s| s.partitions_revoked,
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
    /// The next offset of every partition after the records handed to the
    /// engine (shared with the loop, which moves it as it queues batches).
    queued: Arc<Mutex<BTreeMap<(String, i32), i64>>>,
    /// Set when partitions were revoked: the loop drops the batch it is
    /// reading (its records were not handed on).
    cut: Arc<AtomicBool>,
    wal: Arc<WalStatus>,
    stats: Arc<KafkaStats>,
    /// Where notices go (the `plugins` channel).
    queue: SourceQueue,
    /// `kafka:<group_id>`, as notices name this source.
    name: String,
    /// eddy is stopping: its final checkpoint is what will be committed,
    /// so a revocation does not wait for another.
    stop: Arc<AtomicBool>,
    /// The longest a revocation waits for that checkpoint (`revoke_wait`).
    revoke_wait: Duration,
}

impl Context {
    /// Count, keep and announce an assignment or revocation.
    fn record(
        &self,
        kind: &'static str,
        tpl: &TopicPartitionList,
        committed: BTreeMap<String, i64>,
        waited: Option<Duration>,
    ) {
        let partitions: Vec<String> = tpl
            .elements()
            .iter()
            .map(|e| format!("{}/{}", e.topic(), e.partition()))
            .collect();
        let counter = match kind {
            "assigned" => &self.stats.partitions_assigned,
            _ => &self.stats.partitions_revoked,
        };
        counter.fetch_add(partitions.len() as u64, Ordering::Relaxed);
        let detail = if committed.is_empty() {
            format!("{kind} {}", partitions.join(", "))
        } else {
            let c: Vec<String> = committed.iter().map(|(p, n)| format!("{p}@{n}")).collect();
            format!(
                "{kind} {} (committed {})",
                partitions.join(", "),
                c.join(", ")
            )
        };
        {
            let mut h = self
                .stats
                .history
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if h.len() >= REBALANCE_HISTORY {
                h.pop_front();
            }
            h.push_back(RebalanceEvent {
                at_ms: ingest::now_ms(),
                kind,
                partitions,
                committed,
                waited_ms: waited.map(|w| w.as_millis() as u64),
            });
        }
        self.queue.notice(crate::plugin::registry::Notice {
            plugin: self.name.clone(),
            kind: crate::plugin::registry::NoticeKind::Rebalanced,
            hash: None,
            version: None,
            detail,
        });
    }

    /// Wait (at most `revoke_wait`) until a durable checkpoint covers every
    /// record of `tpl`'s partitions handed to the engine, asking the engine
    /// for a checkpoint now rather than at its next interval. Past the
    /// wait the source commits what is durable and warns: the next owner
    /// may then count some records again.
    fn wait_covered(&self, tpl: &TopicPartitionList) -> Duration {
        let queued: Vec<((String, i32), i64)> = {
            let q = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
            tpl.elements()
                .iter()
                .filter_map(|e| {
                    let key = (e.topic().to_owned(), e.partition());
                    q.get(&key).map(|n| (key, *n))
                })
                .collect()
        };
        let started = std::time::Instant::now();
        loop {
            let durable = self
                .wal
                .kafka_durable_since(0)
                .map(|(_, o)| o)
                .unwrap_or_default();
            let covered = queued
                .iter()
                .all(|(key, n)| durable.get(key).is_some_and(|d| d >= n));
            if covered || self.stop.load(Ordering::Acquire) {
                return started.elapsed();
            }
            if started.elapsed() >= self.revoke_wait {
                tracing::warn!(
                    partitions = %list(tpl),
                    "kafka: no checkpoint covered the revoked partitions' records in time; committing what is durable (their next owner may count some again)"
                );
                return started.elapsed();
            }
            // Asked again each round: a checkpoint taken before the engine
            // applied the last batches handed to it does not cover them.
            self.wal.want_checkpoint();
            std::thread::sleep(REVOKE_POLL);
        }
    }
}

impl ClientContext for Context {
    /// Keep each partition's high watermark. librdkafka learns it from
    /// every fetch response, so the lag costs no request: asking the
    /// broker (`ListOffsets`) from the consuming thread waited behind the
    /// fetch long-poll on the same connection, up to `fetch.wait.max.ms`
    /// per partition, and starved the consumer once it had caught up.
    fn stats_raw(&self, statistics: &[u8]) {
        match high_watermarks(statistics) {
            Ok(found) => self
                .stats
                .highs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(found),
            Err(e) => tracing::debug!(error = %e, "kafka: unreadable librdkafka statistics"),
        }
    }
}

/// Each partition's known high watermark in librdkafka's statistics JSON.
fn high_watermarks(statistics: &[u8]) -> serde_json::Result<Vec<((String, i32), i64)>> {
    let parsed: RawStatistics = serde_json::from_slice(statistics)?;
    Ok(parsed
        .topics
        .into_iter()
        .flat_map(|(topic, t)| {
            t.partitions
                .into_values()
                // Partition -1 is librdkafka's internal "unassigned" one,
                // and -1001 an offset not known yet.
                .filter(|p| p.partition >= 0 && p.hi_offset >= 0)
                .map(move |p| ((topic.clone(), p.partition), p.hi_offset))
        })
        .collect())
}

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
                self.record("assigned", tpl, BTreeMap::new(), None);
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
                // The batch being read is dropped: its records were not
                // handed on, and the next owner reads them.
                self.cut.store(true, Ordering::Release);
                {
                    // Locked in the order the loop locks them.
                    let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
                    let queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
                    for e in tpl.elements() {
                        let key = (e.topic().to_owned(), e.partition());
                        match queued.get(&key) {
                            Some(n) => next.insert(key, *n),
                            None => next.remove(&key),
                        };
                    }
                }
                let waited = self.wait_covered(tpl);
                let committed = commit_durable(consumer, &self.wal, &self.stats, Some(tpl));
                self.record("revoked", tpl, committed, Some(waited));
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
) -> BTreeMap<String, i64> {
    let Some((_, offsets)) = wal.kafka_durable_since(0) else {
        return BTreeMap::new();
    };
    let keep = |topic: &str, partition: i32| {
        only.is_none_or(|tpl| tpl.find_partition(topic, partition).is_some())
    };
    commit(consumer, stats, &offsets, keep, CommitMode::Sync)
}

/// Commit `offsets` of the assigned partitions `keep` keeps; what was
/// committed, as `topic/partition` → next offset.
fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    stats: &KafkaStats,
    offsets: &KafkaOffsets,
    keep: impl Fn(&str, i32) -> bool,
    mode: CommitMode,
) -> BTreeMap<String, i64> {
    let assigned = consumer.assignment().unwrap_or_default();
    let mut tpl = TopicPartitionList::new();
    let mut committed = BTreeMap::new();
    for ((topic, partition), next) in offsets {
        if assigned.find_partition(topic, *partition).is_some() && keep(topic, *partition) {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
            committed.insert(format!("{topic}/{partition}"), *next);
        }
    }
    if tpl.count() == 0 {
        return committed;
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.commit_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "kafka: committing offsets to the group failed (the checkpoint keeps them)");
            committed.clear();
        }
    }
    committed
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
        let queued = Arc::new(Mutex::new(next.clone()));
        let next = Arc::new(Mutex::new(next));
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let context = Context {
            next: next.clone(),
            queued: queued.clone(),
            cut: cut.clone(),
            wal: wal.clone(),
            stats: stats.clone(),
            queue: queue.clone(),
            name: format!("kafka:{}", config.group_id),
            stop: stop.clone(),
            revoke_wait: config.revoke_wait,
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
        if !config.options.contains_key("statistics.interval.ms") {
            client.set("statistics.interval.ms", LAG_EVERY.as_millis().to_string());
        }
        let consumer: BaseConsumer<Context> = client
            .create_with_context(context)
            .with_context(|| format!("creating the Kafka consumer of group {}", config.group_id))?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .with_context(|| format!("subscribing to {}", config.topics.join(", ")))?;
        let (finish, finish_rx) = std::sync::mpsc::channel();
        let mut run = Loop {
            consumer,
            config: config.clone(),
            source: start.source,
            position: start.position,
            next,
            queued,
            cut,
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
            partials: get(&s.partials),
            skipped: get(&s.skipped),
            rejected: get(&s.rejected),
            pauses: get(&s.pauses),
            paused: s.paused.load(Ordering::Relaxed),
            rebalances: get(&s.rebalances),
            rewinds: get(&s.rewinds),
            commits: get(&s.commits),
            commit_errors: get(&s.commit_errors),
            errors: get(&s.errors),
            redelivered: get(&s.redelivered),
            partitions_assigned: get(&s.partitions_assigned),
            partitions_revoked: get(&s.partitions_revoked),
            dropped_on_revoke: get(&s.dropped_on_revoke),
            rebalance_events: s
                .history
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned()
                .collect(),
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
    queued: Arc<Mutex<BTreeMap<(String, i32), i64>>>,
    cut: Arc<AtomicBool>,
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

    /// Work out every assigned partition's lag from the high watermarks
    /// librdkafka last reported.
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
        let highs = self
            .stats
            .highs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut out = Vec::with_capacity(assigned.len());
        for (topic, partition) in assigned {
            // Not fetched from yet: no figure rather than a guess.
            let Some(&high) = highs.get(&(topic.clone(), partition)) else {
                continue;
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
            let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
            for ((topic, partition), at) in to {
                queued.insert((topic.clone(), partition), at);
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
        let mut out = Decoded::default();
        let mut offsets: Vec<PartitionOffset> = Vec::new();
        let mut records = 0u64;
        let mut wait = POLL_WAIT;
        while out.events.len() + out.partials.len() < self.batch_size {
            let polled = self.consumer.poll(wait);
            wait = Duration::ZERO;
            if self.cut.swap(false, Ordering::AcqRel) {
                // Partitions were revoked inside that poll: drop what this
                // batch read (never handed on) and read it again from where
                // it started, here or at the partition's next owner.
                self.stats
                    .dropped_on_revoke
                    .fetch_add(records, Ordering::Relaxed);
                let again = std::mem::take(&mut offsets);
                out = Decoded::default();
                records = 0;
                let assigned = self.consumer.assignment().unwrap_or_default();
                let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
                for o in &again {
                    next.insert((o.topic.clone(), o.partition), o.from);
                    if assigned.find_partition(&o.topic, o.partition).is_some()
                        && let Err(e) = self.consumer.seek(
                            &o.topic,
                            o.partition,
                            Offset::Offset(o.from),
                            SYNC_TIMEOUT,
                        )
                    {
                        tracing::warn!(topic = %o.topic, partition = o.partition, error = %e, "kafka: seeking back failed");
                    }
                }
                drop(next);
                // A record of a partition read again comes again.
                if let Some(Ok(m)) = &polled
                    && again
                        .iter()
                        .any(|o| o.partition == m.partition() && o.topic == m.topic())
                {
                    continue;
                }
            }
            let Some(polled) = polled else {
                break;
            };
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
                &mut out,
            );
        }
        if records == 0 {
            return None;
        }
        self.position += records;
        self.stats.records.fetch_add(records, Ordering::Relaxed);
        let Decoded {
            events,
            partials,
            rejected,
            skipped,
        } = out;
        let count = |n: usize| n as u64;
        self.stats
            .events
            .fetch_add(count(events.len()), Ordering::Relaxed);
        self.stats
            .partials
            .fetch_add(count(partials.len()), Ordering::Relaxed);
        self.stats.skipped.fetch_add(skipped, Ordering::Relaxed);
        self.stats
            .rejected
            .fetch_add(count(rejected.len()), Ordering::Relaxed);
        Some(KafkaBatch {
            batch: Batch {
                source: self.source,
                position: self.position,
                // Stamped by the engine thread when it takes the batch.
                wall_ms: None,
                events,
            },
            partials,
            rejected,
            offsets,
        })
    }

    /// Queue `batch`, waiting while the queue is full. False if eddy is
    /// stopping.
    ///
    /// While it waits the source does not poll, so librdkafka fetches only
    /// until its own prefetch queue is full (`queued.max.messages.kbytes`,
    /// 64 MiB by default, and `queued.min.messages`) and then stops: memory
    /// stays bounded without pausing the partitions. Pausing was tried:
    /// librdkafka drops what it prefetched and fetches again on resuming,
    /// and against Tansu that lost some records and repeated others.
    fn push(&mut self, mut batch: KafkaBatch) -> bool {
        let handed: Vec<((String, i32), i64)> = batch
            .offsets
            .iter()
            .map(|o| ((o.topic.clone(), o.partition), o.next))
            .collect();
        let mut waited = false;
        let pushed = loop {
            match self.queue.try_push(batch) {
                Ok(()) => {
                    let mut q = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
                    for (key, next) in handed {
                        q.insert(key, next);
                    }
                    break true;
                }
                Err((PushError::Closed, _)) => break false,
                Err((_, back)) => {
                    batch = back;
                    if !waited {
                        waited = true;
                        self.stats.pauses.fetch_add(1, Ordering::Relaxed);
                        self.stats.paused.store(true, Ordering::Relaxed);
                    }
                    if self.stop.load(Ordering::Acquire) {
                        break false;
                    }
                    std::thread::sleep(FULL_RETRY);
                }
            }
        };
        self.stats.paused.store(false, Ordering::Relaxed);
        pushed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn high_watermarks_come_from_known_partitions_of_the_statistics() {
        // Trimmed from librdkafka 2.12's statistics of a consumer.
        let json = br#"{"name":"rdkafka#consumer-1","type":"consumer","ts":1,
            "brokers":{"127.0.0.1:9092/1":{"name":"127.0.0.1:9092/1","rtt":{"avg":1}}},
            "topics":{"events":{"topic":"events","age":5,"partitions":{
                "0":{"partition":0,"hi_offset":1500,"ls_offset":1500,"consumer_lag":0},
                "1":{"partition":1,"hi_offset":-1001,"consumer_lag":-1},
                "-1":{"partition":-1,"hi_offset":-1001}}},
              "other":{"topic":"other","partitions":{"3":{"partition":3,"hi_offset":7}}}}}"#;
        let mut got = high_watermarks(json).unwrap();
        got.sort();
        assert_eq!(
            got,
            [
                (("events".to_owned(), 0), 1500),
                (("other".to_owned(), 3), 7)
            ]
        );
        assert!(high_watermarks(br#"{"topics": 3}"#).is_err());
        assert_eq!(high_watermarks(br#"{"name": "x"}"#).unwrap(), []);
    }
}
