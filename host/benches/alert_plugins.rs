//! Alert plugin cost: the z-score plugin (`plugins/zscore-anomaly`)
//! evaluating one window's final results for 10,000 groups, through the
//! host binding ([`AlertPlugin::evaluate`]) as the engine will call it —
//! converting the typed results, crossing the WebAssembly boundary, the
//! plugin reading and writing each group's baseline in the host state
//! store, and the evaluations checked and converted back.
//!
//! Run `scripts/build-plugins` first (the test suite does it too), then
//! `cargo bench -p eddy --bench alert_plugins`. Criterion reports the time
//! per batch of 10,000 results and the results per second; the time per
//! window result is the batch time / 10,000. No assertions: figures are
//! read and reported.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eddy::config::RuntimeConfig;
use eddy::event::Value;
use eddy::filter::FieldPath;
use eddy::plugin::alert::{AlertContext, AlertInput};
use eddy::plugin::{PluginEngine, Registry};
use eddy::window::groups::KeyPart;
use eddy::window::{Grouping, ResultKind, Schema, WindowResult};

/// Groups per window result batch: the issue's figure.
const GROUPS: usize = 10_000;
const MINUTE: i64 = 60_000;

fn plugins_dir() -> PathBuf {
    let dir = std::env::var_os("EDDY_BENCH_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugins"));
    if !dir.join("zscore-anomaly.wasm").exists() {
        eprintln!(
            "no zscore-anomaly.wasm in {}: run `bash scripts/build-plugins` first (or set EDDY_BENCH_PLUGINS)",
            dir.display()
        );
        std::process::exit(2);
    }
    dir
}

/// One minute's final results of `signups_per_minute` for every group,
/// values spread deterministically around 100.
fn batch(schema: &Arc<Schema>, minute: i64) -> Vec<WindowResult> {
    (0..GROUPS)
        .map(|g| {
            let x = 100 + ((g as i64 * 7919 + minute * 104_729) % 11) - 5;
            WindowResult {
                schema: schema.clone(),
                kind: ResultKind::Final,
                start: minute * MINUTE,
                end: (minute + 1) * MINUTE,
                group: Box::new([KeyPart::Str(format!("user-{g:05}").into())]),
                values: Box::new([Value::Int(1000), Value::Int(x)]),
                revision: 0,
                replaces: Vec::new(),
                state: None,
            }
        })
        .collect()
}

fn zscore(c: &mut Criterion) {
    let dir = plugins_dir();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.join("zscore-anomaly.wasm"),
        tmp.path().join("zscore-anomaly.wasm"),
    )
    .unwrap();
    let registry = Registry::new(
        PluginEngine::new().unwrap(),
        RuntimeConfig::default(),
        tmp.path().to_path_buf(),
    );
    registry.load_all().unwrap();
    let hash = registry.alerts()["zscore-anomaly"].clone();
    let mut context = AlertContext::new(&registry, "signups-anomaly");
    // Measure the cost, not the deadline: a loaded machine may stretch a
    // 1,000-result call past the default 100 ms.
    context.deadline = std::time::Duration::from_secs(5);
    context.config =
        r#"{"window":"signups_per_minute","aggregate":"signups","k":4,"min_samples":10,"history":60}"#
            .into();
    let mut plugin = registry
        .alert_instance("zscore-anomaly", &hash, &context)
        .unwrap();
    let schema = Arc::new(Schema {
        window: "signups_per_minute".into(),
        index: 0,
        grouping: Grouping::new(vec![
            FieldPath::parse("properties.user_id", "group_by").unwrap(),
        ]),
        outputs: vec!["events".into(), "signups".into()],
    });
    // A full history (60 values) for every group first, so each measured
    // call judges every group and rewrites its baseline: the steady state.
    let mut minute = 0;
    while minute < 60 {
        plugin
            .evaluate(
                AlertInput::Windows(&batch(&schema, minute)),
                minute * MINUTE,
            )
            .unwrap();
        minute += 1;
    }
    let batches: Vec<Vec<WindowResult>> = (0..8).map(|m| batch(&schema, 60 + m)).collect();
    let mut group = c.benchmark_group("alert_plugins");
    group.sample_size(10);
    group.throughput(Throughput::Elements(GROUPS as u64));
    let mut i = 0;
    group.bench_function("zscore_10k_groups", |b| {
        b.iter(|| {
            let out = plugin
                .evaluate(AlertInput::Windows(&batches[i % batches.len()]), 0)
                .unwrap();
            i += 1;
            assert_eq!(out.len(), GROUPS);
            black_box(out)
        })
    });
    group.finish();
    println!(
        "zscore-anomaly: {} baselines in the state store",
        context.state.len()
    );
}

criterion_group!(benches, zscore);
criterion_main!(benches);
