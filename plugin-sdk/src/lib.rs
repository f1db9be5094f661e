//! # eddy-plugin-sdk
//!
//! Write eddy processor plugins in Rust. Implement [`Processor`] — a
//! constructor from configuration and one method that looks at one event —
//! and export it with [`processor!`]. The SDK turns eddy's columnar batch layout
//! (see `wit/types.wit`) into [`Event`] views, collects your edits, and
//! reports panics through the host log before the instance traps.
//!
//! ```
//! use eddy_plugin_sdk::{Config, Event, Outcome, Processor};
//!
//! /// Drops events from internal users and tags the rest with their team.
//! struct Tagger {
//!     team: String,
//! }
//!
//! impl Processor for Tagger {
//!     fn new(config: Config) -> Result<Self, String> {
//!         Ok(Tagger { team: config.string_or("team", "unknown")? })
//!     }
//!
//!     fn process(&mut self, event: &mut Event<'_>) -> Outcome {
//!         if event.str("email").is_some_and(|e| e.ends_with("@internal.example")) {
//!             return Outcome::Drop;
//!         }
//!         event.set("team", self.team.as_str());
//!         Outcome::Keep
//!     }
//! }
//!
//! eddy_plugin_sdk::processor!(Tagger);
//!
//! # use eddy_plugin_sdk::{testing, NewEvent};
//! let out = testing::run::<Tagger>(r#"{"team":"growth"}"#, vec![
//!     NewEvent { name: "$pageview".into(), ..Default::default() },
//!     NewEvent { name: "$pageview".into(), ..Default::default() }.with("email", "a@internal.example"),
//! ]).unwrap();
//! assert_eq!(out.len(), 1);
//! assert_eq!(out[0].get("team").and_then(|v| v.as_str()), Some("growth"));
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm`
//! under `target/wasm32-wasip2/release/` is the plugin. Drop it into eddy's
//! plugins folder and it goes live without a restart.
//!
//! Pattern plugins (a sequence pattern whose conditions need code) are
//! built with [`pattern::Pattern`] and exported with [`pattern!`]; see
//! [`pattern`].
//!
//! Alert plugins (alert rules whose condition needs code: an anomaly
//! against a baseline, a burn rate) implement [`alert::AlertPlugin`] and
//! are exported with [`alert!`]; see [`alert`].
//!
//! State that must outlive an instance (instances are thrown away after a
//! trap and replaced on hot swap) goes through [`state`]; logs through
//! [`log`]; custom metrics through [`metrics`].

// Lets generated code name this crate by its public path from inside it.
extern crate self as eddy_plugin_sdk;

pub mod alert;
#[doc(hidden)]
pub mod bindings;
mod event;
mod host;
mod layout;
pub mod pattern;
pub mod testing;
mod value;

pub use event::{Event, NewEvent, Outcome, ValueArg};
pub use host::{log, metrics, state};
/// serde_json, for building payloads (`pattern::Verdict::Keep`) and reading
/// configuration without another dependency.
pub use serde_json;
pub use value::{OwnedValue, Value};

/// A processor plugin: filter, enricher, transformer.
///
/// One instance lives until it traps or a new version replaces it; keep
/// anything that must survive that in [`state`].
pub trait Processor: Sized + 'static {
    /// JSON Schema of the configuration object, shown by `eddy plugin
    /// inspect` and `GET /v1/plugins`.
    const CONFIG_SCHEMA: &'static str = r#"{"type":"object"}"#;

    /// Build an instance from the stage's `config` table. Return an error
    /// naming the offending key if the configuration is unusable.
    fn new(config: Config) -> Result<Self, String>;

    /// Decide what happens to one event. Change properties in place with
    /// [`Event::set`] / [`Event::remove`] and return [`Outcome::Keep`].
    fn process(&mut self, event: &mut Event<'_>) -> Outcome;

    /// Called once per batch, before its first event, with the batch size.
    /// For per-batch work: refreshing a lookup table, sampling, metrics.
    fn on_batch(&mut self, events: usize) {
        let _ = events;
    }
}

/// A plugin's configuration: the JSON object built from its stage's
/// `config` table in `eddy.toml`.
#[derive(Debug, Clone, Default)]
pub struct Config {
    map: serde_json::Map<String, serde_json::Value>,
}

impl Config {
    /// Parse the JSON the host passes to `configure`.
    pub fn from_json(json: &str) -> Result<Config, String> {
        if json.trim().is_empty() {
            return Ok(Config::default());
        }
        match serde_json::from_str(json) {
            Ok(serde_json::Value::Object(map)) => Ok(Config { map }),
            Ok(_) => Err("plugin config must be a table (JSON object)".to_owned()),
            Err(e) => Err(format!("plugin config is not valid JSON: {e}")),
        }
    }

