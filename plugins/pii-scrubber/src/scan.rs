//! Hand-written scanners for email and IP addresses in free text.

use std::net::{Ipv4Addr, Ipv6Addr};

/// What a match is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `local@domain.tld` (also `local%40domain.tld`, as in URLs).
    Email,
    /// An IPv4 or IPv6 address.
    Ip,
}

/// One address found in a string: `text[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
    /// Email or IP.
    pub kind: Kind,
}

fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-')
}

fn is_ip_char(c: u8) -> bool {
    c.is_ascii_hexdigit() || matches!(c, b':' | b'.')
}

/// Characters that glue an address to surrounding text (so `v1.2.3.4` or
/// `x@y.com_z` are not addresses).
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Find every email and IP address in `text`, in order, into `out`
/// (cleared first). Matches never overlap.
pub fn find_pii(text: &str, out: &mut Vec<Match>) {
    out.clear();
    let b = text.as_bytes();
    // Quick reject: every address needs one of these.
    if !b.iter().any(|&c| matches!(c, b'@' | b'%' | b'.' | b':')) {
        return;
    }
    let mut floor = 0; // matches may not start before this
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let at_len = match c {
            b'@' => 1,
            b'%' if b[i + 1..].starts_with(b"40") => 3,
            _ => 0,
        };
        if at_len > 0 {
            if let Some(m) = email_at(b, i, at_len, floor) {
                out.push(m);
                floor = m.end;
                i = m.end;
            } else {
                i += at_len;
            }
            continue;
        }
        let starts_token = i == 0 || !(is_word(b[i - 1]) || matches!(b[i - 1], b'.' | b':'));
        if is_ip_char(c) && c != b'.' && starts_token {
            let run_end = i + b[i..].iter().take_while(|&&c| is_ip_char(c)).count();
            // A sentence may end right after an address.
            let mut end = run_end;
            while end > i && b[end - 1] == b'.' {
                end -= 1;
            }
            let glued = b.get(run_end).is_some_and(|&c| is_word(c));
            // `run_end` stops at an `@`: the run is an email's local part.
            let is_email_local = b.get(run_end) == Some(&b'@');
            if !glued
                && !is_email_local
                && let Some(len) = ip_len(&text[i..end])
            {
                out.push(Match {
                    start: i,
                    end: i + len,
                    kind: Kind::Ip,
                });
                floor = i + len;
            }
            i = run_end.max(i + 1);
            continue;
        }
        i += 1;
    }
}

/// An email whose `@` (or `%40`, `at_len` bytes) is at `at`.
fn email_at(b: &[u8], at: usize, at_len: usize, floor: usize) -> Option<Match> {
    let mut start = at;
    while start > floor && is_local(b[start - 1]) {
        start -= 1;
    }
    while start < at && b[start] == b'.' {
        start += 1;
    }
    if start == at || (start > 0 && is_word(b[start - 1])) {
        return None;
    }
    let domain_start = at + at_len;
    let mut end = domain_start;
    while end < b.len() && is_domain(b[end]) {
        end += 1;
    }
    while end > domain_start && matches!(b[end - 1], b'.' | b'-') {
        end -= 1;
    }
    let domain = &b[domain_start..end];
    let dot = domain.iter().rposition(|&c| c == b'.')?;
    let tld = &domain[dot + 1..];
    let valid = dot > 0
        && tld.len() >= 2
        && tld.iter().all(u8::is_ascii_alphabetic)
        && !domain.windows(2).any(|w| w == b"..")
        && b.get(end).is_none_or(|&c| c != b'_');
    valid.then_some(Match {
        start,
        end,
        kind: Kind::Email,
    })
}

/// The length of the IP address `token` is, or starts with (an IPv4
/// address followed by `:port`).
fn ip_len(token: &str) -> Option<usize> {
    let colons = token.bytes().filter(|&c| c == b':').count();
    // At least two colons and one digit: `::` alone is not worth flagging.
    if colons >= 2
        && token.bytes().any(|c| c.is_ascii_hexdigit())
        && token.parse::<Ipv6Addr>().is_ok()
    {
        return Some(token.len());
    }
    let v4 = token.split(':').next().unwrap_or(token);
    v4.parse::<Ipv4Addr>().is_ok().then_some(v4.len())
}
