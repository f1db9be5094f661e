//! The engine: the one deterministic core every way of running eddy drives.
//!
//! An [`Engine`] owns the stages (the plugin [`Pipeline`]), the event-time
//! service ([`time::EventTime`]), the windows and live views, and the
//! channels' sequence numbers, on one thread. It changes only through
//! [`Input`]s — batches of events with the wall time they arrived at, ticks
//! of wall time, plugin version changes, the end of the input — and hands
//! what each input produced, numbered, to one [`Sink`]. Nothing inside it
//! reads the clock (stage timings for statistics aside), so the same inputs
//! give the same outputs, byte for byte, however they are batched and
//! whichever driver feeds them:
//!
//! - `eddy serve` ([`crate::runner`]): HTTP requests become batches stamped
//!   with the wall time once, a ticker adds ticks, the plugins folder's
//!   changes become plugin inputs; `--record FILE` writes them all down;
//! - `eddy pipe` ([`crate::pipe`]): lines of a file become batches, with
//!   wall time from `{"$wall": MS}` lines (`--clock virtual`) or the
//!   machine's clock; `--replay FILE` feeds a record instead;
//! - `eddy plugin test` / `diff` ([`crate::devtools::replay`]).
//!
//! Its state — windows with their accumulators and history, live views,
//! plugin key-value stores, event time, sequence numbers, counters —
//! snapshots and restores in a versioned format ([`state`]), so a restored
//! engine continues exactly where the snapshot was taken.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub mod alerts;
mod dedup;
pub mod input;
pub mod output;
pub mod plugin_alerts;
pub mod plugin_patterns;
pub mod state;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
pub mod time;

pub use input::{
    Batch, Input, KafkaBatch, PartitionOffset, PluginChange, Reconfigure, Rejected, VersionChange,
};
pub use output::{Emitted, Sequencer, Sink};
pub use state::EngineState;

use crate::config::Config;
use crate::event::Event;
use crate::pattern::{PatternOutput, Patterns};
use crate::pipeline::{Pipeline, PipelineError, StageReport};
use crate::plugin::Registry;
use crate::plugin::clock::VirtualClock;
use crate::plugin::registry::Notice;
use crate::window::state::KeyGroupSet;
use crate::window::{self, Windows};
use time::{EventTime, SourceId};

/// Pattern outputs handed to the sink at a time when the input ends (most
/// partial matches may time out then: see [`Patterns::finish_some`]).
const FINISH_PART: usize = 4_096;

/// What a fresh engine starts from besides its configuration (all of it is
/// in a record's header, so a replay starts the same way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// The first sequence number of every channel. `eddy serve` starts
    /// above anything an earlier run could have published (the start time
    /// in microseconds), so a client resuming with a number from before a
    /// restart is told it is too old rather than handed other messages under
    /// the same numbers. A restored engine continues from its snapshot.
    pub first_seq: u64,
    /// Seed of the plugins' random sources.
    pub seed: u64,
    /// The version each plugin runs at the start (name → content hash).
    pub plugins: BTreeMap<String, String>,
}

/// The engine's own counters (part of its state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Inputs applied.
    pub inputs: u64,
    /// Batches applied.
    pub batches: u64,
    /// Events that came in.
    pub events_in: u64,
    /// Events published on `events` (after the stages).
    pub published: u64,
    /// Events the stages dropped (input minus output minus dead letters;
    /// splits add to the output).
    pub dropped: u64,
    /// Events sent to `dead-letters`.
    pub dead_lettered: u64,
    /// Window results published.
    pub window_results: u64,
    /// Events windows reported late (or future).
    pub late_events: u64,
    /// Pattern matches and timeouts published.
    pub pattern_results: u64,
    /// Events patterns reported late (or future).
    pub pattern_late: u64,
    /// Events dropped as duplicates (an id seen within the dedup horizon).
    pub duplicates: u64,
    /// Alert state transitions published.
    pub alert_transitions: u64,
}

/// The core. See the module documentation.
pub struct Engine {
    pipeline: Pipeline,
    time: EventTime,
    windows: Windows,
    window_names: Vec<String>,
    patterns: Patterns,
    seq: Sequencer,
    counters: Counters,
    /// Where each source's log stands (see [`Batch::position`]).
    positions: BTreeMap<SourceId, u64>,
    /// Where each Kafka partition stands: the next offset after the
    /// records applied (see [`KafkaBatch`]).
    kafka_offsets: KafkaOffsets,
    /// The last Kafka batch was skipped (see [`Engine::take_kafka_skipped`]);
    /// not state: the driver reads it after each input.
    kafka_skipped: bool,
    seed: u64,
    clock: Arc<VirtualClock>,
    /// What the last configuration reload changed, or why it failed.
    last_reconfigure: Option<Result<Vec<String>, String>>,
    /// The configuration (for pattern plugins' defaults).
    config: Config,
    /// The plugins' registry (pattern plugins' instances).
    registry: Arc<Registry>,
    /// Event ids seen recently (off unless a driver turns it on).
    dedup: dedup::Dedup,
    /// Alert rules over the windows' and patterns' results.
    alerts: alerts::Alerts,
}

