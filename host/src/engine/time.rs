//! The engine's one event-time service: which timestamps are admitted, and
//! how far event time has got, for every operator (windows, live views, and
//! later patterns and alerts) to read.
//!
//! # Facts and policies
//!
//! The service keeps *facts* that follow from the inputs alone: per source,
//! the largest admitted timestamp and the wall time its last event arrived;
//! and the latest wall time any input carried. Operators apply their own
//! *policy* to those facts: a window's watermark is the event-time frontier
//! minus its out-of-orderness bound, moved on with wall time once the
//! stream has been idle for its idle timeout. Admission (the future-skew
//! cap) is decided here, once per event, because an admitted timestamp
//! moves the frontier every operator reads.
//!
//! # Wall time
//!
//! Wall time only ever comes from inputs: a [`Batch`](super::Batch)'s
//! `wall_ms` and a [`Tick`](super::Input::Tick). `eddy serve` stamps each
//! input with the machine's clock once; `eddy pipe --clock virtual` and the
//! plugin test tools take it from `{"$wall": MS}` lines, and until the first
//! one there is no wall time at all. Then an event is taken to have arrived
//! at its own timestamp (so an idle gap is measured from the newest event),
//! and nothing can be "in the future" for lack of a clock to be ahead of.
//!
//! # The frontier
//!
//! The frontier is what every source has reached: the minimum over sources
//! of their largest admitted timestamp. A source that has been idle for the
//! idle timeout stops holding it back (as Flink marks an idle split), and
//! when every source is idle the frontier moves on with wall time. With one
//! source (HTTP ingest, a file) the frontier is simply the largest admitted
//! timestamp. It moves after every event, so results never depend on how
//! events were batched.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Event;

/// Default out-of-orderness: how far behind the newest event an event may
/// arrive and still count as on time. 5 s covers client clock jitter and
/// SDK batching (SDKs flush every few seconds).
pub const DEFAULT_OUT_OF_ORDERNESS_MS: i64 = 5_000;
/// Default idle timeout: after this much wall time without events, event
/// time moves with wall time. 10 s: a dashboard sees a quiet minute's window
/// close within seconds of its end, and a brief lull closes nothing early.
pub const DEFAULT_IDLE_TIMEOUT_MS: i64 = 10_000;
/// Default future-skew cap: the ingest API's own (5 minutes of client clock
/// skew).
pub const DEFAULT_FUTURE_SKEW_MS: i64 = crate::ingest::DEFAULT_FUTURE_SKEW_MS;

/// Which input stream an event came from: `0` for HTTP ingest and files;
/// later one per Kafka partition.
pub type SourceId = u32;

/// What happens to an event whose timestamp is beyond the future-skew cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OnFuture {
    /// Count it and report it on the `late` channel with reason `future`.
    #[default]
    Reject,
    /// Count it and use `wall + future_skew` as its timestamp.
    Clamp,
}

/// `[time]`: the engine-wide event-time settings (ms). Windows may set
/// their own out-of-orderness and idle timeout; admission is engine-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeConfig {
    /// Default out-of-orderness bound of windows.
    pub out_of_orderness_ms: i64,
    /// Wall time without events after which a source stops holding the
    /// frontier back, and (for every source together) event time follows
    /// wall time; also the windows' default.
    pub idle_timeout_ms: i64,
    /// Largest accepted distance of a timestamp ahead of wall time.
    pub future_skew_ms: i64,
    /// What happens beyond it.
    pub on_future: OnFuture,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            out_of_orderness_ms: DEFAULT_OUT_OF_ORDERNESS_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            future_skew_ms: DEFAULT_FUTURE_SKEW_MS,
            on_future: OnFuture::Reject,
        }
    }
}

/// What the service decided about one event's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Use the event at this timestamp (its own, or clamped to the cap).
    At(i64),
    /// Beyond the cap, rejected; the cap was this.
    Future {
        /// `wall + future_skew` when the event arrived.
        cap: i64,
    },
}

/// One source's facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SourceTime {
    /// Largest admitted timestamp.
    max_ts: i64,
    /// When its last event arrived: the input's wall time, or the event's
    /// own timestamp when there was none.
    last_arrival: i64,
}

