//! Byte-level helpers: integer prefix compares and word-at-a-time search.

/// Eight bytes of `b` from `at`, little-endian, zero-padded past the end.
#[inline]
pub(crate) fn load8(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    match b.get(at..at + 8) {
        Some(chunk) => w.copy_from_slice(chunk),
        None => {
            let rest = b.get(at..).unwrap_or(&[]);
            w[..rest.len()].copy_from_slice(rest);
        }
    }
    u64::from_le_bytes(w)
}

/// Up to eight bytes of `s` from `from`, as [`load8`] reads them.
pub(crate) const fn word(s: &[u8], from: usize) -> u64 {
    let mut w = 0u64;
    let mut i = from;
    while i < s.len() && i < from + 8 {
        w |= (s[i] as u64) << (8 * (i - from));
        i += 1;
    }
    w
}

/// The low `n` bytes of a word.
pub(crate) const fn mask(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}

/// Whether `b[at..]` starts with the literal `s` (up to 16 bytes), compared
/// as one or two integers.
macro_rules! has_prefix {
    ($b:expr, $at:expr, $s:literal) => {{
        const S: &[u8] = $s;
        const { assert!(S.len() <= 16) };
        let (b, at) = ($b, $at);
        ($crate::bytes::load8(b, at) & const { $crate::bytes::mask(S.len()) })
            == const { $crate::bytes::word(S, 0) }
            && (S.len() <= 8
                || ($crate::bytes::load8(b, at + 8)
                    & const { $crate::bytes::mask(S.len().saturating_sub(8)) })
                    == const { $crate::bytes::word(S, 8) })
    }};
}
pub(crate) use has_prefix as has;

/// Index of the first of `needles` (none of them NUL) in `hay[from..]`,
/// eight bytes at a time.
#[inline]
pub(crate) fn find<const N: usize>(hay: &[u8], needles: [u8; N], from: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while i < hay.len() {
        // Zero padding past the end never matches a non-NUL needle.
        let word = load8(hay, i);
        let mut found = 0;
        for needle in needles {
            // High bit set in the bytes of `x` that are zero; the lowest set
            // bit is always exact (borrows only propagate upwards).
            let x = word ^ (LO * u64::from(needle));
            found |= x.wrapping_sub(LO) & !x & HI;
        }
        if found != 0 {
            let at = i + (found.trailing_zeros() / 8) as usize;
            return (at < hay.len()).then_some(at);
        }
        i += 8;
    }
    None
}
