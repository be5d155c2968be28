//! Every form of stage `handle_events_with` and `try_handle_events_with`
//! take (read or mutate, per event or per batch, fallible or not, by value
//! or from a factory), on a multi-producer bus of a ring that laps: each
//! form sees every event once, in order, and a mutating form's writes
//! reach the stage after it.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringbus::{Batch, BatchMut, Blocking, BuildError, FailurePolicy, Sequence, Yielding};

const PRODUCERS: u64 = 3;
// A quarter under ThreadSanitizer (`ci/tsan.sh`), ~10x slower.
const PER_PRODUCER: u64 = if cfg!(miri) {
    40
} else if cfg!(ringbus_tsan) {
    1_000
} else {
    4_000
};
const TOTAL: u64 = PRODUCERS * PER_PRODUCER;

#[derive(Default, Clone, Copy)]
struct Ev {
    value: u64,
    doubled: u64,
}

/// What a failed call of a fallible mutating form leaves in `doubled`.
const FAILED_WRITE: u64 = u64::MAX;

/// The mutating stage's write: an XOR, so that writing an event twice
/// undoes the first write (the check then sees it); a failed call's write
/// is cleared first, as a retried handler must.
fn mark(e: &mut Ev) {
    if e.doubled == FAILED_WRITE {
        e.doubled = 0;
    }
    e.doubled ^= 2 * e.value + 1;
}

/// The mutating forms: each marks the event; the fallible ones first fail
/// once (after a wrong write) at every sequence that is 5 mod 31, and are
/// retried.
fn with_mutator(form: u8) -> ringbus::Builder<Ev, ringbus::MultiProducerSequencer, Yielding> {
    let b = ringbus::multi_producer(16, Ev::default, Yielding::default());
    let fails = |seq: Sequence, last: &mut Sequence| {
        let fail = seq % 31 == 5 && *last != seq;
        if fail {
            *last = seq;
        }
        fail
    };
    let made = form & 4 == 4;
    let b = if form & 1 == 1 {
        b.on_failure(FailurePolicy::halt().retry(1, Duration::ZERO))
    } else {
        b
    };
    match (form & 3, made) {
        (0, false) => b.handle_events_with(|e: &mut Ev, _: Sequence, _: bool| mark(e)),
        (0, true) => b.handle_events_with(ringbus::factory(|| {
            let local = Rc::new(()); // not `Send`: made on the stage thread
            move |e: &mut Ev, _: Sequence, _: bool| {
                let _ = &local;
                mark(e)
            }
        })),
        (2, false) => b.handle_events_with(|batch: BatchMut<'_, Ev>| batch.for_each(mark)),
        (2, true) => b.handle_events_with(ringbus::factory(|| {
            |batch: BatchMut<'_, Ev>| batch.for_each(mark)
        })),
        (1, made) => {
            let make = move || {
                let mut last = -1;
                move |e: &mut Ev, seq: Sequence, _: bool| {
                    if fails(seq, &mut last) {
                        e.doubled = FAILED_WRITE;
                        return Err("transient");
                    }
                    mark(e);
                    Ok(())
                }
            };
            if made {
                b.try_handle_events_with(ringbus::factory(make))
            } else {
                b.try_handle_events_with(make())
            }
        }
        (3, made) => {
            let make = move || {
                let mut last = -1;
                move |mut batch: BatchMut<'_, Ev>| loop {
                    let seq = batch.next_sequence();
                    let Some(e) = batch.next() else {
                        return Ok(());
                    };
                    if fails(seq, &mut last) {
                        e.doubled = FAILED_WRITE;
                        return Err((seq, "transient"));
                    }
                    mark(e);
                }
            };
            if made {
                b.try_handle_events_with(ringbus::factory(make))
            } else {
                b.try_handle_events_with(make())
            }
        }
        _ => unreachable!(),
    }
}

/// Checks order per producer and the mutator's write; counts events.
fn checker() -> (Arc<AtomicU64>, impl FnMut(&Ev, Sequence) + Send + 'static) {
    let seen = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&seen);
    let mut next = [0u64; PRODUCERS as usize];
    let check = move |e: &Ev, _seq: Sequence| {
        let p = (e.value / PER_PRODUCER) as usize;
        assert_eq!(e.value % PER_PRODUCER, next[p], "producer {p}: order");
        next[p] += 1;
        assert_eq!(
            e.doubled,
            2 * e.value + 1,
            "the mutating stage wrote it once"
        );
        count.fetch_add(1, Ordering::Relaxed);
    };
    (seen, check)
}

