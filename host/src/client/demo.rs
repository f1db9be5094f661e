//! `eddy demo`: realistic, seeded PostHog-style traffic for a running eddy,
//! so its windows, patterns, alerts and live views show something real
//! within seconds.
//!
//! The traffic is a small shop, `https://shop.example.com`: visitors
//! (several browsers, systems and devices, a few crawlers that `bot-filter`
//! drops) browse a dozen pages, view products, add them to the cart and
//! buy, or drop off on the way; some log in. It is shaped after the default
//! configuration (`eddy default-config`) so that every part of it fires:
//!
//! - `purchase_funnel`: product view → 1–3 adds to cart → purchase; about a
//!   third of the shoppers leave after adding to the cart
//!   (`cart_abandonment`, which matches 30 minutes of event time later),
//!   some leave after the product view;
//! - the `login-burst` pattern plugin and the `LoginBurst` alert: an
//!   attacker's 3–6 failed logins then a success on one account, sent back
//!   to back — the first in the very first events, then one every 90 s;
//! - `error_rate` and `HighErrorRate`: a few `$exception` events
//!   everywhere (about 1 % of page views, under the alert's 5 %), and an
//!   incident in the first 4 minutes of every 20-minute cycle in which half
//!   the visits to `/checkout` raise one;
//! - `load_time` and `SlowPages`: every page view carries `load_ms`; in the
//!   first 5 minutes of every cycle the product catalogue is slow and
//!   `/search` and `/product/…` take 3.5–9 s.
//!
//! The alerts on windows need event time to pass: `HighErrorRate` must
//! hold for 2 minutes, counted from the end of the first minute window (so
//! it fires 2–3 minutes in), `SlowPages` for 4 minutes over a 10-minute
//! window sliding by 2 (4–6 minutes in); `LoginBurst` fires within
//! seconds. A 10-second run therefore fires `LoginBurst` only.
//!
//! Deterministic: event `k` is due at `k / rate` seconds after the start
//! and is stamped with that time, and everything about it is drawn from a
//! generator seeded with `--seed`, so the same seed and rate send the same
//! events (with the same build of eddy) — only the wall-clock timestamps
//! differ. Each run's event ids are new, so a second run is not taken for
//! duplicates of the first.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::bail;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde_json::{Map, Value, json};

use super::{Poster, SendSummary, now::now_ms};

/// Options of `eddy demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "EDDY_URL")]
    pub url: String,
    /// Events per second (1..=100000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
    /// Stop after this long (e.g. 10s, 5m); without it, run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Seed of the traffic: the same seed (and rate) sends the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// API key (sent as a Bearer token).
    #[arg(long, env = "EDDY_API_KEY")]
    pub api_key: Option<String>,
    /// Stop retrying a refused (429/503) batch after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub retry_for_s: u64,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as 10s, 90s or 5m"))?;
    if d.is_zero() {
        return Err("must be longer than 0s".into());
    }
    Ok(d)
}

/// What `eddy demo` did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DemoSummary {
    /// Events posted (in requests that were answered).
    pub sent: u64,
    /// Events the server accepted.
    pub accepted: u64,
    /// Events it rejected as invalid.
    pub rejected: u64,
    /// Requests made (retries included).
    pub requests: u64,
    /// Requests answered 429 or 503 and retried.
    pub retries: u64,
    /// Seconds taken.
    pub seconds: f64,
}

impl DemoSummary {
    /// Events sent per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.sent as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The one line `eddy demo` prints at the end.
    pub fn to_text(&self) -> String {
        format!(
            "demo: sent {} events, {} accepted, {} rejected, {} requests ({} retried after 429), {:.2} s, {:.0} events/s",
            self.sent,
            self.accepted,
            self.rejected,
            self.requests,
            self.retries,
            self.seconds,
            self.rate()
        )
    }
}

/// How often due events are posted: 10 requests a second at most.
const TICK: Duration = Duration::from_millis(100);
/// Events per request at most (the server's default
/// `ingest.max_events_per_request` is 10,000).
const MAX_BATCH: u64 = 5000;

