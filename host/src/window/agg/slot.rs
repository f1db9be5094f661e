//! Accumulator state: one [`Slot`] per (path, kind), what it keeps, how it
//! takes a value, merges and reports its size; and the fixed hash that
//! `distinct` counts. How slots are saved and restored is in [`persist`].

use std::cmp::Ordering;
use std::fmt;

use cardinality_estimator::CardinalityEstimator;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sketches_ddsketch::{Config as SketchConfig, DDSketch};

use super::{QUANTILE_ALPHA, QUANTILE_MAX_BINS, QUANTILE_MIN_VALUE};
use crate::event::Value;
use crate::filter::FieldRef;

pub(crate) mod persist;

/// Which state an aggregate reads; slots of one kind on one path are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotKind {
    Set,
    Sum,
    Min,
    Max,
    Moments,
    First,
    Last,
    Distinct,
    Quantiles,
    Matches,
}

/// One piece of accumulator state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) enum Slot {
    /// Events where the path is set.
    Set(u64),
    Sum(Sum),
    Min(Option<Num>),
    Max(Option<Num>),
    Moments(Moments),
    First(Option<Stamped>),
    Last(Option<Stamped>),
    Distinct(Distinct),
    /// Boxed and made on the first value: the sketch is ~200 bytes inline.
    Quantiles(Option<Box<Quantiles>>),
    /// Events matching a ratio's predicate.
    Matches(u64),
}

impl Slot {
    pub(super) fn new(kind: SlotKind) -> Slot {
        match kind {
            SlotKind::Set => Slot::Set(0),
            SlotKind::Sum => Slot::Sum(Sum::default()),
            SlotKind::Min => Slot::Min(None),
            SlotKind::Max => Slot::Max(None),
            SlotKind::Moments => Slot::Moments(Moments::default()),
            SlotKind::First => Slot::First(None),
            SlotKind::Last => Slot::Last(None),
            SlotKind::Distinct => Slot::Distinct(Distinct(CardinalityEstimator::new())),
            SlotKind::Quantiles => Slot::Quantiles(None),
            SlotKind::Matches => Slot::Matches(0),
        }
    }

    /// Which kind of slot this is.
    pub(super) fn kind(&self) -> SlotKind {
        match self {
            Slot::Set(_) => SlotKind::Set,
            Slot::Sum(_) => SlotKind::Sum,
            Slot::Min(_) => SlotKind::Min,
            Slot::Max(_) => SlotKind::Max,
            Slot::Moments(_) => SlotKind::Moments,
            Slot::First(_) => SlotKind::First,
            Slot::Last(_) => SlotKind::Last,
            Slot::Distinct(_) => SlotKind::Distinct,
            Slot::Quantiles(_) => SlotKind::Quantiles,
            Slot::Matches(_) => SlotKind::Matches,
        }
    }

    /// Take in one set value (never `Null`).
    pub(super) fn observe(&mut self, v: FieldRef<'_>, ts: i64, arrival: u64) {
        match self {
            Slot::Set(n) => *n += 1,
            Slot::Sum(sum) => {
                if let Some(x) = Num::of(v) {
                    sum.add(x);
                }
            }
            Slot::Min(cur) => {
                if let Some(x) = Num::of(v) {
                    keep(cur, x, Ordering::Less);
                }
            }
            Slot::Max(cur) => {
                if let Some(x) = Num::of(v) {
                    keep(cur, x, Ordering::Greater);
                }
            }
            Slot::Moments(m) => {
                if let Some(x) = Num::of(v) {
                    m.add(x.as_f64());
                }
            }
            Slot::First(cur) => stamp(cur, v, (ts, arrival), Ordering::Less),
            Slot::Last(cur) => stamp(cur, v, (ts, arrival), Ordering::Greater),
            Slot::Distinct(d) => d.0.insert_hash(distinct_hash(v)),
            Slot::Quantiles(sk) => {
                if let Some(x) = Num::of(v) {
                    sk.get_or_insert_with(Quantiles::new).0.add(x.as_f64());
                }
            }
            Slot::Matches(_) => {}
        }
    }

