//! Group commit: one writer thread owns the [`Log`]; requests queue to it
//! in one FIFO, and under `always` many requests share one `fdatasync`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Log, WalError};

/// When the writer syncs, and when it answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Answer only after a sync that covers the record. The writer appends
    /// what is queued and syncs once the queue is empty, `max_delay` after
    /// the group's first request, or once `max_bytes` are in the group —
    /// whichever comes first; requests that arrive during a sync share the
    /// next one.
    Always {
        /// Longest the first request of a group waits for others.
        max_delay: Duration,
        /// Bytes that close a group.
        max_bytes: usize,
    },
    /// Answer after the append; sync every period.
    Interval(Duration),
    /// Answer after the append; never sync (except when rolling a segment,
    /// on [`GroupCommit::flush`], and at shutdown).
    Never,
}

/// Counts in fixed buckets: `counts[i]` counts values `<= bounds[i]`
/// (and above the previous bound); the last bound is `u64::MAX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Upper bounds of the buckets, ascending.
    pub bounds: &'static [u64],
    /// Values per bucket.
    pub counts: Vec<u64>,
    /// Values recorded.
    pub count: u64,
    /// Their sum.
    pub sum: u64,
    /// The largest.
    pub max: u64,
}

/// Latency buckets in microseconds: 50 µs to 4 s, doubling-ish around the
/// 0.2–4 ms a sync takes on the VMs eddy is designed on, and up to the
/// hundreds of milliseconds a checkpoint of a large state can hold the
/// engine thread.
const LATENCY_BOUNDS_US: &[u64] = &[
    50,
    100,
    250,
    500,
    1_000,
    2_000,
    4_000,
    8_000,
    16_000,
    32_000,
    64_000,
    128_000,
    256_000,
    512_000,
    1_000_000,
    2_000_000,
    4_000_000,
    u64::MAX,
];
/// Group size buckets in records.
const GROUP_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, u64::MAX];

impl Histogram {
    /// Empty, with latency buckets in microseconds (50 µs to 4 s).
    pub fn latency_us() -> Histogram {
        Histogram::new(LATENCY_BOUNDS_US)
    }

    fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0,
            max: 0,
        }
    }

    pub(crate) fn record(&mut self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.count += 1;
        self.sum = self.sum.saturating_add(v);
        self.max = self.max.max(v);
    }

    /// An upper bound of quantile `q` (0..=1): the upper bound of the
    /// bucket holding it, or the largest value if that is lower (so a
    /// quantile in the open last bucket is the largest value, not
    /// infinity); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (c, b) in self.counts.iter().zip(self.bounds) {
            seen += c;
            if seen >= rank && self.count > 0 {
                return (*b).min(self.max);
            }
        }
        0
    }
}

/// Counters of a [`GroupCommit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStats {
    /// Records appended.
    pub records: u64,
    /// Payload bytes appended.
    pub bytes: u64,
    /// Syncs done.
    pub syncs: u64,
    /// Syncs that failed.
    pub sync_errors: u64,
    /// Appends that failed (disk full, I/O error).
    pub write_errors: u64,
    /// Sync latency in microseconds.
    pub sync_latency_us: Histogram,
    /// Records answered per sync under `always`.
    pub group_records: Histogram,
}

impl Default for CommitStats {
    fn default() -> Self {
        CommitStats {
            records: 0,
            bytes: 0,
            syncs: 0,
            sync_errors: 0,
            write_errors: 0,
            sync_latency_us: Histogram::new(LATENCY_BOUNDS_US),
            group_records: Histogram::new(GROUP_BOUNDS),
        }
    }
}

/// Where an answer goes: a tokio task or a blocked thread.
enum Reply {
    Async(oneshot::Sender<Result<u64, WalError>>),
    Blocking(mpsc::SyncSender<Result<u64, WalError>>),
}

impl Reply {
    fn send(self, r: Result<u64, WalError>) {
        // The requester may have given up (a dropped HTTP request): fine.
        let _ = match self {
            Reply::Async(tx) => tx.send(r).map_err(|_| ()),
            Reply::Blocking(tx) => tx.send(r).map_err(|_| ()),
        };
    }
}

type Job = Box<dyn FnOnce(&mut Log) + Send>;

enum Msg {
    Append(Vec<u8>, Reply),
    Flush(Reply),
    Run(Job),
}

struct Shared {
    stats: Mutex<CommitStats>,
    durable: AtomicU64,
}

/// The log's single writer. Submit records from any thread or task; they are
/// appended in submission order (one FIFO), so engine inputs that must stay
/// in order (batches, ticks, plugin changes) can share it.
pub struct GroupCommit {
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<JoinHandle<(Log, Result<u64, WalError>)>>,
    shared: Arc<Shared>,
}

