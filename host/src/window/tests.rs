//! Semantics of the window operators, through the public driver.

use serde_json::{Value as Json, json};

use super::*;
use crate::engine::time::TimeConfig as EngineTime;

fn line(ts: i64, url: &str) -> String {
    json!({"name": "$pageview", "distinct_id": "u", "timestamp": ts,
           "properties": {"$current_url": url, "ms": ts % 7}})
    .to_string()
}

/// Run NDJSON `input` through `w`: each line an event arriving on its own,
/// or a `{"$wall": MS}` line setting the wall clock (none before the first)
/// and ticking; at the end every open window fires.
fn replay(w: &mut Standalone, input: &str) -> anyhow::Result<Vec<Output>> {
    let mut out = Vec::new();
    let mut wall = None;
    for (i, line) in input.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let doc: Json = serde_json::from_str(line)?;
        if let Some(t) = doc.get("$wall") {
            let t = t.as_i64().unwrap();
            wall = Some(t);
            w.tick(t, &mut out);
            continue;
        }
        let id = format!("line-{}", i + 1);
        let ev = Event::from_value(doc, || id)?;
        w.process_at(std::slice::from_ref(&ev), wall, &mut out);
    }
    w.finish(&mut out);
    Ok(out)
}

fn run(configs: &[WindowConfig], lines: &[String]) -> Vec<Output> {
    let mut w = Standalone::new(configs).unwrap();
    replay(&mut w, &lines.join("\n")).unwrap()
}

fn results(out: &[Output]) -> Vec<(String, i64, i64, Json, Json)> {
    out.iter()
        .filter(|o| o.stream() != Stream::Late)
        .map(|o| {
            let p = &o.to_json();
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["start"].as_i64().unwrap(),
                p["end"].as_i64().unwrap(),
                p["group"].clone(),
                p["values"]["count"].clone(),
            )
        })
        .collect()
}

fn tumbling(size_ms: i64, bound: i64, lateness: i64) -> WindowConfig {
    let mut c = WindowConfig::new("t", WindowKind::Tumbling { size_ms }, &["count"]);
    c.time.out_of_orderness_ms = bound;
    c.time.allowed_lateness_ms = lateness;
    c
}

#[test]
fn tumbling_counts_per_window_and_group_in_order_despite_disorder() {
    let mut c = tumbling(60_000, 10_000, 0);
    c.group_by = vec!["properties.$current_url".into()];
    let out = run(
        &[c],
        &[
            line(1_000, "/a"),
            line(59_000, "/b"),
            line(30_000, "/a"), // out of order, within the bound
            line(65_000, "/a"),
            line(71_000, "/a"), // watermark 61s: the first minute fires
            line(125_000, "/b"),
        ],
    );
    let r = results(&out);
    assert_eq!(
        r,
        vec![
            (
                "final".into(),
                0,
                60_000,
                json!({"properties.$current_url": "/a"}),
                json!(2)
            ),
            (
                "final".into(),
                0,
                60_000,
                json!({"properties.$current_url": "/b"}),
                json!(1)
            ),
            (
                "final".into(),
                60_000,
                120_000,
                json!({"properties.$current_url": "/a"}),
                json!(2)
            ),
            (
                "final".into(),
                120_000,
                180_000,
                json!({"properties.$current_url": "/b"}),
                json!(1)
            ),
        ]
    );
    // The first minute fired as soon as the watermark passed its end, i.e.
    // right after the event at 71 s: before anything of the third minute.
    assert_eq!(out.len(), 4);
}

#[test]
fn late_events_within_lateness_correct_and_later_ones_go_to_late() {
    let out = run(
        &[tumbling(10_000, 0, 5_000)],
        &[
            line(1_000, "/"),
            line(12_000, "/"), // fires [0,10s) with count 1
            line(2_000, "/"),  // late, within lateness: correction, count 2
            line(3_000, "/"),  // another: revision 2
            line(16_000, "/"), // watermark 16s > 10s + 5s: [0,10s) forgotten
            line(4_000, "/"),  // too late
        ],
    );
    let r = results(&out);
    assert_eq!(r[0], ("final".into(), 0, 10_000, json!({}), json!(1)));
    assert_eq!(r[1], ("correction".into(), 0, 10_000, json!({}), json!(2)));
    assert_eq!(r[2], ("correction".into(), 0, 10_000, json!({}), json!(3)));
    assert_eq!(out[1].to_json()["revision"], 1);
    assert_eq!(out[2].to_json()["revision"], 2);
    let late: Vec<_> = out.iter().filter(|o| o.stream() == Stream::Late).collect();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].to_json()["reason"], "late");
    assert_eq!(late[0].to_json()["event"]["timestamp"], 4_000);
    assert_eq!(late[0].to_json()["watermark"], 16_000);
    // [10s,20s) fires at the end of input with the on-time events.
    assert_eq!(
        r.last().unwrap(),
        &("final".into(), 10_000, 20_000, json!({}), json!(2))
    );
}

