//! Plugin slots: for every plugin name, the live version, the one before it,
//! and everything that happened to them.
//!
//! A slot's `generation` changes on every swap, rollback and unload; stages
//! compare it between batches, so a swap takes effect exactly at a batch
//! boundary and an in-flight batch finishes on the version it started with.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::alert::{AlertContext, AlertPlugin};
use super::engine::{Compiled, PluginEngine, PluginError, PluginKind};
use super::host_api::{PluginLimits, PluginShared};
use super::pattern::{PatternContext, PatternInstance};
use crate::config::RuntimeConfig;

/// A lifecycle change, published to subscribers (the `plugins` channel),
/// logged and counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// Plugin name.
    pub plugin: String,
    /// What happened.
    pub kind: NoticeKind,
    /// Content hash of the version concerned (short form).
    pub hash: Option<String>,
    /// The plugin's self-reported version.
    pub version: Option<String>,
    /// Human-readable detail (the error, the file, ...).
    pub detail: String,
}

/// Kinds of [`Notice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// First version of a plugin went live.
    Loaded,
    /// A new version replaced the live one.
    Swapped,
    /// A new version failed its probation and the previous one is back.
    RolledBack,
    /// A file could not be loaded; whatever was live stays live.
    LoadFailed,
    /// A stage stopped calling the plugin after repeated failures.
    Quarantined,
    /// A quarantined plugin succeeded again.
    Recovered,
    /// A batch failed (trap, deadline, memory, error).
    Failed,
    /// The file was removed; the plugin is no longer live.
    Unloaded,
    /// A configuration reload changed a stage or a declared pattern (the
    /// `plugin` field names it: `stage:<name>` or `pattern:<name>`), or
    /// could not be applied (`config`).
    Reconfigured,
    /// A Kafka consumer group assigned partitions to this instance or
    /// revoked them (the `plugin` field names the source:
    /// `kafka:<group_id>`; the detail says which partitions).
    Rebalanced,
}

/// Counters of one plugin's lifecycle.
#[derive(Debug, Default)]
pub struct SlotCounters {
    /// Versions that went live (first load or swap).
    pub loads: AtomicU64,
    /// Swaps from one version to another.
    pub swaps: AtomicU64,
    /// Automatic or requested rollbacks.
    pub rollbacks: AtomicU64,
    /// Files that failed to load.
    pub load_failures: AtomicU64,
    /// Failed batches, all stages together.
    pub failures: AtomicU64,
    /// Times a stage quarantined the plugin.
    pub quarantines: AtomicU64,
}

/// One plugin name's versions.
pub struct Slot {
    /// State that outlives versions.
    pub shared: Arc<PluginShared>,
    versions: Mutex<Versions>,
    generation: AtomicU64,
    /// Lifecycle counters.
    pub counters: SlotCounters,
}

#[derive(Default)]
struct Versions {
    current: Option<Arc<Compiled>>,
    /// Whether `current` has proven itself (finished probation in a stage).
    current_confirmed: bool,
    /// The last known good version: what a failing new version is rolled
    /// back to.
    previous: Option<Arc<Compiled>>,
    /// Hashes that were rolled back: the same bytes are not retried.
    rejected: HashSet<String>,
    last_error: Option<String>,
    /// Versions compiled lately, newest last, so an engine can select one
    /// by hash (a replay, a restore, a rollback) after the slot moved on.
    known: VecDeque<Arc<Compiled>>,
}

/// Where a subscriber's notices go; false once it is gone.
type Subscriber = Box<dyn Fn(&Notice) -> bool + Send>;

/// Versions of one plugin kept by hash for [`Registry::version`]: the live
/// one, the one before and a few older ones an engine may still select.
const KNOWN_VERSIONS: usize = 8;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections here are plain field assignments; a poisoned lock
    // holds consistent data.
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The short form of a content hash used in logs and notices.
pub fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

impl Versions {
    /// Make room for a new current version, keeping the last known good one.
    fn retire_current(&mut self) {
        let old = self.current.take();
        if self.current_confirmed {
            self.previous = old;
        }
        self.current_confirmed = false;
    }
}

