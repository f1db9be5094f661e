//! Plugin runtime benchmark: ns/event of a processor stage on batches of
//! 1,000 events (pass-through stage as the baseline, then the ua-enricher),
//! and the time from a finished file write to the new version being live.
//!
//! Run `scripts/build-plugins` first (the test suite does it too), then
//! `cargo bench -p eddy --bench plugins [-- SECTION...]`, where a section is
//! `stages`, `breakdown`, `swap` or `languages` (the example plugins in
//! Rust, Python and JavaScript); all of them without one. Prints medians; no
//! assertions: figures are read, compared with the goals, and reported.
//! With `EDDY_BENCH_OUTPUT=DIR`, each stage timed on its own also writes its
//! output on the benchmark batch to `DIR/<plugin>.ndjson`, to check that a
//! faster build gives the same events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eddy::config::Config;
use eddy::event::Event;
use eddy::pipeline::Pipeline;
use eddy::plugin::{PluginEngine, Registry, watch};

const BATCH: usize = 1_000;
const WARMUP_BATCHES: usize = 50;
const SAMPLES: usize = 25;
const BATCHES_PER_SAMPLE: usize = 40;
const SWAPS: usize = 12;

const UAS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
];

fn plugins_dir() -> PathBuf {
    let dir = std::env::var_os("EDDY_BENCH_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugins"));
    if !dir.join("ua-enricher.wasm").exists() {
        eprintln!(
            "no built plugins in {}: run `bash scripts/build-plugins` first (or set EDDY_BENCH_PLUGINS)",
            dir.display()
        );
        std::process::exit(2);
    }
    dir
}

/// A realistic web event: six properties, two of them long strings.
fn events() -> Vec<Event> {
    events_with(|_, _| {})
}

/// Countries for the geo-region examples (one of them unknown).
const COUNTRIES: [&str; 8] = ["FR", "US", "BR", "JP", "AE", "NG", "NZ", "ZZ"];

/// [`events`], each with `$geoip_country_code` too (seven properties).
fn geo_events() -> Vec<Event> {
    events_with(|i, props| {
        props.insert(
            "$geoip_country_code".into(),
            COUNTRIES[i % COUNTRIES.len()].into(),
        );
    })
}

fn events_with(
    extra: impl Fn(usize, &mut serde_json::Map<String, serde_json::Value>),
) -> Vec<Event> {
    (0..BATCH)
        .map(|i| {
            let mut line = serde_json::json!({
                "id": format!("evt-{i:08}"),
                "name": "$pageview",
                "timestamp": 1_700_000_000_000i64 + i as i64,
                "distinct_id": format!("user-{}", i % 97),
                "session_id": format!("sess-{}", i % 31),
                "properties": {
                    "$user_agent": UAS[i % UAS.len()],
                    "$current_url": format!("https://shop.example.com/products/{}?ref=home#top", i % 50),
                    "$lib": "web",
                    "$screen_width": 1920,
                    "$referrer": "https://www.google.com/",
                    "plan": "pro",
                }
            });
            if let Some(props) = line["properties"].as_object_mut() {
                extra(i, props);
            }
            Event::from_value(line, String::new).unwrap()
        })
        .collect()
}

/// A config with one stage running `plugin` from `dir`, and an empty
/// registry for that folder.
fn single_stage(dir: &Path, plugin: &str) -> (Config, std::sync::Arc<Registry>) {
    single_stage_with(dir, plugin, "")
}

/// [`single_stage`], with `extra` TOML appended to the stage.
fn single_stage_with(dir: &Path, plugin: &str, extra: &str) -> (Config, std::sync::Arc<Registry>) {
    let text = format!(
        "plugins_dir = {:?}\n[[stages]]\nplugin = \"{plugin}\"\n{extra}",
        dir.display().to_string()
    );
    let config = Config::parse(&text, "bench", &|_| None).unwrap();
    let registry = Registry::new(
        PluginEngine::new().unwrap(),
        config.runtime.clone(),
        dir.to_path_buf(),
    );
    (config, registry)
}

fn pipeline_for(dir: &Path, plugin: &str, extra: &str) -> Pipeline {
    let (config, registry) = single_stage_with(dir, plugin, extra);
    registry
        .load_file(&dir.join(format!("{plugin}.wasm")))
        .unwrap();
    let versions = registry.live_versions();
    Pipeline::new(&config, registry, &versions, 0).unwrap()
}

