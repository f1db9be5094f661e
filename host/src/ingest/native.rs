//! eddy's own shapes: `POST /v1/events` (one event object or an array of
//! them) and `POST /v1/batch` (NDJSON, one event per line).
//!
//! Unknown top-level fields are rejected with an error naming the field: a
//! typo such as `distinctid` should fail loudly, not silently lose data.

use std::fmt;

use compact_str::CompactString;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::error::json_message;
use super::props::PropsSeed;
use super::validate::{parse_rfc3339, require, string_field, timestamp_ms};
use super::value::{Ctx, Fatal, KeyName, Obj, ObjectBuilder, Scalar, ScalarSeed, Skip};
use super::{DecodeError, Decoded, ItemError, Limits, Location};
use crate::event::{Event, Value};

const FIELDS: &str = "id, name (or event), timestamp, distinct_id, session_id, properties";

/// Decodes a JSON body: one event object, or an array of them.
pub(crate) fn decode_json(
    text: &str,
    limits: &Limits,
    now_ms: i64,
) -> Result<Decoded, DecodeError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_matches([' ', '\t', '\n', '\r']);
    if trimmed.is_empty() {
        return Err(DecodeError::EmptyBody);
    }
    let ctx = Ctx::new(limits, now_ms);
    let mut out = Decoded::default();
    let mut de = serde_json::Deserializer::from_str(trimmed);
    let root = Root {
        ctx: &ctx,
        out: &mut out,
    }
    .deserialize(&mut de)
    .and_then(|shape| de.end().map(|()| shape))
    .map_err(|e| ctx.whole_error(&e, trimmed))?;
    match root {
        // Arrays are counted while parsing; a single object only here.
        Shape::Object if limits.max_events_per_request == 0 => {
            return Err(DecodeError::TooManyEvents { limit: 0 });
        }
        Shape::Object if trimmed.len() > limits.max_event_bytes => {
            out.events.clear();
            out.errors = vec![ItemError {
                location: Location::Index(0),
                error: format!(
                    "event is {} bytes; the limit is {}",
                    trimmed.len(),
                    limits.max_event_bytes
                ),
            }];
        }
        Shape::Object => {}
        Shape::Array(0) => return Err(DecodeError::EmptyBody),
        Shape::Array(_) => {}
        Shape::Scalar(kind) => {
            return Err(DecodeError::InvalidShape(format!(
                "the body must be an event object or an array of them, got {kind}"
            )));
        }
    }
    Ok(out)
}

/// Decodes an NDJSON body. Each line stands alone: a line that is not
/// UTF-8, not JSON or too deep is an item error of that line.
pub(crate) fn decode_ndjson(
    body: &[u8],
    limits: &Limits,
    now_ms: i64,
) -> Result<Decoded, DecodeError> {
    let ctx = Ctx::new(limits, now_ms);
    let mut out = Decoded::default();
    let mut count = 0usize;
    // A body that is UTF-8 as a whole has UTF-8 lines (they are cut at
    // ASCII newlines), so they are not checked again; otherwise each line
    // is, and only the bad ones are rejected.
    let lines: Box<dyn Iterator<Item = Line<'_>>> = match std::str::from_utf8(body) {
        // `str::split(char)` finds newlines with the standard library's
        // word-at-a-time memchr, several times faster than a byte loop.
        Ok(text) => Box::new(
            text.split('\n')
                .map(|l| Line::Text(l.strip_suffix('\r').unwrap_or(l))),
        ),
        Err(_) => Box::new(
            body.split(|&b| b == b'\n')
                .map(|raw| Line::Bytes(raw.strip_suffix(b"\r").unwrap_or(raw))),
        ),
    };
    for (i, line) in lines.enumerate() {
        if line.bytes().iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        count += 1;
        if count > limits.max_events_per_request {
            return Err(DecodeError::TooManyEvents {
                limit: limits.max_events_per_request,
            });
        }
        match decode_line(&ctx, line, i + 1) {
            Ok(event) => out.events.push(event),
            Err(error) => out.errors.push(ItemError {
                location: Location::Line(i + 1),
                error,
            }),
        }
    }
    if count == 0 {
        return Err(DecodeError::EmptyBody);
    }
    Ok(out)
}

/// One NDJSON line without its line ending: known to be UTF-8, or not yet
/// checked.
#[derive(Clone, Copy)]
pub(super) enum Line<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> Line<'a> {
    pub(super) fn bytes(self) -> &'a [u8] {
        match self {
            Line::Text(t) => t.as_bytes(),
            Line::Bytes(b) => b,
        }
    }
}

