//! The hub: named channels of sequenced messages that WebSocket and SSE
//! clients subscribe to, with replay of recent history.
//!
//! Each channel keeps one ring of its most recent messages, shared by all its
//! subscribers. Publishing appends to the ring and wakes waiting subscribers
//! once per batch, whatever their number; there are no per-subscriber queues,
//! so stalled subscribers cost the publisher nothing. Each [`Subscription`]
//! is a cursor into the ring, reading at its own pace. Its backlog is the
//! distance from its cursor to the head; when that exceeds
//! [`HubConfig::client_queue`], or its unread messages leave the ring, it is
//! [`Lagged`] and the caller disconnects the client, telling it the last seq
//! it received. Clients never see a silent gap.
//!
//! Sequence numbers start at 1 on each channel and are contiguous. A client
//! that has seen everything up to seq `N` subscribes with `since: Some(N)`
//! and receives `N + 1` onwards: the messages still in the ring, then live
//! ones, through the same cursor, so there is no boundary between replay and
//! live at which a message could be lost or repeated.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use serde::Serialize;

mod channel;
mod subscription;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

pub use channel::{Message, Payload, Publisher};
pub use subscription::{Lagged, Subscription};

use channel::Channel;

/// Default [`HubConfig::replay_bytes`]: 256 MiB per channel, a hundred
/// thousand 2.5 KB events; 64 KiB events are then kept 4,000 deep instead of
/// 100,000 (6.4 GB).
pub const DEFAULT_REPLAY_BYTES: usize = 256 * 1024 * 1024;

/// Sizes of a channel's ring and of a subscriber's backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubConfig {
    /// Messages kept per channel for replay and [`Hub::recent`]. Default
    /// 100,000: ten seconds of a busy stream at 10,000 events/s, enough to
    /// ride out a reconnect, for roughly 20–50 MB of typical events.
    /// At least 1.
    pub replay_capacity: usize,
    /// Largest backlog (messages published but not yet read) a subscriber
    /// may have before it is [`Lagged`]. A subscription that resumes from
    /// further back may keep the backlog it started with, but never fall
    /// further behind than that. Default 65,536 (2^16): about six seconds at
    /// 10,000 events/s, long enough for a burst or a slow network, short
    /// enough that a client that cannot keep up is told so quickly.
    /// At least 1.
    pub client_queue: usize,
    /// Bytes of messages kept per channel (roughly, see
    /// [`Payload::approx_bytes`]): with large events, the count alone would
    /// let a ring hold gigabytes. Default 256 MiB. At least 1 (the newest
    /// message is always kept).
    pub replay_bytes: usize,
    /// Sequence number of each channel's first message. Default 1. A server
    /// starts its channels above anything an earlier run could have
    /// reached, so a client resuming with a sequence number from before a
    /// restart is told it is too old rather than silently handed a
    /// different history under the same numbers.
    pub first_seq: u64,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            replay_capacity: 100_000,
            client_queue: 65_536,
            replay_bytes: DEFAULT_REPLAY_BYTES,
            first_seq: 1,
        }
    }
}

impl HubConfig {
    /// Zero sizes raised to 1: a ring that keeps nothing could never be read,
    /// and a queue of 0 would lag every subscriber at once.
    fn at_least_one(self) -> HubConfig {
        HubConfig {
            replay_capacity: self.replay_capacity.max(1),
            client_queue: self.client_queue.max(1),
            replay_bytes: self.replay_bytes.max(1),
            first_seq: self.first_seq.max(1),
        }
    }
}

/// The state of one channel, as listed by [`Hub::channels`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelInfo {
    /// The channel's name.
    pub name: String,
    /// Seq of the newest message; 0 before the first.
    pub head_seq: u64,
    /// Seq of the oldest message still in the ring; `head_seq + 1` when the
    /// ring is empty.
    pub oldest_seq: u64,
    /// Open subscriptions.
    pub subscribers: usize,
    /// Messages published since the channel was registered in this
    /// process (a channel whose numbering continues after a restart counts
    /// from there).
    pub published: u64,
    /// Subscriptions cut off because their client fell behind: its queue
    /// overflowed (`streams.client_queue`) or a write to it stalled.
    pub slow_closes: u64,
}

/// Why a subscription (or a [`Hub::recent`] read) was refused. The message
/// is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// No channel has this name.
    #[error("unknown channel `{name}`; available channels: {}", available.join(", "))]
    UnknownChannel {
        /// The name asked for.
        name: String,
        /// The registered channels, sorted.
        available: Vec<String>,
    },
    /// `since` is older than what can be replayed: the ring no longer holds
    /// `since + 1`.
    #[error(
        "since={since} is too old: the oldest message that can be replayed is seq {oldest_available}"
    )]
    TooOld {
        /// The `since` asked for.
        since: u64,
        /// The oldest seq a subscription can start at now; resuming with
        /// `since = oldest_available - 1` accepts the gap.
        oldest_available: u64,
    },
    /// `since` is beyond the newest message.
    #[error("since={since} is ahead of the channel head, seq {head}")]
    InFuture {
        /// The `since` asked for.
        since: u64,
        /// The channel's head.
        head: u64,
    },
}

