//! Delivery of [`AlertEvent`]s off the engine thread.
//!
//! Two notifiers, each a pair of tokio tasks per target:
//! - [`AlertmanagerNotifier`] posts to Alertmanager's `/api/v2/alerts` the way
//!   Prometheus does: active alerts re-sent every `resend_delay` with
//!   `endsAt = now + 4 × max(evaluation_interval, resend_delay)`, resolved
//!   ones with their end time, re-sent until `resolved_retention` passed.
//! - [`WebhookNotifier`] posts Alertmanager's v4 webhook JSON per group of
//!   alerts: on firing, on resolve, and every `repeat_interval` while firing.
//!
//! [`Notifiers`] starts every target of a [`NotifyConfig`] and fans each
//! batch of events out to them.
//!
//! All take events through a `notify(&[AlertEvent])` that only updates a
//! table under a short lock and wakes a task: it never waits on the network
//! and needs no runtime context, so the engine thread can call it. What is
//! ready to send goes into a bounded outbox per target (the oldest message
//! is dropped when full, and counted); a delivery task posts each message
//! with a timeout, retrying with exponential backoff and jitter. Every
//! message ends up sent, failed (logged with the URL) or dropped, each
//! counted in [`NotifierStats`] and the `metrics` counters
//! `eddy_alert_notifications_{sent,failed,dropped,retried}_total{kind, target}`.
//!
//! Dropping a notifier stops its tasks; messages still in its outbox are
//! abandoned (see [`NotifierStats::queued`]).

mod alertmanager;
mod delivery;
mod webhook;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use alertmanager::{AlertmanagerConfig, AlertmanagerNotifier};
pub use delivery::NotifierStats;
pub use webhook::{WebhookConfig, WebhookNotifier};

use super::AlertEvent;

/// Settings every notification target shares: outbox bound, retries,
/// timeouts, authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Messages waiting for delivery, at most; past it the oldest is dropped
    /// (counted). 1,024 posts hold 262,144 Alertmanager alerts at 256 each.
    pub outbox_capacity: usize,
    /// Deadline of one HTTP request (Prometheus's notifier default, 10 s).
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Attempts per message, the first included, before it counts as failed.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled each time, up to `max_backoff`,
    /// with jitter (a random half of it is taken off).
    #[serde(with = "duration_text")]
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    #[serde(with = "duration_text")]
    pub max_backoff: Duration,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub bearer_token: Option<String>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            outbox_capacity: 1024,
            timeout: Duration::from_secs(10),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            bearer_token: None,
        }
    }
}

/// Every notification target of a deployment, as a config section would
/// declare them (`[[alertmanagers]]`, `[[webhooks]]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Alertmanagers, each sent every alert.
    pub alertmanagers: Vec<AlertmanagerConfig>,
    /// Webhooks, each sent every alert.
    pub webhooks: Vec<WebhookConfig>,
}

/// All targets of a [`NotifyConfig`] behind one `notify`: what the engine's
/// driver hands each batch of [`AlertEvent`]s to.
#[derive(Debug, Default)]
pub struct Notifiers {
    alertmanagers: Vec<AlertmanagerNotifier>,
    webhooks: Vec<WebhookNotifier>,
}

impl Notifiers {
    /// Start every target's tasks on `runtime`; fails on the first target
    /// that cannot start (the others are stopped).
    pub fn spawn(
        config: &NotifyConfig,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Self, NotifyError> {
        let alertmanagers = config
            .alertmanagers
            .iter()
            .map(|c| AlertmanagerNotifier::spawn(c.clone(), runtime))
            .collect::<Result<_, _>>()?;
        let webhooks = config
            .webhooks
            .iter()
            .map(|c| WebhookNotifier::spawn(c.clone(), runtime))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            alertmanagers,
            webhooks,
        })
    }

    /// Hand events to every target (never blocks on delivery).
    pub fn notify(&self, events: &[AlertEvent]) {
        if events.is_empty() {
            return;
        }
        for target in &self.alertmanagers {
            target.notify(events);
        }
        for target in &self.webhooks {
            target.notify(events);
        }
    }

    /// Delivery counts per target, Alertmanagers first, in config order.
    pub fn stats(&self) -> Vec<NotifierStats> {
        self.alertmanagers
            .iter()
            .map(AlertmanagerNotifier::stats)
            .chain(self.webhooks.iter().map(WebhookNotifier::stats))
            .collect()
    }
}

/// Why a notifier could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The target URL does not parse or is not http(s).
    #[error("alert notification target {url:?} is not an http(s) URL: {reason}")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built (TLS back-end, resolver).
    #[error("building the HTTP client for alert notifications: {0}")]
    Client(#[from] reqwest::Error),
    /// A setting is out of range.
    #[error("alert notification setting {setting} must be {must}")]
    Setting {
        /// The setting's name.
        setting: &'static str,
        /// What it must be.
        must: &'static str,
    },
}

/// Durations in config as human text (`"1m"`, `"500ms"`).
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// An RFC 3339 time (UTC, milliseconds) for epoch milliseconds, as
/// Alertmanager's API and webhooks write them.
pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Wall time now in epoch milliseconds (delivery runs outside the
/// deterministic engine, so reading the clock is right here).
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
