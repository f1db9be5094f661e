//! The `[server]`, `[ingest]`, `[streams]` and `[auth]` sections: how
//! `eddy serve` listens, validates and queues ingest, fans results out to
//! subscribers, and who may do what.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::raw::{Int, Range, Validator, int};
use crate::ingest;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

// Defaults. Each one is a config key; the comment says where the number
// comes from.

/// The address `eddy` serves on when nothing else is said: loopback only,
/// so a first run never exposes anything.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
// PostHog's capture endpoint accepts 20 MiB bodies; 10 MiB of compressed
// JSON is ~100k typical events, far above one request's worth.
const DEFAULT_MAX_BODY_BYTES: u64 = 10 * MIB;
// Long enough for any real client on a slow link, short enough that idle
// half-open connections (slowloris) are shed quickly.
const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_BODY_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
// 256 MiB/s: a 100,000-result history (~12 MB) in under 50 ms, while a
// crowd of readers costs a tenth of a core or so in copies, not the machine.
const DEFAULT_LARGE_RESPONSE_BYTES_PER_S: u64 = 256 * MIB;

// Two seconds of the 1M events/s target: rides out a plugin hiccup without
// holding more than a few hundred MB of events.
const DEFAULT_QUEUE_EVENTS: u64 = 200_000;
// The same two seconds of ~300-byte events is ~60 MB; four times that keeps
// the default count reachable for larger events, while 200,000 events of
// 64 KiB (13 GB) cannot pile up.
const DEFAULT_QUEUE_BYTES: u64 = 256 * MIB;
const DEFAULT_RETRY_AFTER_S: u64 = 1;
// Each request holds its whole body (up to max_body_bytes, and up to
// max_decompressed_bytes inflated) while it is decoded: 64 of them bound
// that memory, and on 2 cores more would only queue for the CPU anyway.
const DEFAULT_MAX_CONCURRENT_REQUESTS: u64 = 64;
// What those requests may hold together while they are decoded: room for a
// largest gzip body's worst case (64 MiB inflated, its events, the body) and
// dozens of ordinary ones, well below what 64 worst-case requests would take
// (some 13 GB).
const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 512 * MIB;
// The validation bounds' defaults live with the decoder that applies them.
const DEFAULT_MAX_EVENTS_PER_REQUEST: u64 = ingest::DEFAULT_MAX_EVENTS_PER_REQUEST as u64;
const DEFAULT_MAX_EVENT_BYTES: u64 = ingest::DEFAULT_MAX_EVENT_BYTES as u64;
const DEFAULT_MAX_PROPERTIES: u64 = ingest::DEFAULT_MAX_PROPERTIES as u64;
const DEFAULT_MAX_KEY_BYTES: u64 = ingest::DEFAULT_MAX_KEY_BYTES as u64;
const DEFAULT_MAX_STRING_BYTES: u64 = ingest::DEFAULT_MAX_STRING_BYTES as u64;
const DEFAULT_MAX_DEPTH: u64 = ingest::DEFAULT_MAX_DEPTH as u64;
const DEFAULT_FUTURE_SKEW_MS: u64 = ingest::DEFAULT_FUTURE_SKEW_MS as u64;
const DEFAULT_MAX_AGE_MS: u64 = ingest::DEFAULT_MAX_AGE_MS as u64;
const DEFAULT_MAX_DECOMPRESSED_BYTES: u64 = ingest::DEFAULT_MAX_DECOMPRESSED_BYTES as u64;

// Half a second to a second of traffic at the target rate: a reconnecting
// client resumes without a gap; ~300 bytes each, about 30 MB per channel.
const DEFAULT_REPLAY_CAPACITY: u64 = 100_000;
// The same 100,000 messages at ~2.5 KB each; large events are kept fewer.
const DEFAULT_REPLAY_BYTES: u64 = crate::hub::DEFAULT_REPLAY_BYTES as u64;
const DEFAULT_CLIENT_QUEUE: u64 = 65_536;
const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;
const DEFAULT_MAX_MESSAGE_BYTES: u64 = 64 * KIB;
const DEFAULT_HEARTBEAT_MS: u64 = 15_000;
// Four missed heartbeats.
const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
const DEFAULT_SEND_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_STATS_INTERVAL_MS: u64 = 1_000;

