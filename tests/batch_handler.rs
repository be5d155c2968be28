//! Batch handlers: every event exactly once, in order, as slices that wrap
//! at the end of the ring; behind producers at once, after a mutating stage,
//! under a retrying policy (batches of one) and when a batch panics.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{bounded, mix, Event, N};
use ringbus::{Batch, Blocking, FailurePolicy, PublishError, Sequence, ShutdownError, Yielding};

/// What a batch stage saw: every sequence in order, and the batch shapes.
#[derive(Default)]
struct Seen {
    next: Sequence,
    batches: u64,
    wrapped: u64,
    largest: usize,
    sum: u64,
}

fn recorder(seen: Arc<Mutex<Seen>>) -> impl FnMut(Batch<'_, Event>) + Send {
    move |batch: Batch<'_, Event>| {
        let mut s = seen.lock().unwrap();
        assert_eq!(
            batch.first_sequence(),
            s.next,
            "batches are contiguous and in order"
        );
        assert!(!batch.is_empty());
        let (head, tail) = batch.as_slices();
        assert_eq!(head.len() + tail.len(), batch.len());
        for (seq, e) in batch.iter_with_sequence() {
            e.verify();
            s.sum = s.sum.wrapping_add(e.value);
            // `enriched` carries the sequence where a test wrote it there.
            assert!(
                e.enriched == 0 || e.enriched == seq as u64 + 1,
                "event {seq} in its place"
            );
        }
        s.next = batch.last_sequence() + 1;
        s.batches += 1;
        s.wrapped += u64::from(!tail.is_empty());
        s.largest = s.largest.max(batch.len());
    }
}

#[test]
fn a_batch_wrapping_the_ring_comes_as_two_slices_in_order() {
    bounded(30, || {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut producer = ringbus::single_producer(8, Event::default, Blocking)
            .handle_events_with(recorder(Arc::clone(&seen)))
            .build();
        let write = |slots: ringbus::BatchMut<'_, Event>, value: u64| {
            let mut slots = slots;
            loop {
                let seq = slots.next_sequence();
                let Some(e) = slots.next() else { break };
                e.set(value);
                e.enriched = seq as u64 + 1;
            }
        };
        producer.batch_publish(6, |slots| write(slots, 1)).unwrap();
        while seen.lock().unwrap().next < 6 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Sequences 6..=11 are slots 6, 7, 0, 1, 2, 3, published with one
        // store: one batch, two slices.
        producer.batch_publish(6, |slots| write(slots, 2)).unwrap();
        producer.shutdown().unwrap();
        let s = seen.lock().unwrap();
        assert_eq!(s.next, 12);
        assert_eq!(s.sum, 6 + 12);
        assert!(s.wrapped >= 1, "the second batch wraps");
    });
}

