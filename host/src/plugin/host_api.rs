//! What the host gives a plugin instance: the per-store data, the sandboxed
//! WASI context, and the `log`, `metrics` and `state` imports.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::eddy::plugin::{log, metrics, state, types};
use super::state_store::StateStore;

/// Longest metric name or log field name, in bytes: names, not data.
pub const MAX_METRIC_NAME_BYTES: usize = 200;
/// Structured fields kept per log record; a record is for a person to read.
pub const MAX_LOG_FIELDS: usize = 32;

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Bounds on what a plugin may keep in the host: state (per store, see
/// [`super::state_store::StateLimits`]), metrics, logs.
#[derive(Debug, Clone, Copy)]
pub struct PluginLimits {
    /// `runtime.state_max_keys`.
    pub max_keys: u64,
    /// `runtime.state_max_value_bytes`.
    pub max_value_bytes: u64,
    /// `runtime.state_max_key_bytes`.
    pub max_key_bytes: u64,
    /// `runtime.max_metrics`.
    pub max_metrics: u64,
    /// `runtime.max_log_message_bytes`.
    pub max_log_message_bytes: u64,
}

impl From<&crate::config::RuntimeConfig> for PluginLimits {
    fn from(c: &crate::config::RuntimeConfig) -> Self {
        PluginLimits {
            max_keys: c.state_max_keys,
            max_value_bytes: c.state_max_value_bytes,
            max_key_bytes: c.state_max_key_bytes,
            max_metrics: c.max_metrics,
            max_log_message_bytes: c.max_log_message_bytes,
        }
    }
}

/// Everything the host keeps for a plugin *name*, across instances, traps and
/// versions: its custom metrics and its counters. Its key-value state is
/// not here: that belongs to each stage (its [`StateStore`]).
#[derive(Debug)]
pub struct PluginShared {
    /// The plugin's name (its file stem).
    pub name: String,
    /// The state stores this plugin's instances were given, for
    /// [`PluginShared::state_keys`]; a store dropped with its pipeline
    /// drops out.
    stores: Mutex<Vec<Weak<StateStore>>>,
    limits: PluginLimits,
    counters: Mutex<BTreeMap<String, u64>>,
    gauges: Mutex<BTreeMap<String, f64>>,
    /// Log records the plugin emitted beyond its per-call budget.
    pub logs_suppressed: AtomicU64,
    /// Metric updates refused by the name or count caps.
    pub metrics_refused: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the maps in a
    // torn state (every critical section is a single map operation), so a
    // poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl PluginShared {
    /// Fresh shared state for plugin `name`.
    pub fn new(name: &str, limits: PluginLimits) -> Self {
        PluginShared {
            name: name.to_owned(),
            stores: Mutex::new(Vec::new()),
            limits,
            counters: Mutex::new(BTreeMap::new()),
            gauges: Mutex::new(BTreeMap::new()),
            logs_suppressed: AtomicU64::new(0),
            metrics_refused: AtomicU64::new(0),
        }
    }

    /// The plugin's bounds.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// Notes that an instance of this plugin uses `store`.
    pub fn attach_state(&self, store: &Arc<StateStore>) {
        let mut stores = lock(&self.stores);
        stores.retain(|s| s.strong_count() > 0);
        if !stores.iter().any(|s| s.as_ptr() == Arc::as_ptr(store)) {
            stores.push(Arc::downgrade(store));
        }
    }

    /// Keys in the state stores this plugin's instances use (each store
    /// counted once, also when stages of other plugins share it).
    pub fn state_keys(&self) -> usize {
        lock(&self.stores)
            .iter()
            .filter_map(Weak::upgrade)
            .map(|s| s.len())
            .sum()
    }

    /// The plugin's custom counters.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        lock(&self.counters).clone()
    }

    /// The plugin's custom gauges.
    pub fn gauges(&self) -> BTreeMap<String, f64> {
        lock(&self.gauges).clone()
    }
}

