//! Event pollers: pull consumption, runtime subscription and unsubscription,
//! and a dropped poller never holding the producers back.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ringbus::{Blocking, PollError, Sequence, SubscribeError, Yielding};

#[test]
fn poller_sees_every_event_after_subscribing_then_closed() {
    bounded(60, || {
        let (v, stats) = Verifier::new(true);
        let mut p = ringbus::single_producer(64, Event::default, Yielding::default())
            .handle_events_with(v)
            .build();
        let mut poller = p.subscribe().unwrap();
        assert_eq!(poller.sequence(), -1);
        let n = N / 10;
        let consumer = std::thread::spawn(move || {
            let mut next: Sequence = 0;
            loop {
                match poller.poll_wait(100, |e: &Event, seq, _eob| {
                    assert_eq!(seq, next, "gap or repeat");
                    e.verify();
                    assert_eq!(e.value, seq as u64);
                    next += 1;
                }) {
                    Ok(k) => assert!(k > 0 && k <= 100),
                    Err(PollError::Closed) => return next,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        for i in 0..n {
            p.publish(|e| e.set(i)).unwrap();
        }
        p.shutdown().unwrap();
        assert_eq!(consumer.join().unwrap(), n as Sequence);
        assert_eq!(stats.lock().unwrap().count, n);
    });
}

#[test]
fn dropped_poller_never_holds_the_producer_back() {
    bounded(60, || {
        let mut p = ringbus::single_producer(8, Event::default, Blocking)
            .handle_events_with(|_e: &Event, _s: Sequence, _b: bool| {})
            .build();
        let mut poller = p.subscribe().unwrap();
        for i in 0..8 {
            p.publish(|e| e.set(i)).unwrap();
        }
        // The poller gates: the ring is full until it polls.
        assert!(p.try_publish(|_| {}).is_err());
        assert_eq!(poller.poll(3, |_e, _s, _b| {}), Ok(3));
        // Abandon it mid-stream: producers go on past a full ring.
        drop(poller);
        for i in 8..1000 {
            p.publish(|e| e.set(i)).unwrap();
        }
        p.shutdown().unwrap();
    });
}

/// A producer parked on a full ring whose only consumer is a poller, which
/// another thread drops: the producer goes on (under parking per edge it
/// waits on the poller's signal alone, the one that leaves).
#[test]
fn a_poller_dropped_on_another_thread_releases_a_parked_producer() {
    bounded(60, || {
        for round in 0..if cfg!(miri) { 2 } else { 50 } {
            let mut p = ringbus::single_producer(4, Event::default, Blocking).build();
            let poller = p.subscribe().unwrap();
            for i in 0..4 {
                p.publish(|e| e.set(i)).unwrap();
            }
            let dropper = std::thread::spawn(move || {
                // Let the producer park first, most rounds.
                std::thread::sleep(Duration::from_micros(200 * (round % 3)));
                drop(poller);
            });
            // Blocks on the full ring until the poller is gone.
            p.publish(|e| e.set(4)).unwrap();
            dropper.join().unwrap();
            p.shutdown().unwrap();
        }
    });
}

#[test]
fn nothing_available_returns_zero_and_timeouts_report() {
    let mut p = ringbus::single_producer(8, Event::default, Blocking).build();
    let mut poller = p.subscribe().unwrap();
    assert_eq!(poller.poll(10, |_e, _s, _b| unreachable!()), Ok(0));
    assert_eq!(
        poller.poll_timeout(Duration::from_millis(5), 10, |_e, _s, _b| unreachable!()),
        Err(PollError::Timeout)
    );
    p.publish(|e| e.set(0)).unwrap();
    assert_eq!(
        poller.poll(10, |e, s, eob| assert!(e.value == 0 && s == 0 && eob)),
        Ok(1)
    );
    p.halt();
    assert_eq!(poller.poll(10, |_e, _s, _b| {}), Err(PollError::Halted));
    assert!(matches!(p.subscribe(), Err(SubscribeError::Halted)));
}

#[test]
fn a_panicking_poll_commits_nothing() {
    let mut p = ringbus::single_producer(8, Event::default, Blocking).build();
    let mut poller = p.subscribe().unwrap();
    for i in 0..3 {
        p.publish(|e| e.set(i)).unwrap();
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poller.poll(10, |_e, s, _b| assert!(s < 1, "fails at 1"))
    }));
    assert!(r.is_err());
    let mut again = Vec::new();
    assert_eq!(poller.poll(10, |_e, s, _b| again.push(s)), Ok(3));
    assert_eq!(again, [0, 1, 2]);
}

/// Pollers join and leave thousands of times while two producers publish;
/// the long-lived stage loses nothing and every poller sees a contiguous run
/// in each producer's order.
#[test]
fn subscribe_and_unsubscribe_thousands_of_times_during_a_run() {
    let per: u64 = if cfg!(miri) { 200 } else { 100_000 };
    let churn: u64 = if cfg!(miri) { 20 } else { 2_000 };
    bounded(120, move || {
        let (v, stats) = Verifier::new(false);
        let p = ringbus::multi_producer(256, Event::default, Yielding::default())
            .handle_events_with(v)
            .build();
        let done = Arc::new(AtomicBool::new(false));
        let seen_by_pollers = Arc::new(AtomicU64::new(0));
        let churner = {
            let p = p.clone();
            let (done, seen) = (Arc::clone(&done), Arc::clone(&seen_by_pollers));
            std::thread::spawn(move || {
                let mut joins = 0;
                while joins < churn || !done.load(Ordering::Relaxed) {
                    let Ok(mut poller) = p.subscribe() else { break };
                    joins += 1;
                    let mut expected = poller.sequence() + 1;
                    let mut last = [None::<u64>; 2];
                    for _ in 0..(joins % 4) {
                        let _ = poller.poll(64, |e: &Event, seq, _eob| {
                            assert_eq!(seq, expected, "poller skipped or repeated");
                            expected += 1;
                            e.verify();
                            let (src, i) =
                                ((e.value >> PRODUCER_SHIFT) as usize, e.value & 0xff_ffff);
                            if let Some(prev) = last[src] {
                                assert!(i > prev, "producer {src} out of order");
                            }
                            last[src] = Some(i);
                            seen.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                    // Dropped here, possibly mid-stream.
                }
                joins
            })
        };
        let producers: Vec<_> = (0..2)
            .map(|src| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        p.publish(|e| e.set(value(src, i))).unwrap();
                    }
                })
            })
            .collect();
        for t in producers {
            t.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let joins = churner.join().unwrap();
        p.shutdown().unwrap();
        assert!(joins >= churn);
        assert_eq!(
            stats.lock().unwrap().count,
            2 * per,
            "the long-lived stage lost events"
        );
        assert!(seen_by_pollers.load(Ordering::Relaxed) > 0);
    });
}

/// Counts what a runtime-subscribed handler saw, checking it is contiguous.
struct Tail {
    first: Option<Sequence>,
    next: Sequence,
    count: u64,
    started: bool,
    stopped: bool,
}

impl ringbus::EventHandler<Event> for Tail {
    fn on_event(&mut self, e: &Event, seq: Sequence, _eob: bool) {
        e.verify();
        if self.first.is_none() {
            self.first = Some(seq);
            self.next = seq;
        }
        assert_eq!(seq, self.next, "gap or repeat in a runtime subscription");
        assert_eq!(e.value, seq as u64);
        self.next += 1;
        self.count += 1;
    }

    fn on_start(&mut self) {
        self.started = true;
    }

    fn on_shutdown(&mut self) {
        self.stopped = true;
    }
}

fn tail() -> Tail {
    Tail {
        first: None,
        next: 0,
        count: 0,
        started: false,
        stopped: false,
    }
}

#[test]
fn managed_handlers_join_and_leave_at_runtime() {
    bounded(60, || {
        let (v, stats) = Verifier::new(true);
        let mut p = ringbus::single_producer(64, Event::default, Yielding::default())
            .handle_events_with(v)
            .build();
        let n = N / 10;
        let mut early = None;
        let mut late = None;
        for i in 0..n {
            if i == n / 4 {
                early = Some(p.subscribe_with(tail()).unwrap());
                late = Some(p.subscribe_with(tail()).unwrap());
            }
            if i == n / 2 {
                // Leaves mid-run: the producer goes on.
                let t = early.take().unwrap().unsubscribe().unwrap();
                assert!(t.started && t.stopped);
                assert!(t.first.unwrap() <= (n / 4) as Sequence);
            }
            p.publish(|e| e.set(i)).unwrap();
        }
        p.shutdown().unwrap();
        // The one still subscribed saw everything from its start to the end.
        let t = late.take().unwrap().unsubscribe().unwrap();
        let first = t.first.unwrap();
        assert!(
            first <= (n / 4) as Sequence,
            "missed events after subscribing"
        );
        assert_eq!(t.next, n as Sequence);
        assert_eq!(t.count, n - first as u64);
        assert_eq!(stats.lock().unwrap().count, n);
    });
}

#[test]
fn an_unbounded_limit_is_fine() {
    let mut p = ringbus::single_producer(8, Event::default, Blocking).build();
    let mut poller = p.subscribe().unwrap();
    for i in 0..5 {
        p.publish(|e| e.set(i)).unwrap();
    }
    assert_eq!(poller.poll(usize::MAX, |_e, _s, _b| {}), Ok(5));
    assert_eq!(poller.sequence(), 4);
}

#[test]
fn pollers_cannot_join_a_bus_with_a_mutating_stage() {
    let p = ringbus::single_producer(8, Event::default, Blocking)
        .handle_events_with(|_e: &mut Event, _s: Sequence, _b: bool| {})
        .build();
    let err = p.subscribe().unwrap_err();
    assert!(matches!(err, SubscribeError::MutatingStages), "{err:?}");
    assert!(err.to_string().contains("at build time"), "{err}");
    let err = p
        .subscribe_with(|_e: &Event, _s: Sequence, _b: bool| {})
        .unwrap_err();
    assert!(matches!(err, SubscribeError::MutatingStages), "{err:?}");
}

/// A poller joining a multi-producer bus while another poller stands inside
/// a batch starts after everything claimed (it cannot start inside a batch,
/// whose mark is at the batch's first slot): it misses nothing claimed after
/// it joined, and holds nobody back.
#[test]
fn poller_joining_while_another_stands_inside_a_batch_starts_after_the_claims() {
    bounded(30, || {
        let p = ringbus::multi_producer(16, Event::default, Blocking).build();
        let mut first = p.subscribe().unwrap();
        p.batch_publish(4, |slots| {
            for (i, e) in slots.enumerate() {
                e.set(i as u64)
            }
        })
        .unwrap();
        assert_eq!(first.poll(2, |_e, _s, _b| {}), Ok(2));
        let mut second = p.subscribe().unwrap();
        assert_eq!(second.sequence(), 3, "joins after everything claimed");
        assert_eq!(second.poll(10, |_e, _s, _b| {}), Ok(0));
        p.publish(|e| e.set(4)).unwrap();
        let mut got = Vec::new();
        assert_eq!(second.poll(10, |_e, s, _b| got.push(s)), Ok(1));
        assert_eq!(got, [4]);
        // The rest of the batch it knew of, then the new event.
        assert_eq!(first.poll(10, |_e, _s, _b| {}), Ok(2));
        assert_eq!(first.poll(10, |_e, _s, _b| {}), Ok(1));
    });
}

/// Issue #12, finding 2: on a ring of 4, a poller joins where the slowest
/// consumer stands inside a batch whose first slot already carries the mark
/// of a later lap. It used to start its scans mid-batch, never see an event,
/// and gate the producers forever.
#[test]
fn poller_joining_inside_a_batch_whose_mark_was_reused_gets_events() {
    bounded(30, || {
        let p = ringbus::multi_producer(4, Event::default, Blocking).build();
        let mut a = p.subscribe().unwrap();
        for _ in 0..2 {
            p.batch_publish(2, |slots| {
                for e in slots {
                    e.set(0)
                }
            })
            .unwrap();
        }
        assert_eq!(a.poll(1, |_e, _s, _b| {}), Ok(1), "A stops at 0");
        assert_eq!(p.publish(|e| e.set(4)).unwrap(), 4, "re-marks slot 0");
        let mut b = p.subscribe().unwrap();
        let mut seen = Vec::new();
        for round in 0..20u64 {
            let value = 5 + round;
            let published = p.try_publish(|e| e.set(value));
            let _ = a.poll(usize::MAX, |_e, _s, _b| {});
            let _ = b.poll(usize::MAX, |e, s, _b| {
                e.verify();
                assert_eq!(e.value, s as u64);
                seen.push(s);
            });
            if published.is_err() {
                // Full until both pollers caught up: poll once more.
                p.publish(|e| e.set(value)).unwrap();
            }
        }
        let _ = b.poll(usize::MAX, |_e, s, _b| seen.push(s));
        assert_eq!(seen, (5..25).collect::<Vec<_>>(), "B saw every later event");
    });
}

/// A bus of pollers only, on a ring of 4: while a claim is still being
/// written, no producer may lap it, also once the last poller left after
/// the producers wrapped the ring under it. The published floor that gates
/// a bus without consumers is found by a scan that starts where the readers'
/// own scans reached; `--cfg ringbus_weaken="reached"` starts it from a
/// stale place instead, where a later lap's mark leads the scan past the
/// claim, and this test fails (`ci/loom-weakened.sh` checks that).
#[test]
fn a_claim_in_flight_is_never_lapped_after_the_last_poller_left() {
    bounded(60, || {
        let a = ringbus::multi_producer(4, Event::default, Blocking).build();
        let mut poller = a.subscribe().unwrap();
        for i in 0..10 {
            a.publish(|e| e.set(i)).unwrap();
            assert_eq!(poller.poll(usize::MAX, |e, _, _| e.verify()), Ok(1));
        }
        // Sequence 10 (slot 2) is claimed and held mid-write by `b`.
        let b = a.clone();
        let (claimed_tx, claimed) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            b.publish(|e| {
                claimed_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                e.set(10);
            })
            .unwrap()
        });
        claimed.recv().unwrap();
        // 11 and 12 fit behind the poller (at 9); 12's mark lands in slot 0.
        a.publish(|e| e.set(11)).unwrap();
        a.publish(|e| e.set(12)).unwrap();
        assert_eq!(
            poller.poll(usize::MAX, |_, _, _| {}),
            Ok(0),
            "10 is unpublished"
        );
        drop(poller);
        // No consumer: only the published floor (9) gates. 13 fits; 14
        // would reuse slot 2, where 10 is still being written.
        a.publish_timeout(Duration::from_millis(50), |e| e.set(13))
            .unwrap();
        assert_eq!(
            a.publish_timeout(Duration::from_millis(50), |e| e.set(14)),
            Err(ringbus::TryPublishError::Timeout),
            "a producer lapped a claim still being written"
        );
        go.send(()).unwrap();
        assert_eq!(holder.join().unwrap(), 10);
        assert_eq!(a.publish(|e| e.set(14)), Ok(14));
        a.shutdown().unwrap();
    });
}

