//! Subscription filters and projections: which messages a subscriber wants,
//! and which of their fields it wants to see.
//!
//! A [`Filter`] is a set of event names (any of) and property predicates (all
//! of). It runs for every message for every subscriber, so everything is
//! parsed once at construction and [`Filter::matches`] does not allocate.
//!
//! Filters apply to any [`Record`]: an [`Event`](crate::event::Event), or a
//! JSON payload such as a window result or a plugin notice. Both forms a
//! client can send are parsed here: the JSON object of a WebSocket
//! `subscribe` message ([`Filter::from_json`]) and the query string of an
//! SSE request ([`Filter::from_query`]). Every error is a [`FilterError`] whose message
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
//! - `gt` / `gte` / `lt` / `lte`: numeric fields only; anything else (or
//!   missing) is false.
//! - `in`: the value is a JSON array; the field equals (as `equals` compares)
//!   one of its items. Missing is false.
//! - `is_set`: present and not null; `is_not_set`: missing or null.
//!
//! This module holds [`Filter`], its [`Op`]s and [`Predicate`]s, the
//! [`FilterError`] every client-facing parse reports, and the size limits.
//! The rest is split by responsibility: `path` (field paths, [`Record`] and
//! how events and JSON payloads resolve them), `matching` (predicates
//! compiled for allocation-free matching), `parse` (the JSON and query-string
//! forms) and `projection` ([`Projection`]).

use compact_str::CompactString;
use serde_json::Value as Json;

mod matching;
mod parse;
mod path;
mod projection;
#[cfg(test)]
mod tests;

use matching::Compiled;

pub use path::{FieldPath, FieldRef, Record};
pub use projection::Projection;

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
const OP_NAMES: &str = "equals, not_equals, contains, gt, gte, lt, lte, in, is_set, is_not_set";

/// The paths that resolve on an [`Event`](crate::event::Event), as error
/// messages list them.
const EVENT_FIELDS: &str = "id, name, timestamp, distinct_id, session_id, properties.<key>";

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
    /// The field is a number greater than or equal to this.
    Gte(f64),
    /// The field is a number less than this.
    Lt(f64),
    /// The field is a number less than or equal to this.
    Lte(f64),
    /// The field equals one of these values.
    In(Vec<Json>),
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
