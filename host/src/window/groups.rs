//! Grouping: the key an event is aggregated under, and the per-window table
//! of groups with its cardinality cap.

use std::collections::HashMap;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::agg::{Acc, Aggregates};
use crate::event::{Event, Value, write_json_str};
use crate::filter::{FieldPath, FieldRef, Record};

/// The value every dimension of the overflow group shows.
pub const OVERFLOW: &str = "__overflow__";

/// One dimension's value in a group key. Typed, so `"1"` and `1` are
/// different groups, as they are different JSON values. Serialises as an
/// externally tagged enum (no self-description needed), and hashes to its
/// key group with [`super::state::keygroup::key_group`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeyPart {
    /// The field is absent.
    Missing,
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// Another number, by its bits (`-0.0` normalised to `0.0`).
    Float(u64),
    /// A string.
    Str(CompactString),
    /// A nested object or array, as compact JSON text.
    Json(CompactString),
    /// The group that collects everything past the cardinality cap.
    Overflow,
}

impl KeyPart {
    fn of(field: Option<FieldRef<'_>>) -> KeyPart {
        match field {
            None => KeyPart::Missing,
            Some(FieldRef::Null) => KeyPart::Null,
            Some(FieldRef::Bool(b)) => KeyPart::Bool(b),
            Some(FieldRef::Int(i)) => KeyPart::Int(i),
            Some(FieldRef::Float(f)) => KeyPart::Float(if f == 0.0 { 0 } else { f.to_bits() }),
            Some(FieldRef::Str(s)) => KeyPart::Str(s.into()),
            Some(FieldRef::JsonText(t)) => KeyPart::Json(t.into()),
            Some(FieldRef::Node(n)) => KeyPart::Json(n.to_string().into()),
        }
    }

    /// Append what [`KeyPart::to_json`] serialises to.
    fn write_json(&self, out: &mut String) {
        match self {
            KeyPart::Missing | KeyPart::Null => out.push_str("null"),
            KeyPart::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            KeyPart::Int(i) => super::result::push_i64(out, *i),
            KeyPart::Float(bits) => Value::Float(f64::from_bits(*bits)).write_json(out),
            KeyPart::Str(s) => write_json_str(out, s),
            // Nested JSON is rare in a group key: through serde_json, as
            // `to_json` does, so the text is the same.
            KeyPart::Json(t) => match serde_json::from_str::<Json>(t) {
                Ok(v) => {
                    use std::fmt::Write as _;
                    let _ = write!(out, "{v}");
                }
                Err(_) => write_json_str(out, t),
            },
            KeyPart::Overflow => write_json_str(out, OVERFLOW),
        }
    }

    fn to_json(&self) -> Json {
        match self {
            KeyPart::Missing | KeyPart::Null => Json::Null,
            KeyPart::Bool(b) => Json::Bool(*b),
            KeyPart::Int(i) => Json::from(*i),
            KeyPart::Float(bits) => Json::from(f64::from_bits(*bits)),
            KeyPart::Str(s) => Json::from(s.as_str()),
            KeyPart::Json(t) => serde_json::from_str(t).unwrap_or_else(|_| Json::from(t.as_str())),
            KeyPart::Overflow => Json::from(OVERFLOW),
        }
    }
}

/// A number that orders as `key` does, as far as it goes: `a < b` implies
/// `sort_prefix(a) <= sort_prefix(b)` (equal numbers say nothing). The top
/// byte is the first part's variant (in declaration order, as `Ord` derives
/// it), the other seven bytes the start of its value.
fn sort_prefix(key: &[KeyPart]) -> u64 {
    let Some(first) = key.first() else {
        return 0;
    };
    let (variant, rest): (u64, u64) = match first {
        KeyPart::Missing => (0, 0),
        KeyPart::Null => (1, 0),
        KeyPart::Bool(b) => (2, u64::from(*b)),
        // Order-preserving: flip the sign bit, keep the high 56 bits.
        KeyPart::Int(i) => (3, ((*i as u64) ^ (1 << 63)) >> 8),
        KeyPart::Float(bits) => (4, bits >> 8),
        KeyPart::Str(s) => (5, str_prefix(s)),
        KeyPart::Json(t) => (6, str_prefix(t)),
        KeyPart::Overflow => (7, 0),
    };
    (variant << 56) | rest
}

