//! Pattern matcher throughput: the purchase funnel of the default
//! configuration (`purchase_funnel`: product view → add to cart 1–5 times →
//! purchase, relaxed, within 30 minutes, skip past last event, per user)
//! over the workload of `scripts/bench-patterns`, fed straight to
//! [`Nfa::advance`] with conditions already classified to [`Bits`], so it
//! measures the matcher alone — no parsing, classification, buffering or
//! result rendering.
//!
//! `cargo bench -p eddy --bench patterns`. Two parts:
//!
//! - `funnel_100k_keys_10m_events`: the workload, run once (it takes
//!   seconds and holds millions of partial matches); prints events/s, the
//!   matches and timeouts, the partial matches alive before the end and the
//!   heap bytes per partial match. `EDDY_BENCH_BIG=0` skips it.
//! - the criterion group `patterns` (10,000 keys, 1 M events) for iterating.
//!
//! Like the operator, only events that satisfy some condition are fed (the
//! funnel has no strict contiguity, so the others cannot change a partial
//! match); events/s counts every generated event, since that is the rate the
//! engine sees. Each key's events arrive in timestamp order, keys
//! interleaved as in the stream; at the end time advances to `i64::MAX`, so
//! every partial match still alive times out (as in `eddy pipe` at the end of
//! input).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eddy::pattern::{
    Bits, Contiguity, Inner, KeyState, Limits, Nfa, OutcomeKind, PatternDef, Quantifier, Skip,
    Step, WithinType,
};

/// Counts live heap bytes, to report the memory per partial match exactly
/// (peak RSS, as `scripts/bench-patterns` uses, only bounds it), over the
/// allocator the `eddy` binary uses (jemalloc; the system allocator where
/// jemalloc does not build), so that allocation costs what it costs there.
struct Counting;

#[cfg(not(target_env = "msvc"))]
static INNER: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(target_env = "msvc")]
static INNER: std::alloc::System = std::alloc::System;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// The one exception to the workspace's `unsafe_code = "deny"`: a global
// allocator must implement the unsafe trait; every method only forwards to
// the inner allocator with the caller's own arguments, after counting.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// `scripts/bench-patterns`: 10,000 events per second of event time.
const EVENTS_PER_SECOND: i64 = 10_000;
const T0: i64 = 1_700_000_000_000;
/// The default configuration's `within = "30m"`.
const WITHIN_MS: i64 = 30 * 60 * 1_000;

/// The funnel of `default.toml`'s `purchase_funnel`.
fn funnel() -> Nfa {
    let step = |name: &str, quantifier: Quantifier| Step {
        name: name.into(),
        after: Contiguity::Relaxed,
        quantifier,
        until: false,
    };
    let mut cart = Quantifier::range(1, 5);
    cart.inner = Inner::Relaxed;
    PatternDef {
        steps: vec![
            step("view", Quantifier::one()),
            step("cart", cart),
            step("purchase", Quantifier::one()),
        ],
        within: Some(WITHIN_MS),
        within_type: WithinType::FirstAndLast,
        skip: Skip::PastLastEvent,
    }
    .compile()
    .unwrap()
}

/// One generated event: its user and the conditions it satisfies (bit 0
/// product view, bit 1 add to cart, bit 2 purchase). Timestamps follow
/// from the position in the stream.
#[derive(Clone, Copy)]
struct Gen {
    key: u32,
    steps: u8,
}

/// The script's mix — 30 % product views, 25 % other views, 12 % add to
/// cart, 3 % purchases, 30 % other — over `keys` uniform users, from a
/// fixed seed (xorshift64).
fn workload(keys: u32, events: usize) -> Vec<Gen> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..events)
        .map(|_| {
            let r = next();
            let steps = match (r >> 32) % 100 {
                0..30 => 0b001,
                30..55 => 0,
                55..67 => 0b010,
                67..70 => 0b100,
                _ => 0,
            };
            Gen {
                key: (r as u32) % keys,
                steps,
            }
        })
        .collect()
}

#[derive(Default, Debug, Clone, Copy)]
struct Figures {
    fed: usize,
    matches: usize,
    timeouts: usize,
    /// Partial matches alive before the final time advance.
    partials: usize,
    /// Heap bytes the key states held then (inline `KeyState`s included).
    bytes: isize,
}

/// Feeds the whole stream, then times every key out. The event payload is
/// its index (a `u32`), so cloning it costs nothing: the operator's is an
/// `Arc`.
fn run(nfa: &Nfa, keys: u32, stream: &[Gen]) -> Figures {
    let limits = Limits {
        max_partials: 1_000,
        allow_starts: true,
    };
    let before = LIVE.load(Ordering::Relaxed);
    let mut states: Vec<KeyState<u32>> = (0..keys).map(|_| nfa.key_state()).collect();
    let mut out = Vec::new();
    let mut f = Figures::default();
    for (i, g) in stream.iter().enumerate() {
        if g.steps == 0 {
            continue;
        }
        f.fed += 1;
        let ts = T0 + i as i64 * 1_000 / EVENTS_PER_SECOND;
        let bits = Bits {
            steps: u32::from(g.steps),
            until: 0,
        };
        nfa.advance(
            &mut states[g.key as usize],
            ts,
            i as u32,
            bits,
            &limits,
            &mut out,
        );
        for o in out.drain(..) {
            match o.kind {
                OutcomeKind::Match => f.matches += 1,
                OutcomeKind::Timeout => f.timeouts += 1,
            }
        }
    }
    f.partials = states.iter().map(|s| s.partials()).sum();
    f.bytes = LIVE.load(Ordering::Relaxed) - before;
    for st in &mut states {
        nfa.advance_time(st, i64::MAX, &mut out);
        for o in out.drain(..) {
            match o.kind {
                OutcomeKind::Match => f.matches += 1,
                OutcomeKind::Timeout => f.timeouts += 1,
            }
        }
    }
    black_box(&states);
    f
}

/// The workload, once, with its figures printed.
fn big(nfa: &Nfa) {
    if std::env::var("EDDY_BENCH_BIG").is_ok_and(|v| v == "0") {
        return;
    }
    let (keys, events) = (100_000, 10_000_000);
    let stream = workload(keys, events);
    let t = Instant::now();
    let f = run(nfa, keys, &stream);
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "funnel_100k_keys_10m_events: {events} events ({} fed) over {keys} keys in {secs:.2} s: \
         {:.0} events/s ({:.0} ns/event); {} matches, {} timeouts; {} partial matches alive \
         before the end, {:.0} heap bytes per partial match (all key state included)",
        f.fed,
        events as f64 / secs,
        secs * 1e9 / events as f64,
        f.matches,
        f.timeouts,
        f.partials,
        f.bytes as f64 / f.partials.max(1) as f64,
    );
}

fn bench(c: &mut Criterion) {
    let nfa = funnel();
    big(&nfa);
    let (keys, events) = (10_000, 1_000_000);
    let stream = workload(keys, events);
    let f = run(&nfa, keys, &stream);
    eprintln!(
        "funnel_10k_keys_1m_events: {} fed; {} matches, {} timeouts; {} partial matches alive \
         before the end, {:.0} heap bytes per partial match",
        f.fed,
        f.matches,
        f.timeouts,
        f.partials,
        f.bytes as f64 / f.partials.max(1) as f64,
    );
    let mut group = c.benchmark_group("patterns");
    group.throughput(Throughput::Elements(events as u64));
    group.bench_function("funnel_10k_keys_1m_events", |b| {
        b.iter(|| black_box(run(&nfa, keys, &stream)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    targets = bench
}
criterion_main!(benches);
