//! The `[[patterns]]` entries: sequence patterns declared in `eddy.toml`,
//! with step conditions in the filter language subscriptions and windows
//! use. The schema is FlinkCEP's Pattern API written as TOML (see the
//! docs/patterns.md).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::ConfigError;
use super::raw::{Int, Validator};
use crate::engine::time::TimeConfig as EngineTime;
use crate::pattern::operator::{
    DEFAULT_MAX_HISTORY, DEFAULT_MAX_PARTIALS, DEFAULT_MAX_PARTIALS_PER_KEY,
};
use crate::pattern::{Conditions, PatternConfig, StepConditions};
use crate::pattern::{Contiguity, Inner, PatternDef, Quantifier, Skip, Step, WithinType};

/// Most partial matches a pattern may be configured to hold (a few GB at
/// the documented bytes per partial match).
const MAX_PARTIALS_LIMIT: i64 = 100_000_000;
/// Most matches kept for REST.
const MAX_HISTORY_LIMIT: i64 = 1_000_000;

/// A `[[patterns]]` entry with `plugin = "<name>"`: the limits and time
/// settings the engine runs that pattern plugin's pattern with (the engine
/// defaults without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginPatternLimits {
    /// The pattern plugin (its file stem).
    pub plugin: String,
    /// `out_of_orderness`, ms.
    pub out_of_orderness_ms: i64,
    /// `idle_timeout`, ms.
    pub idle_timeout_ms: i64,
    /// `max_partials_per_key`.
    pub max_partials_per_key: usize,
    /// `max_partials`.
    pub max_partials: usize,
    /// `max_history`.
    pub max_history: usize,
}

/// A `[[patterns]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPattern {
    name: Option<String>,
    /// A pattern plugin whose limits and time settings this entry sets.
    plugin: Option<String>,
    key: Option<String>,
    within: Option<String>,
    within_type: Option<String>,
    skip: Option<toml::Value>,
    out_of_orderness: Option<String>,
    idle_timeout: Option<String>,
    max_partials_per_key: Option<Int>,
    max_partials: Option<Int>,
    max_history: Option<Int>,
    #[serde(default)]
    steps: Vec<RawStep>,
}

/// A `[[patterns.steps]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    after: Option<String>,
    names: Option<Vec<String>>,
    #[serde(rename = "where")]
    where_: Option<toml::Value>,
    times: Option<toml::Value>,
    one_or_more: Option<bool>,
    times_or_more: Option<Int>,
    optional: Option<bool>,
    greedy: Option<bool>,
    inner: Option<String>,
    until: Option<toml::Value>,
}

