use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::event::{Event, Value};
use crate::filter::Filter;

fn hub(replay_capacity: usize, client_queue: usize) -> Hub {
    Hub::new(HubConfig {
        replay_capacity,
        client_queue,
        ..HubConfig::default()
    })
}

fn n(i: u64) -> Payload {
    Payload::Json(json!({ "i": i }))
}

fn event(i: u64) -> Event {
    Event {
        id: format!("e{i}").into(),
        name: "$pageview".into(),
        timestamp: 1_700_000_000_000,
        distinct_id: "u1".into(),
        session_id: None,
        properties: vec![("$browser".into(), Value::Str("Chrome".into()))],
    }
}

fn seqs(messages: &[Arc<Message>]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

/// Read whatever is available now.
fn drain(sub: &mut Subscription) -> Result<Vec<u64>, Lagged> {
    let mut out = Vec::new();
    while sub.try_next_batch(256, &mut out)? {}
    Ok(seqs(&out))
}

#[test]
fn sequence_starts_at_one_and_is_contiguous() {
    let hub = Hub::default();
    let p = hub.register("events");
    assert_eq!(p.publish(n(1)), 1);
    assert_eq!(p.publish_batch((2..=4).map(n)), Some((2, 4)));
    assert_eq!(p.publish_batch(std::iter::empty()), None);
    assert_eq!(
        hub.register("events").publish(n(5)),
        5,
        "same channel, same sequence"
    );
    let mut sub = hub.subscribe("events", Some(0)).unwrap();
    assert_eq!(drain(&mut sub).unwrap(), [1, 2, 3, 4, 5]);
    assert_eq!(sub.last_delivered(), 5);
    assert_eq!(sub.channel(), "events");
    let recent = hub.recent("events", 100).unwrap();
    assert_eq!(recent[2].payload, n(3));
}

#[tokio::test]
async fn next_batch_waits_for_a_publish() {
    let hub = Hub::default();
    let p = hub.register("events");
    let mut sub = hub.subscribe("events", None).unwrap();
    let publisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        p.publish_batch((1..=3).map(n))
    });
    let mut out = Vec::new();
    sub.next_batch(2, &mut out).await.unwrap();
    assert_eq!(publisher.await.unwrap(), Some((1, 3)));
    assert_eq!(seqs(&out), [1, 2]);
    sub.next_batch(0, &mut out).await.unwrap();
    assert_eq!(seqs(&out), [1, 2, 3], "max 0 counts as 1");
    let more = tokio::time::timeout(Duration::from_millis(20), sub.next_batch(10, &mut out));
    assert!(more.await.is_err(), "nothing more to read: it waits");
    assert_eq!(out.len(), 3);
}

/// A publisher on another task, a subscriber that keeps dropping its
/// subscription and resuming from `last_delivered`, and reads cancelled by a
/// timer in `select!`: every seq exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_has_no_gap_and_no_duplicate() {
    const TOTAL: u64 = 5_000;
    let hub = hub(10_000, 10_000);
    let p = hub.register("events");
    p.publish_batch((1..=100).map(n));
    let publisher = tokio::spawn(async move {
        let mut next = 101;
        while next <= TOTAL {
            // Batches of 1 to 37 messages, to vary where resumes fall.
            let size = 1 + next % 37;
            let last = (next + size - 1).min(TOTAL);
            assert_eq!(p.publish_batch((next..=last).map(n)), Some((next, last)));
            next = last + 1;
            tokio::task::yield_now().await;
        }
    });
    // The client has already seen 1..=40: replay starts at 41.
    let mut sub = hub.subscribe("events", Some(40)).unwrap();
    let mut received: Vec<u64> = (1..=40).collect();
    let mut out = Vec::new();
    let mut rounds = 0_u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received.len() < TOTAL as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at {}",
            received.len()
        );
        tokio::select! {
            r = sub.next_batch(64, &mut out) => r.unwrap(),
            () = tokio::time::sleep(Duration::from_micros(50)) => {}
        }
        received.extend(seqs(&out));
        out.clear();
        rounds += 1;
        if rounds.is_multiple_of(5) {
            let since = sub.last_delivered();
            assert_eq!(since, *received.last().unwrap());
            sub = hub.subscribe("events", Some(since)).unwrap();
        }
    }
    publisher.await.unwrap();
    assert_eq!(received, (1..=TOTAL).collect::<Vec<_>>());
}

