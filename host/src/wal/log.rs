//! The segmented log: recovery, append, sync, rotation, retention, reading.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::WalError;
use super::fs::{WalFile, WalFs, join};
use super::segment::{self, Frame, HEADER_BYTES, HeaderProblem};

/// Sizes and retention of a [`Log`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A new segment starts once the active one is at least this large.
    pub segment_bytes: u64,
    /// Segments below the retention floor are deleted, oldest first, while
    /// the log is larger than this …
    pub retention_bytes: u64,
    /// … or while they were last written longer ago than this (milliseconds).
    pub retention_ms: u64,
    /// Largest record accepted (and believed when reading a length field).
    pub max_record_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: super::DEFAULT_SEGMENT_BYTES,
            retention_bytes: super::DEFAULT_RETENTION_BYTES,
            retention_ms: super::DEFAULT_RETENTION_MS,
            max_record_bytes: super::DEFAULT_MAX_RECORD_BYTES as usize,
        }
    }
}

/// Damage found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset of the damage in it.
    pub offset: u64,
    /// Sequence number of the first record lost.
    pub first_seq: u64,
    /// How many records were lost (0 when it cannot be known).
    pub records: u64,
}

/// Sequence numbers no segment holds: a segment is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The first missing sequence number.
    pub from: u64,
    /// The last missing sequence number.
    pub to: u64,
}

/// What [`Log::open`] found and repaired.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Segment files found.
    pub segments: usize,
    /// Good records found.
    pub records: u64,
    /// Bytes of segment files found.
    pub bytes: u64,
    /// Bytes of torn tail cut off the newest segment.
    pub truncated_bytes: u64,
    /// Damaged records skipped (each also logged as an error).
    pub corrupt: Vec<Corruption>,
    /// Missing ranges of sequence numbers.
    pub gaps: Vec<Gap>,
    /// Files moved aside (`.corrupt`) because their header was not eddy's.
    pub set_aside: Vec<PathBuf>,
    /// The first sequence number the log holds.
    pub first_seq: u64,
    /// The sequence number the next append gets.
    pub next_seq: u64,
}

impl Recovery {
    /// Records lost to damage (skipped frames, unreadable tails of older
    /// segments).
    pub fn corrupt_records(&self) -> u64 {
        self.corrupt.iter().map(|c| c.records).sum()
    }
}

/// Counters of a [`Log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// Segment files, the active one included.
    pub segments: usize,
    /// Bytes of all segments.
    pub bytes: u64,
    /// The first sequence number still in the log.
    pub first_seq: u64,
    /// The sequence number the next append gets.
    pub next_seq: u64,
    /// Every record up to this one is synced.
    pub durable_seq: u64,
    /// Records (sequence numbers) the log spans, damaged ones included.
    pub records: u64,
}

struct Segment {
    first: u64,
    bytes: u64,
    path: PathBuf,
}

