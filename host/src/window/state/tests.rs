//! Tests of saved state: every aggregate round-trips exactly through
//! postcard and JSON, key groups are stable and spread, a state refuses to
//! go where it does not fit, and how big snapshots are. Restoring operators
//! mid-stream is tested in `cut_tests.rs`.

use serde_json::{Value as Json, json};

use super::*;
use crate::event::{Event, Value};
use crate::window::agg::Aggregates;
use crate::window::operator::{Ctx, Emitted, WindowOperator};
use crate::window::prop_tests::Rng;
use crate::window::session::Sessions;
use crate::window::sliding::Sliding;
use crate::window::tumbling::Tumbling;
use crate::window::{WindowConfig, WindowKind, WindowStats};

/// Every aggregate function the parser knows, in each of its forms.
const EVERY: [&str; 20] = [
    "count",
    "count()",
    "count(properties.x)",
    "sum(properties.x)",
    "avg(properties.x)",
    "min(properties.x)",
    "max(properties.x)",
    "stddev(properties.x)",
    "first(properties.x)",
    "last(properties.x)",
    "rate",
    "rate()",
    "ratio(name:equals:buy)",
    "distinct(properties.x)",
    "distinct(distinct_id)",
    "p50(properties.x)",
    "p90(properties.x)",
    "p95(properties.x)",
    "p99(properties.x)",
    "quantile(properties.x, 0.999)",
];

fn aggs(texts: &[&str]) -> Aggregates {
    let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    Aggregates::parse_all(&texts, "aggregates").unwrap()
}

fn event(i: u64, name: &str, user: u64, x: Option<Value>) -> Event {
    Event {
        id: format!("e{i}").into(),
        name: name.into(),
        timestamp: 1_700_000_000_000 + (i as i64 % 97) * 10,
        distinct_id: format!("u{user}").into(),
        session_id: None,
        properties: x.into_iter().map(|v| ("x".into(), v)).collect(),
    }
}

/// A value of `x` of every kind aggregates meet, including ones they skip.
fn x_value(rng: &mut Rng) -> Option<Value> {
    Some(match rng.below(13) {
        0 => return None,
        1 => Value::Null,
        2 => Value::Bool(rng.below(2) == 1),
        3 => Value::Str(format!("s{}", rng.below(50)).into()),
        4 => Value::Str(format!("a string too long to be kept inline, {}", rng.below(50)).into()),
        5 => Value::Json(format!(r#"{{"k":[1,{}]}}"#, rng.below(5))),
        6 | 7 => Value::Int(rng.upto(1_000) - 500),
        8 | 9 => Value::Float((rng.upto(100_000) - 50_000) as f64 / 100.0),
        // Below the sketch's minimum magnitude: counted as zero.
        10 => Value::Float(rng.unit() * 1e-12),
        // Many distinct values, so `distinct` reaches its HyperLogLog.
        _ => Value::Int((rng.next() >> 1) as i64),
    })
}

fn events(rng: &mut Rng, n: usize, users: u64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let name = if rng.below(4) == 0 { "buy" } else { "view" };
            event(i as u64, name, rng.below(users), x_value(rng))
        })
        .collect()
}

fn fold(a: &Aggregates, evs: &[Event], first_arrival: u64) -> Acc {
    let mut acc = a.new_acc();
    for (i, e) in evs.iter().enumerate() {
        a.add(&mut acc, e, first_arrival + i as u64);
    }
    acc
}

fn bytes(acc: &Acc) -> Vec<u8> {
    postcard::to_stdvec(acc).unwrap()
}

