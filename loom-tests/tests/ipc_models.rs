//! Loom models of the shared-memory bus's protocols (`ringbus::ipc`), on
//! the production types: under loom the file's structures live on the heap,
//! a "process" is a number, killing one sets a flag, every timeout has
//! passed at once (so consumers give a pending claim up at first sight, the
//! hardest case for producers), and the futex is a mutex and a condition
//! variable that keep its promise.
//!
//! Each model names the outcome it forbids; `ci/loom-weakened.sh` checks
//! that each fails with its ordering or step weakened (`ipc_publish`,
//! `ipc_sleepers`, `ipc_reuse`, `ipc_join`, `ipc_orphan`, `ipc_reap`,
//! `ipc_skip`, `ipc_after`, `ipc_replace`, `ipc_cycle`).
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

use loom_tests::Reached;
use ringbus::ipc::{IpcError, IpcPollError, IpcPublishError, Options, Pod, Wait, Zeroable};

/// `check` is written after `value`: a torn or unwritten event disagrees.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Pe {
    value: u64,
    check: u64,
}

// SAFETY: two u64s, no padding: every byte pattern is a valid Pe.
unsafe impl Zeroable for Pe {}
// SAFETY: as above; Copy and 'static.
unsafe impl Pod for Pe {}

impl Pe {
    fn set(&mut self, value: u64) {
        self.value = value;
        self.check = !value;
    }
    fn verify(&self) {
        assert_eq!(self.check, !self.value, "torn or unwritten event {self:?}");
    }
}

/// A multi producer bus of 2 slots with places for 2 producers and a
/// consumer, as model process 1.
fn two_producer_ring_of_2() -> ringbus::ipc::IpcBus<Pe> {
    Options::new(2)
        .multi_producer()
        .producers(2)
        .consumers(1)
        .model::<Pe>(1)
}

/// Model 1: two producers of a multi producer bus (ring of 2) publish one
/// event each while a consumer reads. Forbidden: a slot read before its
/// writer's bytes are visible (loom's cell check, `verify`), an event
/// delivered twice, or an event both delivered and reported given up.
#[test]
fn ipc_two_producers_publish_and_a_consumer_reads_only_written_slots() {
    static CONCURRENT: Reached = Reached::new();
    loom::model(|| {
        let bus = two_producer_ring_of_2();
        let mut consumer = bus.consumer("c").unwrap();
        let outcomes: Vec<_> = (0..2u64)
            .map(|id| {
                let mut p = bus.as_process(2 + id as u32).producer().unwrap();
                thread::spawn(move || p.publish(|e| e.set(10 + id)))
            })
            .collect();
        let mut seen = Vec::new();
        let mut passed = 0;
        while passed < 2 {
            let before = consumer.next_sequence();
            consumer
                .poll(4, |e, _, _| {
                    e.verify();
                    seen.push(e.value);
                })
                .unwrap();
            passed += (consumer.next_sequence() - before) as usize;
            if passed == 1 {
                CONCURRENT.hit();
            }
            thread::yield_now();
        }
        for (id, o) in outcomes.into_iter().enumerate() {
            let delivered = seen.iter().filter(|&&v| v == 10 + id as u64).count();
            match o.join().unwrap() {
                Ok(_) => assert_eq!(delivered, 1, "an event lost or twice"),
                Err(IpcPublishError::GivenUp { .. }) => {
                    assert_eq!(delivered, 0, "a given-up event delivered")
                }
                Err(e) => panic!("{e}"),
            }
        }
    });
    CONCURRENT.assert_reached("the consumer read while a producer was still publishing");
}

/// Model 2: a `Blocking` consumer goes to sleep on the futex while the
/// single producer publishes. Forbidden: a lost wake-up (loom reports the
/// consumer asleep forever as a deadlock).
#[test]
fn ipc_a_blocking_consumer_is_woken_by_a_publish() {
    loom::model(|| {
        let bus = Options::new(2)
            .consumers(1)
            .model::<Pe>(1)
            .with_wait(Wait::Blocking);
        let mut consumer = bus.consumer("c").unwrap();
        let mut p = bus.producer().unwrap();
        let t = thread::spawn(move || {
            p.publish(|e| e.set(1)).unwrap();
        });
        let mut got = 0;
        while got == 0 {
            got = consumer
                .poll_wait(1, |e, _, _| {
                    e.verify();
                    assert_eq!(e.value, 1);
                })
                .unwrap();
        }
        t.join().unwrap();
    });
}

