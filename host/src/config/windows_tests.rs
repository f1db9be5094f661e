//! `[[windows]]` and `[live]`: what is accepted, and the message for each
//! mistake.

use super::*;
use crate::window::{OnFuture, WindowKind};

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "eddy.toml", &|_| None)
}

fn window(body: &str) -> String {
    format!("[[windows]]\nname = \"w\"\naggregates = [\"count\"]\n{body}\n")
}

/// The `key: message` of a rejected config.
fn rejected(text: &str) -> (String, String) {
    match parse(text) {
        Err(ConfigError::Invalid { key, message, .. }) => (key, message),
        Err(ConfigError::Parse { message, .. }) => ("<parse>".into(), message),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn a_full_window_definition_is_read() {
    let config = parse(
        r#"
[[windows]]
name = "page_load"
kind = "sliding"
size = "10m"
slide = "2m"
group_by = ["properties.$pathname", "name"]
filter = { names = ["$pageview"], where = [{ field = "properties.load_ms", op = "is_set" }] }
aggregates = ["count", "sum(properties.load_ms) as total"]
out_of_orderness = "2s"
allowed_lateness = "1m"
idle_timeout = "30s"
early_every = "5s"
max_groups = 500
history = "2h"
max_history = 1000

[[windows]]
name = "sessions"
kind = "session"
gap = "30m"
max_duration = "4h"
aggregates = ["count"]

[time]
out_of_orderness = "3s"
idle_timeout = "20s"
future_skew = "10m"
on_future = "clamp"

[live]
users_window = "1m"
max_users = 10
pages_window = "30s"
max_pages = 20
"#,
    )
    .unwrap();
    let w = &config.windows[0];
    assert_eq!(w.name, "page_load");
    assert_eq!(
        w.kind,
        WindowKind::Sliding {
            size_ms: 600_000,
            slide_ms: 120_000
        }
    );
    assert_eq!(w.group_by, ["properties.$pathname", "name"]);
    assert_eq!(w.filter.as_ref().unwrap()["names"][0], "$pageview");
    assert_eq!(w.time.out_of_orderness_ms, 2_000);
    assert_eq!(w.time.allowed_lateness_ms, 60_000);
    assert_eq!(w.time.idle_timeout_ms, 30_000);
    assert_eq!(w.time.early_every_ms, Some(5_000));
    // [time] is the engine's, and the windows' defaults.
    assert_eq!(config.time.future_skew_ms, 600_000);
    assert_eq!(config.time.on_future, OnFuture::Clamp);
    assert_eq!(config.windows[1].time.out_of_orderness_ms, 3_000);
    assert_eq!(config.windows[1].time.idle_timeout_ms, 20_000);
    assert_eq!(
        (w.max_groups, w.history_ms, w.max_history),
        (500, 7_200_000, 1000)
    );
    assert_eq!(
        config.windows[1].kind,
        WindowKind::Session {
            gap_ms: 1_800_000,
            max_duration_ms: Some(14_400_000)
        }
    );
    assert_eq!(config.live.users_window_ms, 60_000);
    assert_eq!(config.live.max_users, 10);
    assert_eq!(config.live.pages_window_ms, 30_000);
    assert_eq!(config.live.max_pages, 20);
}

#[test]
fn every_mistake_names_its_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "kind = \"hopping\"",
            "windows[0].kind",
            "unknown window kind `hopping`; expected tumbling, sliding or session",
        ),
        (
            "kind = \"tumbling\"",
            "windows[0].size",
            "is required for tumbling windows",
        ),
        (
            "kind = \"tumbling\"\nsize = \"1m\"\ngap = \"1m\"",
            "windows[0].gap",
            "is not used by tumbling windows",
        ),
        (
            "kind = \"tumbling\"\nsize = \"ten seconds\"",
            "windows[0].size",
            "is not a duration",
        ),
        (
            "kind = \"tumbling\"\nsize = \"0s\"",
            "windows[0].size",
            "must be at least 1ms",
        ),
        (
            "kind = \"tumbling\"\nsize = \"400days\"",
            "windows[0].size",
            "at most 366 days",
        ),
        (
            "kind = \"tumbling\"\nsize = \"1500us\"",
            "windows[0].size",
            "whole milliseconds",
        ),
        (
            "kind = \"sliding\"\nsize = \"10m\"\nslide = \"3m\"",
            "windows[0].slide",
            "must divide size evenly",
        ),
        (
            "kind = \"sliding\"\nsize = \"1m\"\nslide = \"2m\"",
            "windows[0].slide",
            "must divide size evenly",
        ),
        (
            "kind = \"sliding\"\nsize = \"1m\"",
            "windows[0].slide",
            "is required for sliding windows",
        ),
        (
            "kind = \"session\"",
            "windows[0].gap",
            "is required for session windows",
        ),
        (
            "kind = \"session\"\ngap = \"1m\"\nsize = \"1m\"",
            "windows[0].size",
            "is not used by session windows",
        ),
        (
            "kind = \"tumbling\"\nsize = \"1m\"\non_future = \"clamp\"",
            "windows[0].on_future",
            "engine-wide: set `on_future` in the [time] section",
        ),
        (
            "kind = \"tumbling\"\nsize = \"1m\"\nfuture_skew = \"1m\"",
            "windows[0].future_skew",
            "engine-wide: set `future_skew` in the [time] section",
        ),
        (
            "kind = \"tumbling\"\nsize = \"1m\"\nmax_groups = 0",
            "windows[0].max_groups",
            "must be between 1 and",
        ),
        (
            "kind = \"tumbling\"\nsize = \"1m\"\ngroup_by = [\"nope\"]",
            "windows[0].group_by[0]",
            "is not an event field",
        ),
        (
            "kind = \"tumbling\"\nsize = \"1m\"\ngroup_by = [\"properties.\"]",
            "windows[0].group_by[0]",
            "empty",
        ),
        (
            "kind = \"tumbling\"\nsize = \"1m\"\nfilter = { where = [{ field = \"name\", op = \"like\" }] }",
            "windows[0].filter",
            "unknown operator `like`",
        ),
        (
            "kind = \"tumbling\"\nsize = \"1m\"\nfilter = { names = \"x\" }",
            "windows[0].filter",
            "names",
        ),
        (
            "kind = \"tumbling\"\nsize = \"1m\"\nallowed_lateness = \"-1s\"",
            "windows[0].allowed_lateness",
            "is not a duration",
        ),
    ];
    for (body, key, message) in cases {
        let (k, m) = rejected(&window(body));
        assert_eq!(&k, key, "{body}: {m}");
        assert!(m.contains(message), "{body}: `{m}` lacks `{message}`");
    }
}

