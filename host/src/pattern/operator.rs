//! The pattern operator: every configured pattern, run per key in event
//! time over the engine's event-time service.
//!
//! Per pattern, each admitted event is classified (declared conditions are
//! filters; a pattern plugin classifies the whole batch in one call), keyed,
//! and buffered until the pattern's watermark passes it. Then events are fed
//! to the key's matcher ([`Nfa`]) in timestamp order, ties in arrival order,
//! interleaved with the keys' timers (timeouts at `start + within`, trailing
//! absences), so the outputs do not depend on how the input was batched. An
//! event older than the watermark when it arrives is late: counted and sent
//! to the `late` channel with the pattern's name.
//!
//! Events that satisfy no step condition are dropped at once when the
//! pattern ignores such events anyway (no strict contiguity anywhere); with
//! strict contiguity they are buffered too, since they break sequences.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::nfa::{KeyState, Limits, Nfa, Outcome, OutcomeKind, PatternError};
use super::spec::{Bits, Contiguity, Inner, PatternDef};
use crate::engine::time::{Admit, BatchTime, EventTime, Watermark};
use crate::event::Event;
use crate::filter::{FieldPath, FieldRef, Filter, Record};
use crate::window::groups::KeyPart;
use crate::window::result::LateReason;
use crate::window::state::{KeyGroupSet, key_group};

/// Partial matches one key may hold by default.
pub const DEFAULT_MAX_PARTIALS_PER_KEY: usize = 1_000;
/// Partial matches one pattern may hold by default, over all keys.
pub const DEFAULT_MAX_PARTIALS: usize = 1_000_000;
/// Matches and timeouts kept per pattern for `GET /v1/patterns/{name}/matches`.
pub const DEFAULT_MAX_HISTORY: usize = 1_000;

/// One pattern, validated: where its conditions come from, its key, its
/// definition and its bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternConfig {
    /// The pattern's name (channel `patterns/<name>`).
    pub name: String,
    /// The event path matches are keyed by (`distinct_id`, `session_id`,
    /// `properties.cart_id`, ...).
    pub key: String,
    /// Steps, contiguity, quantifiers, `within`, skip strategy.
    pub def: PatternDef,
    /// Where the step conditions come from.
    pub conditions: Conditions,
    /// How far behind the largest timestamp the watermark stays.
    pub out_of_orderness_ms: i64,
    /// Wall time without events after which the watermark moves on.
    pub idle_timeout_ms: i64,
    /// Partial matches per key; new starts beyond are refused.
    pub max_partials_per_key: usize,
    /// Partial matches of the whole pattern; new starts beyond are refused.
    pub max_partials: usize,
    /// Matches and timeouts kept for REST.
    pub max_history: usize,
}

/// Where a pattern's step conditions come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditions {
    /// Declared in `eddy.toml`: per step, a filter and an optional `until`.
    Declared(Vec<StepConditions>),
    /// A pattern plugin classifies the events.
    Plugin {
        /// The plugin's name.
        plugin: String,
    },
}

/// A declared step's conditions, as filter JSON (`{"names", "where"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepConditions {
    /// Which events the step takes.
    pub filter: Json,
    /// When a loop stops, if it has an `until`.
    pub until: Option<Json>,
}

/// What a completed match hook decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Keep it, with an optional payload.
    Keep(Option<Json>),
    /// Drop it.
    Reject,
}

/// A completed match, as a match hook sees it.
#[derive(Debug)]
pub struct MatchView<'a> {
    /// The key.
    pub key: &'a str,
    /// First event's timestamp.
    pub start: i64,
    /// Last event's timestamp.
    pub end: i64,
    /// Per step (by name), its events.
    pub steps: Vec<(&'a str, Vec<&'a Event>)>,
}

/// What classifies events for one pattern: declared filters or a plugin.
pub trait Classify: Send {
    /// Per event of `events`, the conditions it satisfies.
    fn classify(&mut self, events: &[Event], now_ms: i64) -> Result<Vec<Bits>, String>;
    /// Whether completed matches go through [`Classify::on_match`].
    fn wants_matches(&self) -> bool {
        false
    }
    /// The hook on a completed match.
    fn on_match(&mut self, _m: &MatchView<'_>, _now_ms: i64) -> Result<Verdict, String> {
        Ok(Verdict::Keep(None))
    }
    /// Lifecycle notices (failures, quarantine) for the `plugins` channel.
    fn take_notices(&mut self) -> Vec<crate::plugin::registry::Notice> {
        Vec::new()
    }
    /// A plugin classifier's calls and their durations, for `/metrics`
    /// (declared conditions call no plugin: `None`).
    fn meter(&self) -> Option<crate::plugin::meter::MeterReport> {
        None
    }
}

/// Declared conditions, compiled.
struct Declared {
    steps: Vec<(Filter, Option<Filter>)>,
}

impl Declared {
    fn new(conditions: &[StepConditions]) -> Result<Declared, PatternError> {
        let filter = |v: &Json, key: String| {
            let f = Filter::from_json(v).map_err(|e| PatternError {
                key: key.clone(),
                message: e.to_string(),
            })?;
            f.check_event_fields().map_err(|e| PatternError {
                key,
                message: e.to_string(),
            })?;
            Ok(f)
        };
        let steps = conditions
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Ok((
                    filter(&c.filter, format!("steps[{i}]"))?,
                    match &c.until {
                        Some(u) => Some(filter(u, format!("steps[{i}].until"))?),
                        None => None,
                    },
                ))
            })
            .collect::<Result<Vec<_>, PatternError>>()?;
        Ok(Declared { steps })
    }

    fn bits(&self, e: &Event) -> Bits {
        let mut b = Bits::default();
        for (i, (f, until)) in self.steps.iter().enumerate() {
            if f.matches(e) {
                b.steps |= 1 << i;
            }
            if until.as_ref().is_some_and(|u| u.matches(e)) {
                b.until |= 1 << i;
            }
        }
        b
    }
}

