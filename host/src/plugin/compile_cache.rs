//! Compiled components on disk, so a restart, a `plugin test` or a `pipe`
//! run does not compile the same component again (the Python and
//! JavaScript plugins take 10–25 s each to compile on a small machine).
//!
//! An entry is named by the component's content hash and a tag of the
//! engine that compiled it (wasmtime's own compatibility hash: its version
//! and every setting that changes the machine code), so a component
//! compiled by another wasmtime or with other settings is never looked up.
//! Each file starts with a magic and the SHA-256 of the artifact after it:
//! a torn, truncated or altered file fails that check and is compiled again
//! (and rewritten), never loaded. wasmtime checks its own header on
//! deserialization too; a refusal there is a stale entry, compiled again.
//!
//! Where: `EDDY_COMPILE_CACHE` names the folder, or is `off`; by default
//! `$XDG_CACHE_HOME/eddy/compiled`, else `$HOME/.cache/eddy/compiled`. The
//! folder is created private to the user (0700): what is in it is loaded
//! as machine code.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The first bytes of every entry (and the format's version).
const MAGIC: &[u8; 8] = b"EDDYCW01";

/// The environment variable naming the folder, or `off`.
pub const ENV: &str = "EDDY_COMPILE_CACHE";

/// The cache keeps its most recently used entries within these bounds
/// (a Python or JavaScript plugin's entry is about 35 MB, a Rust one's
/// well under 1 MB).
pub const MAX_BYTES: u64 = 2 << 30;
/// See [`MAX_BYTES`].
pub const MAX_ENTRIES: usize = 256;

/// Temporary files get unique names within the process.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// Where compiled components are kept, for one engine configuration.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    /// The engine's compatibility tag (hex).
    tag: String,
}

/// What a lookup found.
pub enum Lookup {
    /// A verified entry.
    Hit(Component),
    /// No entry.
    Miss,
    /// An entry that failed its checks (removed; compile again).
    Rejected(String),
}

impl CompileCache {
    /// The cache `EDDY_COMPILE_CACHE` (or the default folder) names for
    /// `engine`; `None` when it is `off` or no folder can be found.
    pub fn from_env(engine: &Engine) -> Option<Self> {
        let dir = match std::env::var_os(ENV) {
            Some(v) if v == "off" || v == "0" || v == "false" => return None,
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => default_dir()?,
        };
        Some(Self::new(dir, engine))
    }

