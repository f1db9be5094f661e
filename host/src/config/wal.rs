//! `data_dir` and the `[wal]` section: where `eddy serve` keeps its
//! write-ahead log and checkpoints, and how it syncs them.

use serde::Deserialize;

use super::ConfigError;
use super::raw::{Int, Range, Validator, int};
use crate::wal::{self, FsyncMode, WalConfig};

const POSITIVE_MS: Range = Range {
    min: 1,
    max: Some(3_600_000),
    unit: "milliseconds",
};
const DELAY_US: Range = Range {
    min: 0,
    max: Some(1_000_000),
    unit: "microseconds",
};
// Below a few KiB a segment holds less than one record's frame overhead
// worth anything; the upper bound keeps a segment readable whole in memory.
const SEGMENT_BYTES: Range = Range {
    min: 4096,
    max: Some(1 << 32),
    unit: "bytes",
};
const BYTES: Range = Range {
    min: 1,
    max: None,
    unit: "bytes",
};
const RETENTION_MS: Range = Range {
    min: 0,
    max: None,
    unit: "milliseconds",
};
const HORIZON_MS: Range = Range {
    min: 0,
    max: Some(7 * 24 * 3_600_000),
    unit: "milliseconds",
};
const IDS: Range = Range {
    min: 1,
    max: Some(100_000_000),
    unit: "ids",
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum RawFsync {
    Always,
    Interval,
    Never,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawWal {
    enabled: bool,
    fsync: RawFsync,
    fsync_interval_ms: Int,
    group_commit_max_delay_us: Int,
    group_commit_max_bytes: Int,
    segment_bytes: Int,
    retention_bytes: Int,
    retention_ms: Int,
    max_record_bytes: Int,
    checkpoint_interval_ms: Int,
    dedup_horizon_ms: Int,
    dedup_max_ids: Int,
}

impl Default for RawWal {
    fn default() -> Self {
        RawWal {
            enabled: true,
            fsync: RawFsync::Always,
            fsync_interval_ms: int(wal::DEFAULT_FSYNC_INTERVAL_MS),
            group_commit_max_delay_us: int(wal::DEFAULT_GROUP_MAX_DELAY_US),
            group_commit_max_bytes: int(wal::DEFAULT_GROUP_MAX_BYTES),
            segment_bytes: int(wal::DEFAULT_SEGMENT_BYTES),
            retention_bytes: int(wal::DEFAULT_RETENTION_BYTES),
            retention_ms: int(wal::DEFAULT_RETENTION_MS),
            max_record_bytes: int(wal::DEFAULT_MAX_RECORD_BYTES),
            checkpoint_interval_ms: int(wal::DEFAULT_CHECKPOINT_INTERVAL_MS),
            dedup_horizon_ms: int(wal::DEFAULT_DEDUP_HORIZON_MS),
            dedup_max_ids: int(wal::DEFAULT_DEDUP_MAX_IDS),
        }
    }
}

impl Validator<'_> {
    pub(super) fn wal(&self, raw: &RawWal) -> Result<WalConfig, ConfigError> {
        let segment_bytes = self.range("wal.segment_bytes", raw.segment_bytes, SEGMENT_BYTES)?;
        let max_record_bytes = self.range("wal.max_record_bytes", raw.max_record_bytes, BYTES)?;
        Ok(WalConfig {
            enabled: raw.enabled,
            fsync: match raw.fsync {
                RawFsync::Always => FsyncMode::Always,
                RawFsync::Interval => FsyncMode::Interval,
                RawFsync::Never => FsyncMode::Never,
            },
            fsync_interval_ms: self.range(
                "wal.fsync_interval_ms",
                raw.fsync_interval_ms,
                POSITIVE_MS,
            )?,
            group_commit_max_delay_us: self.range(
                "wal.group_commit_max_delay_us",
                raw.group_commit_max_delay_us,
                DELAY_US,
            )?,
            group_commit_max_bytes: self.range(
                "wal.group_commit_max_bytes",
                raw.group_commit_max_bytes,
                BYTES,
            )?,
            segment_bytes,
            retention_bytes: self.range("wal.retention_bytes", raw.retention_bytes, BYTES)?,
            retention_ms: self.range("wal.retention_ms", raw.retention_ms, RETENTION_MS)?,
            max_record_bytes,
            checkpoint_interval_ms: self.range(
                "wal.checkpoint_interval_ms",
                raw.checkpoint_interval_ms,
                POSITIVE_MS,
            )?,
            dedup_horizon_ms: self.range(
                "wal.dedup_horizon_ms",
                raw.dedup_horizon_ms,
                HORIZON_MS,
            )?,
            dedup_max_ids: self.range("wal.dedup_max_ids", raw.dedup_max_ids, IDS)?,
        })
    }
}