/// Per-instance store data.
pub struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    /// The plugin this instance belongs to.
    pub shared: Arc<PluginShared>,
    /// The state store the `state` import reads and writes: the stage's.
    pub state: Arc<StateStore>,
    /// Log records still allowed in the current call.
    pub log_budget: u32,
    /// Set when the instance asked for more memory than its cap allows.
    pub memory_refused: bool,
    /// State writes of the current call, not yet committed.
    pending: PendingState,
    /// Keys the pending writes would add to the committed store, net: +1
    /// per pending write of a key the store lacks, -1 per pending delete of
    /// a key it holds. Kept up to date per write, so the key cap is O(1).
    pending_added: i64,
    memory_limit: u64,
    /// Bytes of linear memory the instance holds, all memories together.
    memory_total: usize,
}

impl StoreData {
    /// Store data for a new, sandboxed instance: no preopened directories,
    /// no environment, no arguments, no network, stdio discarded.
    pub fn new(shared: Arc<PluginShared>, state: Arc<StateStore>, memory_limit_bytes: u64) -> Self {
        Self::with_clock(shared, state, memory_limit_bytes, None, 0)
    }

    /// [`StoreData::new`], with WASI's clocks and randomness taken from
    /// `clock` when given (deterministic runs: see [`super::clock`]), its
    /// random sources seeded with `seed`.
    pub fn with_clock(
        shared: Arc<PluginShared>,
        state: Arc<StateStore>,
        memory_limit_bytes: u64,
        clock: Option<&Arc<super::clock::VirtualClock>>,
        seed: u64,
    ) -> Self {
        let mut builder = WasiCtxBuilder::new();
        builder
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(clock) = clock {
            clock.install(&mut builder, seed);
        }
        let wasi = builder.build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(memory_limit_bytes).unwrap_or(usize::MAX))
            .instances(64)
            .tables(64)
            .memories(16)
            .build();
        StoreData {
            wasi,
            table: ResourceTable::new(),
            limits,
            shared,
            state,
            log_budget: 0,
            memory_refused: false,
            pending: PendingState::new(),
            pending_added: 0,
            memory_limit: memory_limit_bytes,
            memory_total: 0,
        }
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for StoreData {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The cap is per instance: a component with several linear memories
        // (adapters, guest runtimes) shares one budget across all of them.
        let total = self
            .memory_total
            .saturating_add(desired.saturating_sub(current));
        let within = total as u64 <= self.memory_limit;
        let allowed = within && self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_total = total;
        } else {
            self.memory_refused = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }
    fn tables(&self) -> usize {
        self.limits.tables()
    }
    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl types::Host for StoreData {}

impl log::Host for StoreData {
    fn log(&mut self, level: log::Level, message: String, fields: Vec<(String, String)>) {
        if self.log_budget == 0 {
            self.shared.logs_suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.log_budget -= 1;
        let plugin = self.shared.name.as_str();
        let max = usize::try_from(self.shared.limits.max_log_message_bytes).unwrap_or(usize::MAX);
        let message = truncated(&message, max);
        let fields = FieldList(fields.get(..MAX_LOG_FIELDS).unwrap_or(&fields), max);
        match level {
            log::Level::Trace => tracing::trace!(plugin, fields = %fields, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, fields = %fields, "{message}"),
            log::Level::Info => tracing::info!(plugin, fields = %fields, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, fields = %fields, "{message}"),
            log::Level::Error => tracing::error!(plugin, fields = %fields, "{message}"),
        }
    }
}

/// Plugin-supplied fields, rendered `k=v k=v`.
struct FieldList<'a>(&'a [(String, String)], usize);

impl std::fmt::Display for FieldList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let k = truncated(k, MAX_METRIC_NAME_BYTES);
            write!(f, "{k}={:?}", truncated(v, self.1))?;
        }
        Ok(())
    }
}

