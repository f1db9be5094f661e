//! Subscription filters and projections: which messages a subscriber wants,
//! and which of their fields it wants to see.
//!
//! A [`Filter`] is a set of event names (any of) and property predicates (all
//! of). It runs for every message for every subscriber, so everything is
//! parsed once at construction and [`Filter::matches`] does not allocate.
//!
//! Filters apply to any [`Record`]: an [`Event`], or a JSON payload such as a
//! window result or a plugin notice. Both forms a client can send are parsed
//! here: the JSON object of a WebSocket `subscribe` message
//! ([`Filter::from_json`]) and the query string of an SSE request
//! ([`Filter::from_query`]). Every error is a [`FilterError`] whose message
//! names the offending entry; clients see it verbatim.
//!
//! Comparison rules:
//!
//! - `equals` / `not_equals` compare JSON-typed values: numbers by value
//!   (`10` equals `10.0`), strings only with strings (`"10"` is not `10`).
//!   Nested objects and arrays compare structurally inside JSON payloads, and
//!   by their compact JSON text for event properties (whose nested values are
//!   stored as text), where key order therefore matters. `not_equals` is true
//!   when the field is missing.
//! - `contains`: a string field contains the substring; a nested object or
//!   array contains it when its compact JSON text does. Other types never do.
//! - `gt` / `lt`: numeric fields only; anything else (or missing) is false.
//! - `is_set`: present and not null; `is_not_set`: missing or null.

use std::io;

use compact_str::CompactString;
use serde_json::{Map, Value as Json};

use crate::event::{Event, Value};

/// Most predicates in one filter. A filter runs for every message for every
/// subscriber, so its cost must stay bounded; 64 is several times the longest
/// hand-written dashboard filter we expect (about a dozen conditions).
pub const MAX_PREDICATES: usize = 64;

/// Most event names in one filter: enough to list a whole tracking plan
/// (typically tens to a couple of hundred events), while the sorted lookup
/// stays within 8 comparisons.
pub const MAX_NAMES: usize = 256;

/// Most fields in one projection, the same bound as [`MAX_PREDICATES`] for
/// the same reason: it runs per message per subscriber.
pub const MAX_FIELDS: usize = MAX_PREDICATES;

/// The operator names, in the order error messages list them.
const OP_NAMES: &str = "equals, not_equals, contains, gt, lt, is_set, is_not_set";

/// The paths that resolve on an [`Event`], as error messages list them.
const EVENT_FIELDS: &str = "id, name, timestamp, distinct_id, session_id, properties.<key>";

const PROPERTIES_PREFIX: &str = "properties.";

/// Why a filter or projection sent by a client is not valid. The message
/// names the offending entry (`where[1].op`, `names[3]`, ...) and what is
/// allowed; it is meant to be shown to the client verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The filter object has a key other than `names` and `where`.
    #[error("unknown field `{0}`; filter fields are names, where")]
    UnknownFilterField(String),
    /// A predicate object has a key other than `field`, `op` and `value`.
    #[error("{at}: unknown field `{field}`; predicate fields are field, op, value")]
    UnknownPredicateField {
        /// Which predicate, e.g. `where[0]`.
        at: String,
        /// The unknown key.
        field: String,
    },
    /// A required key is absent.
    #[error("{at}: missing `{field}`")]
    Missing {
        /// Where, e.g. `where[0]`.
        at: String,
        /// The missing key.
        field: &'static str,
    },
    /// A value has the wrong JSON type.
    #[error("{at}: expected {expected}")]
    WrongType {
        /// Where, e.g. `names[2]`.
        at: String,
        /// What is allowed there.
        expected: &'static str,
    },
    /// The operator is not one of the known ones.
    #[error("{at}: unknown operator `{op}`; expected one of {OP_NAMES}")]
    UnknownOp {
        /// Where, e.g. `where[1].op`.
        at: String,
        /// The operator as given.
        op: String,
    },
    /// The operator needs a value of another type (or a value at all).
    #[error("{at}: {op} needs {needs}")]
    BadValue {
        /// Where, e.g. `where[0].value`.
        at: String,
        /// The operator.
        op: &'static str,
        /// What it needs, e.g. "a number".
        needs: &'static str,
    },
    /// The operator takes no value but one was given.
    #[error("{at}: {op} takes no value")]
    UnexpectedValue {
        /// Where, e.g. `where[2].value`.
        at: String,
        /// The operator.
        op: &'static str,
    },
    /// A field path is malformed.
    #[error("{at}: invalid field path `{path}`: {reason}")]
    BadPath {
        /// Where, e.g. `where[0].field`.
        at: String,
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A query-string predicate is not `field:op` or `field:op:value`.
    #[error("{at}: `{text}` is not field:op or field:op:value")]
    BadWhere {
        /// Which one, e.g. `where[0]`.
        at: String,
        /// The text as given.
        text: String,
    },
    /// Too many names, predicates or fields.
    #[error("{what}: {count} given, at most {max} allowed")]
    TooMany {
        /// `names`, `where` or `fields`.
        what: &'static str,
        /// How many were given.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A path that can never resolve on an event, for a channel of events.
    #[error("{at}: `{path}` is not an event field; event fields are {EVENT_FIELDS}")]
    NotEventField {
        /// Where, e.g. `where[0].field`.
        at: String,
        /// The path as given.
        path: String,
    },
}

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

    fn number(&self) -> Option<f64> {
        match *self {
            // Rounds beyond 2^53; fine for thresholds a person types.
            FieldRef::Int(i) => Some(i as f64),
            FieldRef::Float(f) => Some(f),
            _ => None,
        }
    }
}

