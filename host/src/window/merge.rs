//! Global results from several instances: partial window results that
//! carry their mergeable state, and the window that merges them.
//!
//! A window with `partials = true` attaches to each of its `final` results
//! the group's accumulator, encoded ([`encode_state`]): `"state":
//! "<base64>"`. Several eddy instances, each consuming some partitions of a
//! topic, publish those results with a `[[sinks.kafka]]`; one eddy reads
//! them with a `[[sources.kafka]]` of `format = "partials"`, and a window
//! with `merge_from = "<name>"` and the same kind, size, `group_by` and
//! aggregates merges the accumulators per (window instance, group) with
//! [`Aggregates::merge`](super::Aggregates::merge). Its results are what
//! one instance over the whole stream would publish: exactly for counts,
//! sums, min and max, and within the sketches' documented error for
//! quantiles and distinct counts (merging sketches loses nothing more).
//!
//! # When a merged window closes
//!
//! The merging window's event time is the partials' window ends: its
//! frontier is the newest `end` merged, its watermark that frontier minus
//! its `out_of_orderness` (how far one instance's results may trail
//! another's), and after `idle_timeout` of wall time with no partial the
//! watermark catches up with the frontier itself (every window that any
//! instance has already closed is closed here too; it never moves past the
//! newest end, so old data replayed is not closed by the clock). A partial
//! whose window closed more than `allowed_lateness` ago is counted and sent
//! to `late`; one within it is merged and the group republished as a
//! `correction`. Its state is engine state, in checkpoints like any
//! window's.
//!
//! Early results carry no state (an instance's final result holds all of
//! it), and a window with `partials = true` may not have an
//! `allowed_lateness`: a correction carries the whole group again and would
//! be merged twice.
//!
//! # A partial delivered twice
//!
//! An instance that crashes replays its write-ahead log from its last
//! checkpoint and publishes the results in it again, so the partials topic
//! can hold one instance's result for a window and group twice. Each state
//! therefore names the instance that published it (its producer id: a hash
//! of the engine's random seed, which checkpoints keep, so it survives
//! restarts), and the merging window merges one partial per producer,
//! window instance and group; another is refused as a duplicate (a dead
//! letter saying so). What it has merged per window instance is engine
//! state, kept until that window instance is purged.

use std::collections::{BTreeMap, HashSet};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::agg::Acc;
use super::groups::{GroupKey, KeyPart};
use super::operator::{Ctx, OpenGroup, WindowOperator};
use super::result::{LateEvent, LateReason};
use super::state::{KeyGroupSet, OperatorState, StateError, keep, key_group};
use super::tumbling::{Tumbling, TumblingState};
use super::{WindowKind, WindowSpec};
use crate::event::{Event, Value};

/// The version of the encoding of a partial's `state`: its first byte.
/// Bump it when [`Acc`]'s or [`KeyPart`]'s serde shape changes (with
/// [`super::state::STATE_VERSION`]). Encoding 1 had no producer id; it is
/// still read (and merged without the duplicate check).
pub const PARTIAL_STATE_VERSION: u8 = 2;