#[test]
fn sliding_windows_hold_each_event_size_over_slide_times() {
    let c = WindowConfig::new(
        "s",
        WindowKind::Sliding {
            size_ms: 30_000,
            slide_ms: 10_000,
        },
        &["count"],
    );
    let out = run(
        &[c],
        &[line(5_000, "/"), line(15_000, "/"), line(15_500, "/")],
    );
    let r: Vec<_> = results(&out)
        .into_iter()
        .map(|(k, s, e, _, n)| (k, s, e, n))
        .collect();
    assert_eq!(
        r,
        vec![
            ("final".into(), -20_000, 10_000, json!(1)),
            ("final".into(), -10_000, 20_000, json!(3)),
            ("final".into(), 0, 30_000, json!(3)),
            ("final".into(), 10_000, 40_000, json!(2)),
        ]
    );
}

fn session(gap_ms: i64, lateness: i64) -> WindowConfig {
    let mut c = WindowConfig::new(
        "sess",
        WindowKind::Session {
            gap_ms,
            max_duration_ms: None,
        },
        &["count"],
    );
    c.group_by = vec!["distinct_id".into()];
    c.time.out_of_orderness_ms = 0;
    c.time.allowed_lateness_ms = lateness;
    c
}

#[test]
fn sessions_close_after_the_gap_and_a_late_bridge_merges_them() {
    let out = run(
        &[session(10_000, 60_000)],
        &[
            line(0, "/"),
            line(5_000, "/"),
            line(30_000, "/"), // watermark 30s: [0, 15s) closes
            line(50_000, "/"), // [30s, 40s) closes
            line(12_000, "/"), // late: bridges [0,15s) and ... not [30s,40s): gap 18s
            line(21_000, "/"), // bridges [0,22s) and [30s,40s)
        ],
    );
    let r: Vec<_> = results(&out)
        .into_iter()
        .map(|(k, s, e, _, n)| (k, s, e, n))
        .collect();
    assert_eq!(
        r,
        vec![
            ("final".into(), 0, 15_000, json!(2)),
            ("final".into(), 30_000, 40_000, json!(1)),
            ("correction".into(), 0, 22_000, json!(3)),
            ("correction".into(), 0, 40_000, json!(5)),
            ("final".into(), 50_000, 60_000, json!(1)),
        ]
    );
    assert_eq!(
        out[2].to_json()["replaces"],
        json!([{"start": 0, "end": 15_000}])
    );
    assert_eq!(
        out[3].to_json()["replaces"],
        json!([{"start": 0, "end": 22_000}, {"start": 30_000, "end": 40_000}])
    );
}

#[test]
fn an_idle_stream_closes_its_windows_with_wall_time() {
    let mut c = tumbling(60_000, 5_000, 0);
    c.time.idle_timeout_ms = 10_000;
    let input = [
        json!({"$wall": 1_000}).to_string(),
        line(1_000, "/"),
        json!({"$wall": 10_999}).to_string(), // idle for 9.999 s: nothing
        json!({"$wall": 64_000}).to_string(), // watermark 1 + 63 - 5 = 59 s
    ];
    let mut w = Standalone::new(&[c.clone()]).unwrap();
    let mut out = Vec::new();
    for l in &input[..3] {
        out.extend(replay_no_finish(&mut w, l));
    }
    assert!(out.is_empty());
    out.extend(replay_no_finish(&mut w, &input[3]));
    assert!(out.is_empty(), "59 s < 60 s: still open");
    out.extend(replay_no_finish(
        &mut w,
        &json!({"$wall": 65_000}).to_string(),
    ));
    assert_eq!(
        results(&out),
        vec![("final".into(), 0, 60_000, json!({}), json!(1))]
    );
}

/// One line, without the end-of-input flush of [`replay`].
fn replay_no_finish(w: &mut Standalone, line: &str) -> Vec<Output> {
    let doc: Json = serde_json::from_str(line).unwrap();
    let mut out = Vec::new();
    match doc.get("$wall") {
        Some(t) => w.tick(t.as_i64().unwrap(), &mut out),
        None => {
            let ev = Event::from_value(doc, || "x".into()).unwrap();
            w.process(std::slice::from_ref(&ev), ev.timestamp, &mut out);
        }
    }
    out
}

