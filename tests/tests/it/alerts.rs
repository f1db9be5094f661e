//! Alert rules through the real binary.
//!
//! Lifecycle golden tests run `eddy pipe --clock virtual --results` over
//! crafted NDJSON: a window of error ratios per service, one minute per
//! window, and a rule over it; the `alerts` lines of the results file are
//! compared with the transitions Prometheus's rule semantics give. The end
//! to end tests run `eddy serve`: HTTP ingest → window → alert, seen on the
//! `alerts` WebSocket channel, in `GET /v1/alerts`, on `/metrics`, at a real
//! Alertmanager's receiver, and at webhooks (one that fails twice, one that
//! is down).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eddy_tests::Sandbox;
use eddy_tests::server::{Ws, http};
use serde_json::{Value, json};

use crate::alertmanager::{next_with_status, receiver, start_alertmanager, wait_ready};

/// A minute boundary: window `m` is `[T0 + m min, T0 + (m+1) min)`.
const T0: i64 = 28_333_333 * 60_000;
const MIN: i64 = 60_000;

/// One window of error ratios per service; events are matched in order
/// (no out-of-orderness), so a window fires when the next one starts.
const WINDOW: &str = r#"
[wal]
enabled = false

[[windows]]
name = "errors"
kind = "tumbling"
size = "1m"
out_of_orderness = "0s"
group_by = ["properties.service"]
aggregates = ["count", "ratio(name:equals:error) as error_ratio"]
"#;

/// An event of `service` in minute `minute` (`error` or `ok`).
fn event(minute: i64, second: i64, service: &str, error: bool) -> String {
    json!({
        "name": if error { "error" } else { "ok" },
        "distinct_id": "u",
        "timestamp": T0 + minute * MIN + second * 1000,
        "properties": {"service": service},
    })
    .to_string()
}

/// Input where each `(service, minutes)` pair reports an error in each
/// listed minute and an ok otherwise, for minutes `0..minutes`; services
/// that are `None` in a minute do not report.
/// When a service reports in minute `m`: `Some(error)`, or `None`.
type Reports<'a> = &'a dyn Fn(i64) -> Option<bool>;

/// A transition as the tests compare them: `(state, service, at - T0)`.
type Transition = (String, String, i64);

fn input(minutes: i64, plan: &[(&str, Reports<'_>)]) -> String {
    let mut lines = Vec::new();
    for m in 0..minutes {
        for (i, (service, f)) in plan.iter().enumerate() {
            if let Some(error) = f(m) {
                lines.push(event(m, 1 + i as i64, service, error));
            }
        }
    }
    lines.join("\n") + "\n"
}

/// `(state, service label or key, at - T0)` of every alert transition.
fn transitions(results: &str) -> Vec<Transition> {
    results
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["channel"] == "alerts")
        .map(|v| {
            let d = &v["data"];
            let label = d["labels"]["service"]
                .as_str()
                .or(d["labels"]["key"].as_str())
                .unwrap_or("")
                .to_owned();
            (
                d["state"].as_str().unwrap().to_owned(),
                label,
                d["at"].as_i64().unwrap() - T0,
            )
        })
        .collect()
}

fn t(state: &str, service: &str, at: i64) -> Transition {
    (state.to_owned(), service.to_owned(), at)
}

/// Run `eddy pipe --clock virtual` with `rule` over `input`; the results
/// file's text and the summary.
fn run(sb: &Sandbox, rule: &str, input: &str) -> (String, Value) {
    let config = sb.config(&format!("{WINDOW}\n{rule}"));
    run_config(sb, &config, input)
}

fn run_config(sb: &Sandbox, config: &Path, input: &str) -> (String, Value) {
    let results = sb.path().join("results.ndjson");
    let r = sb.pipe(
        config,
        input,
        &["--clock", "virtual", "--results", results.to_str().unwrap()],
    );
    assert!(r.success, "{}", r.stderr);
    (std::fs::read_to_string(&results).unwrap(), r.summary)
}

fn rule(extra: &str) -> String {
    format!(
        "[[alerts]]\nname = \"HighErrorRate\"\nwindow = \"errors\"\nvalue = \"error_ratio\"\n\
         op = \">\"\nthreshold = 0.5\nseverity = \"critical\"\n\
         annotations = {{ summary = \"{{{{ $value }}}} errors on {{{{ $labels.service }}}}\" }}\n{extra}\n"
    )
}

#[test]
fn for_holds_before_firing_and_a_blip_shorter_than_for_never_fires() {
    let sb = Sandbox::new();
    let data = input(5, &[("a", &|_| Some(true)), ("b", &|m| Some(m == 0))]);
    let (results, _) = run(&sb, &rule("for = \"2m\""), &data);
    // Each window is evaluated at its end: a holds at 1, 2, 3 min and fires
    // once 2 minutes have passed since it became pending; b's one-minute
    // blip is pending and then dropped without a word.
    assert_eq!(
        transitions(&results),
        [
            t("pending", "a", MIN),
            t("pending", "b", MIN),
            t("firing", "a", 3 * MIN)
        ]
    );
    let firing: Value = results
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["data"]["state"] == "firing")
        .unwrap();
    let d = &firing["data"];
    assert_eq!(
        d["labels"],
        json!({"alertname": "HighErrorRate", "service": "a", "severity": "critical"})
    );
    assert_eq!(d["annotations"]["summary"], "1 errors on a");
    assert_eq!(d["fingerprint"].as_str().unwrap().len(), 16);
    assert_eq!(d["endsAt"], Value::Null);
    // The same input gives the same bytes.
    let (again, _) = run(&sb, &rule("for = \"2m\""), &data);
    assert_eq!(results, again);
}

