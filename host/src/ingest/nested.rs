//! Nested property values written straight to compact JSON text while
//! being checked (depth, key and string sizes, integer range, event size),
//! never via `serde_json::Value`.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::ser::{CompactFormatter, Formatter};

use super::props::{INT_RANGE, Problem, PropKey, string_too_long};
use super::value::{Ctx, Skip, drain_map, drain_seq, int_len};

/// Writes any value as compact JSON to `out`, checking limits; `depth` is
/// the property depth its containers would have.
pub(crate) struct Nested<'a> {
    ctx: &'a Ctx,
    out: &'a mut Vec<u8>,
    level: usize,
    depth: usize,
}

impl<'a> Nested<'a> {
    /// A value at property depth 1 whose containers would be at `level`.
    pub fn new(ctx: &'a Ctx, out: &'a mut Vec<u8>, level: usize) -> Nested<'a> {
        Nested {
            ctx,
            out,
            level,
            depth: 1,
        }
    }

    fn child(&mut self) -> Nested<'_> {
        Nested {
            ctx: self.ctx,
            out: &mut *self.out,
            level: self.level + 1,
            depth: self.depth + 1,
        }
    }

    fn too_deep(&self) -> Option<Problem> {
        (self.depth > self.ctx.limits.max_depth).then(|| {
            Problem::new(format!(
                "nested deeper than {} levels",
                self.ctx.limits.max_depth
            ))
        })
    }
}

impl<'de> DeserializeSeed<'de> for Nested<'_> {
    type Value = Result<(), Problem>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Nested<'_> {
    type Value = Result<(), Problem>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.ctx.grow(4);
        self.out.extend_from_slice(b"null");
        Ok(Ok(()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.ctx.grow(4);
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(Ok(()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.ctx.grow(int_len(v));
        Ok(CompactFormatter
            .write_i64(self.out, v)
            .map_err(|e| Problem::new(e.to_string())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        match i64::try_from(v) {
            Ok(i) => self.visit_i64(i),
            Err(_) => Ok(Err(Problem::new(INT_RANGE))),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.ctx.grow(1);
        if !v.is_finite() {
            return Ok(Err(Problem::new("number is not finite")));
        }
        Ok(CompactFormatter
            .write_f64(self.out, v)
            .map_err(|e| Problem::new(e.to_string())))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.ctx.grow(v.len() + 2);
        if v.len() > self.ctx.limits.max_string_bytes {
            return Ok(Err(string_too_long(self.ctx, v.len())));
        }
        write_escaped(self.out, v);
        Ok(Ok(()))
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (ctx, level) = (self.ctx, self.level);
        ctx.enter(level)?;
        ctx.grow(2);
        if let Some(p) = self.too_deep() {
            drain_seq(ctx, &mut seq, level)?;
            return Ok(Err(p));
        }
        self.out.push(b'[');
        let mut i = 0;
        while let Some(r) = seq.next_element_seed(self.child())? {
            let problem = match r {
                Ok(()) if ctx.oversize() => Problem::too_large(ctx),
                Ok(()) => {
                    i += 1;
                    // The comma goes before the next element, if one comes.
                    self.out.push(b',');
                    continue;
                }
                Err(p) => p.at_index(i),
            };
            drain_seq(ctx, &mut seq, level)?;
            return Ok(Err(problem));
        }
        if i > 0 {
            self.out.pop();
        }
        self.out.push(b']');
        Ok(Ok(()))
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        let (ctx, level) = (self.ctx, self.level);
        ctx.enter(level)?;
        ctx.grow(2);
        if let Some(p) = self.too_deep() {
            drain_map(ctx, &mut map, level)?;
            return Ok(Err(p));
        }
        self.out.push(b'{');
        let mut any = false;
        while let Some(key) = map.next_key_seed(PropKey { ctx })? {
            let problem = match key {
                Err(p) => {
                    map.next_value_seed(Skip {
                        ctx,
                        level: level + 1,
                    })?;
                    p
                }
                Ok(key) => {
                    write_escaped(self.out, &key);
                    self.out.push(b':');
                    match map.next_value_seed(self.child())? {
                        Ok(()) if ctx.oversize() => Problem::too_large(ctx),
                        Ok(()) => {
                            any = true;
                            self.out.push(b',');
                            continue;
                        }
                        Err(p) => p.at_key(key),
                    }
                }
            };
            drain_map(ctx, &mut map, level)?;
            return Ok(Err(problem));
        }
        if any {
            self.out.pop();
        }
        self.out.push(b'}');
        Ok(Ok(()))
    }
}

/// Appends `s` as a JSON string literal (RFC 8259 escapes).
pub(crate) fn write_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        if esc.is_empty() {
            let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&hex);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}
