//! Property tests of the window operators against a naive reference, on
//! random out-of-order streams (issue 5's acceptance).
//!
//! A fixed-seed xorshift generator makes streams whose timestamps mostly
//! increase, with disorder of four sizes: small, within the out-of-orderness
//! bound, beyond it (so within or past the allowed lateness, depending on the
//! window), and far beyond. Events carry a page (sometimes missing), a
//! numeric property `n` (an integer, a float, or missing, null or text, which
//! aggregates skip), and a `distinct_id` drawn from a pool whose size varies
//! from 3 to 3,000. One in ten events has another name, which filtered
//! windows leave out but which still moves their watermark.
//!
//! The reference replays the stream event by event with its own watermark
//! (largest timestamp so far minus the bound; the watermark an event is
//! judged by is the one before it) and decides, from the documented rules,
//! which window(s) each event lands in or that it is late:
//!
//! - tumbling: late iff `end + allowed_lateness <= watermark`;
//! - sliding: late iff the last window holding it is past the lateness;
//!   otherwise it counts in each of its windows that is not (a window past
//!   its lateness was published for the last time and is not republished);
//! - sessions: per key, sessions whose end plus lateness is at or below the
//!   watermark are forgotten; the event joins every session it is within
//!   `gap` of (with `max_duration`: the first one it fits in), else starts
//!   one, else — if `ts + gap + lateness <= watermark` — is late.
//!
//! Each window's events are then aggregated naively and compared with the
//! last result published for that window and group (final or latest
//! correction; for sessions, results listed in a later result's `replaces`
//! no longer count).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value as Json, json};

use super::agg::{DISTINCT_EXACT_MAX, DISTINCT_STANDARD_ERROR, QUANTILE_ALPHA};
use super::*;
use crate::event::Value;

/// The seeded generator; also drives the snapshot tests (`state/tests.rs`).
pub(super) use crate::test_rng::Rng;

const SEEDS: u64 = 6;
const T0: i64 = 1_700_000_000_000;
const AGGS: [&str; 9] = [
    "count",
    "sum(properties.n)",
    "avg(properties.n)",
    "min(properties.n)",
    "max(properties.n)",
    "distinct(distinct_id)",
    "p50(properties.n)",
    "p95(properties.n)",
    "p99(properties.n)",
];
const QUANTILES: [(&str, f64); 3] = [
    ("p50(properties.n)", 0.5),
    ("p95(properties.n)", 0.95),
    ("p99(properties.n)", 0.99),
];

/// One random stream and the event-time settings it was shaped for.
struct Case {
    seed: u64,
    bound: i64,
    lateness: i64,
    events: Vec<Event>,
}

fn case(seed: u64) -> Case {
    // Every (bound, lateness) pairing of zero / small / large over the seeds.
    let (bound, lateness) = [
        (0, 0),
        (1_000, 2_000),
        (5_000, 0),
        (0, 15_000),
        (5_000, 15_000),
        (1_000, 0),
    ][(seed % 6) as usize];
    let mut rng = Rng::new(seed);
    let n = 1_500 + rng.below(1_500) as usize;
    let step = rng.pick(&[5, 30, 120]);
    let users = rng.pick(&[3, 40, 400, 3_000]);
    let pages = 1 + rng.below(5);
    let float_share = rng.pick(&[0.0, 0.05, 0.45]);
    let mut cursor = T0;
    let events = (0..n)
        .map(|i| {
            cursor += rng.upto(2 * step);
            let r = rng.unit();
            let delay = if r < 0.70 {
                rng.upto(step)
            } else if r < 0.85 {
                rng.upto(bound)
            } else if r < 0.95 {
                bound + rng.upto(lateness + 10 * step)
            } else {
                bound + lateness + rng.upto(4 * (bound + lateness) + 200 * step)
            };
            let mut properties = Vec::new();
            if rng.unit() < 0.95 {
                let page = format!("/p{}", rng.below(pages));
                properties.push(("page".into(), Value::Str(page.into())));
            }
            let r = rng.unit();
            let numeric = 0.12 + (1.0 - 0.12) * float_share;
            let value = if r < 0.08 {
                None
            } else if r < 0.10 {
                Some(Value::Null)
            } else if r < 0.12 {
                Some(Value::Str("n/a".into()))
            } else if r < numeric {
                // Hundredths: mostly not exact in binary; a whole number
                // sometimes, to tie with an integer for min / max.
                Some(Value::Float((rng.upto(505_000) - 5_000) as f64 / 100.0))
            } else {
                Some(Value::Int(rng.upto(5_050) - 50))
            };
            if let Some(v) = value {
                properties.push(("n".into(), v));
            }
            let name = if rng.unit() < 0.9 {
                "$pageview"
            } else {
                "$identify"
            };
            Event {
                id: format!("e{i}").into(),
                name: name.into(),
                timestamp: cursor - delay,
                distinct_id: format!("u{}", rng.below(users)).into(),
                session_id: None,
                properties,
            }
        })
        .collect();
    Case {
        seed,
        bound,
        lateness,
        events,
    }
}

