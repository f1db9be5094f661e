//! Translation between host [`Event`]s and the WIT contract's flat batch
//! layout (see `wit/types.wit`), in both directions.
//!
//! Everything a plugin returns is checked here: outcome count, list ranges,
//! span bounds and UTF-8 boundaries. A plugin bug becomes a failed batch with
//! a message, never a host panic.

use compact_str::CompactString;

use super::bindings::eddy::plugin::types as wit;
use crate::event::{Event, Value};

/// A plugin result that breaks the contract.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AbiError {
    /// Wrong number of outcomes.
    #[error("plugin returned {got} outcomes for {expected} events")]
    OutcomeCount {
        /// Events in the batch.
        expected: usize,
        /// Outcomes returned.
        got: usize,
    },
    /// A range or index past the end of a list.
    #[error("plugin returned an out-of-range {what} ({start}+{len} of {available})")]
    BadRange {
        /// Which list.
        what: &'static str,
        /// Start index.
        start: u32,
        /// Length.
        len: u32,
        /// List length.
        available: usize,
    },
    /// A span outside the text or not on a character boundary.
    #[error(
        "plugin returned a text span {start}+{len} that is out of bounds or splits a UTF-8 character"
    )]
    BadSpan {
        /// Start byte.
        start: u32,
        /// Length.
        len: u32,
    },
    /// The output text is not UTF-8.
    #[error("plugin returned text that is not UTF-8")]
    NotUtf8,
}

/// Reusable buffers for encoding batches, so a stage allocates nothing per
/// batch once warmed up.
#[derive(Default)]
pub struct Encoder {
    batch: Option<wit::Batch>,
}

fn push_span(text: &mut Vec<u8>, s: &str) -> wit::Span {
    let start = text.len() as u32;
    text.extend_from_slice(s.as_bytes());
    wit::Span {
        start,
        len: s.len() as u32,
    }
}

impl Encoder {
    /// Lay `events` out as one flat batch.
    pub fn encode(&mut self, events: &[Event]) -> &wit::Batch {
        let batch = self.batch.get_or_insert_with(|| wit::Batch {
            text: Vec::new(),
            events: Vec::new(),
            properties: Vec::new(),
        });
        batch.text.clear();
        batch.events.clear();
        batch.properties.clear();
        for e in events {
            let start = batch.properties.len() as u32;
            for (k, v) in &e.properties {
                let key = push_span(&mut batch.text, k);
                let value = match v {
                    Value::Null => wit::Value::Null,
                    Value::Bool(b) => wit::Value::Boolean(*b),
                    Value::Int(i) => wit::Value::Integer(*i),
                    Value::Float(f) => wit::Value::Float(*f),
                    Value::Str(s) => wit::Value::Text(push_span(&mut batch.text, s)),
                    Value::Json(s) => wit::Value::Json(push_span(&mut batch.text, s)),
                };
                batch.properties.push(wit::Property { key, value });
            }
            let id = push_span(&mut batch.text, &e.id);
            let name = push_span(&mut batch.text, &e.name);
            let distinct_id = push_span(&mut batch.text, &e.distinct_id);
            let session_id = e
                .session_id
                .as_deref()
                .map(|s| push_span(&mut batch.text, s));
            batch.events.push(wit::Event {
                id,
                name,
                timestamp: e.timestamp,
                distinct_id,
                session_id,
                properties: wit::Range {
                    start,
                    len: e.properties.len() as u32,
                },
            });
        }
        batch
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

struct Output<'a> {
    text: &'a str,
    out: &'a wit::Batch,
}

impl Output<'_> {
    fn str(&self, s: wit::Span) -> Result<CompactString, AbiError> {
        let start = s.start as usize;
        self.text
            .get(start..start + s.len as usize)
            .map(CompactString::from)
            .ok_or(AbiError::BadSpan {
                start: s.start,
                len: s.len,
            })
    }

    fn check(&self, s: wit::Span) -> Result<(), AbiError> {
        let start = s.start as usize;
        match self.text.get(start..start.saturating_add(s.len as usize)) {
            Some(_) => Ok(()),
            None => Err(AbiError::BadSpan {
                start: s.start,
                len: s.len,
            }),
        }
    }

    fn check_value(&self, v: wit::Value) -> Result<(), AbiError> {
        match v {
            wit::Value::Text(s) | wit::Value::Json(s) => self.check(s),
            _ => Ok(()),
        }
    }

    fn check_event(&self, index: usize) -> Result<(), AbiError> {
        let raw = self.raw_event(index)?;
        for p in slice(&self.out.properties, raw.properties, "property range")? {
            self.check(p.key)?;
            self.check_value(p.value)?;
        }
        self.check(raw.id)?;
        self.check(raw.name)?;
        self.check(raw.distinct_id)?;
        raw.session_id.map(|s| self.check(s)).transpose()?;
        Ok(())
    }

    fn raw_event(&self, index: usize) -> Result<&wit::Event, AbiError> {
        self.out.events.get(index).ok_or(AbiError::BadRange {
            what: "event index",
            start: index as u32,
            len: 1,
            available: self.out.events.len(),
        })
    }