/// The write-ahead log: dense `u64` sequence numbers from 1, in segment
/// files under one directory. See the [module docs](super) for the format.
///
/// `append` writes to the OS; `sync` makes everything appended durable.
/// A failed write is cut off again, so the log stays valid and a later
/// append (after the disk has space again) succeeds.
pub struct Log {
    fs: Arc<dyn WalFs>,
    dir: PathBuf,
    opts: LogOptions,
    sealed: Vec<Segment>,
    active: Segment,
    file: Box<dyn WalFile>,
    /// Bytes of the active segment that hold good frames (and the header).
    durable_len: u64,
    /// A failed write left bytes past `active.bytes` that could not be cut yet.
    cut_pending: bool,
    next_seq: u64,
    durable_seq: u64,
    /// Records from here on are not covered by a checkpoint: retention
    /// never deletes them.
    floor: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

fn create_segment(fs: &dyn WalFs, dir: &Path, first: u64) -> Result<Box<dyn WalFile>, WalError> {
    let path = join(dir, &segment::file_name(first));
    let mut file = fs
        .open_append(&path, true)
        .map_err(|e| WalError::io("create", &path, e))?;
    let written = file
        .write_all(&segment::header(first))
        .map_err(|e| WalError::io("write", &path, e))
        .and_then(|()| {
            fs.sync_dir(dir)
                .map_err(|e| WalError::io("sync directory", dir, e))
        });
    if let Err(e) = written {
        // Best effort: a header-less file is repaired at the next open anyway.
        let _ = fs.remove(&path);
        return Err(e);
    }
    Ok(file)
}

impl Log {
    /// Opens the log in `dir` (which must exist), repairing what a crash
    /// left: see the [module docs](super#recovery-logopen). Never fails
    /// because of damaged content; fails when the directory or a file
    /// cannot be read or written.
    pub fn open(
        fs: Arc<dyn WalFs>,
        dir: impl Into<PathBuf>,
        opts: LogOptions,
    ) -> Result<(Log, Recovery), WalError> {
        let dir = dir.into();
        let names = fs.list(&dir).map_err(|source| WalError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let mut firsts: Vec<u64> = names
            .iter()
            .filter_map(|n| segment::parse_name(n))
            .collect();
        firsts.sort_unstable();
        let mut rec = Recovery::default();
        let mut segments: Vec<Segment> = Vec::new();
        // (first seq, records) of the newest segment, and whether its file
        // needs a new header.
        let mut tail: Option<(u64, u64, bool)> = None;
        for (i, &first) in firsts.iter().enumerate() {
            let path = join(&dir, &segment::file_name(first));
            let next_first = firsts.get(i + 1).copied();
            let last = next_first.is_none();
            let buf = fs.read(&path).map_err(|e| WalError::io("read", &path, e))?;
            rec.segments += 1;
            rec.bytes += buf.len() as u64;
            let lost_to_next = |from: u64| next_first.map_or(0, |n| n.saturating_sub(from));
            match segment::check_header(&buf, first) {
                Err(HeaderProblem::Short) if last => {
                    // Created just before a crash: nothing in it yet.
                    if !buf.is_empty() {
                        tracing::warn!(segment = %path.display(), bytes = buf.len(), "write-ahead log: torn segment header cut off");
                    }
                    rec.truncated_bytes += buf.len() as u64;
                    fs.truncate(&path, 0)
                        .map_err(|e| WalError::io("truncate", &path, e))?;
                    segments.push(Segment {
                        first,
                        bytes: 0,
                        path,
                    });
                    tail = Some((first, 0, true));
                }
                Err(_) if last => {
                    let aside = path.with_extension("wal.corrupt");
                    tracing::error!(segment = %path.display(), moved_to = %aside.display(), "write-ahead log: newest segment has no valid header; moved aside, its records are lost");
                    fs.rename(&path, &aside)
                        .map_err(|e| WalError::io("rename", &path, e))?;
                    rec.corrupt.push(Corruption {
                        segment: aside.clone(),
                        offset: 0,
                        first_seq: first,
                        records: 0,
                    });
                    rec.set_aside.push(aside);
                    segments.push(Segment {
                        first,
                        bytes: 0,
                        path,
                    });
                    tail = Some((first, 0, true));
                }
                Err(_) => {
                    let records = lost_to_next(first);
                    tracing::error!(segment = %path.display(), first_seq = first, records, "write-ahead log: segment header damaged; its records are skipped");
                    rec.corrupt.push(Corruption {
                        segment: path.clone(),
                        offset: 0,
                        first_seq: first,
                        records,
                    });
                    segments.push(Segment {
                        first,
                        bytes: buf.len() as u64,
                        path,
                    });
                }
                Ok(()) => {
                    let scan = segment::scan(&buf, HEADER_BYTES, opts.max_record_bytes);
                    let count = scan.frames.len() as u64;
                    for (n, frame) in scan.frames.iter().enumerate() {
                        match *frame {
                            Frame::Good { .. } => rec.records += 1,
                            Frame::Corrupt { offset } => {
                                let seq = first + n as u64;
                                tracing::error!(segment = %path.display(), offset, seq, "write-ahead log: record fails its checksum; skipped");
                                rec.corrupt.push(Corruption {
                                    segment: path.clone(),
                                    offset: offset as u64,
                                    first_seq: seq,
                                    records: 1,
                                });
                            }
                        }
                    }
                    let end = first + count;
                    let mut bytes = buf.len() as u64;
                    if scan.end < buf.len() {
                        let cut = (buf.len() - scan.end) as u64;
                        if last {
                            tracing::warn!(segment = %path.display(), offset = scan.end, bytes = cut, "write-ahead log: torn tail cut off");
                            fs.truncate(&path, scan.end as u64)
                                .map_err(|e| WalError::io("truncate", &path, e))?;
                            rec.truncated_bytes += cut;
                            bytes = scan.end as u64;
                        } else {
                            let records = lost_to_next(end);
                            tracing::error!(segment = %path.display(), offset = scan.end, bytes = cut, first_seq = end, records, "write-ahead log: unreadable records in an older segment; skipped");
                            rec.corrupt.push(Corruption {
                                segment: path.clone(),
                                offset: scan.end as u64,
                                first_seq: end,
                                records,
                            });
                        }
                    } else if let Some(n) = next_first {
                        if n > end {
                            tracing::error!(
                                from = end,
                                to = n - 1,
                                "write-ahead log: records missing between segments (a segment was removed?)"
                            );
                            rec.gaps.push(Gap {
                                from: end,
                                to: n - 1,
                            });
                        } else if n < end {
                            tracing::warn!(segment = %path.display(), next_first = n, "write-ahead log: segments overlap; the later segment wins");
                        }
                    }
                    if last {
                        tail = Some((first, count, false));
                    }
                    segments.push(Segment { first, bytes, path });
                }
            }
        }

        let (first, count, needs_header) = tail.unwrap_or((1, 0, true));
        let mut active = match segments.pop() {
            Some(s) => s,
            None => Segment {
                first,
                bytes: 0,
                path: join(&dir, &segment::file_name(first)),
            },
        };
        // A directory we may list but not write to is the data directory's
        // problem, not a segment's.
        let not_writable = |e: WalError| match e {
            WalError::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                WalError::DataDir {
                    path: dir.clone(),
                    source,
                }
            }
            e => e,
        };
        let mut file = if needs_header {
            let file = create_segment(fs.as_ref(), &dir, first).map_err(not_writable)?;
            active.bytes = HEADER_BYTES as u64;
            file
        } else {
            fs.open_append(&active.path, false)
                .map_err(|e| not_writable(WalError::io("open", &active.path, e)))?
        };
        // What a crashed process left in the page cache is on disk from here on.
        file.sync_data()
            .map_err(|e| WalError::io("sync", &active.path, e))?;
        fs.sync_dir(&dir)
            .map_err(|e| WalError::io("sync directory", &dir, e))?;
        let next_seq = first + count;
        rec.first_seq = segments.first().map_or(active.first, |s| s.first);
        rec.next_seq = next_seq;
        let log = Log {
            fs,
            dir,
            opts,
            sealed: segments,
            durable_len: active.bytes,
            active,
            file,
            cut_pending: false,
            next_seq,
            durable_seq: next_seq - 1,
            floor: 0,
            buf: Vec::new(),
        };
        Ok((log, rec))
    }