fn config(name: &str, case: &Case, kind: WindowKind, group_by: Option<&str>) -> WindowConfig {
    let mut c = WindowConfig::new(name, kind, &AGGS);
    c.time.out_of_orderness_ms = case.bound;
    c.time.allowed_lateness_ms = case.lateness;
    if let Some(g) = group_by {
        c.group_by = vec![g.to_owned()];
    }
    c
}

fn filtered(mut c: WindowConfig) -> WindowConfig {
    c.filter = Some(json!({"names": ["$pageview"]}));
    c
}

/// Wall time for every call: the stream's newest timestamp, so nothing is
/// beyond the future-skew cap.
fn now_of(events: &[Event]) -> i64 {
    events.iter().map(|e| e.timestamp).max().unwrap_or(T0)
}

/// Run `events` in chunks of random size (1 to 400; a tick, which must
/// change nothing here, after each), or all in one call when `chunks` is
/// None.
fn run(configs: &[WindowConfig], events: &[Event], chunks: Option<&mut Rng>) -> Vec<Output> {
    let now = now_of(events);
    let mut w = Standalone::new(configs).unwrap();
    let mut out = Vec::new();
    match chunks {
        None => w.process(events, now, &mut out),
        Some(rng) => {
            let mut rest = events;
            while !rest.is_empty() {
                let take = (1 + rng.below(400) as usize).min(rest.len());
                let (chunk, tail) = rest.split_at(take);
                w.process(chunk, now, &mut out);
                w.tick(now, &mut out);
                rest = tail;
            }
        }
    }
    w.finish(&mut out);
    // The window's own counters agree with its channels.
    for (i, c) in configs.iter().enumerate() {
        let stats = &w.windows.list()[i]["stats"];
        let late = out
            .iter()
            .filter(|o| o.stream() == Stream::Late && o.to_json()["window"] == c.name.as_str())
            .count();
        assert_eq!(stats["late_events"], late, "{}: late counter", c.name);
        assert_eq!(stats["future_rejected"], 0, "{}", c.name);
    }
    out
}

// ------------------------------------------------------------ reference

/// A window result's identity: start, end and the group as JSON text.
type Key = (i64, i64, String);

/// What the reference expects of one window definition.
#[derive(Default)]
struct Expected {
    /// The events (indexes into the stream) of each window and group.
    windows: BTreeMap<Key, Vec<usize>>,
    /// Late events, with the watermark they were judged by.
    late: BTreeMap<usize, i64>,
    /// Events that passed the filter.
    matched: usize,
}

/// The watermark before each event: the largest timestamp before it minus
/// the bound, `i64::MIN` before the first.
fn watermarks(events: &[Event], bound: i64) -> Vec<i64> {
    let mut wm = i64::MIN;
    events
        .iter()
        .map(|e| {
            let before = wm;
            wm = wm.max(e.timestamp - bound);
            before
        })
        .collect()
}

