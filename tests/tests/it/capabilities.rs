//! The capability policy (imports checked at load time against the stages'
//! `allow`) and `eddy plugin inspect`.

use std::process::Command;
use std::time::Duration;

use eddy_tests::plugins::*;
use eddy_tests::*;
use serde_json::{Value, json};

const SHORT: Duration = Duration::from_secs(30);

fn one_event() -> String {
    event_line("e1", "u1", 1, json!({"$user_agent": CHROME_WIN}))
}

/// Run `eddy pipe` over one event with `fs-reader` as the only stage, its
/// stage carrying `stage_extra` (e.g. an `allow` line).
fn run_fs_reader(stage_extra: &str) -> PipeRun {
    let sb = Sandbox::new();
    sb.install(FS_READER, "fs-reader");
    let cfg = sb.config(&format!(
        "[[stages]]\nplugin = \"fs-reader\"\n{stage_extra}"
    ));
    let run = sb.pipe(&cfg, &one_event(), &[]);
    assert!(run.success, "{}", run.stderr);
    assert_eq!(run.events.len(), 1, "the event always comes out");
    run
}

fn load_failed_logs(run: &PipeRun, plugin: &str) -> Vec<Value> {
    run.stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| is_log(v, "plugin load failed", plugin))
        .collect()
}

#[test]
fn a_component_importing_the_filesystem_is_refused_without_a_grant_and_loads_with_one() {
    // Without a grant: refused at load, never live; the stage passes the
    // event through untouched; the refusal names the imports and the fix.
    let run = run_fs_reader("");
    let p = &run.events[0]["properties"];
    assert!(p.get("file_read").is_none(), "the plugin never ran: {p}");
    let plugin = run.plugin("fs-reader");
    assert_eq!(plugin["live"], false, "{plugin}");
    assert_eq!(plugin["load_failures"], 1, "{plugin}");
    let err = plugin["last_error"].as_str().unwrap();
    assert!(
        err.contains("refused by the capability policy")
            && err.contains("wasi:filesystem/types@")
            && err.contains("wasi:filesystem/preopens@")
            && err.contains("allow = [\"wasi:filesystem\"]")
            && err.contains("plugin = \"fs-reader\""),
        "{err}"
    );
    // The same refusal is the `plugin load failed` notice in the logs.
    let logs = load_failed_logs(&run, "fs-reader");
    assert_eq!(logs.len(), 1, "{}", run.stderr);
    let detail = logs[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("fs-reader.wasm") && detail.contains("wasi:filesystem/types@"),
        "{detail}"
    );
    assert_eq!(run.stage("fs-reader")["passed_through"], 1);

    // With the grant it loads and runs, and still reads nothing: the grant
    // lets it link, eddy preopens no directory.
    let run = run_fs_reader("allow = [\"wasi:filesystem\"]\n");
    let p = &run.events[0]["properties"];
    assert_eq!(p["file_read"], false, "{p}");
    let plugin = run.plugin("fs-reader");
    assert_eq!(plugin["live"], true, "{plugin}");
    assert_eq!(plugin["load_failures"], 0, "{plugin}");
    assert!(plugin["last_error"].is_null(), "{plugin}");
    assert!(load_failed_logs(&run, "fs-reader").is_empty());
}

#[test]
fn a_grant_covers_only_what_it_names() {
    // One interface granted: the other one is still refused, by name.
    let run = run_fs_reader("allow = [\"wasi:filesystem/types\"]\n");
    assert!(run.events[0]["properties"].get("file_read").is_none());
    let err = run.plugin("fs-reader")["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        err.contains("wasi:filesystem/preopens@") && !err.contains("wasi:filesystem/types@"),
        "{err}"
    );

    // The sandbox probe imports files and sockets: a filesystem grant alone
    // leaves the sockets refused.
    let sb = Sandbox::new();
    sb.install(SANDBOX_PROBE, "sandbox-probe");
    let cfg = sb.config("[[stages]]\nplugin = \"sandbox-probe\"\nallow = [\"wasi:filesystem\"]\n");
    let run = sb.pipe(&cfg, &one_event(), &[]);
    assert!(run.success, "{}", run.stderr);
    assert!(run.events[0]["properties"].get("tcp_bind").is_none());
    let err = run.plugin("sandbox-probe")["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        err.contains("wasi:sockets/tcp@")
            && err.contains("allow = [\"wasi:sockets\"]")
            && !err.contains("wasi:filesystem/types@"),
        "{err}"
    );
}

