//! How accumulator slots are saved and restored.
//!
//! A snapshot must read back exactly what was written — a restored
//! accumulator gives bit-identical results and merges identically — in every
//! serde format the engine may use: postcard, which is not self-describing
//! (so nothing here is untagged, flattened or needs `deserialize_any`), and
//! JSON for reading snapshots by eye and in tests. The bytes must also
//! depend only on the state, so that equal states give equal snapshots.
//! Three things need care:
//!
//! - **Floats.** Binary formats carry an `f64`'s eight bytes as they are.
//!   serde_json writes infinities and NaN (a sum can overflow) as `null`,
//!   and reads a float back exactly only with its `float_roundtrip`
//!   feature (which eddy enables, but a text snapshot should not depend on
//!   a build setting). So in human-readable formats
//!   [`exact_f64`] writes the shortest decimal text that Rust's correctly
//!   rounded parser reads back to the same bits (`"0.1"`, `"1e300"`,
//!   `"inf"`), and a NaN other than the canonical one with its bits.
//! - **`distinct`.** The cardinality estimator's own serde impl writes its
//!   internal word, which for 3 or more values holds the address of its heap
//!   buffer: it reads back correctly, but two equal sketches would not give
//!   equal bytes. [`DistinctState`] is an explicit form without the address.
//! - **Quantiles.** The DDSketch's derived serde impl writes its float fields
//!   (configuration, min, max, sum) as floats, which serde_json does not read
//!   back exactly. The sketch is kept in its postcard encoding — exact — as
//!   a byte string inside whatever format the snapshot uses.

use cardinality_estimator::CardinalityEstimator;
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sketches_ddsketch::DDSketch;

use super::{Distinct, Quantiles};

/// `f64` fields, exact in binary and in text formats: use as
/// `#[serde(with = "persist::exact_f64")]`.
pub(crate) mod exact_f64 {
    use std::fmt;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// A NaN other than `f64::NAN` is written as this prefix and its 16 hex
    /// digits, so even its payload and sign survive.
    const NAN_BITS: &str = "NaN:";

    struct Text(f64);

    impl fmt::Display for Text {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let x = self.0;
            if x.is_nan() && x.to_bits() != f64::NAN.to_bits() {
                write!(f, "{NAN_BITS}{:016x}", x.to_bits())
            } else {
                // `Debug` is the shortest text that parses back to the same
                // bits, with an exponent for very large or small values.
                write!(f, "{x:?}")
            }
        }
    }

    fn parse(text: &str) -> Option<f64> {
        match text.strip_prefix(NAN_BITS) {
            Some(hex) => u64::from_str_radix(hex, 16)
                .ok()
                .map(f64::from_bits)
                .filter(|x| x.is_nan()),
            None => text.parse().ok(),
        }
    }

    /// Write `x`.
    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(&Text(*x))
        } else {
            s.serialize_f64(*x)
        }
    }

    /// Read what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        if !d.is_human_readable() {
            return f64::deserialize(d);
        }
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            D::Error::custom(format!(
                "`{text}` is not a saved number (expected e.g. \"1.5\", \"inf\" or \"NaN\")"
            ))
        })
    }
}

/// The value of `first` / `last`: [`crate::event::Value`] with its own,
/// explicitly tagged form (the event's serde impl writes plain JSON, which
/// loses the difference between `Str` and `Json` and needs a
/// self-describing format to read back).
pub(crate) mod value {
    use compact_str::CompactString;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::event::Value;

    #[derive(Serialize)]
    #[serde(rename = "Value")]
    enum Ref<'a> {
        Null,
        Bool(bool),
        Int(i64),
        Float(#[serde(with = "super::exact_f64")] f64),
        Str(&'a str),
        Json(&'a str),
    }

    /// The same variants, in the same order, owned.
    #[derive(Deserialize)]
    #[serde(rename = "Value")]
    enum Owned {
        Null,
        Bool(bool),
        Int(i64),
        Float(#[serde(with = "super::exact_f64")] f64),
        Str(CompactString),
        Json(String),
    }

    /// Write `v`.
    pub fn serialize<S: Serializer>(v: &Value, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Value::Null => Ref::Null,
            Value::Bool(b) => Ref::Bool(*b),
            Value::Int(i) => Ref::Int(*i),
            Value::Float(f) => Ref::Float(*f),
            Value::Str(t) => Ref::Str(t),
            Value::Json(t) => Ref::Json(t),
        }
        .serialize(s)
    }

    /// Read what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        Ok(match Owned::deserialize(d)? {
            Owned::Null => Value::Null,
            Owned::Bool(b) => Value::Bool(b),
            Owned::Int(i) => Value::Int(i),
            Owned::Float(f) => Value::Float(f),
            Owned::Str(t) => Value::Str(t),
            Owned::Json(t) => Value::Json(t),
        })
    }
}

/// The saved form of a `distinct` sketch: the cardinality estimator's three
/// representations, as its own serde impl describes them, without the heap
/// address that impl also writes. The hashes are the estimator's 31-bit
/// encodings of our 64-bit [`super::distinct_hash`]es.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(super) enum DistinctState {
    /// At most two encoded hashes, kept inline; 0 stands for none.
    Small(u32, u32),
    /// 3 to 128 encoded hashes, in the order they were first seen.
    Array(Vec<u32>),
    /// HyperLogLog++: the count of zero registers, the harmonic sum (an
    /// `f32`'s bits) and the 4,096 six-bit registers, packed.
    Hll(Vec<u32>),
}

