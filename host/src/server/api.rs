//! The HTTP API's description: the OpenAPI document is generated from the
//! handlers' `#[utoipa::path]` annotations as the router is built
//! ([`routes`]: a route cannot be served without its operation), and the
//! query parameters are types here that both the handlers parse with and
//! the document describes (their ranges, enums, formats and lengths). What
//! depends on the configuration — the ingest limits an event must keep to,
//! the events `/v1/events/recent` can return — is filled in from the
//! running configuration when the document is served ([`document`]).

use std::collections::HashMap;

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{KnownFormat, OpenApi as Document, RefOr, Schema};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::{AppState, alerts, ingest, patterns, reload, rest, sse, windows, ws};
use crate::config::Config;

/// Largest `limit` of every list: one response stays within a few MB.
pub const MAX_LIMIT: usize = 100_000;

/// The latest time a bound may name, in ms (9999-12-31T23:59:59.999Z).
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "eddy",
        description = "Real-time analytics host: ingest, live streams, windows, patterns, alerts, \
                       plugins. Errors are {\"error\": message, \"code\": code, ...}. \
                       With [auth] keys configured, requests present a key as \
                       `Authorization: Bearer <key>` or `?api_key=<key>`."
    ),
    security(("bearer" = []), ("apiKeyQuery" = []), ()),
    modifiers(&SecuritySchemes),
    components(schemas(Error, ItemError, IngestResult, PostHogResult, Event, TimeBound)),
    tags(
        (name = "ingest", description = "Events in: eddy's own format and PostHog's capture API"),
        (name = "streams", description = "Live channels: WebSocket and Server-Sent Events"),
        (name = "rest", description = "Recent events, channels and counters"),
        (name = "windows", description = "Windows, live views and patterns"),
        (name = "alerts", description = "Alert instances and their transitions"),
        (name = "plugins", description = "Plugins and configuration reloads"),
        (name = "ops", description = "Dashboard, health, metrics and this document"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "apiKeyQuery",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("api_key"))),
        );
    }
}

/// Every route eddy serves through the router, each registered with its
/// operation. The dashboard's static files are merged beside these
/// ([`super::dashboard`]) and documented by [`dashboard_page`].
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ingest::events))
        .routes(routes!(ingest::batch))
        .routes(routes!(ingest::capture))
        .routes(routes!(ingest::capture_slash))
        .routes(routes!(ingest::posthog_batch))
        .routes(routes!(ingest::posthog_batch_slash))
        .routes(routes!(ingest::e))
        .routes(routes!(ingest::e_slash))
        .routes(routes!(ingest::i_v0_e))
        .routes(routes!(ingest::i_v0_e_slash))
        .routes(routes!(ws::upgrade))
        .routes(routes!(sse::stream))
        .routes(routes!(rest::recent_events))
        .routes(routes!(rest::channels))
        .routes(routes!(rest::plugins))
        .routes(routes!(rest::reload_plugin))
        .routes(routes!(rest::rollback_plugin))
        .routes(routes!(reload::admin_reload))
        .routes(routes!(rest::stats))
        .routes(routes!(windows::list))
        .routes(routes!(windows::open))
        .routes(routes!(windows::history))
        .routes(routes!(patterns::list))
        .routes(routes!(patterns::matches))
        .routes(routes!(alerts::list))
        .routes(routes!(alerts::history))
        .routes(routes!(windows::live_users))
        .routes(routes!(windows::live_pages))
        .routes(routes!(rest::metrics))
        .routes(routes!(rest::healthz))
        .routes(routes!(rest::readyz))
        .routes(routes!(rest::openapi))
}

/// The dashboard (served by [`super::dashboard::router`], merged beside
/// [`routes`]); this operation documents it.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "dashboard",
    tag = "ops",
    summary = "The live dashboard",
    description = "HTML; its scripts, styles and the uPlot chart library are served beside it: \
                   /app.js, /style.css, /vendor/uPlot.iife.min.js, /vendor/uPlot.min.css. \
                   Embedded in the binary; ETag and If-None-Match (304), gzip or brotli by \
                   Accept-Encoding. No key needed: the page asks for a read key when \
                   [auth] read_keys is set and keeps it in the browser.",
    security(()),
    responses(
        (status = 200, description = "The dashboard page", content_type = "text/html", body = String),
        (status = 304, description = "Not modified (If-None-Match matched the ETag)"),
    )
)]
#[allow(dead_code)] // documents a route the dashboard's router serves
fn dashboard_page() {}