impl Engine {
    /// A fresh engine for `config`, drawing plugins from `registry` (whose
    /// plugin engine must read `clock`).
    pub fn new(
        config: &Config,
        registry: Arc<Registry>,
        clock: Arc<VirtualClock>,
        options: &EngineOptions,
    ) -> Result<Engine, EngineError> {
        let mut pipeline = Pipeline::new(config, registry.clone(), &options.plugins, options.seed)?;
        let mut windows = Windows::with_live(&config.windows, config.live)
            .map_err(|e| EngineError::Windows(format!("{e:#}")))?;
        windows.set_producer(window::merge::producer_id(options.seed));
        let window_names = windows.names();
        let mut patterns =
            Patterns::new(&config.patterns).map_err(|e| EngineError::Patterns(e.to_string()))?;
        for (plugin, hash) in &options.plugins {
            if plugin_patterns::is_pattern(&registry, plugin, hash) {
                let made = plugin_patterns::instantiate(
                    &registry,
                    &mut pipeline,
                    config,
                    plugin,
                    hash,
                    options.seed,
                )
                .and_then(|(p, c)| {
                    patterns
                        .add(p, Some(Box::new(c)))
                        .map_err(|e| e.to_string())
                });
                if let Err(e) = made {
                    tracing::warn!(plugin = %plugin, error = %e, "pattern plugin not started");
                }
            }
        }
        let mut alerts = alerts::Alerts::new(config);
        let running = patterns.names();
        for rule in &config.alert_plugins {
            let made = plugin_alerts::instantiate(
                &registry,
                &mut pipeline,
                config,
                &running,
                rule,
                options.plugins.get(&rule.plugin).map(String::as_str),
                options.seed,
            )
            .map_err(EngineError::Alerts)?;
            alerts.set_plugin_rule(
                rule.spec.clone(),
                Box::new(made.evaluator),
                made.interval_ms,
                made.bound_ms,
                &mut Vec::new(),
            );
        }
        Ok(Engine {
            patterns,
            pipeline,
            time: EventTime::new(config.time),
            seq: Sequencer::new(options.first_seq.max(1), window_names.len()),
            windows,
            window_names,
            counters: Counters::default(),
            positions: BTreeMap::new(),
            kafka_offsets: KafkaOffsets::new(),
            kafka_skipped: false,
            seed: options.seed,
            clock,
            last_reconfigure: None,
            config: config.clone(),
            registry,
            dedup: dedup::Dedup::default(),
            alerts,
        })
    }

    /// Count a pattern output, show it to the alert rules, number it and
    /// hand it to `sink`.
    fn publish_pattern(&mut self, output: PatternOutput, sink: &mut dyn Sink) {
        match &output {
            PatternOutput::Result(_) => self.counters.pattern_results += 1,
            PatternOutput::Late { .. } => self.counters.pattern_late += 1,
        }
        self.alerts.observe_pattern(&output);
        let seq = self.seq.pattern(&output);
        sink.emit(Emitted::Pattern { seq, output });
    }

