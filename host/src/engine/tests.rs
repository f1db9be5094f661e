//! The engine's promises, in process: the same inputs give the same
//! outputs however they are batched, and a snapshot restored into a new
//! engine continues exactly as the original would (outputs, sequence
//! numbers and the state itself). Runs with windows and live views and no
//! plugins; the integration tests (`tests/it/engine.rs`) drive the real
//! binary with plugins.

use std::sync::Arc;

use serde_json::Value as Json;

use super::*;
use crate::plugin::PluginEngine;

const T0: i64 = 1_763_899_980_000;

use crate::test_rng::Rng;

const CONFIG: &str = r#"
[time]
idle_timeout = "10s"
future_skew = "2m"

[live]
users_window = "1m"
max_users = 50
pages_window = "30s"

[[windows]]
name = "per_minute"
kind = "tumbling"
size = "1m"
group_by = ["name"]
aggregates = ["count", "distinct(distinct_id) as users", "p95(properties.ms)"]
early_every = "5s"
allowed_lateness = "30s"

[[windows]]
name = "pages"
kind = "sliding"
size = "2m"
slide = "30s"
group_by = ["properties.$pathname"]
aggregates = ["count", "avg(properties.ms)", "last(properties.$pathname) as last"]
max_groups = 4

[[windows]]
name = "sessions"
kind = "session"
gap = "40s"
max_duration = "5m"
group_by = ["distinct_id"]
aggregates = ["count as events", "first(properties.$pathname) as entry"]
allowed_lateness = "20s"
"#;

fn engine() -> (Config, Arc<Registry>, Arc<VirtualClock>) {
    let dir = std::env::temp_dir();
    let text = format!("plugins_dir = {:?}\n{CONFIG}", dir.display().to_string());
    let config = Config::parse(&text, "engine test", &|_| None).unwrap();
    let clock = VirtualClock::new();
    let registry = Registry::new(
        PluginEngine::with_virtual_clock(clock.clone()).unwrap(),
        config.runtime.clone(),
        dir,
    );
    (config, registry, clock)
}

fn fresh() -> Engine {
    let (config, registry, clock) = engine();
    let options = EngineOptions {
        first_seq: 1_000,
        seed: 7,
        plugins: BTreeMap::new(),
    };
    Engine::new(&config, registry, clock, &options).unwrap()
}

fn event(rng: &mut Rng, i: usize, ts: i64) -> Event {
    let pages = ["/", "/pricing", "/docs", "/blog", "/about", "/cart"];
    let path = pages[rng.below(pages.len() as u64) as usize];
    let mut properties = vec![("$pathname".into(), crate::event::Value::Str(path.into()))];
    if rng.below(4) > 0 {
        properties.push((
            "ms".into(),
            crate::event::Value::Int(rng.below(900) as i64 + 10),
        ));
    }
    Event {
        id: format!("e{i}").into(),
        name: if rng.below(10) == 0 {
            "$identify"
        } else {
            "$pageview"
        }
        .into(),
        timestamp: ts,
        distinct_id: format!("u{}", rng.below(40)).into(),
        session_id: None,
        properties,
    }
}

/// A stream of inputs: batches of 1 to 60 events at advancing wall time,
/// mostly in order, with late and far-future events, idle gaps (ticks
/// without events) and the end.
fn inputs(seed: u64) -> Vec<Input> {
    let mut rng = Rng::new(seed);
    let mut wall = T0;
    let mut cursor = T0;
    let mut out = Vec::new();
    let mut n = 0;
    let mut position = 0;
    for _ in 0..120 {
        match rng.below(10) {
            0 => {
                // An idle gap: wall time moves on in ticks, no events.
                for _ in 0..rng.below(4) + 1 {
                    wall += 1_000 + rng.below(8_000) as i64;
                    out.push(Input::Tick {
                        wall_ms: wall,
                        position: None,
                    });
                }
            }
            1 => {
                wall += 100;
                out.push(Input::Tick {
                    wall_ms: wall,
                    position: None,
                });
            }
            _ => {
                let size = rng.below(60) as usize + 1;
                let mut events = Vec::with_capacity(size);
                for _ in 0..size {
                    cursor += rng.below(600) as i64;
                    let ts = match rng.below(40) {
                        0 => cursor - 90_000 - rng.below(60_000) as i64, // late
                        1 => wall + 3_600_000,                           // future
                        2..=6 => cursor - rng.below(20_000) as i64,      // out of order
                        _ => cursor,
                    };
                    events.push(event(&mut rng, n, ts));
                    n += 1;
                }
                position += events.len() as u64;
                wall = wall.max(cursor) + rng.below(300) as i64;
                out.push(Input::Batch(Batch {
                    source: 0,
                    position,
                    wall_ms: Some(wall),
                    events,
                }));
            }
        }
    }
    out.push(Input::Finish);
    out
}

