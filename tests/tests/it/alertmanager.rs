//! eddy's alerts through a real Prometheus Alertmanager: the lifecycle makes
//! the events, the notifier posts them to Alertmanager's `/api/v2/alerts`,
//! and Alertmanager's webhook receiver (a local HTTP server here) must get
//! the grouped firing notification and then the resolved one.
//!
//! Needs Debian's `prometheus-alertmanager` (installed by `scripts/setup`);
//! without it the test fails and says so — it is never skipped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eddy::alert::notify::{AlertmanagerConfig, AlertmanagerNotifier, DeliveryConfig};
use eddy::alert::{AlertState, RuleSpec, RuleState, Sample};
use serde_json::Value;
use tokio::sync::mpsc;

/// The whole exchange, Alertmanager's start included, fits in this.
const BUDGET: Duration = Duration::from_secs(50);

pub(crate) fn alertmanager_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus-alertmanager"))
            .find(|p| p.is_file())
    });
    let found = on_path.or_else(|| {
        let debian = PathBuf::from("/usr/bin/prometheus-alertmanager");
        debian.is_file().then_some(debian)
    });
    match found {
        Some(path) => path,
        None => panic!(
            "prometheus-alertmanager not found on PATH or at /usr/bin/prometheus-alertmanager; \
             run scripts/setup, or install it with: apt-get install -y prometheus-alertmanager"
        ),
    }
}

/// A child process killed when the test ends, however it ends.
pub(crate) struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Milliseconds of an RFC 3339 UTC time as Alertmanager writes it
/// (`2026-01-02T03:04:05.678Z`, any number of fraction digits).
fn rfc3339_ms(text: &str) -> i64 {
    let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    let millis: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1000) + millis
}

/// The webhook receiver: every body posted to `/hook`, in order.
pub(crate) async fn receiver() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_str::<Value>(&body).unwrap());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

