//! The host's event record and its JSON form.
//!
//! Strings are [`CompactString`]s: ids, names and most property keys and
//! values fit inline (24 bytes), so decoding a plugin's edits rarely
//! allocates.

use compact_str::CompactString;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

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
        // Serializing plain data into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
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
