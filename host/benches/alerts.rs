//! Declared alert rule evaluation cost per window result, with 10,000
//! groups: one window firing publishes 10,000 results (one per group), and
//! a rule over it turns each into a sample (its aggregate compared with the
//! threshold, its group keys into labels) and runs the lifecycle on them in
//! one evaluation — what the engine's alert operator does per window firing.
//!
//! `cargo bench -p eddy --bench alerts`. Criterion's time is per evaluation
//! of 10,000 results; its throughput is in results per second (divide the
//! time by 10,000 for the cost per window result).
//!
//! Scenarios:
//! - `quiet_10k_groups`: 1 % of the groups over the threshold (they fire
//!   and stay firing), the rest cleared: the common case;
//! - `all_firing_10k_groups`: every group over the threshold, 10,000 firing
//!   instances updated per evaluation (values and annotations re-rendered).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eddy::alert::rules::{DeclaredRule, Op, RuleValue, Watch};
use eddy::alert::{RuleSpec, RuleState};
use eddy::event::Event;
use eddy::window::{Output, Standalone, WindowConfig, WindowKind, WindowResult};

const GROUPS: usize = 10_000;
const T0: i64 = 1_700_000_000_000;

/// One firing of a 1-minute window grouped by 10,000 services: group `i`
/// has `i % 100 + 1` events, so `count > threshold` picks a share of them.
fn results() -> Vec<Arc<WindowResult>> {
    let mut config = WindowConfig::new(
        "errors",
        WindowKind::Tumbling { size_ms: 60_000 },
        &["count", "avg(properties.ms) as ms"],
    );
    config.group_by = vec!["properties.service".into()];
    let mut windows = Standalone::new(&[config]).unwrap();
    let mut events = Vec::new();
    for i in 0..GROUPS {
        for j in 0..(i % 100 + 1) {
            let line = format!(
                r#"{{"name":"error","distinct_id":"u","timestamp":{},"properties":{{"service":"svc-{i}","ms":{j}}}}}"#,
                T0 + (j as i64)
            );
            events.push(Event::from_json(&line, || "id".into()).unwrap());
        }
    }
    let mut out = Vec::new();
    windows.process(&events, T0, &mut out);
    windows.finish(&mut out);
    let results: Vec<Arc<WindowResult>> = out
        .into_iter()
        .filter_map(|o| match o {
            Output::Result(r) => Some(r),
            Output::Late(_) => None,
        })
        .collect();
    assert_eq!(results.len(), GROUPS);
    results
}

fn rule(threshold: f64) -> DeclaredRule {
    let mut spec = RuleSpec::new("HighErrorCount");
    spec.labels.insert("severity".into(), "page".into());
    spec.annotations.insert(
        "summary".into(),
        "{{ $value }} errors on {{ $labels.service }}".into(),
    );
    DeclaredRule {
        spec,
        watch: Watch::Window("errors".into()),
        value: RuleValue::Aggregate("count".into()),
        op: Op::Gt,
        threshold,
        group_labels: vec!["service".into()],
    }
}

fn bench(c: &mut Criterion) {
    let results = results();
    let mut group = c.benchmark_group("alerts");
    group.throughput(Throughput::Elements(GROUPS as u64));
    for (name, threshold) in [("quiet_10k_groups", 99.0), ("all_firing_10k_groups", 0.0)] {
        let rule = rule(threshold);
        let mut state = RuleState::new();
        let mut at = T0;
        let mut events = Vec::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                at += 60_000;
                let samples: Vec<_> = results
                    .iter()
                    .filter_map(|r| rule.window_sample(r))
                    .collect();
                events.clear();
                state.evaluate(&rule.spec, at, &samples, &mut events);
                black_box(events.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
