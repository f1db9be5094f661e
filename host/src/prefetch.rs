//! A hint to the CPU to start loading memory that will be needed shortly:
//! how a hot loop over scattered, cold memory (the live-users table, one
//! random slot per event) overlaps its cache misses instead of taking them
//! one after another.

/// Start loading the cache line at `p` into every cache level. A hint only:
/// it reads nothing and cannot fault, whatever `p` is. A no-op on targets
/// other than x86-64.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` has no architectural effect besides the cache,
    // never faults (an invalid address is ignored) and dereferences nothing
    // in Rust's sense; SSE, which it needs, is part of the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