/// Every message the inputs published, as `(channel, seq, data)`.
fn run(engine: &mut Engine, inputs: &[Input]) -> Vec<(String, u64, Json)> {
    let mut sink: Vec<Emitted> = Vec::new();
    for i in inputs {
        engine.step(i.clone(), &mut sink);
    }
    let names = engine.window_names().to_vec();
    sink.iter()
        .flat_map(|e| {
            let channel = e.channel(&names);
            e.messages()
                .into_iter()
                .map(move |(seq, data)| (channel.clone(), seq, data))
        })
        .collect()
}

#[test]
fn the_stream_exercises_what_snapshots_must_carry() {
    let out = run(&mut fresh(), &inputs(1));
    let count = |f: &dyn Fn(&(String, u64, Json)) -> bool| out.iter().filter(|m| f(m)).count();
    assert!(count(&|m| m.2["kind"] == "early") > 0, "early results");
    assert!(count(&|m| m.2["kind"] == "correction") > 0, "corrections");
    assert!(count(&|m| m.2["reason"] == "late") > 0, "late events");
    assert!(count(&|m| m.2["reason"] == "future") > 0, "future events");
    assert!(count(&|m| m.2["replaces"].is_array()) > 0, "session merges");
    assert!(
        count(&|m| m.2["group"]["properties.$pathname"] == "__overflow__") > 0,
        "overflow"
    );
}

#[test]
fn outputs_do_not_depend_on_how_events_are_batched() {
    let whole = inputs(2);
    // The same events, every batch split in two (same wall time each).
    let mut split = Vec::new();
    for i in &whole {
        match i {
            Input::Batch(b) if b.events.len() > 1 => {
                let mid = b.events.len() / 2;
                let (a, c) = b.events.split_at(mid);
                for part in [a, c] {
                    split.push(Input::Batch(Batch {
                        events: part.to_vec(),
                        ..b.clone()
                    }));
                }
            }
            other => split.push(other.clone()),
        }
    }
    // Each channel carries the same messages under the same numbers (how
    // channels interleave follows the batches, as it does on a server).
    let per_channel = |mut out: Vec<(String, u64, Json)>| {
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    };
    let a = per_channel(run(&mut fresh(), &whole));
    let b = per_channel(run(&mut fresh(), &split));
    assert!(split.len() > whole.len());
    if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
        panic!(
            "message {i} differs:\n  whole {:?}\n  split {:?}",
            a[i], b[i]
        );
    }
    assert_eq!(a.len(), b.len());
}

#[test]
fn switching_off_the_query_state_changes_no_published_message() {
    for seed in 0..3 {
        let stream = inputs(seed);
        let mut kept = fresh();
        let want = run(&mut kept, &stream);
        let mut off = fresh();
        off.switch_off_query_state();
        let got = run(&mut off, &stream);
        assert!(want.len() > 100, "seed {seed}: the stream publishes");
        assert_eq!(got, want, "seed {seed}");
        // What it switched off: the engine that kept them has users and
        // history; the other has neither.
        let users = |e: &Engine| e.windows().live().users(10)["count"].as_u64();
        let history = |e: &Engine| {
            e.windows().history("per_minute").map(|h| {
                h.query(&crate::window::HistoryQuery {
                    from: None,
                    to: None,
                    group: Vec::new(),
                    limit: usize::MAX,
                })
                .len()
            })
        };
        assert!(
            users(&kept).is_some_and(|n| n > 0),
            "seed {seed}: live users"
        );
        assert_eq!(users(&off), Some(0), "seed {seed}");
        assert!(
            history(&kept).is_some_and(|n| n > 0),
            "seed {seed}: history"
        );
        assert_eq!(history(&off), Some(0), "seed {seed}");
    }
}