/// The estimator's word: its low two bits say which representation it is;
/// a small one holds its two hashes in bits 2–32 and 33–63.
const TAG_MASK: u64 = 0b11;
const TAG_SMALL: u64 = 0b00;
const TAG_ARRAY: u64 = 0b01;
const TAG_HLL: u64 = 0b11;
const HASH_MASK: u64 = 0x7fff_ffff;

/// What the estimator's serde impl writes: its word and, unless small, its
/// buffer.
type Raw = (u64, Option<Vec<u32>>);

impl DistinctState {
    fn of(d: &Distinct) -> Result<DistinctState, String> {
        // The estimator's internals are private; its serde form is the one
        // public view of them, read back here through postcard.
        let bytes = postcard::to_stdvec(&d.0).map_err(|e| e.to_string())?;
        let (word, buffer): Raw = postcard::from_bytes(&bytes).map_err(|e| e.to_string())?;
        match (word & TAG_MASK, buffer) {
            (TAG_SMALL, None) => Ok(DistinctState::Small(
                ((word >> 2) & HASH_MASK) as u32,
                ((word >> 33) & HASH_MASK) as u32,
            )),
            (TAG_ARRAY, Some(hashes)) => Ok(DistinctState::Array(hashes)),
            (TAG_HLL, Some(registers)) => Ok(DistinctState::Hll(registers)),
            (tag, _) => Err(format!(
                "the distinct-count estimator has an unknown representation {tag}"
            )),
        }
    }

    fn into_distinct(self) -> Result<Distinct, String> {
        let raw: Raw = match self {
            DistinctState::Small(a, b) => {
                let (a, b) = (u64::from(a), u64::from(b));
                if a > HASH_MASK || b > HASH_MASK {
                    return Err(format!(
                        "a small distinct sketch holds 31-bit hashes, not {a} and {b}"
                    ));
                }
                ((a << 2) | (b << 33) | TAG_SMALL, None)
            }
            DistinctState::Array(codes) => return array_estimator(&codes),
            DistinctState::Hll(registers) => (TAG_HLL, Some(registers)),
        };
        // The estimator checks the buffer's length for its representation.
        let bytes = postcard::to_stdvec(&raw).map_err(|e| e.to_string())?;
        let estimator: CardinalityEstimator<u64> =
            postcard::from_bytes(&bytes).map_err(|e| format!("invalid distinct sketch: {e}"))?;
        Ok(Distinct(estimator))
    }
}

/// The estimator's sparse encoding parameters (its defaults, which
/// `Distinct` uses): `P` index bits of the HyperLogLog, `W` bits of rank.
const P: u32 = 12;
const W: u32 = 6;

/// A 64-bit hash whose sparse encoding is `code`: the encoding keeps the
/// hash's low `32 - W - 1` bits and the length of the run of ones from bit
/// `P` up (its rank); the low bits are copied back and the run continued
/// above them as needed.
fn hash_of_code(code: u32) -> Result<u64, String> {
    let idx_bits = 32 - W - 1;
    let rank = code & ((1 << W) - 1);
    let idx = u64::from(code >> W);
    let window = idx_bits - P;
    let ones = ((idx >> P) & ((1 << window) - 1)).trailing_ones();
    let hash = if ones < window {
        idx
    } else {
        // The run reaches the top of the kept bits: continue it above them.
        let more = rank
            .checked_sub(1 + window)
            .filter(|m| *m < 64 - idx_bits)
            .ok_or_else(|| format!("a distinct sketch holds an impossible hash code {code}"))?;
        idx | (((1u64 << more) - 1) << idx_bits)
    };
    Ok(hash)
}

/// An estimator holding `codes` in its array form, built the way the
/// estimator builds one itself: by inserting them, in order. (Its serde
/// impl would do it from the buffer, but cardinality-estimator 1.0.3 then
/// frees that buffer with a size other than the one it was allocated with,
/// which corrupts memory under a sized allocator such as jemalloc.)
fn array_estimator(codes: &[u32]) -> Result<Distinct, String> {
    let mut estimator = CardinalityEstimator::<u64>::new();
    for &code in codes {
        estimator.insert_hash(hash_of_code(code)?);
    }
    let rebuilt = Distinct(estimator);
    match DistinctState::of(&rebuilt)? {
        DistinctState::Array(got) if got == codes => Ok(rebuilt),
        _ => Err(format!(
            "a distinct sketch of {} hash codes does not rebuild to the same sketch",
            codes.len()
        )),
    }
}

impl Serialize for Distinct {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        DistinctState::of(self)
            .map_err(S::Error::custom)?
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Distinct {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DistinctState::deserialize(d)?
            .into_distinct()
            .map_err(D::Error::custom)
    }
}

impl Serialize for Quantiles {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = postcard::to_stdvec(&self.0).map_err(S::Error::custom)?;
        bytes.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Quantiles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = Vec::<u8>::deserialize(d)?;
        let sketch: DDSketch = postcard::from_bytes(&bytes)
            .map_err(|e| D::Error::custom(format!("invalid quantile sketch: {e}")))?;
        // A sketch of another configuration would silently refuse to merge
        // with ours; the sketch checks configurations when merging, so try
        // it on an empty one.
        if Quantiles::new().0.merge(&sketch).is_err() {
            return Err(D::Error::custom(
                "a quantile sketch saved with another accuracy, bucket limit or minimum value",
            ));
        }
        Ok(Quantiles(sketch))
    }
}
