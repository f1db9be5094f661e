//! The live-users table: every live user's last-seen time and current URL,
//! looked up once per event.
//!
//! A general hash map keyed by `distinct_id` costs the pipeline thread a
//! cache miss or two per event once there are tens of thousands of users
//! (the table outgrows the caches, and long ids and URLs live on the heap),
//! which made it the largest single cost of `eddy serve`. This table keeps
//! what every event touches — a 64-bit hash of the user's id, the last-seen
//! time and a hash of the current URL — in 32-byte slots, apart from the
//! strings, and lets the caller prefetch an event's slot a few events ahead.
//!
//! Users are identified by the 64-bit hash of their `distinct_id` (zero is
//! reserved for "empty"). Two ids that hash alike count as one user: with
//! `n` users that happens with probability about `n² / 2⁶⁵` — 3 × 10⁻¹⁰ at
//! the default cap of 100,000. URLs are compared by hash the same way. The
//! strings are kept to answer `GET /v1/live/users`, shared
//! ([`SharedStr`]) so a checkpoint copies a reference per user, not the
//! text.

use std::hash::BuildHasher;

use compact_str::CompactString;

use super::snapshot::SharedStr;

/// What every event reads and writes: one user. 32-byte aligned, so a slot
/// never straddles two cache lines and one prefetch brings all of it.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(32))]
struct Slot {
    /// Hash of the `distinct_id`; 0 for an empty slot.
    key: u64,
    last_seen: i64,
    /// Hash of `url`; 0 for none.
    url: u64,
}

/// The strings of one user, touched only when they change and on listing.
#[derive(Debug, Clone, Default)]
struct Names {
    id: SharedStr,
    url: Option<SharedStr>,
}

/// Open addressing with linear probing; at most three quarters full.
#[derive(Debug)]
pub(super) struct Users {
    slots: Vec<Slot>,
    names: Vec<Names>,
    len: usize,
    hasher: foldhash::fast::RandomState,
}

/// A user's entry, found or made by [`Users::entry`].
pub(super) enum Entry {
    /// Known, at this index.
    Found(usize),
    /// Not there; this is where it would go.
    Vacant(usize),
}

const MIN_SLOTS: usize = 64;

