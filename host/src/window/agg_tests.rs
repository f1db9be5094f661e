//! Tests for the window aggregates: parsing and its error messages, and
//! property tests against naive computations on random data (a fixed-seed
//! xorshift generator, so every run sees the same cases).

use super::slot::{Quantiles, distinct_hash};
use super::*;
use crate::event::Value;

use crate::test_rng::Rng;

fn event(name: &str, ts: i64, props: Vec<(&str, Value)>) -> Event {
    Event {
        id: "e".into(),
        name: name.into(),
        timestamp: ts,
        distinct_id: "u".into(),
        session_id: None,
        properties: props.into_iter().map(|(k, v)| (k.into(), v)).collect(),
    }
}

fn with_x(v: Value) -> Event {
    event("e", 0, vec![("x", v)])
}

fn aggs(texts: &[&str]) -> Aggregates {
    let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    Aggregates::parse_all(&texts, "windows[0].aggregates").unwrap()
}

/// Fold `events` in one pass, arrival = position.
fn fold(a: &Aggregates, events: &[Event]) -> Acc {
    let mut acc = a.new_acc();
    for (i, e) in events.iter().enumerate() {
        a.add(&mut acc, e, i as u64);
    }
    acc
}

fn err(text: &str) -> String {
    AggSpec::parse(text).unwrap_err().to_string()
}

// ---------------------------------------------------------------- parsing

#[test]
fn parses_every_function_and_names_outputs() {
    let cases = [
        ("count", "count"),
        ("count()", "count()"),
        ("COUNT ( )", "COUNT()"),
        ("count(properties.x)", "count(properties.x)"),
        ("sum( properties.amount )", "sum(properties.amount)"),
        ("avg(properties.x)", "avg(properties.x)"),
        ("min(timestamp)", "min(timestamp)"),
        ("max(properties.x)", "max(properties.x)"),
        ("stddev(properties.x)", "stddev(properties.x)"),
        (
            "first(properties.$current_url)",
            "first(properties.$current_url)",
        ),
        ("last(name)", "last(name)"),
        ("rate", "rate"),
        ("rate()", "rate()"),
        ("ratio(name:equals:purchase)", "ratio(name:equals:purchase)"),
        (
            "ratio(properties.plan:is_set)",
            "ratio(properties.plan:is_set)",
        ),
        ("distinct(distinct_id)", "distinct(distinct_id)"),
        ("p50(properties.d)", "p50(properties.d)"),
        ("p90(properties.d)", "p90(properties.d)"),
        ("p95(properties.duration_ms)", "p95(properties.duration_ms)"),
        ("p99(properties.d)", "p99(properties.d)"),
        (
            "quantile(properties.d, 0.999)",
            "quantile(properties.d,0.999)",
        ),
        ("quantile(properties.d,0)", "quantile(properties.d,0)"),
        ("quantile(properties.d, 1)", "quantile(properties.d,1)"),
        ("p95(properties.duration_ms) as p95_ms", "p95_ms"),
        ("  count  AS  n  ", "n"),
        ("rate as per_second", "per_second"),
        ("ratio(properties.q:equals:a b) as _r2", "_r2"),
    ];
    for (text, name) in cases {
        let spec = AggSpec::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(spec.output_name(), name, "{text}");
    }
    let all: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let a = aggs(&all);
    let names: Vec<&str> = a.output_names().collect();
    assert_eq!(names, cases.iter().map(|c| c.1).collect::<Vec<_>>());
}

