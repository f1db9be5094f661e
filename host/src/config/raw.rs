//! The raw form of `eddy.toml` as serde reads it (unknown keys and wrong
//! types rejected), and its validation into the public configuration types.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};

use super::{
    Config, ConfigError, DEFAULT_BATCH_SIZE, DEFAULT_COMPILE_TIMEOUT_MS, DEFAULT_DEADLINE_MS,
    DEFAULT_MAX_LOG_MESSAGE_BYTES, DEFAULT_MAX_LOG_RECORDS_PER_CALL, DEFAULT_MAX_METRICS,
    DEFAULT_MEMORY_LIMIT_MB, DEFAULT_PLUGINS_DIR, DEFAULT_PROBATION_BATCHES,
    DEFAULT_QUARANTINE_AFTER, DEFAULT_QUARANTINE_BACKOFF_MAX_MS, DEFAULT_QUARANTINE_BACKOFF_MS,
    DEFAULT_RELOAD_DEBOUNCE_MS, DEFAULT_STATE_MAX_KEY_BYTES, DEFAULT_STATE_MAX_KEYS,
    DEFAULT_STATE_MAX_VALUE_BYTES, FailurePolicy, MIB, PLUGINS_DIR_VAR, PipelineConfig,
    RuntimeConfig, StageConfig,
};

// ---------------------------------------------------------------------------
// Allowed ranges
// ---------------------------------------------------------------------------

/// An allowed range for an integer key, with the unit shown in errors.
#[derive(Debug, Clone, Copy)]
pub(super) struct Range {
    pub(super) min: i64,
    /// `None`: no upper bound.
    pub(super) max: Option<i64>,
    pub(super) unit: &'static str,
}

const U32_MAX: i64 = u32::MAX as i64;

const BATCH_SIZE: Range = Range {
    min: 1,
    max: Some(100_000),
    unit: "events",
};
const DEADLINE_MS: Range = Range {
    min: 1,
    max: Some(60_000),
    unit: "milliseconds",
};
const MEMORY_LIMIT_MB: Range = Range {
    min: 1,
    max: Some(4096),
    unit: "MiB",
};
const COMPILE_TIMEOUT_MS: Range = Range {
    min: 100,
    max: Some(600_000),
    unit: "milliseconds",
};
const QUARANTINE_AFTER: Range = Range {
    min: 1,
    max: Some(U32_MAX),
    unit: "batches",
};
const QUARANTINE_BACKOFF_MS: Range = Range {
    min: 1,
    max: None,
    unit: "milliseconds",
};
const PROBATION_BATCHES: Range = Range {
    min: 0,
    max: Some(U32_MAX),
    unit: "batches",
};
const RELOAD_DEBOUNCE_MS: Range = Range {
    min: 0,
    max: Some(10_000),
    unit: "milliseconds",
};
const MAX_LOG_RECORDS: Range = Range {
    min: 0,
    max: Some(U32_MAX),
    unit: "records",
};
const STATE_MAX_KEYS: Range = Range {
    min: 1,
    max: None,
    unit: "keys",
};
const STATE_MAX_VALUE_BYTES: Range = Range {
    min: 1,
    max: None,
    unit: "bytes",
};
const STATE_MAX_KEY_BYTES: Range = Range {
    min: 1,
    max: Some(65_536),
    unit: "bytes",
};
const MAX_METRICS: Range = Range {
    min: 0,
    max: Some(1_000_000),
    unit: "metrics",
};
const MAX_LOG_MESSAGE_BYTES: Range = Range {
    min: 1,
    max: Some(1_048_576),
    unit: "bytes",
};

// ---------------------------------------------------------------------------
// Raw (deserialized) form
// ---------------------------------------------------------------------------

/// An integer as written in the file; range checks come later, so negative
/// values get a range error rather than a type error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Int(pub(super) i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
        }
        deserializer.deserialize_i64(IntVisitor)
    }
}

