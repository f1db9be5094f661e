//! The `[[windows]]` entries and the `[live]` section: event-time windows
//! and the built-in live views. Durations are written as text (`"10s"`,
//! `"5m"`, `"1h 30m"`, `"500ms"`).

use serde::Deserialize;
use std::collections::HashMap;

use super::ConfigError;
use super::raw::{Int, Validator};
use crate::engine::time::TimeConfig as EngineTime;
use crate::window::{
    DEFAULT_HISTORY_MS, DEFAULT_MAX_GROUPS, DEFAULT_MAX_HISTORY, LiveConfig, OnFuture, TimeConfig,
    WindowConfig, WindowKind, WindowSpec,
};

/// Most groups a window instance may be configured to hold: 10 million, a
/// few GB at the documented bytes per group.
const MAX_GROUPS_LIMIT: i64 = 10_000_000;
/// Most results a window's history may be configured to keep.
const MAX_HISTORY_LIMIT: i64 = 10_000_000;
/// Longest duration accepted anywhere: 366 days.
const MAX_DURATION_MS: i64 = 366 * 24 * 3_600_000;
/// Most live users tracked, at ~100 bytes each.
const MAX_USERS_LIMIT: i64 = 10_000_000;

/// A `[[windows]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    name: String,
    kind: String,
    size: Option<String>,
    slide: Option<String>,
    gap: Option<String>,
    max_duration: Option<String>,
    #[serde(default)]
    group_by: Vec<String>,
    filter: Option<toml::Value>,
    aggregates: Vec<String>,
    out_of_orderness: Option<String>,
    allowed_lateness: Option<String>,
    idle_timeout: Option<String>,
    future_skew: Option<String>,
    on_future: Option<String>,
    early_every: Option<String>,
    max_groups: Option<Int>,
    history: Option<String>,
    max_history: Option<Int>,
    #[serde(default)]
    partials: bool,
    merge_from: Option<String>,
}

/// The `[time]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTime {
    out_of_orderness: Option<String>,
    idle_timeout: Option<String>,
    future_skew: Option<String>,
    on_future: Option<String>,
}

/// The `[live]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLive {
    users_window: Option<String>,
    max_users: Option<Int>,
    pages_window: Option<String>,
    max_pages: Option<Int>,
}

