//! The write-ahead log and the checkpoint store under `data_dir`.
//!
//! eddy acknowledges an ingest request only once its events are in this log
//! and synced; checkpoints snapshot engine state with the log position they
//! cover, and recovery is "restore the newest valid checkpoint, replay the
//! log after it".
//!
//! # On disk
//!
//! - **Segments** (Kafka-style): `<first seq, 20 digits>.wal`, e.g.
//!   `00000000000000000001.wal`. A 24-byte header (magic `EDDYWAL\0`,
//!   format version `u32`, reserved `u32`, first sequence number `u64`, all
//!   little-endian), then one frame per record: `length u32 | CRC32C of the
//!   payload u32 | payload`. A record is one batch of engine input. Sequence
//!   numbers are `u64`, dense, from 1: record `n` of a segment is `first +
//!   n`. A new segment starts when the active one has reached
//!   [`LogOptions::segment_bytes`]; the old one is synced first and the
//!   directory is synced after the new file is created.
//! - **Checkpoints**: `checkpoint-<wal seq, 20 digits>.ckpt`, one file each,
//!   written to a temporary name, synced, renamed, directory synced. A
//!   header (magic `EDDYCKPT`, version, the WAL sequence number it covers,
//!   length, CRC32C) guards the payload. The newest two are kept, so a
//!   damaged newest one falls back to the previous.
//!
//! # Recovery ([`Log::open`])
//!
//! - A torn tail (a frame cut short, or failing its checksum with nothing
//!   good after it) in the newest segment is cut off, with a warning giving
//!   the byte count. Kafka's `LogLoader` does the same.
//! - A frame failing its checksum with a good frame after it is skipped
//!   (its sequence number stays taken) with an error log and a counter.
//!   Damage in an older segment never cuts it; records past damage that
//!   cannot be skipped (a broken length field) are reported as lost.
//! - A gap between segments (a segment deleted by hand) is reported.
//! - Nothing in a damaged log makes `open` fail or panic, so a damaged disk
//!   never becomes a crash loop. A missing or unreadable data directory is
//!   an error ([`WalError::DataDir`]).
//!
//! # Guarantees per fsync policy ([`FsyncPolicy`])
//!
//! - `always` (the server's default): a record is acknowledged only after an
//!   `fdatasync` that covers it. A power cut loses no acknowledged record.
//!   Concurrent requests share one sync (group commit): the writer syncs as
//!   soon as the queue is drained, at the latest `max_delay` after the
//!   first waiting request or once `max_bytes` wait.
//! - `interval` (every N ms): a record is acknowledged once written to the
//!   OS. A process crash loses nothing (the page cache survives); a power
//!   cut or kernel crash loses the records acknowledged in the last N ms (plus
//!   the sync's own duration), and a torn tail of them.
//! - `never`: acknowledged once written to the OS; the OS writes back when it
//!   likes (on Linux typically within ~30 s). A process crash loses nothing; a
//!   power cut can lose everything since the last segment roll.
//!
//! In every policy a failed write (disk full, I/O error) is answered with an
//! error and cut off again, so nothing that was not written is ever
//! acknowledged, and the next append after space returns succeeds. The
//! converse does not hold: a request answered with an error may still be
//! in the log (a segment roll synced it before its group's sync failed), so
//! a client's retry can log it twice — event ids make that harmless.
//!
//! A failed sync under `always` cuts the group's records off again and
//! answers them with errors. Under `interval` the records were already
//! acknowledged: the failure is logged and counted, and the next interval
//! syncs again — but after a failed `fsync` Linux may have dropped the dirty
//! pages, so records acknowledged in that window can be lost at a later
//! power cut even though a later sync succeeds.
//!
//! # Figures
//!
//! 100 KB records (about a 1,000-event batch) on this kind of 2-core VM,
//! 2,000 records, the ignored test `wal::tests::bench_commit_policies_on_the_real_disk`
//! (debug build of eddy, optimised dependencies):
//!
//! | policy | submitters | appends/s | p50 | p99 | records per sync |
//! |---|---|---|---|---|---|
//! | always | 1 | 267 | 4.0 ms | 8.0 ms | 1.0 |
//! | always | 8 | 657 | 11.9 ms | 24.3 ms | 3.0 (capped by 256 KiB) |
//! | interval 100 ms | 8 | 7,881 | 0.39 ms | 19 ms | – |
//! | never | 8 | 7,183 | 0.41 ms | 45 ms | – |
//!
//! A sync of one group takes 2–4 ms (as DESIGN.md's figures say), so
//! `always` with 8 concurrent submitters logs about 65 MB/s.
//!
//! # Why not a WAL crate
//!
//! Written by hand on purpose (the segment format is ~100 lines; the rest is
//! recovery policy, which is the part that has to be eddy's):
//!
//! - `okaywal` describes itself as early in development, not for production,
//!   with an unstable file format (its README, last release 0.3.1 in 2023),
//!   and drives checkpointing through its own `LogManager` callbacks rather
//!   than eddy's engine snapshots.
//! - `wal-db` is young and moving fast (docs.rs shows releases from 0.3 to
//!   1.4); its record addresses are byte offsets, not the dense sequence numbers the
//!   engine's inputs and checkpoints are keyed by, and its group commit lives
//!   in its own `sync` calls rather than a policy eddy sets (max delay, max
//!   bytes, interval, never).
//! - Embedded databases (sled, RocksDB) are key-value stores with their own
//!   logs inside; eddy needs an append-only input log, not a second store.
//!
//! None of them lets the crash test put a simulated disk under the log and
//! check "every acknowledged record survives a cut, and removing the sync
//! breaks that"; here the file I/O is the small [`WalFs`] trait for that.

