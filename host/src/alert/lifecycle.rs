//! Prometheus's alerting-rule lifecycle, as one pure function of (previous
//! state, evaluation, event time) — the shape of `AlertingRule.Eval` in
//! Prometheus's `rules/alerting.go`.
//!
//! One [`RuleState`] per rule. Each evaluation of the rule at event time
//! `at_ms` hands in [`Sample`]s: a label set, a value and whether the
//! condition holds. An alert instance is identified by the fingerprint of
//! its labels (the sample's, then the rule's own labels, then
//! `alertname = <rule>`), so one rule gives one instance per label set
//! however many samples carry it. Instances move
//!
//! ```text
//! inactive ──active──▶ pending ──`for` elapsed──▶ firing ──cleared for keep_firing_for──▶ resolved
//!                        │ cleared: dropped silently                       (kept resolved_retention, then forgotten)
//! ```
//!
//! with `for = 0` going straight to firing. Every transition is returned as
//! an [`AlertEvent`]; nothing here reads a clock, and all state is ordered
//! (`BTreeMap`) and serde-serialisable, so it belongs in engine snapshots and
//! replays identically.
//!
//! **No data.** A sample with `active = false` is data ("the condition does
//! not hold"). An instance that gets *no* sample at all keeps its state until
//! it has had none for [`RuleSpec::no_data_after_ms`]; from then on, at each
//! evaluation, the rule's [`NoDataMode`] applies.

use std::collections::BTreeMap;
use std::hash::Hasher as _;

use serde::{Deserialize, Serialize};

use super::template;

/// How long a resolved instance is kept (and its resolution re-sent) before
/// it is forgotten: Prometheus's `resolvedRetention`, 15 minutes.
pub const DEFAULT_RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// Default cap on instances per rule. Prometheus has no default limit; a
/// streaming host keyed by user-supplied properties needs one, and 10,000
/// alerts per rule is already far more than any person reads.
pub const DEFAULT_MAX_INSTANCES: usize = 10_000;

/// Default silence after which an instance counts as having no data, for
/// rules that do not watch a window (e.g. pattern matches): 5 minutes,
/// Prometheus's staleness lookback.
pub const DEFAULT_NO_DATA_AFTER_MS: i64 = 5 * 60 * 1000;

/// The label a no-data alert carries, with the value `nodata` (Grafana's
/// `alertstate` convention), so it is a separate alert downstream.
pub const NO_DATA_LABEL: &str = "alertstate";

/// The label that names the rule on every alert, as in Prometheus.
pub const ALERT_NAME_LABEL: &str = "alertname";

/// Default no-data silence for a rule over a window of `window_ms`: two
/// windows, so one late or empty window does not count as no data.
pub fn default_no_data_after(window_ms: i64) -> i64 {
    window_ms.saturating_mul(2)
}

/// What an instance that stopped getting samples becomes (Grafana's
/// "no data" handling, evaluated once [`RuleSpec::no_data_after_ms`] passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoDataMode {
    /// Treat as cleared: a pending instance is dropped, a firing one resolves
    /// (after `keep_firing_for`). Prometheus's behaviour for a vanished series.
    #[default]
    Ok,
    /// Keep the last state: no transitions until samples come back.
    KeepLast,
    /// Treat as active with the last value: pending goes on to firing.
    Alerting,
    /// A separate `alertstate="nodata"` alert: a firing instance resolves and
    /// the no-data alert fires; it resolves when samples come back.
    #[serde(rename = "nodata")]
    NoData,
}

/// One alert rule's lifecycle settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleSpec {
    /// The rule's name; becomes the `alertname` label.
    pub name: String,
    /// How long the condition must hold before a pending alert fires (`for`).
    pub for_ms: i64,
    /// How long a firing alert keeps firing after its condition cleared.
    pub keep_firing_for_ms: i64,
    /// Labels added to every instance (static; they override sample labels).
    pub labels: BTreeMap<String, String>,
    /// Annotation templates (see [`super::template`]).
    pub annotations: BTreeMap<String, String>,
    /// What an instance without samples becomes.
    pub no_data: NoDataMode,
    /// Silence after which [`Self::no_data`] applies.
    pub no_data_after_ms: i64,
    /// How long resolved instances are kept.
    pub resolved_retention_ms: i64,
    /// Cap on stored instances (pending, firing, resolved, no-data); new
    /// label sets beyond it are refused and counted.
    pub max_instances: usize,
}

