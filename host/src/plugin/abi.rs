//! Translation between host [`Event`]s and the WIT contract's columnar batch
//! layout (see `wit/types.wit`), in both directions.
//!
//! Everything a plugin returns is checked before any event moves: column
//! lengths, outcome kinds, ranges, span bounds and UTF-8 boundaries, and the
//! events it creates or edits against the ingest rules ([`Limits`]), so a
//! plugin cannot put an event into the stream that ingest would have
//! refused. A plugin bug becomes a failed batch with a message, never a host
//! panic, and the failed batch's events come back untouched.

use compact_str::CompactString;

use super::bindings::eddy::plugin::types as wit;
use crate::event::{Event, Value};
use crate::ingest::{self, Limits, ValueRef};

// The codes below are the contract's, documented in `wit/types.wit`. The
// plugin SDK keeps its own copy on purpose: the WIT is the only thing the
// host and plugins share, so each side implements it independently.

/// A span or range that is not there.
const ABSENT: u64 = u64::MAX;

mod kind {
    pub const NULL: u8 = 0;
    pub const BOOL: u8 = 1;
    pub const INT: u8 = 2;
    pub const FLOAT: u8 = 3;
    pub const TEXT: u8 = 4;
    pub const JSON: u8 = 5;
    pub const REMOVE: u8 = 6;
}

mod outcome {
    pub const KEEP: u8 = 0;
    pub const DROP: u8 = 1;
    pub const MODIFY: u8 = 2;
    pub const REPLACE: u8 = 3;
    pub const SPLIT: u8 = 4;
}

fn pack(start: usize, len: usize) -> u64 {
    ((start as u64) << 32) | (len as u64 & 0xffff_ffff)
}

fn bounds(v: u64) -> (usize, usize) {
    let start = (v >> 32) as usize;
    (start, start.saturating_add((v & 0xffff_ffff) as usize))
}

/// A plugin result that breaks the contract.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AbiError {
    /// Columns that must be the same length are not.
    #[error("plugin returned columns of different lengths ({0})")]
    ColumnLengths(&'static str),
    /// Wrong number of outcomes.
    #[error("plugin returned {got} outcomes for {expected} events")]
    OutcomeCount {
        /// Events in the batch.
        expected: usize,
        /// Outcomes returned.
        got: usize,
    },
    /// An outcome or value kind the contract does not define.
    #[error("plugin returned unknown {what} kind {kind}")]
    UnknownKind {
        /// Outcome, value or edit.
        what: &'static str,
        /// The code.
        kind: u8,
    },
    /// A range or index past the end of a column.
    #[error("plugin returned an out-of-range {what} ({start}..{end} of {available})")]
    BadRange {
        /// Which column.
        what: &'static str,
        /// Start index.
        start: usize,
        /// End index.
        end: usize,
        /// Column length.
        available: usize,
    },
    /// A range that reuses items an earlier outcome already used.
    #[error(
        "plugin returned a {what} starting at {start} that overlaps an earlier one; ranges must move forward"
    )]
    Overlap {
        /// Which column.
        what: &'static str,
        /// Start index.
        start: usize,
    },
    /// A span outside the text or not on a character boundary.
    #[error(
        "plugin returned a text span {start}..{end} that is out of bounds or splits a UTF-8 character"
    )]
    BadSpan {
        /// Start byte.
        start: usize,
        /// End byte.
        end: usize,
    },
    /// The output text is not UTF-8.
    #[error("plugin returned text that is not UTF-8")]
    NotUtf8,
    /// An event created by `replace` or `split` breaks the ingest rules.
    #[error("plugin created an invalid event (outcome {outcome}): {reason}")]
    InvalidEvent {
        /// Index of the outcome (= of the input event) that created it.
        outcome: usize,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// A `modify` outcome's edits would break the ingest rules.
    #[error("plugin edits make an event invalid (outcome {outcome}): {reason}")]
    InvalidEdit {
        /// Index of the outcome (= of the edited input event).
        outcome: usize,
        /// What is wrong, naming the field.
        reason: String,
    },
}

fn empty_batch() -> wit::Batch {
    wit::Batch {
        text: Vec::new(),
        ids: Vec::new(),
        names: Vec::new(),
        timestamps: Vec::new(),
        distinct_ids: Vec::new(),
        session_ids: Vec::new(),
        properties: Vec::new(),
        keys: Vec::new(),
        kinds: Vec::new(),
        values: Vec::new(),
    }
}

/// Reusable columns for encoding batches, so a stage allocates nothing per
/// batch once warmed up.
pub struct Encoder {
    batch: wit::Batch,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            batch: empty_batch(),
        }
    }
}

fn push_span(text: &mut Vec<u8>, s: &str) -> u64 {
    let start = text.len();
    text.extend_from_slice(s.as_bytes());
    pack(start, s.len())
}

impl Encoder {
    /// Lay `events` out as one columnar batch.
    pub fn encode(&mut self, events: &[Event]) -> &wit::Batch {
        self.encode_refs(events)
    }

    /// [`Encoder::encode`] for events held elsewhere (the events of a
    /// pattern match, step by step).
    pub fn encode_refs<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) -> &wit::Batch {
        let b = &mut self.batch;
        b.text.clear();
        b.ids.clear();
        b.names.clear();
        b.timestamps.clear();
        b.distinct_ids.clear();
        b.session_ids.clear();
        b.properties.clear();
        b.keys.clear();
        b.kinds.clear();
        b.values.clear();
        for e in events {
            b.properties.push(pack(b.keys.len(), e.properties.len()));
            for (k, v) in &e.properties {
                b.keys.push(push_span(&mut b.text, k));
                let (kind, value) = match v {
                    Value::Null => (kind::NULL, 0),
                    Value::Bool(x) => (kind::BOOL, u64::from(*x)),
                    Value::Int(i) => (kind::INT, *i as u64),
                    Value::Float(f) => (kind::FLOAT, f.to_bits()),
                    Value::Str(s) => (kind::TEXT, push_span(&mut b.text, s)),
                    Value::Json(s) => (kind::JSON, push_span(&mut b.text, s)),
                };
                b.kinds.push(kind);
                b.values.push(value);
            }
            b.ids.push(push_span(&mut b.text, &e.id));
            b.names.push(push_span(&mut b.text, &e.name));
            b.timestamps.push(e.timestamp);
            b.distinct_ids.push(push_span(&mut b.text, &e.distinct_id));
            let session = match e.session_id.as_deref() {
                Some(s) => push_span(&mut b.text, s),
                None => ABSENT,
            };
            b.session_ids.push(session);
        }
        &self.batch
    }
}

