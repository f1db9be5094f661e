//! The file operations the log and the checkpoint store need, behind a small
//! trait, so a simulated disk ([`SimFs`], tests only) can drop every unsynced
//! byte at a "power cut" — a kill -9 never shows a missing fsync, because the
//! page cache survives it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// An open file the log appends to.
pub trait WalFile: Send {
    /// Writes the whole buffer at the end of the file. On an error, part of
    /// it may have been written: the caller cuts the file back with
    /// [`WalFile::set_len`].
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// `fdatasync`: once it returns, every byte written so far (and the
    /// length needed to read it) survives a power cut.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts (or extends) the file to `len` bytes; later writes go to the new end.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// The directory and file operations of the write-ahead log and the
/// checkpoint store.
pub trait WalFs: Send + Sync {
    /// Names (not paths) of the entries in `dir`. A missing or unreadable
    /// directory is an error.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens `path` for appending, creating it when `create` is set.
    fn open_append(&self, path: &Path, create: bool) -> io::Result<Box<dyn WalFile>>;
    /// Creates `path` empty (truncating an existing file) for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// The whole content of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Length of `path` in bytes.
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// When `path` was last written.
    fn modified(&self, path: &Path) -> io::Result<SystemTime>;
    /// Cuts `path` to `len` bytes and syncs it.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`. Durable only after
    /// [`WalFs::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`. Durable only after [`WalFs::sync_dir`].
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (files created, renamed, removed) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The wall clock retention compares file ages with.
    fn now(&self) -> SystemTime;
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

struct StdFile(std::fs::File);

impl WalFile for StdFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl WalFs for StdFs {
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn open_append(&self, path: &Path, create: bool) -> io::Result<Box<dyn WalFile>> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(create)
            .open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn modified(&self, path: &Path) -> io::Result<SystemTime> {
        std::fs::metadata(path)?.modified()
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        file.sync_data()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    #[cfg(unix)]
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }

    #[cfg(not(unix))]
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        // Windows cannot open a directory as a file; NTFS journals its
        // metadata, so a rename is durable without it.
        Ok(())
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Joins a directory and a file name (a helper for both stores).
pub(crate) fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[cfg(test)]
pub(crate) use sim::SimFs;

#[cfg(test)]
mod sim {
    //! An in-memory disk that loses what was not synced.

    use std::collections::{BTreeMap, BTreeSet, HashMap};
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
    use std::time::{Duration, SystemTime};

    use super::{WalFile, WalFs};
    use crate::test_rng::Rng;

    struct SimFile {
        data: Vec<u8>,
        /// The content as of the last `sync_data`: what a power cut leaves.
        durable: Vec<u8>,
        modified: SystemTime,
    }

    struct State {
        files: HashMap<u64, SimFile>,
        /// Directory entries as the running system sees them.
        names: BTreeMap<PathBuf, u64>,
        /// Directory entries as of each directory's last sync.
        durable_names: BTreeMap<PathBuf, u64>,
        dirs: BTreeSet<PathBuf>,
        next_id: u64,
        /// Bumped at every power cut: handles opened before it fail.
        generation: u64,
        /// Bytes still free; `None` is unlimited.
        free: Option<u64>,
        fail_syncs: bool,
        /// Mutating operations left before the machine "stops": every one
        /// after fails until the power cut.
        crash_after: Option<u64>,
        rng: Rng,
        now: SystemTime,
        syncs: u64,
    }

    /// A simulated disk: per file the synced content and the unsynced
    /// tail, directory entries synced or not. [`SimFs::power_cut`] keeps
    /// only what was synced (and, when asked, a torn piece of the unsynced
    /// tail); [`SimFs::set_free`] makes writes fail with `StorageFull`.
    #[derive(Clone)]
    pub(crate) struct SimFs {
        state: Arc<Mutex<State>>,
    }

    fn gone() -> io::Error {
        io::Error::other("simulated power cut: handle from before the cut")
    }

