//! Alert plugins: alert rules whose condition needs code.
//!
//! Implement [`AlertPlugin`] — a constructor from configuration, what the
//! plugin [`watches`](AlertPlugin::watches), and an evaluation of window
//! results ([`AlertPlugin::on_windows`]) and/or pattern matches
//! ([`AlertPlugin::on_matches`]) — and export it with
//! [`alert!`](crate::alert!). Each call returns [`Evaluation`]s, one per
//! alert instance (label set): the value, whether the condition holds, and
//! optionally a severity and annotations. The host owns the rest, as for a
//! rule declared in `eddy.toml`: `for`, `keep_firing_for`, dedup, resolve,
//! no-data, delivery to Alertmanager and webhooks.
//!
//! Keep anything that must outlive a batch — a baseline, a trailing mean —
//! in [`crate::state`]: instances are thrown away after a trap and replaced
//! on hot swap; the host's store is not.
//!
//! ```
//! use eddy_plugin_sdk::alert::{AlertPlugin, Evaluation, Watches, Windows};
//! use eddy_plugin_sdk::Config;
//!
//! /// Fires when a group's error ratio passes `max`.
//! struct ErrorRatio {
//!     max: f64,
//! }
//!
//! impl AlertPlugin for ErrorRatio {
//!     fn new(config: Config) -> Result<Self, String> {
//!         Ok(ErrorRatio { max: config.get("max").and_then(|v| v.as_f64()).unwrap_or(0.05) })
//!     }
//!
//!     fn watches(&self) -> Watches {
//!         Watches::window("errors_per_service")
//!     }
//!
//!     fn on_windows(&mut self, windows: &Windows) -> Result<Vec<Evaluation>, String> {
//!         Ok(windows
//!             .results()
//!             .filter_map(|r| {
//!                 let ratio = r.f64("error_ratio")?;
//!                 Some(Evaluation::new(ratio, ratio > self.max).labels(r.group_labels()))
//!             })
//!             .collect())
//!     }
//! }
//!
//! eddy_plugin_sdk::alert!(ErrorRatio);
//!
//! # use eddy_plugin_sdk::alert::{ResultKind, WindowsBuilder};
//! # use eddy_plugin_sdk::Value;
//! let windows = WindowsBuilder::new("errors_per_service", &["properties.service"], &["error_ratio"])
//!     .result(ResultKind::Final, 0, 60_000, &[Value::Str("checkout")], &[Value::Float(0.2)])
//!     .build();
//! let mut plugin = ErrorRatio { max: 0.05 };
//! let out = plugin.on_windows(&windows).unwrap();
//! assert!(out[0].active);
//! assert_eq!(out[0].labels, [("service".to_owned(), "checkout".to_owned())]);
//! ```

use crate::bindings::alert::eddy::plugin::types::Batch as AlertBatch;
use crate::bindings::alert::exports::eddy::plugin::alerting as wit;
use crate::event::{self, Event, NewEvent};
use crate::{Config, Value};

/// What an alert plugin watches: results of these windows and matches of
/// these patterns, by their names in `eddy.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watches {
    /// Window names.
    pub windows: Vec<String>,
    /// Pattern names.
    pub patterns: Vec<String>,
}

impl Watches {
    /// Results of window `name`.
    pub fn window(name: &str) -> Watches {
        Watches::default().and_window(name)
    }

    /// Matches of pattern `name`.
    pub fn pattern(name: &str) -> Watches {
        Watches::default().and_pattern(name)
    }

    /// Also results of window `name`.
    pub fn and_window(mut self, name: &str) -> Watches {
        self.windows.push(name.to_owned());
        self
    }

    /// Also matches of pattern `name`.
    pub fn and_pattern(mut self, name: &str) -> Watches {
        self.patterns.push(name.to_owned());
        self
    }
}

/// One evaluation: the state of one alert instance now.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The instance's labels (valid Prometheus label names, unique).
    pub labels: Vec<(String, String)>,
    /// The value the condition was judged on (finite).
    pub value: f64,
    /// Whether the alert condition holds.
    pub active: bool,
    /// The `severity` label, if set.
    pub severity: Option<String>,
    /// Annotations (`summary`, `description`, ...).
    pub annotations: Vec<(String, String)>,
}

impl Evaluation {
    /// An evaluation with no labels: `value`, and whether the condition
    /// holds.
    pub fn new(value: f64, active: bool) -> Evaluation {
        Evaluation {
            labels: Vec::new(),
            value,
            active,
            severity: None,
            annotations: Vec::new(),
        }
    }

