//! Alert plugins through the registry, as the engine will use them: loaded
//! from the plugins folder next to processors and patterns, configured,
//! asked what they watch, and handed the engine's typed window results;
//! their baselines kept in the host state store across instances.

use std::sync::Arc;
use std::time::Duration;

use eddy::config::RuntimeConfig;
use eddy::event::Value;
use eddy::filter::FieldPath;
use eddy::plugin::alert::{AlertContext, AlertInput, AlertPlugin, Evaluation};
use eddy::plugin::pattern::PatternContext;
use eddy::plugin::{PluginEngine, PluginError, PluginKind, Registry};
use eddy::window::groups::{GroupKey, KeyPart};
use eddy::window::{Grouping, ResultKind, Schema, WindowResult};
use eddy_tests::plugins::*;
use eddy_tests::*;
use serde_json::json;

fn registry(sb: &Sandbox) -> Arc<Registry> {
    Registry::new(
        PluginEngine::new().unwrap(),
        // Python and JavaScript components take seconds to compile, more
        // while other tests compile theirs.
        RuntimeConfig {
            compile_timeout: Duration::from_secs(120),
            deadline: Duration::from_secs(5),
            ..RuntimeConfig::default()
        },
        sb.plugins_dir(),
    )
}

fn schema(window: &str, group_by: &[&str], outputs: &[&str]) -> Arc<Schema> {
    Arc::new(Schema {
        window: window.into(),
        index: 0,
        grouping: Grouping::new(
            group_by
                .iter()
                .map(|p| FieldPath::parse(p, "group_by").unwrap())
                .collect(),
        ),
        outputs: outputs.iter().map(|s| (*s).to_owned()).collect(),
    })
}

fn result(
    schema: &Arc<Schema>,
    kind: ResultKind,
    start: i64,
    len: i64,
    group: &str,
    values: Vec<Value>,
) -> WindowResult {
    let group: GroupKey = Box::new([KeyPart::Str(group.into())]);
    WindowResult {
        schema: schema.clone(),
        kind,
        start,
        end: start + len,
        group,
        values: values.into_boxed_slice(),
        revision: 0,
        replaces: Vec::new(),
        state: None,
    }
}

/// About normal with mean 0 and deviation 1 (Irwin–Hall: the sum of 12
/// uniforms minus 6), from the seeded generator of the synthetic series.
fn normal(rng: &mut Rng) -> f64 {
    (0..12).map(|_| rng.unit()).sum::<f64>() - 6.0
}

const MINUTE: i64 = 60_000;

fn alert(registry: &Arc<Registry>, name: &str, context: &AlertContext) -> AlertPlugin {
    let hash = registry.alerts()[name].clone();
    registry.alert_instance(name, &hash, context).unwrap()
}

fn active(evaluations: &[Evaluation]) -> Vec<(String, f64)> {
    evaluations
        .iter()
        .filter(|e| e.active)
        .map(|e| (e.labels["service"].clone(), e.value))
        .collect()
}

