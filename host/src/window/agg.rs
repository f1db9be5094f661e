//! Window aggregates: parsed once from text such as
//! `"p95(properties.duration_ms) as p95_ms"`, folded event by event into an
//! [`Acc`], merged across panes and sessions, and finished into a JSON
//! object keyed by output name.
//!
//! ```
//! use eddy::event::Event;
//! use eddy::window::agg::Aggregates;
//!
//! let texts = ["count".to_string(), "sum(properties.amount) as revenue".to_string()];
//! let aggs = Aggregates::parse_all(&texts, "windows[0].aggregates").unwrap();
//! let mut acc = aggs.new_acc();
//! let ev = Event::from_json(
//!     r#"{"name":"purchase","distinct_id":"u1","timestamp":1000,"properties":{"amount":25}}"#,
//!     || "e1".into(),
//! )
//! .unwrap();
//! aggs.add(&mut acc, &ev, 0);
//! let out = aggs.finish(&acc, 60_000);
//! assert_eq!(out["count"], 1);
//! assert_eq!(out["revenue"], 25);
//! ```
//!
//! # Syntax
//!
//! `function(arguments) [as alias]`. Function names are matched without
//! regard to ASCII case. A path is anything [`FieldPath`] accepts that
//! resolves on an event: `id`, `name`, `timestamp`, `distinct_id`,
//! `session_id` or `properties.<key>`. The output name is the alias
//! (letters, digits and `_`, not starting with a digit), else the text as
//! written with all whitespace removed, e.g. `p95(properties.duration_ms)`.
//! Output names must be unique within one window; at most
//! [`MAX_AGGREGATES`] aggregates per window.
//!
//! # Functions
//!
//! "Numeric" below means an `Int` or a finite `Float` value; any other type,
//! `null` and a missing field are skipped. "Set" means present and not null.
//! Sizes are for 64-bit targets; every accumulator also pays its slot
//! ([`SLOT_BYTES`] = 56 bytes) plus 24 bytes per [`Acc`]. Aggregates of the
//! same kind on the same path share one slot (`sum` and `avg` share theirs,
//! as do all quantiles of one path), and each path is resolved once per event.
//!
//! | function | result | semantics | memory beyond the slot |
//! |---|---|---|---|
//! | `count`, `count()` | integer | events in the window | none (one counter per [`Acc`]) |
//! | `count(path)` | integer | events where `path` is set | none |
//! | `sum(path)` | integer or float | sum of numeric values; an integer when every value was an integer and the total fits `i64` (integers are summed exactly in 128 bits, so this does not depend on order), else a float (floats are summed with Neumaier compensation); `0` when empty | none |
//! | `avg(path)` | float | sum / number of numeric values; `null` when none | none |
//! | `min(path)`, `max(path)` | integer or float, as given | smallest / largest numeric value, compared by value (`1` and `1.0` tie; then the integer is the min and the float the max); `null` when none | none |
//! | `stddev(path)` | float | population standard deviation of numeric values (Welford; merged with Chan et al.'s parallel formula); `null` when none | none |
//! | `first(path)`, `last(path)` | any JSON | the value of `path` on the set event with the smallest / largest `(timestamp, arrival)`; `null` when none | strings longer than 24 bytes and nested values: their text |
//! | `rate`, `rate()` | float | events per second over the window span: `count * 1000 / span_ms`; `null` when the span is not positive | none |
//! | `ratio(field:op[:value])` | float | events matching the predicate / all events; `null` when no events. The predicate is one subscription filter condition in its query-string form, e.g. `ratio(name:equals:purchase)`, `ratio(properties.plan:not_equals:free)` | none |
//! | `distinct(path)` | integer | estimated number of distinct set values; see [Distinct](#distinct) | 0 B for ≤ 2 values, 16–512 B up to 128, then 3,084 B |
//! | `p50`, `p90`, `p95`, `p99(path)`, `quantile(path, q)` | float | the q-quantile of numeric values (0 ≤ q ≤ 1); `null` when none; see [Quantiles](#quantiles) | ~200 B, then 1 KiB per 128 buckets in use, at most 32 KiB |
//!
//! # Distinct
//!
//! [`cardinality_estimator`] with its default precision (P = 12, W = 6).
//! Up to [`DISTINCT_EXACT_MAX`] = 128 distinct values it keeps each value's
//! 31-bit encoded hash, so the count is exact unless two values' encoded
//! hashes collide (about 2⁻²⁵ per pair: below 3 in 10,000 for 128 values).
//! Beyond that it switches to HyperLogLog++ with LogLog-Beta bias
//! correction over 4,096 registers: relative standard error
//! 1.04 / √4096 ≈ [`DISTINCT_STANDARD_ERROR`] = 1.625 %, so 99.7 % of
//! estimates are within ±4.9 %. Merging is exact in the sense that the
//! merged sketch holds the same registers as one fed all the values.
//!
//! Values are hashed with their JSON type, so `"1"`, `1` and `true` are
//! three values; numbers compare by value, so `1` and `1.0` are one (as in
//! subscription filters). Nested values hash by their compact JSON text.
//! The hash is our own fixed function rather than `std`'s, whose output may
//! change between Rust releases, so that a sketch saved by one build still
//! merges correctly with values added by the next.
//!
//! # Quantiles
//!
//! [`sketches_ddsketch`] with relative accuracy [`QUANTILE_ALPHA`] = 1 %.
//! The quantile is defined as the sketch defines it: of the n numeric values
//! sorted ascending, the one at 0-based rank ⌊q·(n−1)⌋ ("lower" order
//! statistic; q = 0 and q = 1 return the exact minimum and maximum). For that
//! true value x, the result v satisfies |v − x| ≤ α·|x|, for positive and
//! negative values alike (negative values have their own store). Values with
//! |x| ≤ 10⁻⁹ ([`QUANTILE_MIN_VALUE`]) are counted as zero and returned as
//! `0`. The guarantee holds while the largest and smallest magnitudes on one
//! side of zero differ by less than a factor γ^2048 ≈ 6·10¹⁷
//! ([`QUANTILE_MAX_BINS`] buckets per sign); beyond that the sketch merges
//! its lowest buckets, over-estimating only the quantiles that fall among
//! the smallest magnitudes. Buckets are allocated 128 (1 KiB) at a time, each
//! block covering a factor of about 12.9, so e.g. latencies from 1 ms to 10
//! minutes use 6 KiB. Merging adds bucket counts, so a merged sketch answers
//! exactly as one fed every value.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::event::Event;
use crate::filter::{FieldPath, FieldRef, Filter, FilterError, Record};

