//! PostHog capture API bodies (`/capture/`, `/batch/`, `/e/`, `/i/v0/e/`):
//! a single event, a `{"api_key", "batch": [...]}` wrapper, or a bare array
//! (posthog-js), possibly gzipped or form/base64-wrapped.
//!
//! Mapping onto [`Event`]: name ← `event`; id ← `uuid` (else a UUID v7);
//! distinct_id ← top-level or `properties.distinct_id` (numbers become their
//! decimal text); session_id ← `properties.$session_id` (kept in the
//! properties); properties ← `properties` minus `distinct_id` and `token`,
//! plus top-level `$set`/`$set_once` (which replace same-named properties).
//! Unknown top-level fields are ignored: SDKs send many (`type`, `library`,
//! `_meta`, ...). As in PostHog, an unparsable `sent_at` is ignored, not an
//! error.

use std::fmt;

use compact_str::{CompactString, ToCompactString};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::body::{self, Compression};
use super::props::{PropSeed, PropsSeed};
use super::validate::{
    canonical_uuid, check_window, new_id, parse_iso8601, require, string_field, timestamp_ms,
};
use super::value::{Ctx, Fatal, KeyName, Obj, ObjectBuilder, Scalar, ScalarSeed, Skip, drain_map};
use super::{DecodeError, Decoded, Encoding, ItemError, Limits, Location};
use crate::event::{Event, Value};

/// Request metadata a PostHog body needs besides its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostHogRequest<'a> {
    /// `Content-Type`: `application/json`, `text/plain` (posthog-js sends
    /// JSON as that) or `application/x-www-form-urlencoded`.
    pub content_type: Option<&'a str>,
    /// The `compression` query parameter: `gzip-js`, `gzip`, `base64`.
    pub compression: Option<&'a str>,
}

/// Decode a PostHog capture body. Gzip is undone when `encoding` or the
/// `compression` query says so, or the body starts with the gzip magic
/// bytes; a form body (by content type, or starting with `data=`) is
/// unwrapped from its `data` field (JSON, or base64).
pub fn decode_posthog(
    body: &[u8],
    encoding: Encoding,
    req: &PostHogRequest<'_>,
    limits: &Limits,
    now_ms: i64,
) -> Result<Decoded, DecodeError> {
    let compression = Compression::parse(req.compression)?;
    let data = body::unwrap_posthog(
        body,
        encoding == Encoding::Gzip,
        compression,
        body::is_form(req.content_type),
        limits.max_decompressed_bytes,
    )?;
    let text = body::utf8(&data)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.trim_matches([' ', '\t', '\n', '\r']);
    if text.is_empty() {
        return Err(DecodeError::EmptyBody);
    }
    let ctx = Ctx::new(limits, now_ms);
    let mut de = serde_json::Deserializer::from_str(text);
    let shape = Root { ctx: &ctx }
        .deserialize(&mut de)
        .and_then(|shape| de.end().map(|()| shape))
        .map_err(|e| ctx.whole_error(&e, text))?;
    let (wrapper, events) = match shape {
        Shape::Scalar(kind) => {
            return Err(DecodeError::InvalidShape(format!(
                "the body must be an event object, a batch object or an array of events, got {kind}"
            )));
        }
        Shape::BadBatch(msg) => return Err(DecodeError::InvalidShape(msg)),
        Shape::Single(mut ev) => {
            if text.len() > limits.max_event_bytes {
                ev.err.get_or_insert(format!(
                    "event is {} bytes; the limit is {}",
                    text.len(),
                    limits.max_event_bytes
                ));
            }
            (Partial::default(), vec![Ok(ev)])
        }
        Shape::Batch(wrapper, events) => {
            if let Some(e) = wrapper.token_err {
                return Err(DecodeError::InvalidShape(e));
            }
            (wrapper, events)
        }
    };
    if events.is_empty() {
        return Err(DecodeError::EmptyBody);
    }
    finish_all(wrapper, events, &ctx)
}