/// A consistent view of a slot, taken under one lock.
pub struct SlotView {
    /// Generation of this view.
    pub generation: u64,
    /// The live version.
    pub current: Option<Arc<Compiled>>,
    /// Whether it has proven itself.
    pub confirmed: bool,
    /// Whether a last known good version exists to roll back to.
    pub has_previous: bool,
}

impl Slot {
    /// The live version and the generation it belongs to.
    pub fn current(&self) -> (u64, Option<Arc<Compiled>>) {
        let v = lock(&self.versions);
        (self.generation.load(Ordering::Acquire), v.current.clone())
    }

    /// Everything a stage needs to pick up a version, consistently.
    pub fn view(&self) -> SlotView {
        let v = lock(&self.versions);
        SlotView {
            generation: self.generation.load(Ordering::Acquire),
            current: v.current.clone(),
            confirmed: v.current_confirmed,
            has_previous: v.previous.is_some(),
        }
    }

    /// Record that the version with `hash` finished probation: it becomes
    /// the one later versions are rolled back to.
    pub fn confirm(&self, hash: &str) {
        let mut v = lock(&self.versions);
        if v.current.as_ref().is_some_and(|c| c.hash == hash) {
            v.current_confirmed = true;
        }
    }

    /// The generation counter alone (cheap check between batches).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a previous version is kept to roll back to.
    pub fn has_previous(&self) -> bool {
        lock(&self.versions).previous.is_some()
    }

    /// Record the latest error (load or call) for status reports.
    pub fn set_last_error(&self, error: String) {
        lock(&self.versions).last_error = Some(error);
    }

    /// A version of this plugin compiled lately, by content hash.
    pub fn version(&self, hash: &str) -> Option<Arc<Compiled>> {
        let v = lock(&self.versions);
        v.known.iter().rev().find(|c| c.hash == hash).cloned()
    }
}

/// All plugins of one plugins folder.
pub struct Registry {
    engine: Arc<PluginEngine>,
    config: RuntimeConfig,
    dir: PathBuf,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    subscribers: Mutex<Vec<Subscriber>>,
    /// Keep every version's bytes (`eddy serve --record`).
    keep_bytes: std::sync::atomic::AtomicBool,
    /// Where versions are kept by content hash, so a restore or a replay
    /// finds a version whose file has since been replaced (`data_dir/plugins`).
    store: Mutex<Option<VersionStore>>,
}

/// A folder of plugin versions named `<hash>.wasm`.
#[derive(Debug, Clone)]
struct VersionStore {
    dir: PathBuf,
    /// Whether loading a version also keeps it here (`eddy serve`), or the
    /// folder is only read (the tools that replay a data directory).
    write: bool,
}

/// What [`Registry::load_file`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadOutcome {
    /// The first version of this plugin went live.
    Loaded,
    /// A new version replaced the live one.
    Swapped,
    /// The file's bytes are the live version already.
    Unchanged,
    /// These bytes were rolled back before and are not retried.
    Rejected,
}

/// The plugin name a file stands for: `ua-enricher.wasm` → `ua-enricher`.
pub fn plugin_name(path: &Path) -> Option<&str> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    let valid = !stem.is_empty()
        && !stem.starts_with('.')
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    valid.then_some(stem)
}

impl Registry {
    /// A registry for the plugins in `dir`. Nothing is loaded yet.
    pub fn new(engine: Arc<PluginEngine>, config: RuntimeConfig, dir: PathBuf) -> Arc<Self> {
        Arc::new(Registry {
            engine,
            config,
            dir,
            slots: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(Vec::new()),
            keep_bytes: std::sync::atomic::AtomicBool::new(false),
            store: Mutex::new(None),
        })
    }

    /// Keep every version that goes live in `dir` as `<hash>.wasm` (written
    /// before the version's load is announced, so before a write-ahead log
    /// can name it), and look there for versions no longer compiled: a
    /// checkpoint or a log taken before a hot swap names the version the
    /// plugins folder no longer has. `write: false` only reads.
    pub fn use_version_store(&self, dir: PathBuf, write: bool) -> std::io::Result<()> {
        if write {
            std::fs::create_dir_all(&dir)?;
            self.keep_bytes();
        }
        *lock(&self.store) = Some(VersionStore { dir, write });
        Ok(())
    }

