//! Alert plugins from the host's side: [`AlertPlugin`], through which the
//! engine hands an alert plugin the window results and pattern matches it
//! watches and gets back [`Evaluation`]s — one per alert instance (label
//! set): its value, whether the condition holds, a severity and
//! annotations.
//!
//! The plugin only judges; everything after that is the host's, as for a
//! rule declared in `eddy.toml`: the engine turns each evaluation into a
//! `crate::alert::Sample` (labels plus `severity`, value, active,
//! annotations) for the
//! rule's `crate::alert::RuleState`, which owns `for`, `keep_firing_for`,
//! dedup by fingerprint, resolve, no-data and the instance cap.
//!
//! An [`AlertPlugin`] runs every call in the sandbox a processor stage
//! gets (memory cap, deadline, log budget, host-backed `state` writes
//! committed only when the call succeeds), replaces its wasm instance after
//! a trap, quarantines the plugin after repeated failures, and rolls a new
//! version that fails on probation back to the last known good one — the
//! same supervision as [`super::pattern::PatternInstance`]. Its `state`
//! import reads and writes [`AlertContext::state`], a store the engine
//! keeps per alert (scope = the alert's name), so baselines survive traps,
//! swaps and restarts.
//!
//! ```no_run
//! # fn demo(registry: &std::sync::Arc<eddy::plugin::Registry>, results: &[eddy::window::WindowResult]) -> Result<(), eddy::plugin::PluginError> {
//! use eddy::plugin::alert::{AlertContext, AlertInput};
//! for (name, hash) in registry.alerts() {
//!     let mut context = AlertContext::new(registry, &name);
//!     context.config = r#"{"window":"signups_per_minute","aggregate":"signups"}"#.into();
//!     let mut alert = registry.alert_instance(&name, &hash, &context)?;
//!     if alert.watches().windows.iter().any(|w| w == "signups_per_minute") {
//!         for e in alert.evaluate(AlertInput::Windows(results), 0)? {
//!             println!("{:?} {} active={}", e.labels, e.value, e.active);
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::abi::Encoder;
use super::bindings::alert::exports::eddy::plugin::alerting as awit;
use super::engine::{Compiled, Instance, PluginError};
use super::meter::{CallMeter, MeterReport};
use super::registry::{Notice, NoticeKind, Registry, Slot};
use super::state_store::{StateLimits, StateStore};
use crate::event::Value;
use crate::pattern::{OutcomeKind, PatternResult};
use crate::window::groups::KeyPart;
use crate::window::operator::ResultKind;
use crate::window::result::WindowResult;

/// Most evaluations one `evaluate` call may return: ten times the default
/// cap on instances per rule (`crate::alert::lifecycle::DEFAULT_MAX_INSTANCES`),
/// so a plugin can report every group of a 10,000-group window several
/// times over, while a runaway loop cannot flood the lifecycle.
pub const MAX_EVALUATIONS_PER_CALL: usize = 100_000;

/// Most window results or pattern results handed to the plugin in one
/// `evaluate` call; a longer run is split. Each call runs under the
/// deadline (`runtime.deadline`, 100 ms by default), and the z-score
/// example spends several microseconds per result (its baseline read and
/// written through the host store, an annotation formatted), so 10,000
/// groups in one call would not fit: `benches/alert_plugins.rs` measures
/// it.
pub const MAX_RESULTS_PER_CALL: usize = 1_000;

/// What an alert plugin watches (`watches` in `wit/alert.wit`): results of
/// these windows and matches of these patterns, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watches {
    /// Window names.
    pub windows: Vec<String>,
    /// Pattern names.
    pub patterns: Vec<String>,
}

impl Watches {
    /// Whether the plugin watches window `name`.
    pub fn window(&self, name: &str) -> bool {
        self.windows.iter().any(|w| w == name)
    }

    /// Whether the plugin watches pattern `name`.
    pub fn pattern(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p == name)
    }
}

/// One evaluation: the state of one alert instance now (`evaluation` in
/// `wit/alert.wit`), checked: valid, unique label names and a finite value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The instance's labels.
    pub labels: BTreeMap<String, String>,
    /// The value the condition was judged on.
    pub value: f64,
    /// Whether the alert condition holds.
    pub active: bool,
    /// The `severity` label, if the plugin sets one.
    pub severity: Option<String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// What an alert plugin evaluates: window results or pattern results, of