/// Turns parsed events into the result; all tokens must agree.
fn finish_all(
    wrapper: Partial,
    events: Vec<Result<Partial, String>>,
    ctx: &Ctx,
) -> Result<Decoded, DecodeError> {
    let mut out = Decoded::default();
    let mut token = wrapper.token;
    for (i, ev) in events.into_iter().enumerate() {
        match ev.and_then(|ev| ev.finish(wrapper.sent_at, ctx)) {
            Ok((event, event_token)) => {
                match (&token, event_token) {
                    (Some(t), Some(e)) if *t != e => return Err(DecodeError::MixedTokens),
                    (None, Some(e)) => token = Some(e),
                    _ => {}
                }
                out.events.push(event);
            }
            Err(error) => out.errors.push(ItemError {
                location: Location::Index(i),
                error,
            }),
        }
    }
    out.api_key = token.map(String::from);
    Ok(out)
}

/// A PostHog event's fields as they arrive.
#[derive(Debug, Default)]
struct Partial {
    name: Option<CompactString>,
    distinct_id: Option<CompactString>,
    uuid: Option<CompactString>,
    timestamp: Option<i64>,
    sent_at: Option<i64>,
    offset: Option<i64>,
    token: Option<CompactString>,
    properties: Vec<(CompactString, Value)>,
    /// Top-level `$set` / `$set_once`.
    sets: Vec<(CompactString, Value)>,
    /// First problem found; parsing goes on so a batch wrapper's fields are
    /// still read.
    err: Option<String>,
    /// A mistyped `api_key`/`token`: fatal on a batch wrapper.
    token_err: Option<String>,
}

impl Partial {
    fn fail(&mut self, msg: String) {
        self.err.get_or_insert(msg);
    }

