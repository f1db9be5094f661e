//! Durability end to end: the real `eddy serve` killed with SIGKILL at
//! random moments, restarted on the same data directory, damaged logs and
//! checkpoints, a retried batch after a restart, and a full disk.
//!
//! Every figure checked is one a user sees: the 2xx answers a client got,
//! the window counts and sums REST shows, `/v1/stats`, the startup log.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eddy_tests::Sandbox;
use eddy_tests::server::{Server, get_text, http};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One window over everything: count and sum of `n`, nothing late
/// (an hour of out-of-orderness), no wall-clock advance during a test.
fn config(sb: &Sandbox, extra: &str) -> PathBuf {
    sb.config(&format!(
        r#"
[time]
out_of_orderness = "1h"
idle_timeout = "1h"

[[windows]]
name = "all"
kind = "tumbling"
size = "1d"
aggregates = ["count", "sum(properties.n) as total"]

{extra}
"#
    ))
}

fn line(id: &str, n: u64, ts: i64) -> String {
    format!(
        "{{\"id\":\"{id}\",\"name\":\"hit\",\"distinct_id\":\"u{}\",\"timestamp\":{ts},\"properties\":{{\"n\":{n}}}}}",
        n % 7
    )
}

async fn get(server: &Server, path: &str) -> Value {
    http()
        .get(server.url(path))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON")
}

/// (count, sum of n) over every open group of window `all`.
async fn totals(server: &Server) -> (u64, f64) {
    // REST reuses an answer for up to 50 ms (`View::REUSE`): read after it.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let v = get(server, "/v1/windows/all?limit=1000").await;
    let groups = v["groups"].as_array().cloned().unwrap_or_default();
    let count = groups
        .iter()
        .map(|g| g["values"]["count"].as_u64().unwrap_or(0))
        .sum();
    let sum = groups
        .iter()
        .map(|g| g["values"]["total"].as_f64().unwrap_or(0.0))
        .sum();
    (count, sum)
}

