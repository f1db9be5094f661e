//! What windows produce, as typed values: results (early, final,
//! correction) and events they could not take. They travel typed through
//! the engine to its sink, so later operators (alert rules) read values
//! without parsing JSON; they become JSON only when published.

use std::sync::Arc;

use serde_json::{Map, Value as Json, json};

use super::groups::{GroupKey, Grouping};
use super::operator::ResultKind;
use crate::event::{Event, Value, push_number, write_json_str};

/// Append the object of `names[i]: values[i]` as a `serde_json::Map`
/// (insertion order) collected from those pairs serialises: a repeated
/// name keeps its first place and takes its last value. Pairs past the
/// shorter list are left out, as `zip` leaves them out.
pub(crate) fn write_json_object<T>(
    out: &mut String,
    names: &[&str],
    values: &[T],
    write: impl Fn(&T, &mut String),
) {
    out.push('{');
    let n = names.len().min(values.len());
    let mut first = true;
    for (i, name) in names.iter().take(n).enumerate() {
        if names.iter().take(i).any(|earlier| earlier == name) {
            continue;
        }
        let last = (i..n)
            .rev()
            .find(|&j| names.get(j) == Some(name))
            .unwrap_or(i);
        if !first {
            out.push(',');
        }
        first = false;
        write_json_str(out, name);
        out.push(':');
        if let Some(v) = values.get(last) {
            write(v, out);
        }
    }
    out.push('}');
}

/// Append `n` as serde_json writes it.
pub(crate) fn push_i64(out: &mut String, n: i64) {
    use serde_json::ser::{CompactFormatter, Formatter as _};
    push_number(out, |w| CompactFormatter.write_i64(w, n));
}

/// Names a result needs to render itself: the window, its dimensions and
/// its aggregates' output names. One per window, shared by its results.
#[derive(Debug)]
pub struct Schema {
    /// The window's name.
    pub window: String,
    /// Configuration order of the window (its `windows/<name>` channel).
    pub index: usize,
    /// The dimensions.
    pub grouping: Grouping,
    /// The aggregates' output names, in configuration order.
    pub outputs: Vec<String>,
}

/// One result of one group of one window instance.
#[derive(Debug, Clone)]
pub struct WindowResult {
    /// Which window, and how to name things.
    pub schema: Arc<Schema>,
    /// Early, final or correction.
    pub kind: ResultKind,
    /// Window start (ms, inclusive).
    pub start: i64,
    /// Window end (ms, exclusive).
    pub end: i64,
    /// The group.
    pub group: GroupKey,
    /// The aggregates' values, in [`Schema::outputs`] order.
    pub values: Box<[Value]>,
    /// Corrections published for this group before this one (0 for early
    /// and final results).
    pub revision: u32,
    /// For a session merge: the `[start, end)` of results this one
    /// supersedes.
    pub replaces: Vec<(i64, i64)>,
    /// The group's encoded accumulator, on final results of a window with
    /// `partials = true` (see [`super::merge`]).
    pub state: Option<Box<str>>,
}

impl WindowResult {
    /// The window's name.
    pub fn window(&self) -> &str {
        &self.schema.window
    }

    /// The value of aggregate `name`, if the window computes it.
    pub fn value(&self, name: &str) -> Option<&Value> {
        let i = self.schema.outputs.iter().position(|o| o == name)?;
        self.values.get(i)
    }

    /// The group as `{dimension: value}`.
    pub fn group_json(&self) -> Json {
        self.schema.grouping.to_json(&self.group)
    }

