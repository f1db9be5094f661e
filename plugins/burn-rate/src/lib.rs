//! An alert plugin: multi-window, multi-burn-rate alerting on an SLO's
//! error budget, as chapter 5 of Google's *SRE workbook* ("Alerting on
//! SLOs") recommends.
//!
//! The burn rate of a window is its error ratio divided by the error
//! budget `1 − slo`: 1 spends the budget exactly over the SLO period,
//! 14.4 spends 2 % of a 30-day budget in one hour. The alert holds for a
//! group when the burn rate over the **long** window *and* over the
//! **short** window both exceed `factor`: the long window makes it
//! significant, the short one makes it reset quickly once the errors stop.
//! The workbook's pairs are 1 h / 5 min at 14.4 and 6 h / 30 min at 6
//! (page), 3 d / 6 h at 1 (ticket); configure one alert per pair.
//!
//! The two windows are eddy windows (typically sliding) with the same
//! `group_by`, each computing an error count and a total count. Their
//! results arrive in separate calls, so the latest burn rate of each window
//! per group is kept in the host's state store; a group is judged when both
//! are known and the other window's latest result ended within one long
//! window of this one (older counts as unknown). The evaluation's value is
//! the smaller of the two burn rates — the one that must exceed `factor`.
//! Only final results and corrections count; early results are ignored.
//!
//! Configuration:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `long_window`, `short_window` | (required) | the two windows' names |
//! | `errors`, `total` | `errors`, `total` | the aggregates counting bad and all events |
//! | `slo` | 0.999 | the objective, between 0 and 1 (exclusive) |
//! | `factor` | 14.4 | the burn rate both windows must exceed |
//! | `severity` | `critical` | the `severity` label |

use eddy_plugin_sdk::alert::{AlertPlugin, Evaluation, ResultKind, Watches, WindowResult, Windows};
use eddy_plugin_sdk::{Config, state};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    long_window: String,
    short_window: String,
    #[serde(default = "default_errors")]
    errors: String,
    #[serde(default = "default_total")]
    total: String,
    #[serde(default = "default_slo")]
    slo: f64,
    #[serde(default = "default_factor")]
    factor: f64,
    #[serde(default = "default_severity")]
    severity: String,
}

fn default_errors() -> String {
    "errors".to_owned()
}
fn default_total() -> String {
    "total".to_owned()
}
fn default_slo() -> f64 {
    0.999
}
fn default_factor() -> f64 {
    14.4
}
fn default_severity() -> String {
    "critical".to_owned()
}

/// The plugin, configured (`None` before configuration: it watches
/// nothing).
pub struct BurnRate {
    settings: Option<Settings>,
}

/// The latest burn rate of one window for one group: the rate, and the
/// end and length of the window it came from (ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latest {
    /// Burn rate.
    pub rate: f64,
    /// End of its window.
    pub end: i64,
    /// Length of its window.
    pub len: i64,
}

impl Latest {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&self.rate.to_le_bytes());
        b.extend_from_slice(&self.end.to_le_bytes());
        b.extend_from_slice(&self.len.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Latest> {
        let word = |i: usize| -> Option<[u8; 8]> { b.get(i * 8..i * 8 + 8)?.try_into().ok() };
        (b.len() == 24).then_some(())?;
        Some(Latest {
            rate: f64::from_le_bytes(word(0)?),
            end: i64::from_le_bytes(word(1)?),
            len: i64::from_le_bytes(word(2)?),
        })
    }
}

/// The burn rate of `errors` out of `total` against an SLO of `slo`: the
/// error ratio over the error budget. No traffic burns nothing.
pub fn burn_rate(errors: f64, total: f64, slo: f64) -> f64 {
    if total <= 0.0 {
        return 0.0;
    }
    (errors / total) / (1.0 - slo)
}

fn key(window: &str, group: &str) -> String {
    let key = format!("br\u{1f}{window}\u{1f}{group}");
    if key.len() > 200 {
        let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("br#{h:016x}")
    } else {
        key
    }
}