/// The event-time facts of one batch, per event, as operators read them.
#[derive(Debug, Default)]
pub struct BatchTime {
    /// Per event: admitted at a timestamp, or rejected as future.
    pub admit: Vec<Admit>,
    /// Per event: the frontier once the event is taken in (non-decreasing).
    pub frontier: Vec<i64>,
}

/// The service. Its state is part of the engine's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTime {
    #[serde(skip, default)]
    config: ConfigCell,
    sources: BTreeMap<SourceId, SourceTime>,
    /// The latest wall time an input carried.
    wall: Option<i64>,
    /// The frontier reached so far (never goes back, even when a source
    /// joins behind it).
    frontier: i64,
    /// Set once the input is finished: every watermark is at the end of
    /// time.
    finished: bool,
}

/// [`TimeConfig`] behind a wrapper so the state derives `Default` for serde.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ConfigCell(Option<TimeConfig>);

impl ConfigCell {
    fn get(&self) -> TimeConfig {
        self.0.unwrap_or_default()
    }
}

impl EventTime {
    /// A service that has seen nothing.
    pub fn new(config: TimeConfig) -> EventTime {
        EventTime {
            config: ConfigCell(Some(config)),
            sources: BTreeMap::new(),
            wall: None,
            frontier: i64::MIN,
            finished: false,
        }
    }

    /// Put restored facts under `config` (settings are not state: they come
    /// from the configuration the engine is restored with).
    pub fn with_config(mut self, config: TimeConfig) -> EventTime {
        self.config = ConfigCell(Some(config));
        self
    }

    /// The settings.
    pub fn config(&self) -> TimeConfig {
        self.config.get()
    }

    /// The latest wall time inputs carried, if any did.
    pub fn wall(&self) -> Option<i64> {
        self.wall
    }

    /// The frontier: `i64::MIN` before any event, `i64::MAX` once finished.
    pub fn frontier(&self) -> i64 {
        if self.finished {
            i64::MAX
        } else {
            self.frontier
        }
    }

    /// Whether [`EventTime::finish`] was called.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The largest admitted timestamp of any source.
    pub fn max_ts(&self) -> Option<i64> {
        self.sources.values().map(|s| s.max_ts).max()
    }

    /// The time plugins' clocks read for a batch arriving at `wall`: the
    /// wall time if inputs carry one, else the newest timestamp seen so far
    /// or in `events` (a replay without `$wall` lines: events are taken to
    /// arrive at their own time).
    pub fn plugin_now_at(&self, wall: Option<i64>, events: &[Event]) -> i64 {
        match (wall, self.wall) {
            (Some(w), Some(old)) => w.max(old),
            (Some(w), None) | (None, Some(w)) => w,
            (None, None) => events
                .iter()
                .map(|e| e.timestamp)
                .chain(self.max_ts())
                .max()
                .unwrap_or(0),
        }
    }

    fn advance_wall(&mut self, wall: Option<i64>) {
        if let Some(w) = wall {
            self.wall = Some(self.wall.map_or(w, |old| old.max(w)));
        }
    }

    /// Take in a batch of `source` arriving at `wall`: decide each event's
    /// admission and the frontier after it.
    pub fn batch(&mut self, source: SourceId, wall: Option<i64>, events: &[Event]) -> BatchTime {
        self.advance_wall(wall);
        let config = self.config();
        let mut out = BatchTime {
            admit: Vec::with_capacity(events.len()),
            frontier: Vec::with_capacity(events.len()),
        };
        for ev in events {
            let admit = match self.wall {
                Some(w) => {
                    let cap = w.saturating_add(config.future_skew_ms);
                    match (ev.timestamp > cap, config.on_future) {
                        (false, _) => Admit::At(ev.timestamp),
                        (true, OnFuture::Clamp) => Admit::At(cap),
                        (true, OnFuture::Reject) => Admit::Future { cap },
                    }
                }
                None => Admit::At(ev.timestamp),
            };
            if let Admit::At(ts) = admit {
                let arrival = self.wall.unwrap_or(ts);
                let s = self.sources.entry(source).or_insert(SourceTime {
                    max_ts: ts,
                    last_arrival: arrival,
                });
                s.max_ts = s.max_ts.max(ts);
                s.last_arrival = s.last_arrival.max(arrival);
                self.raise();
            }
            out.admit.push(admit);
            out.frontier.push(self.frontier());
        }
        out
    }

