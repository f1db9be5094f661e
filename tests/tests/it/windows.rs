//! Windows end to end: events posted over HTTP to the real binary produce
//! the expected `windows/<name>` results (final, correction) and `late`
//! messages on WebSocket subscriptions, and the REST views agree with them.

use std::time::Duration;

use eddy_tests::Sandbox;
use eddy_tests::server::{Ws, get_text, http};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const SIZE: i64 = 10_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn pageview(user: &str, ts: i64, path: &str, ms: i64) -> Value {
    json!({
        "name": "$pageview",
        "distinct_id": user,
        "timestamp": ts,
        "properties": {"$current_url": format!("https://shop.example{path}"), "path": path, "ms": ms},
    })
}

/// The data of each message, as (kind, start offset, group path, count,
/// sum, revision).
fn summary(msgs: &[Value], t0: i64) -> Vec<(String, i64, String, i64, i64, i64)> {
    msgs.iter()
        .map(|m| {
            let d = &m["data"];
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["start"].as_i64().unwrap() - t0,
                d["group"]["properties.path"].as_str().unwrap().to_owned(),
                d["values"]["count"].as_i64().unwrap(),
                d["values"]["sum(properties.ms)"].as_i64().unwrap(),
                d["revision"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test]
async fn posted_events_produce_window_results_corrections_and_late_messages_that_rest_agrees_with()
{
    let sandbox = Sandbox::new();
    let config = sandbox.config(
        r#"
[[windows]]
name = "per_page"
kind = "tumbling"
size = "10s"
group_by = ["properties.path"]
aggregates = ["count", "sum(properties.ms)"]
out_of_orderness = "0s"
allowed_lateness = "20s"
idle_timeout = "1h"
"#,
    );
    let server = sandbox.serve(&config);
    let mut results = Ws::connect(&server.ws_url()).await;
    results.subscribe("windows/per_page", json!({})).await;
    let mut late = Ws::connect(&server.ws_url()).await;
    late.subscribe("late", json!({})).await;

    // A window boundary a minute ago: recent enough for ingest's bounds.
    let t0 = (now_ms() / SIZE - 6) * SIZE;
    let batch = json!([
        pageview("u1", t0 + 1_000, "/a", 5),
        pageview("u2", t0 + 2_000, "/b", 7),
        pageview("u1", t0 + 3_000, "/a", 11),
        pageview("u3", t0 + 15_000, "/a", 1), // watermark t0+15s: [t0, t0+10s) fires
        pageview("u2", t0 + 4_000, "/b", 100), // late, within lateness: correction
        pageview("u4", t0 + 50_000, "/c", 2), // watermark t0+50s: [t0+10s, t0+20s) fires
        pageview("u5", t0 + 5_000, "/b", 1_000), // beyond lateness: `late`
    ]);
    let resp = http()
        .post(server.url("/v1/events"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    let msgs = results.messages(4, WAIT).await;
    assert_eq!(
        summary(&msgs, t0),
        vec![
            ("final".into(), 0, "/a".into(), 2, 16, 0),
            ("final".into(), 0, "/b".into(), 1, 7, 0),
            ("correction".into(), 0, "/b".into(), 2, 107, 1),
            ("final".into(), SIZE, "/a".into(), 1, 1, 0),
        ]
    );
    for m in &msgs {
        assert_eq!(m["channel"], "windows/per_page");
        assert_eq!(m["data"]["window"], "per_page");
        assert_eq!(
            m["data"]["end"].as_i64().unwrap() - m["data"]["start"].as_i64().unwrap(),
            SIZE
        );
    }
    let seqs: Vec<u64> = msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let too_late = late.messages(1, WAIT).await;
    let d = &too_late[0]["data"];
    assert_eq!(d["window"], "per_page");
    assert_eq!(d["reason"], "late");
    assert_eq!(d["event"]["timestamp"], t0 + 5_000);
    assert_eq!(d["event"]["properties"]["ms"], 1_000);
    assert_eq!(d["watermark"], t0 + 50_000);

    // History: the latest revision of each closed window, as on the socket.
    let get = |path: String| {
        let url = server.url(&path);
        async move {
            let resp = http().get(url).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, history) = get("/v1/windows/per_page/history".into()).await;
    assert_eq!(status, 200, "{history}");
    let latest: Vec<Value> = [&msgs[0], &msgs[2], &msgs[3]]
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(history["results"], json!(latest));
    let (_, only_b) = get(format!(
        "/v1/windows/per_page/history?group.properties.path=/b&from={t0}&to={}",
        t0 + SIZE
    ))
    .await;
    assert_eq!(only_b["results"], json!([msgs[2]["data"]]));

    // The open window holds the last on-time event.
    let (status, open) = get("/v1/windows/per_page".into()).await;
    assert_eq!(status, 200);
    assert_eq!(open["watermark"], t0 + 50_000);
    assert_eq!(
        open["groups"],
        json!([{"start": t0 + 50_000, "end": t0 + 60_000, "group": {"properties.path": "/c"},
                "values": {"count": 1, "sum(properties.ms)": 2}}])
    );

    let (_, list) = get("/v1/windows".into()).await;
    let w = &list["windows"][0];
    assert_eq!(w["name"], "per_page");
    assert_eq!(w["channel"], "windows/per_page");
    assert_eq!(w["stats"]["events"], 7);
    assert_eq!(w["stats"]["late_events"], 1);
    assert_eq!(w["stats"]["final_results"], 3);
    assert_eq!(w["stats"]["corrections"], 1);

    // Live views: everyone within five minutes; /a is the top page.
    let (_, users) = get("/v1/live/users?limit=2".into()).await;
    assert_eq!(users["count"], 5);
    assert_eq!(users["users"].as_array().unwrap().len(), 2);
    assert_eq!(users["users"][0]["distinct_id"], "u4");
    assert_eq!(users["users"][0]["current_url"], "https://shop.example/c");
    let (_, pages) = get("/v1/live/pages".into()).await;
    assert_eq!(
        pages["pages"][0],
        json!({"url": "https://shop.example/a", "views": 3})
    );

    // Mistakes get clear errors.
    let (status, body) = get("/v1/windows/nope".into()).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "unknown_window");
    assert_eq!(body["available"], json!(["per_page"]));
    let (status, body) = get("/v1/windows/per_page/history?from=yesterday".into()).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "bad_time");
    assert!(body["error"].as_str().unwrap().contains("`from`"), "{body}");
    let (status, body) = get("/v1/live/users?limit=0".into()).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "bad_limit");

    // Metrics carry the window gauges and counters (set once a second).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = get_text(server.url("/metrics")).await;
        if text.contains(r#"eddy_window_late_events_total{window="per_page"} 1"#) {
            assert!(
                text.contains(r#"eddy_window_open{window="per_page"}"#),
                "{text}"
            );
            assert!(text.contains("eddy_live_users 5"), "{text}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no window metrics: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn an_idle_stream_closes_its_window_and_a_bad_window_config_is_refused() {
    let sandbox = Sandbox::new();
    let config = sandbox.config(
        r#"
[[windows]]
name = "quiet"
kind = "tumbling"
size = "1s"
aggregates = ["count", "p95(properties.ms)", "distinct(distinct_id)"]
out_of_orderness = "0s"
idle_timeout = "500ms"
"#,
    );
    let server = sandbox.serve(&config);
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.subscribe("windows/quiet", json!({})).await;
    let t = now_ms();
    let resp = http()
        .post(server.url("/v1/events"))
        .json(&json!([
            pageview("u1", t, "/a", 10),
            pageview("u2", t, "/a", 20)
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // Nothing else arrives: wall time alone closes the window.
    let msg = ws.messages(1, Duration::from_secs(10)).await;
    let d = &msg[0]["data"];
    assert_eq!(d["kind"], "final");
    assert_eq!(d["values"]["count"], 2);
    assert_eq!(d["values"]["distinct(distinct_id)"], 2);
    let p95 = d["values"]["p95(properties.ms)"].as_f64().unwrap();
    // DDSketch's quantile is the value at rank floor(q * (n - 1)): of two
    // values, p95 is the lower one, within 1 %.
    assert!((p95 - 10.0).abs() <= 0.1, "{p95}");
    drop(server);

    let bad = sandbox.config(
        "[[windows]]\nname = \"w\"\nkind = \"sliding\"\nsize = \"10m\"\nslide = \"3m\"\naggregates = [\"count\"]\n",
    );
    let out = std::process::Command::new(eddy_tests::eddy_bin())
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("windows[0].slide"), "{stderr}");
    assert!(stderr.contains("must divide size evenly"), "{stderr}");
}

/// Golden cases: `tests/data/windows/<case>/{config.toml, input.ndjson,
/// expected.ndjson}` through the real `eddy pipe --windows --clock virtual`;
/// every output line must equal the expected one.
#[test]
fn golden_cases_produce_exactly_the_expected_results() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/windows");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 9,
        "golden cases missing in {}",
        root.display()
    );
    let sandbox = Sandbox::new();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let out = sandbox.path().join(format!("{name}.ndjson"));
        let run = std::process::Command::new(eddy_tests::eddy_bin())
            .args([
                "pipe",
                "--clock",
                "virtual",
                "--no-watch",
                "--summary",
                "none",
            ])
            .arg("--config")
            .arg(case.join("config.toml"))
            .arg("--input")
            .arg(case.join("input.ndjson"))
            .arg("--output")
            .arg(sandbox.path().join("events.ndjson"))
            .arg("--windows")
            .arg(&out)
            .arg("--plugins-dir")
            .arg(sandbox.plugins_dir())
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{name}: eddy pipe failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let parse = |text: String| -> Vec<Value> {
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let actual = parse(std::fs::read_to_string(&out).unwrap());
        let expected = parse(std::fs::read_to_string(case.join("expected.ndjson")).unwrap());
        if actual != expected {
            let mut diff = format!("{name}:\n");
            for i in 0..actual.len().max(expected.len()) {
                let (a, e) = (actual.get(i), expected.get(i));
                if a != e {
                    diff.push_str(&format!(
                        "  line {}:\n    expected {}\n    actual   {}\n",
                        i + 1,
                        e.map_or("(none)".into(), Value::to_string),
                        a.map_or("(none)".into(), Value::to_string)
                    ));
                }
            }
            failures.push(diff);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `plugin test --pipeline` and `plugin diff --pipeline` include the
/// pipeline's windows: the replay's results equal what `eddy pipe
/// --windows` computes for the same pipeline, and a new plugin version
/// that changes what a window sees shows as window results that moved.
#[test]
fn plugin_test_and_diff_with_a_pipeline_cover_its_windows() {
    use eddy_tests::plugins::{UA_ENRICHER, UA_ENRICHER_V2};
    let sandbox = Sandbox::new();
    sandbox.install(UA_ENRICHER, "ua-enricher");
    let config = sandbox.config(
        r#"
[[stages]]
plugin = "ua-enricher"

[[windows]]
name = "browsers"
kind = "tumbling"
size = "1h"
group_by = ["properties.$browser"]
aggregates = ["count", "distinct(properties.$browser_version) as versions"]
"#,
    );
    let events = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample-events.ndjson");
    let eddy = |args: &[&str]| {
        std::process::Command::new(eddy_tests::eddy_bin())
            .args(args)
            .current_dir(sandbox.path())
            .output()
            .unwrap()
    };
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (config, events) = (s(&config), s(&events));
    let expected = s(&sandbox.path().join("expected-windows.ndjson"));
    let pipe = eddy(&[
        "pipe",
        "--config",
        &config,
        "--input",
        &events,
        "--output",
        "/dev/null",
        "--windows",
        &expected,
        "--clock",
        "virtual",
        "--no-watch",
        "--summary",
        "none",
    ]);
    assert!(
        pipe.status.success(),
        "{}",
        String::from_utf8_lossy(&pipe.stderr)
    );
    let written = std::fs::read_to_string(&expected).unwrap();
    assert!(written.lines().count() >= 3, "{written}");
    assert!(
        written.contains(r#""properties.$browser":"Chrome""#),
        "{written}"
    );

    let test = eddy(&[
        "plugin",
        "test",
        "--pipeline",
        &config,
        "--events",
        &events,
        "--expect-windows",
        &expected,
    ]);
    let out = String::from_utf8_lossy(&test.stdout);
    assert_eq!(
        test.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(out.contains("ok: window and pattern results"), "{out}");

    // A wrong expectation fails, naming the result that moved.
    let wrong = s(&sandbox.path().join("wrong.ndjson"));
    std::fs::write(
        &wrong,
        written.replacen(r#""count":"#, r#""count":1000"#, 1),
    )
    .unwrap();
    let test = eddy(&[
        "plugin",
        "test",
        "--pipeline",
        &config,
        "--events",
        &events,
        "--expect-windows",
        &wrong,
    ]);
    let out = String::from_utf8_lossy(&test.stdout);
    assert_eq!(test.status.code(), Some(1), "{out}");
    assert!(
        out.contains("FAILED: the window and pattern results differ"),
        "{out}"
    );

    // v2 also sets $browser_version: the windows' distinct versions move.
    let diff = eddy(&[
        "plugin",
        "diff",
        UA_ENRICHER,
        UA_ENRICHER_V2,
        "--pipeline",
        &config,
        "--events",
        &events,
        "--json",
    ]);
    assert_eq!(
        diff.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    let report: Value = serde_json::from_slice(&diff.stdout).unwrap();
    let changed = report["windows"]["changed"].as_array().unwrap();
    assert!(!changed.is_empty(), "{report}");
    let chrome = changed
        .iter()
        .find(|c| c["id"].as_str().unwrap().contains("Chrome"))
        .unwrap_or_else(|| panic!("{report}"));
    let versions = &chrome["fields"][0];
    assert_eq!(versions["field"], "values");
    assert_eq!(versions["before"]["versions"], 0);
    assert!(
        versions["after"]["versions"].as_u64().unwrap() >= 1,
        "{report}"
    );
}
