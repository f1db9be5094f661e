//! The wasmtime side: one [`Engine`] for the process, components compiled
//! off the hot path, and [`Instance`]s that run every call under a deadline
//! and a memory cap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config as WasmConfig, Engine, Store, Trap};

use super::bindings::alert::exports::eddy::plugin::alerting as awit;
use super::bindings::alert::{Alert, AlertPre};
use super::bindings::eddy::plugin::types as wit;
use super::bindings::exports::eddy::plugin::plugin::Info;
use super::bindings::pattern::exports::eddy::plugin::matching as pwit;
use super::bindings::pattern::{Pattern, PatternPre};
use super::bindings::{Processor, ProcessorPre};
use super::capabilities::{self, CapabilityError};
use super::clock::VirtualClock;
use super::compile_cache::{CompileCache, Lookup};
use super::host_api::{PluginShared, StoreData};
use super::state_store::{StateLimits, StateStore};

/// How often the epoch advances. Deadlines are whole ticks, so a call is cut
/// off at most one tick after its deadline: 5 ms keeps a 100 ms deadline
/// within 10 % while the ticker thread costs nothing measurable.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Compiled components kept by content hash, so a file that comes back (a
/// rollback, a re-added file, a version restored by hand) is not compiled
/// again. A compiled component is its machine code, a few times the size of
/// the `.wasm`; 32 of the example plugins' size is a few MiB.
pub const COMPILED_CACHE_ENTRIES: usize = 32;

/// Why a plugin could not be loaded or called.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginError {
    /// Not a valid component, or not one eddy can run.
    #[error("not a loadable component: {0}")]
    Compile(String),
    /// A compiled version could not be kept in the data directory's version
    /// store, so it does not go live (a restart could not restore it).
    #[error("{0}")]
    Keep(String),
    /// Compilation took longer than `runtime.compile_timeout_ms`.
    #[error("compilation took longer than {0:?}")]
    CompileTimeout(Duration),
    /// A valid component of the wrong world, or with imports eddy does not
    /// provide.
    #[error(
        "component does not fit the eddy:plugin/processor, eddy:plugin/pattern or eddy:plugin/alert world: {0}"
    )]
    WrongWorld(String),
    /// A plugin of one kind where another is needed: a processor stage
    /// naming a pattern plugin, a pattern naming an alert plugin, ...
    #[error(
        "plugin `{plugin}` is {found} plugin, but {wanted} plugin is needed here \
         (a pipeline stage runs a processor; a pattern runs a pattern plugin; \
         an alert runs an alert plugin)"
    )]
    WrongKind {
        /// The plugin's name.
        plugin: String,
        /// What it is.
        found: PluginKind,
        /// What the caller needs.
        wanted: PluginKind,
    },
    /// A pattern plugin's description breaks the rules of
    /// `wit/pattern.wit` (too many steps, a duplicate name, ...).
    #[error("the plugin's pattern is invalid: {0}")]
    BadPattern(String),
    /// The component imports capabilities (files, sockets, ...) that its
    /// stages do not grant; see [`super::capabilities`].
    #[error("refused by the capability policy: {0}")]
    NotGranted(#[from] CapabilityError),
    /// The call ran past its deadline and was interrupted.
    #[error("call exceeded its {0:?} deadline and was interrupted")]
    Deadline(Duration),
    /// The instance asked for more memory than its cap.
    #[error("instance exceeded its memory limit of {0} bytes")]
    Memory(u64),
    /// The guest trapped (a panic, an unreachable, a bad access...).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The guest returned an error.
    #[error("plugin returned an error: {0}")]
    Returned(String),
    /// The plugin failed repeatedly and is not called until engine time
    /// `until_ms` (a pattern plugin's quarantine backoff).
    #[error("plugin is quarantined after repeated failures until engine time {until_ms} ms")]
    Quarantined {
        /// End of the backoff (engine time, ms).
        until_ms: i64,
    },
    /// `configure` refused the stage's configuration.
    #[error("plugin rejected its configuration: {0}")]
    Config(String),
    /// The result broke the batch contract.
    #[error("{0}")]
    Abi(#[from] super::abi::AbiError),
    /// The host's own code panicked during the call (a bug in eddy, not in
    /// the plugin); the instance is discarded.
    #[error("eddy failed running this call (a host bug: please report it): {0}")]
    HostPanic(String),
}

/// The kinds of plugin, one per WIT world; a component's kind is found
/// from its exports when it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    /// The `processor` world: a pipeline stage.
    Processor,
    /// The `pattern` world: a sequence pattern whose conditions need code.
    Pattern,
    /// The `alert` world: alert rules whose condition needs code.
    Alert,
}

