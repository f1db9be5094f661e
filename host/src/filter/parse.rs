//! Parsing the two forms a client sends: the JSON object of a WebSocket
//! `subscribe` message ([`Filter::from_json`]) and the query string of an
//! SSE request ([`Filter::from_query`]), down to single predicates and
//! operators.

use compact_str::CompactString;
use serde_json::Value as Json;

use super::{
    FieldPath, Filter, FilterError, MAX_NAMES, MAX_PREDICATES, Op, Predicate, check_count,
    wrong_type,
};

impl Filter {
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
        (OpKind::In, Some(Json::Array(items))) => in_list(items.clone(), &value_at)?,
        (OpKind::In, _) => return Err(needs("an array of values")),
        (OpKind::Gt | OpKind::Gte | OpKind::Lt | OpKind::Lte, v) => {
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
        // `in` takes a JSON array, or comma-separated plain values.
        (OpKind::In, Some(raw)) => match as_json(raw) {
            Json::Array(items) => in_list(items, &value_at)?,
            _ => in_list(raw.split(',').map(as_json).collect(), &value_at)?,
        },
        (OpKind::Gt | OpKind::Gte | OpKind::Lt | OpKind::Lte, Some(raw)) => {
            kind.with_number(as_json(raw).as_f64().ok_or_else(|| needs("a number"))?)
        }
    };
    Ok(Predicate { path, op })
}

/// The most values one `in` may list (it is matched by a linear scan).
pub const MAX_IN_VALUES: usize = 256;

fn in_list(items: Vec<Json>, at: &str) -> Result<Op, FilterError> {
    if items.is_empty() {
        return Err(FilterError::BadValue {
            at: at.to_owned(),
            op: "in",
            needs: "a non-empty array of values",
        });
    }
    check_count("in", items.len(), MAX_IN_VALUES)?;
    Ok(Op::In(items))
}

#[derive(Debug, Clone, Copy)]
enum OpKind {
    Equals,
    NotEquals,
    Contains,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    IsSet,
    IsNotSet,
}

impl OpKind {
    const ALL: [OpKind; 10] = [
        OpKind::Equals,
        OpKind::NotEquals,
        OpKind::Contains,
        OpKind::Gt,
        OpKind::Gte,
        OpKind::Lt,
        OpKind::Lte,
        OpKind::In,
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
            OpKind::Gte => "gte",
            OpKind::Lt => "lt",
            OpKind::Lte => "lte",
            OpKind::In => "in",
            OpKind::IsSet => "is_set",
            OpKind::IsNotSet => "is_not_set",
        }
    }

    fn numeric(self) -> bool {
        matches!(self, OpKind::Gt | OpKind::Gte | OpKind::Lt | OpKind::Lte)
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
            OpKind::Lte => Op::Lte(n),
            OpKind::Gte => Op::Gte(n),
            _ => Op::Gt(n),
        }
    }
}