/// The document for a server running `config`.
pub fn document(config: &Config) -> Document {
    let (_, mut doc) = routes().split_for_parts();
    let mut dashboard = DashboardDoc::openapi();
    doc.paths.paths.append(&mut dashboard.paths.paths);
    doc.servers = Some(vec![utoipa::openapi::Server::new(format!(
        "http://{}",
        config.server.listen
    ))]);
    let limits = config.ingest.limits();
    if let Some(components) = doc.components.as_mut() {
        components
            .schemas
            .insert("Event".to_owned(), event_schema(&limits).into());
    }
    // `/v1/events/recent` returns at most what the replay ring keeps; a
    // larger `limit` is clamped, never refused, and the document says so.
    let kept = config.streams.replay_capacity;
    if let Some(op) = doc
        .paths
        .paths
        .get_mut("/v1/events/recent")
        .and_then(|item| item.get.as_mut())
        && let Some(RefOr::T(param)) = op
            .parameters
            .iter_mut()
            .flatten()
            .find(|p| matches!(p, RefOr::T(p) if p.name == "limit"))
    {
        param.description = Some(format!(
            "The newest this many (1 to {MAX_LIMIT}, default {DEFAULT_RECENT}); this server \
             keeps the last {kept} (`streams.replay_capacity`), and a larger limit returns \
             what is kept."
        ));
    }
    doc
}

#[derive(OpenApi)]
#[openapi(paths(dashboard_page))]
struct DashboardDoc;

/// The ingest event as `[ingest]` limits it.
fn event_schema(limits: &crate::ingest::Limits) -> Schema {
    let text = |what: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .description(Some(format!(
                "{what}; at most {} bytes of UTF-8 (ingest.max_string_bytes)",
                limits.max_string_bytes
            )))
            .build()
    };
    let event = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(format!(
            "An event. At most {} bytes of JSON (ingest.max_event_bytes); a timestamp \
             within ingest.max_age_ms ({} ms) before and ingest.future_skew_ms ({} ms) after \
             the server's clock.",
            limits.max_event_bytes, limits.max_age_ms, limits.future_skew_ms
        )))
        .required("name")
        .required("distinct_id")
        .property(
            "id",
            text("Unique id (default: a UUIDv7); a repeated id is deduplicated"),
        )
        .property("name", text("Event name (also accepted as `event`)"))
        .property("distinct_id", text("The user"))
        .property("session_id", text("The session, if any"))
        .property("timestamp", TimeBound::schema())
        .property(
            "properties",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .max_properties(Some(limits.max_properties))
                .description(Some(format!(
                    "At most {} properties (ingest.max_properties); keys at most {} bytes \
                     (ingest.max_key_bytes); values nest at most {} deep (ingest.max_depth)",
                    limits.max_properties, limits.max_key_bytes, limits.max_depth
                ))),
        )
        .build();
    Schema::Object(event)
}

/// Default `limit` of `/v1/events/recent`.
pub const DEFAULT_RECENT: usize = 100;

// ---------------------------------------------------------------------------
// Bodies.

/// Every 4xx and 5xx body: `error` for people, `code` for programs, and
/// where it helps more fields.
#[derive(ToSchema)]
#[allow(dead_code)] // describes ApiError's JSON
pub struct Error {
    /// What went wrong, for people.
    error: String,
    /// What went wrong, for programs (e.g. `invalid_json`, `queue_full`).
    code: String,
    /// The events refused, for an ingest request.
    #[schema(nullable = false)]
    errors: Option<Vec<ItemError>>,
    /// Events accepted by this request (ingest errors: always 0).
    #[schema(nullable = false)]
    accepted: Option<u64>,
    /// Seconds to wait, as in `Retry-After` (429 and 503).
    #[schema(nullable = false)]
    retry_after_s: Option<u64>,
}

/// One refused event of an ingest request.
#[derive(ToSchema, serde::Serialize)]
pub struct ItemError {
    /// Its index in a JSON array body.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Its line in an NDJSON body (from 1).
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Why it was refused.
    pub error: String,
}