/// The event of line `line_no` (1-based), or why it is not one: the fast
/// path when it applies, else the serde visitors. Every per-event limit
/// applies; counting events per request is the caller's.
pub(super) fn decode_line(ctx: &Ctx, line: Line<'_>, line_no: usize) -> Result<Event, String> {
    ctx.start_item(line_no);
    let max = ctx.limits.max_event_bytes;
    let len = line.bytes().len();
    if len > max {
        return Err(format!("line is {len} bytes; the limit is {max}"));
    }
    let text = match line {
        Line::Text(t) => t,
        Line::Bytes(b) => std::str::from_utf8(b).map_err(|e| {
            format!(
                "line is not valid UTF-8: invalid byte at offset {}",
                e.valid_up_to()
            )
        })?,
    };
    if let Some(decoded) = super::fast::line(ctx, text) {
        return decoded;
    }
    decode_line_slow(ctx, text)
}

/// [`decode_line`] through the serde visitors: any line, every error.
pub(super) fn decode_line_slow(ctx: &Ctx, text: &str) -> Result<Event, String> {
    ctx.reset_size();
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = Obj(NativeEvent { ctx, level: 1 })
        .deserialize(&mut de)
        .and_then(|r| de.end().map(|()| r));
    match parsed {
        Ok(r) => r,
        Err(e) => Err(match ctx.take_fatal() {
            Some(_) => ctx.too_deep().to_string(),
            None => match super::error::json_error(&e, text, ctx.limits.body_max_depth()) {
                DecodeError::InvalidJson(_) => format!("invalid JSON: {}", json_message(&e, text)),
                other => other.to_string(),
            },
        }),
    }
}

/// What the top-level value of a JSON body was.
enum Shape {
    Object,
    /// An array of this many elements.
    Array(usize),
    Scalar(&'static str),
}

/// The top-level value: events go straight into `out`.
struct Root<'c, 'o> {
    ctx: &'c Ctx,
    out: &'o mut Decoded,
}

impl<'de> DeserializeSeed<'de> for Root<'_, '_> {
    type Value = Shape;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        d.deserialize_any(self)
    }
}

impl Root<'_, '_> {
    fn push(&mut self, i: usize, r: Result<Event, String>) {
        match r {
            Ok(e) => self.out.events.push(e),
            Err(error) => self.out.errors.push(ItemError {
                location: Location::Index(i),
                error,
            }),
        }
    }
}

impl<'de> Visitor<'de> for Root<'_, '_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object or an array of them")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Scalar("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Scalar("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Scalar("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Scalar("a number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Scalar("a string"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
        Ok(Shape::Scalar("null"))
    }
    fn visit_map<A: MapAccess<'de>>(mut self, map: A) -> Result<Shape, A::Error> {
        let ctx = self.ctx;
        ctx.enter(1)?;
        ctx.grow(2);
        ctx.start_item(1);
        let r = NativeEvent { ctx, level: 1 }.build(map)?;
        self.push(0, r);
        Ok(Shape::Object)
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Shape, A::Error> {
        let ctx = self.ctx;
        ctx.enter(1)?;
        let max = ctx.limits.max_events_per_request;
        let mut i = 0;
        loop {
            if i == max {
                // Only look at whether another element exists; don't build it.
                if seq.next_element_seed(Skip { ctx, level: 2 })?.is_some() {
                    return Err(ctx.abort(Fatal::TooManyEvents));
                }
                break;
            }
            ctx.reset_size();
            ctx.start_item(i + 1);
            match seq.next_element_seed(Obj(NativeEvent { ctx, level: 2 }))? {
                Some(r) => self.push(i, r),
                None => break,
            }
            i += 1;
        }
        Ok(Shape::Array(i))
    }
}

/// Fields of a native event as they arrive.
#[derive(Default)]
pub(super) struct Partial {
    pub(super) id: Option<CompactString>,
    pub(super) name: Option<CompactString>,
    pub(super) timestamp: Option<i64>,
    pub(super) distinct_id: Option<CompactString>,
    pub(super) session_id: Option<CompactString>,
    pub(super) properties: Vec<(CompactString, Value)>,
    /// Bit per field seen so far (see [`field_bit`]), to reject duplicates.
    pub(super) seen: u8,
}

