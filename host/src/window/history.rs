//! Closed-window history: the final results (and their corrections) of
//! one window, kept for a retention period and up to a count.
//!
//! Results are kept in chunks shared by reference count, so the engine can
//! hand REST a consistent copy of the whole history in O(chunks) — a list
//! of pointers — and the query (filtering, de-duplication, rendering to
//! JSON) runs on the reader's thread, never the engine's. Only the newest
//! chunk is ever written; if a reader still holds it, the engine copies
//! that one chunk (at most [`CHUNK`] pointers) first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value as Json;

use super::groups::{GroupKey, KeyPart, OVERFLOW};
use super::result::WindowResult;

/// Results per chunk: small enough that copying the newest chunk under a
/// reader costs microseconds, large enough that a full history (100,000
/// results by default) is ~100 pointers.
pub const CHUNK: usize = 1024;

/// Which history entries a query wants.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Windows starting at or after this (ms).
    pub from: Option<i64>,
    /// Windows ending at or before this (ms).
    pub to: Option<i64>,
    /// `(dimension, value)` pairs the group must match; an empty dimension
    /// matches any dimension. Values compare as text (a string's contents,
    /// a number's JSON form).
    pub group: Vec<(String, String)>,
    /// Most results returned (the newest).
    pub limit: usize,
}

type Chunk = Arc<Vec<Arc<WindowResult>>>;

/// One window's history.
#[derive(Debug, Clone)]
pub struct History {
    chunks: VecDeque<Chunk>,
    /// Entries of the first chunk that are gone (evicted).
    skip: usize,
    len: usize,
    retention_ms: i64,
    max_entries: usize,
    newest_end: i64,
    /// Changes so far (pushes and evictions): equal versions, equal
    /// contents, so a reader may reuse what it rendered from it.
    version: u64,
    /// Nothing can read it (see [`History::switch_off`]).
    off: bool,
}

/// A read-only copy of a [`History`] at one moment, cheap to make.
#[derive(Debug, Clone, Default)]
pub struct HistoryView {
    chunks: Vec<Chunk>,
    skip: usize,
    version: u64,
}

impl History {
    /// Keep results whose window ended within `retention_ms` of the newest
    /// one, at most `max_entries` of them.
    pub fn new(retention_ms: i64, max_entries: usize) -> History {
        History {
            chunks: VecDeque::new(),
            skip: 0,
            len: 0,
            retention_ms,
            max_entries: max_entries.max(1),
            newest_end: i64::MIN,
            version: 0,
            off: false,
        }
    }

    /// Keep nothing from now on, and forget what is kept: the driver has
    /// no reader for it (no queries, no snapshot).
    pub fn switch_off(&mut self) {
        *self = History::new(self.retention_ms, self.max_entries);
        self.off = true;
    }

    /// Whether it keeps nothing (see [`History::switch_off`]).
    pub fn is_off(&self) -> bool {
        self.off
    }

    /// Record a final result or a correction.
    pub fn push(&mut self, result: Arc<WindowResult>) {
        if self.off {
            return;
        }
        self.version += 1;
        self.newest_end = self.newest_end.max(result.end);
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK => Arc::make_mut(last).push(result),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(result);
                self.chunks.push_back(Arc::new(chunk));
            }
        }
        self.len += 1;
        while self.len > self.max_entries {
            self.pop_front();
        }
        let horizon = self.newest_end.saturating_sub(self.retention_ms);
        while self.front().is_some_and(|r| r.end < horizon) {
            self.pop_front();
        }
    }

    fn front(&self) -> Option<&Arc<WindowResult>> {
        self.chunks.front().and_then(|c| c.get(self.skip))
    }

    fn pop_front(&mut self) {
        let Some(first) = self.chunks.front() else {
            return;
        };
        self.skip += 1;
        self.len -= 1;
        if self.skip >= first.len() {
            self.chunks.pop_front();
            self.skip = 0;
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<WindowResult>> {
        self.chunks.iter().flat_map(|c| c.iter()).skip(self.skip)
    }

    /// A consistent copy for a reader on another thread.
    pub fn view(&self) -> HistoryView {
        HistoryView {
            chunks: self.chunks.iter().cloned().collect(),
            skip: self.skip,
            version: self.version,
        }
    }

    /// The latest result of every window and group matching `q`, oldest
    /// window first, as published (JSON).
    pub fn query(&self, q: &HistoryQuery) -> Vec<Json> {
        self.view().query(q)
    }
}

impl HistoryView {
    /// The history's version when this copy was made (see
    /// [`History`]: the same version, the same contents).
    pub fn version(&self) -> u64 {
        self.version
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<WindowResult>> {
        self.chunks.iter().flat_map(|c| c.iter()).skip(self.skip)
    }

    /// The latest result of every window and group matching `q`, oldest
    /// window first (ties by group), at most `q.limit` of the newest.
    pub fn query(&self, q: &HistoryQuery) -> Vec<Json> {
        // A correction supersedes the earlier result of the same window and
        // group; keep the latest.
        let mut latest: HashMap<(i64, i64, &GroupKey), &Arc<WindowResult>> = HashMap::new();
        let mut dims: Option<Vec<String>> = None;
        for r in self.iter() {
            if q.from.is_some_and(|f| r.start < f) || q.to.is_some_and(|t| r.end > t) {
                continue;
            }
            if !q.group.is_empty() {
                let dims = dims.get_or_insert_with(|| dimensions(r));
                if !matches_group(dims, &r.group, &q.group) {
                    continue;
                }
            }
            latest.insert((r.start, r.end, &r.group), r);
        }
        let mut picked: Vec<_> = latest.into_iter().collect();
        picked.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let skip = picked.len().saturating_sub(q.limit);
        picked
            .into_iter()
            .skip(skip)
            .map(|(_, r)| r.to_json())
            .collect()
    }
}

/// The dimension names of a window's groups (its `group_by` paths).
fn dimensions(r: &WindowResult) -> Vec<String> {
    match r.schema.grouping.to_json(&r.schema.grouping.overflow()) {
        Json::Object(m) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// A key part as a group filter compares it: a string's contents, any
/// other value's JSON text.
fn text(k: &KeyPart) -> String {
    match k {
        KeyPart::Missing | KeyPart::Null => "null".to_owned(),
        KeyPart::Bool(b) => b.to_string(),
        KeyPart::Int(i) => i.to_string(),
        KeyPart::Float(bits) => Json::from(f64::from_bits(*bits)).to_string(),
        KeyPart::Str(s) => s.to_string(),
        KeyPart::Json(t) => t.to_string(),
        KeyPart::Overflow => OVERFLOW.to_owned(),
    }
}

fn matches_group(dims: &[String], key: &[KeyPart], wanted: &[(String, String)]) -> bool {
    wanted.iter().all(|(dim, value)| {
        if dim.is_empty() {
            key.iter().any(|k| text(k) == *value)
        } else {
            dims.iter()
                .position(|d| d == dim)
                .and_then(|i| key.get(i))
                .is_some_and(|k| text(k) == *value)
        }
    })
}
