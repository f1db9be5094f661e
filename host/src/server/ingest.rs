//! Ingest endpoints: eddy's own JSON and NDJSON, and PostHog's capture API.
//!
//! Every handler goes through the same steps: check the key, the content
//! type and the encoding; read the body within its size and time bounds;
//! decode and validate (see [`crate::ingest`]); apply the partial-acceptance
//! policy; then reserve room in the ingest queue for every valid event or
//! answer 429. A 2xx is only sent for events that are in the queue.

use std::collections::HashMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::json;

use super::auth::{Access, presented_key};
use super::error::ApiError;
use super::{AppState, api, now_ms};
use crate::config::{IngestConfig, InvalidPolicy};
use crate::ingest::{self, Decoded, Encoding, Format, Limits, PostHogRequest};
use crate::runner::{AckError, PushError};

/// `POST /v1/events`: one JSON event or a JSON array of events.
#[utoipa::path(
    post,
    path = "/v1/events",
    operation_id = "ingestEvents",
    tag = "ingest",
    summary = "Ingest one JSON event or an array",
    description = "Each event is validated on its own: with ingest.on_invalid = \"accept-valid\" \
                   (the default) the valid ones are accepted and `errors` names the others by \
                   `index`. gzip by Content-Encoding.",
    request_body(content = api::EventOrEvents, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted", body = api::IngestResult),
        api::IngestRefused,
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    native(state, query, headers, body, Format::Json).await
}

/// `POST /v1/batch`: NDJSON, one event per line.
#[utoipa::path(
    post,
    path = "/v1/batch",
    operation_id = "ingestBatch",
    tag = "ingest",
    summary = "Ingest NDJSON, one event per line",
    description = "Each line is an Event (see the schema); `errors` names refused ones by \
                   `line`. gzip by Content-Encoding.",
    request_body(content = String, content_type = "application/x-ndjson"),
    responses(
        (status = 202, description = "Accepted", body = api::IngestResult),
        api::IngestRefused,
    )
)]
pub async fn batch(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    native(state, query, headers, body, Format::Ndjson).await
}

