//! Pattern definitions: the FlinkCEP Pattern API as plain data.
//!
//! A [`PatternDef`] is what a configuration file or the REST API describes;
//! [`PatternDef::compile`](crate::pattern::PatternDef::compile) checks it and
//! turns it into an [`Nfa`](crate::pattern::Nfa). Conditions are not part of
//! the definition: the operator evaluates them (filters or plugins) and hands
//! the matcher one [`Bits`] per event.

use serde::{Deserialize, Serialize};

/// How a step is connected to the step before it (FlinkCEP's pattern
/// operators).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Contiguity {
    /// `next`: the step's event must directly follow the previous one.
    Strict,
    /// `followedBy`: non-matching events in between are skipped; the first
    /// matching event is taken.
    Relaxed,
    /// `followedByAny`: every later matching event starts an alternative.
    Any,
    /// `notNext`: the event directly after the previous step must not match.
    NotStrict,
    /// `notFollowedBy`: no matching event may occur before the next step
    /// (or, as the last step, within `within` of the match start).
    NotRelaxed,
}

impl Contiguity {
    /// Whether this is one of the negations (`notNext`, `notFollowedBy`).
    pub fn is_negated(self) -> bool {
        matches!(self, Contiguity::NotStrict | Contiguity::NotRelaxed)
    }
}

/// Contiguity between repetitions of one looping or repeated step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Inner {
    /// `consecutive()`: repetitions must be adjacent.
    Strict,
    /// The default: non-matching events between repetitions are skipped.
    #[default]
    Relaxed,
    /// `allowCombinations()`: any later matching event may be the next
    /// repetition, and each choice is an alternative.
    Any,
}

/// What `within` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WithinType {
    /// From the first event of a partial match to the current one.
    #[default]
    FirstAndLast,
    /// From the previous event of a partial match to the current one.
    PreviousAndCurrent,
}

/// After-match skip strategy: which partial matches a found match discards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// Every possible match is emitted.
    #[default]
    NoSkip,
    /// Discards partial matches that started with the match's first event.
    ToNext,
    /// Discards partial matches that started before the match's last event
    /// (inclusive).
    PastLastEvent,
    /// Discards partial matches that started before the first event of the
    /// named step in the match.
    ToFirst(String),
    /// Discards partial matches that started before the last event of the
    /// named step in the match.
    ToLast(String),
}

/// How often a step occurs, and how its repetitions are found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantifier {
    /// Fewest occurrences (at least 1; zero is spelt `optional`).
    pub min: u32,
    /// Most occurrences; `None` is unbounded (a loop).
    pub max: Option<u32>,
    /// The step may be skipped entirely.
    pub optional: bool,
    /// Take as many repetitions as possible.
    pub greedy: bool,
    /// Contiguity between repetitions of this step.
    pub inner: Inner,
}

impl Quantifier {
    /// A single, mandatory occurrence.
    pub fn one() -> Quantifier {
        Quantifier {
            min: 1,
            max: Some(1),
            optional: false,
            greedy: false,
            inner: Inner::Relaxed,
        }
    }

    /// `times(n)`.
    pub fn times(n: u32) -> Quantifier {
        Quantifier {
            min: n,
            max: Some(n),
            ..Quantifier::one()
        }
    }

    /// `times(min, max)`.
    pub fn range(min: u32, max: u32) -> Quantifier {
        Quantifier {
            min,
            max: Some(max),
            ..Quantifier::one()
        }
    }

    /// `oneOrMore()`.
    pub fn one_or_more() -> Quantifier {
        Quantifier {
            min: 1,
            max: None,
            ..Quantifier::one()
        }
    }

    /// `timesOrMore(n)`.
    pub fn times_or_more(n: u32) -> Quantifier {
        Quantifier {
            min: n,
            max: None,
            ..Quantifier::one()
        }
    }

    /// Whether this is a single mandatory-or-optional occurrence (no
    /// repetition at all).
    pub fn is_single(&self) -> bool {
        self.min == 1 && self.max == Some(1)
    }
}

impl Default for Quantifier {
    fn default() -> Quantifier {
        Quantifier::one()
    }
}

/// One named step of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Unique name; matches report events per step name.
    pub name: String,
    /// Contiguity to the previous step (ignored for the first step).
    pub after: Contiguity,
    /// How often the step occurs.
    pub quantifier: Quantifier,
    /// This step has an `until` (stop) condition; only for loops.
    pub until: bool,
}

impl Step {
    /// A single, mandatory step.
    pub fn new(name: &str, after: Contiguity) -> Step {
        Step {
            name: name.to_string(),
            after,
            quantifier: Quantifier::one(),
            until: false,
        }
    }
}

/// A whole pattern: a sequence of steps plus the pattern-wide options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternDef {
    /// The steps in order; at most 32.
    pub steps: Vec<Step>,
    /// Time limit in milliseconds.
    pub within: Option<i64>,
    /// What `within` measures.
    pub within_type: WithinType,
    /// After-match skip strategy.
    pub skip: Skip,
}

/// Which conditions one event satisfies: bit i of `steps` is the condition
/// of `steps[i]`; bit i of `until` is the until-condition of `steps[i]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Bits {
    /// Step conditions, one bit per step.
    pub steps: u32,
    /// Until conditions, one bit per step.
    pub until: u32,
}
