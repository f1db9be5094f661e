//! Tests of the PostHog capture shapes.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::io::Write;

use base64::Engine;

use super::*;
use crate::event::Value;

const NOW: i64 = 1_700_000_000_000;
/// 2023-11-14T22:13:20Z, i.e. NOW.
const NOW_ISO: &str = "2023-11-14T22:13:20Z";

fn ph(
    body: &[u8],
    content_type: Option<&str>,
    compression: Option<&str>,
) -> Result<Decoded, DecodeError> {
    let req = PostHogRequest {
        content_type,
        compression,
    };
    decode_posthog(body, Encoding::Identity, &req, &Limits::default(), NOW)
}

fn ph_json(body: &str) -> Decoded {
    ph(body.as_bytes(), Some("application/json"), None).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

const BATCH: &str = r#"{"api_key":"phc_1","sent_at":"2023-11-14T22:13:30Z","batch":[
    {"event":"a","distinct_id":"u1","timestamp":"2023-11-14T22:13:25Z"},
    {"event":"b","properties":{"distinct_id":"u2"},"timestamp":"2023-11-14T22:13:28.500Z"}]}"#;

#[test]
fn single_event_maps_onto_event() {
    let body = r#"{"token":"phc_1","event":"$pageview","distinct_id":"u1",
        "uuid":"0190A0B0-C0D0-7E0F-8000-000000000001","timestamp":"2023-11-14T22:13:19",
        "$set":{"plan":"pro"},"library":"web","type":"capture",
        "properties":{"$session_id":"s1","token":"phc_1","distinct_id":"ignored","$current_url":"/x"}}"#;
    let d = ph_json(body);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(d.api_key.as_deref(), Some("phc_1"));
    let e = &d.events[0];
    assert_eq!(e.name, "$pageview");
    assert_eq!(e.id, "0190a0b0-c0d0-7e0f-8000-000000000001");
    assert_eq!(e.distinct_id, "u1");
    assert_eq!(e.timestamp, NOW - 1000);
    assert_eq!(e.session_id.as_deref(), Some("s1"));
    let keys: Vec<&str> = e.properties.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["$session_id", "$current_url", "$set"]);
    assert_eq!(
        e.get("$set"),
        Some(&Value::Json(r#"{"plan":"pro"}"#.into()))
    );
}

#[test]
fn batch_wrapper_corrects_clock_skew_with_sent_at() {
    let d = ph_json(BATCH);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(d.api_key.as_deref(), Some("phc_1"));
    // The client clock runs 10 s ahead: sent_at is NOW + 10 s.
    assert_eq!(d.events[0].timestamp, NOW - 5_000);
    assert_eq!(d.events[1].timestamp, NOW - 1_500);
    assert_eq!(d.events[1].distinct_id, "u2");
    assert!(d.events[1].get("distinct_id").is_none());
    // Key order does not matter: sent_at after the batch still applies.
    let reordered = r#"{"batch":[{"event":"a","distinct_id":"u","timestamp":"2023-11-14T22:13:25Z"}],
        "sent_at":"2023-11-14T22:13:30Z"}"#;
    assert_eq!(ph_json(reordered).events[0].timestamp, NOW - 5_000);
}

