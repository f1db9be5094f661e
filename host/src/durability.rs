//! The write-ahead log wired into `eddy serve`: opening `data_dir`,
//! recovery (newest valid checkpoint + replay of the log after it),
//! periodic checkpoints written off the engine thread, and the figures
//! `/v1/stats` and `/metrics` show.
//!
//! The engine thread ([`crate::runner`]) is the log's only submitter: it
//! forms each input (stamping batches with the wall time), submits its
//! encoded form ([`Input::to_line`], the same line `--record` writes) and
//! applies it once the log answers, in submission order — which is log
//! order, so the live engine and a replay see the same inputs in the same
//! order. Ingest requests are answered from there.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value as Json, json};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::engine::{Engine, EngineOptions, EngineState, Input, KafkaOffsets, Sink};
use crate::plugin::Registry;
use crate::plugin::clock::VirtualClock;
use crate::wal::{
    CheckpointStore, CommitStats, GroupCommit, Histogram, Log, LogStats, StdFs, WalConfig,
    WalError, WalFs,
};

/// Subdirectory of `data_dir` holding the log segments.
pub const WAL_DIR: &str = "wal";
/// Subdirectory of `data_dir` holding the checkpoints.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// Subdirectory of `data_dir` keeping every plugin version the engine ran,
/// as `<content hash>.wasm`: checkpoints and log records name versions by
/// hash, and a hot swap replaces the file in the plugins folder.
pub const PLUGIN_VERSIONS_DIR: &str = "plugins";

/// What recovery found and did, logged at startup and shown on
/// `/v1/stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoveryReport {
    /// WAL sequence number of the checkpoint restored (`None`: none).
    pub checkpoint_seq: Option<u64>,
    /// Damaged checkpoint files skipped to get to it.
    pub checkpoints_skipped: usize,
    /// Log records replayed after the checkpoint.
    pub records_replayed: u64,
    /// Events in those records.
    pub events_replayed: u64,
    /// Bytes of torn tail cut off the newest segment.
    pub truncated_bytes: u64,
    /// Damaged records skipped (at open and during the replay).
    pub corrupt_records: u64,
    /// Records that could not be decoded as engine inputs.
    pub undecodable_records: u64,
    /// Sequence numbers missing between the checkpoint and the log, or
    /// between segments.
    pub missing_records: u64,
    /// How long recovery took (milliseconds).
    pub duration_ms: u64,
}

/// The newest checkpoint written since start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointReport {
    /// The WAL sequence number it covers.
    pub wal_seq: u64,
    /// When it was written (Unix milliseconds).
    pub at_ms: i64,
    /// How long writing it took (milliseconds), taking and encoding the
    /// state excluded.
    pub duration_ms: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct StatusInner {
    fsync: &'static str,
    commit: Option<CommitStats>,
    log: Option<LogStats>,
    last_checkpoint: Option<CheckpointReport>,
    checkpoints: u64,
    checkpoint_errors: u64,
    /// How long taking each checkpoint's state held the engine thread
    /// (microseconds; encoding and writing happen on another thread).
    capture: Option<Histogram>,
    recovery: Option<RecoveryReport>,
    /// The Kafka offsets the newest durable checkpoint covers, and how
    /// many checkpoints have set them (Kafka sources commit them to their
    /// group when this moves).
    kafka_durable: (u64, KafkaOffsets),
}

/// The log's figures, refreshed about once a second off the engine
/// thread; shared with the HTTP layer.
#[derive(Debug, Default)]
pub struct WalStatus {
    inner: Mutex<StatusInner>,
    /// A checkpoint was asked for before its interval (a Kafka source
    /// giving partitions up waits for one).
    wanted: AtomicBool,
}

impl WalStatus {
    /// Ask the engine for a checkpoint now: it takes one at its next turn
    /// (within a tick, 100 ms) unless one is being written.
    pub fn want_checkpoint(&self) {
        self.wanted.store(true, Ordering::Release);
    }

    /// The Kafka offsets of the newest durable checkpoint if it is newer
    /// than `version` (0 at first), with its version.
    pub fn kafka_durable_since(&self, version: u64) -> Option<(u64, KafkaOffsets)> {
        self.with(|s| (s.kafka_durable.0 > version).then(|| s.kafka_durable.clone()))
    }

