//! `eddy send --now`: recorded events replayed as if they happened just now.
//!
//! A recorded file's timestamps age: once they are older than the server's
//! `ingest.max_age_ms` (7 days by default) every event is rejected. `--now`
//! moves every recorded `timestamp` by one offset, chosen so that the file's
//! newest timestamp becomes the current time; the spacing between events is
//! kept, so windows, sessions and patterns see the same story. Events
//! without a timestamp (or with `null`) are left alone: the server gives them
//! its arrival time, as it would without `--now`.
//!
//! The two forms `/v1/batch` accepts are kept as they are: integer
//! milliseconds stay integers, RFC 3339 text stays RFC 3339 text with its
//! own UTC offset and its fractional digits (the offset is whole
//! milliseconds, and the server reads RFC 3339 to the millisecond).

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, FixedOffset, SecondsFormat, TimeDelta};
use serde_json::Value;

/// A `timestamp` as recorded on one line.
enum Recorded {
    Millis(i64),
    Text(DateTime<FixedOffset>),
}

impl Recorded {
    fn millis(&self) -> i64 {
        match self {
            Recorded::Millis(ms) => *ms,
            Recorded::Text(t) => t.timestamp_millis(),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The event object on line `line_no`, or `None` for a blank line (which
/// is sent as it is).
fn parse(line: &str, line_no: usize) -> anyhow::Result<Option<serde_json::Map<String, Value>>> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(other) => bail!(
            "line {line_no}: --now needs one JSON object per line, got {}",
            kind(&other)
        ),
        Err(e) => Err(anyhow!(e)).with_context(|| {
            format!("line {line_no}: --now needs one JSON object per line, and this is not JSON")
        }),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The recorded `timestamp` of an event, if it has one.
fn recorded(
    event: &serde_json::Map<String, Value>,
    line_no: usize,
) -> anyhow::Result<Option<Recorded>> {
    match event.get("timestamp") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(ms) => Ok(Some(Recorded::Millis(ms))),
            None => bail!(
                "line {line_no}: `timestamp` {n} is not integer milliseconds since the Unix epoch \
                 (nor an RFC 3339 date-time)"
            ),
        },
        Some(Value::String(text)) => DateTime::parse_from_rfc3339(text)
            .map(|t| Some(Recorded::Text(t)))
            .map_err(|e| {
                anyhow!(
                    "line {line_no}: `timestamp` {text:?} is not an RFC 3339 date-time ({e}), \
                     e.g. 2025-11-23T12:13:20.000Z, nor integer milliseconds"
                )
            }),
        Some(other) => bail!(
            "line {line_no}: `timestamp` must be integer milliseconds since the Unix epoch or an \
             RFC 3339 date-time, got {}",
            kind(other)
        ),
    }
}

/// The newest recorded timestamp (ms) among `lines`, checking every line
/// the way [`shift_line`] will.
pub(crate) fn newest<I>(lines: I) -> anyhow::Result<Option<i64>>
where
    I: IntoIterator<Item = anyhow::Result<String>>,
{
    let mut newest: Option<i64> = None;
    for (i, line) in lines.into_iter().enumerate() {
        let line = line?;
        let Some(event) = parse(&line, i + 1)? else {
            continue;
        };
        if let Some(ts) = recorded(&event, i + 1)? {
            let ms = ts.millis();
            newest = Some(newest.map_or(ms, |n| n.max(ms)));
        }
    }
    Ok(newest)
}

/// The offset that makes `newest` the current time.
pub(crate) fn offset_to_now(newest: Option<i64>) -> i64 {
    newest.map_or(0, |n| now_ms().saturating_sub(n))
}

/// `line` with its `timestamp` moved by `offset_ms`; a line without one (or
/// a blank line) comes back unchanged.
pub(crate) fn shift_line(line: &str, offset_ms: i64, line_no: usize) -> anyhow::Result<String> {
    let Some(mut event) = parse(line, line_no)? else {
        return Ok(line.to_owned());
    };
    let shifted = match recorded(&event, line_no)? {
        None => return Ok(line.to_owned()),
        Some(Recorded::Millis(ms)) => ms.checked_add(offset_ms).map(Value::from),
        Some(Recorded::Text(t)) => TimeDelta::try_milliseconds(offset_ms)
            .and_then(|d| t.checked_add_signed(d))
            .map(|t| Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))),
    };
    let shifted = shifted.ok_or_else(|| {
        anyhow!("line {line_no}: `timestamp` moved by {offset_ms} ms is out of range")
    })?;
    event.insert("timestamp".to_owned(), shifted);
    Ok(Value::Object(event).to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ok(lines: &[&str]) -> Vec<anyhow::Result<String>> {
        lines.iter().map(|l| Ok((*l).to_owned())).collect()
    }

    #[test]
    fn newest_is_found_across_both_forms() {
        let lines = ok(&[
            r#"{"name":"a","timestamp":1000}"#,
            r#"{"name":"b","timestamp":"1970-01-01T00:00:05.250+02:00"}"#,
            r#"{"name":"c","timestamp":"1970-01-01T00:00:03Z"}"#,
            r#"{"name":"d"}"#,
            "",
        ]);
        // 00:00:05.250+02:00 is before the epoch; 00:00:03Z is 3000 ms.
        assert_eq!(newest(lines).unwrap(), Some(3000));
        assert_eq!(newest(ok(&[r#"{"name":"d"}"#])).unwrap(), None);
    }

    #[test]
    fn shifting_keeps_the_form_spacing_and_offset() {
        assert_eq!(
            shift_line(r#"{"name":"a","timestamp":1000,"x":1}"#, 500, 1).unwrap(),
            r#"{"name":"a","timestamp":1500,"x":1}"#
        );
        assert_eq!(
            shift_line(
                r#"{"timestamp":"2025-11-23T12:00:00.123456+02:00","name":"b"}"#,
                86_400_000 + 1,
                1
            )
            .unwrap(),
            r#"{"timestamp":"2025-11-24T12:00:00.124456+02:00","name":"b"}"#
        );
        assert_eq!(
            shift_line(r#"{"timestamp":"2025-11-23T12:00:00Z"}"#, -1000, 1).unwrap(),
            r#"{"timestamp":"2025-11-23T11:59:59Z"}"#
        );
    }

    #[test]
    fn lines_without_a_timestamp_are_left_alone() {
        for line in [
            r#"{"name":"a"}"#,
            r#"{"name":"a", "timestamp": null}"#,
            "  ",
        ] {
            assert_eq!(shift_line(line, 123, 1).unwrap(), line);
        }
    }

    #[test]
    fn bad_lines_are_refused_with_their_line_number() {
        let err = |line: &str| format!("{:#}", shift_line(line, 0, 7).unwrap_err());
        assert!(err("not json").starts_with("line 7: --now needs one JSON object per line"));
        assert!(err("[1]").contains("got an array"));
        assert!(err(r#"{"timestamp":1.5}"#).contains("`timestamp` 1.5 is not integer"));
        assert!(err(r#"{"timestamp":"yesterday"}"#).contains("not an RFC 3339 date-time"));
        assert!(err(r#"{"timestamp":true}"#).contains("got a boolean"));
        let huge = format!(r#"{{"timestamp":{}}}"#, i64::MAX);
        assert!(
            format!("{:#}", shift_line(&huge, 1, 2).unwrap_err()).contains("out of range"),
            "overflow is an error"
        );
        let lines = ok(&[r#"{"timestamp":1}"#, "{", r#"{"timestamp":2}"#]);
        assert!(format!("{:#}", newest(lines).unwrap_err()).starts_with("line 2:"));
    }
}