#[test]
fn a_restored_engine_continues_exactly_as_the_original() {
    let (config, registry, clock) = engine();
    let mut cuts_checked = 0;
    for seed in 0..4 {
        let stream = inputs(seed);
        let mut original = fresh();
        let whole = run(&mut original, &stream);
        let final_state = original.snapshot();
        let mut rng = Rng::new(seed + 100);
        for _ in 0..12 {
            let cut = rng.below(stream.len() as u64) as usize;
            let mut first = fresh();
            let mut out = run(&mut first, &stream[..cut]);
            let bytes = first.snapshot();
            let mut restored =
                Engine::restore(&config, registry.clone(), clock.clone(), &bytes).unwrap();
            assert_eq!(
                restored.snapshot(),
                bytes,
                "seed {seed} cut {cut}: a restore reproduces the state"
            );
            out.extend(run(&mut restored, &stream[cut..]));
            if let Some(i) = (0..whole.len().min(out.len())).find(|&i| whole[i] != out[i]) {
                panic!(
                    "seed {seed}, cut at input {cut}: message {i} differs\n  uninterrupted {:?}\n  restored      {:?}",
                    whole[i], out[i]
                );
            }
            assert_eq!(whole.len(), out.len(), "seed {seed} cut {cut}");
            assert_eq!(
                restored.snapshot(),
                final_state,
                "seed {seed} cut {cut}: the restored engine ends in the same state"
            );
            cuts_checked += 1;
        }
    }
    assert_eq!(cuts_checked, 48);
}

#[test]
fn a_reload_keeps_what_every_state_store_holds() {
    let (config, _, _) = engine();
    let mut e = fresh();
    // A scope no stage uses (a pattern plugin's): the reload adopts its
    // store, then restores the entries it snapshotted into it.
    let store = e.pipeline.state_store("pattern-scope");
    store.set("user-1".into(), b"seen".to_vec()).unwrap();
    store.set("user-2".into(), b"twice".to_vec()).unwrap();
    let before = store.snapshot();
    e.pipeline.reconfigure(&config, 7).unwrap();
    assert_eq!(store.snapshot(), before);
    assert_eq!(
        e.pipeline.state_store("pattern-scope").get("user-2"),
        Some(b"twice".to_vec())
    );
}

#[test]
fn a_damaged_or_foreign_snapshot_is_refused_clearly() {
    let (config, registry, clock) = engine();
    let mut e = fresh();
    run(&mut e, &inputs(3)[..20]);
    let mut bytes = e.snapshot();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    let err = Engine::restore(&config, registry.clone(), clock.clone(), &bytes)
        .err()
        .unwrap();
    assert!(err.to_string().contains("damaged"), "{err}");

    // The same snapshot under a changed window definition.
    let good = e.snapshot();
    let changed = config_with(&CONFIG.replace("size = \"1m\"", "size = \"2m\""));
    let err = Engine::restore(&changed, registry, clock, &good)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("window `per_minute` changed since the snapshot"),
        "{err}"
    );
}

fn config_with(body: &str) -> Config {
    let text = format!(
        "plugins_dir = {:?}\n{body}",
        std::env::temp_dir().display().to_string()
    );
    Config::parse(&text, "engine test", &|_| None).unwrap()
}

#[test]
fn outputs_reach_the_sink_numbered_per_channel_from_the_first_seq() {
    let mut e = fresh();
    let mut sink: Vec<Emitted> = Vec::new();
    let ev = |i: usize, ts| {
        let mut rng = Rng::new(i as u64);
        event(&mut rng, i, ts)
    };
    e.step(
        Input::Batch(Batch {
            source: 0,
            position: 2,
            wall_ms: Some(T0),
            events: vec![ev(0, T0), ev(1, T0 + 3_600_000)],
        }),
        &mut sink,
    );
    let names = e.window_names().to_vec();
    let got: Vec<(String, Vec<u64>)> = sink
        .iter()
        .map(|o| {
            (
                o.channel(&names),
                o.messages().iter().map(|m| m.0).collect(),
            )
        })
        .collect();
    assert_eq!(got[0], ("events".to_owned(), vec![1_000, 1_001]));
    // The future event is reported by each window it matches, on `late`.
    let late: Vec<u64> = got
        .iter()
        .filter(|(c, _)| c == "late")
        .flat_map(|(_, s)| s.clone())
        .collect();
    assert_eq!(late, (1_000..1_000 + late.len() as u64).collect::<Vec<_>>());
    assert!(!late.is_empty());
    assert_eq!(e.positions().get(&0), Some(&2));
}