    /// Apply one input and hand what it produced to `sink`, each output
    /// numbered on its channel. Outputs reach the sink only once the whole
    /// input is applied.
    pub fn step(&mut self, input: Input, sink: &mut dyn Sink) {
        let mut notices = Vec::new();
        let mut windows_out = Vec::new();
        let mut patterns_out = Vec::new();
        let mut ordered: Vec<Operated> = Vec::new();
        let mut produced = Produced::default();
        let mut alert_events = Vec::new();
        // At the end of the input, the patterns' timers fire after the
        // other outputs, handed on a part at a time.
        let mut finishing_at = None;
        let input = match input {
            Input::Kafka(k) => self.kafka(k, &mut produced, &mut windows_out),
            other => other,
        };
        match input {
            // A Kafka batch whose records were all refused, or the batch's
            // events already applied by `kafka`: nothing more to do.
            Input::Kafka(_) => {}
            Input::Batch(b) => {
                let mut windows_tagged = Vec::new();
                let mut patterns_tagged = Vec::new();
                let now = self.batch(b, &mut notices, &mut windows_tagged, &mut produced);
                self.patterns.on_batch(
                    &produced.events,
                    &produced.time,
                    now,
                    self.window_names.len(),
                    &mut patterns_tagged,
                );
                // Window and pattern outputs share the `late` channel: both
                // in event order, as an event-by-event run would have them.
                ordered = merge_by_event(windows_tagged, patterns_tagged);
            }
            Input::Tick { wall_ms, position } => {
                if let Some((source, at)) = position {
                    let p = self.positions.entry(source).or_insert(0);
                    *p = (*p).max(at);
                }
                self.time.tick(wall_ms);
                self.windows.on_tick(&self.time, &mut windows_out);
                self.patterns
                    .on_tick(&self.time, wall_ms, &mut patterns_out);
            }
            Input::Plugin(change) => {
                match &change.version {
                    VersionChange::Keep => {}
                    VersionChange::Select(hash) => {
                        self.pipeline.select(&change.plugin, Some(hash));
                        self.select_pattern_plugin(&change.plugin, hash);
                        self.select_alert_plugin(
                            &change.plugin,
                            hash,
                            &mut notices,
                            &mut alert_events,
                        );
                    }
                    VersionChange::Remove => {
                        self.pipeline.select(&change.plugin, None);
                        self.remove_pattern_plugin(&change.plugin);
                        self.remove_alert_plugin(&change.plugin, &mut notices, &mut alert_events);
                    }
                }
                notices.extend(change.notice);
            }
            Input::Reconfigure(r) => {
                let outcome = self.reconfigure(&r.config, &mut notices, &mut alert_events);
                self.last_reconfigure = Some(outcome);
            }
            Input::Finish => {
                self.time.finish();
                self.windows.on_finish(&mut windows_out);
                finishing_at = Some(self.time.wall().unwrap_or(0));
            }
        }
        self.counters.inputs += 1;
        notices.extend(self.patterns.take_notices());
        if !produced.events.is_empty() {
            let n = produced.events.len();
            sink.emit(Emitted::Events {
                first_seq: self.seq.events(n),
                events: produced.events,
            });
        }
        if !produced.dead_letters.is_empty() {
            let n = produced.dead_letters.len();
            sink.emit(Emitted::DeadLetters {
                first_seq: self.seq.dead_letters(n),
                letters: produced.dead_letters,
            });
        }
        ordered.extend(windows_out.into_iter().map(Operated::Window));
        ordered.extend(patterns_out.into_iter().map(Operated::Pattern));
        for out in ordered {
            match out {
                Operated::Window(output) => {
                    match &output {
                        window::Output::Result(_) => self.counters.window_results += 1,
                        window::Output::Late(_) => self.counters.late_events += 1,
                    }
                    self.alerts.observe_window(&output);
                    let seq = self.seq.window(&output);
                    sink.emit(Emitted::Window { seq, output });
                }
                Operated::Pattern(output) => self.publish_pattern(output, sink),
            }
        }
        if let Some(now) = finishing_at {
            // Most partial matches may time out here at once: their results
            // go to the sink as they come instead of all being held first.
            let mut part = Vec::new();
            loop {
                let more = self.patterns.finish_some(now, &mut part, FINISH_PART);
                for output in part.drain(..) {
                    self.publish_pattern(output, sink);
                }
                if !more {
                    break;
                }
            }
            notices.extend(self.patterns.take_notices());
        }
        // Alert rules run after the windows and patterns, on their results
        // of this input.
        self.alerts
            .evaluate(self.time.event_now(), &mut alert_events);
        notices.extend(self.alerts.take_notices());
        for event in alert_events {
            self.counters.alert_transitions += 1;
            sink.emit(Emitted::Alert {
                seq: self.seq.alert(),
                event,
            });
        }
        for notice in notices {
            sink.emit(Emitted::Plugin {
                seq: self.seq.plugin(),
                notice,
            });
        }
    }

    /// Move the offsets of a Kafka batch and turn its refused records into
    /// dead letters; what is left is an ordinary batch of its events (or,
    /// when none was valid, only the source's position moves).
    fn kafka(
        &mut self,
        k: KafkaBatch,
        produced: &mut Produced,
        windows_out: &mut Vec<window::Output>,
    ) -> Input {
        let follows = k.offsets.iter().all(|o| {
            self.kafka_offsets
                .get(&(o.topic.clone(), o.partition))
                .is_none_or(|next| *next == o.from)
        });
        if !follows {
            self.kafka_skipped = true;
            tracing::warn!(
                source = k.batch.source,
                "a Kafka batch does not follow on from the offsets applied; skipped (its source reads them again)"
            );
            return Input::Kafka(KafkaBatch::default());
        }
        for o in k.offsets {
            let next = self
                .kafka_offsets
                .entry((o.topic, o.partition))
                .or_insert(0);
            *next = (*next).max(o.next);
        }
        let at = k.batch.wall_ms.unwrap_or(0);
        let mut rejected = k.rejected;
        if !k.partials.is_empty() {
            let refused = self
                .windows
                .on_partials(&k.partials, k.batch.wall_ms, windows_out);
            rejected.extend(refused.into_iter().filter_map(|(i, reason)| {
                let p = k.partials.get(i)?;
                Some(Rejected {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    offset: p.offset,
                    reason,
                    value: p.describe(),
                })
            }));
        }
        self.counters.dead_lettered += rejected.len() as u64;
        produced
            .dead_letters
            .extend(rejected.into_iter().map(|r| rejected_letter(r, at)));
        if k.batch.events.is_empty() {
            let p = self.positions.entry(k.batch.source).or_insert(0);
            *p = (*p).max(k.batch.position);
            return Input::Kafka(KafkaBatch {
                batch: k.batch,
                partials: Vec::new(),
                rejected: Vec::new(),
                offsets: Vec::new(),
            });
        }
        Input::Batch(k.batch)
    }

