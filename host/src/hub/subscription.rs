//! A subscriber's cursor into a channel's ring.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use super::channel::{Channel, Message};

/// The subscriber fell too far behind: its backlog exceeded `client_queue`,
/// or the messages it had yet to read left the ring. Every message up to and
/// including `last_delivered` was handed out, in order, and nothing after it:
/// the caller closes the client and tells it `last_delivered`, so it can
/// resume with `since = last_delivered` (or learn that it cannot). Once
/// lagged, a subscription stays lagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "subscriber fell behind: delivered up to seq {last_delivered}, channel head is at seq {head}"
)]
pub struct Lagged {
    /// Seq of the last message handed out, as
    /// [`Subscription::last_delivered`].
    pub last_delivered: u64,
    /// The channel's head when the lag was detected.
    pub head: u64,
}

/// One reader of a channel, reading at its own pace from the channel's ring.
/// Created by [`Hub::subscribe`](super::Hub::subscribe); dropping it ends the
/// subscription.
#[derive(Debug)]
pub struct Subscription {
    channel: Arc<Channel>,
    /// Seq of the next message to hand out.
    cursor: u64,
    head_rx: watch::Receiver<u64>,
    lagged: Option<Lagged>,
    /// Backlog allowed before [`Lagged`]: the channel's `client_queue`, or
    /// the backlog the subscription started with if that was larger (a
    /// resume from far back), ratcheting down as it catches up so it can
    /// never fall further behind than where it started.
    allowance: u64,
}

impl Subscription {
    /// Start reading at `cursor`. The channel's subscriber count includes it
    /// until it is dropped.
    pub(super) fn new(channel: Arc<Channel>, cursor: u64) -> Subscription {
        channel.subscribers.fetch_add(1, Ordering::Relaxed);
        let head_rx = channel.head_tx.subscribe();
        let queue = channel.config.client_queue as u64;
        let start_backlog = channel.ring().head.saturating_sub(cursor.saturating_sub(1));
        Subscription {
            channel,
            cursor,
            head_rx,
            lagged: None,
            allowance: queue.max(start_backlog),
        }
    }

    /// Wait for the next messages and append up to `max` of them (at least
    /// one; `max` 0 counts as 1) to `out`, in seq order, with no gaps and no
    /// duplicates across calls.
    ///
    /// Cancel-safe: the cursor only moves together with appending to `out`,
    /// with no await in between, so dropping the future (e.g. in
    /// `tokio::select!`) loses nothing.
    ///
    /// Returns [`Lagged`] instead of handing anything out once the backlog
    /// exceeds the channel's `client_queue` or the unread messages have left
    /// the ring.
    pub async fn next_batch(
        &mut self,
        max: usize,
        out: &mut Vec<Arc<Message>>,
    ) -> Result<(), Lagged> {
        loop {
            // Marking the head as seen *before* looking at the ring means a
            // publish after the look changes the watch and wakes the wait
            // below, while a publish before it is already in the ring (the
            // publisher pushes, then sends). No wake-up is ever missed.
            self.head_rx.borrow_and_update();
            if self.try_next_batch(max, out)? {
                return Ok(());
            }
            if self.head_rx.changed().await.is_err() {
                // The sender lives in the channel, which this subscription
                // keeps alive, so it is never dropped; wait forever rather
                // than spin if that ever changes.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Like [`Subscription::next_batch`] without waiting: appends what is
    /// available now and returns whether anything was.
    pub fn try_next_batch(
        &mut self,
        max: usize,
        out: &mut Vec<Arc<Message>>,
    ) -> Result<bool, Lagged> {
        if let Some(lagged) = self.lagged {
            return Err(lagged);
        }
        let ring = self.channel.ring();
        let last_delivered = self.cursor - 1;
        let backlog = ring.head - last_delivered;
        let queue = self.channel.config.client_queue as u64;
        self.allowance = self.allowance.min(backlog.max(queue));
        if self.cursor < ring.oldest() || backlog > self.allowance {
            let lagged = Lagged {
                last_delivered,
                head: ring.head,
            };
            self.lagged = Some(lagged);
            // Once per subscription: a lagged subscription stays lagged, and
            // its client is closed.
            self.channel.slow_closes.fetch_add(1, Ordering::Relaxed);
            return Err(lagged);
        }
        if backlog == 0 {
            return Ok(false);
        }
        // In range: oldest <= cursor <= head, and the ring holds oldest..=head.
        let start = (self.cursor - ring.oldest()) as usize;
        let n = max.max(1).min(backlog as usize);
        out.extend(ring.messages.range(start..start + n).cloned());
        self.cursor += n as u64;
        Ok(true)
    }

    /// Seq of the last message handed out; before the first, the seq the
    /// subscription started after (its `since`, or the head at the time for a
    /// live start; 0 on a fresh channel). A client that resumes with `since`
    /// set to this misses nothing and sees nothing twice.
    pub fn last_delivered(&self) -> u64 {
        self.cursor - 1
    }

    /// The channel's name.
    pub fn channel(&self) -> &str {
        &self.channel.name
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.channel.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}
