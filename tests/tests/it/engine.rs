//! One deterministic engine behind every driver: the real binary, real
//! plugins built from source, the embedded default configuration.
//!
//! - the same recorded input gives the same window results through `eddy
//!   pipe --clock virtual` and `eddy plugin test --pipeline`, at batch sizes
//!   1, 7 and 1,000;
//! - `eddy serve --record FILE` publishes exactly what `eddy pipe --replay
//!   FILE` produces, sequence numbers included, across a plugin hot swap;
//! - a snapshot taken at a random input boundary and restored in a new
//!   process continues exactly as the uninterrupted run;
//! - `eddy pipe --output none` writes no events and the same results;
//!   decoding on several threads gives what one gives (events, results,
//!   and every line that is not an event, by number, in order).

use std::path::{Path, PathBuf};
use std::time::Duration;

use eddy_tests::plugins::{BOT_FILTER, FIRST_SEEN, PII_SCRUBBER, UA_ENRICHER, UA_ENRICHER_V2};
use eddy_tests::server::{Ws, http};
use eddy_tests::{CHROME_WIN, GOOGLEBOT, Rng, SAFARI_IPHONE, Sandbox, run_with_timeout};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(300);

/// The embedded default configuration (its four stages, four windows and
/// live views), on a sandbox's plugins.
fn default_config(sandbox: &Sandbox) -> PathBuf {
    let body = eddy_tests::default_config_body();
    for (built, name) in [
        (BOT_FILTER, "bot-filter"),
        (UA_ENRICHER, "ua-enricher"),
        (PII_SCRUBBER, "pii-scrubber"),
        (FIRST_SEEN, "first-seen"),
    ] {
        sandbox.install(built, name);
    }
    sandbox.config(&body)
}

/// The golden workload: 3,000 events over ~25 minutes of event time from
/// browsers, phones and a crawler (the bot filter drops it), pageviews with
/// paths and load times, `{"$wall": MS}` lines as the clock moves, idle
/// gaps (wall time passing with no events, which closes windows), events
/// later than the windows' lateness, and events hours ahead of the wall
/// clock (rejected as future).
fn workload() -> String {
    let t0: i64 = 1_763_899_980_000;
    let mut rng = Rng(0x5eed_cafe);
    let mut lines = Vec::new();
    let mut wall = t0;
    let mut cursor = t0;
    lines.push(json!({"$wall": wall}).to_string());
    let pages = [
        "/",
        "/pricing",
        "/docs",
        "/blog/launch",
        "/cart",
        "/checkout",
    ];
    for i in 0..3_000 {
        if i % 40 == 0 && i > 0 {
            wall = wall.max(cursor) + rng.below(2_000) as i64;
            lines.push(json!({"$wall": wall}).to_string());
        }
        if i % 700 == 699 {
            // An idle gap: the wall clock moves on, in steps, no events.
            for _ in 0..6 {
                wall += 7_000;
                lines.push(json!({"$wall": wall}).to_string());
            }
            cursor = wall;
        }
        cursor += rng.below(900) as i64;
        let ts = match rng.below(60) {
            0 => cursor - 600_000 - rng.below(300_000) as i64, // late
            1 => wall + 3 * 3_600_000,                         // future
            2..=8 => cursor - rng.below(4_000) as i64,         // out of order
            _ => cursor,
        };
        let ua = [CHROME_WIN, SAFARI_IPHONE, CHROME_WIN, GOOGLEBOT][rng.below(4) as usize];
        let path = pages[rng.below(pages.len() as u64) as usize];
        let user = format!("user-{}", rng.below(150));
        let mut properties = json!({
            "$current_url": format!("https://shop.example{path}?ref={}", rng.below(5)),
            "$pathname": path,
            "$user_agent": ua,
            "$session_id": format!("s-{}", rng.below(60)),
        });
        if rng.below(3) == 0 {
            properties["load_ms"] = json!(100 + rng.below(2_000));
        }
        if rng.below(25) == 0 {
            properties["email"] = json!(format!("{user}@example.com"));
        }
        let name = if rng.below(8) == 0 {
            "$autocapture"
        } else {
            "$pageview"
        };
        lines.push(
            json!({"id": format!("ev-{i}"), "name": name, "distinct_id": user,
                   "timestamp": ts, "properties": properties})
            .to_string(),
        );
    }
    lines.join("\n") + "\n"
}

