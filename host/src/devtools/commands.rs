//! The `eddy plugin new | build | test | diff` commands: options, output
//! and exit status. The work is done by the sibling modules.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::compare::{self, Comparison};
use super::replay::{self, Outputs, Replay, ReplayOptions};
use super::{DevError, build, scaffold};
use crate::engine::input::FileLine;

/// Options shared by `plugin test` and `plugin diff`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["events", "from_log"])))]
pub struct RunOptions {
    /// Recorded input events (NDJSON).
    #[arg(
        long,
        required_unless_present = "from_log",
        conflicts_with = "from_log"
    )]
    pub events: Option<PathBuf>,
    /// Instead of --events: the traffic a server logged, read from the
    /// write-ahead log in this data directory (a copy of it; the server may
    /// be running): every batch with its arrival time, ids and timestamps.
    #[arg(long, value_name = "DATA_DIR")]
    pub from_log: Option<PathBuf>,
    /// With --from-log: the first arrival time to take (RFC 3339, Unix
    /// milliseconds, or a duration ago such as 10m). Default: the start of
    /// the log.
    #[arg(long, requires = "from_log")]
    pub from: Option<String>,
    /// With --from-log: the arrival time to stop at (exclusive), in the
    /// same forms. Default: the end of the log.
    #[arg(long, requires = "from_log")]
    pub to: Option<String>,
    /// The plugin's configuration: a TOML table as a stage's
    /// `[stages.config]` (or a `.json` object). Default: `{}`.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Run a whole pipeline (eddy.toml) instead, with the plugin standing in
    /// for the stages whose `plugin` is its file name (or --as).
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// With --pipeline: the stages' `plugin` the component stands in for.
    #[arg(long = "as", value_name = "PLUGIN")]
    pub as_plugin: Option<String>,
    /// Capabilities to grant, as a stage's `allow` (e.g. wasi:filesystem).
    #[arg(long)]
    pub allow: Vec<String>,
    /// Events per batch (default 1000, or the pipeline's batch_size).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Per-call deadline in ms: a guard against runaway loops, not a
    /// performance check.
    #[arg(long, default_value_t = 10_000)]
    pub deadline_ms: u64,
    /// Show at most this many events of each kind of difference.
    #[arg(long, default_value_t = 20)]
    pub max_diffs: usize,
}

/// Options of `eddy plugin test`.
#[derive(Debug, Clone, clap::Args)]
pub struct TestOptions {
    /// The component to test. Optional with --pipeline (the pipeline's own
    /// plugins run then).
    pub wasm: Option<PathBuf>,
    /// The expected output (NDJSON). Without it, the output is printed.
    #[arg(long)]
    pub expect: Option<PathBuf>,
    /// With --pipeline: the expected window results, pattern matches and
    /// timeouts, and late events (NDJSON, `{"channel", "data"}` lines as
    /// `eddy pipe --results` writes). `--expect-windows` is the old name.
    #[arg(long = "expect-results", alias = "expect-windows")]
    pub expect_windows: Option<PathBuf>,
    /// Input, configuration and limits.
    #[command(flatten)]
    pub run: RunOptions,
}

/// Options of `eddy plugin diff`.
#[derive(Debug, Clone, clap::Args)]
pub struct DiffOptions {
    /// The version running now.
    pub old: PathBuf,
    /// The candidate.
    pub new: PathBuf,
    /// Print the differences as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Input, configuration and limits.
    #[command(flatten)]
    pub run: RunOptions,
}

/// `plugin new`: create the project and say what to do next.
pub fn new(opts: &scaffold::NewOptions) -> Result<(), DevError> {
    let dir = scaffold::create(opts)?;
    let shown = dir.display();
    println!(
        "created {} plugin `{}` in {shown}",
        opts.lang.name(),
        opts.name
    );
    println!("next:");
    println!("  cd {shown}");
    if opts.kind == super::Kind::Processor {
        println!("  eddy plugin build");
        println!(
            "  eddy plugin test target/{}.wasm --events tests/events.ndjson --expect tests/expected.ndjson --config plugin.toml",
            opts.name
        );
    } else {
        // Pattern and alert projects have no event fixtures; the world is
        // named for Python and JavaScript builds.
        println!("  eddy plugin build --kind {}", opts.kind.world());
    }
    Ok(())
}

/// `plugin build`: progress on stderr, the built file on stdout.
pub fn build(opts: &build::BuildOptions) -> Result<(), DevError> {
    let built = build::build(opts, &mut std::io::stderr())?;
    precompile(&built.path);
    println!("{}", built.path.display());
    Ok(())
}

