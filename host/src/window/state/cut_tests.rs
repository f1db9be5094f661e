//! Property tests of snapshot and restore on random streams, for each
//! window kind:
//!
//! - **cut points**: a run snapshotted at a random step, written with
//!   postcard (or JSON), restored into a fresh operator and continued
//!   publishes exactly what the uninterrupted run publishes from that step
//!   on — results and late events, in order;
//! - **key groups**: the same snapshot restored into several operators,
//!   each owning a share of the key groups and fed only the events of its
//!   own groups, publishes per group exactly what one operator fed
//!   everything does.
//!
//! Streams are a few hundred events with out-of-order and late ones, early
//! firings (`on_tick(.., true)`) and idle watermark jumps interleaved; the
//! watermark is computed here as the engine would (newest timestamp minus a
//! bound, moved on every event) and is engine state, carried over a cut.

use std::collections::BTreeMap;

use super::*;
use crate::event::{Event, Value};
use crate::window::operator::{Ctx, Emitted, ResultKind, WindowOperator};
use crate::window::prop_tests::Rng;
use crate::window::session::Sessions;
use crate::window::sliding::Sliding;
use crate::window::tumbling::Tumbling;
use crate::window::{WindowConfig, WindowKind, WindowStats};

const T0: i64 = 1_700_000_000_000;

const AGGS: [&str; 12] = [
    "count",
    "sum(properties.n)",
    "avg(properties.n)",
    "min(properties.n)",
    "max(properties.n)",
    "stddev(properties.n)",
    "first(properties.n)",
    "last(properties.n)",
    "distinct(distinct_id)",
    "p95(properties.n)",
    "ratio(name:equals:buy)",
    "rate",
];

/// One input to an operator, as the engine would give it.
#[derive(Debug, Clone)]
enum Step {
    Event(Event),
    /// The watermark jumps ahead by this much (an idle advance).
    Advance(i64),
    /// Wall time passed; `true` when an early firing is due.
    Tick(bool),
    /// The input ended: the watermark goes to the end of time.
    Finish,
}

/// The engine's part: the watermark and the arrival counter.
#[derive(Debug, Clone)]
struct Drive {
    bound: i64,
    watermark: i64,
    arrival: u64,
}

/// An operator with the key groups it owns and what it published.
struct Owner {
    op: Box<dyn WindowOperator>,
    groups: KeyGroupSet,
    out: Vec<Emitted>,
    stats: WindowStats,
}

impl Owner {
    fn new(op: Box<dyn WindowOperator>, groups: KeyGroupSet) -> Owner {
        Owner {
            op,
            groups,
            out: Vec::new(),
            stats: WindowStats::default(),
        }
    }

