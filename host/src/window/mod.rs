//! Event-time windows and their aggregations.
//!
//! A window definition (`[[windows]]` in `eddy.toml`, a [`WindowConfig`])
//! names a kind — [tumbling](tumbling), [sliding](sliding) or
//! [session](session) — a filter, the dimensions to group by and the
//! [aggregates](agg) to compute. [`Windows`] runs every configured window
//! over the events that come out of the pipeline:
//!
//! - each window has its own [`Watermark`] over the engine's one
//!   [event-time service](crate::engine::time): the frontier of event
//!   timestamps minus the window's out-of-orderness bound, moved on by wall
//!   time when the stream is idle; timestamps beyond the future-skew cap
//!   are rejected (or clamped) by the service, for every window alike;
//! - when the watermark passes a window's end its groups are published as
//!   `final` results; an event for a window that already fired but is within
//!   `allowed_lateness` is folded in and the group republished as a
//!   `correction`; an event later than that goes to the `late` channel and a
//!   counter, never silently dropped;
//! - optional `early` results every `early_every` of wall time show open
//!   windows live;
//! - each window instance holds at most `max_groups` groups; events of
//!   further groups are folded into the `__overflow__` group and counted;
//! - final results and corrections are kept as history for `history`
//!   (a duration) and at most `max_history` results.
//!
//! Every kind implements [`WindowOperator`]: one required method
//! (`on_event`) and defaulted hooks. Results are typed
//! ([`WindowResult`]); published, they are JSON objects:
//!
//! ```json
//! {"window":"pageviews","kind":"final","start":1700000040000,"end":1700000100000,
//!  "group":{"properties.$current_url":"/pricing"},"values":{"count":12}}
//! ```
//!
//! Processing does not depend on how events are batched: the watermark moves
//! after every event, and a window fires as soon as it passes the window's
//! end. Only early firings and the idle advance depend on wall time, which
//! comes from the engine's inputs (so a replay gives the same results).
//!
//! [`Standalone`] runs windows on their own event-time service, for tests,
//! benchmarks and this example:
//!
//! ```
//! use eddy::window::{Standalone, WindowConfig, WindowKind};
//! use eddy::event::Event;
//!
//! # fn main() -> anyhow::Result<()> {
//! let config = WindowConfig::new("per_minute", WindowKind::Tumbling { size_ms: 60_000 }, &["count"]);
//! let mut windows = Standalone::new(&[config])?;
//! let at = |ts: i64| Event::from_json(
//!     &format!(r#"{{"name":"$pageview","distinct_id":"u","timestamp":{ts}}}"#), || "id".into());
//! let mut out = Vec::new();
//! windows.process(&[at(1_000)?, at(2_000)?, at(61_000)?], 61_000, &mut out);
//! windows.finish(&mut out);
//! let counts: Vec<_> = out.iter().map(|o| o.to_json()["values"]["count"].clone()).collect();
//! assert_eq!(counts, [2, 1]);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value as Json, json};

pub mod agg;
pub mod groups;
pub mod history;
pub mod live;
pub mod merge;
pub mod operator;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod prop_tests;
pub mod result;
pub mod session;
pub mod sliding;
pub mod snapshot;
pub mod state;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
pub mod tumbling;
mod users;

pub use agg::Aggregates;
pub use groups::Grouping;
pub use history::{History, HistoryQuery, HistoryView};
pub use live::{LiveConfig, LiveViews};
pub use operator::{Emitted, ResultKind, WindowOperator};
pub use result::{LateEvent, LateReason, Schema, WindowResult};

use crate::engine::time::{Admit, BatchTime, EventTime, Watermark};
pub use crate::engine::time::{
    DEFAULT_FUTURE_SKEW_MS, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_OUT_OF_ORDERNESS_MS, OnFuture,
};
use crate::event::Event;
use crate::filter::{FieldPath, Filter};
use operator::Ctx;

