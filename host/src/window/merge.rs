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

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::agg::Acc;
use super::groups::{GroupKey, KeyPart};
use super::operator::{Ctx, OpenGroup, WindowOperator};
use super::result::{LateEvent, LateReason};
use super::state::{KeyGroupSet, OperatorState, StateError};
use super::tumbling::{Tumbling, TumblingState};
use super::{WindowKind, WindowSpec};
use crate::event::{Event, Value};

/// The version of the encoding of a partial's `state`: its first byte.
/// Bump it when [`Acc`]'s or [`KeyPart`]'s serde shape changes (with
/// [`super::state::STATE_VERSION`]).
pub const PARTIAL_STATE_VERSION: u8 = 1;

/// A group's state as a partial result carries it: the version byte, then
/// the group key and accumulator in postcard, all in base64 (standard
/// alphabet, padded).
pub fn encode_state(key: &[KeyPart], acc: &Acc) -> String {
    let mut bytes = vec![PARTIAL_STATE_VERSION];
    // Writing plain data to a Vec cannot fail; an empty state would be
    // refused by the merger, never merged wrongly.
    if let Ok(body) = postcard::to_allocvec(&(key, acc)) {
        bytes.extend_from_slice(&body);
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The group key and accumulator of an encoded state.
fn decode_state(text: &str) -> Result<(GroupKey, Acc), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("`state` is not base64: {e}"))?;
    match bytes.split_first() {
        Some((&PARTIAL_STATE_VERSION, body)) => postcard::from_bytes(body)
            .map_err(|e| format!("`state` does not decode as a group and accumulator: {e}")),
        Some((v, _)) => Err(format!(
            "`state` is in encoding {v}; this eddy reads encoding {PARTIAL_STATE_VERSION}"
        )),
        None => Err("`state` is empty".to_owned()),
    }
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

    /// The group and accumulator, checked against the merging window's
    /// definition: the same dimensions and aggregates, and a window
    /// instance of its kind and size.
    pub fn open(&self, spec: &WindowSpec) -> Result<(GroupKey, Acc), String> {
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
        let (key, acc) = decode_state(&self.state)?;
        if key.len() != spec.config.group_by.len() || !spec.aggregates.fits(&acc) {
            return Err(format!(
                "its state does not have the shape of window `{}`'s group and aggregates",
                spec.name
            ));
        }
        Ok((key, acc))
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
}

/// A [`Merge`] operator's saved state.
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

    /// Merge `partial` (already [opened](Partial::open) into `key` and
    /// `acc`) arriving at wall time `wall`, under `watermark`: into its
    /// window instance, or to `late` if that closed more than the allowed
    /// lateness ago.
    pub fn merge(
        &mut self,
        ctx: &mut Ctx<'_>,
        partial: &Partial,
        key: GroupKey,
        acc: &Acc,
        wall: Option<i64>,
        watermark: i64,
    ) {
        self.frontier = self.frontier.max(partial.end);
        if wall.is_some() {
            self.last_arrival = wall;
        }
        ctx.stats().events += acc.count();
        if self.windows.too_late(partial.start, watermark) {
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
            return;
        }
        self.windows
            .fold(ctx, partial.start, key, watermark, |aggs, into| {
                aggs.merge(into, acc)
            });
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
    }

    fn on_tick(&mut self, ctx: &mut Ctx<'_>, now: i64, early: bool) {
        self.windows.on_tick(ctx, now, early);
    }

    fn snapshot(&self) -> OperatorState {
        OperatorState::Merge(MergeState {
            frontier: self.frontier,
            last_arrival: self.last_arrival,
            windows: self.windows.state(),
        })
    }

    fn restore(
        &mut self,
        spec: &WindowSpec,
        state: OperatorState,
        groups: &KeyGroupSet,
    ) -> Result<(), StateError> {
        let state = match state {
            OperatorState::Merge(s) => s,
            other => return Err(other.wrong_kind("merging")),
        };
        self.windows
            .restore(spec, OperatorState::Tumbling(state.windows), groups)?;
        self.frontier = state.frontier;
        self.last_arrival = state.last_arrival;
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
