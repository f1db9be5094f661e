//! Pattern plugins from the host's side: the pattern a plugin describes, as
//! plain Rust, and [`PatternInstance`], through which the pattern operator
//! classifies events and judges completed matches.
//!
//! The host runs the matching (`crate::pattern`); a plugin only says what
//! its pattern looks like and which steps' conditions each event satisfies.
//! A [`PatternInstance`] runs every call in the same sandbox a processor
//! stage does (memory cap, deadline, log budget, host-backed `state` writes
//! committed only when the call succeeds), replaces its wasm instance after
//! a trap, quarantines the plugin after repeated failures, and rolls a new
//! version that fails on probation back to the last known good one.
//!
//! ```no_run
//! # fn demo(registry: &std::sync::Arc<eddy::plugin::Registry>, events: &[eddy::event::Event]) -> Result<(), eddy::plugin::PluginError> {
//! use eddy::plugin::pattern::PatternContext;
//! for (name, hash) in registry.patterns() {
//!     let context = PatternContext::new(registry, &name);
//!     let mut instance = registry.pattern_instance(&name, &hash, &context)?;
//!     let description = instance.describe()?;
//!     let bits = instance.classify(events, 0)?;
//!     assert_eq!(bits.len(), events.len());
//!     # let _ = description;
//! }
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::abi::Encoder;
use super::bindings::pattern::exports::eddy::plugin::matching as pwit;
use super::engine::{Compiled, Instance, PluginError};
use super::meter::{CallMeter, MeterReport};
use super::registry::{Notice, NoticeKind, Registry, Slot};
use super::state_store::{StateLimits, StateStore};
use crate::event::Event;

/// Most steps a pattern may have: [`ConditionBits`] holds one bit per step
/// in a `u32` (`wit/pattern.wit`).
pub const MAX_PATTERN_STEPS: usize = 32;

/// Largest payload `on-match` may attach, in bytes of JSON. A payload is
/// published with its match on every channel that carries it; 64 KiB is
/// far more than a summary (a basket total, a score) needs.
pub const MAX_MATCH_PAYLOAD_BYTES: usize = 64 * 1024;

/// How a step relates to the step before it (`after` in `eddy.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContiguityDesc {
    /// `next`: directly after the previous step's event.
    Strict,
    /// `followed_by`: other events may come in between.
    Relaxed,
    /// `followed_by_any`: every matching event starts an alternative.
    Any,
    /// `not_next`: the next event must not satisfy the step.
    NotStrict,
    /// `not_followed_by`: no event satisfying the step may come in between.
    NotRelaxed,
}

/// Contiguity between the events of one looping step (`inner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InnerDesc {
    /// `consecutive`.
    Strict,
    /// The default.
    Relaxed,
    /// `allow_combinations`.
    Any,
}

/// What `within` bounds (`within_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WithinTypeDesc {
    /// First to last event of a match (the default).
    FirstAndLast,
    /// Each event to the one before it.
    PreviousAndCurrent,
}

/// After-match skip strategy (`skip`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipDesc {
    /// Every partial match goes on (the default).
    NoSkip,
    /// Discard partial matches that began with the match's first event.
    ToNext,
    /// Discard partial matches that began inside the match.
    PastLastEvent,
    /// Discard partial matches that began before the first event of the
    /// named step.
    ToFirst(String),
    /// Discard partial matches that began before the last event of the
    /// named step.
    ToLast(String),
}

/// One step of a plugin's pattern (`step-description` in the WIT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDescription {
    /// Unique name.
    pub name: String,
    /// Contiguity to the previous step (ignored on the first).
    pub after: ContiguityDesc,
    /// Fewest events the step takes.
    pub min: u32,
    /// Most events the step takes; `None`: no bound.
    pub max: Option<u32>,
    /// The step may take no event.
    pub optional: bool,
    /// A looping step takes as many events as it can.
    pub greedy: bool,
    /// Contiguity between a looping step's events.
    pub inner: InnerDesc,
    /// The step has an `until` condition ([`ConditionBits::until`]).
    pub has_until: bool,
}

/// A pattern plugin's pattern (`pattern-description` in the WIT): the same
/// structure as a `[[patterns]]` table in `eddy.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternDescription {
    /// What partial matches are kept per: `distinct_id`, `session_id` or a
    /// property path such as `properties.cart_id`.
    pub key: String,
    /// The steps, in order (at most [`MAX_PATTERN_STEPS`]).
    pub steps: Vec<StepDescription>,
    /// How long a match may take, in ms; `None`: no bound.
    pub within_ms: Option<u64>,
    /// What `within_ms` bounds.
    pub within_type: WithinTypeDesc,
    /// After-match skip strategy.
    pub skip: SkipDesc,
    /// Whether [`PatternInstance::on_match`] is to be called for every
    /// completed match.
    pub wants_matches: bool,
}

