//! PostHog capture API bodies (`/capture/`, `/batch/`, `/e/`, `/i/v0/e/`):
//! a single event, a `{"api_key", "batch": [...]}` wrapper, or a bare array
//! (posthog-js), possibly gzipped or form/base64-wrapped.
//!
//! Mapping onto [`Event`]: name ← `event`; id ← `uuid` (else a UUID v7);
//! distinct_id ← top-level or `properties.distinct_id` (numbers become their
//! decimal text); session_id ← `properties.$session_id` (kept in the
//! properties); properties ← `properties` minus `distinct_id` and `token`,
//! plus top-level `$set`/`$set_once` (which replace same-named properties).
//! Unknown top-level fields are ignored: SDKs send many (`type`, `library`,
//! `_meta`, ...). As in PostHog, an unparsable `sent_at` is ignored, not an
//! error.

use compact_str::{CompactString, ToCompactString};
use serde::de::DeserializeSeed;

use super::body::{self, Compression};
use super::posthog_parse::{Root, Shape};
use super::validate::{check_window, new_id, require};
use super::value::Ctx;
use super::{DecodeError, Decoded, Encoding, ItemError, Limits, Location};
use crate::event::{Event, Value};

/// Request metadata a PostHog body needs besides its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostHogRequest<'a> {
    /// `Content-Type`: `application/json`, `text/plain` (posthog-js sends
    /// JSON as that) or `application/x-www-form-urlencoded`.
    pub content_type: Option<&'a str>,
    /// The `compression` query parameter: `gzip-js`, `gzip`, `base64`.
    pub compression: Option<&'a str>,
}

/// Decode a PostHog capture body. Gzip is undone when `encoding` or the
/// `compression` query says so, or the body starts with the gzip magic
/// bytes; a form body (by content type, or starting with `data=`) is
/// unwrapped from its `data` field (JSON, or base64).
pub fn decode_posthog(
    body: &[u8],
    encoding: Encoding,
    req: &PostHogRequest<'_>,
    limits: &Limits,
    now_ms: i64,
) -> Result<Decoded, DecodeError> {
    let compression = Compression::parse(req.compression)?;
    let data = body::unwrap_posthog(
        body,
        encoding == Encoding::Gzip,
        compression,
        body::is_form(req.content_type),
        limits.max_decompressed_bytes,
    )?;
    let text = body::utf8(&data)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.trim_matches([' ', '\t', '\n', '\r']);
    if text.is_empty() {
        return Err(DecodeError::EmptyBody);
    }
    let ctx = Ctx::new(limits, now_ms);
    let mut de = serde_json::Deserializer::from_str(text);
    let shape = Root { ctx: &ctx }
        .deserialize(&mut de)
        .and_then(|shape| de.end().map(|()| shape))
        .map_err(|e| ctx.whole_error(&e, text))?;
    let (wrapper, events) = match shape {
        Shape::Scalar(kind) => {
            return Err(DecodeError::InvalidShape(format!(
                "the body must be an event object, a batch object or an array of events, got {kind}"
            )));
        }
        Shape::BadBatch(msg) => return Err(DecodeError::InvalidShape(msg)),
        Shape::Single(mut ev) => {
            if text.len() > limits.max_event_bytes {
                ev.err.get_or_insert(format!(
                    "event is {} bytes; the limit is {}",
                    text.len(),
                    limits.max_event_bytes
                ));
            }
            (Partial::default(), vec![Ok(ev)])
        }
        Shape::Batch(wrapper, events) => {
            if let Some(e) = wrapper.token_err {
                return Err(DecodeError::InvalidShape(e));
            }
            (wrapper, events)
        }
    };
    if events.is_empty() {
        return Err(DecodeError::EmptyBody);
    }
    // Arrays are counted while parsing; this catches a single event.
    if events.len() > limits.max_events_per_request {
        return Err(DecodeError::TooManyEvents {
            limit: limits.max_events_per_request,
        });
    }
    finish_all(wrapper, events, &ctx, now_ms)
}

/// Turns parsed events into the result; all tokens must agree.
fn finish_all(
    wrapper: Partial,
    events: Vec<Result<Partial, String>>,
    ctx: &Ctx,
    now_ms: i64,
) -> Result<Decoded, DecodeError> {
    let mut out = Decoded::default();
    let mut token = wrapper.token;
    for (i, ev) in events.into_iter().enumerate() {
        match ev.and_then(|ev| ev.finish(wrapper.sent_at, ctx, now_ms)) {
            Ok((event, event_token)) => {
                match (&token, event_token) {
                    (Some(t), Some(e)) if *t != e => return Err(DecodeError::MixedTokens),
                    (None, Some(e)) => token = Some(e),
                    _ => {}
                }
                out.events.push(event);
            }
            Err(error) => out.errors.push(ItemError {
                location: Location::Index(i),
                error,
            }),
        }
    }
    out.api_key = token.map(String::from);
    Ok(out)
}

