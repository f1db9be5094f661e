//! The compiler from [`PatternDef`] to [`Nfa`], and the per-key matcher.
//!
//! The compiler follows FlinkCEP's `NFACompiler`: it walks the steps from
//! the last to the first and builds states with TAKE (consume the event and
//! move on), IGNORE (skip the event) and PROCEED (move on without consuming,
//! an epsilon edge) transitions. Negations become STOP states that kill the
//! computation reaching them; a trailing `notFollowedBy` becomes a PENDING
//! state that completes when `within` runs out. PROCEED closures are
//! flattened once at compile time so that matching an event is a scan of a
//! short list of conditions.

use std::cell::Cell;
use std::mem;

use serde::{Deserialize, Serialize};

use super::spec::{Bits, Contiguity, Inner, PatternDef, Skip, Step, WithinType};

/// Most steps in one pattern: one bit each in [`Bits`].
pub const MAX_STEPS: usize = 32;

/// Most compiled states in one pattern. A `times(n)` step compiles to n
/// states (twice that with an ignore copy each), so this bounds the size of
/// repetition counts; 4,096 keeps state ids in a `u16` with room to spare.
pub const MAX_STATES: usize = 4096;

/// A pattern definition that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PatternError {
    /// The offending item, e.g. `steps[2].quantifier.max`, `skip`, `within`.
    pub key: String,
    /// What is wrong and what to do instead.
    pub message: String,
}

fn err<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T, PatternError> {
    Err(PatternError {
        key: key.into(),
        message: message.into(),
    })
}

/// A condition over one event's [`Bits`], built by the compiler.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cond {
    True,
    False,
    Step(u8),
    Until(u8),
    Not(Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
}

impl Cond {
    fn eval(&self, b: Bits) -> bool {
        match self {
            Cond::True => true,
            Cond::False => false,
            Cond::Step(i) => b.steps >> i & 1 == 1,
            Cond::Until(i) => b.until >> i & 1 == 1,
            Cond::Not(c) => !c.eval(b),
            Cond::And(x, y) => x.eval(b) && y.eval(b),
            Cond::Or(x, y) => x.eval(b) || y.eval(b),
        }
    }

    fn and(x: Cond, y: Cond) -> Cond {
        match (x, y) {
            (Cond::True, c) | (c, Cond::True) => c,
            (Cond::False, _) | (_, Cond::False) => Cond::False,
            (x, y) => Cond::And(Box::new(x), Box::new(y)),
        }
    }

    fn or(x: Cond, y: Cond) -> Cond {
        match (x, y) {
            (Cond::False, c) | (c, Cond::False) => c,
            (Cond::True, _) | (_, Cond::True) => Cond::True,
            (x, y) => Cond::Or(Box::new(x), Box::new(y)),
        }
    }

    fn not(x: Cond) -> Cond {
        match x {
            Cond::True => Cond::False,
            Cond::False => Cond::True,
            Cond::Not(c) => *c,
            c => Cond::Not(Box::new(c)),
        }
    }
}

/// One conjunction of literals over [`Bits`]: these bits set, those clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Term {
    steps_on: u32,
    steps_off: u32,
    until_on: u32,
    until_off: u32,
}

impl Term {
    #[inline]
    fn holds(&self, b: Bits) -> bool {
        (b.steps & self.steps_on) == self.steps_on
            && (b.steps & self.steps_off) == 0
            && (b.until & self.until_on) == self.until_on
            && (b.until & self.until_off) == 0
    }

    /// Both at once, unless they contradict each other.
    fn and(&self, o: &Term) -> Option<Term> {
        let t = Term {
            steps_on: self.steps_on | o.steps_on,
            steps_off: self.steps_off | o.steps_off,
            until_on: self.until_on | o.until_on,
            until_off: self.until_off | o.until_off,
        };
        (t.steps_on & t.steps_off == 0 && t.until_on & t.until_off == 0).then_some(t)
    }
}

/// Most terms a condition keeps in disjunctive normal form; past it, the
/// tree is evaluated as it is. The conditions the compiler builds have a
/// handful (a TAKE or IGNORE literal, and-ed with negated greedy or until
/// conditions), so this only guards against blow-up.
const MAX_TERMS: usize = 16;

/// A [`Cond`] ready to evaluate: in disjunctive normal form as bit masks
/// (a few AND-and-compare per term, no pointers to chase), or the tree
/// when its normal form would be too large.
#[derive(Debug, Clone)]
enum Test {
    /// Never holds.
    Never,
    /// One term (the usual case).
    One(Term),
    /// Any of these terms.
    Any(Box<[Term]>),
    /// Evaluated as a tree.
    Tree(Cond),
}

impl Test {
    fn new(c: &Cond) -> Test {
        match dnf(c, false) {
            Some(terms) => match terms.as_slice() {
                [] => Test::Never,
                [t] => Test::One(*t),
                _ => Test::Any(terms.into_boxed_slice()),
            },
            None => Test::Tree(c.clone()),
        }
    }

    // Called per edge per partial match per event: a profile showed it
    // not inlined.
    #[inline]
    fn holds(&self, b: Bits) -> bool {
        match self {
            Test::Never => false,
            Test::One(t) => t.holds(b),
            Test::Any(ts) => ts.iter().any(|t| t.holds(b)),
            Test::Tree(c) => c.eval(b),
        }
    }
}

