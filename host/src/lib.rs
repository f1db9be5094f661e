//! # eddy
//!
//! A real-time analytics host whose every customisable part is a
//! WebAssembly component. This crate is the host: the event model, the
//! pipeline configuration, the sandboxed plugin runtime with hot reload, and
//! the `eddy` binary built on them.
//!
//! Running a batch through the embedded default pipeline from Rust:
//!
//! ```no_run
//! use eddy::{config::Config, event::Event, pipeline::Pipeline, plugin::{PluginEngine, Registry}};
//!
//! # fn main() -> anyhow::Result<()> {
//! let config = Config::load(None)?;
//! let registry = Registry::new(PluginEngine::new()?, config.runtime.clone(), config.plugins_dir.clone());
//! registry.load_all()?;
//! let mut pipeline = Pipeline::new(&config, registry)?;
//! let event = Event::from_json(
//!     r#"{"name":"$pageview","distinct_id":"u1","timestamp":1700000000000,
//!         "properties":{"$current_url":"https://shop.example/cart?x=1"}}"#,
//!     || "e1".into(),
//! )?;
//! let out = pipeline.process(vec![event]);
//! println!("{}", out.events[0].to_json());
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod config;
pub mod devtools;
pub mod event;
pub mod filter;
pub mod hub;
pub mod ingest;
pub mod pipe;
pub mod pipeline;
pub mod plugin;
mod prefetch;
pub mod runner;
pub mod server;
pub mod window;