impl RuleSpec {
    /// A rule with Prometheus's defaults: `for = 0`, no `keep_firing_for`,
    /// no labels or annotations, no-data treated as cleared after
    /// [`DEFAULT_NO_DATA_AFTER_MS`], 15 minutes of resolved retention.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            for_ms: 0,
            keep_firing_for_ms: 0,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            no_data: NoDataMode::Ok,
            no_data_after_ms: DEFAULT_NO_DATA_AFTER_MS,
            resolved_retention_ms: DEFAULT_RESOLVED_RETENTION_MS,
            max_instances: DEFAULT_MAX_INSTANCES,
        }
    }
}

/// One result of evaluating a rule: a label set (a window group, a pattern
/// key), its value, and whether the condition holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The group's labels.
    pub labels: BTreeMap<String, String>,
    /// The value the condition looked at (`{{ $value }}`).
    pub value: f64,
    /// Whether the condition holds.
    pub active: bool,
    /// Annotations of this instance (an alert plugin's), set over the
    /// rule's templated ones; empty for declared rules.
    pub annotations: BTreeMap<String, String>,
}

/// An alert's state as reported in an [`AlertEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds, `for` has not elapsed yet.
    Pending,
    /// The alert fires.
    Firing,
    /// The alert fired and its condition cleared.
    Resolved,
    /// The instance's group stopped reporting ([`NoDataMode::NoData`]).
    #[serde(rename = "nodata")]
    NoData,
}

/// A state transition of one alert instance; timestamps are event time in
/// milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// The rule's name.
    pub rule: String,
    /// The alert's fingerprint: [`fingerprint`] of `labels`, 16 hex digits.
    pub fingerprint: String,
    /// The alert's labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// The state entered.
    pub state: AlertState,
    /// The latest value.
    pub value: f64,
    /// When the condition started holding.
    pub active_at: i64,
    /// When the alert fired, once it has.
    pub fired_at: Option<i64>,
    /// When the alert resolved, once it has.
    pub resolved_at: Option<i64>,
    /// Alertmanager's `startsAt`: `fired_at` (Prometheus sends `FiredAt`),
    /// `active_at` while pending, the no-data start for no-data alerts.
    pub starts_at: i64,
    /// Alertmanager's `endsAt` when known: the resolution time.
    pub ends_at: Option<i64>,
}

impl AlertEvent {
    /// When the transition happened (event time, ms): the resolution, the
    /// firing, the no-data start, or the time the condition began holding.
    pub fn at(&self) -> i64 {
        match self.state {
            AlertState::Pending => self.active_at,
            AlertState::Firing => self.fired_at.unwrap_or(self.starts_at),
            AlertState::Resolved => self.resolved_at.unwrap_or(self.starts_at),
            AlertState::NoData => self.starts_at,
        }
    }

    /// The state's name as published (`pending`, `firing`, `resolved`,
    /// `nodata`).
    pub fn state_name(&self) -> &'static str {
        match self.state {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
            AlertState::NoData => "nodata",
        }
    }

    /// The published form, on the `alerts` channel, in `eddy pipe`'s
    /// results and REST: `{"alertname", "state", "fingerprint", "labels",
    /// "annotations", "value", "at", "activeAt", "startsAt", "endsAt"}`;
    /// `at` is the transition's event time in milliseconds, the others are
    /// RFC 3339 as Alertmanager writes them (`endsAt` null until resolved).
    pub fn to_json(&self) -> serde_json::Value {
        use super::notify::rfc3339;
        serde_json::json!({
            "alertname": self.rule,
            "state": self.state_name(),
            "fingerprint": self.fingerprint,
            "labels": self.labels,
            "annotations": self.annotations,
            "value": self.value,
            "at": self.at(),
            "activeAt": rfc3339(self.active_at),
            "startsAt": rfc3339(self.starts_at),
            "endsAt": self.ends_at.map(rfc3339),
        })
    }
}

