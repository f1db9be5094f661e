//! `eddy plugin inspect PATH.wasm`: what a component is, what it says about
//! itself, what it imports (as capabilities, with the policy's verdict on
//! each) and whether eddy would load it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use eddy::config::{Config, RuntimeConfig};
use eddy::plugin::PluginEngine;
use eddy::plugin::capabilities::{self, Verdict};
use eddy::plugin::engine::{Inspection, PluginError};
use eddy::plugin::host_api::{PluginLimits, PluginShared};

/// The package of eddy's contract (`wit/`).
const EDDY_PACKAGE: &str = "eddy:plugin";

/// eddy's worlds and the interfaces a component must export to target
/// each one (`wit/worlds.wit`). A new world is one more row.
const WORLDS: &[(&str, &[&str])] = &[
    ("processor", &["plugin", "processing"]),
    ("pattern", &["plugin", "matching"]),
    ("alert", &["plugin", "alerting"]),
];

/// Name used for the plugin's host-side state while `describe()` runs, when
/// the file name is not a valid plugin name.
const FALLBACK_NAME: &str = "plugin";

/// Options of `eddy plugin inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectOptions {
    /// The component file (`*.wasm`).
    pub path: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Judge the imports with the grants this configuration gives the
    /// plugin (its stages' `allow`, by file name); without it, with the
    /// default capabilities only.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// Everything `inspect` reports; also its `--json` form.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The file as given.
    pub path: String,
    /// Size in bytes.
    pub size: usize,
    /// Hex SHA-256 of the file: the version's identity in logs and the API.
    pub sha256: String,
    /// The eddy world it targets (`eddy:plugin/processor`), if any.
    pub world: Option<String>,
    /// The eddy package and version it was built against
    /// (`eddy:plugin@0.1.0`), if it exports any eddy interface.
    pub package: Option<String>,
    /// What `describe()` answered.
    pub describe: Option<Describe>,
    /// Why `describe()` could not be called.
    pub describe_error: Option<String>,
    /// Every import, with the policy's verdict.
    pub imports: Vec<ImportRow>,
    /// Every export.
    pub exports: Vec<String>,
    /// The grants the verdicts were made with.
    pub grants: Vec<String>,
    /// Whether eddy would load it with those grants.
    pub loads: bool,
    /// Why it would not load.
    pub refusal: Option<String>,
}

/// The plugin's self-description.
#[derive(Debug, Serialize)]
pub struct Describe {
    /// Name.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its configuration (a string if it is not JSON).
    pub config_schema: serde_json::Value,
}

/// One import and what the capability policy says about it.
#[derive(Debug, Serialize)]
pub struct ImportRow {
    /// The import name, e.g. `wasi:filesystem/types@0.2.6`.
    pub name: String,
    /// `default`, `granted`, `needs-grant` or `not-provided`.
    pub policy: &'static str,
    /// The package to grant for a `needs-grant` import.
    pub grant: Option<&'static str>,
    /// The verdict in words.
    pub detail: String,
}

/// Inspect `options.path` and print the report on stdout.
pub fn run(options: &InspectOptions) -> anyhow::Result<()> {
    use std::io::Write as _;
    let report = inspect(options)?;
    let text = if options.json {
        let mut t = serde_json::to_string_pretty(&report)?;
        t.push('\n');
        t
    } else {
        to_text(&report)
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // The reader went away (`| head`): nothing left to tell it.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing the report to stdout"),
    }
}

/// Build the report for `options.path`.
pub fn inspect(options: &InspectOptions) -> anyhow::Result<Report> {
    let path = &options.path;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = eddy::plugin::registry::plugin_name(path).unwrap_or(FALLBACK_NAME);
    let runtime = match &options.config {
        Some(c) => Config::load(Some(c))?.runtime,
        None => RuntimeConfig::default(),
    };
    let grants = runtime.grants_for(name).to_vec();
    let engine = PluginEngine::new().context("starting the WebAssembly engine")?;
    let shared = Arc::new(PluginShared::new(name, PluginLimits::from(&runtime)));
    let header: Vec<u8> = bytes
        .iter()
        .take(CORE_MODULE_HEADER.len())
        .copied()
        .collect();
    let inspection = engine
        .inspect(
            bytes,
            runtime.compile_timeout,
            runtime.memory_limit_bytes,
            shared,
        )
        .map_err(|e| not_a_component(path, &header, e))?;
    Ok(report(path, name, inspection, grants))
}

/// The first eight bytes of a core WebAssembly module (magic and version 1),
/// as opposed to a component's (whose version field differs).
const CORE_MODULE_HEADER: [u8; 8] = *b"\0asm\x01\0\0\0";

fn not_a_component(path: &Path, bytes_header: &[u8], err: PluginError) -> anyhow::Error {
    const HOW: &str = "a plugin is a component built for wasm32-wasip2, e.g. with \
                       `cargo build --release --target wasm32-wasip2` (see docs/plugins.md, \
                       \"Writing a plugin\")";
    match err {
        PluginError::Compile(_) if bytes_header.starts_with(&CORE_MODULE_HEADER) => {
            anyhow::anyhow!(
                "{} is a core WebAssembly module, not a component: {HOW}",
                path.display()
            )
        }
        PluginError::Compile(msg) => anyhow::anyhow!(
            "{} is not a WebAssembly component ({msg}): {HOW}",
            path.display()
        ),
        other => anyhow::anyhow!("{}: {other}", path.display()),
    }
}

