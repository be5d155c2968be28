//! Subscribers with a lag limit: evicted when they hold the producers too
//! long, never reading an event being overwritten, and nothing lost for
//! everyone else.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bounded, Event};
use ringbus::{Blocking, LagLimit, PollError, Sequence, TryPublishError, Yielding};

const N: u64 = if cfg!(miri) { 100 } else { 10_000 };

#[test]
fn a_subscriber_that_never_holds_is_evicted_instead_of_stalling_the_producers() {
    bounded(30, || {
        let seen = Arc::new(AtomicU64::new(0));
        let s = Arc::clone(&seen);
        let mut producer = ringbus::single_producer(8, Event::default, Blocking)
            .handle_events_with(move |e: &Event, _: Sequence, _: bool| {
                e.verify();
                s.fetch_add(1, Ordering::Relaxed);
            })
            .build();
        let metrics = producer.metrics();
        let mut idle = producer
            .subscribe_lag_limited(LagLimit::never_hold())
            .unwrap();
        assert_eq!(metrics.snapshot().subscribers.len(), 1);
        for i in 0..N {
            producer.publish(|e| e.set(i)).unwrap();
        }
        assert!(
            metrics.snapshot().subscribers.is_empty(),
            "evicted: gates no more"
        );
        match idle.poll(8, |_: &Event, _: Sequence, _: bool| {
            panic!("read after eviction")
        }) {
            Err(PollError::Lagged { behind }) => assert!(behind >= 8, "{behind}"),
            other => panic!("expected Lagged, got {other:?}"),
        }
        let message = PollError::Lagged { behind: 9 }.to_string();
        assert!(message.contains("9 events behind") && message.contains("subscribe again"));
        producer.shutdown().unwrap();
        assert_eq!(seen.load(Ordering::Relaxed), N, "the stage lost nothing");
    });
}

#[test]
fn a_subscriber_holds_the_producer_for_its_limit_then_is_evicted() {
    bounded(30, || {
        let mut producer = ringbus::single_producer(4, Event::default, Blocking).build();
        let mut slow = producer
            .subscribe_lag_limited(LagLimit::hold_at_most(Duration::from_millis(40)))
            .unwrap();
        for i in 0..4 {
            producer.publish(|e| e.set(i)).unwrap();
        }
        let waited = Instant::now();
        producer.publish(|e| e.set(4)).unwrap();
        assert!(
            waited.elapsed() >= Duration::from_millis(40),
            "it held the producer first"
        );
        assert!(matches!(
            slow.poll(8, |_: &Event, _: Sequence, _: bool| {}),
            Err(PollError::Lagged { behind: 5 })
        ));
        // try_publish does not wait: with the laggard gone there is room.
        for i in 5..9 {
            producer.try_publish(|e| e.set(i)).unwrap();
        }
    });
}

