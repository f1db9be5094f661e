//! Sequence patterns (CEP) through the real binary.
//!
//! Golden cases (`tests/data/patterns/cases.toml`): one per semantic rule,
//! each a pattern, an input written as tokens (`b1` is an event named `b`
//! with id `b1`; `b1@2500` sets its time, in ms after the base; `b1:u2`
//! gives it key `u2` instead of `u`) and the expected matches and timeouts,
//! compared as sets of sets the way FlinkCEP's own tests compare them. Each
//! runs through `eddy pipe --results --clock virtual`.

use std::collections::BTreeMap;
use std::path::Path;

use eddy_tests::Sandbox;
use serde::Deserialize;
use serde_json::{Value, json};

/// Timestamps of a case start here.
const BASE: i64 = 1_700_000_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// Where the expectation comes from (Flink's docs or test, by name).
    source: String,
    /// The `[[patterns]]` body (keys and `steps = [...]`), name `p`.
    pattern: String,
    input: String,
    #[serde(default)]
    matches: Vec<String>,
    /// Compared only when given.
    timeouts: Option<Vec<String>>,
    /// Compared only when given.
    late: Option<Vec<String>>,
    #[serde(default)]
    refused: Option<u64>,
    /// `[time].out_of_orderness` (default "0s").
    out_of_orderness: Option<String>,
    /// Batch size (default 1000).
    batch_size: Option<usize>,
}

/// One input token as an event line.
fn token_event(i: usize, token: &str) -> Value {
    let (rest, at) = match token.split_once('@') {
        Some((r, t)) => (r, t.parse::<i64>().expect("@ms")),
        None => (token, i as i64 * 1000),
    };
    let (id, key) = rest.split_once(':').unwrap_or((rest, "u"));
    let name: String = id.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let num: i64 = id
        .trim_start_matches(|c: char| c.is_ascii_alphabetic())
        .parse()
        .unwrap_or(0);
    json!({"id": id, "name": name, "distinct_id": key, "timestamp": BASE + at,
           "properties": {"n": num, "price": num * 10}})
}

/// A pattern message as `"step:id step:id"` (steps in order, events in
/// order; `key| ` in front when not `u`; ` @end` after a timeout).
fn canonical(data: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(steps) = data["steps"].as_object() {
        for (step, events) in steps {
            for e in events.as_array().unwrap() {
                parts.push(format!("{step}:{}", e["id"].as_str().unwrap()));
            }
        }
    }
    let mut s = parts.join(" ");
    let key = data["key"].as_str().unwrap_or("?");
    if key != "u" {
        s = format!("{key}| {s}");
    }
    if data["kind"] == "timeout" {
        s.push_str(&format!(" @{}", data["end"].as_i64().unwrap() - BASE));
    }
    s
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// What one run of `eddy pipe` produced for pattern `p`.
#[derive(Debug, PartialEq)]
struct Outcome {
    matches: Vec<String>,
    timeouts: Vec<String>,
    late: Vec<String>,
    /// Every results line, in order (for the batch-size comparison).
    lines: Vec<Value>,
}

fn run_pipe(sandbox: &Sandbox, config: &Path, input: &str, batch_size: usize) -> (Outcome, Value) {
    let results = sandbox.path().join("results.ndjson");
    let run = sandbox.pipe(
        config,
        input,
        &[
            "--clock",
            "virtual",
            "--output",
            "/dev/null",
            "--batch-size",
            &batch_size.to_string(),
            "--results",
            results.to_str().unwrap(),
        ],
    );
    assert!(run.success, "eddy pipe failed: {}", run.stderr);
    let lines: Vec<Value> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut out = Outcome {
        matches: Vec::new(),
        timeouts: Vec::new(),
        late: Vec::new(),
        lines: lines.clone(),
    };
    for l in &lines {
        let d = &l["data"];
        match l["channel"].as_str().unwrap() {
            "late" if d.get("pattern").is_some() => {
                out.late.push(d["event"]["id"].as_str().unwrap().to_owned());
            }
            c if c.starts_with("patterns/") => match d["kind"].as_str().unwrap() {
                "match" => out.matches.push(canonical(d)),
                "timeout" => out.timeouts.push(canonical(d)),
                k => panic!("unexpected kind {k}"),
            },
            _ => {}
        }
    }
    out.matches = sorted(out.matches);
    out.timeouts = sorted(out.timeouts);
    out.late = sorted(out.late);
    (out, run.summary)
}

fn case_config(sandbox: &Sandbox, case: &Case) -> std::path::PathBuf {
    sandbox.config(&format!(
        "[time]\nout_of_orderness = {:?}\n\n[[patterns]]\nname = \"p\"\n{}\n",
        case.out_of_orderness.as_deref().unwrap_or("0s"),
        case.pattern
    ))
}

fn case_input(case: &Case) -> String {
    case.input
        .split_whitespace()
        .enumerate()
        .map(|(i, t)| token_event(i, t).to_string() + "\n")
        .collect()
}

fn load_cases() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/patterns/cases.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let cases: Cases = toml::from_str(&text).unwrap();
    cases.case
}