/// A stage fails: producers get `Halted`, and a poller that handled every
/// event claimed before learns `Halted` too, without a shutdown (it used to
/// wait for one for ever). Both kinds of producer, several producers on the
/// multi one.
#[test]
fn a_poller_learns_halted_once_a_failed_stage_stops_the_producers() {
    for multi in [false, true] {
        bounded(30, move || {
            let stage = |e: &Event, _: Sequence, _: bool| assert!(e.value != 5, "fails at 5");
            let mut poller;
            let mut accepted = 0u64;
            if multi {
                let producer = ringbus::multi_producer(8, Event::default, Blocking)
                    .handle_events_with(stage)
                    .build();
                poller = PollerOf::Multi(producer.subscribe().unwrap());
                let threads: Vec<_> = (0..2)
                    .map(|_| {
                        let p = producer.clone();
                        std::thread::spawn(move || {
                            let mut n = 0u64;
                            for i in 0.. {
                                if p.publish(|e| e.set(i)).is_err() {
                                    break;
                                }
                                n += 1;
                            }
                            n
                        })
                    })
                    .collect();
                // Read as they publish: the poller gates them, and a claim
                // made before the failure waits for its room.
                let mut seen = 0;
                let end = loop {
                    match poller.poll_wait(&mut seen) {
                        Ok(()) => {}
                        Err(e) => break e,
                    }
                };
                for t in threads {
                    accepted += t.join().unwrap();
                }
                assert_eq!(end, PollError::Halted);
                assert_eq!(seen, accepted, "every accepted event, once");
                drop(producer);
            } else {
                let mut producer = ringbus::single_producer(8, Event::default, Blocking)
                    .handle_events_with(stage)
                    .build();
                poller = PollerOf::Single(producer.subscribe().unwrap());
                for i in 0.. {
                    if producer.publish(|e| e.set(i)).is_err() {
                        break;
                    }
                    accepted += 1;
                }
                let mut seen = 0;
                let end = loop {
                    match poller.poll_wait(&mut seen) {
                        Ok(()) => {}
                        Err(e) => break e,
                    }
                };
                assert_eq!(end, PollError::Halted);
                assert_eq!(seen, accepted, "every accepted event, once");
                drop(producer);
            }
        });
    }
}

