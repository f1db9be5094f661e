//! Alertmanager's `POST /api/v2/alerts`, as Prometheus's rule manager feeds
//! it (`rules/alerting.go` `sendAlerts`, `rules/manager.go` `SendAlerts`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::delivery::{NotifierStats, Target, lock};
use super::{DeliveryConfig, NotifyError, duration_text, rfc3339, wall_ms};
use crate::alert::{AlertEvent, AlertState};

/// Where and how to send alerts to an Alertmanager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// The Alertmanager's base URL (`http://host:9093`); alerts go to
    /// `{url}/api/v2/alerts`.
    pub url: String,
    /// How often an unchanged active (or resolved, still retained) alert is
    /// sent again; Prometheus's `--rules.alert.resend-delay`, default 1m.
    #[serde(with = "duration_text")]
    pub resend_delay: Duration,
    /// How often the rules are evaluated; with `resend_delay` it sets how
    /// long Alertmanager may keep an alert without hearing of it again:
    /// `endsAt = now + 4 × max(evaluation_interval, resend_delay)`.
    #[serde(with = "duration_text")]
    pub evaluation_interval: Duration,
    /// How long a resolved alert is re-sent (wall time after its resolution
    /// reached the notifier); Prometheus's `resolvedRetention`, 15m.
    #[serde(with = "duration_text")]
    pub resolved_retention: Duration,
    /// Alerts per POST at most (Prometheus's notifier batches 256).
    pub max_batch: usize,
    /// `generatorURL` of every alert (a link back to eddy); empty by default.
    pub generator_url: String,
    /// Outbox, retries, timeout, token.
    #[serde(flatten)]
    pub delivery: DeliveryConfig,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9093".to_owned(),
            resend_delay: Duration::from_secs(60),
            evaluation_interval: Duration::from_secs(60),
            resolved_retention: Duration::from_secs(15 * 60),
            max_batch: 256,
            generator_url: String::new(),
            delivery: DeliveryConfig::default(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    event: AlertEvent,
    /// Changed since last sent: send at the next pass.
    changed: bool,
    last_sent: Option<Instant>,
    /// When the resolution reached the notifier (for the retention).
    resolved_seen: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    config: AlertmanagerConfig,
    alerts: Mutex<BTreeMap<String, Entry>>,
    changed: Notify,
    target: Arc<Target>,
}

/// Sends alert events to one Alertmanager; see the [module docs](super).
#[derive(Debug)]
pub struct AlertmanagerNotifier {
    shared: Arc<Shared>,
    tasks: [JoinHandle<()>; 2],
}

impl AlertmanagerNotifier {
    /// Start the notifier's tasks on `runtime`.
    pub fn spawn(
        config: AlertmanagerConfig,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Self, NotifyError> {
        if config.max_batch == 0 {
            return Err(NotifyError::Setting {
                setting: "max_batch",
                must: "at least 1",
            });
        }
        if config.resend_delay.is_zero() {
            return Err(NotifyError::Setting {
                setting: "resend_delay",
                must: "more than 0",
            });
        }
        let url = format!("{}/api/v2/alerts", config.url.trim_end_matches('/'));
        let target = Target::new("alertmanager", &url, config.delivery.clone())?;
        let shared = Arc::new(Shared {
            config,
            alerts: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            target: target.clone(),
        });
        let tasks = [
            runtime.spawn(schedule(shared.clone())),
            runtime.spawn(target.run()),
        ];
        Ok(Self { shared, tasks })
    }

    /// Take alert events (any thread, never blocks on delivery). Pending
    /// alerts are not sent (as in Prometheus); no-data alerts are sent as
    /// active alerts.
    pub fn notify(&self, events: &[AlertEvent]) {
        let now = Instant::now();
        let mut any = false;
        {
            let mut alerts = lock(&self.shared.alerts);
            for event in events {
                if event.state == AlertState::Pending {
                    continue;
                }
                any = true;
                let resolved = event.state == AlertState::Resolved;
                let entry = alerts
                    .entry(event.fingerprint.clone())
                    .or_insert_with(|| Entry {
                        event: event.clone(),
                        changed: true,
                        last_sent: None,
                        resolved_seen: None,
                    });
                entry.event = event.clone();
                entry.changed = true;
                entry.resolved_seen = if resolved {
                    entry.resolved_seen.or(Some(now))
                } else {
                    None
                };
            }
        }
        if any {
            self.shared.changed.notify_one();
        }
    }

    /// Delivery counts.
    pub fn stats(&self) -> NotifierStats {
        self.shared.target.stats()
    }
}

impl Drop for AlertmanagerNotifier {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Queue what is due, then sleep until the next re-send or a change.
async fn schedule(shared: Arc<Shared>) {
    loop {
        let next = pass(&shared);
        match next {
            Some(at) => {
                tokio::select! {
                    () = shared.changed.notified() => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => shared.changed.notified().await,
        }
    }
}

/// One pass over the table: queue changed alerts and those whose re-send is
/// due, forget resolved ones past retention; returns when the next is due.
fn pass(shared: &Shared) -> Option<Instant> {
    let config = &shared.config;
    let now = Instant::now();
    // Prometheus: allow for two evaluation or send failures before
    // Alertmanager considers the alert gone.
    let valid_for = 4 * config.evaluation_interval.max(config.resend_delay);
    let valid_until =
        wall_ms().saturating_add(i64::try_from(valid_for.as_millis()).unwrap_or(i64::MAX));
    let mut batch: Vec<Value> = Vec::new();
    let mut next: Option<Instant> = None;
    {
        let mut alerts = lock(&shared.alerts);
        alerts.retain(|_, e| {
            e.resolved_seen
                .is_none_or(|seen| now.duration_since(seen) <= config.resolved_retention)
        });
        for entry in alerts.values_mut() {
            let due = entry.changed
                || entry
                    .last_sent
                    .is_none_or(|sent| now.duration_since(sent) >= config.resend_delay);
            if due {
                entry.changed = false;
                entry.last_sent = Some(now);
                batch.push(payload(&entry.event, valid_until, &config.generator_url));
            }
            let again = entry.last_sent.unwrap_or(now) + config.resend_delay;
            next = Some(next.map_or(again, |n| n.min(again)));
        }
    }
    for chunk in batch.chunks(config.max_batch) {
        match serde_json::to_vec(chunk) {
            Ok(body) => shared.target.enqueue(body),
            Err(e) => tracing::warn!(error = %e, "encoding alerts for Alertmanager"),
        }
    }
    next
}

/// One alert as `/api/v2/alerts` takes it (`postableAlert`).
fn payload(event: &AlertEvent, valid_until: i64, generator_url: &str) -> Value {
    let ends_at = match (event.state, event.ends_at) {
        (AlertState::Resolved, Some(end)) => end,
        _ => valid_until,
    };
    json!({
        "labels": event.labels,
        "annotations": event.annotations,
        "startsAt": rfc3339(event.starts_at),
        "endsAt": rfc3339(ends_at),
        "generatorURL": generator_url,
    })
}
