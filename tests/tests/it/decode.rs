//! One decoder for every way in: the same lines give the same events, or
//! the same errors, through `eddy pipe` and `POST /v1/batch`.

use std::time::Duration;

use eddy_tests::Sandbox;
use eddy_tests::server::{Ws, http};
use serde_json::{Value, json};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `ms` as RFC 3339 text at a UTC offset of `hours`.
fn rfc3339(ms: i64, hours: i64) -> String {
    // The civil date of the local time (proleptic Gregorian), so the tests
    // need no date library.
    let local = ms + hours * 3_600_000;
    let secs = local.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let zone = if hours == 0 {
        "Z".to_owned()
    } else {
        format!("+{hours:02}:00")
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}{zone}",
        local.rem_euclid(1000)
    )
}

/// Lines of every shape: valid in several forms, and invalid for every
/// reason the decoder has, PostHog-shaped lines included.
fn corpus(now: i64) -> Vec<u8> {
    let t = now - 60_000;
    let lines: Vec<String> = vec![
        json!({"id": "c1", "name": "$pageview", "distinct_id": "u1", "timestamp": t,
               "properties": {"a": 1, "f": 1.5, "b": true, "n": null}})
        .to_string(),
        json!({"id": "c2", "event": "signup", "distinct_id": "u2", "timestamp": rfc3339(t, 0)})
            .to_string(),
        json!({"id": "c3", "name": "x", "distinct_id": "u3", "timestamp": rfc3339(t, 2),
               "session_id": "s1", "properties": {"cart": {"items": [1, 2]}, "é": "héllo"}})
        .to_string(),
        // No id: each side makes one (compared apart).
        json!({"name": "no-id", "distinct_id": "u4", "timestamp": t}).to_string(),
        json!({"id": "c5", "name": "max", "distinct_id": "u5", "timestamp": t,
               "properties": {"big": 9_223_372_036_854_775_807_i64}})
        .to_string(),
        String::new(),
        // Invalid, each for one reason.
        json!({"id": "c7", "name": "x", "distinctid": "u", "timestamp": t}).to_string(),
        json!({"id": "c8", "name": "x", "timestamp": t}).to_string(),
        json!({"id": "c9", "name": "", "distinct_id": "u", "timestamp": t}).to_string(),
        json!({"id": "c10", "name": "x", "distinct_id": "u", "timestamp": now + 86_400_000})
            .to_string(),
        json!({"id": "c11", "name": "x", "distinct_id": "u", "timestamp": now - 30 * 86_400_000})
            .to_string(),
        r#"{"name": "#.to_owned(),
        json!({"id": "c13", "name": "x", "distinct_id": "u", "timestamp": t, "properties": [1]})
            .to_string(),
        json!({"id": "c14", "name": "x", "distinct_id": "u", "timestamp": t,
               "properties": {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}})
        .to_string(),
        json!({"id": "c15", "name": "x", "distinct_id": "u", "timestamp": t,
               "properties": {"s": "y".repeat(65)}})
        .to_string(),
        json!({"id": "c16", "name": "x", "distinct_id": "u", "timestamp": t,
               "properties": {"k".repeat(17): 1}})
        .to_string(),
        json!({"id": "c17", "name": "x", "distinct_id": "u", "timestamp": t,
               "properties": {"deep": {"a": {"b": {"c": 1}}}}})
        .to_string(),
        format!(
            r#"{{"id": "c18", "name": "x", "distinct_id": "u", "timestamp": {t}, "properties": {{"n": 18446744073709551615}}}}"#
        ),
        json!({"id": "c19", "name": "x", "distinct_id": "u", "timestamp": 1.7e12}).to_string(),
        json!({"id": "c20", "name": "x", "distinct_id": "u", "timestamp": "yesterday"}).to_string(),
        // PostHog's shapes, sent to eddy's own endpoint.
        json!({"event": "$pageview", "uuid": "0190a0b0-c0d0-7e0f-8000-000000000001",
               "distinct_id": "u", "timestamp": rfc3339(t, 0), "properties": {"$current_url": "x"}})
        .to_string(),
        json!({"api_key": "phc_x", "batch": [{"event": "$pageview", "distinct_id": "u"}]})
            .to_string(),
        json!({"event": "$identify", "properties": {"distinct_id": "u9"}, "timestamp": t})
            .to_string(),
    ];
    let mut body = lines.join("\n").into_bytes();
    // A line that is not UTF-8 at all.
    body.extend_from_slice(b"\n{\"id\": \"c24\", \"name\": \"\xff\xfe\"}\n");
    body
}

/// Time-window messages name how far off the timestamp was, measured from
/// each side's own clock: compare their words, not their numbers.
fn normalized(error: &str) -> String {
    if error.contains("in the future") || error.contains("in the past") {
        error
            .split(' ')
            .map(|w| {
                if w.chars().all(|c| c.is_ascii_digit()) {
                    "N"
                } else {
                    w
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        error.to_owned()
    }
}

#[tokio::test]
async fn pipe_and_http_ingest_decode_every_line_alike() {
    let sandbox = Sandbox::new();
    let config = sandbox.config(
        "[ingest]\nmax_properties = 4\nmax_string_bytes = 64\nmax_key_bytes = 16\nmax_depth = 2\n",
    );
    let body = corpus(now_ms());
    let input = sandbox.path().join("corpus.ndjson");
    std::fs::write(&input, &body).unwrap();

    // Through the server.
    let server = sandbox.serve(&config);
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.subscribe("events", json!({})).await;
    let resp = http()
        .post(server.url("/v1/batch"))
        .header("content-type", "application/x-ndjson")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let answer: Value = resp.json().await.unwrap();
    let accepted = answer["accepted"].as_u64().unwrap() as usize;
    let served: Vec<Value> = ws
        .messages(accepted, Duration::from_secs(30))
        .await
        .into_iter()
        .map(|m| m["data"].clone())
        .collect();

    // Through `eddy pipe`, checking timestamps against its clock as the
    // server does.
    let out = sandbox.path().join("out.ndjson");
    let errors = sandbox.path().join("errors.ndjson");
    let run = std::process::Command::new(eddy_tests::eddy_bin())
        .args([
            "pipe",
            "--clock",
            "wall",
            "--check-timestamps",
            "--no-watch",
            "--summary",
            "none",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .arg("--errors")
        .arg(&errors)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let read = |p: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let piped = read(&out);
    let pipe_errors = read(&errors);

    // The same errors, for the same lines.
    let norm = |errs: &[Value]| -> Vec<(u64, String)> {
        errs.iter()
            .map(|e| {
                (
                    e["line"].as_u64().unwrap(),
                    normalized(e["error"].as_str().unwrap()),
                )
            })
            .collect()
    };
    let http_errors = answer["errors"].as_array().unwrap();
    assert_eq!(norm(&pipe_errors), norm(http_errors));
    assert_eq!(http_errors.len(), 18, "{answer}");

    // The same events; where the line gave no id, each side made its own.
    assert_eq!(piped.len(), served.len());
    assert_eq!(piped.len(), 5);
    for (p, s) in piped.iter().zip(&served) {
        let (mut p, mut s) = (p.clone(), s.clone());
        if p["name"] == "no-id" {
            assert_eq!(p["id"], "line-4");
            assert!(s["id"].as_str().unwrap().len() == 36, "a UUID: {s}");
            p["id"] = Value::Null;
            s["id"] = Value::Null;
        }
        assert_eq!(p, s);
    }
    // RFC 3339 with an offset is the same instant.
    assert_eq!(piped[2]["timestamp"], piped[0]["timestamp"]);
}
