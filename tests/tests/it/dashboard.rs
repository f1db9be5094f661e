//! The dashboard at `/`, in a real browser: Debian's chromium, headless,
//! driven through chromedriver (WebDriver) by fantoccini. The page talks to
//! a real `eddy serve` on the embedded default configuration and the real
//! plugins, over its public WebSocket and REST API.
//!
//! One walk through the product: events posted over HTTP show up as live
//! users, events per minute, top pages and window tables within 3 s; a
//! funnel shows as a pattern match; a plugin swap shows the new version and
//! the swap; a server restart shows the disconnected banner, then clears it,
//! and the numbers continue without duplicates; an alert goes firing, then
//! resolved. Any console error fails the test. Screenshots (desktop and
//! phone width, light and dark) are saved under the target folder's
//! `tmp/dashboard/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eddy_tests::Sandbox;
use eddy_tests::plugins::{UA_ENRICHER, UA_ENRICHER_V2};
use eddy_tests::server::{Server, get_json, http};
use eddy_tests::{CHROME_WIN, SAFARI_IPHONE};
use serde_json::{Value, json};

/// How soon posted events must show on the page (the issue's bound).
const SHOWS_WITHIN: Duration = Duration::from_secs(3);
/// How long event-time results (a match once the watermark passes, a
/// restart) may take.
const SLOW: Duration = Duration::from_secs(40);

/// The embedded default configuration on the example plugins, plus a
/// ten-second window of checkout outcomes and an alert on it that fires at
/// once (`for` 0), so the test sees an alert fire and resolve in seconds.
fn config(sandbox: &Sandbox) -> PathBuf {
    let mut body = eddy_tests::default_config_body();
    body.push_str(
        r#"
[[windows]]
name = "checkouts"
kind = "tumbling"
size = "10s"
out_of_orderness = "0s"
filter = { names = ["checkout_failed", "checkout_ok"] }
aggregates = ["count", "ratio(name:equals:checkout_failed) as failed_ratio"]

[[alerts]]
name = "CheckoutsFailing"
window = "checkouts"
value = "failed_ratio"
op = ">"
threshold = 0.5
severity = "critical"
annotations = { summary = "{{ $value }} of checkouts fail" }
"#,
    );
    sandbox.install_examples();
    sandbox.config(&body)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn pageview(user: &str, path: &str, ua: &str, ts: i64) -> Value {
    json!({
        "name": "$pageview",
        "distinct_id": user,
        "timestamp": ts,
        "properties": {"$current_url": format!("https://shop.example{path}"), "$user_agent": ua},
    })
}

async fn post(server: &Server, events: &[Value]) {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let resp = http()
        .post(server.url("/v1/batch"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("post events");
    let status = resp.status();
    let answer: Value = resp.json().await.expect("ingest answer");
    assert!(status.is_success(), "ingest refused: {status} {answer}");
    assert_eq!(answer["accepted"], events.len(), "{answer}");
}

/// What the page shows, read from its DOM.
const SNAPSHOT_JS: &str = r##"
const q = (s) => document.querySelector(s);
const qa = (s) => [...document.querySelectorAll(s)];
const text = (s) => (q(s) ? q(s).textContent.trim() : null);
const rows = (t) => [...t.querySelectorAll("tbody tr")].map((tr) => ({
  group: tr.dataset.group, start: Number(tr.dataset.start), kind: tr.dataset.kind,
  values: Object.fromEntries([...tr.querySelectorAll("td[data-value]")].map((td) => [td.dataset.value, td.textContent])),
}));
return {
  banner: !q("#banner").hidden,
  connection: text("#conn-text"),
  stats: {
    live_users: text("#stat-live-users"), events_in: text("#stat-in"), events_out: text("#stat-out"),
    last_30_min: text("#stat-30m"), late: text("#stat-late"), plugin_failures: text("#stat-plugin-failures"),
  },
  users: qa("#live-users li").map((li) => li.dataset.user),
  pages: qa("#top-pages li").map((li) => [li.dataset.url, Number(li.dataset.views)]),
  epm_canvas: !!q("#epm-chart canvas"),
  epm_series: qa("#epm-chart .u-legend .u-series .u-label").map((e) => e.textContent),
  windows: Object.fromEntries(qa("table[data-window]").map((t) => [t.dataset.window, rows(t)])),
  window_charts: qa("article[data-window] .chart canvas").length,
  patterns: qa("#patterns-feed li").map((li) => ({pattern: li.dataset.pattern, kind: li.dataset.kind, key: li.dataset.key})),
  alerts: qa("#alerts tbody tr").map((tr) => ({alertname: tr.dataset.alertname, state: tr.dataset.state})),
  plugins: qa("#plugins tbody tr").map((tr) => ({name: tr.dataset.plugin, hash: tr.dataset.hash, status: tr.dataset.status})),
  plugin_history: qa("#plugin-history li").map((li) => ({plugin: li.dataset.plugin, kind: li.dataset.kind})),
  events: qa("#events tbody tr").map((tr) => ({id: tr.dataset.id, name: tr.dataset.name})),
  browsers: qa('#tech [data-dim="$browser"] li').map((li) => li.dataset.name),
  health: Object.fromEntries(qa("#health dd").map((d) => [d.dataset.health, d.textContent])),
  theme: document.documentElement.dataset.theme,
};
"##;

/// Headless chromium behind chromedriver, on a throw-away profile.
struct Browser {
    driver: Child,
    client: fantoccini::Client,
    profile: tempfile::TempDir,
}

/// chromedriver's (non-W3C, still served) log endpoint: the browser's
/// console and network errors since the last call.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(r#"{"type":"browser"}"#.to_owned()),
        )
    }
}

