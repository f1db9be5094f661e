//! Several `eddy serve` instances in one consumer group on a real
//! Kafka-protocol broker (Tansu, see `kafka.rs`), publishing partial window
//! results that one more eddy merges into global ones; and the group's
//! rebalances, as they are seen and as they move partitions without losing
//! or doubling a record.
//!
//! The windows close on event time only: the instances' out-of-orderness is
//! an hour (records of different partitions are read in any order), and
//! once every record has been read a "flush" record per partition, an hour
//! and a minute after the data, moves their watermark past every window.
//! The merging eddy closes its windows when the partials pause.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eddy_tests::Sandbox;
use eddy_tests::server::{Server, Ws};
use serde_json::{Value, json};

use crate::kafka::{PARTITIONS, Tansu, WAIT, get, now_ms, produce, serve, source};

/// Window length of the test windows.
const SIZE_MS: i64 = 10_000;

/// `n` events from `from`: ids `e<i>`, user `u<i % 13>`, page `/p<i % 3>`,
/// 50 ms apart from `base`; event i goes to partition `i % PARTITIONS`.
fn events(from: u64, n: u64, base: i64) -> Vec<(i32, String)> {
    (from..from + n)
        .map(|i| {
            let line = json!({
                "id": format!("e{i}"),
                "name": "hit",
                "distinct_id": format!("u{}", i % 13),
                "timestamp": base + i as i64 * 50,
                "properties": {"page": format!("/p{}", i % 3), "n": i, "ms": 1 + (i * 37) % 500},
            });
            ((i % PARTITIONS as u64) as i32, line.to_string())
        })
        .collect()
}

/// One record per partition an hour and a minute after the data: every
/// instance's watermark passes every window once it reads one.
fn flush(base: i64) -> Vec<(i32, String)> {
    (0..PARTITIONS)
        .map(|p| {
            let line = json!({"id": format!("flush{p}"), "name": "flush", "distinct_id": "f",
                              "timestamp": base + 3_660_000});
            (p, line.to_string())
        })
        .collect()
}

/// The window every instance runs (`partials` on the ones that publish).
fn window(partials: bool) -> String {
    format!(
        r#"
[[windows]]
name = "pv"
kind = "tumbling"
size = "{SIZE_MS}ms"
group_by = ["properties.page"]
filter = {{ names = ["hit"] }}
out_of_orderness = "1h"
idle_timeout = "2h"
aggregates = ["count", "sum(properties.n) as total", "min(properties.n) as low",
              "max(properties.n) as high", "p95(properties.ms) as p95",
              "distinct(distinct_id) as users"]
partials = {partials}
"#
    )
}

fn sink(bootstrap: &str, channel: &str, topic: &str) -> String {
    format!(
        r#"
[[sinks.kafka]]
brokers = "{bootstrap}"
channel = "{channel}"
topic = "{topic}"
"#
    )
}

const WAL: &str = r#"
[wal]
checkpoint_interval_ms = 200
dedup_horizon_ms = 0
"#;

/// Checkpoints only when asked: a revocation must ask for the checkpoint it
/// commits, or the next owner would count again what this one counted.
const WAL_RARE: &str = r#"
[wal]
checkpoint_interval_ms = 3600000
dedup_horizon_ms = 0
"#;

/// An instance of group `eddy` on topic `events` publishing its partial
/// results to `partials` and its events to `out-events`.
fn instance(sb: &Sandbox, bootstrap: &str) -> PathBuf {
    instance_with(sb, bootstrap, WAL)
}

fn instance_with(sb: &Sandbox, bootstrap: &str, wal: &str) -> PathBuf {
    member(sb, bootstrap, wal, "eddy")
}

/// [`instance_with`], in consumer group `group`.
fn member(sb: &Sandbox, bootstrap: &str, wal: &str, group: &str) -> PathBuf {
    sb.config(&format!(
        "{wal}{}{}{}{}",
        window(true),
        source(bootstrap, "events", group, "eddy"),
        sink(bootstrap, "windows/pv", "partials"),
        sink(bootstrap, "events", "out-events"),
    ))
}