/// A sandbox with the default configuration and the golden workload: the
/// sandbox, the configuration's path and the input's.
fn golden() -> (Sandbox, String, String) {
    let sandbox = Sandbox::new();
    let config = s(&default_config(&sandbox));
    let input = sandbox.path().join("workload.ndjson");
    std::fs::write(&input, workload()).unwrap();
    let input = s(&input);
    (sandbox, config, input)
}

fn eddy(sandbox: &Sandbox, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(eddy_tests::eddy_bin());
    cmd.args(args)
        .env_remove("EDDY_LOG")
        .current_dir(sandbox.path());
    run_with_timeout(cmd, LIMIT)
}

fn ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

#[test]
fn pipe_and_plugin_test_give_one_result_at_every_batch_size() {
    let (sandbox, config, input) = golden();

    let mut windows = Vec::new();
    let mut events = Vec::new();
    for size in ["1", "7", "1000"] {
        let w = sandbox.path().join(format!("windows-{size}.ndjson"));
        let e = sandbox.path().join(format!("events-{size}.ndjson"));
        let out = eddy(
            &sandbox,
            &[
                "pipe",
                "--config",
                &config,
                "--input",
                &input,
                "--output",
                &s(&e),
                "--windows",
                &s(&w),
                "--clock",
                "virtual",
                "--no-watch",
                "--batch-size",
                size,
                "--summary",
                "none",
            ],
        );
        ok(&out, &format!("eddy pipe --batch-size {size}"));
        windows.push((size, lines(&w)));
        events.push((size, lines(&e)));
    }
    let (_, reference) = &windows[2];
    for (size, w) in &windows {
        assert_eq!(
            w.len(),
            reference.len(),
            "batch size {size}: number of window outputs"
        );
        if let Some(i) = (0..w.len()).find(|&i| w[i] != reference[i]) {
            panic!(
                "batch size {size}: window output {i} differs:\n  {}\n  {}",
                w[i], reference[i]
            );
        }
    }
    for (size, e) in &events {
        assert_eq!(e, &events[2].1, "batch size {size}: events out");
    }
    // The workload exercised what it is meant to.
    let count = |f: &dyn Fn(&Value) -> bool| reference.iter().filter(|v| f(v)).count();
    for (what, n) in [
        ("final results", count(&|v| v["data"]["kind"] == "final")),
        ("early results", count(&|v| v["data"]["kind"] == "early")),
        ("late events", count(&|v| v["data"]["reason"] == "late")),
        ("future events", count(&|v| v["data"]["reason"] == "future")),
        (
            "session results",
            count(&|v| v["channel"] == "windows/sessions"),
        ),
        (
            "load times",
            count(&|v| v["channel"] == "windows/load_time"),
        ),
    ] {
        assert!(n > 0, "the workload produced no {what}");
    }
    assert!(
        events[2].1.len() < 3_000,
        "the bot filter dropped the crawler's events"
    );
    assert!(
        events[2]
            .1
            .iter()
            .any(|e| e["properties"]["$browser"] == "Chrome"),
        "the enricher ran"
    );

    // `plugin test` replays the same input through the same engine.
    let expected = sandbox.path().join("windows-1000.ndjson");
    for size in ["1", "7", "1000"] {
        let out = eddy(
            &sandbox,
            &[
                "plugin",
                "test",
                "--pipeline",
                &config,
                "--events",
                &input,
                "--expect-windows",
                &s(&expected),
                "--batch-size",
                size,
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "plugin test --batch-size {size}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("ok: window and pattern results"),
            "{stdout}"
        );
    }
}

fn channels(path: &Path) -> Vec<(String, u64, Value)> {
    lines(path)
        .into_iter()
        .map(|v| {
            (
                v["channel"].as_str().unwrap().to_owned(),
                v["seq"].as_u64().unwrap(),
                v["data"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_snapshot_restored_in_a_new_process_continues_exactly() {
    let (sandbox, config, input) = golden();
    let pipe = |extra: &[&str]| {
        let mut args = vec![
            "pipe",
            "--config",
            &config,
            "--input",
            &input,
            "--output",
            "/dev/null",
            "--clock",
            "virtual",
            "--no-watch",
            "--summary",
            "json",
            "--batch-size",
            "50",
        ];
        args.extend_from_slice(extra);
        let out = eddy(&sandbox, &args);
        ok(&out, &format!("eddy pipe {extra:?}"));
        let summary: Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stderr).lines().last().unwrap())
                .unwrap();
        summary
    };
    let whole_path = sandbox.path().join("whole.ndjson");
    let summary = pipe(&["--channels", &s(&whole_path)]);
    let mut whole = channels(&whole_path);
    whole.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let inputs = summary["inputs"].as_u64().unwrap();
    assert!(inputs > 100, "{summary}");
    assert!(whole.iter().any(|m| m.0 == "plugins") || whole.iter().any(|m| m.0 == "events"));

    let mut rng = Rng(0xc0ffee);
    for round in 0..4 {
        let cut = 1 + rng.below(inputs - 2);
        let snap = sandbox.path().join(format!("snap-{round}.bin"));
        let first = sandbox.path().join(format!("first-{round}.ndjson"));
        let second = sandbox.path().join(format!("second-{round}.ndjson"));
        pipe(&[
            "--channels",
            &s(&first),
            "--snapshot",
            &s(&snap),
            "--stop-after",
            &cut.to_string(),
        ]);
        pipe(&["--channels", &s(&second), "--restore", &s(&snap)]);
        let mut resumed = channels(&first);
        resumed.extend(channels(&second));
        // Per channel, in sequence order: how channels interleave in the
        // file follows the batches (which the reader's timing may cut
        // differently between runs); each channel's messages do not.
        resumed.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        if let Some(i) = (0..whole.len().min(resumed.len())).find(|&i| whole[i] != resumed[i]) {
            panic!(
                "cut after input {cut}: message {i} differs:\n  uninterrupted {:?}\n  restored      {:?}",
                whole[i], resumed[i]
            );
        }
        assert_eq!(whole.len(), resumed.len(), "cut after input {cut}");
    }
}

/// What a WebSocket subscriber received, per channel, until `quiet` passes
/// with nothing new.
async fn collect(ws: &mut Ws, quiet: Duration) -> Vec<(String, u64, Value)> {
    let mut out = Vec::new();
    loop {
        let next = tokio::time::timeout(quiet, ws.recv(Duration::from_secs(3600))).await;
        match next {
            Err(_) => return out,
            Ok(Ok(m)) if m["type"] == "message" => out.push((
                m["channel"].as_str().unwrap().to_owned(),
                m["seq"].as_u64().unwrap(),
                m["data"].clone(),
            )),
            Ok(Ok(_)) => {}
            Ok(Err(c)) => panic!("subscriber closed: {c:?}"),
        }
    }
}

#[tokio::test]
async fn a_recorded_serve_run_replays_to_exactly_what_it_published() {
    let sandbox = Sandbox::new();
    for (built, name) in [
        (BOT_FILTER, "bot-filter"),
        (UA_ENRICHER, "ua-enricher"),
        (FIRST_SEEN, "first-seen"),
    ] {
        sandbox.install(built, name);
    }
    // Short windows and a short idle timeout: over real time, results come
    // from events, from early firings and from idle advances (ticks).
    let config = sandbox.config(
        r#"
[[stages]]
plugin = "bot-filter"
[[stages]]
plugin = "ua-enricher"
[[stages]]
plugin = "first-seen"

[time]
idle_timeout = "1s"
out_of_orderness = "500ms"

[[windows]]
name = "per_second"
kind = "tumbling"
size = "1s"
group_by = ["name"]
aggregates = ["count", "distinct(distinct_id) as users"]
early_every = "300ms"

[[windows]]
name = "browsers"
kind = "tumbling"
size = "2s"
group_by = ["properties.$browser"]
aggregates = ["count", "distinct(properties.$browser_version) as versions"]
allowed_lateness = "5s"
"#,
    );
    let record = sandbox.path().join("run.record");
    let mut server = sandbox.serve_with(&config, &["--record", record.to_str().unwrap()]);
    let mut ws = Ws::connect(&server.ws_url()).await;
    let subscribed = [
        "events",
        "windows/per_second",
        "windows/browsers",
        "late",
        "plugins",
        "dead-letters",
    ];
    for c in subscribed {
        ws.subscribe(c, json!({})).await;
    }
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let post = |lines: Vec<String>| {
        let url = server.url("/v1/batch");
        async move {
            let resp = http()
                .post(url)
                .header("content-type", "application/x-ndjson")
                .body(lines.join("\n"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
        }
    };
    let batch = |round: usize, ts: i64| -> Vec<String> {
        (0..30)
            .map(|i| {
                let ua = [CHROME_WIN, SAFARI_IPHONE, GOOGLEBOT][i % 3];
                json!({"name": if i % 5 == 0 {"signup"} else {"$pageview"},
                       "distinct_id": format!("u{}", (round * 7 + i) % 11),
                       "timestamp": ts - (i as i64 % 4) * 150,
                       "properties": {"$user_agent": ua, "n": i}})
                .to_string()
            })
            .collect()
    };
    for round in 0..6 {
        post(batch(round, now())).await;
        if round == 2 {
            // An event for a window that closed long ago: late.
            post(vec![
                json!({"name": "$pageview", "distinct_id": "old", "timestamp": now() - 60_000,
                              "properties": {"$user_agent": CHROME_WIN}})
                .to_string(),
            ])
            .await;
        }
        if round == 3 {
            // A hot swap while events flow: a plugin input in the record.
            sandbox.rename_over(UA_ENRICHER_V2, "ua-enricher");
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // Idle: ticks alone close the last windows.
    let published = collect(&mut ws, Duration::from_secs(4)).await;
    server.terminate(Duration::from_secs(30));

    let out = sandbox.path().join("replayed.ndjson");
    let replay = eddy(
        &sandbox,
        &[
            "pipe",
            "--config",
            &s(&config),
            "--replay",
            &s(&record),
            "--channels",
            &s(&out),
            "--output",
            "/dev/null",
            "--no-watch",
            "--summary",
            "none",
        ],
    );
    ok(&replay, "eddy pipe --replay");
    let replayed: Vec<(String, u64, Value)> = channels(&out)
        .into_iter()
        .filter(|m| subscribed.contains(&m.0.as_str()))
        .collect();
    let count = |c: &str| published.iter().filter(|m| m.0 == c).count();
    assert!(
        count("events") >= 120,
        "published {} events",
        count("events")
    );
    assert!(count("windows/per_second") > 0 && count("windows/browsers") > 0);
    assert!(count("late") > 0, "the old event was reported late");
    assert!(
        published
            .iter()
            .any(|m| m.0 == "plugins" && m.2["kind"] == "swapped"),
        "the swap was published"
    );
    assert!(
        published
            .iter()
            .any(|m| m.0 == "windows/browsers" && m.2["values"]["versions"].as_u64() > Some(0)),
        "v2 (which sets $browser_version) ran after the swap"
    );
    for (channel, seq, data) in &published {
        let twin = replayed.iter().find(|m| &m.0 == channel && m.1 == *seq);
        assert_eq!(
            twin.map(|m| &m.2),
            Some(data),
            "{channel} seq {seq}: published and replayed differ"
        );
    }
    assert_eq!(
        replayed.len(),
        published.len(),
        "the replay published exactly as many messages"
    );
}

/// A tumbling window counting and summing by key, on no plugins.
fn windows_only(sandbox: &Sandbox) -> String {
    s(&sandbox.config(
        r#"
[[windows]]
name = "w"
kind = "tumbling"
size = "1s"
group_by = ["properties.key"]
aggregates = ["count", "sum(properties.v)"]
"#,
    ))
}

#[test]
fn output_none_writes_no_events_and_the_same_results() {
    let sandbox = Sandbox::new();
    let config = windows_only(&sandbox);
    let input = sandbox.path().join("in.ndjson");
    let text: String = (0..5_000)
        .map(|i| {
            format!(
                "{{\"name\":\"e\",\"distinct_id\":\"u{}\",\"timestamp\":{},\"properties\":{{\"key\":\"k{}\",\"v\":{}}}}}\n",
                i % 70,
                1_700_000_000_000i64 + i * 3,
                i % 40,
                i % 9
            )
        })
        .collect();
    std::fs::write(&input, text).unwrap();
    let run = |output: &str, results: &str| {
        let out = eddy(
            &sandbox,
            &[
                "pipe",
                "--config",
                &config,
                "--input",
                &s(&input),
                "--output",
                output,
                "--results",
                results,
                "--no-watch",
                "--summary",
                "json",
            ],
        );
        ok(&out, &format!("eddy pipe --output {output}"));
        let summary: Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stderr).lines().last().unwrap())
                .unwrap();
        (out.stdout, summary)
    };
    let (stdout, written) = run("events.ndjson", "results-events.ndjson");
    assert!(stdout.is_empty());
    let (stdout, none) = run("none", "results-none.ndjson");
    assert!(stdout.is_empty(), "--output none wrote to stdout");
    assert!(!sandbox.path().join("none").exists(), "a file named none");
    assert_eq!(lines(&sandbox.path().join("events.ndjson")).len(), 5_000);
    assert_eq!(written["events_out"], 5_000);
    assert_eq!(none["events_out"], 0);
    assert_eq!(none["events_in"], 5_000);
    let results = |name: &str| std::fs::read(sandbox.path().join(name)).unwrap();
    assert_eq!(
        results("results-none.ndjson"),
        results("results-events.ndjson"),
        "the same results, byte for byte"
    );
    assert!(lines(&sandbox.path().join("results-none.ndjson")).len() >= 15 * 40);
    // `./none` is a file of that name.
    let (_, named) = run("./none", "results-named.ndjson");
    assert_eq!(named["events_out"], 5_000);
    assert_eq!(lines(&sandbox.path().join("none")).len(), 5_000);
}

#[test]
fn parallel_decoding_gives_what_one_thread_gives() {
    let sandbox = Sandbox::new();
    let config = windows_only(&sandbox);
    // About 2 MB: many of the reader's chunks. Events, lines that are not
    // events (bad JSON, a missing field, a wrong type, bytes that are not
    // UTF-8, a bad `$wall`), blank lines, CRLF line ends, `$wall` lines and
    // events without a timestamp, which take the last `$wall` line's time
    // (and are refused before the first one).
    let mut rng = Rng(0x0dec_0de5);
    let mut input: Vec<u8> = Vec::new();
    let mut bad_lines = Vec::new();
    let t0 = 1_700_000_000_000i64;
    let mut wall = None;
    let (mut blank, mut walls) = (0, 0);
    // The timestamp each event without one must get: `w<n>` → the clock.
    let mut stamped = Vec::new();
    for n in 1..=24_000u64 {
        let ts = t0 + n as i64 * 2 + rng.below(5) as i64;
        let line = match rng.below(100) {
            0 => {
                bad_lines.push(n);
                b"{\"name\":\"e\",\"distinct_id\":".to_vec()
            }
            1 => {
                bad_lines.push(n);
                format!("{{\"name\":\"e\",\"timestamp\":{ts}}}").into_bytes()
            }
            2 => {
                bad_lines.push(n);
                format!("{{\"name\":7,\"distinct_id\":\"u\",\"timestamp\":{ts}}}").into_bytes()
            }
            3 => {
                bad_lines.push(n);
                b"{\"name\":\"\xff\xfe\",\"distinct_id\":\"u\"}".to_vec()
            }
            4 => {
                bad_lines.push(n);
                b"{\"$wall\": \"soon\"}".to_vec()
            }
            5 | 6 => {
                blank += 1;
                b"   ".to_vec()
            }
            7 => {
                walls += 1;
                // The clock never goes back.
                let at = wall.map_or(ts, |w: i64| w.max(ts));
                wall = Some(at);
                format!("{{\"$wall\": {at}}}").into_bytes()
            }
            8 | 9 => {
                match wall {
                    None => bad_lines.push(n),
                    Some(w) => stamped.push((format!("w{n}"), w)),
                }
                format!(
                    "{{\"name\":\"e\",\"distinct_id\":\"w{n}\",\"properties\":{{\"key\":\"k{}\",\"v\":2}}}}",
                    n % 13
                )
                .into_bytes()
            }
            _ => format!(
                "{{\"name\":\"e\",\"distinct_id\":\"u{}\",\"timestamp\":{ts},\"properties\":{{\"key\":\"k{}\",\"v\":{}}}}}",
                rng.below(500),
                rng.below(300),
                rng.below(10)
            )
            .into_bytes(),
        };
        input.extend_from_slice(&line);
        input.extend_from_slice(if n % 3 == 0 { b"\r\n" } else { b"\n" });
    }
    // The last line has no line break.
    input.extend_from_slice(
        format!("{{\"name\":\"last\",\"distinct_id\":\"u\",\"timestamp\":{t0}}}").as_bytes(),
    );
    assert!(input.len() > 1_500_000);
    let path = sandbox.path().join("mixed.ndjson");
    std::fs::write(&path, &input).unwrap();
    let mut runs = Vec::new();
    for threads in ["1", "3"] {
        let file = |what: &str| sandbox.path().join(format!("{what}-{threads}.ndjson"));
        let out = eddy(
            &sandbox,
            &[
                "pipe",
                "--config",
                &config,
                "--input",
                &s(&path),
                "--output",
                &s(&file("events")),
                "--results",
                &s(&file("results")),
                "--errors",
                &s(&file("errors")),
                "--clock",
                "virtual",
                "--decode-threads",
                threads,
                "--no-watch",
                "--summary",
                "json",
            ],
        );
        ok(&out, &format!("eddy pipe --decode-threads {threads}"));
        let errors: Vec<u64> = lines(&file("errors"))
            .iter()
            .map(|e| e["line"].as_u64().unwrap())
            .collect();
        assert_eq!(
            errors, bad_lines,
            "--decode-threads {threads}: every line that is not an event, by number, in order"
        );
        let read = |what: &str| std::fs::read(file(what)).unwrap();
        runs.push((read("events"), read("results"), read("errors")));
    }
    assert!(runs[0] == runs[1], "events, results and errors differ");
    let events = lines(&sandbox.path().join("events-1.ndjson"));
    assert_eq!(events.len(), 24_001 - bad_lines.len() - blank - walls);
    assert!(stamped.len() > 100);
    for (id, wall) in &stamped {
        let e = events
            .iter()
            .find(|e| e["distinct_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no event {id}"));
        assert_eq!(
            e["timestamp"], *wall,
            "{id} takes the last $wall line's time"
        );
    }
}

/// A write that fails on the output thread (a full device) stops the run
/// with the error it met, and a failing exit.
#[test]
fn a_failed_write_stops_pipe_with_its_error() {
    let sb = Sandbox::new();
    let cfg = sb.config("");
    let input: String = (0..20_000)
        .map(|i| {
            format!(
                "{{\"id\":\"e{i}\",\"name\":\"x\",\"distinct_id\":\"u\",\"timestamp\":{}}}\n",
                1_700_000_000_000i64 + i
            )
        })
        .collect();
    let run = sb.pipe_with(
        Some(&cfg),
        input.as_bytes(),
        &["--output", "/dev/full"],
        &[],
    );
    assert!(!run.success, "{}", run.stderr);
    assert!(
        run.stderr.contains("writing output") && run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
}
