//! Shared serde machinery: the per-request context, depth-checked skipping,
//! scalar fields, and the object-or-not dispatch for events.
//!
//! Every seed carries the nesting `level` its value would open (the
//! outermost container is level 1) and checks it against
//! [`Limits::body_max_depth`] before recursing, so recursion is bounded by
//! our limit, not only by serde_json's 128.

use std::cell::Cell;
use std::fmt;

use compact_str::CompactString;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::error::{DecodeError, preview_compact};
use super::{DecodeOptions, IdMode, Limits};

/// Why a parse was aborted from inside a visitor (serde only carries a
/// message; this says which whole-request error it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fatal {
    /// Nesting beyond [`Limits::body_max_depth`].
    TooDeep,
    /// More events than [`Limits::max_events_per_request`].
    TooManyEvents,
}

/// Per-request state shared by all seeds of one parse.
pub(crate) struct Ctx {
    pub limits: Limits,
    /// [`DecodeOptions::now_ms`].
    pub now_ms: Option<i64>,
    /// [`DecodeOptions::check_time`].
    pub check_time: bool,
    /// [`DecodeOptions::ids`].
    pub ids: IdMode,
    /// 1-based number of the event being decoded (its NDJSON line, or its
    /// position in a JSON body), for [`IdMode::Line`].
    item: Cell<usize>,
    fatal: Cell<Option<Fatal>>,
    /// Running lower-bound estimate of the current event's JSON size.
    size: Cell<usize>,
}

impl Ctx {
    /// The server's context: `now_ms` defaults and checks timestamps, ids
    /// are random.
    pub fn new(limits: &Limits, now_ms: i64) -> Ctx {
        Ctx {
            limits: limits.clone(),
            now_ms: Some(now_ms),
            check_time: true,
            ids: IdMode::Random,
            item: Cell::new(0),
            fatal: Cell::new(None),
            size: Cell::new(0),
        }
    }

    /// A context with every option given.
    pub fn with_options(opts: &DecodeOptions) -> Ctx {
        Ctx {
            now_ms: opts.now_ms,
            check_time: opts.check_time,
            ids: opts.ids,
            ..Ctx::new(&opts.limits, 0)
        }
    }

    /// Marks the start of event number `n` (1-based).
    pub fn start_item(&self, n: usize) {
        self.item.set(n);
    }

    /// The timestamp of an event that gave `given`: the given one, else
    /// the clock's; an item error without either.
    pub fn timestamp(&self, given: Option<i64>) -> Result<i64, String> {
        match (given, self.now_ms) {
            (Some(t), _) => Ok(t),
            (None, Some(now)) => Ok(now),
            (None, None) => Err(super::NO_CLOCK.to_owned()),
        }
    }

    /// Checks `ts` against the accepted window around the clock, when the
    /// options ask for it and there is a clock.
    pub fn check_time(&self, ts: i64) -> Result<(), String> {
        match self.now_ms {
            Some(now) if self.check_time => super::validate::check_window(ts, now, &self.limits),
            _ => Ok(()),
        }
    }

    /// An id for the current event, which has none; `ts` is its timestamp
    /// (the time of a UUID v7 when there is no clock).
    pub fn fresh_id(&self, ts: i64) -> CompactString {
        match self.ids {
            IdMode::Random => super::validate::new_id(self.now_ms.unwrap_or(ts)),
            // Inline (at most 24 bytes): no allocation.
            IdMode::Line => {
                let mut digits = itoa::Buffer::new();
                let mut id = CompactString::const_new("line-");
                id.push_str(digits.format(self.item.get()));
                id
            }
        }
    }

    /// Fails the whole parse if a container at `level` is too deep.
    pub fn enter<E: de::Error>(&self, level: usize) -> Result<(), E> {
        if level > self.limits.body_max_depth() {
            Err(self.abort(Fatal::TooDeep))
        } else {
            Ok(())
        }
    }

    /// Records `why` and returns the error that unwinds serde.
    pub fn abort<E: de::Error>(&self, why: Fatal) -> E {
        self.fatal.set(Some(why));
        E::custom(match why {
            Fatal::TooDeep => "nesting too deep",
            Fatal::TooManyEvents => "too many events",
        })
    }

    /// The whole-request error for a failed parse of `text`.
    pub fn whole_error(&self, err: &serde_json::Error, text: &str) -> DecodeError {
        match self.fatal.take() {
            Some(Fatal::TooDeep) => self.too_deep(),
            Some(Fatal::TooManyEvents) => DecodeError::TooManyEvents {
                limit: self.limits.max_events_per_request,
            },
            None => super::error::json_error(err, text, self.limits.body_max_depth()),
        }
    }

    pub fn too_deep(&self) -> DecodeError {
        DecodeError::TooDeep {
            limit: self.limits.body_max_depth(),
        }
    }

    /// Takes the recorded abort reason, if any (for NDJSON lines, where a
    /// too-deep line is an item error).
    pub fn take_fatal(&self) -> Option<Fatal> {
        self.fatal.take()
    }

    /// Starts the size estimate of a new event.
    pub fn reset_size(&self) {
        self.size.set(0);
    }

    pub fn grow(&self, bytes: usize) {
        self.size.set(self.size.get().saturating_add(bytes));
    }

    /// Whether the current event is over [`Limits::max_event_bytes`].
    pub fn oversize(&self) -> bool {
        self.size.get() > self.limits.max_event_bytes
    }

    pub fn too_large_message(&self) -> String {
        format!("event is larger than {} bytes", self.limits.max_event_bytes)
    }
}

