//! Tumbling windows: fixed, non-overlapping `[k * size, (k + 1) * size)`.

use std::collections::BTreeMap;

use super::WindowSpec;
use super::groups::{GroupTable, KeyPart};
use super::operator::{Ctx, OpenGroup, ResultKind, WindowOperator};
use crate::event::Event;

/// The operator. Instances are keyed by start; each holds its groups until
/// the watermark passes `end + allowed_lateness`.
#[derive(Debug)]
pub struct Tumbling {
    size: i64,
    lateness: i64,
    instances: BTreeMap<i64, Instance>,
}

#[derive(Debug, Default)]
struct Instance {
    groups: GroupTable,
    fired: bool,
}

impl Tumbling {
    /// Windows of `size` ms, kept `lateness` ms past their end.
    pub fn new(size: i64, lateness: i64) -> Tumbling {
        Tumbling {
            size: size.max(1),
            lateness: lateness.max(0),
            instances: BTreeMap::new(),
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
        let end = start.saturating_add(self.size);
        if end.saturating_add(self.lateness) <= watermark {
            ctx.late(ev, ts, watermark);
            return;
        }
        let spec = ctx.spec;
        let inst = self.instances.entry(start).or_default();
        let key = inst.groups.resolve(
            key,
            spec.max_groups,
            &spec.grouping,
            &mut ctx.stats.overflow_events,
        );
        // A complete window (the watermark passed its end) gets a late
        // firing: a correction of the group's published result, or its
        // first result if the group had none.
        let late_firing = (end <= watermark).then(|| {
            let kind = if inst.groups.get(&key).is_some() {
                ResultKind::Correction
            } else {
                ResultKind::Final
            };
            (kind, key.clone())
        });
        let slot = inst.groups.slot(key, &spec.aggregates);
        spec.aggregates.add(&mut slot.acc, ev, arrival);
        slot.dirty = true;
        if let Some((kind, key)) = late_firing {
            inst.fired = true;
            slot.dirty = false;
            if kind == ResultKind::Correction {
                slot.revision += 1;
            }
            ctx.emit(kind, start, end, &key, &slot.acc, slot.revision, None);
        }
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
}
