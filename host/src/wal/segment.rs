//! One segment file: its name, its header, and the frames in it.
//!
//! A segment is `<first seq, 20 digits>.wal`: a 24-byte header (magic,
//! format version, reserved, first sequence number), then frames of
//! `length u32 LE | CRC32C(payload) u32 LE | payload`. Record `n` of the
//! segment (counting damaged ones) has sequence number `first + n`.

/// The first bytes of every segment.
pub(crate) const MAGIC: [u8; 8] = *b"EDDYWAL\0";
/// The segment format this code writes and reads.
pub(crate) const VERSION: u32 = 1;
/// Bytes of the segment header.
pub(crate) const HEADER_BYTES: usize = 24;
/// Bytes of a frame's length and checksum.
pub(crate) const FRAME_HEADER_BYTES: usize = 8;
/// The file name suffix of segments.
pub(crate) const SUFFIX: &str = ".wal";

/// The file name of the segment whose first record is `first_seq`.
pub(crate) fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SUFFIX}")
}

/// The first sequence number a segment file name stands for, if it is one.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header of a segment whose first record is `first_seq`.
pub(crate) fn header(first_seq: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// What is wrong with a segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    /// Fewer bytes than a header: a segment created just before a crash.
    Short,
    /// Not eddy's magic, an unknown version, or a first sequence number
    /// other than the file name's.
    Invalid,
}

/// Checks a segment's header against the sequence number in its name.
pub(crate) fn check_header(buf: &[u8], first_seq: u64) -> Result<(), HeaderProblem> {
    let Some(h) = buf.get(..HEADER_BYTES) else {
        return Err(HeaderProblem::Short);
    };
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[16..24]);
    if h[..8] != MAGIC || version != VERSION || u64::from_le_bytes(seq) != first_seq {
        return Err(HeaderProblem::Invalid);
    }
    Ok(())
}

/// Appends the frame of `payload` to `out`.
pub(crate) fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// One frame found by [`scan`], by byte offsets into the scanned buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A whole frame whose checksum matches; the payload is `start..end`.
    Good { start: usize, end: usize },
    /// A frame whose checksum does not match, followed by a good frame: its
    /// length field is believed, the record is skipped.
    Corrupt { offset: usize },
}

/// The frames of a segment body and where reading had to stop.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Every frame read, good or skipped, in order: one sequence number each.
    pub(crate) frames: Vec<Frame>,
    /// Where the readable frames end. Bytes past it (if any) are damage:
    /// a torn write at the tail, or a damaged length field.
    pub(crate) end: usize,
}

impl Scan {
    /// How many frames were skipped as corrupt.
    #[cfg(test)]
    pub(crate) fn corrupt(&self) -> u64 {
        self.frames
            .iter()
            .filter(|f| matches!(f, Frame::Corrupt { .. }))
            .count() as u64
    }
}

/// The frame at `pos` if its header is plausible and it fits: (payload
/// start, payload end, checksum matches).
fn frame_at(buf: &[u8], pos: usize, max_record: usize) -> Option<(usize, usize, bool)> {
    let h = buf.get(pos..pos.checked_add(FRAME_HEADER_BYTES)?)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    // Empty records are never written, so zeroes (a preallocated or torn
    // region) are never mistaken for a frame.
    if len == 0 || len > max_record {
        return None;
    }
    let start = pos + FRAME_HEADER_BYTES;
    let end = start.checked_add(len)?;
    let payload = buf.get(start..end)?;
    Some((start, end, crc32c::crc32c(payload) == crc))
}

/// Reads the frames of `buf` from `from` (the byte after the header).
///
/// A frame whose checksum fails is skipped as corrupt when a good frame
/// follows it; otherwise reading stops there (Kafka's rule: the first bad
/// frame at the tail ends the log). A damaged length field cannot be
/// skipped over, so it ends the readable part of the segment too.
pub(crate) fn scan(buf: &[u8], from: usize, max_record: usize) -> Scan {
    let mut scan = Scan {
        frames: Vec::new(),
        end: from,
    };
    let mut pos = from;
    while pos < buf.len() {
        match frame_at(buf, pos, max_record) {
            Some((start, end, true)) => {
                scan.frames.push(Frame::Good { start, end });
                pos = end;
            }
            Some((_, end, false))
                if matches!(frame_at(buf, end, max_record), Some((_, _, true))) =>
            {
                scan.frames.push(Frame::Corrupt { offset: pos });
                pos = end;
            }
            _ => break,
        }
        scan.end = pos;
    }
    scan
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_others() {
        assert_eq!(file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_name(&file_name(42)), Some(42));
        assert_eq!(parse_name("42.wal"), None);
        assert_eq!(parse_name("00000000000000000001.wal.corrupt"), None);
        assert_eq!(parse_name("checkpoint-00000000000000000001.ckpt"), None);
    }

    #[test]
    fn header_checks_magic_version_and_seq() {
        let h = header(7);
        assert_eq!(check_header(&h, 7), Ok(()));
        assert_eq!(check_header(&h, 8), Err(HeaderProblem::Invalid));
        assert_eq!(check_header(&h[..10], 7), Err(HeaderProblem::Short));
        let mut bad = h;
        bad[8] = 9;
        assert_eq!(check_header(&bad, 7), Err(HeaderProblem::Invalid));
    }

    #[test]
    fn scan_skips_a_corrupt_middle_frame_and_stops_at_a_torn_one() {
        let mut buf = Vec::new();
        for p in [&b"one"[..], b"two", b"three"] {
            encode_frame(p, &mut buf);
        }
        let whole = buf.len();
        // Flip a payload byte of the middle frame.
        buf[11 + 8] ^= 1;
        let s = scan(&buf, 0, 1 << 20);
        assert_eq!(s.frames.len(), 3);
        assert_eq!(s.corrupt(), 1);
        assert_eq!(s.end, whole);
        // A torn last frame ends the scan at its start.
        let s = scan(&buf[..whole - 1], 0, 1 << 20);
        assert_eq!(s.frames.len(), 1);
        assert_eq!(s.end, 11);
    }
}
