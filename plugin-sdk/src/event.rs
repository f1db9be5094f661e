//! Events as a plugin sees them, and the translation between them and the
//! columnar batch layout of the WIT contract.

use crate::bindings::eddy::plugin::types as wit;
use crate::layout::{self, ABSENT};
use crate::value::{OwnedValue, Value};

/// What a processor decides for one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Pass the event on, with any properties changed through
    /// [`Event::set`] / [`Event::remove`].
    Keep,
    /// Remove the event from the stream.
    Drop,
    /// Pass on this event instead (edits made to the input are discarded).
    Replace(NewEvent),
    /// Pass on these events instead (edits made to the input are discarded).
    Split(Vec<NewEvent>),
}

/// An event built by a plugin, for [`Outcome::Replace`] and [`Outcome::Split`].
///
/// An empty `id` is filled in by the host from the input event's id.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewEvent {
    /// Unique id; leave empty to let the host derive one.
    pub id: String,
    /// Event name.
    pub name: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The user.
    pub distinct_id: String,
    /// The session, if any.
    pub session_id: Option<String>,
    /// Properties, in order.
    pub properties: Vec<(String, OwnedValue)>,
}

impl NewEvent {
    /// The value of property `key`, if set.
    pub fn get(&self, key: &str) -> Option<Value<'_>> {
        self.properties
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_value())
    }

    /// Set property `key`, replacing an existing value.
    pub fn set(&mut self, key: &str, value: impl Into<OwnedValue>) {
        let value = value.into();
        match self.properties.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.properties.push((key.to_owned(), value)),
        }
    }

    /// Builder form of [`NewEvent::set`].
    pub fn with(mut self, key: &str, value: impl Into<OwnedValue>) -> Self {
        self.set(key, value);
        self
    }
}

fn slice(text: &str, span: u64) -> &str {
    if span == ABSENT {
        return "";
    }
    let (start, end) = layout::bounds(span);
    text.get(start..end).unwrap_or("")
}

/// A span of the input text, checked as UTF-8 when read: a plugin pays for
/// validating the strings it looks at, not the whole batch.
fn slice_bytes(text: &[u8], span: u64) -> &str {
    std::str::from_utf8(span_bytes(text, span)).unwrap_or("")
}

/// A span's raw bytes, for comparing without validating.
fn span_bytes(text: &[u8], span: u64) -> &[u8] {
    if span == ABSENT {
        return &[];
    }
    let (start, end) = layout::bounds(span);
    text.get(start..end).unwrap_or(&[])
}

fn read_bytes(text: &[u8], kind: u8, value: u64) -> Value<'_> {
    match kind {
        layout::TEXT => Value::Str(slice_bytes(text, value)),
        layout::JSON => Value::Json(slice_bytes(text, value)),
        _ => read("", kind, value),
    }
}

fn read(text: &str, kind: u8, value: u64) -> Value<'_> {
    match kind {
        layout::BOOL => Value::Bool(value != 0),
        layout::INT => Value::Int(value as i64),
        layout::FLOAT => Value::Float(f64::from_bits(value)),
        layout::TEXT => Value::Str(slice(text, value)),
        layout::JSON => Value::Json(slice(text, value)),
        _ => Value::Null,
    }
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

/// The input batch, its columns checked for equal lengths.
pub(crate) struct Input {
    text: Vec<u8>,
    columns: wit::Batch,
}

impl Input {
    pub(crate) fn new(mut batch: wit::Batch) -> Result<Self, String> {
        let text = std::mem::take(&mut batch.text);
        let n = batch.ids.len();
        let events_ok = [
            batch.names.len(),
            batch.timestamps.len(),
            batch.distinct_ids.len(),
            batch.session_ids.len(),
            batch.properties.len(),
        ]
        .iter()
        .all(|&l| l == n);
        let p = batch.keys.len();
        if !events_ok || batch.kinds.len() != p || batch.values.len() != p {
            return Err("batch columns have different lengths".to_owned());
        }
        Ok(Input {
            text,
            columns: batch,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.columns.ids.len()
    }

    fn property_range(&self, index: usize) -> std::ops::Range<usize> {
        let (start, end) = layout::bounds(self.columns.properties[index]);
        let end = end.min(self.columns.keys.len());
        start.min(end)..end
    }
}

/// Slots of the short-string dictionary (a power of two).
const DICT_SLOTS: usize = 64;

/// Strings up to this many bytes are written to the result's text once per
/// batch and shared by every span that names them.
const DICT_MAX: usize = 16;

/// A short string packed into integers: its length and its bytes as two
/// little-endian words (zero-padded), so equality is three compares.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Short {
    len: usize,
    lo: u64,
    hi: u64,
}

impl Short {
    fn new(s: &str) -> Option<Short> {
        let b = s.as_bytes();
        if b.len() > DICT_MAX {
            return None;
        }
        // Whole words are one load; a partial one is assembled byte by byte,
        // since a variable-length copy is a call in WebAssembly.
        let word = |part: &[u8]| match part.first_chunk::<8>() {
            Some(w) => u64::from_le_bytes(*w),
            None => part
                .iter()
                .enumerate()
                .fold(0u64, |w, (i, &x)| w | u64::from(x) << (8 * i)),
        };
        Some(Short {
            len: b.len(),
            lo: word(b),
            hi: word(b.get(8..).unwrap_or(&[])),
        })
    }