/// Run `eddy demo` until `--duration` has passed or Ctrl-C.
pub async fn run(opts: &DemoOptions) -> anyhow::Result<DemoSummary> {
    let poster = Poster::new(&opts.url, opts.api_key.clone(), opts.retry_for_s, "event")?;
    let rate = u64::from(opts.rate);
    if rate == 0 {
        bail!("--rate must be at least 1");
    }
    let total = opts
        .duration
        .map(|d| (d.as_millis().min(u128::from(u64::MAX / rate)) as u64) * rate / 1000);
    let mut traffic = Traffic::new(opts.seed, opts.rate);
    let started = Instant::now();
    let start_ms = now_ms();
    let mut counts = SendSummary::default();
    let mut sent = 0u64;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let elapsed = started
            .elapsed()
            .as_millis()
            .min(u128::from(u64::MAX / rate)) as u64;
        let mut due = elapsed * rate / 1000;
        if let Some(total) = total {
            due = due.min(total);
        }
        let step = async {
            while sent < due {
                let upto = due.min(sent + MAX_BATCH);
                let mut body = String::new();
                for k in sent..upto {
                    let at = k * 1000 / rate;
                    let ts = start_ms.saturating_add(i64::try_from(at).unwrap_or(i64::MAX));
                    body.push_str(&traffic.next_event(at).render(start_ms, k, ts));
                    body.push('\n');
                }
                let first = usize::try_from(sent + 1).unwrap_or(usize::MAX);
                poster.post(body, first, &mut counts).await?;
                sent = upto;
            }
            if total.is_some_and(|t| sent >= t) {
                return Ok::<bool, anyhow::Error>(true);
            }
            tokio::time::sleep(TICK).await;
            Ok(false)
        };
        tokio::select! {
            done = step => if done? { break },
            _ = &mut ctrl_c => break,
        }
    }
    Ok(DemoSummary {
        sent,
        accepted: counts.accepted,
        rejected: counts.rejected,
        requests: counts.requests,
        retries: counts.retries,
        seconds: started.elapsed().as_secs_f64(),
    })
}

const HOST: &str = "https://shop.example.com";

/// User agents and how often visitors use them (out of 100); ua-enricher
/// turns them into browser, OS and device.
const AGENTS: &[(&str, u32)] = &[
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36",
        30,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
        20,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
        14,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0",
        10,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
        9,
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
        7,
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
        5,
    ),
    (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        5,
    ),
];

/// Crawlers: a few sessions are theirs, and bot-filter drops them.
const CRAWLERS: &[&str] = &[
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
];

/// Pages of the browsing part, with weights (out of 100).
const PAGES: &[(&str, u32)] = &[
    ("/", 24),
    ("/pricing", 8),
    ("/about", 5),
    ("/blog", 7),
    ("/blog/packing-light", 6),
    ("/search?q=", 14),
    ("/product/", 26),
    ("/account", 5),
    ("/help/shipping", 5),
];

const PRODUCTS: &[(&str, u32)] = &[
    ("trail-shoes", 89),
    ("rain-jacket", 129),
    ("wool-socks", 14),
    ("day-pack", 64),
    ("water-bottle", 19),
    ("headlamp", 34),
];

const SEARCHES: &[&str] = &["shoes", "jacket", "socks", "backpack", "lamp", "bottle"];

/// Length of the incident cycle: an error incident and a slow catalogue at
/// its start, then quiet, so the alerts fire and later resolve.
const CYCLE_MS: u64 = 20 * 60 * 1000;
/// The error incident on /checkout: the first 4 minutes of a cycle.
const INCIDENT_MS: u64 = 4 * 60 * 1000;
/// The slow catalogue: the first 5 minutes of a cycle.
const SLOW_MS: u64 = 5 * 60 * 1000;
/// A login burst starts this often (the first at once).
const ATTACK_EVERY_MS: u64 = 90 * 1000;