#[test]
fn the_example_plugins_load_without_any_grant() {
    let sb = Sandbox::new();
    for (built, name) in [
        (BOT_FILTER, "bot-filter"),
        (UA_ENRICHER, "ua-enricher"),
        (PII_SCRUBBER, "pii-scrubber"),
        (FIRST_SEEN, "first-seen"),
    ] {
        sb.install(built, name);
    }
    // The embedded default configuration grants nothing.
    let run = sb.pipe_with(None, one_event().as_bytes(), &[], &[]);
    assert!(run.success, "{}", run.stderr);
    for name in ["bot-filter", "ua-enricher", "pii-scrubber", "first-seen"] {
        let plugin = run.plugin(name);
        assert_eq!(plugin["live"], true, "{plugin}");
        assert_eq!(plugin["load_failures"], 0, "{plugin}");
    }
    assert_eq!(run.events[0]["properties"]["$is_first_seen"], true);
}

#[test]
fn a_new_version_needing_a_grant_never_goes_live() {
    let sb = Sandbox::new();
    sb.install(UA_ENRICHER, "ua-enricher");
    let cfg = sb.config("[[stages]]\nplugin = \"ua-enricher\"\n");
    let mut pipe = sb.spawn_pipe(&cfg, &["--batch-size", "1"]);
    pipe.wait_log("watching plugins folder", SHORT, |v| {
        v["message"] == "watching plugins folder"
    });
    sb.rename_over(FS_READER, "ua-enricher");
    let log = pipe.wait_log("refusal", SHORT, |v| {
        is_log(v, "plugin load failed", "ua-enricher")
    });
    let detail = log["detail"].as_str().unwrap();
    assert!(
        detail.contains("wasi:filesystem/types@")
            && detail.contains("allow = [\"wasi:filesystem\"]"),
        "{detail}"
    );
    // The old version keeps serving.
    pipe.send(&[one_event()]);
    let e = pipe.recv_events(1, SHORT).remove(0);
    assert_eq!(e["properties"]["$browser"], "Chrome", "{e}");
    assert!(e["properties"].get("file_read").is_none(), "{e}");
    let (_, summary) = pipe.finish(SHORT);
    let plugin = summary_plugin(&summary, "ua-enricher");
    assert_eq!(plugin["swaps"], 0, "{plugin}");
    assert_eq!(plugin["load_failures"], 1, "{plugin}");
}