/// POST NDJSON lines; the status and body.
async fn post(
    client: &reqwest::Client,
    addr: &str,
    lines: &[String],
) -> reqwest::Result<(u16, Value)> {
    let resp = client
        .post(format!("http://{addr}/v1/batch"))
        .header("content-type", "application/x-ndjson")
        .body(lines.join("\n"))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

async fn post_ok(server: &Server, lines: &[String]) -> Value {
    let (status, body) = post(&http(), &server.addr, lines).await.expect("POST");
    assert_eq!(status, 202, "{body}");
    body
}

fn serve(sb: &Sandbox, cfg: &Path) -> Server {
    tokio::task::block_in_place(|| sb.serve(cfg))
}

/// The recovery line of the newest start.
fn recovery_log(server: &mut Server) -> Value {
    let l = server.wait_log("recovered from the write-ahead log", WAIT);
    serde_json::from_str(&l).expect("JSON log line")
}

/// A small deterministic generator, so a failing run can be repeated
/// (its seed is printed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The kill test: clients post uniquely numbered events at a steady rate
/// and retry each batch until it is answered 2xx (as `eddy send` does);
/// the server is SIGKILLed 20 times at random moments and restarted on the
/// same data directory. Afterwards the window's count and sum equal
/// exactly what the acknowledged ids add up to — what one uninterrupted
/// run over those events gives — so no acknowledged event was lost and
/// none (a retried batch that was logged before the kill) counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_no_acknowledged_event_and_counts_none_twice() {
    const KILLS: usize = 20;
    const CLIENTS: u64 = 4;
    const BATCH: u64 = 25;
    let sb = Sandbox::new();
    let cfg = config(&sb, "[wal]\ncheckpoint_interval_ms = 300\n");
    let mut server = serve(&sb, &cfg);
    let addr = Arc::new(Mutex::new(server.addr.clone()));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let base = now_ms() - 120_000;
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (addr, acked, stop) = (addr.clone(), acked.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut k = 0u64;
            while !stop.load(Ordering::Acquire) {
                let ns: Vec<u64> = (0..BATCH).map(|j| c * 10_000_000 + k * BATCH + j).collect();
                k += 1;
                let lines: Vec<String> = ns
                    .iter()
                    .map(|&n| line(&format!("k{n}"), n, base + (n % 100_000) as i64))
                    .collect();
                let give_up = Instant::now() + Duration::from_secs(60);
                loop {
                    let a = addr.lock().unwrap().clone();
                    match post(&client, &a, &lines).await {
                        Ok((202, _)) => {
                            acked.lock().unwrap().extend(&ns);
                            break;
                        }
                        Ok((status, body)) => {
                            assert!(
                                status == 503 || status == 429,
                                "unexpected answer {status}: {body}"
                            );
                        }
                        Err(_) => {} // killed mid-request: retry
                    }
                    assert!(Instant::now() < give_up, "a batch was never acknowledged");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let seed = now_ms() as u64;
    eprintln!("kill test seed {seed}");
    let mut rng = Lcg(seed);
    let started = Instant::now();
    let mut replayed_max = 0;
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(150 + rng.below(1_000))).await;
        server.kill();
        server = serve(&sb, &cfg);
        let r = recovery_log(&mut server);
        replayed_max = replayed_max.max(r["records_replayed"].as_u64().unwrap_or(0));
        *addr.lock().unwrap() = server.addr.clone();
    }
    stop.store(true, Ordering::Release);
    for c in clients {
        tokio::time::timeout(Duration::from_secs(90), c)
            .await
            .expect("clients finish")
            .expect("client task");
    }
    let acked = acked.lock().unwrap().clone();
    let mut unique = acked.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), acked.len(), "an id was acknowledged twice");
    assert!(
        acked.len() > 1_000,
        "too few events got through: {}",
        acked.len()
    );
    let expected_sum: f64 = acked.iter().map(|&n| n as f64).sum();
    let (count, sum) = totals(&server).await;
    let stats = get(&server, "/v1/stats").await;
    eprintln!(
        "kill test: {} kills in {:?}, {} events acknowledged, {} duplicates dropped, most records replayed at a start: {replayed_max}",
        KILLS,
        started.elapsed(),
        acked.len(),
        stats["duplicates"]
    );
    assert_eq!(
        count,
        acked.len() as u64,
        "window count vs acknowledged ids"
    );
    assert_eq!(sum, expected_sum, "window sum vs acknowledged ids");
    assert_eq!(stats["published"], json!(acked.len()), "{stats}");
    // And once more after a last crash with no traffic.
    server.kill();
    let server = serve(&sb, &cfg);
    assert_eq!(totals(&server).await, (acked.len() as u64, expected_sum));
}

/// A batch re-sent with the same ids after a restart is acknowledged again
/// and not counted again; `/v1/stats` counts the duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_resent_after_a_restart_is_not_counted_twice() {
    let sb = Sandbox::new();
    let cfg = config(&sb, "");
    let base = now_ms() - 60_000;
    let lines: Vec<String> = (0..100)
        .map(|n| line(&format!("d{n}"), n, base + n as i64))
        .collect();
    let mut server = serve(&sb, &cfg);
    post_ok(&server, &lines).await;
    server.kill();
    let server = serve(&sb, &cfg);
    let body = post_ok(&server, &lines).await;
    assert_eq!(body["accepted"], 100, "acknowledged again: {body}");
    let expected: f64 = (0..100).map(|n| n as f64).sum();
    assert_eq!(totals(&server).await, (100, expected));
    let stats = get(&server, "/v1/stats").await;
    assert_eq!(stats["duplicates"], 100, "{stats}");
    let metrics = get_text(server.url("/metrics")).await;
    assert!(
        metrics.contains("eddy_ingest_duplicate_events_total 100"),
        "{metrics}"
    );
    assert!(
        metrics.contains("eddy_wal_sync_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("eddy_recovery_duration_seconds"),
        "{metrics}"
    );
    assert!(
        stats["wal"]["recovery"]["records_replayed"]
            .as_u64()
            .unwrap()
            >= 1,
        "{stats}"
    );
    assert!(stats["wal"]["segments"].as_u64().unwrap() >= 1, "{stats}");
}