/// One instance alone over the whole topic, in a group of its own.
fn single(sb: &Sandbox, bootstrap: &str) -> PathBuf {
    sb.config(&format!(
        "{WAL}{}{}",
        window(false),
        source(bootstrap, "events", "single", "eddy")
    ))
}

/// The merging eddy.
fn merger(sb: &Sandbox, bootstrap: &str) -> PathBuf {
    merger_idle(sb, bootstrap, "8s")
}

/// The merging eddy, closing its windows once partials pause for `idle`.
fn merger_idle(sb: &Sandbox, bootstrap: &str, idle: &str) -> PathBuf {
    sb.config(&format!(
        r#"{WAL}
{}
[[windows]]
name = "pv_global"
kind = "tumbling"
size = "{SIZE_MS}ms"
group_by = ["properties.page"]
out_of_orderness = "1h"
idle_timeout = "{idle}"
aggregates = ["count", "sum(properties.n) as total", "min(properties.n) as low",
              "max(properties.n) as high", "p95(properties.ms) as p95",
              "distinct(distinct_id) as users"]
merge_from = "pv"
"#,
        source(bootstrap, "partials", "merge", "partials")
    ))
}

/// Wait until `cond` holds for `/v1/stats` of every server, or fail with
/// their stats.
async fn wait_stats(
    servers: &[&Server],
    what: &str,
    cond: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let mut stats = Vec::new();
        for s in servers {
            stats.push(get(s, "/v1/stats").await);
        }
        if cond(&stats) {
            return stats;
        }
        assert!(
            started.elapsed() < WAIT * 2,
            "{what}: not within {:?}; stats: {}",
            WAIT * 2,
            Value::Array(stats)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn kafka<'a>(stats: &'a Value, field: &str) -> &'a Value {
    &stats["kafka"][0][field]
}

fn assigned(stats: &Value) -> usize {
    kafka(stats, "assigned").as_array().map_or(0, Vec::len)
}

fn consumed(stats: &Value) -> u64 {
    kafka(stats, "events").as_u64().unwrap_or(0)
}

/// Closed results of `window` on `server`, by (start, page).
async fn closed(server: &Server, window: &str) -> BTreeMap<(i64, String), Value> {
    tokio::time::sleep(Duration::from_millis(60)).await;
    let h = get(
        server,
        &format!("/v1/windows/{window}/history?limit=100000"),
    )
    .await;
    h["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let key = (
                r["start"].as_i64().unwrap(),
                r["group"]["properties.page"].as_str().unwrap().to_owned(),
            );
            (key, r["values"].clone())
        })
        .collect()
}

fn total(results: &BTreeMap<(i64, String), Value>) -> u64 {
    results.values().map(|v| v["count"].as_u64().unwrap()).sum()
}

