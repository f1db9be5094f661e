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

use super::AppState;
use super::auth::Access;
use super::error::ApiError;
use crate::runner::{Answer, Query as EngineQuery};
use crate::window::HistoryQuery;

type Params = Query<HashMap<String, String>>;

/// Default and largest `limit` of the group and history lists: a
/// dashboard table's worth by default; the cap bounds one response to a few
/// MB.
const DEFAULT_LIMIT: usize = 1_000;
const MAX_LIMIT: usize = 100_000;
/// Default `limit` of the live views (a dashboard panel).
const DEFAULT_LIVE_LIMIT: usize = 10;

pub(super) fn limit(q: &HashMap<String, String>, default: usize) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(
                "bad_limit",
                format!("`limit` must be a whole number from 1 to {MAX_LIMIT}, not `{v}`"),
            )),
        },
    }
}

/// A time bound: milliseconds since the epoch, or RFC 3339.
pub(super) fn time(q: &HashMap<String, String>, key: &str) -> Result<Option<i64>, ApiError> {
    let Some(v) = q.get(key) else { return Ok(None) };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(Some(ms));
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| Some(t.timestamp_millis()))
        .map_err(|_| {
            ApiError::bad_request(
                "bad_time",
                format!(
                    "`{key}` must be milliseconds since the Unix epoch or an RFC 3339 time (2026-11-23T10:00:00Z), not `{v}`"
                ),
            )
        })
}

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
pub async fn list(State(state): State<AppState>, Query(q): Params, headers: HeaderMap) -> Response {
    let result = async {
        state.keys.check_request(Access::Read, &headers, &q)?;
        let answer = ask(&state, EngineQuery::Windows).await?;
        Ok(json!({ "windows": json(&answer).unwrap_or_else(|| json!([])) }))
    };
    respond(result.await)
}

/// `GET /v1/windows/{name}?limit=N`: current values of the open windows.
pub async fn open(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.keys.check_request(Access::Read, &headers, &q)?;
        let limit = limit(&q, DEFAULT_LIMIT)?;
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
pub async fn history(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.keys.check_request(Access::Read, &headers, &q)?;
        let mut group: Vec<(String, String)> = q
            .iter()
            .filter_map(|(k, v)| {
                if k == "group" {
                    Some((String::new(), v.clone()))
                } else {
                    k.strip_prefix("group.")
                        .map(|dim| (dim.to_owned(), v.clone()))
                }
            })
            .collect();
        group.sort();
        let query = HistoryQuery {
            from: time(&q, "from")?,
            to: time(&q, "to")?,
            group,
            limit: limit(&q, DEFAULT_LIMIT)?,
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
pub async fn live_users(
    State(state): State<AppState>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.keys.check_request(Access::Read, &headers, &q)?;
        let limit = limit(&q, DEFAULT_LIVE_LIMIT)?;
        let answer = ask(&state, EngineQuery::LiveUsers { limit }).await?;
        Ok(json(&answer).unwrap_or_default())
    };
    respond(result.await)
}

/// `GET /v1/live/pages?limit=N`: the most viewed pages of the last minute.
pub async fn live_pages(
    State(state): State<AppState>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.keys.check_request(Access::Read, &headers, &q)?;
        let limit = limit(&q, DEFAULT_LIVE_LIMIT)?;
        let answer = ask(&state, EngineQuery::LivePages { limit }).await?;
        Ok(json(&answer).unwrap_or_default())
    };
    respond(result.await)
}
