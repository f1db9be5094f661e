//! Window aggregate benchmark: ns/event of `Aggregates::add` for a few
//! typical aggregate lists, folding 10,000 realistic events into one
//! accumulator, and of `merge` for two accumulators of each list.
//!
//! `cargo bench -p eddy --bench aggregates`. Criterion prints the time per
//! 10,000 events (and the throughput); divide by 10,000 for ns/event.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eddy::event::{Event, Value};
use eddy::window::agg::Aggregates;

const EVENTS: usize = 10_000;

/// Purchases and page views with an amount, a duration and a plan.
fn events() -> Vec<Event> {
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
            Event {
                id: format!("evt-{i:08}").into(),
                name: if r % 10 == 0 { "purchase" } else { "$pageview" }.into(),
                timestamp: 1_700_000_000_000 + i as i64,
                distinct_id: format!("user-{}", r % 5_000).into(),
                session_id: Some(format!("sess-{}", r % 700).into()),
                properties: vec![
                    (
                        "$current_url".into(),
                        Value::Str(format!("/p/{}", r % 50).into()),
                    ),
                    ("amount".into(), Value::Int((r % 10_000) as i64)),
                    (
                        "duration_ms".into(),
                        Value::Float(1.0 + (r % 100_000) as f64 / 7.0),
                    ),
                    (
                        "plan".into(),
                        Value::Str(if r % 3 == 0 { "free" } else { "pro" }.into()),
                    ),
                ],
            }
        })
        .collect()
}

const LISTS: &[(&str, &[&str])] = &[
    ("count", &["count"]),
    (
        "count+sum+p95",
        &[
            "count",
            "sum(properties.amount)",
            "p95(properties.duration_ms)",
        ],
    ),
    (
        "count+sum+avg+min+max (one path)",
        &[
            "count",
            "sum(properties.amount)",
            "avg(properties.amount)",
            "min(properties.amount)",
            "max(properties.amount)",
        ],
    ),
    (
        "ratio+stddev+last",
        &[
            "ratio(name:equals:purchase)",
            "stddev(properties.duration_ms)",
            "last(properties.$current_url)",
        ],
    ),
    ("distinct(distinct_id)", &["distinct(distinct_id)"]),
];

fn bench(c: &mut Criterion) {
    let events = events();
    let mut add = c.benchmark_group("add");
    add.throughput(Throughput::Elements(EVENTS as u64));
    for (label, texts) in LISTS {
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        let aggs = Aggregates::parse_all(&texts, "bench").unwrap();
        add.bench_function(*label, |b| {
            b.iter(|| {
                let mut acc = aggs.new_acc();
                for (i, e) in events.iter().enumerate() {
                    aggs.add(&mut acc, black_box(e), i as u64);
                }
                black_box(acc)
            })
        });
    }
    add.finish();

    let mut merge = c.benchmark_group("merge");
    for (label, texts) in LISTS {
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        let aggs = Aggregates::parse_all(&texts, "bench").unwrap();
        let (half_a, half_b) = events.split_at(EVENTS / 2);
        let fold = |evs: &[Event]| {
            let mut acc = aggs.new_acc();
            for (i, e) in evs.iter().enumerate() {
                aggs.add(&mut acc, e, i as u64);
            }
            acc
        };
        let (a, b2) = (fold(half_a), fold(half_b));
        merge.bench_function(*label, |b| {
            b.iter(|| {
                let mut into = a.clone();
                aggs.merge(&mut into, black_box(&b2));
                black_box(into)
            })
        });
    }
    merge.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