enum PollerOf {
    Single(ringbus::EventPoller<Event, ringbus::SingleProducerSequencer, Blocking>),
    Multi(ringbus::EventPoller<Event, ringbus::MultiProducerSequencer, Blocking>),
}

impl PollerOf {
    fn poll_wait(&mut self, seen: &mut u64) -> Result<(), PollError> {
        let f = |_: &Event, _: Sequence, _: bool| *seen += 1;
        match self {
            PollerOf::Single(p) => p.poll_wait(64, f).map(|_| ()),
            PollerOf::Multi(p) => p.poll_wait(64, f).map(|_| ()),
        }
    }
}

/// A subscription's handler is fed as a stage's: `on_batch_start` with the
/// size of each batch, which then ends with one `end_of_batch`.
#[test]
fn a_subscription_announces_each_batch_with_its_size() {
    #[derive(Default)]
    struct Batches {
        sizes: Vec<u64>,
        events: u64,
        ends: u64,
    }
    impl ringbus::EventHandler<Event> for Batches {
        fn on_event(&mut self, _: &Event, _: Sequence, end_of_batch: bool) {
            self.events += 1;
            self.ends += u64::from(end_of_batch);
        }
        fn on_batch_start(&mut self, n: u64) {
            self.sizes.push(n);
        }
    }
    bounded(30, || {
        let mut p = ringbus::single_producer(16, Event::default, Yielding::default()).build();
        let subscription = p.subscribe_with(Batches::default()).unwrap();
        for i in 0..200 {
            p.publish(|e| e.set(i)).unwrap();
        }
        p.shutdown().unwrap();
        let b = subscription.unsubscribe().expect("handed back");
        assert_eq!(b.events, 200);
        assert_eq!(b.sizes.iter().sum::<u64>(), 200, "{:?}", b.sizes);
        assert_eq!(b.ends, b.sizes.len() as u64);
    });
}