impl BurnRate {
    fn judge(
        &self,
        s: &Settings,
        windows: &Windows,
        r: &WindowResult<'_>,
    ) -> Result<Option<Evaluation>, String> {
        let (Some(errors), Some(total)) = (r.f64(&s.errors), r.f64(&s.total)) else {
            return Ok(None);
        };
        let this = Latest {
            rate: burn_rate(errors, total, s.slo),
            end: r.end(),
            len: r.end() - r.start(),
        };
        let group = r.group_key();
        let is_long = windows.name() == s.long_window;
        state::set(&key(windows.name(), &group), &this.encode()).map_err(|e| e.to_string())?;
        let other_name = if is_long {
            &s.short_window
        } else {
            &s.long_window
        };
        let Some(other) =
            state::get::<Vec<u8>>(&key(other_name, &group)).and_then(|b| Latest::decode(&b))
        else {
            return Ok(None);
        };
        let long_len = if is_long { this.len } else { other.len };
        if (this.end - other.end).abs() > long_len {
            return Ok(None);
        }
        let (long, short) = if is_long {
            (this, other)
        } else {
            (other, this)
        };
        let value = long.rate.min(short.rate);
        Ok(Some(
            Evaluation::new(value, long.rate > s.factor && short.rate > s.factor)
                .labels(r.group_labels())
                .severity(&s.severity)
                .annotation(
                    "summary",
                    format!(
                        "error budget burning {:.1}x over {} and {:.1}x over {} (threshold {}x, SLO {})",
                        long.rate, s.long_window, short.rate, s.short_window, s.factor, s.slo
                    ),
                )
                .annotation("long_burn_rate", long.rate.to_string())
                .annotation("short_burn_rate", short.rate.to_string()),
        ))
    }
}

impl AlertPlugin for BurnRate {
    const CONFIG_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false,"required":["long_window","short_window"],"properties":{"long_window":{"type":"string"},"short_window":{"type":"string"},"errors":{"type":"string"},"total":{"type":"string"},"slo":{"type":"number","exclusiveMinimum":0,"exclusiveMaximum":1},"factor":{"type":"number","exclusiveMinimum":0},"severity":{"type":"string"}}}"#;

    fn new(config: Config) -> Result<Self, String> {
        if config.get("long_window").is_none() && config.get("short_window").is_none() {
            config.only(&[])?;
            return Ok(BurnRate { settings: None });
        }
        let s: Settings = config.parse()?;
        if !(s.slo > 0.0 && s.slo < 1.0) {
            return Err(format!(
                "config key `slo` must be between 0 and 1 (e.g. 0.999), got {}",
                s.slo
            ));
        }
        if !(s.factor.is_finite() && s.factor > 0.0) {
            return Err(format!(
                "config key `factor` must be a positive number, got {}",
                s.factor
            ));
        }
        if s.long_window == s.short_window {
            return Err(
                "config keys `long_window` and `short_window` name the same window".to_owned(),
            );
        }
        Ok(BurnRate { settings: Some(s) })
    }

    fn watches(&self) -> Watches {
        match &self.settings {
            Some(s) => Watches::window(&s.long_window).and_window(&s.short_window),
            None => Watches::default(),
        }
    }

    fn on_windows(&mut self, windows: &Windows) -> Result<Vec<Evaluation>, String> {
        let Some(s) = &self.settings else {
            return Ok(Vec::new());
        };
        for agg in [&s.errors, &s.total] {
            if windows.aggregate_index(agg).is_none() {
                return Err(format!(
                    "window `{}` has no aggregate `{agg}` (it has: {})",
                    windows.name(),
                    windows.aggregates().join(", ")
                ));
            }
        }
        let mut out = Vec::new();
        for r in windows.results() {
            if r.kind() == ResultKind::Early {
                continue;
            }
            if let Some(e) = self.judge(s, windows, &r)? {
                out.push(e);
            }
        }
        Ok(out)
    }
}