#[test]
fn aggregates_names_and_unknown_keys_are_checked() {
    let head = "[[windows]]\nname = \"w\"\nkind = \"tumbling\"\nsize = \"1m\"\n";
    let (k, m) = rejected(&format!(
        "{head}aggregates = [\"count\", \"p96(properties.x)\"]\n"
    ));
    assert_eq!(k, "windows[0].aggregates[1]");
    assert!(
        m.starts_with("unknown function `p96`; expected one of"),
        "{m}"
    );
    let (k, m) = rejected(&format!("{head}aggregates = []\n"));
    assert_eq!(k, "windows[0].aggregates");
    assert!(m.contains("at least one aggregate"), "{m}");
    let (k, m) = rejected(&window("kind = \"tumbling\"\nsize = \"1m\"\nslid = \"1m\""));
    assert_eq!(k, "<parse>");
    assert!(m.contains("slid"), "{m}");
    let (k, m) = rejected("[[windows]]\nname = \"w\"\nkind = \"tumbling\"\nsize = \"1m\"\n");
    assert_eq!(k, "<parse>");
    assert!(m.contains("aggregates"), "{m}");
    let (k, m) =
        rejected(&window("kind = \"tumbling\"\nsize = \"1m\"").replace("\"w\"", "\"a/b\""));
    assert_eq!(k, "windows[0].name");
    assert!(m.contains("not a window name"), "{m}");
    let two = format!(
        "{}{}",
        window("kind = \"tumbling\"\nsize = \"1m\""),
        window("kind = \"session\"\ngap = \"1m\"")
    );
    let (k, m) = rejected(&two);
    assert_eq!(k, "windows[1].name");
    assert!(
        m.contains("duplicate window name `w` (also windows[0])"),
        "{m}"
    );
}

