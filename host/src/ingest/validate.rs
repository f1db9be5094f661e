//! Checks on a parsed event's values: timestamps (text forms, clock-skew
//! correction, the accepted window), string fields, and fresh event ids.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use chrono::{DateTime, NaiveDateTime};
use compact_str::CompactString;

use super::Limits;
use super::value::Scalar;

/// RFC 3339 text (`2024-05-01T12:00:00.123Z`, `...+02:00`) → ms since epoch.
pub(crate) fn parse_rfc3339(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|d| d.timestamp_millis())
}

/// PostHog's ISO 8601 forms: RFC 3339, an offset without colon (`+0000`),
/// or no zone at all, which PostHog reads as UTC.
pub(crate) fn parse_iso8601(text: &str) -> Option<i64> {
    const ZONED: &str = "%Y-%m-%dT%H:%M:%S%.f%z";
    const NAIVE: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"];
    parse_rfc3339(text)
        .or_else(|| {
            DateTime::parse_from_str(text, ZONED)
                .ok()
                .map(|d| d.timestamp_millis())
        })
        .or_else(|| {
            NAIVE.iter().find_map(|f| {
                NaiveDateTime::parse_from_str(text, f)
                    .ok()
                    .map(|d| d.and_utc().timestamp_millis())
            })
        })
}

/// A timestamp field as ms: an integer, or text accepted by `parse_text`.
/// `Ok(None)` for null.
pub(crate) fn timestamp_ms(
    field: &str,
    value: Scalar,
    parse_text: fn(&str) -> Option<i64>,
    text_form: &str,
) -> Result<Option<i64>, String> {
    match value {
        Scalar::Null => Ok(None),
        Scalar::Int(ms) => Ok(Some(ms)),
        Scalar::BigUint(_) => Err(format!(
            "{field}: integer out of range (must fit in 64-bit signed)"
        )),
        Scalar::Str(text) => parse_text(&text).map(Some).ok_or_else(|| {
            format!(
                "{field}: `{}` is not {text_form}",
                super::error::preview(&text)
            )
        }),
        other => Err(format!(
            "{field}: expected integer milliseconds since the Unix epoch or {text_form}, got {}",
            other.kind()
        )),
    }
}

/// Rejects timestamps outside `[now - max_age, now + future_skew]`.
pub(crate) fn check_window(ts: i64, now: i64, limits: &Limits) -> Result<(), String> {
    let ahead = i128::from(ts) - i128::from(now);
    if ahead > i128::from(limits.future_skew_ms) {
        return Err(format!(
            "timestamp is {ahead} ms in the future; the limit is {}",
            limits.future_skew_ms
        ));
    }
    if -ahead > i128::from(limits.max_age_ms) {
        return Err(format!(
            "timestamp is {} ms in the past; the limit is {}",
            -ahead, limits.max_age_ms
        ));
    }
    Ok(())
}

/// A string-valued field: `Ok(None)` for null, errors name the field.
pub(crate) fn string_field(
    field: &str,
    value: Scalar,
    limits: &Limits,
) -> Result<Option<CompactString>, String> {
    match value {
        Scalar::Null => Ok(None),
        Scalar::Str(s) => Ok(Some(s)),
        Scalar::TooLong(len) => Err(format!(
            "{field}: string of {len} bytes is too long; the limit is {} bytes",
            limits.max_string_bytes
        )),
        other => Err(format!("{field}: expected a string, got {}", other.kind())),
    }
}

/// A required, non-empty string.
pub(crate) fn require(field: &str, value: Option<CompactString>) -> Result<CompactString, String> {
    match value {
        None => Err(format!("missing required field `{field}`")),
        Some(s) if s.is_empty() => Err(format!("{field}: must not be empty")),
        Some(s) => Ok(s),
    }
}

thread_local! {
    /// SplitMix64 state for id randomness: one OS-seeded value per thread
    /// instead of a getrandom syscall per id. Ids need uniqueness, not
    /// secrecy.
    static ID_STATE: Cell<u64> = Cell::new(id_seed());
}

fn id_seed() -> u64 {
    // `RandomState` keys come from the OS once per process and differ per
    // instance; hashing the clock and a stack address mixes in more.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    let local = 0u8;
    h.write_usize(std::ptr::addr_of!(local) as usize);
    h.finish()
}

fn next_random() -> u64 {
    ID_STATE.with(|s| {
        // SplitMix64 (Steele, Lea, Flood 2014): constants from the paper.
        let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// A fresh UUID v7 (time-ordered by `now_ms`) as lowercase hyphenated text.
pub(crate) fn new_id(now_ms: i64) -> CompactString {
    let a = next_random().to_le_bytes();
    let b = next_random().to_le_bytes();
    let rand = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1]];
    let millis = u64::try_from(now_ms).unwrap_or(0);
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &rand).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    CompactString::from(&*id.hyphenated().encode_lower(&mut buf))
}

/// A PostHog `uuid` in canonical lowercase hyphenated form.
pub(crate) fn canonical_uuid(text: &str) -> Option<CompactString> {
    let id = uuid::Uuid::try_parse(text).ok()?;
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Some(CompactString::from(
        &*id.hyphenated().encode_lower(&mut buf),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_forms_agree() {
        let z = parse_iso8601("2024-05-01T12:00:00.250Z").unwrap();
        assert_eq!(parse_iso8601("2024-05-01T12:00:00.250+00:00"), Some(z));
        assert_eq!(parse_iso8601("2024-05-01T12:00:00.250+0000"), Some(z));
        assert_eq!(parse_iso8601("2024-05-01T12:00:00.250"), Some(z));
        assert_eq!(parse_iso8601("2024-05-01 12:00:00.250"), Some(z));
        assert_eq!(parse_iso8601("2024-05-01T14:00:00.250+02:00"), Some(z));
        assert_eq!(z, 1_714_564_800_250);
        assert_eq!(parse_iso8601("yesterday"), None);
        assert_eq!(parse_rfc3339("2024-05-01T12:00:00.250"), None);
    }

    #[test]
    fn window_bounds_are_inclusive_and_overflow_free() {
        let l = Limits::default();
        let now = 1_700_000_000_000;
        assert!(check_window(now + l.future_skew_ms, now, &l).is_ok());
        assert!(check_window(now - l.max_age_ms, now, &l).is_ok());
        let e = check_window(now + l.future_skew_ms + 1, now, &l).unwrap_err();
        assert_eq!(
            e,
            "timestamp is 300001 ms in the future; the limit is 300000"
        );
        assert!(
            check_window(i64::MIN, i64::MAX, &l)
                .unwrap_err()
                .contains("in the past")
        );
        assert!(
            check_window(i64::MAX, i64::MIN, &l)
                .unwrap_err()
                .contains("future")
        );
    }

    #[test]
    fn ids_are_v7_unique_and_time_ordered() {
        let a = new_id(1_700_000_000_000);
        let b = new_id(1_700_000_000_000);
        assert_ne!(a, b);
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 7);
        assert!(new_id(1_700_000_000_001) > new_id(1_700_000_000_000));
        assert_eq!(
            canonical_uuid("0190A0B0-C0D0-7E0F-8000-000000000001").unwrap(),
            "0190a0b0-c0d0-7e0f-8000-000000000001"
        );
        assert_eq!(canonical_uuid("not-a-uuid"), None);
    }
}