fn matches(c: &WindowConfig, ev: &Event) -> bool {
    c.filter.is_none() || ev.name == "$pageview"
}

fn group(c: &WindowConfig, ev: &Event) -> String {
    let mut m = serde_json::Map::new();
    for path in &c.group_by {
        let v = match path.as_str() {
            "distinct_id" => Json::from(ev.distinct_id.as_str()),
            "properties.page" => match ev.get("page") {
                Some(Value::Str(s)) => Json::from(s.as_str()),
                _ => Json::Null,
            },
            other => panic!("the reference does not group by {other}"),
        };
        m.insert(path.clone(), v);
    }
    Json::Object(m).to_string()
}

fn reference(c: &WindowConfig, events: &[Event]) -> Expected {
    let wms = watermarks(events, c.time.out_of_orderness_ms);
    let lateness = c.time.allowed_lateness_ms;
    let mut x = Expected::default();
    match c.kind {
        WindowKind::Tumbling { size_ms } => {
            for (i, ev) in events.iter().enumerate() {
                if !matches(c, ev) {
                    continue;
                }
                x.matched += 1;
                let start = ev.timestamp.div_euclid(size_ms) * size_ms;
                let end = start + size_ms;
                if end + lateness <= wms[i] {
                    x.late.insert(i, wms[i]);
                } else {
                    let key = (start, end, group(c, ev));
                    x.windows.entry(key).or_default().push(i);
                }
            }
        }
        WindowKind::Sliding { size_ms, slide_ms } => {
            for (i, ev) in events.iter().enumerate() {
                if !matches(c, ev) {
                    continue;
                }
                x.matched += 1;
                let first_end = ev.timestamp.div_euclid(slide_ms) * slide_ms + slide_ms;
                let last_end = first_end - slide_ms + size_ms;
                if last_end + lateness <= wms[i] {
                    x.late.insert(i, wms[i]);
                    continue;
                }
                let mut end = first_end;
                while end <= last_end {
                    if end + lateness > wms[i] {
                        let key = (end - size_ms, end, group(c, ev));
                        x.windows.entry(key).or_default().push(i);
                    }
                    end += slide_ms;
                }
            }
        }
        WindowKind::Session {
            gap_ms,
            max_duration_ms,
        } => sessions_reference(c, events, &wms, gap_ms, max_duration_ms, &mut x),
    }
    x
}

/// A session as the reference keeps it.
struct RefSession {
    start: i64,
    last: i64,
    events: Vec<usize>,
}

fn sessions_reference(
    c: &WindowConfig,
    events: &[Event],
    wms: &[i64],
    gap: i64,
    max_duration: Option<i64>,
    x: &mut Expected,
) {
    let lateness = c.time.allowed_lateness_ms;
    let mut open: HashMap<String, Vec<RefSession>> = HashMap::new();
    let mut done: Vec<(String, RefSession)> = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        if !matches(c, ev) {
            continue;
        }
        x.matched += 1;
        let (ts, wm) = (ev.timestamp, wms[i]);
        let key = group(c, ev);
        let list = open.entry(key.clone()).or_default();
        // Forget what is past its lateness: its last result stands.
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(list)
            .into_iter()
            .partition(|s| s.last + gap + lateness <= wm);
        done.extend(gone.into_iter().map(|s| (key.clone(), s)));
        *list = kept;
        let touching: Vec<usize> = (0..list.len())
            .filter(|&j| ts < list[j].last + gap && list[j].start < ts + gap)
            .collect();
        let lo = touching.iter().map(|&j| list[j].start).fold(ts, i64::min);
        let hi = touching.iter().map(|&j| list[j].last).fold(ts, i64::max);
        let join: Vec<usize> = match max_duration {
            Some(max) if hi - lo > max => touching
                .into_iter()
                .filter(|&j| ts.max(list[j].last) - ts.min(list[j].start) <= max)
                .take(1)
                .collect(),
            _ => touching,
        };
        if join.is_empty() && ts + gap + lateness <= wm {
            x.late.insert(i, wm);
            continue;
        }
        let mut merged = RefSession {
            start: ts,
            last: ts,
            events: vec![i],
        };
        for &j in join.iter().rev() {
            let s = list.remove(j);
            merged.start = merged.start.min(s.start);
            merged.last = merged.last.max(s.last);
            merged.events.extend(s.events);
        }
        let at = list.partition_point(|s| s.start <= merged.start);
        list.insert(at, merged);
    }
    done.extend(
        open.into_iter()
            .flat_map(|(k, list)| list.into_iter().map(move |s| (k.clone(), s))),
    );
    for (key, s) in done {
        let prev = x.windows.insert((s.start, s.last + gap, key), s.events);
        assert!(prev.is_none(), "two reference sessions with one extent");
    }
}