#[test]
fn a_misspelled_grant_stops_startup_naming_the_key() {
    let sb = Sandbox::new();
    sb.install(FS_READER, "fs-reader");
    let cfg = sb.config("[[stages]]\nplugin = \"fs-reader\"\nallow = [\"wasi:filesytem\"]\n");
    let run = sb.pipe(&cfg, &one_event(), &[]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("stages[0].allow[0]")
            && run
                .stderr
                .contains("\"wasi:filesytem\" is not a capability eddy can grant")
            && run.stderr.contains("\"wasi:filesystem\", \"wasi:sockets\""),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------
// eddy plugin inspect
// ---------------------------------------------------------------------------

struct Inspect {
    success: bool,
    stdout: String,
    stderr: String,
}

fn inspect(args: &[&str]) -> Inspect {
    let mut cmd = Command::new(eddy_bin());
    cmd.arg("plugin").arg("inspect").args(args);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    Inspect {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn inspect_json(args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = inspect(&all);
    assert!(out.success, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// The report's line for `label` (`name`, `version`, ...), without the label.
fn field<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .map(str::trim)
}

#[test]
fn inspect_shows_what_an_example_plugin_says_and_imports() {
    let out = inspect(&[UA_ENRICHER]);
    assert!(out.success, "{}", out.stderr);
    let text = &out.stdout;
    assert_eq!(field(text, "name "), Some("ua-enricher"), "{text}");
    assert_eq!(field(text, "version "), Some("0.1.0"), "{text}");
    assert_eq!(
        field(text, "world "),
        Some("eddy:plugin/processor (eddy:plugin@0.1.0)"),
        "{text}"
    );
    let size = std::fs::metadata(UA_ENRICHER).unwrap().len();
    assert_eq!(field(text, "size "), Some(format!("{size} bytes").as_str()));
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("wasi:cli/environment@")
                && l.ends_with("allowed by default")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim() == "eddy:plugin/processing@0.1.0"),
        "exports: {text}"
    );
    assert_eq!(
        field(text, "loads "),
        Some("yes, with the default capabilities")
    );

    let r = inspect_json(&[UA_ENRICHER]);
    assert_eq!(r["describe"]["name"], "ua-enricher");
    assert_eq!(r["describe"]["version"], "0.1.0");
    assert_eq!(r["describe"]["config_schema"]["type"], "object", "{r}");
    assert_eq!(r["size"], size);
    assert_eq!(r["world"], "eddy:plugin/processor");
    assert_eq!(r["package"], "eddy:plugin@0.1.0");
    assert_eq!(r["loads"], true);
    let imports = r["imports"].as_array().unwrap();
    assert!(
        imports
            .iter()
            .any(|i| i["name"].as_str().unwrap().starts_with("eddy:plugin/log@")),
        "{r}"
    );
    assert!(imports.iter().all(|i| i["policy"] == "default"), "{r}");
}

#[test]
fn inspect_flags_imports_that_need_a_grant() {
    let r = inspect_json(&[FS_READER]);
    assert_eq!(r["describe"]["name"], "fs-reader");
    assert_eq!(r["loads"], false);
    let needs: Vec<&Value> = r["imports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["policy"] == "needs-grant")
        .collect();
    assert_eq!(needs.len(), 2, "{r}");
    assert!(needs.iter().all(|i| i["grant"] == "wasi:filesystem"
        && i["name"].as_str().unwrap().starts_with("wasi:filesystem/")));
    let refusal = r["refusal"].as_str().unwrap();
    assert!(refusal.contains("wasi:filesystem/types@"), "{refusal}");

    let text = inspect(&[FS_READER]).stdout;
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("wasi:filesystem/types@")
                && l.ends_with("needs a grant: allow = [\"wasi:filesystem\"]")),
        "{text}"
    );
    assert!(field(&text, "loads ").unwrap().starts_with("no"), "{text}");

    // Judged with a configuration that grants it, by file name.
    let sb = Sandbox::new();
    sb.install(FS_READER, "fs-reader");
    let cfg = sb.config("[[stages]]\nplugin = \"fs-reader\"\nallow = [\"wasi:filesystem\"]\n");
    let path = sb.plugin_path("fs-reader");
    let r = inspect_json(&["--config", cfg.to_str().unwrap(), path.to_str().unwrap()]);
    assert_eq!(r["loads"], true, "{r}");
    assert_eq!(r["grants"], json!(["wasi:filesystem"]));
    assert!(
        r["imports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["policy"] == "default" || i["policy"] == "granted"),
        "{r}"
    );
}

#[test]
fn inspect_says_which_world_a_foreign_component_targets() {
    let r = inspect_json(&[WRONG_WORLD]);
    assert!(r["world"].is_null(), "{r}");
    assert!(r["describe"].is_null());
    assert_eq!(r["loads"], false);
    assert!(
        r["describe_error"]
            .as_str()
            .unwrap()
            .contains("eddy:plugin/processor"),
        "{r}"
    );
    assert!(
        r["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("wasi:cli/run@")),
        "{r}"
    );
}

#[test]
fn inspect_refuses_what_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm this is not webassembly at all").unwrap();
    let out = inspect(&[garbage.to_str().unwrap()]);
    assert!(!out.success);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!(
            "{} is not a WebAssembly component",
            garbage.display()
        )) && out.stderr.contains("wasm32-wasip2"),
        "{}",
        out.stderr
    );

    // A core module (what a plain wasm32 build gives) is named as such.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let out = inspect(&[core.to_str().unwrap()]);
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("is a core WebAssembly module, not a component"),
        "{}",
        out.stderr
    );

    let missing = dir.path().join("missing.wasm");
    let out = inspect(&[missing.to_str().unwrap()]);
    assert!(!out.success);
    assert!(out.stderr.contains("cannot read"), "{}", out.stderr);
}
