//! Golden tests of the lifecycle, one rule each, on a virtual clock of
//! evaluations (times in minutes for readability).

use super::*;

const MIN: i64 = 60_000;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn sample(path: &str, value: f64, active: bool) -> Sample {
    Sample {
        labels: labels(&[("path", path)]),
        value,
        active,
        annotations: BTreeMap::new(),
    }
}

/// A rule and its state, evaluated at minute marks.
struct Rule {
    spec: RuleSpec,
    state: RuleState,
}

impl Rule {
    fn new(spec: RuleSpec) -> Self {
        Self {
            spec,
            state: RuleState::new(),
        }
    }

    /// Evaluate at minute `minute`; the transitions as (state, path label).
    fn eval(&mut self, minute: i64, samples: &[Sample]) -> Vec<AlertEvent> {
        let mut out = Vec::new();
        self.state
            .evaluate(&self.spec, minute * MIN, samples, &mut out);
        out
    }

    /// Evaluate and summarise transitions as (state, path).
    fn states(&mut self, minute: i64, samples: &[Sample]) -> Vec<(AlertState, String)> {
        self.eval(minute, samples)
            .into_iter()
            .map(|e| (e.state, e.labels.get("path").cloned().unwrap_or_default()))
            .collect()
    }
}

fn spec(for_min: i64) -> RuleSpec {
    let mut spec = RuleSpec::new("SlowPage");
    spec.for_ms = for_min * MIN;
    spec
}

use AlertState::{Firing, NoData as Nodata, Pending, Resolved};

fn cart(state: AlertState) -> Vec<(AlertState, String)> {
    vec![(state, "/cart".to_owned())]
}

#[test]
fn for_fires_only_after_the_hold() {
    let mut rule = Rule::new(spec(5));
    assert_eq!(rule.states(0, &[sample("/cart", 2.0, true)]), cart(Pending));
    for minute in 1..5 {
        assert!(rule.eval(minute, &[sample("/cart", 2.0, true)]).is_empty());
    }
    let fired = rule.eval(5, &[sample("/cart", 3.0, true)]);
    assert_eq!(fired.len(), 1);
    let e = &fired[0];
    assert_eq!(e.state, Firing);
    assert_eq!(e.active_at, 0);
    assert_eq!(e.fired_at, Some(5 * MIN));
    assert_eq!(e.starts_at, 5 * MIN);
    assert_eq!(e.ends_at, None);
    assert_eq!(e.value, 3.0);
    assert_eq!(e.rule, "SlowPage");
    assert_eq!(
        e.labels,
        labels(&[("alertname", "SlowPage"), ("path", "/cart")])
    );
    assert_eq!(e.fingerprint, fingerprint(&e.labels));
    // Still firing: no more transitions.
    assert!(rule.eval(6, &[sample("/cart", 3.0, true)]).is_empty());
}

#[test]
fn a_blip_shorter_than_for_never_fires() {
    let mut rule = Rule::new(spec(5));
    assert_eq!(rule.states(0, &[sample("/cart", 2.0, true)]), cart(Pending));
    assert!(rule.eval(1, &[sample("/cart", 2.0, true)]).is_empty());
    // Clears before `for`: dropped silently, no resolved notification.
    assert!(rule.eval(2, &[sample("/cart", 0.1, false)]).is_empty());
    assert!(rule.state.is_empty());
    // Comes back: a new pending episode, timed from its own start.
    let again = rule.eval(3, &[sample("/cart", 2.0, true)]);
    assert_eq!(again[0].state, Pending);
    assert_eq!(again[0].active_at, 3 * MIN);
    for minute in 4..8 {
        assert!(rule.eval(minute, &[sample("/cart", 2.0, true)]).is_empty());
    }
    assert_eq!(rule.states(8, &[sample("/cart", 2.0, true)]), cart(Firing));
}

#[test]
fn for_zero_fires_at_once() {
    let mut rule = Rule::new(spec(0));
    let events = rule.eval(0, &[sample("/cart", 2.0, true)]);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].state, Firing);
    assert_eq!(events[0].fired_at, Some(0));
}