#[test]
fn every_form_sees_every_event_once_in_order_after_every_mutating_form() {
    for mutator in 0..8u8 {
        // Under Miri two readers per mutator (every form of each still
        // runs; the whole grid took 76 s there).
        let readers = if cfg!(miri) { 2 } else { 8 };
        for reader in (0..readers).map(|k| (mutator + k) % 8) {
            let (seen, mut check) = checker();
            let b = with_mutator(mutator).and_then();
            let fallible = reader & 1 == 1;
            let b = match (reader & 6, fallible) {
                (0, false) => b.handle_events_with(move |e: &Ev, s: Sequence, _: bool| check(e, s)),
                (0, true) => b.try_handle_events_with(move |e: &Ev, s: Sequence, _: bool| {
                    check(e, s);
                    Ok::<_, String>(())
                }),
                (2, false) => b.handle_events_with(move |batch: Batch<'_, Ev>| {
                    batch.iter_with_sequence().for_each(|(s, e)| check(e, s))
                }),
                (2, true) => b.try_handle_events_with(move |batch: Batch<'_, Ev>| {
                    batch.iter_with_sequence().for_each(|(s, e)| check(e, s));
                    Ok::<_, (Sequence, String)>(())
                }),
                (4, false) => b.handle_events_with(ringbus::factory(move || {
                    move |e: &Ev, s: Sequence, _: bool| check(e, s)
                })),
                (4, true) => b.try_handle_events_with(ringbus::factory(move || {
                    move |e: &Ev, s: Sequence, _: bool| {
                        check(e, s);
                        Ok::<_, &str>(())
                    }
                })),
                (6, false) => b.handle_events_with(ringbus::factory(move || {
                    move |batch: Batch<'_, Ev>| {
                        batch.iter_with_sequence().for_each(|(s, e)| check(e, s))
                    }
                })),
                (6, true) => b.try_handle_events_with(ringbus::factory(move || {
                    move |batch: Batch<'_, Ev>| {
                        batch.iter_with_sequence().for_each(|(s, e)| check(e, s));
                        Ok::<_, (Sequence, &str)>(())
                    }
                })),
                _ => unreachable!(),
            };
            let producer = b.build();
            let threads: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let producer = producer.clone();
                    std::thread::spawn(move || {
                        let mut i = 0;
                        while i < PER_PRODUCER {
                            let first = p * PER_PRODUCER + i;
                            if i % 3 == 0 || i + 1 == PER_PRODUCER {
                                producer
                                    .publish(|e| {
                                        *e = Ev {
                                            value: first,
                                            doubled: 0,
                                        }
                                    })
                                    .unwrap();
                                i += 1;
                            } else {
                                // Batches of two, some straddling the ring's end.
                                producer
                                    .batch_publish(2, |slots| {
                                        for (k, e) in slots.enumerate() {
                                            *e = Ev {
                                                value: first + k as u64,
                                                doubled: 0,
                                            };
                                        }
                                    })
                                    .unwrap();
                                i += 2;
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let report = producer.shutdown().unwrap();
            assert_eq!(
                seen.load(Ordering::Relaxed),
                TOTAL,
                "mutator form {mutator}, reader form {reader}"
            );
            let failed_once = (0..TOTAL as Sequence).filter(|s| s % 31 == 5).count() as u64;
            let expected = if mutator & 1 == 1 { failed_once } else { 0 };
            assert_eq!(report.stages[0].retried, expected, "mutator form {mutator}");
            assert!(report.stages.iter().all(|s| s.failure.is_none()));
        }
    }
}

#[test]
fn mutating_batches_beside_another_stage_are_refused() {
    let err = ringbus::single_producer(8, || 0u64, Blocking)
        .handle_events_with(|batch: BatchMut<'_, u64>| batch.for_each(|e| *e += 1))
        .handle_events_with(|_: &u64, _: Sequence, _: bool| {})
        .try_build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::ConcurrentMutation { .. }),
        "{err}"
    );
    let err = ringbus::single_producer(8, || 0u64, Blocking)
        .handle_events_with(|_: &u64, _: Sequence, _: bool| {})
        .try_handle_events_with(ringbus::factory(|| {
            |_: BatchMut<'_, u64>| Ok::<_, (Sequence, &str)>(())
        }))
        .try_build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::ConcurrentMutation { .. }),
        "{err}"
    );
}

#[test]
fn a_mutating_batch_that_fails_under_skip_moves_past_that_event_only() {
    let seen = Arc::new(AtomicU64::new(0));
    let sum = Arc::clone(&seen);
    let mut producer = ringbus::single_producer(8, || 0u64, Blocking)
        .on_failure(FailurePolicy::skip())
        .try_handle_events_with(|mut batch: BatchMut<'_, u64>| loop {
            let seq = batch.next_sequence();
            let Some(e) = batch.next() else {
                return Ok(());
            };
            if *e == 7 {
                return Err((seq, "seven"));
            }
            *e *= 10;
        })
        .and_then()
        .handle_events_with(move |e: &u64, _: Sequence, _: bool| {
            sum.fetch_add(*e, Ordering::Relaxed);
        })
        .build();
    for i in 0..20u64 {
        producer.publish(|e| *e = i).unwrap();
    }
    let report = producer.shutdown().unwrap();
    assert_eq!(report.stages[0].failed, 1);
    // Every event times ten, but 7 (skipped, unwritten).
    assert_eq!(
        seen.load(Ordering::Relaxed),
        (0..20u64).sum::<u64>() * 10 - 70 + 7
    );
}

