//! Hot reload: watch the plugins folder (the folder, not the files, so an
//! editor's write-temp-then-rename save is seen) and load what changed once
//! the folder has been quiet for the debounce interval.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Longest a change waits for the folder to go quiet before it is loaded
/// anyway.
pub const RELOAD_MAX_DELAY: Duration = Duration::from_secs(2);

use notify::{RecursiveMode, Watcher as _};

use super::registry::{Registry, plugin_name};

/// A running folder watcher; stops when dropped.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
}

/// Start watching `registry`'s folder.
pub fn watch(registry: Arc<Registry>, debounce: Duration) -> notify::Result<Watcher> {
    let (tx, rx) = mpsc::channel::<PathBuf>();
    let mut inner =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(event) => {
                for path in event.paths {
                    // The receiver only goes away when the watcher is dropped.
                    let _ = tx.send(path);
                }
            }
            Err(e) => tracing::warn!(error = %e, "plugin folder watch error"),
        })?;
    inner.watch(registry.dir(), RecursiveMode::NonRecursive)?;
    tracing::info!(dir = %registry.dir().display(), "watching plugins folder");
    thread::Builder::new()
        .name("eddy-reload".into())
        .spawn(move || reload_loop(&registry, &rx, debounce))
        .map_err(|e| notify::Error::generic(&format!("cannot start reload thread: {e}")))?;
    Ok(Watcher { _inner: inner })
}

fn reload_loop(registry: &Registry, rx: &mpsc::Receiver<PathBuf>, debounce: Duration) {
    // Block for the first change, then gather until the folder is quiet —
    // but no longer than RELOAD_MAX_DELAY, so a folder that never goes quiet
    // (a busy neighbour file) cannot hold reloads back for ever.
    while let Ok(first) = rx.recv() {
        let mut changed = BTreeSet::from([first]);
        let give_up = Instant::now() + RELOAD_MAX_DELAY.max(debounce);
        loop {
            let wait = debounce.min(give_up.saturating_duration_since(Instant::now()));
            if wait.is_zero() {
                break;
            }
            match rx.recv_timeout(wait) {
                Ok(p) => {
                    changed.insert(p);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        for path in changed {
            let Some(name) = plugin_name(&path) else {
                continue;
            };
            if path.exists() {
                // Failures are reported (log, counter, notice) by load_file.
                let _ = registry.load_file(&path);
            } else {
                registry.unload(name);
            }
        }
    }
}