pub(crate) fn start_alertmanager(dir: &std::path::Path, hook: &str) -> (Running, String) {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: eddy-test\n  group_by: [alertname]\n  group_wait: 1s\n  \
             group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: eddy-test\n    webhook_configs:\n      - url: {hook}\n        \
             send_resolved: true\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let log = dir.join("alertmanager.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(alertmanager_binary())
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("starting prometheus-alertmanager");
    (Running { child, log }, format!("http://127.0.0.1:{port}"))
}

pub(crate) async fn wait_ready(am: &mut Running, url: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{url}/-/ready")).send().await
            && r.status().is_success()
        {
            return;
        }
        if let Some(status) = am.child.try_wait().unwrap() {
            panic!("alertmanager exited ({status}):\n{}", am.log());
        }
        assert!(
            Instant::now() < deadline,
            "alertmanager not ready at {url}:\n{}",
            am.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next webhook notification whose `status` is `status`.
pub(crate) async fn next_with_status(
    rx: &mut mpsc::UnboundedReceiver<Value>,
    status: &str,
    am: &Running,
) -> Value {
    next_with_alerts(rx, status, 1.., am).await
}

/// The next webhook notification whose `status` is `status` and that
/// carries `count` alerts.
///
/// Alertmanager flushes a new group at once when its first alert started
/// more than `group_wait` ago, so a group of alerts posted together may
/// first be notified with only some of them; the group's next flush
/// carries them all.
async fn next_with_alerts(
    rx: &mut mpsc::UnboundedReceiver<Value>,
    status: &str,
    count: impl std::ops::RangeBounds<usize>,
    am: &Running,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(body))
                if body["status"] == status
                    && body["alerts"]
                        .as_array()
                        .is_some_and(|a| count.contains(&a.len())) =>
            {
                return body;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!(
                "no {status} notification with the expected alerts from alertmanager \
                 within 20 s:\n{}",
                am.log()
            ),
        }
    }
}

fn sample(path: &str, value: f64, active: bool) -> Sample {
    Sample {
        labels: BTreeMap::from([("path".to_owned(), path.to_owned())]),
        value,
        active,
        annotations: BTreeMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_groups_eddys_alerts_and_delivers_their_resolution() {
    tokio::time::timeout(BUDGET, exchange())
        .await
        .expect("the Alertmanager exchange took longer than its budget");
}

async fn exchange() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, mut notifications) = receiver().await;
    let (mut am, am_url) = start_alertmanager(dir.path(), &hook);
    wait_ready(&mut am, &am_url).await;

    let notifier = AlertmanagerNotifier::spawn(
        AlertmanagerConfig {
            url: am_url.clone(),
            resend_delay: Duration::from_secs(1),
            evaluation_interval: Duration::from_secs(1),
            generator_url: "http://eddy.test/alerts".to_owned(),
            delivery: DeliveryConfig {
                initial_backoff: Duration::from_millis(50),
                timeout: Duration::from_secs(5),
                ..DeliveryConfig::default()
            },
            ..AlertmanagerConfig::default()
        },
        &tokio::runtime::Handle::current(),
    )
    .unwrap();

    // The rule, evaluated on event time a little in the past (Alertmanager
    // only treats an alert as resolved once its endsAt has passed).
    let mut spec = RuleSpec::new("CheckoutSlow");
    spec.labels = BTreeMap::from([("severity".to_owned(), "page".to_owned())]);
    spec.annotations = BTreeMap::from([(
        "summary".to_owned(),
        "{{ $labels.path }} p95 is {{ $value }}s".to_owned(),
    )]);
    let mut state = RuleState::new();
    let t0 = now_ms() - 10_000;
    let mut firing = Vec::new();
    state.evaluate(
        &spec,
        t0,
        &[sample("/cart", 2.5, true), sample("/pay", 3.0, true)],
        &mut firing,
    );
    assert_eq!(firing.len(), 2);
    assert!(firing.iter().all(|e| e.state == AlertState::Firing));
    notifier.notify(&firing);

    let body = next_with_alerts(&mut notifications, "firing", 2..=2, &am).await;
    assert_eq!(body["version"], "4");
    assert_eq!(body["receiver"], "eddy-test");
    assert_eq!(body["groupKey"], "{}:{alertname=\"CheckoutSlow\"}");
    assert_eq!(body["groupLabels"]["alertname"], "CheckoutSlow");
    assert_eq!(body["commonLabels"]["severity"], "page");
    let alerts = body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2, "both alerts in one group: {body}");
    for event in &firing {
        let path = &event.labels["path"];
        let alert = alerts
            .iter()
            .find(|a| a["labels"]["path"] == path.as_str())
            .unwrap_or_else(|| panic!("no alert for {path}: {body}"));
        assert_eq!(alert["status"], "firing");
        assert_eq!(alert["labels"]["alertname"], "CheckoutSlow");
        assert_eq!(
            alert["annotations"]["summary"],
            event.annotations["summary"]
        );
        // Alertmanager's own fingerprint of the labels is eddy's.
        assert_eq!(alert["fingerprint"], event.fingerprint.as_str());
        assert_eq!(rfc3339_ms(alert["startsAt"].as_str().unwrap()), t0);
        assert_eq!(alert["generatorURL"], "http://eddy.test/alerts");
    }
    assert_eq!(
        alerts
            .iter()
            .find(|a| a["labels"]["path"] == "/cart")
            .unwrap()["annotations"]["summary"],
        "/cart p95 is 2.5s"
    );

    // The condition clears: the rule resolves both, Alertmanager tells the
    // receiver.
    let mut resolved = Vec::new();
    state.evaluate(
        &spec,
        t0 + 5_000,
        &[sample("/cart", 0.2, false), sample("/pay", 0.3, false)],
        &mut resolved,
    );
    assert_eq!(resolved.len(), 2);
    assert!(resolved.iter().all(|e| e.state == AlertState::Resolved));
    notifier.notify(&resolved);

    let body = next_with_alerts(&mut notifications, "resolved", 2..=2, &am).await;
    let alerts = body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2, "{body}");
    for alert in alerts {
        assert_eq!(alert["status"], "resolved");
        assert_eq!(rfc3339_ms(alert["endsAt"].as_str().unwrap()), t0 + 5_000);
    }
    let stats = notifier.stats();
    assert!(stats.sent >= 2, "{stats:?}");
    assert_eq!((stats.failed, stats.dropped), (0, 0));
}
