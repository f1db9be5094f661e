//! Hot reload: swaps under load, torn writes, bad files, editor saves,
//! automatic rollback, removal.

use std::io::Write;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use eddy_tests::plugins::*;
use eddy_tests::*;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(30);

fn has_version(e: &Value) -> bool {
    e["properties"].get("$browser_version").is_some()
}

fn watching(pipe: &mut LivePipe) {
    pipe.wait_log("watching plugins folder", SHORT, |v| {
        v["message"] == "watching plugins folder"
    });
}

/// A running `eddy pipe` with the ua-enricher as its only stage.
fn live_enricher(args: &[&str]) -> (Sandbox, LivePipe) {
    let sb = Sandbox::new();
    sb.install(UA_ENRICHER, "ua-enricher");
    let cfg = sb.config("[[stages]]\nplugin = \"ua-enricher\"\n");
    let mut pipe = sb.spawn_pipe(&cfg, args);
    watching(&mut pipe);
    (sb, pipe)
}

/// Send one event and return it as it comes out.
fn probe(pipe: &mut LivePipe, id: &str) -> Value {
    pipe.send(&[event_line(
        id,
        "probe",
        1,
        json!({"$user_agent": CHROME_WIN}),
    )]);
    let e = pipe.recv_events(1, SHORT).remove(0);
    assert_eq!(e["id"], id);
    e
}

#[test]
fn swap_under_load_loses_nothing_doubles_nothing_and_keeps_state() {
    const TOTAL: usize = 200_000;
    const USERS: usize = 5_000;
    const SWAP_AFTER: usize = 50_000;
    const HOLD_FROM: usize = 150_000;
    let sb = Sandbox::new();
    sb.install(UA_ENRICHER, "ua-enricher");
    sb.install(FIRST_SEEN, "first-seen");
    let cfg =
        sb.config("[[stages]]\nplugin = \"ua-enricher\"\n[[stages]]\nplugin = \"first-seen\"\n");
    // Batches close on size only (TOTAL and HOLD_FROM are whole batches):
    // a slow writer on a busy machine must not cut a batch short, so the
    // swap's position tells whether it happened between batches.
    let mut pipe = sb.spawn_pipe(&cfg, &["--batch-size", "1000", "--linger-ms", "600000"]);
    watching(&mut pipe);

    let lines: Vec<String> = (0..TOTAL)
        .map(|i| {
            event_line(
                &format!("e{i}"),
                &format!("u{}", i % USERS),
                i as i64,
                json!({"$user_agent": CHROME_WIN, "$current_url": "https://shop.example/p"}),
            )
        })
        .collect();
    let mut stdin = pipe.take_stdin();
    let (go, wait_for_swap) = mpsc::channel::<()>();
    // Events keep flowing while the swap happens; the last quarter is held
    // back until the swap is announced so the new version surely serves.
    let writer = thread::spawn(move || {
        for chunk in lines[..HOLD_FROM].chunks(1000) {
            stdin
                .write_all((chunk.join("\n") + "\n").as_bytes())
                .unwrap();
        }
        wait_for_swap.recv_timeout(LONG).expect("swap announced");
        for chunk in lines[HOLD_FROM..].chunks(1000) {
            stdin
                .write_all((chunk.join("\n") + "\n").as_bytes())
                .unwrap();
        }
    });

    let mut out = pipe.recv_events(SWAP_AFTER, LONG);
    sb.rename_over(UA_ENRICHER_V2, "ua-enricher");
    sb.rename_over(FIRST_SEEN_V2, "first-seen");
    pipe.wait_log("ua-enricher swapped", SHORT, |v| {
        is_log(v, "plugin swapped", "ua-enricher")
    });
    pipe.wait_log("first-seen swapped", SHORT, |v| {
        is_log(v, "plugin swapped", "first-seen")
    });
    go.send(()).unwrap();
    out.extend(pipe.recv_events(TOTAL - SWAP_AFTER, LONG));
    writer.join().unwrap();
    let (rest, summary) = pipe.finish(SHORT);
    assert!(rest.is_empty(), "{} extra events", rest.len());

    // Every input event exactly once, in input order.
    for (i, e) in out.iter().enumerate() {
        assert_eq!(e["id"], format!("e{i}"), "output position {i}");
    }
    // One switch from old to new behaviour, at a batch boundary between the
    // swap and the held-back tail.
    let k = out
        .iter()
        .position(has_version)
        .expect("the new version served");
    assert!(
        out[..k]
            .iter()
            .all(|e| !has_version(e) && e["properties"]["$browser"] == "Chrome")
    );
    assert!(
        out[k..].iter().all(has_version),
        "old behaviour after the switch"
    );
    assert!((SWAP_AFTER..=HOLD_FROM).contains(&k), "switch at {k}");
    assert_eq!(
        k % 1000,
        0,
        "swap happens between batches, not inside one: {k}"
    );

    // first-seen's memory survived its own swap: each user marked first
    // exactly once over the whole run, and the new version (which also marks
    // returning users) ran.
    let mut firsts = vec![0u32; USERS];
    for e in &out {
        if e["properties"]["$is_first_seen"] == true {
            let u: usize = e["distinct_id"].as_str().unwrap()[1..].parse().unwrap();
            firsts[u] += 1;
        }
    }
    assert!(
        firsts.iter().all(|&n| n == 1),
        "state reset: {:?}",
        firsts.iter().filter(|&&n| n != 1).count()
    );
    assert!(
        out[HOLD_FROM..]
            .iter()
            .all(|e| e["properties"]["$is_first_seen"] == false)
    );

    assert_eq!(summary["events_in"], TOTAL);
    assert_eq!(summary["events_out"], TOTAL);
    let stages = summary["stages"].as_array().unwrap();
    assert!(
        stages.iter().all(|s| s["failed_batches"] == 0),
        "{stages:?}"
    );
}