#[test]
#[allow(deprecated)]
fn the_old_names_still_add_their_stages() {
    let seen = Arc::new(AtomicU64::new(0));
    let (a, b, c, d, e) = (
        Arc::clone(&seen),
        Arc::clone(&seen),
        Arc::clone(&seen),
        Arc::clone(&seen),
        Arc::clone(&seen),
    );
    let mut producer = ringbus::single_producer(8, || 0u64, Blocking)
        .mutate_events_with(|e: &mut u64, _: Sequence, _: bool| *e += 1)
        .and_then()
        .mutate_events_with_factory(|| |e: &mut u64, _: Sequence, _: bool| *e += 1)
        .and_then()
        .handle_batches_with(move |batch: Batch<'_, u64>| {
            a.fetch_add(batch.len() as u64, Ordering::Relaxed);
        })
        .try_handle_batches_with(move |batch: Batch<'_, u64>| {
            b.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok::<_, (Sequence, &str)>(())
        })
        .handle_events_with_factory(move || {
            move |v: &u64, _: Sequence, _: bool| {
                assert_eq!(*v % 100, 2);
                c.fetch_add(1, Ordering::Relaxed);
            }
        })
        .try_handle_events_with_factory(move || {
            move |_: &u64, _: Sequence, _: bool| {
                d.fetch_add(1, Ordering::Relaxed);
                Ok::<_, &str>(())
            }
        })
        .try_handle_events_with(move |_: &u64, _: Sequence, _: bool| {
            e.fetch_add(1, Ordering::Relaxed);
            Ok::<_, &str>(())
        })
        .build();
    for i in 0..10u64 {
        producer
            .batch_publish(1, |slots: ringbus::Slots<'_, u64>| {
                slots.for_each(|e| *e = 100 * i)
            })
            .unwrap();
    }
    producer.shutdown().unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), 50);
}

#[test]
#[allow(deprecated)]
fn the_old_names_of_the_naming_pass_still_work() {
    use ringbus::{Fallback, LagLimit, PhasedBackoff};
    let strategy = PhasedBackoff::with_lock(Duration::from_micros(1), Duration::from_micros(1));
    assert_eq!(strategy.fallback, Fallback::Block);
    assert!(matches!(strategy.fallback, Fallback::Block));
    let mut producer = ringbus::single_producer(8, || 0u64, strategy).build();
    let mut poller = producer
        .subscribe_with_lag_limit(LagLimit::never_hold())
        .unwrap();
    producer
        .try_publish_for(Duration::from_millis(10), |e| *e = 5)
        .unwrap();
    let mut got = 0;
    poller
        .poll(8, |e: &u64, _: Sequence, _: bool| got = *e)
        .unwrap();
    assert_eq!(got, 5);
}

/// A mutating batch stage that panics mid-batch, under each policy, the 8
/// events published with one `batch_publish` (so the stage finds them all
/// at once, whatever the schedule: Miri's ran a gate stage's first event
/// alone through): under skip,
/// dead-letter and retry the events before the panic are written once (not
/// handed over again), the one that panicked is routed by the policy, the
/// rest are written once; under a plain halt none of the batch reaches the
/// stage after it.
#[test]
fn a_mutating_batch_that_panics_writes_no_event_twice() {
    use std::sync::Mutex;
    for policy in ["skip", "dead-letter", "retry", "halt"] {
        for fallible in [false, true] {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&seen);
            let mut panicked = false;
            let mut add = move |mut batch: BatchMut<'_, u64>| {
                for e in &mut batch {
                    if *e == 5 && !std::mem::replace(&mut panicked, true) {
                        panic!("at five");
                    }
                    *e += 100;
                }
            };
            let b = ringbus::single_producer(16, || 0u64, Blocking).on_failure(match policy {
                "skip" => FailurePolicy::skip(),
                "dead-letter" => FailurePolicy::dead_letter(|_, _, _, _| {}),
                "retry" => FailurePolicy::halt().retry(1, Duration::ZERO),
                _ => FailurePolicy::halt(),
            });
            let b = if fallible {
                b.try_handle_events_with(move |batch: BatchMut<'_, u64>| {
                    add(batch);
                    Ok::<_, (Sequence, &str)>(())
                })
            } else {
                b.handle_events_with(add)
            };
            let mut producer = b
                .and_then()
                .handle_events_with(move |e: &u64, _: Sequence, _: bool| {
                    sink.lock().unwrap().push(*e)
                })
                .build();
            producer
                .batch_publish(8, |slots| {
                    for (i, e) in slots.enumerate() {
                        *e = i as u64;
                    }
                })
                .unwrap();
            let _ = producer.shutdown();
            let seen = seen.lock().unwrap().clone();
            let expected: Vec<u64> = match policy {
                // The panicking event is left as it was.
                "skip" | "dead-letter" => vec![100, 101, 102, 103, 104, 5, 106, 107],
                // Offered again, it is written once.
                "retry" => (100..108).collect(),
                // Under a plain halt a batch that panics releases none of
                // its events (the stage stops).
                _ => vec![],
            };
            assert_eq!(seen, expected, "policy {policy}, fallible {fallible}");
        }
    }
}
