//! Built-in live views: who is on the site now, and what they look at.
//!
//! - **Live users**: every `distinct_id` seen in the last `users_window` of
//!   event time, with the `$current_url` of their latest event that had one.
//! - **Top pages**: `$pageview` counts per `$current_url` over the last
//!   `pages_window`, in one-second buckets, top-k on request.
//!
//! "Now" is event time, from the engine's event-time service: the newest
//! timestamp seen, moved on with wall time once the stream is idle (as
//! window watermarks are), so a replay of old data shows the users of its
//! own moment. Both views are bounded:
//! `max_users` users (further new users are counted, not tracked, until
//! older ones expire) and `max_pages` distinct pages per bucket (the rest
//! count as `__overflow__`).

use std::collections::{BTreeMap, HashMap};

use compact_str::CompactString;
use serde_json::{Value as Json, json};

use super::groups::OVERFLOW;
use super::snapshot::{LiveState, SharedStr};
use super::state::KeyGroupSet;
use super::users::{Entry, Users};
use crate::engine::time::{Admit, BatchTime, EventTime};
use crate::event::{Event, Value};

/// `[live]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveConfig {
    /// A user is live when seen within this much event time (ms). Default 5
    /// minutes, the usual "active now" span of product analytics tools.
    pub users_window_ms: i64,
    /// Most users tracked. Default 100,000 (about 21 MB: see
    /// `window::users`).
    pub max_users: usize,
    /// Top pages are counted over this much event time (ms). Default 1
    /// minute.
    pub pages_window_ms: i64,
    /// Most distinct pages counted per one-second bucket. Default 10,000.
    pub max_pages: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            users_window_ms: 300_000,
            max_users: 100_000,
            pages_window_ms: 60_000,
            max_pages: 10_000,
        }
    }
}

const CURRENT_URL: &str = "$current_url";
const PAGEVIEW: &str = "$pageview";
const BUCKET_MS: i64 = 1_000;

/// The live views' state.
#[derive(Debug)]
pub struct LiveViews {
    config: LiveConfig,
    now: i64,
    /// Largest admitted timestamp seen (what pruning measures from).
    max_ts: Option<i64>,
    users: Users,
    /// Per batch: each event's user key (see [`LiveViews::observe`]).
    keys: Vec<u64>,
    users_untracked: u64,
    /// Event time of the last pruning by [`LiveViews::make_room`].
    pruned_at: i64,
    pages: BTreeMap<i64, HashMap<CompactString, u64, foldhash::fast::RandomState>>,
    /// Off when nothing can read the views (see [`LiveViews::switch_off`]).
    off: bool,
}

impl LiveViews {
    /// Empty views.
    pub fn new(config: LiveConfig) -> LiveViews {
        LiveViews {
            config,
            now: i64::MIN,
            max_ts: None,
            users: Users::new(),
            keys: Vec::new(),
            users_untracked: 0,
            pruned_at: i64::MIN,
            pages: BTreeMap::new(),
            off: false,
        }
    }

    /// Stop keeping the views, and forget what they hold: the driver has
    /// no reader for them (`eddy pipe` without a snapshot: no queries, no
    /// state written). They then show no users and no pages.
    pub fn switch_off(&mut self) {
        *self = LiveViews::new(self.config);
        self.off = true;
    }

    /// Take in a batch, with the admission the event-time service decided
    /// for each event.
    pub fn observe(&mut self, events: &[Event], time: &BatchTime) {
        /// How many events ahead a user's slot is prefetched: enough to
        /// cover a trip to memory, few enough to stay in the cache.
        const AHEAD: usize = 8;
        if self.off {
            return;
        }
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        keys.extend(events.iter().map(|ev| self.users.hash(&ev.distinct_id)));
        for &key in keys.iter().take(AHEAD) {
            self.users.prefetch(key);
        }
        for (i, ev) in events.iter().enumerate() {
            if let Some(&ahead) = keys.get(i + AHEAD) {
                self.users.prefetch(ahead);
            }
            let Some(Admit::At(ts)) = time.admit.get(i).copied() else {
                continue;
            };
            self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
            let url = match ev.get(CURRENT_URL) {
                Some(Value::Str(u)) => Some(u),
                _ => None,
            };
            self.see_user(ev, keys[i], ts, url);
            if ev.name == PAGEVIEW
                && let Some(url) = url
            {
                self.count_page(ts, url);
            }
        }
        self.keys = keys;
        // Only the cheap part here (dropping whole page buckets); users are
        // pruned on ticks, not once per batch. Within a batch "now" is the
        // newest timestamp (idle advance happens only on ticks).
        if let Some(now) = self.max_ts {
            self.expire_pages(now);
        }
    }