#[test]
fn three_producers_every_event_once_in_order_on_a_ring_that_laps() {
    let per = N / 4;
    bounded(60, move || {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let order = Arc::new(Mutex::new([0u64; 3]));
        let o = Arc::clone(&order);
        let producer = ringbus::multi_producer(16, Event::default, Yielding::default())
            .handle_events_with(recorder(Arc::clone(&seen)))
            .handle_events_with(move |batch: Batch<'_, Event>| {
                let mut next = o.lock().unwrap();
                for e in batch.iter() {
                    let p = (e.value >> common::PRODUCER_SHIFT) as usize;
                    let i = e.value & ((1 << common::PRODUCER_SHIFT) - 1);
                    assert_eq!(i, next[p], "producer {p}'s order");
                    next[p] += 1;
                }
            })
            .build();
        let threads: Vec<_> = (0..3u64)
            .map(|p| {
                let producer = producer.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        producer.publish(|e| e.set(common::value(p, i))).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        producer.shutdown().unwrap();
        let s = seen.lock().unwrap();
        assert_eq!(s.next as u64, 3 * per, "none lost or doubled");
        assert!(s.largest <= 16);
        let expected = (0..3)
            .map(|p| common::producer_sum(p, per))
            .fold(0u64, u64::wrapping_add);
        assert_eq!(s.sum, expected);
        assert_eq!(*order.lock().unwrap(), [per; 3]);
    });
}

#[test]
fn a_batch_stage_sees_a_mutating_stage_writes_and_gates_the_stage_after_it() {
    bounded(30, || {
        let n = if cfg!(miri) { 200 } else { 20_000 };
        let after = Arc::new(AtomicU64::new(0));
        let a = Arc::clone(&after);
        let batch_done = Arc::new(AtomicU64::new(0));
        let (b1, b2) = (Arc::clone(&batch_done), Arc::clone(&batch_done));
        let mut producer = ringbus::single_producer(32, Event::default, Blocking)
            .handle_events_with(|e: &mut Event, _: Sequence, _: bool| e.enriched = mix(e.value))
            .and_then()
            .handle_events_with(move |batch: Batch<'_, Event>| {
                for e in batch.iter() {
                    assert_eq!(e.enriched, mix(e.value), "the mutating stage's write");
                }
                b1.store(batch.last_sequence() as u64 + 1, Ordering::Release);
            })
            .and_then()
            .handle_events_with(move |_: &Event, seq: Sequence, _: bool| {
                assert!(
                    b2.load(Ordering::Acquire) > seq as u64,
                    "seen before the batch stage"
                );
                a.fetch_add(1, Ordering::Relaxed);
            })
            .build();
        for i in 0..n {
            producer.publish(|e| e.set(i)).unwrap();
        }
        producer.shutdown().unwrap();
        assert_eq!(after.load(Ordering::Relaxed), n);
    });
}

#[test]
fn under_a_retrying_policy_a_batch_stage_gets_batches_of_one() {
    bounded(30, || {
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let a = Arc::clone(&attempts);
        let mut failed_once = false;
        let mut producer = ringbus::single_producer(16, Event::default, Blocking)
            .on_failure(FailurePolicy::skip().retry(2, Duration::ZERO))
            .handle_events_with(move |batch: Batch<'_, Event>| {
                assert_eq!(batch.len(), 1, "per event under a retrying policy");
                a.lock().unwrap().push(batch.first_sequence());
                if batch.first_sequence() == 5 && !failed_once {
                    failed_once = true;
                    panic!("once");
                }
            })
            .build();
        producer
            .batch_publish(10, |slots| slots.for_each(|e| e.set(1)))
            .unwrap();
        let report = producer.shutdown().unwrap();
        assert_eq!(
            *attempts.lock().unwrap(),
            [0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9],
            "event 5 offered again"
        );
        assert_eq!(report.stages[0].retried, 1);
    });
}

#[test]
fn a_panicking_batch_halts_the_bus_without_a_hang() {
    bounded(30, || {
        let failed_at = Arc::new(AtomicU64::new(u64::MAX));
        let f = Arc::clone(&failed_at);
        let mut producer = ringbus::single_producer(16, Event::default, Blocking)
            .handle_events_with(move |batch: Batch<'_, Event>| {
                if batch.last_sequence() >= 20 {
                    f.store(batch.first_sequence() as u64, Ordering::Relaxed);
                    panic!("bad batch");
                }
            })
            .build();
        let mut halted = false;
        for i in 0..10_000 {
            if let Err(PublishError::Halted) = producer.publish(|e| e.set(i)) {
                halted = true;
                break;
            }
        }
        match producer.shutdown() {
            Err(ShutdownError::StageFailed(report)) => {
                let failure = report.stages[0].failure.as_ref().unwrap();
                assert!(failure.is_panic() && failure.to_string().contains("bad batch"));
                assert_eq!(
                    report.stages[0].processed,
                    failed_at.load(Ordering::Relaxed),
                    "none of the failing batch is released"
                );
            }
            other => panic!("expected the stage to fail, got {other:?}"),
        }
        assert!(halted, "producers are refused once the stage failed");
    });
}

/// A fallible batch stage on a ring of 8 that laps: `fail(seq, attempt)`
/// decides whether the call that reaches `seq` fails there. Returns every
/// sequence the handler got past (in order), the first sequence of every
/// call, the shutdown report, and what a stage after it saw.
type TryBatchRun = (
    Vec<Sequence>,
    Vec<Sequence>,
    Result<ringbus::ShutdownReport, ShutdownError>,
    Vec<Sequence>,
);