impl PluginKind {
    /// The world's name, as in `wit/worlds.wit`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Processor => "processor",
            PluginKind::Pattern => "pattern",
            PluginKind::Alert => "alert",
        }
    }

    /// The kind whose world exports the interfaces named in `exports`
    /// (component export names such as `eddy:plugin/matching@0.1.0`): a
    /// component exporting the `matching` interface is a pattern plugin,
    /// one exporting `alerting` an alert plugin, anything else is checked
    /// as a processor.
    pub fn from_exports<'a>(exports: impl IntoIterator<Item = &'a str>) -> PluginKind {
        let is = |e: &str, interface: &str| {
            e.strip_prefix("eddy:plugin/")
                .and_then(|e| e.strip_prefix(interface))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('@'))
        };
        let mut kind = PluginKind::Processor;
        for e in exports {
            if is(e, "matching") {
                kind = PluginKind::Pattern;
            } else if is(e, "alerting") {
                kind = PluginKind::Alert;
            }
        }
        kind
    }

    /// The kind of the component in `bytes`, read from its top-level
    /// exports without compiling it (milliseconds for a 20 MB component);
    /// `None` if it is not a component this can read (loading it says why).
    pub fn of_component(bytes: &[u8]) -> Option<PluginKind> {
        use wasmparser::{Encoding, Parser, Payload};
        let mut depth = 0usize;
        let mut component = false;
        let mut names = Vec::new();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.ok()? {
                Payload::Version { encoding, .. } if depth == 0 => {
                    component = encoding == Encoding::Component;
                }
                // Nested modules and components: their payloads follow,
                // up to their own `End`.
                Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
                Payload::End(_) => match depth.checked_sub(1) {
                    Some(d) => depth = d,
                    None => break,
                },
                Payload::ComponentExportSection(reader) if depth == 0 => {
                    for export in reader {
                        names.push(export.ok()?.name.name);
                    }
                }
                _ => {}
            }
        }
        component.then(|| PluginKind::from_exports(names))
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginKind::Processor => "a processor",
            PluginKind::Pattern => "a pattern",
            PluginKind::Alert => "an alert",
        })
    }
}

impl PluginError {
    /// Whether the instance must be thrown away (never reuse a Store after
    /// a trap).
    pub fn poisons_instance(&self) -> bool {
        !matches!(
            self,
            PluginError::Returned(_) | PluginError::Quarantined { .. }
        )
    }
}

/// The process-wide wasmtime engine, linker and epoch ticker.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<StoreData>,
    stop: Arc<AtomicBool>,
    cache: Mutex<HashMap<String, Component>>,
    /// Compiled components on disk, across runs (`None`: off).
    disk: Option<CompileCache>,
    /// Clocks and randomness of every instance, for deterministic runs;
    /// the real ones when `None`.
    clock: Option<Arc<VirtualClock>>,
}

/// A pre-linked component of one of the plugin worlds.
pub enum Pre {
    /// A processor.
    Processor(ProcessorPre<StoreData>),
    /// A pattern plugin.
    Pattern(PatternPre<StoreData>),
    /// An alert plugin.
    Alert(AlertPre<StoreData>),
}

impl Pre {
    /// The plugin kind this component is.
    pub fn kind(&self) -> PluginKind {
        match self {
            Pre::Processor(_) => PluginKind::Processor,
            Pre::Pattern(_) => PluginKind::Pattern,
            Pre::Alert(_) => PluginKind::Alert,
        }
    }
}

