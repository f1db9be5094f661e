//! Streams under stress: many stalled WebSocket clients during a burst,
//! slowloris connections, a hot swap under `eddy send`, a stalled SSE
//! client — the real binary, real sockets, every wait bounded.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use eddy_tests::plugins::{PASS_THROUGH, UA_ENRICHER, UA_ENRICHER_V2};
use eddy_tests::server::{Closed, Drained, Sse, Ws, http, pageview_line, post_ndjson};
use eddy_tests::{CHROME_WIN, Sandbox, eddy_bin};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinSet;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The seq of channel `events` that a slow-consumer close names: from the
/// close reason (`... last_seq events=N`) and from the `error` message sent
/// just before it (`last_seq` is `N`, or `{"events": N}`), which must agree.
fn named_last_seq(error: &Value, closed: &Closed) -> u64 {
    let from_reason = closed
        .reason
        .split_whitespace()
        .find_map(|w| w.strip_prefix("events="))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("close reason names no last seq: {closed:?}"));
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "slow_consumer", "{error}");
    let from_error = error["last_seq"]
        .as_u64()
        .or_else(|| error["last_seq"]["events"].as_u64())
        .unwrap_or_else(|| panic!("error names no last seq: {error}"));
    assert_eq!(from_error, from_reason, "{error} vs {closed:?}");
    from_reason
}

/// 500 clients subscribe and then stop reading, 10 keep reading, and
/// 100,000 events arrive as fast as they can be posted. The readers must get
/// every message, in order, however many clients stall next to them; and
/// each stalled client, once it reads again, must
/// find an unbroken run of messages and then a 4008 close naming exactly
/// the last seq it got — so it can resume without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_websocket_clients_are_cut_off_cleanly_and_readers_get_everything() {
    const STALLED: usize = 500;
    const READERS: usize = 10;
    const EVENTS: usize = 100_000;
    const BATCH: usize = 1_000;
    let started = Instant::now();

    let sandbox = Sandbox::new();
    sandbox.install(PASS_THROUGH, "pass-through");
    // Why these settings make the outcome deterministic:
    // - client_queue and replay_capacity (150,000) exceed the whole burst,
    //   so no client is ever cut off for lagging by count: the readers are
    //   never cut off however far behind the burst puts them, and the
    //   stalled clients can only end through the send timeout.
    // - send_timeout_ms = 1000: a stalled client's writer gives up a second
    //   after its socket buffers fill, early in the burst. A reader only has
    //   to drain its socket's send buffer (512 KiB as the server sets it up)
    //   within that second for each write to complete, and reads far faster.
    // - idle_timeout_ms = 120000: it is also how long the server keeps a
    //   stalled client's error and close waiting for it to read again, and
    //   stalled clients send nothing (not even pongs), so they must not be
    //   given up as idle before the test reads them, after the burst.
    // - max_connections: room for all 510 clients.
    let config = sandbox.config(
        "[streams]\nreplay_capacity = 150000\nclient_queue = 150000\nmax_connections = 600\n\
         send_timeout_ms = 1000\nidle_timeout_ms = 120000\n\
         [[stages]]\nplugin = \"pass-through\"\n",
    );
    let server = sandbox.serve(&config);
    let client = http();

    // Subscribe everyone before the first event, so every subscription
    // starts at the same head.
    let mut stalled = Vec::with_capacity(STALLED);
    let mut head = None;
    for _ in 0..STALLED {
        let mut ws = Ws::connect(&server.ws_url()).await;
        let ack = ws.subscribe("events", json!({})).await;
        assert_eq!(*head.get_or_insert(ack["head"].clone()), ack["head"]);
        stalled.push(ws);
    }
    let mut readers = JoinSet::new();
    for _ in 0..READERS {
        let mut ws = Ws::connect(&server.ws_url()).await;
        let ack = ws.subscribe("events", json!({})).await;
        assert_eq!(head.as_ref(), Some(&ack["head"]));
        readers.spawn(async move { ws.message_ids(EVENTS, Duration::from_secs(120)).await });
    }
    let head = head.unwrap().as_u64().unwrap();
    let connected = started.elapsed();

    // The burst: 100 NDJSON batches of 1,000, four requests in flight.
    let ts = now_ms();
    let base = server.url("");
    let mut posters = JoinSet::new();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..4 {
        let (client, base, next) = (client.clone(), base.clone(), next.clone());
        posters.spawn(async move {
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if b * BATCH >= EVENTS {
                    break;
                }
                let body: String = (b * BATCH..(b + 1) * BATCH)
                    .map(|i| pageview_line("ev-", i, ts) + "\n")
                    .collect();
                let reply = post_ndjson(&client, &base, body, Duration::from_secs(60)).await;
                assert_eq!(reply["accepted"], BATCH, "{reply}");
            }
        });
    }
    while let Some(r) = posters.join_next().await {
        r.unwrap();
    }
    let posted = started.elapsed();

    // Readers: all 100,000 seqs, contiguous and in order, each event once.
    let want: Vec<u64> = (head + 1..=head + EVENTS as u64).collect();
    while let Some(got) = readers.join_next().await {
        let got = got.unwrap();
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert!(seqs == want, "a reader missed or reordered messages");
        let ids: HashSet<&str> = got.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids.len(), EVENTS, "every event exactly once");
    }
    let read = started.elapsed();

    // Stalled clients, read only now: a contiguous prefix from the start,
    // then the slow-consumer error and a 4008 close, both naming the last
    // seq the client actually received.
    let mut drains = JoinSet::new();
    for mut ws in stalled {
        drains.spawn(async move { ws.drain_seqs(Duration::from_secs(60)).await });
    }
    let mut prefix_lens = Vec::with_capacity(STALLED);
    while let Some(r) = drains.join_next().await {
        let Drained {
            seqs,
            others,
            closed,
        } = r.unwrap();
        assert_eq!(closed.code, 4008, "{closed:?}");
        let [(read_before, error)] = others.as_slice() else {
            panic!("one error message expected before the close: {others:?}")
        };
        assert_eq!(
            *read_before,
            seqs.len(),
            "the error comes after the last message"
        );
        let last = named_last_seq(error, &closed);
        let want: Vec<u64> = (head + 1..=head + seqs.len() as u64).collect();
        assert!(seqs == want, "a stalled client's messages have a gap");
        let received = seqs.last().copied().unwrap_or(head);
        assert_eq!(
            last, received,
            "the close names the last seq the client received"
        );
        assert!(
            received < head + EVENTS as u64,
            "a client that read nothing for the whole burst cannot have it all"
        );
        prefix_lens.push(seqs.len());
    }
    prefix_lens.sort_unstable();
    eprintln!(
        "connected in {connected:?}, posted by {posted:?}, readers done by {read:?}, \
         stalled drained by {:?}; stalled prefixes: min {} median {} max {}",
        started.elapsed(),
        prefix_lens[0],
        prefix_lens[STALLED / 2],
        prefix_lens[STALLED - 1]
    );
}

