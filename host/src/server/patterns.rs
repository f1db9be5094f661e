//! REST views of the patterns: `GET /v1/patterns` and
//! `GET /v1/patterns/{name}/matches`. Each is a query answered by the engine
//! thread (see [`super::view`]).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Access;
use super::error::ApiError;
use super::windows::{ask, json, limit, respond};
use crate::runner::Query as EngineQuery;

type Params = Query<HashMap<String, String>>;

/// Default `limit` of a pattern's matches.
const DEFAULT_LIMIT: usize = 100;

/// `GET /v1/patterns`: every pattern's source, key, steps, partial matches
/// and counters (matches, timeouts, refused, late, ...).
pub async fn list(
    State(state): State<AppState>,
    Query(q): Params,
    headers: axum::http::HeaderMap,
) -> Response {
    let result = async {
        state.keys.check_request(Access::Read, &headers, &q)?;
        let answer = ask(&state, EngineQuery::Patterns).await?;
        Ok(json!({ "patterns": json(&answer).unwrap_or_else(|| json!([])) }))
    };
    respond(result.await)
}

/// `GET /v1/patterns/{name}/matches?kind=match|timeout&limit=N`: the
/// pattern's latest matches and timeouts, oldest first.
pub async fn matches(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
    headers: axum::http::HeaderMap,
) -> Response {
    let result = async {
        state.keys.check_request(Access::Read, &headers, &q)?;
        let matched = match q.get("kind").map(String::as_str) {
            None | Some("") => None,
            Some("match") => Some(true),
            Some("timeout") => Some(false),
            Some(other) => {
                return Err(ApiError::bad_request(
                    "bad_kind",
                    format!("`kind` must be match or timeout, not `{other}`"),
                ));
            }
        };
        let limit = limit(&q, DEFAULT_LIMIT)?;
        let query = EngineQuery::PatternMatches {
            pattern: name.clone(),
            matched,
            limit,
        };
        let answer = ask(&state, query).await?;
        match json(&answer) {
            Some(results) => Ok(json!({ "pattern": name, "results": results })),
            None => {
                let list = ask(&state, EngineQuery::Patterns).await?;
                let available: Vec<Value> = json(&list)
                    .and_then(|v| v.as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .map(|p| p["name"].clone())
                    .collect();
                Err(ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "unknown_pattern",
                    format!("no pattern is named `{name}`"),
                )
                .with("available", available))
            }
        }
    };
    respond(result.await)
}
