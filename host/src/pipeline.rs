//! The pipeline: stages in configured order, each running one plugin over
//! whole batches. Part of the engine: it changes only through the engine's
//! inputs.
//!
//! A stage owns one instance of its plugin. Which version it runs is the
//! engine's [`Selection`], changed by plugin inputs; a stage picks a new
//! version up between batches, so during a batch nothing changes. When a call fails the batch follows the stage's failure
//! policy (pass through unchanged, or dead-letter) — never silently lost —
//! and after `quarantine_after` consecutive failures the stage stops calling
//! the plugin for a backoff (in engine time) that doubles up to a ceiling. A version that
//! fails within its first `probation_batches` is rolled back and the batch is
//! retried on the version it replaced.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{Config, FailurePolicy, StageConfig};
use crate::event::Event;
use crate::plugin::PluginError;
use crate::plugin::abi::{self, Columns};
use crate::plugin::engine::{Compiled, Instance};
use crate::plugin::meter::{Latency, StageKind};
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
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
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
    /// Events lost to a panic in the host's own code while applying a
    /// plugin's result (a bug; should stay 0).
    pub lost: u64,
}

/// Log a panic in the host's side of a stage call; the call's error.
fn host_panic(stage: &str, panic: &(dyn std::any::Any + Send)) -> PluginError {
    let why = crate::window::panic_message(panic);
    tracing::error!(
        stage,
        panic = %why,
        "the host panicked running a stage (a bug: please report it); the call counts as failed"
    );
    PluginError::HostPanic(why)
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
    /// What kind of stage (not serialized: reports of `eddy pipe` and
    /// replays list processor stages only).
    #[serde(skip)]
    pub kind: StageKind,
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
    /// Call durations since the stage started in this process (`/metrics`
    /// only).
    #[serde(skip)]
    pub latency: Latency,
}

struct Active {
    compiled: Arc<Compiled>,
    instance: Option<Instance>,
    /// Batches left before the version is trusted; 0 = trusted.
    probation_left: u32,
}

/// One pipeline stage.
pub struct Stage {
    cfg: StageConfig,
    /// Position in the pipeline (seeds its instances' randomness).
    index: usize,
    config_json: String,
    deadline: Duration,
    memory_limit: u64,
    slot: Arc<Slot>,
    registry: Arc<Registry>,
    active: Option<Active>,
    /// The version a failing new one is rolled back to: the last one that
    /// finished its probation here.
    last_good: Option<Arc<Compiled>>,
    consecutive_failures: u32,
    /// Engine time (ms) until which a quarantined plugin is not called.
    quarantined_until: Option<i64>,
    backoff_ms: i64,
    stats: StageStats,
    /// Call durations. Not engine state (it is timing, like `busy_ns`, and
    /// starts empty after a restore): `/metrics` only.
    latency: Latency,
    /// Instances made so far (with the engine's seed, each one's random
    /// seed: the same in a replay).
    instances_made: u64,
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

/// Milliseconds of a duration, for engine-time arithmetic.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What a stage needs from the pipeline while it runs a batch.
struct Run<'a> {
    /// Engine time now (ms): quarantine backoff is measured in it.
    now: i64,
    /// The engine's seed, for instances' random sources.
    seed: u64,
    /// Lifecycle notices of this batch, for the `plugins` channel.
    notices: &'a mut Vec<Notice>,
    /// Versions selected per plugin (a rollback changes them).
    selection: &'a mut Selection,
}

impl Stage {
    fn new(
        cfg: &StageConfig,
        index: usize,
        config: &Config,
        registry: &Arc<Registry>,
        state: Arc<StateStore>,
    ) -> Self {
        Stage {
            config_json: cfg.config.to_string(),
            index,
            deadline: config.stage_deadline(cfg),
            memory_limit: config.stage_memory_limit(cfg),
            slot: registry.slot(&cfg.plugin),
            registry: registry.clone(),
            active: None,
            last_good: None,
            consecutive_failures: 0,
            quarantined_until: None,
            backoff_ms: ms(registry.config().quarantine_backoff),
            stats: StageStats::default(),
            latency: Latency::default(),
            instances_made: 0,
            limits: config.ingest.limits(),
            state,
            cfg: cfg.clone(),
        }
    }

