//! The driver behind `eddy serve`: it turns HTTP requests, the passing of
//! time and plugin changes into the [`Engine`]'s inputs, on the engine's own
//! thread, and publishes what the engine produces on the hub.
//!
//! - **Batches.** HTTP handlers queue their events ([`IngestQueue`]); the
//!   engine thread merges whatever is queued into batches of up to
//!   `pipeline.batch_size` events and stamps each with the wall time once,
//!   when it forms it. The queue is bounded in events *and* bytes
//!   ([`IngestQueue::try_push`] reserves room for a whole request or refuses
//!   it, so the HTTP layer answers 429 before it promises anything); room is
//!   given back once the batch has been applied and published.
//! - **Ticks.** A ticker asks for a tick every [`TICK`]; the engine thread
//!   stamps it when it takes it, after whatever was queued before, so an
//!   idle advance can never overtake events waiting in the queue.
//! - **Plugin changes.** The registry's notices (a new version compiled, a
//!   rollback, a file removed) become plugin inputs, applied between
//!   batches.
//! - **Queries.** REST handlers never touch the engine: they send a
//!   [`Query`] and the engine thread answers it between inputs.
//!
//! With `--record FILE` every input is written down before it is applied
//! (see [`crate::engine::input`]), so `eddy pipe --replay FILE` reproduces
//! exactly what this server published.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value as Json;
use tokio::sync::{mpsc, oneshot};

use crate::durability::Wal;
use crate::engine::input::Recorder;
use crate::engine::{Batch, Emitted, Engine, Input, PluginChange, Sink};
use crate::event::Event;
use crate::hub::{Hub, Payload, Publisher};
use crate::pipeline::StageReport;
use crate::plugin::Registry;
use crate::wal::WalError;
use crate::window::HistoryView;

/// How often the engine gets a tick: idle watermarks advance and early
/// results fire within a tenth of a second of when they are due.
pub const TICK: Duration = Duration::from_millis(100);

/// Ticks between two updates of the window metrics (about once a second).
const METRICS_EVERY_TICKS: u64 = 10;

/// Counters shared by the HTTP layer, the engine thread and the `stats`
/// channel.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events accepted into the queue.
    pub accepted: AtomicU64,
    /// Events rejected as invalid.
    pub invalid: AtomicU64,
    /// Events refused because the queue was full (answered 429).
    pub refused: AtomicU64,
    /// Requests answered 429.
    pub refused_requests: AtomicU64,
    /// Events that came out of the pipeline and were published.
    pub published: AtomicU64,
    /// Events dropped by plugins (filters).
    pub dropped: AtomicU64,
    /// Events sent to the dead-letter channel.
    pub dead_lettered: AtomicU64,
    /// Batches run through the engine.
    pub batches: AtomicU64,
    /// Events in the queue or in the engine right now.
    pub queued: AtomicU64,
    /// Bytes of those events (see [`Event::approx_bytes`]).
    pub queued_bytes: AtomicU64,
    /// Events lost to a panic in the host's own code (a bug).
    pub lost: AtomicU64,
    /// Inputs the engine has applied (REST uses it to tell a stale answer).
    pub inputs: AtomicU64,
    /// Events dropped as duplicates (an id seen within the dedup horizon).
    pub duplicates: AtomicU64,
    /// Events answered 503 because the write-ahead log could not take them.
    pub wal_refused: AtomicU64,
}

/// A point-in-time copy of [`Stats`], as published on the `stats` channel and
/// `GET /v1/stats`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StatsSnapshot {
    /// Events accepted since start.
    pub accepted: u64,
    /// Events rejected as invalid since start.
    pub invalid: u64,
    /// Events refused with 429 since start.
    pub refused: u64,
    /// Requests refused with 429 since start.
    pub refused_requests: u64,
    /// Events published on the `events` channel since start.
    pub published: u64,
    /// Events dropped by plugins since start.
    pub dropped: u64,
    /// Events dead-lettered since start.
    pub dead_lettered: u64,
    /// Engine batches since start.
    pub batches: u64,
    /// Events accepted but not yet published.
    pub queue_depth: u64,
    /// Bytes of those events.
    pub queue_bytes: u64,
    /// Events lost to a host panic (should stay 0).
    pub lost: u64,
    /// Events dropped as duplicates since start (acknowledged, not
    /// processed again).
    pub duplicates: u64,
    /// Events refused with 503 because the write-ahead log could not be
    /// written.
    pub wal_refused: u64,
}

impl Stats {
    /// Copy the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            accepted: get(&self.accepted),
            invalid: get(&self.invalid),
            refused: get(&self.refused),
            refused_requests: get(&self.refused_requests),
            published: get(&self.published),
            dropped: get(&self.dropped),
            dead_lettered: get(&self.dead_lettered),
            batches: get(&self.batches),
            queue_depth: get(&self.queued),
            queue_bytes: get(&self.queued_bytes),
            lost: get(&self.lost),
            duplicates: get(&self.duplicates),
            wal_refused: get(&self.wal_refused),
        }
    }
}

/// Why a request's events were not queued. Nothing of the request was
/// accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The queue is full: retry later.
    #[error("the ingest queue is full ({queued} of {capacity} events waiting); retry later")]
    Full {
        /// Events waiting.
        queued: u64,
        /// The bound (`ingest.queue_events`).
        capacity: u64,
    },
    /// The queue holds as many bytes as it may: retry later.
    #[error(
        "the ingest queue is full ({queued} of {capacity} bytes of events waiting); retry later"
    )]
    FullBytes {
        /// Bytes waiting.
        queued: u64,
        /// The bound (`ingest.queue_bytes`).
        capacity: u64,
    },
    /// The server is shutting down.
    #[error("the server is shutting down and accepts no more events")]
    Closed,
}

