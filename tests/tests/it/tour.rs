//! The README's tour, as a newcomer runs it on any date: the real `eddy
//! serve` on its embedded default configuration and the example plugins
//! (what `scripts/run` starts) on a fresh data directory, then the tour's
//! commands — `eddy tail`, `eddy send --now`, `eddy pipe` — and `eddy demo`,
//! whose traffic must make the windows, patterns and alerts show something
//! within seconds.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eddy_tests::server::{Server, Ws, http};
use eddy_tests::{Sandbox, eddy_bin, run_with_timeout};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// The sample events of the tour, in the repository.
fn sample_events() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/sample-events.ndjson")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A fresh folder whose plugins folder holds what `scripts/build-plugins`
/// puts in `target/plugins`: the example plugins.
fn example_plugins() -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.install_examples();
    sandbox
}

/// An `eddy` client command (send, tail, demo) against `server`.
fn client(server: &Server, args: &[&str]) -> Command {
    let mut cmd = Command::new(eddy_bin());
    cmd.args(args)
        .arg("--url")
        .arg(server.url(""))
        .env_remove("EDDY_URL")
        .env_remove("EDDY_API_KEY");
    cmd
}

/// A running `eddy tail` with its output lines.
struct Tail {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Tail {
    fn start(server: &Server, args: &[&str]) -> Tail {
        let mut cmd = client(server, &[&["tail"], args].concat());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn eddy tail");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        let tail = Tail {
            child,
            stdout,
            stderr,
        };
        // Subscribed before anything is sent, as in the tour's second
        // terminal.
        let line = tail
            .stderr
            .recv_timeout(WAIT)
            .expect("eddy tail subscribes");
        assert!(line.starts_with("subscribed to "), "eddy tail said {line}");
        tail
    }