eddy_plugin_sdk::alert!(BurnRate);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use eddy_plugin_sdk::Value;
    use eddy_plugin_sdk::alert::WindowsBuilder;

    const HOUR: i64 = 3_600_000;
    const FIVE_MIN: i64 = 300_000;

    fn plugin() -> BurnRate {
        BurnRate::new(
            Config::from_json(r#"{"long_window":"req_1h","short_window":"req_5m","slo":0.999}"#)
                .unwrap(),
        )
        .unwrap()
    }

    fn result(window: &str, len: i64, end: i64, svc: &str, errors: i64, total: i64) -> Windows {
        WindowsBuilder::new(window, &["properties.service"], &["errors", "total"])
            .result(
                ResultKind::Final,
                end - len,
                end,
                &[Value::Str(svc)],
                &[Value::Int(errors), Value::Int(total)],
            )
            .build()
    }

    #[test]
    fn fires_only_when_both_windows_burn_faster_than_the_factor() {
        let mut p = plugin();
        // Long window: 2 % errors = 20x the 0.1 % budget.
        let out = p
            .on_windows(&result("req_1h", HOUR, HOUR, "fires-a", 200, 10_000))
            .unwrap();
        assert!(out.is_empty(), "the short window is not known yet");
        // Short window: 0.5 % = 5x, below 14.4: no alert.
        let out = p
            .on_windows(&result("req_5m", FIVE_MIN, HOUR, "fires-a", 5, 1_000))
            .unwrap();
        assert!(
            !out[0].active && (out[0].value - 5.0).abs() < 1e-9,
            "{out:?}"
        );
        // Short window: 3 % = 30x: both above, fires; value is the smaller rate.
        let out = p
            .on_windows(&result(
                "req_5m",
                FIVE_MIN,
                HOUR + FIVE_MIN,
                "fires-a",
                30,
                1_000,
            ))
            .unwrap();
        assert!(
            out[0].active && (out[0].value - 20.0).abs() < 1e-9,
            "{out:?}"
        );
        assert_eq!(
            out[0].labels,
            [("service".to_owned(), "fires-a".to_owned())]
        );
        assert_eq!(out[0].severity.as_deref(), Some("critical"));
        // The long window recovers to 0.5 %: the alert clears at once.
        let out = p
            .on_windows(&result(
                "req_1h",
                HOUR,
                HOUR + FIVE_MIN,
                "fires-a",
                50,
                10_000,
            ))
            .unwrap();
        assert!(!out[0].active, "{out:?}");
    }

    #[test]
    fn a_stale_other_window_is_unknown() {
        let mut p = plugin();
        p.on_windows(&result("req_1h", HOUR, HOUR, "stale-b", 500, 1_000))
            .unwrap();
        let out = p
            .on_windows(&result("req_5m", FIVE_MIN, 3 * HOUR, "stale-b", 500, 1_000))
            .unwrap();
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn burn_rate_is_the_error_ratio_over_the_budget() {
        assert!((burn_rate(1.0, 1000.0, 0.999) - 1.0).abs() < 1e-9);
        assert_eq!(burn_rate(0.0, 0.0, 0.999), 0.0);
        let l = Latest {
            rate: 2.5,
            end: 7,
            len: 3,
        };
        assert_eq!(Latest::decode(&l.encode()), Some(l));
    }

    #[test]
    fn bad_configuration_is_refused_by_key() {
        for (json, needle) in [
            (r#"{"long_window":"a"}"#, "short_window"),
            (
                r#"{"long_window":"a","short_window":"b","slo":99.9}"#,
                "`slo`",
            ),
            (r#"{"long_window":"a","short_window":"a"}"#, "same window"),
            (
                r#"{"long_window":"a","short_window":"b","factor":0}"#,
                "`factor`",
            ),
        ] {
            let err = BurnRate::new(Config::from_json(json).unwrap())
                .err()
                .unwrap();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn a_window_without_the_counts_is_an_error_naming_them() {
        let mut p = plugin();
        let w = WindowsBuilder::new("req_1h", &[], &["count"]).build();
        let err = p.on_windows(&w).unwrap_err();
        assert!(err.contains("`errors`") && err.contains("count"), "{err}");
    }
}