async fn native(
    state: AppState,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Body,
    format: Format,
) -> Response {
    let mut body = body;
    let result = async {
        let _in_flight = refuse_unread(InFlight::enter(&state), &mut body).await?;
        state.keys.check_request(Access::Write, &headers, &query)?;
        check_content_type(&headers, format)?;
        let encoding = encoding(&headers)?;
        let mut memory =
            refuse_unread(Memory::enter(&state, declared_length(&headers)), &mut body).await?;
        let bytes = read_body(&state, body, &headers).await?;
        memory.grow_to(
            &state,
            decode_bound(&state, bytes.len(), encoding == Encoding::Gzip),
        )?;
        let decoded = ingest::decode(
            &bytes,
            format,
            encoding,
            &limits(&state.config.ingest),
            now_ms(),
        )
        .map_err(decode_error)?;
        drop(bytes);
        accept(&state, decoded)
            .await
            .map(|(status, body)| (status, Json(body)).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// PostHog's capture routes, each its own documented operation (one
/// handler, [`posthog`]).
macro_rules! posthog_route {
    ($($name:ident => $path:literal),* $(,)?) => {$(
        #[utoipa::path(
            post,
            path = $path,
            tag = "ingest",
            summary = "PostHog-compatible capture",
            description = "A single event, `{api_key, batch: [...]}` or a bare array; gzip by \
                           Content-Encoding or `?compression=gzip-js`; form `data=` base64. \
                           The key may also come in the body's `api_key`.",
            params(api::PostHogQuery),
            request_body(content(
                (api::Object = "application/json"),
                (String = "text/plain"),
                (api::Object = "application/x-www-form-urlencoded"),
            )),
            responses(
                (status = 200, description = "Accepted (PostHog clients expect 200)",
                 body = api::PostHogResult),
                api::IngestRefused,
            )
        )]
        pub async fn $name(
            state: State<AppState>,
            query: Query<HashMap<String, String>>,
            headers: HeaderMap,
            body: Body,
        ) -> Response {
            posthog(state, query, headers, body).await
        }
    )*};
}

posthog_route! {
    capture => "/capture",
    capture_slash => "/capture/",
    posthog_batch => "/batch",
    posthog_batch_slash => "/batch/",
    e => "/e",
    e_slash => "/e/",
    i_v0_e => "/i/v0/e",
    i_v0_e_slash => "/i/v0/e/",
}

/// PostHog's `/capture/`, `/batch/`, `/e/` and `/i/v0/e/`. PostHog clients
/// expect `200` on success; the body adds eddy's counts to PostHog's
/// `{"status": 1}`.
async fn posthog(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut body = body;
    let result = async {
        // PostHog bodies are buffered whole like native ones, so they take
        // one of the same bounded slots.
        let _in_flight = refuse_unread(InFlight::enter(&state), &mut body).await?;
        let header_key =
            presented_key(&headers, query.get("api_key").map(String::as_str)).map(str::to_owned);
        // Refuse early when a key is needed and the header carries a wrong
        // one; a missing header key may still be made up by the body.
        if let Some(key) = &header_key {
            state.keys.check(Access::Write, Some(key))?;
        }
        let encoding = encoding(&headers)?;
        let mut memory =
            refuse_unread(Memory::enter(&state, declared_length(&headers)), &mut body).await?;
        let bytes = read_body(&state, body, &headers).await?;
        // A PostHog body may be gzip however it is labelled (sniffed, or
        // inside a form field): bound it as one when it could be.
        let compression = query.get("compression").map(String::as_str);
        let may_inflate = encoding == Encoding::Gzip
            || compression.is_some_and(|c| c.to_ascii_lowercase().contains("gzip"))
            || bytes.starts_with(&[0x1f, 0x8b])
            || bytes.starts_with(b"data=")
            || headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.to_ascii_lowercase().contains("form"));
        memory.grow_to(&state, decode_bound(&state, bytes.len(), may_inflate))?;
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let request = PostHogRequest {
            content_type,
            compression: query.get("compression").map(String::as_str),
        };
        let decoded = ingest::decode_posthog(
            &bytes,
            encoding,
            &request,
            &limits(&state.config.ingest),
            now_ms(),
        )
        .map_err(decode_error)?;
        if header_key.is_none() {
            state
                .keys
                .check(Access::Write, decoded.api_key.as_deref())?;
        }
        let (_, mut body) = accept(&state, decoded).await?;
        body["status"] = json!(1);
        Ok::<_, ApiError>((StatusCode::OK, Json(body)).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Largest ratio of inflated to compressed bytes deflate allows (RFC 1951's
/// longest match per fewest bits): what a gzip body can grow to, before the
/// `max_decompressed_bytes` cap.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// Memory an event takes once decoded, per byte of its JSON text, at most:
/// small events' fixed parts (the event and property slots) about double
/// their text; large strings are near 1:1.
const DECODED_PER_TEXT_BYTE: u64 = 2;

fn declared_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

/// The most memory decoding a body of `len` bytes can take: the body, what
/// it inflates to (if it may be gzip) and the events decoded from that.
fn decode_bound(state: &AppState, len: usize, gzip: bool) -> u64 {
    let len = len as u64;
    let text = if gzip {
        len.saturating_mul(DEFLATE_MAX_RATIO)
            .min(state.config.ingest.max_decompressed_bytes)
    } else {
        len
    };
    len.saturating_add(text.saturating_mul(DECODED_PER_TEXT_BYTE + u64::from(gzip)))
}

/// This request's share of `ingest.max_inflight_bytes`: reserved before a
/// body is read and decoded, given back when the request ends (its events
/// are then counted by the queue's own bounds). A request that does not
/// fit is answered 503, so no burst of uploads can take more memory than
/// the bound, however large its bodies inflate.
struct Memory {
    used: std::sync::Arc<std::sync::atomic::AtomicU64>,
    held: u64,
}

impl Memory {
    fn enter(state: &AppState, bytes: u64) -> Result<Memory, ApiError> {
        let mut m = Memory {
            used: state.ingest_bytes.clone(),
            held: 0,
        };
        m.grow_to(state, bytes)?;
        Ok(m)
    }

    /// Hold `bytes` in all (more, or the same).
    fn grow_to(&mut self, state: &AppState, bytes: u64) -> Result<(), ApiError> {
        use std::sync::atomic::Ordering;
        let more = bytes.saturating_sub(self.held);
        if more == 0 {
            return Ok(());
        }
        let max = state.config.ingest.max_inflight_bytes;
        // An idle server takes any one request its other bounds allow.
        let held = self.held;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used == held || used.saturating_add(more) <= max).then_some(used + more)
            })
            .map_err(|used| {
                metrics::counter!("eddy_ingest_refused_requests_total").increment(1);
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ingest_memory_full",
                    format!(
                        "requests being decoded hold {used} bytes and this one needs {more} more; \
                         the bound is {max} (ingest.max_inflight_bytes); retry later"
                    ),
                )
                .retry_after(state.config.ingest.retry_after)
                .with("accepted", 0)
            })?;
        self.held = bytes;
        Ok(())
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        self.used
            .fetch_sub(self.held, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A refusal before the body is read: the body is read and dropped first
/// (within [`DISCARD_MAX_BYTES`] and [`DISCARD_MAX_TIME`]), as for a 413,
/// so the client, still sending, reads the answer instead of a reset.
async fn refuse_unread<T>(result: Result<T, ApiError>, body: &mut Body) -> Result<T, ApiError> {
    if result.is_err() {
        discard(body).await;
    }
    result
}

/// One of `ingest.max_concurrent_requests`; also what shutdown waits for.
struct InFlight(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl InFlight {
    fn enter(state: &AppState) -> Result<Self, ApiError> {
        use std::sync::atomic::Ordering;
        let max = state.config.ingest.max_concurrent_requests;
        state
            .ingest_requests
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| InFlight(state.ingest_requests.clone()))
            .map_err(|_| {
                // Bodies are buffered whole, so this bound is what keeps the
                // memory of concurrent uploads bounded.
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_requests",
                    format!(
                        "{max} ingest requests are already in progress \
                         (ingest.max_concurrent_requests); retry later"
                    ),
                )
                .retry_after(state.config.ingest.retry_after)
                .with("accepted", 0)
            })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Apply the partial-acceptance policy, queue the valid events and, with
/// the write-ahead log on, wait until they are durable: 2xx only then.
async fn accept(
    state: &AppState,
    decoded: Decoded,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    let Decoded { events, errors, .. } = decoded;
    let rejected = errors.len();
    let stats = &state.stats;
    stats
        .invalid
        .fetch_add(rejected as u64, std::sync::atomic::Ordering::Relaxed);
    metrics::counter!("eddy_ingest_invalid_events_total").increment(rejected as u64);
    if rejected > 0
        && (events.is_empty() || state.config.ingest.on_invalid == InvalidPolicy::RejectRequest)
    {
        let message = if events.is_empty() {
            format!("no valid events: {rejected} rejected; see `errors`")
        } else {
            format!(
                "{rejected} of {} events are invalid and ingest.on_invalid is \"reject-request\": \
                 nothing was accepted; see `errors`",
                rejected + events.len()
            )
        };
        return Err(ApiError::bad_request("invalid_events", message)
            .with("accepted", 0)
            .with("rejected", rejected + events.len())
            .with("errors", json!(errors)));
    }
    let accepted = events.len();
    let ack = match state.queue.try_push(events) {
        Ok(ack) => ack,
        Err(e @ (PushError::Full { .. } | PushError::FullBytes { .. })) => {
            metrics::counter!("eddy_ingest_refused_requests_total").increment(1);
            return Err(
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", e.to_string())
                    .retry_after(state.config.ingest.retry_after)
                    .with("accepted", 0),
            );
        }
        Err(e @ PushError::Closed) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            )
            .retry_after(state.config.ingest.retry_after)
            .with("accepted", 0));
        }
    };
    if let Err(e) = ack.durable().await {
        metrics::counter!("eddy_ingest_wal_refused_requests_total").increment(1);
        let code = match e {
            AckError::DiskFull(_) => "disk_full",
            AckError::Unavailable(_) => "wal_unavailable",
        };
        return Err(
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string())
                .retry_after(state.config.ingest.retry_after)
                .with("accepted", 0),
        );
    }
    metrics::counter!("eddy_ingest_events_total").increment(accepted as u64);
    Ok((
        StatusCode::ACCEPTED,
        json!({ "accepted": accepted, "rejected": rejected, "errors": errors }),
    ))
}

