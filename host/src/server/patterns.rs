//! REST views of the patterns: `GET /v1/patterns` and
//! `GET /v1/patterns/{name}/matches`. Each is a query answered by the engine
//! thread (see [`super::view`]).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::auth::Access;
use super::error::ApiError;
use super::windows::{ask, json, respond};
use super::{AppState, api};
use crate::runner::Query as EngineQuery;

type Params = Query<HashMap<String, String>>;

/// `GET /v1/patterns`: every pattern's source, key, steps, partial matches
/// and counters (matches, timeouts, refused, late, ...).
#[utoipa::path(
    get,
    path = "/v1/patterns",
    operation_id = "listPatterns",
    tag = "windows",
    summary = "Patterns",
    description = "Every pattern (declared in eddy.toml or a pattern plugin): source (`config` \
                   or `plugin:<name>`), key, steps (name, contiguity, quantifier, until), \
                   within_ms, partial_matches held, keys, events buffered until the watermark, \
                   watermark, and counters: events, matches, timeouts, refused (new partial \
                   matches refused at a cap), late, unkeyed, rejected (by a match hook), errors, \
                   dropped_on_change.",
    responses(
        (status = 200, description = "`{patterns: [...]}`", body = api::Object),
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
        let answer = ask(&state, EngineQuery::Patterns).await?;
        Ok(json!({ "patterns": json(&answer).unwrap_or_else(|| json!([])) }))
    };
    respond(result.await)
}

/// `GET /v1/patterns/{name}/matches?kind=match|timeout&limit=N`: the
/// pattern's latest matches and timeouts, oldest first.
#[utoipa::path(
    get,
    path = "/v1/patterns/{name}/matches",
    operation_id = "patternMatches",
    tag = "windows",
    summary = "A pattern's latest matches and timeouts",
    description = "The latest matches and timeouts of a pattern (at most `max_history` are \
                   kept), oldest first, each as published on `patterns/<name>`: `{pattern, kind: \
                   \"match\"|\"timeout\", key, start, end, steps: {\"<step>\": [events]}, payload?}`.",
    params(api::PatternName, api::MatchesQuery),
    responses(
        (status = 200, description = "`{pattern, results: [...]}`", body = api::Object),
        (status = 400, description = "A query parameter is not valid (`bad_limit`, `bad_kind`)",
         body = api::Error),
        api::ReadDenied,
        (status = 404, description = "No such pattern (`unknown_pattern`, with `available`)",
         body = api::Error),
        api::EngineBusy,
    )
)]
pub async fn matches(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
    headers: axum::http::HeaderMap,
) -> Response {
    let result = async {
        state.keys.check_request(Access::Read, &headers, &q)?;
        let params = api::MatchesQuery::parse(&q)?;
        let matched = params.kind.map(|k| k == api::MatchKind::Match);
        let limit = params.limit;
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
