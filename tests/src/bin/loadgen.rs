//! Load generator for `eddy serve`, over loopback.
//!
//! `loadgen throughput`: C keep-alive connections post NDJSON batches of
//! small `$pageview` events as fast as the server takes them, for D seconds
//! (or N events), while one WebSocket subscriber on `events` counts what is
//! delivered. Prints accepted and delivered events/s and the 429s.
//!
//! `loadgen latency`: sends R events/s (a batch every `--tick-ms`), each
//! carrying its send time in `properties.sent_us`; the subscriber computes
//! ingest-to-WebSocket latency per event and prints percentiles and how many
//! were lost (sent but never received).
//!
//! The subscriber runs on its own thread and runtime, so the senders do not
//! delay its reads. `--json` prints one JSON object instead of text.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use eddy_tests::load::{ID_DIGITS, pageview};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator for eddy serve")]
struct Cli {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Print the result as one row of scripts/bench-serve's table, starting
    /// with this label.
    #[arg(long, conflicts_with = "json")]
    row: Option<String>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Post as fast as the server accepts.
    Throughput {
        /// Concurrent keep-alive connections posting.
        #[arg(long, short = 'c', default_value_t = 4)]
        connections: usize,
        /// How long to post.
        #[arg(long, short = 'd', default_value_t = 10.0)]
        seconds: f64,
        /// Stop after this many accepted events, if sooner.
        #[arg(long, short = 'n')]
        events: Option<u64>,
        /// Events per request.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Pause after a 429 before the same connection posts again (the
        /// server's Retry-After is seconds, too coarse to measure a limit).
        #[arg(long, default_value_t = 20)]
        retry_ms: u64,
    },
    /// Send at a fixed rate and measure ingest-to-WebSocket latency.
    Latency {
        /// Events per second.
        #[arg(long, short = 'r', default_value_t = 10_000)]
        rate: u64,
        /// How long to send.
        #[arg(long, short = 'd', default_value_t = 10.0)]
        seconds: f64,
        /// One request every this many milliseconds, of rate × tick events.
        #[arg(long, default_value_t = 10)]
        tick_ms: u64,
        /// Meanwhile, this many clients GET the `--hammer-path`s in a loop,
        /// one request after another each (REST readers under load).
        #[arg(long, default_value_t = 0)]
        hammer: usize,
        /// A path the hammering clients GET (repeatable; round robin).
        #[arg(long = "hammer-path")]
        hammer_paths: Vec<String>,
    },
}

/// Overwrites the zero-padded id number at `at` with `id`.
fn set_id(body: &mut [u8], at: usize, mut id: u64) {
    for d in body[at..at + ID_DIGITS].iter_mut().rev() {
        *d = b'0' + (id % 10) as u8;
        id /= 10;
    }
}

/// Wall-clock microseconds, advanced by a monotonic clock from one base, so
/// that send and receive times taken in this process are comparable.
#[derive(Clone, Copy)]
struct Clock {
    base: Instant,
    base_us: u64,
}

impl Clock {
    fn new() -> Clock {
        let base_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Clock {
            base: Instant::now(),
            base_us,
        }
    }

    fn now_us(&self) -> u64 {
        self.base_us + self.base.elapsed().as_micros() as u64
    }

    fn now_ms(&self) -> u64 {
        self.now_us() / 1000
    }
}

/// What the subscriber saw.
#[derive(Default)]
struct Received {
    messages: u64,
    /// Latencies in microseconds (latency mode).
    latencies_us: Vec<u64>,
    /// When the last message arrived.
    last_at: Option<Instant>,
    /// A close or error that ended the subscription early.
    ended: Option<String>,
    /// Events the server had accepted when the last message arrived.
    accepted_at_last: u64,
    /// Whether the subscription ended early (a close, an error).
    ended_early: bool,
}

impl Received {
    /// Messages that count towards the run: in latency mode only those
    /// this run sent (they carry `sent_us`).
    fn counted(&self, latency: bool) -> u64 {
        if latency {
            self.latencies_us.len() as u64
        } else {
            self.messages
        }
    }
}