/// Why queued events were not made durable: nothing of the request was
/// acknowledged, and a retry may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The disk holding the write-ahead log is full.
    #[error("the disk holding the write-ahead log is full ({0}); retry later")]
    DiskFull(String),
    /// The log could not be written (an I/O error), or the engine stopped.
    #[error("the write-ahead log cannot be written ({0}); retry later")]
    Unavailable(String),
}

impl AckError {
    fn from_wal(e: &WalError) -> AckError {
        if e.is_full() {
            AckError::DiskFull(e.to_string())
        } else {
            AckError::Unavailable(e.to_string())
        }
    }
}

/// The answer to a queued request: resolves once its events are durable
/// (at once when the write-ahead log is off).
#[derive(Debug)]
pub struct Ack(Option<oneshot::Receiver<Result<(), AckError>>>);

impl Ack {
    /// Wait until the request's events are in the log under its fsync
    /// policy, or the error that kept them out.
    pub async fn durable(self) -> Result<(), AckError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err(AckError::Unavailable("the engine stopped".into()))),
        }
    }
}

type AckSender = oneshot::Sender<Result<(), AckError>>;

/// A REST read, answered by the engine thread between inputs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Query {
    /// Every window's definition, watermark and counters.
    Windows,
    /// Open groups of a window, at most `limit`.
    Open {
        /// The window.
        window: String,
        /// Most groups.
        limit: usize,
    },
    /// A copy of a window's history.
    History {
        /// The window.
        window: String,
    },
    /// Live users, at most `limit`.
    LiveUsers {
        /// Most users.
        limit: usize,
    },
    /// Top pages, at most `limit`.
    LivePages {
        /// Most pages.
        limit: usize,
    },
    /// Stage reports.
    Stages,
    /// Every pattern's definition and counters.
    Patterns,
    /// A pattern's latest matches and timeouts.
    PatternMatches {
        /// The pattern.
        pattern: String,
        /// Only matches (`Some(true)`) or only timeouts (`Some(false)`).
        matched: Option<bool>,
        /// Most results.
        limit: usize,
    },
    /// Pending and firing alerts now, and every rule's counters.
    Alerts,
    /// Alert transitions kept, filtered.
    AlertHistory {
        /// Earliest transition time (event time, ms).
        from: Option<i64>,
        /// Latest transition time.
        to: Option<i64>,
        /// Only this state.
        state: Option<crate::alert::AlertState>,
        /// The newest this many.
        limit: usize,
    },
}

/// The engine's answer to a [`Query`].
#[derive(Debug, Clone)]
pub enum Answer {
    /// A JSON document (`None`: no such window).
    Json(Option<Json>),
    /// A history copy (`None`: no such window).
    History(Option<HistoryView>),
    /// Stage reports.
    Stages(Vec<StageReport>),
}

enum Msg {
    Events {
        events: Vec<Event>,
        bytes: u64,
        /// Where to answer once durable, and how many events (WAL on).
        ack: Option<(AckSender, u64)>,
    },
    Tick,
    /// Records from a Kafka source (room already reserved in the queue).
    Kafka {
        batch: crate::engine::KafkaBatch,
        bytes: u64,
    },
    Plugin(PluginChange),
    /// A configuration reload, answered with what changed.
    Reconfigure(
        crate::engine::Reconfigure,
        oneshot::Sender<Result<Vec<String>, String>>,
    ),
    /// A query is waiting on the query channel.
    Wake,
    /// Everything before this has been queued; finish it and stop.
    Drain,
}

/// The sending side of the ingest queue; cheap to clone.
#[derive(Clone)]
pub struct IngestQueue {
    tx: mpsc::UnboundedSender<Msg>,
    capacity: u64,
    capacity_bytes: u64,
    stats: Arc<Stats>,
    closed: Arc<AtomicBool>,
    /// Requests are answered once their events are in the write-ahead log.
    durable: bool,
}

impl IngestQueue {
    /// Queue `events` if all of them fit (in events and in bytes), else
    /// refuse them all. The channel itself is unbounded in messages; the
    /// room reserved here is what bounds it.
    ///
    /// With the write-ahead log on, the returned [`Ack`] resolves once the
    /// events are durable (and only then are they counted as accepted).
    pub fn try_push(&self, events: Vec<Event>) -> Result<Ack, PushError> {
        let n = events.len() as u64;
        if self.closed.load(Ordering::Acquire) {
            return Err(PushError::Closed);
        }
        if n == 0 {
            return Ok(Ack(None));
        }
        let bytes: u64 = events.iter().map(|e| e.approx_bytes() as u64).sum();
        let refuse = |e: PushError| {
            self.stats.refused.fetch_add(n, Ordering::Relaxed);
            self.stats.refused_requests.fetch_add(1, Ordering::Relaxed);
            e
        };
        let reserved =
            self.stats
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                    (queued + n <= self.capacity).then_some(queued + n)
                });
        if let Err(queued) = reserved {
            return Err(refuse(PushError::Full {
                queued,
                capacity: self.capacity,
            }));
        }
        // A request larger than the whole byte bound still goes through an
        // empty queue: the bound limits what waits, not what one request
        // may be (`server.max_body_bytes` does that).
        let reserved_bytes =
            self.stats
                .queued_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                    (queued == 0 || queued + bytes <= self.capacity_bytes).then_some(queued + bytes)
                });
        if let Err(queued) = reserved_bytes {
            self.stats.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(refuse(PushError::FullBytes {
                queued,
                capacity: self.capacity_bytes,
            }));
        }
        let (ack, answer) = if self.durable {
            let (tx, rx) = oneshot::channel();
            (Some((tx, n)), Ack(Some(rx)))
        } else {
            (None, Ack(None))
        };
        if self.tx.send(Msg::Events { events, bytes, ack }).is_err() {
            // The engine thread is gone (shutting down): nothing accepted.
            self.stats.queued.fetch_sub(n, Ordering::AcqRel);
            self.stats.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(PushError::Closed);
        }
        if !self.durable {
            self.stats.accepted.fetch_add(n, Ordering::Relaxed);
        }
        Ok(answer)
    }

    /// Apply a reloaded configuration between inputs; the answer is what
    /// changed, or why nothing did. `None` if the engine has stopped.
    pub async fn reconfigure(
        &self,
        r: crate::engine::Reconfigure,
    ) -> Option<Result<Vec<String>, String>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Reconfigure(r, tx)).ok()?;
        rx.await.ok()
    }

    /// The bound in events (`ingest.queue_events`).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The bound in bytes (`ingest.queue_bytes`).
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// Refuse further events and tell the engine thread to stop once it
    /// has applied everything queued so far.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.tx.send(Msg::Drain);
    }
}