/// Default `max_groups`: groups per window instance. At roughly 100–300
/// bytes per group for a few simple aggregates (see [`agg`]), 10,000 groups
/// cost a few MB per open window, and cover a busy site's distinct pages.
pub const DEFAULT_MAX_GROUPS: usize = 10_000;
/// Default `history`: how long closed results are kept (1 hour).
pub const DEFAULT_HISTORY_MS: i64 = 3_600_000;
/// Default `max_history`: most closed results kept per window.
pub const DEFAULT_MAX_HISTORY: usize = 100_000;

/// The kind of a window, with its durations (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows.
    Tumbling {
        /// Window length.
        size_ms: i64,
    },
    /// Overlapping windows of `size` every `slide` (`size` a multiple of
    /// `slide`).
    Sliding {
        /// Window length.
        size_ms: i64,
        /// Distance between window starts.
        slide_ms: i64,
    },
    /// Per-group activity sessions.
    Session {
        /// Inactivity that ends a session.
        gap_ms: i64,
        /// Longest span from a session's first to last event.
        max_duration_ms: Option<i64>,
    },
}

impl WindowKind {
    /// `tumbling`, `sliding` or `session`.
    pub fn name(&self) -> &'static str {
        match self {
            WindowKind::Tumbling { .. } => "tumbling",
            WindowKind::Sliding { .. } => "sliding",
            WindowKind::Session { .. } => "session",
        }
    }
}

/// A window's event-time settings (ms). Admission (the future-skew cap) is
/// engine-wide: see [`crate::engine::time::TimeConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeConfig {
    /// The watermark trails the event-time frontier by this much.
    pub out_of_orderness_ms: i64,
    /// How long after a window fired its late events still correct it.
    pub allowed_lateness_ms: i64,
    /// Wall time without events after which the watermark follows wall
    /// time.
    pub idle_timeout_ms: i64,
    /// Publish early results this often (wall time), if set.
    pub early_every_ms: Option<i64>,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            out_of_orderness_ms: DEFAULT_OUT_OF_ORDERNESS_MS,
            allowed_lateness_ms: 0,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            early_every_ms: None,
        }
    }
}

/// A validated `[[windows]]` entry, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowConfig {
    /// Unique name; results go to channel `windows/<name>`.
    pub name: String,
    /// Kind and durations.
    pub kind: WindowKind,
    /// Event-time settings.
    pub time: TimeConfig,
    /// Paths to group by (`name`, `distinct_id`, `properties.<key>`, ...).
    pub group_by: Vec<String>,
    /// Filter in the subscription JSON form (`{"names": [...], "where":
    /// [...]}`), if any.
    pub filter: Option<Json>,
    /// Aggregate expressions, e.g. `count`, `p95(properties.duration_ms)`.
    pub aggregates: Vec<String>,
    /// Groups per window instance before the overflow group.
    pub max_groups: usize,
    /// How long closed results are kept (ms).
    pub history_ms: i64,
    /// Most closed results kept.
    pub max_history: usize,
    /// `partials`: final results carry the group's encoded state, for a
    /// window with `merge_from` on another eddy (see [`merge`]).
    pub partials: bool,
    /// `merge_from`: this window merges the partial results of the window
    /// of this name (read by a `format = "partials"` Kafka source) instead
    /// of taking events.
    pub merge_from: Option<String>,
}

impl WindowConfig {
    /// A window with default settings and no grouping or filter.
    pub fn new(name: &str, kind: WindowKind, aggregates: &[&str]) -> WindowConfig {
        WindowConfig {
            name: name.to_owned(),
            kind,
            time: TimeConfig::default(),
            group_by: Vec::new(),
            filter: None,
            aggregates: aggregates.iter().map(|a| (*a).to_owned()).collect(),
            max_groups: DEFAULT_MAX_GROUPS,
            history_ms: DEFAULT_HISTORY_MS,
            max_history: DEFAULT_MAX_HISTORY,
            partials: false,
            merge_from: None,
        }
    }
}

/// Why a window definition is not valid: the key (relative to the
/// `[[windows]]` entry) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SpecError {
    /// The key, e.g. `aggregates[1]` or `group_by[0]`.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// A window definition compiled for running.