/// The same error again, for each member of a group that failed together.
fn duplicate(e: &WalError) -> WalError {
    match e {
        WalError::Full { path, source } => WalError::Full {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        WalError::Io { op, path, source } => WalError::Io {
            op,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        WalError::DataDir { path, source } => WalError::DataDir {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        WalError::EmptyRecord => WalError::EmptyRecord,
        WalError::RecordTooLarge { bytes, max } => WalError::RecordTooLarge {
            bytes: *bytes,
            max: *max,
        },
        WalError::Closed => WalError::Closed,
        WalError::NoValidCheckpoint { dir, tried } => WalError::NoValidCheckpoint {
            dir: dir.clone(),
            tried: *tried,
        },
    }
}

struct Writer {
    log: Log,
    policy: FsyncPolicy,
    shared: Arc<Shared>,
    /// Tests only: acknowledge without syncing, to show the crash test
    /// catches it.
    skip_sync: bool,
}

impl GroupCommit {
    /// Starts the writer thread over `log`.
    pub fn start(log: Log, policy: FsyncPolicy) -> Result<GroupCommit, WalError> {
        GroupCommit::start_inner(log, policy, false)
    }

    /// Like [`GroupCommit::start`], but `always` acknowledges without
    /// syncing: the bug the power-cut test must catch.
    #[cfg(test)]
    pub(crate) fn start_skipping_sync(
        log: Log,
        policy: FsyncPolicy,
    ) -> Result<GroupCommit, WalError> {
        GroupCommit::start_inner(log, policy, true)
    }

    fn start_inner(
        log: Log,
        policy: FsyncPolicy,
        skip_sync: bool,
    ) -> Result<GroupCommit, WalError> {
        let shared = Arc::new(Shared {
            stats: Mutex::new(CommitStats::default()),
            durable: AtomicU64::new(log.durable()),
        });
        let (tx, rx) = mpsc::channel();
        let dir = log.dir().to_path_buf();
        let writer = Writer {
            log,
            policy,
            shared: Arc::clone(&shared),
            skip_sync,
        };
        let thread = std::thread::Builder::new()
            .name("eddy-wal".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| WalError::io("start writer thread for", dir, e))?;
        Ok(GroupCommit {
            tx: Some(tx),
            thread: Some(thread),
            shared,
        })
    }

    fn send(&self, msg: Msg) {
        let Some(tx) = &self.tx else {
            return reject(msg);
        };
        if let Err(mpsc::SendError(msg)) = tx.send(msg) {
            reject(msg);
        }
    }

    /// Queues one record; the answer is its sequence number once the policy
    /// allows (under `always`: once synced), or the error that stopped it.
    pub fn submit(&self, payload: Vec<u8>) -> oneshot::Receiver<Result<u64, WalError>> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Append(payload, Reply::Async(tx)));
        rx
    }

    /// [`GroupCommit::submit`] for a plain thread: blocks until answered.
    pub fn submit_blocking(&self, payload: Vec<u8>) -> Result<u64, WalError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Msg::Append(payload, Reply::Blocking(tx)));
        rx.recv().unwrap_or(Err(WalError::Closed))
    }

    /// Syncs everything queued before it, whatever the policy; answers the
    /// sequence number durable up to.
    pub fn flush(&self) -> oneshot::Receiver<Result<u64, WalError>> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Flush(Reply::Async(tx)));
        rx
    }

    /// Runs `job` on the writer thread, in queue order (retention, stats,
    /// truncation after a checkpoint).
    pub fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Log) -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Run(Box::new(move |log: &mut Log| {
            let _ = tx.send(job(log));
        })));
        rx
    }

    /// Every record up to this sequence number is durable.
    pub fn durable(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CommitStats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Answers what is queued, syncs, stops the writer and hands the log
    /// back; the error is the final sync's, if it failed.
    pub fn shutdown(mut self) -> Result<Log, WalError> {
        match self.stop() {
            Some((log, Ok(_))) => Ok(log),
            Some((_, Err(e))) => Err(e),
            None => Err(WalError::Closed),
        }
    }

    fn stop(&mut self) -> Option<(Log, Result<u64, WalError>)> {
        drop(self.tx.take());
        self.thread.take()?.join().ok()
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        if let Some((_, Err(e))) = self.stop() {
            tracing::error!(error = %e, "write-ahead log: final sync failed");
        }
    }
}

fn reject(msg: Msg) {
    match msg {
        Msg::Append(_, reply) | Msg::Flush(reply) => reply.send(Err(WalError::Closed)),
        Msg::Run(_) => {}
    }
}

