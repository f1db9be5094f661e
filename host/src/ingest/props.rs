//! Property values: the `properties` object becomes `(key, Value)` pairs;
//! nested objects/arrays become [`Value::Json`] text (see
//! [`super::nested`]). Problems carry the path to the bad value.

use std::fmt;

use compact_str::CompactString;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::error::preview;
use super::nested::Nested;
use super::value::{Ctx, Skip, drain_map, drain_seq, int_len};
use crate::event::Value;

/// One step of the path to a bad value.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(CompactString),
    Index(usize),
}

/// Why a property value was rejected, with its path built while unwinding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Problem {
    /// Innermost step first.
    rev_path: Vec<Seg>,
    msg: String,
    /// The event as a whole is too large: no path applies.
    whole_event: bool,
}

impl Problem {
    pub fn new(msg: impl Into<String>) -> Problem {
        Problem {
            rev_path: Vec::new(),
            msg: msg.into(),
            whole_event: false,
        }
    }

    pub(crate) fn too_large(ctx: &Ctx) -> Problem {
        Problem {
            whole_event: true,
            ..Problem::new(ctx.too_large_message())
        }
    }

    pub(crate) fn at_key(mut self, key: CompactString) -> Problem {
        self.rev_path.push(Seg::Key(key));
        self
    }

    pub(crate) fn at_index(mut self, i: usize) -> Problem {
        self.rev_path.push(Seg::Index(i));
        self
    }

    /// `root` plus the path, then the message: `properties.a[2]: ...`.
    pub fn render(self, root: &str) -> String {
        if self.whole_event {
            return self.msg;
        }
        let mut out = String::from(root);
        for seg in self.rev_path.iter().rev() {
            match seg {
                Seg::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        format!("{out}: {}", self.msg)
    }
}

pub(crate) fn key_too_long(ctx: &Ctx, key: &str) -> Problem {
    Problem::new(format!(
        "key `{}` is too long; the limit is {} bytes",
        preview(key),
        ctx.limits.max_key_bytes
    ))
}

pub(crate) fn string_too_long(ctx: &Ctx, len: usize) -> Problem {
    Problem::new(format!(
        "string of {len} bytes is too long; the limit is {} bytes",
        ctx.limits.max_string_bytes
    ))
}

pub(crate) const INT_RANGE: &str = "integer out of range (must fit in 64-bit signed)";

/// Reads a map key, checking it against `max_key_bytes` (`Err` = the key
/// was too long; its preview for the message).
pub(crate) struct PropKey<'c> {
    pub ctx: &'c Ctx,
}

impl<'de> DeserializeSeed<'de> for PropKey<'_> {
    type Value = Result<CompactString, Problem>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for PropKey<'_> {
    type Value = Result<CompactString, Problem>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a property key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.ctx.grow(v.len() + 3);
        if v.len() > self.ctx.limits.max_key_bytes {
            Ok(Err(key_too_long(self.ctx, v)))
        } else {
            Ok(Ok(CompactString::from(v)))
        }
    }
}

/// The `properties` object (null → none). Accepts up to `cap` entries.
pub(crate) struct PropsSeed<'c> {
    pub ctx: &'c Ctx,
    pub level: usize,
    pub cap: usize,
}

/// Parsed properties, or a problem rendered under `properties`.
pub(crate) type Props = Result<Vec<(CompactString, Value)>, Problem>;

impl<'de> DeserializeSeed<'de> for PropsSeed<'_> {
    type Value = Props;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Props, D::Error> {
        d.deserialize_any(self)
    }
}

impl PropsSeed<'_> {
    fn wrong<E>(&self, kind: &str) -> Result<Props, E> {
        Ok(Err(Problem::new(format!("expected an object, got {kind}"))))
    }
}