#[test]
fn keep_firing_for_holds_an_alert_through_a_brief_recovery() {
    let sb = Sandbox::new();
    let errors = [true, true, false, true, false, false, false, false];
    let data = input(8, &[("a", &|m| Some(errors[m as usize]))]);
    let (results, _) = run(&sb, &rule("keep_firing_for = \"2m\""), &data);
    // Clear at 3 min (minute 2), active again at 4: no resolve. Clear from
    // 5 min on: resolved 2 minutes later.
    assert_eq!(
        transitions(&results),
        [t("firing", "a", MIN), t("resolved", "a", 7 * MIN)]
    );
    // Without keep_firing_for the brief recovery resolves and re-fires.
    let (results, _) = run(&sb, &rule(""), &data);
    assert_eq!(
        transitions(&results),
        [
            t("firing", "a", MIN),
            t("resolved", "a", 3 * MIN),
            t("firing", "a", 4 * MIN),
            t("resolved", "a", 5 * MIN)
        ]
    );
}

#[test]
fn one_instance_per_label_set_however_many_results() {
    let sb = Sandbox::new();
    // Early results every 10 s of (virtual) wall time: the window publishes
    // group a several times before its final result.
    let config = sb.config(&format!(
        "{}\nearly_every = \"10s\"\n{}",
        WINDOW.trim_end(),
        rule("")
    ));
    let mut lines = Vec::new();
    for s in 0..5 {
        lines.push(json!({"$wall": T0 + s * 10_000 + 5_000}).to_string());
        lines.push(event(0, s * 10, "a", true));
    }
    lines.push(json!({"$wall": T0 + MIN + 5_000}).to_string());
    lines.push(event(1, 1, "b", false));
    let (results, _) = run_config(&sb, &config, &(lines.join("\n") + "\n"));
    let window_results = results
        .lines()
        .filter(|l| l.contains("\"windows/errors\"") && l.contains("\"properties.service\":\"a\""))
        .count();
    assert!(
        window_results >= 3,
        "expected early results too:\n{results}"
    );
    assert_eq!(transitions(&results), [t("firing", "a", MIN)]);
}

#[test]
fn an_alert_resolves_when_its_condition_clears() {
    let sb = Sandbox::new();
    let data = input(3, &[("a", &|m| Some(m == 0))]);
    let (results, summary) = run(&sb, &rule(""), &data);
    assert_eq!(
        transitions(&results),
        [t("firing", "a", MIN), t("resolved", "a", 2 * MIN)]
    );
    let resolved: Value = results
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["data"]["state"] == "resolved")
        .unwrap();
    assert_eq!(resolved["data"]["startsAt"], "2023-11-14T22:14:00.000Z");
    assert_eq!(resolved["data"]["endsAt"], "2023-11-14T22:15:00.000Z");
    assert_eq!(summary["alert_transitions"], 2);
}

