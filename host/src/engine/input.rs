//! The engine's inputs, and their recorded form.
//!
//! Everything that changes what the engine produces arrives as an
//! [`Input`]: batches of events with the wall time they arrived at, ticks
//! of wall time, and plugin version changes. A run is a function of its
//! inputs (and its configuration and plugin files), so writing the inputs
//! down ([`Recorder`]) lets any run be replayed exactly ([`read_record`]).
//!
//! A record is NDJSON: a header line, then one line per input:
//!
//! ```text
//! {"eddy_record":1,"first_seq":1764979200000001,"seed":123,"plugins":{"ua-enricher":"9f2c…"}}
//! {"batch":{"source":0,"position":1000,"wall_ms":1764979200123,"events":[{...},...]}}
//! {"tick":{"wall_ms":1764979200200}}
//! {"plugin":{"plugin":"ua-enricher","version":{"select":"41aa…"},"notice":{...}}}
//! {"finish":{}}
//! ```
//!
//! Every plugin version a record names is copied next to it, into
//! `<record>.plugins/<hash>.wasm`, so a replay runs the same code even after
//! the plugins folder changed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::time::SourceId;
use crate::event::Event;
use crate::plugin::registry::Notice;

/// Version of the record format.
pub const RECORD_VERSION: u64 = 1;

/// Events that arrived together.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    /// Which source: 0 for HTTP ingest and files.
    pub source: SourceId,
    /// Where the source's log stands after this batch (events accepted so
    /// far for HTTP ingest, lines read for a file): what a restored engine
    /// resumes after.
    pub position: u64,
    /// Wall time the batch arrived at; `None` when the driver has no clock
    /// (a virtual-clock replay before its first `{"$wall": MS}` line).
    pub wall_ms: Option<i64>,
    /// The events, in arrival order.
    pub events: Vec<Event>,
}

/// Where a Kafka partition stands: the offset of the next record to read
/// (Kafka's convention for committed offsets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Where the source read from: the partition's next offset before
    /// these records. A batch applies only if this is where the engine
    /// stands (or the engine has not seen the partition), so a batch that
    /// was lost (not logged) cannot be skipped over silently.
    pub from: i64,
    /// The next offset to read after these records.
    pub next: i64,
}

/// A Kafka record the decoder refused: it becomes a dead letter naming
/// where it is, and its partition keeps flowing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// Why the decoder refused it (names the field).
    pub reason: String,
    /// The start of the record's value, as text (lossy UTF-8).
    pub value: String,
}

/// Records consumed from Kafka: the valid ones as a batch (its `source` is
/// the Kafka source's id, its `position` the records it has consumed),
/// the refused ones, and where each partition now stands. Applying it
/// moves the engine's offsets, so a checkpoint holds exactly the offsets
/// its state covers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KafkaBatch {
    /// The valid events.
    pub batch: Batch,
    /// Partial window results (a source with `format = "partials"`), for
    /// the windows with `merge_from`.
    pub partials: Vec<crate::window::merge::Partial>,
    /// The records refused, in offset order per partition.
    pub rejected: Vec<Rejected>,
    /// The next offset of every partition these records came from.
    pub offsets: Vec<PartitionOffset>,
}

/// What a plugin input does to the version its stages run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionChange {
    /// Nothing (the input only carries a notice, e.g. a failed load).
    Keep,
    /// Run the version with this content hash from the next batch on.
    Select(String),
    /// No version any more (the file was removed).
    Remove,
}

/// A plugin's selected version changed, or a lifecycle notice about it is
/// to be published on the `plugins` channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginChange {
    /// The plugin name.
    pub plugin: String,
    /// What changes.
    pub version: VersionChange,
    /// What happened, for the `plugins` channel.
    #[serde(default)]
    pub notice: Option<Notice>,
}