    /// Write `bytes` (version `hash`) into the version store, if one is
    /// written to: temporary file, sync, rename, so a crash leaves either
    /// no file or the whole version.
    fn keep_in_store(&self, hash: &str, bytes: &[u8]) -> std::io::Result<()> {
        let Some(store) = lock(&self.store).clone().filter(|s| s.write) else {
            return Ok(());
        };
        let path = store.dir.join(format!("{hash}.wasm"));
        if path.exists() {
            return Ok(());
        }
        let tmp = store.dir.join(format!(".{hash}.wasm.tmp"));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        if let Ok(d) = std::fs::File::open(&store.dir) {
            d.sync_all()?;
        }
        Ok(())
    }

    /// Compile `bytes` as a version of `name`, with its limits and grants.
    fn compile(
        &self,
        name: &str,
        slot: &Slot,
        bytes: Vec<u8>,
    ) -> Result<Arc<Compiled>, PluginError> {
        self.engine.compile_granted(
            bytes,
            self.config.compile_timeout,
            slot.shared.clone(),
            self.config.memory_limit_bytes,
            self.config.grants_for(name),
            self.keep_bytes.load(Ordering::Acquire),
        )
    }

    /// Version `hash` of plugin `name` from the version store: compiled and
    /// remembered (not made live).
    fn stored_version(&self, name: &str, hash: &str) -> Option<Arc<Compiled>> {
        let store = lock(&self.store).clone()?;
        let path = store.dir.join(format!("{hash}.wasm"));
        let bytes = std::fs::read(&path).ok()?;
        if super::engine::content_hash(&bytes) != hash {
            tracing::warn!(file = %path.display(), "a kept plugin version does not match its name; ignored");
            return None;
        }
        let slot = self.slot(name);
        match self.compile(name, &slot, bytes) {
            Ok(compiled) => {
                let mut v = lock(&slot.versions);
                if let Some(known) = v.known.iter().find(|c| c.hash == hash) {
                    return Some(known.clone());
                }
                // The oldest place: it is an earlier version than any loaded.
                v.known.push_front(compiled.clone());
                tracing::info!(plugin = name, hash = short(hash), file = %path.display(), "plugin version loaded from the version store");
                Some(compiled)
            }
            Err(e) => {
                tracing::warn!(plugin = name, file = %path.display(), error = %e, "a kept plugin version does not compile");
                None
            }
        }
    }

    /// Keep the bytes of every version loaded from now on (for a record).
    pub fn keep_bytes(&self) {
        self.keep_bytes.store(true, Ordering::Release);
    }

    /// Version `hash` of plugin `name`, if it was compiled lately or is in
    /// the version store.
    pub fn version(&self, name: &str, hash: &str) -> Option<Arc<Compiled>> {
        let compiled = lock(&self.slots).get(name).and_then(|s| s.version(hash));
        compiled.or_else(|| self.stored_version(name, hash))
    }

    /// The live version of every plugin that has one: name → hash.
    pub fn live_versions(&self) -> std::collections::BTreeMap<String, String> {
        let slots: Vec<(String, Arc<Slot>)> = lock(&self.slots)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        slots
            .into_iter()
            .filter_map(|(name, slot)| slot.current().1.map(|c| (name, c.hash.clone())))
            .collect()
    }

    /// The pattern plugins loaded now: name → content hash of the live
    /// version.
    pub fn patterns(&self) -> std::collections::BTreeMap<String, String> {
        let slots: Vec<(String, Arc<Slot>)> = lock(&self.slots)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        slots
            .into_iter()
            .filter_map(|(name, slot)| {
                let live = slot.current().1?;
                (live.kind == PluginKind::Pattern).then(|| (name, live.hash.clone()))
            })
            .collect()
    }