/// The answer to an accepted ingest request.
#[derive(ToSchema)]
#[allow(dead_code)] // describes the body ingest::accept builds
pub struct IngestResult {
    /// Events accepted (durable when the write-ahead log is on).
    accepted: u64,
    /// Events refused (see `errors`).
    rejected: u64,
    errors: Vec<ItemError>,
}

/// The answer to an accepted PostHog request: [`IngestResult`] and
/// PostHog's `status`.
#[derive(ToSchema)]
#[allow(dead_code)] // describes the body ingest::posthog builds
pub struct PostHogResult {
    accepted: u64,
    rejected: u64,
    errors: Vec<ItemError>,
    /// Always 1, as PostHog answers.
    #[schema(minimum = 1, maximum = 1)]
    status: u8,
}

/// A time: milliseconds since the Unix epoch, or RFC 3339.
pub struct TimeBound;

impl PartialSchema for TimeBound {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(MAX_TIME_MS))
                    .description(Some("ms since the Unix epoch")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                    .description(Some("RFC 3339")),
            )
            .into()
    }
}

impl ToSchema for TimeBound {}

/// A JSON object (the response bodies whose fields docs/api.md lists).
#[allow(dead_code)] // used in the annotations only
pub type Object = serde_json::Map<String, serde_json::Value>;

/// `{events: [...]}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RecentEvents {
    events: Vec<Event>,
}

/// Referenced as `#/components/schemas/Event`; [`document`] replaces it
/// with the running configuration's limits.
pub struct Event;

impl PartialSchema for Event {
    fn schema() -> RefOr<Schema> {
        event_schema(&crate::ingest::Limits::default()).into()
    }
}

impl ToSchema for Event {}

/// A body of `/v1/events`: one event or an array of them.
pub struct EventOrEvents;

impl PartialSchema for EventOrEvents {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Event")))
            .item(
                ArrayBuilder::new()
                    .items(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Event")))
                    .min_items(Some(1)),
            )
            .into()
    }
}

impl ToSchema for EventOrEvents {}

// ---------------------------------------------------------------------------
// Responses every operation of a kind shares.

/// A read of a guarded route without the right key.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum ReadDenied {
    /// API key missing
    #[response(status = 401)]
    Missing(Error),
    /// API key not valid for this operation
    #[response(status = 403)]
    Invalid(Error),
}

/// An answer the engine gives: it may be busy.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum EngineBusy {
    /// The engine did not answer within 5 s (`engine_busy`); see Retry-After
    #[response(status = 503)]
    Busy(Error),
}

/// Refusals of an ingest request.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum IngestRefused {
    /// Invalid request: not JSON, no valid event (`errors` names each), a bad
    /// encoding
    #[response(status = 400)]
    Invalid(Error),
    /// API key missing
    #[response(status = 401)]
    Missing(Error),
    /// API key not valid for this operation
    #[response(status = 403)]
    Forbidden(Error),
    /// The body did not arrive within server.body_timeout_ms
    #[response(status = 408)]
    Timeout(Error),
    /// Body or batch too large (server.max_body_bytes, ingest.max_events_per_request,
    /// ingest.max_decompressed_bytes)
    #[response(status = 413)]
    TooLarge(Error),
    /// Unsupported content type or encoding
    #[response(status = 415)]
    Unsupported(Error),
    /// Ingest queue full (ingest.queue_events or ingest.queue_bytes); nothing
    /// accepted; see Retry-After
    #[response(status = 429)]
    QueueFull(Error),
    /// Unavailable: shutting down (`shutting_down`), too many ingest requests in
    /// progress (`too_many_requests`), their memory bound reached
    /// (`ingest_memory_full`) or the write-ahead log not writable (`disk_full`,
    /// `wal_unavailable`); nothing accepted; see Retry-After
    #[response(status = 503)]
    Unavailable(Error),
}

// ---------------------------------------------------------------------------
// Parameters: what the handlers parse, and what the document states.

/// `{name}` of a window.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct WindowName {
    /// The window's name ([[windows]] name).
    #[param(min_length = 1, max_length = 256)]
    name: String,
}

/// `{name}` of a pattern.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct PatternName {
    /// The pattern's name ([[patterns]] name, or the pattern plugin's).
    #[param(min_length = 1, max_length = 256)]
    name: String,
}

/// `{name}` of a plugin.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct PluginName {
    /// The plugin's name: its file name in the plugins folder without
    /// `.wasm` (letters, digits, `-`, `_`).
    #[param(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_-]+$")]
    name: String,
}

