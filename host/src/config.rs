//! Pipeline configuration: `eddy.toml`.
//!
//! A configuration names the folder plugins are loaded from, the batch size,
//! the sandbox limits of the plugin runtime and the ordered list of stages.
//! [`DEFAULT_CONFIG`] is the embedded default, and its comments document
//! every key.
//!
//! Loading happens in three steps:
//!
//! 1. [`interpolate`] replaces `${VAR}`, `${VAR:-fallback}` and `$$` in the
//!    raw text (never inside TOML comments);
//! 2. the text is parsed as TOML into private raw structs that reject unknown
//!    keys and wrongly typed values;
//! 3. every value is checked against its allowed range and turned into the
//!    public types ([`Config`], [`RuntimeConfig`], [`StageConfig`], ...).
//!
//! Every failure is a [`ConfigError`] whose message names the file, the key
//! and what is allowed.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};

/// The embedded default configuration: the pipeline eddy runs when it is
/// given no configuration file. Its comments document every key.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// The `origin` used in errors about [`DEFAULT_CONFIG`].
const EMBEDDED_ORIGIN: &str = "embedded default";
/// The `origin` used in errors from the free function [`interpolate`].
const TEXT_ORIGIN: &str = "configuration text";

/// Environment variable consulted when `plugins_dir` is left out.
const PLUGINS_DIR_VAR: &str = "EDDY_PLUGINS_DIR";
/// `plugins_dir` when it is left out and `EDDY_PLUGINS_DIR` is unset or empty.
const DEFAULT_PLUGINS_DIR: &str = "target/plugins";

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

/// An allowed range for an integer key, with the unit shown in errors.
#[derive(Debug, Clone, Copy)]
struct Range {
    min: i64,
    /// `None`: no upper bound.
    max: Option<i64>,
    unit: &'static str,
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

/// Replace environment references in configuration text: `${VAR}` (an error
/// if VAR is unset), `${VAR:-fallback}` (the fallback when VAR is unset or
/// empty) and `$$` (a literal `$`). Any other `$` is kept. Nothing is
/// replaced inside TOML comments.
///
/// A value from the environment substituted inside a basic (`"..."`) string
/// is escaped, so the string holds exactly that value; inside a literal
/// (`'...'`) string a value that cannot be represented there is an error.
/// Fallbacks are part of the file and are inserted as written.
///
/// Errors name the origin "configuration text"; [`Config::parse`] names the
/// real source.
pub fn interpolate(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    interpolate_text(text, TEXT_ORIGIN, env).map(|i| i.text)
}

fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

// ---------------------------------------------------------------------------
// Interpolation
// ---------------------------------------------------------------------------

/// Interpolated text, with where each of its lines came from.
struct Interpolated {
    text: String,
    /// `line_map[k]`: 1-based line of the original text that output line
    /// `k + 1` comes from (values with raw newlines add output lines).
    line_map: Vec<usize>,
    /// Values taken from the environment: the 1-based original line and
    /// name of the reference, and the text inserted for it.
    substituted: Vec<(usize, String, String)>,
}

/// Where the scanner is, as far as TOML quoting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    Bare,
    Comment,
    Basic,
    MultiBasic,
    Literal,
    MultiLiteral,
}

