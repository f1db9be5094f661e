//! Saving and restoring the engine's state.
//!
//! A snapshot is the engine's whole state at an input boundary, in a
//! versioned envelope:
//!
//! ```text
//! "EDDYSNAP" | format version: u32 LE | body length: u64 LE | body | CRC32C(body): u32 LE
//! ```
//!
//! The body is [postcard](https://docs.rs/postcard) (compact, and stable
//! since its 1.0 wire format) of [`EngineState`]. A reader refuses another
//! format version, a wrong length or checksum with a [`SnapshotError`] that
//! says which, rather than restoring something half right.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::time::{EventTime, SourceId};
use super::{Counters, Sequencer};
use crate::pipeline::PipelineState;
use crate::window::snapshot::WindowsState;

/// The engine's whole state (the envelope's body).
#[derive(Debug, Serialize, Deserialize)]
pub struct EngineState {
    pub(super) counters: Counters,
    pub(super) positions: BTreeMap<SourceId, u64>,
    pub(super) kafka_offsets: super::KafkaOffsets,
    pub(super) seed: u64,
    pub(super) time: EventTime,
    pub(super) window_names: Vec<String>,
    pub(super) seq: Sequencer,
    pub(super) pipeline: PipelineState,
    pub(super) windows: WindowsState,
    pub(super) patterns: crate::pattern::PatternsState,
    pub(super) dedup: super::dedup::Dedup,
    pub(super) alerts: super::alerts::AlertsState,
}

impl EngineState {
    /// The next offset of each Kafka partition this state covers.
    pub fn kafka_offsets(&self) -> &super::KafkaOffsets {
        &self.kafka_offsets
    }

    /// Encode in the envelope.
    pub fn into_bytes(mut self) -> Vec<u8> {
        self.windows.canonicalize();
        self.pipeline.canonicalize();
        // Encoding plain data into a Vec cannot fail.
        seal(&postcard::to_allocvec(&self).unwrap_or_default())
    }

    /// Decode from the envelope.
    pub fn from_bytes(bytes: &[u8]) -> Result<EngineState, SnapshotError> {
        postcard::from_bytes(open(bytes)?)
            .map_err(|e| SnapshotError::Damaged(format!("the body does not decode: {e}")))
    }
}

/// The envelope's first bytes.
pub const MAGIC: &[u8; 8] = b"EDDYSNAP";
/// The body's format version: bump it when [`EngineState`] changes shape.
pub const FORMAT_VERSION: u32 = 6;

/// Why a snapshot cannot be read or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not a snapshot at all.
    #[error("not an eddy snapshot (it does not start with EDDYSNAP)")]
    NotASnapshot,
    /// Written by a version of eddy with another format.
    #[error("snapshot format {found} is not supported (this eddy reads format {FORMAT_VERSION})")]
    Version {
        /// The file's version.
        found: u32,
    },
    /// Cut short or corrupted.
    #[error("the snapshot is damaged: {0}")]
    Damaged(String),
    /// It does not fit the engine it is restored into.
    #[error("the snapshot does not fit this configuration: {0}")]
    Mismatch(String),
}

/// Wrap a body in the envelope.
pub fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 24);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out
}

/// The body of an envelope, checked.
pub fn open(bytes: &[u8]) -> Result<&[u8], SnapshotError> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or(SnapshotError::NotASnapshot)?;
    let (version, rest) = split_array::<4>(rest)?;
    let found = u32::from_le_bytes(version);
    if found != FORMAT_VERSION {
        return Err(SnapshotError::Version { found });
    }
    let (len, rest) = split_array::<8>(rest)?;
    let len = usize::try_from(u64::from_le_bytes(len))
        .map_err(|_| SnapshotError::Damaged("impossible length".into()))?;
    if rest.len() != len.saturating_add(4) {
        return Err(SnapshotError::Damaged(format!(
            "the body should be {len} bytes plus a checksum, the file has {}",
            rest.len()
        )));
    }
    let (body, crc) = rest.split_at(len);
    let (crc, _) = split_array::<4>(crc)?;
    if crc32c::crc32c(body) != u32::from_le_bytes(crc) {
        return Err(SnapshotError::Damaged("checksum mismatch".into()));
    }
    Ok(body)
}

fn split_array<const N: usize>(b: &[u8]) -> Result<([u8; N], &[u8]), SnapshotError> {
    let (head, rest) = b
        .split_first_chunk::<N>()
        .ok_or_else(|| SnapshotError::Damaged("cut short".into()))?;
    Ok((*head, rest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_round_trips_and_refuses_damage() {
        let sealed = seal(b"hello");
        assert_eq!(open(&sealed).unwrap(), b"hello");
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(matches!(open(&flipped), Err(SnapshotError::Damaged(_))));
        assert!(matches!(
            open(&sealed[..sealed.len() - 1]),
            Err(SnapshotError::Damaged(_))
        ));
        let mut other = sealed.clone();
        other[8] = 9;
        assert!(matches!(
            open(&other),
            Err(SnapshotError::Version { found: 9 })
        ));
        assert!(matches!(open(b"nope"), Err(SnapshotError::NotASnapshot)));
    }
}
