//! The OpenAPI document as a client generator reads it: requests built from
//! `/openapi.json` alone — its paths, methods and parameter schemas (types,
//! ranges, lengths, patterns, enums, formats) — sent to the real server on
//! the default configuration. None may get a 5xx, and none may be refused
//! (400) or answered with a status the operation does not document: a
//! client that keeps to the document never sends what the server refuses.
//! And the other way round: every bound the document states for a query
//! parameter is one the server enforces, with a 400 naming the parameter.
//! (Every route the router serves is registered together with its operation,
//! `host/src/server/api.rs`; the unit tests there tie the documented bounds,
//! defaults and enums to the parsers.)
//!
//! Operations with a request body (ingest) and the streaming routes
//! (`/v1/ws`, `/v1/sse`) are not generated here; ingest has its own
//! decoder tests and fuzz target.

use std::collections::BTreeSet;

use eddy_tests::server::{Server, get_json, http};
use eddy_tests::{Rng, Sandbox};
use serde_json::Value;

/// Requests sent, over every operation.
const REQUESTS: usize = 1500;

/// The chances and picks a request generator draws.
trait Draw {
    fn chance(&mut self, percent: u64) -> bool;
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T;
}

impl Draw for Rng {
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Characters for strings the schema does not restrict.
const ANY: &[char] = &[
    'a', 'Z', '0', '9', ' ', '-', '_', '.', '/', '$', '%', '&', '=', '?', '#', '+', ':', ',', '"',
    '\'', '[', ']', '{', '}', '\\', 'é', '日', '🙂',
];

/// A value for `schema`, as it goes in a path segment or a query string.
fn generate(rng: &mut Rng, schema: &Value) -> String {
    if let Some(options) = schema["oneOf"].as_array() {
        let option = rng.pick(options).clone();
        return generate(rng, &option);
    }
    if let Some(values) = schema["enum"].as_array() {
        return match rng.pick(values) {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
    }
    match schema["type"].as_str() {
        Some("integer") => {
            let min = schema["minimum"].as_i64().unwrap_or(-1_000_000);
            let max = schema["maximum"].as_i64().unwrap_or(1_000_000_000_000);
            let span = (max - min) as u64;
            let n = match rng.below(4) {
                0 => min,
                1 => max,
                2 => min + rng.below(span.min(1000) + 1) as i64,
                _ => min + rng.below(span + 1) as i64,
            };
            n.to_string()
        }
        Some("boolean") => rng.chance(50).to_string(),
        _ if schema["format"] == "date-time" => {
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}",
                1970 + rng.below(130),
                1 + rng.below(12),
                1 + rng.below(28),
                rng.below(24),
                rng.below(60),
                rng.below(60),
                *rng.pick(&["Z", "+02:00", ".123Z", "-05:30"]),
            )
        }
        _ => {
            let min = schema["minLength"].as_u64().unwrap_or(0);
            let max = schema["maxLength"].as_u64().unwrap_or(40).min(40).max(min);
            let len = min + rng.below(max - min + 1);
            let alphabet: Vec<char> = match schema["pattern"].as_str() {
                None => ANY.to_vec(),
                Some(p) => char_class(p),
            };
            (0..len).map(|_| *rng.pick(&alphabet)).collect()
        }
    }
}

