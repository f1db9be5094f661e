//! Pattern plugins through the registry, as the pattern operator uses them:
//! loaded from the plugins folder next to processors, described,
//! classifying batches and judging matches; refused where a processor
//! belongs; swapped with a notice.

use std::sync::Arc;
use std::time::Duration;

use eddy::config::RuntimeConfig;
use eddy::event::{Event, Value};
use eddy::plugin::pattern::{
    ConditionBits, ContiguityDesc, InnerDesc, PatternContext, PatternDescription, SkipDesc,
    StepDescription, Verdict, WithinTypeDesc,
};
use eddy::plugin::{NoticeKind, PluginEngine, PluginError, PluginKind, Registry};
use eddy_tests::plugins::*;
use eddy_tests::*;
use serde_json::json;

fn registry(sb: &Sandbox) -> Arc<Registry> {
    Registry::new(
        PluginEngine::new().unwrap(),
        // Python and JavaScript components take seconds to compile, more
        // while other tests compile theirs.
        RuntimeConfig {
            compile_timeout: Duration::from_secs(120),
            deadline: Duration::from_secs(5),
            ..RuntimeConfig::default()
        },
        sb.plugins_dir(),
    )
}

fn event(id: &str, name: &str, user: &str, ts: i64, props: &[(&str, Value)]) -> Event {
    Event {
        id: id.into(),
        name: name.into(),
        timestamp: ts,
        distinct_id: user.into(),
        session_id: None,
        properties: props
            .iter()
            .map(|(k, v)| (compact_str::CompactString::from(*k), v.clone()))
            .collect(),
    }
}

fn step(name: &str, after: ContiguityDesc, min: u32, max: Option<u32>) -> StepDescription {
    StepDescription {
        name: name.into(),
        after,
        min,
        max,
        optional: false,
        greedy: false,
        inner: InnerDesc::Relaxed,
        has_until: false,
    }
}

#[test]
fn login_burst_loads_as_a_pattern_describes_itself_and_classifies() {
    let sb = Sandbox::new();
    sb.install(LOGIN_BURST, "login-burst");
    sb.install(PASS_THROUGH, "pass-through");
    let registry = registry(&sb);
    assert_eq!(registry.load_all().unwrap(), 2);
    let patterns = registry.patterns();
    assert_eq!(
        patterns.keys().collect::<Vec<_>>(),
        ["login-burst"],
        "processors are not patterns"
    );
    let kinds: Vec<_> = registry
        .status()
        .into_iter()
        .map(|s| (s.name, s.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("login-burst".to_owned(), Some(PluginKind::Pattern)),
            ("pass-through".to_owned(), Some(PluginKind::Processor)),
        ]
    );

    let context = PatternContext::new(&registry, "login-burst");
    let mut instance = registry
        .pattern_instance("login-burst", &patterns["login-burst"], &context)
        .unwrap();
    let mut failures = step("failures", ContiguityDesc::Relaxed, 3, None);
    failures.inner = InnerDesc::Strict;
    let expected = PatternDescription {
        key: "distinct_id".into(),
        steps: vec![
            failures,
            step("success", ContiguityDesc::Strict, 1, Some(1)),
        ],
        within_ms: Some(60_000),
        within_type: WithinTypeDesc::FirstAndLast,
        skip: SkipDesc::PastLastEvent,
        wants_matches: false,
    };
    assert_eq!(instance.describe().unwrap(), expected);
    assert_eq!(instance.compiled().pattern.as_ref(), Some(&expected));

    let batch = [
        event("1", "login_failed", "u1", 1_000, &[]),
        event("2", "$pageview", "u1", 2_000, &[]),
        event("3", "login_succeeded", "u2", 3_000, &[]),
    ];
    let bits = instance.classify(&batch, 0).unwrap();
    let b = |steps| ConditionBits { steps, until: 0 };
    assert_eq!(bits, [b(0b01), b(0), b(0b10)]);
    assert!(instance.classify(&[], 0).unwrap().is_empty());
}

#[test]
fn high_value_cart_in_python_sums_the_basket_on_match() {
    high_value_cart(HIGH_VALUE_CART_PY);
}

#[test]
fn high_value_cart_in_javascript_sums_the_basket_on_match() {
    high_value_cart(HIGH_VALUE_CART_JS);
}