/// A compiled, type-checked plugin version, ready to instantiate.
pub struct Compiled {
    /// Pre-linked component.
    pub pre: Pre,
    /// What kind of plugin it is (the world its exports implement).
    pub kind: PluginKind,
    /// A pattern plugin's pattern, as `describe-pattern` answered (and
    /// checked) when the version was loaded; `None` for other kinds.
    pub pattern: Option<super::pattern::PatternDescription>,
    /// Hex SHA-256 of the file's bytes.
    pub hash: String,
    /// The component's size in bytes.
    pub size: usize,
    /// What `describe()` answered.
    pub info: Info,
    /// When it was compiled.
    pub loaded_at: SystemTime,
    /// How long compilation took (or loading it from a cache).
    pub compile_time: Duration,
    /// Where the machine code came from.
    pub compiled_from: CompiledFrom,
    /// The file's bytes, when the registry keeps them (`eddy serve
    /// --record` copies every version it runs next to the record).
    pub bytes: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("hash", &self.hash)
            .field("kind", &self.kind)
            .field("size", &self.size)
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .finish()
    }
}

/// Where a component's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompiledFrom {
    /// Compiled now.
    Compiler,
    /// The process had compiled it already (a rollback, a file back).
    Memory,
    /// The compile cache on disk ([`CompileCache`]).
    Disk,
}

impl CompiledFrom {
    /// How a load notice says it.
    pub fn describe(self) -> &'static str {
        match self {
            CompiledFrom::Compiler => "compiled in",
            CompiledFrom::Memory => "already compiled; ready in",
            CompiledFrom::Disk => "loaded from the compile cache in",
        }
    }
}

/// What [`PluginEngine::inspect`] found out about a component.
#[derive(Debug)]
pub struct Inspection {
    /// The component's size in bytes.
    pub size: usize,
    /// Hex SHA-256 of its bytes.
    pub hash: String,
    /// Its import names, in the component's order
    /// (e.g. `wasi:cli/environment@0.2.6`).
    pub imports: Vec<String>,
    /// Its export names (e.g. `eddy:plugin/processing@0.1.0`).
    pub exports: Vec<String>,
    /// What `describe()` answered, or why it could not be called (the
    /// component is not an eddy processor, it trapped, ...).
    pub describe: Result<Info, PluginError>,
}

/// Hex SHA-256 of `bytes`: the identity of a plugin version.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn ticks(deadline: Duration) -> u64 {
    // Round up, plus one: the current tick may be about to end.
    (deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).saturating_add(1)
}

impl PluginEngine {
    /// A new engine with epoch interruption and the eddy imports linked.
    pub fn new() -> anyhow::Result<Arc<Self>> {
        Self::build(None)
    }

    /// [`PluginEngine::new`], whose instances read `clock` for the time and
    /// get fixed-seed randomness (`eddy plugin test`; see
    /// [`super::clock`]). Deadlines still run on real time.
    pub fn with_virtual_clock(clock: Arc<VirtualClock>) -> anyhow::Result<Arc<Self>> {
        Self::build(Some(clock))
    }

