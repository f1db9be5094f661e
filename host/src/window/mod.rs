//! Event-time windows and their aggregations.
//!
//! A window definition (`[[windows]]` in `eddy.toml`, a [`WindowConfig`])
//! names a kind — [tumbling](tumbling), [sliding](sliding) or
//! [session](session) — a filter, the dimensions to group by and the
//! [aggregates](agg) to compute. [`Windows`] runs every configured window
//! over the events that come out of the pipeline:
//!
//! - each window has its own [`Clock`](time::Clock): a watermark from event
//!   timestamps minus an out-of-orderness bound, moved on by wall time when
//!   the stream is idle, with a cap on future timestamps;
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
//! (`on_event`) and defaulted hooks. Results are JSON objects:
//!
//! ```json
//! {"window":"pageviews","kind":"final","start":1700000040000,"end":1700000100000,
//!  "group":{"properties.$current_url":"/pricing"},"values":{"count":12}}
//! ```
//!
//! Processing does not depend on how events are batched: the watermark moves
//! after every event, and a window fires as soon as it passes the window's
//! end. Only early firings and the idle advance depend on wall time, which
//! the caller passes in (so tests can replay it).
//!
//! ```
//! use eddy::window::{WindowConfig, WindowKind, Windows};
//! use eddy::event::Event;
//!
//! # fn main() -> anyhow::Result<()> {
//! let config = WindowConfig::new("per_minute", WindowKind::Tumbling { size_ms: 60_000 }, &["count"]);
//! let mut windows = Windows::new(&[config])?;
//! let at = |ts: i64| Event::from_json(
//!     &format!(r#"{{"name":"$pageview","distinct_id":"u","timestamp":{ts}}}"#), || "id".into());
//! let mut out = Vec::new();
//! windows.process(&[at(1_000)?, at(2_000)?, at(61_000)?], 61_000, &mut out);
//! windows.finish(&mut out);
//! let counts: Vec<_> = out.iter().map(|o| o.payload["values"]["count"].clone()).collect();
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
pub mod operator;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod prop_tests;
pub mod publish;
pub mod replay;
pub mod session;
pub mod sliding;
pub mod state;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
pub mod time;
pub mod tumbling;
mod users;

pub use agg::Aggregates;
pub use groups::Grouping;
pub use history::{History, HistoryQuery};
pub use live::{LiveConfig, LiveViews};
pub use operator::{Emitted, ResultKind, WindowOperator};
pub use publish::LiveWindows;

use crate::event::Event;
use crate::filter::{FieldPath, Filter};
use operator::Ctx;
use time::{Admit, Clock};

/// Default `max_groups`: groups per window instance. At roughly 100–300
/// bytes per group for a few simple aggregates (see [`agg`]), 10,000 groups
/// cost a few MB per open window, and cover a busy site's distinct pages.
pub const DEFAULT_MAX_GROUPS: usize = 10_000;
/// Default `out_of_orderness`: how far behind the newest event an event may
/// arrive and still count as on time. 5 s covers client clock jitter and
/// batching by SDKs, which flush every few seconds.
pub const DEFAULT_OUT_OF_ORDERNESS_MS: i64 = 5_000;
/// Default `idle_timeout`: after this much wall time without events the
/// watermark moves with wall time. 10 s: a dashboard sees a quiet minute's
/// window close within seconds of its end, and a brief lull does not close
/// windows early.
pub const DEFAULT_IDLE_TIMEOUT_MS: i64 = 10_000;
/// Default `future_skew`: timestamps more than this ahead of wall time are
/// rejected (or clamped). The ingest API's own default cap.
pub const DEFAULT_FUTURE_SKEW_MS: i64 = crate::ingest::DEFAULT_FUTURE_SKEW_MS;
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

/// What to do with an event whose timestamp is beyond the future-skew cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFuture {
    /// Count it and send it to the `late` channel with reason `future`.
    #[default]
    Reject,
    /// Count it and use `now + future_skew` as its timestamp.
    Clamp,
}

/// A window's event-time settings (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeConfig {
    /// The watermark trails the newest timestamp by this much.
    pub out_of_orderness_ms: i64,
    /// How long after a window fired its late events still correct it.
    pub allowed_lateness_ms: i64,
    /// Wall time without events after which the watermark follows wall
    /// time.
    pub idle_timeout_ms: i64,
    /// Largest accepted distance of a timestamp ahead of wall time.
    pub future_skew_ms: i64,
    /// What happens beyond it.
    pub on_future: OnFuture,
    /// Publish early results this often (wall time), if set.
    pub early_every_ms: Option<i64>,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            out_of_orderness_ms: DEFAULT_OUT_OF_ORDERNESS_MS,
            allowed_lateness_ms: 0,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            future_skew_ms: DEFAULT_FUTURE_SKEW_MS,
            on_future: OnFuture::Reject,
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

/// Counters of one window, as `GET /v1/windows` and the metrics show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
    clock: Clock,
    history: History,
    next_early: Option<i64>,
    core: Core,
}

/// What an operator's [`Ctx`] borrows.
struct Core {
    spec: WindowSpec,
    stats: WindowStats,
    emitted: Vec<Emitted>,
}

