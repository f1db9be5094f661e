//! Checking an event that was built rather than decoded (a plugin's
//! `replace` or `split` output, a plugin's edits) against the rules the
//! decoder enforces on every event that comes in, so nothing further down
//! the pipeline can tell a created event from a decoded one.
//!
//! Messages name the field as the decoder's item errors do
//! (`properties.tags[2]: string of 20000 bytes is too long; the limit is
//! 16384 bytes`).

use compact_str::CompactString;
use serde::de::DeserializeSeed;

use super::Limits;
use super::error::{json_message, preview};
use super::nested::Nested;
use super::props::{Problem, key_too_long, string_too_long};
use super::value::{Ctx, int_len};
use crate::event::{Event, Value};

/// Why a built event breaks the ingest rules; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidEvent(pub String);

/// A property value as [`check_property`] reads it, borrowed, so a caller
/// holding only text (a plugin result's spans) need not build a [`Value`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A float (must be finite).
    Float(f64),
    /// A string (at most [`Limits::max_string_bytes`]).
    Str(&'a str),
    /// The JSON text of a nested object or array.
    Json(&'a str),
}

impl<'a> From<&'a Value> for ValueRef<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::Null => ValueRef::Null,
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Float(f) => ValueRef::Float(*f),
            Value::Str(s) => ValueRef::Str(s),
            Value::Json(t) => ValueRef::Json(t),
        }
    }
}

/// Checks a built event against `limits`: `id`, `name` and `distinct_id`
/// present and within [`Limits::max_string_bytes`], `session_id` (when
/// there is one) not empty and within it too, at most
/// [`Limits::max_properties`] properties with unique keys, each property as
/// [`check_property`] checks it, and the event's JSON within
/// [`Limits::max_event_bytes`] (a lower-bound estimate, as for the
/// elements of a JSON array body). Timestamps are not checked: a plugin may
/// move an event in time, and the windows' watermark and future-skew cap
/// deal with any timestamp.
pub fn check_event(event: &Event, limits: &Limits) -> Result<(), InvalidEvent> {
    let ctx = Ctx::new(limits, 0);
    let required = [
        ("id", &event.id),
        ("name", &event.name),
        ("distinct_id", &event.distinct_id),
    ];
    for (field, value) in required {
        if value.is_empty() {
            return Err(InvalidEvent(format!("{field}: must not be empty")));
        }
        check_len(field, value, limits)?;
    }
    if let Some(sid) = &event.session_id {
        if sid.is_empty() {
            return Err(InvalidEvent(
                "session_id: must not be empty (an event without a session has none)".to_owned(),
            ));
        }
        check_len("session_id", sid, limits)?;
    }
    let props = &event.properties;
    if props.len() > limits.max_properties {
        return Err(InvalidEvent(format!(
            "properties: more than {} properties",
            limits.max_properties
        )));
    }
    if let Some(dup) = duplicate_key(props) {
        return Err(InvalidEvent(format!(
            "properties: duplicate key `{}`",
            preview(dup)
        )));
    }
    for (key, value) in props {
        check_with(&ctx, key, value.into())?;
    }
    if estimated_size(event) > limits.max_event_bytes {
        return Err(InvalidEvent(ctx.too_large_message()));
    }
    Ok(())
}

/// Checks one property as the decoder would have taken it: the key within
/// [`Limits::max_key_bytes`], a string within [`Limits::max_string_bytes`],
/// a float finite, and nested JSON an object or an array that the decoder
/// would accept (depth, keys, strings, integer range, size).
pub fn check_property(key: &str, value: ValueRef<'_>, limits: &Limits) -> Result<(), InvalidEvent> {
    check_with(&Ctx::new(limits, 0), key, value)
}

fn check_with(ctx: &Ctx, key: &str, value: ValueRef<'_>) -> Result<(), InvalidEvent> {
    if key.len() > ctx.limits.max_key_bytes {
        return Err(InvalidEvent(key_too_long(ctx, key).render("properties")));
    }
    let problem = match value {
        ValueRef::Null | ValueRef::Bool(_) | ValueRef::Int(_) => return Ok(()),
        ValueRef::Float(f) if f.is_finite() => return Ok(()),
        ValueRef::Float(_) => Problem::new("number is not finite"),
        ValueRef::Str(s) if s.len() <= ctx.limits.max_string_bytes => return Ok(()),
        ValueRef::Str(s) => string_too_long(ctx, s.len()),
        ValueRef::Json(text) => match check_json(ctx, text) {
            Ok(()) => return Ok(()),
            Err(p) => p,
        },
    };
    Err(InvalidEvent(problem.render(&format!("properties.{key}"))))
}