#[test]
fn parse_errors_say_what_is_wrong_and_what_is_allowed() {
    let cases = [
        (
            "p96(properties.x)",
            "aggregate: unknown function `p96`; expected one of count, sum, avg, min, max, \
             stddev, first, last, rate, ratio, distinct, p50, p90, p95, p99, quantile",
        ),
        (
            "sum()",
            "aggregate: sum needs a field path, e.g. properties.duration_ms",
        ),
        (
            "avg",
            "aggregate: avg needs a field path, e.g. properties.duration_ms",
        ),
        (
            "sum(properties.a, properties.b)",
            "aggregate: sum takes one argument, a field path; got `properties.a, properties.b`",
        ),
        (
            "count(name, name)",
            "aggregate: count takes no argument or one field path; got `name, name`",
        ),
        (
            "rate(name)",
            "aggregate: rate takes no argument; got `name`",
        ),
        (
            "quantile(properties.x)",
            "aggregate: quantile needs a field path and a quantile from 0 to 1, \
             e.g. quantile(properties.duration_ms, 0.999)",
        ),
        (
            "quantile(properties.x, )",
            "aggregate: quantile needs a field path and a quantile from 0 to 1, \
             e.g. quantile(properties.duration_ms, 0.999)",
        ),
        (
            "quantile(properties.x, 0.5, 1)",
            "aggregate: quantile takes two arguments, a field path and a quantile; \
             got `properties.x, 0.5, 1`",
        ),
        (
            "quantile(properties.x, 1.5)",
            "aggregate: the quantile must be a number from 0 to 1, got `1.5`",
        ),
        (
            "quantile(properties.x, -0.1)",
            "aggregate: the quantile must be a number from 0 to 1, got `-0.1`",
        ),
        (
            "quantile(properties.x, NaN)",
            "aggregate: the quantile must be a number from 0 to 1, got `NaN`",
        ),
        (
            "quantile(properties.x, p95)",
            "aggregate: the quantile must be a number from 0 to 1, got `p95`",
        ),
        (
            "sum(properties.)",
            "aggregate: invalid field path `properties.`: the property key after \
             `properties.` is empty",
        ),
        (
            "max(a..b)",
            "aggregate: invalid field path `a..b`: it has an empty segment",
        ),
        (
            "sum(amount)",
            "aggregate: `amount` is not an event field; event fields are id, name, timestamp, \
             distinct_id, session_id, properties.<key>",
        ),
        (
            "ratio(name:eq:purchase)",
            "aggregate: invalid ratio predicate `name:eq:purchase`: unknown operator `eq`; \
             expected one of equals, not_equals, contains, gt, gte, lt, lte, in, is_set, is_not_set",
        ),
        (
            "ratio(name)",
            "aggregate: invalid ratio predicate `name`: `name` is not field:op or field:op:value",
        ),
        (
            "ratio(properties.n:gt:many)",
            "aggregate: invalid ratio predicate `properties.n:gt:many`: gt needs a number",
        ),
        (
            "ratio(plan:equals:pro)",
            "aggregate: invalid ratio predicate `plan:equals:pro`: `plan` is not an event \
             field; event fields are id, name, timestamp, distinct_id, session_id, \
             properties.<key>",
        ),
        (
            "ratio()",
            "aggregate: ratio needs a predicate field:op[:value], e.g. ratio(name:equals:purchase)",
        ),
        (
            "sum(properties.x) as",
            "aggregate: `as` has no name after `as`; expected `as <name>`, the name made of \
             letters, digits and `_`, not starting with a digit",
        ),
        (
            "sum(properties.x) as 9lives",
            "aggregate: `as 9lives` is not a valid alias; expected `as <name>`, the name made \
             of letters, digits and `_`, not starting with a digit",
        ),
        (
            "sum(properties.x) as total amount",
            "aggregate: `as total amount` is not a valid alias; expected `as <name>`, the name \
             made of letters, digits and `_`, not starting with a digit",
        ),
        (
            "sum(properties.x) total",
            "aggregate: `total` is not an alias; expected `as <name>`, the name made of \
             letters, digits and `_`, not starting with a digit",
        ),
        (
            "count x",
            "aggregate: `x` is not an alias; expected `as <name>`, the name made of letters, \
             digits and `_`, not starting with a digit",
        ),
        (
            "sum(properties.x",
            "aggregate: `sum(properties.x` has no closing `)`; expected function(arguments) \
             [as alias]",
        ),
        (
            "count)",
            "aggregate: `count)` has a `)` without `(`; expected function(arguments) [as alias]",
        ),
        (
            "   ",
            "aggregate: `   ` is empty; expected function(arguments) [as alias]",
        ),
    ];
    for (text, message) in cases {
        assert_eq!(err(text), message, "{text}");
    }
}

#[test]
fn list_errors_name_the_entry() {
    let parse = |texts: &[&str]| {
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        Aggregates::parse_all(&texts, "windows[2].aggregates")
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        parse(&["count", "p96(properties.x)"]),
        "windows[2].aggregates[1]: unknown function `p96`; expected one of count, sum, avg, \
         min, max, stddev, first, last, rate, ratio, distinct, p50, p90, p95, p99, quantile"
    );
    assert_eq!(
        parse(&["count", "sum(properties.x)", "sum( properties.x )"]),
        "windows[2].aggregates[2]: output name `sum(properties.x)` is already used by \
         windows[2].aggregates[1]; add `as <name>` to tell them apart"
    );
    assert_eq!(
        parse(&["count as n", "sum(properties.x) as n"]),
        "windows[2].aggregates[1]: output name `n` is already used by \
         windows[2].aggregates[0]; add `as <name>` to tell them apart"
    );
    assert_eq!(
        parse(&["count", "avg(amount)"]),
        "windows[2].aggregates[1]: `amount` is not an event field; event fields are id, \
         name, timestamp, distinct_id, session_id, properties.<key>"
    );
    assert_eq!(
        parse(&[]),
        "windows[2].aggregates: at least one aggregate is needed, e.g. \"count\""
    );
    let many: Vec<String> = (0..=MAX_AGGREGATES)
        .map(|i| format!("count as c{i}"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        parse(&many),
        "windows[2].aggregates: 65 aggregates given, at most 64 allowed"
    );
    // `count` and `count()` are different texts, hence different names.
    assert!(
        Aggregates::parse_all(&["count".into(), "count()".into()], "w").is_ok(),
        "count and count() are distinct names"
    );
}

#[test]
fn aggregates_and_accumulators_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Aggregates>();
    send::<Acc>();
}

