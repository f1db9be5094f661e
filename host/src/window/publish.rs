//! Windows wired to the hub: the shared, locked [`Windows`] that the
//! pipeline thread feeds, a ticker advances and REST handlers read, and the
//! channels their results go to.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{LATE_CHANNEL, Output, Stream, Windows};
use crate::event::Event;
use crate::hub::{Hub, Payload, Publisher};

/// How often the ticker advances idle watermarks and checks early firings.
/// 100 ms: an idle window closes, and an early result appears, within a
/// tenth of a second of when it is due, for one lock per tick.
pub const TICK: Duration = Duration::from_millis(100);

/// The windows and their channels. Cheap to clone.
#[derive(Clone)]
pub struct LiveWindows {
    windows: Arc<Mutex<Windows>>,
    results: Arc<[Publisher]>,
    late: Publisher,
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl LiveWindows {
    /// Register `windows/<name>` for every window, and `late`.
    pub fn register(hub: &Hub, windows: Windows) -> LiveWindows {
        let results = (0..windows.names().len())
            .map(|i| hub.register(&windows.channel(Stream::Results(i))))
            .collect();
        LiveWindows {
            windows: Arc::new(Mutex::new(windows)),
            results,
            late: hub.register(LATE_CHANNEL),
        }
    }

    /// Run events that came out of the pipeline through every window and
    /// publish what they produce.
    pub fn process(&self, events: &[Event]) {
        let mut out = Vec::new();
        let mut w = self.lock();
        w.process(events, wall_ms(), &mut out);
        // Published under the lock, so each channel's order is the order
        // the windows produced it in, whichever thread runs next.
        self.publish(out);
    }

    /// Advance wall time; call every [`TICK`].
    pub fn tick(&self) {
        let mut out = Vec::new();
        let mut w = self.lock();
        w.tick(wall_ms(), &mut out);
        self.publish(out);
    }

    /// Read access for REST views and metrics.
    pub fn lock(&self) -> MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, out: Vec<Output>) {
        for o in out {
            let publisher = match o.stream {
                Stream::Results(i) => self.results.get(i),
                Stream::Late => Some(&self.late),
            };
            if let Some(p) = publisher {
                p.publish(Payload::Json(o.payload));
            }
        }
    }

    /// Start the ticker thread; it runs for the life of the process and
    /// sets the window metrics about once a second.
    pub fn spawn_ticker(&self) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("eddy-windows".into())
            .spawn(move || {
                let mut n: u64 = 0;
                loop {
                    std::thread::sleep(TICK);
                    me.tick();
                    n += 1;
                    if n.is_multiple_of(10) {
                        me.lock().record_metrics();
                    }
                }
            })?;
        Ok(())
    }
}