    /// Pick up the selected version of this stage's plugin at a batch
    /// boundary: a swap, a rollback or an unload.
    fn sync_version(&mut self, selection: &Selection) {
        let selected = selection.get(&self.cfg.plugin);
        let running = self.active.as_ref().map(|a| a.compiled.hash.as_str());
        if selected.map(|c| c.hash.as_str()) == running {
            return;
        }
        // A version that has not proven itself here is on probation when
        // there is a known good one to fall back to.
        self.active = selected.map(|compiled| Active {
            probation_left: match &self.last_good {
                Some(good) if good.hash != compiled.hash => {
                    self.registry.config().probation_batches
                }
                _ => 0,
            },
            compiled: compiled.clone(),
            instance: None,
        });
        // A new version starts with a clean record.
        self.consecutive_failures = 0;
        self.quarantined_until = None;
        self.backoff_ms = ms(self.registry.config().quarantine_backoff);
    }

    fn notice(&self, run: &mut Run<'_>, kind: NoticeKind, detail: String) {
        let (hash, version) = match &self.active {
            Some(a) => (
                Some(a.compiled.hash.clone()),
                Some(a.compiled.info.version.clone()),
            ),
            None => (None, None),
        };
        let notice = Notice {
            plugin: self.cfg.plugin.clone(),
            kind,
            hash,
            version,
            detail,
        };
        self.registry.log_notice(&notice);
        run.notices.push(notice);
    }

    /// Make sure the active version has a configured instance.
    fn ensure_instance(&mut self, seed: u64) -> Result<(), PluginError> {
        let Some(active) = self.active.as_mut() else {
            return Err(PluginError::Returned("no live version".into()));
        };
        if active.instance.is_none() {
            self.stats.instantiations += 1;
            // Each instance's randomness is a function of the engine's seed,
            // the stage and how many instances it made before: a replay
            // draws the same numbers.
            let instance_seed = seed
                ^ (self.index as u64).rotate_left(32)
                ^ self.instances_made.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            self.instances_made += 1;
            active.instance = Some(self.registry.engine().instantiate(
                &active.compiled,
                self.slot.shared.clone(),
                self.state.clone(),
                self.memory_limit,
                &self.config_json,
                self.registry.config().compile_timeout,
                self.registry.config().max_log_records_per_call,
                instance_seed,
            )?);
        }
        Ok(())
    }

