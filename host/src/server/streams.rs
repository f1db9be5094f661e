//! What WebSocket and SSE subscriptions share: the subscribe request (from a
//! JSON message or query parameters), the connection limit, and [`Feed`],
//! which turns a hub subscription into filtered, projected message frames.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use axum::http::StatusCode;
use futures_util::FutureExt as _;
use serde_json::ser::{CompactFormatter, Formatter as _};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::filter::{Filter, Projection};
use crate::hub::{Lagged, Message, Payload, SubscribeError, Subscription};

/// Hub messages taken per read.
const READ_BATCH: usize = 256;
/// Room reserved for the frame being built at first: a typical event and
/// its envelope fit, so most frames are built without growing.
const FRAME_CAPACITY: usize = 512;
/// Frames a feed hands over at shutdown, at most.
const DRAIN_MAX: usize = 16_384;

/// A parsed subscribe request.
#[derive(Debug)]
pub struct SubscribeRequest {
    /// Channel name.
    pub channel: String,
    /// Which messages.
    pub filter: Filter,
    /// Which fields of each message, if not all.
    pub fields: Option<Projection>,
    /// Resume after this sequence number.
    pub since: Option<u64>,
}

impl SubscribeRequest {
    /// From a WebSocket `subscribe` message.
    pub fn from_json(msg: &Value) -> Result<Self, String> {
        let channel = match msg.get("channel") {
            Some(Value::String(c)) if !c.is_empty() => c.clone(),
            Some(_) => return Err("`channel` must be a non-empty string".into()),
            None => return Err("missing `channel`".into()),
        };
        let filter = match msg.get("filter") {
            None | Some(Value::Null) => Filter::default(),
            Some(f) => Filter::from_json(f).map_err(|e| format!("filter: {e}"))?,
        };
        let fields = match msg.get("fields") {
            None | Some(Value::Null) => None,
            Some(f) => Some(Projection::from_json(f).map_err(|e| format!("fields: {e}"))?),
        };
        let since = match msg.get("since") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or("`since` must be a sequence number (a whole number ≥ 0)")?,
            ),
        };
        for key in msg.as_object().into_iter().flat_map(|o| o.keys()) {
            if !matches!(
                key.as_str(),
                "type" | "channel" | "filter" | "fields" | "since" | "id"
            ) {
                return Err(format!(
                    "unknown field `{key}`; a subscribe message has channel, filter, fields, since"
                ));
            }
        }
        Ok(Self {
            channel,
            filter,
            fields,
            since,
        })
    }

    /// From SSE query parameters (`channel`, `since`, the filter's `names` /
    /// `name` / `where`, and `fields`), with `Last-Event-ID` as `since`.
    pub fn from_query(
        pairs: &[(String, String)],
        last_event_id: Option<&str>,
    ) -> Result<Self, String> {
        let mut channel = None;
        let mut since = None;
        let mut fields = None;
        let mut filter_pairs = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                "channel" => channel = Some(v.clone()),
                "since" => {
                    since = Some(
                        v.parse::<u64>()
                            .map_err(|_| format!("`since` must be a sequence number, not `{v}`"))?,
                    )
                }
                "fields" => {
                    fields = Some(Projection::from_query(v).map_err(|e| format!("fields: {e}"))?)
                }
                "api_key" => {}
                _ => filter_pairs.push((k.clone(), v.clone())),
            }
        }
        if let Some(id) = last_event_id {
            since = Some(
                id.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("Last-Event-ID must be a sequence number, not `{id}`"))?,
            );
        }
        let channel = channel
            .filter(|c| !c.is_empty())
            .ok_or("missing query parameter `channel`, e.g. ?channel=events")?;
        let filter = Filter::from_query(&filter_pairs).map_err(|e| format!("filter: {e}"))?;
        Ok(Self {
            channel,
            filter,
            fields,
            since,
        })
    }
}

/// Holds one of `streams.max_connections`; released on drop.
pub struct ConnectionGuard {
    count: Arc<std::sync::atomic::AtomicU64>,
}

impl ConnectionGuard {
    /// Take a connection slot, or 503 when all are taken.
    pub fn acquire(state: &AppState) -> Result<Self, ApiError> {
        let max = state.config.streams.max_connections;
        let taken = state
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(_) => {
                metrics::gauge!("eddy_stream_connections").increment(1.0);
                Ok(Self {
                    count: state.connections.clone(),
                })
            }
            Err(_) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                format!("all streams.max_connections = {max} stream connections are in use"),
            )
            .retry_after(state.config.ingest.retry_after)),
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("eddy_stream_connections").decrement(1.0);
    }
}

