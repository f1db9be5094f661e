use super::*;
use eddy_plugin_sdk::{NewEvent, testing};

const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36";
const EDGE_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91";
const OPERA_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36 OPR/105.0.0.0";
const SAMSUNG: &str = "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36";
const SAFARI_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15";
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
const SAFARI_IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
const CHROME_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1";
const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";
const FIREFOX_ANDROID: &str =
    "Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0";
const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36";
const CHROME_ANDROID_TABLET: &str = "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Safari/537.36";
const CHROME_OS: &str = "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const IE11: &str = "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko";
const IE10: &str = "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; Trident/6.0)";

fn ua(
    s: &str,
) -> (
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
) {
    let p = parse_user_agent(s);
    (p.browser, p.os, p.device_type)
}

#[test]
fn desktop_browsers() {
    assert_eq!(
        ua(CHROME_WIN),
        (Some("Chrome"), Some("Windows"), Some("Desktop"))
    );
    assert_eq!(
        ua(SAFARI_MAC),
        (Some("Safari"), Some("Mac OS X"), Some("Desktop"))
    );
    assert_eq!(
        ua(FIREFOX_LINUX),
        (Some("Firefox"), Some("Linux"), Some("Desktop"))
    );
    assert_eq!(
        ua(CHROME_OS),
        (Some("Chrome"), Some("Chrome OS"), Some("Desktop"))
    );
}

#[test]
fn chromium_based_browsers_are_not_chrome() {
    assert_eq!(
        ua(EDGE_WIN),
        (Some("Edge"), Some("Windows"), Some("Desktop"))
    );
    assert_eq!(
        ua(OPERA_MAC),
        (Some("Opera"), Some("Mac OS X"), Some("Desktop"))
    );
    assert_eq!(
        ua(SAMSUNG),
        (Some("Samsung Internet"), Some("Android"), Some("Mobile"))
    );
}

#[test]
fn mobile_and_tablet() {
    assert_eq!(
        ua(SAFARI_IPHONE),
        (Some("Mobile Safari"), Some("iOS"), Some("Mobile"))
    );
    assert_eq!(
        ua(SAFARI_IPAD),
        (Some("Mobile Safari"), Some("iOS"), Some("Tablet"))
    );
    assert_eq!(
        ua(CHROME_IOS),
        (Some("Chrome"), Some("iOS"), Some("Mobile"))
    );
    assert_eq!(
        ua(CHROME_ANDROID),
        (Some("Chrome"), Some("Android"), Some("Mobile"))
    );
    assert_eq!(
        ua(FIREFOX_ANDROID),
        (Some("Firefox"), Some("Android"), Some("Mobile"))
    );
    assert_eq!(
        ua(CHROME_ANDROID_TABLET),
        (Some("Chrome"), Some("Android"), Some("Tablet"))
    );
}

#[test]
fn other_browsers() {
    let opera_presto = "Opera/9.80 (Windows NT 6.1; U; en) Presto/2.12.388 Version/12.16";
    assert_eq!(
        ua(opera_presto),
        (Some("Opera"), Some("Windows"), Some("Desktop"))
    );
    let edge_android = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36 EdgA/120.0.2210.115";
    assert_eq!(
        ua(edge_android),
        (Some("Edge"), Some("Android"), Some("Mobile"))
    );
    assert_eq!(parse_user_agent(edge_android).version, "120.0.2210.115");
    let firefox_ios = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/121.0 Mobile/15E148 Safari/605.1.15";
    assert_eq!(
        ua(firefox_ios),
        (Some("Firefox"), Some("iOS"), Some("Mobile"))
    );
    let legacy_edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19582";
    assert_eq!(parse_user_agent(legacy_edge).browser, Some("Edge"));
    assert_eq!(parse_user_agent(legacy_edge).version, "18.19582");
    // A trailing comment does not hide the browser.
    let googlebot_phone = "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.71 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    assert_eq!(
        ua(googlebot_phone),
        (Some("Chrome"), Some("Android"), Some("Mobile"))
    );
    let windows_phone = "Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/52.0.2743.116 Mobile Safari/537.36 Edge/15.15063";
    assert_eq!(
        ua(windows_phone),
        (Some("Edge"), Some("Windows Phone"), Some("Mobile"))
    );
}

#[test]
fn internet_explorer() {
    let ie11 = parse_user_agent(IE11);
    assert_eq!(
        (ie11.browser, ie11.version),
        (Some("Internet Explorer"), "11.0")
    );
    let ie10 = parse_user_agent(IE10);
    assert_eq!(
        (ie10.browser, ie10.version),
        (Some("Internet Explorer"), "10.0")
    );
    assert_eq!(ie10.os, Some("Windows"));
}

#[test]
fn versions() {
    assert_eq!(parse_user_agent(CHROME_WIN).version, "120.0.6099.109");
    assert_eq!(parse_user_agent(EDGE_WIN).version, "120.0.2210.91");
    assert_eq!(parse_user_agent(FIREFOX_LINUX).version, "121.0");
    assert_eq!(parse_user_agent(SAFARI_IPHONE).version, "17.1");
    assert_eq!(parse_user_agent(SAMSUNG).version, "23.0");
}