    /// Deserialize the whole configuration into `T`. Use
    /// `#[serde(deny_unknown_fields)]` on `T` so typos are reported by name.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(serde_json::Value::Object(self.map.clone()))
            .map_err(|e| format!("invalid plugin config: {e}"))
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.map.get(key)
    }

    /// The string under `key`, or `default` if absent; an error if present
    /// but not a string.
    pub fn string_or(&self, key: &str, default: &str) -> Result<String, String> {
        match self.map.get(key) {
            None => Ok(default.to_owned()),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("config key `{key}` must be a string, got {other}")),
        }
    }

    /// The list of strings under `key`, or `default` if absent.
    pub fn strings_or(&self, key: &str, default: &[&str]) -> Result<Vec<String>, String> {
        match self.map.get(key) {
            None => Ok(default.iter().map(|s| (*s).to_owned()).collect()),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => Ok(s.clone()),
                    other => Err(format!(
                        "config key `{key}` must be a list of strings, found {other}"
                    )),
                })
                .collect(),
            Some(other) => Err(format!(
                "config key `{key}` must be a list of strings, got {other}"
            )),
        }
    }

    /// The boolean under `key`, or `default` if absent.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.map.get(key) {
            None => Ok(default),
            Some(serde_json::Value::Bool(b)) => Ok(*b),
            Some(other) => Err(format!(
                "config key `{key}` must be true or false, got {other}"
            )),
        }
    }

    /// Fail if the configuration has a key not in `known`: a typo in
    /// `eddy.toml` should be an error, not a silently ignored setting.
    pub fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(format!(
                "unknown config key `{k}`; expected one of: {}",
                known.join(", ")
            )),
            None => Ok(()),
        }
    }
}

/// Export a [`Processor`] as this crate's plugin.
///
/// `name`, `version` and `description` reported by `describe()` come from
/// the plugin's `Cargo.toml`.
#[macro_export]
macro_rules! processor {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct EddyExport;
            impl $crate::bindings::exports::eddy::plugin::plugin::Guest for EddyExport {
                fn describe() -> $crate::bindings::exports::eddy::plugin::plugin::Info {
                    $crate::__private::describe::<$ty>(
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                        env!("CARGO_PKG_DESCRIPTION"),
                    )
                }
                fn configure(config: String) -> Result<(), String> {
                    $crate::__private::configure::<$ty>(&config)
                }
            }
            impl $crate::bindings::exports::eddy::plugin::processing::Guest for EddyExport {
                fn process(
                    batch: $crate::bindings::eddy::plugin::types::Batch,
                ) -> Result<$crate::bindings::eddy::plugin::types::Processed, String> {
                    $crate::__private::process::<$ty>(batch)
                }
            }
    $crate::bindings::__export_processor_world!(EddyExport with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    //! Used by [`processor!`](crate::processor); not part of the API.
    use super::*;
    use crate::bindings::eddy::plugin::types as wit;
    use crate::bindings::exports::eddy::plugin::plugin::Info;
    use std::any::Any;
    use std::cell::RefCell;

    pub use wit_bindgen;

    thread_local! {
        // The configured instance. Wasm components are single-threaded, so a
        // thread-local is the whole instance's global.
        static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    pub fn describe<P: Processor>(name: &str, version: &str, description: &str) -> Info {
        Info {
            name: name.to_owned(),
            version: version.to_owned(),
            description: description.to_owned(),
            config_schema: P::CONFIG_SCHEMA.to_owned(),
        }
    }

    pub fn configure<P: Processor>(config: &str) -> Result<(), String> {
        install_panic_hook();
        let instance = P::new(Config::from_json(config)?)?;
        INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(instance)));
        Ok(())
    }

    pub fn process<P: Processor>(batch: wit::Batch) -> Result<wit::Processed, String> {
        let input = event::Input::new(batch)?;
        INSTANCE.with(|slot| {
            let mut slot = slot.borrow_mut();
            let instance = slot
                .as_mut()
                .and_then(|b| b.downcast_mut::<P>())
                .ok_or_else(|| "process called before configure".to_owned())?;
            instance.on_batch(input.len());
            Ok(event::run_batch(&input, |e| instance.process(e)))
        })
    }

    pub fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                crate::log::log(crate::log::Level::Error, &format!("panic: {info}"), &[]);
            }));
        });
    }
}