#[test]
fn zscore_anomaly_loads_as_an_alert_plugin_that_watches_its_configured_window() {
    let sb = Sandbox::new();
    sb.install(ZSCORE_ANOMALY, "zscore-anomaly");
    sb.install(LOGIN_BURST, "login-burst");
    sb.install(PASS_THROUGH, "pass-through");
    let registry = registry(&sb);
    assert_eq!(registry.load_all().unwrap(), 3);
    assert_eq!(
        registry.alerts().keys().collect::<Vec<_>>(),
        ["zscore-anomaly"]
    );
    let kinds: Vec<_> = registry
        .status()
        .into_iter()
        .map(|s| (s.name, s.kind))
        .collect();
    assert!(
        kinds.contains(&("zscore-anomaly".to_owned(), Some(PluginKind::Alert))),
        "{kinds:?}"
    );

    let mut context = AlertContext::new(&registry, "signups-anomaly");
    context.config = r#"{"window":"signups_per_minute","aggregate":"signups"}"#.into();
    let plugin = alert(&registry, "zscore-anomaly", &context);
    assert_eq!(plugin.watches().windows, ["signups_per_minute"]);
    assert!(plugin.watches().patterns.is_empty());

    // A configuration the plugin refuses is refused when the alert is set
    // up, naming the key.
    let hash = registry.alerts()["zscore-anomaly"].clone();
    let mut typo = AlertContext::new(&registry, "typo");
    typo.config = r#"{"window":"w","aggregate":"a","kk":3}"#.into();
    let err = registry
        .alert_instance("zscore-anomaly", &hash, &typo)
        .err()
        .unwrap();
    assert!(
        matches!(&err, PluginError::Config(m) if m.contains("kk")),
        "{err}"
    );

    // Kinds are not interchangeable.
    let err = registry
        .pattern_instance(
            "zscore-anomaly",
            &hash,
            &PatternContext::new(&registry, "x"),
        )
        .err()
        .unwrap();
    assert_eq!(
        err,
        PluginError::WrongKind {
            plugin: "zscore-anomaly".into(),
            found: PluginKind::Alert,
            wanted: PluginKind::Pattern,
        }
    );
    let burst = registry.live_versions()["login-burst"].clone();
    let err = registry
        .alert_instance("login-burst", &burst, &context)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            PluginError::WrongKind {
                found: PluginKind::Pattern,
                wanted: PluginKind::Alert,
                ..
            }
        ),
        "{err}"
    );
}

/// A seeded synthetic series — 20 services, 240 one-minute windows of
/// signups around 100 ± 5 — with one anomaly injected: service `svc-7`
/// jumps to 100 + 12 σ at minute 180. The real component, through the
/// host binding, raises exactly that one and nothing on the normal part;
/// halfway through, the plugin is thrown away and a new instance made over
/// the same state store (as after a swap or a crash), and the baseline is
/// still there: the first results after it are judged at once.
#[test]
fn zscore_anomaly_finds_the_injected_anomaly_and_nothing_on_the_normal_part() {
    let sb = Sandbox::new();
    sb.install(ZSCORE_ANOMALY, "zscore-anomaly");
    let registry = registry(&sb);
    registry.load_all().unwrap();
    let mut context = AlertContext::new(&registry, "signups-anomaly");
    context.config =
        r#"{"window":"signups_per_minute","aggregate":"signups","k":5,"min_samples":20,"history":60}"#
            .into();
    let mut plugin = alert(&registry, "zscore-anomaly", &context);
    let window = schema(
        "signups_per_minute",
        &["properties.service"],
        &["events", "signups"],
    );
    let other = schema("checkout_latency", &["properties.service"], &["signups"]);
    let mut rng = Rng(0x5eed_0001);
    let services: Vec<String> = (0..20).map(|i| format!("svc-{i}")).collect();
    let (anomaly_minute, anomaly_service) = (180, "svc-7");
    let mut fired = Vec::new();
    let mut judged = 0;
    for minute in 0..240 {
        if minute == 120 {
            assert!(
                context.state.len() >= services.len(),
                "one baseline per service"
            );
            plugin = alert(&registry, "zscore-anomaly", &context);
        }
        let start = minute * MINUTE;
        let mut batch: Vec<WindowResult> = services
            .iter()
            .map(|s| {
                let mut x = 100.0 + 5.0 * normal(&mut rng);
                if minute == anomaly_minute && s == anomaly_service {
                    x = 100.0 + 12.0 * 5.0;
                }
                result(
                    &window,
                    ResultKind::Final,
                    start,
                    MINUTE,
                    s,
                    vec![Value::Int(1000), Value::Float(x.round())],
                )
            })
            .collect();
        // Results of a window the plugin does not watch are not its to judge.
        batch.push(result(
            &other,
            ResultKind::Final,
            start,
            MINUTE,
            "svc-0",
            vec![Value::Float(1e9)],
        ));
        let out = plugin
            .evaluate(AlertInput::Windows(&batch), start + MINUTE)
            .unwrap();
        if minute == 120 {
            assert_eq!(out.len(), services.len(), "the baseline survived");
        }
        judged += out.len();
        fired.extend(active(&out).into_iter().map(|(s, z)| (minute, s, z)));
    }
    // Every service is judged from its 21st minute on.
    assert_eq!(judged, services.len() * (240 - 20));
    assert_eq!(fired.len(), 1, "{fired:?}");
    let (minute, service, z) = &fired[0];
    assert_eq!(
        (*minute, service.as_str()),
        (anomaly_minute, anomaly_service)
    );
    assert!(*z > 5.0, "{z}");
}

