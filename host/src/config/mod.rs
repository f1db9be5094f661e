//! Pipeline configuration: `eddy.toml`.
//!
//! A configuration names the folder plugins are loaded from, the batch size,
//! the sandbox limits of the plugin runtime and the ordered list of stages.
//! [`DEFAULT_CONFIG`] is the embedded default, and its comments document
//! every key.
//!
//! Loading happens in three steps:
//!
//! 1. [`interpolate()`] replaces `${VAR}`, `${VAR:-fallback}` and `$$` in the
//!    raw text (never inside TOML comments);
//! 2. the text is parsed as TOML into private raw structs that reject unknown
//!    keys and wrongly typed values;
//! 3. every value is checked against its allowed range and turned into the
//!    public types ([`Config`], [`RuntimeConfig`], [`StageConfig`], ...).
//!
//! Every failure is a [`ConfigError`] whose message names the file, the key
//! and what is allowed.
//!
//! The interpolation lives in `interpolate`, the raw structs and their
//! validation in `raw`; this module holds the public types and the loader.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod alerts;
mod interpolate;
mod patterns;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod patterns_tests;
mod raw;
mod service;
mod sinks;
mod sources;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
mod wal;
mod windows;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod windows_tests;

pub use interpolate::interpolate;
pub use patterns::PluginPatternLimits;
pub use service::{
    AuthConfig, DEFAULT_LISTEN, IngestConfig, InvalidPolicy, ServerConfig, StreamsConfig,
};
pub use sinks::{DEFAULT_SINK_QUEUE_MESSAGES, KafkaSinkConfig, SinksConfig};
pub use sources::{
    KAFKA_SOURCE_BASE, KafkaFormat, KafkaSourceConfig, KafkaTimestamp, SourcesConfig,
};

use interpolate::{interpolate_text, parse_message};
use raw::RawConfig;

/// The embedded default configuration: the pipeline eddy runs when it is
/// given no configuration file. Its comments document every key.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// The `origin` used in errors about [`DEFAULT_CONFIG`].
const EMBEDDED_ORIGIN: &str = "embedded default";

/// Environment variable consulted when `plugins_dir` is left out.
const PLUGINS_DIR_VAR: &str = "EDDY_PLUGINS_DIR";
/// `plugins_dir` when it is left out and `EDDY_PLUGINS_DIR` is unset or empty.
const DEFAULT_PLUGINS_DIR: &str = "target/plugins";
/// Environment variable consulted when `data_dir` is left out.
const DATA_DIR_VAR: &str = "EDDY_DATA_DIR";
/// `data_dir` when it is left out and `EDDY_DATA_DIR` is unset or empty.
const DEFAULT_DATA_DIR: &str = "data";

const MIB: u64 = 1024 * 1024;

