//! Closed-window history: the final results (and their corrections) of
//! one window, kept for a retention period and up to a count.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value as Json;

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

#[derive(Debug)]
struct Entry {
    start: i64,
    end: i64,
    payload: Arc<Json>,
}

/// One window's history.
#[derive(Debug)]
pub struct History {
    entries: VecDeque<Entry>,
    retention_ms: i64,
    max_entries: usize,
    newest_end: i64,
}

impl History {
    /// Keep results whose window ended within `retention_ms` of the newest
    /// one, at most `max_entries` of them.
    pub fn new(retention_ms: i64, max_entries: usize) -> History {
        History {
            entries: VecDeque::new(),
            retention_ms,
            max_entries: max_entries.max(1),
            newest_end: i64::MIN,
        }
    }

    /// Record a final result or a correction.
    pub fn push(&mut self, start: i64, end: i64, payload: Arc<Json>) {
        self.newest_end = self.newest_end.max(end);
        self.entries.push_back(Entry {
            start,
            end,
            payload,
        });
        while self.entries.len() > self.max_entries {
            self.entries.pop_front();
        }
        let horizon = self.newest_end.saturating_sub(self.retention_ms);
        while self.entries.front().is_some_and(|e| e.end < horizon) {
            self.entries.pop_front();
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The latest result of every window and group matching `q`, oldest
    /// window first.
    pub fn query(&self, q: &HistoryQuery) -> Vec<Arc<Json>> {
        // A correction supersedes the earlier result of the same window and
        // group; keep the position of the latest.
        let mut latest: HashMap<(i64, i64, String), usize> = HashMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            if q.from.is_some_and(|f| e.start < f) || q.to.is_some_and(|t| e.end > t) {
                continue;
            }
            let group = e.payload.get("group").cloned().unwrap_or(Json::Null);
            if !matches_group(&group, &q.group) {
                continue;
            }
            latest.insert((e.start, e.end, group.to_string()), i);
        }
        let mut picked: Vec<((i64, i64, String), usize)> = latest.into_iter().collect();
        picked.sort_unstable();
        let picked: Vec<usize> = picked.into_iter().map(|(_, i)| i).collect();
        let skip = picked.len().saturating_sub(q.limit);
        picked
            .into_iter()
            .skip(skip)
            .map(|i| Arc::clone(&self.entries[i].payload))
            .collect()
    }
}

fn matches_group(group: &Json, wanted: &[(String, String)]) -> bool {
    let Json::Object(dims) = group else {
        return wanted.is_empty();
    };
    let text = |v: &Json| match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    wanted.iter().all(|(dim, value)| {
        if dim.is_empty() {
            dims.values().any(|v| text(v) == *value)
        } else {
            dims.get(dim).is_some_and(|v| text(v) == *value)
        }
    })
}