/// Decimal digits of `v` (its JSON text length), for the size estimate.
pub(crate) fn int_len(v: i64) -> usize {
    let sign = usize::from(v < 0);
    sign + v
        .unsigned_abs()
        .checked_ilog10()
        .map_or(1, |d| d as usize + 1)
}

/// Consumes any value, checking only depth and counting size.
pub(crate) struct Skip<'c> {
    pub ctx: &'c Ctx,
    pub level: usize,
}

impl<'de> DeserializeSeed<'de> for Skip<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.ctx.grow(4);
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.ctx.grow(int_len(v));
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.ctx.grow(1);
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.ctx.grow(1);
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.ctx.grow(v.len() + 2);
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.ctx.grow(4);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.ctx.enter(self.level)?;
        drain_seq(self.ctx, &mut seq, self.level)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.ctx.enter(self.level)?;
        drain_map(self.ctx, &mut map, self.level)
    }
}

/// Consumes the rest of a sequence whose container is at `level`.
pub(crate) fn drain_seq<'de, A: SeqAccess<'de>>(
    ctx: &Ctx,
    seq: &mut A,
    level: usize,
) -> Result<(), A::Error> {
    let inner = level + 1;
    while seq.next_element_seed(Skip { ctx, level: inner })?.is_some() {}
    Ok(())
}

/// Consumes the rest of a map whose container is at `level`.
pub(crate) fn drain_map<'de, A: MapAccess<'de>>(
    ctx: &Ctx,
    map: &mut A,
    level: usize,
) -> Result<(), A::Error> {
    let inner = level + 1;
    while map.next_key_seed(Skip { ctx, level: inner })?.is_some() {
        map.next_value_seed(Skip { ctx, level: inner })?;
    }
    Ok(())
}

/// A top-level field's value, containers skipped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer above `i64::MAX`.
    BigUint(u64),
    Float(f64),
    Str(CompactString),
    /// A string over [`Limits::max_string_bytes`] (its length).
    TooLong(usize),
    Object,
    Array,
}

impl Scalar {
    /// How the value is described in "expected X, got Y".
    pub fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "a boolean",
            Scalar::Int(_) | Scalar::BigUint(_) => "an integer",
            Scalar::Float(_) => "a fractional number",
            Scalar::Str(_) | Scalar::TooLong(_) => "a string",
            Scalar::Object => "an object",
            Scalar::Array => "an array",
        }
    }
}

/// Reads one field value as a [`Scalar`].
pub(crate) struct ScalarSeed<'c> {
    pub ctx: &'c Ctx,
    pub level: usize,
}

impl<'de> DeserializeSeed<'de> for ScalarSeed<'_> {
    type Value = Scalar;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed<'_> {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        self.ctx.grow(4);
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        self.ctx.grow(int_len(v));
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => self.visit_i64::<E>(i)?,
            Err(_) => {
                self.ctx.grow(19);
                Scalar::BigUint(v)
            }
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        self.ctx.grow(1);
        Ok(Scalar::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        self.ctx.grow(v.len() + 2);
        if v.len() > self.ctx.limits.max_string_bytes {
            Ok(Scalar::TooLong(v.len()))
        } else {
            Ok(Scalar::Str(CompactString::from(v)))
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        self.ctx.grow(4);
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        self.ctx.enter(self.level)?;
        drain_seq(self.ctx, &mut seq, self.level)?;
        Ok(Scalar::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        self.ctx.enter(self.level)?;
        drain_map(self.ctx, &mut map, self.level)?;
        Ok(Scalar::Object)
    }
}

/// Reads a map key as text: short keys stay inline (no allocation), long
/// ones are cut to a preview, which then matches no field name.
pub(crate) struct KeyName<'c> {
    pub ctx: &'c Ctx,
}

impl<'de> DeserializeSeed<'de> for KeyName<'_> {
    type Value = CompactString;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<CompactString, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyName<'_> {
    type Value = CompactString;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<CompactString, E> {
        self.ctx.grow(v.len() + 3);
        Ok(preview_compact(v))
    }
}

/// Builds one value from a JSON object; [`Obj`] reports anything else as an
/// item error ("an event must be a JSON object, got ...").
pub(crate) trait ObjectBuilder: Sized {
    type Out;
    fn ctx(&self) -> &Ctx;
    /// Level of the object itself.
    fn level(&self) -> usize;
    /// Consumes every entry of `map`; the inner `Err` is an item error.
    fn build<'de, A: MapAccess<'de>>(self, map: A) -> Result<Result<Self::Out, String>, A::Error>;
}

/// Seed that hands objects to the builder and turns other values into item
/// errors.
pub(crate) struct Obj<B>(pub B);

impl<B: ObjectBuilder> Obj<B> {
    fn not_object<E>(self, kind: &str) -> Result<Result<B::Out, String>, E> {
        Ok(Err(format!("an event must be a JSON object, got {kind}")))
    }
}

impl<'de, B: ObjectBuilder> DeserializeSeed<'de> for Obj<B> {
    type Value = Result<B::Out, String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, B: ObjectBuilder> Visitor<'de> for Obj<B> {
    type Value = Result<B::Out, String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        self.not_object("a boolean")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        self.not_object("a number")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        self.not_object("a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        self.not_object("a number")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        self.not_object("a string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.not_object("null")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (ctx, level) = (self.0.ctx(), self.0.level());
        ctx.enter(level)?;
        drain_seq(ctx, &mut seq, level)?;
        self.not_object("an array")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.0.ctx();
        ctx.enter(self.0.level())?;
        ctx.grow(2);
        self.0.build(map)
    }
}