/// Compile a built plugin into the compile cache, so eddy's first load of
/// it does not compile (Python and JavaScript components take seconds). A
/// failure is reported, not fatal: loading the file reports it again.
fn precompile(path: &Path) {
    let started = std::time::Instant::now();
    let result = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            let engine =
                crate::plugin::engine::PluginEngine::new().map_err(|e| format!("{e:#}"))?;
            engine
                .precompile(bytes, PRECOMPILE_TIMEOUT)
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(Some((from, entry))) => eprintln!(
            "eddy plugin build: {} ({}) in {:.1} s",
            match from {
                crate::plugin::engine::CompiledFrom::Compiler =>
                    "precompiled into the compile cache",
                _ => "already in the compile cache",
            },
            entry.display(),
            started.elapsed().as_secs_f64()
        ),
        Ok(None) => {}
        Err(e) => eprintln!(
            "eddy plugin build: warning: could not precompile {}: {e}",
            path.display()
        ),
    }
}

/// How long `plugin build` lets the compiler run (the largest
/// `runtime.compile_timeout_ms`).
const PRECOMPILE_TIMEOUT: Duration = Duration::from_secs(600);

/// The input of `--from-log`: the logged traffic in `--from`..`--to`.
fn logged_input(data_dir: &Path, run: &RunOptions) -> Result<Vec<FileLine>, DevError> {
    let now = crate::ingest::now_ms();
    let time = |flag: &str, text: &Option<String>, default: i64| match text {
        Some(t) => {
            crate::rerun::parse_time(t, now).map_err(|e| DevError::Usage(format!("{flag}: {e:#}")))
        }
        None => Ok(default),
    };
    let from = time("--from", &run.from, i64::MIN)?;
    let to = time("--to", &run.to, i64::MAX)?;
    crate::rerun::logged_lines(data_dir, from, to).map_err(|e| DevError::Log {
        path: data_dir.to_path_buf(),
        message: format!("{e:#}"),
    })
}

/// Replay the events of `run` through `wasm` (or the pipeline); returns the
/// outputs and the number of input events.
fn replay(wasm: Option<&PathBuf>, run: &RunOptions) -> Result<(Outputs, usize), DevError> {
    let opts = ReplayOptions {
        deadline: Duration::from_millis(run.deadline_ms.max(1)),
        batch_size: run.batch_size.map(|n| n.max(1)),
    };
    let input = match (&run.events, &run.from_log) {
        (Some(events), _) => replay::read_input(events)?,
        (None, Some(data_dir)) => logged_input(data_dir, run)?,
        (None, None) => {
            return Err(DevError::Usage(
                "give the input: --events FILE or --from-log DATA_DIR".into(),
            ));
        }
    };
    let mut replay = match (&run.pipeline, wasm) {
        (Some(pipeline), wasm) => {
            let stem = wasm
                .and_then(|w| w.file_stem())
                .and_then(|s| s.to_str())
                .map(str::to_owned);
            let name = run.as_plugin.clone().or(stem);
            let replace = wasm.zip(name.as_deref()).map(|(w, n)| (w.as_path(), n));
            Replay::pipeline(pipeline, replace, &opts)?
        }
        (None, Some(wasm)) => {
            let config = match &run.config {
                Some(c) => replay::read_plugin_config(c)?,
                None => serde_json::json!({}),
            };
            Replay::plugin(wasm, config, &run.allow, &opts)?
        }
        (None, None) => {
            return Err(DevError::BadConfig {
                path: PathBuf::from("(command line)"),
                message: "give the component to test, or --pipeline eddy.toml".into(),
            });
        }
    };
    let n = replay::events(&input).len();
    Ok((replay.run(input), n))
}

/// Failed batches, as lines for a person; empty when there were none.
fn failures(outputs: &Outputs) -> Vec<String> {
    let mut lines: Vec<String> = outputs
        .failures
        .iter()
        .map(|f| {
            let first = f.event_ids.first().map(String::as_str).unwrap_or("?");
            format!(
                "stage {} failed on {} events (from {first}): {}",
                f.stage,
                f.event_ids.len(),
                f.reason
            )
        })
        .collect();
    if lines.is_empty() {
        // A pipeline's pass-through stages hand failed batches on: the
        // stage reports still count them.
        lines.extend(
            outputs
                .stages
                .iter()
                .filter(|s| s.stats.failed_batches > 0)
                .map(|s| {
                    format!(
                        "stage {} failed {} batches (its events passed through)",
                        s.name, s.stats.failed_batches
                    )
                }),
        );
    }
    lines
}