#[test]
fn zscore_anomaly_errors_name_the_missing_aggregate_and_keep_no_state() {
    let sb = Sandbox::new();
    sb.install(ZSCORE_ANOMALY, "zscore-anomaly");
    let registry = registry(&sb);
    registry.load_all().unwrap();
    let mut context = AlertContext::new(&registry, "z");
    context.config = r#"{"window":"w","aggregate":"signups"}"#.into();
    let mut plugin = alert(&registry, "zscore-anomaly", &context);
    let wrong = schema("w", &["properties.service"], &["events"]);
    let batch = [result(
        &wrong,
        ResultKind::Final,
        0,
        MINUTE,
        "a",
        vec![Value::Int(3)],
    )];
    let err = plugin.evaluate(AlertInput::Windows(&batch), 0).unwrap_err();
    assert!(
        matches!(&err, PluginError::Returned(m) if m.contains("`signups`") && m.contains("events")),
        "{err}"
    );
    assert!(context.state.is_empty(), "a failed call writes nothing");
}

#[test]
fn burn_rate_fires_when_the_long_and_the_short_window_both_burn_too_fast() {
    let sb = Sandbox::new();
    sb.install(BURN_RATE, "burn-rate");
    let registry = registry(&sb);
    registry.load_all().unwrap();
    let mut context = AlertContext::new(&registry, "checkout-slo");
    context.config =
        r#"{"long_window":"req_1h","short_window":"req_5m","slo":0.999,"factor":14.4}"#.into();
    let mut plugin = alert(&registry, "burn-rate", &context);
    assert_eq!(plugin.watches().windows, ["req_1h", "req_5m"]);
    let long = schema("req_1h", &["properties.service"], &["errors", "total"]);
    let short = schema("req_5m", &["properties.service"], &["errors", "total"]);
    let (hour, five) = (60 * MINUTE, 5 * MINUTE);
    let counts = |e: i64, t: i64| vec![Value::Int(e), Value::Int(t)];
    // Both windows in one input: one call per window, in order.
    let batch = [
        result(
            &long,
            ResultKind::Final,
            0,
            hour,
            "checkout",
            counts(200, 10_000),
        ),
        result(
            &short,
            ResultKind::Final,
            hour - five,
            five,
            "checkout",
            counts(30, 1_000),
        ),
    ];
    let out = plugin.evaluate(AlertInput::Windows(&batch), hour).unwrap();
    // 2 % errors over a 0.1 % budget is 20x, 3 % is 30x: the smaller is
    // the value.
    let fired = active(&out);
    assert_eq!(fired.len(), 1, "{out:?}");
    assert_eq!(fired[0].0, "checkout");
    assert!((fired[0].1 - 20.0).abs() < 1e-9, "{out:?}");
    assert_eq!(out[0].severity.as_deref(), Some("critical"));
    assert!(out[0].annotations["summary"].contains("req_5m"), "{out:?}");
    // The short window recovers: the alert clears at once, though the long
    // window still burns.
    let batch = [result(
        &short,
        ResultKind::Final,
        hour,
        five,
        "checkout",
        counts(1, 1_000),
    )];
    let out = plugin
        .evaluate(AlertInput::Windows(&batch), hour + five)
        .unwrap();
    assert_eq!(out.len(), 1);
    assert!(!out[0].active, "{out:?}");
}

#[test]
fn ewma_baseline_in_python_flags_a_jump() {
    ewma_baseline(EWMA_BASELINE_PY);
}

#[test]
fn ewma_baseline_in_javascript_flags_a_jump() {
    ewma_baseline(EWMA_BASELINE_JS);
}

