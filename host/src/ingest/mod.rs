//! Decoding and validating events: the one decoder behind every way events
//! come in.
//!
//! Pure library code: the HTTP layer hands over the raw body bytes plus what
//! it knows about them ([`Format`], [`Encoding`], for PostHog the
//! [`PostHogRequest`] metadata) and maps a [`DecodeError`] to a status with
//! [`DecodeError::status`] and [`DecodeError::code`]. Drivers that stream
//! NDJSON files (`eddy pipe`, replays) decode line by line with a
//! [`LineDecoder`] configured by [`DecodeOptions`]: the same code path and
//! the same per-event limits as `POST /v1/batch`, with their own clock and
//! id rules.
//!
//! ```
//! use eddy::ingest::{DecodeOptions, IdMode, Limits, LineDecoder};
//!
//! let decoder = LineDecoder::new(DecodeOptions {
//!     limits: Limits::default(),
//!     now_ms: None,
//!     check_time: false,
//!     ids: IdMode::Line,
//! });
//! let line = br#"{"name":"signup","distinct_id":"u1","timestamp":"2024-05-01T12:00:00Z"}"#;
//! let event = decoder.decode(line, 3).map_err(|e| e.to_string())?;
//! assert_eq!((event.id.as_str(), event.timestamp), ("line-3", 1_714_564_800_000));
//! # Ok::<(), String>(())
//! ```
//!
//! Two kinds of failure:
//! - a [`DecodeError`] rejects the whole request (nothing accepted): the body
//!   is not gzip, not UTF-8, not JSON, too deep, too large, empty, or holds
//!   too many events;
//! - an [`ItemError`] rejects one event of a batch; the others are still
//!   returned in [`Decoded::events`], in request order.
//!
//! Events are built straight from the JSON text by serde visitors (no
//! intermediate `serde_json::Value` per event), and every recursion is
//! bounded by [`Limits::max_depth`] plus [`BODY_DEPTH_SLACK`], below
//! serde_json's own recursion limit of 128, so no input can overflow the stack.

mod body;
mod check;
mod error;
mod fast;
pub mod fuzzing;
mod line;
mod native;
mod nested;
mod posthog;
mod posthog_parse;
mod props;
mod validate;
mod value;

#[cfg(test)]
mod native_tests;
#[cfg(test)]
mod posthog_tests;
#[cfg(test)]
mod request_tests;

use serde::Serialize;

use crate::event::Event;

pub use check::{InvalidEvent, ValueRef, check_event, check_property};
pub use error::DecodeError;
pub use line::{LineDecoder, wall_directive};
pub use posthog::{PostHogRequest, decode_posthog};

/// Default [`Limits::max_events_per_request`]: PostHog's batch endpoint
/// accepts about this many, and 10k events of ~200 bytes stay near 2 MB.
pub const DEFAULT_MAX_EVENTS_PER_REQUEST: usize = 10_000;
/// Default [`Limits::max_event_bytes`]: 64 KiB, far above a typical event
/// (~0.2–2 KB) yet small enough that one event cannot hog a batch.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024;
/// Default [`Limits::max_properties`]: 512 top-level properties, more than
/// any real SDK sends (posthog-js sends ~60 with autocapture).
pub const DEFAULT_MAX_PROPERTIES: usize = 512;
/// Default [`Limits::max_key_bytes`]: 256 bytes per property key.
pub const DEFAULT_MAX_KEY_BYTES: usize = 256;
/// Default [`Limits::max_string_bytes`]: 16 KiB per string value, room for
/// long URLs and user agents, not for blobs.
pub const DEFAULT_MAX_STRING_BYTES: usize = 16 * 1024;
/// Default [`Limits::max_depth`]: 16 levels of objects/arrays inside a
/// property value.
pub const DEFAULT_MAX_DEPTH: usize = 16;
/// Default [`Limits::future_skew_ms`]: 5 minutes of client clock skew.
pub const DEFAULT_FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;
/// Default [`Limits::max_age_ms`]: 7 days, how long an offline client may
/// buffer events.
pub const DEFAULT_MAX_AGE_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Default [`Limits::max_decompressed_bytes`]: 64 MiB of gzip output.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// Levels of JSON nesting a body may have beyond [`Limits::max_depth`]
/// before it is rejected whole as `too_deep`: the structure around a
/// property value takes up to four (PostHog batch wrapper object, `batch`
/// array, event object, `properties` object); the other four let a property
/// that is somewhat too deep be reported as an item error of its event.
pub const BODY_DEPTH_SLACK: usize = 8;