// ------------------------------------------------------ fixed behaviours

#[test]
fn empty_accumulator_results() {
    let a = aggs(&[
        "count",
        "count(properties.x)",
        "sum(properties.x)",
        "avg(properties.x)",
        "min(properties.x)",
        "max(properties.x)",
        "stddev(properties.x)",
        "first(properties.x)",
        "last(properties.x)",
        "rate",
        "ratio(name:equals:a)",
        "distinct(properties.x)",
        "p50(properties.x)",
    ]);
    let out = a.finish(&a.new_acc(), 1000);
    let expected = serde_json::json!({
        "count": 0, "count(properties.x)": 0, "sum(properties.x)": 0,
        "avg(properties.x)": null, "min(properties.x)": null, "max(properties.x)": null,
        "stddev(properties.x)": null, "first(properties.x)": null, "last(properties.x)": null,
        "rate": 0.0, "ratio(name:equals:a)": null, "distinct(properties.x)": 0,
        "p50(properties.x)": null,
    });
    assert_eq!(Json::Object(out), expected);
}

#[test]
fn non_numeric_values_are_skipped_by_numeric_aggregates() {
    let a = aggs(&[
        "count",
        "count(properties.x)",
        "sum(properties.x)",
        "avg(properties.x)",
        "min(properties.x)",
        "max(properties.x)",
        "p50(properties.x)",
    ]);
    let events = [
        with_x(Value::Str("7".into())),
        with_x(Value::Bool(true)),
        with_x(Value::Null),
        with_x(Value::Json("[1]".into())),
        event("e", 0, vec![]),
        with_x(Value::Int(4)),
        with_x(Value::Int(-2)),
    ];
    let out = a.finish(&fold(&a, &events), 1000);
    assert_eq!(out["count"], 7);
    // Set means present and not null: the string, bool, array and the two ints.
    assert_eq!(out["count(properties.x)"], 5);
    assert_eq!(out["sum(properties.x)"], 2);
    assert_eq!(out["avg(properties.x)"], 1.0);
    assert_eq!(out["min(properties.x)"], -2);
    assert_eq!(out["max(properties.x)"], 4);
    assert_eq!(out["p50(properties.x)"].as_f64().unwrap().round(), -2.0);
}

#[test]
fn sum_is_an_integer_until_a_float_or_overflow() {
    let a = aggs(&["sum(properties.x)"]);
    let sum = |vals: &[Value]| {
        let events: Vec<Event> = vals.iter().cloned().map(with_x).collect();
        a.finish(&fold(&a, &events), 1)["sum(properties.x)"].clone()
    };
    assert!(sum(&[Value::Int(2), Value::Int(3)]).is_i64());
    assert_eq!(sum(&[Value::Int(2), Value::Float(0.5)]), 2.5);
    assert_eq!(
        sum(&[Value::Int(i64::MAX), Value::Int(1)]),
        Json::from(9_223_372_036_854_775_808.0)
    );
    // Integers are summed in 128 bits, so an overflow on the way that
    // comes back into range is still an exact integer, in any order.
    assert_eq!(
        sum(&[Value::Int(i64::MAX), Value::Int(1), Value::Int(-1)]),
        Json::from(i64::MAX)
    );
    assert_eq!(
        sum(&[
            Value::Int(i64::MIN),
            Value::Int(-1),
            Value::Int(i64::MAX),
            Value::Int(2)
        ]),
        Json::from(0)
    );
}

#[test]
fn min_and_max_compare_by_value_and_keep_the_type() {
    let a = aggs(&["min(properties.x)", "max(properties.x)"]);
    let run = |vals: &[Value]| {
        let events: Vec<Event> = vals.iter().cloned().map(with_x).collect();
        let out = a.finish(&fold(&a, &events), 1);
        (
            out["min(properties.x)"].clone(),
            out["max(properties.x)"].clone(),
        )
    };
    // A tie between 1 and 1.0: the integer is the min, the float the max,
    // whichever comes first.
    for vals in [
        [Value::Int(1), Value::Float(1.0)],
        [Value::Float(1.0), Value::Int(1)],
    ] {
        let (min, max) = run(&vals);
        assert!(min.is_i64(), "{min}");
        assert!(max.is_f64(), "{max}");
    }
    // Beyond 2^53 an i64 does not round-trip through f64; compare exactly.
    let big = (1i64 << 53) + 1;
    let (min, max) = run(&[Value::Int(big), Value::Float((1i64 << 53) as f64)]);
    assert_eq!(min, Json::from((1i64 << 53) as f64));
    assert_eq!(max, Json::from(big));
    let (min, max) = run(&[Value::Float(-0.5), Value::Int(0), Value::Float(1e300)]);
    assert_eq!(min, Json::from(-0.5));
    assert_eq!(max, Json::from(1e300));
}