/// 200 connections dribble a request's headers, one byte a second. The
/// server must drop each of them once `server.header_read_timeout_ms` is up,
/// and meanwhile keep answering everyone else promptly, on new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_dropped_and_others_are_served_meanwhile() {
    const SLOW: usize = 200;
    let sandbox = Sandbox::new();
    let config = sandbox.config("[server]\nheader_read_timeout_ms = 2000\n");
    let server = sandbox.serve(&config);
    let addr = server.addr.clone();

    let started = Instant::now();
    let mut slow = JoinSet::new();
    for _ in 0..SLOW {
        let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        slow.spawn(async move {
            let (mut rd, mut wr) = stream.into_split();
            let connected = Instant::now();
            let dribble = async move {
                let request =
                    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n\r\n";
                for b in request {
                    if wr.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                // Everything sent (it is not): wait to be dropped.
                std::future::pending::<()>().await;
            };
            let mut buf = [0u8; 1024];
            let mut got = Vec::new();
            let dropped = async {
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            };
            tokio::select! {
                () = dribble => unreachable!(),
                () = dropped => {}
                () = tokio::time::sleep(Duration::from_secs(6)) => {
                    panic!("a slowloris connection was still open after 6 s")
                }
            }
            (
                connected.elapsed(),
                String::from_utf8_lossy(&got).into_owned(),
            )
        });
    }

    // Meanwhile: a health check and an ingest request every 100 ms, each on a
    // new connection, each answered within 2 s.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut served = 0;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        let health = client.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        let ingest = client
            .post(server.url("/v1/events"))
            .header("content-type", "application/json")
            .body(json!({"id": format!("n{served}"), "name": "x", "distinct_id": "u"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(ingest.status(), 202);
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "a health check and an ingest took {took:?} next to slowloris connections"
        );
        slowest = slowest.max(took);
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut closed_after = Vec::with_capacity(SLOW);
    while let Some(r) = slow.join_next().await {
        let (after, got) = r.unwrap();
        assert!(
            !got.contains("200 OK"),
            "a request with incomplete headers was answered: {got}"
        );
        closed_after.push(after);
    }
    closed_after.sort_unstable();
    let (first, last) = (closed_after[0], closed_after[SLOW - 1]);
    assert!(
        first >= Duration::from_millis(1500) && last <= Duration::from_secs(5),
        "slowloris connections must be dropped about 2 s in; dropped after {first:?} to {last:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    eprintln!(
        "{served} pairs of requests served meanwhile, slowest {slowest:?}; \
         slowloris connections dropped after {first:?} to {last:?}"
    );
}

/// `eddy send` streams 50,000 events while ua-enricher is replaced by its
/// v2 (which adds `$browser_version`) through a temp file renamed over it.
/// Subscribers must see the swap announced, every event exactly once and in
/// order, and exactly one switch from v1 output to v2 output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_swap_while_eddy_send_streams_loses_and_repeats_nothing() {
    const TOTAL: usize = 50_000;
    // The swap is triggered once this many events were delivered...
    const SWAP_AFTER: usize = 10_000;
    // ... and events from here on are held back until it is announced, so
    // the new version surely serves them.
    const HOLD_FROM: usize = 40_000;
    let sandbox = Sandbox::new();
    sandbox.install(UA_ENRICHER, "ua-enricher");
    let config = sandbox.config("[[stages]]\nplugin = \"ua-enricher\"\n");
    let server = sandbox.serve(&config);
    let mut plugins = Ws::connect(&server.ws_url()).await;
    plugins.subscribe("plugins", json!({})).await;
    let mut events = Ws::connect(&server.ws_url()).await;
    events
        .subscribe(
            "events",
            json!({"fields": ["id", "properties.$browser", "properties.$browser_version"]}),
        )
        .await;

    // `eddy send -` reads the events from a pipe rather than a finished
    // file: a file of 50,000 events is sent in less time than a swap takes
    // (debounce, then compiling the new version), so whether the swap landed
    // mid-stream would be luck. Through the pipe the events keep coming
    // while the swap happens, and the tail waits for it.
    let ts = now_ms();
    let lines: Vec<String> = (0..TOTAL)
        .map(|i| {
            json!({
                "id": format!("e{i}"),
                "name": "$pageview",
                "distinct_id": format!("user-{}", i % 1000),
                "timestamp": ts,
                "properties": {"$user_agent": CHROME_WIN, "$current_url": "https://shop.example.com/"},
            })
            .to_string()
        })
        .collect();
    let mut send = std::process::Command::new(eddy_bin())
        .args(["send", "-", "--batch", "500", "--summary", "json", "--url"])
        .arg(server.url(""))
        .env_remove("EDDY_API_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = send.stdin.take().unwrap();
    let stderr = send.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let (swapped_tx, swapped_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        // About 50,000 events/s: steady traffic during the swap.
        for chunk in lines[..HOLD_FROM].chunks(500) {
            stdin
                .write_all((chunk.join("\n") + "\n").as_bytes())
                .unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        swapped_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the swap was announced");
        for chunk in lines[HOLD_FROM..].chunks(500) {
            stdin
                .write_all((chunk.join("\n") + "\n").as_bytes())
                .unwrap();
        }
        // Dropping stdin ends `eddy send`'s input.
    });

    let mut got = events.messages(SWAP_AFTER, Duration::from_secs(60)).await;
    let swap_at = Instant::now();
    sandbox.rename_over(UA_ENRICHER_V2, "ua-enricher");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let notice = plugins.recv(left).await.expect("plugins channel open");
        if notice["type"] == "message"
            && notice["data"]["plugin"] == "ua-enricher"
            && notice["data"]["kind"] == "swapped"
        {
            break;
        }
        assert_ne!(notice["data"]["kind"], "load_failed", "{notice}");
    }
    swapped_tx.send(()).unwrap();
    eprintln!("swap announced {:?} after the rename", swap_at.elapsed());
    got.extend(
        events
            .messages(TOTAL - SWAP_AFTER, Duration::from_secs(60))
            .await,
    );
    writer.join().unwrap();

    // `eddy send` finishes cleanly and counts every event as accepted.
    let exit = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = send.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "eddy send did not finish");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let stderr = stderr.join().unwrap();
    assert!(exit.success(), "eddy send failed: {stderr}");
    let summary: Value = stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary from eddy send: {stderr}"));
    assert_eq!(summary["accepted"], TOTAL, "{summary}");
    assert_eq!(summary["rejected"], 0, "{summary}");

    // Every event exactly once, in the order sent, seqs contiguous.
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m["data"]["id"], format!("e{i}"), "position {i}: {m}");
        assert_eq!(m["seq"], got[0]["seq"].as_u64().unwrap() + i as u64);
    }
    let has_version = |m: &Value| m["data"]["properties"]["$browser_version"].is_string();
    // One switch from v1 to v2 output, between requests (the pipeline never
    // splits a 500-event request), after the swap was triggered and before
    // the held-back tail.
    let k = got
        .iter()
        .position(has_version)
        .expect("the new version served");
    assert!(
        got[..k]
            .iter()
            .all(|m| m["data"]["properties"]["$browser"] == "Chrome" && !has_version(m)),
        "v1 output before the switch"
    );
    assert!(
        got[k..].iter().all(has_version),
        "v1 output after the switch"
    );
    assert!((SWAP_AFTER..=HOLD_FROM).contains(&k), "switch at {k}");
    assert_eq!(k % 500, 0, "the switch falls between requests: {k}");
    eprintln!("v2 output from event {k} of {TOTAL}");
}