impl PluginName {
    /// The name, if it is one a plugin file can have.
    pub fn parse(name: &str) -> Result<&str, ApiError> {
        let valid = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            Ok(name)
        } else {
            Err(ApiError::bad_request(
                "bad_plugin_name",
                format!(
                    "`{name}` is not a plugin name (1 to 128 letters, digits, `-` or `_`: \
                     the file name without .wasm)"
                ),
            ))
        }
    }
}

/// `limit`, 1 to [`MAX_LIMIT`].
fn limit(q: &HashMap<String, String>, default: usize) -> Result<usize, ApiError> {
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

/// A [`TimeBound`] parameter.
fn time(q: &HashMap<String, String>, key: &str) -> Result<Option<i64>, ApiError> {
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
                    "`{key}` must be milliseconds since the Unix epoch or an RFC 3339 time \
                     (2026-11-23T10:00:00Z), not `{v}`"
                ),
            )
        })
}

/// One of a closed set of words; empty means none.
fn word<T: Copy>(
    q: &HashMap<String, String>,
    key: &str,
    code: &'static str,
    words: &[(&str, T)],
) -> Result<Option<T>, ApiError> {
    match q.get(key).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(v) => words
            .iter()
            .find(|(w, _)| *w == v)
            .map(|(_, t)| Some(*t))
            .ok_or_else(|| {
                let names: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
                ApiError::bad_request(
                    code,
                    format!("`{key}` must be one of {}, not `{v}`", names.join(", ")),
                )
            }),
    }
}

/// `?limit=` of `/v1/events/recent`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecentQuery {
    /// The newest this many (1 to 100000, default 100); at most
    /// `streams.replay_capacity` are kept, and a larger limit returns what
    /// is kept.
    #[param(value_type = Option<usize>, minimum = 1, maximum = 100000, default = 100)]
    pub limit: usize,
}

impl RecentQuery {
    pub fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        Ok(Self {
            limit: limit(q, DEFAULT_RECENT)?,
        })
    }
}

/// Default `limit` of the window lists and the alert history.
pub const DEFAULT_LIST_LIMIT: usize = 1_000;
/// Default `limit` of the live views (a dashboard panel).
pub const DEFAULT_LIVE_LIMIT: usize = 10;
/// Default `limit` of a pattern's matches.
pub const DEFAULT_MATCHES_LIMIT: usize = 100;

/// `?limit=` of `/v1/windows/{name}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OpenQuery {
    /// Most groups (1 to 100000, default 1000).
    #[param(value_type = Option<usize>, minimum = 1, maximum = 100000, default = 1000)]
    pub limit: usize,
}

impl OpenQuery {
    pub fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        Ok(Self {
            limit: limit(q, DEFAULT_LIST_LIMIT)?,
        })
    }
}

/// `?limit=` of the live views.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiveQuery {
    /// Most entries (1 to 100000, default 10).
    #[param(value_type = Option<usize>, minimum = 1, maximum = 100000, default = 10)]
    pub limit: usize,
}

impl LiveQuery {
    pub fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        Ok(Self {
            limit: limit(q, DEFAULT_LIVE_LIMIT)?,
        })
    }
}

/// The parameters of `/v1/windows/{name}/history`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Windows starting at or after this: ms since the epoch or RFC 3339.
    #[param(value_type = Option<TimeBound>, inline)]
    pub from: Option<i64>,
    /// Windows ending at or before this: ms since the epoch or RFC 3339.
    #[param(value_type = Option<TimeBound>, inline)]
    pub to: Option<i64>,
    /// Only groups with some dimension equal to this (as text).
    /// `group.<dim>=value` matches one dimension, e.g.
    /// `group.properties.$current_url=/pricing`.
    #[param(value_type = Option<String>)]
    pub group: Vec<(String, String)>,
    /// The newest this many (1 to 100000, default 1000).
    #[param(value_type = Option<usize>, minimum = 1, maximum = 100000, default = 1000)]
    pub limit: usize,
}

impl HistoryQuery {
    pub fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
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
        Ok(Self {
            from: time(q, "from")?,
            to: time(q, "to")?,
            group,
            limit: limit(q, DEFAULT_LIST_LIMIT)?,
        })
    }
}

/// `kind` of a pattern result.
#[derive(ToSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[schema(rename_all = "lowercase")]
pub enum MatchKind {
    Match,
    Timeout,
}