/// Validation bounds (every one has a config key set by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Most events in one request; more is `too_many_events` (413).
    pub max_events_per_request: usize,
    /// Largest event, in bytes of JSON text: exact for NDJSON lines and
    /// single-event bodies; for array elements a lower-bound estimate (the
    /// element's compact size, counting unescaped string bytes).
    pub max_event_bytes: usize,
    /// Most top-level properties per event.
    pub max_properties: usize,
    /// Longest property key (top-level and nested), in bytes.
    pub max_key_bytes: usize,
    /// Longest string value (ids, names, property values), in bytes.
    pub max_string_bytes: usize,
    /// Deepest nesting of objects/arrays inside a property value; the whole
    /// body may nest [`BODY_DEPTH_SLACK`] levels more.
    pub max_depth: usize,
    /// Timestamps later than `now + future_skew_ms` are rejected.
    pub future_skew_ms: i64,
    /// Timestamps earlier than `now - max_age_ms` are rejected.
    pub max_age_ms: i64,
    /// Most bytes gzip may inflate to (zip-bomb guard).
    pub max_decompressed_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_events_per_request: DEFAULT_MAX_EVENTS_PER_REQUEST,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_properties: DEFAULT_MAX_PROPERTIES,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_string_bytes: DEFAULT_MAX_STRING_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            future_skew_ms: DEFAULT_FUTURE_SKEW_MS,
            max_age_ms: DEFAULT_MAX_AGE_MS,
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
        }
    }
}

impl Limits {
    /// Deepest container nesting allowed anywhere in a body (the outermost
    /// object or array is level 1).
    pub fn body_max_depth(&self) -> usize {
        self.max_depth.saturating_add(BODY_DEPTH_SLACK)
    }
}

/// How the decoder treats time and ids: everything that differs between
/// the server and a replay of a recorded file. Limits are always applied.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// Per-event bounds. [`Limits::max_events_per_request`] only bounds
    /// whole bodies ([`decode`]); a [`LineDecoder`] has no event count.
    pub limits: Limits,
    /// The clock (ms since the Unix epoch): the timestamp of an event that
    /// gives none, and the reference of the [`check_time`] window. `None`
    /// (no clock): an event without a timestamp is an item error.
    ///
    /// [`check_time`]: DecodeOptions::check_time
    pub now_ms: Option<i64>,
    /// Reject timestamps outside `[now - max_age, now + future_skew]`
    /// ([`Limits::max_age_ms`], [`Limits::future_skew_ms`]); needs
    /// `now_ms`. On for the server; off for replays of recorded files,
    /// whose timestamps are as old as the recording.
    pub check_time: bool,
    /// Where an event without an `id` gets one.
    pub ids: IdMode,
}

impl DecodeOptions {
    /// The server's options: `now_ms` is the receive time, timestamps are
    /// checked, ids are random. [`decode`] and [`decode_posthog`] use these.
    pub fn server(limits: Limits, now_ms: i64) -> DecodeOptions {
        DecodeOptions {
            limits,
            now_ms: Some(now_ms),
            check_time: true,
            ids: IdMode::Random,
        }
    }
}

