//! Alert plugins in the engine: an `[[alerts]]` entry with `plugin = "…"`
//! becomes a rule of the alert operator whose samples come from an
//! [`AlertPlugin`] (the `alert` world), with the same lifecycle as a
//! declared rule.
//!
//! The plugin's host-backed state lives in the pipeline's state scopes
//! (scope = the alert's name), so its baselines are in engine snapshots.
//! When the registry selects a new version of the plugin, the engine makes
//! an instance of it from the same context (so the baselines carry over)
//! and hands it to the operator in place of the old one, which keeps the
//! rule's alert instances: a firing alert stays firing.

use std::sync::Arc;

use crate::alert::rules::{Evaluation, PluginEvaluator, PluginRule, Watch, Watched};
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::plugin::alert::{AlertContext, AlertInput, AlertPlugin};
use crate::plugin::registry::Notice;
use crate::plugin::{PluginKind, Registry};
use crate::window::WindowResult;

use super::alerts::{PATTERN_RULE_INTERVAL_MS, timing};

/// An alert plugin instance as the alert operator's evaluator.
pub struct PluginRuleEvaluator {
    plugin: AlertPlugin,
    watches: Vec<Watch>,
}

impl PluginEvaluator for PluginRuleEvaluator {
    fn watches(&self) -> &[Watch] {
        &self.watches
    }

    /// The watched results go to the plugin in order, one call per run of
    /// window results or of pattern results (the plugin splits them
    /// further per window or pattern and into calls of at most
    /// `MAX_RESULTS_PER_CALL`). A failing call fails the evaluation: the
    /// operator then makes no transitions for it.
    fn evaluate(&mut self, at_ms: i64, inputs: &[Watched]) -> Result<Vec<Evaluation>, String> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < inputs.len() {
            let is_window = matches!(inputs[start], Watched::Window(_));
            let end = inputs[start..]
                .iter()
                .position(|w| matches!(w, Watched::Window(_)) != is_window)
                .map_or(inputs.len(), |n| start + n);
            let run = &inputs[start..end];
            let evaluations = if is_window {
                let results: Vec<WindowResult> = run
                    .iter()
                    .filter_map(|w| match w {
                        Watched::Window(r) => Some((**r).clone()),
                        Watched::Pattern(_) => None,
                    })
                    .collect();
                self.plugin.evaluate(AlertInput::Windows(&results), at_ms)
            } else {
                let matches: Vec<_> = run
                    .iter()
                    .filter_map(|w| match w {
                        Watched::Pattern(m) => Some(m.clone()),
                        Watched::Window(_) => None,
                    })
                    .collect();
                self.plugin.evaluate(AlertInput::Matches(&matches), at_ms)
            };
            let evaluations = evaluations.map_err(|e| e.to_string())?;
            out.extend(evaluations.into_iter().map(|e| Evaluation {
                labels: e.labels,
                value: e.value,
                active: e.active,
                severity: e.severity,
                annotations: e.annotations,
            }));
            start = end;
        }
        Ok(out)
    }

    fn take_notices(&mut self) -> Vec<Notice> {
        self.plugin.take_notices()
    }

    fn meter(&self) -> Option<crate::plugin::meter::MeterReport> {
        Some(self.plugin.meter())
    }
}

/// A plugin rule ready for the operator: its evaluator, and how often it is
/// evaluated without results and its sources' out-of-orderness bound (the
/// shortest interval and the longest bound of what it watches).
pub struct Made {
    /// The evaluator.
    pub evaluator: PluginRuleEvaluator,
    /// Evaluation interval without results (ms).
    pub interval_ms: i64,
    /// Out-of-orderness bound (ms).
    pub bound_ms: i64,
}

/// An instance of version `hash` of the plugin of `rule`, configured, with
/// what it watches checked against `config`'s windows and patterns and the
/// running patterns `patterns` (pattern plugins among them). The error says
/// which alert and what is wrong.
pub fn instantiate(
    registry: &Arc<Registry>,
    pipeline: &mut Pipeline,
    config: &Config,
    patterns: &[String],
    rule: &PluginRule,
    hash: Option<&str>,
    seed: u64,
) -> Result<Made, String> {
    let name = &rule.spec.name;
    let plugin = &rule.plugin;
    let Some(hash) = hash else {
        return Err(format!(
            "alert `{name}`: no plugin `{plugin}` in the plugins folder {} (expected `{plugin}.wasm`, an alert plugin)",
            registry.dir().display()
        ));
    };
    match registry.version(plugin, hash) {
        Some(c) if c.kind == PluginKind::Alert => {}
        Some(c) => {
            return Err(format!(
                "alert `{name}`: plugin `{plugin}` is a {} plugin, not an alert plugin (its world must be `alert`)",
                c.kind.as_str()
            ));
        }
        None => {
            return Err(format!(
                "alert `{name}`: plugin `{plugin}` has no loaded version; put `{plugin}.wasm` in the plugins folder"
            ));
        }
    }
    let mut context = AlertContext::new(registry, name);
    context.config = rule.config.clone();
    context.state = pipeline.state_store(name);
    context.seed = seed;
    let instance = registry
        .alert_instance(plugin, hash, &context)
        .map_err(|e| format!("alert `{name}`: plugin `{plugin}`: {e}"))?;
    let w = instance.watches();
    let mut watches = Vec::with_capacity(w.windows.len() + w.patterns.len());
    for window in &w.windows {
        if !config.windows.iter().any(|c| &c.name == window) {
            let names: Vec<&str> = config.windows.iter().map(|c| c.name.as_str()).collect();
            return Err(format!(
                "alert `{name}`: plugin `{plugin}` watches window `{window}`, which is not configured (windows: {})",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ));
        }
        watches.push(Watch::Window(window.clone()));
    }
    for pattern in &w.patterns {
        if !config.patterns.iter().any(|c| &c.name == pattern) && !patterns.contains(pattern) {
            return Err(format!(
                "alert `{name}`: plugin `{plugin}` watches pattern `{pattern}`, which is neither declared nor a running pattern plugin (patterns: {})",
                if patterns.is_empty() {
                    "none".to_owned()
                } else {
                    patterns.join(", ")
                }
            ));
        }
        watches.push(Watch::Pattern(pattern.clone()));
    }
    let (interval_ms, bound_ms) = watches
        .iter()
        .map(|w| timing(config, w))
        .fold((i64::MAX, 0), |(interval, bound), (i, b)| {
            (interval.min(i), bound.max(b))
        });
    let interval_ms = if watches.is_empty() {
        PATTERN_RULE_INTERVAL_MS
    } else {
        interval_ms
    };
    Ok(Made {
        evaluator: PluginRuleEvaluator {
            plugin: instance,
            watches,
        },
        interval_ms,
        bound_ms,
    })
}