/// A string's first seven bytes, big-endian, zero-padded.
fn str_prefix(s: &str) -> u64 {
    let mut b = [0u8; 8];
    let n = s.len().min(7);
    b[1..=n].copy_from_slice(&s.as_bytes()[..n]);
    u64::from_be_bytes(b)
}

/// A group: one [`KeyPart`] per `group_by` path (empty when the window is
/// not grouped).
pub type GroupKey = Box<[KeyPart]>;

/// How a window groups events: its `group_by` paths.
#[derive(Debug, Clone, Default)]
pub struct Grouping {
    paths: Vec<FieldPath>,
}

impl Grouping {
    /// Group by these paths, in order.
    pub fn new(paths: Vec<FieldPath>) -> Grouping {
        Grouping { paths }
    }

    /// The group `ev` belongs to.
    pub fn key(&self, ev: &Event) -> GroupKey {
        self.paths
            .iter()
            .map(|p| KeyPart::of(ev.field(p)))
            .collect()
    }

    /// The overflow group.
    pub fn overflow(&self) -> GroupKey {
        self.paths.iter().map(|_| KeyPart::Overflow).collect()
    }

    /// Append the group as results show it (what [`Grouping::to_json`]
    /// serialises to).
    pub fn write_json(&self, key: &[KeyPart], out: &mut String) {
        let names: Vec<&str> = self.paths.iter().map(FieldPath::as_str).collect();
        let parts: Vec<&KeyPart> = key.iter().collect();
        super::result::write_json_object(out, &names, &parts, |k, out| k.write_json(out));
    }

    /// The group as results show it: `{"<path>": value, ...}`.
    pub fn to_json(&self, key: &[KeyPart]) -> Json {
        let map: Map<String, Json> = self
            .paths
            .iter()
            .zip(key)
            .map(|(p, k)| (p.as_str().to_owned(), k.to_json()))
            .collect();
        Json::Object(map)
    }
}

/// One group's state in one window (or pane).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slot {
    /// The aggregates so far.
    pub acc: Acc,
    /// Changed since the last early firing.
    pub dirty: bool,
    /// Corrections published for this group so far.
    pub revision: u32,
}

type Hasher = foldhash::fast::RandomState;

/// The groups of one window instance (or pane), at most `cap` of them plus
/// the overflow group.
#[derive(Debug, Clone, Default)]
pub struct GroupTable {
    groups: HashMap<GroupKey, Slot, Hasher>,
}

impl GroupTable {
    /// An empty table with room for `n` groups.
    pub fn with_capacity(n: usize) -> GroupTable {
        GroupTable {
            groups: HashMap::with_capacity_and_hasher(n, Hasher::default()),
        }
    }

    /// The group `key` is counted in: itself, unless the table already
    /// holds `cap` groups and not this one, in which case the overflow
    /// group (and `overflowed` is incremented).
    pub fn resolve(
        &self,
        key: GroupKey,
        cap: usize,
        grouping: &Grouping,
        overflowed: &mut u64,
    ) -> GroupKey {
        if self.groups.len() < cap || self.groups.contains_key(&key) {
            key
        } else {
            *overflowed += 1;
            grouping.overflow()
        }
    }

    /// [`GroupTable::resolve`] and [`GroupTable::slot`] together: one hash
    /// lookup while the table is below its cap.
    pub fn resolved_slot(
        &mut self,
        key: GroupKey,
        cap: usize,
        grouping: &Grouping,
        aggs: &Aggregates,
        overflowed: &mut u64,
    ) -> &mut Slot {
        // At the cap a group must be known to exist before it is counted;
        // below it (the common case) one `entry` does both.
        let key = if self.groups.len() < cap || self.groups.contains_key(&key) {
            key
        } else {
            *overflowed += 1;
            grouping.overflow()
        };
        self.groups.entry(key).or_insert_with(|| Slot {
            acc: aggs.new_acc(),
            dirty: false,
            revision: 0,
        })
    }

    /// The slot of `key` (from [`GroupTable::resolve`]), created empty if new.
    pub fn slot(&mut self, key: GroupKey, aggs: &Aggregates) -> &mut Slot {
        self.groups.entry(key).or_insert_with(|| Slot {
            acc: aggs.new_acc(),
            dirty: false,
            revision: 0,
        })
    }

