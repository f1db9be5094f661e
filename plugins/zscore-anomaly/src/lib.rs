//! An alert plugin: a window aggregate that strays more than `k` standard
//! deviations from its trailing mean, per group.
//!
//! For each final (or correction) result of the watched window, the
//! group's aggregate is compared with the mean and standard deviation of
//! its last `history` final values: the evaluation's value is the z-score
//! `(x − mean) / std`, active when `|z| > k` (or only above / below, per
//! `direction`). A group is evaluated once it has `min_samples` values of
//! history; before that it gets no evaluation (no alert instance exists).
//! Every final value then joins the history (anomalies too: a lasting
//! level shift becomes the new normal after `history` windows, as a
//! trailing mean should); corrections are judged but not added, so a late
//! event does not count its window twice; early results are ignored.
//!
//! The history lives in the host's state store, one key per group, so it
//! survives traps, hot swaps and restarts; the plugin holds nothing
//! between calls.
//!
//! Configuration (`config` of the alert):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `window` | (required) | the window whose results are watched |
//! | `aggregate` | (required) | the aggregate judged, e.g. `signups` |
//! | `k` | 3.0 | standard deviations that make an anomaly |
//! | `min_samples` | 10 | history needed before a group is judged |
//! | `history` | 60 | trailing values kept per group (2–4096) |
//! | `direction` | `both` | `both`, `above` or `below` |
//! | `severity` | `warning` | the `severity` label of every evaluation |

use eddy_plugin_sdk::alert::{AlertPlugin, Evaluation, ResultKind, Watches, Windows};
use eddy_plugin_sdk::{Config, state};
use serde::Deserialize;

/// Longest history the plugin keeps per group: 4096 values are 32 KiB, half
/// the host's default `runtime.state_max_value_bytes`.
pub const MAX_HISTORY: usize = 4096;

/// State keys longer than this are replaced by a hash of the group: the
/// host refuses keys past `runtime.state_max_key_bytes` (1 KiB by default).
const MAX_KEY_BYTES: usize = 200;

/// Which side of the mean counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Either side.
    Both,
    /// Only values above the mean.
    Above,
    /// Only values below the mean.
    Below,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    window: String,
    aggregate: String,
    #[serde(default = "default_k")]
    k: f64,
    #[serde(default = "default_min_samples")]
    min_samples: usize,
    #[serde(default = "default_history")]
    history: usize,
    #[serde(default = "default_direction")]
    direction: Direction,
    #[serde(default = "default_severity")]
    severity: String,
}

fn default_k() -> f64 {
    3.0
}
fn default_min_samples() -> usize {
    10
}
fn default_history() -> usize {
    60
}
fn default_direction() -> Direction {
    Direction::Both
}
fn default_severity() -> String {
    "warning".to_owned()
}

/// The plugin, configured.
pub struct ZScore {
    window: String,
    aggregate: String,
    k: f64,
    min_samples: usize,
    history: usize,
    direction: Direction,
    severity: String,
}

/// One group's trailing values, oldest first once full: a ring of at most
/// `history` values and the index the next one goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    values: Vec<f64>,
    next: usize,
}

impl History {
    fn decode(bytes: &[u8]) -> Option<History> {
        let (head, rest) = bytes.split_at_checked(4)?;
        let next = u32::from_le_bytes(head.try_into().ok()?) as usize;
        let values: Vec<f64> = rest
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        (rest.len() % 8 == 0 && next <= values.len()).then_some(History { values, next })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 8 * self.values.len());
        out.extend_from_slice(&u32::try_from(self.next).unwrap_or(0).to_le_bytes());
        for v in &self.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Add `x`, dropping the oldest value once `cap` are held.
    fn push(&mut self, x: f64, cap: usize) {
        if self.values.len() < cap {
            self.values.push(x);
            self.next = 0;
        } else {
            // A smaller `history` than when the values were stored keeps
            // the newest `cap` of them.
            if self.values.len() > cap {
                self.values.rotate_left(self.next);
                self.values.drain(..self.values.len() - cap);
                self.next = 0;
            }
            self.values[self.next] = x;
            self.next = (self.next + 1) % cap;
        }
    }

    /// Mean and (population) standard deviation.
    fn stats(&self) -> (f64, f64) {
        let n = self.values.len() as f64;
        let mean = self.values.iter().sum::<f64>() / n;
        let var = self.values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }
}