/// One thing that happens to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Events arrived.
    Batch(Batch),
    /// Records arrived from a Kafka source.
    Kafka(KafkaBatch),
    /// Wall time passed with no events (the server sends one every 100 ms):
    /// idle watermarks advance, early results fire.
    Tick {
        /// The wall time now.
        wall_ms: i64,
        /// For a tick read from a source's log (a `{"$wall": MS}` line of a
        /// file): the source and where its log stands after it, so a
        /// restored engine resumes after it too.
        position: Option<(SourceId, u64)>,
    },
    /// A plugin version went live, was rolled back or removed.
    Plugin(PluginChange),
    /// The configuration file was reloaded (`SIGHUP`, `POST
    /// /v1/admin/reload`): its stages and declared patterns apply from the
    /// next input on.
    Reconfigure(Reconfigure),
    /// The input ended (a file, a replay): every open window fires.
    Finish,
}

/// A reloaded configuration: its text (what a record keeps) and the
/// configuration parsed from it.
#[derive(Debug, Clone)]
pub struct Reconfigure {
    /// Where the text came from (a path), for messages.
    pub origin: String,
    /// The file's text, as read (before `${VAR}` interpolation).
    pub text: String,
    /// The validated configuration.
    pub config: std::sync::Arc<crate::config::Config>,
}

impl PartialEq for Reconfigure {
    fn eq(&self, other: &Self) -> bool {
        self.origin == other.origin && self.text == other.text
    }
}

impl Reconfigure {
    /// Parse `text`, interpolating with this process's environment.
    pub fn parse(origin: &str, text: &str) -> Result<Reconfigure, crate::config::ConfigError> {
        let config = crate::config::Config::parse(text, origin, &|k| std::env::var(k).ok())?;
        Ok(Reconfigure {
            origin: origin.to_owned(),
            text: text.to_owned(),
            config: std::sync::Arc::new(config),
        })
    }
}

/// One line of an event file that feeds the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum FileLine {
    /// An event, from this (1-based) line.
    Event(u64, Event),
    /// A `{"$wall": MS}` line: the wall clock moves to MS, with a tick.
    Wall(u64, i64),
}

/// The inputs a whole event file stands for, as `eddy pipe --clock
/// virtual` and `eddy plugin test` feed them: events in batches of
/// `batch_size`, a `$wall` line ending the batch before it and ticking the
/// engine, every batch arriving at the last `$wall` time (none before the
/// first), and the end of the input at the end. Batch positions are line
/// numbers.
pub fn file_inputs(lines: impl IntoIterator<Item = FileLine>, batch_size: usize) -> Vec<Input> {
    let batch_size = batch_size.max(1);
    let mut inputs = Vec::new();
    let mut wall: Option<i64> = None;
    let mut events: Vec<Event> = Vec::new();
    let mut position = 0;
    let flush = |events: &mut Vec<Event>, inputs: &mut Vec<Input>, wall, position| {
        if !events.is_empty() {
            inputs.push(Input::Batch(Batch {
                source: 0,
                position,
                wall_ms: wall,
                events: std::mem::take(events),
            }));
        }
    };
    for line in lines {
        match line {
            FileLine::Event(n, e) => {
                events.push(e);
                position = n;
                if events.len() >= batch_size {
                    flush(&mut events, &mut inputs, wall, position);
                }
            }
            FileLine::Wall(n, ms) => {
                flush(&mut events, &mut inputs, wall, position);
                wall = Some(ms);
                position = n;
                inputs.push(Input::Tick {
                    wall_ms: ms,
                    position: Some((0, n)),
                });
            }
        }
    }
    flush(&mut events, &mut inputs, wall, position);
    inputs.push(Input::Finish);
    inputs
}

/// The plugin input a registry notice stands for: a version that went
/// live (loaded, swapped, rolled back) is selected, a removed file removes
/// it, anything else only publishes the notice.
pub fn notice_change(notice: Notice) -> PluginChange {
    use crate::plugin::registry::NoticeKind;
    let version = match (notice.kind, &notice.hash) {
        (NoticeKind::Loaded | NoticeKind::Swapped | NoticeKind::RolledBack, Some(h)) => {
            VersionChange::Select(h.clone())
        }
        (NoticeKind::Unloaded, _) => VersionChange::Remove,
        _ => VersionChange::Keep,
    };
    PluginChange {
        plugin: notice.plugin.clone(),
        version,
        notice: Some(notice),
    }
}

