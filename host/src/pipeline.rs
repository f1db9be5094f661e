//! The pipeline: stages in configured order, each running one plugin over
//! whole batches.
//!
//! A stage owns one instance of its plugin. Between batches it checks its
//! plugin slot's generation and picks up a swapped version; during a batch
//! nothing changes. When a call fails the batch follows the stage's failure
//! policy (pass through unchanged, or dead-letter) — never silently lost —
//! and after `quarantine_after` consecutive failures the stage stops calling
//! the plugin for a backoff that doubles up to a ceiling. A version that
//! fails within its first `probation_batches` is rolled back and the batch is
//! retried on the version it replaced.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Config, FailurePolicy, StageConfig};
use crate::event::Event;
use crate::plugin::PluginError;
use crate::plugin::abi::{self, Encoder};
use crate::plugin::engine::{Compiled, Instance};
use crate::plugin::registry::{Notice, NoticeKind, Registry, Slot, short};
use crate::plugin::state_store::{StateLimits, StateScopes, StateStore};

/// An event that a stage could not process, with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Stage that failed.
    pub stage: String,
    /// Why.
    pub reason: String,
    /// The event as it entered the stage.
    pub event: Event,
}

/// Counters of one stage.
#[derive(Debug, Default, Clone, Serialize)]
pub struct StageStats {
    /// Batches handled.
    pub batches: u64,
    /// Events in.
    pub events_in: u64,
    /// Events out.
    pub events_out: u64,
    /// Events the plugin dropped.
    pub dropped: u64,
    /// Events the plugin modified in place.
    pub modified: u64,
    /// Events the plugin created (replace / split).
    pub created: u64,
    /// Batches that failed.
    pub failed_batches: u64,
    /// Events passed on unchanged because of a failure or quarantine.
    pub passed_through: u64,
    /// Events sent to the dead-letter output.
    pub dead_lettered: u64,
    /// Batches skipped because the plugin was quarantined or not loaded.
    pub skipped_batches: u64,
    /// Nanoseconds spent in successful plugin calls, encoding and applying
    /// included.
    pub busy_ns: u64,
    /// Events in successful calls (denominator of `ns_per_event`).
    pub processed_events: u64,
    /// Longest single call, successful or not.
    pub max_call_ns: u64,
    /// Times this stage quarantined its plugin.
    pub quarantines: u64,
    /// Rollbacks this stage triggered.
    pub rollbacks: u64,
    /// Instances created.
    pub instantiations: u64,
}

/// A stage's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    /// Calling its plugin.
    Active,
    /// Not calling its plugin until the backoff expires.
    Quarantined,
    /// Its plugin has no live version.
    Unloaded,
}

/// A stage's report.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// Stage name.
    pub name: String,
    /// Plugin name.
    pub plugin: String,
    /// Current condition.
    pub status: StageStatus,
    /// Live version's hash (short).
    pub hash: Option<String>,
    /// Live version's self-reported version.
    pub version: Option<String>,
    /// Mean cost of a successful call per event.
    pub ns_per_event: f64,
    /// Counters.
    #[serde(flatten)]
    pub stats: StageStats,
    /// Consecutive failures so far.
    pub consecutive_failures: u32,
}

struct Active {
    compiled: Arc<Compiled>,
    instance: Option<Instance>,
    /// Batches left before the version is trusted; 0 = trusted.
    probation_left: u32,
    /// Whether the slot knows this version proved itself.
    confirmed: bool,
}

/// One pipeline stage.
pub struct Stage {
    cfg: StageConfig,
    config_json: String,
    deadline: Duration,
    memory_limit: u64,
    slot: Arc<Slot>,
    registry: Arc<Registry>,
    active: Option<Active>,
    seen_generation: u64,
    consecutive_failures: u32,
    quarantined_until: Option<Instant>,
    backoff: Duration,
    encoder: Encoder,
    stats: StageStats,
    /// `[ingest]` bounds, which the events a plugin creates or edits must meet.
    limits: crate::ingest::Limits,
    /// The key-value store of the stage's state scope (`state`).
    state: Arc<StateStore>,
}