/// The bit of a known field in [`Partial::seen`]; `None` for unknown ones.
pub(super) fn field_bit(key: &str) -> Option<u8> {
    Some(match key {
        "id" => 1,
        "name" => 2,
        "event" => 4,
        "timestamp" => 8,
        "distinct_id" => 16,
        "session_id" => 32,
        "properties" => 64,
        _ => return None,
    })
}

impl Partial {
    pub(super) fn finish(self, ctx: &Ctx) -> Result<Event, String> {
        let name = self
            .name
            .ok_or_else(|| "missing required field `name` (or `event`)".to_owned())?;
        if name.is_empty() {
            return Err("name: must not be empty".to_owned());
        }
        let distinct_id = require("distinct_id", self.distinct_id)?;
        let timestamp = ctx.timestamp(self.timestamp)?;
        ctx.check_time(timestamp)?;
        let id = match self.id {
            Some(id) if id.is_empty() => return Err("id: must not be empty".to_owned()),
            Some(id) => id,
            None => ctx.fresh_id(timestamp),
        };
        Ok(Event {
            id,
            name,
            timestamp,
            distinct_id,
            // An empty session id means "no session", as absent does.
            session_id: self.session_id.filter(|s| !s.is_empty()),
            properties: self.properties,
        })
    }
}

/// Builds one native event from its object.
pub(crate) struct NativeEvent<'c> {
    pub ctx: &'c Ctx,
    pub level: usize,
}

impl NativeEvent<'_> {
    /// Reads the value of field `key` into `ev`; `Ok(Err)` is an item error.
    fn field<'de, A: MapAccess<'de>>(
        &self,
        key: &str,
        map: &mut A,
        ev: &mut Partial,
    ) -> Result<Result<(), String>, A::Error> {
        let (ctx, level) = (self.ctx, self.level + 1);
        let bit = field_bit(key);
        let problem = match bit {
            None => Some(format!("unknown field `{key}`; expected one of {FIELDS}")),
            Some(b) if ev.seen & b != 0 => Some(format!("duplicate field `{key}`")),
            Some(_) if key == "name" || key == "event" => (ev.seen & (2 | 4) != 0)
                .then(|| "give the event name as `name` or `event`, not both".to_owned()),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            map.next_value_seed(Skip { ctx, level })?;
            return Ok(Err(problem));
        }
        ev.seen |= bit.unwrap_or(0);
        if key == "properties" {
            let seed = PropsSeed {
                ctx,
                level,
                cap: ctx.limits.max_properties,
            };
            return Ok(match map.next_value_seed(seed)? {
                Ok(p) => {
                    ev.properties = p;
                    Ok(())
                }
                Err(p) => Err(p.render("properties")),
            });
        }
        let value = map.next_value_seed(ScalarSeed { ctx, level })?;
        Ok(set_field(ev, key, value, &ctx.limits))
    }
}

/// Stores a scalar field's value; errors name the field.
fn set_field(ev: &mut Partial, key: &str, value: Scalar, limits: &Limits) -> Result<(), String> {
    match key {
        "timestamp" => {
            ev.timestamp = timestamp_ms(key, value, parse_rfc3339, "an RFC 3339 date-time")?;
        }
        "id" => ev.id = string_field(key, value, limits)?,
        "distinct_id" => ev.distinct_id = string_field(key, value, limits)?,
        "session_id" => ev.session_id = string_field(key, value, limits)?,
        _ => ev.name = string_field(key, value, limits)?,
    }
    Ok(())
}

impl ObjectBuilder for NativeEvent<'_> {
    type Out = Event;
    fn ctx(&self) -> &Ctx {
        self.ctx
    }
    fn level(&self) -> usize {
        self.level
    }
    fn build<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<Result<Event, String>, A::Error> {
        let ctx = self.ctx;
        let mut ev = Partial::default();
        let mut err = None;
        while let Some(key) = map.next_key_seed(KeyName { ctx })? {
            if err.is_some() {
                map.next_value_seed(Skip {
                    ctx,
                    level: self.level + 1,
                })?;
                continue;
            }
            match self.field(&key, &mut map, &mut ev)? {
                Err(e) => err = Some(e),
                Ok(()) if ctx.oversize() => err = Some(ctx.too_large_message()),
                Ok(()) => {}
            }
        }
        Ok(match err {
            Some(e) => Err(e),
            None => ev.finish(ctx),
        })
    }
}