    fn with<R>(
        &mut self,
        spec: &WindowSpec,
        f: impl FnOnce(&mut dyn WindowOperator, &mut Ctx<'_>) -> R,
    ) -> R {
        let schema = spec.schema(0);
        let mut ctx = Ctx {
            spec,
            schema: &schema,
            out: &mut self.out,
            stats: &mut self.stats,
            producer: 0,
        };
        f(self.op.as_mut(), &mut ctx)
    }
}

/// Run one step on every owner: an event only on the owner of its key
/// group, everything else on all.
fn step(spec: &WindowSpec, owners: &mut [Owner], drive: &mut Drive, step: &Step) {
    let watermark_to = |owners: &mut [Owner], drive: &mut Drive, wm: i64| {
        if wm > drive.watermark {
            drive.watermark = wm;
            for o in owners.iter_mut() {
                o.with(spec, |op, ctx| op.on_watermark(ctx, wm));
            }
        }
    };
    match step {
        Step::Event(ev) => {
            let key = spec.grouping.key(ev);
            let kg = key_group(&key);
            let (ts, arrival, wm) = (ev.timestamp, drive.arrival, drive.watermark);
            for o in owners.iter_mut().filter(|o| o.groups.contains(kg)) {
                let key = key.clone();
                o.with(spec, |op, ctx| op.on_event(ctx, ev, ts, key, arrival, wm));
            }
            drive.arrival += 1;
            watermark_to(owners, drive, ts.saturating_sub(drive.bound));
        }
        Step::Advance(by) if drive.watermark > i64::MIN => {
            let wm = drive.watermark.saturating_add(*by);
            watermark_to(owners, drive, wm);
        }
        Step::Advance(_) => {}
        Step::Tick(early) => {
            for o in owners.iter_mut() {
                o.with(spec, |op, ctx| op.on_tick(ctx, 0, *early));
            }
        }
        Step::Finish => watermark_to(owners, drive, i64::MAX),
    }
}

/// A random window definition of kind `which` (0 tumbling, 1 sliding, 2
/// session) and the stream to run through it.
struct Case {
    spec: WindowSpec,
    lateness: i64,
    steps: Vec<Step>,
    bound: i64,
}

impl Case {
    fn random(which: u64, seed: u64, max_groups: Option<usize>) -> Case {
        let mut rng = Rng::new(seed * 3 + which);
        let kind = match which {
            0 => WindowKind::Tumbling {
                size_ms: rng.pick(&[500, 2_000, 10_000]),
            },
            1 => {
                let slide = rng.pick(&[250, 1_000]);
                WindowKind::Sliding {
                    size_ms: slide * rng.pick(&[1, 2, 4]),
                    slide_ms: slide,
                }
            }
            _ => WindowKind::Session {
                gap_ms: rng.pick(&[300, 1_500]),
                max_duration_ms: rng.pick(&[None, Some(2_000), Some(6_000)]),
            },
        };
        let lateness = rng.pick(&[0, 1_000, 5_000]);
        let bound = rng.pick(&[0, 300, 2_000]);
        let mut config = WindowConfig::new("w", kind, &AGGS);
        config.group_by = vec!["properties.page".into()];
        config.time.allowed_lateness_ms = lateness;
        config.max_groups = max_groups.unwrap_or_else(|| rng.pick(&[3, 10_000]));
        let spec = WindowSpec::compile(&config).unwrap_or_else(|e| panic!("{e}"));
        let n = 60 + rng.below(200) as usize;
        let steps = stream(&mut rng, n, bound + lateness);
        Case {
            spec,
            lateness,
            steps,
            bound,
        }
    }

    fn operator(&self) -> Box<dyn WindowOperator> {
        match self.spec.kind {
            WindowKind::Tumbling { size_ms } => Box::new(Tumbling::new(size_ms, self.lateness)),
            WindowKind::Sliding { size_ms, slide_ms } => {
                Box::new(Sliding::new(size_ms, slide_ms, self.lateness))
            }
            WindowKind::Session {
                gap_ms,
                max_duration_ms,
            } => Box::new(Sessions::new(gap_ms, max_duration_ms, self.lateness)),
        }
    }