    pub(super) fn merge(&mut self, other: &Slot) {
        match (self, other) {
            (Slot::Set(a), Slot::Set(b)) | (Slot::Matches(a), Slot::Matches(b)) => *a += *b,
            (Slot::Sum(a), Slot::Sum(b)) => a.merge(b),
            (Slot::Min(a), Slot::Min(Some(b))) => keep(a, *b, Ordering::Less),
            (Slot::Max(a), Slot::Max(Some(b))) => keep(a, *b, Ordering::Greater),
            (Slot::Moments(a), Slot::Moments(b)) => a.merge(b),
            (Slot::First(a), Slot::First(Some(b))) => keep_stamped(a, b, Ordering::Less),
            (Slot::Last(a), Slot::Last(Some(b))) => keep_stamped(a, b, Ordering::Greater),
            (Slot::Distinct(a), Slot::Distinct(b)) => a.0.merge(&b.0),
            (Slot::Quantiles(a), Slot::Quantiles(Some(b))) => match a {
                // Both sketches are built from the same config, so merging
                // cannot fail.
                Some(a) => {
                    let _ = a.0.merge(&b.0);
                }
                None => *a = Some(b.clone()),
            },
            _ => {}
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        match self {
            Slot::First(Some(st)) | Slot::Last(Some(st)) => match &st.value {
                Value::Str(s) if s.is_heap_allocated() => s.capacity(),
                Value::Json(s) => s.capacity(),
                _ => 0,
            },
            // `size_of` counts the estimator's inline word too.
            Slot::Distinct(d) => d.0.size_of().saturating_sub(std::mem::size_of::<usize>()),
            Slot::Quantiles(Some(sk)) => {
                std::mem::size_of::<Quantiles>() + sk.0.length() * std::mem::size_of::<u64>()
            }
            _ => 0,
        }
    }
}

/// A numeric value, kept with its JSON type.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(super) enum Num {
    Int(i64),
    Float(#[serde(with = "persist::exact_f64")] f64),
}

impl Num {
    /// The numeric value of a field: integers and finite floats.
    fn of(v: FieldRef<'_>) -> Option<Num> {
        match v {
            FieldRef::Int(i) => Some(Num::Int(i)),
            FieldRef::Float(f) if f.is_finite() => Some(Num::Float(f)),
            _ => None,
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    pub(super) fn to_json(self) -> Json {
        match self {
            Num::Int(i) => Json::from(i),
            Num::Float(f) => Json::from(f),
        }
    }

    /// A total order by value; an integer and a float of the same value
    /// order the integer first, so min and max do not depend on the order
    /// values arrive in.
    fn order(self, other: Num) -> Ordering {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            (Num::Float(a), Num::Float(b)) => a.total_cmp(&b),
            (Num::Int(a), Num::Float(b)) => cmp_int_float(a, b).then(Ordering::Less),
            (Num::Float(a), Num::Int(b)) => cmp_int_float(b, a).reverse().then(Ordering::Greater),
        }
    }
}

/// Compare an integer with a finite float exactly (`i as f64` rounds above
/// 2⁵³).
fn cmp_int_float(i: i64, f: f64) -> Ordering {
    // 2^63, exactly representable.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f >= TWO_63 {
        return Ordering::Less;
    }
    if f < -TWO_63 {
        return Ordering::Greater;
    }
    let t = f.trunc();
    // In range and integral, so the cast is exact.
    match i.cmp(&(t as i64)) {
        Ordering::Equal => 0.0.partial_cmp(&(f - t)).unwrap_or(Ordering::Equal),
        o => o,
    }
}

/// Keep `x` in `cur` when it orders `want` against the current value.
fn keep(cur: &mut Option<Num>, x: Num, want: Ordering) {
    match cur {
        Some(c) if x.order(*c) != want => {}
        _ => *cur = Some(x),
    }
}

/// Sum of numeric values: integers exactly in 128 bits (split in two words
/// to keep the slot 8-aligned), floats with Neumaier compensation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Sum {
    n: u64,
    int_lo: u64,
    int_hi: i64,
    #[serde(with = "persist::exact_f64")]
    float: f64,
    #[serde(with = "persist::exact_f64")]
    comp: f64,
    has_float: bool,
}