mod parse;
pub(crate) mod slot;

use parse::{parse_alias, parse_call};
use slot::{Slot, SlotKind};

/// Most aggregates in one window. Every aggregate runs for every event of
/// every group, so the cost must stay bounded; 64 is several times the
/// longest hand-written dashboard window we expect (about ten).
pub const MAX_AGGREGATES: usize = 64;

/// DDSketch relative accuracy α: the common choice (Datadog's default, and
/// the crate's), 1 % being finer than any latency chart resolves.
pub const QUANTILE_ALPHA: f64 = 0.01;

/// Buckets per sign before a DDSketch merges its lowest ones: the crate's
/// default, covering a dynamic range of about 6·10¹⁷ at α = 1 %.
pub const QUANTILE_MAX_BINS: u32 = 2048;

/// Magnitudes at or below this count as zero in a DDSketch (the crate's
/// default).
pub const QUANTILE_MIN_VALUE: f64 = 1.0e-9;

/// Up to this many distinct values, `distinct` counts exactly (the
/// cardinality-estimator's array representation holds 128 hashes).
pub const DISTINCT_EXACT_MAX: usize = 128;

/// Relative standard error of `distinct` above [`DISTINCT_EXACT_MAX`]:
/// 1.04 / √(2¹²) for the HyperLogLog++ precision P = 12.
pub const DISTINCT_STANDARD_ERROR: f64 = 0.01625;

/// Bytes one slot takes inside an [`Acc`], whatever its kind.
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// The function names, in the order error messages list them.
const FUNCTION_NAMES: &str = "count, sum, avg, min, max, stddev, first, last, rate, ratio, distinct, p50, p90, p95, p99, quantile";