/// The result of running one batch through the pipeline.
#[derive(Debug, Default)]
pub struct BatchOutput {
    /// Events that came out of the last stage, in order.
    pub events: Vec<Event>,
    /// Events that failed in a dead-letter stage.
    pub dead_letters: Vec<DeadLetter>,
}

impl Stage {
    fn new(
        cfg: &StageConfig,
        config: &Config,
        registry: &Arc<Registry>,
        state: Arc<StateStore>,
    ) -> Self {
        Stage {
            config_json: cfg.config.to_string(),
            deadline: config.stage_deadline(cfg),
            memory_limit: config.stage_memory_limit(cfg),
            slot: registry.slot(&cfg.plugin),
            registry: registry.clone(),
            active: None,
            seen_generation: u64::MAX,
            consecutive_failures: 0,
            quarantined_until: None,
            backoff: registry.config().quarantine_backoff,
            encoder: Encoder::default(),
            stats: StageStats::default(),
            limits: config.ingest.limits(),
            state,
            cfg: cfg.clone(),
        }
    }

    /// Pick up a swapped, rolled-back or unloaded version at a batch boundary.
    fn sync_version(&mut self) {
        if self.slot.generation() == self.seen_generation {
            return;
        }
        let view = self.slot.view();
        self.seen_generation = view.generation;
        // A version that has not proven itself is on probation when there is
        // a known good one to fall back to.
        let probation = if view.has_previous && !view.confirmed {
            self.registry.config().probation_batches
        } else {
            0
        };
        self.active = view.current.map(|compiled| Active {
            compiled,
            instance: None,
            probation_left: probation,
            confirmed: view.confirmed,
        });
        // A new version starts with a clean record.
        self.consecutive_failures = 0;
        self.quarantined_until = None;
        self.backoff = self.registry.config().quarantine_backoff;
    }

    fn notice(&self, kind: NoticeKind, detail: String) {
        let (hash, version) = match &self.active {
            Some(a) => (
                Some(a.compiled.hash.clone()),
                Some(a.compiled.info.version.clone()),
            ),
            None => (None, None),
        };
        self.registry.notify(Notice {
            plugin: self.cfg.plugin.clone(),
            kind,
            hash,
            version,
            detail,
        });
    }

    /// Make sure the active version has a configured instance.
    fn ensure_instance(&mut self) -> Result<(), PluginError> {
        let Some(active) = self.active.as_mut() else {
            return Err(PluginError::Returned("no live version".into()));
        };
        if active.instance.is_none() {
            self.stats.instantiations += 1;
            active.instance = Some(self.registry.engine().instantiate(
                &active.compiled,
                self.slot.shared.clone(),
                self.state.clone(),
                self.memory_limit,
                &self.config_json,
                self.registry.config().compile_timeout,
                self.registry.config().max_log_records_per_call,
            )?);
        }
        Ok(())
    }

    /// Run one call on the active version; `Err` leaves `events` untouched.
    fn call(
        &mut self,
        events: Vec<Event>,
        out: &mut Vec<Event>,
    ) -> Result<(), (PluginError, Vec<Event>)> {
        let log_budget = self.registry.config().max_log_records_per_call;
        if let Err(e) = self.ensure_instance() {
            return Err((e, events));
        }
        let Some(active) = self.active.as_mut() else {
            return Err((PluginError::Returned("no live version".into()), events));
        };
        let Some(instance) = active.instance.as_mut() else {
            return Err((PluginError::Returned("no instance".into()), events));
        };
        let started = Instant::now();
        let batch = self.encoder.encode(&events);
        let result = instance.process(batch, self.deadline, log_budget);
        let n = events.len() as u64;
        let outcome = match result {
            Ok(processed) => match abi::apply(events, &processed, out, &self.limits) {
                Ok(applied) => {
                    self.stats.dropped += applied.dropped;
                    self.stats.modified += applied.modified;
                    self.stats.created += applied.created;
                    Ok(())
                }
                Err((e, events)) => Err((PluginError::from(e), events)),
            },
            Err(e) => Err((e, events)),
        };
        let elapsed = started.elapsed().as_nanos() as u64;
        self.stats.max_call_ns = self.stats.max_call_ns.max(elapsed);
        match &outcome {
            Ok(()) => {
                self.stats.busy_ns += elapsed;
                self.stats.processed_events += n;
                // The batch went through: its state writes become real.
                if let Some(i) = active.instance.as_mut() {
                    i.commit_state();
                }
            }
            // A failed batch leaves no state behind; a poisoned instance
            // takes its pending writes with it.
            Err((e, _)) if e.poisons_instance() => active.instance = None,
            Err(_) => {
                if let Some(i) = active.instance.as_mut() {
                    i.discard_state();
                }
            }
        }
        outcome
    }

