//! Event time: the watermark of one window, advanced by event timestamps and,
//! when the stream goes quiet, by wall time.
//!
//! The watermark `W` is the claim "every event with a timestamp before `W`
//! has arrived". It is the largest timestamp seen minus the
//! out-of-orderness bound, and it never goes back. A window `[start, end)`
//! is complete once `W >= end`.
//!
//! A quiet stream would otherwise hold its last windows open forever, so once
//! no event has arrived for `idle_timeout`, event time is assumed to move
//! with wall time: the watermark becomes `max_ts + (now - last_arrival) -
//! bound`. A replay of old data is not affected (its events keep arriving),
//! and nothing jumps to the wall clock's absolute value.
//!
//! A timestamp too far ahead of wall time would drag the watermark with it
//! and make every later event late, so timestamps beyond `now +
//! future_skew` are rejected or clamped before they are observed.

use super::{OnFuture, TimeConfig};

/// What [`Clock::admit`] decided about an event's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Use the event at this timestamp (its own, or clamped).
    At(i64),
    /// Too far in the future: reject it.
    Future,
}

/// The watermark of one window.
#[derive(Debug, Clone)]
pub struct Clock {
    bound: i64,
    idle_timeout: i64,
    future_skew: i64,
    on_future: OnFuture,
    max_ts: Option<i64>,
    last_arrival: i64,
    watermark: i64,
}

impl Clock {
    /// A clock that has seen nothing: its watermark is `i64::MIN`.
    pub fn new(time: &TimeConfig) -> Clock {
        Clock {
            bound: time.out_of_orderness_ms,
            idle_timeout: time.idle_timeout_ms,
            future_skew: time.future_skew_ms,
            on_future: time.on_future,
            max_ts: None,
            last_arrival: i64::MIN,
            watermark: i64::MIN,
        }
    }

    /// The current watermark.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Largest admitted timestamp so far.
    pub fn max_ts(&self) -> Option<i64> {
        self.max_ts
    }

    /// Check `ts` against the future-skew cap at wall time `now`.
    pub fn admit(&self, ts: i64, now: i64) -> Admit {
        let cap = now.saturating_add(self.future_skew);
        match (ts > cap, self.on_future) {
            (false, _) => Admit::At(ts),
            (true, OnFuture::Clamp) => Admit::At(cap),
            (true, OnFuture::Reject) => Admit::Future,
        }
    }

    /// Observe an admitted timestamp arriving at wall time `now`. Returns
    /// true when the watermark moved.
    pub fn observe(&mut self, ts: i64, now: i64) -> bool {
        self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
        self.last_arrival = now;
        self.raise(ts.saturating_sub(self.bound))
    }

    /// Advance with wall time if the stream has been idle for the timeout.
    /// Returns true when the watermark moved.
    pub fn tick(&mut self, now: i64) -> bool {
        let Some(max_ts) = self.max_ts else {
            return false;
        };
        let idle = now.saturating_sub(self.last_arrival);
        if idle < self.idle_timeout {
            return false;
        }
        self.raise(max_ts.saturating_add(idle).saturating_sub(self.bound))
    }

    /// Event time "now" as live views see it: the largest timestamp, moved
    /// on with wall time while the stream is idle (not reduced by the
    /// out-of-orderness bound).
    pub fn event_now(&self, now: i64) -> Option<i64> {
        let max_ts = self.max_ts?;
        let idle = now.saturating_sub(self.last_arrival);
        Some(if idle >= self.idle_timeout {
            max_ts.saturating_add(idle)
        } else {
            max_ts
        })
    }

    /// Close everything: the end of a finite input.
    pub fn finish(&mut self) -> bool {
        self.raise(i64::MAX)
    }

    fn raise(&mut self, to: i64) -> bool {
        if to > self.watermark {
            self.watermark = to;
            true
        } else {
            false
        }
    }
}