    fn batch(
        &mut self,
        b: Batch,
        notices: &mut Vec<Notice>,
        windows_out: &mut Vec<(u64, usize, window::Output)>,
        produced: &mut Produced,
    ) -> i64 {
        let (events, duplicates) = self.dedup.filter(b.wall_ms, b.events);
        let b = Batch { events, ..b };
        self.counters.duplicates += duplicates;
        let n = b.events.len() as u64;
        let position = self.positions.entry(b.source).or_insert(0);
        *position = (*position).max(b.position);
        self.counters.batches += 1;
        self.counters.events_in += n;
        // Plugins see the batch's time; quarantine backoff runs on it too.
        let now = self.time.plugin_now_at(b.wall_ms, &b.events);
        self.clock.advance_to(now);
        let out = self.pipeline.process(b.events, now, self.seed, notices);
        let facts = self.time.batch(b.source, b.wall_ms, &out.events);
        self.windows
            .on_batch_tagged(&out.events, &facts, windows_out);
        let published = out.events.len() as u64;
        let dead = out.dead_letters.len() as u64;
        self.counters.published += published;
        self.counters.dead_lettered += dead;
        self.counters.dropped += n.saturating_sub(published + dead);
        produced.events = out.events;
        produced.dead_letters.extend(out.dead_letters);
        produced.time = facts;
        now
    }

