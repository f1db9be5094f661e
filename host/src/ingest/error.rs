//! Whole-request errors and the helpers that keep error texts short.

use compact_str::CompactString;

/// Most bytes of client text (a field name, a token) quoted in an error
/// message, so a hostile request cannot make its error response huge.
pub(crate) const PREVIEW_BYTES: usize = 64;

/// A request the HTTP layer answers with a 4xx as a whole (nothing accepted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No events: empty body, whitespace, `[]`, or NDJSON of blank lines.
    #[error("request body holds no events")]
    EmptyBody,
    /// The body (after decompression) is not UTF-8.
    #[error("request body is not valid UTF-8: invalid byte at offset {offset}")]
    InvalidUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// The body is not JSON; the text is serde_json's, with line and column.
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// Objects/arrays nested deeper than [`super::Limits::body_max_depth`].
    #[error("JSON is nested deeper than {limit} levels")]
    TooDeep {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// Valid JSON of the wrong shape, e.g. a top-level number, or a PostHog
    /// `batch` that is not an array.
    #[error("{0}")]
    InvalidShape(String),
    /// More events than [`super::Limits::max_events_per_request`].
    #[error("too many events in one request; the limit is {limit}")]
    TooManyEvents {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// gzip output larger than [`super::Limits::max_decompressed_bytes`].
    #[error("decompressed body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The body claims to be gzip but is not.
    #[error("request body is not valid gzip: {0}")]
    BadGzip(String),
    /// A compression eddy does not decode (e.g. PostHog's legacy `lz64`),
    /// or an unknown `Content-Encoding`.
    #[error("unsupported compression `{0}`; supported: gzip, gzip-js, base64")]
    UnsupportedEncoding(String),
    /// A form-encoded PostHog body without a usable `data` field.
    #[error("bad form body: {0}")]
    BadForm(String),
    /// PostHog events of one request carry different API tokens.
    #[error("events in one request carry different API tokens")]
    MixedTokens,
}

impl DecodeError {
    /// HTTP status: 413 when the request is too large, 415 for an
    /// unsupported encoding, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            DecodeError::TooManyEvents { .. } | DecodeError::BodyTooLarge { .. } => 413,
            DecodeError::UnsupportedEncoding(_) => 415,
            _ => 400,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::EmptyBody => "empty_body",
            DecodeError::InvalidUtf8 { .. } => "invalid_utf8",
            DecodeError::InvalidJson(_) => "invalid_json",
            DecodeError::TooDeep { .. } => "too_deep",
            DecodeError::InvalidShape(_) => "invalid_shape",
            DecodeError::TooManyEvents { .. } => "too_many_events",
            DecodeError::BodyTooLarge { .. } => "body_too_large",
            DecodeError::BadGzip(_) => "bad_gzip",
            DecodeError::UnsupportedEncoding(_) => "unsupported_encoding",
            DecodeError::BadForm(_) => "bad_form",
            DecodeError::MixedTokens => "mixed_tokens",
        }
    }
}

/// `text` cut to [`PREVIEW_BYTES`] on a char boundary, `…` marking a cut.
pub(crate) fn preview(text: &str) -> String {
    if text.len() <= PREVIEW_BYTES {
        return text.to_owned();
    }
    let mut end = PREVIEW_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", text.get(..end).unwrap_or_default())
}

/// [`preview`] as a `CompactString` (inline for short keys: no allocation).
pub(crate) fn preview_compact(text: &str) -> CompactString {
    if text.len() <= PREVIEW_BYTES {
        CompactString::from(text)
    } else {
        CompactString::from(preview(text))
    }
}

/// Whole-body error for a serde_json failure: a recursion-limit hit is
/// `too_deep`; a syntax error at `NaN`/`Infinity` says those are not JSON.
pub(crate) fn json_error(err: &serde_json::Error, text: &str, depth_limit: usize) -> DecodeError {
    let msg = err.to_string();
    if msg.starts_with("recursion limit exceeded") {
        return DecodeError::TooDeep { limit: depth_limit };
    }
    DecodeError::InvalidJson(json_message(err, text))
}

/// serde_json's message, plus a hint when it points at `NaN`/`Infinity`.
pub(crate) fn json_message(err: &serde_json::Error, text: &str) -> String {
    let msg = err.to_string();
    if near_non_finite(text, err.line(), err.column()) {
        format!("{msg} (NaN and Infinity are not JSON numbers)")
    } else {
        msg
    }
}

/// Whether `NaN` or `Infinity` appears around serde_json's error position
/// (1-based line; column counts bytes of that line).
fn near_non_finite(text: &str, line: usize, column: usize) -> bool {
    let Some(line_text) = text.split('\n').nth(line.saturating_sub(1)) else {
        return false;
    };
    let bytes = line_text.as_bytes();
    let start = column.saturating_sub(2).min(bytes.len());
    let end = column.saturating_add(8).min(bytes.len());
    let window = bytes.get(start..end).unwrap_or_default();
    [&b"NaN"[..], &b"Infinity"[..]]
        .iter()
        .any(|word| window.windows(word.len()).any(|w| w == *word))
}