/// The ingest bounds of `[ingest]` (see [`IngestConfig::limits`]).
pub fn limits(c: &IngestConfig) -> Limits {
    c.limits()
}

fn decode_error(e: ingest::DecodeError) -> ApiError {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    ApiError::new(status, e.code(), e.to_string()).with("accepted", 0)
}

/// The media type without parameters, lower-cased.
fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

fn check_content_type(headers: &HeaderMap, format: Format) -> Result<(), ApiError> {
    let media = media_type(headers);
    let ok = match (&format, media.as_deref()) {
        (Format::Json, Some(m)) => m == "application/json" || m.ends_with("+json"),
        (Format::Ndjson, Some(m)) => {
            matches!(
                m,
                "application/x-ndjson" | "application/jsonl" | "application/x-jsonlines"
            )
        }
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let expected = match format {
        Format::Ndjson => "application/x-ndjson",
        _ => "application/json",
    };
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "Content-Type must be {expected}, not {}",
            media.map_or_else(|| "missing".to_owned(), |m| format!("`{m}`"))
        ),
    ))
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let value = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match value.as_deref() {
        None | Some("" | "identity") => Ok(Encoding::Identity),
        Some("gzip" | "x-gzip") => Ok(Encoding::Gzip),
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding `{other}` is not supported; send gzip or no encoding"),
        )),
    }
}