#[derive(Debug, Clone)]
pub struct WindowSpec {
    /// Its name.
    pub name: String,
    /// Kind and durations.
    pub kind: WindowKind,
    /// Event-time settings.
    pub time: TimeConfig,
    /// Grouping.
    pub grouping: Grouping,
    /// Which events count.
    pub filter: Filter,
    /// What is computed.
    pub aggregates: Aggregates,
    /// Groups per instance before overflow.
    pub max_groups: usize,
    /// The definition it came from.
    pub config: WindowConfig,
}

impl WindowSpec {
    /// Compile (and so validate) a definition.
    pub fn compile(config: &WindowConfig) -> Result<WindowSpec, SpecError> {
        let err = |key: String, message: String| SpecError { key, message };
        let group_by = config
            .group_by
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let at = format!("group_by[{i}]");
                let path = FieldPath::parse(p, &at).map_err(|e| err(at.clone(), e.to_string()))?;
                if !path.is_event_field() {
                    return Err(err(
                        at,
                        format!(
                            "`{p}` is not an event field; use name, distinct_id, session_id, id, timestamp or properties.<key>"
                        ),
                    ));
                }
                Ok(path)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filter = match &config.filter {
            None => Filter::default(),
            Some(f) => {
                let filter =
                    Filter::from_json(f).map_err(|e| err("filter".into(), e.to_string()))?;
                filter
                    .check_event_fields()
                    .map_err(|e| err("filter".into(), e.to_string()))?;
                filter
            }
        };
        let aggregates = Aggregates::parse_all(&config.aggregates, "aggregates").map_err(|e| {
            // The message starts with the entry it names
            // (`aggregates[1]: ...`): make that the key.
            let text = e.to_string();
            match text.split_once(": ") {
                Some((key, message)) if key.starts_with("aggregates") => {
                    err(key.to_owned(), message.to_owned())
                }
                _ => err("aggregates".into(), text),
            }
        })?;
        Ok(WindowSpec {
            name: config.name.clone(),
            kind: config.kind,
            time: config.time,
            grouping: Grouping::new(group_by),
            filter,
            aggregates,
            max_groups: config.max_groups.max(1),
            config: config.clone(),
        })
    }
}

impl WindowSpec {
    /// What this window's results render with, as window number `index`.
    pub fn schema(&self, index: usize) -> Arc<Schema> {
        Arc::new(Schema {
            window: self.name.clone(),
            index,
            grouping: self.grouping.clone(),
            outputs: self.aggregates.output_names().map(str::to_owned).collect(),
        })
    }
}

/// Counters of one window, as `GET /v1/windows` and the metrics show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WindowStats {
    /// Events that passed the filter and were aggregated or reported late.
    pub events: u64,
    /// Events later than the allowed lateness (sent to `late`).
    pub late_events: u64,
    /// Events counted in the overflow group.
    pub overflow_events: u64,
    /// Events rejected for a timestamp beyond the future-skew cap.
    pub future_rejected: u64,
    /// Events whose timestamp was clamped to the future-skew cap.
    pub future_clamped: u64,
    /// Early results published.
    pub early_results: u64,
    /// Final results published.
    pub final_results: u64,
    /// Corrections published.
    pub corrections: u64,
}

/// One window at run time.
struct Window {
    op: Box<dyn WindowOperator>,
    watermark: Watermark,
    history: History,
    /// Wall time of the next early firing, once the first tick set it.
    next_early: Option<i64>,
    /// Why the window stopped, if its operator panicked (a host bug): it
    /// takes no more events rather than publish results built on state a
    /// panic left half-updated.
    failed: Option<String>,
    core: Core,
}

/// What an operator's [`Ctx`] borrows.
struct Core {
    spec: WindowSpec,
    schema: Arc<Schema>,
    stats: WindowStats,
    emitted: Vec<Emitted>,
    /// See [`Windows::set_producer`].
    producer: u64,
}

impl Core {
    fn ctx(&mut self) -> Ctx<'_> {
        Ctx {
            spec: &self.spec,
            schema: &self.schema,
            out: &mut self.emitted,
            stats: &mut self.stats,
            producer: self.producer,
        }
    }
}

/// Where an [`Output`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `windows/<name>` of window number `.0` (in configuration order).
    Results(usize),
    /// The `late` channel.
    Late,
}