    /// Wall time moved to `wall` with no events.
    pub fn tick(&mut self, wall: i64) {
        self.advance_wall(Some(wall));
        self.raise();
    }

    /// The input ended: every watermark goes to the end of time.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Recompute the frontier from the facts; it never goes back.
    fn raise(&mut self) {
        let idle_timeout = self.config().idle_timeout_ms;
        let now = self.wall;
        let busy =
            |s: &SourceTime| now.is_none_or(|w| w.saturating_sub(s.last_arrival) < idle_timeout);
        let held = self
            .sources
            .values()
            .filter(|s| busy(s))
            .map(|s| s.max_ts)
            .min();
        let reached = match held {
            Some(ts) => Some(ts),
            // Every source idle: the fastest one sets the pace (the idle
            // advance itself is each operator's own, by its timeout).
            None => self.max_ts(),
        };
        if let Some(ts) = reached {
            self.frontier = self.frontier.max(ts);
        }
    }

    /// How far event time has moved on with wall time for an operator whose
    /// idle timeout is `idle_timeout_ms`: `max_ts + idle` once every source
    /// has been quiet that long, else `None`.
    pub fn idle_frontier(&self, idle_timeout_ms: i64) -> Option<i64> {
        let wall = self.wall?;
        let last = self.sources.values().map(|s| s.last_arrival).max()?;
        let idle = wall.saturating_sub(last);
        (idle >= idle_timeout_ms).then(|| self.max_ts().unwrap_or(i64::MIN).saturating_add(idle))
    }

    /// Event time "now" for live views: the frontier, moved on with wall
    /// time while the stream is idle (not reduced by any bound).
    pub fn event_now(&self) -> Option<i64> {
        let max_ts = self.max_ts()?;
        let idle = self.idle_frontier(self.config().idle_timeout_ms);
        Some(idle.unwrap_or(max_ts).max(self.frontier))
    }
}

/// One operator's watermark over the service: the frontier minus its bound,
/// moved by the idle advance, never going back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    bound: i64,
    idle_timeout: i64,
    current: i64,
}

impl Watermark {
    /// A watermark that has seen nothing (`i64::MIN`).
    pub fn new(bound_ms: i64, idle_timeout_ms: i64) -> Watermark {
        Watermark {
            bound: bound_ms,
            idle_timeout: idle_timeout_ms,
            current: i64::MIN,
        }
    }

    /// Keep the restored position, under (possibly changed) settings.
    pub fn with_settings(self, bound_ms: i64, idle_timeout_ms: i64) -> Watermark {
        Watermark {
            bound: bound_ms,
            idle_timeout: idle_timeout_ms,
            current: self.current,
        }
    }

    /// The current watermark.
    pub fn get(&self) -> i64 {
        self.current
    }

    /// Follow the frontier after an event. True if the watermark moved.
    pub fn follow(&mut self, frontier: i64) -> bool {
        let to = if frontier == i64::MAX {
            i64::MAX
        } else {
            frontier.saturating_sub(self.bound)
        };
        self.raise(to)
    }

    /// Wall time moved (a tick): apply the idle advance. True if moved.
    pub fn tick(&mut self, time: &EventTime) -> bool {
        let from_frontier = self.follow(time.frontier());
        let idle = time
            .idle_frontier(self.idle_timeout)
            .is_some_and(|f| self.raise(f.saturating_sub(self.bound)));
        from_frontier || idle
    }

    /// Move up to `to` itself, not reduced by the bound (a merging
    /// window's idle advance to its partials' frontier). True if moved.
    pub fn reach(&mut self, to: i64) -> bool {
        self.raise(to)
    }

    /// The end of the input.
    pub fn finish(&mut self) -> bool {
        self.raise(i64::MAX)
    }

