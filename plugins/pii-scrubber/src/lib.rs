//! Finds email and IP addresses in string (and nested JSON) property values
//! and hashes or removes them, and drops properties that are PII by
//! definition (`$ip` by default).
//!
//! Properties whose key starts with `$` are left alone, except `$current_url`
//! and `$referrer`, which are scanned, and `drop_properties`.

use eddy_plugin_sdk::{Config, Event, Outcome, OwnedValue, Processor, Value};
use serde::Deserialize;
use sha2::{Digest, Sha256};

mod scan;

pub use scan::{Kind, Match, find_pii};

/// `$` properties that are scanned anyway.
const SCANNED_SYSTEM_PROPERTIES: &[&str] = &["$current_url", "$referrer"];

/// What to do with an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Replace it with `sha256:` + 16 hex digits of SHA-256(salt + address).
    #[default]
    Hash,
    /// Remove a property that is just an address; redact addresses inside
    /// longer text as `[email]` / `[ip]`.
    Remove,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    salt: String,
    #[serde(default = "default_drop")]
    drop_properties: Vec<String>,
}

fn default_drop() -> Vec<String> {
    vec!["$ip".to_owned()]
}

/// The scrubber.
pub struct PiiScrubber {
    mode: Mode,
    salt: String,
    drop_properties: Vec<String>,
    /// Reused per property.
    matches: Vec<Match>,
}

impl PiiScrubber {
    /// `sha256:` + the first 16 hex digits of SHA-256(salt + value).
    pub fn hash(&self, value: &str) -> String {
        let digest = Sha256::new()
            .chain_update(self.salt.as_bytes())
            .chain_update(value.as_bytes())
            .finalize();
        let mut out = String::with_capacity(7 + 16);
        out.push_str("sha256:");
        for byte in &digest[..8] {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        out
    }

    /// `text` with every match replaced per the mode.
    fn rewrite(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for m in &self.matches {
            out.push_str(&text[last..m.start]);
            match (self.mode, m.kind) {
                (Mode::Hash, _) => out.push_str(&self.hash(&text[m.start..m.end])),
                (Mode::Remove, Kind::Email) => out.push_str("[email]"),
                (Mode::Remove, Kind::Ip) => out.push_str("[ip]"),
            }
            last = m.end;
        }
        out.push_str(&text[last..]);
        out
    }

    fn scanned(&self, key: &str) -> bool {
        !key.starts_with('$') || SCANNED_SYSTEM_PROPERTIES.contains(&key)
    }
}

impl Processor for PiiScrubber {
    const CONFIG_SCHEMA: &'static str = r#"{
  "type": "object",
  "properties": {
    "mode": {"enum": ["hash", "remove"], "default": "hash", "description": "hash: replace each address with sha256:<16 hex digits> of salt + address; remove: remove properties that are an address, redact addresses in longer text as [email] / [ip]"},
    "salt": {"type": "string", "default": "", "description": "Prefix hashed with every address"},
    "drop_properties": {"type": "array", "items": {"type": "string"}, "default": ["$ip"], "description": "Properties removed outright"}
  },
  "additionalProperties": false
}"#;

    fn new(config: Config) -> Result<Self, String> {
        let Settings {
            mode,
            salt,
            drop_properties,
        } = config.parse()?;
        Ok(PiiScrubber {
            mode,
            salt,
            drop_properties,
            matches: Vec::new(),
        })
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        for key in &self.drop_properties {
            if event.original(key).is_some() {
                event.remove(key);
            }
        }
        // Properties borrow the batch, so the event can be edited meanwhile.
        for (key, value) in event.properties() {
            let (text, json) = match value {
                Value::Str(s) => (s, false),
                Value::Json(s) => (s, true),
                _ => continue,
            };
            if !self.scanned(key) || self.drop_properties.iter().any(|d| d == key) {
                continue;
            }
            find_pii(text, &mut self.matches);
            let [first, ..] = self.matches[..] else {
                continue;
            };
            let leading = text.len() - text.trim_start().len();
            let whole = self.matches.len() == 1
                && first.start == leading
                && first.end == leading + text.trim().len();
            if self.mode == Mode::Remove && whole && !json {
                event.remove(key);
            } else if json {
                event.set(key, OwnedValue::Json(self.rewrite(text)));
            } else {
                event.set_str(key, &self.rewrite(text));
            }
        }
        Outcome::Keep
    }
}

eddy_plugin_sdk::processor!(PiiScrubber);

#[cfg(test)]
mod tests;