/// The Python and JavaScript builds of ewma-baseline behave alike: quiet on
/// a steady seeded series, active on a jump, labelled by group, baseline in
/// host state (one key per group).
fn ewma_baseline(built: &str) {
    let sb = Sandbox::new();
    sb.install(built, "ewma-baseline");
    let registry = registry(&sb);
    registry.load_all().unwrap();
    let mut context = AlertContext::new(&registry, "orders-baseline");
    context.config =
        r#"{"window":"orders","aggregate":"count","alpha":0.1,"k":4,"min_samples":15}"#.into();
    let mut plugin = alert(&registry, "ewma-baseline", &context);
    assert_eq!(plugin.watches().windows, ["orders"]);
    let window = schema("orders", &["properties.service"], &["count"]);
    let mut rng = Rng(0x5eed_0002);
    let mut fired = Vec::new();
    for minute in 0..60 {
        let batch: Vec<WindowResult> = ["eu", "us"]
            .iter()
            .map(|s| {
                let mut x = 50.0 + 2.0 * normal(&mut rng);
                if minute == 50 && *s == "us" {
                    x = 90.0;
                }
                result(
                    &window,
                    ResultKind::Final,
                    minute * MINUTE,
                    MINUTE,
                    s,
                    vec![Value::Int(x.round() as i64)],
                )
            })
            .collect();
        let out = plugin
            .evaluate(AlertInput::Windows(&batch), minute * MINUTE)
            .unwrap();
        assert_eq!(out.len(), if minute >= 15 { 2 } else { 0 }, "{minute}");
        for e in &out {
            assert_eq!(e.severity.as_deref(), Some("warning"));
            assert!(e.annotations.contains_key("summary"), "{e:?}");
        }
        fired.extend(active(&out).into_iter().map(|(s, _)| (minute, s)));
    }
    assert_eq!(fired, [(50, "us".to_owned())]);
    assert_eq!(context.state.len(), 2, "one baseline per group");
}

// ---------------------------------------------------------------------------
// Alert plugin rules in the engine: `[[alerts]] plugin = "…"`
// ---------------------------------------------------------------------------

/// A minute boundary: window `m` is `[T0 + m min, T0 + (m+1) min)`.
const T0: i64 = 28_333_333 * MINUTE;

/// A window of mean latency per service, closing as soon as the next
/// minute's first event arrives.
const LATENCY_WINDOW: &str = r#"
[wal]
enabled = false

[[windows]]
name = "latency"
kind = "tumbling"
size = "1m"
out_of_orderness = "0s"
idle_timeout = "1h"
group_by = ["properties.service"]
aggregates = ["count", "avg(properties.ms) as ms"]
"#;

fn latency_rule(extra: &str) -> String {
    format!(
        r#"
[[alerts]]
name = "LatencyAnomaly"
plugin = "zscore-anomaly"
config = {{ window = "latency", aggregate = "ms", k = 5, min_samples = 20, history = 60 }}
labels = {{ team = "web" }}
annotations = {{ runbook = "https://runbooks.example/latency/{{{{ $labels.service }}}}" }}
{extra}
"#
    )
}

/// One event per service and minute: `ms` at minute `m`.
fn latency_event(m: i64, i: usize, service: &str, ms: f64) -> String {
    json!({
        "name": "request",
        "distinct_id": "u",
        "timestamp": T0 + m * MINUTE + 1000 + i as i64,
        "properties": {"service": service, "ms": ms},
    })
    .to_string()
}

/// `(state, service, at - T0)` of every alert transition in a results file.
fn alert_transitions(results: &str) -> Vec<(String, String, i64)> {
    results
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["channel"] == "alerts")
        .map(|v| {
            let d = &v["data"];
            (
                d["state"].as_str().unwrap().to_owned(),
                d["labels"]["service"].as_str().unwrap_or("").to_owned(),
                d["at"].as_i64().unwrap() - T0,
            )
        })
        .collect()
}