/// `c` (or its negation) as a disjunction of terms; None past
/// [`MAX_TERMS`].
fn dnf(c: &Cond, neg: bool) -> Option<Vec<Term>> {
    let lit = |on: bool, steps: u32, until: u32| {
        let mut t = Term::default();
        if on {
            t.steps_on = steps;
            t.until_on = until;
        } else {
            t.steps_off = steps;
            t.until_off = until;
        }
        vec![t]
    };
    let union = |mut x: Vec<Term>, y: Vec<Term>| {
        x.extend(y);
        (x.len() <= MAX_TERMS).then_some(x)
    };
    let product = |x: Vec<Term>, y: Vec<Term>| {
        let mut out = Vec::new();
        for a in &x {
            for b in &y {
                if let Some(t) = a.and(b) {
                    out.push(t);
                }
            }
        }
        (out.len() <= MAX_TERMS).then_some(out)
    };
    Some(match c {
        Cond::True if neg => Vec::new(),
        Cond::True => vec![Term::default()],
        Cond::False if neg => vec![Term::default()],
        Cond::False => Vec::new(),
        Cond::Step(i) => lit(!neg, 1u32.checked_shl(u32::from(*i))?, 0),
        Cond::Until(i) => lit(!neg, 0, 1u32.checked_shl(u32::from(*i))?),
        Cond::Not(x) => dnf(x, !neg)?,
        // ¬(x ∧ y) = ¬x ∨ ¬y, ¬(x ∨ y) = ¬x ∧ ¬y.
        Cond::And(x, y) if neg => union(dnf(x, true)?, dnf(y, true)?)?,
        Cond::And(x, y) => product(dnf(x, false)?, dnf(y, false)?)?,
        Cond::Or(x, y) if neg => product(dnf(x, true)?, dnf(y, true)?)?,
        Cond::Or(x, y) => union(dnf(x, false)?, dnf(y, false)?)?,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Normal,
    Final,
    Stop,
    Pending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Take,
    Ignore,
    Proceed,
}

#[derive(Debug, Clone)]
struct Edge {
    action: Action,
    target: u16,
    cond: Cond,
}

/// A state while compiling: Flink's `State` with its transitions.
#[derive(Debug, Clone)]
struct CState {
    kind: Kind,
    step: u8,
    edges: Vec<Edge>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlatAction {
    Take,
    Ignore,
    Stop,
}

/// One TAKE or IGNORE edge reachable from a state through PROCEED edges,
/// with the conjunction of every condition on the way; or a STOP state so
/// reached.
#[derive(Debug, Clone)]
struct Flat {
    action: FlatAction,
    cond: Test,
    target: u16,
    /// For TAKE: the step the event is recorded under (the edge's source).
    step: u8,
}

#[derive(Debug, Clone)]
struct RState {
    kind: Kind,
    step: u8,
    /// Position among the states of its step, in creation order (for
    /// migration).
    ordinal: u16,
    flat: Vec<Flat>,
    /// When an event was just taken into this state: can it PROCEED to the
    /// final state on the same event (Flink's `findFinalStateAfterProceed`)?
    to_final: Test,
    /// Some flattened edge is a STOP: only then is a first pass needed.
    has_stop: bool,
    /// When a partial match in this state only stays where it is: exactly
    /// one flattened edge holds, and it is an IGNORE back to this state.
    /// Such a partial match is left in place, untouched (a relaxed funnel's
    /// partial matches wait like this for most events).
    stay: Test,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SkipRule {
    NoSkip,
    ToNext,
    PastLast,
    ToFirst(u8),
    ToLast(u8),
}

/// A compiled pattern: immutable, shared by every key.
#[derive(Debug, Clone)]
pub struct Nfa {
    states: Vec<RState>,
    start: u16,
    within: Option<i64>,
    within_type: WithinType,
    skip: SkipRule,
    steps: Vec<Step>,
    /// Per step: how many states it compiled to (for migration).
    group_sizes: Vec<u16>,
}

/// Caps consulted by [`Nfa::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most partial matches one key may hold before new starts are refused.
    pub max_partials: usize,
    /// False when the pattern-wide cap is reached: no key may start.
    pub allow_starts: bool,
}

/// Whether an [`Outcome`] is a match or a timed-out partial match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// A complete match (including a trailing absence that held).
    Match,
    /// A partial match that ran out of time.
    Timeout,
}

/// A match or a timeout with its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome<E> {
    /// Match or timeout.
    pub kind: OutcomeKind,
    /// Timestamp of the first event.
    pub start: i64,
    /// The last event's timestamp for a match; the deadline (start + within,
    /// or previous + within) for a timeout and for a trailing-absence match.
    pub end: i64,
    /// (step index, events) in step order, only steps with events.
    pub steps: Vec<(usize, Vec<E>)>,
}

/// No node: the empty path.
const NIL: u32 = u32::MAX;

/// One event taken by a partial match, linked to the event the match took
/// before it. Paths are persistent lists that share their prefixes (Flink's
/// shared buffer, with reference counts instead of Dewey versions): a
/// partial match that branches hands its successors one index each instead
/// of a copy of its events.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The event, in the key's slab.
    slot: u32,
    /// The node before this one, or [`NIL`].
    parent: u32,
    /// Partial matches, held matches and child nodes pointing here.
    refs: u32,
    /// The step the event was taken for.
    step: u8,
}

/// A computation state (Flink's `ComputationState`) that holds events.
#[derive(Debug, Clone, Copy)]
struct Partial {
    /// Arrival number of the first event: orders partial matches (Flink
    /// orders by the start event's id) and drives the skip strategies.
    start_seq: u64,
    start_ts: i64,
    prev_ts: i64,
    /// The last event taken (the path, read backwards), or [`NIL`].
    tail: u32,
    state: u16,
}

/// A completed match held back by a skip strategy until no partial match
/// that started earlier remains (Flink's `completedMatches`).
#[derive(Debug, Clone)]
struct Done {
    start_seq: u64,
    start_ts: i64,
    end: i64,
    tail: u32,
}

/// One stored event and how many path nodes refer to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slot<E> {
    event: Option<E>,
    ts: i64,
    seq: u64,
    refs: u32,
}

thread_local! {
    /// Buffers reused by every key on this thread (successors being built,
    /// matches found, paths to release): per thread rather than per key, so
    /// that a key holds only its own partial matches and these stay in
    /// cache. Taken for the length of one call and put back.
    static NEXT: Cell<Vec<Partial>> = const { Cell::new(Vec::new()) };
    static POTENTIAL: Cell<Vec<Done>> = const { Cell::new(Vec::new()) };
    static TAILS: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
}

/// One key's matcher state: its partial matches, matches held back by a
/// skip strategy, the nodes of their paths and the events those refer to,
/// each stored once.
///
/// Saved in the layout it had when every partial match held its own copy
/// of its path (see [`Saved`]), so snapshots stay readable across the
/// change in both directions.
#[derive(Debug, Clone)]
pub struct KeyState<E> {
    partials: Vec<Partial>,
    completed: Vec<Done>,
    slots: Vec<Slot<E>>,
    free: Vec<u32>,
    nodes: Vec<Node>,
    free_nodes: Vec<u32>,
    seq: u64,
    /// The earliest deadline among `partials` (`Some(None)`: none), kept
    /// up to date by every call that changes them, so that an event that
    /// expires nothing costs no scan of the partial matches; `None`
    /// (unknown, computed on demand) after a restore.
    earliest: Option<Option<i64>>,
    /// Bit s set: a partial match may be in state s (a superset; all bits
    /// after a restore). Only used when the pattern has at most 64 states:
    /// an event that leaves every state here as it is needs no pass over
    /// the partial matches.
    present: u64,
}

impl<E> Default for KeyState<E> {
    fn default() -> KeyState<E> {
        KeyState {
            partials: Vec::new(),
            completed: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            nodes: Vec::new(),
            free_nodes: Vec::new(),
            seq: 0,
            earliest: Some(None),
            present: 0,
        }
    }
}

/// The nodes of one path, from its last event back to its first.
struct Walk<'a> {
    nodes: &'a [Node],
    at: u32,
}

impl<'a> Iterator for Walk<'a> {
    type Item = &'a Node;

    fn next(&mut self) -> Option<&'a Node> {
        let n = self.nodes.get(self.at as usize)?;
        self.at = n.parent;
        Some(n)
    }
}

impl<E> KeyState<E> {
    /// Partial matches held (the implicit start state not counted).
    pub fn partials(&self) -> usize {
        self.partials.len()
    }

    /// Nothing buffered or pending: the operator may drop the key.
    pub fn is_empty(&self) -> bool {
        self.partials.is_empty() && self.completed.is_empty()
    }