// ------------------------------------------------------------ what ran

/// What one window published.
#[derive(Default)]
struct Published {
    /// The last result of each window and group still standing.
    last: BTreeMap<Key, Json>,
    /// `(kind, revision)` of every result, per window and group.
    kinds: BTreeMap<Key, Vec<(String, u64)>>,
    /// Late events (index into the stream) and the watermark reported.
    late: BTreeMap<usize, i64>,
    corrections: usize,
    replaced: usize,
    /// Extents a result's `replaces` named that were never published (or
    /// were already superseded).
    unpublished_replaced: Vec<Key>,
}

fn published(out: &[Output], index: usize, name: &str) -> Published {
    let mut p = Published::default();
    for o in out {
        let m = &o.to_json();
        if o.stream() == Stream::Late {
            if m["window"] != name {
                continue;
            }
            assert_eq!(m["reason"], "late", "{name}: {m}");
            let id = m["event"]["id"].as_str().unwrap();
            let i: usize = id[1..].parse().unwrap();
            let prev = p.late.insert(i, m["watermark"].as_i64().unwrap());
            assert!(prev.is_none(), "{name}: {id} reported late twice");
            continue;
        }
        if o.stream() != Stream::Results(index) {
            continue;
        }
        assert_eq!(m["window"], name);
        let group = m["group"].to_string();
        if let Some(list) = m.get("replaces").and_then(Json::as_array) {
            for r in list {
                let k = (
                    r["start"].as_i64().unwrap(),
                    r["end"].as_i64().unwrap(),
                    group.clone(),
                );
                match p.last.remove(&k) {
                    Some(_) => p.replaced += 1,
                    None => p.unpublished_replaced.push(k),
                }
            }
        }
        let key = (
            m["start"].as_i64().unwrap(),
            m["end"].as_i64().unwrap(),
            group,
        );
        let kind = m["kind"].as_str().unwrap().to_owned();
        assert_ne!(kind, "early", "{name}: no early firings configured");
        if kind == "correction" {
            p.corrections += 1;
        }
        let revision = m.get("revision").and_then(Json::as_u64).unwrap_or(0);
        p.kinds
            .entry(key.clone())
            .or_default()
            .push((kind, revision));
        p.last.insert(key, m.clone());
    }
    p
}

// ------------------------------------------------------------ checking

/// A numeric value of `n`, as aggregates see it.
#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    fn json(self) -> Json {
        match self {
            Num::Int(i) => Json::from(i),
            Num::Float(f) => Json::from(f),
        }
    }
}

fn num(ev: &Event) -> Option<Num> {
    match ev.get("n") {
        Some(Value::Int(i)) => Some(Num::Int(*i)),
        Some(Value::Float(f)) => Some(Num::Float(*f)),
        _ => None,
    }
}