/// Something a [`Filter`] can test and a [`Projection`] can read.
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

/// A comparison applied to one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// The field equals the value (JSON-typed; numbers by value).
    Equals(Json),
    /// The field is missing or does not equal the value.
    NotEquals(Json),
    /// The field's text contains the substring.
    Contains(String),
    /// The field is a number greater than this.
    Gt(f64),
    /// The field is a number less than this.
    Lt(f64),
    /// The field is present and not null.
    IsSet,
    /// The field is missing or null.
    IsNotSet,
}

/// One condition of a filter's `where`.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    /// The field tested.
    pub path: FieldPath,
    /// The test.
    pub op: Op,
}

/// A predicate with what matching needs precomputed, so matching does not
/// allocate.
#[derive(Debug, Clone)]
struct Compiled {
    predicate: Predicate,
    /// For equality with an object or array: its compact text, compared with
    /// event properties' nested JSON text.
    compound_text: Option<String>,
    /// For `contains`: the Knuth–Morris–Pratt failure table of the needle, to
    /// search nested JSON payload values while serializing them.
    kmp: Vec<usize>,
}

impl Compiled {
    fn new(predicate: Predicate) -> Compiled {
        let compound_text = match &predicate.op {
            Op::Equals(v @ (Json::Array(_) | Json::Object(_)))
            | Op::NotEquals(v @ (Json::Array(_) | Json::Object(_))) => Some(v.to_string()),
            _ => None,
        };
        let kmp = match &predicate.op {
            Op::Contains(needle) => kmp_table(needle.as_bytes()),
            _ => Vec::new(),
        };
        Compiled {
            predicate,
            compound_text,
            kmp,
        }
    }

    fn test(&self, r: &(impl Record + ?Sized)) -> bool {
        let field = r.field(&self.predicate.path);
        match (&self.predicate.op, field) {
            (Op::Equals(v), Some(f)) => self.equals(f, v),
            (Op::Equals(_), None) => false,
            (Op::NotEquals(v), Some(f)) => !self.equals(f, v),
            (Op::NotEquals(_), None) => true,
            (Op::Contains(needle), Some(f)) => match f {
                FieldRef::Str(s) | FieldRef::JsonText(s) => s.contains(needle.as_str()),
                FieldRef::Node(n) => node_contains(n, needle.as_bytes(), &self.kmp),
                _ => false,
            },
            (Op::Gt(t), Some(f)) => f.number().is_some_and(|x| x > *t),
            (Op::Lt(t), Some(f)) => f.number().is_some_and(|x| x < *t),
            (Op::Contains(_) | Op::Gt(_) | Op::Lt(_), None) => false,
            (Op::IsSet, f) => !matches!(f, None | Some(FieldRef::Null)),
            (Op::IsNotSet, f) => matches!(f, None | Some(FieldRef::Null)),
        }
    }

    fn equals(&self, field: FieldRef<'_>, expected: &Json) -> bool {
        match (field, expected) {
            (FieldRef::Null, Json::Null) => true,
            (FieldRef::Bool(a), Json::Bool(b)) => a == *b,
            (FieldRef::Int(a), Json::Number(n)) if n.as_i64().is_some() => n.as_i64() == Some(a),
            (FieldRef::Int(_) | FieldRef::Float(_), Json::Number(n)) => {
                field.number() == n.as_f64()
            }
            (FieldRef::Str(a), Json::String(b)) => a == b,
            (FieldRef::JsonText(t), _) => self.compound_text.as_deref() == Some(t),
            (FieldRef::Node(n), e @ (Json::Array(_) | Json::Object(_))) => n == e,
            _ => false,
        }
    }
}

