//! Body unwrapping before JSON: gzip with an output cap, UTF-8, and the
//! PostHog wrappings (form-encoded `data=`, base64, `compression` query).

use std::borrow::Cow;
use std::io::Read;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::DecodeError;
use super::error::preview;

/// The two bytes every gzip member starts with (RFC 1952 §2.3.1).
pub(crate) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// First output buffer size for gzip, and the smallest growth step.
const GUNZIP_CHUNK: usize = 16 * 1024;

/// Inflates gzip (concatenated members allowed) into at most `limit` bytes.
/// The buffer grows by doubling but never past `limit + 1`, so a zip bomb
/// costs at most `limit + 1` bytes of memory before it is refused.
pub(crate) fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let cap = limit.saturating_add(1);
    let mut decoder = flate2::read::MultiGzDecoder::new(data);
    // Compressed JSON is typically 4–10x smaller; start near that.
    // (`max` then `min`, not `clamp`: clamp panics when cap < GUNZIP_CHUNK.)
    let mut out = vec![0u8; data.len().saturating_mul(4).max(GUNZIP_CHUNK).min(cap)];
    let mut filled = 0;
    loop {
        if filled == out.len() {
            if out.len() >= cap {
                break;
            }
            let grown = out.len().saturating_mul(2).min(cap);
            out.resize(grown, 0);
        }
        let Some(spare) = out.get_mut(filled..) else {
            break;
        };
        match decoder.read(spare) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DecodeError::BadGzip(e.to_string())),
        }
    }
    if filled > limit {
        return Err(DecodeError::BodyTooLarge { limit });
    }
    out.truncate(filled);
    Ok(out)
}

/// The body as text, or `invalid_utf8` with the offset of the first bad byte.
pub(crate) fn utf8(body: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(body).map_err(|e| DecodeError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })
}

/// PostHog's `compression` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Base64,
}

impl Compression {
    pub fn parse(value: Option<&str>) -> Result<Compression, DecodeError> {
        match value.map(str::trim) {
            None | Some("") => Ok(Compression::None),
            Some(v) if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("gzip-js") => {
                Ok(Compression::Gzip)
            }
            Some(v) if v.eq_ignore_ascii_case("base64") => Ok(Compression::Base64),
            Some(v) => Err(DecodeError::UnsupportedEncoding(preview(v))),
        }
    }
}

/// Whether a content type is form encoding (parameters ignored).
pub(crate) fn is_form(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}

/// Whether a body without a form content type still looks like a form: JSON
/// never starts like this, so sniffing is safe.
pub(crate) fn looks_like_form(body: &[u8]) -> bool {
    body.starts_with(b"data=") || body.starts_with(b"compression=")
}

/// The decoded `data` and `compression` fields of a form body.
pub(crate) struct Form {
    pub data: Vec<u8>,
    pub compression: Option<String>,
}

/// Parses `application/x-www-form-urlencoded`, keeping only the fields
/// PostHog uses. The first `data` wins.
pub(crate) fn parse_form(body: &[u8]) -> Result<Form, DecodeError> {
    let mut data = None;
    let mut compression = None;
    for pair in body.split(|&b| b == b'&') {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (
                pair.get(..eq).unwrap_or_default(),
                pair.get(eq + 1..).unwrap_or_default(),
            ),
            None => (pair, &[][..]),
        };
        match key {
            b"data" if data.is_none() => data = Some(percent_decode(value)?),
            b"compression" if compression.is_none() => {
                let v = percent_decode(value)?;
                compression = Some(String::from_utf8_lossy(&v).into_owned());
            }
            _ => {}
        }
    }
    let data = data.ok_or_else(|| DecodeError::BadForm("no `data` field".to_owned()))?;
    Ok(Form { data, compression })
}

/// Form decoding of one value: `+` is a space, `%XX` a byte.
fn percent_decode(value: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.iter().copied();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.next().and_then(hex);
                let lo = bytes.next().and_then(hex);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(DecodeError::BadForm(
                        "`%` not followed by two hex digits".to_owned(),
                    ));
                };
                out.push(hi << 4 | lo);
            }
            _ => out.push(b),
        }
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Base64 as clients send it: standard or URL-safe alphabet, padding
/// optional, whitespace ignored, and `+` that form decoding turned into a
/// space restored (clients that don't percent-encode `+`).
pub(crate) fn base64_decode(text: &[u8]) -> Result<Vec<u8>, DecodeError> {
    const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    let cleaned: Vec<u8> = text
        .iter()
        .filter(|b| !matches!(b, b'\n' | b'\r' | b'\t'))
        .map(|&b| if b == b' ' { b'+' } else { b })
        .collect();
    let url_safe = cleaned.iter().any(|&b| b == b'-' || b == b'_');
    let engine = if url_safe { &URL_SAFE } else { &STANDARD };
    engine
        .decode(&cleaned)
        .map_err(|e| DecodeError::BadForm(format!("`data` is neither JSON nor base64: {e}")))
}