/// Why an aggregate's text is not valid. The message names the entry (e.g.
/// `windows[2].aggregates[1]`) and what is allowed there.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AggError {
    /// The list of aggregates is empty.
    #[error("{at}: at least one aggregate is needed, e.g. \"count\"")]
    Empty {
        /// The config key, e.g. `windows[2].aggregates`.
        at: String,
    },
    /// More than [`MAX_AGGREGATES`].
    #[error("{at}: {count} aggregates given, at most {max} allowed")]
    TooMany {
        /// The config key.
        at: String,
        /// How many were given.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// Not of the form `function(arguments) [as alias]`.
    #[error("{at}: `{text}` {reason}; expected function(arguments) [as alias]")]
    Syntax {
        /// The entry, e.g. `windows[2].aggregates[1]`.
        at: String,
        /// The text as given.
        text: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The function is not one of the known ones.
    #[error("{at}: unknown function `{name}`; expected one of {FUNCTION_NAMES}")]
    UnknownFunction {
        /// The entry.
        at: String,
        /// The function as given.
        name: String,
    },
    /// A required argument is missing.
    #[error("{at}: {function} needs {needs}")]
    MissingArgument {
        /// The entry.
        at: String,
        /// The function.
        function: &'static str,
        /// What it needs, with an example.
        needs: &'static str,
    },
    /// More arguments than the function takes.
    #[error("{at}: {function} takes {takes}; got `{args}`")]
    ExtraArgument {
        /// The entry.
        at: String,
        /// The function.
        function: &'static str,
        /// What it takes.
        takes: &'static str,
        /// The arguments as given.
        args: String,
    },
    /// A field path is malformed or does not resolve on events.
    #[error(transparent)]
    Path(FilterError),
    /// The `q` of `quantile(path, q)` is not a number from 0 to 1.
    #[error("{at}: the quantile must be a number from 0 to 1, got `{q}`")]
    Quantile {
        /// The entry.
        at: String,
        /// The q as given.
        q: String,
    },
    /// What follows the aggregate is not `as <name>` with a valid name.
    #[error(
        "{at}: `{text}` {reason}; expected `as <name>`, the name made of letters, digits and `_`, not starting with a digit"
    )]
    Alias {
        /// The entry.
        at: String,
        /// The text after the aggregate.
        text: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The predicate of `ratio(...)` is not a valid filter condition.
    #[error("{at}: invalid ratio predicate `{predicate}`: {reason}")]
    Ratio {
        /// The entry.
        at: String,
        /// The predicate as given.
        predicate: String,
        /// The filter parser's complaint.
        reason: String,
    },
    /// Two aggregates have the same output name.
    #[error(
        "{at}: output name `{name}` is already used by {first}; add `as <name>` to tell them apart"
    )]
    Duplicate {
        /// The later entry.
        at: String,
        /// The name both have.
        name: String,
        /// The earlier entry.
        first: String,
    },
}

/// What an aggregate computes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    Count,
    CountSet,
    Sum,
    Avg,
    Min,
    Max,
    Stddev,
    First,
    Last,
    Rate,
    Ratio,
    Distinct,
    Quantile(f64),
}

/// One parsed aggregate, e.g. from `"p95(properties.duration_ms) as p95_ms"`.
#[derive(Debug, Clone)]
pub struct AggSpec {
    name: String,
    func: Func,
    path: Option<FieldPath>,
    predicate: Option<Filter>,
}

impl AggSpec {
    /// Parse one aggregate; errors name it as `aggregate`.
    pub fn parse(text: &str) -> Result<AggSpec, AggError> {
        AggSpec::parse_at(text, "aggregate")
    }

    /// The key this aggregate has in results: the alias after ` as `, else
    /// the text as written with whitespace removed (e.g.
    /// `p95(properties.duration_ms)`).
    pub fn output_name(&self) -> &str {
        &self.name
    }