#[test]
fn each_no_data_mode() {
    let sb = Sandbox::new();
    // a errs in minute 0 and then stops reporting; b keeps reporting (and
    // so keeps the rule evaluated). No data applies after two windows.
    let data = input(
        5,
        &[
            ("a", &|m| (m == 0).then_some(true)),
            ("b", &|_| Some(false)),
        ],
    );
    let cases: [(&str, &str, Vec<Transition>); 5] = [
        // Cleared: the firing alert resolves.
        (
            "no_data = \"ok\"",
            "",
            vec![t("firing", "a", MIN), t("resolved", "a", 3 * MIN)],
        ),
        // Kept as it was.
        ("no_data = \"keep_last\"", "", vec![t("firing", "a", MIN)]),
        // Held as active: a pending alert goes on to fire.
        (
            "no_data = \"alerting\"",
            "for = \"2m\"",
            vec![t("pending", "a", MIN), t("firing", "a", 3 * MIN)],
        ),
        // The same without data stays pending under keep_last.
        (
            "no_data = \"keep_last\"",
            "for = \"2m\"",
            vec![t("pending", "a", MIN)],
        ),
        // A separate alertstate="nodata" alert; the firing one resolves.
        (
            "no_data = \"nodata\"",
            "",
            vec![
                t("firing", "a", MIN),
                t("resolved", "a", 3 * MIN),
                t("nodata", "a", 3 * MIN),
            ],
        ),
    ];
    for (mode, extra, expected) in cases {
        let (results, _) = run(&sb, &rule(&format!("{mode}\n{extra}")), &data);
        assert_eq!(
            transitions(&results),
            expected,
            "{mode} {extra}:\n{results}"
        );
        if mode.contains("\"nodata\"") {
            let last: Value = results
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .rfind(|v| v["channel"] == "alerts")
                .unwrap();
            assert_eq!(last["data"]["labels"]["alertstate"], "nodata");
        }
    }
}

#[test]
fn the_instance_cap_refuses_and_counts_new_label_sets() {
    let sb = Sandbox::new();
    let data = input(
        2,
        &[
            ("a", &|_| Some(true)),
            ("b", &|_| Some(true)),
            ("c", &|_| Some(true)),
        ],
    );
    let (results, summary) = run(&sb, &rule("max_instances = 2"), &data);
    let fired = transitions(&results);
    assert_eq!(fired.len(), 2, "{results}");
    assert!(fired.iter().all(|(s, _, at)| s == "firing" && *at == MIN));
    let report = &summary["alerts"][0];
    assert_eq!(report["name"], "HighErrorRate");
    assert_eq!(report["instances"], 2);
    // Refused at the first evaluation and again at the second.
    assert_eq!(report["refused"], 2, "{summary}");
}

#[test]
fn a_pattern_rule_fires_per_match_key_and_resolves_without_matches() {
    let sb = Sandbox::new();
    let config = sb.config(
        r#"
[[patterns]]
name = "burst"
out_of_orderness = "0s"
[[patterns.steps]]
name = "fail"
names = ["login_failed"]
times = 2
[[patterns.steps]]
name = "ok"
names = ["login_succeeded"]

[[alerts]]
name = "LoginBurst"
pattern = "burst"
no_data_after = "2m"
annotations = { summary = "burst for {{ $labels.key }}" }
"#,
    );
    let ev = |name: &str, user: &str, at: i64| {
        json!({"name": name, "distinct_id": user, "timestamp": T0 + at}).to_string()
    };
    let lines = [
        ev("login_failed", "mallory", 1_000),
        ev("login_failed", "mallory", 2_000),
        ev("login_succeeded", "mallory", 3_000),
        ev("login_failed", "alice", 4_000),
        ev("login_succeeded", "alice", 5_000),
        ev("page", "bob", 10 * MIN),
    ];
    let (results, _) = run_config(&sb, &config, &(lines.join("\n") + "\n"));
    // Fires at the match; no match for 2 minutes: resolved at the next
    // evaluation (once a minute without matches, at the watermark).
    assert_eq!(
        transitions(&results),
        [
            t("firing", "mallory", 3_000),
            t("resolved", "mallory", 10 * MIN)
        ]
    );
}