impl Classify for Declared {
    fn classify(&mut self, events: &[Event], _now_ms: i64) -> Result<Vec<Bits>, String> {
        Ok(events.iter().map(|e| self.bits(e)).collect())
    }
}

/// One match or timeout.
#[derive(Debug, Clone)]
pub struct PatternResult {
    /// The pattern.
    pub pattern: Arc<str>,
    /// Match or timeout.
    pub kind: OutcomeKind,
    /// The key.
    pub key: CompactString,
    /// First event's timestamp.
    pub start: i64,
    /// Last event's timestamp; `start + within` for a timeout or an absence.
    pub end: i64,
    /// Per step, in step order, its events (steps without events left out).
    pub steps: Vec<(Arc<str>, Vec<Arc<Event>>)>,
    /// What the match hook attached.
    pub payload: Option<Json>,
}

impl PatternResult {
    /// `"match"` or `"timeout"`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            OutcomeKind::Match => "match",
            OutcomeKind::Timeout => "timeout",
        }
    }

    /// Append the published form's compact JSON to `out` (what
    /// [`PatternResult::to_json`] serialises to), written directly: a
    /// timeout storm at the end of an input renders many of these.
    pub fn write_json(&self, out: &mut String) {
        use crate::event::{push_number, write_json_str};
        use serde_json::ser::{CompactFormatter, Formatter as _};
        out.push_str("{\"pattern\":");
        write_json_str(out, &self.pattern);
        out.push_str(",\"kind\":\"");
        out.push_str(self.kind_name());
        out.push_str("\",\"key\":");
        write_json_str(out, &self.key);
        out.push_str(",\"start\":");
        push_number(out, |w| CompactFormatter.write_i64(w, self.start));
        out.push_str(",\"end\":");
        push_number(out, |w| CompactFormatter.write_i64(w, self.end));
        out.push_str(",\"steps\":{");
        for (i, (name, events)) in self.steps.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_json_str(out, name);
            out.push_str(":[");
            for (j, e) in events.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                e.write_json(out);
            }
            out.push(']');
        }
        out.push('}');
        if let Some(p) = &self.payload {
            use std::fmt::Write as _;
            out.push_str(",\"payload\":");
            let _ = write!(out, "{p}");
        }
        out.push('}');
    }

    /// The published form: `{"pattern","kind","key","start","end","steps":{"<step>":[events]},"payload"?}`.
    pub fn to_json(&self) -> Json {
        let steps: serde_json::Map<String, Json> = self
            .steps
            .iter()
            .map(|(name, events)| {
                (
                    name.to_string(),
                    Json::Array(
                        events
                            .iter()
                            .map(|e| serde_json::to_value(&**e).unwrap_or_default())
                            .collect(),
                    ),
                )
            })
            .collect();
        let mut v = json!({
            "pattern": &*self.pattern,
            "kind": self.kind_name(),
            "key": self.key.as_str(),
            "start": self.start,
            "end": self.end,
            "steps": steps,
        });
        if let (Some(p), Json::Object(o)) = (&self.payload, &mut v) {
            o.insert("payload".into(), p.clone());
        }
        v
    }
}

/// What patterns produce for the channels.
#[derive(Debug, Clone)]
pub enum PatternOutput {
    /// A match or timeout, for `patterns/<name>`.
    Result(Arc<PatternResult>),
    /// An event a pattern could not take, for `late`.
    Late {
        /// The pattern.
        pattern: Arc<str>,
        /// Why.
        reason: LateReason,
        /// The event (boxed: outputs are moved through several lists, and
        /// most are results).
        event: Box<Event>,
    },
}

impl PatternOutput {
    /// Append the published message (what [`PatternOutput::to_json`]
    /// serialises to), written directly.
    pub fn write_json(&self, out: &mut String) {
        match self {
            PatternOutput::Result(r) => r.write_json(out),
            PatternOutput::Late {
                pattern,
                reason,
                event,
            } => {
                out.push_str("{\"pattern\":");
                crate::event::write_json_str(out, pattern);
                reason.write_fields(out);
                out.push_str(",\"event\":");
                event.write_json(out);
                out.push('}');
            }
        }
    }

    /// The published message.
    pub fn to_json(&self) -> Json {
        match self {
            PatternOutput::Result(r) => r.to_json(),
            PatternOutput::Late {
                pattern,
                reason,
                event,
            } => {
                let mut m = serde_json::Map::new();
                m.insert("pattern".into(), json!(&**pattern));
                reason.insert_fields(&mut m);
                m.insert("event".into(), json!(event));
                Json::Object(m)
            }
        }
    }
}

/// The channel of pattern `name`.
pub fn channel_name(name: &str) -> String {
    format!("patterns/{name}")
}

/// A pattern's counters (part of its state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternCounters {
    /// Events fed to the matcher.
    pub events: u64,
    /// Matches published.
    pub matches: u64,
    /// Timeouts published.
    pub timeouts: u64,
    /// New partial matches refused at a cap.
    pub refused: u64,
    /// Events too late (or too far in the future).
    pub late: u64,
    /// Events without the key field.
    pub unkeyed: u64,
    /// Matches the hook rejected.
    pub rejected: u64,
    /// Failed classifications or hook calls (their events were not matched).
    pub errors: u64,
    /// Partial matches dropped by a change of the pattern.
    pub dropped_on_change: u64,
}

/// A pattern's state for REST and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct PatternReport {
    /// The name.
    pub name: String,
    /// `config` or `plugin:<name>`.
    pub source: String,
    /// The key path.
    pub key: String,
    /// The definition.
    pub steps: Vec<super::spec::Step>,
    /// `within`, in milliseconds.
    pub within_ms: Option<i64>,
    /// Partial matches held now.
    pub partial_matches: usize,
    /// Keys with state.
    pub keys: usize,
    /// Events buffered until the watermark passes them.
    pub buffered: usize,
    /// The watermark.
    pub watermark: i64,
    /// Counters.
    #[serde(flatten)]
    pub counters: PatternCounters,
}