    /// A cache in `dir` for `engine`.
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let tag = format!("{:016x}", hasher.finish());
        Self { dir, tag }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for the component whose content hash is `hash`.
    pub fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}-{}.cwasm", self.tag))
    }

    /// The compiled component for `hash`, if a sound entry is kept.
    pub fn load(&self, engine: &Engine, hash: &str) -> Lookup {
        let path = self.path(hash);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Rejected(format!("cannot read {}: {e}", path.display())),
        };
        let reject = |why: String| {
            let _ = std::fs::remove_file(&path);
            Lookup::Rejected(format!("{}: {why}", path.display()))
        };
        let Some(artifact) = verified(&bytes) else {
            return reject("its checksum does not match (torn or altered)".to_owned());
        };
        // SAFETY: wasmtime runs deserialized machine code as is. `artifact`
        // is exactly what `Component::serialize` wrote for this engine
        // configuration: the file sits in a folder private to this user,
        // and its SHA-256 checksum, written with it, matches; wasmtime
        // checks its own version and settings header as well.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, artifact) };
        match component {
            Ok(c) => {
                // Used now: the last to be pruned.
                if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
                Lookup::Hit(c)
            }
            Err(e) => reject(format!("wasmtime refused it ({e})")),
        }
    }

    /// Keep `component` (content hash `hash`): written to a temporary file
    /// and renamed, so readers see the whole entry or none.
    pub fn store(&self, hash: &str, component: &Component) -> std::io::Result<()> {
        let artifact = component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        create_private_dir(&self.dir)?;
        let tmp = self.dir.join(format!(
            ".{hash}.{}.{}.tmp",
            std::process::id(),
            NEXT_TMP.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&Sha256::digest(&artifact))?;
            f.write_all(&artifact)?;
            f.flush()?;
            std::fs::rename(&tmp, self.path(hash))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        self.prune();
        Ok(())
    }

    /// Remove the least recently used entries beyond [`MAX_BYTES`] and
    /// [`MAX_ENTRIES`], and temporary files a crash left an hour ago.
    fn prune(&self) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = std::time::SystemTime::now();
        let mut entries = Vec::new();
        for e in dir.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            let modified = meta.modified().unwrap_or(now);
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                if now.duration_since(modified).unwrap_or_default()
                    > std::time::Duration::from_secs(3600)
                {
                    let _ = std::fs::remove_file(&path);
                }
            } else if name.ends_with(".cwasm") {
                entries.push((modified, meta.len(), path));
            }
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut total = 0u64;
        for (i, (_, len, path)) in entries.iter().enumerate() {
            total += len;
            if i >= MAX_ENTRIES || total > MAX_BYTES {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The artifact of an entry whose magic and checksum are right.
fn verified(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    if rest.len() < 32 {
        return None;
    }
    let (sum, artifact) = rest.split_at(32);
    (Sha256::digest(artifact).as_slice() == sum).then_some(artifact)
}

fn default_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?).join(".cache"),
    };
    Some(base.join("eddy").join("compiled"))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn only_an_entry_with_its_magic_and_checksum_is_verified() {
        let artifact = b"machine code".to_vec();
        let mut entry = MAGIC.to_vec();
        entry.extend_from_slice(&Sha256::digest(&artifact));
        entry.extend_from_slice(&artifact);
        assert_eq!(verified(&entry), Some(artifact.as_slice()));
        // One bit flipped anywhere, a truncation, another magic: refused.
        for i in 0..entry.len() {
            let mut bad = entry.clone();
            bad[i] ^= 1;
            assert_eq!(verified(&bad), None, "byte {i}");
        }
        assert_eq!(verified(&entry[..entry.len() - 1]), None);
        assert_eq!(verified(&entry[..20]), None);
        assert_eq!(verified(b""), None);
    }

    #[test]
    fn pruning_keeps_the_most_recently_used_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path().to_owned(), &Engine::default());
        let base = std::time::SystemTime::now() - std::time::Duration::from_secs(100_000);
        for i in 0..MAX_ENTRIES + 3 {
            let path = dir.path().join(format!("{i:04}-x.cwasm"));
            std::fs::write(&path, b"x").unwrap();
            let f = std::fs::File::options().append(true).open(&path).unwrap();
            f.set_modified(base + std::time::Duration::from_secs(i as u64))
                .unwrap();
        }
        let stale_tmp = dir.path().join(".a.1.2.tmp");
        std::fs::write(&stale_tmp, b"x").unwrap();
        let f = std::fs::File::options()
            .append(true)
            .open(&stale_tmp)
            .unwrap();
        f.set_modified(base).unwrap();
        cache.prune();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), MAX_ENTRIES, "the stale temporary file went too");
        assert_eq!(
            left[0], "0003-x.cwasm",
            "the three least recently used went"
        );
    }

    #[test]
    fn the_path_names_the_content_and_the_engine() {
        let engine = Engine::default();
        let a = CompileCache::new(PathBuf::from("/c"), &engine);
        let p = a.path("ab12");
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("ab12-") && name.ends_with(".cwasm"),
            "{name}"
        );
        let mut other = wasmtime::Config::new();
        other.epoch_interruption(true);
        let b = CompileCache::new(PathBuf::from("/c"), &Engine::new(&other).unwrap());
        assert_ne!(
            a.path("ab12"),
            b.path("ab12"),
            "other settings, other entries"
        );
    }
}
