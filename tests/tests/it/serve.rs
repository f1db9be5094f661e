//! `eddy serve`: ingest over every endpoint, live streams, validation,
//! back-pressure, resume, auth and shutdown — the real binary on an
//! ephemeral loopback port, driven by real HTTP, WebSocket and SSE clients.

use std::io::Write as _;

use futures_util::SinkExt as _;
use std::time::Duration;

use eddy_tests::plugins::{BOT_FILTER, FIRST_SEEN, PASS_THROUGH, PII_SCRUBBER, SLOW, UA_ENRICHER};
use eddy_tests::server::{Server, Ws, get_text, http, sse_events};
use eddy_tests::{CHROME_WIN, GOOGLEBOT, SAFARI_IPHONE, Sandbox};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A sandbox with the default example plugins and the default stages.
fn default_pipeline(extra: &str) -> (Sandbox, Server) {
    let sandbox = Sandbox::new();
    for (built, name) in [
        (BOT_FILTER, "bot-filter"),
        (UA_ENRICHER, "ua-enricher"),
        (PII_SCRUBBER, "pii-scrubber"),
        (FIRST_SEEN, "first-seen"),
    ] {
        sandbox.install(built, name);
    }
    let config = sandbox.config(&format!(
        "{extra}\n[[stages]]\nplugin = \"bot-filter\"\n[[stages]]\nplugin = \"ua-enricher\"\n\
         [[stages]]\nplugin = \"pii-scrubber\"\n[stages.config]\nsalt = \"test\"\n\
         [[stages]]\nplugin = \"first-seen\"\n"
    ));
    let server = sandbox.serve(&config);
    (sandbox, server)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn event(id: &str, ua: &str) -> Value {
    json!({
        "id": id,
        "name": "$pageview",
        "distinct_id": format!("user-{id}"),
        "timestamp": now_ms(),
        "properties": {"$user_agent": ua, "$current_url": format!("https://shop.example/p/{id}?q=1")},
    })
}

fn posthog_event(uuid: &str, ua: &str) -> Value {
    json!({
        "event": "$pageview",
        "uuid": uuid,
        "distinct_id": format!("user-{uuid}"),
        "timestamp": chrono_now(),
        "properties": {"$user_agent": ua, "$current_url": "https://shop.example/cart"},
    })
}

fn chrono_now() -> String {
    // RFC 3339 in UTC, as PostHog clients send.
    let ms = now_ms();
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day) — Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

async fn post(
    client: &reqwest::Client,
    url: String,
    ctype: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = client.post(url).header("content-type", ctype).body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body: {text}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ingest_endpoint_reaches_websocket_and_sse_once_and_in_order() {
    let (_sandbox, server) = default_pipeline("");
    let client = http();
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.subscribe(
        "events",
        json!({"filter": {"names": ["$pageview"]}, "fields": ["id", "name", "distinct_id", "properties.$browser", "properties.$pathname", "properties.$is_first_seen"]}),
    )
    .await;
    let sse = client
        .get(server.url("/v1/sse?channel=events&names=$pageview"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);

    let mut expected: Vec<String> = Vec::new();
    let mut id = 0;
    let mut next = |ua: &str, list: &mut Vec<String>| {
        id += 1;
        let i = format!("00000000-0000-4000-8000-{id:012}");
        if ua != GOOGLEBOT {
            list.push(i.clone());
        }
        i
    };
    // /v1/events: one object, then an array with a bot in it.
    let one = event(&next(CHROME_WIN, &mut expected), CHROME_WIN);
    let (s, b) = post(
        &client,
        server.url("/v1/events"),
        "application/json",
        None,
        one.to_string().into_bytes(),
    )
    .await;
    assert_eq!((s, b["accepted"].as_u64()), (202, Some(1)), "{b}");
    let arr: Vec<Value> = [CHROME_WIN, GOOGLEBOT, SAFARI_IPHONE]
        .iter()
        .map(|ua| event(&next(ua, &mut expected), ua))
        .collect();
    let (s, b) = post(
        &client,
        server.url("/v1/events"),
        "application/json",
        None,
        json!(arr).to_string().into_bytes(),
    )
    .await;
    assert_eq!((s, b["accepted"].as_u64()), (202, Some(3)), "{b}");
    // /v1/batch: NDJSON, plain and gzip.
    for enc in [None, Some("gzip")] {
        let lines: Vec<String> = (0..5)
            .map(|_| event(&next(SAFARI_IPHONE, &mut expected), SAFARI_IPHONE).to_string())
            .collect();
        let body = lines.join("\n").into_bytes();
        let body = if enc.is_some() { gzip(&body) } else { body };
        let (s, b) = post(
            &client,
            server.url("/v1/batch"),
            "application/x-ndjson",
            enc,
            body,
        )
        .await;
        assert_eq!((s, b["accepted"].as_u64()), (202, Some(5)), "{b}");
    }
    // PostHog: single capture, gzip batch with api_key and sent_at, a bare
    // array on /e/, and a form-encoded base64 body on /i/v0/e/.
    let single = posthog_event(&next(CHROME_WIN, &mut expected), CHROME_WIN);
    let (s, b) = post(
        &client,
        server.url("/capture/"),
        "application/json",
        None,
        single.to_string().into_bytes(),
    )
    .await;
    assert_eq!((s, b["status"].as_u64()), (200, Some(1)), "{b}");
    let batch: Vec<Value> = (0..4)
        .map(|i| {
            let ua = if i == 2 { GOOGLEBOT } else { CHROME_WIN };
            posthog_event(&next(ua, &mut expected), ua)
        })
        .collect();
    let body = json!({"api_key": "phc_test", "batch": batch, "sent_at": chrono_now()}).to_string();
    let (s, b) = post(
        &client,
        server.url("/batch/"),
        "application/json",
        Some("gzip"),
        gzip(body.as_bytes()),
    )
    .await;
    assert_eq!((s, b["accepted"].as_u64()), (200, Some(4)), "{b}");
    let bare: Vec<Value> = (0..2)
        .map(|_| posthog_event(&next(SAFARI_IPHONE, &mut expected), SAFARI_IPHONE))
        .collect();
    let (s, b) = post(
        &client,
        server.url("/e/?compression=gzip-js"),
        "text/plain",
        None,
        gzip(json!(bare).to_string().as_bytes()),
    )
    .await;
    assert_eq!((s, b["accepted"].as_u64()), (200, Some(2)), "{b}");
    use base64::Engine as _;
    let form_event = posthog_event(&next(CHROME_WIN, &mut expected), CHROME_WIN);
    let data = base64::engine::general_purpose::STANDARD.encode(form_event.to_string());
    let form = format!("data={}", urlencode(&data));
    let (s, b) = post(
        &client,
        server.url("/i/v0/e/"),
        "application/x-www-form-urlencoded",
        None,
        form.into_bytes(),
    )
    .await;
    assert_eq!((s, b["accepted"].as_u64()), (200, Some(1)), "{b}");

    let got = ws.messages(expected.len(), WAIT).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|m| m["data"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids, expected,
        "WebSocket: every non-bot event once, in order"
    );
    for m in &got {
        let data = &m["data"];
        assert!(
            data["properties"]["$browser"].is_string(),
            "enriched: {data}"
        );
        assert_eq!(
            data["properties"]["$is_first_seen"], true,
            "first-seen ran: {data}"
        );
        assert!(
            data.get("timestamp").is_none(),
            "projection keeps only the fields asked for: {data}"
        );
    }
    let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers increase: {seqs:?}"
    );

    let sse = sse_events(sse, expected.len(), WAIT).await;
    let sse_ids: Vec<&str> = sse
        .iter()
        .map(|(_, _, d)| d["data"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(sse_ids, expected, "SSE: the same events in the same order");
    for (id, _, d) in &sse {
        assert_eq!(
            id.as_deref(),
            Some(d["seq"].to_string().as_str()),
            "SSE id is the sequence number"
        );
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_loses_nothing_accepted() {
    let sandbox = Sandbox::new();
    sandbox.install(PASS_THROUGH, "pass-through");
    let config = sandbox.config(
        "[server]\nmax_body_bytes = 200000\n[ingest]\nmax_events_per_request = 50\nmax_properties = 5\n\
         max_depth = 3\nmax_string_bytes = 100\nmax_decompressed_bytes = 300000\n\
         [[stages]]\nplugin = \"pass-through\"\n",
    );
    let server = sandbox.serve(&config);
    let client = http();
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.subscribe("events", json!({})).await;

    // Accepted before the bad input.
    let good =
        |id: &str| json!({"id": id, "name": "ok", "distinct_id": "u", "timestamp": now_ms()});
    let (s, _) = post(
        &client,
        server.url("/v1/events"),
        "application/json",
        None,
        good("before").to_string().into_bytes(),
    )
    .await;
    assert_eq!(s, 202);

    let now = now_ms();
    let deep = json!({"name": "x", "distinct_id": "u", "properties": {"a": {"b": {"c": {"d": {"e": 1}}}}}});
    let many_props: serde_json::Map<String, Value> =
        (0..6).map(|i| (format!("p{i}"), json!(i))).collect();
    let too_many: Vec<Value> = (0..51).map(|i| good(&format!("m{i}"))).collect();
    let bomb = gzip(&vec![b' '; 2_000_000]);
    // (what, path, content type, encoding, body, status, code, text the error must contain)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
        Vec<u8>,
        u16,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            "/v1/events",
            "application/json",
            None,
            b"{\"name\": ".to_vec(),
            400,
            "invalid_json",
            "line 1",
        ),
        (
            "wrong type",
            "/v1/events",
            "application/json",
            None,
            json!({"name": 5, "distinct_id": "u"})
                .to_string()
                .into_bytes(),
            400,
            "invalid_events",
            "name",
        ),
        (
            "missing field",
            "/v1/events",
            "application/json",
            None,
            json!({"name": "x"}).to_string().into_bytes(),
            400,
            "invalid_events",
            "distinct_id",
        ),
        (
            "integer out of range",
            "/v1/events",
            "application/json",
            None,
            br#"{"name":"x","distinct_id":"u","properties":{"n":18446744073709551615}}"#.to_vec(),
            400,
            "invalid_events",
            "properties.n",
        ),
        (
            "NaN",
            "/v1/events",
            "application/json",
            None,
            br#"{"name":"x","distinct_id":"u","properties":{"n":NaN}}"#.to_vec(),
            400,
            "invalid_json",
            "",
        ),
        (
            "Infinity",
            "/v1/batch",
            "application/x-ndjson",
            None,
            br#"{"name":"x","distinct_id":"u","properties":{"n":Infinity}}"#.to_vec(),
            400,
            "invalid_events",
            "line",
        ),
        (
            "invalid UTF-8",
            "/v1/events",
            "application/json",
            None,
            b"{\"name\":\"\xff\xfe\",\"distinct_id\":\"u\"}".to_vec(),
            400,
            "invalid_utf8",
            "",
        ),
        (
            "too deep",
            "/v1/events",
            "application/json",
            None,
            deep.to_string().into_bytes(),
            400,
            "invalid_events",
            "deep",
        ),
        (
            "too many properties",
            "/v1/events",
            "application/json",
            None,
            json!({"name": "x", "distinct_id": "u", "properties": many_props})
                .to_string()
                .into_bytes(),
            400,
            "invalid_events",
            "properties",
        ),
        (
            "string too long",
            "/v1/events",
            "application/json",
            None,
            json!({"name": "x", "distinct_id": "u", "properties": {"s": "y".repeat(101)}})
                .to_string()
                .into_bytes(),
            400,
            "invalid_events",
            "properties.s",
        ),
        (
            "too many events",
            "/v1/events",
            "application/json",
            None,
            json!(too_many).to_string().into_bytes(),
            413,
            "too_many_events",
            "50",
        ),
        (
            "future timestamp",
            "/v1/events",
            "application/json",
            None,
            json!({"name": "x", "distinct_id": "u", "timestamp": now + 3_600_000})
                .to_string()
                .into_bytes(),
            400,
            "invalid_events",
            "future",
        ),
        (
            "too old",
            "/v1/events",
            "application/json",
            None,
            json!({"name": "x", "distinct_id": "u", "timestamp": now - 30 * 86_400_000})
                .to_string()
                .into_bytes(),
            400,
            "invalid_events",
            "in the past",
        ),
        (
            "body over limit",
            "/v1/batch",
            "application/x-ndjson",
            None,
            vec![b'\n'; 200_001],
            413,
            "body_too_large",
            "max_body_bytes",
        ),
        (
            "zip bomb",
            "/v1/batch",
            "application/x-ndjson",
            Some("gzip"),
            bomb,
            413,
            "body_too_large",
            "",
        ),
        (
            "corrupt gzip",
            "/v1/batch",
            "application/x-ndjson",
            Some("gzip"),
            b"not gzip".to_vec(),
            400,
            "bad_gzip",
            "",
        ),
        (
            "wrong content type",
            "/v1/events",
            "text/csv",
            None,
            b"a,b".to_vec(),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            "wrong encoding",
            "/v1/events",
            "application/json",
            Some("br"),
            b"{}".to_vec(),
            415,
            "unsupported_encoding",
            "br",
        ),
        (
            "empty batch",
            "/v1/events",
            "application/json",
            None,
            b"[]".to_vec(),
            400,
            "empty_body",
            "",
        ),
    ];
    for (what, path, ctype, enc, body, status, code, text) in cases {
        let (s, b) = post(&client, server.url(path), ctype, enc, body).await;
        assert_eq!(s, status, "{what}: {b}");
        assert_eq!(b["code"], code, "{what}: {b}");
        let all = b.to_string();
        assert!(
            all.contains(text),
            "{what}: the error should mention {text:?}: {b}"
        );
        assert!(
            b["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {b}"
        );
    }

    // A batch with one bad line: the good ones are accepted and the bad one
    // is named by line.
    let body = format!("{}\n{{\"name\":\"x\"}}\n{}\n", good("l1"), good("l3"));
    let (s, b) = post(
        &client,
        server.url("/v1/batch"),
        "application/x-ndjson",
        None,
        body.into_bytes(),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(
        (b["accepted"].as_u64(), b["rejected"].as_u64()),
        (Some(2), Some(1)),
        "{b}"
    );
    assert_eq!(b["errors"][0]["line"], 2, "{b}");

    // Unknown routes and methods answer JSON too.
    let r = client.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "not_found");
    let r = client.get(server.url("/v1/events")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "method_not_allowed"
    );

    // Still serving, and everything accepted arrives.
    let (s, _) = post(
        &client,
        server.url("/v1/events"),
        "application/json",
        None,
        good("after").to_string().into_bytes(),
    )
    .await;
    assert_eq!(s, 202);
    let got = ws.messages(4, WAIT).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|m| m["data"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["before", "l1", "l3", "after"]);
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_every_accepted_event_is_delivered() {
    let sandbox = Sandbox::new();
    sandbox.install(SLOW, "slow");
    // 20 ms per batch of at most 100 events: ~5k events/s, far below the
    // burst below; the queue holds 1,000.
    let config = sandbox.config(
        "[pipeline]\nbatch_size = 100\n[ingest]\nqueue_events = 1000\nmax_events_per_request = 100\nretry_after_s = 2\n\
         [streams]\nreplay_capacity = 100000\nclient_queue = 100000\n\
         [[stages]]\nplugin = \"slow\"\n[stages.config]\nms = 20\n",
    );
    let server = sandbox.serve(&config);
    let client = http();
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.subscribe("events", json!({"fields": ["id"]})).await;

    let mut tasks = Vec::new();
    for r in 0..40 {
        let client = client.clone();
        let url = server.url("/v1/batch");
        tasks.push(tokio::spawn(async move {
            let body: String = (0..100)
                .map(|i| format!("{{\"id\":\"r{r}-{i}\",\"name\":\"x\",\"distinct_id\":\"u\"}}\n"))
                .collect();
            let resp = client
                .post(url)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let b: Value = resp.json().await.unwrap();
            (r, status, retry, b)
        }));
    }
    let mut accepted = std::collections::BTreeSet::new();
    let mut refused = 0;
    for t in tasks {
        let (r, status, retry, b) = t.await.unwrap();
        match status {
            202 => {
                assert_eq!(b["accepted"], 100, "{b}");
                accepted.extend((0..100).map(|i| format!("r{r}-{i}")));
            }
            429 => {
                refused += 1;
                assert_eq!(retry.as_deref(), Some("2"), "Retry-After on 429");
                assert_eq!(b["code"], "queue_full", "{b}");
                assert_eq!(b["accepted"], 0, "{b}");
            }
            other => panic!("unexpected status {other}: {b}"),
        }
    }
    assert!(
        refused > 0,
        "a burst of 4,000 events into a 1,000-event queue must see 429s"
    );
    assert!(!accepted.is_empty());
    let got = ws.messages(accepted.len(), Duration::from_secs(60)).await;
    let delivered: std::collections::BTreeSet<String> = got
        .iter()
        .map(|m| m["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        delivered, accepted,
        "every event that got a 2xx is delivered, once"
    );
    let stats: Value = client
        .get(server.url("/v1/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["refused_requests"], refused, "{stats}");
    let metrics = get_text(server.url("/metrics")).await;
    assert!(
        metrics.contains("eddy_ingest_refused_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("eddy_ingest_queue_depth"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_with_since_gets_exactly_the_missed_messages() {
    let sandbox = Sandbox::new();
    sandbox.install(PASS_THROUGH, "pass-through");
    let config = sandbox.config("[streams]\nreplay_capacity = 50\nclient_queue = 50\n[[stages]]\nplugin = \"pass-through\"\n");
    let server = sandbox.serve(&config);
    let client = http();
    let send = |from: usize, to: usize| {
        let body: String = (from..to)
            .map(|i| format!("{{\"id\":\"e{i}\",\"name\":\"x\",\"distinct_id\":\"u\"}}\n"))
            .collect();
        let client = client.clone();
        let url = server.url("/v1/batch");
        async move {
            let r = client
                .post(url)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
    };
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.subscribe("events", json!({})).await;
    send(0, 10).await;
    let first = ws.messages(10, WAIT).await;
    let last_seq = first[9]["seq"].as_u64().unwrap();
    drop(ws);

    send(10, 25).await; // missed while away
    server.wait_published(25, WAIT).await;
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.subscribe("events", json!({"since": last_seq})).await;
    send(25, 30).await; // and live ones after
    let got = ws.messages(20, WAIT).await;
    let ids: Vec<String> = got
        .iter()
        .map(|m| m["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = (10..30).map(|i| format!("e{i}")).collect();
    assert_eq!(
        ids, want,
        "the missed messages, then live ones: no gap, no duplicate"
    );

    // SSE resumes by Last-Event-ID.
    let resp = client
        .get(server.url("/v1/sse?channel=events"))
        .header("last-event-id", (last_seq + 15).to_string())
        .send()
        .await
        .unwrap();
    let events = sse_events(resp, 5, WAIT).await;
    let ids: Vec<&str> = events
        .iter()
        .map(|(_, _, d)| d["data"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e25", "e26", "e27", "e28", "e29"]);

    // Too old: the ring keeps 50.
    send(30, 100).await;
    server.wait_published(100, WAIT).await;
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.send(json!({"type": "subscribe", "channel": "events", "since": 1}))
        .await;
    let err = ws.recv(WAIT).await.unwrap();
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], "since_too_old", "{err}");
    // Sequence numbers start where this run's first message did; the ring
    // keeps the last 50 of 100.
    let first_seq = first[0]["seq"].as_u64().unwrap();
    assert_eq!(err["oldest_available"], first_seq + 50, "{err}");
    // The connection stays usable after an error.
    ws.send(json!({"type": "ping", "id": 7})).await;
    let pong = ws.recv(WAIT).await.unwrap();
    assert_eq!(pong, json!({"type": "pong", "id": 7}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_protocol_errors_do_not_drop_the_connection() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve(&sandbox.config(""));
    let mut ws = Ws::connect(&server.ws_url()).await;
    let cases = [
        (json!({"type": "dance"}), "unknown_type"),
        (json!({"channel": "events"}), "bad_request"),
        (
            json!({"type": "subscribe", "channel": "nope"}),
            "unknown_channel",
        ),
        (
            json!({"type": "subscribe", "channel": "events", "filter": {"where": [{"field": "properties.x", "op": "greater", "value": 1}]}}),
            "bad_request",
        ),
        (
            json!({"type": "subscribe", "channel": "events", "since": 1u64 << 62}),
            "since_in_future",
        ),
        (
            json!({"type": "unsubscribe", "channel": "events"}),
            "not_subscribed",
        ),
    ];
    for (msg, code) in cases {
        ws.send(msg.clone()).await;
        let reply = ws.recv(WAIT).await.unwrap();
        assert_eq!(reply["type"], "error", "{msg} -> {reply}");
        assert_eq!(reply["code"], code, "{msg} -> {reply}");
        assert!(
            reply["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{reply}"
        );
    }
    ws.inner
        .send(tokio_tungstenite::tungstenite::Message::Text(
            "not json".into(),
        ))
        .await
        .unwrap();
    assert_eq!(ws.recv(WAIT).await.unwrap()["code"], "bad_request");
    // Still alive: subscribe to stats and get a tick.
    ws.subscribe("stats", json!({})).await;
    let tick = ws.messages(1, WAIT).await;
    assert!(tick[0]["data"]["queue_capacity"].is_u64(), "{}", tick[0]);
    ws.send(json!({"type": "unsubscribe", "channel": "stats"}))
        .await;
    loop {
        let m = ws.recv(WAIT).await.unwrap();
        if m["type"] == "unsubscribed" {
            break;
        }
        assert_eq!(m["type"], "message");
    }
    // A message over streams.max_message_bytes (64 KiB) closes with 1009.
    ws.inner
        .send(tokio_tungstenite::tungstenite::Message::Text(
            "x".repeat(70_000).into(),
        ))
        .await
        .unwrap();
    loop {
        match ws.recv(WAIT).await {
            Ok(m) => assert_eq!(m["type"], "message", "{m}"),
            Err(closed) => {
                assert_eq!(closed.code, 1009, "{closed:?}");
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_ingest_reads_and_plugin_operations() {
    let sandbox = Sandbox::new();
    sandbox.install(PASS_THROUGH, "pass-through");
    let config = sandbox.config(
        "[auth]\nwrite_keys = [\"write-key-123\"]\nread_keys = [\"read-key-1234\"]\nadmin_keys = [\"admin-key-123\"]\n\
         [[stages]]\nplugin = \"pass-through\"\n",
    );
    let server = sandbox.serve(&config);
    let client = http();
    let ev = json!({"name": "x", "distinct_id": "u"}).to_string();
    let ingest = |key: Option<&'static str>| {
        let mut r = client
            .post(server.url("/v1/events"))
            .header("content-type", "application/json")
            .body(ev.clone());
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let r = ingest(None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "missing_api_key");
    assert_eq!(ingest(Some("read-key-1234")).await.unwrap().status(), 403);
    assert_eq!(ingest(Some("write-key-123")).await.unwrap().status(), 202);
    // PostHog clients put the key in the body.
    let ph = json!({"api_key": "write-key-123", "event": "x", "distinct_id": "u"}).to_string();
    let r = client
        .post(server.url("/capture/"))
        .header("content-type", "application/json")
        .body(ph)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ph = json!({"api_key": "wrong-key-000", "event": "x", "distinct_id": "u"}).to_string();
    let r = client
        .post(server.url("/capture/"))
        .header("content-type", "application/json")
        .body(ph)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    assert_eq!(
        client
            .get(server.url("/v1/stats"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client
            .get(server.url("/v1/stats?api_key=read-key-1234"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ws = tokio_tungstenite::connect_async(server.ws_url()).await;
    assert!(ws.is_err(), "WebSocket without a read key is refused");
    Ws::connect(&format!("{}?api_key=read-key-1234", server.ws_url())).await;

    let rollback = server.url("/v1/plugins/pass-through/rollback");
    let r = client
        .post(&rollback)
        .bearer_auth("read-key-1234")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client
        .post(&rollback)
        .bearer_auth("admin-key-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "no previous version to roll back to");
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "no_previous_version"
    );
    let r = client
        .post(server.url("/v1/plugins/pass-through/reload"))
        .bearer_auth("admin-key-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["result"], "unchanged");
    // Health stays open for probes.
    assert_eq!(
        client
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_accepted_events_to_subscribers() {
    let sandbox = Sandbox::new();
    sandbox.install(SLOW, "slow");
    let config = sandbox.config(
        "[pipeline]\nbatch_size = 50\n[[stages]]\nplugin = \"slow\"\n[stages.config]\nms = 25\n",
    );
    let mut server = sandbox.serve(&config);
    let client = http();
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.subscribe("events", json!({"fields": ["id"]})).await;
    // An SSE client too: its open stream must not hold shutdown up, and it
    // gets everything before the stream ends.
    let sse = client
        .get(server.url("/v1/sse?channel=events&fields=id"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    // 1,000 events at 50 per 25 ms batch: about half a second of work queued.
    let body: String = (0..1000)
        .map(|i| format!("{{\"id\":\"e{i}\",\"name\":\"x\",\"distinct_id\":\"u\"}}\n"))
        .collect();
    let r = client
        .post(server.url("/v1/batch"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(30));
        (status, server)
    });
    let got = ws.messages(1000, WAIT).await;
    let ids: Vec<String> = got
        .iter()
        .map(|m| m["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, (0..1000).map(|i| format!("e{i}")).collect::<Vec<_>>());
    let closed = ws.recv(WAIT).await.unwrap_err();
    assert_eq!(closed.code, 1001, "{closed:?}");
    // Asking for one more than was sent: the stream must end after 1,000.
    let sse = sse_events(sse, 1001, WAIT).await;
    let sse_ids: Vec<String> = sse
        .iter()
        .map(|(_, _, d)| d["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        sse_ids, ids,
        "SSE gets the same 1,000, then the stream ends"
    );
    let started = std::time::Instant::now();
    let (status, _server) = status.await.unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the server exits once streams are drained, not at the end of the grace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddy_tail_prints_filtered_messages_of_a_channel() {
    let sandbox = Sandbox::new();
    sandbox.install(PASS_THROUGH, "pass-through");
    let server = sandbox.serve(&sandbox.config("[[stages]]\nplugin = \"pass-through\"\n"));
    let mut tail = std::process::Command::new(eddy_tests::eddy_bin())
        .args([
            "tail", "events", "--count", "2", "--fields", "id,name", "--url",
        ])
        .arg(server.url(""))
        .args(["--filter", r#"{"names":["keep"]}"#])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the tail's subscription is live before sending.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let ch: Value = http()
            .get(server.url("/v1/channels"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let subs = ch["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "events")
            .map_or(0, |c| c["subscribers"].as_u64().unwrap());
        if subs == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tail never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = ["keep", "skip", "keep"]
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{{\"id\":\"t{i}\",\"name\":\"{n}\",\"distinct_id\":\"u\"}}\n"))
        .collect::<String>();
    let r = http()
        .post(server.url("/v1/batch"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let out = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + WAIT;
        while tail.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "eddy tail did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        tail.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            json!({"id": "t0", "name": "keep"}),
            json!({"id": "t2", "name": "keep"})
        ],
        "the filtered, projected data of each message, one JSON line each"
    );
}