/// A subscription stopped after its bus closed hands its handler every
/// event first ("it ends when the bus closes, after the last event"): one
/// that is still behind when the producer is dropped or shut down used to
/// stop after the batch in hand, and the handler given back had missed
/// the rest. Batches are at most `MAX_BATCH` events, so a stop on an open
/// bus waits for one batch at most.
#[test]
fn a_subscription_stopped_after_the_close_hands_over_every_event() {
    #[derive(Default)]
    struct Slow {
        events: u64,
        largest: u64,
    }
    impl ringbus::EventHandler<Event> for Slow {
        fn on_event(&mut self, e: &Event, _: Sequence, _: bool) {
            assert_eq!(e.value, self.events, "out of order");
            self.events += 1;
            std::thread::sleep(Duration::from_micros(20));
        }
        fn on_batch_start(&mut self, n: u64) {
            self.largest = self.largest.max(n);
        }
    }
    let n = if cfg!(miri) { 40 } else { 1000 };
    for shutdown in [false, true] {
        bounded(60, move || {
            let p = ringbus::multi_producer(1024, Event::default, Blocking).build();
            let subscription = p.subscribe_with(Slow::default()).unwrap();
            for i in 0..n {
                p.publish(|e| e.set(i)).unwrap();
            }
            if shutdown {
                p.shutdown().unwrap();
            } else {
                drop(p);
            }
            let slow = subscription.unsubscribe().expect("handed back");
            assert_eq!(slow.events, n, "shutdown {shutdown}");
            assert!(
                slow.largest <= ringbus::Subscription::<Slow>::MAX_BATCH as u64,
                "a batch of {}",
                slow.largest
            );
        });
    }
}