    fn slot(&self) -> usize {
        let h = (self.lo ^ self.hi.rotate_left(29) ^ self.len as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 58) as usize % DICT_SLOTS
    }
}

/// The result under construction: edits, new events, and their text.
pub(crate) struct Output {
    text: String,
    edit_keys: Vec<u64>,
    edit_kinds: Vec<u8>,
    edit_values: Vec<u64>,
    events: wit::Batch,
    /// Short strings already in `text` (property names, enum-like values):
    /// an enricher setting `$browser` to `Chrome` on a thousand events
    /// writes each once. Direct-mapped; a collision just writes again.
    dict: [(Short, u64); DICT_SLOTS],
}

thread_local! {
    // Sizes of the previous batch's result, so the next one allocates its
    // buffers once instead of growing them by doubling.
    static LAST_SIZES: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

impl Output {
    fn new() -> Self {
        let (text, edits) = LAST_SIZES.with(|c| c.get());
        Output {
            text: String::with_capacity(text),
            edit_keys: Vec::with_capacity(edits),
            edit_kinds: Vec::with_capacity(edits),
            edit_values: Vec::with_capacity(edits),
            events: empty_batch(),
            dict: [(
                Short {
                    len: usize::MAX,
                    lo: 0,
                    hi: 0,
                },
                0,
            ); DICT_SLOTS],
        }
    }

    /// A span of `s` in the result's text: written once per batch if short,
    /// appended otherwise. (Spans may share bytes; only edit ranges and
    /// output events must not be reused.)
    fn span(&mut self, s: &str) -> u64 {
        let Some(short) = Short::new(s) else {
            return self.append(s);
        };
        let slot = short.slot();
        let (known, span) = self.dict[slot];
        if known == short {
            return span;
        }
        let span = self.append(s);
        self.dict[slot] = (short, span);
        span
    }

    fn append(&mut self, s: &str) -> u64 {
        let start = self.text.len();
        self.text.push_str(s);
        layout::pack(start, s.len())
    }

    fn value(&mut self, v: Value<'_>) -> (u8, u64) {
        match v {
            Value::Null => (layout::NULL, 0),
            Value::Bool(b) => (layout::BOOL, u64::from(b)),
            Value::Int(i) => (layout::INT, i as u64),
            Value::Float(f) if f.is_finite() => (layout::FLOAT, f.to_bits()),
            Value::Float(_) => (layout::NULL, 0),
            Value::Str(s) => (layout::TEXT, self.span(s)),
            Value::Json(s) => (layout::JSON, self.span(s)),
        }
    }

    fn edit(&mut self, key: &str, kind: u8, value: u64) {
        let key = self.span(key);
        self.edit_keys.push(key);
        self.edit_kinds.push(kind);
        self.edit_values.push(value);
    }

    fn edits(&self) -> usize {
        self.edit_keys.len()
    }

    fn truncate_edits(&mut self, len: usize) {
        self.edit_keys.truncate(len);
        self.edit_kinds.truncate(len);
        self.edit_values.truncate(len);
    }

    fn push_event(&mut self, e: &NewEvent) -> usize {
        let start = self.events.keys.len();
        for (k, v) in &e.properties {
            let key = self.span(k);
            let (kind, value) = self.value(v.as_value());
            self.events.keys.push(key);
            self.events.kinds.push(kind);
            self.events.values.push(value);
        }
        let id = self.span(&e.id);
        let name = self.span(&e.name);
        let distinct_id = self.span(&e.distinct_id);
        let session_id = match e.session_id.as_deref() {
            Some(s) => self.span(s),
            None => ABSENT,
        };
        let b = &mut self.events;
        b.ids.push(id);
        b.names.push(name);
        b.timestamps.push(e.timestamp);
        b.distinct_ids.push(distinct_id);
        b.session_ids.push(session_id);
        b.properties.push(layout::pack(start, e.properties.len()));
        b.ids.len() - 1
    }
}

/// One input event, as a processor sees it: read its fields and properties,
/// change properties in place with [`set`](Event::set) and
/// [`remove`](Event::remove), then return an [`Outcome`].
///
/// Fields and [`original`](Event::original) values borrow the batch, not the
/// event, so they can be passed straight back to [`set`](Event::set).
pub struct Event<'a> {
    input: &'a Input,
    index: usize,
    out: &'a mut Output,
    first_edit: usize,
}

impl<'a> Event<'a> {
    /// The event's unique id.
    pub fn id(&self) -> &'a str {
        slice_bytes(&self.input.text, self.input.columns.ids[self.index])
    }

