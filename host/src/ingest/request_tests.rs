//! Tests of whole-request behaviour: errors that reject a body, limits on
//! the request, gzip, error serialization, and the fuzz corpus replay.

#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;

const NOW: i64 = 1_700_000_000_000;

const GOOD: &str = r#"{"name":"ok","distinct_id":"u"}"#;

fn json_with(body: &[u8], limits: &Limits) -> Result<Decoded, DecodeError> {
    decode(body, Format::Json, Encoding::Identity, limits, NOW)
}

#[test]
fn whole_body_errors_have_codes_and_statuses() {
    let deep_props = format!(
        r#"[{{"name":"a","distinct_id":"u","properties":{{"d":{}1{}}}}}]"#,
        "[".repeat(30),
        "]".repeat(30)
    );
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"".to_vec(), "empty_body", "no events"),
        (b" \n ".to_vec(), "empty_body", "no events"),
        (b"[]".to_vec(), "empty_body", "no events"),
        (
            b"{".to_vec(),
            "invalid_json",
            "EOF while parsing an object at line 1 column 1",
        ),
        (
            br#"{"a":NaN}"#.to_vec(),
            "invalid_json",
            "NaN and Infinity are not JSON",
        ),
        (
            br#"[{"p":-Infinity}]"#.to_vec(),
            "invalid_json",
            "NaN and Infinity are not JSON",
        ),
        (
            br#"[{"a":1}] x"#.to_vec(),
            "invalid_json",
            "trailing characters",
        ),
        (
            br#"[{"p":1e400}]"#.to_vec(),
            "invalid_json",
            "number out of range",
        ),
        (b"5".to_vec(), "invalid_shape", "got a number"),
        (br#""x""#.to_vec(), "invalid_shape", "got a string"),
        (
            b"[{\"name\":\"\xff\"}]".to_vec(),
            "invalid_utf8",
            "offset 10",
        ),
        (
            "[".repeat(100_000).into_bytes(),
            "too_deep",
            "deeper than 24 levels",
        ),
        (
            "{\"a\":".repeat(100_000).into_bytes(),
            "too_deep",
            "deeper than 24 levels",
        ),
        (deep_props.into_bytes(), "too_deep", "deeper than 24 levels"),
    ];
    for (body, code, want) in cases {
        let e = json_with(&body, &Limits::default()).unwrap_err();
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(40)
            .collect::<String>();
        assert_eq!((e.code(), e.status()), (code, 400), "{shown}: {e}");
        assert!(
            e.to_string().contains(want),
            "{shown}: {e:?} lacks {want:?}"
        );
    }
}

#[test]
fn event_count_limit_is_413_only_beyond_the_limit() {
    let limits = Limits {
        max_events_per_request: 3,
        ..Limits::default()
    };
    let three = format!("[{GOOD},{GOOD},{GOOD}]");
    assert_eq!(
        json_with(three.as_bytes(), &limits).unwrap().events.len(),
        3
    );
    let four = format!("[{GOOD},{GOOD},{GOOD},5]");
    let e = json_with(four.as_bytes(), &limits).unwrap_err();
    assert_eq!((e.code(), e.status()), ("too_many_events", 413));
    let zero = Limits {
        max_events_per_request: 0,
        ..Limits::default()
    };
    for format in [Format::Json, Format::Ndjson, Format::PostHog] {
        let e = decode(GOOD.as_bytes(), format, Encoding::Identity, &zero, NOW).unwrap_err();
        assert_eq!(e.code(), "too_many_events", "{format:?}");
    }
    let lines = format!("{GOOD}\n\n{GOOD}\n{GOOD}\nx\n");
    let e = decode(
        lines.as_bytes(),
        Format::Ndjson,
        Encoding::Identity,
        &limits,
        NOW,
    )
    .unwrap_err();
    assert_eq!(e.code(), "too_many_events");
}

#[test]
fn gzip_bodies_decode_and_bombs_are_refused() {
    use std::io::Write;
    let body = format!("{GOOD}\n{GOOD}\n");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(body.as_bytes()).unwrap();
    let z = enc.finish().unwrap();
    let d = decode(&z, Format::Ndjson, Encoding::Gzip, &Limits::default(), NOW).unwrap();
    assert_eq!(d.events.len(), 2);
    let e = decode(
        b"not gzip",
        Format::Json,
        Encoding::Gzip,
        &Limits::default(),
        NOW,
    )
    .unwrap_err();
    assert_eq!((e.code(), e.status()), ("bad_gzip", 400));
    // 100 MB of zeros against the default 64 MiB cap.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..100 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    let e = decode(&bomb, Format::Json, Encoding::Gzip, &Limits::default(), NOW).unwrap_err();
    assert_eq!((e.code(), e.status()), ("body_too_large", 413));
}

#[test]
fn errors_serialize_flat_and_codes_are_stable() {
    let e = ItemError {
        location: Location::Index(3),
        error: "x".into(),
    };
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"index":3,"error":"x"}"#
    );
    let e = ItemError {
        location: Location::Line(4),
        error: "y".into(),
    };
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"line":4,"error":"y"}"#
    );
    assert_eq!(e.to_string(), "line 4: y");
    let all = [
        (DecodeError::EmptyBody, "empty_body", 400),
        (DecodeError::InvalidUtf8 { offset: 1 }, "invalid_utf8", 400),
        (DecodeError::InvalidJson("x".into()), "invalid_json", 400),
        (DecodeError::TooDeep { limit: 1 }, "too_deep", 400),
        (DecodeError::InvalidShape("x".into()), "invalid_shape", 400),
        (
            DecodeError::TooManyEvents { limit: 1 },
            "too_many_events",
            413,
        ),
        (
            DecodeError::BodyTooLarge { limit: 1 },
            "body_too_large",
            413,
        ),
        (DecodeError::BadGzip("x".into()), "bad_gzip", 400),
        (
            DecodeError::UnsupportedEncoding("br".into()),
            "unsupported_encoding",
            415,
        ),
        (DecodeError::BadForm("x".into()), "bad_form", 400),
        (DecodeError::MixedTokens, "mixed_tokens", 400),
    ];
    for (e, code, status) in all {
        assert_eq!((e.code(), e.status()), (code, status), "{e}");
    }
    assert_eq!(
        Encoding::from_header(Some(" GZIP ")).unwrap(),
        Encoding::Gzip
    );
    assert_eq!(Encoding::from_header(None).unwrap(), Encoding::Identity);
    assert_eq!(Encoding::from_header(Some("br")).unwrap_err().status(), 415);
}

#[test]
fn fuzz_corpus_replays_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        for outcome in fuzzing::decode_all_ways(&data) {
            let checked = fuzzing::check_invariants(&outcome);
            assert!(checked.is_ok(), "{}: {checked:?}", path.display());
        }
        files += 1;
    }
    assert!(
        files >= 10,
        "only {files} corpus files in {}",
        dir.display()
    );
}
