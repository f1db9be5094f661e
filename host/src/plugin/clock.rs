//! A virtual clock (and fixed-seed randomness) for deterministic runs.
//!
//! `eddy plugin test` and `eddy plugin diff` must give the same answer on
//! every run and every machine. A plugin can look at the time (WASI
//! `wall-clock` / `monotonic-clock`, which `Date.now()`, Python's `time` and
//! Rust's `SystemTime` reach) and at random numbers (WASI `random`). Under a
//! [`VirtualClock`] both are a function of the input alone:
//!
//! - the wall clock reads the latest event time seen so far (the driver
//!   calls [`VirtualClock::advance_to`] with each batch's newest timestamp
//!   before running it), and never goes backwards;
//! - the monotonic clock reads the same instant in nanoseconds;
//! - both random sources are generators seeded by the engine for every
//!   instance (from the engine's seed, the stage and the instance count),
//!   so a replay draws the same numbers.
//!
//! The engine moves the clock to each batch's time before running it: in
//! `eddy serve` that is the wall time the server stamped on the batch, so
//! plugins see the real time there too, exactly as a replay will.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::clocks::{HostMonotonicClock, HostWallClock};

/// Seed of every instance's random sources under a virtual clock. Any fixed
/// value does; this one spells "eddy".
pub const VIRTUAL_RANDOM_SEED: u64 = 0x6564_6479;

/// Event time as seen by plugins in a deterministic run.
#[derive(Debug, Default)]
pub struct VirtualClock {
    /// Milliseconds since the Unix epoch.
    now_ms: AtomicI64,
}

impl VirtualClock {
    /// A clock at the epoch.
    pub fn new() -> Arc<Self> {
        Arc::new(VirtualClock::default())
    }

    /// Move to `ms` (milliseconds since the epoch) if that is later than now.
    pub fn advance_to(&self, ms: i64) {
        self.now_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// The current virtual time, in milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::Acquire)
    }

    /// Make `builder`'s clocks read this clock and its random sources
    /// start from `seed` (mixed with [`VIRTUAL_RANDOM_SEED`]).
    pub fn install(self: &Arc<Self>, builder: &mut WasiCtxBuilder, seed: u64) {
        let seed = seed ^ VIRTUAL_RANDOM_SEED;
        builder
            .wall_clock(Wall(self.clone()))
            .monotonic_clock(Monotonic(self.clone()))
            .secure_random(StdRng::seed_from_u64(seed))
            .insecure_random(StdRng::seed_from_u64(seed.rotate_left(1)))
            .insecure_random_seed(u128::from(seed));
    }
}

struct Wall(Arc<VirtualClock>);

impl HostWallClock for Wall {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        // Before the epoch reads as the epoch: WASI's wall clock is unsigned.
        Duration::from_millis(u64::try_from(self.0.now_ms()).unwrap_or(0))
    }
}

struct Monotonic(Arc<VirtualClock>);

impl HostMonotonicClock for Monotonic {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        u64::try_from(self.0.now_ms())
            .unwrap_or(0)
            .saturating_mul(1_000_000)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards() {
        let c = VirtualClock::new();
        c.advance_to(2_000);
        c.advance_to(1_000);
        assert_eq!(c.now_ms(), 2_000);
        assert_eq!(Wall(c.clone()).now(), Duration::from_secs(2));
        assert_eq!(Monotonic(c).now(), 2_000_000_000);
    }
}
