//! REST reads and plugin operations, health, metrics and the OpenAPI
//! document.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::Access;
use super::error::ApiError;
use super::{AppState, api};
use crate::hub::{Payload, Publisher};
use crate::plugin::registry::LoadOutcome;

type Params = Query<HashMap<String, String>>;

/// `GET /v1/events/recent?limit=N`: the last N events after the pipeline,
/// oldest first.
#[utoipa::path(
    get,
    path = "/v1/events/recent",
    operation_id = "recentEvents",
    tag = "rest",
    summary = "Most recent events after the pipeline",
    params(api::RecentQuery),
    responses(
        (status = 200, description = "`{events: [...]}`, oldest first, each with its `seq`",
         body = api::RecentEvents),
        (status = 400, description = "A query parameter is not valid (`bad_limit`)", body = api::Error),
        api::ReadDenied,
    )
)]
pub async fn recent_events(
    State(state): State<AppState>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    let result = (|| -> Result<Response, ApiError> {
        state.keys.check_request(Access::Read, &headers, &q)?;
        // The ring keeps `streams.replay_capacity` events: a larger limit
        // gets what is kept (as the document says), not a refusal.
        let kept = usize::try_from(state.config.streams.replay_capacity).unwrap_or(usize::MAX);
        let limit = api::RecentQuery::parse(&q)?.limit.min(kept);
        let messages = state
            .hub
            .recent(super::channels::EVENTS, limit)
            .map_err(|e| ApiError::not_found(e.to_string()))?;
        let events: Vec<Value> = messages
            .iter()
            .filter_map(|m| match &m.payload {
                Payload::Event(e) => serde_json::to_value(e).ok().map(|mut v| {
                    v["seq"] = json!(m.seq);
                    v
                }),
                Payload::Json(v) => Some(v.clone()),
            })
            .collect();
        Ok(Json(json!({ "events": events })).into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/channels`: channels with their sequence range and subscribers.
#[utoipa::path(
    get,
    path = "/v1/channels",
    operation_id = "listChannels",
    tag = "rest",
    summary = "Channels with sequence ranges and subscriber counts",
    responses(
        (status = 200, description = "`{channels: [{name, head_seq, oldest_seq, subscribers}]}`",
         body = api::Object),
        api::ReadDenied,
    )
)]
pub async fn channels(
    State(state): State<AppState>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = state.keys.check_request(Access::Read, &headers, &q) {
        return e.into_response();
    }
    let channels: Vec<Value> = state
        .hub
        .channels()
        .into_iter()
        .map(|c| json!({"name": c.name, "head_seq": c.head_seq, "oldest_seq": c.oldest_seq, "subscribers": c.subscribers}))
        .collect();
    Json(json!({ "channels": channels })).into_response()
}

/// `GET /v1/plugins`: every plugin with its live version and, per stage
/// that uses it (a processor stage, a pattern plugin, an alert rule: `kind`),
/// calls, errors and mean cost.
#[utoipa::path(
    get,
    path = "/v1/plugins",
    operation_id = "listPlugins",
    tag = "plugins",
    summary = "Plugins: version hash, status, calls, errors, ns/event, notices",
    description = "Every plugin with its live version (hash, loaded_at, status), and per stage \
                   that uses it (a processor stage, a pattern plugin, an alert rule: `kind`) \
                   calls, errors, mean ns/event, its last error and its metrics.",
    responses(
        (status = 200, description = "`{plugins: [...]}`", body = api::Object),
        api::ReadDenied,
    )
)]
pub async fn plugins(
    State(state): State<AppState>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = state.keys.check_request(Access::Read, &headers, &q) {
        return e.into_response();
    }
    let reports = match state
        .view
        .get(crate::runner::Query::Stages)
        .await
        .as_deref()
    {
        Some(crate::runner::Answer::Stages(r)) => r.clone(),
        _ => Vec::new(),
    };
    let plugins: Vec<Value> = state
        .registry
        .status()
        .into_iter()
        .map(|p| {
            let stages: Vec<Value> = reports
                .iter()
                .filter(|r| r.plugin == p.name)
                .map(|r| {
                    json!({
                        "stage": r.name,
                        "kind": r.kind.as_str(),
                        "status": r.status,
                        "calls": r.stats.batches,
                        "errors": r.stats.failed_batches,
                        "events_in": r.stats.events_in,
                        "events_out": r.stats.events_out,
                        "ns_per_event": r.ns_per_event,
                        "consecutive_failures": r.consecutive_failures,
                    })
                })
                .collect();
            let status = if !p.live {
                "unloaded"
            } else if stages.iter().any(|s| s["status"] == "quarantined") {
                "quarantined"
            } else {
                "live"
            };
            let calls: u64 = stages.iter().filter_map(|s| s["calls"].as_u64()).sum();
            let mut v = serde_json::to_value(&p).unwrap_or_else(|_| json!({}));
            v["status"] = json!(status);
            v["calls"] = json!(calls);
            v["errors"] = json!(p.failures);
            v["mean_ns_per_event"] = json!(
                stages
                    .iter()
                    .filter_map(|s| s["ns_per_event"].as_f64())
                    .fold(0.0, f64::max)
            );
            v["stages"] = Value::Array(stages);
            v
        })
        .collect();
    Json(json!({ "plugins": plugins })).into_response()
}

fn known_plugin(state: &AppState, name: &str) -> Result<(), ApiError> {
    if state.registry.names().iter().any(|n| n == name) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "no plugin `{name}`; plugins are: {}",
            state.registry.names().join(", ")
        )))
    }
}

/// `POST /v1/plugins/{name}/reload`: load `{name}.wasm` from the plugins
/// folder again (admin).
#[utoipa::path(
    post,
    path = "/v1/plugins/{name}/reload",
    operation_id = "reloadPlugin",
    tag = "plugins",
    summary = "Reload a plugin from the plugins folder (admin)",
    params(api::PluginName),
    responses(
        (status = 200, description = "`{plugin, result}`: reloaded, swapped or unchanged",
         body = api::Object),
        (status = 400, description = "Not a plugin name (`bad_plugin_name`)", body = api::Error),
        api::ReadDenied,
        (status = 404, description = "No such file in the plugins folder", body = api::Error),
        (status = 422, description = "The plugin failed to load (`load_failed`); the live \
                                      version stays", body = api::Error),
    )
)]
pub async fn reload_plugin(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.keys.check_request(Access::Admin, &headers, &q)?;
        api::PluginName::parse(&name)?;
        let path = state.registry.dir().join(format!("{name}.wasm"));
        if !path.is_file() {
            return Err(ApiError::not_found(format!("no file {}", path.display())));
        }
        let registry = state.registry.clone();
        let outcome = tokio::task::spawn_blocking(move || registry.load_file(&path))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "reload_failed",
                    e.to_string(),
                )
            })?;
        match outcome {
            Ok(LoadOutcome::Unchanged) => Ok(Json(json!({"plugin": name, "result": "unchanged"}))),
            Ok(other) => Ok(Json(
                json!({"plugin": name, "result": format!("{other:?}").to_lowercase()}),
            )),
            Err(e) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "load_failed",
                e.to_string(),
            )
            .with("plugin", name.clone())),
        }
    }
    .await;
    result
        .map(IntoResponse::into_response)
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/plugins/{name}/rollback`: put the previous version back
/// (admin).
#[utoipa::path(
    post,
    path = "/v1/plugins/{name}/rollback",
    operation_id = "rollbackPlugin",
    tag = "plugins",
    summary = "Roll a plugin back to its previous version (admin)",
    params(api::PluginName),
    responses(
        (status = 200, description = "Rolled back: `{plugin, result, version}`", body = api::Object),
        api::ReadDenied,
        (status = 404, description = "No such plugin", body = api::Error),
        (status = 409, description = "No live or no previous version to go back to", body = api::Error),
    )
)]
pub async fn rollback_plugin(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    let result = (|| {
        state.keys.check_request(Access::Admin, &headers, &q)?;
        known_plugin(&state, &name)?;
        let slot = state.registry.slot(&name);
        let view = slot.view();
        let Some(current) = view.current else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_live",
                format!("plugin `{name}` has no live version"),
            ));
        };
        if !view.has_previous {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "no_previous_version",
                format!("plugin `{name}` has no previous version to roll back to"),
            ));
        }
        if state
            .registry
            .rollback(&name, &current, "rolled back through the API")
        {
            Ok(Json(json!({"plugin": name, "result": "rolled_back"})))
        } else {
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "rollback_failed",
                format!("plugin `{name}` could not be rolled back"),
            ))
        }
    })();
    result
        .map(IntoResponse::into_response)
        .unwrap_or_else(IntoResponse::into_response)
}