    fn with<T>(&self, f: impl FnOnce(&mut StatusInner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The `wal` object of `/v1/stats`.
    pub fn json(&self) -> Json {
        self.with(|s| {
            let commit = s.commit.clone().unwrap_or_default();
            json!({
                "enabled": true,
                "fsync": s.fsync,
                "bytes": s.log.map(|l| l.bytes),
                "segments": s.log.map(|l| l.segments),
                "first_seq": s.log.map(|l| l.first_seq),
                "durable_seq": s.log.map(|l| l.durable_seq),
                "records": commit.records,
                "appended_bytes": commit.bytes,
                "syncs": commit.syncs,
                "sync_errors": commit.sync_errors,
                "write_errors": commit.write_errors,
                "sync_latency_us": histogram_json(&commit.sync_latency_us),
                "group_records": histogram_json(&commit.group_records),
                "checkpoints": s.checkpoints,
                "checkpoint_errors": s.checkpoint_errors,
                "last_checkpoint": s.last_checkpoint,
                "checkpoint_capture_us": histogram_json(
                    s.capture.as_ref().unwrap_or(&Histogram::latency_us())
                ),
                "recovery": s.recovery,
            })
        })
    }

    /// Prometheus text for the log's figures (appended to `/metrics`).
    pub fn prometheus(&self) -> String {
        use std::fmt::Write;
        self.with(|s| {
            let mut out = String::new();
            let commit = s.commit.clone().unwrap_or_default();
            let mut gauge = |name: &str, help: &str, kind: &str, v: f64| {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
                );
            };
            if let Some(l) = s.log {
                gauge(
                    "eddy_wal_bytes",
                    "Bytes of log segments.",
                    "gauge",
                    l.bytes as f64,
                );
                gauge(
                    "eddy_wal_segments",
                    "Log segment files.",
                    "gauge",
                    l.segments as f64,
                );
                gauge(
                    "eddy_wal_durable_seq",
                    "Every record up to this one is synced.",
                    "gauge",
                    l.durable_seq as f64,
                );
            }
            gauge(
                "eddy_wal_records_total",
                "Records appended since start.",
                "counter",
                commit.records as f64,
            );
            gauge(
                "eddy_wal_appended_bytes_total",
                "Payload bytes appended since start.",
                "counter",
                commit.bytes as f64,
            );
            gauge(
                "eddy_wal_sync_errors_total",
                "Failed syncs.",
                "counter",
                commit.sync_errors as f64,
            );
            gauge(
                "eddy_wal_write_errors_total",
                "Failed appends (disk full, I/O errors).",
                "counter",
                commit.write_errors as f64,
            );
            gauge(
                "eddy_checkpoints_total",
                "Checkpoints written since start.",
                "counter",
                s.checkpoints as f64,
            );
            gauge(
                "eddy_checkpoint_errors_total",
                "Checkpoints that failed.",
                "counter",
                s.checkpoint_errors as f64,
            );
            if let Some(c) = &s.last_checkpoint {
                gauge(
                    "eddy_checkpoint_last_timestamp_seconds",
                    "When the newest checkpoint was written.",
                    "gauge",
                    c.at_ms as f64 / 1e3,
                );
                gauge(
                    "eddy_checkpoint_last_duration_seconds",
                    "How long writing it took.",
                    "gauge",
                    c.duration_ms as f64 / 1e3,
                );
                gauge(
                    "eddy_checkpoint_last_bytes",
                    "Its size.",
                    "gauge",
                    c.bytes as f64,
                );
            }
            if let Some(r) = &s.recovery {
                gauge(
                    "eddy_recovery_duration_seconds",
                    "How long the last startup recovery took.",
                    "gauge",
                    r.duration_ms as f64 / 1e3,
                );
                gauge(
                    "eddy_recovery_events_replayed",
                    "Events replayed from the log at startup.",
                    "gauge",
                    r.events_replayed as f64,
                );
                gauge(
                    "eddy_recovery_records_replayed",
                    "Log records replayed at startup.",
                    "gauge",
                    r.records_replayed as f64,
                );
            }
            histogram_text(
                &mut out,
                "eddy_wal_sync_seconds",
                "fdatasync latency of the log.",
                &commit.sync_latency_us,
                1e6,
            );
            histogram_text(
                &mut out,
                "eddy_wal_group_records",
                "Records answered per sync (group commit).",
                &commit.group_records,
                1.0,
            );
            histogram_text(
                &mut out,
                "eddy_checkpoint_capture_seconds",
                "How long taking a checkpoint's state held the engine thread (ingest waits meanwhile).",
                s.capture.as_ref().unwrap_or(&Histogram::latency_us()),
                1e6,
            );
            out
        })
    }
}

fn histogram_json(h: &Histogram) -> Json {
    json!({
        "count": h.count,
        "sum": h.sum,
        "p50": h.quantile(0.5),
        "p99": h.quantile(0.99),
        "max": h.max,
        "buckets": h.bounds.iter().zip(&h.counts).filter(|(_, c)| **c > 0)
            .map(|(b, c)| json!([if *b == u64::MAX { Json::from("+Inf") } else { Json::from(*b) }, c]))
            .collect::<Vec<_>>(),
    })
}

/// `h` in Prometheus text, its values divided by `per_unit` (1e6 for
/// microseconds shown as seconds).
fn histogram_text(out: &mut String, name: &str, help: &str, h: &Histogram, per_unit: f64) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (b, c) in h.bounds.iter().zip(&h.counts) {
        cumulative += c;
        let le = if *b == u64::MAX {
            "+Inf".to_owned()
        } else {
            format!("{}", *b as f64 / per_unit)
        };
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum {}", h.sum as f64 / per_unit);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

/// The data directory opened: the engine restored from the newest valid
/// checkpoint (or fresh), the log, and where the replay starts.
pub struct Opened {
    /// The engine, restored or fresh.
    pub engine: Engine,
    /// The log, repaired.
    pub log: Log,
    /// The checkpoint store.
    pub store: CheckpointStore,
    /// The first record to replay.
    pub replay_from: u64,
    /// No checkpoint was restored: write one once the replay is done, so
    /// the seed and the first sequence numbers are kept.
    pub needs_checkpoint: bool,
    /// What was found so far (the replay adds to it).
    pub report: RecoveryReport,
    started: Instant,
}

/// Create `dir` (and its parents) and check it can be listed.
fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::read_dir(dir).map(|_| ()))
        .map_err(|source| WalError::DataDir {
            path: dir.to_path_buf(),
            source,
        })
        .with_context(|| "data_dir (eddy.toml) / EDDY_DATA_DIR".to_owned())
}

