//! Work pools: each event handled by exactly one worker; stages after the
//! pool see an event only once the worker that took it has finished.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use ringbus::{Sequence, Yielding};

const EVENTS: u64 = common::scaled(100_000, 300);

/// Runs a pool of `workers` then a checking stage; returns each worker's
/// share and checks exactly-once and ordering against the later stage.
fn run_pool(workers: usize, multi: bool) -> Vec<u64> {
    let done: Arc<Vec<AtomicBool>> =
        Arc::new((0..EVENTS).map(|_| AtomicBool::new(false)).collect());
    let shares: Arc<Vec<AtomicU64>> = Arc::new((0..workers).map(|_| AtomicU64::new(0)).collect());
    let after = Arc::new(Mutex::new(0u64));
    let (d, sh) = (Arc::clone(&done), Arc::clone(&shares));
    let make = move |i: usize| {
        let (done, shares) = (Arc::clone(&d), Arc::clone(&sh));
        move |e: &Event, seq: Sequence, _eob: bool| {
            e.verify();
            // Exactly once: a second worker on the same event fails here.
            assert!(
                !done[seq as usize].swap(true, Ordering::AcqRel),
                "event {seq} handled twice"
            );
            shares[i].fetch_add(1, Ordering::Relaxed);
        }
    };
    let (d2, a2) = (Arc::clone(&done), Arc::clone(&after));
    let check = move |e: &Event, seq: Sequence, _eob: bool| {
        e.verify();
        assert!(
            d2[seq as usize].load(Ordering::Acquire),
            "stage after the pool saw event {seq} before a worker finished it"
        );
        *a2.lock().unwrap() += 1;
    };
    if multi {
        let p = ringbus::multi_producer(64, Event::default, Yielding::default())
            .thread_name("worker")
            .handle_events_with_pool(workers, make)
            .and_then()
            .handle_events_with(check)
            .build();
        let q = p.clone();
        let half = EVENTS / 2;
        let t = std::thread::spawn(move || {
            q.batch_publish(half as usize % 7 + 1, |s| s.for_each(|e| e.set(0)))
                .unwrap();
        });
        t.join().unwrap();
        let already = p.cursor() + 1;
        for _ in already as u64..EVENTS {
            p.publish(|e| e.set(0)).unwrap();
        }
        let report = p.shutdown().unwrap();
        assert_eq!(report.stages.len(), workers + 1);
    } else {
        let mut p = ringbus::single_producer(64, Event::default, Yielding::default())
            .thread_name("worker")
            .handle_events_with_pool(workers, make)
            .and_then()
            .handle_events_with(check)
            .build();
        for i in 0..EVENTS {
            p.publish(|e| e.set(i)).unwrap();
        }
        let report = p.shutdown().unwrap();
        let names: Vec<&str> = report.stages[..workers]
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            names,
            (0..workers)
                .map(|i| format!("worker-{i}"))
                .collect::<Vec<_>>()
        );
        let handled: u64 = report.stages[..workers].iter().map(|s| s.handled).sum();
        assert_eq!(handled, EVENTS, "the report's shares add up");
    }
    assert!(
        done.iter().all(|d| d.load(Ordering::Relaxed)),
        "an event was never handled"
    );
    assert_eq!(*after.lock().unwrap(), EVENTS);
    let shares: Vec<u64> = shares.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    assert_eq!(shares.iter().sum::<u64>(), EVENTS);
    shares
}

#[test]
fn pool_of_three_handles_every_event_exactly_once() {
    let shares = bounded(120, || run_pool(3, false));
    println!("worker shares: {shares:?}");
}

#[test]
fn pool_behind_a_multi_producer_with_batches() {
    bounded(120, || run_pool(2, true));
}

#[test]
fn pool_of_one_is_a_plain_stage() {
    let shares = bounded(120, || run_pool(1, false));
    assert_eq!(shares, [EVENTS]);
}

