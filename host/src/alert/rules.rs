//! Alert rules as configured: what a rule watches, how a watched result
//! becomes a [`Sample`], and the seam alert plugins plug into.
//!
//! A rule is a [`RuleSpec`] (its lifecycle settings) plus an [`Evaluator`]
//! that turns the window results or pattern matches it watches into samples:
//!
//! - [`Evaluator::Declared`]: an `[[alerts]]` entry of `eddy.toml`
//!   ([`DeclaredRule`]): one aggregate of a window compared with a threshold,
//!   per group, or one instance per pattern match key;
//! - [`Evaluator::Plugin`]: an alert plugin (the `alert` WIT world), behind
//!   the [`PluginEvaluator`] trait. The host side of that world implements
//!   the trait; the engine's alert operator (`crate::engine::alerts`) calls
//!   it with every watched result of one evaluation and runs the lifecycle
//!   on what it returns, exactly as for declared rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{RuleSpec, Sample};
use crate::pattern::{OutcomeKind, PatternResult};
use crate::window::WindowResult;
use crate::window::groups::{KeyPart, OVERFLOW};

/// How a declared rule compares its value with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    /// The operator written as in `eddy.toml` (`>`, `>=`, ...).
    pub fn parse(text: &str) -> Option<Op> {
        Some(match text {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            _ => return None,
        })
    }

    /// How it is written.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    /// Whether `value <op> threshold` holds (never for NaN, as in
    /// PromQL's comparisons).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => !value.is_nan() && value != threshold,
        }
    }
}

/// What a rule watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// Every result (early, final, correction) of window `name`.
    Window(String),
    /// Every match of pattern `name` (declared or a pattern plugin's).
    Pattern(String),
}

impl Watch {
    /// The window's or pattern's name.
    pub fn name(&self) -> &str {
        match self {
            Watch::Window(n) | Watch::Pattern(n) => n,
        }
    }
}

/// The value a declared rule compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleValue {
    /// Aggregate `name` of the watched window (its output name, e.g.
    /// `error_ratio` or `p95(properties.load_ms)`); a result whose value is
    /// not a number (`null` for an empty ratio) gives no sample.
    Aggregate(String),
    /// Pattern rules: the number of matches of a key in one evaluation (at
    /// least 1, since a key is only seen when it matched).
    MatchCount,
}

/// An `[[alerts]]` entry, validated: a [`RuleSpec`] plus what it watches
/// and its condition.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredRule {
    /// Lifecycle settings (name, `for`, labels with `severity`, ...).
    pub spec: RuleSpec,
    /// The window or pattern.
    pub watch: Watch,
    /// What is compared.
    pub value: RuleValue,
    /// How.
    pub op: Op,
    /// With what (finite).
    pub threshold: f64,
    /// Label names of the window's group keys, in `group_by` order (empty
    /// for pattern rules, whose instances carry `key`).
    pub group_labels: Vec<String>,
}

// Thresholds are validated finite, so equality is an equivalence and
// configurations (which compare with `==` on reload) can be `Eq`.
impl Eq for DeclaredRule {}

/// The label a pattern rule's instances carry the match key in.
pub const KEY_LABEL: &str = "key";