/// The z-score of `x` against `mean` and `std`, finite: a flat history
/// (std 0) makes any different value a huge but finite score.
pub fn z_score(x: f64, mean: f64, std: f64) -> f64 {
    let floor = f64::EPSILON * mean.abs().max(1.0);
    let z = (x - mean) / std.max(floor);
    z.clamp(-1e12, 1e12)
}

fn fnv64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl ZScore {
    fn key(&self, group: &str) -> String {
        let key = format!(
            "z\u{1f}{}\u{1f}{}\u{1f}{group}",
            self.window, self.aggregate
        );
        if key.len() > MAX_KEY_BYTES {
            format!("z#{:016x}", fnv64(&key))
        } else {
            key
        }
    }

    fn anomalous(&self, z: f64) -> bool {
        match self.direction {
            Direction::Both => z.abs() > self.k,
            Direction::Above => z > self.k,
            Direction::Below => z < -self.k,
        }
    }
}

impl AlertPlugin for ZScore {
    const CONFIG_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false,"required":["window","aggregate"],"properties":{"window":{"type":"string"},"aggregate":{"type":"string"},"k":{"type":"number","exclusiveMinimum":0},"min_samples":{"type":"integer","minimum":2},"history":{"type":"integer","minimum":2,"maximum":4096},"direction":{"enum":["both","above","below"]},"severity":{"type":"string"}}}"#;

    fn new(config: Config) -> Result<Self, String> {
        // The host builds one instance from `{}` to read the description;
        // it watches nothing.
        if config.get("window").is_none() && config.get("aggregate").is_none() {
            config.only(&[])?;
            return Ok(ZScore {
                window: String::new(),
                aggregate: String::new(),
                k: default_k(),
                min_samples: default_min_samples(),
                history: default_history(),
                direction: Direction::Both,
                severity: default_severity(),
            });
        }
        let s: Settings = config.parse()?;
        if !(s.k.is_finite() && s.k > 0.0) {
            return Err(format!(
                "config key `k` must be a positive number, got {}",
                s.k
            ));
        }
        if !(2..=MAX_HISTORY).contains(&s.history) {
            return Err(format!(
                "config key `history` must be between 2 and {MAX_HISTORY}, got {}",
                s.history
            ));
        }
        if s.min_samples < 2 || s.min_samples > s.history {
            return Err(format!(
                "config key `min_samples` must be at least 2 and at most `history` ({}), got {}",
                s.history, s.min_samples
            ));
        }
        Ok(ZScore {
            window: s.window,
            aggregate: s.aggregate,
            k: s.k,
            min_samples: s.min_samples,
            history: s.history,
            direction: s.direction,
            severity: s.severity,
        })
    }

    fn watches(&self) -> Watches {
        if self.window.is_empty() {
            Watches::default()
        } else {
            Watches::window(&self.window)
        }
    }

    fn on_windows(&mut self, windows: &Windows) -> Result<Vec<Evaluation>, String> {
        let Some(agg) = windows.aggregate_index(&self.aggregate) else {
            return Err(format!(
                "window `{}` has no aggregate `{}` (it has: {})",
                windows.name(),
                self.aggregate,
                windows.aggregates().join(", ")
            ));
        };
        let mut out = Vec::new();
        for r in windows.results() {
            let learn = match r.kind() {
                ResultKind::Early => continue,
                ResultKind::Final => true,
                ResultKind::Correction => false,
            };
            let Some(x) = r.value_at(agg).and_then(|v| v.as_f64()) else {
                continue;
            };
            let key = self.key(&r.group_key());
            let mut history = state::get::<Vec<u8>>(&key)
                .and_then(|b| History::decode(&b))
                .unwrap_or(History {
                    values: Vec::new(),
                    next: 0,
                });
            if history.values.len() >= self.min_samples {
                let (mean, std) = history.stats();
                let z = z_score(x, mean, std);
                let evaluation = Evaluation::new(z, self.anomalous(z));
                #[cfg(feature = "mark-version")]
                let evaluation = evaluation.annotation("version", "2");
                out.push(
                    evaluation
                        .labels(r.group_labels())
                        .severity(&self.severity)
                        .annotation(
                            "summary",
                            format!(
                                "{} = {x} is {z:.2} standard deviations from its trailing mean {mean:.4} (std {std:.4}, {} values)",
                                self.aggregate,
                                history.values.len()
                            ),
                        )
                        .annotation("value", x.to_string())
                        .annotation("baseline_mean", mean.to_string())
                        .annotation("baseline_std", std.to_string()),
                );
            }
            if learn {
                history.push(x, self.history);
                state::set(&key, &history.encode()).map_err(|e| e.to_string())?;
            }
        }
        Ok(out)
    }
}

