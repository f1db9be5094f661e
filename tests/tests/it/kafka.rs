//! The Kafka source end to end: the real `eddy serve` consuming topics of a
//! real Kafka-protocol broker, Tansu, started here on an ephemeral port.
//!
//! Needs the `tansu` binary (installed by `scripts/setup` with `cargo
//! install`); without it the tests fail and say so — they are never
//! skipped.
//!
//! Tansu 0.6.0 never expires a member that was killed without leaving its
//! group, so a restart after SIGKILL joins under a new group id: eddy reads
//! from its checkpoint's offsets, not the group's, so nothing depends on the
//! group's committed offsets (which this also shows). And Tansu 0.6.0
//! serves nothing for a fetch that starts inside a record batch (checked:
//! 100 records produced as one batch, a fetch from offset 37 returns no
//! record), so the crash test produces one record per batch; against it,
//! a restart mid-batch lost the rest of that batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eddy_tests::Sandbox;
use eddy_tests::server::{Server, Ws, get_json, get_text, http, post_ndjson};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use crate::alertmanager::free_port;

pub(crate) const WAIT: Duration = Duration::from_secs(60);
/// The partitions of every test topic.
pub(crate) const PARTITIONS: i32 = 4;

/// The `tansu` binary: on `PATH`, or in cargo's bin folder where
/// `scripts/setup` installs it.
fn tansu_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|p| p.is_file())
    });
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let in_cargo = cargo_home
        .map(|h| h.join("bin").join("tansu"))
        .filter(|p| p.is_file());
    match on_path.or(in_cargo) {
        Some(path) => path,
        None => panic!(
            "the Tansu broker (`tansu`) was not found on PATH or in cargo's bin folder; \
             run scripts/setup, or install it with: cargo install tansu --version 0.6.0 \
             --locked --no-default-features --features dynostore"
        ),
    }
}