/// The Prometheus label name a `group_by` path becomes: `properties.` and a
/// leading `$` are left out, other characters outside `[A-Za-z0-9_]` become
/// `_` (`properties.$pathname` → `pathname`, `properties.a.b` → `a_b`).
pub fn label_name(path: &str) -> String {
    let tail = path.strip_prefix("properties.").unwrap_or(path);
    let tail = tail.trim_start_matches('$');
    let mut out: String = tail
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A group key part as a label value ("" for a missing or null field: the
/// label is then left out, as Prometheus treats empty labels).
fn label_value(part: &KeyPart) -> String {
    match part {
        KeyPart::Missing | KeyPart::Null => String::new(),
        KeyPart::Bool(b) => b.to_string(),
        KeyPart::Int(i) => i.to_string(),
        KeyPart::Float(bits) => super::template::format_value(f64::from_bits(*bits)),
        KeyPart::Str(s) | KeyPart::Json(s) => s.to_string(),
        KeyPart::Overflow => OVERFLOW.to_owned(),
    }
}

impl DeclaredRule {
    /// The sample a window result gives this rule, if it gives one.
    pub fn window_sample(&self, result: &WindowResult) -> Option<Sample> {
        let RuleValue::Aggregate(name) = &self.value else {
            return None;
        };
        let value = result.value(name)?.as_f64()?;
        let mut labels = BTreeMap::new();
        for (name, part) in self.group_labels.iter().zip(result.group.iter()) {
            let v = label_value(part);
            if !v.is_empty() {
                labels.insert(name.clone(), v);
            }
        }
        Some(Sample {
            labels,
            value,
            active: self.op.holds(value, self.threshold),
            annotations: BTreeMap::new(),
        })
    }

    /// The samples of the pattern matches of one evaluation: one per key,
    /// valued by its number of matches (timeouts are not matches).
    pub fn pattern_samples(&self, results: &[Arc<PatternResult>]) -> Vec<Sample> {
        let mut counts: Vec<(String, f64)> = Vec::new();
        for r in results.iter().filter(|r| r.kind == OutcomeKind::Match) {
            match counts
                .iter_mut()
                .find(|(k, _)| k.as_str() == r.key.as_str())
            {
                Some((_, n)) => *n += 1.0,
                None => counts.push((r.key.to_string(), 1.0)),
            }
        }
        counts
            .into_iter()
            .map(|(key, value)| Sample {
                labels: BTreeMap::from([(KEY_LABEL.to_owned(), key)]),
                value,
                active: self.op.holds(value, self.threshold),
                annotations: BTreeMap::new(),
            })
            .collect()
    }
}

/// One watched result handed to a [`PluginEvaluator`].
#[derive(Debug, Clone)]
pub enum Watched {
    /// A window result (early, final or correction).
    Window(Arc<WindowResult>),
    /// A pattern match or timeout.
    Pattern(Arc<PatternResult>),
}

/// What an alert plugin returns per label set: the shape of the `alert`
/// world's `evaluation` record.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The instance's labels (before the rule's own and `alertname`).
    pub labels: BTreeMap<String, String>,
    /// Its value (`{{ $value }}`).
    pub value: f64,
    /// Whether the condition holds.
    pub active: bool,
    /// The `severity` label, if the plugin sets one.
    pub severity: Option<String>,
    /// Annotations of this instance, set over the rule's templated ones.
    pub annotations: BTreeMap<String, String>,
}

impl Evaluation {
    /// The lifecycle's sample: `severity` becomes a label (Prometheus's
    /// convention; a `severity` the rule sets in its labels wins, as rule
    /// labels do), the annotations go with it.
    pub fn into_sample(self) -> Sample {
        let mut labels = self.labels;
        if let Some(s) = self.severity {
            labels.insert("severity".to_owned(), s);
        }
        Sample {
            labels,
            value: self.value,
            active: self.active,
            annotations: self.annotations,
        }
    }
}

/// The host side of an alert plugin, as the alert operator drives it.
/// Implemented over the `alert` world's host binding (`crate::plugin::alert`)
/// by `crate::engine::plugin_alerts`; a call that fails makes no
/// transitions for its evaluation (the plugin wrote no state either), as
/// Prometheus keeps a rule's alerts when its query fails.
pub trait PluginEvaluator: Send {
    /// The windows and patterns the plugin watches.
    fn watches(&self) -> &[Watch];
    /// Evaluate at event time `at_ms` with this evaluation's watched
    /// results, in the order they were published.
    fn evaluate(&mut self, at_ms: i64, inputs: &[Watched]) -> Result<Vec<Evaluation>, String>;
    /// Lifecycle notices (failures, quarantine, recovery) since the last
    /// call, for the `plugins` channel.
    fn take_notices(&mut self) -> Vec<crate::plugin::registry::Notice> {
        Vec::new()
    }
    /// The plugin's calls and their durations, for `/metrics`.
    fn meter(&self) -> Option<crate::plugin::meter::MeterReport> {
        None
    }
}

/// An `[[alerts]]` entry naming an alert plugin (`plugin = "..."`): the
/// rule's lifecycle settings, the plugin (a file of the plugins folder, by
/// name) and its configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginRule {
    /// Lifecycle settings (name, `for`, labels with `severity`, ...).
    pub spec: RuleSpec,
    /// The alert plugin's name (its file name without `.wasm`).
    pub plugin: String,
    /// Its configuration, as JSON (`{}` if none).
    pub config: String,
}

// As for `DeclaredRule`: configurations compare with `==` on reload.
impl Eq for PluginRule {}

/// Where a rule's samples come from.
pub enum Evaluator {
    /// An `[[alerts]]` entry.
    Declared(DeclaredRule),
    /// An alert plugin.
    Plugin(Box<dyn PluginEvaluator>),
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Evaluator::Declared(d) => f.debug_tuple("Declared").field(d).finish(),
            Evaluator::Plugin(p) => f.debug_tuple("Plugin").field(&p.watches()).finish(),
        }
    }
}

impl Evaluator {
    /// Whether the rule watches `watch`.
    pub fn watches(&self, watch: &Watch) -> bool {
        match self {
            Evaluator::Declared(d) => &d.watch == watch,
            Evaluator::Plugin(p) => p.watches().contains(watch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_compare_as_promql_does() {
        assert!(Op::Gt.holds(0.06, 0.05));
        assert!(!Op::Gt.holds(0.05, 0.05));
        assert!(Op::Ge.holds(0.05, 0.05));
        assert!(Op::Lt.holds(1.0, 2.0));
        assert!(Op::Le.holds(2.0, 2.0));
        assert!(Op::Eq.holds(2.0, 2.0));
        assert!(Op::Ne.holds(1.0, 2.0));
        for op in [Op::Gt, Op::Ge, Op::Lt, Op::Le, Op::Eq, Op::Ne] {
            assert!(!op.holds(f64::NAN, 1.0), "{op:?}");
            assert_eq!(Op::parse(op.as_str()), Some(op));
        }
        assert_eq!(Op::parse("=>"), None);
    }

    #[test]
    fn group_paths_become_prometheus_label_names() {
        assert_eq!(label_name("properties.$pathname"), "pathname");
        assert_eq!(label_name("properties.service"), "service");
        assert_eq!(label_name("distinct_id"), "distinct_id");
        assert_eq!(label_name("properties.a.b-c"), "a_b_c");
        assert_eq!(label_name("properties.1st"), "_1st");
    }
}
