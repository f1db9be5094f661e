//! Window throughput: `Standalone::process` over batches of 1,000 events, from
//! a fresh `Standalone` to `finish`, so window firings (building every result
//! message) are part of the cost.
//!
//! `cargo bench -p eddy --bench windows`. Criterion prints the time per
//! iteration (all batches of one scenario) and the throughput in elements
//! (events) per second; divide the time by [`EVENTS`] for ns/event.
//!
//! Scenarios:
//! - `tumbling_1s_count_sum_by_10k_keys`: the peer comparison of DESIGN.md
//!   (Flink ≈ 0.9 M events/s on a 2-core box);
//! - `tumbling_1m_count_distinct_p95_by_1k_pages`;
//! - `sliding_10m_1m_count_p95`;
//! - `session_30s_by_distinct_id_100k_users`;
//! - `default_config`: the embedded default configuration's windows, if it
//!   has any (skipped, with a note, when it has none);
//! - `baseline_live_views_only`: no windows, only the live views.
//!
//! `process` also feeds the live views (live users, top pages), so their
//! cost is included: it is what a batch costs the pipeline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eddy::event::{Event, Value};
use eddy::window::{Standalone, WindowConfig, WindowKind};

/// Events per iteration: enough event time for several firings of every
/// scenario's windows.
const EVENTS: usize = 300_000;
/// Events per `process` call.
const BATCH: usize = 1_000;
const T0: i64 = 1_700_000_000_000;

/// `EVENTS` events at `per_second` events per second of event time, with
/// up to 50 ms of disorder (well within the default 5 s bound): a key of
/// 10,000, a page of 1,000, a user of 100,000, an amount and a duration.
fn events(per_second: i64) -> Vec<Event> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..EVENTS)
        .map(|i| {
            let r = next();
            let jitter = (r >> 40) as i64 % 50;
            Event {
                id: format!("evt-{i:08}").into(),
                name: "$pageview".into(),
                timestamp: T0 + i as i64 * 1_000 / per_second - jitter,
                distinct_id: format!("user-{}", (r >> 8) % 100_000).into(),
                session_id: None,
                properties: vec![
                    ("key".into(), Value::Str(format!("k{}", r % 10_000).into())),
                    (
                        "$current_url".into(),
                        Value::Str(format!("/p/{}", (r >> 20) % 1_000).into()),
                    ),
                    ("amount".into(), Value::Int((r % 10_000) as i64)),
                    (
                        "duration_ms".into(),
                        Value::Float(1.0 + ((r >> 30) % 100_000) as f64 / 7.0),
                    ),
                ],
            }
        })
        .collect()
}

fn window(name: &str, kind: WindowKind, group_by: &[&str], aggregates: &[&str]) -> WindowConfig {
    let mut c = WindowConfig::new(name, kind, aggregates);
    c.group_by = group_by.iter().map(|g| g.to_string()).collect();
    c
}

/// Run every batch through fresh `Standalone` windows, arriving at its newest
/// timestamp, then finish. Outputs are dropped after each batch, as the
/// server hands them to the hub.
fn run(configs: &[WindowConfig], batches: &[(i64, &[Event])]) -> usize {
    let mut w = Standalone::new(configs).unwrap();
    let mut out = Vec::new();
    let mut results = 0;
    for (now, batch) in batches {
        w.process(black_box(batch), *now, &mut out);
        results += out.len();
        out.clear();
    }
    w.finish(&mut out);
    results + out.len()
}

fn bench(c: &mut Criterion) {
    let min = 60_000;
    let mut scenarios: Vec<(String, i64, Vec<WindowConfig>)> = vec![
        (
            "tumbling_1s_count_sum_by_10k_keys".into(),
            100_000,
            vec![window(
                "w",
                WindowKind::Tumbling { size_ms: 1_000 },
                &["properties.key"],
                &["count", "sum(properties.amount)"],
            )],
        ),
        (
            "tumbling_1m_count_distinct_p95_by_1k_pages".into(),
            2_000,
            vec![window(
                "w",
                WindowKind::Tumbling { size_ms: min },
                &["properties.$current_url"],
                &[
                    "count",
                    "distinct(distinct_id)",
                    "p95(properties.duration_ms)",
                ],
            )],
        ),
        (
            "sliding_10m_1m_count_p95".into(),
            2_000,
            vec![window(
                "w",
                WindowKind::Sliding {
                    size_ms: 10 * min,
                    slide_ms: min,
                },
                &[],
                &["count", "p95(properties.duration_ms)"],
            )],
        ),
        (
            "session_30s_by_distinct_id_100k_users".into(),
            5_000,
            vec![WindowConfig {
                // The default cap (10,000 groups) would fold all but 10,000
                // of the 100,000 users into the overflow group.
                max_groups: 200_000,
                ..window(
                    "w",
                    WindowKind::Session {
                        gap_ms: 30_000,
                        max_duration_ms: None,
                    },
                    &["distinct_id"],
                    &["count"],
                )
            }],
        ),
        // No windows: what the live views (fed by every `process`) cost on
        // their own, to subtract from the others.
        ("baseline_live_views_only".into(), 100_000, vec![]),
    ];
    let default = eddy::config::Config::load(None).unwrap().windows;
    if default.is_empty() {
        eprintln!("default_config: the embedded default configuration has no [[windows]]; skipped");
    } else {
        scenarios.push(("default_config".into(), 2_000, default));
    }

    let mut group = c.benchmark_group("windows");
    group.throughput(Throughput::Elements(EVENTS as u64));
    for (label, per_second, configs) in &scenarios {
        let events = events(*per_second);
        let batches: Vec<(i64, &[Event])> = events
            .chunks(BATCH)
            .map(|b| (b.iter().map(|e| e.timestamp).max().unwrap(), b))
            .collect();
        let results = run(configs, &batches);
        eprintln!(
            "{label}: {EVENTS} events at {per_second}/s of event time, {results} outputs per run"
        );
        group.bench_function(label.as_str(), |b| {
            b.iter(|| black_box(run(configs, &batches)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    targets = bench
}
criterion_main!(benches);
