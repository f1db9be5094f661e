//! The alert operator: alert rules over the window results and pattern
//! matches of the same input, run after the windows and patterns.
//!
//! Each rule is a [`RuleSpec`] with its lifecycle state ([`RuleState`]) and
//! an [`Evaluator`]: a declared `[[alerts]]` entry or an alert plugin
//! (see [`crate::alert::rules`] for the seam). During an input the operator
//! collects, per rule, the samples of every result the rule watches, grouped
//! by **evaluation time**:
//!
//! - a window result is evaluated at its window's **end** (a session's end
//!   is its last event plus the gap) — the event time the result describes;
//!   early, final and correction results of one window share it;
//! - a pattern match at its **end** (its last event's timestamp).
//!
//! Once the input's results are in, each rule is evaluated once per distinct
//! time, in the order they appeared, never going back in time (a correction
//! for an older window is evaluated at the rule's latest time). Then, so that
//! alerts of a source that went quiet still move on (no-data handling, the
//! resolution of a pattern alert), a rule that holds instances and has not
//! been evaluated for its interval (its window's slide or size, a session's
//! gap, one minute for pattern rules) is evaluated without samples at its
//! source's watermark (event time now minus its out-of-orderness bound).
//!
//! Everything here is a function of the engine's inputs, so a replay, a
//! restore and `eddy pipe --clock virtual` give the same transitions.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::alert::rules::{Evaluator, Watch, Watched};
use crate::alert::{AlertEvent, AlertState, DeclaredRule, RuleSpec, RuleState, Sample};
use crate::config::Config;
use crate::pattern::{PatternOutput, PatternResult};
use crate::window::{self, WindowKind};

/// How often a pattern rule is evaluated without matches (so its alerts
/// resolve once no-data applies): Prometheus's default evaluation interval.
pub const PATTERN_RULE_INTERVAL_MS: i64 = 60_000;

/// Transitions kept for `GET /v1/alerts/history`: at a few hundred bytes
/// each, 10,000 take a few MB.
pub const HISTORY_CAPACITY: usize = 10_000;

/// One rule and its state.
struct Rule {
    spec: RuleSpec,
    evaluator: Evaluator,
    state: RuleState,
    /// Latest evaluation time (event time, ms).
    last_at: i64,
    /// Evaluation interval without results.
    interval_ms: i64,
    /// Out-of-orderness bound of the watched source.
    bound_ms: i64,
    /// Inputs of this input's evaluations, by time, in order of appearance.
    pending: Vec<(i64, Pending)>,
}

enum Pending {
    Samples(Vec<Sample>),
    Matches(Vec<Arc<PatternResult>>),
    Watched(Vec<Watched>),
}

impl Pending {
    fn empty_for(evaluator: &Evaluator, watch_is_pattern: bool) -> Pending {
        match evaluator {
            Evaluator::Plugin(_) => Pending::Watched(Vec::new()),
            Evaluator::Declared(_) if watch_is_pattern => Pending::Matches(Vec::new()),
            Evaluator::Declared(_) => Pending::Samples(Vec::new()),
        }
    }
}

/// A rule's lifecycle in a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct RuleSnapshot {
    name: String,
    /// The rule's labels when saved: a rule restored with other labels
    /// starts afresh (its instances' identities changed).
    labels: BTreeMap<String, String>,
    last_at: i64,
    state: RuleState,
}

/// The alert operator's state in a snapshot.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AlertsState {
    rules: Vec<RuleSnapshot>,
}

/// Counters of one rule, for REST and `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    /// The rule's name.
    pub name: String,
    /// What it watches: `windows/<name>` or `patterns/<name>` (plugins: a
    /// list).
    pub watches: Vec<String>,
    /// `declared` or `plugin`.
    pub source: &'static str,
    /// Instances held (pending, firing, resolved kept for re-sending).
    pub instances: usize,
    /// New label sets refused at `max_instances`.
    pub refused: u64,
    /// Transitions reported since start (or restore).
    pub transitions: u64,
}

