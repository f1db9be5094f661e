//! What the engine produces, numbered for its channels, and where it goes.
//!
//! The engine hands every output of an input to one [`Sink`] once the input
//! has been applied, each with its channel's sequence number. The numbers
//! are engine state ([`Sequencer`]): they continue across a snapshot and
//! restore and are never reused, so a client resuming with `since` gets
//! exactly what it missed, whichever process published it.

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::pattern::PatternOutput;
use crate::pipeline::DeadLetter;
use crate::plugin::registry::Notice;
use crate::window;

/// The channel of events after the stages.
pub const EVENTS: &str = "events";
/// The channel of events a failing stage sent there.
pub const DEAD_LETTERS: &str = "dead-letters";
/// The channel of plugin lifecycle notices.
pub const PLUGINS: &str = "plugins";
/// The channel of events windows could not take.
pub const LATE: &str = window::LATE_CHANNEL;
/// The channel of alert state transitions.
pub const ALERTS: &str = "alerts";

/// One output, numbered.
#[derive(Debug, Clone)]
pub enum Emitted {
    /// Events after the stages, numbered `first_seq..` on `events`.
    Events {
        /// Seq of the first.
        first_seq: u64,
        /// The events, in order.
        events: Vec<Event>,
    },
    /// Events a stage failed on, numbered `first_seq..` on `dead-letters`.
    DeadLetters {
        /// Seq of the first.
        first_seq: u64,
        /// The letters, in order.
        letters: Vec<DeadLetter>,
    },
    /// A window result (on `windows/<name>`) or late event (on `late`).
    Window {
        /// Its seq on its channel.
        seq: u64,
        /// The output.
        output: window::Output,
    },
    /// A plugin lifecycle notice, on `plugins`.
    Plugin {
        /// Its seq.
        seq: u64,
        /// The notice.
        notice: Notice,
    },
    /// A pattern match or timeout (on `patterns/<name>`) or an event a
    /// pattern could not take (on `late`).
    Pattern {
        /// Its seq on its channel.
        seq: u64,
        /// The output.
        output: PatternOutput,
    },
    /// An alert's state transition, on `alerts`.
    Alert {
        /// Its seq.
        seq: u64,
        /// The transition.
        event: crate::alert::AlertEvent,
    },
}

impl Emitted {
    /// The channel this goes to (`windows` is the window's list, to name
    /// `windows/<name>`).
    pub fn channel(&self, windows: &[String]) -> String {
        match self {
            Emitted::Events { .. } => EVENTS.to_owned(),
            Emitted::DeadLetters { .. } => DEAD_LETTERS.to_owned(),
            Emitted::Plugin { .. } => PLUGINS.to_owned(),
            Emitted::Alert { .. } => ALERTS.to_owned(),
            Emitted::Pattern { output, .. } => match output {
                PatternOutput::Result(r) => crate::pattern::channel_name(&r.pattern),
                PatternOutput::Late { .. } => LATE.to_owned(),
            },
            Emitted::Window { output, .. } => match output.stream() {
                window::Stream::Late => LATE.to_owned(),
                window::Stream::Results(i) => windows
                    .get(i)
                    .map_or_else(|| "windows/?".to_owned(), |n| window::channel_name(n)),
            },
        }
    }

    /// Append each message of a result — a window result or late event, a
    /// pattern output, an alert transition — as a `{"channel","data"}` line
    /// (what `serde_json::json!({"channel", "data"})` of [`Emitted::channel`]
    /// and [`Emitted::messages`] serialises to, byte for byte), and return
    /// how many lines. Window and pattern outputs are written straight from
    /// their structs, with no JSON tree; events, dead letters and plugin
    /// notices are not results and write nothing.
    pub fn write_result_lines(&self, windows: &[String], out: &mut String) -> u64 {
        let start = |out: &mut String, channel: &str| {
            out.push_str("{\"channel\":");
            crate::event::write_json_str(out, channel);
            out.push_str(",\"data\":");
        };
        match self {
            Emitted::Window { output, .. } => {
                match output.stream() {
                    window::Stream::Late => start(out, LATE),
                    window::Stream::Results(i) => match windows.get(i) {
                        Some(name) => {
                            // `windows/<name>`, as [`window::channel_name`]
                            // spells it, without building the string.
                            out.push_str("{\"channel\":\"windows/");
                            crate::event::write_json_str_body(out, name);
                            out.push_str("\",\"data\":");
                        }
                        None => start(out, "windows/?"),
                    },
                }
                output.write_json(out);
                out.push_str("}\n");
                1
            }
            Emitted::Pattern { output, .. } => {
                start(out, &self.channel(windows));
                output.write_json(out);
                out.push_str("}\n");
                1
            }
            Emitted::Alert { event, .. } => {
                start(out, ALERTS);
                out.push_str(&event.to_json().to_string());
                out.push_str("}\n");
                1
            }
            Emitted::Events { .. } | Emitted::DeadLetters { .. } | Emitted::Plugin { .. } => 0,
        }
    }

