//! Tumbling windows: fixed, non-overlapping `[k * size, (k + 1) * size)`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::WindowSpec;
use super::agg::{Acc, Aggregates};
use super::groups::{GroupTable, KeyPart};
use super::operator::{Ctx, OpenGroup, ResultKind, WindowOperator};
use super::state::{
    KeyGroupSet, KeyedSlot, OperatorState, StateError, check_acc, keep, same_setting, sort_keyed,
};
use crate::event::Event;

/// The operator. Instances are keyed by start; each holds its groups until
/// the watermark passes `end + allowed_lateness`.
#[derive(Debug)]
pub struct Tumbling {
    size: i64,
    lateness: i64,
    instances: BTreeMap<i64, Instance>,
    /// Groups the last fired window had: a new window's table starts that
    /// big rather than growing (and rehashing) its way there.
    groups_hint: usize,
}

#[derive(Debug, Default)]
struct Instance {
    groups: GroupTable,
    fired: bool,
}

/// A [`Tumbling`] operator's saved state (see [`super::state`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TumblingState {
    size: i64,
    lateness: i64,
    /// Every instance's start and whether it has fired, by start: not
    /// keyed, so every owner keeps them all.
    instances: Vec<(i64, bool)>,
    /// Every group of every instance, sorted by key group, start and key.
    groups: Vec<KeyedSlot>,
}

impl TumblingState {
    pub(super) fn key_groups(&self) -> impl Iterator<Item = u16> + '_ {
        self.groups.iter().map(|e| e.key_group)
    }
}

impl Tumbling {
    /// Windows of `size` ms, kept `lateness` ms past their end.
    pub fn new(size: i64, lateness: i64) -> Tumbling {
        Tumbling {
            size: size.max(1),
            lateness: lateness.max(0),
            instances: BTreeMap::new(),
            groups_hint: 0,
        }
    }
}

impl Tumbling {
    /// Whether the window starting at `start` closed more than the allowed
    /// lateness before `watermark`: what would go there is late.
    pub(super) fn too_late(&self, start: i64, watermark: i64) -> bool {
        start
            .saturating_add(self.size)
            .saturating_add(self.lateness)
            <= watermark
    }

    /// Fold something into group `key` of the window starting at `start`
    /// (not [`Tumbling::too_late`]) with `fold`: an event, or a partial
    /// result's accumulator (see [`super::merge`]). A window the watermark
    /// has passed publishes the group again at once, as a correction (or
    /// as its first result if the group had none).
    pub(super) fn fold(
        &mut self,
        ctx: &mut Ctx<'_>,
        start: i64,
        key: Box<[KeyPart]>,
        watermark: i64,
        fold: impl FnOnce(&Aggregates, &mut Acc),
    ) {
        let end = start.saturating_add(self.size);
        let spec = ctx.spec;
        let hint = self.groups_hint.min(spec.max_groups.saturating_add(1));
        let inst = self.instances.entry(start).or_insert_with(|| Instance {
            groups: GroupTable::with_capacity(hint),
            fired: false,
        });
        if end > watermark {
            // The window is still open: no firing, one lookup.
            let slot = inst.groups.resolved_slot(
                key,
                spec.max_groups,
                &spec.grouping,
                &spec.aggregates,
                &mut ctx.stats.overflow_events,
            );
            fold(&spec.aggregates, &mut slot.acc);
            slot.dirty = true;
            return;
        }
        let key = inst.groups.resolve(
            key,
            spec.max_groups,
            &spec.grouping,
            &mut ctx.stats.overflow_events,
        );
        // A complete window (the watermark passed its end) gets a late
        // firing: a correction of the group's published result, or its
        // first result if the group had none.
        let kind = if inst.groups.get(&key).is_some() {
            ResultKind::Correction
        } else {
            ResultKind::Final
        };
        let slot = inst.groups.slot(key.clone(), &spec.aggregates);
        fold(&spec.aggregates, &mut slot.acc);
        inst.fired = true;
        slot.dirty = false;
        if kind == ResultKind::Correction {
            slot.revision += 1;
        }
        ctx.emit(kind, start, end, &key, &slot.acc, slot.revision, None);
    }

    /// Everything this operator holds, as its snapshot has it.
    pub(super) fn state(&self) -> TumblingState {
        let mut groups = Vec::new();
        for (&start, inst) in &self.instances {
            groups.extend(
                inst.groups
                    .iter()
                    .map(|(key, slot)| KeyedSlot::new(start, key, slot)),
            );
        }
        sort_keyed(&mut groups, |e| (e.key_group, e.start, &e.key));
        TumblingState {
            size: self.size,
            lateness: self.lateness,
            instances: self.instances.iter().map(|(&s, i)| (s, i.fired)).collect(),
            groups,
        }
    }
}