/// The eddy world `exports` implement, and the eddy package version.
fn world(exports: &[String]) -> (Option<String>, Option<String>) {
    let eddy: Vec<(&str, Option<&str>)> = exports
        .iter()
        .map(|e| capabilities::ImportName::parse(e))
        .filter(|n| n.package == EDDY_PACKAGE)
        .filter_map(|n| Some((n.interface?, n.version)))
        .collect();
    let package = eddy.first().map(|(_, v)| match v {
        Some(v) => format!("{EDDY_PACKAGE}@{v}"),
        None => EDDY_PACKAGE.to_owned(),
    });
    let world = WORLDS
        .iter()
        .find(|(_, needed)| needed.iter().all(|i| eddy.iter().any(|(e, _)| e == i)))
        .map(|(w, _)| format!("{EDDY_PACKAGE}/{w}"));
    (world, package)
}

fn report(path: &Path, name: &str, inspection: Inspection, grants: Vec<String>) -> Report {
    let (world, package) = world(&inspection.exports);
    let imports = inspection
        .imports
        .iter()
        .map(|import| {
            let verdict = capabilities::classify(import, &grants);
            ImportRow {
                name: import.clone(),
                policy: verdict.label(),
                grant: match verdict {
                    Verdict::NeedsGrant(p) => Some(p),
                    _ => None,
                },
                detail: verdict.to_string(),
            }
        })
        .collect();
    let policy = capabilities::check(name, inspection.imports.iter().map(String::as_str), &grants);
    let (describe, describe_error) = match inspection.describe {
        Ok(info) => (
            Some(Describe {
                config_schema: serde_json::from_str(&info.config_schema)
                    .unwrap_or(serde_json::Value::String(info.config_schema)),
                name: info.name,
                version: info.version,
                description: info.description,
            }),
            None,
        ),
        Err(e) => (None, Some(e.to_string())),
    };
    let refusal = match (&policy, &describe_error) {
        (Err(e), _) => Some(PluginError::from(e.clone()).to_string()),
        (Ok(()), Some(e)) => Some(e.clone()),
        (Ok(()), None) => None,
    };
    Report {
        path: path.display().to_string(),
        size: inspection.size,
        sha256: inspection.hash,
        world,
        package,
        describe,
        describe_error,
        imports,
        exports: inspection.exports,
        grants,
        loads: refusal.is_none(),
        refusal,
    }
}

/// The report as text for a person.
pub fn to_text(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "{}", r.path);
    let _ = writeln!(s, "  size         {} bytes", r.size);
    let _ = writeln!(s, "  sha256       {}", r.sha256);
    let world = match (&r.world, &r.package) {
        (Some(w), Some(p)) => format!("{w} ({p})"),
        (None, Some(p)) => format!("none: exports {p} interfaces but not a whole eddy world"),
        _ => "none: not an eddy plugin".to_owned(),
    };
    let _ = writeln!(s, "  world        {world}");
    match &r.describe {
        Some(d) => {
            let _ = writeln!(s, "  name         {}", d.name);
            let _ = writeln!(s, "  version      {}", d.version);
            let _ = writeln!(s, "  description  {}", d.description);
            let schema = serde_json::to_string_pretty(&d.config_schema)
                .unwrap_or_else(|_| d.config_schema.to_string());
            let _ = writeln!(s, "  config schema");
            for line in schema.lines() {
                let _ = writeln!(s, "    {line}");
            }
        }
        None => {
            let err = r.describe_error.as_deref().unwrap_or("not called");
            let _ = writeln!(s, "  describe()   failed: {err}");
        }
    }
    let width = r.imports.iter().map(|i| i.name.len()).max().unwrap_or(0);
    let _ = writeln!(s, "  imports (capabilities)");
    for i in &r.imports {
        // The reasons behind "allowed by default" are in `--json` and the
        // README; here they would repeat on every line.
        let verdict = match i.policy {
            "default" => "allowed by default",
            _ => i.detail.as_str(),
        };
        let _ = writeln!(s, "    {:width$}  {verdict}", i.name);
    }
    let _ = writeln!(s, "  exports");
    for e in &r.exports {
        let _ = writeln!(s, "    {e}");
    }
    let with = if r.grants.is_empty() {
        "the default capabilities".to_owned()
    } else {
        format!("allow = {:?}", r.grants)
    };
    match &r.refusal {
        None => {
            let _ = writeln!(s, "  loads        yes, with {with}");
        }
        Some(why) => {
            let _ = writeln!(s, "  loads        no, with {with}: {why}");
        }
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn worlds_are_recognised_by_their_exports() {
        assert_eq!(
            world(&names(&[
                "eddy:plugin/plugin@0.1.0",
                "eddy:plugin/processing@0.1.0"
            ])),
            (
                Some("eddy:plugin/processor".into()),
                Some("eddy:plugin@0.1.0".into())
            )
        );
        assert_eq!(
            world(&names(&["eddy:plugin/plugin@0.1.0"])),
            (None, Some("eddy:plugin@0.1.0".into()))
        );
        assert_eq!(world(&names(&["wasi:cli/run@0.2.0"])), (None, None));
    }
}