fn try_batches(
    policy: FailurePolicy<u64>,
    events: u64,
    fail: impl Fn(Sequence, u32) -> bool + Send + 'static,
) -> TryBatchRun {
    let passed = Arc::new(Mutex::new(Vec::new()));
    let starts = Arc::new(Mutex::new(Vec::new()));
    let after = Arc::new(Mutex::new(Vec::new()));
    let (p, s, a) = (passed.clone(), starts.clone(), after.clone());
    let mut attempts = std::collections::HashMap::<Sequence, u32>::new();
    let mut producer = ringbus::single_producer(8, || 0u64, Blocking)
        .on_failure(policy)
        .try_handle_events_with(move |batch: Batch<'_, u64>| {
            s.lock().unwrap().push(batch.first_sequence());
            for (seq, e) in batch.iter_with_sequence() {
                assert_eq!(*e, seq as u64, "the event of its sequence");
                let attempt = attempts.entry(seq).or_insert(0);
                *attempt += 1;
                if fail(seq, *attempt) {
                    return Err((seq, format!("event {seq} refused")));
                }
                p.lock().unwrap().push(seq);
            }
            Ok(())
        })
        .and_then()
        .handle_events_with(move |_: &u64, seq: Sequence, _: bool| a.lock().unwrap().push(seq))
        .build();
    for i in 0..events {
        if producer.publish(|e| *e = i).is_err() {
            break;
        }
    }
    let report = bounded(30, move || producer.shutdown());
    let take = |v: Arc<Mutex<Vec<Sequence>>>| std::mem::take(&mut *v.lock().unwrap());
    (take(passed), take(starts), report, take(after))
}

#[test]
fn try_batches_retry_the_failed_event_from_where_it_failed() {
    let n = if cfg!(miri) { 64 } else { 2_000 };
    // Every 97th event fails twice before it goes through.
    let policy = FailurePolicy::halt().retry(2, Duration::from_micros(10));
    let (passed, starts, report, after) =
        try_batches(policy, n, |seq, attempt| seq % 97 == 5 && attempt <= 2);
    let report = report.unwrap();
    assert_eq!(
        passed,
        (0..n as Sequence).collect::<Vec<_>>(),
        "each once, in order"
    );
    assert_eq!(after, passed, "the next stage saw all of them");
    let failing = (0..n as Sequence).filter(|s| s % 97 == 5).count();
    for seq in (0..n as Sequence).filter(|s| s % 97 == 5) {
        // The two retries start at the failed event.
        assert!(
            starts.iter().filter(|&&s| s == seq).count() >= 2,
            "retried from {seq}"
        );
    }
    let stage = &report.stages[0];
    assert_eq!(
        (stage.handled, stage.retried, stage.failed),
        (n, 2 * failing as u64, 0)
    );
}

#[test]
fn try_batches_dead_letter_or_skip_only_the_failed_event() {
    let n = if cfg!(miri) { 64 } else { 1_000 };
    let letters = Arc::new(Mutex::new(Vec::new()));
    let l = letters.clone();
    let policy = FailurePolicy::dead_letter(move |stage: &str, e: &u64, seq, f| {
        assert_eq!(stage, "ringbus-stage-0");
        l.lock().unwrap().push((*e, seq, f.to_string()));
    })
    .retry(1, Duration::ZERO);
    let (passed, _, report, after) = try_batches(policy, n, |seq, _| seq % 10 == 3);
    let expected: Vec<Sequence> = (0..n as Sequence).filter(|s| s % 10 != 3).collect();
    assert_eq!(passed, expected);
    assert_eq!(
        after,
        (0..n as Sequence).collect::<Vec<_>>(),
        "the stage moved past them"
    );
    let letters = letters.lock().unwrap();
    let failing = (0..n).filter(|s| s % 10 == 3).count() as u64;
    assert_eq!(letters.len() as u64, failing);
    assert_eq!(
        letters[0],
        (3, 3, "handler error: event 3 refused".to_string())
    );
    let stage = &report.unwrap().stages[0];
    assert_eq!((stage.dead_lettered, stage.retried), (failing, failing));

    let (passed, _, report, _) = try_batches(FailurePolicy::skip(), n, |seq, _| seq == 4);
    assert_eq!(passed.len() as u64, n - 1);
    assert_eq!(report.unwrap().stages[0].skipped, 1);
}