    /// Counts one mutating operation against `crash_after`.
    fn step(s: &mut State) -> io::Result<()> {
        match s.crash_after {
            Some(0) => Err(io::Error::other("simulated crash: the machine has stopped")),
            Some(n) => {
                s.crash_after = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn not_found(path: &Path) -> io::Error {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{}: no such file", path.display()),
        )
    }

    impl SimFs {
        /// A disk with the directory `dir` (already durable), deterministic from `seed`.
        pub(crate) fn new(dir: &Path, seed: u64) -> SimFs {
            let mut dirs = BTreeSet::new();
            dirs.insert(dir.to_path_buf());
            SimFs {
                state: Arc::new(Mutex::new(State {
                    files: HashMap::new(),
                    names: BTreeMap::new(),
                    durable_names: BTreeMap::new(),
                    dirs,
                    next_id: 0,
                    generation: 0,
                    free: None,
                    fail_syncs: false,
                    crash_after: None,
                    rng: Rng::new(seed),
                    now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                    syncs: 0,
                })),
            }
        }

        fn lock(&self) -> MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(PoisonError::into_inner)
        }

        /// The power goes: unsynced bytes and unsynced directory entries are
        /// lost. With `tear_last_write`, a random prefix of each file's
        /// unsynced tail survives (the disk wrote part of it).
        pub(crate) fn power_cut(&self, tear_last_write: bool) {
            let mut s = self.lock();
            s.generation += 1;
            s.crash_after = None;
            s.names = s.durable_names.clone();
            let live: BTreeSet<u64> = s.names.values().copied().collect();
            s.files.retain(|id, _| live.contains(id));
            let ids: Vec<u64> = s.files.keys().copied().collect();
            for id in ids {
                let keep = {
                    let Some(f) = s.files.get(&id) else { continue };
                    let appended = f.data.len() > f.durable.len() && f.data.starts_with(&f.durable);
                    if tear_last_write && appended {
                        Some(f.data.len() - f.durable.len())
                    } else {
                        None
                    }
                };
                let torn = match keep {
                    Some(tail) => s.rng.below(tail as u64 + 1) as usize,
                    None => 0,
                };
                if let Some(f) = s.files.get_mut(&id) {
                    let end = f.durable.len() + torn;
                    f.data.truncate(end);
                    f.durable = f.data.clone();
                }
            }
        }

        /// Bytes the disk can still take (`None`: unlimited). A write that
        /// does not fit writes what fits and fails with `StorageFull`.
        pub(crate) fn set_free(&self, free: Option<u64>) {
            self.lock().free = free;
        }

        /// Makes every `sync_data` fail (an I/O error from the device).
        pub(crate) fn set_fail_syncs(&self, fail: bool) {
            self.lock().fail_syncs = fail;
        }

        /// After `n` more mutating operations (writes, syncs, renames, …)
        /// every one fails, as if the machine stopped there; a
        /// [`SimFs::power_cut`] then decides what survived.
        pub(crate) fn crash_after(&self, n: Option<u64>) {
            self.lock().crash_after = n;
        }

        /// Moves the simulated wall clock forward.
        pub(crate) fn advance(&self, by: Duration) {
            let mut s = self.lock();
            s.now += by;
        }

        /// How many file syncs succeeded so far.
        pub(crate) fn syncs(&self) -> u64 {
            self.lock().syncs
        }

        /// Flips one byte of `path` (synced content too): media corruption.
        pub(crate) fn corrupt(&self, path: &Path, offset: usize) {
            let mut s = self.lock();
            let Some(&id) = s.names.get(path) else { return };
            if let Some(f) = s.files.get_mut(&id) {
                if let Some(b) = f.data.get_mut(offset) {
                    *b ^= 0x5a;
                }
                if let Some(b) = f.durable.get_mut(offset) {
                    *b ^= 0x5a;
                }
            }
        }

        fn new_file(s: &mut State, path: &Path) -> io::Result<u64> {
            let parent = path.parent().unwrap_or(Path::new(""));
            if !s.dirs.contains(parent) {
                return Err(not_found(parent));
            }
            let id = s.next_id;
            s.next_id += 1;
            let now = s.now;
            s.files.insert(
                id,
                SimFile {
                    data: Vec::new(),
                    durable: Vec::new(),
                    modified: now,
                },
            );
            s.names.insert(path.to_path_buf(), id);
            Ok(id)
        }

        fn handle(&self, id: u64, generation: u64) -> Box<dyn WalFile> {
            Box::new(SimHandle {
                fs: self.clone(),
                id,
                generation,
            })
        }
    }

    struct SimHandle {
        fs: SimFs,
        id: u64,
        generation: u64,
    }

    impl SimHandle {
        fn with<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
            let mut s = self.fs.lock();
            if s.generation != self.generation || !s.files.contains_key(&self.id) {
                return Err(gone());
            }
            step(&mut s)?;
            f(&mut s)
        }
    }

