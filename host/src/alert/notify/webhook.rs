//! Webhooks in Alertmanager's v4 webhook JSON, so receivers written for
//! Alertmanager take eddy's alerts unchanged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::delivery::{NotifierStats, Target, lock};
use super::{DeliveryConfig, NotifyError, duration_text, rfc3339};
use crate::alert::{AlertEvent, AlertState};

/// Alertmanager writes this `endsAt` for alerts with no end yet.
const NO_END: &str = "0001-01-01T00:00:00Z";

/// Where and how to post webhook notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL posted to.
    pub url: String,
    /// The payload's `receiver`.
    pub receiver: String,
    /// Labels alerts are grouped by, one notification per group
    /// (Alertmanager's `group_by`; default `["alertname"]`).
    pub group_by: Vec<String>,
    /// How often a group with firing alerts is notified again although
    /// nothing changed (Alertmanager's `repeat_interval`, default 4h).
    #[serde(with = "duration_text")]
    pub repeat_interval: Duration,
    /// Alerts per notification at most, 0 for all (Alertmanager's
    /// `max_alerts`); the rest are counted in `truncatedAlerts`.
    pub max_alerts: usize,
    /// The payload's `externalURL` (a link back to eddy).
    pub external_url: String,
    /// `generatorURL` of every alert.
    pub generator_url: String,
    /// Outbox, retries, timeout, token.
    #[serde(flatten)]
    pub delivery: DeliveryConfig,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            receiver: "eddy".to_owned(),
            group_by: vec!["alertname".to_owned()],
            repeat_interval: Duration::from_secs(4 * 3600),
            max_alerts: 0,
            external_url: String::new(),
            generator_url: String::new(),
            delivery: DeliveryConfig::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Group {
    labels: BTreeMap<String, String>,
    /// Latest event per alert fingerprint; resolved ones leave after the
    /// notification that carries their resolution.
    alerts: BTreeMap<String, AlertEvent>,
    changed: bool,
    last_sent: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    config: WebhookConfig,
    groups: Mutex<BTreeMap<String, Group>>,
    changed: Notify,
    target: Arc<Target>,
}

/// Posts webhook notifications to one URL; see the [module docs](super).
#[derive(Debug)]
pub struct WebhookNotifier {
    shared: Arc<Shared>,
    tasks: [JoinHandle<()>; 2],
}

impl WebhookNotifier {
    /// Start the notifier's tasks on `runtime`.
    pub fn spawn(
        config: WebhookConfig,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Self, NotifyError> {
        if config.repeat_interval.is_zero() {
            return Err(NotifyError::Setting {
                setting: "repeat_interval",
                must: "more than 0",
            });
        }
        let target = Target::new("webhook", &config.url, config.delivery.clone())?;
        let shared = Arc::new(Shared {
            config,
            groups: Mutex::new(BTreeMap::new()),
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
    /// alerts are not notified; no-data alerts count as firing.
    pub fn notify(&self, events: &[AlertEvent]) {
        let mut any = false;
        {
            let mut groups = lock(&self.shared.groups);
            for event in events {
                if event.state == AlertState::Pending {
                    continue;
                }
                any = true;
                let labels: BTreeMap<String, String> = self
                    .shared
                    .config
                    .group_by
                    .iter()
                    .filter_map(|k| event.labels.get(k).map(|v| (k.clone(), v.clone())))
                    .collect();
                let group = groups.entry(group_key(&labels)).or_default();
                group.labels = labels;
                group
                    .alerts
                    .insert(event.fingerprint.clone(), event.clone());
                group.changed = true;
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

impl Drop for WebhookNotifier {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Alertmanager's group key for the root route: `{}:{name="value",...}`.
fn group_key(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{}}:{{{}}}", pairs.join(", "))
}

async fn schedule(shared: Arc<Shared>) {
    loop {
        match pass(&shared) {
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

/// Queue a notification for each group that changed or whose repeat is due;
/// returns when the next repeat is due.
fn pass(shared: &Shared) -> Option<Instant> {
    let config = &shared.config;
    let now = Instant::now();
    let mut bodies: Vec<Value> = Vec::new();
    let mut next: Option<Instant> = None;
    {
        let mut groups = lock(&shared.groups);
        for (key, group) in groups.iter_mut() {
            let firing = group
                .alerts
                .values()
                .any(|a| a.state != AlertState::Resolved);
            let repeat_due = firing
                && group
                    .last_sent
                    .is_some_and(|sent| now.duration_since(sent) >= config.repeat_interval);
            if group.changed || repeat_due {
                group.changed = false;
                group.last_sent = Some(now);
                bodies.push(payload(config, key, group, firing));
                group.alerts.retain(|_, a| a.state != AlertState::Resolved);
            }
            if !group.alerts.is_empty() {
                let again = group.last_sent.unwrap_or(now) + config.repeat_interval;
                next = Some(next.map_or(again, |n| n.min(again)));
            }
        }
        groups.retain(|_, g| !g.alerts.is_empty());
    }
    for body in bodies {
        match serde_json::to_vec(&body) {
            Ok(body) => shared.target.enqueue(body),
            Err(e) => tracing::warn!(error = %e, "encoding a webhook notification"),
        }
    }
    next
}

/// The v4 webhook body for one group: firing alerts first, then resolved.
fn payload(config: &WebhookConfig, key: &str, group: &Group, firing: bool) -> Value {
    let mut alerts: Vec<&AlertEvent> = group.alerts.values().collect();
    alerts.sort_by_key(|a| a.state == AlertState::Resolved);
    let total = alerts.len();
    if config.max_alerts > 0 {
        alerts.truncate(config.max_alerts);
    }
    let common = |pick: fn(&AlertEvent) -> &BTreeMap<String, String>| -> BTreeMap<String, String> {
        let mut iter = alerts.iter();
        let mut common = iter.next().map(|a| pick(a).clone()).unwrap_or_default();
        for alert in iter {
            common.retain(|k, v| pick(alert).get(k) == Some(v));
        }
        common
    };
    let items: Vec<Value> = alerts
        .iter()
        .map(|a| {
            let resolved = a.state == AlertState::Resolved;
            json!({
                "status": if resolved { "resolved" } else { "firing" },
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at),
                "endsAt": match (resolved, a.ends_at) {
                    (true, Some(end)) => rfc3339(end),
                    _ => NO_END.to_owned(),
                },
                "generatorURL": config.generator_url,
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": key,
        "truncatedAlerts": total - items.len(),
        "status": if firing { "firing" } else { "resolved" },
        "receiver": config.receiver,
        "groupLabels": group.labels,
        "commonLabels": common(|a| &a.labels),
        "commonAnnotations": common(|a| &a.annotations),
        "externalURL": config.external_url,
        "alerts": items,
    })
}