/// Model 3: a slow producer's claim is given up by the consumer while the
/// other producer wants the same slot in the next round (ring of 2; no
/// publish waits for room; the consumer polls twice while they publish,
/// then once after).
/// Forbidden: the next round's write while the slow producer still writes
/// (loom's cell check), the given-up event delivered, an acknowledged event
/// lost, or the slow producer told it published when it was given up.
#[test]
fn ipc_a_given_up_slot_is_reused_only_after_its_slow_writer_let_go() {
    static GIVEN_UP: Reached = Reached::new();
    static REUSED: Reached = Reached::new();
    loom::model(|| {
        let bus = two_producer_ring_of_2();
        let mut consumer = bus.consumer("c").unwrap();
        let mut slow = bus.as_process(2).producer().unwrap();
        let mut fast = bus.as_process(3).producer().unwrap();
        // Slow: others may run while it is inside its write.
        let slow_t = thread::spawn(move || {
            slow.try_publish(|e| {
                e.set(100);
                thread::yield_now();
                e.set(100);
            })
        });
        let fast_t = thread::spawn(move || {
            let first = fast.publish(|e| e.set(1));
            // The next round of a slot: never waits for room, but waits for
            // a given-up writer still in the slot.
            let second = fast.try_publish(|e| e.set(2));
            [first, second]
        });
        let mut seen = vec![];
        let mut read = |c: &mut ringbus::ipc::IpcConsumer<Pe>| {
            c.poll(8, |e, _, _| {
                e.verify();
                seen.push(e.value);
            })
            .unwrap();
        };
        for _ in 0..2 {
            read(&mut consumer);
        }
        let slow_outcome = slow_t.join().unwrap();
        let fast_outcomes = fast_t.join().unwrap();
        read(&mut consumer);
        let delivered = |v| seen.iter().filter(|&&s| s == v).count();
        match slow_outcome {
            Ok(_) => assert_eq!(delivered(100), 1, "an acknowledged event lost or twice"),
            Err(IpcPublishError::GivenUp { .. }) => {
                GIVEN_UP.hit();
                assert_eq!(delivered(100), 0, "a given-up event delivered");
            }
            Err(IpcPublishError::Full) => assert_eq!(delivered(100), 0),
            Err(e) => panic!("{e}"),
        }
        if slow_outcome.is_err() && matches!(fast_outcomes[1], Ok(2)) {
            REUSED.hit();
        }
        for (v, o) in [1u64, 2].into_iter().zip(fast_outcomes) {
            match o {
                Ok(_) => assert_eq!(delivered(v), 1, "an acknowledged event lost or twice"),
                Err(IpcPublishError::GivenUp { .. } | IpcPublishError::Full) => {
                    assert_eq!(delivered(v), 0)
                }
                Err(e) => panic!("{e}"),
            }
        }
    });
    GIVEN_UP.assert_reached("a slow producer was given up");
    REUSED.assert_reached("the given-up slot was written in the next round");
}