/// `data_dir/wal` and `data_dir/checkpoints`.
pub fn dirs(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join(WAL_DIR), data_dir.join(CHECKPOINT_DIR))
}

/// Open `config.data_dir`: create its directories, repair the log, restore
/// the newest valid checkpoint (falling back to the previous one when the
/// newest is damaged), or start a fresh engine with `fresh` when there is
/// none. Fails when the directory cannot be used or no checkpoint is
/// valid, saying which.
pub fn open(
    config: &Config,
    registry: Arc<Registry>,
    clock: Arc<VirtualClock>,
    fresh: &EngineOptions,
) -> anyhow::Result<Opened> {
    let started = Instant::now();
    let (wal_dir, ckpt_dir) = dirs(&config.data_dir);
    ensure_dir(&wal_dir)?;
    ensure_dir(&ckpt_dir)?;
    let fs: Arc<dyn WalFs> = Arc::new(StdFs);
    let (log, found) = Log::open(fs.clone(), &wal_dir, config.wal.log_options())?;
    let store = CheckpointStore::open(fs, &ckpt_dir)?;
    let mut report = RecoveryReport {
        truncated_bytes: found.truncated_bytes,
        corrupt_records: found.corrupt_records(),
        missing_records: found.gaps.iter().map(|g| g.to - g.from + 1).sum(),
        ..RecoveryReport::default()
    };
    let latest = store.load_latest()?;
    let (mut engine, replay_from, needs_checkpoint) = match latest {
        Some((info, payload)) => {
            for skipped in &info.skipped {
                tracing::warn!(file = %skipped.display(), "recovery: a newer checkpoint is damaged; restoring the previous one");
            }
            report.checkpoint_seq = Some(info.wal_seq);
            report.checkpoints_skipped = info.skipped.len();
            let engine = Engine::restore(config, registry, clock, &payload).with_context(|| {
                format!(
                    "restoring checkpoint {}; move it away to start from an older one",
                    info.path.display()
                )
            })?;
            (engine, info.wal_seq + 1, !info.skipped.is_empty())
        }
        None => {
            if log.next_seq() > log.first_seq() {
                tracing::warn!(
                    records = log.next_seq() - log.first_seq(),
                    "recovery: no checkpoint, but the log holds records: replaying them into a fresh engine (channel sequence numbers and the plugins' random seed start anew)"
                );
            }
            (
                Engine::new(config, registry, clock, fresh)?,
                log.first_seq(),
                true,
            )
        }
    };
    if replay_from < log.first_seq() {
        let missing = log.first_seq() - replay_from;
        tracing::error!(
            from = replay_from,
            to = log.first_seq() - 1,
            records = missing,
            "recovery: the log no longer holds the records right after the checkpoint; they are lost"
        );
        report.missing_records += missing;
    }
    engine.set_dedup(config.wal.dedup_horizon_ms, config.wal.dedup_max_ids);
    Ok(Opened {
        engine,
        log,
        store,
        replay_from,
        needs_checkpoint,
        report,
        started,
    })
}