/// The characters of a `^[...]+$` pattern (the only form the document
/// uses); any other pattern fails the test, so a new one gets a generator.
fn char_class(pattern: &str) -> Vec<char> {
    let class = pattern
        .strip_prefix("^[")
        .and_then(|p| p.strip_suffix("]+$"))
        .unwrap_or_else(|| panic!("no generator for the pattern {pattern}"));
    let chars: Vec<char> = class.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if i + 2 < chars.len() && chars[i + 1] == '-' {
            out.extend(chars[i]..=chars[i + 2]);
            i += 3;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Names that exist on the server, per kind of path.
struct Known {
    windows: Vec<String>,
    patterns: Vec<String>,
    plugins: Vec<String>,
}

async fn names(server: &Server, path: &str, list: &str) -> Vec<String> {
    let v = get_json(server.url(path)).await;
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_document_allows_are_never_refused_and_never_fail() {
    let sandbox = Sandbox::new();
    sandbox.install_examples();
    let config = sandbox.config(&eddy_tests::default_config_body());
    let server = sandbox.serve(&config);
    let doc = get_json(server.url("/openapi.json")).await;
    let known = Known {
        windows: names(&server, "/v1/windows", "windows").await,
        patterns: names(&server, "/v1/patterns", "patterns").await,
        plugins: names(&server, "/v1/plugins", "plugins").await,
    };
    // Every generable operation: (method, path, operation).
    let mut ops: Vec<(String, String, Value)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let streaming = path == "/v1/ws" || path == "/v1/sse";
            if !streaming && op.get("requestBody").is_none() {
                ops.push((method.clone(), path.clone(), op.clone()));
            }
        }
    }
    assert!(ops.len() >= 18, "operations to generate: {}", ops.len());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("openapi fuzz seed {seed}");
    let mut rng = Rng(seed);
    let mut seen: BTreeSet<(String, u16)> = BTreeSet::new();
    for _ in 0..REQUESTS {
        let (method, path, op) = rng.pick(&ops).clone();
        let mut used_known_name = true;
        let mut url = url::Url::parse(&server.url("/")).unwrap();
        {
            let mut segments = url.path_segments_mut().unwrap();
            segments.clear();
            for segment in path.split('/').skip(1) {
                if segment == "{name}" {
                    let pool = if path.starts_with("/v1/windows/") {
                        &known.windows
                    } else if path.starts_with("/v1/patterns/") {
                        &known.patterns
                    } else {
                        &known.plugins
                    };
                    let schema = op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|p| p["in"] == "path" && p["name"] == "name")
                        .map(|p| p["schema"].clone())
                        .expect("the name parameter is documented");
                    let name = if rng.chance(60) && !pool.is_empty() {
                        rng.pick(pool).clone()
                    } else {
                        used_known_name = false;
                        generate(&mut rng, &schema)
                    };
                    segments.push(&name);
                } else {
                    segments.push(segment);
                }
            }
        }
        for param in op["parameters"].as_array().into_iter().flatten() {
            if param["in"] != "query" {
                continue;
            }
            let required = param["required"] == true;
            if required || rng.chance(50) {
                let value = generate(&mut rng, &param["schema"]);
                url.query_pairs_mut()
                    .append_pair(param["name"].as_str().unwrap(), &value);
            }
        }
        let request = match method.as_str() {
            "get" => http().get(url.clone()),
            "post" => http().post(url.clone()),
            other => panic!("no generator for method {other}"),
        };
        let resp = request.send().await.expect("request");
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let documented = op["responses"].get(status.to_string()).is_some();
        let what = format!(
            "{} {url} (seed {seed}) → {status} {body}",
            method.to_uppercase()
        );
        assert!(status < 500, "a server error: {what}");
        assert_ne!(status, 400, "refused a request the document allows: {what}");
        assert!(
            documented,
            "a status the operation does not document: {what}"
        );
        if used_known_name {
            // An existing name is never "not found"; a rollback with no
            // earlier version is the only conflict.
            assert!(
                status < 300 || (status == 409 && path.ends_with("/rollback")),
                "an existing name was refused: {what}"
            );
        }
        seen.insert((path.clone(), status));
    }
    // Every operation was exercised and answered 2xx at least once (a
    // rollback has no earlier version to go back to here: 409).
    for (_, path, _) in &ops {
        assert!(
            seen.iter()
                .any(|(p, s)| p == path && (*s < 300 || path.ends_with("/rollback"))),
            "{path} never succeeded: {seen:?}"
        );
    }
}

/// Values just outside what `schema` allows, if it bounds anything.
fn outside(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(values) = schema["enum"].as_array() {
        let first = values[0].as_str().unwrap_or("x");
        out.push(format!("{first}-not"));
    }
    if schema["oneOf"].is_array() {
        out.push("yesterday".to_owned());
    }
    if schema["type"] == "integer" {
        if let Some(max) = schema["maximum"].as_i64() {
            out.push((max + 1).to_string());
        }
        if let Some(min) = schema["minimum"].as_i64() {
            out.push((min - 1).to_string());
        }
        out.push("1.5".to_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bound_the_document_states_is_enforced_with_a_clear_error() {
    let sandbox = Sandbox::new();
    sandbox.install_examples();
    let config = sandbox.config(&eddy_tests::default_config_body());
    let server = sandbox.serve(&config);
    let doc = get_json(server.url("/openapi.json")).await;
    let window = names(&server, "/v1/windows", "windows").await[0].clone();
    let pattern = names(&server, "/v1/patterns", "patterns").await[0].clone();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method != "get" {
                continue;
            }
            let concrete = path
                .replace("/v1/windows/{name}", &format!("/v1/windows/{window}"))
                .replace("/v1/patterns/{name}", &format!("/v1/patterns/{pattern}"));
            let params: Vec<&Value> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .collect();
            for param in &params {
                let name = param["name"].as_str().unwrap();
                for bad in outside(&param["schema"]) {
                    let mut url = url::Url::parse(&server.url(&concrete)).unwrap();
                    // The required parameters, valid, beside the bad one.
                    for other in &params {
                        if other["required"] == true && other["name"] != name {
                            url.query_pairs_mut()
                                .append_pair(other["name"].as_str().unwrap(), "events");
                        }
                    }
                    url.query_pairs_mut().append_pair(name, &bad);
                    let resp = http().get(url.clone()).send().await.unwrap();
                    let status = resp.status().as_u16();
                    let body: Value = resp.json().await.unwrap_or_default();
                    assert_eq!(status, 400, "GET {url}: {body}");
                    assert!(
                        op["responses"].get("400").is_some(),
                        "GET {path} refuses with 400 but does not document it"
                    );
                    let message = body["error"].as_str().unwrap_or_default();
                    assert!(
                        message.contains(name),
                        "GET {url}: the error does not name `{name}`: {body}"
                    );
                    checked += 1;
                }
            }
            // A required parameter left out is refused too.
            for param in params.iter().filter(|p| p["required"] == true) {
                let url = server.url(&concrete);
                let resp = http().get(&url).send().await.unwrap();
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or_default();
                assert_eq!(status, 400, "GET {url} without {}: {body}", param["name"]);
                checked += 1;
            }
        }
    }
    // A plugin name outside the documented pattern.
    let resp = http()
        .post(server.url("/v1/plugins/no.such/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "bad_plugin_name", "{body}");
    assert!(checked >= 25, "bounds checked: {checked}");
}