/// How an event without an `id` gets one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdMode {
    /// A fresh UUID v7, time-ordered by the clock (by the event's timestamp
    /// when there is no clock). What the server does.
    #[default]
    Random,
    /// `line-N`, N the event's 1-based line number in the whole input (for
    /// a JSON body, its 1-based position): the same input gives the same
    /// ids, as `eddy pipe` and `eddy plugin test` need.
    Line,
}

/// The item error of an event without a timestamp when there is no clock.
pub const NO_CLOCK: &str = "missing required field `timestamp` (no clock to default it from: \
                            add a timestamp or a {\"$wall\": MS} line)";

/// Where in a request an item error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// 0-based position in a JSON array (a single-object body is index 0).
    Index(usize),
    /// 1-based line of an NDJSON body, blank lines counted.
    Line(usize),
}

/// One event of a batch that was rejected. Serializes as
/// `{"index":3,"error":"..."}` or `{"line":4,"error":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemError {
    /// Where the event is.
    #[serde(flatten)]
    pub location: Location,
    /// Why it was rejected; names the field, e.g.
    /// `properties.price: integer out of range (must fit in 64-bit signed)`.
    pub error: String,
}

impl std::fmt::Display for ItemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.location {
            Location::Index(i) => write!(f, "index {i}: {}", self.error),
            Location::Line(l) => write!(f, "line {l}: {}", self.error),
        }
    }
}

/// The events of one request that passed validation, in request order, plus
/// the rejected ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    /// Accepted events, in request order.
    pub events: Vec<Event>,
    /// Rejected events, in request order.
    pub errors: Vec<ItemError>,
    /// PostHog `api_key`/`token` when present (batch level first, else the
    /// one all events agree on). Always `None` for native formats.
    pub api_key: Option<String>,
}

/// Body shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One event object or an array of them (`POST /v1/events`).
    Json,
    /// One event per line; blank lines skipped (`POST /v1/batch`).
    Ndjson,
    /// PostHog capture API bodies. Through [`decode`] this is
    /// [`decode_posthog`] with an empty [`PostHogRequest`]: gzip and form
    /// bodies are still recognised by sniffing, but a `compression` query
    /// parameter cannot be honoured.
    PostHog,
}

/// Content-Encoding of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// Not compressed.
    #[default]
    Identity,
    /// gzip.
    Gzip,
}

impl Encoding {
    /// The encoding named by a `Content-Encoding` header value (absent,
    /// `identity`, `gzip` or `x-gzip`, case-insensitive); anything else is
    /// `unsupported_encoding` (415).
    pub fn from_header(value: Option<&str>) -> Result<Encoding, DecodeError> {
        let Some(v) = value.map(str::trim) else {
            return Ok(Encoding::Identity);
        };
        if v.is_empty() || v.eq_ignore_ascii_case("identity") {
            Ok(Encoding::Identity)
        } else if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") {
            Ok(Encoding::Gzip)
        } else {
            Err(DecodeError::UnsupportedEncoding(error::preview(v)))
        }
    }
}

/// Decode one request body. `now_ms` is the server's receive time (ms since
/// the Unix epoch): the default timestamp and the reference of the
/// timestamp window checks.
pub fn decode(
    body: &[u8],
    format: Format,
    encoding: Encoding,
    limits: &Limits,
    now_ms: i64,
) -> Result<Decoded, DecodeError> {
    if format == Format::PostHog {
        return decode_posthog(body, encoding, &PostHogRequest::default(), limits, now_ms);
    }
    let inflated;
    let body = match encoding {
        Encoding::Identity => body,
        Encoding::Gzip => {
            inflated = body::gunzip(body, limits.max_decompressed_bytes)?;
            inflated.as_slice()
        }
    };
    match format {
        Format::Ndjson => native::decode_ndjson(body, limits, now_ms),
        _ => native::decode_json(body::utf8(body)?, limits, now_ms),
    }
}

/// The server clock in ms since the Unix epoch, for callers that have no
/// receive time of their own (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