eddy_plugin_sdk::alert!(ZScore);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use eddy_plugin_sdk::Value;
    use eddy_plugin_sdk::alert::WindowsBuilder;

    fn plugin(extra: &str) -> ZScore {
        let json =
            format!(r#"{{"window":"w","aggregate":"n","min_samples":5,"history":20{extra}}}"#);
        ZScore::new(Config::from_json(&json).unwrap()).unwrap()
    }

    fn one(kind: ResultKind, t: i64, group: &str, x: f64) -> Windows {
        WindowsBuilder::new("w", &["properties.g"], &["n"])
            .result(
                kind,
                t,
                t + 60_000,
                &[Value::Str(group)],
                &[Value::Float(x)],
            )
            .build()
    }

    #[test]
    fn a_spike_fires_and_normal_values_do_not() {
        let mut p = plugin("");
        let mut t = 0;
        for i in 0..30 {
            let x = 100.0 + f64::from(i % 5);
            let out = p
                .on_windows(&one(ResultKind::Final, t, "spike-a", x))
                .unwrap();
            assert!(out.iter().all(|e| !e.active), "{i}: {out:?}");
            assert_eq!(out.len(), usize::from(i >= 5), "{i}");
            t += 60_000;
        }
        let out = p
            .on_windows(&one(ResultKind::Final, t, "spike-a", 160.0))
            .unwrap();
        assert!(out[0].active && out[0].value > 3.0, "{out:?}");
        assert_eq!(out[0].labels, [("g".to_owned(), "spike-a".to_owned())]);
        assert_eq!(out[0].severity.as_deref(), Some("warning"));
    }

    #[test]
    fn direction_above_ignores_drops_and_early_results_are_ignored() {
        let mut p = plugin(r#","direction":"above""#);
        for i in 0..10 {
            p.on_windows(&one(ResultKind::Final, i, "dir-b", 10.0 + (i % 2) as f64))
                .unwrap();
        }
        let out = p
            .on_windows(&one(ResultKind::Final, 11, "dir-b", 0.0))
            .unwrap();
        assert!(!out[0].active && out[0].value < -3.0, "{out:?}");
        assert!(
            p.on_windows(&one(ResultKind::Early, 12, "dir-b", 1e9))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn history_is_a_ring_of_the_newest_values() {
        let mut h = History {
            values: Vec::new(),
            next: 0,
        };
        for x in 0..7 {
            h.push(f64::from(x), 4);
        }
        let mut v = h.values.clone();
        v.sort_by(f64::total_cmp);
        assert_eq!(v, [3.0, 4.0, 5.0, 6.0]);
        assert_eq!(History::decode(&h.encode()), Some(h.clone()));
        h.push(7.0, 2);
        let mut v = h.values.clone();
        v.sort_by(f64::total_cmp);
        assert_eq!(v, [6.0, 7.0]);
        assert_eq!(History::decode(&[1, 2, 3]), None);
    }

    #[test]
    fn bad_configuration_is_refused_by_key() {
        for (json, needle) in [
            (r#"{"window":"w"}"#, "aggregate"),
            (r#"{"window":"w","aggregate":"n","k":-1}"#, "`k`"),
            (r#"{"window":"w","aggregate":"n","history":1}"#, "`history`"),
            (
                r#"{"window":"w","aggregate":"n","min_samples":100}"#,
                "`min_samples`",
            ),
            (r#"{"window":"w","aggregate":"n","kk":1}"#, "kk"),
            (r#"{"window":"w","aggregate":"n","direction":"up"}"#, "up"),
        ] {
            let err = ZScore::new(Config::from_json(json).unwrap()).err().unwrap();
            assert!(err.contains(needle), "{json}: {err}");
        }
        assert!(
            ZScore::new(Config::default())
                .unwrap()
                .watches()
                .windows
                .is_empty()
        );
    }

    #[test]
    fn a_flat_history_gives_a_finite_score() {
        assert_eq!(z_score(5.0, 5.0, 0.0), 0.0);
        assert!(z_score(6.0, 5.0, 0.0).is_finite() && z_score(6.0, 5.0, 0.0) > 1e6);
    }
}