/// The windowed and patterned workload of the golden test, in batches.
fn golden_batches(base: i64) -> Vec<Vec<String>> {
    (0..12u64)
        .map(|b| {
            (0..50u64)
                .map(|j| {
                    let i = b * 50 + j;
                    let name = if i % 3 == 2 { "b" } else { "a" };
                    format!(
                        "{{\"id\":\"g{i}\",\"name\":\"{name}\",\"distinct_id\":\"u{}\",\"timestamp\":{},\"properties\":{{\"n\":{i}}}}}",
                        i % 5,
                        base + (i as i64) * 100
                    )
                })
                .collect()
        })
        .collect()
}

const GOLDEN_CONFIG: &str = r#"
[time]
out_of_orderness = "1s"
idle_timeout = "1h"

[[windows]]
name = "per-user"
kind = "tumbling"
size = "10s"
group_by = ["distinct_id"]
aggregates = ["count", "sum(properties.n) as total"]

[[patterns]]
name = "a-then-b"
key = "distinct_id"
within = "5s"

[[patterns.steps]]
name = "first"
names = ["a"]

[[patterns.steps]]
name = "then"
names = ["b"]
"#;

/// What a user reads at the end: the window's history and open groups,
/// the pattern's matches — without the channel sequence numbers, which a
/// fresh server starts elsewhere.
async fn golden_results(server: &Server) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("seq");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = json!({
        "history": get(server, "/v1/windows/per-user/history").await,
        "open": get(server, "/v1/windows/per-user?limit=1000").await["groups"],
        "matches": get(server, "/v1/patterns/a-then-b/matches?limit=1000").await,
    });
    strip(&mut v);
    v
}

/// Windows and patterns after one and after two SIGKILL/restarts equal
/// the uninterrupted run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_recovery_with_one_and_two_kills_equals_the_uninterrupted_run() {
    let base = now_ms() - 600_000;
    let batches = golden_batches(base);
    let mut runs = Vec::new();
    for kills_after in [vec![], vec![5], vec![3, 8]] {
        let sb = Sandbox::new();
        let cfg = sb.config(GOLDEN_CONFIG);
        let mut server = serve(&sb, &cfg);
        for (i, b) in batches.iter().enumerate() {
            post_ok(&server, b).await;
            if kills_after.contains(&i) {
                server.kill();
                server = serve(&sb, &cfg);
            }
        }
        let results = golden_results(&server).await;
        assert!(
            results["history"].to_string().contains("count"),
            "the workload closes windows: {results}"
        );
        runs.push((kills_after, results));
    }
    let (_, uninterrupted) = &runs[0];
    assert!(
        uninterrupted.to_string().contains("\"match\""),
        "the workload matches the pattern: {uninterrupted}"
    );
    for (kills, results) in &runs[1..] {
        assert_eq!(results, uninterrupted, "killed after batches {kills:?}");
    }
}

