//! Saving and restoring [`Windows`] (every window and the live views) as
//! part of the engine's snapshot.
//!
//! Each window's operator state is its own ([`super::state`]); here is what
//! the driver around it keeps: the watermark, the early-firing schedule, the
//! counters, the history of published results, and the arrival counter that
//! breaks `first`/`last` ties. Keyed entries (history results, live users,
//! top-page counts) carry their key group, so a restore can take a subset
//! (see [`KeyGroupSet`]).
//!
//! Windows are matched by name. A window whose definition changed since the
//! snapshot is refused with a message saying which; a window the snapshot
//! does not have starts empty; a saved window no longer configured is
//! dropped, with a warning.

use std::collections::BTreeMap;
use std::sync::Arc;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::groups::{GroupKey, KeyPart};
use super::operator::ResultKind;
use super::result::WindowResult;
use super::state::{KeyGroupSet, OperatorState, key_group};
use super::{History, WindowStats, Windows};
use crate::engine::state::SnapshotError;
use crate::engine::time::Watermark;
use crate::event::Value;

/// Everything [`Windows`] holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct WindowsState {
    arrival: u64,
    windows: Vec<WindowState>,
    live: LiveState,
}

#[derive(Debug, Serialize, Deserialize)]
struct WindowState {
    name: String,
    /// The definition the state was built under (its debug form): a restore
    /// into a different one is refused rather than silently mixing them.
    definition: String,
    op: OperatorState,
    watermark: Watermark,
    next_early: Option<i64>,
    stats: WindowStats,
    history: Vec<SavedResult>,
    failed: Option<String>,
}

/// A published final result or correction, as history keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct SavedResult {
    key_group: u16,
    kind: ResultKind,
    start: i64,
    end: i64,
    group: GroupKey,
    values: Vec<SavedValue>,
    revision: u32,
    replaces: Vec<(i64, i64)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedValue(#[serde(with = "super::agg::slot::persist::value")] Value);

/// The live views' state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LiveState {
    pub(super) now: i64,
    pub(super) max_ts: Option<i64>,
    pub(super) users_untracked: u64,
    pub(super) pruned_at: i64,
    /// `(key group, distinct_id, last seen, current URL)`, sorted once
    /// [`LiveState::canonicalize`]d.
    pub(super) users: Vec<(u16, SharedStr, i64, Option<SharedStr>)>,
    /// Per one-second bucket: `(key group, URL, views)`, sorted once
    /// canonicalized.
    pub(super) pages: Vec<(i64, Vec<PageCount>)>,
}

impl LiveState {
    /// Fill in the key groups and sort: the form that is encoded, so equal
    /// states encode to equal bytes. Done when encoding, not when the
    /// engine thread takes the state.
    pub(super) fn canonicalize(&mut self) {
        for u in &mut self.users {
            u.0 = string_key_group(&u.1);
        }
        self.users.sort();
        for (_, counts) in &mut self.pages {
            for c in counts.iter_mut() {
                c.0 = string_key_group(&c.1);
            }
            counts.sort();
        }
    }
}

impl WindowsState {
    /// See [`LiveState::canonicalize`].
    pub fn canonicalize(&mut self) {
        self.live.canonicalize();
    }
}

/// A string shared by reference: the live-users table keeps ids and URLs
/// this way so a checkpoint copies a pointer per user, not the text.
/// Encoded as a plain string (so as `CompactString` was).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SharedStr(Arc<str>);

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        SharedStr(Arc::from(s))
    }
}

impl std::ops::Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Serialize for SharedStr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = CompactString::deserialize(d)?;
        Ok(SharedStr::from(s.as_str()))
    }
}

/// `(key group, URL, views)` of one page in one top-pages bucket.
pub(super) type PageCount = (u16, CompactString, u64);

/// The key group of a one-string key (a user, a page, a plugin state key).
pub fn string_key_group(s: &str) -> u16 {
    key_group(&[KeyPart::Str(s.into())])
}

impl Windows {
    /// Everything the windows and live views hold.
    pub fn snapshot(&self) -> WindowsState {
        WindowsState {
            arrival: self.arrival,
            windows: self
                .windows
                .iter()
                .map(|w| WindowState {
                    name: w.core.spec.name.clone(),
                    definition: format!("{:?}", w.core.spec.config),
                    op: w.op.snapshot(),
                    watermark: w.watermark,
                    next_early: w.next_early,
                    stats: w.core.stats.clone(),
                    history: w
                        .history
                        .iter()
                        .map(|r| SavedResult {
                            key_group: key_group(&r.group),
                            kind: r.kind,
                            start: r.start,
                            end: r.end,
                            group: r.group.clone(),
                            values: r.values.iter().cloned().map(SavedValue).collect(),
                            revision: r.revision,
                            replaces: r.replaces.clone(),
                        })
                        .collect(),
                    failed: w.failed.clone(),
                })
                .collect(),
            live: self.live.snapshot(),
        }
    }

    /// Continue from `state`, keeping the keyed entries of `groups` only.
    /// On error nothing is changed that matters: the caller discards these
    /// windows.
    pub fn restore(
        &mut self,
        state: WindowsState,
        groups: &KeyGroupSet,
    ) -> Result<(), SnapshotError> {
        let mut saved: BTreeMap<String, WindowState> = state
            .windows
            .into_iter()
            .map(|w| (w.name.clone(), w))
            .collect();
        for w in &mut self.windows {
            let Some(s) = saved.remove(&w.core.spec.name) else {
                tracing::info!(window = %w.core.spec.name, "not in the snapshot: the window starts empty");
                continue;
            };
            let definition = format!("{:?}", w.core.spec.config);
            if s.definition != definition {
                return Err(SnapshotError::Mismatch(format!(
                    "window `{}` changed since the snapshot (saved: {}; now: {definition}); \
                     restore with the configuration it was taken under",
                    s.name, s.definition
                )));
            }
            w.op.restore(&w.core.spec, s.op, groups)
                .map_err(|e| SnapshotError::Mismatch(format!("window `{}`: {e}", s.name)))?;
            let spec = &w.core.spec.time;
            w.watermark = s
                .watermark
                .with_settings(spec.out_of_orderness_ms, spec.idle_timeout_ms);
            w.next_early = s.next_early;
            w.core.stats = s.stats;
            w.failed = s.failed;
            let mut history = History::new(
                w.core.spec.config.history_ms,
                w.core.spec.config.max_history,
            );
            for r in s.history {
                if !groups.contains(r.key_group) {
                    continue;
                }
                if r.values.len() != w.core.schema.outputs.len() {
                    return Err(SnapshotError::Mismatch(format!(
                        "window `{}`: a saved result has {} values for {} aggregates",
                        s.name,
                        r.values.len(),
                        w.core.schema.outputs.len()
                    )));
                }
                history.push(Arc::new(WindowResult {
                    schema: Arc::clone(&w.core.schema),
                    kind: r.kind,
                    start: r.start,
                    end: r.end,
                    group: r.group,
                    values: r.values.into_iter().map(|v| v.0).collect(),
                    revision: r.revision,
                    replaces: r.replaces,
                    state: None,
                }));
            }
            w.history = history;
        }
        for name in saved.keys() {
            tracing::warn!(window = %name, "the snapshot has a window that is no longer configured; its state is dropped");
        }
        self.arrival = state.arrival;
        self.live.restore(state.live, groups);
        Ok(())
    }
}