/// Every alert rule. See the module documentation.
#[derive(Default)]
pub struct Alerts {
    rules: Vec<Rule>,
    /// Recent transitions, oldest first (not part of snapshots).
    history: VecDeque<AlertEvent>,
    /// Transitions per rule and state, since start.
    transitions: BTreeMap<(String, &'static str), u64>,
}

fn watch_of(e: &Evaluator) -> Option<&Watch> {
    match e {
        Evaluator::Declared(d) => Some(&d.watch),
        Evaluator::Plugin(_) => None,
    }
}

/// How often a rule watching `watch` is evaluated without results, and
/// the out-of-orderness bound of its source.
pub(super) fn timing(config: &Config, watch: &Watch) -> (i64, i64) {
    match watch {
        Watch::Window(name) => config.windows.iter().find(|w| &w.name == name).map_or(
            (PATTERN_RULE_INTERVAL_MS, config.time.out_of_orderness_ms),
            |w| {
                let interval = match w.kind {
                    WindowKind::Tumbling { size_ms } => size_ms,
                    WindowKind::Sliding { slide_ms, .. } => slide_ms,
                    WindowKind::Session { gap_ms, .. } => gap_ms,
                };
                (interval, w.time.out_of_orderness_ms)
            },
        ),
        Watch::Pattern(name) => (
            PATTERN_RULE_INTERVAL_MS,
            config
                .patterns
                .iter()
                .find(|p| &p.name == name)
                .map_or(config.time.out_of_orderness_ms, |p| p.out_of_orderness_ms),
        ),
    }
}

impl Alerts {
    /// The declared rules of `config`.
    pub fn new(config: &Config) -> Alerts {
        let mut alerts = Alerts::default();
        for d in &config.alerts {
            alerts.push_declared(config, d.clone());
        }
        alerts
    }

    fn push_declared(&mut self, config: &Config, d: DeclaredRule) {
        let (interval_ms, bound_ms) = timing(config, &d.watch);
        self.rules.push(Rule {
            spec: d.spec.clone(),
            evaluator: Evaluator::Declared(d),
            state: RuleState::new(),
            last_at: i64::MIN,
            interval_ms,
            bound_ms,
            pending: Vec::new(),
        });
    }

    /// Add a rule whose samples come from an alert plugin (the seam for
    /// `crate::plugin::alert`); a rule of that name is replaced, keeping its
    /// instances when its labels are unchanged (a hot swap keeps firing
    /// alerts firing). `interval_ms` is how often it is evaluated without
    /// results; `bound_ms` its sources' out-of-orderness bound.
    pub fn set_plugin_rule(
        &mut self,
        spec: RuleSpec,
        evaluator: Box<dyn crate::alert::PluginEvaluator>,
        interval_ms: i64,
        bound_ms: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        let mut rule = Rule {
            spec,
            evaluator: Evaluator::Plugin(evaluator),
            state: RuleState::new(),
            last_at: i64::MIN,
            interval_ms,
            bound_ms,
            pending: Vec::new(),
        };
        match self
            .rules
            .iter()
            .position(|r| r.spec.name == rule.spec.name)
        {
            Some(i) => {
                let old = &mut self.rules[i];
                if old.spec.labels == rule.spec.labels {
                    rule.state = std::mem::take(&mut old.state);
                    rule.last_at = old.last_at;
                } else {
                    let start = out.len();
                    old.state.resolve_all(&old.spec, old.last_at, out);
                    self.record(&out[start..]);
                }
                self.rules[i] = rule;
            }
            None => self.rules.push(rule),
        }
    }

    /// Remove rule `name` (a plugin removed): its firing alerts resolve.
    pub fn remove_rule(&mut self, name: &str, out: &mut Vec<AlertEvent>) -> bool {
        let Some(i) = self.rules.iter().position(|r| r.spec.name == name) else {
            return false;
        };
        let mut rule = self.rules.remove(i);
        let start = out.len();
        rule.state.resolve_all(&rule.spec, rule.last_at, out);
        self.record(&out[start..]);
        true
    }