fn kmp_table(p: &[u8]) -> Vec<usize> {
    let mut fail = vec![0; p.len()];
    let mut k = 0;
    for i in 1..p.len() {
        while k > 0 && p[i] != p[k] {
            k = fail[k - 1];
        }
        if p[i] == p[k] {
            k += 1;
        }
        fail[i] = k;
    }
    fail
}

/// Whether the compact JSON text of `node` contains `needle`, found by
/// streaming the serialization through a KMP matcher instead of building the
/// text.
fn node_contains(node: &Json, needle: &[u8], fail: &[usize]) -> bool {
    struct Finder<'a> {
        needle: &'a [u8],
        fail: &'a [usize],
        matched: usize,
    }
    impl io::Write for Finder<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            for &b in buf {
                if self.matched == self.needle.len() {
                    break;
                }
                while self.matched > 0 && self.needle[self.matched] != b {
                    self.matched = self.fail[self.matched - 1];
                }
                if self.needle[self.matched] == b {
                    self.matched += 1;
                }
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    if needle.is_empty() {
        return true;
    }
    let mut finder = Finder {
        needle,
        fail,
        matched: 0,
    };
    // The writer never fails, and serializing a JSON value cannot either.
    let _ = serde_json::to_writer(&mut finder, node);
    finder.matched == needle.len()
}

/// Which messages a subscriber wants: any of `names` (when given) and all of
/// the predicates.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Sorted and deduplicated, for a binary search.
    names: Vec<CompactString>,
    predicates: Vec<Compiled>,
}

impl Filter {
    /// A filter from its parts, within [`MAX_NAMES`] and [`MAX_PREDICATES`].
    pub fn new(
        names: Vec<CompactString>,
        predicates: Vec<Predicate>,
    ) -> Result<Filter, FilterError> {
        check_count("names", names.len(), MAX_NAMES)?;
        check_count("where", predicates.len(), MAX_PREDICATES)?;
        let mut names = names;
        names.sort_unstable();
        names.dedup();
        Ok(Filter {
            names,
            predicates: predicates.into_iter().map(Compiled::new).collect(),
        })
    }

    /// Whether `r` passes. Does not allocate.
    pub fn matches(&self, r: &(impl Record + ?Sized)) -> bool {
        if !self.names.is_empty() {
            let Some(name) = r.name() else { return false };
            if self
                .names
                .binary_search_by(|n| n.as_str().cmp(name))
                .is_err()
            {
                return false;
            }
        }
        self.predicates.iter().all(|p| p.test(r))
    }

    /// Whether the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.predicates.is_empty()
    }

    /// The names, sorted.
    pub fn names(&self) -> &[CompactString] {
        &self.names
    }

    /// The predicates, in the order given.
    pub fn predicates(&self) -> impl Iterator<Item = &Predicate> {
        self.predicates.iter().map(|c| &c.predicate)
    }

    /// Check that every predicate's path can resolve on an event, for a
    /// channel of events (on which another path would silently never match).
    pub fn check_event_fields(&self) -> Result<(), FilterError> {
        check_event_paths(self.predicates().map(|p| &p.path), |i| {
            format!("where[{i}].field")
        })
    }

    /// Parse the JSON form: `{"names": [...], "where": [{"field", "op",
    /// "value"}, ...]}`, both keys optional; `null` is the empty filter.
    pub fn from_json(v: &Json) -> Result<Filter, FilterError> {
        let obj = match v {
            Json::Null => return Ok(Filter::default()),
            Json::Object(obj) => obj,
            _ => return Err(wrong_type("filter", "an object")),
        };
        let (mut names, mut predicates) = (Vec::new(), Vec::new());
        for (key, value) in obj {
            match key.as_str() {
                "names" => names = parse_names(value)?,
                "where" => predicates = parse_where(value)?,
                other => return Err(FilterError::UnknownFilterField(other.to_owned())),
            }
        }
        Filter::new(names, predicates)
    }

    /// Parse the query-string form: `names=a,b` (and repeatable `name=a`,
    /// for names containing commas) and repeatable `where=field:op[:value]`.
    /// The value, everything after the second `:`, is read as JSON when it
    /// parses (`10`, `true`, `"x"`) and as a plain string otherwise. Other
    /// keys are ignored, so the caller can pass the whole query string.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Filter, FilterError> {
        let (mut names, mut predicates) = (Vec::new(), Vec::new());
        for (key, value) in pairs {
            match key.as_str() {
                "names" => names.extend(
                    value
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .map(CompactString::from),
                ),
                "name" if !value.is_empty() => names.push(CompactString::from(value.as_str())),
                "where" => predicates.push(parse_where_text(predicates.len(), value)?),
                _ => {}
            }
            check_count("names", names.len(), MAX_NAMES)?;
            check_count("where", predicates.len(), MAX_PREDICATES)?;
        }
        Filter::new(names, predicates)
    }
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<(), FilterError> {
    if count > max {
        return Err(FilterError::TooMany { what, count, max });
    }
    Ok(())
}

