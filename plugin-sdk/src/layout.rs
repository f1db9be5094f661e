//! The codes and packing of the columnar batch layout (see `wit/types.wit`).

/// A span or range that is not there (e.g. an event without a session).
pub const ABSENT: u64 = u64::MAX;

/// Value kinds.
pub const NULL: u8 = 0;
/// Value kind: boolean, value 0 or 1.
pub const BOOL: u8 = 1;
/// Value kind: `s64` bits.
pub const INT: u8 = 2;
/// Value kind: `f64` bits.
pub const FLOAT: u8 = 3;
/// Value kind: text span.
pub const TEXT: u8 = 4;
/// Value kind: JSON span.
pub const JSON: u8 = 5;
/// Edit kind: remove the property.
pub const REMOVE: u8 = 6;

/// Outcome kinds.
pub const KEEP: u8 = 0;
/// Outcome: drop.
pub const DROP: u8 = 1;
/// Outcome: modify with a range of edits.
pub const MODIFY: u8 = 2;
/// Outcome: replace with one output event.
pub const REPLACE: u8 = 3;
/// Outcome: split into a range of output events.
pub const SPLIT: u8 = 4;

/// Pack a start and a length into a span or range.
pub fn pack(start: usize, len: usize) -> u64 {
    ((start as u64) << 32) | (len as u64 & 0xffff_ffff)
}

/// Unpack a span or range into start and end.
pub fn bounds(v: u64) -> (usize, usize) {
    let start = (v >> 32) as usize;
    (start, start + (v & 0xffff_ffff) as usize)
}