/// An event as a matcher holds it: shared, and saved as its JSON.
#[derive(Debug, Clone)]
pub struct Ev(pub Arc<Event>);

impl Serialize for Ev {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_json())
    }
}

impl<'de> Deserialize<'de> for Ev {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ev, D::Error> {
        let text = String::deserialize(d)?;
        Event::from_json(&text, String::new)
            .map(|e| Ev(Arc::new(e)))
            .map_err(serde::de::Error::custom)
    }
}

/// An event waiting for the watermark.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    ts: i64,
    arrival: u64,
    key: CompactString,
    event: Ev,
    bits: Bits,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.ts, self.arrival) == (o.ts, o.arrival)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.ts, self.arrival).cmp(&(o.ts, o.arrival))
    }
}

/// Events waiting for the watermark, in (timestamp, arrival) order: those
/// that arrive in order (nearly all) are appended to a run, the others go to
/// a heap; the smaller front of the two comes out first.
#[derive(Default)]
struct PendingQueue {
    run: VecDeque<Pending>,
    heap: BinaryHeap<Reverse<Pending>>,
}

impl PendingQueue {
    fn push(&mut self, p: Pending) {
        match self.run.back() {
            Some(last) if p < *last => self.heap.push(Reverse(p)),
            _ => self.run.push_back(p),
        }
    }

    /// The timestamp of the next event.
    fn next_ts(&self) -> Option<i64> {
        match (self.run.front(), self.heap.peek()) {
            (Some(a), Some(b)) => Some(a.ts.min(b.0.ts)),
            (Some(a), None) => Some(a.ts),
            (None, Some(b)) => Some(b.0.ts),
            (None, None) => None,
        }
    }

    fn pop(&mut self) -> Option<Pending> {
        let from_heap = match (self.run.front(), self.heap.peek()) {
            (Some(a), Some(b)) => b.0 < *a,
            (None, Some(_)) => true,
            _ => false,
        };
        if from_heap {
            self.heap.pop().map(|r| r.0)
        } else {
            self.run.pop_front()
        }
    }

    fn len(&self) -> usize {
        self.run.len() + self.heap.len()
    }

    /// Everything, in order (for a snapshot or a change of conditions).
    fn sorted(&self) -> Vec<Pending> {
        let mut v: Vec<Pending> = self.run.iter().cloned().collect();
        v.extend(self.heap.iter().map(|r| r.0.clone()));
        v.sort();
        v
    }
}

/// One key's matcher state and its registered timer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyEntry {
    state: KeyState<Ev>,
    deadline: Option<i64>,
}

/// Every key's state, in a slab found by name, and the keys' timers by
/// slab index (16 bytes an entry, compared without touching the key).
///
/// Timers fire earliest first, ties in key order (as a heap of `(time,
/// key)` would have them, so the output does not depend on where a key
/// sits in the slab): the timers due at one time are taken out of the heap
/// together and sorted by key. A heap entry is stale once its key's
/// `deadline` moved (the key's `deadline` is the truth); stale entries are
/// skipped when they come up.
#[derive(Default)]
struct Keys {
    index: HashMap<CompactString, u32, foldhash::fast::RandomState>,
    slab: Vec<Option<(CompactString, KeyEntry)>>,
    free: Vec<u32>,
    timers: BinaryHeap<Reverse<(i64, u32)>>,
    /// Timers due at `due_at`, the next last.
    due: Vec<u32>,
    due_at: i64,
}

impl Keys {
    fn len(&self) -> usize {
        self.index.len()
    }

    fn clear(&mut self) {
        *self = Keys::default();
    }

    /// `key`'s slot, created (with `make`) if absent.
    fn find_or_insert(&mut self, key: &str, make: impl FnOnce() -> KeyState<Ev>) -> u32 {
        if let Some(&i) = self.index.get(key) {
            return i;
        }
        let entry = KeyEntry {
            state: make(),
            deadline: None,
        };
        let key = CompactString::from(key);
        let i = match self.free.pop() {
            Some(i) => {
                if let Some(slot) = self.slab.get_mut(i as usize) {
                    *slot = Some((key.clone(), entry));
                }
                i
            }
            None => {
                self.slab.push(Some((key.clone(), entry)));
                (self.slab.len() - 1) as u32
            }
        };
        self.index.insert(key, i);
        i
    }

    fn get_mut(&mut self, i: u32) -> Option<&mut (CompactString, KeyEntry)> {
        self.slab.get_mut(i as usize)?.as_mut()
    }

    fn key(&self, i: u32) -> Option<&CompactString> {
        self.slab.get(i as usize)?.as_ref().map(|(k, _)| k)
    }

    fn deadline(&self, i: u32) -> Option<i64> {
        self.slab.get(i as usize)?.as_ref()?.1.deadline
    }

    fn remove(&mut self, i: u32) {
        if let Some((key, _)) = self.slab.get_mut(i as usize).and_then(Option::take) {
            self.index.remove(key.as_str());
            self.free.push(i);
        }
    }

    /// Every key and its state, in slab order.
    fn iter(&self) -> impl Iterator<Item = &(CompactString, KeyEntry)> {
        self.slab.iter().flatten()
    }

    fn into_entries(self) -> impl Iterator<Item = (CompactString, KeyEntry)> {
        self.slab.into_iter().flatten()
    }

    /// Register key `i`'s timer at `at` (its `deadline` must say so).
    fn push_timer(&mut self, at: i64, i: u32) {
        if !self.due.is_empty() && at == self.due_at {
            // Joins the timers being fired now, in key order.
            let key = self.key(i);
            let pos = self.due.partition_point(|&d| self.key(d) > key);
            self.due.insert(pos, i);
        } else {
            self.timers.push(Reverse((at, i)));
        }
    }

