//! `eddy pipe`: NDJSON events in, NDJSON events out, through the engine, with
//! a summary at the end. A thin driver: it reads lines into engine inputs
//! (the same decoder as HTTP ingest; `{"$wall": MS}` lines move a virtual
//! wall clock) or replays a record of `eddy serve --record`, and writes
//! what the engine publishes to files. Deterministic for a given input and
//! plugin set with `--clock virtual`, so it is also the harness the tests
//! drive.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::config::Config;
use crate::engine::input::{self, RecordHeader};
use crate::engine::{Batch, Engine, EngineOptions, Input};
use crate::event::Event;
use crate::ingest::{DecodeOptions, IdMode, Location};
use crate::pipeline::StageReport;
use crate::plugin::clock::VirtualClock;
use crate::plugin::registry::PluginStatus;
use crate::plugin::{PluginEngine, PluginKind, Registry, watch};

mod read;
mod write;

use read::{Item, Next, ReadOptions};
use write::{Files, Writer};

/// Where input lines that are not events are reported: the first this many
/// individually, the rest only counted, so a wrong file cannot flood stderr.
pub const MAX_REPORTED_BAD_LINES: u64 = 20;

/// Largest `--batch-size`, the same bound as `pipeline.batch_size`.
pub const MAX_BATCH_SIZE: usize = 100_000;

/// Most `--decode-threads`: far more than any machine eddy runs on needs
/// (each thread holds a few chunks of input).
pub const MAX_DECODE_THREADS: i64 = 256;

/// The `--output` value that writes no events.
pub const OUTPUT_NONE: &str = "none";

/// Options of `eddy pipe` (also its command-line arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct PipeOptions {
    /// Pipeline configuration (TOML); the embedded default if omitted.
    #[arg(long, short, env = "EDDY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Read events from this file instead of stdin.
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    /// Write events to this file instead of stdout; `none` writes no
    /// events at all (when only results are wanted; `./none` is a file of
    /// that name).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Where events failed by a dead-letter stage are written (created on
    /// first use).
    #[arg(long, default_value = "dead-letter.ndjson")]
    pub dead_letter: PathBuf,
    /// Override the configuration's plugins_dir.
    #[arg(long)]
    pub plugins_dir: Option<PathBuf>,
    /// Override the configuration's pipeline.batch_size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Process a partial batch after waiting this many ms for more input.
    #[arg(long, default_value_t = 20)]
    pub linger_ms: u64,
    /// Do not watch the plugins folder for new versions.
    #[arg(long)]
    pub no_watch: bool,
    /// Write the configuration's results here — window results, pattern
    /// matches and timeouts, alert transitions (channel `alerts`), and the
    /// events windows and patterns reported late — one
    /// `{"channel", "data"}` object per line. At the end of input every open
    /// window fires and every pattern's timers run. (`--windows` is the old
    /// name.)
    #[arg(long, alias = "windows")]
    pub results: Option<PathBuf>,
    /// Write every message the engine publishes (events, window results,
    /// late events, dead letters, plugin notices) here, one `{"channel",
    /// "seq", "data"}` object per line, in the order published: what `eddy
    /// serve` subscribers would receive.
    #[arg(long)]
    pub channels: Option<PathBuf>,
    /// Write input lines that are not valid events here, one `{"line",
    /// "error"}` object each (the shape of ingest's `errors`).
    #[arg(long)]
    pub errors: Option<PathBuf>,
    /// The wall clock: `wall` (the machine's) or `virtual`: set only by
    /// `{"$wall": MS}` lines in the input, each of which also ticks the
    /// engine (idle watermarks, early results). With `virtual`, a run is
    /// deterministic.
    #[arg(long, value_enum, default_value_t = Clock::Wall)]
    pub clock: Clock,
    /// Reject events whose timestamps are outside `ingest.max_age_ms` /
    /// `ingest.future_skew_ms` of the machine's clock, as HTTP ingest does
    /// (off by default: recorded files hold old events). Needs `--clock
    /// wall`.
    #[arg(long)]
    pub check_timestamps: bool,
    /// Replay a record written by `eddy serve --record` instead of reading
    /// events: exactly its inputs, its first sequence numbers, seed and
    /// plugin versions (from the record's `.plugins` folder).
    #[arg(long, conflicts_with_all = ["input", "clock"])]
    pub replay: Option<PathBuf>,
    /// Write the engine's snapshot to this file at the end (or at
    /// `--stop-after`).
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// Stop once the engine has applied this many inputs (with
    /// `--snapshot`: a snapshot at that input boundary).
    #[arg(long, requires = "snapshot")]
    pub stop_after: Option<u64>,
    /// Threads decoding the input (the engine runs on one more); default:
    /// one fewer than the machine's cores, at least one. Lines are handed
    /// to the engine in input order whatever the number, so results do not
    /// depend on it.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=MAX_DECODE_THREADS))]
    pub decode_threads: Option<u16>,
    /// Start from this snapshot (written by `--snapshot`) instead of a fresh
    /// engine, skipping the input it already covers.
    #[arg(long)]
    pub restore: Option<PathBuf>,
}