    fn see_user(&mut self, ev: &Event, key: u64, ts: i64, url: Option<&CompactString>) {
        let url = url.map(|u| (u, self.users.hash(u)));
        if let Entry::Found(at) = self.users.entry(key) {
            let (last_seen, url_hash) = self.users.seen(at);
            if ts >= last_seen {
                self.users.touch(at, ts);
                // Most events repeat the page the user is on: the string
                // is only copied when the page changes.
                if let Some((u, hash)) = url
                    && hash != url_hash
                {
                    self.users.set_url(at, u, hash);
                }
            } else if url_hash == 0
                && let Some((u, hash)) = url
            {
                self.users.set_url(at, u, hash);
            }
            return;
        }
        if self.users.len() >= self.config.max_users && !self.make_room() {
            self.users_untracked += 1;
            return;
        }
        // Looked up again: making room may have moved everyone.
        if let Entry::Vacant(at) = self.users.entry(key) {
            self.users.insert(at, key, &ev.distinct_id, ts, url);
        }
    }

    /// Forget users who left the window, if event time moved since the
    /// last time this was done (so a full table costs one scan per step of
    /// event time, not one per new user). True if there is room now.
    fn make_room(&mut self) -> bool {
        let now = self.max_ts.unwrap_or(i64::MIN);
        if now > self.pruned_at {
            self.pruned_at = now;
            let from = now.saturating_sub(self.config.users_window_ms);
            self.users.retain_seen_after(from);
        }
        self.users.len() < self.config.max_users
    }

    fn count_page(&mut self, ts: i64, url: &CompactString) {
        let bucket = ts.div_euclid(BUCKET_MS);
        let pages = self.pages.entry(bucket).or_default();
        let max = self.config.max_pages;
        if let Some(n) = pages.get_mut(url.as_str()) {
            // The common case: a page already seen this second, counted
            // without building a key.
            *n += 1;
        } else if pages.len() < max {
            pages.insert(url.clone(), 1);
        } else {
            *pages.entry(CompactString::from(OVERFLOW)).or_insert(0) += 1;
        }
    }

    /// Wall time moved: move "now" on (idle advance included) and forget
    /// what left the windows.
    pub fn tick(&mut self, time: &EventTime) {
        let Some(event_now) = time.event_now().filter(|_| !self.off) else {
            return;
        };
        let event_now = self.expire_pages(event_now);
        let users_from = event_now.saturating_sub(self.config.users_window_ms);
        self.users.retain_seen_after(users_from);
    }

    /// Move "now" to `event_now` and drop page buckets that left the
    /// window; returns "now".
    fn expire_pages(&mut self, event_now: i64) -> i64 {
        self.now = event_now;
        let first_bucket = event_now
            .saturating_sub(self.config.pages_window_ms)
            .div_euclid(BUCKET_MS);
        while let Some(entry) = self.pages.first_entry() {
            if *entry.key() > first_bucket {
                break;
            }
            entry.remove();
        }
        event_now
    }