/// What windows produce for the channels.
#[derive(Debug, Clone)]
pub enum Output {
    /// A result, for `windows/<name>`.
    Result(Arc<WindowResult>),
    /// An event a window could not take, for `late` (boxed: outputs are
    /// moved through several lists, and most are results).
    Late(Box<LateEvent>),
}

impl Output {
    /// Its channel.
    pub fn stream(&self) -> Stream {
        match self {
            Output::Result(r) => Stream::Results(r.schema.index),
            Output::Late(_) => Stream::Late,
        }
    }

    /// The published message.
    pub fn to_json(&self) -> Json {
        match self {
            Output::Result(r) => r.to_json(),
            Output::Late(l) => l.to_json(),
        }
    }

    /// Append the published message (what [`Output::to_json`] serialises
    /// to), written directly.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Output::Result(r) => r.write_json(out),
            Output::Late(l) => l.write_json(out),
        }
    }
}

/// An output with the arrival number of the event that caused it and its
/// window's index: the order outputs are published in.
type Tagged = (u64, usize, Output);

/// The channel of window `name`'s results.
pub fn channel_name(name: &str) -> String {
    format!("windows/{name}")
}

/// The channel events later than their window's lateness go to.
pub const LATE_CHANNEL: &str = "late";

/// Every configured window, plus the live views. Driven by the engine with
/// the event-time facts of each batch and tick.
pub struct Windows {
    windows: Vec<Window>,
    arrival: u64,
    live: LiveViews,
}

impl Windows {
    /// Compile `configs` (already validated by the configuration loader;
    /// an error here names the window).
    pub fn new(configs: &[WindowConfig]) -> anyhow::Result<Windows> {
        Windows::with_live(configs, LiveConfig::default())
    }

    /// The producer id the final results of windows with `partials =
    /// true` carry: [`merge::producer_id`] of the engine's seed (0 until
    /// set).
    pub fn set_producer(&mut self, producer: u64) {
        for w in &mut self.windows {
            w.core.producer = producer;
        }
    }