    fn drive(&self) -> Drive {
        Drive {
            bound: self.bound,
            watermark: i64::MIN,
            arrival: 0,
        }
    }
}

/// `n` events, mostly in order, some out of order within `late` (which
/// makes corrections) and some far beyond it (late events), with ticks and
/// idle jumps between them.
fn stream(rng: &mut Rng, n: usize, late: i64) -> Vec<Step> {
    let step_ms = rng.pick(&[20, 100, 400]);
    let pages = rng.pick(&[1, 4, 20]);
    let mut cursor = T0;
    let mut steps = Vec::new();
    for i in 0..n {
        cursor += rng.upto(2 * step_ms);
        let r = rng.unit();
        let delay = if r < 0.75 {
            rng.upto(step_ms)
        } else if r < 0.93 {
            rng.upto(late + step_ms)
        } else {
            rng.upto(4 * late + 20 * step_ms)
        };
        let mut properties = Vec::new();
        if rng.unit() < 0.95 {
            let page = format!("/p{}", rng.below(pages));
            properties.push(("page".into(), Value::Str(page.into())));
        }
        match rng.below(5) {
            0 => {}
            1 => properties.push((
                "n".into(),
                Value::Float((rng.upto(20_000) - 1_000) as f64 / 100.0),
            )),
            _ => properties.push(("n".into(), Value::Int(rng.upto(1_000)))),
        }
        steps.push(Step::Event(Event {
            id: format!("e{i}").into(),
            name: if rng.below(5) == 0 { "buy" } else { "view" }.into(),
            timestamp: cursor - delay,
            distinct_id: format!("u{}", rng.below(30)).into(),
            session_id: None,
            properties,
        }));
        let r = rng.unit();
        if r < 0.08 {
            steps.push(Step::Tick(true));
        } else if r < 0.10 {
            steps.push(Step::Tick(false));
        } else if r < 0.115 {
            steps.push(Step::Advance(rng.upto(3 * late + 10 * step_ms)));
        }
    }
    steps.push(Step::Finish);
    steps
}

/// A snapshot taken before step `at`, with what had been published and
/// the engine's part at that point.
struct Cut {
    at: usize,
    bytes: Vec<u8>,
    published: usize,
    drive: Drive,
}

/// Run `case` uninterrupted by one owner of every group, snapshotting
/// before each step in `cuts`.
fn run_whole(case: &Case, cuts: &[usize]) -> (Vec<Emitted>, Vec<Cut>) {
    let mut owners = [Owner::new(case.operator(), KeyGroupSet::all())];
    let mut drive = case.drive();
    let mut snaps = Vec::new();
    for i in 0..=case.steps.len() {
        if cuts.contains(&i) {
            snaps.push(Cut {
                at: i,
                bytes: postcard::to_stdvec(&owners[0].op.snapshot()).unwrap(),
                published: owners[0].out.len(),
                drive: drive.clone(),
            });
        }
        if let Some(s) = case.steps.get(i) {
            step(&case.spec, &mut owners, &mut drive, s);
        }
    }
    let [whole] = owners;
    (whole.out, snaps)
}

/// Restore `state` into one fresh operator per share and run the rest of
/// the stream; what each published.
fn resume(
    case: &Case,
    at: usize,
    drive: &Drive,
    state: &OperatorState,
    shares: &[KeyGroupSet],
) -> Vec<Owner> {
    let mut owners: Vec<Owner> = shares
        .iter()
        .map(|g| {
            let mut op = case.operator();
            op.restore(&case.spec, state.clone(), g)
                .unwrap_or_else(|e| panic!("restore: {e}"));
            Owner::new(op, *g)
        })
        .collect();
    let mut drive = drive.clone();
    for s in &case.steps[at..] {
        step(&case.spec, &mut owners, &mut drive, s);
    }
    owners
}

/// Fail at the first difference, naming it (whole vectors are too long to
/// read in a failure).
fn assert_same_output(got: &[Emitted], want: &[Emitted], what: &str) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i].to_json() != want[i].to_json())
    {
        panic!(
            "{what}: output {i} differs:\n  got  {:?}\n  want {:?}",
            got[i], want[i]
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: number of outputs");
}

/// What the features the tests are meant to exercise occurred, over all
/// cases of a kind.
#[derive(Default, Debug)]
struct Seen {
    early: usize,
    corrections: usize,
    late: usize,
    replaces: usize,
    overflow: usize,
}

impl Seen {
    fn count(&mut self, out: &[Emitted]) {
        for e in out {
            match e {
                Emitted::Result(r) => {
                    let payload = r.to_json();
                    match r.kind {
                        ResultKind::Early => self.early += 1,
                        ResultKind::Correction => self.corrections += 1,
                        ResultKind::Final => {}
                    }
                    if payload.get("replaces").is_some() {
                        self.replaces += 1;
                    }
                    if payload["group"]["properties.page"] == "__overflow__" {
                        self.overflow += 1;
                    }
                }
                Emitted::Late(_) => self.late += 1,
            }
        }
    }
}

const CASES: u64 = 150;

fn cut_points(which: u64) -> Seen {
    let mut seen = Seen::default();
    for seed in 0..CASES {
        let case = Case::random(which, seed, None);
        let mut rng = Rng::new(seed ^ 0xc0ffee);
        let len = case.steps.len();
        let mut cuts: Vec<usize> = (0..4).map(|_| rng.below(len as u64 + 1) as usize).collect();
        cuts.extend([0, len]);
        cuts.sort_unstable();
        cuts.dedup();
        let (whole, snaps) = run_whole(&case, &cuts);
        seen.count(&whole);
        for (n, cut) in snaps.iter().enumerate() {
            let mut state: OperatorState = postcard::from_bytes(&cut.bytes).unwrap();
            if n % 2 == 1 {
                // Every other cut goes through JSON as well.
                let text = serde_json::to_string(&state).unwrap();
                state = serde_json::from_str(&text).unwrap();
            }
            let all = [KeyGroupSet::all()];
            let restored = resume(&case, cut.at, &cut.drive, &state, &all)
                .pop()
                .unwrap();
            let what = format!(
                "{} seed {seed}, cut before step {} of {len}",
                case.spec.kind.name(),
                cut.at
            );
            assert_same_output(&restored.out, &whole[cut.published..], &what);
            // Restoring reproduces the state exactly: the same bytes.
            let mut again = case.operator();
            again
                .restore(&case.spec, state, &KeyGroupSet::all())
                .unwrap();
            assert_eq!(
                postcard::to_stdvec(&again.snapshot()).unwrap(),
                cut.bytes,
                "{what}: snapshot of the restored operator"
            );
        }
    }
    seen
}

#[test]
fn tumbling_continues_exactly_after_a_restore_at_any_step() {
    let seen = cut_points(0);
    assert!(
        seen.early > 0 && seen.corrections > 0 && seen.late > 0 && seen.overflow > 0,
        "{seen:?}"
    );
}

#[test]
fn sliding_continues_exactly_after_a_restore_at_any_step() {
    let seen = cut_points(1);
    assert!(
        seen.early > 0 && seen.corrections > 0 && seen.late > 0 && seen.overflow > 0,
        "{seen:?}"
    );
}

#[test]
fn sessions_continue_exactly_after_a_restore_at_any_step() {
    let seen = cut_points(2);
    assert!(
        seen.early > 0
            && seen.corrections > 0
            && seen.late > 0
            && seen.replaces > 0
            && seen.overflow > 0,
        "{seen:?}"
    );
}

/// Results per group, in the order published, and late events as a sorted
/// list: what owners of disjoint key groups must publish together.
fn per_group(out: &[Emitted]) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut late = Vec::new();
    for e in out {
        match e {
            Emitted::Result(r) => {
                let payload = r.to_json();
                groups
                    .entry(payload["group"].to_string())
                    .or_default()
                    .push(payload.to_string())
            }
            Emitted::Late(l) => late.push(l.to_json().to_string()),
        }
    }
    late.sort();
    (groups, late)
}

