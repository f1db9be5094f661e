//! Line-at-a-time decoding for drivers that stream NDJSON (`eddy pipe`,
//! `eddy plugin test`, replays), and the `{"$wall": MS}` directive those
//! inputs may carry.
//!
//! A [`LineDecoder`] runs exactly what `POST /v1/batch` runs on each line
//! (the fast path, then the serde visitors, the same messages), with the
//! clock and id rules of its [`DecodeOptions`]. It counts no events: a
//! streamed file may be as long as it likes, but every per-event limit
//! applies.

use super::native::{Line, decode_line};
use super::value::Ctx;
use super::{DecodeOptions, ItemError, Limits, Location};
use crate::event::Event;

/// Decodes one NDJSON line at a time. Holds no per-line state between
/// calls, so lines may come from anywhere in any order; allocates nothing
/// beyond the event it returns.
pub struct LineDecoder {
    ctx: Ctx,
}

impl LineDecoder {
    /// A decoder with `options`.
    pub fn new(options: DecodeOptions) -> LineDecoder {
        LineDecoder {
            ctx: Ctx::with_options(&options),
        }
    }

    /// Moves the clock (see [`DecodeOptions::now_ms`]): a driver on the
    /// wall clock sets it per batch, one on a virtual clock at each
    /// `{"$wall": MS}` line.
    pub fn set_now_ms(&mut self, now_ms: Option<i64>) {
        self.ctx.now_ms = now_ms;
    }

    /// The clock, if any.
    pub fn now_ms(&self) -> Option<i64> {
        self.ctx.now_ms
    }

    /// The limits every line is held to.
    pub fn limits(&self) -> &Limits {
        &self.ctx.limits
    }

    /// Whether `line` holds nothing but whitespace: NDJSON skips such
    /// lines (they still count in line numbers), so callers skip them too.
    pub fn is_blank(line: &[u8]) -> bool {
        line.iter().all(u8::is_ascii_whitespace)
    }

    /// The event on line `line_no` (1-based, blank lines counted), or why
    /// it is not one. A trailing `\n` or `\r\n` is ignored; a line that is
    /// not UTF-8 is an item error, as over HTTP.
    pub fn decode(&self, line: &[u8], line_no: usize) -> Result<Event, ItemError> {
        let line = strip_line_end(line);
        self.run(Line::Bytes(line), line_no)
    }

    /// [`LineDecoder::decode`] for a line already known to be UTF-8 (it is
    /// not checked again).
    pub fn decode_str(&self, line: &str, line_no: usize) -> Result<Event, ItemError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        self.run(Line::Text(line), line_no)
    }

    fn run(&self, line: Line<'_>, line_no: usize) -> Result<Event, ItemError> {
        let error = if LineDecoder::is_blank(line.bytes()) {
            "blank line: no event (skip blank lines)".to_owned()
        } else {
            match decode_line(&self.ctx, line, line_no) {
                Ok(event) => return Ok(event),
                Err(e) => e,
            }
        };
        Err(ItemError {
            location: Location::Line(line_no),
            error,
        })
    }
}

fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `Some` when `line` is a `{"$wall": MS}` directive (a JSON object with a
/// top-level `$wall` member): its whole milliseconds since the Unix epoch,
/// or what is wrong with it (a value that is not a whole number, other
/// members beside `$wall`). `None` for anything else, events included.
/// Cheap on ordinary lines: only a line containing `"$wall"` is parsed.
pub fn wall_directive(line: &str) -> Option<Result<i64, String>> {
    if !line.contains("\"$wall\"") {
        return None;
    }
    let serde_json::Value::Object(doc) = serde_json::from_str(line).ok()? else {
        return None;
    };
    let value = doc.get("$wall")?;
    if let Some(other) = doc.keys().find(|k| *k != "$wall") {
        return Some(Err(format!(
            "a {{\"$wall\": MS}} line sets the virtual clock and has no other fields; found `{}`",
            super::error::preview(other)
        )));
    }
    Some(value.as_i64().ok_or_else(|| {
        format!(
            "$wall must be whole milliseconds since the Unix epoch, got {}",
            super::error::preview(&value.to_string())
        )
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ingest::{Encoding, Format, IdMode, NO_CLOCK, decode};

    const NOW: i64 = 1_700_000_000_000;

    fn options(now_ms: Option<i64>, check_time: bool, ids: IdMode) -> DecodeOptions {
        DecodeOptions {
            limits: Limits::default(),
            now_ms,
            check_time,
            ids,
        }
    }

    #[test]
    fn server_options_decode_as_post_v1_batch_does() {
        let body = "{\"name\":\"a\",\"distinct_id\":\"u\",\"id\":\"e1\",\"timestamp\":\"2023-11-14T22:13:20.500Z\"}\n\
                    {\"name\":\"b\",\"distinct_id\":\"u\",\"timestamp\":1}\n\
                    {\"name\":\"c\",\"distinct_id\":\"u\",\"extra\":true}\n\
                    {\"name\":\"d\",\"distinct_id\":\"u\",\"properties\":{\"n\":{\"k\":[1,2]}}}\n";
        let http = decode(
            body.as_bytes(),
            Format::Ndjson,
            Encoding::Identity,
            &Limits::default(),
            NOW,
        )
        .unwrap();
        let lines = LineDecoder::new(DecodeOptions::server(Limits::default(), NOW));
        let (mut events, mut errors) = (Vec::new(), Vec::new());
        for (i, line) in body.lines().enumerate() {
            match lines.decode(line.as_bytes(), i + 1) {
                Ok(e) => events.push(e),
                Err(e) => errors.push(e),
            }
        }
        assert_eq!(errors, http.errors);
        assert_eq!(events.len(), http.events.len());
        assert_eq!(
            events[0], http.events[0],
            "an event with an id is identical"
        );
        assert_eq!(events[1].name, http.events[1].name);
        assert!(errors[0].error.contains("in the past"), "{errors:?}");
        assert!(
            errors[1].error.contains("unknown field `extra`"),
            "{errors:?}"
        );
    }

    #[test]
    fn without_the_time_check_old_timestamps_pass() {
        let old = br#"{"name":"a","distinct_id":"u","timestamp":1}"#;
        let checked = LineDecoder::new(options(Some(NOW), true, IdMode::Random));
        let e = checked.decode(old, 1).unwrap_err();
        assert!(e.error.contains("ms in the past"), "{e}");
        let unchecked = LineDecoder::new(options(Some(NOW), false, IdMode::Random));
        assert_eq!(unchecked.decode(old, 1).unwrap().timestamp, 1);
        // The clock still fills in a missing timestamp.
        let none = br#"{"name":"a","distinct_id":"u"}"#;
        assert_eq!(unchecked.decode(none, 1).unwrap().timestamp, NOW);
        // Far in the future too, e.g. a recording's clock running ahead.
        let ahead = format!(
            r#"{{"name":"a","distinct_id":"u","timestamp":{}}}"#,
            NOW * 2
        );
        assert_eq!(
            unchecked.decode(ahead.as_bytes(), 1).unwrap().timestamp,
            NOW * 2
        );
    }

    #[test]
    fn without_a_clock_a_missing_timestamp_is_an_item_error() {
        let mut d = LineDecoder::new(options(None, true, IdMode::Random));
        let none = br#"{"name":"a","distinct_id":"u"}"#;
        for line in [
            &none[..],
            br#"{"name":"a","distinct_id":"u","timestamp":null}"#,
        ] {
            let e = d.decode(line, 7).unwrap_err();
            assert_eq!(e.location, Location::Line(7));
            assert_eq!(e.error, NO_CLOCK);
        }
        // Both paths: the fast one above, the serde one here (an escape).
        let slow = br#"{"name":"a\u0062","distinct_id":"u"}"#;
        assert_eq!(d.decode(slow, 2).unwrap_err().error, NO_CLOCK);
        // No clock also means nothing to check a given timestamp against.
        let old = br#"{"name":"a","distinct_id":"u","timestamp":1}"#;
        let e = d.decode(old, 1).unwrap();
        assert_eq!(e.timestamp, 1);
        assert_eq!(uuid::Uuid::parse_str(&e.id).unwrap().get_version_num(), 7);
        d.set_now_ms(Some(NOW));
        assert_eq!(d.now_ms(), Some(NOW));
        assert_eq!(d.decode(none, 1).unwrap().timestamp, NOW);
        assert!(d.decode(old, 1).is_err(), "with a clock, the check is back");
    }

    #[test]
    fn line_ids_number_lines_of_the_whole_input() {
        let d = LineDecoder::new(options(None, false, IdMode::Line));
        let fast = br#"{"name":"a","distinct_id":"u","timestamp":5}"#;
        let slow = br#"{"name":"a","distinct_id":"u","timestamp":5,"properties":{"o":{"x":1}}}"#;
        let given = br#"{"id":"mine","name":"a","distinct_id":"u","timestamp":5}"#;
        assert_eq!(d.decode(fast, 1).unwrap().id, "line-1");
        assert_eq!(d.decode(slow, 12).unwrap().id, "line-12");
        assert_eq!(d.decode(given, 3).unwrap().id, "mine");
        assert_eq!(d.decode(fast, 1_000_000).unwrap().id, "line-1000000");
        // The same through a whole NDJSON body decoded with these options'
        // id rule: line numbers count blank lines, as the item errors do.
        let s = format!(
            "\n{}\r\n\n{}\n",
            "{\"name\":\"a\",\"distinct_id\":\"u\",\"timestamp\":5}", "{}"
        );
        let ids: Vec<_> = s
            .lines()
            .enumerate()
            .filter(|(_, l)| !LineDecoder::is_blank(l.as_bytes()))
            .map(|(i, l)| d.decode_str(l, i + 1).map(|e| e.id))
            .collect();
        assert_eq!(ids[0].as_deref(), Ok("line-2"));
        assert_eq!(ids[1].as_ref().unwrap_err().location, Location::Line(4));
    }

    #[test]
    fn every_per_event_limit_applies_line_by_line() {
        let limits = Limits {
            max_events_per_request: 1,
            max_event_bytes: 200,
            max_properties: 2,
            max_key_bytes: 4,
            max_string_bytes: 8,
            max_depth: 2,
            ..Limits::default()
        };
        let d = LineDecoder::new(DecodeOptions {
            limits,
            now_ms: None,
            check_time: false,
            ids: IdMode::Line,
        });
        let ok = br#"{"name":"a","distinct_id":"u","timestamp":5,"properties":{"k":"v"}}"#;
        // No event count: the per-request cap of 1 does not stop line 3.
        for n in 1..=3 {
            assert!(d.decode(ok, n).is_ok());
        }
        let cases: [(&[u8], &str); 7] = [
            (
                br#"{"name":"a","distinct_id":"u","timestamp":5,"properties":{"a":1,"b":2,"c":3}}"#,
                "properties: more than 2 properties",
            ),
            (
                br#"{"name":"a","distinct_id":"u","timestamp":5,"properties":{"long_key":1}}"#,
                "properties: key `long_key` is too long; the limit is 4 bytes",
            ),
            (
                br#"{"name":"a","distinct_id":"u","timestamp":5,"properties":{"k":"123456789"}}"#,
                "properties.k: string of 9 bytes is too long; the limit is 8 bytes",
            ),
            (
                br#"{"name":"a","distinct_id":"123456789","timestamp":5}"#,
                "distinct_id: string of 9 bytes is too long; the limit is 8 bytes",
            ),
            (
                br#"{"name":"a","distinct_id":"u","timestamp":5,"properties":{"k":[[[1]]]}}"#,
                "properties.k[0][0]: nested deeper than 2 levels",
            ),
            (
                br#"{"name":"a","distinct_id":"","timestamp":5}"#,
                "distinct_id: must not be empty",
            ),
            (b"{\"name\":\"\xff\"}", "line is not valid UTF-8"),
        ];
        for (line, want) in cases {
            let e = d.decode(line, 9).unwrap_err();
            assert_eq!(e.location, Location::Line(9));
            assert!(e.error.starts_with(want), "{e} should start with {want}");
        }
        let big = format!(
            r#"{{"name":"a","distinct_id":"u","timestamp":5,"properties":{{"k":"{}"}}}}"#,
            " ".repeat(190)
        );
        let e = d.decode(big.as_bytes(), 2).unwrap_err();
        assert!(e.error.contains("the limit is 200"), "{e}");
        let e = d.decode(b"  \r\n", 4).unwrap_err();
        assert!(e.error.starts_with("blank line"), "{e}");
    }

    #[test]
    fn wall_directives_are_recognised_and_checked() {
        assert_eq!(
            wall_directive(r#"{"$wall": 1700000000000}"#),
            Some(Ok(1_700_000_000_000))
        );
        assert_eq!(wall_directive(r#" { "$wall" : -5 } "#), Some(Ok(-5)));
        for bad in [
            r#"{"$wall": 1.5}"#,
            r#"{"$wall": "2024-05-01T12:00:00Z"}"#,
            r#"{"$wall": null}"#,
        ] {
            let e = wall_directive(bad).unwrap().unwrap_err();
            assert!(e.starts_with("$wall must be whole milliseconds"), "{e}");
        }
        let e = wall_directive(r#"{"$wall": 5, "name": "x"}"#)
            .unwrap()
            .unwrap_err();
        assert!(e.contains("found `name`"), "{e}");
        // Events, and a `$wall` that is not a top-level member, are not
        // directives; nor is a line that is not JSON.
        for not in [
            r#"{"name":"a","distinct_id":"u"}"#,
            r#"{"name":"a","distinct_id":"u","properties":{"$wall":5}}"#,
            r#"{"$wall": 5"#,
            r#"["$wall", 5]"#,
            "",
        ] {
            assert_eq!(wall_directive(not), None, "{not}");
        }
    }
}