/// Subscribe to `events` and count messages (and latencies, when
/// `latency`) until `stop` is set and nothing has arrived for `quiet`, or
/// `expected()` messages arrived after `stop`. Runs on its own thread.
fn subscribe(
    ws_url: String,
    clock: Clock,
    latency: bool,
    stop: Arc<AtomicBool>,
    expected: Arc<AtomicU64>,
    sent: Arc<Sent>,
) -> anyhow::Result<(
    std::sync::mpsc::Receiver<()>,
    std::thread::JoinHandle<Received>,
)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("subscriber".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    return Received {
                        ended: Some(format!("runtime: {e}")),
                        ..Received::default()
                    };
                }
            };
            rt.block_on(async move {
                let mut got = Received::default();
                let (mut ws, _) = match tokio_tungstenite::connect_async(&ws_url).await {
                    Ok(c) => c,
                    Err(e) => {
                        got.ended = Some(format!("connect: {e}"));
                        return got;
                    }
                };
                let sub = json!({"type": "subscribe", "channel": "events"}).to_string();
                if let Err(e) = ws.send(Message::Text(sub.into())).await {
                    got.ended = Some(format!("subscribe: {e}"));
                    return got;
                }
                // After the senders stop: wait for the rest, but give up
                // after this long without a message.
                let quiet = Duration::from_secs(5);
                let mut subscribed = false;
                let mut heard = Instant::now();
                // One timer for the whole run, not one per message: this
                // thread shares the machine with the server it measures.
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    let frame = tokio::select! {
                        biased;
                        f = ws.next() => f,
                        _ = tick.tick() => {
                            if stop.load(Ordering::Acquire)
                                && (got.counted(latency) >= expected.load(Ordering::Acquire)
                                    || heard.elapsed() > quiet)
                            {
                                break;
                            }
                            continue;
                        }
                    };
                    let now = Instant::now();
                    heard = now;
                    match frame {
                        Some(Ok(Message::Text(t))) => {
                            if t.starts_with(r#"{"type":"message""#) {
                                got.messages += 1;
                                got.last_at = Some(now);
                                got.accepted_at_last = sent.accepted.load(Ordering::Relaxed);
                                if latency && let Some(sent) = sent_us(&t) {
                                    got.latencies_us.push(clock.now_us().saturating_sub(sent));
                                }
                                if stop.load(Ordering::Acquire)
                                    && got.counted(latency) >= expected.load(Ordering::Acquire)
                                {
                                    break;
                                }
                            } else if !subscribed && t.contains(r#""type":"subscribed""#) {
                                subscribed = true;
                                let _ = ready_tx.send(());
                            } else if t.contains(r#""type":"error""#) {
                                got.ended = Some(t.to_string());
                            }
                        }
                        Some(Ok(Message::Close(f))) => {
                            got.ended = Some(format!("closed: {f:?}"));
                            got.ended_early = true;
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            got.ended = Some(format!("error: {e}"));
                            got.ended_early = true;
                            break;
                        }
                        None => {
                            got.ended = Some("connection dropped".into());
                            got.ended_early = true;
                            break;
                        }
                    }
                }
                got
            })
        })
        .context("starting the subscriber thread")?;
    Ok((ready_rx, handle))
}