/// The set of channels. Cheap to clone; clones share the channels.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug, Default)]
struct HubInner {
    config: HubConfig,
    channels: RwLock<BTreeMap<String, Arc<Channel>>>,
}

impl Hub {
    /// A hub without channels; `config` applies to channels registered with
    /// [`Hub::register`].
    pub fn new(config: HubConfig) -> Hub {
        Hub {
            inner: Arc::new(HubInner {
                config: config.at_least_one(),
                channels: RwLock::default(),
            }),
        }
    }

    /// The publisher of channel `name`, created with the hub's
    /// configuration if it does not exist. Registering an existing name
    /// returns a publisher of that same channel (its sequence continues), so
    /// components that share a channel may each register it.
    pub fn register(&self, name: &str) -> Publisher {
        self.register_with(name, self.inner.config)
    }

    /// Like [`Hub::register`] for a channel whose publisher numbers its own
    /// messages: a new channel's first message is `last_seq + 1`.
    pub fn register_after(&self, name: &str, last_seq: u64) -> Publisher {
        let config = HubConfig {
            first_seq: last_seq.saturating_add(1),
            ..self.inner.config
        };
        self.register_with(name, config)
    }

    /// Like [`Hub::register`], with sizes for this channel (e.g. a small ring
    /// for a once-a-second statistics channel). Ignored if the channel exists.
    pub fn register_with(&self, name: &str, config: HubConfig) -> Publisher {
        let mut channels = self
            .inner
            .channels
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let channel = channels
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Channel::new(name.to_owned(), config.at_least_one())));
        Publisher {
            channel: Arc::clone(channel),
        }
    }

    /// Every channel, sorted by name.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        let channels = self
            .inner
            .channels
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        channels
            .values()
            .map(|c| {
                let ring = c.ring();
                ChannelInfo {
                    name: c.name.clone(),
                    head_seq: ring.head,
                    oldest_seq: ring.oldest(),
                    subscribers: c.subscribers.load(std::sync::atomic::Ordering::Relaxed),
                    published: ring.head - c.config.first_seq.saturating_sub(1),
                    slow_closes: c.slow_closes.load(std::sync::atomic::Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Count a subscription to `channel` cut off because its client fell
    /// behind. Lagging subscriptions count themselves; a connection closed
    /// for a stalled write counts here for each channel it read.
    pub fn note_slow_close(&self, channel: &str) {
        if let Ok(c) = self.channel(channel) {
            c.slow_closes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Subscribe to `channel`. `since: Some(n)` means the client has seen
    /// everything up to and including seq `n`: delivery starts at `n + 1`,
    /// replaying from the ring, then continues live. `None` starts live,
    /// after the current head.
    pub fn subscribe(
        &self,
        channel: &str,
        since: Option<u64>,
    ) -> Result<Subscription, SubscribeError> {
        let channel = self.channel(channel)?;
        // The start is decided under the ring lock: every seq up to the head
        // seen here is in the ring (or evicted), every later one will be
        // appended after it, and both are read through the same cursor.
        let cursor = {
            let ring = channel.ring();
            match since {
                None => ring.head + 1,
                Some(since) if since > ring.head => {
                    return Err(SubscribeError::InFuture {
                        since,
                        head: ring.head,
                    });
                }
                Some(since) => {
                    let oldest_available = channel.oldest_resumable(&ring);
                    if since + 1 < oldest_available {
                        return Err(SubscribeError::TooOld {
                            since,
                            oldest_available,
                        });
                    }
                    since + 1
                }
            }
        };
        Ok(Subscription::new(channel, cursor))
    }

    /// Subscribe to `channel` from the oldest message still in its ring
    /// (live when the ring is empty), with how many messages the channel
    /// published before that one and no longer holds.
    pub fn subscribe_oldest(&self, channel: &str) -> Result<(Subscription, u64), SubscribeError> {
        let channel = self.channel(channel)?;
        let (cursor, evicted) = {
            let ring = channel.ring();
            let oldest = channel.oldest_resumable(&ring);
            (
                oldest,
                oldest.saturating_sub(ring.started.unwrap_or(oldest)),
            )
        };
        Ok((Subscription::new(channel, cursor), evicted))
    }

    /// The last `limit` messages of `channel` still in its ring, oldest
    /// first. Fails only with [`SubscribeError::UnknownChannel`].
    pub fn recent(&self, channel: &str, limit: usize) -> Result<Vec<Arc<Message>>, SubscribeError> {
        Ok(self.channel(channel)?.recent(limit))
    }

    fn channel(&self, name: &str) -> Result<Arc<Channel>, SubscribeError> {
        let channels = self
            .inner
            .channels
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match channels.get(name) {
            Some(c) => Ok(Arc::clone(c)),
            None => Err(SubscribeError::UnknownChannel {
                name: name.to_owned(),
                available: channels.keys().cloned().collect(),
            }),
        }
    }
}
