//! Events as a plugin sees them, and the translation between them and the
//! flat batch layout of the WIT contract.

use crate::bindings::eddy::plugin::types as wit;
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

/// The input batch, decoded once.
pub(crate) struct Input {
    text: String,
    events: Vec<wit::Event>,
    properties: Vec<wit::Property>,
}

impl Input {
    pub(crate) fn new(batch: wit::Batch) -> Result<Self, String> {
        let text =
            String::from_utf8(batch.text).map_err(|e| format!("batch text is not UTF-8: {e}"))?;
        Ok(Input {
            text,
            events: batch.events,
            properties: batch.properties,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }
}

/// Everything a batch's result carries besides outcomes.
#[derive(Default)]
pub(crate) struct Output {
    text: String,
    edits: Vec<wit::Edit>,
    events: Vec<wit::Event>,
    properties: Vec<wit::Property>,
}

fn slice(text: &str, span: wit::Span) -> &str {
    let start = span.start as usize;
    text.get(start..start + span.len as usize).unwrap_or("")
}

fn read(text: &str, value: wit::Value) -> Value<'_> {
    match value {
        wit::Value::Null => Value::Null,
        wit::Value::Boolean(b) => Value::Bool(b),
        wit::Value::Integer(i) => Value::Int(i),
        wit::Value::Float(f) => Value::Float(f),
        wit::Value::Text(s) => Value::Str(slice(text, s)),
        wit::Value::Json(s) => Value::Json(slice(text, s)),
    }
}

impl Output {
    fn span(&mut self, s: &str) -> wit::Span {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        wit::Span {
            start,
            len: s.len() as u32,
        }
    }

    fn value(&mut self, v: Value<'_>) -> wit::Value {
        match v {
            Value::Null => wit::Value::Null,
            Value::Bool(b) => wit::Value::Boolean(b),
            Value::Int(i) => wit::Value::Integer(i),
            Value::Float(f) if f.is_finite() => wit::Value::Float(f),
            Value::Float(_) => wit::Value::Null,
            Value::Str(s) => wit::Value::Text(self.span(s)),
            Value::Json(s) => wit::Value::Json(self.span(s)),
        }
    }

    fn push_event(&mut self, e: &NewEvent) -> u32 {
        let start = self.properties.len() as u32;
        for (k, v) in &e.properties {
            let key = self.span(k);
            let value = self.value(v.as_value());
            self.properties.push(wit::Property { key, value });
        }
        let event = wit::Event {
            id: self.span(&e.id),
            name: self.span(&e.name),
            timestamp: e.timestamp,
            distinct_id: self.span(&e.distinct_id),
            session_id: e.session_id.as_deref().map(|s| self.span(s)),
            properties: wit::Range {
                start,
                len: e.properties.len() as u32,
            },
        };
        self.events.push(event);
        (self.events.len() - 1) as u32
    }
}

/// One input event, as a processor sees it: read its fields and properties,
/// change properties in place with [`set`](Event::set) and
/// [`remove`](Event::remove), then return an [`Outcome`].
pub struct Event<'a> {
    input: &'a Input,
    raw: &'a wit::Event,
    out: &'a mut Output,
    first_edit: usize,
}

impl Event<'_> {
    /// The event's unique id.
    pub fn id(&self) -> &str {
        slice(&self.input.text, self.raw.id)
    }

    /// The event name, e.g. `$pageview`.
    pub fn name(&self) -> &str {
        slice(&self.input.text, self.raw.name)
    }

    /// Event time, milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.raw.timestamp
    }

    /// The user this event belongs to.
    pub fn distinct_id(&self) -> &str {
        slice(&self.input.text, self.raw.distinct_id)
    }

    /// The session this event belongs to, if any.
    pub fn session_id(&self) -> Option<&str> {
        self.raw.session_id.map(|s| slice(&self.input.text, s))
    }

    fn input_properties(&self) -> &[wit::Property] {
        let start = self.raw.properties.start as usize;
        let end = start + self.raw.properties.len as usize;
        self.input.properties.get(start..end).unwrap_or(&[])
    }

    /// The value of property `key`, including changes made by this plugin.
    pub fn get(&self, key: &str) -> Option<Value<'_>> {
        // Edits made while processing this event win, newest first.
        for edit in self.out.edits[self.first_edit..].iter().rev() {
            match *edit {
                wit::Edit::Set(p) if slice(&self.out.text, p.key) == key => {
                    return Some(read(&self.out.text, p.value));
                }
                wit::Edit::Remove(k) if slice(&self.out.text, k) == key => return None,
                _ => {}
            }
        }
        let text = &self.input.text;
        self.input_properties()
            .iter()
            .find(|p| slice(text, p.key) == key)
            .map(|p| read(text, p.value))
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
    pub fn properties(&self) -> impl Iterator<Item = (&str, Value<'_>)> {
        let text = &self.input.text;
        self.input_properties()
            .iter()
            .map(move |p| (slice(text, p.key), read(text, p.value)))
    }

    /// Set property `key` (added, or overwritten if present).
    pub fn set(&mut self, key: &str, value: impl Into<OwnedValue>) {
        let value = value.into();
        let key = self.out.span(key);
        let value = self.out.value(value.as_value());
        self.out
            .edits
            .push(wit::Edit::Set(wit::Property { key, value }));
    }

    /// Set property `key` to a string without allocating an [`OwnedValue`].
    pub fn set_str(&mut self, key: &str, value: &str) {
        let key = self.out.span(key);
        let value = wit::Value::Text(self.out.span(value));
        self.out
            .edits
            .push(wit::Edit::Set(wit::Property { key, value }));
    }

    /// Remove property `key` if present.
    pub fn remove(&mut self, key: &str) {
        let key = self.out.span(key);
        self.out.edits.push(wit::Edit::Remove(key));
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
        for edit in &self.out.edits[self.first_edit..] {
            match *edit {
                wit::Edit::Set(p) => {
                    let v = read(&self.out.text, p.value).to_owned_value();
                    e.set(slice(&self.out.text, p.key), v);
                }
                wit::Edit::Remove(k) => {
                    let key = slice(&self.out.text, k);
                    e.properties.retain(|(name, _)| name != key);
                }
            }
        }
        e
    }
}

