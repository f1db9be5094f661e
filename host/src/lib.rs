//! # eddy
//!
//! A real-time analytics host whose every customisable part is a
//! WebAssembly component. This crate is the host: the event model, the
//! pipeline configuration, the sandboxed plugin runtime with hot reload, and
//! the `eddy` binary built on them.
//!
//! Every way of running eddy drives one deterministic [`engine::Engine`]
//! with inputs (batches of events, ticks of wall time, plugin changes) and
//! reads what it publishes. Running a batch through the embedded default
//! configuration from Rust:
//!
//! ```no_run
//! use eddy::config::Config;
//! use eddy::engine::{Batch, Emitted, Engine, EngineOptions, Input};
//! use eddy::event::Event;
//! use eddy::plugin::{PluginEngine, Registry, clock::VirtualClock};
//!
//! # fn main() -> anyhow::Result<()> {
//! let config = Config::load(None)?;
//! let clock = VirtualClock::new();
//! let registry = Registry::new(
//!     PluginEngine::with_virtual_clock(clock.clone())?,
//!     config.runtime.clone(),
//!     config.plugins_dir.clone(),
//! );
//! registry.load_all()?;
//! let options = EngineOptions { first_seq: 1, seed: 0, plugins: registry.live_versions() };
//! let mut engine = Engine::new(&config, registry, clock, &options)?;
//! let event = Event::from_json(
//!     r#"{"name":"$pageview","distinct_id":"u1","timestamp":1700000000000,
//!         "properties":{"$current_url":"https://shop.example/cart?x=1"}}"#,
//!     || "e1".into(),
//! )?;
//! let mut out: Vec<Emitted> = Vec::new();
//! let batch = Batch { source: 0, position: 1, wall_ms: Some(1700000000000), events: vec![event] };
//! engine.step(Input::Batch(batch), &mut out);
//! if let Some(Emitted::Events { events, .. }) = out.first() {
//!     println!("{}", events[0].to_json());
//! }
//! # Ok(())
//! # }
//! ```

pub mod alert;
pub mod client;
pub mod config;
pub mod devtools;
pub mod durability;
pub mod engine;
pub mod event;
pub mod filter;
pub mod hub;
pub mod ingest;
pub mod pattern;
pub mod pipe;
pub mod pipeline;
pub mod plugin;
mod prefetch;
pub mod rerun;
pub mod runner;
pub mod server;
pub mod sink;
pub mod source;
#[cfg(test)]
mod test_rng;
pub mod wal;
pub mod window;
