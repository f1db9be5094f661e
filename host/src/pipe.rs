//! `eddy pipe`: NDJSON events in, NDJSON events out, through the configured
//! pipeline, with a summary at the end. Deterministic for a given input and
//! plugin set, so it is also the harness the tests drive.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::config::Config;
use crate::event::Event;
use crate::pipeline::{DeadLetter, Pipeline, StageReport};
use crate::plugin::registry::PluginStatus;
use crate::plugin::{PluginEngine, Registry, watch};
use crate::window::{Output, Stream, Windows};

/// Where input lines that are not events are reported: the first this many
/// individually, the rest only counted, so a wrong file cannot flood stderr.
pub const MAX_REPORTED_BAD_LINES: u64 = 20;

/// Largest `--batch-size`, the same bound as `pipeline.batch_size`.
pub const MAX_BATCH_SIZE: usize = 100_000;

/// Options of `eddy pipe` (also its command-line arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct PipeOptions {
    /// Pipeline configuration (TOML); the embedded default if omitted.
    #[arg(long, short, env = "EDDY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Read events from this file instead of stdin.
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    /// Write events to this file instead of stdout.
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
    /// Run the configuration's `[[windows]]` over the output and write their
    /// results and late events here, one `{"channel", "data"}` object per
    /// line. At the end of input every open window fires.
    #[arg(long)]
    pub windows: Option<PathBuf>,
    /// The wall clock windows see: `wall` (the machine's) or `virtual`: the
    /// first event's timestamp, then whatever `{"$wall": MS}` lines in the
    /// input set it to. With `virtual`, a run is deterministic.
    #[arg(long, value_enum, default_value_t = Clock::Wall)]
    pub clock: Clock,
}

/// The wall clock of `eddy pipe`'s windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Clock {
    /// The machine's clock.
    Wall,
    /// Set by the input: the first event's timestamp, then `{"$wall": MS}`
    /// lines.
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
    /// Window results written (with `--windows`).
    pub window_results: u64,
    /// Late events written (with `--windows`).
    pub late_events: u64,
    /// Where dead letters went, if any.
    pub dead_letter_file: Option<PathBuf>,
    /// Batches run.
    pub batches: u64,
    /// Wall time.
    pub elapsed_ms: u64,
    /// Peak resident memory of the process, where the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// Per-stage reports.
    pub stages: Vec<StageReport>,
    /// Per-plugin status.
    pub plugins: Vec<PluginStatus>,
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

enum Line {
    Text(u64, String),
    NotUtf8(u64),
    Failed(io::Error),
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
    let batch_size = config.pipeline.batch_size;
    if !config.plugins_dir.is_dir() {
        anyhow::bail!(
            "plugins folder {} does not exist; build the example plugins with scripts/build-plugins \
             or set plugins_dir / EDDY_PLUGINS_DIR",
            config.plugins_dir.display()
        );
    }
    let engine = PluginEngine::new().context("starting the WebAssembly engine")?;
    let registry = Registry::new(engine, config.runtime.clone(), config.plugins_dir.clone());
    registry
        .load_all()
        .with_context(|| format!("reading plugins folder {}", config.plugins_dir.display()))?;
    let _watcher = if !opts.no_watch {
        Some(
            watch::watch(registry.clone(), config.runtime.reload_debounce)
                .with_context(|| format!("watching {}", config.plugins_dir.display()))?,
        )
    } else {
        None
    };
    let mut pipeline = Pipeline::new(&config, registry.clone())?;
    let mut windows = match &opts.windows {
        None => None,
        Some(path) => Some(WindowFile {
            windows: Windows::with_live(&config.windows, config.live)?,
            file: BufWriter::new(
                File::create(path)
                    .with_context(|| format!("creating windows output {}", path.display()))?,
            ),
            wall: None,
        }),
    };
    let virtual_clock = opts.clock == Clock::Virtual;

