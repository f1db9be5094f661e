//! Deduplication by event id, inside the engine so a replay of the
//! write-ahead log decides exactly as the live run did, and so checkpoints
//! carry the ids seen.
//!
//! An id is remembered for `horizon_ms` of *batch wall time* (the server's
//! arrival clock, an input), at most `max_ids` of them: past that bound the
//! oldest ids are forgotten before their horizon, so memory stays within
//! about `max_ids × (id length + ~100 bytes)`. A client that retries a
//! request whose answer it lost gets its events acknowledged again; the
//! engine drops the ones it has already processed and counts them.

use std::collections::{HashSet, VecDeque};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::event::Event;

/// The ids seen recently, oldest first.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Dedup {
    horizon_ms: u64,
    max_ids: u64,
    /// `(batch wall ms, id)`, in arrival order.
    order: VecDeque<(i64, CompactString)>,
    /// The same ids, for lookup; rebuilt from `order` on restore.
    #[serde(skip)]
    seen: HashSet<CompactString>,
    /// The newest wall time seen (a batch without one uses it).
    now: i64,
}

impl Clone for Dedup {
    /// Without the lookup set (rebuilt from `order` when first needed):
    /// a snapshot clones this every checkpoint, and the set would double
    /// the copy.
    fn clone(&self) -> Self {
        Dedup {
            horizon_ms: self.horizon_ms,
            max_ids: self.max_ids,
            order: self.order.clone(),
            seen: HashSet::new(),
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
        if self.seen.len() != self.order.len() {
            self.seen = self.order.iter().map(|(_, id)| id.clone()).collect();
        }
        if horizon_ms == 0 {
            self.order.clear();
            self.seen.clear();
        }
        self.trim();
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Drop the events whose id was seen within the horizon (and repeats
    /// within `events`); remember the others. Returns the events to process
    /// and how many were dropped.
    pub fn filter(&mut self, wall_ms: Option<i64>, events: Vec<Event>) -> (Vec<Event>, u64) {
        if self.horizon_ms == 0 {
            return (events, 0);
        }
        if self.seen.len() != self.order.len() {
            self.seen = self.order.iter().map(|(_, id)| id.clone()).collect();
        }
        let now = wall_ms.unwrap_or(self.now).max(self.now);
        self.now = now;
        let horizon = i64::try_from(self.horizon_ms).unwrap_or(i64::MAX);
        while let Some((at, _)) = self.order.front() {
            if at.saturating_add(horizon) > now {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.seen.remove(&id);
            }
        }
        let before = events.len();
        let mut kept = Vec::with_capacity(before);
        for e in events {
            if self.seen.contains(&e.id) {
                continue;
            }
            self.seen.insert(e.id.clone());
            self.order.push_back((now, e.id.clone()));
            kept.push(e);
        }
        self.trim();
        let dropped = (before - kept.len()) as u64;
        (kept, dropped)
    }

    fn trim(&mut self) {
        let max = usize::try_from(self.max_ids).unwrap_or(usize::MAX);
        while self.order.len() > max {
            if let Some((_, id)) = self.order.pop_front() {
                self.seen.remove(&id);
            }
        }
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
}