/// The recorded form of an [`Input`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Batch {
        source: SourceId,
        position: u64,
        wall_ms: Option<i64>,
        events: Vec<Json>,
    },
    Tick {
        wall_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<(SourceId, u64)>,
    },
    Kafka {
        source: SourceId,
        position: u64,
        wall_ms: Option<i64>,
        events: Vec<Json>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        partials: Vec<crate::window::merge::Partial>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        rejected: Vec<Rejected>,
        offsets: Vec<PartitionOffset>,
    },
    Plugin(PluginChange),
    /// A reload, with the file's text (parsed again when the record is
    /// read, with that process's environment).
    Config {
        origin: String,
        text: String,
    },
    Finish {},
}

/// A batch as [`Line::Batch`] serializes it, written by hand: each event
/// straight to text with [`Event::write_json`], not through a
/// `serde_json::Value` per event. This is the write-ahead log's record of
/// every HTTP batch, encoded on the engine thread, so its cost is the log's
/// cost per event (see the unit test comparing both forms).
fn batch_line(b: &Batch) -> String {
    let mut out = batch_fields("batch", b);
    out.push_str("}}");
    out
}

/// A Kafka batch as [`Line::Kafka`] serializes it: its events written by
/// hand as [`batch_line`]'s are (through a `serde_json::Value` per event
/// they cost the engine thread about as much as the rest of the pipeline's
/// host work), the rest (offsets, refused records, partials) by serde.
fn kafka_line(k: &KafkaBatch) -> String {
    fn field<T: Serialize>(out: &mut String, name: &str, value: &T) {
        out.push_str(",\"");
        out.push_str(name);
        out.push_str("\":");
        // Plain structs of strings and numbers: serializing them cannot fail.
        out.push_str(&serde_json::to_string(value).unwrap_or_default());
    }
    let mut out = batch_fields("kafka", &k.batch);
    if !k.partials.is_empty() {
        field(&mut out, "partials", &k.partials);
    }
    if !k.rejected.is_empty() {
        field(&mut out, "rejected", &k.rejected);
    }
    field(&mut out, "offsets", &k.offsets);
    out.push_str("}}");
    out
}

/// `{"<tag>":{"source":…,"position":…,"wall_ms":…,"events":[…]`: the
/// fields [`Line::Batch`] and [`Line::Kafka`] share, left open.
fn batch_fields(tag: &str, b: &Batch) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(64 + b.events.len() * 256);
    let _ = write!(
        out,
        "{{\"{tag}\":{{\"source\":{},\"position\":{},\"wall_ms\":",
        b.source, b.position
    );
    match b.wall_ms {
        Some(w) => {
            let _ = write!(out, "{w}");
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"events\":[");
    for (i, e) in b.events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        e.write_json(&mut out);
    }
    out.push(']');
    out
}

/// What a record starts with: what a fresh engine needs besides the
/// configuration to replay it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordHeader {
    /// The format version ([`RECORD_VERSION`]).
    pub eddy_record: u64,
    /// The first sequence number of every channel.
    pub first_seq: u64,
    /// Seed of the plugins' random sources.
    pub seed: u64,
    /// The version each plugin ran at the start.
    pub plugins: BTreeMap<String, String>,
}

impl Input {
    /// The input as one line of JSON.
    pub fn to_line(&self) -> String {
        let line = match self {
            Input::Batch(b) => return batch_line(b),
            Input::Kafka(k) => return kafka_line(k),
            Input::Tick { wall_ms, position } => Line::Tick {
                wall_ms: *wall_ms,
                position: *position,
            },
            Input::Plugin(c) => Line::Plugin(c.clone()),
            Input::Reconfigure(r) => Line::Config {
                origin: r.origin.clone(),
                text: r.text.clone(),
            },
            Input::Finish => Line::Finish {},
        };
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// Parse a line written by [`Input::to_line`].
    pub fn from_line(text: &str) -> anyhow::Result<Input> {
        let line: Line = serde_json::from_str(text)?;
        Ok(match line {
            Line::Batch {
                source,
                position,
                wall_ms,
                events,
            } => Input::Batch(Batch {
                source,
                position,
                wall_ms,
                events: events_from_json(events)?,
            }),
            Line::Tick { wall_ms, position } => Input::Tick { wall_ms, position },
            Line::Kafka {
                source,
                position,
                wall_ms,
                events,
                partials,
                rejected,
                offsets,
            } => Input::Kafka(KafkaBatch {
                batch: Batch {
                    source,
                    position,
                    wall_ms,
                    events: events_from_json(events)?,
                },
                partials,
                rejected,
                offsets,
            }),
            Line::Plugin(c) => Input::Plugin(c),
            Line::Config { origin, text } => Input::Reconfigure(
                Reconfigure::parse(&origin, &text)
                    .map_err(|e| anyhow::anyhow!("the recorded configuration reload: {e}"))?,
            ),
            Line::Finish {} => Input::Finish,
        })
    }
}

/// The events of a recorded batch.
fn events_from_json(events: Vec<Json>) -> anyhow::Result<Vec<Event>> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            Event::from_value(v, String::new)
                .map_err(|e| anyhow::anyhow!("event {i} of the batch: {e}"))
        })
        .collect()
}