#[test]
fn future_timestamps_are_rejected_or_clamped_and_cannot_pin_the_watermark() {
    let input = [
        json!({"$wall": 100_000}).to_string(),
        line(100_000, "/"),
        line(10_000_000, "/"), // far future
        line(101_000, "/"),
    ]
    .join("\n");
    let time = |on_future| EngineTime {
        future_skew_ms: 60_000,
        on_future,
        ..EngineTime::default()
    };
    // Two windows under one admission: both see the same decision.
    let mut t2 = tumbling(10_000, 0, 0);
    t2.name = "t2".into();
    let configs = [tumbling(10_000, 0, 0), t2];

    let mut reject = Standalone::with_time(&configs, time(OnFuture::Reject)).unwrap();
    let out = replay(&mut reject, &input).unwrap();
    let late: Vec<_> = out.iter().filter(|o| o.stream() == Stream::Late).collect();
    assert_eq!(late.len(), 2, "reported once per window");
    for (l, window) in late.iter().zip(["t", "t2"]) {
        let l = l.to_json();
        assert_eq!(l["reason"], "future");
        assert_eq!(l["window"], window);
        assert_eq!(l["max_timestamp"], 160_000);
        assert_eq!(l["event"]["timestamp"], 10_000_000);
    }
    let t: Vec<_> = out
        .iter()
        .filter(|o| o.stream() == Stream::Results(0))
        .collect();
    assert_eq!(t.len(), 1, "the rejected event did not move the watermark");
    assert_eq!(t[0].to_json()["values"]["count"], 2);
    let list = reject.windows.list();
    assert_eq!(list[0]["stats"]["future_rejected"], 1);
    assert_eq!(list[1]["stats"]["future_rejected"], 1);

    let mut clamp = Standalone::with_time(&configs, time(OnFuture::Clamp)).unwrap();
    let out = replay(&mut clamp, &input).unwrap();
    // The clamped event moved the watermark to 160 s, so the on-time event
    // after it is late: why `reject` is the default.
    let late: Vec<_> = out.iter().filter(|o| o.stream() == Stream::Late).collect();
    assert_eq!(late.len(), 2);
    assert_eq!(late[0].to_json()["reason"], "late");
    assert_eq!(late[0].to_json()["event"]["timestamp"], 101_000);
    let c: Vec<_> = out
        .iter()
        .filter(|o| o.stream() == Stream::Results(0))
        .collect();
    assert_eq!(c[0].to_json()["start"], 100_000);
    assert_eq!(c[0].to_json()["values"]["count"], 1);
    assert_eq!(c[1].to_json()["start"], 160_000);
    assert_eq!(clamp.windows.list()[0]["stats"]["future_clamped"], 1);
}

#[test]
fn groups_past_the_cap_fold_into_overflow() {
    let mut c = tumbling(60_000, 0, 0);
    c.group_by = vec!["properties.$current_url".into()];
    c.max_groups = 2;
    let out = run(
        &[c],
        &[
            line(1, "/a"),
            line(2, "/b"),
            line(3, "/c"),
            line(4, "/a"),
            line(5, "/d"),
        ],
    );
    let r: Vec<_> = results(&out)
        .into_iter()
        .map(|(_, _, _, g, n)| (g, n))
        .collect();
    assert_eq!(
        r,
        vec![
            (json!({"properties.$current_url": "/a"}), json!(2)),
            (json!({"properties.$current_url": "/b"}), json!(1)),
            (json!({"properties.$current_url": "__overflow__"}), json!(2)),
        ]
    );
}

