//! Deterministic replays: recorded events through one plugin or a whole
//! configured pipeline, the same way `eddy serve` runs them, with nothing
//! that depends on the machine or the moment.
//!
//! What makes a replay deterministic:
//!
//! - **Batches** are cut by count only (`--batch-size`, or the pipeline's
//!   `pipeline.batch_size`), never by a linger timer.
//! - **Time** is virtual: before each batch the clock moves to the newest
//!   event timestamp seen so far, and that is what the plugin's WASI clocks
//!   read (see [`crate::plugin::clock`]). Random numbers have a fixed seed.
//! - **Deadlines** still run on the real clock (they guard against runaway
//!   loops), but every stage gets the replay's deadline (10 s by default),
//!   so a slow or busy machine does not change the outcome. Quarantine and
//!   probation, which are about live traffic, are off: every batch calls the
//!   plugin.
//! - **Failures** are reported, never passed through silently: a single
//!   plugin runs with `on_failure = "dead-letter"` and each failed batch is
//!   listed; a pipeline keeps its stages' policies (they are part of its
//!   behaviour) and its stage reports count the failed batches.
//!
//! - **Time** comes from the input alone, exactly as in `eddy pipe --clock
//!   virtual` (both feed the same [`Engine`] the same inputs: see
//!   [`crate::engine::input::file_inputs`]): `{"$wall": MS}` lines set the
//!   wall clock and tick the engine; before the first one, plugins' clocks
//!   read the newest event timestamp so far. Windows fire at the end of the
//!   input. Patterns will join the [`Outputs`] the same way.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::{DevError, io_err};
use crate::config::{Config, FailurePolicy};
use crate::engine::input::{FileLine, file_inputs};
use crate::engine::{Emitted, Engine, EngineOptions};
use crate::event::Event;
use crate::ingest::{DecodeOptions, IdMode, LineDecoder};
use crate::pipeline::StageReport;
use crate::plugin::clock::VirtualClock;
use crate::plugin::registry::plugin_name;
use crate::plugin::{LoadOutcome, PluginEngine, Registry};
use crate::window::LATE_CHANNEL;
use std::sync::Arc;
use std::time::Duration;

/// Default per-call deadline in a replay: long enough that no sane plugin
/// hits it on a loaded 2-core machine (a Python stage takes 15-30 ms for
/// 1,000 events), short enough that an infinite loop ends the test.
pub const DEFAULT_REPLAY_DEADLINE: Duration = Duration::from_secs(10);

/// Compilation limit of a replay: the largest `runtime.compile_timeout_ms`.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(600);

/// Default batch size of a single-plugin replay, as `pipeline.batch_size`.
pub const DEFAULT_REPLAY_BATCH: usize = 1000;

/// How a replay runs.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Per-call deadline of every stage.
    pub deadline: Duration,
    /// Events per batch; `None` means the pipeline's own setting (or
    /// [`DEFAULT_REPLAY_BATCH`] for a single plugin).
    pub batch_size: Option<usize>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            deadline: DEFAULT_REPLAY_DEADLINE,
            batch_size: None,
        }
    }
}

/// A batch a stage failed on.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The stage.
    pub stage: String,
    /// Why.
    pub reason: String,
    /// The ids of the events it failed on.
    pub event_ids: Vec<String>,
}

/// Everything a replay produced.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Events out of the last stage, in order.
    pub events: Vec<Event>,
    /// Failed batches, in order.
    pub failures: Vec<Failure>,
    /// A report per stage (counts, ns/event, version).
    pub stages: Vec<StageReport>,
    /// With a pipeline that has `[[windows]]` or `[[patterns]]`: window
    /// results, pattern matches and timeouts, and late events, as
    /// `{"channel", "data"}` objects, in order.
    pub windows: Vec<Value>,
}