/// Segment files of `data/wal`, oldest first.
fn segments(sb: &Sandbox) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(sb.path().join("data/wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// Frames of a segment: (offset of the frame, payload).
fn frames(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 24;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || at + 8 + len > bytes.len() {
            break;
        }
        out.push((at, bytes[at + 8..at + 8 + len].to_vec()));
        at += 8 + len;
    }
    out
}

/// A server that has logged `batches` batches of 10 events (ids c{b}-{j})
/// and was then SIGKILLed, with only the startup checkpoint (seq 0).
async fn crashed_server_with(sb: &Sandbox, extra: &str, batches: u64) -> PathBuf {
    let cfg = config(
        sb,
        &format!("[wal]\ncheckpoint_interval_ms = 3600000\n{extra}"),
    );
    let mut server = serve(sb, &cfg);
    let base = now_ms() - 60_000;
    for b in 0..batches {
        let lines: Vec<String> = (0..10)
            .map(|j| line(&format!("c{b}-{j}"), b * 10 + j, base + (b * 10 + j) as i64))
            .collect();
        post_ok(&server, &lines).await;
    }
    server.kill();
    cfg
}

fn is_batch_of(payload: &[u8], b: u64) -> bool {
    String::from_utf8_lossy(payload).contains(&format!("\"c{b}-0\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_cut_off_and_said() {
    let sb = Sandbox::new();
    let cfg = crashed_server_with(&sb, "", 5).await;
    let seg = segments(&sb).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    // Tear the last batch's record (ticks after it go with it).
    let (at, _) = frames(&bytes)
        .into_iter()
        .rev()
        .find(|(_, p)| is_batch_of(p, 4))
        .expect("the last batch is in the newest segment");
    std::fs::write(&seg, &bytes[..at + 20]).unwrap();
    let mut server = serve(&sb, &cfg);
    let r = recovery_log(&mut server);
    assert_eq!(r["truncated_bytes"], 20, "{r}");
    let (count, _) = totals(&server).await;
    assert_eq!(count, 40, "the four whole batches are back");
    // The log is writable again after the cut.
    post_ok(&server, &[line("after", 1, now_ms() - 1_000)]).await;
    assert_eq!(totals(&server).await.0, 41);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_mid_segment_skips_that_record_only_and_says_so() {
    let sb = Sandbox::new();
    let cfg = crashed_server_with(&sb, "", 5).await;
    let seg = segments(&sb).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let (at, payload) = frames(&bytes)
        .into_iter()
        .find(|(_, p)| is_batch_of(p, 2))
        .expect("batch 2 is logged");
    bytes[at + 8 + payload.len() / 2] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let mut server = serve(&sb, &cfg);
    let r = recovery_log(&mut server);
    assert_eq!(r["corrupt_records"], 1, "{r}");
    assert_eq!(
        totals(&server).await.0,
        40,
        "every batch but the damaged one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_newest_checkpoint_falls_back_to_the_previous_one() {
    let sb = Sandbox::new();
    let cfg = config(&sb, "[wal]\ncheckpoint_interval_ms = 3600000\n");
    let base = now_ms() - 60_000;
    let batch = |b: u64| -> Vec<String> {
        (0..10)
            .map(|j| line(&format!("p{b}-{j}"), b * 10 + j, base + (b * 10 + j) as i64))
            .collect()
    };
    // Two graceful stops: two checkpoints, the newest covering all 30.
    let mut server = serve(&sb, &cfg);
    post_ok(&server, &batch(0)).await;
    server.terminate(WAIT);
    let mut server = serve(&sb, &cfg);
    post_ok(&server, &batch(1)).await;
    post_ok(&server, &batch(2)).await;
    server.terminate(WAIT);
    let dir = sb.path().join("data/checkpoints");
    let mut ckpts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    ckpts.sort();
    assert_eq!(ckpts.len(), 2, "the newest two are kept: {ckpts:?}");
    let newest = ckpts.pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&newest, &bytes).unwrap();
    let mut server = serve(&sb, &cfg);
    let r = recovery_log(&mut server);
    assert_eq!(r["checkpoints_skipped"], 1, "{r}");
    assert!(r["events_replayed"].as_u64().unwrap() >= 20, "{r}");
    server.wait_log("checkpoint: damaged; trying the previous one", WAIT);
    assert_eq!(
        totals(&server).await.0,
        30,
        "the log after the older checkpoint replays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_segment_is_reported_and_the_rest_replays() {
    let sb = Sandbox::new();
    // Small segments: each batch of 10 events (~1.5 KB) fills a third.
    let cfg = crashed_server_with(&sb, "segment_bytes = 4096\n", 12).await;
    let segs = segments(&sb);
    assert!(segs.len() >= 3, "several segments: {segs:?}");
    let victim = &segs[1];
    let lost_batches: usize = frames(&std::fs::read(victim).unwrap())
        .iter()
        .filter(|(_, p)| String::from_utf8_lossy(p).contains("\"c"))
        .count();
    std::fs::remove_file(victim).unwrap();
    let mut server = serve(&sb, &cfg);
    let r = recovery_log(&mut server);
    assert!(r["missing_records"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(
        totals(&server).await.0,
        120 - 10 * lost_batches as u64,
        "everything but the missing segment's batches"
    );
}

/// A 2 MiB tmpfs as the data directory: once it is full, ingest answers
/// 503 `disk_full` with Retry-After and acknowledges nothing it did not
/// log; when space returns, ingest resumes by itself, and a crash after
/// that loses nothing acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_service_resumes_when_space_returns() {
    let sb = Sandbox::new();
    let mnt = sb.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("run mount");
    assert!(
        mounted.success(),
        "this test needs to mount a 2 MiB tmpfs (run as root, or in a container with CAP_SYS_ADMIN)"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let data = mnt.join("data");
    let cfg = sb.config(&format!(
        "data_dir = {:?}\n[time]\nout_of_orderness = \"1h\"\nidle_timeout = \"1h\"\n[[windows]]\nname = \"all\"\nkind = \"tumbling\"\nsize = \"1d\"\naggregates = [\"count\", \"sum(properties.n) as total\"]\n[wal]\ncheckpoint_interval_ms = 3600000\nsegment_bytes = 65536\n",
        data.display().to_string()
    ));
    let mut server = serve(&sb, &cfg);
    // Fill what is left with a file we can delete later.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let base = now_ms() - 60_000;
    let mut acked = 0u64;
    let mut full = None;
    for b in 0..200u64 {
        let lines: Vec<String> = (0..20)
            .map(|j| line(&format!("f{b}-{j}"), 1, base + (b * 20 + j) as i64))
            .collect();
        let (status, body) = post(&http(), &server.addr, &lines).await.unwrap();
        match status {
            202 => acked += 20,
            503 => {
                full = Some(body);
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let body = full.expect("the disk filled up and ingest said so");
    assert_eq!(body["code"], "disk_full", "{body}");
    assert_eq!(body["accepted"], 0, "{body}");
    assert!(body["retry_after_s"].as_u64().is_some(), "{body}");
    assert_eq!(
        totals(&server).await.0,
        acked,
        "nothing refused was counted"
    );
    std::fs::remove_file(&filler).unwrap();
    let lines: Vec<String> = (0..20)
        .map(|j| line(&format!("after-{j}"), 1, base + j))
        .collect();
    post_ok(&server, &lines).await;
    acked += 20;
    assert_eq!(totals(&server).await.0, acked);
    server.kill();
    let server = serve(&sb, &cfg);
    assert_eq!(
        totals(&server).await.0,
        acked,
        "every acknowledged event survives"
    );
}

/// A data directory that cannot be used stops the server at startup,
/// naming it.
#[test]
fn an_unusable_data_dir_is_a_clear_startup_error() {
    let sb = Sandbox::new();
    let blocker = sb.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let cfg = sb.config(&format!("data_dir = {:?}\n", blocker.display().to_string()));
    let out = eddy_tests::run_with_timeout(
        {
            let mut c = std::process::Command::new(eddy_tests::eddy_bin());
            c.args(["serve", "--listen", "127.0.0.1:0", "--config"])
                .arg(&cfg)
                .current_dir(sb.path());
            c
        },
        WAIT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not-a-dir") && err.contains("data_dir"),
        "{err}"
    );
}

/// `eddy replay` re-runs the logged history under a configuration with a
/// new window and writes that window's results; the live server goes on
/// with its own state untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddy_replay_reruns_the_log_with_a_new_window_without_touching_live_state() {
    let sb = Sandbox::new();
    let cfg = config(&sb, "");
    let server = serve(&sb, &cfg);
    let base = now_ms() - 60_000;
    for b in 0..3u64 {
        let lines: Vec<String> = (0..100)
            .map(|j| line(&format!("r{b}-{j}"), j, base + (b * 100 + j) as i64))
            .collect();
        post_ok(&server, &lines).await;
    }
    // The same batch again: logged, but deduplicated live and in the replay.
    let again: Vec<String> = (0..100)
        .map(|j| line(&format!("r0-{j}"), j, base + j as i64))
        .collect();
    post_ok(&server, &again).await;
    let changed = sb.path().join("changed.toml");
    std::fs::write(
        &changed,
        format!(
            "plugins_dir = {:?}\n[time]\nout_of_orderness = \"1h\"\nidle_timeout = \"1h\"\n[[windows]]\nname = \"by-user\"\nkind = \"tumbling\"\nsize = \"1d\"\ngroup_by = [\"distinct_id\"]\naggregates = [\"count\"]\n",
            sb.plugins_dir().display().to_string()
        ),
    )
    .unwrap();
    let results = sb.path().join("results.ndjson");
    let mut cmd = std::process::Command::new(eddy_tests::eddy_bin());
    cmd.args(["replay", "--from", "1h", "--config"])
        .arg(&changed)
        .arg("--data-dir")
        .arg(sb.path().join("data"))
        .arg("--results")
        .arg(&results)
        .current_dir(sb.path());
    let out = eddy_tests::run_with_timeout(cmd, WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let finals: Vec<&Value> = lines
        .iter()
        .filter(|l| l["channel"] == "windows/by-user" && l["data"]["kind"] == "final")
        .collect();
    assert_eq!(finals.len(), 7, "one group per user: {lines:?}");
    let total: u64 = finals
        .iter()
        .map(|l| l["data"]["values"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 300, "every logged event once: {lines:?}");
    // Live state untouched: same count, no new window, still ingesting.
    assert_eq!(totals(&server).await.0, 300);
    let windows = get(&server, "/v1/windows").await.to_string();
    assert!(!windows.contains("by-user"), "{windows}");
    post_ok(&server, &[line("later", 1, now_ms() - 1_000)]).await;
    assert_eq!(totals(&server).await.0, 301);
}

/// (seq, id) of the recent events on the `events` channel.
async fn recent(server: &Server) -> Vec<(u64, String)> {
    get(server, "/v1/events/recent?limit=1000").await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Recovery replays the log through the hub: after a crash the `events`
/// channel holds the same messages under the same sequence numbers, and
/// new events continue after them — a client resuming with `since` gets
/// what it missed, never one message twice under one number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_events_keep_their_sequence_numbers_and_new_ones_continue() {
    let sb = Sandbox::new();
    let cfg = config(&sb, "[wal]\ncheckpoint_interval_ms = 3600000\n");
    let base = now_ms() - 60_000;
    let batch = |b: u64| -> Vec<String> {
        (0..20)
            .map(|j| line(&format!("s{b}-{j}"), j, base + (b * 20 + j) as i64))
            .collect()
    };
    let mut server = serve(&sb, &cfg);
    post_ok(&server, &batch(0)).await;
    post_ok(&server, &batch(1)).await;
    let before = recent(&server).await;
    assert_eq!(before.len(), 40);
    server.kill();
    let server = serve(&sb, &cfg);
    assert_eq!(
        recent(&server).await,
        before,
        "the same messages under the same numbers"
    );
    post_ok(&server, &batch(2)).await;
    let after = recent(&server).await;
    assert_eq!(after.len(), 60);
    assert_eq!(&after[..40], &before[..]);
    let last = before.last().unwrap().0;
    let next: Vec<u64> = after[40..].iter().map(|(s, _)| *s).collect();
    assert_eq!(next, (last + 1..=last + 20).collect::<Vec<_>>());
}

/// `plugin test` and `plugin diff` take the traffic a live server logged
/// (`--from-log`), with its ids and an arrival-time range, while the
/// server keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_test_and_diff_take_their_input_from_the_log() {
    let sb = Sandbox::new();
    let cfg = config(&sb, "");
    let server = serve(&sb, &cfg);
    let base = now_ms() - 60_000;
    let mut after_first = 0;
    for b in 0..3u64 {
        let lines: Vec<String> = (0..50)
            .map(|j| line(&format!("l{b}-{j}"), j, base + (b * 50 + j) as i64))
            .collect();
        post_ok(&server, &lines).await;
        if b == 0 {
            // Arrival times are the server's wall clock, in milliseconds.
            tokio::time::sleep(Duration::from_millis(20)).await;
            after_first = now_ms();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let data = sb.path().join("data");
    let plugin = eddy_tests::plugins::PASS_THROUGH;
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(eddy_tests::eddy_bin());
        cmd.args(args).current_dir(sb.path());
        eddy_tests::run_with_timeout(cmd, WAIT)
    };
    let ids = |out: &std::process::Output| -> Vec<String> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("an event per line");
                v["id"].as_str().expect("id").to_owned()
            })
            .collect()
    };
    let data_arg = data.to_str().unwrap();
    let all = ids(&tokio::task::block_in_place(|| {
        run(&["plugin", "test", plugin, "--from-log", data_arg])
    }));
    let expected: Vec<String> = (0..3)
        .flat_map(|b| (0..50).map(move |j| format!("l{b}-{j}")))
        .collect();
    assert_eq!(
        all, expected,
        "every logged event, in log order, with its id"
    );
    let from = after_first.to_string();
    let later = ids(&tokio::task::block_in_place(|| {
        run(&[
            "plugin",
            "test",
            plugin,
            "--from-log",
            data_arg,
            "--from",
            &from,
        ])
    }));
    assert_eq!(later, expected[50..], "only what arrived after --from");

    let diff = tokio::task::block_in_place(|| {
        run(&[
            "plugin",
            "diff",
            plugin,
            plugin,
            "--from-log",
            data_arg,
            "--json",
        ])
    });
    assert!(
        diff.status.success(),
        "the same plugin twice differs in nothing: {}\n{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    let report: Value = serde_json::from_slice(&diff.stdout).expect("diff --json");
    assert_eq!(report["events_in"], 150, "{report}");

    // Neither an input nor both: a usage error naming the flags.
    let none = tokio::task::block_in_place(|| run(&["plugin", "test", plugin]));
    assert!(!none.status.success());
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(
        stderr.contains("--events") && stderr.contains("--from-log"),
        "{stderr}"
    );
    // The server kept running and ingesting.
    post_ok(&server, &[line("after", 1, now_ms() - 1_000)]).await;
    assert_eq!(totals(&server).await.0, 151);
}

/// The live hash of `plugin` in `GET /v1/plugins`.
async fn live_hash(server: &Server, plugin: &str) -> Option<String> {
    let v = get(server, "/v1/plugins").await;
    v["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == plugin && p["status"] == "live")
        .and_then(|p| p["hash"].as_str().map(str::to_owned))
}

/// Checkpoints and log records name plugin versions by content hash, and a
/// hot swap replaces the file in the plugins folder: the data directory
/// keeps every version that went live (`data_dir/plugins/<hash>.wasm`), so
/// a restart after a swap restores state that the replaced version ran —
/// after a crash (the log names the swap after the checkpoint) and after a
/// graceful stop (the checkpoint names the old version as the last good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_hot_swap_restores_what_both_versions_ran() {
    use eddy_tests::plugins::{FIRST_SEEN, FIRST_SEEN_V2};
    let sb = Sandbox::new();
    sb.install(FIRST_SEEN, "first-seen");
    let cfg = config(&sb, "[[stages]]\nplugin = \"first-seen\"\n");
    let base = now_ms() - 60_000;
    let batch = |from: u64| -> Vec<String> {
        (from..from + 50)
            .map(|n| line(&format!("s{n}"), n, base + n as i64))
            .collect()
    };
    let mut server = serve(&sb, &cfg);
    let v1 = live_hash(&server, "first-seen").await.expect("v1 live");
    post_ok(&server, &batch(0)).await;
    sb.rename_over(FIRST_SEEN_V2, "first-seen");
    let started = Instant::now();
    let v2 = loop {
        match live_hash(&server, "first-seen").await {
            Some(h) if h != v1 => break h,
            _ => {
                assert!(started.elapsed() < WAIT, "the swap did not happen");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    post_ok(&server, &batch(50)).await;
    let kept = |h: &str| sb.path().join("data/plugins").join(format!("{h}.wasm"));
    assert!(
        kept(&v1).is_file() && kept(&v2).is_file(),
        "both versions kept"
    );
    let expected: f64 = (0..100).map(|n| n as f64).sum();

    // A crash: the newest checkpoint predates the swap.
    server.kill();
    let mut server = serve(&sb, &cfg);
    recovery_log(&mut server);
    assert_eq!(totals(&server).await, (100, expected));
    assert_eq!(
        live_hash(&server, "first-seen").await.as_deref(),
        Some(v2.as_str())
    );

    // A graceful stop, then a start with only the new file in the folder.
    post_ok(&server, &batch(100)).await;
    server.terminate(WAIT);
    let server = serve(&sb, &cfg);
    let expected: f64 = (0..150).map(|n| n as f64).sum();
    assert_eq!(totals(&server).await, (150, expected));
    // The plugin's own state (first-seen's memory of users) came through:
    // version 2 marks a user seen before the restarts as returning (false),
    // a user it never saw as first-seen (true).
    post_ok(&server, &[line("s-again", 1, base + 200)]).await;
    let recent = get(&server, "/v1/events/recent?limit=1").await;
    assert_eq!(
        recent["events"][0]["properties"]["$is_first_seen"], false,
        "user u1 was seen before the restarts: {recent}"
    );
}