/// A Tansu broker with in-memory storage, in a temporary folder, killed
/// when dropped.
pub(crate) struct Tansu {
    child: Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
    /// `127.0.0.1:PORT`.
    pub(crate) bootstrap: String,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tansu {
    /// Start the broker and wait until it answers metadata requests.
    pub(crate) async fn start() -> Tansu {
        let bin = tansu_binary();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = dir.path().join("tansu.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            // Tansu reads these (and a ./.env) as defaults for its flags.
            .env_remove("CLUSTER_ID")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let tansu = Tansu {
            child,
            _dir: dir,
            log,
            bootstrap: format!("127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(&tansu.bootstrap).is_err() {
            assert!(
                started.elapsed() < WAIT,
                "tansu did not listen within {WAIT:?}; its log:\n{}",
                tansu.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tansu
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Create `topic` with [`PARTITIONS`] partitions.
    pub(crate) async fn create_topic(&self, topic: &str) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let made = admin
            .create_topics(
                &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
                &opts,
            )
            .await
            .unwrap();
        for r in made {
            r.unwrap_or_else(|(t, e)| {
                panic!("creating topic {t}: {e}; tansu log:\n{}", self.log())
            });
        }
    }

    /// A producer that acknowledges each record.
    pub(crate) fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("linger.ms", "5")
            .create()
            .unwrap()
    }

    /// A producer that sends every record as a batch of its own. Tansu
    /// 0.6.0 answers a fetch from an offset inside a record batch with the
    /// batches after it, so a consumer resuming mid-batch (eddy after a
    /// SIGKILL, at its checkpoint's offset) would never see the rest of
    /// that batch; with one record per batch every offset starts one.
    pub(crate) fn one_per_batch_producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("linger.ms", "0")
            .set("batch.num.messages", "1")
            .create()
            .unwrap()
    }
}

/// Produce `values` to `topic`, the i-th to partition `partition(i)`;
/// returns each record's (partition, offset).
pub(crate) async fn produce(
    producer: &FutureProducer,
    topic: &str,
    values: &[(i32, String)],
) -> Vec<(i32, i64)> {
    let sends = values.iter().map(|(p, v)| {
        producer.send(
            FutureRecord::<(), _>::to(topic).partition(*p).payload(v),
            Duration::from_secs(10),
        )
    });
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| {
            let d = r.unwrap_or_else(|(e, _)| panic!("producing: {e}"));
            (d.partition, d.offset)
        })
        .collect()
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `n` events: user `u{i % 13}`, `n` = i, timestamps a second apart ending
/// a minute ago; each on partition `i % PARTITIONS`.
fn events(from: u64, n: u64, base: i64) -> Vec<(i32, String)> {
    (from..from + n)
        .map(|i| {
            let line = format!(
                "{{\"id\":\"e{i}\",\"name\":\"hit\",\"distinct_id\":\"u{}\",\"timestamp\":{},\"properties\":{{\"n\":{i}}}}}",
                i % 13,
                base + i as i64
            );
            ((i % PARTITIONS as u64) as i32, line)
        })
        .collect()
}

/// One keyed window over everything: nothing fires and nothing is late
/// during a test, so its open groups are the whole result.
fn config(sb: &Sandbox, source: &str) -> PathBuf {
    sb.config(&format!(
        r#"
[time]
out_of_orderness = "1h"
idle_timeout = "1h"

# Deduplication by id is off, so a record applied twice would be counted
# twice: exactly-once has to come from the offsets.
[wal]
checkpoint_interval_ms = 200
dedup_horizon_ms = 0

[[windows]]
name = "users"
kind = "tumbling"
size = "1d"
group_by = ["distinct_id"]
aggregates = ["count", "sum(properties.n) as total", "max(properties.n) as top"]

{source}
"#
    ))
}

fn kafka_source(bootstrap: &str, topic: &str, group: &str) -> String {
    source(bootstrap, topic, group, "eddy")
}

/// A `[[sources.kafka]]` of `format` reading `topic` from the start, in
/// consumer group `group`, noticing a lost member within seconds.
pub(crate) fn source(bootstrap: &str, topic: &str, group: &str, format: &str) -> String {
    format!(
        r#"
[[sources.kafka]]
brokers = "{bootstrap}"
topics = ["{topic}"]
group_id = "{group}"
format = "{format}"
[sources.kafka.options]
"auto.offset.reset" = "earliest"
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500
"#
    )
}

pub(crate) fn serve(sb: &Sandbox, cfg: &Path) -> Server {
    tokio::task::block_in_place(|| sb.serve(cfg))
}

pub(crate) async fn get(server: &Server, path: &str) -> Value {
    get_json(server.url(path)).await
}

/// The open groups of window `users`, in a stable order.
async fn groups(server: &Server) -> Vec<Value> {
    // REST reuses an answer for up to 50 ms: read after it.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let v = get(server, "/v1/windows/users?limit=100000").await;
    let mut g = v["groups"].as_array().cloned().unwrap_or_default();
    g.sort_by_key(|x| x.to_string());
    g
}

fn count(groups: &[Value]) -> u64 {
    groups
        .iter()
        .map(|g| g["values"]["count"].as_u64().unwrap_or(0))
        .sum()
}

/// Wait until window `users` has counted `n` events; its groups.
async fn wait_counted(server: &Server, n: u64) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let g = groups(server).await;
        let c = count(&g);
        assert!(c <= n, "counted {c} events, more than the {n} produced");
        if c == n {
            return g;
        }
        if started.elapsed() > WAIT {
            let stats = get(server, "/v1/stats").await;
            panic!("only {c} of {n} events counted within {WAIT:?}; stats: {stats}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the window must hold for events `0..n`, computed from the input.
fn expected(n: u64) -> BTreeMap<String, (u64, u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for i in 0..n {
        let e = out.entry(format!("u{}", i % 13)).or_default();
        e.0 += 1;
        e.1 += i;
        e.2 = e.2.max(i);
    }
    out
}

fn as_map(groups: &[Value]) -> BTreeMap<String, (u64, u64, u64)> {
    groups
        .iter()
        .map(|g| {
            let v = &g["values"];
            let user = g["group"]["distinct_id"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| g["group"].to_string());
            (
                user,
                (
                    v["count"].as_u64().unwrap(),
                    v["total"].as_f64().unwrap() as u64,
                    v["top"].as_f64().unwrap() as u64,
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_a_four_partition_topic_give_the_windows_http_ingest_gives() {
    let tansu = Tansu::start().await;
    tansu.create_topic("events").await;
    let base = now_ms() - 3_600_000;
    let input = events(0, 600, base);
    produce(&tansu.producer(), "events", &input).await;

    let kafka_sb = Sandbox::new();
    let cfg = config(
        &kafka_sb,
        &kafka_source(&tansu.bootstrap, "events", "round-trip"),
    );
    let from_kafka = serve(&kafka_sb, &cfg);
    let got = wait_counted(&from_kafka, 600).await;

    let http_sb = Sandbox::new();
    let cfg = config(&http_sb, "");
    let from_http = serve(&http_sb, &cfg);
    let body: Vec<&str> = input.iter().map(|(_, l)| l.as_str()).collect();
    // No retry: the first answer must be 202.
    post_ndjson(&http(), &from_http.url(""), body.join("\n"), Duration::ZERO).await;
    let want = wait_counted(&from_http, 600).await;

    assert_eq!(got, want, "window results from Kafka and from HTTP differ");
    assert_eq!(as_map(&got), expected(600));
    let stats = get(&from_kafka, "/v1/stats").await;
    let k = &stats["kafka"][0];
    assert_eq!(k["records"], 600, "{stats}");
    assert_eq!(k["rejected"], 0, "{stats}");
    assert_eq!(k["assigned"].as_array().map(Vec::len), Some(4), "{stats}");
    // Every partition read to its end: lag 0 (refreshed every second).
    let started = Instant::now();
    loop {
        let stats = get(&from_kafka, "/v1/stats").await;
        let parts = stats["kafka"][0]["partitions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if parts.len() == 4 && parts.iter().all(|p| p["lag"] == 0) {
            let metrics = get_text(from_kafka.url("/metrics")).await;
            assert!(
                metrics.contains("eddy_kafka_partition_lag{group=\"round-trip\",topic=\"events\",partition=\"3\"} 0"),
                "{metrics}"
            );
            break;
        }
        assert!(started.elapsed() < WAIT, "lag never reached 0: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Back-pressure: a stage spinning 20 ms per batch of 100 behind a queue of
/// 200 events keeps the source pausing and resuming its partitions; every
/// record is still counted once. (Resuming where librdkafka thought the
/// partitions stood lost some records and repeated others.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_by_back_pressure_again_and_again_the_source_counts_every_record_once() {
    let tansu = Tansu::start().await;
    tansu.create_topic("events").await;
    let n = 6_000;
    let base = now_ms() - 3_600_000;
    produce(&tansu.producer(), "events", &events(0, n, base)).await;

    let sb = Sandbox::new();
    sb.install(eddy_tests::plugins::SLOW, "slow");
    let slow = format!(
        r#"
[ingest]
max_events_per_request = 100
queue_events = 200

[pipeline]
batch_size = 100

[[stages]]
plugin = "slow"
[stages.config]
ms = 20
{}"#,
        kafka_source(&tansu.bootstrap, "events", "paused")
    );
    let server = serve(&sb, &config(&sb, &slow));
    let got = wait_counted(&server, n).await;
    assert_eq!(as_map(&got), expected(n));
    let stats = get(&server, "/v1/stats").await;
    let k = &stats["kafka"][0];
    assert!(k["pauses"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(k["records"], n, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_record_is_dead_lettered_with_its_offset_and_its_partition_keeps_flowing() {
    let tansu = Tansu::start().await;
    tansu.create_topic("mixed").await;
    let base = now_ms() - 3_600_000;
    let good = events(0, 40, base);
    // Partition 1 gets the poison between good records.
    let mut input: Vec<(i32, String)> = good[..20].to_vec();
    input.push((1, "not json at all".to_owned()));
    input.push((1, r#"{"id":"bad","name":"hit","distinct_id":7}"#.to_owned()));
    input.extend(good[20..].iter().cloned());
    let sb = Sandbox::new();
    let cfg = config(&sb, &kafka_source(&tansu.bootstrap, "mixed", "bad-records"));
    let server = serve(&sb, &cfg);
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.subscribe("dead-letters", json!({})).await;

    let at = produce(&tansu.producer(), "mixed", &input).await;
    let mut poison: Vec<(i32, i64)> = at[20..22].to_vec();
    poison.sort();
    let got = wait_counted(&server, 40).await;
    assert_eq!(as_map(&got), expected(40), "every good record counted once");

    let letters = ws.messages(2, WAIT).await;
    let mut seen: Vec<(i32, i64, String)> = letters
        .iter()
        .map(|m| {
            let d = &m["data"];
            assert_eq!(d["stage"], "kafka", "{m}");
            let p = &d["event"]["properties"];
            assert_eq!(p["topic"], "mixed", "{m}");
            (
                p["partition"].as_i64().unwrap() as i32,
                p["offset"].as_i64().unwrap(),
                d["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen.iter().map(|(p, o, _)| (*p, *o)).collect::<Vec<_>>(),
        poison,
        "the dead letters name the poisoned records' partition and offset"
    );
    assert!(
        seen.iter().any(|(_, _, r)| r.contains("distinct_id")),
        "the wrong type is named: {seen:?}"
    );
    let stats = get(&server, "/v1/stats").await;
    assert_eq!(stats["kafka"][0]["rejected"], 2, "{stats}");
    assert_eq!(stats["dead_lettered"], 2, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_sigkill_and_restarted_repeatedly_the_windows_count_every_record_once() {
    let tansu = Tansu::start().await;
    tansu.create_topic("crashy").await;
    let producer = tansu.one_per_batch_producer();
    let base = now_ms() - 3_600_000;
    let sb = Sandbox::new();
    sb.install(eddy_tests::plugins::SLOW, "slow");
    let mut seed = now_ms() as u64 | 1;
    println!("seed {seed}");
    let mut produced = 0u64;
    let mut mid_stream = 0;
    const WAVE: u64 = 2_000;
    const ROUNDS: u64 = 8;
    for round in 0..ROUNDS {
        produce(&producer, "crashy", &events(produced, WAVE, base)).await;
        produced += WAVE;
        // A new group id each start: Tansu never expires the killed member.
        // Batches of 50, each held about 20 ms by a stage: a wave takes
        // about 0.8 s, so a kill lands while it is being consumed.
        let cfg = config(
            &sb,
            &format!(
                "{}\n[pipeline]\nbatch_size = 50\n\n[[stages]]\nplugin = \"slow\"\n[stages.config]\nms = 20\n",
                kafka_source(&tansu.bootstrap, "crashy", &format!("crash-{round}"))
            ),
        );
        let mut server = serve(&sb, &cfg);
        // Kill it while it consumes the wave: once it has begun, after a
        // random moment.
        let started = Instant::now();
        while get(&server, "/v1/stats").await["kafka"][0]["records"] == 0
            && started.elapsed() < WAIT
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pause = (seed >> 33) % 200;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let before = count(&groups(&server).await);
        tokio::task::block_in_place(|| server.kill());
        if before < produced {
            mid_stream += 1;
        }
        println!(
            "round {round}: killed ~{pause} ms after it began, {before} of {produced} counted"
        );
    }
    assert!(
        mid_stream > 0,
        "no kill landed while eddy was consuming: the test did not test"
    );
    let bootstrap = tansu.bootstrap.clone();
    let n = produced as usize;
    tokio::task::spawn_blocking(move || broker_holds(&bootstrap, "crashy", n))
        .await
        .unwrap();
    let cfg = config(
        &sb,
        &kafka_source(&tansu.bootstrap, "crashy", "crash-final"),
    );
    let server = serve(&sb, &cfg);
    let got = wait_counted(&server, produced).await;
    assert_eq!(
        as_map(&got),
        expected(produced),
        "after {ROUNDS} kills, every record is counted exactly once"
    );
    // Nothing more arrives later (a duplicate would show up after a while).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&groups(&server).await), produced);
}

/// A consumer (group `group`, nothing committed) assigned every partition
/// of `topic` from its first record.
fn reader_from_start(bootstrap: &str, topic: &str, group: &str) -> rdkafka::consumer::BaseConsumer {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    consumer
}
/// Read every record of `topic` (all partitions, from the start) until
/// `n` have come: (key, value) pairs.
pub(crate) fn consume_all(bootstrap: &str, topic: &str, n: usize) -> Vec<(Option<String>, Value)> {
    use rdkafka::Message;
    let consumer = reader_from_start(bootstrap, topic, "reader");
    let mut out = Vec::new();
    let started = Instant::now();
    while out.len() < n {
        assert!(
            started.elapsed() < WAIT,
            "only {} of {n} records on {topic} within {WAIT:?}",
            out.len()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            let value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            out.push((key, value));
        }
    }
    out
}

/// Check that the broker itself serves `n` distinct records (by event id)
/// on `topic`, so a shortfall in eddy is eddy's.
fn broker_holds(bootstrap: &str, topic: &str, n: usize) {
    use rdkafka::Message;
    let consumer = reader_from_start(bootstrap, topic, "checker");
    let mut ids = std::collections::HashSet::new();
    let mut records = 0;
    let started = Instant::now();
    while ids.len() < n && started.elapsed() < WAIT {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            records += 1;
            let v: Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            ids.insert(v["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(
        ids.len(),
        n,
        "the broker itself serves {} distinct of the {n} records produced ({records} read): a broker fault, not eddy's",
        ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_sink_publishes_a_channel_keyed_and_counts_deliveries() {
    let tansu = Tansu::start().await;
    tansu.create_topic("published").await;
    let sb = Sandbox::new();
    let cfg = config(
        &sb,
        &format!(
            r#"
[[sinks.kafka]]
brokers = "{}"
channel = "events"
topic = "published"
"#,
            tansu.bootstrap
        ),
    );
    let server = serve(&sb, &cfg);
    let input = events(0, 50, now_ms() - 60_000);
    let body: Vec<&str> = input.iter().map(|(_, l)| l.as_str()).collect();
    // No retry: the first answer must be 202.
    post_ndjson(&http(), &server.url(""), body.join("\n"), Duration::ZERO).await;
    let bootstrap = tansu.bootstrap.clone();
    let got = tokio::task::spawn_blocking(move || consume_all(&bootstrap, "published", 50))
        .await
        .unwrap();
    let mut ids: Vec<String> = got
        .iter()
        .map(|(key, v)| {
            assert_eq!(
                key.as_deref(),
                v["distinct_id"].as_str(),
                "keyed by user: {v}"
            );
            v["id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("e{i}")).collect();
    want.sort();
    assert_eq!(ids, want, "every event once");
    let started = Instant::now();
    loop {
        let s = get(&server, "/v1/stats").await;
        let k = &s["kafka_sinks"][0];
        if k["delivered"] == 50 {
            assert_eq!(
                (k["failed"].as_u64(), k["dropped"].as_u64()),
                (Some(0), Some(0)),
                "{s}"
            );
            break;
        }
        assert!(started.elapsed() < WAIT, "deliveries not reported: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