/// An SSE client reads, then stops reading and falls behind; when it reads
/// again it gets an unbroken run of events and then a final `event: error`
/// naming the last seq it got, and the stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sse_client_gets_an_error_naming_its_last_seq() {
    const EVENTS: usize = 30_000;
    let sandbox = Sandbox::new();
    sandbox.install(PASS_THROUGH, "pass-through");
    // client_queue 1,000: far less than the burst, so the stalled client is
    // surely more than that behind when it resumes (socket buffers hold a
    // few thousand events at most); replay_capacity keeps the burst.
    let config = sandbox.config(
        "[streams]\nclient_queue = 1000\nreplay_capacity = 100000\n\
         [[stages]]\nplugin = \"pass-through\"\n",
    );
    let server = sandbox.serve(&config);
    let client = http();
    // Nothing is published before the burst, so the stream starts after
    // this head.
    let channels: Value = client
        .get(server.url("/v1/channels"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let head = channels["channels"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "events"))
        .and_then(|c| c["head_seq"].as_u64())
        .unwrap_or_else(|| panic!("no head for events: {channels}"));
    let resp = client
        .get(server.url("/v1/sse?channel=events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut sse = Sse::new(resp);

    // A first batch, read as it comes: the client is live.
    let ts = now_ms();
    let first: String = (0..100)
        .map(|i| pageview_line("s-", i, ts) + "\n")
        .collect();
    post_ndjson(&client, &server.url(""), first, Duration::from_secs(30)).await;
    let mut events = sse.events(100, Duration::from_secs(30)).await;
    assert_eq!(events.len(), 100);

    // Then it stops reading while the burst arrives.
    for b in 0..EVENTS / 1000 {
        let body: String = (100 + b * 1000..100 + (b + 1) * 1000)
            .map(|i| pageview_line("s-", i, ts) + "\n")
            .collect();
        let reply = post_ndjson(&client, &server.url(""), body, Duration::from_secs(30)).await;
        assert_eq!(reply["accepted"], 1000, "{reply}");
    }
    server
        .wait_published(100 + EVENTS as u64, Duration::from_secs(30))
        .await;

    // Now read again: more events without a gap, then the error.
    events.extend(sse.events(usize::MAX, Duration::from_secs(30)).await);
    let (_, kind, error) = events.pop().expect("an error event");
    assert_eq!(
        kind, "error",
        "the stream ends with an error event: {error}"
    );
    assert_eq!(error["code"], "slow_consumer", "{error}");
    assert!(events.len() < 100 + EVENTS, "{}", events.len());
    for (i, (id, kind, data)) in events.iter().enumerate() {
        let seq = head + 1 + i as u64;
        assert_eq!(kind, "message");
        assert_eq!(id.as_deref(), Some(seq.to_string().as_str()));
        assert_eq!(data["seq"], seq);
        assert_eq!(data["data"]["id"], format!("s-{i}"));
    }
    assert_eq!(
        error["last_seq"],
        head + events.len() as u64,
        "the error names the last seq received"
    );
    eprintln!(
        "the stalled SSE client got {} of {} events, then the error",
        events.len(),
        100 + EVENTS
    );
}