/// Nested JSON text, through the decoder's own nested-value visitor.
fn check_json(ctx: &Ctx, text: &str) -> Result<(), Problem> {
    let first = text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .bytes()
        .next();
    if !matches!(first, Some(b'{' | b'[')) {
        return Err(Problem::new(
            "a nested value must be a JSON object or array",
        ));
    }
    ctx.reset_size();
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    // Level 3: a property value's containers sit under the event object
    // and its `properties` object, as in an NDJSON line.
    let parsed = Nested::new(ctx, &mut out, 3)
        .deserialize(&mut de)
        .and_then(|r| de.end().map(|()| r));
    match parsed {
        Ok(r) => r,
        Err(_) if ctx.take_fatal().is_some() => Err(Problem::new(format!(
            "nested deeper than {} levels",
            ctx.limits.max_depth
        ))),
        Err(e) => Err(Problem::new(format!(
            "not valid JSON: {}",
            json_message(&e, text)
        ))),
    }
}

fn check_len(field: &str, value: &str, limits: &Limits) -> Result<(), InvalidEvent> {
    if value.len() > limits.max_string_bytes {
        return Err(InvalidEvent(format!(
            "{field}: string of {} bytes is too long; the limit is {} bytes",
            value.len(),
            limits.max_string_bytes
        )));
    }
    Ok(())
}

/// The first key that appears twice.
fn duplicate_key(props: &[(CompactString, Value)]) -> Option<&str> {
    // Below this many keys a quadratic scan beats sorting (as in
    // `props::dedup_last_wins`).
    const SCAN_MAX: usize = 16;
    if props.len() <= SCAN_MAX {
        return props.iter().enumerate().find_map(|(i, (k, _))| {
            props
                .iter()
                .take(i)
                .any(|(k2, _)| k2 == k)
                .then_some(k.as_str())
        });
    }
    let mut keys: Vec<&str> = props.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.windows(2).find_map(|w| match w {
        [a, b] if a == b => Some(*a),
        _ => None,
    })
}