    /// Like [`Windows::new`], with live-view settings.
    pub fn with_live(configs: &[WindowConfig], live: LiveConfig) -> anyhow::Result<Windows> {
        let windows = configs
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let spec = WindowSpec::compile(c)
                    .map_err(|e| anyhow::anyhow!("window `{}`: {e}", c.name))?;
                let op: Box<dyn WindowOperator> =
                    match spec.kind {
                        WindowKind::Tumbling { size_ms } | WindowKind::Sliding { size_ms, .. }
                            if spec.config.merge_from.is_some() =>
                        {
                            Box::new(merge::Merge::new(size_ms, spec.time.allowed_lateness_ms))
                        }
                        WindowKind::Tumbling { size_ms } => Box::new(tumbling::Tumbling::new(
                            size_ms,
                            spec.time.allowed_lateness_ms,
                        )),
                        WindowKind::Sliding { size_ms, slide_ms } => Box::new(
                            sliding::Sliding::new(size_ms, slide_ms, spec.time.allowed_lateness_ms),
                        ),
                        WindowKind::Session {
                            gap_ms,
                            max_duration_ms,
                        } => Box::new(session::Sessions::new(
                            gap_ms,
                            max_duration_ms,
                            spec.time.allowed_lateness_ms,
                        )),
                    };
                let schema = spec.schema(index);
                Ok(Window {
                    watermark: Watermark::new(
                        spec.time.out_of_orderness_ms,
                        spec.time.idle_timeout_ms,
                    ),
                    history: History::new(c.history_ms, c.max_history),
                    op,
                    next_early: None,
                    failed: None,
                    core: Core {
                        spec,
                        schema,
                        stats: WindowStats::default(),
                        emitted: Vec::new(),
                        producer: 0,
                    },
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Windows {
            windows,
            arrival: 0,
            live: LiveViews::new(live),
        })
    }

    /// The windows' names, in configuration order (the index is
    /// [`Stream::Results`]'s).
    pub fn names(&self) -> Vec<String> {
        self.windows
            .iter()
            .map(|w| w.core.spec.name.clone())
            .collect()
    }

    /// The channel `stream` is published on: `windows/<name>` or `late`.
    pub fn channel(&self, stream: Stream) -> String {
        match stream {
            Stream::Results(i) => self.windows.get(i).map_or_else(
                || "windows/?".to_owned(),
                |w| channel_name(&w.core.spec.name),
            ),
            Stream::Late => LATE_CHANNEL.to_owned(),
        }
    }

    /// An output as one `{"channel", "data"}` line, as `eddy pipe
    /// --windows` writes them and `eddy plugin test --expect-windows` reads
    /// them.
    pub fn line(&self, o: &Output) -> Json {
        json!({"channel": self.channel(o.stream()), "data": o.to_json()})
    }

    /// Run a batch of events through every window, with the event-time
    /// facts the engine's service decided for it (`time.admit[i]` and
    /// `time.frontier[i]` belong to `events[i]`).
    ///
    /// Each window runs the whole batch in turn (cheaper than every window
    /// per event), but outputs come out in the order processing event by
    /// event would give them — by the event that caused them, then by
    /// window — so the `late` channel, which all windows share, and files
    /// that interleave windows read the same however events were batched.
    pub fn on_batch(&mut self, events: &[Event], time: &BatchTime, out: &mut Vec<Output>) {
        let mut tagged = Vec::new();
        self.on_batch_tagged(events, time, &mut tagged);
        out.extend(tagged.into_iter().map(|t| t.2));
    }

    /// [`Windows::on_batch`], each output tagged with the index in the
    /// batch of the event that produced it and the window's index, in that
    /// order (so the engine can merge other operators' outputs by event).
    pub fn on_batch_tagged(
        &mut self,
        events: &[Event],
        time: &BatchTime,
        out: &mut Vec<(u64, usize, Output)>,
    ) {
        let base = self.arrival;
        self.arrival += events.len() as u64;
        let mut tagged: Vec<Tagged> = Vec::new();
        for (index, w) in self.windows.iter_mut().enumerate() {
            if w.core.spec.config.merge_from.is_some() {
                // It takes partial results, not events.
                continue;
            }
            w.guarded(|w| {
                for (i, ev) in events.iter().enumerate() {
                    let (Some(&admit), Some(&frontier)) = (time.admit.get(i), time.frontier.get(i))
                    else {
                        break;
                    };
                    let arrival = base + i as u64;
                    w.step(ev, arrival, admit, frontier);
                    w.drain(arrival, index, &mut tagged);
                }
            });
        }
        // Stable: a window's outputs of one event keep their order.
        tagged.sort_by_key(|t| (t.0, t.1));
        out.extend(
            tagged
                .into_iter()
                .map(|(arrival, w, o)| (arrival - base, w, o)),
        );
        self.live.observe(events, time);
    }

    /// Wall time moved (the service has taken the tick): advance idle
    /// watermarks and publish early results that are due.
    pub fn on_tick(&mut self, time: &EventTime, out: &mut Vec<Output>) {
        let Some(now) = time.wall() else {
            return;
        };
        let mut tagged = Vec::new();
        for (index, w) in self.windows.iter_mut().enumerate() {
            w.guarded(|w| {
                w.tick(time, now);
                w.drain(0, index, &mut tagged);
            });
        }
        out.extend(tagged.into_iter().map(|t| t.2));
        self.live.tick(time);
    }

    /// Partial results read from Kafka, arriving at wall time `wall`: each
    /// merged into every window whose `merge_from` names its window (see
    /// [`merge`]). One that no window merges, or whose state does not fit
    /// the window, is returned with the reason, for a dead letter.
    pub fn on_partials(
        &mut self,
        partials: &[merge::Partial],
        wall: Option<i64>,
        out: &mut Vec<Output>,
    ) -> Vec<(usize, String)> {
        let mut refused = Vec::new();
        let mut tagged = Vec::new();
        for (i, p) in partials.iter().enumerate() {
            let mut merged = false;
            for (index, w) in self.windows.iter_mut().enumerate() {
                if w.core.spec.config.merge_from.as_deref() != Some(p.window.as_str()) {
                    continue;
                }
                merged = true;
                match p.open(&w.core.spec) {
                    Ok(opened) => {
                        let mut duplicate = None;
                        w.guarded(|w| {
                            duplicate = w.merge(p, opened, wall).err();
                            w.drain(i as u64, index, &mut tagged);
                        });
                        if let Some(why) = duplicate {
                            refused.push((i, format!("window `{}`: {why}", w.core.spec.name)));
                        }
                    }
                    Err(why) => refused.push((i, format!("window `{}`: {why}", w.core.spec.name))),
                }
            }
            if !merged {
                refused.push((i, format!("no window has merge_from = \"{}\"", p.window)));
            }
        }
        out.extend(tagged.into_iter().map(|t| t.2));
        refused
    }

    /// The input ended: fire every open window.
    pub fn on_finish(&mut self, out: &mut Vec<Output>) {
        let mut tagged = Vec::new();
        for (index, w) in self.windows.iter_mut().enumerate() {
            w.guarded(|w| {
                if w.watermark.finish() {
                    let wm = w.watermark.get();
                    w.op.on_watermark(&mut w.core.ctx(), wm);
                }
                w.op.on_close(&mut w.core.ctx());
                w.drain(0, index, &mut tagged);
            });
        }
        out.extend(tagged.into_iter().map(|t| t.2));
    }

    /// Put `op` in place of window `index`'s operator (tests: an operator
    /// that misbehaves).
    #[cfg(test)]
    pub(crate) fn replace_operator(&mut self, index: usize, op: Box<dyn WindowOperator>) {
        if let Some(w) = self.windows.get_mut(index) {
            w.op = op;
        }
    }

    /// `GET /v1/windows`: every window's definition, watermark, sizes and
    /// counters.
    pub fn list(&self) -> Json {
        Json::Array(self.windows.iter().map(Window::describe).collect())
    }

    /// `GET /v1/windows/<name>`: the current values of open windows, at
    /// most `limit` groups. `None` if there is no such window.
    pub fn open(&self, name: &str, limit: usize) -> Option<Json> {
        let w = self.windows.iter().find(|w| w.core.spec.name == name)?;
        let groups: Vec<Json> = w
            .op
            .open(&w.core.spec, limit)
            .into_iter()
            .map(|g| {
                json!({
                    "start": g.start,
                    "end": g.end,
                    "group": w.core.spec.grouping.to_json(&g.key),
                    "values": w.core.spec.aggregates.finish(&g.acc, g.end.saturating_sub(g.start)),
                })
            })
            .collect();
        Some(json!({
            "window": w.core.spec.name,
            "watermark": watermark_json(w.watermark.get()),
            "groups": groups,
        }))
    }

    /// A read-only copy of window `name`'s history, for a query on another
    /// thread. `None` if there is no such window.
    pub fn history(&self, name: &str) -> Option<HistoryView> {
        let w = self.windows.iter().find(|w| w.core.spec.name == name)?;
        Some(w.history.view())
    }

    /// The live views.
    pub fn live(&self) -> &LiveViews {
        &self.live
    }

    /// Stop keeping what only queries and snapshots read: the live views
    /// and every window's history (see [`LiveViews::switch_off`],
    /// [`History::switch_off`]). Results are published as before.
    pub fn switch_off_query_state(&mut self) {
        self.live.switch_off();
        for w in &mut self.windows {
            w.history.switch_off();
        }
    }

    /// Set the Prometheus gauges and counters of every window.
    pub fn record_metrics(&self) {
        for w in &self.windows {
            let name = w.core.spec.name.clone();
            let (instances, groups) = w.op.sizes();
            metrics::gauge!("eddy_window_open", "window" => name.clone()).set(instances as f64);
            metrics::gauge!("eddy_window_groups", "window" => name.clone()).set(groups as f64);
            metrics::gauge!("eddy_window_history_results", "window" => name.clone())
                .set(w.history.len() as f64);
            let wm = w.watermark.get();
            if wm > i64::MIN && wm < i64::MAX {
                metrics::gauge!("eddy_window_watermark_ms", "window" => name.clone())
                    .set(wm as f64);
            }
            let s = &w.core.stats;
            for (metric, v) in [
                ("eddy_window_events_total", s.events),
                ("eddy_window_late_events_total", s.late_events),
                ("eddy_window_overflow_events_total", s.overflow_events),
                ("eddy_window_future_rejected_total", s.future_rejected),
                ("eddy_window_future_clamped_total", s.future_clamped),
                ("eddy_window_results_total", s.final_results),
                ("eddy_window_corrections_total", s.corrections),
            ] {
                metrics::counter!(metric, "window" => name.clone()).absolute(v);
            }
            metrics::gauge!("eddy_window_failed", "window" => name).set(if w.failed.is_some() {
                1.0
            } else {
                0.0
            });
        }
        self.live.record_metrics();
    }
}

fn watermark_json(wm: i64) -> Json {
    if wm == i64::MIN {
        Json::Null
    } else {
        Json::from(wm)
    }
}

impl Window {
    /// Run `f` unless the window has failed; a panic in it (a host bug)
    /// fails the window: what the event it panicked on made it emit is
    /// discarded (what earlier events made it publish stands), and it takes
    /// nothing more. The rest of the engine goes on.
    fn guarded(&mut self, f: impl FnOnce(&mut Window)) {
        if self.failed.is_some() {
            return;
        }
        let run = std::panic::AssertUnwindSafe(|| f(self));
        if let Err(panic) = std::panic::catch_unwind(run) {
            let why = panic_message(&*panic);
            tracing::error!(
                window = %self.core.spec.name,
                panic = %why,
                "a window operator panicked (a bug: please report it); the window stops"
            );
            self.core.emitted.clear();
            self.failed = Some(why);
        }
    }

