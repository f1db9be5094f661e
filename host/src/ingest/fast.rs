//! The fast path of an NDJSON line: a hand-written scanner for the shape
//! nearly every line has (an object of eddy's fields whose values are plain
//! strings, whole numbers, booleans or null, and a flat `properties`
//! object), about three times faster than the serde visitors.
//!
//! It only ever *accepts*. Anything outside that shape, or anything the
//! full decoder would reject (an escape or a control character in a string,
//! a fraction or an exponent, a nested value, an unknown or repeated field,
//! a string or key over its limit, too many properties, broken syntax),
//! makes it return `None`, and the line is decoded again from its start by
//! [`super::native`]'s serde path, which produces the event or the exact
//! error message. What it accepts goes through the same
//! [`Partial::finish`](super::native::Partial) checks (required fields,
//! timestamp window, ids) and the same property de-duplication, so both
//! paths build the same event from the same line; the tests in
//! `native_tests` compare them on every line they have.

use compact_str::CompactString;

use super::native::{Partial, field_bit};
use super::props::dedup_last_wins;
use super::validate::parse_rfc3339;
use super::value::Ctx;
use crate::event::{Event, Value, first_to_escape};

/// The event of one NDJSON line (or the error [`Partial::finish`] gives
/// it), or `None` when the line needs the full decoder.
pub(crate) fn line(ctx: &Ctx, text: &str) -> Option<Result<Event, String>> {
    let mut p = Scanner { text, at: 0 };
    let mut ev = Partial::default();
    p.ws();
    p.expect(b'{')?;
    p.ws();
    if !p.eat(b'}') {
        loop {
            let key = p.plain_str()?;
            p.ws();
            p.expect(b':')?;
            p.ws();
            let bit = field_bit(key)?;
            // Repeated fields, and `name` with `event`, are errors.
            if ev.seen & bit != 0 || (bit & (2 | 4) != 0 && ev.seen & (2 | 4) != 0) {
                return None;
            }
            ev.seen |= bit;
            match key {
                "properties" => ev.properties = p.properties(ctx)?,
                "timestamp" => ev.timestamp = p.timestamp(ctx)?,
                _ => {
                    let value = p.str_or_null(ctx)?;
                    match key {
                        "id" => ev.id = value,
                        "distinct_id" => ev.distinct_id = value,
                        "session_id" => ev.session_id = value,
                        _ => ev.name = value,
                    }
                }
            }
            if !p.next_member()? {
                break;
            }
        }
    }
    p.ws();
    if p.at != text.len() {
        return None;
    }
    Some(ev.finish(ctx))
}

struct Scanner<'a> {
    text: &'a str,
    /// Byte offset of the next unread byte; always at an ASCII byte or the
    /// end, so slicing `text` there is safe.
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    /// Skip JSON whitespace (exactly the four bytes JSON allows).
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        self.eat(b).then_some(())
    }

    /// After an object member: `,` (true: another member follows) or the
    /// closing `}` (false), each with the whitespace around it.
    fn next_member(&mut self) -> Option<bool> {
        self.ws();
        if self.eat(b',') {
            self.ws();
            return Some(true);
        }
        self.expect(b'}')?;
        Some(false)
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.at + word.len();
        (self.text.get(self.at..end) == Some(word)).then(|| self.at = end)
    }

    /// A string without escapes or control characters (the general decoder
    /// takes any other), its text between the quotes.
    fn plain_str(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let rest = self.text.as_bytes().get(start..)?;
        let end = start + first_to_escape(rest);
        if self.text.as_bytes().get(end) != Some(&b'"') {
            return None;
        }
        self.at = end + 1;
        self.text.get(start..end)
    }

    /// A plain string within `max_string_bytes`, or null (`Some(None)`).
    fn str_or_null(&mut self, ctx: &Ctx) -> Option<Option<CompactString>> {
        if self.peek() == Some(b'n') {
            self.literal("null")?;
            return Some(None);
        }
        let s = self.plain_str()?;
        (s.len() <= ctx.limits.max_string_bytes).then(|| Some(CompactString::from(s)))
    }

    /// A whole number of at most 18 digits (so it cannot overflow), without
    /// a leading zero, not `-0` (a float to serde_json) and not followed by
    /// a fraction or an exponent.
    fn int(&mut self) -> Option<i64> {
        let negative = self.eat(b'-');
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut value: i64 = 0;
        while let Some(&d) = bytes.get(self.at).filter(|d| d.is_ascii_digit()) {
            if self.at - start == 18 {
                return None;
            }
            value = value * 10 + i64::from(d - b'0');
            self.at += 1;
        }
        let digits = self.at - start;
        if digits == 0 || (digits > 1 && bytes.get(start) == Some(&b'0')) {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        match negative {
            false => Some(value),
            true if value == 0 => None,
            true => Some(-value),
        }
    }

    /// `timestamp`: integer milliseconds, RFC 3339 text, or null.
    fn timestamp(&mut self, ctx: &Ctx) -> Option<Option<i64>> {
        match self.peek()? {
            b'n' => self.literal("null").map(|()| None),
            b'"' => {
                let text = self.plain_str()?;
                if text.len() > ctx.limits.max_string_bytes {
                    return None;
                }
                parse_rfc3339(text).map(Some)
            }
            _ => self.int().map(Some),
        }
    }

    /// A top-level property value: a plain string, a whole number, a
    /// boolean or null.
    fn value(&mut self, ctx: &Ctx) -> Option<Value> {
        Some(match self.peek()? {
            b'"' => {
                let s = self.plain_str()?;
                if s.len() > ctx.limits.max_string_bytes {
                    return None;
                }
                Value::Str(CompactString::from(s))
            }
            b'n' => self.literal("null").map(|()| Value::Null)?,
            b't' => self.literal("true").map(|()| Value::Bool(true))?,
            b'f' => self.literal("false").map(|()| Value::Bool(false))?,
            _ => Value::Int(self.int()?),
        })
    }

    /// `properties`: a flat object within the key and count limits, or
    /// null.
    fn properties(&mut self, ctx: &Ctx) -> Option<Vec<(CompactString, Value)>> {
        let mut props = Vec::new();
        if self.peek() == Some(b'n') {
            self.literal("null")?;
            return Some(props);
        }
        self.expect(b'{')?;
        self.ws();
        if self.eat(b'}') {
            return Some(props);
        }
        loop {
            let key = self.plain_str()?;
            if key.len() > ctx.limits.max_key_bytes || props.len() >= ctx.limits.max_properties {
                return None;
            }
            self.ws();
            self.expect(b':')?;
            self.ws();
            let value = self.value(ctx)?;
            props.push((CompactString::from(key), value));
            if !self.next_member()? {
                break;
            }
        }
        dedup_last_wins(&mut props);
        Some(props)
    }
}
