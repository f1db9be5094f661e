//! User-agent parsing: one pass over the bytes, no allocation.
//!
//! A user agent is `Product/version` tokens with parenthesised comments,
//! e.g. `Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36
//! (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91`.
//! The platform comes from the first comment's `;`-separated items, the
//! browser from the space-separated tokens after it. Tokens are found eight
//! bytes at a time and matched by prefix as integers, not with `memcmp`:
//! this runs on every event. Browsers built on Chrome also claim to be Chrome and Safari, so
//! every browser has a rank and the highest-ranked token wins:
//! Edge > Opera > Samsung Internet and the like > Firefox > Chrome > Safari.
//! Names follow PostHog's: Safari on iPhone and iPad is `Mobile Safari`.

use crate::bytes::{find, has};

/// What a user agent says about the browser, OS and device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserAgent<'a> {
    /// Browser name, e.g. `Chrome`.
    pub browser: Option<&'static str>,
    /// The browser's full version token, e.g. `120.0.6099.109`; empty if
    /// unknown.
    pub version: &'a str,
    /// Operating system, e.g. `Mac OS X`.
    pub os: Option<&'static str>,
    /// `Desktop`, `Mobile` or `Tablet`; `None` if nothing was recognised.
    pub device_type: Option<&'static str>,
}

/// Parse state: the best browser and OS so far, by rank.
#[derive(Default)]
struct Scan<'a> {
    browser_rank: u8,
    browser: Option<&'static str>,
    version: &'a str,
    /// `Version/x` (Safari's version).
    safari_version: &'a str,
    /// `rv:x` (IE 11's version).
    rv: &'a str,
    os_rank: u8,
    os: Option<&'static str>,
    mobile: bool,
    tablet: bool,
}

impl<'a> Scan<'a> {
    #[inline]
    fn browser(&mut self, rank: u8, name: &'static str, version: &'a str) {
        if rank > self.browser_rank {
            self.browser_rank = rank;
            self.browser = Some(name);
            self.version = version;
        }
    }

    #[inline]
    fn os(&mut self, rank: u8, name: &'static str) {
        if rank > self.os_rank {
            self.os_rank = rank;
            self.os = Some(name);
        }
    }

    /// One `;`-separated item of the platform comment: `ua[at..end]`.
    fn comment_item(&mut self, ua: &'a str, at: usize, end: usize) {
        let b = ua.as_bytes();
        let len = end - at;
        match b[at] {
            b'W' if has!(b, at, b"Windows Phone") => {
                self.os(5, "Windows Phone");
                self.mobile = true;
            }
            b'W' if has!(b, at, b"Windows") => self.os(2, "Windows"),
            b'M' if has!(b, at, b"Macintosh") => self.os(2, "Mac OS X"),
            b'M' if len == 6 && has!(b, at, b"Mobile") => self.mobile = true,
            b'M' if has!(b, at, b"MSIE ") => {
                self.browser(2, "Internet Explorer", &ua[at + 5..end]);
            }
            b'i' if has!(b, at, b"iPhone") || has!(b, at, b"iPod") => {
                self.os(5, "iOS");
                self.mobile = true;
            }
            b'i' if has!(b, at, b"iPad") => {
                self.os(5, "iOS");
                self.tablet = true;
            }
            b'A' if has!(b, at, b"Android") => self.os(4, "Android"),
            b'C' if has!(b, at, b"CrOS") => self.os(4, "Chrome OS"),
            b'L' if has!(b, at, b"Linux") => self.os(1, "Linux"),
            b'X' if len == 3 && has!(b, at, b"X11") => self.os(1, "Linux"),
            b'U' if len == 6 && has!(b, at, b"Ubuntu") => self.os(1, "Linux"),
            b'T' if len == 6 && has!(b, at, b"Tablet") => self.tablet = true,
            // IE 11: `Trident/7.0; rv:11.0` (the version is `rv`).
            b'T' if has!(b, at, b"Trident/") => self.browser(2, "Internet Explorer", ""),
            b'r' if has!(b, at, b"rv:") => self.rv = &ua[at + 3..end],
            _ => {}
        }
    }