impl Validator<'_> {
    /// Every `[[patterns]]` entry, validated (compiled, so what FlinkCEP
    /// refuses is refused here, naming the key).
    pub(super) fn patterns(
        &self,
        raw: Vec<RawPattern>,
        time: &EngineTime,
    ) -> Result<(Vec<PatternConfig>, Vec<PluginPatternLimits>), ConfigError> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut plugins: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::with_capacity(raw.len());
        let mut limits = Vec::new();
        for (i, p) in raw.into_iter().enumerate() {
            if let Some(plugin) = p.plugin.clone() {
                let l = self.plugin_limits(i, &plugin, p, time)?;
                if let Some(first) = plugins.insert(plugin.clone(), i) {
                    return Err(self.invalid(
                        format!("patterns[{i}].plugin"),
                        format!("pattern plugin `{plugin}` is set twice (also patterns[{first}])"),
                    ));
                }
                limits.push(l);
                continue;
            }
            let config = self.pattern(i, p, time)?;
            if let Some(first) = seen.insert(config.name.clone(), i) {
                return Err(self.invalid(
                    format!("patterns[{i}].name"),
                    format!(
                        "duplicate pattern name `{}` (also patterns[{first}])",
                        config.name
                    ),
                ));
            }
            out.push(config);
        }
        Ok((out, limits))
    }

    /// A `[[patterns]]` entry with `plugin`: the limits and time settings
    /// of that pattern plugin's pattern (its steps come from the plugin).
    fn plugin_limits(
        &self,
        i: usize,
        plugin: &str,
        p: RawPattern,
        time: &EngineTime,
    ) -> Result<PluginPatternLimits, ConfigError> {
        let at = |key: &str| format!("patterns[{i}].{key}");
        let given = [
            ("name", p.name.is_some()),
            ("key", p.key.is_some()),
            ("within", p.within.is_some()),
            ("within_type", p.within_type.is_some()),
            ("skip", p.skip.is_some()),
            ("steps", !p.steps.is_empty()),
        ];
        if let Some((k, _)) = given.iter().find(|(_, g)| *g) {
            return Err(self.invalid(
                at(k),
                format!(
                    "not with `plugin`: pattern plugin `{plugin}` describes its pattern itself (named after its file); with `plugin` give only out_of_orderness, idle_timeout, max_partials_per_key, max_partials and max_history"
                ),
            ));
        }
        if plugin.is_empty()
            || !plugin
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.invalid(
                at("plugin"),
                format!(
                    "`{plugin}` is not a plugin name: a pattern plugin is named after its file in the plugins folder (`<name>.wasm`): letters, digits, `-`, `_`"
                ),
            ));
        }
        self.limits(i, plugin, &p, time)
    }

    /// The caps and time settings of entry `i`, for `plugin` (empty for a
    /// declared pattern): the same keys and defaults for both kinds.
    fn limits(
        &self,
        i: usize,
        plugin: &str,
        p: &RawPattern,
        time: &EngineTime,
    ) -> Result<PluginPatternLimits, ConfigError> {
        let at = |key: &str| format!("patterns[{i}].{key}");
        Ok(PluginPatternLimits {
            plugin: plugin.to_owned(),
            out_of_orderness_ms: self.opt_duration(
                &at("out_of_orderness"),
                &p.out_of_orderness,
                0,
                time.out_of_orderness_ms,
            )?,
            idle_timeout_ms: self.opt_duration(
                &at("idle_timeout"),
                &p.idle_timeout,
                1,
                time.idle_timeout_ms,
            )?,
            max_partials_per_key: self.bounded(
                &at("max_partials_per_key"),
                p.max_partials_per_key,
                DEFAULT_MAX_PARTIALS_PER_KEY,
                MAX_PARTIALS_LIMIT,
            )?,
            max_partials: self.bounded(
                &at("max_partials"),
                p.max_partials,
                DEFAULT_MAX_PARTIALS,
                MAX_PARTIALS_LIMIT,
            )?,
            max_history: match p.max_history {
                Some(Int(0)) => 0,
                other => self.bounded(
                    &at("max_history"),
                    other,
                    DEFAULT_MAX_HISTORY,
                    MAX_HISTORY_LIMIT,
                )?,
            },
        })
    }

    fn pattern(
        &self,
        i: usize,
        p: RawPattern,
        time: &EngineTime,
    ) -> Result<PatternConfig, ConfigError> {
        let at = |key: &str| format!("patterns[{i}].{key}");
        let Some(name) = p.name.clone() else {
            return Err(self.invalid(
                at("name"),
                "missing: a declared pattern needs a name (or give `plugin` to set a pattern plugin's limits)",
            ));
        };
        self.channel_name(&at("name"), &name, "pattern")?;
        if p.steps.is_empty() {
            return Err(self.invalid(
                at("steps"),
                "a pattern needs at least one [[patterns.steps]] entry",
            ));
        }
        let within = match &p.within {
            None => None,
            Some(t) => Some(self.duration(&at("within"), t, 1)?),
        };
        let within_type = match p.within_type.as_deref() {
            None | Some("first_and_last") => WithinType::FirstAndLast,
            Some("previous_and_current") => WithinType::PreviousAndCurrent,
            Some(other) => {
                return Err(self.invalid(
                    at("within_type"),
                    format!("unknown `{other}`; expected first_and_last or previous_and_current"),
                ));
            }
        };
        let skip = self.skip(&at("skip"), p.skip.as_ref())?;
        let limits = self.limits(i, "", &p, time)?;
        let mut steps = Vec::with_capacity(p.steps.len());
        let mut conditions = Vec::with_capacity(p.steps.len());
        // Per step, the key its quantifier was written with, to name it in
        // the matcher's refusals.
        let mut quantifier_keys = Vec::with_capacity(p.steps.len());
        for (j, s) in p.steps.into_iter().enumerate() {
            quantifier_keys.push(if s.times.is_some() {
                "times"
            } else if s.one_or_more.is_some() {
                "one_or_more"
            } else if s.times_or_more.is_some() {
                "times_or_more"
            } else if s.optional.is_some() {
                "optional"
            } else {
                "greedy"
            });
            let (step, cond) = self.step(&format!("patterns[{i}].steps[{j}]"), j, s)?;
            steps.push(step);
            conditions.push(cond);
        }
        let config = PatternConfig {
            name,
            key: p.key.unwrap_or_else(|| "distinct_id".to_owned()),
            def: PatternDef {
                steps,
                within,
                within_type,
                skip,
            },
            conditions: Conditions::Declared(conditions),
            out_of_orderness_ms: limits.out_of_orderness_ms,
            idle_timeout_ms: limits.idle_timeout_ms,
            max_partials_per_key: limits.max_partials_per_key,
            max_partials: limits.max_partials,
            max_history: limits.max_history,
        };
        // Compiling checks what FlinkCEP refuses, the key path and the
        // conditions; errors name the key under this pattern.
        crate::pattern::Patterns::new(std::slice::from_ref(&config)).map_err(|e| {
            let key = toml_key(&e.error.key, &quantifier_keys);
            self.invalid(at(&key), e.error.message)
        })?;
        Ok(config)
    }

    fn skip(&self, key: &str, v: Option<&toml::Value>) -> Result<Skip, ConfigError> {
        const EXPECTED: &str = "no_skip, skip_to_next, skip_past_last_event, { to_first = \"<step>\" } or { to_last = \"<step>\" }";
        Ok(match v {
            None => Skip::NoSkip,
            Some(toml::Value::String(s)) => match s.as_str() {
                "no_skip" => Skip::NoSkip,
                "skip_to_next" => Skip::ToNext,
                "skip_past_last_event" => Skip::PastLastEvent,
                other => {
                    return Err(self.invalid(
                        key,
                        format!("unknown strategy `{other}`; expected {EXPECTED}"),
                    ));
                }
            },
            Some(toml::Value::Table(t)) if t.len() == 1 => {
                let (k, v) = t
                    .iter()
                    .next()
                    .map_or(("", None), |(k, v)| (k.as_str(), v.as_str()));
                match (k, v) {
                    ("to_first", Some(step)) => Skip::ToFirst(step.to_owned()),
                    ("to_last", Some(step)) => Skip::ToLast(step.to_owned()),
                    _ => return Err(self.invalid(key, format!("expected {EXPECTED}"))),
                }
            }
            Some(_) => return Err(self.invalid(key, format!("expected {EXPECTED}"))),
        })
    }

    fn step(
        &self,
        at: &str,
        index: usize,
        s: RawStep,
    ) -> Result<(Step, StepConditions), ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        let after = match s.after.as_deref() {
            None | Some("relaxed") => Contiguity::Relaxed,
            Some("strict") => Contiguity::Strict,
            Some("any") => Contiguity::Any,
            Some("not_strict") => Contiguity::NotStrict,
            Some("not_relaxed") => Contiguity::NotRelaxed,
            Some(other) => {
                return Err(self.invalid(
                    key("after"),
                    format!(
                        "unknown contiguity `{other}`; expected strict, relaxed, any, not_strict or not_relaxed"
                    ),
                ));
            }
        };
        if index == 0 && s.after.is_some() {
            return Err(self.invalid(
                key("after"),
                "the first step follows nothing; `after` is for the steps after it",
            ));
        }
        let inner = match s.inner.as_deref() {
            None | Some("relaxed") => Inner::Relaxed,
            Some("strict") => Inner::Strict,
            Some("any") => Inner::Any,
            Some(other) => {
                return Err(self.invalid(
                    key("inner"),
                    format!("unknown contiguity `{other}`; expected strict, relaxed or any"),
                ));
            }
        };
        let count = |k: &str, v: i64| -> Result<u32, ConfigError> {
            u32::try_from(v)
                .ok()
                .filter(|&n| (1..=10_000).contains(&n))
                .ok_or_else(|| self.invalid(key(k), format!("{v} must be between 1 and 10000")))
        };
        let mut quantifiers = Vec::new();
        let (mut min, mut max) = (1, Some(1));
        if let Some(t) = &s.times {
            quantifiers.push("times");
            match t {
                toml::Value::Integer(n) => {
                    min = count("times", *n)?;
                    max = Some(min);
                }
                toml::Value::Array(a) => match a.as_slice() {
                    [toml::Value::Integer(n), toml::Value::Integer(m)] => {
                        min = count("times", *n)?;
                        let m = count("times", *m)?;
                        if m < min {
                            return Err(self.invalid(
                                key("times"),
                                format!("[{min}, {m}]: the upper bound is below the lower"),
                            ));
                        }
                        max = Some(m);
                    }
                    _ => {
                        return Err(self.invalid(key("times"), "expected n or [n, m] (integers)"));
                    }
                },
                _ => return Err(self.invalid(key("times"), "expected n or [n, m] (integers)")),
            }
        }
        if s.one_or_more == Some(true) {
            quantifiers.push("one_or_more");
            (min, max) = (1, None);
        }
        if let Some(Int(n)) = s.times_or_more {
            quantifiers.push("times_or_more");
            (min, max) = (count("times_or_more", n)?, None);
        }
        if quantifiers.len() > 1 {
            return Err(self.invalid(
                key(quantifiers[1]),
                format!(
                    "a step has one quantifier; `{}` and `{}` are both given",
                    quantifiers[0], quantifiers[1]
                ),
            ));
        }
        let filter_of = |k: &str, names: Option<Vec<String>>, where_: Option<&toml::Value>| {
            let mut f = serde_json::Map::new();
            if let Some(n) = names {
                f.insert("names".into(), json!(n));
            }
            if let Some(w) = where_ {
                let w = serde_json::to_value(w).map_err(|e| {
                    self.invalid(key(k), format!("cannot be read as a filter: {e}"))
                })?;
                f.insert("where".into(), w);
            }
            Ok::<Json, ConfigError>(Json::Object(f))
        };
        let until = match &s.until {
            None => None,
            Some(toml::Value::Table(t)) => {
                let names = match t.get("names") {
                    None => None,
                    Some(v) => Some(v.clone().try_into::<Vec<String>>().map_err(|_| {
                        self.invalid(key("until.names"), "expected an array of event names")
                    })?),
                };
                if let Some(k) = t.keys().find(|k| !matches!(k.as_str(), "names" | "where")) {
                    return Err(self.invalid(
                        key("until"),
                        format!("unknown field `{k}`; a condition has names and where"),
                    ));
                }
                Some(filter_of("until", names, t.get("where"))?)
            }
            Some(_) => {
                return Err(self.invalid(
                    key("until"),
                    "expected a condition: { names = [...], where = [...] }",
                ));
            }
        };
        let step = Step {
            name: s.name,
            after,
            quantifier: Quantifier {
                min,
                max,
                optional: s.optional.unwrap_or(false),
                greedy: s.greedy.unwrap_or(false),
                inner,
            },
            until: until.is_some(),
        };
        let cond = StepConditions {
            filter: filter_of("where", s.names, s.where_.as_ref())?,
            until,
        };
        Ok((step, cond))
    }
}

/// The configuration key for a matcher refusal's key: its
/// `steps[i].quantifier[.x]` are written in `eddy.toml` as `times`,
/// `one_or_more`, `times_or_more`, `optional` or `greedy`.
fn toml_key(key: &str, quantifier_keys: &[&str]) -> String {
    let Some((step, rest)) = key.split_once(".quantifier") else {
        return key.to_owned();
    };
    let index: Option<usize> = step
        .strip_prefix("steps[")
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse().ok());
    let name = match (rest, index.and_then(|i| quantifier_keys.get(i))) {
        (".greedy", _) => "greedy",
        (_, Some(k)) => k,
        (_, None) => "times",
    };
    format!("{step}.{name}")
}