/// `properties.sent_us` of a message, found without parsing it.
fn sent_us(text: &str) -> Option<u64> {
    let at = text.find(r#""sent_us":"#)? + 10;
    let rest = &text[at..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// Counters shared by the senders.
#[derive(Default)]
struct Sent {
    events: AtomicU64,
    accepted: AtomicU64,
    requests: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    /// Time from sending a request to its 202, in microseconds (with the
    /// write-ahead log on, that is until the events are durable).
    ack_us: std::sync::Mutex<Vec<u64>>,
}

/// Post one body; count the outcome.
async fn post(client: &reqwest::Client, url: &str, body: reqwest::Body, n: u64, sent: &Sent) {
    sent.requests.fetch_add(1, Ordering::Relaxed);
    let asked = Instant::now();
    let resp = client
        .post(url)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await;
    match resp {
        Ok(r) if r.status().as_u16() == 202 => {
            let accepted = r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["accepted"].as_u64())
                .unwrap_or(0);
            sent.events.fetch_add(n, Ordering::Relaxed);
            sent.accepted.fetch_add(accepted, Ordering::Relaxed);
            if let Ok(mut v) = sent.ack_us.lock() {
                v.push(asked.elapsed().as_micros() as u64);
            }
        }
        Ok(r) if r.status().as_u16() == 429 => {
            sent.refused.fetch_add(1, Ordering::Relaxed);
        }
        Ok(r) => {
            sent.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("loadgen: {} from {url}", r.status());
        }
        Err(e) => {
            sent.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("loadgen: {e}");
        }
    }
}

/// Wait until the server has published everything it accepted (a previous
/// run's backlog would otherwise be counted in this one).
async fn wait_idle(base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats: Value = client
            .get(format!("{base}/v1/stats"))
            .send()
            .await
            .context("GET /v1/stats")?
            .json()
            .await?;
        if stats["queue_depth"] == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the server still has queued events after 120 s: {stats}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// REST readers: clients that GET some paths one request after another,
/// timing each answer.
struct Hammer {
    clients: usize,
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<(u64, u64, Vec<u64>)>,
}

impl Hammer {
    fn start(base: &str, clients: usize, paths: &[String]) -> anyhow::Result<Hammer> {
        if clients > 0 && paths.is_empty() {
            bail!("--hammer needs at least one --hammer-path");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            let client = reqwest::Client::builder().no_proxy().build()?;
            let urls: Vec<String> = paths.iter().map(|p| format!("{base}{p}")).collect();
            let stop = stop.clone();
            tasks.spawn(async move {
                let (mut ok, mut errors, mut latencies_us) = (0u64, 0u64, Vec::new());
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = client.get(&urls[i % urls.len()]).send().await;
                    let answered = match r {
                        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                        _ => false,
                    };
                    if answered {
                        ok += 1;
                        latencies_us.push(t.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                    i += 1;
                }
                (ok, errors, latencies_us)
            });
        }
        Ok(Hammer {
            clients,
            stop,
            tasks,
        })
    }

    /// Stop, and report answers per second over `seconds` and their latency.
    async fn finish(mut self, seconds: f64) -> Value {
        if self.tasks.is_empty() {
            return Value::Null;
        }
        self.stop.store(true, Ordering::Release);
        let (mut ok, mut errors, mut all) = (0, 0, Vec::new());
        while let Some(Ok((o, e, l))) = self.tasks.join_next().await {
            ok += o;
            errors += e;
            all.extend(l);
        }
        all.sort_unstable();
        let round = |ms: f64| (ms * 100.0).round() / 100.0;
        json!({
            "rest_clients": self.clients,
            "rest_per_s": (ok as f64 / seconds).round(),
            "rest_errors": errors,
            "rest_p50_ms": round(percentile(&all, 0.5)),
            "rest_p99_ms": round(percentile(&all, 0.99)),
        })
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(run(&cli))?;
    if cli.json {
        println!("{result}");
    } else if let Some(label) = &cli.row {
        let num = |k: &str| result.get(k).and_then(Value::as_f64);
        let cell = |k: &str| num(k).map_or("-".to_owned(), |v| format!("{v}"));
        let test = match cli.mode {
            Mode::Throughput { connections, .. } => format!("throughput, {connections} conns"),
            Mode::Latency { rate, hammer, .. } if hammer > 0 => {
                format!("latency at {rate}/s+{hammer}")
            }
            Mode::Latency { rate, .. } => format!("latency at {rate}/s"),
        };
        println!(
            "{label:<14} {test:<22} {:>12} {:>12} {:>6} {:>8} {:>8} {:>8} {:>8} {:>6}{}",
            cell("accepted_per_s"),
            cell("delivered_per_s"),
            cell("refused_requests"),
            cell("p50_ms"),
            cell("p90_ms"),
            cell("p99_ms"),
            cell("max_ms"),
            cell("lost"),
            match (
                result.get("subscriber_ended").and_then(Value::as_str),
                num("subscribed_s"),
            ) {
                (Some(e), Some(s)) => format!(
                    "  (subscriber closed after {s} s, {} accepted/s until then: {e})",
                    cell("accepted_per_s_while_subscribed")
                ),
                (Some(e), None) => format!("  (subscriber: {e})"),
                _ => String::new(),
            } + &match num("rest_per_s") {
                Some(_) => format!(
                    "  (REST: {} answers/s, p50 {} ms, p99 {} ms, {} errors)",
                    cell("rest_per_s"),
                    cell("rest_p50_ms"),
                    cell("rest_p99_ms"),
                    cell("rest_errors")
                ),
                None => String::new(),
            },
        );
    } else {
        let get = |k: &str| result.get(k).cloned().unwrap_or(Value::Null);
        match cli.mode {
            Mode::Throughput { .. } => println!(
                "throughput: {} accepted/s, {} delivered/s; {} accepted, {} delivered in {} s \
                 ({} s to drain); {} requests answered 429, {} errors{}",
                get("accepted_per_s"),
                get("delivered_per_s"),
                get("accepted"),
                get("delivered"),
                get("seconds"),
                get("drain_s"),
                get("refused_requests"),
                get("errors"),
                get("subscriber_ended")
                    .as_str()
                    .map(|e| format!("; subscriber ended: {e}"))
                    .unwrap_or_default(),
            ),
            Mode::Latency { .. } => println!(
                "latency at {} events/s: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms; \
                 {} sent, {} accepted, {} received, {} lost; {} requests answered 429, {} errors{}",
                get("rate"),
                get("p50_ms"),
                get("p90_ms"),
                get("p99_ms"),
                get("max_ms"),
                get("sent"),
                get("accepted"),
                get("received"),
                get("lost"),
                get("refused_requests"),
                get("errors"),
                get("subscriber_ended")
                    .as_str()
                    .map(|e| format!("; subscriber ended: {e}"))
                    .unwrap_or_default(),
            ),
        }
    }
    Ok(())
}

async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let base = cli.url.trim_end_matches('/').to_owned();
    let Some(host) = base.strip_prefix("http://") else {
        bail!("--url must be http://HOST:PORT");
    };
    let ws_url = format!("ws://{host}/v1/ws");
    let batch_url = format!("{base}/v1/batch");
    wait_idle(&base).await?;
    let clock = Clock::new();
    let stop = Arc::new(AtomicBool::new(false));
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let latency_mode = matches!(cli.mode, Mode::Latency { .. });
    let sent = Arc::new(Sent::default());
    let (ready, subscriber) = subscribe(
        ws_url,
        clock,
        latency_mode,
        stop.clone(),
        expected.clone(),
        sent.clone(),
    )?;
    if ready.recv_timeout(Duration::from_secs(10)).is_err() {
        bail!("the WebSocket subscriber did not get its subscription acknowledged");
    }
    let started = Instant::now();
    let mut out = match cli.mode {
        Mode::Throughput {
            connections,
            seconds,
            events,
            batch,
            retry_ms,
        } => {
            let client = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(connections)
                .tcp_nodelay(true)
                .build()?;
            // Bodies are made once and copied per request with fresh ids
            // written in place (the server drops repeated ids): the
            // client's CPU goes to sending, not to formatting, on a machine
            // it shares with the server.
            let ts = clock.now_ms();
            let run = clock.base_us;
            let bodies: Vec<(&'static [u8], &'static [usize])> = (0..32u64)
                .map(|b| {
                    let mut s = String::with_capacity(batch * 256);
                    let mut at = Vec::with_capacity(batch);
                    for i in 0..batch as u64 {
                        at.push(pageview(&mut s, run, b * batch as u64 + i, ts, None));
                    }
                    (
                        &*Box::leak(s.into_bytes().into_boxed_slice()),
                        &*Box::leak(at.into_boxed_slice()),
                    )
                })
                .collect();
            let event_bytes = bodies[0].0.len() as f64 / batch as f64;
            let next_request = Arc::new(AtomicU64::new(0));
            let deadline = started + Duration::from_secs_f64(seconds);
            let limit = events.unwrap_or(u64::MAX);
            let mut tasks = tokio::task::JoinSet::new();
            for c in 0..connections {
                let (client, url, sent, bodies, next_request) = (
                    client.clone(),
                    batch_url.clone(),
                    sent.clone(),
                    bodies.clone(),
                    next_request.clone(),
                );
                tasks.spawn(async move {
                    let mut i = c;
                    while Instant::now() < deadline && sent.accepted.load(Ordering::Relaxed) < limit
                    {
                        let before = sent.refused.load(Ordering::Relaxed);
                        let (template, at) = bodies[i % bodies.len()];
                        let first = next_request.fetch_add(1, Ordering::Relaxed) * batch as u64;
                        let mut body = template.to_vec();
                        for (k, &at) in at.iter().enumerate() {
                            set_id(&mut body, at, first + k as u64);
                        }
                        post(
                            &client,
                            &url,
                            reqwest::Body::from(body),
                            batch as u64,
                            &sent,
                        )
                        .await;
                        if sent.refused.load(Ordering::Relaxed) > before {
                            tokio::time::sleep(Duration::from_millis(retry_ms)).await;
                        }
                        i += connections;
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            let send_s = started.elapsed().as_secs_f64();
            let accepted = sent.accepted.load(Ordering::Relaxed);
            json!({
                "mode": "throughput",
                "connections": connections,
                "batch": batch,
                "event_bytes": event_bytes.round(),
                "seconds": (send_s * 100.0).round() / 100.0,
                "accepted": accepted,
                "accepted_per_s": (accepted as f64 / send_s).round(),
            })
        }
        Mode::Latency {
            rate,
            seconds,
            tick_ms,
            hammer,
            ref hammer_paths,
        } => {
            let client = reqwest::Client::builder()
                .no_proxy()
                .tcp_nodelay(true)
                .build()?;
            let readers = Hammer::start(&base, hammer, hammer_paths)?;
            let per_tick = (rate * tick_ms / 1000).max(1);
            let ticks = (seconds * 1000.0 / tick_ms as f64).round() as u64;
            let mut interval = tokio::time::interval(Duration::from_millis(tick_ms));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            // Requests in flight at once, at most; a tick that finds them
            // all busy waits, and the wait shows in the latencies.
            let in_flight = Arc::new(tokio::sync::Semaphore::new(16));
            let mut tasks = tokio::task::JoinSet::new();
            let mut id = 0u64;
            for _ in 0..ticks {
                interval.tick().await;
                let permit = in_flight.clone().acquire_owned().await?;
                let mut body = String::with_capacity(per_tick as usize * 256);
                let now = clock.now_us();
                for _ in 0..per_tick {
                    pageview(&mut body, clock.base_us, id, now / 1000, Some(now));
                    id += 1;
                }
                let (client, url, sent) = (client.clone(), batch_url.clone(), sent.clone());
                tasks.spawn(async move {
                    post(&client, &url, reqwest::Body::from(body), per_tick, &sent).await;
                    drop(permit);
                });
            }
            while tasks.join_next().await.is_some() {}
            let send_s = started.elapsed().as_secs_f64();
            let rest = readers.finish(send_s).await;
            let mut out = json!({
                "mode": "latency",
                "rate": rate,
                "achieved_rate": (sent.events.load(Ordering::Relaxed) as f64 / send_s).round(),
                "seconds": (send_s * 100.0).round() / 100.0,
                "sent": id,
                "accepted": sent.accepted.load(Ordering::Relaxed),
            });
            if let (Some(o), Value::Object(r)) = (out.as_object_mut(), rest) {
                o.extend(r);
            }
            out
        }
    };
    let send_done = Instant::now();
    expected.store(sent.accepted.load(Ordering::Relaxed), Ordering::Release);
    stop.store(true, Ordering::Release);
    let mut got = subscriber
        .join()
        .map_err(|_| anyhow::anyhow!("the subscriber thread panicked"))?;
    out["refused_requests"] = json!(sent.refused.load(Ordering::Relaxed));
    if let Ok(mut acks) = sent.ack_us.lock() {
        acks.sort_unstable();
        let round = |ms: f64| (ms * 100.0).round() / 100.0;
        out["ack_p50_ms"] = json!(round(percentile(&acks, 0.50)));
        out["ack_p99_ms"] = json!(round(percentile(&acks, 0.99)));
    }
    out["errors"] = json!(sent.errors.load(Ordering::Relaxed));
    out["delivered"] = json!(got.messages);
    if let Some(ended) = &got.ended {
        out["subscriber_ended"] = json!(ended);
    }
    // A subscriber closed while events were still being sent (say, cut off
    // for lagging) leaves the server less to do from then on: the rate up
    // to its last message is the one measured with a subscriber attached.
    // (Frames still in flight when the server closed it arrive after; this
    // errs, if at all, by the time they took.) Not reported when that was
    // under a second in: too short to be a rate.
    if got.ended_early
        && let Some(at) = got.last_at
        && at < send_done
        && at.duration_since(started) >= Duration::from_secs(1)
    {
        let s = at.duration_since(started).as_secs_f64();
        out["subscribed_s"] = json!((s * 100.0).round() / 100.0);
        out["accepted_per_s_while_subscribed"] = json!((got.accepted_at_last as f64 / s).round());
    }
    let last = got.last_at.unwrap_or(send_done);
    out["drain_s"] =
        json!((last.saturating_duration_since(send_done).as_secs_f64() * 100.0).round() / 100.0);
    let delivered_s = last.duration_since(started).as_secs_f64();
    out["delivered_per_s"] = json!((got.messages as f64 / delivered_s).round());
    if latency_mode {
        got.latencies_us.sort_unstable();
        let l = &got.latencies_us;
        let round = |ms: f64| (ms * 100.0).round() / 100.0;
        out["received"] = json!(l.len());
        out["lost"] = json!(
            out["sent"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(l.len() as u64)
        );
        out["p50_ms"] = json!(round(percentile(l, 0.50)));
        out["p90_ms"] = json!(round(percentile(l, 0.90)));
        out["p99_ms"] = json!(round(percentile(l, 0.99)));
        out["p999_ms"] = json!(round(percentile(l, 0.999)));
        out["max_ms"] = json!(round(l.last().map_or(f64::NAN, |&m| m as f64 / 1000.0)));
    }
    Ok(out)
}
