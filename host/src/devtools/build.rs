//! `eddy plugin build [PATH]`: one command for every language. It finds the
//! project's language from its files and runs that language's toolchain:
//!
//! | file | language | toolchain |
//! |---|---|---|
//! | `Cargo.toml` | Rust | `cargo build --release --target wasm32-wasip2` |
//! | `app.py` | Python | `componentize-py ... componentize --stub-wasi app` |
//! | `app.js` | JavaScript | `componentize-js app.js -d http fetch-event stdio` |
//!
//! The result is `PATH/target/NAME.wasm`. Progress goes to stderr; the
//! built file's path is the one line on stdout.
//!
//! Python and JavaScript tools are looked for in `EDDY_TOOLS_DIR` (when
//! set), else in the `.tools/` folder of the eddy checkout (where
//! `scripts/setup` installs them), then on `PATH`.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::assets::{self, JS_SDK, PYTHON_SDK};
use super::scaffold::checkout_root;
use super::{DevError, Kind, Lang, io_err};

/// The Rust target plugins are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// Options of `eddy plugin build`.
#[derive(Debug, Clone, clap::Args)]
pub struct BuildOptions {
    /// The plugin project (a folder with Cargo.toml, app.py or app.js).
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Where to write the component; default `PATH/target/NAME.wasm`.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// The kind of plugin (WIT world) to build a Python or JavaScript
    /// project as. (A Rust project's world comes from the SDK.)
    #[arg(long, value_enum, default_value_t = Kind::Processor)]
    pub kind: Kind,
}

/// A recognised project.
#[derive(Debug, Clone)]
pub struct Project {
    /// Its language.
    pub lang: Lang,
    /// The plugin name (Rust: the package name; otherwise the folder name).
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    /// The component.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// How long the build took.
    pub elapsed: Duration,
}

/// Recognise the project in `dir`.
pub fn detect(dir: &Path) -> Result<Project, DevError> {
    let dir = std::fs::canonicalize(dir).map_err(io_err(dir))?;
    let folder_name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("plugin")
        .to_owned();
    let (lang, name) = if dir.join("Cargo.toml").is_file() {
        let manifest = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).map_err(io_err(&manifest))?;
        let value: toml::Table = toml::from_str(&text).map_err(|e| DevError::BadConfig {
            path: manifest.clone(),
            message: e.to_string(),
        })?;
        let name = value
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .ok_or_else(|| DevError::BadConfig {
                path: manifest.clone(),
                message: "no [package] name: a plugin is one package, not a workspace".into(),
            })?;
        (Lang::Rust, name.to_owned())
    } else if dir.join("app.py").is_file() {
        (Lang::Python, folder_name)
    } else if dir.join("app.js").is_file() {
        (Lang::Js, folder_name)
    } else {
        return Err(DevError::NotAProject(dir));
    };
    Ok(Project { lang, name, dir })
}