/// Whether the first non-space byte opens a JSON object or array.
pub(crate) fn starts_json(bytes: &[u8]) -> bool {
    matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// Undoes PostHog's wrappings: gzip (header, query or magic bytes), form
/// `data=` (JSON, or base64 of JSON or of gzip), or a raw base64 body.
pub(crate) fn unwrap_posthog<'b>(
    body: &'b [u8],
    gzip: bool,
    compression: Compression,
    form: bool,
    limit: usize,
) -> Result<Cow<'b, [u8]>, DecodeError> {
    let mut data = Cow::Borrowed(body);
    if gzip || compression == Compression::Gzip || data.starts_with(&GZIP_MAGIC) {
        data = Cow::Owned(gunzip(&data, limit)?);
    }
    if form || looks_like_form(&data) {
        let parsed = parse_form(&data)?;
        let inner = Compression::parse(parsed.compression.as_deref())?;
        let mut payload = if starts_json(&parsed.data) {
            parsed.data
        } else {
            base64_decode(&parsed.data)?
        };
        if inner == Compression::Gzip || payload.starts_with(&GZIP_MAGIC) {
            payload = gunzip(&payload, limit)?;
        }
        return Ok(Cow::Owned(payload));
    }
    if compression == Compression::Base64 && !starts_json(&data) {
        let mut payload = base64_decode(&data)?;
        if payload.starts_with(&GZIP_MAGIC) {
            payload = gunzip(&payload, limit)?;
        }
        return Ok(Cow::Owned(payload));
    }
    Ok(data)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;

    use super::*;

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_round_trip_and_limit_edges() {
        let text = br#"{"name":"a","distinct_id":"u"}"#.repeat(1000);
        let z = gzip(&text);
        assert_eq!(gunzip(&z, text.len()).unwrap(), text);
        let e = gunzip(&z, text.len() - 1).unwrap_err();
        assert_eq!((e.code(), e.status()), ("body_too_large", 413));
        assert_eq!(gunzip(&gzip(b""), 10).unwrap(), b"");
        let two = [gzip(b"ab"), gzip(b"cd")].concat();
        assert_eq!(gunzip(&two, 10).unwrap(), b"abcd");
    }

    #[test]
    fn corrupt_gzip_is_bad_gzip() {
        let mut z = gzip(b"hello world, hello world");
        let mid = z.len() / 2;
        z.truncate(mid);
        assert_eq!(gunzip(&z, 1000).unwrap_err().code(), "bad_gzip");
        assert_eq!(
            gunzip(b"\x1f\x8bnot really", 1000).unwrap_err().code(),
            "bad_gzip"
        );
        assert_eq!(gunzip(b"plain", 1000).unwrap_err().code(), "bad_gzip");
    }

    #[test]
    fn zip_bomb_is_refused_without_inflating_it_all() {
        // 100 MB of zeros compresses to ~100 KB.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..100 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 1 << 20);
        let start = std::time::Instant::now();
        let e = gunzip(&bomb, 1 << 20).unwrap_err();
        assert_eq!((e.code(), e.status()), ("body_too_large", 413));
        // Generous bound: only ~1 MiB may be inflated, not 100 MB.
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn forms_and_base64() {
        let f = parse_form(b"compression=base64&data=eyJhIjoxfQ%3D%3D&x=1").unwrap();
        assert_eq!(f.data, b"eyJhIjoxfQ==");
        assert_eq!(f.compression.as_deref(), Some("base64"));
        assert_eq!(base64_decode(&f.data).unwrap(), br#"{"a":1}"#);
        assert_eq!(base64_decode(b"eyJhIjoxfQ").unwrap(), br#"{"a":1}"#);
        // `+` sent unencoded arrives as a space; "+/8=" decodes to fb ff.
        assert_eq!(base64_decode(b" /8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64_decode(b"-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(
            parse_form(b"data=%7B%22a%22%3A1%7D").unwrap().data,
            br#"{"a":1}"#
        );
        assert_eq!(parse_form(b"x=1").err().unwrap().code(), "bad_form");
        assert_eq!(parse_form(b"data=%4").err().unwrap().code(), "bad_form");
        assert_eq!(parse_form(b"data=%zz").err().unwrap().code(), "bad_form");
        assert_eq!(base64_decode(b"!!!").unwrap_err().code(), "bad_form");
    }

    #[test]
    fn compression_names() {
        assert_eq!(
            Compression::parse(Some("gzip-js")).unwrap(),
            Compression::Gzip
        );
        assert_eq!(Compression::parse(Some("GZIP")).unwrap(), Compression::Gzip);
        assert_eq!(
            Compression::parse(Some("base64")).unwrap(),
            Compression::Base64
        );
        assert_eq!(Compression::parse(None).unwrap(), Compression::None);
        let e = Compression::parse(Some("lz64")).unwrap_err();
        assert_eq!((e.code(), e.status()), ("unsupported_encoding", 415));
        assert!(is_form(Some(
            "application/x-www-form-urlencoded; charset=utf-8"
        )));
        assert!(!is_form(Some("text/plain")));
    }
}
