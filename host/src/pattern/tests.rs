//! Golden tests: one per semantic rule, with matches compared as sets of
//! event sequences like Flink's `compareMaps`. Where a case is ported from
//! Flink's own test classes, the class and method are cited.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::test_rng::Rng;

use Contiguity::{Any, NotRelaxed, NotStrict, Relaxed, Strict};

fn step(name: &str, after: Contiguity) -> Step {
    Step::new(name, after)
}

fn q(name: &str, after: Contiguity, quantifier: Quantifier) -> Step {
    Step {
        name: name.into(),
        after,
        quantifier,
        until: false,
    }
}

fn def(steps: Vec<Step>) -> PatternDef {
    PatternDef {
        steps,
        within: None,
        within_type: WithinType::FirstAndLast,
        skip: Skip::NoSkip,
    }
}

fn inner(mut s: Step, i: Inner) -> Step {
    s.quantifier.inner = i;
    s
}

fn optional(mut s: Step) -> Step {
    s.quantifier.optional = true;
    s
}

fn greedy(mut s: Step) -> Step {
    s.quantifier.greedy = true;
    s
}

fn until(mut s: Step) -> Step {
    s.until = true;
    s
}

/// Conditions: step i holds when the label starts with `prefixes[i]`.
fn by_prefix<'a>(prefixes: &'a [&'a str]) -> impl Fn(&str) -> Bits + 'a {
    move |label| {
        let mut b = Bits::default();
        for (i, p) in prefixes.iter().enumerate() {
            if !p.is_empty() && label.starts_with(p) {
                b.steps |= 1 << i;
            }
        }
        b
    }
}

const NO_LIMITS: Limits = Limits {
    max_partials: usize::MAX,
    allow_starts: true,
};

/// Feeds labelled events at timestamps 1, 2, 3, ... and returns every
/// outcome.
fn run(d: &PatternDef, bits: impl Fn(&str) -> Bits, labels: &[&str]) -> Vec<Outcome<String>> {
    let events: Vec<(i64, &str)> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i as i64 + 1, *l))
        .collect();
    run_at(d, bits, &events, None)
}

fn run_at(
    d: &PatternDef,
    bits: impl Fn(&str) -> Bits,
    events: &[(i64, &str)],
    watermark: Option<i64>,
) -> Vec<Outcome<String>> {
    let nfa = d.compile().unwrap();
    let mut st = nfa.key_state();
    let mut out = Vec::new();
    for (ts, l) in events {
        nfa.advance(&mut st, *ts, l.to_string(), bits(l), &NO_LIMITS, &mut out);
    }
    if let Some(w) = watermark {
        nfa.advance_time(&mut st, w, &mut out);
    }
    out
}

