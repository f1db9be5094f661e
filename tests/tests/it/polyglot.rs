//! Plugins in Python and JavaScript, and the plugin developer commands:
//! `eddy plugin new | build | test | diff`.
//!
//! Python and JavaScript components are 12-18 MB and take 10-25 s each to
//! compile in wasmtime on a busy 2-core machine, so these tests load each of
//! them as few times as they can.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use eddy_tests::plugins::*;
use eddy_tests::*;
use serde_json::{Value, json};

/// Compiling a Python or JavaScript component, on a machine also running
/// other tests.
const LONG: Duration = Duration::from_secs(300);

/// Their compilation can take well over the default 30 s limit on two
/// cores that are busy with other tests.
const RUNTIME: &str = "[runtime]\ncompile_timeout_ms = 300000\n";

/// Countries of the test events and the region each must get; `ZZ` is not a
/// country, so it gets none.
const COUNTRIES: &[(&str, Option<&str>)] = &[
    ("FR", Some("Europe")),
    ("us", Some("North America")),
    ("BR", Some("Latin America")),
    ("JP", Some("Asia")),
    ("AE", Some("Middle East")),
    ("NG", Some("Africa")),
    ("NZ", Some("Oceania")),
    ("ZZ", None),
];

fn geo_event(i: usize) -> String {
    let (country, _) = COUNTRIES[i % COUNTRIES.len()];
    let name = if i.is_multiple_of(10) {
        "signup"
    } else {
        "$pageview"
    };
    json!({
        "id": format!("e{i}"),
        "name": name,
        "timestamp": 1_700_000_000_000i64 + i as i64,
        "distinct_id": format!("u{}", i % 97),
        "properties": {"$geoip_country_code": country, "n": i},
    })
    .to_string()
}

/// The region event `e` must carry, by its index.
fn expected_region(i: usize) -> Option<&'static str> {
    COUNTRIES[i % COUNTRIES.len()].1
}

fn index(e: &Value) -> usize {
    e["id"].as_str().unwrap()[1..].parse().unwrap()
}

/// The sampler's hash, as documented in plugins/js/sampler/app.js.
fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    h
}

#[test]
fn python_enricher_and_javascript_sampler_run_in_the_host() {
    const N: usize = 2_000;
    let sb = Sandbox::new();
    sb.install(GEO_REGION_PY, "geo-region");
    sb.install(SAMPLER_JS, "sampler");
    let cfg = sb.config(&format!(
        "{RUNTIME}[[stages]]\nplugin = \"geo-region\"\ndeadline_ms = 2000\n\
         [[stages]]\nplugin = \"sampler\"\ndeadline_ms = 2000\n\
         [stages.config]\nrate = 0.25\nalways_keep = [\"signup\"]\n"
    ));
    let input: Vec<String> = (0..N).map(geo_event).collect();
    let run = sb.pipe(&cfg, &(input.join("\n") + "\n"), &["--batch-size", "500"]);
    assert!(run.success, "{}", run.stderr);
    let geo = run.stage("geo-region");
    assert_eq!(geo["version"], "1.0.0-python", "{}", run.stderr);
    assert_eq!(geo["failed_batches"], 0, "{}", run.stderr);
    let sampler = run.stage("sampler");
    assert_eq!(sampler["version"], "1.0.0", "{}", run.stderr);
    assert_eq!(sampler["failed_batches"], 0, "{}", run.stderr);

    // Exactly the users the documented hash puts in a 25 % sample, plus
    // every signup.
    let kept: Vec<usize> = (0..N)
        .filter(|i| i % 10 == 0 || fnv1a(&format!("u{}", i % 97)) % 10_000 < 2_500)
        .collect();
    assert!(
        kept.len() > N / 10 && kept.len() < N,
        "the sample is a real subset: {}",
        kept.len()
    );
    let got: Vec<usize> = run.events.iter().map(index).collect();
    assert_eq!(got, kept, "the sampler kept other events than expected");
    for e in &run.events {
        let i = index(e);
        let props = &e["properties"];
        assert_eq!(
            props.get("$region").and_then(Value::as_str),
            expected_region(i),
            "{e}"
        );
        assert_eq!(props["n"], i, "other properties survive: {e}");
        // Sampled events say so; signups were never subject to sampling.
        if i.is_multiple_of(10) {
            assert!(props.get("$sample_rate").is_none(), "{e}");
        } else {
            assert_eq!(props["$sample_rate"], 0.25, "{e}");
        }
    }
    assert_eq!(sampler["dropped"], (N - kept.len()) as u64);
}

