//! Serde visitors for PostHog bodies: the top-level value (event, batch
//! wrapper or bare array), batch arrays, and each event's fields.

use std::fmt;

use compact_str::{CompactString, ToCompactString};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::Limits;
use super::posthog::{Partial, float_text};
use super::props::{PropSeed, PropsSeed};
use super::validate::{canonical_uuid, parse_iso8601, string_field, timestamp_ms};
use super::value::{Ctx, Fatal, KeyName, Obj, ObjectBuilder, Scalar, ScalarSeed, Skip, drain_map};

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
pub(super) enum Shape {
    Single(Partial),
    /// Wrapper fields (token, sent_at) and the events.
    Batch(Partial, Vec<Result<Partial, String>>),
    BadBatch(String),
    Scalar(&'static str),
}

pub(super) struct Root<'c> {
    pub ctx: &'c Ctx,
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