/// Read the whole body within `server.max_body_bytes` and
/// `server.body_timeout_ms`.
async fn read_body(state: &AppState, body: Body, headers: &HeaderMap) -> Result<Bytes, ApiError> {
    let limit = usize::try_from(state.config.server.max_body_bytes).unwrap_or(usize::MAX);
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than server.max_body_bytes = {limit} bytes"),
        )
        .with("accepted", 0)
    };
    // A declared oversize body is refused without being kept. It is still
    // read (and dropped) up to a bound, because closing a connection while
    // the client is still sending makes its TCP stack reset the connection,
    // which can destroy the 413 before the client reads it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = body;
    if declared.is_some_and(|n| n > limit as u64) {
        discard(&mut body).await;
        return Err(too_large());
    }
    let timeout = state.config.server.body_timeout;
    let read = async {
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::bad_request(
                    "body_read_failed",
                    format!("the request body could not be read: {e}"),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    discard(&mut body).await;
                    return Err(too_large());
                }
                if buf.is_empty() && data.len() == declared.unwrap_or(0) as usize {
                    // The whole body in one frame: keep it without a copy.
                    return Ok(data);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within server.body_timeout_ms = {} ms",
                timeout.as_millis()
            ),
        )),
        Ok(result) => result,
    }
}

/// Most of a refused body read and dropped before answering, and how long
/// that may take: enough for an ordinary oversize upload to finish sending,
/// so the client reads the 413 instead of a reset; anything larger or
/// slower is cut off.
const DISCARD_MAX_BYTES: usize = 64 * 1024 * 1024;
const DISCARD_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);

async fn discard(body: &mut Body) {
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DISCARD_MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_MAX_TIME, drain).await;
}