impl<'de> Visitor<'de> for PropsSeed<'_> {
    type Value = Props;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a properties object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Props, E> {
        Ok(Ok(Vec::new()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Props, E> {
        self.wrong("a boolean")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Props, E> {
        self.wrong("a number")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Props, E> {
        self.wrong("a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Props, E> {
        self.wrong("a number")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Props, E> {
        self.wrong("a string")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Props, A::Error> {
        self.ctx.enter(self.level)?;
        drain_seq(self.ctx, &mut seq, self.level)?;
        self.wrong("an array")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Props, A::Error> {
        let ctx = self.ctx;
        ctx.enter(self.level)?;
        ctx.grow(2);
        let inner = self.level + 1;
        let mut props = Vec::new();
        while let Some(key) = map.next_key_seed(PropKey { ctx })? {
            let problem = match key {
                Err(p) => {
                    map.next_value_seed(Skip { ctx, level: inner })?;
                    p
                }
                Ok(_) if props.len() >= self.cap => {
                    map.next_value_seed(Skip { ctx, level: inner })?;
                    Problem::new(format!("more than {} properties", self.cap))
                }
                Ok(key) => {
                    let seed = PropSeed { ctx, level: inner };
                    match map.next_value_seed(seed)? {
                        Ok(v) if ctx.oversize() => {
                            drop(v);
                            Problem::too_large(ctx)
                        }
                        Ok(v) => {
                            props.push((key, v));
                            continue;
                        }
                        Err(p) => p.at_key(key),
                    }
                }
            };
            drain_map(ctx, &mut map, self.level)?;
            return Ok(Err(problem));
        }
        dedup_last_wins(&mut props);
        Ok(Ok(props))
    }
}

/// One property value at property depth 1 (its containers are the first
/// level counted against `max_depth`).
pub(crate) struct PropSeed<'c> {
    pub ctx: &'c Ctx,
    pub level: usize,
}

impl<'de> DeserializeSeed<'de> for PropSeed<'_> {
    type Value = Result<Value, Problem>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl PropSeed<'_> {
    fn nested<'a>(&self, out: &'a mut Vec<u8>) -> Nested<'a>
    where
        Self: 'a,
    {
        Nested::new(self.ctx, out, self.level)
    }
}

/// Finishes a nested value's text.
fn json_value(out: Vec<u8>, r: Result<(), Problem>) -> Result<Value, Problem> {
    r?;
    // Every byte came from `&str`s and ASCII punctuation, so this holds.
    String::from_utf8(out)
        .map(Value::Json)
        .map_err(|_| Problem::new("internal error: nested value is not UTF-8"))
}

impl<'de> Visitor<'de> for PropSeed<'_> {
    type Value = Result<Value, Problem>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a property value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.ctx.grow(4);
        Ok(Ok(Value::Null))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.ctx.grow(4);
        Ok(Ok(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.ctx.grow(int_len(v));
        Ok(Ok(Value::Int(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        match i64::try_from(v) {
            Ok(i) => self.visit_i64(i),
            Err(_) => Ok(Err(Problem::new(INT_RANGE))),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.ctx.grow(1);
        if v.is_finite() {
            Ok(Ok(Value::Float(v)))
        } else {
            Ok(Err(Problem::new("number is not finite")))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.ctx.grow(v.len() + 2);
        if v.len() > self.ctx.limits.max_string_bytes {
            Ok(Err(string_too_long(self.ctx, v.len())))
        } else {
            Ok(Ok(Value::Str(CompactString::from(v))))
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(32);
        let r = self.nested(&mut out).visit_seq(seq)?;
        Ok(json_value(out, r))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(64);
        let r = self.nested(&mut out).visit_map(map)?;
        Ok(json_value(out, r))
    }
}

/// Makes keys unique, a later value replacing an earlier one in place (as
/// `serde_json::Map` does). Checking is cheap; rebuilding only happens when
/// a duplicate exists.
pub(crate) fn dedup_last_wins(props: &mut Vec<(CompactString, Value)>) {
    // Below this many keys a quadratic scan beats sorting.
    const SCAN_MAX: usize = 16;
    let has_dup = if props.len() <= SCAN_MAX {
        props
            .iter()
            .enumerate()
            .any(|(i, (k, _))| props.iter().take(i).any(|(k2, _)| k2 == k))
    } else {
        let mut keys: Vec<&str> = props.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        keys.windows(2).any(|w| w.first() == w.last())
    };
    if !has_dup {
        return;
    }
    let mut seen: std::collections::HashMap<CompactString, usize> = Default::default();
    let mut out: Vec<(CompactString, Value)> = Vec::with_capacity(props.len());
    for (k, v) in props.drain(..) {
        match seen.get(&k) {
            Some(&pos) => {
                if let Some(slot) = out.get_mut(pos) {
                    slot.1 = v;
                }
            }
            None => {
                seen.insert(k.clone(), out.len());
                out.push((k, v));
            }
        }
    }
    *props = out;
}