/// The layering stays one-way: the engine and everything below it (the
/// stages, windows, plugins, hub, decoder, configuration) never name a
/// driver (`eddy serve`'s runner and server, `eddy pipe`, the plugin tools,
/// the client).
#[test]
fn no_module_below_the_drivers_imports_one() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let below = [
        "engine",
        "window",
        "plugin",
        "hub",
        "ingest",
        "filter",
        "config",
        "pipeline.rs",
        "event.rs",
    ];
    let drivers = [
        "crate::runner",
        "crate::server",
        "crate::pipe::",
        "crate::pipe;",
        "crate::devtools",
        "crate::client",
        "super::runner",
    ];
    let mut files = Vec::new();
    let mut stack: Vec<std::path::PathBuf> = below.iter().map(|b| root.join(b)).collect();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "rs") && !p.ends_with("engine/tests.rs") {
            files.push(p);
        }
    }
    assert!(files.len() > 40, "{} files", files.len());
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if let Some(d) = drivers.iter().find(|d| code.contains(*d)) {
                found.push(format!("{}:{}: {d}", f.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "modules below the drivers import them:\n{}",
        found.join("\n")
    );
}

fn kafka_batch(from: i64, next: i64, events: Vec<Event>, rejected: Vec<Rejected>) -> Input {
    Input::Kafka(KafkaBatch {
        batch: Batch {
            source: 1,
            position: next as u64,
            wall_ms: Some(T0),
            events,
        },
        partials: Vec::new(),
        rejected,
        offsets: vec![PartitionOffset {
            topic: "events".into(),
            partition: 3,
            from,
            next,
        }],
    })
}

#[test]
fn kafka_batches_apply_only_in_offset_order_and_their_offsets_are_state() {
    let mut rng = Rng::new(5);
    let mut e = fresh();
    let mut out: Vec<Emitted> = Vec::new();
    let poison = Rejected {
        topic: "events".into(),
        partition: 3,
        offset: 11,
        reason: "invalid JSON".into(),
        value: "{oops".into(),
    };
    let first = kafka_batch(
        10,
        13,
        vec![event(&mut rng, 0, T0), event(&mut rng, 1, T0)],
        vec![poison],
    );
    // Its recorded form (the log's record) reads back the same.
    assert_eq!(Input::from_line(&first.to_line()).unwrap(), first);
    e.step(first, &mut out);
    assert!(!e.take_kafka_skipped());
    assert_eq!(e.kafka_offsets()[&("events".to_owned(), 3)], 13);
    assert_eq!(e.counters().events_in, 2);
    let letters: Vec<_> = out
        .iter()
        .filter(|o| matches!(o, Emitted::DeadLetters { .. }))
        .flat_map(|o| o.messages())
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].1["event"]["properties"]["offset"], 11);
    assert_eq!(letters[0].1["stage"], "kafka");
    // A batch that does not read from where the engine stands (one before
    // it was lost) is skipped whole.
    e.step(
        kafka_batch(15, 20, vec![event(&mut rng, 2, T0)], vec![]),
        &mut out,
    );
    assert!(e.take_kafka_skipped());
    assert_eq!(e.counters().events_in, 2);
    assert_eq!(e.kafka_offsets()[&("events".to_owned(), 3)], 13);
    // The offsets travel with the snapshot.
    let (config, registry, clock) = engine();
    let restored = Engine::restore(&config, registry, clock, &e.snapshot()).unwrap();
    assert_eq!(restored.kafka_offsets(), e.kafka_offsets());
    e.step(
        kafka_batch(13, 14, vec![event(&mut rng, 3, T0)], vec![]),
        &mut out,
    );
    assert!(!e.take_kafka_skipped());
    assert_eq!(e.counters().events_in, 3);
}
