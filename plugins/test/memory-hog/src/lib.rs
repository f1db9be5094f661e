//! Allocates memory without bound on every batch and never frees it, so it
//! must hit the host's memory cap and trap.

use eddy_plugin_sdk::{Config, Event, Outcome, Processor};

const CHUNK: usize = 1 << 20;

/// Keeps every chunk it allocates.
pub struct MemoryHog {
    hoard: Vec<Vec<u8>>,
}

impl Processor for MemoryHog {
    fn new(_config: Config) -> Result<Self, String> {
        Ok(MemoryHog { hoard: Vec::new() })
    }

    fn process(&mut self, _event: &mut Event<'_>) -> Outcome {
        // 1 MiB at a time until the allocator fails, which aborts (traps).
        // Non-zero bytes, so every page is written, not just reserved.
        loop {
            self.hoard.push(std::hint::black_box(vec![0xA5u8; CHUNK]));
        }
    }
}

eddy_plugin_sdk::processor!(MemoryHog);
