//! What windows produce, as typed values: results (early, final,
//! correction) and events they could not take. They travel typed through
//! the engine to its sink, so later operators (alert rules) read values
//! without parsing JSON; they become JSON only when published.

use std::sync::Arc;

use serde_json::{Map, Value as Json, json};

use super::groups::{GroupKey, Grouping};
use super::operator::ResultKind;
use crate::event::{Event, Value};

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

    /// The published form:
    /// `{"window","kind","start","end","group","values"[,"revision"][,"replaces"]}`.
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
        Json::Object(m)
    }
}

/// Why a window could not take an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateReason {
    /// Its window closed more than the allowed lateness ago.
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
    /// The published form: `{"window","reason","watermark","lateness_ms","event"}`
    /// or `{"window","reason":"future","max_timestamp","event"}`.
    pub fn to_json(&self) -> Json {
        match self.reason {
            LateReason::Late {
                watermark,
                lateness_ms,
            } => json!({
                "window": self.schema.window,
                "reason": "late",
                "watermark": watermark,
                "lateness_ms": lateness_ms,
                "event": self.event,
            }),
            LateReason::Future { max_timestamp } => json!({
                "window": self.schema.window,
                "reason": "future",
                "max_timestamp": max_timestamp,
                "event": self.event,
            }),
        }
    }
}