const BYTES: Range = Range {
    min: 1,
    max: None,
    unit: "bytes",
};
const TIMEOUT_MS: Range = Range {
    min: 1,
    max: Some(3_600_000),
    unit: "milliseconds",
};
const COUNT: Range = Range {
    min: 1,
    max: Some(100_000_000),
    unit: "",
};
const RETRY_AFTER_S: Range = Range {
    min: 1,
    max: Some(3600),
    unit: "seconds",
};
const MAX_DEPTH: Range = Range {
    min: 1,
    max: Some(64),
    unit: "levels",
};
const AGE_MS: Range = Range {
    min: 0,
    max: None,
    unit: "milliseconds",
};

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on (`listen`).
    pub listen: SocketAddr,
    /// Largest request body as sent, before decompression (`max_body_bytes`).
    pub max_body_bytes: u64,
    /// A connection must finish sending request headers within this
    /// (`header_read_timeout_ms`).
    pub header_read_timeout: Duration,
    /// A request body must arrive within this (`body_timeout_ms`).
    pub body_timeout: Duration,
    /// On SIGINT/SIGTERM, how long in-flight requests and queued batches may
    /// take to drain (`shutdown_grace_ms`).
    pub shutdown_grace: Duration,
    /// Large REST responses (a window's history) are sent one at a time, at
    /// most this fast (`large_response_bytes_per_s`): however many clients
    /// read them, they take a bounded share of the machine from ingest.
    pub large_response_bytes_per_s: u64,
}

/// What happens to a request in which some events are invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InvalidPolicy {
    /// Accept the valid events and report the invalid ones (`"accept-valid"`).
    #[default]
    AcceptValid,
    /// Reject the whole request when any event is invalid (`"reject-request"`).
    RejectRequest,
}

/// `[ingest]`: validation bounds and the ingest queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    /// Events waiting for the pipeline, at most (`queue_events`). A request
    /// that does not fit is answered 429.
    pub queue_events: u64,
    /// Bytes of events waiting for the pipeline, at most (`queue_bytes`;
    /// counted as [`crate::event::Event::approx_bytes`]). A request that
    /// does not fit is answered 429.
    pub queue_bytes: u64,
    /// `Retry-After` seconds on a 429 (`retry_after_s`).
    pub retry_after: Duration,
    /// Ingest requests handled at once, at most; more get 503
    /// (`max_concurrent_requests`).
    pub max_concurrent_requests: u64,
    /// Bytes that ingest requests being read and decoded may hold together
    /// (`max_inflight_bytes`): a body, what it may inflate to and the events
    /// decoded from it are reserved before decoding; a request that does not
    /// fit gets 503.
    pub max_inflight_bytes: u64,
    /// Partial acceptance policy (`on_invalid`).
    pub on_invalid: InvalidPolicy,
    /// `max_events_per_request`.
    pub max_events_per_request: u64,
    /// `max_event_bytes`.
    pub max_event_bytes: u64,
    /// `max_properties`.
    pub max_properties: u64,
    /// `max_key_bytes`.
    pub max_key_bytes: u64,
    /// `max_string_bytes`.
    pub max_string_bytes: u64,
    /// `max_depth`.
    pub max_depth: u64,
    /// `future_skew_ms`.
    pub future_skew: Duration,
    /// `max_age_ms`.
    pub max_age: Duration,
    /// `max_decompressed_bytes`.
    pub max_decompressed_bytes: u64,
}

/// `[streams]`: WebSocket / SSE fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsConfig {
    /// Messages kept per channel for `since` / `Last-Event-ID` resume and
    /// `/v1/events/recent` (`replay_capacity`).
    pub replay_capacity: u64,
    /// Bytes of messages kept per channel, at most (`replay_bytes`): the
    /// oldest go first when either bound is reached.
    pub replay_bytes: u64,
    /// Messages a subscriber may fall behind before it is closed
    /// (`client_queue`).
    pub client_queue: u64,
    /// Open WebSocket plus SSE connections, at most (`max_connections`).
    pub max_connections: u64,
    /// Largest message a WebSocket client may send (`max_message_bytes`).
    pub max_message_bytes: u64,
    /// Server heartbeat interval (`heartbeat_ms`).
    pub heartbeat: Duration,
    /// A WebSocket client silent for this long is closed (`idle_timeout_ms`).
    pub idle_timeout: Duration,
    /// A write to a client that takes longer than this closes it
    /// (`send_timeout_ms`).
    pub send_timeout: Duration,
    /// Interval of the `stats` channel (`stats_interval_ms`).
    pub stats_interval: Duration,
}