impl Outputs {
    /// The window outputs keyed for comparison: each gets an `id` naming
    /// its channel, kind, window and group (and revision), so the same
    /// result in two runs is matched and a moved value shows as changed.
    pub fn window_values(&self) -> Vec<Value> {
        self.windows
            .iter()
            .map(|w| {
                let d = &w["data"];
                let mut v = d.clone();
                let id = if w["channel"] == LATE_CHANNEL && d.get("pattern").is_some() {
                    format!("late pattern {} {}", d["pattern"], d["event"]["id"])
                } else if w["channel"] == LATE_CHANNEL {
                    format!("late {} {}", d["window"], d["event"]["id"])
                } else if d.get("pattern").is_some() {
                    format!(
                        "{} {} {} [{}, {}] {}",
                        w["channel"].as_str().unwrap_or("?"),
                        d["kind"].as_str().unwrap_or("?"),
                        d["key"],
                        d["start"],
                        d["end"],
                        d["steps"]
                    )
                } else {
                    format!(
                        "{} {} [{}, {}) {} r{}",
                        w["channel"].as_str().unwrap_or("?"),
                        d["kind"].as_str().unwrap_or("?"),
                        d["start"],
                        d["end"],
                        d["group"],
                        d.get("revision").and_then(Value::as_u64).unwrap_or(0)
                    )
                };
                if let Value::Object(m) = &mut v {
                    m.insert("id".into(), Value::from(id));
                }
                v
            })
            .collect()
    }

    /// The output events as JSON values, for comparison.
    pub fn values(&self) -> Vec<Value> {
        self.events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
            .collect()
    }
}

