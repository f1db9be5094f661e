//! `eddy serve`: HTTP ingest, WebSocket and SSE streams, and the REST API.
//!
//! [`app`] builds the router from an [`AppState`] (tests drive it without a
//! socket); [`run`] wires everything together — plugins, the pipeline thread,
//! the hub, the listener — and serves until SIGINT or SIGTERM, then drains.
//!
//! Connections are served by hyper directly rather than `axum::serve`, for
//! the one setting axum does not expose: a header read timeout, so
//! connections that dribble their headers (slowloris) are dropped instead of
//! piling up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

mod alerts;
mod api;
mod auth;
mod dashboard;
mod error;
mod ingest;
mod patterns;
mod prometheus;
mod reload;
mod rest;
mod sse;
mod streams;
mod view;
mod windows;
mod ws;

pub use auth::{Access, Keys};
pub use error::ApiError;

use crate::config::Config;
use crate::engine::input::{RECORD_VERSION, RecordHeader, Recorder};
use crate::engine::{Engine, EngineOptions};
use crate::hub::{Hub, HubConfig};
use crate::plugin::clock::VirtualClock;
use crate::plugin::{PluginEngine, Registry, watch as plugin_watch};
use crate::runner::{HubSink, IngestQueue, Runner, RunnerOptions, Stats};
pub use view::View;

/// Channels every server has.
pub mod channels {
    /// Events after the pipeline.
    pub const EVENTS: &str = "events";
    /// Plugin lifecycle notices.
    pub const PLUGINS: &str = "plugins";
    /// Pipeline counters, once per `streams.stats_interval_ms`.
    pub const STATS: &str = "stats";
    /// Events a failing stage sent to the dead-letter output.
    pub const DEAD_LETTERS: &str = "dead-letters";
}

/// Everything a request handler may need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Channels.
    pub hub: Hub,
    /// The ingest queue.
    pub queue: IngestQueue,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Answers from the engine thread (windows, live views, stages).
    pub view: View,
    /// Plugins.
    pub registry: Arc<Registry>,
    /// API keys.
    pub keys: Keys,
    /// Open WebSocket and SSE connections.
    pub connections: Arc<AtomicU64>,
    /// Flips to `true` when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Prometheus exposition.
    pub metrics: Option<PrometheusHandle>,
    /// When the server started.
    pub started: Instant,
    /// Next WebSocket connection number.
    pub next_connection: Arc<AtomicU64>,
    /// Requests inside an ingest handler right now.
    pub ingest_requests: Arc<AtomicU64>,
    /// Bytes those requests hold (see `ingest.max_inflight_bytes`).
    pub ingest_bytes: Arc<AtomicU64>,
    /// The configuration file, for reloads (`None`: the embedded default).
    pub config_path: Option<PathBuf>,
    /// The write-ahead log's figures (`None`: `[wal] enabled = false`).
    pub wal: Option<Arc<crate::durability::WalStatus>>,
    /// The alert notifiers of `[notify]` (`None`: no target configured).
    pub notifiers: Option<Arc<crate::alert::notify::Notifiers>>,
    /// The `[[sources.kafka]]` running, in order.
    pub kafka: Arc<Vec<crate::source::kafka::KafkaSource>>,
    /// The `[[sinks.kafka]]` running, in order.
    pub kafka_sinks: Arc<Vec<crate::sink::kafka::KafkaSink>>,
    /// `/openapi.json`, built on its first request: it depends only on the
    /// configuration the server started with.
    pub openapi: Arc<std::sync::OnceLock<axum::body::Bytes>>,
}

/// The router: every route eddy serves, each registered with its OpenAPI
/// operation ([`api::routes`]), and the dashboard's files.
pub fn app(state: AppState) -> Router {
    let (api, _) = api::routes().split_for_parts();
    api.merge(dashboard::router())
        .fallback(rest::not_found)
        .method_not_allowed_fallback(rest::method_not_allowed)
        .with_state(state)
}

/// Options of `eddy serve` that override the configuration.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--record FILE`: write every engine input there.
    pub record: Option<PathBuf>,
    /// The configuration file (`--config`), read again on a reload.
    pub config_path: Option<PathBuf>,
}

