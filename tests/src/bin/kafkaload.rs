//! Kafka load for scripts/bench-kafka.
//!
//! `kafkaload create`: creates a topic.
//!
//! `kafkaload produce`: fills a topic with N `$pageview` events (the ones
//! `loadgen` posts), keyed by `distinct_id` so that each user's events stay
//! in order in one partition; prints how fast the broker took them.
//!
//! `kafkaload ready`: waits until eddy servers in one consumer group hold
//! every partition between them, each at least one (the group is settled).
//!
//! `kafkaload consumed`: watches `/v1/stats` of one or more eddy servers
//! consuming that topic until, together, they have read N events and
//! applied every batch (their queues are empty); prints the events/s from
//! the first event read to the last one applied. Start it before the
//! servers read anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use eddy_tests::load::pageview;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "kafkaload",
    about = "Kafka load for eddy's consumption benchmark"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

/// A topic and the brokers holding it.
#[derive(clap::Args)]
struct Topic {
    /// Bootstrap servers, host:port.
    #[arg(long)]
    brokers: String,
    #[arg(long, default_value = "events")]
    topic: String,
}

#[derive(Subcommand)]
enum Mode {
    /// Create a topic.
    Create {
        #[command(flatten)]
        at: Topic,
        #[arg(long, default_value_t = 4)]
        partitions: i32,
    },
    /// Fill a topic with page views.
    Produce {
        #[command(flatten)]
        at: Topic,
        #[arg(long, short = 'n', default_value_t = 1_000_000)]
        events: u64,
        /// The events' timestamps spread evenly over this many seconds,
        /// ending now.
        #[arg(long, default_value_t = 100)]
        span_s: u64,
    },
    /// Read a topic with a plain consumer and check its offsets: each
    /// partition's records should come in offset order with no gap.
    Verify {
        #[command(flatten)]
        at: Topic,
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        #[arg(long, short = 'n')]
        events: u64,
        /// librdkafka consumer settings, `name=value` (repeatable).
        #[arg(long = "set")]
        settings: Vec<String>,
    },
    /// Wait until eddy servers in one group hold every partition between
    /// them, each at least one.
    Ready {
        /// A server's base URL (repeat for each instance).
        #[arg(long = "server", required = true)]
        servers: Vec<String>,
        #[arg(long, default_value_t = 4)]
        partitions: usize,
        /// Give up after this long.
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
    /// Wait until eddy servers consuming the topic have applied N events.
    Consumed {
        /// A server's base URL (repeat for each instance).
        #[arg(long = "server", required = true)]
        servers: Vec<String>,
        #[arg(long, short = 'n')]
        events: u64,
        /// Give up after this long.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let result = match cli.mode {
        Mode::Create { at, partitions } => {
            rt.block_on(create_topic(&at.brokers, &at.topic, partitions))?;
            json!({"created": at.topic, "partitions": partitions})
        }
        Mode::Produce { at, events, span_s } => produce(&at.brokers, &at.topic, events, span_s)?,
        Mode::Verify {
            at,
            partitions,
            events,
            settings,
        } => verify(&at.brokers, &at.topic, partitions, events, &settings)?,
        Mode::Ready {
            servers,
            partitions,
            timeout_s,
        } => rt.block_on(ready(&servers, partitions, Duration::from_secs(timeout_s)))?,
        Mode::Consumed {
            servers,
            events,
            timeout_s,
        } => rt.block_on(consumed(&servers, events, Duration::from_secs(timeout_s)))?,
    };
    println!("{result}");
    Ok(())
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &opts,
        )
        .await?
    {
        if let Err((t, e)) = r {
            bail!("creating topic {t}: {e}");
        }
    }
    Ok(())
}