#[test]
fn errors_carry_the_numbers() {
    let hub = hub(10, 1_000);
    let p = hub.register("events");
    hub.register("alerts");
    p.publish_batch((1..=25).map(n));
    let err = hub.subscribe("events", Some(14)).unwrap_err();
    assert_eq!(
        err,
        SubscribeError::TooOld {
            since: 14,
            oldest_available: 16
        }
    );
    assert_eq!(
        err.to_string(),
        "since=14 is too old: the oldest message that can be replayed is seq 16"
    );
    let mut sub = hub.subscribe("events", Some(15)).unwrap();
    assert_eq!(drain(&mut sub).unwrap(), (16..=25).collect::<Vec<_>>());
    assert!(
        drain(&mut hub.subscribe("events", Some(25)).unwrap())
            .unwrap()
            .is_empty()
    );
    let err = hub.subscribe("events", Some(26)).unwrap_err();
    assert_eq!(
        err,
        SubscribeError::InFuture {
            since: 26,
            head: 25
        }
    );
    assert_eq!(
        err.to_string(),
        "since=26 is ahead of the channel head, seq 25"
    );
    let err = hub.subscribe("evnets", None).unwrap_err();
    assert_eq!(
        err,
        SubscribeError::UnknownChannel {
            name: "evnets".into(),
            available: vec!["alerts".into(), "events".into()]
        }
    );
    assert_eq!(
        err.to_string(),
        "unknown channel `evnets`; available channels: alerts, events"
    );
    assert!(matches!(
        hub.recent("nope", 1),
        Err(SubscribeError::UnknownChannel { .. })
    ));

    // Resuming further back than client_queue is allowed while the ring
    // still holds the messages (a client cut off for lagging must be able
    // to come back); only evicted messages are too old.
    let hub = super::tests::hub(10, 5);
    hub.register("events").publish_batch((1..=20).map(n));
    let err = hub.subscribe("events", Some(9)).unwrap_err();
    assert_eq!(
        err,
        SubscribeError::TooOld {
            since: 9,
            oldest_available: 11
        }
    );
    assert_eq!(
        drain(&mut hub.subscribe("events", Some(10)).unwrap()).unwrap(),
        (11..=20).collect::<Vec<_>>(),
        "a resume 10 back with client_queue 5 reads through without lagging"
    );
    assert_eq!(
        drain(&mut hub.subscribe("events", Some(15)).unwrap()).unwrap(),
        [16, 17, 18, 19, 20]
    );
}

#[tokio::test]
async fn slow_subscriber_lags_with_what_it_really_received() {
    const QUEUE: usize = 100;
    let hub = hub(10_000, QUEUE);
    let p = hub.register("events");
    let mut sub = hub.subscribe("events", None).unwrap();
    p.publish_batch((1..=50).map(n));
    let mut out = Vec::new();
    sub.next_batch(30, &mut out).await.unwrap();
    assert_eq!(sub.last_delivered(), 30);
    p.publish_batch((51..=2 * QUEUE as u64).map(n));
    let lagged = sub.next_batch(30, &mut out).await.unwrap_err();
    assert_eq!(
        lagged,
        Lagged {
            last_delivered: 30,
            head: 200
        }
    );
    assert_eq!(out.len(), 30, "nothing handed out once lagged");
    assert_eq!(
        sub.next_batch(30, &mut out).await,
        Err(lagged),
        "stays lagged"
    );
    let info = &hub.channels()[0];
    assert_eq!(info.slow_closes, 1, "a lagged subscription counts once");
    assert_eq!(info.published, 200);
    hub.note_slow_close("events");
    hub.note_slow_close("no-such-channel");
    assert_eq!(hub.channels()[0].slow_closes, 2);
    assert_eq!(
        lagged.to_string(),
        "subscriber fell behind: delivered up to seq 30, channel head is at seq 200"
    );

    // A backlog exactly at the bound is still fine.
    let mut at_bound = hub.subscribe("events", Some(100)).unwrap();
    assert_eq!(drain(&mut at_bound).unwrap().len(), QUEUE);
}

