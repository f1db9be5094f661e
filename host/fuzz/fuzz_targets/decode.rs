//! Every ingest decoder on arbitrary bytes: native JSON, NDJSON and PostHog
//! with the content type and compression chosen by the first byte. Must
//! never panic, and every outcome must satisfy the invariants.

#![no_main]

use eddy::ingest::fuzzing::{check_invariants, decode_all_ways};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for outcome in decode_all_ways(data) {
        if let Err(why) = check_invariants(&outcome) {
            panic!("invariant broken: {why}");
        }
    }
});
