//! Notifiers against real local HTTP receivers (axum on 127.0.0.1:0).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};

use super::*;
use crate::alert::{AlertEvent, AlertState, fingerprint};

/// What a receiver got: arrival, path, `Authorization`, body, answer.
#[derive(Debug, Clone)]
struct Got {
    at: Instant,
    path: String,
    auth: Option<String>,
    body: Value,
    status: u16,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    /// Statuses to answer with first; 200 once they run out.
    answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start(answers: &[u16]) -> (Self, String) {
        let receiver = Self::default();
        receiver.answers.lock().unwrap().extend(answers);
        let app = axum::Router::new()
            .fallback(axum::routing::post(record))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Wait (at most 10 s) until `n` requests arrived; return them all.
    async fn wait_for(&self, n: usize) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} requests arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn record(
    State(receiver): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let status = receiver.answers.lock().unwrap().pop_front().unwrap_or(200);
    receiver.got.lock().unwrap().push(Got {
        at: Instant::now(),
        path: uri.path().to_owned(),
        auth: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: serde_json::from_str(&body).unwrap(),
        status,
    });
    StatusCode::from_u16(status).unwrap()
}

const T0: i64 = 1_700_000_000_000; // 2023-11-14T22:13:20Z

fn event(path: &str, state: AlertState) -> AlertEvent {
    let labels = BTreeMap::from([
        ("alertname".to_owned(), "SlowPage".to_owned()),
        ("path".to_owned(), path.to_owned()),
        ("severity".to_owned(), "page".to_owned()),
    ]);
    let resolved = state == AlertState::Resolved;
    AlertEvent {
        rule: "SlowPage".to_owned(),
        fingerprint: fingerprint(&labels),
        annotations: BTreeMap::from([("summary".to_owned(), format!("{path} is slow"))]),
        labels,
        state,
        value: 2.5,
        active_at: T0 - 60_000,
        fired_at: Some(T0),
        resolved_at: resolved.then_some(T0 + 60_000),
        starts_at: T0,
        ends_at: resolved.then_some(T0 + 60_000),
    }
}

fn fast_delivery() -> DeliveryConfig {
    DeliveryConfig {
        timeout: Duration::from_secs(2),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        ..DeliveryConfig::default()
    }
}

fn ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_gets_prometheus_shaped_alerts_resent_until_resolved() {
    let (receiver, url) = Receiver::start(&[]).await;
    let notifier = AlertmanagerNotifier::spawn(
        AlertmanagerConfig {
            url: format!("{url}/"),
            resend_delay: Duration::from_millis(300),
            evaluation_interval: Duration::from_millis(100),
            resolved_retention: Duration::from_millis(700),
            generator_url: "http://eddy.example/alerts".to_owned(),
            delivery: DeliveryConfig {
                bearer_token: Some("s3cret".to_owned()),
                ..fast_delivery()
            },
            ..AlertmanagerConfig::default()
        },
        &tokio::runtime::Handle::current(),
    )
    .unwrap();

    // Pending alerts are not sent.
    notifier.notify(&[event("/cart", AlertState::Pending)]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(receiver.got().is_empty());

    notifier.notify(&[event("/cart", AlertState::Firing)]);
    let got = receiver.wait_for(1).await;
    let sent_wall = super::wall_ms();
    let first = &got[0];
    assert_eq!(first.path, "/api/v2/alerts");
    assert_eq!(first.auth.as_deref(), Some("Bearer s3cret"));
    let alerts = first.body.as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    assert_eq!(
        alert["labels"],
        json!({"alertname": "SlowPage", "path": "/cart", "severity": "page"})
    );
    assert_eq!(alert["annotations"], json!({"summary": "/cart is slow"}));
    assert_eq!(alert["startsAt"], "2023-11-14T22:13:20.000Z");
    assert_eq!(alert["generatorURL"], "http://eddy.example/alerts");
    // endsAt = now + 4 × max(100ms, 300ms).
    let valid_for = ms(alert["endsAt"].as_str().unwrap()) - sent_wall;
    assert!(
        (900..=1300).contains(&valid_for),
        "endsAt - now = {valid_for} ms"
    );

    // Re-sent every resend_delay while active.
    let got = receiver.wait_for(3).await;
    for pair in got.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(280), "re-sent after {gap:?}");
        assert!(gap <= Duration::from_millis(1000), "re-sent after {gap:?}");
    }
    assert_eq!(got[2].body[0]["labels"]["path"], "/cart");