    /// Add label `name` = `value`.
    pub fn label(mut self, name: &str, value: impl Into<String>) -> Evaluation {
        self.labels.push((name.to_owned(), value.into()));
        self
    }

    /// Add several labels (e.g. [`WindowResult::group_labels`]).
    pub fn labels(mut self, labels: impl IntoIterator<Item = (String, String)>) -> Evaluation {
        self.labels.extend(labels);
        self
    }

    /// Set the `severity` label.
    pub fn severity(mut self, severity: &str) -> Evaluation {
        self.severity = Some(severity.to_owned());
        self
    }

    /// Add annotation `name` = `text`.
    pub fn annotation(mut self, name: &str, text: impl Into<String>) -> Evaluation {
        self.annotations.push((name.to_owned(), text.into()));
        self
    }
}

/// Which result of a window this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKind {
    /// A partial result of a window still open.
    Early,
    /// The result when the watermark passed the window's end.
    Final,
    /// A new result for a window already final (a late event).
    Correction,
}

/// The label name a window's `group_by` path becomes: its last segment
/// (`properties.service` → `service`), with characters a Prometheus label
/// name cannot hold replaced by `_`.
pub fn label_name(path: &str) -> String {
    let last = path.rsplit('.').next().unwrap_or(path);
    let mut name: String = last
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

fn value(v: &wit::Value) -> Value<'_> {
    match v {
        wit::Value::Null => Value::Null,
        wit::Value::Boolean(b) => Value::Bool(*b),
        wit::Value::Integer(i) => Value::Int(*i),
        wit::Value::Float(f) => Value::Float(*f),
        wit::Value::Text(s) => Value::Str(s),
        wit::Value::Json(s) => Value::Json(s),
    }
}

fn to_wit(v: &Value<'_>) -> wit::Value {
    match *v {
        Value::Null => wit::Value::Null,
        Value::Bool(b) => wit::Value::Boolean(b),
        Value::Int(i) => wit::Value::Integer(i),
        Value::Float(f) => wit::Value::Float(f),
        Value::Str(s) => wit::Value::Text(s.to_owned()),
        Value::Json(s) => wit::Value::Json(s.to_owned()),
    }
}

/// A value as label text: strings as they are, numbers and booleans as
/// JSON writes them, null as the empty string.
pub fn label_value(v: &Value<'_>) -> String {
    match *v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => {
            serde_json::Number::from_f64(f).map_or_else(String::new, |n| n.to_string())
        }
        Value::Str(s) | Value::Json(s) => s.to_owned(),
    }
}

/// A batch of results of one window, as [`AlertPlugin::on_windows`] sees
/// it.
pub struct Windows {
    raw: wit::WindowResults,
}

impl Windows {
    /// The window's name.
    pub fn name(&self) -> &str {
        &self.raw.window
    }

    /// The window's `group_by` paths.
    pub fn group_by(&self) -> &[String] {
        &self.raw.group_by
    }

    /// The aggregates' output names.
    pub fn aggregates(&self) -> &[String] {
        &self.raw.aggregates
    }

    /// How many results the batch holds.
    pub fn len(&self) -> usize {
        self.raw.results.len()
    }

    /// Whether the batch holds no result.
    pub fn is_empty(&self) -> bool {
        self.raw.results.is_empty()
    }

    /// The results, in the order the window emitted them.
    pub fn results(&self) -> impl Iterator<Item = WindowResult<'_>> {
        self.raw.results.iter().map(move |r| WindowResult {
            batch: &self.raw,
            raw: r,
        })
    }

    /// Position of aggregate `name`, to read many results by index with
    /// [`WindowResult::value_at`].
    pub fn aggregate_index(&self, name: &str) -> Option<usize> {
        self.raw.aggregates.iter().position(|a| a == name)
    }
}

/// One result of one group.
#[derive(Clone, Copy)]
pub struct WindowResult<'a> {
    batch: &'a wit::WindowResults,
    raw: &'a wit::WindowResult,
}

impl<'a> WindowResult<'a> {
    /// Early, final or correction.
    pub fn kind(&self) -> ResultKind {
        match self.raw.kind {
            wit::ResultKind::Early => ResultKind::Early,
            wit::ResultKind::Final => ResultKind::Final,
            wit::ResultKind::Correction => ResultKind::Correction,
        }
    }

