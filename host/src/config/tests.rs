//! Unit tests of loading, interpolation and validation.

use super::*;
use serde_json::json;

fn no_env(_: &str) -> Option<String> {
    None
}

fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "eddy.toml", &no_env)
}

fn err(text: &str) -> ConfigError {
    parse(text).expect_err("config should be rejected")
}

fn stage(config: &str) -> String {
    format!("[[stages]]\nplugin = \"p\"\n{config}\n")
}

#[test]
fn default_config_parses() {
    let config = Config::parse(DEFAULT_CONFIG, EMBEDDED_ORIGIN, &no_env).unwrap();
    assert_eq!(config.plugins_dir, PathBuf::from("target/plugins"));
    assert_eq!(config.pipeline, PipelineConfig { batch_size: 1000 });
    assert_eq!(config.runtime, RuntimeConfig::default());
    let names: Vec<_> = config
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.plugin.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("bot-filter", "bot-filter"),
            ("ua-enricher", "ua-enricher"),
            ("pii-scrubber", "pii-scrubber"),
            ("first-seen", "first-seen")
        ]
    );
    assert!(
        config
            .stages
            .iter()
            .all(|s| s.on_failure == FailurePolicy::PassThrough)
    );
    assert!(
        config
            .stages
            .iter()
            .all(|s| s.deadline.is_none() && s.memory_limit_bytes.is_none())
    );
    assert_eq!(config.stages[2].config, json!({ "salt": "change-me" }));
    assert_eq!(config.stages[0].config, json!({}));
}

#[test]
fn default_runtime_values() {
    let r = RuntimeConfig::default();
    assert_eq!(r.deadline, Duration::from_millis(100));
    assert_eq!(r.memory_limit_bytes, 64 * 1024 * 1024);
    assert_eq!(r.compile_timeout, Duration::from_secs(30));
    assert_eq!(r.quarantine_after, 3);
    assert_eq!(r.quarantine_backoff, Duration::from_secs(1));
    assert_eq!(r.quarantine_backoff_max, Duration::from_secs(60));
    assert_eq!(r.probation_batches, 3);
    assert_eq!(r.reload_debounce, Duration::from_millis(50));
    assert_eq!(r.max_log_records_per_call, 100);
    assert_eq!(r.state_max_keys, 1_000_000);
    assert_eq!(r.state_max_value_bytes, 65_536);
}

#[test]
fn default_toml_sets_every_key() {
    // Users learn the keys from the default file: it must show them all.
    let table: toml::Table =
        toml::from_str(&interpolate(DEFAULT_CONFIG, &no_env).unwrap()).unwrap();
    assert!(table.contains_key("plugins_dir"));
    assert_eq!(table["pipeline"].as_table().unwrap().len(), 1);
    let runtime = table["runtime"].as_table().unwrap();
    for key in [
        "deadline_ms",
        "memory_limit_mb",
        "compile_timeout_ms",
        "quarantine_after",
        "quarantine_backoff_ms",
        "quarantine_backoff_max_ms",
        "probation_batches",
        "reload_debounce_ms",
        "max_log_records_per_call",
        "state_max_keys",
        "state_max_value_bytes",
        "state_max_key_bytes",
        "max_metrics",
        "max_log_message_bytes",
    ] {
        assert!(
            runtime.contains_key(key),
            "default.toml lacks runtime.{key}"
        );
    }
    assert_eq!(runtime.len(), 14);
}

#[test]
fn default_config_uses_environment() {
    let env = env_of(&[
        ("EDDY_PLUGINS_DIR", "/opt/eddy/plugins"),
        ("EDDY_PII_SALT", "pepper"),
    ]);
    let config = Config::parse(DEFAULT_CONFIG, EMBEDDED_ORIGIN, &env).unwrap();
    assert_eq!(config.plugins_dir, PathBuf::from("/opt/eddy/plugins"));
    assert_eq!(config.stages[2].config, json!({ "salt": "pepper" }));
}

#[test]
fn load_embedded_default() {
    let config = Config::load(None).unwrap();
    assert_eq!(config.stages.len(), 4);
}