    /// Lifecycle notices of the plugin rules' plugins (failures,
    /// quarantine, recovery) since the last call, rule by rule.
    pub fn take_notices(&mut self) -> Vec<crate::plugin::registry::Notice> {
        self.rules
            .iter_mut()
            .flat_map(|r| match &mut r.evaluator {
                Evaluator::Plugin(p) => p.take_notices(),
                Evaluator::Declared(_) => Vec::new(),
            })
            .collect()
    }

    /// The meters of the rules whose samples come from a plugin, by rule
    /// name.
    pub fn meters(&self) -> Vec<(String, crate::plugin::meter::MeterReport)> {
        self.rules
            .iter()
            .filter_map(|r| match &r.evaluator {
                Evaluator::Plugin(p) => Some((r.spec.name.clone(), p.meter()?)),
                Evaluator::Declared(_) => None,
            })
            .collect()
    }

    /// Whether there is any rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Take a window output into this input's evaluations.
    pub fn observe_window(&mut self, output: &window::Output) {
        let window::Output::Result(result) = output else {
            return;
        };
        let at = result.end;
        for rule in &mut self.rules {
            let is_pattern = false;
            let sample = match &rule.evaluator {
                Evaluator::Declared(d) => match &d.watch {
                    Watch::Window(w) if w == result.window() => d.window_sample(result),
                    _ => continue,
                },
                Evaluator::Plugin(p) => {
                    if !p
                        .watches()
                        .iter()
                        .any(|w| matches!(w, Watch::Window(n) if n == result.window()))
                    {
                        continue;
                    }
                    None
                }
            };
            let slot = pending_at(&mut rule.pending, at, &rule.evaluator, is_pattern);
            match slot {
                Pending::Samples(s) => s.extend(sample),
                Pending::Watched(w) => w.push(Watched::Window(result.clone())),
                Pending::Matches(_) => {}
            }
        }
    }

    /// Take a pattern output into this input's evaluations.
    pub fn observe_pattern(&mut self, output: &PatternOutput) {
        let PatternOutput::Result(result) = output else {
            return;
        };
        let at = result.end;
        for rule in &mut self.rules {
            let watched = match &rule.evaluator {
                Evaluator::Declared(d) => {
                    matches!(&d.watch, Watch::Pattern(p) if p.as_str() == &*result.pattern)
                }
                Evaluator::Plugin(p) => p
                    .watches()
                    .iter()
                    .any(|w| matches!(w, Watch::Pattern(n) if n.as_str() == &*result.pattern)),
            };
            if !watched {
                continue;
            }
            match pending_at(&mut rule.pending, at, &rule.evaluator, true) {
                Pending::Matches(m) => m.push(result.clone()),
                Pending::Watched(w) => w.push(Watched::Pattern(result.clone())),
                Pending::Samples(_) => {}
            }
        }
    }

    /// Evaluate what this input brought, then the rules due for a
    /// time-driven evaluation at event time `event_now`; append every
    /// transition to `out` (rules in configuration order).
    pub fn evaluate(&mut self, event_now: Option<i64>, out: &mut Vec<AlertEvent>) {
        let start = out.len();
        for rule in &mut self.rules {
            for (at, pending) in std::mem::take(&mut rule.pending) {
                let at = at.max(rule.last_at);
                let samples = match (&mut rule.evaluator, pending) {
                    (_, Pending::Samples(s)) => s,
                    (Evaluator::Declared(d), Pending::Matches(m)) => d.pattern_samples(&m),
                    (Evaluator::Plugin(p), Pending::Watched(w)) => match p.evaluate(at, &w) {
                        Ok(evals) => evals.into_iter().map(|e| e.into_sample()).collect(),
                        Err(e) => {
                            // The plugin wrote no state for this batch (and
                            // reported the failure on `plugins`): no
                            // transitions either, as Prometheus keeps a
                            // rule's alerts when its query fails.
                            tracing::debug!(rule = %rule.spec.name, error = %e, "alert plugin evaluation failed; no transitions");
                            rule.last_at = at;
                            continue;
                        }
                    },
                    _ => Vec::new(),
                };
                rule.state.evaluate(&rule.spec, at, &samples, out);
                rule.last_at = at;
            }
            let Some(now) = event_now else { continue };
            let watermark = now.saturating_sub(rule.bound_ms);
            if !rule.state.is_empty() && watermark >= rule.last_at.saturating_add(rule.interval_ms)
            {
                rule.state.evaluate(&rule.spec, watermark, &[], out);
                rule.last_at = watermark;
            }
        }
        self.record(&out[start..]);
    }