/// The wall clock of `eddy pipe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Clock {
    /// The machine's clock.
    Wall,
    /// Set by `{"$wall": MS}` lines in the input.
    Virtual,
}

/// What a run did.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Input events accepted.
    pub events_in: u64,
    /// Events written to the output.
    pub events_out: u64,
    /// Events that plugins dropped (filters), all stages together.
    pub dropped: u64,
    /// Batches that failed in some stage, all stages together.
    pub failed_batches: u64,
    /// Input lines that were not valid events.
    pub rejected_lines: u64,
    /// Events written to the dead-letter file.
    pub dead_lettered: u64,
    /// Window results published.
    pub window_results: u64,
    /// Late (or future) events reported by windows.
    pub late_events: u64,
    /// Where dead letters went, if any.
    pub dead_letter_file: Option<PathBuf>,
    /// Batches run.
    pub batches: u64,
    /// Engine inputs applied (batches, ticks, plugin changes, the end).
    pub inputs: u64,
    /// Wall time.
    pub elapsed_ms: u64,
    /// Peak resident memory of the process, where the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// Per-stage reports.
    pub stages: Vec<StageReport>,
    /// Per-plugin status.
    pub plugins: Vec<PluginStatus>,
    /// Pattern matches and timeouts published.
    pub pattern_results: u64,
    /// Per-pattern reports (counters, partial matches held at the end).
    pub patterns: Vec<crate::pattern::PatternReport>,
    /// Alert state transitions published.
    pub alert_transitions: u64,
    /// Per-rule reports (instances held at the end, refused, transitions).
    pub alerts: Vec<crate::engine::alerts::RuleReport>,
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn create(path: &Path, what: &str) -> anyhow::Result<BufWriter<File>> {
    Ok(BufWriter::new(File::create(path).with_context(|| {
        format!("creating {what} {}", path.display())
    })?))
}

/// The plugins the configuration names: its stages, pattern plugins with
/// settings, and alert plugins.
fn plugins_named(config: &Config) -> std::collections::BTreeSet<&str> {
    let stages = config.stages.iter().map(|s| s.plugin.as_str());
    let patterns = config.pattern_plugins.iter().map(|p| p.plugin.as_str());
    let alerts = config.alert_plugins.iter().map(|a| a.plugin.as_str());
    stages.chain(patterns).chain(alerts).collect()
}

/// The engine and what it needs, as a run set it up.
struct Setup {
    engine: Engine,
    registry: Arc<Registry>,
    /// Lines of the input the engine has already seen (a restore).
    skip_lines: u64,
    /// The wall clock the engine stands at (a restore).
    wall: Option<i64>,
}