/// A pipeline ready to replay events.
pub struct Replay {
    engine: Engine,
    batch_size: usize,
    /// Keeps a renamed copy of a plugin alive while it is in use.
    _scratch: Option<tempfile::TempDir>,
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Settings that make a configuration replay deterministically.
fn make_deterministic(config: &mut Config, opts: &ReplayOptions, dead_letter: bool) {
    config.runtime.deadline = opts.deadline;
    config.runtime.quarantine_after = u32::MAX;
    config.runtime.probation_batches = 0;
    // Compiling an 18 MB Python component takes 10-25 s on 2 cores, and
    // minutes when they are busy; a test must not fail for that.
    config.runtime.compile_timeout = config.runtime.compile_timeout.max(COMPILE_TIMEOUT);
    for stage in &mut config.stages {
        stage.deadline = None;
        if dead_letter {
            stage.on_failure = FailurePolicy::DeadLetter;
        }
    }
    if let Some(n) = opts.batch_size {
        config.pipeline.batch_size = n;
    }
}

fn plugin_engine(clock: &Arc<VirtualClock>) -> Result<Arc<PluginEngine>, DevError> {
    PluginEngine::with_virtual_clock(clock.clone()).map_err(|e| DevError::Engine(format!("{e:#}")))
}

fn load(registry: &Registry, path: &Path) -> Result<(), DevError> {
    match registry.load_file(path) {
        Ok(LoadOutcome::Loaded | LoadOutcome::Swapped | LoadOutcome::Unchanged) => Ok(()),
        Ok(LoadOutcome::Rejected) => Err(DevError::Load {
            path: path.to_path_buf(),
            error: crate::plugin::PluginError::Compile("refused".into()),
        }),
        Err(error) => Err(DevError::Load {
            path: path.to_path_buf(),
            error,
        }),
    }
}

impl Replay {
    /// One plugin, as the only stage, configured with `config` (a JSON
    /// object) and granted `allow` (see the stage's `allow`).
    pub fn plugin(
        path: &Path,
        config: Value,
        allow: &[String],
        opts: &ReplayOptions,
    ) -> Result<Replay, DevError> {
        if !path.is_file() {
            return Err(DevError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        // The registry names a plugin after its file; a file whose name is
        // not a plugin name is replayed under a copy that is.
        let (path, scratch) = match plugin_name(path) {
            Some(_) => (path.to_path_buf(), None),
            None => {
                let dir = tempfile::tempdir().map_err(io_err(std::env::temp_dir()))?;
                let copy = dir.path().join("plugin.wasm");
                std::fs::copy(path, &copy).map_err(io_err(path))?;
                (copy, Some(dir))
            }
        };
        let name = plugin_name(&path).unwrap_or("plugin").to_owned();
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let text = format!(
            "plugins_dir = {}\n[[stages]]\nplugin = {}\n",
            toml_string(&dir.display().to_string()),
            toml_string(&name)
        );
        let mut config_file = Config::parse(&text, "eddy plugin test", &|_| None)?;
        if let Some(stage) = config_file.stages.first_mut() {
            stage.config = config;
        }
        if !allow.is_empty() {
            config_file.runtime.grants.insert(name, allow.to_vec());
        }
        let mut opts = opts.clone();
        opts.batch_size = Some(opts.batch_size.unwrap_or(DEFAULT_REPLAY_BATCH));
        make_deterministic(&mut config_file, &opts, true);
        Self::start(config_file, &[path], scratch)
    }

    /// The pipeline `config_path` describes, with its plugins from its
    /// plugins folder, except that `replace = (file, plugin)` stands in for
    /// the stages' plugin `plugin`.
    pub fn pipeline(
        config_path: &Path,
        replace: Option<(&Path, &str)>,
        opts: &ReplayOptions,
    ) -> Result<Replay, DevError> {
        let mut config = Config::load(Some(config_path))?;
        if let Some((path, name)) = replace
            && !config.stages.iter().any(|s| s.plugin == name)
        {
            return Err(DevError::BadConfig {
                path: config_path.to_path_buf(),
                message: format!(
                    "no stage uses plugin `{name}`, so {} would not run; name the stage's plugin with --as",
                    path.display()
                ),
            });
        }
        // A stand-in with another file name is loaded under the stages'
        // plugin name, from a copy.
        let mut scratch = None;
        let replace = match replace {
            Some((path, name)) if plugin_name(path) != Some(name) => {
                let dir = tempfile::tempdir().map_err(io_err(std::env::temp_dir()))?;
                let copy = dir.path().join(format!("{name}.wasm"));
                std::fs::copy(path, &copy).map_err(io_err(path))?;
                scratch = Some(dir);
                Some((copy, name))
            }
            other => other.map(|(p, n)| (p.to_path_buf(), n)),
        };
        let names: BTreeSet<&str> = config.stages.iter().map(|s| s.plugin.as_str()).collect();
        let mut files = Vec::new();
        for name in names {
            match &replace {
                Some((path, r)) if *r == name => files.push(path.clone()),
                _ => files.push(config.plugins_dir.join(format!("{name}.wasm"))),
            }
        }
        make_deterministic(&mut config, opts, false);
        Self::start(config, &files, scratch)
    }

    fn start(
        config: Config,
        files: &[PathBuf],
        scratch: Option<tempfile::TempDir>,
    ) -> Result<Replay, DevError> {
        let clock = VirtualClock::new();
        let registry = Registry::new(
            plugin_engine(&clock)?,
            config.runtime.clone(),
            config.plugins_dir.clone(),
        );
        for file in files {
            load(&registry, file)?;
        }
        let options = EngineOptions {
            first_seq: 1,
            seed: 0,
            plugins: registry.live_versions(),
        };
        let engine = Engine::new(&config, registry, clock, &options).map_err(|e| match e {
            crate::engine::EngineError::Stage(p) => DevError::Pipeline(p),
            other => DevError::Engine(other.to_string()),
        })?;
        Ok(Replay {
            engine,
            batch_size: config.pipeline.batch_size.max(1),
            _scratch: scratch,
        })
    }

    /// Run the input through, batch by batch, as `eddy pipe --clock virtual`
    /// would.
    pub fn run(&mut self, input: Vec<FileLine>) -> Outputs {
        let mut outputs = Outputs::default();
        let names = self.engine.window_names().to_vec();
        let mut emitted: Vec<Emitted> = Vec::new();
        for i in file_inputs(input, self.batch_size) {
            self.engine.step(i, &mut emitted);
            for out in emitted.drain(..) {
                match out {
                    Emitted::Events { events, .. } => outputs.events.extend(events),
                    // Dead letters of one batch and stage come together, in
                    // order.
                    Emitted::DeadLetters { letters, .. } => {
                        for letter in letters {
                            match outputs.failures.last_mut() {
                                Some(f) if f.stage == letter.stage && f.reason == letter.reason => {
                                    f.event_ids.push(letter.event.id.to_string());
                                }
                                _ => outputs.failures.push(Failure {
                                    stage: letter.stage,
                                    reason: letter.reason,
                                    event_ids: vec![letter.event.id.to_string()],
                                }),
                            }
                        }
                    }
                    w @ (Emitted::Window { .. } | Emitted::Pattern { .. }) => {
                        let channel = w.channel(&names);
                        for (_, data) in w.messages() {
                            outputs
                                .windows
                                .push(serde_json::json!({"channel": channel, "data": data}));
                        }
                    }
                    // Alert transitions are `eddy pipe`'s and serve's; plugin
                    // tests compare what plugins change.
                    Emitted::Plugin { .. } | Emitted::Alert { .. } => {}
                }
            }
        }
        outputs.stages = self.engine.stage_reports();
        outputs
    }
}

/// The events of an input, in order (its `$wall` lines left out).
pub fn events(input: &[FileLine]) -> Vec<Event> {
    input
        .iter()
        .filter_map(|l| match l {
            FileLine::Event(_, e) => Some(e.clone()),
            FileLine::Wall(..) => None,
        })
        .collect()
}

/// Read an input file: NDJSON events, decoded as `eddy pipe` decodes them
/// (the ingest decoder; events without an `id` get `line-N`), and
/// `{"$wall": MS}` lines. Blank lines are skipped; any other line that is
/// not an event is an error naming it.
pub fn read_input(path: &Path) -> Result<Vec<FileLine>, DevError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let mut decoder = LineDecoder::new(DecodeOptions {
        limits: crate::config::IngestConfig::default().limits(),
        now_ms: None,
        check_time: false,
        ids: IdMode::Line,
    });
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        let bad = |message: String| DevError::BadLine {
            path: path.to_path_buf(),
            line: n,
            message,
        };
        if let Some(wall) = crate::ingest::wall_directive(line) {
            let ms = wall.map_err(bad)?;
            // Events without a timestamp get the clock's time, as in `eddy
            // pipe --clock virtual`.
            decoder.set_now_ms(Some(ms));
            lines.push(FileLine::Wall(n as u64, ms));
            continue;
        }
        let event = decoder
            .decode(line.as_bytes(), n)
            .map_err(|e| bad(format!("not an event: {}", e.error)))?;
        lines.push(FileLine::Event(n as u64, event));
    }
    Ok(lines)
}

/// Read NDJSON as plain JSON values (an expected output).
pub fn read_values(path: &Path) -> Result<Vec<Value>, DevError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| DevError::BadLine {
                path: path.to_path_buf(),
                line: i + 1,
                message: format!("not JSON: {e}"),
            })
        })
        .collect()
}

/// Read a plugin configuration: a TOML table (as a stage's
/// `[stages.config]`) or, for a `.json` file, a JSON object.
pub fn read_plugin_config(path: &Path) -> Result<Value, DevError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let bad = |message: String| DevError::BadConfig {
        path: path.to_path_buf(),
        message,
    };
    let value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str::<Value>(&text).map_err(|e| bad(e.to_string()))?
    } else {
        let table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        serde_json::to_value(table).map_err(|e| bad(e.to_string()))?
    };
    if !value.is_object() {
        return Err(bad(
            "a plugin configuration is an object (a TOML table)".into()
        ));
    }
    Ok(value)
}
