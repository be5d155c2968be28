//! Work pools: each event handled by exactly one worker; stages after the
//! pool see an event only once the worker that took it has finished.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use ringbus::{Sequence, Yielding};

const EVENTS: u64 = if cfg!(miri) { 300 } else { 100_000 };

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