fn check_event_paths<'p>(
    paths: impl Iterator<Item = &'p FieldPath>,
    at: impl Fn(usize) -> String,
) -> Result<(), FilterError> {
    match paths.enumerate().find(|(_, p)| !p.is_event_field()) {
        Some((i, p)) => Err(FilterError::NotEventField {
            at: at(i),
            path: p.as_str().to_owned(),
        }),
        None => Ok(()),
    }
}

fn wrong_type(at: impl Into<String>, expected: &'static str) -> FilterError {
    FilterError::WrongType {
        at: at.into(),
        expected,
    }
}

fn parse_names(v: &Json) -> Result<Vec<CompactString>, FilterError> {
    let Json::Array(items) = v else {
        return Err(wrong_type("names", "an array of event names"));
    };
    check_count("names", items.len(), MAX_NAMES)?;
    items
        .iter()
        .enumerate()
        .map(|(i, n)| {
            n.as_str()
                .map(CompactString::from)
                .ok_or_else(|| wrong_type(format!("names[{i}]"), "a string"))
        })
        .collect()
}

fn parse_where(v: &Json) -> Result<Vec<Predicate>, FilterError> {
    let Json::Array(items) = v else {
        return Err(wrong_type("where", "an array of predicates"));
    };
    check_count("where", items.len(), MAX_PREDICATES)?;
    items
        .iter()
        .enumerate()
        .map(|(i, p)| parse_predicate(i, p))
        .collect()
}

fn parse_predicate(i: usize, v: &Json) -> Result<Predicate, FilterError> {
    let at = format!("where[{i}]");
    let Json::Object(obj) = v else {
        return Err(wrong_type(
            at,
            "an object with field, op and optionally value",
        ));
    };
    if let Some(key) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "field" | "op" | "value"))
    {
        return Err(FilterError::UnknownPredicateField {
            at,
            field: key.clone(),
        });
    }
    let text = |key: &'static str| match obj.get(key) {
        None => Err(FilterError::Missing {
            at: at.clone(),
            field: key,
        }),
        Some(Json::String(s)) => Ok(s.as_str()),
        Some(_) => Err(wrong_type(format!("{at}.{key}"), "a string")),
    };
    let path = FieldPath::parse(text("field")?, &format!("{at}.field"))?;
    let kind = OpKind::parse(text("op")?, &format!("{at}.op"))?;
    let value_at = format!("{at}.value");
    let needs = |needs| FilterError::BadValue {
        at: value_at.clone(),
        op: kind.name(),
        needs,
    };
    let op = match (kind, obj.get("value")) {
        (OpKind::IsSet | OpKind::IsNotSet, None | Some(Json::Null)) => kind.without_value(),
        (OpKind::IsSet | OpKind::IsNotSet, Some(_)) => {
            return Err(FilterError::UnexpectedValue {
                at: value_at,
                op: kind.name(),
            });
        }
        (OpKind::Equals, Some(v)) => Op::Equals(v.clone()),
        (OpKind::NotEquals, Some(v)) => Op::NotEquals(v.clone()),
        (OpKind::Equals | OpKind::NotEquals, None) => return Err(needs("a value")),
        (OpKind::Contains, Some(Json::String(s))) => Op::Contains(s.clone()),
        (OpKind::Contains, _) => return Err(needs("a string")),
        (OpKind::Gt | OpKind::Lt, v) => {
            kind.with_number(v.and_then(Json::as_f64).ok_or_else(|| needs("a number"))?)
        }
    };
    Ok(Predicate { path, op })
}