    /// Events stored for this key (each once, however many partial matches
    /// refer to it).
    pub fn stored_events(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn store(&mut self, ts: i64, seq: u64, event: E) -> u32 {
        let slot = Slot {
            event: Some(event),
            ts,
            seq,
            refs: 0,
        };
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// A path extended by one event; the new node holds a reference to
    /// `parent`, which the caller accounts for.
    fn link(&mut self, parent: u32, step: u8, slot: u32) -> u32 {
        self.slots[slot as usize].refs += 1;
        let node = Node {
            slot,
            parent,
            refs: 1,
            step,
        };
        match self.free_nodes.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    /// One more holder of the path ending at `tail`.
    fn share(&mut self, tail: u32) -> u32 {
        self.add_refs(tail, 1);
        tail
    }

    /// `k` more holders of the path ending at `tail`.
    fn add_refs(&mut self, tail: u32, k: u32) {
        if let Some(n) = self.nodes.get_mut(tail as usize) {
            n.refs += k;
        }
    }

    /// One holder fewer: frees the nodes (and events) no one else holds.
    fn release(&mut self, mut tail: u32) {
        while let Some(n) = self.nodes.get_mut(tail as usize) {
            n.refs = n.refs.saturating_sub(1);
            if n.refs > 0 {
                return;
            }
            let (slot, parent) = (n.slot, n.parent);
            self.free_nodes.push(tail);
            let s = &mut self.slots[slot as usize];
            s.refs = s.refs.saturating_sub(1);
            if s.refs == 0 {
                s.event = None;
                self.free.push(slot);
            }
            tail = parent;
        }
    }

    fn walk(&self, tail: u32) -> Walk<'_> {
        Walk {
            nodes: &self.nodes,
            at: tail,
        }
    }

    fn seq_of(&self, n: &Node) -> u64 {
        self.slots[n.slot as usize].seq
    }

    /// The path's (step, slot) pairs, first event first.
    fn entries(&self, tail: u32) -> Vec<Entry> {
        let mut path: Vec<Entry> = self
            .walk(tail)
            .map(|n| Entry {
                step: n.step,
                slot: n.slot,
            })
            .collect();
        path.reverse();
        path
    }

    fn materialize(&self, tail: u32) -> Vec<(usize, Vec<E>)>
    where
        E: Clone,
    {
        // Walked backwards (last event first), grouped by step, then both
        // levels reversed: no intermediate list of the path.
        let mut steps: Vec<(usize, Vec<E>)> = Vec::new();
        for n in self.walk(tail) {
            let Some(ev) = self.slots[n.slot as usize].event.clone() else {
                continue;
            };
            match steps.last_mut() {
                Some((s, v)) if *s == n.step as usize => v.push(ev),
                _ => steps.push((n.step as usize, vec![ev])),
            }
        }
        steps.reverse();
        for (_, v) in &mut steps {
            v.reverse();
        }
        steps
    }

    /// The states the partial matches are in, as a [`KeyState::present`]
    /// mask.
    fn states_mask(&self) -> u64 {
        self.partials.iter().fold(0, |m, p| {
            m | 1u64.checked_shl(u32::from(p.state)).unwrap_or(0)
        })
    }

    /// With nothing left, give back the slabs (a key that matched a burst
    /// long ago should not keep its high-water mark).
    fn compact(&mut self) {
        if self.is_empty() && !(self.slots.is_empty() && self.nodes.is_empty()) {
            self.slots = Vec::new();
            self.free = Vec::new();
            self.nodes = Vec::new();
            self.free_nodes = Vec::new();
        }
    }
}

/// One event of a saved path: the step it was taken for and its slot in
/// the key's event slab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    step: u8,
    slot: u32,
}

/// A partial match as saved, with its own copy of its path.
#[derive(Serialize, Deserialize)]
struct SavedPartial {
    state: u16,
    start_ts: i64,
    prev_ts: i64,
    start_seq: u64,
    path: Vec<Entry>,
}

/// A held match as saved.
#[derive(Serialize, Deserialize)]
struct SavedDone {
    start_seq: u64,
    start_ts: i64,
    end: i64,
    path: Vec<Entry>,
}

/// A stored event as saved; `refs` counts the saved paths that hold it.
#[derive(Serialize)]
struct SavedSlot<'a, E> {
    event: Option<&'a E>,
    ts: i64,
    seq: u64,
    refs: u32,
}

/// A [`KeyState`] as saved (the field order is the format).
#[derive(Serialize)]
struct SavedRef<'a, E> {
    partials: Vec<SavedPartial>,
    completed: Vec<SavedDone>,
    slots: Vec<SavedSlot<'a, E>>,
    free: &'a [u32],
    seq: u64,
}

/// A [`KeyState`] as read back.
#[derive(Deserialize)]
#[serde(bound(deserialize = "E: Deserialize<'de>"))]
struct Saved<E> {
    partials: Vec<SavedPartial>,
    completed: Vec<SavedDone>,
    slots: Vec<Slot<E>>,
    free: Vec<u32>,
    seq: u64,
}

impl<E: Serialize> Serialize for KeyState<E> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut refs = vec![0u32; self.slots.len()];
        let mut path = |tail: u32| -> Vec<Entry> {
            let p = self.entries(tail);
            for e in &p {
                if let Some(r) = refs.get_mut(e.slot as usize) {
                    *r += 1;
                }
            }
            p
        };
        let partials = self
            .partials
            .iter()
            .map(|p| SavedPartial {
                state: p.state,
                start_ts: p.start_ts,
                prev_ts: p.prev_ts,
                start_seq: p.start_seq,
                path: path(p.tail),
            })
            .collect();
        let completed = self
            .completed
            .iter()
            .map(|c| SavedDone {
                start_seq: c.start_seq,
                start_ts: c.start_ts,
                end: c.end,
                path: path(c.tail),
            })
            .collect();
        let slots = self
            .slots
            .iter()
            .zip(refs)
            .map(|(x, refs)| SavedSlot {
                event: x.event.as_ref(),
                ts: x.ts,
                seq: x.seq,
                refs,
            })
            .collect();
        SavedRef {
            partials,
            completed,
            slots,
            free: &self.free,
            seq: self.seq,
        }
        .serialize(s)
    }
}

impl<'de, E: Deserialize<'de>> Deserialize<'de> for KeyState<E> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KeyState<E>, D::Error> {
        let saved = Saved::<E>::deserialize(d)?;
        let mut st = KeyState {
            slots: saved.slots,
            free: saved.free,
            seq: saved.seq,
            earliest: None,
            present: u64::MAX,
            ..KeyState::default()
        };
        for s in &mut st.slots {
            s.refs = 0;
        }
        // Each saved path becomes a chain of its own: prefixes shared
        // before saving are no longer shared, which costs memory only.
        let chain = |st: &mut KeyState<E>, path: &[Entry]| -> Result<u32, D::Error> {
            let mut tail = NIL;
            for e in path {
                if st
                    .slots
                    .get(e.slot as usize)
                    .is_none_or(|s| s.event.is_none())
                {
                    return Err(serde::de::Error::custom(
                        "a saved partial match refers to an event that is not stored",
                    ));
                }
                tail = st.link(tail, e.step, e.slot);
            }
            Ok(tail)
        };
        for p in saved.partials {
            let tail = chain(&mut st, &p.path)?;
            st.partials.push(Partial {
                start_seq: p.start_seq,
                start_ts: p.start_ts,
                prev_ts: p.prev_ts,
                tail,
                state: p.state,
            });
        }
        for c in saved.completed {
            let tail = chain(&mut st, &c.path)?;
            st.completed.push(Done {
                start_seq: c.start_seq,
                start_ts: c.start_ts,
                end: c.end,
                tail,
            });
        }
        Ok(st)
    }
}

// ---------------------------------------------------------------- compiler

