//! Split a URL into host and pathname by hand:
//! `scheme://[user@]host[:port]/path?query#fragment`.

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
    let mut host_start = authority_start;
    let mut i = authority_start;
    while i < b.len() {
        match b[i] {
            b'/' | b'?' | b'#' => break,
            b'@' => host_start = i + 1,
            _ => {}
        }
        i += 1;
    }
    let host = (host_start < i).then(|| &url[host_start..i]);
    (host, Some(pathname(url, i)))
}

/// The path starting at `url[from..]` (up to `?` or `#`), or `/` if there
/// is none.
fn pathname(url: &str, from: usize) -> &str {
    let b = url.as_bytes();
    let mut end = from;
    while end < b.len() && b[end] != b'?' && b[end] != b'#' {
        end += 1;
    }
    if end == from { "/" } else { &url[from..end] }
}