/// One step of a visit.
#[derive(Debug, Clone)]
enum Step {
    /// A page view of this path (with query, if any).
    View(String),
    AddToCart(usize),
    Purchase(Vec<usize>),
    LoginFailed,
    LoginSucceeded,
    Exception(&'static str, &'static str),
}

/// A visit in progress: the remaining steps, in reverse.
struct Visit {
    user: usize,
    session: u64,
    steps: Vec<Step>,
    page: String,
}

/// A visitor of the shop.
struct User {
    agent: &'static str,
    ip: String,
    crawler: bool,
}

/// One generated event, before it gets its id and timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoEvent {
    /// Event name.
    pub name: String,
    /// The visitor.
    pub distinct_id: String,
    /// Their visit.
    pub session_id: String,
    /// PostHog-style properties.
    pub properties: Map<String, Value>,
}

impl DemoEvent {
    /// The event as one NDJSON line for `/v1/batch`.
    fn render(&self, run: i64, k: u64, ts: i64) -> String {
        json!({
            "id": format!("demo-{run:x}-{k}"),
            "name": self.name,
            "timestamp": ts,
            "distinct_id": self.distinct_id,
            "session_id": self.session_id,
            "properties": self.properties,
        })
        .to_string()
    }
}

/// The seeded traffic generator.
pub struct Traffic {
    rng: StdRng,
    users: Vec<User>,
    busy: HashSet<usize>,
    visits: Vec<Visit>,
    /// An attacker's events, sent back to back (reverse order).
    burst: Vec<DemoEvent>,
    next_attack_ms: u64,
    attacks: u64,
    sessions: u64,
    concurrent: usize,
}

impl Traffic {
    /// A generator for `rate` events per second.
    pub fn new(seed: u64, rate: u32) -> Traffic {
        let mut rng = StdRng::seed_from_u64(seed);
        // Visits in progress at once: at 50 events/s, 25 visitors each act
        // about every half second.
        let concurrent = (rate as usize / 2).clamp(4, 5000);
        let population = concurrent * 8;
        let users = (0..population)
            .map(|i| {
                let crawler = rng.random_range(0..100) < 4;
                let agent = if crawler {
                    CRAWLERS[rng.random_range(0..CRAWLERS.len())]
                } else {
                    weighted(&mut rng, AGENTS)
                };
                let ip = format!("203.0.113.{}", 1 + i % 254);
                User { agent, ip, crawler }
            })
            .collect();
        Traffic {
            rng,
            users,
            busy: HashSet::new(),
            visits: Vec::new(),
            burst: Vec::new(),
            next_attack_ms: 0,
            attacks: 0,
            sessions: 0,
            concurrent,
        }
    }

    /// The next event, due `at_ms` after the start (non-decreasing).
    pub fn next_event(&mut self, at_ms: u64) -> DemoEvent {
        if let Some(e) = self.burst.pop() {
            return e;
        }
        if at_ms >= self.next_attack_ms {
            self.next_attack_ms += ATTACK_EVERY_MS;
            self.start_attack();
            if let Some(e) = self.burst.pop() {
                return e;
            }
        }
        loop {
            while self.visits.len() < self.concurrent {
                self.start_visit();
            }
            let i = self.rng.random_range(0..self.visits.len());
            let step = self.visits[i].steps.pop();
            let event = step.map(|step| self.step(i, step, at_ms));
            if self.visits[i].steps.is_empty() {
                let done = self.visits.swap_remove(i);
                self.busy.remove(&done.user);
            }
            // A visit always has a step when it starts; one without is
            // simply over.
            if let Some(event) = event {
                return event;
            }
        }
    }

    /// A visitor not in a visit now.
    fn free_user(&mut self) -> usize {
        loop {
            let u = self.rng.random_range(0..self.users.len());
            if !self.busy.contains(&u) {
                self.busy.insert(u);
                return u;
            }
        }
    }