/// Alertmanager's label-set fingerprint: FNV-1a 64 over the label names and
/// values in name order, each followed by the separator byte `0xff`, printed
/// as 16 hex digits (as `model.LabelSet.Fingerprint().String()`).
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut hasher = fnv::FnvHasher::default();
    for (name, value) in labels {
        hasher.write(name.as_bytes());
        hasher.write_u8(0xff);
        hasher.write(value.as_bytes());
        hasher.write_u8(0xff);
    }
    format!("{:016x}", hasher.finish())
}

/// The state kept per alert instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Instance {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    state: AlertState,
    value: f64,
    active_at: i64,
    fired_at: Option<i64>,
    resolved_at: Option<i64>,
    /// First evaluation at which a firing alert's condition was clear.
    keep_firing_since: Option<i64>,
    /// Last evaluation that brought a sample for this label set.
    last_seen: i64,
    /// When the no-data alert started ([`AlertState::NoData`] only).
    no_data_since: Option<i64>,
}

/// The lifecycle state of one rule: its alert instances by fingerprint.
/// Serde-serialisable for engine snapshots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    instances: BTreeMap<String, Instance>,
    refused: u64,
}

impl RuleState {
    /// A rule with no instances.
    pub fn new() -> Self {
        Self::default()
    }

    /// New label sets refused because the rule was at
    /// [`RuleSpec::max_instances`], since the state was created.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Number of stored instances (pending, firing, resolved, no-data).
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Whether no instance is stored.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// Every stored instance as it stands, in fingerprint order (for REST
    /// listings and for re-sending after a restart).
    pub fn alerts(&self, spec: &RuleSpec) -> Vec<AlertEvent> {
        self.instances
            .iter()
            .map(|(fp, inst)| inst.event(spec, fp))
            .collect()
    }

    /// Evaluate the rule at event time `at_ms` with this evaluation's
    /// samples; append every state transition to `out`: those of known
    /// instances in fingerprint order, then new instances in the order their
    /// label sets first appear in `samples` (which is also the order in which
    /// they are admitted under [`RuleSpec::max_instances`]). Samples with the same label set count as one: active if any
    /// is, with the value of the last active one (else the last one).
    pub fn evaluate(
        &mut self,
        spec: &RuleSpec,
        at_ms: i64,
        samples: &[Sample],
        out: &mut Vec<AlertEvent>,
    ) {
        // Forget resolved instances past their retention (Prometheus: `>`)
        // first, so the room they leave under the cap is usable at once.
        self.instances.retain(|_, inst| {
            !(inst.state == AlertState::Resolved
                && inst
                    .resolved_at
                    .is_some_and(|r| at_ms.saturating_sub(r) > spec.resolved_retention_ms))
        });

        // This evaluation's results by fingerprint, and the order in which
        // label sets first appeared (new instances are admitted in that order).
        let mut results: BTreeMap<String, Seen<'_>> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        for sample in samples {
            let labels = alert_labels(spec, &sample.labels);
            let fp = fingerprint(&labels);
            match results.get_mut(&fp) {
                Some(seen) => {
                    if sample.active || !seen.active {
                        seen.value = sample.value;
                        seen.annotations = &sample.annotations;
                    }
                    seen.active |= sample.active;
                }
                None => {
                    order.push(fp.clone());
                    results.insert(
                        fp,
                        Seen {
                            labels,
                            value: sample.value,
                            active: sample.active,
                            annotations: &sample.annotations,
                        },
                    );
                }
            }
        }