impl Core {
    fn ctx(&mut self) -> Ctx<'_> {
        Ctx {
            spec: &self.spec,
            out: &mut self.emitted,
            stats: &mut self.stats,
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

/// A message for a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Its channel.
    pub stream: Stream,
    /// The message.
    pub payload: Json,
}

/// The channel of window `name`'s results.
pub fn channel_name(name: &str) -> String {
    format!("windows/{name}")
}

/// The channel events later than their window's lateness go to.
pub const LATE_CHANNEL: &str = "late";

/// Every configured window, plus the live views.
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

    /// Like [`Windows::new`], with live-view settings.
    pub fn with_live(configs: &[WindowConfig], live: LiveConfig) -> anyhow::Result<Windows> {
        let windows = configs
            .iter()
            .map(|c| {
                let spec = WindowSpec::compile(c)
                    .map_err(|e| anyhow::anyhow!("window `{}`: {e}", c.name))?;
                let op: Box<dyn WindowOperator> =
                    match spec.kind {
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
                Ok(Window {
                    clock: Clock::new(&spec.time),
                    history: History::new(c.history_ms, c.max_history),
                    op,
                    next_early: None,
                    core: Core {
                        spec,
                        stats: WindowStats::default(),
                        emitted: Vec::new(),
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
    pub fn line(&self, o: Output) -> Json {
        json!({"channel": self.channel(o.stream), "data": o.payload})
    }

    /// Run `events`, arriving at wall time `now` (ms), through every window.
    pub fn process(&mut self, events: &[Event], now: i64, out: &mut Vec<Output>) {
        let base = self.arrival;
        self.arrival += events.len() as u64;
        for (index, w) in self.windows.iter_mut().enumerate() {
            for (i, ev) in events.iter().enumerate() {
                w.step(ev, base + i as u64, now);
            }
            w.drain(index, out);
        }
        self.live.observe(events, now);
    }

    /// Wall time is now `now`: advance idle watermarks and publish early
    /// results that are due. Call periodically (the server: every 100 ms).
    pub fn tick(&mut self, now: i64, out: &mut Vec<Output>) {
        for (index, w) in self.windows.iter_mut().enumerate() {
            w.tick(now);
            w.drain(index, out);
        }
        self.live.tick(now);
    }

    /// The input ended: fire every open window.
    pub fn finish(&mut self, out: &mut Vec<Output>) {
        for (index, w) in self.windows.iter_mut().enumerate() {
            if w.clock.finish() {
                let wm = w.clock.watermark();
                w.op.on_watermark(&mut w.core.ctx(), wm);
            }
            w.op.on_close(&mut w.core.ctx());
            w.drain(index, out);
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
            "watermark": watermark_json(w.clock.watermark()),
            "groups": groups,
        }))
    }

    /// `GET /v1/windows/<name>/history`. `None` if there is no such window.
    pub fn history(&self, name: &str, q: &HistoryQuery) -> Option<Vec<Arc<Json>>> {
        let w = self.windows.iter().find(|w| w.core.spec.name == name)?;
        Some(w.history.query(q))
    }

    /// The live views.
    pub fn live(&self) -> &LiveViews {
        &self.live
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
            let wm = w.clock.watermark();
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
    fn step(&mut self, ev: &Event, arrival: u64, now: i64) {
        let matches = self.core.spec.filter.matches(ev);
        let ts = match self.clock.admit(ev.timestamp, now) {
            Admit::At(ts) => ts,
            Admit::Future => {
                // Not observed, so it cannot drag the watermark; reported
                // only if it was this window's event.
                if matches {
                    self.core.stats.events += 1;
                    self.core.stats.future_rejected += 1;
                    let cap = now.saturating_add(self.core.spec.time.future_skew_ms);
                    self.core.emitted.push(Emitted::Late(json!({
                        "window": self.core.spec.name,
                        "reason": "future",
                        "max_timestamp": cap,
                        "event": ev,
                    })));
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
            let wm = self.clock.watermark();
            self.op
                .on_event(&mut self.core.ctx(), ev, ts, key, arrival, wm);
        }
        if self.clock.observe(ts, now) {
            let wm = self.clock.watermark();
            self.op.on_watermark(&mut self.core.ctx(), wm);
        }
    }

    fn tick(&mut self, now: i64) {
        if self.clock.tick(now) {
            self.op
                .on_watermark(&mut self.core.ctx(), self.clock.watermark());
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

    /// Move what the operator emitted to `out`, recording final results and
    /// corrections in the history.
    fn drain(&mut self, index: usize, out: &mut Vec<Output>) {
        for e in self.core.emitted.drain(..) {
            match e {
                Emitted::Result {
                    kind,
                    start,
                    end,
                    payload,
                } => {
                    if kind != ResultKind::Early {
                        self.history.push(start, end, Arc::new(payload.clone()));
                    }
                    out.push(Output {
                        stream: Stream::Results(index),
                        payload,
                    });
                }
                Emitted::Late(payload) => out.push(Output {
                    stream: Stream::Late,
                    payload,
                }),
            }
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
            "watermark": watermark_json(self.clock.watermark()),
            "open": open,
            "groups": groups,
            "history_results": self.history.len(),
            "stats": self.core.stats,
        })
    }
}