fn flat(o: &Outcome<String>) -> String {
    o.steps
        .iter()
        .flat_map(|(_, v)| v.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The matches as a sorted list of space-joined event sequences.
fn matches(out: &[Outcome<String>]) -> Vec<String> {
    let mut m: Vec<String> = out
        .iter()
        .filter(|o| o.kind == OutcomeKind::Match)
        .map(flat)
        .collect();
    m.sort();
    m
}

fn timeouts(out: &[Outcome<String>]) -> Vec<String> {
    let mut m: Vec<String> = out
        .iter()
        .filter(|o| o.kind == OutcomeKind::Timeout)
        .map(flat)
        .collect();
    m.sort();
    m
}

fn set(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

// ------------------------------------------------------------- contiguity

#[test]
fn contiguity_documented_a_b_over_a_c_b1_b2() {
    // Docs, "Combining Patterns": "a b" over "a", "c", "b1", "b2".
    let input = ["a", "c", "b1", "b2"];
    let bits = by_prefix(&["a", "b"]);
    let strict = def(vec![step("a", Relaxed), step("b", Strict)]);
    assert_eq!(matches(&run(&strict, &bits, &input)), set(&[]));
    let relaxed = def(vec![step("a", Relaxed), step("b", Relaxed)]);
    assert_eq!(matches(&run(&relaxed, &bits, &input)), set(&["a b1"]));
    let any = def(vec![step("a", Relaxed), step("b", Any)]);
    assert_eq!(matches(&run(&any, &bits, &input)), set(&["a b1", "a b2"]));
}

#[test]
fn looping_contiguity_documented() {
    // Docs, "Contiguity within looping patterns": "a b+ c" (b followedByAny
    // a, c followedBy) over a b1 d1 b2 d2 b3 c.
    let input = ["a", "b1", "d1", "b2", "d2", "b3", "c"];
    let bits = by_prefix(&["a", "b", "c"]);
    let pat = |i: Inner| {
        let mut d = def(vec![
            step("a", Relaxed),
            inner(q("b", Any, Quantifier::one_or_more()), i),
            step("c", Relaxed),
        ]);
        d.within = Some(100);
        d
    };
    assert_eq!(
        matches(&run(&pat(Inner::Strict), &bits, &input)),
        set(&["a b1 c", "a b2 c", "a b3 c"])
    );
    assert_eq!(
        matches(&run(&pat(Inner::Relaxed), &bits, &input)),
        set(&[
            "a b1 c",
            "a b1 b2 c",
            "a b1 b2 b3 c",
            "a b2 c",
            "a b2 b3 c",
            "a b3 c"
        ])
    );
    assert_eq!(
        matches(&run(&pat(Inner::Any), &bits, &input)),
        set(&[
            "a b1 c",
            "a b1 b2 c",
            "a b1 b3 c",
            "a b1 b2 b3 c",
            "a b2 c",
            "a b2 b3 c",
            "a b3 c"
        ])
    );
}

#[test]
fn consecutive_and_allow_combinations_documented() {
    // Docs, consecutive() / allowCombinations(): C D A1 A2 A3 D A4 B.
    let input = ["c", "d", "a1", "a2", "a3", "d", "a4", "b"];
    let bits = by_prefix(&["c", "a", "b"]);
    let pat = |i: Inner| {
        let mut d = def(vec![
            step("c", Relaxed),
            inner(q("a", Relaxed, Quantifier::one_or_more()), i),
            step("b", Relaxed),
        ]);
        d.within = Some(100);
        d
    };
    assert_eq!(
        matches(&run(&pat(Inner::Strict), &bits, &input)),
        set(&["c a1 b", "c a1 a2 b", "c a1 a2 a3 b"])
    );
    assert_eq!(
        matches(&run(&pat(Inner::Relaxed), &bits, &input)),
        set(&["c a1 b", "c a1 a2 b", "c a1 a2 a3 b", "c a1 a2 a3 a4 b"])
    );
    assert_eq!(
        matches(&run(&pat(Inner::Any), &bits, &input)),
        set(&[
            "c a1 b",
            "c a1 a2 b",
            "c a1 a3 b",
            "c a1 a4 b",
            "c a1 a2 a3 b",
            "c a1 a2 a4 b",
            "c a1 a3 a4 b",
            "c a1 a2 a3 a4 b"
        ])
    );
}

// ------------------------------------------------------------ quantifiers

#[test]
fn times_exact() {
    // AfterMatchSkipITCase#testNoSkip: a{3} over a1..a6.
    let d = def(vec![q("start", Relaxed, Quantifier::times(3))]);
    let out = run(&d, by_prefix(&["a"]), &["a1", "a2", "a3", "a4", "a5", "a6"]);
    assert_eq!(
        matches(&out),
        set(&["a1 a2 a3", "a2 a3 a4", "a3 a4 a5", "a4 a5 a6"])
    );
}

#[test]
fn times_range_flink_cases() {
    let bits = by_prefix(&["c", "a", "b"]);
    // TimesRangeITCase#testTimesRange (timestamps as in Flink: 1 2 3 4 6).
    let d = def(vec![
        step("start", Relaxed),
        inner(q("middle", Strict, Quantifier::range(1, 3)), Inner::Any),
        step("end1", Relaxed),
    ]);
    let ev = [(1, "c"), (2, "a1"), (3, "a2"), (4, "a3"), (6, "b")];
    assert_eq!(
        matches(&run_at(&d, &bits, &ev, None)),
        set(&["c a1 a2 a3 b", "c a1 a2 b", "c a1 a3 b", "c a1 b"])
    );

    // TimesRangeITCase#testTimesRangeNonStrict / #testTimesRangeStrict.
    let input = ["c", "f", "a1", "f", "a2", "a3", "b"];
    let d = def(vec![
        step("start", Relaxed),
        inner(q("middle", Any, Quantifier::range(1, 3)), Inner::Any),
        step("end1", Relaxed),
    ]);
    assert_eq!(
        matches(&run(&d, &bits, &input)),
        set(&[
            "c a1 a2 a3 b",
            "c a1 a2 b",
            "c a1 a3 b",
            "c a2 a3 b",
            "c a1 b",
            "c a2 b",
            "c a3 b"
        ])
    );
    // times(0, 3).consecutive() is times(1, 3).consecutive().optional().
    let d = def(vec![
        step("start", Relaxed),
        optional(inner(
            q("middle", Any, Quantifier::range(1, 3)),
            Inner::Strict,
        )),
        step("end1", Relaxed),
    ]);
    assert_eq!(
        matches(&run(&d, &bits, &input)),
        set(&["c a2 a3 b", "c a1 b", "c a2 b", "c a3 b", "c b"])
    );

    // TimesRangeITCase#testTimesRangeNonStrictOptional2.
    let d = def(vec![
        step("start", Relaxed),
        optional(inner(q("middle", Any, Quantifier::range(2, 3)), Inner::Any)),
        step("end1", Relaxed),
    ]);
    assert_eq!(
        matches(&run(&d, &bits, &input)),
        set(&["c a1 a2 a3 b", "c a1 a2 b", "c a1 a3 b", "c a2 a3 b", "c b"])
    );
}

#[test]
fn times_range_strict_optional() {
    // TimesRangeITCase#testTimesRangeStrictOptional1.
    let bits = by_prefix(&["c", "a", "b"]);
    let d = def(vec![
        step("start", Relaxed),
        optional(inner(
            q("middle", Strict, Quantifier::range(1, 3)),
            Inner::Strict,
        )),
        step("end1", Relaxed),
    ]);
    let out = run(&d, &bits, &["c", "a1", "a2", "a3", "b"]);
    assert_eq!(
        matches(&out),
        set(&["c a1 a2 a3 b", "c a1 a2 b", "c a1 b", "c b"])
    );
    // TimesRangeITCase#testTimesRangeNonStrictOptional1.
    let d = def(vec![
        step("start", Relaxed),
        optional(q("middle", Relaxed, Quantifier::range(1, 3))),
        step("end1", Relaxed),
    ]);
    assert_eq!(matches(&run(&d, &bits, &["c", "f", "b"])), set(&["c b"]));
}

#[test]
fn one_or_more_at_the_end_and_times_or_more() {
    // AfterMatchSkipITCase#testNoSkipWithQuantifierAtTheEnd: a next b+.
    let bits = by_prefix(&["a", "b"]);
    let mut d = def(vec![
        step("start", Relaxed),
        q("end", Strict, Quantifier::one_or_more()),
    ]);
    d.within = Some(100);
    let out = run(&d, &bits, &["a1", "b1", "b2", "b3"]);
    assert_eq!(matches(&out), set(&["a1 b1 b2 b3", "a1 b1 b2", "a1 b1"]));

    // times_or_more(2): at least two b's after a.
    d.steps[1].quantifier = Quantifier::times_or_more(2);
    let out = run(&d, &bits, &["a1", "b1", "b2", "b3"]);
    assert_eq!(matches(&out), set(&["a1 b1 b2 b3", "a1 b1 b2"]));
}

#[test]
fn optional_step() {
    // a b? c: with and without the optional event.
    let bits = by_prefix(&["a", "b", "c"]);
    let d = def(vec![
        step("a", Relaxed),
        optional(step("b", Relaxed)),
        step("c", Relaxed),
    ]);
    assert_eq!(matches(&run(&d, &bits, &["a", "c"])), set(&["a c"]));
    assert_eq!(
        matches(&run(&d, &bits, &["a", "b", "c"])),
        set(&["a b c", "a c"])
    );
    // An optional first step: a match may start at the second step.
    let d = def(vec![optional(step("a", Relaxed)), step("c", Strict)]);
    let out = run(&d, by_prefix(&["a", "c"]), &["a", "c", "c"]);
    assert_eq!(matches(&out), set(&["a c", "c", "c"]));
}

#[test]
fn greedy_flink_cases() {
    let bits = by_prefix(&["c", "a", "d"]);
    let pat = || {
        let mut d = def(vec![
            step("start", Relaxed),
            greedy(optional(q("middle", Relaxed, Quantifier::one_or_more()))),
            step("end", Relaxed),
        ]);
        d.within = Some(100);
        d
    };
    // GreedyITCase#testGreedyZeroOrMore.
    assert_eq!(
        matches(&run(&pat(), &bits, &["c", "a1", "a2", "a3", "d"])),
        set(&["c a1 a2 a3 d"])
    );
    // GreedyITCase#testGreedyZeroOrMoreInBetween.
    let input = ["c", "x", "a1", "x", "a2", "x", "a3", "d"];
    assert_eq!(matches(&run(&pat(), &bits, &input)), set(&["c a1 a2 a3 d"]));
    // GreedyITCase#testGreedyZeroOrMoreWithDummyEventsAfterQuantifier.
    assert_eq!(
        matches(&run(&pat(), &bits, &["c", "a1", "a2", "x", "d"])),
        set(&["c a1 a2 d"])
    );
    // GreedyITCase#testGreedyZeroOrMoreWithDummyEventsBeforeQuantifier.
    assert_eq!(
        matches(&run(&pat(), &bits, &["c", "x", "d"])),
        set(&["c d"])
    );

    // GreedyITCase#testGreedyZeroOrMoreBeforeOptional / ...Optional2:
    // c a* d? e.
    let bits = by_prefix(&["c", "a", "d", "e"]);
    let mut d = def(vec![
        step("start", Relaxed),
        greedy(optional(q("middle1", Relaxed, Quantifier::one_or_more()))),
        optional(step("middle2", Relaxed)),
        step("end", Relaxed),
    ]);
    d.within = Some(100);
    assert_eq!(
        matches(&run(&d, &bits, &["c", "a1", "a2", "x", "e"])),
        set(&["c a1 a2 e"])
    );
    assert_eq!(
        matches(&run(&d, &bits, &["c", "a1", "a2", "d", "e"])),
        set(&["c a1 a2 e", "c a1 a2 d e"])
    );
}

#[test]
fn greedy_with_until_flink_cases() {
    // GreedyITCase#testGreedyUtilZeroOrMoreWithDummyEventsAfterQuantifier
    // and #testGreedyUtilWithDummyEventsBeforeQuantifier: until price > 3,
    // written here as a "!" in the label.
    let bits = |l: &str| {
        let mut b = by_prefix(&["c", "a", "d"])(l);
        if l.ends_with('!') {
            b.until |= 1 << 1;
        }
        b
    };
    let d = def(vec![
        step("start", Relaxed),
        until(greedy(optional(q(
            "middle",
            Relaxed,
            Quantifier::one_or_more(),
        )))),
        step("end", Relaxed),
    ]);
    assert_eq!(
        matches(&run(&d, bits, &["c", "a1", "a2", "a3", "a4!", "d"])),
        set(&["c a1 a2 a3 d"])
    );
    assert_eq!(
        matches(&run(&d, bits, &["c", "a0!", "a1", "a2", "a3", "d"])),
        set(&["c d"])
    );
}

#[test]
fn until_flink_cases() {
    // UntilConditionITCase: until price == 5.0, written as "!"; the end
    // step's condition is the same as the until condition.
    let bits = |l: &str| {
        let mut b = by_prefix(&["c", "a", ""])(l);
        if l.ends_with('!') {
            b.until |= 1 << 1;
            b.steps |= 1 << 2;
        }
        b
    };
    let pat = |i: Inner, opt: bool| {
        let mut s = until(inner(q("middle", Relaxed, Quantifier::one_or_more()), i));
        s.quantifier.optional = opt;
        def(vec![step("start", Relaxed), s, step("end", Relaxed)])
    };
    let input = ["c", "a1", "a2", "a!", "a6"];
    // #testUntilConditionFollowedByOneOrMore
    let nfa = pat(Inner::Relaxed, false).compile().unwrap();
    let mut st = nfa.key_state();
    let mut out = Vec::new();
    for (i, l) in input.iter().enumerate() {
        nfa.advance(
            &mut st,
            i as i64,
            l.to_string(),
            bits(l),
            &NO_LIMITS,
            &mut out,
        );
    }
    assert_eq!(matches(&out), set(&["c a1 a2 a!", "c a1 a!"]));
    assert!(st.is_empty(), "every partial match ends at the until event");
    // #testUntilConditionFollowedByOneOrMoreConsecutive
    assert_eq!(
        matches(&run(&pat(Inner::Strict, false), bits, &input)),
        set(&["c a1 a2 a!", "c a1 a!"])
    );
    // #testUntilConditionFollowedByZeroOrMore
    assert_eq!(
        matches(&run(&pat(Inner::Relaxed, true), bits, &input)),
        set(&["c a1 a2 a!", "c a1 a!", "c a!"])
    );
    // #testUntilConditionFollowedByOneOrMoreCombinations
    let input = ["c", "a1", "a2", "a3", "a!", "a6"];
    assert_eq!(
        matches(&run(&pat(Inner::Any, false), bits, &input)),
        set(&["c a1 a2 a3 a!", "c a1 a2 a!", "c a1 a3 a!", "c a1 a!"])
    );
    // #testUntilConditionFollowedByAnyOneOrMore: c followedByAny a+ until.
    let d = def(vec![
        step("start", Relaxed),
        until(q("middle", Any, Quantifier::one_or_more())),
    ]);
    let bits2 = |l: &str| {
        let mut b = by_prefix(&["c", "a"])(l);
        if l.ends_with('!') {
            b.until |= 1 << 1;
        }
        b
    };
    assert_eq!(
        matches(&run(&d, bits2, &["c", "a1", "a2", "a!", "a3"])),
        set(&["c a1 a2", "c a1", "c a2", "c a3"])
    );
}

// --------------------------------------------------------------- negation

#[test]
fn not_next_in_the_middle() {
    // a notNext(b) c
    let bits = by_prefix(&["a", "b", "c"]);
    let d = def(vec![
        step("a", Relaxed),
        step("b", NotStrict),
        step("c", Relaxed),
    ]);
    assert_eq!(matches(&run(&d, &bits, &["a", "b", "c"])), set(&[]));
    assert_eq!(
        matches(&run(&d, &bits, &["a", "x", "b", "c"])),
        set(&["a c"])
    );
    assert_eq!(matches(&run(&d, &bits, &["a", "c"])), set(&["a c"]));
}

#[test]
fn not_followed_by_in_the_middle() {
    // a notFollowedBy(b) c
    let bits = by_prefix(&["a", "b", "c"]);
    let d = def(vec![
        step("a", Relaxed),
        step("b", NotRelaxed),
        step("c", Relaxed),
    ]);
    assert_eq!(matches(&run(&d, &bits, &["a", "x", "b", "c"])), set(&[]));
    assert_eq!(
        matches(&run(&d, &bits, &["a", "x", "c", "b"])),
        set(&["a c"])
    );
    // NotPatternITCase#testNotFollowedByBeforeOptional-like: an optional
    // step taken in between voids the negation
    // (NFACompiler#copyWithoutTransitiveNots: {a c b d} matches, {a b d} not).
    let bits = by_prefix(&["a", "b", "c", "d"]);
    let d = def(vec![
        step("a", Relaxed),
        step("b", NotRelaxed),
        optional(step("c", Any)),
        step("d", Any),
    ]);
    assert_eq!(
        matches(&run(&d, &bits, &["a", "c", "b", "d"])),
        set(&["a c d"])
    );
    assert_eq!(matches(&run(&d, &bits, &["a", "b", "d"])), set(&[]));
}

#[test]
fn trailing_not_followed_by_fires_at_deadline() {
    // Docs: a notFollowedBy(b) within 10.
    let bits = by_prefix(&["a", "b"]);
    let mut d = def(vec![step("a", Relaxed), step("b", NotRelaxed)]);
    d.within = Some(10);
    let nfa = d.compile().unwrap();
    let mut st = nfa.key_state();
    let mut out = Vec::new();
    nfa.advance(
        &mut st,
        100,
        "a".to_string(),
        bits("a"),
        &NO_LIMITS,
        &mut out,
    );
    assert_eq!(nfa.next_deadline(&st), Some(110));
    nfa.advance_time(&mut st, 109, &mut out);
    assert!(out.is_empty());
    nfa.advance_time(&mut st, 110, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].kind, out[0].start, out[0].end),
        (OutcomeKind::Match, 100, 110)
    );
    assert_eq!(out[0].steps, vec![(0, vec!["a".to_string()])]);
    assert!(st.is_empty());
    assert_eq!(st.stored_events(), 0);

    // The negated event in time: no match, no timeout.
    let out = run_at(&d, &bits, &[(100, "a"), (105, "b")], Some(200));
    assert!(out.is_empty(), "{out:?}");
    // The negated event exactly at the deadline is too late.
    let out = run_at(&d, &bits, &[(100, "a"), (110, "b")], Some(200));
    assert_eq!(matches(&out), set(&["a"]));
}

// ------------------------------------------------------------------ within

#[test]
fn within_first_and_last_strict_boundary() {
    let bits = by_prefix(&["a", "b", "c"]);
    let mut d = def(vec![
        step("a", Relaxed),
        step("b", Relaxed),
        step("c", Relaxed),
    ]);
    d.within = Some(10);
    // c exactly 10 after a: no match; the partial match times out.
    let out = run_at(&d, &bits, &[(0, "a"), (5, "b"), (10, "c")], None);
    assert_eq!(matches(&out), set(&[]));
    assert_eq!(timeouts(&out), set(&["a b"]));
    let t = out.iter().find(|o| o.kind == OutcomeKind::Timeout).unwrap();
    assert_eq!((t.start, t.end), (0, 10));
    assert_eq!(
        t.steps,
        vec![(0, vec!["a".to_string()]), (1, vec!["b".to_string()])]
    );
    // One millisecond earlier: a match, ending at the last event.
    let out = run_at(&d, &bits, &[(0, "a"), (5, "b"), (9, "c")], None);
    assert_eq!(matches(&out), set(&["a b c"]));
    let m = &out[0];
    assert_eq!((m.start, m.end), (0, 9));
}

#[test]
fn within_previous_and_current() {
    let bits = by_prefix(&["a", "b", "c"]);
    let mut d = def(vec![
        step("a", Relaxed),
        step("b", Relaxed),
        step("c", Relaxed),
    ]);
    d.within = Some(10);
    d.within_type = WithinType::PreviousAndCurrent;
    // Gaps of 9: matches although the whole span is 18.
    let out = run_at(&d, &bits, &[(0, "a"), (9, "b"), (18, "c")], None);
    assert_eq!(matches(&out), set(&["a b c"]));
    // A gap of exactly 10: timeout at previous + within.
    let out = run_at(&d, &bits, &[(0, "a"), (9, "b"), (19, "c")], None);
    assert_eq!(matches(&out), set(&[]));
    let t = out.iter().find(|o| o.kind == OutcomeKind::Timeout).unwrap();
    assert_eq!((t.start, t.end), (0, 19));
}

#[test]
fn timeouts_by_watermark_with_contents() {
    // NFAITCase#testSimplePatternWithTimeoutHandling-like: a b c within 10;
    // several partial matches time out at start + within.
    let bits = by_prefix(&["a", "b", "c"]);
    let mut d = def(vec![
        step("a", Relaxed),
        step("b", Relaxed),
        step("c", Relaxed),
    ]);
    d.within = Some(10);
    let nfa = d.compile().unwrap();
    let mut st = nfa.key_state();
    let mut out = Vec::new();
    for (ts, l) in [(1, "a1"), (2, "a2"), (3, "b1")] {
        nfa.advance(&mut st, ts, l.to_string(), bits(l), &NO_LIMITS, &mut out);
    }
    assert_eq!(st.partials(), 2);
    assert_eq!(
        st.stored_events(),
        3,
        "b1 is stored once for both partial matches"
    );
    assert_eq!(nfa.next_deadline(&st), Some(11));
    nfa.advance_time(&mut st, 11, &mut out);
    let t: Vec<(i64, i64, String)> = out.iter().map(|o| (o.start, o.end, flat(o))).collect();
    assert_eq!(t, vec![(1, 11, "a1 b1".to_string())]);
    nfa.advance_time(&mut st, 12, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[1].start, out[1].end, flat(&out[1])),
        (2, 12, "a2 b1".to_string())
    );
    assert!(st.is_empty());
    assert_eq!(st.stored_events(), 0);
    assert_eq!(nfa.next_deadline(&st), None);
}