impl Validator<'_> {
    /// A duration key: text such as "10s"; `min_ms` is the smallest allowed.
    pub(super) fn duration(&self, key: &str, text: &str, min_ms: i64) -> Result<i64, ConfigError> {
        let parsed = humantime::parse_duration(text).map_err(|e| {
            self.invalid(
                key,
                format!(
                    "`{text}` is not a duration ({e}); write a number and a unit, e.g. \"500ms\", \"10s\", \"5m\", \"1h\""
                ),
            )
        })?;
        if parsed.subsec_nanos() % 1_000_000 != 0 {
            return Err(self.invalid(key, format!("`{text}` must be whole milliseconds")));
        }
        let ms = i64::try_from(parsed.as_millis()).unwrap_or(i64::MAX);
        if ms > MAX_DURATION_MS {
            return Err(self.invalid(key, format!("`{text}` must be at most 366 days")));
        }
        if ms < min_ms {
            return Err(self.invalid(key, format!("`{text}` must be at least {min_ms}ms")));
        }
        Ok(ms)
    }

    pub(super) fn opt_duration(
        &self,
        key: &str,
        text: &Option<String>,
        min_ms: i64,
        default: i64,
    ) -> Result<i64, ConfigError> {
        match text {
            None => Ok(default),
            Some(t) => self.duration(key, t, min_ms),
        }
    }

    pub(super) fn bounded(
        &self,
        key: &str,
        value: Option<Int>,
        default: usize,
        max: i64,
    ) -> Result<usize, ConfigError> {
        match value {
            None => Ok(default),
            Some(Int(v)) if (1..=max).contains(&v) => Ok(v as usize),
            Some(Int(v)) => Err(self.invalid(
                key,
                format!("{v} is out of range: must be between 1 and {max}"),
            )),
        }
    }

    /// A window's or pattern's name: it becomes the channel `<what>s/<name>`
    /// and a URL path segment.
    pub(super) fn channel_name(
        &self,
        key: &str,
        name: &str,
        what: &str,
    ) -> Result<(), ConfigError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(self.invalid(
                key,
                format!(
                    "`{name}` is not a {what} name: use letters, digits, `_`, `-` and `.` (it becomes the channel {what}s/<name> and a URL path segment)"
                ),
            ));
        }
        Ok(())
    }

    /// The `[time]` section: the engine's event-time settings.
    pub(super) fn time(&self, raw: &RawTime) -> Result<EngineTime, ConfigError> {
        let d = EngineTime::default();
        let on_future = match raw.on_future.as_deref() {
            None | Some("reject") => OnFuture::Reject,
            Some("clamp") => OnFuture::Clamp,
            Some(other) => {
                return Err(self.invalid(
                    "time.on_future",
                    format!("unknown policy `{other}`; expected reject or clamp"),
                ));
            }
        };
        Ok(EngineTime {
            out_of_orderness_ms: self.opt_duration(
                "time.out_of_orderness",
                &raw.out_of_orderness,
                0,
                d.out_of_orderness_ms,
            )?,
            idle_timeout_ms: self.opt_duration(
                "time.idle_timeout",
                &raw.idle_timeout,
                1,
                d.idle_timeout_ms,
            )?,
            future_skew_ms: self.opt_duration(
                "time.future_skew",
                &raw.future_skew,
                0,
                d.future_skew_ms,
            )?,
            on_future,
        })
    }

    /// Every `[[windows]]` entry, validated; their time settings default to
    /// `time`'s.
    pub(super) fn windows(
        &self,
        raw: Vec<RawWindow>,
        time: &EngineTime,
    ) -> Result<Vec<WindowConfig>, ConfigError> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, w) in raw.into_iter().enumerate() {
            let config = self.window(i, w, time)?;
            if let Some(first) = seen.insert(config.name.clone(), i) {
                return Err(self.invalid(
                    format!("windows[{i}].name"),
                    format!(
                        "duplicate window name `{}` (also windows[{first}])",
                        config.name
                    ),
                ));
            }
            out.push(config);
        }
        Ok(out)
    }

    fn window(
        &self,
        i: usize,
        w: RawWindow,
        time: &EngineTime,
    ) -> Result<WindowConfig, ConfigError> {
        let at = |key: &str| format!("windows[{i}].{key}");
        self.channel_name(&at("name"), &w.name, "window")?;
        let forbid = |key: &str, present: bool, kind: &str| {
            if present {
                Err(self.invalid(at(key), format!("is not used by {kind} windows")))
            } else {
                Ok(())
            }
        };
        let need = |key: &str, v: &Option<String>, kind: &str| match v {
            Some(t) => self.duration(&at(key), t, 1),
            None => Err(self.invalid(at(key), format!("is required for {kind} windows"))),
        };
        let kind = match w.kind.as_str() {
            "tumbling" => {
                forbid("slide", w.slide.is_some(), "tumbling")?;
                forbid("gap", w.gap.is_some(), "tumbling")?;
                forbid("max_duration", w.max_duration.is_some(), "tumbling")?;
                WindowKind::Tumbling {
                    size_ms: need("size", &w.size, "tumbling")?,
                }
            }
            "sliding" => {
                forbid("gap", w.gap.is_some(), "sliding")?;
                forbid("max_duration", w.max_duration.is_some(), "sliding")?;
                let size_ms = need("size", &w.size, "sliding")?;
                let slide_ms = need("slide", &w.slide, "sliding")?;
                if slide_ms > size_ms || size_ms % slide_ms != 0 {
                    return Err(self.invalid(
                        at("slide"),
                        format!(
                            "must divide size evenly ({slide_ms}ms does not divide {size_ms}ms): each window is made of size / slide panes"
                        ),
                    ));
                }
                WindowKind::Sliding { size_ms, slide_ms }
            }
            "session" => {
                forbid("size", w.size.is_some(), "session")?;
                forbid("slide", w.slide.is_some(), "session")?;
                let gap_ms = need("gap", &w.gap, "session")?;
                let max_duration_ms = match &w.max_duration {
                    None => None,
                    Some(t) => Some(self.duration(&at("max_duration"), t, 1)?),
                };
                WindowKind::Session {
                    gap_ms,
                    max_duration_ms,
                }
            }
            other => {
                return Err(self.invalid(
                    at("kind"),
                    format!("unknown window kind `{other}`; expected tumbling, sliding or session"),
                ));
            }
        };
        // Admission is decided once for the whole engine: a timestamp one
        // window rejected would still move the event time the others read.
        for (key, set) in [
            ("future_skew", w.future_skew.is_some()),
            ("on_future", w.on_future.is_some()),
        ] {
            if set {
                return Err(self.invalid(
                    at(key),
                    format!(
                        "the future-skew cap is engine-wide: set `{key}` in the [time] section, not per window"
                    ),
                ));
            }
        }
        let time = TimeConfig {
            out_of_orderness_ms: self.opt_duration(
                &at("out_of_orderness"),
                &w.out_of_orderness,
                0,
                time.out_of_orderness_ms,
            )?,
            allowed_lateness_ms: self.opt_duration(
                &at("allowed_lateness"),
                &w.allowed_lateness,
                0,
                0,
            )?,
            idle_timeout_ms: self.opt_duration(
                &at("idle_timeout"),
                &w.idle_timeout,
                1,
                time.idle_timeout_ms,
            )?,
            early_every_ms: match &w.early_every {
                None => None,
                Some(t) => Some(self.duration(&at("early_every"), t, 1)?),
            },
        };
        let session = matches!(kind, WindowKind::Session { .. });
        if w.partials {
            if session {
                return Err(self.invalid(
                    at("partials"),
                    "session windows cannot publish partial results: one group's sessions on several instances do not line up; use a tumbling or sliding window",
                ));
            }
            if time.allowed_lateness_ms > 0 {
                return Err(self.invalid(
                    at("allowed_lateness"),
                    "must be 0 with `partials = true`: a correction carries the whole group again and would be merged twice (late events go to `late`)",
                ));
            }
        }
        if let Some(from) = &w.merge_from {
            self.channel_name(&at("merge_from"), from, "window")?;
            if session {
                return Err(self.invalid(
                    at("merge_from"),
                    "session windows cannot merge partial results; use the tumbling or sliding window the instances publish",
                ));
            }
            if w.filter.is_some() {
                return Err(self.invalid(
                    at("filter"),
                    "a window with `merge_from` takes partial results, not events: set the filter on the windows that publish them",
                ));
            }
        }
        let filter = match w.filter {
            None => None,
            Some(t) => Some(serde_json::to_value(&t).map_err(|e| {
                self.invalid(at("filter"), format!("cannot be read as a filter: {e}"))
            })?),
        };
        let config = WindowConfig {
            name: w.name,
            kind,
            time,
            group_by: w.group_by,
            filter,
            aggregates: w.aggregates,
            max_groups: self.bounded(
                &at("max_groups"),
                w.max_groups,
                DEFAULT_MAX_GROUPS,
                MAX_GROUPS_LIMIT,
            )?,
            history_ms: self.opt_duration(&at("history"), &w.history, 0, DEFAULT_HISTORY_MS)?,
            max_history: self.bounded(
                &at("max_history"),
                w.max_history,
                DEFAULT_MAX_HISTORY,
                MAX_HISTORY_LIMIT,
            )?,
            partials: w.partials,
            merge_from: w.merge_from,
        };
        // Filters, group paths and aggregates are checked by compiling them.
        WindowSpec::compile(&config).map_err(|e| self.invalid(at(&e.key), e.message))?;
        Ok(config)
    }

    /// The `[live]` section.
    pub(super) fn live(&self, raw: &RawLive) -> Result<LiveConfig, ConfigError> {
        let d = LiveConfig::default();
        Ok(LiveConfig {
            users_window_ms: self.opt_duration(
                "live.users_window",
                &raw.users_window,
                1,
                d.users_window_ms,
            )?,
            max_users: self.bounded(
                "live.max_users",
                raw.max_users,
                d.max_users,
                MAX_USERS_LIMIT,
            )?,
            pages_window_ms: self.opt_duration(
                "live.pages_window",
                &raw.pages_window,
                1_000,
                d.pages_window_ms,
            )?,
            max_pages: self.bounded(
                "live.max_pages",
                raw.max_pages,
                d.max_pages,
                MAX_GROUPS_LIMIT,
            )?,
        })
    }
}
