//! The families of `/metrics` rendered at scrape time from the snapshots
//! `GET /v1/plugins` and `GET /v1/channels` read: per stage (processor,
//! pattern plugin, alert plugin), per plugin (lifecycle, state keys and the
//! counters and gauges plugins define through `wit/metrics.wit`) and per
//! channel. Rendering from snapshots keeps `/metrics` consistent with the
//! REST API and costs the engine nothing between scrapes; docs/metrics.md
//! lists every family.
//!
//! Labels: stage families carry `kind`, `stage`, `plugin` and `version`
//! (the short content hash, [`crate::plugin::registry::short`], of the
//! version the stage runs). Plugin lifecycle counters carry `plugin` only:
//! a swap is exactly when the version changes, so a `version` label would
//! move each swap into a new series and `increase()` would never see it;
//! `eddy_plugin_info` maps a plugin to its live version instead.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::hub::ChannelInfo;
use crate::pipeline::{StageReport, StageStatus};
use crate::plugin::PluginStatus;
use crate::plugin::meter::StageKind;

/// The exposition format's value of `v` (`NaN`, `+Inf`, `-Inf` spelled as
/// Prometheus spells them).
fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

/// A label value escaped for the exposition format.
pub(super) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The name of the family a plugin-defined metric is exported as:
/// `eddy_plugin_metric_` and the name with every character outside
/// `[A-Za-z0-9_]` replaced by `_`; a counter ends in `_total` (added once).
pub fn plugin_metric_family(name: &str, counter: bool) -> String {
    let mut s = String::from("eddy_plugin_metric_");
    s.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    if counter {
        if let Some(stem) = s.strip_suffix("_total") {
            s.truncate(stem.len());
        }
        s.push_str("_total");
    }
    s
}

/// Per stage families, one series per stage.
pub fn render_stages(out: &mut String, stages: &[StageReport]) {
    if stages.is_empty() {
        return;
    }
    let label_set = |r: &StageReport| {
        labels(&[
            ("kind", r.kind.as_str()),
            ("stage", &r.name),
            ("plugin", &r.plugin),
            ("version", r.hash.as_deref().unwrap_or("")),
        ])
    };
    let processors = |r: &&StageReport| r.kind == StageKind::Processor;
    type Pick = fn(&StageReport) -> u64;
    let counters: [(&str, &str, bool, Pick); 10] = [
        (
            "eddy_stage_calls_total",
            "Plugin calls: batches a processor stage ran through its plugin, classify and on-match calls of a pattern plugin, evaluate calls of an alert plugin.",
            false,
            |r| match r.kind {
                StageKind::Processor => r.stats.batches - r.stats.skipped_batches,
                _ => r.stats.batches,
            },
        ),
        (
            "eddy_stage_events_in_total",
            "What went into the stage: events (processor, pattern) or window results and pattern matches (alert).",
            false,
            |r| r.stats.events_in,
        ),
        (
            "eddy_stage_events_out_total",
            "What came out: events passed on (processor), events that met a step's condition (pattern), evaluations (alert).",
            false,
            |r| r.stats.events_out,
        ),
        (
            "eddy_stage_events_dropped_total",
            "Events a processor plugin dropped.",
            true,
            |r| r.stats.dropped,
        ),
        (
            "eddy_stage_failed_batches_total",
            "Plugin calls that failed (trap, deadline, error, bad result).",
            false,
            |r| r.stats.failed_batches,
        ),
        (
            "eddy_stage_dead_letters_total",
            "Events a processor stage sent to the dead-letter output (on_failure = \"dead-letter\").",
            true,
            |r| r.stats.dead_lettered,
        ),
        (
            "eddy_stage_passed_through_total",
            "Events a processor stage passed on unchanged after a failure (on_failure = \"pass-through\").",
            true,
            |r| r.stats.passed_through,
        ),
        (
            "eddy_stage_skipped_batches_total",
            "Batches a processor stage did not call its plugin for (quarantined or not loaded).",
            true,
            |r| r.stats.skipped_batches,
        ),
        (
            "eddy_stage_quarantines_total",
            "Times the stage quarantined its plugin.",
            false,
            |r| r.stats.quarantines,
        ),
        (
            "eddy_stage_rollbacks_total",
            "Rollbacks the stage triggered (a new version failed on probation).",
            false,
            |r| r.stats.rollbacks,
        ),
    ];
    for (name, help, processor_only, pick) in counters {
        header(out, name, "counter", help);
        let rows: Box<dyn Iterator<Item = &StageReport>> = if processor_only {
            Box::new(stages.iter().filter(processors))
        } else {
            Box::new(stages.iter())
        };
        for r in rows {
            let _ = writeln!(out, "{name}{} {}", label_set(r), pick(r));
        }
    }
    header(
        out,
        "eddy_stage_quarantined",
        "gauge",
        "1 while the stage does not call its plugin (quarantine backoff), else 0.",
    );
    for r in stages {
        let q = u8::from(r.status == StageStatus::Quarantined);
        let _ = writeln!(out, "eddy_stage_quarantined{} {q}", label_set(r));
    }
    let name = "eddy_stage_batch_duration_seconds";
    header(
        out,
        name,
        "histogram",
        "Duration of each plugin call (a batch for processors and pattern classifiers), since the stage started in this process.",
    );
    for r in stages {
        let base = [
            ("kind", r.kind.as_str()),
            ("stage", r.name.as_str()),
            ("plugin", r.plugin.as_str()),
            ("version", r.hash.as_deref().unwrap_or("")),
        ];
        for (le, count) in r.latency.cumulative() {
            let le = le.map_or_else(|| "+Inf".to_owned(), value);
            let mut l = base.to_vec();
            l.push(("le", &le));
            let _ = writeln!(out, "{name}_bucket{} {count}", labels(&l));
        }
        let set = labels(&base);
        let _ = writeln!(out, "{name}_sum{set} {}", value(r.latency.sum_seconds()));
        let _ = writeln!(out, "{name}_count{set} {}", r.latency.count());
    }
}

