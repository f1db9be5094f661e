//! The key-value stores behind the `state` import, one per state scope.
//!
//! A scope is a stage's own by default (named after the stage), so two
//! stages running the same plugin keep separate state; stages that name the
//! same scope in their `state` key share one store. A store outlives plugin
//! instances and versions (an instance is disposable; its state is not) and
//! is what a snapshot saves: [`StateStore::snapshot`] lists it sorted by key,
//! so equal stores give equal snapshots.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::bindings::eddy::plugin::state::StateError;
use super::host_api::PluginLimits;

/// Bounds of one store (`runtime.state_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimits {
    /// `runtime.state_max_keys`: keys the store may hold.
    pub max_keys: u64,
    /// `runtime.state_max_value_bytes`: largest value.
    pub max_value_bytes: u64,
    /// `runtime.state_max_key_bytes`: longest key.
    pub max_key_bytes: u64,
}

impl From<&crate::config::RuntimeConfig> for StateLimits {
    fn from(c: &crate::config::RuntimeConfig) -> Self {
        StateLimits {
            max_keys: c.state_max_keys,
            max_value_bytes: c.state_max_value_bytes,
            max_key_bytes: c.state_max_key_bytes,
        }
    }
}

impl From<&PluginLimits> for StateLimits {
    fn from(l: &PluginLimits) -> Self {
        StateLimits {
            max_keys: l.max_keys,
            max_value_bytes: l.max_value_bytes,
            max_key_bytes: l.max_key_bytes,
        }
    }
}

/// One state scope's key-value store.
///
/// Plugin instances write to it through their pending writes (committed
/// when a batch succeeds; see [`super::host_api::StoreData`]); the methods
/// here act on the committed contents directly. Keys and values are shared
/// (`Arc`), so a checkpoint takes the entries with a reference count each
/// ([`StateStore::entries`]) and copies and sorts them on its own thread.
#[derive(Debug)]
pub struct StateStore {
    scope: String,
    limits: StateLimits,
    map: Mutex<HashMap<Arc<str>, Arc<[u8]>>>,
}