fn parse_where_text(i: usize, text: &str) -> Result<Predicate, FilterError> {
    let at = format!("where[{i}]");
    let mut parts = text.splitn(3, ':');
    let (Some(field), Some(op)) = (parts.next(), parts.next()) else {
        return Err(FilterError::BadWhere {
            at,
            text: text.to_owned(),
        });
    };
    let raw = parts.next();
    let path = FieldPath::parse(field, &format!("{at}.field"))?;
    let kind = OpKind::parse(op, &format!("{at}.op"))?;
    let value_at = format!("{at}.value");
    let needs = |needs| FilterError::BadValue {
        at: value_at.clone(),
        op: kind.name(),
        needs,
    };
    let as_json = |raw: &str| serde_json::from_str::<Json>(raw).unwrap_or_else(|_| Json::from(raw));
    let op = match (kind, raw) {
        (OpKind::IsSet | OpKind::IsNotSet, None) => kind.without_value(),
        (OpKind::IsSet | OpKind::IsNotSet, Some(_)) => {
            return Err(FilterError::UnexpectedValue {
                at: value_at,
                op: kind.name(),
            });
        }
        (_, None) => {
            return Err(needs(if kind.numeric() {
                "a number"
            } else {
                "a value"
            }));
        }
        (OpKind::Equals, Some(raw)) => Op::Equals(as_json(raw)),
        (OpKind::NotEquals, Some(raw)) => Op::NotEquals(as_json(raw)),
        // A JSON string is unquoted; anything else is the literal text.
        (OpKind::Contains, Some(raw)) => Op::Contains(match as_json(raw) {
            Json::String(s) => s,
            _ => raw.to_owned(),
        }),
        (OpKind::Gt | OpKind::Lt, Some(raw)) => {
            kind.with_number(as_json(raw).as_f64().ok_or_else(|| needs("a number"))?)
        }
    };
    Ok(Predicate { path, op })
}

#[derive(Debug, Clone, Copy)]
enum OpKind {
    Equals,
    NotEquals,
    Contains,
    Gt,
    Lt,
    IsSet,
    IsNotSet,
}

impl OpKind {
    const ALL: [OpKind; 7] = [
        OpKind::Equals,
        OpKind::NotEquals,
        OpKind::Contains,
        OpKind::Gt,
        OpKind::Lt,
        OpKind::IsSet,
        OpKind::IsNotSet,
    ];

    fn parse(text: &str, at: &str) -> Result<OpKind, FilterError> {
        OpKind::ALL
            .into_iter()
            .find(|k| k.name() == text)
            .ok_or_else(|| FilterError::UnknownOp {
                at: at.to_owned(),
                op: text.to_owned(),
            })
    }

    fn name(self) -> &'static str {
        match self {
            OpKind::Equals => "equals",
            OpKind::NotEquals => "not_equals",
            OpKind::Contains => "contains",
            OpKind::Gt => "gt",
            OpKind::Lt => "lt",
            OpKind::IsSet => "is_set",
            OpKind::IsNotSet => "is_not_set",
        }
    }

    fn numeric(self) -> bool {
        matches!(self, OpKind::Gt | OpKind::Lt)
    }

    fn without_value(self) -> Op {
        match self {
            OpKind::IsNotSet => Op::IsNotSet,
            _ => Op::IsSet,
        }
    }

    fn with_number(self, n: f64) -> Op {
        match self {
            OpKind::Lt => Op::Lt(n),
            _ => Op::Gt(n),
        }
    }
}

/// Which fields of a message a subscriber wants to see. Empty means the
/// whole message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Projection {
    fields: Vec<FieldPath>,
}

impl Projection {
    /// A projection of these fields, within [`MAX_FIELDS`].
    pub fn new(fields: Vec<FieldPath>) -> Result<Projection, FilterError> {
        check_count("fields", fields.len(), MAX_FIELDS)?;
        Ok(Projection { fields })
    }

    /// Parse the JSON form, an array of paths; `null` is the empty projection.
    pub fn from_json(v: &Json) -> Result<Projection, FilterError> {
        let items = match v {
            Json::Null => return Ok(Projection::default()),
            Json::Array(items) => items,
            _ => return Err(wrong_type("fields", "an array of field paths")),
        };
        check_count("fields", items.len(), MAX_FIELDS)?;
        let fields = items
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let at = format!("fields[{i}]");
                let text = f
                    .as_str()
                    .ok_or_else(|| wrong_type(at.clone(), "a string"))?;
                FieldPath::parse(text, &at)
            })
            .collect::<Result<_, _>>()?;
        Projection::new(fields)
    }

    /// Parse the query-string form, comma-separated paths (`fields=name,
    /// properties.$browser`); empty entries are skipped.
    pub fn from_query(value: &str) -> Result<Projection, FilterError> {
        let fields = value
            .split(',')
            .filter(|f| !f.is_empty())
            .map(|f| FieldPath::parse(f, "fields"))
            .collect::<Result<Vec<_>, _>>()?;
        Projection::new(fields)
    }

    /// Whether every field is shown.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The fields, in the order given.
    pub fn fields(&self) -> &[FieldPath] {
        &self.fields
    }

    /// Check that every path can resolve on an event, as
    /// [`Filter::check_event_fields`].
    pub fn check_event_fields(&self) -> Result<(), FilterError> {
        check_event_paths(self.fields.iter(), |i| format!("fields[{i}]"))
    }

    /// A JSON object with only the projected fields that are present.
    /// `properties.<key>` nests as `{"properties": {"<key>": ...}}` (the key
    /// kept whole); other dotted paths nest at every dot.
    pub fn apply(&self, r: &(impl Record + ?Sized)) -> Json {
        let mut out = Map::new();
        for path in &self.fields {
            let Some(value) = r.field(path) else { continue };
            let value = value.to_json();
            match path.property_key() {
                Some(key) => insert(&mut out, ["properties", key].into_iter(), value),
                None => insert(&mut out, path.as_str().split('.'), value),
            }
        }
        Json::Object(out)
    }
}