    fn raise(&mut self, to: i64) -> bool {
        if to > self.current {
            self.current = to;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn ev(ts: i64) -> Event {
        Event {
            id: "e".into(),
            name: "n".into(),
            timestamp: ts,
            distinct_id: "u".into(),
            session_id: None,
            properties: Vec::new(),
        }
    }

    fn config(skew: i64, on_future: OnFuture) -> TimeConfig {
        TimeConfig {
            future_skew_ms: skew,
            on_future,
            ..TimeConfig::default()
        }
    }

    #[test]
    fn without_wall_time_nothing_is_in_the_future() {
        let mut t = EventTime::new(config(1, OnFuture::Reject));
        let b = t.batch(0, None, &[ev(1_000), ev(10_000_000), ev(5)]);
        assert_eq!(
            b.admit,
            vec![Admit::At(1_000), Admit::At(10_000_000), Admit::At(5)]
        );
        assert_eq!(b.frontier, vec![1_000, 10_000_000, 10_000_000]);
    }

    #[test]
    fn the_cap_is_wall_plus_skew_and_rejected_events_do_not_move_the_frontier() {
        let mut t = EventTime::new(config(60_000, OnFuture::Reject));
        let b = t.batch(
            0,
            Some(100_000),
            &[ev(100_000), ev(10_000_000), ev(101_000)],
        );
        assert_eq!(b.admit[1], Admit::Future { cap: 160_000 });
        assert_eq!(b.frontier, vec![100_000, 100_000, 101_000]);
        let mut c = EventTime::new(config(60_000, OnFuture::Clamp));
        let b = c.batch(0, Some(100_000), &[ev(10_000_000)]);
        assert_eq!(b.admit, vec![Admit::At(160_000)]);
    }

    #[test]
    fn results_do_not_depend_on_batching() {
        let events: Vec<Event> = [5, 3, 9, 2, 12, 11].into_iter().map(ev).collect();
        let mut whole = EventTime::new(TimeConfig::default());
        let all = whole.batch(0, Some(0), &events);
        let mut parts = EventTime::new(TimeConfig::default());
        let mut frontier = Vec::new();
        for chunk in events.chunks(2) {
            frontier.extend(parts.batch(0, Some(0), chunk).frontier);
        }
        assert_eq!(all.frontier, frontier);
        assert_eq!(whole, parts);
    }

    #[test]
    fn the_slowest_busy_source_holds_the_frontier_until_it_goes_idle() {
        let mut t = EventTime::new(TimeConfig {
            idle_timeout_ms: 10,
            ..TimeConfig::default()
        });
        t.batch(1, Some(100), &[ev(50)]);
        t.batch(2, Some(100), &[ev(90)]);
        assert_eq!(t.frontier(), 50, "source 1 is behind");
        t.batch(2, Some(105), &[ev(95)]);
        assert_eq!(t.frontier(), 50);
        t.tick(111);
        assert_eq!(
            t.frontier(),
            95,
            "source 1 idle since 100: it no longer holds back"
        );
        t.batch(3, Some(111), &[ev(20)]);
        assert_eq!(
            t.frontier(),
            95,
            "a source joining behind does not move it back"
        );
    }

    #[test]
    fn a_watermark_trails_by_its_bound_and_advances_when_idle() {
        let mut t = EventTime::new(TimeConfig::default());
        let mut w = Watermark::new(5_000, 10_000);
        let b = t.batch(0, Some(1_000), &[ev(1_000)]);
        assert!(w.follow(b.frontier[0]));
        assert_eq!(w.get(), -4_000);
        t.tick(10_999);
        assert!(!w.tick(&t));
        t.tick(11_000);
        assert!(w.tick(&t));
        assert_eq!(w.get(), 1_000 + 10_000 - 5_000);
        assert!(w.finish());
        assert_eq!(w.get(), i64::MAX);
    }

    #[test]
    fn without_wall_time_an_idle_gap_counts_from_the_newest_event() {
        let mut t = EventTime::new(TimeConfig::default());
        t.batch(0, None, &[ev(1_000)]);
        t.tick(12_000);
        assert_eq!(t.idle_frontier(10_000), Some(12_000));
        assert_eq!(t.event_now(), Some(12_000));
    }
}