/// Per plugin families: what the registry knows of each plugin, and the
/// counters and gauges plugins define.
pub fn render_plugins(out: &mut String, plugins: &[PluginStatus]) {
    if plugins.is_empty() {
        return;
    }
    header(
        out,
        "eddy_plugin_info",
        "gauge",
        "1 per plugin with a live version: its short content hash (version), kind and self-reported release.",
    );
    for p in plugins.iter().filter(|p| p.live) {
        let version = p
            .hash
            .as_deref()
            .map(crate::plugin::registry::short)
            .unwrap_or("");
        let kind = p.kind.map(|k| k.as_str()).unwrap_or("");
        let l = labels(&[
            ("plugin", &p.name),
            ("version", version),
            ("kind", kind),
            ("release", p.version.as_deref().unwrap_or("")),
        ]);
        let _ = writeln!(out, "eddy_plugin_info{l} 1");
    }
    type Pick = fn(&PluginStatus) -> u64;
    let counters: [(&str, &str, Pick); 7] = [
        (
            "eddy_plugin_loads_total",
            "Versions of the plugin that went live (first load or swap).",
            |p| p.loads,
        ),
        (
            "eddy_plugin_swaps_total",
            "Swaps from one live version to another.",
            |p| p.swaps,
        ),
        (
            "eddy_plugin_rollbacks_total",
            "Rollbacks to the previous version (automatic or requested).",
            |p| p.rollbacks,
        ),
        (
            "eddy_plugin_load_failures_total",
            "Files of the plugin that failed to load.",
            |p| p.load_failures,
        ),
        (
            "eddy_plugin_failures_total",
            "Failed calls of the plugin, all stages together.",
            |p| p.failures,
        ),
        (
            "eddy_plugin_quarantines_total",
            "Times a stage quarantined the plugin.",
            |p| p.quarantines,
        ),
        (
            "eddy_plugin_logs_suppressed_total",
            "Log records dropped by the per-call cap (runtime.max_log_records_per_call).",
            |p| p.logs_suppressed,
        ),
    ];
    for (name, help, pick) in counters {
        header(out, name, "counter", help);
        for p in plugins {
            let _ = writeln!(out, "{name}{} {}", labels(&[("plugin", &p.name)]), pick(p));
        }
    }
    header(
        out,
        "eddy_plugin_state_keys",
        "gauge",
        "Keys in the plugin's host-backed state store.",
    );
    for p in plugins {
        let _ = writeln!(
            out,
            "eddy_plugin_state_keys{} {}",
            labels(&[("plugin", &p.name)]),
            p.state_keys
        );
    }
    render_plugin_defined(out, plugins);
}

/// One family per plugin-defined metric name (see
/// [`plugin_metric_family`]), labelled by plugin. Two names of one plugin
/// that sanitise to the same family keep the first (in name order); a
/// gauge whose family is already a counter's is left out, since one family
/// has one type.
fn render_plugin_defined(out: &mut String, plugins: &[PluginStatus]) {
    /// A family's type (counter or not) and its samples, (plugin, value).
    type Family<'a> = (bool, Vec<(&'a str, String)>);
    let mut families: BTreeMap<String, Family<'_>> = BTreeMap::new();
    for p in plugins {
        let samples = p
            .counters
            .iter()
            .map(|(n, v)| (plugin_metric_family(n, true), true, v.to_string()))
            .chain(
                p.gauges
                    .iter()
                    .map(|(n, v)| (plugin_metric_family(n, false), false, value(*v))),
            );
        for (family, counter, v) in samples {
            let entry = families
                .entry(family)
                .or_insert_with(|| (counter, Vec::new()));
            if entry.0 != counter || entry.1.iter().any(|(name, _)| *name == p.name) {
                continue;
            }
            entry.1.push((p.name.as_str(), v));
        }
    }
    for (family, (counter, rows)) in families {
        let (kind, help) = if counter {
            (
                "counter",
                "A counter a plugin defines (wit/metrics.wit counter-add).",
            )
        } else {
            (
                "gauge",
                "A gauge a plugin defines (wit/metrics.wit gauge-set).",
            )
        };
        header(out, &family, kind, help);
        for (plugin, v) in rows {
            let _ = writeln!(out, "{family}{} {v}", labels(&[("plugin", plugin)]));
        }
    }
}

