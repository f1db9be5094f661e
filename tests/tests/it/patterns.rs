//! Sequence patterns (CEP) through the real binary.
//!
//! Golden cases (`tests/data/patterns/cases.toml`): one per semantic rule,
//! each a pattern, an input written as tokens (`b1` is an event named `b`
//! with id `b1`; `b1@2500` sets its time, in ms after the base; `b1:u2`
//! gives it key `u2` instead of `u`) and the expected matches and timeouts,
//! compared as sets of sets the way FlinkCEP's own tests compare them. Each
//! runs through `eddy pipe --results --clock virtual`.

use std::collections::BTreeMap;
use std::path::Path;

use eddy_tests::Sandbox;
use serde::Deserialize;
use serde_json::{Value, json};

/// Timestamps of a case start here.
const BASE: i64 = 1_700_000_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// Where the expectation comes from (Flink's docs or test, by name).
    source: String,
    /// The `[[patterns]]` body (keys and `steps = [...]`), name `p`.
    pattern: String,
    input: String,
    #[serde(default)]
    matches: Vec<String>,
    /// Compared only when given.
    timeouts: Option<Vec<String>>,
    /// Compared only when given.
    late: Option<Vec<String>>,
    #[serde(default)]
    refused: Option<u64>,
    /// `[time].out_of_orderness` (default "0s").
    out_of_orderness: Option<String>,
    /// Batch size (default 1000).
    batch_size: Option<usize>,
}

/// One input token as an event line.
fn token_event(i: usize, token: &str) -> Value {
    let (rest, at) = match token.split_once('@') {
        Some((r, t)) => (r, t.parse::<i64>().expect("@ms")),
        None => (token, i as i64 * 1000),
    };
    let (id, key) = rest.split_once(':').unwrap_or((rest, "u"));
    let name: String = id.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let num: i64 = id
        .trim_start_matches(|c: char| c.is_ascii_alphabetic())
        .parse()
        .unwrap_or(0);
    json!({"id": id, "name": name, "distinct_id": key, "timestamp": BASE + at,
           "properties": {"n": num, "price": num * 10}})
}

/// A pattern message as `"step:id step:id"` (steps in order, events in
/// order; `key| ` in front when not `u`; ` @end` after a timeout).
fn canonical(data: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(steps) = data["steps"].as_object() {
        for (step, events) in steps {
            for e in events.as_array().unwrap() {
                parts.push(format!("{step}:{}", e["id"].as_str().unwrap()));
            }
        }
    }
    let mut s = parts.join(" ");
    let key = data["key"].as_str().unwrap_or("?");
    if key != "u" {
        s = format!("{key}| {s}");
    }
    if data["kind"] == "timeout" {
        s.push_str(&format!(" @{}", data["end"].as_i64().unwrap() - BASE));
    }
    s
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// What one run of `eddy pipe` produced for pattern `p`.
#[derive(Debug, PartialEq)]
struct Outcome {
    matches: Vec<String>,
    timeouts: Vec<String>,
    late: Vec<String>,
    /// Every results line, in order (for the batch-size comparison).
    lines: Vec<Value>,
}

fn run_pipe(sandbox: &Sandbox, config: &Path, input: &str, batch_size: usize) -> (Outcome, Value) {
    let results = sandbox.path().join("results.ndjson");
    let run = sandbox.pipe(
        config,
        input,
        &[
            "--clock",
            "virtual",
            "--output",
            "/dev/null",
            "--batch-size",
            &batch_size.to_string(),
            "--results",
            results.to_str().unwrap(),
        ],
    );
    assert!(run.success, "eddy pipe failed: {}", run.stderr);
    let lines: Vec<Value> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut out = Outcome {
        matches: Vec::new(),
        timeouts: Vec::new(),
        late: Vec::new(),
        lines: lines.clone(),
    };
    for l in &lines {
        let d = &l["data"];
        match l["channel"].as_str().unwrap() {
            "late" if d.get("pattern").is_some() => {
                out.late.push(d["event"]["id"].as_str().unwrap().to_owned());
            }
            c if c.starts_with("patterns/") => match d["kind"].as_str().unwrap() {
                "match" => out.matches.push(canonical(d)),
                "timeout" => out.timeouts.push(canonical(d)),
                k => panic!("unexpected kind {k}"),
            },
            _ => {}
        }
    }
    out.matches = sorted(out.matches);
    out.timeouts = sorted(out.timeouts);
    out.late = sorted(out.late);
    (out, run.summary)
}

fn case_config(sandbox: &Sandbox, case: &Case) -> std::path::PathBuf {
    sandbox.config(&format!(
        "[time]\nout_of_orderness = {:?}\n\n[[patterns]]\nname = \"p\"\n{}\n",
        case.out_of_orderness.as_deref().unwrap_or("0s"),
        case.pattern
    ))
}

fn case_input(case: &Case) -> String {
    case.input
        .split_whitespace()
        .enumerate()
        .map(|(i, t)| token_event(i, t).to_string() + "\n")
        .collect()
}

fn load_cases() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/patterns/cases.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let cases: Cases = toml::from_str(&text).unwrap();
    cases.case
}