struct Compiler<'a> {
    def: &'a PatternDef,
    states: Vec<CState>,
    stops: Vec<Option<u16>>,
    /// Greedy with until: a state and its copy made before the greedy
    /// conditions were added (Flink's `originalStateMap`).
    originals: Vec<(u16, u16)>,
}

impl Compiler<'_> {
    fn n(&self) -> usize {
        self.def.steps.len()
    }

    fn step(&self, i: usize) -> &Step {
        &self.def.steps[i]
    }

    fn new_state(&mut self, kind: Kind, step: usize) -> Result<u16, PatternError> {
        if self.states.len() >= MAX_STATES {
            return err(
                format!("steps[{step}].quantifier"),
                format!(
                    "the pattern compiles to more than {MAX_STATES} states; use smaller repetition counts"
                ),
            );
        }
        self.states.push(CState {
            kind,
            step: step as u8,
            edges: Vec::new(),
        });
        Ok((self.states.len() - 1) as u16)
    }

    fn edge(&mut self, from: u16, action: Action, target: u16, cond: Cond) {
        self.states[from as usize].edges.push(Edge {
            action,
            target,
            cond,
        });
    }

    /// The TAKE condition of a step, with its until-condition folded in.
    fn take_cond(&self, i: usize) -> Cond {
        let c = Cond::Step(i as u8);
        if self.step(i).until {
            Cond::and(Cond::not(Cond::Until(i as u8)), c)
        } else {
            c
        }
    }

    fn ignore_for(i: usize, strategy: Inner) -> Option<Cond> {
        match strategy {
            Inner::Strict => None,
            Inner::Relaxed => Some(Cond::not(Cond::Step(i as u8))),
            Inner::Any => Some(Cond::True),
        }
    }

    /// IGNORE condition of a step's first state, from its contiguity to the
    /// previous step (`begin` is relaxed in Flink; unused from the start).
    fn outer_ignore(&self, i: usize) -> Option<Cond> {
        let strategy = if i == 0 {
            Inner::Relaxed
        } else {
            match self.step(i).after {
                Contiguity::Strict => Inner::Strict,
                Contiguity::Any => Inner::Any,
                _ => Inner::Relaxed,
            }
        };
        Self::ignore_for(i, strategy)
    }

    /// IGNORE condition between repetitions, with the until-condition.
    fn inner_ignore(&self, i: usize) -> Option<Cond> {
        let c = Self::ignore_for(i, self.step(i).quantifier.inner)?;
        Some(if self.step(i).until {
            Cond::and(Cond::not(Cond::Until(i as u8)), c)
        } else {
            c
        })
    }

    /// Flink's `getCurrentNotCondition`: the `notFollowedBy` steps before
    /// step i, looking back through optional steps.
    fn current_nots(&self, i: usize) -> Vec<usize> {
        let mut nots = Vec::new();
        let mut j = i;
        while j > 0 {
            let prev = self.step(j - 1);
            if !(prev.quantifier.optional || prev.after == Contiguity::NotRelaxed) {
                break;
            }
            j -= 1;
            if prev.after == Contiguity::NotRelaxed {
                nots.push(j);
            }
        }
        nots
    }

    fn stop(&mut self, j: usize) -> Result<u16, PatternError> {
        if let Some(s) = self.stops[j] {
            return Ok(s);
        }
        let s = self.new_state(Kind::Stop, j)?;
        self.stops[j] = Some(s);
        Ok(s)
    }

    fn add_stop_states(&mut self, i: usize, state: u16) -> Result<(), PatternError> {
        for j in self.current_nots(i) {
            let stop = self.stop(j)?;
            self.edge(state, Action::Proceed, stop, Cond::Step(j as u8));
        }
        Ok(())
    }

    fn add_stop_to_looping(&mut self, i: usize, state: u16) -> Result<(), PatternError> {
        if i + 1 < self.n() && self.step(i + 1).after == Contiguity::NotRelaxed {
            let stop = self.stop(i + 1)?;
            self.edge(state, Action::Proceed, stop, Cond::Step((i + 1) as u8));
        }
        Ok(())
    }

    /// Flink's `copyWithoutTransitiveNots`: taking an event in an optional
    /// step voids the `notFollowedBy`s before it, so its TAKE leads to a
    /// copy of the sink without their STOP edges.
    fn copy_without_nots(&mut self, i: usize, sink: u16) -> Result<u16, PatternError> {
        let nots = self.current_nots(i);
        if nots.is_empty() || !self.step(i).quantifier.optional {
            return Ok(sink);
        }
        let (kind, step) = (
            self.states[sink as usize].kind,
            self.states[sink as usize].step,
        );
        let copy = self.new_state(kind, step as usize)?;
        let edges = self.states[sink as usize].edges.clone();
        for e in edges {
            if e.action == Action::Proceed {
                let t = &self.states[e.target as usize];
                let target = if t.kind == Kind::Stop {
                    if nots.contains(&(t.step as usize)) {
                        continue;
                    }
                    e.target
                } else {
                    self.copy_without_nots(i, e.target)?
                };
                self.edge(copy, e.action, target, e.cond);
            } else {
                let target = if e.target == sink { copy } else { e.target };
                self.edge(copy, e.action, target, e.cond);
            }
        }
        Ok(copy)
    }

    /// Flink's `copy`: the same transitions, self-loops pointing at the copy.
    fn copy(&mut self, state: u16) -> Result<u16, PatternError> {
        let (kind, step) = (
            self.states[state as usize].kind,
            self.states[state as usize].step,
        );
        let copy = self.new_state(kind, step as usize)?;
        let edges = self.states[state as usize].edges.clone();
        for e in edges {
            let target = if e.target == state { copy } else { e.target };
            self.edge(copy, e.action, target, e.cond);
        }
        Ok(copy)
    }

    /// Greedy: the states after a greedy step may not use an event the
    /// step itself could take.
    fn update_greedy(&mut self, state: u16, take: &Cond) {
        for e in &mut self.states[state as usize].edges {
            e.cond = Cond::and(
                mem::replace(&mut e.cond, Cond::True),
                Cond::not(take.clone()),
            );
        }
    }

    fn singleton(
        &mut self,
        i: usize,
        sink: u16,
        proceed: Option<u16>,
        take: Cond,
        ignore: Option<Cond>,
        optional: bool,
    ) -> Result<u16, PatternError> {
        let s = self.new_state(Kind::Normal, i)?;
        let sink = self.copy_without_nots(i, sink)?;
        self.edge(s, Action::Take, sink, take.clone());
        if let (true, Some(p)) = (optional, proceed) {
            let step = self.step(i);
            if step.quantifier.greedy && step.until {
                // Once the until-condition holds the greedy restriction is
                // over: proceed to the unrestricted copy of the next state.
                let original = self
                    .originals
                    .iter()
                    .find(|(o, _)| *o == p)
                    .map_or(p, |(_, c)| *c);
                self.edge(s, Action::Proceed, original, Cond::Until(i as u8));
                self.edge(s, Action::Proceed, p, Cond::not(Cond::Until(i as u8)));
            } else {
                self.edge(s, Action::Proceed, p, Cond::True);
            }
        }
        if let Some(ign) = ignore {
            let target = if optional {
                // After skipping an event an optional state may no longer
                // PROCEED: that branch was already taken on the first event.
                let x = self.new_state(Kind::Normal, i)?;
                self.edge(x, Action::Take, sink, take);
                self.edge(x, Action::Ignore, x, ign.clone());
                self.add_stop_states(i, x)?;
                x
            } else {
                s
            };
            self.edge(s, Action::Ignore, target, ign);
        }
        Ok(s)
    }

    fn times(
        &mut self,
        i: usize,
        sink: u16,
        proceed: u16,
        from: u32,
        to: u32,
    ) -> Result<u16, PatternError> {
        let take = self.take_cond(i);
        let inner = self.inner_ignore(i);
        if self.step(i).quantifier.greedy && from != to {
            self.update_greedy(sink, &take);
        }
        let mut last = sink;
        for _ in from..to {
            last = self.singleton(i, last, Some(proceed), take.clone(), inner.clone(), true)?;
            self.add_stop_to_looping(i, last)?;
        }
        for _ in 1..from {
            last = self.singleton(i, last, None, take.clone(), inner.clone(), false)?;
            self.add_stop_to_looping(i, last)?;
        }
        let outer = self.outer_ignore(i);
        let optional = self.step(i).quantifier.optional;
        self.singleton(i, last, Some(proceed), take, outer, optional)
    }

    fn looping(&mut self, i: usize, sink: u16) -> Result<u16, PatternError> {
        let take = self.take_cond(i);
        let ignore = self.inner_ignore(i);
        let l = self.new_state(Kind::Normal, i)?;
        if self.step(i).quantifier.greedy {
            if self.step(i).until {
                let copy = self.copy(sink)?;
                self.edge(l, Action::Proceed, copy, Cond::Until(i as u8));
                self.originals.push((sink, copy));
                self.edge(l, Action::Proceed, sink, Cond::not(Cond::Until(i as u8)));
            } else {
                self.edge(l, Action::Proceed, sink, Cond::True);
            }
            // Flink restricts the next state by the plain condition here,
            // without the until-condition.
            self.update_greedy(sink, &Cond::Step(i as u8));
        } else {
            self.edge(l, Action::Proceed, sink, Cond::True);
        }
        self.edge(l, Action::Take, l, take.clone());
        self.add_stop_to_looping(i, l)?;
        if let Some(ign) = ignore {
            let x = self.new_state(Kind::Normal, i)?;
            self.edge(x, Action::Take, l, take);
            self.edge(x, Action::Ignore, x, ign.clone());
            self.edge(l, Action::Ignore, x, ign);
            self.add_stop_to_looping(i, x)?;
        }
        Ok(l)
    }

    fn convert(&mut self, i: usize, sink: u16) -> Result<u16, PatternError> {
        let q = self.step(i).quantifier.clone();
        let first = match q.max {
            None => {
                let s = self.copy_without_nots(i, sink)?;
                let l = self.looping(i, s)?;
                self.times(i, l, sink, q.min, q.min)?
            }
            Some(max) => self.times(i, sink, sink, q.min, max)?,
        };
        self.add_stop_states(i, first)?;
        Ok(first)
    }

    fn build(&mut self) -> Result<u16, PatternError> {
        let n = self.n();
        let mut sink = self.new_state(Kind::Final, 0)?;
        for i in (1..n).rev() {
            match self.step(i).after {
                Contiguity::NotRelaxed => {
                    // In the middle a notFollowedBy is only STOP edges on its
                    // neighbours; at the end it waits for `within`.
                    if i == n - 1 {
                        let p = self.new_state(Kind::Pending, i)?;
                        let stop = self.stop(i)?;
                        self.edge(p, Action::Proceed, stop, Cond::Step(i as u8));
                        self.edge(p, Action::Ignore, p, Cond::not(Cond::Step(i as u8)));
                        sink = p;
                    }
                }
                Contiguity::NotStrict => {
                    let s = self.new_state(Kind::Normal, i)?;
                    let stop = self.stop(i)?;
                    let not = Cond::not(Cond::Step(i as u8));
                    if self.states[sink as usize].kind == Kind::Final {
                        self.edge(s, Action::Ignore, sink, not);
                    } else {
                        self.edge(s, Action::Proceed, sink, not);
                    }
                    self.edge(s, Action::Proceed, stop, Cond::Step(i as u8));
                    sink = s;
                }
                _ => sink = self.convert(i, sink)?,
            }
        }
        self.convert(0, sink)
    }
}