#[test]
fn results_do_not_depend_on_batching() {
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let events: Vec<Event> = (0..2_000)
        .map(|i| {
            let ts = i * 100 + (next() % 20_000) as i64;
            let url = ["/a", "/b", "/c"][(next() % 3) as usize];
            Event::from_json(&line(ts, url), || format!("e{i}")).unwrap()
        })
        .collect();
    let configs = [
        {
            let mut c = tumbling(10_000, 3_000, 4_000);
            c.group_by = vec!["properties.$current_url".into()];
            c
        },
        WindowConfig::new(
            "s",
            WindowKind::Sliding {
                size_ms: 20_000,
                slide_ms: 5_000,
            },
            &["count", "sum(properties.ms)"],
        ),
        session(700, 2_000),
    ];
    let now = 1_000_000;
    let mut one = Standalone::new(&configs).unwrap();
    let mut a = Vec::new();
    one.process(&events, now, &mut a);
    one.finish(&mut a);
    let mut many = Standalone::new(&configs).unwrap();
    let mut b = Vec::new();
    for chunk in events.chunks(7) {
        many.process(chunk, now, &mut b);
    }
    many.finish(&mut b);
    // Each channel's sequence is the same (how windows interleave with each
    // other follows the batches).
    let per = |out: &[Output], stream: Stream, window: &str| -> Vec<Json> {
        out.iter()
            .filter(|o| o.stream() == stream && o.to_json()["window"] == window)
            .map(|o| o.to_json())
            .collect()
    };
    for (i, name) in ["t", "s", "sess"].into_iter().enumerate() {
        let (ra, rb) = (
            per(&a, Stream::Results(i), name),
            per(&b, Stream::Results(i), name),
        );
        assert!(ra.len() > 20, "{name}: {} results", ra.len());
        assert_eq!(ra, rb, "{name}");
        assert_eq!(
            per(&a, Stream::Late, name),
            per(&b, Stream::Late, name),
            "{name} late"
        );
    }
}