/// A poller of a bus whose stage failed (halting it) says `Halted`, as the
/// producers do, also once the bus was shut down after the failure: it
/// used to say `Closed` then, so whether a poller on another thread said
/// `Halted` or `Closed` depended on when it looked.
#[test]
fn a_poller_says_halted_after_a_failure_also_once_the_bus_is_shut_down() {
    for drop_it in [false, true] {
        bounded(30, move || {
            let p = ringbus::multi_producer(1024, Event::default, Blocking)
                .handle_events_with(|e: &Event, _: Sequence, _: bool| {
                    assert_ne!(e.value, 3, "event 3 fails");
                })
                .build();
            let mut q = p.subscribe().unwrap();
            for i in 0..10 {
                let _ = p.publish(|e| e.set(i));
            }
            // Wait for the failure (`try_publish`: a publish that claimed
            // would wait for room the unpolled poller never frees).
            while p.try_publish(|e| e.set(99)) != Err(ringbus::TryPublishError::Halted) {
                std::thread::sleep(Duration::from_millis(1));
            }
            if drop_it {
                drop(p);
            } else {
                // A clone's publish after the shutdown is refused; its
                // claim still counts on the claim counter.
                let late = p.clone();
                assert!(p.shutdown().is_err());
                assert!(late.publish(|e| e.set(100)).is_err());
            }
            let mut seen = 0;
            let err = loop {
                match q.poll(64, |_, _, _| seen += 1) {
                    Ok(_) => {}
                    Err(e) => break e,
                }
            };
            assert_eq!(err, PollError::Halted, "drop {drop_it}, {seen} events seen");
        });
    }
}