    /// Parse one aggregate; `at` names it in errors.
    fn parse_at(text: &str, at: &str) -> Result<AggSpec, AggError> {
        let syntax = |reason| AggError::Syntax {
            at: at.to_owned(),
            text: text.to_owned(),
            reason,
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(syntax("is empty"));
        }
        // The call ends at the last `)`; without one, at the first space.
        let split = match t.rfind(')') {
            Some(i) => i + 1,
            None => t.find(char::is_whitespace).unwrap_or(t.len()),
        };
        let (call, tail) = t.split_at(split);
        let alias = parse_alias(tail.trim(), at)?;
        let (fname, args) = match call.split_once('(') {
            Some((f, rest)) => match rest.strip_suffix(')') {
                Some(args) => (f.trim(), Some(args.trim())),
                None => return Err(syntax("has no closing `)`")),
            },
            None if call.contains(')') => return Err(syntax("has a `)` without `(`")),
            None => (call, None),
        };
        let args = args.filter(|a| !a.is_empty());
        let (func, path, predicate) = parse_call(fname, args, at)?;
        let name = match alias {
            Some(a) => a.to_owned(),
            None => call.chars().filter(|c| !c.is_whitespace()).collect(),
        };
        Ok(AggSpec {
            name,
            func,
            path,
            predicate,
        })
    }
}

/// How one output is read from an [`Acc`]; `usize` is a slot index.
#[derive(Debug, Clone, Copy)]
enum Output {
    Count,
    Rate,
    Set(usize),
    Sum(usize),
    Avg(usize),
    Min(usize),
    Max(usize),
    Stddev(usize),
    First(usize),
    Last(usize),
    Ratio(usize),
    Distinct(usize),
    Quantile(usize, f64),
}

/// A path resolved once per event, feeding these slots.
#[derive(Debug)]
struct PathSlots {
    path: FieldPath,
    slots: Vec<usize>,
}

#[derive(Debug)]
struct Plan {
    names: Vec<String>,
    outputs: Vec<Output>,
    paths: Vec<PathSlots>,
    ratios: Vec<(Filter, usize)>,
    template: Box<[Slot]>,
}

/// Assigns slots while compiling, sharing one per (path, kind).
#[derive(Default)]
struct Builder {
    paths: Vec<PathSlots>,
    ratios: Vec<(Filter, usize)>,
    template: Vec<Slot>,
    /// For each slot: its path's index (`usize::MAX` for none) and kind.
    kinds: Vec<(usize, SlotKind)>,
}

impl Builder {
    fn slot(&mut self, path: &FieldPath, kind: SlotKind) -> usize {
        let p = match self.paths.iter().position(|p| p.path == *path) {
            Some(p) => p,
            None => {
                self.paths.push(PathSlots {
                    path: path.clone(),
                    slots: Vec::new(),
                });
                self.paths.len() - 1
            }
        };
        if let Some(s) = self.kinds.iter().position(|&k| k == (p, kind)) {
            return s;
        }
        let s = self.push(p, kind);
        if let Some(ps) = self.paths.get_mut(p) {
            ps.slots.push(s);
        }
        s
    }

    fn push(&mut self, path: usize, kind: SlotKind) -> usize {
        self.kinds.push((path, kind));
        self.template.push(Slot::new(kind));
        self.template.len() - 1
    }
}

/// A window's compiled list of aggregates. Cheap to clone (an [`Arc`]
/// inside); `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Aggregates {
    plan: Arc<Plan>,
}

/// The running state of one window (or pane, or session) for one group.
/// Made by [`Aggregates::new_acc`] and only meaningful to the
/// [`Aggregates`] that made it.
///
/// It serialises exactly, in binary and text serde formats alike: a
/// restored accumulator gives bit-identical results and merges as the
/// original would (see `agg/slot/persist.rs` for how floats and sketches
/// are written). Check one read back with [`Aggregates::fits`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Acc {
    count: u64,
    slots: Box<[Slot]>,
}