#[test]
fn keep_firing_for_rides_out_a_brief_recovery() {
    let mut s = spec(0);
    s.keep_firing_for_ms = 3 * MIN;
    let mut rule = Rule::new(s);
    assert_eq!(rule.states(0, &[sample("/cart", 2.0, true)]), cart(Firing));
    // Two minutes of recovery, shorter than keep_firing_for: still firing.
    assert!(rule.eval(1, &[sample("/cart", 0.1, false)]).is_empty());
    assert!(rule.eval(2, &[sample("/cart", 0.1, false)]).is_empty());
    assert!(rule.eval(3, &[sample("/cart", 2.0, true)]).is_empty());
    // A real recovery resolves once clear for 3 minutes (4 → 7).
    for minute in 4..7 {
        assert!(rule.eval(minute, &[sample("/cart", 0.1, false)]).is_empty());
    }
    let resolved = rule.eval(7, &[sample("/cart", 0.1, false)]);
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].state, Resolved);
    assert_eq!(resolved[0].fired_at, Some(0));
    assert_eq!(resolved[0].resolved_at, Some(7 * MIN));
}

#[test]
fn one_instance_per_label_set_however_many_results() {
    let mut rule = Rule::new(spec(0));
    let events = rule.eval(
        0,
        &[
            sample("/cart", 1.0, true),
            sample("/cart", 9.0, false),
            sample("/home", 4.0, true),
            sample("/cart", 2.0, true),
        ],
    );
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].labels["path"], "/cart");
    assert_eq!(events[0].value, 2.0, "the last active value");
    assert_eq!(events[1].labels["path"], "/home");
    assert_eq!(rule.state.len(), 2);
    assert!(
        rule.eval(1, &[sample("/cart", 1.0, true), sample("/cart", 1.0, true)])
            .is_empty()
    );
    // The rule's own labels take part in identity and override the sample's.
    let mut s = spec(0);
    s.labels = labels(&[("severity", "page"), ("path", "/all")]);
    let mut rule = Rule::new(s);
    let events = rule.eval(0, &[sample("/cart", 1.0, true), sample("/home", 1.0, true)]);
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].labels,
        labels(&[
            ("alertname", "SlowPage"),
            ("path", "/all"),
            ("severity", "page")
        ])
    );
}

#[test]
fn a_firing_alert_resolves_and_can_fire_again() {
    let mut rule = Rule::new(spec(0));
    rule.eval(0, &[sample("/cart", 2.0, true)]);
    let resolved = rule.eval(1, &[sample("/cart", 0.5, false)]);
    assert_eq!(resolved.len(), 1);
    let r = &resolved[0];
    assert_eq!(r.state, Resolved);
    assert_eq!((r.starts_at, r.ends_at), (0, Some(MIN)));
    assert_eq!(r.value, 0.5);
    assert!(rule.eval(2, &[sample("/cart", 0.5, false)]).is_empty());
    let again = rule.eval(3, &[sample("/cart", 2.0, true)]);
    assert_eq!(again[0].state, Firing);
    assert_eq!(again[0].active_at, 3 * MIN);
    assert_eq!(again[0].resolved_at, None);
    assert_eq!(again[0].fingerprint, r.fingerprint);
}

fn no_data_rule(mode: NoDataMode, for_min: i64) -> Rule {
    let mut s = spec(for_min);
    s.no_data = mode;
    s.no_data_after_ms = 2 * MIN;
    Rule::new(s)
}

#[test]
fn no_data_ok_clears_after_the_silence() {
    let mut rule = no_data_rule(NoDataMode::Ok, 0);
    assert_eq!(rule.states(0, &[sample("/cart", 2.0, true)]), cart(Firing));
    assert!(rule.eval(1, &[sample("/cart", 2.0, true)]).is_empty());
    assert!(rule.eval(2, &[]).is_empty(), "1 minute of silence < 2");
    let resolved = rule.eval(3, &[]);
    assert_eq!(resolved[0].state, Resolved);
    assert_eq!(resolved[0].resolved_at, Some(3 * MIN));
    // A pending instance that goes silent is dropped silently.
    let mut rule = no_data_rule(NoDataMode::Ok, 10);
    assert_eq!(rule.states(0, &[sample("/cart", 2.0, true)]), cart(Pending));
    assert!(rule.eval(2, &[]).is_empty());
    assert!(rule.state.is_empty());
}