/// Run `f` over every event of `input`, collecting the flat result.
pub(crate) fn run_batch(
    input: &Input,
    mut f: impl FnMut(&mut Event<'_>) -> Outcome,
) -> wit::Processed {
    let mut out = Output::default();
    let mut outcomes = Vec::with_capacity(input.len());
    for raw in &input.events {
        let first_edit = out.edits.len();
        let outcome = {
            let mut event = Event {
                input,
                raw,
                out: &mut out,
                first_edit,
            };
            f(&mut event)
        };
        let edits = out.edits.len() - first_edit;
        let outcome = match outcome {
            Outcome::Keep if edits == 0 => wit::Outcome::Keep,
            Outcome::Keep => wit::Outcome::Modify(wit::Range {
                start: first_edit as u32,
                len: edits as u32,
            }),
            Outcome::Drop => {
                out.edits.truncate(first_edit);
                wit::Outcome::Drop
            }
            Outcome::Replace(event) => {
                out.edits.truncate(first_edit);
                wit::Outcome::Replace(out.push_event(&event))
            }
            Outcome::Split(events) => {
                out.edits.truncate(first_edit);
                let start = out.events.len() as u32;
                for event in &events {
                    out.push_event(event);
                }
                wit::Outcome::Split(wit::Range {
                    start,
                    len: events.len() as u32,
                })
            }
        };
        outcomes.push(outcome);
    }
    wit::Processed {
        outcomes,
        edits: out.edits,
        output: wit::Batch {
            text: out.text.into_bytes(),
            events: out.events,
            properties: out.properties,
        },
    }
}

/// Encode owned events into the flat layout (used by [`crate::testing`]).
pub(crate) fn encode(events: &[NewEvent]) -> wit::Batch {
    let mut out = Output::default();
    for e in events {
        out.push_event(e);
    }
    wit::Batch {
        text: out.text.into_bytes(),
        events: out.events,
        properties: out.properties,
    }
}

/// Decode a flat batch into owned events (used by [`crate::testing`]).
pub(crate) fn decode_event(text: &str, props: &[wit::Property], e: &wit::Event) -> NewEvent {
    let start = e.properties.start as usize;
    let end = start + e.properties.len as usize;
    NewEvent {
        id: slice(text, e.id).to_owned(),
        name: slice(text, e.name).to_owned(),
        timestamp: e.timestamp,
        distinct_id: slice(text, e.distinct_id).to_owned(),
        session_id: e.session_id.map(|s| slice(text, s).to_owned()),
        properties: props
            .get(start..end)
            .unwrap_or(&[])
            .iter()
            .map(|p| {
                (
                    slice(text, p.key).to_owned(),
                    read(text, p.value).to_owned_value(),
                )
            })
            .collect(),
    }
}

/// Read an edit's key and value (used by [`crate::testing`]).
pub(crate) fn read_edit(text: &str, edit: &wit::Edit) -> (String, Option<OwnedValue>) {
    match *edit {
        wit::Edit::Set(p) => (
            slice(text, p.key).to_owned(),
            Some(read(text, p.value).to_owned_value()),
        ),
        wit::Edit::Remove(k) => (slice(text, k).to_owned(), None),
    }
}