    impl WalFile for SimHandle {
        fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
            let id = self.id;
            self.with(|s| {
                let fits = match s.free {
                    Some(free) => buf.len().min(free as usize),
                    None => buf.len(),
                };
                if let Some(free) = s.free.as_mut() {
                    *free -= fits as u64;
                }
                let now = s.now;
                if let Some(f) = s.files.get_mut(&id) {
                    f.data.extend_from_slice(&buf[..fits]);
                    f.modified = now;
                }
                if fits < buf.len() {
                    return Err(io::Error::from(io::ErrorKind::StorageFull));
                }
                Ok(())
            })
        }

        fn sync_data(&mut self) -> io::Result<()> {
            let id = self.id;
            self.with(|s| {
                if s.fail_syncs {
                    return Err(io::Error::other("simulated fsync failure"));
                }
                s.syncs += 1;
                if let Some(f) = s.files.get_mut(&id) {
                    f.durable = f.data.clone();
                }
                Ok(())
            })
        }

        fn set_len(&mut self, len: u64) -> io::Result<()> {
            let id = self.id;
            self.with(|s| {
                let Some(f) = s.files.get_mut(&id) else {
                    return Err(gone());
                };
                let old = f.data.len() as u64;
                f.data.resize(len as usize, 0);
                if let Some(free) = s.free.as_mut() {
                    *free = (*free + old).saturating_sub(len);
                }
                Ok(())
            })
        }
    }

    impl WalFs for SimFs {
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            let s = self.lock();
            if !s.dirs.contains(dir) {
                return Err(not_found(dir));
            }
            Ok(s.names
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
                .collect())
        }

        fn open_append(&self, path: &Path, create: bool) -> io::Result<Box<dyn WalFile>> {
            let mut s = self.lock();
            step(&mut s)?;
            let id = match s.names.get(path) {
                Some(&id) => id,
                None if create => SimFs::new_file(&mut s, path)?,
                None => return Err(not_found(path)),
            };
            let generation = s.generation;
            drop(s);
            Ok(self.handle(id, generation))
        }

        fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
            let mut s = self.lock();
            step(&mut s)?;
            let id = match s.names.get(path) {
                Some(&id) => {
                    if let Some(f) = s.files.get_mut(&id) {
                        f.data.clear();
                    }
                    id
                }
                None => SimFs::new_file(&mut s, path)?,
            };
            let generation = s.generation;
            drop(s);
            Ok(self.handle(id, generation))
        }

        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            let s = self.lock();
            let id = s.names.get(path).ok_or_else(|| not_found(path))?;
            Ok(s.files.get(id).map(|f| f.data.clone()).unwrap_or_default())
        }

        fn len(&self, path: &Path) -> io::Result<u64> {
            let s = self.lock();
            let id = s.names.get(path).ok_or_else(|| not_found(path))?;
            Ok(s.files.get(id).map_or(0, |f| f.data.len() as u64))
        }

        fn modified(&self, path: &Path) -> io::Result<SystemTime> {
            let s = self.lock();
            let id = s.names.get(path).ok_or_else(|| not_found(path))?;
            s.files
                .get(id)
                .map(|f| f.modified)
                .ok_or_else(|| not_found(path))
        }

        fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
            let mut s = self.lock();
            step(&mut s)?;
            let id = *s.names.get(path).ok_or_else(|| not_found(path))?;
            if let Some(f) = s.files.get_mut(&id) {
                f.data.truncate(len as usize);
                f.durable = f.data.clone();
            }
            Ok(())
        }

        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            let mut s = self.lock();
            step(&mut s)?;
            let id = s.names.remove(from).ok_or_else(|| not_found(from))?;
            s.names.insert(to.to_path_buf(), id);
            Ok(())
        }

        fn remove(&self, path: &Path) -> io::Result<()> {
            let mut s = self.lock();
            step(&mut s)?;
            s.names.remove(path).ok_or_else(|| not_found(path))?;
            Ok(())
        }

        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            let mut s = self.lock();
            step(&mut s)?;
            if !s.dirs.contains(dir) {
                return Err(not_found(dir));
            }
            let in_dir = |p: &PathBuf| p.parent() == Some(dir);
            s.durable_names.retain(|p, _| !in_dir(p));
            let current: Vec<(PathBuf, u64)> = s
                .names
                .iter()
                .filter(|(p, _)| in_dir(p))
                .map(|(p, id)| (p.clone(), *id))
                .collect();
            s.durable_names.extend(current);
            Ok(())
        }

        fn now(&self) -> SystemTime {
            self.lock().now
        }
    }
}