/// Where a Kafka source hands its records to the engine thread: the same
/// queue and the same bounds as HTTP ingest. A source that finds it full
/// pauses its partitions and offers the batch again (see
/// [`crate::source::kafka`]).
#[derive(Clone)]
pub struct SourceQueue {
    queue: IngestQueue,
}

impl SourceQueue {
    /// Hand a source's notice (a Kafka rebalance) to the engine, which
    /// logs it and publishes it on the `plugins` channel. False if eddy is
    /// stopping.
    pub fn notice(&self, notice: crate::plugin::registry::Notice) -> bool {
        let change = crate::engine::input::notice_change(notice);
        self.queue.tx.send(Msg::Plugin(change)).is_ok()
    }

    /// Queue `batch` if its events fit (into an empty queue it always
    /// does); else hand it back with why.
    #[allow(clippy::result_large_err)]
    pub fn try_push(
        &self,
        batch: crate::engine::KafkaBatch,
    ) -> Result<(), (PushError, crate::engine::KafkaBatch)> {
        let q = &self.queue;
        if q.closed.load(Ordering::Acquire) {
            return Err((PushError::Closed, batch));
        }
        let n = batch.batch.events.len() as u64;
        let bytes: u64 = batch
            .batch
            .events
            .iter()
            .map(|e| e.approx_bytes() as u64)
            .sum();
        let reserved = q
            .stats
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                // A batch larger than the whole bound still goes through
                // an empty queue (a source cannot split what it offers).
                (n == 0 || queued == 0 || queued + n <= q.capacity).then_some(queued + n)
            });
        if let Err(queued) = reserved {
            return Err((
                PushError::Full {
                    queued,
                    capacity: q.capacity,
                },
                batch,
            ));
        }
        let reserved_bytes =
            q.stats
                .queued_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                    (queued == 0 || queued + bytes <= q.capacity_bytes).then_some(queued + bytes)
                });
        if let Err(queued) = reserved_bytes {
            q.stats.queued.fetch_sub(n, Ordering::AcqRel);
            return Err((
                PushError::FullBytes {
                    queued,
                    capacity: q.capacity_bytes,
                },
                batch,
            ));
        }
        match q.tx.send(Msg::Kafka { batch, bytes }) {
            Ok(()) => {
                q.stats.accepted.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::SendError(msg)) => {
                q.stats.queued.fetch_sub(n, Ordering::AcqRel);
                q.stats.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                match msg {
                    Msg::Kafka { batch, .. } => Err((PushError::Closed, batch)),
                    _ => Err((PushError::Closed, crate::engine::KafkaBatch::default())),
                }
            }
        }
    }
}

/// Asks the engine thread questions for REST; cheap to clone.
#[derive(Clone)]
pub struct Queries {
    tx: std::sync::mpsc::Sender<(Query, oneshot::Sender<Answer>)>,
    wake: mpsc::UnboundedSender<Msg>,
}

impl Queries {
    /// The engine's answer to `q`; `None` if the engine thread is gone.
    pub async fn ask(&self, q: Query) -> Option<Answer> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((q, tx)).ok()?;
        // Wake the engine thread if it is waiting for input.
        let _ = self.wake.send(Msg::Wake);
        rx.await.ok()
    }
}

/// The channels the engine's outputs are published on.
pub struct HubSink {
    hub: Hub,
    events: Publisher,
    dead_letters: Publisher,
    plugins: Publisher,
    late: Publisher,
    windows: Vec<Publisher>,
    /// `patterns/<name>` by pattern name; patterns come and go at run time.
    patterns: BTreeMap<String, Publisher>,
    alerts: Publisher,
    /// Where alert transitions are delivered (set once recovery is over, so
    /// replayed transitions are not notified again).
    notifiers: Option<Arc<crate::alert::notify::Notifiers>>,
}

impl HubSink {
    /// Register the engine's channels on `hub`, each continuing after the
    /// engine's last sequence number on it.
    pub fn register(hub: &Hub, engine: &Engine) -> HubSink {
        let heads: std::collections::HashMap<String, u64> = engine.heads().into_iter().collect();
        let reg = |name: &str| hub.register_after(name, heads.get(name).copied().unwrap_or(0));
        let mut sink = HubSink {
            hub: hub.clone(),
            patterns: BTreeMap::new(),
            events: reg(crate::engine::output::EVENTS),
            dead_letters: reg(crate::engine::output::DEAD_LETTERS),
            plugins: reg(crate::engine::output::PLUGINS),
            late: reg(crate::engine::output::LATE),
            alerts: reg(crate::engine::output::ALERTS),
            notifiers: None,
            windows: engine
                .window_names()
                .iter()
                .map(|n| reg(&crate::window::channel_name(n)))
                .collect(),
        };
        sink.sync_patterns(engine);
        sink
    }

