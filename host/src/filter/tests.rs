//! Unit tests of filters, field paths and projections.

#![allow(clippy::unwrap_used)]

use super::matching::{kmp_table, node_contains};
use super::*;
use crate::event::Event;
use serde_json::json;

fn event() -> Event {
    Event::from_value(
        json!({"id": "e1", "name": "$pageview", "timestamp": 1_700_000_000_000i64,
               "distinct_id": "u1", "properties": {
                   "$browser": "Chrome", "price": 10, "ratio": 2.5, "flag": true,
                   "none": null, "tags": ["a", "b"], "a.b": "dotted", "count": "10"}}),
        String::new,
    )
    .unwrap()
}

fn one(field: &str, op: &str, value: Option<Json>) -> Filter {
    let mut p = json!({"field": field, "op": op});
    if let Some(v) = value {
        p["value"] = v;
    }
    Filter::from_json(&json!({"where": [p]})).unwrap()
}

fn err(v: Json) -> String {
    Filter::from_json(&v).unwrap_err().to_string()
}

#[test]
fn equals_compares_json_types() {
    let e = event();
    let yes = |f: &str, v: Json| one(f, "equals", Some(v)).matches(&e);
    assert!(yes("properties.$browser", json!("Chrome")));
    assert!(!yes("properties.$browser", json!("chrome")));
    assert!(yes("properties.price", json!(10)));
    assert!(
        yes("properties.price", json!(10.0)),
        "Int 10 equals Float 10.0"
    );
    assert!(
        !yes("properties.price", json!("10")),
        "a string is not a number"
    );
    assert!(
        !yes("properties.count", json!(10)),
        "a number is not a string"
    );
    assert!(yes("properties.ratio", json!(2.5)));
    assert!(yes("properties.flag", json!(true)));
    assert!(yes("properties.none", Json::Null));
    assert!(
        !yes("properties.missing", Json::Null),
        "missing is not null"
    );
    assert!(yes("properties.tags", json!(["a", "b"])));
    assert!(!yes("properties.tags", json!(["b", "a"])));
    assert!(
        yes("properties.a.b", json!("dotted")),
        "the key keeps its dot"
    );
    assert!(yes("name", json!("$pageview")));
    assert!(yes("timestamp", json!(1_700_000_000_000i64)));
    assert!(!yes("session_id", json!("s")), "absent session");
}

#[test]
fn not_equals_is_true_when_missing() {
    let e = event();
    let ne = |f: &str, v: Json| one(f, "not_equals", Some(v)).matches(&e);
    assert!(ne("properties.missing", json!("x")));
    assert!(ne("properties.$browser", json!("Firefox")));
    assert!(!ne("properties.price", json!(10.0)));
    assert!(ne("properties.price", json!("10")));
}

#[test]
fn contains_gt_lt_and_set() {
    let e = event();
    let t = |f: &str, op: &str, v: Option<Json>| one(f, op, v).matches(&e);
    assert!(t("properties.$browser", "contains", Some(json!("hro"))));
    assert!(!t("properties.$browser", "contains", Some(json!("x"))));
    assert!(
        t("properties.tags", "contains", Some(json!("\"b\""))),
        "JSON text"
    );
    assert!(
        !t("properties.price", "contains", Some(json!("1"))),
        "numbers are not text"
    );
    assert!(!t("properties.missing", "contains", Some(json!(""))));
    assert!(t("properties.price", "gt", Some(json!(9.5))));
    assert!(!t("properties.price", "gt", Some(json!(10))));
    assert!(t("properties.ratio", "lt", Some(json!(3))));
    assert!(
        !t("properties.count", "gt", Some(json!(1))),
        "a numeric string is not a number"
    );
    assert!(!t("properties.missing", "lt", Some(json!(1))));
    assert!(t("properties.flag", "is_set", None));
    assert!(!t("properties.none", "is_set", None), "null is not set");
    assert!(!t("properties.missing", "is_set", None));
    assert!(t("properties.none", "is_not_set", None));
    assert!(t("properties.missing", "is_not_set", None));
    assert!(!t("distinct_id", "is_not_set", None));
}

#[test]
fn names_any_of_and_predicates_all_of() {
    let e = event();
    let f = Filter::from_json(&json!({"names": ["signup", "$pageview"], "where": [
        {"field": "properties.$browser", "op": "equals", "value": "Chrome"},
        {"field": "properties.price", "op": "gt", "value": 5}]}))
    .unwrap();
    assert!(f.matches(&e));
    let f = Filter::from_json(&json!({"names": ["signup"]})).unwrap();
    assert!(!f.matches(&e));
    let f = Filter::from_json(&json!({"where": [
        {"field": "properties.$browser", "op": "equals", "value": "Chrome"},
        {"field": "properties.price", "op": "lt", "value": 5}]}))
    .unwrap();
    assert!(!f.matches(&e));
    assert!(Filter::from_json(&json!({})).unwrap().is_empty());
    assert!(Filter::from_json(&Json::Null).unwrap().matches(&e));
}