impl WindowOperator for Tumbling {
    fn on_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        ev: &Event,
        ts: i64,
        key: Box<[KeyPart]>,
        arrival: u64,
        watermark: i64,
    ) {
        let start = ts.div_euclid(self.size).saturating_mul(self.size);
        if self.too_late(start, watermark) {
            ctx.late(ev, ts, watermark);
            return;
        }
        self.fold(ctx, start, key, watermark, |aggs, acc| {
            aggs.add(acc, ev, arrival)
        });
    }

    fn on_watermark(&mut self, ctx: &mut Ctx<'_>, watermark: i64) {
        for (&start, inst) in self.instances.iter_mut() {
            let end = start.saturating_add(self.size);
            if end > watermark {
                break;
            }
            if inst.fired {
                continue;
            }
            inst.fired = true;
            self.groups_hint = inst.groups.len();
            for (key, slot) in inst.groups.sorted() {
                ctx.emit(ResultKind::Final, start, end, key, &slot.acc, 0, None);
            }
            for (_, slot) in inst.groups.iter_mut() {
                slot.dirty = false;
            }
        }
        // Instances are ordered by start (and so by end): forget from the
        // front.
        while let Some(entry) = self.instances.first_entry() {
            let end = entry.key().saturating_add(self.size);
            if end.saturating_add(self.lateness) > watermark {
                break;
            }
            entry.remove();
        }
    }

    fn on_tick(&mut self, ctx: &mut Ctx<'_>, _now: i64, early: bool) {
        if !early {
            return;
        }
        for (&start, inst) in self.instances.iter_mut().filter(|(_, i)| !i.fired) {
            let end = start.saturating_add(self.size);
            let mut dirty: Vec<_> = inst.groups.iter().filter(|(_, s)| s.dirty).collect();
            dirty.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (key, slot) in dirty {
                ctx.emit(ResultKind::Early, start, end, key, &slot.acc, 0, None);
            }
            for (_, slot) in inst.groups.iter_mut() {
                slot.dirty = false;
            }
        }
    }

    fn open(&self, _spec: &WindowSpec, limit: usize) -> Vec<OpenGroup> {
        let mut out = Vec::new();
        for (&start, inst) in self.instances.iter().filter(|(_, i)| !i.fired) {
            for (key, slot) in inst.groups.sorted() {
                if out.len() >= limit {
                    return out;
                }
                out.push(OpenGroup {
                    start,
                    end: start.saturating_add(self.size),
                    key: key.clone(),
                    acc: slot.acc.clone(),
                });
            }
        }
        out
    }

    fn sizes(&self) -> (usize, usize) {
        let groups = self.instances.values().map(|i| i.groups.len()).sum();
        (self.instances.len(), groups)
    }

    fn snapshot(&self) -> OperatorState {
        OperatorState::Tumbling(self.state())
    }

    fn restore(
        &mut self,
        spec: &WindowSpec,
        state: OperatorState,
        groups: &KeyGroupSet,
    ) -> Result<(), StateError> {
        let state = match state {
            OperatorState::Tumbling(s) => s,
            other => return Err(other.wrong_kind("tumbling")),
        };
        same_setting("size_ms", state.size, self.size)?;
        same_setting("allowed_lateness_ms", state.lateness, self.lateness)?;
        let mut instances = BTreeMap::new();
        for (start, fired) in state.instances {
            let inst = Instance {
                groups: GroupTable::default(),
                fired,
            };
            if instances.insert(start, inst).is_some() {
                return Err(StateError::Inconsistent(format!(
                    "two tumbling windows start at {start}"
                )));
            }
        }
        for e in state.groups {
            if !keep(&e.key, e.key_group, groups)? {
                continue;
            }
            check_acc(spec, &e.slot.acc, e.start)?;
            let Some(inst) = instances.get_mut(&e.start) else {
                return Err(StateError::Inconsistent(format!(
                    "a group of a window starting at {} that the state does not list",
                    e.start
                )));
            };
            if inst.groups.insert(e.key, e.slot).is_some() {
                return Err(StateError::Inconsistent(format!(
                    "a group appears twice in the window starting at {}",
                    e.start
                )));
            }
        }
        self.instances = instances;
        Ok(())
    }
}