    /// Window start (ms since the Unix epoch, inclusive).
    pub fn start(&self) -> i64 {
        self.raw.start
    }

    /// Window end (ms since the Unix epoch, exclusive).
    pub fn end(&self) -> i64 {
        self.raw.end
    }

    /// Corrections published for this group before this one.
    pub fn revision(&self) -> u32 {
        self.raw.revision
    }

    /// Aggregate `name`'s value.
    pub fn value(&self, name: &str) -> Option<Value<'a>> {
        let i = self.batch.aggregates.iter().position(|a| a == name)?;
        self.value_at(i)
    }

    /// The value of the aggregate at position `i` (see
    /// [`Windows::aggregate_index`]).
    pub fn value_at(&self, i: usize) -> Option<Value<'a>> {
        self.raw.values.get(i).map(value)
    }

    /// Aggregate `name` as a number, if it is one.
    pub fn f64(&self, name: &str) -> Option<f64> {
        self.value(name)?.as_f64()
    }

    /// The group's value of dimension `path` (a `group_by` path such as
    /// `properties.service`).
    pub fn group(&self, path: &str) -> Option<Value<'a>> {
        let i = self.batch.group_by.iter().position(|p| p == path)?;
        self.raw.group.get(i).map(value)
    }

    /// The group as labels: each dimension's [`label_name`] and
    /// [`label_value`], in `group_by` order.
    pub fn group_labels(&self) -> Vec<(String, String)> {
        self.batch
            .group_by
            .iter()
            .zip(&self.raw.group)
            .map(|(p, v)| (label_name(p), label_value(&value(v))))
            .collect()
    }

    /// A key naming this group, for the state store: the group's values
    /// joined by `\u{1f}` (empty when the window is not grouped).
    pub fn group_key(&self) -> String {
        let mut key = String::new();
        for (i, v) in self.raw.group.iter().enumerate() {
            if i > 0 {
                key.push('\u{1f}');
            }
            key.push_str(&label_value(&value(v)));
        }
        key
    }
}

/// Builds a [`Windows`] batch natively, for a plugin's unit tests and
/// benchmarks (the host builds them inside eddy).
pub struct WindowsBuilder {
    raw: wit::WindowResults,
}

impl WindowsBuilder {
    /// A batch of window `name`, grouped by `group_by`, with `aggregates`.
    pub fn new(name: &str, group_by: &[&str], aggregates: &[&str]) -> WindowsBuilder {
        WindowsBuilder {
            raw: wit::WindowResults {
                window: name.to_owned(),
                group_by: group_by.iter().map(|s| (*s).to_owned()).collect(),
                aggregates: aggregates.iter().map(|s| (*s).to_owned()).collect(),
                results: Vec::new(),
            },
        }
    }

    /// Add a result: its kind, `[start, end)`, group values (one per
    /// `group_by` path) and aggregate values (one per aggregate).
    pub fn result(
        mut self,
        kind: ResultKind,
        start: i64,
        end: i64,
        group: &[Value<'_>],
        values: &[Value<'_>],
    ) -> WindowsBuilder {
        self.raw.results.push(wit::WindowResult {
            kind: match kind {
                ResultKind::Early => wit::ResultKind::Early,
                ResultKind::Final => wit::ResultKind::Final,
                ResultKind::Correction => wit::ResultKind::Correction,
            },
            start,
            end,
            group: group.iter().map(to_wit).collect(),
            values: values.iter().map(to_wit).collect(),
            revision: 0,
        });
        self
    }

    /// The batch.
    pub fn build(self) -> Windows {
        Windows { raw: self.raw }
    }
}

/// Whether a pattern result is a match or a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// A completed match.
    Match,
    /// A partial match that ran out of time.
    Timeout,
}

/// A batch of results of one pattern, as [`AlertPlugin::on_matches`] sees
/// it.
pub struct Matches {
    pattern: String,
    input: event::Input,
    matches: Vec<wit::PatternMatch>,
}

impl Matches {
    /// The pattern's name.
    pub fn name(&self) -> &str {
        &self.pattern
    }

    /// How many results the batch holds.
    pub fn len(&self) -> usize {
        self.matches.len()
    }

    /// Whether the batch holds no result.
    pub fn is_empty(&self) -> bool {
        self.matches.is_empty()
    }

    /// The matches and timeouts, in the order the pattern emitted them.
    pub fn matches(&self) -> impl Iterator<Item = PatternMatch<'_>> {
        self.matches.iter().map(move |m| PatternMatch {
            input: &self.input,
            raw: m,
        })
    }
}