fn stats_body(state: &AppState) -> Value {
    let s = state.stats.snapshot();
    let mut v = serde_json::to_value(s).unwrap_or_else(|_| json!({}));
    v["queue_capacity"] = json!(state.queue.capacity());
    v["queue_capacity_bytes"] = json!(state.queue.capacity_bytes());
    v["uptime_s"] = json!(state.started.elapsed().as_secs());
    v["stream_connections"] = json!(state.connections.load(Ordering::Relaxed));
    v["ingest_requests_in_flight"] = json!(state.ingest_requests.load(Ordering::Acquire));
    v["time"] = json!(super::now_ms());
    v["wal"] = match &state.wal {
        Some(w) => w.json(),
        None => json!({"enabled": false}),
    };
    v["kafka"] = json!(state.kafka.iter().map(|k| k.snapshot()).collect::<Vec<_>>());
    v["kafka_sinks"] = json!(
        state
            .kafka_sinks
            .iter()
            .map(|k| k.stats())
            .collect::<Vec<_>>()
    );
    v
}

/// `GET /v1/stats`.
#[utoipa::path(
    get,
    path = "/v1/stats",
    operation_id = "stats",
    tag = "rest",
    summary = "Pipeline counters",
    description = "Accepted, invalid, refused, published, dropped, dead-lettered, duplicates, \
                   queue depth and capacity, ingest requests in flight, stream connections, \
                   uptime and the write-ahead log's figures (docs/api.md lists them).",
    responses(
        (status = 200, description = "Counters", body = api::Object),
        api::ReadDenied,
    )
)]
pub async fn stats(
    State(state): State<AppState>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = state.keys.check_request(Access::Read, &headers, &q) {
        return e.into_response();
    }
    Json(stats_body(&state)).into_response()
}