// ------------------------------------------------------------------- skips

fn skip_pat(skip: Skip) -> PatternDef {
    // Docs, "After Match Skip Strategy": b+ c over b1 b2 b3 c. The
    // documented tables hold for a greedy b+ (as in Flink's
    // AfterMatchSkipITCase#testSkipToLastWithOneOrMore-style cases).
    let mut d = def(vec![
        greedy(q("b", Relaxed, Quantifier::one_or_more())),
        step("c", Relaxed),
    ]);
    d.within = Some(100);
    d.skip = skip;
    d
}

#[test]
fn skip_strategies_documented_table() {
    let bits = by_prefix(&["b", "c"]);
    let input = [(1, "b1"), (2, "b2"), (3, "b3"), (4, "c")];
    // A match waits while a partial match that started earlier lives (here
    // b1 b2 b3 skipping c, until it times out), as in Flink.
    let m = |s: Skip| matches(&run_at(&skip_pat(s), &bits, &input, Some(1000)));
    assert_eq!(m(Skip::NoSkip), set(&["b1 b2 b3 c", "b2 b3 c", "b3 c"]));
    assert_eq!(m(Skip::ToNext), set(&["b1 b2 b3 c", "b2 b3 c", "b3 c"]));
    assert_eq!(m(Skip::PastLastEvent), set(&["b1 b2 b3 c"]));
    assert_eq!(
        m(Skip::ToFirst("b".into())),
        set(&["b1 b2 b3 c", "b2 b3 c", "b3 c"])
    );
    assert_eq!(m(Skip::ToLast("b".into())), set(&["b1 b2 b3 c", "b3 c"]));
}