#[test]
fn a_subscriber_that_keeps_up_is_never_evicted_and_misses_nothing() {
    bounded(60, || {
        let producer = ringbus::multi_producer(8, Event::default, Yielding::default()).build();
        let mut poller = producer
            .subscribe_lag_limited(LagLimit::hold_at_most(Duration::from_secs(30)))
            .unwrap();
        let reader = std::thread::spawn(move || {
            let mut next = [0u64; 2];
            loop {
                let polled = poller.poll_wait(16, |e: &Event, _: Sequence, _: bool| {
                    e.verify();
                    let p = (e.value >> common::PRODUCER_SHIFT) as usize;
                    assert_eq!(e.value & ((1 << common::PRODUCER_SHIFT) - 1), next[p]);
                    next[p] += 1;
                });
                match polled {
                    Ok(_) => {}
                    Err(PollError::Closed) => return next,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let writers: Vec<_> = (0..2u64)
            .map(|p| {
                let producer = producer.clone();
                std::thread::spawn(move || {
                    for i in 0..N {
                        producer.publish(|e| e.set(common::value(p, i))).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        producer.shutdown().unwrap();
        assert_eq!(reader.join().unwrap(), [N, N]);
    });
}

#[test]
fn a_subscriber_reading_slowly_is_never_read_over_and_is_evicted_only_between_reads() {
    // A never-hold subscriber on a ring of 4 whose handler is slow: the
    // producers would evict it at once, but not while it reads; every event
    // it does read is intact and in order, then it learns it was evicted.
    if cfg!(miri) {
        // Under Miri's virtual clock the reader's sleeps and the producers'
        // time-sliced waits take minutes; the reads and the eviction run
        // under Miri in the other tests of this file.
        return;
    }
    bounded(60, || {
        let producer = ringbus::multi_producer(4, Event::default, Blocking).build();
        let mut slow = producer
            .subscribe_lag_limited(LagLimit::never_hold())
            .unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = [None::<u64>; 2];
            let mut read = 0;
            loop {
                let polled = slow.poll_wait(4, |e: &Event, _: Sequence, _: bool| {
                    e.verify();
                    std::thread::sleep(Duration::from_micros(200));
                    e.verify();
                    let p = (e.value >> common::PRODUCER_SHIFT) as usize;
                    if let Some(last) = last[p] {
                        assert!(e.value > last, "each producer's events in order");
                    }
                    last[p] = Some(e.value);
                    read += 1;
                });
                match polled {
                    Ok(_) => {}
                    Err(PollError::Lagged { .. }) => return read,
                    Err(PollError::Closed) => return read,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let writers: Vec<_> = (0..2u64)
            .map(|p| {
                let producer = producer.clone();
                std::thread::spawn(move || {
                    for i in 0..N / 10 {
                        producer.publish(|e| e.set(common::value(p, i))).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let read = reader.join().unwrap();
        assert!(
            read < 2 * N / 10,
            "it was evicted before the end ({read} read)"
        );
        producer.shutdown().unwrap();
    });
}

#[test]
fn try_publish_on_a_multi_producer_evicts_rather_than_reports_full() {
    let producer = ringbus::multi_producer(4, Event::default, Blocking).build();
    let mut idle = producer
        .subscribe_lag_limited(LagLimit::never_hold())
        .unwrap();
    for i in 0..4 {
        producer.try_publish(|e| e.set(i)).unwrap();
    }
    assert_eq!(producer.try_publish(|e| e.set(4)).map(|_| ()), Ok(()));
    assert!(matches!(
        idle.poll(4, |_: &Event, _: Sequence, _: bool| {}),
        Err(PollError::Lagged { .. })
    ));
    // Without a lag limit the same ring is full.
    let _held = producer.subscribe().unwrap(); // joins after event 4
    for i in 5..9 {
        producer.try_publish(|e| e.set(i)).unwrap();
    }
    assert!(matches!(
        producer.try_publish(|e| e.set(9)),
        Err(TryPublishError::Full { .. })
    ));
}

/// A lag-limited poller parked behind a claim still being written (its
/// scan stops at that hole) is evicted by a `try_publish`, or by a
/// `publish_timeout` waiting for room, that then finds the ring still full
/// and publishes nothing: the eviction itself wakes the poller, which
/// returns `Lagged` while the writer is still writing.
#[test]
fn a_parked_poller_evicted_by_a_producer_that_publishes_nothing_learns_it_at_once() {
    // 0: `try_publish`; 1: `publish_timeout`; 2: `publish`, whose wait for
    // room outlasts the poller's (it ends once the writer publishes, after
    // the poller saw its eviction).
    for how in 0..3 {
        let timed = how > 0;
        bounded(30, move || {
            let producer = ringbus::multi_producer(4, Event::default, Blocking).build();
            // Timed: evicted inside the wait (held 20 ms of its 300).
            let limit = if timed {
                LagLimit::hold_at_most(Duration::from_millis(20))
            } else {
                LagLimit::never_hold()
            };
            let mut idle = producer.subscribe_lag_limited(limit).unwrap();
            let (in_write, wrote) = std::sync::mpsc::channel();
            let (release, released) = std::sync::mpsc::channel::<()>();
            let writer = producer.clone();
            let writing = std::thread::spawn(move || {
                writer.publish(|e| {
                    e.set(0);
                    in_write.send(()).unwrap();
                    let _ = released.recv();
                })
            });
            wrote.recv().unwrap(); // sequence 0 claimed, not published
            for i in 1..4 {
                producer.try_publish(|e| e.set(i)).unwrap();
            }
            let polling = std::thread::spawn(move || {
                let start = Instant::now();
                let r = idle.poll_wait(4, |_: &Event, _: Sequence, _: bool| {});
                (r.map(|_| ()), start.elapsed())
            });
            std::thread::sleep(Duration::from_millis(50)); // the poller parks
            if how == 2 {
                let blocked = producer.clone();
                let publishing = std::thread::spawn(move || blocked.publish(|e| e.set(4)));
                let (r, took) = polling.join().unwrap();
                assert!(
                    matches!(r, Err(PollError::Lagged { .. })),
                    "publish: {r:?} after {took:?}"
                );
                release.send(()).unwrap();
                writing.join().unwrap().unwrap();
                publishing.join().unwrap().unwrap();
                return;
            }
            let r = if timed {
                producer.publish_timeout(Duration::from_millis(300), |e| e.set(4))
            } else {
                producer.try_publish(|e| e.set(4))
            };
            assert!(
                matches!(
                    r,
                    Err(TryPublishError::Full { .. } | TryPublishError::Timeout)
                ),
                "{r:?}"
            );
            let (r, took) = polling.join().unwrap();
            assert!(
                matches!(r, Err(PollError::Lagged { .. })),
                "case {how}: {r:?} after {took:?}"
            );
            release.send(()).unwrap();
            writing.join().unwrap().unwrap();
        });
    }
}

#[test]
fn a_subscription_and_a_plain_poller_beside_an_evicted_one_see_everything() {
    bounded(30, || {
        let mut producer = ringbus::single_producer(8, Event::default, Blocking).build();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = Arc::clone(&got);
        let subscription = producer
            .subscribe_with(move |e: &Event, _: Sequence, _: bool| g.lock().unwrap().push(e.value))
            .unwrap();
        let mut evicted = producer
            .subscribe_lag_limited(LagLimit::never_hold())
            .unwrap();
        let mut plain = producer.subscribe().unwrap();
        let mut plain_got = Vec::new();
        for i in 0..100 {
            producer.publish(|e| e.set(i)).unwrap();
            plain
                .poll(8, |e: &Event, _: Sequence, _: bool| plain_got.push(e.value))
                .unwrap();
        }
        producer.shutdown().unwrap();
        subscription.unsubscribe();
        assert_eq!(*got.lock().unwrap(), (0..100).collect::<Vec<_>>());
        assert_eq!(plain_got, (0..100).collect::<Vec<_>>());
        assert!(matches!(
            evicted.poll(8, |_: &Event, _: Sequence, _: bool| {}),
            Err(PollError::Lagged { .. })
        ));
    });
}

/// Issue #24, finding 2: a lag-limited subscriber that joins while the
/// producers are parked on a full ring. They read the shortest hold once,
/// when their wait began (none then), so after the join's wake they parked
/// with no deadline, and nothing ever woke them to evict it: the publishes
/// hung for ever once the stage drained.
#[test]
fn a_subscriber_joining_while_producers_are_parked_is_still_evicted() {
    bounded(30, || {
        let (gate, gated) = std::sync::mpsc::channel::<()>();
        let producer = ringbus::multi_producer(8, Event::default, Blocking)
            .handle_events_with(common::gated_stage(gated))
            .build();
        // The stage holds event 0; the ring fills; two producers park.
        let p = producer.clone();
        for i in 0..8 {
            p.publish(|e| e.set(i)).unwrap();
        }
        // Batches of 8: the second one's wait, begun before the join, is
        // held by the late subscriber once the stage drains.
        let parked: Vec<_> = (0..2)
            .map(|k| {
                let p = producer.clone();
                std::thread::spawn(move || {
                    p.batch_publish(8, |slots| {
                        for (i, e) in slots.enumerate() {
                            e.set(100 * (k + 1) + i as u64);
                        }
                    })
                    .unwrap();
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let mut late = producer
            .subscribe_lag_limited(LagLimit::hold_at_most(Duration::from_millis(200)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        // The stage drains: now only the new subscriber holds the producers.
        drop(gate);
        for t in parked {
            t.join().unwrap();
        }
        assert!(matches!(
            late.poll(64, |_: &Event, _: Sequence, _: bool| {}),
            Err(PollError::Lagged { .. })
        ));
        drop(p);
        producer.shutdown().unwrap();
    });
}

/// Issue #24, finding 2, for `publish_timeout`: the same late join, with a
/// deadline longer than the hold.
#[test]
fn a_subscriber_joining_during_publish_timeout_is_evicted_before_its_deadline() {
    bounded(30, || {
        let producer = ringbus::multi_producer(4, Event::default, Blocking).build();
        let mut first = producer.subscribe().unwrap();
        for i in 0..4 {
            producer.publish(|e| e.set(i)).unwrap();
        }
        // A blocking producer claims 4..=7 and parks; then `publish_timeout`
        // waits for room for 8, which the late subscriber will hold.
        let b = producer.clone();
        let blocking = std::thread::spawn(move || {
            b.batch_publish(4, |slots| {
                for (i, e) in slots.enumerate() {
                    e.set(4 + i as u64);
                }
            })
            .unwrap();
        });
        std::thread::sleep(Duration::from_millis(30));
        let p = producer.clone();
        let waiting = std::thread::spawn(move || {
            p.publish_timeout(Duration::from_secs(20), |e| e.set(8))
                .map(|_| ())
        });
        std::thread::sleep(Duration::from_millis(50));
        let mut late = producer
            .subscribe_lag_limited(LagLimit::hold_at_most(Duration::from_millis(100)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        // The first subscriber catches up and leaves; the late one holds.
        first
            .poll(64, |_: &Event, _: Sequence, _: bool| {})
            .unwrap();
        drop(first);
        let started = Instant::now();
        blocking.join().unwrap();
        waiting.join().unwrap().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "evicted, not timed out"
        );
        assert!(matches!(
            late.poll(64, |_: &Event, _: Sequence, _: bool| {}),
            Err(PollError::Lagged { .. })
        ));
    });
}

/// Issue #24, finding 3: a panic inside a lag-limited poller's closure left
/// it "reading": the next poll said `Lagged { behind: 0 }` although it was
/// never evicted, and it could no longer be evicted, so it held the
/// producers until dropped. Now the same events come again, and eviction
/// still works afterwards.
#[test]
fn a_panic_in_a_lag_limited_poll_gives_the_same_events_again_and_it_can_be_evicted() {
    bounded(30, || {
        let producer = ringbus::multi_producer(4, Event::default, Blocking).build();
        let mut sub = producer
            .subscribe_lag_limited(LagLimit::never_hold())
            .unwrap();
        for i in 0..3 {
            producer.publish(|e| e.set(i)).unwrap();
        }
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sub.poll(8, |_: &Event, seq: Sequence, _: bool| {
                assert!(seq != 1, "planned panic");
            })
        }));
        assert!(panicked.is_err());
        let mut again = Vec::new();
        let polled = sub.poll(8, |e: &Event, seq: Sequence, _: bool| {
            e.verify();
            again.push(seq);
        });
        assert_eq!(polled, Ok(3), "not evicted: the same events again");
        assert_eq!(again, vec![0, 1, 2]);
        // Another panic, then the ring fills: it must still be evictable.
        producer.publish(|e| e.set(3)).unwrap();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sub.poll(8, |_: &Event, _: Sequence, _: bool| panic!("planned panic"))
        }));
        for i in 4..12 {
            producer.publish(|e| e.set(i)).unwrap();
        }
        assert!(matches!(
            sub.poll(8, |_: &Event, _: Sequence, _: bool| {}),
            Err(PollError::Lagged { .. })
        ));
    });
}