    fn step(&mut self, ev: &Event, arrival: u64, admit: Admit, frontier: i64) {
        let matches = self.core.spec.filter.matches(ev);
        let ts = match admit {
            Admit::At(ts) => ts,
            Admit::Future { cap } => {
                // Not observed, so it cannot drag the watermark; reported
                // only if it was this window's event.
                if matches {
                    self.core.stats.events += 1;
                    self.core.stats.future_rejected += 1;
                    self.core.emitted.push(Emitted::Late(LateEvent {
                        schema: Arc::clone(&self.core.schema),
                        reason: LateReason::Future { max_timestamp: cap },
                        event: ev.clone(),
                    }));
                }
                return;
            }
        };
        if matches {
            self.core.stats.events += 1;
            if ts != ev.timestamp {
                self.core.stats.future_clamped += 1;
            }
            let key = self.core.spec.grouping.key(ev);
            let wm = self.watermark.get();
            self.op
                .on_event(&mut self.core.ctx(), ev, ts, key, arrival, wm);
        }
        if self.watermark.follow(frontier) {
            let wm = self.watermark.get();
            self.op.on_watermark(&mut self.core.ctx(), wm);
        }
    }

    /// Merge one partial (a window with `merge_from`), then move the
    /// watermark after the partials' frontier.
    fn merge(
        &mut self,
        p: &merge::Partial,
        opened: merge::Opened,
        wall: Option<i64>,
    ) -> Result<(), String> {
        let wm = self.watermark.get();
        let Some(m) = self.op.as_merge() else {
            return Ok(());
        };
        let merged = m.merge(&mut self.core.ctx(), p, opened, wall, wm);
        let frontier = m.frontier();
        if self.watermark.follow(frontier) {
            let wm = self.watermark.get();
            self.op.on_watermark(&mut self.core.ctx(), wm);
        }
        merged
    }