fn require(program: &str, what: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{program} not found: the dashboard's browser test needs {what}. Install Debian's \
             chromium and chromium-driver (`apt-get install chromium chromium-driver`; \
             scripts/setup does it)"
        )
    })
}

impl Browser {
    async fn start() -> Browser {
        let driver_bin = require("chromedriver", "chromedriver");
        // Debian's /usr/bin/chromium is a wrapper script; the browser is
        // beside it in /usr/lib/chromium.
        let chromium = [
            "/usr/lib/chromium/chromium",
            "/usr/lib/chromium-browser/chromium-browser",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| require("chromium", "chromium"));
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("port").port()
        };
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let webdriver = format!("http://127.0.0.1:{port}");
        let status = format!("{webdriver}/status");
        let started = Instant::now();
        while http().get(&status).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not answer on {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut args = vec![
            "--headless=new".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--lang=en-US".to_owned(),
            "--window-size=1280,800".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        // Chromium's sandbox cannot start as root (CI runs as root).
        if is_root() {
            args.push("--no-sandbox".to_owned());
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps.as_object().expect("caps").clone())
        .connect(&webdriver)
        .await
        .expect("start a chromium session through chromedriver");
        Browser {
            driver,
            client,
            profile,
        }
    }

    async fn snapshot(&self) -> Value {
        self.client
            .execute(SNAPSHOT_JS, vec![])
            .await
            .expect("read the page")
    }

    /// Poll the page until `ok` holds; panic with what it showed last.
    async fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let snap = self.snapshot().await;
            if ok(&snap) {
                return snap;
            }
            assert!(
                started.elapsed() < limit,
                "the dashboard did not show {what} within {limit:?}; it showed:\n{snap:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`Browser::errors`] without those whose message contains one of
    /// `expected` (what a step provokes on purpose).
    async fn errors_except(&self, expected: &[&str]) -> Vec<Value> {
        let mut errors = self.errors().await;
        errors.retain(|e| {
            let m = e["message"].as_str().unwrap_or_default();
            !expected.iter().any(|x| m.contains(x))
        });
        errors
    }

    /// The browser's error-level log entries since the last call.
    async fn errors(&self) -> Vec<Value> {
        let log = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("read the browser log");
        log.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .cloned()
            .collect()
    }

    async fn screenshot(&self, dir: &Path, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("save screenshot");
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A browser whose driver died keeps running; its profile path names it.
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.profile.path())
            .status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

fn rows<'a>(snap: &'a Value, window: &str) -> &'a [Value] {
    snap["windows"][window]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

fn row<'a>(snap: &'a Value, window: &str, group: &str) -> Option<&'a Value> {
    rows(snap, window).iter().find(|r| r["group"] == group)
}