#[test]
fn load_file_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eddy.toml");
    std::fs::write(&path, "plugins_dir = \"p\"\n[pipeline]\nbatch_size = 7\n").unwrap();
    let config = Config::load(Some(&path)).unwrap();
    assert_eq!(config.pipeline.batch_size, 7);
    assert_eq!(config.plugins_dir, PathBuf::from("p"));

    let missing = dir.path().join("nope.toml");
    let e = Config::load(Some(&missing)).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("nope.toml"), "{e}");

    std::fs::write(&path, "[runtime]\ndeadline_ms = 0\n").unwrap();
    let e = Config::load(Some(&path)).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: runtime.deadline_ms", path.display())),
        "{e}"
    );
}

#[test]
fn empty_file_gives_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config.plugins_dir, PathBuf::from(DEFAULT_PLUGINS_DIR));
    assert_eq!(config.pipeline, PipelineConfig::default());
    assert_eq!(config.runtime, RuntimeConfig::default());
    assert!(config.stages.is_empty());

    let env = env_of(&[("EDDY_PLUGINS_DIR", "from-env")]);
    let config = Config::parse("", "eddy.toml", &env).unwrap();
    assert_eq!(config.plugins_dir, PathBuf::from("from-env"));
}

#[test]
fn relative_plugins_dir_stays_relative() {
    let config = parse("plugins_dir = \"./plugins\"").unwrap();
    assert_eq!(config.plugins_dir, PathBuf::from("./plugins"));
}

#[test]
fn interpolation() {
    let env = env_of(&[("SET", "value"), ("EMPTY", ""), ("Q", "a\"b\\c\nd")]);
    let cases: &[(&str, &str)] = &[
        ("x = \"${SET}\"", "x = \"value\""),
        ("x = \"${SET:-other}\"", "x = \"value\""),
        ("x = \"${UNSET:-fallback}\"", "x = \"fallback\""),
        ("x = \"${EMPTY:-fallback}\"", "x = \"fallback\""),
        ("x = \"${EMPTY}\"", "x = \"\""),
        ("x = \"${UNSET:-}\"", "x = \"\""),
        ("x = \"$$HOME\"", "x = \"$HOME\""),
        ("x = \"$${SET}\"", "x = \"${SET}\""),
        ("x = \"a$b $ c$\"", "x = \"a$b $ c$\""),
        ("# ${NOPE} and $$", "# ${NOPE} and $$"),
        ("x = 1 # ${NOPE}", "x = 1 # ${NOPE}"),
        ("x = \"#${SET}\" # ${NOPE}", "x = \"#value\" # ${NOPE}"),
        ("x = '#${SET}' # ${NOPE}", "x = '#value' # ${NOPE}"),
        (
            "x = \"\\\"#${SET}\" # ${NOPE}",
            "x = \"\\\"#value\" # ${NOPE}",
        ),
        (
            "x = \"\"\"\n#${SET}\n\"\"\" # ${NOPE}",
            "x = \"\"\"\n#value\n\"\"\" # ${NOPE}",
        ),
        (
            "x = '''\n#${SET}\n''' # ${NOPE}",
            "x = '''\n#value\n''' # ${NOPE}",
        ),
        ("n = ${SET}", "n = value"),
        ("x = \"${Q}\"", "x = \"a\\\"b\\\\c\\nd\""),
        ("x = \"${UNSET:-C:\\\\dir}\"", "x = \"C:\\\\dir\""),
        ("# ${NOPE}\ny = \"${SET}\"", "# ${NOPE}\ny = \"value\""),
    ];
    for (input, expected) in cases {
        assert_eq!(
            interpolate(input, &env).unwrap(),
            *expected,
            "input: {input}"
        );
    }
}

#[test]
fn interpolated_value_round_trips_through_toml() {
    let env = env_of(&[("SECRET", "quote\" back\\slash\nnew line\ttab")]);
    let config = Config::parse(
        &stage("[stages.config]\ns = \"${SECRET}\""),
        "eddy.toml",
        &env,
    )
    .unwrap();
    assert_eq!(
        config.stages[0].config["s"],
        "quote\" back\\slash\nnew line\ttab"
    );
}

