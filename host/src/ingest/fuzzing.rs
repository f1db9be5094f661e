//! One entry point that drives every decoder with one input, shared by the
//! cargo-fuzz target (`host/fuzz`) and the corpus replay test, so both
//! exercise exactly the same paths.

use super::{
    DecodeError, Decoded, Encoding, Format, Limits, PostHogRequest, decode, decode_posthog,
};

/// The fixed receive time fuzz inputs are decoded at (2023-11-14T22:13:20Z).
pub const FUZZ_NOW_MS: i64 = 1_700_000_000_000;

const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/json"),
    Some("text/plain"),
    Some("application/x-www-form-urlencoded"),
];

const COMPRESSIONS: [Option<&str>; 5] = [
    None,
    Some("gzip-js"),
    Some("gzip"),
    Some("base64"),
    Some("lz64"),
];

/// Decodes `data` as native JSON, NDJSON and PostHog (with the content type
/// and `compression` chosen by the first byte, bit 7 choosing gzip
/// Content-Encoding), with default [`Limits`] at [`FUZZ_NOW_MS`]. Returns
/// every outcome.
pub fn decode_all_ways(data: &[u8]) -> Vec<Result<Decoded, DecodeError>> {
    let limits = Limits::default();
    let (selector, body) = match data.split_first() {
        Some((&first, rest)) => (usize::from(first), rest),
        None => (0, data),
    };
    let encoding = if selector & 0x80 != 0 {
        Encoding::Gzip
    } else {
        Encoding::Identity
    };
    let req = PostHogRequest {
        content_type: CONTENT_TYPES
            .get(selector % CONTENT_TYPES.len())
            .copied()
            .flatten(),
        compression: COMPRESSIONS
            .get((selector / CONTENT_TYPES.len()) % COMPRESSIONS.len())
            .copied()
            .flatten(),
    };
    vec![
        decode(data, Format::Json, Encoding::Identity, &limits, FUZZ_NOW_MS),
        decode(
            data,
            Format::Ndjson,
            Encoding::Identity,
            &limits,
            FUZZ_NOW_MS,
        ),
        decode(body, Format::Json, encoding, &limits, FUZZ_NOW_MS),
        decode(body, Format::Ndjson, encoding, &limits, FUZZ_NOW_MS),
        decode(
            data,
            Format::PostHog,
            Encoding::Identity,
            &limits,
            FUZZ_NOW_MS,
        ),
        decode_posthog(body, encoding, &req, &limits, FUZZ_NOW_MS),
    ]
}

/// What must hold of any outcome: accepted events satisfy the limits and
/// serialize to JSON that parses back; the error text is non-empty.
pub fn check_invariants(outcome: &Result<Decoded, DecodeError>) -> Result<(), String> {
    let limits = Limits::default();
    let d = match outcome {
        Ok(d) => d,
        Err(e) if e.to_string().is_empty() || e.code().is_empty() => {
            return Err(format!("error without text: {e:?}"));
        }
        Err(_) => return Ok(()),
    };
    if d.events.len() + d.errors.len() > limits.max_events_per_request {
        return Err("more events than the limit".to_owned());
    }
    if d.events.is_empty() && d.errors.is_empty() {
        return Err("an accepted request without events or errors".to_owned());
    }
    for e in &d.events {
        if e.name.is_empty() || e.distinct_id.is_empty() || e.id.is_empty() {
            return Err(format!("empty required field in {e:?}"));
        }
        let age = i128::from(FUZZ_NOW_MS) - i128::from(e.timestamp);
        if age > i128::from(limits.max_age_ms) || -age > i128::from(limits.future_skew_ms) {
            return Err(format!("timestamp outside the window: {}", e.timestamp));
        }
        if e.properties.len() > limits.max_properties {
            return Err("too many properties".to_owned());
        }
        let text = e.to_json();
        if let Err(err) = serde_json::from_str::<serde_json::Value>(&text) {
            return Err(format!("event does not serialize to JSON ({err}): {text}"));
        }
    }
    if d.errors.iter().any(|e| e.error.is_empty()) {
        return Err("item error without text".to_owned());
    }
    Ok(())
}