    /// Append the published form (what [`WindowResult::to_json`]
    /// serialises to, byte for byte), written directly: `eddy pipe` and
    /// `eddy replay` write one of these per group per window, often one per
    /// input event, and a JSON tree per result cost more than the window.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"window\":");
        write_json_str(out, &self.schema.window);
        out.push_str(",\"kind\":\"");
        out.push_str(self.kind.as_str());
        out.push_str("\",\"start\":");
        push_i64(out, self.start);
        out.push_str(",\"end\":");
        push_i64(out, self.end);
        out.push_str(",\"group\":");
        self.schema.grouping.write_json(&self.group, out);
        out.push_str(",\"values\":");
        let names: Vec<&str> = self.schema.outputs.iter().map(String::as_str).collect();
        let values: Vec<&Value> = self.values.iter().collect();
        write_json_object(out, &names, &values, |v, out| v.write_json(out));
        if self.kind == ResultKind::Correction {
            out.push_str(",\"revision\":");
            push_i64(out, i64::from(self.revision));
        }
        if !self.replaces.is_empty() {
            out.push_str(",\"replaces\":[");
            for (i, (s, e)) in self.replaces.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"start\":");
                push_i64(out, *s);
                out.push_str(",\"end\":");
                push_i64(out, *e);
                out.push('}');
            }
            out.push(']');
        }
        if let Some(state) = &self.state {
            out.push_str(",\"state\":");
            write_json_str(out, state);
        }
        out.push('}');
    }

    /// The published form:
    /// `{"window","kind","start","end","group","values"[,"revision"][,"replaces"][,"state"]}`.
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("window".into(), Json::from(self.schema.window.as_str()));
        m.insert("kind".into(), Json::from(self.kind.as_str()));
        m.insert("start".into(), Json::from(self.start));
        m.insert("end".into(), Json::from(self.end));
        m.insert("group".into(), self.group_json());
        let values = self
            .schema
            .outputs
            .iter()
            .zip(self.values.iter())
            .map(|(name, v)| (name.clone(), v.to_json_value()))
            .collect();
        m.insert("values".into(), Json::Object(values));
        if self.kind == ResultKind::Correction {
            m.insert("revision".into(), Json::from(self.revision));
        }
        if !self.replaces.is_empty() {
            let list = self
                .replaces
                .iter()
                .map(|(s, e)| json!({"start": s, "end": e}))
                .collect();
            m.insert("replaces".into(), Json::Array(list));
        }
        if let Some(state) = &self.state {
            m.insert("state".into(), Json::from(&**state));
        }
        Json::Object(m)
    }
}

/// Why a window or a pattern could not take an event (the event-time
/// rules they share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateReason {
    /// Older than the watermark allows: its window closed more than the
    /// allowed lateness ago, or a pattern's watermark had passed it.
    Late {
        /// The watermark when it arrived.
        watermark: i64,
        /// How far behind the watermark its (possibly clamped) timestamp
        /// was.
        lateness_ms: i64,
    },
    /// Its timestamp was beyond the future-skew cap.
    Future {
        /// The cap (`wall + future_skew`).
        max_timestamp: i64,
    },
}

impl LateReason {
    /// Append the reason's fields as published: `,"reason":"late",
    /// "watermark":…,"lateness_ms":…` or `,"reason":"future",
    /// "max_timestamp":…`.
    pub fn write_fields(&self, out: &mut String) {
        match *self {
            LateReason::Late {
                watermark,
                lateness_ms,
            } => {
                out.push_str(",\"reason\":\"late\",\"watermark\":");
                push_i64(out, watermark);
                out.push_str(",\"lateness_ms\":");
                push_i64(out, lateness_ms);
            }
            LateReason::Future { max_timestamp } => {
                out.push_str(",\"reason\":\"future\",\"max_timestamp\":");
                push_i64(out, max_timestamp);
            }
        }
    }

    /// Insert the same fields into `m`, in the same order.
    pub fn insert_fields(&self, m: &mut serde_json::Map<String, Json>) {
        match *self {
            LateReason::Late {
                watermark,
                lateness_ms,
            } => {
                m.insert("reason".into(), json!("late"));
                m.insert("watermark".into(), json!(watermark));
                m.insert("lateness_ms".into(), json!(lateness_ms));
            }
            LateReason::Future { max_timestamp } => {
                m.insert("reason".into(), json!("future"));
                m.insert("max_timestamp".into(), json!(max_timestamp));
            }
        }
    }
}