#[test]
fn unknown_user_agents_set_nothing() {
    assert_eq!(parse_user_agent(""), UserAgent::default());
    assert_eq!(parse_user_agent("curl/8.4.0"), UserAgent::default());
    assert_eq!(parse_user_agent("////(((;;;)))"), UserAgent::default());
}

#[test]
fn find_matches_naive_search() {
    let hay = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Firefox/121.0 end/";
    for from in 0..=hay.len() {
        for needle in [b'/', b'(', b')', b'z', b'#'] {
            let naive = hay[from..]
                .iter()
                .position(|&c| c == needle)
                .map(|p| p + from);
            assert_eq!(bytes::find(hay, [needle], from), naive, "{needle} {from}");
        }
        let naive = hay[from..]
            .iter()
            .position(|&c| matches!(c, b';' | b'/' | b'x'))
            .map(|p| p + from);
        assert_eq!(bytes::find(hay, [b';', b'/', b'x'], from), naive, "{from}");
    }
}

#[test]
fn prefixes() {
    let b = b"Windows Phone 10.0; SamsungBrowser/23";
    assert!(bytes::has!(b, 0, b"Windows"));
    assert!(bytes::has!(b, 0, b"Windows Phone"));
    assert!(!bytes::has!(b, 0, b"Windows Phone 8"));
    assert!(bytes::has!(b, 20, b"SamsungBrowser/"));
    // Past the end reads as zeros, which no prefix contains.
    assert!(!bytes::has!(b, 34, b"/23 "));
    assert!(bytes::has!(b, 34, b"/23"));
}

#[test]
fn urls() {
    assert_eq!(
        split_url("https://example.com:8443/a/b?q=1#frag"),
        (Some("example.com:8443"), Some("/a/b"))
    );
    assert_eq!(
        split_url("https://example.com"),
        (Some("example.com"), Some("/"))
    );
    assert_eq!(
        split_url("http://example.com?x=1"),
        (Some("example.com"), Some("/"))
    );
    assert_eq!(
        split_url("http://example.com#top"),
        (Some("example.com"), Some("/"))
    );
    assert_eq!(
        split_url("https://user:pw@app.example.com/login#x"),
        (Some("app.example.com"), Some("/login"))
    );
    assert_eq!(
        split_url("//cdn.example.com/x.js"),
        (Some("cdn.example.com"), Some("/x.js"))
    );
    assert_eq!(
        split_url("/relative/path?x"),
        (None, Some("/relative/path"))
    );
    assert_eq!(split_url("not a url"), (None, None));
    assert_eq!(split_url(""), (None, None));
}

fn enrich(props: &[(&str, &str)]) -> NewEvent {
    let mut event = NewEvent {
        name: "$pageview".into(),
        ..Default::default()
    };
    for (k, v) in props {
        event.set(k, *v);
    }
    let mut out = testing::run::<UaEnricher>("{}", vec![event]).unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0)
}

fn prop<'a>(e: &'a NewEvent, key: &str) -> Option<&'a str> {
    e.get(key).and_then(|v| v.as_str())
}

#[test]
fn enriches_event() {
    let e = enrich(&[
        ("$user_agent", EDGE_WIN),
        (
            "$current_url",
            "https://shop.example.com:8080/cart/items?id=3#summary",
        ),
    ]);
    assert_eq!(prop(&e, "$browser"), Some("Edge"));
    assert_eq!(prop(&e, "$os"), Some("Windows"));
    assert_eq!(prop(&e, "$device_type"), Some("Desktop"));
    assert_eq!(prop(&e, "$host"), Some("shop.example.com:8080"));
    assert_eq!(prop(&e, "$pathname"), Some("/cart/items"));
    assert_eq!(prop(&e, "$user_agent"), Some(EDGE_WIN));
    #[cfg(feature = "browser-version")]
    assert_eq!(prop(&e, "$browser_version"), Some("120.0.2210.91"));
    #[cfg(not(feature = "browser-version"))]
    assert_eq!(e.get("$browser_version"), None);
}

#[test]
fn overwrites_existing_properties() {
    let e = enrich(&[
        ("$user_agent", SAFARI_IPAD),
        ("$browser", "stale"),
        ("$device_type", "Desktop"),
        ("$current_url", "https://example.com"),
        ("$pathname", "/old"),
    ]);
    assert_eq!(prop(&e, "$browser"), Some("Mobile Safari"));
    assert_eq!(prop(&e, "$device_type"), Some("Tablet"));
    assert_eq!(prop(&e, "$pathname"), Some("/"));
}

#[test]
fn leaves_events_without_inputs_alone() {
    let e = enrich(&[("other", "x")]);
    assert_eq!(e.properties.len(), 1);
    let e = enrich(&[("$user_agent", "curl/8.4.0")]);
    assert_eq!(e.properties.len(), 1);
}

#[test]
fn rejects_config() {
    let err = testing::run::<UaEnricher>(r#"{"browser_version": true}"#, vec![])
        .err()
        .unwrap();
    assert!(err.contains("`browser_version`"), "{err}");
}