/// The parameters of `/v1/patterns/{name}/matches`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MatchesQuery {
    /// Most results (1 to 100000, default 100).
    #[param(value_type = Option<usize>, minimum = 1, maximum = 100000, default = 100)]
    pub limit: usize,
    /// `match` or `timeout` (default: both).
    #[param(inline)]
    pub kind: Option<MatchKind>,
}

impl MatchesQuery {
    pub fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        Ok(Self {
            kind: word(
                q,
                "kind",
                "bad_kind",
                &[("match", MatchKind::Match), ("timeout", MatchKind::Timeout)],
            )?,
            limit: limit(q, DEFAULT_MATCHES_LIMIT)?,
        })
    }
}

/// `state` of an alert transition.
#[derive(ToSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[schema(rename_all = "lowercase")]
pub enum TransitionState {
    Pending,
    Firing,
    Resolved,
    Nodata,
}

/// The parameters of `/v1/alerts/history`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertHistoryQuery {
    /// Earliest transition time: ms since the Unix epoch or RFC 3339.
    #[param(value_type = Option<TimeBound>, inline)]
    pub from: Option<i64>,
    /// Latest transition time: ms since the Unix epoch or RFC 3339.
    #[param(value_type = Option<TimeBound>, inline)]
    pub to: Option<i64>,
    /// Only transitions into this state.
    #[param(inline)]
    pub state: Option<TransitionState>,
    /// The newest this many (1 to 100000, default 1000).
    #[param(value_type = Option<usize>, minimum = 1, maximum = 100000, default = 1000)]
    pub limit: usize,
}

impl AlertHistoryQuery {
    pub fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        use TransitionState as S;
        Ok(Self {
            from: time(q, "from")?,
            to: time(q, "to")?,
            state: word(
                q,
                "state",
                "bad_state",
                &[
                    ("pending", S::Pending),
                    ("firing", S::Firing),
                    ("resolved", S::Resolved),
                    ("nodata", S::Nodata),
                ],
            )?,
            limit: limit(q, DEFAULT_LIST_LIMIT)?,
        })
    }
}

/// `compression` of the PostHog routes, as posthog-js sends it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum Compression {
    #[schema(rename = "gzip-js")]
    GzipJs,
    #[schema(rename = "gzip")]
    Gzip,
    #[schema(rename = "base64")]
    Base64,
}

/// The query of the PostHog routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PostHogQuery {
    /// How the body is encoded when no Content-Encoding says (posthog-js
    /// sends `gzip-js`).
    #[param(inline)]
    compression: Option<Compression>,
}

/// The query of `/v1/sse` (parsed by [`super::streams::SubscribeRequest`],
/// as the WebSocket's `subscribe` is).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SseQuery {
    /// events, plugins, stats, dead-letters, late, alerts, windows/<name>,
    /// patterns/<name>
    #[param(min_length = 1)]
    channel: String,
    /// Resume after this sequence number (or send `Last-Event-ID`).
    #[param(minimum = 0)]
    since: Option<u64>,
    /// Comma-separated event names (any of).
    names: Option<String>,
    /// field:op:value, repeatable; ops equals, not_equals, contains, gt, lt,
    /// is_set, is_not_set.
    r#where: Option<String>,
    /// Comma-separated projection.
    fields: Option<String>,
}

