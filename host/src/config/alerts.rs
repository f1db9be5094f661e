//! The `[[alerts]]` entries (declared alert rules) and the `[notify]`
//! section (`[[notify.alertmanager]]`, `[[notify.webhook]]`): where alerts
//! are delivered. See docs/alerts.md.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::ConfigError;
use super::raw::{Int, Validator};
use crate::alert::lifecycle::{
    DEFAULT_MAX_INSTANCES, DEFAULT_NO_DATA_AFTER_MS, NO_DATA_LABEL, default_no_data_after,
};
use crate::alert::notify::{AlertmanagerConfig, NotifyConfig, WebhookConfig};
use crate::alert::rules::{DeclaredRule, KEY_LABEL, Op, PluginRule, RuleValue, Watch, label_name};
use crate::alert::{NoDataMode, RuleSpec};
use crate::pattern::PatternConfig;
use crate::window::{WindowConfig, WindowKind, WindowSpec};

/// Most instances a rule may be configured to hold (a few hundred bytes
/// each).
const MAX_INSTANCES_LIMIT: i64 = 1_000_000;

/// An `[[alerts]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlert {
    name: String,
    plugin: Option<String>,
    config: Option<toml::Value>,
    window: Option<String>,
    pattern: Option<String>,
    value: Option<String>,
    op: Option<String>,
    threshold: Option<toml::Value>,
    #[serde(rename = "for")]
    for_: Option<String>,
    keep_firing_for: Option<String>,
    severity: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    no_data: Option<String>,
    no_data_after: Option<String>,
    max_instances: Option<Int>,
}

/// The `[notify]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    #[serde(default)]
    alertmanager: Vec<toml::Value>,
    #[serde(default)]
    webhook: Vec<toml::Value>,
}

