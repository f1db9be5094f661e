//! Tests of the write-ahead log and checkpoints, on the simulated disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fs::SimFs;
use super::segment::{self, FRAME_HEADER_BYTES, HEADER_BYTES};
use super::*;
use crate::test_rng::Rng;

fn sim(seed: u64) -> (SimFs, Arc<dyn WalFs>, PathBuf) {
    let dir = PathBuf::from("/data/wal");
    let sim = SimFs::new(&dir, seed);
    let fs: Arc<dyn WalFs> = Arc::new(sim.clone());
    (sim, fs, dir)
}

fn opts(segment_bytes: u64) -> LogOptions {
    LogOptions {
        segment_bytes,
        retention_bytes: u64::MAX,
        retention_ms: u64::MAX,
        max_record_bytes: 1 << 20,
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!("record-{i:05}-{}", "x".repeat((i % 7) as usize)).into_bytes()
}

fn open(fs: &Arc<dyn WalFs>, dir: &Path, o: LogOptions) -> (Log, Recovery) {
    Log::open(Arc::clone(fs), dir, o).unwrap()
}

fn read_all(log: &Log, from: u64) -> Vec<(u64, Vec<u8>)> {
    log.read_from(from).collect::<Result<Vec<_>, _>>().unwrap()
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(segment::file_name(first))
}

fn segment_firsts(fs: &Arc<dyn WalFs>, dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = fs
        .list(dir)
        .unwrap()
        .iter()
        .filter_map(|n| segment::parse_name(n))
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn round_trip_over_several_segments() {
    let (_sim, fs, dir) = sim(1);
    let (mut log, rec) = open(&fs, &dir, opts(256));
    assert_eq!((rec.segments, rec.next_seq), (0, 1));
    for i in 1..=100 {
        assert_eq!(log.append(&payload(i)).unwrap(), i);
    }
    assert_eq!(log.sync().unwrap(), 100);
    assert_eq!(log.durable(), 100);
    let segments = segment_firsts(&fs, &dir);
    assert!(segments.len() > 5, "{segments:?}");
    assert_eq!(log.stats().segments, segments.len());
    let all = read_all(&log, 1);
    assert_eq!(all.len(), 100);
    for (i, (seq, p)) in all.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(*p, payload(*seq));
    }
    let from_37: Vec<u64> = read_all(&log, 37).iter().map(|r| r.0).collect();
    assert_eq!(from_37, (37..=100).collect::<Vec<_>>());
    drop(log);

    let (mut log, rec) = open(&fs, &dir, opts(256));
    assert_eq!(rec.records, 100);
    assert_eq!(rec.segments, segments.len());
    assert_eq!(
        (rec.truncated_bytes, rec.corrupt.len(), rec.gaps.len()),
        (0, 0, 0)
    );
    assert_eq!((rec.first_seq, rec.next_seq), (1, 101));
    assert_eq!(log.append(b"after reopen").unwrap(), 101);
    log.sync().unwrap();
    assert_eq!(read_all(&log, 101), vec![(101, b"after reopen".to_vec())]);
}

#[test]
fn a_missing_data_directory_is_a_clear_error() {
    let (_sim, fs, _dir) = sim(1);
    let err = Log::open(fs, "/nowhere", opts(256)).unwrap_err();
    assert!(matches!(err, WalError::DataDir { .. }), "{err}");
    assert!(err.to_string().contains("/nowhere"), "{err}");
    assert!(!err.is_retryable());
}

#[test]
fn empty_and_oversized_records_are_refused() {
    let (_sim, fs, dir) = sim(1);
    let (mut log, _) = open(&fs, &dir, opts(256));
    assert!(matches!(log.append(b""), Err(WalError::EmptyRecord)));
    let big = vec![1u8; (1 << 20) + 1];
    assert!(matches!(
        log.append(&big),
        Err(WalError::RecordTooLarge { .. })
    ));
    assert_eq!(log.append(b"ok").unwrap(), 1);
}

#[test]
fn retention_by_size_keeps_what_no_checkpoint_covers() {
    let (_sim, fs, dir) = sim(2);
    let mut o = opts(256);
    o.retention_bytes = 1024;
    let (mut log, _) = open(&fs, &dir, o);
    for i in 1..=100 {
        log.append(&payload(i)).unwrap();
    }
    log.sync().unwrap();
    // No checkpoint yet: nothing may go, however large the log.
    assert_eq!(log.apply_retention().unwrap(), 0);
    assert_eq!(log.first_seq(), 1);

    // A checkpoint covers up to 40: only segments wholly below 41 may go.
    log.set_retention_floor(41);
    let deleted = log.apply_retention().unwrap();
    assert!(deleted > 0);
    assert!(log.first_seq() <= 41, "first {}", log.first_seq());
    let firsts = segment_firsts(&fs, &dir);
    assert_eq!(firsts.first().copied(), Some(log.first_seq()));

    // Covered up to 100: deleted down to the size limit, never the active one.
    log.set_retention_floor(101);
    log.apply_retention().unwrap();
    let stats = log.stats();
    assert!(stats.bytes <= 1024 + 256 + 64, "{stats:?}");
    assert!(stats.segments >= 1);
    let left = read_all(&log, 1);
    assert_eq!(left.first().map(|r| r.0), Some(log.first_seq()));
    assert_eq!(left.last().map(|r| r.0), Some(100));
    drop(log);
    // Reopening sees a log starting later, without a gap.
    let (_log, rec) = open(&fs, &dir, opts(256));
    assert!(rec.first_seq > 1);
    assert!(rec.gaps.is_empty() && rec.corrupt.is_empty());
}

#[test]
fn retention_by_age_and_on_roll() {
    let (sim, fs, dir) = sim(3);
    let mut o = opts(256);
    o.retention_ms = 60_000;
    let (mut log, _) = open(&fs, &dir, o);
    for i in 1..=40 {
        log.append(&payload(i)).unwrap();
    }
    log.sync().unwrap();
    let old_segments = log.stats().segments;
    log.set_retention_floor(u64::MAX);
    assert_eq!(log.apply_retention().unwrap(), 0, "nothing is old yet");
    sim.advance(Duration::from_secs(120));
    // The next roll (reached by appending) applies retention by itself.
    let mut i = 41;
    while log.stats().segments >= old_segments {
        log.append(&payload(i)).unwrap();
        i += 1;
        assert!(i < 200, "retention never ran");
    }
    assert!(log.first_seq() > 1);
    // Everything old is gone; the segments written after the clock moved stay.
    let left = read_all(&log, 1);
    assert_eq!(left.last().map(|r| r.0), Some(i - 1));
    assert!(left.iter().all(|r| r.0 >= log.first_seq()));
}

#[test]
fn truncate_before_deletes_whole_segments_only() {
    let (_sim, fs, dir) = sim(4);
    let (mut log, _) = open(&fs, &dir, opts(256));
    for i in 1..=60 {
        log.append(&payload(i)).unwrap();
    }
    log.sync().unwrap();
    log.truncate_before(30).unwrap();
    let first = log.first_seq();
    assert!(first > 1 && first <= 30, "first {first}");
    assert_eq!(read_all(&log, 1).first().map(|r| r.0), Some(first));
    // Never the active segment.
    log.truncate_before(u64::MAX).unwrap();
    assert_eq!(log.stats().segments, 1);
    assert_eq!(log.append(b"more").unwrap(), 61);
}

/// Builds a synced log of `n` records in one segment; returns the length of
/// the last frame.
fn five_records(fs: &Arc<dyn WalFs>, dir: &Path, n: u64) -> usize {
    let (mut log, _) = open(fs, dir, opts(1 << 20));
    for i in 1..=n {
        log.append(&payload(i)).unwrap();
    }
    log.sync().unwrap();
    FRAME_HEADER_BYTES + payload(n).len()
}

#[test]
fn a_torn_tail_is_cut_at_every_byte_offset_of_the_last_record() {
    let (_sim, fs, dir) = sim(5);
    let frame = five_records(&fs, &dir, 5);
    let path = segment_path(&dir, 1);
    let full = fs.len(&path).unwrap();
    for keep in 0..frame as u64 {
        let (_sim, fs, dir) = sim(5);
        five_records(&fs, &dir, 5);
        fs.truncate(&path, full - frame as u64 + keep).unwrap();
        let (mut log, rec) = open(&fs, &dir, opts(1 << 20));
        assert_eq!(rec.truncated_bytes, keep, "keep {keep}");
        assert_eq!((rec.records, rec.next_seq), (4, 5));
        assert!(rec.corrupt.is_empty());
        assert_eq!(log.append(b"new five").unwrap(), 5);
        log.sync().unwrap();
        drop(log);
        let (log, rec) = open(&fs, &dir, opts(1 << 20));
        assert_eq!((rec.truncated_bytes, rec.records), (0, 5));
        let all = read_all(&log, 1);
        assert_eq!(all.len(), 5);
        assert_eq!(all[4], (5, b"new five".to_vec()));
    }
}

#[test]
fn a_flipped_byte_in_a_middle_record_is_skipped_and_counted() {
    let (sim, fs, dir) = sim(6);
    five_records(&fs, &dir, 6);
    // Third record's payload: header, two frames, its frame header.
    let third = HEADER_BYTES
        + (1..=2)
            .map(|i| FRAME_HEADER_BYTES + payload(i).len())
            .sum::<usize>();
    let path = segment_path(&dir, 1);
    sim.corrupt(&path, third + FRAME_HEADER_BYTES + 3);
    let (mut log, rec) = open(&fs, &dir, opts(1 << 20));
    assert_eq!(rec.corrupt.len(), 1);
    assert_eq!(rec.corrupt[0].first_seq, 3);
    assert_eq!(rec.corrupt[0].offset, third as u64);
    assert_eq!(rec.corrupt_records(), 1);
    assert_eq!((rec.records, rec.truncated_bytes, rec.next_seq), (5, 0, 7));
    let mut reader = log.read_from(1);
    let seqs: Vec<u64> = reader.by_ref().map(|r| r.unwrap().0).collect();
    assert_eq!(seqs, vec![1, 2, 4, 5, 6]);
    assert_eq!(reader.corrupt_skipped(), 1);
    assert_eq!(log.append(b"seven").unwrap(), 7);
}

#[test]
fn a_missing_middle_segment_is_reported() {
    let (_sim, fs, dir) = sim(7);
    let (mut log, _) = open(&fs, &dir, opts(256));
    for i in 1..=60 {
        log.append(&payload(i)).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let firsts = segment_firsts(&fs, &dir);
    let (gone, next) = (firsts[2], firsts[3]);
    fs.remove(&segment_path(&dir, gone)).unwrap();
    let (log, rec) = open(&fs, &dir, opts(256));
    assert_eq!(
        rec.gaps,
        vec![Gap {
            from: gone,
            to: next - 1
        }]
    );
    let seqs: Vec<u64> = read_all(&log, 1).iter().map(|r| r.0).collect();
    assert_eq!(seqs.len() as u64, 60 - (next - gone));
    assert!(!seqs.contains(&gone));
    assert_eq!(rec.next_seq, 61);
}

#[test]
fn damage_in_an_older_segment_never_cuts_it() {
    let (sim, fs, dir) = sim(8);
    let (mut log, _) = open(&fs, &dir, opts(256));
    for i in 1..=60 {
        log.append(&payload(i)).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let firsts = segment_firsts(&fs, &dir);
    // Break the length field of the second frame of the second segment.
    let path = segment_path(&dir, firsts[1]);
    let len_before = fs.len(&path).unwrap();
    let second = HEADER_BYTES + FRAME_HEADER_BYTES + payload(firsts[1]).len();
    sim.corrupt(&path, second + 3);
    let (log, rec) = open(&fs, &dir, opts(256));
    assert_eq!(
        fs.len(&path).unwrap(),
        len_before,
        "an older segment is never cut"
    );
    assert_eq!(rec.corrupt.len(), 1);
    let lost = rec.corrupt[0].records;
    assert_eq!(rec.corrupt[0].first_seq, firsts[1] + 1);
    assert_eq!(lost, firsts[2] - firsts[1] - 1);
    let mut reader = log.read_from(1);
    let n = reader.by_ref().filter(|r| r.is_ok()).count() as u64;
    assert_eq!(n, 60 - lost);
    assert_eq!(reader.corrupt_skipped(), lost);
}

#[test]
fn a_segment_created_just_before_a_crash_is_repaired() {
    let (sim, fs, dir) = sim(9);
    let (mut log, _) = open(&fs, &dir, opts(1 << 20));
    log.append(b"one").unwrap();
    log.sync().unwrap();
    drop(log);
    // A half-written header of the next segment.
    let path = segment_path(&dir, 2);
    let mut f = fs.open_append(&path, true).unwrap();
    f.write_all(&segment::header(2)[..10]).unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(&dir).unwrap();
    let (mut log, rec) = open(&fs, &dir, opts(1 << 20));
    assert_eq!((rec.truncated_bytes, rec.next_seq), (10, 2));
    assert_eq!(log.append(b"two").unwrap(), 2);
    log.sync().unwrap();
    drop(log);
    // A segment with a foreign header is moved aside, not a crash loop.
    fs.truncate(&path, 0).unwrap();
    let mut f = fs.open_append(&path, true).unwrap();
    f.write_all(&[0xee; 40]).unwrap();
    f.sync_data().unwrap();
    let (log, rec) = open(&fs, &dir, opts(1 << 20));
    assert_eq!(rec.set_aside.len(), 1);
    assert_eq!(rec.next_seq, 2);
    assert_eq!(read_all(&log, 1), vec![(1, b"one".to_vec())]);
    drop(sim);
}

#[test]
fn a_full_disk_fails_the_append_and_service_resumes_when_space_returns() {
    let (sim, fs, dir) = sim(10);
    let (mut log, _) = open(&fs, &dir, opts(256));
    for i in 1..=10 {
        log.append(&payload(i)).unwrap();
    }
    log.sync().unwrap();
    let before = log.stats();
    sim.set_free(Some(5));
    let err = log.append(&payload(11)).unwrap_err();
    assert!(err.is_full() && err.is_retryable(), "{err}");
    // Nothing of it is left: same length, same next sequence number.
    assert_eq!(log.stats(), before);
    assert_eq!(log.sync().unwrap(), 10);
    sim.set_free(None);
    assert_eq!(log.append(&payload(11)).unwrap(), 11);
    log.sync().unwrap();
    sim.power_cut(true);
    let (log, rec) = open(&fs, &dir, opts(256));
    assert_eq!(
        (rec.truncated_bytes, rec.corrupt.len(), rec.next_seq),
        (0, 0, 12)
    );
    let all = read_all(&log, 1);
    assert_eq!(all.len(), 11);
    assert!(all.iter().all(|(s, p)| *p == payload(*s)));
}

/// Appends and syncs until the simulated machine stops after `steps`
/// operations; every record whose sync returned is there after the cut.
#[test]
fn a_stop_at_every_step_loses_no_synced_record() {
    for steps in 0..80 {
        let (sim, fs, dir) = sim(steps);
        let (mut log, _) = open(&fs, &dir, opts(200));
        sim.crash_after(Some(steps));
        let mut pending = Vec::new();
        let mut synced = Vec::new();
        for i in 1..=40 {
            match log.append(&payload(i)) {
                Ok(seq) => pending.push(seq),
                Err(_) => break,
            }
            if i % 3 == 0 {
                match log.sync() {
                    Ok(_) => synced.append(&mut pending),
                    Err(_) => break,
                }
            }
        }
        drop(log);
        sim.power_cut(steps % 2 == 0);
        let (mut log, rec) = open(&fs, &dir, opts(200));
        assert!(
            rec.corrupt.is_empty() && rec.gaps.is_empty(),
            "steps {steps}: {rec:?}"
        );
        let found: BTreeMap<u64, Vec<u8>> = read_all(&log, 1).into_iter().collect();
        for seq in &synced {
            assert_eq!(
                found.get(seq),
                Some(&payload(*seq)),
                "steps {steps}: seq {seq} lost"
            );
        }
        let next = log.append(b"after").unwrap();
        log.sync().unwrap();
        assert_eq!(read_all(&log, next), vec![(next, b"after".to_vec())]);
    }
}

/// Rounds of concurrent submitters under `always`, each ended by a power cut
/// at a random moment; returns how many acknowledged records were missing
/// (or different) after a cut.
fn power_cut_rounds(seed: u64, segment_bytes: u64, skip_sync: bool) -> usize {
    let (sim, fs, dir) = sim(seed);
    let mut rng = Rng::new(seed);
    let mut acked: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut lost = 0;
    let policy = FsyncPolicy::Always {
        max_delay: Duration::from_millis(2),
        max_bytes: 4096,
    };
    for round in 0..5u64 {
        let (log, rec) = open(&fs, &dir, opts(segment_bytes));
        assert!(rec.corrupt.is_empty(), "seed {seed} round {round}: {rec:?}");
        let found: BTreeMap<u64, Vec<u8>> = read_all(&log, 1).into_iter().collect();
        for (seq, p) in &acked {
            if found.get(seq) != Some(p) {
                lost += 1;
            }
        }
        acked = found;
        let gc = if skip_sync {
            GroupCommit::start_skipping_sync(log, policy)
        } else {
            GroupCommit::start(log, policy)
        };
        let gc = Arc::new(gc.unwrap());
        let acks = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (gc, acks, done) = (Arc::clone(&gc), Arc::clone(&acks), Arc::clone(&done));
                std::thread::spawn(move || {
                    for i in 0..300u64 {
                        let p = format!("r{round}-t{t}-{i}-{}", "y".repeat((i % 13) as usize));
                        match gc.submit_blocking(p.clone().into_bytes()) {
                            Ok(seq) => acks.lock().unwrap().push((seq, p.into_bytes())),
                            Err(_) => break,
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        let target = 1 + rng.below(400) as usize;
        let deadline = Instant::now() + Duration::from_secs(10);
        while acks.lock().unwrap().len() < target
            && done.load(Ordering::SeqCst) < 4
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        sim.power_cut(round % 2 == 1);
        for t in threads {
            t.join().unwrap();
        }
        let gc = Arc::try_unwrap(gc).ok().unwrap();
        let _ = gc.shutdown();
        acked.extend(acks.lock().unwrap().drain(..));
    }
    let (log, _) = open(&fs, &dir, opts(segment_bytes));
    let found: BTreeMap<u64, Vec<u8>> = read_all(&log, 1).into_iter().collect();
    lost += acked
        .iter()
        .filter(|(s, p)| found.get(*s) != Some(*p))
        .count();
    lost
}

#[test]
fn power_cuts_lose_no_acknowledged_record_under_group_commit() {
    for seed in 0..4 {
        assert_eq!(power_cut_rounds(seed, 2048, false), 0, "seed {seed}");
    }
}

#[test]
fn the_power_cut_test_catches_a_missing_sync() {
    // Large segments: no roll syncs on the missing sync's behalf.
    let lost = power_cut_rounds(11, 1 << 20, true);
    assert!(
        lost > 0,
        "acknowledging without a sync must lose records at a cut"
    );
}

#[test]
fn group_commit_shares_syncs_between_concurrent_submitters() {
    let (sim, fs, dir) = sim(12);
    let (log, _) = open(&fs, &dir, opts(1 << 20));
    let gc = Arc::new(GroupCommit::start(log, WalConfig::default().policy()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let gc = Arc::clone(&gc);
            std::thread::spawn(move || {
                for i in 0..100u64 {
                    gc.submit_blocking(format!("{t}-{i}").into_bytes()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = gc.stats();
    assert_eq!(stats.records, 800);
    assert_eq!(gc.durable(), 800);
    assert_eq!(stats.group_records.sum, 800);
    assert!(stats.syncs <= 800 && stats.syncs == stats.group_records.count);
    assert_eq!(stats.sync_latency_us.count, stats.syncs);
    assert!(sim.syncs() >= stats.syncs);
    let log = Arc::try_unwrap(gc).ok().unwrap().shutdown().unwrap();
    assert_eq!(read_all(&log, 1).len(), 800);
}

#[test]
fn a_full_disk_under_group_commit_acknowledges_nothing_unwritten() {
    let (sim, fs, dir) = sim(13);
    let (log, _) = open(&fs, &dir, opts(512));
    let gc = GroupCommit::start(log, WalConfig::default().policy()).unwrap();
    for i in 1..=5 {
        assert_eq!(gc.submit_blocking(payload(i)).unwrap(), i);
    }
    sim.set_free(Some(7));
    for i in 0..20 {
        let err = gc.submit_blocking(payload(100 + i)).unwrap_err();
        assert!(err.is_full(), "{err}");
    }
    assert_eq!(gc.durable(), 5);
    assert_eq!(gc.stats().write_errors, 20);
    // Space returns: service resumes by itself.
    sim.set_free(None);
    assert_eq!(gc.submit_blocking(payload(6)).unwrap(), 6);
    drop(gc);
    sim.power_cut(true);
    let (log, rec) = open(&fs, &dir, opts(512));
    assert_eq!((rec.corrupt.len(), rec.truncated_bytes), (0, 0));
    let all = read_all(&log, 1);
    assert_eq!(
        all.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert!(all.iter().all(|(s, p)| *p == payload(*s)));
}

#[test]
fn a_failed_sync_under_always_answers_errors_and_hands_the_numbers_out_again() {
    let (sim, fs, dir) = sim(14);
    let (log, _) = open(&fs, &dir, opts(1 << 20));
    let gc = GroupCommit::start(log, WalConfig::default().policy()).unwrap();
    assert_eq!(gc.submit_blocking(b"one".to_vec()).unwrap(), 1);
    sim.set_fail_syncs(true);
    assert!(
        gc.submit_blocking(b"lost".to_vec())
            .unwrap_err()
            .is_retryable()
    );
    assert_eq!(gc.stats().sync_errors, 1);
    sim.set_fail_syncs(false);
    assert_eq!(gc.submit_blocking(b"two".to_vec()).unwrap(), 2);
    let log = gc.shutdown().unwrap();
    assert_eq!(
        read_all(&log, 1),
        vec![(1, b"one".to_vec()), (2, b"two".to_vec())]
    );
}

#[test]
fn interval_and_never_answer_after_the_append() {
    for policy in [
        FsyncPolicy::Interval(Duration::from_millis(5)),
        FsyncPolicy::Never,
    ] {
        let (sim, fs, dir) = sim(15);
        let (log, _) = open(&fs, &dir, opts(1 << 20));
        let gc = GroupCommit::start(log, policy).unwrap();
        for i in 1..=20 {
            assert_eq!(gc.submit_blocking(payload(i)).unwrap(), i);
        }
        if policy == FsyncPolicy::Never {
            assert_eq!(gc.durable(), 0, "never syncs on its own");
            assert_eq!(sim.syncs(), 1, "only the open's sync");
        } else {
            let deadline = Instant::now() + Duration::from_secs(5);
            while gc.durable() < 20 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(gc.durable(), 20, "synced within the interval");
        }
        // A flush makes everything durable under any policy.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(gc.flush()).unwrap().unwrap(), 20);
        assert_eq!(gc.durable(), 20);
        sim.power_cut(false);
        drop(gc);
        let (log, _) = open(&fs, &dir, opts(1 << 20));
        assert_eq!(read_all(&log, 1).len(), 20);
    }
}

#[test]
fn submit_is_awaitable_and_jobs_run_in_queue_order() {
    let (_sim, fs, dir) = sim(16);
    let (log, _) = open(&fs, &dir, opts(256));
    let gc = GroupCommit::start(log, WalConfig::default().policy()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let gc = Arc::new(gc);
    let seqs = rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..50u64 {
            let gc = Arc::clone(&gc);
            handles.push(tokio::spawn(async move { gc.submit(payload(i + 1)).await }));
        }
        let mut seqs = Vec::new();
        for h in handles {
            seqs.push(h.await.unwrap().unwrap().unwrap());
        }
        seqs
    });
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=50).collect::<Vec<_>>());
    // A job sees every record queued before it.
    let next = rt.block_on(gc.run(|log: &mut Log| log.next_seq())).unwrap();
    assert_eq!(next, 51);
    let gc = Arc::try_unwrap(gc).ok().unwrap();
    gc.shutdown().unwrap();
    // After shutdown the writer answers "closed", never hangs.
    let (_sim, fs, dir) = sim(16);
    let (log, _) = open(&fs, &dir, opts(256));
    let gc = GroupCommit::start(log, FsyncPolicy::Never).unwrap();
    let _log = gc.shutdown().unwrap();
}

#[test]
fn the_histogram_reports_bucket_bounds() {
    let mut stats = CommitStats::default();
    for v in [10, 60, 700, 700, 3_000] {
        stats.sync_latency_us.record(v);
    }
    assert_eq!(stats.sync_latency_us.quantile(0.5), 1_000);
    // Its bucket ends at 4 ms, but nothing above 3 ms was seen.
    assert_eq!(stats.sync_latency_us.quantile(0.99), 3_000);
    assert_eq!(stats.sync_latency_us.quantile(0.0), 50);
    assert_eq!(stats.sync_latency_us.max, 3_000);
    assert_eq!(CommitStats::default().sync_latency_us.quantile(0.5), 0);
    // Past the last bound (4 s) the quantile is the largest value seen,
    // never the open bucket's infinite bound.
    let mut slow = Histogram::latency_us();
    for v in [200, 9_000_000, 7_000_000] {
        slow.record(v);
    }
    assert_eq!(slow.quantile(0.99), 9_000_000);
    assert_eq!(slow.quantile(0.5), 9_000_000);
    assert_eq!(slow.quantile(0.3), 250);
}

#[test]
fn config_reads_snake_case_keys_and_kebab_case_values() {
    let c: WalConfig =
        toml::from_str("fsync = \"interval\"\nfsync_interval_ms = 250\nsegment_bytes = 1024\n")
            .unwrap();
    assert_eq!(
        c.policy(),
        FsyncPolicy::Interval(Duration::from_millis(250))
    );
    assert_eq!(c.log_options().segment_bytes, 1024);
    let d = WalConfig::default();
    assert_eq!(
        d.policy(),
        FsyncPolicy::Always {
            max_delay: Duration::from_millis(2),
            max_bytes: 256 * 1024
        }
    );
    assert!(toml::from_str::<WalConfig>("fsink = \"always\"").is_err());
}

// ---------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------

fn store(fs: &Arc<dyn WalFs>, dir: &Path) -> CheckpointStore {
    CheckpointStore::open(Arc::clone(fs), dir).unwrap()
}

#[test]
fn checkpoints_keep_the_newest_two() {
    let (_sim, fs, dir) = sim(20);
    let s = store(&fs, &dir);
    assert!(s.load_latest().unwrap().is_none());
    for seq in [10, 20, 30] {
        let info = s.write(seq, format!("state at {seq}").as_bytes()).unwrap();
        assert_eq!(info.wal_seq, seq);
    }
    let names: Vec<String> = fs.list(&dir).unwrap();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(s.oldest_kept().unwrap(), Some(20));
    let (info, payload) = s.load_latest().unwrap().unwrap();
    assert_eq!((info.wal_seq, payload), (30, b"state at 30".to_vec()));
    assert!(info.skipped.is_empty());
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_previous() {
    let (disk, fs, dir) = sim(21);
    let s = store(&fs, &dir);
    s.write(10, b"ten").unwrap();
    let newest = s.write(20, b"twenty").unwrap();
    disk.corrupt(&newest.path, 34);
    let (info, payload) = s.load_latest().unwrap().unwrap();
    assert_eq!((info.wal_seq, payload), (10, b"ten".to_vec()));
    assert_eq!(info.skipped, vec![newest.path.clone()]);
    // Both damaged: a clear error, not a silent start from nothing.
    disk.corrupt(&info.path, 33);
    let err = s.load_latest().unwrap_err();
    assert!(
        matches!(err, WalError::NoValidCheckpoint { tried: 2, .. }),
        "{err}"
    );
    // A torn (short) checkpoint is damaged too.
    let (_sim, fs, dir) = sim(22);
    let s = store(&fs, &dir);
    s.write(1, b"one").unwrap();
    let two = s.write(2, b"two two").unwrap();
    fs.truncate(&two.path, 33).unwrap();
    assert_eq!(s.load_latest().unwrap().unwrap().0.wal_seq, 1);
}

#[test]
fn a_cut_at_any_step_of_a_checkpoint_write_leaves_one_loadable() {
    for steps in 0..12 {
        let (sim, fs, dir) = sim(30 + steps);
        let s = store(&fs, &dir);
        s.write(10, b"previous").unwrap();
        sim.crash_after(Some(steps));
        let finished = s.write(20, b"newest state").is_ok();
        sim.power_cut(steps % 2 == 0);
        let s = store(&fs, &dir);
        let (info, payload) = s.load_latest().unwrap().unwrap();
        assert!(info.skipped.is_empty(), "steps {steps}: {info:?}");
        match info.wal_seq {
            10 => assert_eq!(payload, b"previous"),
            20 => assert_eq!(payload, b"newest state"),
            other => panic!("unexpected checkpoint {other}"),
        }
        if finished {
            assert_eq!(
                info.wal_seq, 20,
                "steps {steps}: a finished write is durable"
            );
        }
        // No temporary file survives a reopen.
        assert!(fs.list(&dir).unwrap().iter().all(|n| !n.ends_with(".tmp")));
    }
}

// ---------------------------------------------------------------------------
// The real filesystem
// ---------------------------------------------------------------------------

#[test]
fn the_log_and_checkpoints_work_on_the_real_filesystem() {
    let tmp = tempfile::tempdir().unwrap();
    let fs: Arc<dyn WalFs> = Arc::new(StdFs);
    let missing = Log::open(Arc::clone(&fs), tmp.path().join("missing"), opts(256));
    assert!(matches!(missing, Err(WalError::DataDir { .. })));

    let (log, _) = open(&fs, tmp.path(), opts(256));
    let gc = GroupCommit::start(log, WalConfig::default().policy()).unwrap();
    for i in 1..=50 {
        assert_eq!(gc.submit_blocking(payload(i)).unwrap(), i);
    }
    drop(gc);
    let (mut log, rec) = open(&fs, tmp.path(), opts(256));
    assert_eq!((rec.records, rec.truncated_bytes), (50, 0));
    assert!(rec.segments > 1);
    // A torn tail on a real file.
    let last = segment_firsts(&fs, tmp.path()).pop().unwrap();
    let path = segment_path(tmp.path(), last);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &[9, 0, 0, 0, 1, 2]))
        .unwrap();
    drop(log);
    let (l, rec) = open(&fs, tmp.path(), opts(256));
    log = l;
    assert_eq!((rec.records, rec.truncated_bytes), (50, 6));
    assert_eq!(read_all(&log, 1).len(), 50);

    let store = CheckpointStore::open(Arc::clone(&fs), tmp.path()).unwrap();
    store.write(50, b"state").unwrap();
    let (info, payload) = store.load_latest().unwrap().unwrap();
    assert_eq!((info.wal_seq, payload), (50, b"state".to_vec()));
    log.set_retention_floor(store.oldest_kept().unwrap().unwrap() + 1);
    log.truncate_before(51).unwrap();
    assert_eq!(log.stats().segments, 1);
}

/// Appends/s and commit latency per policy for ~100 KB records (about a
/// 1,000-event batch) on the real disk:
/// `cargo test -p eddy --release --lib wal::tests::bench -- --ignored --nocapture`
/// (`EDDY_WAL_BENCH_DIR` picks the directory, default the system temp dir).
#[test]
#[ignore = "a benchmark: prints figures, asserts nothing about speed"]
fn bench_commit_policies_on_the_real_disk() {
    const RECORD: usize = 100 * 1024;
    const SUBMITTERS: usize = 8;
    const PER_SUBMITTER: usize = 250;
    let base = std::env::var_os("EDDY_WAL_BENCH_DIR").map(PathBuf::from);
    let policies = [
        ("always", WalConfig::default().policy()),
        (
            "interval 100ms",
            FsyncPolicy::Interval(Duration::from_millis(100)),
        ),
        ("never", FsyncPolicy::Never),
    ];
    for submitters in [1, SUBMITTERS] {
        for (name, policy) in policies {
            let tmp = match &base {
                Some(b) => tempfile::tempdir_in(b).unwrap(),
                None => tempfile::tempdir().unwrap(),
            };
            let fs: Arc<dyn WalFs> = Arc::new(StdFs);
            let (log, _) = open(&fs, tmp.path(), LogOptions::default());
            let gc = Arc::new(GroupCommit::start(log, policy).unwrap());
            let per = PER_SUBMITTER * SUBMITTERS / submitters;
            let started = Instant::now();
            let threads: Vec<_> = (0..submitters)
                .map(|t| {
                    let gc = Arc::clone(&gc);
                    std::thread::spawn(move || {
                        let mut lat = Vec::with_capacity(per);
                        let record = vec![b'a' + t as u8; RECORD];
                        for _ in 0..per {
                            let t0 = Instant::now();
                            gc.submit_blocking(record.clone()).unwrap();
                            lat.push(t0.elapsed());
                        }
                        lat
                    })
                })
                .collect();
            let mut lat: Vec<Duration> = threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect();
            let elapsed = started.elapsed();
            lat.sort_unstable();
            let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
            let stats = gc.stats();
            let n = lat.len() as f64;
            println!(
                "{name:>15} x{submitters}: {:>7.0} appends/s {:>6.0} MB/s  p50 {:>8.2?} p99 {:>8.2?}  syncs {:>5} (p50 {} us), {:.1} records/sync",
                n / elapsed.as_secs_f64(),
                n * RECORD as f64 / 1e6 / elapsed.as_secs_f64(),
                q(0.5),
                q(0.99),
                stats.syncs,
                stats.sync_latency_us.quantile(0.5),
                if stats.group_records.count > 0 {
                    stats.group_records.sum as f64 / stats.group_records.count as f64
                } else {
                    0.0
                },
            );
        }
    }
}
