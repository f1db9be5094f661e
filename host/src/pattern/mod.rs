//! Pattern matching over event sequences with FlinkCEP's semantics, in pure
//! Rust: no I/O, no clock, no eddy event type.
//!
//! A [`PatternDef`] lists named steps with their contiguity (`next`,
//! `followedBy`, `followedByAny`, `notNext`, `notFollowedBy`), quantifiers
//! (times, ranges, one-or-more, optional, greedy, until, inner contiguity),
//! `within` (first-and-last or previous-and-current) and an after-match skip
//! strategy. [`PatternDef::compile`] checks it — refusing what Flink refuses,
//! plus unbounded loops without `within` or `until`, whose state would grow
//! without bound — and builds an [`Nfa`], shared by every key.
//!
//! The operator around it ([`operator`]) runs every configured pattern in
//! the engine: it classifies events (declared filters, or a pattern
//! plugin's one call per batch), buffers them per pattern until the
//! watermark passes them, feeds each key's matcher in timestamp order and
//! publishes matches and timeouts on `patterns/<name>`.
//!
//! The matcher is per key: the operator keeps one [`KeyState`] per key, feeds
//! it the key's events in event-time order with the [`Bits`] of conditions
//! each event satisfies ([`Nfa::advance`]), and tells it when event time
//! moves on ([`Nfa::advance_time`], due at [`Nfa::next_deadline`]). Both
//! append [`Outcome`]s: matches, and timed-out partial matches with their
//! events. Conditions are evaluated by the caller (filters, plugins), so the
//! matcher never calls out.
//!
//! ```
//! use eddy::pattern::{Bits, Contiguity, Limits, OutcomeKind, PatternDef, Skip, Step, WithinType};
//!
//! // "a" followed by "b" within 10 ms.
//! let def = PatternDef {
//!     steps: vec![Step::new("a", Contiguity::Relaxed), Step::new("b", Contiguity::Relaxed)],
//!     within: Some(10),
//!     within_type: WithinType::FirstAndLast,
//!     skip: Skip::NoSkip,
//! };
//! let nfa = def.compile().unwrap();
//! let mut key = nfa.key_state();
//! let limits = Limits { max_partials: 1000, allow_starts: true };
//! let mut out = Vec::new();
//! nfa.advance(&mut key, 1, "a1", Bits { steps: 0b01, until: 0 }, &limits, &mut out);
//! nfa.advance(&mut key, 5, "b1", Bits { steps: 0b10, until: 0 }, &limits, &mut out);
//! assert_eq!(out[0].kind, OutcomeKind::Match);
//! assert_eq!(out[0].steps, vec![(0, vec!["a1"]), (1, vec!["b1"])]);
//! ```
//!
//! # How it follows Flink
//!
//! The compiler mirrors Flink's `NFACompiler` (states with TAKE, IGNORE and
//! PROCEED edges, STOP states for negations, a PENDING state for a trailing
//! `notFollowedBy`, ignore-copies of optional states, greedy restrictions of
//! the following state, copies without transitive negations after an optional
//! step). The matcher mirrors `NFA.computeNextStates`, `advanceTime` and
//! `processMatchesAccordingToSkipStrategy`: partial matches are kept in
//! start-event order, a branch that reaches a STOP state is discarded whole,
//! the start state never IGNOREs, a match found with a skip strategy waits
//! while a partial match that started earlier is alive, and each emitted
//! match prunes partial and waiting matches by the strategy's rule. Before an
//! event is fed, time advances to its timestamp, so the `within` boundary is
//! strict: a partial match expires when `t − start ≥ within` (or
//! `t − previous ≥ within`), and its timeout is reported at the deadline.
//!
//! Instead of Flink's shared buffer with Dewey versions, a partial match's
//! path is a persistent list of (step, slot) nodes with reference counts:
//! partial matches that branch from one another share their common prefix,
//! and the events themselves are stored once per key in a slab with
//! reference counts; a slot or node is freed when nothing refers to it.
//!
//! # Memory
//!
//! On a 64-bit target (checked by a test):
//!
//! - a partial match is 32 bytes plus 16 bytes for each path node it alone
//!   adds (a (step, slot) pair and a link, shared with the partial matches
//!   it branched from or into);
//! - a match held back by a skip strategy is 32 bytes (its path is shared);
//! - a stored event costs its own size plus a 32-byte slot (timestamp,
//!   sequence number, reference count), once per key however many partial
//!   matches share it;
//! - `benches/patterns.rs` measures the whole footprint of the funnel over
//!   100,000 keys: about 200 bytes of heap per live partial match, stored
//!   events, nodes, spare capacity and key state included.
//!
//! # Cost per event
//!
//! PROCEED closures are flattened at compile time, so an event costs one
//! scan of a short list of conditions per partial match. Each state also
//! knows when an event leaves a partial match in it exactly as it is (its
//! one self-IGNORE holds and nothing else), and each key which states its
//! partial matches are in: an event that leaves all of them as they are
//! costs no pass over the partial matches at all (in the relaxed funnel,
//! most product views for a key that already waits for a purchase). An
//! event whose `Bits` are zero for a key without partial matches returns at
//! once; one that only moves a partial match on reuses that match's path
//! (no allocation beyond amortised growth); the event is stored only if
//! some partial match takes it.
//!
//! What is left is memory latency: with 100,000 keys, a fed event misses
//! the cache on its key's state, its partial matches and the path nodes it
//! extends (`benches/patterns.rs`).

mod nfa;
pub mod operator;
mod spec;
#[cfg(test)]
mod tests;

pub use nfa::{KeyState, Limits, MAX_STATES, MAX_STEPS, Nfa, Outcome, OutcomeKind, PatternError};
pub use operator::{
    Classify, Conditions, MatchView, PatternConfig, PatternOutput, PatternReport, PatternResult,
    Patterns, PatternsState, StepConditions, Verdict, channel_name,
};
pub use spec::{Bits, Contiguity, Inner, PatternDef, Quantifier, Skip, Step, WithinType};
