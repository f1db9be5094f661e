//! Deduplication by event id, inside the engine so a replay of the
//! write-ahead log decides exactly as the live run did, and so checkpoints
//! carry the ids seen.
//!
//! An id is remembered for `horizon_ms` of *batch wall time* (the server's
//! arrival clock, an input), at most `max_ids` of them: past that bound the
//! oldest ids are forgotten before their horizon. A client that retries a
//! request whose answer it lost gets its events acknowledged again; the
//! engine drops the ones it has already processed and counts them.
//!
//! Ids are remembered as their 128-bit XXH3 hash (a specified function, so
//! the hashes in a checkpoint mean the same to every later eddy): about
//! 50 bytes per id whatever its length, and two different ids collide with
//! odds of about 10⁻²⁷ at a million ids. The arrival order is kept in
//! fixed-size chunks that a snapshot shares rather than copies, so taking
//! a checkpoint costs the engine thread a few microseconds per million ids
//! instead of copying them all (the copy and its encoding used to stall
//! ingest acknowledgements for tens of milliseconds).

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde::de::Deserializer;
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::event::Event;

/// An id's hash.
type IdHash = u128;

/// `(batch wall ms, id hash)`.
type Entry = (i64, IdHash);

/// Entries per shared chunk.
const CHUNK: usize = 4096;

/// The hash of an event id as remembered.
fn id_hash(id: &str) -> IdHash {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// The set's hasher: the keys are uniform hashes already, so it takes
/// their low 64 bits.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// The ids seen recently, oldest first.
#[derive(Debug, Default)]
pub struct Dedup {
    horizon_ms: u64,
    max_ids: u64,
    /// Full chunks, oldest first (shared with snapshots).
    full: VecDeque<Arc<[Entry]>>,
    /// The newest entries, fewer than [`CHUNK`].
    tail: Vec<Entry>,
    /// Entries of the oldest container (the first full chunk, or the tail
    /// when there is none) already forgotten.
    head: usize,
    /// Entries remembered.
    len: usize,
    /// The same hashes, for lookup; rebuilt from the entries on restore.
    seen: HashSet<IdHash, BuildHasherDefault<PreHashed>>,
    /// The newest wall time seen (a batch without one uses it).
    now: i64,
}

impl Clone for Dedup {
    /// Shares the full chunks and leaves out the lookup set (rebuilt when
    /// first needed): a snapshot clones this every checkpoint.
    fn clone(&self) -> Self {
        Dedup {
            horizon_ms: self.horizon_ms,
            max_ids: self.max_ids,
            full: self.full.clone(),
            tail: self.tail.clone(),
            head: self.head,
            len: self.len,
            seen: HashSet::default(),
            now: self.now,
        }
    }
}

impl Dedup {
    /// Remember ids for `horizon_ms` (0: off), at most `max_ids`. Ids
    /// already remembered are kept (a restored engine's), trimmed to the
    /// new bound.
    pub fn configure(&mut self, horizon_ms: u64, max_ids: u64) {
        self.horizon_ms = horizon_ms;
        self.max_ids = max_ids;
        if horizon_ms == 0 {
            *self = Dedup {
                horizon_ms,
                max_ids,
                now: self.now,
                ..Dedup::default()
            };
        }
        self.trim();
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The entries, oldest first.
    fn entries(&self) -> impl Iterator<Item = &Entry> {
        let head = self.head;
        let tail_from = if self.full.is_empty() { head } else { 0 };
        self.full
            .iter()
            .enumerate()
            .flat_map(move |(i, c)| c.get(if i == 0 { head } else { 0 }..).unwrap_or(&[]))
            .chain(self.tail.get(tail_from..).unwrap_or(&[]))
    }

    fn front(&self) -> Option<Entry> {
        match self.full.front() {
            Some(c) => c.get(self.head).copied(),
            None => self.tail.get(self.head).copied(),
        }
    }

    /// Forget the oldest entry.
    fn pop_front(&mut self) {
        let Some((_, hash)) = self.front() else {
            return;
        };
        self.seen.remove(&hash);
        self.head += 1;
        self.len -= 1;
        match self.full.front() {
            Some(c) if self.head >= c.len() => {
                self.full.pop_front();
                self.head = 0;
            }
            None if self.head >= self.tail.len() => {
                self.tail.clear();
                self.head = 0;
            }
            _ => {}
        }
    }

    fn push_back(&mut self, entry: Entry) {
        self.tail.push(entry);
        self.len += 1;
        if self.tail.len() >= CHUNK {
            let chunk: Arc<[Entry]> = std::mem::take(&mut self.tail).into();
            self.full.push_back(chunk);
        }
    }

    /// Drop the events whose id was seen within the horizon (and repeats
    /// within `events`); remember the others. Returns the events to process
    /// and how many were dropped.
    pub fn filter(&mut self, wall_ms: Option<i64>, events: Vec<Event>) -> (Vec<Event>, u64) {
        if self.horizon_ms == 0 {
            return (events, 0);
        }
        if self.seen.len() != self.len {
            let seen = self.entries().map(|&(_, h)| h).collect();
            self.seen = seen;
        }
        let now = wall_ms.unwrap_or(self.now).max(self.now);
        self.now = now;
        let horizon = i64::try_from(self.horizon_ms).unwrap_or(i64::MAX);
        while let Some((at, _)) = self.front() {
            if at.saturating_add(horizon) > now {
                break;
            }
            self.pop_front();
        }
        let before = events.len();
        let mut kept = Vec::with_capacity(before);
        for e in events {
            let hash = id_hash(&e.id);
            if !self.seen.insert(hash) {
                continue;
            }
            self.push_back((now, hash));
            kept.push(e);
        }
        self.trim();
        let dropped = (before - kept.len()) as u64;
        (kept, dropped)
    }

    fn trim(&mut self) {
        let max = usize::try_from(self.max_ids).unwrap_or(usize::MAX);
        while self.len > max {
            self.pop_front();
        }
    }
}

/// The entries as one sequence (the chunking is not part of the format).
struct Entries<'a>(&'a Dedup);

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len))?;
        for e in self.0.entries() {
            seq.serialize_element(e)?;
        }
        seq.end()
    }
}