/// What [`replay`] applied.
#[derive(Debug, Clone, Copy, Default)]
pub struct Replayed {
    /// Records applied.
    pub records: u64,
    /// Events in their batches.
    pub events: u64,
    /// Damaged records skipped.
    pub corrupt: u64,
    /// Records that did not decode.
    pub undecodable: u64,
    /// The last sequence number applied (or the one before `from`).
    pub last_seq: u64,
}

/// A log record as the engine input it holds; `None`, after an error line
/// saying why, for one that is not an input (written by a newer eddy, or
/// damaged in a way its checksum missed).
pub fn decode_record(seq: u64, payload: &[u8]) -> Option<Input> {
    let input = std::str::from_utf8(payload)
        .map_err(anyhow::Error::from)
        .and_then(Input::from_line);
    match input {
        Ok(input) => Some(input),
        Err(e) => {
            tracing::error!(seq, error = %format!("{e:#}"), "a log record is not an engine input; skipped");
            None
        }
    }
}

/// Apply the records of `log` from `from` on to `engine`, in order,
/// publishing to `sink`; `filter` may skip a record by its input.
pub fn replay(
    engine: &mut Engine,
    log: &Log,
    from: u64,
    sink: &mut dyn Sink,
    mut filter: impl FnMut(&Input) -> bool,
) -> anyhow::Result<Replayed> {
    let mut r = Replayed {
        last_seq: from
            .saturating_sub(1)
            .max(log.first_seq().saturating_sub(1)),
        ..Replayed::default()
    };
    let mut reader = log.read_from(from);
    for item in reader.by_ref() {
        let (seq, payload) = item?;
        r.last_seq = seq;
        let Some(input) = decode_record(seq, &payload) else {
            r.undecodable += 1;
            continue;
        };
        if !filter(&input) {
            continue;
        }
        if let Input::Batch(b) | Input::Kafka(crate::engine::KafkaBatch { batch: b, .. }) = &input {
            r.events += b.events.len() as u64;
        }
        r.records += 1;
        // A panic (a bug) costs this record, as it did live, not the start.
        let step = std::panic::AssertUnwindSafe(|| engine.step(input, sink));
        if std::panic::catch_unwind(step).is_err() {
            tracing::error!(
                seq,
                "replay: the engine panicked on a record; skipped (a bug: please report it)"
            );
        }
    }
    r.corrupt = reader.corrupt_skipped();
    Ok(r)
}