fn is_var_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_var_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn interpolate_text(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Interpolated, ConfigError> {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let starts_with = |i: usize, s: &str| s.chars().enumerate().all(|(k, c)| at(i + k) == Some(c));
    let bad = |line: usize, message: String| ConfigError::BadSyntax {
        origin: origin.to_owned(),
        line,
        message,
    };

    let mut out = String::with_capacity(text.len());
    let mut line = 1;
    let mut line_map = vec![1];
    let mut substituted = Vec::new();
    let mut quoting = Quoting::Bare;
    let mut i = 0;
    while let Some(c) = at(i) {
        if c == '\n' {
            out.push('\n');
            line += 1;
            line_map.push(line);
            // Single-line strings and comments end at the line's end.
            if matches!(
                quoting,
                Quoting::Comment | Quoting::Basic | Quoting::Literal
            ) {
                quoting = Quoting::Bare;
            }
            i += 1;
            continue;
        }
        if quoting == Quoting::Comment {
            out.push(c);
            i += 1;
            continue;
        }
        if c == '$' {
            if at(i + 1) == Some('$') {
                out.push('$');
                i += 2;
                continue;
            }
            if at(i + 1) == Some('{') {
                let (value, next) = reference(&chars, i, line, origin, env)?;
                if let Some((name, value)) = value.from_env {
                    let placed = place(&value, quoting).map_err(|why| {
                        bad(
                            line,
                            format!("the value of environment variable `{name}` {why}"),
                        )
                    })?;
                    line_map.extend(std::iter::repeat_n(line, placed.matches('\n').count()));
                    out.push_str(&placed);
                    substituted.push((line, name, placed));
                } else {
                    line_map.extend(std::iter::repeat_n(
                        line,
                        value.fallback.matches('\n').count(),
                    ));
                    out.push_str(&value.fallback);
                }
                i = next;
                continue;
            }
            out.push('$');
            i += 1;
            continue;
        }
        // Track TOML quoting so comments are recognised and substituted
        // values can be escaped for the string they land in.
        let mut len = 1;
        match quoting {
            Quoting::Bare => {
                if c == '#' {
                    quoting = Quoting::Comment;
                } else if starts_with(i, "\"\"\"") {
                    quoting = Quoting::MultiBasic;
                    len = 3;
                } else if starts_with(i, "'''") {
                    quoting = Quoting::MultiLiteral;
                    len = 3;
                } else if c == '"' {
                    quoting = Quoting::Basic;
                } else if c == '\'' {
                    quoting = Quoting::Literal;
                }
            }
            // An escape: skip the escaped character, unless it is a line
            // break (the loop must see it to count lines) or a `$` (which
            // still starts a reference).
            Quoting::Basic | Quoting::MultiBasic
                if c == '\\' && at(i + 1).is_some_and(|n| n != '\n' && n != '$') =>
            {
                len = 2;
            }
            Quoting::Basic if c == '"' => quoting = Quoting::Bare,
            Quoting::Literal if c == '\'' => quoting = Quoting::Bare,
            Quoting::MultiBasic if starts_with(i, "\"\"\"") => {
                quoting = Quoting::Bare;
                len = 3;
                // Up to two more quotes are content before the delimiter.
                while len < 5 && at(i + len) == Some('"') {
                    len += 1;
                }
            }
            Quoting::MultiLiteral if starts_with(i, "'''") => {
                quoting = Quoting::Bare;
                len = 3;
                while len < 5 && at(i + len) == Some('\'') {
                    len += 1;
                }
            }
            _ => {}
        }
        out.extend(chars.iter().skip(i).take(len));
        i += len;
    }
    Ok(Interpolated {
        text: out,
        line_map,
        substituted,
    })
}

/// The outcome of one `${...}` reference.
struct Resolved {
    /// The variable's name and value, when the value comes from the
    /// environment.
    from_env: Option<(String, String)>,
    /// Otherwise: the fallback written in the file.
    fallback: String,
}

/// Resolve the reference starting at `chars[start]` (the `$` of `${`);
/// returns its value and the index just past its `}`.
fn reference(
    chars: &[char],
    start: usize,
    line: usize,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Resolved, usize), ConfigError> {
    let bad = |message: String| ConfigError::BadSyntax {
        origin: origin.to_owned(),
        line,
        message,
    };
    let open = start + 2;
    let Some(close) = chars
        .iter()
        .skip(open)
        .take_while(|&&c| c != '\n')
        .position(|&c| c == '}')
        .map(|p| open + p)
    else {
        let rest: String = chars
            .iter()
            .skip(start)
            .take_while(|&&c| c != '\n')
            .collect();
        return Err(bad(format!(
            "unterminated `${{` in `{rest}`: expected `${{NAME}}` or `${{NAME:-fallback}}`"
        )));
    };
    let inner: String = chars.iter().skip(open).take(close - open).collect();
    let (name, fallback) = match inner.split_once(":-") {
        Some((name, fallback)) => (name, Some(fallback)),
        None => (inner.as_str(), None),
    };
    let valid_name = name.chars().next().is_some_and(is_var_start) && name.chars().all(is_var_char);
    if !valid_name {
        let what = if name.is_empty() {
            "an empty variable name".to_owned()
        } else if let Some(pos) = name
            .find(|c: char| !is_var_char(c))
            .filter(|_| name.chars().next().is_some_and(is_var_start))
        {
            let name_part = name.get(..pos).unwrap_or_default();
            let after = name.get(pos..).unwrap_or_default();
            format!(
                "unexpected `{after}` after variable name `{name_part}` (a fallback is written `:-fallback`)"
            )
        } else {
            format!("invalid variable name `{name}`")
        };
        return Err(bad(format!(
            "bad reference `${{{inner}}}`: {what}; variable names are ASCII letters, digits and `_`, \
             not starting with a digit; write `${{NAME}}` or `${{NAME:-fallback}}`"
        )));
    }
    let value = env(name);
    let resolved = match (value, fallback) {
        (Some(v), Some(fallback)) if v.is_empty() => Resolved {
            from_env: None,
            fallback: fallback.to_owned(),
        },
        (Some(v), _) => Resolved {
            from_env: Some((name.to_owned(), v)),
            fallback: String::new(),
        },
        (None, Some(fallback)) => Resolved {
            from_env: None,
            fallback: fallback.to_owned(),
        },
        (None, None) => {
            return Err(ConfigError::UnsetVariable {
                origin: origin.to_owned(),
                line,
                name: name.to_owned(),
            });
        }
    };
    Ok((resolved, close + 1))
}

/// Make an environment value fit where it is substituted; `Err` says why it
/// cannot.
fn place(value: &str, quoting: Quoting) -> Result<String, String> {
    match quoting {
        Quoting::Basic | Quoting::MultiBasic => {
            let mut escaped = String::with_capacity(value.len());
            for c in value.chars() {
                match c {
                    '\\' => escaped.push_str("\\\\"),
                    '"' => escaped.push_str("\\\""),
                    '\n' => escaped.push_str("\\n"),
                    '\r' => escaped.push_str("\\r"),
                    '\t' => escaped.push('\t'),
                    c if c.is_control() => escaped.push_str(&format!("\\u{:04X}", u32::from(c))),
                    c => escaped.push(c),
                }
            }
            Ok(escaped)
        }
        Quoting::Literal => {
            if value.contains('\'') {
                Err("contains `'`, which a '...' literal string cannot hold; use a \"...\" string instead".to_owned())
            } else if value.chars().any(|c| c.is_control() && c != '\t') {
                Err("contains a line break or control character, which a '...' literal string cannot hold; \
                     use a \"...\" string instead"
                    .to_owned())
            } else {
                Ok(value.to_owned())
            }
        }
        Quoting::MultiLiteral => {
            if value.contains("'''") {
                Err("contains `'''`, which a '''...''' literal string cannot hold; use a \"...\" string instead".to_owned())
            } else {
                Ok(value.to_owned())
            }
        }
        Quoting::Bare | Quoting::Comment => Ok(value.to_owned()),
    }
}

/// Environment values shorter than this are not redacted from toml's
/// messages: they are too short to be secrets, and replacing them would
/// mangle the message's own words.
const REDACT_MIN_LEN: usize = 4;

/// toml's message for `err`, except when the offending line had an
/// environment value substituted (or lines moved): then the line is shown as
/// written in the file and values substituted on it are replaced by their
/// `${NAME}` in the message, so a secret does not end up in an error
/// message.
fn parse_message(err: &toml::de::Error, original: &str, interpolated: &Interpolated) -> String {
    let fallback = || err.to_string().trim_end().to_owned();
    let Some(span) = err.span() else {
        return fallback();
    };
    let out_line = interpolated
        .text
        .get(..span.start)
        .map_or(1, |before| before.matches('\n').count() + 1);
    let Some(&line) = interpolated.line_map.get(out_line - 1) else {
        return fallback();
    };
    let on_line: Vec<_> = interpolated
        .substituted
        .iter()
        .filter(|(l, _, _)| *l == line)
        .collect();
    if out_line == line && on_line.is_empty() {
        return fallback();
    }
    let mut message = err.message().trim_end().to_owned();
    for (_, name, value) in on_line {
        if value.chars().count() >= REDACT_MIN_LEN {
            message = message.replace(value.as_str(), &format!("${{{name}}}"));
        }
    }
    let written = original.lines().nth(line - 1).unwrap_or_default();
    let gutter = " ".repeat(line.to_string().len());
    format!(
        "TOML parse error at line {line} (shown as written, before `${{...}}` substitution)\n\
         {gutter} |\n{line} | {written}\n{gutter} |\n{message}"
    )
}

// ---------------------------------------------------------------------------
// Raw (deserialized) form
// ---------------------------------------------------------------------------

/// An integer as written in the file; range checks come later, so negative
/// values get a range error rather than a type error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Int(i64);

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

fn int(v: u64) -> Int {
    Int(i64::try_from(v).unwrap_or(i64::MAX))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    plugins_dir: Option<String>,
    #[serde(default)]
    pipeline: RawPipeline,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    stages: Vec<RawStage>,
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
    config: Option<toml::Table>,
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// Checks values of one source, building errors that name it.
struct Validator<'a> {
    origin: &'a str,
}

impl Validator<'_> {
    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// `value` if it lies in `range`, else an error naming `key`.
    fn range(&self, key: &str, value: Int, range: Range) -> Result<u64, ConfigError> {
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

    fn millis(&self, key: &str, value: Int, range: Range) -> Result<Duration, ConfigError> {
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
        let config = self.json_table(&key("config"), raw.config.unwrap_or_default())?;
        Ok(StageConfig {
            name,
            plugin,
            on_failure,
            deadline,
            memory_limit_bytes,
            config,
        })
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
fn is_plugin_stem(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl RawConfig {
    fn validate(
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
        let runtime = v.runtime(&self.runtime)?;

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

        Ok(Config {
            plugins_dir: PathBuf::from(plugins_dir),
            pipeline: PipelineConfig { batch_size },
            runtime,
            stages,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "eddy.toml", &no_env)
    }

    fn err(text: &str) -> ConfigError {
        parse(text).expect_err("config should be rejected")
    }

    fn stage(config: &str) -> String {
        format!("[[stages]]\nplugin = \"p\"\n{config}\n")
    }

    #[test]
    fn default_config_parses() {
        let config = Config::parse(DEFAULT_CONFIG, EMBEDDED_ORIGIN, &no_env).unwrap();
        assert_eq!(config.plugins_dir, PathBuf::from("target/plugins"));
        assert_eq!(config.pipeline, PipelineConfig { batch_size: 1000 });
        assert_eq!(config.runtime, RuntimeConfig::default());
        let names: Vec<_> = config
            .stages
            .iter()
            .map(|s| (s.name.as_str(), s.plugin.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("bot-filter", "bot-filter"),
                ("ua-enricher", "ua-enricher"),
                ("pii-scrubber", "pii-scrubber"),
                ("first-seen", "first-seen")
            ]
        );
        assert!(
            config
                .stages
                .iter()
                .all(|s| s.on_failure == FailurePolicy::PassThrough)
        );
        assert!(
            config
                .stages
                .iter()
                .all(|s| s.deadline.is_none() && s.memory_limit_bytes.is_none())
        );
        assert_eq!(config.stages[2].config, json!({ "salt": "change-me" }));
        assert_eq!(config.stages[0].config, json!({}));
    }

    #[test]
    fn default_runtime_values() {
        let r = RuntimeConfig::default();
        assert_eq!(r.deadline, Duration::from_millis(100));
        assert_eq!(r.memory_limit_bytes, 64 * 1024 * 1024);
        assert_eq!(r.compile_timeout, Duration::from_secs(30));
        assert_eq!(r.quarantine_after, 3);
        assert_eq!(r.quarantine_backoff, Duration::from_secs(1));
        assert_eq!(r.quarantine_backoff_max, Duration::from_secs(60));
        assert_eq!(r.probation_batches, 3);
        assert_eq!(r.reload_debounce, Duration::from_millis(50));
        assert_eq!(r.max_log_records_per_call, 100);
        assert_eq!(r.state_max_keys, 1_000_000);
        assert_eq!(r.state_max_value_bytes, 65_536);
    }

    #[test]
    fn default_toml_sets_every_key() {
        // Users learn the keys from the default file: it must show them all.
        let table: toml::Table =
            toml::from_str(&interpolate(DEFAULT_CONFIG, &no_env).unwrap()).unwrap();
        assert!(table.contains_key("plugins_dir"));
        assert_eq!(table["pipeline"].as_table().unwrap().len(), 1);
        let runtime = table["runtime"].as_table().unwrap();
        for key in [
            "deadline_ms",
            "memory_limit_mb",
            "compile_timeout_ms",
            "quarantine_after",
            "quarantine_backoff_ms",
            "quarantine_backoff_max_ms",
            "probation_batches",
            "reload_debounce_ms",
            "max_log_records_per_call",
            "state_max_keys",
            "state_max_value_bytes",
        ] {
            assert!(
                runtime.contains_key(key),
                "default.toml lacks runtime.{key}"
            );
        }
        assert_eq!(runtime.len(), 11);
    }

    #[test]
    fn default_config_uses_environment() {
        let env = env_of(&[
            ("EDDY_PLUGINS_DIR", "/opt/eddy/plugins"),
            ("EDDY_PII_SALT", "pepper"),
        ]);
        let config = Config::parse(DEFAULT_CONFIG, EMBEDDED_ORIGIN, &env).unwrap();
        assert_eq!(config.plugins_dir, PathBuf::from("/opt/eddy/plugins"));
        assert_eq!(config.stages[2].config, json!({ "salt": "pepper" }));
    }

    #[test]
    fn load_embedded_default() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.stages.len(), 4);
    }

    #[test]
    fn load_file_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eddy.toml");
        std::fs::write(&path, "plugins_dir = \"p\"\n[pipeline]\nbatch_size = 7\n").unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.pipeline.batch_size, 7);
        assert_eq!(config.plugins_dir, PathBuf::from("p"));

        let missing = dir.path().join("nope.toml");
        let e = Config::load(Some(&missing)).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("nope.toml"), "{e}");

        std::fs::write(&path, "[runtime]\ndeadline_ms = 0\n").unwrap();
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: runtime.deadline_ms", path.display())),
            "{e}"
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.plugins_dir, PathBuf::from(DEFAULT_PLUGINS_DIR));
        assert_eq!(config.pipeline, PipelineConfig::default());
        assert_eq!(config.runtime, RuntimeConfig::default());
        assert!(config.stages.is_empty());

        let env = env_of(&[("EDDY_PLUGINS_DIR", "from-env")]);
        let config = Config::parse("", "eddy.toml", &env).unwrap();
        assert_eq!(config.plugins_dir, PathBuf::from("from-env"));
    }

    #[test]
    fn relative_plugins_dir_stays_relative() {
        let config = parse("plugins_dir = \"./plugins\"").unwrap();
        assert_eq!(config.plugins_dir, PathBuf::from("./plugins"));
    }

    #[test]
    fn interpolation() {
        let env = env_of(&[("SET", "value"), ("EMPTY", ""), ("Q", "a\"b\\c\nd")]);
        let cases: &[(&str, &str)] = &[
            ("x = \"${SET}\"", "x = \"value\""),
            ("x = \"${SET:-other}\"", "x = \"value\""),
            ("x = \"${UNSET:-fallback}\"", "x = \"fallback\""),
            ("x = \"${EMPTY:-fallback}\"", "x = \"fallback\""),
            ("x = \"${EMPTY}\"", "x = \"\""),
            ("x = \"${UNSET:-}\"", "x = \"\""),
            ("x = \"$$HOME\"", "x = \"$HOME\""),
            ("x = \"$${SET}\"", "x = \"${SET}\""),
            ("x = \"a$b $ c$\"", "x = \"a$b $ c$\""),
            ("# ${NOPE} and $$", "# ${NOPE} and $$"),
            ("x = 1 # ${NOPE}", "x = 1 # ${NOPE}"),
            ("x = \"#${SET}\" # ${NOPE}", "x = \"#value\" # ${NOPE}"),
            ("x = '#${SET}' # ${NOPE}", "x = '#value' # ${NOPE}"),
            (
                "x = \"\\\"#${SET}\" # ${NOPE}",
                "x = \"\\\"#value\" # ${NOPE}",
            ),
            (
                "x = \"\"\"\n#${SET}\n\"\"\" # ${NOPE}",
                "x = \"\"\"\n#value\n\"\"\" # ${NOPE}",
            ),
            (
                "x = '''\n#${SET}\n''' # ${NOPE}",
                "x = '''\n#value\n''' # ${NOPE}",
            ),
            ("n = ${SET}", "n = value"),
            ("x = \"${Q}\"", "x = \"a\\\"b\\\\c\\nd\""),
            ("x = \"${UNSET:-C:\\\\dir}\"", "x = \"C:\\\\dir\""),
            ("# ${NOPE}\ny = \"${SET}\"", "# ${NOPE}\ny = \"value\""),
        ];
        for (input, expected) in cases {
            assert_eq!(
                interpolate(input, &env).unwrap(),
                *expected,
                "input: {input}"
            );
        }
    }

    #[test]
    fn interpolated_value_round_trips_through_toml() {
        let env = env_of(&[("SECRET", "quote\" back\\slash\nnew line\ttab")]);
        let config = Config::parse(
            &stage("[stages.config]\ns = \"${SECRET}\""),
            "eddy.toml",
            &env,
        )
        .unwrap();
        assert_eq!(
            config.stages[0].config["s"],
            "quote\" back\\slash\nnew line\ttab"
        );
    }

    #[test]
    fn unset_variable_names_variable_and_line() {
        let text = "# ${COMMENTED}\n\nplugins_dir = \"${EDDY_TEST_NOPE}\"\n";
        let e = parse(text).unwrap_err();
        match &e {
            ConfigError::UnsetVariable { origin, line, name } => {
                assert_eq!(
                    (origin.as_str(), *line, name.as_str()),
                    ("eddy.toml", 3, "EDDY_TEST_NOPE")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains("eddy.toml:3") && msg.contains("EDDY_TEST_NOPE"),
            "{msg}"
        );
    }

    #[test]
    fn bad_interpolation_syntax() {
        let cases: &[(&str, usize, &str)] = &[
            ("x = \"${\"", 1, "unterminated"),
            ("\nx = \"${FOO\"\ny = \"}\"", 2, "unterminated"),
            ("x = \"${}\"", 1, "empty variable name"),
            ("x = \"${1ABC}\"", 1, "invalid variable name `1ABC`"),
            ("x = \"${A-B}\"", 1, "unexpected `-B`"),
            ("x = \"${FOO:bar}\"", 1, "unexpected `:bar`"),
            ("x = \"${FOO BAR}\"", 1, "unexpected ` BAR`"),
            ("x = \"${ FOO}\"", 1, "invalid variable name"),
        ];
        for (input, want_line, want) in cases {
            match interpolate(input, &no_env) {
                Err(ConfigError::BadSyntax { line, message, .. }) => {
                    assert_eq!(line, *want_line, "input: {input}");
                    assert!(message.contains(want), "input: {input}: {message}");
                }
                other => panic!("input: {input}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn literal_string_cannot_hold_quote() {
        let env = env_of(&[("V", "it's")]);
        let e = Config::parse("plugins_dir = '${V}'", "eddy.toml", &env).unwrap_err();
        assert!(matches!(e, ConfigError::BadSyntax { line: 1, .. }), "{e:?}");
        assert!(e.to_string().contains("`V`"), "{e}");
        let env = env_of(&[("V", "plain")]);
        assert_eq!(
            Config::parse("plugins_dir = '${V}'", "eddy.toml", &env)
                .unwrap()
                .plugins_dir,
            PathBuf::from("plain")
        );
    }

    #[test]
    fn parse_errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("plugin_dir = \"x\"", "plugin_dir"),
            ("[pipeline]\nbatch = 5", "batch"),
            ("[runtime]\ndeadline = 5", "deadline"),
            ("[extra]\nx = 1", "extra"),
            (&stage("deadlin_ms = 5"), "deadlin_ms"),
            ("[pipeline]\nbatch_size = \"big\"", "batch_size"),
            ("[runtime]\ndeadline_ms = 1.5", "deadline_ms"),
            (&stage("memory_limit_mb = true"), "memory_limit_mb"),
            (&stage("config = 5"), "config"),
            ("[[stages]]\nname = \"x\"", "plugin"),
            ("plugins_dir = [1]", "plugins_dir"),
            ("batch_size = = 1", "batch_size"),
        ];
        for (input, key) in cases {
            match parse(input) {
                Err(e @ ConfigError::Parse { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with("eddy.toml: "), "{msg}");
                    assert!(
                        msg.contains(key),
                        "input {input:?}: message lacks {key}: {msg}"
                    );
                }
                other => panic!("input {input:?}: unexpected {other:?}"),
            }
        }
        let msg = err(&stage("deadlin_ms = 5")).to_string();
        assert!(
            msg.contains("unknown field `deadlin_ms`") && msg.contains("deadline_ms"),
            "{msg}"
        );
        let msg = err("[pipeline]\nbatch_size = \"big\"").to_string();
        assert!(msg.contains("expected an integer"), "{msg}");
    }

    #[test]
    fn parse_error_does_not_show_substituted_values() {
        let env = env_of(&[("SECRET", "hunter2")]);
        let text = "[pipeline]\nbatch_size = \"${SECRET}\"\n";
        let e = Config::parse(text, "eddy.toml", &env).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(
            msg.contains("line 2") && msg.contains("batch_size = \"${SECRET}\""),
            "{msg}"
        );
    }

    #[test]
    fn on_failure_values() {
        let config = parse(&stage("on_failure = \"dead-letter\"")).unwrap();
        assert_eq!(config.stages[0].on_failure, FailurePolicy::DeadLetter);
        let config = parse(&stage("on_failure = \"pass-through\"")).unwrap();
        assert_eq!(config.stages[0].on_failure, FailurePolicy::PassThrough);
        assert_eq!(FailurePolicy::PassThrough.to_string(), "pass-through");
        assert_eq!(FailurePolicy::DeadLetter.to_string(), "dead-letter");

        let msg = err(&stage("on_failure = \"retry\"")).to_string();
        for want in ["retry", "pass-through", "dead-letter", "on_failure"] {
            assert!(msg.contains(want), "message lacks {want}: {msg}");
        }
    }

    #[test]
    fn range_rules() {
        // (section, key, rejected values, accepted boundary values, allowed)
        type Case = (
            &'static str,
            &'static str,
            &'static [i64],
            &'static [i64],
            &'static str,
        );
        let cases: &[Case] = &[
            (
                "pipeline",
                "batch_size",
                &[0, -1, 100_001],
                &[1, 100_000],
                "between 1 and 100000",
            ),
            (
                "runtime",
                "deadline_ms",
                &[0, 60_001],
                &[1, 60_000],
                "between 1 and 60000 (milliseconds)",
            ),
            (
                "runtime",
                "memory_limit_mb",
                &[0, 4097],
                &[1, 4096],
                "between 1 and 4096 (MiB)",
            ),
            (
                "runtime",
                "compile_timeout_ms",
                &[99, 600_001],
                &[100, 600_000],
                "between 100 and 600000",
            ),
            (
                "runtime",
                "quarantine_after",
                &[0, -3, 4_294_967_296],
                &[1, 4_294_967_295],
                "between 1 and",
            ),
            ("runtime", "quarantine_backoff_ms", &[0], &[1], "at least 1"),
            (
                "runtime",
                "probation_batches",
                &[-1],
                &[0, 10],
                "between 0 and",
            ),
            (
                "runtime",
                "reload_debounce_ms",
                &[-1, 10_001],
                &[0, 10_000],
                "between 0 and 10000",
            ),
            (
                "runtime",
                "max_log_records_per_call",
                &[-1],
                &[0, 5],
                "between 0 and",
            ),
            (
                "runtime",
                "state_max_keys",
                &[0],
                &[1, i64::MAX],
                "at least 1 (keys)",
            ),
            (
                "runtime",
                "state_max_value_bytes",
                &[0],
                &[1],
                "at least 1 (bytes)",
            ),
        ];
        for (section, key, bad, good, allowed) in cases {
            for value in *bad {
                let text = format!("[{section}]\n{key} = {value}\n");
                match parse(&text) {
                    Err(e @ ConfigError::Invalid { .. }) => {
                        let msg = e.to_string();
                        let prefix = format!(
                            "eddy.toml: {section}.{key}: {value} is out of range: must be "
                        );
                        assert!(msg.starts_with(&prefix), "{msg}");
                        assert!(msg.contains(allowed), "{msg}");
                    }
                    other => panic!("{text}: unexpected {other:?}"),
                }
            }
            for value in *good {
                let mut text = format!("[{section}]\n{key} = {value}\n");
                if *key == "quarantine_backoff_ms" {
                    text.push_str("quarantine_backoff_max_ms = 1000000\n");
                }
                parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            }
        }
        let msg = err("[runtime]\ndeadline_ms = 0").to_string();
        assert_eq!(
            msg,
            "eddy.toml: runtime.deadline_ms: 0 is out of range: must be between 1 and 60000 (milliseconds)"
        );
    }

    #[test]
    fn runtime_values_are_converted() {
        let text = "[runtime]\ndeadline_ms = 250\nmemory_limit_mb = 2\ncompile_timeout_ms = 100\n\
                    quarantine_after = 5\nquarantine_backoff_ms = 10\nquarantine_backoff_max_ms = 10\n\
                    probation_batches = 0\nreload_debounce_ms = 0\nmax_log_records_per_call = 0\n\
                    state_max_keys = 9\nstate_max_value_bytes = 8\n";
        let r = parse(text).unwrap().runtime;
        assert_eq!(
            r,
            RuntimeConfig {
                deadline: Duration::from_millis(250),
                memory_limit_bytes: 2 * 1024 * 1024,
                compile_timeout: Duration::from_millis(100),
                quarantine_after: 5,
                quarantine_backoff: Duration::from_millis(10),
                quarantine_backoff_max: Duration::from_millis(10),
                probation_batches: 0,
                reload_debounce: Duration::ZERO,
                max_log_records_per_call: 0,
                state_max_keys: 9,
                state_max_value_bytes: 8,
            }
        );
    }

    #[test]
    fn backoff_max_below_backoff() {
        let e = err("[runtime]\nquarantine_backoff_ms = 5000\nquarantine_backoff_max_ms = 4000");
        match &e {
            ConfigError::Invalid { key, message, .. } => {
                assert_eq!(key, "runtime.quarantine_backoff_max_ms");
                assert!(
                    message.contains("4000") && message.contains("quarantine_backoff_ms = 5000"),
                    "{message}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        // The default ceiling (60000) is below a first backoff of 90000.
        assert!(matches!(
            err("[runtime]\nquarantine_backoff_ms = 90000"),
            ConfigError::Invalid { .. }
        ));
    }

    #[test]
    fn stage_overrides_out_of_range() {
        let cases: &[(&str, &str)] = &[
            ("deadline_ms = 0", "stages[1].deadline_ms"),
            ("deadline_ms = 60001", "stages[1].deadline_ms"),
            ("memory_limit_mb = 0", "stages[1].memory_limit_mb"),
            ("memory_limit_mb = 5000", "stages[1].memory_limit_mb"),
        ];
        for (line, want_key) in cases {
            let text = format!("[[stages]]\nplugin = \"a\"\n[[stages]]\nplugin = \"b\"\n{line}\n");
            match parse(&text) {
                Err(ConfigError::Invalid { key, message, .. }) => {
                    assert_eq!(key, *want_key);
                    assert!(message.contains("out of range"), "{message}");
                }
                other => panic!("{text}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn stage_overrides_applied() {
        let text = "[runtime]\ndeadline_ms = 100\nmemory_limit_mb = 64\n\
                    [[stages]]\nplugin = \"a\"\ndeadline_ms = 7\nmemory_limit_mb = 3\n\
                    [[stages]]\nplugin = \"b\"\n";
        let config = parse(text).unwrap();
        let (a, b) = (&config.stages[0], &config.stages[1]);
        assert_eq!(a.deadline, Some(Duration::from_millis(7)));
        assert_eq!(config.stage_deadline(a), Duration::from_millis(7));
        assert_eq!(config.stage_memory_limit(a), 3 * 1024 * 1024);
        assert_eq!(b.deadline, None);
        assert_eq!(config.stage_deadline(b), Duration::from_millis(100));
        assert_eq!(config.stage_memory_limit(b), 64 * 1024 * 1024);
    }

    #[test]
    fn duplicate_stage_names() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[[stages]]\nplugin = \"x\"\n[[stages]]\nplugin = \"y\"\n[[stages]]\nplugin = \"z\"\n[[stages]]\nplugin = \"x\"\n",
                "stages[3].name",
                "duplicate stage name `x` (also stages[0]); the name defaults to the plugin",
            ),
            (
                "[[stages]]\nplugin = \"a\"\n[[stages]]\nplugin = \"b\"\nname = \"a\"\n",
                "stages[1].name",
                "duplicate stage name `a` (also stages[0])",
            ),
        ];
        for (text, want_key, want) in cases {
            match parse(text) {
                Err(ConfigError::Invalid { key, message, .. }) => {
                    assert_eq!(key, *want_key);
                    assert!(message.starts_with(want), "{message}");
                }
                other => panic!("{text}: unexpected {other:?}"),
            }
        }
        // The same plugin twice is fine with distinct names.
        let config =
            parse("[[stages]]\nplugin = \"x\"\n[[stages]]\nplugin = \"x\"\nname = \"x-again\"\n")
                .unwrap();
        assert_eq!(config.stages[1].name, "x-again");
        assert_eq!(config.stages[1].plugin, "x");
    }

    #[test]
    fn bad_plugin_and_stage_names() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "plugin = \"bot filter\"",
                "stages[0].plugin",
                "`bot filter` is not a valid plugin name",
            ),
            (
                "plugin = \"../evil\"",
                "stages[0].plugin",
                "not a valid plugin name",
            ),
            (
                "plugin = \"\"",
                "stages[0].plugin",
                "not a valid plugin name",
            ),
            (
                "plugin = \"héllo\"",
                "stages[0].plugin",
                "ASCII letters, digits, `-` and `_`",
            ),
            (
                "plugin = \"bot-filter.wasm\"",
                "stages[0].plugin",
                "write `bot-filter`, without `.wasm`",
            ),
            (
                "plugin = \"ok\"\nname = \"\"",
                "stages[0].name",
                "must not be empty",
            ),
            (
                "plugin = \"ok\"\nname = \"a\\u0007\"",
                "stages[0].name",
                "control characters",
            ),
        ];
        for (body, want_key, want) in cases {
            let text = format!("[[stages]]\n{body}\n");
            match parse(&text) {
                Err(ConfigError::Invalid { key, message, .. }) => {
                    assert_eq!(key, *want_key);
                    assert!(message.contains(want), "{message}");
                }
                other => panic!("{text}: unexpected {other:?}"),
            }
        }
        let config =
            parse("[[stages]]\nplugin = \"Good_name-2\"\nname = \"any name: fine\"\n").unwrap();
        assert_eq!(config.stages[0].name, "any name: fine");
    }

    #[test]
    fn empty_plugins_dir_rejected() {
        match parse("plugins_dir = \"\"") {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "plugins_dir"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn empty_stage_list_allowed() {
        assert!(
            parse("[pipeline]\nbatch_size = 10\n")
                .unwrap()
                .stages
                .is_empty()
        );
        assert!(parse("stages = []").unwrap().stages.is_empty());
    }

    #[test]
    fn stage_config_becomes_json_object() {
        let text = r#"
[[stages]]
plugin = "p"
[stages.config]
string = "s"
int = -42
float = 1.5
yes = true
no = false
list = [1, "two", 3.0, [4]]
when = 1979-05-27T07:32:00Z
day = 1979-05-27
"dotted.key" = 1
[stages.config.nested]
deep = { a = [true], b = {} }
[[stages.config.rules]]
match = "bot"
[[stages.config.rules]]
match = "crawler"
weight = 2
"#;
        let config = parse(text).unwrap();
        assert_eq!(
            config.stages[0].config,
            json!({
                "string": "s",
                "int": -42,
                "float": 1.5,
                "yes": true,
                "no": false,
                "list": [1, "two", 3.0, [4]],
                "when": "1979-05-27T07:32:00Z",
                "day": "1979-05-27",
                "dotted.key": 1,
                "nested": { "deep": { "a": [true], "b": {} } },
                "rules": [{ "match": "bot" }, { "match": "crawler", "weight": 2 }],
            })
        );
    }

    #[test]
    fn stage_config_rejects_nan() {
        match parse(&stage("[stages.config]\nx = { y = [1.0, nan] }")) {
            Err(ConfigError::Invalid { key, message, .. }) => {
                assert_eq!(key, "stages[0].config.x.y[1]");
                assert!(message.contains("NaN"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