    let reader: Box<dyn BufRead + Send> = match &opts.input {
        Some(p) => Box::new(BufReader::new(
            File::open(p).with_context(|| format!("opening input {}", p.display()))?,
        )),
        None => Box::new(BufReader::new(io::stdin())),
    };
    let mut output: Box<dyn Write> = match &opts.output {
        Some(p) => Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("creating output {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let (tx, rx) = mpsc::sync_channel::<Line>(batch_size.saturating_mul(4));
    thread::Builder::new()
        .name("eddy-pipe-reader".into())
        .spawn(move || read_lines(reader, &tx))?;

    let mut dead_file: Option<BufWriter<File>> = None;
    let mut summary = Summary {
        events_in: 0,
        events_out: 0,
        dropped: 0,
        failed_batches: 0,
        rejected_lines: 0,
        dead_lettered: 0,
        window_results: 0,
        late_events: 0,
        dead_letter_file: None,
        batches: 0,
        elapsed_ms: 0,
        peak_rss_bytes: None,
        stages: Vec::new(),
        plugins: Vec::new(),
    };
    let mut eof = false;
    let mut read_error = None;
    while !eof {
        // A `$wall` line (virtual clock) ends the batch; the clock moves
        // after the batch before it is processed.
        let mut wall_to: Option<i64> = None;
        let mut batch = Vec::with_capacity(batch_size);
        let mut deadline: Option<Instant> = None;
        while batch.len() < batch_size {
            let next = match deadline {
                // Block for the first line of a batch.
                None => rx.recv().ok(),
                Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                    Ok(l) => Some(l),
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                },
            };
            let Some(line) = next else {
                eof = true;
                break;
            };
            deadline.get_or_insert_with(|| Instant::now() + Duration::from_millis(opts.linger_ms));
            match line {
                Line::Failed(e) => {
                    // Finish what was read, then report.
                    read_error = Some(e);
                    eof = true;
                    break;
                }
                Line::NotUtf8(n) => {
                    summary.rejected_lines += 1;
                    if summary.rejected_lines <= MAX_REPORTED_BAD_LINES {
                        tracing::warn!(line = n, "input line is not valid UTF-8");
                    }
                }
                Line::Text(n, text) => {
                    if text.trim().is_empty() {
                        continue;
                    }
                    if virtual_clock && let Some(wall) = wall_directive(&text) {
                        match wall {
                            Ok(ms) => {
                                wall_to = Some(ms);
                                break;
                            }
                            Err(msg) => anyhow::bail!("input line {n}: {msg}"),
                        }
                    }
                    match Event::from_json(&text, || format!("line-{n}")) {
                        Ok(e) => batch.push(e),
                        Err(err) => {
                            summary.rejected_lines += 1;
                            if summary.rejected_lines <= MAX_REPORTED_BAD_LINES {
                                tracing::warn!(line = n, error = %err, "input line is not an event");
                            }
                        }
                    }
                }
            }
        }
        if batch.is_empty() {
            if let (Some(w), Some(ms)) = (windows.as_mut(), wall_to) {
                w.tick(ms, &mut summary)?;
            }
            continue;
        }
        summary.events_in += batch.len() as u64;
        summary.batches += 1;
        let result = pipeline.process(batch);
        for e in &result.events {
            output.write_all(e.to_json().as_bytes())?;
            output.write_all(b"\n")?;
        }
        output.flush().context("writing output")?;
        if let Some(w) = windows.as_mut() {
            let now = match (virtual_clock, result.events.first()) {
                (false, _) => crate::window::publish::wall_ms(),
                (true, first) => *w.wall.get_or_insert(first.map_or(0, |e| e.timestamp)),
            };
            w.process(&result.events, now, &mut summary)?;
            if let Some(ms) = wall_to {
                w.tick(ms, &mut summary)?;
            }
        }
        summary.events_out += result.events.len() as u64;
        if !result.dead_letters.is_empty() {
            write_dead_letters(&mut dead_file, &opts.dead_letter, &result.dead_letters)?;
            summary.dead_lettered += result.dead_letters.len() as u64;
            summary.dead_letter_file = Some(opts.dead_letter.clone());
        }
    }
    if summary.rejected_lines > MAX_REPORTED_BAD_LINES {
        tracing::warn!(
            rejected = summary.rejected_lines,
            reported = MAX_REPORTED_BAD_LINES,
            "more input lines were not events than were reported individually"
        );
    }
    if let Some(f) = dead_file.as_mut() {
        f.flush().context("writing dead letters")?;
    }
    if let Some(w) = windows.as_mut() {
        w.finish(&mut summary)?;
    }
    if let Some(e) = read_error {
        return Err(e).context(format!(
            "reading input (the {} events read before the error were processed and written)",
            summary.events_in
        ));
    }
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    summary.peak_rss_bytes = peak_rss_bytes();
    summary.stages = pipeline.report();
    summary.dropped = summary.stages.iter().map(|s| s.stats.dropped).sum();
    summary.failed_batches = summary.stages.iter().map(|s| s.stats.failed_batches).sum();
    summary.plugins = registry.status();
    Ok(summary)
}

/// `Some` if the line is a `{"$wall": MS}` directive: its value, or what
/// is wrong with it.
fn wall_directive(text: &str) -> Option<Result<i64, &'static str>> {
    if !text.contains("\"$wall\"") {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_str(text).ok()?;
    let v = doc.get("$wall")?;
    Some(
        v.as_i64()
            .ok_or("$wall must be whole milliseconds since the epoch"),
    )
}

/// The windows of `eddy pipe --windows` and where their output goes.
struct WindowFile {
    windows: Windows,
    file: BufWriter<File>,
    /// The virtual wall clock, once set.
    wall: Option<i64>,
}

impl WindowFile {
    fn process(&mut self, events: &[Event], now: i64, summary: &mut Summary) -> anyhow::Result<()> {
        let mut out = Vec::new();
        self.windows.process(events, now, &mut out);
        self.write(out, summary)
    }

