//! Partial results from several instances merge into what one instance
//! over the whole stream publishes.

use serde_json::{Value as Json, json};

use super::*;
use crate::window::state::KeyGroupSet;
use crate::window::{Output, Standalone, Stream, WindowConfig, WindowKind};

const AGGS: &[&str] = &[
    "count",
    "sum(properties.amount) as revenue",
    "min(properties.amount) as low",
    "max(properties.amount) as high",
    "p95(properties.ms) as p95",
    "distinct(distinct_id) as users",
    "avg(properties.amount) as mean",
];

fn window(name: &str, kind: WindowKind) -> WindowConfig {
    let mut c = WindowConfig::new(name, kind, AGGS);
    c.group_by = vec!["properties.page".into()];
    c.time.out_of_orderness_ms = 1_000;
    c
}

fn producer(kind: WindowKind) -> WindowConfig {
    let mut c = window("pageviews", kind);
    c.partials = true;
    c
}

fn merger(kind: WindowKind) -> WindowConfig {
    let mut c = window("pageviews_global", kind);
    c.merge_from = Some("pageviews".into());
    c
}

/// 3,000 events over 20 s, 5 pages, 400 users, amounts -50..=49.
fn events() -> Vec<Event> {
    (0..3_000i64)
        .map(|i| {
            let doc = json!({
                "id": format!("e{i}"),
                "name": "$pageview",
                "distinct_id": format!("u{}", (i * 7919) % 400),
                "timestamp": 1_700_000_000_000i64 + i * 7 - (i % 13) * 40,
                "properties": {"page": format!("/p{}", i % 5), "amount": (i * 31) % 100 - 50,
                               "ms": 1 + (i * 17) % 900},
            });
            Event::from_value(doc, || "x".into()).unwrap()
        })
        .collect()
}

/// Run `events` through `config` one event per input, then finish, as the
/// instance with producer id `producer`.
fn run(config: &WindowConfig, events: &[Event], producer: u64) -> Vec<Output> {
    let mut w = Standalone::new(std::slice::from_ref(config)).unwrap();
    w.windows.set_producer(producer);
    let mut out = Vec::new();
    for ev in events {
        w.process_at(std::slice::from_ref(ev), None, &mut out);
    }
    w.finish(&mut out);
    out
}

/// The partials a producer's results are, as the merger reads them from
/// Kafka (the published JSON, through the source's decoder).
fn partials(out: &[Output]) -> Vec<Partial> {
    out.iter()
        .filter(|o| matches!(o, Output::Result(_)))
        .enumerate()
        .filter_map(|(i, o)| {
            let mut text = String::new();
            o.write_json(&mut text);
            Partial::from_message(text.as_bytes(), "partials", 0, i as i64).unwrap()
        })
        .collect()
}

/// Final results as `(start, end, group, values)`, sorted.
fn finals(out: &[Output]) -> Vec<(i64, i64, Json, Json)> {
    let mut v: Vec<_> = out
        .iter()
        .map(Output::to_json)
        .filter(|j| j["kind"] == "final")
        .map(|j| {
            (
                j["start"].as_i64().unwrap(),
                j["end"].as_i64().unwrap(),
                j["group"].clone(),
                j["values"].clone(),
            )
        })
        .collect();
    v.sort_by_key(|a| (a.0, a.2.to_string()));
    v
}

fn merge_all(config: &WindowConfig, batches: &[Vec<Partial>], wall: Option<i64>) -> Vec<Output> {
    let mut m = Standalone::new(std::slice::from_ref(config)).unwrap();
    let mut out = Vec::new();
    for b in batches {
        let refused = m.windows.on_partials(b, wall, &mut out);
        assert!(refused.is_empty(), "{refused:?}");
    }
    m.finish(&mut out);
    out
}