#[test]
fn unset_variable_names_variable_and_line() {
    let text = "# ${COMMENTED}\n\nplugins_dir = \"${EDDY_TEST_NOPE}\"\n";
    let e = parse(text).unwrap_err();
    match &e {
        ConfigError::UnsetVariable { origin, line, name } => {
            assert_eq!(
                (origin.as_str(), *line, name.as_str()),
                ("eddy.toml", 3, "EDDY_TEST_NOPE")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("eddy.toml:3") && msg.contains("EDDY_TEST_NOPE"),
        "{msg}"
    );
}

#[test]
fn bad_interpolation_syntax() {
    let cases: &[(&str, usize, &str)] = &[
        ("x = \"${\"", 1, "unterminated"),
        ("\nx = \"${FOO\"\ny = \"}\"", 2, "unterminated"),
        ("x = \"${}\"", 1, "empty variable name"),
        ("x = \"${1ABC}\"", 1, "invalid variable name `1ABC`"),
        ("x = \"${A-B}\"", 1, "unexpected `-B`"),
        ("x = \"${FOO:bar}\"", 1, "unexpected `:bar`"),
        ("x = \"${FOO BAR}\"", 1, "unexpected ` BAR`"),
        ("x = \"${ FOO}\"", 1, "invalid variable name"),
    ];
    for (input, want_line, want) in cases {
        match interpolate(input, &no_env) {
            Err(ConfigError::BadSyntax { line, message, .. }) => {
                assert_eq!(line, *want_line, "input: {input}");
                assert!(message.contains(want), "input: {input}: {message}");
            }
            other => panic!("input: {input}: unexpected {other:?}"),
        }
    }
}

#[test]
fn literal_string_cannot_hold_quote() {
    let env = env_of(&[("V", "it's")]);
    let e = Config::parse("plugins_dir = '${V}'", "eddy.toml", &env).unwrap_err();
    assert!(matches!(e, ConfigError::BadSyntax { line: 1, .. }), "{e:?}");
    assert!(e.to_string().contains("`V`"), "{e}");
    let env = env_of(&[("V", "plain")]);
    assert_eq!(
        Config::parse("plugins_dir = '${V}'", "eddy.toml", &env)
            .unwrap()
            .plugins_dir,
        PathBuf::from("plain")
    );
}

#[test]
fn parse_errors_name_the_key() {
    let cases: &[(&str, &str)] = &[
        ("plugin_dir = \"x\"", "plugin_dir"),
        ("[pipeline]\nbatch = 5", "batch"),
        ("[runtime]\ndeadline = 5", "deadline"),
        ("[extra]\nx = 1", "extra"),
        (&stage("deadlin_ms = 5"), "deadlin_ms"),
        ("[pipeline]\nbatch_size = \"big\"", "batch_size"),
        ("[runtime]\ndeadline_ms = 1.5", "deadline_ms"),
        (&stage("memory_limit_mb = true"), "memory_limit_mb"),
        (&stage("config = 5"), "config"),
        ("[[stages]]\nname = \"x\"", "plugin"),
        ("plugins_dir = [1]", "plugins_dir"),
        ("batch_size = = 1", "batch_size"),
    ];
    for (input, key) in cases {
        match parse(input) {
            Err(e @ ConfigError::Parse { .. }) => {
                let msg = e.to_string();
                assert!(msg.starts_with("eddy.toml: "), "{msg}");
                assert!(
                    msg.contains(key),
                    "input {input:?}: message lacks {key}: {msg}"
                );
            }
            other => panic!("input {input:?}: unexpected {other:?}"),
        }
    }
    let msg = err(&stage("deadlin_ms = 5")).to_string();
    assert!(
        msg.contains("unknown field `deadlin_ms`") && msg.contains("deadline_ms"),
        "{msg}"
    );
    let msg = err("[pipeline]\nbatch_size = \"big\"").to_string();
    assert!(msg.contains("expected an integer"), "{msg}");
}

#[test]
fn parse_error_does_not_show_substituted_values() {
    let env = env_of(&[("SECRET", "hunter2")]);
    let text = "[pipeline]\nbatch_size = \"${SECRET}\"\n";
    let e = Config::parse(text, "eddy.toml", &env).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(
        msg.contains("line 2") && msg.contains("batch_size = \"${SECRET}\""),
        "{msg}"
    );
}

#[test]
fn on_failure_values() {
    let config = parse(&stage("on_failure = \"dead-letter\"")).unwrap();
    assert_eq!(config.stages[0].on_failure, FailurePolicy::DeadLetter);
    let config = parse(&stage("on_failure = \"pass-through\"")).unwrap();
    assert_eq!(config.stages[0].on_failure, FailurePolicy::PassThrough);
    assert_eq!(FailurePolicy::PassThrough.to_string(), "pass-through");
    assert_eq!(FailurePolicy::DeadLetter.to_string(), "dead-letter");

    let msg = err(&stage("on_failure = \"retry\"")).to_string();
    for want in ["retry", "pass-through", "dead-letter", "on_failure"] {
        assert!(msg.contains(want), "message lacks {want}: {msg}");
    }
}

#[test]
fn range_rules() {
    // (section, key, rejected values, accepted boundary values, allowed)
    type Case = (
        &'static str,
        &'static str,
        &'static [i64],
        &'static [i64],
        &'static str,
    );
    let cases: &[Case] = &[
        (
            "pipeline",
            "batch_size",
            &[0, -1, 100_001],
            &[1, 100_000],
            "between 1 and 100000",
        ),
        (
            "runtime",
            "deadline_ms",
            &[0, 60_001],
            &[1, 60_000],
            "between 1 and 60000 (milliseconds)",
        ),
        (
            "runtime",
            "memory_limit_mb",
            &[0, 4097],
            &[1, 4096],
            "between 1 and 4096 (MiB)",
        ),
        (
            "runtime",
            "compile_timeout_ms",
            &[99, 600_001],
            &[100, 600_000],
            "between 100 and 600000",
        ),
        (
            "runtime",
            "quarantine_after",
            &[0, -3, 4_294_967_296],
            &[1, 4_294_967_295],
            "between 1 and",
        ),
        ("runtime", "quarantine_backoff_ms", &[0], &[1], "at least 1"),
        (
            "runtime",
            "probation_batches",
            &[-1],
            &[0, 10],
            "between 0 and",
        ),
        (
            "runtime",
            "reload_debounce_ms",
            &[-1, 10_001],
            &[0, 10_000],
            "between 0 and 10000",
        ),
        (
            "runtime",
            "max_log_records_per_call",
            &[-1],
            &[0, 5],
            "between 0 and",
        ),
        (
            "runtime",
            "state_max_keys",
            &[0],
            &[1, i64::MAX],
            "at least 1 (keys)",
        ),
        (
            "runtime",
            "state_max_value_bytes",
            &[0],
            &[1],
            "at least 1 (bytes)",
        ),
        (
            "runtime",
            "state_max_key_bytes",
            &[0, 65_537],
            &[1, 65_536],
            "between 1 and 65536 (bytes)",
        ),
        (
            "runtime",
            "max_metrics",
            &[-1, 1_000_001],
            &[0, 1_000_000],
            "between 0 and 1000000 (metrics)",
        ),
        (
            "runtime",
            "max_log_message_bytes",
            &[0, 1_048_577],
            &[1, 1_048_576],
            "between 1 and 1048576 (bytes)",
        ),
    ];
    for (section, key, bad, good, allowed) in cases {
        for value in *bad {
            let text = format!("[{section}]\n{key} = {value}\n");
            match parse(&text) {
                Err(e @ ConfigError::Invalid { .. }) => {
                    let msg = e.to_string();
                    let prefix =
                        format!("eddy.toml: {section}.{key}: {value} is out of range: must be ");
                    assert!(msg.starts_with(&prefix), "{msg}");
                    assert!(msg.contains(allowed), "{msg}");
                }
                other => panic!("{text}: unexpected {other:?}"),
            }
        }
        for value in *good {
            let mut text = format!("[{section}]\n{key} = {value}\n");
            if *key == "quarantine_backoff_ms" {
                text.push_str("quarantine_backoff_max_ms = 1000000\n");
            }
            parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }
    let msg = err("[runtime]\ndeadline_ms = 0").to_string();
    assert_eq!(
        msg,
        "eddy.toml: runtime.deadline_ms: 0 is out of range: must be between 1 and 60000 (milliseconds)"
    );
}

#[test]
fn runtime_values_are_converted() {
    let text = "[runtime]\ndeadline_ms = 250\nmemory_limit_mb = 2\ncompile_timeout_ms = 100\n\
                quarantine_after = 5\nquarantine_backoff_ms = 10\nquarantine_backoff_max_ms = 10\n\
                probation_batches = 0\nreload_debounce_ms = 0\nmax_log_records_per_call = 0\n\
                state_max_keys = 9\nstate_max_value_bytes = 8\nstate_max_key_bytes = 7\n\
                max_metrics = 6\nmax_log_message_bytes = 5\n";
    let r = parse(text).unwrap().runtime;
    assert_eq!(
        r,
        RuntimeConfig {
            deadline: Duration::from_millis(250),
            memory_limit_bytes: 2 * 1024 * 1024,
            compile_timeout: Duration::from_millis(100),
            quarantine_after: 5,
            quarantine_backoff: Duration::from_millis(10),
            quarantine_backoff_max: Duration::from_millis(10),
            probation_batches: 0,
            reload_debounce: Duration::ZERO,
            max_log_records_per_call: 0,
            state_max_keys: 9,
            state_max_value_bytes: 8,
            state_max_key_bytes: 7,
            max_metrics: 6,
            max_log_message_bytes: 5,
            grants: Default::default(),
        }
    );
}

#[test]
fn backoff_max_below_backoff() {
    let e = err("[runtime]\nquarantine_backoff_ms = 5000\nquarantine_backoff_max_ms = 4000");
    match &e {
        ConfigError::Invalid { key, message, .. } => {
            assert_eq!(key, "runtime.quarantine_backoff_max_ms");
            assert!(
                message.contains("4000") && message.contains("quarantine_backoff_ms = 5000"),
                "{message}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // The default ceiling (60000) is below a first backoff of 90000.
    assert!(matches!(
        err("[runtime]\nquarantine_backoff_ms = 90000"),
        ConfigError::Invalid { .. }
    ));
}

#[test]
fn stage_overrides_out_of_range() {
    let cases: &[(&str, &str)] = &[
        ("deadline_ms = 0", "stages[1].deadline_ms"),
        ("deadline_ms = 60001", "stages[1].deadline_ms"),
        ("memory_limit_mb = 0", "stages[1].memory_limit_mb"),
        ("memory_limit_mb = 5000", "stages[1].memory_limit_mb"),
    ];
    for (line, want_key) in cases {
        let text = format!("[[stages]]\nplugin = \"a\"\n[[stages]]\nplugin = \"b\"\n{line}\n");
        match parse(&text) {
            Err(ConfigError::Invalid { key, message, .. }) => {
                assert_eq!(key, *want_key);
                assert!(message.contains("out of range"), "{message}");
            }
            other => panic!("{text}: unexpected {other:?}"),
        }
    }
}

#[test]
fn stage_overrides_applied() {
    let text = "[runtime]\ndeadline_ms = 100\nmemory_limit_mb = 64\n\
                [[stages]]\nplugin = \"a\"\ndeadline_ms = 7\nmemory_limit_mb = 3\n\
                [[stages]]\nplugin = \"b\"\n";
    let config = parse(text).unwrap();
    let (a, b) = (&config.stages[0], &config.stages[1]);
    assert_eq!(a.deadline, Some(Duration::from_millis(7)));
    assert_eq!(config.stage_deadline(a), Duration::from_millis(7));
    assert_eq!(config.stage_memory_limit(a), 3 * 1024 * 1024);
    assert_eq!(b.deadline, None);
    assert_eq!(config.stage_deadline(b), Duration::from_millis(100));
    assert_eq!(config.stage_memory_limit(b), 64 * 1024 * 1024);
}

#[test]
fn duplicate_stage_names() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[[stages]]\nplugin = \"x\"\n[[stages]]\nplugin = \"y\"\n[[stages]]\nplugin = \"z\"\n[[stages]]\nplugin = \"x\"\n",
            "stages[3].name",
            "duplicate stage name `x` (also stages[0]); the name defaults to the plugin",
        ),
        (
            "[[stages]]\nplugin = \"a\"\n[[stages]]\nplugin = \"b\"\nname = \"a\"\n",
            "stages[1].name",
            "duplicate stage name `a` (also stages[0])",
        ),
    ];
    for (text, want_key, want) in cases {
        match parse(text) {
            Err(ConfigError::Invalid { key, message, .. }) => {
                assert_eq!(key, *want_key);
                assert!(message.starts_with(want), "{message}");
            }
            other => panic!("{text}: unexpected {other:?}"),
        }
    }
    // The same plugin twice is fine with distinct names.
    let config =
        parse("[[stages]]\nplugin = \"x\"\n[[stages]]\nplugin = \"x\"\nname = \"x-again\"\n")
            .unwrap();
    assert_eq!(config.stages[1].name, "x-again");
    assert_eq!(config.stages[1].plugin, "x");
}

#[test]
fn bad_plugin_and_stage_names() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "plugin = \"bot filter\"",
            "stages[0].plugin",
            "`bot filter` is not a valid plugin name",
        ),
        (
            "plugin = \"../evil\"",
            "stages[0].plugin",
            "not a valid plugin name",
        ),
        (
            "plugin = \"\"",
            "stages[0].plugin",
            "not a valid plugin name",
        ),
        (
            "plugin = \"héllo\"",
            "stages[0].plugin",
            "ASCII letters, digits, `-` and `_`",
        ),
        (
            "plugin = \"bot-filter.wasm\"",
            "stages[0].plugin",
            "write `bot-filter`, without `.wasm`",
        ),
        (
            "plugin = \"ok\"\nname = \"\"",
            "stages[0].name",
            "must not be empty",
        ),
        (
            "plugin = \"ok\"\nname = \"a\\u0007\"",
            "stages[0].name",
            "control characters",
        ),
    ];
    for (body, want_key, want) in cases {
        let text = format!("[[stages]]\n{body}\n");
        match parse(&text) {
            Err(ConfigError::Invalid { key, message, .. }) => {
                assert_eq!(key, *want_key);
                assert!(message.contains(want), "{message}");
            }
            other => panic!("{text}: unexpected {other:?}"),
        }
    }
    let config =
        parse("[[stages]]\nplugin = \"Good_name-2\"\nname = \"any name: fine\"\n").unwrap();
    assert_eq!(config.stages[0].name, "any name: fine");
}

