//! The pipeline thread behind `eddy serve`: a bounded ingest queue in front,
//! the plugin pipeline in the middle, the hub's channels behind.
//!
//! The queue is bounded in *events*, not requests: [`IngestQueue::try_push`]
//! reserves room for a whole request or refuses it, so the HTTP layer can
//! answer 429 before it says anything it cannot keep. Reserved room is given
//! back only after the batch has gone through the pipeline and been
//! published, so the depth counts everything accepted but not yet delivered.
//!
//! Wasmtime calls are synchronous, so the pipeline runs on its own OS thread
//! rather than on the async runtime; it merges whatever requests are queued
//! into batches of up to `pipeline.batch_size` events, which keeps the
//! per-call cost of plugins low under load without adding latency when
//! traffic is light.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::event::Event;
use crate::hub::{Payload, Publisher};
use crate::pipeline::{Pipeline, StageReport};

/// Counters shared by the HTTP layer, the pipeline thread and the `stats`
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
    /// Batches run through the pipeline.
    pub batches: AtomicU64,
    /// Events in the queue or in the pipeline right now.
    pub queued: AtomicU64,
    /// Events lost to a panic in the host's pipeline code (a bug).
    pub lost: AtomicU64,
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
    /// Pipeline batches since start.
    pub batches: u64,
    /// Events accepted but not yet published.
    pub queue_depth: u64,
    /// Events lost to a host panic (should stay 0).
    pub lost: u64,
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
            lost: get(&self.lost),
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
    /// The server is shutting down.
    #[error("the server is shutting down and accepts no more events")]
    Closed,
}

enum Msg {
    Events(Vec<Event>),
    /// Everything before this has been queued; finish it and stop.
    Drain,
}

/// The sending side of the ingest queue; cheap to clone.
#[derive(Clone)]
pub struct IngestQueue {
    tx: mpsc::UnboundedSender<Msg>,
    capacity: u64,
    stats: Arc<Stats>,
    closed: Arc<AtomicBool>,
}

impl IngestQueue {
    /// Queue `events` if all of them fit, else refuse them all. The channel
    /// itself is unbounded in messages; the event count reserved here is
    /// what bounds it.
    pub fn try_push(&self, events: Vec<Event>) -> Result<(), PushError> {
        let n = events.len() as u64;
        if self.closed.load(Ordering::Acquire) {
            return Err(PushError::Closed);
        }
        if n == 0 {
            return Ok(());
        }
        let reserved =
            self.stats
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                    (queued + n <= self.capacity).then_some(queued + n)
                });
        if let Err(queued) = reserved {
            self.stats.refused.fetch_add(n, Ordering::Relaxed);
            self.stats.refused_requests.fetch_add(1, Ordering::Relaxed);
            return Err(PushError::Full {
                queued,
                capacity: self.capacity,
            });
        }
        if self.tx.send(Msg::Events(events)).is_err() {
            // The pipeline thread is gone (shutting down): nothing accepted.
            self.stats.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(PushError::Closed);
        }
        self.stats.accepted.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// The bound (`ingest.queue_events`).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Refuse further events and tell the pipeline thread to stop once it
    /// has processed everything queued so far.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.tx.send(Msg::Drain);
    }
}

/// Where the pipeline's output goes.
pub struct Outputs {
    /// `events`: events after the pipeline.
    pub events: Publisher,
    /// `dead-letters`: events a failing stage sent there, with the reason.
    pub dead_letters: Publisher,
    /// The windows, fed with the events before they are published.
    pub windows: Option<crate::window::LiveWindows>,
}

