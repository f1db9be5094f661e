//! The operator trait every window kind implements, and the context it
//! reports results and late events through.

use std::sync::Arc;

use super::agg::Acc;
use super::groups::KeyPart;
use super::result::{LateEvent, LateReason, Schema, WindowResult};
use super::state::{KeyGroupSet, OperatorState, StateError};
use super::{WindowSpec, WindowStats};
use crate::event::Event;

/// The kind of a published window result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ResultKind {
    /// A partial result of a window still open (`early_every`).
    Early,
    /// The result when the watermark passes the window's end.
    Final,
    /// A new result for a window already published as final, after an
    /// event arrived late but within `allowed_lateness`.
    Correction,
}

impl ResultKind {
    /// The name results carry in their `kind` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultKind::Early => "early",
            ResultKind::Final => "final",
            ResultKind::Correction => "correction",
        }
    }
}

/// Something an operator produced.
#[derive(Debug, Clone)]
pub enum Emitted {
    /// A window result, for `windows/<name>` (and, unless early, history).
    Result(WindowResult),
    /// An event the window could not take, for the `late` channel.
    Late(LateEvent),
}

impl Emitted {
    /// The message it becomes when published.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Emitted::Result(r) => r.to_json(),
            Emitted::Late(l) => l.to_json(),
        }
    }
}

/// What an operator reports through.
pub struct Ctx<'a> {
    pub(super) spec: &'a WindowSpec,
    pub(super) schema: &'a Arc<Schema>,
    pub(super) out: &'a mut Vec<Emitted>,
    pub(super) stats: &'a mut WindowStats,
    /// The producer id final results of a window with `partials = true`
    /// carry (see [`super::merge`]).
    pub(super) producer: u64,
}

/// A correction that also supersedes earlier results (a session merge):
/// the `[start, end)` of each.
pub type Replaces = Vec<(i64, i64)>;

impl Ctx<'_> {
    /// The window's definition.
    pub fn spec(&self) -> &WindowSpec {
        self.spec
    }

    /// Counters of this window.
    pub fn stats(&mut self) -> &mut WindowStats {
        self.stats
    }

    /// Publish the result of one group of window `[start, end)`.
    #[allow(clippy::too_many_arguments)]
    pub fn emit(
        &mut self,
        kind: ResultKind,
        start: i64,
        end: i64,
        key: &[KeyPart],
        acc: &Acc,
        revision: u32,
        replaces: Option<&Replaces>,
    ) {
        let values = self
            .spec
            .aggregates
            .finish_values(acc, end.saturating_sub(start));
        match kind {
            ResultKind::Early => self.stats.early_results += 1,
            ResultKind::Final => self.stats.final_results += 1,
            ResultKind::Correction => self.stats.corrections += 1,
        }
        self.out.push(Emitted::Result(WindowResult {
            schema: Arc::clone(self.schema),
            kind,
            start,
            end,
            group: key.into(),
            values,
            revision: if kind == ResultKind::Correction {
                revision
            } else {
                0
            },
            replaces: replaces.cloned().unwrap_or_default(),
            state: (self.spec.config.partials && kind == ResultKind::Final)
                .then(|| super::merge::encode_state(self.producer, key, acc).into_boxed_str()),
        }));
    }

    /// Report `ev` (at event time `ts`) as too late for this window: its
    /// window closed more than `allowed_lateness` before the watermark.
    pub fn late(&mut self, ev: &Event, ts: i64, watermark: i64) {
        self.stats.late_events += 1;
        self.out.push(Emitted::Late(LateEvent {
            schema: Arc::clone(self.schema),
            reason: LateReason::Late {
                watermark,
                lateness_ms: watermark.saturating_sub(ts),
            },
            event: ev.clone(),
        }));
    }
}

/// One kind of window. The driver ([`super::Windows`]) owns the clock,
/// the filter and the grouping; an operator only places events into
/// windows and fires them.
///
/// [`WindowOperator::on_event`], [`WindowOperator::snapshot`] and
/// [`WindowOperator::restore`] are required; the hooks default to doing
/// nothing.
pub trait WindowOperator: Send {
    /// Fold in `ev`, which passed the window's filter, at (possibly clamped)
    /// event time `ts`, in group `key`. `watermark` is the watermark before
    /// this event: an event whose window has closed more than the allowed
    /// lateness ago goes to [`Ctx::late`]; one whose window already fired
    /// but is within the lateness is folded in and published as a
    /// [`ResultKind::Correction`].
    fn on_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        ev: &Event,
        ts: i64,
        key: Box<[KeyPart]>,
        arrival: u64,
        watermark: i64,
    );

    /// The watermark moved to `watermark`: fire the windows it completes
    /// and forget those past their allowed lateness.
    fn on_watermark(&mut self, _ctx: &mut Ctx<'_>, _watermark: i64) {}

    /// Wall time passed; `early` is true when an early firing is due:
    /// publish [`ResultKind::Early`] results of open windows whose groups
    /// changed since the last one.
    fn on_tick(&mut self, _ctx: &mut Ctx<'_>, _now: i64, _early: bool) {}

    /// Everything this operator holds, to continue exactly where it is
    /// after [`WindowOperator::restore`]; see [`super::state`].
    fn snapshot(&self) -> OperatorState;

    /// Replace this operator's state with `state`, taken from an operator
    /// of the same kind and definition (`spec`, whose aggregates the
    /// accumulators must fit), keeping only the keyed entries of `groups`
    /// (the parts that are not keyed are kept whole). On error the operator
    /// is left as it was.
    fn restore(
        &mut self,
        spec: &WindowSpec,
        state: OperatorState,
        groups: &KeyGroupSet,
    ) -> Result<(), StateError>;

    /// The input ended: fire whatever is open. The default does nothing
    /// because the driver first raises the watermark to the end of time,
    /// which fires every window through [`WindowOperator::on_watermark`].
    fn on_close(&mut self, _ctx: &mut Ctx<'_>) {}

    /// The current values of open windows (not yet final), for the REST
    /// view: `(start, end, key, acc)`, at most `limit` of them.
    fn open(&self, _spec: &WindowSpec, _limit: usize) -> Vec<OpenGroup> {
        Vec::new()
    }

    /// Open window instances (or sessions) and groups held, for gauges.
    fn sizes(&self) -> (usize, usize) {
        (0, 0)
    }

    /// The merging operator of a window with `merge_from`, which takes
    /// partial results instead of events; `None` for every other kind.
    fn as_merge(&mut self) -> Option<&mut super::merge::Merge> {
        None
    }
}

/// One group of an open window, as the REST view shows it.
#[derive(Debug, Clone)]
pub struct OpenGroup {
    /// Window start.
    pub start: i64,
    /// Window end.
    pub end: i64,
    /// The group.
    pub key: Box<[KeyPart]>,
    /// Its aggregates so far (merged from panes for sliding windows).
    pub acc: Acc,
}