#[test]
fn golden_cases_match_flink_cep_semantics() {
    let cases = load_cases();
    assert!(cases.len() >= 25, "golden cases missing");
    let sandbox = Sandbox::new();
    let mut failures = Vec::new();
    for case in &cases {
        let config = case_config(&sandbox, case);
        let (got, summary) = run_pipe(
            &sandbox,
            &config,
            &case_input(case),
            case.batch_size.unwrap_or(1000),
        );
        let want_m = sorted(case.matches.clone());
        let want_t = case
            .timeouts
            .clone()
            .map_or_else(|| got.timeouts.clone(), sorted);
        let want_l = case.late.clone().map_or_else(|| got.late.clone(), sorted);
        if got.matches != want_m || got.timeouts != want_t || got.late != want_l {
            failures.push(format!(
                "{} ({}):\n  input    {}\n  matches  want {want_m:?}\n           got  {:?}\n  timeouts want {want_t:?}\n           got  {:?}\n  late     want {want_l:?}\n           got  {:?}",
                case.name, case.source, case.input, got.matches, got.timeouts, got.late
            ));
        }
        if let Some(refused) = case.refused {
            let _ = summary;
            let reported = refused_of(&sandbox, &config, case);
            if reported != refused {
                failures.push(format!(
                    "{}: refused want {refused}, got {reported}",
                    case.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The pattern's `refused` counter after the case's input, from the
/// `patterns` section of `eddy pipe`'s JSON summary.
fn refused_of(sandbox: &Sandbox, config: &Path, case: &Case) -> u64 {
    let run = sandbox.pipe(
        config,
        &case_input(case),
        &["--clock", "virtual", "--output", "/dev/null"],
    );
    assert!(run.success, "{}", run.stderr);
    run.summary["patterns"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "p"))
        .and_then(|p| p["refused"].as_u64())
        .unwrap_or_else(|| panic!("no pattern p in the summary: {}", run.summary))
}

/// A random multi-key workload: the results file is byte-for-byte the same
/// at batch sizes 1, 7 and 1000, and each key's matches are the same as when
/// that key's events run alone (keys do not affect each other).
#[test]
fn results_do_not_depend_on_batch_size_and_keys_do_not_affect_each_other() {
    let sandbox = Sandbox::new();
    let config = sandbox.config(
        r#"
[time]
out_of_orderness = "3s"

[[patterns]]
name = "p"
within = "20s"
steps = [
  { name = "a", names = ["a"] },
  { name = "b", after = "relaxed", names = ["b"], one_or_more = true, until = { names = ["x"] } },
  { name = "c", after = "any", names = ["c"] },
]

[[patterns]]
name = "q"
within = "15s"
skip = "skip_past_last_event"
steps = [
  { name = "a", names = ["a"], times = [2, 3], inner = "strict" },
  { name = "not_c", after = "not_relaxed", names = ["c"] },
]
"#,
    );
    let mut rng = XorShift(0x5eed_cafe);
    let mut lines = Vec::new();
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut t = 0i64;
    for i in 0..3000 {
        t += rng.below(700) as i64;
        // Out of order within the bound, sometimes.
        let ts = t - rng.below(2500) as i64;
        let key = format!("k{}", rng.below(12));
        let name = ["a", "b", "c", "x", "y"][rng.below(5) as usize];
        let line = json!({"id": format!("{name}{i}"), "name": name, "distinct_id": key,
                          "timestamp": BASE + ts, "properties": {}})
        .to_string()
            + "\n";
        by_key.entry(key).or_default().push(line.clone());
        lines.push(line);
        if i % 20 == 19 {
            // Virtual wall time keeps up with the events: ticks in between.
            lines.push(format!("{{\"$wall\": {}}}\n", BASE + t));
        }
    }
    let input: String = lines.concat();
    let (one, _) = run_pipe(&sandbox, &config, &input, 1);
    let (seven, _) = run_pipe(&sandbox, &config, &input, 7);
    let (thousand, _) = run_pipe(&sandbox, &config, &input, 1000);
    assert!(
        one.matches.len() > 50,
        "the workload should match: {}",
        one.matches.len()
    );
    assert!(!one.timeouts.is_empty(), "the workload should time out");
    let first_difference = |a: &[Value], b: &[Value]| {
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .map(|i| format!("line {}: {} vs {}", i + 1, a[i], b[i]))
            .unwrap_or_else(|| format!("lengths {} vs {}", a.len(), b.len()))
    };
    assert!(
        one.lines == seven.lines,
        "batch size 1 vs 7: {}",
        first_difference(&one.lines, &seven.lines)
    );
    assert!(
        one.lines == thousand.lines,
        "batch size 1 vs 1000: {}",
        first_difference(&one.lines, &thousand.lines)
    );
    // Per key alone. Events are at most 2.5 s out of order under a 3 s
    // bound, so none is late either way; without `$wall` lines idle
    // advance plays no part.
    let with_key = |o: &Outcome, key: &str| -> Vec<String> {
        o.lines
            .iter()
            .filter(|l| l["channel"] != "late" && l["data"]["key"] == key)
            .map(|l| l.to_string())
            .collect()
    };
    let (mixed, _) = run_pipe(
        &sandbox,
        &config,
        &lines
            .iter()
            .filter(|l| !l.contains("$wall"))
            .cloned()
            .collect::<String>(),
        1000,
    );
    for (key, key_lines) in &by_key {
        let (alone, _) = run_pipe(&sandbox, &config, &key_lines.concat(), 1000);
        let mut a = with_key(&alone, key);
        let mut m = with_key(&mixed, key);
        a.sort();
        m.sort();
        assert_eq!(a, m, "key {key}: alone vs among the others");
    }
}

/// A small fixed-seed generator (xorshift64*), so the workload is the same
/// on every run.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n
    }
}

// ------------------------------------------------------------- end to end

const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One event line for `eddy serve`.
fn line(id: &str, name: &str, user: &str, ts: i64) -> String {
    json!({"id": id, "name": name, "distinct_id": user, "timestamp": ts,
           "properties": {"$pathname": "/product/1"}})
    .to_string()
}

/// A declared pattern and a pattern plugin, fed over HTTP: matches arrive on
/// WebSocket and SSE subscriptions of `patterns/<name>`, and REST agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_events_produce_pattern_messages_on_websocket_and_sse_and_rest_agrees() {
    use eddy_tests::server::{Ws, http, post_ndjson, sse_events};
    let sb = Sandbox::new();
    sb.install(eddy_tests::plugins::LOGIN_BURST, "login-burst");
    let config = sb.config(
        r#"
[time]
out_of_orderness = "0s"

[[patterns]]
name = "funnel"
within = "10m"
skip = "skip_past_last_event"
steps = [
  { name = "view", names = ["$pageview"], where = [{ field = "properties.$pathname", op = "contains", value = "/product/" }] },
  { name = "cart", names = ["add_to_cart"], times = [1, 5] },
  { name = "purchase", names = ["purchase"] },
]
"#,
    );
    let server = sb.serve(&config);
    let client = http();
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.subscribe("patterns/funnel", json!({})).await;
    ws.subscribe("patterns/login-burst", json!({})).await;
    let sse = client
        .get(server.url("/v1/sse?channel=patterns/funnel"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);

    let t = now_ms() - 60_000;
    let events = [
        line("v1", "$pageview", "alice", t),
        line("c1", "add_to_cart", "alice", t + 1_000),
        line("f1", "login_failed", "bob", t + 1_500),
        line("c2", "add_to_cart", "alice", t + 2_000),
        line("f2", "login_failed", "bob", t + 2_500),
        line("f3", "login_failed", "bob", t + 3_000),
        line("p1", "purchase", "alice", t + 3_500),
        line("s1", "login_succeeded", "bob", t + 4_000),
        line("x1", "$autocapture", "carol", t + 5_000),
    ];
    let answer = post_ndjson(&client, &server.url(""), events.join("\n"), WAIT).await;
    assert_eq!(answer["accepted"], 9, "{answer}");

    let funnel = ws.messages(1, WAIT).await.remove(0);
    let burst = ws.messages(1, WAIT).await.remove(0);
    let (funnel, burst) = if funnel["channel"] == "patterns/funnel" {
        (funnel, burst)
    } else {
        (burst, funnel)
    };
    assert_eq!(funnel["channel"], "patterns/funnel");
    let f = &funnel["data"];
    assert_eq!(
        (&f["pattern"], &f["kind"], &f["key"], &f["start"], &f["end"]),
        (
            &json!("funnel"),
            &json!("match"),
            &json!("alice"),
            &json!(t),
            &json!(t + 3_500)
        )
    );
    let ids = |d: &Value, step: &str| -> Vec<String> {
        d["steps"][step]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(f, "view"), ["v1"]);
    assert_eq!(ids(f, "cart"), ["c1", "c2"]);
    assert_eq!(ids(f, "purchase"), ["p1"]);
    assert_eq!(burst["channel"], "patterns/login-burst");
    let b = &burst["data"];
    assert_eq!((&b["kind"], &b["key"]), (&json!("match"), &json!("bob")));
    assert_eq!(ids(b, "failures"), ["f1", "f2", "f3"]);
    assert_eq!(ids(b, "success"), ["s1"]);

    let sse = sse_events(sse, 1, WAIT).await;
    assert_eq!(sse.len(), 1, "{sse:?}");
    assert_eq!(sse[0].2["data"], *f, "SSE carries the same match");
    assert_eq!(
        sse[0].0.as_deref(),
        Some(funnel["seq"].to_string().as_str())
    );

    let list: Value = client
        .get(server.url("/v1/patterns"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let report = |name: &str| -> Value {
        list["patterns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {list}"))
            .clone()
    };
    let fr = report("funnel");
    assert_eq!(
        (&fr["source"], &fr["matches"], &fr["partial_matches"]),
        (&json!("config"), &json!(1), &json!(0))
    );
    assert_eq!(fr["steps"].as_array().unwrap().len(), 3);
    let lr = report("login-burst");
    assert_eq!(
        (&lr["source"], &lr["matches"]),
        (&json!("plugin:login-burst"), &json!(1))
    );
    let recent: Value = client
        .get(server.url("/v1/patterns/funnel/matches?kind=match"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(recent["results"], json!([f]), "REST agrees with the stream");
    let missing = client
        .get(server.url("/v1/patterns/nope/matches"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["code"], "unknown_pattern");
    assert!(
        body["available"]
            .as_array()
            .unwrap()
            .contains(&json!("funnel")),
        "{body}"
    );
    let bad = client
        .get(server.url("/v1/patterns/funnel/matches?kind=maybe"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

/// A pattern plugin replaced halfway through a stream: bursts that span the
/// swap are found exactly once, completed by the new version (its match
/// hook stamps them), and nothing before the swap is matched twice.
#[test]
fn a_pattern_plugin_swapped_mid_stream_finds_spanning_matches_once() {
    use eddy_tests::plugins::{LOGIN_BURST, LOGIN_BURST_STAMPED};
    const USERS: usize = 200;
    let sb = Sandbox::new();
    sb.install(LOGIN_BURST, "login-burst");
    let cfg = sb.config("[time]\nout_of_orderness = \"0s\"\n");
    let results = sb.path().join("results.ndjson");
    let mut pipe = sb.spawn_pipe(
        &cfg,
        &[
            "--batch-size",
            "100",
            "--results",
            results.to_str().unwrap(),
        ],
    );
    pipe.wait_log("watching", WAIT, |v| {
        v["message"] == "watching plugins folder"
    });
    let mut ts = BASE;
    let mut lines = |users: &[String], names: &[&str], tag: &str| -> Vec<String> {
        // Round robin over the users: each user's events stay in order,
        // with everyone else's in between (contiguity is per key).
        let mut out = Vec::new();
        for (k, name) in names.iter().enumerate() {
            for u in users {
                ts += 1;
                out.push(line(&format!("{u}-{tag}{k}"), name, u, ts));
            }
        }
        out
    };
    let group = |g: &str| -> Vec<String> { (0..USERS).map(|i| format!("{g}{i}")).collect() };
    let (a, s, c) = (group("a"), group("s"), group("c"));
    let fail = "login_failed";
    let ok = "login_succeeded";
    // Before the swap: group a completes bursts; group s starts theirs.
    let mut before = lines(&a, &[fail, fail, fail, ok], "x");
    before.extend(lines(&s, &[fail, fail], "x"));
    before.extend(lines(&group("noise"), &["$pageview"; 20], "x"));
    pipe.send(&before);
    pipe.recv_events(before.len(), WAIT);
    sb.rename_over(LOGIN_BURST_STAMPED, "login-burst");
    pipe.wait_log("login-burst swapped", WAIT, |v| {
        eddy_tests::is_log(v, "plugin swapped", "login-burst")
    });
    // After: group s completes theirs; group c makes whole new bursts.
    let mut after = lines(&s, &[fail, ok], "y");
    after.extend(lines(&c, &[fail, fail, fail, fail, ok], "y"));
    pipe.send(&after);
    pipe.recv_events(after.len(), WAIT);
    let (_, summary) = pipe.finish(WAIT);
    let pattern = summary["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "login-burst")
        .unwrap_or_else(|| panic!("no login-burst in {summary}"));
    assert_eq!(pattern["dropped_on_change"], 0, "{pattern}");

    let matches: Vec<Value> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["data"].clone())
        .filter(|d| d["kind"] == "match")
        .collect();
    let mut by_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for m in &matches {
        by_key
            .entry(m["key"].as_str().unwrap().to_owned())
            .or_default()
            .push(m);
    }
    assert_eq!(by_key.len(), 3 * USERS, "one match per user of a, s and c");
    for (key, ms) in &by_key {
        assert_eq!(ms.len(), 1, "{key}: found once, not {}", ms.len());
        let m = ms[0];
        let failures = m["steps"]["failures"].as_array().unwrap().len();
        match &key[..1] {
            "a" => {
                assert_eq!(failures, 3, "{m}");
                assert!(m.get("payload").is_none(), "matched before the swap: {m}");
            }
            "s" => {
                assert_eq!(failures, 3, "{m}");
                let ids: Vec<&str> = m["steps"]["failures"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["id"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    ids,
                    [
                        format!("{key}-x0"),
                        format!("{key}-x1"),
                        format!("{key}-y0")
                    ]
                );
                assert_eq!(
                    m["payload"],
                    json!({"version": 2}),
                    "completed after the swap"
                );
            }
            _ => {
                assert_eq!(failures, 4, "{m}");
                assert_eq!(m["payload"], json!({"version": 2}), "{m}");
            }
        }
    }
}

/// A configuration reload (`POST /v1/admin/reload`, then `SIGHUP`) applies
/// a changed declared pattern between batches: the unchanged pattern keeps
/// its partial matches, the changed one keeps those whose steps still
/// exist, and an invalid file changes nothing and says where it is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_declared_patterns_and_keeps_partial_matches() {
    use eddy_tests::server::{http, post_ndjson};
    let sb = Sandbox::new();
    let pattern = |name: &str, within: &str, last: &str| {
        format!(
            "[[patterns]]\nname = \"{name}\"\nwithin = \"{within}\"\nsteps = [{{ name = \"a\", names = [\"a\"] }}, {{ name = \"b\", names = [\"{last}\"] }}]\n"
        )
    };
    let head = "[time]\nout_of_orderness = \"0s\"\n";
    let config = sb.config(&format!(
        "{head}{}{}",
        pattern("keep", "10m", "b"),
        pattern("change", "10m", "b")
    ));
    let prefix = format!(
        "plugins_dir = {:?}\n",
        sb.plugins_dir().display().to_string()
    );
    let write = |body: &str| std::fs::write(&config, format!("{prefix}{body}")).unwrap();
    let mut server = sb.serve(&config);
    let client = http();
    let t = now_ms() - 60_000;
    let post = |lines: Vec<String>| {
        let client = client.clone();
        let url = server.url("");
        async move { post_ndjson(&client, &url, lines.join("\n"), WAIT).await }
    };
    post(vec![line("a1", "a", "u", t), line("a2", "a", "v", t + 1)]).await;
    let reload = || async {
        client
            .post(server.url("/v1/admin/reload"))
            .send()
            .await
            .unwrap()
    };
    // Unchanged file: nothing changes.
    let r = reload().await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["changes"], json!([]));
    // An invalid file: 400 naming the file and key; the running patterns stay.
    write(&format!("{head}{}", pattern("keep", "soon", "b")));
    let r = reload().await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "invalid_config");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("eddy.toml") && msg.contains("patterns[0].within"),
        "{msg}"
    );
    // `change` now ends with c instead of b (same step names).
    let changed = format!(
        "{head}{}{}",
        pattern("keep", "10m", "b"),
        pattern("change", "5m", "c")
    );
    write(&changed);
    let r = reload().await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["changes"].as_array().unwrap().len(), 1, "{body}");
    assert!(
        body["changes"][0]
            .as_str()
            .unwrap()
            .contains("pattern `change` changed"),
        "{body}"
    );
    // The partial matches started before the reload complete after it.
    post(vec![
        line("b1", "b", "u", t + 2),
        line("c1", "c", "v", t + 3),
    ])
    .await;
    let wait_matches = |name: &'static str, n: u64| {
        let client = client.clone();
        let url = server.url(&format!("/v1/patterns/{name}/matches?kind=match"));
        async move {
            let deadline = std::time::Instant::now() + WAIT;
            loop {
                let v: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
                if v["results"].as_array().unwrap().len() as u64 >= n
                    || std::time::Instant::now() > deadline
                {
                    return v["results"].clone();
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    let keep = wait_matches("keep", 1).await;
    assert_eq!(keep.as_array().unwrap().len(), 1, "{keep}");
    assert_eq!(
        keep[0]["steps"]["a"][0]["id"], "a1",
        "the partial match kept across the reload"
    );
    let change = wait_matches("change", 1).await;
    assert_eq!(change.as_array().unwrap().len(), 1, "{change}");
    assert_eq!(change[0]["steps"]["a"][0]["id"], "a2");
    assert_eq!(
        change[0]["steps"]["b"][0]["id"], "c1",
        "the new condition applies"
    );
    // SIGHUP reloads too: a third pattern appears with its channel.
    write(&format!("{changed}{}", pattern("third", "1m", "b")));
    let pid = server.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let list: Value = client
            .get(server.url("/v1/patterns"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if list["patterns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "third")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not add `third`: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let channels: Value = client
        .get(server.url("/v1/channels"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        channels.to_string().contains("patterns/third"),
        "{channels}"
    );
    let _ = server.terminate(WAIT);
}

/// A `[[patterns]] plugin = ...` entry sets a pattern plugin's caps: the
/// same failed logins that start a partial match each are all taken with
/// the default caps and refused past one per key with
/// `max_partials_per_key = 1` — and the match still comes out.
#[test]
fn a_plugin_entry_sets_a_pattern_plugins_caps() {
    let sb = Sandbox::new();
    sb.install(eddy_tests::plugins::LOGIN_BURST, "login-burst");
    let input: Vec<String> = (0..6)
        .map(|i| line(&format!("f{i}"), "login_failed", "bob", 1_000 + i * 100))
        .chain([line("s", "login_succeeded", "bob", 2_000)])
        .collect();
    let input = input.join("\n");
    let run = |extra: &str| {
        let config = sb.config(&format!("[time]\nout_of_orderness = \"0s\"\n{extra}"));
        let results = sb.path().join("caps-results.ndjson");
        let results_arg = results.to_str().unwrap().to_owned();
        let run = sb.pipe(
            &config,
            &input,
            &[
                "--clock",
                "virtual",
                "--output",
                "/dev/null",
                "--results",
                &results_arg,
            ],
        );
        assert!(run.success, "{}", run.stderr);
        let pattern = run.summary["patterns"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "login-burst"))
            .cloned()
            .unwrap_or_else(|| panic!("no login-burst in {}", run.summary));
        let matches = std::fs::read_to_string(&results)
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"kind\":\"match\""))
            .count();
        (pattern["refused"].as_u64().unwrap(), matches)
    };
    let (refused, matches) = run("");
    assert_eq!((refused, matches), (0, 1), "default caps");
    let (refused, matches) =
        run("[[patterns]]\nplugin = \"login-burst\"\nmax_partials_per_key = 1\n");
    assert_eq!(
        matches, 1,
        "the first failure's partial match still completes"
    );
    assert_eq!(refused, 5, "every later start refused at one per key");
}

/// A reload that changes a pattern plugin's `[[patterns]] plugin = ...`
/// caps applies them between batches and keeps its partial matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_a_pattern_plugins_new_caps_and_keeps_its_partial_matches() {
    use eddy_tests::server::{http, post_ndjson};
    let sb = Sandbox::new();
    sb.install(eddy_tests::plugins::LOGIN_BURST, "login-burst");
    let head = "[time]\nout_of_orderness = \"0s\"\n";
    let config = sb.config(head);
    let server = sb.serve(&config);
    let client = http();
    let t = now_ms() - 30_000;
    let fail = |i: i64| line(&format!("f{i}"), "login_failed", "bob", t + i * 100);
    post_ndjson(
        &client,
        &server.url(""),
        [fail(0), fail(1)].join("\n"),
        WAIT,
    )
    .await;
    std::fs::write(
        &config,
        format!(
            "plugins_dir = {:?}\n{head}[[patterns]]\nplugin = \"login-burst\"\nmax_partials_per_key = 1\n",
            sb.plugins_dir().display().to_string()
        ),
    )
    .unwrap();
    let r = client
        .post(server.url("/v1/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["changes"]
            .to_string()
            .contains("pattern plugin `login-burst` runs with its new limits"),
        "{body}"
    );
    let later: Vec<String> = (2..5)
        .map(fail)
        .chain([line("s", "login_succeeded", "bob", t + 1_000)])
        .collect();
    post_ndjson(&client, &server.url(""), later.join("\n"), WAIT).await;
    let deadline = std::time::Instant::now() + WAIT;
    let (matches, pattern) = loop {
        let m: Value = client
            .get(server.url("/v1/patterns/login-burst/matches?kind=match"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let list: Value = client
            .get(server.url("/v1/patterns"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let p = list["patterns"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "login-burst"))
            .cloned()
            .unwrap_or(Value::Null);
        if !m["results"].as_array().unwrap().is_empty() || std::time::Instant::now() > deadline {
            break (m["results"].clone(), p);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(matches.as_array().unwrap().len(), 1, "{matches}");
    assert_eq!(
        matches[0]["steps"]["failures"][0]["id"], "f0",
        "the partial match from before the reload completes"
    );
    assert!(
        pattern.to_string().contains("\"refused\":3"),
        "the three later starts are refused at one per key: {pattern}"
    );
}