/// A lower bound of the event's compact JSON size: every string counted
/// without escapes, every float as one byte (as the decoder estimates).
fn estimated_size(e: &Event) -> usize {
    const FRAME: usize =
        r#"{"id":"","name":"","timestamp":,"distinct_id":"","properties":{}}"#.len();
    let mut size = FRAME + e.id.len() + e.name.len() + int_len(e.timestamp) + e.distinct_id.len();
    if let Some(sid) = &e.session_id {
        size += r#","session_id":"""#.len() + sid.len();
    }
    // Commas between properties.
    size += e.properties.len().saturating_sub(1);
    for (k, v) in &e.properties {
        // `"key":`.
        size += k.len() + 3;
        size += match v {
            Value::Null | Value::Bool(true) => 4,
            Value::Bool(false) => 5,
            Value::Int(i) => int_len(*i),
            Value::Float(_) => 1,
            Value::Str(s) => s.len() + 2,
            Value::Json(t) => t.len(),
        };
    }
    size
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            id: "e1".into(),
            name: "signup".into(),
            timestamp: 1_700_000_000_000,
            distinct_id: "u1".into(),
            session_id: Some("s1".into()),
            properties: vec![
                ("plan".into(), Value::Str("pro".into())),
                ("n".into(), Value::Int(3)),
                (
                    "o".into(),
                    Value::Json(r#"{"a":[1,2.5,"x"],"b":null}"#.into()),
                ),
            ],
        }
    }

    fn tight() -> Limits {
        Limits {
            max_properties: 4,
            max_key_bytes: 6,
            max_string_bytes: 8,
            max_depth: 2,
            max_event_bytes: 200,
            ..Limits::default()
        }
    }

    fn err(e: &Event) -> String {
        check_event(e, &tight()).unwrap_err().to_string()
    }

    #[test]
    fn a_decodable_event_passes() {
        check_event(&event(), &tight()).unwrap();
        check_event(&event(), &Limits::default()).unwrap();
        let mut e = event();
        e.session_id = None;
        e.properties.clear();
        check_event(&e, &tight()).unwrap();
    }

    /// Makes an event invalid.
    type Breaker = fn(&mut Event);

    #[test]
    fn required_fields_must_be_non_empty_and_short() {
        let cases: [(Breaker, &str); 6] = [
            (|e| e.id = "".into(), "id: must not be empty"),
            (|e| e.name = "".into(), "name: must not be empty"),
            (
                |e| e.distinct_id = "".into(),
                "distinct_id: must not be empty",
            ),
            (
                |e| e.session_id = Some("".into()),
                "session_id: must not be empty",
            ),
            (
                |e| e.distinct_id = "123456789".into(),
                "distinct_id: string of 9 bytes is too long; the limit is 8 bytes",
            ),
            (
                |e| e.session_id = Some("123456789".into()),
                "session_id: string of 9 bytes is too long; the limit is 8 bytes",
            ),
        ];
        for (break_it, want) in cases {
            let mut e = event();
            break_it(&mut e);
            assert!(
                err(&e).starts_with(want),
                "{} should start with {want}",
                err(&e)
            );
        }
    }

    #[test]
    fn properties_are_checked_as_the_decoder_checks_them() {
        let with = |k: &str, v: Value| {
            let mut e = event();
            e.properties.push((k.into(), v));
            err(&e)
        };
        assert_eq!(
            with("plan", Value::Int(1)),
            "properties: duplicate key `plan`"
        );
        assert_eq!(
            with("toolong", Value::Int(1)),
            "properties: key `toolong` is too long; the limit is 6 bytes"
        );
        assert_eq!(
            with("s", Value::Str("123456789".into())),
            "properties.s: string of 9 bytes is too long; the limit is 8 bytes"
        );
        assert_eq!(
            with("f", Value::Float(f64::NAN)),
            "properties.f: number is not finite"
        );
        assert_eq!(
            with("j", Value::Json(r#"{"k":["123456789"]}"#.into())),
            "properties.j.k[0]: string of 9 bytes is too long; the limit is 8 bytes"
        );
        assert_eq!(
            with("j", Value::Json(r#"{"toolong":1}"#.into())),
            "properties.j: key `toolong` is too long; the limit is 6 bytes"
        );
        assert_eq!(
            with("j", Value::Json("[[[1]]]".into())),
            "properties.j[0][0]: nested deeper than 2 levels"
        );
        assert_eq!(
            with(
                "j",
                Value::Json(format!("{}1{}", "[".repeat(500), "]".repeat(500)))
            ),
            "properties.j: nested deeper than 2 levels"
        );
        assert_eq!(
            with("j", Value::Json("[18446744073709551615]".into())),
            "properties.j[0]: integer out of range (must fit in 64-bit signed)"
        );
        assert_eq!(
            with("j", Value::Json("5".into())),
            "properties.j: a nested value must be a JSON object or array"
        );
        assert!(
            with("j", Value::Json("{\"a\":".into())).starts_with("properties.j: not valid JSON: "),
        );
        let mut e = event();
        e.properties
            .extend((0..2).map(|i| (format!("k{i}").into(), Value::Null)));
        assert_eq!(err(&e), "properties: more than 4 properties");
    }

    #[test]
    fn duplicates_are_found_among_many_keys_too() {
        let mut e = event();
        e.properties = (0..40)
            .map(|i| (format!("k{i}").into(), Value::Null))
            .collect();
        check_event(&e, &Limits::default()).unwrap();
        e.properties.push(("k17".into(), Value::Int(1)));
        assert_eq!(
            check_event(&e, &Limits::default()).unwrap_err().to_string(),
            "properties: duplicate key `k17`"
        );
    }

    #[test]
    fn the_event_size_is_bounded() {
        let mut e = event();
        e.properties
            .extend((0..20).map(|i| (format!("k{i}").into(), Value::Str("12345678".into()))));
        let size = estimated_size(&e);
        // A lower bound of the real size, and not a loose one.
        let real = e.to_json().len();
        assert!(size <= real && real - size < 10, "{size} vs {real}");
        let at = |max_event_bytes| Limits {
            max_event_bytes,
            ..Limits::default()
        };
        check_event(&e, &at(size)).unwrap();
        assert_eq!(
            check_event(&e, &at(size - 1)).unwrap_err().to_string(),
            format!("event is larger than {} bytes", size - 1)
        );
    }

    #[test]
    fn single_properties_can_be_checked_from_borrowed_text() {
        let l = tight();
        check_property("k", ValueRef::Str("fits"), &l).unwrap();
        check_property("k", ValueRef::Json(r#"{"a":1}"#), &l).unwrap();
        assert_eq!(
            check_property("k", ValueRef::Json("[nope]"), &l)
                .unwrap_err()
                .to_string()
                .split(':')
                .next(),
            Some("properties.k")
        );
    }
}