    fn tick(&mut self, time: &EventTime, now: i64) {
        let idle_timeout = self.core.spec.time.idle_timeout_ms;
        let moved = match self.op.as_merge() {
            // A merging window's event time is its partials': only they,
            // or a pause in them, move it (see [`merge`]).
            Some(m) => m
                .idle_target(now, idle_timeout)
                .is_some_and(|to| self.watermark.reach(to)),
            None => self.watermark.tick(time),
        };
        if moved {
            self.op
                .on_watermark(&mut self.core.ctx(), self.watermark.get());
        }
        let early = match self.core.spec.time.early_every_ms {
            None => false,
            Some(every) => {
                let due = *self.next_early.get_or_insert(now.saturating_add(every));
                if now >= due {
                    self.next_early = Some(now.saturating_add(every));
                    true
                } else {
                    false
                }
            }
        };
        self.op.on_tick(&mut self.core.ctx(), now, early);
    }

    /// Move what the operator emitted to `out`, tagged with the arrival of
    /// the event that caused it and this window's index, recording final
    /// results and corrections in the history.
    fn drain(&mut self, arrival: u64, index: usize, out: &mut Vec<Tagged>) {
        for e in self.core.emitted.drain(..) {
            let output = match e {
                Emitted::Result(result) => {
                    let result = Arc::new(result);
                    if result.kind != ResultKind::Early && !self.history.is_off() {
                        self.history.push(Arc::clone(&result));
                    }
                    Output::Result(result)
                }
                Emitted::Late(late) => Output::Late(Box::new(late)),
            };
            out.push((arrival, index, output));
        }
    }

