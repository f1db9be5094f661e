//! `GET /metrics` after traffic through every kind of stage: a processor
//! that counts through the `metrics` import (`metrics-probe`), one that
//! dead-letters a batch it spoils (`bad-events`), one that fails every batch
//! (`trap`), a pattern plugin (`login-burst`) and an alert plugin
//! (`zscore-anomaly`). The scrape is parsed with
//! `prometheus-parse`, and each family docs/metrics.md lists is checked for
//! its type, its labels and a value that moved with the traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use eddy_tests::plugins::{BAD_EVENTS, LOGIN_BURST, METRICS_PROBE, TRAP, ZSCORE_ANOMALY};
use eddy_tests::server::{Server, Ws, get_text, http, post_ndjson};
use eddy_tests::*;
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const MINUTE: i64 = 60_000;

const CONFIG: &str = r#"
[time]
out_of_orderness = "0s"

[runtime]
# The trap stage is quarantined at its second failed batch; the checked
# stage fails once and is not.
quarantine_after = 2

[streams]
# A subscriber more than one message behind is cut off: the test's idle
# WebSocket is, by the first batch of events.
client_queue = 1

[[stages]]
name = "probe"
plugin = "metrics-probe"

[[stages]]
name = "checked"
plugin = "bad-events"
on_failure = "dead-letter"

[[stages]]
name = "failing"
plugin = "trap"
on_failure = "pass-through"

[[windows]]
name = "latency"
kind = "tumbling"
size = "1m"
out_of_orderness = "0s"
idle_timeout = "1h"
group_by = ["properties.service"]
filter = { names = ["request"] }
aggregates = ["count", "avg(properties.ms) as ms"]

[[alerts]]
name = "LatencyAnomaly"
plugin = "zscore-anomaly"
config = { window = "latency", aggregate = "ms", k = 5, min_samples = 20, history = 60 }
"#;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn event(id: &str, name: &str, user: &str, ts: i64, properties: serde_json::Value) -> String {
    json!({"id": id, "name": name, "distinct_id": user, "timestamp": ts, "properties": properties})
        .to_string()
}

async fn scrape(server: &Server) -> (String, Scrape) {
    let text = get_text(server.url("/metrics")).await;
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    (text, parsed)
}

/// The samples of family `name` (a histogram's by its family name).
fn family<'a>(s: &'a Scrape, name: &str) -> Vec<&'a Sample> {
    s.samples.iter().filter(|x| x.metric == name).collect()
}

/// The one sample of `name` whose labels include `want`.
fn one<'a>(s: &'a Scrape, name: &str, want: &[(&str, &str)]) -> Option<&'a Sample> {
    let found: Vec<_> = family(s, name)
        .into_iter()
        .filter(|x| want.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect();
    assert!(found.len() <= 1, "{name} {want:?}: {found:?}");
    found.into_iter().next()
}

fn value(v: &Value) -> f64 {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        Value::Histogram(_) | Value::Summary(_) => f64::NAN,
    }
}