    fn start_visit(&mut self) {
        let user = self.free_user();
        self.sessions += 1;
        let rng = &mut self.rng;
        let mut steps = Vec::new();
        if self.users[user].crawler {
            for _ in 0..rng.random_range(3..8) {
                steps.push(Step::View(page(rng)));
            }
        } else {
            match rng.random_range(0..100) {
                // Browsing.
                0..45 => {
                    for _ in 0..rng.random_range(1..6) {
                        steps.push(Step::View(page(rng)));
                    }
                }
                // Shopping: the funnel, with drop-offs.
                45..85 => {
                    if rng.random_bool(0.5) {
                        steps.push(Step::View(page(rng)));
                    }
                    let product = rng.random_range(0..PRODUCTS.len());
                    steps.push(Step::View(format!("/product/{}", PRODUCTS[product].0)));
                    let outcome = rng.random_range(0..100);
                    if outcome >= 15 {
                        let mut cart = Vec::new();
                        for _ in 0..rng.random_range(1..4) {
                            let p = if cart.is_empty() || rng.random_bool(0.6) {
                                product
                            } else {
                                rng.random_range(0..PRODUCTS.len())
                            };
                            if !cart.is_empty() && rng.random_bool(0.5) {
                                steps.push(Step::View(format!("/product/{}", PRODUCTS[p].0)));
                            }
                            steps.push(Step::AddToCart(p));
                            cart.push(p);
                        }
                        steps.push(Step::View("/cart".into()));
                        // About a third of the carts are abandoned.
                        if outcome >= 45 {
                            steps.push(Step::View("/checkout".into()));
                            steps.push(Step::Purchase(cart));
                            steps.push(Step::View("/checkout/thank-you".into()));
                        }
                    }
                }
                // Logging in, sometimes after a typo or two (never three:
                // that is the attacker's pattern).
                _ => {
                    steps.push(Step::View("/login".into()));
                    for _ in 0..rng.random_range(0..3).min(rng.random_range(0..3)) {
                        steps.push(Step::LoginFailed);
                    }
                    steps.push(Step::LoginSucceeded);
                    steps.push(Step::View("/account".into()));
                }
            }
        }
        steps.reverse();
        self.visits.push(Visit {
            user,
            session: self.sessions,
            steps,
            page: "/".into(),
        });
    }

    /// An attacker guessing a password: 3–6 failed logins on one account,
    /// then a success, from one address, back to back.
    fn start_attack(&mut self) {
        self.attacks += 1;
        self.sessions += 1;
        let failures = self.rng.random_range(3..7);
        let distinct_id = format!("account-{}", 9000 + self.attacks);
        let session_id = format!("s-{}", self.sessions);
        let agent = AGENTS[3].0;
        let mut burst = Vec::new();
        for i in 0..=failures {
            let mut properties = base_properties(agent, "198.51.100.66", "/login");
            properties.insert("email".into(), json!(format!("{distinct_id}@example.com")));
            let name = if i < failures {
                properties.insert("reason".into(), json!("wrong_password"));
                "login_failed"
            } else {
                "login_succeeded"
            };
            burst.push(DemoEvent {
                name: name.into(),
                distinct_id: distinct_id.clone(),
                session_id: session_id.clone(),
                properties,
            });
        }
        burst.reverse();
        self.burst = burst;
    }