#[test]
fn subscriber_whose_messages_left_the_ring_lags() {
    let hub = hub(10, 1_000);
    let p = hub.register("events");
    let mut sub = hub.subscribe("events", None).unwrap();
    p.publish_batch((1..=20).map(n));
    assert_eq!(
        drain(&mut sub),
        Err(Lagged {
            last_delivered: 0,
            head: 20
        })
    );
}

#[test]
fn idle_subscribers_do_not_block_publishing() {
    const IDLE: usize = 500;
    const TOTAL: u64 = 100_000;
    const QUEUE: usize = 50_000;
    let hub = hub(100_000, QUEUE);
    let p = hub.register("events");
    let mut idle: Vec<Subscription> = (0..IDLE)
        .map(|_| hub.subscribe("events", None).unwrap())
        .collect();
    for start in (1..=TOTAL).step_by(1_000) {
        p.publish_batch((start..start + 1_000).map(n));
    }
    let info = &hub.channels()[0];
    assert_eq!(
        (info.head_seq, info.oldest_seq, info.subscribers),
        (TOTAL, 1, IDLE)
    );
    // Everything is still in the ring, so even since = 0 may resume.
    let mut fresh = hub.subscribe("events", Some(0)).unwrap();
    assert_eq!(drain(&mut fresh).unwrap(), (1..=TOTAL).collect::<Vec<_>>());
    for sub in &mut idle {
        assert_eq!(
            drain(sub),
            Err(Lagged {
                last_delivered: 0,
                head: TOTAL
            })
        );
    }
    drop(idle);
    assert_eq!(hub.channels()[0].subscribers, 1);
    drop(fresh);
    assert_eq!(p.subscribers(), 0);
}

#[test]
fn ring_evicts_the_oldest() {
    let hub = hub(5, 5);
    let p = hub.register("events");
    p.publish_batch((1..=8).map(n));
    assert_eq!(seqs(&p.recent(100)), [4, 5, 6, 7, 8]);
    assert_eq!(seqs(&hub.recent("events", 2).unwrap()), [7, 8]);
    assert_eq!(
        hub.channels(),
        [ChannelInfo {
            name: "events".into(),
            head_seq: 8,
            oldest_seq: 4,
            subscribers: 0,
            published: 8,
            slow_closes: 0,
        }]
    );
    let empty = hub.register_with(
        "stats",
        HubConfig {
            replay_capacity: 0,
            client_queue: 0,
            replay_bytes: 0,
            first_seq: 0,
        },
    );
    assert_eq!(
        (hub.channels()[1].head_seq, hub.channels()[1].oldest_seq),
        (0, 1)
    );
    empty.publish_batch((1..=3).map(n));
    assert_eq!(seqs(&empty.recent(10)), [3], "capacity 0 is raised to 1");
}

#[test]
fn payload_json_is_the_compact_json_of_the_payload() {
    let e = event(1);
    let m = Message::new(1, Payload::Event(e.clone()));
    let mut written = "x".to_owned();
    m.write_payload_json(&mut written);
    assert_eq!(written[1..], serde_json::to_string(&e).unwrap());
    assert_eq!(m.payload_json(), serde_json::to_string(&e).unwrap());
    assert!(
        std::ptr::eq(m.payload_json(), m.payload_json()),
        "serialized once"
    );
    let m = Message::new(
        2,
        Payload::Json(json!({"kind": "window", "count": 3, "top": [1, 2]})),
    );
    assert_eq!(
        m.payload_json(),
        r#"{"kind":"window","count":3,"top":[1,2]}"#
    );
}