// ---------------------------------------------------------------------------
// eddy serve
// ---------------------------------------------------------------------------

/// A window that closes a second after the stream goes quiet, and a rule
/// firing when a service has 3 or more errors in it.
fn serve_config(notify: &str) -> String {
    format!(
        r#"
[wal]
enabled = false

[[windows]]
name = "errors"
kind = "tumbling"
size = "1s"
out_of_orderness = "0s"
idle_timeout = "1s"
filter = {{ names = ["error"] }}
group_by = ["properties.service"]
aggregates = ["count"]

[[alerts]]
name = "ErrorBurst"
window = "errors"
value = "count"
op = ">="
threshold = 3
severity = "page"
labels = {{ team = "checkout" }}
annotations = {{ summary = "{{{{ $value }}}} errors on {{{{ $labels.service }}}}" }}
no_data_after = "1h"
{notify}
"#
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn post_errors(base: &str, service: &str, n: usize) {
    let now = now_ms();
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"name": "error", "distinct_id": "u", "timestamp": now + i as i64, "properties": {"service": service}}))
        .collect();
    let r = http()
        .post(format!("{base}/v1/events"))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

async fn metrics(base: &str) -> String {
    http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The next message on `ws` whose data is in state `state`.
async fn next_alert(ws: &mut Ws, state: &str) -> Value {
    for _ in 0..20 {
        let m = ws.messages(1, Duration::from_secs(15)).await.remove(0);
        if m["data"]["state"] == state {
            return m;
        }
    }
    panic!("no {state} alert on the alerts channel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_from_ingest_to_the_channel_rest_metrics_and_alertmanager() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let (hook, mut rx) = receiver().await;
        let (mut am, am_url) = start_alertmanager(dir.path(), &hook);
        wait_ready(&mut am, &am_url).await;

        let sb = Sandbox::new();
        let config = sb.config(&serve_config(&format!(
            "[[notify.alertmanager]]\nurl = \"{am_url}\"\nresend_delay = \"2s\"\nevaluation_interval = \"1s\"\n"
        )));
        let server = sb.serve(&config);
        let base = format!("http://{}", server.addr);
        let mut ws = Ws::connect(&server.ws_url()).await;
        ws.subscribe("alerts", json!({})).await;

        post_errors(&base, "checkout", 3).await;
        let firing = next_alert(&mut ws, "firing").await;
        let labels = &firing["data"]["labels"];
        assert_eq!(labels["service"], "checkout");
        assert_eq!(labels["team"], "checkout");
        assert_eq!(firing["data"]["annotations"]["summary"], "3 errors on checkout");

        let now: Value = http()
            .get(format!("{base}/v1/alerts"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let alerts = now["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1, "{now}");
        assert_eq!(alerts[0]["state"], "firing");
        assert_eq!(alerts[0]["fingerprint"], firing["data"]["fingerprint"]);

        let text = metrics(&base).await;
        assert!(
            text.lines().any(|l| l.starts_with("ALERTS{alertname=\"ErrorBurst\",alertstate=\"firing\"")
                && l.contains("service=\"checkout\"")
                && l.ends_with(" 1")),
            "{text}"
        );

        // Through Alertmanager, grouped by alertname, with eddy's labels.
        let fired = next_with_status(&mut rx, "firing", &am).await;
        assert_eq!(fired["groupLabels"]["alertname"], "ErrorBurst");
        assert_eq!(fired["alerts"][0]["labels"]["service"], "checkout");
        assert_eq!(fired["alerts"][0]["labels"]["severity"], "page");

        // The condition clears: one error in a later window.
        post_errors(&base, "checkout", 1).await;
        let resolved = next_alert(&mut ws, "resolved").await;
        assert_eq!(resolved["data"]["fingerprint"], firing["data"]["fingerprint"]);
        let done = next_with_status(&mut rx, "resolved", &am).await;
        assert_eq!(done["alerts"][0]["labels"]["service"], "checkout");

        let history: Value = http()
            .get(format!("{base}/v1/alerts/history?state=resolved"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(history["transitions"].as_array().unwrap().len(), 1, "{history}");
        let bad = http()
            .get(format!("{base}/v1/alerts/history?state=sleeping"))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        let body: Value = bad.json().await.unwrap();
        assert_eq!(body["code"], "bad_state");
        let bad = http()
            .get(format!("{base}/v1/alerts/history?from=yesterday"))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
    })
    .await
    .expect("the end-to-end alert exchange took longer than its budget");
}

/// A receiver answering 500 to its first `failures` posts, then 200; every
/// body it got.
async fn flaky_receiver(
    failures: usize,
) -> (String, Arc<std::sync::Mutex<Vec<Value>>>, Arc<AtomicUsize>) {
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let (b, c) = (bodies.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let (b, c) = (b.clone(), c.clone());
            async move {
                b.lock()
                    .unwrap()
                    .push(serde_json::from_str::<Value>(&body).unwrap());
                if c.fetch_add(1, Ordering::SeqCst) < failures {
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "try again")
                } else {
                    (axum::http::StatusCode::OK, "ok")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, bodies, calls)
}

/// The value of the notifier metric line for `url` and `outcome`.
fn notifier_figure(text: &str, url: &str, outcome: &str) -> Option<u64> {
    text.lines()
        .find(|l| {
            l.starts_with("eddy_alert_notifier_messages_total{")
                && l.contains(&format!("url=\"{url}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_retried_and_a_dead_receiver_does_not_hold_up_the_pipeline() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let (flaky, bodies, calls) = flaky_receiver(2).await;
        let down = format!("http://127.0.0.1:{}/hook", crate::alertmanager::free_port());
        let sb = Sandbox::new();
        let config = sb.config(&serve_config(&format!(
            "[[notify.webhook]]\nurl = \"{flaky}\"\ninitial_backoff = \"50ms\"\nmax_backoff = \"200ms\"\n\
             [[notify.webhook]]\nurl = \"{down}\"\ninitial_backoff = \"20ms\"\nmax_backoff = \"50ms\"\nmax_attempts = 2\ntimeout = \"1s\"\n"
        )));
        let server = sb.serve(&config);
        let base = format!("http://{}", server.addr);
        let mut ws = Ws::connect(&server.ws_url()).await;
        ws.subscribe("alerts", json!({})).await;
        let mut windows = Ws::connect(&server.ws_url()).await;
        windows.subscribe("windows/errors", json!({})).await;

        post_errors(&base, "checkout", 3).await;
        next_alert(&mut ws, "firing").await;

        // Delivered once: two refusals, then accepted; nothing more.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while calls.load(Ordering::SeqCst) < 3 {
            assert!(tokio::time::Instant::now() < deadline, "only {} webhook calls", calls.load(Ordering::SeqCst));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let got = bodies.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.iter().all(|b| b == &got[0]), "the retries carry the same notification");
        assert_eq!(got[0]["status"], "firing");
        assert_eq!(got[0]["version"], "4");
        assert_eq!(got[0]["alerts"][0]["labels"]["service"], "checkout");

        // The dead receiver: ingest still answers 2xx and windows flow.
        for _ in 0..3 {
            post_errors(&base, "search", 1).await;
            let m = windows.messages(1, Duration::from_secs(15)).await;
            assert_eq!(m[0]["channel"], "windows/errors");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = metrics(&base).await;
            let sent = notifier_figure(&text, &flaky, "sent");
            let retried = notifier_figure(&text, &flaky, "retried");
            let failed = notifier_figure(&text, &down, "failed");
            if sent == Some(1) && retried == Some(2) && failed.is_some_and(|f| f >= 1) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sent {sent:?} retried {retried:?} failed {failed:?}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the webhook exchange took longer than its budget");
}
