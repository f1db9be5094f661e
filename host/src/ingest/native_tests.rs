//! Tests of the native JSON / NDJSON shapes and the whole-body errors.

#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::event::Value;

const NOW: i64 = 1_700_000_000_000;

fn json_with(body: &[u8], limits: &Limits) -> Result<Decoded, DecodeError> {
    decode(body, Format::Json, Encoding::Identity, limits, NOW)
}

fn json(body: &str) -> Result<Decoded, DecodeError> {
    json_with(body.as_bytes(), &Limits::default())
}

fn ndjson(body: &[u8]) -> Result<Decoded, DecodeError> {
    decode(
        body,
        Format::Ndjson,
        Encoding::Identity,
        &Limits::default(),
        NOW,
    )
}

const GOOD: &str = r#"{"name":"ok","distinct_id":"u"}"#;

#[test]
fn single_event_maps_every_field() {
    let body = r#"{"id":"e1","event":"$pageview","timestamp":1699999999000,"distinct_id":"u1",
        "session_id":"s1","properties":{"b":1,"a":"x","f":1.5,"t":true,"z":null,
        "n":{"k":[1,2.5,"q\"\n",{"deep":null}]},"l":[]}}"#;
    let d = json(body).unwrap();
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(d.api_key, None);
    let e = &d.events[0];
    assert_eq!((e.id.as_str(), e.name.as_str()), ("e1", "$pageview"));
    assert_eq!(
        (e.timestamp, e.distinct_id.as_str()),
        (1_699_999_999_000, "u1")
    );
    assert_eq!(e.session_id.as_deref(), Some("s1"));
    let keys: Vec<&str> = e.properties.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["b", "a", "f", "t", "z", "n", "l"]);
    assert_eq!(e.get("b"), Some(&Value::Int(1)));
    assert_eq!(e.get("a"), Some(&Value::Str("x".into())));
    assert_eq!(e.get("f"), Some(&Value::Float(1.5)));
    assert_eq!(e.get("t"), Some(&Value::Bool(true)));
    assert_eq!(e.get("z"), Some(&Value::Null));
    assert_eq!(
        e.get("n"),
        Some(&Value::Json(
            r#"{"k":[1,2.5,"q\"\n",{"deep":null}]}"#.into()
        ))
    );
    assert_eq!(e.get("l"), Some(&Value::Json("[]".into())));
}

#[test]
fn defaults_rfc3339_and_generated_ids() {
    let body = r#"[{"name":"a","distinct_id":"u"},
        {"name":"b","distinct_id":"u","timestamp":"2023-11-14T22:13:20.500+01:00"}]"#;
    let d = json(body).unwrap();
    let (a, b) = (&d.events[0], &d.events[1]);
    assert_eq!(a.timestamp, NOW);
    assert_eq!(b.timestamp, NOW + 500 - 3_600_000);
    assert!(a.properties.is_empty() && a.session_id.is_none());
    let id = uuid::Uuid::parse_str(&a.id).unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert_ne!(a.id, b.id);
}