const DEFAULT_BATCH_SIZE: usize = 1000;
const DEFAULT_DEADLINE_MS: u64 = 100;
const DEFAULT_MEMORY_LIMIT_MB: u64 = 64;
const DEFAULT_COMPILE_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_QUARANTINE_AFTER: u32 = 3;
const DEFAULT_QUARANTINE_BACKOFF_MS: u64 = 1000;
const DEFAULT_QUARANTINE_BACKOFF_MAX_MS: u64 = 60_000;
const DEFAULT_PROBATION_BATCHES: u32 = 3;
const DEFAULT_RELOAD_DEBOUNCE_MS: u64 = 50;
const DEFAULT_MAX_LOG_RECORDS_PER_CALL: u32 = 100;
const DEFAULT_STATE_MAX_KEYS: u64 = 1_000_000;
const DEFAULT_STATE_MAX_VALUE_BYTES: u64 = 65_536;
// Keys name things ("seen:<distinct_id>"); a kilobyte is generous and stops
// a plugin from storing data in keys.
const DEFAULT_STATE_MAX_KEY_BYTES: u64 = 1024;
// Counters plus gauges: enough for any dashboard, small enough to export.
const DEFAULT_MAX_METRICS: u64 = 1000;
// A log line a person reads; longer messages are cut.
const DEFAULT_MAX_LOG_MESSAGE_BYTES: u64 = 4096;

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// A validated pipeline configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Folder of plugin components (`*.wasm`), watched for new versions. A
    /// relative path is kept relative: the caller resolves it against the
    /// current directory.
    pub plugins_dir: PathBuf,
    /// `[pipeline]`: how events are batched.
    pub pipeline: PipelineConfig,
    /// `[runtime]`: limits and recovery policy of the plugin runtime.
    pub runtime: RuntimeConfig,
    /// `[[stages]]`, in pipeline order. May be empty: events then pass
    /// through unchanged.
    pub stages: Vec<StageConfig>,
    /// `[server]`: the HTTP listener of `eddy serve`.
    pub server: ServerConfig,
    /// `[ingest]`: validation bounds and the ingest queue.
    pub ingest: IngestConfig,
    /// `[streams]`: WebSocket / SSE fan-out.
    pub streams: StreamsConfig,
    /// `[auth]`: API keys (none: open).
    pub auth: AuthConfig,
    /// `[time]`: event time (watermark defaults, the future-skew cap).
    pub time: crate::engine::time::TimeConfig,
    /// `[[windows]]`: event-time windows, in configuration order.
    pub windows: Vec<crate::window::WindowConfig>,
    /// `[live]`: the live users and top pages views.
    pub live: crate::window::LiveConfig,
    /// `[[patterns]]`: sequence patterns declared here, in order.
    pub patterns: Vec<crate::pattern::PatternConfig>,
    /// `[[patterns]]` entries with `plugin = "..."`: the limits and time
    /// settings of pattern plugins' patterns.
    pub pattern_plugins: Vec<PluginPatternLimits>,
    /// Where `eddy serve` keeps `wal/` and `checkpoints/` (`data_dir`,
    /// default `${EDDY_DATA_DIR:-data}`). Relative paths stay relative.
    pub data_dir: PathBuf,
    /// `[wal]`: the write-ahead log, checkpoints and deduplication.
    pub wal: crate::wal::WalConfig,
    /// `[[alerts]]`: declared alert rules, in order.
    pub alerts: Vec<crate::alert::DeclaredRule>,
    /// `[[alerts]]` entries with `plugin = "..."`: alert plugin rules, in
    /// order.
    pub alert_plugins: Vec<crate::alert::PluginRule>,
    /// `[notify]`: where alerts are delivered (`eddy serve` only).
    pub notify: crate::alert::notify::NotifyConfig,
    /// `[[sources.kafka]]`: Kafka topics `eddy serve` consumes.
    pub sources: SourcesConfig,
    /// `[[sinks.kafka]]`: channels `eddy serve` publishes to Kafka.
    pub sinks: SinksConfig,
}

/// `[pipeline]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Events per batch handed to each stage (`batch_size`, 1..=100000).
    pub batch_size: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }
}