/// One batch through `pipeline` (engine time and seed do not matter here).
fn process(pipeline: &mut Pipeline, batch: Vec<Event>) -> eddy::pipeline::BatchOutput {
    pipeline.process(batch, 0, 0, &mut Vec::new())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median ns/event over samples of whole-batch pipeline calls.
fn ns_per_event(dir: &Path, plugin: &str) -> (f64, f64) {
    let timing = ns_per_event_on(dir, plugin, "", events());
    (timing.median, timing.min)
}

/// The CPU time this thread has run, from the kernel's scheduler statistics
/// (nanoseconds; Linux only). The stage runs its plugin on the calling
/// thread, so this leaves out the time other processes take the core away:
/// the figure to compare on a loaded machine.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// ns/event of a stage: wall-clock median and minimum over samples, and the
/// median of the thread's CPU time when the system reports it.
struct Timing {
    median: f64,
    min: f64,
    cpu_median: Option<f64>,
}

/// [`ns_per_event`] with stage settings `extra` and events `input`.
fn ns_per_event_on(dir: &Path, plugin: &str, extra: &str, input: Vec<Event>) -> Timing {
    timing(&mut pipeline_for(dir, plugin, extra), plugin, input)
}

/// A pipeline of one stage per entry of `plugins`, in order, each with a
/// name of its own (the `pii-scrubber` with a salt).
fn chain_pipeline(dir: &Path, plugins: &[&str]) -> Pipeline {
    let mut text = format!("plugins_dir = {:?}\n", dir.display().to_string());
    for (i, plugin) in plugins.iter().enumerate() {
        text += &format!("[[stages]]\nplugin = \"{plugin}\"\nname = \"s{i}-{plugin}\"\n");
        if *plugin == "pii-scrubber" {
            text += "[stages.config]\nsalt = \"bench\"\n";
        }
    }
    let config = Config::parse(&text, "bench", &|_| None).unwrap();
    let registry = Registry::new(
        PluginEngine::new().unwrap(),
        config.runtime.clone(),
        dir.to_path_buf(),
    );
    for plugin in plugins {
        registry
            .load_file(&dir.join(format!("{plugin}.wasm")))
            .unwrap();
    }
    let versions = registry.live_versions();
    Pipeline::new(&config, registry, &versions, 0).unwrap()
}

/// ns/event of `pipeline` (named `label`) on batches of `input`, every
/// event of which it must keep.
fn timing(pipeline: &mut Pipeline, label: &str, input: Vec<Event>) -> Timing {
    for _ in 0..WARMUP_BATCHES {
        let out = process(pipeline, input.clone());
        assert_eq!(out.events.len(), BATCH, "{label} must keep every event");
        assert!(
            out.dead_letters.is_empty(),
            "{label}: {:?}",
            out.dead_letters.first()
        );
    }
    if let Some(dir) = std::env::var_os("EDDY_BENCH_OUTPUT") {
        // The stage's output on the benchmark batch, to compare two builds
        // of a plugin or its SDK: the figures only count if it is the same.
        let out = process(pipeline, input.clone());
        let lines: String = out.events.iter().map(|e| e.to_json() + "\n").collect();
        std::fs::write(Path::new(&dir).join(format!("{label}.ndjson")), lines).unwrap();
    }
    let mut samples = Vec::with_capacity(SAMPLES);
    let mut cpu_samples = Vec::with_capacity(SAMPLES);
    let per_event = |ns: f64| ns / (BATCHES_PER_SAMPLE * BATCH) as f64;
    for _ in 0..SAMPLES {
        let mut busy = Duration::ZERO;
        let mut cpu = 0;
        for _ in 0..BATCHES_PER_SAMPLE {
            let batch = input.clone();
            let cpu_before = thread_cpu_ns();
            let started = Instant::now();
            let out = process(pipeline, batch);
            busy += started.elapsed();
            if let (Some(before), Some(after)) = (cpu_before, thread_cpu_ns()) {
                cpu += after - before;
            }
            drop(out);
        }
        samples.push(per_event(busy.as_nanos() as f64));
        cpu_samples.push(per_event(cpu as f64));
    }
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    Timing {
        median: median(&mut samples),
        min,
        cpu_median: thread_cpu_ns().map(|_| median(&mut cpu_samples)),
    }
}

/// Where a stage's time goes: encoding, the plugin call (lowering, guest
/// work, lifting), applying the result.
fn breakdown(dir: &Path, plugin: &str) -> (f64, f64, f64) {
    use eddy::plugin::abi::{Encoder, apply};
    use eddy::plugin::host_api::{PluginLimits, PluginShared};
    use eddy::plugin::state_store::{StateLimits, StateStore};
    let engine = PluginEngine::new().unwrap();
    let limits = PluginLimits::from(&eddy::config::RuntimeConfig::default());
    let shared = std::sync::Arc::new(PluginShared::new(plugin, limits));
    let state = std::sync::Arc::new(StateStore::new(plugin, StateLimits::from(&limits)));
    let bytes = std::fs::read(dir.join(format!("{plugin}.wasm"))).unwrap();
    let timeout = Duration::from_secs(30);
    let compiled = engine
        .compile(bytes, timeout, shared.clone(), 64 << 20)
        .unwrap();
    let mut instance = engine
        .instantiate(&compiled, shared, state, 64 << 20, "{}", timeout, 100, 0)
        .unwrap();
    let input = events();
    let mut encoder = Encoder::default();
    let ingest_limits = eddy::ingest::Limits::default();
    let rounds = 400;
    let (mut enc, mut call, mut app) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds + WARMUP_BATCHES {
        let mut batch = input.clone();
        let t0 = Instant::now();
        let encoded = encoder.encode(&batch);
        let t1 = Instant::now();
        let result = instance.process(encoded, timeout, 100).unwrap();
        let t2 = Instant::now();
        apply(&mut batch, &result, &ingest_limits).unwrap();
        let t3 = Instant::now();
        if round >= WARMUP_BATCHES {
            let per = |d: Duration| d.as_nanos() as f64 / BATCH as f64;
            enc.push(per(t1 - t0));
            call.push(per(t2 - t1));
            app.push(per(t3 - t2));
        }
    }
    (median(&mut enc), median(&mut call), median(&mut app))
}

/// Time from a finished rename-over of `ua-enricher.wasm` to the new version
/// being the live one, alternating two builds.
fn swap_latency(src: &Path) -> Vec<f64> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let v1 = std::fs::read(src.join("ua-enricher.wasm")).unwrap();
    let v2 = std::fs::read(src.join("ua-enricher-v2.wasm")).unwrap();
    std::fs::write(dir.join("ua-enricher.wasm"), &v1).unwrap();
    let (config, registry) = single_stage(&dir, "ua-enricher");
    registry.load_all().unwrap();
    let _watcher = watch::watch(registry.clone(), config.runtime.reload_debounce).unwrap();
    let versions = registry.live_versions();
    let mut pipeline = Pipeline::new(&config, registry.clone(), &versions, 0).unwrap();
    let input = events();
    let mut out = Vec::new();
    for i in 0..SWAPS {
        // Alternate versions; add a trailing custom section byte pattern so
        // every write is a new version (the same bytes are not reloaded).
        let mut bytes = if i % 2 == 0 { v2.clone() } else { v1.clone() };
        append_custom_section(&mut bytes, i);
        let hash = eddy::plugin::engine::content_hash(&bytes);
        let staged = dir.join(".ua-enricher.wasm.tmp");
        std::fs::write(&staged, &bytes).unwrap();
        let started = Instant::now();
        std::fs::rename(&staged, dir.join("ua-enricher.wasm")).unwrap();
        assert!(
            registry.wait_for("ua-enricher", &hash, Duration::from_secs(30)),
            "swap {i} never happened"
        );
        // The version goes live in the engine with the plugin input the
        // server's driver makes of the registry's notice; the next batch is
        // the first served by it.
        assert!(pipeline.select("ua-enricher", Some(&hash)));
        let served = process(&mut pipeline, input.clone());
        out.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(served.events.len(), BATCH);
    }
    out
}