    fn describe(&self) -> Json {
        let c = &self.core.spec.config;
        let mut kind = json!({"kind": self.core.spec.kind.name()});
        match self.core.spec.kind {
            WindowKind::Tumbling { size_ms } => kind["size_ms"] = json!(size_ms),
            WindowKind::Sliding { size_ms, slide_ms } => {
                kind["size_ms"] = json!(size_ms);
                kind["slide_ms"] = json!(slide_ms);
            }
            WindowKind::Session {
                gap_ms,
                max_duration_ms,
            } => {
                kind["gap_ms"] = json!(gap_ms);
                kind["max_duration_ms"] = json!(max_duration_ms);
            }
        }
        let (open, groups) = self.op.sizes();
        json!({
            "name": c.name,
            "channel": channel_name(&c.name),
            "window": kind,
            "group_by": c.group_by,
            "filter": c.filter,
            "aggregates": self.core.spec.aggregates.output_names().collect::<Vec<_>>(),
            "out_of_orderness_ms": c.time.out_of_orderness_ms,
            "allowed_lateness_ms": c.time.allowed_lateness_ms,
            "idle_timeout_ms": c.time.idle_timeout_ms,
            "early_every_ms": c.time.early_every_ms,
            "partials": c.partials,
            "merge_from": c.merge_from,
            "watermark": watermark_json(self.watermark.get()),
            "open": open,
            "groups": groups,
            "history_results": self.history.len(),
            "stats": self.core.stats,
            "failed": self.failed,
        })
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Windows on an event-time service of their own, outside an engine: for
/// tests, benchmarks and examples. Each call stands for one input arriving
/// at wall time `now`.
pub struct Standalone {
    /// The service.
    pub time: EventTime,
    /// The windows.
    pub windows: Windows,
}

impl Standalone {
    /// Windows with default engine-wide time settings.
    pub fn new(configs: &[WindowConfig]) -> anyhow::Result<Standalone> {
        Standalone::with_time(configs, crate::engine::time::TimeConfig::default())
    }

    /// Windows with these engine-wide time settings.
    pub fn with_time(
        configs: &[WindowConfig],
        time: crate::engine::time::TimeConfig,
    ) -> anyhow::Result<Standalone> {
        Ok(Standalone {
            time: EventTime::new(time),
            windows: Windows::new(configs)?,
        })
    }

    /// A batch arriving at wall time `now` (`None`: no wall clock).
    pub fn process_at(&mut self, events: &[Event], now: Option<i64>, out: &mut Vec<Output>) {
        let facts = self.time.batch(0, now, events);
        self.windows.on_batch(events, &facts, out);
    }

    /// A batch arriving at wall time `now`.
    pub fn process(&mut self, events: &[Event], now: i64, out: &mut Vec<Output>) {
        self.process_at(events, Some(now), out);
    }

    /// Wall time is `now`.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Output>) {
        self.time.tick(now);
        self.windows.on_tick(&self.time, out);
    }

    /// The input ended.
    pub fn finish(&mut self, out: &mut Vec<Output>) {
        self.time.finish();
        self.windows.on_finish(out);
    }
}