#[test]
fn a_shared_frame_is_built_once_and_shared() {
    let m = Message::new(7, Payload::Json(json!({"a": 1})));
    let mut builds = 0;
    let mut build = |m: &Message| {
        builds += 1;
        let mut out = format!("<{}:", m.seq);
        m.write_payload_json(&mut out);
        out.push('>');
        out.into()
    };
    let first = m.shared_frame(&mut build);
    let second = m.shared_frame(&mut build);
    assert_eq!(first.as_str(), r#"<7:{"a":1}>"#);
    assert_eq!(builds, 1, "built once");
    assert_eq!(
        first.as_str().as_ptr(),
        second.as_str().as_ptr(),
        "shared, not copied"
    );
}

#[test]
fn filters_apply_to_payloads() {
    let f = Filter::from_json(&json!({"names": ["$pageview", "window"],
        "where": [{"field": "properties.$browser", "op": "equals", "value": "Chrome"}]}))
    .unwrap();
    assert!(f.matches(&Payload::Event(event(1))));
    assert!(!f.matches(&Payload::Json(json!({"kind": "window"}))));
    assert!(f.matches(&Payload::Json(
        json!({"kind": "window", "properties": {"$browser": "Chrome"}})
    )));
}

/// Functional only: a batch of 1,000 events in, read back in batches of 256.
#[test]
fn publish_and_read_a_batch_of_events() {
    let hub = Hub::default();
    let p = hub.register("events");
    let mut sub = hub.subscribe("events", None).unwrap();
    assert_eq!(
        p.publish_batch((1..=1_000).map(|i| Payload::Event(event(i)))),
        Some((1, 1_000))
    );
    let mut out = Vec::new();
    let mut batches = 0;
    while sub.try_next_batch(256, &mut out).unwrap() {
        batches += 1;
    }
    assert_eq!((batches, out.len()), (4, 1_000));
    assert!(matches!(&out[999].payload, Payload::Event(e) if e.id == "e1000"));
}

#[test]
fn the_ring_keeps_within_its_byte_bound_too() {
    let big = |i: u64| {
        let mut e = event(i);
        e.properties
            .push(("blob".into(), Value::Str("x".repeat(60 * 1024).into())));
        Payload::Event(e)
    };
    let one = big(0).approx_bytes();
    assert!(one > 60 * 1024, "{one}");
    let hub = Hub::new(HubConfig {
        replay_capacity: 1_000,
        client_queue: 1_000,
        replay_bytes: one * 10,
        first_seq: 1,
    });
    let p = hub.register("events");
    p.publish_batch((0..100).map(big));
    let info = &hub.channels()[0];
    assert_eq!(info.head_seq, 100);
    // 100 messages published, 1,000 allowed by count: the bytes bound kept
    // the last ten.
    assert_eq!(info.oldest_seq, 91, "{info:?}");
    // A single message larger than the bound is still kept (the newest
    // always is).
    let tiny = Hub::new(HubConfig {
        replay_bytes: 1,
        ..HubConfig::default()
    });
    let t = tiny.register("t");
    t.publish_batch((0..3).map(big));
    assert_eq!(seqs(&t.recent(10)), vec![3]);
}

#[test]
fn a_publisher_that_numbers_its_messages_continues_its_sequence() {
    let hub = hub(10, 10);
    let p = hub.register_after("engine", 41);
    assert_eq!(hub.channels()[0].head_seq, 41);
    assert_eq!(p.publish_batch_at(42, (0..3).map(n)), Some((42, 44)));
    let mut sub = hub.subscribe("engine", Some(43)).unwrap();
    assert_eq!(drain(&mut sub).unwrap(), vec![44]);
    // Skipping ahead starts the ring over after the gap.
    assert_eq!(p.publish_batch_at(50, (0..2).map(n)), Some((50, 51)));
    assert_eq!(seqs(&p.recent(10)), vec![50, 51]);
    assert!(
        drain(&mut sub).is_err(),
        "a subscriber in the gap is told it lagged"
    );
}

#[test]
fn subscribing_from_the_oldest_message_says_how_many_the_ring_let_go() {
    let hub = hub(3, 100);
    // Nothing published yet: live, nothing missed.
    let p = hub.register("results");
    let (mut sub, missed) = hub.subscribe_oldest("results").unwrap();
    assert_eq!(missed, 0);
    p.publish_batch((1..=2).map(n));
    assert_eq!(drain(&mut sub).unwrap(), [1, 2]);
    // Five published, three kept: the subscription starts at the oldest
    // kept and the two before it are missed.
    p.publish_batch((3..=5).map(n));
    let (mut sub, missed) = hub.subscribe_oldest("results").unwrap();
    assert_eq!(missed, 2);
    assert_eq!(drain(&mut sub).unwrap(), [3, 4, 5]);
}
