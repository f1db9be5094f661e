//! One channel: its ring of recent messages, its publisher and its wake-up
//! signal.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::watch;

use super::HubConfig;
use crate::event::Event;
use crate::filter::{FieldPath, FieldRef, Record};

/// What a channel carries: events, or JSON documents (window results, plugin
/// notices, statistics, ...).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// An analytics event.
    Event(Event),
    /// Any other JSON document.
    Json(serde_json::Value),
}

/// Filters apply to either kind; see [`Record`] for how each resolves paths.
impl Record for Payload {
    fn field(&self, path: &FieldPath) -> Option<FieldRef<'_>> {
        match self {
            Payload::Event(e) => e.field(path),
            Payload::Json(v) => v.field(path),
        }
    }

    fn name(&self) -> Option<&str> {
        match self {
            Payload::Event(e) => Record::name(e),
            Payload::Json(v) => v.name(),
        }
    }
}

impl Payload {
    /// Bytes the payload holds, roughly: what the ring's byte bound counts.
    pub fn approx_bytes(&self) -> usize {
        match self {
            Payload::Event(e) => e.approx_bytes(),
            Payload::Json(v) => json_bytes(v),
        }
    }
}

/// Bytes of a JSON value, roughly (its compact text, plus per-node
/// overhead), without serializing it.
fn json_bytes(v: &serde_json::Value) -> usize {
    use serde_json::Value as J;
    const NODE: usize = std::mem::size_of::<J>();
    NODE + match v {
        J::Null | J::Bool(_) | J::Number(_) => 0,
        J::String(s) => s.len(),
        J::Array(a) => a.iter().map(json_bytes).sum(),
        J::Object(m) => m.iter().map(|(k, v)| k.len() + NODE + json_bytes(v)).sum(),
    }
}

/// One published message. Shared (`Arc`) between the ring and every
/// subscriber that reads it.
#[derive(Debug)]
pub struct Message {
    /// Position in its channel: contiguous from the channel's first.
    pub seq: u64,
    /// The content.
    pub payload: Payload,
    /// [`Payload::approx_bytes`], counted once.
    bytes: usize,
    /// The payload's JSON, built by the first caller of
    /// [`Message::payload_json`].
    json: OnceLock<String>,
    /// The message as stream clients receive it unchanged; see
    /// [`Message::shared_frame`].
    frame: OnceLock<Utf8Bytes>,
}

impl Message {
    /// A message with sequence number `seq`.
    pub fn new(seq: u64, payload: Payload) -> Message {
        Message {
            seq,
            bytes: payload.approx_bytes(),
            payload,
            json: OnceLock::new(),
            frame: OnceLock::new(),
        }
    }

    /// The message as every subscriber that takes it unchanged sends it to
    /// its client (the server's envelope around the payload's JSON): built
    /// by `build` for the first such subscriber, then shared by all of them,
    /// since a clone of a [`Utf8Bytes`] is a reference count, not a copy.
    /// Every caller must pass a `build` that makes the same frame.
    pub fn shared_frame(&self, build: impl FnOnce(&Message) -> Utf8Bytes) -> Utf8Bytes {
        self.frame.get_or_init(|| build(self)).clone()
    }

    /// The shared frame, if a subscriber has built it already.
    pub fn built_frame(&self) -> Option<Utf8Bytes> {
        self.frame.get().cloned()
    }

    /// Append the payload's compact JSON (what [`Message::payload_json`]
    /// returns) to `out`, serialized in place: no copy of it is made or kept
    /// in the message.
    pub fn write_payload_json(&self, out: &mut String) {
        match (self.json.get(), &self.payload) {
            (Some(json), _) => out.push_str(json),
            (None, Payload::Event(e)) => e.write_json(out),
            // `Display` of a JSON value is its compact form.
            (None, Payload::Json(v)) => {
                let _ = write!(out, "{v}");
            }
        }
    }

    /// The payload as compact JSON: [`Event::to_json`] for events. Serialized
    /// once, on first use, and shared by every subscriber.
    pub fn payload_json(&self) -> &str {
        self.json.get_or_init(|| match &self.payload {
            Payload::Event(e) => e.to_json(),
            Payload::Json(v) => v.to_string(),
        })
    }
}

/// The recent messages of a channel, oldest first, ending at `head`.
#[derive(Debug, Default)]
pub(super) struct Ring {
    pub(super) messages: VecDeque<Arc<Message>>,
    /// Sequence number of the newest message; `first_seq - 1` before the
    /// first.
    pub(super) head: u64,
    /// Bytes of the messages held.
    pub(super) bytes: usize,
    /// Sequence number of the first message the ring took since it
    /// started (or started over after a gap); `None` before any.
    pub(super) started: Option<u64>,
}

impl Ring {
    /// Sequence number of the oldest message kept; `head + 1` when empty.
    pub(super) fn oldest(&self) -> u64 {
        // `messages.len() <= head` always: the ring holds only published seqs.
        self.head + 1 - self.messages.len() as u64
    }
}

/// A named stream of messages.
#[derive(Debug)]
pub(super) struct Channel {
    pub(super) name: String,
    pub(super) config: HubConfig,
    pub(super) ring: Mutex<Ring>,
    /// Serializes publishers and holds the last assigned seq, so messages are
    /// built (allocated) outside the ring lock yet pushed in seq order.
    publishing: Mutex<u64>,
    /// Carries the head seq; each batch sends once, waking every waiting
    /// subscriber. Only a wake-up signal: subscribers read the ring.
    pub(super) head_tx: watch::Sender<u64>,
    pub(super) subscribers: AtomicUsize,
    /// Subscriptions cut off because their client fell behind (see
    /// [`Hub::note_slow_close`](super::Hub::note_slow_close)).
    pub(super) slow_closes: AtomicU64,
}

