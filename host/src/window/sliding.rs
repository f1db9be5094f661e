//! Sliding (hopping) windows: `[e - size, e)` for every `e` that is a
//! multiple of `slide`, so each event is in `size / slide` windows.
//!
//! Events are aggregated once, into panes of `slide` ms; a window's result
//! merges its `size / slide` panes' accumulators (every aggregate is
//! mergeable), so no event is ever re-scanned. `size` must be a multiple of
//! `slide` (checked by the configuration).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::WindowSpec;
use super::agg::Acc;
use super::groups::{GroupKey, GroupTable, KeyPart};
use super::operator::{Ctx, OpenGroup, ResultKind, WindowOperator};
use super::state::{
    KeyGroupSet, KeyedSlot, OperatorState, StateError, check_acc, keep, key_group, same_setting,
    sort_keyed,
};
use crate::event::Event;

/// The operator: panes keyed by start, and the watermark up to which
/// windows have fired.
#[derive(Debug)]
pub struct Sliding {
    size: i64,
    slide: i64,
    lateness: i64,
    panes: BTreeMap<i64, GroupTable>,
    /// Every window ending at or before this has fired.
    fired_until: i64,
    /// Corrections published per window end and group.
    revisions: BTreeMap<i64, HashMap<GroupKey, u32>>,
    /// The end of the next window with data that has not fired (`i64::MAX`
    /// if none): the watermark moves after every event, and this makes the
    /// common case (nothing due) one comparison.
    next_fire: i64,
}

/// A [`Sliding`] operator's saved state (see [`super::state`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlidingState {
    size: i64,
    slide: i64,
    lateness: i64,
    /// Not keyed: how far windows have fired, and the next one due (kept
    /// as it was rather than recomputed, so the restored operator fires at
    /// exactly the same watermarks; after a subset restore it may be early,
    /// which costs one pass that finds nothing to fire).
    fired_until: i64,
    next_fire: i64,
    /// Every group of every pane, sorted by key group, pane start and key.
    panes: Vec<KeyedSlot>,
    /// Corrections published per window and group, sorted by key group,
    /// window end and key.
    revisions: Vec<KeyedRevision>,
}

/// The corrections published for one group of the window ending at `end`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyedRevision {
    key_group: u16,
    end: i64,
    key: GroupKey,
    revision: u32,
}

impl SlidingState {
    pub(super) fn key_groups(&self) -> impl Iterator<Item = u16> + '_ {
        let panes = self.panes.iter().map(|e| e.key_group);
        panes.chain(self.revisions.iter().map(|r| r.key_group))
    }
}

impl Sliding {
    /// Windows of `size` ms every `slide` ms, kept `lateness` ms past their
    /// end.
    pub fn new(size: i64, slide: i64, lateness: i64) -> Sliding {
        let slide = slide.max(1);
        Sliding {
            size: size.max(slide),
            slide,
            lateness: lateness.max(0),
            panes: BTreeMap::new(),
            fired_until: i64::MIN,
            revisions: BTreeMap::new(),
            next_fire: i64::MAX,
        }
    }

    /// Whether the oldest pane (or correction record) has passed its
    /// allowed lateness.
    fn purge_due(&self, watermark: i64) -> bool {
        let gone = |end: i64| end.saturating_add(self.lateness) <= watermark;
        self.panes
            .first_key_value()
            .is_some_and(|(&p, _)| gone(p.saturating_add(self.size)))
            || self
                .revisions
                .first_key_value()
                .is_some_and(|(&e, _)| gone(e))
    }

    /// Ends of windows holding data, in `(after, upto]`.
    fn ends_with_data(&self, after: i64, upto: i64) -> BTreeSet<i64> {
        let mut ends = BTreeSet::new();
        let lowest_pane = after.saturating_sub(self.size);
        for &pane in self.panes.range(lowest_pane..).map(|(p, _)| p) {
            let mut e = pane.saturating_add(self.slide);
            let last = pane.saturating_add(self.size);
            while e <= last {
                if e > after && e <= upto {
                    ends.insert(e);
                }
                e = e.saturating_add(self.slide);
            }
        }
        ends
    }

    /// The panes of the window ending at `end`.
    fn window_panes(&self, end: i64) -> impl Iterator<Item = &GroupTable> {
        self.panes
            .range(end.saturating_sub(self.size)..end)
            .map(|(_, t)| t)
    }