/// Publish [`stats_body`] on the `stats` channel every
/// `streams.stats_interval_ms`, with rates over the interval; also update
/// the gauges.
pub async fn publish_stats(publisher: Publisher, state: AppState) {
    let interval = state.config.streams.stats_interval;
    let mut ticker = tokio::time::interval(interval);
    let mut shutdown = state.shutdown.clone();
    let mut previous = state.stats.snapshot();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = super::shutting_down(&mut shutdown) => return,
        }
        let now = state.stats.snapshot();
        let secs = interval.as_secs_f64().max(1e-3);
        let mut body = stats_body(&state);
        body["accepted_per_s"] = json!((now.accepted - previous.accepted) as f64 / secs);
        body["published_per_s"] = json!((now.published - previous.published) as f64 / secs);
        metrics::gauge!("eddy_ingest_queue_depth").set(now.queue_depth as f64);
        previous = now;
        publisher.publish(Payload::Json(body));
    }
}

/// `GET /metrics`: Prometheus text format (docs/metrics.md lists the
/// families).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "ops",
    summary = "Prometheus metrics",
    security(()),
    responses(
        (status = 200, description = "Text exposition format (docs/metrics.md)",
         content_type = "text/plain", body = String),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let s = state.stats.snapshot();
    metrics::gauge!("eddy_ingest_queue_depth").set(s.queue_depth as f64);
    metrics::gauge!("eddy_ingest_queue_capacity").set(state.queue.capacity() as f64);
    metrics::gauge!("eddy_stream_connections")
        .set(state.connections.load(Ordering::Relaxed) as f64);
    metrics::gauge!("eddy_ingest_requests_in_flight")
        .set(state.ingest_requests.load(Ordering::Acquire) as f64);
    for (name, v) in [
        ("eddy_events_published_total", s.published),
        ("eddy_events_dropped_total", s.dropped),
        ("eddy_events_dead_lettered_total", s.dead_lettered),
        ("eddy_events_lost_total", s.lost),
        ("eddy_pipeline_batches_total", s.batches),
        ("eddy_ingest_duplicate_events_total", s.duplicates),
        ("eddy_ingest_wal_refused_events_total", s.wal_refused),
    ] {
        metrics::counter!(name).absolute(v);
    }
    let mut text = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    if let Some(w) = &state.wal {
        text.push_str(&w.prometheus());
    }
    text.push_str(&crate::source::kafka::prometheus(&state.kafka));
    text.push_str(&super::alerts::prometheus(&state).await);
    // Stage reports come from the engine thread (empty if it is too busy to
    // answer, as for `GET /v1/plugins`).
    let stages = match state
        .view
        .get(crate::runner::Query::Stages)
        .await
        .as_deref()
    {
        Some(crate::runner::Answer::Stages(r)) => r.clone(),
        _ => Vec::new(),
    };
    super::prometheus::render_stages(&mut text, &stages);
    super::prometheus::render_plugins(&mut text, &state.registry.status());
    super::prometheus::render_channels(&mut text, &state.hub.channels());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "ops",
    summary = "Liveness",
    security(()),
    responses((status = 200, description = "Up: `{status: \"ok\"}`", body = api::Object))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: ready to take events (not shutting down, queue not full).
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "ops",
    summary = "Readiness",
    security(()),
    responses(
        (status = 200, description = "Ready: `{status: \"ready\", queue_depth}`", body = api::Object),
        (status = 503, description = "Shutting down, or the ingest queue is full", body = api::Error),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let s = state.stats.snapshot();
    if *state.shutdown.borrow() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        )
        .into_response();
    }
    if s.queue_depth >= state.queue.capacity() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_full",
            "the ingest queue is full",
        )
        .retry_after(state.config.ingest.retry_after)
        .into_response();
    }
    Json(json!({"status": "ready", "queue_depth": s.queue_depth})).into_response()
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "ops",
    summary = "This document",
    description = "Generated from the handlers and their parameter types; the ingest limits \
                   and the recent-events capacity are this server's configuration.",
    security(()),
    responses((status = 200, description = "OpenAPI 3.1", body = api::Object))
)]
pub async fn openapi(State(state): State<AppState>) -> Response {
    let body = match state.openapi.get() {
        Some(body) => body.clone(),
        None => match serde_json::to_vec(&api::document(&state.config)) {
            Ok(bytes) => state.openapi.get_or_init(|| bytes.into()).clone(),
            Err(e) => {
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "openapi_failed",
                    format!("the OpenAPI document could not be written: {e}"),
                )
                .into_response();
            }
        },
    };
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Unknown path: 404 with a JSON body.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {}; see /openapi.json", uri.path()))
}

/// Known path, wrong method: 405 with a JSON body.
pub async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not support this method; see /openapi.json",
            uri.path()
        ),
    )
}