#[test]
fn no_data_keep_last_freezes_the_state() {
    let mut rule = no_data_rule(NoDataMode::KeepLast, 0);
    rule.eval(0, &[sample("/cart", 2.0, true)]);
    for minute in 1..30 {
        assert!(rule.eval(minute, &[]).is_empty());
    }
    assert_eq!(rule.state.alerts(&rule.spec)[0].state, Firing);
    assert_eq!(
        rule.states(30, &[sample("/cart", 0.1, false)]),
        cart(Resolved)
    );
}

#[test]
fn no_data_alerting_treats_silence_as_active() {
    let mut rule = no_data_rule(NoDataMode::Alerting, 3);
    assert_eq!(rule.states(0, &[sample("/cart", 2.0, true)]), cart(Pending));
    assert!(rule.eval(1, &[]).is_empty());
    assert!(rule.eval(2, &[]).is_empty(), "pending, 2 of 3 minutes");
    let fired = rule.eval(3, &[]);
    assert_eq!(fired[0].state, Firing);
    assert_eq!(fired[0].value, 2.0, "the last value");
}

#[test]
fn no_data_mode_nodata_is_a_separate_alert() {
    let mut rule = no_data_rule(NoDataMode::NoData, 0);
    let firing = rule.eval(0, &[sample("/cart", 2.0, true)]);
    assert!(rule.eval(1, &[]).is_empty());
    let events = rule.eval(2, &[]);
    assert_eq!(events.len(), 2);
    // The firing alert resolves ...
    assert_eq!(events[0].state, Resolved);
    assert_eq!(events[0].fingerprint, firing[0].fingerprint);
    // ... and the no-data alert starts, labelled alertstate="nodata".
    let nodata = &events[1];
    assert_eq!(nodata.state, Nodata);
    assert_eq!(nodata.labels[NO_DATA_LABEL], "nodata");
    assert_eq!(nodata.starts_at, 2 * MIN);
    assert_ne!(nodata.fingerprint, firing[0].fingerprint);
    assert_eq!(nodata.fingerprint, fingerprint(&nodata.labels));
    assert!(rule.eval(3, &[]).is_empty());
    // Data comes back (not alerting): the no-data alert resolves.
    let back = rule.eval(4, &[sample("/cart", 0.1, false)]);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].state, Resolved);
    assert_eq!(back[0].fingerprint, nodata.fingerprint);
    assert_eq!(back[0].ends_at, Some(4 * MIN));
    assert!(rule.state.is_empty());
    // And the rule alerts normally again.
    assert_eq!(rule.states(5, &[sample("/cart", 2.0, true)]), cart(Firing));
}

#[test]
fn the_instance_cap_refuses_and_counts_new_label_sets() {
    let mut s = spec(0);
    s.max_instances = 2;
    s.resolved_retention_ms = MIN;
    let mut rule = Rule::new(s);
    let three = [
        sample("/a", 1.0, true),
        sample("/b", 1.0, true),
        sample("/c", 1.0, true),
    ];
    assert_eq!(rule.eval(0, &three).len(), 2);
    assert_eq!(rule.state.refused(), 1);
    assert!(rule.eval(1, &three).is_empty());
    assert_eq!(rule.state.refused(), 2);
    // /a resolves; once its retention has passed, /c gets its place.
    let rest = [
        sample("/a", 0.0, false),
        sample("/b", 1.0, true),
        sample("/c", 1.0, true),
    ];
    assert_eq!(rule.states(2, &rest), vec![(Resolved, "/a".to_owned())]);
    assert!(rule.eval(3, &rest).is_empty(), "/a still retained");
    assert_eq!(rule.states(4, &rest), vec![(Firing, "/c".to_owned())]);
    assert_eq!(rule.state.refused(), 4);
}

#[test]
fn resolved_instances_are_kept_for_the_retention_then_forgotten() {
    let mut rule = Rule::new(spec(0));
    rule.eval(0, &[sample("/cart", 2.0, true)]);
    rule.eval(1, &[]);
    rule.eval(1, &[sample("/cart", 0.1, false)]);
    let alerts = rule.state.alerts(&rule.spec);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].state, Resolved);
    assert!(rule.eval(16, &[]).is_empty());
    assert_eq!(rule.state.len(), 1, "15 minutes after: still kept");
    let mut out = Vec::new();
    rule.state.evaluate(&rule.spec, 16 * MIN + 1, &[], &mut out);
    assert!(out.is_empty(), "forgetting is not a transition");
    assert!(rule.state.is_empty());
}

