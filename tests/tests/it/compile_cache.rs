//! The compile cache (`EDDY_COMPILE_CACHE`): a component compiled once is
//! loaded from disk by the next run, with the same results; an entry that
//! is altered on disk is never loaded but compiled again; `off` keeps
//! nothing.

use eddy_tests::plugins::*;
use eddy_tests::*;
use serde_json::Value;

const INPUT: &str = concat!(
    r#"{"id":"a","name":"$pageview","distinct_id":"u1","timestamp":1000,"properties":{"$user_agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"}}"#,
    "\n",
    r#"{"id":"b","name":"$pageview","distinct_id":"u2","timestamp":2000,"properties":{"$user_agent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15"}}"#,
    "\n",
);

/// The `plugin loaded` log line of `ua-enricher` in a run's stderr.
fn loaded(run: &PipeRun) -> Value {
    run.stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| is_log(v, "plugin loaded", "ua-enricher"))
        .unwrap_or_else(|| panic!("no load logged:\n{}", run.stderr))
}

fn entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_compiled_component_is_reused_from_disk_and_an_altered_entry_is_compiled_again() {
    let sb = Sandbox::new();
    sb.install(UA_ENRICHER, "ua-enricher");
    let cfg = sb.config("[[stages]]\nplugin = \"ua-enricher\"\n");
    let cache = sb.path().join("compile-cache");
    let cache_env = cache.to_str().unwrap();
    let run = |env: &[(&str, &str)]| {
        let run = sb.pipe_with(Some(&cfg), INPUT.as_bytes(), &[], env);
        assert!(run.success, "{}", run.stderr);
        run
    };

    // First run: compiled, and kept.
    let first = run(&[("EDDY_COMPILE_CACHE", cache_env)]);
    assert!(
        loaded(&first)["detail"]
            .as_str()
            .unwrap()
            .contains("compiled in"),
        "{}",
        loaded(&first)
    );
    let kept = entries(&cache);
    assert_eq!(kept.len(), 1, "{kept:?}");
    let hash = loaded(&first)["hash"].as_str().unwrap().to_owned();
    let name = kept[0].file_name().unwrap().to_str().unwrap().to_owned();
    // The log shows the hash's short form.
    assert!(name.starts_with(&hash), "{name} names the component {hash}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the cache folder is private: {mode:o}");
    }
    assert_eq!(first.events[0]["properties"]["$browser"], "Chrome");

    // Second run: from disk, same results.
    let second = run(&[("EDDY_COMPILE_CACHE", cache_env)]);
    assert!(
        loaded(&second)["detail"]
            .as_str()
            .unwrap()
            .contains("loaded from the compile cache"),
        "{}",
        loaded(&second)
    );
    assert_eq!(second.events, first.events);

    // One byte of the machine code altered: refused, compiled again, and
    // the entry rewritten whole.
    let mut bytes = std::fs::read(&kept[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&kept[0], &bytes).unwrap();
    let third = run(&[("EDDY_COMPILE_CACHE", cache_env)]);
    assert!(
        third.stderr.contains("was not loaded; compiling it again"),
        "{}",
        third.stderr
    );
    assert!(
        loaded(&third)["detail"]
            .as_str()
            .unwrap()
            .contains("compiled in"),
        "{}",
        loaded(&third)
    );
    assert_eq!(third.events, first.events);
    let fourth = run(&[("EDDY_COMPILE_CACHE", cache_env)]);
    assert!(
        loaded(&fourth)["detail"]
            .as_str()
            .unwrap()
            .contains("loaded from the compile cache"),
        "the rewritten entry is sound: {}",
        loaded(&fourth)
    );
    assert_eq!(fourth.events, first.events);

    // `off`: nothing kept.
    let elsewhere = sb.path().join("not-used");
    let off = run(&[
        ("EDDY_COMPILE_CACHE", "off"),
        ("XDG_CACHE_HOME", elsewhere.to_str().unwrap()),
    ]);
    assert!(
        loaded(&off)["detail"]
            .as_str()
            .unwrap()
            .contains("compiled in")
    );
    assert!(!elsewhere.exists(), "off writes nothing");
}

/// The kind read from a component's exports without compiling it is the
/// kind loading finds, for components built from Rust, Python and
/// JavaScript; a file that is not a component has none.
#[test]
fn a_plugins_kind_is_read_without_compiling_it() {
    use eddy::plugin::PluginKind::{self, *};
    for (built, want) in [
        (BOT_FILTER, Processor),
        (UA_ENRICHER, Processor),
        (GEO_REGION_PY, Processor),
        (SAMPLER_JS, Processor),
        (LOGIN_BURST, Pattern),
        (PURCHASE_FUNNEL, Pattern),
        (HIGH_VALUE_CART_PY, Pattern),
        (HIGH_VALUE_CART_JS, Pattern),
        (ZSCORE_ANOMALY, Alert),
        (EWMA_BASELINE_PY, Alert),
        (EWMA_BASELINE_JS, Alert),
    ] {
        let bytes = std::fs::read(built).unwrap();
        assert_eq!(PluginKind::of_component(&bytes), Some(want), "{built}");
    }
    // A core module (the component's first bytes say which) and a
    // truncated component.
    assert_eq!(
        PluginKind::of_component(b"\0asm\x01\0\0\0"),
        None,
        "a core module"
    );
    let bytes = std::fs::read(UA_ENRICHER).unwrap();
    assert_eq!(PluginKind::of_component(&bytes[..bytes.len() / 2]), None);
}

/// `eddy pipe` compiles the stages, the alert plugins its configuration
/// names and every pattern plugin (they run wherever they are found), and
/// leaves the folder's other processors and alert plugins alone.
#[test]
fn pipe_compiles_only_the_plugins_its_run_can_use() {
    let sb = Sandbox::new();
    sb.install_examples();
    let plugins = |run: &PipeRun| -> Vec<String> {
        let mut names: Vec<String> = run.summary["plugins"]
            .as_array()
            .unwrap_or_else(|| panic!("no plugins in {}", run.summary))
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let cfg = sb.config("[[stages]]\nplugin = \"ua-enricher\"\n");
    let run = sb.pipe(&cfg, INPUT, &[]);
    assert!(run.success, "{}", run.stderr);
    assert_eq!(plugins(&run), ["login-burst", "ua-enricher"]);
    assert_eq!(run.events[0]["properties"]["$browser"], "Chrome");
    let skipped = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "not compiled: the configuration does not use them")
        .unwrap_or_else(|| panic!("the skipped plugins are not said:\n{}", run.stderr));
    assert_eq!(
        skipped["plugins"],
        "bot-filter, burn-rate, first-seen, pii-scrubber, zscore-anomaly"
    );

    // An alert plugin rule names its plugin: compiled.
    let cfg = sb.config(
        r#"
[[windows]]
name = "latency"
kind = "tumbling"
size = "1m"
group_by = ["properties.service"]
aggregates = ["count", "avg(properties.ms) as ms"]

[[alerts]]
name = "LatencyAnomaly"
plugin = "zscore-anomaly"
config = { window = "latency", aggregate = "ms", k = 5, min_samples = 20, history = 60 }
"#,
    );
    let run = sb.pipe(&cfg, INPUT, &[]);
    assert!(run.success, "{}", run.stderr);
    assert_eq!(plugins(&run), ["login-burst", "zscore-anomaly"]);
}
