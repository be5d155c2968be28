//! Metrics snapshots agree with what the handlers saw, and serialize.

mod common;

use std::sync::{mpsc, Arc, Mutex};

use common::*;
use ringbus::{Blocking, Sequence};

#[test]
fn snapshot_agrees_with_the_handlers() {
    bounded(60, || {
        let (open, gate) = mpsc::channel::<()>();
        let (v, stats) = Verifier::new(true);
        let first_seen = Arc::new(Mutex::new(0u64));
        let seen = Arc::clone(&first_seen);
        let mut p = ringbus::single_producer(16, Event::default, Blocking)
            .thread_name("fast")
            .handle_events_with(move |_e: &Event, _s: Sequence, _b: bool| {
                *seen.lock().unwrap() += 1;
            })
            .thread_name("gated")
            .handle_events_with(move |_e: &Event, seq: Sequence, _b: bool| {
                if seq >= 4 {
                    let _ = gate.recv();
                }
            })
            .and_then()
            .thread_name("last")
            .handle_events_with(v)
            .build();
        let metrics = p.metrics();
        // Stages store their sequence once per batch: let the gated stage
        // finish 0..=3 first, then it blocks on 4 with its sequence at 3.
        for i in 0..4 {
            p.publish(|e| e.set(i)).unwrap();
        }
        while metrics.snapshot().stages[1].sequence < 3 {
            std::thread::yield_now();
        }
        for i in 4..10 {
            p.publish(|e| e.set(i)).unwrap();
        }
        while metrics.snapshot().stages[0].sequence < 9 {
            std::thread::yield_now();
        }
        let snap = metrics.snapshot();
        assert_eq!((snap.capacity, snap.cursor), (16, 9));
        let names: Vec<&str> = snap.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["fast", "gated", "last"]);
        assert_eq!(snap.stages[0].sequence, 9);
        assert_eq!(snap.stages[0].lag, 0);
        assert_eq!(snap.stages[1].sequence, 3, "stuck handling event 4");
        assert_eq!(snap.stages[1].lag, 6);
        assert!(snap.stages[2].sequence <= 3);
        // The slowest leaf (`last`) gates: at most 16 - (9 - 3) free.
        assert!(snap.remaining_capacity <= 16 - 6, "{snap:?}");
        #[cfg(feature = "serde")]
        {
            let json = serde_json::to_string(&snap).unwrap();
            assert!(
                json.contains("\"name\":\"gated\"") && json.contains("\"lag\":6"),
                "{json}"
            );
            let back: ringbus::MetricsSnapshot = serde_json::from_str(&json).unwrap();
            assert_eq!(back, snap);
        }

        drop(open);
        let report = p.shutdown().unwrap();
        let after = metrics.snapshot();
        for (m, r) in after.stages.iter().zip(&report.stages) {
            assert_eq!((m.processed, m.lag), (10, 0));
            assert_eq!(m.processed, r.processed);
        }
        assert_eq!(stats.lock().unwrap().count, after.stages[2].processed);
        assert_eq!(*first_seen.lock().unwrap(), after.stages[0].processed);
        assert_eq!(after.remaining_capacity, 16);
    });
}

#[test]
fn multi_producer_snapshot_counts_every_clone() {
    bounded(60, || {
        let p = ringbus::multi_producer(64, Event::default, Blocking)
            .handle_events_with(|_e: &Event, _s: Sequence, _b: bool| {})
            .build();
        let q = p.clone();
        let metrics = q.metrics();
        for i in 0..20 {
            p.publish(|e| e.set(i)).unwrap();
            q.publish(|e| e.set(i)).unwrap();
        }
        assert_eq!(metrics.snapshot().cursor, 39);
        drop(p);
        q.shutdown().unwrap();
        let snap = metrics.snapshot();
        assert_eq!((snap.cursor, snap.stages[0].processed), (39, 40));
    });
}

#[test]
fn runtime_subscribers_appear_with_their_lag_and_leave_with_them() {
    let mut producer = ringbus::single_producer(8, || 0u64, ringbus::Blocking)
        .thread_name("audit")
        .handle_events_with(|_: &u64, _: ringbus::Sequence, _: bool| {})
        .build();
    let metrics = producer.metrics();
    assert!(
        metrics.snapshot().subscribers.is_empty(),
        "build-time stages are not subscribers"
    );
    let mut poller = producer.subscribe().unwrap();
    for i in 0..5 {
        producer.publish(|e| *e = i).unwrap();
    }
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.subscribers.len(), 1);
    assert_eq!(snapshot.subscribers[0].lag, 5, "{snapshot:?}");
    poller
        .poll(3, |_: &u64, _: ringbus::Sequence, _: bool| {})
        .unwrap();
    let snapshot = metrics.snapshot();
    assert_eq!(
        (
            snapshot.subscribers[0].sequence,
            snapshot.subscribers[0].lag
        ),
        (2, 2)
    );
    let subscription = producer
        .subscribe_with(|_: &u64, _: ringbus::Sequence, _: bool| {})
        .unwrap();
    assert_eq!(metrics.snapshot().subscribers.len(), 2);
    drop(poller);
    subscription.unsubscribe();
    assert!(metrics.snapshot().subscribers.is_empty());
    producer.shutdown().unwrap();
}
