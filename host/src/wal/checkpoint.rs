//! Checkpoint files: one per checkpoint, written atomically, the newest two
//! kept.
//!
//! `checkpoint-<wal seq, 20 digits>.ckpt` = a 32-byte header (magic
//! `EDDYCKPT`, format version `u32`, CRC32C `u32` over the rest of the
//! header and the payload, WAL sequence number `u64`, payload length `u64`,
//! little-endian) and the payload. The checkpoint covers every log record
//! up to and including its WAL sequence number.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::WalError;
use super::fs::{WalFs, join};

const MAGIC: [u8; 8] = *b"EDDYCKPT";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 32;
const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".ckpt";
const TMP_SUFFIX: &str = ".ckpt.tmp";
/// The newest checkpoint and the one before it, so a damaged newest one
/// still leaves one to restore.
const KEEP: usize = 2;

/// A checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The last log record the checkpoint covers; replay starts after it.
    pub wal_seq: u64,
    /// The file.
    pub path: PathBuf,
    /// Payload bytes.
    pub bytes: u64,
    /// Newer checkpoint files that were damaged and skipped to load this
    /// one (each also logged as a warning).
    pub skipped: Vec<PathBuf>,
}

/// The checkpoint files in one directory.
pub struct CheckpointStore {
    fs: Arc<dyn WalFs>,
    dir: PathBuf,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("dir", &self.dir)
            .finish()
    }
}

fn file_name(wal_seq: u64) -> String {
    format!("{PREFIX}{wal_seq:020}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn encode(wal_seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&wal_seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[16..HEADER_BYTES]), payload);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The payload of a checkpoint file, or why it is not valid.
fn decode(buf: &[u8], wal_seq: u64) -> Result<&[u8], &'static str> {
    let h = buf.get(..HEADER_BYTES).ok_or("shorter than its header")?;
    if h[..8] != MAGIC {
        return Err("not an eddy checkpoint");
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if u32::from_le_bytes([h[8], h[9], h[10], h[11]]) != VERSION {
        return Err("unknown format version");
    }
    if word(16) != wal_seq {
        return Err("WAL sequence number differs from the file name");
    }
    let payload = &buf[HEADER_BYTES..];
    if word(24) != payload.len() as u64 {
        return Err("length differs from the header (torn write?)");
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[16..HEADER_BYTES]), payload);
    if crc != u32::from_le_bytes([h[12], h[13], h[14], h[15]]) {
        return Err("checksum mismatch");
    }
    Ok(payload)
}

impl CheckpointStore {
    /// The store in `dir` (which must exist). Removes temporary files a
    /// crash left behind.
    pub fn open(fs: Arc<dyn WalFs>, dir: impl Into<PathBuf>) -> Result<CheckpointStore, WalError> {
        let dir = dir.into();
        let names = fs.list(&dir).map_err(|source| WalError::DataDir {
            path: dir.clone(),
            source,
        })?;
        for name in names
            .iter()
            .filter(|n| n.starts_with(PREFIX) && n.ends_with(TMP_SUFFIX))
        {
            let path = join(&dir, name);
            tracing::info!(file = %path.display(), "checkpoint: removing an unfinished checkpoint");
            fs.remove(&path)
                .map_err(|e| WalError::io("remove", &path, e))?;
        }
        Ok(CheckpointStore { fs, dir })
    }

    /// WAL sequence numbers of the checkpoint files, newest first.
    fn list(&self) -> Result<Vec<u64>, WalError> {
        let names = self
            .fs
            .list(&self.dir)
            .map_err(|source| WalError::DataDir {
                path: self.dir.clone(),
                source,
            })?;
        let mut seqs: Vec<u64> = names.iter().filter_map(|n| parse_name(n)).collect();
        seqs.sort_unstable_by(|a, b| b.cmp(a));
        Ok(seqs)
    }

    /// The WAL sequence number of the oldest checkpoint kept: the log may
    /// drop records up to it ([`super::Log::set_retention_floor`] with
    /// this + 1). `None` when there is no checkpoint.
    pub fn oldest_kept(&self) -> Result<Option<u64>, WalError> {
        Ok(self.list()?.last().copied())
    }

    /// Writes a checkpoint covering the log up to `wal_seq`: temporary file,
    /// sync, rename, directory sync; then deletes all but the newest two.
    pub fn write(&self, wal_seq: u64, payload: &[u8]) -> Result<CheckpointInfo, WalError> {
        let path = join(&self.dir, &file_name(wal_seq));
        let tmp = join(&self.dir, &format!("{PREFIX}{wal_seq:020}{TMP_SUFFIX}"));
        let written = self.write_tmp(&tmp, &encode(wal_seq, payload));
        if let Err(e) = written {
            let _ = self.fs.remove(&tmp);
            return Err(e);
        }
        self.fs
            .rename(&tmp, &path)
            .map_err(|e| WalError::io("rename", &tmp, e))?;
        self.sync_dir()?;
        let seqs = self.list()?;
        let mut removed = false;
        for old in seqs.iter().skip(KEEP) {
            let old_path = join(&self.dir, &file_name(*old));
            self.fs
                .remove(&old_path)
                .map_err(|e| WalError::io("remove", &old_path, e))?;
            removed = true;
        }
        if removed {
            self.sync_dir()?;
        }
        Ok(CheckpointInfo {
            wal_seq,
            path,
            bytes: payload.len() as u64,
            skipped: Vec::new(),
        })
    }

    fn write_tmp(&self, tmp: &Path, bytes: &[u8]) -> Result<(), WalError> {
        let mut file = self
            .fs
            .create(tmp)
            .map_err(|e| WalError::io("create", tmp, e))?;
        file.write_all(bytes)
            .map_err(|e| WalError::io("write", tmp, e))?;
        file.sync_data().map_err(|e| WalError::io("sync", tmp, e))
    }

    fn sync_dir(&self) -> Result<(), WalError> {
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| WalError::io("sync directory", &self.dir, e))
    }

    /// The newest valid checkpoint and its payload, falling back to older
    /// ones when the newest is damaged (said in
    /// [`CheckpointInfo::skipped`] and a warning). `Ok(None)`: there is no
    /// checkpoint; an error when there are some but none is valid.
    pub fn load_latest(&self) -> Result<Option<(CheckpointInfo, Vec<u8>)>, WalError> {
        let seqs = self.list()?;
        let mut skipped = Vec::new();
        for &seq in &seqs {
            let path = join(&self.dir, &file_name(seq));
            let buf = match self.fs.read(&path) {
                Ok(buf) => buf,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "checkpoint: cannot be read; trying the previous one");
                    skipped.push(path);
                    continue;
                }
            };
            match decode(&buf, seq) {
                Ok(payload) => {
                    let info = CheckpointInfo {
                        wal_seq: seq,
                        path,
                        bytes: payload.len() as u64,
                        skipped,
                    };
                    return Ok(Some((info, payload.to_vec())));
                }
                Err(why) => {
                    tracing::warn!(file = %path.display(), reason = why, "checkpoint: damaged; trying the previous one");
                    skipped.push(path);
                }
            }
        }
        if seqs.is_empty() {
            Ok(None)
        } else {
            Err(WalError::NoValidCheckpoint {
                dir: self.dir.clone(),
                tried: seqs.len(),
            })
        }
    }
}