/// Why a subscription could not start.
#[derive(Debug)]
pub struct OpenError {
    /// HTTP status for SSE.
    pub status: StatusCode,
    /// Machine code.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// Extra fields (`available`, `oldest_available`, `head`).
    pub details: Value,
}

impl From<OpenError> for ApiError {
    fn from(e: OpenError) -> Self {
        let mut err = ApiError::new(e.status, e.code, e.message);
        if let Value::Object(extra) = e.details {
            err.extra = Box::new(extra);
        }
        err
    }
}

/// How a feed ended.
pub enum FeedEnd {
    /// The client fell behind; everything up to `last_delivered` was handed
    /// out.
    Lagged {
        /// Last sequence handed out.
        last_delivered: u64,
    },
    /// Shutdown: these were the last frames.
    Drained {
        /// (seq, frame) pairs.
        frames: Vec<(u64, Utf8Bytes)>,
    },
}

/// A subscription turned into ready-to-send frames.
pub struct Feed {
    sub: Subscription,
    filter: Filter,
    fields: Option<Projection>,
    /// `"channel"` as a JSON string, escaped once.
    channel_json: String,
    head: u64,
    buf: Vec<Arc<Message>>,
    /// Where a batch's shared frames are built; the buffer then becomes
    /// their shared bytes, trimmed to size (the replay ring keeps no
    /// slack).
    scratch: String,
}

impl Feed {
    /// Subscribe to the hub.
    pub fn open(state: &AppState, req: &SubscribeRequest) -> Result<Feed, OpenError> {
        let head_now = state
            .hub
            .channels()
            .into_iter()
            .find(|c| c.name == req.channel)
            .map_or(0, |c| c.head_seq);
        let sub = state
            .hub
            .subscribe(&req.channel, req.since)
            .map_err(|e| match e {
                SubscribeError::UnknownChannel { name, available } => OpenError {
                    status: StatusCode::NOT_FOUND,
                    code: "unknown_channel",
                    message: format!(
                        "no channel `{name}`; channels are: {}",
                        available.join(", ")
                    ),
                    details: json!({ "available": available }),
                },
                SubscribeError::TooOld {
                    since,
                    oldest_available,
                } => OpenError {
                    status: StatusCode::GONE,
                    code: "since_too_old",
                    message: format!(
                        "messages after {since} are no longer kept; the oldest kept is \
                         {oldest_available}: subscribe with since ≥ {} or without since",
                        oldest_available.saturating_sub(1)
                    ),
                    details: json!({ "oldest_available": oldest_available }),
                },
                SubscribeError::InFuture { since, head } => OpenError {
                    status: StatusCode::BAD_REQUEST,
                    code: "since_in_future",
                    message: format!(
                        "since = {since} is ahead of the channel, whose last message is {head}"
                    ),
                    details: json!({ "head": head }),
                },
            })?;
        let head = if req.since.is_none() {
            head_now.max(sub.last_delivered())
        } else {
            head_now
        };
        Ok(Feed {
            sub,
            filter: req.filter.clone(),
            fields: req.fields.clone(),
            channel_json: Value::String(req.channel.clone()).to_string(),
            // A live subscription starts after the head the hub saw when it
            // subscribed, which may be later than the look above.
            head,
            buf: Vec::with_capacity(READ_BATCH),
            // Grown on demand: an idle or slow subscriber keeps a few
            // kilobytes, not a full batch's worth.
            scratch: String::with_capacity(FRAME_CAPACITY * 16),
        })
    }

    /// The channel's last sequence number when the feed opened.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The channel's name.
    pub fn channel(&self) -> &str {
        self.sub.channel()
    }

    /// Last sequence number handed out (filtered-out messages included).
    pub fn last_delivered(&self) -> u64 {
        self.sub.last_delivered()
    }

    /// Wait for messages; return the frames of those that pass the filter
    /// (at least one). Cancel-safe.
    pub async fn next_frames(&mut self) -> Result<Vec<(u64, Utf8Bytes)>, FeedEnd> {
        loop {
            self.buf.clear();
            if let Err(Lagged { last_delivered, .. }) =
                self.sub.next_batch(READ_BATCH, &mut self.buf).await
            {
                return Err(FeedEnd::Lagged { last_delivered });
            }
            let frames = self.frames();
            if !frames.is_empty() {
                return Ok(frames);
            }
            // A filter that matches nothing over a long backlog must not
            // hold the worker: give other tasks their turn.
            tokio::task::consume_budget().await;
        }
    }

