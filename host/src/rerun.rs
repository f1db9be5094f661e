//! `eddy replay`: re-run the history the write-ahead log still holds
//! through a fresh engine — typically under a changed configuration (a new
//! window, another pattern) — and write its results, without touching the
//! live server's state.
//!
//! The live log is never opened for writing: its segment files are copied
//! into a scratch folder first (opening a log repairs a torn tail, which
//! must not happen under a running server). Batches and ticks are applied
//! when their wall time lies in `[--from, --to)`; plugin changes are
//! applied as they come (so plugin versions switch as they did); logged
//! configuration reloads are not — the `--config` given is the
//! configuration of the whole re-run. Deduplication follows that
//! configuration's `[wal]`, so retried events count once, as they did live.
//! At the end every open window fires (`Finish`).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use crate::config::Config;
use crate::engine::input::FileLine;
use crate::engine::{Emitted, Engine, EngineOptions, Input, Sink};
use crate::plugin::clock::VirtualClock;
use crate::plugin::{PluginEngine, Registry};
use crate::wal::{Log, StdFs, WalConfig, WalFs};

/// Options of `eddy replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayOptions {
    /// Start of the history to re-run: an RFC 3339 time, Unix
    /// milliseconds, or a duration ago ("10m", "2h").
    #[arg(long)]
    pub from: String,
    /// End (exclusive), in the same forms; default: the end of the log.
    #[arg(long)]
    pub to: Option<String>,
    /// The configuration to re-run under (windows, patterns, stages);
    /// the embedded default when left out.
    #[arg(long, short, env = "EDDY_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data directory holding `wal/`; default: the configuration's
    /// `data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Write window results and pattern matches here as
    /// `{"channel","data"}` lines; default: stdout.
    #[arg(long)]
    pub results: Option<PathBuf>,
}

/// What a re-run did (printed on stderr).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplaySummary {
    /// Log records read.
    pub records: u64,
    /// Batches and ticks applied (inside the time range).
    pub applied: u64,
    /// Events in the batches applied.
    pub events: u64,
    /// Results written (window results, late events, pattern outputs).
    pub results: u64,
    /// Logged configuration reloads left out.
    pub reloads_skipped: u64,
    /// Damaged or undecodable records skipped.
    pub skipped: u64,
    /// The first sequence number the log still holds.
    pub first_seq: u64,
}

/// What the log at `data_dir` held between `from` and `to` (wall time,
/// Unix ms; `to` exclusive), as an event file would say it: each batch
/// as a `$wall` line at its arrival time followed by its events (with the
/// ids and timestamps the server gave them), each tick as a `$wall` line.
/// Positions are log sequence numbers. This is what `eddy plugin test
/// --from-log` and `eddy plugin diff --from-log` feed a plugin: the
/// traffic a live server really saw. The log is read from a copy, as
/// `eddy replay` reads it.
pub fn logged_lines(data_dir: &Path, from: i64, to: i64) -> anyhow::Result<Vec<FileLine>> {
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    copy_segments(&data_dir.join(crate::durability::WAL_DIR), scratch.path())?;
    let fs: Arc<dyn WalFs> = Arc::new(StdFs);
    let (log, _) = Log::open(fs, scratch.path(), WalConfig::default().log_options())?;
    let mut lines = Vec::new();
    let mut reader = log.read_from(1);
    for item in reader.by_ref() {
        let (seq, payload) = item?;
        let Some(input) = crate::durability::decode_record(seq, &payload) else {
            continue;
        };
        let (wall, events) = match input {
            Input::Batch(b) | Input::Kafka(crate::engine::KafkaBatch { batch: b, .. }) => {
                (b.wall_ms, b.events)
            }
            Input::Tick { wall_ms, .. } => (Some(wall_ms), Vec::new()),
            Input::Plugin(_) | Input::Reconfigure(_) | Input::Finish => continue,
        };
        match wall {
            Some(w) if w >= to => break,
            Some(w) if w < from => continue,
            Some(w) => lines.push(FileLine::Wall(seq, w)),
            None => {}
        }
        lines.extend(events.into_iter().map(|e| FileLine::Event(seq, e)));
    }
    if reader.corrupt_skipped() > 0 {
        tracing::warn!(
            records = reader.corrupt_skipped(),
            "damaged log records skipped"
        );
    }
    Ok(lines)
}

