//! The enricher's own work per event, compiled natively: the plugin code
//! and the SDK's reading of the columns and writing of edits, on the same
//! batch of 1,000 six-property events that `cargo bench -p eddy --bench
//! plugins` sends through the real WebAssembly stage. What the stage costs
//! beyond this is the WebAssembly boundary and the host's side of it (see
//! "Plugin stages" in the README).
//!
//! ```text
//! cd plugins && cargo bench -p ua-enricher --target "$(rustc -vV | sed -n 's/^host: //p')"
//! ```

use std::time::Instant;

use eddy_plugin_sdk::testing::Encoded;
use eddy_plugin_sdk::{Config, NewEvent, Processor};
use ua_enricher::UaEnricher;

const UAS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
];

/// The host bench's events, properties in the order the host sends them.
fn events() -> Vec<NewEvent> {
    (0..1_000usize)
        .map(|i| {
            NewEvent {
                id: format!("evt-{i:08}"),
                name: "$pageview".into(),
                timestamp: 1_700_000_000_000 + i as i64,
                distinct_id: format!("user-{}", i % 97),
                session_id: Some(format!("sess-{}", i % 31)),
                properties: Vec::new(),
            }
            .with(
                "$current_url",
                format!("https://shop.example.com/products/{}?ref=home#top", i % 50),
            )
            .with("$lib", "web")
            .with("$referrer", "https://www.google.com/")
            .with("$screen_width", 1920i64)
            .with("$user_agent", UAS[i % UAS.len()])
            .with("plan", "pro")
        })
        .collect()
}

fn main() {
    let batch = match Encoded::new(&events()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("encoding the batch: {e}");
            std::process::exit(1);
        }
    };
    let mut enricher = match UaEnricher::new(Config::from_json("{}").unwrap_or_default()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("configuring the enricher: {e}");
            std::process::exit(1);
        }
    };
    const SAMPLES: usize = 25;
    const BATCHES: usize = 200;
    let mut edits = 0;
    for _ in 0..BATCHES {
        edits += batch.process(&mut enricher);
    }
    let mut per_event: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..BATCHES {
                edits += std::hint::black_box(batch.process(&mut enricher));
            }
            t.elapsed().as_nanos() as f64 / (BATCHES * batch.len()) as f64
        })
        .collect();
    per_event.sort_by(f64::total_cmp);
    println!(
        "ua-enricher, native (plugin + SDK, no WebAssembly, no host): {:.1} ns/event median, {:.1} min ({} edits per batch)",
        per_event[SAMPLES / 2],
        per_event[0],
        edits / (BATCHES * (SAMPLES + 1)),
    );
}