#[test]
fn live_settings_are_checked() {
    let (k, m) = rejected("[live]\nusers_window = \"0s\"\n");
    assert_eq!(k, "live.users_window");
    assert!(m.contains("at least 1ms"), "{m}");
    let (k, m) = rejected("[live]\npages_window = \"10ms\"\n");
    assert_eq!(k, "live.pages_window");
    assert!(m.contains("at least 1000ms"), "{m}");
    let (k, _) = rejected("[live]\nmax_users = -1\n");
    assert_eq!(k, "live.max_users");
    let (k, m) = rejected("[live]\ntop = 3\n");
    assert_eq!(k, "<parse>");
    assert!(m.contains("top"), "{m}");
}

const PARTIALS_SOURCE: &str = r#"
[[sources.kafka]]
brokers = "127.0.0.1:9092"
topics = ["eddy-partials"]
group_id = "eddy-merge"
format = "partials"
"#;

#[test]
fn partials_and_merge_from_are_read() {
    let c = parse(&window(
        "kind = \"tumbling\"\nsize = \"1m\"\npartials = true",
    ))
    .unwrap();
    assert!(c.windows[0].partials);
    assert_eq!(c.windows[0].merge_from, None);
    let text = format!(
        "{}{PARTIALS_SOURCE}",
        window("kind = \"sliding\"\nsize = \"1m\"\nslide = \"10s\"\nmerge_from = \"pageviews\"")
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.windows[0].merge_from.as_deref(), Some("pageviews"));
    assert_eq!(
        c.sources.kafka[0].format,
        crate::config::KafkaFormat::Partials
    );
}

#[test]
fn partials_and_merge_from_mistakes_name_the_key() {
    let tumbling = "kind = \"tumbling\"\nsize = \"1m\"";
    let session = "kind = \"session\"\ngap = \"30m\"";
    let cases = [
        (
            window(&format!("{session}\npartials = true")),
            "windows[0].partials",
            "session",
        ),
        (
            window(&format!(
                "{tumbling}\npartials = true\nallowed_lateness = \"1m\""
            )),
            "windows[0].allowed_lateness",
            "merged twice",
        ),
        (
            format!(
                "{}{PARTIALS_SOURCE}",
                window(&format!("{session}\nmerge_from = \"w2\""))
            ),
            "windows[0].merge_from",
            "session",
        ),
        (
            format!(
                "{}{PARTIALS_SOURCE}",
                window(&format!(
                    "{tumbling}\nmerge_from = \"w2\"\nfilter = {{ names = [\"a\"] }}"
                ))
            ),
            "windows[0].filter",
            "merge_from",
        ),
        (
            format!(
                "{}{PARTIALS_SOURCE}",
                window(&format!("{tumbling}\nmerge_from = \"a b\""))
            ),
            "windows[0].merge_from",
            "not a window name",
        ),
        (
            window(&format!("{tumbling}\nmerge_from = \"w2\"")),
            "windows[0].merge_from",
            "format = \"partials\"",
        ),
        (
            format!("{}{PARTIALS_SOURCE}", window(tumbling)),
            "sources.kafka[0].format",
            "merge_from",
        ),
        (
            format!(
                "{}{PARTIALS_SOURCE}timestamp = \"record\"\n",
                window(&format!("{tumbling}\nmerge_from = \"w2\""))
            ),
            "sources.kafka[0].timestamp",
            "partials",
        ),
    ];
    for (text, key, says) in cases {
        let (k, message) = rejected(&text);
        assert_eq!(k, key, "{text}\n{message}");
        assert!(message.contains(says), "{key}: {message}");
    }
}