/// A store's entries as [`StateStore::entries`] takes them: shared, in no
/// particular order.
pub type SharedEntries = Vec<(Arc<str>, Arc<[u8]>)>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map operation or a loop of them
    // that cannot panic, so a poisoned lock still guards a whole map.
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl StateStore {
    /// An empty store for `scope`.
    pub fn new(scope: impl Into<String>, limits: StateLimits) -> Self {
        StateStore {
            scope: scope.into(),
            limits,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The scope's name.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The store's bounds.
    pub fn limits(&self) -> StateLimits {
        self.limits
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        lock(&self.map).is_empty()
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        lock(&self.map).get(key).map(|v| v.to_vec())
    }

    /// Whether `key` holds a value.
    pub fn contains_key(&self, key: &str) -> bool {
        lock(&self.map).contains_key(key)
    }

    /// Store `value` under `key` within the bounds: a new key needs room
    /// under `max_keys`, an existing one does not.
    pub fn set(&self, key: String, value: Vec<u8>) -> Result<(), StateError> {
        self.check_value(&key, &value)?;
        let mut map = lock(&self.map);
        if !map.contains_key(key.as_str()) && map.len() as u64 >= self.limits.max_keys {
            return Err(StateError::TooManyKeys(self.limits.max_keys));
        }
        map.insert(key.into(), value.into());
        Ok(())
    }

    /// Remove `key`; whether it was there.
    pub fn delete(&self, key: &str) -> bool {
        lock(&self.map).remove(key).is_some()
    }

    /// Every entry, sorted by key.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        lock(&self.map)
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    /// Every entry, shared, unsorted: what a checkpoint takes on the
    /// engine thread (a reference count per entry, no copy).
    pub fn entries(&self) -> SharedEntries {
        lock(&self.map)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Replace every entry with `entries` (a [`StateStore::snapshot`]),
    /// taken as they are: they were within the bounds they were saved
    /// under, and if today's are tighter, writes of new keys are refused
    /// until the store is back within them.
    pub fn restore(&self, entries: BTreeMap<String, Vec<u8>>) {
        *lock(&self.map) = entries
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
    }

    /// The per-write bounds on a key and its value.
    pub(crate) fn check_value(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        if key.len() as u64 > self.limits.max_key_bytes {
            return Err(StateError::ValueTooLarge(self.limits.max_key_bytes));
        }
        if value.len() as u64 > self.limits.max_value_bytes {
            return Err(StateError::ValueTooLarge(self.limits.max_value_bytes));
        }
        Ok(())
    }

    /// Whether the store holds `key`, and how many keys it holds, under
    /// one lock.
    pub(crate) fn probe(&self, key: &str) -> (bool, usize) {
        let map = lock(&self.map);
        (map.contains_key(key), map.len())
    }

    /// Apply a call's pending writes (`None`: delete), draining them.
    pub(crate) fn commit(&self, pending: &mut HashMap<String, Option<Vec<u8>>>) {
        if pending.is_empty() {
            return;
        }
        let mut map = lock(&self.map);
        for (k, v) in pending.drain() {
            match v {
                Some(v) => map.insert(k.into(), v.into()),
                None => map.remove(k.as_str()),
            };
        }
    }
}

/// The stores of one pipeline, by scope name (sorted, so walking them is
/// deterministic).
#[derive(Debug, Default)]
pub struct StateScopes {
    stores: BTreeMap<String, Arc<StateStore>>,
}

impl StateScopes {
    /// The store of `scope`, created empty with `limits` on first use.
    pub fn store(&mut self, scope: &str, limits: StateLimits) -> Arc<StateStore> {
        self.stores
            .entry(scope.to_owned())
            .or_insert_with(|| Arc::new(StateStore::new(scope, limits)))
            .clone()
    }

    /// Keep `store` as `scope`'s unless the scope has one already (a
    /// reconfigured pipeline keeping the stores of scopes only pattern
    /// plugins use).
    pub fn adopt(&mut self, scope: &str, store: Arc<StateStore>) {
        self.stores.entry(scope.to_owned()).or_insert(store);
    }

    /// The store of `scope`, if one was created.
    pub fn get(&self, scope: &str) -> Option<&Arc<StateStore>> {
        self.stores.get(scope)
    }

    /// Every store, by scope name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<StateStore>)> {
        self.stores.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LIMITS: StateLimits = StateLimits {
        max_keys: 2,
        max_value_bytes: 4,
        max_key_bytes: 8,
    };

    #[test]
    fn direct_writes_respect_the_bounds() {
        let s = StateStore::new("scope", LIMITS);
        assert_eq!(s.scope(), "scope");
        assert!(matches!(
            s.set("k".repeat(9), vec![1]),
            Err(StateError::ValueTooLarge(8))
        ));
        assert!(matches!(
            s.set("a".into(), vec![0; 5]),
            Err(StateError::ValueTooLarge(4))
        ));
        s.set("a".into(), vec![1]).unwrap();
        s.set("b".into(), vec![2]).unwrap();
        assert!(matches!(
            s.set("c".into(), vec![3]),
            Err(StateError::TooManyKeys(2))
        ));
        s.set("a".into(), vec![9]).unwrap();
        assert_eq!(s.get("a"), Some(vec![9]));
        assert!(s.delete("a"));
        assert!(!s.delete("a"));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn entries_share_what_snapshot_copies_and_later_writes_leave_them_be() {
        let s = StateStore::new(
            "x",
            StateLimits {
                max_keys: 100,
                ..LIMITS
            },
        );
        for k in ["m", "a", "z"] {
            s.set(k.into(), k.as_bytes().to_vec()).unwrap();
        }
        let mut taken = s.entries();
        taken.sort();
        let copied: BTreeMap<String, Vec<u8>> = taken
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        assert_eq!(copied, s.snapshot());
        s.set("a".into(), vec![7]).unwrap();
        assert!(s.delete("z"));
        assert_eq!((&*taken[0].0, &*taken[0].1), ("a", b"a".as_slice()));
        assert_eq!(&*taken[2].0, "z");
        assert_eq!(s.get("a"), Some(vec![7]));
    }

    #[test]
    fn snapshots_are_sorted_and_restore_replaces_everything() {
        let s = StateStore::new(
            "x",
            StateLimits {
                max_keys: 100,
                ..LIMITS
            },
        );
        for k in ["m", "a", "z", "b"] {
            s.set(k.into(), k.as_bytes().to_vec()).unwrap();
        }
        let snap = s.snapshot();
        let keys: Vec<&str> = snap.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a", "b", "m", "z"]);
        let t = StateStore::new("y", LIMITS);
        t.set("gone".into(), vec![1]).unwrap();
        t.restore(snap.clone());
        assert_eq!(t.snapshot(), snap);
        assert!(!t.contains_key("gone"));
        // Restored beyond today's cap: kept, but no new key fits.
        assert_eq!(t.len(), 4);
        assert!(matches!(
            t.set("new".into(), vec![1]),
            Err(StateError::TooManyKeys(2))
        ));
        t.set("a".into(), vec![0]).unwrap();
    }

    #[test]
    fn scopes_hand_out_one_store_per_name() {
        let mut scopes = StateScopes::default();
        let a = scopes.store("a", LIMITS);
        let again = scopes.store("a", LIMITS);
        let b = scopes.store("b", LIMITS);
        assert!(Arc::ptr_eq(&a, &again));
        assert!(!Arc::ptr_eq(&a, &b));
        a.set("k".into(), vec![1]).unwrap();
        assert_eq!(again.get("k"), Some(vec![1]));
        assert_eq!(b.get("k"), None);
        let names: Vec<&str> = scopes.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(scopes.get("c").is_none());
    }
}