    /// Take the rules of a reloaded configuration: a rule that keeps its
    /// name, what it watches and its labels keeps its instances (changed
    /// thresholds, `for`, annotations apply from the next evaluation); a
    /// removed rule, or one whose identity changed, resolves its firing
    /// alerts (reported in `out`). Plugin rules are left as they are.
    /// Returns a line per change.
    pub fn reconfigure(&mut self, config: &Config, out: &mut Vec<AlertEvent>) -> Vec<String> {
        let start = out.len();
        let mut changes = Vec::new();
        let mut old: HashMap<String, Rule> = HashMap::new();
        let mut kept = Vec::new();
        for r in std::mem::take(&mut self.rules) {
            if matches!(r.evaluator, Evaluator::Declared(_)) {
                old.insert(r.spec.name.clone(), r);
            } else {
                kept.push(r);
            }
        }
        let mut rules = Vec::new();
        for d in &config.alerts {
            let (interval_ms, bound_ms) = timing(config, &d.watch);
            let mut rule = Rule {
                spec: d.spec.clone(),
                evaluator: Evaluator::Declared(d.clone()),
                state: RuleState::new(),
                last_at: i64::MIN,
                interval_ms,
                bound_ms,
                pending: Vec::new(),
            };
            match old.remove(&d.spec.name) {
                Some(mut prev) => {
                    let same = matches!(&prev.evaluator, Evaluator::Declared(p) if p == d);
                    let same_identity = watch_of(&prev.evaluator) == Some(&d.watch)
                        && prev.spec.labels == d.spec.labels;
                    if same_identity {
                        rule.state = std::mem::take(&mut prev.state);
                        rule.last_at = prev.last_at;
                        if !same {
                            changes.push(format!(
                                "alert `{}` changed; its {} instances are kept",
                                d.spec.name,
                                rule.state.len()
                            ));
                        }
                    } else {
                        prev.state.resolve_all(&prev.spec, prev.last_at, out);
                        changes.push(format!(
                            "alert `{}` now watches other results or has other labels; its alerts were resolved and it starts afresh",
                            d.spec.name
                        ));
                    }
                }
                None => changes.push(format!("alert `{}` added", d.spec.name)),
            }
            rules.push(rule);
        }
        let mut removed: Vec<Rule> = old.into_values().collect();
        removed.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        for mut r in removed {
            r.state.resolve_all(&r.spec, r.last_at, out);
            changes.push(format!(
                "alert `{}` removed; its firing alerts resolved",
                r.spec.name
            ));
        }
        rules.extend(kept);
        self.rules = rules;
        self.record(&out[start..]);
        changes
    }

    fn record(&mut self, events: &[AlertEvent]) {
        for e in events {
            *self
                .transitions
                .entry((e.rule.clone(), e.state_name()))
                .or_insert(0) += 1;
            if self.history.len() >= HISTORY_CAPACITY {
                self.history.pop_front();
            }
            self.history.push_back(e.clone());
        }
    }

    /// Pending, firing and no-data alerts now, rule by rule.
    pub fn active(&self) -> Vec<AlertEvent> {
        self.rules
            .iter()
            .flat_map(|r| r.state.active(&r.spec))
            .collect()
    }

