//! Replaying recorded input through windows on a virtual wall clock, for
//! golden tests and `eddy pipe`-style runs that must be deterministic.
//!
//! The input is NDJSON. Each line is an event, or a directive setting the
//! virtual wall clock: `{"$wall": <ms since epoch>}` (non-decreasing). Events
//! arrive at the current wall time; before the first directive, the wall
//! clock reads the first event's timestamp. A directive also runs a tick
//! (idle watermark advance, early firings). At the end of input every open
//! window fires.

use anyhow::{Context, bail};

use super::{Output, Windows};
use crate::event::Event;

/// Run `input` (NDJSON) through `windows`; returns every output in order.
pub fn replay(windows: &mut Windows, input: &str) -> anyhow::Result<Vec<Output>> {
    let mut out = Vec::new();
    let mut wall: Option<i64> = None;
    for (i, line) in input.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let doc: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("line {line_no}: not JSON"))?;
        if let Some(w) = doc.get("$wall") {
            let Some(w) = w.as_i64() else {
                bail!("line {line_no}: $wall must be whole milliseconds");
            };
            if wall.is_some_and(|prev| w < prev) {
                bail!("line {line_no}: $wall went back in time");
            }
            wall = Some(w);
            windows.tick(w, &mut out);
            continue;
        }
        let id = format!("line-{line_no}");
        let ev = Event::from_value(doc, || id).with_context(|| format!("line {line_no}"))?;
        let now = *wall.get_or_insert(ev.timestamp);
        windows.process(std::slice::from_ref(&ev), now, &mut out);
    }
    windows.finish(&mut out);
    Ok(out)
}