#[test]
fn skip_flink_cases() {
    // AfterMatchSkipITCase#testSkipPastLast: a{3}.
    let mut d = def(vec![q("start", Relaxed, Quantifier::times(3))]);
    d.skip = Skip::PastLastEvent;
    let out = run(&d, by_prefix(&["a"]), &["a1", "a2", "a3", "a4", "a5", "a6"]);
    assert_eq!(matches(&out), set(&["a1 a2 a3", "a4 a5 a6"]));

    // #testSkipToFirst / #testSkipToLast: a{2} next b{2} over ab1..ab7
    // (every event satisfies both conditions).
    let both = |_: &str| Bits {
        steps: 0b11,
        until: 0,
    };
    let mut d = def(vec![
        q("start", Relaxed, Quantifier::times(2)),
        q("end", Strict, Quantifier::times(2)),
    ]);
    d.skip = Skip::ToFirst("end".into());
    let out = run(&d, both, &["ab1", "ab2", "ab3", "ab4", "ab5", "ab6"]);
    assert_eq!(matches(&out), set(&["ab1 ab2 ab3 ab4", "ab3 ab4 ab5 ab6"]));
    d.skip = Skip::ToLast("end".into());
    let out = run(&d, both, &["ab1", "ab2", "ab3", "ab4", "ab5", "ab6", "ab7"]);
    assert_eq!(matches(&out), set(&["ab1 ab2 ab3 ab4", "ab4 ab5 ab6 ab7"]));

    // #testSkipToNextWithFollowedByAny / #testNoSkipWithFollowedByAny.
    let bits = by_prefix(&["a", "b"]);
    let mut d = def(vec![step("start", Relaxed), step("end", Any)]);
    d.within = Some(100);
    assert_eq!(
        matches(&run(&d, &bits, &["a1", "b1", "a2", "b2"])),
        set(&["a1 b1", "a1 b2", "a2 b2"])
    );
    d.skip = Skip::ToNext;
    assert_eq!(
        matches(&run(&d, &bits, &["a1", "b1", "a2", "b2"])),
        set(&["a1 b1", "a2 b2"])
    );

    // #testSkipToNextWithQuantifierAtTheEnd: a next b+.
    let mut d = def(vec![
        step("start", Relaxed),
        q("end", Strict, Quantifier::one_or_more()),
    ]);
    d.within = Some(100);
    d.skip = Skip::ToNext;
    assert_eq!(
        matches(&run(&d, &bits, &["a1", "b1", "b2", "b3"])),
        set(&["a1 b1"])
    );

    // #testSkipPastLast2: a any b any c followedBy d; d1, d2 share a
    // timestamp.
    let bits = |l: &str| by_prefix(&["a", "b", "c", "d"])(l);
    let mut d = def(vec![
        step("a", Relaxed),
        step("b", Any),
        step("c", Any),
        step("d", Relaxed),
    ]);
    d.skip = Skip::PastLastEvent;
    let ev = [
        (1, "a1"),
        (2, "a2"),
        (3, "b1"),
        (4, "b2"),
        (5, "c1"),
        (6, "c2"),
        (7, "d1"),
        (7, "d2"),
    ];
    assert_eq!(matches(&run_at(&d, bits, &ev, None)), set(&["a1 b1 c1 d1"]));

    // #testSkipPastLast3: a next b over a1 c a2 b2.
    let mut d = def(vec![step("a", Relaxed), step("b", Strict)]);
    d.skip = Skip::PastLastEvent;
    assert_eq!(
        matches(&run(&d, by_prefix(&["a", "b"]), &["a1", "c", "a2", "b2"])),
        set(&["a2 b2"])
    );
}

