//! Saving and restoring window operators.
//!
//! [`WindowOperator::snapshot`](super::WindowOperator::snapshot) returns an
//! [`OperatorState`]: everything the operator needs to go on exactly as if
//! it had never stopped — its windows (instances, panes or sessions), each
//! group's accumulator, fired and dirty flags, revisions and schedules.
//! [`WindowOperator::restore`](super::WindowOperator::restore) puts such a
//! state into a fresh operator of the same definition.
//!
//! Keyed state — each group of each window — is organised by [key
//! group](keygroup): every keyed entry carries its key group, and a restore
//! keeps only the entries of the [`KeyGroupSet`] it is given, so that the
//! owners of disjoint sets, each fed only the events of its own groups,
//! together publish what one operator fed everything would. What is not
//! keyed (which tumbling windows have fired, how far sliding windows have
//! fired) is kept whole by every owner.
//!
//! The state is plain serde data meant for postcard, the compact binary
//! format the engine writes snapshots with; it uses nothing that needs a
//! self-describing format, and reads back exactly from JSON too. Keyed
//! entries are sorted by key group, then window (or pane) start, then key
//! — a session window's by key group, then key, each key's sessions in
//! order of start — so equal states give equal bytes. The engine wraps it
//! in its own versioned envelope, with [`STATE_VERSION`].
//!
//! ```
//! use eddy::window::state::{KeyGroupSet, OperatorState};
//! use eddy::window::tumbling::Tumbling;
//! use eddy::window::{WindowConfig, WindowKind, WindowOperator, WindowSpec};
//!
//! # fn main() -> anyhow::Result<()> {
//! let config = WindowConfig::new("w", WindowKind::Tumbling { size_ms: 60_000 }, &["count"]);
//! let spec = WindowSpec::compile(&config)?;
//! let op = Tumbling::new(60_000, 0);
//! let bytes = postcard::to_stdvec(&op.snapshot())?;
//! let mut restored = Tumbling::new(60_000, 0);
//! restored.restore(&spec, postcard::from_bytes::<OperatorState>(&bytes)?, &KeyGroupSet::all())?;
//! assert_eq!(postcard::to_stdvec(&restored.snapshot())?, bytes);
//! # Ok(())
//! # }
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use super::WindowSpec;
use super::agg::Acc;
use super::groups::{GroupKey, KeyPart, Slot};
use super::merge::{MergeState, MergingState};
use super::session::SessionsState;
use super::sliding::SlidingState;
use super::tumbling::TumblingState;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod cut_tests;
pub mod keygroup;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

pub use keygroup::{KEY_GROUPS, KeyGroupError, KeyGroupSet, key_group};

/// The version of the serde shape of [`OperatorState`] and everything it
/// holds (accumulators, keys). Bump it whenever that shape changes, so the
/// engine's snapshot envelope can refuse — or convert — an older one.
pub const STATE_VERSION: u32 = 1;

/// A window operator's saved state, one variant per kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OperatorState {
    /// A [`Tumbling`](super::tumbling::Tumbling) operator's.
    Tumbling(TumblingState),
    /// A [`Sliding`](super::sliding::Sliding) operator's.
    Sliding(SlidingState),
    /// A [`Sessions`](super::session::Sessions) operator's.
    Sessions(SessionsState),
    /// A [`Merge`](super::merge::Merge) operator's (a window with
    /// `merge_from`). Last, so that snapshots written before it existed
    /// still read.
    Merge(MergeState),
    /// A [`Merge`](super::merge::Merge) operator's with the partials it
    /// merged per producer (what it writes now; `Merge` is still read).
    Merging(MergingState),
}