    // The resolution goes out at once, with its end time, and is re-sent
    // until the retention passes.
    let before = receiver.got().len();
    let resolved_at = Instant::now();
    notifier.notify(&[event("/cart", AlertState::Resolved)]);
    let got = receiver.wait_for(before + 1).await;
    let resolution = &got[before];
    assert!(resolution.at - resolved_at < Duration::from_millis(250));
    assert_eq!(resolution.body[0]["endsAt"], "2023-11-14T22:14:20.000Z");
    let got = receiver.wait_for(before + 2).await;
    assert_eq!(
        got[before + 1].body[0]["endsAt"],
        "2023-11-14T22:14:20.000Z"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let settled = receiver.got().len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        receiver.got().len(),
        settled,
        "forgotten after the retention"
    );
    assert!(settled <= before + 4);
    let stats = notifier.stats();
    assert_eq!(stats.sent, settled as u64);
    assert_eq!((stats.failed, stats.dropped, stats.queued), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_notifies_v4_json_on_firing_repeat_and_resolve() {
    let (receiver, url) = Receiver::start(&[]).await;
    let notifier = WebhookNotifier::spawn(
        WebhookConfig {
            url: format!("{url}/hook"),
            receiver: "ops".to_owned(),
            repeat_interval: Duration::from_millis(400),
            external_url: "http://eddy.example".to_owned(),
            delivery: fast_delivery(),
            ..WebhookConfig::default()
        },
        &tokio::runtime::Handle::current(),
    )
    .unwrap();

    notifier.notify(&[
        event("/cart", AlertState::Firing),
        event("/home", AlertState::Firing),
    ]);
    let got = receiver.wait_for(1).await;
    let body = &got[0].body;
    assert_eq!(got[0].path, "/hook");
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "ops");
    assert_eq!(body["groupKey"], "{}:{alertname=\"SlowPage\"}");
    assert_eq!(body["groupLabels"], json!({"alertname": "SlowPage"}));
    assert_eq!(
        body["commonLabels"],
        json!({"alertname": "SlowPage", "severity": "page"})
    );
    assert_eq!(body["commonAnnotations"], json!({}));
    assert_eq!(body["externalURL"], "http://eddy.example");
    assert_eq!(body["truncatedAlerts"], 0);
    let alerts = body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0]["status"], "firing");
    assert_eq!(alerts[0]["startsAt"], "2023-11-14T22:13:20.000Z");
    assert_eq!(alerts[0]["endsAt"], "0001-01-01T00:00:00Z");
    let cart = event("/cart", AlertState::Firing);
    assert!(
        alerts
            .iter()
            .any(|a| a["fingerprint"] == cart.fingerprint.as_str())
    );

    // Repeated while firing.
    let got = receiver.wait_for(2).await;
    assert!(got[1].at - got[0].at >= Duration::from_millis(380));
    assert_eq!(got[1].body["alerts"].as_array().unwrap().len(), 2);

    // One resolves: the group is still firing and carries the resolution.
    let before = receiver.got().len();
    notifier.notify(&[event("/cart", AlertState::Resolved)]);
    let got = receiver.wait_for(before + 1).await;
    let body = &got[before].body;
    assert_eq!(body["status"], "firing");
    let resolved: Vec<&Value> = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == "resolved")
        .collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0]["labels"]["path"], "/cart");
    assert_eq!(resolved[0]["endsAt"], "2023-11-14T22:14:20.000Z");

    // The last resolves: a resolved notification, then silence.
    let before = receiver.got().len();
    notifier.notify(&[event("/home", AlertState::Resolved)]);
    let got = receiver.wait_for(before + 1).await;
    let body = &got[before].body;
    assert_eq!(body["status"], "resolved");
    assert_eq!(body["alerts"].as_array().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.got().len(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_truncates_past_max_alerts() {
    let (receiver, url) = Receiver::start(&[]).await;
    let notifier = WebhookNotifier::spawn(
        WebhookConfig {
            url,
            max_alerts: 1,
            delivery: fast_delivery(),
            ..WebhookConfig::default()
        },
        &tokio::runtime::Handle::current(),
    )
    .unwrap();
    notifier.notify(&[
        event("/a", AlertState::Firing),
        event("/b", AlertState::Firing),
        event("/c", AlertState::Firing),
    ]);
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].body["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(got[0].body["truncatedAlerts"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_the_notification_once() {
    let (receiver, url) = Receiver::start(&[500, 503]).await;
    let notifier = WebhookNotifier::spawn(
        WebhookConfig {
            url,
            delivery: fast_delivery(),
            ..WebhookConfig::default()
        },
        &tokio::runtime::Handle::current(),
    )
    .unwrap();
    notifier.notify(&[event("/cart", AlertState::Firing)]);
    let got = receiver.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_later = receiver.got();
    assert_eq!(got_later.len(), 3, "no more attempts once accepted");
    let statuses: Vec<u16> = got.iter().map(|g| g.status).collect();
    assert_eq!(statuses, [500, 503, 200]);
    // The same notification each time.
    assert_eq!(got[0].body, got[2].body);
    let stats = notifier.stats();
    assert_eq!(
        (stats.sent, stats.retried, stats.failed, stats.dropped),
        (1, 2, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_receiver_leaves_the_outbox_bounded_and_counts_everything() {
    // A port nothing listens on: connections are refused.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let notifier = Arc::new(
        WebhookNotifier::spawn(
            WebhookConfig {
                url: format!("http://127.0.0.1:{port}/hook"),
                group_by: vec!["path".to_owned()],
                delivery: DeliveryConfig {
                    outbox_capacity: 4,
                    max_attempts: 2,
                    initial_backoff: Duration::from_millis(10),
                    max_backoff: Duration::from_millis(10),
                    timeout: Duration::from_millis(500),
                    bearer_token: None,
                },
                ..WebhookConfig::default()
            },
            &tokio::runtime::Handle::current(),
        )
        .unwrap(),
    );
    // 200 groups, notified from a plain thread (no runtime context), one
    // event at a time: the caller never waits on delivery.
    let caller = notifier.clone();
    let took = std::thread::spawn(move || {
        let started = Instant::now();
        for i in 0..200 {
            caller.notify(&[event(&format!("/p{i}"), AlertState::Firing)]);
        }
        started.elapsed()
    })
    .join()
    .unwrap();
    assert!(
        took < Duration::from_millis(200),
        "200 notify calls took {took:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = notifier.stats();
        assert!(stats.queued <= 4, "outbox grew to {}", stats.queued);
        if stats.queued == 0 && stats.failed + stats.dropped == 200 {
            assert!(stats.failed >= 1);
            assert!(stats.dropped >= 150, "{stats:?}");
            assert_eq!(stats.retried, stats.failed, "one retry each");
            assert_eq!(stats.sent, 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all accounted for: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn bad_targets_are_refused_with_the_reason() {
    let runtime = tokio::runtime::Handle::current();
    let err = WebhookNotifier::spawn(
        WebhookConfig {
            url: "ftp://example".to_owned(),
            ..WebhookConfig::default()
        },
        &runtime,
    )
    .unwrap_err();
    assert!(err.to_string().contains("ftp://example"), "{err}");
    let err = AlertmanagerNotifier::spawn(
        AlertmanagerConfig {
            delivery: DeliveryConfig {
                outbox_capacity: 0,
                ..DeliveryConfig::default()
            },
            ..AlertmanagerConfig::default()
        },
        &runtime,
    )
    .unwrap_err();
    assert!(err.to_string().contains("outbox_capacity"), "{err}");
}

#[test]
fn config_reads_from_toml_with_human_durations() {
    let config: AlertmanagerConfig = toml::from_str(
        "url = \"http://am:9093\"\nresend_delay = \"30s\"\ntimeout = \"2s\"\nbearer_token = \"t\"\n",
    )
    .unwrap();
    assert_eq!(config.resend_delay, Duration::from_secs(30));
    assert_eq!(config.delivery.timeout, Duration::from_secs(2));
    assert_eq!(config.delivery.bearer_token.as_deref(), Some("t"));
    assert_eq!(config.evaluation_interval, Duration::from_secs(60));
    let config: WebhookConfig =
        toml::from_str("url = \"http://hook\"\nrepeat_interval = \"1h\"\n").unwrap();
    assert_eq!(config.repeat_interval, Duration::from_secs(3600));
    assert_eq!(config.group_by, ["alertname"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifiers_from_one_config_section_reach_every_target() {
    let (am, am_url) = Receiver::start(&[]).await;
    let (hook, hook_url) = Receiver::start(&[]).await;
    let config: NotifyConfig = toml::from_str(&format!(
        "[[alertmanagers]]\nurl = \"{am_url}\"\n\n[[webhooks]]\nurl = \"{hook_url}/hook\"\nreceiver = \"ops\"\n"
    ))
    .unwrap();
    let notifiers = Notifiers::spawn(&config, &tokio::runtime::Handle::current()).unwrap();
    notifiers.notify(&[event("/cart", AlertState::Firing)]);
    let got = am.wait_for(1).await;
    assert_eq!(got[0].path, "/api/v2/alerts");
    let got = hook.wait_for(1).await;
    assert_eq!(got[0].body["receiver"], "ops");
    let stats = notifiers.stats();
    assert_eq!(stats.len(), 2);
}
