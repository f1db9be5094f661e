//! Never returns from `process`: the host must interrupt it (fuel or epoch
//! deadline) and fail the batch.

use eddy_plugin_sdk::{Config, Event, Outcome, Processor};

/// Spins forever on the first event of every batch.
pub struct InfiniteLoop;

impl Processor for InfiniteLoop {
    fn new(_config: Config) -> Result<Self, String> {
        Ok(InfiniteLoop)
    }

    fn process(&mut self, _event: &mut Event<'_>) -> Outcome {
        let mut counter = 0u64;
        loop {
            // `black_box` keeps the optimiser from proving the loop useless.
            std::hint::black_box(&mut counter);
            counter = counter.wrapping_add(1);
        }
    }
}

eddy_plugin_sdk::processor!(InfiniteLoop);