#[test]
fn torn_garbage_and_wrong_world_files_never_go_live() {
    let (sb, mut pipe) = live_enricher(&["--batch-size", "1"]);
    assert!(!has_version(&probe(&mut pipe, "p0")));
    let failed = |v: &Value| is_log(v, "plugin load failed", "ua-enricher");
    let path = sb.plugin_path("ua-enricher");

    // A torn write: the first half, a pause well past the debounce, then the rest.
    let v2 = std::fs::read(UA_ENRICHER_V2).unwrap();
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&v2[..v2.len() / 2]).unwrap();
    f.flush().unwrap();
    let log = pipe.wait_log("half file refused", SHORT, failed);
    let detail = log["detail"].as_str().unwrap();
    assert!(
        detail.contains("ua-enricher.wasm") && detail.contains("not a loadable component"),
        "{detail}"
    );
    assert!(
        !has_version(&probe(&mut pipe, "p1")),
        "old version keeps serving"
    );
    f.write_all(&v2[v2.len() / 2..]).unwrap();
    f.flush().unwrap();
    drop(f);
    pipe.wait_log("completed file swapped in", SHORT, |v| {
        is_log(v, "plugin swapped", "ua-enricher")
    });
    assert!(has_version(&probe(&mut pipe, "p2")));

    // Garbage bytes.
    std::fs::write(&path, b"\0asm this is not webassembly at all").unwrap();
    let n = pipe.logs.iter().filter(|v| failed(v)).count();
    pipe.wait_nth_log("garbage refused", n + 1, SHORT, failed);
    assert!(has_version(&probe(&mut pipe, "p3")), "v2 keeps serving");

    // A valid component of the wrong world (a WASI command).
    sb.rename_over(WRONG_WORLD, "ua-enricher");
    let log = pipe.wait_nth_log("wrong world refused", n + 2, SHORT, failed);
    let detail = log["detail"].as_str().unwrap();
    assert!(
        detail.contains("eddy:plugin"),
        "reason names the missing world: {detail}"
    );
    assert!(has_version(&probe(&mut pipe, "p4")), "v2 keeps serving");

    let (_, summary) = pipe.finish(SHORT);
    let plugin = summary_plugin(&summary, "ua-enricher");
    assert!(plugin["load_failures"].as_u64().unwrap() >= 3, "{plugin}");
    assert_eq!(plugin["swaps"], 1);
}

#[test]
fn rename_over_save_is_picked_up() {
    let (sb, mut pipe) = live_enricher(&["--batch-size", "1"]);
    assert!(!has_version(&probe(&mut pipe, "before")));
    sb.rename_over(UA_ENRICHER_V2, "ua-enricher");
    pipe.wait_log("swapped", SHORT, |v| {
        is_log(v, "plugin swapped", "ua-enricher")
    });
    assert!(has_version(&probe(&mut pipe, "after")));
}