    /// The event of visit `i`'s `step`, at `at_ms`.
    fn step(&mut self, i: usize, step: Step, at_ms: u64) -> DemoEvent {
        let in_cycle = at_ms % CYCLE_MS;
        let incident = in_cycle < INCIDENT_MS;
        let slow = in_cycle < SLOW_MS;
        let rng = &mut self.rng;
        let visit = &mut self.visits[i];
        let user = &self.users[visit.user];
        let path = match &step {
            Step::View(p) => {
                let p = if p == "/search?q=" {
                    format!(
                        "/search?q={}",
                        SEARCHES[rng.random_range(0..SEARCHES.len())]
                    )
                } else if p == "/product/" {
                    format!(
                        "/product/{}",
                        PRODUCTS[rng.random_range(0..PRODUCTS.len())].0
                    )
                } else {
                    p.clone()
                };
                visit.page = p.clone();
                p
            }
            _ => visit.page.clone(),
        };
        let mut properties = base_properties(user.agent, &user.ip, &path);
        let name = match step {
            Step::View(_) => {
                let catalogue = path.starts_with("/search") || path.starts_with("/product/");
                let load_ms = if slow && catalogue {
                    rng.random_range(3500..9000)
                } else {
                    rng.random_range(180..900) + rng.random_range(0..700)
                };
                properties.insert("load_ms".into(), json!(load_ms));
                if rng.random_range(0..4) == 0 {
                    properties.insert("$referrer".into(), json!("https://www.google.com/"));
                }
                // An error now and then on any page; during the incident,
                // half the visits to /checkout.
                let fails = if incident && path == "/checkout" {
                    rng.random_bool(0.5)
                } else {
                    rng.random_range(0..100) == 0
                };
                if fails && !user.crawler {
                    visit.steps.push(if path == "/checkout" {
                        Step::Exception(
                            "TypeError",
                            "Cannot read properties of undefined (reading 'total')",
                        )
                    } else {
                        Step::Exception("ChunkLoadError", "Loading chunk 214 failed")
                    });
                }
                "$pageview"
            }
            Step::AddToCart(p) => {
                properties.insert("product_id".into(), json!(PRODUCTS[p].0));
                properties.insert("price".into(), json!(PRODUCTS[p].1));
                "add_to_cart"
            }
            Step::Purchase(cart) => {
                let total: u32 = cart.iter().map(|p| PRODUCTS[*p].1).sum();
                properties.insert("items".into(), json!(cart.len()));
                properties.insert("revenue".into(), json!(total));
                properties.insert("currency".into(), json!("EUR"));
                "purchase"
            }
            Step::LoginFailed => {
                properties.insert(
                    "email".into(),
                    json!(format!("user-{}@example.com", visit.user)),
                );
                properties.insert("reason".into(), json!("wrong_password"));
                "login_failed"
            }
            Step::LoginSucceeded => {
                properties.insert(
                    "email".into(),
                    json!(format!("user-{}@example.com", visit.user)),
                );
                "login_succeeded"
            }
            Step::Exception(kind, message) => {
                properties.insert("$exception_type".into(), json!(kind));
                properties.insert("$exception_message".into(), json!(message));
                "$exception"
            }
        };
        DemoEvent {
            name: name.into(),
            distinct_id: if user.crawler {
                format!("crawler-{}", visit.user)
            } else {
                format!("user-{}", visit.user)
            },
            session_id: format!("s-{}", visit.session),
            properties,
        }
    }
}

fn base_properties(agent: &str, ip: &str, path: &str) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("$current_url".into(), json!(format!("{HOST}{path}")));
    p.insert("$user_agent".into(), json!(agent));
    p.insert("$ip".into(), json!(ip));
    p.insert("$lib".into(), json!("web"));
    p
}

fn page(rng: &mut StdRng) -> String {
    weighted(rng, PAGES).to_owned()
}