#[test]
fn merged_partials_equal_one_instance_over_the_whole_stream() {
    for kind in [
        WindowKind::Tumbling { size_ms: 2_000 },
        WindowKind::Sliding {
            size_ms: 3_000,
            slide_ms: 1_000,
        },
    ] {
        let all = events();
        let single = finals(&run(&window("pageviews", kind), &all, 1));
        // Three instances, each owning the users of its "partitions".
        let mut parts = Vec::new();
        for n in 0..3u64 {
            let mine: Vec<Event> = all
                .iter()
                .filter(|e| e.distinct_id.bytes().map(u64::from).sum::<u64>() % 3 == n)
                .cloned()
                .collect();
            let out = run(&producer(kind), &mine, n);
            // Early results would carry no state; every final one does.
            assert!(out.iter().all(|o| o.to_json().get("state").is_some()));
            parts.push(partials(&out));
        }
        // The instances' partials come one instance after the other here:
        // the merger's bound covers that skew (else the second instance's
        // would be late, as the next test shows).
        let mut m = merger(kind);
        m.time.out_of_orderness_ms = 3_600_000;
        let merged = merge_all(&m, &parts, None);
        let merged = finals(&merged);
        assert_eq!(merged.len(), single.len(), "{kind:?}");
        for (m, s) in merged.iter().zip(&single) {
            assert_eq!((m.0, m.1, &m.2), (s.0, s.1, &s.2), "{kind:?}");
            // Count, sum, min, max, distinct (exact below 128 values per
            // sketch) and the DDSketch quantile merge to exactly what one
            // instance holds; the float average up to rounding.
            for k in ["count", "revenue", "low", "high", "users", "p95"] {
                assert_eq!(m.3[k], s.3[k], "{kind:?} {k} {:?}", m.0);
            }
            let (a, b) = (m.3["mean"].as_f64().unwrap(), s.3["mean"].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} {b}");
        }
    }
}

#[test]
fn a_partial_after_its_window_closed_goes_to_late_and_is_counted() {
    let kind = WindowKind::Tumbling { size_ms: 2_000 };
    let all = events();
    let ps = partials(&run(&producer(kind), &all, 1));
    let first = ps.iter().map(|p| p.start).min().unwrap();
    let (old, new): (Vec<Partial>, Vec<Partial>) = ps.into_iter().partition(|p| p.start == first);
    // The newer windows first: the merger's watermark passes the first
    // window's end (out_of_orderness 1 s < the 20 s the stream spans).
    let out = merge_all(&merger(kind), &[new, old.clone()], None);
    let late: Vec<Json> = out
        .iter()
        .filter(|o| o.stream() == Stream::Late)
        .map(Output::to_json)
        .collect();
    assert_eq!(late.len(), old.len());
    assert_eq!(late[0]["reason"], "late");
    assert_eq!(late[0]["event"]["name"], "$window_partial");
    assert_eq!(late[0]["event"]["properties"]["start"], first);
    assert!(finals(&out).iter().all(|f| f.0 != first));
}

#[test]
fn a_partial_that_does_not_fit_the_window_is_refused_saying_why() {
    let kind = WindowKind::Tumbling { size_ms: 2_000 };
    let ps = partials(&run(&producer(kind), &events()[..50], 1));
    let mut m = Standalone::new(&[merger(kind)]).unwrap();
    let mut out = Vec::new();
    let mut bad = ps[0].clone();
    bad.values.swap(0, 1);
    let mut wrong_size = ps[0].clone();
    wrong_size.end += 1;
    let mut other = ps[0].clone();
    other.window = "signups".into();
    let mut garbled = ps[0].clone();
    garbled.state = "AQID".into();
    let refused = m
        .windows
        .on_partials(&[bad, wrong_size, other, garbled], None, &mut out);
    let reasons: Vec<&str> = refused.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        refused.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert!(reasons[0].contains("same aggregates"), "{}", reasons[0]);
    assert!(reasons[1].contains("is not a window"), "{}", reasons[1]);
    assert!(
        reasons[2].contains("merge_from = \"signups\""),
        "{}",
        reasons[2]
    );
    assert!(reasons[3].contains("state"), "{}", reasons[3]);
    assert!(out.is_empty());
}

#[test]
fn a_published_result_without_state_or_not_final_is_not_a_partial() {
    let msg = |kind: &str, state: bool| {
        let mut j = json!({"window": "w", "kind": kind, "start": 0, "end": 10,
                           "group": {}, "values": {"count": 1}});
        if state {
            j["state"] = json!("AQA=");
        }
        j.to_string()
    };
    let read = |text: String| Partial::from_message(text.as_bytes(), "t", 0, 0);
    assert_eq!(read(msg("early", false)), Ok(None));
    assert!(
        read(msg("final", false))
            .unwrap_err()
            .contains("partials = true")
    );
    assert!(
        read(msg("correction", true))
            .unwrap_err()
            .contains("correction")
    );
    assert!(read("{".into()).unwrap_err().contains("JSON"));
    assert!(read(msg("final", true)).unwrap().is_some());
}