impl Opened {
    /// Replay the log after the checkpoint through the engine into `sink`
    /// (the hub, so sequence numbers continue and subscribers resuming
    /// with `since` get what they missed), log what recovery did, and
    /// start the writer. The engine is then ready to serve.
    pub fn finish(
        mut self,
        sink: &mut dyn Sink,
        config: &WalConfig,
        status: Arc<WalStatus>,
    ) -> anyhow::Result<(Engine, Wal, u64)> {
        let replayed = replay(&mut self.engine, &self.log, self.replay_from, sink, |_| {
            true
        })?;
        let r = &mut self.report;
        r.records_replayed = replayed.records;
        r.events_replayed = replayed.events;
        // Open counted every damaged record; the replay's are among them
        // unless the reader found damage open could not see.
        r.corrupt_records = r.corrupt_records.max(replayed.corrupt);
        r.undecodable_records = replayed.undecodable;
        r.duration_ms = self.started.elapsed().as_millis() as u64;
        let last_seq = self.log.next_seq().saturating_sub(1);
        tracing::info!(
            checkpoint_seq = ?r.checkpoint_seq,
            checkpoints_skipped = r.checkpoints_skipped,
            records_replayed = r.records_replayed,
            events_replayed = r.events_replayed,
            truncated_bytes = r.truncated_bytes,
            corrupt_records = r.corrupt_records,
            undecodable_records = r.undecodable_records,
            missing_records = r.missing_records,
            duration_ms = r.duration_ms,
            wal_seq = last_seq,
            "recovered from the write-ahead log"
        );
        status.with(|s| {
            s.recovery = Some(self.report.clone());
            s.fsync = match config.fsync {
                crate::wal::FsyncMode::Always => "always",
                crate::wal::FsyncMode::Interval => "interval",
                crate::wal::FsyncMode::Never => "never",
            };
        });
        let store = Arc::new(self.store);
        if self.needs_checkpoint {
            // Synchronously, before serving: it holds the seed and the first
            // sequence numbers a later replay must start from.
            write_checkpoint(
                &store,
                None,
                &status,
                last_seq,
                &self.engine.snapshot(),
                self.engine.kafka_offsets().clone(),
            );
        }
        let gc = Arc::new(GroupCommit::start(self.log, config.policy())?);
        let wal = Wal::start(gc, store, status, config)?;
        Ok((self.engine, wal, last_seq))
    }
}

/// Write a checkpoint and move the log's retention floor after it.
fn write_checkpoint(
    store: &CheckpointStore,
    gc: Option<&GroupCommit>,
    status: &WalStatus,
    seq: u64,
    snapshot: &[u8],
    offsets: KafkaOffsets,
) {
    let started = Instant::now();
    match store.write(seq, snapshot) {
        Ok(info) => {
            let report = CheckpointReport {
                wal_seq: seq,
                at_ms: crate::ingest::now_ms(),
                duration_ms: started.elapsed().as_millis() as u64,
                bytes: info.bytes,
            };
            tracing::debug!(
                wal_seq = seq,
                bytes = info.bytes,
                duration_ms = report.duration_ms,
                "checkpoint written"
            );
            status.with(|s| {
                s.checkpoints += 1;
                s.last_checkpoint = Some(report);
                if !offsets.is_empty() {
                    s.kafka_durable = (s.kafka_durable.0 + 1, offsets);
                }
            });
            if let (Some(gc), Ok(Some(oldest))) = (gc, store.oldest_kept()) {
                // Fire and forget: the writer applies it in queue order.
                drop(gc.run(move |log: &mut Log| {
                    log.set_retention_floor(oldest + 1);
                    if let Err(e) = log.apply_retention() {
                        tracing::warn!(error = %e, "write-ahead log: retention failed");
                    }
                }));
            }
        }
        Err(e) => {
            status.with(|s| s.checkpoint_errors += 1);
            tracing::error!(wal_seq = seq, error = %e, "checkpoint failed; the next one is tried at the next interval");
        }
    }
}

/// How often the status is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The log as the engine thread uses it: submit records, take checkpoints.
pub struct Wal {
    gc: Arc<GroupCommit>,
    store: Arc<CheckpointStore>,
    status: Arc<WalStatus>,
    checkpoints: Option<std::sync::mpsc::SyncSender<(u64, Box<EngineState>)>>,
    thread: Option<JoinHandle<()>>,
    busy: Arc<AtomicBool>,
    interval: Duration,
    last: Instant,
}