/// `[auth]`: API keys. An empty list leaves that kind of access open.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AuthConfig {
    /// Keys that may ingest (`write_keys`).
    pub write_keys: Vec<String>,
    /// Keys that may subscribe and read REST views (`read_keys`).
    pub read_keys: Vec<String>,
    /// Keys for plugin operations; they also grant read and write
    /// (`admin_keys`).
    pub admin_keys: Vec<String>,
}

impl std::fmt::Debug for AuthConfig {
    // Keys are secrets: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("write_keys", &self.write_keys.len())
            .field("read_keys", &self.read_keys.len())
            .field("admin_keys", &self.admin_keys.len())
            .finish()
    }
}

macro_rules! raw_section {
    ($(#[$m:meta])* $name:ident { $($field:ident : $ty:ty = $default:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub(super) struct $name { $($field: $ty),* }
        impl Default for $name {
            fn default() -> Self { Self { $($field: $default),* } }
        }
    };
}

raw_section!(RawServer {
    listen: String = DEFAULT_LISTEN.to_owned(),
    max_body_bytes: Int = int(DEFAULT_MAX_BODY_BYTES),
    header_read_timeout_ms: Int = int(DEFAULT_HEADER_READ_TIMEOUT_MS),
    body_timeout_ms: Int = int(DEFAULT_BODY_TIMEOUT_MS),
    shutdown_grace_ms: Int = int(DEFAULT_SHUTDOWN_GRACE_MS),
    large_response_bytes_per_s: Int = int(DEFAULT_LARGE_RESPONSE_BYTES_PER_S),
});

raw_section!(RawIngest {
    queue_events: Int = int(DEFAULT_QUEUE_EVENTS),
    queue_bytes: Int = int(DEFAULT_QUEUE_BYTES),
    retry_after_s: Int = int(DEFAULT_RETRY_AFTER_S),
    max_concurrent_requests: Int = int(DEFAULT_MAX_CONCURRENT_REQUESTS),
    max_inflight_bytes: Int = int(DEFAULT_MAX_INFLIGHT_BYTES),
    on_invalid: RawInvalidPolicy = RawInvalidPolicy::AcceptValid,
    max_events_per_request: Int = int(DEFAULT_MAX_EVENTS_PER_REQUEST),
    max_event_bytes: Int = int(DEFAULT_MAX_EVENT_BYTES),
    max_properties: Int = int(DEFAULT_MAX_PROPERTIES),
    max_key_bytes: Int = int(DEFAULT_MAX_KEY_BYTES),
    max_string_bytes: Int = int(DEFAULT_MAX_STRING_BYTES),
    max_depth: Int = int(DEFAULT_MAX_DEPTH),
    future_skew_ms: Int = int(DEFAULT_FUTURE_SKEW_MS),
    max_age_ms: Int = int(DEFAULT_MAX_AGE_MS),
    max_decompressed_bytes: Int = int(DEFAULT_MAX_DECOMPRESSED_BYTES),
});

raw_section!(RawStreams {
    replay_capacity: Int = int(DEFAULT_REPLAY_CAPACITY),
    replay_bytes: Int = int(DEFAULT_REPLAY_BYTES),
    client_queue: Int = int(DEFAULT_CLIENT_QUEUE),
    max_connections: Int = int(DEFAULT_MAX_CONNECTIONS),
    max_message_bytes: Int = int(DEFAULT_MAX_MESSAGE_BYTES),
    heartbeat_ms: Int = int(DEFAULT_HEARTBEAT_MS),
    idle_timeout_ms: Int = int(DEFAULT_IDLE_TIMEOUT_MS),
    send_timeout_ms: Int = int(DEFAULT_SEND_TIMEOUT_MS),
    stats_interval_ms: Int = int(DEFAULT_STATS_INTERVAL_MS),
});

raw_section!(RawAuth {
    write_keys: Vec<String> = Vec::new(),
    read_keys: Vec<String> = Vec::new(),
    admin_keys: Vec<String> = Vec::new(),
});

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum RawInvalidPolicy {
    AcceptValid,
    RejectRequest,
}

impl Validator<'_> {
    fn bytes(&self, key: &str, value: Int) -> Result<u64, ConfigError> {
        self.range(key, value, BYTES)
    }

    fn count(&self, key: &str, value: Int, unit: &'static str) -> Result<u64, ConfigError> {
        self.range(key, value, Range { unit, ..COUNT })
    }

    pub(super) fn server(&self, raw: &RawServer) -> Result<ServerConfig, ConfigError> {
        let listen = raw.listen.parse::<SocketAddr>().map_err(|_| {
            self.invalid(
                "server.listen",
                format!(
                    "`{}` is not an address to listen on: write IP:PORT, e.g. \"{DEFAULT_LISTEN}\" \
                     (port 0 picks a free port)",
                    raw.listen
                ),
            )
        })?;
        Ok(ServerConfig {
            listen,
            max_body_bytes: self.bytes("server.max_body_bytes", raw.max_body_bytes)?,
            header_read_timeout: self.millis(
                "server.header_read_timeout_ms",
                raw.header_read_timeout_ms,
                TIMEOUT_MS,
            )?,
            body_timeout: self.millis("server.body_timeout_ms", raw.body_timeout_ms, TIMEOUT_MS)?,
            shutdown_grace: self.millis(
                "server.shutdown_grace_ms",
                raw.shutdown_grace_ms,
                TIMEOUT_MS,
            )?,
            large_response_bytes_per_s: self.bytes(
                "server.large_response_bytes_per_s",
                raw.large_response_bytes_per_s,
            )?,
        })
    }

    pub(super) fn ingest(&self, raw: &RawIngest) -> Result<IngestConfig, ConfigError> {
        let queue_events = self.count("ingest.queue_events", raw.queue_events, "events")?;
        let max_events_per_request = self.count(
            "ingest.max_events_per_request",
            raw.max_events_per_request,
            "events",
        )?;
        if queue_events < max_events_per_request {
            // A request that can never fit would get 429 forever.
            return Err(self.invalid(
                "ingest.queue_events",
                format!(
                    "{queue_events} is less than ingest.max_events_per_request = \
                     {max_events_per_request}: a full-size request could never be queued; raise \
                     queue_events or lower max_events_per_request"
                ),
            ));
        }
        Ok(IngestConfig {
            queue_events,
            queue_bytes: self.bytes("ingest.queue_bytes", raw.queue_bytes)?,
            retry_after: Duration::from_secs(self.range(
                "ingest.retry_after_s",
                raw.retry_after_s,
                RETRY_AFTER_S,
            )?),
            max_concurrent_requests: self.count(
                "ingest.max_concurrent_requests",
                raw.max_concurrent_requests,
                "requests",
            )?,
            max_inflight_bytes: self.bytes("ingest.max_inflight_bytes", raw.max_inflight_bytes)?,
            on_invalid: match raw.on_invalid {
                RawInvalidPolicy::AcceptValid => InvalidPolicy::AcceptValid,
                RawInvalidPolicy::RejectRequest => InvalidPolicy::RejectRequest,
            },
            max_events_per_request,
            max_event_bytes: self.bytes("ingest.max_event_bytes", raw.max_event_bytes)?,
            max_properties: self.count(
                "ingest.max_properties",
                raw.max_properties,
                "properties",
            )?,
            max_key_bytes: self.bytes("ingest.max_key_bytes", raw.max_key_bytes)?,
            max_string_bytes: self.bytes("ingest.max_string_bytes", raw.max_string_bytes)?,
            max_depth: self.range("ingest.max_depth", raw.max_depth, MAX_DEPTH)?,
            future_skew: self.millis("ingest.future_skew_ms", raw.future_skew_ms, AGE_MS)?,
            max_age: self.millis("ingest.max_age_ms", raw.max_age_ms, AGE_MS)?,
            max_decompressed_bytes: self
                .bytes("ingest.max_decompressed_bytes", raw.max_decompressed_bytes)?,
        })
    }

    pub(super) fn streams(&self, raw: &RawStreams) -> Result<StreamsConfig, ConfigError> {
        let replay_capacity =
            self.count("streams.replay_capacity", raw.replay_capacity, "messages")?;
        let client_queue = self.count("streams.client_queue", raw.client_queue, "messages")?;
        if client_queue > replay_capacity {
            return Err(self.invalid(
                "streams.client_queue",
                format!(
                    "{client_queue} is more than streams.replay_capacity = {replay_capacity}: a \
                     subscriber can only fall behind as far as the replay buffer reaches; raise \
                     replay_capacity or lower client_queue"
                ),
            ));
        }
        Ok(StreamsConfig {
            replay_capacity,
            replay_bytes: self.bytes("streams.replay_bytes", raw.replay_bytes)?,
            client_queue,
            max_connections: self.count(
                "streams.max_connections",
                raw.max_connections,
                "connections",
            )?,
            max_message_bytes: self.bytes("streams.max_message_bytes", raw.max_message_bytes)?,
            heartbeat: self.millis("streams.heartbeat_ms", raw.heartbeat_ms, TIMEOUT_MS)?,
            idle_timeout: self.millis(
                "streams.idle_timeout_ms",
                raw.idle_timeout_ms,
                TIMEOUT_MS,
            )?,
            send_timeout: self.millis(
                "streams.send_timeout_ms",
                raw.send_timeout_ms,
                TIMEOUT_MS,
            )?,
            stats_interval: self.millis(
                "streams.stats_interval_ms",
                raw.stats_interval_ms,
                TIMEOUT_MS,
            )?,
        })
    }

    pub(super) fn auth(&self, raw: RawAuth) -> Result<AuthConfig, ConfigError> {
        let check = |key: &str, keys: Vec<String>| -> Result<Vec<String>, ConfigError> {
            for (i, k) in keys.iter().enumerate() {
                // A short or blank key is almost always a missing variable.
                if k.trim().len() < 8 || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(self.invalid(
                        format!("auth.{key}[{i}]"),
                        "an API key must be at least 8 characters, without spaces or control \
                         characters",
                    ));
                }
            }
            Ok(keys)
        };
        Ok(AuthConfig {
            write_keys: check("write_keys", raw.write_keys)?,
            read_keys: check("read_keys", raw.read_keys)?,
            admin_keys: check("admin_keys", raw.admin_keys)?,
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_read_timeout: Duration::from_millis(DEFAULT_HEADER_READ_TIMEOUT_MS),
            body_timeout: Duration::from_millis(DEFAULT_BODY_TIMEOUT_MS),
            shutdown_grace: Duration::from_millis(DEFAULT_SHUTDOWN_GRACE_MS),
            large_response_bytes_per_s: DEFAULT_LARGE_RESPONSE_BYTES_PER_S,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            queue_events: DEFAULT_QUEUE_EVENTS,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            retry_after: Duration::from_secs(DEFAULT_RETRY_AFTER_S),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            on_invalid: InvalidPolicy::AcceptValid,
            max_events_per_request: DEFAULT_MAX_EVENTS_PER_REQUEST,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_properties: DEFAULT_MAX_PROPERTIES,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_string_bytes: DEFAULT_MAX_STRING_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            future_skew: Duration::from_millis(DEFAULT_FUTURE_SKEW_MS),
            max_age: Duration::from_millis(DEFAULT_MAX_AGE_MS),
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
        }
    }
}

