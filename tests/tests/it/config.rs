//! Configuration errors reach the user as messages naming the key.

use eddy_tests::*;

fn pipe_with(sb: &Sandbox, body: &str) -> PipeRun {
    let cfg = sb.config(body);
    sb.pipe(&cfg, "", &[])
}

#[test]
fn unknown_and_invalid_keys_are_named() {
    let sb = Sandbox::new();
    for (body, needle) in [
        ("[runtime]\ndeadline = 5\n", "deadline"),
        ("[[stages]]\nplugin = \"x\"\ndeadlin_ms = 5\n", "deadlin_ms"),
        ("[runtime]\ndeadline_ms = 0\n", "runtime.deadline_ms"),
        (
            "[[stages]]\nplugin = \"x\"\non_failure = \"retry\"\n",
            "retry",
        ),
        ("[[stages]]\nplugin = \"../etc/passwd\"\n", "plugin"),
        (
            "[pipeline]\nbatch_size = \"${EDDY_TEST_SURELY_UNSET}\"\n",
            "EDDY_TEST_SURELY_UNSET",
        ),
    ] {
        let run = pipe_with(&sb, body);
        assert!(!run.success, "accepted: {body}");
        assert!(
            run.stderr.contains(needle),
            "error for {body:?} should mention {needle}: {}",
            run.stderr
        );
    }
}

#[test]
fn environment_interpolation_fills_values_and_defaults() {
    let sb = Sandbox::new();
    sb.install(eddy_tests::plugins::FIRST_SEEN, "first-seen");
    let cfg = sb.config(
        "[[stages]]\nplugin = \"first-seen\"\n[stages.config]\nproperty = \"${EDDY_TEST_PROP:-seen_first}\"\n",
    );
    let input = event_line("a", "u1", 1, serde_json::json!({}));
    let run = sb.pipe(&cfg, &input, &[]);
    assert!(run.success, "{}", run.stderr);
    assert_eq!(run.events[0]["properties"]["seen_first"], true);
}

#[test]
fn lines_that_are_not_events_are_counted_and_skipped() {
    let sb = Sandbox::new();
    sb.install(eddy_tests::plugins::PASS_THROUGH, "pass-through");
    let cfg = sb.config("[[stages]]\nplugin = \"pass-through\"\n");
    let mut input = event_line("a", "u1", 1, serde_json::json!({})).into_bytes();
    input.extend_from_slice(b"\n\xff\xfe not utf-8\n{\"name\": 1}\nnot json\n");
    input.extend_from_slice(event_line("b", "u1", 2, serde_json::json!({})).as_bytes());
    let run = sb.pipe_with(Some(&cfg), &input, &[], &[]);
    assert!(run.success, "{}", run.stderr);
    let ids = run.ids();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(run.summary["rejected_lines"], 3);
    let reported = run.stderr.lines().any(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
        v["message"] == "input line is not an event"
            && v["line"] == 2
            && v["error"]
                .as_str()
                .is_some_and(|e| e.contains("not valid UTF-8"))
    });
    assert!(reported, "line 2 reported: {}", run.stderr);
}
