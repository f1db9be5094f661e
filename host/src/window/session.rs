//! Session windows: per group, a session grows while events keep coming
//! within `gap` of each other, and ends `gap` after its last event.
//!
//! A session is `[first event, last event + gap)`. An event within `gap` of
//! one or more sessions joins them; an event that bridges two sessions merges
//! them into one (their accumulators merge, nothing is re-scanned). With
//! `max_duration`, a session never spans more than that from its first to
//! its last event: an event that would stretch it further starts a new one.
//!
//! When a late event (within `allowed_lateness`) changes a session already
//! published, the new result is a correction, and its `replaces` lists the
//! `[start, end)` of every earlier result it supersedes (the session's own
//! old extent, and any session merged into it).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::WindowSpec;
use super::agg::Acc;
use super::groups::{GroupKey, KeyPart};
use super::operator::{Ctx, OpenGroup, Replaces, ResultKind, WindowOperator};
use super::state::{
    KeyGroupSet, OperatorState, StateError, check_acc, keep, key_group, same_setting,
};
use crate::event::Event;

/// The operator.
#[derive(Debug)]
pub struct Sessions {
    gap: i64,
    max_duration: Option<i64>,
    lateness: i64,
    keys: HashMap<GroupKey, KeyState, foldhash::fast::RandomState>,
    /// When a key next needs attention (a session to fire or forget). A key
    /// has at most one entry; an entry that turns out early is rescheduled.
    timers: BTreeMap<i64, Vec<GroupKey>>,
}

#[derive(Debug, Default)]
struct KeyState {
    /// Sorted by start.
    sessions: Vec<Session>,
    timer: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    start: i64,
    last: i64,
    acc: Acc,
    /// A result was published for this session at some point.
    published: bool,
    /// The published result is up to date.
    closed: bool,
    revision: u32,
    /// Published extents this session supersedes, for its next result.
    replaces: Replaces,
    dirty: bool,
}

/// A [`Sessions`] operator's saved state (see [`super::state`]). Everything
/// it holds is keyed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionsState {
    gap: i64,
    max_duration: Option<i64>,
    lateness: i64,
    /// Every group, sorted by key group and key.
    keys: Vec<KeyedSessions>,
}

/// One group's sessions, sorted by start, and its timer. The operator's
/// schedule is rebuilt from the timers: its other entries are ones a
/// reschedule superseded, which it skips.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyedSessions {
    key_group: u16,
    key: GroupKey,
    timer: Option<i64>,
    sessions: Vec<Session>,
}

impl SessionsState {
    pub(super) fn key_groups(&self) -> impl Iterator<Item = u16> + '_ {
        self.keys.iter().map(|k| k.key_group)
    }
}

impl Session {
    fn end(&self, gap: i64) -> i64 {
        self.last.saturating_add(gap)
    }
}

impl Sessions {
    /// Sessions closing `gap` ms after their last event, at most
    /// `max_duration` long, kept `lateness` ms past their end.
    pub fn new(gap: i64, max_duration: Option<i64>, lateness: i64) -> Sessions {
        Sessions {
            gap: gap.max(1),
            max_duration,
            lateness: lateness.max(0),
            keys: HashMap::default(),
            timers: BTreeMap::new(),
        }
    }

    fn due(&self, s: &Session) -> i64 {
        let end = s.end(self.gap);
        if s.closed {
            end.saturating_add(self.lateness)
        } else {
            end
        }
    }

    /// Make sure `key` has a timer no later than its earliest due time.
    fn schedule(&mut self, key: &GroupKey) {
        let Some(ks) = self.keys.get(key) else { return };
        let Some(due) = ks.sessions.iter().map(|s| self.due(s)).min() else {
            return;
        };
        if ks.timer.is_some_and(|t| t <= due) {
            return;
        }
        if let Some(ks) = self.keys.get_mut(key) {
            ks.timer = Some(due);
        }
        self.timers.entry(due).or_default().push(key.clone());
    }

    /// The common case, done without moving anything: the event touches
    /// exactly one session and may join it. Returns false (having changed
    /// nothing) otherwise.
    #[allow(clippy::too_many_arguments)]
    fn extend_in_place(
        ctx: &mut Ctx<'_>,
        ks: &mut KeyState,
        key: &[KeyPart],
        gap: i64,
        max_duration: Option<i64>,
        ev: &Event,
        ts: i64,
        arrival: u64,
        watermark: i64,
    ) -> bool {
        let touches = |s: &Session| ts < s.end(gap) && s.start < ts.saturating_add(gap);
        let mut touching = ks.sessions.iter().enumerate().filter(|(_, s)| touches(s));
        let (Some((i, _)), None) = (touching.next(), touching.next()) else {
            return false;
        };
        let s = &mut ks.sessions[i];
        let (start, last) = (s.start.min(ts), s.last.max(ts));
        if max_duration.is_some_and(|max| last.saturating_sub(start) > max) {
            return false;
        }
        let extent = (s.start, s.end(gap));
        s.start = start;
        s.last = last;
        ctx.spec.aggregates.add(&mut s.acc, ev, arrival);
        s.dirty = true;
        if s.closed {
            // Its published result is now out of date; the next one
            // replaces it if the extent changed.
            s.closed = false;
            if extent != (s.start, s.end(gap)) {
                s.replaces.push(extent);
            }
        }
        // The order by start still holds: a start moving before another
        // session's would have touched that session too.
        Self::fire(ctx, gap, key, s, watermark);
        true
    }