fn value_is(snap: &Value, window: &str, group: &str, value: &str, want: &str) -> bool {
    row(snap, window, group).is_some_and(|r| r["values"][value] == want)
}

/// Whether an OpenAPI path template (`/v1/windows/{name}`) matches `path`.
fn route_matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_eddy_live_in_a_real_browser() {
    let sandbox = Sandbox::new();
    let config = config(&sandbox);
    let mut server = sandbox.serve(&config);
    let browser = Browser::start().await;
    browser
        .client
        .set_window_size(1280, 800)
        .await
        .expect("window size");
    browser
        .client
        .goto(&server.url("/"))
        .await
        .expect("open the dashboard");
    browser
        .wait_for("a live connection", SLOW, |s| s["connection"] == "live")
        .await;

    // Page views of three users: live users, top pages, events per minute
    // and the per-page window show them within 3 s.
    let t = now_ms() - 2_000;
    let mut views = Vec::new();
    for (user, path, ua) in [
        ("alice", "/pricing", CHROME_WIN),
        ("alice", "/pricing", CHROME_WIN),
        ("bob", "/pricing", SAFARI_IPHONE),
        ("bob", "/pricing", SAFARI_IPHONE),
        ("carol", "/pricing", CHROME_WIN),
        ("alice", "/cart", CHROME_WIN),
        ("bob", "/cart", SAFARI_IPHONE),
        ("carol", "/cart", CHROME_WIN),
        ("carol", "/product/1", CHROME_WIN),
        ("alice", "/product/1", CHROME_WIN),
    ] {
        views.push(pageview(user, path, ua, t));
    }
    post(&server, &views).await;
    let posted = Instant::now();
    let snap = browser
        .wait_for(
            "3 live users, top pages and 10 page views per minute",
            SHOWS_WITHIN,
            |s| {
                s["stats"]["live_users"] == "3"
                    && s["pages"]
                        == json!([
                            ["https://shop.example/pricing", 5],
                            ["https://shop.example/cart", 3],
                            ["https://shop.example/product/1", 2],
                        ])
                    && value_is(s, "events_per_minute", "$pageview", "count", "10")
                    && value_is(s, "events_per_minute", "$pageview", "users", "3")
                    && value_is(s, "pageviews_per_page", "/pricing", "views", "5")
                    && value_is(s, "pageviews_per_page", "/pricing", "visitors", "3")
                    && s["stats"]["last_30_min"] == "10"
            },
        )
        .await;
    eprintln!("numbers shown {:?} after posting", posted.elapsed());
    let mut users: Vec<&str> = snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "bob", "carol"]);
    // The events feed and the enricher's browsers, and a chart per window.
    let snap = browser
        .wait_for("the events feed, browsers and charts", SHOWS_WITHIN, |s| {
            s["events"].as_array().is_some_and(|e| e.len() == 10)
                && s["browsers"] == json!(["Chrome", "Mobile Safari"])
                && s["epm_canvas"] == true
                && s["epm_series"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x == "$pageview"))
        })
        .await;
    assert!(
        snap["window_charts"].as_u64().unwrap() >= 4,
        "a chart per non-session window: {snap:#}"
    );

    // A purchase funnel: a product view, an add to cart, a purchase. The
    // match is published once the watermark passes the purchase; a later
    // event (6 s ahead, past the 5 s out-of-orderness) moves it there.
    let t = now_ms();
    post(
        &server,
        &[
            pageview("buyer", "/product/7", CHROME_WIN, t),
            json!({"name": "add_to_cart", "distinct_id": "buyer", "timestamp": t + 1}),
            json!({"name": "purchase", "distinct_id": "buyer", "timestamp": t + 2}),
            pageview("walker", "/", CHROME_WIN, t + 6_000),
        ],
    )
    .await;
    browser
        .wait_for("the funnel's match in the patterns feed", SLOW, |s| {
            s["patterns"].as_array().is_some_and(|p| {
                p.iter().any(|m| {
                    m["pattern"] == "purchase_funnel" && m["kind"] == "match" && m["key"] == "buyer"
                })
            })
        })
        .await;

    // A plugin swap: the plugins panel shows the new version's hash and the
    // swap in its history.
    let before = browser.snapshot().await;
    let old_hash = before["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ua-enricher")
        .map(|p| p["hash"].clone())
        .expect("ua-enricher in the plugins panel");
    sandbox.rename_over(UA_ENRICHER_V2, "ua-enricher");
    let snap = browser
        .wait_for("ua-enricher's new version and its swap", SLOW, |s| {
            s["plugins"].as_array().is_some_and(|p| {
                p.iter().any(|p| {
                    p["name"] == "ua-enricher" && p["hash"] != old_hash && p["status"] == "live"
                })
            }) && s["plugin_history"].as_array().is_some_and(|h| {
                h.iter()
                    .any(|n| n["plugin"] == "ua-enricher" && n["kind"] == "swapped")
            })
        })
        .await;
    let listed = get_json(server.url("/v1/plugins")).await;
    let live_hash = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ua-enricher")
        .map(|p| p["hash"].clone())
        .unwrap();
    assert!(
        snap["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "ua-enricher" && p["hash"] == live_hash),
        "the panel shows the live version {live_hash}: {snap:#}"
    );

    let shots = screenshots_dir();
    browser.screenshot(&shots, "desktop-light").await;
    let errors = browser.errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    // A restart: the banner appears while the server is down and clears
    // when it is back; the restored windows give the same numbers, and new
    // events add to them once.
    // 10 views, the funnel's 3 events, 1 more view.
    let shown_before = json!("14");
    browser
        .wait_for("14 events in the last 30 minutes", SHOWS_WITHIN, |s| {
            s["stats"]["last_30_min"] == shown_before
        })
        .await;
    let addr = server.addr.clone();
    server.terminate(Duration::from_secs(30));
    browser
        .wait_for("the disconnected banner", SLOW, |s| s["banner"] == true)
        .await;
    let server = sandbox.serve_on(&config, &addr, &[]);
    browser
        .wait_for("the banner cleared after the restart", SLOW, |s| {
            s["banner"] == false && s["connection"] == "live"
        })
        .await;
    // Refused connections while the server was down are the only errors.
    let outage = browser
        .errors_except(&["ERR_CONNECTION_REFUSED", "ERR_CONNECTION_RESET"])
        .await;
    assert!(outage.is_empty(), "console errors: {outage:#?}");
    browser
        .wait_for("the same count after the restart", SLOW, |s| {
            s["stats"]["last_30_min"] == shown_before
        })
        .await;
    let t = now_ms();
    post(
        &server,
        &(0..5)
            .map(|i| pageview("dave", "/pricing", CHROME_WIN, t + i))
            .collect::<Vec<_>>(),
    )
    .await;
    let snap = browser
        .wait_for("the new events counted once", SHOWS_WITHIN, |s| {
            s["stats"]["last_30_min"] == "19"
        })
        .await;
    let mut ids: Vec<&str> = snap["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    let shown = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), shown, "an event shown twice: {snap:#}");

    // An alert fires, then resolves. Checkouts 20 s ahead of now in
    // ten-second windows: all failing in the first, none in the second.
    let w = (now_ms() / 10_000 + 3) * 10_000;
    post(
        &server,
        &[
            json!({"name": "checkout_failed", "distinct_id": "eve", "timestamp": w + 1_000}),
            json!({"name": "checkout_failed", "distinct_id": "eve", "timestamp": w + 2_000}),
            json!({"name": "checkout_ok", "distinct_id": "eve", "timestamp": w + 11_000}),
        ],
    )
    .await;
    browser
        .wait_for("CheckoutsFailing firing", SLOW, |s| {
            s["alerts"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|a| a["alertname"] == "CheckoutsFailing" && a["state"] == "firing")
            })
        })
        .await;
    post(
        &server,
        &[json!({"name": "checkout_ok", "distinct_id": "eve", "timestamp": w + 21_000})],
    )
    .await;
    browser
        .wait_for("CheckoutsFailing resolved", SLOW, |s| {
            s["alerts"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|a| a["alertname"] == "CheckoutsFailing" && a["state"] == "resolved")
            })
        })
        .await;

    // Screenshots: desktop and phone width, light and dark.
    for (width, height, name) in [(1280, 800, "desktop"), (390, 844, "phone")] {
        browser
            .client
            .set_window_size(width, height)
            .await
            .expect("window size");
        for theme in ["light", "dark"] {
            let current = browser.snapshot().await["theme"].clone();
            if current != theme {
                browser
                    .client
                    .execute("document.querySelector('#theme-toggle').click()", vec![])
                    .await
                    .expect("toggle the theme");
                browser
                    .wait_for(theme, SHOWS_WITHIN, |s| s["theme"] == theme)
                    .await;
                // Charts repaint in the new colours on the next 1 Hz tick.
                tokio::time::sleep(Duration::from_millis(1200)).await;
            }
            browser.screenshot(&shots, &format!("{name}-{theme}")).await;
        }
    }
    let errors = browser.errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    eprintln!("screenshots in {}", shots.display());

    // Every API call the page made is a documented route.
    let fetched = browser
        .client
        .execute(
            "return performance.getEntriesByType('resource').map((e) => e.name)",
            vec![],
        )
        .await
        .expect("resource timings");
    let doc = get_json(server.url("/openapi.json")).await;
    let documented: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    let mut api_calls = 0;
    for url in fetched.as_array().unwrap().iter().filter_map(Value::as_str) {
        let path = url::Url::parse(url).expect("a URL").path().to_owned();
        let assets = [
            "/app.js",
            "/style.css",
            "/vendor/uPlot.iife.min.js",
            "/vendor/uPlot.min.css",
        ];
        if assets.contains(&path.as_str()) {
            continue;
        }
        api_calls += 1;
        assert!(
            documented.iter().any(|route| route_matches(route, &path)),
            "the dashboard called {path}, which /openapi.json does not document"
        );
    }
    assert!(api_calls > 10, "the page's REST calls were seen: {fetched}");
    browser.close().await;
}