pub(super) fn int(v: u64) -> Int {
    Int(i64::try_from(v).unwrap_or(i64::MAX))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    plugins_dir: Option<String>,
    #[serde(default)]
    pipeline: RawPipeline,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    stages: Vec<RawStage>,
    #[serde(default)]
    server: super::service::RawServer,
    #[serde(default)]
    ingest: super::service::RawIngest,
    #[serde(default)]
    streams: super::service::RawStreams,
    #[serde(default)]
    auth: super::service::RawAuth,
    #[serde(default)]
    time: super::windows::RawTime,
    #[serde(default)]
    windows: Vec<super::windows::RawWindow>,
    #[serde(default)]
    live: super::windows::RawLive,
    #[serde(default)]
    patterns: Vec<super::patterns::RawPattern>,
    data_dir: Option<String>,
    #[serde(default)]
    wal: super::wal::RawWal,
    #[serde(default)]
    alerts: Vec<super::alerts::RawAlert>,
    #[serde(default)]
    notify: super::alerts::RawNotify,
    #[serde(default)]
    sources: super::sources::RawSources,
    #[serde(default)]
    sinks: super::sinks::RawSinks,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPipeline {
    batch_size: Int,
}

impl Default for RawPipeline {
    fn default() -> Self {
        Self {
            batch_size: int(DEFAULT_BATCH_SIZE as u64),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRuntime {
    deadline_ms: Int,
    memory_limit_mb: Int,
    compile_timeout_ms: Int,
    quarantine_after: Int,
    quarantine_backoff_ms: Int,
    quarantine_backoff_max_ms: Int,
    probation_batches: Int,
    reload_debounce_ms: Int,
    max_log_records_per_call: Int,
    state_max_keys: Int,
    state_max_value_bytes: Int,
    state_max_key_bytes: Int,
    max_metrics: Int,
    max_log_message_bytes: Int,
}

impl Default for RawRuntime {
    fn default() -> Self {
        Self {
            deadline_ms: int(DEFAULT_DEADLINE_MS),
            memory_limit_mb: int(DEFAULT_MEMORY_LIMIT_MB),
            compile_timeout_ms: int(DEFAULT_COMPILE_TIMEOUT_MS),
            quarantine_after: int(u64::from(DEFAULT_QUARANTINE_AFTER)),
            quarantine_backoff_ms: int(DEFAULT_QUARANTINE_BACKOFF_MS),
            quarantine_backoff_max_ms: int(DEFAULT_QUARANTINE_BACKOFF_MAX_MS),
            probation_batches: int(u64::from(DEFAULT_PROBATION_BATCHES)),
            reload_debounce_ms: int(DEFAULT_RELOAD_DEBOUNCE_MS),
            max_log_records_per_call: int(u64::from(DEFAULT_MAX_LOG_RECORDS_PER_CALL)),
            state_max_keys: int(DEFAULT_STATE_MAX_KEYS),
            state_max_value_bytes: int(DEFAULT_STATE_MAX_VALUE_BYTES),
            state_max_key_bytes: int(DEFAULT_STATE_MAX_KEY_BYTES),
            max_metrics: int(DEFAULT_MAX_METRICS),
            max_log_message_bytes: int(DEFAULT_MAX_LOG_MESSAGE_BYTES),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawFailurePolicy {
    PassThrough,
    DeadLetter,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    plugin: String,
    name: Option<String>,
    on_failure: Option<RawFailurePolicy>,
    deadline_ms: Option<Int>,
    memory_limit_mb: Option<Int>,
    allow: Option<Vec<String>>,
    state: Option<String>,
    config: Option<toml::Table>,
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// Checks values of one source, building errors that name it.
pub(super) struct Validator<'a> {
    pub(super) origin: &'a str,
}

impl Validator<'_> {
    pub(super) fn invalid(
        &self,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// `value` if it lies in `range`, else an error naming `key`.
    pub(super) fn range(&self, key: &str, value: Int, range: Range) -> Result<u64, ConfigError> {
        let Int(v) = value;
        let in_range = v >= range.min && range.max.is_none_or(|max| v <= max);
        match u64::try_from(v) {
            Ok(v) if in_range => Ok(v),
            _ => {
                let allowed = match range.max {
                    Some(max) => format!("must be between {} and {max}", range.min),
                    None => format!("must be at least {}", range.min),
                };
                Err(self.invalid(
                    key,
                    format!("{v} is out of range: {allowed} ({})", range.unit),
                ))
            }
        }
    }

    pub(super) fn millis(
        &self,
        key: &str,
        value: Int,
        range: Range,
    ) -> Result<Duration, ConfigError> {
        self.range(key, value, range).map(Duration::from_millis)
    }

    fn count_u32(&self, key: &str, value: Int, range: Range) -> Result<u32, ConfigError> {
        let v = self.range(key, value, range)?;
        u32::try_from(v)
            .map_err(|_| self.invalid(key, format!("{v} is too large (at most {})", u32::MAX)))
    }

    fn mebibytes(&self, key: &str, value: Int) -> Result<u64, ConfigError> {
        self.range(key, value, MEMORY_LIMIT_MB).map(|mb| mb * MIB)
    }

    fn runtime(&self, raw: &RawRuntime) -> Result<RuntimeConfig, ConfigError> {
        let quarantine_backoff = self.millis(
            "runtime.quarantine_backoff_ms",
            raw.quarantine_backoff_ms,
            QUARANTINE_BACKOFF_MS,
        )?;
        let quarantine_backoff_max = self.millis(
            "runtime.quarantine_backoff_max_ms",
            raw.quarantine_backoff_max_ms,
            QUARANTINE_BACKOFF_MS,
        )?;
        if quarantine_backoff_max < quarantine_backoff {
            return Err(self.invalid(
                "runtime.quarantine_backoff_max_ms",
                format!(
                    "{max} is less than runtime.quarantine_backoff_ms = {first}: the backoff ceiling \
                     must be at least the first backoff; set it to {first} or more",
                    max = raw.quarantine_backoff_max_ms.0,
                    first = raw.quarantine_backoff_ms.0,
                ),
            ));
        }
        Ok(RuntimeConfig {
            deadline: self.millis("runtime.deadline_ms", raw.deadline_ms, DEADLINE_MS)?,
            memory_limit_bytes: self.mebibytes("runtime.memory_limit_mb", raw.memory_limit_mb)?,
            compile_timeout: self.millis(
                "runtime.compile_timeout_ms",
                raw.compile_timeout_ms,
                COMPILE_TIMEOUT_MS,
            )?,
            quarantine_after: self.count_u32(
                "runtime.quarantine_after",
                raw.quarantine_after,
                QUARANTINE_AFTER,
            )?,
            quarantine_backoff,
            quarantine_backoff_max,
            probation_batches: self.count_u32(
                "runtime.probation_batches",
                raw.probation_batches,
                PROBATION_BATCHES,
            )?,
            reload_debounce: self.millis(
                "runtime.reload_debounce_ms",
                raw.reload_debounce_ms,
                RELOAD_DEBOUNCE_MS,
            )?,
            max_log_records_per_call: self.count_u32(
                "runtime.max_log_records_per_call",
                raw.max_log_records_per_call,
                MAX_LOG_RECORDS,
            )?,
            state_max_keys: self.range(
                "runtime.state_max_keys",
                raw.state_max_keys,
                STATE_MAX_KEYS,
            )?,
            state_max_value_bytes: self.range(
                "runtime.state_max_value_bytes",
                raw.state_max_value_bytes,
                STATE_MAX_VALUE_BYTES,
            )?,
            state_max_key_bytes: self.range(
                "runtime.state_max_key_bytes",
                raw.state_max_key_bytes,
                STATE_MAX_KEY_BYTES,
            )?,
            max_metrics: self.range("runtime.max_metrics", raw.max_metrics, MAX_METRICS)?,
            max_log_message_bytes: self.range(
                "runtime.max_log_message_bytes",
                raw.max_log_message_bytes,
                MAX_LOG_MESSAGE_BYTES,
            )?,
            // Filled in from the stages by `RawConfig::validate`.
            grants: BTreeMap::new(),
        })
    }

    fn stage(&self, index: usize, raw: RawStage) -> Result<StageConfig, ConfigError> {
        let key = |field: &str| format!("stages[{index}].{field}");
        let plugin = raw.plugin;
        if !is_plugin_stem(&plugin) {
            let hint = match plugin.strip_suffix(".wasm") {
                Some(stem) if is_plugin_stem(stem) => format!(" (write `{stem}`, without `.wasm`)"),
                _ => String::new(),
            };
            return Err(self.invalid(
                key("plugin"),
                format!(
                    "`{plugin}` is not a valid plugin name{hint}: it must be the file name of a component in \
                     plugins_dir without `.wasm`, made of ASCII letters, digits, `-` and `_`"
                ),
            ));
        }
        let name = match raw.name {
            None => plugin.clone(),
            Some(name) if name.trim().is_empty() => {
                return Err(self.invalid(
                    key("name"),
                    "must not be empty (leave it out to use the plugin name)",
                ));
            }
            Some(name) if name.chars().any(char::is_control) => {
                return Err(
                    self.invalid(key("name"), format!("{name:?} contains control characters"))
                );
            }
            Some(name) => name,
        };
        let state = match raw.state {
            None => name.clone(),
            Some(scope) if is_state_scope(&scope) => scope,
            Some(scope) => {
                return Err(self.invalid(
                    key("state"),
                    format!(
                        "{scope:?} is not a valid state scope: use 1 to {MAX_STATE_SCOPE_BYTES} ASCII \
                         letters, digits, `-`, `_` and `.`; stages with the same `state` share one \
                         store, and without it a stage has its own"
                    ),
                ));
            }
        };
        let on_failure = match raw.on_failure {
            None | Some(RawFailurePolicy::PassThrough) => FailurePolicy::PassThrough,
            Some(RawFailurePolicy::DeadLetter) => FailurePolicy::DeadLetter,
        };
        let deadline = raw
            .deadline_ms
            .map(|v| self.millis(&key("deadline_ms"), v, DEADLINE_MS))
            .transpose()?;
        let memory_limit_bytes = raw
            .memory_limit_mb
            .map(|v| self.mebibytes(&key("memory_limit_mb"), v))
            .transpose()?;
        let mut allow = Vec::new();
        for (i, grant) in raw.allow.unwrap_or_default().iter().enumerate() {
            let grant = crate::plugin::capabilities::validate_grant(grant)
                .map_err(|message| self.invalid(format!("{}[{i}]", key("allow")), message))?;
            allow.push(grant);
        }
        allow.sort();
        allow.dedup();
        let config = self.json_table(&key("config"), raw.config.unwrap_or_default())?;
        Ok(StageConfig {
            name,
            plugin,
            on_failure,
            deadline,
            memory_limit_bytes,
            config,
            allow,
            state,
        })
    }

    /// Each plugin's grants, from its stages' `allow` lists. A grant belongs
    /// to the plugin file, which all its stages share (it is loaded once),
    /// so stages of the same plugin must grant the same list: a second
    /// stage must not silently receive a grant it does not show.
    fn grants(&self, stages: &[StageConfig]) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
        let mut first: HashMap<&str, usize> = HashMap::new();
        let mut grants = BTreeMap::new();
        for (index, stage) in stages.iter().enumerate() {
            match first.get(stage.plugin.as_str()) {
                None => {
                    first.insert(&stage.plugin, index);
                    if !stage.allow.is_empty() {
                        grants.insert(stage.plugin.clone(), stage.allow.clone());
                    }
                }
                Some(&f) if stages[f].allow != stage.allow => {
                    return Err(self.invalid(
                        format!("stages[{index}].allow"),
                        format!(
                            "{:?} differs from stages[{f}].allow = {:?}, which uses the same plugin \
                             `{}`: a grant applies to the plugin file, which its stages share, so \
                             give every stage with plugin = \"{}\" the same `allow` list",
                            stage.allow, stages[f].allow, stage.plugin, stage.plugin
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(grants)
    }

    fn json_table(&self, key: &str, table: toml::Table) -> Result<serde_json::Value, ConfigError> {
        let mut map = serde_json::Map::new();
        for (k, v) in table {
            let path = if !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                format!("{key}.{k}")
            } else {
                format!("{key}.{k:?}")
            };
            let v = self.json(&path, v)?;
            map.insert(k, v);
        }
        Ok(serde_json::Value::Object(map))
    }

    fn json(&self, key: &str, value: toml::Value) -> Result<serde_json::Value, ConfigError> {
        use serde_json::Value as Json;
        Ok(match value {
            toml::Value::String(s) => Json::String(s),
            toml::Value::Integer(i) => Json::from(i),
            toml::Value::Float(f) => serde_json::Number::from_f64(f)
                .map(Json::Number)
                .ok_or_else(|| {
                    self.invalid(
                        key,
                        format!("{f} cannot be handed to the plugin: JSON has no NaN or infinity"),
                    )
                })?,
            toml::Value::Boolean(b) => Json::Bool(b),
            toml::Value::Datetime(d) => Json::String(d.to_string()),
            toml::Value::Array(items) => Json::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| self.json(&format!("{key}[{i}]"), item))
                    .collect::<Result<_, _>>()?,
            ),
            toml::Value::Table(table) => self.json_table(key, table)?,
        })
    }
}

/// A component file stem: non-empty, ASCII letters, digits, `-` and `_`.
/// Longest `state` scope name: a name, not data.
const MAX_STATE_SCOPE_BYTES: usize = 128;

fn is_state_scope(s: &str) -> bool {
    (1..=MAX_STATE_SCOPE_BYTES).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_plugin_stem(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl RawConfig {
    /// Check every value and build the public [`Config`].
    pub(super) fn validate(
        self,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let v = Validator { origin };
        let plugins_dir = match self.plugins_dir {
            Some(dir) if dir.is_empty() => {
                return Err(v.invalid(
                    "plugins_dir",
                    "must not be empty (use \".\" for the current directory)",
                ));
            }
            Some(dir) => dir,
            None => env(PLUGINS_DIR_VAR)
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| DEFAULT_PLUGINS_DIR.to_owned()),
        };
        let batch_size = v.range("pipeline.batch_size", self.pipeline.batch_size, BATCH_SIZE)?;
        let batch_size = usize::try_from(batch_size).map_err(|_| {
            v.invalid(
                "pipeline.batch_size",
                format!("{batch_size} is too large for this platform"),
            )
        })?;
        let mut runtime = v.runtime(&self.runtime)?;
        let server = v.server(&self.server)?;
        let ingest = v.ingest(&self.ingest)?;
        let streams = v.streams(&self.streams)?;
        let auth = v.auth(self.auth)?;

        let mut stages = Vec::with_capacity(self.stages.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (index, raw) in self.stages.into_iter().enumerate() {
            let explicit_name = raw.name.is_some();
            let stage = v.stage(index, raw)?;
            if let Some(&first) = seen.get(&stage.name) {
                let hint = if explicit_name {
                    String::new()
                } else {
                    "; the name defaults to the plugin, so give one of these stages a distinct `name`".to_owned()
                };
                return Err(v.invalid(
                    format!("stages[{index}].name"),
                    format!(
                        "duplicate stage name `{}` (also stages[{first}]){hint}",
                        stage.name
                    ),
                ));
            }
            seen.insert(stage.name.clone(), index);
            stages.push(stage);
        }
        runtime.grants = v.grants(&stages)?;
        let time = v.time(&self.time)?;
        let windows = v.windows(self.windows, &time)?;
        let live = v.live(&self.live)?;
        let (patterns, pattern_plugins) = v.patterns(self.patterns, &time)?;
        let data_dir = match self.data_dir {
            Some(dir) if dir.is_empty() => {
                return Err(v.invalid(
                    "data_dir",
                    "must not be empty (use \".\" for the current directory)",
                ));
            }
            Some(dir) => dir,
            None => env(super::DATA_DIR_VAR)
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| super::DEFAULT_DATA_DIR.to_owned()),
        };
        let wal = v.wal(&self.wal)?;
        let (alerts, alert_plugins) = v.alerts(self.alerts, &windows, &patterns)?;
        let notify = v.notify(self.notify)?;
        let sources = v.sources(self.sources, wal.enabled, &windows)?;
        let sinks = v.sinks(self.sinks, &windows)?;

        Ok(Config {
            plugins_dir: PathBuf::from(plugins_dir),
            pipeline: PipelineConfig { batch_size },
            runtime,
            stages,
            server,
            ingest,
            streams,
            auth,
            time,
            windows,
            live,
            patterns,
            data_dir: PathBuf::from(data_dir),
            wal,
            alerts,
            alert_plugins,
            pattern_plugins,
            notify,
            sources,
            sinks,
        })
    }
}
