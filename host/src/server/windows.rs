//! REST views of the windows and the live views: `GET /v1/windows`,
//! `/v1/windows/{name}`, `/v1/windows/{name}/history`, `/v1/live/users`,
//! `/v1/live/pages`. Each is a query answered by the engine thread (see
//! [`super::view`]); no handler holds a lock the engine needs.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::Access;
use super::error::ApiError;
use super::{AppState, api};
use crate::runner::{Answer, Query as EngineQuery};

type Params = Query<HashMap<String, String>>;

fn unknown_window(state: &AppState, name: &str) -> ApiError {
    let available: Vec<Value> = state
        .config
        .windows
        .iter()
        .map(|w| Value::from(w.name.as_str()))
        .collect();
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "unknown_window",
        format!("no window is named `{name}`"),
    )
    .with("available", available)
}

pub(super) fn respond(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Ask the engine; 503 if it does not answer in time.
pub(super) async fn ask(state: &AppState, q: EngineQuery) -> Result<Arc<Answer>, ApiError> {
    state.view.get(q).await.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "engine_busy",
            "the engine did not answer in time; retry later",
        )
        .retry_after(state.config.ingest.retry_after)
    })
}

/// The JSON of an answer; `None` for "no such window".
pub(super) fn json(answer: &Answer) -> Option<Value> {
    match answer {
        Answer::Json(v) => v.clone(),
        _ => None,
    }
}

/// `GET /v1/windows`: every window's definition, watermark and counters.
#[utoipa::path(
    get,
    path = "/v1/windows",
    operation_id = "listWindows",
    tag = "windows",
    summary = "Configured windows",
    description = "Every window's definition, watermark, open windows and groups, history size \
                   and counters (events, late, overflow, future-rejected/clamped, results, \
                   corrections).",
    responses(
        (status = 200, description = "`{windows: [...]}`", body = api::Object),
        api::ReadDenied,
        api::EngineBusy,
    )
)]
pub async fn list(State(state): State<AppState>, Query(q): Params, headers: HeaderMap) -> Response {
    let result = async {
        state.keys.check_request(Access::Read, &headers, &q)?;
        let answer = ask(&state, EngineQuery::Windows).await?;
        Ok(json!({ "windows": json(&answer).unwrap_or_else(|| json!([])) }))
    };
    respond(result.await)
}

/// `GET /v1/windows/{name}?limit=N`: current values of the open windows.
#[utoipa::path(
    get,
    path = "/v1/windows/{name}",
    operation_id = "openWindows",
    tag = "windows",
    summary = "Open windows of one window",
    description = "Current values of the windows not yet final: `{window, watermark, groups: \
                   [{start, end, group, values}]}`, at most `limit` groups.",
    params(api::WindowName, api::OpenQuery),
    responses(
        (status = 200, description = "Open windows", body = api::Object),
        (status = 400, description = "A query parameter is not valid (`bad_limit`)", body = api::Error),
        api::ReadDenied,
        (status = 404, description = "No window has this name (`unknown_window`; `available` \
                                      lists the names)", body = api::Error),
        api::EngineBusy,
    )
)]
pub async fn open(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.keys.check_request(Access::Read, &headers, &q)?;
        let limit = api::OpenQuery::parse(&q)?.limit;
        let query = EngineQuery::Open {
            window: name.clone(),
            limit,
        };
        let answer = ask(&state, query).await?;
        json(&answer).ok_or_else(|| unknown_window(&state, &name))
    };
    respond(result.await)
}

