//! Key groups: every group key hashes to one of [`KEY_GROUPS`] fixed
//! groups, and keyed state is saved and restored by group. A later Kafka
//! partition or worker owns a [`KeyGroupSet`]; moving work between owners
//! moves whole key groups, never re-hashes keys.
//!
//! ```
//! use eddy::window::groups::KeyPart;
//! use eddy::window::state::keygroup::{KeyGroupSet, key_group};
//!
//! let kg = key_group(&[KeyPart::Str("/pricing".into())]);
//! let halves = [KeyGroupSet::share(0, 2)?, KeyGroupSet::share(1, 2)?];
//! assert_eq!(halves.iter().filter(|h| h.contains(kg)).count(), 1);
//! # Ok::<(), eddy::window::state::keygroup::KeyGroupError>(())
//! ```
//!
//! # The hash
//!
//! Stable across processes, runs and releases, because snapshots and
//! partition assignments outlive a build: never `std`'s `DefaultHasher`,
//! `RandomState` or foldhash, whose output is seeded or may change. The key
//! is written in a canonical byte encoding, one part after another:
//!
//! | part | bytes |
//! |---|---|
//! | `Missing` | `00` |
//! | `Null` | `01` |
//! | `Bool(b)` | `02`, then `00` or `01` |
//! | `Int(i)` | `03`, then `i` as 8 bytes little-endian |
//! | `Float(bits)` | `04`, then `bits` as 8 bytes little-endian |
//! | `Str(s)` | `05`, then the UTF-8 length as 8 bytes little-endian, then the bytes |
//! | `Json(t)` | `06`, then the length as 8 bytes little-endian, then the bytes |
//! | `Overflow` | `07` |
//!
//! (tags and lengths make the encoding of a whole key unambiguous); hashed
//! with 64-bit FNV-1a; finished with MurmurHash3's `fmix64`, because
//! FNV-1a's high bits barely change with a key's last byte (without it
//! `"u0"` to `"u9"` all land in group 3, and 10,000 such keys in only 81
//! groups); and mapped to `0..KEY_GROUPS` by the high bits,
//! `(h · KEY_GROUPS) >> 64`. A test pins the groups of fixed keys, so a
//! change to any step fails it.

use std::fmt;
use std::hash::Hasher;
use std::ops::Range;

use fnv::FnvHasher;
use serde::{Deserialize, Serialize};

use crate::window::groups::KeyPart;

/// The number of key groups. 128 is Flink's default maximum parallelism
/// (its key groups serve the same purpose): enough owners — Kafka
/// partitions or workers, each holding a set of groups — for any one
/// machine or a small cluster, while a set of groups stays one `u128`.
/// Changing it moves almost every key to another group, so snapshots taken
/// with another value cannot be restored by subset.
pub const KEY_GROUPS: u16 = 128;

// A KeyGroupSet is one u128 bit per group.
const _: () = assert!(KEY_GROUPS as u32 <= u128::BITS);

/// Canonical encoding tags (see the module docs).
const TAG_MISSING: u8 = 0;
const TAG_NULL: u8 = 1;
const TAG_BOOL: u8 = 2;
const TAG_INT: u8 = 3;
const TAG_FLOAT: u8 = 4;
const TAG_STR: u8 = 5;
const TAG_JSON: u8 = 6;
const TAG_OVERFLOW: u8 = 7;

/// The 64-bit FNV-1a hash of `key`'s canonical encoding, before the
/// finalizer.
fn fnv1a(key: &[KeyPart]) -> u64 {
    let mut h = FnvHasher::default();
    // Only `write` on explicit little-endian bytes: `Hasher`'s `write_u64`
    // and friends use native byte order.
    let text = |h: &mut FnvHasher, tag: u8, t: &str| {
        h.write(&[tag]);
        h.write(&(t.len() as u64).to_le_bytes());
        h.write(t.as_bytes());
    };
    for part in key {
        match part {
            KeyPart::Missing => h.write(&[TAG_MISSING]),
            KeyPart::Null => h.write(&[TAG_NULL]),
            KeyPart::Bool(b) => h.write(&[TAG_BOOL, u8::from(*b)]),
            KeyPart::Int(i) => {
                h.write(&[TAG_INT]);
                h.write(&i.to_le_bytes());
            }
            KeyPart::Float(bits) => {
                h.write(&[TAG_FLOAT]);
                h.write(&bits.to_le_bytes());
            }
            KeyPart::Str(s) => text(&mut h, TAG_STR, s),
            KeyPart::Json(t) => text(&mut h, TAG_JSON, t),
            KeyPart::Overflow => h.write(&[TAG_OVERFLOW]),
        }
    }
    h.finish()
}

