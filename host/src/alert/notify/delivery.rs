//! The part both notifiers share: a bounded outbox of ready-to-post JSON
//! bodies and the task that posts them with retries.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::{DeliveryConfig, NotifyError};

/// Counts for one notification target since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifierStats {
    /// Messages the target accepted (2xx).
    pub sent: u64,
    /// Messages given up on: attempts exhausted or refused with a 4xx.
    pub failed: u64,
    /// Messages dropped from a full outbox before being tried.
    pub dropped: u64,
    /// Attempts repeated after a failure.
    pub retried: u64,
    /// Messages waiting in the outbox now.
    pub queued: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retried: AtomicU64,
}

/// Lock a mutex whose data stays consistent even if a holder panicked (the
/// tables here are replaced entry by entry).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One target: its URL, client, bounded outbox and counters.
#[derive(Debug)]
pub(super) struct Target {
    kind: &'static str,
    url: reqwest::Url,
    client: reqwest::Client,
    config: DeliveryConfig,
    outbox: Mutex<VecDeque<Vec<u8>>>,
    ready: Notify,
    counters: Counters,
}

impl Target {
    /// A target posting to `url`; `kind` labels its metrics.
    pub(super) fn new(
        kind: &'static str,
        url: &str,
        config: DeliveryConfig,
    ) -> Result<Arc<Self>, NotifyError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| NotifyError::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(NotifyError::InvalidUrl {
                url: url.to_owned(),
                reason: format!("scheme {:?}", parsed.scheme()),
            });
        }
        if config.outbox_capacity == 0 {
            return Err(NotifyError::Setting {
                setting: "outbox_capacity",
                must: "at least 1",
            });
        }
        if config.max_attempts == 0 {
            return Err(NotifyError::Setting {
                setting: "max_attempts",
                must: "at least 1",
            });
        }
        let client = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Arc::new(Self {
            kind,
            url: parsed,
            client,
            outbox: Mutex::new(VecDeque::with_capacity(config.outbox_capacity.min(64))),
            config,
            ready: Notify::new(),
            counters: Counters::default(),
        }))
    }

    /// Queue a JSON body; drops (and counts) the oldest when full.
    pub(super) fn enqueue(&self, body: Vec<u8>) {
        let dropped = {
            let mut outbox = lock(&self.outbox);
            let dropped = if outbox.len() >= self.config.outbox_capacity {
                outbox.pop_front().is_some()
            } else {
                false
            };
            outbox.push_back(body);
            dropped
        };
        if dropped {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("eddy_alert_notifications_dropped_total",
                "kind" => self.kind, "target" => self.url.to_string())
            .increment(1);
            tracing::warn!(
                url = %self.url,
                capacity = self.config.outbox_capacity,
                "alert outbox full, dropped its oldest notification"
            );
        }
        self.ready.notify_one();
    }

    pub(super) fn stats(&self) -> NotifierStats {
        NotifierStats {
            sent: self.counters.sent.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            retried: self.counters.retried.load(Ordering::Relaxed),
            queued: lock(&self.outbox).len() as u64,
        }
    }

    /// Post queued messages forever, one at a time (so a resolve never
    /// overtakes the firing notification before it).
    pub(super) async fn run(self: Arc<Self>) {
        loop {
            let next = lock(&self.outbox).pop_front();
            match next {
                Some(body) => self.deliver(body).await,
                None => self.ready.notified().await,
            }
        }
    }

    async fn deliver(&self, body: Vec<u8>) {
        let target = self.url.to_string();
        let mut attempt = 1;
        loop {
            let outcome = self.post(body.clone()).await;
            let (retryable, error) = match outcome {
                Ok(()) => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("eddy_alert_notifications_sent_total",
                        "kind" => self.kind, "target" => target)
                    .increment(1);
                    return;
                }
                Err(e) => e,
            };
            if !retryable || attempt >= self.config.max_attempts {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("eddy_alert_notifications_failed_total",
                    "kind" => self.kind, "target" => target)
                .increment(1);
                tracing::warn!(url = %self.url, attempts = attempt, error = %error,
                    "alert notification failed, giving up on it");
                return;
            }
            tracing::debug!(url = %self.url, attempt, error = %error, "alert notification failed, retrying");
            self.counters.retried.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("eddy_alert_notifications_retried_total",
                "kind" => self.kind, "target" => target.clone())
            .increment(1);
            tokio::time::sleep(backoff(&self.config, attempt)).await;
            attempt += 1;
        }
    }

    /// One attempt; on failure, whether it is worth retrying and why.
    async fn post(&self, body: Vec<u8>) -> Result<(), (bool, String)> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(token) = &self.config.bearer_token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let status = response.status();
                // 5xx and 429 may pass; other 4xx mean the payload or the
                // credentials are wrong, and sending it again will not help.
                let retryable = status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                Err((retryable, format!("HTTP {status}")))
            }
            Err(e) => Err((true, e.to_string())),
        }
    }
}

/// Wait after failed attempt `attempt` (1-based): `initial × 2^(attempt-1)`
/// capped at `max_backoff`, less a random part of up to half of it, so
/// notifiers that failed together do not retry together.
fn backoff(config: &DeliveryConfig, attempt: u32) -> Duration {
    let doubling = 2u32.saturating_pow(attempt.saturating_sub(1));
    let full = config
        .initial_backoff
        .saturating_mul(doubling)
        .min(config.max_backoff);
    let jitter: f64 = rand::random();
    full.mul_f64(1.0 - 0.5 * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_most_half_jitter() {
        let config = DeliveryConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..DeliveryConfig::default()
        };
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let wait = backoff(&config, attempt);
            assert!(wait <= Duration::from_millis(full), "{attempt}: {wait:?}");
            assert!(
                wait >= Duration::from_millis(full / 2),
                "{attempt}: {wait:?}"
            );
        }
    }
}