/// any windows or patterns. [`AlertPlugin::evaluate`] hands the plugin only
/// those it watches, one call per run of results of the same window or
/// pattern.
#[derive(Debug, Clone, Copy)]
pub enum AlertInput<'a> {
    /// Window results (early, final and correction).
    Windows(&'a [WindowResult]),
    /// Pattern matches and timeouts.
    Matches(&'a [Arc<PatternResult>]),
}

/// What an alert plugin's instances need besides the version: their
/// configuration, their random seed and the store behind their `state`
/// import. The engine keeps one per configured alert and passes it to
/// every [`Registry::alert_instance`], so baselines carry over traps, swaps
/// and rollbacks.
#[derive(Clone)]
pub struct AlertContext {
    /// The alert's plugin configuration, as JSON (`{}` if none).
    pub config: String,
    /// Seed of the instances' random sources under a virtual clock (mixed
    /// with how many instances were made, as for stages).
    pub seed: u64,
    /// The `state` import's store. The engine uses the pipeline's store of
    /// scope = the alert's name, so it is snapshotted with the engine.
    pub state: Arc<StateStore>,
    /// Deadline of every call (`runtime.deadline` by default).
    pub deadline: Duration,
    /// Linear-memory cap of every instance (`runtime.memory_limit_bytes`).
    pub memory_limit: u64,
}

impl AlertContext {
    /// Defaults for alert `scope` (usually the alert's or the plugin's
    /// name): no configuration, seed 0, a new state store scoped to
    /// `scope`, the runtime's deadline and memory cap.
    pub fn new(registry: &Registry, scope: &str) -> Self {
        let config = registry.config();
        AlertContext {
            config: "{}".into(),
            seed: 0,
            state: Arc::new(StateStore::new(scope, StateLimits::from(config))),
            deadline: config.deadline,
            memory_limit: config.memory_limit_bytes,
        }
    }
}

/// One live alert plugin at one version, configured.
///
/// Calls that fail return the error after recording it: the slot's failure
/// counter and last error, a `failed` notice, and after
/// `runtime.quarantine_after` consecutive failures a `quarantined` notice
/// and a backoff (engine time, doubling up to
/// `runtime.quarantine_backoff_max`) during which calls fail at once with
/// [`PluginError::Quarantined`]. A trap discards the wasm instance; the next
/// call makes a new one. A version that fails within its first
/// `runtime.probation_batches` successful calls, while a last known good
/// version exists, is rolled back in the registry (a `rolled_back` notice);
/// the engine then asks for an instance of the good version.
///
/// A failed call makes no state writes and returns no evaluations: the
/// engine should make no alert transitions for that batch (the instances
/// keep their state, as Prometheus keeps them when a rule's query fails).
pub struct AlertPlugin {
    registry: Arc<Registry>,
    slot: Arc<Slot>,
    compiled: Arc<Compiled>,
    context: AlertContext,
    watches: Watches,
    instance: Option<Instance>,
    instances_made: u64,
    encoder: Encoder,
    probation_left: u32,
    consecutive_failures: u32,
    quarantined_until: Option<i64>,
    backoff_ms: i64,
    notices: Vec<Notice>,
    /// Calls, results and durations, for `/metrics`.
    meter: CallMeter,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether `name` is a valid Prometheus label name.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn pairs(
    what: &str,
    list: Vec<(String, String)>,
    i: usize,
) -> Result<BTreeMap<String, String>, PluginError> {
    let mut map = BTreeMap::new();
    for (k, v) in list {
        if !valid_label_name(&k) {
            return Err(PluginError::Returned(format!(
                "evaluation {i}: {what} name `{k}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"
            )));
        }
        if map.insert(k.clone(), v).is_some() {
            return Err(PluginError::Returned(format!(
                "evaluation {i}: {what} `{k}` appears twice"
            )));
        }
    }
    Ok(map)
}

impl TryFrom<(usize, awit::Evaluation)> for Evaluation {
    type Error = PluginError;

    fn try_from((i, e): (usize, awit::Evaluation)) -> Result<Self, PluginError> {
        if !e.value.is_finite() {
            return Err(PluginError::Returned(format!(
                "evaluation {i}: value {} is not a finite number",
                e.value
            )));
        }
        Ok(Evaluation {
            labels: pairs("label", e.labels, i)?,
            value: e.value,
            active: e.active,
            severity: e.severity,
            annotations: pairs("annotation", e.annotations, i)?,
        })
    }
}

fn value(v: &Value) -> awit::Value {
    match v {
        Value::Null => awit::Value::Null,
        Value::Bool(b) => awit::Value::Boolean(*b),
        Value::Int(i) => awit::Value::Integer(*i),
        Value::Float(f) => awit::Value::Float(*f),
        Value::Str(s) => awit::Value::Text(s.to_string()),
        Value::Json(j) => awit::Value::Json(j.clone()),
    }
}

fn key_part(k: &KeyPart) -> awit::Value {
    match k {
        KeyPart::Missing | KeyPart::Null => awit::Value::Null,
        KeyPart::Bool(b) => awit::Value::Boolean(*b),
        KeyPart::Int(i) => awit::Value::Integer(*i),
        KeyPart::Float(bits) => awit::Value::Float(f64::from_bits(*bits)),
        KeyPart::Str(s) => awit::Value::Text(s.to_string()),
        KeyPart::Json(j) => awit::Value::Json(j.to_string()),
        KeyPart::Overflow => awit::Value::Text(crate::window::groups::OVERFLOW.to_owned()),
    }
}

/// Results of one window as the WIT record: names once, values by
/// position.
fn window_results(results: &[WindowResult]) -> Option<awit::WindowResults> {
    let first = results.first()?;
    let schema = &first.schema;
    // The dimension names, in `group_by` order, as the group's published
    // form lists them (`Grouping` keeps its paths to itself).
    let group_by = match schema.grouping.to_json(&first.group) {
        serde_json::Value::Object(m) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    Some(awit::WindowResults {
        window: schema.window.clone(),
        group_by,
        aggregates: schema.outputs.clone(),
        results: results
            .iter()
            .map(|r| awit::WindowResult {
                kind: match r.kind {
                    ResultKind::Early => awit::ResultKind::Early,
                    ResultKind::Final => awit::ResultKind::Final,
                    ResultKind::Correction => awit::ResultKind::Correction,
                },
                start: r.start,
                end: r.end,
                group: r.group.iter().map(key_part).collect(),
                values: r.values.iter().map(value).collect(),
                revision: r.revision,
            })
            .collect(),
    })
}

/// Matches of one pattern as the WIT record: every match's events in one
/// columnar batch, each match's steps as ranges of it.
fn pattern_matches(encoder: &mut Encoder, matches: &[Arc<PatternResult>]) -> awit::PatternMatches {
    let mut first = 0u32;
    let mut out = Vec::with_capacity(matches.len());
    for m in matches {
        let mut steps = Vec::with_capacity(m.steps.len());
        for (name, events) in &m.steps {
            let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
            steps.push(awit::MatchStep {
                name: name.to_string(),
                first,
                count,
            });
            first = first.saturating_add(count);
        }
        out.push(awit::PatternMatch {
            kind: match m.kind {
                OutcomeKind::Match => awit::MatchKind::Match,
                OutcomeKind::Timeout => awit::MatchKind::Timeout,
            },
            key: m.key.to_string(),
            start: m.start,
            end: m.end,
            steps,
            payload: m.payload.as_ref().map(|p| p.to_string()),
        });
    }
    let events = encoder
        .encode_refs(
            matches
                .iter()
                .flat_map(|m| m.steps.iter().flat_map(|(_, ev)| ev.iter().map(|e| &**e))),
        )
        .clone();
    awit::PatternMatches {
        pattern: matches
            .first()
            .map(|m| m.pattern.to_string())
            .unwrap_or_default(),
        events,
        matches: out,
    }
}

/// Split `items` into runs of consecutive items with the same name.
fn runs<T>(items: &[T], name: impl Fn(&T) -> &str) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=items.len() {
        if i == items.len() || name(&items[i]) != name(&items[start]) {
            if start < i {
                out.push(&items[start..i]);
            }
            start = i;
        }
    }
    out
}

impl AlertPlugin {
    pub(crate) fn new(
        registry: Arc<Registry>,
        slot: Arc<Slot>,
        compiled: Arc<Compiled>,
        context: AlertContext,
    ) -> Result<Self, PluginError> {
        let view = slot.view();
        let on_probation = view.has_previous
            && !(view.confirmed
                && view
                    .current
                    .as_ref()
                    .is_some_and(|c| c.hash == compiled.hash));
        let config = registry.config();
        let mut me = AlertPlugin {
            probation_left: if on_probation {
                config.probation_batches
            } else {
                0
            },
            backoff_ms: ms(config.quarantine_backoff),
            slot,
            compiled,
            context,
            watches: Watches::default(),
            instance: None,
            instances_made: 0,
            encoder: Encoder::default(),
            consecutive_failures: 0,
            quarantined_until: None,
            notices: Vec::new(),
            meter: CallMeter::default(),
            registry,
        };
        // Configure now, so a configuration the plugin refuses is reported
        // when the alert is set up rather than at the first batch; and ask
        // what it watches, which may depend on that configuration.
        me.ensure_instance()?;
        Ok(me)
    }

    /// The version this plugin runs.
    pub fn compiled(&self) -> &Arc<Compiled> {
        &self.compiled
    }

    /// The alert plugin's name.
    pub fn name(&self) -> &str {
        &self.slot.shared.name
    }

    /// What the plugin watches, as it answered when configured.
    pub fn watches(&self) -> &Watches {
        &self.watches
    }

    /// The store behind the plugin's `state` import.
    pub fn state(&self) -> &Arc<StateStore> {
        &self.context.state
    }

    /// Whether calls are refused until engine time `now_ms` reaches the end
    /// of a quarantine backoff.
    pub fn quarantined(&self, now_ms: i64) -> bool {
        self.quarantined_until.is_some_and(|until| now_ms < until)
    }

    /// Lifecycle notices (failed, quarantined, recovered) since the last
    /// call, for the `plugins` channel; they are logged already.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// This instance's calls, results and durations, labelled.
    pub fn meter(&self) -> MeterReport {
        MeterReport {
            plugin: self.name().to_owned(),
            hash: self.compiled.hash.clone(),
            version: self.compiled.info.version.clone(),
            quarantined: self.quarantined_until.is_some(),
            consecutive_failures: self.consecutive_failures,
            meter: self.meter.clone(),
        }
    }

    fn ensure_instance(&mut self) -> Result<(), PluginError> {
        if self.instance.is_none() {
            let seed = self.context.seed ^ self.instances_made.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            self.instances_made += 1;
            let config = self.registry.config();
            let mut instance = self.registry.engine().instantiate_alert(
                &self.compiled,
                self.slot.shared.clone(),
                self.context.state.clone(),
                self.context.memory_limit,
                &self.context.config,
                config.compile_timeout,
                config.max_log_records_per_call,
                seed,
            )?;
            let w = instance.watches(self.context.deadline)?;
            self.watches = Watches {
                windows: w.windows,
                patterns: w.patterns,
            };
            self.instance = Some(instance);
        }
        Ok(())
    }

    fn notice(&mut self, kind: NoticeKind, detail: String) {
        let notice = Notice {
            plugin: self.name().to_owned(),
            kind,
            hash: Some(self.compiled.hash.clone()),
            version: Some(self.compiled.info.version.clone()),
            detail,
        };
        self.registry.log_notice(&notice);
        self.notices.push(notice);
    }

    /// Evaluate `input`: the results of windows (or patterns) the plugin
    /// watches, one plugin call per run of consecutive results of the same
    /// window (or pattern), split into calls of at most
    /// [`MAX_RESULTS_PER_CALL`]; results of anything it does not watch are
    /// skipped. `now_ms` is engine time (what quarantine backoff is
    /// measured in). Returns every call's evaluations in order; the first
    /// failing call fails the whole input, and no call's state writes are
    /// kept past a failure of the call that made them.
    pub fn evaluate(
        &mut self,
        input: AlertInput<'_>,
        now_ms: i64,
    ) -> Result<Vec<Evaluation>, PluginError> {
        let mut out = Vec::new();
        match input {
            AlertInput::Windows(results) => {
                for run in runs(results, |r| r.window()) {
                    if !self.watches.window(run[0].window()) {
                        continue;
                    }
                    for chunk in run.chunks(MAX_RESULTS_PER_CALL) {
                        if let Some(wit) = window_results(chunk) {
                            self.meter.items_in += chunk.len() as u64;
                            out.extend(self.call(now_ms, &awit::Input::Windows(wit))?);
                        }
                    }
                }
            }
            AlertInput::Matches(matches) => {
                for run in runs(matches, |m| &*m.pattern) {
                    if !self.watches.pattern(&run[0].pattern) {
                        continue;
                    }
                    for chunk in run.chunks(MAX_RESULTS_PER_CALL) {
                        let wit = pattern_matches(&mut self.encoder, chunk);
                        self.meter.items_in += chunk.len() as u64;
                        out.extend(self.call(now_ms, &awit::Input::Matches(wit))?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// One `evaluate` call, supervised: refused while quarantined, state
    /// committed only on success, the instance dropped after a trap.
    fn call(&mut self, now_ms: i64, input: &awit::Input) -> Result<Vec<Evaluation>, PluginError> {
        if let Some(until) = self.quarantined_until
            && now_ms < until
        {
            return Err(PluginError::Quarantined { until_ms: until });
        }
        let deadline = self.context.deadline;
        let log_budget = self.registry.config().max_log_records_per_call;
        // Timing is for `/metrics` only; it changes nothing the call does.
        let started = Instant::now();
        let result = self.ensure_instance().and_then(|()| {
            let Some(instance) = self.instance.as_mut() else {
                return Err(PluginError::Returned("no instance".into()));
            };
            let r = instance
                .evaluate(input, deadline, log_budget)
                .and_then(|evaluations| {
                    if evaluations.len() > MAX_EVALUATIONS_PER_CALL {
                        return Err(PluginError::Returned(format!(
                            "{} evaluations in one call; at most {MAX_EVALUATIONS_PER_CALL} are allowed",
                            evaluations.len()
                        )));
                    }
                    evaluations
                        .into_iter()
                        .enumerate()
                        .map(Evaluation::try_from)
                        .collect::<Result<Vec<_>, _>>()
                });
            match &r {
                Ok(_) => instance.commit_state(),
                // Never reuse a Store after a trap; its pending writes go
                // with it.
                Err(e) if e.poisons_instance() => self.instance = None,
                Err(_) => instance.discard_state(),
            }
            r
        });
        self.meter.calls += 1;
        self.meter
            .latency
            .record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        match &result {
            Ok(evaluations) => {
                self.meter.items_out += evaluations.len() as u64;
                self.succeeded();
            }
            Err(e) => self.failed(now_ms, e),
        }
        result
    }

    fn succeeded(&mut self) {
        if self.quarantined_until.take().is_some() {
            self.notice(NoticeKind::Recovered, "the alert calls it again".to_owned());
        }
        self.consecutive_failures = 0;
        self.backoff_ms = ms(self.registry.config().quarantine_backoff);
        if self.probation_left > 0 {
            self.probation_left -= 1;
            if self.probation_left == 0 {
                self.slot.confirm(&self.compiled.hash);
            }
        }
    }

    fn failed(&mut self, now_ms: i64, err: &PluginError) {
        self.meter.failed_calls += 1;
        self.consecutive_failures += 1;
        self.slot.counters.failures.fetch_add(1, Ordering::Relaxed);
        self.slot.set_last_error(err.to_string());
        self.notice(NoticeKind::Failed, format!("alert evaluate: {err}"));
        if self.probation_left > 0 {
            let reason = format!("alert evaluate: {err}");
            if self.registry.rollback(self.name(), &self.compiled, &reason) {
                self.meter.rollbacks += 1;
                self.probation_left = 0;
                return;
            }
        }
        let cfg = self.registry.config();
        if self.consecutive_failures >= cfg.quarantine_after {
            let until = now_ms.saturating_add(self.backoff_ms);
            self.quarantined_until = Some(until);
            self.meter.quarantines += 1;
            self.slot
                .counters
                .quarantines
                .fetch_add(1, Ordering::Relaxed);
            let detail = format!(
                "alert: {} consecutive failures; retrying in {} ms",
                self.consecutive_failures, self.backoff_ms
            );
            self.backoff_ms = self
                .backoff_ms
                .saturating_mul(2)
                .min(ms(cfg.quarantine_backoff_max));
            self.notice(NoticeKind::Quarantined, detail);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn label_names_follow_prometheus() {
        for good in ["service", "_x", "a1_B"] {
            assert!(valid_label_name(good), "{good}");
        }
        for bad in ["", "1a", "a-b", "a.b", "é"] {
            assert!(!valid_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn evaluations_with_bad_labels_or_values_are_refused_by_index() {
        let e = |labels: Vec<(&str, &str)>, value: f64| awit::Evaluation {
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            value,
            active: true,
            severity: None,
            annotations: Vec::new(),
        };
        let ok = Evaluation::try_from((0, e(vec![("service", "a")], 1.5))).unwrap();
        assert_eq!(ok.labels["service"], "a");
        for (bad, needle) in [
            (e(vec![("a-b", "x")], 1.0), "`a-b`"),
            (e(vec![("a", "x"), ("a", "y")], 1.0), "twice"),
            (e(vec![], f64::NAN), "finite"),
        ] {
            let err = Evaluation::try_from((3, bad)).unwrap_err().to_string();
            assert!(
                err.contains("evaluation 3") && err.contains(needle),
                "{err}"
            );
        }
    }

    #[test]
    fn runs_split_by_name_in_order() {
        let items = ["a", "a", "b", "a"];
        let runs = runs(&items, |s| s);
        assert_eq!(runs, [&["a", "a"][..], &["b"][..], &["a"][..]]);
        assert!(super::runs::<&str>(&[], |s| s).is_empty());
    }
}