#[test]
fn nested_text_escapes_round_trip() {
    let body = r#"{"name":"a","distinct_id":"u","properties":{"o":{"s":"tab\t\u0001 é \\ /","e":1e3,"m":-0.0}}}"#;
    let d = json(body).unwrap();
    let Some(Value::Json(text)) = d.events[0].get("o") else {
        panic!("not nested: {:?}", d.events[0]);
    };
    let back: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(back["s"], "tab\t\u{1} é \\ /");
    assert_eq!(back["e"], 1000.0);
    assert_eq!(text, r#"{"s":"tab\t\u0001 é \\ /","e":1000.0,"m":-0.0}"#);
}

#[test]
fn duplicate_property_keys_keep_the_last_value_in_first_place() {
    let d = json(r#"{"name":"a","distinct_id":"u","properties":{"a":1,"b":2,"a":3}}"#).unwrap();
    let p = &d.events[0].properties;
    assert_eq!(
        p,
        &[("a".into(), Value::Int(3)), ("b".into(), Value::Int(2))]
    );
    let many: Vec<String> = (0..40).map(|i| format!("\"k{}\":{i}", i % 30)).collect();
    let body = format!(
        r#"{{"name":"a","distinct_id":"u","properties":{{{}}}}}"#,
        many.join(",")
    );
    let d = json(&body).unwrap();
    let p = &d.events[0].properties;
    assert_eq!(p.len(), 30);
    assert_eq!(p[3], ("k3".into(), Value::Int(33)));
    assert_eq!(p[29], ("k29".into(), Value::Int(29)));
}

/// Bad events, each with a substring of its error; every one is tried as
/// element 1 of an array and as line 2 of NDJSON between good events.
fn bad_items() -> Vec<(String, &'static str)> {
    let ts = |t: i64| format!(r#"{{"name":"a","distinct_id":"u","timestamp":{t}}}"#);
    let prop = |p: &str| format!(r#"{{"name":"a","distinct_id":"u","properties":{p}}}"#);
    let many: Vec<String> = (0..513).map(|i| format!("\"k{i}\":1")).collect();
    let deep = format!("{}1{}", "[".repeat(17), "]".repeat(17));
    let big = format!("\"{}\"", "x".repeat(16_000));
    vec![
        ("5".into(), "an event must be a JSON object, got a number"),
        ("[1]".into(), "an event must be a JSON object, got an array"),
        (
            r#"{"distinct_id":"u"}"#.into(),
            "missing required field `name` (or `event`)",
        ),
        (
            r#"{"name":"a"}"#.into(),
            "missing required field `distinct_id`",
        ),
        (
            r#"{"name":"a","distinct_id":""}"#.into(),
            "distinct_id: must not be empty",
        ),
        (
            r#"{"name":"","distinct_id":"u"}"#.into(),
            "name: must not be empty",
        ),
        (
            r#"{"name":5,"distinct_id":"u"}"#.into(),
            "name: expected a string, got an integer",
        ),
        (
            r#"{"event":{},"distinct_id":"u"}"#.into(),
            "event: expected a string, got an object",
        ),
        (
            r#"{"name":"a","distinct_id":["u"]}"#.into(),
            "distinct_id: expected a string, got an array",
        ),
        (
            r#"{"name":"a","distinct_id":"u","session_id":5}"#.into(),
            "session_id: expected a string",
        ),
        (
            r#"{"name":"a","distinct_id":"u","id":""}"#.into(),
            "id: must not be empty",
        ),
        (
            r#"{"name":"a","distinctid":"u"}"#.into(),
            "unknown field `distinctid`; expected one of",
        ),
        (
            r#"{"name":"a","name":"b","distinct_id":"u"}"#.into(),
            "duplicate field `name`",
        ),
        (
            r#"{"name":"a","event":"b","distinct_id":"u"}"#.into(),
            "as `name` or `event`, not both",
        ),
        (
            ts(NOW + 600_000),
            "timestamp is 600000 ms in the future; the limit is 300000",
        ),
        (
            ts(NOW - 8 * 86_400_000),
            "timestamp is 691200000 ms in the past; the limit is 604800000",
        ),
        (
            r#"{"name":"a","distinct_id":"u","timestamp":1.5}"#.into(),
            "timestamp: expected integer milliseconds since the Unix epoch or an RFC 3339 date-time, got a fractional number",
        ),
        (
            r#"{"name":"a","distinct_id":"u","timestamp":"yesterday"}"#.into(),
            "timestamp: `yesterday` is not an RFC 3339 date-time",
        ),
        (
            r#"{"name":"a","distinct_id":"u","timestamp":18446744073709551615}"#.into(),
            "timestamp: integer out of range",
        ),
        (
            r#"{"name":"a","distinct_id":"u","timestamp":true}"#.into(),
            "got a boolean",
        ),
        (prop("[]"), "properties: expected an object, got an array"),
        (
            prop("\"x\""),
            "properties: expected an object, got a string",
        ),
        (
            prop(r#"{"price":18446744073709551615}"#),
            "properties.price: integer out of range (must fit in 64-bit signed)",
        ),
        (
            prop(r#"{"a":{"b":[1,9223372036854775808]}}"#),
            "properties.a.b[1]: integer out of range",
        ),
        (
            prop(&format!("{{{}}}", many.join(","))),
            "properties: more than 512 properties",
        ),
        (
            prop(&format!(r#"{{"{}":1}}"#, "k".repeat(257))),
            "is too long; the limit is 256 bytes",
        ),
        (
            prop(&format!(r#"{{"a":{{"{}":1}}}}"#, "k".repeat(257))),
            "properties.a: key `kkkk",
        ),
        (
            prop(&format!(r#"{{"s":"{}"}}"#, "x".repeat(16_385))),
            "properties.s: string of 16385 bytes is too long; the limit is 16384 bytes",
        ),
        (
            format!(r#"{{"name":"a","distinct_id":"{}"}}"#, "u".repeat(16_385)),
            "distinct_id: string of 16385 bytes is too long",
        ),
        (
            prop(&format!(r#"{{"d":{deep}}}"#)),
            "nested deeper than 16 levels",
        ),
        (
            prop(&format!(
                r#"{{"a":{big},"b":{big},"c":{big},"d":{big},"e":{big}}}"#
            )),
            "65536",
        ),
    ]
}

#[test]
fn bad_array_elements_are_item_errors_named_and_located() {
    for (bad, want) in bad_items() {
        let body = format!("[{GOOD},{bad},{GOOD}]");
        let d = json(&body).unwrap_or_else(|e| panic!("{bad}: whole body failed: {e}"));
        assert_eq!(d.events.len(), 2, "{bad}");
        assert_eq!(d.errors.len(), 1, "{bad}");
        assert_eq!(d.errors[0].location, Location::Index(1), "{bad}");
        assert!(
            d.errors[0].error.contains(want),
            "{bad}: {:?} lacks {want:?}",
            d.errors[0].error
        );
    }
}

#[test]
fn bad_ndjson_lines_are_item_errors_named_and_located() {
    for (bad, want) in bad_items() {
        let body = format!("{GOOD}\n{bad}\n{GOOD}\n");
        let d = ndjson(body.as_bytes()).unwrap();
        assert_eq!(d.events.len(), 2, "{bad}");
        assert_eq!(d.errors.len(), 1, "{bad}");
        assert_eq!(d.errors[0].location, Location::Line(2), "{bad}");
        assert!(
            d.errors[0].error.contains(want),
            "{bad}: {:?} lacks {want:?}",
            d.errors[0].error
        );
    }
}

#[test]
fn partial_batch_keeps_good_events_in_order() {
    let body = r#"[{"name":"a","distinct_id":"u"},7,{"name":"b","distinct_id":"u"},
        {"name":"c"},{"name":"d","distinct_id":"u"}]"#;
    let d = json(body).unwrap();
    let names: Vec<&str> = d.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "d"]);
    let at: Vec<Location> = d.errors.iter().map(|e| e.location).collect();
    assert_eq!(at, [Location::Index(1), Location::Index(3)]);
}

#[test]
fn single_object_over_the_event_size_is_an_item_error() {
    let limits = Limits {
        max_event_bytes: 40,
        ..Limits::default()
    };
    let body = r#"{"name":"a","distinct_id":"u","properties":{"k":"0123456789"}}"#;
    let d = json_with(body.as_bytes(), &limits).unwrap();
    assert!(d.events.is_empty());
    assert_eq!(d.errors[0].location, Location::Index(0));
    assert!(
        d.errors[0].error.contains("the limit is 40"),
        "{:?}",
        d.errors
    );
}

#[test]
fn ndjson_lines_count_blank_lines_and_survive_bad_bytes() {
    let body = b"\n{\"name\":\"a\",\"distinct_id\":\"u\"}\r\n  \n{\"name\":\"\xff\xfe\"}\n{\"name\":\"b\",\"distinct_id\":\"u\"}\n{nope\n";
    let d = ndjson(body).unwrap();
    let names: Vec<&str> = d.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(d.errors.len(), 2);
    assert_eq!(d.errors[0].location, Location::Line(4));
    assert!(
        d.errors[0]
            .error
            .contains("not valid UTF-8: invalid byte at offset 9")
    );
    assert_eq!(d.errors[1].location, Location::Line(6));
    assert!(
        d.errors[1]
            .error
            .starts_with("invalid JSON: key must be a string")
    );
    let deep = format!("{GOOD}\n{}\n", "[".repeat(1000));
    let d = ndjson(deep.as_bytes()).unwrap();
    assert_eq!(d.events.len(), 1);
    assert!(d.errors[0].error.contains("deeper than"), "{:?}", d.errors);
    assert_eq!(ndjson(b"\n \r\n\n").unwrap_err().code(), "empty_body");
    assert_eq!(ndjson(b"").unwrap_err().code(), "empty_body");
}

/// Whether the fast path took `line`; when it did, its result must be the
/// serde path's (events made equal in their generated ids).
fn fast_path_agrees(line: &str, limits: &Limits) -> bool {
    // Longer lines are refused before either path sees them.
    if line.len() > limits.max_event_bytes {
        return false;
    }
    let ctx = super::value::Ctx::new(limits, NOW);
    let Some(mut fast) = super::fast::line(&ctx, line) else {
        return false;
    };
    let mut slow = super::native::decode_line_slow(&ctx, line);
    if let (Ok(a), Ok(b)) = (&mut fast, &mut slow)
        && a.id != b.id
        && uuid::Uuid::parse_str(&a.id).is_ok_and(|u| u.get_version_num() == 7)
        && uuid::Uuid::parse_str(&b.id).is_ok_and(|u| u.get_version_num() == 7)
    {
        a.id = b.id.clone();
    }
    assert_eq!(fast, slow, "{line:?} with {limits:?}");
    true
}

#[test]
fn the_fast_line_path_declines_or_agrees_with_the_serde_path() {
    let seeds = [
        r#"{"id":"lg-1","name":"$pageview","distinct_id":"user-7","timestamp":1699999999000,"properties":{"$current_url":"https://shop.example.com/p/1","$user_agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0","$lib":"web","n":-12,"z":0,"t":true,"f":false,"x":null}}"#,
        r#"  { "event" : "e" , "distinct_id" : "u" , "session_id" : "" , "timestamp" : "2023-11-14T22:13:20Z" , "properties" : null }  "#,
        r#"{"name":"a","distinct_id":"u","properties":{"k":1,"k":"again","j":2}}"#,
        r#"{"name":"a","distinct_id":"u","id":null,"session_id":null,"timestamp":null}"#,
        r#"{"name":"","distinct_id":"u"}"#,
        r#"{"name":"a","distinct_id":"u","id":""}"#,
        r#"{"name":"a","distinct_id":"u","timestamp":1}"#,
        r#"{"name":"a","distinct_id":"u","timestamp":-5}"#,
        r#"{"name":"a","distinct_id":"u","timestamp":999999999999999999}"#,
        r#"{"name":"ü😀","distinct_id":"\u00fc","properties":{"é":"ß"}}"#,
        r#"{}"#,
        r#"{"name":"a"}"#,
        r#"{"name":"a","distinct_id":"u","properties":{}}"#,
        r#"{"name":"a","distinct_id":"u","properties":{"a":1.5,"b":-0,"c":1e3,"d":[1],"e":{"x":1}}}"#,
        r#"{"name":"a","event":"b","distinct_id":"u"}"#,
        r#"{"name":"a","distinct_id":"u","distinct_id":"v"}"#,
        r#"{"name":"a","distinct_id":"u","extra":1}"#,
        r#"{"name":"a","distinct_id":"u","properties":{"big":18446744073709551615,"n":9223372036854775807,"m":-9223372036854775808}}"#,
        r#"{"name":"a","distinct_id":"u","properties":{"lead":007}}"#,
        r#"{"name":"a","distinct_id":"u","properties":{"k":"v"},}"#,
        r#"{"name":"a","distinct_id":"u"} x"#,
    ];
    let tight = Limits {
        max_string_bytes: 5,
        max_key_bytes: 2,
        max_properties: 2,
        max_event_bytes: 120,
        future_skew_ms: 0,
        max_age_ms: 1000,
        ..Limits::default()
    };
    let specials = [
        b'"', b'\\', b'-', b'.', b'e', b'0', b'9', b' ', b',', b':', b'{', b'}', b'[', b'n', 0x01,
    ];
    let mut taken = 0;
    for limits in [Limits::default(), tight] {
        for seed in seeds {
            taken += usize::from(fast_path_agrees(seed, &limits));
            // Every prefix, and every byte replaced by each special byte.
            for end in 0..seed.len() {
                if let Some(prefix) = seed.get(..end) {
                    fast_path_agrees(prefix, &limits);
                }
            }
            for at in 0..seed.len() {
                for &b in &specials {
                    let mut bytes = seed.as_bytes().to_vec();
                    bytes[at] = b;
                    if let Ok(text) = std::str::from_utf8(&bytes) {
                        taken += usize::from(fast_path_agrees(text, &limits));
                    }
                }
            }
        }
    }
    assert!(taken > 1000, "the fast path took only {taken} lines");
    // And every line of the fuzz corpus.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for line in bytes.split(|&b| b == b'\n') {
            if let Ok(text) = std::str::from_utf8(line) {
                fast_path_agrees(text, &Limits::default());
            }
        }
    }
}
