//! eddy's integration tests: the real `eddy` binary, real plugins built from
//! source (see `build.rs`), real files and processes. One binary, a module
//! per subsystem.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod alert_plugins;
mod alertmanager;
mod alerts;
mod capabilities;
mod compile_cache;
mod config;
mod dashboard;
mod decode;
mod durability;
mod engine;
mod kafka;
mod kafka_merge;
mod limits;
mod metrics;
mod openapi;
mod pattern_plugins;
mod patterns;
mod plugins;
mod polyglot;
mod reload;
mod serve;
mod streams;
mod tour;
mod windows;