/// Which steps' conditions one event satisfies: bit `i` stands for step `i`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConditionBits {
    /// Bit `i`: the event satisfies step `i`'s condition.
    pub steps: u32,
    /// Bit `i`: the event satisfies step `i`'s `until` condition.
    pub until: u32,
}

impl ConditionBits {
    /// Whether the event satisfies step `i`'s condition.
    pub fn step(&self, i: usize) -> bool {
        i < 32 && self.steps & (1 << i) != 0
    }

    /// Whether the event satisfies step `i`'s `until` condition.
    pub fn until(&self, i: usize) -> bool {
        i < 32 && self.until & (1 << i) != 0
    }
}

/// What a pattern plugin said about a completed match.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Emit the match, with the plugin's payload (a JSON object) if any.
    Keep(Option<serde_json::Value>),
    /// Drop the match.
    Reject,
}

impl From<pwit::Contiguity> for ContiguityDesc {
    fn from(c: pwit::Contiguity) -> Self {
        match c {
            pwit::Contiguity::Strict => ContiguityDesc::Strict,
            pwit::Contiguity::Relaxed => ContiguityDesc::Relaxed,
            pwit::Contiguity::Any => ContiguityDesc::Any,
            pwit::Contiguity::NotStrict => ContiguityDesc::NotStrict,
            pwit::Contiguity::NotRelaxed => ContiguityDesc::NotRelaxed,
        }
    }
}

impl From<pwit::InnerContiguity> for InnerDesc {
    fn from(c: pwit::InnerContiguity) -> Self {
        match c {
            pwit::InnerContiguity::Strict => InnerDesc::Strict,
            pwit::InnerContiguity::Relaxed => InnerDesc::Relaxed,
            pwit::InnerContiguity::Any => InnerDesc::Any,
        }
    }
}

impl From<pwit::PatternDescription> for PatternDescription {
    fn from(d: pwit::PatternDescription) -> Self {
        PatternDescription {
            key: d.key,
            steps: d
                .steps
                .into_iter()
                .map(|s| StepDescription {
                    name: s.name,
                    after: s.after.into(),
                    min: s.min,
                    max: s.max,
                    optional: s.optional,
                    greedy: s.greedy,
                    inner: s.inner.into(),
                    has_until: s.has_until,
                })
                .collect(),
            within_ms: d.within_ms,
            within_type: match d.within_type {
                pwit::WithinType::FirstAndLast => WithinTypeDesc::FirstAndLast,
                pwit::WithinType::PreviousAndCurrent => WithinTypeDesc::PreviousAndCurrent,
            },
            skip: match d.skip {
                pwit::SkipStrategy::NoSkip => SkipDesc::NoSkip,
                pwit::SkipStrategy::ToNext => SkipDesc::ToNext,
                pwit::SkipStrategy::PastLastEvent => SkipDesc::PastLastEvent,
                pwit::SkipStrategy::ToFirst(s) => SkipDesc::ToFirst(s),
                pwit::SkipStrategy::ToLast(s) => SkipDesc::ToLast(s),
            },
            wants_matches: d.wants_matches,
        }
    }
}