/// Append a component-level custom section (id 0) so the bytes differ while
/// the component stays valid.
fn append_custom_section(bytes: &mut Vec<u8>, n: usize) {
    let name = b"eddy-bench";
    let payload = (n as u32).to_le_bytes();
    let size = 1 + name.len() + payload.len();
    bytes.push(0);
    bytes.push(size as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(&payload);
}

/// The example plugins of each language, on batches of 1,000 events.
fn languages(dir: &Path) {
    // Python and JavaScript stages take 15-30 µs/event: a 1,000-event batch
    // needs more than the 100 ms default deadline on a busy machine.
    let deadline = "deadline_ms = 5000\n";
    // Their 12-18 MB components take 10-25 s to compile, more than the 30 s
    // default on a busy machine (a cached compilation loads at once).
    let runtime = "[runtime]\ncompile_timeout_ms = 300000\n";
    let rows: [(&str, &str, String, Vec<Event>); 5] = [
        ("Rust", "pass-through", String::new(), events()),
        ("Rust", "ua-enricher", String::new(), events()),
        (
            "Python",
            "geo-region-py",
            format!("{deadline}{runtime}"),
            geo_events(),
        ),
        (
            "JavaScript",
            "geo-region-js",
            format!("{deadline}{runtime}"),
            geo_events(),
        ),
        // Rate 1 keeps every event, so each is hashed and tagged.
        (
            "JavaScript",
            "sampler-js",
            format!("{deadline}[stages.config]\nrate = 1.0\n{runtime}"),
            events(),
        ),
    ];
    for (lang, plugin, extra, input) in rows {
        if !dir.join(format!("{plugin}.wasm")).exists() {
            println!("{plugin}: not built (scripts/build-plugins)");
            continue;
        }
        let t = ns_per_event_on(dir, plugin, &extra, input);
        let cpu = t
            .cpu_median
            .map(|c| format!(", thread CPU {c:.1}"))
            .unwrap_or_default();
        println!(
            "{lang:<10} {plugin:<14}: {:>8.1} ns/event (min {:.1}{cpu})",
            t.median, t.min
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments select sections.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |section: &str| wanted.is_empty() || wanted.iter().any(|w| w == section);
    let dir = plugins_dir();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!(
        "machine: {cpu}, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "batches of {BATCH} events, 6 properties each; median of {SAMPLES} samples x {BATCHES_PER_SAMPLE} batches"
    );
    if run("languages") {
        languages(&dir);
    }
    if run("stages") {
        let (pass_med, pass_min) = ns_per_event(&dir, "pass-through");
        println!("pass-through stage : {pass_med:>7.1} ns/event (min {pass_min:.1})");
        let (ua_med, ua_min) = ns_per_event(&dir, "ua-enricher");
        println!("ua-enricher stage  : {ua_med:>7.1} ns/event (min {ua_min:.1})  goal <= 150");
        println!(
            "ua-enricher work over the pass-through baseline: {:.1} ns/event",
            ua_med - pass_med
        );
    }
    if run("chain") {
        // Stage chains: the batch is encoded for the first stage only, and
        // its columns follow each stage's result to the next.
        let chains: [(&str, &[&str]); 2] = [
            ("4 x pass-through", &["pass-through"; 4]),
            (
                "default chain",
                &["bot-filter", "ua-enricher", "pii-scrubber", "first-seen"],
            ),
        ];
        let one = timing(
            &mut chain_pipeline(&dir, &["pass-through"]),
            "pass-through",
            events(),
        );
        for (label, plugins) in chains {
            let t = timing(&mut chain_pipeline(&dir, plugins), label, events());
            println!("{label:<19}: {:>7.1} ns/event (min {:.1})", t.median, t.min);
            if label.starts_with("4 x") {
                println!(
                    "  each pass-through stage after the first: {:.1} ns/event (one alone: {:.1})  goal <= 30",
                    (t.median - one.median) / 3.0,
                    one.median
                );
            }
        }
        for plugin in ["bot-filter", "ua-enricher", "pii-scrubber", "first-seen"] {
            let t = timing(&mut chain_pipeline(&dir, &[plugin]), plugin, events());
            println!("  {plugin:<17}: {:>7.1} ns/event alone", t.median);
        }
    }
    if !run("breakdown") && !run("swap") {
        return;
    }
    for plugin in ["pass-through", "ua-enricher"] {
        if !run("breakdown") {
            break;
        }
        let (enc, call, app) = breakdown(&dir, plugin);
        println!(
            "  {plugin:<13} breakdown: encode {enc:.1} + call {call:.1} + apply {app:.1} ns/event (medians)"
        );
    }
    if !run("swap") {
        return;
    }
    let mut swaps = swap_latency(&dir);
    let max = swaps.iter().copied().fold(0.0, f64::max);
    println!(
        "hot swap, file renamed -> new version serving a batch: median {:.0} ms, max {max:.0} ms over {SWAPS} swaps (includes the {} ms debounce)  goal <= 500",
        median(&mut swaps),
        Config::parse("", "x", &|_| None)
            .map(|c| c.runtime.reload_debounce.as_millis())
            .unwrap_or(0)
    );
}