#[test]
fn state_scopes_default_to_the_stage_and_are_validated() {
    let config = parse(
        "[[stages]]\nplugin = \"p\"\n\
         [[stages]]\nplugin = \"p\"\nname = \"p two\"\n\
         [[stages]]\nplugin = \"q\"\nstate = \"shared.v1\"\n\
         [[stages]]\nplugin = \"p\"\nname = \"p3\"\nstate = \"shared.v1\"\n",
    )
    .unwrap();
    let scopes: Vec<&str> = config.stages.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(scopes, ["p", "p two", "shared.v1", "shared.v1"]);
    for bad in [
        "\"\"",
        "\"a b\"",
        "\"../x\"",
        "\"é\"",
        &format!("\"{}\"", "s".repeat(129)),
    ] {
        let text = format!("[[stages]]\nplugin = \"p\"\nstate = {bad}\n");
        match parse(&text) {
            Err(ConfigError::Invalid { key, message, .. }) => {
                assert_eq!(key, "stages[0].state");
                assert!(message.contains("is not a valid state scope"), "{message}");
                assert!(message.contains("share one store"), "{message}");
            }
            other => panic!("{text}: unexpected {other:?}"),
        }
    }
    match parse("[[stages]]\nplugin = \"p\"\nstate = 5\n") {
        Err(e) => assert!(e.to_string().contains("state"), "{e}"),
        Ok(c) => panic!("a number is not a scope: {:?}", c.stages[0].state),
    }
}