/// Insert `value` at the nested position `keys`, creating objects on the way;
/// skipped when a non-object is in the way (`count` and `count.x` both
/// projected).
fn insert<'k>(
    mut map: &mut Map<String, Json>,
    mut keys: impl Iterator<Item = &'k str>,
    value: Json,
) {
    let Some(mut key) = keys.next() else { return };
    for next in keys {
        let slot = map.entry(key).or_insert_with(|| Json::Object(Map::new()));
        let Json::Object(inner) = slot else { return };
        (map, key) = (inner, next);
    }
    map.insert(key.to_owned(), value);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Event {
        Event::from_value(
            json!({"id": "e1", "name": "$pageview", "timestamp": 1_700_000_000_000i64,
                   "distinct_id": "u1", "properties": {
                       "$browser": "Chrome", "price": 10, "ratio": 2.5, "flag": true,
                       "none": null, "tags": ["a", "b"], "a.b": "dotted", "count": "10"}}),
            String::new,
        )
        .unwrap()
    }

    fn one(field: &str, op: &str, value: Option<Json>) -> Filter {
        let mut p = json!({"field": field, "op": op});
        if let Some(v) = value {
            p["value"] = v;
        }
        Filter::from_json(&json!({"where": [p]})).unwrap()
    }

    fn err(v: Json) -> String {
        Filter::from_json(&v).unwrap_err().to_string()
    }

    #[test]
    fn equals_compares_json_types() {
        let e = event();
        let yes = |f: &str, v: Json| one(f, "equals", Some(v)).matches(&e);
        assert!(yes("properties.$browser", json!("Chrome")));
        assert!(!yes("properties.$browser", json!("chrome")));
        assert!(yes("properties.price", json!(10)));
        assert!(
            yes("properties.price", json!(10.0)),
            "Int 10 equals Float 10.0"
        );
        assert!(
            !yes("properties.price", json!("10")),
            "a string is not a number"
        );
        assert!(
            !yes("properties.count", json!(10)),
            "a number is not a string"
        );
        assert!(yes("properties.ratio", json!(2.5)));
        assert!(yes("properties.flag", json!(true)));
        assert!(yes("properties.none", Json::Null));
        assert!(
            !yes("properties.missing", Json::Null),
            "missing is not null"
        );
        assert!(yes("properties.tags", json!(["a", "b"])));
        assert!(!yes("properties.tags", json!(["b", "a"])));
        assert!(
            yes("properties.a.b", json!("dotted")),
            "the key keeps its dot"
        );
        assert!(yes("name", json!("$pageview")));
        assert!(yes("timestamp", json!(1_700_000_000_000i64)));
        assert!(!yes("session_id", json!("s")), "absent session");
    }

    #[test]
    fn not_equals_is_true_when_missing() {
        let e = event();
        let ne = |f: &str, v: Json| one(f, "not_equals", Some(v)).matches(&e);
        assert!(ne("properties.missing", json!("x")));
        assert!(ne("properties.$browser", json!("Firefox")));
        assert!(!ne("properties.price", json!(10.0)));
        assert!(ne("properties.price", json!("10")));
    }

    #[test]
    fn contains_gt_lt_and_set() {
        let e = event();
        let t = |f: &str, op: &str, v: Option<Json>| one(f, op, v).matches(&e);
        assert!(t("properties.$browser", "contains", Some(json!("hro"))));
        assert!(!t("properties.$browser", "contains", Some(json!("x"))));
        assert!(
            t("properties.tags", "contains", Some(json!("\"b\""))),
            "JSON text"
        );
        assert!(
            !t("properties.price", "contains", Some(json!("1"))),
            "numbers are not text"
        );
        assert!(!t("properties.missing", "contains", Some(json!(""))));
        assert!(t("properties.price", "gt", Some(json!(9.5))));
        assert!(!t("properties.price", "gt", Some(json!(10))));
        assert!(t("properties.ratio", "lt", Some(json!(3))));
        assert!(
            !t("properties.count", "gt", Some(json!(1))),
            "a numeric string is not a number"
        );
        assert!(!t("properties.missing", "lt", Some(json!(1))));
        assert!(t("properties.flag", "is_set", None));
        assert!(!t("properties.none", "is_set", None), "null is not set");
        assert!(!t("properties.missing", "is_set", None));
        assert!(t("properties.none", "is_not_set", None));
        assert!(t("properties.missing", "is_not_set", None));
        assert!(!t("distinct_id", "is_not_set", None));
    }

    #[test]
    fn names_any_of_and_predicates_all_of() {
        let e = event();
        let f = Filter::from_json(&json!({"names": ["signup", "$pageview"], "where": [
            {"field": "properties.$browser", "op": "equals", "value": "Chrome"},
            {"field": "properties.price", "op": "gt", "value": 5}]}))
        .unwrap();
        assert!(f.matches(&e));
        let f = Filter::from_json(&json!({"names": ["signup"]})).unwrap();
        assert!(!f.matches(&e));
        let f = Filter::from_json(&json!({"where": [
            {"field": "properties.$browser", "op": "equals", "value": "Chrome"},
            {"field": "properties.price", "op": "lt", "value": 5}]}))
        .unwrap();
        assert!(!f.matches(&e));
        assert!(Filter::from_json(&json!({})).unwrap().is_empty());
        assert!(Filter::from_json(&Json::Null).unwrap().matches(&e));
    }

    #[test]
    fn json_payloads_use_dotted_paths_and_name_or_kind() {
        let w = json!({"kind": "window", "count": 3, "group": {"$current_url": "/cart", "k.x": 1},
                       "items": [{"v": 7}]});
        let t = |f: &str, op: &str, v: Json| one(f, op, Some(v)).matches(&w);
        assert!(t("group.$current_url", "equals", json!("/cart")));
        assert!(
            t("group.k.x", "equals", json!(1)),
            "a whole key wins over splitting"
        );
        assert!(t("items.0.v", "gt", json!(6)));
        assert!(t("count", "equals", json!(3.0)));
        assert!(t("group", "contains", json!("cart")), "streamed JSON text");
        assert!(!t("group", "contains", json!("basket")));
        assert!(t("items", "equals", json!([{"v": 7}])));
        assert!(
            Filter::from_json(&json!({"names": ["window"]}))
                .unwrap()
                .matches(&w)
        );
        let named = json!({"name": "signup", "kind": "other"});
        assert!(
            Filter::from_json(&json!({"names": ["signup"]}))
                .unwrap()
                .matches(&named)
        );
        assert!(
            !Filter::from_json(&json!({"names": ["x"]}))
                .unwrap()
                .matches(&json!(5))
        );
    }

    #[test]
    fn query_form() {
        let q = |pairs: &[(&str, &str)]| {
            let pairs: Vec<_> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Filter::from_query(&pairs)
        };
        let e = event();
        let f = q(&[
            ("names", "$pageview,signup"),
            ("name", "a,b"),
            ("name", ""),
            ("names", "signup,,"),
            ("since", "7"),
            ("where", "properties.$browser:equals:Chrome"),
            ("where", "properties.price:gt:9"),
        ])
        .unwrap();
        assert_eq!(f.names(), ["$pageview", "a,b", "signup"]);
        assert!(f.matches(&e));
        assert!(
            q(&[("where", "properties.price:equals:10")])
                .unwrap()
                .matches(&e)
        );
        assert!(
            !q(&[("where", "properties.price:equals:\"10\"")])
                .unwrap()
                .matches(&e)
        );
        assert!(
            q(&[("where", "properties.count:equals:\"10\"")])
                .unwrap()
                .matches(&e)
        );
        assert!(
            q(&[("where", "properties.flag:equals:true")])
                .unwrap()
                .matches(&e)
        );
        assert!(
            q(&[("where", "properties.$browser:contains:\"hr\"")])
                .unwrap()
                .matches(&e)
        );
        assert!(
            q(&[("where", "properties.x:equals:a:b")])
                .unwrap()
                .predicates()
                .any(|p| p.op == Op::Equals(json!("a:b"))),
            "the value is verbatim after the second colon"
        );
        assert!(
            q(&[("where", "properties.$email:is_not_set")])
                .unwrap()
                .matches(&e)
        );
        let msg = |pairs: &[(&str, &str)]| q(pairs).unwrap_err().to_string();
        assert_eq!(
            msg(&[("where", "name")]),
            "where[0]: `name` is not field:op or field:op:value"
        );
        assert_eq!(
            msg(&[("where", "name:is_set"), ("where", "properties.p:gt:abc")]),
            "where[1].value: gt needs a number"
        );
        assert_eq!(
            msg(&[("where", "name:is_set:x")]),
            "where[0].value: is_set takes no value"
        );
        assert_eq!(
            msg(&[("where", "name:equals")]),
            "where[0].value: equals needs a value"
        );
        assert_eq!(
            msg(&[("where", "properties.:is_set")]),
            "where[0].field: invalid field path `properties.`: the property key after `properties.` is empty"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            err(json!({"where": [{"field": "name", "op": "is_set"},
                                        {"field": "name", "op": "greater", "value": 1}]})),
            format!("where[1].op: unknown operator `greater`; expected one of {OP_NAMES}")
        );
        assert_eq!(
            err(json!({"where": [{"field": "properties.p", "op": "gt", "value": "10"}]})),
            "where[0].value: gt needs a number"
        );
        assert_eq!(
            err(json!({"nme": []})),
            "unknown field `nme`; filter fields are names, where"
        );
        assert_eq!(
            err(json!({"where": [{"field": "name", "op": "equals", "vale": 1}]})),
            "where[0]: unknown field `vale`; predicate fields are field, op, value"
        );
        assert_eq!(
            err(json!({"where": [{"op": "is_set"}]})),
            "where[0]: missing `field`"
        );
        assert_eq!(
            err(json!({"where": [{"field": "a", "op": "contains", "value": 3}]})),
            "where[0].value: contains needs a string"
        );
        assert_eq!(
            err(json!({"names": ["a", 3]})),
            "names[1]: expected a string"
        );
        assert_eq!(
            err(json!({"where": {}})),
            "where: expected an array of predicates"
        );
        assert_eq!(
            err(json!({"where": [{"field": "a..b", "op": "is_set"}]})),
            "where[0].field: invalid field path `a..b`: it has an empty segment"
        );
        assert_eq!(err(json!([])), "filter: expected an object");
        let names: Vec<_> = (0..=MAX_NAMES).map(|i| i.to_string()).collect();
        assert_eq!(
            err(json!({"names": names})),
            "names: 257 given, at most 256 allowed"
        );
        let preds: Vec<_> = (0..=MAX_PREDICATES)
            .map(|_| json!({"field": "name", "op": "is_set"}))
            .collect();
        assert_eq!(
            err(json!({"where": preds})),
            "where: 65 given, at most 64 allowed"
        );
        let f = Filter::from_json(&json!({"where": [{"field": "name", "op": "is_set"},
                                                    {"field": "nme", "op": "is_set"}]}))
        .unwrap();
        assert_eq!(
            f.check_event_fields().unwrap_err().to_string(),
            format!("where[1].field: `nme` is not an event field; event fields are {EVENT_FIELDS}")
        );
    }

    #[test]
    fn projection_shape() {
        let e = event();
        let p = Projection::from_json(&json!([
            "name",
            "distinct_id",
            "properties.$browser",
            "properties.tags",
            "properties.missing",
            "session_id"
        ]))
        .unwrap();
        assert_eq!(
            p.apply(&e),
            json!({"name": "$pageview", "distinct_id": "u1",
                                       "properties": {"$browser": "Chrome", "tags": ["a", "b"]}})
        );
        let q = Projection::from_query("name,properties.a.b,,timestamp").unwrap();
        assert_eq!(
            q.apply(&e).to_string(),
            r#"{"name":"$pageview","properties":{"a.b":"dotted"},"timestamp":1700000000000}"#
        );
        let w = json!({"count": 3, "group": {"url": "/", "other": 1}});
        let p = Projection::from_query("group.url,count,count.x").unwrap();
        assert_eq!(p.apply(&w), json!({"group": {"url": "/"}, "count": 3}));
        assert!(Projection::from_json(&Json::Null).unwrap().is_empty());
        assert_eq!(
            Projection::from_json(&json!(["a", 1]))
                .unwrap_err()
                .to_string(),
            "fields[1]: expected a string"
        );
        assert_eq!(Projection::from_query("a,").unwrap().fields().len(), 1);
        assert_eq!(
            Projection::from_query("name,properties")
                .unwrap()
                .check_event_fields()
                .unwrap_err()
                .to_string(),
            format!(
                "fields[1]: `properties` is not an event field; event fields are {EVENT_FIELDS}"
            )
        );
    }

    #[test]
    fn kmp_finds_overlapping_needles() {
        let v = json!(["aabaabaaab"]);
        let found = |n: &str| node_contains(&v, n.as_bytes(), &kmp_table(n.as_bytes()));
        assert!(found("aabaaab"));
        assert!(found("[\"aab"));
        assert!(!found("aaaa"));
        assert!(found(""));
    }
}