/// What the checks of one stream covered, so a test can insist it is not
/// vacuous.
#[derive(Default, Debug)]
struct Coverage {
    windows: usize,
    late: usize,
    corrections: usize,
    replaced: usize,
    float_sums: usize,
    int_sums: usize,
    distinct_estimated: usize,
    distinct_exact: usize,
    quantiles: usize,
}

/// Compare one result's values with a naive computation over its events.
fn check_values(what: &str, values: &Json, evs: &[&Event], cov: &mut Coverage) {
    let v = |name: &str| &values[name];
    assert_eq!(v("count"), evs.len(), "{what}: count");
    let nums: Vec<Num> = evs.iter().filter_map(|e| num(e)).collect();

    // sum / avg. Integers are summed exactly (i128) by the aggregate, so an
    // integer-only sum must match exactly and stay an integer. With floats,
    // the aggregate sums with Neumaier compensation, merged across panes and
    // sessions: its error is about 2ε·|sum| + O(n·ε²)·Σ|x|. The reference
    // sum is exact: every float here is k/100, so Σ(100·x) is an integer.
    // The tolerance, 64ε·Σ|x|, is far above that bound (n ≤ 3,000) and
    // far below any value's weight (|x| ≥ 0.01, Σ|x| ≤ 1.6·10⁷).
    let has_float = nums.iter().any(|n| matches!(n, Num::Float(_)));
    let hundredths: i128 = nums
        .iter()
        .map(|n| match n {
            Num::Int(i) => i128::from(*i) * 100,
            Num::Float(f) => (f * 100.0).round() as i128,
        })
        .sum();
    let abs: f64 = nums.iter().map(|n| n.f64().abs()).sum();
    let tol = 64.0 * f64::EPSILON * abs;
    let exact = hundredths as f64 / 100.0;
    if has_float {
        cov.float_sums += 1;
        let got = v("sum(properties.n)").as_f64().unwrap();
        assert!(
            (got - exact).abs() <= tol,
            "{what}: sum {got} vs {exact} (tolerance {tol})"
        );
    } else {
        cov.int_sums += 1;
        assert_eq!(
            v("sum(properties.n)"),
            &Json::from((hundredths / 100) as i64),
            "{what}: integer sum"
        );
    }
    if nums.is_empty() {
        for name in [
            "avg(properties.n)",
            "min(properties.n)",
            "max(properties.n)",
        ] {
            assert_eq!(v(name), &Json::Null, "{what}: {name} of nothing");
        }
    } else {
        let n = nums.len() as f64;
        let got = v("avg(properties.n)").as_f64().unwrap();
        let want = exact / n;
        let tol = tol / n + 2.0 * f64::EPSILON * want.abs();
        assert!(
            (got - want).abs() <= tol,
            "{what}: avg {got} vs {want} (tolerance {tol})"
        );
        // min / max compare by value; on a tie between 5 and 5.0 the integer
        // is the min and the float the max (as agg.rs documents).
        let min = nums.iter().copied().reduce(|a, b| {
            let (x, y) = (a.f64(), b.f64());
            if y < x || (y == x && matches!(b, Num::Int(_))) {
                b
            } else {
                a
            }
        });
        let max = nums.iter().copied().reduce(|a, b| {
            let (x, y) = (a.f64(), b.f64());
            if y > x || (y == x && matches!(b, Num::Float(_))) {
                b
            } else {
                a
            }
        });
        assert_eq!(v("min(properties.n)"), &min.unwrap().json(), "{what}: min");
        assert_eq!(v("max(properties.n)"), &max.unwrap().json(), "{what}: max");
    }

    // distinct: exact up to 128 values, else within 3 standard errors.
    let users: BTreeSet<&str> = evs.iter().map(|e| e.distinct_id.as_str()).collect();
    let got = v("distinct(distinct_id)").as_u64().unwrap() as f64;
    let want = users.len() as f64;
    if users.len() <= DISTINCT_EXACT_MAX {
        cov.distinct_exact += 1;
        assert_eq!(got, want, "{what}: distinct (exact range)");
    } else {
        cov.distinct_estimated += 1;
        let bound = 3.0 * DISTINCT_STANDARD_ERROR * want;
        assert!(
            (got - want).abs() <= bound,
            "{what}: distinct {got} vs {want} (bound {bound})"
        );
    }

    // Quantiles: the value at rank ⌊q·(n−1)⌋ (computed in f64 as the sketch
    // does), within the relative accuracy α; the 10⁻⁶ slack covers the
    // rounding of γ^k when the sketch maps a bucket back to a value.
    let mut sorted: Vec<f64> = nums.iter().map(|n| n.f64()).collect();
    sorted.sort_by(f64::total_cmp);
    for (name, q) in QUANTILES {
        if sorted.is_empty() {
            assert_eq!(v(name), &Json::Null, "{what}: {name} of nothing");
            continue;
        }
        cov.quantiles += 1;
        let rank = (q * (sorted.len() as f64 - 1.0)) as usize;
        let want = sorted[rank];
        let got = v(name).as_f64().unwrap();
        let bound = QUANTILE_ALPHA * (1.0 + 1e-6) * want.abs();
        assert!(
            (got - want).abs() <= bound,
            "{what}: {name} {got} vs {want} (rank {rank} of {}, bound {bound})",
            sorted.len()
        );
    }
}