    fn build(clock: Option<Arc<VirtualClock>>) -> anyhow::Result<Arc<Self>> {
        let mut config = WasmConfig::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // `EDDY_PERFMAP=1` writes /tmp/perf-<pid>.map so `perf report` names
        // plugin functions (profiling plugins; see docs/benchmarks.md).
        if std::env::var_os("EDDY_PERFMAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;
        let disk = CompileCache::from_env(&engine);
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Processor::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let ticker_stop = stop.clone();
        thread::Builder::new()
            .name("eddy-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(Arc::new(PluginEngine {
            engine,
            linker,
            stop,
            cache: Mutex::new(HashMap::new()),
            disk,
            clock,
        }))
    }

    /// Compile `bytes` on a worker thread, giving up after `timeout`, then
    /// check it is a processor by instantiating it once and calling
    /// `describe()` under `timeout` too. Only imports allowed by default are
    /// accepted: see [`PluginEngine::compile_granted`].
    pub fn compile(
        self: &Arc<Self>,
        bytes: Vec<u8>,
        timeout: Duration,
        shared: Arc<PluginShared>,
        memory_limit: u64,
    ) -> Result<Arc<Compiled>, PluginError> {
        self.compile_granted(bytes, timeout, shared, memory_limit, &[], false)
    }

    /// [`PluginEngine::compile`], with the component's imports checked
    /// against the default policy plus `grants` (the plugin's `allow` list)
    /// before it is linked or any of its code runs. `keep_bytes` keeps a
    /// copy of `bytes` in the result.
    pub fn compile_granted(
        self: &Arc<Self>,
        bytes: Vec<u8>,
        timeout: Duration,
        shared: Arc<PluginShared>,
        memory_limit: u64,
        grants: &[String],
        keep_bytes: bool,
    ) -> Result<Arc<Compiled>, PluginError> {
        let started = Instant::now();
        let hash = content_hash(&bytes);
        let size = bytes.len();
        let kept: Option<Arc<[u8]>> = keep_bytes.then(|| Arc::from(bytes.as_slice()));
        let (component, compiled_from) = self.component(bytes, &hash, timeout)?;
        let ty = component.component_type();
        capabilities::check(
            &shared.name,
            ty.imports(&self.engine).map(|(name, _)| name),
            grants,
        )?;
        let compile_time = started.elapsed();
        let pre = self.pre(&component)?;
        let state = probe_state(&shared);
        let mut probe = self.instantiate_raw(&pre, shared, state, memory_limit, timeout, 0)?;
        let info = probe.describe(timeout)?;
        // A pattern plugin's pattern is part of the version: checked now,
        // so a version with a bad pattern never goes live.
        let pattern = match &pre {
            Pre::Pattern(_) => {
                let described = probe.describe_pattern(timeout)?;
                let description = super::pattern::PatternDescription::from(described);
                description.check().map_err(PluginError::BadPattern)?;
                Some(description)
            }
            Pre::Processor(_) | Pre::Alert(_) => None,
        };
        Ok(Arc::new(Compiled {
            kind: pre.kind(),
            pre,
            pattern,
            hash,
            size,
            info,
            loaded_at: SystemTime::now(),
            compile_time,
            compiled_from,
            bytes: kept,
        }))
    }

    /// The compiled component for `bytes` (whose hash is `hash`): from
    /// memory, from the compile cache on disk, or compiled now (and kept in
    /// both).
    fn component(
        &self,
        bytes: Vec<u8>,
        hash: &str,
        timeout: Duration,
    ) -> Result<(Component, CompiledFrom), PluginError> {
        if let Some(c) = self.cached(hash) {
            return Ok((c, CompiledFrom::Memory));
        }
        if let Some(disk) = &self.disk {
            match disk.load(&self.engine, hash) {
                Lookup::Hit(c) => {
                    self.remember(hash, &c);
                    return Ok((c, CompiledFrom::Disk));
                }
                Lookup::Miss => {}
                Lookup::Rejected(why) => {
                    tracing::warn!(%why, "a compiled component in the compile cache was not loaded; compiling it again");
                }
            }
        }
        let c = self.compile_on_thread(bytes, timeout)?;
        self.remember(hash, &c);
        if let Some(disk) = &self.disk
            && let Err(e) = disk.store(hash, &c)
        {
            tracing::warn!(dir = %disk.dir().display(), error = %e, "cannot keep a compiled component in the compile cache");
        }
        Ok((c, CompiledFrom::Compiler))
    }

    /// Compile `bytes` into the compile cache on disk (`eddy plugin
    /// build`), so the first load is fast; `None` when the cache is off.
    pub fn precompile(
        &self,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Option<(CompiledFrom, std::path::PathBuf)>, PluginError> {
        let Some(disk) = &self.disk else {
            return Ok(None);
        };
        let hash = content_hash(&bytes);
        let (_, from) = self.component(bytes, &hash, timeout)?;
        Ok(Some((from, disk.path(&hash))))
    }

    /// Everything `eddy plugin inspect` shows about a component: its size,
    /// hash, imports and exports, and what `describe()` answers. The imports
    /// are not checked against any policy here (the caller reports the
    /// verdicts), so `describe()` runs even for a component that would need
    /// a grant to load, in the same sandbox a loaded plugin gets: no files,
    /// no network, `timeout` and `memory_limit` apply.
    pub fn inspect(
        self: &Arc<Self>,
        bytes: Vec<u8>,
        timeout: Duration,
        memory_limit: u64,
        shared: Arc<PluginShared>,
    ) -> Result<Inspection, PluginError> {
        let hash = content_hash(&bytes);
        let size = bytes.len();
        let (component, _) = self.component(bytes, &hash, timeout)?;
        let ty = component.component_type();
        let imports = ty
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let exports = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let describe = self
            .pre(&component)
            .and_then(|pre| {
                let state = probe_state(&shared);
                self.instantiate_raw(&pre, shared, state, memory_limit, timeout, 0)
            })
            .and_then(|mut probe| probe.describe(timeout));
        Ok(Inspection {
            size,
            hash,
            imports,
            exports,
            describe,
        })
    }

    /// Link `component` as the kind its exports say it is.
    fn pre(&self, component: &Component) -> Result<Pre, PluginError> {
        let wrong = |e: wasmtime::Error| PluginError::WrongWorld(format!("{e:#}"));
        let ty = component.component_type();
        let kind = PluginKind::from_exports(ty.exports(&self.engine).map(|(name, _)| name));
        let pre = self.linker.instantiate_pre(component).map_err(wrong)?;
        Ok(match kind {
            PluginKind::Processor => Pre::Processor(ProcessorPre::new(pre).map_err(wrong)?),
            PluginKind::Pattern => Pre::Pattern(PatternPre::new(pre).map_err(wrong)?),
            PluginKind::Alert => Pre::Alert(AlertPre::new(pre).map_err(wrong)?),
        })
    }

    fn cached(&self, hash: &str) -> Option<Component> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(hash).cloned()
    }

    fn remember(&self, hash: &str, component: &Component) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= COMPILED_CACHE_ENTRIES {
            // Any entry will do: live versions hold their own reference.
            if let Some(k) = cache.keys().next().cloned() {
                cache.remove(&k);
            }
        }
        cache.insert(hash.to_owned(), component.clone());
    }

    /// Compile on a worker thread; cranelift cannot be interrupted, so on
    /// timeout the thread is abandoned and its result dropped.
    fn compile_on_thread(
        &self,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Component, PluginError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let engine = self.engine.clone();
        thread::Builder::new()
            .name("eddy-compile".into())
            .spawn(move || {
                // The receiver may be gone after a timeout; nothing to do then.
                let _ = tx.send(Component::new(&engine, &bytes));
            })
            .map_err(|e| PluginError::Compile(format!("cannot start compiler thread: {e}")))?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(PluginError::Compile(format!("{e:#}"))),
            Err(_) => Err(PluginError::CompileTimeout(timeout)),
        }
    }

    fn instantiate_raw(
        &self,
        pre: &Pre,
        shared: Arc<PluginShared>,
        state: Arc<StateStore>,
        memory_limit: u64,
        deadline: Duration,
        seed: u64,
    ) -> Result<Instance, PluginError> {
        let mut store = Store::new(
            &self.engine,
            StoreData::with_clock(shared, state, memory_limit, self.clock.as_ref(), seed),
        );
        store.limiter(|d| d);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(deadline));
        let bindings = match pre {
            Pre::Processor(p) => p.instantiate(&mut store).map(Bindings::Processor),
            Pre::Pattern(p) => p.instantiate(&mut store).map(Bindings::Pattern),
            Pre::Alert(p) => p.instantiate(&mut store).map(Bindings::Alert),
        }
        .map_err(|e| classify(e, &store, deadline, memory_limit))?;
        Ok(Instance {
            store,
            bindings,
            memory_limit,
        })
    }

    /// A fresh instance of processor `compiled`, configured with `config`
    /// (JSON), whose `state` import reads and writes `state` (its stage's
    /// store, which outlives the instance). Under a virtual clock its random
    /// sources start from `seed`. A pattern plugin is refused with
    /// [`PluginError::WrongKind`]: a stage cannot run one.
    #[allow(
        clippy::too_many_arguments,
        reason = "each is one setting of the stage the instance is for"
    )]
    pub fn instantiate(
        &self,
        compiled: &Compiled,
        shared: Arc<PluginShared>,
        state: Arc<StateStore>,
        memory_limit: u64,
        config: &str,
        deadline: Duration,
        log_budget: u32,
        seed: u64,
    ) -> Result<Instance, PluginError> {
        self.instantiate_as(
            PluginKind::Processor,
            compiled,
            shared,
            state,
            memory_limit,
            config,
            deadline,
            log_budget,
            seed,
        )
    }

    /// [`PluginEngine::instantiate`] for a pattern plugin (see
    /// [`super::pattern::PatternInstance`]).
    #[allow(
        clippy::too_many_arguments,
        reason = "each is one setting of the pattern the instance is for"
    )]
    pub fn instantiate_pattern(
        &self,
        compiled: &Compiled,
        shared: Arc<PluginShared>,
        state: Arc<StateStore>,
        memory_limit: u64,
        config: &str,
        deadline: Duration,
        log_budget: u32,
        seed: u64,
    ) -> Result<Instance, PluginError> {
        self.instantiate_as(
            PluginKind::Pattern,
            compiled,
            shared,
            state,
            memory_limit,
            config,
            deadline,
            log_budget,
            seed,
        )
    }

    /// [`PluginEngine::instantiate`] for an alert plugin (see
    /// [`super::alert::AlertPlugin`]).
    #[allow(
        clippy::too_many_arguments,
        reason = "each is one setting of the alert the instance is for"
    )]
    pub fn instantiate_alert(
        &self,
        compiled: &Compiled,
        shared: Arc<PluginShared>,
        state: Arc<StateStore>,
        memory_limit: u64,
        config: &str,
        deadline: Duration,
        log_budget: u32,
        seed: u64,
    ) -> Result<Instance, PluginError> {
        self.instantiate_as(
            PluginKind::Alert,
            compiled,
            shared,
            state,
            memory_limit,
            config,
            deadline,
            log_budget,
            seed,
        )
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the settings of instantiate, and the kind wanted"
    )]
    fn instantiate_as(
        &self,
        wanted: PluginKind,
        compiled: &Compiled,
        shared: Arc<PluginShared>,
        state: Arc<StateStore>,
        memory_limit: u64,
        config: &str,
        deadline: Duration,
        log_budget: u32,
        seed: u64,
    ) -> Result<Instance, PluginError> {
        if compiled.kind != wanted {
            return Err(PluginError::WrongKind {
                plugin: shared.name.clone(),
                found: compiled.kind,
                wanted,
            });
        }
        shared.attach_state(&state);
        let mut instance =
            self.instantiate_raw(&compiled.pre, shared, state, memory_limit, deadline, seed)?;
        instance.store.data_mut().log_budget = log_budget;
        instance.configure(config, deadline)?;
        instance.commit_state();
        Ok(instance)
    }
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A store for an instance that only answers `describe()` (a load check, an
/// inspection): nothing it writes is ever committed, and no stage sees it.
fn probe_state(shared: &PluginShared) -> Arc<StateStore> {
    Arc::new(StateStore::new(
        "(probe)",
        StateLimits::from(shared.limits()),
    ))
}

/// An instance's exports, by world.
enum Bindings {
    Processor(Processor),
    Pattern(Pattern),
    Alert(Alert),
}

/// One live plugin instance: a Store and its bindings. Thrown away after a
/// trap; never reused.
pub struct Instance {
    store: Store<StoreData>,
    bindings: Bindings,
    memory_limit: u64,
}

/// Longest error message taken from a plugin, in bytes: it is copied into
/// logs and into every dead letter of the failed batch.
pub const MAX_PLUGIN_MESSAGE_BYTES: usize = 1024;

fn clip(msg: String) -> String {
    super::host_api::truncated(&msg, MAX_PLUGIN_MESSAGE_BYTES).to_owned()
}

fn classify(
    err: wasmtime::Error,
    store: &Store<StoreData>,
    deadline: Duration,
    memory_limit: u64,
) -> PluginError {
    if let Some(Trap::Interrupt) = err.downcast_ref::<Trap>() {
        return PluginError::Deadline(deadline);
    }
    if store.data().memory_refused {
        return PluginError::Memory(memory_limit);
    }
    PluginError::Trap(format!("{err:#}"))
}

impl Instance {
    /// The plugin's kind.
    pub fn kind(&self) -> PluginKind {
        match self.bindings {
            Bindings::Processor(_) => PluginKind::Processor,
            Bindings::Pattern(_) => PluginKind::Pattern,
            Bindings::Alert(_) => PluginKind::Alert,
        }
    }

    fn describe(&mut self, deadline: Duration) -> Result<Info, PluginError> {
        self.store.set_epoch_deadline(ticks(deadline));
        let r = match &self.bindings {
            Bindings::Processor(b) => b.eddy_plugin_plugin().call_describe(&mut self.store),
            // The same WIT record, generated once per world.
            Bindings::Pattern(b) => {
                b.eddy_plugin_plugin()
                    .call_describe(&mut self.store)
                    .map(|i| Info {
                        name: i.name,
                        version: i.version,
                        description: i.description,
                        config_schema: i.config_schema,
                    })
            }
            Bindings::Alert(b) => b
                .eddy_plugin_plugin()
                .call_describe(&mut self.store)
                .map(|i| Info {
                    name: i.name,
                    version: i.version,
                    description: i.description,
                    config_schema: i.config_schema,
                }),
        };
        r.map_err(|e| classify(e, &self.store, deadline, self.memory_limit))
    }

    fn configure(&mut self, config: &str, deadline: Duration) -> Result<(), PluginError> {
        self.store.set_epoch_deadline(ticks(deadline));
        let r = match &self.bindings {
            Bindings::Processor(b) => b
                .eddy_plugin_plugin()
                .call_configure(&mut self.store, config),
            Bindings::Pattern(b) => b
                .eddy_plugin_plugin()
                .call_configure(&mut self.store, config),
            Bindings::Alert(b) => b
                .eddy_plugin_plugin()
                .call_configure(&mut self.store, config),
        };
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(PluginError::Config(clip(msg))),
            Err(e) => Err(classify(e, &self.store, deadline, self.memory_limit)),
        }
    }

    /// Make the last call's state writes permanent (its batch succeeded).
    pub fn commit_state(&mut self) {
        self.store.data_mut().commit_state();
    }

    /// Forget the last call's state writes (its batch failed).
    pub fn discard_state(&mut self) {
        self.store.data_mut().discard_state();
    }

    /// Process one batch under `deadline`, allowing `log_budget` log records.
    /// State writes stay pending until [`Instance::commit_state`].
    pub fn process(
        &mut self,
        batch: &wit::Batch,
        deadline: Duration,
        log_budget: u32,
    ) -> Result<wit::Processed, PluginError> {
        let Bindings::Processor(bindings) = &self.bindings else {
            return Err(self.wrong_kind(PluginKind::Processor));
        };
        self.store.set_epoch_deadline(ticks(deadline));
        self.store.data_mut().log_budget = log_budget;
        let r = bindings
            .eddy_plugin_processing()
            .call_process(&mut self.store, batch);
        match r {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(msg)) => Err(PluginError::Returned(clip(msg))),
            Err(e) => Err(classify(e, &self.store, deadline, self.memory_limit)),
        }
    }

    fn wrong_kind(&self, wanted: PluginKind) -> PluginError {
        PluginError::WrongKind {
            plugin: self.store.data().shared.name.clone(),
            found: self.kind(),
            wanted,
        }
    }

    /// Ask a pattern plugin for its pattern, under `deadline`.
    pub fn describe_pattern(
        &mut self,
        deadline: Duration,
    ) -> Result<pwit::PatternDescription, PluginError> {
        let Bindings::Pattern(bindings) = &self.bindings else {
            return Err(self.wrong_kind(PluginKind::Pattern));
        };
        self.store.set_epoch_deadline(ticks(deadline));
        bindings
            .eddy_plugin_matching()
            .call_describe_pattern(&mut self.store)
            .map_err(|e| classify(e, &self.store, deadline, self.memory_limit))
    }

    /// Classify a batch with a pattern plugin, under `deadline`, allowing
    /// `log_budget` log records. State writes stay pending until
    /// [`Instance::commit_state`].
    pub fn classify(
        &mut self,
        batch: &wit::Batch,
        deadline: Duration,
        log_budget: u32,
    ) -> Result<Vec<pwit::ConditionBits>, PluginError> {
        let Bindings::Pattern(bindings) = &self.bindings else {
            return Err(self.wrong_kind(PluginKind::Pattern));
        };
        self.store.set_epoch_deadline(ticks(deadline));
        self.store.data_mut().log_budget = log_budget;
        match bindings
            .eddy_plugin_matching()
            .call_classify(&mut self.store, batch)
        {
            Ok(Ok(bits)) => Ok(bits),
            Ok(Err(msg)) => Err(PluginError::Returned(clip(msg))),
            Err(e) => Err(classify(e, &self.store, deadline, self.memory_limit)),
        }
    }

    /// Hand a completed match to a pattern plugin, under `deadline`.
    pub fn on_match(
        &mut self,
        m: &pwit::CompletedMatch,
        deadline: Duration,
        log_budget: u32,
    ) -> Result<pwit::MatchVerdict, PluginError> {
        let Bindings::Pattern(bindings) = &self.bindings else {
            return Err(self.wrong_kind(PluginKind::Pattern));
        };
        self.store.set_epoch_deadline(ticks(deadline));
        self.store.data_mut().log_budget = log_budget;
        bindings
            .eddy_plugin_matching()
            .call_on_match(&mut self.store, m)
            .map_err(|e| classify(e, &self.store, deadline, self.memory_limit))
    }

    /// Ask an alert plugin what it watches, under `deadline`.
    pub fn watches(&mut self, deadline: Duration) -> Result<awit::Watched, PluginError> {
        let Bindings::Alert(bindings) = &self.bindings else {
            return Err(self.wrong_kind(PluginKind::Alert));
        };
        self.store.set_epoch_deadline(ticks(deadline));
        bindings
            .eddy_plugin_alerting()
            .call_watches(&mut self.store)
            .map_err(|e| classify(e, &self.store, deadline, self.memory_limit))
    }

    /// Evaluate a batch of window results or pattern matches with an alert
    /// plugin, under `deadline`, allowing `log_budget` log records. State
    /// writes stay pending until [`Instance::commit_state`].
    pub fn evaluate(
        &mut self,
        input: &awit::Input,
        deadline: Duration,
        log_budget: u32,
    ) -> Result<Vec<awit::Evaluation>, PluginError> {
        let Bindings::Alert(bindings) = &self.bindings else {
            return Err(self.wrong_kind(PluginKind::Alert));
        };
        self.store.set_epoch_deadline(ticks(deadline));
        self.store.data_mut().log_budget = log_budget;
        match bindings
            .eddy_plugin_alerting()
            .call_evaluate(&mut self.store, input)
        {
            Ok(Ok(evaluations)) => Ok(evaluations),
            Ok(Err(msg)) => Err(PluginError::Returned(clip(msg))),
            Err(e) => Err(classify(e, &self.store, deadline, self.memory_limit)),
        }
    }
}