    /// An instance of pattern plugin `name` at version `hash` (the engine
    /// selects versions by hash, as for stages), configured from
    /// `context.config` and using `context.state` for its `state` import.
    /// Fails with [`PluginError::WrongKind`] if that version is not a
    /// pattern plugin, and with the plugin's error if it rejects its
    /// configuration.
    pub fn pattern_instance(
        self: &Arc<Self>,
        name: &str,
        hash: &str,
        context: &PatternContext,
    ) -> Result<PatternInstance, PluginError> {
        let slot = self.slot(name);
        let Some(compiled) = slot.version(hash) else {
            return Err(PluginError::Compile(format!(
                "pattern plugin `{name}` has no loaded version {}; put its file in the plugins folder",
                short(hash)
            )));
        };
        if compiled.kind != PluginKind::Pattern {
            return Err(PluginError::WrongKind {
                plugin: name.to_owned(),
                found: compiled.kind,
                wanted: PluginKind::Pattern,
            });
        }
        PatternInstance::new(self.clone(), slot, compiled, context.clone())
    }

    /// The alert plugins loaded now: name → content hash of the live
    /// version.
    pub fn alerts(&self) -> std::collections::BTreeMap<String, String> {
        let slots: Vec<(String, Arc<Slot>)> = lock(&self.slots)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        slots
            .into_iter()
            .filter_map(|(name, slot)| {
                let live = slot.current().1?;
                (live.kind == PluginKind::Alert).then(|| (name, live.hash.clone()))
            })
            .collect()
    }

    /// Alert plugin `name` at version `hash` (the engine selects versions
    /// by hash, as for stages), configured from `context.config`, using
    /// `context.state` for its `state` import, and asked what it watches.
    /// Fails with [`PluginError::WrongKind`] if that version is not an
    /// alert plugin, and with the plugin's error if it rejects its
    /// configuration.
    pub fn alert_instance(
        self: &Arc<Self>,
        name: &str,
        hash: &str,
        context: &AlertContext,
    ) -> Result<AlertPlugin, PluginError> {
        let slot = self.slot(name);
        let Some(compiled) = slot.version(hash) else {
            return Err(PluginError::Compile(format!(
                "alert plugin `{name}` has no loaded version {}; put its file in the plugins folder",
                short(hash)
            )));
        };
        if compiled.kind != PluginKind::Alert {
            return Err(PluginError::WrongKind {
                plugin: name.to_owned(),
                found: compiled.kind,
                wanted: PluginKind::Alert,
            });
        }
        AlertPlugin::new(self.clone(), slot, compiled, context.clone())
    }

    /// The watched folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The engine plugins run on.
    pub fn engine(&self) -> &Arc<PluginEngine> {
        &self.engine
    }

