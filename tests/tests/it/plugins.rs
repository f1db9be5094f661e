//! Each example plugin's behaviour, through its real `.wasm` in the real
//! runtime (`eddy pipe`).

use eddy_tests::plugins::*;
use eddy_tests::*;
use serde_json::json;

fn one_stage(sb: &Sandbox, built: &str, name: &str, config: &str) -> std::path::PathBuf {
    sb.install(built, name);
    sb.config(&format!("[[stages]]\nplugin = \"{name}\"\n{config}"))
}

#[test]
fn bot_filter_drops_crawlers_and_keeps_people() {
    let sb = Sandbox::new();
    let cfg = one_stage(
        &sb,
        BOT_FILTER,
        "bot-filter",
        "[stages.config]\nextra_patterns = [\"acme-monitor\"]\n",
    );
    let input = [
        event_line("human", "u1", 1, json!({"$user_agent": CHROME_WIN})),
        event_line("google", "u2", 2, json!({"$user_agent": GOOGLEBOT})),
        event_line("curl", "u3", 3, json!({"$user_agent": "curl/8.4.0"})),
        event_line(
            "custom",
            "u4",
            4,
            json!({"$user_agent": "ACME-Monitor/1.0"}),
        ),
        event_line("no-ua", "u5", 5, json!({})),
        event_line("phone", "u6", 6, json!({"$user_agent": SAFARI_IPHONE})),
    ]
    .join("\n");
    let run = sb.pipe(&cfg, &input, &[]);
    assert!(run.success, "{}", run.stderr);
    let ids = run.ids();
    assert_eq!(ids, ["human", "no-ua", "phone"]);
    assert_eq!(run.stage("bot-filter")["dropped"], 3);
    assert_eq!(run.summary["dropped"], 3);
    assert_eq!(run.summary["events_in"], 6);
    assert_eq!(run.summary["events_out"], 3);
    assert_eq!(run.summary["failed_batches"], 0);
}

#[test]
fn bot_filter_rejects_unknown_config_keys() {
    let sb = Sandbox::new();
    let cfg = one_stage(
        &sb,
        BOT_FILTER,
        "bot-filter",
        "[stages.config]\npaterns = [\"x\"]\n",
    );
    let input = event_line("a", "u1", 1, json!({"$user_agent": GOOGLEBOT}));
    let run = sb.pipe(&cfg, &input, &[]);
    // Refused at start-up, with the stage and the key named.
    assert!(!run.success, "a misconfigured stage must not start");
    assert!(run.events.is_empty());
    assert!(
        run.stderr.contains("stage `bot-filter`") && run.stderr.contains("paterns"),
        "error should name the stage and the key: {}",
        run.stderr
    );
}

#[test]
fn ua_enricher_adds_browser_os_device_and_url_parts() {
    let sb = Sandbox::new();
    let cfg = one_stage(&sb, UA_ENRICHER, "ua-enricher", "");
    let input = [
        event_line(
            "win",
            "u1",
            1,
            json!({"$user_agent": CHROME_WIN, "$current_url": "https://shop.example:8443/cart/items?x=1#top"}),
        ),
        event_line(
            "phone",
            "u2",
            2,
            json!({"$user_agent": SAFARI_IPHONE, "$current_url": "http://m.example.org"}),
        ),
        event_line("bare", "u3", 3, json!({"plan": "pro"})),
    ]
    .join("\n");
    let run = sb.pipe(&cfg, &input, &[]);
    assert!(run.success, "{}", run.stderr);
    let [win, phone, bare] = &run.events[..] else {
        panic!("expected 3 events, got {:?}", run.events)
    };
    assert_eq!(win["properties"]["$browser"], "Chrome");
    assert_eq!(win["properties"]["$os"], "Windows");
    assert_eq!(win["properties"]["$device_type"], "Desktop");
    assert_eq!(win["properties"]["$host"], "shop.example:8443");
    assert_eq!(win["properties"]["$pathname"], "/cart/items");
    assert_eq!(phone["properties"]["$browser"], "Mobile Safari");
    assert_eq!(phone["properties"]["$os"], "iOS");
    assert_eq!(phone["properties"]["$device_type"], "Mobile");
    assert_eq!(phone["properties"]["$pathname"], "/");
    assert_eq!(bare["properties"], json!({"plan": "pro"}));
    assert!(win["properties"].get("$browser_version").is_none());
}

#[test]
fn pii_scrubber_hashes_emails_and_drops_ip() {
    let sb = Sandbox::new();
    let cfg = one_stage(
        &sb,
        PII_SCRUBBER,
        "pii-scrubber",
        "[stages.config]\nsalt = \"pepper\"\n",
    );
    let input = [
        event_line("a", "u1", 1, json!({"email": "ann@example.com", "$ip": "10.1.2.3", "note": "call 192.168.0.7 now", "plan": "pro"})),
        event_line("b", "u2", 2, json!({"email": "ann@example.com"})),
        event_line("c", "u3", 3, json!({"email": "bob@example.com"})),
    ]
    .join("\n");
    let run = sb.pipe(&cfg, &input, &[]);
    assert!(run.success, "{}", run.stderr);
    let p: Vec<&serde_json::Value> = run.events.iter().map(|e| &e["properties"]).collect();
    let hashed = p[0]["email"].as_str().unwrap();
    assert!(hashed.starts_with("sha256:"), "{hashed}");
    assert!(!hashed.contains("ann"));
    assert_eq!(p[1]["email"], hashed, "same input, same hash");
    assert_ne!(p[2]["email"], hashed, "different input, different hash");
    assert!(p[0].get("$ip").is_none(), "$ip is dropped: {}", p[0]);
    let note = p[0]["note"].as_str().unwrap();
    assert!(!note.contains("192.168.0.7"), "{note}");
    assert_eq!(p[0]["plan"], "pro");
}