fn counter(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = one(s, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"));
    match sample.value {
        Value::Counter(x) => x,
        ref other => panic!("{name} {labels:?} is not a counter: {other:?}"),
    }
}

fn gauge(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = one(s, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"));
    match sample.value {
        Value::Gauge(x) => x,
        ref other => panic!("{name} {labels:?} is not a gauge: {other:?}"),
    }
}

fn at(stage: &str) -> [(&'static str, &str); 1] {
    [("stage", stage)]
}

fn label_names(s: &Sample) -> BTreeSet<&str> {
    s.labels.keys().map(String::as_str).collect()
}

/// What `prometheus-parse` does not check: one `# TYPE` per family, a
/// `# HELP`/`# TYPE` only before its family's samples, and every sample
/// of a family that has a type.
fn check_exposition(text: &str) {
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(
                types.insert(name, kind).is_none(),
                "family {name} is declared twice"
            );
        }
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = [name, name.trim_end_matches("_bucket")]
            .into_iter()
            .chain(name.strip_suffix("_sum"))
            .chain(name.strip_suffix("_count"))
            .find(|f| types.contains_key(f));
        assert!(family.is_some(), "sample without a # TYPE: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_every_stage_kind_plugin_and_channel_after_traffic() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let sb = Sandbox::new();
        sb.install(METRICS_PROBE, "metrics-probe");
        sb.install(TRAP, "trap");
        sb.install(BAD_EVENTS, "bad-events");
        sb.install(LOGIN_BURST, "login-burst");
        sb.install(ZSCORE_ANOMALY, "zscore-anomaly");
        let config = sb.config(CONFIG);
        let server = sb.serve(&config);
        let client = http();

        // An idle subscriber of `events`: counted while it is there, cut
        // off as too slow by the first batch.
        let mut idle = Ws::connect(&server.ws_url()).await;
        idle.subscribe("events", json!({})).await;
        let (text, before) = scrape(&server).await;
        check_exposition(&text);
        assert_eq!(
            gauge(
                &before,
                "eddy_channel_subscribers",
                &[("channel", "events")]
            ),
            1.0
        );
        assert_eq!(
            counter(
                &before,
                "eddy_channel_slow_client_closes_total",
                &[("channel", "events")]
            ),
            0.0
        );

        // A batch the checked stage spoils (an event without a distinct_id):
        // dead-lettered there.
        let m0 = (now_ms() / MINUTE - 5) * MINUTE;
        let spoiled = event(
            "b1",
            "oops",
            "dave",
            m0,
            json!({"bad": "empty-distinct-id"}),
        );
        let answer = post_ndjson(&client, &server.url(""), spoiled, WAIT).await;
        assert_eq!(answer["accepted"], 1, "{answer}");
        // Through the engine before the traffic comes, so the two are not
        // one batch.
        let deadline = Instant::now() + WAIT;
        loop {
            let stats: serde_json::Value = client
                .get(server.url("/v1/stats"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if stats["dead_lettered"] == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "not dead-lettered: {stats}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Traffic: page views (the probe's counters), a login burst (the
        // pattern plugin's match) and a minute of latencies closed by the
        // next minute's request (the window's results, which the alert
        // plugin evaluates).
        let mut lines = vec![
            event(
                "v1",
                "$pageview",
                "alice",
                m0 + 1_000,
                json!({"$pathname": "/"}),
            ),
            event(
                "v2",
                "$pageview",
                "alice",
                m0 + 2_000,
                json!({"$pathname": "/a"}),
            ),
            event(
                "v3",
                "$pageview",
                "carol",
                m0 + 3_000,
                json!({"$pathname": "/b"}),
            ),
            event("f1", "login_failed", "bob", m0 + 4_000, json!({})),
            event("f2", "login_failed", "bob", m0 + 5_000, json!({})),
            event("f3", "login_failed", "bob", m0 + 6_000, json!({})),
            event("s1", "login_succeeded", "bob", m0 + 7_000, json!({})),
        ];
        for (i, service) in ["checkout", "search"].into_iter().enumerate() {
            lines.push(event(
                &format!("r{i}"),
                "request",
                "svc",
                m0 + 10_000 + i as i64,
                json!({"service": service, "ms": 100.0}),
            ));
        }
        let last_ts = m0 + MINUTE + 5_000;
        lines.push(event(
            "r-next",
            "request",
            "svc",
            last_ts,
            json!({"service": "checkout", "ms": 100.0}),
        ));
        let traffic = lines.len() as f64;
        let answer = post_ndjson(&client, &server.url(""), lines.join("\n"), WAIT).await;
        assert_eq!(answer["accepted"], traffic, "{answer}");
        server.wait_published(traffic as u64, WAIT).await;

        // The idle subscriber was cut off, as the counter will say.
        let closed = loop {
            match idle.recv(WAIT).await {
                Ok(m) if m["type"] == "error" => assert_eq!(m["code"], "slow_consumer", "{m}"),
                Ok(_) => {}
                Err(closed) => break closed,
            }
        };
        assert_eq!(closed.code, 4008, "{closed:?}");

        // One more batch: the trap's second failure quarantines it.
        let last_ts = last_ts + 1_000;
        let answer = post_ndjson(
            &client,
            &server.url(""),
            event("t1", "tick", "svc", last_ts, json!({})),
            WAIT,
        )
        .await;
        assert_eq!(answer["accepted"], 1, "{answer}");
        // Published: the traffic and the tick, not the spoiled event.
        let sent = traffic + 1.0;
        server.wait_published(sent as u64, WAIT).await;

        // Poll until the engine's reports show every stage kind called.
        let deadline = Instant::now() + WAIT;
        let (text, after) = loop {
            let (text, s) = scrape(&server).await;
            let calls = |kind: &str| {
                family(&s, "eddy_stage_calls_total")
                    .iter()
                    .filter(|x| x.labels.get("kind") == Some(kind))
                    .map(|x| value(&x.value))
                    .sum::<f64>()
            };
            if ["processor", "pattern", "alert"]
                .iter()
                .all(|k| calls(k) >= 1.0)
            {
                break (text, s);
            }
            assert!(
                Instant::now() < deadline,
                "not every stage kind called:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        check_exposition(&text);

        // The live version of each plugin, as GET /v1/plugins shows it.
        let plugins: serde_json::Value = client
            .get(server.url("/v1/plugins"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let version = |name: &str| -> String {
            let p = plugins["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("no plugin {name}: {plugins}"));
            p["hash"].as_str().unwrap()[..12].to_owned()
        };

        // GET /v1/plugins shows the pattern and alert stages too, with the
        // calls /metrics counts.
        for (plugin, stage, kind) in [
            ("login-burst", "login-burst", "pattern"),
            ("zscore-anomaly", "LatencyAnomaly", "alert"),
        ] {
            let p = plugins["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == plugin)
                .unwrap();
            let s = &p["stages"][0];
            assert_eq!(
                (&s["stage"], &s["kind"]),
                (&json!(stage), &json!(kind)),
                "{p}"
            );
            assert_eq!(
                s["calls"].as_f64(),
                Some(counter(&after, "eddy_stage_calls_total", &at(stage))),
                "{p}"
            );
        }

        // Per stage: every kind, labelled kind, stage, plugin, version.
        let stage_labels = BTreeSet::from(["kind", "stage", "plugin", "version"]);
        let stages = [
            ("processor", "probe", "metrics-probe"),
            ("processor", "checked", "bad-events"),
            ("processor", "failing", "trap"),
            ("pattern", "login-burst", "login-burst"),
            ("alert", "LatencyAnomaly", "zscore-anomaly"),
        ];
        for name in [
            "eddy_stage_calls_total",
            "eddy_stage_events_in_total",
            "eddy_stage_events_out_total",
            "eddy_stage_failed_batches_total",
            "eddy_stage_quarantines_total",
            "eddy_stage_rollbacks_total",
            "eddy_stage_quarantined",
            "eddy_stage_batch_duration_seconds",
        ] {
            for (kind, stage, plugin) in stages {
                let v = version(plugin);
                let want = [
                    ("kind", kind),
                    ("stage", stage),
                    ("plugin", plugin),
                    ("version", v.as_str()),
                ];
                let s = one(&after, name, &want)
                    .unwrap_or_else(|| panic!("no {name} {want:?} in\n{text}"));
                assert_eq!(label_names(s), stage_labels, "{name} {want:?}");
            }
        }
        for name in [
            "eddy_stage_events_dropped_total",
            "eddy_stage_dead_letters_total",
            "eddy_stage_passed_through_total",
            "eddy_stage_skipped_batches_total",
        ] {
            for (_, stage, _) in stages.iter().filter(|s| s.0 == "processor") {
                counter(&after, name, &[("stage", stage)]);
            }
        }
        // The probe saw every event, the spoiled one too, and kept them all.
        let probe = at("probe");
        assert_eq!(counter(&after, "eddy_stage_calls_total", &probe), 3.0);
        assert_eq!(
            counter(&after, "eddy_stage_events_in_total", &probe),
            sent + 1.0
        );
        assert_eq!(
            counter(&after, "eddy_stage_events_out_total", &probe),
            sent + 1.0
        );
        assert_eq!(
            counter(&after, "eddy_stage_events_dropped_total", &at("probe")),
            0.0
        );
        assert_eq!(
            counter(&after, "eddy_stage_failed_batches_total", &at("probe")),
            0.0
        );
        // The checked stage failed the spoiled batch and dead-lettered it.
        let checked = at("checked");
        assert_eq!(
            counter(&after, "eddy_stage_failed_batches_total", &checked),
            1.0
        );
        assert_eq!(
            counter(&after, "eddy_stage_dead_letters_total", &checked),
            1.0
        );
        assert_eq!(
            counter(&after, "eddy_stage_events_in_total", &checked),
            sent + 1.0
        );
        assert_eq!(
            counter(&after, "eddy_stage_events_out_total", &checked),
            sent
        );
        assert_eq!(
            counter(&after, "eddy_stage_quarantines_total", &checked),
            0.0
        );
        assert_eq!(counter(&after, "eddy_events_dead_lettered_total", &[]), 1.0);
        // The trap failed both batches it was given, passed their events
        // on and was quarantined at the second.
        let failing = at("failing");
        assert_eq!(
            counter(&after, "eddy_stage_failed_batches_total", &failing),
            2.0
        );
        assert_eq!(
            counter(&after, "eddy_stage_quarantines_total", &failing),
            1.0
        );
        assert_eq!(
            counter(&after, "eddy_stage_passed_through_total", &at("failing")),
            sent
        );
        assert_eq!(
            counter(&after, "eddy_stage_dead_letters_total", &at("failing")),
            0.0
        );
        // The pattern plugin classified every event; four of them (the
        // burst) met a step's condition.
        assert_eq!(
            counter(&after, "eddy_stage_events_in_total", &at("login-burst")),
            sent
        );
        assert_eq!(
            counter(&after, "eddy_stage_events_out_total", &at("login-burst")),
            4.0
        );
        // The alert plugin was handed the closed minute's two results.
        assert_eq!(
            counter(&after, "eddy_stage_events_in_total", &at("LatencyAnomaly")),
            2.0
        );
        // Each call is in the latency histogram, with the same labels.
        for (_, stage, _) in stages {
            let calls = counter(&after, "eddy_stage_calls_total", &at(stage));
            let h = one(&after, "eddy_stage_batch_duration_seconds", &at(stage)).unwrap();
            let Value::Histogram(buckets) = &h.value else {
                panic!("eddy_stage_batch_duration_seconds is not a histogram: {h:?}");
            };
            assert_eq!(buckets.len(), 20, "19 bounds and +Inf: {buckets:?}");
            let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
            assert_eq!(inf.count, calls, "{stage}: every call in +Inf");
            assert!(
                buckets.windows(2).all(|w| w[0].count <= w[1].count),
                "cumulative: {buckets:?}"
            );
            let count = one(
                &after,
                "eddy_stage_batch_duration_seconds_count",
                &at(stage),
            )
            .map(|s| value(&s.value));
            assert_eq!(count, Some(calls), "{stage}");
        }

        // Per plugin: lifecycle counters by plugin, the live version on
        // eddy_plugin_info, state keys.
        for plugin in [
            "metrics-probe",
            "bad-events",
            "trap",
            "login-burst",
            "zscore-anomaly",
        ] {
            let v = version(plugin);
            let info = one(&after, "eddy_plugin_info", &[("plugin", plugin)]).unwrap();
            assert!(
                matches!(info.value, Value::Gauge(x) if x == 1.0),
                "{info:?}"
            );
            assert_eq!(info.labels.get("version"), Some(v.as_str()));
            assert_eq!(
                label_names(info),
                BTreeSet::from(["plugin", "version", "kind", "release"])
            );
            for name in [
                "eddy_plugin_loads_total",
                "eddy_plugin_swaps_total",
                "eddy_plugin_rollbacks_total",
                "eddy_plugin_quarantines_total",
                "eddy_plugin_failures_total",
            ] {
                let s = one(&after, name, &[("plugin", plugin)]).unwrap();
                assert!(matches!(s.value, Value::Counter(_)), "{name}: {s:?}");
                assert_eq!(label_names(s), BTreeSet::from(["plugin"]), "{name}");
            }
            assert_eq!(
                counter(&after, "eddy_plugin_loads_total", &[("plugin", plugin)]),
                1.0
            );
            gauge(&after, "eddy_plugin_state_keys", &[("plugin", plugin)]);
        }
        assert_eq!(
            one(&after, "eddy_plugin_info", &[("plugin", "login-burst")])
                .unwrap()
                .labels
                .get("kind"),
            Some("pattern")
        );
        assert!(
            counter(
                &after,
                "eddy_plugin_quarantines_total",
                &[("plugin", "trap")]
            ) >= 1.0
        );
        assert!(counter(&after, "eddy_plugin_failures_total", &[("plugin", "trap")]) >= 1.0);

        // The plugin's own counters and gauge, names made Prometheus names.
        let probe = [("plugin", "metrics-probe")];
        assert_eq!(
            counter(&after, "eddy_plugin_metric_events_seen_total", &probe),
            sent + 1.0
        );
        assert_eq!(
            counter(&after, "eddy_plugin_metric_page_views_total", &probe),
            3.0
        );
        assert_eq!(
            gauge(&after, "eddy_plugin_metric_last_timestamp_ms", &probe),
            last_ts as f64
        );
        assert!(
            family(&after, "eddy_plugin_metric_events_seen_total")
                .iter()
                .all(|s| label_names(s) == BTreeSet::from(["plugin"]))
        );

        // Per channel.
        let events = [("channel", "events")];
        assert_eq!(
            counter(&after, "eddy_channel_messages_published_total", &events),
            sent
        );
        assert_eq!(
            counter(
                &after,
                "eddy_channel_messages_published_total",
                &[("channel", "patterns/login-burst")]
            ),
            1.0
        );
        assert_eq!(
            counter(&after, "eddy_channel_slow_client_closes_total", &events),
            1.0
        );
        assert_eq!(
            counter(
                &after,
                "eddy_channel_messages_published_total",
                &[("channel", "dead-letters")]
            ),
            1.0
        );
        assert_eq!(gauge(&after, "eddy_channel_subscribers", &events), 0.0);

        // Engine-wide counters end in _total; the old gauge is gone.
        assert_eq!(counter(&after, "eddy_events_published_total", &[]), sent);
        assert!(family(&after, "eddy_events_published").is_empty(), "{text}");
        assert!(!text.contains("eddy_ingest_duplicate_events "), "{text}");
        let Value::Histogram(_) = one(&after, "eddy_pipeline_batch_seconds", &[])
            .unwrap()
            .value
        else {
            panic!("eddy_pipeline_batch_seconds is not a histogram:\n{text}");
        };
    })
    .await
    .expect("the test took too long");
}

/// docs/grafana-dashboard.json is JSON a Grafana import takes (panels with
/// unique ids, a Prometheus data-source variable) and queries only
/// families docs/metrics.md documents.
#[test]
fn the_grafana_dashboard_queries_documented_families() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).unwrap(),
    )
    .expect("docs/grafana-dashboard.json is JSON");
    let docs = std::fs::read_to_string(root.join("docs/metrics.md")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    assert!(
        dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus")
    );
    let mut families = BTreeSet::new();
    for target in panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
    {
        let expr = target["expr"].as_str().unwrap();
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word == "ALERTS" || (word.starts_with("eddy_") && word != "eddy_plugin_metric_") {
                let family = word.strip_suffix("_bucket").unwrap_or(word);
                families.insert(family.to_owned());
            }
        }
    }
    assert!(families.len() > 20, "{families:?}");
    for family in &families {
        assert!(
            docs.contains(&format!("`{family}`")),
            "{family} is queried by the dashboard but not in docs/metrics.md"
        );
    }
}