    /// Publish `s` if it is complete and its result is not up to date.
    fn fire(ctx: &mut Ctx<'_>, gap: i64, key: &[KeyPart], s: &mut Session, watermark: i64) {
        let end = s.end(gap);
        if s.closed || end > watermark {
            return;
        }
        let kind = if s.published {
            s.revision += 1;
            ResultKind::Correction
        } else {
            ResultKind::Final
        };
        ctx.emit(
            kind,
            s.start,
            end,
            key,
            &s.acc,
            s.revision,
            Some(&s.replaces),
        );
        s.published = true;
        s.closed = true;
        s.dirty = false;
        s.replaces.clear();
    }
}

impl WindowOperator for Sessions {
    fn on_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        ev: &Event,
        ts: i64,
        key: Box<[KeyPart]>,
        arrival: u64,
        watermark: i64,
    ) {
        let spec = ctx.spec;
        let gap = self.gap;
        let key = if self.keys.len() < spec.max_groups || self.keys.contains_key(&key) {
            key
        } else {
            ctx.stats.overflow_events += 1;
            spec.grouping.overflow()
        };
        if let Some(ks) = self.keys.get_mut(&key)
            && Self::extend_in_place(
                ctx,
                ks,
                &key,
                gap,
                self.max_duration,
                ev,
                ts,
                arrival,
                watermark,
            )
        {
            self.schedule(&key);
            return;
        }
        if !self.keys.contains_key(&key) {
            self.keys.insert(key.clone(), KeyState::default());
        }
        let Some(ks) = self.keys.get_mut(&key) else {
            return;
        };
        // Sessions this event touches: [ts, ts + gap) overlaps
        // [start, last + gap).
        let touching: Vec<usize> = ks
            .sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| ts < s.end(gap) && s.start < ts.saturating_add(gap))
            .map(|(i, _)| i)
            .collect();
        let span = touching.iter().fold((ts, ts), |(lo, hi), &i| {
            (lo.min(ks.sessions[i].start), hi.max(ks.sessions[i].last))
        });
        let join: Vec<usize> = match self.max_duration {
            Some(max) if span.1.saturating_sub(span.0) > max => {
                // Joining all would be too long: join the one session this
                // event fits in, if any, else start a new one.
                touching
                    .into_iter()
                    .filter(|&i| {
                        let s = &ks.sessions[i];
                        ts.max(s.last).saturating_sub(ts.min(s.start)) <= max
                    })
                    .take(1)
                    .collect()
            }
            _ => touching,
        };
        if join.is_empty() && ts.saturating_add(gap).saturating_add(self.lateness) <= watermark {
            if ks.sessions.is_empty() {
                self.keys.remove(&key);
            }
            ctx.late(ev, ts, watermark);
            return;
        }
        let aggs = &spec.aggregates;
        let mut merged = Session {
            start: ts,
            last: ts,
            acc: aggs.new_acc(),
            published: false,
            closed: false,
            revision: 0,
            replaces: Replaces::new(),
            dirty: true,
        };
        // Remove from the back so indices stay valid.
        for &i in join.iter().rev() {
            let s = ks.sessions.remove(i);
            merged.start = merged.start.min(s.start);
            merged.last = merged.last.max(s.last);
            aggs.merge(&mut merged.acc, &s.acc);
            merged.published |= s.published;
            merged.revision = merged.revision.max(s.revision);
            merged.replaces.extend(s.replaces.iter().copied());
            // Only an up-to-date result is out there under this extent; an
            // extended session's earlier extents are already in its list.
            if s.closed {
                merged.replaces.push((s.start, s.end(gap)));
            }
        }
        aggs.add(&mut merged.acc, ev, arrival);
        // The session's own earlier extent is not "replaced" if it did not
        // change.
        let extent = (merged.start, merged.end(gap));
        merged.replaces.retain(|r| *r != extent);
        merged.replaces.sort_unstable();
        merged.replaces.dedup();
        Self::fire(ctx, gap, &key, &mut merged, watermark);
        let at = ks.sessions.partition_point(|s| s.start <= merged.start);
        ks.sessions.insert(at, merged);
        self.schedule(&key);
    }

    fn on_watermark(&mut self, ctx: &mut Ctx<'_>, watermark: i64) {
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            let (at, mut keys) = entry.remove_entry();
            keys.sort_unstable();
            for key in keys {
                let gap = self.gap;
                let lateness = self.lateness;
                let Some(ks) = self.keys.get_mut(&key) else {
                    continue;
                };
                if ks.timer != Some(at) {
                    continue; // superseded by an earlier reschedule
                }
                ks.timer = None;
                for s in ks.sessions.iter_mut() {
                    Self::fire(ctx, gap, &key, s, watermark);
                }
                ks.sessions
                    .retain(|s| !(s.closed && s.end(gap).saturating_add(lateness) <= watermark));
                if ks.sessions.is_empty() {
                    self.keys.remove(&key);
                } else {
                    self.schedule(&key);
                }
            }
        }
    }

    fn on_tick(&mut self, ctx: &mut Ctx<'_>, _now: i64, early: bool) {
        if !early {
            return;
        }
        let gap = self.gap;
        let mut keys: Vec<&GroupKey> = self
            .keys
            .iter()
            .filter(|(_, ks)| ks.sessions.iter().any(|s| s.dirty && !s.closed))
            .map(|(k, _)| k)
            .collect();
        keys.sort_unstable();
        for key in keys {
            if let Some(ks) = self.keys.get(key) {
                for s in ks.sessions.iter().filter(|s| s.dirty && !s.closed) {
                    ctx.emit(ResultKind::Early, s.start, s.end(gap), key, &s.acc, 0, None);
                }
            }
        }
        for ks in self.keys.values_mut() {
            for s in ks.sessions.iter_mut() {
                s.dirty = false;
            }
        }
    }

    fn open(&self, _spec: &WindowSpec, limit: usize) -> Vec<OpenGroup> {
        let mut keys: Vec<(&GroupKey, &KeyState)> = self.keys.iter().collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::new();
        for (key, ks) in keys {
            for s in ks.sessions.iter().filter(|s| !s.closed) {
                if out.len() >= limit {
                    return out;
                }
                out.push(OpenGroup {
                    start: s.start,
                    end: s.end(self.gap),
                    key: key.clone(),
                    acc: s.acc.clone(),
                });
            }
        }
        out
    }

    fn sizes(&self) -> (usize, usize) {
        let sessions = self.keys.values().map(|k| k.sessions.len()).sum();
        (sessions, self.keys.len())
    }

    fn snapshot(&self) -> OperatorState {
        let mut keys: Vec<KeyedSessions> = self
            .keys
            .iter()
            .map(|(key, ks)| KeyedSessions {
                key_group: key_group(key),
                key: key.clone(),
                timer: ks.timer,
                sessions: ks.sessions.clone(),
            })
            .collect();
        // One entry per key, holding its sessions in order of start.
        keys.sort_unstable_by(|a, b| (a.key_group, &a.key).cmp(&(b.key_group, &b.key)));
        OperatorState::Sessions(SessionsState {
            gap: self.gap,
            max_duration: self.max_duration,
            lateness: self.lateness,
            keys,
        })
    }

    fn restore(
        &mut self,
        spec: &WindowSpec,
        state: OperatorState,
        groups: &KeyGroupSet,
    ) -> Result<(), StateError> {
        let state = match state {
            OperatorState::Sessions(s) => s,
            other => return Err(other.wrong_kind("session")),
        };
        same_setting("gap_ms", state.gap, self.gap)?;
        same_setting("max_duration_ms", state.max_duration, self.max_duration)?;
        same_setting("allowed_lateness_ms", state.lateness, self.lateness)?;
        let mut keys: HashMap<GroupKey, KeyState, _> = HashMap::default();
        let mut timers: BTreeMap<i64, Vec<GroupKey>> = BTreeMap::new();
        for k in state.keys {
            if !keep(&k.key, k.key_group, groups)? {
                continue;
            }
            for s in &k.sessions {
                check_acc(spec, &s.acc, s.start)?;
            }
            // The operator relies on both: sessions in order (they never
            // overlap), and a timer wherever there are sessions.
            if k.sessions.windows(2).any(|w| w[0].start >= w[1].start) {
                return Err(StateError::Inconsistent(
                    "a group's sessions are not in order of start".into(),
                ));
            }
            if !k.sessions.is_empty() && k.timer.is_none() {
                return Err(StateError::Inconsistent(
                    "a group has sessions but no timer to fire them".into(),
                ));
            }
            if let Some(t) = k.timer {
                timers.entry(t).or_default().push(k.key.clone());
            }
            let ks = KeyState {
                sessions: k.sessions,
                timer: k.timer,
            };
            if keys.insert(k.key, ks).is_some() {
                return Err(StateError::Inconsistent("a group appears twice".into()));
            }
        }
        self.keys = keys;
        self.timers = timers;
        Ok(())
    }
}
