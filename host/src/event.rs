//! The host's event record and its JSON form.
//!
//! Strings are [`CompactString`]s: ids, names and most property keys and
//! values fit inline (24 bytes), so decoding a plugin's edits rarely
//! allocates.

use std::fmt::Write as _;

use compact_str::CompactString;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::ser::{CompactFormatter, Formatter as _};

/// A property value, as typed as JSON allows.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A whole number that fits in 64 signed bits.
    Int(i64),
    /// Any other finite number.
    Float(f64),
    /// A string.
    Str(CompactString),
    /// A nested JSON object or array, serialized compactly.
    Json(String),
}

/// One analytics event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique id.
    pub id: CompactString,
    /// Event name, e.g. `$pageview`.
    pub name: CompactString,
    /// Milliseconds since the Unix epoch (UTC).
    pub timestamp: i64,
    /// The user.
    pub distinct_id: CompactString,
    /// The session, if any.
    pub session_id: Option<CompactString>,
    /// Properties in arrival order; keys are unique.
    pub properties: Vec<(CompactString, Value)>,
}

/// Why a JSON document is not an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    /// Not JSON at all.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// JSON, but not an object.
    #[error("an event must be a JSON object")]
    NotAnObject,
    /// A required field is absent.
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    /// A field has the wrong type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
}

impl Event {
    /// The value of property `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Set property `key`, replacing any previous value in place.
    pub fn set(&mut self, key: CompactString, value: Value) {
        match self.properties.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.properties.push((key, value)),
        }
    }

    /// Bytes the event holds, roughly: its strings and property slots.
    /// What the byte bounds of the ingest queue and the stream rings count
    /// (cheap: no allocation, one pass over the properties).
    pub fn approx_bytes(&self) -> usize {
        const EVENT: usize = std::mem::size_of::<Event>();
        const PROPERTY: usize = std::mem::size_of::<(CompactString, Value)>();
        let heap = |s: &CompactString| if s.is_heap_allocated() { s.len() } else { 0 };
        let value = |v: &Value| match v {
            Value::Str(s) => heap(s),
            Value::Json(t) => t.len(),
            _ => 0,
        };
        EVENT
            + heap(&self.id)
            + heap(&self.name)
            + heap(&self.distinct_id)
            + self.session_id.as_ref().map_or(0, heap)
            + self
                .properties
                .iter()
                .map(|(k, v)| PROPERTY + heap(k) + value(v))
                .sum::<usize>()
    }

    /// Remove property `key` if present.
    pub fn remove(&mut self, key: &str) {
        self.properties.retain(|(k, _)| k != key);
    }

    /// Parse one event from a JSON object. `fallback_id` is used when the
    /// event carries no `id`. The name may be given as `name` or `event`.
    pub fn from_json(
        text: &str,
        fallback_id: impl FnOnce() -> String,
    ) -> Result<Event, EventError> {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| EventError::Json(e.to_string()))?;
        Event::from_value(doc, fallback_id)
    }

    /// Like [`Event::from_json`], from an already parsed value.
    pub fn from_value(
        doc: serde_json::Value,
        fallback_id: impl FnOnce() -> String,
    ) -> Result<Event, EventError> {
        let serde_json::Value::Object(mut obj) = doc else {
            return Err(EventError::NotAnObject);
        };
        let mut take_str = |field: &'static str| -> Result<Option<CompactString>, EventError> {
            match obj.remove(field) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.into())),
                Some(_) => Err(EventError::WrongType {
                    field,
                    expected: "a string",
                }),
            }
        };
        let id = take_str("id")?;
        let name = match take_str("name")? {
            Some(n) => n,
            None => take_str("event")?.ok_or(EventError::Missing("name"))?,
        };
        let distinct_id = take_str("distinct_id")?.ok_or(EventError::Missing("distinct_id"))?;
        let session_id = take_str("session_id")?;
        let timestamp = match obj.remove("timestamp") {
            None => return Err(EventError::Missing("timestamp")),
            Some(serde_json::Value::Number(n)) => n.as_i64().ok_or(EventError::WrongType {
                field: "timestamp",
                expected: "whole milliseconds since the Unix epoch",
            })?,
            Some(_) => {
                return Err(EventError::WrongType {
                    field: "timestamp",
                    expected: "whole milliseconds since the Unix epoch",
                });
            }
        };
        let properties = match obj.remove("properties") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| (CompactString::from(k), Value::from(v)))
                .collect(),
            Some(_) => {
                return Err(EventError::WrongType {
                    field: "properties",
                    expected: "an object",
                });
            }
        };
        Ok(Event {
            id: id.unwrap_or_else(|| fallback_id().into()),
            name,
            timestamp,
            distinct_id,
            session_id,
            properties,
        })
    }

    /// The event as one line of JSON.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(256);
        self.write_json(&mut out);
        out
    }

    /// Append the event's compact JSON to `out`: byte for byte what its
    /// [`Serialize`] impl makes through `serde_json::to_writer`, written
    /// directly (no serializer state machine, strings scanned eight bytes at
    /// a time), since every event published is serialized once for its
    /// subscribers' frames.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"id\":");
        write_json_str(out, &self.id);
        out.push_str(",\"name\":");
        write_json_str(out, &self.name);
        out.push_str(",\"timestamp\":");
        push_number(out, |w| CompactFormatter.write_i64(w, self.timestamp));
        out.push_str(",\"distinct_id\":");
        write_json_str(out, &self.distinct_id);
        if let Some(sid) = &self.session_id {
            out.push_str(",\"session_id\":");
            write_json_str(out, sid);
        }
        out.push_str(",\"properties\":{");
        for (i, (k, v)) in self.properties.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_json_str(out, k);
            out.push(':');
            v.write_json(out);
        }
        out.push_str("}}");
    }
}