    /// Everything available right now, without waiting (for shutdown).
    pub fn drain_now(&mut self) -> Result<Vec<(u64, Utf8Bytes)>, FeedEnd> {
        let mut frames = Vec::new();
        // Bounded, so shutdown cannot build an arbitrarily large batch; the
        // client resumes from the last frame it got.
        while frames.len() < DRAIN_MAX {
            self.buf.clear();
            match self
                .sub
                .next_batch(READ_BATCH, &mut self.buf)
                .now_or_never()
            {
                Some(Ok(())) => frames.extend(self.frames()),
                // Frames already taken are sent first; reporting the lag
                // now would claim messages the client never got.
                Some(Err(Lagged { .. })) if !frames.is_empty() => break,
                Some(Err(Lagged { last_delivered, .. })) => {
                    return Err(FeedEnd::Lagged { last_delivered });
                }
                None => break,
            }
        }
        Err(FeedEnd::Drained { frames })
    }

    fn frames(&mut self) -> Vec<(u64, Utf8Bytes)> {
        /// A frame of the batch: ready, or to be cut from the batch buffer.
        enum Built {
            Ready(Utf8Bytes),
            /// `batch[start..end]`, the shared frame of `self.buf[index]`.
            Cut {
                index: usize,
                start: usize,
                end: usize,
            },
        }
        let mut built = Vec::with_capacity(self.buf.len());
        // Shared frames no subscriber has built yet are written one after
        // another into one buffer, which becomes one `Bytes` that each frame
        // is a slice of: two allocations for the batch instead of two per
        // frame (its bytes, then a shared header when first cloned).
        let mut batch = std::mem::take(&mut self.scratch);
        batch.clear();
        for (index, m) in self.buf.iter().enumerate() {
            let projected = match (&m.payload, &self.fields) {
                (Payload::Event(e), f) => {
                    if !self.filter.matches(e) {
                        continue;
                    }
                    f.as_ref().map(|p| p.apply(e))
                }
                (Payload::Json(v), f) => {
                    if !self.filter.matches(v) {
                        continue;
                    }
                    f.as_ref().map(|p| p.apply(v))
                }
            };
            let frame = match (projected, m.built_frame()) {
                // Projected: this subscriber's own frame. `Display` of a
                // JSON value is its compact form.
                (Some(data), _) => {
                    let mut own = String::with_capacity(FRAME_CAPACITY);
                    self.write_frame(&mut own, m.seq, |out| {
                        let _ = write!(out, "{data}");
                    });
                    Built::Ready(Utf8Bytes::from(own))
                }
                // Whole: built once per message, shared by every subscriber
                // of the channel.
                (None, Some(frame)) => Built::Ready(frame),
                (None, None) => {
                    let start = batch.len();
                    self.write_frame(&mut batch, m.seq, |out| m.write_payload_json(out));
                    Built::Cut {
                        index,
                        start,
                        end: batch.len(),
                    }
                }
            };
            built.push((m.seq, frame));
        }
        // The buffer itself becomes the shared bytes, trimmed to size so the
        // replay ring keeps no slack; the next batch starts a buffer of
        // about this one's size.
        let shared = if batch.is_empty() {
            // Nothing new (another subscriber built these frames): keep it.
            self.scratch = batch;
            None
        } else {
            self.scratch = String::with_capacity(batch.len().min(FRAME_CAPACITY * READ_BATCH));
            batch.shrink_to_fit();
            Some(Bytes::from(batch))
        };
        built
            .into_iter()
            .filter_map(|(seq, frame)| {
                let frame = match frame {
                    Built::Ready(frame) => frame,
                    Built::Cut { index, start, end } => {
                        let m = self.buf.get(index)?;
                        let cut = shared.as_ref()?.slice(start..end);
                        // Only JSON text went in, cut at frame boundaries:
                        // valid UTF-8, so the check passes (and a frame is
                        // never lost if it did not).
                        let frame = Utf8Bytes::try_from(cut.clone()).unwrap_or_else(|_| {
                            Utf8Bytes::from(String::from_utf8_lossy(&cut).into_owned())
                        });
                        // A subscriber that raced us to it may have set it
                        // first: the same text, and every subscriber sends
                        // the one that was set.
                        m.shared_frame(|_| frame)
                    }
                };
                Some((seq, frame))
            })
            .collect()
    }

    /// Append `{"type":"message","channel":..,"seq":..,"data":..}` to
    /// `out`, with the data written in place by `data`.
    fn write_frame(&self, out: &mut String, seq: u64, data: impl FnOnce(&mut String)) {
        out.push_str(r#"{"type":"message","channel":"#);
        out.push_str(&self.channel_json);
        out.push_str(r#","seq":"#);
        crate::event::push_number(out, |w| CompactFormatter.write_u64(w, seq));
        out.push_str(r#","data":"#);
        data(out);
        out.push('}');
    }
}