impl IngestConfig {
    /// The decoder's bounds ([`ingest::Limits`]) these settings give: what
    /// every event must satisfy, whether it came over HTTP, from a file or
    /// out of a plugin.
    pub fn limits(&self) -> ingest::Limits {
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        ingest::Limits {
            max_events_per_request: size(self.max_events_per_request),
            max_event_bytes: size(self.max_event_bytes),
            max_properties: size(self.max_properties),
            max_key_bytes: size(self.max_key_bytes),
            max_string_bytes: size(self.max_string_bytes),
            max_depth: size(self.max_depth),
            future_skew_ms: ms(self.future_skew),
            max_age_ms: ms(self.max_age),
            max_decompressed_bytes: size(self.max_decompressed_bytes),
        }
    }
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            replay_capacity: DEFAULT_REPLAY_CAPACITY,
            replay_bytes: DEFAULT_REPLAY_BYTES,
            client_queue: DEFAULT_CLIENT_QUEUE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            heartbeat: Duration::from_millis(DEFAULT_HEARTBEAT_MS),
            idle_timeout: Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS),
            send_timeout: Duration::from_millis(DEFAULT_SEND_TIMEOUT_MS),
            stats_interval: Duration::from_millis(DEFAULT_STATS_INTERVAL_MS),
        }
    }
}