    /// Run `events` through this stage, appending survivors to `out` and
    /// failures (under the dead-letter policy) to `dead`.
    pub fn process(
        &mut self,
        events: Vec<Event>,
        out: &mut Vec<Event>,
        dead: &mut Vec<DeadLetter>,
    ) {
        if events.is_empty() {
            // Nothing to do, and nothing to learn about the plugin: an empty
            // batch must not count towards probation or recovery.
            return;
        }
        self.sync_version();
        self.stats.batches += 1;
        self.stats.events_in += events.len() as u64;
        let before = out.len();
        self.run(events, out, dead);
        self.stats.events_out += (out.len() - before) as u64;
    }

    fn run(&mut self, events: Vec<Event>, out: &mut Vec<Event>, dead: &mut Vec<DeadLetter>) {
        if self.active.is_none() {
            self.stats.skipped_batches += 1;
            return self.fail_batch(events, "plugin not loaded", out, dead);
        }
        // Once the backoff is over the plugin gets one try (half-open).
        if self
            .quarantined_until
            .is_some_and(|until| Instant::now() < until)
        {
            self.stats.skipped_batches += 1;
            return self.fail_batch(events, "plugin quarantined", out, dead);
        }
        let (reason, events) = match self.call(events, out) {
            Ok(()) => return self.succeeded(),
            Err((err, events)) => {
                self.failed(&err);
                (err.to_string(), events)
            }
        };
        // A version on probation that fails is rolled back, and the batch is
        // retried on the last known good version.
        let bad = self
            .active
            .as_ref()
            .filter(|a| a.probation_left > 0)
            .map(|a| a.compiled.clone());
        let rolled_back =
            bad.is_some_and(|bad| self.registry.rollback(&self.cfg.plugin, &bad, &reason));
        if rolled_back {
            self.stats.rollbacks += 1;
            self.sync_version();
            if let Err((err, events)) = self.call(events, out) {
                self.failed(&err);
                let reason = err.to_string();
                return self.fail_batch(events, &reason, out, dead);
            }
            return self.succeeded();
        }
        self.fail_batch(events, &reason, out, dead);
    }

    fn succeeded(&mut self) {
        if self.quarantined_until.take().is_some() {
            self.notice(
                NoticeKind::Recovered,
                format!("stage {} calls it again", self.cfg.name),
            );
        }
        self.consecutive_failures = 0;
        self.backoff = self.registry.config().quarantine_backoff;
        if let Some(a) = self.active.as_mut() {
            a.probation_left = a.probation_left.saturating_sub(1);
            if a.probation_left == 0 && !a.confirmed {
                a.confirmed = true;
                self.slot.confirm(&a.compiled.hash);
            }
        }
    }

    fn failed(&mut self, err: &PluginError) {
        self.stats.failed_batches += 1;
        self.consecutive_failures += 1;
        self.slot.counters.failures.fetch_add(1, Ordering::Relaxed);
        let detail = format!("stage {}: {err}", self.cfg.name);
        self.slot.set_last_error(err.to_string());
        self.notice(NoticeKind::Failed, detail);
        let cfg = self.registry.config();
        let probation = self
            .active
            .as_ref()
            .is_some_and(|a| a.probation_left > 0 && self.slot.has_previous());
        if !probation && self.consecutive_failures >= cfg.quarantine_after {
            self.quarantined_until = Some(Instant::now() + self.backoff);
            self.stats.quarantines += 1;
            self.slot
                .counters
                .quarantines
                .fetch_add(1, Ordering::Relaxed);
            self.notice(
                NoticeKind::Quarantined,
                format!(
                    "stage {}: {} consecutive failures; retrying in {} ms",
                    self.cfg.name,
                    self.consecutive_failures,
                    self.backoff.as_millis()
                ),
            );
            self.backoff = (self.backoff * 2).min(cfg.quarantine_backoff_max);
        }
    }