    /// `GET /v1/live/users`: the live users, most recently seen first, at
    /// most `limit` of them (`count` is all of them).
    pub fn users(&self, limit: usize) -> Json {
        // Pruning runs on the ticker: leave out anyone who left since.
        let from = self.now.saturating_sub(self.config.users_window_ms);
        let mut users: Vec<(&SharedStr, i64, Option<&SharedStr>)> = self
            .users
            .iter()
            .filter(|&(_, last_seen, _)| last_seen > from)
            .collect();
        let order = |a: &(&SharedStr, i64, Option<&SharedStr>),
                     b: &(&SharedStr, i64, Option<&SharedStr>)| {
            b.1.cmp(&a.1).then(a.0.cmp(b.0))
        };
        let count = users.len();
        // Only the first `limit` are shown: select them in linear time, then
        // sort those (a dashboard asks for 10 of 100,000).
        if limit < users.len() {
            users.select_nth_unstable_by(limit, order);
            users.truncate(limit);
        }
        users.sort_unstable_by(order);
        let list: Vec<Json> = users
            .into_iter()
            .take(limit)
            .map(|(id, last_seen, url)| {
                json!({"distinct_id": &**id, "last_seen": last_seen, "current_url": url.map(|u| &**u)})
            })
            .collect();
        json!({
            "window_ms": self.config.users_window_ms,
            "now": self.now_json(),
            "count": count,
            "untracked": self.users_untracked,
            "users": list,
        })
    }

    /// `GET /v1/live/pages`: the `limit` most viewed pages of the last
    /// `pages_window`, most viewed first (ties by URL).
    pub fn pages(&self, limit: usize) -> Json {
        let mut totals: HashMap<&str, u64> = HashMap::new();
        for bucket in self.pages.values() {
            for (url, n) in bucket {
                *totals.entry(url.as_str()).or_insert(0) += n;
            }
        }
        let views: u64 = totals.values().sum();
        let mut top: Vec<(&str, u64)> = totals.into_iter().collect();
        top.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let list: Vec<Json> = top
            .into_iter()
            .take(limit)
            .map(|(url, n)| json!({"url": url, "views": n}))
            .collect();
        json!({
            "window_ms": self.config.pages_window_ms,
            "now": self.now_json(),
            "views": views,
            "pages": list,
        })
    }

    fn now_json(&self) -> Json {
        if self.now == i64::MIN {
            Json::Null
        } else {
            Json::from(self.now)
        }
    }

    /// Set the live-view gauges.
    pub fn record_metrics(&self) {
        metrics::gauge!("eddy_live_users").set(self.users.len() as f64);
        metrics::counter!("eddy_live_users_untracked_total").absolute(self.users_untracked);
    }
}

impl LiveViews {
    /// Everything the live views hold.
    pub fn snapshot(&self) -> LiveState {
        // Copied as they lie; key groups and the canonical order are
        // filled in by `LiveState::canonicalize` when the state is encoded
        // (off the engine thread).
        let users: Vec<_> = self
            .users
            .iter()
            .map(|(id, seen, url)| (0, id.clone(), seen, url.cloned()))
            .collect();
        let pages = self
            .pages
            .iter()
            .map(|(bucket, counts)| {
                let v: Vec<_> = counts.iter().map(|(url, n)| (0, url.clone(), *n)).collect();
                (*bucket, v)
            })
            .collect();
        LiveState {
            now: self.now,
            max_ts: self.max_ts,
            users_untracked: self.users_untracked,
            pruned_at: self.pruned_at,
            users,
            pages,
        }
    }

    /// Continue from `state`, keeping the users and pages of `groups`.
    pub fn restore(&mut self, state: LiveState, groups: &KeyGroupSet) {
        let mut fresh = LiveViews::new(self.config);
        fresh.now = state.now;
        fresh.max_ts = state.max_ts;
        fresh.users_untracked = state.users_untracked;
        fresh.pruned_at = state.pruned_at;
        for (kg, id, seen, url) in state.users {
            if groups.contains(kg) {
                fresh.users.restore(&id, seen, url.as_ref());
            }
        }
        for (bucket, counts) in state.pages {
            let kept: std::collections::HashMap<_, _, _> = counts
                .into_iter()
                .filter(|(kg, _, _)| groups.contains(*kg))
                .map(|(_, url, n)| (url, n))
                .collect();
            if !kept.is_empty() {
                fresh.pages.insert(bucket, kept);
            }
        }
        *self = fresh;
    }
}