/// Counts delivery reports.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn produce(brokers: &str, topic: &str, events: u64, span_s: u64) -> anyhow::Result<Value> {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        // Well under a fetch's per-partition limit (1 MiB): Tansu 0.6
        // answers a fetch from inside a record batch with the batches after
        // it, so a batch a fetch returned only in part would lose its rest.
        .set("batch.size", "262144")
        // One produce request in flight: Tansu 0.6 with memory storage
        // stored concurrent requests to a partition out of offset order,
        // and served them so (consumers saw offsets go backwards).
        .set("max.in.flight.requests.per.connection", "1")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Deliveries::default())
        .context("creating the producer")?;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let first_ms = now_ms.saturating_sub(span_s * 1000);
    let run = now_ms;
    let started = Instant::now();
    let mut line = String::with_capacity(512);
    for i in 0..events {
        line.clear();
        let ts = first_ms + i * span_s * 1000 / events.max(1);
        pageview(&mut line, run, i, ts, None);
        let value = line.trim_end();
        // The user, as `pageview` names it: the record's key.
        let user = value
            .split("\"distinct_id\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_owned();
        let mut record = BaseRecord::to(topic).key(&user).payload(value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => bail!("producing: {e}"),
            }
        }
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(300))
        .context("flushing the producer")?;
    let seconds = started.elapsed().as_secs_f64();
    let ctx = producer.context();
    let (ok, failed) = (
        ctx.ok.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
    );
    if ok != events {
        bail!("{ok} of {events} records delivered, {failed} failed");
    }
    Ok(json!({
        "produced": ok,
        "seconds": round(seconds),
        "events_per_s": (ok as f64 / seconds).round(),
    }))
}

fn verify(
    brokers: &str,
    topic: &str,
    partitions: i32,
    events: u64,
    settings: &[String],
) -> anyhow::Result<Value> {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "kafkaload-verify")
        .set("enable.auto.commit", "false");
    for s in settings {
        let (k, v) = s.split_once('=').context("--set takes name=value")?;
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut next = vec![0i64; partitions as usize];
    let (mut read, mut gaps, mut skipped, mut backwards) = (0u64, 0u64, 0i64, 0u64);
    let mut idle = Instant::now();
    while read < events && idle.elapsed() < Duration::from_secs(10) {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        idle = Instant::now();
        read += 1;
        let p = m.partition() as usize;
        let o = m.offset();
        if o > next[p] {
            gaps += 1;
            skipped += o - next[p];
        } else if o < next[p] {
            backwards += 1;
        }
        next[p] = next[p].max(o + 1);
    }
    Ok(json!({
        "read": read, "gaps": gaps, "offsets_skipped": skipped,
        "backwards": backwards, "next": next,
    }))
}

/// `/v1/stats` of a server.
async fn stats(client: &reqwest::Client, server: &str) -> anyhow::Result<Value> {
    let url = format!("{}/v1/stats", server.trim_end_matches('/'));
    client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .json()
        .await
        .with_context(|| format!("GET {url}"))
}

async fn ready(servers: &[String], partitions: usize, timeout: Duration) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let started = Instant::now();
    loop {
        let mut held = Vec::new();
        for s in servers {
            let st = stats(&client, s).await?;
            held.push(st["kafka"][0]["assigned"].as_array().map_or(0, Vec::len));
        }
        if held.iter().sum::<usize>() == partitions && held.iter().all(|&n| n > 0) {
            return Ok(json!({
                "assigned": held,
                "after_s": round(started.elapsed().as_secs_f64()),
            }));
        }
        if started.elapsed() > timeout {
            bail!("after {timeout:?} the servers held {held:?} of {partitions} partitions");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The servers' events read from Kafka, and whether all their queues are
/// empty.
async fn read(client: &reqwest::Client, servers: &[String]) -> anyhow::Result<(u64, bool)> {
    let mut events = 0;
    let mut idle = true;
    for s in servers {
        let stats = stats(client, s).await?;
        events += stats["kafka"]
            .as_array()
            .map(|k| k.iter().filter_map(|k| k["events"].as_u64()).sum::<u64>())
            .unwrap_or(0);
        idle &= stats["queue_depth"] == 0;
    }
    Ok((events, idle))
}

async fn consumed(servers: &[String], events: u64, timeout: Duration) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let started = Instant::now();
    // When the first event was seen read (within a poll of when it was).
    let mut first: Option<Instant> = None;
    loop {
        let (n, idle) = read(&client, servers).await?;
        let now = Instant::now();
        if n > 0 && first.is_none() {
            first = Some(now);
        }
        if n >= events && idle {
            let t0 = first.unwrap_or(now);
            let seconds = now.duration_since(t0).as_secs_f64();
            return Ok(json!({
                "instances": servers.len(),
                "events": n,
                "first_read_after_s": round(t0.duration_since(started).as_secs_f64()),
                "seconds": round(seconds),
                "events_per_s": if seconds > 0.0 { (n as f64 / seconds).round() } else { f64::NAN },
            }));
        }
        if started.elapsed() > timeout {
            bail!("after {timeout:?} the servers had read {n} of {events} events");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