#[test]
fn skip_holds_matches_behind_earlier_partial_matches() {
    // With a skip strategy a match waits while a partial match that started
    // earlier is alive (Flink's completedMatches), then prunes it if due.
    let bits = by_prefix(&["a", "b", "c"]);
    let mut d = def(vec![step("a", Relaxed), step("b", Any), step("c", Relaxed)]);
    d.within = Some(100);
    d.skip = Skip::PastLastEvent;
    let nfa = d.compile().unwrap();
    let mut st = nfa.key_state();
    let mut out = Vec::new();
    for (ts, l) in [(1, "a1"), (2, "a2"), (3, "b1"), (4, "c1")] {
        nfa.advance(&mut st, ts, l.to_string(), bits(l), &NO_LIMITS, &mut out);
    }
    // a1 b1 c1 completes first in start order; a2 b1 c1 is pruned.
    assert_eq!(matches(&out), set(&["a1 b1 c1"]));
}

// ------------------------------------------------------------ caps, errors

#[test]
fn per_key_cap_refuses_new_starts_only() {
    let bits = by_prefix(&["a", "b"]);
    let mut d = def(vec![step("a", Relaxed), step("b", Any)]);
    d.within = Some(1000);
    let nfa = d.compile().unwrap();
    let mut st = nfa.key_state();
    let mut out = Vec::new();
    let limits = Limits {
        max_partials: 2,
        allow_starts: true,
    };
    let mut refused = 0;
    for (ts, l) in [(1, "a1"), (2, "a2"), (3, "a3"), (4, "a4"), (5, "b1")] {
        refused += nfa.advance(&mut st, ts, l.to_string(), bits(l), &limits, &mut out);
    }
    assert_eq!(refused, 2, "a3 and a4 were refused");
    assert_eq!(
        matches(&out),
        set(&["a1 b1", "a2 b1"]),
        "existing partial matches continue"
    );
    let closed = Limits {
        max_partials: 100,
        allow_starts: false,
    };
    assert_eq!(
        nfa.advance(&mut st, 6, "a5".to_string(), bits("a5"), &closed, &mut out),
        1
    );
    assert_eq!(st.partials(), 2);
}