/// Parse `--from` / `--to`.
pub fn parse_time(text: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(now_ms - i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    }
    anyhow::bail!(
        "`{text}` is not a time: write an RFC 3339 time (2026-12-06T06:00:00Z), Unix milliseconds, or a duration ago (10m)"
    )
}

struct Results {
    out: Box<dyn Write>,
    /// The lines of one output (kept to reuse its allocation).
    line: String,
    windows: Vec<String>,
    written: u64,
    error: Option<std::io::Error>,
}

impl Sink for Results {
    fn emit(&mut self, out: Emitted) {
        if !matches!(out, Emitted::Window { .. } | Emitted::Pattern { .. }) || self.error.is_some()
        {
            return;
        }
        self.line.clear();
        let n = out.write_result_lines(&self.windows, &mut self.line);
        match self.out.write_all(self.line.as_bytes()) {
            Ok(()) => self.written += n,
            Err(e) => self.error = Some(e),
        }
    }
}

/// Copy the segment files of `wal_dir` into `to`.
fn copy_segments(wal_dir: &Path, to: &Path) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(wal_dir).with_context(|| {
        format!(
            "reading the write-ahead log in {} (is data_dir right? use --data-dir)",
            wal_dir.display()
        )
    })?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".wal") {
            std::fs::copy(entry.path(), to.join(&name))
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Run `eddy replay`.
pub fn run(opts: &ReplayOptions) -> anyhow::Result<ReplaySummary> {
    let config = Config::load(opts.config.as_deref())?;
    let now = crate::ingest::now_ms();
    let from = parse_time(&opts.from, now).context("--from")?;
    let to = match &opts.to {
        Some(t) => parse_time(t, now).context("--to")?,
        None => i64::MAX,
    };
    let data_dir = opts
        .data_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.clone());
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    copy_segments(&data_dir.join(crate::durability::WAL_DIR), scratch.path())?;
    let fs: Arc<dyn WalFs> = Arc::new(StdFs);
    let (log, _) = Log::open(fs, scratch.path(), config.wal.log_options())?;

    let clock = VirtualClock::new();
    let plugin_engine =
        PluginEngine::with_virtual_clock(clock.clone()).context("starting the plugin engine")?;
    let registry = Registry::new(
        plugin_engine,
        config.runtime.clone(),
        config.plugins_dir.clone(),
    );
    // Versions the log names that the plugins folder no longer has.
    registry
        .use_version_store(data_dir.join(crate::durability::PLUGIN_VERSIONS_DIR), false)
        .context("reading the data directory's plugin versions")?;
    registry
        .load_all()
        .with_context(|| format!("reading plugins folder {}", config.plugins_dir.display()))?;
    let options = EngineOptions {
        first_seq: 1,
        seed: 0,
        plugins: registry.live_versions(),
    };
    let mut engine = Engine::new(&config, registry, clock, &options)?;
    engine.set_dedup(config.wal.dedup_horizon_ms, config.wal.dedup_max_ids);
    let out: Box<dyn Write> = match &opts.results {
        Some(p) => Box::new(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout())),
    };
    let mut sink = Results {
        out,
        line: String::new(),
        windows: engine.window_names().to_vec(),
        written: 0,
        error: None,
    };
    let mut summary = ReplaySummary {
        first_seq: log.first_seq(),
        ..ReplaySummary::default()
    };
    let mut records = 0u64;
    let mut reloads = 0u64;
    let mut applied = 0u64;
    let mut done = false;
    let replayed = crate::durability::replay(&mut engine, &log, 1, &mut sink, |input| {
        records += 1;
        if done {
            return false;
        }
        let wall = match input {
            Input::Batch(b) | Input::Kafka(crate::engine::KafkaBatch { batch: b, .. }) => b.wall_ms,
            Input::Tick { wall_ms, .. } => Some(*wall_ms),
            Input::Reconfigure(_) => {
                reloads += 1;
                return false;
            }
            Input::Plugin(_) | Input::Finish => return true,
        };
        match wall {
            Some(w) if w >= to => {
                done = true;
                false
            }
            Some(w) if w < from => false,
            _ => {
                applied += 1;
                true
            }
        }
    })?;
    engine.step(Input::Finish, &mut sink);
    sink.out.flush()?;
    if let Some(e) = sink.error {
        return Err(e).context("writing the results");
    }
    summary.records = records;
    summary.applied = applied;
    summary.events = replayed.events;
    summary.results = sink.written;
    summary.reloads_skipped = reloads;
    summary.skipped = replayed.corrupt + replayed.undecodable;
    Ok(summary)
}