impl PatternDescription {
    /// Check the rules `wit/pattern.wit` sets: one to
    /// [`MAX_PATTERN_STEPS`] steps with unique, non-empty names; `min` ≤
    /// `max`, `max` ≥ 1; a key; a skip target that names a step; no
    /// negated first step and no optional or looping negated step. The
    /// message names the step at fault.
    pub fn check(&self) -> Result<(), String> {
        if self.key.trim().is_empty() {
            return Err("the key is empty; use `distinct_id`, `session_id` or a property path such as `properties.cart_id`".into());
        }
        if self.steps.is_empty() {
            return Err("the pattern has no steps".into());
        }
        if self.steps.len() > MAX_PATTERN_STEPS {
            return Err(format!(
                "the pattern has {} steps; at most {MAX_PATTERN_STEPS} are allowed",
                self.steps.len()
            ));
        }
        for (i, s) in self.steps.iter().enumerate() {
            if s.name.is_empty() {
                return Err(format!("step {i} has no name"));
            }
            if self.steps[..i].iter().any(|o| o.name == s.name) {
                return Err(format!("two steps are called `{}`", s.name));
            }
            if let Some(max) = s.max {
                if max == 0 {
                    return Err(format!("step `{}`: at most 0 events", s.name));
                }
                if s.min > max {
                    return Err(format!(
                        "step `{}`: at least {} but at most {max} events",
                        s.name, s.min
                    ));
                }
            }
            if s.min == 0 && !s.optional {
                return Err(format!(
                    "step `{}`: at least 0 events; mark the step optional instead",
                    s.name
                ));
            }
            let negated = matches!(
                s.after,
                ContiguityDesc::NotStrict | ContiguityDesc::NotRelaxed
            );
            if negated && i == 0 {
                return Err(format!(
                    "step `{}`: a pattern cannot begin with a negated step",
                    s.name
                ));
            }
            if negated && (s.optional || s.max != Some(1) || s.min != 1) {
                return Err(format!(
                    "step `{}`: a negated step (not_next, not_followed_by) cannot be optional or repeat",
                    s.name
                ));
            }
        }
        if let SkipDesc::ToFirst(step) | SkipDesc::ToLast(step) = &self.skip
            && !self.steps.iter().any(|s| &s.name == step)
        {
            return Err(format!(
                "the skip strategy names step `{step}`, which the pattern does not have"
            ));
        }
        Ok(())
    }
}

/// What a pattern plugin's instances need besides the version: their
/// configuration, their random seed and the store behind their `state`
/// import. The operator keeps one per pattern plugin and passes it to
/// every [`Registry::pattern_instance`], so state carries over traps,
/// swaps and rollbacks.
#[derive(Clone)]
pub struct PatternContext {
    /// The plugin's configuration, as JSON (`{}` if none).
    pub config: String,
    /// Seed of the instances' random sources under a virtual clock (mixed
    /// with how many instances were made, as for stages).
    pub seed: u64,
    /// The `state` import's store; its scope is the plugin's name.
    pub state: Arc<StateStore>,
    /// Deadline of every call (`runtime.deadline` by default).
    pub deadline: Duration,
    /// Linear-memory cap of every instance (`runtime.memory_limit_bytes`).
    pub memory_limit: u64,
}

impl PatternContext {
    /// Defaults for pattern plugin `name`: no configuration, seed 0, a new
    /// state store scoped to `name`, the runtime's deadline and memory cap.
    pub fn new(registry: &Registry, name: &str) -> Self {
        let config = registry.config();
        PatternContext {
            config: "{}".into(),
            seed: 0,
            state: Arc::new(StateStore::new(name, StateLimits::from(config))),
            deadline: config.deadline,
            memory_limit: config.memory_limit_bytes,
        }
    }
}