impl Value {
    /// Append the value's compact JSON to `out`, as its [`Serialize`] impl
    /// writes it through serde_json.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => push_number(out, |w| CompactFormatter.write_i64(w, *i)),
            // serde_json writes non-finite floats as null.
            Value::Float(f) if f.is_finite() => {
                push_number(out, |w| CompactFormatter.write_f64(w, *f));
            }
            Value::Float(_) => out.push_str("null"),
            Value::Str(v) => write_json_str(out, v),
            Value::Json(text) => match serde_json::from_str::<serde_json::Value>(text) {
                // `Display` of a JSON value is its compact form.
                Ok(v) => {
                    let _ = write!(out, "{v}");
                }
                Err(_) => write_json_str(out, text),
            },
        }
    }
}

/// Append a number written by serde_json's own formatter (so the text is
/// exactly serde_json's), through a stack buffer rather than an allocation.
pub(crate) fn push_number(
    out: &mut String,
    write: impl FnOnce(&mut std::io::Cursor<&mut [u8]>) -> std::io::Result<()>,
) {
    // The longest f64 or i64 text is under 30 bytes.
    let mut buf = [0u8; 40];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let ok = write(&mut cursor).is_ok();
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    if let (true, Some(Ok(text))) = (ok, buf.get(..len).map(std::str::from_utf8)) {
        out.push_str(text);
    }
}

/// Eight copies of a byte, for the word-at-a-time scan.
const fn splat(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// The high bit of every byte of `w` that is zero; any bits set above the
/// lowest one may be false positives, the lowest is always exact.
const fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(splat(1)) & !w & splat(0x80)
}

/// Index of the first byte of `bytes` JSON needs escaped (`"`, `\\` or a
/// control character below 0x20), or `bytes.len()`.
pub(crate) fn first_to_escape(bytes: &[u8]) -> usize {
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        // Bytes below 0x20 (bytes >= 0x80 are excluded by `!w`), quotes,
        // backslashes.
        let hits = (w.wrapping_sub(splat(0x20)) & !w & splat(0x80))
            | zero_bytes(w ^ splat(b'"'))
            | zero_bytes(w ^ splat(b'\\'));
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    for &b in chunks.remainder() {
        if b < 0x20 || b == b'"' || b == b'\\' {
            return at;
        }
        at += 1;
    }
    at
}

/// Append `s` as a JSON string literal, escaped as serde_json escapes it:
/// `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control characters
/// as `\u00XX` (lower-case hex), everything else as is.
pub(crate) fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    write_json_str_body(out, s);
    out.push('"');
}

/// [`write_json_str`] without the quotes: `s` escaped, to go inside a
/// literal written in parts.
pub(crate) fn write_json_str_body(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    loop {
        let at = start + first_to_escape(bytes.get(start..).unwrap_or_default());
        // `at` is at an ASCII byte or the end: a char boundary.
        out.push_str(s.get(start..at).unwrap_or_default());
        let Some(&b) = bytes.get(at) else { break };
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        start = at + 1;
    }
}

impl Value {
    /// The value as a JSON value (nested JSON parsed back; text that does
    /// not parse stays a string, as [`Serialize`] does).
    pub fn to_json_value(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => J::from(*f),
            Value::Str(s) => J::from(s.as_str()),
            Value::Json(text) => {
                serde_json::from_str(text).unwrap_or_else(|_| J::from(text.as_str()))
            }
        }
    }

    /// The value as a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        use serde_json::Value as J;
        match v {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => n.as_f64().map_or(Value::Null, Value::Float),
            },
            J::String(s) => Value::Str(s.into()),
            other => Value::Json(other.to_string()),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Json(text) => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(v) => v.serialize(s),
                Err(_) => s.serialize_str(text),
            },
        }
    }
}

struct Properties<'a>(&'a [(CompactString, Value)]);