#[test]
fn first_and_last_break_timestamp_ties_by_arrival() {
    let a = aggs(&["first(properties.s)", "last(properties.s)"]);
    let long_a = "a string longer than twenty-four bytes, kept on the heap";
    let long_b = "another string longer than twenty-four bytes";
    let events = [
        event("e", 20, vec![("s", Value::Str(long_a.into()))]),
        event("e", 10, vec![("s", Value::Str("early-1".into()))]),
        event("e", 10, vec![("s", Value::Str("early-2".into()))]),
        event("e", 5, vec![]),
        event("e", 30, vec![("s", Value::Json(r#"{"k":[1,2]}"#.into()))]),
        event("e", 30, vec![("s", Value::Str(long_b.into()))]),
        event("e", 40, vec![("s", Value::Null)]),
    ];
    let out = a.finish(&fold(&a, &events), 1);
    assert_eq!(out["first(properties.s)"], "early-1");
    assert_eq!(out["last(properties.s)"], long_b);
    let out = a.finish(&fold(&a, &events[..5]), 1);
    assert_eq!(out["last(properties.s)"], serde_json::json!({"k": [1, 2]}));
}

#[test]
fn rate_and_ratio() {
    let a = aggs(&[
        "rate",
        "ratio(name:equals:purchase) as conversion",
        "ratio(properties.plan:not_equals:free) as paid",
    ]);
    let mut events = Vec::new();
    for i in 0..120 {
        let name = if i % 4 == 0 { "purchase" } else { "view" };
        let plan = if i % 3 == 0 { "free" } else { "pro" };
        events.push(event(name, i, vec![("plan", Value::Str(plan.into()))]));
    }
    let acc = fold(&a, &events);
    let out = a.finish(&acc, 60_000);
    assert_eq!(out["rate"], 2.0);
    assert_eq!(out["conversion"], 0.25);
    assert_eq!(out["paid"], 80.0 / 120.0);
    assert_eq!(a.finish(&acc, 0)["rate"], Json::Null);
}

#[test]
fn approx_bytes_counts_slots_and_sketches() {
    let base = std::mem::size_of::<Acc>();
    let count = aggs(&["count", "rate"]);
    assert_eq!(count.approx_bytes(&count.new_acc()), base);
    // sum and avg of one path share a slot, as do quantiles of one path.
    let shared = aggs(&[
        "sum(properties.x)",
        "avg(properties.x)",
        "min(properties.x)",
    ]);
    assert_eq!(
        shared.approx_bytes(&shared.new_acc()),
        base + 2 * SLOT_BYTES
    );
    // The sizes the module docs promise.
    assert_eq!((base, SLOT_BYTES), (24, 56));

    let events: Vec<Event> = (0..1000).map(|i| with_x(Value::Int(i + 1))).collect();
    let d = aggs(&["distinct(properties.x)"]);
    assert_eq!(d.approx_bytes(&d.new_acc()), base + SLOT_BYTES);
    assert_eq!(d.approx_bytes(&fold(&d, &events)), base + SLOT_BYTES + 3084);

    let one = aggs(&["p50(properties.x)"]);
    let three = aggs(&[
        "p50(properties.x)",
        "p99(properties.x)",
        "quantile(properties.x, 0.3)",
    ]);
    let (a1, a3) = (fold(&one, &events), fold(&three, &events));
    assert_eq!(one.approx_bytes(&a1), three.approx_bytes(&a3));
    // 1..1000 spans a factor 1000: 346 buckets, allocated 128 at a time.
    let sketch = std::mem::size_of::<Quantiles>() + 384 * 8;
    assert_eq!(one.approx_bytes(&a1), base + SLOT_BYTES + sketch);
}

// ---------------------------------------------- exactness against naive

const EXACT: &[&str] = &[
    "count",
    "count(properties.v)",
    "sum(properties.v)",
    "avg(properties.v)",
    "min(properties.v)",
    "max(properties.v)",
    "stddev(properties.v)",
    "first(properties.v)",
    "last(properties.v)",
    "rate",
    "ratio(name:equals:purchase)",
    "distinct(properties.u)",
    "p90(properties.v)",
];

/// A random stream: a few names, timestamps with many ties, a property `v`
/// that is missing, null, a string, a bool, an int or (unless `ints_only`)
/// a float, and a user id `u` from at most 100 values.
fn random_events(rng: &mut Rng, n: usize, ints_only: bool) -> Vec<Event> {
    (0..n)
        .map(|_| {
            let name = ["purchase", "view", "signup"][rng.below(3) as usize];
            let ts = 1_000 + rng.below(40) as i64;
            let mut props = vec![("u", Value::Str(format!("user-{}", rng.below(100)).into()))];
            let v = match rng.below(10) {
                0 => None,
                1 => Some(Value::Null),
                2 => Some(Value::Str("7".into())),
                3 => Some(Value::Bool(true)),
                4..=6 => Some(Value::Int(rng.below(2001) as i64 - 1000)),
                _ if ints_only => Some(Value::Int(rng.below(1_000_001) as i64)),
                _ => Some(Value::Float((rng.unit() - 0.5) * 2000.0)),
            };
            if let Some(v) = v {
                props.push(("v", v));
            }
            event(name, ts, props)
        })
        .collect()
}

struct Naive {
    out: Map<String, Json>,
    /// Sum of |x|, the scale of a float sum's rounding error.
    abs_sum: f64,
}

fn naive(events: &[Event], span_ms: i64) -> Naive {
    let n = events.len();
    let mut set = Vec::new();
    let mut nums = Vec::new();
    for (i, e) in events.iter().enumerate() {
        match e.get("v") {
            None | Some(Value::Null) => {}
            Some(v) => {
                set.push((e.timestamp, i, v.clone()));
                match v {
                    Value::Int(x) => nums.push((*x as f64, Some(*x))),
                    Value::Float(x) => nums.push((*x, None)),
                    _ => {}
                }
            }
        }
    }
    let all_int = nums.iter().all(|(_, i)| i.is_some());
    let sum = if all_int {
        let s: i128 = nums.iter().map(|(_, i)| i128::from(i.unwrap())).sum();
        Json::from(i64::try_from(s).unwrap())
    } else {
        Json::from(nums.iter().map(|(x, _)| x).sum::<f64>())
    };
    let k = nums.len() as f64;
    let mean = nums.iter().map(|(x, _)| x).sum::<f64>() / k;
    let var = nums
        .iter()
        .map(|(x, _)| (x - mean) * (x - mean))
        .sum::<f64>()
        / k;
    let num_json = |(x, i): &(f64, Option<i64>)| i.map_or(Json::from(*x), Json::from);
    let min = nums.iter().min_by(|a, b| a.0.total_cmp(&b.0)).map(num_json);
    let max = nums.iter().max_by(|a, b| a.0.total_cmp(&b.0)).map(num_json);
    let first = set
        .iter()
        .min_by_key(|s| (s.0, s.1))
        .map(|s| s.2.to_json_value());
    let last = set
        .iter()
        .max_by_key(|s| (s.0, s.1))
        .map(|s| s.2.to_json_value());
    let purchases = events.iter().filter(|e| e.name == "purchase").count();
    let users: std::collections::HashSet<&str> = events
        .iter()
        .filter_map(|e| match e.get("u") {
            Some(Value::Str(s)) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    let mut sorted: Vec<f64> = nums.iter().map(|(x, _)| *x).collect();
    sorted.sort_by(f64::total_cmp);
    let p90 = (!sorted.is_empty()).then(|| sorted[(0.9 * (sorted.len() - 1) as f64) as usize]);
    let or_null = |v: Option<Json>| v.unwrap_or(Json::Null);
    let mut out = Map::new();
    out.insert("count".into(), Json::from(n));
    out.insert("count(properties.v)".into(), Json::from(set.len()));
    out.insert("sum(properties.v)".into(), sum);
    out.insert(
        "avg(properties.v)".into(),
        or_null((k > 0.0).then(|| Json::from(mean))),
    );
    out.insert("min(properties.v)".into(), or_null(min));
    out.insert("max(properties.v)".into(), or_null(max));
    out.insert(
        "stddev(properties.v)".into(),
        or_null((k > 0.0).then(|| Json::from(var.sqrt()))),
    );
    out.insert("first(properties.v)".into(), or_null(first));
    out.insert("last(properties.v)".into(), or_null(last));
    out.insert(
        "rate".into(),
        Json::from(n as f64 * 1000.0 / span_ms as f64),
    );
    out.insert(
        "ratio(name:equals:purchase)".into(),
        or_null((n > 0).then(|| Json::from(purchases as f64 / n as f64))),
    );
    out.insert("distinct(properties.u)".into(), Json::from(users.len()));
    out.insert("p90(properties.v)".into(), or_null(p90.map(Json::from)));
    Naive {
        out,
        abs_sum: nums.iter().map(|(x, _)| x.abs()).sum(),
    }
}

/// Float results are compared with a tolerance: they are computed in a
/// different order (compensated / Welford / merged) than the naive sums,
/// whose own rounding error is at most n·ε·Σ|x| (about 1e-12·Σ|x| here).
fn assert_matches(got: &Map<String, Json>, want: &Naive, case: &str) {
    assert_eq!(got.len(), want.out.len());
    for (key, w) in &want.out {
        let g = &got[key];
        let close = |tol: f64| match (g.as_f64(), w.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= tol,
            _ => g == w,
        };
        let ok = match key.as_str() {
            "sum(properties.v)" if w.is_f64() => g.is_f64() && close(1e-12 * want.abs_sum),
            "avg(properties.v)" => {
                let k = got["count(properties.v)"].as_f64().unwrap().max(1.0);
                close(1e-12 * want.abs_sum / k)
            }
            "stddev(properties.v)" => close(1e-9 * (1.0 + w.as_f64().unwrap_or(0.0))),
            "p90(properties.v)" => match (g.as_f64(), w.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() <= QUANTILE_ALPHA * b.abs() * (1.0 + 1e-9),
                _ => g == w,
            },
            // Exact: integers, counts, chosen values, and ratios computed
            // by the same single division.
            _ => g == w && g.is_i64() == w.is_i64(),
        };
        assert!(ok, "{case}: {key}: got {g}, want {w}");
    }
}

#[test]
fn single_pass_matches_naive_computation() {
    let a = aggs(EXACT);
    let mut rng = Rng::new(1);
    for case in 0..600 {
        let n = rng.below(80) as usize;
        let events = random_events(&mut rng, n, case % 3 == 0);
        let span = 1 + rng.below(120_000) as i64;
        let got = a.finish(&fold(&a, &events), span);
        assert_matches(&got, &naive(&events, span), &format!("case {case}"));
    }
}

/// Split `events` into random chunks, fold each into its own accumulator
/// (arrival stays the global position), then merge the accumulators in a
/// random tree: pick two at random, merge one into the other, repeat.
fn fold_merged(a: &Aggregates, events: &[Event], rng: &mut Rng) -> Acc {
    let mut accs = Vec::new();
    let mut start = 0;
    while start < events.len() || accs.is_empty() {
        let len = (1 + rng.below(12) as usize).min(events.len() - start);
        let mut acc = a.new_acc();
        for (i, e) in events.iter().enumerate().skip(start).take(len) {
            a.add(&mut acc, e, i as u64);
        }
        accs.push(acc);
        start += len;
        // Empty accumulators must merge as identities.
        if rng.below(8) == 0 {
            accs.push(a.new_acc());
        }
    }
    while accs.len() > 1 {
        let i = rng.below(accs.len() as u64) as usize;
        let from = accs.swap_remove(i);
        let j = rng.below(accs.len() as u64) as usize;
        a.merge(&mut accs[j], &from);
    }
    accs.pop().unwrap()
}

#[test]
fn merging_random_chunks_in_random_order_equals_one_pass() {
    let a = aggs(EXACT);
    let mut rng = Rng::new(2);
    for case in 0..600 {
        let n = rng.below(120) as usize;
        let events = random_events(&mut rng, n, case % 3 == 0);
        let span = 1 + rng.below(120_000) as i64;
        let single = a.finish(&fold(&a, &events), span);
        let merged = a.finish(&fold_merged(&a, &events, &mut rng), span);
        let case = format!("case {case}");
        assert_matches(&merged, &naive(&events, span), &case);
        // The sketches merge to exactly what one pass holds.
        for key in [
            "p90(properties.v)",
            "distinct(properties.u)",
            "min(properties.v)",
        ] {
            assert_eq!(merged[key], single[key], "{case}: {key}");
        }
    }
}

#[test]
fn merge_is_commutative() {
    let a = aggs(EXACT);
    let mut rng = Rng::new(3);
    for case in 0..200 {
        let (nx, ny) = (rng.below(40) as usize, rng.below(40) as usize);
        let x = random_events(&mut rng, nx, case % 2 == 0);
        let y = random_events(&mut rng, ny, false);
        let (ax, ay) = (fold(&a, &x), {
            let mut acc = a.new_acc();
            for (i, e) in y.iter().enumerate() {
                a.add(&mut acc, e, (x.len() + i) as u64);
            }
            acc
        });
        let mut xy = ax.clone();
        a.merge(&mut xy, &ay);
        let mut yx = ay.clone();
        a.merge(&mut yx, &ax);
        let (xy, yx) = (a.finish(&xy, 1000), a.finish(&yx, 1000));
        for (key, v) in &xy {
            match (key.as_str(), v.as_f64(), yx[key].as_f64()) {
                (
                    "sum(properties.v)" | "avg(properties.v)" | "stddev(properties.v)",
                    Some(p),
                    Some(q),
                ) if v.is_f64() => {
                    assert!(
                        (p - q).abs() <= 1e-9 * (1.0 + p.abs()),
                        "case {case}: {key}"
                    )
                }
                _ => assert_eq!(v, &yx[key], "case {case}: {key}"),
            }
        }
    }
}

// ------------------------------------------------------------- distinct

#[test]
fn distinct_is_exact_up_to_the_threshold() {
    let a = aggs(&["distinct(properties.x)"]);
    let mut rng = Rng::new(4);
    for case in 0..150 {
        let k = rng.below(DISTINCT_EXACT_MAX as u64 + 1);
        // k values, distinct by construction, of mixed types and lengths,
        // each seen 1 to 3 times, in random order.
        let value = |j: u64| match j % 5 {
            0 => Value::Str(format!("k{j}").into()),
            1 => Value::Int(j as i64 * 1_000_003),
            2 => Value::Float(j as f64 + 0.5),
            3 => Value::Str(format!("a rather longer string value number {j}").into()),
            _ => Value::Json(format!("{{\"j\":{j}}}")),
        };
        let mut events: Vec<Event> = (0..k)
            .flat_map(|j| std::iter::repeat_n(j, 1 + rng.below(3) as usize))
            .map(|j| with_x(value(j)))
            .collect();
        for i in (1..events.len()).rev() {
            events.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let out = a.finish(&fold(&a, &events), 1);
        assert_eq!(out["distinct(properties.x)"], k, "case {case}");
        let merged = a.finish(&fold_merged(&a, &events, &mut rng), 1);
        assert_eq!(merged["distinct(properties.x)"], k, "case {case} merged");
    }
}

#[test]
fn distinct_keeps_json_types_apart() {
    let a = aggs(&["distinct(properties.x)"]);
    let events: Vec<Event> = [
        Value::Str("1".into()),
        Value::Int(1),
        Value::Float(1.0), // the number 1 again
        Value::Bool(true),
        Value::Str("true".into()),
        Value::Json("[1]".into()),
        Value::Str("[1]".into()),
        Value::Float(1.5),
        Value::Null, // not counted
    ]
    .into_iter()
    .map(with_x)
    .collect();
    assert_eq!(a.finish(&fold(&a, &events), 1)["distinct(properties.x)"], 7);
}

fn within_error(estimate: &Json, truth: usize) -> bool {
    let e = estimate.as_f64().unwrap();
    let t = truth as f64;
    (e - t).abs() <= 3.0 * DISTINCT_STANDARD_ERROR * t
}

#[test]
fn distinct_is_within_three_standard_errors_above_the_threshold() {
    let a = aggs(&["distinct(properties.x)"]);
    let mut rng = Rng::new(5);
    for n in [129, 200, 500, 1_000, 3_000, 10_000, 40_000] {
        for trial in 0..3 {
            // Realistic ids: sequential numbers, prefixed strings, random
            // 64-bit numbers.
            let offset = rng.next() >> 20;
            let events: Vec<Event> = (0..n as u64)
                .map(|i| {
                    with_x(match trial {
                        0 => Value::Int((offset + i) as i64),
                        1 => Value::Str(format!("user-{}", offset + i).into()),
                        _ => Value::Int(rng.next() as i64),
                    })
                })
                .collect();
            let est = &a.finish(&fold(&a, &events), 1)["distinct(properties.x)"];
            assert!(within_error(est, n), "n {n} trial {trial}: {est}");
        }
    }
}

#[test]
fn distinct_merges_disjoint_and_overlapping_sets() {
    let a = aggs(&["distinct(properties.x)"]);
    let ids = |r: std::ops::Range<u64>| -> Vec<Event> {
        r.map(|i| with_x(Value::Str(format!("id-{i}").into())))
            .collect()
    };
    let est = |acc: &Acc| a.finish(acc, 1)["distinct(properties.x)"].clone();
    let merged = |x: &[Event], y: &[Event]| {
        let mut acc = fold(&a, x);
        a.merge(&mut acc, &fold(&a, y));
        acc
    };
    // Below the threshold: exact.
    assert_eq!(est(&merged(&ids(0..60), &ids(60..120))), 120);
    assert_eq!(est(&merged(&ids(0..80), &ids(40..120))), 120);
    // Small into large and large into small.
    let (small, large) = (ids(0..50), ids(25..5_000));
    assert!(within_error(&est(&merged(&small, &large)), 5_000));
    assert!(within_error(&est(&merged(&large, &small)), 5_000));
    // Both large, disjoint and overlapping; the merged sketch holds the
    // same registers as one fed the union (its running estimate may round
    // the last digit differently).
    for (x, y, union) in [
        (0..3_000, 3_000..7_000, 7_000),
        (0..4_000, 2_000..7_000, 7_000),
    ] {
        let m = est(&merged(&ids(x), &ids(y)));
        let one = est(&fold(&a, &ids(0..union)));
        assert!(within_error(&m, union as usize), "{m}");
        assert!(
            (m.as_f64().unwrap() - one.as_f64().unwrap()).abs() <= 1.0,
            "{m} vs {one}"
        );
    }
}

// ------------------------------------------------------------ quantiles

const QS: &[f64] = &[0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0];

fn quantile_aggs() -> Aggregates {
    let texts: Vec<String> = QS
        .iter()
        .enumerate()
        .map(|(i, q)| format!("quantile(properties.x, {q}) as q{i}"))
        .chain(["p50", "p90", "p95", "p99"].map(|p| format!("{p}(properties.x)")))
        .collect();
    Aggregates::parse_all(&texts, "w").unwrap()
}

/// The value at 0-based rank ⌊q·(n−1)⌋ of the sorted values.
fn true_quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64) as usize]
}

fn assert_quantiles(out: &Map<String, Json>, values: &[f64], case: &str) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let named = [("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)];
    let all = QS
        .iter()
        .enumerate()
        .map(|(i, q)| (format!("q{i}"), *q))
        .chain(named.map(|(p, q)| (format!("{p}(properties.x)"), q)));
    for (key, q) in all {
        let got = out[&key].as_f64().unwrap();
        let want = true_quantile(&sorted, q);
        // α relative error, plus a little for the sketch's own float maths.
        let ok = (got - want).abs() <= QUANTILE_ALPHA * want.abs() * (1.0 + 1e-9);
        assert!(ok, "{case}: q {q}: got {got}, want {want}");
    }
}

fn random_values(rng: &mut Rng, dist: usize, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| match dist {
            // uniform
            0 => 0.5 + rng.unit() * 1000.0,
            // lognormal-ish: exp of an approximately normal variate
            1 => ((0..12).map(|_| rng.unit()).sum::<f64>() - 6.0)
                .mul_add(2.0, 3.0)
                .exp(),
            // heavy duplicates, integral
            2 => [1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 1000.0][rng.below(7) as usize],
            // both signs with zeros
            _ => match rng.below(10) {
                0 => 0.0,
                _ => (rng.unit() - 0.5) * 200.0,
            },
        })
        .collect()
}

#[test]
fn quantiles_are_within_alpha_of_the_true_quantile() {
    let a = quantile_aggs();
    let mut rng = Rng::new(6);
    for case in 0..160 {
        let dist = case % 4;
        let n = 1 + rng.below(2_000) as usize;
        let values = random_values(&mut rng, dist, n);
        let events: Vec<Event> = values
            .iter()
            .map(|&v| {
                with_x(if dist == 2 {
                    Value::Int(v as i64)
                } else {
                    Value::Float(v)
                })
            })
            .collect();
        let single = a.finish(&fold(&a, &events), 1);
        assert_quantiles(&single, &values, &format!("case {case} dist {dist}"));
        let merged = a.finish(&fold_merged(&a, &events, &mut rng), 1);
        assert_eq!(merged, single, "case {case}: merged differs from one pass");
    }
}

#[test]
fn quantiles_of_tiny_magnitudes_are_zero() {
    let a = aggs(&["p50(properties.x)", "quantile(properties.x, 1)"]);
    let events: Vec<Event> = [1e-12, -1e-10, 0.0]
        .map(|v| with_x(Value::Float(v)))
        .to_vec();
    let out = a.finish(&fold(&a, &events), 1);
    assert_eq!(out["p50(properties.x)"], 0.0);
    // q = 1 is the exact maximum.
    assert_eq!(out["quantile(properties.x,1)"], 1e-12);
}

// ------------------------------------------------------------------ hash

#[test]
fn the_distinct_hash_is_fixed() {
    // A sketch saved by one build must merge with the next: these values
    // must never change.
    assert_eq!(
        distinct_hash(FieldRef::Int(1)),
        distinct_hash(FieldRef::Float(1.0))
    );
    assert_ne!(
        distinct_hash(FieldRef::Int(1)),
        distinct_hash(FieldRef::Str("1"))
    );
    assert_ne!(
        distinct_hash(FieldRef::Str("[1]")),
        distinct_hash(FieldRef::JsonText("[1]"))
    );
    assert_ne!(
        distinct_hash(FieldRef::Str("")),
        distinct_hash(FieldRef::Str("\0"))
    );
    let pinned = [
        distinct_hash(FieldRef::Int(1)),
        distinct_hash(FieldRef::Str("user-1")),
        distinct_hash(FieldRef::Str("a string of more than eight bytes")),
    ];
    assert_eq!(pinned, PINNED_HASHES);
}

const PINNED_HASHES: [u64; 3] = [
    7_984_485_810_619_834_279,
    10_289_849_370_110_624_948,
    16_606_273_057_354_610_808,
];