/// An event a window could not take, for the `late` channel.
#[derive(Debug, Clone)]
pub struct LateEvent {
    /// The window.
    pub schema: Arc<Schema>,
    /// Why.
    pub reason: LateReason,
    /// The event, as the window saw it.
    pub event: Event,
}

impl LateEvent {
    /// Append the published form (what [`LateEvent::to_json`] serialises
    /// to, byte for byte), written directly.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"window\":");
        write_json_str(out, &self.schema.window);
        self.reason.write_fields(out);
        out.push_str(",\"event\":");
        self.event.write_json(out);
        out.push('}');
    }

    /// The published form: `{"window","reason","watermark","lateness_ms","event"}`
    /// or `{"window","reason":"future","max_timestamp","event"}`.
    pub fn to_json(&self) -> Json {
        let mut m = serde_json::Map::new();
        m.insert("window".into(), json!(self.schema.window));
        self.reason.insert_fields(&mut m);
        m.insert("event".into(), json!(self.event));
        Json::Object(m)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::filter::FieldPath;
    use compact_str::CompactString;

    fn schema(paths: &[&str], outputs: &[&str]) -> Arc<Schema> {
        Arc::new(Schema {
            window: "w\"1".into(),
            index: 0,
            grouping: Grouping::new(
                paths
                    .iter()
                    .map(|p| FieldPath::parse(p, "group_by").unwrap())
                    .collect(),
            ),
            outputs: outputs.iter().map(|o| o.to_string()).collect(),
        })
    }

    fn event() -> Event {
        Event {
            id: "e\n1".into(),
            name: "$pageview".into(),
            timestamp: 1_700_000_000_123,
            distinct_id: "ü".into(),
            session_id: None,
            properties: vec![
                (CompactString::from("f"), Value::Float(0.1)),
                (
                    CompactString::from("n"),
                    Value::Json("{\"a\":[1,2.5]}".into()),
                ),
            ],
        }
    }

    #[test]
    fn results_written_directly_are_their_json_byte_for_byte() {
        use super::super::groups::KeyPart;
        let parts = [
            KeyPart::Missing,
            KeyPart::Null,
            KeyPart::Bool(true),
            KeyPart::Int(-7),
            KeyPart::Float(2.5f64.to_bits()),
            KeyPart::Float(1e300f64.to_bits()),
            KeyPart::Str("k\"\\\u{1}é".into()),
            KeyPart::Json("{\"b\":1,\"a\":[true,null,1.0]}".into()),
            KeyPart::Json("not json".into()),
            KeyPart::Overflow,
        ];
        let values = [
            Value::Int(3),
            Value::Float(0.30000000000000004),
            Value::Float(f64::NAN),
            Value::Null,
            Value::Str("x".into()),
        ];
        for (i, part) in parts.iter().enumerate() {
            for (kind, revision, replaces) in [
                (ResultKind::Final, 0, vec![]),
                (ResultKind::Early, 0, vec![]),
                (ResultKind::Correction, 2, vec![(1, 2), (-3, 4)]),
            ] {
                // Two dimensions, one repeated (a map keeps one), and
                // aggregates whose names repeat too.
                let r = WindowResult {
                    schema: schema(
                        &["properties.key", "name", "properties.key"],
                        &["count", "sum", "count", "avg", "max"],
                    ),
                    kind,
                    start: -1_000,
                    end: i as i64 * 1_000,
                    group: vec![part.clone(), KeyPart::Str("n".into()), part.clone()].into(),
                    values: values.to_vec().into(),
                    revision,
                    replaces,
                    state: None,
                };
                let mut text = String::new();
                r.write_json(&mut text);
                assert_eq!(text, r.to_json().to_string(), "{part:?} {kind:?}");
            }
        }
        for reason in [
            LateReason::Late {
                watermark: 5,
                lateness_ms: -2,
            },
            LateReason::Future {
                max_timestamp: i64::MAX,
            },
        ] {
            let l = LateEvent {
                schema: schema(&[], &[]),
                reason,
                event: event(),
            };
            let mut text = String::new();
            l.write_json(&mut text);
            assert_eq!(text, l.to_json().to_string());
        }
    }
}