/// With `[auth] read_keys`, the page asks for a key, keeps it in the
/// browser only (localStorage) and streams with it; a wrong key is refused
/// and said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_a_read_key_and_streams_with_it() {
    let sandbox = Sandbox::new();
    sandbox.install(UA_ENRICHER, "ua-enricher");
    let config = sandbox.config(
        r#"
[auth]
read_keys = ["reader-key"]

[[stages]]
plugin = "ua-enricher"
"#,
    );
    let server = sandbox.serve(&config);
    let browser = Browser::start().await;
    browser
        .client
        .goto(&server.url("/"))
        .await
        .expect("open the dashboard");
    let key_form = r##"return {form: !document.querySelector("#key-form").hidden,
        message: document.querySelector("#key-message").textContent,
        stored: localStorage.getItem("eddy.key")};"##;
    let enter = |key: &'static str| {
        format!(
            r##"document.querySelector("#key-input").value = "{key}";
               document.querySelector("#key-form").requestSubmit();"##
        )
    };
    let started = Instant::now();
    loop {
        let v = browser.client.execute(key_form, vec![]).await.unwrap();
        if v["form"] == true && v["message"] == "a read key is needed" {
            break;
        }
        assert!(started.elapsed() < SLOW, "no key form: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser
        .client
        .execute(&enter("wrong-key"), vec![])
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let v = browser.client.execute(key_form, vec![]).await.unwrap();
        if v["form"] == true && v["message"] == "this key has no read access" {
            break;
        }
        assert!(
            started.elapsed() < SLOW,
            "the wrong key was not refused: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser
        .client
        .execute(&enter("reader-key"), vec![])
        .await
        .unwrap();
    browser
        .wait_for("a live connection with the key", SLOW, |s| {
            s["connection"] == "live"
        })
        .await;
    post(&server, &[pageview("kim", "/", CHROME_WIN, now_ms())]).await;
    browser
        .wait_for("the event, streamed with the key", SHOWS_WITHIN, |s| {
            s["stats"]["live_users"] == "1" && s["events"].as_array().is_some_and(|e| e.len() == 1)
        })
        .await;
    let v = browser.client.execute(key_form, vec![]).await.unwrap();
    assert_eq!(v["stored"], "reader-key", "kept in the browser: {v}");
    // The refused probes (401, 403) are the only errors.
    let errors = browser
        .errors_except(&["401 (Unauthorized)", "403 (Forbidden)"])
        .await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    browser.close().await;
}