    /// One space-separated token after the platform comment, `ua[at..end]`,
    /// e.g. `Chrome/120.0.6099.109`: matched by prefix, one or two integer
    /// compares per candidate.
    fn product(&mut self, ua: &'a str, at: usize, end: usize) {
        let b = ua.as_bytes();
        // The version after a `name/` prefix of `skip` bytes.
        let version = |skip: usize| {
            let mut v_end = end;
            while v_end > at + skip && matches!(b[v_end - 1], b')' | b';' | b',') {
                v_end -= 1;
            }
            ua.get(at + skip..v_end).unwrap_or("")
        };
        match b[at] {
            b'C' if has!(b, at, b"Chrome/") => self.browser(4, "Chrome", version(7)),
            b'C' if has!(b, at, b"CriOS/") => self.browser(4, "Chrome", version(6)),
            b'C' if has!(b, at, b"Chromium/") => self.browser(4, "Chrome", version(9)),
            b'S' if has!(b, at, b"Safari/") => self.browser(3, "Safari", ""),
            b'S' if has!(b, at, b"SamsungBrowser/") => {
                self.browser(7, "Samsung Internet", version(15));
            }
            b'V' if has!(b, at, b"Version/") => self.safari_version = version(8),
            b'V' if has!(b, at, b"Vivaldi/") => self.browser(7, "Vivaldi", version(8)),
            // `Mobile/15E148` (iOS) and `Mobile Safari/537.36` (Android).
            b'M' if has!(b, at, b"Mobile") => self.mobile = true,
            b'E' if has!(b, at, b"Edg/") => self.browser(9, "Edge", version(4)),
            b'E' if has!(b, at, b"Edge/") || has!(b, at, b"EdgA/") => {
                self.browser(9, "Edge", version(5));
            }
            b'E' if has!(b, at, b"EdgiOS/") => self.browser(9, "Edge", version(7)),
            b'O' if has!(b, at, b"OPR/") || has!(b, at, b"OPT/") => {
                self.browser(8, "Opera", version(4));
            }
            b'O' if has!(b, at, b"Opera/") || has!(b, at, b"OPiOS/") => {
                self.browser(8, "Opera", version(6));
            }
            b'F' if has!(b, at, b"Firefox/") => self.browser(5, "Firefox", version(8)),
            b'F' if has!(b, at, b"FxiOS/") => self.browser(5, "Firefox", version(6)),
            b'H' if has!(b, at, b"HeadlessChrome/") => self.browser(4, "Chrome", version(15)),
            b'Y' if has!(b, at, b"YaBrowser/") => self.browser(7, "Yandex Browser", version(10)),
            b'U' if has!(b, at, b"UCBrowser/") => self.browser(7, "UC Browser", version(10)),
            _ => {}
        }
    }
}

/// Parse a user agent string.
pub fn parse_user_agent(ua: &str) -> UserAgent<'_> {
    let b = ua.as_bytes();
    let mut scan = Scan::default();

    // The platform comment: the first `( ... )`. Its `;`-separated items
    // name the OS (and IE).
    let mut products_from = 0;
    if let Some(open) = find(b, [b'('], 0) {
        let close = find(b, [b')'], open + 1).unwrap_or(b.len());
        let mut item = open + 1;
        while item < close {
            while item < close && b[item] == b' ' {
                item += 1;
            }
            let end = find(&b[..close], [b';'], item).unwrap_or(close);
            if item < end {
                scan.comment_item(ua, item, end);
            }
            item = end + 1;
        }
        products_from = close + 1;
        // Presto-era Opera puts its name first: `Opera/9.80 (Windows ...)`.
        if b.starts_with(b"Opera/") {
            scan.product(ua, 0, find(b, [b' '], 0).unwrap_or(open));
        }
    }

    // Product tokens after the comment, split at spaces; later comments
    // (`(KHTML, like Gecko)`) are skipped whole.
    let mut at = products_from;
    while at < b.len() {
        match b[at] {
            b' ' => at += 1,
            b'(' => at = find(b, [b')'], at).map_or(b.len(), |close| close + 1),
            _ => {
                let end = find(b, [b' '], at).unwrap_or(b.len());
                scan.product(ua, at, end);
                at = end + 1;
            }
        }
    }

    if scan.browser == Some("Internet Explorer") && scan.version.is_empty() {
        scan.version = scan.rv;
    }
    if scan.browser == Some("Safari") {
        scan.version = scan.safari_version;
        if scan.mobile {
            // iOS's Safari (`Version/17.1 Mobile/15E148 Safari/604.1`).
            scan.browser = Some("Mobile Safari");
        }
    }
    let device_type = if scan.tablet {
        Some("Tablet")
    } else if scan.mobile {
        Some("Mobile")
    } else if scan.os == Some("Android") {
        // Android tablets leave out `Mobile`.
        Some("Tablet")
    } else if scan.os.is_some() || scan.browser.is_some() {
        Some("Desktop")
    } else {
        None
    };
    UserAgent {
        browser: scan.browser,
        version: scan.version,
        os: scan.os,
        device_type,
    }
}