/// What applying a result did, for the stage's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Input events that were dropped.
    pub dropped: u64,
    /// Input events that were modified in place.
    pub modified: u64,
    /// Events created by `replace` or `split`.
    pub created: u64,
}

/// A checked view of a result's text.
struct Text<'a>(&'a str);

impl Text<'_> {
    fn check(&self, span: u64) -> Result<(), AbiError> {
        let (start, end) = bounds(span);
        match self.0.get(start..end) {
            Some(_) => Ok(()),
            None => Err(AbiError::BadSpan { start, end }),
        }
    }

    fn check_value(&self, k: u8, value: u64, what: &'static str) -> Result<(), AbiError> {
        match k {
            kind::NULL | kind::BOOL | kind::INT | kind::FLOAT => Ok(()),
            kind::TEXT | kind::JSON => self.check(value),
            other => Err(AbiError::UnknownKind { what, kind: other }),
        }
    }

    /// Only called on checked spans; an unchecked bad span reads as "".
    fn slice(&self, span: u64) -> &str {
        let (start, end) = bounds(span);
        self.0.get(start..end).unwrap_or("")
    }

    /// [`Text::slice`], owned.
    fn str(&self, span: u64) -> CompactString {
        CompactString::from(self.slice(span))
    }

    fn value(&self, k: u8, value: u64) -> Value {
        match k {
            kind::BOOL => Value::Bool(value != 0),
            kind::INT => Value::Int(value as i64),
            kind::FLOAT => {
                let f = f64::from_bits(value);
                if f.is_finite() {
                    Value::Float(f)
                } else {
                    Value::Null
                }
            }
            kind::TEXT => Value::Str(self.str(value)),
            kind::JSON => Value::Json(self.str(value).into()),
            _ => Value::Null,
        }
    }
}

fn range(v: u64, available: usize, what: &'static str) -> Result<std::ops::Range<usize>, AbiError> {
    let (start, end) = bounds(v);
    if end > available {
        return Err(AbiError::BadRange {
            what,
            start,
            end,
            available,
        });
    }
    Ok(start..end)
}

fn check_lengths(r: &wit::Processed, n: usize) -> Result<(), AbiError> {
    if r.outcome_kinds.len() != n || r.outcome_args.len() != n {
        return Err(AbiError::OutcomeCount {
            expected: n,
            got: r.outcome_kinds.len(),
        });
    }
    let e = r.edit_keys.len();
    if r.edit_kinds.len() != e || r.edit_values.len() != e {
        return Err(AbiError::ColumnLengths("edits"));
    }
    let o = &r.output;
    let m = o.ids.len();
    let events = [
        o.names.len(),
        o.timestamps.len(),
        o.distinct_ids.len(),
        o.session_ids.len(),
        o.properties.len(),
    ];
    if events.iter().any(|&l| l != m) {
        return Err(AbiError::ColumnLengths("output events"));
    }
    let p = o.keys.len();
    if o.kinds.len() != p || o.values.len() != p {
        return Err(AbiError::ColumnLengths("output properties"));
    }
    Ok(())
}

fn check_event(text: &Text<'_>, o: &wit::Batch, i: usize) -> Result<(), AbiError> {
    if i >= o.ids.len() {
        return Err(AbiError::BadRange {
            what: "output event index",
            start: i,
            end: i.saturating_add(1),
            available: o.ids.len(),
        });
    }
    for p in range(o.properties[i], o.keys.len(), "property range")? {
        text.check(o.keys[p])?;
        text.check_value(o.kinds[p], o.values[p], "value")?;
    }
    text.check(o.ids[i])?;
    text.check(o.names[i])?;
    text.check(o.distinct_ids[i])?;
    if o.session_ids[i] != ABSENT {
        text.check(o.session_ids[i])?;
    }
    Ok(())
}

/// Check every outcome. Ranges and indices must move forward without
/// overlapping (the order the SDKs write them in): each edit and each output
/// event is used at most once, so the host's work is bounded by the size of
/// the result, which the guest's memory cap bounds in turn.
fn validate(text: &Text<'_>, r: &wit::Processed) -> Result<(), AbiError> {
    let mut next_edit = 0;
    let mut next_output = 0;
    for (&k, &arg) in r.outcome_kinds.iter().zip(&r.outcome_args) {
        match k {
            outcome::KEEP | outcome::DROP => {}
            outcome::MODIFY => {
                let edits = forward(arg, &mut next_edit, r.edit_keys.len(), "edit range")?;
                for j in edits {
                    text.check(r.edit_keys[j])?;
                    if r.edit_kinds[j] != kind::REMOVE {
                        text.check_value(r.edit_kinds[j], r.edit_values[j], "edit")?;
                    }
                }
            }
            outcome::REPLACE => {
                let index = usize::try_from(arg).unwrap_or(usize::MAX);
                let one = forward(
                    pack(index.min(u32::MAX as usize), 1),
                    &mut next_output,
                    r.output.ids.len(),
                    "replace index",
                )?;
                for j in one {
                    check_event(text, &r.output, j)?;
                }
            }
            outcome::SPLIT => {
                for j in forward(arg, &mut next_output, r.output.ids.len(), "split range")? {
                    check_event(text, &r.output, j)?;
                }
            }
            other => {
                return Err(AbiError::UnknownKind {
                    what: "outcome",
                    kind: other,
                });
            }
        }
    }
    Ok(())
}