#[test]
fn pii_scrubber_salt_changes_the_hash() {
    let hash_with = |salt: &str| {
        let sb = Sandbox::new();
        let cfg = one_stage(
            &sb,
            PII_SCRUBBER,
            "pii-scrubber",
            &format!("[stages.config]\nsalt = \"{salt}\"\n"),
        );
        let run = sb.pipe(
            &cfg,
            &event_line("a", "u1", 1, json!({"email": "ann@example.com"})),
            &[],
        );
        run.events[0]["properties"]["email"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_ne!(hash_with("one"), hash_with("two"));
}

#[test]
fn first_seen_marks_only_each_users_first_event() {
    let sb = Sandbox::new();
    let cfg = one_stage(&sb, FIRST_SEEN, "first-seen", "");
    let users = ["u1", "u2", "u1", "u3", "u2", "u1"];
    let input: Vec<String> = users
        .iter()
        .enumerate()
        .map(|(i, u)| event_line(&format!("e{i}"), u, i as i64, json!({})))
        .collect();
    // Batches of two: the memory must live across batches (in the host).
    let run = sb.pipe(&cfg, &input.join("\n"), &["--batch-size", "2"]);
    assert!(run.success, "{}", run.stderr);
    let marked: Vec<bool> = run
        .events
        .iter()
        .map(|e| e["properties"]["$is_first_seen"] == true)
        .collect();
    assert_eq!(marked, [true, true, false, true, false, false]);
    assert_eq!(run.plugin("first-seen")["state_keys"], 3);
}

#[test]
fn two_stages_of_one_plugin_keep_separate_state_unless_they_share_a_scope() {
    let sb = Sandbox::new();
    sb.install(FIRST_SEEN, "first-seen");
    let stages = |state: &str| {
        sb.config(&format!(
            "[[stages]]\nplugin = \"first-seen\"\nname = \"fs-a\"\n{state}\
             [stages.config]\nproperty = \"first_a\"\n\
             [[stages]]\nplugin = \"first-seen\"\nname = \"fs-b\"\n{state}\
             [stages.config]\nproperty = \"first_b\"\n"
        ))
    };
    let input: Vec<String> = ["u1", "u2", "u1"]
        .iter()
        .enumerate()
        .map(|(i, u)| event_line(&format!("e{i}"), u, i as i64, json!({})))
        .collect();
    let marks = |run: &PipeRun, property: &str| -> Vec<bool> {
        run.events
            .iter()
            .map(|e| e["properties"][property] == true)
            .collect()
    };

    // By default each stage remembers users in its own store: both mark
    // each user's first event.
    let run = sb.pipe(&stages(""), &input.join("\n"), &[]);
    assert!(run.success, "{}", run.stderr);
    assert_eq!(marks(&run, "first_a"), [true, true, false]);
    assert_eq!(marks(&run, "first_b"), [true, true, false]);
    assert_eq!(
        run.plugin("first-seen")["state_keys"],
        4,
        "two users, twice"
    );

    // With one scope, the second stage finds the users the first recorded.
    let run = sb.pipe(&stages("state = \"users\"\n"), &input.join("\n"), &[]);
    assert!(run.success, "{}", run.stderr);
    assert_eq!(marks(&run, "first_a"), [true, true, false]);
    assert_eq!(marks(&run, "first_b"), [false, false, false]);
    assert_eq!(run.plugin("first-seen")["state_keys"], 2);
}

#[test]
fn default_pipeline_runs_all_example_plugins_in_order() {
    let sb = Sandbox::new();
    for (built, name) in [
        (BOT_FILTER, "bot-filter"),
        (UA_ENRICHER, "ua-enricher"),
        (PII_SCRUBBER, "pii-scrubber"),
        (FIRST_SEEN, "first-seen"),
    ] {
        sb.install(built, name);
    }
    let input = [
        event_line(
            "a",
            "u1",
            1,
            json!({"$user_agent": CHROME_WIN, "email": "x@y.io", "$ip": "1.2.3.4"}),
        ),
        event_line("b", "bot", 2, json!({"$user_agent": GOOGLEBOT})),
    ]
    .join("\n");
    // No --config: the embedded default, pointed at our folder.
    let run = sb.pipe_with(None, input.as_bytes(), &[], &[]);
    assert!(run.success, "{}", run.stderr);
    let events = &run.events;
    assert_eq!(events.len(), 1, "the bot is filtered");
    let p = &events[0]["properties"];
    assert_eq!(p["$browser"], "Chrome");
    assert!(p["email"].as_str().unwrap().starts_with("sha256:"));
    assert!(p.get("$ip").is_none());
    assert_eq!(p["$is_first_seen"], true);
}