#[test]
fn json_payloads_use_dotted_paths_and_name_or_kind() {
    let w = json!({"kind": "window", "count": 3, "group": {"$current_url": "/cart", "k.x": 1},
                   "items": [{"v": 7}]});
    let t = |f: &str, op: &str, v: Json| one(f, op, Some(v)).matches(&w);
    assert!(t("group.$current_url", "equals", json!("/cart")));
    assert!(
        t("group.k.x", "equals", json!(1)),
        "a whole key wins over splitting"
    );
    assert!(t("items.0.v", "gt", json!(6)));
    assert!(t("count", "equals", json!(3.0)));
    assert!(t("group", "contains", json!("cart")), "streamed JSON text");
    assert!(!t("group", "contains", json!("basket")));
    assert!(t("items", "equals", json!([{"v": 7}])));
    assert!(
        Filter::from_json(&json!({"names": ["window"]}))
            .unwrap()
            .matches(&w)
    );
    let named = json!({"name": "signup", "kind": "other"});
    assert!(
        Filter::from_json(&json!({"names": ["signup"]}))
            .unwrap()
            .matches(&named)
    );
    assert!(
        !Filter::from_json(&json!({"names": ["x"]}))
            .unwrap()
            .matches(&json!(5))
    );
}

#[test]
fn query_form() {
    let q = |pairs: &[(&str, &str)]| {
        let pairs: Vec<_> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Filter::from_query(&pairs)
    };
    let e = event();
    let f = q(&[
        ("names", "$pageview,signup"),
        ("name", "a,b"),
        ("name", ""),
        ("names", "signup,,"),
        ("since", "7"),
        ("where", "properties.$browser:equals:Chrome"),
        ("where", "properties.price:gt:9"),
    ])
    .unwrap();
    assert_eq!(f.names(), ["$pageview", "a,b", "signup"]);
    assert!(f.matches(&e));
    assert!(
        q(&[("where", "properties.price:equals:10")])
            .unwrap()
            .matches(&e)
    );
    assert!(
        !q(&[("where", "properties.price:equals:\"10\"")])
            .unwrap()
            .matches(&e)
    );
    assert!(
        q(&[("where", "properties.count:equals:\"10\"")])
            .unwrap()
            .matches(&e)
    );
    assert!(
        q(&[("where", "properties.flag:equals:true")])
            .unwrap()
            .matches(&e)
    );
    assert!(
        q(&[("where", "properties.$browser:contains:\"hr\"")])
            .unwrap()
            .matches(&e)
    );
    assert!(
        q(&[("where", "properties.x:equals:a:b")])
            .unwrap()
            .predicates()
            .any(|p| p.op == Op::Equals(json!("a:b"))),
        "the value is verbatim after the second colon"
    );
    assert!(
        q(&[("where", "properties.$email:is_not_set")])
            .unwrap()
            .matches(&e)
    );
    let msg = |pairs: &[(&str, &str)]| q(pairs).unwrap_err().to_string();
    assert_eq!(
        msg(&[("where", "name")]),
        "where[0]: `name` is not field:op or field:op:value"
    );
    assert_eq!(
        msg(&[("where", "name:is_set"), ("where", "properties.p:gt:abc")]),
        "where[1].value: gt needs a number"
    );
    assert_eq!(
        msg(&[("where", "name:is_set:x")]),
        "where[0].value: is_set takes no value"
    );
    assert_eq!(
        msg(&[("where", "name:equals")]),
        "where[0].value: equals needs a value"
    );
    assert_eq!(
        msg(&[("where", "properties.:is_set")]),
        "where[0].field: invalid field path `properties.`: the property key after `properties.` is empty"
    );
}

#[test]
fn errors_name_the_problem() {
    assert_eq!(
        err(json!({"where": [{"field": "name", "op": "is_set"},
                                    {"field": "name", "op": "greater", "value": 1}]})),
        format!("where[1].op: unknown operator `greater`; expected one of {OP_NAMES}")
    );
    assert_eq!(
        err(json!({"where": [{"field": "properties.p", "op": "gt", "value": "10"}]})),
        "where[0].value: gt needs a number"
    );
    assert_eq!(
        err(json!({"nme": []})),
        "unknown field `nme`; filter fields are names, where"
    );
    assert_eq!(
        err(json!({"where": [{"field": "name", "op": "equals", "vale": 1}]})),
        "where[0]: unknown field `vale`; predicate fields are field, op, value"
    );
    assert_eq!(
        err(json!({"where": [{"op": "is_set"}]})),
        "where[0]: missing `field`"
    );
    assert_eq!(
        err(json!({"where": [{"field": "a", "op": "contains", "value": 3}]})),
        "where[0].value: contains needs a string"
    );
    assert_eq!(
        err(json!({"names": ["a", 3]})),
        "names[1]: expected a string"
    );
    assert_eq!(
        err(json!({"where": {}})),
        "where: expected an array of predicates"
    );
    assert_eq!(
        err(json!({"where": [{"field": "a..b", "op": "is_set"}]})),
        "where[0].field: invalid field path `a..b`: it has an empty segment"
    );
    assert_eq!(err(json!([])), "filter: expected an object");
    let names: Vec<_> = (0..=MAX_NAMES).map(|i| i.to_string()).collect();
    assert_eq!(
        err(json!({"names": names})),
        "names: 257 given, at most 256 allowed"
    );
    let preds: Vec<_> = (0..=MAX_PREDICATES)
        .map(|_| json!({"field": "name", "op": "is_set"}))
        .collect();
    assert_eq!(
        err(json!({"where": preds})),
        "where: 65 given, at most 64 allowed"
    );
    let f = Filter::from_json(&json!({"where": [{"field": "name", "op": "is_set"},
                                                {"field": "nme", "op": "is_set"}]}))
    .unwrap();
    assert_eq!(
        f.check_event_fields().unwrap_err().to_string(),
        format!("where[1].field: `nme` is not an event field; event fields are {EVENT_FIELDS}")
    );
}

