//! Parsing one aggregate's pieces: the alias after the call, and the
//! function with its arguments.

use super::{AggError, Func};
use crate::filter::{FieldPath, Filter, FilterError};

pub(super) fn parse_alias<'t>(tail: &'t str, at: &str) -> Result<Option<&'t str>, AggError> {
    if tail.is_empty() {
        return Ok(None);
    }
    let bad = |reason| AggError::Alias {
        at: at.to_owned(),
        text: tail.to_owned(),
        reason,
    };
    let (kw, name) = tail.split_once(char::is_whitespace).unwrap_or((tail, ""));
    if !kw.eq_ignore_ascii_case("as") {
        return Err(bad("is not an alias"));
    }
    let name = name.trim();
    if name.is_empty() {
        return Err(bad("has no name after `as`"));
    }
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(bad("is not a valid alias"));
    }
    Ok(Some(name))
}

pub(super) type Parsed = (Func, Option<FieldPath>, Option<Filter>);

pub(super) fn parse_call(fname: &str, args: Option<&str>, at: &str) -> Result<Parsed, AggError> {
    let lower = fname.to_ascii_lowercase();
    let one_path = |function: &'static str, func: Func| -> Result<Parsed, AggError> {
        let Some(arg) = args else {
            return Err(AggError::MissingArgument {
                at: at.to_owned(),
                function,
                needs: "a field path, e.g. properties.duration_ms",
            });
        };
        if arg.contains(',') {
            return Err(extra(at, function, "one argument, a field path", arg));
        }
        Ok((func, Some(event_path(arg, at)?), None))
    };
    match lower.as_str() {
        "count" => match args {
            None => Ok((Func::Count, None, None)),
            Some(a) if a.contains(',') => {
                Err(extra(at, "count", "no argument or one field path", a))
            }
            Some(a) => Ok((Func::CountSet, Some(event_path(a, at)?), None)),
        },
        "rate" => match args {
            None => Ok((Func::Rate, None, None)),
            Some(a) => Err(extra(at, "rate", "no argument", a)),
        },
        "sum" => one_path("sum", Func::Sum),
        "avg" => one_path("avg", Func::Avg),
        "min" => one_path("min", Func::Min),
        "max" => one_path("max", Func::Max),
        "stddev" => one_path("stddev", Func::Stddev),
        "first" => one_path("first", Func::First),
        "last" => one_path("last", Func::Last),
        "distinct" => one_path("distinct", Func::Distinct),
        "p50" => one_path("p50", Func::Quantile(0.5)),
        "p90" => one_path("p90", Func::Quantile(0.9)),
        "p95" => one_path("p95", Func::Quantile(0.95)),
        "p99" => one_path("p99", Func::Quantile(0.99)),
        "quantile" => {
            let missing = || AggError::MissingArgument {
                at: at.to_owned(),
                function: "quantile",
                needs: "a field path and a quantile from 0 to 1, e.g. quantile(properties.duration_ms, 0.999)",
            };
            let (path, q) = args.and_then(|a| a.split_once(',')).ok_or_else(missing)?;
            let q = q.trim();
            if q.contains(',') {
                return Err(extra(
                    at,
                    "quantile",
                    "two arguments, a field path and a quantile",
                    args.unwrap_or_default(),
                ));
            }
            if q.is_empty() {
                return Err(missing());
            }
            let value = q
                .parse::<f64>()
                .ok()
                .filter(|v| (0.0..=1.0).contains(v))
                .ok_or_else(|| AggError::Quantile {
                    at: at.to_owned(),
                    q: q.to_owned(),
                })?;
            Ok((
                Func::Quantile(value),
                Some(event_path(path.trim(), at)?),
                None,
            ))
        }
        "ratio" => {
            let Some(predicate) = args else {
                return Err(AggError::MissingArgument {
                    at: at.to_owned(),
                    function: "ratio",
                    needs: "a predicate field:op[:value], e.g. ratio(name:equals:purchase)",
                });
            };
            let filter = Filter::from_query(&[("where".to_owned(), predicate.to_owned())])
                .and_then(|f| f.check_event_fields().map(|()| f))
                .map_err(|e| {
                    // The filter parser names the predicate `where[0]...: `;
                    // here it is named by `at` and the predicate text.
                    let msg = e.to_string();
                    let reason = msg.split_once(": ").map_or(msg.as_str(), |(_, r)| r);
                    AggError::Ratio {
                        at: at.to_owned(),
                        predicate: predicate.to_owned(),
                        reason: reason.to_owned(),
                    }
                })?;
            Ok((Func::Ratio, None, Some(filter)))
        }
        _ => Err(AggError::UnknownFunction {
            at: at.to_owned(),
            name: fname.to_owned(),
        }),
    }
}

fn extra(at: &str, function: &'static str, takes: &'static str, args: &str) -> AggError {
    AggError::ExtraArgument {
        at: at.to_owned(),
        function,
        takes,
        args: args.to_owned(),
    }
}

fn event_path(text: &str, at: &str) -> Result<FieldPath, AggError> {
    let path = FieldPath::parse(text, at).map_err(AggError::Path)?;
    if !path.is_event_field() {
        return Err(AggError::Path(FilterError::NotEventField {
            at: at.to_owned(),
            path: text.to_owned(),
        }));
    }
    Ok(path)
}
