//! Drops events whose user agent looks like a bot, crawler or script:
//! case-insensitive substring match against a list of patterns.

use eddy_plugin_sdk::{Config, Event, Outcome, Processor};
use serde::Deserialize;

mod matcher;

pub use matcher::Matcher;

/// Patterns matched when the config sets no `patterns`.
pub const DEFAULT_PATTERNS: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "crawling",
    "slurp",
    "archiver",
    "scraper",
    "facebookexternalhit",
    "facebookcatalog",
    "embedly",
    "quora link preview",
    "outbrain",
    "vkshare",
    "w3c_validator",
    "headlesschrome",
    "phantomjs",
    "lighthouse",
    "pagespeed",
    "gtmetrix",
    "pingdom",
    "uptimerobot",
    "statuscake",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "go-http-client",
    "java/",
    "apache-httpclient",
    "node-fetch",
    "axios/",
    "libwww-perl",
    "httpie",
    "postmanruntime",
    "insomnia",
    "scrapy",
    "ahrefs",
    "semrush",
    "mj12",
    "baiduspider",
    "bingpreview",
    "mediapartners-google",
    "adsbot-google",
    "google-inspectiontool",
    "googleother",
    "prerender",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    patterns: Option<Vec<String>>,
    #[serde(default)]
    extra_patterns: Vec<String>,
    #[serde(default = "default_property")]
    property: String,
}

fn default_property() -> String {
    "$user_agent".to_owned()
}

/// The filter.
pub struct BotFilter {
    matcher: Matcher,
    property: String,
}

impl Processor for BotFilter {
    const CONFIG_SCHEMA: &'static str = r#"{
  "type": "object",
  "properties": {
    "patterns": {"type": "array", "items": {"type": "string"}, "description": "Replaces the built-in list of case-insensitive substrings that mark a bot"},
    "extra_patterns": {"type": "array", "items": {"type": "string"}, "default": [], "description": "Appended to the pattern list"},
    "property": {"type": "string", "default": "$user_agent", "description": "Property holding the user agent"}
  },
  "additionalProperties": false
}"#;

    fn new(config: Config) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        let base = match settings.patterns {
            Some(list) => list,
            None => DEFAULT_PATTERNS.iter().map(|p| (*p).to_owned()).collect(),
        };
        Ok(BotFilter {
            matcher: Matcher::new(base.into_iter().chain(settings.extra_patterns))?,
            property: settings.property,
        })
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        match event.str(&self.property) {
            Some(ua) if self.matcher.matches(ua) => Outcome::Drop,
            _ => Outcome::Keep,
        }
    }
}

eddy_plugin_sdk::processor!(BotFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_plugin_sdk::{NewEvent, testing};

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    fn ua_event(key: &str, ua: &str) -> NewEvent {
        NewEvent {
            name: "$pageview".into(),
            ..Default::default()
        }
        .with(key, ua)
    }

    fn kept(config: &str, uas: &[&str]) -> Vec<String> {
        let events = uas.iter().map(|ua| ua_event("$user_agent", ua)).collect();
        testing::run::<BotFilter>(config, events)
            .unwrap()
            .iter()
            .map(|e| {
                e.get("$user_agent")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn drops_known_bots_keeps_browsers() {
        let uas = [
            GOOGLEBOT,
            CHROME,
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "curl/8.4.0",
            "Wget/1.21.4",
            "python-requests/2.31.0",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.109 Safari/537.36",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Chrome-Lighthouse",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
        ];
        assert_eq!(
            kept("{}", &uas),
            vec![CHROME.to_owned(), uas[10].to_owned()]
        );
    }

    #[test]
    fn match_is_case_insensitive() {
        assert!(kept("{}", &["SOME-CRAWLER/1.0", "MySpIdEr"]).is_empty());
    }

    #[test]
    fn events_without_user_agent_pass() {
        let events = vec![
            NewEvent::default(),
            NewEvent::default().with("$user_agent", 42),
        ];
        assert_eq!(testing::run::<BotFilter>("{}", events).unwrap().len(), 2);
    }

    #[test]
    fn patterns_replace_defaults() {
        let out = kept(
            r#"{"patterns": ["Internal-Monitor"]}"#,
            &[GOOGLEBOT, "internal-monitor/2", CHROME],
        );
        assert_eq!(out, vec![GOOGLEBOT.to_owned(), CHROME.to_owned()]);
    }

    #[test]
    fn extra_patterns_extend_defaults() {
        let out = kept(
            r#"{"extra_patterns": ["Chrome/120"]}"#,
            &[GOOGLEBOT, CHROME, "Firefox/121.0"],
        );
        assert_eq!(out, vec!["Firefox/121.0".to_owned()]);
    }

    #[test]
    fn property_is_configurable() {
        let events = vec![
            ua_event("ua", GOOGLEBOT),
            ua_event("$user_agent", GOOGLEBOT),
        ];
        let out = testing::run::<BotFilter>(r#"{"property": "ua"}"#, events).unwrap();
        assert_eq!(out.len(), 1);
        assert!(out[0].get("ua").is_none());
    }

    #[test]
    fn unknown_config_key_is_named() {
        let err = testing::run::<BotFilter>(r#"{"pattern": ["x"]}"#, vec![])
            .err()
            .unwrap();
        assert!(err.contains("unknown field `pattern`"), "{err}");
    }

    #[test]
    fn matcher_handles_edges() {
        let mut m = Matcher::new([
            "ab".to_owned(),
            "".to_owned(),
            "x".to_owned(),
            "ÜBER".to_owned(),
        ])
        .unwrap();
        assert!(m.matches("zzAB"));
        assert!(m.matches("X"));
        assert!(m.matches("das ist über-bot"));
        assert!(!m.matches("a b"));
        assert!(!m.matches(""));
        let mut none = Matcher::new(Vec::new()).unwrap();
        assert!(!none.matches("Googlebot"));
    }

    #[test]
    fn schema_is_json() {
        assert!(BotFilter::CONFIG_SCHEMA.starts_with('{'));
        assert!(BotFilter::CONFIG_SCHEMA.contains("\"extra_patterns\""));
    }
}
