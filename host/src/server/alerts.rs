//! REST views of the alerts — `GET /v1/alerts` (pending and firing now) and
//! `GET /v1/alerts/history` (recent transitions) — and their part of
//! `/metrics`: Prometheus's own `ALERTS{alertname, alertstate, …}` gauge,
//! per-rule instance and refusal counts, and per-target notifier figures.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::auth::Access;
use super::prometheus::escape;
use super::windows::{ask, json, respond};
use super::{AppState, api};
use crate::alert::AlertState;
use crate::runner::Query as EngineQuery;

type Params = Query<HashMap<String, String>>;

/// `GET /v1/alerts`: pending, firing (and no-data) alerts now, and every
/// rule's counters.
#[utoipa::path(
    get,
    path = "/v1/alerts",
    operation_id = "listAlerts",
    tag = "alerts",
    summary = "Pending and firing alerts now",
    description = "Every alert instance pending, firing or in no-data now, each as published on \
                   the `alerts` channel: `{alertname, state, fingerprint, labels, annotations, \
                   value, at, activeAt, startsAt, endsAt}` (`at`: the transition's event time in \
                   ms; the others RFC 3339, `endsAt` null until resolved), and per rule `{name, \
                   watches, source, instances, refused, transitions}`.",
    responses(
        (status = 200, description = "`{alerts: [...], rules: [...]}`", body = api::Object),
        api::ReadDenied,
        api::EngineBusy,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Params,
    headers: axum::http::HeaderMap,
) -> Response {
    let result = async {
        state.keys.check_request(Access::Read, &headers, &q)?;
        let answer = ask(&state, EngineQuery::Alerts).await?;
        Ok(json(&answer).unwrap_or_else(|| json!({"alerts": [], "rules": []})))
    };
    respond(result.await)
}

/// `GET /v1/alerts/history?from&to&state&limit`: kept transitions whose
/// event time is within `[from, to]` (ms since the epoch or RFC 3339) and
/// whose state is `state` (pending, firing, resolved, nodata), oldest first.
#[utoipa::path(
    get,
    path = "/v1/alerts/history",
    operation_id = "alertHistory",
    tag = "alerts",
    summary = "Recent alert transitions",
    description = "State transitions kept (the newest 10,000; not kept across restarts), oldest \
                   first, each as published on the `alerts` channel. `from` after `to` is an \
                   empty range.",
    params(api::AlertHistoryQuery),
    responses(
        (status = 200, description = "`{transitions: [...]}`", body = api::Object),
        (status = 400, description = "A query parameter is not valid (`bad_time`, `bad_state`, \
                                      `bad_limit`)", body = api::Error),
        api::ReadDenied,
        api::EngineBusy,
    )
)]
pub async fn history(
    State(state): State<AppState>,
    Query(q): Params,
    headers: axum::http::HeaderMap,
) -> Response {
    let result = async {
        state.keys.check_request(Access::Read, &headers, &q)?;
        // `from` after `to` is an empty range (nothing is in it), as for
        // window history: not a malformed request.
        let params = api::AlertHistoryQuery::parse(&q)?;
        let (from, to, limit) = (params.from, params.to, params.limit);
        let wanted = params.state.map(|s| match s {
            api::TransitionState::Pending => AlertState::Pending,
            api::TransitionState::Firing => AlertState::Firing,
            api::TransitionState::Resolved => AlertState::Resolved,
            api::TransitionState::Nodata => AlertState::NoData,
        });
        let answer = ask(
            &state,
            EngineQuery::AlertHistory {
                from,
                to,
                state: wanted,
                limit,
            },
        )
        .await?;
        Ok(json!({ "transitions": json(&answer).unwrap_or_else(|| json!([])) }))
    };
    respond(result.await)
}