    /// Validates and maps onto an [`Event`]; also returns the event's token.
    fn finish(
        self,
        batch_sent_at: Option<i64>,
        ctx: &Ctx,
    ) -> Result<(Event, Option<CompactString>), String> {
        if let Some(e) = self.err {
            return Err(e);
        }
        let name = require("event", self.name)?;
        let mut props = self.properties;
        let (mut prop_distinct, mut prop_token) = (None, None);
        props.retain_mut(|(k, v)| {
            let slot = match k.as_str() {
                "distinct_id" => &mut prop_distinct,
                "token" => &mut prop_token,
                _ => return true,
            };
            *slot = Some(std::mem::replace(v, Value::Null));
            false
        });
        let distinct_id = match (self.distinct_id, prop_distinct) {
            (Some(d), _) => Some(d),
            (None, None | Some(Value::Null)) => None,
            (None, Some(Value::Str(s))) => Some(s),
            (None, Some(Value::Int(i))) => Some(i.to_compact_string()),
            (None, Some(Value::Float(f))) => Some(float_text(f)),
            (None, Some(_)) => {
                return Err("properties.distinct_id: expected a string or a number".to_owned());
            }
        };
        let distinct_id = require("distinct_id", distinct_id)?;
        let token = self.token.or(match prop_token {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        });
        for (key, value) in self.sets {
            match props.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => props.push((key, value)),
            }
        }
        if props.len() > ctx.limits.max_properties {
            return Err(format!(
                "properties: more than {} properties",
                ctx.limits.max_properties
            ));
        }
        let prop = |key: &str| props.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let session_id = match prop("$session_id") {
            Some(Value::Str(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        let ignore_sent_at = prop("$ignore_sent_at") == Some(&Value::Bool(true));
        let sent_at = self.sent_at.or(batch_sent_at).filter(|_| !ignore_sent_at);
        let timestamp = event_time(self.timestamp, sent_at, self.offset, ctx.now_ms)?;
        check_window(timestamp, ctx.now_ms, &ctx.limits)?;
        let event = Event {
            id: self.uuid.unwrap_or_else(|| new_id(ctx.now_ms)),
            name,
            timestamp,
            distinct_id,
            session_id,
            properties: props,
        };
        Ok((event, token))
    }
}

/// PostHog's rules: `timestamp` with `sent_at` → `now + (timestamp -
/// sent_at)` (corrects the client's clock skew); `timestamp` alone → as is;
/// `offset` alone → `now - offset`; nothing → now.
fn event_time(
    timestamp: Option<i64>,
    sent_at: Option<i64>,
    offset: Option<i64>,
    now: i64,
) -> Result<i64, String> {
    let t = match (timestamp, sent_at, offset) {
        (Some(t), Some(s), _) => i128::from(now) + i128::from(t) - i128::from(s),
        (Some(t), None, _) => return Ok(t),
        (None, _, Some(o)) => i128::from(now) - i128::from(o),
        (None, _, None) => return Ok(now),
    };
    i64::try_from(t).map_err(|_| "timestamp: out of range after clock-skew correction".to_owned())
}

/// A number as distinct_id text, formatted as JSON would.
fn float_text(f: f64) -> CompactString {
    serde_json::Number::from_f64(f).map_or_else(|| f.to_compact_string(), |n| n.to_compact_string())
}

/// Reads field `key` of a PostHog event (or of the top-level object).
fn field<'de, A: MapAccess<'de>>(
    ctx: &Ctx,
    level: usize,
    key: &str,
    map: &mut A,
    ev: &mut Partial,
) -> Result<(), A::Error> {
    let limits = &ctx.limits;
    match key {
        "properties" => {
            // distinct_id and token are moved out later, so allow for them.
            let cap = limits.max_properties.saturating_add(2);
            match map.next_value_seed(PropsSeed { ctx, level, cap })? {
                Ok(p) => ev.properties = p,
                Err(p) => ev.fail(p.render("properties")),
            }
        }
        "$set" | "$set_once" => match map.next_value_seed(PropSeed { ctx, level })? {
            Ok(v) => ev.sets.push((CompactString::from(key), v)),
            Err(p) => ev.fail(p.render(key)),
        },
        "event" | "distinct_id" | "uuid" | "timestamp" | "sent_at" | "offset" | "api_key"
        | "token" | "$token" => {
            let value = map.next_value_seed(ScalarSeed { ctx, level })?;
            if let Err(e) = scalar_field(key, value, ev, limits) {
                ev.fail(e);
            }
        }
        _ => map.next_value_seed(Skip { ctx, level })?,
    }
    if ctx.oversize() {
        ev.fail(ctx.too_large_message());
    }
    Ok(())
}

fn scalar_field(key: &str, value: Scalar, ev: &mut Partial, limits: &Limits) -> Result<(), String> {
    match key {
        "event" => ev.name = string_field(key, value, limits)?,
        "distinct_id" => {
            ev.distinct_id = match value {
                Scalar::Int(i) => Some(i.to_compact_string()),
                Scalar::BigUint(u) => Some(u.to_compact_string()),
                Scalar::Float(f) => Some(float_text(f)),
                Scalar::Str(_) | Scalar::TooLong(_) | Scalar::Null => {
                    string_field(key, value, limits)?
                }
                other => {
                    return Err(format!(
                        "distinct_id: expected a string or a number, got {}",
                        other.kind()
                    ));
                }
            }
        }
        "uuid" => {
            if let Some(text) = string_field(key, value, limits)? {
                let id = canonical_uuid(&text).ok_or_else(|| {
                    format!("uuid: `{}` is not a UUID", super::error::preview(&text))
                })?;
                ev.uuid = Some(id);
            }
        }
        "timestamp" => {
            ev.timestamp = timestamp_ms(key, value, parse_iso8601, "an ISO 8601 date-time")?;
        }
        // Unparsable sent_at is ignored, as PostHog does.
        "sent_at" => {
            ev.sent_at = timestamp_ms(key, value, parse_iso8601, "").ok().flatten();
        }
        "offset" => {
            ev.offset = match value {
                Scalar::Null => None,
                Scalar::Int(ms) => Some(ms),
                other => {
                    return Err(format!(
                        "offset: expected integer milliseconds, got {}",
                        other.kind()
                    ));
                }
            }
        }
        _ => match string_field(key, value, limits) {
            Ok(t) => ev.token = ev.token.take().or(t),
            Err(e) => {
                ev.token_err.get_or_insert(e.clone());
                return Err(e);
            }
        },
    }
    Ok(())
}

/// One event of a batch.
struct PhEvent<'c> {
    ctx: &'c Ctx,
    level: usize,
}

impl ObjectBuilder for PhEvent<'_> {
    type Out = Partial;
    fn ctx(&self) -> &Ctx {
        self.ctx
    }
    fn level(&self) -> usize {
        self.level
    }
    fn build<'de, A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<Result<Partial, String>, A::Error> {
        let mut ev = Partial::default();
        while let Some(key) = map.next_key_seed(KeyName { ctx: self.ctx })? {
            field(self.ctx, self.level + 1, &key, &mut map, &mut ev)?;
        }
        Ok(Ok(ev))
    }
}