mod checkpoint;
mod commit;
mod fs;
mod log;
mod segment;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use checkpoint::{CheckpointInfo, CheckpointStore};
pub use commit::{CommitStats, FsyncPolicy, GroupCommit, Histogram};
pub use fs::{StdFs, WalFile, WalFs};
pub use log::{Corruption, Gap, Log, LogOptions, LogReader, LogStats, Recovery};

/// What went wrong in the write-ahead log or the checkpoint store.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The data directory is missing or cannot be read or written.
    #[error(
        "the data directory {path} cannot be used: {source}; create it, or \
         point data_dir at a writable directory"
    )]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The disk (or the quota) is full: nothing was acknowledged; retry when
    /// space returns.
    #[error("the disk holding {path} is full: {source}; free space, the write can be retried")]
    Full {
        /// The file being written.
        path: PathBuf,
        /// The error from the OS.
        #[source]
        source: io::Error,
    },
    /// Any other I/O error on a log or checkpoint file.
    #[error("{op} {path} failed: {source}")]
    Io {
        /// What was being done ("write", "sync", "read", …).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error from the OS.
        #[source]
        source: io::Error,
    },
    /// An empty record: frames of length 0 are reserved (zeroed disk is
    /// never a record).
    #[error("an empty record cannot be written to the log")]
    EmptyRecord,
    /// A record larger than the configured maximum.
    #[error("a record of {bytes} bytes is larger than the log's maximum of {max} bytes")]
    RecordTooLarge {
        /// Its size.
        bytes: usize,
        /// The maximum (`max_record_bytes`).
        max: usize,
    },
    /// The group-commit writer has stopped (shut down, or its thread died).
    #[error("the write-ahead log writer has stopped")]
    Closed,
    /// Checkpoint files exist but none of them is valid.
    #[error(
        "none of the {tried} checkpoints in {dir} is valid (see the warnings \
         above); move them away to start from the log alone"
    )]
    NoValidCheckpoint {
        /// The checkpoint directory.
        dir: PathBuf,
        /// How many files were tried.
        tried: usize,
    },
}

impl WalError {
    /// The disk is full: the server answers 503 with Retry-After.
    pub fn is_full(&self) -> bool {
        matches!(self, WalError::Full { .. })
    }

    /// Retrying the same request later may succeed (disk full, an I/O
    /// error); the other errors will not go away by themselves.
    pub fn is_retryable(&self) -> bool {
        matches!(self, WalError::Full { .. } | WalError::Io { .. })
    }

    /// Classifies an I/O error on `path` during `op`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> WalError {
        let path = path.into();
        if is_no_space(&source) {
            WalError::Full { path, source }
        } else {
            WalError::Io { op, path, source }
        }
    }
}

/// ENOSPC or EDQUOT.
fn is_no_space(e: &io::Error) -> bool {
    // 28 is ENOSPC and 122 EDQUOT on Linux; `StorageFull` covers ENOSPC and
    // `QuotaExceeded` EDQUOT where std maps them.
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(28 | 122))
}

/// `[wal] fsync` in eddy.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncMode {
    /// Group commit: acknowledged after a sync.
    #[default]
    Always,
    /// Synced every `fsync_interval_ms`; acknowledged after the write.
    Interval,
    /// Never synced by eddy (the OS writes back); acknowledged after the write.
    Never,
}