    fn lines(&self, n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| {
                let line = self.stdout.recv_timeout(WAIT).unwrap_or_else(|_| {
                    panic!("eddy tail printed {i} of {n} lines within {WAIT:?}")
                });
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
            })
            .collect()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn get(url: String) -> Value {
    let resp = http().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.json().await.unwrap()
}

/// Poll `url` until `done` holds for its answer; fails after `limit`.
async fn poll(url: String, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let v = get(url.clone()).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "GET {url} within {limit:?}: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The events the tour expects out of the default pipeline: Googlebot's
/// (user-2) dropped, in file order.
const KEPT: [(&str, &str, &str); 9] = [
    ("evt-000", "signup_clicked", "user-0"),
    ("evt-001", "$pageview", "user-1"),
    ("evt-003", "signup_clicked", "user-3"),
    ("evt-004", "$pageview", "user-0"),
    ("evt-005", "$pageview", "user-1"),
    ("evt-007", "$pageview", "user-3"),
    ("evt-008", "$pageview", "user-0"),
    ("evt-009", "signup_clicked", "user-1"),
    ("evt-011", "$pageview", "user-3"),
];

fn browser(user: &str) -> &'static str {
    match user {
        "user-0" => "Chrome",
        "user-1" => "Mobile Safari",
        "user-3" => "Firefox",
        other => panic!("no browser expected for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tour_send_now_gets_every_sample_event_accepted_and_enriched() {
    let sandbox = example_plugins();
    let server = sandbox.serve_default();
    let tail = Tail::start(
        &server,
        &[
            "events",
            "--fields",
            "name,distinct_id,properties.$browser,properties.$is_first_seen",
        ],
    );

    let before = now_ms();
    let mut send = client(&server, &["send", "--now"]);
    send.arg(sample_events());
    let out = run_with_timeout(send, WAIT);
    let after = now_ms();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "eddy send failed: {stderr}");
    assert!(
        stderr.starts_with("sent: 12 accepted, 0 rejected, 1 requests (0 retried after 429)"),
        "eddy send said: {stderr}"
    );

    // `eddy tail` shows them as the tour says: bot dropped, browser set,
    // each user's first event marked.
    let tailed = tail.lines(KEPT.len());
    let mut seen = std::collections::HashSet::new();
    for (line, (_, name, user)) in tailed.iter().zip(KEPT) {
        let first = seen.insert(user);
        let mut expected = json!({
            "name": name,
            "distinct_id": user,
            "properties": {"$browser": browser(user)},
        });
        if first {
            expected["properties"]["$is_first_seen"] = json!(true);
        }
        assert_eq!(line, &expected, "eddy tail events, all: {tailed:#?}");
    }

    // GET /v1/events/recent has the whole enriched events.
    let recent = get(server.url("/v1/events/recent")).await;
    let events = recent["events"].as_array().unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, KEPT.map(|k| k.0), "the bot's events are dropped");
    for e in events {
        let p = &e["properties"];
        assert_eq!(p["$host"], "shop.example.com", "{e}");
        assert!(p["$pathname"].as_str().unwrap().starts_with('/'), "{e}");
        assert!(p["$os"].is_string() && p["$device_type"].is_string(), "{e}");
        assert!(p.get("$ip").is_none(), "$ip is removed: {e}");
        if e["distinct_id"] == "user-1" {
            let email = p["email"].as_str().unwrap();
            assert!(email.starts_with("sha256:"), "email is hashed: {e}");
            assert!(!email.contains("ann.smith"), "{e}");
        }
    }
    // --now: the newest recorded timestamp became the time of sending, and
    // the spacing (one second per line) is kept.
    let ts = |id: &str| {
        events.iter().find(|e| e["id"] == id).unwrap()["timestamp"]
            .as_i64()
            .unwrap()
    };
    let newest = ts("evt-011");
    assert!(
        (before..=after).contains(&newest),
        "newest {newest} not between {before} and {after}"
    );
    assert_eq!(newest - ts("evt-000"), 11_000);
    assert_eq!(ts("evt-005") - ts("evt-004"), 1_000);
}

#[test]
fn tour_pipe_runs_the_sample_events_through_the_default_pipeline() {
    let sandbox = example_plugins();
    let mut pipe = Command::new(eddy_bin());
    pipe.args(["pipe", "--input"])
        .arg(sample_events())
        .env("EDDY_PLUGINS_DIR", sandbox.plugins_dir())
        .env_remove("EDDY_CONFIG")
        .env_remove("EDDY_LOG")
        .current_dir(sandbox.path());
    let out = run_with_timeout(pipe, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "eddy pipe failed: {stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("eddy pipe:"))
        .unwrap_or("");
    assert!(
        summary.starts_with(
            "eddy pipe: 12 in, 9 out, 3 dropped, 0 failed batches, 0 dead-lettered, 0 rejected lines"
        ),
        "summary: {stderr}"
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, KEPT.map(|k| k.0));
    // The first line, as the README shows it.
    let p = &events[0]["properties"];
    assert_eq!(
        [
            &p["$browser"],
            &p["$os"],
            &p["$device_type"],
            &p["$host"],
            &p["$pathname"],
            &p["$is_first_seen"]
        ],
        [
            &json!("Chrome"),
            &json!("Windows"),
            &json!("Desktop"),
            &json!("shop.example.com"),
            &json!("/"),
            &json!(true)
        ]
    );
    // eddy pipe keeps the recorded time: no max-age check offline.
    assert_eq!(events[0]["timestamp"], 1_763_900_000_000_i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_for_ten_seconds_fills_windows_matches_patterns_and_fires_login_burst() {
    let sandbox = example_plugins();
    let server = sandbox.serve_default();
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.subscribe("windows/events_per_minute", json!({})).await;

    let demo = client(&server, &["demo", "--duration", "10s"]);
    let out = tokio::task::spawn_blocking(move || run_with_timeout(demo, Duration::from_secs(60)))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "eddy demo failed: {stderr}");
    let summary = stderr.lines().last().unwrap_or("");
    // 10 s at the default 50 events/s.
    assert!(
        summary.starts_with("demo: sent 500 events, 500 accepted, 0 rejected,"),
        "eddy demo said: {stderr}"
    );

    // Window results: early results of events_per_minute on the stream
    // (every 5 s), and the REST view with the shop's event names.
    let msg = &ws.messages(1, WAIT).await[0];
    assert_eq!(msg["data"]["window"], "events_per_minute", "{msg}");
    let names = |v: &Value| -> Vec<String> {
        v["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["group"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    let window = poll(server.url("/v1/windows/events_per_minute"), WAIT, |v| {
        let n = names(v);
        ["$pageview", "add_to_cart", "purchase", "login_failed"]
            .iter()
            .all(|want| n.iter().any(|h| h == want))
    })
    .await;
    let pageviews: u64 = window["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["group"]["name"] == "$pageview")
        .map(|g| g["values"]["count"].as_u64().unwrap())
        .sum();
    assert!(pageviews >= 100, "{window}");
    let pages = poll(server.url("/v1/windows/pageviews_per_page"), WAIT, |v| {
        v["groups"].as_array().is_some_and(|g| g.len() >= 5)
    })
    .await;
    assert!(
        pages["groups"][0]["group"]["properties.$pathname"].is_string(),
        "{pages}"
    );

    // Pattern matches, once the watermark has passed them (the login burst
    // comes first, so traffic alone moves event time past it; the rest
    // follow at the latest when the idle timeout lets event time move on).
    let burst = poll(
        server.url("/v1/patterns/login-burst/matches?kind=match"),
        WAIT,
        |v| v["results"].as_array().is_some_and(|r| !r.is_empty()),
    )
    .await;
    let first = &burst["results"][0];
    assert_eq!(first["key"], "account-9001", "{burst}");
    let failures = first["steps"]["failures"].as_array().unwrap();
    assert!(failures.len() >= 3, "{first}");
    assert_eq!(first["steps"]["success"][0]["name"], "login_succeeded");
    poll(
        server.url("/v1/patterns/purchase_funnel/matches?kind=match"),
        WAIT,
        |v| v["results"].as_array().is_some_and(|r| !r.is_empty()),
    )
    .await;

    // The LoginBurst alert fires for the attacked account.
    let firing = poll(server.url("/v1/alerts/history?state=firing"), WAIT, |v| {
        v["transitions"].as_array().is_some_and(|t| {
            t.iter()
                .any(|a| a["alertname"] == "LoginBurst" && a["labels"]["key"] == "account-9001")
        })
    })
    .await;
    assert!(
        firing["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["state"] == "firing"),
        "{firing}"
    );
}