#[test]
fn the_merger_closes_on_the_partials_time_and_catches_up_when_they_pause() {
    let kind = WindowKind::Tumbling { size_ms: 2_000 };
    let ps = partials(&run(&producer(kind), &events(), 1));
    let last_end = ps.iter().map(|p| p.end).max().unwrap();
    let mut m = Standalone::new(&[merger(kind)]).unwrap();
    let mut out = Vec::new();
    let wall = 5_000_000_000_000;
    assert!(m.windows.on_partials(&ps, Some(wall), &mut out).is_empty());
    // Up to the newest end minus out_of_orderness: the last window is
    // still open.
    let closed = finals(&out);
    assert!(closed.iter().all(|f| f.1 < last_end));
    // Less than idle_timeout later nothing moves; then the watermark
    // reaches the newest end (and no further: wall time is years ahead).
    m.tick(wall + 1_000, &mut out);
    assert_eq!(finals(&out).len(), closed.len());
    m.tick(wall + 10_000, &mut out);
    let all = finals(&out);
    assert!(all.len() > closed.len());
    assert!(all.iter().any(|f| f.1 == last_end));
    let listed = m.windows.list();
    assert_eq!(listed[0]["watermark"], last_end);
}

#[test]
fn the_merging_state_survives_a_snapshot() {
    let kind = WindowKind::Tumbling { size_ms: 2_000 };
    let ps = partials(&run(&producer(kind), &events(), 1));
    let (a, b) = ps.split_at(ps.len() / 2);
    let uninterrupted = merge_all(&merger(kind), &[a.to_vec(), b.to_vec()], Some(1));
    let mut m = Standalone::new(&[merger(kind)]).unwrap();
    let mut out = Vec::new();
    assert!(m.windows.on_partials(a, Some(1), &mut out).is_empty());
    let saved = m.windows.snapshot();
    let bytes = postcard::to_allocvec(&saved).unwrap();
    let mut again = Standalone::new(&[merger(kind)]).unwrap();
    again
        .windows
        .restore(postcard::from_bytes(&bytes).unwrap(), &KeyGroupSet::all())
        .unwrap();
    assert!(again.windows.on_partials(b, Some(1), &mut out).is_empty());
    again.finish(&mut out);
    assert_eq!(finals(&out), finals(&uninterrupted));
}

#[test]
fn a_partial_delivered_twice_is_merged_once_even_across_a_restart() {
    let kind = WindowKind::Tumbling { size_ms: 2_000 };
    let all = events();
    let ps = partials(&run(&producer(kind), &all, 7));
    // Nothing closes before the end: every duplicate meets its original.
    let mut wide = merger(kind);
    wide.time.out_of_orderness_ms = 3_600_000;
    let once = finals(&merge_all(&wide, std::slice::from_ref(&ps), None));
    // The instance published the first half, crashed, replayed its log and
    // published everything again; the merger restarted from a snapshot in
    // between.
    let half = ps.len() / 2;
    let mut m = Standalone::new(std::slice::from_ref(&wide)).unwrap();
    let mut out = Vec::new();
    assert!(
        m.windows
            .on_partials(&ps[..half], None, &mut out)
            .is_empty()
    );
    let bytes = postcard::to_allocvec(&m.windows.snapshot()).unwrap();
    let mut again = Standalone::new(std::slice::from_ref(&wide)).unwrap();
    again
        .windows
        .restore(postcard::from_bytes(&bytes).unwrap(), &KeyGroupSet::all())
        .unwrap();
    let refused = again.windows.on_partials(&ps, None, &mut out);
    assert_eq!(
        refused.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..half).collect::<Vec<_>>(),
        "exactly the first half is refused"
    );
    assert!(
        refused[0].1.contains("a duplicate: producer"),
        "{}",
        refused[0].1
    );
    again.finish(&mut out);
    assert_eq!(finals(&out), once);
    // Another instance's result for the same windows and groups is its own
    // contribution, merged: every count doubles.
    let other = partials(&run(&producer(kind), &all, 8));
    let doubled = finals(&merge_all(&wide, &[ps.clone(), other], None));
    assert_eq!(doubled.len(), once.len());
    for (d, o) in doubled.iter().zip(&once) {
        assert_eq!(d.3["count"], o.3["count"].as_i64().unwrap() * 2);
    }
}

#[test]
fn a_state_in_the_first_encoding_still_merges_without_a_producer() {
    let kind = WindowKind::Tumbling { size_ms: 2_000 };
    let ps = partials(&run(&producer(kind), &events()[..50], 3));
    let spec = WindowSpec::compile(&merger(kind)).unwrap();
    let now = ps[0].open(&spec).unwrap();
    assert_eq!(now.producer, Some(3));
    // Encoding 1: the version byte, then the key and accumulator.
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = b64.decode(&ps[0].state).unwrap();
    let mut old = ps[0].clone();
    old.state = b64.encode([&[1u8][..], &bytes[9..]].concat());
    let then = old.open(&spec).unwrap();
    assert_eq!(then.producer, None);
    assert_eq!(then.key, now.key);
    assert_eq!(format!("{:?}", then.acc), format!("{:?}", now.acc));
}