fn watching(pipe: &mut LivePipe) {
    pipe.wait_log("watching plugins folder", LONG, |v| {
        v["message"] == "watching plugins folder"
    });
}

#[test]
fn stage_swapped_from_python_to_javascript_under_load_loses_no_event() {
    const TOTAL: usize = 30_000;
    const SWAP_AFTER: usize = 5_000;
    const HOLD_FROM: usize = 20_000;
    let sb = Sandbox::new();
    sb.install(GEO_REGION_PY, "geo-region");
    // A JavaScript stage takes 15-30 µs/event: 1,000 events can need more than
    // the 100 ms default deadline on a busy machine.
    let cfg = sb.config(&format!(
        "{RUNTIME}[[stages]]\nplugin = \"geo-region\"\ndeadline_ms = 2000\n"
    ));
    let mut pipe = sb.spawn_pipe(&cfg, &["--batch-size", "1000"]);
    watching(&mut pipe);

    let lines: Vec<String> = (0..TOTAL).map(geo_event).collect();
    let mut stdin = pipe.take_stdin();
    let (go, wait_for_swap) = mpsc::channel::<()>();
    // Events keep flowing while the JavaScript version compiles and goes
    // live; the last third is held back until the swap is announced, so the
    // new version surely serves some.
    let writer = thread::spawn(move || {
        for chunk in lines[..HOLD_FROM].chunks(500) {
            stdin
                .write_all((chunk.join("\n") + "\n").as_bytes())
                .unwrap();
            thread::sleep(Duration::from_millis(20));
        }
        wait_for_swap.recv_timeout(LONG).expect("swap announced");
        for chunk in lines[HOLD_FROM..].chunks(1000) {
            stdin
                .write_all((chunk.join("\n") + "\n").as_bytes())
                .unwrap();
        }
    });

    let mut out = pipe.recv_events(SWAP_AFTER, LONG);
    sb.rename_over(GEO_REGION_JS, "geo-region");
    let swapped = pipe.wait_log("geo-region swapped", LONG, |v| {
        is_log(v, "plugin swapped", "geo-region")
    });
    assert_eq!(swapped["version"], "1.0.0-js", "{swapped}");
    go.send(()).unwrap();
    out.extend(pipe.recv_events(TOTAL - SWAP_AFTER, LONG));
    writer.join().unwrap();
    let (rest, summary) = pipe.finish(LONG);
    assert!(rest.is_empty(), "{} extra events", rest.len());

    // Every event exactly once, in order, enriched by one version or the
    // other.
    for (i, e) in out.iter().enumerate() {
        assert_eq!(e["id"], format!("e{i}"), "output position {i}");
        assert_eq!(
            e["properties"].get("$region").and_then(Value::as_str),
            expected_region(i),
            "{e}"
        );
    }
    // Both runtimes served: each counts the events it saw.
    let plugin = summary_plugin(&summary, "geo-region");
    let python = plugin["counters"]["events_python"].as_u64().unwrap_or(0);
    let js = plugin["counters"]["events_js"].as_u64().unwrap_or(0);
    assert_eq!(python + js, TOTAL as u64, "{plugin}");
    assert!(python >= SWAP_AFTER as u64, "{plugin}");
    assert!(js >= (TOTAL - HOLD_FROM) as u64, "{plugin}");
    assert_eq!(plugin["version"], "1.0.0-js");
    assert_eq!(plugin["swaps"], 1);
    assert_eq!(plugin["rollbacks"], 0);
    assert_eq!(plugin["failures"], 0);
}