    /// Appends one record (a batch); returns its sequence number. Written
    /// to the OS, not yet durable: see [`Log::sync`]. On an error nothing
    /// of the record stays in the log.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        if payload.is_empty() {
            return Err(WalError::EmptyRecord);
        }
        if payload.len() > self.opts.max_record_bytes || payload.len() > u32::MAX as usize {
            return Err(WalError::RecordTooLarge {
                bytes: payload.len(),
                max: self.opts.max_record_bytes,
            });
        }
        if self.cut_pending {
            self.file
                .set_len(self.active.bytes)
                .map_err(|e| WalError::io("truncate", &self.active.path, e))?;
            self.cut_pending = false;
        }
        if self.active.bytes >= self.opts.segment_bytes && self.next_seq > self.active.first {
            self.roll()?;
        }
        self.buf.clear();
        segment::encode_frame(payload, &mut self.buf);
        if let Err(e) = self.file.write_all(&self.buf) {
            // Part of the frame may be in the file: cut it off, now or
            // before the next append.
            self.cut_pending = self.file.set_len(self.active.bytes).is_err();
            return Err(WalError::io("write", &self.active.path, e));
        }
        self.active.bytes += self.buf.len() as u64;
        let seq = self.next_seq;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Makes every appended record durable (`fdatasync`); returns the
    /// sequence number durable up to. On an error nothing new is durable.
    pub fn sync(&mut self) -> Result<u64, WalError> {
        if self.durable_seq + 1 < self.next_seq {
            self.file
                .sync_data()
                .map_err(|e| WalError::io("sync", &self.active.path, e))?;
            self.durable_seq = self.next_seq - 1;
            self.durable_len = self.active.bytes;
        }
        Ok(self.durable_seq)
    }