impl OperatorState {
    /// The kind, as [`WindowKind::name`](super::WindowKind::name) names it.
    pub fn kind(&self) -> &'static str {
        match self {
            OperatorState::Tumbling(_) => "tumbling",
            OperatorState::Sliding(_) => "sliding",
            OperatorState::Sessions(_) => "session",
            OperatorState::Merge(_) | OperatorState::Merging(_) => "merging",
        }
    }

    /// The refusal to restore this state into an `operator` window of
    /// another kind.
    pub(super) fn wrong_kind(&self, operator: &'static str) -> StateError {
        StateError::Kind {
            saved: self.kind(),
            operator,
        }
    }

    /// The key groups that have keyed entries in this state.
    pub fn key_groups(&self) -> KeyGroupSet {
        let mut set = KeyGroupSet::empty();
        let mut add = |groups: &mut dyn Iterator<Item = u16>| {
            for g in groups {
                // Only a corrupt state has a group past KEY_GROUPS; restore
                // refuses it, and here it is no group at all.
                let _ = set.insert(g);
            }
        };
        match self {
            OperatorState::Tumbling(s) => add(&mut s.key_groups()),
            OperatorState::Sliding(s) => add(&mut s.key_groups()),
            OperatorState::Sessions(s) => add(&mut s.key_groups()),
            OperatorState::Merge(s) => add(&mut s.key_groups()),
            OperatorState::Merging(s) => add(&mut s.key_groups()),
        }
        set
    }
}

/// Why a state cannot be restored into an operator. On any error the
/// operator is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The state is of another kind of window.
    #[error(
        "a {saved} window's state cannot be restored into a {operator} window; restore it into a window of the kind it was saved from, or start this one empty"
    )]
    Kind {
        /// The kind the state was saved from.
        saved: &'static str,
        /// The kind of the operator restoring it.
        operator: &'static str,
    },
    /// A duration of the window's definition differs from the saved one's.
    #[error(
        "the state was saved with {setting} = {saved}, but this window has {current}; restore it into a window of the same definition, or start this one empty"
    )]
    Setting {
        /// The setting, e.g. `size_ms`.
        setting: &'static str,
        /// Its value in the state.
        saved: String,
        /// Its value in this operator.
        current: String,
    },
    /// An accumulator does not have the shape of this window's aggregates.
    #[error(
        "the accumulator of a group in the window starting at {start} does not fit this window's aggregates: the state was saved with other aggregates; start this window empty"
    )]
    Aggregates {
        /// Start of the window (or pane, or session) it belongs to.
        start: i64,
    },
    /// An entry's key group is not its key's.
    #[error(
        "an entry is filed under key group {saved} but its key hashes to {computed}: the state was written with another key-group hash or is corrupt"
    )]
    KeyGroup {
        /// The key group the entry carries.
        saved: u16,
        /// The key group its key hashes to.
        computed: u16,
    },
    /// The state contradicts itself (a corrupt or hand-made snapshot).
    #[error("the state is inconsistent: {0}")]
    Inconsistent(String),
}

/// Fail unless the saved `setting` equals the operator's.
pub(super) fn same_setting<T: PartialEq + fmt::Debug>(
    setting: &'static str,
    saved: T,
    current: T,
) -> Result<(), StateError> {
    if saved == current {
        return Ok(());
    }
    Err(StateError::Setting {
        setting,
        saved: format!("{saved:?}"),
        current: format!("{current:?}"),
    })
}

/// Whether a keyed entry filed under `saved` is to be restored into an
/// owner of `groups`; an error if `saved` is not `key`'s group.
pub(super) fn keep(key: &[KeyPart], saved: u16, groups: &KeyGroupSet) -> Result<bool, StateError> {
    let computed = key_group(key);
    if computed != saved {
        return Err(StateError::KeyGroup { saved, computed });
    }
    Ok(groups.contains(saved))
}

/// Fail unless `acc` fits `spec`'s aggregates.
pub(super) fn check_acc(spec: &WindowSpec, acc: &Acc, start: i64) -> Result<(), StateError> {
    if spec.aggregates.fits(acc) {
        Ok(())
    } else {
        Err(StateError::Aggregates { start })
    }
}

/// One group of one window instance (tumbling) or pane (sliding).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct KeyedSlot {
    pub(super) key_group: u16,
    /// The instance's or pane's start.
    pub(super) start: i64,
    pub(super) key: GroupKey,
    pub(super) slot: Slot,
}

impl KeyedSlot {
    pub(super) fn new(start: i64, key: &GroupKey, slot: &Slot) -> KeyedSlot {
        KeyedSlot {
            key_group: key_group(key),
            start,
            key: key.clone(),
            slot: slot.clone(),
        }
    }
}

/// Sort keyed entries by key group, then start, then key: the order that
/// makes a snapshot's bytes a function of the state alone.
pub(super) fn sort_keyed<T>(entries: &mut [T], by: impl Fn(&T) -> (u16, i64, &GroupKey)) {
    entries.sort_unstable_by(|a, b| by(a).cmp(&by(b)));
}