#[test]
fn golden_cases_match_flink_cep_semantics() {
    let cases = load_cases();
    assert!(cases.len() >= 25, "golden cases missing");
    let sandbox = Sandbox::new();
    let mut failures = Vec::new();
    for case in &cases {
        let config = case_config(&sandbox, case);
        let (got, summary) = run_pipe(
            &sandbox,
            &config,
            &case_input(case),
            case.batch_size.unwrap_or(1000),
        );
        let want_m = sorted(case.matches.clone());
        let want_t = case
            .timeouts
            .clone()
            .map_or_else(|| got.timeouts.clone(), sorted);
        let want_l = case.late.clone().map_or_else(|| got.late.clone(), sorted);
        if got.matches != want_m || got.timeouts != want_t || got.late != want_l {
            failures.push(format!(
                "{} ({}):\n  input    {}\n  matches  want {want_m:?}\n           got  {:?}\n  timeouts want {want_t:?}\n           got  {:?}\n  late     want {want_l:?}\n           got  {:?}",
                case.name, case.source, case.input, got.matches, got.timeouts, got.late
            ));
        }
        if let Some(refused) = case.refused {
            let _ = summary;
            let reported = refused_of(&sandbox, &config, case);
            if reported != refused {
                failures.push(format!(
                    "{}: refused want {refused}, got {reported}",
                    case.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The pattern's `refused` counter after the case's input, from the
/// `patterns` section of `eddy pipe`'s JSON summary.
fn refused_of(sandbox: &Sandbox, config: &Path, case: &Case) -> u64 {
    let run = sandbox.pipe(
        config,
        &case_input(case),
        &["--clock", "virtual", "--output", "/dev/null"],
    );
    assert!(run.success, "{}", run.stderr);
    run.summary["patterns"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "p"))
        .and_then(|p| p["refused"].as_u64())
        .unwrap_or_else(|| panic!("no pattern p in the summary: {}", run.summary))
}

/// A random multi-key workload: the results file is byte-for-byte the same
/// at batch sizes 1, 7 and 1000, and each key's matches are the same as when
/// that key's events run alone (keys do not affect each other).
#[test]
fn results_do_not_depend_on_batch_size_and_keys_do_not_affect_each_other() {
    let sandbox = Sandbox::new();
    let config = sandbox.config(
        r#"
[time]
out_of_orderness = "3s"

[[patterns]]
name = "p"
within = "20s"
steps = [
  { name = "a", names = ["a"] },
  { name = "b", after = "relaxed", names = ["b"], one_or_more = true, until = { names = ["x"] } },
  { name = "c", after = "any", names = ["c"] },
]

[[patterns]]
name = "q"
within = "15s"
skip = "skip_past_last_event"
steps = [
  { name = "a", names = ["a"], times = [2, 3], inner = "strict" },
  { name = "not_c", after = "not_relaxed", names = ["c"] },
]
"#,
    );
    let mut rng = XorShift(0x5eed_cafe);
    let mut lines = Vec::new();
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut t = 0i64;
    for i in 0..3000 {
        t += rng.below(700) as i64;
        // Out of order within the bound, sometimes.
        let ts = t - rng.below(2500) as i64;
        let key = format!("k{}", rng.below(12));
        let name = ["a", "b", "c", "x", "y"][rng.below(5) as usize];
        let line = json!({"id": format!("{name}{i}"), "name": name, "distinct_id": key,
                          "timestamp": BASE + ts, "properties": {}})
        .to_string()
            + "\n";
        by_key.entry(key).or_default().push(line.clone());
        lines.push(line);
        if i % 20 == 19 {
            // Virtual wall time keeps up with the events: ticks in between.
            lines.push(format!("{{\"$wall\": {}}}\n", BASE + t));
        }
    }
    let input: String = lines.concat();
    let (one, _) = run_pipe(&sandbox, &config, &input, 1);
    let (seven, _) = run_pipe(&sandbox, &config, &input, 7);
    let (thousand, _) = run_pipe(&sandbox, &config, &input, 1000);
    assert!(
        one.matches.len() > 50,
        "the workload should match: {}",
        one.matches.len()
    );
    assert!(!one.timeouts.is_empty(), "the workload should time out");
    let first_difference = |a: &[Value], b: &[Value]| {
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .map(|i| format!("line {}: {} vs {}", i + 1, a[i], b[i]))
            .unwrap_or_else(|| format!("lengths {} vs {}", a.len(), b.len()))
    };
    assert!(
        one.lines == seven.lines,
        "batch size 1 vs 7: {}",
        first_difference(&one.lines, &seven.lines)
    );
    assert!(
        one.lines == thousand.lines,
        "batch size 1 vs 1000: {}",
        first_difference(&one.lines, &thousand.lines)
    );
    // Per key alone. Events are at most 2.5 s out of order under a 3 s
    // bound, so none is late either way; without `$wall` lines idle
    // advance plays no part.
    let with_key = |o: &Outcome, key: &str| -> Vec<String> {
        o.lines
            .iter()
            .filter(|l| l["channel"] != "late" && l["data"]["key"] == key)
            .map(|l| l.to_string())
            .collect()
    };
    let (mixed, _) = run_pipe(
        &sandbox,
        &config,
        &lines
            .iter()
            .filter(|l| !l.contains("$wall"))
            .cloned()
            .collect::<String>(),
        1000,
    );
    for (key, key_lines) in &by_key {
        let (alone, _) = run_pipe(&sandbox, &config, &key_lines.concat(), 1000);
        let mut a = with_key(&alone, key);
        let mut m = with_key(&mixed, key);
        a.sort();
        m.sort();
        assert_eq!(a, m, "key {key}: alone vs among the others");
    }
}

/// A small fixed-seed generator (xorshift64*), so the workload is the same
/// on every run.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n
    }
}