    fn fail_batch(
        &mut self,
        events: Vec<Event>,
        reason: &str,
        out: &mut Vec<Event>,
        dead: &mut Vec<DeadLetter>,
    ) {
        match self.cfg.on_failure {
            FailurePolicy::PassThrough => {
                self.stats.passed_through += events.len() as u64;
                out.extend(events);
            }
            FailurePolicy::DeadLetter => {
                self.stats.dead_lettered += events.len() as u64;
                dead.extend(events.into_iter().map(|event| DeadLetter {
                    stage: self.cfg.name.clone(),
                    reason: reason.to_owned(),
                    event,
                }));
            }
        }
    }

    /// This stage's report.
    pub fn report(&self) -> StageReport {
        let status = if self.active.is_none() {
            StageStatus::Unloaded
        } else if self.quarantined_until.is_some() {
            StageStatus::Quarantined
        } else {
            StageStatus::Active
        };
        let ns_per_event = if self.stats.processed_events == 0 {
            0.0
        } else {
            self.stats.busy_ns as f64 / self.stats.processed_events as f64
        };
        StageReport {
            name: self.cfg.name.clone(),
            plugin: self.cfg.plugin.clone(),
            status,
            hash: self
                .active
                .as_ref()
                .map(|a| short(&a.compiled.hash).to_owned()),
            version: self
                .active
                .as_ref()
                .map(|a| a.compiled.info.version.clone()),
            ns_per_event,
            stats: self.stats.clone(),
            consecutive_failures: self.consecutive_failures,
        }
    }
}

/// A stage that cannot start.
#[derive(Debug, thiserror::Error)]
#[error("stage `{stage}` (plugin `{plugin}`): {error}")]
pub struct PipelineError {
    /// Stage name.
    pub stage: String,
    /// Plugin name.
    pub plugin: String,
    /// What went wrong (part of this error's message, so not also a source).
    pub error: PluginError,
}

/// Stages in order.
pub struct Pipeline {
    stages: Vec<Stage>,
    registry: Arc<Registry>,
}

impl Pipeline {
    /// Build the stages `config` lists, on plugins from `registry`, and
    /// configure every plugin that is already loaded, so a configuration it
    /// rejects is reported now rather than at the first batch. A plugin whose
    /// file is not there yet is not an error: its stage applies its failure
    /// policy until the file arrives.
    pub fn new(config: &Config, registry: Arc<Registry>) -> Result<Self, PipelineError> {
        let mut stages = Vec::with_capacity(config.stages.len());
        let mut scopes = StateScopes::default();
        for cfg in &config.stages {
            let state = scopes.store(&cfg.state, StateLimits::from(registry.config()));
            let mut stage = Stage::new(cfg, config, &registry, state);
            stage.sync_version();
            if stage.active.is_none() {
                tracing::warn!(
                    stage = %cfg.name,
                    plugin = %cfg.plugin,
                    dir = %registry.dir().display(),
                    "plugin not loaded; the stage applies its failure policy until it is"
                );
            } else if let Err(source) = stage.ensure_instance() {
                return Err(PipelineError {
                    stage: cfg.name.clone(),
                    plugin: cfg.plugin.clone(),
                    error: source,
                });
            }
            stages.push(stage);
        }
        Ok(Pipeline { stages, registry })
    }

    /// The registry the stages draw plugins from.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Run one batch through every stage.
    pub fn process(&mut self, events: Vec<Event>) -> BatchOutput {
        let mut dead_letters = Vec::new();
        let mut current = events;
        for stage in &mut self.stages {
            let mut next = Vec::with_capacity(current.len());
            stage.process(current, &mut next, &mut dead_letters);
            current = next;
        }
        BatchOutput {
            events: current,
            dead_letters,
        }
    }

    /// A report per stage.
    pub fn report(&self) -> Vec<StageReport> {
        self.stages.iter().map(Stage::report).collect()
    }
}