impl Aggregates {
    /// Compile a window's aggregates. `at` names the config key in errors,
    /// e.g. `windows[2].aggregates`; an entry's errors then read
    /// `windows[2].aggregates[1]: unknown function ...`. Rejects an empty
    /// list, more than [`MAX_AGGREGATES`] and duplicate output names.
    pub fn parse_all(texts: &[String], at: &str) -> Result<Aggregates, AggError> {
        if texts.is_empty() {
            return Err(AggError::Empty { at: at.to_owned() });
        }
        if texts.len() > MAX_AGGREGATES {
            return Err(AggError::TooMany {
                at: at.to_owned(),
                count: texts.len(),
                max: MAX_AGGREGATES,
            });
        }
        let mut specs: Vec<AggSpec> = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let entry = format!("{at}[{i}]");
            let spec = AggSpec::parse_at(text, &entry)?;
            if let Some(j) = specs.iter().position(|s| s.name == spec.name) {
                return Err(AggError::Duplicate {
                    at: entry,
                    name: spec.name,
                    first: format!("{at}[{j}]"),
                });
            }
            specs.push(spec);
        }
        Ok(Aggregates::compile(specs))
    }

    fn compile(specs: Vec<AggSpec>) -> Aggregates {
        let mut b = Builder::default();
        let outputs = specs
            .iter()
            .map(|spec| match (&spec.path, spec.func) {
                (_, Func::Count) => Output::Count,
                (_, Func::Rate) => Output::Rate,
                (Some(path), Func::CountSet) => Output::Set(b.slot(path, SlotKind::Set)),
                (Some(path), Func::Sum) => Output::Sum(b.slot(path, SlotKind::Sum)),
                (Some(path), Func::Avg) => Output::Avg(b.slot(path, SlotKind::Sum)),
                (Some(path), Func::Min) => Output::Min(b.slot(path, SlotKind::Min)),
                (Some(path), Func::Max) => Output::Max(b.slot(path, SlotKind::Max)),
                (Some(path), Func::Stddev) => Output::Stddev(b.slot(path, SlotKind::Moments)),
                (Some(path), Func::First) => Output::First(b.slot(path, SlotKind::First)),
                (Some(path), Func::Last) => Output::Last(b.slot(path, SlotKind::Last)),
                (Some(path), Func::Distinct) => Output::Distinct(b.slot(path, SlotKind::Distinct)),
                (Some(path), Func::Quantile(q)) => {
                    Output::Quantile(b.slot(path, SlotKind::Quantiles), q)
                }
                // Ratio (the parser gives it a predicate and no path).
                _ => {
                    let s = b.push(usize::MAX, SlotKind::Matches);
                    b.ratios
                        .push((spec.predicate.clone().unwrap_or_default(), s));
                    Output::Ratio(s)
                }
            })
            .collect();
        Aggregates {
            plan: Arc::new(Plan {
                names: specs.into_iter().map(|s| s.name).collect(),
                outputs,
                paths: b.paths,
                ratios: b.ratios,
                template: b.template.into_boxed_slice(),
            }),
        }
    }

    /// The output names, in spec order.
    pub fn output_names(&self) -> impl Iterator<Item = &str> {
        self.plan.names.iter().map(String::as_str)
    }

    /// A fresh, empty accumulator. Allocates only the slot array; sketches
    /// allocate when they first see a value.
    pub fn new_acc(&self) -> Acc {
        Acc {
            count: 0,
            slots: self.plan.template.clone(),
        }
    }

    /// Fold one event in. `arrival` is a strictly increasing arrival
    /// counter, used to break event-time ties for `first` / `last`
    /// deterministically. Does not allocate except for `distinct` and the
    /// quantile sketches as they grow, and `first` / `last` values too long
    /// to keep inline.
    pub fn add(&self, acc: &mut Acc, ev: &Event, arrival: u64) {
        acc.count += 1;
        for p in &self.plan.paths {
            let v = match ev.field(&p.path) {
                None | Some(FieldRef::Null) => continue,
                Some(v) => v,
            };
            for &s in &p.slots {
                if let Some(slot) = acc.slots.get_mut(s) {
                    slot.observe(v, ev.timestamp, arrival);
                }
            }
        }
        for (filter, s) in &self.plan.ratios {
            if filter.matches(ev)
                && let Some(Slot::Matches(n)) = acc.slots.get_mut(*s)
            {
                *n += 1;
            }
        }
    }

    /// Whether `acc` has the shape of this list's accumulators: the same
    /// slots, each of the same kind. An accumulator restored from a snapshot
    /// taken with other aggregates fails this (unless only paths or
    /// predicates changed, which shape does not show).
    pub fn fits(&self, acc: &Acc) -> bool {
        acc.slots.len() == self.plan.template.len()
            && acc
                .slots
                .iter()
                .zip(self.plan.template.iter())
                .all(|(a, t)| a.kind() == t.kind())
    }

    /// `into` := `into` ⊕ `from`, both made by this [`Aggregates`]. Exact
    /// for every function (floating-point sums and moments up to rounding;
    /// sketches merge to what one sketch fed every value would hold), and
    /// associative and commutative, so panes and sessions merge without
    /// re-scanning events.
    pub fn merge(&self, into: &mut Acc, from: &Acc) {
        into.count += from.count;
        for (a, b) in into.slots.iter_mut().zip(from.slots.iter()) {
            a.merge(b);
        }
    }

    /// The results, keyed by output name, in spec order. `span_ms` is the
    /// window's length, used by `rate`.
    pub fn finish(&self, acc: &Acc, span_ms: i64) -> Map<String, Json> {
        let plan = &*self.plan;
        let mut out = Map::with_capacity(plan.names.len());
        for (name, output) in plan.names.iter().zip(&plan.outputs) {
            out.insert(name.clone(), acc.result(*output, span_ms));
        }
        out
    }

    /// The results as typed values, in spec order (see
    /// [`Aggregates::output_names`]).
    pub fn finish_values(&self, acc: &Acc, span_ms: i64) -> Box<[crate::event::Value]> {
        self.plan
            .outputs
            .iter()
            .map(|output| crate::event::Value::from(acc.result(*output, span_ms)))
            .collect()
    }

    /// Heap plus inline bytes this accumulator uses now.
    pub fn approx_bytes(&self, acc: &Acc) -> usize {
        std::mem::size_of::<Acc>()
            + acc.slots.len() * SLOT_BYTES
            + acc.slots.iter().map(Slot::heap_bytes).sum::<usize>()
    }
}