    /// The event name, e.g. `$pageview`.
    pub fn name(&self) -> &'a str {
        slice_bytes(&self.input.text, self.input.columns.names[self.index])
    }

    /// Event time, milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.input.columns.timestamps[self.index]
    }

    /// The user this event belongs to.
    pub fn distinct_id(&self) -> &'a str {
        slice_bytes(
            &self.input.text,
            self.input.columns.distinct_ids[self.index],
        )
    }

    /// The session this event belongs to, if any.
    pub fn session_id(&self) -> Option<&'a str> {
        let span = self.input.columns.session_ids[self.index];
        (span != ABSENT).then(|| slice_bytes(&self.input.text, span))
    }

    /// The value of property `key` as the event arrived, ignoring this
    /// plugin's edits. Borrows the batch, so it can be fed to `set`.
    pub fn original(&self, key: &str) -> Option<Value<'a>> {
        let input: &'a Input = self.input;
        let c = &input.columns;
        input
            .property_range(self.index)
            .find(|&i| span_bytes(&input.text, c.keys[i]) == key.as_bytes())
            .map(|i| read_bytes(&input.text, c.kinds[i], c.values[i]))
    }

    /// The value of property `key`, including changes made by this plugin.
    pub fn get(&self, key: &str) -> Option<Value<'_>> {
        // Edits made while processing this event win, newest first.
        let out = &*self.out;
        for i in (self.first_edit..out.edits()).rev() {
            if slice(&out.text, out.edit_keys[i]) == key {
                return match out.edit_kinds[i] {
                    layout::REMOVE => None,
                    kind => Some(read(&out.text, kind, out.edit_values[i])),
                };
            }
        }
        self.original(key)
    }

    /// The string value of property `key`, if it is a string.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| v.as_str())
    }

    /// The numeric value of property `key` as `f64`, if it is a number.
    pub fn f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(|v| v.as_f64())
    }

    /// The whole-number value of property `key`, if it is one.
    pub fn i64(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(|v| v.as_i64())
    }

    /// The boolean value of property `key`, if it is one.
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| v.as_bool())
    }

    /// Whether property `key` is present.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The event's properties as they arrived (without this plugin's edits).
    pub fn properties(&self) -> impl Iterator<Item = (&'a str, Value<'a>)> + use<'a> {
        let input: &'a Input = self.input;
        let c = &input.columns;
        input.property_range(self.index).map(move |i| {
            (
                slice_bytes(&input.text, c.keys[i]),
                read_bytes(&input.text, c.kinds[i], c.values[i]),
            )
        })
    }

    /// Set property `key` (added, or overwritten if present).
    pub fn set<'v>(&mut self, key: &str, value: impl Into<ValueArg<'v>>) {
        let (kind, value) = match value.into() {
            ValueArg::Borrowed(v) => self.out.value(v),
            ValueArg::Owned(v) => self.out.value(v.as_value()),
        };
        self.out.edit(key, kind, value);
    }

    /// Set property `key` to a string.
    pub fn set_str(&mut self, key: &str, value: &str) {
        let span = self.out.span(value);
        self.out.edit(key, layout::TEXT, span);
    }

    /// Remove property `key` if present.
    pub fn remove(&mut self, key: &str) {
        self.out.edit(key, layout::REMOVE, 0);
    }

    /// An owned copy of this event with this plugin's edits applied, e.g. as
    /// the starting point of [`Outcome::Split`].
    pub fn to_new_event(&self) -> NewEvent {
        let mut e = NewEvent {
            id: self.id().to_owned(),
            name: self.name().to_owned(),
            timestamp: self.timestamp(),
            distinct_id: self.distinct_id().to_owned(),
            session_id: self.session_id().map(str::to_owned),
            properties: self
                .properties()
                .map(|(k, v)| (k.to_owned(), v.to_owned_value()))
                .collect(),
        };
        let out = &*self.out;
        for i in self.first_edit..out.edits() {
            apply_edit(
                &mut e,
                &out.text,
                out.edit_keys[i],
                out.edit_kinds[i],
                out.edit_values[i],
            );
        }
        e
    }
}