    /// The earliest live deadline, dropping stale entries.
    fn next_timer(&mut self) -> Option<i64> {
        while let Some(&i) = self.due.last() {
            if self.deadline(i) == Some(self.due_at) {
                return Some(self.due_at);
            }
            self.due.pop();
        }
        while let Some(&Reverse((at, i))) = self.timers.peek() {
            if self.deadline(i) == Some(at) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Take the earliest live timer (see [`Keys::next_timer`]); the key's
    /// `deadline` is cleared.
    fn pop_timer(&mut self) -> Option<(i64, u32)> {
        let at = self.next_timer()?;
        if self.due.is_empty() {
            while let Some(&Reverse((t, i))) = self.timers.peek() {
                if t != at {
                    break;
                }
                self.timers.pop();
                if self.deadline(i) == Some(at) {
                    self.due.push(i);
                }
            }
            let slab = &self.slab;
            let key = |i: u32| {
                slab.get(i as usize)
                    .and_then(Option::as_ref)
                    .map(|(k, _)| k)
            };
            self.due.sort_by(|a, b| key(*b).cmp(&key(*a)));
            self.due_at = at;
        }
        let i = self.due.pop()?;
        if let Some((_, entry)) = self.get_mut(i) {
            entry.deadline = None;
        }
        Some((at, i))
    }
}

/// One running pattern.
struct PatternOp {
    config: PatternConfig,
    name: Arc<str>,
    step_names: Vec<Arc<str>>,
    nfa: Nfa,
    key: FieldPath,
    classify: Box<dyn Classify>,
    needs_all: bool,
    watermark: Watermark,
    pending: PendingQueue,
    keys: Keys,
    partials: usize,
    counters: PatternCounters,
    history: VecDeque<Arc<PatternResult>>,
}

/// Whether a pattern must see events that satisfy none of its conditions:
/// only strict contiguity (between steps or inside a loop) is broken by them.
fn needs_all_events(def: &PatternDef) -> bool {
    def.steps.iter().enumerate().any(|(i, s)| {
        (i > 0 && matches!(s.after, Contiguity::Strict | Contiguity::NotStrict))
            || (s.quantifier.max != Some(1) && s.quantifier.inner == Inner::Strict)
    })
}

/// Why a pattern could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pattern `{pattern}`: {error}")]
pub struct SetupError {
    /// The pattern.
    pub pattern: String,
    /// What is wrong, naming the key.
    pub error: PatternError,
}

impl PatternOp {
    fn new(config: PatternConfig, classify: Box<dyn Classify>) -> Result<PatternOp, SetupError> {
        let err = |error: PatternError| SetupError {
            pattern: config.name.clone(),
            error,
        };
        let nfa = config.def.compile().map_err(err)?;
        let key = FieldPath::parse(&config.key, "key").map_err(|e| {
            err(PatternError {
                key: "key".into(),
                message: e.to_string(),
            })
        })?;
        if !key.is_event_field() {
            return Err(err(PatternError {
                key: "key".into(),
                message: format!(
                    "`{}` is not an event field; use distinct_id, session_id, name, id or properties.<key>",
                    config.key
                ),
            }));
        }
        Ok(PatternOp {
            name: Arc::from(config.name.as_str()),
            step_names: config
                .def
                .steps
                .iter()
                .map(|s| Arc::from(s.name.as_str()))
                .collect(),
            needs_all: needs_all_events(&config.def),
            watermark: Watermark::new(config.out_of_orderness_ms, config.idle_timeout_ms),
            nfa,
            key,
            classify,
            pending: PendingQueue::default(),
            keys: Keys::default(),
            partials: 0,
            counters: PatternCounters::default(),
            history: VecDeque::new(),
            config,
        })
    }

    fn key_of(&self, e: &Event) -> Option<CompactString> {
        Some(match e.field(&self.key)? {
            FieldRef::Str(s) | FieldRef::JsonText(s) => CompactString::from(s),
            FieldRef::Int(i) => CompactString::from(i.to_string()),
            FieldRef::Float(f) => CompactString::from(f.to_string()),
            FieldRef::Bool(b) => CompactString::from(if b { "true" } else { "false" }),
            FieldRef::Null | FieldRef::Node(_) => return None,
        })
    }

    /// Take a batch; each output is tagged with the index of the event
    /// that produced it and `index` (this pattern's).
    fn on_batch(
        &mut self,
        events: &[Event],
        time: &BatchTime,
        arrival: u64,
        now_ms: i64,
        index: usize,
        tagged: &mut Vec<(u64, usize, PatternOutput)>,
    ) {
        let mut out = Vec::new();
        let bits = match self.classify.classify(events, now_ms) {
            Ok(b) if b.len() == events.len() => Some(b),
            Ok(b) => {
                tracing::warn!(
                    pattern = %self.name,
                    "classification answered {} entries for {} events; the batch is not matched",
                    b.len(),
                    events.len()
                );
                None
            }
            Err(e) => {
                tracing::warn!(pattern = %self.name, error = %e, "classification failed; the batch is not matched");
                None
            }
        };
        if bits.is_none() {
            self.counters.errors += 1;
        }
        for (i, ev) in events.iter().enumerate() {
            let (Some(&admit), Some(&frontier)) = (time.admit.get(i), time.frontier.get(i)) else {
                break;
            };
            // Only events the pattern could take part in count for it:
            // those satisfying a condition, or any event when strict
            // contiguity makes every event matter.
            let b = bits.as_ref().and_then(|b| b.get(i)).copied();
            let relevant = b.is_some_and(|b| b.steps != 0 || b.until != 0 || self.needs_all);
            match (admit, b) {
                _ if !relevant => {}
                (Admit::Future { cap }, _) => {
                    self.counters.late += 1;
                    out.push(PatternOutput::Late {
                        pattern: Arc::clone(&self.name),
                        reason: LateReason::Future { max_timestamp: cap },
                        event: Box::new(ev.clone()),
                    });
                }
                (Admit::At(ts), _) if ts < self.watermark.get() => {
                    let wm = self.watermark.get();
                    self.counters.late += 1;
                    out.push(PatternOutput::Late {
                        pattern: Arc::clone(&self.name),
                        reason: LateReason::Late {
                            watermark: wm,
                            lateness_ms: wm.saturating_sub(ts),
                        },
                        event: Box::new(ev.clone()),
                    });
                }
                (Admit::At(ts), Some(b)) => match self.key_of(ev) {
                    None => self.counters.unkeyed += 1,
                    Some(key) => {
                        let mut event = ev.clone();
                        event.timestamp = ts;
                        self.pending.push(Pending {
                            ts,
                            arrival: arrival + i as u64,
                            key,
                            event: Ev(Arc::new(event)),
                            bits: b,
                        });
                    }
                },
                (Admit::At(_), None) => {}
            }
            if self.watermark.follow(frontier) {
                self.fire(now_ms, &mut out);
            }
            tagged.extend(out.drain(..).map(|o| (i as u64, index, o)));
        }
    }

    fn on_tick(&mut self, time: &EventTime, now_ms: i64, out: &mut Vec<PatternOutput>) {
        if self.watermark.tick(time) {
            self.fire(now_ms, out);
        }
    }

    /// The input is over: run to the end, or until `out` holds `limit`
    /// outputs (true: there may be more; call again).
    fn finish_some(&mut self, now_ms: i64, out: &mut Vec<PatternOutput>, limit: usize) -> bool {
        self.watermark.finish();
        self.fire_until(now_ms, out, limit)
    }

    /// Feed everything the watermark has passed, in time order, timers
    /// first at equal times (a partial match is over at `start + within`).
    fn fire(&mut self, now_ms: i64, out: &mut Vec<PatternOutput>) {
        self.fire_until(now_ms, out, usize::MAX);
    }

    /// [`PatternOp::fire`], stopping once `out` holds `limit` outputs (true:
    /// stopped there; what is left is fed by the next call).
    fn fire_until(&mut self, now_ms: i64, out: &mut Vec<PatternOutput>, limit: usize) -> bool {
        let wm = self.watermark.get();
        let mut outcomes: Vec<Outcome<Ev>> = Vec::new();
        loop {
            if out.len() >= limit {
                return true;
            }
            let next_event = self.pending.next_ts().filter(|&t| t <= wm);
            let next_timer = self.keys.next_timer().filter(|&t| t <= wm);
            let timer_first = match (next_event, next_timer) {
                (None, None) => break,
                (Some(e), Some(t)) => t <= e,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            if timer_first {
                if let Some((at, i)) = self.keys.pop_timer() {
                    // The key's time is the timer's own: events before it
                    // that are still buffered come after, in time order.
                    self.with_key(i, |nfa, st| {
                        nfa.advance_time(st, at, &mut outcomes);
                        0
                    });
                    self.emit_for(i, &mut outcomes, now_ms, out);
                }
                continue;
            }
            let Some(p) = self.pending.pop() else {
                break;
            };
            self.counters.events += 1;
            let limits_allow = self.partials < self.config.max_partials;
            let max = self.config.max_partials_per_key;
            let nfa = &self.nfa;
            let i = self.keys.find_or_insert(&p.key, || nfa.key_state());
            let refused = self.with_key(i, |nfa, st| {
                let limits = Limits {
                    max_partials: max,
                    allow_starts: limits_allow,
                };
                nfa.advance(st, p.ts, p.event, p.bits, &limits, &mut outcomes)
            });
            self.counters.refused += refused;
            if !outcomes.is_empty() {
                self.emit(&p.key, &mut outcomes, now_ms, out);
            }
            self.drop_if_idle(i);
        }
        false
    }

    /// Publish `outcomes` of key `i`, then drop the key if it holds nothing.
    fn emit_for(
        &mut self,
        i: u32,
        outcomes: &mut Vec<Outcome<Ev>>,
        now_ms: i64,
        out: &mut Vec<PatternOutput>,
    ) {
        if !outcomes.is_empty()
            && let Some(key) = self.keys.key(i).cloned()
        {
            self.emit(&key, outcomes, now_ms, out);
        }
        outcomes.clear();
        self.drop_if_idle(i);
    }

    /// Drop key `i` when it holds nothing and waits for no timer.
    fn drop_if_idle(&mut self, i: u32) {
        if self
            .keys
            .get_mut(i)
            .is_some_and(|(_, e)| e.state.is_empty() && e.deadline.is_none())
        {
            self.keys.remove(i);
        }
    }

    /// Run `f` on key `i`'s state, then keep the bookkeeping right: the
    /// partial-match total and the key's timer. (The caller drops the key
    /// once it holds nothing: [`PatternOp::drop_if_idle`].)
    fn with_key(&mut self, i: u32, f: impl FnOnce(&Nfa, &mut KeyState<Ev>) -> u64) -> u64 {
        let Some((_, entry)) = self.keys.get_mut(i) else {
            return 0;
        };
        let before = entry.state.partials();
        let r = f(&self.nfa, &mut entry.state);
        let after = entry.state.partials();
        self.partials = (self.partials + after).saturating_sub(before);
        let deadline = self.nfa.next_deadline(&entry.state);
        if deadline != entry.deadline {
            entry.deadline = deadline;
            // The old entry, if any, goes stale.
            if let Some(new) = deadline {
                self.keys.push_timer(new, i);
            }
        }
        r
    }

    fn emit(
        &mut self,
        key: &CompactString,
        outcomes: &mut Vec<Outcome<Ev>>,
        now_ms: i64,
        out: &mut Vec<PatternOutput>,
    ) {
        for o in outcomes.drain(..) {
            let steps: Vec<(Arc<str>, Vec<Arc<Event>>)> = o
                .steps
                .into_iter()
                .map(|(i, evs)| {
                    (
                        self.step_names
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| Arc::from("?")),
                        evs.into_iter().map(|e| e.0).collect(),
                    )
                })
                .collect();
            let mut payload = None;
            if o.kind == OutcomeKind::Match && self.classify.wants_matches() {
                let view = MatchView {
                    key,
                    start: o.start,
                    end: o.end,
                    steps: steps
                        .iter()
                        .map(|(n, evs)| (&**n, evs.iter().map(|e| &**e).collect()))
                        .collect(),
                };
                match self.classify.on_match(&view, now_ms) {
                    Ok(Verdict::Keep(p)) => payload = p,
                    Ok(Verdict::Reject) => {
                        self.counters.rejected += 1;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(pattern = %self.name, error = %e, "the match hook failed; the match is kept without a payload");
                        self.counters.errors += 1;
                    }
                }
            }
            match o.kind {
                OutcomeKind::Match => self.counters.matches += 1,
                OutcomeKind::Timeout => self.counters.timeouts += 1,
            }
            let result = Arc::new(PatternResult {
                pattern: Arc::clone(&self.name),
                kind: o.kind,
                key: key.clone(),
                start: o.start,
                end: o.end,
                steps,
                payload,
            });
            if self.config.max_history > 0 {
                if self.history.len() >= self.config.max_history {
                    self.history.pop_front();
                }
                self.history.push_back(Arc::clone(&result));
            }
            out.push(PatternOutput::Result(result));
        }
    }

    fn report(&self) -> PatternReport {
        PatternReport {
            name: self.config.name.clone(),
            source: match &self.config.conditions {
                Conditions::Declared(_) => "config".to_owned(),
                Conditions::Plugin { plugin } => format!("plugin:{plugin}"),
            },
            key: self.config.key.clone(),
            steps: self.config.def.steps.clone(),
            within_ms: self.config.def.within,
            partial_matches: self.partials,
            keys: self.keys.len(),
            buffered: self.pending.len(),
            watermark: self.watermark.get(),
            counters: self.counters,
        }
    }

    fn snapshot(&self) -> PatternSaved {
        let mut keys: Vec<(CompactString, KeyEntry)> = self
            .keys
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        let pending = self.pending.sorted();
        PatternSaved {
            name: self.config.name.clone(),
            def: self.config.def.clone(),
            watermark: self.watermark,
            pending,
            keys,
            counters: self.counters,
            history: self.history.iter().map(|r| SavedResult::of(r)).collect(),
        }
    }

    /// Take over `saved` (of this pattern, possibly of an older definition),
    /// keeping the keys in `groups`.
    fn restore(&mut self, saved: PatternSaved, groups: &KeyGroupSet) -> Result<(), SetupError> {
        let old = if saved.def == self.config.def {
            None
        } else {
            Some(saved.def.compile().map_err(|error| SetupError {
                pattern: self.config.name.clone(),
                error,
            })?)
        };
        let mine = |k: &str| groups.contains(key_group(&[KeyPart::Str(k.into())]));
        self.watermark = saved
            .watermark
            .with_settings(self.config.out_of_orderness_ms, self.config.idle_timeout_ms);
        self.counters = saved.counters;
        self.pending = PendingQueue::default();
        for p in saved.pending.into_iter().filter(|p| mine(&p.key)) {
            self.pending.push(p);
        }
        self.keys.clear();
        self.partials = 0;
        for (key, entry) in saved.keys {
            if !mine(&key) {
                continue;
            }
            let state = match &old {
                None => entry.state,
                Some(old) => {
                    let (state, dropped) = self.nfa.migrate(old, entry.state);
                    self.counters.dropped_on_change += dropped;
                    state
                }
            };
            self.insert_key(key, state);
        }
        self.history = saved
            .history
            .into_iter()
            .filter_map(|r| r.into_result(&self.name))
            .map(Arc::new)
            .collect();
        Ok(())
    }

    fn insert_key(&mut self, key: CompactString, state: KeyState<Ev>) {
        let deadline = self.nfa.next_deadline(&state);
        self.partials += state.partials();
        if !state.is_empty() || deadline.is_some() {
            let i = self.keys.find_or_insert(&key, KeyState::default);
            if let Some((_, entry)) = self.keys.get_mut(i) {
                *entry = KeyEntry { state, deadline };
            }
            if let Some(d) = deadline {
                self.keys.push_timer(d, i);
            }
        }
    }

    /// Change this pattern's definition and conditions in place: partial
    /// matches whose steps still exist carry over. Returns how many were
    /// dropped.
    fn change(
        &mut self,
        config: PatternConfig,
        classify: Box<dyn Classify>,
    ) -> Result<u64, SetupError> {
        let mut fresh = PatternOp::new(config, classify)?;
        fresh.watermark = self.watermark.with_settings(
            fresh.config.out_of_orderness_ms,
            fresh.config.idle_timeout_ms,
        );
        fresh.counters = self.counters;
        fresh.history = std::mem::take(&mut self.history);
        let mut dropped = 0;
        let keys = std::mem::take(&mut self.keys);
        let mut sorted: Vec<_> = keys.into_entries().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, entry) in sorted {
            let (state, d) = fresh.nfa.migrate(&self.nfa, entry.state);
            dropped += d;
            fresh.insert_key(key, state);
        }
        // Buffered events are classified again under the new conditions.
        let pending = std::mem::take(&mut self.pending).sorted();
        if !pending.is_empty() {
            let events: Vec<Event> = pending.iter().map(|p| (*p.event.0).clone()).collect();
            match fresh.classify.classify(&events, 0) {
                Ok(bits) if bits.len() == pending.len() => {
                    for (mut p, b) in pending.into_iter().zip(bits) {
                        if b.steps != 0 || b.until != 0 || fresh.needs_all {
                            p.bits = b;
                            fresh.pending.push(p);
                        }
                    }
                }
                _ => fresh.counters.errors += 1,
            }
        }
        fresh.counters.dropped_on_change += dropped;
        *self = fresh;
        Ok(dropped)
    }
}

/// A result as saved in a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedResult {
    matched: bool,
    key: CompactString,
    start: i64,
    end: i64,
    steps: Vec<(String, Vec<Ev>)>,
    payload: Option<String>,
}