#[test]
fn try_batches_halt_at_the_failed_event_and_release_nothing_past_it() {
    let (passed, _, report, after) = try_batches(FailurePolicy::halt(), 1_000, |seq, _| seq == 21);
    assert_eq!(passed, (0..21).collect::<Vec<_>>());
    assert_eq!(
        after, passed,
        "the stage after saw exactly what was handled"
    );
    match report {
        Err(ShutdownError::StageFailed(report)) => {
            let stage = &report.stages[0];
            assert_eq!(
                stage.processed, 21,
                "its sequence stopped before the failed event"
            );
            assert_eq!(
                stage.failure.as_ref().unwrap().to_string(),
                "handler error: event 21 refused"
            );
        }
        other => panic!("expected the halt's report, got {other:?}"),
    }
}

#[test]
fn try_batches_route_a_panic_through_the_policy() {
    let n = if cfg!(miri) { 64 } else { 512 };
    let panicked = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(AtomicU64::new(0));
    let (pk, sn) = (panicked.clone(), seen.clone());
    let mut producer = ringbus::single_producer(8, || 0u64, Blocking)
        .on_failure(FailurePolicy::halt().retry(1, Duration::ZERO))
        .try_handle_events_with(move |batch: Batch<'_, u64>| {
            if batch.iter().any(|e| *e == 40) && pk.fetch_add(1, Ordering::Relaxed) == 0 {
                panic!("first look at 40");
            }
            sn.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok::<(), (Sequence, String)>(())
        })
        .build();
    // Whole rings at once, so the stage sees 40 inside a batch of 8 or more
    // (a batch of 40 alone would be a plain failure and a retry).
    for chunk in 0..n / 8 {
        producer
            .batch_publish(8, |slots| {
                for (i, e) in slots.enumerate() {
                    *e = chunk * 8 + i as u64;
                }
            })
            .unwrap();
    }
    let report = bounded(30, move || producer.shutdown()).unwrap();
    assert_eq!(
        seen.load(Ordering::Relaxed),
        n,
        "the batch was handed over again"
    );
    // Located one event at a time, 40 went through on its own call.
    assert_eq!((report.stages[0].panics, report.stages[0].retried), (1, 0));
}

#[test]
fn try_batches_find_the_event_that_panics() {
    let n = if cfg!(miri) { 64 } else { 500 };
    let letters = Arc::new(Mutex::new(Vec::new()));
    let l = letters.clone();
    let policy = FailurePolicy::dead_letter(move |_: &str, e: &u64, seq, f| {
        l.lock().unwrap().push((*e, seq, f.is_panic()));
    })
    .retry(1, Duration::ZERO);
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h = handled.clone();
    let mut producer = ringbus::single_producer(64, || 0u64, Blocking)
        .on_failure(policy)
        .try_handle_events_with(move |batch: Batch<'_, u64>| {
            // Handles in bulk: nothing is kept if the batch panics.
            let mut mine = Vec::new();
            for (seq, e) in batch.iter_with_sequence() {
                assert!(*e != 40, "event 40 always panics");
                mine.push(seq);
            }
            h.lock().unwrap().extend(mine);
            Ok::<(), (Sequence, String)>(())
        })
        .build();
    // Published as one burst, so 40 is inside a larger batch.
    producer
        .batch_publish(64, |slots| {
            for (i, e) in slots.into_iter().enumerate() {
                *e = i as u64;
            }
        })
        .unwrap();
    for i in 64..n {
        producer.publish(|e| *e = i).unwrap();
    }
    let report = bounded(30, move || producer.shutdown()).unwrap();
    let letters = letters.lock().unwrap();
    assert_eq!(
        *letters,
        vec![(40, 40, true)],
        "the event that panics, not its batch's first"
    );
    let expected: Vec<Sequence> = (0..n as Sequence).filter(|&s| s != 40).collect();
    assert_eq!(
        *handled.lock().unwrap(),
        expected,
        "the others once each, in order"
    );
    assert_eq!(report.stages[0].dead_lettered, 1);
}