    /// Put `slot` in for `key` as it is (restoring a snapshot), returning
    /// the slot it replaced, if any.
    pub fn insert(&mut self, key: GroupKey, slot: Slot) -> Option<Slot> {
        self.groups.insert(key, slot)
    }

    /// The slot of an existing group.
    pub fn get_mut(&mut self, key: &[KeyPart]) -> Option<&mut Slot> {
        self.groups.get_mut(key)
    }

    /// The slot of an existing group.
    pub fn get(&self, key: &[KeyPart]) -> Option<&Slot> {
        self.groups.get(key)
    }

    /// Number of groups (including overflow).
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are no groups.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Every group, sorted by key, so results come out in a stable order.
    pub fn sorted(&self) -> Vec<(&GroupKey, &Slot)> {
        // Keys compared through a number first: most comparisons end there
        // without following the key's pointers (a window closing 10,000
        // groups makes about 130,000 comparisons).
        let mut all: Vec<_> = self
            .groups
            .iter()
            .map(|(k, s)| (sort_prefix(k), k, s))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        all.into_iter().map(|(_, k, s)| (k, s)).collect()
    }

    /// Every group, unordered, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&GroupKey, &mut Slot)> {
        self.groups.iter_mut()
    }

    /// Every group, unordered.
    pub fn iter(&self) -> impl Iterator<Item = (&GroupKey, &Slot)> {
        self.groups.iter()
    }

    /// Approximate bytes held (keys, slots and accumulators).
    pub fn approx_bytes(&self, aggs: &Aggregates) -> usize {
        self.groups
            .iter()
            .map(|(k, s)| {
                std::mem::size_of::<(GroupKey, Slot)>()
                    + k.len() * std::mem::size_of::<KeyPart>()
                    + aggs.approx_bytes(&s.acc)
            })
            .sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// Keys of every variant, with strings and numbers that share their
    /// first bytes, so the prefix ties and the full comparison decides.
    fn keys() -> Vec<GroupKey> {
        let mut parts = vec![
            KeyPart::Missing,
            KeyPart::Null,
            KeyPart::Bool(false),
            KeyPart::Bool(true),
            KeyPart::Overflow,
        ];
        for i in [i64::MIN, -257, -256, -1, 0, 1, 255, 256, 257, i64::MAX] {
            parts.push(KeyPart::Int(i));
        }
        for f in [-1.5f64, 0.0, 0.5, 1.0, 1.0 + f64::EPSILON, 1e300] {
            parts.push(KeyPart::Float(f.to_bits()));
        }
        for s in [
            "",
            "a",
            "a\0",
            "ab",
            "abcdefg",
            "abcdefgh",
            "abcdefgi",
            "abcdefg\0",
            "u1",
            "u10",
            "u2",
            "é",
            "\u{7f}",
        ] {
            parts.push(KeyPart::Str(s.into()));
            parts.push(KeyPart::Json(s.into()));
        }
        let mut keys: Vec<GroupKey> = vec![Box::new([])];
        for a in &parts {
            keys.push(Box::new([a.clone()]));
            for b in [KeyPart::Int(2), KeyPart::Str("x".into()), KeyPart::Missing] {
                keys.push(Box::new([a.clone(), b]));
            }
        }
        keys
    }

    #[test]
    fn the_sort_prefix_never_contradicts_the_key_order() {
        let keys = keys();
        for a in &keys {
            for b in &keys {
                if a < b {
                    assert!(
                        sort_prefix(a) <= sort_prefix(b),
                        "{a:?} < {b:?} but their prefixes are {:#x} > {:#x}",
                        sort_prefix(a),
                        sort_prefix(b)
                    );
                }
            }
        }
    }

    #[test]
    fn sorted_groups_come_in_key_order() {
        let aggs = Aggregates::parse_all(&["count".into()], "w").unwrap();
        let mut table = GroupTable::default();
        // Reversed, so the hash map's order is not already the answer.
        for k in keys().into_iter().rev() {
            table.slot(k, &aggs);
        }
        let got: Vec<&GroupKey> = table.sorted().into_iter().map(|(k, _)| k).collect();
        let mut want = keys();
        want.sort();
        assert_eq!(got.len(), want.len());
        assert!(got.iter().zip(&want).all(|(g, w)| *g == w), "{got:?}");
    }
}
