//! Field paths and the records they resolve on: [`FieldPath`] (parsed
//! once), [`FieldRef`] (a borrowed, JSON-typed field value) and the
//! [`Record`] trait with its implementations for [`Event`] and JSON payloads.

use compact_str::CompactString;
use serde_json::Value as Json;

use super::FilterError;
use crate::event::{Event, Value};

const PROPERTIES_PREFIX: &str = "properties.";

/// Which field of a record a filter or projection reads, parsed once.
///
/// On an [`Event`]: `id`, `name`, `timestamp`, `distinct_id`, `session_id`
/// or `properties.<key>`, where the key is everything after the first
/// `properties.` (it may itself contain dots and `$`). On a JSON payload: a
/// dotted path into the object (`group.$current_url`, `count`, `items.0`);
/// at each level a key equal to the whole remaining path wins over splitting
/// it at a dot, so keys containing dots are reachable too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: CompactString,
    kind: PathKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Id,
    Name,
    Timestamp,
    DistinctId,
    SessionId,
    Property,
    /// Resolves only on JSON payloads.
    Other,
}

impl FieldPath {
    /// Parse a path; `at` names it in the error (e.g. `where[0].field`).
    pub fn parse(text: &str, at: &str) -> Result<FieldPath, FilterError> {
        let bad = |reason| FilterError::BadPath {
            at: at.to_owned(),
            path: text.to_owned(),
            reason,
        };
        let kind = match text {
            "" => return Err(bad("it is empty")),
            "id" => PathKind::Id,
            "name" => PathKind::Name,
            "timestamp" => PathKind::Timestamp,
            "distinct_id" => PathKind::DistinctId,
            "session_id" => PathKind::SessionId,
            "properties." => return Err(bad("the property key after `properties.` is empty")),
            t if t.starts_with(PROPERTIES_PREFIX) => PathKind::Property,
            t if t.split('.').any(str::is_empty) => {
                return Err(bad("it has an empty segment"));
            }
            _ => PathKind::Other,
        };
        Ok(FieldPath {
            text: text.into(),
            kind,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The property key, for `properties.<key>`.
    pub fn property_key(&self) -> Option<&str> {
        match self.kind {
            PathKind::Property => self.text.strip_prefix(PROPERTIES_PREFIX),
            _ => None,
        }
    }

    /// Whether the path can resolve on an [`Event`].
    pub fn is_event_field(&self) -> bool {
        self.kind != PathKind::Other
    }
}

/// A borrowed field value, as typed as JSON allows. Scalars are normalised,
/// so an event property and a JSON payload compare the same way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldRef<'a> {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A whole number that fits in 64 signed bits.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(&'a str),
    /// A nested object or array of an event property, as compact JSON text.
    JsonText(&'a str),
    /// A nested object or array inside a JSON payload.
    Node(&'a Json),
}

impl<'a> FieldRef<'a> {
    fn of_value(v: &'a Value) -> Self {
        match v {
            Value::Null => FieldRef::Null,
            Value::Bool(b) => FieldRef::Bool(*b),
            Value::Int(i) => FieldRef::Int(*i),
            Value::Float(f) => FieldRef::Float(*f),
            Value::Str(s) => FieldRef::Str(s),
            Value::Json(text) => FieldRef::JsonText(text),
        }
    }

    fn of_json(v: &'a Json) -> Self {
        match v {
            Json::Null => FieldRef::Null,
            Json::Bool(b) => FieldRef::Bool(*b),
            Json::Number(n) => n
                .as_i64()
                .map(FieldRef::Int)
                .or_else(|| n.as_f64().map(FieldRef::Float))
                .unwrap_or(FieldRef::Null),
            Json::String(s) => FieldRef::Str(s),
            Json::Array(_) | Json::Object(_) => FieldRef::Node(v),
        }
    }

    /// The value as an owned JSON value.
    pub fn to_json(&self) -> Json {
        match *self {
            FieldRef::Null => Json::Null,
            FieldRef::Bool(b) => Json::Bool(b),
            FieldRef::Int(i) => Json::from(i),
            FieldRef::Float(f) => Json::from(f),
            FieldRef::Str(s) => Json::from(s),
            FieldRef::JsonText(t) => serde_json::from_str(t).unwrap_or_else(|_| Json::from(t)),
            FieldRef::Node(n) => n.clone(),
        }
    }

    pub(super) fn number(&self) -> Option<f64> {
        match *self {
            // Rounds beyond 2^53; fine for thresholds a person types.
            FieldRef::Int(i) => Some(i as f64),
            FieldRef::Float(f) => Some(f),
            _ => None,
        }
    }
}

/// Something a [`Filter`](super::Filter) can test and a
/// [`Projection`](super::Projection) can read.
pub trait Record {
    /// The value at `path`, or `None` when it is absent.
    fn field(&self, path: &FieldPath) -> Option<FieldRef<'_>>;
    /// The name a filter's `names` are matched against.
    fn name(&self) -> Option<&str>;
}

impl Record for Event {
    fn field(&self, path: &FieldPath) -> Option<FieldRef<'_>> {
        Some(match path.kind {
            PathKind::Id => FieldRef::Str(&self.id),
            PathKind::Name => FieldRef::Str(&self.name),
            PathKind::Timestamp => FieldRef::Int(self.timestamp),
            PathKind::DistinctId => FieldRef::Str(&self.distinct_id),
            PathKind::SessionId => FieldRef::Str(self.session_id.as_deref()?),
            PathKind::Property => FieldRef::of_value(self.get(path.property_key()?)?),
            PathKind::Other => return None,
        })
    }

    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }
}

/// A JSON payload (window result, plugin notice, ...). Its name is its
/// `name` string field, or else its `kind` string field.
impl Record for Json {
    fn field(&self, path: &FieldPath) -> Option<FieldRef<'_>> {
        walk(self, path.as_str()).map(FieldRef::of_json)
    }

    fn name(&self) -> Option<&str> {
        let text = |key| self.get(key).and_then(Json::as_str);
        text("name").or_else(|| text("kind"))
    }
}

/// Resolve a dotted path in `node`; see [`FieldPath`] for the rule.
fn walk<'a>(mut node: &'a Json, mut rest: &str) -> Option<&'a Json> {
    loop {
        let (head, tail) = match rest.split_once('.') {
            Some((h, t)) => (h, Some(t)),
            None => (rest, None),
        };
        let next = match node {
            Json::Object(map) => {
                if let Some(whole) = map.get(rest) {
                    return Some(whole);
                }
                map.get(head)?
            }
            Json::Array(items) => items.get(head.parse::<usize>().ok()?)?,
            _ => return None,
        };
        match tail {
            None => return Some(next),
            Some(t) => (node, rest) = (next, t),
        }
    }
}