/// `[runtime]` settings: sandbox limits and failure recovery, shared by all
/// plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Per-call deadline of a stage that sets none of its own
    /// (`deadline_ms`, 1..=60000).
    pub deadline: Duration,
    /// Per-instance linear-memory cap of a stage that sets none of its own,
    /// in bytes (`memory_limit_mb`, 1..=4096 MiB).
    pub memory_limit_bytes: u64,
    /// A component that takes longer than this to compile is refused
    /// (`compile_timeout_ms`, 100..=600000).
    pub compile_timeout: Duration,
    /// Consecutive failed batches before a plugin is quarantined
    /// (`quarantine_after`, at least 1).
    pub quarantine_after: u32,
    /// First retry delay after quarantine; doubles after every failed retry
    /// (`quarantine_backoff_ms`, at least 1).
    pub quarantine_backoff: Duration,
    /// Ceiling of that doubling backoff (`quarantine_backoff_max_ms`, at
    /// least `quarantine_backoff_ms`).
    pub quarantine_backoff_max: Duration,
    /// A new version failing within its first N batches is rolled back; 0
    /// disables probation (`probation_batches`).
    pub probation_batches: u32,
    /// How long the plugins folder must be quiet before a reload
    /// (`reload_debounce_ms`, 0..=10000).
    pub reload_debounce: Duration,
    /// Log records a plugin may emit per call; the rest are counted and
    /// dropped (`max_log_records_per_call`).
    pub max_log_records_per_call: u32,
    /// Keys a plugin may hold in its host-backed state store
    /// (`state_max_keys`, at least 1).
    pub state_max_keys: u64,
    /// Largest single state value, in bytes (`state_max_value_bytes`, at
    /// least 1).
    pub state_max_value_bytes: u64,
    /// Longest state key, in bytes (`state_max_key_bytes`, at least 1).
    pub state_max_key_bytes: u64,
    /// Custom metrics (counters plus gauges) one plugin may create
    /// (`max_metrics`).
    pub max_metrics: u64,
    /// Longest log message kept from a plugin, in bytes; longer ones are cut
    /// (`max_log_message_bytes`, at least 1).
    pub max_log_message_bytes: u64,
    /// Capability grants by plugin name (file stem), gathered from the
    /// stages' `allow` lists: what a plugin's component may import beyond
    /// the default (see [`crate::plugin::capabilities`]). A plugin missing
    /// here gets the default only. Not a `[runtime]` key: it lives here
    /// because the registry, which checks plugins as their files load,
    /// receives the runtime settings.
    pub grants: BTreeMap<String, Vec<String>>,
}

impl RuntimeConfig {
    /// The grants of plugin `name` (empty: the default policy only).
    pub fn grants_for(&self, name: &str) -> &[String] {
        self.grants.get(name).map_or(&[], Vec::as_slice)
    }
}

impl Default for RuntimeConfig {
    /// The values of the embedded default configuration.
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(DEFAULT_DEADLINE_MS),
            memory_limit_bytes: DEFAULT_MEMORY_LIMIT_MB * MIB,
            compile_timeout: Duration::from_millis(DEFAULT_COMPILE_TIMEOUT_MS),
            quarantine_after: DEFAULT_QUARANTINE_AFTER,
            quarantine_backoff: Duration::from_millis(DEFAULT_QUARANTINE_BACKOFF_MS),
            quarantine_backoff_max: Duration::from_millis(DEFAULT_QUARANTINE_BACKOFF_MAX_MS),
            probation_batches: DEFAULT_PROBATION_BATCHES,
            reload_debounce: Duration::from_millis(DEFAULT_RELOAD_DEBOUNCE_MS),
            max_log_records_per_call: DEFAULT_MAX_LOG_RECORDS_PER_CALL,
            state_max_keys: DEFAULT_STATE_MAX_KEYS,
            state_max_value_bytes: DEFAULT_STATE_MAX_VALUE_BYTES,
            state_max_key_bytes: DEFAULT_STATE_MAX_KEY_BYTES,
            max_metrics: DEFAULT_MAX_METRICS,
            max_log_message_bytes: DEFAULT_MAX_LOG_MESSAGE_BYTES,
            grants: BTreeMap::new(),
        }
    }
}

/// One `[[stages]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageConfig {
    /// Unique stage name, used in logs, metrics and dead letters (`name`,
    /// defaults to `plugin`).
    pub name: String,
    /// File stem of the component in the plugins folder (`plugin`).
    pub plugin: String,
    /// What happens to a batch the stage fails on (`on_failure`).
    pub on_failure: FailurePolicy,
    /// Per-stage override of [`RuntimeConfig::deadline`] (`deadline_ms`).
    /// Use [`Config::stage_deadline`] for the effective value.
    pub deadline: Option<Duration>,
    /// Per-stage override of [`RuntimeConfig::memory_limit_bytes`]
    /// (`memory_limit_mb`). Use [`Config::stage_memory_limit`] for the
    /// effective value.
    pub memory_limit_bytes: Option<u64>,
    /// The stage's `config` table, handed to the plugin. Always a JSON
    /// object (empty when the table is absent); TOML dates and times are
    /// converted to RFC 3339 strings.
    pub config: serde_json::Value,
    /// Capabilities granted to the plugin beyond the default (`allow`):
    /// package or interface names such as `wasi:filesystem`, sorted, without
    /// duplicates. Every stage of one plugin grants the same list; the
    /// registry reads it from [`RuntimeConfig::grants`].
    pub allow: Vec<String>,
    /// The state scope whose key-value store the plugin's `state` import
    /// uses (`state`): stages with the same scope share one store. Defaults
    /// to the stage's name, so by default every stage has its own.
    pub state: String,
}