impl Acc {
    /// Events folded in (through merges too).
    pub fn count(&self) -> u64 {
        self.count
    }

    fn result(&self, output: Output, span_ms: i64) -> Json {
        let float = |x: Option<f64>| x.map_or(Json::Null, Json::from);
        let slot = |s| self.slots.get(s);
        match output {
            Output::Count => Json::from(self.count),
            Output::Rate => {
                float((span_ms > 0).then(|| self.count as f64 * 1000.0 / span_ms as f64))
            }
            Output::Set(s) => match slot(s) {
                Some(Slot::Set(n)) => Json::from(*n),
                _ => Json::Null,
            },
            Output::Sum(s) => match slot(s) {
                Some(Slot::Sum(sum)) => sum.total(),
                _ => Json::Null,
            },
            Output::Avg(s) => match slot(s) {
                Some(Slot::Sum(sum)) => float(sum.avg()),
                _ => Json::Null,
            },
            Output::Min(s) | Output::Max(s) => match slot(s) {
                Some(Slot::Min(Some(n)) | Slot::Max(Some(n))) => n.to_json(),
                _ => Json::Null,
            },
            Output::Stddev(s) => match slot(s) {
                Some(Slot::Moments(m)) => float(m.stddev()),
                _ => Json::Null,
            },
            Output::First(s) | Output::Last(s) => match slot(s) {
                Some(Slot::First(Some(st)) | Slot::Last(Some(st))) => st.to_json(),
                _ => Json::Null,
            },
            Output::Ratio(s) => match slot(s) {
                Some(Slot::Matches(m)) if self.count > 0 => {
                    Json::from(*m as f64 / self.count as f64)
                }
                _ => Json::Null,
            },
            Output::Distinct(s) => match slot(s) {
                Some(Slot::Distinct(d)) => Json::from(d.estimate()),
                _ => Json::Null,
            },
            Output::Quantile(s, q) => match slot(s) {
                Some(Slot::Quantiles(Some(sk))) => float(sk.quantile(q)),
                _ => Json::Null,
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "agg_tests.rs"]
mod tests;