#[test]
fn empty_plugins_dir_rejected() {
    match parse("plugins_dir = \"\"") {
        Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "plugins_dir"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn empty_stage_list_allowed() {
    assert!(
        parse("[pipeline]\nbatch_size = 10\n")
            .unwrap()
            .stages
            .is_empty()
    );
    assert!(parse("stages = []").unwrap().stages.is_empty());
}

#[test]
fn stage_config_becomes_json_object() {
    let text = r#"
[[stages]]
plugin = "p"
[stages.config]
string = "s"
int = -42
float = 1.5
yes = true
no = false
list = [1, "two", 3.0, [4]]
when = 1979-05-27T07:32:00Z
day = 1979-05-27
"dotted.key" = 1
[stages.config.nested]
deep = { a = [true], b = {} }
[[stages.config.rules]]
match = "bot"
[[stages.config.rules]]
match = "crawler"
weight = 2
"#;
    let config = parse(text).unwrap();
    assert_eq!(
        config.stages[0].config,
        json!({
            "string": "s",
            "int": -42,
            "float": 1.5,
            "yes": true,
            "no": false,
            "list": [1, "two", 3.0, [4]],
            "when": "1979-05-27T07:32:00Z",
            "day": "1979-05-27",
            "dotted.key": 1,
            "nested": { "deep": { "a": [true], "b": {} } },
            "rules": [{ "match": "bot" }, { "match": "crawler", "weight": 2 }],
        })
    );
}

#[test]
fn stage_config_rejects_nan() {
    match parse(&stage("[stages.config]\nx = { y = [1.0, nan] }")) {
        Err(ConfigError::Invalid { key, message, .. }) => {
            assert_eq!(key, "stages[0].config.x.y[1]");
            assert!(message.contains("NaN"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn service_sections_default_to_the_embedded_values() {
    let config = Config::parse(DEFAULT_CONFIG, EMBEDDED_ORIGIN, &no_env).unwrap();
    assert_eq!(config.server, ServerConfig::default());
    assert_eq!(config.ingest, IngestConfig::default());
    assert_eq!(config.streams, StreamsConfig::default());
    assert_eq!(config.auth, AuthConfig::default());
    // A file without the sections gets the same values.
    let empty = parse("").unwrap();
    assert_eq!(empty.server, config.server);
    assert_eq!(empty.ingest, config.ingest);
    assert_eq!(empty.streams, config.streams);
    assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(config.ingest.on_invalid, InvalidPolicy::AcceptValid);
}

#[test]
fn default_toml_shows_every_service_key() {
    let table: toml::Table =
        toml::from_str(&interpolate(DEFAULT_CONFIG, &no_env).unwrap()).unwrap();
    // Every key a section accepts must be shown (and so documented) in the
    // default file: parse each key alone to prove it is accepted, and count.
    for (section, keys) in [
        ("server", 6),
        ("ingest", 15),
        ("streams", 9),
        ("auth", 3),
        ("time", 4),
        ("live", 4),
    ] {
        let shown = table[section].as_table().unwrap();
        assert_eq!(shown.len(), keys, "[{section}] in default.toml");
        for (key, value) in shown {
            let text = format!("[{section}]\n{key} = {value}\n");
            parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }
}

#[test]
fn service_values_are_checked() {
    let listen = err("[server]\nlisten = \"localhost\"").to_string();
    assert!(listen.contains("server.listen"), "{listen}");
    assert!(listen.contains("IP:PORT"), "{listen}");
    let queue = err("[streams]\nreplay_capacity = 10\nclient_queue = 20").to_string();
    assert!(queue.contains("streams.client_queue"), "{queue}");
    assert!(queue.contains("replay_capacity = 10"), "{queue}");
    let small = err("[ingest]\nqueue_events = 10\nmax_events_per_request = 20").to_string();
    assert!(small.contains("max_events_per_request = 20"), "{small}");
    let zero = err("[ingest]\nqueue_events = 0").to_string();
    assert!(zero.contains("ingest.queue_events"), "{zero}");
    assert!(zero.contains("(events)"), "{zero}");
    let policy = err("[ingest]\non_invalid = \"drop\"").to_string();
    assert!(policy.contains("accept-valid"), "{policy}");
    let key = err("[auth]\nwrite_keys = [\"short\"]").to_string();
    assert!(key.contains("auth.write_keys[0]"), "{key}");
    let unknown = err("[streams]\nclient_queu = 5").to_string();
    assert!(unknown.contains("client_queu"), "{unknown}");

    let ok = parse(
        "[server]\nlisten = \"127.0.0.1:0\"\n[ingest]\non_invalid = \"reject-request\"\n\
         future_skew_ms = 0\n[auth]\nadmin_keys = [\"0123456789\"]",
    )
    .unwrap();
    assert_eq!(ok.server.listen.port(), 0);
    assert_eq!(ok.ingest.on_invalid, InvalidPolicy::RejectRequest);
    assert_eq!(ok.ingest.future_skew, Duration::ZERO);
    assert_eq!(ok.auth.admin_keys, ["0123456789"]);
    // Keys never show in debug output.
    assert!(!format!("{:?}", ok.auth).contains("0123456789"));
}

#[test]
fn stage_allow_grants_capabilities_to_its_plugin() {
    let text = "[[stages]]\nplugin = \"reader\"\n\
                allow = [\"wasi:sockets\", \"wasi:filesystem\", \"wasi:sockets\"]\n\
                [[stages]]\nplugin = \"reader\"\nname = \"again\"\n\
                allow = [\"wasi:filesystem\", \"wasi:sockets\"]\n\
                [[stages]]\nplugin = \"other\"\nallow = [\"wasi:filesystem/types\"]\n\
                [[stages]]\nplugin = \"plain\"\n";
    let config = parse(text).unwrap();
    let both = vec!["wasi:filesystem".to_owned(), "wasi:sockets".to_owned()];
    assert_eq!(config.stages[0].allow, both, "sorted, without duplicates");
    assert_eq!(config.runtime.grants_for("reader"), both.as_slice());
    assert_eq!(
        config.runtime.grants_for("other"),
        ["wasi:filesystem/types".to_owned()]
    );
    assert!(config.stages[3].allow.is_empty());
    assert!(config.runtime.grants_for("plain").is_empty());
    assert!(config.runtime.grants_for("not-a-stage").is_empty());
    assert_eq!(config.runtime.grants.len(), 2);
    // The embedded default grants nothing.
    let default = Config::parse(DEFAULT_CONFIG, EMBEDDED_ORIGIN, &no_env).unwrap();
    assert!(default.runtime.grants.is_empty());
    assert!(default.stages.iter().all(|s| s.allow.is_empty()));
}

#[test]
fn unknown_grants_are_rejected_with_the_valid_names() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "allow = [\"wasi:sockets\", \"wasi:filesytem\"]",
            "stages[0].allow[1]",
            &[
                "\"wasi:filesytem\" is not a capability eddy can grant",
                "use \"wasi:filesystem\", \"wasi:sockets\"",
                "eddy plugin inspect",
            ],
        ),
        (
            "allow = [\"wasi:filesystem@0.2.6\"]",
            "stages[0].allow[0]",
            &["leave out the version: \"wasi:filesystem\""],
        ),
        (
            "allow = [\"wasi:clocks\"]",
            "stages[0].allow[0]",
            &["allowed by default and needs no grant"],
        ),
        (
            "allow = [\"wasi:http\"]",
            "stages[0].allow[0]",
            &["not a capability eddy can grant"],
        ),
    ];
    for (body, want_key, wants) in cases {
        let e = err(&stage(body));
        assert!(
            e.to_string().starts_with("eddy.toml: stages[0].allow["),
            "{e}"
        );
        match &e {
            ConfigError::Invalid { key, message, .. } => {
                assert_eq!(key, want_key, "{e}");
                for want in *wants {
                    assert!(message.contains(want), "{body}: {message}");
                }
            }
            other => panic!("{body}: unexpected {other:?}"),
        }
    }
    // Not a list: toml's type error names the key.
    let msg = err(&stage("allow = \"wasi:filesystem\"")).to_string();
    assert!(msg.contains("allow"), "{msg}");
}

#[test]
fn stages_of_one_plugin_must_grant_the_same() {
    let text = "[[stages]]\nplugin = \"x\"\nallow = [\"wasi:filesystem\"]\n\
                [[stages]]\nplugin = \"x\"\nname = \"x2\"\n";
    match err(text) {
        ConfigError::Invalid { key, message, .. } => {
            assert_eq!(key, "stages[1].allow");
            assert!(
                message.contains("differs from stages[0].allow = [\"wasi:filesystem\"]")
                    && message
                        .contains("give every stage with plugin = \"x\" the same `allow` list"),
                "{message}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}