/// Wait until `window` on `server` has closed results counting `n` events.
async fn wait_closed(server: &Server, window: &str, n: u64) -> BTreeMap<(i64, String), Value> {
    let started = Instant::now();
    loop {
        let r = closed(server, window).await;
        let c = total(&r);
        assert!(
            c <= n,
            "{window}: {c} events counted, more than the {n} produced"
        );
        if c == n {
            return r;
        }
        if started.elapsed() > WAIT * 2 {
            let stats = get(server, "/v1/stats").await;
            let windows = get(server, "/v1/windows").await;
            panic!(
                "{window}: only {c} of {n} events in closed windows; stats: {stats}; windows: {windows}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What `pv` must publish for events `0..n` (count, total, low, high), by
/// (start, page), computed from the input.
fn expected(n: u64, base: i64) -> BTreeMap<(i64, String), (u64, u64, u64, u64)> {
    let mut out: BTreeMap<(i64, String), (u64, u64, u64, u64)> = BTreeMap::new();
    for i in 0..n {
        let ts = base + i as i64 * 50;
        let start = ts.div_euclid(SIZE_MS) * SIZE_MS;
        let e = out
            .entry((start, format!("/p{}", i % 3)))
            .or_insert((0, 0, u64::MAX, 0));
        e.0 += 1;
        e.1 += i;
        e.2 = e.2.min(i);
        e.3 = e.3.max(i);
    }
    out
}

/// A result's count, total, low and high.
fn counts(v: &Value) -> (u64, u64, u64, u64) {
    let get = |k: &str| v[k].as_u64().unwrap();
    (get("count"), get("total"), get("low"), get("high"))
}

/// `merged` has exactly the windows and groups of `want`, with its counts.
fn assert_counts(
    merged: &BTreeMap<(i64, String), Value>,
    want: &BTreeMap<(i64, String), (u64, u64, u64, u64)>,
) {
    assert_eq!(
        merged.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (key, v) in merged {
        assert_eq!(counts(v), want[key], "{key:?}: {v}");
    }
}

/// An instance started on `cfg`, once it holds all four partitions.
async fn sole_member(sb: &Sandbox, cfg: &Path) -> Server {
    let server = serve(sb, cfg);
    wait_stats(&[&server], "the first member holds every partition", |s| {
        assigned(&s[0]) == 4
    })
    .await;
    server
}

/// The merged results equal the single instance's: exactly for count, sum,
/// min and max (and those equal what the input gives); p95 within the
/// sketch's 1 % and distinct users within HyperLogLog's error (both are
/// exactly equal in practice: merged sketches hold what one sketch fed
/// every value holds).
fn assert_same(
    merged: &BTreeMap<(i64, String), Value>,
    one: &BTreeMap<(i64, String), Value>,
    want: &BTreeMap<(i64, String), (u64, u64, u64, u64)>,
) {
    assert_eq!(
        merged.keys().collect::<Vec<_>>(),
        one.keys().collect::<Vec<_>>(),
        "the same windows and groups"
    );
    for (key, m) in merged {
        let o = &one[key];
        for k in ["count", "total", "low", "high"] {
            assert_eq!(m[k], o[k], "{key:?} {k}: merged {m} single {o}");
        }
        let w = want[key];
        assert_eq!(counts(m), w, "{key:?}: merged {m}, from the input {w:?}");
        let (p, q) = (m["p95"].as_f64().unwrap(), o["p95"].as_f64().unwrap());
        assert!(
            (p - q).abs() <= 0.02 * q,
            "{key:?} p95: merged {p} single {q}"
        );
        let (a, b) = (m["users"].as_f64().unwrap(), o["users"].as_f64().unwrap());
        assert!(
            (a - b).abs() <= 0.05 * b,
            "{key:?} users: merged {a} single {b}"
        );
    }
}

async fn topics(tansu: &Tansu) {
    for t in ["events", "partials", "out-events"] {
        tansu.create_topic(t).await;
    }
}

/// Both members hold partitions, and between them all four.
fn split(stats: &[Value]) -> bool {
    stats.iter().all(|s| assigned(s) > 0) && stats.iter().map(assigned).sum::<usize>() == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_merged_give_one_instances_results_and_their_rebalance_is_seen() {
    let tansu = Tansu::start().await;
    topics(&tansu).await;
    let bs = tansu.bootstrap.clone();
    let (sa, sb_, sr, sm) = (
        Sandbox::new(),
        Sandbox::new(),
        Sandbox::new(),
        Sandbox::new(),
    );
    let m = serve(&sm, &merger(&sm, &bs));
    let r = serve(&sr, &single(&sr, &bs));
    let a = serve(&sa, &instance(&sa, &bs));
    let mut plugins = Ws::connect(&a.ws_url()).await;
    plugins.subscribe("plugins", json!({})).await;
    wait_stats(&[&a], "the first member holds every partition", |s| {
        assigned(&s[0]) == 4
    })
    .await;
    let b = serve(&sb_, &instance(&sb_, &bs));
    // Two live members of one group share the partitions.
    let stats = wait_stats(&[&a, &b], "two members split the partitions", split).await;
    let mut owned: Vec<String> = stats
        .iter()
        .flat_map(|s| kafka(s, "assigned").as_array().cloned().unwrap_or_default())
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    owned.sort();
    assert_eq!(owned, ["events/0", "events/1", "events/2", "events/3"]);
    // The first member saw its partitions revoked and some assigned again:
    // counted, listed and announced on `plugins`.
    let sa_stats = &stats[0];
    assert!(
        kafka(sa_stats, "partitions_revoked").as_u64().unwrap() >= 4,
        "{sa_stats}"
    );
    let kinds: Vec<&str> = kafka(sa_stats, "rebalance_events")
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.windows(2).any(|w| w == ["revoked", "assigned"]),
        "{kinds:?}"
    );
    let mut notices = Vec::new();
    while !notices.iter().any(|n: &Value| {
        n["data"]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("revoked"))
    }) {
        let msg = plugins.messages(1, WAIT).await.remove(0);
        notices.push(msg);
    }
    for n in &notices {
        assert_eq!(n["data"]["plugin"], "kafka:eddy", "{n}");
        assert_eq!(n["data"]["kind"], "rebalanced", "{n}");
    }
    let metrics = eddy_tests::server::get_text(a.url("/metrics")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("eddy_kafka_partitions_revoked_total{") && !l.ends_with(" 0")),
        "{metrics}"
    );

    let n = 800;
    let base = (now_ms() - 7_200_000).div_euclid(SIZE_MS) * SIZE_MS;
    let producer = tansu.one_per_batch_producer();
    produce(&producer, "events", &events(0, n, base)).await;
    // Every record read (by the two members together, and by the single
    // instance) before the flush, so none is late.
    wait_stats(&[&a, &b, &r], "every record read", |s| {
        consumed(&s[0]) + consumed(&s[1]) == n && consumed(&s[2]) == n
    })
    .await;
    produce(&producer, "events", &flush(base)).await;

    let one = wait_closed(&r, "pv", n).await;
    let merged = wait_closed(&m, "pv_global", n).await;
    assert_same(&merged, &one, &expected(n, base));
    // Each member published partial results of its own share.
    let stats = wait_stats(&[&a, &b, &m], "partials delivered and merged", |s| {
        let delivered: u64 = s[..2]
            .iter()
            .map(|x| x["kafka_sinks"][0]["delivered"].as_u64().unwrap_or(0))
            .sum();
        delivered > 0 && kafka(&s[2], "partials").as_u64() == Some(delivered)
    })
    .await;
    for s in &stats[..2] {
        assert!(consumed(s) > 0 && consumed(s) < n + 4, "{s}");
        assert_eq!(s["kafka_sinks"][0]["failed"], 0, "{s}");
        assert_eq!(s["kafka_sinks"][0]["dropped"], 0, "{s}");
    }
    assert_eq!(kafka(&stats[2], "rejected"), 0, "{}", stats[2]);
    let mw = get(&m, "/v1/windows").await;
    assert_eq!(mw["windows"][0]["stats"]["late_events"], 0, "{mw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_joining_mid_stream_loses_and_doubles_nothing() {
    let tansu = Tansu::start().await;
    topics(&tansu).await;
    let bs = tansu.bootstrap.clone();
    let (sa, sb_, sm) = (Sandbox::new(), Sandbox::new(), Sandbox::new());
    let m = serve(&sm, &merger(&sm, &bs));
    // No periodic checkpoint during the test: each revocation gets the
    // checkpoint it commits by asking for it.
    let a = sole_member(&sa, &instance_with(&sa, &bs, WAL_RARE)).await;
    let n = 1_200;
    let base = (now_ms() - 7_200_000).div_euclid(SIZE_MS) * SIZE_MS;
    let producer = tansu.one_per_batch_producer();
    // A third of the stream before the second instance starts, the rest
    // in small steps while it joins and the group rebalances.
    produce(&producer, "events", &events(0, 400, base)).await;
    wait_stats(&[&a], "the first member reads", |s| consumed(&s[0]) > 0).await;
    let b = serve(&sb_, &instance_with(&sb_, &bs, WAL_RARE));
    let mut from = 400;
    while from < n {
        produce(&producer, "events", &events(from, 40, base)).await;
        from += 40;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = wait_stats(&[&a, &b], "two members split the partitions", split).await;
    assert!(
        kafka(&stats[0], "partitions_revoked").as_u64().unwrap() >= 4,
        "{}",
        stats[0]
    );
    // The first revocation committed what it had counted: the checkpoint
    // it asked for is durable (there is no periodic one).
    let first_revoked = kafka(&stats[0], "rebalance_events")
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "revoked")
        .cloned()
        .unwrap();
    assert!(first_revoked["waited_ms"].is_u64(), "{first_revoked}");
    assert!(
        first_revoked["committed"]
            .as_object()
            .is_some_and(|c| !c.is_empty()),
        "{first_revoked}"
    );
    wait_stats(&[&a, &b], "every record read", |s| {
        consumed(&s[0]) + consumed(&s[1]) >= n
    })
    .await;
    produce(&producer, "events", &flush(base)).await;

    // Every event reached exactly one instance's `events` output.
    let bootstrap = tansu.bootstrap.clone();
    let published = tokio::task::spawn_blocking(move || {
        crate::kafka::consume_all(&bootstrap, "out-events", n as usize + 4)
    })
    .await
    .unwrap();
    let mut seen = BTreeSet::new();
    for (_, v) in &published {
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(seen.insert(id.clone()), "{id} published twice");
    }
    let want: BTreeSet<String> = (0..n)
        .map(|i| format!("e{i}"))
        .chain((0..PARTITIONS).map(|p| format!("flush{p}")))
        .collect();
    assert_eq!(seen, want, "every event once");
    let s = wait_stats(&[&a, &b], "both instances read", |s| {
        consumed(&s[0]) > 0 && consumed(&s[1]) > 0
    })
    .await;
    assert_eq!(
        consumed(&s[0]) + consumed(&s[1]),
        n + 4,
        "nothing read twice"
    );

    // And the merged windows hold every event once.
    let merged = wait_closed(&m, "pv_global", n).await;
    assert_counts(&merged, &expected(n, base));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_after_publishing_publishes_again_and_the_merger_counts_it_once() {
    let tansu = Tansu::start().await;
    topics(&tansu).await;
    let bs = tansu.bootstrap.clone();
    let (sa, sm) = (Sandbox::new(), Sandbox::new());
    // The merger keeps its windows open until the partials pause for 30 s,
    // so the ones published again after the restart meet the originals.
    let m = serve(&sm, &merger_idle(&sm, &bs, "30s"));
    // Only the checkpoint written at start: after the kill, recovery
    // replays everything the instance did, its partials included.
    let mut a = sole_member(&sa, &member(&sa, &bs, WAL_RARE, "eddy")).await;
    let n = 400;
    let base = (now_ms() - 7_200_000).div_euclid(SIZE_MS) * SIZE_MS;
    let producer = tansu.one_per_batch_producer();
    produce(&producer, "events", &events(0, n, base)).await;
    wait_stats(&[&a], "every record read", |s| consumed(&s[0]) == n).await;
    produce(&producer, "events", &flush(base)).await;
    let delivered = |s: &Value| s["kafka_sinks"][0]["delivered"].as_u64().unwrap_or(0);
    let stats = wait_stats(&[&a, &m], "partials delivered and read", |s| {
        delivered(&s[0]) > 0 && kafka(&s[1], "partials").as_u64() == Some(delivered(&s[0]))
    })
    .await;
    let first = delivered(&stats[0]);
    tokio::task::block_in_place(|| a.kill());
    // Restarted in a group of its own (Tansu never expires the killed
    // member), it replays its log and its sink publishes every partial of
    // the replay again.
    let a = serve(&sa, &member(&sa, &bs, WAL_RARE, "eddy-again"));
    let stats = wait_stats(&[&a, &m], "the partials published again and read", |s| {
        delivered(&s[0]) >= first && kafka(&s[1], "partials").as_u64() >= Some(2 * first)
    })
    .await;
    assert_eq!(delivered(&stats[0]), first, "{}", stats[0]);
    // Each merged once: the second copies are dead letters saying why.
    let merged = wait_closed(&m, "pv_global", n).await;
    assert_counts(&merged, &expected(n, base));
    let ms = get(&m, "/v1/stats").await;
    assert_eq!(ms["dead_lettered"], first, "{ms}");
    let mw = get(&m, "/v1/windows").await;
    assert_eq!(mw["windows"][0]["stats"]["late_events"], 0, "{mw}");
}