/// Label names Prometheus accepts (`[a-zA-Z_][a-zA-Z0-9_]*`), without the
/// reserved `__` prefix.
fn is_label_name(s: &str) -> bool {
    !s.starts_with("__")
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_rule_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// An `[[alerts]]` entry, validated.
enum AlertRule {
    Declared(DeclaredRule),
    Plugin(PluginRule),
}

impl AlertRule {
    fn name(&self) -> &str {
        match self {
            AlertRule::Declared(d) => &d.spec.name,
            AlertRule::Plugin(p) => &p.spec.name,
        }
    }
}

/// Keys of a declared rule that an alert plugin rule does not take: the
/// plugin decides what it watches and when its condition holds.
const DECLARED_ONLY: [&str; 5] = ["window", "pattern", "value", "op", "threshold"];

impl Validator<'_> {
    /// Every `[[alerts]]` entry, checked against the windows and patterns
    /// it names: the declared rules and the alert plugin rules, each in
    /// order. (What a plugin watches is checked when its plugin is loaded.)
    pub(super) fn alerts(
        &self,
        raw: Vec<RawAlert>,
        windows: &[WindowConfig],
        patterns: &[PatternConfig],
    ) -> Result<(Vec<DeclaredRule>, Vec<PluginRule>), ConfigError> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut declared = Vec::new();
        let mut plugins = Vec::new();
        for (i, a) in raw.into_iter().enumerate() {
            let rule = self.alert(i, a, windows, patterns)?;
            if let Some(first) = seen.insert(rule.name().to_owned(), i) {
                return Err(self.invalid(
                    format!("alerts[{i}].name"),
                    format!(
                        "duplicate alert name `{}` (also alerts[{first}])",
                        rule.name()
                    ),
                ));
            }
            match rule {
                AlertRule::Declared(d) => declared.push(d),
                AlertRule::Plugin(p) => plugins.push(p),
            }
        }
        Ok((declared, plugins))
    }

    /// The `plugin` and `config` of an alert plugin rule.
    fn alert_plugin(&self, i: usize, a: &RawAlert, plugin: &str) -> Result<String, ConfigError> {
        let key = |k: &str| format!("alerts[{i}].{k}");
        let given = [
            a.window.is_some(),
            a.pattern.is_some(),
            a.value.is_some(),
            a.op.is_some(),
            a.threshold.is_some(),
        ];
        if let Some((k, _)) = DECLARED_ONLY.iter().zip(given).find(|(_, g)| *g) {
            return Err(self.invalid(
                key(k),
                format!(
                    "not with `plugin`: alert plugin `{plugin}` decides what it watches and when its condition holds; give its settings in `config`, or drop `plugin` for a declared rule"
                ),
            ));
        }
        if plugin.is_empty()
            || !plugin
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.invalid(
                key("plugin"),
                format!(
                    "`{plugin}` is not a plugin name: an alert plugin is named after its file in the plugins folder (`<name>.wasm`): letters, digits, `-`, `_`"
                ),
            ));
        }
        match &a.config {
            None => Ok("{}".to_owned()),
            Some(v @ toml::Value::Table(_)) => serde_json::to_string(v).map_err(|e| {
                self.invalid(key("config"), format!("cannot be written as JSON: {e}"))
            }),
            Some(other) => Err(self.invalid(
                key("config"),
                format!(
                    "must be a table (`config = {{ ... }}`), not {}",
                    other.type_str()
                ),
            )),
        }
    }

    fn alert(
        &self,
        i: usize,
        a: RawAlert,
        windows: &[WindowConfig],
        patterns: &[PatternConfig],
    ) -> Result<AlertRule, ConfigError> {
        let key = |k: &str| format!("alerts[{i}].{k}");
        if !is_rule_name(&a.name) {
            return Err(self.invalid(
                key("name"),
                format!(
                    "`{}` is not a valid alert name: 1 to 128 letters, digits, `_`, `-` or `.`",
                    a.name
                ),
            ));
        }
        let mut spec = RuleSpec::new(a.name.clone());
        let plugin = match &a.plugin {
            Some(p) => Some((p.clone(), self.alert_plugin(i, &a, p)?)),
            None if a.config.is_some() => {
                return Err(self.invalid(
                    key("config"),
                    "only with `plugin` (an alert plugin's configuration)",
                ));
            }
            None => None,
        };
        let (watch, value, group_labels, window_kind) = match (&a.window, &a.pattern) {
            _ if plugin.is_some() => (None, RuleValue::MatchCount, Vec::new(), None),
            (Some(_), Some(_)) | (None, None) => {
                return Err(self.invalid(
                    key("window"),
                    "give exactly one of `window` (a window's name), `pattern` (a pattern's name) or `plugin` (an alert plugin's)",
                ));
            }
            (Some(w), None) => {
                let Some(window) = windows.iter().find(|c| &c.name == w) else {
                    let names: Vec<&str> = windows.iter().map(|c| c.name.as_str()).collect();
                    return Err(self.invalid(
                        key("window"),
                        format!(
                            "no window is named `{w}` (windows: {})",
                            if names.is_empty() {
                                "none".to_owned()
                            } else {
                                names.join(", ")
                            }
                        ),
                    ));
                };
                let Some(value) = &a.value else {
                    return Err(self.invalid(
                        key("value"),
                        format!("required with `window`: one of window `{w}`'s aggregates"),
                    ));
                };
                let compiled = WindowSpec::compile(window)
                    .map_err(|e| self.invalid(key("window"), e.to_string()))?;
                let outputs: Vec<&str> = compiled.aggregates.output_names().collect();
                if !outputs.contains(&value.as_str()) {
                    return Err(self.invalid(
                        key("value"),
                        format!(
                            "window `{w}` has no aggregate `{value}` (it has: {}); write an aggregate's output name, e.g. `count` or the name after `as`",
                            outputs.join(", ")
                        ),
                    ));
                }
                let labels: Vec<String> = window.group_by.iter().map(|p| label_name(p)).collect();
                for (j, l) in labels.iter().enumerate() {
                    if labels[..j].contains(l) {
                        return Err(self.invalid(
                            key("window"),
                            format!(
                                "window `{w}` groups by two fields that both become label `{l}`; alert on a window whose group_by fields have distinct last names"
                            ),
                        ));
                    }
                }
                (
                    Some(Watch::Window(w.clone())),
                    RuleValue::Aggregate(value.clone()),
                    labels,
                    Some(window.kind),
                )
            }
            (None, Some(p)) => {
                let declared = patterns.iter().any(|c| &c.name == p);
                let plugin_name = !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !declared && !plugin_name {
                    let names: Vec<&str> = patterns.iter().map(|c| c.name.as_str()).collect();
                    return Err(self.invalid(
                        key("pattern"),
                        format!(
                            "no pattern is named `{p}` (declared patterns: {}; a pattern plugin is named after its file: letters, digits, `-`, `_`)",
                            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                        ),
                    ));
                }
                match a.value.as_deref() {
                    None | Some("count") => {}
                    Some(other) => {
                        return Err(self.invalid(
                            key("value"),
                            format!(
                                "a pattern rule's value is `count` (matches of a key per evaluation), not `{other}`"
                            ),
                        ));
                    }
                }
                (
                    Some(Watch::Pattern(p.clone())),
                    RuleValue::MatchCount,
                    Vec::new(),
                    None,
                )
            }
        };
        let pattern_rule = matches!(watch, Some(Watch::Pattern(_)));
        let op = match a.op.as_deref() {
            None if pattern_rule || plugin.is_some() => Op::Ge,
            None => {
                return Err(self.invalid(key("op"), "required: one of > >= < <= == !="));
            }
            Some(text) => Op::parse(text).ok_or_else(|| {
                self.invalid(
                    key("op"),
                    format!("`{text}` is not a comparison: use one of > >= < <= == !="),
                )
            })?,
        };
        let threshold = match &a.threshold {
            None if pattern_rule || plugin.is_some() => 1.0,
            None => return Err(self.invalid(key("threshold"), "required: a number")),
            Some(toml::Value::Integer(n)) => *n as f64,
            Some(toml::Value::Float(f)) if f.is_finite() => *f,
            Some(other) => {
                return Err(self.invalid(
                    key("threshold"),
                    format!("must be a finite number, not {other}"),
                ));
            }
        };
        spec.for_ms = self.opt_duration(&key("for"), &a.for_, 0, 0)?;
        spec.keep_firing_for_ms =
            self.opt_duration(&key("keep_firing_for"), &a.keep_firing_for, 0, 0)?;
        let window_ms = match window_kind {
            Some(WindowKind::Tumbling { size_ms }) => Some(size_ms),
            Some(WindowKind::Sliding { slide_ms, .. }) => Some(slide_ms),
            Some(WindowKind::Session { gap_ms, .. }) => Some(gap_ms),
            None => None,
        };
        let default_after = window_ms.map_or(DEFAULT_NO_DATA_AFTER_MS, default_no_data_after);
        spec.no_data_after_ms =
            self.opt_duration(&key("no_data_after"), &a.no_data_after, 1, default_after)?;
        spec.no_data = match a.no_data.as_deref() {
            None | Some("ok") => NoDataMode::Ok,
            Some("keep_last") => NoDataMode::KeepLast,
            Some("alerting") => NoDataMode::Alerting,
            Some("nodata") => NoDataMode::NoData,
            Some(other) => {
                return Err(self.invalid(
                    key("no_data"),
                    format!(
                        "`{other}` is not a no-data mode: use ok, keep_last, alerting or nodata"
                    ),
                ));
            }
        };
        spec.max_instances = self.bounded(
            &key("max_instances"),
            a.max_instances,
            DEFAULT_MAX_INSTANCES,
            MAX_INSTANCES_LIMIT,
        )?;
        for (name, value) in &a.labels {
            if !is_label_name(name) || name == "alertname" || name == NO_DATA_LABEL {
                return Err(self.invalid(
                    format!("alerts[{i}].labels.{name}"),
                    "not a usable label name: letters, digits and `_`, not starting with a digit or `__`; `alertname` and `alertstate` are eddy's",
                ));
            }
            if group_labels.contains(name) || (pattern_rule && name == KEY_LABEL) {
                return Err(self.invalid(
                    format!("alerts[{i}].labels.{name}"),
                    "the watched results already set this label (a group key); choose another name",
                ));
            }
            spec.labels.insert(name.clone(), value.clone());
        }
        if let Some(severity) = a.severity {
            if a.labels.contains_key("severity") {
                return Err(self.invalid(
                    key("severity"),
                    "given twice: as `severity` and in `labels`; keep one",
                ));
            }
            spec.labels.insert("severity".to_owned(), severity);
        }
        spec.annotations = a.annotations;
        if let Some((plugin, config)) = plugin {
            return Ok(AlertRule::Plugin(PluginRule {
                spec,
                plugin,
                config,
            }));
        }
        // Without `plugin`, exactly one of `window` and `pattern` was
        // checked above.
        let Some(watch) = watch else {
            return Err(self.invalid(key("window"), "give `window`, `pattern` or `plugin`"));
        };
        Ok(AlertRule::Declared(DeclaredRule {
            spec,
            watch,
            value,
            op,
            threshold,
            group_labels,
        }))
    }

    /// The `[notify]` section: every target, with its URL checked.
    pub(super) fn notify(&self, raw: RawNotify) -> Result<NotifyConfig, ConfigError> {
        let mut out = NotifyConfig::default();
        for (i, v) in raw.alertmanager.into_iter().enumerate() {
            let key = format!("notify.alertmanager[{i}]");
            let c: AlertmanagerConfig = v
                .try_into()
                .map_err(|e: toml::de::Error| self.invalid(&key, e.message().to_owned()))?;
            self.target(
                &key,
                &c.url,
                c.delivery.outbox_capacity,
                c.delivery.max_attempts,
            )?;
            if c.max_batch == 0 {
                return Err(self.invalid(format!("{key}.max_batch"), "must be at least 1"));
            }
            out.alertmanagers.push(c);
        }
        for (i, v) in raw.webhook.into_iter().enumerate() {
            let key = format!("notify.webhook[{i}]");
            let c: WebhookConfig = v
                .try_into()
                .map_err(|e: toml::de::Error| self.invalid(&key, e.message().to_owned()))?;
            self.target(
                &key,
                &c.url,
                c.delivery.outbox_capacity,
                c.delivery.max_attempts,
            )?;
            out.webhooks.push(c);
        }
        Ok(out)
    }

    fn target(
        &self,
        key: &str,
        url: &str,
        outbox: usize,
        attempts: u32,
    ) -> Result<(), ConfigError> {
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => {
                return Err(self.invalid(
                    format!("{key}.url"),
                    format!("`{url}` is not http(s) (scheme `{}`)", u.scheme()),
                ));
            }
            Err(e) => {
                return Err(self.invalid(
                    format!("{key}.url"),
                    format!("`{url}` is not a URL ({e}); write e.g. \"http://127.0.0.1:9093\""),
                ));
            }
        }
        if outbox == 0 {
            return Err(self.invalid(format!("{key}.outbox_capacity"), "must be at least 1"));
        }
        if attempts == 0 {
            return Err(self.invalid(format!("{key}.max_attempts"), "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::alert::NoDataMode;
    use crate::alert::rules::{Op, RuleValue, Watch};
    use crate::config::Config;

    const WINDOWS: &str = r#"
[[windows]]
name = "errors_per_service"
kind = "tumbling"
size = "1m"
group_by = ["properties.service"]
aggregates = ["count", "ratio(name:equals:error) as error_ratio"]

[[patterns]]
name = "burst"
[[patterns.steps]]
name = "a"
names = ["login_failed"]
"#;

    fn parse(alerts: &str) -> Result<Config, String> {
        let text = format!("{WINDOWS}\n{alerts}");
        Config::parse(&text, "test.toml", &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn a_declared_rule_is_read_with_its_defaults() {
        let c = parse(
            r#"
[[alerts]]
name = "HighErrorRate"
window = "errors_per_service"
value = "error_ratio"
op = ">"
threshold = 0.05
for = "2m"
keep_firing_for = "5m"
severity = "critical"
labels = { team = "checkout" }
annotations = { summary = "Error ratio {{ $value }} on {{ $labels.service }}" }
no_data = "keep_last"

[[alerts]]
name = "LoginBurst"
pattern = "burst"
"#,
        )
        .unwrap();
        let r = &c.alerts[0];
        assert_eq!(r.watch, Watch::Window("errors_per_service".into()));
        assert_eq!(r.value, RuleValue::Aggregate("error_ratio".into()));
        assert_eq!((r.op, r.threshold), (Op::Gt, 0.05));
        assert_eq!(
            (r.spec.for_ms, r.spec.keep_firing_for_ms),
            (120_000, 300_000)
        );
        assert_eq!(r.spec.labels["severity"], "critical");
        assert_eq!(r.spec.labels["team"], "checkout");
        assert_eq!(r.spec.no_data, NoDataMode::KeepLast);
        // Two windows of silence before no-data applies.
        assert_eq!(r.spec.no_data_after_ms, 120_000);
        assert_eq!(r.group_labels, ["service"]);
        let p = &c.alerts[1];
        assert_eq!(p.watch, Watch::Pattern("burst".into()));
        assert_eq!(
            (p.value.clone(), p.op, p.threshold),
            (RuleValue::MatchCount, Op::Ge, 1.0)
        );
    }

    #[test]
    fn mistakes_are_refused_naming_the_key() {
        let cases = [
            (
                "window = \"nope\"\nvalue = \"count\"\nop = \">\"\nthreshold = 1",
                "alerts[0].window",
                "no window is named `nope`",
            ),
            (
                "window = \"errors_per_service\"\nvalue = \"p95\"\nop = \">\"\nthreshold = 1",
                "alerts[0].value",
                "has no aggregate `p95`",
            ),
            (
                "window = \"errors_per_service\"\nvalue = \"count\"\nop = \"=>\"\nthreshold = 1",
                "alerts[0].op",
                "not a comparison",
            ),
            (
                "window = \"errors_per_service\"\nvalue = \"count\"\nop = \">\"\nthreshold = 1\nfor = \"2 fortnights\"",
                "alerts[0].for",
                "not a duration",
            ),
            (
                "window = \"errors_per_service\"\nvalue = \"count\"\nop = \">\"\nthreshold = 1\nno_data = \"maybe\"",
                "alerts[0].no_data",
                "not a no-data mode",
            ),
            (
                "pattern = \"no.such\"",
                "alerts[0].pattern",
                "no pattern is named",
            ),
            (
                "window = \"errors_per_service\"\npattern = \"burst\"",
                "alerts[0].window",
                "exactly one",
            ),
            (
                "window = \"errors_per_service\"\nvalue = \"count\"\nop = \">\"",
                "alerts[0].threshold",
                "required",
            ),
            (
                "pattern = \"burst\"\nlabels = { key = \"x\" }",
                "alerts[0].labels.key",
                "already set",
            ),
            (
                "pattern = \"burst\"\nlabels = { alertname = \"x\" }",
                "alerts[0].labels.alertname",
                "label name",
            ),
        ];
        for (body, key, message) in cases {
            let e = parse(&format!("[[alerts]]\nname = \"A\"\n{body}\n")).unwrap_err();
            assert!(e.contains(key) && e.contains(message), "{body}: {e}");
        }
        let e = parse("[[alerts]]\nname = \"A\"\npattern = \"burst\"\n[[alerts]]\nname = \"A\"\npattern = \"burst\"\n").unwrap_err();
        assert!(
            e.contains("alerts[1].name") && e.contains("duplicate alert name `A`"),
            "{e}"
        );
        let e =
            parse("[[alerts]]\nname = \"A\"\npattern = \"burst\"\nsevrity = \"x\"\n").unwrap_err();
        assert!(e.contains("sevrity"), "{e}");
    }

    #[test]
    fn a_plugin_rule_takes_the_lifecycle_keys_and_a_config_table() {
        let c = parse(
            r#"
[[alerts]]
name = "LatencyAnomaly"
plugin = "zscore-anomaly"
config = { window = "errors_per_service", aggregate = "count", k = 3.5, min_samples = 20 }
for = "2m"
keep_firing_for = "1m"
severity = "page"
labels = { team = "web" }
annotations = { runbook = "https://runbooks/latency" }
no_data = "keep_last"
max_instances = 50

[[alerts]]
name = "Plain"
plugin = "burn-rate"
"#,
        )
        .unwrap();
        assert!(c.alerts.is_empty());
        let r = &c.alert_plugins[0];
        assert_eq!(r.plugin, "zscore-anomaly");
        let config: serde_json::Value = serde_json::from_str(&r.config).unwrap();
        assert_eq!(
            config,
            serde_json::json!({"window": "errors_per_service", "aggregate": "count", "k": 3.5, "min_samples": 20})
        );
        assert_eq!(
            (r.spec.for_ms, r.spec.keep_firing_for_ms),
            (120_000, 60_000)
        );
        assert_eq!(r.spec.labels["severity"], "page");
        assert_eq!(r.spec.labels["team"], "web");
        assert_eq!(r.spec.annotations["runbook"], "https://runbooks/latency");
        assert_eq!(r.spec.no_data, NoDataMode::KeepLast);
        assert_eq!(r.spec.max_instances, 50);
        assert_eq!(c.alert_plugins[1].config, "{}");
    }

    #[test]
    fn a_plugin_rule_refuses_declared_keys_naming_them() {
        let cases = [
            (
                "plugin = \"z\"\nwindow = \"errors_per_service\"",
                "alerts[0].window",
                "not with `plugin`",
            ),
            (
                "plugin = \"z\"\npattern = \"burst\"",
                "alerts[0].pattern",
                "not with `plugin`",
            ),
            (
                "plugin = \"z\"\nvalue = \"count\"",
                "alerts[0].value",
                "not with `plugin`",
            ),
            (
                "plugin = \"z\"\nop = \">\"",
                "alerts[0].op",
                "not with `plugin`",
            ),
            (
                "plugin = \"z\"\nthreshold = 1",
                "alerts[0].threshold",
                "not with `plugin`",
            ),
            ("plugin = \"../z\"", "alerts[0].plugin", "not a plugin name"),
            (
                "plugin = \"z\"\nconfig = 3",
                "alerts[0].config",
                "must be a table",
            ),
            (
                "pattern = \"burst\"\nconfig = { k = 1 }",
                "alerts[0].config",
                "only with `plugin`",
            ),
            (
                "plugin = \"z\"\nno_data = \"maybe\"",
                "alerts[0].no_data",
                "not a no-data mode",
            ),
            (
                "window = \"errors_per_service\"\npattern = \"burst\"",
                "alerts[0].window",
                "or `plugin`",
            ),
        ];
        for (body, key, message) in cases {
            let e = parse(&format!("[[alerts]]\nname = \"A\"\n{body}\n")).unwrap_err();
            assert!(e.contains(key) && e.contains(message), "{body}: {e}");
        }
        let e = parse(
            "[[alerts]]\nname = \"A\"\npattern = \"burst\"\n[[alerts]]\nname = \"A\"\nplugin = \"z\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("alerts[1].name") && e.contains("duplicate"),
            "{e}"
        );
    }

    #[test]
    fn notify_targets_are_read_and_checked() {
        let c = parse(
            r#"
[[notify.alertmanager]]
url = "http://127.0.0.1:9093"
resend_delay = "30s"

[[notify.webhook]]
url = "https://hooks.example/eddy"
bearer_token = "secret-token"
max_attempts = 3
"#,
        )
        .unwrap();
        assert_eq!(c.notify.alertmanagers.len(), 1);
        assert_eq!(c.notify.alertmanagers[0].resend_delay.as_secs(), 30);
        assert_eq!(c.notify.webhooks[0].delivery.max_attempts, 3);
        assert_eq!(
            c.notify.webhooks[0].delivery.bearer_token.as_deref(),
            Some("secret-token")
        );
        for (body, key) in [
            (
                "[[notify.webhook]]\nurl = \"ftp://x\"",
                "notify.webhook[0].url",
            ),
            ("[[notify.webhook]]\nurl = \"\"", "notify.webhook[0].url"),
            (
                "[[notify.alertmanager]]\nurl = \"http://x\"\nresend = \"1m\"",
                "notify.alertmanager[0]",
            ),
            (
                "[[notify.alertmanager]]\nurl = \"http://x\"\nmax_attempts = 0",
                "notify.alertmanager[0].max_attempts",
            ),
            ("[notify]\nslack = []", "slack"),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.contains(key), "{body}: {e}");
        }
    }
}