fn setup(opts: &PipeOptions, config: &Config) -> anyhow::Result<(Setup, Option<Vec<Input>>)> {
    let clock = VirtualClock::new();
    let plugin_engine = PluginEngine::with_virtual_clock(clock.clone())
        .context("starting the WebAssembly engine")?;
    let registry = Registry::new(
        plugin_engine,
        config.runtime.clone(),
        config.plugins_dir.clone(),
    );
    let (options, replay) = match &opts.replay {
        Some(record) => {
            let (header, inputs) = input::read_record(record)?;
            load_recorded_plugins(&registry, record, &header, &inputs)?;
            let options = EngineOptions {
                first_seq: header.first_seq,
                seed: header.seed,
                plugins: header.plugins.clone(),
            };
            (options, Some(inputs))
        }
        None => {
            // Only what the run can use is compiled: the stages, pattern
            // plugins (they run wherever they are found) and the alert
            // plugins the configuration names. Other processors and alert
            // plugins in the folder would never run.
            let named = plugins_named(config);
            let skipped = std::cell::RefCell::new(Vec::new());
            registry
                .load_all_where(|name, bytes| {
                    let wanted = named.contains(name)
                        || !matches!(
                            PluginKind::of_component(bytes),
                            Some(PluginKind::Processor | PluginKind::Alert)
                        );
                    if !wanted {
                        skipped.borrow_mut().push(name.to_owned());
                    }
                    wanted
                })
                .with_context(|| {
                    format!("reading plugins folder {}", config.plugins_dir.display())
                })?;
            let skipped = skipped.into_inner();
            if !skipped.is_empty() {
                tracing::info!(
                    plugins = %skipped.join(", "),
                    "not compiled: the configuration does not use them"
                );
            }
            let options = EngineOptions {
                first_seq: 1,
                seed: 0,
                plugins: registry.live_versions(),
            };
            (options, None)
        }
    };
    let (engine, skip_lines, wall) = match &opts.restore {
        None => (
            Engine::new(config, registry.clone(), clock, &options)?,
            0,
            None,
        ),
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading snapshot {}", path.display()))?;
            let engine = Engine::restore(config, registry.clone(), clock, &bytes)
                .with_context(|| format!("restoring {}", path.display()))?;
            let skip = engine.positions().get(&0).copied().unwrap_or(0);
            let wall = engine.time().wall();
            (engine, skip, wall)
        }
    };
    Ok((
        Setup {
            engine,
            registry,
            skip_lines,
            wall,
        },
        replay,
    ))
}

/// Load every plugin version a record names from its `.plugins` folder.
fn load_recorded_plugins(
    registry: &Registry,
    record: &Path,
    header: &RecordHeader,
    inputs: &[Input],
) -> anyhow::Result<()> {
    let dir = input::record_plugins_dir(record);
    let mut wanted: Vec<(String, String)> = header
        .plugins
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for i in inputs {
        if let Input::Plugin(c) = i
            && let crate::engine::VersionChange::Select(h) = &c.version
        {
            wanted.push((c.plugin.clone(), h.clone()));
        }
    }
    for (plugin, hash) in wanted {
        if registry.version(&plugin, &hash).is_some() {
            continue;
        }
        let path = dir.join(format!("{hash}.wasm"));
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "the record names version {hash} of plugin `{plugin}`, but {} cannot be read",
                path.display()
            )
        })?;
        registry
            .load_bytes(&plugin, bytes, &path.display().to_string())
            .with_context(|| format!("loading {}", path.display()))?;
    }
    Ok(())
}