/// A value for [`Event::set`]: anything that converts to [`OwnedValue`], or
/// a borrowed [`Value`] (copied into the result without an allocation).
pub enum ValueArg<'v> {
    /// A borrowed value.
    Borrowed(Value<'v>),
    /// An owned value.
    Owned(OwnedValue),
}

impl<'v> From<Value<'v>> for ValueArg<'v> {
    fn from(v: Value<'v>) -> Self {
        ValueArg::Borrowed(v)
    }
}

impl<'v> From<&'v str> for ValueArg<'v> {
    fn from(s: &'v str) -> Self {
        ValueArg::Borrowed(Value::Str(s))
    }
}

macro_rules! owned_arg {
    ($($t:ty),*) => {$(
        impl From<$t> for ValueArg<'_> {
            fn from(v: $t) -> Self {
                ValueArg::Owned(v.into())
            }
        }
    )*};
}
owned_arg!(
    String,
    bool,
    i64,
    i32,
    u32,
    f64,
    OwnedValue,
    serde_json::Value
);

fn apply_edit(e: &mut NewEvent, text: &str, key: u64, kind: u8, value: u64) {
    let key = slice(text, key);
    if kind == layout::REMOVE {
        e.properties.retain(|(name, _)| name != key);
    } else {
        e.set(key, read(text, kind, value).to_owned_value());
    }
}