    /// Forgets every record appended since the last successful sync (cuts
    /// them off the file): after a failed sync their state on disk is
    /// unknown, and their sequence numbers are handed out again.
    pub fn discard_unsynced(&mut self) -> Result<(), WalError> {
        self.file
            .set_len(self.durable_len)
            .map_err(|e| WalError::io("truncate", &self.active.path, e))?;
        self.active.bytes = self.durable_len;
        self.next_seq = self.durable_seq + 1;
        self.cut_pending = false;
        Ok(())
    }

    fn roll(&mut self) -> Result<(), WalError> {
        self.sync()?;
        let first = self.next_seq;
        let file = create_segment(self.fs.as_ref(), &self.dir, first)?;
        let old = std::mem::replace(
            &mut self.active,
            Segment {
                first,
                bytes: HEADER_BYTES as u64,
                path: join(&self.dir, &segment::file_name(first)),
            },
        );
        self.sealed.push(old);
        self.file = file;
        self.durable_len = HEADER_BYTES as u64;
        if let Err(e) = self.apply_retention() {
            tracing::warn!(error = %e, "write-ahead log: retention failed; retried at the next roll");
        }
        Ok(())
    }

    /// Records below `seq` are covered by the oldest checkpoint kept:
    /// retention may delete them (and only them).
    pub fn set_retention_floor(&mut self, seq: u64) {
        self.floor = self.floor.max(seq);
    }

    /// Deletes the oldest segments that are wholly below the retention
    /// floor and outside retention (the log is over `retention_bytes`, or
    /// the segment is older than `retention_ms`). Runs at every roll.
    /// Returns how many segments were deleted.
    pub fn apply_retention(&mut self) -> Result<usize, WalError> {
        let now = self.fs.now();
        let max_age = Duration::from_millis(self.opts.retention_ms);
        let mut total = self.stats().bytes;
        let mut n = 0;
        for (i, seg) in self.sealed.iter().enumerate() {
            let end = self
                .sealed
                .get(i + 1)
                .map_or(self.active.first, |s| s.first);
            if end > self.floor {
                break;
            }
            let over_size = total > self.opts.retention_bytes;
            let over_age = match self.fs.modified(&seg.path) {
                Ok(t) => now.duration_since(t).is_ok_and(|age| age > max_age),
                Err(_) => true,
            };
            if !over_size && !over_age {
                break;
            }
            total -= seg.bytes;
            n += 1;
        }
        self.delete_oldest(n)
    }

    /// Deletes every segment whose records are all below `seq`, whatever
    /// the retention (the active segment is never deleted). Returns how
    /// many were deleted.
    pub fn truncate_before(&mut self, seq: u64) -> Result<usize, WalError> {
        let mut n = 0;
        for (i, _) in self.sealed.iter().enumerate() {
            let end = self
                .sealed
                .get(i + 1)
                .map_or(self.active.first, |s| s.first);
            if end > seq {
                break;
            }
            n += 1;
        }
        self.delete_oldest(n)
    }