fn validate(def: &PatternDef) -> Result<(), PatternError> {
    let n = def.steps.len();
    if n == 0 {
        return err("steps", "a pattern needs at least one step");
    }
    if n > MAX_STEPS {
        return err(
            "steps",
            format!("{n} steps; at most {MAX_STEPS} are supported"),
        );
    }
    if def.within.is_some_and(|w| w <= 0) {
        return err("within", "must be a positive number of milliseconds");
    }
    for (i, s) in def.steps.iter().enumerate() {
        let key = |k: &str| format!("steps[{i}].{k}");
        if def.steps[..i].iter().any(|p| p.name == s.name) {
            return err(key("name"), format!("duplicate step name {:?}", s.name));
        }
        let q = &s.quantifier;
        if s.after.is_negated() {
            if i == 0 {
                return err(
                    key("after"),
                    "a pattern cannot start with a negation (notNext / notFollowedBy)",
                );
            }
            if !q.is_single() || q.optional || q.greedy || s.until {
                return err(
                    key("quantifier"),
                    "a negated step takes no quantifier, optional, greedy or until",
                );
            }
            if i == n - 1 && s.after == Contiguity::NotStrict {
                return err(
                    key("after"),
                    "notNext cannot end a pattern; use notFollowedBy with within",
                );
            }
            if i == n - 1 && s.after == Contiguity::NotRelaxed && def.within.is_none() {
                return err("within", "a pattern ending in notFollowedBy needs within");
            }
            continue;
        }
        if q.min == 0 {
            return err(
                key("quantifier.min"),
                "must be at least 1; use optional for zero occurrences",
            );
        }
        if let Some(max) = q.max {
            if max < q.min {
                return err(
                    key("quantifier.max"),
                    format!("{max} is less than min {}", q.min),
                );
            }
        } else if def.within.is_none() && !s.until {
            return err(
                key("quantifier.max"),
                "an unbounded loop needs within or until, or its state grows without bound",
            );
        }
        if q.greedy && q.is_single() {
            return err(
                key("quantifier.greedy"),
                "greedy applies only to a repeated or looping step",
            );
        }
        if s.until && q.max.is_some() {
            return err(
                key("until"),
                "until applies only to a looping step (one_or_more / times_or_more)",
            );
        }
    }
    Ok(())
}