/// Dropping a subscription after the close does not wait for a publish
/// that claimed before the close and waits for room the dropping thread
/// holds (an unpolled poller): it hands over what is published, then
/// stops. (Draining until `Closed`, it waited for that claim for ever.)
#[test]
fn a_subscription_dropped_after_the_close_does_not_wait_for_a_claim_stuck_behind_its_owner() {
    bounded(30, || {
        let p = ringbus::multi_producer(4, Event::default, Blocking).build();
        let held = p.subscribe().unwrap(); // never polled: holds the ring
        let subscription = p
            .subscribe_with(|_: &Event, _: Sequence, _: bool| {})
            .unwrap();
        for i in 0..4 {
            p.publish(|e| e.set(i)).unwrap();
        }
        let other = p.clone();
        let stuck = std::thread::spawn(move || other.publish(|e| e.set(4)));
        while p.metrics().snapshot().cursor < 4 {
            std::thread::sleep(Duration::from_millis(1)); // claimed, waiting
        }
        p.shutdown().unwrap(); // closes the bus: no stage to wait for
        drop(subscription);
        drop(held);
        assert_eq!(stuck.join().unwrap(), Ok(4), "claimed before the close");
    });
}

/// A subscription stopped after the close waits for a publish on another
/// clone that claimed before the close and has room, only slow (here,
/// writing its event for 100 ms): its handler sees that event too.
#[test]
fn a_subscription_stopped_after_the_close_waits_for_a_slow_publish_with_room() {
    bounded(30, || {
        let p = ringbus::multi_producer(64, Event::default, Blocking).build();
        let count = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&count);
        let subscription = p
            .subscribe_with(move |_: &Event, _: Sequence, _: bool| {
                c.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        p.publish(|e| e.set(0)).unwrap();
        let slow = p.clone();
        let writing = std::thread::spawn(move || {
            slow.publish(|e| {
                std::thread::sleep(Duration::from_millis(100));
                e.set(1);
            })
        });
        while p.metrics().snapshot().cursor < 1 {
            std::thread::sleep(Duration::from_millis(1)); // claimed, writing
        }
        p.shutdown().unwrap(); // closes the bus; the slow clone remains
        drop(subscription);
        assert_eq!(writing.join().unwrap(), Ok(1));
        assert_eq!(
            count.load(Ordering::Relaxed),
            2,
            "the slow publish was missed"
        );
    });
}
