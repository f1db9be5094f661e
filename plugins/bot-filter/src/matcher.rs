//! Case-insensitive multi-pattern substring search, by hand (no regex).

/// Case-insensitive substring matching against many patterns: the user
/// agent is lowercased once into a reused buffer, then scanned once. At each
/// byte, a bit set of the patterns' first two bytes rules out almost every
/// position before any pattern is compared.
pub struct Matcher {
    /// Lowercased patterns of two bytes or more.
    patterns: Vec<Box<[u8]>>,
    /// `(second byte, index into patterns)`, by first byte.
    by_first_byte: Vec<Vec<(u8, u16)>>,
    /// Bit `a | b << 8` is set if a pattern starts with bytes `a`, `b`.
    pairs: Box<[u64; 1024]>,
    /// One-byte patterns.
    single: [bool; 256],
    has_single: bool,
    /// Reused lowercase copy of the text being matched.
    lowered: Vec<u8>,
}

impl Matcher {
    /// A matcher for `patterns` (empty ones are ignored).
    pub fn new(patterns: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut m = Matcher {
            patterns: Vec::new(),
            by_first_byte: vec![Vec::new(); 256],
            pairs: Box::new([0; 1024]),
            single: [false; 256],
            has_single: false,
            lowered: Vec::with_capacity(256),
        };
        for pattern in patterns {
            match *pattern.to_lowercase().into_bytes() {
                [] => {}
                [only] => {
                    m.single[usize::from(only)] = true;
                    m.has_single = true;
                }
                ref long @ [first, second, ..] => {
                    let index = u16::try_from(m.patterns.len())
                        .map_err(|_| "too many bot patterns (at most 65535)".to_owned())?;
                    let pair = pair(first, second);
                    m.pairs[pair / 64] |= 1 << (pair % 64);
                    m.by_first_byte[usize::from(first)].push((second, index));
                    m.patterns.push(long.into());
                }
            }
        }
        Ok(m)
    }

    /// Whether `text` contains one of the patterns, ignoring case.
    pub fn matches(&mut self, text: &str) -> bool {
        self.lowered.clear();
        if text.is_ascii() {
            self.lowered.extend_from_slice(text.as_bytes());
            self.lowered.make_ascii_lowercase();
        } else {
            let mut buf = [0u8; 4];
            for c in text.chars().flat_map(char::to_lowercase) {
                self.lowered
                    .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
        let hay = self.lowered.as_slice();
        if self.has_single && hay.iter().any(|&b| self.single[usize::from(b)]) {
            return true;
        }
        for i in 1..hay.len() {
            let (first, second) = (hay[i - 1], hay[i]);
            let pair = pair(first, second);
            if self.pairs[pair / 64] & (1 << (pair % 64)) == 0 {
                continue;
            }
            let rest = &hay[i - 1..];
            let candidates = &self.by_first_byte[usize::from(first)];
            if candidates.iter().any(|&(second_byte, p)| {
                second_byte == second && rest.starts_with(&self.patterns[usize::from(p)])
            }) {
                return true;
            }
        }
        false
    }
}

fn pair(first: u8, second: u8) -> usize {
    usize::from(first) | usize::from(second) << 8
}