/// Check every window of `configs` on one stream against the reference.
fn check_case(case: &Case, configs: &[WindowConfig], cov: &mut Coverage) {
    let mut chunks = Rng::new(case.seed ^ 0x5eed);
    let out = run(configs, &case.events, Some(&mut chunks));
    for (index, c) in configs.iter().enumerate() {
        let what = format!("seed {} window {} {:?}", case.seed, c.name, c.kind);
        let x = reference(c, &case.events);
        let p = published(&out, index, &c.name);

        // Late: exactly the events the reference finds late, each with the
        // watermark it was judged by.
        assert_eq!(
            p.late.keys().collect::<Vec<_>>(),
            x.late.keys().collect::<Vec<_>>(),
            "{what}: late events"
        );
        assert_eq!(p.late, x.late, "{what}: late watermarks");

        // The same windows and groups, each with the right values.
        let only_published: Vec<_> = p
            .last
            .keys()
            .filter(|k| !x.windows.contains_key(*k))
            .collect();
        let only_expected: Vec<_> = x
            .windows
            .keys()
            .filter(|k| !p.last.contains_key(*k))
            .collect();
        assert!(
            only_published.is_empty() && only_expected.is_empty(),
            "{what}: published but not expected {only_published:?}; expected but not published {only_expected:?}"
        );
        for (key, idx) in &x.windows {
            let evs: Vec<&Event> = idx.iter().map(|&i| &case.events[i]).collect();
            check_values(
                &format!("{what} {key:?}"),
                &p.last[key]["values"],
                &evs,
                cov,
            );
        }

        // Nothing silently dropped: every matched event is late or counted.
        let counted: BTreeSet<usize> = x.windows.values().flatten().copied().collect();
        assert_eq!(counted.len() + x.late.len(), x.matched, "{what}: reference");
        assert!(counted.iter().all(|i| !x.late.contains_key(i)));
        let counts: u64 = p
            .last
            .values()
            .map(|m| m["values"]["count"].as_u64().unwrap())
            .sum();
        match c.kind {
            // Each accepted event is in exactly one window (or session).
            WindowKind::Tumbling { .. } | WindowKind::Session { .. } => assert_eq!(
                counts as usize + p.late.len(),
                x.matched,
                "{what}: counted + late = matched"
            ),
            // Each accepted event is in 1 to size/slide windows.
            WindowKind::Sliding { size_ms, slide_ms } => {
                let most = (size_ms / slide_ms) as usize;
                assert!(counts as usize >= counted.len());
                assert!(counts as usize <= counted.len() * most);
            }
        }

        // Tumbling and sliding: a window and group is published once as
        // final, then as corrections numbered 1, 2, ...
        if !matches!(c.kind, WindowKind::Session { .. }) {
            for (key, kinds) in &p.kinds {
                let want: Vec<(String, u64)> = (0..kinds.len() as u64)
                    .map(|r| {
                        let kind = if r == 0 { "final" } else { "correction" };
                        (kind.to_owned(), r)
                    })
                    .collect();
                assert_eq!(kinds, &want, "{what} {key:?}: result kinds");
            }
        }
        cov.windows += x.windows.len();
        cov.late += x.late.len();
        cov.corrections += p.corrections;
        cov.replaced += p.replaced;
        // A result's `replaces` names only results published before it
        // (and not already superseded).
        assert!(
            p.unpublished_replaced.is_empty(),
            "{what}: replaces names extents never published: {:?}",
            p.unpublished_replaced
        );
    }
}