/// `zscore-anomaly` as an `[[alerts]]` rule under `eddy pipe --clock
/// virtual`: a seeded series of 12 services over 90 minutes, latency
/// 100 ± 5 ms, with one anomaly injected (`svc-7` at 100 + 12 σ in minute
/// 60). Exactly that group fires, when its window closes, and resolves at
/// the next normal window; the normal part raises nothing. The alert
/// carries the plugin's severity and annotations over the rule's.
#[test]
fn a_zscore_rule_fires_on_the_injected_anomaly_only_under_a_virtual_clock() {
    let sb = Sandbox::new();
    sb.install(ZSCORE_ANOMALY, "zscore-anomaly");
    let config = sb.config(&format!("{LATENCY_WINDOW}\n{}", latency_rule("")));
    let mut rng = Rng(0x5eed_0003);
    let services: Vec<String> = (0..12).map(|i| format!("svc-{i}")).collect();
    let mut lines = Vec::new();
    for m in 0..90 {
        for (i, s) in services.iter().enumerate() {
            let ms = if m == 60 && s == "svc-7" {
                160.0
            } else {
                100.0 + 5.0 * normal(&mut rng)
            };
            lines.push(latency_event(m, i, s, ms));
        }
    }
    let input = lines.join("\n") + "\n";
    let results = sb.path().join("results.ndjson");
    let run = |results: &std::path::Path| {
        let r = sb.pipe(
            &config,
            &input,
            &["--clock", "virtual", "--results", results.to_str().unwrap()],
        );
        assert!(r.success, "{}", r.stderr);
        std::fs::read_to_string(results).unwrap()
    };
    let text = run(&results);
    assert_eq!(
        alert_transitions(&text),
        [
            ("firing".to_owned(), "svc-7".to_owned(), 61 * MINUTE),
            ("resolved".to_owned(), "svc-7".to_owned(), 62 * MINUTE),
        ],
        "only the injected anomaly fires"
    );
    let firing: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["channel"] == "alerts")
        .unwrap()["data"]
        .clone();
    let labels = &firing["labels"];
    assert_eq!(labels["alertname"], "LatencyAnomaly");
    assert_eq!(labels["team"], "web");
    assert_eq!(labels["severity"], "warning", "the plugin's severity");
    let annotations = &firing["annotations"];
    assert_eq!(
        annotations["runbook"],
        "https://runbooks.example/latency/svc-7"
    );
    assert_eq!(annotations["value"], "160", "{annotations}");
    assert!(
        annotations["summary"]
            .as_str()
            .unwrap()
            .contains("60 values"),
        "{annotations}"
    );
    assert!(firing["value"].as_f64().unwrap() > 5.0, "{firing}");

    // Deterministic: a second run gives the same transitions, byte for byte.
    let again = run(&sb.path().join("again.ndjson"));
    let alerts = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.contains("\"channel\":\"alerts\""))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(alerts(&text), alerts(&again));
}