/// Run the pipe to completion.
pub fn run(opts: &PipeOptions) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let mut config = Config::load(opts.config.as_deref())?;
    if let Some(dir) = &opts.plugins_dir {
        config.plugins_dir = dir.clone();
    }
    if let Some(n) = opts.batch_size {
        anyhow::ensure!(
            (1..=MAX_BATCH_SIZE).contains(&n),
            "--batch-size {n} is out of range: must be between 1 and {MAX_BATCH_SIZE}"
        );
        config.pipeline.batch_size = n;
    }
    if opts.replay.is_none() && !config.plugins_dir.is_dir() {
        anyhow::bail!(
            "plugins folder {} does not exist; build the example plugins with scripts/build-plugins \
             or set plugins_dir / EDDY_PLUGINS_DIR",
            config.plugins_dir.display()
        );
    }
    let (mut setup, replay) = setup(opts, &config)?;
    if opts.snapshot.is_none() {
        // Only a snapshot would show the live views and the windows'
        // history: nothing queries a pipe.
        setup.engine.switch_off_query_state();
    }
    let _watcher = if !opts.no_watch && opts.replay.is_none() {
        Some(
            watch::watch(setup.registry.clone(), config.runtime.reload_debounce)
                .with_context(|| format!("watching {}", config.plugins_dir.display()))?,
        )
    } else {
        None
    };
    let notices = setup.registry.subscribe();
    let files = Files {
        output: match &opts.output {
            Some(p) if p.as_os_str() == OUTPUT_NONE => None,
            Some(p) => Some(Box::new(create(p, "output")?)),
            None => Some(Box::new(BufWriter::new(io::stdout()))),
        },
        line: String::with_capacity(512),
        results: opts
            .results
            .as_deref()
            .map(|p| create(p, "results output"))
            .transpose()?,
        channels: opts
            .channels
            .as_deref()
            .map(|p| create(p, "channels output"))
            .transpose()?,
        dead_letter: opts.dead_letter.clone(),
        dead_file: None,
        window_names: setup.engine.window_names().to_vec(),
        events_out: 0,
        dead_lettered: 0,
        error: None,
    };
    let mut writer = Writer::start(files)?;
    let mut errors = opts
        .errors
        .as_deref()
        .map(|p| create(p, "errors output"))
        .transpose()?;
    let mut run = Run {
        engine: &mut setup.engine,
        writer: &mut writer,
        stop_after: opts.stop_after,
        stopped: false,
    };
    let mut rejected = 0u64;
    let mut read_error = None;
    match replay {
        Some(inputs) => {
            let skip = run.engine.counters().inputs;
            for input in inputs
                .into_iter()
                .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            {
                if !run.apply(input)? {
                    break;
                }
            }
        }
        None => {
            let source: Box<dyn io::Read + Send> = match &opts.input {
                Some(p) => Box::new(
                    File::open(p).with_context(|| format!("opening input {}", p.display()))?,
                ),
                None => Box::new(io::stdin()),
            };
            let virtual_clock = opts.clock == Clock::Virtual;
            anyhow::ensure!(
                !(virtual_clock && opts.check_timestamps),
                "--check-timestamps checks against the machine's clock: use it with --clock wall"
            );
            let decode = DecodeOptions {
                limits: config.ingest.limits(),
                now_ms: None,
                check_time: opts.check_timestamps,
                ids: IdMode::Line,
            };
            let batch_size = config.pipeline.batch_size;
            let skip = setup.skip_lines;
            let mut decoded = read::start(
                source,
                ReadOptions {
                    decode,
                    virtual_clock,
                    skip,
                    wall: setup.wall,
                    threads: opts
                        .decode_threads
                        .map_or_else(read::default_threads, usize::from),
                },
            )
            .context("starting the input threads")?;
            let mut wall = setup.wall;
            let mut batch: Vec<Event> = Vec::with_capacity(batch_size);
            let mut position = skip;
            let mut deadline: Option<Instant> = None;
            let mut pending = Vec::new().into_iter();
            'input: loop {
                // Plugin changes from the watcher take effect between batches.
                if batch.is_empty() {
                    for notice in notices.try_iter() {
                        if !run.apply(Input::Plugin(input::notice_change(notice)))? {
                            break 'input;
                        }
                    }
                }
                let item = match pending.next() {
                    Some(i) => Some(i),
                    None => match decoded.next(deadline) {
                        Next::Items(items) => {
                            pending = items.into_iter();
                            continue;
                        }
                        Next::Timeout => {
                            let events =
                                std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                            deadline = None;
                            if !run.batch(events, position, wall, virtual_clock)? {
                                break 'input;
                            }
                            continue;
                        }
                        Next::End => None,
                    },
                };
                let Some(item) = item else { break };
                deadline
                    .get_or_insert_with(|| Instant::now() + Duration::from_millis(opts.linger_ms));
                match item {
                    Item::Failed(e) => {
                        // Finish what was read, then report.
                        read_error = Some(e);
                        break;
                    }
                    Item::Blank(n) => position = n,
                    Item::Bad(err) => {
                        rejected += 1;
                        if let Location::Line(n) = err.location {
                            position = n as u64;
                        }
                        if rejected <= MAX_REPORTED_BAD_LINES {
                            tracing::warn!(line = position, error = %err.error, "input line is not an event");
                        }
                        if let Some(f) = errors.as_mut() {
                            serde_json::to_writer(&mut *f, &err)?;
                            f.write_all(b"\n")?;
                        }
                    }
                    Item::Wall(n, ms) => {
                        // A `$wall` line ends the batch before it; the clock
                        // moves after it, with a tick.
                        let events = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                        if !run.batch(events, position, wall, virtual_clock)? {
                            break;
                        }
                        deadline = None;
                        if wall.is_some_and(|w| ms < w) {
                            anyhow::bail!(
                                "input line {n}: $wall went back in time, from {} to {ms}",
                                wall.unwrap_or_default()
                            );
                        }
                        wall = Some(ms);
                        position = n;
                        let tick = Input::Tick {
                            wall_ms: ms,
                            position: Some((0, n)),
                        };
                        if !run.apply(tick)? {
                            break;
                        }
                    }
                    Item::Event(n, e) => {
                        batch.push(e);
                        position = n;
                        if batch.len() >= batch_size {
                            let events =
                                std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                            deadline = None;
                            if !run.batch(events, position, wall, virtual_clock)? {
                                break;
                            }
                        }
                    }
                }
            }
            let events = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
            if run.batch(events, position, wall, virtual_clock)? && read_error.is_none() {
                run.apply(Input::Finish)?;
            }
        }
    }
    if rejected > MAX_REPORTED_BAD_LINES {
        tracing::warn!(
            rejected,
            reported = MAX_REPORTED_BAD_LINES,
            "more input lines were not events than were reported individually"
        );
    }
    if let Some(f) = errors.as_mut() {
        f.flush().context("writing errors output")?;
    }
    let mut files = writer.finish()?;
    if let Some(e) = files.error.take() {
        return Err(e).context("writing output");
    }
    let engine = &setup.engine;
    if let Some(path) = &opts.snapshot {
        std::fs::write(path, engine.snapshot())
            .with_context(|| format!("writing snapshot {}", path.display()))?;
    }
    let counters = engine.counters();
    let mut summary = Summary {
        events_in: counters.events_in,
        events_out: files.events_out,
        dropped: counters.dropped,
        failed_batches: 0,
        rejected_lines: rejected,
        dead_lettered: files.dead_lettered,
        window_results: counters.window_results,
        late_events: counters.late_events,
        dead_letter_file: (files.dead_lettered > 0).then(|| opts.dead_letter.clone()),
        batches: counters.batches,
        inputs: counters.inputs,
        elapsed_ms: started.elapsed().as_millis() as u64,
        peak_rss_bytes: peak_rss_bytes(),
        stages: engine.stage_reports(),
        plugins: setup.registry.status(),
        pattern_results: counters.pattern_results,
        patterns: engine.patterns().reports(),
        alert_transitions: counters.alert_transitions,
        alerts: engine.alerts().reports(),
    };
    summary.failed_batches = summary.stages.iter().map(|s| s.stats.failed_batches).sum();
    if let Some(e) = read_error {
        return Err(e).context(format!(
            "reading input (the {} events read before the error were processed and written)",
            summary.events_in
        ));
    }
    Ok(summary)
}