/// Writes inputs as they are applied: `eddy serve --record FILE`.
pub struct Recorder {
    file: BufWriter<File>,
    path: PathBuf,
    plugins_dir: PathBuf,
}

/// Where a record's plugin files go: `<record>.plugins/`.
pub fn record_plugins_dir(record: &Path) -> PathBuf {
    let mut name = record.as_os_str().to_owned();
    name.push(".plugins");
    PathBuf::from(name)
}

impl Recorder {
    /// Create (truncate) `path` and write the header.
    pub fn create(path: &Path, header: &RecordHeader) -> anyhow::Result<Recorder> {
        let file =
            File::create(path).with_context(|| format!("creating record {}", path.display()))?;
        let plugins_dir = record_plugins_dir(path);
        std::fs::create_dir_all(&plugins_dir)
            .with_context(|| format!("creating {}", plugins_dir.display()))?;
        let mut r = Recorder {
            file: BufWriter::new(file),
            path: path.to_path_buf(),
            plugins_dir,
        };
        serde_json::to_writer(&mut r.file, header)?;
        r.file.write_all(b"\n")?;
        r.file.flush()?;
        Ok(r)
    }

    /// Keep a copy of a plugin version the record names.
    pub fn keep_plugin(&self, hash: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.plugins_dir.join(format!("{hash}.wasm"));
        if !path.exists() {
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Append one input, flushed so a reader (or a crash) sees whole lines.
    pub fn write(&mut self, input: &Input) -> anyhow::Result<()> {
        self.file.write_all(input.to_line().as_bytes())?;
        self.file.write_all(b"\n")?;
        self.file
            .flush()
            .with_context(|| format!("writing record {}", self.path.display()))
    }
}

/// Read a whole record: its header and inputs.
pub fn read_record(path: &Path) -> anyhow::Result<(RecordHeader, Vec<Input>)> {
    let file = File::open(path).with_context(|| format!("opening record {}", path.display()))?;
    let mut lines = std::io::BufReader::new(file).lines();
    let first = lines
        .next()
        .transpose()?
        .with_context(|| format!("{} is empty: not a record", path.display()))?;
    let header: RecordHeader = serde_json::from_str(&first).with_context(|| {
        format!(
            "{} does not start with a record header (written by `eddy serve --record`)",
            path.display()
        )
    })?;
    anyhow::ensure!(
        header.eddy_record == RECORD_VERSION,
        "{}: record format {} is not supported (this eddy reads {RECORD_VERSION})",
        path.display(),
        header.eddy_record
    );
    let mut inputs = Vec::new();
    for (i, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let input = Input::from_line(&line)
            .with_context(|| format!("{} line {}", path.display(), i + 2))?;
        inputs.push(input);
    }
    Ok((header, inputs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::event::Value;

    #[test]
    fn inputs_round_trip_through_their_recorded_form() {
        let event = Event {
            id: "e1".into(),
            name: "$pageview".into(),
            timestamp: 1_700_000_000_123,
            distinct_id: "u1".into(),
            session_id: Some("s".into()),
            properties: vec![
                ("f".into(), Value::Float(2.0)),
                ("i".into(), Value::Int(-3)),
                ("n".into(), Value::Json(r#"{"a":[1,"x"]}"#.into())),
                ("z".into(), Value::Null),
            ],
        };
        for input in [
            Input::Batch(Batch {
                source: 0,
                position: 7,
                wall_ms: Some(5),
                events: vec![event.clone(), event],
            }),
            Input::Batch(Batch {
                source: 3,
                position: 0,
                wall_ms: None,
                events: vec![],
            }),
            Input::Tick {
                wall_ms: 9,
                position: None,
            },
            Input::Tick {
                wall_ms: 9,
                position: Some((0, 12)),
            },
            Input::Plugin(PluginChange {
                plugin: "p".into(),
                version: VersionChange::Remove,
                notice: None,
            }),
            Input::Plugin(PluginChange {
                plugin: "p".into(),
                version: VersionChange::Select("abc".into()),
                notice: None,
            }),
            Input::Finish,
        ] {
            assert_eq!(Input::from_line(&input.to_line()).unwrap(), input);
        }
    }

    #[test]
    fn the_hand_written_batch_line_is_the_serde_line() {
        let event = Event {
            id: "e\"1".into(),
            name: "$pageview".into(),
            timestamp: -5,
            distinct_id: "ü".into(),
            session_id: None,
            properties: vec![
                ("f".into(), Value::Float(0.1)),
                ("s".into(), Value::Str("a\nb".into())),
                ("n".into(), Value::Json(r#"{"a":[1,"x"]}"#.into())),
            ],
        };
        for wall_ms in [Some(1_700_000_000_000), None] {
            let b = Batch {
                source: 2,
                position: 9,
                wall_ms,
                events: vec![event.clone(), event.clone()],
            };
            let serde_line = serde_json::to_string(&Line::Batch {
                source: b.source,
                position: b.position,
                wall_ms: b.wall_ms,
                events: b
                    .events
                    .iter()
                    .map(|e| serde_json::to_value(e).unwrap())
                    .collect(),
            })
            .unwrap();
            let fast = batch_line(&b);
            let parse = |t: &str| serde_json::from_str::<Json>(t).unwrap();
            assert_eq!(parse(&fast), parse(&serde_line));
            assert_eq!(Input::from_line(&fast).unwrap(), Input::Batch(b));
        }
    }

    #[test]
    fn the_hand_written_kafka_line_is_the_serde_line() {
        let event = Event {
            id: "k\"1".into(),
            name: "$pageview".into(),
            timestamp: 7,
            distinct_id: "ü".into(),
            session_id: Some("s".into()),
            properties: vec![("s".into(), Value::Str("a\nb".into()))],
        };
        let rejected = Rejected {
            topic: "events".into(),
            partition: 1,
            offset: 4,
            reason: "invalid JSON".into(),
            value: "{\"oops".into(),
        };
        let partial = crate::window::merge::Partial {
            topic: "partials".into(),
            partition: 0,
            offset: 9,
            window: "pv".into(),
            start: 0,
            end: 60_000,
            group: vec!["page".into()],
            values: vec!["count".into()],
            state: "AAEC".into(),
        };
        let offsets = vec![PartitionOffset {
            topic: "events".into(),
            partition: 1,
            from: 3,
            next: 5,
        }];
        for (wall_ms, partials, rejected, events) in [
            (Some(1_700_000_000_000), vec![], vec![], vec![event.clone()]),
            (
                None,
                vec![partial],
                vec![rejected],
                vec![event.clone(), event],
            ),
            (Some(1), vec![], vec![], vec![]),
        ] {
            let k = KafkaBatch {
                batch: Batch {
                    source: 3,
                    position: 12,
                    wall_ms,
                    events,
                },
                partials,
                rejected,
                offsets: offsets.clone(),
            };
            let serde_line = serde_json::to_string(&Line::Kafka {
                source: k.batch.source,
                position: k.batch.position,
                wall_ms: k.batch.wall_ms,
                events: k
                    .batch
                    .events
                    .iter()
                    .map(|e| serde_json::to_value(e).unwrap())
                    .collect(),
                partials: k.partials.clone(),
                rejected: k.rejected.clone(),
                offsets: k.offsets.clone(),
            })
            .unwrap();
            let fast = kafka_line(&k);
            let parse = |t: &str| serde_json::from_str::<Json>(t).unwrap();
            assert_eq!(parse(&fast), parse(&serde_line));
            assert_eq!(Input::from_line(&fast).unwrap(), Input::Kafka(k));
        }
    }
}