/// Mistakes in an alert plugin rule stop `eddy pipe` at the start with an
/// error naming the alert and the plugin: a plugin file that is missing,
/// one of another kind, and a plugin watching a window that does not exist.
#[test]
fn a_missing_or_wrong_kind_alert_plugin_is_a_clear_start_error() {
    let sb = Sandbox::new();
    sb.install(LOGIN_BURST, "login-burst");
    sb.install(ZSCORE_ANOMALY, "zscore-anomaly");
    let cases = [
        (
            latency_rule("").replace("zscore-anomaly", "no-such-plugin"),
            "no plugin `no-such-plugin` in the plugins folder",
        ),
        (
            latency_rule("").replace("zscore-anomaly", "login-burst"),
            "plugin `login-burst` is a pattern plugin, not an alert plugin",
        ),
        (
            latency_rule("").replace("window = \"latency\"", "window = \"latenzy\""),
            "watches window `latenzy`, which is not configured (windows: latency)",
        ),
        (latency_rule("").replace("k = 5", "kk = 5"), "kk"),
    ];
    for (rule, message) in cases {
        let config = sb.config(&format!("{LATENCY_WINDOW}\n{rule}"));
        let r = sb.pipe(&config, "", &["--clock", "virtual"]);
        assert!(!r.success, "{rule}: started");
        assert!(
            r.stderr.contains("alert `LatencyAnomaly`") && r.stderr.contains(message),
            "{rule}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    // And a declared key next to `plugin` is a configuration error naming it.
    let config = sb.config(&format!(
        "{LATENCY_WINDOW}\n{}",
        latency_rule("threshold = 3")
    ));
    let r = sb.pipe(&config, "", &["--clock", "virtual"]);
    assert!(!r.success);
    assert!(
        r.stderr.contains("alerts[0].threshold") && r.stderr.contains("not with `plugin`"),
        "{}",
        r.stderr
    );
}

/// An alert plugin replaced under `eddy serve` while its alert fires: the
/// new version takes over the rule with the old version's baseline (its
/// first judgement counts the 21 values the old one learnt) and the alert
/// stays firing — same fingerprint, same `startsAt`, no resolved
/// transition on the `alerts` channel or in the history — until a normal
/// window resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_alert_plugin_keeps_its_firing_alert_and_its_baseline() {
    use eddy_tests::server::{Ws, http};
    tokio::time::timeout(Duration::from_secs(120), async {
        let sb = Sandbox::new();
        sb.install(ZSCORE_ANOMALY, "zscore-anomaly");
        let config = sb.config(&format!(
            "{LATENCY_WINDOW}\n{}",
            latency_rule("").replace("k = 5, min_samples = 20", "k = 4, min_samples = 10")
        ));
        let server = sb.serve(&config);
        let base_url = format!("http://{}", server.addr);
        let mut alerts_ws = Ws::connect(&server.ws_url()).await;
        alerts_ws.subscribe("alerts", json!({})).await;
        let mut plugins_ws = Ws::connect(&server.ws_url()).await;
        plugins_ws.subscribe("plugins", json!({})).await;

        // Minutes of the last hour, so HTTP ingest takes them.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let base = (now / MINUTE - 40) * MINUTE;
        let event = |m: i64, ms: f64| {
            json!({
                "name": "request",
                "distinct_id": "u",
                "timestamp": base + m * MINUTE + 1000,
                "properties": {"service": "checkout", "ms": ms},
            })
        };
        let post = |events: Vec<serde_json::Value>| {
            let url = format!("{base_url}/v1/events");
            async move {
                let r = http().post(url).json(&events).send().await.unwrap();
                assert!(r.status().is_success(), "{}", r.status());
            }
        };
        let alerts_now = || {
            let url = format!("{base_url}/v1/alerts");
            async move {
                let v: serde_json::Value =
                    http().get(url).send().await.unwrap().json().await.unwrap();
                v["alerts"].as_array().unwrap().clone()
            }
        };

        // Twenty normal minutes, an anomaly in minute 20, and minute 21's
        // (still open) window: window 20 closes and fires.
        let mut rng = Rng(0x5eed_0004);
        let mut first: Vec<serde_json::Value> = (0..20)
            .map(|m| event(m, 100.0 + 5.0 * normal(&mut rng)))
            .collect();
        first.push(event(20, 200.0));
        first.push(event(21, 300.0));
        post(first).await;
        let firing = alerts_ws
            .messages(1, Duration::from_secs(20))
            .await
            .remove(0);
        let firing = &firing["data"];
        assert_eq!(firing["state"], "firing", "{firing}");
        assert_eq!(firing["at"], base + 21 * MINUTE);
        let before = alerts_now().await;
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(before[0]["fingerprint"], firing["fingerprint"]);
        assert!(
            before[0]["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains("(std"),
            "{before:?}"
        );
        assert!(before[0]["annotations"].get("version").is_none());

        // Version 2 goes live; the engine applies it before later batches.
        sb.rename_over(ZSCORE_ANOMALY_V2, "zscore-anomaly");
        loop {
            let m = plugins_ws
                .messages(1, Duration::from_secs(30))
                .await
                .remove(0);
            if m["data"]["plugin"] == "zscore-anomaly" && m["data"]["kind"] == "swapped" {
                break;
            }
        }

        // Minute 22 closes window 21 (300 ms): judged by version 2 against
        // the baseline of minutes 0–20, the anomaly goes on.
        post(vec![event(22, 100.0)]).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let after = loop {
            let now = alerts_now().await;
            if now
                .first()
                .is_some_and(|a| a["annotations"]["version"] == "2")
            {
                break now;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "version 2 never judged the alert: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(after.len(), 1, "{after:?}");
        let a = &after[0];
        assert_eq!(a["state"], "firing", "{a}");
        assert_eq!(a["fingerprint"], firing["fingerprint"]);
        assert_eq!(a["startsAt"], firing["startsAt"], "not re-fired");
        assert_eq!(a["annotations"]["value"], "300");
        assert!(
            a["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains("21 values"),
            "the baseline the old version learnt: {a}"
        );
        let history: serde_json::Value = http()
            .get(format!("{base_url}/v1/alerts/history"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let states: Vec<&str> = history["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["firing"], "{history}");

        // A normal window resolves it: the next message on the channel is
        // that resolution, nothing in between.
        post(vec![event(23, 100.0)]).await;
        let next = alerts_ws
            .messages(1, Duration::from_secs(20))
            .await
            .remove(0);
        assert_eq!(next["data"]["state"], "resolved", "{next}");
        assert_eq!(next["data"]["at"], base + 23 * MINUTE);
        assert_eq!(next["data"]["fingerprint"], firing["fingerprint"]);
    })
    .await
    .expect("the hot swap exchange took longer than its budget");
}

/// A configuration reload applies alert plugin rules as it does declared
/// ones: a rule naming a missing plugin fails the reload and changes
/// nothing; a changed rule keeps its firing alert (same `startsAt`) and its
/// baseline, with the new annotations from its next evaluation; a removed
/// rule resolves its firing alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_and_removes_alert_plugin_rules() {
    use eddy_tests::server::{Ws, http};
    tokio::time::timeout(Duration::from_secs(120), async {
        let sb = Sandbox::new();
        sb.install(ZSCORE_ANOMALY, "zscore-anomaly");
        let rule = |extra: &str| {
            latency_rule(extra).replace("k = 5, min_samples = 20", "k = 4, min_samples = 10")
        };
        let config = sb.config(&format!("{LATENCY_WINDOW}\n{}", rule("")));
        let server = sb.serve(&config);
        let base_url = format!("http://{}", server.addr);
        let mut ws = Ws::connect(&server.ws_url()).await;
        ws.subscribe("alerts", json!({})).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let base = (now / MINUTE - 40) * MINUTE;
        let event = |m: i64, ms: f64| {
            json!({
                "name": "request",
                "distinct_id": "u",
                "timestamp": base + m * MINUTE + 1000,
                "properties": {"service": "checkout", "ms": ms},
            })
        };
        let post = |events: Vec<serde_json::Value>| {
            let url = format!("{base_url}/v1/events");
            async move {
                let r = http().post(url).json(&events).send().await.unwrap();
                assert!(r.status().is_success(), "{}", r.status());
            }
        };
        let reload = |body: String| {
            std::fs::write(
                &config,
                format!(
                    "plugins_dir = {:?}\n{LATENCY_WINDOW}\n{body}",
                    sb.plugins_dir().display().to_string()
                ),
            )
            .unwrap();
            let url = format!("{base_url}/v1/admin/reload");
            async move {
                let r = http().post(url).send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<serde_json::Value>().await.unwrap())
            }
        };
        let alerts_now = || {
            let url = format!("{base_url}/v1/alerts");
            async move {
                let v: serde_json::Value =
                    http().get(url).send().await.unwrap().json().await.unwrap();
                v["alerts"].as_array().unwrap().clone()
            }
        };

        let mut rng = Rng(0x5eed_0005);
        let mut first: Vec<serde_json::Value> = (0..20)
            .map(|m| event(m, 100.0 + 5.0 * normal(&mut rng)))
            .collect();
        first.push(event(20, 200.0));
        first.push(event(21, 300.0));
        post(first).await;
        let firing = ws.messages(1, Duration::from_secs(20)).await.remove(0);
        let firing = firing["data"].clone();
        assert_eq!(firing["state"], "firing", "{firing}");

        // A missing plugin: refused, nothing changed.
        let (status, body) = reload(rule("").replace("\"zscore-anomaly\"", "\"no-such\"")).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], "reload_failed", "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("alert `LatencyAnomaly`: no plugin `no-such` in the plugins folder"),
            "{body}"
        );
        assert_eq!(alerts_now().await[0]["startsAt"], firing["startsAt"]);

        // Changed annotations: the instance is kept.
        let (status, body) =
            reload(rule("").replace("latency/{{ $labels.service }}", "v2/{{ $labels.service }}"))
                .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["changes"],
            json!([
                "alert `LatencyAnomaly` (plugin `zscore-anomaly`) changed; its instances are kept"
            ]),
        );
        post(vec![event(22, 100.0)]).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let a = loop {
            let now = alerts_now().await;
            if now.first().is_some_and(|a| {
                a["annotations"]["runbook"] == "https://runbooks.example/v2/checkout"
            }) {
                break now[0].clone();
            }
            assert!(std::time::Instant::now() < deadline, "{now:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(a["state"], "firing", "{a}");
        assert_eq!(a["startsAt"], firing["startsAt"]);
        assert!(
            a["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains("21 values"),
            "{a}"
        );

        // Removed: its firing alert resolves.
        let (status, body) = reload(String::new()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["changes"],
            json!(["alert `LatencyAnomaly` removed; its firing alerts resolved"]),
        );
        let resolved = ws.messages(1, Duration::from_secs(20)).await.remove(0);
        assert_eq!(resolved["data"]["state"], "resolved", "{resolved}");
        assert_eq!(resolved["data"]["fingerprint"], firing["fingerprint"]);
        // (REST may answer from a view up to `REUSE`, 50 ms, old.)
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let v: serde_json::Value = http()
                .get(format!("{base_url}/v1/alerts"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["rules"] == json!([]) {
                assert_eq!(v["alerts"], json!([]), "{v}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the rule is still there: {v}"
            );
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    })
    .await
    .expect("the reload exchange took longer than its budget");
}

/// An alert plugin whose calls fail (here: its configured aggregate does
/// not exist) makes no alert transitions, and its failures and quarantine
/// are notices on the `plugins` channel (`--channels`).
#[test]
fn a_failing_alert_plugin_makes_no_transitions_and_reports_on_the_plugins_channel() {
    let sb = Sandbox::new();
    sb.install(ZSCORE_ANOMALY, "zscore-anomaly");
    let config = sb.config(&format!(
        "{LATENCY_WINDOW}\n{}",
        latency_rule("").replace("aggregate = \"ms\"", "aggregate = \"nope\"")
    ));
    let lines: Vec<String> = (0..30)
        .map(|m| latency_event(m, 0, "checkout", if m == 25 { 500.0 } else { 100.0 }))
        .collect();
    let results = sb.path().join("results.ndjson");
    let channels = sb.path().join("channels.ndjson");
    let r = sb.pipe(
        &config,
        &(lines.join("\n") + "\n"),
        &[
            "--clock",
            "virtual",
            "--results",
            results.to_str().unwrap(),
            "--channels",
            channels.to_str().unwrap(),
        ],
    );
    assert!(r.success, "{}", r.stderr);
    let text = std::fs::read_to_string(&results).unwrap();
    assert!(alert_transitions(&text).is_empty(), "{text}");
    let notices: Vec<serde_json::Value> = std::fs::read_to_string(&channels)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["channel"] == "plugins" && v["data"]["plugin"] == "zscore-anomaly")
        .map(|v| v["data"].clone())
        .collect();
    let failed = notices.iter().find(|n| n["kind"] == "failed");
    assert!(
        failed.is_some_and(|n| n["detail"]
            .as_str()
            .unwrap()
            .contains("no aggregate `nope`")),
        "{notices:?}"
    );
    assert!(
        notices.iter().any(|n| n["kind"] == "quarantined"),
        "{notices:?}"
    );
}