impl SavedResult {
    fn of(r: &PatternResult) -> SavedResult {
        SavedResult {
            matched: r.kind == OutcomeKind::Match,
            key: r.key.clone(),
            start: r.start,
            end: r.end,
            steps: r
                .steps
                .iter()
                .map(|(n, evs)| {
                    (
                        n.to_string(),
                        evs.iter().map(|e| Ev(Arc::clone(e))).collect(),
                    )
                })
                .collect(),
            payload: r.payload.as_ref().map(Json::to_string),
        }
    }

    fn into_result(self, pattern: &Arc<str>) -> Option<PatternResult> {
        Some(PatternResult {
            pattern: Arc::clone(pattern),
            kind: if self.matched {
                OutcomeKind::Match
            } else {
                OutcomeKind::Timeout
            },
            key: self.key,
            start: self.start,
            end: self.end,
            steps: self
                .steps
                .into_iter()
                .map(|(n, evs)| {
                    (
                        Arc::from(n.as_str()),
                        evs.into_iter().map(|e| e.0).collect(),
                    )
                })
                .collect(),
            payload: match self.payload {
                None => None,
                Some(t) => Some(serde_json::from_str(&t).ok()?),
            },
        })
    }
}

/// One pattern's saved state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatternSaved {
    name: String,
    def: PatternDef,
    watermark: Watermark,
    pending: Vec<Pending>,
    keys: Vec<(CompactString, KeyEntry)>,
    counters: PatternCounters,
    history: Vec<SavedResult>,
}