fn counts(outputs: &Outputs, events_in: usize) -> String {
    let stages: Vec<String> = outputs
        .stages
        .iter()
        .map(|s| {
            format!(
                "{} {} ({}): {} in, {} out, {} dropped, {:.0} ns/event",
                s.name,
                s.version.as_deref().unwrap_or("-"),
                s.plugin,
                s.stats.events_in,
                s.stats.events_out,
                s.stats.dropped,
                s.ns_per_event
            )
        })
        .collect();
    let windows = if outputs.windows.is_empty() {
        String::new()
    } else {
        format!(
            ", {} window results, pattern matches and late events",
            outputs.windows.len()
        )
    };
    format!(
        "{events_in} events in, {} out{windows}\n  {}",
        outputs.events.len(),
        stages.join("\n  ")
    )
}

/// `plugin test`: true when the output matches `--expect` (or, without it,
/// when no batch failed).
pub fn test(opts: &TestOptions) -> Result<bool, DevError> {
    let (outputs, events_in) = replay(opts.wasm.as_ref(), &opts.run)?;
    let failed = failures(&outputs);
    let mut stdout = std::io::stdout().lock();
    let write_err = |e| DevError::Io {
        path: PathBuf::from("stdout"),
        source: e,
    };
    let comparison = match &opts.expect {
        None => {
            for e in &outputs.events {
                writeln!(stdout, "{}", e.to_json()).map_err(write_err)?;
            }
            None
        }
        Some(expect) => {
            let expected = replay::read_values(expect)?;
            Some(compare::compare(&expected, &outputs.values()))
        }
    };
    eprintln!("eddy plugin test: {}", counts(&outputs, events_in));
    for f in &failed {
        eprintln!("FAILED BATCH: {f}");
    }
    let windows_ok = match &opts.expect_windows {
        None => true,
        Some(path) => {
            let expected: Vec<serde_json::Value> = replay::read_values(path)?;
            let expected = Outputs {
                windows: expected,
                ..Outputs::default()
            };
            let c = compare::compare(&expected.window_values(), &outputs.window_values());
            if c.is_empty() {
                writeln!(
                    stdout,
                    "ok: window and pattern results: {}",
                    c.summary(("expected", "actual"))
                )
                .map_err(write_err)?;
            } else {
                write!(
                    stdout,
                    "{}",
                    c.render(("expected", "actual"), opts.run.max_diffs)
                )
                .map_err(write_err)?;
                writeln!(
                    stdout,
                    "FAILED: the window and pattern results differ from {}",
                    path.display()
                )
                .map_err(write_err)?;
            }
            c.is_empty()
        }
    };
    let passed = match &comparison {
        Some(c) => {
            let text = c.render(("expected", "actual"), opts.run.max_diffs);
            if c.is_empty() {
                writeln!(stdout, "ok: {}", c.summary(("expected", "actual"))).map_err(write_err)?;
            } else {
                write!(stdout, "{text}").map_err(write_err)?;
                writeln!(
                    stdout,
                    "FAILED: the output differs from {}",
                    show(&opts.expect)
                )
                .map_err(write_err)?;
            }
            c.is_empty() && failed.is_empty()
        }
        None => failed.is_empty(),
    };
    Ok(passed && windows_ok)
}

fn show(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// `plugin diff`: true when both versions give the same output.
pub fn diff(opts: &DiffOptions) -> Result<bool, DevError> {
    // With a pipeline both versions stand in for the old one's plugin.
    let mut run = opts.run.clone();
    if run.pipeline.is_some() && run.as_plugin.is_none() {
        run.as_plugin = opts
            .old
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_owned);
    }
    let (old, events_in) = replay(Some(&opts.old), &run)?;
    let (new, _) = replay(Some(&opts.new), &run)?;
    let comparison: Comparison = compare::compare(&old.values(), &new.values());
    // With a pipeline that has windows: the results that moved.
    let windows = compare::compare(&old.window_values(), &new.window_values());
    let same = comparison.is_empty() && windows.is_empty();
    if opts.json {
        let report = serde_json::json!({
            "events_in": events_in,
            "same": same,
            "comparison": comparison,
            "windows": windows,
            "old_failures": old.failures,
            "new_failures": new.failures,
        });
        println!("{report}");
    } else {
        eprintln!("old: {}", counts(&old, events_in));
        eprintln!("new: {}", counts(&new, events_in));
        for f in failures(&old) {
            println!("old version: {f}");
        }
        for f in failures(&new) {
            println!("new version: {f}");
        }
        print!("{}", comparison.render(("old", "new"), run.max_diffs));
        if windows.left + windows.right > 0 {
            println!("window and pattern results:");
            print!("{}", windows.render(("old", "new"), run.max_diffs));
        }
    }
    Ok(same)
}