/// The producer id of the instance whose engine has seed `seed`: a hash
/// of it (the seed itself also seeds the plugins' random numbers, and is
/// not published).
pub fn producer_id(seed: u64) -> u64 {
    // splitmix64's finaliser: a bijection, so distinct seeds stay distinct.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A group's state as a partial result carries it: the version byte, the
/// producer id (8 bytes, little-endian), then the group key and
/// accumulator in postcard, all in base64 (standard alphabet, padded).
pub fn encode_state(producer: u64, key: &[KeyPart], acc: &Acc) -> String {
    let mut bytes = vec![PARTIAL_STATE_VERSION];
    bytes.extend_from_slice(&producer.to_le_bytes());
    // Writing plain data to a Vec cannot fail; an empty state would be
    // refused by the merger, never merged wrongly.
    if let Ok(body) = postcard::to_allocvec(&(key, acc)) {
        bytes.extend_from_slice(&body);
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A partial's decoded state.
#[derive(Debug)]
pub struct Opened {
    /// Who published it (`None` in encoding 1, which did not say).
    pub producer: Option<u64>,
    /// The group.
    pub key: GroupKey,
    /// Its accumulator.
    pub acc: Acc,
}

/// The producer, group key and accumulator of an encoded state.
fn decode_state(text: &str) -> Result<Opened, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("`state` is not base64: {e}"))?;
    let (producer, body) = match bytes.split_first() {
        Some((&1, body)) => (None, body),
        Some((&PARTIAL_STATE_VERSION, body)) => match body.split_first_chunk::<8>() {
            Some((id, rest)) => (Some(u64::from_le_bytes(*id)), rest),
            None => return Err("`state` is too short to name its producer".to_owned()),
        },
        Some((v, _)) => {
            return Err(format!(
                "`state` is in encoding {v}; this eddy reads encodings 1 to {PARTIAL_STATE_VERSION}"
            ));
        }
        None => return Err("`state` is empty".to_owned()),
    };
    let (key, acc) = postcard::from_bytes(body)
        .map_err(|e| format!("`state` does not decode as a group and accumulator: {e}"))?;
    Ok(Opened { producer, key, acc })
}

/// One partial window result as read from Kafka (and logged in the
/// write-ahead log with its batch): where it came from, which window
/// instance and group it is of, and its encoded state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    /// The record's topic.
    pub topic: String,
    /// The record's partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// The window that published it (what `merge_from` names).
    pub window: String,
    /// Window start (ms).
    pub start: i64,
    /// Window end (ms).
    pub end: i64,
    /// The names of its group's dimensions (the producer's `group_by`).
    pub group: Vec<String>,
    /// The names of its values (the producer's aggregates' output names).
    pub values: Vec<String>,
    /// The encoded state ([`encode_state`]).
    pub state: String,
}

impl Partial {
    /// Read a published window result. `Ok(None)` for an early result
    /// (its instance's final result carries the whole state); an error
    /// names what is missing or wrong.
    pub fn from_message(
        value: &[u8],
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<Partial>, String> {
        let msg: serde_json::Value =
            serde_json::from_slice(value).map_err(|e| format!("invalid JSON: {e}"))?;
        let field = |name: &str| {
            msg.get(name)
                .ok_or_else(|| format!("a partial result needs `{name}`"))
        };
        let text = |name: &str| {
            field(name)?
                .as_str()
                .ok_or_else(|| format!("`{name}` must be a string"))
        };
        let int = |name: &str| {
            field(name)?
                .as_i64()
                .ok_or_else(|| format!("`{name}` must be an integer (ms)"))
        };
        let names = |name: &str| {
            field(name)?
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
                .ok_or_else(|| format!("`{name}` must be an object"))
        };
        match text("kind")? {
            "early" => return Ok(None),
            "final" => {}
            other => {
                return Err(format!(
                    "a `{other}` result cannot be merged (only final ones carry their state)"
                ));
            }
        }
        let state = match msg.get("state") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return Err("`state` must be a string".to_owned()),
            None => {
                return Err(
                    "the result has no `state`: set `partials = true` on the window that publishes it"
                        .to_owned(),
                );
            }
        };
        Ok(Some(Partial {
            topic: topic.to_owned(),
            partition,
            offset,
            window: text("window")?.to_owned(),
            start: int("start")?,
            end: int("end")?,
            group: names("group")?,
            values: names("values")?,
            state,
        }))
    }

    /// What a dead letter or the `late` channel shows of it.
    pub fn describe(&self) -> String {
        format!(
            "partial result of window `{}` [{}, {}) from {}/{} at offset {}",
            self.window, self.start, self.end, self.topic, self.partition, self.offset
        )
    }

    /// The producer, group and accumulator, checked against the merging
    /// window's definition: the same dimensions and aggregates, and a
    /// window instance of its kind and size.
    pub fn open(&self, spec: &WindowSpec) -> Result<Opened, String> {
        // In order: keys and accumulators are laid out in it.
        if self.group != spec.config.group_by {
            return Err(format!(
                "its group is by {:?} but window `{}` groups by {:?} (the same dimensions, in the same order, are needed)",
                self.group, spec.name, spec.config.group_by
            ));
        }
        if !self
            .values
            .iter()
            .map(String::as_str)
            .eq(spec.aggregates.output_names())
        {
            return Err(format!(
                "its values are {:?} but window `{}` computes {:?} (the same aggregates, in the same order, are needed)",
                self.values,
                spec.name,
                spec.aggregates.output_names().collect::<Vec<_>>()
            ));
        }
        let (size, align) = match spec.kind {
            WindowKind::Tumbling { size_ms } => (size_ms, size_ms),
            WindowKind::Sliding { size_ms, slide_ms } => (size_ms, slide_ms),
            WindowKind::Session { .. } => {
                return Err("session windows do not merge".to_owned());
            }
        };
        if self.end.saturating_sub(self.start) != size || self.start.rem_euclid(align) != 0 {
            return Err(format!(
                "[{}, {}) is not a window of `{}` ({} ms long, starting on a multiple of {} ms)",
                self.start, self.end, spec.name, size, align
            ));
        }
        let opened = decode_state(&self.state)?;
        if opened.key.len() != spec.config.group_by.len() || !spec.aggregates.fits(&opened.acc) {
            return Err(format!(
                "its state does not have the shape of window `{}`'s group and aggregates",
                spec.name
            ));
        }
        Ok(opened)
    }
}