impl Sum {
    fn ints(&self) -> i128 {
        (i128::from(self.int_hi) << 64) | i128::from(self.int_lo)
    }

    fn set_ints(&mut self, v: i128) {
        self.int_lo = v as u64;
        self.int_hi = (v >> 64) as i64;
    }

    fn add(&mut self, x: Num) {
        self.n += 1;
        match x {
            // 2^64 values of at most 2^63 each cannot overflow 128 bits.
            Num::Int(i) => self.set_ints(self.ints().wrapping_add(i128::from(i))),
            Num::Float(f) => {
                self.has_float = true;
                self.add_float(f);
            }
        }
    }

    fn add_float(&mut self, x: f64) {
        let t = self.float + x;
        self.comp += if self.float.abs() >= x.abs() {
            (self.float - t) + x
        } else {
            (x - t) + self.float
        };
        self.float = t;
    }

    fn merge(&mut self, o: &Sum) {
        self.n += o.n;
        self.set_ints(self.ints().wrapping_add(o.ints()));
        self.has_float |= o.has_float;
        self.add_float(o.float);
        self.comp += o.comp;
    }

    /// The mean, when there were numeric values.
    pub(super) fn avg(&self) -> Option<f64> {
        (self.n > 0).then(|| self.total_f64() / self.n as f64)
    }

    fn total_f64(&self) -> f64 {
        self.ints() as f64 + (self.float + self.comp)
    }

    pub(super) fn total(&self) -> Json {
        match i64::try_from(self.ints()) {
            Ok(i) if !self.has_float => Json::from(i),
            _ => Json::from(self.total_f64()),
        }
    }
}

/// Count, mean and sum of squared deviations (Welford).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Moments {
    n: u64,
    #[serde(with = "persist::exact_f64")]
    mean: f64,
    #[serde(with = "persist::exact_f64")]
    m2: f64,
}

impl Moments {
    fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// The population standard deviation, when there were values.
    pub(super) fn stddev(&self) -> Option<f64> {
        (self.n > 0).then(|| (self.m2.max(0.0) / self.n as f64).sqrt())
    }

    /// Chan, Golub and LeVeque's pairwise combination.
    fn merge(&mut self, o: &Moments) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = o.clone();
            return;
        }
        let (na, nb) = (self.n as f64, o.n as f64);
        let n = na + nb;
        let d = o.mean - self.mean;
        self.mean += d * nb / n;
        self.m2 += o.m2 + d * d * na * nb / n;
        self.n += o.n;
    }
}

/// A value with the `(timestamp, arrival)` of the event it came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Stamped {
    at: (i64, u64),
    #[serde(with = "persist::value")]
    value: Value,
}

impl Stamped {
    pub(super) fn to_json(&self) -> Json {
        self.value.to_json_value()
    }
}

fn stamp(cur: &mut Option<Stamped>, v: FieldRef<'_>, at: (i64, u64), want: Ordering) {
    match cur {
        Some(c) if at.cmp(&c.at) != want => {}
        Some(c) => {
            c.at = at;
            assign(&mut c.value, v);
        }
        None => {
            let mut value = Value::Null;
            assign(&mut value, v);
            *cur = Some(Stamped { at, value });
        }
    }
}

fn keep_stamped(cur: &mut Option<Stamped>, other: &Stamped, want: Ordering) {
    match cur {
        Some(c) if other.at.cmp(&c.at) != want => {}
        _ => *cur = Some(other.clone()),
    }
}