/// What a stage does with a batch's events when it fails on that batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// `"pass-through"`: the events continue unchanged to the next stage.
    #[default]
    PassThrough,
    /// `"dead-letter"`: the events go to the dead-letter output.
    DeadLetter,
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PassThrough => "pass-through",
            Self::DeadLetter => "dead-letter",
        })
    }
}

/// Why a configuration could not be loaded. The `Display` form is meant for
/// users: it names the file (`origin`), the line or key, what is wrong and
/// what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `${NAME}` names an environment variable that is not set.
    #[error(
        "{origin}:{line}: environment variable `{name}` is not set \
         (set it, give a fallback with `${{{name}:-fallback}}`, or write `$$` for a literal `$`)"
    )]
    UnsetVariable {
        /// The file (or "embedded default").
        origin: String,
        /// 1-based line of the reference.
        line: usize,
        /// The variable's name.
        name: String,
    },
    /// A malformed `${...}` reference, or a substituted value that cannot be
    /// placed where it is referenced.
    #[error("{origin}:{line}: {message}")]
    BadSyntax {
        /// The file (or "embedded default").
        origin: String,
        /// 1-based line of the reference.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// TOML syntax error, unknown key or wrongly typed value. `message` is
    /// toml's, which names the key and shows the line.
    #[error("{origin}: {message}")]
    Parse {
        /// The file (or "embedded default").
        origin: String,
        /// What is wrong, with the offending line.
        message: String,
    },
    /// A well-formed value that is not allowed (out of range, duplicate
    /// stage name, ...).
    #[error("{origin}: {key}: {message}")]
    Invalid {
        /// The file (or "embedded default").
        origin: String,
        /// Path of the key, e.g. `runtime.memory_limit_mb` or
        /// `stages[2].deadline_ms` (stages count from 0).
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl Config {
    /// Load from a file, or the embedded default when `path` is None,
    /// interpolating from the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let config = match path {
            None => Self::parse(DEFAULT_CONFIG, EMBEDDED_ORIGIN, &process_env)?,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                Self::parse(&text, &path.display().to_string(), &process_env)?
            }
        };
        tracing::debug!(
            origin = %path.map_or_else(|| EMBEDDED_ORIGIN.to_owned(), |p| p.display().to_string()),
            plugins_dir = %config.plugins_dir.display(),
            stages = config.stages.len(),
            "configuration loaded"
        );
        Ok(config)
    }

    /// Parse text; `origin` names the source in errors (a path or
    /// "embedded default"); `env` looks up variables.
    ///
    /// When `plugins_dir` is left out it is `${EDDY_PLUGINS_DIR:-target/plugins}`,
    /// as in the embedded default.
    pub fn parse(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let interpolated = interpolate_text(text, origin, env)?;
        let raw: RawConfig =
            toml::from_str(&interpolated.text).map_err(|err| ConfigError::Parse {
                origin: origin.to_owned(),
                message: parse_message(&err, text, &interpolated),
            })?;
        raw.validate(origin, env)
    }

    /// The effective deadline of a stage: its `deadline_ms` override, or the
    /// runtime default.
    pub fn stage_deadline(&self, stage: &StageConfig) -> Duration {
        stage.deadline.unwrap_or(self.runtime.deadline)
    }

    /// The effective linear-memory cap of a stage, in bytes: its
    /// `memory_limit_mb` override, or the runtime default.
    pub fn stage_memory_limit(&self, stage: &StageConfig) -> u64 {
        stage
            .memory_limit_bytes
            .unwrap_or(self.runtime.memory_limit_bytes)
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}