#[test]
fn compile_refusals_name_the_item() {
    let key = |d: PatternDef| d.compile().err().map(|e| e.key);
    let base = || def(vec![step("a", Relaxed), step("b", Relaxed)]);
    assert_eq!(key(def(vec![])), Some("steps".into()));
    let mut d = base();
    d.steps[1].after = NotRelaxed;
    assert_eq!(key(d.clone()), Some("within".into()));
    d.within = Some(10);
    assert_eq!(key(d), None);
    let mut d = base();
    d.steps[1].after = NotStrict;
    assert_eq!(key(d), Some("steps[1].after".into()));
    let mut d = base();
    d.steps[0].after = NotRelaxed;
    assert_eq!(key(d), Some("steps[0].after".into()));
    let mut d = def(vec![
        step("a", Relaxed),
        step("n", NotRelaxed),
        step("b", Relaxed),
    ]);
    d.steps[1].quantifier.optional = true;
    assert_eq!(key(d), Some("steps[1].quantifier".into()));
    let mut d = base();
    d.steps[1].quantifier = Quantifier::one_or_more();
    assert_eq!(key(d.clone()), Some("steps[1].quantifier.max".into()));
    d.steps[1].until = true;
    assert_eq!(key(d), None);
    let mut d = base();
    d.steps[1].until = true;
    assert_eq!(key(d), Some("steps[1].until".into()));
    let mut d = base();
    d.skip = Skip::ToFirst("zz".into());
    assert_eq!(key(d), Some("skip".into()));
    let mut d = base();
    d.steps[1].quantifier.greedy = true;
    assert_eq!(key(d), Some("steps[1].quantifier.greedy".into()));
    let d = def((0..33).map(|i| step(&format!("s{i}"), Relaxed)).collect());
    assert_eq!(key(d), Some("steps".into()));
    let mut d = base();
    d.steps[1].name = "a".into();
    assert_eq!(key(d), Some("steps[1].name".into()));
    let mut d = base();
    d.steps[1].quantifier = Quantifier::times(5000);
    assert_eq!(key(d), Some("steps[1].quantifier".into()));
    let e = base();
    let mut e = e;
    e.within = Some(0);
    assert_eq!(
        e.compile().err().map(|e| e.to_string()),
        Some("within: must be a positive number of milliseconds".into())
    );
}