    /// Apply a reloaded configuration's stages and declared patterns (the
    /// rest of a configuration needs a restart). Stages and patterns that
    /// did not change keep everything; a changed pattern keeps the partial
    /// matches whose steps still exist. Returns what changed; on an error
    /// nothing changed.
    fn reconfigure(
        &mut self,
        config: &Config,
        notices: &mut Vec<Notice>,
        alert_events: &mut Vec<crate::alert::AlertEvent>,
    ) -> Result<Vec<String>, String> {
        use crate::pattern::Conditions;
        use crate::plugin::registry::NoticeKind;
        let notice = |item: String, detail: String| Notice {
            plugin: item,
            kind: NoticeKind::Reconfigured,
            hash: None,
            version: None,
            detail,
        };
        let mut changes = Vec::new();
        // Alert plugin rules first: a plugin that is missing, of another
        // kind, refuses its configuration or watches something that does
        // not exist fails the reload before anything changed.
        let mut plugin_rules = Vec::new();
        let running = self.plugin_pattern_names();
        let versions = self.pipeline.selection().hashes();
        for rule in &config.alert_plugins {
            if self.config.alert_plugins.contains(rule) {
                continue;
            }
            match plugin_alerts::instantiate(
                &self.registry,
                &mut self.pipeline,
                config,
                &running,
                rule,
                versions.get(&rule.plugin).map(String::as_str),
                self.seed,
            ) {
                Ok(made) => plugin_rules.push((rule.clone(), made)),
                Err(e) => {
                    let message = format!("the alerts could not be applied: {e}");
                    notices.push(notice("config".into(), message.clone()));
                    return Err(message);
                }
            }
        }
        let now = self.pipeline.stage_configs();
        let stages_changed = now.len() != config.stages.len()
            || now.iter().zip(&config.stages).any(|(a, b)| *a != b);
        if stages_changed {
            let before: Vec<String> = now.iter().map(|s| s.name.clone()).collect();
            if let Err(e) = self.pipeline.reconfigure(config, self.seed) {
                let message = format!("the stages could not be applied: {e}");
                notices.push(notice("config".into(), message.clone()));
                return Err(message);
            }
            let after: Vec<String> = config.stages.iter().map(|s| s.name.clone()).collect();
            let detail = format!("stages [{}] → [{}]", before.join(", "), after.join(", "));
            notices.push(notice("stages".into(), detail.clone()));
            changes.push(detail);
        }
        // Declared patterns: the plugin ones come and go with their files.
        let declared_now: Vec<String> = self
            .patterns
            .names()
            .into_iter()
            .filter(|n| {
                self.patterns
                    .config(n)
                    .is_some_and(|c| matches!(c.conditions, Conditions::Declared(_)))
            })
            .collect();
        for name in &declared_now {
            if !config.patterns.iter().any(|p| &p.name == name) {
                let dropped = self.patterns.remove(name).unwrap_or(0);
                let detail = format!("pattern `{name}` removed with {dropped} partial matches");
                notices.push(notice(format!("pattern:{name}"), detail.clone()));
                changes.push(detail);
            }
        }
        for p in &config.patterns {
            let detail = match self.patterns.config(&p.name) {
                Some(c) if c == p => continue,
                Some(c) if !matches!(c.conditions, Conditions::Declared(_)) => format!(
                    "pattern `{}` not applied: a pattern plugin has that name; rename the declared pattern",
                    p.name
                ),
                Some(_) => match self.patterns.change(p.clone(), None) {
                    Ok(dropped) => format!(
                        "pattern `{}` changed; {dropped} partial matches whose steps are gone were dropped",
                        p.name
                    ),
                    Err(e) => format!("pattern `{}` could not be changed: {e}", p.name),
                },
                None => match self.patterns.add(p.clone(), None) {
                    Ok(()) => format!("pattern `{}` added", p.name),
                    Err(e) => format!("pattern `{}` could not be added: {e}", p.name),
                },
            };
            notices.push(notice(format!("pattern:{}", p.name), detail.clone()));
            changes.push(detail);
        }
        let mut alert_changes = Vec::new();
        for old in &self.config.alert_plugins {
            if !config
                .alert_plugins
                .iter()
                .any(|r| r.spec.name == old.spec.name)
            {
                self.alerts.remove_rule(&old.spec.name, alert_events);
                alert_changes.push(format!(
                    "alert `{}` removed; its firing alerts resolved",
                    old.spec.name
                ));
            }
        }
        alert_changes.extend(self.alerts.reconfigure(config, alert_events));
        for (rule, made) in plugin_rules {
            let before = self
                .config
                .alert_plugins
                .iter()
                .find(|r| r.spec.name == rule.spec.name);
            let kept = before.is_some_and(|b| b.spec.labels == rule.spec.labels);
            self.alerts.set_plugin_rule(
                rule.spec.clone(),
                Box::new(made.evaluator),
                made.interval_ms,
                made.bound_ms,
                alert_events,
            );
            alert_changes.push(match (before, kept) {
                (None, _) => format!("alert `{}` (plugin `{}`) added", rule.spec.name, rule.plugin),
                (Some(_), true) => format!(
                    "alert `{}` (plugin `{}`) changed; its instances are kept",
                    rule.spec.name, rule.plugin
                ),
                (Some(_), false) => format!(
                    "alert `{}` (plugin `{}`) has other labels; its alerts were resolved and it starts afresh",
                    rule.spec.name, rule.plugin
                ),
            });
        }
        for detail in alert_changes {
            notices.push(notice("alerts".into(), detail.clone()));
            changes.push(detail);
        }
        self.config.alerts = config.alerts.clone();
        self.config.alert_plugins = config.alert_plugins.clone();
        // Pattern plugins whose `[[patterns]] plugin = ...` limits changed
        // run on with the new ones (their partial matches carry over).
        let limits_of = |c: &Config, plugin: &str| {
            c.pattern_plugins
                .iter()
                .find(|l| l.plugin == plugin)
                .cloned()
        };
        let changed: Vec<String> = self
            .plugin_pattern_names()
            .into_iter()
            .filter(|p| limits_of(&self.config, p) != limits_of(config, p))
            .collect();
        self.config.pattern_plugins = config.pattern_plugins.clone();
        for plugin in changed {
            if let Some(hash) = versions.get(&plugin) {
                self.select_pattern_plugin(&plugin, hash);
                let detail = format!("pattern plugin `{plugin}` runs with its new limits");
                notices.push(notice(format!("pattern:{plugin}"), detail.clone()));
                changes.push(detail);
            }
        }
        Ok(changes)
    }

    /// Version `hash` of `plugin` went live: if it is a pattern plugin, its
    /// pattern runs from now on (a new version takes over the partial
    /// matches whose steps still exist).
    fn select_pattern_plugin(&mut self, plugin: &str, hash: &str) {
        if !plugin_patterns::is_pattern(&self.registry, plugin, hash) {
            return;
        }
        let made = plugin_patterns::instantiate(
            &self.registry,
            &mut self.pipeline,
            &self.config,
            plugin,
            hash,
            self.seed,
        );
        match made {
            Ok((pattern, classifier)) => {
                match self.patterns.change(pattern, Some(Box::new(classifier))) {
                    Ok(0) => {}
                    Ok(dropped) => tracing::info!(
                        plugin,
                        dropped,
                        "pattern plugin changed: partial matches whose steps are gone were dropped"
                    ),
                    Err(e) => {
                        tracing::warn!(plugin, error = %e, "pattern plugin version not started")
                    }
                }
            }
            Err(e) => tracing::warn!(plugin, error = %e, "pattern plugin version not started"),
        }
    }