/// Model 4: a consumer process dies without leaving while the single
/// producer fills a ring of 2 and a new consumer joins. Forbidden: the
/// producer wedged by the dead (loom's deadlock), or the joiner reading a
/// slot the producer overwrites or has not written (loom's cell check,
/// `verify`, order).
#[test]
fn ipc_a_dead_consumer_is_reclaimed_and_a_joiner_misses_nothing() {
    static RECLAIMED: Reached = Reached::new();
    loom::model(|| {
        let bus = Options::new(2).consumers(2).model::<Pe>(1);
        bus.as_process(2).consumer("dead").unwrap().die();
        bus.kill(2);
        let mut p = bus.producer().unwrap();
        let joiner_bus = bus.as_process(3).with_wait(Wait::Yielding);
        let joiner = thread::spawn(move || {
            let mut c = joiner_bus.consumer("joiner").unwrap();
            let mut expected = c.next_sequence();
            loop {
                let polled = c.poll(4, |e, seq, _| {
                    e.verify();
                    assert_eq!(seq as u64, expected, "gap or repeat");
                    assert_eq!(e.value, seq as u64 + 1, "overwritten before read");
                    expected += 1;
                });
                match polled {
                    Ok(_) => thread::yield_now(),
                    Err(IpcPollError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        for v in 1..=3u64 {
            p.publish(|e| e.set(v)).unwrap();
        }
        if bus.metrics().reclaimed == 1 {
            RECLAIMED.hit();
        }
        bus.close();
        // Consumers end once the producer let go of its place.
        drop(p);
        joiner.join().unwrap();
    });
    RECLAIMED.assert_reached("the dead consumer was reclaimed");
}

/// Model 5: the bus closes while a `Blocking` consumer sleeps, and the
/// single producer publishes once more, then lets go of its place.
/// Forbidden: the consumer asleep for ever (loom's deadlock: the producer's
/// drop must wake it), ending before the last acknowledged event, or
/// ending while the producer still holds its place.
#[test]
fn ipc_a_close_ends_a_sleeping_consumer_only_after_the_producer_let_go() {
    loom::model(|| {
        let bus = Options::new(2)
            .consumers(1)
            .model::<Pe>(1)
            .with_wait(Wait::Blocking);
        let mut consumer = bus.consumer("c").unwrap();
        let mut p = bus.producer().unwrap();
        let closer = bus.clone();
        let t = thread::spawn(move || {
            closer.close();
            // A publish that raced the close: acknowledged or refused.
            let r = p.publish(|e| e.set(1));
            drop(p);
            r
        });
        let mut seen = 0;
        loop {
            match consumer.poll_wait(4, |e, _, _| {
                e.verify();
                seen += 1;
            }) {
                Ok(_) => {}
                Err(IpcPollError::Closed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        match t.join().unwrap() {
            Ok(_) => assert_eq!(seen, 1, "an acknowledged event left behind"),
            Err(IpcPublishError::Closed) => assert_eq!(seen, 0),
            Err(e) => panic!("{e}"),
        }
    });
}

/// Model 6: a stage that failed orphans its entry (as `IpcStage` does,
/// in its own thread) after handling the first event, while the producer
/// needs its room and another process waits to join under its name.
/// Forbidden: the entry both resumed and reclaimed; a resumed consumer
/// starting anywhere but the orphan's commit (the knob `ipc_orphan`), or
/// missing or repeating an event after it; a slot overwritten before the
/// resumed consumer read it.
#[test]
fn ipc_an_orphaned_entry_is_resumed_or_reclaimed_never_both() {
    static RESUMED: Reached = Reached::new();
    static RECLAIMED: Reached = Reached::new();
    loom::model(|| {
        let bus = Options::new(2).consumers(2).model::<Pe>(1);
        let mut p = bus.producer().unwrap();
        let mut failing = bus.as_process(2).consumer("s").unwrap();
        p.publish(|e| e.set(1)).unwrap();
        let stage = thread::spawn(move || {
            assert_eq!(failing.poll(1, |e, _, _| e.verify()).unwrap(), 1);
            failing.orphan();
        });
        let joiner_bus = bus.as_process(3);
        let joiner = thread::spawn(move || {
            // One try: held by the live stage until it fails.
            let mut c = match joiner_bus.consumer("s") {
                Ok(c) => c,
                Err(IpcError::NameInUse { .. }) => return None,
                Err(e) => panic!("{e}"),
            };
            let resumed = c.resumed_from().is_some();
            let mut expected = c.next_sequence();
            if resumed {
                assert_eq!(c.resumed_from(), Some(0), "an orphan has no process");
                assert_eq!(expected, 1, "resumed away from the orphan's commit");
            }
            loop {
                let polled = c.poll(4, |e, seq, _| {
                    e.verify();
                    assert_eq!(seq as u64, expected, "gap or repeat");
                    assert_eq!(e.value, seq as u64 + 1, "overwritten before read");
                    expected += 1;
                });
                match polled {
                    Ok(_) => thread::yield_now(),
                    Err(IpcPollError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            Some((resumed, expected))
        });
        // Room for the second event whatever the stage did; the third needs
        // the stage's commit, or its entry reclaimed.
        p.publish(|e| e.set(2)).unwrap();
        let published = match p.try_publish(|e| e.set(3)) {
            Ok(_) => 3,
            Err(IpcPublishError::Full) => 2,
            Err(e) => panic!("{e}"),
        };
        let reclaimed = bus.metrics().reclaimed;
        stage.join().unwrap();
        bus.close();
        drop(p);
        if let Some((resumed, expected)) = joiner.join().unwrap() {
            assert!(!(resumed && reclaimed > 0), "resumed and reclaimed");
            if resumed {
                assert_eq!(expected, published, "the resumed consumer missed events");
                RESUMED.hit();
            }
        }
        if reclaimed > 0 {
            RECLAIMED.hit();
        }
    });
    RESUMED.assert_reached("a joiner resumed the orphan");
    RECLAIMED.assert_reached("the producer reclaimed the orphan");
}

/// Model 7: a stage "s" fails (orphans its entry) after handling event 0
/// of 2, while "d", a consumer after it in another process, polls (held
/// with an event waiting, it reclaims the orphan: under loom at once) and
/// a third process tries once to resume "s". No producer needs room, so
/// only "d" can reclaim.
/// Forbidden: the orphan both resumed and reclaimed; "d" reading an event
/// before "s" (or its resumer) handled it while "s"'s entry was not
/// reclaimed; "d" missing or repeating an event; a live "s" losing its
/// entry (the knob `ipc_reap`: a reap that does not check the owner).
#[test]
fn ipc_a_consumer_after_an_orphan_reclaims_it_or_follows_its_resumer() {
    static RESUMED: Reached = Reached::new();
    static RECLAIMED: Reached = Reached::new();
    loom::model(|| {
        let bus = Options::new(2).consumers(3).model::<Pe>(1);
        let mut p = bus.producer().unwrap();
        let mut failing = bus.as_process(2).consumer("s").unwrap();
        let mut down = bus.as_process(4).consumer_after("d", &["s"]).unwrap();
        p.publish(|e| e.set(1)).unwrap();
        p.publish(|e| e.set(2)).unwrap();
        // Events "s" (or its resumer) handled, stored before its commit.
        let handled = Arc::new(AtomicU64::new(0));
        let h = handled.clone();
        let stage = thread::spawn(move || {
            let polled = failing.poll(1, |e, _, _| {
                e.verify();
                h.store(1, Ordering::SeqCst);
            });
            assert_eq!(polled, Ok(1), "a live stage lost its entry");
            failing.orphan();
        });
        let joiner_bus = bus.as_process(3);
        let h = handled.clone();
        let joiner = thread::spawn(move || {
            let mut c = match joiner_bus.consumer("s") {
                Ok(c) => c,
                // One try: held by the live stage until it fails.
                Err(IpcError::NameInUse { .. }) => return false,
                Err(e) => panic!("{e}"),
            };
            if c.resumed_from().is_none() {
                // Joined after the reclaim, at the present.
                assert_eq!(c.next_sequence(), 2, "a fresh join behind the cursor");
                return false;
            }
            assert_eq!(
                c.next_sequence(),
                1,
                "resumed away from the orphan's commit"
            );
            while c.next_sequence() < 2 {
                c.poll(1, |e, seq, _| {
                    e.verify();
                    assert_eq!(seq, 1);
                    h.store(2, Ordering::SeqCst);
                })
                .unwrap();
                thread::yield_now();
            }
            true
        });
        let mut expected = 0u64;
        while expected < 2 {
            let polled = down.poll(2, |e, seq, _| {
                e.verify();
                assert_eq!(seq as u64, expected, "gap or repeat");
                let done = handled.load(Ordering::SeqCst);
                assert!(
                    (seq as u64) < done || bus.metrics().reclaimed > 0,
                    "read {seq} before s handled it ({done}), s not reclaimed"
                );
                expected += 1;
            });
            match polled {
                Ok(_) => thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        stage.join().unwrap();
        let resumed = joiner.join().unwrap();
        let reclaimed = bus.metrics().reclaimed > 0;
        assert!(!(resumed && reclaimed), "resumed and reclaimed");
        if resumed {
            RESUMED.hit();
        }
        if reclaimed {
            RECLAIMED.hit();
        }
        drop(p);
    });
    RESUMED.assert_reached("a joiner resumed the orphan, and d followed it");
    RECLAIMED.assert_reached("d reclaimed the orphan");
}

/// Model 8: "d" comes after "s", which fails (orphans its entry) before
/// anything is published, while a producer publishes one event. "d" polls
/// from the start: held with nothing published it must not reclaim
/// (nothing to read), and once the event is there (its look at the cursor
/// is Relaxed, so it may see it late) it reclaims the orphan and reads it.
/// Forbidden: "d" never reading the event (loom reports the spin), or
/// reading it while "s" was not reclaimed.
#[test]
fn ipc_a_consumer_after_an_orphan_reclaims_it_once_an_event_waits() {
    loom::model(|| {
        let bus = Options::new(2).consumers(2).model::<Pe>(1);
        let s = bus.as_process(2).consumer("s").unwrap();
        let mut d = bus.as_process(4).consumer_after("d", &["s"]).unwrap();
        let mut p = bus.producer().unwrap();
        s.orphan();
        let producer = thread::spawn(move || {
            p.publish(|e| e.set(1)).unwrap();
            p
        });
        let mut read = 0;
        while read == 0 {
            read = d
                .poll(1, |e, seq, _| {
                    e.verify();
                    assert_eq!(seq, 0);
                })
                .unwrap();
            if read == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(bus.metrics().reclaimed, 1, "read past a live orphan");
        drop(producer.join().unwrap());
    });
}

/// Model 9: a slot's claim two laps apart. Producer `b` filled a ring of 2
/// (sequences 0 and 1); then `a` publishes one event while `b` publishes
/// two, with no consumer. When `a` claims 2 and has not marked it yet,
/// `b`'s claim of 4 (the same slot) finds the slot's mark two rounds
/// behind and releases `a`'s claim (under loom at once, as if a hole
/// timeout had passed). Forbidden: both writing the slot (loom's cell
/// check), `b` refused, or a wedge (loom's deadlock). (No consumer: one
/// would gate, and `b` would never find the slot two rounds behind.)
#[test]
fn ipc_a_claim_left_unmarked_a_lap_behind_is_skipped_never_overwritten() {
    static SKIPPED: Reached = Reached::new();
    loom::model(|| {
        let bus = two_producer_ring_of_2();
        let mut b = bus.as_process(3).producer().unwrap();
        b.publish(|e| e.set(10)).unwrap();
        b.publish(|e| e.set(11)).unwrap();
        let mut a = bus.as_process(2).producer().unwrap();
        let a_t = thread::spawn(move || {
            a.publish(|e| {
                e.set(100);
                thread::yield_now();
                e.set(100);
            })
        });
        let b_t = thread::spawn(move || [b.publish(|e| e.set(12)), b.publish(|e| e.set(13))]);
        let a_outcome = a_t.join().unwrap();
        for o in b_t.join().unwrap() {
            assert!(o.is_ok(), "b refused: {o:?}");
        }
        match a_outcome {
            Ok(_) => {}
            Err(IpcPublishError::GivenUp { sequence, .. }) => {
                assert_eq!(sequence, 2, "a released claim other than the skipped one");
                SKIPPED.hit();
            }
            Err(e) => panic!("{e}"),
        }
        assert_eq!(bus.metrics().cursor, 5);
    });
    SKIPPED.assert_reached("a claim left unmarked a lap behind was skipped");
}

/// Model 10: two consumers join under one name at once. Forbidden: both
/// get it, or neither (each seeing the other and giving way, as before the
/// join tickets).
#[test]
fn ipc_of_two_joins_under_one_name_exactly_one_wins() {
    loom::model(|| {
        let bus = Options::new(2).consumers(2).model::<Pe>(1);
        let a = bus.as_process(2);
        let b = bus.as_process(3);
        // Each keeps what it got until both are done.
        let ta = thread::spawn(move || a.consumer("m"));
        let tb = thread::spawn(move || b.consumer("m"));
        let results = [ta.join().unwrap(), tb.join().unwrap()];
        let won = results.iter().filter(|r| r.is_ok()).count();
        let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(won, 1, "{errors:?}");
        assert!(errors
            .iter()
            .all(|e| matches!(e, IpcError::NameInUse { .. })));
    });
}

/// Model 11: a `Blocking` consumer that comes after another goes to sleep
/// while its upstream (also `Blocking`) commits the one event published.
/// No publish follows to wake it. Forbidden: the downstream asleep through
/// the commit it waits for (loom reports it as a deadlock), or woken only
/// by a later publish.
#[test]
fn ipc_a_blocking_consumer_after_another_is_woken_by_its_commit() {
    loom::model(|| {
        let bus = Options::new(2)
            .consumers(2)
            .model::<Pe>(1)
            .with_wait(Wait::Blocking);
        let mut up = bus.consumer("up").unwrap();
        let mut down = bus.consumer_after("down", &["up"]).unwrap();
        let mut p = bus.producer().unwrap();
        p.publish(|e| e.set(1)).unwrap();
        let t = thread::spawn(move || {
            let mut got = 0;
            while got == 0 {
                got = up.poll_wait(1, |e, _, _| e.verify()).unwrap();
            }
            up
        });
        let mut got = 0;
        while got == 0 {
            got = down
                .poll_wait(1, |e, _, _| {
                    e.verify();
                    assert_eq!(e.value, 1);
                })
                .unwrap();
        }
        drop(t.join().unwrap());
        drop(p);
    });
}

/// Model 12: a `Blocking` consumer after "up", started before any "up"
/// exists, waits where it joined; an event is published, then "up" joins
/// (at the cursor, past the event) while the downstream goes to sleep.
/// Forbidden: the downstream asleep through the join that lets it read
/// the event (a loom deadlock).
#[test]
fn ipc_a_blocking_consumer_after_another_is_woken_by_its_join() {
    loom::model(|| {
        let bus = Options::new(2)
            .consumers(2)
            .model::<Pe>(1)
            .with_wait(Wait::Blocking);
        let mut down = bus.consumer_after("down", &["up"]).unwrap();
        let mut p = bus.producer().unwrap();
        p.publish(|e| e.set(1)).unwrap();
        let joiner = bus.as_process(2);
        let t = thread::spawn(move || joiner.consumer("up").unwrap());
        let mut got = 0;
        while got == 0 {
            got = down.poll_wait(1, |e, _, _| assert_eq!(e.value, 1)).unwrap();
        }
        drop(t.join().unwrap());
        drop(p);
    });
}

/// Model 13: a producer process dies with its slot marked as being
/// written; a new process takes its place (releasing the marks the dead
/// one left) while a consumer, its hole timeout passed, gives the slot up.
/// Forbidden: the slot left given up under the place (the next lap's
/// publish there then never marks it: `Full` for ever; the knob
/// `ipc_replace`), an event lost or delivered twice.
#[test]
fn ipc_a_replaced_dead_writer_and_a_give_up_leave_the_slot_reusable() {
    loom::model(|| {
        let bus = Options::new(2)
            .multi_producer()
            .producers(1)
            .consumers(1)
            .model::<Pe>(1);
        let mut consumer = bus.consumer("c").unwrap();
        bus.as_process(2).producer().unwrap().die_writing();
        bus.kill(2);
        let replacing = bus.as_process(3);
        let replacer = thread::spawn(move || replacing.producer().unwrap());
        // Every timeout has passed: the consumer gives the dead claim up
        // (with the new owner in its place, or the dead one).
        let giving_up = thread::spawn(move || {
            let passed = consumer.poll(4, |_, _, _| panic!("nothing was published"));
            assert_eq!(passed, Ok(0));
            consumer
        });
        let mut p = replacer.join().unwrap();
        let mut consumer = giving_up.join().unwrap();
        let mut seen = vec![];
        let mut read = |c: &mut ringbus::ipc::IpcConsumer<Pe>| {
            c.poll(4, |e, seq, _| {
                e.verify();
                seen.push((seq, e.value));
            })
            .unwrap()
        };
        read(&mut consumer);
        assert_eq!(p.try_publish(|e| e.set(1)), Ok(1));
        read(&mut consumer);
        // Sequence 2 is slot 0 again, the dead writer's.
        assert_eq!(
            p.try_publish(|e| e.set(2)),
            Ok(2),
            "the dead writer's slot is refused to the next lap"
        );
        read(&mut consumer);
        assert_eq!(seen, [(1, 1), (2, 2)], "lost or twice");
        bus.close();
        drop(p);
    });
}

/// Model 14: two consumers join at once, each after the other (a cycle:
/// each would wait for the other for ever). Forbidden: both joined. (Both
/// refused is allowed: each may see the other's list.)
#[test]
fn ipc_of_two_consumers_joining_each_after_the_other_one_is_refused() {
    loom::model(|| {
        let bus = Options::new(2).consumers(2).model::<Pe>(1);
        let a = bus.as_process(2);
        let b = bus.as_process(3);
        let ta = thread::spawn(move || a.consumer_after("x", &["y"]));
        let tb = thread::spawn(move || b.consumer_after("y", &["x"]));
        let results = [ta.join().unwrap(), tb.join().unwrap()];
        assert!(
            results.iter().any(|r| r.is_err()),
            "both joined, each after the other"
        );
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, IpcError::Config { .. }), "{e}");
            }
        }
    });
}