/// The operator of a window with `merge_from`: window instances keyed by
/// their start (a tumbling operator, whatever the producers' kind, since
/// each partial names its own `[start, end)`), fed accumulators instead of
/// events, and the facts its watermark follows.
#[derive(Debug)]
pub struct Merge {
    windows: Tumbling,
    /// The newest window end merged or reported late.
    frontier: i64,
    /// Wall time the last partial arrived, if known.
    last_arrival: Option<i64>,
    /// Per window instance still kept (by start), the (producer, group)
    /// pairs merged into it: a second partial of a pair is a duplicate.
    seen: BTreeMap<i64, HashSet<(u64, GroupKey)>>,
}

/// One (producer, group) pair a [`Merge`] operator has merged into the
/// window instance starting at `start`, as its saved state holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeenPartial {
    key_group: u16,
    start: i64,
    key: GroupKey,
    producer: u64,
}

/// A [`Merge`] operator's saved state, with the partials it has merged
/// (see [`OperatorState::Merging`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergingState {
    merge: MergeState,
    seen: Vec<SeenPartial>,
}

impl MergingState {
    pub(super) fn key_groups(&self) -> impl Iterator<Item = u16> + '_ {
        self.merge
            .key_groups()
            .chain(self.seen.iter().map(|s| s.key_group))
    }
}

/// A [`Merge`] operator's saved state, as snapshots before producer ids
/// held it (still read: it restores with nothing seen).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergeState {
    frontier: i64,
    last_arrival: Option<i64>,
    windows: TumblingState,
}

impl MergeState {
    pub(super) fn key_groups(&self) -> impl Iterator<Item = u16> + '_ {
        self.windows.key_groups()
    }
}

impl Merge {
    /// Merged windows `size` ms long, kept `lateness` ms past their end.
    pub fn new(size: i64, lateness: i64) -> Merge {
        Merge {
            windows: Tumbling::new(size, lateness),
            frontier: i64::MIN,
            last_arrival: None,
            seen: BTreeMap::new(),
        }
    }

    /// The newest window end seen: what the watermark follows.
    pub fn frontier(&self) -> i64 {
        self.frontier
    }

    /// How far the watermark moves with wall time `now`: up to the frontier
    /// once no partial has come for `idle_timeout` ms.
    pub fn idle_target(&self, now: i64, idle_timeout: i64) -> Option<i64> {
        let last = self.last_arrival?;
        (now.saturating_sub(last) >= idle_timeout && self.frontier > i64::MIN)
            .then_some(self.frontier)
    }

    /// Merge `partial` (already [opened](Partial::open)) arriving at wall
    /// time `wall`, under `watermark`: into its window instance, or to
    /// `late` if that closed more than the allowed lateness ago. A second
    /// partial from the same producer for the same window instance and
    /// group is not merged: the error says so.
    pub fn merge(
        &mut self,
        ctx: &mut Ctx<'_>,
        partial: &Partial,
        opened: Opened,
        wall: Option<i64>,
        watermark: i64,
    ) -> Result<(), String> {
        let Opened { producer, key, acc } = opened;
        let acc = &acc;
        self.frontier = self.frontier.max(partial.end);
        if wall.is_some() {
            self.last_arrival = wall;
        }
        let late = self.windows.too_late(partial.start, watermark);
        if let Some(id) = producer.filter(|_| !late) {
            let seen = self.seen.entry(partial.start).or_default();
            if !seen.insert((id, key.clone())) {
                return Err(format!(
                    "a duplicate: producer {id:016x} already delivered window [{}, {}) of this group (an instance publishes its results again when it replays its log after a crash)",
                    partial.start, partial.end
                ));
            }
        }
        ctx.stats().events += acc.count();
        if late {
            ctx.stats().late_events += 1;
            let event = late_event(partial, ctx.spec(), &key, acc);
            ctx.out.push(super::Emitted::Late(LateEvent {
                schema: std::sync::Arc::clone(ctx.schema),
                reason: LateReason::Late {
                    watermark,
                    lateness_ms: watermark.saturating_sub(partial.end),
                },
                event,
            }));
            return Ok(());
        }
        self.windows
            .fold(ctx, partial.start, key, watermark, |aggs, into| {
                aggs.merge(into, acc)
            });
        Ok(())
    }