/// Feeding the engine, with `--stop-after`.
struct Run<'a> {
    engine: &'a mut Engine,
    writer: &'a mut Writer,
    stop_after: Option<u64>,
    stopped: bool,
}

impl Run<'_> {
    /// Apply `input`; false once the run is to stop (`--stop-after`).
    fn apply(&mut self, input: Input) -> anyhow::Result<bool> {
        if self.stopped
            || self
                .stop_after
                .is_some_and(|n| self.engine.counters().inputs >= n)
        {
            self.stopped = true;
            return Ok(false);
        }
        self.engine.step(input, self.writer);
        self.writer.send()?;
        Ok(true)
    }

    /// Apply a batch of file events read up to line `position` (nothing for
    /// an empty one). With the machine's clock, it arrives now.
    fn batch(
        &mut self,
        events: Vec<Event>,
        position: u64,
        wall: Option<i64>,
        virtual_clock: bool,
    ) -> anyhow::Result<bool> {
        if events.is_empty() {
            return Ok(!self.stopped);
        }
        let wall_ms = if virtual_clock {
            wall
        } else {
            Some(crate::ingest::now_ms())
        };
        self.apply(Input::Batch(Batch {
            source: 0,
            position,
            wall_ms,
            events,
        }))
    }
}

impl Summary {
    /// The human-readable form printed on stderr.
    pub fn to_text(&self) -> String {
        let secs = self.elapsed_ms as f64 / 1000.0;
        let rate = if secs > 0.0 {
            self.events_in as f64 / secs
        } else {
            0.0
        };
        let mut s = format!(
            "eddy pipe: {} in, {} out, {} dropped, {} failed batches, {} dead-lettered, {} rejected lines, {} batches in {:.2} s ({:.0} events/s)",
            self.events_in,
            self.events_out,
            self.dropped,
            self.failed_batches,
            self.dead_lettered,
            self.rejected_lines,
            self.batches,
            secs,
            rate
        );
        if let Some(rss) = self.peak_rss_bytes {
            s.push_str(&format!(", peak RSS {} MiB", rss / (1024 * 1024)));
        }
        if let Some(p) = &self.dead_letter_file {
            s.push_str(&format!("\ndead letters: {}", p.display()));
        }
        for p in &self.patterns {
            s.push_str(&format!(
                "\npattern {}: {} events, {} matches, {} timeouts, {} late, {} refused, {} partial matches held",
                p.name,
                p.counters.events,
                p.counters.matches,
                p.counters.timeouts,
                p.counters.late,
                p.counters.refused,
                p.partial_matches
            ));
        }
        s.push_str(&format!(
            "\n{:<16} {:<16} {:<12} {:<10} {:>10} {:>10} {:>8} {:>7} {:>10} {:>10}",
            "stage",
            "plugin",
            "status",
            "version",
            "in",
            "out",
            "dropped",
            "failed",
            "ns/event",
            "max call"
        ));
        for st in &self.stages {
            s.push_str(&format!(
                "\n{:<16} {:<16} {:<12} {:<10} {:>10} {:>10} {:>8} {:>7} {:>10.0} {:>8} ms",
                st.name,
                st.plugin,
                format!("{:?}", st.status).to_lowercase(),
                st.version.as_deref().unwrap_or("-"),
                st.stats.events_in,
                st.stats.events_out,
                st.stats.dropped,
                st.stats.failed_batches,
                st.ns_per_event,
                st.stats.max_call_ns / 1_000_000
            ));
        }
        s
    }
}