fn key_group_split(which: u64) {
    let mut groups_seen = 0;
    for seed in 0..CASES / 3 {
        // No cardinality cap: it counts groups per operator, so owners of
        // fewer groups would overflow later than one owner of all.
        let case = Case::random(which, seed + 1_000, Some(1_000_000));
        let mut rng = Rng::new(seed ^ 0x5eed);
        let len = case.steps.len();
        let at = if seed % 5 == 0 {
            0
        } else {
            rng.below(len as u64 + 1) as usize
        };
        let (whole, snaps) = run_whole(&case, &[at]);
        let [cut] = <[Cut; 1]>::try_from(snaps).unwrap_or_else(|_| panic!("one cut"));
        let state: OperatorState = postcard::from_bytes(&cut.bytes).unwrap();
        let owners = rng.pick(&[2, 3, 5]);
        let shares: Vec<KeyGroupSet> = (0..owners)
            .map(|i| KeyGroupSet::share(i, owners).unwrap())
            .collect();
        let parts = resume(&case, cut.at, &cut.drive, &state, &shares);
        let mut together = Vec::new();
        for p in &parts {
            // Each owner holds only its own key groups.
            let held = p.op.snapshot().key_groups();
            assert_eq!(
                held.union(p.groups),
                p.groups,
                "{held:?} beyond {:?}",
                p.groups
            );
            together.extend(p.out.iter().cloned());
        }
        let what = format!(
            "{} seed {seed}, split {owners} ways before step {at} of {len}",
            case.spec.kind.name()
        );
        let (want, want_late) = per_group(&whole[cut.published..]);
        let (got, got_late) = per_group(&together);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{what}: groups"
        );
        for (g, results) in &want {
            assert_eq!(got.get(g), Some(results), "{what}: group {g}");
        }
        assert_eq!(got_late, want_late, "{what}: late events");
        groups_seen += want.len();
    }
    assert!(groups_seen > 100, "only {groups_seen} groups published");
}

#[test]
fn tumbling_owners_of_key_groups_together_publish_what_one_would() {
    key_group_split(0);
}

#[test]
fn sliding_owners_of_key_groups_together_publish_what_one_would() {
    key_group_split(1);
}

#[test]
fn session_owners_of_key_groups_together_publish_what_one_would() {
    key_group_split(2);
}