    /// Forget what was merged into window instances now purged.
    fn forget(&mut self, watermark: i64) {
        let windows = &self.windows;
        self.seen
            .retain(|&start, _| !windows.too_late(start, watermark));
    }
}

/// A late partial as the `late` channel shows it: an event named
/// `$window_partial` at the window's start, whose properties say which
/// window instance and group it was, what it held and its encoded state
/// (so it can still be merged by hand).
fn late_event(p: &Partial, spec: &WindowSpec, key: &[KeyPart], acc: &Acc) -> Event {
    let values = spec.aggregates.finish(acc, p.end.saturating_sub(p.start));
    Event {
        id: format!("{}/{}/{}", p.topic, p.partition, p.offset).into(),
        name: "$window_partial".into(),
        timestamp: p.start,
        distinct_id: spec.grouping.to_json(key).to_string().into(),
        session_id: None,
        properties: vec![
            ("window".into(), Value::Str(p.window.as_str().into())),
            ("start".into(), Value::Int(p.start)),
            ("end".into(), Value::Int(p.end)),
            (
                "values".into(),
                Value::Json(serde_json::Value::Object(values).to_string()),
            ),
            ("state".into(), Value::Str(p.state.as_str().into())),
        ],
    }
}

impl WindowOperator for Merge {
    /// A merging window takes partial results only (the engine does not
    /// hand it events).
    fn on_event(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _ev: &Event,
        _ts: i64,
        _key: Box<[KeyPart]>,
        _arrival: u64,
        _watermark: i64,
    ) {
    }

    fn on_watermark(&mut self, ctx: &mut Ctx<'_>, watermark: i64) {
        self.windows.on_watermark(ctx, watermark);
        self.forget(watermark);
    }

    fn on_tick(&mut self, ctx: &mut Ctx<'_>, now: i64, early: bool) {
        self.windows.on_tick(ctx, now, early);
    }

    fn snapshot(&self) -> OperatorState {
        let mut seen: Vec<SeenPartial> = self
            .seen
            .iter()
            .flat_map(|(&start, pairs)| {
                pairs.iter().map(move |(producer, key)| SeenPartial {
                    key_group: key_group(key),
                    start,
                    key: key.clone(),
                    producer: *producer,
                })
            })
            .collect();
        // Equal states, equal bytes.
        seen.sort_unstable_by(|a, b| {
            (a.key_group, a.start, &a.key, a.producer).cmp(&(
                b.key_group,
                b.start,
                &b.key,
                b.producer,
            ))
        });
        OperatorState::Merging(MergingState {
            merge: MergeState {
                frontier: self.frontier,
                last_arrival: self.last_arrival,
                windows: self.windows.state(),
            },
            seen,
        })
    }

    fn restore(
        &mut self,
        spec: &WindowSpec,
        state: OperatorState,
        groups: &KeyGroupSet,
    ) -> Result<(), StateError> {
        let (state, saved) = match state {
            OperatorState::Merging(s) => (s.merge, s.seen),
            OperatorState::Merge(s) => (s, Vec::new()),
            other => return Err(other.wrong_kind("merging")),
        };
        let mut seen: BTreeMap<i64, HashSet<(u64, GroupKey)>> = BTreeMap::new();
        for s in saved {
            if keep(&s.key, s.key_group, groups)? {
                seen.entry(s.start).or_default().insert((s.producer, s.key));
            }
        }
        self.windows
            .restore(spec, OperatorState::Tumbling(state.windows), groups)?;
        self.frontier = state.frontier;
        self.last_arrival = state.last_arrival;
        self.seen = seen;
        Ok(())
    }

    fn open(&self, spec: &WindowSpec, limit: usize) -> Vec<OpenGroup> {
        self.windows.open(spec, limit)
    }

    fn sizes(&self) -> (usize, usize) {
        self.windows.sizes()
    }

    fn as_merge(&mut self) -> Option<&mut Merge> {
        Some(self)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "merge_tests.rs"]
mod tests;