    /// `plugin`'s file was removed: its pattern stops, if it is a pattern
    /// plugin's.
    fn remove_pattern_plugin(&mut self, plugin: &str) {
        let is_plugin_pattern = self.patterns.config(plugin).is_some_and(|c| {
            matches!(&c.conditions, crate::pattern::Conditions::Plugin { plugin: p } if p == plugin)
        });
        if is_plugin_pattern && let Some(dropped) = self.patterns.remove(plugin) {
            tracing::info!(
                plugin,
                dropped,
                "pattern plugin removed with its partial matches"
            );
        }
    }

    /// The running patterns of pattern plugins.
    fn plugin_pattern_names(&self) -> Vec<String> {
        self.patterns
            .names()
            .into_iter()
            .filter(|n| {
                self.patterns.config(n).is_some_and(|c| {
                    matches!(c.conditions, crate::pattern::Conditions::Plugin { .. })
                })
            })
            .collect()
    }

    /// Version `hash` of `plugin` went live: every alert rule running that
    /// plugin gets an instance of it, made from the rule's context (its
    /// baselines carry over), and keeps its alert instances — a firing
    /// alert stays firing. A version that cannot serve the rule (another
    /// kind, a refused configuration, a watch that does not exist) leaves
    /// the rule on the version it ran, with a notice.
    fn select_alert_plugin(
        &mut self,
        plugin: &str,
        hash: &str,
        notices: &mut Vec<Notice>,
        out: &mut Vec<crate::alert::AlertEvent>,
    ) {
        let rules: Vec<crate::alert::PluginRule> = self
            .config
            .alert_plugins
            .iter()
            .filter(|r| r.plugin == plugin)
            .cloned()
            .collect();
        if rules.is_empty() {
            return;
        }
        let running: Vec<String> = self.patterns.names();
        for rule in rules {
            match plugin_alerts::instantiate(
                &self.registry,
                &mut self.pipeline,
                &self.config,
                &running,
                &rule,
                Some(hash),
                self.seed,
            ) {
                Ok(made) => self.alerts.set_plugin_rule(
                    rule.spec,
                    Box::new(made.evaluator),
                    made.interval_ms,
                    made.bound_ms,
                    out,
                ),
                Err(e) => {
                    tracing::warn!(plugin, alert = %rule.spec.name, error = %e, "alert plugin version not started; the alert keeps the version it ran");
                    notices.push(Notice {
                        plugin: plugin.to_owned(),
                        kind: crate::plugin::registry::NoticeKind::Failed,
                        hash: Some(hash.to_owned()),
                        version: None,
                        detail: format!("{e}; the alert keeps the version it ran"),
                    });
                }
            }
        }
    }

    /// `plugin`'s file was removed: the alert rules running it stop, and
    /// their firing alerts resolve (they come back with the file).
    fn remove_alert_plugin(
        &mut self,
        plugin: &str,
        notices: &mut Vec<Notice>,
        out: &mut Vec<crate::alert::AlertEvent>,
    ) {
        let names: Vec<String> = self
            .config
            .alert_plugins
            .iter()
            .filter(|r| r.plugin == plugin)
            .map(|r| r.spec.name.clone())
            .collect();
        for name in names {
            if self.alerts.remove_rule(&name, out) {
                tracing::warn!(plugin, alert = %name, "alert plugin removed: the alert stops and its firing alerts resolve");
                notices.push(Notice {
                    plugin: plugin.to_owned(),
                    kind: crate::plugin::registry::NoticeKind::Unloaded,
                    hash: None,
                    version: None,
                    detail: format!(
                        "alert `{name}` stopped until `{plugin}.wasm` is back; its firing alerts resolved"
                    ),
                });
            }
        }
    }

    /// What the last configuration reload changed (or why it failed), once.
    pub fn take_reconfigure_outcome(&mut self) -> Option<Result<Vec<String>, String>> {
        self.last_reconfigure.take()
    }

    /// The windows' names, in configuration order.
    pub fn window_names(&self) -> &[String] {
        &self.window_names
    }

    /// The windows and live views (read-only: REST queries, metrics).
    pub fn windows(&self) -> &Windows {
        &self.windows
    }

    /// The driver has no reader for what only queries and snapshots read
    /// (the live views, the windows' history): stop keeping it. Nothing the
    /// engine publishes depends on it.
    pub fn switch_off_query_state(&mut self) {
        self.windows.switch_off_query_state();
    }