impl Users {
    pub(super) fn new() -> Users {
        Users {
            slots: vec![Slot::default(); MIN_SLOTS],
            names: vec![Names::default(); MIN_SLOTS],
            len: 0,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The hash users (by `distinct_id`) and URLs are told apart by; never
    /// 0. A user's hash is its key.
    pub(super) fn hash(&self, s: &str) -> u64 {
        self.hasher.hash_one(s).max(1)
    }

    fn home(&self, key: u64) -> usize {
        // High bits: the low bits of foldhash's output mix less.
        (key.rotate_left(26) as usize) & (self.slots.len() - 1)
    }

    /// Ask the CPU to start loading `key`'s slot, so that a lookup a few
    /// events later does not wait for memory.
    #[inline]
    pub(super) fn prefetch(&self, key: u64) {
        crate::prefetch::prefetch(&self.slots[self.home(key)]);
    }

    pub(super) fn entry(&self, key: u64) -> Entry {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            match self.slots[i].key {
                0 => return Entry::Vacant(i),
                k if k == key => return Entry::Found(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// The last-seen time and URL hash of the user at `i`.
    pub(super) fn seen(&self, i: usize) -> (i64, u64) {
        (self.slots[i].last_seen, self.slots[i].url)
    }

    /// Move the user at `i` on to `last_seen`.
    pub(super) fn touch(&mut self, i: usize, last_seen: i64) {
        self.slots[i].last_seen = last_seen;
    }

    /// Set the URL of the user at `i`.
    pub(super) fn set_url(&mut self, i: usize, url: &CompactString, hash: u64) {
        self.slots[i].url = hash;
        self.names[i].url = Some(SharedStr::from(url.as_str()));
    }

    /// Add a user at a slot [`Users::entry`] just called vacant (nothing
    /// else may have changed the table since).
    pub(super) fn insert(
        &mut self,
        at: usize,
        key: u64,
        id: &CompactString,
        last_seen: i64,
        url: Option<(&CompactString, u64)>,
    ) {
        let names = Names {
            id: SharedStr::from(id.as_str()),
            url: url.map(|(u, _)| SharedStr::from(u.as_str())),
        };
        self.put(at, key, last_seen, url.map_or(0, |(_, h)| h), names);
    }

    fn put(&mut self, at: usize, key: u64, last_seen: i64, url: u64, names: Names) {
        self.slots[at] = Slot {
            key,
            last_seen,
            url,
        };
        self.names[at] = names;
        self.len += 1;
        if self.len * 4 > self.slots.len() * 3 {
            self.rebuild(self.slots.len() * 2);
        }
    }

    /// Keep only the users last seen after `from`. In place: called ten
    /// times a second, it allocates nothing and, when nobody left, only
    /// reads the slots.
    pub(super) fn retain_seen_after(&mut self, from: i64) {
        let mut i = 0;
        while i < self.slots.len() {
            let slot = self.slots[i];
            if slot.key != 0 && slot.last_seen <= from {
                // A later user may move into `i`: look at it again.
                self.remove_at(i);
            } else {
                i += 1;
            }
        }
        // Shrink when mostly empty, so a burst of users does not keep its
        // memory forever.
        let mut size = self.slots.len();
        while size > MIN_SLOTS && self.len * 8 < size {
            size /= 2;
        }
        if size < self.slots.len() {
            self.rebuild(size);
        }
    }

    /// Empty slot `i`, moving back the users after it that a lookup could
    /// no longer reach past the gap (Knuth's algorithm R).
    fn remove_at(&mut self, i: usize) {
        let mask = self.slots.len() - 1;
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let key = self.slots[j].key;
            if key == 0 {
                break;
            }
            // The user at `j` stays if its home lies cyclically in
            // `(hole, j]`: the gap is not on its path.
            let home = self.home(key);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = self.slots[j];
                self.names.swap(hole, j);
                hole = j;
            }
        }
        self.slots[hole] = Slot::default();
        self.names[hole] = Names::default();
        self.len -= 1;
    }

    fn rebuild(&mut self, slots: usize) {
        let old_slots = std::mem::replace(&mut self.slots, vec![Slot::default(); slots]);
        let old_names = std::mem::replace(&mut self.names, vec![Names::default(); slots]);
        for (slot, names) in old_slots.into_iter().zip(old_names) {
            if slot.key != 0 {
                // Keys are unique: the first empty slot from home is its.
                let mask = self.slots.len() - 1;
                let mut at = self.home(slot.key);
                while self.slots[at].key != 0 {
                    at = (at + 1) & mask;
                }
                self.slots[at] = slot;
                self.names[at] = names;
            }
        }
    }

    /// Put back a user from a snapshot (ids are unique there).
    pub(super) fn restore(&mut self, id: &SharedStr, last_seen: i64, url: Option<&SharedStr>) {
        let key = self.hash(id);
        let url_hash = url.map_or(0, |u| self.hash(u));
        if let Entry::Vacant(at) = self.entry(key) {
            let names = Names {
                id: id.clone(),
                url: url.cloned(),
            };
            self.put(at, key, last_seen, url_hash, names);
        }
    }

    /// Every user: id, last seen, current URL.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&SharedStr, i64, Option<&SharedStr>)> {
        self.slots
            .iter()
            .zip(&self.names)
            .filter(|(s, _)| s.key != 0)
            .map(|(s, n)| (&n.id, s.last_seen, n.url.as_ref()))
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn users_survive_growth_and_pruning() {
        let mut users = Users::new();
        for n in 0..10_000i64 {
            let id = CompactString::from(format!("user-{n}"));
            let key = users.hash(&id);
            match users.entry(key) {
                Entry::Vacant(at) => users.insert(at, key, &id, n, None),
                Entry::Found(_) => panic!("user-{n} found before it was added"),
            }
        }
        assert_eq!(users.len(), 10_000);
        for n in (0..10_000i64).step_by(7) {
            let Entry::Found(at) = users.entry(users.hash(&format!("user-{n}"))) else {
                panic!("user-{n} lost");
            };
            assert_eq!(users.seen(at).0, n);
        }
        users.retain_seen_after(8_999);
        assert_eq!(users.len(), 1_000);
        assert_eq!(
            users.slots.len(),
            4_096,
            "shrunk to the smallest size at most 1/8 full"
        );
        let mut ids: Vec<i64> = users.iter().map(|(_, seen, _)| seen).collect();
        ids.sort_unstable();
        assert_eq!(ids, (9_000..10_000).collect::<Vec<_>>());
        assert!(matches!(
            users.entry(users.hash("user-5")),
            Entry::Vacant(_)
        ));
    }

    /// Random inserts, touches and prunings against a `HashMap` model,
    /// with a table small enough that clusters wrap around its end.
    #[test]
    fn users_match_a_model_under_random_churn() {
        use std::collections::HashMap;
        let mut users = Users::new();
        let mut model: HashMap<String, i64> = HashMap::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for t in 0..50_000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = format!("u{}", x % 300);
            let key = users.hash(&id);
            match users.entry(key) {
                Entry::Found(at) => users.touch(at, t),
                Entry::Vacant(at) => users.insert(at, key, &id.as_str().into(), t, None),
            }
            model.insert(id, t);
            if t % 97 == 0 {
                let from = t - 150;
                users.retain_seen_after(from);
                model.retain(|_, seen| *seen > from);
            }
            if t % 1_000 == 0 {
                assert_eq!(users.len(), model.len());
                for (id, seen) in &model {
                    let Entry::Found(at) = users.entry(users.hash(id)) else {
                        panic!("{id} unreachable at t = {t}");
                    };
                    assert_eq!(users.seen(at).0, *seen);
                }
                let mut listed: Vec<(String, i64)> = users
                    .iter()
                    .map(|(id, seen, _)| (id.to_string(), seen))
                    .collect();
                let mut expected: Vec<(String, i64)> =
                    model.iter().map(|(id, seen)| (id.clone(), *seen)).collect();
                listed.sort();
                expected.sort();
                assert_eq!(listed, expected);
            }
        }
    }
}