/// A PostHog event's fields as they arrive.
#[derive(Debug, Default)]
pub(super) struct Partial {
    pub(super) name: Option<CompactString>,
    pub(super) distinct_id: Option<CompactString>,
    pub(super) uuid: Option<CompactString>,
    pub(super) timestamp: Option<i64>,
    pub(super) sent_at: Option<i64>,
    pub(super) offset: Option<i64>,
    pub(super) token: Option<CompactString>,
    pub(super) properties: Vec<(CompactString, Value)>,
    /// Top-level `$set` / `$set_once`.
    pub(super) sets: Vec<(CompactString, Value)>,
    /// First problem found; parsing goes on so a batch wrapper's fields are
    /// still read.
    pub(super) err: Option<String>,
    /// A mistyped `api_key`/`token`: fatal on a batch wrapper.
    pub(super) token_err: Option<String>,
}

impl Partial {
    pub(super) fn fail(&mut self, msg: String) {
        self.err.get_or_insert(msg);
    }

    /// Validates and maps onto an [`Event`]; also returns the event's token.
    fn finish(
        self,
        batch_sent_at: Option<i64>,
        ctx: &Ctx,
        now_ms: i64,
    ) -> Result<(Event, Option<CompactString>), String> {
        if let Some(e) = self.err {
            return Err(e);
        }
        let name = require("event", self.name)?;
        let mut props = self.properties;
        let (mut prop_distinct, mut prop_token) = (None, None);
        props.retain_mut(|(k, v)| {
            let slot = match k.as_str() {
                "distinct_id" => &mut prop_distinct,
                "token" => &mut prop_token,
                _ => return true,
            };
            *slot = Some(std::mem::replace(v, Value::Null));
            false
        });
        let distinct_id = match (self.distinct_id, prop_distinct) {
            (Some(d), _) => Some(d),
            (None, None | Some(Value::Null)) => None,
            (None, Some(Value::Str(s))) => Some(s),
            (None, Some(Value::Int(i))) => Some(i.to_compact_string()),
            (None, Some(Value::Float(f))) => Some(float_text(f)),
            (None, Some(_)) => {
                return Err("properties.distinct_id: expected a string or a number".to_owned());
            }
        };
        let distinct_id = require("distinct_id", distinct_id)?;
        let token = self.token.or(match prop_token {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        });
        for (key, value) in self.sets {
            match props.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => props.push((key, value)),
            }
        }
        if props.len() > ctx.limits.max_properties {
            return Err(format!(
                "properties: more than {} properties",
                ctx.limits.max_properties
            ));
        }
        let prop = |key: &str| props.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let session_id = match prop("$session_id") {
            Some(Value::Str(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        let ignore_sent_at = prop("$ignore_sent_at") == Some(&Value::Bool(true));
        let sent_at = self.sent_at.or(batch_sent_at).filter(|_| !ignore_sent_at);
        let timestamp = event_time(self.timestamp, sent_at, self.offset, now_ms)?;
        check_window(timestamp, now_ms, &ctx.limits)?;
        let event = Event {
            id: self.uuid.unwrap_or_else(|| new_id(now_ms)),
            name,
            timestamp,
            distinct_id,
            session_id,
            properties: props,
        };
        Ok((event, token))
    }
}

/// PostHog's rules: `timestamp` with `sent_at` → `now + (timestamp -
/// sent_at)` (corrects the client's clock skew); `timestamp` alone → as is;
/// `offset` alone → `now - offset`; nothing → now.
fn event_time(
    timestamp: Option<i64>,
    sent_at: Option<i64>,
    offset: Option<i64>,
    now: i64,
) -> Result<i64, String> {
    let t = match (timestamp, sent_at, offset) {
        (Some(t), Some(s), _) => i128::from(now) + i128::from(t) - i128::from(s),
        (Some(t), None, _) => return Ok(t),
        (None, _, Some(o)) => i128::from(now) - i128::from(o),
        (None, _, None) => return Ok(now),
    };
    i64::try_from(t).map_err(|_| "timestamp: out of range after clock-skew correction".to_owned())
}

/// A number as distinct_id text, formatted as JSON would.
pub(super) fn float_text(f: f64) -> CompactString {
    serde_json::Number::from_f64(f).map_or_else(|| f.to_compact_string(), |n| n.to_compact_string())
}