// --------------------------------------------------- migration, snapshots

#[test]
fn migrate_keeps_partials_whose_steps_remain() {
    let bits = by_prefix(&["a", "b", "c"]);
    let mut old = def(vec![
        step("a", Relaxed),
        step("b", Relaxed),
        step("c", Relaxed),
    ]);
    old.within = Some(100);
    let from = old.compile().unwrap();
    let mut st = from.key_state();
    let mut out = Vec::new();
    for (ts, l) in [(1, "a1"), (2, "a2"), (3, "b1")] {
        from.advance(&mut st, ts, l.to_string(), bits(l), &NO_LIMITS, &mut out);
    }
    assert_eq!(st.partials(), 2);

    // A new version adds a step d at the end: both partials carry over.
    let mut new = old.clone();
    new.steps.push(step("d", Relaxed));
    let to = new.compile().unwrap();
    let (mut st2, dropped) = to.migrate(&from, st.clone());
    assert_eq!((dropped, st2.partials()), (0, 2));
    let bits4 = by_prefix(&["a", "b", "c", "d"]);
    for (ts, l) in [(4, "c1"), (5, "d1")] {
        to.advance(&mut st2, ts, l.to_string(), bits4(l), &NO_LIMITS, &mut out);
    }
    assert_eq!(matches(&out), set(&["a1 b1 c1 d1", "a2 b1 c1 d1"]));

    // A version without step b drops both partials (they hold a b event and
    // sit in c).
    let mut gone = old.clone();
    gone.steps.remove(1);
    let to = gone.compile().unwrap();
    let (st3, dropped) = to.migrate(&from, st);
    assert_eq!((dropped, st3.partials()), (2, 0));
    assert_eq!(st3.stored_events(), 0);
}