/// `GET /v1/windows/{name}/history?from=&to=&group=&group.<dim>=&limit=`:
/// the latest result of each closed window within retention.
#[utoipa::path(
    get,
    path = "/v1/windows/{name}/history",
    operation_id = "windowHistory",
    tag = "windows",
    summary = "Closed windows within retention",
    description = "The latest result (final, or its latest correction) of each closed window \
                   and group: `{window, results: [...]}`, oldest first, the newest `limit`. \
                   `from` after `to` is an empty range.",
    params(api::WindowName, api::HistoryQuery),
    responses(
        (status = 200, description = "Closed results", body = api::Object),
        (status = 400, description = "A query parameter is not valid (`bad_limit`, `bad_time`)",
         body = api::Error),
        api::ReadDenied,
        (status = 404, description = "No window has this name (`unknown_window`; `available` \
                                      lists the names)", body = api::Error),
        api::EngineBusy,
    )
)]
pub async fn history(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.keys.check_request(Access::Read, &headers, &q)?;
        let params = api::HistoryQuery::parse(&q)?;
        let query = crate::window::HistoryQuery {
            from: params.from,
            to: params.to,
            group: params.group,
            limit: params.limit,
        };
        let answer = ask(
            &state,
            EngineQuery::History {
                window: name.clone(),
            },
        )
        .await?;
        let Answer::History(Some(view)) = &*answer else {
            return Err(unknown_window(&state, &name));
        };
        // The copy is the engine's; filtering and rendering happen here, on
        // a blocking worker, never on the engine thread, and once per
        // version of the history for every client asking the same.
        let view = view.clone();
        let key = format!("history {name} {:?}", query_key(&q));
        let body = state
            .view
            .rendered(key, view.version(), move || {
                let results = view.query(&query);
                serde_json::to_vec(&json!({ "window": name, "results": results }))
                    .unwrap_or_default()
            })
            .await;
        Ok(body)
    };
    match result.await {
        Ok(body) => (
            [(header::CONTENT_TYPE, "application/json")],
            state.view.send(body).await,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// A request's parameters in a fixed order (a cache key).
fn query_key(q: &HashMap<String, String>) -> Vec<(&String, &String)> {
    let mut v: Vec<_> = q.iter().filter(|(k, _)| *k != "api_key").collect();
    v.sort();
    v
}

/// `GET /v1/live/users?limit=N`: users seen recently, most recent first.
#[utoipa::path(
    get,
    path = "/v1/live/users",
    operation_id = "liveUsers",
    tag = "windows",
    summary = "Live users",
    description = "distinct_ids seen within `live.users_window` of event time, most recent \
                   first, with their current URL: `{window_ms, now, count, untracked, users: \
                   [{distinct_id, last_seen, current_url}]}`.",
    params(api::LiveQuery),
    responses(
        (status = 200, description = "Live users", body = api::Object),
        (status = 400, description = "A query parameter is not valid (`bad_limit`)", body = api::Error),
        api::ReadDenied,
        api::EngineBusy,
    )
)]
pub async fn live_users(
    State(state): State<AppState>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.keys.check_request(Access::Read, &headers, &q)?;
        let limit = api::LiveQuery::parse(&q)?.limit;
        let answer = ask(&state, EngineQuery::LiveUsers { limit }).await?;
        Ok(json(&answer).unwrap_or_default())
    };
    respond(result.await)
}

/// `GET /v1/live/pages?limit=N`: the most viewed pages of the last minute.
#[utoipa::path(
    get,
    path = "/v1/live/pages",
    operation_id = "livePages",
    tag = "windows",
    summary = "Top pages",
    description = "The most viewed `$current_url`s of `$pageview` events within \
                   `live.pages_window`: `{window_ms, now, views, pages: [{url, views}]}`.",
    params(api::LiveQuery),
    responses(
        (status = 200, description = "Top pages", body = api::Object),
        (status = 400, description = "A query parameter is not valid (`bad_limit`)", body = api::Error),
        api::ReadDenied,
        api::EngineBusy,
    )
)]
pub async fn live_pages(
    State(state): State<AppState>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.keys.check_request(Access::Read, &headers, &q)?;
        let limit = api::LiveQuery::parse(&q)?.limit;
        let answer = ask(&state, EngineQuery::LivePages { limit }).await?;
        Ok(json(&answer).unwrap_or_default())
    };
    respond(result.await)
}