impl Wal {
    fn start(
        gc: Arc<GroupCommit>,
        store: Arc<CheckpointStore>,
        status: Arc<WalStatus>,
        config: &WalConfig,
    ) -> anyhow::Result<Wal> {
        // One checkpoint waits at most: the engine skips an interval rather
        // than piling snapshots up behind a slow disk.
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Box<EngineState>)>(1);
        let busy = Arc::new(AtomicBool::new(false));
        let thread = {
            let (gc, store, status, busy) =
                (gc.clone(), store.clone(), status.clone(), busy.clone());
            std::thread::Builder::new()
                .name("eddy-checkpoint".into())
                .spawn(move || {
                    refresh(&gc, &status);
                    loop {
                        match rx.recv_timeout(STATUS_EVERY) {
                            Ok((seq, state)) => {
                                let offsets = state.kafka_offsets().clone();
                                let snapshot = state.into_bytes();
                                write_checkpoint(
                                    &store,
                                    Some(&gc),
                                    &status,
                                    seq,
                                    &snapshot,
                                    offsets,
                                );
                                busy.store(false, Ordering::Release);
                            }
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                        refresh(&gc, &status);
                    }
                })
                .context("starting the checkpoint thread")?
        };
        Ok(Wal {
            gc,
            store,
            status,
            checkpoints: Some(tx),
            thread: Some(thread),
            busy,
            interval: Duration::from_millis(config.checkpoint_interval_ms),
            last: Instant::now(),
        })
    }

    /// Queue one encoded input; answered with its sequence number once
    /// durable under the policy.
    pub fn submit(&self, record: Vec<u8>) -> oneshot::Receiver<Result<u64, WalError>> {
        self.gc.submit(record)
    }

    /// A checkpoint is due (its interval has passed, or one was asked
    /// for) and none is being written.
    pub fn checkpoint_due(&self) -> bool {
        if self.busy.load(Ordering::Acquire) {
            return false;
        }
        // Taken either way, so a request met by an interval's checkpoint
        // does not cause another right after it.
        let wanted = self.status.wanted.swap(false, Ordering::AcqRel);
        wanted || self.last.elapsed() >= self.interval
    }

    /// Hand the engine's state, covering the log up to `seq`, to the
    /// checkpoint thread, which encodes and writes it. `capture` is how
    /// long taking it held the engine thread (shown on `/metrics`).
    pub fn checkpoint(&mut self, seq: u64, state: EngineState, capture: Duration) {
        self.last = Instant::now();
        self.status.with(|s| {
            s.capture
                .get_or_insert_with(Histogram::latency_us)
                .record(capture.as_micros() as u64)
        });
        if let Some(tx) = &self.checkpoints {
            self.busy.store(true, Ordering::Release);
            if tx.try_send((seq, Box::new(state))).is_err() {
                self.busy.store(false, Ordering::Release);
            }
        }
    }

    /// Stop: wait for the checkpoint thread, write `last` (the final
    /// checkpoint) if given, sync and close the log.
    pub fn shutdown(mut self, last: Option<(u64, Vec<u8>, KafkaOffsets)>) {
        drop(self.checkpoints.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the checkpoint thread panicked");
        }
        if let Some((seq, snapshot, offsets)) = last {
            write_checkpoint(
                &self.store,
                Some(&self.gc),
                &self.status,
                seq,
                &snapshot,
                offsets,
            );
        }
        // Let the retention job run before the writer stops.
        let _ = self.gc.flush().blocking_recv();
        match Arc::try_unwrap(self.gc) {
            Ok(gc) => match gc.shutdown() {
                Ok(log) => tracing::info!(
                    wal_seq = log.next_seq().saturating_sub(1),
                    "write-ahead log closed"
                ),
                Err(e) => tracing::error!(error = %e, "write-ahead log: the final sync failed"),
            },
            Err(_) => tracing::error!("write-ahead log still in use at shutdown"),
        }
    }
}

fn refresh(gc: &GroupCommit, status: &WalStatus) {
    let commit = gc.stats();
    let log = gc.run(|log: &mut Log| log.stats()).blocking_recv().ok();
    status.with(|s| {
        s.commit = Some(commit);
        if log.is_some() {
            s.log = log;
        }
    });
}