#[test]
fn version_that_traps_is_rolled_back_and_its_batch_retried() {
    let (sb, mut pipe) = live_enricher(&["--batch-size", "5", "--linger-ms", "5"]);
    assert_eq!(
        probe(&mut pipe, "before")["properties"]["$browser"],
        "Chrome"
    );
    sb.rename_over(TRAP, "ua-enricher");
    pipe.wait_log("bad version swapped in", SHORT, |v| {
        is_log(v, "plugin swapped", "ua-enricher")
    });
    let batch: Vec<String> = (0..5)
        .map(|i| event_line(&format!("b{i}"), "u", i, json!({"$user_agent": CHROME_WIN})))
        .collect();
    pipe.send(&batch);
    let out = pipe.recv_events(5, SHORT);
    // The failed batch was retried on the restored version: nothing lost,
    // nothing left unprocessed.
    for (i, e) in out.iter().enumerate() {
        assert_eq!(e["id"], format!("b{i}"));
        assert_eq!(e["properties"]["$browser"], "Chrome");
    }
    let log = pipe.wait_log("rolled back", SHORT, |v| {
        is_log(v, "plugin rolled back", "ua-enricher")
    });
    assert!(log["detail"].as_str().unwrap().contains("trap"), "{log}");
    assert_eq!(
        probe(&mut pipe, "after")["properties"]["$browser"],
        "Chrome"
    );
    let (_, summary) = pipe.finish(SHORT);
    let plugin = summary_plugin(&summary, "ua-enricher");
    assert_eq!(plugin["rollbacks"], 1, "{plugin}");
}

#[test]
fn removed_file_unloads_the_plugin_and_events_follow_the_failure_policy() {
    let sb = Sandbox::new();
    sb.install(UA_ENRICHER, "ua-enricher");
    let cfg = sb.config("[[stages]]\nplugin = \"ua-enricher\"\non_failure = \"pass-through\"\n");
    let mut pipe = sb.spawn_pipe(&cfg, &["--batch-size", "1"]);
    watching(&mut pipe);
    assert_eq!(
        probe(&mut pipe, "before")["properties"]["$browser"],
        "Chrome"
    );
    std::fs::remove_file(sb.plugin_path("ua-enricher")).unwrap();
    pipe.wait_log("unloaded", SHORT, |v| {
        is_log(v, "plugin unloaded", "ua-enricher")
    });
    let e = probe(&mut pipe, "after");
    assert!(
        e["properties"].get("$browser").is_none(),
        "passed through unchanged: {e}"
    );
    sb.install(UA_ENRICHER, "ua-enricher");
    // The second "loaded" record: the first was at start-up.
    pipe.wait_nth_log("loaded again", 2, SHORT, |v| {
        is_log(v, "plugin loaded", "ua-enricher")
    });
    assert_eq!(
        probe(&mut pipe, "again")["properties"]["$browser"],
        "Chrome"
    );
}

#[test]
fn rollback_restores_the_last_proven_version_not_an_untested_one() {
    let (sb, mut pipe) = live_enricher(&["--batch-size", "1"]);
    // v1 serves (and so proves itself).
    assert!(!has_version(&probe(&mut pipe, "v1")));
    // v2 arrives but never serves a batch before v3 replaces it.
    let swapped = |v: &Value| is_log(v, "plugin swapped", "ua-enricher");
    sb.rename_over(UA_ENRICHER_V2, "ua-enricher");
    pipe.wait_nth_log("v2 swapped in", 1, SHORT, swapped);
    sb.rename_over(TRAP, "ua-enricher");
    pipe.wait_nth_log("v3 swapped in", 2, SHORT, swapped);
    // v3 traps: the batch is retried on v1, the last version that served.
    let e = probe(&mut pipe, "after");
    assert_eq!(e["properties"]["$browser"], "Chrome");
    assert!(
        !has_version(&e),
        "rolled back to untested v2 instead of v1: {e}"
    );
    pipe.wait_log("rolled back", SHORT, |v| {
        is_log(v, "plugin rolled back", "ua-enricher")
    });
}