/// Per channel families.
pub fn render_channels(out: &mut String, channels: &[ChannelInfo]) {
    if channels.is_empty() {
        return;
    }
    type Pick = fn(&ChannelInfo) -> u64;
    let families: [(&str, &str, &str, Pick); 3] = [
        (
            "eddy_channel_messages_published_total",
            "counter",
            "Messages published on the channel since it was registered in this process.",
            |c| c.published,
        ),
        (
            "eddy_channel_subscribers",
            "gauge",
            "Open WebSocket and SSE subscriptions to the channel.",
            |c| c.subscribers as u64,
        ),
        (
            "eddy_channel_slow_client_closes_total",
            "counter",
            "Subscriptions closed because their client fell behind (streams.client_queue overflowed or a write stalled past streams.send_timeout).",
            |c| c.slow_closes,
        ),
    ];
    for (name, kind, help, pick) in families {
        header(out, name, kind, help);
        for c in channels {
            let _ = writeln!(out, "{name}{} {}", labels(&[("channel", &c.name)]), pick(c));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn plugin(name: &str, counters: &[(&str, u64)], gauges: &[(&str, f64)]) -> PluginStatus {
        PluginStatus {
            name: name.into(),
            live: true,
            kind: Some(crate::plugin::PluginKind::Processor),
            hash: Some("0123456789abcdef".into()),
            version: Some("1.0.0".into()),
            description: None,
            loaded_at_ms: None,
            loads: 1,
            swaps: 0,
            rollbacks: 0,
            load_failures: 0,
            failures: 0,
            quarantines: 0,
            last_error: None,
            state_keys: 0,
            logs_suppressed: 0,
            counters: counters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            gauges: gauges.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    #[test]
    fn plugin_metric_names_are_made_prometheus_names() {
        assert_eq!(
            plugin_metric_family("page.views", true),
            "eddy_plugin_metric_page_views_total"
        );
        assert_eq!(
            plugin_metric_family("sent_total", true),
            "eddy_plugin_metric_sent_total"
        );
        assert_eq!(
            plugin_metric_family("queue-depth (µs)", false),
            "eddy_plugin_metric_queue_depth___s_"
        );
    }

    #[test]
    fn plugin_metrics_render_one_family_per_name_with_one_type() {
        let plugins = [
            plugin(
                "a\"b",
                &[("hits", 3), ("hits.total", 9)],
                &[("hits_total", 1.0), ("ratio", f64::NAN)],
            ),
            plugin("c", &[("hits", 4)], &[("ratio", f64::INFINITY)]),
        ];
        let mut out = String::new();
        render_plugins(&mut out, &plugins);
        // Label values are escaped; the plugin's version is on info only.
        assert!(out.contains(
            "eddy_plugin_info{plugin=\"a\\\"b\",version=\"0123456789ab\",kind=\"processor\",release=\"1.0.0\"} 1"
        ));
        assert!(out.contains("eddy_plugin_swaps_total{plugin=\"c\"} 0"));
        // `hits` and `hits.total` are one family: the first (in name order)
        // stays; the gauge `hits_total` would clash with the counter and is
        // left out.
        assert_eq!(
            out.matches("# TYPE eddy_plugin_metric_hits_total counter")
                .count(),
            1
        );
        assert!(out.contains("eddy_plugin_metric_hits_total{plugin=\"a\\\"b\"} 3\n"));
        assert!(out.contains("eddy_plugin_metric_hits_total{plugin=\"c\"} 4\n"));
        assert!(!out.contains(" 9\n"), "{out}");
        assert!(!out.contains("gauge\neddy_plugin_metric_hits_total"));
        assert!(out.contains("# TYPE eddy_plugin_metric_ratio gauge"));
        assert!(out.contains("eddy_plugin_metric_ratio{plugin=\"a\\\"b\"} NaN"));
        assert!(out.contains("eddy_plugin_metric_ratio{plugin=\"c\"} +Inf"));
    }

    #[test]
    fn channels_render_counters_and_a_gauge() {
        let mut out = String::new();
        render_channels(
            &mut out,
            &[ChannelInfo {
                name: "events".into(),
                head_seq: 10,
                oldest_seq: 1,
                subscribers: 2,
                published: 7,
                slow_closes: 1,
            }],
        );
        assert_eq!(
            out.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            [
                "eddy_channel_messages_published_total{channel=\"events\"} 7",
                "eddy_channel_subscribers{channel=\"events\"} 2",
                "eddy_channel_slow_client_closes_total{channel=\"events\"} 1",
            ]
        );
        assert!(out.contains("# TYPE eddy_channel_subscribers gauge\n"));
    }
}