    /// Every stored instance (resolved ones included), for re-sending to
    /// notifiers after a restart.
    pub fn all(&self) -> Vec<AlertEvent> {
        self.rules
            .iter()
            .flat_map(|r| r.state.alerts(&r.spec))
            .collect()
    }

    /// Transitions kept, oldest first, whose time is in `[from, to]` and,
    /// if given, whose state is `state`; the newest `limit` of them.
    pub fn history(
        &self,
        from: Option<i64>,
        to: Option<i64>,
        state: Option<AlertState>,
        limit: usize,
    ) -> Vec<AlertEvent> {
        let matching: Vec<&AlertEvent> = self
            .history
            .iter()
            .filter(|e| from.is_none_or(|f| e.at() >= f))
            .filter(|e| to.is_none_or(|t| e.at() <= t))
            .filter(|e| state.is_none_or(|s| e.state == s))
            .collect();
        let skip = matching.len().saturating_sub(limit);
        matching.into_iter().skip(skip).cloned().collect()
    }

    /// A report per rule.
    pub fn reports(&self) -> Vec<RuleReport> {
        self.rules
            .iter()
            .map(|r| {
                let (watches, source) = match &r.evaluator {
                    Evaluator::Declared(d) => (vec![watch_channel(&d.watch)], "declared"),
                    Evaluator::Plugin(p) => {
                        (p.watches().iter().map(watch_channel).collect(), "plugin")
                    }
                };
                RuleReport {
                    name: r.spec.name.clone(),
                    watches,
                    source,
                    instances: r.state.len(),
                    refused: r.state.refused(),
                    transitions: self
                        .transitions
                        .range((r.spec.name.clone(), "")..)
                        .take_while(|((n, _), _)| n == &r.spec.name)
                        .map(|(_, v)| *v)
                        .sum(),
                }
            })
            .collect()
    }

    /// Transitions per (rule, state) since start.
    pub fn transitions(&self) -> &BTreeMap<(String, &'static str), u64> {
        &self.transitions
    }

    /// The rules' lifecycle state.
    pub fn snapshot(&self) -> AlertsState {
        AlertsState {
            rules: self
                .rules
                .iter()
                .map(|r| RuleSnapshot {
                    name: r.spec.name.clone(),
                    labels: r.spec.labels.clone(),
                    last_at: r.last_at,
                    state: r.state.clone(),
                })
                .collect(),
        }
    }

    /// Continue from `state`: each rule of the same name and labels takes
    /// its saved instances; the others start afresh (logged).
    pub fn restore(&mut self, state: AlertsState) {
        for saved in state.rules {
            match self.rules.iter_mut().find(|r| r.spec.name == saved.name) {
                Some(r) if r.spec.labels == saved.labels => {
                    r.state = saved.state;
                    r.last_at = saved.last_at;
                }
                Some(_) => {
                    tracing::warn!(rule = %saved.name, "alert rule's labels changed since the snapshot; its instances start afresh")
                }
                None => {
                    tracing::warn!(rule = %saved.name, "the snapshot has an alert rule that is no longer configured; its state is dropped")
                }
            }
        }
    }
}

fn watch_channel(w: &Watch) -> String {
    match w {
        Watch::Window(n) => window::channel_name(n),
        Watch::Pattern(n) => crate::pattern::channel_name(n),
    }
}

/// The pending evaluation of `rule` at time `at` (the last one if it has
/// that time, else a new one).
fn pending_at<'a>(
    pending: &'a mut Vec<(i64, Pending)>,
    at: i64,
    evaluator: &Evaluator,
    is_pattern: bool,
) -> &'a mut Pending {
    let is_new = pending.last().is_none_or(|(t, _)| *t != at);
    if is_new {
        pending.push((at, Pending::empty_for(evaluator, is_pattern)));
    }
    // Just pushed or checked present.
    let last = pending.len() - 1;
    &mut pending[last].1
}