/// The running pipeline thread.
pub struct Runner {
    handle: thread::JoinHandle<()>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Runner {
    /// Start the pipeline thread. It runs until [`IngestQueue::close`] is
    /// called (or every queue handle is dropped) and the queue is drained.
    pub fn start(
        mut pipeline: Pipeline,
        batch_size: usize,
        capacity: u64,
        stats: Arc<Stats>,
        reports: Arc<Mutex<Vec<StageReport>>>,
        outputs: Outputs,
    ) -> std::io::Result<(IngestQueue, Runner)> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let queue = IngestQueue {
            tx,
            capacity,
            stats: stats.clone(),
            closed: Arc::new(AtomicBool::new(false)),
        };
        if let Ok(mut r) = reports.lock() {
            *r = pipeline.report();
        }
        let (done_tx, done) = std::sync::mpsc::channel();
        let handle = thread::Builder::new()
            .name("eddy-pipeline".into())
            .spawn(move || {
                let mut pending: Option<Msg> = None;
                loop {
                    let first = match pending.take().or_else(|| rx.blocking_recv()) {
                        None => break,
                        // Closing the receiver makes later sends fail (so
                        // they are answered 503, never 202) while whatever
                        // is already buffered is still received below.
                        Some(Msg::Drain) => {
                            rx.close();
                            continue;
                        }
                        Some(Msg::Events(events)) => events,
                    };
                    // Merge what is already waiting, up to one batch; a
                    // request larger than a batch is split.
                    let mut batch = first;
                    while batch.len() < batch_size {
                        match rx.try_recv() {
                            Ok(Msg::Events(more)) if batch.len() + more.len() <= batch_size => {
                                batch.extend(more)
                            }
                            Ok(Msg::Drain) => rx.close(),
                            Ok(more) => {
                                pending = Some(more);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    while batch.len() > batch_size {
                        let rest = batch.split_off(batch_size);
                        guarded_batch(&mut pipeline, batch, &stats, &outputs);
                        batch = rest;
                    }
                    guarded_batch(&mut pipeline, batch, &stats, &outputs);
                    if let Ok(mut r) = reports.lock() {
                        *r = pipeline.report();
                    }
                }
                let _ = done_tx.send(());
                tracing::info!("ingest queue drained; pipeline stopped");
            })?;
        Ok((queue, Runner { handle, done }))
    }

    /// Wait up to `limit` for the thread to drain the queue and stop (after
    /// [`IngestQueue::close`]). False if it is still running.
    pub fn join_within(self, limit: std::time::Duration) -> bool {
        match self.done.recv_timeout(limit) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if self.handle.join().is_err() {
                    tracing::error!("the pipeline thread panicked");
                }
                true
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
        }
    }
}

/// Run one batch; a panic in the host (a bug: plugin failures are errors,
/// not panics) costs that batch, counted in `lost` and logged, instead of
/// the pipeline thread.
fn guarded_batch(pipeline: &mut Pipeline, batch: Vec<Event>, stats: &Stats, outputs: &Outputs) {
    let n = batch.len() as u64;
    let run = std::panic::AssertUnwindSafe(|| run_batch(pipeline, batch, stats, outputs));
    if std::panic::catch_unwind(run).is_err() {
        stats.lost.fetch_add(n, Ordering::Relaxed);
        tracing::error!(
            events = n,
            "the pipeline panicked on a batch; its events are lost (a bug: please report it)"
        );
    }
    stats.queued.fetch_sub(n, Ordering::AcqRel);
}

fn run_batch(pipeline: &mut Pipeline, batch: Vec<Event>, stats: &Stats, outputs: &Outputs) {
    let n = batch.len() as u64;
    let started = Instant::now();
    let out = pipeline.process(batch);
    let published = out.events.len() as u64;
    let dead = out.dead_letters.len() as u64;
    if let Some(windows) = &outputs.windows {
        windows.process(&out.events);
    }
    outputs
        .events
        .publish_batch(out.events.into_iter().map(Payload::Event));
    if dead > 0 {
        outputs
            .dead_letters
            .publish_batch(out.dead_letters.into_iter().map(|d| {
                Payload::Json(serde_json::json!({
                    "stage": d.stage,
                    "reason": d.reason,
                    "event": d.event,
                }))
            }));
    }
    stats.published.fetch_add(published, Ordering::Relaxed);
    stats.dead_lettered.fetch_add(dead, Ordering::Relaxed);
    // Split events add to the output, so "dropped" is what is missing.
    stats
        .dropped
        .fetch_add(n.saturating_sub(published + dead), Ordering::Relaxed);
    stats.batches.fetch_add(1, Ordering::Relaxed);
    metrics::histogram!("eddy_pipeline_batch_seconds").record(started.elapsed().as_secs_f64());
}