    /// Run one call on the active version, applying its result to
    /// `events` in place (and handing it to `columns`); `Err` leaves
    /// `events` untouched, unless the host itself failed applying it (then
    /// they are gone, and counted as lost).
    fn call(
        &mut self,
        seed: u64,
        events: &mut Vec<Event>,
        columns: &mut Columns,
    ) -> Result<(), PluginError> {
        let log_budget = self.registry.config().max_log_records_per_call;
        self.ensure_instance(seed)?;
        let Some(active) = self.active.as_mut() else {
            return Err(PluginError::Returned("no live version".into()));
        };
        let Some(instance) = active.instance.as_mut() else {
            return Err(PluginError::Returned("no instance".into()));
        };
        // Timing is for the stage's statistics only; nothing it measures
        // changes what the stage produces.
        let started = Instant::now();
        let n = events.len() as u64;
        // A panic in the host's side of the call (encoding, applying the
        // result: a bug) fails the call like a trap would, instead of taking
        // the batch down with it.
        let deadline = self.deadline;
        let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let batch = columns.batch(events);
            instance.process(batch, deadline, log_budget)
        }));
        let outcome = match called {
            Err(panic) => {
                columns.invalidate();
                Err(host_panic(&self.cfg.name, &*panic))
            }
            Ok(Err(e)) => Err(e),
            Ok(Ok(processed)) => {
                let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    abi::apply(events, &processed, &self.limits)
                }));
                match applied {
                    Ok(Ok(applied)) => {
                        columns.applied(processed);
                        Ok(applied)
                    }
                    Ok(Err(e)) => Err(PluginError::from(e)),
                    Err(panic) => {
                        // The events were half applied: gone with the
                        // panic, counted, never silently.
                        events.clear();
                        columns.invalidate();
                        self.stats.lost += n;
                        Err(host_panic(&self.cfg.name, &*panic))
                    }
                }
            }
        };
        let elapsed = started.elapsed().as_nanos() as u64;
        self.stats.max_call_ns = self.stats.max_call_ns.max(elapsed);
        self.latency.record(elapsed);
        match outcome {
            Ok(applied) => {
                self.stats.dropped += applied.dropped;
                self.stats.modified += applied.modified;
                self.stats.created += applied.created;
                self.stats.busy_ns += elapsed;
                self.stats.processed_events += n;
                // The batch went through: its state writes become real.
                instance.commit_state();
                Ok(())
            }
            Err(e) => {
                // A failed batch leaves no state behind; a poisoned instance
                // (or one the host panicked on) takes its pending writes
                // with it.
                if e.poisons_instance() || matches!(e, PluginError::HostPanic(_)) {
                    active.instance = None;
                } else {
                    instance.discard_state();
                }
                Err(e)
            }
        }
    }

    /// Run `events` through this stage in place: survivors stay in
    /// `events`, failures (under the dead-letter policy) go to `dead`.
    fn process(
        &mut self,
        run: &mut Run<'_>,
        events: &mut Vec<Event>,
        columns: &mut Columns,
        dead: &mut Vec<DeadLetter>,
    ) {
        if events.is_empty() {
            // Nothing to do, and nothing to learn about the plugin: an empty
            // batch must not count towards probation or recovery.
            return;
        }
        self.sync_version(run.selection);
        self.stats.batches += 1;
        self.stats.events_in += events.len() as u64;
        self.run(run, events, columns, dead);
        self.stats.events_out += events.len() as u64;
    }

    fn run(
        &mut self,
        run: &mut Run<'_>,
        events: &mut Vec<Event>,
        columns: &mut Columns,
        dead: &mut Vec<DeadLetter>,
    ) {
        if self.active.is_none() {
            self.stats.skipped_batches += 1;
            return self.fail_batch(events, columns, "plugin not loaded", dead);
        }
        // Once the backoff is over the plugin gets one try (half-open).
        if self.quarantined_until.is_some_and(|until| run.now < until) {
            self.stats.skipped_batches += 1;
            return self.fail_batch(events, columns, "plugin quarantined", dead);
        }
        let reason = match self.call(run.seed, events, columns) {
            Ok(()) => return self.succeeded(run),
            Err(err) => {
                self.failed(run, &err);
                err.to_string()
            }
        };
        // A version on probation that fails is rolled back, and the batch is
        // retried on the last known good version.
        let bad = self
            .active
            .as_ref()
            .filter(|a| a.probation_left > 0)
            .map(|a| a.compiled.clone());
        if let (Some(bad), Some(good)) = (bad, self.last_good.clone()) {
            self.stats.rollbacks += 1;
            run.selection.roll_back(&self.cfg.plugin, &bad, good);
            // The control plane (status, refusing these bytes again, the
            // notice on the `plugins` channel) hears of it too.
            self.registry.rollback(&self.cfg.plugin, &bad, &reason);
            self.sync_version(run.selection);
            if let Err(err) = self.call(run.seed, events, columns) {
                self.failed(run, &err);
                let reason = err.to_string();
                return self.fail_batch(events, columns, &reason, dead);
            }
            return self.succeeded(run);
        }
        self.fail_batch(events, columns, &reason, dead);
    }

    fn succeeded(&mut self, run: &mut Run<'_>) {
        if self.quarantined_until.take().is_some() {
            let detail = format!("stage {} calls it again", self.cfg.name);
            self.notice(run, NoticeKind::Recovered, detail);
        }
        self.consecutive_failures = 0;
        self.backoff_ms = ms(self.registry.config().quarantine_backoff);
        if let Some(a) = self.active.as_mut() {
            a.probation_left = a.probation_left.saturating_sub(1);
            let proven = a.probation_left == 0
                && self
                    .last_good
                    .as_ref()
                    .is_none_or(|g| g.hash != a.compiled.hash);
            if proven {
                self.last_good = Some(a.compiled.clone());
                self.slot.confirm(&a.compiled.hash);
            }
        }
    }

    fn failed(&mut self, run: &mut Run<'_>, err: &PluginError) {
        self.stats.failed_batches += 1;
        self.consecutive_failures += 1;
        self.slot.counters.failures.fetch_add(1, Ordering::Relaxed);
        let detail = format!("stage {}: {err}", self.cfg.name);
        self.slot.set_last_error(err.to_string());
        self.notice(run, NoticeKind::Failed, detail);
        let cfg = self.registry.config();
        let probation = self
            .active
            .as_ref()
            .is_some_and(|a| a.probation_left > 0 && self.last_good.is_some());
        if !probation && self.consecutive_failures >= cfg.quarantine_after {
            self.quarantined_until = Some(run.now.saturating_add(self.backoff_ms));
            self.stats.quarantines += 1;
            self.slot
                .counters
                .quarantines
                .fetch_add(1, Ordering::Relaxed);
            let detail = format!(
                "stage {}: {} consecutive failures; retrying in {} ms",
                self.cfg.name, self.consecutive_failures, self.backoff_ms
            );
            self.notice(run, NoticeKind::Quarantined, detail);
            self.backoff_ms = self
                .backoff_ms
                .saturating_mul(2)
                .min(ms(cfg.quarantine_backoff_max));
        }
    }

    fn fail_batch(
        &mut self,
        events: &mut Vec<Event>,
        columns: &mut Columns,
        reason: &str,
        dead: &mut Vec<DeadLetter>,
    ) {
        match self.cfg.on_failure {
            // The events go on as they came: so do their columns.
            FailurePolicy::PassThrough => {
                self.stats.passed_through += events.len() as u64;
            }
            FailurePolicy::DeadLetter => {
                self.stats.dead_lettered += events.len() as u64;
                columns.invalidate();
                dead.extend(events.drain(..).map(|event| DeadLetter {
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
            kind: StageKind::Processor,
            latency: self.latency.clone(),
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

/// The version each plugin runs, as the engine's inputs selected it.
#[derive(Default)]
pub struct Selection {
    versions: BTreeMap<String, Arc<Compiled>>,
    /// Versions rolled back (by content hash): not selected again.
    rejected: BTreeSet<String>,
}

impl Selection {
    fn get(&self, plugin: &str) -> Option<&Arc<Compiled>> {
        self.versions.get(plugin)
    }

    fn roll_back(&mut self, plugin: &str, bad: &Compiled, good: Arc<Compiled>) {
        self.rejected.insert(bad.hash.clone());
        self.versions.insert(plugin.to_owned(), good);
    }

    /// The selected version's hash of every plugin.
    pub fn hashes(&self) -> BTreeMap<String, String> {
        self.versions
            .iter()
            .map(|(k, v)| (k.clone(), v.hash.clone()))
            .collect()
    }
}

/// Stages in order.
pub struct Pipeline {
    stages: Vec<Stage>,
    registry: Arc<Registry>,
    selection: Selection,
    /// The stages' key-value stores, by state scope.
    scopes: StateScopes,
    /// The running batch's columns, for the stages' plugins.
    columns: Columns,
}

impl Pipeline {
    /// Build the stages `config` lists, on plugins from `registry`, running
    /// the versions `versions` names (plugin → content hash), and configure
    /// every stage whose plugin has a version, so a configuration a plugin
    /// rejects is reported now rather than at the first batch. A plugin
    /// without a version is not an error: its stage applies its failure
    /// policy until one is selected.
    pub fn new(
        config: &Config,
        registry: Arc<Registry>,
        versions: &BTreeMap<String, String>,
        seed: u64,
    ) -> Result<Self, PipelineError> {
        let mut pipeline = Pipeline {
            stages: Vec::with_capacity(config.stages.len()),
            registry: registry.clone(),
            selection: Selection::default(),
            scopes: StateScopes::default(),
            columns: Columns::default(),
        };
        for (plugin, hash) in versions {
            pipeline.select(plugin, Some(hash));
        }
        for (index, cfg) in config.stages.iter().enumerate() {
            let state = pipeline
                .scopes
                .store(&cfg.state, StateLimits::from(registry.config()));
            let mut stage = Stage::new(cfg, index, config, &registry, state);
            stage.sync_version(&pipeline.selection);
            if stage.active.is_none() {
                tracing::warn!(
                    stage = %cfg.name,
                    plugin = %cfg.plugin,
                    dir = %registry.dir().display(),
                    "plugin not loaded; the stage applies its failure policy until it is"
                );
            } else if let Err(source) = stage.ensure_instance(seed) {
                return Err(PipelineError {
                    stage: cfg.name.clone(),
                    plugin: cfg.plugin.clone(),
                    error: source,
                });
            }
            pipeline.stages.push(stage);
        }
        Ok(pipeline)
    }

    /// The stages' configurations, in order.
    pub fn stage_configs(&self) -> Vec<&StageConfig> {
        self.stages.iter().map(|s| &s.cfg).collect()
    }

    /// Take the stages of `config` (a configuration reload): a stage that
    /// keeps its name and plugin keeps its version, failure record and
    /// statistics; every state scope still in use keeps its entries. On an
    /// error (a plugin refusing its new configuration) nothing changes.
    pub fn reconfigure(&mut self, config: &Config, seed: u64) -> Result<(), PipelineError> {
        let mut saved = self.snapshot();
        let mut fresh = Pipeline::new(config, self.registry.clone(), &saved.selected, seed)?;
        saved.stages.retain(|s| {
            fresh
                .stages
                .iter()
                .any(|f| f.cfg.name == s.name && f.cfg.plugin == s.plugin)
        });
        let stage = |e: crate::engine::state::SnapshotError| PipelineError {
            stage: "(reload)".into(),
            plugin: String::new(),
            error: PluginError::HostPanic(format!("carrying stage state over: {e}")),
        };
        // Scopes no stage uses any more (a pattern plugin's) keep their
        // store: whoever holds it keeps writing to the one snapshotted.
        for (scope, store) in self.scopes.iter() {
            fresh.scopes.adopt(scope, store.clone());
        }
        fresh
            .restore(saved, &crate::window::state::KeyGroupSet::all())
            .map_err(stage)?;
        *self = fresh;
        Ok(())
    }

    /// The host-backed state store of `scope` (created empty on first use):
    /// pattern plugins keep theirs here, so it is snapshotted with the
    /// stages' and survives swaps and restarts.
    pub fn state_store(&mut self, scope: &str) -> Arc<StateStore> {
        let limits = StateLimits::from(self.registry.config());
        self.scopes.store(scope, limits)
    }

    /// The registry the stages draw plugins from.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Select `hash` (or nothing) as `plugin`'s version from the next batch
    /// on. False if the registry does not have that version (it is then
    /// left as it was) or it was rolled back here before.
    pub fn select(&mut self, plugin: &str, hash: Option<&str>) -> bool {
        match hash {
            None => {
                self.selection.versions.remove(plugin);
                true
            }
            Some(h) if self.selection.rejected.contains(h) => false,
            Some(h) => match self.registry.version(plugin, h) {
                Some(compiled) => {
                    self.selection.versions.insert(plugin.to_owned(), compiled);
                    true
                }
                None => {
                    tracing::error!(
                        plugin,
                        hash = short(h),
                        "the selected plugin version is not available; the stages keep what they run"
                    );
                    false
                }
            },
        }
    }

    /// The versions selected now.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// Run one batch through every stage at engine time `now` (ms);
    /// lifecycle notices it caused are appended to `notices`.
    pub fn process(
        &mut self,
        events: Vec<Event>,
        now: i64,
        seed: u64,
        notices: &mut Vec<Notice>,
    ) -> BatchOutput {
        let mut dead_letters = Vec::new();
        let mut current = events;
        let mut run = Run {
            now,
            seed,
            notices,
            selection: &mut self.selection,
        };
        // The batch is encoded for the first stage, then its columns follow
        // each stage's result (see `Columns`).
        self.columns.invalidate();
        for stage in &mut self.stages {
            stage.process(&mut run, &mut current, &mut self.columns, &mut dead_letters);
        }
        self.columns.invalidate();
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

/// A stage's state in a snapshot.
#[derive(Debug, Serialize, Deserialize)]
struct StageState {
    name: String,
    plugin: String,
    active: Option<String>,
    probation_left: u32,
    last_good: Option<String>,
    consecutive_failures: u32,
    quarantined_until: Option<i64>,
    backoff_ms: i64,
    instances_made: u64,
    stats: StageStats,
}

/// A state scope's key-value store in a snapshot: `(key group, key, value)`,
/// sorted.
#[derive(Debug, Serialize, Deserialize)]
struct ScopeState {
    scope: String,
    entries: Vec<(u16, String, Vec<u8>)>,
    /// The entries as the engine thread took them (shared, unsorted), until
    /// [`PipelineState::canonicalize`] turns them into `entries`.
    #[serde(skip)]
    taken: crate::plugin::state_store::SharedEntries,
}

/// Everything the pipeline holds, for the engine's snapshot. Plugin
/// instances are not part of it: they are disposable, and a restored stage
/// makes a new one (whatever a plugin must keep belongs in its state store).
#[derive(Debug, Serialize, Deserialize)]
pub struct PipelineState {
    selected: BTreeMap<String, String>,
    rejected: BTreeSet<String>,
    stages: Vec<StageState>,
    scopes: Vec<ScopeState>,
}

impl PipelineState {
    /// Put the state stores' entries as they were taken into their saved
    /// form: with their key groups, sorted, so equal stores give equal
    /// bytes. Done where the state is encoded, off the engine thread.
    pub fn canonicalize(&mut self) {
        for scope in &mut self.scopes {
            let taken = std::mem::take(&mut scope.taken);
            if taken.is_empty() {
                continue;
            }
            scope.entries.reserve(taken.len());
            scope.entries.extend(taken.into_iter().map(|(k, v)| {
                (
                    crate::window::snapshot::string_key_group(&k),
                    k.to_string(),
                    v.to_vec(),
                )
            }));
            scope.entries.sort_unstable();
        }
    }

    /// The version each plugin ran (name → content hash).
    pub fn selected(&self) -> &BTreeMap<String, String> {
        &self.selected
    }
}

impl Pipeline {
    /// Everything the pipeline holds.
    pub fn snapshot(&self) -> PipelineState {
        PipelineState {
            selected: self.selection.hashes(),
            rejected: self.selection.rejected.clone(),
            stages: self
                .stages
                .iter()
                .map(|s| StageState {
                    name: s.cfg.name.clone(),
                    plugin: s.cfg.plugin.clone(),
                    active: s.active.as_ref().map(|a| a.compiled.hash.clone()),
                    probation_left: s.active.as_ref().map_or(0, |a| a.probation_left),
                    last_good: s.last_good.as_ref().map(|c| c.hash.clone()),
                    consecutive_failures: s.consecutive_failures,
                    quarantined_until: s.quarantined_until,
                    backoff_ms: s.backoff_ms,
                    instances_made: s.instances_made,
                    stats: s.stats.clone(),
                })
                .collect(),
            scopes: self
                .scopes
                .iter()
                .map(|(scope, store)| ScopeState {
                    scope: scope.to_owned(),
                    entries: Vec::new(),
                    taken: store.entries(),
                })
                .collect(),
        }
    }

    /// Continue from `state`, keeping the plugin state keys of `groups`.
    /// Every version the state names must be available in the registry.
    pub fn restore(
        &mut self,
        mut state: PipelineState,
        groups: &crate::window::state::KeyGroupSet,
    ) -> Result<(), crate::engine::state::SnapshotError> {
        use crate::engine::state::SnapshotError;
        // A state straight from `snapshot` (a reload) holds its stores'
        // entries as taken.
        state.canonicalize();
        let version = |plugin: &str, hash: &str| {
            self.registry.version(plugin, hash).ok_or_else(|| {
                SnapshotError::Mismatch(format!(
                    "plugin `{plugin}` ran version {} when the snapshot was taken, and that \
                     version is not loaded; put its file in the plugins folder",
                    short(hash)
                ))
            })
        };
        let mut selection = Selection {
            versions: BTreeMap::new(),
            rejected: state.rejected,
        };
        for (plugin, hash) in &state.selected {
            selection
                .versions
                .insert(plugin.clone(), version(plugin, hash)?);
        }
        let mut stages = Vec::new();
        for saved in state.stages {
            let Some(i) = self.stages.iter().position(|s| s.cfg.name == saved.name) else {
                tracing::warn!(stage = %saved.name, "the snapshot has a stage that is no longer configured; its state is dropped");
                continue;
            };
            if self.stages[i].cfg.plugin != saved.plugin {
                return Err(SnapshotError::Mismatch(format!(
                    "stage `{}` ran plugin `{}` when the snapshot was taken and runs `{}` now",
                    saved.name, saved.plugin, self.stages[i].cfg.plugin
                )));
            }
            let active = match &saved.active {
                Some(h) => Some(version(&saved.plugin, h)?),
                None => None,
            };
            let last_good = saved
                .last_good
                .as_ref()
                .and_then(|h| self.registry.version(&saved.plugin, h));
            stages.push((i, saved, active, last_good));
        }
        // Everything checked: apply.
        self.selection = selection;
        for (i, saved, active, last_good) in stages {
            let stage = &mut self.stages[i];
            stage.active = active.map(|compiled| Active {
                compiled,
                instance: None,
                probation_left: saved.probation_left,
            });
            stage.last_good = last_good;
            stage.consecutive_failures = saved.consecutive_failures;
            stage.quarantined_until = saved.quarantined_until;
            stage.backoff_ms = saved.backoff_ms;
            stage.instances_made = saved.instances_made;
            stage.stats = saved.stats;
        }
        for saved in state.scopes {
            match self.scopes.get(&saved.scope) {
                Some(store) => store.restore(
                    saved
                        .entries
                        .into_iter()
                        .filter(|(kg, _, _)| groups.contains(*kg))
                        .map(|(_, k, v)| (k, v))
                        .collect(),
                ),
                None => tracing::warn!(
                    scope = %saved.scope,
                    "the snapshot has plugin state of a scope no stage uses now; it is dropped"
                ),
            }
        }
        Ok(())
    }
}