/// Every pattern's saved state (part of the engine's snapshot).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PatternsState {
    arrival: u64,
    patterns: Vec<PatternSaved>,
}

/// The operator: every pattern, in configuration order (declared patterns,
/// then pattern plugins by name).
#[derive(Default)]
pub struct Patterns {
    ops: Vec<PatternOp>,
    arrival: u64,
}

impl Patterns {
    /// Patterns for `declared`.
    pub fn new(declared: &[PatternConfig]) -> Result<Patterns, SetupError> {
        let mut p = Patterns::default();
        for c in declared {
            p.add(c.clone(), None)?;
        }
        Ok(p)
    }

    /// Compile the classifier of a declared pattern.
    fn declared(config: &PatternConfig) -> Result<Box<dyn Classify>, SetupError> {
        match &config.conditions {
            Conditions::Declared(steps) => Ok(Box::new(Declared::new(steps).map_err(|error| {
                SetupError {
                    pattern: config.name.clone(),
                    error,
                }
            })?)),
            Conditions::Plugin { plugin } => Err(SetupError {
                pattern: config.name.clone(),
                error: PatternError {
                    key: "plugin".into(),
                    message: format!("pattern plugin `{plugin}` is not loaded"),
                },
            }),
        }
    }

    /// Add a pattern (a plugin's with its classifier); one of that name
    /// must not exist.
    pub fn add(
        &mut self,
        config: PatternConfig,
        classify: Option<Box<dyn Classify>>,
    ) -> Result<(), SetupError> {
        if self.ops.iter().any(|o| o.config.name == config.name) {
            return Err(SetupError {
                pattern: config.name.clone(),
                error: PatternError {
                    key: "name".into(),
                    message: "another pattern (declared, or a pattern plugin) has this name".into(),
                },
            });
        }
        let classify = match classify {
            Some(c) => c,
            None => Self::declared(&config)?,
        };
        let op = PatternOp::new(config, classify)?;
        self.ops.push(op);
        Ok(())
    }

