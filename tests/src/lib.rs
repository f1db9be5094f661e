//! Helpers for eddy's integration tests: the real `eddy` binary, real
//! plugins built from source by `build.rs`, private plugin folders, and
//! readers with timeouts so no test can hang.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod load;
pub mod server;

/// Paths of every plugin built by build.rs.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}

/// xorshift64*: a small seeded generator, so a test's generated input can
/// be repeated from its seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The embedded default configuration without its `plugins_dir` line, for
/// [`Sandbox::config`] to put the sandbox's folder in its place.
pub fn default_config_body() -> String {
    include_str!("../../host/src/config/default.toml")
        .lines()
        .filter(|l| !l.starts_with("plugins_dir"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A Chrome 120 on Windows user agent.
pub const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36";
/// Safari on an iPhone.
pub const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
/// Googlebot.
pub const GOOGLEBOT: &str =
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// The `eddy` binary of this build (`cargo build -p eddy`; scripts/test
/// builds it before running the tests).
pub fn eddy_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/it-<hash> -> target/<profile>/eddy
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(format!("eddy{}", std::env::consts::EXE_SUFFIX)))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p eddy`), as scripts/test does",
        bin.display()
    );
    // `cargo test` builds the eddy library for these tests but not its
    // binary (cargo builds a package's binaries only for that package's own
    // integration tests): refuse to test a missing or stale one.
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .expect("binary mtime");
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src");
    if let Some(newer) = newest_file(&sources).filter(|(t, _)| *t > built) {
        panic!(
            "{} is older than {}: rebuild it (`cargo build -p eddy`), as scripts/test does",
            bin.display(),
            newer.1.display()
        );
    }
    bin
}

fn newest_file(dir: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_file(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, path))
        };
        if let Some(c) = candidate.filter(|c| newest.as_ref().is_none_or(|n| c.0 > n.0)) {
            newest = Some(c);
        }
    }
    newest
}

/// One event as an NDJSON line.
pub fn event_line(id: &str, distinct_id: &str, ts: i64, properties: Value) -> String {
    json!({
        "id": id,
        "name": "$pageview",
        "timestamp": ts,
        "distinct_id": distinct_id,
        "properties": properties,
    })
    .to_string()
}

/// A private folder with a plugins directory and config files.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

/// The outcome of a finished `eddy pipe`.
pub struct PipeRun {
    pub success: bool,
    pub events: Vec<Value>,
    pub summary: Value,
    pub stderr: String,
    pub dead_letters: Vec<Value>,
}

impl PipeRun {
    /// The summary row of stage `name`.
    pub fn stage(&self, name: &str) -> &Value {
        self.summary["stages"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .unwrap_or_else(|| panic!("no stage {name} in summary: {}", self.summary))
    }

    /// The ids of the output events, in order.
    pub fn ids(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|e| e["id"].as_str().expect("event id"))
            .collect()
    }

    /// The status row of plugin `name`.
    pub fn plugin(&self, name: &str) -> &Value {
        summary_plugin(&self.summary, name)
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("plugins")).expect("plugins dir");
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Copy a built plugin into the plugins folder as `name.wasm`.
    pub fn install(&self, built: &str, name: &str) {
        std::fs::copy(built, self.plugin_path(name)).expect("copy plugin");
    }

    /// Install what `scripts/build-plugins` puts in `target/plugins`: the
    /// example plugins `scripts/run` serves.
    pub fn install_examples(&self) {
        use plugins::*;
        for (built, name) in [
            (BOT_FILTER, "bot-filter"),
            (UA_ENRICHER, "ua-enricher"),
            (PII_SCRUBBER, "pii-scrubber"),
            (FIRST_SEEN, "first-seen"),
            (LOGIN_BURST, "login-burst"),
            (ZSCORE_ANOMALY, "zscore-anomaly"),
            (BURN_RATE, "burn-rate"),
        ] {
            self.install(built, name);
        }
    }

    pub fn plugin_path(&self, name: &str) -> PathBuf {
        self.plugins_dir().join(format!("{name}.wasm"))
    }

    /// Replace `name.wasm` the way editors do: write a temp file, rename it
    /// over the plugin.
    pub fn rename_over(&self, built: &str, name: &str) {
        let tmp = self.plugins_dir().join(format!(".{name}.wasm.tmp"));
        std::fs::copy(built, &tmp).expect("write temp");
        std::fs::rename(&tmp, self.plugin_path(name)).expect("rename over");
    }

    /// Write a config file whose `plugins_dir` is this sandbox's folder.
    pub fn config(&self, body: &str) -> PathBuf {
        let path = self.dir.path().join("eddy.toml");
        let text = format!(
            "plugins_dir = {:?}\n{body}",
            self.plugins_dir().display().to_string()
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    fn pipe_command(&self, config: Option<&Path>, extra: &[&str]) -> Command {
        let mut cmd = Command::new(eddy_bin());
        cmd.arg("--log-format").arg("json").arg("pipe");
        match config {
            Some(c) => cmd.arg("--config").arg(c),
            // The embedded default configuration, on this sandbox's plugins.
            None => cmd.arg("--plugins-dir").arg(self.plugins_dir()),
        };
        cmd.arg("--summary")
            .arg("json")
            .arg("--dead-letter")
            .arg(self.dir.path().join("dead.ndjson"))
            .args(extra)
            .env_remove("EDDY_LOG")
            .current_dir(self.dir.path());
        cmd
    }

    /// Run `eddy pipe` to completion over `input` (NDJSON), with a time limit.
    pub fn pipe(&self, config: &Path, input: &str, extra: &[&str]) -> PipeRun {
        self.pipe_with(Some(config), input.as_bytes(), extra, &[])
    }

    /// Like [`Sandbox::pipe`], with raw input bytes, the embedded default
    /// configuration when `config` is `None`, and extra environment.
    pub fn pipe_with(
        &self,
        config: Option<&Path>,
        input: &[u8],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> PipeRun {
        let input_path = self.dir.path().join("input.ndjson");
        std::fs::write(&input_path, input).expect("write input");
        let mut cmd = self.pipe_command(config, extra);
        cmd.arg("--input").arg(&input_path).arg("--no-watch");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let output = run_with_timeout(cmd, Duration::from_secs(120));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let events = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad output line {l}: {e}")))
            .collect();
        let summary = stderr
            .lines()
            .rev()
            .find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                v.get("stages").is_some().then_some(v)
            })
            .unwrap_or(Value::Null);
        let dead_letters = std::fs::read_to_string(self.dir.path().join("dead.ndjson"))
            .map(|t| {
                t.lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        PipeRun {
            success: output.status.success(),
            events,
            summary,
            stderr,
            dead_letters,
        }
    }

    /// Start a long-running `eddy pipe` fed through stdin.
    pub fn spawn_pipe(&self, config: &Path, extra: &[&str]) -> LivePipe {
        let mut cmd = self.pipe_command(Some(config), extra);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn eddy pipe");
        let stdin = child.stdin.take();
        let stdout = lines_of(child.stdout.take().expect("stdout"));
        let stderr = lines_of(child.stderr.take().expect("stderr"));
        LivePipe {
            child,
            stdin,
            stdout,
            stderr,
            logs: Vec::new(),
        }
    }
}

fn lines_of(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Run a command, killing it if it outlives `limit`.
pub fn run_with_timeout(mut cmd: Command, limit: Duration) -> std::process::Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let out = lines_of(child.stdout.take().expect("stdout"));
    let err = lines_of(child.stderr.take().expect("stderr"));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("command did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let collect = |rx: mpsc::Receiver<String>| {
        let mut s = String::new();
        while let Ok(l) = rx.recv_timeout(Duration::from_secs(10)) {
            s.push_str(&l);
            s.push('\n');
        }
        s.into_bytes()
    };
    std::process::Output {
        status,
        stdout: collect(out),
        stderr: collect(err),
    }
}

/// A running `eddy pipe` with stdin open.
pub struct LivePipe {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Every stderr line seen so far, parsed where it is JSON.
    pub logs: Vec<Value>,
}

impl LivePipe {
    pub fn send(&mut self, lines: &[String]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        let mut buf = String::new();
        for l in lines {
            buf.push_str(l);
            buf.push('\n');
        }
        stdin.write_all(buf.as_bytes()).expect("write to eddy");
        stdin.flush().expect("flush to eddy");
    }

    /// A writer for another thread.
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("stdin open")
    }

    /// Read `n` output events, failing after `limit`.
    pub fn recv_events(&mut self, n: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(l) => out.push(serde_json::from_str(&l).expect("output is JSON")),
                Err(_) => panic!(
                    "got {} of {n} events within {limit:?}; stderr so far: {:?}",
                    out.len(),
                    self.drain_logs()
                ),
            }
        }
        out
    }

    /// Absorb stderr lines available now.
    pub fn drain_logs(&mut self) -> &[Value] {
        while let Ok(l) = self.stderr.try_recv() {
            self.logs
                .push(serde_json::from_str(&l).unwrap_or(Value::String(l)));
        }
        &self.logs
    }

    /// Wait for a log record matching `pred`, failing after `limit`.
    pub fn wait_log(
        &mut self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_nth_log(what, 1, limit, pred)
    }

    /// Wait until `n` log records match `pred`; returns the n-th.
    pub fn wait_nth_log(
        &mut self,
        what: &str,
        n: usize,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        if let Some(v) = self.logs.iter().filter(|v| pred(v)).nth(n - 1) {
            return v.clone();
        }
        let mut seen = self.logs.iter().filter(|v| pred(v)).count();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(l) => {
                    let v = serde_json::from_str(&l).unwrap_or(Value::String(l));
                    self.logs.push(v.clone());
                    if pred(&v) {
                        seen += 1;
                        if seen >= n {
                            return v;
                        }
                    }
                }
                Err(_) => panic!(
                    "no log record '{what}' within {limit:?}; logs: {:#?}",
                    self.logs
                ),
            }
        }
    }

    /// Close stdin, wait for exit, and return the remaining output events
    /// and the summary.
    pub fn finish(mut self, limit: Duration) -> (Vec<Value>, Value) {
        drop(self.stdin.take());
        let started = Instant::now();
        loop {
            if self.child.try_wait().expect("wait").is_some() {
                break;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("eddy pipe did not exit within {limit:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
        let mut events = Vec::new();
        while let Ok(l) = self.stdout.recv_timeout(Duration::from_secs(5)) {
            events.push(serde_json::from_str(&l).expect("output is JSON"));
        }
        let mut summary = Value::Null;
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            let v = serde_json::from_str(&l).unwrap_or(Value::String(l));
            if v.get("stages").is_some() {
                summary = v.clone();
            }
            self.logs.push(v);
        }
        (events, summary)
    }
}

impl Drop for LivePipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status row of plugin `name` in a pipe summary.
pub fn summary_plugin<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["plugins"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no plugin {name} in summary: {summary}"))
}

/// Whether a JSON log record is the given message about plugin `plugin`.
pub fn is_log(v: &Value, message: &str, plugin: &str) -> bool {
    v["message"] == message && v["plugin"] == plugin
}