#[test]
fn timestamp_rules() {
    let one = |fields: &str| {
        let d = ph_json(&format!(r#"{{"event":"a","distinct_id":"u"{fields}}}"#));
        d.events.first().map(|e| e.timestamp).ok_or(d.errors)
    };
    assert_eq!(one(""), Ok(NOW));
    assert_eq!(one(r#","offset":2500"#), Ok(NOW - 2500));
    assert_eq!(
        one(r#","timestamp":1699999990000,"offset":2500"#),
        Ok(NOW - 10_000)
    );
    assert_eq!(
        one(r#","timestamp":"2023-11-14T22:13:10+00:00""#),
        Ok(NOW - 10_000)
    );
    let skew = r#","timestamp":"2023-11-14T23:13:00Z","sent_at":"2023-11-14T23:13:20Z""#;
    assert_eq!(one(skew), Ok(NOW - 20_000));
    // $ignore_sent_at keeps the client's timestamp (then too far ahead).
    let ignored = format!(r#"{skew},"properties":{{"$ignore_sent_at":true}}"#);
    let errors = one(&ignored).unwrap_err();
    assert!(errors[0].error.contains("ms in the future"), "{errors:?}");
    // An unparsable sent_at is ignored, as PostHog does.
    assert_eq!(
        one(r#","timestamp":1699999990000,"sent_at":"soon""#),
        Ok(NOW - 10_000)
    );
    assert_eq!(one(&format!(r#","sent_at":"{NOW_ISO}""#)), Ok(NOW));
}

#[test]
fn numeric_distinct_ids_become_text() {
    let d = ph_json(
        r#"[{"event":"a","distinct_id":12345},{"event":"b","properties":{"distinct_id":-7}},
           {"event":"c","distinct_id":18446744073709551615},{"event":"d","distinct_id":1.5}]"#,
    );
    let ids: Vec<&str> = d.events.iter().map(|e| e.distinct_id.as_str()).collect();
    assert_eq!(ids, ["12345", "-7", "18446744073709551615", "1.5"]);
    assert_eq!(d.api_key, None);
}

#[test]
fn bare_array_and_per_index_errors() {
    let body = r#"[{"event":"ok","distinct_id":"u"},
        {"distinct_id":"u"},
        {"event":"a"},
        {"event":"a","distinct_id":""},
        {"event":"a","distinct_id":true},
        {"event":"a","distinct_id":"u","uuid":"nope"},
        {"event":"a","distinct_id":"u","timestamp":"nope"},
        {"event":"a","distinct_id":"u","offset":"1s"},
        {"event":"a","distinct_id":"u","properties":{"p":18446744073709551615}},
        {"event":"a","properties":{"distinct_id":{}}},
        "str",
        {"event":"ok2","distinct_id":"u"}]"#;
    let d = ph_json(body);
    let names: Vec<&str> = d.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["ok", "ok2"], "{:#?}", d.errors);
    let want = [
        (1, "missing required field `event`"),
        (2, "missing required field `distinct_id`"),
        (3, "distinct_id: must not be empty"),
        (
            4,
            "distinct_id: expected a string or a number, got a boolean",
        ),
        (5, "uuid: `nope` is not a UUID"),
        (6, "timestamp: `nope` is not an ISO 8601 date-time"),
        (7, "offset: expected integer milliseconds, got a string"),
        (
            8,
            "properties.p: integer out of range (must fit in 64-bit signed)",
        ),
        (9, "properties.distinct_id: expected a string or a number"),
        (10, "an event must be a JSON object, got a string"),
    ];
    assert_eq!(d.errors.len(), want.len(), "{:?}", d.errors);
    for (err, (i, text)) in d.errors.iter().zip(want) {
        assert_eq!(err.location, Location::Index(i));
        assert!(
            err.error.contains(text),
            "{i}: {:?} lacks {text:?}",
            err.error
        );
    }
}

#[test]
fn form_bodies_base64_and_plain() {
    let json = r#"[{"event":"f","distinct_id":"u","properties":{"token":"phc_f"}}]"#;
    let b64 = base64::engine::general_purpose::STANDARD.encode(json);
    let enc: String = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let form = format!("data={enc}&compression=base64");
    for ct in [
        Some("application/x-www-form-urlencoded"),
        None,
        Some("text/plain"),
    ] {
        let d = ph(form.as_bytes(), ct, Some("base64")).unwrap();
        assert_eq!(d.events[0].name, "f", "{ct:?}");
        assert_eq!(d.api_key.as_deref(), Some("phc_f"));
        assert!(d.events[0].properties.is_empty());
    }
    let plain = format!("data={}", json.replace('"', "%22").replace(' ', "+"));
    let d = ph(
        plain.as_bytes(),
        Some("application/x-www-form-urlencoded"),
        None,
    )
    .unwrap();
    assert_eq!(d.events[0].name, "f");
    // base64 of gzip inside a form.
    let zipped = base64::engine::general_purpose::STANDARD.encode(gzip(json.as_bytes()));
    let form = format!("data={}", zipped.replace('+', "%2B").replace('/', "%2F"));
    assert_eq!(ph(form.as_bytes(), None, None).unwrap().events.len(), 1);
    let e = ph(
        b"compression=base64",
        Some("application/x-www-form-urlencoded"),
        None,
    );
    assert_eq!(e.unwrap_err().code(), "bad_form");
    let e = ph(b"data=%%%", Some("application/x-www-form-urlencoded"), None);
    assert_eq!(e.unwrap_err().code(), "bad_form");
}

#[test]
fn gzip_by_query_header_or_magic() {
    let z = gzip(BATCH.as_bytes());
    for q in [Some("gzip-js"), Some("gzip"), None] {
        let d = ph(&z, Some("text/plain"), q).unwrap();
        assert_eq!(d.events.len(), 2, "{q:?}");
    }
    let req = PostHogRequest::default();
    let d = decode_posthog(&z, Encoding::Gzip, &req, &Limits::default(), NOW).unwrap();
    assert_eq!(d.events.len(), 2);
    let d = decode(
        &z,
        Format::PostHog,
        Encoding::Identity,
        &Limits::default(),
        NOW,
    )
    .unwrap();
    assert_eq!(d.events.len(), 2);
    let e = ph(BATCH.as_bytes(), None, Some("gzip-js")).unwrap_err();
    assert_eq!(e.code(), "bad_gzip");
    let raw_b64 = base64::engine::general_purpose::STANDARD.encode(BATCH);
    assert_eq!(
        ph(raw_b64.as_bytes(), None, Some("base64"))
            .unwrap()
            .events
            .len(),
        2
    );
}

#[test]
fn whole_request_errors() {
    let cases: [(&[u8], Option<&str>, &str, u16); 9] = [
        (BATCH.as_bytes(), Some("lz64"), "unsupported_encoding", 415),
        (br#"{"batch":{}}"#, None, "invalid_shape", 400),
        (br#"{"batch":[],"batch":[]}"#, None, "invalid_shape", 400),
        (
            br#"{"api_key":5,"batch":[{"event":"a","distinct_id":"u"}]}"#,
            None,
            "invalid_shape",
            400,
        ),
        (br#"{"batch":[]}"#, None, "empty_body", 400),
        (b"[]", None, "empty_body", 400),
        (b"42", None, "invalid_shape", 400),
        (b"{\"event\":\"\xc3\"}", None, "invalid_utf8", 400),
        (
            br#"{"api_key":"a","batch":[{"event":"x","distinct_id":"u","token":"b"}]}"#,
            None,
            "mixed_tokens",
            400,
        ),
    ];
    for (body, compression, code, status) in cases {
        let e = ph(body, None, compression).unwrap_err();
        assert_eq!(
            (e.code(), e.status()),
            (code, status),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let mixed = r#"[{"event":"x","distinct_id":"u","token":"a"},{"event":"x","distinct_id":"u","api_key":"b"}]"#;
    assert_eq!(
        ph(mixed.as_bytes(), None, None).unwrap_err().code(),
        "mixed_tokens"
    );
    let deep = format!(
        r#"{{"batch":[{{"event":"a","distinct_id":"u","x":{}}}]}}"#,
        "[".repeat(50_000)
    );
    assert_eq!(
        ph(deep.as_bytes(), None, None).unwrap_err().code(),
        "too_deep"
    );
    let limits = Limits {
        max_events_per_request: 2,
        ..Limits::default()
    };
    let three = r#"{"batch":[{},{},{}]}"#.as_bytes();
    let e = decode_posthog(
        three,
        Encoding::Identity,
        &PostHogRequest::default(),
        &limits,
        NOW,
    );
    assert_eq!(e.unwrap_err().code(), "too_many_events");
}

#[test]
fn property_limits_count_after_removing_distinct_id_and_token() {
    let limits = Limits {
        max_properties: 2,
        ..Limits::default()
    };
    let run = |props: &str| {
        let body = format!(r#"{{"event":"a","properties":{props}}}"#);
        decode_posthog(
            body.as_bytes(),
            Encoding::Identity,
            &PostHogRequest::default(),
            &limits,
            NOW,
        )
        .unwrap()
    };
    let d = run(r#"{"distinct_id":"u","token":"t","a":1,"b":2}"#);
    assert_eq!(d.events[0].properties.len(), 2);
    let d = run(r#"{"distinct_id":"u","a":1,"b":2,"c":3}"#);
    assert!(
        d.errors[0].error.contains("more than 2 properties"),
        "{:?}",
        d.errors
    );
}
