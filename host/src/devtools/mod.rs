//! Plugin developer tooling: the `eddy plugin new | build | test | diff`
//! commands.
//!
//! - [`scaffold`]: a new plugin project from a template embedded in the
//!   binary (one per language and plugin kind), with the WIT contract, the
//!   language's SDK, a README and an example test.
//! - [`build`]: finds the language of a project and runs its toolchain
//!   (cargo, componentize-py, componentize-js) into one `.wasm` component.
//! - [`replay`]: runs a plugin, or a whole configured pipeline, over recorded
//!   events on a virtual event-time clock, so the result is the same on
//!   every run and every machine.
//! - [`compare`]: event-by-event differences between two outputs (the
//!   expected output and the actual one, or two plugin versions').
//!
//! Everything runs on the same [`crate::engine::Engine`] as `eddy serve`
//! and `eddy pipe`, so a plugin behaves here as it will live.
//!
//! ```no_run
//! use eddy::devtools::{compare, replay};
//!
//! # fn main() -> Result<(), eddy::devtools::DevError> {
//! let input = replay::read_input("in.ndjson".as_ref())?;
//! let opts = replay::ReplayOptions::default();
//! let old = replay::Replay::plugin("old.wasm".as_ref(), serde_json::json!({}), &[], &opts)?.run(input.clone());
//! let new = replay::Replay::plugin("new.wasm".as_ref(), serde_json::json!({}), &[], &opts)?.run(input);
//! let diff = compare::compare(&old.values(), &new.values());
//! println!("{}", diff.render(("old", "new"), 20));
//! # Ok(())
//! # }
//! ```

use std::path::PathBuf;

pub mod assets;
pub mod build;
pub mod commands;
pub mod compare;
pub mod replay;
pub mod scaffold;

/// A language eddy can build plugins from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Rust, with the eddy-plugin-sdk crate, built by cargo for wasm32-wasip2.
    Rust,
    /// Python, built by componentize-py.
    Python,
    /// JavaScript, built by componentize-js.
    Js,
}

impl Lang {
    /// The name used on the command line and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }
}

/// A kind of plugin: one per world of the WIT contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The `processor` world: filters, enrichers, transformers.
    Processor,
    /// The `pattern` world: a sequence pattern whose conditions need code.
    Pattern,
    /// The `alert` world: alert rules whose condition needs code.
    Alert,
}

impl Kind {
    /// The WIT world name.
    pub fn world(self) -> &'static str {
        match self {
            Kind::Processor => "processor",
            Kind::Pattern => "pattern",
            Kind::Alert => "alert",
        }
    }
}

/// Why a developer command could not do its job. Each message says what to
/// do about it.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `plugin new` would overwrite something.
    #[error("{0} already exists; choose another name or remove it")]
    Exists(PathBuf),
    /// A plugin name eddy cannot use as a file stem.
    #[error(
        "`{0}` is not a usable plugin name: use lower-case letters, digits and `-`, starting with a letter"
    )]
    InvalidName(String),
    /// No template for this language and kind.
    #[error("no {lang} template for {kind} plugins")]
    NoTemplate {
        /// Language.
        lang: &'static str,
        /// Plugin kind.
        kind: &'static str,
    },
    /// The Rust SDK could not be found for a Rust scaffold.
    #[error(
        "cannot find eddy's Rust plugin SDK (looked for {0}); pass --sdk PATH/TO/eddy/plugin-sdk or set EDDY_SDK_DIR"
    )]
    NoSdk(PathBuf),
    /// The folder is not a plugin project eddy recognises.
    #[error(
        "{0} is not a plugin project: expected Cargo.toml (Rust), app.py (Python) or app.js (JavaScript); create one with `eddy plugin new NAME --lang rust|python|js`"
    )]
    NotAProject(PathBuf),
    /// A toolchain is not installed.
    #[error("{tool} not found (needed to build {lang} plugins): {how}")]
    ToolMissing {
        /// The missing program.
        tool: String,
        /// The language it builds.
        lang: &'static str,
        /// How to install it.
        how: String,
    },
    /// A toolchain ran and failed.
    #[error("{tool} failed ({status}); its messages are above")]
    ToolFailed {
        /// The program.
        tool: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// A build finished without producing a component.
    #[error("the build finished but produced no .wasm component: {0}")]
    NoArtifact(String),
    /// An input line is not an event.
    #[error("{path}:{line}: {message}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A plugin configuration file is not valid.
    #[error("{path}: {message}")]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The pipeline configuration is not valid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A plugin could not be loaded.
    #[error("cannot load {path}: {error}")]
    Load {
        /// The component file.
        path: PathBuf,
        /// Why.
        error: crate::plugin::PluginError,
    },
    /// A stage could not start (its plugin rejected its configuration...).
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    /// The command line is incomplete or contradictory.
    #[error("{0}")]
    Usage(String),
    /// `--from-log`: the write-ahead log could not be read.
    #[error("cannot read the write-ahead log in {path}: {message}")]
    Log {
        /// The data directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The WebAssembly engine could not start.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
}

/// `Io` errors with the path attached.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DevError {
    let path = path.into();
    move |source| DevError::Io { path, source }
}