/// Show `f` every event of `input` with indices `range`, read-only: edits
/// made through the event are discarded (pattern plugins only read).
pub(crate) fn each_event(
    input: &Input,
    range: std::ops::Range<usize>,
    mut f: impl FnMut(&mut Event<'_>),
) {
    let mut out = Output::new();
    for index in range.start..range.end.min(input.len()) {
        let mut event = Event {
            input,
            index,
            out: &mut out,
            first_edit: 0,
        };
        f(&mut event);
        out.truncate_edits(0);
    }
}

/// Run `f` over every event of `input`, collecting the columnar result.
pub(crate) fn run_batch(
    input: &Input,
    mut f: impl FnMut(&mut Event<'_>) -> Outcome,
) -> wit::Processed {
    let mut out = Output::new();
    let n = input.len();
    let mut kinds = Vec::with_capacity(n);
    let mut args = Vec::with_capacity(n);
    for index in 0..n {
        let first_edit = out.edits();
        let outcome = {
            let mut event = Event {
                input,
                index,
                out: &mut out,
                first_edit,
            };
            f(&mut event)
        };
        let edits = out.edits() - first_edit;
        let (kind, arg) = match outcome {
            Outcome::Keep if edits == 0 => (layout::KEEP, 0),
            Outcome::Keep => (layout::MODIFY, layout::pack(first_edit, edits)),
            Outcome::Drop => {
                out.truncate_edits(first_edit);
                (layout::DROP, 0)
            }
            Outcome::Replace(event) => {
                out.truncate_edits(first_edit);
                (layout::REPLACE, out.push_event(&event) as u64)
            }
            Outcome::Split(events) => {
                out.truncate_edits(first_edit);
                let start = out.events.ids.len();
                for event in &events {
                    out.push_event(event);
                }
                (layout::SPLIT, layout::pack(start, events.len()))
            }
        };
        kinds.push(kind);
        args.push(arg);
    }
    LAST_SIZES.with(|c| c.set((out.text.len(), out.edits())));
    let mut output = out.events;
    output.text = out.text.into_bytes();
    wit::Processed {
        outcome_kinds: kinds,
        outcome_args: args,
        edit_keys: out.edit_keys,
        edit_kinds: out.edit_kinds,
        edit_values: out.edit_values,
        output,
    }
}

/// Encode owned events into the columnar layout (used by [`crate::testing`]).
pub(crate) fn encode(events: &[NewEvent]) -> wit::Batch {
    let mut out = Output::new();
    for e in events {
        out.push_event(e);
    }
    let mut batch = out.events;
    batch.text = out.text.into_bytes();
    batch
}

/// Apply a processed result to the events it came from, the way the host
/// does (used by [`crate::testing`]).
pub(crate) fn apply(
    events: Vec<NewEvent>,
    result: wit::Processed,
) -> Result<Vec<NewEvent>, String> {
    let output = Input::new(result.output)?;
    let output_text = String::from_utf8(output.text.clone()).map_err(|e| e.to_string())?;
    let decode = |i: usize| -> Result<NewEvent, String> {
        if i >= output.len() {
            return Err(format!("output event {i} out of range"));
        }
        let c = &output.columns;
        let text = &output_text;
        Ok(NewEvent {
            id: slice(text, c.ids[i]).to_owned(),
            name: slice(text, c.names[i]).to_owned(),
            timestamp: c.timestamps[i],
            distinct_id: slice(text, c.distinct_ids[i]).to_owned(),
            session_id: (c.session_ids[i] != ABSENT)
                .then(|| slice(text, c.session_ids[i]).to_owned()),
            properties: output
                .property_range(i)
                .map(|p| {
                    (
                        slice(text, c.keys[p]).to_owned(),
                        read(text, c.kinds[p], c.values[p]).to_owned_value(),
                    )
                })
                .collect(),
        })
    };
    let mut out = Vec::new();
    for (i, mut e) in events.into_iter().enumerate() {
        let arg = result.outcome_args[i];
        match result.outcome_kinds[i] {
            layout::KEEP => out.push(e),
            layout::DROP => {}
            layout::MODIFY => {
                let (start, end) = layout::bounds(arg);
                for j in start..end {
                    apply_edit(
                        &mut e,
                        &output_text,
                        result.edit_keys[j],
                        result.edit_kinds[j],
                        result.edit_values[j],
                    );
                }
                out.push(e);
            }
            layout::REPLACE => out.push(decode(arg as usize)?),
            layout::SPLIT => {
                let (start, end) = layout::bounds(arg);
                for j in start..end {
                    out.push(decode(j)?);
                }
            }
            other => return Err(format!("unknown outcome kind {other}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Config, Processor, testing};

    /// Sets `n` (every event), `short` (a value from a small set), `edge`
    /// (lengths around the dictionary's word and size limits) and `many`
    /// (more distinct short strings than the dictionary has slots).
    struct Writer;

    impl Processor for Writer {
        fn new(_: Config) -> Result<Self, String> {
            Ok(Writer)
        }

        fn process(&mut self, event: &mut Event<'_>) -> Outcome {
            let i = event.timestamp() as usize;
            event.set_str("short", ["Chrome", "Firefox", "Safari"][i % 3]);
            let edge = "abcdefghijklmnopq";
            event.set_str("edge", &edge[..[0, 1, 7, 8, 9, 15, 16, 17][i % 8]]);
            event.set("many", format!("v{}", i % 200));
            event.set("n", i as i64);
            Outcome::Keep
        }
    }

    #[test]
    fn shared_short_strings_read_back_exactly() {
        let input: Vec<NewEvent> = (0..600)
            .map(|i| NewEvent {
                name: "e".into(),
                timestamp: i,
                ..NewEvent::default()
            })
            .collect();
        let out = testing::run::<Writer>("{}", input).unwrap();
        assert_eq!(out.len(), 600);
        for (i, e) in out.iter().enumerate() {
            let edge = &"abcdefghijklmnopq"[..[0, 1, 7, 8, 9, 15, 16, 17][i % 8]];
            assert_eq!(
                e.get("short").unwrap().as_str(),
                Some(["Chrome", "Firefox", "Safari"][i % 3])
            );
            assert_eq!(e.get("edge").unwrap().as_str(), Some(edge));
            assert_eq!(
                e.get("many").unwrap().as_str(),
                Some(format!("v{}", i % 200).as_str())
            );
            assert_eq!(e.get("n").unwrap().as_i64(), Some(i as i64));
        }
    }

    #[test]
    fn the_dictionary_writes_a_repeated_string_once() {
        let mut out = Output::new();
        let a = out.span("$browser");
        let b = out.span("$browser");
        let long = "a value longer than sixteen bytes";
        let c = out.span(long);
        let d = out.span(long);
        assert_eq!(a, b);
        assert_ne!(c, d, "long strings are appended each time");
        assert_eq!(out.text.len(), "$browser".len() + 2 * long.len());
        assert_eq!(slice(&out.text, a), "$browser");
        assert_eq!(slice(&out.text, d), long);
    }
}