    /// Merge the window ending at `end`, for the groups `only` admits.
    fn merge(
        &self,
        spec: &WindowSpec,
        end: i64,
        only: impl Fn(&GroupKey, bool) -> bool,
    ) -> Vec<(GroupKey, Acc)> {
        let aggs = &spec.aggregates;
        let mut merged: HashMap<&GroupKey, Acc> = HashMap::new();
        for pane in self.window_panes(end) {
            for (key, slot) in pane.iter() {
                if !only(key, slot.dirty) {
                    continue;
                }
                let acc = merged.entry(key).or_insert_with(|| aggs.new_acc());
                aggs.merge(acc, &slot.acc);
            }
        }
        let mut out: Vec<(GroupKey, Acc)> =
            merged.into_iter().map(|(k, a)| (k.clone(), a)).collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn merge_one(&self, spec: &WindowSpec, end: i64, key: &GroupKey) -> Acc {
        let aggs = &spec.aggregates;
        let mut acc = aggs.new_acc();
        for pane in self.window_panes(end) {
            if let Some(slot) = pane.get(key) {
                aggs.merge(&mut acc, &slot.acc);
            }
        }
        acc
    }
}

impl WindowOperator for Sliding {
    fn on_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        ev: &Event,
        ts: i64,
        key: Box<[KeyPart]>,
        arrival: u64,
        watermark: i64,
    ) {
        let pane = ts.div_euclid(self.slide).saturating_mul(self.slide);
        let last_end = pane.saturating_add(self.size);
        if last_end.saturating_add(self.lateness) <= watermark {
            ctx.late(ev, ts, watermark);
            return;
        }
        let spec = ctx.spec;
        let table = self.panes.entry(pane).or_default();
        let key = table.resolve(
            key,
            spec.max_groups,
            &spec.grouping,
            &mut ctx.stats.overflow_events,
        );
        // Windows of this pane that already fired and are within the
        // lateness get a late firing each; note which had this group.
        let mut late_windows = Vec::new();
        let mut e = pane.saturating_add(self.slide);
        while e <= last_end {
            // Every window ending at or before the watermark has fired:
            // the driver calls on_watermark on every move.
            if e <= watermark && e.saturating_add(self.lateness) > watermark {
                late_windows.push(e);
            }
            e = e.saturating_add(self.slide);
        }
        let had: Vec<bool> = late_windows
            .iter()
            .map(|&e| self.window_panes(e).any(|p| p.get(&key).is_some()))
            .collect();
        let late_key = (!late_windows.is_empty()).then(|| key.clone());
        // The first window of this pane that has not fired yet.
        let first_open = pane.saturating_add(self.slide).max(
            watermark
                .div_euclid(self.slide)
                .saturating_add(1)
                .saturating_mul(self.slide),
        );
        if first_open <= last_end {
            self.next_fire = self.next_fire.min(first_open);
        }
        let table = self.panes.entry(pane).or_default();
        let slot = table.slot(key, &spec.aggregates);
        spec.aggregates.add(&mut slot.acc, ev, arrival);
        slot.dirty = true;
        let Some(key) = late_key else { return };
        for (e, had) in late_windows.into_iter().zip(had) {
            let acc = self.merge_one(spec, e, &key);
            let (kind, revision) = if had {
                let r = self
                    .revisions
                    .entry(e)
                    .or_default()
                    .entry(key.clone())
                    .or_insert(0);
                *r += 1;
                (ResultKind::Correction, *r)
            } else {
                (ResultKind::Final, 0)
            };
            ctx.emit(
                kind,
                e.saturating_sub(self.size),
                e,
                &key,
                &acc,
                revision,
                None,
            );
        }
    }

    fn on_watermark(&mut self, ctx: &mut Ctx<'_>, watermark: i64) {
        if watermark < self.next_fire && !self.purge_due(watermark) {
            self.fired_until = self.fired_until.max(watermark);
            return;
        }
        let spec = ctx.spec;
        for end in self.ends_with_data(self.fired_until, watermark) {
            for (key, acc) in self.merge(spec, end, |_, _| true) {
                ctx.emit(
                    ResultKind::Final,
                    end.saturating_sub(self.size),
                    end,
                    &key,
                    &acc,
                    0,
                    None,
                );
            }
        }
        self.fired_until = self.fired_until.max(watermark);
        let (size, lateness) = (self.size, self.lateness);
        self.panes
            .retain(|&p, _| p.saturating_add(size).saturating_add(lateness) > watermark);
        self.revisions
            .retain(|&e, _| e.saturating_add(lateness) > watermark);
        self.next_fire = self
            .ends_with_data(self.fired_until, i64::MAX)
            .first()
            .copied()
            .unwrap_or(i64::MAX);
    }