impl PatternDef {
    /// Checks the definition and compiles it (Flink's `NFACompiler`).
    pub fn compile(&self) -> Result<Nfa, PatternError> {
        validate(self)?;
        let find = |name: &str| -> Result<u8, PatternError> {
            match self.steps.iter().position(|s| s.name == name) {
                Some(i) => Ok(i as u8),
                None => err("skip", format!("no step named {name:?}")),
            }
        };
        let skip = match &self.skip {
            Skip::NoSkip => SkipRule::NoSkip,
            Skip::ToNext => SkipRule::ToNext,
            Skip::PastLastEvent => SkipRule::PastLast,
            Skip::ToFirst(name) => SkipRule::ToFirst(find(name)?),
            Skip::ToLast(name) => SkipRule::ToLast(find(name)?),
        };
        let mut c = Compiler {
            def: self,
            states: Vec::new(),
            stops: vec![None; self.steps.len()],
            originals: Vec::new(),
        };
        let start = c.build()?;
        let states = c.states;

        let mut group_sizes = vec![0u16; self.steps.len()];
        let mut ordinals = Vec::with_capacity(states.len());
        for s in &states {
            if s.kind == Kind::Final {
                ordinals.push(0);
                continue;
            }
            let g = &mut group_sizes[s.step as usize];
            ordinals.push(*g);
            *g += 1;
        }
        let rstates = (0..states.len())
            .map(|s| {
                let (flat, conds): (Vec<Flat>, Vec<Cond>) =
                    flatten(&states, s as u16).into_iter().unzip();
                RState {
                    kind: states[s].kind,
                    step: states[s].step,
                    ordinal: ordinals[s],
                    has_stop: flat.iter().any(|f| f.action == FlatAction::Stop),
                    stay: Test::new(&stay_cond(&flat, &conds, s as u16)),
                    flat,
                    to_final: Test::new(&to_final(&states, s as u16)),
                }
            })
            .collect();
        Ok(Nfa {
            states: rstates,
            start,
            within: self.within,
            within_type: self.within_type,
            skip,
            steps: self.steps.clone(),
            group_sizes,
        })
    }
}

/// Flink's `createDecisionGraph`, done once per state: every TAKE and
/// IGNORE edge reachable through PROCEED edges, and every STOP state, each
/// with its condition.
fn flatten(states: &[CState], from: u16) -> Vec<(Flat, Cond)> {
    let mut out = Vec::new();
    let mut stack = vec![(from, Cond::True)];
    while let Some((cur, conj)) = stack.pop() {
        let st = &states[cur as usize];
        if st.kind == Kind::Stop {
            out.push((
                Flat {
                    action: FlatAction::Stop,
                    cond: Test::new(&conj),
                    target: cur,
                    step: st.step,
                },
                conj,
            ));
            continue;
        }
        for e in &st.edges {
            let c = Cond::and(conj.clone(), e.cond.clone());
            if c == Cond::False {
                continue;
            }
            let action = match e.action {
                Action::Proceed => {
                    stack.push((e.target, c));
                    continue;
                }
                Action::Take => FlatAction::Take,
                Action::Ignore => FlatAction::Ignore,
            };
            out.push((
                Flat {
                    action,
                    cond: Test::new(&c),
                    target: e.target,
                    step: st.step,
                },
                c,
            ));
        }
    }
    out
}

/// When a partial match in state `s` stays as it is: its one IGNORE edge
/// back to `s` holds and no other flattened edge does (a second edge would
/// add a successor, end the branch or complete a match). With two such
/// edges the partial match would be duplicated, so it never just stays.
fn stay_cond(flat: &[Flat], conds: &[Cond], s: u16) -> Cond {
    let is_self = |f: &Flat| f.action == FlatAction::Ignore && f.target == s;
    let mut own = flat.iter().zip(conds).filter(|(f, _)| is_self(f));
    let Some((_, keep)) = own.next() else {
        return Cond::False;
    };
    if own.next().is_some() {
        return Cond::False;
    }
    let others = flat
        .iter()
        .zip(conds)
        .filter(|(f, _)| !is_self(f))
        .fold(Cond::False, |acc, (_, c)| Cond::or(acc, c.clone()));
    Cond::and(keep.clone(), Cond::not(others))
}

fn to_final(states: &[CState], from: u16) -> Cond {
    let mut acc = Cond::False;
    let mut stack = vec![(from, Cond::True)];
    while let Some((cur, conj)) = stack.pop() {
        for e in &states[cur as usize].edges {
            if e.action != Action::Proceed {
                continue;
            }
            let c = Cond::and(conj.clone(), e.cond.clone());
            if states[e.target as usize].kind == Kind::Final {
                acc = Cond::or(acc, c);
            } else {
                stack.push((e.target, c));
            }
        }
    }
    acc
}

// ----------------------------------------------------------------- matcher

/// What one event does to the key, passed down while stepping.
struct Ev<E> {
    ts: i64,
    seq: u64,
    bits: Bits,
    event: Option<E>,
    slot: Option<u32>,
}

impl Nfa {
    /// A fresh, empty state for one key.
    pub fn key_state<E>(&self) -> KeyState<E> {
        KeyState::default()
    }