/// Load plugins, start the pipeline and serve until SIGINT/SIGTERM; then
/// stop accepting, drain queued events through the pipeline to subscribers,
/// and return.
pub async fn run(mut config: Config, options: ServeOptions) -> anyhow::Result<()> {
    if let Some(listen) = options.listen {
        config.server.listen = listen;
    }
    let config = Arc::new(config);
    let metrics = install_metrics();

    // Plugins read the engine's clock: the wall time stamped on each batch.
    let clock = VirtualClock::new();
    let plugin_engine =
        PluginEngine::with_virtual_clock(clock.clone()).context("starting the plugin engine")?;
    let registry = Registry::new(
        plugin_engine,
        config.runtime.clone(),
        config.plugins_dir.clone(),
    );
    if options.record.is_some() {
        registry.keep_bytes();
    }
    if config.wal.enabled {
        let versions = config.data_dir.join(crate::durability::PLUGIN_VERSIONS_DIR);
        registry
            .use_version_store(versions.clone(), true)
            .with_context(|| {
                format!(
                    "data_dir {}: creating its folder of plugin versions {}",
                    config.data_dir.display(),
                    versions.display()
                )
            })?;
    }
    let loaded = registry
        .load_all()
        .with_context(|| format!("reading plugins folder {}", config.plugins_dir.display()))?;
    tracing::info!(plugins = loaded, dir = %config.plugins_dir.display(), "plugins loaded");

    let engine_options = EngineOptions {
        first_seq: first_seq(),
        seed: rand::random(),
        plugins: registry.live_versions(),
    };
    let recorder = match &options.record {
        None => None,
        Some(path) => {
            let header = RecordHeader {
                eddy_record: RECORD_VERSION,
                first_seq: engine_options.first_seq,
                seed: engine_options.seed,
                plugins: engine_options.plugins.clone(),
            };
            let recorder = Recorder::create(path, &header)?;
            for (name, hash) in &engine_options.plugins {
                if let Some(bytes) = registry.version(name, hash).and_then(|c| c.bytes.clone()) {
                    recorder.keep_plugin(hash, &bytes)?;
                }
            }
            tracing::info!(record = %path.display(), "recording every engine input");
            Some(recorder)
        }
    };
    let opened = if config.wal.enabled {
        Some(
            crate::durability::open(&config, registry.clone(), clock.clone(), &engine_options)
                .context("opening the data directory")?,
        )
    } else {
        None
    };
    let fresh = match opened {
        Some(_) => None,
        None => Some(Engine::new(
            &config,
            registry.clone(),
            clock,
            &engine_options,
        )?),
    };

    let hub = Hub::new(HubConfig {
        replay_capacity: usize::try_from(config.streams.replay_capacity).unwrap_or(usize::MAX),
        client_queue: usize::try_from(config.streams.client_queue).unwrap_or(usize::MAX),
        replay_bytes: usize::try_from(config.streams.replay_bytes).unwrap_or(usize::MAX),
        first_seq: engine_options.first_seq,
    });
    let wal_status = opened
        .as_ref()
        .map(|_| Arc::new(crate::durability::WalStatus::default()));
    let (engine, mut sink, wal, wal_seq) = match (opened, fresh, &wal_status) {
        (Some(o), _, Some(status)) => {
            // Replayed inputs publish on the hub, so sequence numbers
            // continue and subscribers resuming with `since` catch up.
            let mut sink = HubSink::register(&hub, &o.engine);
            let (engine, wal, seq) = o
                .finish(&mut sink, &config.wal, status.clone())
                .context("recovering from the write-ahead log")?;
            (engine, sink, Some(wal), seq)
        }
        (_, Some(engine), _) => {
            let sink = HubSink::register(&hub, &engine);
            (engine, sink, None, 0)
        }
        _ => anyhow::bail!("no engine was started (a bug)"),
    };
    // Notifiers start after recovery: the transitions a replay re-publishes
    // are not notified again; what the engine holds is sent once instead.
    let notify = &config.notify;
    let notifiers = if notify.alertmanagers.is_empty() && notify.webhooks.is_empty() {
        None
    } else {
        let n = crate::alert::notify::Notifiers::spawn(notify, &tokio::runtime::Handle::current())
            .context("starting the alert notifiers ([notify])")?;
        let n = Arc::new(n);
        sink.set_notifiers(n.clone(), &engine);
        tracing::info!(
            alertmanagers = notify.alertmanagers.len(),
            webhooks = notify.webhooks.len(),
            "alert notifiers started"
        );
        Some(n)
    };
    let _watcher = plugin_watch::watch(registry.clone(), config.runtime.reload_debounce)
        .with_context(|| format!("watching {}", config.plugins_dir.display()))?;

    let stats = Arc::new(Stats::default());
    // Kafka sources start where the engine stands after recovery.
    let mut kafka_start = Vec::new();
    let mut rewinds = std::collections::BTreeMap::new();
    for (i, k) in config.sources.kafka.iter().enumerate() {
        let source = crate::config::KAFKA_SOURCE_BASE + i as u32;
        let (tx, rx) = std::sync::mpsc::channel();
        rewinds.insert(source, tx);
        let start = crate::source::kafka::StartAt {
            source,
            position: engine.positions().get(&source).copied().unwrap_or(0),
            offsets: engine.kafka_offsets().clone(),
        };
        kafka_start.push((k.clone(), start, rx));
    }
    let (queue, source_queue, queries, runner) = Runner::start(
        engine,
        sink,
        registry.clone(),
        stats.clone(),
        RunnerOptions {
            batch_size: config.pipeline.batch_size,
            queue_events: config.ingest.queue_events,
            queue_bytes: config.ingest.queue_bytes,
            recorder,
            wal,
            wal_seq,
            rewinds,
        },
    )
    .context("starting the engine thread")?;
    let mut kafka = Vec::new();
    for (k, start, rx) in kafka_start {
        let Some(status) = &wal_status else {
            anyhow::bail!("sources.kafka needs the write-ahead log ([wal] enabled = true)");
        };
        let topics = k.topics.join(",");
        let source = crate::source::kafka::KafkaSource::start(
            k,
            start,
            config.ingest.limits(),
            config.pipeline.batch_size,
            source_queue.clone(),
            status.clone(),
            rx,
        )
        .with_context(|| format!("starting the Kafka source of {topics}"))?;
        kafka.push(source);
    }
    let kafka = Arc::new(kafka);
    // Kafka sinks read their channels from what recovery replayed on
    // (pattern channels of plugins register once the plugin is loaded: name
    // those in `patterns/<name>` only for declared patterns, or expect a
    // startup error while the plugin is missing).
    let mut kafka_sinks = Vec::new();
    for k in &config.sinks.kafka {
        let topic = k.topic.clone();
        kafka_sinks.push(
            crate::sink::kafka::KafkaSink::start(k.clone(), &hub)
                .with_context(|| format!("starting the Kafka sink to {topic}"))?,
        );
    }
    let kafka_sinks = Arc::new(kafka_sinks);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = AppState {
        config: config.clone(),
        hub: hub.clone(),
        queue: queue.clone(),
        view: View::new(
            queries,
            stats.clone(),
            config.server.large_response_bytes_per_s,
        ),
        stats: stats.clone(),
        registry,
        keys: Keys::new(config.auth.clone()),
        connections: Arc::new(AtomicU64::new(0)),
        shutdown: shutdown_rx.clone(),
        metrics,
        started: Instant::now(),
        next_connection: Arc::new(AtomicU64::new(1)),
        ingest_requests: Arc::new(AtomicU64::new(0)),
        ingest_bytes: Arc::new(AtomicU64::new(0)),
        config_path: options.config_path.clone(),
        wal: wal_status,
        notifiers,
        kafka: kafka.clone(),
        kafka_sinks: kafka_sinks.clone(),
        openapi: Arc::default(),
    };
    reload::spawn_sighup(state.clone());
    tokio::spawn(rest::publish_stats(
        hub.register(channels::STATS),
        state.clone(),
    ));

    let listener = bind(config.server.listen)
        .with_context(|| format!("listening on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    // One line on stdout for people and scripts (tests read the port here).
    println!("eddy listening on http://{addr}");

    let router = app(state.clone());
    let graceful = accept_loop(listener, router, &config, shutdown_signal()).await;

    // One deadline for the whole shutdown. First let requests already
    // inside an ingest handler finish (they may still be accepted), then
    // close the queue, let the pipeline drain it to the channels, and only
    // then tell streaming clients to catch up and close.
    let grace = config.server.shutdown_grace;
    let deadline = tokio::time::Instant::now() + grace;
    tracing::info!(
        ?grace,
        "shutting down: finishing requests, then draining the ingest queue"
    );
    wait_until(deadline, || {
        state.ingest_requests.load(Ordering::Acquire) == 0
    })
    .await;
    for k in kafka.iter() {
        k.stop();
    }
    queue.close();
    drop(queue);
    drop(source_queue);
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let drained = tokio::task::spawn_blocking(move || runner.join_within(left))
        .await
        .unwrap_or(false);
    if !drained {
        tracing::warn!(
            ?grace,
            queued = stats.snapshot().queue_depth,
            "the pipeline did not drain within the shutdown grace"
        );
    }
    // The engine wrote its final checkpoint: commit its offsets and leave
    // the group; send what the sinks still hold.
    if !kafka.is_empty() || !kafka_sinks.is_empty() {
        let (sources, sinks) = (kafka.clone(), kafka_sinks.clone());
        let _ = tokio::task::spawn_blocking(move || {
            for k in sources.iter() {
                k.finish();
            }
            for k in sinks.iter() {
                k.finish();
            }
        })
        .await;
    }
    let _ = shutdown_tx.send(true);
    wait_until(deadline, || state.connections.load(Ordering::Acquire) == 0).await;
    drop(state);
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if tokio::time::timeout(left, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "some connections were still open at the end of the grace"
        );
    }
    tracing::info!(stats = ?stats.snapshot(), "stopped");
    Ok(())
}

/// Poll `done` until it holds or `deadline` passes.
async fn wait_until(deadline: tokio::time::Instant, done: impl Fn() -> bool) {
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Kernel send buffer of every connection, requested on the listening
/// socket (accepted connections inherit it; Linux reserves twice this).
///
/// Left to autotuning, each connection's send buffer grows to
/// `net.ipv4.tcp_wmem`'s maximum (4 MiB by default) while a stream client
/// falls behind. Then 500 stalled WebSocket clients can pin 2 GiB of kernel
/// memory (1.5 GiB measured, past the default `tcp_mem` pressure mark),
/// which slows every other connection of the host, ingest included; a
/// client is up to 4 MiB (some 16,000 small messages) behind without the
/// hub's `client_queue` seeing it; and Linux wakes a blocked writer only
/// once about half of the buffer has drained, so a client that keeps
/// reading, just slowly, can look stalled to `streams.send_timeout_ms`.
/// 256 KiB still lets one connection
/// carry about 5 MB/s at 100 ms round trip, 500 MB/s on a LAN.
const SEND_BUFFER_BYTES: u32 = 256 * 1024;

/// Listen on `addr` like [`TcpListener::bind`] (address reuse, a backlog of
/// 1024), with [`SEND_BUFFER_BYTES`].
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SEND_BUFFER_BYTES)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    config: &Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> hyper_util::server::graceful::GracefulShutdown {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.server.header_read_timeout);
    let builder = builder.http1_only();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

/// Where this run's sequence numbers start: the start time in
/// microseconds. A later run starts above everything an earlier one
/// published unless the earlier one averaged over a million messages a
/// second on a channel for its whole life.
fn first_seq() -> u64 {
    u64::try_from(now_ms()).unwrap_or(0).saturating_mul(1000) + 1
}

/// Resolves once the server is shutting down (or its state is gone).
pub(crate) async fn shutting_down(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await.
    let _ = rx.wait_for(|down| *down).await.map(|_| ());
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn install_metrics() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
            // The engine's per-batch time as a histogram (buckets, not a
            // summary's quantiles) so it aggregates across instances, with
            // the buckets of the per-stage histogram.
            let builder = PrometheusBuilder::new().set_buckets_for_metric(
                Matcher::Full("eddy_pipeline_batch_seconds".to_owned()),
                &crate::plugin::meter::BATCH_SECONDS_BOUNDS,
            );
            match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}