#[test]
fn history_keeps_the_latest_revision_and_filters_by_time_and_group() {
    let mut c = tumbling(10_000, 0, 10_000);
    c.group_by = vec!["properties.$current_url".into()];
    let mut w = Standalone::new(&[c]).unwrap();
    let input = [
        line(1_000, "/a"),
        line(2_000, "/b"),
        line(11_000, "/a"),
        line(3_000, "/a"), // correction of [0,10s) /a
        line(21_000, "/a"),
    ]
    .join("\n");
    replay(&mut w, &input).unwrap();
    let all = w.windows.history("t").unwrap().query(&HistoryQuery {
        limit: 100,
        ..Default::default()
    });
    let summary: Vec<_> = all
        .iter()
        .map(|r| {
            (
                r["start"].clone(),
                r["group"]["properties.$current_url"].clone(),
                r["values"]["count"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (json!(0), json!("/a"), json!(2)),
            (json!(0), json!("/b"), json!(1)),
            (json!(10_000), json!("/a"), json!(1)),
            (json!(20_000), json!("/a"), json!(1)),
        ]
    );
    let q = HistoryQuery {
        from: Some(10_000),
        to: Some(20_000),
        group: vec![(String::new(), "/a".into())],
        limit: 100,
    };
    let some = w.windows.history("t").unwrap().query(&q);
    assert_eq!(some.len(), 1);
    assert_eq!(some[0]["start"], 10_000);
    assert!(w.windows.history("nope").is_none());
}

#[test]
fn early_firings_show_open_windows_that_changed() {
    let mut c = tumbling(60_000, 0, 0);
    c.time.early_every_ms = Some(5_000);
    let input = [
        json!({"$wall": 0}).to_string(),
        line(1_000, "/"),
        json!({"$wall": 5_000}).to_string(),  // early: count 1
        json!({"$wall": 10_000}).to_string(), // nothing changed: no early
        line(2_000, "/"),
        json!({"$wall": 15_000}).to_string(), // early: count 2
    ];
    let out = run(&[c], &input);
    let r: Vec<_> = results(&out)
        .into_iter()
        .map(|(k, _, _, _, n)| (k, n))
        .collect();
    assert_eq!(
        r,
        vec![
            ("early".into(), json!(1)),
            ("early".into(), json!(2)),
            ("final".into(), json!(2)),
        ]
    );
}

#[test]
fn live_views_track_users_and_top_pages_in_event_time() {
    let mut live = LiveViews::new(LiveConfig {
        users_window_ms: 60_000,
        max_users: 2,
        pages_window_ms: 10_000,
        max_pages: 100,
    });
    let ev = |id: &str, ts: i64, url: &str| {
        Event::from_json(
            &json!({"name": "$pageview", "distinct_id": id, "timestamp": ts,
                    "properties": {"$current_url": url}})
            .to_string(),
            || "x".into(),
        )
        .unwrap()
    };
    let mut time = EventTime::new(EngineTime::default());
    let mut observe = |live: &mut LiveViews, events: &[Event], now: i64| {
        let facts = time.batch(0, Some(now), events);
        live.observe(events, &facts);
    };
    observe(
        &mut live,
        &[
            ev("u1", 1_000, "/a"),
            ev("u2", 2_000, "/b"),
            ev("u1", 3_000, "/b"),
            ev("u3", 4_000, "/c"),
        ],
        4_000,
    );
    let users = live.users(10);
    assert_eq!(users["count"], 2);
    assert_eq!(users["untracked"], 1, "max_users = 2");
    assert_eq!(
        users["users"][0],
        json!({"distinct_id": "u1", "last_seen": 3_000, "current_url": "/b"})
    );
    let pages = live.pages(1);
    assert_eq!(pages["pages"], json!([{"url": "/b", "views": 2}]));
    assert_eq!(pages["views"], 4);
    // 70 s later (event time): everyone has left both views.
    observe(&mut live, &[ev("u9", 74_000, "/z")], 74_000);
    assert_eq!(live.users(10)["count"], 1);
    assert_eq!(live.pages(10)["pages"], json!([{"url": "/z", "views": 1}]));
}

/// A tumbling operator that panics on events named `boom` (a stand-in for a
/// bug in an operator).
struct Boom(tumbling::Tumbling);

impl WindowOperator for Boom {
    fn on_event(
        &mut self,
        ctx: &mut operator::Ctx<'_>,
        ev: &Event,
        ts: i64,
        key: Box<[groups::KeyPart]>,
        arrival: u64,
        watermark: i64,
    ) {
        assert_ne!(ev.name, "boom", "a bug in this operator");
        self.0.on_event(ctx, ev, ts, key, arrival, watermark);
    }
    fn on_watermark(&mut self, ctx: &mut operator::Ctx<'_>, watermark: i64) {
        self.0.on_watermark(ctx, watermark);
    }
    fn snapshot(&self) -> state::OperatorState {
        self.0.snapshot()
    }
    fn restore(
        &mut self,
        spec: &WindowSpec,
        state: state::OperatorState,
        groups: &state::KeyGroupSet,
    ) -> Result<(), state::StateError> {
        self.0.restore(spec, state, groups)
    }
}

#[test]
fn a_panicking_window_stops_alone_and_publishes_nothing_half_done() {
    let mut bad = tumbling(10_000, 0, 0);
    bad.name = "bad".into();
    let good = tumbling(10_000, 0, 0);
    let mut w = Standalone::new(&[bad, good]).unwrap();
    w.windows
        .replace_operator(0, Box::new(Boom(tumbling::Tumbling::new(10_000, 0))));
    let ev = |name: &str, ts: i64| {
        Event::from_json(
            &json!({"name": name, "distinct_id": "u", "timestamp": ts}).to_string(),
            || "x".into(),
        )
        .unwrap()
    };
    let mut out = Vec::new();
    // The first window closes (t = 12 s), then the bad operator panics on
    // the third event of the same batch, then more events follow.
    w.process(
        &[
            ev("a", 1_000),
            ev("a", 12_000),
            ev("boom", 13_000),
            ev("a", 25_000),
        ],
        25_000,
        &mut out,
    );
    w.finish(&mut out);
    let results = |stream| {
        out.iter()
            .filter(|o| o.stream() == stream)
            .map(|o| {
                (
                    o.to_json()["start"].clone(),
                    o.to_json()["values"]["count"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    // The good window saw everything.
    assert_eq!(
        results(Stream::Results(1)),
        vec![
            (json!(0), json!(1)),
            (json!(10_000), json!(2)),
            (json!(20_000), json!(1))
        ]
    );
    // The bad one published what it had before the panic, and nothing
    // after: no result built on the state the panic left.
    assert_eq!(results(Stream::Results(0)), vec![(json!(0), json!(1))]);
    let list = w.windows.list();
    assert!(
        list[0]["failed"]
            .as_str()
            .unwrap()
            .contains("a bug in this operator"),
        "{}",
        list[0]
    );
    assert!(list[1]["failed"].is_null());
}

#[test]
fn live_users_lists_the_most_recent_first_whatever_the_limit() {
    let mut live = LiveViews::new(LiveConfig::default());
    let mut time = EventTime::new(EngineTime::default());
    let events: Vec<Event> = (0..500)
        .map(|i: i64| {
            // Last-seen times collide in pairs, so ties are broken by id.
            let ts = 1_000_000 + (i * 7_919 % 500) / 2;
            Event::from_json(
                &json!({"name": "$pageview", "distinct_id": format!("u{i:03}"), "timestamp": ts})
                    .to_string(),
                || "x".into(),
            )
            .unwrap()
        })
        .collect();
    let facts = time.batch(0, Some(1_000_300), &events);
    live.observe(&events, &facts);
    let all = live.users(500);
    for limit in [1, 7, 100, 499] {
        let some = live.users(limit);
        assert_eq!(some["count"], 500);
        assert_eq!(
            some["users"].as_array().unwrap()[..],
            all["users"].as_array().unwrap()[..limit],
            "limit {limit}"
        );
    }
}