/// `Last-Event-ID`, the header an EventSource resumes with.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct LastEventId {
    /// Resume after this sequence number.
    #[param(rename = "Last-Event-ID", nullable = false, minimum = 0)]
    last_event_id: Option<u64>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "test", &|_| None).unwrap()
    }

    fn doc() -> Value {
        serde_json::to_value(document(&config(crate::config::DEFAULT_CONFIG))).unwrap()
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_operation_has_a_success() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "operationId {id} twice");
                let responses = op["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|k| k.starts_with('2') || k == "101"),
                    "{method} {path} has no success response"
                );
                assert!(
                    op["tags"].as_array().is_some_and(|t| t.len() == 1),
                    "{method} {path}"
                );
                assert!(
                    op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                    "{method} {path}"
                );
            }
        }
    }

    /// The bounds the document states are the ones the parsers enforce.
    #[test]
    fn documented_bounds_are_the_enforced_ones() {
        let doc = doc();
        let mut limits = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let schema = &p["schema"];
                    match p["name"].as_str().unwrap() {
                        "limit" => {
                            limits += 1;
                            assert_eq!(schema["minimum"], 1, "{method} {path}");
                            assert_eq!(schema["maximum"], MAX_LIMIT, "{method} {path}");
                            let q = HashMap::from([("limit".to_owned(), MAX_LIMIT.to_string())]);
                            assert_eq!(limit(&q, 1).unwrap(), MAX_LIMIT);
                            let q =
                                HashMap::from([("limit".to_owned(), (MAX_LIMIT + 1).to_string())]);
                            assert!(limit(&q, 1).is_err());
                            // The documented default is the parser's.
                            let default = schema["default"].as_u64().unwrap() as usize;
                            let parsed = match path.as_str() {
                                "/v1/events/recent" => {
                                    RecentQuery::parse(&HashMap::new()).unwrap().limit
                                }
                                "/v1/windows/{name}" => {
                                    OpenQuery::parse(&HashMap::new()).unwrap().limit
                                }
                                "/v1/windows/{name}/history" => {
                                    HistoryQuery::parse(&HashMap::new()).unwrap().limit
                                }
                                "/v1/patterns/{name}/matches" => {
                                    MatchesQuery::parse(&HashMap::new()).unwrap().limit
                                }
                                "/v1/alerts/history" => {
                                    AlertHistoryQuery::parse(&HashMap::new()).unwrap().limit
                                }
                                "/v1/live/users" | "/v1/live/pages" => {
                                    LiveQuery::parse(&HashMap::new()).unwrap().limit
                                }
                                other => panic!("a limit on {other} no parser is known for"),
                            };
                            assert_eq!(default, parsed, "{method} {path}");
                        }
                        "from" | "to" => {
                            let one_of = schema["oneOf"].as_array().unwrap();
                            assert_eq!(one_of[0]["maximum"], MAX_TIME_MS);
                            let q = HashMap::from([("from".to_owned(), MAX_TIME_MS.to_string())]);
                            assert_eq!(time(&q, "from").unwrap(), Some(MAX_TIME_MS));
                        }
                        _ => {}
                    }
                }
            }
        }
        assert_eq!(limits, 7, "every list's limit");
    }

    #[test]
    fn documented_enums_are_the_parsed_words() {
        let doc = doc();
        let param = |path: &str, name: &str| -> Vec<String> {
            doc["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap()["schema"]["enum"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        for word in param("/v1/patterns/{name}/matches", "kind") {
            let q = HashMap::from([("kind".to_owned(), word.clone())]);
            assert!(MatchesQuery::parse(&q).unwrap().kind.is_some(), "{word}");
        }
        let states = param("/v1/alerts/history", "state");
        assert_eq!(states.len(), 4);
        for word in states {
            let q = HashMap::from([("state".to_owned(), word.clone())]);
            assert!(
                AlertHistoryQuery::parse(&q).unwrap().state.is_some(),
                "{word}"
            );
        }
        let q = HashMap::from([("kind".to_owned(), "matches".to_owned())]);
        assert_eq!(MatchesQuery::parse(&q).err().unwrap().code, "bad_kind");
    }

    #[test]
    fn plugin_names_the_document_allows_are_the_parsed_ones() {
        let doc = doc();
        let schema = &doc["paths"]["/v1/plugins/{name}/reload"]["post"]["parameters"][0]["schema"];
        assert_eq!(schema["pattern"], "^[A-Za-z0-9_-]+$");
        assert_eq!(schema["maxLength"], 128);
        assert!(PluginName::parse(&"a".repeat(128)).is_ok());
        assert!(PluginName::parse(&"a".repeat(129)).is_err());
        assert!(PluginName::parse("").is_err());
        assert!(PluginName::parse("ua-enricher_2").is_ok());
        assert!(PluginName::parse("../x").is_err());
    }

    #[test]
    fn the_event_schema_states_the_running_limits() {
        let doc =
            serde_json::to_value(document(&config("[ingest]\nmax_properties = 7\n"))).unwrap();
        let event = &doc["components"]["schemas"]["Event"];
        assert_eq!(event["properties"]["properties"]["maxProperties"], 7);
        assert_eq!(
            event["required"],
            serde_json::json!(["name", "distinct_id"])
        );
        assert_eq!(event["properties"]["name"]["minLength"], 1);
    }
}