    /// Deliver alert transitions to `notifiers` from now on, starting with
    /// every alert `engine` holds (after a restart or recovery: firing
    /// alerts are re-sent, which Alertmanager takes as the refresh it is;
    /// resolved ones still retained re-send their resolution).
    pub fn set_notifiers(
        &mut self,
        notifiers: Arc<crate::alert::notify::Notifiers>,
        engine: &Engine,
    ) {
        notifiers.notify(&engine.alerts().all());
        self.notifiers = Some(notifiers);
    }

    /// Register the channel of every pattern the engine runs now (a
    /// pattern plugin loaded, a configuration reloaded), so clients can
    /// subscribe before its first match.
    pub fn sync_patterns(&mut self, engine: &Engine) {
        for name in engine.patterns().names() {
            if !self.patterns.contains_key(&name) {
                let head = engine.pattern_head(&name);
                let p = self
                    .hub
                    .register_after(&crate::pattern::channel_name(&name), head);
                self.patterns.insert(name, p);
            }
        }
    }
}

impl Sink for HubSink {
    fn emit(&mut self, out: Emitted) {
        match out {
            Emitted::Events { first_seq, events } => {
                self.events
                    .publish_batch_at(first_seq, events.into_iter().map(Payload::Event));
            }
            Emitted::DeadLetters { first_seq, letters } => {
                self.dead_letters.publish_batch_at(
                    first_seq,
                    letters
                        .iter()
                        .map(|d| Payload::Json(crate::engine::output::dead_letter_json(d))),
                );
            }
            Emitted::Window { seq, output } => {
                let publisher = match output.stream() {
                    crate::window::Stream::Late => Some(&self.late),
                    crate::window::Stream::Results(i) => self.windows.get(i),
                };
                if let Some(p) = publisher {
                    p.publish_batch_at(seq, std::iter::once(Payload::Json(output.to_json())));
                }
            }
            Emitted::Plugin { seq, notice } => {
                let json = serde_json::to_value(&notice).unwrap_or_default();
                self.plugins
                    .publish_batch_at(seq, std::iter::once(Payload::Json(json)));
            }
            Emitted::Alert { seq, event } => {
                self.alerts
                    .publish_batch_at(seq, std::iter::once(Payload::Json(event.to_json())));
                metrics::counter!("eddy_alert_transitions_total",
                    "alertname" => event.rule.clone(), "state" => event.state_name())
                .increment(1);
                if let Some(n) = &self.notifiers {
                    n.notify(std::slice::from_ref(&event));
                }
            }
            Emitted::Pattern { seq, output } => {
                let publisher = match &output {
                    crate::pattern::PatternOutput::Late { .. } => Some(&self.late),
                    crate::pattern::PatternOutput::Result(r) => {
                        if !self.patterns.contains_key(&*r.pattern) {
                            let p = self.hub.register_after(
                                &crate::pattern::channel_name(&r.pattern),
                                seq.saturating_sub(1),
                            );
                            self.patterns.insert(r.pattern.to_string(), p);
                        }
                        self.patterns.get(&*r.pattern)
                    }
                };
                if let Some(p) = publisher {
                    p.publish_batch_at(seq, std::iter::once(Payload::Json(output.to_json())));
                }
            }
        }
    }
}

/// Settings of the engine thread.
pub struct RunnerOptions {
    /// Events per batch (`pipeline.batch_size`).
    pub batch_size: usize,
    /// The event bound of the queue (`ingest.queue_events`).
    pub queue_events: u64,
    /// The byte bound of the queue (`ingest.queue_bytes`).
    pub queue_bytes: u64,
    /// Where inputs are recorded, if anywhere.
    pub recorder: Option<Recorder>,
    /// The write-ahead log (`None`: `[wal] enabled = false`).
    pub wal: Option<Wal>,
    /// The last log record the engine has applied (recovery's end).
    pub wal_seq: u64,
    /// Where to tell each Kafka source (by source id) to read its
    /// partitions again from: a batch of it was not logged, or did not
    /// follow on from what the engine had applied.
    pub rewinds: BTreeMap<crate::engine::time::SourceId, std::sync::mpsc::Sender<Rewind>>,
}

/// Offsets a Kafka source must seek its partitions back to, by (topic,
/// partition).
pub type Rewind = crate::engine::KafkaOffsets;

/// Records submitted to the log and not yet applied, at most: enough to
/// keep a group commit full, few enough that a slow disk holds back the
/// queue (which answers 429) rather than memory here.
const MAX_IN_FLIGHT: usize = 256;

/// What to do once an input's record is answered.
enum Done {
    Nothing,
    /// The last piece of a merged batch: answer its requests and give their
    /// room in the queue back.
    Acks {
        acks: Vec<(AckSender, u64)>,
        bytes: u64,
    },
    /// A configuration reload: answer with what changed.
    Reconfigure(oneshot::Sender<Result<Vec<String>, String>>),
}

/// An input submitted to the log, waiting to be applied.
struct InFlight {
    input: Input,
    events: u64,
    /// `None`: the log is off, apply at once.
    rx: Option<oneshot::Receiver<Result<u64, WalError>>>,
    /// The first piece of a merged batch (resets the group's outcome).
    group_start: bool,
    done: Done,
}

/// The running engine thread.
pub struct Runner {
    handle: thread::JoinHandle<()>,
    done: std::sync::mpsc::Receiver<()>,
}