/// The Python and JavaScript builds of high-value-cart behave alike.
fn high_value_cart(built: &str) {
    let sb = Sandbox::new();
    sb.install(built, "high-value-cart");
    let registry = registry(&sb);
    registry.load_all().unwrap();
    let hash = registry.patterns()["high-value-cart"].clone();
    let context = PatternContext::new(&registry, "high-value-cart");
    let mut instance = registry
        .pattern_instance("high-value-cart", &hash, &context)
        .unwrap();
    let d = instance.describe().unwrap();
    assert_eq!(
        d.steps,
        [
            step("cart", ContiguityDesc::Relaxed, 1, None),
            step("purchase", ContiguityDesc::Relaxed, 1, Some(1)),
        ]
    );
    assert_eq!(
        (d.within_ms, d.skip, d.wants_matches),
        (Some(1_800_000), SkipDesc::PastLastEvent, true)
    );

    let price = |p: f64| [("price", Value::Float(p))];
    let c1 = event("c1", "add_to_cart", "u", 1, &price(60.0));
    let c2 = event("c2", "add_to_cart", "u", 2, &[("price", Value::Int(70))]);
    let p = event("p", "purchase", "u", 3, &[]);
    let other = event("o", "$pageview", "u", 4, &[]);
    let b = |steps| ConditionBits { steps, until: 0 };
    assert_eq!(
        instance
            .classify(&[c1.clone(), other, p.clone()], 0)
            .unwrap(),
        [b(0b01), b(0), b(0b10)]
    );

    let verdict = instance
        .on_match(
            "u",
            1,
            3,
            &[("cart", vec![&c1, &c2]), ("purchase", vec![&p])],
            0,
        )
        .unwrap();
    // JavaScript writes 130, Python 130.0: the same number.
    let Verdict::Keep(Some(payload)) = verdict else {
        panic!("a basket of 130 is kept with a payload: {verdict:?}");
    };
    assert_eq!(payload["basket_total"].as_f64(), Some(130.0), "{payload}");
    assert_eq!(payload["items"], 2, "{payload}");
    let cheap = event("c3", "add_to_cart", "u", 1, &price(9.5));
    let verdict = instance
        .on_match(
            "u",
            1,
            3,
            &[("cart", vec![&cheap]), ("purchase", vec![&p])],
            0,
        )
        .unwrap();
    assert_eq!(verdict, Verdict::Reject);

    // The threshold is configuration; the pattern is not.
    let mut lenient = PatternContext::new(&registry, "high-value-cart");
    lenient.config = r#"{"min_total": 5}"#.into();
    let mut instance = registry
        .pattern_instance("high-value-cart", &hash, &lenient)
        .unwrap();
    let verdict = instance
        .on_match(
            "u",
            1,
            3,
            &[("cart", vec![&cheap]), ("purchase", vec![&p])],
            0,
        )
        .unwrap();
    let Verdict::Keep(Some(payload)) = verdict else {
        panic!("kept above min_total 5: {verdict:?}");
    };
    assert_eq!(payload["basket_total"].as_f64(), Some(9.5), "{payload}");
    let mut typo = PatternContext::new(&registry, "high-value-cart");
    typo.config = r#"{"min_totl": 5}"#.into();
    let err = registry
        .pattern_instance("high-value-cart", &hash, &typo)
        .err()
        .unwrap();
    assert!(err.to_string().contains("min_totl"), "{err}");
}

#[test]
fn kinds_are_not_interchangeable() {
    let sb = Sandbox::new();
    sb.install(LOGIN_BURST, "login-burst");
    sb.install(PASS_THROUGH, "pass-through");
    // A processor stage naming a pattern plugin does not start.
    let cfg = sb.config("[[stages]]\nplugin = \"login-burst\"\n");
    let run = sb.pipe(&cfg, &event_line("a", "u1", 1, json!({})), &[]);
    assert!(!run.success, "a stage cannot run a pattern plugin");
    assert!(
        run.stderr.contains(
            "plugin `login-burst` is a pattern plugin, but a processor plugin is needed here"
        ),
        "{}",
        run.stderr
    );
    // And a processor is no pattern.
    let registry = registry(&sb);
    registry.load_all().unwrap();
    let hash = registry.live_versions()["pass-through"].clone();
    let context = PatternContext::new(&registry, "pass-through");
    let err = registry
        .pattern_instance("pass-through", &hash, &context)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            PluginError::WrongKind {
                found: PluginKind::Processor,
                wanted: PluginKind::Pattern,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_pattern_plugin_swaps_with_a_notice_and_both_versions_stay_selectable() {
    let sb = Sandbox::new();
    sb.install(LOGIN_BURST, "login-burst");
    let registry = registry(&sb);
    let notices = registry.subscribe();
    registry.load_all().unwrap();
    let first = notices.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(first.kind, NoticeKind::Loaded);
    assert!(first.detail.contains("pattern plugin"), "{}", first.detail);
    let v1 = registry.patterns()["login-burst"].clone();

    sb.rename_over(LOGIN_BURST_V2, "login-burst");
    registry.load_file(&sb.plugin_path("login-burst")).unwrap();
    let swap = notices.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (swap.plugin.as_str(), swap.kind),
        ("login-burst", NoticeKind::Swapped)
    );
    let v2 = registry.patterns()["login-burst"].clone();
    assert_ne!(v1, v2);
    assert_eq!(swap.hash.as_deref(), Some(v2.as_str()));
    // Both versions stay selectable by hash, each with its own pattern.
    let context = PatternContext::new(&registry, "login-burst");
    let min = |hash: &str| {
        let mut i = registry
            .pattern_instance("login-burst", hash, &context)
            .unwrap();
        i.describe().unwrap().steps[0].min
    };
    assert_eq!((min(&v1), min(&v2)), (3, 4));
}