fn check_kind(make: impl Fn(&Case, &mut Rng) -> Vec<WindowConfig>) -> Coverage {
    let mut cov = Coverage::default();
    for seed in 0..SEEDS {
        let case = case(seed);
        let mut rng = Rng::new(seed ^ 0xc0f1);
        let configs = make(&case, &mut rng);
        check_case(&case, &configs, &mut cov);
    }
    cov
}

#[test]
fn tumbling_windows_match_a_naive_reference_on_random_out_of_order_streams() {
    let cov = check_kind(|case, rng| {
        let size = |rng: &mut Rng| rng.pick(&[1_000, 10_000, 60_000]);
        vec![
            filtered(config(
                "by_page",
                case,
                WindowKind::Tumbling { size_ms: size(rng) },
                Some("properties.page"),
            )),
            config(
                "all",
                case,
                WindowKind::Tumbling { size_ms: size(rng) },
                None,
            ),
        ]
    });
    assert!(cov.late > 0 && cov.corrections > 0, "{cov:?}");
    assert!(cov.float_sums > 0 && cov.int_sums > 0, "{cov:?}");
    assert!(
        cov.distinct_estimated > 0 && cov.distinct_exact > 0,
        "{cov:?}"
    );
}

#[test]
fn sliding_windows_match_a_naive_reference_on_random_out_of_order_streams() {
    // size / slide of 1 (tumbling), 3, 4, 5 and 12.
    const SHAPES: [(i64, i64); 5] = [
        (10_000, 10_000),
        (3_000, 1_000),
        (20_000, 5_000),
        (10_000, 2_000),
        (60_000, 5_000),
    ];
    let cov = check_kind(|case, rng| {
        let (a, b) = (rng.pick(&SHAPES), SHAPES[(case.seed % 5) as usize]);
        vec![
            filtered(config(
                "by_page",
                case,
                WindowKind::Sliding {
                    size_ms: a.0,
                    slide_ms: a.1,
                },
                Some("properties.page"),
            )),
            config(
                "all",
                case,
                WindowKind::Sliding {
                    size_ms: b.0,
                    slide_ms: b.1,
                },
                None,
            ),
        ]
    });
    assert!(cov.late > 0 && cov.corrections > 0, "{cov:?}");
    assert!(cov.distinct_estimated > 0, "{cov:?}");
}

#[test]
fn sessions_match_a_naive_reference_on_random_out_of_order_streams() {
    let cov = check_kind(|case, rng| {
        let gap = rng.pick(&[200, 2_000, 10_000]);
        let kind = |max_duration_ms| WindowKind::Session {
            gap_ms: gap,
            max_duration_ms,
        };
        vec![
            filtered(config("by_user", case, kind(None), Some("distinct_id"))),
            config(
                "by_user_max",
                case,
                kind(Some(3 * gap)),
                Some("distinct_id"),
            ),
        ]
    });
    assert!(
        cov.late > 0 && cov.corrections > 0 && cov.replaced > 0,
        "{cov:?}"
    );
}