// MurmurHash3's 64-bit finalizer (every output bit depends on every input
// bit), the one `distinct` hashes with too.
use crate::window::agg::slot::fmix64;

/// The key group of a group key, in `0..KEY_GROUPS`; the same in every
/// process and release (see the module docs).
pub fn key_group(key: &[KeyPart]) -> u16 {
    let h = fmix64(fnv1a(key));
    ((u128::from(h) * u128::from(KEY_GROUPS)) >> 64) as u16
}

/// Why a set of key groups could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyGroupError {
    /// A group number at or past [`KEY_GROUPS`].
    #[error("key group {group} does not exist; key groups are numbered 0 to {}", KEY_GROUPS - 1)]
    OutOfRange {
        /// The number given.
        group: u32,
    },
    /// [`KeyGroupSet::share`] with no owners or an index past them.
    #[error(
        "no share {index} among {owners} owners; the index must be below the number of owners, which must be 1 to {KEY_GROUPS}"
    )]
    Share {
        /// The owner asked for.
        index: u16,
        /// The number of owners.
        owners: u16,
    },
}

/// A set of key groups: what one owner (a Kafka partition, a worker) holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct KeyGroupSet {
    bits: u128,
}

impl KeyGroupSet {
    /// No groups.
    pub const fn empty() -> KeyGroupSet {
        KeyGroupSet { bits: 0 }
    }

    /// Every group: what a single owner restores.
    pub const fn all() -> KeyGroupSet {
        KeyGroupSet {
            bits: if KEY_GROUPS as u32 == u128::BITS {
                u128::MAX
            } else {
                (1u128 << KEY_GROUPS) - 1
            },
        }
    }

    /// Whether `group` is in the set (never for a number past the groups).
    pub fn contains(&self, group: u16) -> bool {
        group < KEY_GROUPS && self.bits & (1u128 << group) != 0
    }

    /// Add `group`.
    pub fn insert(&mut self, group: u16) -> Result<(), KeyGroupError> {
        if group >= KEY_GROUPS {
            return Err(KeyGroupError::OutOfRange {
                group: u32::from(group),
            });
        }
        self.bits |= 1u128 << group;
        Ok(())
    }

    /// The set of the listed groups.
    pub fn from_groups(
        groups: impl IntoIterator<Item = u16>,
    ) -> Result<KeyGroupSet, KeyGroupError> {
        let mut set = KeyGroupSet::empty();
        for g in groups {
            set.insert(g)?;
        }
        Ok(set)
    }

    /// The groups `range.start` up to, not including, `range.end`.
    pub fn from_range(range: Range<u16>) -> Result<KeyGroupSet, KeyGroupError> {
        if range.end > KEY_GROUPS {
            return Err(KeyGroupError::OutOfRange {
                group: u32::from(range.end) - 1,
            });
        }
        KeyGroupSet::from_groups(range)
    }

    /// Owner `index`'s share when `owners` owners split the groups into
    /// contiguous ranges as evenly as possible — Flink's assignment of key
    /// groups to operator instances: owner `i` gets
    /// `⌈i · G / n⌉ .. ⌈(i + 1) · G / n⌉`.
    pub fn share(index: u16, owners: u16) -> Result<KeyGroupSet, KeyGroupError> {
        if owners == 0 || owners > KEY_GROUPS || index >= owners {
            return Err(KeyGroupError::Share { index, owners });
        }
        let bound = |i: u16| (u32::from(i) * u32::from(KEY_GROUPS)).div_ceil(u32::from(owners));
        // Both bounds are at most KEY_GROUPS, so they fit a u16.
        let (lo, hi) = (bound(index) as u16, bound(index + 1) as u16);
        KeyGroupSet::from_range(lo..hi)
    }

    /// The groups in either set.
    pub fn union(self, other: KeyGroupSet) -> KeyGroupSet {
        KeyGroupSet {
            bits: self.bits | other.bits,
        }
    }

    /// How many groups the set holds.
    pub fn len(&self) -> usize {
        self.bits.count_ones() as usize
    }

    /// Whether the set holds no group.
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// The groups, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..KEY_GROUPS).filter(|&g| self.contains(g))
    }
}

impl fmt::Debug for KeyGroupSet {
    /// As ranges: `KeyGroupSet[0..64, 70]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyGroupSet[")?;
        let mut first = true;
        let mut g = 0;
        while g < KEY_GROUPS {
            if !self.contains(g) {
                g += 1;
                continue;
            }
            let start = g;
            while g < KEY_GROUPS && self.contains(g) {
                g += 1;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            if g - start == 1 {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}..{g}")?;
            }
        }
        f.write_str("]")
    }
}