impl Serialize for Dedup {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Dedup", 4)?;
        st.serialize_field("horizon_ms", &self.horizon_ms)?;
        st.serialize_field("max_ids", &self.max_ids)?;
        st.serialize_field("order", &Entries(self))?;
        st.serialize_field("now", &self.now)?;
        st.end()
    }
}

/// The saved form.
#[derive(Deserialize)]
struct Saved {
    horizon_ms: u64,
    max_ids: u64,
    order: Vec<Entry>,
    now: i64,
}

impl<'de> Deserialize<'de> for Dedup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let saved = Saved::deserialize(d)?;
        let mut dedup = Dedup {
            horizon_ms: saved.horizon_ms,
            max_ids: saved.max_ids,
            now: saved.now,
            ..Dedup::default()
        };
        for entry in saved.order {
            dedup.push_back(entry);
        }
        Ok(dedup)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn ev(id: &str) -> Event {
        Event {
            id: id.into(),
            name: "x".into(),
            timestamp: 1,
            distinct_id: "u".into(),
            session_id: None,
            properties: Vec::new(),
        }
    }

    fn ids(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn a_repeated_id_within_the_horizon_is_dropped_and_counted() {
        let mut d = Dedup::default();
        d.configure(1_000, 10);
        let (kept, dropped) = d.filter(Some(0), vec![ev("a"), ev("b"), ev("a")]);
        assert_eq!((ids(&kept), dropped), (vec!["a", "b"], 1));
        let (kept, dropped) = d.filter(Some(999), vec![ev("a"), ev("c")]);
        assert_eq!((ids(&kept), dropped), (vec!["c"], 1));
        // Past the horizon "a" and "b" are forgotten, "c" (seen at 999) not.
        let (kept, dropped) = d.filter(Some(1_000), vec![ev("a"), ev("c")]);
        assert_eq!((ids(&kept), dropped), (vec!["a"], 1));
    }

    #[test]
    fn memory_is_bounded_by_max_ids_and_survives_a_snapshot() {
        let mut d = Dedup::default();
        d.configure(60_000, 2);
        d.filter(Some(0), vec![ev("a"), ev("b"), ev("c")]);
        assert_eq!(d.len(), 2);
        let bytes = postcard::to_allocvec(&d).unwrap();
        let mut r: Dedup = postcard::from_bytes(&bytes).unwrap();
        r.configure(60_000, 2);
        let (kept, dropped) = r.filter(Some(1), vec![ev("a"), ev("b"), ev("c")]);
        // "a" was forgotten early (the bound), "b" and "c" are remembered.
        assert_eq!((ids(&kept), dropped), (vec!["a"], 2));
    }

    #[test]
    fn a_zero_horizon_turns_it_off() {
        let mut d = Dedup::default();
        d.configure(0, 10);
        let (kept, dropped) = d.filter(Some(0), vec![ev("a"), ev("a")]);
        assert_eq!((kept.len(), dropped), (2, 0));
    }

    /// The chunked store against the plain model it replaces: a queue of
    /// `(wall ms, id)` and a set, across chunk boundaries, expiry, the
    /// bound, snapshots (a clone, and an encode/decode) and restores.
    #[test]
    fn chunked_entries_behave_like_a_plain_queue() {
        use std::collections::HashSet as Set;
        let mut rng = crate::test_rng::Rng::new(7);
        for case in 0..20u64 {
            let horizon = 1 + rng.below(5_000);
            let max = 1 + rng.below(3 * CHUNK as u64);
            let mut d = Dedup::default();
            d.configure(horizon, max);
            let mut order: VecDeque<(i64, String)> = VecDeque::new();
            let mut now = 0i64;
            for step in 0..60 {
                now += rng.upto(400);
                let batch: Vec<Event> = (0..rng.below(600))
                    .map(|_| ev(&format!("id-{}", rng.below(6_000))))
                    .collect();
                // The model.
                while order
                    .front()
                    .is_some_and(|(at, _)| at.saturating_add(horizon as i64) <= now)
                {
                    order.pop_front();
                }
                let mut seen: Set<String> = order.iter().map(|(_, id)| id.clone()).collect();
                let mut want = Vec::new();
                for e in &batch {
                    if seen.insert(e.id.to_string()) {
                        order.push_back((now, e.id.to_string()));
                        want.push(e.id.to_string());
                    }
                }
                while order.len() as u64 > max {
                    order.pop_front();
                }
                let expect_dropped = (batch.len() - want.len()) as u64;
                // Every few steps, continue from a snapshot instead.
                if step % 7 == 3 {
                    d = d.clone();
                } else if step % 7 == 5 {
                    d = postcard::from_bytes(&postcard::to_allocvec(&d).unwrap()).unwrap();
                    d.configure(horizon, max);
                }
                let (kept, dropped) = d.filter(Some(now), batch);
                let kept: Vec<String> = kept.iter().map(|e| e.id.to_string()).collect();
                assert_eq!(
                    (kept, dropped),
                    (want, expect_dropped),
                    "case {case} step {step}"
                );
                assert_eq!(d.len(), order.len(), "case {case} step {step}");
                let hashes: Vec<(i64, IdHash)> = d.entries().copied().collect();
                let model: Vec<(i64, IdHash)> =
                    order.iter().map(|(at, id)| (*at, id_hash(id))).collect();
                assert_eq!(hashes, model, "case {case} step {step}");
            }
        }
    }

    #[test]
    fn a_snapshot_shares_full_chunks_instead_of_copying_them() {
        let mut d = Dedup::default();
        d.configure(60_000, 1_000_000);
        let events: Vec<Event> = (0..3 * CHUNK + 10).map(|i| ev(&format!("e{i}"))).collect();
        d.filter(Some(0), events);
        let copy = d.clone();
        assert_eq!(copy.full.len(), 3);
        assert!(
            d.full
                .iter()
                .zip(&copy.full)
                .all(|(a, b)| Arc::ptr_eq(a, b))
        );
        assert_eq!(copy.tail.len(), 10);
        assert_eq!(
            postcard::to_allocvec(&copy).unwrap(),
            postcard::to_allocvec(&d).unwrap()
        );
    }
}