impl Serialize for Properties<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k.as_str(), v)?;
        }
        map.end()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", self.id.as_str())?;
        map.serialize_entry("name", self.name.as_str())?;
        map.serialize_entry("timestamp", &self.timestamp)?;
        map.serialize_entry("distinct_id", self.distinct_id.as_str())?;
        if let Some(sid) = &self.session_id {
            map.serialize_entry("session_id", sid.as_str())?;
        }
        map.serialize_entry("properties", &Properties(&self.properties))?;
        map.end()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_types_and_order() {
        let line = r#"{"id":"e1","event":"$pageview","timestamp":1700000000000,"distinct_id":"u1","properties":{"b":1,"a":"x","n":{"k":[1,2]},"f":1.5,"z":null,"t":true}}"#;
        let e = Event::from_json(line, || "unused".into()).unwrap();
        assert_eq!(e.name, "$pageview");
        assert_eq!(e.get("b"), Some(&Value::Int(1)));
        assert_eq!(e.get("n"), Some(&Value::Json(r#"{"k":[1,2]}"#.into())));
        let back: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(back["properties"]["n"]["k"][1], 2);
        assert_eq!(back["name"], "$pageview");
        assert_eq!(back["properties"]["f"], 1.5);
    }

    /// Events whose JSON exercises every branch of the hand-written writer.
    fn tricky_events() -> Vec<Event> {
        let mut all_bytes = String::new();
        for b in 0u8..0x80 {
            all_bytes.push(char::from(b));
        }
        let texts = [
            String::new(),
            "plain".to_owned(),
            all_bytes.clone(),
            "é\u{2028}ü 😀 \"quoted\" back\\slash\n".to_owned(),
            "x".repeat(7) + "\"" + &"y".repeat(9),
            "\u{7f}\u{1f}\u{0}".to_owned(),
        ];
        let mut events = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            events.push(Event {
                id: t.as_str().into(),
                name: format!("{t}{i}").into(),
                timestamp: [0, -1, i64::MIN, i64::MAX, 1_700_000_000_000, 42][i % 6],
                distinct_id: t.chars().rev().collect::<String>().into(),
                session_id: (i % 2 == 0).then(|| t.as_str().into()),
                properties: vec![
                    (t.as_str().into(), Value::Str(t.as_str().into())),
                    ("n".into(), Value::Null),
                    ("b".into(), Value::Bool(i % 2 == 0)),
                    ("i".into(), Value::Int(-(i as i64) * 1_000_003)),
                    (
                        "f".into(),
                        Value::Float([1.5, -0.0, 1e300, 3.0, f64::NAN, f64::INFINITY][i]),
                    ),
                    ("small".into(), Value::Float(1e-7 * i as f64)),
                    (
                        "j".into(),
                        Value::Json(r#"{"k":[1,2.5,"\u0001"],"z":null}"#.into()),
                    ),
                    ("bad_json".into(), Value::Json(t.clone())),
                ],
            });
        }
        events.push(Event {
            id: "e".into(),
            name: "n".into(),
            timestamp: 1,
            distinct_id: "u".into(),
            session_id: None,
            properties: Vec::new(),
        });
        events
    }

    #[test]
    fn hand_written_json_is_byte_for_byte_serde_json() {
        for e in tricky_events() {
            let (ours, theirs) = (e.to_json(), serde_json::to_string(&e).unwrap());
            let at = ours
                .bytes()
                .zip(theirs.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            assert_eq!(
                ours,
                theirs,
                "first difference at {at}: {:?}",
                &ours[at.saturating_sub(20)..]
            );
        }
    }

    #[test]
    fn escape_scan_finds_the_first_special_byte_at_every_offset() {
        for special in [b'"', b'\\', 0, 0x1f, b'\n'] {
            for len in 0..24 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    // Non-ASCII bytes around it must not count.
                    if at > 0 {
                        bytes[at - 1] = 0xc3;
                    }
                    bytes[at] = special;
                    assert_eq!(first_to_escape(&bytes), at, "{special} at {at} of {len}");
                }
                assert_eq!(first_to_escape(&vec![0xa9; len]), len);
                assert_eq!(first_to_escape(&vec![0x7f; len]), len);
                assert_eq!(first_to_escape(&vec![b' '; len]), len);
            }
        }
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let no_ts = Event::from_json(r#"{"name":"a","distinct_id":"u"}"#, String::new);
        assert_eq!(no_ts, Err(EventError::Missing("timestamp")));
        let bad = Event::from_json(r#"{"name":"a","distinct_id":5,"timestamp":1}"#, String::new);
        assert!(matches!(
            bad,
            Err(EventError::WrongType {
                field: "distinct_id",
                ..
            })
        ));
        let id = Event::from_json(r#"{"name":"a","distinct_id":"u","timestamp":1}"#, || {
            "gen-1".into()
        });
        assert_eq!(id.unwrap().id, "gen-1");
    }
}