/// The alerts' part of `/metrics` (empty if the engine is busy).
pub async fn prometheus(state: &AppState) -> String {
    let mut text = String::new();
    if let Ok(answer) = ask(state, EngineQuery::Alerts).await
        && let Some(doc) = json(&answer)
    {
        render_alerts(&doc, &mut text);
    }
    if let Some(n) = &state.notifiers {
        let targets = state
            .config
            .notify
            .alertmanagers
            .iter()
            .map(|c| ("alertmanager", c.url.as_str()))
            .chain(
                state
                    .config
                    .notify
                    .webhooks
                    .iter()
                    .map(|c| ("webhook", c.url.as_str())),
            );
        let stats: Vec<_> = targets.zip(n.stats()).collect();
        text.push_str("# HELP eddy_alert_notifier_messages_total Messages per notification target since start, by outcome.\n");
        text.push_str("# TYPE eddy_alert_notifier_messages_total counter\n");
        for ((kind, url), s) in &stats {
            for (outcome, v) in [
                ("sent", s.sent),
                ("failed", s.failed),
                ("dropped", s.dropped),
                ("retried", s.retried),
            ] {
                let _ = writeln!(
                    text,
                    "eddy_alert_notifier_messages_total{{kind=\"{kind}\",url=\"{}\",outcome=\"{outcome}\"}} {v}",
                    escape(url)
                );
            }
        }
        text.push_str(
            "# HELP eddy_alert_notifier_queued Messages waiting for delivery per notification target.\n",
        );
        text.push_str("# TYPE eddy_alert_notifier_queued gauge\n");
        for ((kind, url), s) in &stats {
            let _ = writeln!(
                text,
                "eddy_alert_notifier_queued{{kind=\"{kind}\",url=\"{}\"}} {}",
                escape(url),
                s.queued
            );
        }
    }
    text
}

fn render_alerts(doc: &Value, text: &mut String) {
    text.push_str("# HELP ALERTS Pending and firing alerts, as Prometheus exports them.\n");
    text.push_str("# TYPE ALERTS gauge\n");
    for a in doc["alerts"].as_array().into_iter().flatten() {
        let state = a["state"].as_str().unwrap_or("");
        let mut labels = format!(
            "alertname=\"{}\",alertstate=\"{}\"",
            escape(a["alertname"].as_str().unwrap_or("")),
            state
        );
        for (k, v) in a["labels"].as_object().into_iter().flatten() {
            if k == "alertname" || k == "alertstate" {
                continue;
            }
            let _ = write!(labels, ",{k}=\"{}\"", escape(v.as_str().unwrap_or("")));
        }
        let _ = writeln!(text, "ALERTS{{{labels}}} 1");
    }
    let rules: Vec<&Value> = doc["rules"].as_array().into_iter().flatten().collect();
    for (name, help, field, kind) in [
        (
            "eddy_alert_instances",
            "Alert instances a rule holds (pending, firing, resolved kept for re-sending).",
            "instances",
            "gauge",
        ),
        (
            "eddy_alert_instances_refused_total",
            "New alert label sets refused because the rule was at max_instances.",
            "refused",
            "counter",
        ),
    ] {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in &rules {
            let _ = writeln!(
                text,
                "{name}{{alertname=\"{}\"}} {}",
                escape(r["name"].as_str().unwrap_or("")),
                r[field].as_u64().unwrap_or(0)
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn alerts_render_as_prometheus_does() {
        let doc = json!({
            "alerts": [{"alertname": "HighErrorRate", "state": "firing",
                        "labels": {"alertname": "HighErrorRate", "service": "a\"b", "severity": "critical"}}],
            "rules": [{"name": "HighErrorRate", "instances": 1, "refused": 3}],
        });
        let mut text = String::new();
        render_alerts(&doc, &mut text);
        assert!(text.contains(
            "ALERTS{alertname=\"HighErrorRate\",alertstate=\"firing\",service=\"a\\\"b\",severity=\"critical\"} 1"
        ), "{text}");
        assert!(text.contains("eddy_alert_instances_refused_total{alertname=\"HighErrorRate\"} 3"));
    }
}