        let known: Vec<String> = self.instances.keys().cloned().collect();
        for fp in known {
            match results.remove(&fp) {
                Some(seen) => self.with_sample(spec, at_ms, fp, seen, out),
                None => self.without_sample(spec, at_ms, &fp, out),
            }
        }
        for fp in order {
            if let Some(seen) = results.remove(&fp) {
                self.with_sample(spec, at_ms, fp, seen, out);
            }
        }
    }

    /// The rule is going away (removed or replaced by a configuration
    /// reload) at event time `at_ms`: every firing instance resolves (its
    /// resolution is reported, so receivers learn it ended), pending ones
    /// are dropped, and the state is emptied.
    pub fn resolve_all(&mut self, spec: &RuleSpec, at_ms: i64, out: &mut Vec<AlertEvent>) {
        for (fp, inst) in std::mem::take(&mut self.instances) {
            if matches!(inst.state, AlertState::Firing | AlertState::NoData) {
                let mut inst = inst;
                inst.state = AlertState::Resolved;
                inst.resolved_at = Some(at_ms);
                out.push(inst.event(spec, &fp));
            }
        }
    }

    /// Instances in state pending or firing (or no data), as they stand.
    pub fn active(&self, spec: &RuleSpec) -> Vec<AlertEvent> {
        self.instances
            .iter()
            .filter(|(_, i)| i.state != AlertState::Resolved)
            .map(|(fp, inst)| inst.event(spec, fp))
            .collect()
    }

    fn with_sample(
        &mut self,
        spec: &RuleSpec,
        at_ms: i64,
        fp: String,
        seen: Seen<'_>,
        out: &mut Vec<AlertEvent>,
    ) {
        let Seen {
            labels,
            value,
            active,
            annotations: own,
        } = seen;
        let mut annotations = expand_annotations(spec, &labels, value);
        annotations.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(inst) = self.instances.get_mut(&fp) {
            if inst.state == AlertState::NoData {
                // Data is back: the no-data alert resolves, and the label set
                // starts over from inactive.
                inst.state = AlertState::Resolved;
                inst.resolved_at = Some(at_ms);
                out.push(inst.event(spec, &fp));
                self.instances.remove(&fp);
            } else if inst.state == AlertState::Resolved && active {
                // A new episode: Prometheus replaces the resolved alert.
                self.instances.remove(&fp);
            } else {
                inst.value = value;
                inst.annotations = annotations;
                inst.last_seen = at_ms;
                let change = inst.step(spec, at_ms, active);
                self.report(spec, &fp, change, out);
                return;
            }
        }
        if !active {
            return;
        }
        if self.instances.len() >= spec.max_instances {
            self.refused += 1;
            metrics::counter!("eddy_alert_instances_refused_total", "rule" => spec.name.clone())
                .increment(1);
            return;
        }
        let firing = spec.for_ms <= 0;
        let inst = Instance {
            labels,
            annotations,
            state: if firing {
                AlertState::Firing
            } else {
                AlertState::Pending
            },
            value,
            active_at: at_ms,
            fired_at: firing.then_some(at_ms),
            resolved_at: None,
            keep_firing_since: None,
            last_seen: at_ms,
            no_data_since: None,
        };
        out.push(inst.event(spec, &fp));
        self.instances.insert(fp, inst);
    }

    fn without_sample(&mut self, spec: &RuleSpec, at_ms: i64, fp: &str, out: &mut Vec<AlertEvent>) {
        let Some(inst) = self.instances.get_mut(fp) else {
            return;
        };
        if matches!(inst.state, AlertState::Resolved | AlertState::NoData)
            || at_ms.saturating_sub(inst.last_seen) < spec.no_data_after_ms
        {
            return;
        }
        match spec.no_data {
            NoDataMode::KeepLast => {}
            NoDataMode::Ok => {
                let change = inst.step(spec, at_ms, false);
                self.report(spec, fp, change, out);
            }
            NoDataMode::Alerting => {
                let change = inst.step(spec, at_ms, true);
                self.report(spec, fp, change, out);
            }
            NoDataMode::NoData => {
                if inst.state == AlertState::Firing {
                    inst.state = AlertState::Resolved;
                    inst.resolved_at = Some(at_ms);
                    out.push(inst.event(spec, fp));
                }
                inst.state = AlertState::NoData;
                inst.fired_at = None;
                inst.resolved_at = None;
                inst.keep_firing_since = None;
                inst.no_data_since = Some(at_ms);
                out.push(inst.event(spec, fp));
            }
        }
    }

    /// After [`Instance::step`]: report a transition, or drop an instance
    /// that went back to inactive (a pending alert whose condition cleared).
    fn report(
        &mut self,
        spec: &RuleSpec,
        fp: &str,
        change: Option<Change>,
        out: &mut Vec<AlertEvent>,
    ) {
        match change {
            None => {}
            Some(Change::Dropped) => {
                self.instances.remove(fp);
            }
            Some(Change::Entered) => {
                if let Some(inst) = self.instances.get(fp) {
                    out.push(inst.event(spec, fp));
                }
            }
        }
    }
}