/// The engine thread's loop state.
struct Driver {
    engine: Engine,
    sink: HubSink,
    stats: Arc<Stats>,
    recorder: Option<Recorder>,
    registry: Arc<Registry>,
    queries: std::sync::mpsc::Receiver<(Query, oneshot::Sender<Answer>)>,
    /// Events accepted so far: the position of source 0 (HTTP ingest).
    position: u64,
    ticks: u64,
    tick_pending: Arc<AtomicBool>,
    wal: Option<Wal>,
    /// The last log record applied.
    wal_seq: u64,
    in_flight: VecDeque<InFlight>,
    /// Why the current merged batch failed, if a piece of it did.
    group_error: Option<AckError>,
    /// The log is failing now (logged once per outage).
    wal_failing: bool,
    rewinds: BTreeMap<crate::engine::time::SourceId, std::sync::mpsc::Sender<Rewind>>,
}

impl Runner {
    /// Start the engine thread, its ticker and the thread that turns
    /// `registry`'s notices into plugin inputs. It runs until
    /// [`IngestQueue::close`] is called (or every handle is dropped) and the
    /// queue is drained.
    pub fn start(
        engine: Engine,
        sink: HubSink,
        registry: Arc<Registry>,
        stats: Arc<Stats>,
        options: RunnerOptions,
    ) -> std::io::Result<(IngestQueue, SourceQueue, Queries, Runner)> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let (query_tx, query_rx) = std::sync::mpsc::channel();
        let queue = IngestQueue {
            tx: tx.clone(),
            capacity: options.queue_events,
            capacity_bytes: options.queue_bytes,
            stats: stats.clone(),
            closed: Arc::new(AtomicBool::new(false)),
            durable: options.wal.is_some(),
        };
        let queries = Queries {
            tx: query_tx,
            wake: tx.clone(),
        };
        forward_notices(&registry, tx.clone());
        let tick_pending = Arc::new(AtomicBool::new(false));
        spawn_ticker(tx.clone(), tick_pending.clone())?;
        let batch_size = options.batch_size.max(1);
        let mut driver = Driver {
            engine,
            sink,
            stats,
            recorder: options.recorder,
            registry,
            queries: query_rx,
            position: 0,
            ticks: 0,
            tick_pending,
            wal: options.wal,
            wal_seq: options.wal_seq,
            in_flight: VecDeque::new(),
            group_error: None,
            wal_failing: false,
            rewinds: options.rewinds,
        };
        driver.position = driver.engine.positions().get(&0).copied().unwrap_or(0);
        let (done_tx, done) = std::sync::mpsc::channel();
        let handle = thread::Builder::new()
            .name("eddy-engine".into())
            .spawn(move || {
                let mut pending: Option<Msg> = None;
                loop {
                    driver.answer_queries();
                    driver.complete_ready();
                    driver.maybe_checkpoint();
                    let msg = match pending.take() {
                        Some(m) => Some(m),
                        None if driver.in_flight.is_empty() => rx.blocking_recv(),
                        None if driver.in_flight.len() >= MAX_IN_FLIGHT => {
                            driver.complete_front();
                            continue;
                        }
                        // Submit what is waiting while earlier records sync
                        // (they share the next group commit); with nothing
                        // waiting, wait for the oldest record.
                        None => match rx.try_recv() {
                            Ok(m) => Some(m),
                            Err(mpsc::error::TryRecvError::Empty) => {
                                driver.complete_front();
                                continue;
                            }
                            Err(mpsc::error::TryRecvError::Disconnected) => None,
                        },
                    };
                    let Some(msg) = msg else {
                        break;
                    };
                    match msg {
                        // Closing the receiver makes later sends fail (so
                        // they are answered 503, never 202) while whatever
                        // is already buffered is still received below.
                        Msg::Drain => rx.close(),
                        Msg::Wake => {}
                        Msg::Tick => driver.tick(),
                        Msg::Kafka { mut batch, bytes } => {
                            // Stamped here, as HTTP batches are, so wall
                            // time never goes back between inputs.
                            batch.batch.wall_ms = Some(wall_ms());
                            let n = batch.batch.events.len() as u64;
                            driver.submit(
                                Input::Kafka(batch),
                                n,
                                false,
                                Done::Acks {
                                    acks: Vec::new(),
                                    bytes,
                                },
                            );
                        }
                        Msg::Plugin(change) => {
                            driver.submit(Input::Plugin(change), 0, false, Done::Nothing);
                        }
                        Msg::Reconfigure(r, reply) => {
                            driver.submit(
                                Input::Reconfigure(r),
                                0,
                                false,
                                Done::Reconfigure(reply),
                            );
                        }
                        Msg::Events { events, bytes, ack } => {
                            // Merge what is already waiting, up to one batch;
                            // a request larger than a batch is split.
                            let mut batch = events;
                            let mut batch_bytes = bytes;
                            let mut acks: Vec<(AckSender, u64)> = ack.into_iter().collect();
                            while batch.len() < batch_size {
                                match rx.try_recv() {
                                    Ok(Msg::Events { events, bytes, ack })
                                        if batch.len() + events.len() <= batch_size =>
                                    {
                                        batch.extend(events);
                                        batch_bytes += bytes;
                                        acks.extend(ack);
                                    }
                                    Ok(Msg::Drain) => rx.close(),
                                    Ok(Msg::Wake) => {}
                                    Ok(more) => {
                                        pending = Some(more);
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                            driver.batches(batch, batch_bytes, batch_size, acks);
                        }
                    }
                }
                driver.complete_all();
                driver.answer_queries();
                driver.close_wal();
                let _ = done_tx.send(());
                tracing::info!("ingest queue drained; engine stopped");
            })?;
        let sources = SourceQueue {
            queue: queue.clone(),
        };
        Ok((queue, sources, queries, Runner { handle, done }))
    }

    /// Wait up to `limit` for the thread to drain the queue and stop (after
    /// [`IngestQueue::close`]). False if it is still running.
    pub fn join_within(self, limit: Duration) -> bool {
        match self.done.recv_timeout(limit) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if self.handle.join().is_err() {
                    tracing::error!("the engine thread panicked");
                }
                true
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch: the one place `eddy serve`
/// reads the clock for the engine.
pub fn wall_ms() -> i64 {
    crate::ingest::now_ms()
}

impl Driver {
    /// Apply `batch` (split into engine batches of at most `batch_size`),
    /// then give its room in the queue back.
    fn batches(
        &mut self,
        mut batch: Vec<Event>,
        bytes: u64,
        batch_size: usize,
        acks: Vec<(AckSender, u64)>,
    ) {
        let mut first = true;
        let mut acks = Some(acks);
        while !batch.is_empty() {
            let rest = if batch.len() > batch_size {
                batch.split_off(batch_size)
            } else {
                Vec::new()
            };
            let n = batch.len() as u64;
            self.position += n;
            let input = Input::Batch(Batch {
                source: 0,
                position: self.position,
                wall_ms: Some(wall_ms()),
                events: batch,
            });
            let done = if rest.is_empty() {
                Done::Acks {
                    acks: acks.take().unwrap_or_default(),
                    bytes,
                }
            } else {
                Done::Nothing
            };
            self.submit(input, n, first, done);
            first = false;
            batch = rest;
        }
    }

    /// Submit `input` to the log (or, with the log off, apply it at once);
    /// it is applied, in order, once the log answers.
    fn submit(&mut self, input: Input, events: u64, group_start: bool, done: Done) {
        let rx = self
            .wal
            .as_ref()
            .map(|w| w.submit(input.to_line().into_bytes()));
        self.in_flight.push_back(InFlight {
            input,
            events,
            rx,
            group_start,
            done,
        });
        if self.wal.is_none() {
            self.complete_ready();
        }
    }

    /// Apply the inputs at the front whose records are answered.
    fn complete_ready(&mut self) {
        while let Some(front) = self.in_flight.front_mut() {
            let result = match &mut front.rx {
                None => Ok(0),
                Some(rx) => match rx.try_recv() {
                    Ok(r) => r,
                    Err(oneshot::error::TryRecvError::Empty) => return,
                    Err(oneshot::error::TryRecvError::Closed) => Err(WalError::Closed),
                },
            };
            if let Some(f) = self.in_flight.pop_front() {
                self.complete(f, result);
            }
        }
    }

    /// Wait for the oldest record's answer and apply it.
    fn complete_front(&mut self) {
        if let Some(mut f) = self.in_flight.pop_front() {
            let result = match f.rx.take() {
                None => Ok(0),
                Some(rx) => rx.blocking_recv().unwrap_or(Err(WalError::Closed)),
            };
            self.complete(f, result);
        }
    }

    /// Apply everything still in flight (at shutdown).
    fn complete_all(&mut self) {
        while !self.in_flight.is_empty() {
            self.complete_front();
        }
    }

    /// An input's record was answered: apply it if it is in the log, and
    /// answer whoever waits on it.
    fn complete(&mut self, f: InFlight, result: Result<u64, WalError>) {
        if f.group_start {
            self.group_error = None;
        }
        let logged = match result {
            Ok(seq) => {
                if self.wal.is_some() {
                    self.wal_seq = seq;
                    if self.wal_failing {
                        self.wal_failing = false;
                        tracing::info!(wal_seq = seq, "write-ahead log: writes succeed again");
                    }
                }
                true
            }
            Err(e) => {
                if !self.wal_failing {
                    self.wal_failing = true;
                    tracing::error!(error = %e, "write-ahead log: a write failed; ingest is answered 503 until writes succeed again");
                }
                if f.group_start || self.group_error.is_none() {
                    self.group_error = Some(AckError::from_wal(&e));
                }
                false
            }
        };
        let is_reconfigure = matches!(f.input, Input::Reconfigure(_));
        match (&f.input, logged) {
            (_, true) => self.apply(f.input, f.events),
            (Input::Batch(_), false) => {
                // Not in the log, so not applied: the client is told 503
                // and retries.
                self.stats.queued.fetch_sub(f.events, Ordering::AcqRel);
                self.stats
                    .wal_refused
                    .fetch_add(f.events, Ordering::Relaxed);
            }
            (Input::Kafka(k), false) => {
                // Not in the log, so not applied: the source reads these
                // records again (later batches of it, already queued, no
                // longer follow on and are skipped by the engine).
                self.stats.queued.fetch_sub(f.events, Ordering::AcqRel);
                self.stats
                    .wal_refused
                    .fetch_add(f.events, Ordering::Relaxed);
                self.rewind(k);
            }
            (Input::Plugin(_), false) => {
                // The registry has already switched versions: follow it,
                // though a recovery will not see this change.
                tracing::error!(
                    "write-ahead log: a plugin change could not be logged; applied anyway (a recovery would miss it)"
                );
                self.apply(f.input, 0);
            }
            // A tick not logged is not applied (the next one carries a later
            // time); a reload not logged is refused below.
            _ => {}
        }
        match f.done {
            Done::Nothing => {}
            Done::Acks { acks, bytes } => {
                self.stats.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                for (tx, n) in acks {
                    let answer = match &self.group_error {
                        None => {
                            self.stats.accepted.fetch_add(n, Ordering::Relaxed);
                            Ok(())
                        }
                        Some(e) => Err(e.clone()),
                    };
                    let _ = tx.send(answer);
                }
            }
            Done::Reconfigure(reply) => {
                let outcome = if logged && is_reconfigure {
                    let outcome = self
                        .engine
                        .take_reconfigure_outcome()
                        .unwrap_or_else(|| Err("the engine failed applying it".into()));
                    self.sink.sync_patterns(&self.engine);
                    outcome
                } else {
                    Err(format!(
                        "not applied: {}",
                        self.group_error.as_ref().map_or_else(
                            || "the write-ahead log failed".to_owned(),
                            |e| e.to_string()
                        )
                    ))
                };
                let _ = reply.send(outcome);
            }
        }
    }

    /// Hand a snapshot to the checkpoint thread when one is due.
    fn maybe_checkpoint(&mut self) {
        if let Some(w) = &mut self.wal
            && w.checkpoint_due()
        {
            let started = Instant::now();
            let state = self.engine.capture();
            w.checkpoint(self.wal_seq, state, started.elapsed());
        }
    }

    /// At shutdown: the final checkpoint, then close the log.
    fn close_wal(&mut self) {
        if let Some(w) = self.wal.take() {
            let snapshot = self.engine.snapshot();
            let offsets = self.engine.kafka_offsets().clone();
            w.shutdown(Some((self.wal_seq, snapshot, offsets)));
        }
    }

    fn tick(&mut self) {
        self.tick_pending.store(false, Ordering::Release);
        let tick = Input::Tick {
            wall_ms: wall_ms(),
            position: None,
        };
        self.submit(tick, 0, false, Done::Nothing);
        self.ticks += 1;
        if self.ticks.is_multiple_of(METRICS_EVERY_TICKS) {
            self.engine.windows().record_metrics();
            self.engine.patterns().record_metrics();
        }
    }

    /// Record `input`, apply it and publish what it produced; then release
    /// `events` from the queue's count. A panic in the engine (a bug) costs
    /// that input, counted in `lost` and logged, instead of the thread.
    fn apply(&mut self, input: Input, events: u64) {
        if let (Some(r), Input::Plugin(change)) = (&self.recorder, &input) {
            self.keep_plugin(r, change);
        }
        if let Some(r) = self.recorder.as_mut()
            && let Err(e) = r.write(&input)
        {
            tracing::error!(error = %format!("{e:#}"), "recording stopped: the record cannot be written");
            self.recorder = None;
        }
        let started = Instant::now();
        let is_batch = matches!(input, Input::Batch(_) | Input::Kafka(_));
        let kafka = match &input {
            Input::Kafka(k) => Some(crate::engine::KafkaBatch {
                batch: crate::engine::Batch {
                    source: k.batch.source,
                    position: k.batch.position,
                    wall_ms: k.batch.wall_ms,
                    events: Vec::new(),
                },
                partials: Vec::new(),
                rejected: Vec::new(),
                offsets: k.offsets.clone(),
            }),
            _ => None,
        };
        let changes_patterns = matches!(input, Input::Plugin(_));
        let engine = &mut self.engine;
        let sink = &mut self.sink;
        let run = std::panic::AssertUnwindSafe(|| engine.step(input, sink));
        if std::panic::catch_unwind(run).is_err() {
            self.stats.lost.fetch_add(events, Ordering::Relaxed);
            tracing::error!(
                events,
                "the engine panicked on an input; its events are lost (a bug: please report it)"
            );
        }
        if changes_patterns {
            self.sink.sync_patterns(&self.engine);
        }
        if let Some(k) = kafka
            && self.engine.take_kafka_skipped()
        {
            self.rewind(&k);
        }
        let c = self.engine.counters();
        self.stats.published.store(c.published, Ordering::Relaxed);
        self.stats.dropped.store(c.dropped, Ordering::Relaxed);
        self.stats
            .dead_lettered
            .store(c.dead_lettered, Ordering::Relaxed);
        self.stats.batches.store(c.batches, Ordering::Relaxed);
        self.stats.inputs.store(c.inputs, Ordering::Release);
        self.stats.duplicates.store(c.duplicates, Ordering::Relaxed);
        self.stats.queued.fetch_sub(events, Ordering::AcqRel);
        if is_batch {
            metrics::histogram!("eddy_pipeline_batch_seconds")
                .record(started.elapsed().as_secs_f64());
        }
    }

    /// Tell the source of `k` to read its partitions again from where the
    /// engine stands (from where `k` started, for a partition the engine
    /// has not seen yet).
    fn rewind(&self, k: &crate::engine::KafkaBatch) {
        let Some(tx) = self.rewinds.get(&k.batch.source) else {
            return;
        };
        let applied = self.engine.kafka_offsets();
        let to: Rewind = k
            .offsets
            .iter()
            .map(|o| {
                let key = (o.topic.clone(), o.partition);
                let at = applied.get(&key).copied().unwrap_or(o.from);
                (key, at)
            })
            .collect();
        tracing::warn!(
            source = k.batch.source,
            partitions = to.len(),
            "a Kafka batch was not applied; its source reads from the engine's offsets again"
        );
        let _ = tx.send(to);
    }

    /// Copy the plugin version a record names next to it.
    fn keep_plugin(&self, r: &Recorder, change: &PluginChange) {
        if let crate::engine::input::VersionChange::Select(hash) = &change.version {
            match self.registry.version(&change.plugin, hash) {
                Some(c) => match &c.bytes {
                    Some(bytes) => {
                        if let Err(e) = r.keep_plugin(hash, bytes) {
                            tracing::error!(error = %format!("{e:#}"), "cannot keep a plugin version with the record");
                        }
                    }
                    None => tracing::error!(
                        plugin = %change.plugin,
                        "the record cannot keep this plugin version's bytes"
                    ),
                },
                None => tracing::error!(
                    plugin = %change.plugin,
                    "the recorded plugin version is not available"
                ),
            }
        }
    }

    fn answer_queries(&mut self) {
        while let Ok((q, tx)) = self.queries.try_recv() {
            let _ = tx.send(self.answer(&q));
        }
    }

    fn answer(&self, q: &Query) -> Answer {
        let w = self.engine.windows();
        match q {
            Query::Windows => Answer::Json(Some(w.list())),
            Query::Open { window, limit } => Answer::Json(w.open(window, *limit)),
            Query::History { window } => Answer::History(w.history(window)),
            Query::LiveUsers { limit } => Answer::Json(Some(w.live().users(*limit))),
            Query::LivePages { limit } => Answer::Json(Some(w.live().pages(*limit))),
            Query::Stages => {
                let mut reports = self.engine.stage_reports();
                reports.extend(self.engine.plugin_stage_reports());
                Answer::Stages(reports)
            }
            Query::Patterns => Answer::Json(Some(
                serde_json::to_value(self.engine.patterns().reports()).unwrap_or_default(),
            )),
            Query::Alerts => {
                let a = self.engine.alerts();
                Answer::Json(Some(serde_json::json!({
                    "alerts": a.active().iter().map(crate::alert::AlertEvent::to_json).collect::<Vec<_>>(),
                    "rules": a.reports(),
                })))
            }
            Query::AlertHistory {
                from,
                to,
                state,
                limit,
            } => Answer::Json(Some(Json::Array(
                self.engine
                    .alerts()
                    .history(*from, *to, *state, *limit)
                    .iter()
                    .map(crate::alert::AlertEvent::to_json)
                    .collect(),
            ))),
            Query::PatternMatches {
                pattern,
                matched,
                limit,
            } => Answer::Json(
                self.engine
                    .patterns()
                    .recent(
                        pattern,
                        matched.map(|m| {
                            if m {
                                crate::pattern::OutcomeKind::Match
                            } else {
                                crate::pattern::OutcomeKind::Timeout
                            }
                        }),
                        *limit,
                    )
                    .map(|v| Json::Array(v.iter().map(|r| r.to_json()).collect())),
            ),
        }
    }
}

/// Turn the registry's notices into plugin inputs, queued by the thread
/// that made the change, before it logs it.
fn forward_notices(registry: &Registry, tx: mpsc::UnboundedSender<Msg>) {
    registry.subscribe_with(move |notice| {
        let change = crate::engine::input::notice_change(notice.clone());
        tx.send(Msg::Plugin(change)).is_ok()
    });
}

/// Ask for a tick every [`TICK`], unless one is still waiting.
fn spawn_ticker(tx: mpsc::UnboundedSender<Msg>, pending: Arc<AtomicBool>) -> std::io::Result<()> {
    thread::Builder::new()
        .name("eddy-ticker".into())
        .spawn(move || {
            loop {
                thread::sleep(TICK);
                if pending.swap(true, Ordering::AcqRel) {
                    continue;
                }
                if tx.send(Msg::Tick).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::event::Value;

    fn event(bytes: usize) -> Event {
        Event {
            id: "e".into(),
            name: "$pageview".into(),
            timestamp: 1,
            distinct_id: "u".into(),
            session_id: None,
            properties: vec![("blob".into(), Value::Str("x".repeat(bytes).into()))],
        }
    }

    fn queue(events: u64, bytes: u64) -> (IngestQueue, mpsc::UnboundedReceiver<Msg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let q = IngestQueue {
            tx,
            capacity: events,
            capacity_bytes: bytes,
            stats: Arc::new(Stats::default()),
            closed: Arc::new(AtomicBool::new(false)),
            durable: false,
        };
        (q, rx)
    }

    #[test]
    fn the_queue_refuses_what_exceeds_its_byte_bound_whole() {
        let size = event(60 * 1024).approx_bytes() as u64;
        let (q, _rx) = queue(1_000_000, size * 10);
        for _ in 0..3 {
            q.try_push(vec![event(60 * 1024); 3]).unwrap();
        }
        // 9 of 10 used: a request of 2 does not fit, and takes nothing.
        let err = q.try_push(vec![event(60 * 1024); 2]).unwrap_err();
        assert!(matches!(err, PushError::FullBytes { .. }), "{err}");
        assert!(err.to_string().contains("bytes of events waiting"), "{err}");
        let s = q.stats.snapshot();
        assert_eq!(
            (s.accepted, s.queue_depth, s.refused, s.refused_requests),
            (9, 9, 2, 1)
        );
        assert_eq!(s.queue_bytes, size * 9);
        q.try_push(vec![event(60 * 1024)]).unwrap();
        // The event bound still applies on its own.
        let (q, _rx) = queue(2, u64::MAX);
        let err = q.try_push(vec![event(1); 3]).unwrap_err();
        assert!(matches!(err, PushError::Full { .. }), "{err}");
    }

    #[test]
    fn a_kafka_batch_that_does_not_fit_is_handed_back_whole() {
        let (q, _rx) = queue(5, u64::MAX);
        let sources = SourceQueue { queue: q.clone() };
        let batch = |n: usize| crate::engine::KafkaBatch {
            batch: Batch {
                source: 1,
                position: n as u64,
                wall_ms: None,
                events: vec![event(1); n],
            },
            ..Default::default()
        };
        // Larger than the bound, into an empty queue: taken.
        sources.try_push(batch(8)).unwrap();
        let (err, back) = sources.try_push(batch(2)).unwrap_err();
        assert!(matches!(err, PushError::Full { .. }), "{err}");
        assert_eq!(back.batch.events.len(), 2, "handed back whole");
        assert_eq!(q.stats.snapshot().queue_depth, 8);
        // A batch of refused records only always fits.
        sources.try_push(batch(0)).unwrap();
    }

    #[test]
    fn a_request_larger_than_the_byte_bound_still_goes_through_an_empty_queue() {
        let (q, _rx) = queue(1_000, 10);
        q.try_push(vec![event(1_000)]).unwrap();
        assert!(q.try_push(vec![event(1)]).is_err(), "but nothing joins it");
    }
}