impl StoreData {
    /// Whether a new metric called `name` fits the caps (`existing` of its
    /// kind already exist); counts the refusal if not.
    fn metric_allowed(&self, name: &str, existing: usize) -> bool {
        let ok = name.len() <= MAX_METRIC_NAME_BYTES
            && (existing as u64) < self.shared.limits.max_metrics;
        if !ok {
            self.shared.metrics_refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

impl metrics::Host for StoreData {
    fn counter_add(&mut self, name: String, delta: u64) {
        let mut counters = lock(&self.shared.counters);
        if !counters.contains_key(&name) && !self.metric_allowed(&name, counters.len()) {
            return;
        }
        let c = counters.entry(name).or_insert(0);
        *c = c.saturating_add(delta);
    }

    fn gauge_set(&mut self, name: String, value: f64) {
        let mut gauges = lock(&self.shared.gauges);
        if !gauges.contains_key(&name) && !self.metric_allowed(&name, gauges.len()) {
            return;
        }
        gauges.insert(name, value);
    }
}

/// A call's state writes, applied to the state store only if the call's
/// batch succeeds: a batch that fails (trap, deadline, error, bad result)
/// leaves no trace in plugin state, so its retry or pass-through sees the
/// state as it was. `None` marks a deletion.
pub type PendingState = HashMap<String, Option<Vec<u8>>>;

/// What a pending entry (`None`: no pending write) of a key the committed
/// store holds (`committed`) or lacks adds to the store's key count.
fn added_by(pending: Option<&Option<Vec<u8>>>, committed: bool) -> i64 {
    match (pending, committed) {
        (Some(Some(_)), false) => 1,
        (Some(None), true) => -1,
        _ => 0,
    }
}

impl StoreData {
    /// The value of `key` as this call sees it: its own writes first.
    fn state_lookup(&self, key: &str) -> Option<Vec<u8>> {
        match self.pending.get(key) {
            Some(v) => v.clone(),
            None => self.state.get(key),
        }
    }

    /// Whether `key` holds a value as this call sees it (nothing cloned).
    fn state_present(&self, key: &str) -> bool {
        match self.pending.get(key) {
            Some(v) => v.is_some(),
            None => self.state.contains_key(key),
        }
    }

    /// Whether the committed store holds `key`, and how many keys it holds.
    fn committed(&self, key: &str) -> (bool, usize) {
        self.state.probe(key)
    }

    /// Records a pending write (`Some`) or delete (`None`) of `key`, which
    /// the committed store holds or not (`committed`).
    fn record(&mut self, key: String, value: Option<Vec<u8>>, committed: bool) {
        let before = added_by(self.pending.get(&key), committed);
        let after = added_by(Some(&value), committed);
        self.pending_added += after - before;
        if value.is_none() && !committed {
            // Deleting a key the store does not hold only undoes this
            // call's own write: nothing is left to apply.
            self.pending.remove(&key);
        } else {
            self.pending.insert(key, value);
        }
    }

    /// A write. The key cap counts the keys the store would hold if the
    /// call committed now: overwriting a key that is there (committed or
    /// written earlier in the call) needs no room, and a key deleted in
    /// the call frees its room for another.
    fn state_write(&mut self, key: String, value: Vec<u8>) -> Result<(), state::StateError> {
        self.state.check_value(&key, &value)?;
        let (committed, held) = self.committed(&key);
        let present = match self.pending.get(&key) {
            Some(v) => v.is_some(),
            None => committed,
        };
        if !present {
            let max = self.state.limits().max_keys;
            let would_hold = i64::try_from(held)
                .unwrap_or(i64::MAX)
                .saturating_add(self.pending_added);
            if u64::try_from(would_hold).unwrap_or(0) >= max {
                return Err(state::StateError::TooManyKeys(max));
            }
        }
        self.record(key, Some(value), committed);
        Ok(())
    }

    fn state_delete(&mut self, key: String) -> bool {
        let (committed, _) = self.committed(&key);
        let existed = match self.pending.get(&key) {
            Some(v) => v.is_some(),
            None => committed,
        };
        self.record(key, None, committed);
        existed
    }

    /// Apply this call's writes to the stage's state store.
    pub fn commit_state(&mut self) {
        self.pending_added = 0;
        self.state.commit(&mut self.pending);
    }

    /// Forget this call's writes.
    pub fn discard_state(&mut self) {
        self.pending_added = 0;
        self.pending.clear();
    }
}

impl state::Host for StoreData {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.state_lookup(&key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), state::StateError> {
        self.state_write(key, value)
    }

    fn set_if_absent(&mut self, key: String, value: Vec<u8>) -> Result<bool, state::StateError> {
        if self.state_present(&key) {
            return Ok(false);
        }
        self.state_write(key, value).map(|()| true)
    }

    fn delete(&mut self, key: String) -> bool {
        self.state_delete(key)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store(limits: PluginLimits) -> StoreData {
        let state = Arc::new(StateStore::new("stage", (&limits).into()));
        StoreData::new(Arc::new(PluginShared::new("p", limits)), state, 1 << 20)
    }

    const LIMITS: PluginLimits = PluginLimits {
        max_keys: 2,
        max_value_bytes: 4,
        max_key_bytes: 8,
        max_metrics: 1,
        max_log_message_bytes: 16,
    };

    #[test]
    fn state_bounds_are_enforced() {
        use state::StateError::{TooManyKeys, ValueTooLarge};
        let mut s = store(LIMITS);
        let long_key = "k".repeat(9);
        assert!(matches!(
            state::Host::set(&mut s, long_key, vec![1]),
            Err(ValueTooLarge(8))
        ));
        assert!(matches!(
            state::Host::set(&mut s, "a".into(), vec![0; 5]),
            Err(ValueTooLarge(4))
        ));
        assert!(state::Host::set(&mut s, "a".into(), vec![1]).is_ok());
        assert!(state::Host::set(&mut s, "b".into(), vec![1]).is_ok());
        assert!(matches!(
            state::Host::set(&mut s, "c".into(), vec![1]),
            Err(TooManyKeys(2))
        ));
        // Overwriting an existing key needs no room.
        assert!(state::Host::set(&mut s, "a".into(), vec![2]).is_ok());
    }

    #[test]
    fn writes_reach_shared_state_only_on_commit() {
        let mut s = store(LIMITS);
        state::Host::set(&mut s, "a".into(), vec![1]).unwrap();
        assert_eq!(
            state::Host::get(&mut s, "a".into()),
            Some(vec![1]),
            "a call sees its own writes"
        );
        assert_eq!(s.state.len(), 0);
        s.discard_state();
        assert_eq!(state::Host::get(&mut s, "a".into()), None);
        state::Host::set(&mut s, "a".into(), vec![1]).unwrap();
        s.commit_state();
        assert_eq!(s.state.len(), 1);
        assert!(state::Host::delete(&mut s, "a".into()));
        s.commit_state();
        assert_eq!(s.state.len(), 0);
    }

    fn set(s: &mut StoreData, key: &str) -> Result<(), state::StateError> {
        state::Host::set(s, key.into(), vec![1])
    }

    fn refused(r: Result<(), state::StateError>) -> bool {
        matches!(r, Err(state::StateError::TooManyKeys(2)))
    }

    #[test]
    fn overwriting_a_committed_key_needs_no_room() {
        let mut s = store(LIMITS);
        set(&mut s, "a").unwrap();
        set(&mut s, "b").unwrap();
        s.commit_state();
        // A full store: overwrites of what is there go through, in any
        // number, and do not use up room a new key would need.
        for _ in 0..3 {
            set(&mut s, "a").unwrap();
            set(&mut s, "b").unwrap();
        }
        assert!(refused(set(&mut s, "c")));
        s.commit_state();
        assert_eq!(s.state.len(), 2);
    }

    #[test]
    fn repeated_writes_of_a_new_key_count_once() {
        let mut s = store(LIMITS);
        for _ in 0..5 {
            set(&mut s, "a").unwrap();
        }
        assert_eq!(
            state::Host::set_if_absent(&mut s, "a".into(), vec![2]).ok(),
            Some(false)
        );
        set(&mut s, "b").unwrap();
        assert!(refused(set(&mut s, "c")));
        s.commit_state();
        assert_eq!(s.state.len(), 2);
    }

    #[test]
    fn deleting_a_key_frees_its_room_within_the_call() {
        let mut s = store(LIMITS);
        set(&mut s, "a").unwrap();
        set(&mut s, "b").unwrap();
        s.commit_state();
        // A committed key deleted in this call makes room for a new one.
        assert!(state::Host::delete(&mut s, "a".into()));
        assert!(!state::Host::delete(&mut s, "a".into()), "already gone");
        set(&mut s, "c").unwrap();
        assert!(refused(set(&mut s, "d")));
        // Writing the deleted key back needs room again: there is none.
        assert!(refused(set(&mut s, "a")));
        // A key written and deleted within the call frees its room too.
        assert!(state::Host::delete(&mut s, "c".into()));
        set(&mut s, "d").unwrap();
        s.commit_state();
        let keys: Vec<String> = s.state.snapshot().into_keys().collect();
        assert_eq!(keys, ["b", "d"]);
        // Deleting what the store never held changes nothing.
        assert!(!state::Host::delete(&mut s, "zz".into()));
        assert!(refused(set(&mut s, "e")));
    }

    #[test]
    fn a_discarded_call_leaves_its_room_behind() {
        let mut s = store(LIMITS);
        set(&mut s, "a").unwrap();
        set(&mut s, "b").unwrap();
        s.discard_state();
        set(&mut s, "c").unwrap();
        set(&mut s, "d").unwrap();
        assert!(refused(set(&mut s, "e")));
        s.commit_state();
        assert_eq!(s.state.len(), 2);
        assert!(state::Host::delete(&mut s, "c".into()));
        s.discard_state();
        assert!(
            refused(set(&mut s, "e")),
            "the discarded delete freed nothing"
        );
    }

    #[test]
    fn a_call_may_fill_a_large_store_in_linear_time() {
        // 100,000 new keys in one call: the cap check per write is O(1)
        // (a scan of the pending writes per key would take minutes here).
        const CAP: u64 = 100_000;
        let mut s = store(PluginLimits {
            max_keys: CAP,
            max_key_bytes: 64,
            ..LIMITS
        });
        for i in 0..CAP {
            state::Host::set(&mut s, format!("k{i}"), vec![1]).unwrap();
        }
        assert!(matches!(
            state::Host::set(&mut s, "one-more".into(), vec![1]),
            Err(state::StateError::TooManyKeys(CAP))
        ));
        // Overwrites still go through at the cap.
        state::Host::set(&mut s, "k7".into(), vec![2]).unwrap();
        s.commit_state();
        assert_eq!(s.state.len(), CAP as usize);
        assert!(matches!(
            state::Host::set(&mut s, "one-more".into(), vec![1]),
            Err(state::StateError::TooManyKeys(CAP))
        ));
    }

    #[test]
    fn instances_of_one_plugin_write_to_the_store_they_are_given() {
        let shared = Arc::new(PluginShared::new("p", LIMITS));
        let mut stores = crate::plugin::state_store::StateScopes::default();
        let limits = (&LIMITS).into();
        let (a, b) = (stores.store("a", limits), stores.store("b", limits));
        let mut in_a = StoreData::new(shared.clone(), a.clone(), 1 << 20);
        let mut in_b = StoreData::new(shared.clone(), b.clone(), 1 << 20);
        let mut a_again = StoreData::new(shared.clone(), a.clone(), 1 << 20);
        for (s, store) in [(&in_a, &a), (&in_b, &b), (&a_again, &a)] {
            assert!(Arc::ptr_eq(&s.state, store));
            shared.attach_state(store);
        }
        assert_eq!(
            state::Host::set_if_absent(&mut in_a, "u1".into(), vec![1]).ok(),
            Some(true)
        );
        in_a.commit_state();
        // Another scope has not seen u1; the same scope has.
        assert_eq!(
            state::Host::set_if_absent(&mut in_b, "u1".into(), vec![1]).ok(),
            Some(true)
        );
        in_b.commit_state();
        assert_eq!(
            state::Host::set_if_absent(&mut a_again, "u1".into(), vec![1]).ok(),
            Some(false)
        );
        // Each store counted once: a's key and b's.
        assert_eq!(shared.state_keys(), 2);
        drop((in_b, b, stores));
        assert_eq!(shared.state_keys(), 1, "a dropped store drops out");
    }

    #[test]
    fn metric_count_and_name_caps_are_enforced() {
        let mut s = store(LIMITS);
        metrics::Host::counter_add(&mut s, "ok".into(), 1);
        metrics::Host::counter_add(&mut s, "second".into(), 1);
        metrics::Host::counter_add(&mut s, "ok".into(), 2);
        metrics::Host::gauge_set(&mut s, "n".repeat(MAX_METRIC_NAME_BYTES + 1), 1.0);
        assert_eq!(s.shared.counters().get("ok"), Some(&3));
        assert_eq!(s.shared.counters().len(), 1);
        assert!(s.shared.gauges().is_empty());
        assert_eq!(s.shared.metrics_refused.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncated("héllo", 2), "h");
        assert_eq!(truncated("héllo", 3), "hé");
        assert_eq!(truncated("abc", 10), "abc");
    }
}