/// One match or timeout.
#[derive(Clone, Copy)]
pub struct PatternMatch<'a> {
    input: &'a event::Input,
    raw: &'a wit::PatternMatch,
}

impl<'a> PatternMatch<'a> {
    /// Match or timeout.
    pub fn kind(&self) -> MatchKind {
        match self.raw.kind {
            wit::MatchKind::Match => MatchKind::Match,
            wit::MatchKind::Timeout => MatchKind::Timeout,
        }
    }

    /// The key the match was found under.
    pub fn key(&self) -> &'a str {
        &self.raw.key
    }

    /// Time of the first event (ms since the Unix epoch).
    pub fn start(&self) -> i64 {
        self.raw.start
    }

    /// Time of the last event (ms since the Unix epoch).
    pub fn end(&self) -> i64 {
        self.raw.end
    }

    /// The JSON object a pattern plugin's match hook attached, if any.
    pub fn payload(&self) -> Option<&'a str> {
        self.raw.payload.as_deref()
    }

    /// The names of the steps that took events, in pattern order.
    pub fn steps(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.raw.steps.iter().map(|s| s.name.as_str())
    }

    /// How many events step `step` took.
    pub fn count(&self, step: &str) -> usize {
        self.raw
            .steps
            .iter()
            .find(|s| s.name == step)
            .map_or(0, |s| s.count as usize)
    }

    /// Show `f` each event step `step` took, in order.
    pub fn for_each(&self, step: &str, f: impl FnMut(&mut Event<'_>)) {
        if let Some(s) = self.raw.steps.iter().find(|s| s.name == step) {
            let first = s.first as usize;
            event::each_event(self.input, first..first + s.count as usize, f);
        }
    }
}

/// Builds a [`Matches`] batch natively, for a plugin's unit tests.
pub struct MatchesBuilder {
    pattern: String,
    events: Vec<NewEvent>,
    matches: Vec<wit::PatternMatch>,
}

impl MatchesBuilder {
    /// A batch of pattern `name`.
    pub fn new(name: &str) -> MatchesBuilder {
        MatchesBuilder {
            pattern: name.to_owned(),
            events: Vec::new(),
            matches: Vec::new(),
        }
    }

    /// Add a match or timeout under `key`, with its events step by step.
    pub fn result(
        mut self,
        kind: MatchKind,
        key: &str,
        steps: Vec<(&str, Vec<NewEvent>)>,
    ) -> MatchesBuilder {
        let mut out = Vec::new();
        let (mut start, mut end) = (i64::MAX, i64::MIN);
        for (name, events) in steps {
            let first = u32::try_from(self.events.len()).unwrap_or(u32::MAX);
            let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
            for e in &events {
                start = start.min(e.timestamp);
                end = end.max(e.timestamp);
            }
            self.events.extend(events);
            out.push(wit::MatchStep {
                name: name.to_owned(),
                first,
                count,
            });
        }
        self.matches.push(wit::PatternMatch {
            kind: match kind {
                MatchKind::Match => wit::MatchKind::Match,
                MatchKind::Timeout => wit::MatchKind::Timeout,
            },
            key: key.to_owned(),
            start: start.min(end),
            end: end.max(start),
            steps: out,
            payload: None,
        });
        self
    }

    /// The batch.
    pub fn build(self) -> Result<Matches, String> {
        Ok(Matches {
            pattern: self.pattern,
            input: event::Input::new(event::encode(&self.events))?,
            matches: self.matches,
        })
    }
}

/// An alert plugin: what it watches, and evaluations of their results.
pub trait AlertPlugin: Sized + 'static {
    /// JSON Schema of the configuration object.
    const CONFIG_SCHEMA: &'static str = r#"{"type":"object"}"#;

    /// Build an instance from the alert's `config` table. Return an error
    /// naming the offending key if the configuration is unusable.
    fn new(config: Config) -> Result<Self, String>;

    /// What the plugin watches (may depend on the configuration).
    fn watches(&self) -> Watches;

    /// Evaluate a batch of results of one watched window.
    fn on_windows(&mut self, windows: &Windows) -> Result<Vec<Evaluation>, String> {
        let _ = windows;
        Ok(Vec::new())
    }

    /// Evaluate a batch of matches of one watched pattern.
    fn on_matches(&mut self, matches: &Matches) -> Result<Vec<Evaluation>, String> {
        let _ = matches;
        Ok(Vec::new())
    }
}

