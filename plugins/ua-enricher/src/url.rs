//! Split a URL into host and pathname by hand:
//! `scheme://[user@]host[:port]/path?query#fragment`.

use crate::bytes::find;

/// The host (with port, like `location.host`) and pathname (no query or
/// fragment, `/` if empty) of `url`. A URL without `scheme://` (or `//`) has
/// no host; one that starts with `/` still has a pathname.
pub fn split_url(url: &str) -> (Option<&str>, Option<&str>) {
    let b = url.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'+' | b'-' | b'.')) {
        i += 1;
    }
    let authority_start = if i > 0 && b[i..].starts_with(b"://") {
        i + 3
    } else if b.starts_with(b"//") {
        2
    } else if b.first() == Some(&b'/') {
        return (None, Some(pathname(url, 0)));
    } else {
        return (None, None);
    };
    // `[user[:password]@]host[:port]`, up to the path, query or fragment.
    let end = find(b, [b'/', b'?', b'#'], authority_start).unwrap_or(b.len());
    let host_start = match find(&b[..end], [b'@'], authority_start) {
        // The last `@` ends the user info.
        Some(_) => b[..end]
            .iter()
            .rposition(|&c| c == b'@')
            .map_or(end, |at| at + 1),
        None => authority_start,
    };
    let host = (host_start < end).then(|| &url[host_start..end]);
    (host, Some(pathname(url, end)))
}

/// The path starting at `url[from..]` (up to `?` or `#`), or `/` if there
/// is none.
fn pathname(url: &str, from: usize) -> &str {
    let end = find(url.as_bytes(), [b'?', b'#'], from).unwrap_or(url.len());
    if end == from { "/" } else { &url[from..end] }
}