/// Build the project at `opts.path`, reporting progress on `progress`.
pub fn build(opts: &BuildOptions, progress: &mut dyn Write) -> Result<Built, DevError> {
    let started = Instant::now();
    let project = detect(&opts.path)?;
    let out = match &opts.out {
        Some(o) => o.clone(),
        None => project
            .dir
            .join("target")
            .join(format!("{}.wasm", project.name)),
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let _ = writeln!(
        progress,
        "eddy plugin build: {} plugin `{}` in {}",
        project.lang.name(),
        project.name,
        project.dir.display()
    );
    // Write next to the destination and rename, so a plugins folder being
    // watched never sees half a file.
    let tmp = out.with_extension("wasm.part");
    match project.lang {
        Lang::Rust => build_rust(&project, &tmp, progress)?,
        Lang::Python => build_python(&project, opts.kind, &tmp, progress)?,
        Lang::Js => build_js(&project, opts.kind, &tmp, progress)?,
    }
    std::fs::rename(&tmp, &out).map_err(io_err(&out))?;
    let size = std::fs::metadata(&out).map_err(io_err(&out))?.len();
    let elapsed = started.elapsed();
    let _ = writeln!(
        progress,
        "eddy plugin build: wrote {} ({:.1} MB) in {:.1} s",
        out.display(),
        size as f64 / 1e6,
        elapsed.as_secs_f64()
    );
    Ok(Built {
        path: out,
        size,
        elapsed,
    })
}

/// Where `scripts/setup` puts the Python and JavaScript toolchains.
fn tools_dir() -> PathBuf {
    match std::env::var_os("EDDY_TOOLS_DIR") {
        Some(d) => PathBuf::from(d),
        None => checkout_root().join(".tools"),
    }
}

/// `local` if it exists, else `name` if it is on PATH.
fn find_tool(local: PathBuf, name: &str) -> Option<PathBuf> {
    if local.is_file() {
        return Some(local);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn setup_hint(exact: &str) -> String {
    format!(
        "run `bash scripts/setup` in the eddy checkout ({}), or install it yourself: {exact}",
        checkout_root().display()
    )
}

fn build_rust(project: &Project, out: &Path, progress: &mut dyn Write) -> Result<(), DevError> {
    let missing = |how: &str| DevError::ToolMissing {
        tool: "cargo".into(),
        lang: "Rust",
        how: how.into(),
    };
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|_| missing("install Rust with rustup (https://rustup.rs)"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib").join(WASM_TARGET).is_dir() {
        return Err(DevError::ToolMissing {
            tool: format!("the Rust target {WASM_TARGET}"),
            lang: "Rust",
            how: format!(
                "run `rustup target add {WASM_TARGET}` (or `bash scripts/setup` in eddy's checkout)"
            ),
        });
    }
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--release", "--target", WASM_TARGET])
        .args(["--message-format", "json-render-diagnostics"])
        .current_dir(&project.dir);
    let _ = writeln!(
        progress,
        "  running: cargo build --release --target {WASM_TARGET}"
    );
    // cargo's own progress and diagnostics go to stderr as usual; stdout
    // carries the JSON messages that name the artifact.
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .map_err(|_| missing("install Rust with rustup (https://rustup.rs)"))?;
    let mut artifact = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if msg["reason"] != "compiler-artifact" {
                continue;
            }
            let wasm = msg["filenames"].as_array().and_then(|files| {
                files
                    .iter()
                    .filter_map(|f| f.as_str())
                    .find(|f| f.ends_with(".wasm"))
                    .map(PathBuf::from)
            });
            if wasm.is_some() {
                artifact = wasm;
            }
        }
    }
    let status = child.wait().map_err(io_err(&project.dir))?;
    if !status.success() {
        return Err(DevError::ToolFailed {
            tool: "cargo".into(),
            status,
        });
    }
    let artifact = artifact.ok_or_else(|| {
        DevError::NoArtifact(
            "is the crate a `cdylib` (`[lib] crate-type = [\"cdylib\", \"rlib\"]`)?".into(),
        )
    })?;
    std::fs::copy(&artifact, out).map_err(io_err(&artifact))?;
    Ok(())
}

/// The project's `wit/` folder, or the contract embedded in this binary
/// written into `scratch`.
fn wit_dir(project: &Project, scratch: &Path) -> Result<PathBuf, DevError> {
    let own = project.dir.join("wit");
    if own.join("worlds.wit").is_file() {
        return Ok(own);
    }
    let dir = scratch.join("wit");
    assets::write_wit(&dir)?;
    Ok(dir)
}

fn scratch_dir() -> Result<tempfile::TempDir, DevError> {
    tempfile::tempdir().map_err(io_err(std::env::temp_dir()))
}

fn run_tool(mut cmd: Command, tool: &str, progress: &mut dyn Write) -> Result<(), DevError> {
    // The tool's chatter goes to stderr with the rest of the progress, so
    // stdout stays the built file's path.
    cmd.stdout(Stdio::from(
        std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(io_err("stderr"))?,
    ));
    let _ = progress.flush();
    let status = cmd.status().map_err(io_err(tool))?;
    if !status.success() {
        return Err(DevError::ToolFailed {
            tool: tool.into(),
            status,
        });
    }
    Ok(())
}

fn build_python(
    project: &Project,
    kind: Kind,
    out: &Path,
    progress: &mut dyn Write,
) -> Result<(), DevError> {
    let tool = find_tool(
        tools_dir().join("venv/bin/componentize-py"),
        "componentize-py",
    )
    .ok_or_else(|| DevError::ToolMissing {
        tool: "componentize-py".into(),
        lang: "Python",
        how: setup_hint("`pip install componentize-py==0.25.1`"),
    })?;
    let scratch = scratch_dir()?;
    let wit = wit_dir(project, scratch.path())?;
    // The SDK embedded in eddy, behind the project's own copy if it has one.
    let sdk = scratch.path().join("sdk");
    assets::write_files(&sdk, [PYTHON_SDK])?;
    let mut cmd = Command::new(&tool);
    cmd.arg("-d")
        .arg(&wit)
        .args(["-w", kind.world(), "componentize", "--stub-wasi"])
        .arg("-p")
        .arg(&project.dir)
        .arg("-p")
        .arg(&sdk)
        .arg("app")
        .arg("-o")
        .arg(out)
        .current_dir(&project.dir);
    let _ = writeln!(
        progress,
        "  running: {} componentize --stub-wasi app (about 10 s)",
        tool.display()
    );
    run_tool(cmd, "componentize-py", progress)
}

fn build_js(
    project: &Project,
    kind: Kind,
    out: &Path,
    progress: &mut dyn Write,
) -> Result<(), DevError> {
    let tool = find_tool(
        tools_dir().join("node_modules/.bin/componentize-js"),
        "componentize-js",
    )
    .ok_or_else(|| DevError::ToolMissing {
        tool: "componentize-js".into(),
        lang: "JavaScript",
        how: setup_hint(
            "`npm install @bytecodealliance/componentize-js@0.23.0 @bytecodealliance/jco@1.35.0` (needs Node.js)",
        ),
    })?;
    if find_tool(PathBuf::new(), "node").is_none() {
        return Err(DevError::ToolMissing {
            tool: "node".into(),
            lang: "JavaScript",
            how: setup_hint("`apt-get install nodejs npm`"),
        });
    }
    let scratch = scratch_dir()?;
    let wit = wit_dir(project, scratch.path())?;
    // componentize-js resolves imports inside the entry file's folder only:
    // stage the project with the SDK beside it.
    let stage = scratch.path().join("src");
    copy_tree(&project.dir, &stage)?;
    if !stage.join(JS_SDK.0).is_file() {
        assets::write_files(&stage, [JS_SDK])?;
    }
    let mut cmd = Command::new(&tool);
    cmd.arg(stage.join("app.js"))
        .arg("--wit")
        .arg(&wit)
        .args(["--world-name", kind.world()])
        // Without these the component imports wasi:http and
        // wasi:filesystem, which the capability policy refuses.
        .args(["-d", "http", "fetch-event", "stdio"])
        .arg("-o")
        .arg(out)
        .current_dir(&project.dir);
    let _ = writeln!(
        progress,
        "  running: {} app.js -d http fetch-event stdio (about 10 s)",
        tool.display()
    );
    run_tool(cmd, "componentize-js", progress)
}

/// Copy a project's sources (not `target/`, `node_modules/`, `.git/`).
fn copy_tree(from: &Path, to: &Path) -> Result<(), DevError> {
    std::fs::create_dir_all(to).map_err(io_err(to))?;
    for entry in std::fs::read_dir(from).map_err(io_err(from))? {
        let entry = entry.map_err(io_err(from))?;
        let name = entry.file_name();
        if [".git", "target", "node_modules", "wit"]
            .iter()
            .any(|skip| name == *skip)
        {
            continue;
        }
        let src = entry.path();
        let dst = to.join(&name);
        if src.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(io_err(&src))?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_language_and_refuses_other_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let py = tmp.path().join("geo");
        std::fs::create_dir(&py).unwrap();
        std::fs::write(py.join("app.py"), "").unwrap();
        let p = detect(&py).unwrap();
        assert_eq!((p.lang, p.name.as_str()), (Lang::Python, "geo"));

        let rs = tmp.path().join("rs");
        std::fs::create_dir(&rs).unwrap();
        std::fs::write(rs.join("Cargo.toml"), "[package]\nname = \"tagger\"\n").unwrap();
        let p = detect(&rs).unwrap();
        assert_eq!((p.lang, p.name.as_str()), (Lang::Rust, "tagger"));

        let err = detect(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("not a plugin project"), "{err}");
    }
}