    /// The patterns (read-only: REST queries, metrics).
    pub fn patterns(&self) -> &Patterns {
        &self.patterns
    }

    /// The alert rules (read-only: REST queries, metrics).
    pub fn alerts(&self) -> &alerts::Alerts {
        &self.alerts
    }

    /// The alert rules, for adding plugin rules (`crate::plugin::alert`).
    pub fn alerts_mut(&mut self) -> &mut alerts::Alerts {
        &mut self.alerts
    }

    /// The event-time service.
    pub fn time(&self) -> &EventTime {
        &self.time
    }

    /// The engine's counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The last sequence number of every engine channel.
    pub fn heads(&self) -> Vec<(String, u64)> {
        self.seq.heads(&self.window_names)
    }

    /// The last sequence number of pattern `name`'s channel.
    pub fn pattern_head(&self, name: &str) -> u64 {
        self.seq.pattern_head(name)
    }

    /// Where each source's log stands.
    pub fn positions(&self) -> &BTreeMap<SourceId, u64> {
        &self.positions
    }

    /// Whether the last Kafka batch applied was skipped because it did not
    /// follow on from the offsets the engine stands at (then its source
    /// must read again from [`Engine::kafka_offsets`]); resets it.
    pub fn take_kafka_skipped(&mut self) -> bool {
        std::mem::take(&mut self.kafka_skipped)
    }

    /// Where each Kafka partition stands: the next offset to read after
    /// every record applied.
    pub fn kafka_offsets(&self) -> &KafkaOffsets {
        &self.kafka_offsets
    }

    /// A report per stage.
    pub fn stage_reports(&self) -> Vec<StageReport> {
        self.pipeline.report()
    }

    /// A report per pattern plugin and per alert plugin rule: the stages
    /// that call plugins outside the pipeline.
    pub fn plugin_stage_reports(&self) -> Vec<StageReport> {
        use crate::plugin::meter::{MeterReport, StageKind};
        let report = |kind: StageKind, (name, m): (String, MeterReport)| {
            let c = m.meter;
            StageReport {
                kind,
                name,
                plugin: m.plugin,
                status: if m.quarantined {
                    crate::pipeline::StageStatus::Quarantined
                } else {
                    crate::pipeline::StageStatus::Active
                },
                hash: Some(crate::plugin::registry::short(&m.hash).to_owned()),
                version: Some(m.version),
                ns_per_event: if c.items_in == 0 {
                    0.0
                } else {
                    c.latency.sum_seconds() * 1e9 / c.items_in as f64
                },
                stats: crate::pipeline::StageStats {
                    batches: c.calls,
                    events_in: c.items_in,
                    events_out: c.items_out,
                    failed_batches: c.failed_calls,
                    quarantines: c.quarantines,
                    rollbacks: c.rollbacks,
                    ..Default::default()
                },
                consecutive_failures: m.consecutive_failures,
                latency: c.latency,
            }
        };
        let patterns = self.patterns.meters().into_iter();
        let alerts = self.alerts.meters().into_iter();
        patterns
            .map(|m| report(StageKind::Pattern, m))
            .chain(alerts.map(|m| report(StageKind::Alert, m)))
            .collect()
    }

    /// Drop events whose id was seen within `horizon_ms` of batch wall
    /// time (0: off, the default), remembering at most `max_ids` ids. The
    /// ids seen are engine state: snapshots carry them, so a restored
    /// engine and a replay decide as the original did.
    pub fn set_dedup(&mut self, horizon_ms: u64, max_ids: u64) {
        self.dedup.configure(horizon_ms, max_ids);
    }

    /// Event ids remembered for deduplication now.
    pub fn dedup_ids(&self) -> usize {
        self.dedup.len()
    }

    /// The version each plugin runs (name → content hash).
    pub fn plugin_versions(&self) -> BTreeMap<String, String> {
        self.pipeline.selection().hashes()
    }

    /// The engine's whole state, in the versioned snapshot format (see
    /// [`state`]). Taken between inputs, it is exactly what a restored
    /// engine needs to continue as this one would.
    pub fn snapshot(&self) -> Vec<u8> {
        self.capture().into_bytes()
    }

    /// The engine's state, not yet encoded: what a checkpoint takes on the
    /// engine thread (the encoding, the larger part, is done on another).
    pub fn capture(&self) -> EngineState {
        state::EngineState {
            counters: self.counters,
            positions: self.positions.clone(),
            kafka_offsets: self.kafka_offsets.clone(),
            seed: self.seed,
            time: self.time.clone(),
            window_names: self.window_names.clone(),
            seq: self.seq.clone(),
            pipeline: self.pipeline.snapshot(),
            windows: self.windows.snapshot(),
            patterns: self.patterns.snapshot(),
            dedup: self.dedup.clone(),
            alerts: self.alerts.snapshot(),
        }
    }

