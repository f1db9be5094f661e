//! The plugin runtime: WIT bindings, the sandboxed wasmtime engine, the
//! registry of plugin versions and the folder watcher that hot-swaps them.
//!
//! Limits live where they are enforced: memory caps and the log budget in
//! [`host_api`], deadlines in [`engine`], state bounds in [`host_api`] (per
//! call) and [`state_store`] (per store).

pub mod abi;
pub mod alert;
pub mod bindings;
pub mod capabilities;
pub mod clock;
pub mod compile_cache;
pub mod engine;
pub mod host_api;
pub mod meter;
pub mod pattern;
pub mod registry;
pub mod state_store;
pub mod watch;

pub use engine::{PluginEngine, PluginError, PluginKind};
pub use registry::{LoadOutcome, Notice, NoticeKind, PluginStatus, Registry};