/// Set `slot` to `v`, reusing its string buffer when it has one.
fn assign(slot: &mut Value, v: FieldRef<'_>) {
    match (slot, v) {
        (Value::Str(s), FieldRef::Str(t)) => {
            s.clear();
            s.push_str(t);
        }
        (Value::Json(s), FieldRef::JsonText(t)) => {
            s.clear();
            s.push_str(t);
        }
        (slot, v) => {
            *slot = match v {
                FieldRef::Null => Value::Null,
                FieldRef::Bool(b) => Value::Bool(b),
                FieldRef::Int(i) => Value::Int(i),
                FieldRef::Float(f) => Value::Float(f),
                FieldRef::Str(s) => Value::Str(CompactString::from(s)),
                FieldRef::JsonText(t) => Value::Json(t.to_owned()),
                FieldRef::Node(n) => Value::Json(n.to_string()),
            }
        }
    }
}

/// A distinct-count sketch; its items are our own typed hashes. Saved
/// through [`persist::DistinctState`].
#[derive(Clone, Debug)]
pub(super) struct Distinct(CardinalityEstimator<u64>);

/// A DDSketch, which is not `Debug` itself. Saved as described in
/// [`persist`].
#[derive(Clone)]
pub(super) struct Quantiles(DDSketch);

impl Distinct {
    pub(super) fn estimate(&self) -> usize {
        self.0.estimate()
    }
}

impl Quantiles {
    /// The q-quantile, when the sketch has values.
    pub(super) fn quantile(&self, q: f64) -> Option<f64> {
        self.0.quantile(q).ok().flatten()
    }

    fn new() -> Box<Quantiles> {
        let config = SketchConfig::new(QUANTILE_ALPHA, QUANTILE_MAX_BINS, QUANTILE_MIN_VALUE);
        Box::new(Quantiles(DDSketch::new(config)))
    }
}

impl fmt::Debug for Quantiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quantiles")
            .field("count", &self.0.count())
            .field("buckets", &self.0.length())
            .finish()
    }
}

/// Type tags, so values of different JSON types never hash alike.
const TAG_BOOL: u64 = 1;
const TAG_NUMBER: u64 = 2;
const TAG_FLOAT: u64 = 3;
const TAG_STRING: u64 = 4;
const TAG_JSON: u64 = 5;

/// The typed hash `distinct` counts: numbers by value (an integral float
/// hashes as the integer), every other type by its tag and bytes.
pub(super) fn distinct_hash(v: FieldRef<'_>) -> u64 {
    // 2^63, exactly representable.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    match v {
        FieldRef::Null => hash_word(0, 0),
        FieldRef::Bool(b) => hash_word(TAG_BOOL, u64::from(b)),
        FieldRef::Int(i) => hash_word(TAG_NUMBER, i as u64),
        FieldRef::Float(f) if f.fract() == 0.0 && (-TWO_63..TWO_63).contains(&f) => {
            hash_word(TAG_NUMBER, f as i64 as u64)
        }
        FieldRef::Float(f) => hash_word(TAG_FLOAT, f.to_bits()),
        FieldRef::Str(s) => hash_bytes(TAG_STRING, s.as_bytes()),
        FieldRef::JsonText(t) => hash_bytes(TAG_JSON, t.as_bytes()),
        FieldRef::Node(n) => hash_bytes(TAG_JSON, n.to_string().as_bytes()),
    }
}

// A fixed hash, stable across builds (see the module docs): wyhash's
// multiply-fold over 8-byte words, finished with MurmurHash3's fmix64 so
// that every output bit depends on every input bit, as HyperLogLog needs.
const WY0: u64 = 0xa076_1d64_78bd_642f;
const WY1: u64 = 0xe703_7ed1_a0b4_28db;

fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// MurmurHash3's 64-bit finalizer: every output bit depends on every input
/// bit.
pub(crate) fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn hash_word(tag: u64, w: u64) -> u64 {
    fmix64(mum(tag ^ WY0, w ^ WY1))
}

fn hash_bytes(tag: u64, bytes: &[u8]) -> u64 {
    let mut h = mum(tag ^ WY0, bytes.len() as u64 ^ WY1);
    let mut words = bytes.chunks_exact(8);
    for c in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mum(h ^ WY0, u64::from_le_bytes(w) ^ WY1);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = mum(h ^ WY0, u64::from_le_bytes(w) ^ WY1);
    }
    fmix64(h)
}