    /// The step names, in order.
    pub fn step_names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.name.as_str()).collect()
    }

    fn deadline(&self, p: &Partial) -> Option<i64> {
        let w = self.within?;
        Some(match self.within_type {
            WithinType::FirstAndLast => p.start_ts.saturating_add(w),
            WithinType::PreviousAndCurrent => p.prev_ts.saturating_add(w),
        })
    }

    /// The earliest event time at which [`Nfa::advance_time`] would do
    /// something for this key (None if nothing is pending).
    pub fn next_deadline<E>(&self, st: &KeyState<E>) -> Option<i64> {
        match st.earliest {
            Some(d) => d,
            None => self.scan_deadlines(st),
        }
    }

    fn scan_deadlines<E>(&self, st: &KeyState<E>) -> Option<i64> {
        self.within?;
        st.partials.iter().filter_map(|p| self.deadline(p)).min()
    }

    /// Partial matches changed: recompute the key's earliest deadline.
    fn refresh_deadline<E>(&self, st: &mut KeyState<E>) {
        st.earliest = Some(self.scan_deadlines(st));
    }

    /// Partial matches changed: recompute the states in use
    /// ([`KeyState::present`]) and the earliest deadline, in one pass.
    fn refresh<E>(&self, st: &mut KeyState<E>) {
        let mut present = 0u64;
        let mut earliest: Option<i64> = None;
        for p in &st.partials {
            present |= 1u64.checked_shl(u32::from(p.state)).unwrap_or(0);
            if let Some(d) = self.deadline(p) {
                earliest = Some(earliest.map_or(d, |e| e.min(d)));
            }
        }
        st.present = present;
        st.earliest = Some(earliest);
    }

    /// Feed one event of this key. Events arrive in timestamp order (ties in
    /// arrival order). Returns how many new starts were refused by `limits`.
    ///
    /// Time first advances to `ts` (partial matches due expire, as Flink's
    /// operator does before each event). Existing partial matches always
    /// continue; a new start from this event is refused — and counted once —
    /// when `limits.allow_starts` is false or the key holds at least
    /// `limits.max_partials` partial matches after the existing ones moved
    /// on. A start that would complete a match at once is refused too, so
    /// that a closed cap means no new work for the key.
    pub fn advance<E: Clone>(
        &self,
        st: &mut KeyState<E>,
        ts: i64,
        event: E,
        bits: Bits,
        limits: &Limits,
        out: &mut Vec<Outcome<E>>,
    ) -> u64 {
        st.seq += 1;
        // Flink's operator advances time to each event's timestamp before
        // feeding it: partial matches expire first (strict boundary). The
        // earliest deadline is kept, so this costs nothing when none is due.
        if self.next_deadline(st).is_some_and(|d| ts >= d) {
            self.advance_time(st, ts, out);
        }
        if bits.steps == 0 && st.partials.is_empty() {
            return 0;
        }
        let mut ev = Ev {
            ts,
            seq: st.seq,
            bits,
            event: Some(event),
            slot: None,
        };
        // Which of the states in use this event leaves as they are
        // (patterns of at most 64 states; larger ones check per partial
        // match).
        let small = self.states.len() <= 64;
        let mut stay_mask = 0u64;
        if small {
            let mut m = st.present;
            while m != 0 {
                let s = m.trailing_zeros();
                m &= m - 1;
                if self
                    .states
                    .get(s as usize)
                    .is_some_and(|r| r.stay.holds(bits))
                {
                    stay_mask |= 1 << s;
                }
            }
        }
        let mut next = NEXT.take();
        let mut potential = POTENTIAL.take();
        // Nothing to do for the partial matches held: they stay in place,
        // untouched, and the earliest deadline with them.
        let untouched = small && st.present & !stay_mask == 0;
        if !untouched {
            let mut old = mem::take(&mut st.partials);
            for p in old.drain(..) {
                let stays = if small {
                    stay_mask >> p.state & 1 == 1
                } else {
                    self.states[p.state as usize].stay.holds(bits)
                };
                if stays {
                    next.push(p);
                } else {
                    self.step_one(st, p, false, &mut ev, &mut next, &mut potential);
                }
            }
            old.extend_from_slice(&next);
            st.partials = old;
            next.clear();
        }
        let mut refused = 0;
        if bits.steps != 0 && self.start_takes(bits) {
            if !limits.allow_starts || st.partials.len() >= limits.max_partials {
                refused += 1;
            } else {
                let start = Partial {
                    start_seq: ev.seq,
                    start_ts: ts,
                    prev_ts: ts,
                    tail: NIL,
                    state: self.start,
                };
                self.step_one(st, start, true, &mut ev, &mut next, &mut potential);
            }
        }
        let started = !next.is_empty();
        if started {
            st.present |= next.iter().fold(0, |m, p| {
                m | 1u64.checked_shl(u32::from(p.state)).unwrap_or(0)
            });
            st.partials.extend_from_slice(&next);
            next.clear();
        }
        NEXT.set(next);
        let held = st.partials.len();
        self.emit(st, &mut potential, out);
        POTENTIAL.set(potential);
        st.compact();
        if untouched && held == st.partials.len() {
            // Only new starts were added: they may bring the deadline
            // forward, never back.
            if started {
                match (st.earliest, self.within) {
                    (Some(e), Some(w)) => {
                        let d = ts.saturating_add(w);
                        st.earliest = Some(Some(e.map_or(d, |e| e.min(d))));
                    }
                    _ => self.refresh_deadline(st),
                }
            }
        } else {
            self.refresh(st);
        }
        refused
    }

    fn start_takes(&self, bits: Bits) -> bool {
        self.states[self.start as usize]
            .flat
            .iter()
            .any(|f| f.action == FlatAction::Take && f.cond.holds(bits))
    }

    /// Flink's `computeNextStates` for one computation state. Successors
    /// share the state's path; a TAKE extends it by one node.
    fn step_one<E>(
        &self,
        st: &mut KeyState<E>,
        p: Partial,
        is_start: bool,
        ev: &mut Ev<E>,
        next: &mut Vec<Partial>,
        potential: &mut Vec<Done>,
    ) {
        let rs = &self.states[p.state as usize];
        // A STOP state reached discards this whole branch.
        if rs.has_stop
            && rs
                .flat
                .iter()
                .any(|f| f.action == FlatAction::Stop && f.cond.holds(ev.bits))
        {
            st.release(p.tail);
            return;
        }
        let (start_ts, start_seq) = if is_start {
            (ev.ts, ev.seq)
        } else {
            (p.start_ts, p.start_seq)
        };
        // Successors holding `p.tail` (directly, or as the parent of their
        // new node): the first takes over p's reference, the others' are
        // added at the end in one go, so a partial match that only moves
        // on never touches its node.
        let mut holders = 0u32;
        for f in &rs.flat {
            if !f.cond.holds(ev.bits) {
                continue;
            }
            match f.action {
                FlatAction::Stop => {}
                FlatAction::Ignore => {
                    if is_start {
                        continue;
                    }
                    let tail = p.tail;
                    holders += 1;
                    if self.states[f.target as usize].kind == Kind::Final {
                        potential.push(Done {
                            start_seq,
                            start_ts,
                            end: ev.ts,
                            tail,
                        });
                    } else {
                        next.push(Partial {
                            start_seq,
                            start_ts,
                            prev_ts: p.prev_ts,
                            tail,
                            state: f.target,
                        });
                    }
                }
                FlatAction::Take => {
                    let slot = match ev.slot {
                        Some(s) => s,
                        None => {
                            let Some(e) = ev.event.take() else { continue };
                            let s = st.store(ev.ts, ev.seq, e);
                            ev.slot = Some(s);
                            s
                        }
                    };
                    let tail = st.link(p.tail, f.step, slot);
                    holders += 1;
                    let target = &self.states[f.target as usize];
                    if target.kind == Kind::Final {
                        potential.push(Done {
                            start_seq,
                            start_ts,
                            end: ev.ts,
                            tail,
                        });
                        continue;
                    }
                    if target.to_final.holds(ev.bits) {
                        potential.push(Done {
                            start_seq,
                            start_ts,
                            end: ev.ts,
                            tail: st.share(tail),
                        });
                    }
                    next.push(Partial {
                        start_seq,
                        start_ts,
                        prev_ts: ev.ts,
                        tail,
                        state: f.target,
                    });
                }
            }
        }
        match holders {
            0 => st.release(p.tail),
            1 => {}
            n => st.add_refs(p.tail, n - 1),
        }
    }

    /// Event time reached `watermark` (all events <= watermark were fed):
    /// expire partial matches (timeouts, reported with end = start + within)
    /// and complete trailing absences.
    pub fn advance_time<E: Clone>(
        &self,
        st: &mut KeyState<E>,
        watermark: i64,
        out: &mut Vec<Outcome<E>>,
    ) {
        if self.within.is_none() || st.partials.is_empty() {
            return;
        }
        if self.next_deadline(st).is_none_or(|d| watermark < d) {
            return;
        }
        let mut potential = POTENTIAL.take();
        let mut old = mem::take(&mut st.partials);
        let mut keep = NEXT.take();
        for p in old.drain(..) {
            let Some(deadline) = self.deadline(&p) else {
                keep.push(p);
                continue;
            };
            if watermark < deadline {
                keep.push(p);
            } else if self.states[p.state as usize].kind == Kind::Pending {
                potential.push(Done {
                    start_seq: p.start_seq,
                    start_ts: p.start_ts,
                    end: deadline,
                    tail: p.tail,
                });
            } else {
                out.push(Outcome {
                    kind: OutcomeKind::Timeout,
                    start: p.start_ts,
                    end: deadline,
                    steps: st.materialize(p.tail),
                });
                st.release(p.tail);
            }
        }
        old.extend_from_slice(&keep);
        st.partials = old;
        keep.clear();
        NEXT.set(keep);
        self.emit(st, &mut potential, out);
        POTENTIAL.set(potential);
        st.compact();
        self.refresh(st);
    }

    /// Emits completed matches: all at once without a skip strategy;
    /// otherwise Flink's `processMatchesAccordingToSkipStrategy` — hold
    /// matches while a partial match that started earlier is alive, and let
    /// each emitted match prune partial and held matches.
    fn emit<E: Clone>(
        &self,
        st: &mut KeyState<E>,
        potential: &mut Vec<Done>,
        out: &mut Vec<Outcome<E>>,
    ) {
        for d in potential.drain(..) {
            let at = st.completed.partition_point(|c| c.start_seq <= d.start_seq);
            st.completed.insert(at, d);
        }
        while let Some(first) = st.completed.first() {
            let blocked = self.skip != SkipRule::NoSkip
                && st
                    .partials
                    .first()
                    .is_some_and(|p| first.start_seq > p.start_seq);
            if blocked {
                break;
            }
            let m = st.completed.remove(0);
            if let Some((pid, inclusive)) = self.pruning_id(st, m.tail) {
                let prune = |s: u64| if inclusive { s <= pid } else { s < pid };
                let mut dropped = TAILS.take();
                st.partials.retain(|p| {
                    let gone = prune(p.start_seq);
                    if gone {
                        dropped.push(p.tail);
                    }
                    !gone
                });
                st.completed.retain(|c| {
                    let gone = prune(c.start_seq);
                    if gone {
                        dropped.push(c.tail);
                    }
                    !gone
                });
                for tail in dropped.drain(..) {
                    st.release(tail);
                }
                TAILS.set(dropped);
            }
            out.push(Outcome {
                kind: OutcomeKind::Match,
                start: m.start_ts,
                end: m.end,
                steps: st.materialize(m.tail),
            });
            st.release(m.tail);
        }
    }

    /// The skip strategy's pruning event and whether it prunes partial
    /// matches starting at it (`<=`) or only before it (`<`).
    fn pruning_id<E>(&self, st: &KeyState<E>, tail: u32) -> Option<(u64, bool)> {
        let mut path = st.walk(tail);
        match self.skip {
            SkipRule::NoSkip => None,
            SkipRule::ToNext => path.last().map(|n| (st.seq_of(n), true)),
            SkipRule::PastLast => path.map(|n| st.seq_of(n)).max().map(|s| (s, true)),
            SkipRule::ToFirst(k) => path
                .filter(|n| n.step == k)
                .last()
                .map(|n| (st.seq_of(n), false)),
            SkipRule::ToLast(k) => path.find(|n| n.step == k).map(|n| (st.seq_of(n), false)),
        }
    }

    /// Carry a key's state over to a new version of the pattern: partial
    /// matches whose steps (the ones they hold events for, and the one they
    /// are in) still exist by name carry over; the rest are dropped; returns
    /// the new state and the number dropped.
    ///
    /// A partial match continues in the state at the same position within
    /// its step; it is dropped when its step's definition (contiguity,
    /// quantifier, until) or compiled shape changed, since that position
    /// would then mean something else.
    pub fn migrate<E: Clone>(&self, from: &Nfa, mut st: KeyState<E>) -> (KeyState<E>, u64) {
        let step_map: Vec<Option<u8>> = from
            .steps
            .iter()
            .map(|s| {
                self.steps
                    .iter()
                    .position(|t| t.name == s.name)
                    .map(|i| i as u8)
            })
            .collect();
        let mapped = |step: u8| step_map.get(step as usize).copied().flatten();
        // The path's steps, mapped, must still be in order: read backwards,
        // never increasing. Returns the mapped step of its last event.
        let path_ok = |st: &KeyState<E>, tail: u32| -> Option<Option<u8>> {
            let mut last: Option<u8> = None;
            let mut after = u8::MAX;
            for n in st.walk(tail) {
                let s = mapped(n.step).filter(|&s| s <= after)?;
                last.get_or_insert(s);
                after = s;
            }
            Some(last)
        };
        let mut dropped = 0u64;
        let mut gone: Vec<u32> = Vec::new();
        let mut partials = mem::take(&mut st.partials);
        partials.retain_mut(|p| {
            let ok = self
                .map_state(from, p.state, &step_map)
                .is_some_and(|(s, step)| {
                    p.state = s;
                    path_ok(&st, p.tail).is_some_and(|last| last.is_none_or(|l| l <= step))
                });
            if !ok {
                dropped += 1;
                gone.push(p.tail);
            }
            ok
        });
        st.partials = partials;
        st.present = st.states_mask();
        let mut completed = mem::take(&mut st.completed);
        completed.retain(|c| {
            let ok = path_ok(&st, c.tail).is_some();
            if !ok {
                dropped += 1;
                gone.push(c.tail);
            }
            ok
        });
        st.completed = completed;
        for tail in gone {
            st.release(tail);
        }
        // Every node still held belongs to a path that carried over, so
        // each has a new step (nodes are shared: map each once).
        for n in st.nodes.iter_mut().filter(|n| n.refs > 0) {
            if let Some(s) = mapped(n.step) {
                n.step = s;
            }
        }
        st.compact();
        self.refresh_deadline(&mut st);
        (st, dropped)
    }

    fn map_state(&self, from: &Nfa, state: u16, step_map: &[Option<u8>]) -> Option<(u16, u8)> {
        let old = from.states.get(state as usize)?;
        if !matches!(old.kind, Kind::Normal | Kind::Pending) {
            return None;
        }
        let new_step = (*step_map.get(old.step as usize)?)?;
        let (a, b) = (
            from.steps.get(old.step as usize)?,
            self.steps.get(new_step as usize)?,
        );
        if (a.after, &a.quantifier, a.until) != (b.after, &b.quantifier, b.until)
            || from.group_sizes.get(old.step as usize) != self.group_sizes.get(new_step as usize)
        {
            return None;
        }
        let s = self
            .states
            .iter()
            .position(|r| r.kind == old.kind && r.step == new_step && r.ordinal == old.ordinal)?;
        Some((s as u16, new_step))
    }
}