fn eddy(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(eddy_bin());
    cmd.args(args).current_dir(dir).env_remove("EDDY_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(cmd, LONG)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `plugin new` → `plugin build` → `plugin test` with the scaffold's own
/// example test; returns the project folder and the built component.
fn round_trip(sandbox: &Sandbox, lang: &str, env: &[(&str, &str)]) -> (PathBuf, PathBuf) {
    let name = format!("my-{lang}-plugin");
    let new = eddy(
        &["plugin", "new", &name, "--lang", lang],
        sandbox.path(),
        env,
    );
    assert!(new.status.success(), "{}", text(&new.stderr));
    let project = sandbox.path().join(&name);
    assert!(project.join("README.md").is_file());

    let build = eddy(&["plugin", "build"], &project, env);
    assert!(
        build.status.success(),
        "build failed: {}",
        text(&build.stderr)
    );
    let wasm = PathBuf::from(text(&build.stdout).trim());
    assert_eq!(wasm, project.join(format!("target/{name}.wasm")));
    assert!(text(&build.stderr).contains(&format!("{lang} plugin `{name}`")));

    let test = eddy(
        &[
            "plugin",
            "test",
            wasm.to_str().unwrap(),
            "--events",
            "tests/events.ndjson",
            "--expect",
            "tests/expected.ndjson",
            "--config",
            "plugin.toml",
        ],
        &project,
        env,
    );
    assert!(
        test.status.success(),
        "{}\n{}",
        text(&test.stdout),
        text(&test.stderr)
    );
    assert!(
        text(&test.stdout).contains("ok: 2 events (expected) vs 2 (actual)"),
        "{}",
        text(&test.stdout)
    );
    (project, wasm)
}

#[test]
fn scaffold_round_trip_rust_and_a_failing_expectation() {
    let sb = Sandbox::new();
    // Scaffolds share one cargo target folder, so the SDK's dependencies
    // are compiled once per machine rather than once per run.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold-test");
    let target = target.to_str().unwrap();
    let (project, wasm) = round_trip(&sb, "rust", &[("CARGO_TARGET_DIR", target)]);

    // A changed configuration makes the same test fail, naming the field.
    std::fs::write(project.join("plugin.toml"), "team = \"web\"\n").unwrap();
    let test = eddy(
        &[
            "plugin",
            "test",
            wasm.to_str().unwrap(),
            "--events",
            "tests/events.ndjson",
            "--expect",
            "tests/expected.ndjson",
            "--config",
            "plugin.toml",
        ],
        &project,
        &[],
    );
    assert_eq!(test.status.code(), Some(1), "{}", text(&test.stderr));
    let out = text(&test.stdout);
    assert!(
        out.contains("~ e1\n    properties.$team: \"growth\" -> \"web\""),
        "{out}"
    );
    assert!(out.contains("0 unchanged, 2 changed"), "{out}");
    assert!(out.contains("FAILED"), "{out}");
}

#[test]
fn scaffold_round_trip_python() {
    round_trip(&Sandbox::new(), "python", &[]);
}

#[test]
fn scaffold_round_trip_javascript() {
    round_trip(&Sandbox::new(), "js", &[]);
}

#[test]
fn plugin_build_names_the_missing_toolchain_and_how_to_install_it() {
    let sb = Sandbox::new();
    let new = eddy(
        &["plugin", "new", "nopy", "--lang", "python"],
        sb.path(),
        &[],
    );
    assert!(new.status.success(), "{}", text(&new.stderr));
    let empty = sb.path().join("no-tools");
    std::fs::create_dir(&empty).unwrap();
    let build = eddy(
        &["plugin", "build", "nopy"],
        sb.path(),
        &[
            ("EDDY_TOOLS_DIR", empty.to_str().unwrap()),
            ("PATH", "/usr/bin:/bin"),
        ],
    );
    assert!(!build.status.success());
    let err = text(&build.stderr);
    assert!(
        err.contains("componentize-py not found (needed to build Python plugins)"),
        "{err}"
    );
    assert!(err.contains("bash scripts/setup"), "{err}");
    assert!(err.contains("pip install componentize-py==0.25.1"), "{err}");
    assert!(!sb.path().join("nopy/target/nopy.wasm").exists());
}

#[test]
fn plugin_diff_reports_changed_dropped_and_identical_versions() {
    let sb = Sandbox::new();
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample-events.ndjson");
    let events = events.to_str().unwrap();

    // ua-enricher v2 also sets $browser_version: a field-level change.
    let diff = eddy(
        &[
            "plugin",
            "diff",
            UA_ENRICHER,
            UA_ENRICHER_V2,
            "--events",
            events,
        ],
        sb.path(),
        &[],
    );
    assert_eq!(diff.status.code(), Some(1), "{}", text(&diff.stderr));
    let out = text(&diff.stdout);
    assert!(
        out.contains("~ evt-000\n    properties.$browser_version: (absent) -> \"120.0.6099.109\""),
        "{out}"
    );
    assert!(
        out.contains("12 events (old) vs 12 (new): 3 unchanged, 9 changed, 0 dropped, 0 added"),
        "{out}"
    );

    // A filter instead of a pass-through drops the bots' events.
    let diff = eddy(
        &[
            "plugin",
            "diff",
            PASS_THROUGH,
            BOT_FILTER,
            "--events",
            events,
            "--json",
        ],
        sb.path(),
        &[],
    );
    assert_eq!(diff.status.code(), Some(1), "{}", text(&diff.stderr));
    let report: Value = serde_json::from_slice(&diff.stdout).unwrap();
    let dropped: Vec<&str> = report["comparison"]["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["properties"]["$user_agent"].as_str().unwrap())
        .collect();
    assert_eq!(dropped.len(), 3, "{report}");
    assert!(
        dropped.iter().all(|ua| ua.to_lowercase().contains("bot")),
        "{report}"
    );
    assert_eq!(report["comparison"]["changed"], json!([]));
    assert_eq!(report["same"], false);

    // The same version against itself: no difference, exit 0.
    let same = eddy(
        &[
            "plugin",
            "diff",
            UA_ENRICHER,
            UA_ENRICHER,
            "--events",
            events,
        ],
        sb.path(),
        &[],
    );
    assert!(same.status.success(), "{}", text(&same.stdout));
    assert!(text(&same.stdout).contains("12 unchanged, 0 changed, 0 dropped, 0 added"));
}

#[test]
fn plugin_test_runs_on_event_time_and_repeats_exactly() {
    let sb = Sandbox::new();
    // Three batches of two.
    let input = [10_000i64, 20_000, 40_000, 30_000, 35_000, 36_000]
        .iter()
        .enumerate()
        .map(|(i, ts)| event_line(&format!("e{i}"), "u", 1_700_000_000_000 + ts, json!({})))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(sb.path().join("in.ndjson"), input).unwrap();
    let args = [
        "plugin",
        "test",
        CLOCK_STAMP,
        "--events",
        "in.ndjson",
        "--batch-size",
        "2",
    ];
    let first = eddy(&args, sb.path(), &[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let events: Vec<Value> = text(&first.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let clocks: Vec<i64> = events
        .iter()
        .map(|e| e["properties"]["clock_ms"].as_i64().unwrap())
        .collect();
    // The plugin's clock reads the newest event time so far, never the
    // wall clock, and never goes back.
    let t = |s: i64| 1_700_000_000_000 + s;
    assert_eq!(
        clocks,
        vec![
            t(20_000),
            t(20_000),
            t(40_000),
            t(40_000),
            t(40_000),
            t(40_000)
        ]
    );
    let second = eddy(&args, sb.path(), &[]);
    assert_eq!(
        text(&first.stdout),
        text(&second.stdout),
        "random values and clocks repeat exactly"
    );

    // `eddy pipe` runs the same plugin on the real clock.
    let cfg = sb.config("[[stages]]\nplugin = \"clock-stamp\"\n");
    sb.install(CLOCK_STAMP, "clock-stamp");
    let live = sb.pipe(
        &cfg,
        "{\"name\":\"a\",\"distinct_id\":\"u\",\"timestamp\":1}\n",
        &[],
    );
    assert!(live.events[0]["properties"]["clock_ms"].as_i64().unwrap() > 1_700_000_000_000);
}

#[test]
fn plugin_test_with_a_pipeline_replaces_one_stage() {
    let sb = Sandbox::new();
    sb.install(BOT_FILTER, "bot-filter");
    sb.install(UA_ENRICHER, "ua-enricher");
    let cfg =
        sb.config("[[stages]]\nplugin = \"bot-filter\"\n[[stages]]\nplugin = \"ua-enricher\"\n");
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample-events.ndjson");
    let test = eddy(
        &[
            "plugin",
            "test",
            UA_ENRICHER_V2,
            "--as",
            "ua-enricher",
            "--pipeline",
            cfg.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
        ],
        sb.path(),
        &[],
    );
    assert!(test.status.success(), "{}", text(&test.stderr));
    let out: Vec<Value> = text(&test.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // bot-filter ran (bots gone), and the stand-in v2 enricher ran.
    assert_eq!(out.len(), 9);
    assert!(
        out.iter()
            .any(|e| e["properties"].get("$browser_version").is_some())
    );
    // Without --as, a file whose name matches no stage is refused clearly.
    let refused = eddy(
        &[
            "plugin",
            "test",
            UA_ENRICHER_V2,
            "--pipeline",
            cfg.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
        ],
        sb.path(),
        &[],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("no stage uses plugin `ua-enricher-v2`"),
        "{}",
        text(&refused.stderr)
    );
}