/// `back` is `acc` exactly: same bytes, same results, and it merges and
/// goes on taking events as `acc` does.
fn assert_same(a: &Aggregates, acc: &Acc, back: &Acc, more: &[Event], what: &str) {
    assert!(
        a.fits(back),
        "{what}: restored accumulator has another shape"
    );
    assert_eq!(bytes(back), bytes(acc), "{what}: state differs");
    assert_eq!(a.finish(back, 60_000), a.finish(acc, 60_000), "{what}");
    let other = fold(a, more, 1_000_000);
    let (mut m1, mut m2) = (acc.clone(), back.clone());
    a.merge(&mut m1, &other);
    a.merge(&mut m2, &other);
    assert_eq!(bytes(&m2), bytes(&m1), "{what}: merged into");
    assert_eq!(a.finish(&m2, 1_000), a.finish(&m1, 1_000), "{what}");
    let (mut o1, mut o2) = (other.clone(), other);
    a.merge(&mut o1, acc);
    a.merge(&mut o2, back);
    assert_eq!(bytes(&o2), bytes(&o1), "{what}: merged from");
    let (mut c1, mut c2) = (acc.clone(), back.clone());
    for (i, e) in more.iter().enumerate() {
        a.add(&mut c1, e, 2_000_000 + i as u64);
        a.add(&mut c2, e, 2_000_000 + i as u64);
    }
    assert_eq!(bytes(&c2), bytes(&c1), "{what}: continued");
    assert_eq!(a.finish(&c2, 60_000), a.finish(&c1, 60_000), "{what}");
}

fn round_trip(a: &Aggregates, acc: &Acc, more: &[Event], what: &str) {
    let back: Acc = postcard::from_bytes(&bytes(acc)).unwrap();
    assert_same(a, acc, &back, more, &format!("{what}, postcard"));
    let text = serde_json::to_string(acc).unwrap();
    let back: Acc = serde_json::from_str(&text).unwrap();
    assert_same(a, acc, &back, more, &format!("{what}, JSON"));
}

#[test]
fn every_aggregate_round_trips_exactly_through_postcard_and_json() {
    let all = aggs(&EVERY);
    let mut rng = Rng::new(13);
    // 0, 1 and 2 distinct values are the estimator's small form, up to 128
    // its array, past that its HyperLogLog.
    for n in [0, 1, 2, 3, 7, 60, 130, 400, 3_000] {
        let evs = events(&mut rng, n, 1 + n as u64 / 2);
        let more = events(&mut rng, 40, 10);
        let acc = fold(&all, &evs, 0);
        round_trip(&all, &acc, &more, &format!("all aggregates, {n} events"));
        for text in EVERY {
            let one = aggs(&[text]);
            let acc = fold(&one, &evs, 0);
            round_trip(&one, &acc, &more, &format!("{text}, {n} events"));
        }
    }
}

#[test]
fn overflowed_float_state_round_trips_bit_for_bit() {
    // Two of these overflow the float sum to infinity and its compensation
    // to NaN; the variance overflows too. JSON has neither, so the text
    // form must carry them.
    let a = aggs(&[
        "sum(properties.x)",
        "avg(properties.x)",
        "stddev(properties.x)",
        "p50(properties.x)",
        "min(properties.x)",
        "first(properties.x)",
    ]);
    let evs: Vec<Event> = [1.7e308, 1.7e308, -1.7e308, 3.0]
        .into_iter()
        .enumerate()
        .map(|(i, f)| event(i as u64, "view", 0, Some(Value::Float(f))))
        .collect();
    let acc = fold(&a, &evs, 0);
    let results = a.finish(&acc, 1_000);
    assert_eq!(results["sum(properties.x)"], Json::Null, "the sum is NaN");
    round_trip(&a, &acc, &evs, "overflowed floats");
}

#[test]
fn distinct_is_saved_in_each_representation_without_addresses() {
    let a = aggs(&["distinct(properties.x)"]);
    for (n, form) in [(2, "Small"), (50, "Array"), (1_000, "Hll")] {
        let evs: Vec<Event> = (0..n)
            .map(|i| event(i, "view", 0, Some(Value::Int(i as i64))))
            .collect();
        let acc = fold(&a, &evs, 0);
        let text = serde_json::to_string(&acc).unwrap();
        assert!(text.contains(form), "{n} values: {text:.200}");
        // Two sketches fed the same values (so on different heap buffers)
        // give the same bytes.
        assert_eq!(bytes(&fold(&a, &evs, 0)), bytes(&acc), "{n} values");
    }
}