#[test]
fn results_and_late_events_do_not_depend_on_batch_sizes() {
    for seed in 0..SEEDS {
        let case = case(seed);
        let configs = [
            config(
                "t",
                &case,
                WindowKind::Tumbling { size_ms: 10_000 },
                Some("properties.page"),
            ),
            filtered(config(
                "s",
                &case,
                WindowKind::Sliding {
                    size_ms: 20_000,
                    slide_ms: 5_000,
                },
                None,
            )),
            config(
                "sess",
                &case,
                WindowKind::Session {
                    gap_ms: 2_000,
                    max_duration_ms: Some(6_000),
                },
                Some("distinct_id"),
            ),
        ];
        let whole = run(&configs, &case.events, None);
        let mut rng = Rng::new(seed ^ 0xba7c);
        let chunked = run(&configs, &case.events, Some(&mut rng));
        // Per channel and window the sequences are identical (how windows
        // interleave with each other follows the batches).
        let per = |out: &[Output], stream: Stream, name: &str| -> Vec<Json> {
            out.iter()
                .filter(|o| o.stream() == stream && o.to_json()["window"] == name)
                .map(|o| o.to_json())
                .collect()
        };
        for (i, c) in configs.iter().enumerate() {
            let name = c.name.as_str();
            let a = per(&whole, Stream::Results(i), name);
            assert!(!a.is_empty(), "seed {seed} {name}");
            assert_eq!(
                a,
                per(&chunked, Stream::Results(i), name),
                "seed {seed} {name}"
            );
            assert_eq!(
                per(&whole, Stream::Late, name),
                per(&chunked, Stream::Late, name),
                "seed {seed} {name}: late"
            );
        }
    }
}

/// A session published, then extended twice by late events before it
/// closes again: the correction must list only the result published
/// before, `[0, 2.4 s)`. session.rs (`on_event`, the merge loop) pushes a
/// joined session's *current* extent whenever it was ever published, so
/// the unpublished intermediate extent `[0, 4 s)` is listed too.
#[test]
fn a_session_correction_replaces_only_results_that_were_published() {
    let mut c = WindowConfig::new(
        "sess",
        WindowKind::Session {
            gap_ms: 2_000,
            max_duration_ms: None,
        },
        &["count"],
    );
    c.group_by = vec!["distinct_id".into()];
    c.time.out_of_orderness_ms = 0;
    c.time.allowed_lateness_ms = 15_000;
    let ev = |user: &str, ts: i64| {
        let text = json!({"name": "e", "distinct_id": user, "timestamp": ts}).to_string();
        Event::from_json(&text, || format!("{user}@{ts}")).unwrap()
    };
    let mut w = Standalone::new(&[c]).unwrap();
    let mut out = Vec::new();
    let events = [
        ev("u", 0),
        ev("u", 400),   // u: [0, 2.4 s)
        ev("v", 3_000), // watermark 3 s: u's [0, 2.4 s) is final
        ev("u", 2_000), // late, joins: [0, 4 s), not complete, not published
        ev("u", 3_500), // joins again: [0, 5.5 s)
    ];
    w.process(&events, 3_500, &mut out);
    w.finish(&mut out);
    let all: Vec<Json> = out.iter().map(Output::to_json).collect();
    let u: Vec<&Json> = all
        .iter()
        .filter(|p| p["group"]["distinct_id"] == "u")
        .collect();
    assert_eq!(u.len(), 2, "{u:?}");
    assert_eq!(
        (&u[0]["kind"], &u[0]["end"]),
        (&json!("final"), &json!(2_400))
    );
    assert_eq!(
        (&u[1]["kind"], &u[1]["end"]),
        (&json!("correction"), &json!(5_500))
    );
    assert_eq!(u[1]["values"]["count"], 4);
    assert_eq!(
        u[1]["replaces"],
        json!([{"start": 0, "end": 2_400}]),
        "only [0, 2.4 s) was ever published"
    );
}