impl Writer {
    fn run(mut self, rx: &mpsc::Receiver<Msg>) -> (Log, Result<u64, WalError>) {
        let mut last_sync = Instant::now();
        loop {
            let msg = match self.policy {
                FsyncPolicy::Interval(period) if self.log.durable() + 1 < self.log.next_seq() => {
                    let wait = period.saturating_sub(last_sync.elapsed());
                    match rx.recv_timeout(wait) {
                        Ok(msg) => Some(msg),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(msg) => Some(msg),
                    Err(_) => break,
                },
            };
            match self.policy {
                FsyncPolicy::Always {
                    max_delay,
                    max_bytes,
                } => {
                    if let Some(msg) = msg {
                        self.group(msg, rx, max_delay, max_bytes);
                    }
                }
                FsyncPolicy::Interval(period) => {
                    if let Some(msg) = msg {
                        self.handle_now(msg);
                    }
                    if last_sync.elapsed() >= period {
                        if let Err(e) = self.sync_counted() {
                            tracing::warn!(error = %e, "write-ahead log: interval sync failed; retried at the next interval");
                        }
                        last_sync = Instant::now();
                    }
                }
                FsyncPolicy::Never => {
                    if let Some(msg) = msg {
                        self.handle_now(msg);
                    }
                }
            }
        }
        let last = self.sync_counted();
        (self.log, last)
    }

    /// Interval and never: answer right after the append.
    fn handle_now(&mut self, msg: Msg) {
        match msg {
            Msg::Append(payload, reply) => reply.send(self.append(&payload)),
            Msg::Flush(reply) => reply.send(self.sync_counted()),
            Msg::Run(job) => job(&mut self.log),
        }
    }

    /// Always: append `first` and what else is queued, sync once, answer all.
    fn group(
        &mut self,
        first: Msg,
        rx: &mpsc::Receiver<Msg>,
        max_delay: Duration,
        max_bytes: usize,
    ) {
        let started = Instant::now();
        let mut waiting: Vec<(u64, Reply)> = Vec::new();
        let mut bytes = 0usize;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Append(payload, reply) => match self.append(&payload) {
                    Ok(seq) => {
                        bytes += payload.len();
                        waiting.push((seq, reply));
                    }
                    Err(e) => reply.send(Err(e)),
                },
                Msg::Flush(reply) => waiting.push((0, reply)),
                Msg::Run(job) => job(&mut self.log),
            }
            if bytes >= max_bytes || started.elapsed() >= max_delay {
                break;
            }
            // Empty queue: sync now; what arrives meanwhile joins the next group.
            next = rx.try_recv().ok();
        }
        if waiting.is_empty() {
            return;
        }
        let synced = if self.skip_sync {
            Ok(self.log.next_seq() - 1)
        } else {
            self.sync_counted()
        };
        let records = waiting.iter().filter(|(seq, _)| *seq != 0).count() as u64;
        self.stats(|s| s.group_records.record(records));
        match synced {
            Ok(durable) => {
                for (seq, reply) in waiting {
                    reply.send(Ok(if seq == 0 { durable } else { seq }));
                }
            }
            Err(e) => {
                // Unknown on disk: cut off, so nothing unacknowledged is
                // ever replayed as if it had been, and the sequence numbers
                // are handed out again.
                if let Err(cut) = self.log.discard_unsynced() {
                    tracing::error!(error = %cut, "write-ahead log: could not cut off records after a failed sync");
                }
                for (_, reply) in waiting {
                    reply.send(Err(duplicate(&e)));
                }
            }
        }
    }

    fn append(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        let r = self.log.append(payload);
        self.stats(|s| match &r {
            Ok(_) => {
                s.records += 1;
                s.bytes += payload.len() as u64;
            }
            Err(_) => s.write_errors += 1,
        });
        if r.is_ok() && !matches!(self.policy, FsyncPolicy::Always { .. }) {
            // A roll syncs the previous segment.
            self.shared
                .durable
                .store(self.log.durable(), Ordering::Release);
        }
        r
    }

    fn sync_counted(&mut self) -> Result<u64, WalError> {
        if self.log.durable() + 1 >= self.log.next_seq() {
            return Ok(self.log.durable());
        }
        let t = Instant::now();
        let r = self.log.sync();
        let us = t.elapsed().as_micros() as u64;
        self.stats(|s| match r {
            Ok(_) => {
                s.syncs += 1;
                s.sync_latency_us.record(us);
            }
            Err(_) => s.sync_errors += 1,
        });
        self.shared
            .durable
            .store(self.log.durable(), Ordering::Release);
        r
    }

    fn stats(&self, f: impl FnOnce(&mut CommitStats)) {
        f(&mut self
            .shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner));
    }
}