/// Issue #12, finding 1: a pool behind several producers publishing at once
/// on a tiny ring that laps constantly. Workers used to start their scans
/// behind their own gating sequence, follow a later lap's mark and read a
/// slot still being written (a torn event here; a data race under Miri), or
/// wedge the bus. Checks every event once, untorn, and each producer's order
/// as seen by the stage after the pool.
fn pool_behind_concurrent_producers(producers: u64, capacity: usize, batch: usize) {
    let per_producer: u64 = common::scaled(20_000, 40);
    let total = producers * per_producer;
    let done: Arc<Vec<AtomicBool>> = Arc::new((0..total).map(|_| AtomicBool::new(false)).collect());
    let d = Arc::clone(&done);
    let make = move |_i: usize| {
        let done = Arc::clone(&d);
        move |e: &Event, seq: Sequence, _eob: bool| {
            e.verify();
            assert!(
                !done[seq as usize].swap(true, Ordering::AcqRel),
                "event {seq} handled twice"
            );
        }
    };
    let (verifier, stats) = Verifier::new(false);
    let p = ringbus::multi_producer(capacity, Event::default, Yielding::default())
        .handle_events_with_pool(2, make)
        .and_then()
        .handle_events_with(verifier)
        .build();
    let metrics = p.metrics();
    let threads: Vec<_> = (0..producers)
        .map(|k| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while i < per_producer {
                    let n = (batch as u64).min(per_producer - i);
                    p.batch_publish(n as usize, |slots| {
                        for e in slots {
                            e.set(value(k, i));
                            i += 1;
                        }
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let report = p.shutdown().unwrap();
    assert!(
        done.iter().all(|d| d.load(Ordering::Relaxed)),
        "an event was lost"
    );
    assert_eq!(stats.lock().unwrap().count, total);
    // Finding 9: the snapshot agrees with the report, worker by worker, and
    // no worker's sequence runs past the cursor.
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.cursor, total as Sequence - 1);
    for (stage, metric) in report.stages.iter().zip(&snapshot.stages) {
        assert_eq!(stage.processed, metric.processed, "{}", stage.name);
        assert!(metric.sequence <= snapshot.cursor, "{metric:?}");
    }
    let shares: u64 = report.stages[..2].iter().map(|s| s.processed).sum();
    assert_eq!(shares, total, "the workers' shares add up");
}

#[test]
fn pool_behind_two_producers_publishing_singles_on_a_ring_of_4() {
    bounded(120, || pool_behind_concurrent_producers(2, 4, 1));
}

#[test]
fn pool_behind_four_producers_publishing_batches_on_a_ring_of_8() {
    bounded(120, || pool_behind_concurrent_producers(4, 8, 3));
}

/// Finding 9: a failure policy given before the pool applies to every
/// worker (a panic under `skip()` used to halt the bus).
#[test]
fn pool_workers_follow_their_failure_policy() {
    bounded(60, || {
        let p = ringbus::multi_producer(8, Event::default, Yielding::default())
            .on_failure(ringbus::FailurePolicy::skip())
            .handle_events_with_pool(2, |_i| {
                |e: &Event, _s: Sequence, _eob: bool| {
                    if e.value % 10 == 3 {
                        panic!("bad event {}", e.value);
                    }
                }
            })
            .build();
        for i in 0..100 {
            p.publish(|e| e.set(i)).unwrap();
        }
        let report = p.shutdown().expect("skipped failures do not halt");
        let skipped: u64 = report.stages.iter().map(|s| s.skipped).sum();
        let handled: u64 = report.stages.iter().map(|s| s.handled).sum();
        let processed: u64 = report.stages.iter().map(|s| s.processed).sum();
        assert_eq!((skipped, handled, processed), (10, 90, 100));
    });
}

/// `after` with a pool's id (`last_stage` after the pool) waits for every
/// worker, not only the last one added: the worker that takes event 0 is
/// slow, the other passes events 1.. meanwhile, and the stage after the
/// pool must still see event 0 only once it is done.
#[test]
fn after_a_pools_id_waits_for_every_worker() {
    let events: u64 = if cfg!(miri) { 8 } else { 64 };
    let done: Arc<Vec<AtomicBool>> =
        Arc::new((0..events).map(|_| AtomicBool::new(false)).collect());
    let d = Arc::clone(&done);
    let b = ringbus::single_producer(16, || 0u64, Yielding::default()).handle_events_with_pool(
        2,
        move |_i| {
            let done = Arc::clone(&d);
            move |_: &u64, seq: Sequence, _eob: bool| {
                if seq == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                done[seq as usize].store(true, Ordering::Release);
            }
        },
    );
    let pool = b.last_stage().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let (d, s) = (Arc::clone(&done), Arc::clone(&seen));
    let mut p = b
        .after(&[pool])
        .handle_events_with(move |_: &u64, seq: Sequence, _eob: bool| {
            assert!(
                d[seq as usize].load(Ordering::Acquire),
                "the stage after the pool saw event {seq} before its worker finished it"
            );
            s.fetch_add(1, Ordering::Relaxed);
        })
        .build();
    for i in 0..events {
        p.publish(|e| *e = i).unwrap();
    }
    let report = p.shutdown().expect("no stage failed");
    assert!(report.stages.iter().all(|s| s.failure.is_none()));
    assert_eq!(seen.load(Ordering::Relaxed), events);
}