    fn tick(&mut self, now: i64, summary: &mut Summary) -> anyhow::Result<()> {
        if self.wall.is_some_and(|w| now < w) {
            anyhow::bail!("$wall went back in time, from {:?} to {now}", self.wall);
        }
        self.wall = Some(now);
        let mut out = Vec::new();
        self.windows.tick(now, &mut out);
        self.write(out, summary)
    }

    fn finish(&mut self, summary: &mut Summary) -> anyhow::Result<()> {
        let mut out = Vec::new();
        self.windows.finish(&mut out);
        self.write(out, summary)?;
        self.file.flush().context("writing windows output")
    }

    fn write(&mut self, out: Vec<Output>, summary: &mut Summary) -> anyhow::Result<()> {
        for o in out {
            match o.stream {
                Stream::Results(_) => summary.window_results += 1,
                Stream::Late => summary.late_events += 1,
            }
            serde_json::to_writer(&mut self.file, &self.windows.line(o))?;
            self.file.write_all(b"\n")?;
        }
        Ok(())
    }
}

fn read_lines(mut reader: Box<dyn BufRead + Send>, tx: &mpsc::SyncSender<Line>) {
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        let msg = match reader.read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {
                n += 1;
                if buf.ends_with(b"\n") {
                    buf.pop();
                    if buf.ends_with(b"\r") {
                        buf.pop();
                    }
                }
                match String::from_utf8(std::mem::take(&mut buf)) {
                    Ok(text) => Line::Text(n, text),
                    Err(_) => Line::NotUtf8(n),
                }
            }
            Err(e) => Line::Failed(e),
        };
        let failed = matches!(msg, Line::Failed(_));
        if tx.send(msg).is_err() || failed {
            return;
        }
    }
}

fn write_dead_letters(
    file: &mut Option<BufWriter<File>>,
    path: &PathBuf,
    letters: &[DeadLetter],
) -> anyhow::Result<()> {
    if file.is_none() {
        // Append: dead letters from earlier runs are not thrown away.
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening dead-letter file {}", path.display()))?;
        *file = Some(BufWriter::new(f));
    }
    if let Some(f) = file.as_mut() {
        for l in letters {
            serde_json::to_writer(&mut *f, l)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
    }
    Ok(())
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