    /// An engine for `config` continuing from `snapshot`. Every plugin
    /// version the snapshot names must be loaded in `registry`.
    pub fn restore(
        config: &Config,
        registry: Arc<Registry>,
        clock: Arc<VirtualClock>,
        snapshot: &[u8],
    ) -> Result<Engine, EngineError> {
        Self::restore_groups(config, registry, clock, snapshot, &KeyGroupSet::all())
    }

    /// [`Engine::restore`] keeping only the keyed state of `groups` (the
    /// key groups a later Kafka partition or worker owns).
    pub fn restore_groups(
        config: &Config,
        registry: Arc<Registry>,
        clock: Arc<VirtualClock>,
        snapshot: &[u8],
        groups: &KeyGroupSet,
    ) -> Result<Engine, EngineError> {
        let saved = state::EngineState::from_bytes(snapshot)?;
        let options = EngineOptions {
            first_seq: 1,
            seed: saved.seed,
            plugins: saved.pipeline.selected().clone(),
        };
        let mut engine = Engine::new(config, registry, clock, &options)?;
        engine.pipeline.restore(saved.pipeline, groups)?;
        engine.windows.restore(saved.windows, groups)?;
        engine
            .patterns
            .restore(saved.patterns, groups)
            .map_err(|e| EngineError::Patterns(e.to_string()))?;
        engine.time = saved.time.with_config(config.time);
        engine.seq = saved.seq.remap(&saved.window_names, &engine.window_names);
        engine.counters = saved.counters;
        engine.positions = saved.positions;
        engine.kafka_offsets = saved.kafka_offsets;
        engine.dedup = saved.dedup;
        engine.alerts.restore(saved.alerts);
        Ok(engine)
    }
}

/// The next offset of each Kafka partition, by (topic, partition).
pub type KafkaOffsets = BTreeMap<(String, i32), i64>;

/// Longest part of a refused record's value kept in its dead letter.
const REJECTED_VALUE_BYTES: usize = 1024;

/// A refused Kafka record as a dead letter: stage `kafka`, the decoder's
/// reason, and an event whose properties say where the record is.
fn rejected_letter(r: Rejected, at: i64) -> crate::pipeline::DeadLetter {
    use crate::event::Value;
    let mut value = r.value;
    if value.len() > REJECTED_VALUE_BYTES {
        let mut end = REJECTED_VALUE_BYTES;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    crate::pipeline::DeadLetter {
        stage: "kafka".to_owned(),
        reason: r.reason,
        event: crate::event::Event {
            id: format!("{}/{}/{}", r.topic, r.partition, r.offset).into(),
            name: "$kafka_record".into(),
            timestamp: at,
            distinct_id: "".into(),
            session_id: None,
            properties: vec![
                ("topic".into(), Value::Str(r.topic.into())),
                ("partition".into(), Value::Int(i64::from(r.partition))),
                ("offset".into(), Value::Int(r.offset)),
                ("value".into(), Value::Str(value.into())),
            ],
        },
    }
}

/// An operator's output, before numbering.
enum Operated {
    Window(window::Output),
    Pattern(PatternOutput),
}

/// Window and pattern outputs of one batch, each tagged (event index,
/// operator index) and sorted, merged into one list in that order (windows
/// before patterns at the same event: their indexes come first).
fn merge_by_event(
    windows: Vec<(u64, usize, window::Output)>,
    patterns: Vec<(u64, usize, PatternOutput)>,
) -> Vec<Operated> {
    let mut all: Vec<(u64, usize, Operated)> = windows
        .into_iter()
        .map(|(e, i, o)| (e, i, Operated::Window(o)))
        .chain(
            patterns
                .into_iter()
                .map(|(e, i, o)| (e, i, Operated::Pattern(o))),
        )
        .collect();
    // Stable: an operator's outputs of one event keep their order.
    all.sort_by_key(|t| (t.0, t.1));
    all.into_iter().map(|t| t.2).collect()
}

#[derive(Default)]
struct Produced {
    events: Vec<Event>,
    dead_letters: Vec<crate::pipeline::DeadLetter>,
    time: time::BatchTime,
}

/// Why an engine cannot start (or be restored).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A stage's plugin refused its configuration.
    #[error(transparent)]
    Stage(#[from] PipelineError),
    /// A window definition is invalid.
    #[error("{0}")]
    Windows(String),
    /// A pattern cannot be set up.
    #[error("{0}")]
    Patterns(String),
    /// An alert plugin rule cannot be set up (its plugin is missing, of
    /// another kind, refuses its configuration or watches something that
    /// does not exist).
    #[error("{0}")]
    Alerts(String),
    /// A snapshot could not be read or does not fit this configuration.
    #[error("{0}")]
    Snapshot(#[from] state::SnapshotError),
}