#[test]
fn snapshot_round_trip_mid_stream() {
    let bits = by_prefix(&["a", "b", "c"]);
    let mut d = def(vec![
        step("a", Relaxed),
        q("b", Any, Quantifier::range(1, 2)),
        step("c", Relaxed),
    ]);
    d.within = Some(50);
    d.skip = Skip::ToNext;
    let nfa = d.compile().unwrap();
    let events: Vec<(i64, String)> = ["a1", "b1", "a2", "x", "b2", "c1", "a3", "b3", "c2"]
        .iter()
        .enumerate()
        .map(|(i, l)| (i as i64 * 7, l.to_string()))
        .collect();
    let mut st = nfa.key_state();
    let mut head = Vec::new();
    for (ts, l) in &events[..5] {
        nfa.advance(&mut st, *ts, l.clone(), bits(l), &NO_LIMITS, &mut head);
    }
    let bytes = postcard::to_allocvec(&st).unwrap();
    let mut restored: KeyState<String> = postcard::from_bytes(&bytes).unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (ts, l) in &events[5..] {
        nfa.advance(&mut st, *ts, l.clone(), bits(l), &NO_LIMITS, &mut a);
        nfa.advance(&mut restored, *ts, l.clone(), bits(l), &NO_LIMITS, &mut b);
    }
    nfa.advance_time(&mut st, 1000, &mut a);
    nfa.advance_time(&mut restored, 1000, &mut b);
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

// ----------------------------------------------------------------- property

#[test]
fn deterministic_and_keys_independent() {
    let mut d = def(vec![
        step("a", Relaxed),
        q("b", Any, Quantifier::range(1, 3)),
        step("n", NotRelaxed),
        step("c", Relaxed),
    ]);
    d.within = Some(40);
    let nfa = d.compile().unwrap();
    for seed in 0..20 {
        let mut rng = Rng::new(seed);
        let events: Vec<(usize, i64, String, Bits)> = (0..200)
            .map(|i| {
                let key = rng.below(3) as usize;
                let bits = Bits {
                    steps: rng.below(16) as u32 & rng.below(16) as u32,
                    until: 0,
                };
                (key, i as i64 * 3, format!("e{i}"), bits)
            })
            .collect();
        // All keys interleaved in one pass...
        let mut states: Vec<KeyState<String>> = (0..3).map(|_| nfa.key_state()).collect();
        let mut outs: Vec<Vec<Outcome<String>>> = vec![Vec::new(); 3];
        for (k, ts, l, b) in &events {
            nfa.advance(
                &mut states[*k],
                *ts,
                l.clone(),
                *b,
                &NO_LIMITS,
                &mut outs[*k],
            );
        }
        for (k, st) in states.iter_mut().enumerate() {
            nfa.advance_time(st, 10_000, &mut outs[k]);
            assert!(st.is_empty());
            assert_eq!(st.stored_events(), 0);
        }
        // ...equal each key fed alone, twice.
        for (k, expected) in outs.iter().enumerate() {
            for _ in 0..2 {
                let mut st = nfa.key_state();
                let mut out = Vec::new();
                for (_, ts, l, b) in events.iter().filter(|e| e.0 == k) {
                    nfa.advance(&mut st, *ts, l.clone(), *b, &NO_LIMITS, &mut out);
                }
                nfa.advance_time(&mut st, 10_000, &mut out);
                assert_eq!(&out, expected, "seed {seed} key {k}");
            }
        }
    }
}