    /// Each message as `(seq, JSON)`, as subscribers receive its data.
    pub fn messages(&self) -> Vec<(u64, serde_json::Value)> {
        match self {
            Emitted::Events { first_seq, events } => (*first_seq..)
                .zip(events)
                .map(|(s, e)| (s, serde_json::to_value(e).unwrap_or_default()))
                .collect(),
            Emitted::DeadLetters { first_seq, letters } => (*first_seq..)
                .zip(letters)
                .map(|(s, d)| (s, dead_letter_json(d)))
                .collect(),
            Emitted::Window { seq, output } => vec![(*seq, output.to_json())],
            Emitted::Pattern { seq, output } => vec![(*seq, output.to_json())],
            Emitted::Alert { seq, event } => vec![(*seq, event.to_json())],
            Emitted::Plugin { seq, notice } => {
                vec![(*seq, serde_json::to_value(notice).unwrap_or_default())]
            }
        }
    }
}

/// A dead letter as published: `{"stage", "reason", "event"}`.
pub fn dead_letter_json(d: &DeadLetter) -> serde_json::Value {
    serde_json::json!({"stage": d.stage, "reason": d.reason, "event": d.event})
}

/// Where outputs go: the hub in `eddy serve`, files in `eddy pipe`, a list
/// in tests and `eddy plugin test`.
pub trait Sink {
    /// Take one output.
    fn emit(&mut self, out: Emitted);
}

impl Sink for Vec<Emitted> {
    fn emit(&mut self, out: Emitted) {
        self.push(out);
    }
}

/// The last sequence number of every engine channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequencer {
    events: u64,
    dead_letters: u64,
    plugins: u64,
    late: u64,
    alerts: u64,
    /// Per window, in configuration order.
    windows: Vec<u64>,
    /// Per pattern, by name (patterns come and go at run time).
    patterns: std::collections::BTreeMap<String, u64>,
    /// What a channel that appears later (a window added on restore)
    /// starts after.
    before_first: u64,
}

impl Sequencer {
    /// Channels whose first message gets `first_seq` (at least 1).
    pub fn new(first_seq: u64, windows: usize) -> Sequencer {
        let before_first = first_seq.max(1) - 1;
        Sequencer {
            events: before_first,
            dead_letters: before_first,
            plugins: before_first,
            late: before_first,
            alerts: before_first,
            windows: vec![before_first; windows],
            patterns: std::collections::BTreeMap::new(),
            before_first,
        }
    }

    /// The numbers saved under window names `saved`, for windows `now`
    /// (a restore under a configuration with other windows: a new one starts
    /// fresh, a removed one's numbers are dropped).
    pub fn remap(mut self, saved: &[String], now: &[String]) -> Sequencer {
        self.windows = now
            .iter()
            .map(|name| {
                saved
                    .iter()
                    .position(|s| s == name)
                    .and_then(|i| self.windows.get(i).copied())
                    .unwrap_or(self.before_first)
            })
            .collect();
        self
    }

    fn take(counter: &mut u64, n: u64) -> u64 {
        let first = *counter + 1;
        *counter += n;
        first
    }

    /// Seqs for `n` events: the first.
    pub fn events(&mut self, n: usize) -> u64 {
        Self::take(&mut self.events, n as u64)
    }

    /// Seqs for `n` dead letters: the first.
    pub fn dead_letters(&mut self, n: usize) -> u64 {
        Self::take(&mut self.dead_letters, n as u64)
    }

    /// The seq of a plugin notice.
    pub fn plugin(&mut self) -> u64 {
        Self::take(&mut self.plugins, 1)
    }

    /// The seq of an alert transition.
    pub fn alert(&mut self) -> u64 {
        Self::take(&mut self.alerts, 1)
    }

    /// The seq of a window output.
    pub fn window(&mut self, output: &window::Output) -> u64 {
        match output.stream() {
            window::Stream::Late => Self::take(&mut self.late, 1),
            window::Stream::Results(i) => match self.windows.get_mut(i) {
                Some(c) => Self::take(c, 1),
                None => 0,
            },
        }
    }