#[cfg(test)]
mod sizes {
    use super::*;

    /// The figures quoted in the module docs.
    #[test]
    fn memory_figures_in_the_docs_hold() {
        assert_eq!(mem::size_of::<Partial>(), 32);
        assert_eq!(mem::size_of::<Node>(), 16);
        assert_eq!(mem::size_of::<Done>(), 32);
        assert_eq!(mem::size_of::<Slot<std::sync::Arc<String>>>(), 32);
    }

    /// A condition's bit-mask form agrees with the tree on every input.
    #[test]
    fn tests_agree_with_conditions() {
        let mut rng = crate::test_rng::Rng::new(7);
        fn random_cond(rng: &mut crate::test_rng::Rng, depth: u32) -> Cond {
            match if depth == 0 {
                rng.below(4)
            } else {
                rng.below(7)
            } {
                0 => Cond::True,
                1 => Cond::False,
                2 => Cond::Step(rng.below(3) as u8),
                3 => Cond::Until(rng.below(3) as u8),
                4 => Cond::not(random_cond(rng, depth - 1)),
                5 => Cond::and(random_cond(rng, depth - 1), random_cond(rng, depth - 1)),
                _ => Cond::or(random_cond(rng, depth - 1), random_cond(rng, depth - 1)),
            }
        }
        for _ in 0..2_000 {
            let c = random_cond(&mut rng, 4);
            let t = Test::new(&c);
            for steps in 0..8 {
                for until in 0..8 {
                    let b = Bits { steps, until };
                    assert_eq!(t.holds(b), c.eval(b), "{c:?} at {b:?}");
                }
            }
        }
    }
}