/// What [`Instance::step`] did, for the caller to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Entered,
    Dropped,
}

impl Instance {
    /// Advance a pending or firing instance by one evaluation.
    fn step(&mut self, spec: &RuleSpec, at_ms: i64, active: bool) -> Option<Change> {
        match (self.state, active) {
            (AlertState::Pending, true) => {
                if at_ms.saturating_sub(self.active_at) >= spec.for_ms {
                    self.state = AlertState::Firing;
                    self.fired_at = Some(at_ms);
                    return Some(Change::Entered);
                }
            }
            (AlertState::Pending, false) => return Some(Change::Dropped),
            (AlertState::Firing, true) => self.keep_firing_since = None,
            (AlertState::Firing, false) => {
                let since = *self.keep_firing_since.get_or_insert(at_ms);
                if at_ms.saturating_sub(since) >= spec.keep_firing_for_ms {
                    self.state = AlertState::Resolved;
                    self.resolved_at = Some(at_ms);
                    self.keep_firing_since = None;
                    return Some(Change::Entered);
                }
            }
            (AlertState::Resolved | AlertState::NoData, _) => {}
        }
        None
    }

    fn event(&self, spec: &RuleSpec, fp: &str) -> AlertEvent {
        let (labels, fingerprint) = match self.no_data_since {
            Some(_) => {
                let mut labels = self.labels.clone();
                labels.insert(NO_DATA_LABEL.to_owned(), "nodata".to_owned());
                let fp = fingerprint(&labels);
                (labels, fp)
            }
            None => (self.labels.clone(), fp.to_owned()),
        };
        let starts_at = self
            .no_data_since
            .or(self.fired_at)
            .unwrap_or(self.active_at);
        AlertEvent {
            rule: spec.name.clone(),
            fingerprint,
            labels,
            annotations: self.annotations.clone(),
            state: self.state,
            value: self.value,
            active_at: self.active_at,
            fired_at: self.fired_at,
            resolved_at: self.resolved_at,
            starts_at,
            ends_at: self.resolved_at,
        }
    }
}

/// One label set's result in an evaluation (several samples with the same
/// labels fold into one: active if any is, with the value and annotations
/// of the last active one, else of the last one).
struct Seen<'a> {
    labels: BTreeMap<String, String>,
    value: f64,
    active: bool,
    annotations: &'a BTreeMap<String, String>,
}

/// Labels of the alert for a sample: the sample's, overridden by the rule's,
/// and `alertname`.
fn alert_labels(spec: &RuleSpec, sample: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut labels = sample.clone();
    for (k, v) in &spec.labels {
        labels.insert(k.clone(), v.clone());
    }
    labels.insert(ALERT_NAME_LABEL.to_owned(), spec.name.clone());
    labels
}

fn expand_annotations(
    spec: &RuleSpec,
    labels: &BTreeMap<String, String>,
    value: f64,
) -> BTreeMap<String, String> {
    spec.annotations
        .iter()
        .map(|(k, v)| (k.clone(), template::expand(v, labels, value)))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "lifecycle_tests.rs"]
mod tests;
