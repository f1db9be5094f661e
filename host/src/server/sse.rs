//! `GET /v1/sse?channel=…`: Server-Sent Events with the same filters as the
//! WebSocket, as query parameters (`names`, `where`, `fields`), and resume
//! by `Last-Event-ID` (or `since`).
//!
//! Each SSE event has `id:` = the sequence number and `data:` = the same
//! JSON message a WebSocket client gets. A client that falls more than
//! `streams.client_queue` behind gets a final `event: error` whose data
//! carries `last_seq`, and the stream ends.

use std::convert::Infallible;

use axum::extract::ws::Utf8Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::json;

use super::auth::{Access, presented_key};
use super::error::ApiError;
use super::streams::{ConnectionGuard, Feed, FeedEnd, SubscribeRequest};
use super::{AppState, api};

/// Open an SSE stream.
#[utoipa::path(
    get,
    path = "/v1/sse",
    operation_id = "sse",
    tag = "streams",
    summary = "Server-Sent Events subscription",
    description = "Each SSE event has `id:` = the sequence number and `data:` = the message a \
                   WebSocket subscriber gets; a client that falls behind gets a final \
                   `event: error` with `last_seq`.",
    params(api::SseQuery, api::LastEventId),
    responses(
        (status = 200, description = "Event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid request (a filter, `since`)", body = api::Error),
        api::ReadDenied,
        (status = 404, description = "No such channel", body = api::Error),
        (status = 410, description = "`since` is older than what the channel keeps (`since_too_old`)",
         body = api::Error),
        (status = 503, description = "Unavailable (shutting down, or streams.max_connections reached)",
         body = api::Error),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let api_key = pairs
        .iter()
        .find(|(k, _)| k == "api_key")
        .map(|(_, v)| v.as_str());
    if let Err(e) = state
        .keys
        .check(Access::Read, presented_key(&headers, api_key))
    {
        return e.into_response();
    }
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let req = match SubscribeRequest::from_query(&pairs, last_event_id) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_request("bad_request", e).into_response(),
    };
    let guard = match ConnectionGuard::acquire(&state) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let feed = match Feed::open(&state, &req) {
        Ok(f) => f,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let keep_alive = KeepAlive::new().interval(state.config.streams.heartbeat);
    Sse::new(events(feed, guard, state.shutdown.clone()))
        .keep_alive(keep_alive)
        .into_response()
}

enum Phase {
    Live,
    Done,
}

fn events(
    feed: Feed,
    guard: ConnectionGuard,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let init = (feed, guard, shutdown, Phase::Live);
    stream::unfold(init, |(mut feed, guard, mut shutdown, phase)| async move {
        if matches!(phase, Phase::Done) {
            return None;
        }
        let batch = tokio::select! {
            b = feed.next_frames() => b,
            () = super::shutting_down(&mut shutdown) => feed.drain_now(),
        };
        let (items, phase) = match batch {
            Ok(frames) => (frames_to_events(frames), Phase::Live),
            Err(FeedEnd::Drained { frames }) => (frames_to_events(frames), Phase::Done),
            Err(FeedEnd::Lagged { last_delivered }) => {
                let data = json!({
                    "type": "error",
                    "code": "slow_consumer",
                    "channel": feed.channel(),
                    "last_seq": last_delivered,
                    "message": "this client fell more than streams.client_queue messages behind; \
                                reconnect with Last-Event-ID = last_seq to resume",
                });
                (
                    vec![Ok(Event::default().event("error").data(data.to_string()))],
                    Phase::Done,
                )
            }
        };
        Some((stream::iter(items), (feed, guard, shutdown, phase)))
    })
    .flatten()
}

fn frames_to_events(frames: Vec<(u64, Utf8Bytes)>) -> Vec<Result<Event, Infallible>> {
    frames
        .into_iter()
        .map(|(seq, frame)| Ok(Event::default().id(seq.to_string()).data(frame.as_str())))
        .collect()
}