    fn on_tick(&mut self, ctx: &mut Ctx<'_>, _now: i64, early: bool) {
        if !early {
            return;
        }
        let spec = ctx.spec;
        for end in self.ends_with_data(self.fired_until, i64::MAX) {
            let dirty: HashSet<&GroupKey> = self
                .window_panes(end)
                .flat_map(|p| p.iter().filter(|(_, s)| s.dirty).map(|(k, _)| k))
                .collect();
            if dirty.is_empty() {
                continue;
            }
            for (key, acc) in self.merge(spec, end, |k, _| dirty.contains(k)) {
                let start = end.saturating_sub(self.size);
                ctx.emit(ResultKind::Early, start, end, &key, &acc, 0, None);
            }
        }
        for pane in self.panes.values_mut() {
            for (_, slot) in pane.iter_mut() {
                slot.dirty = false;
            }
        }
    }

    fn open(&self, spec: &WindowSpec, limit: usize) -> Vec<OpenGroup> {
        let mut out = Vec::new();
        for end in self.ends_with_data(self.fired_until, i64::MAX) {
            for (key, acc) in self.merge(spec, end, |_, _| true) {
                if out.len() >= limit {
                    return out;
                }
                out.push(OpenGroup {
                    start: end.saturating_sub(self.size),
                    end,
                    key,
                    acc,
                });
            }
        }
        out
    }

    fn sizes(&self) -> (usize, usize) {
        let groups = self.panes.values().map(GroupTable::len).sum();
        (self.panes.len(), groups)
    }

    fn snapshot(&self) -> OperatorState {
        let mut panes = Vec::new();
        for (&start, table) in &self.panes {
            panes.extend(
                table
                    .iter()
                    .map(|(key, slot)| KeyedSlot::new(start, key, slot)),
            );
        }
        sort_keyed(&mut panes, |e| (e.key_group, e.start, &e.key));
        let mut revisions = Vec::new();
        for (&end, per_key) in &self.revisions {
            revisions.extend(per_key.iter().map(|(key, &revision)| KeyedRevision {
                key_group: key_group(key),
                end,
                key: key.clone(),
                revision,
            }));
        }
        sort_keyed(&mut revisions, |r| (r.key_group, r.end, &r.key));
        OperatorState::Sliding(SlidingState {
            size: self.size,
            slide: self.slide,
            lateness: self.lateness,
            fired_until: self.fired_until,
            next_fire: self.next_fire,
            panes,
            revisions,
        })
    }

    fn restore(
        &mut self,
        spec: &WindowSpec,
        state: OperatorState,
        groups: &KeyGroupSet,
    ) -> Result<(), StateError> {
        let state = match state {
            OperatorState::Sliding(s) => s,
            other => return Err(other.wrong_kind("sliding")),
        };
        same_setting("size_ms", state.size, self.size)?;
        same_setting("slide_ms", state.slide, self.slide)?;
        same_setting("allowed_lateness_ms", state.lateness, self.lateness)?;
        let mut panes: BTreeMap<i64, GroupTable> = BTreeMap::new();
        for e in state.panes {
            if !keep(&e.key, e.key_group, groups)? {
                continue;
            }
            check_acc(spec, &e.slot.acc, e.start)?;
            if panes
                .entry(e.start)
                .or_default()
                .insert(e.key, e.slot)
                .is_some()
            {
                return Err(StateError::Inconsistent(format!(
                    "a group appears twice in the pane starting at {}",
                    e.start
                )));
            }
        }
        let mut revisions: BTreeMap<i64, HashMap<GroupKey, u32>> = BTreeMap::new();
        for r in state.revisions {
            if !keep(&r.key, r.key_group, groups)? {
                continue;
            }
            if revisions
                .entry(r.end)
                .or_default()
                .insert(r.key, r.revision)
                .is_some()
            {
                return Err(StateError::Inconsistent(format!(
                    "a group has two revisions in the window ending at {}",
                    r.end
                )));
            }
        }
        self.panes = panes;
        self.revisions = revisions;
        self.fired_until = state.fired_until;
        self.next_fire = state.next_fire;
        Ok(())
    }
}