/// Default `segment_bytes`: 64 MiB, Kafka's 1 GiB scaled to one process on a
/// small VM. A segment is read whole during replay, so this also bounds
/// replay's memory.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Default `retention_bytes`: 1 GiB of log past the oldest checkpoint.
pub const DEFAULT_RETENTION_BYTES: u64 = 1024 * 1024 * 1024;
/// Default `retention_ms`: 24 hours.
pub const DEFAULT_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
/// Default `group_commit_max_delay_us`: 2 ms, about one fdatasync on the VMs
/// eddy is designed on (0.2–3.3 ms p50, see DESIGN.md).
pub const DEFAULT_GROUP_MAX_DELAY_US: u64 = 2_000;
/// Default `group_commit_max_bytes`: 256 KiB, where one sync took 3–4 ms on
/// those VMs.
pub const DEFAULT_GROUP_MAX_BYTES: u64 = 256 * 1024;
/// Default `fsync_interval_ms` for the `interval` policy.
pub const DEFAULT_FSYNC_INTERVAL_MS: u64 = 100;
/// Default `max_record_bytes`: larger than the largest ingest body
/// (`server.max_body_bytes`, 10 MiB) decoded.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// Default `checkpoint_interval_ms`: 10 s, so a restart replays at most
/// about ten seconds of input.
pub const DEFAULT_CHECKPOINT_INTERVAL_MS: u64 = 10_000;
/// Default `dedup_horizon_ms`: 10 minutes, longer than any client's retry
/// loop (`eddy send --retry-for-s` defaults to far less).
pub const DEFAULT_DEDUP_HORIZON_MS: u64 = 10 * 60 * 1000;
/// Default `dedup_max_ids`: one million ids, about 50 MB at most (each
/// kept as a 128-bit hash with its arrival time and a lookup entry), 1,600
/// events/s over the default horizon.
pub const DEFAULT_DEDUP_MAX_IDS: u64 = 1_000_000;

/// The `[wal]` section of eddy.toml (validated by `config`, which builds
/// this).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// `false`: `eddy serve` keeps everything in memory only (benchmarks).
    pub enabled: bool,
    /// `always`, `interval` or `never`.
    pub fsync: FsyncMode,
    /// Sync period of the `interval` policy (milliseconds).
    pub fsync_interval_ms: u64,
    /// Longest a waiting request delays its group's sync (microseconds).
    pub group_commit_max_delay_us: u64,
    /// Bytes waiting that close a group at once.
    pub group_commit_max_bytes: u64,
    /// Size at which a new segment starts.
    pub segment_bytes: u64,
    /// Log kept past the oldest checkpoint, by size.
    pub retention_bytes: u64,
    /// Log kept past the oldest checkpoint, by age (milliseconds).
    pub retention_ms: u64,
    /// Largest record (one request's batch).
    pub max_record_bytes: u64,
    /// Time between two checkpoints (milliseconds).
    pub checkpoint_interval_ms: u64,
    /// An event id seen this long ago (in batch wall time) is a duplicate
    /// (milliseconds; 0 turns deduplication off).
    pub dedup_horizon_ms: u64,
    /// Ids remembered at most; past it the oldest are forgotten early.
    pub dedup_max_ids: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            enabled: true,
            fsync: FsyncMode::Always,
            fsync_interval_ms: DEFAULT_FSYNC_INTERVAL_MS,
            group_commit_max_delay_us: DEFAULT_GROUP_MAX_DELAY_US,
            group_commit_max_bytes: DEFAULT_GROUP_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            retention_bytes: DEFAULT_RETENTION_BYTES,
            retention_ms: DEFAULT_RETENTION_MS,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            checkpoint_interval_ms: DEFAULT_CHECKPOINT_INTERVAL_MS,
            dedup_horizon_ms: DEFAULT_DEDUP_HORIZON_MS,
            dedup_max_ids: DEFAULT_DEDUP_MAX_IDS,
        }
    }
}

impl WalConfig {
    /// The group-commit policy this configuration asks for.
    pub fn policy(&self) -> FsyncPolicy {
        match self.fsync {
            FsyncMode::Always => FsyncPolicy::Always {
                max_delay: Duration::from_micros(self.group_commit_max_delay_us),
                max_bytes: self.group_commit_max_bytes as usize,
            },
            FsyncMode::Interval => {
                FsyncPolicy::Interval(Duration::from_millis(self.fsync_interval_ms))
            }
            FsyncMode::Never => FsyncPolicy::Never,
        }
    }

    /// The log options this configuration asks for.
    pub fn log_options(&self) -> LogOptions {
        LogOptions {
            segment_bytes: self.segment_bytes,
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            max_record_bytes: self.max_record_bytes as usize,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