#[test]
fn a_damaged_sketch_is_refused_not_misread() {
    let a = aggs(&["distinct(properties.x)"]);
    let evs: Vec<Event> = (0..50)
        .map(|i| event(i, "view", 0, Some(Value::Int(i as i64))))
        .collect();
    let mut state: Json = serde_json::to_value(fold(&a, &evs, 0)).unwrap();
    // An array form with two hashes is not one the estimator makes.
    state["slots"][0]["Distinct"]["Array"] = json!([1, 2]);
    assert!(serde_json::from_value::<Acc>(state).is_err());

    let q = aggs(&["p50(properties.x)"]);
    let evs: Vec<Event> = (0..5)
        .map(|i| event(i, "view", 0, Some(Value::Int(i as i64))))
        .collect();
    let mut state: Json = serde_json::to_value(fold(&q, &evs, 0)).unwrap();
    state["slots"][0]["Quantiles"] = json!([1, 2, 3]);
    assert!(serde_json::from_value::<Acc>(state).is_err());
}

// ------------------------------------------------------------ key groups

fn str_key(s: &str) -> Vec<KeyPart> {
    vec![KeyPart::Str(s.into())]
}

#[test]
fn key_groups_of_fixed_keys_never_change() {
    // Computed once, and checked against a separate implementation of the
    // steps the module docs give (canonical encoding, FNV-1a 64, fmix64,
    // high bits): a change to any step moves these, and every snapshot and
    // partition assignment made before it would be misread.
    let cases: Vec<(Vec<KeyPart>, u16)> = vec![
        (vec![], 119),
        (str_key("/pricing"), 3),
        (str_key("u1"), 108),
        (str_key("u2"), 117),
        (vec![KeyPart::Int(42)], 18),
        (vec![KeyPart::Missing], 92),
        (vec![KeyPart::Null], 6),
        (vec![KeyPart::Bool(true)], 63),
        (vec![KeyPart::Float(1.5f64.to_bits())], 109),
        (vec![KeyPart::Json(r#"{"a":1}"#.into())], 114),
        (vec![KeyPart::Overflow], 108),
        (vec![KeyPart::Str("a".into()), KeyPart::Int(1)], 22),
    ];
    let got: Vec<(String, u16)> = cases
        .iter()
        .map(|(k, _)| (format!("{k:?}"), key_group(k)))
        .collect();
    let want: Vec<(String, u16)> = cases.iter().map(|(k, g)| (format!("{k:?}"), *g)).collect();
    assert_eq!(got, want);
}

#[test]
fn key_groups_spread_keys_evenly() {
    // 10,000 keys over 128 groups: 78 each on average, standard deviation
    // about 8.8; every group within ±4 standard deviations.
    for make in [
        (|i: u64| str_key(&format!("u{i}"))) as fn(u64) -> Vec<KeyPart>,
        |i| vec![KeyPart::Int(i as i64)],
        |i| str_key(&format!("/products/{i}/reviews")),
    ] {
        let mut counts = [0u32; KEY_GROUPS as usize];
        for i in 0..10_000 {
            counts[usize::from(key_group(&make(i)))] += 1;
        }
        let (lo, hi) = (counts.iter().min(), counts.iter().max());
        assert!(
            lo >= Some(&43) && hi <= Some(&114),
            "{lo:?}..{hi:?} of {:?}",
            make(0)
        );
    }
}

#[test]
fn key_group_sets_split_all_groups_among_owners() {
    assert_eq!(KeyGroupSet::all().len(), usize::from(KEY_GROUPS));
    assert!(KeyGroupSet::empty().is_empty());
    for owners in 1..=KEY_GROUPS {
        let shares: Vec<KeyGroupSet> = (0..owners)
            .map(|i| KeyGroupSet::share(i, owners).unwrap())
            .collect();
        let total: usize = shares.iter().map(KeyGroupSet::len).sum();
        let union = shares.iter().fold(KeyGroupSet::empty(), |u, s| u.union(*s));
        assert_eq!(
            (total, union),
            (usize::from(KEY_GROUPS), KeyGroupSet::all())
        );
        let sizes: Vec<usize> = shares.iter().map(KeyGroupSet::len).collect();
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{sizes:?}");
    }
    assert_eq!(
        format!("{:?}", KeyGroupSet::share(1, 3).unwrap()),
        "KeyGroupSet[43..86]"
    );
    let odd = KeyGroupSet::from_groups([0, 5, 6, 7, 127]).unwrap();
    assert_eq!(format!("{odd:?}"), "KeyGroupSet[0, 5..8, 127]");
    assert_eq!(odd.iter().collect::<Vec<_>>(), [0, 5, 6, 7, 127]);
    assert!(!odd.contains(128) && !odd.contains(1) && odd.contains(127));
    let back: KeyGroupSet = postcard::from_bytes(&postcard::to_stdvec(&odd).unwrap()).unwrap();
    assert_eq!(back, odd);
    let back: KeyGroupSet = serde_json::from_str(&serde_json::to_string(&odd).unwrap()).unwrap();
    assert_eq!(back, odd);

    assert_eq!(
        KeyGroupSet::from_range(100..129),
        Err(KeyGroupError::OutOfRange { group: 128 })
    );
    assert_eq!(
        KeyGroupSet::share(2, 2).unwrap_err().to_string(),
        "no share 2 among 2 owners; the index must be below the number of owners, which must be 1 to 128"
    );
    assert!(KeyGroupSet::share(0, 0).is_err() && KeyGroupSet::share(0, 129).is_err());
    assert_eq!(
        KeyGroupSet::empty().insert(200).unwrap_err().to_string(),
        "key group 200 does not exist; key groups are numbered 0 to 127"
    );
}

// --------------------------------------------------------------- refusals

const T0: i64 = 1_700_000_000_000;

fn spec(kind: WindowKind, aggregates: &[&str]) -> WindowSpec {
    let mut c = WindowConfig::new("w", kind, aggregates);
    c.group_by = vec!["properties.page".into()];
    WindowSpec::compile(&c).unwrap()
}

fn page_event(i: u64, page: &str, ts: i64) -> Event {
    Event {
        id: format!("e{i}").into(),
        name: "view".into(),
        timestamp: ts,
        distinct_id: format!("u{}", i % 7).into(),
        session_id: None,
        properties: vec![
            ("page".into(), Value::Str(page.into())),
            ("n".into(), Value::Int(i as i64)),
        ],
    }
}

/// Feed `events` at increasing watermarks (none fires: all are in the
/// first window).
fn feed(op: &mut dyn WindowOperator, spec: &WindowSpec, events: &[Event]) -> Vec<Emitted> {
    let mut out = Vec::new();
    let mut stats = WindowStats::default();
    let schema = spec.schema(0);
    for (i, ev) in events.iter().enumerate() {
        let mut ctx = Ctx {
            spec,
            schema: &schema,
            out: &mut out,
            stats: &mut stats,
            producer: 0,
        };
        let key = spec.grouping.key(ev);
        op.on_event(&mut ctx, ev, ev.timestamp, key, i as u64, i64::MIN);
    }
    out
}

#[test]
fn a_state_is_refused_by_a_window_it_does_not_fit() {
    let tumbling = WindowKind::Tumbling { size_ms: 60_000 };
    let s = spec(tumbling, &["count", "sum(properties.n)"]);
    let mut op = Tumbling::new(60_000, 0);
    let evs: Vec<Event> = (0..20)
        .map(|i| page_event(i, &format!("/p{}", i % 5), T0 + i as i64))
        .collect();
    feed(&mut op, &s, &evs);
    let state = op.snapshot();
    let all = KeyGroupSet::all();

    let mut sessions = Sessions::new(1_000, None, 0);
    let session_spec = spec(
        WindowKind::Session {
            gap_ms: 1_000,
            max_duration_ms: None,
        },
        &["count"],
    );
    let err = sessions
        .restore(&session_spec, state.clone(), &all)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a tumbling window's state cannot be restored into a session window; restore it into a window of the kind it was saved from, or start this one empty"
    );

    let mut other_size = Tumbling::new(30_000, 0);
    let err = other_size.restore(&s, state.clone(), &all).unwrap_err();
    assert_eq!(
        err,
        StateError::Setting {
            setting: "size_ms",
            saved: "60000".into(),
            current: "30000".into()
        }
    );
    let mut sliding = Sliding::new(60_000, 10_000, 5_000);
    let err = sliding.restore(&s, state.clone(), &all).unwrap_err();
    assert!(matches!(
        err,
        StateError::Kind {
            saved: "tumbling",
            operator: "sliding"
        }
    ));

    // Other aggregates: the restoring operator keeps what it had.
    let fewer = spec(tumbling, &["count"]);
    let mut target = Tumbling::new(60_000, 0);
    feed(&mut target, &fewer, &evs[..3]);
    let before = postcard::to_stdvec(&target.snapshot()).unwrap();
    let err = target.restore(&fewer, state.clone(), &all).unwrap_err();
    assert!(matches!(err, StateError::Aggregates { .. }), "{err}");
    assert_eq!(postcard::to_stdvec(&target.snapshot()).unwrap(), before);

    // An entry filed under the wrong key group.
    let mut text = serde_json::to_value(&state).unwrap();
    let entry = &mut text["Tumbling"]["groups"][0];
    let saved = entry["key_group"].as_u64().unwrap() as u16;
    let wrong = (saved + 1) % KEY_GROUPS;
    entry["key_group"] = json!(wrong);
    let tampered: OperatorState = serde_json::from_value(text).unwrap();
    let err = Tumbling::new(60_000, 0)
        .restore(&s, tampered, &all)
        .unwrap_err();
    assert_eq!(
        err,
        StateError::KeyGroup {
            saved: wrong,
            computed: saved
        }
    );
}

// ------------------------------------------------------------------ sizes

/// Bytes per group of a tumbling window's postcard snapshot holding 100
/// groups of `per_group` events each, `users` distinct users per group.
fn bytes_per_group(aggregates: &[&str], per_group: u64, users: u64) -> usize {
    let s = spec(WindowKind::Tumbling { size_ms: 60_000 }, aggregates);
    let mut op = Tumbling::new(60_000, 0);
    let mut evs = Vec::new();
    for g in 0..100 {
        for i in 0..per_group {
            let mut ev = page_event(i, &format!("/page/{g}"), T0 + i as i64);
            ev.distinct_id = format!("user-{}", i % users).into();
            ev.properties[1].1 = Value::Float(1.0 + (i * 37 % 1_000) as f64 * 1.7);
            evs.push(ev);
        }
    }
    feed(&mut op, &s, &evs);
    postcard::to_stdvec(&op.snapshot()).unwrap().len() / 100
}

#[test]
fn snapshots_stay_compact() {
    let mixes: [(&str, &[&str], u64, u64, usize); 7] = [
        ("count", &["count"], 50, 10, 40),
        (
            "count, sum, avg",
            &["count", "sum(properties.n)", "avg(properties.n)"],
            50,
            10,
            80,
        ),
        (
            "min, max, stddev, first, last",
            &[
                "min(properties.n)",
                "max(properties.n)",
                "stddev(properties.n)",
                "first(properties.n)",
                "last(properties.n)",
            ],
            50,
            10,
            150,
        ),
        (
            "count, distinct (2 users)",
            &["count", "distinct(distinct_id)"],
            50,
            2,
            60,
        ),
        (
            "count, distinct (100 users)",
            &["count", "distinct(distinct_id)"],
            500,
            100,
            600,
        ),
        (
            "count, distinct (2,000 users)",
            &["count", "distinct(distinct_id)"],
            4_000,
            2_000,
            3_200,
        ),
        (
            "count, p50, p95, p99",
            &[
                "count",
                "p50(properties.n)",
                "p95(properties.n)",
                "p99(properties.n)",
            ],
            500,
            10,
            1_500,
        ),
    ];
    for (name, aggregates, per_group, users, bound) in mixes {
        let b = bytes_per_group(aggregates, per_group, users);
        println!("{name}: {b} bytes per group ({per_group} events, {users} users)");
        assert!(
            b <= bound,
            "{name}: {b} bytes per group, expected at most {bound}"
        );
    }
}