/// One live instance of a pattern plugin at one version.
///
/// Calls that fail return the error after recording it: the slot's failure
/// counter and last error, a `failed` notice, and after
/// `runtime.quarantine_after` consecutive failures a `quarantined` notice
/// and a backoff (engine time, doubling up to
/// `runtime.quarantine_backoff_max`) during which calls fail at once with
/// [`PluginError::Quarantined`]. A trap discards the wasm instance; the
/// next call makes a new one. A version that fails within its first
/// `runtime.probation_batches` successful classify calls, while a last
/// known good version exists, is rolled back in the registry (a
/// `rolled_back` notice, which selects the good version again); the
/// operator then asks for an instance of that version.
pub struct PatternInstance {
    registry: Arc<Registry>,
    slot: Arc<Slot>,
    compiled: Arc<Compiled>,
    context: PatternContext,
    instance: Option<Instance>,
    instances_made: u64,
    encoder: Encoder,
    probation_left: u32,
    consecutive_failures: u32,
    quarantined_until: Option<i64>,
    backoff_ms: i64,
    notices: Vec<Notice>,
    /// Calls, events and durations, for `/metrics`.
    meter: CallMeter,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PatternInstance {
    pub(crate) fn new(
        registry: Arc<Registry>,
        slot: Arc<Slot>,
        compiled: Arc<Compiled>,
        context: PatternContext,
    ) -> Result<Self, PluginError> {
        let view = slot.view();
        let on_probation = view.has_previous
            && !(view.confirmed
                && view
                    .current
                    .as_ref()
                    .is_some_and(|c| c.hash == compiled.hash));
        let config = registry.config();
        let mut me = PatternInstance {
            probation_left: if on_probation {
                config.probation_batches
            } else {
                0
            },
            backoff_ms: ms(config.quarantine_backoff),
            slot,
            compiled,
            context,
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
        // when the pattern is set up rather than at the first batch.
        me.ensure_instance()?;
        Ok(me)
    }

    /// The version this instance runs.
    pub fn compiled(&self) -> &Arc<Compiled> {
        &self.compiled
    }

    /// The pattern plugin's name.
    pub fn name(&self) -> &str {
        &self.slot.shared.name
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

    /// This instance's calls, events and durations, labelled.
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
            let instance = self.registry.engine().instantiate_pattern(
                &self.compiled,
                self.slot.shared.clone(),
                self.context.state.clone(),
                self.context.memory_limit,
                &self.context.config,
                config.compile_timeout,
                config.max_log_records_per_call,
                seed,
            )?;
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

    /// Run `call` on the instance unless quarantined, then record how it
    /// went. State writes are committed only on success.
    fn run<T>(
        &mut self,
        now_ms: i64,
        what: &str,
        call: impl FnOnce(&mut Instance, &mut Encoder, Duration, u32) -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
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
            let r = call(instance, &mut self.encoder, deadline, log_budget);
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
            Ok(_) => self.succeeded(),
            Err(e) => self.failed(now_ms, what, e),
        }
        result
    }

    fn succeeded(&mut self) {
        if self.quarantined_until.take().is_some() {
            self.notice(
                NoticeKind::Recovered,
                "the pattern calls it again".to_owned(),
            );
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

    fn failed(&mut self, now_ms: i64, what: &str, err: &PluginError) {
        self.meter.failed_calls += 1;
        self.consecutive_failures += 1;
        self.slot.counters.failures.fetch_add(1, Ordering::Relaxed);
        self.slot.set_last_error(err.to_string());
        self.notice(NoticeKind::Failed, format!("pattern {what}: {err}"));
        if self.probation_left > 0 {
            // The registry publishes the rollback; its notice selects the
            // last known good version again.
            let reason = format!("pattern {what}: {err}");
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
                "pattern: {} consecutive failures; retrying in {} ms",
                self.consecutive_failures, self.backoff_ms
            );
            self.backoff_ms = self
                .backoff_ms
                .saturating_mul(2)
                .min(ms(cfg.quarantine_backoff_max));
            self.notice(NoticeKind::Quarantined, detail);
        }
    }

    /// Ask the plugin for its pattern now. (The version's pattern as loaded
    /// is [`Compiled::pattern`]; a well-behaved plugin answers the same.)
    pub fn describe(&mut self) -> Result<PatternDescription, PluginError> {
        let deadline = self.context.deadline;
        self.ensure_instance()?;
        let Some(instance) = self.instance.as_mut() else {
            return Err(PluginError::Returned("no instance".into()));
        };
        match instance.describe_pattern(deadline) {
            Ok(d) => {
                let d = PatternDescription::from(d);
                d.check().map_err(PluginError::BadPattern)?;
                Ok(d)
            }
            Err(e) => {
                if e.poisons_instance() {
                    self.instance = None;
                }
                Err(e)
            }
        }
    }

    /// Which steps' conditions each of `events` satisfies, one entry per
    /// event in order, at engine time `now_ms` (which quarantine backoff is
    /// measured in). Bits past the pattern's last step are cleared. An
    /// answer of the wrong length fails the call.
    pub fn classify(
        &mut self,
        events: &[Event],
        now_ms: i64,
    ) -> Result<Vec<ConditionBits>, PluginError> {
        let steps = self
            .compiled
            .pattern
            .as_ref()
            .map_or(MAX_PATTERN_STEPS, |p| p.steps.len());
        let mask = if steps >= 32 {
            u32::MAX
        } else {
            (1u32 << steps) - 1
        };
        self.meter.items_in += events.len() as u64;
        let result: Result<Vec<ConditionBits>, PluginError> =
            self.run(now_ms, "classify", |instance, encoder, deadline, budget| {
                let batch = encoder.encode(events);
                let bits = instance.classify(batch, deadline, budget)?;
                if bits.len() != events.len() {
                    return Err(PluginError::Abi(super::abi::AbiError::OutcomeCount {
                        expected: events.len(),
                        got: bits.len(),
                    }));
                }
                Ok(bits
                    .into_iter()
                    .map(|b| ConditionBits {
                        steps: b.steps & mask,
                        until: b.until & mask,
                    })
                    .collect())
            });
        if let Ok(bits) = &result {
            self.meter.items_out += bits.iter().filter(|b| b.steps != 0).count() as u64;
        }
        result
    }

    /// Hand a completed match to the plugin: its key, the times of its
    /// first and last events, and its events step by step (steps that took
    /// no event may be left out). Returns the plugin's verdict; a payload
    /// that is not a JSON object, or is larger than
    /// [`MAX_MATCH_PAYLOAD_BYTES`], fails the call.
    pub fn on_match(
        &mut self,
        key: &str,
        start: i64,
        end: i64,
        steps: &[(&str, Vec<&Event>)],
        now_ms: i64,
    ) -> Result<Verdict, PluginError> {
        self.run(now_ms, "on_match", |instance, encoder, deadline, budget| {
            let mut first = 0u32;
            let mut match_steps = Vec::with_capacity(steps.len());
            for (name, events) in steps {
                let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
                match_steps.push(pwit::MatchStep {
                    name: (*name).to_owned(),
                    first,
                    count,
                });
                first = first.saturating_add(count);
            }
            let batch = encoder
                .encode_refs(steps.iter().flat_map(|(_, events)| events.iter().copied()))
                .clone();
            let m = pwit::CompletedMatch {
                key: key.to_owned(),
                start,
                end,
                events: batch,
                steps: match_steps,
            };
            match instance.on_match(&m, deadline, budget)? {
                pwit::MatchVerdict::Reject => Ok(Verdict::Reject),
                pwit::MatchVerdict::Keep(None) => Ok(Verdict::Keep(None)),
                pwit::MatchVerdict::Keep(Some(json)) => {
                    if json.len() > MAX_MATCH_PAYLOAD_BYTES {
                        return Err(PluginError::Returned(format!(
                            "on-match payload of {} bytes is larger than {MAX_MATCH_PAYLOAD_BYTES}",
                            json.len()
                        )));
                    }
                    match serde_json::from_str::<serde_json::Value>(&json) {
                        Ok(v @ serde_json::Value::Object(_)) => Ok(Verdict::Keep(Some(v))),
                        Ok(_) => Err(PluginError::Returned(
                            "on-match payload must be a JSON object".into(),
                        )),
                        Err(e) => Err(PluginError::Returned(format!(
                            "on-match payload is not JSON: {e}"
                        ))),
                    }
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn step(name: &str) -> StepDescription {
        StepDescription {
            name: name.into(),
            after: ContiguityDesc::Relaxed,
            min: 1,
            max: Some(1),
            optional: false,
            greedy: false,
            inner: InnerDesc::Relaxed,
            has_until: false,
        }
    }

    fn pattern(steps: Vec<StepDescription>) -> PatternDescription {
        PatternDescription {
            key: "distinct_id".into(),
            steps,
            within_ms: Some(60_000),
            within_type: WithinTypeDesc::FirstAndLast,
            skip: SkipDesc::NoSkip,
            wants_matches: false,
        }
    }

    #[test]
    fn descriptions_that_break_the_rules_are_refused_by_name() {
        assert_eq!(pattern(vec![step("a"), step("b")]).check(), Ok(()));
        let mut looping = step("b");
        looping.max = None;
        looping.min = 3;
        assert_eq!(pattern(vec![step("a"), looping]).check(), Ok(()));
        let mut bad_range = step("b");
        bad_range.min = 4;
        bad_range.max = Some(2);
        let mut negated_first = step("a");
        negated_first.after = ContiguityDesc::NotStrict;
        let mut skip = pattern(vec![step("a")]);
        skip.skip = SkipDesc::ToFirst("nope".into());
        let cases = [
            (pattern(vec![]), "no steps"),
            (
                pattern(vec![step("a"), step("a")]),
                "two steps are called `a`",
            ),
            (
                pattern(vec![step("a"), bad_range]),
                "at least 4 but at most 2",
            ),
            (
                pattern(vec![negated_first]),
                "cannot begin with a negated step",
            ),
            (skip, "step `nope`"),
            (
                pattern((0..33).map(|i| step(&format!("s{i}"))).collect()),
                "at most 32",
            ),
        ];
        for (p, needle) in cases {
            let err = p.check().unwrap_err();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn condition_bits_read_per_step() {
        let b = ConditionBits {
            steps: 0b101,
            until: 0b010,
        };
        assert!(b.step(0) && !b.step(1) && b.step(2) && !b.step(40));
        assert!(b.until(1) && !b.until(0));
    }

    #[test]
    fn descriptions_round_trip_through_json() {
        let mut p = pattern(vec![step("a")]);
        p.skip = SkipDesc::ToLast("a".into());
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""skip":{"to_last":"a"}"#), "{json}");
        assert_eq!(
            serde_json::from_str::<PatternDescription>(&json).unwrap(),
            p
        );
    }
}
