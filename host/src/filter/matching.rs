//! Predicates compiled for matching: [`Compiled`] precomputes what each
//! operator needs (compound equality text, a Knuth–Morris–Pratt table for
//! `contains`) so that [`Filter::matches`](super::Filter::matches) does not
//! allocate.

use std::io;

use serde_json::Value as Json;

use super::{FieldRef, Op, Predicate, Record};

/// A predicate with what matching needs precomputed, so matching does not
/// allocate.
#[derive(Debug, Clone)]
pub(super) struct Compiled {
    pub(super) predicate: Predicate,
    /// For equality with an object or array: its compact text, compared with
    /// event properties' nested JSON text (for `in`, one per listed value).
    compound_text: Vec<Option<String>>,
    /// For `contains`: the Knuth–Morris–Pratt failure table of the needle, to
    /// search nested JSON payload values while serializing them.
    kmp: Vec<usize>,
}

impl Compiled {
    pub(super) fn new(predicate: Predicate) -> Compiled {
        let text = |v: &Json| matches!(v, Json::Array(_) | Json::Object(_)).then(|| v.to_string());
        let compound_text = match &predicate.op {
            Op::Equals(v) | Op::NotEquals(v) => vec![text(v)],
            Op::In(items) => items.iter().map(text).collect(),
            _ => Vec::new(),
        };
        let kmp = match &predicate.op {
            Op::Contains(needle) => kmp_table(needle.as_bytes()),
            _ => Vec::new(),
        };
        Compiled {
            predicate,
            compound_text,
            kmp,
        }
    }

    pub(super) fn test(&self, r: &(impl Record + ?Sized)) -> bool {
        let field = r.field(&self.predicate.path);
        match (&self.predicate.op, field) {
            (Op::Equals(v), Some(f)) => self.equals(f, v, 0),
            (Op::Equals(_) | Op::In(_), None) => false,
            (Op::NotEquals(v), Some(f)) => !self.equals(f, v, 0),
            (Op::NotEquals(_), None) => true,
            (Op::In(items), Some(f)) => items.iter().enumerate().any(|(i, v)| self.equals(f, v, i)),
            (Op::Contains(needle), Some(f)) => match f {
                FieldRef::Str(s) | FieldRef::JsonText(s) => s.contains(needle.as_str()),
                FieldRef::Node(n) => node_contains(n, needle.as_bytes(), &self.kmp),
                _ => false,
            },
            (Op::Gt(t), Some(f)) => f.number().is_some_and(|x| x > *t),
            (Op::Gte(t), Some(f)) => f.number().is_some_and(|x| x >= *t),
            (Op::Lt(t), Some(f)) => f.number().is_some_and(|x| x < *t),
            (Op::Lte(t), Some(f)) => f.number().is_some_and(|x| x <= *t),
            (Op::Contains(_) | Op::Gt(_) | Op::Gte(_) | Op::Lt(_) | Op::Lte(_), None) => false,
            (Op::IsSet, f) => !matches!(f, None | Some(FieldRef::Null)),
            (Op::IsNotSet, f) => matches!(f, None | Some(FieldRef::Null)),
        }
    }

    /// Whether `field` equals `expected`, the `i`th value of the predicate.
    fn equals(&self, field: FieldRef<'_>, expected: &Json, i: usize) -> bool {
        match (field, expected) {
            (FieldRef::Null, Json::Null) => true,
            (FieldRef::Bool(a), Json::Bool(b)) => a == *b,
            (FieldRef::Int(a), Json::Number(n)) if n.as_i64().is_some() => n.as_i64() == Some(a),
            (FieldRef::Int(_) | FieldRef::Float(_), Json::Number(n)) => {
                field.number() == n.as_f64()
            }
            (FieldRef::Str(a), Json::String(b)) => a == b,
            (FieldRef::JsonText(t), _) => {
                self.compound_text.get(i).and_then(Option::as_deref) == Some(t)
            }
            (FieldRef::Node(n), e @ (Json::Array(_) | Json::Object(_))) => n == e,
            _ => false,
        }
    }
}

pub(super) fn kmp_table(p: &[u8]) -> Vec<usize> {
    let mut fail = vec![0; p.len()];
    let mut k = 0;
    for i in 1..p.len() {
        while k > 0 && p[i] != p[k] {
            k = fail[k - 1];
        }
        if p[i] == p[k] {
            k += 1;
        }
        fail[i] = k;
    }
    fail
}

/// Whether the compact JSON text of `node` contains `needle`, found by
/// streaming the serialization through a KMP matcher instead of building the
/// text.
pub(super) fn node_contains(node: &Json, needle: &[u8], fail: &[usize]) -> bool {
    struct Finder<'a> {
        needle: &'a [u8],
        fail: &'a [usize],
        matched: usize,
    }
    impl io::Write for Finder<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            for &b in buf {
                if self.matched == self.needle.len() {
                    break;
                }
                while self.matched > 0 && self.needle[self.matched] != b {
                    self.matched = self.fail[self.matched - 1];
                }
                if self.needle[self.matched] == b {
                    self.matched += 1;
                }
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    if needle.is_empty() {
        return true;
    }
    let mut finder = Finder {
        needle,
        fail,
        matched: 0,
    };
    // The writer never fails, and serializing a JSON value cannot either.
    let _ = serde_json::to_writer(&mut finder, node);
    finder.matched == needle.len()
}