    /// Replace pattern `config.name` (or add it): partial matches whose
    /// steps still exist carry over; returns how many were dropped.
    pub fn change(
        &mut self,
        config: PatternConfig,
        classify: Option<Box<dyn Classify>>,
    ) -> Result<u64, SetupError> {
        let classify = match classify {
            Some(c) => c,
            None => Self::declared(&config)?,
        };
        match self.ops.iter_mut().find(|o| o.config.name == config.name) {
            Some(op) => op.change(config, classify),
            None => {
                self.ops.push(PatternOp::new(config, classify)?);
                Ok(0)
            }
        }
    }

    /// Remove pattern `name`; returns the partial matches dropped with it.
    pub fn remove(&mut self, name: &str) -> Option<usize> {
        let i = self.ops.iter().position(|o| o.config.name == name)?;
        Some(self.ops.remove(i).partials)
    }

    /// The configuration of pattern `name`.
    pub fn config(&self, name: &str) -> Option<&PatternConfig> {
        self.ops
            .iter()
            .find(|o| o.config.name == name)
            .map(|o| &o.config)
    }

    /// The patterns' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.ops.iter().map(|o| o.config.name.clone()).collect()
    }

    /// Take a batch (after the stages) with its event-time facts.
    ///
    /// Each output is tagged with the index in the batch of the event that
    /// produced it and `first_index` plus the pattern's position, and they
    /// come in that order: as if the batch had been fed event by event, so
    /// outputs do not depend on batching.
    pub fn on_batch(
        &mut self,
        events: &[Event],
        time: &BatchTime,
        now_ms: i64,
        first_index: usize,
        out: &mut Vec<(u64, usize, PatternOutput)>,
    ) {
        let base = self.arrival;
        self.arrival += events.len() as u64;
        let start = out.len();
        for (i, op) in self.ops.iter_mut().enumerate() {
            op.on_batch(events, time, base, now_ms, first_index + i, out);
        }
        out[start..].sort_by_key(|t| (t.0, t.1));
    }

    /// Wall time moved: idle sources may move the watermarks on.
    pub fn on_tick(&mut self, time: &EventTime, now_ms: i64, out: &mut Vec<PatternOutput>) {
        for op in &mut self.ops {
            op.on_tick(time, now_ms, out);
        }
    }

    /// The input is over: everything buffered is matched and every timer
    /// fires.
    pub fn on_finish(&mut self, now_ms: i64, out: &mut Vec<PatternOutput>) {
        self.finish_some(now_ms, out, usize::MAX);
    }

    /// [`Patterns::on_finish`] a part at a time: appends outputs until `out`
    /// holds about `limit` (true: there is more; call again, after handing
    /// these on). The parts, in order, are what one call would give; at the
    /// end of a long input most partial matches time out at once, and their
    /// results need not all be held at the same time.
    pub fn finish_some(&mut self, now_ms: i64, out: &mut Vec<PatternOutput>, limit: usize) -> bool {
        self.ops
            .iter_mut()
            .any(|op| op.finish_some(now_ms, out, limit))
    }

    /// A report per pattern.
    pub fn reports(&self) -> Vec<PatternReport> {
        self.ops.iter().map(PatternOp::report).collect()
    }

    /// Pattern `name`'s latest matches and timeouts (newest last), `kind`
    /// `match` / `timeout` or either, at most `limit`.
    pub fn recent(
        &self,
        name: &str,
        kind: Option<OutcomeKind>,
        limit: usize,
    ) -> Option<Vec<Arc<PatternResult>>> {
        let op = self.ops.iter().find(|o| o.config.name == name)?;
        let mut v: Vec<_> = op
            .history
            .iter()
            .rev()
            .filter(|r| kind.is_none_or(|k| r.kind == k))
            .take(limit)
            .cloned()
            .collect();
        v.reverse();
        Some(v)
    }

    /// Notices the classifiers have (a plugin's failures, quarantine).
    pub fn take_notices(&mut self) -> Vec<crate::plugin::registry::Notice> {
        self.ops
            .iter_mut()
            .flat_map(|o| o.classify.take_notices())
            .collect()
    }

    /// The meters of the patterns whose conditions are a plugin, by
    /// pattern name.
    pub fn meters(&self) -> Vec<(String, crate::plugin::meter::MeterReport)> {
        self.ops
            .iter()
            .filter_map(|o| Some((o.config.name.clone(), o.classify.meter()?)))
            .collect()
    }

    /// Set the Prometheus gauges and counters of every pattern.
    pub fn record_metrics(&self) {
        for op in &self.ops {
            let name = op.config.name.clone();
            metrics::gauge!("eddy_pattern_partial_matches", "pattern" => name.clone())
                .set(op.partials as f64);
            metrics::gauge!("eddy_pattern_keys", "pattern" => name.clone())
                .set(op.keys.len() as f64);
            metrics::gauge!("eddy_pattern_buffered_events", "pattern" => name.clone())
                .set(op.pending.len() as f64);
            let wm = op.watermark.get();
            if wm > i64::MIN && wm < i64::MAX {
                metrics::gauge!("eddy_pattern_watermark_ms", "pattern" => name.clone())
                    .set(wm as f64);
            }
            let c = &op.counters;
            for (metric, v) in [
                ("eddy_pattern_events_total", c.events),
                ("eddy_pattern_matches_total", c.matches),
                ("eddy_pattern_timeouts_total", c.timeouts),
                ("eddy_pattern_refused_total", c.refused),
                ("eddy_pattern_late_events_total", c.late),
                ("eddy_pattern_unkeyed_events_total", c.unkeyed),
                ("eddy_pattern_rejected_total", c.rejected),
                ("eddy_pattern_errors_total", c.errors),
                ("eddy_pattern_dropped_on_change_total", c.dropped_on_change),
            ] {
                metrics::counter!(metric, "pattern" => name.clone()).absolute(v);
            }
        }
    }

    /// Everything, for a snapshot.
    pub fn snapshot(&self) -> PatternsState {
        PatternsState {
            arrival: self.arrival,
            patterns: self.ops.iter().map(PatternOp::snapshot).collect(),
        }
    }

    /// Continue from `saved`: a pattern that still exists takes its state
    /// (migrated if its definition changed), keeping the keys in `groups`.
    pub fn restore(
        &mut self,
        saved: PatternsState,
        groups: &KeyGroupSet,
    ) -> Result<(), SetupError> {
        self.arrival = saved.arrival;
        let mut by_name: BTreeMap<String, PatternSaved> = saved
            .patterns
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        for op in &mut self.ops {
            if let Some(s) = by_name.remove(&op.config.name) {
                op.restore(s, groups)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn event(id: &str, ts: i64) -> Arc<Event> {
        Arc::new(
            Event::from_json(
                &format!(
                    r#"{{"id":"{id}","name":"n","distinct_id":"u","timestamp":{ts},"properties":{{"s":"a\"b","f":1.5,"j":{{"k":[1,2]}}}}}}"#
                ),
                String::new,
            )
            .unwrap(),
        )
    }

    #[test]
    fn pending_events_come_out_in_time_then_arrival_order() {
        let mut q = PendingQueue::default();
        let mut rng = crate::test_rng::Rng::new(7);
        let mut all = Vec::new();
        for arrival in 0..500u64 {
            let ts = arrival as i64 * 10 - (rng.below(40) as i64);
            let p = Pending {
                ts,
                arrival,
                key: "k".into(),
                event: Ev(event("e", ts)),
                bits: Bits::default(),
            };
            all.push((ts, arrival));
            q.push(p);
        }
        all.sort();
        assert_eq!(q.len(), 500);
        assert!(!q.heap.is_empty(), "some arrived out of order");
        let sorted: Vec<(i64, u64)> = q.sorted().iter().map(|p| (p.ts, p.arrival)).collect();
        assert_eq!(sorted, all);
        let mut out = Vec::new();
        while let Some(ts) = q.next_ts() {
            let p = q.pop().unwrap();
            assert_eq!(p.ts, ts);
            out.push((p.ts, p.arrival));
        }
        assert_eq!(out, all);
    }

    #[test]
    fn a_result_written_directly_is_its_json() {
        let r = PatternResult {
            pattern: Arc::from("p\"q"),
            kind: OutcomeKind::Timeout,
            key: "ü\n".into(),
            start: -5,
            end: 1_700_000_000_000,
            steps: vec![
                (Arc::from("a"), vec![event("a1", 1), event("a2", 2)]),
                (Arc::from("b"), vec![event("b1", 3)]),
            ],
            payload: Some(serde_json::json!({"total": 1.25, "items": [1, "x"]})),
        };
        let mut text = String::new();
        r.write_json(&mut text);
        assert_eq!(serde_json::from_str::<Json>(&text).unwrap(), r.to_json());
        assert_eq!(text, r.to_json().to_string(), "byte for byte");
    }
}