    fn delete_oldest(&mut self, n: usize) -> Result<usize, WalError> {
        if n == 0 {
            return Ok(0);
        }
        // Oldest first, so a crash in between leaves a log without holes.
        let mut deleted = 0;
        let mut result = Ok(());
        for seg in self.sealed.iter().take(n) {
            match self.fs.remove(&seg.path) {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => deleted += 1,
                Err(e) => {
                    result = Err(WalError::io("remove", &seg.path, e));
                    break;
                }
            }
        }
        self.sealed.drain(..deleted);
        if deleted > 0 {
            tracing::info!(
                segments = deleted,
                first_seq = self.first_seq(),
                "write-ahead log: old segments deleted"
            );
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| WalError::io("sync directory", &self.dir, e))?;
        }
        result.map(|()| deleted)
    }

    /// Reads the records from `seq` on (or from the first one still kept,
    /// if that is later), in order, across segments, up to the last one
    /// appended when this is called. Damaged records are skipped and
    /// counted ([`LogReader::corrupt_skipped`]).
    pub fn read_from(&self, seq: u64) -> LogReader {
        let mut segments: Vec<(u64, PathBuf)> = self
            .sealed
            .iter()
            .map(|s| (s.first, s.path.clone()))
            .collect();
        segments.push((self.active.first, self.active.path.clone()));
        LogReader {
            fs: Arc::clone(&self.fs),
            segments,
            next_segment: 0,
            from: seq,
            end: self.next_seq,
            max_record: self.opts.max_record_bytes,
            current: None,
            corrupt: 0,
        }
    }

    /// Every record up to this sequence number is durable (0: none yet).
    pub fn durable(&self) -> u64 {
        self.durable_seq
    }

    /// The sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The first sequence number still in the log.
    pub fn first_seq(&self) -> u64 {
        self.sealed.first().map_or(self.active.first, |s| s.first)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sizes and positions.
    pub fn stats(&self) -> LogStats {
        LogStats {
            segments: self.sealed.len() + 1,
            bytes: self.sealed.iter().map(|s| s.bytes).sum::<u64>() + self.active.bytes,
            first_seq: self.first_seq(),
            next_seq: self.next_seq,
            durable_seq: self.durable_seq,
            records: self.next_seq - self.first_seq(),
        }
    }
}

struct Current {
    buf: Vec<u8>,
    frames: Vec<Frame>,
    pos: usize,
    first: u64,
    /// The next segment's first sequence number: records from there on
    /// belong to it.
    limit: u64,
}

/// Records of a [`Log`] in order: `(sequence number, payload)`. Reads one
/// segment at a time into memory. An unreadable file is an `Err` item;
/// the reader goes on with the next segment after it.
pub struct LogReader {
    fs: Arc<dyn WalFs>,
    segments: Vec<(u64, PathBuf)>,
    next_segment: usize,
    from: u64,
    end: u64,
    max_record: usize,
    current: Option<Current>,
    corrupt: u64,
}

impl LogReader {
    /// Records skipped because they were damaged, so far.
    pub fn corrupt_skipped(&self) -> u64 {
        self.corrupt
    }

    fn next_from_current(&mut self) -> Option<(u64, Vec<u8>)> {
        let cur = self.current.as_mut()?;
        while let Some(frame) = cur.frames.get(cur.pos) {
            let seq = cur.first + cur.pos as u64;
            cur.pos += 1;
            if seq >= cur.limit || seq >= self.end {
                break;
            }
            if seq < self.from {
                continue;
            }
            match *frame {
                Frame::Good { start, end } => {
                    return cur.buf.get(start..end).map(|p| (seq, p.to_vec()));
                }
                Frame::Corrupt { .. } => self.corrupt += 1,
            }
        }
        self.current = None;
        None
    }
}

impl Iterator for LogReader {
    type Item = Result<(u64, Vec<u8>), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.next_from_current() {
                return Some(Ok(record));
            }
            let (first, path) = self.segments.get(self.next_segment)?.clone();
            self.next_segment += 1;
            let limit = self
                .segments
                .get(self.next_segment)
                .map_or(u64::MAX, |s| s.0);
            if limit <= self.from || first >= self.end {
                continue;
            }
            let buf = match self.fs.read(&path) {
                Ok(buf) => buf,
                Err(e) => return Some(Err(WalError::io("read", &path, e))),
            };
            if segment::check_header(&buf, first).is_err() {
                if limit != u64::MAX {
                    self.corrupt += limit - first.max(self.from);
                }
                continue;
            }
            let scan = segment::scan(&buf, HEADER_BYTES, self.max_record);
            let found = first + scan.frames.len() as u64;
            if limit != u64::MAX && found < limit && scan.end < buf.len() {
                // Unreadable tail of an older segment (reported by open;
                // a missing segment is a gap, reported there too).
                self.corrupt += limit - found.max(self.from);
            }
            self.current = Some(Current {
                buf,
                frames: scan.frames,
                pos: 0,
                first,
                limit,
            });
        }
    }
}
