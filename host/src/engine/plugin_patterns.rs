//! Pattern plugins in the engine: a plugin version becomes a pattern of the
//! pattern operator, named after the plugin, with the structure its
//! `describe-pattern` gives and the plugin classifying each batch.
//!
//! The plugin's pattern is read when the version loads (a version whose
//! pattern is invalid never goes live); selecting a new version changes the
//! pattern in place, so partial matches whose steps still exist carry over.
//! Its host-backed state lives in the pipeline's state scopes (scope = the
//! plugin's name), so it is snapshotted and survives swaps and restarts.

use std::sync::Arc;

use crate::config::Config;
use crate::event::Event;
use crate::pattern::{
    Bits, Classify, Conditions, Contiguity, Inner, MatchView, PatternConfig, PatternDef,
    Quantifier, Skip, Step, Verdict, WithinType,
};
use crate::pipeline::Pipeline;
use crate::plugin::pattern::{
    ContiguityDesc, InnerDesc, PatternContext, PatternDescription, PatternInstance, SkipDesc,
    WithinTypeDesc,
};
use crate::plugin::registry::Notice;
use crate::plugin::{PluginKind, Registry};

/// Whether version `hash` of `plugin` is a pattern plugin.
pub fn is_pattern(registry: &Registry, plugin: &str, hash: &str) -> bool {
    registry
        .version(plugin, hash)
        .is_some_and(|c| c.kind == PluginKind::Pattern)
}

/// The pattern of `plugin`'s description, with the limits and time
/// settings of its `[[patterns]] plugin = ...` entry (the engine's defaults
/// without one).
pub fn config_of(plugin: &str, d: &PatternDescription, config: &Config) -> PatternConfig {
    let limits = config.pattern_plugins.iter().find(|l| l.plugin == plugin);
    let contiguity = |c: &ContiguityDesc| match c {
        ContiguityDesc::Strict => Contiguity::Strict,
        ContiguityDesc::Relaxed => Contiguity::Relaxed,
        ContiguityDesc::Any => Contiguity::Any,
        ContiguityDesc::NotStrict => Contiguity::NotStrict,
        ContiguityDesc::NotRelaxed => Contiguity::NotRelaxed,
    };
    let inner = |i: &InnerDesc| match i {
        InnerDesc::Strict => Inner::Strict,
        InnerDesc::Relaxed => Inner::Relaxed,
        InnerDesc::Any => Inner::Any,
    };
    PatternConfig {
        name: plugin.to_owned(),
        key: d.key.clone(),
        def: PatternDef {
            steps: d
                .steps
                .iter()
                .map(|s| Step {
                    name: s.name.clone(),
                    after: contiguity(&s.after),
                    quantifier: Quantifier {
                        min: s.min,
                        max: s.max,
                        optional: s.optional,
                        greedy: s.greedy,
                        inner: inner(&s.inner),
                    },
                    until: s.has_until,
                })
                .collect(),
            within: d.within_ms.map(|w| i64::try_from(w).unwrap_or(i64::MAX)),
            within_type: match d.within_type {
                WithinTypeDesc::FirstAndLast => WithinType::FirstAndLast,
                WithinTypeDesc::PreviousAndCurrent => WithinType::PreviousAndCurrent,
            },
            skip: match &d.skip {
                SkipDesc::NoSkip => Skip::NoSkip,
                SkipDesc::ToNext => Skip::ToNext,
                SkipDesc::PastLastEvent => Skip::PastLastEvent,
                SkipDesc::ToFirst(s) => Skip::ToFirst(s.clone()),
                SkipDesc::ToLast(s) => Skip::ToLast(s.clone()),
            },
        },
        conditions: Conditions::Plugin {
            plugin: plugin.to_owned(),
        },
        out_of_orderness_ms: limits
            .map_or(config.time.out_of_orderness_ms, |l| l.out_of_orderness_ms),
        idle_timeout_ms: limits.map_or(config.time.idle_timeout_ms, |l| l.idle_timeout_ms),
        max_partials_per_key: limits.map_or(
            crate::pattern::operator::DEFAULT_MAX_PARTIALS_PER_KEY,
            |l| l.max_partials_per_key,
        ),
        max_partials: limits.map_or(crate::pattern::operator::DEFAULT_MAX_PARTIALS, |l| {
            l.max_partials
        }),
        max_history: limits.map_or(crate::pattern::operator::DEFAULT_MAX_HISTORY, |l| {
            l.max_history
        }),
    }
}

/// A pattern plugin instance as the operator's classifier.
pub struct PluginClassifier {
    instance: PatternInstance,
    wants_matches: bool,
}

impl Classify for PluginClassifier {
    fn classify(&mut self, events: &[Event], now_ms: i64) -> Result<Vec<Bits>, String> {
        self.instance
            .classify(events, now_ms)
            .map(|bits| {
                bits.into_iter()
                    .map(|b| Bits {
                        steps: b.steps,
                        until: b.until,
                    })
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    fn wants_matches(&self) -> bool {
        self.wants_matches
    }

    fn on_match(&mut self, m: &MatchView<'_>, now_ms: i64) -> Result<Verdict, String> {
        match self
            .instance
            .on_match(m.key, m.start, m.end, &m.steps, now_ms)
        {
            Ok(crate::plugin::pattern::Verdict::Keep(p)) => Ok(Verdict::Keep(p)),
            Ok(crate::plugin::pattern::Verdict::Reject) => Ok(Verdict::Reject),
            Err(e) => Err(e.to_string()),
        }
    }

    fn take_notices(&mut self) -> Vec<Notice> {
        self.instance.take_notices()
    }

    fn meter(&self) -> Option<crate::plugin::meter::MeterReport> {
        Some(self.instance.meter())
    }
}

/// An instance of version `hash` of pattern plugin `plugin`, with its
/// pattern: the classifier and the pattern's configuration.
pub fn instantiate(
    registry: &Arc<Registry>,
    pipeline: &mut Pipeline,
    config: &Config,
    plugin: &str,
    hash: &str,
    seed: u64,
) -> Result<(PatternConfig, PluginClassifier), String> {
    let mut context = PatternContext::new(registry, plugin);
    context.state = pipeline.state_store(plugin);
    context.seed = seed;
    let mut instance = registry
        .pattern_instance(plugin, hash, &context)
        .map_err(|e| e.to_string())?;
    let description = match registry
        .version(plugin, hash)
        .and_then(|c| c.pattern.clone())
    {
        Some(d) => d,
        None => instance.describe().map_err(|e| e.to_string())?,
    };
    let pattern = config_of(plugin, &description, config);
    Ok((
        pattern,
        PluginClassifier {
            instance,
            wants_matches: description.wants_matches,
        },
    ))
}