    /// Runtime settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The slot for `name`, created empty if the plugin is not loaded (a
    /// stage may name a plugin whose file arrives later).
    pub fn slot(&self, name: &str) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        slots
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Slot {
                    shared: Arc::new(PluginShared::new(name, PluginLimits::from(&self.config))),
                    versions: Mutex::new(Versions::default()),
                    generation: AtomicU64::new(0),
                    counters: SlotCounters::default(),
                })
            })
            .clone()
    }

    /// Names of all known plugins, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.slots).keys().cloned().collect();
        names.sort();
        names
    }

    /// Receive every future [`Notice`].
    pub fn subscribe(&self) -> mpsc::Receiver<Notice> {
        let (tx, rx) = mpsc::channel();
        self.subscribe_with(move |n| tx.send(n.clone()).is_ok());
        rx
    }

    /// Hand every future [`Notice`] to `deliver` (which returns false once
    /// it wants no more), on the thread that makes the change, before the
    /// notice is logged: whoever sees the log line can count on the notice
    /// being delivered.
    pub fn subscribe_with(&self, deliver: impl Fn(&Notice) -> bool + Send + 'static) {
        lock(&self.subscribers).push(Box::new(deliver));
    }

    /// Deliver, log and count a notice.
    pub fn notify(&self, notice: Notice) {
        lock(&self.subscribers).retain(|deliver| deliver(&notice));
        self.log_notice(&notice);
    }

    /// Log a notice without publishing it (the engine publishes its own).
    pub fn log_notice(&self, notice: &Notice) {
        let hash = notice.hash.as_deref().map(short).unwrap_or("");
        let version = notice.version.as_deref().unwrap_or("");
        let plugin = notice.plugin.as_str();
        let detail = notice.detail.as_str();
        match notice.kind {
            NoticeKind::Loaded => tracing::info!(plugin, hash, version, detail, "plugin loaded"),
            NoticeKind::Swapped => tracing::info!(plugin, hash, version, detail, "plugin swapped"),
            NoticeKind::RolledBack => {
                tracing::warn!(plugin, hash, version, detail, "plugin rolled back")
            }
            NoticeKind::LoadFailed => {
                tracing::error!(plugin, hash, version, detail, "plugin load failed")
            }
            NoticeKind::Quarantined => {
                tracing::error!(plugin, hash, version, detail, "plugin quarantined")
            }
            NoticeKind::Recovered => {
                tracing::info!(plugin, hash, version, detail, "plugin recovered")
            }
            NoticeKind::Failed => {
                tracing::warn!(plugin, hash, version, detail, "plugin batch failed")
            }
            NoticeKind::Unloaded => {
                tracing::info!(plugin, hash, version, detail, "plugin unloaded")
            }
            NoticeKind::Reconfigured => {
                tracing::info!(plugin, detail, "configuration reloaded")
            }
            NoticeKind::Rebalanced => tracing::info!(plugin, detail, "kafka rebalance"),
        }
    }

    /// Load every `*.wasm` in the folder. Failures are logged per file and
    /// do not stop the others.
    pub fn load_all(&self) -> std::io::Result<usize> {
        self.load_all_where(|_, _| true)
    }

    /// Like [`Registry::load_all`], for the plugins `wanted` keeps, given
    /// each one's name and file contents; the others are neither compiled
    /// nor registered. A file that cannot be read is loaded (so that its
    /// error is reported as `load_all` reports it).
    pub fn load_all_where(&self, wanted: impl Fn(&str, &[u8]) -> bool) -> std::io::Result<usize> {
        let mut loaded = 0;
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| plugin_name(p).is_some())
            .collect();
        paths.sort();
        for path in paths {
            let outcome = match (plugin_name(&path), std::fs::read(&path)) {
                (Some(name), Ok(bytes)) => {
                    if !wanted(name, &bytes) {
                        continue;
                    }
                    self.load_bytes(name, bytes, &path.display().to_string())
                }
                _ => self.load_file(&path),
            };
            if matches!(outcome, Ok(LoadOutcome::Loaded | LoadOutcome::Swapped)) {
                loaded += 1;
            }
        }
        Ok(loaded)
    }

    /// Load (or reload) the plugin stored at `path`. The new version goes
    /// live only if it compiles, imports nothing beyond the default policy
    /// and the plugin's grants (`runtime.grants`, from the stages' `allow`),
    /// links as a processor and answers `describe()`; otherwise the live
    /// version stays and the error is reported with the file name.
    pub fn load_file(&self, path: &Path) -> Result<LoadOutcome, PluginError> {
        let Some(name) = plugin_name(path) else {
            return Err(PluginError::Compile(format!(
                "{}: not a plugin file name (expected NAME.wasm with NAME of letters, digits, - and _)",
                path.display()
            )));
        };
        match std::fs::read(path) {
            Ok(bytes) => self.load_bytes(name, bytes, &path.display().to_string()),
            Err(e) => Err(self.load_failed(
                name,
                PluginError::Compile(format!("cannot read file: {e}")),
                None,
                &path.display().to_string(),
            )),
        }
    }

    fn load_failed(
        &self,
        name: &str,
        err: PluginError,
        hash: Option<String>,
        origin: &str,
    ) -> PluginError {
        let slot = self.slot(name);
        slot.counters.load_failures.fetch_add(1, Ordering::Relaxed);
        lock(&slot.versions).last_error = Some(err.to_string());
        self.notify(Notice {
            plugin: name.to_owned(),
            kind: NoticeKind::LoadFailed,
            hash,
            version: None,
            detail: format!("{origin}: {err}"),
        });
        err
    }

    /// [`Registry::load_file`] for bytes read elsewhere (`origin` names
    /// where, in notices).
    pub fn load_bytes(
        &self,
        name: &str,
        bytes: Vec<u8>,
        origin: &str,
    ) -> Result<LoadOutcome, PluginError> {
        let slot = self.slot(name);
        let fail =
            |err: PluginError, hash: Option<String>| self.load_failed(name, err, hash, origin);
        let hash = super::engine::content_hash(&bytes);
        {
            let v = lock(&slot.versions);
            if v.current.as_ref().is_some_and(|c| c.hash == hash) {
                return Ok(LoadOutcome::Unchanged);
            }
            if v.rejected.contains(&hash) {
                tracing::warn!(
                    plugin = name,
                    hash = short(&hash),
                    "not loading a version that was rolled back before"
                );
                return Ok(LoadOutcome::Rejected);
            }
        }
        let compiled = match self.compile(name, &slot, bytes) {
            Ok(c) => c,
            Err(e) => return Err(fail(e, Some(hash))),
        };
        if let Some(bytes) = &compiled.bytes
            && let Err(e) = self.keep_in_store(&hash, bytes)
        {
            // Not live without its kept copy: a restart could not restore
            // state that names it.
            let err = PluginError::Keep(format!("keeping this version in the data directory: {e}"));
            return Err(fail(err, Some(hash)));
        }
        let outcome = {
            let mut v = lock(&slot.versions);
            let outcome = if v.current.is_some() {
                LoadOutcome::Swapped
            } else {
                LoadOutcome::Loaded
            };
            v.retire_current();
            v.current = Some(compiled.clone());
            v.last_error = None;
            v.known.retain(|c| c.hash != compiled.hash);
            v.known.push_back(compiled.clone());
            while v.known.len() > KNOWN_VERSIONS {
                v.known.pop_front();
            }
            slot.generation.fetch_add(1, Ordering::AcqRel);
            outcome
        };
        slot.counters.loads.fetch_add(1, Ordering::Relaxed);
        if outcome == LoadOutcome::Swapped {
            slot.counters.swaps.fetch_add(1, Ordering::Relaxed);
        }
        self.notify(Notice {
            plugin: name.to_owned(),
            kind: if outcome == LoadOutcome::Swapped {
                NoticeKind::Swapped
            } else {
                NoticeKind::Loaded
            },
            hash: Some(compiled.hash.clone()),
            version: Some(compiled.info.version.clone()),
            detail: format!(
                "{origin} ({} plugin, {} bytes, {} {} ms)",
                compiled.kind.as_str(),
                compiled.size,
                compiled.compiled_from.describe(),
                compiled.compile_time.as_millis()
            ),
        });
        Ok(outcome)
    }

    /// The file for `name` is gone: the plugin is no longer live.
    pub fn unload(&self, name: &str) {
        let slot = self.slot(name);
        let old = {
            let mut v = lock(&slot.versions);
            let old = v.current.clone();
            if old.is_some() {
                v.retire_current();
                slot.generation.fetch_add(1, Ordering::AcqRel);
            }
            old
        };
        if let Some(old) = old {
            self.notify(Notice {
                plugin: name.to_owned(),
                kind: NoticeKind::Unloaded,
                hash: Some(old.hash.clone()),
                version: Some(old.info.version.clone()),
                detail: "file removed from the plugins folder".into(),
            });
        }
    }

    /// Put the last known good version of `name` back in place of `bad` (if
    /// `bad` is still the live one) and refuse `bad`'s bytes from now on.
    /// Returns false if there is nothing to roll back to.
    pub fn rollback(&self, name: &str, bad: &Compiled, reason: &str) -> bool {
        let slot = self.slot(name);
        let restored = {
            let mut v = lock(&slot.versions);
            let is_live = v.current.as_ref().is_some_and(|c| c.hash == bad.hash);
            let Some(prev) = v.previous.clone() else {
                return false;
            };
            if !is_live {
                // Someone else already moved on; nothing to undo.
                return true;
            }
            v.rejected.insert(bad.hash.clone());
            v.current = Some(prev.clone());
            v.current_confirmed = true;
            v.previous = None;
            v.last_error = Some(reason.to_owned());
            slot.generation.fetch_add(1, Ordering::AcqRel);
            prev
        };
        slot.counters.rollbacks.fetch_add(1, Ordering::Relaxed);
        self.notify(Notice {
            plugin: name.to_owned(),
            kind: NoticeKind::RolledBack,
            hash: Some(restored.hash.clone()),
            version: Some(restored.info.version.clone()),
            detail: format!(
                "version {} ({}) failed on probation: {reason}",
                short(&bad.hash),
                bad.info.version
            ),
        });
        true
    }

    /// Wait (up to `timeout`) until `name` is live with bytes hashing to
    /// `hash`. For tools and tests that drop a file and need to know.
    pub fn wait_for(&self, name: &str, hash: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let slot = self.slot(name);
        while std::time::Instant::now() < deadline {
            if slot.current().1.is_some_and(|c| c.hash == hash) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// A status row per plugin, for reports and the REST API.
    pub fn status(&self) -> Vec<PluginStatus> {
        let slots: Vec<(String, Arc<Slot>)> = {
            let s = lock(&self.slots);
            let mut v: Vec<_> = s.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        slots
            .into_iter()
            .map(|(name, slot)| {
                let v = lock(&slot.versions);
                let c = &slot.counters;
                PluginStatus {
                    name,
                    live: v.current.is_some(),
                    kind: v.current.as_ref().map(|c| c.kind),
                    hash: v.current.as_ref().map(|c| c.hash.clone()),
                    version: v.current.as_ref().map(|c| c.info.version.clone()),
                    description: v.current.as_ref().map(|c| c.info.description.clone()),
                    loaded_at_ms: v.current.as_ref().map(|c| {
                        c.loaded_at
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map(|d| d.as_millis() as u64)
                            .unwrap_or(0)
                    }),
                    loads: c.loads.load(Ordering::Relaxed),
                    swaps: c.swaps.load(Ordering::Relaxed),
                    rollbacks: c.rollbacks.load(Ordering::Relaxed),
                    load_failures: c.load_failures.load(Ordering::Relaxed),
                    failures: c.failures.load(Ordering::Relaxed),
                    quarantines: c.quarantines.load(Ordering::Relaxed),
                    last_error: v.last_error.clone(),
                    state_keys: slot.shared.state_keys(),
                    logs_suppressed: slot.shared.logs_suppressed.load(Ordering::Relaxed),
                    counters: slot.shared.counters(),
                    gauges: slot.shared.gauges(),
                }
            })
            .collect()
    }
}

/// One plugin's status.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// Name (file stem).
    pub name: String,
    /// Whether a version is live.
    pub live: bool,
    /// The live version's kind (`processor`, `pattern`, `alert`).
    pub kind: Option<PluginKind>,
    /// Content hash of the live version.
    pub hash: Option<String>,
    /// Self-reported version of the live version.
    pub version: Option<String>,
    /// Self-description of the live version.
    pub description: Option<String>,
    /// When the live version was loaded (ms since the epoch).
    pub loaded_at_ms: Option<u64>,
    /// Versions that went live.
    pub loads: u64,
    /// Swaps.
    pub swaps: u64,
    /// Rollbacks.
    pub rollbacks: u64,
    /// Files that failed to load.
    pub load_failures: u64,
    /// Failed batches.
    pub failures: u64,
    /// Quarantines.
    pub quarantines: u64,
    /// Last error.
    pub last_error: Option<String>,
    /// Keys in the plugin's state store.
    pub state_keys: usize,
    /// Log records dropped by the per-call cap.
    pub logs_suppressed: u64,
    /// Plugin-defined counters.
    pub counters: std::collections::BTreeMap<String, u64>,
    /// Plugin-defined gauges.
    pub gauges: std::collections::BTreeMap<String, f64>,
}
