//! Embeds the dashboard (served at `/`): the files of `host/dashboard/` plus
//! uPlot, its chart library, which `scripts/setup` fetches from npm into
//! `.tools/web` (it is not kept in the repository). memory-serve compresses
//! them here and serves them with ETags (`server::dashboard`).
//!
//! Without uPlot (setup not run) the build still succeeds, with a warning:
//! the page then says that its charts are missing and how to get them.

use std::env;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

const UPLOT_FILES: [&str; 2] = ["uPlot.iife.min.js", "uPlot.min.css"];

fn main() -> Result<(), Box<dyn Error>> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let source = manifest.join("dashboard");
    let uplot = manifest.join("../.tools/web/node_modules/uplot/dist");
    let out = out_dir.join("dashboard");

    println!("cargo::rerun-if-changed={}", source.display());
    println!("cargo::rerun-if-changed={}", uplot.display());
    if out.exists() {
        fs::remove_dir_all(&out)?;
    }
    fs::create_dir_all(out.join("vendor"))?;
    copy_files(&source, &out)?;

    if UPLOT_FILES.iter().all(|f| uplot.join(f).is_file()) {
        for f in UPLOT_FILES {
            fs::copy(uplot.join(f), out.join("vendor").join(f))?;
        }
    } else {
        println!(
            "cargo::warning=uPlot not found in {}: the dashboard is built without its charts; \
             run scripts/setup and build again",
            uplot.display()
        );
        fs::write(
            out.join("vendor/uPlot.iife.min.js"),
            "window.EDDY_NO_CHARTS = 'this eddy was built without uPlot, the chart library: \
             run scripts/setup, then build eddy again';\n",
        )?;
        fs::write(out.join("vendor/uPlot.min.css"), "")?;
    }

    // memory_serve::load_directory without its per-file build warnings:
    // the manifest that `memory_serve::load!()` includes.
    let label = out.to_string_lossy();
    let assets = memory_serve::assets_to_code(&label, &out, &out_dir, true, |_| {});
    fs::write(
        out_dir.join("memory_serve_assets.rs"),
        format!("&[(\"default\", {assets}),]"),
    )?;
    Ok(())
}

fn copy_files(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(from)? {
        let path = entry?.path();
        if let Some(name) = path.file_name().filter(|_| path.is_file()) {
            fs::copy(&path, to.join(name))?;
        }
    }
    Ok(())
}
