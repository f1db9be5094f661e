//! The events the load generators (`loadgen`, `kafkaload`) send.

/// User agents the generated page views cycle through.
pub const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0.6099.109 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) Version/17.1 Mobile Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) Firefox/121.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/120.0.6099.144 Mobile Safari/537.36",
];

/// Digits of the number in an event's id (`lg-RUN-NUMBER`), zero-padded so
/// that a body's ids can be rewritten in place.
pub const ID_DIGITS: usize = 12;

/// One `$pageview` NDJSON line (with its newline), about 200–250 bytes. Its
/// id is `lg-{run}-{id}`: `run` (the load generator's start time) keeps runs
/// against the same server from repeating ids, which its deduplication by
/// id would drop. Returns where the id's number starts in `out`.
pub fn pageview(out: &mut String, run: u64, id: u64, ts_ms: u64, sent_us: Option<u64>) -> usize {
    use std::fmt::Write as _;
    let user = id.wrapping_mul(2_654_435_761) % 50_000;
    let page = id % 500;
    let ua = USER_AGENTS[(user % 4) as usize];
    let at = out.len() + format!("{{\"id\":\"lg-{run}-").len();
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{{\"id\":\"lg-{run}-{id:0ID_DIGITS$}\",\"name\":\"$pageview\",\"distinct_id\":\"user-{user}\",\
         \"timestamp\":{ts_ms},\"properties\":{{\"$current_url\":\"https://shop.example.com/p/{page}\",\
         \"$user_agent\":\"{ua}\",\"$lib\":\"web\""
    );
    if let Some(us) = sent_us {
        let _ = write!(out, ",\"sent_us\":{us}");
    }
    out.push_str("}}\n");
    at
}
