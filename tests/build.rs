//! Builds every plugin under `plugins/` for wasm32-wasip2 (through
//! `scripts/build-plugins`) and exports their paths as constants, so tests
//! never run against a stale or missing fixture.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let root = Path::new(&manifest)
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    for watched in ["plugins", "plugin-sdk", "wit", "scripts/build-plugins"] {
        println!("cargo::rerun-if-changed={}", root.join(watched).display());
    }
    // Checkouts (git worktrees) that share one target folder share this
    // script's output too: cargo hashes workspace-relative paths. Run again
    // when cargo is started from another folder, so the constants below
    // never point into another checkout.
    println!("cargo::rerun-if-env-changed=PWD");
    let script = root.join("scripts/build-plugins");
    let status = Command::new("bash")
        .arg(&script)
        .current_dir(&root)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            println!(
                "cargo::error=building the test plugins failed ({s}); run `bash scripts/build-plugins` \
                 to see why (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)"
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            println!("cargo::error=cannot run {}: {e}", script.display());
            return ExitCode::FAILURE;
        }
    }
    let dir = root.join("target/test-plugins");
    let mut consts = format!(
        "/// Folder holding every built plugin.\npub const TEST_PLUGINS_DIR: &str = {:?};\n",
        dir.display().to_string()
    );
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".wasm").map(str::to_owned))
            .collect(),
        Err(e) => {
            println!("cargo::error=no built plugins in {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    names.sort();
    for name in names {
        let ident = name.to_uppercase().replace('-', "_");
        let path = dir.join(format!("{name}.wasm"));
        let _ = writeln!(
            consts,
            "/// `{name}.wasm`, built from source by build.rs.\npub const {ident}: &str = {:?};",
            path.display().to_string()
        );
    }
    let out = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    if let Err(e) = std::fs::write(Path::new(&out).join("plugins.rs"), consts) {
        println!("cargo::error=cannot write plugin constants: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