/// A range that starts at or after `next` and ends within `available`;
/// advances `next` past it.
fn forward(
    v: u64,
    next: &mut usize,
    available: usize,
    what: &'static str,
) -> Result<std::ops::Range<usize>, AbiError> {
    let r = range(v, available, what)?;
    if r.start < *next {
        return Err(AbiError::Overlap {
            what,
            start: r.start,
        });
    }
    *next = r.end;
    Ok(r)
}

fn new_event(text: &Text<'_>, o: &wit::Batch, i: usize, fallback_id: CompactString) -> Event {
    let (start, end) = bounds(o.properties[i]);
    let properties = (start..end)
        .map(|p| (text.str(o.keys[p]), text.value(o.kinds[p], o.values[p])))
        .collect();
    let id = text.str(o.ids[i]);
    Event {
        id: if id.is_empty() { fallback_id } else { id },
        name: text.str(o.names[i]),
        timestamp: o.timestamps[i],
        distinct_id: text.str(o.distinct_ids[i]),
        // An empty session id means "no session", as at ingest.
        session_id: (o.session_ids[i] != ABSENT)
            .then(|| text.str(o.session_ids[i]))
            .filter(|s| !s.is_empty()),
        properties,
    }
}

/// Checks the edits `edits` of `r` to `event` against `limits` before any
/// is applied: every key and value set must be one ingest would accept,
/// and the event must end with at most `max_properties` properties.
/// Duplicate keys cannot arise: [`apply_edits`] sets a present key in place.
fn check_edits(
    event: &Event,
    text: &Text<'_>,
    r: &wit::Processed,
    edits: std::ops::Range<usize>,
    limits: &Limits,
) -> Result<(), String> {
    let mut sets = 0usize;
    for j in edits.clone() {
        let value = match r.edit_kinds[j] {
            kind::REMOVE => continue,
            kind::TEXT => ValueRef::Str(text.slice(r.edit_values[j])),
            kind::JSON => ValueRef::Json(text.slice(r.edit_values[j])),
            // Null, booleans, integers; a non-finite float becomes null
            // (see `Text::value`), as JSON cannot carry one.
            _ => ValueRef::Null,
        };
        sets += 1;
        ingest::check_property(text.slice(r.edit_keys[j]), value, limits)
            .map_err(|e| e.to_string())?;
    }
    // Only when every set could add a key is the count worth replaying.
    if event.properties.len().saturating_add(sets) <= limits.max_properties {
        return Ok(());
    }
    let mut keys: Vec<&str> = event.properties.iter().map(|(k, _)| k.as_str()).collect();
    for j in edits {
        let key = text.slice(r.edit_keys[j]);
        if r.edit_kinds[j] == kind::REMOVE {
            keys.retain(|k| *k != key);
        } else if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if keys.len() > limits.max_properties {
        return Err(format!(
            "properties: more than {} properties",
            limits.max_properties
        ));
    }
    Ok(())
}

/// Builds the events `replace` and `split` outcomes create, in output
/// order, and checks each against `limits`, and checks every `modify`
/// outcome's edits, all before anything moves.
fn created_events(
    events: &[Event],
    text: &Text<'_>,
    result: &wit::Processed,
    limits: &Limits,
) -> Result<Vec<Event>, AbiError> {
    let o = &result.output;
    let mut created = Vec::new();
    let invalid = |outcome: usize, e: &Event| {
        ingest::check_event(e, limits).map_err(|err| AbiError::InvalidEvent {
            outcome,
            reason: err.to_string(),
        })
    };
    for (i, ((event, &k), &arg)) in events
        .iter()
        .zip(&result.outcome_kinds)
        .zip(&result.outcome_args)
        .enumerate()
    {
        match k {
            outcome::MODIFY => {
                let (start, end) = bounds(arg);
                check_edits(event, text, result, start..end, limits)
                    .map_err(|reason| AbiError::InvalidEdit { outcome: i, reason })?;
            }
            outcome::REPLACE => {
                let e = new_event(text, o, arg as usize, event.id.clone());
                invalid(i, &e)?;
                created.push(e);
            }
            outcome::SPLIT => {
                let (start, end) = bounds(arg);
                for (n, j) in (start..end).enumerate() {
                    let id = compact_str::format_compact!("{}-{}", event.id, n);
                    let e = new_event(text, o, j, id);
                    invalid(i, &e)?;
                    created.push(e);
                }
            }
            _ => {}
        }
    }
    Ok(created)
}

/// A 64-bit summary of which property keys an event may have: one bit per
/// key, chosen by its length and last byte. A clear bit means "certainly
/// absent", so an enricher adding new properties skips the search through
/// the existing ones.
fn key_bit(key: &[u8]) -> u64 {
    let last = key.last().copied().unwrap_or(0) as usize;
    1u64 << ((key.len().wrapping_mul(7) ^ last.wrapping_mul(31)) & 63)
}

/// Strings of one result's text by span. The SDKs write a short string
/// (a property name, `Chrome`) once per batch and point every edit at it,
/// so the host builds each of those strings once per batch too.
struct Interned {
    slots: Vec<(u64, CompactString)>,
}

impl Interned {
    const SLOTS: usize = 64;

    fn new() -> Self {
        Interned {
            slots: vec![(ABSENT, CompactString::default()); Self::SLOTS],
        }
    }

    fn get(&mut self, text: &Text<'_>, span: u64) -> CompactString {
        let slot = (span.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % Self::SLOTS;
        if let Some((known, s)) = self.slots.get(slot)
            && *known == span
        {
            return s.clone();
        }
        let s = text.str(span);
        // Only inline strings: cloning them is a copy, not an allocation.
        if !s.is_heap_allocated()
            && let Some(entry) = self.slots.get_mut(slot)
        {
            *entry = (span, s.clone());
        }
        s
    }

    fn value(&mut self, text: &Text<'_>, k: u8, value: u64) -> Value {
        match k {
            kind::TEXT => Value::Str(self.get(text, value)),
            _ => text.value(k, value),
        }
    }
}

/// Apply edits `edits` of `r` to `event`, in order (checked by `validate`).
fn apply_edits(
    event: &mut Event,
    text: &Text<'_>,
    strings: &mut Interned,
    r: &wit::Processed,
    edits: std::ops::Range<usize>,
) {
    let mut present = event
        .properties
        .iter()
        .fold(0u64, |bits, (k, _)| bits | key_bit(k.as_bytes()));
    event.properties.reserve(edits.len());
    for j in edits {
        let key = text.slice(r.edit_keys[j]);
        let bit = key_bit(key.as_bytes());
        match r.edit_kinds[j] {
            kind::REMOVE if present & bit != 0 => event.remove(key),
            kind::REMOVE => {}
            k => {
                let value = strings.value(text, k, r.edit_values[j]);
                let key = strings.get(text, r.edit_keys[j]);
                if present & bit != 0 {
                    event.set(key, value);
                } else {
                    event.properties.push((key, value));
                    present |= bit;
                }
            }
        }
    }
}

/// Apply a processor's result to the batch it was given, in place: kept
/// and modified events stay where they are (a batch whose events are all
/// kept is not moved at all), dropped ones go, and events created by
/// `replace` and `split` take their input event's place. Events the plugin
/// creates, and the edits it makes, must pass the ingest rules of `limits`
/// (see [`ingest::check_event`]). On error nothing has moved: `events` is
/// untouched.
pub fn apply(
    events: &mut Vec<Event>,
    result: &wit::Processed,
    limits: &Limits,
) -> Result<Applied, AbiError> {
    check_lengths(result, events.len())?;
    let text = Text(std::str::from_utf8(&result.output.text).map_err(|_| AbiError::NotUtf8)?);
    validate(&text, result)?;
    // Everything below reads only what `validate` checked.
    let created = created_events(events, &text, result, limits)?;
    let mut applied = Applied::default();
    let mut strings = Interned::new();
    let kinds = &result.outcome_kinds;
    let args = &result.outcome_args;
    if created.is_empty() {
        // Keep, drop, modify (and splits into nothing): no event moves
        // but to close the gap a dropped one leaves.
        let mut i = 0;
        events.retain_mut(|event| {
            let (k, arg) = (kinds[i], args[i]);
            i += 1;
            match k {
                outcome::DROP | outcome::SPLIT => {
                    applied.dropped += 1;
                    false
                }
                outcome::MODIFY => {
                    let (start, end) = bounds(arg);
                    apply_edits(event, &text, &mut strings, result, start..end);
                    applied.modified += 1;
                    true
                }
                _ => true,
            }
        });
        return Ok(applied);
    }
    let mut created = created.into_iter();
    let input = std::mem::take(events);
    events.reserve(input.len() + created.len());
    for ((mut event, &k), &arg) in input.into_iter().zip(kinds).zip(args) {
        match k {
            outcome::DROP => applied.dropped += 1,
            outcome::MODIFY => {
                let (start, end) = bounds(arg);
                apply_edits(&mut event, &text, &mut strings, result, start..end);
                applied.modified += 1;
                events.push(event);
            }
            outcome::REPLACE => {
                events.extend(created.next());
                applied.created += 1;
            }
            outcome::SPLIT => {
                let (start, end) = bounds(arg);
                events.extend(created.by_ref().take(end - start));
                if start == end {
                    applied.dropped += 1;
                }
                applied.created += (end - start) as u64;
            }
            _ => events.push(event),
        }
    }
    Ok(applied)
}

/// The columnar form of the batch a pipeline is running, kept in step with
/// its events from stage to stage, so that a chain of stages encodes the
/// batch once instead of once per stage.
///
/// After a stage's result is applied to the events, the columns follow it
/// when the next stage asks for them, if it only kept events and added
/// properties to them (an enricher): a modified event gets a new property
/// range appended to the property columns (its properties with the
/// additions), pointing into the result's text appended to the batch's.
/// What that leaves behind unreferenced is a copy of what the events still
/// hold. A result that drops events, removes or overwrites a property the
/// event had, or creates events (`replace`, `split`) makes the next stage
/// encode afresh, so no stage is handed bytes an earlier one took out (a
/// consent filter's drops, a PII scrubber's removals); so does anything
/// else that changes the events ([`Columns::invalidate`]).
#[derive(Default)]
pub struct Columns {
    encoder: Encoder,
    /// The columns describe the events as they were before `pending`.
    fresh: bool,
    /// A result applied to the events and not yet to the columns.
    pending: Option<wit::Processed>,
}

impl Columns {
    /// The events changed otherwise than by a result handed to
    /// [`Columns::applied`] (a new batch, a failure): encode afresh.
    pub fn invalidate(&mut self) {
        self.fresh = false;
        self.pending = None;
    }

    /// `result` has been applied to the events (see [`apply`]).
    pub fn applied(&mut self, result: wit::Processed) {
        self.pending = Some(result);
    }

    /// The columnar form of `events`, which must be the events these
    /// columns were encoded from with every result since handed to
    /// [`Columns::applied`] applied to them.
    pub fn batch(&mut self, events: &[Event]) -> &wit::Batch {
        if let Some(result) = self.pending.take() {
            self.fresh = self.fresh && self.follow(&result);
        }
        if !self.fresh || self.encoder.batch.ids.len() != events.len() {
            self.encoder.encode(events);
            self.fresh = true;
        }
        &self.encoder.batch
    }

    /// Bring the columns up to date with `r`, which was applied to the
    /// events they describe; false if that is not done here (encode
    /// afresh).
    fn follow(&mut self, r: &wit::Processed) -> bool {
        let kinds = &r.outcome_kinds;
        let b = &mut self.encoder.batch;
        // Only keeps and additions: a dropped event, or a property removed
        // or overwritten, would leave its bytes in the columns for the next
        // stage to find (a consent filter's drops, a PII scrubber's
        // removals), so those results make it encode afresh.
        if kinds.len() != b.ids.len()
            || kinds
                .iter()
                .any(|&k| k == outcome::DROP || k == outcome::REPLACE || k == outcome::SPLIT)
        {
            return false;
        }
        if kinds.iter().all(|&k| k == outcome::KEEP) {
            return true;
        }
        // Spans are 32-bit offsets into the text.
        let shift = b.text.len();
        if shift.saturating_add(r.output.text.len()) > u32::MAX as usize {
            return false;
        }
        b.text.extend_from_slice(&r.output.text);
        let shift = (shift as u64) << 32;
        // Every event stays where it is; an enriched one gets a new range.
        for (i, (&k, &arg)) in kinds.iter().zip(&r.outcome_args).enumerate() {
            if k == outcome::MODIFY {
                let (start, end) = bounds(arg);
                match edited(b, b.properties[i], r, start..end, shift) {
                    Some(range) => b.properties[i] = range,
                    None => return false,
                }
            }
        }
        true
    }
}

/// The property range `range` of `b` with edits `edits` of `r` applied, as
/// [`apply_edits`] applies them to an event, appended to `b`'s property
/// columns; `r`'s text starts `shift` (a span's offset field) into `b`'s.
/// `None` if an edit removes or sets a property the event already had (see
/// [`Columns::follow`]); `b` is then left half done.
fn edited(
    b: &mut wit::Batch,
    range: u64,
    r: &wit::Processed,
    edits: std::ops::Range<usize>,
    shift: u64,
) -> Option<u64> {
    let (from, to) = bounds(range);
    let start = b.keys.len();
    b.keys.extend_from_within(from..to);
    b.kinds.extend_from_within(from..to);
    b.values.extend_from_within(from..to);
    let added = start + (to - from);
    for j in edits {
        let key = r.edit_keys[j] + shift;
        let found = (start..b.keys.len()).find(|&p| same_text(&b.text, b.keys[p], key));
        if found.is_some_and(|p| p < added) {
            return None;
        }
        let (k, value) = match r.edit_kinds[j] {
            kind::REMOVE => {
                if let Some(p) = found {
                    b.keys.remove(p);
                    b.kinds.remove(p);
                    b.values.remove(p);
                }
                continue;
            }
            // As `Text::value` reads them, so the columns say what the
            // event holds.
            kind::BOOL => (kind::BOOL, u64::from(r.edit_values[j] != 0)),
            kind::INT => (kind::INT, r.edit_values[j]),
            kind::FLOAT if f64::from_bits(r.edit_values[j]).is_finite() => {
                (kind::FLOAT, r.edit_values[j])
            }
            k @ (kind::TEXT | kind::JSON) => (k, r.edit_values[j] + shift),
            _ => (kind::NULL, 0),
        };
        match found {
            Some(p) => {
                b.kinds[p] = k;
                b.values[p] = value;
            }
            None => {
                b.keys.push(key);
                b.kinds.push(k);
                b.values.push(value);
            }
        }
    }
    Some(pack(start, b.keys.len() - start))
}

/// Whether two (checked) spans of `text` hold the same bytes.
fn same_text(text: &[u8], a: u64, b: u64) -> bool {
    if a & 0xffff_ffff != b & 0xffff_ffff {
        return false;
    }
    let (a0, a1) = bounds(a);
    let (b0, b1) = bounds(b);
    text.get(a0..a1) == text.get(b0..b1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    static L: std::sync::LazyLock<Limits> = std::sync::LazyLock::new(Limits::default);

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            name: "n".into(),
            timestamp: 1,
            distinct_id: "u".into(),
            session_id: None,
            properties: vec![("a".into(), Value::Int(1))],
        }
    }

    fn processed(kinds: Vec<u8>, args: Vec<u64>) -> wit::Processed {
        wit::Processed {
            outcome_kinds: kinds,
            outcome_args: args,
            edit_keys: Vec::new(),
            edit_kinds: Vec::new(),
            edit_values: Vec::new(),
            output: empty_batch(),
        }
    }

    #[test]
    fn bad_results_fail_without_losing_events() {
        let cases = [
            (
                processed(vec![outcome::KEEP], vec![0]),
                "outcomes for 2 events",
            ),
            (processed(vec![9, 0], vec![0, 0]), "unknown outcome kind 9"),
            (
                processed(vec![outcome::MODIFY, 0], vec![pack(0, 3), 0]),
                "out-of-range edit range",
            ),
            (
                processed(vec![outcome::REPLACE, 0], vec![4, 0]),
                "out-of-range replace index",
            ),
        ];
        for (result, needle) in cases {
            let mut events = vec![event("x"), event("y")];
            let err = apply(&mut events, &result, &L).unwrap_err();
            assert!(
                err.to_string().contains(needle),
                "{err} should mention {needle}"
            );
            assert_eq!(events, [event("x"), event("y")], "events untouched");
        }
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        // Two events both claiming the same output events would let a plugin
        // multiply the host's work without bound.
        let mut r = processed(
            vec![outcome::SPLIT, outcome::SPLIT],
            vec![pack(0, 1), pack(0, 1)],
        );
        let o = &mut r.output;
        o.ids.push(pack(0, 0));
        o.names.push(pack(0, 0));
        o.timestamps.push(1);
        o.distinct_ids.push(pack(0, 0));
        o.session_ids.push(ABSENT);
        o.properties.push(pack(0, 0));
        let mut events = vec![event("x"), event("y")];
        let err = apply(&mut events, &r, &L).unwrap_err();
        assert!(matches!(err, AbiError::Overlap { .. }), "{err}");
        assert_eq!(events.len(), 2);
        let absent = processed(vec![outcome::REPLACE], vec![u64::MAX]);
        let err = apply(&mut vec![event("z")], &absent, &L).unwrap_err();
        assert!(matches!(err, AbiError::BadRange { .. }), "{err}");
    }

    #[test]
    fn span_splitting_a_character_is_refused() {
        let mut r = processed(vec![outcome::MODIFY], vec![pack(0, 1)]);
        r.output.text = "é".as_bytes().to_vec();
        r.edit_keys.push(pack(0, 1));
        r.edit_kinds.push(kind::NULL);
        r.edit_values.push(0);
        let mut events = vec![event("x")];
        let err = apply(&mut events, &r, &L).unwrap_err();
        assert!(matches!(err, AbiError::BadSpan { .. }), "{err}");
        assert_eq!(events, [event("x")]);
    }

    #[test]
    fn modify_replace_and_split_apply() {
        let mut r = processed(
            vec![outcome::MODIFY, outcome::REPLACE, outcome::SPLIT],
            vec![pack(0, 2), 0, pack(1, 2)],
        );
        r.output.text = b"bxyz".to_vec();
        r.edit_keys = vec![pack(0, 1), pack(0, 0)];
        r.edit_kinds = vec![kind::TEXT, kind::REMOVE];
        r.edit_values = vec![pack(1, 3), 0];
        let o = &mut r.output;
        for _ in 0..3 {
            o.ids.push(pack(0, 0));
            o.names.push(pack(0, 1));
            o.timestamps.push(7);
            o.distinct_ids.push(pack(1, 1));
            o.session_ids.push(ABSENT);
            o.properties.push(pack(0, 0));
        }
        let mut out = vec![event("m"), event("r"), event("s")];
        let applied = apply(&mut out, &r, &L).unwrap();
        assert_eq!(out[0].get("b"), Some(&Value::Str("xyz".into())));
        assert_eq!(out[1].id, "r");
        assert_eq!(out[1].name, "b");
        assert_eq!((out[2].id.as_str(), out[3].id.as_str()), ("s-0", "s-1"));
        assert_eq!(
            applied,
            Applied {
                dropped: 0,
                modified: 1,
                created: 3
            }
        );
    }

    #[test]
    fn edits_apply_in_order_whether_keys_are_new_or_present() {
        // One text holding each string once, as the SDKs' dictionary writes
        // it: spans are shared between edits and events.
        let text = "abCdxyzChrome";
        let sp = |s: &str| pack(text.find(s).unwrap(), s.len());
        let mut e = event("x");
        e.properties = vec![
            ("a".into(), Value::Int(1)),
            ("b".into(), Value::Int(2)),
            ("xyz".into(), Value::Int(3)),
        ];
        let edits = [
            (sp("Cd"), kind::TEXT, sp("Chrome")), // new key
            (sp("a"), kind::TEXT, sp("Chrome")),  // present: set in place
            (sp("b"), kind::REMOVE, 0),           // present: removed
            (sp("b"), kind::INT, 7),              // set again: appended
            (sp("z"), kind::REMOVE, 0),           // absent: nothing
            (sp("Cd"), kind::BOOL, 1),            // new key set twice
            (sp("xy"), kind::NULL, 0),            // prefix of a key: new
        ];
        let mut r = processed(vec![outcome::MODIFY], vec![pack(0, edits.len())]);
        r.edit_keys = edits.iter().map(|e| e.0).collect();
        r.edit_kinds = edits.iter().map(|e| e.1).collect();
        r.edit_values = edits.iter().map(|e| e.2).collect();
        r.output.text = text.as_bytes().to_vec();
        let mut out = vec![e];
        apply(&mut out, &r, &L).unwrap();
        let got: Vec<(&str, &Value)> = out[0]
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", &Value::Str("Chrome".into())),
                ("xyz", &Value::Int(3)),
                ("Cd", &Value::Bool(true)),
                ("b", &Value::Int(7)),
                ("xy", &Value::Null),
            ]
        );
    }

    /// Properties or edits: key, kind, value as text (or a number).
    type Props = &'static [(&'static str, u8, &'static str)];

    /// Appends `s` to the result's text; its span.
    fn span(r: &mut wit::Processed, s: &str) -> u64 {
        push_span(&mut r.output.text, s)
    }

    /// Appends an output event (id left to the host) with `props`, each a
    /// key, a kind and its text or number.
    fn output(r: &mut wit::Processed, name: &str, distinct_id: &str, props: &[(&str, u8, &str)]) {
        let first = r.output.keys.len();
        for (k, kind, v) in props {
            let key = span(r, k);
            let value = match *kind {
                kind::TEXT | kind::JSON => span(r, v),
                _ => v.parse().unwrap(),
            };
            r.output.keys.push(key);
            r.output.kinds.push(*kind);
            r.output.values.push(value);
        }
        let (n, d) = (span(r, name), span(r, distinct_id));
        let o = &mut r.output;
        o.ids.push(pack(0, 0));
        o.names.push(n);
        o.timestamps.push(5);
        o.distinct_ids.push(d);
        o.session_ids.push(ABSENT);
        o.properties.push(pack(first, props.len()));
    }

    /// Appends edits to the result; their range.
    fn edits(r: &mut wit::Processed, list: &[(&str, u8, &str)]) -> u64 {
        let first = r.edit_keys.len();
        for (k, kind, v) in list {
            let key = span(r, k);
            let value = match *kind {
                kind::TEXT | kind::JSON => span(r, v),
                kind::REMOVE => 0,
                _ => v.parse().unwrap(),
            };
            r.edit_keys.push(key);
            r.edit_kinds.push(*kind);
            r.edit_values.push(value);
        }
        pack(first, list.len())
    }

    fn refused(r: &wit::Processed, limits: &Limits) -> String {
        let mut events = vec![event("x"), event("y")];
        let err = apply(&mut events, r, limits).unwrap_err();
        assert_eq!(events, [event("x"), event("y")], "nothing moved");
        err.to_string()
    }

    #[test]
    fn created_events_must_pass_the_ingest_rules() {
        let tight = Limits {
            max_properties: 2,
            max_key_bytes: 4,
            max_string_bytes: 8,
            ..Limits::default()
        };
        let cases: [(&str, &str, Props, &str); 7] = [
            ("n", "", &[], "distinct_id: must not be empty"),
            ("", "u", &[], "name: must not be empty"),
            (
                "n",
                "u",
                &[("k", kind::INT, "1"), ("k", kind::INT, "2")],
                "properties: duplicate key `k`",
            ),
            (
                "n",
                "u",
                &[
                    ("a", kind::NULL, "0"),
                    ("b", kind::NULL, "0"),
                    ("c", kind::NULL, "0"),
                ],
                "properties: more than 2 properties",
            ),
            (
                "n",
                "u",
                &[("longkey", kind::NULL, "0")],
                "properties: key `longkey` is too long; the limit is 4 bytes",
            ),
            (
                "n",
                "u",
                &[("s", kind::TEXT, "123456789")],
                "properties.s: string of 9 bytes is too long; the limit is 8 bytes",
            ),
            (
                "n",
                "123456789",
                &[],
                "distinct_id: string of 9 bytes is too long; the limit is 8 bytes",
            ),
        ];
        for (name, distinct_id, props, why) in cases {
            // The second outcome creates the bad event; the first one's
            // valid edit must not be applied either.
            for split in [false, true] {
                let mut r = processed(vec![outcome::MODIFY, 0], vec![0, 0]);
                r.outcome_args[0] = edits(&mut r, &[("new", kind::INT, "1")]);
                output(&mut r, name, distinct_id, props);
                r.outcome_kinds[1] = if split {
                    outcome::SPLIT
                } else {
                    outcome::REPLACE
                };
                r.outcome_args[1] = if split { pack(0, 1) } else { 0 };
                assert_eq!(
                    refused(&r, &tight),
                    format!("plugin created an invalid event (outcome 1): {why}")
                );
            }
        }
    }

    #[test]
    fn valid_created_events_pass_and_an_empty_session_means_none() {
        let mut r = processed(vec![outcome::SPLIT, outcome::REPLACE], vec![pack(0, 2), 2]);
        output(&mut r, "a", "u", &[("j", kind::JSON, r#"{"k":[1,"x"]}"#)]);
        output(&mut r, "b", "u", &[]);
        output(&mut r, "c", "u", &[("s", kind::TEXT, "fine")]);
        let empty = span(&mut r, "");
        r.output.session_ids[2] = empty;
        let mut out = vec![event("x"), event("y")];
        apply(&mut out, &r, &L).unwrap();
        let ids: Vec<&str> = out.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["x-0", "x-1", "y"]);
        assert_eq!(out[2].session_id, None);
        assert_eq!(
            out[0].get("j"),
            Some(&Value::Json(r#"{"k":[1,"x"]}"#.into()))
        );
    }

    #[test]
    fn edits_must_leave_a_valid_event() {
        let tight = Limits {
            max_properties: 2,
            max_key_bytes: 4,
            max_string_bytes: 8,
            max_depth: 2,
            ..Limits::default()
        };
        // `event()` has one property, `a`.
        let cases: [(Props, &str); 6] = [
            (
                &[("s", kind::TEXT, "123456789")],
                "properties.s: string of 9 bytes is too long; the limit is 8 bytes",
            ),
            (
                &[("longkey", kind::INT, "1")],
                "properties: key `longkey` is too long; the limit is 4 bytes",
            ),
            (
                &[("j", kind::JSON, "[[[1]]]")],
                "properties.j[0][0]: nested deeper than 2 levels",
            ),
            (
                &[("j", kind::JSON, "not json")],
                "properties.j: a nested value must be a JSON object or array",
            ),
            (
                &[("b", kind::INT, "1"), ("c", kind::INT, "1")],
                "properties: more than 2 properties",
            ),
            (
                // Removing `a` first makes room, but not for three.
                &[
                    ("a", kind::REMOVE, ""),
                    ("b", kind::NULL, "0"),
                    ("c", kind::NULL, "0"),
                    ("d", kind::NULL, "0"),
                ],
                "properties: more than 2 properties",
            ),
        ];
        for (list, why) in cases {
            let mut r = processed(vec![0, outcome::MODIFY], vec![0, 0]);
            r.outcome_args[1] = edits(&mut r, list);
            assert_eq!(
                refused(&r, &tight),
                format!("plugin edits make an event invalid (outcome 1): {why}")
            );
        }
        // At the cap, overwrites and a remove-then-add are fine.
        let mut r = processed(vec![outcome::MODIFY], vec![0]);
        r.outcome_args[0] = edits(
            &mut r,
            &[
                ("b", kind::INT, "1"),
                ("a", kind::INT, "2"),
                ("b", kind::INT, "3"),
                ("a", kind::REMOVE, ""),
                ("c", kind::TEXT, "12345678"),
            ],
        );
        let mut out = vec![event("x")];
        apply(&mut out, &r, &tight).unwrap();
        let keys: Vec<&str> = out[0].properties.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(out[0].get("b"), Some(&Value::Int(3)));
    }

    /// The events a batch's columns describe.
    fn decoded(b: &wit::Batch) -> Vec<Event> {
        let text = Text(std::str::from_utf8(&b.text).unwrap());
        (0..b.ids.len())
            .map(|i| new_event(&text, b, i, CompactString::default()))
            .collect()
    }

    /// A random result for `n` events that keeps, drops and modifies them
    /// (with edits setting present and new keys, to every value kind
    /// including non-finite floats, and removing), and with `create` also
    /// replaces and splits.
    fn random_result(rng: &mut crate::test_rng::Rng, n: usize, create: bool) -> wit::Processed {
        const KEYS: [&str; 6] = ["a", "b", "plan", "$lib", "new", "n2"];
        let mut r = processed(Vec::new(), Vec::new());
        for _ in 0..n {
            // Mostly keeps and modifications, so that whole results of
            // them (which the columns follow) are common.
            let choice = match rng.below(if create { 12 } else { 10 }) {
                0..=4 => 0,
                5 => 1,
                6..=9 => 2,
                10 => 4,
                _ => 5,
            };
            match choice {
                0 => {
                    r.outcome_kinds.push(outcome::KEEP);
                    r.outcome_args.push(0);
                }
                1 => {
                    r.outcome_kinds.push(outcome::DROP);
                    r.outcome_args.push(0);
                }
                2 | 3 => {
                    let mut list: Vec<(&str, u8, String)> = Vec::new();
                    // Half the modifications only set new keys.
                    let additive = rng.below(2) == 0;
                    for _ in 0..rng.below(5) {
                        let key = if additive {
                            rng.pick(&["b", "new", "n2"])
                        } else {
                            rng.pick(&KEYS)
                        };
                        let edit = match rng.below(if additive { 6 } else { 7 }) {
                            6 => (key, kind::REMOVE, String::new()),
                            0 => (key, kind::TEXT, format!("w{}", rng.below(9))),
                            1 => (key, kind::NULL, "0".into()),
                            2 => (key, kind::BOOL, rng.below(3).to_string()),
                            3 => (key, kind::INT, rng.next().to_string()),
                            4 => {
                                let f = rng.pick(&[1.5f64, f64::NAN, f64::INFINITY, -0.0]);
                                (key, kind::FLOAT, f.to_bits().to_string())
                            }
                            5 => (key, kind::JSON, "[1]".into()),
                            _ => (key, kind::TEXT, format!("v{}", rng.below(100))),
                        };
                        list.push(edit);
                    }
                    let list: Vec<(&str, u8, &str)> =
                        list.iter().map(|(k, t, v)| (*k, *t, v.as_str())).collect();
                    let range = edits(&mut r, &list);
                    r.outcome_kinds.push(outcome::MODIFY);
                    r.outcome_args.push(range);
                }
                4 => {
                    r.outcome_kinds.push(outcome::REPLACE);
                    r.outcome_args.push(r.output.ids.len() as u64);
                    output(&mut r, "made", "u", &[("k", kind::INT, "1")]);
                }
                _ => {
                    let first = r.output.ids.len();
                    let count = rng.below(3) as usize;
                    for _ in 0..count {
                        output(&mut r, "split", "u", &[("s", kind::TEXT, "t")]);
                    }
                    r.outcome_kinds.push(outcome::SPLIT);
                    r.outcome_args.push(pack(first, count));
                }
            }
        }
        r
    }

    /// Whether the columns can follow `r` on `events` (see
    /// [`Columns::follow`]): nothing dropped or created, and no edit
    /// touching a property an event already has.
    fn followable(events: &[Event], r: &wit::Processed) -> bool {
        let text = Text(std::str::from_utf8(&r.output.text).unwrap());
        events
            .iter()
            .zip(&r.outcome_kinds)
            .zip(&r.outcome_args)
            .all(|((e, &k), &arg)| match k {
                outcome::KEEP => true,
                outcome::MODIFY => {
                    let (start, end) = bounds(arg);
                    (start..end).all(|j| e.get(text.slice(r.edit_keys[j])).is_none())
                }
                _ => false,
            })
    }

    #[test]
    fn columns_follow_keeps_and_additions_and_encode_afresh_after_anything_else() {
        let mut rng = crate::test_rng::Rng::new(11);
        let (mut followed, mut refused) = (0, 0);
        for case in 0..300 {
            let mut events: Vec<Event> = (0..1 + rng.below(12) as usize)
                .map(|i| {
                    let mut e = event(&format!("e{i}"));
                    e.session_id = (i % 3 == 0).then(|| "s".into());
                    e.properties.push(("plan".into(), Value::Str("pro".into())));
                    e.properties.push(("$lib".into(), Value::Float(2.5)));
                    e
                })
                .collect();
            let mut columns = Columns::default();
            assert_eq!(decoded(columns.batch(&events)), events);
            // Several stages in a row.
            for stage in 0..4 {
                let r = random_result(&mut rng, events.len(), false);
                let mut applied = events.clone();
                if apply(&mut applied, &r, &L).is_err() {
                    continue; // an edit past the property cap: refused
                }
                let expected = followable(&events, &r);
                events = applied;
                let ok = columns.follow(&r);
                assert_eq!(ok, expected, "case {case} stage {stage}");
                if ok {
                    followed += 1;
                    assert_eq!(
                        decoded(&columns.encoder.batch),
                        events,
                        "case {case} stage {stage}: the columns describe the events"
                    );
                } else {
                    refused += 1;
                    columns.invalidate();
                    assert_eq!(decoded(columns.batch(&events)), events);
                }
            }
            // Results that create events make the next stage encode
            // afresh, through `batch`, as anything else does.
            let r = random_result(&mut rng, events.len(), true);
            if apply(&mut events, &r, &L).is_ok() {
                columns.applied(r);
            }
            assert_eq!(decoded(columns.batch(&events)), events, "case {case}");
        }
        assert!(
            followed > 100 && refused > 100,
            "{followed} followed, {refused} refused"
        );
    }
}