#[test]
fn projection_shape() {
    let e = event();
    let p = Projection::from_json(&json!([
        "name",
        "distinct_id",
        "properties.$browser",
        "properties.tags",
        "properties.missing",
        "session_id"
    ]))
    .unwrap();
    assert_eq!(
        p.apply(&e),
        json!({"name": "$pageview", "distinct_id": "u1",
                                   "properties": {"$browser": "Chrome", "tags": ["a", "b"]}})
    );
    let q = Projection::from_query("name,properties.a.b,,timestamp").unwrap();
    assert_eq!(
        q.apply(&e).to_string(),
        r#"{"name":"$pageview","properties":{"a.b":"dotted"},"timestamp":1700000000000}"#
    );
    let w = json!({"count": 3, "group": {"url": "/", "other": 1}});
    let p = Projection::from_query("group.url,count,count.x").unwrap();
    assert_eq!(p.apply(&w), json!({"group": {"url": "/"}, "count": 3}));
    assert!(Projection::from_json(&Json::Null).unwrap().is_empty());
    assert_eq!(
        Projection::from_json(&json!(["a", 1]))
            .unwrap_err()
            .to_string(),
        "fields[1]: expected a string"
    );
    assert_eq!(Projection::from_query("a,").unwrap().fields().len(), 1);
    assert_eq!(
        Projection::from_query("name,properties")
            .unwrap()
            .check_event_fields()
            .unwrap_err()
            .to_string(),
        format!("fields[1]: `properties` is not an event field; event fields are {EVENT_FIELDS}")
    );
}

#[test]
fn kmp_finds_overlapping_needles() {
    let v = json!(["aabaabaaab"]);
    let found = |n: &str| node_contains(&v, n.as_bytes(), &kmp_table(n.as_bytes()));
    assert!(found("aabaaab"));
    assert!(found("[\"aab"));
    assert!(!found("aaaa"));
    assert!(found(""));
}

#[test]
fn gte_lte_and_in() {
    let e = event();
    let t = |f: &str, op: &str, v: Option<Json>| one(f, op, v).matches(&e);
    assert!(t("properties.price", "gte", Some(json!(10))));
    assert!(!t("properties.price", "gte", Some(json!(10.01))));
    assert!(t("properties.price", "lte", Some(json!(10))));
    assert!(!t("properties.price", "lte", Some(json!(9.99))));
    assert!(!t("properties.missing", "gte", Some(json!(0))));
    assert!(
        !t("properties.count", "lte", Some(json!(100))),
        "text is not a number"
    );
    assert!(t(
        "properties.$browser",
        "in",
        Some(json!(["Firefox", "Chrome"]))
    ));
    assert!(!t(
        "properties.$browser",
        "in",
        Some(json!(["Firefox", "Safari"]))
    ));
    assert!(
        t("properties.price", "in", Some(json!([1, 10.0]))),
        "numbers by value"
    );
    assert!(
        !t("properties.price", "in", Some(json!(["10"]))),
        "text is not a number"
    );
    assert!(
        t("properties.tags", "in", Some(json!([["x"], ["a", "b"]]))),
        "compound values"
    );
    assert!(!t("properties.missing", "in", Some(json!([null]))));
    let q = |w: &str| {
        Filter::from_query(&[("where".to_owned(), w.to_owned())])
            .unwrap()
            .matches(&e)
    };
    assert!(q("properties.$browser:in:Safari,Chrome"));
    assert!(q("properties.price:in:[3,10]"));
    assert!(q("properties.price:gte:10"));
    assert!(!q("properties.price:lte:9"));
}

#[test]
fn in_needs_a_non_empty_array() {
    assert_eq!(
        err(json!({"where": [{"field": "name", "op": "in", "value": "a"}]})),
        "where[0].value: in needs an array of values"
    );
    assert_eq!(
        err(json!({"where": [{"field": "name", "op": "in", "value": []}]})),
        "where[0].value: in needs a non-empty array of values"
    );
    assert_eq!(
        err(json!({"where": [{"field": "name", "op": "gte"}]})),
        "where[0].value: gte needs a number"
    );
}