/// Export an [`AlertPlugin`] as this crate's plugin (the `alert` world).
#[macro_export]
macro_rules! alert {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct EddyExport;
            impl $crate::bindings::alert::exports::eddy::plugin::plugin::Guest for EddyExport {
                fn describe() -> $crate::bindings::alert::exports::eddy::plugin::plugin::Info {
                    $crate::bindings::alert::exports::eddy::plugin::plugin::Info {
                        name: env!("CARGO_PKG_NAME").to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        description: env!("CARGO_PKG_DESCRIPTION").to_owned(),
                        config_schema: <$ty as $crate::alert::AlertPlugin>::CONFIG_SCHEMA
                            .to_owned(),
                    }
                }
                fn configure(config: String) -> Result<(), String> {
                    $crate::alert::__private::configure::<$ty>(&config)
                }
            }
            impl $crate::bindings::alert::exports::eddy::plugin::alerting::Guest for EddyExport {
                fn watches() -> $crate::bindings::alert::exports::eddy::plugin::alerting::Watched {
                    $crate::alert::__private::watches::<$ty>()
                }
                fn evaluate(
                    input: $crate::bindings::alert::exports::eddy::plugin::alerting::Input,
                ) -> Result<
                    Vec<$crate::bindings::alert::exports::eddy::plugin::alerting::Evaluation>,
                    String,
                > {
                    $crate::alert::__private::evaluate::<$ty>(input)
                }
            }
            $crate::bindings::alert::__export_alert_world!(EddyExport with_types_in $crate::bindings::alert);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    //! Used by [`alert!`](crate::alert!); not part of the API.
    use super::*;
    use crate::bindings::eddy::plugin::types::Batch;
    use std::any::Any;
    use std::cell::RefCell;

    thread_local! {
        static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    /// Run `f` on the configured instance, building one from an empty
    /// configuration first if the host has not configured it yet.
    fn with<P: AlertPlugin, T>(f: impl FnOnce(&mut P) -> T) -> Result<T, String> {
        INSTANCE.with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.as_ref().is_none_or(|b| !b.is::<P>()) {
                *slot = Some(Box::new(P::new(Config::default())?));
            }
            match slot.as_mut().and_then(|b| b.downcast_mut::<P>()) {
                Some(p) => Ok(f(p)),
                None => Err("no instance".to_owned()),
            }
        })
    }

    pub fn configure<P: AlertPlugin>(config: &str) -> Result<(), String> {
        crate::__private::install_panic_hook();
        let plugin = P::new(Config::from_json(config)?)?;
        INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(plugin)));
        Ok(())
    }

    pub fn watches<P: AlertPlugin>() -> wit::Watched {
        match with::<P, _>(|p| p.watches()) {
            Ok(w) => wit::Watched {
                windows: w.windows,
                patterns: w.patterns,
            },
            Err(e) => {
                crate::log::log(
                    crate::log::Level::Error,
                    &format!("cannot build the alert plugin: {e}"),
                    &[],
                );
                wit::Watched {
                    windows: Vec::new(),
                    patterns: Vec::new(),
                }
            }
        }
    }

    /// The same WIT record, generated once per world (see
    /// `eddy-plugin-sdk-alert-bindings`): moved column by column.
    fn batch(b: AlertBatch) -> Batch {
        Batch {
            text: b.text,
            ids: b.ids,
            names: b.names,
            timestamps: b.timestamps,
            distinct_ids: b.distinct_ids,
            session_ids: b.session_ids,
            properties: b.properties,
            keys: b.keys,
            kinds: b.kinds,
            values: b.values,
        }
    }

    fn to_wit(e: Evaluation) -> wit::Evaluation {
        wit::Evaluation {
            labels: e.labels,
            value: e.value,
            active: e.active,
            severity: e.severity,
            annotations: e.annotations,
        }
    }

    pub fn evaluate<P: AlertPlugin>(input: wit::Input) -> Result<Vec<wit::Evaluation>, String> {
        let evaluations = match input {
            wit::Input::Windows(raw) => with::<P, _>(|p| p.on_windows(&Windows { raw }))??,
            wit::Input::Matches(m) => {
                let matches = Matches {
                    pattern: m.pattern,
                    input: event::Input::new(batch(m.events))?,
                    matches: m.matches,
                };
                with::<P, _>(|p| p.on_matches(&matches))??
            }
        };
        Ok(evaluations.into_iter().map(to_wit).collect())
    }
}