#[test]
fn annotations_are_templated_per_instance() {
    let mut s = spec(0);
    s.annotations = BTreeMap::from([
        (
            "summary".to_owned(),
            "{{ $labels.path }} is slow: {{ $value }}s".to_owned(),
        ),
        (
            "runbook".to_owned(),
            "https://wiki/{{$labels.alertname}}".to_owned(),
        ),
    ]);
    let mut rule = Rule::new(s);
    let events = rule.eval(0, &[sample("/cart", 2.5, true), sample("/home", 3.0, true)]);
    assert_eq!(events[0].annotations["summary"], "/cart is slow: 2.5s");
    assert_eq!(events[1].annotations["summary"], "/home is slow: 3s");
    assert_eq!(events[0].annotations["runbook"], "https://wiki/SlowPage");
    let resolved = rule.eval(1, &[sample("/cart", 0.25, false)]);
    assert_eq!(resolved[0].annotations["summary"], "/cart is slow: 0.25s");
}

#[test]
fn a_restored_state_goes_on_exactly_like_the_original() {
    let mut s = spec(2);
    s.keep_firing_for_ms = MIN;
    let inputs: Vec<Vec<Sample>> = (0..12)
        .map(|m| {
            vec![
                sample("/a", m as f64, m % 5 != 4),
                sample("/b", 1.0, m > 3 && m < 8),
            ]
        })
        .collect();
    let mut straight = Rule::new(s.clone());
    let expected: Vec<Vec<AlertEvent>> = (0..12)
        .map(|m| straight.eval(m, &inputs[m as usize]))
        .collect();
    let mut first = Rule::new(s.clone());
    for m in 0..6 {
        assert_eq!(first.eval(m, &inputs[m as usize]), expected[m as usize]);
    }
    let bytes = postcard::to_allocvec(&first.state).unwrap();
    let json = serde_json::to_string(&first.state).unwrap();
    let mut restored = Rule::new(s.clone());
    restored.state = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(restored.state, serde_json::from_str(&json).unwrap());
    for m in 6..12 {
        assert_eq!(restored.eval(m, &inputs[m as usize]), expected[m as usize]);
    }
    assert_eq!(restored.state, straight.state);
}

#[test]
fn the_fingerprint_is_alertmanagers() {
    // FNV-1a over name 0xff value 0xff, sorted by name: stable across
    // releases, and independent of insertion order.
    let a = labels(&[("alertname", "X"), ("path", "/cart")]);
    let b: BTreeMap<String, String> = a
        .iter()
        .rev()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(fingerprint(&a), fingerprint(&b));
    assert_eq!(fingerprint(&a).len(), 16);
    // The empty label set hashes to FNV-1a's offset basis.
    assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
}

#[test]
fn a_samples_annotations_are_set_over_the_rules_templated_ones() {
    let mut spec = spec(0);
    spec.annotations = labels(&[
        ("summary", "{{ $value }} on {{ $labels.path }}"),
        ("runbook", "r"),
    ]);
    let mut rule = Rule::new(spec);
    let mut s = sample("/cart", 2.5, true);
    s.annotations = labels(&[("runbook", "from the plugin"), ("baseline", "1.2")]);
    let fired = rule.eval(0, &[s]);
    assert_eq!(fired[0].state, Firing);
    assert_eq!(
        fired[0].annotations,
        labels(&[
            ("baseline", "1.2"),
            ("runbook", "from the plugin"),
            ("summary", "2.5 on /cart"),
        ])
    );
    // A later evaluation's annotations replace them (no transition).
    let mut s = sample("/cart", 3.0, true);
    s.annotations = labels(&[("baseline", "1.4")]);
    assert!(rule.eval(1, &[s]).is_empty());
    let now = rule.state.active(&rule.spec);
    assert_eq!(now[0].annotations["baseline"], "1.4");
    assert_eq!(now[0].annotations["runbook"], "r");
}