    fn value(&self, v: wit::Value) -> Result<Value, AbiError> {
        Ok(match v {
            wit::Value::Null => Value::Null,
            wit::Value::Boolean(b) => Value::Bool(b),
            wit::Value::Integer(i) => Value::Int(i),
            wit::Value::Float(f) if f.is_finite() => Value::Float(f),
            wit::Value::Float(_) => Value::Null,
            wit::Value::Text(s) => Value::Str(self.str(s)?),
            wit::Value::Json(s) => Value::Json(self.str(s)?.into()),
        })
    }

    fn event(&self, index: usize, fallback_id: CompactString) -> Result<Event, AbiError> {
        let raw = self.raw_event(index)?;
        let props = slice(&self.out.properties, raw.properties, "property range")?;
        let mut properties = Vec::with_capacity(props.len());
        for p in props {
            properties.push((self.str(p.key)?, self.value(p.value)?));
        }
        let id = self.str(raw.id)?;
        Ok(Event {
            id: if id.is_empty() { fallback_id } else { id },
            name: self.str(raw.name)?,
            timestamp: raw.timestamp,
            distinct_id: self.str(raw.distinct_id)?,
            session_id: raw.session_id.map(|s| self.str(s)).transpose()?,
            properties,
        })
    }
}

fn slice<'a, T>(items: &'a [T], r: wit::Range, what: &'static str) -> Result<&'a [T], AbiError> {
    let start = r.start as usize;
    items
        .get(start..start.saturating_add(r.len as usize))
        .ok_or(AbiError::BadRange {
            what,
            start: r.start,
            len: r.len,
            available: items.len(),
        })
}

/// Apply a processor's result to the batch it was given. On error nothing
/// is lost: the input events come back untouched with the error.
pub fn apply(
    events: Vec<Event>,
    result: &wit::Processed,
    out: &mut Vec<Event>,
) -> Result<Applied, (AbiError, Vec<Event>)> {
    if result.outcomes.len() != events.len() {
        let err = AbiError::OutcomeCount {
            expected: events.len(),
            got: result.outcomes.len(),
        };
        return Err((err, events));
    }
    let Ok(text) = std::str::from_utf8(&result.output.text) else {
        return Err((AbiError::NotUtf8, events));
    };
    let output = Output {
        text,
        out: &result.output,
    };
    // Validate fully before moving any event, so a bad result loses nothing.
    if let Err(e) = validate(&output, result) {
        return Err((e, events));
    }
    let mut applied = Applied::default();
    let start_len = out.len();
    for (mut event, outcome) in events.into_iter().zip(&result.outcomes) {
        let step = (|| -> Result<(), AbiError> {
            match *outcome {
                wit::Outcome::Keep => out.push(event),
                wit::Outcome::Drop => applied.dropped += 1,
                wit::Outcome::Modify(r) => {
                    for edit in slice(&result.edits, r, "edit range")? {
                        match *edit {
                            wit::Edit::Set(p) => {
                                event.set(output.str(p.key)?, output.value(p.value)?)
                            }
                            wit::Edit::Remove(k) => event.remove(&output.str(k)?),
                        }
                    }
                    applied.modified += 1;
                    out.push(event);
                }
                wit::Outcome::Replace(i) => {
                    let id = event.id.clone();
                    out.push(output.event(i as usize, id)?);
                    applied.created += 1;
                }
                wit::Outcome::Split(r) => {
                    slice(&result.output.events, r, "split range")?;
                    for k in 0..r.len {
                        let id = compact_str::format_compact!("{}-{}", event.id, k);
                        out.push(output.event((r.start + k) as usize, id)?);
                    }
                    if r.len == 0 {
                        applied.dropped += 1;
                    }
                    applied.created += u64::from(r.len);
                }
            }
            Ok(())
        })();
        if let Err(e) = step {
            // Unreachable: `validate` checked every range and span this loop
            // reads. Should it ever happen, undo this batch's partial output
            // rather than emit half a batch; the caller counts the batch as
            // failed.
            out.truncate(start_len);
            return Err((e, Vec::new()));
        }
    }
    Ok(applied)
}

fn validate(output: &Output<'_>, result: &wit::Processed) -> Result<(), AbiError> {
    for outcome in &result.outcomes {
        match *outcome {
            wit::Outcome::Keep | wit::Outcome::Drop => {}
            wit::Outcome::Modify(r) => {
                for edit in slice(&result.edits, r, "edit range")? {
                    match *edit {
                        wit::Edit::Set(p) => {
                            output.check(p.key)?;
                            output.check_value(p.value)?;
                        }
                        wit::Edit::Remove(k) => output.check(k)?,
                    }
                }
            }
            wit::Outcome::Replace(i) => output.check_event(i as usize)?,
            wit::Outcome::Split(r) => {
                slice(&result.output.events, r, "split range")?;
                for k in 0..r.len {
                    output.check_event((r.start + k) as usize)?;
                }
            }
        }
    }
    Ok(())
}