impl Channel {
    pub(super) fn new(name: String, config: HubConfig) -> Channel {
        let before_first = config.first_seq.saturating_sub(1);
        Channel {
            name,
            config,
            ring: Mutex::new(Ring {
                messages: VecDeque::new(),
                head: before_first,
                bytes: 0,
                started: None,
            }),
            publishing: Mutex::new(before_first),
            head_tx: watch::Sender::new(before_first),
            subscribers: AtomicUsize::new(0),
            slow_closes: AtomicU64::new(0),
        }
    }

    /// The ring, locked. Never held across an await. A panic elsewhere while
    /// holding it cannot leave it inconsistent (pushes and pops are single
    /// calls), so a poisoned lock is simply taken over.
    pub(super) fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The oldest seq a new subscription may resume from: anything still in
    /// the ring. A subscription that starts further back than `client_queue`
    /// gets that backlog as its allowance, shrinking as it catches up (see
    /// [`Subscription`](super::Subscription)), so a client cut off for
    /// lagging can always resume from the `last_seq` it was given while
    /// that is still kept.
    pub(super) fn oldest_resumable(&self, ring: &Ring) -> u64 {
        ring.oldest()
    }

    /// The last `limit` messages, oldest first.
    pub(super) fn recent(&self, limit: usize) -> Vec<Arc<Message>> {
        let ring = self.ring();
        let skip = ring.messages.len().saturating_sub(limit);
        ring.messages.range(skip..).cloned().collect()
    }

    /// Append the payloads numbered from `at` (the next seq when `None`);
    /// returns the first and last seq assigned (last < first when there were
    /// none). Numbers only move forward: a publisher that numbers its own
    /// messages (the engine) and skips ahead makes the ring start over
    /// after the gap (subscribers in it are told they lagged); one that
    /// goes back is corrected to the next seq.
    fn append(&self, at: Option<u64>, payloads: impl IntoIterator<Item = Payload>) -> (u64, u64) {
        let mut last = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut first = *last + 1;
        let mut gap = false;
        match at {
            Some(at) if at > first => {
                tracing::warn!(channel = %self.name, expected = first, got = at, "sequence numbers skipped ahead");
                first = at;
                gap = true;
            }
            Some(at) if at < first => {
                tracing::error!(channel = %self.name, expected = first, got = at, "sequence numbers went back; renumbered");
            }
            _ => {}
        }
        // Allocating the messages is most of a publish; doing it before taking
        // the ring lock keeps readers from waiting on it.
        let fresh: Vec<Arc<Message>> = payloads
            .into_iter()
            .zip(first..)
            .map(|(p, seq)| Arc::new(Message::new(seq, p)))
            .collect();
        if fresh.is_empty() {
            return (first, first - 1);
        }
        *last = first - 1 + fresh.len() as u64;
        let evicted: Vec<Arc<Message>> = {
            let mut ring = self.ring();
            let mut evicted: Vec<Arc<Message>> = Vec::new();
            if gap {
                evicted.extend(ring.messages.drain(..));
                ring.bytes = 0;
            }
            if gap || ring.started.is_none() {
                ring.started = Some(first);
            }
            ring.bytes += fresh.iter().map(|m| m.bytes).sum::<usize>();
            ring.messages.extend(fresh);
            ring.head = *last;
            // Within both bounds, keeping at least the newest message.
            while ring.messages.len() > 1
                && (ring.messages.len() > self.config.replay_capacity
                    || ring.bytes > self.config.replay_bytes)
            {
                if let Some(m) = ring.messages.pop_front() {
                    ring.bytes -= m.bytes;
                    evicted.push(m);
                }
            }
            evicted
        };
        self.head_tx.send_replace(*last);
        let range = (first, *last);
        drop(last);
        // Freeing old events (their strings and property vectors) happens
        // here, outside both locks.
        drop(evicted);
        range
    }
}

/// Publishes into one channel. Cheap to clone; every clone publishes into the
/// same sequence.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub(super) channel: Arc<Channel>,
}

impl Publisher {
    /// Publish one message; returns its seq.
    pub fn publish(&self, payload: Payload) -> u64 {
        self.channel.append(None, std::iter::once(payload)).0
    }

    /// Publish several messages with one lock and one wake-up; returns the
    /// first and last seq, or `None` for an empty batch.
    pub fn publish_batch(&self, payloads: impl IntoIterator<Item = Payload>) -> Option<(u64, u64)> {
        let (first, last) = self.channel.append(None, payloads);
        (last >= first).then_some((first, last))
    }

    /// Like [`Publisher::publish_batch`], numbered by the caller from
    /// `first_seq` (the engine owns its channels' numbers).
    pub fn publish_batch_at(
        &self,
        first_seq: u64,
        payloads: impl IntoIterator<Item = Payload>,
    ) -> Option<(u64, u64)> {
        let (first, last) = self.channel.append(Some(first_seq), payloads);
        (last >= first).then_some((first, last))
    }

    /// The last `limit` messages still in the ring, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<Arc<Message>> {
        self.channel.recent(limit)
    }

    /// The channel's name.
    pub fn channel(&self) -> &str {
        &self.channel.name
    }

    /// How many subscriptions are open on the channel.
    pub fn subscribers(&self) -> usize {
        self.channel.subscribers.load(Ordering::Relaxed)
    }
}
