//! `[[patterns]]`: what is accepted, and the message for each mistake.

use super::*;
use crate::pattern::{Conditions, PatternConfig};
use crate::pattern::{Contiguity, Inner, Skip, WithinType};

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "eddy.toml", &|_| None)
}

/// The `key: message` of a rejected config.
fn rejected(text: &str) -> (String, String) {
    match parse(text) {
        Err(ConfigError::Invalid { key, message, .. }) => (key, message),
        Err(ConfigError::Parse { message, .. }) => ("<parse>".into(), message),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn pattern(head: &str, steps: &str) -> String {
    format!("[[patterns]]\nname = \"p\"\n{head}\n{steps}\n")
}

fn only(config: &Config) -> &PatternConfig {
    assert_eq!(config.patterns.len(), 1);
    &config.patterns[0]
}

#[test]
fn a_full_pattern_definition_is_read() {
    let config = parse(
        r#"
[time]
out_of_orderness = "7s"

[[patterns]]
name = "funnel"
key = "properties.cart_id"
within = "30m"
within_type = "previous_and_current"
skip = { to_last = "cart" }
idle_timeout = "20s"
max_partials_per_key = 10
max_partials = 500
max_history = 0

[[patterns.steps]]
name = "view"
names = ["$pageview"]
where = [{ field = "properties.$pathname", op = "contains", value = "/product/" }]

[[patterns.steps]]
name = "cart"
after = "any"
names = ["add_to_cart"]
times_or_more = 2
inner = "strict"
greedy = true
until = { names = ["checkout"] }

[[patterns.steps]]
name = "purchase"
after = "strict"
optional = true
"#,
    )
    .unwrap();
    let p = only(&config);
    assert_eq!(p.name, "funnel");
    assert_eq!(p.key, "properties.cart_id");
    assert_eq!(p.def.within, Some(30 * 60_000));
    assert_eq!(p.def.within_type, WithinType::PreviousAndCurrent);
    assert_eq!(p.def.skip, Skip::ToLast("cart".into()));
    assert_eq!(p.out_of_orderness_ms, 7_000, "[time]'s default");
    assert_eq!(p.idle_timeout_ms, 20_000);
    assert_eq!(
        (p.max_partials_per_key, p.max_partials, p.max_history),
        (10, 500, 0)
    );
    let s = &p.def.steps;
    assert_eq!(s.len(), 3);
    assert_eq!(s[1].after, Contiguity::Any);
    assert_eq!((s[1].quantifier.min, s[1].quantifier.max), (2, None));
    assert_eq!(s[1].quantifier.inner, Inner::Strict);
    assert!(s[1].quantifier.greedy && s[1].until);
    assert_eq!(s[2].after, Contiguity::Strict);
    assert!(s[2].quantifier.optional);
    let Conditions::Declared(c) = &p.conditions else {
        panic!("declared")
    };
    assert_eq!(
        c[2].filter,
        serde_json::json!({}),
        "no condition: every event"
    );
    assert_eq!(c[1].until, Some(serde_json::json!({"names": ["checkout"]})));
}

#[test]
fn defaults_and_the_embedded_examples() {
    let config = parse(&pattern("", "[[patterns.steps]]\nname = \"a\"")).unwrap();
    let p = only(&config);
    assert_eq!(p.key, "distinct_id");
    assert_eq!(p.def.within, None);
    assert_eq!(p.def.skip, Skip::NoSkip);
    assert_eq!(p.def.steps[0].after, Contiguity::Relaxed);
    assert_eq!(
        (p.def.steps[0].quantifier.min, p.def.steps[0].quantifier.max),
        (1, Some(1))
    );
    let embedded = Config::parse(DEFAULT_CONFIG, "embedded", &|_| None).unwrap();
    let names: Vec<_> = embedded.patterns.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["purchase_funnel", "cart_abandonment"]);
}

#[test]
fn mistakes_name_their_key() {
    let step = |body: &str| {
        pattern(
            "",
            &format!("[[patterns.steps]]\nname = \"a\"\n[[patterns.steps]]\nname = \"b\"\n{body}"),
        )
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (pattern("", ""), "patterns[0].steps", "at least one"),
        (
            pattern("within = \"soon\"", "[[patterns.steps]]\nname = \"a\""),
            "patterns[0].within",
            "not a duration",
        ),
        (
            pattern("within_type = \"last\"", "[[patterns.steps]]\nname = \"a\""),
            "patterns[0].within_type",
            "first_and_last or previous_and_current",
        ),
        (
            pattern("skip = \"skip_all\"", "[[patterns.steps]]\nname = \"a\""),
            "patterns[0].skip",
            "unknown strategy `skip_all`",
        ),
        (
            pattern(
                "skip = { to_middle = \"a\" }",
                "[[patterns.steps]]\nname = \"a\"",
            ),
            "patterns[0].skip",
            "to_first",
        ),
        (
            step("after = \"next\""),
            "patterns[0].steps[1].after",
            "unknown contiguity `next`",
        ),
        (
            step("inner = \"loose\""),
            "patterns[0].steps[1].inner",
            "strict, relaxed or any",
        ),
        (
            step("times = 0"),
            "patterns[0].steps[1].times",
            "between 1 and 10000",
        ),
        (
            step("times = [3, 2]"),
            "patterns[0].steps[1].times",
            "upper bound is below",
        ),
        (
            step("times = \"2\""),
            "patterns[0].steps[1].times",
            "n or [n, m]",
        ),
        (
            step("after = \"not_relaxed\"\ntimes = 2\n[[patterns.steps]]\nname = \"c\""),
            "patterns[0].steps[1].times",
            "",
        ),
        (
            step("times = 2\none_or_more = true"),
            "patterns[0].steps[1].one_or_more",
            "one quantifier",
        ),
        (
            step("until = \"x\""),
            "patterns[0].steps[1].until",
            "expected a condition",
        ),
        (
            step("until = { names = [\"x\"] }"),
            "patterns[0].steps[1].until",
            "only to a looping step",
        ),
        (
            pattern(
                "",
                "[[patterns.steps]]\nname = \"a\"\n[[patterns.steps]]\nname = \"b\"\nafter = \"not_relaxed\"",
            ),
            "patterns[0].within",
            "",
        ),
        (
            pattern("", "[[patterns.steps]]\nname = \"a\"\none_or_more = true"),
            "patterns[0].steps[0].one_or_more",
            "",
        ),
        (
            pattern(
                "skip = { to_first = \"nope\" }",
                "[[patterns.steps]]\nname = \"a\"",
            ),
            "patterns[0].skip",
            "nope",
        ),
        (
            step("until = { name = \"x\" }"),
            "patterns[0].steps[1].until",
            "unknown field `name`",
        ),
        (
            pattern("", "[[patterns.steps]]\nname = \"a\"\nafter = \"strict\""),
            "patterns[0].steps[0].after",
            "the first step follows nothing",
        ),
        (
            pattern(
                "",
                "[[patterns.steps]]\nname = \"a\"\nwhere = [{ field = \"properties.x\", op = \"near\", value = 1 }]",
            ),
            "patterns[0].steps[0]",
            "unknown operator `near`",
        ),
        (
            pattern("key = \"window.x\"", "[[patterns.steps]]\nname = \"a\""),
            "patterns[0].key",
            "not an event field",
        ),
        (
            pattern("", "[[patterns.steps]]\nname = \"a\"\ncolour = 1"),
            "<parse>",
            "unknown field `colour`",
        ),
        (
            "[[patterns]]\nname = \"a b\"\n[[patterns.steps]]\nname = \"a\"\n".to_owned(),
            "patterns[0].name",
            "not a pattern name",
        ),
        (
            format!(
                "{}{}",
                pattern("", "[[patterns.steps]]\nname = \"a\""),
                pattern("", "[[patterns.steps]]\nname = \"a\"")
            ),
            "patterns[1].name",
            "duplicate pattern name `p`",
        ),
    ];
    for (text, key, message) in cases {
        let (k, m) = rejected(&text);
        assert_eq!(k, key, "for {text}: {m}");
        assert!(m.contains(message), "for {text}: `{m}` lacks `{message}`");
    }
}

#[test]
fn a_plugin_entry_sets_a_pattern_plugins_limits_only() {
    let config = parse(
        r#"
[time]
out_of_orderness = "3s"

[[patterns]]
plugin = "login-burst"
max_partials_per_key = 5
max_partials = 2000000
idle_timeout = "9s"
"#,
    )
    .unwrap();
    assert!(config.patterns.is_empty());
    assert_eq!(
        config.pattern_plugins,
        vec![PluginPatternLimits {
            plugin: "login-burst".into(),
            out_of_orderness_ms: 3_000,
            idle_timeout_ms: 9_000,
            max_partials_per_key: 5,
            max_partials: 2_000_000,
            max_history: crate::pattern::operator::DEFAULT_MAX_HISTORY,
        }]
    );
}

#[test]
fn a_plugin_entry_refuses_what_the_plugin_describes_and_twins() {
    for (extra, key) in [
        ("name = \"x\"", "patterns[0].name"),
        ("key = \"distinct_id\"", "patterns[0].key"),
        ("within = \"1m\"", "patterns[0].within"),
        ("skip = \"skip_to_next\"", "patterns[0].skip"),
    ] {
        let (k, message) = rejected(&format!("[[patterns]]\nplugin = \"lb\"\n{extra}\n"));
        assert_eq!(k, key, "{extra}: {message}");
        assert!(message.contains("not with `plugin`"), "{message}");
    }
    let (k, message) =
        rejected("[[patterns]]\nplugin = \"lb\"\n[[patterns.steps]]\nname = \"a\"\n");
    assert_eq!(
        (k.as_str(), message.contains("not with `plugin`")),
        ("patterns[0].steps", true)
    );
    let (k, message) = rejected("[[patterns]]\nplugin = \"../lb\"\n");
    assert_eq!(k, "patterns[0].plugin", "{message}");
    let (k, message) = rejected("[[patterns]]\nplugin = \"lb\"\n[[patterns]]\nplugin = \"lb\"\n");
    assert_eq!(k, "patterns[1].plugin");
    assert!(message.contains("set twice"), "{message}");
    let (k, message) = rejected("[[patterns]]\nmax_partials = 5\n");
    assert_eq!(k, "patterns[0].name");
    assert!(message.contains("missing"), "{message}");
}