/// Reads the events of an array whose container is at `level`.
fn read_events<'de, A: SeqAccess<'de>>(
    ctx: &Ctx,
    seq: &mut A,
    level: usize,
) -> Result<Vec<Result<Partial, String>>, A::Error> {
    ctx.enter(level)?;
    let max = ctx.limits.max_events_per_request;
    let mut events = Vec::new();
    loop {
        if events.len() == max {
            if seq
                .next_element_seed(Skip {
                    ctx,
                    level: level + 1,
                })?
                .is_some()
            {
                return Err(ctx.abort(Fatal::TooManyEvents));
            }
            return Ok(events);
        }
        ctx.reset_size();
        match seq.next_element_seed(Obj(PhEvent {
            ctx,
            level: level + 1,
        }))? {
            Some(ev) => events.push(ev),
            None => return Ok(events),
        }
    }
}

/// What the top-level value was.
enum Shape {
    Single(Partial),
    /// Wrapper fields (token, sent_at) and the events.
    Batch(Partial, Vec<Result<Partial, String>>),
    BadBatch(String),
    Scalar(&'static str),
}

struct Root<'c> {
    ctx: &'c Ctx,
}

impl<'de> DeserializeSeed<'de> for Root<'_> {
    type Value = Shape;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        d.deserialize_any(self)
    }
}

/// `batch`: an array of events, or (`Err`) what it was instead.
struct BatchSeed<'c> {
    ctx: &'c Ctx,
}

impl<'de> DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = Result<Vec<Result<Partial, String>>, &'static str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match d.deserialize_any(ArrayOnly { ctx: self.ctx })? {
            Some(events) => Ok(Ok(events)),
            None => Ok(Err("`batch` must be an array of events")),
        }
    }
}

/// Visits an array of events at level 2; anything else is `None`.
struct ArrayOnly<'c> {
    ctx: &'c Ctx,
}

impl<'de> Visitor<'de> for ArrayOnly<'_> {
    type Value = Option<Vec<Result<Partial, String>>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of events")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        self.ctx.enter(2)?;
        drain_map(self.ctx, &mut map, 2)?;
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        read_events(self.ctx, &mut seq, 2).map(Some)
    }
}

impl<'de> Visitor<'de> for Root<'_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a PostHog event, batch or array of events")
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
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let events = read_events(self.ctx, &mut seq, 1)?;
        Ok(Shape::Batch(Partial::default(), events))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let ctx = self.ctx;
        ctx.enter(1)?;
        ctx.grow(2);
        let mut root = Partial::default();
        let mut batch = None;
        while let Some(key) = map.next_key_seed(KeyName { ctx })? {
            if key != "batch" {
                field(ctx, 2, &key, &mut map, &mut root)?;
                continue;
            }
            let problem = match (map.next_value_seed(BatchSeed { ctx })?, &batch) {
                (Ok(_), Some(_)) => "`batch` given twice",
                (Ok(events), None) => {
                    batch = Some(events);
                    continue;
                }
                (Err(problem), _) => problem,
            };
            drain_map(ctx, &mut map, 1)?;
            return Ok(Shape::BadBatch(problem.to_owned()));
        }
        Ok(match batch {
            Some(events) => Shape::Batch(root, events),
            None => Shape::Single(root),
        })
    }
}