fn weighted<T: Copy>(rng: &mut StdRng, table: &[(T, u32)]) -> T {
    let sum: u32 = table.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..sum.max(1));
    for (item, w) in table {
        if pick < *w {
            return *item;
        }
        pick -= w;
    }
    table[0].0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `n` events at `rate`, as the sender draws them.
    fn events(seed: u64, rate: u32, n: u64) -> Vec<(u64, DemoEvent)> {
        let mut t = Traffic::new(seed, rate);
        (0..n)
            .map(|k| {
                let at = k * 1000 / u64::from(rate);
                (at, t.next_event(at))
            })
            .collect()
    }

    fn path(e: &DemoEvent) -> &str {
        e.properties["$current_url"]
            .as_str()
            .unwrap()
            .trim_start_matches(HOST)
    }

    #[test]
    fn the_same_seed_sends_the_same_events() {
        let a = events(7, 50, 3000);
        assert_eq!(a, events(7, 50, 3000));
        assert_ne!(a, events(8, 50, 3000));
    }

    #[test]
    fn a_login_burst_comes_first_and_is_unbroken_for_its_account() {
        let evs = events(1, 50, 500);
        let first = &evs[0].1;
        assert_eq!(first.name, "login_failed");
        let account: Vec<&str> = evs
            .iter()
            .filter(|(_, e)| e.distinct_id == first.distinct_id)
            .map(|(_, e)| e.name.as_str())
            .collect();
        let failures = account.len() - 1;
        assert!((3..=6).contains(&failures), "{account:?}");
        assert!(account[..failures].iter().all(|n| *n == "login_failed"));
        assert_eq!(account[failures], "login_succeeded");
        // Nobody else fails three times in a row before a success.
        let mut streak: std::collections::HashMap<&str, u32> = Default::default();
        for (_, e) in evs.iter().skip(account.len()) {
            let s = streak.entry(e.distinct_id.as_str()).or_default();
            match e.name.as_str() {
                "login_failed" => *s += 1,
                "login_succeeded" => {
                    assert!(*s < 3, "{} looks like an attack", e.distinct_id);
                    *s = 0;
                }
                _ => *s = 0,
            }
        }
    }

    #[test]
    fn funnels_complete_and_drop_off_within_seconds() {
        let evs = events(1, 50, 500); // 10 s
        let purchases = evs.iter().filter(|(_, e)| e.name == "purchase").count();
        let carts = evs.iter().filter(|(_, e)| e.name == "add_to_cart").count();
        assert!(purchases >= 2, "{purchases} purchases");
        assert!(
            carts > purchases,
            "{carts} adds to cart, {purchases} purchases"
        );
        // Every purchase follows a product view and an add to cart of the
        // same user, as purchase_funnel needs.
        for (i, (_, e)) in evs
            .iter()
            .enumerate()
            .filter(|(_, (_, e))| e.name == "purchase")
        {
            let before: Vec<&DemoEvent> = evs[..i]
                .iter()
                .map(|(_, b)| b)
                .filter(|b| b.distinct_id == e.distinct_id)
                .collect();
            let viewed = before
                .iter()
                .position(|b| b.name == "$pageview" && path(b).contains("/product/"));
            let carted = before.iter().rposition(|b| b.name == "add_to_cart");
            assert!(viewed.is_some() && carted > viewed, "{before:?}");
        }
    }

    #[test]
    fn the_incident_and_the_slow_catalogue_cross_the_alert_thresholds_then_stop() {
        let evs = events(3, 50, 50 * 60 * 12); // 12 minutes
        let minute = |m: u64| {
            evs.iter()
                .filter(move |(at, _)| at / 60_000 == m)
                .map(|(_, e)| e)
        };
        let checkout_error_ratio = |m: u64| {
            let on: Vec<&DemoEvent> = minute(m).filter(|e| path(e) == "/checkout").collect();
            on.iter().filter(|e| e.name == "$exception").count() as f64 / on.len() as f64
        };
        for m in 0..4 {
            assert!(
                checkout_error_ratio(m) > 0.05,
                "minute {m}: {}",
                checkout_error_ratio(m)
            );
        }
        assert!(
            checkout_error_ratio(6) < 0.05,
            "{}",
            checkout_error_ratio(6)
        );
        let p95 = |from: u64, to: u64| {
            let mut loads: Vec<u64> = evs
                .iter()
                .filter(|(at, e)| (from..to).contains(&(at / 60_000)) && e.name == "$pageview")
                .filter_map(|(_, e)| e.properties.get("load_ms")?.as_u64())
                .collect();
            loads.sort_unstable();
            loads[loads.len() * 95 / 100]
        };
        assert!(p95(0, 5) > 3000, "{}", p95(0, 5));
        assert!(p95(6, 12) < 3000, "{}", p95(6, 12));
        // Browsers, systems and devices vary; crawlers come by.
        let agents: HashSet<&str> = evs
            .iter()
            .filter_map(|(_, e)| e.properties["$user_agent"].as_str())
            .collect();
        assert!(agents.len() >= 8, "{agents:?}");
        assert!(agents.iter().any(|a| a.contains("Googlebot")));
    }
}