    /// The seq of a pattern output.
    pub fn pattern(&mut self, output: &PatternOutput) -> u64 {
        match output {
            PatternOutput::Late { .. } => Self::take(&mut self.late, 1),
            PatternOutput::Result(r) => {
                let before_first = self.before_first;
                let c = self
                    .patterns
                    .entry(r.pattern.to_string())
                    .or_insert(before_first);
                Self::take(c, 1)
            }
        }
    }

    /// The last seq of pattern `name`'s channel.
    pub fn pattern_head(&self, name: &str) -> u64 {
        self.patterns
            .get(name)
            .copied()
            .unwrap_or(self.before_first)
    }

    /// The last seq of every channel, by name (`windows` names the windows;
    /// patterns that published anything are included).
    pub fn heads(&self, windows: &[String]) -> Vec<(String, u64)> {
        let mut heads = vec![
            (EVENTS.to_owned(), self.events),
            (DEAD_LETTERS.to_owned(), self.dead_letters),
            (PLUGINS.to_owned(), self.plugins),
            (LATE.to_owned(), self.late),
            (ALERTS.to_owned(), self.alerts),
        ];
        heads.extend(
            windows
                .iter()
                .zip(&self.windows)
                .map(|(n, s)| (window::channel_name(n), *s)),
        );
        heads.extend(
            self.patterns
                .iter()
                .map(|(n, s)| (crate::pattern::channel_name(n), *s)),
        );
        heads
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::window::groups::{Grouping, KeyPart};
    use crate::window::result::{LateEvent, LateReason, Schema, WindowResult};

    /// What `eddy pipe` and `eddy replay` wrote before results were
    /// written directly.
    fn through_json(out: &Emitted, windows: &[String]) -> String {
        let channel = out.channel(windows);
        out.messages()
            .into_iter()
            .map(|(_, data)| {
                format!(
                    "{}\n",
                    serde_json::json!({"channel": channel, "data": data})
                )
            })
            .collect()
    }

    #[test]
    fn result_lines_are_what_the_json_tree_serialised_to() {
        let windows = vec!["per \"key\"".to_owned(), "w2".to_owned()];
        let schema = |index: usize| {
            Arc::new(Schema {
                window: windows[index].clone(),
                index,
                grouping: Grouping::new(vec![
                    crate::filter::FieldPath::parse("properties.key", "group_by").unwrap(),
                ]),
                outputs: vec!["count".into(), "sum(properties.v)".into()],
            })
        };
        let event = Event {
            id: "e1".into(),
            name: "n".into(),
            timestamp: 5,
            distinct_id: "u".into(),
            session_id: Some("s".into()),
            properties: vec![("v".into(), crate::event::Value::Int(1))],
        };
        let outputs = vec![
            Emitted::Window {
                seq: 1,
                output: window::Output::Result(Arc::new(WindowResult {
                    schema: schema(0),
                    kind: window::ResultKind::Final,
                    start: 0,
                    end: 1000,
                    group: vec![KeyPart::Str("k1".into())].into(),
                    values: vec![crate::event::Value::Int(2), crate::event::Value::Float(1.5)]
                        .into(),
                    revision: 0,
                    replaces: vec![],
                    state: None,
                })),
            },
            Emitted::Window {
                seq: 2,
                output: window::Output::Late(Box::new(LateEvent {
                    schema: schema(1),
                    reason: LateReason::Late {
                        watermark: 10,
                        lateness_ms: 5,
                    },
                    event: event.clone(),
                })),
            },
            Emitted::Pattern {
                seq: 3,
                output: PatternOutput::Late {
                    pattern: Arc::from("funnel"),
                    reason: LateReason::Future { max_timestamp: 9 },
                    event: Box::new(event.clone()),
                },
            },
            Emitted::Pattern {
                seq: 4,
                output: PatternOutput::Late {
                    pattern: Arc::from("funnel"),
                    reason: LateReason::Late {
                        watermark: 9,
                        lateness_ms: 1,
                    },
                    event: Box::new(event),
                },
            },
        ];
        for out in &outputs {
            let mut text = String::new();
            assert_eq!(out.write_result_lines(&windows, &mut text), 1);
            assert_eq!(text, through_json(out, &windows));
        }
        let events = Emitted::Events {
            first_seq: 1,
            events: vec![],
        };
        let mut text = String::new();
        assert_eq!(events.write_result_lines(&windows, &mut text), 0);
        assert!(text.is_empty());
    }
}
