//! A subscription (`subscribe_with`) at the end of a bus's life: what it
//! is owed after the close, and a shutdown from its own handler.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringbus::{Blocking, MultiProducer, Sequence, ShutdownError};

/// Polls `cond` every millisecond; panics after 10 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for: {what}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

fn claimed(p: &MultiProducer<u64, Blocking>) -> Sequence {
    p.metrics().snapshot().cursor
}

/// `Subscription` docs: once the bus is closed, dropping or
/// unsubscribing "first hands the handler every event left, so the handler
/// given back has seen them all (but for a publish on another clone that
/// claimed before the close and waits for room ...)". The code comment in
/// `subscribe_with` adds: "A claim with room is only slow: waited for."
///
/// Here event 3 has room (the ring of 4 holds 0..=3 past the unpolled
/// poller at -1) and is only slow to write; event 4, claimed after it,
/// waits for room. The stopping subscription used to look at the room of
/// the *last* claim (4), not of the one it waits for (3), and gave up
/// after one 10 ms poll: its handler never saw event 3, which its
/// producer then published and got `Ok(3)` for.
#[test]
fn subscription_stopped_after_close_gets_a_slow_publish_with_room_when_a_later_claim_waits() {
    let p = ringbus::multi_producer(4, || u64::MAX, Blocking).build();
    let held = p.subscribe().unwrap(); // never polled: holds the ring at -1
    let seen = Arc::new(Mutex::new(Vec::<(Sequence, u64)>::new()));
    let s = Arc::clone(&seen);
    let subscription = p
        .subscribe_with(move |e: &u64, seq: Sequence, _: bool| s.lock().unwrap().push((seq, *e)))
        .unwrap();
    for i in 0..3 {
        p.publish(|e| *e = i).unwrap();
    }
    // Event 3: room (3 <= -1 + 4), only slow to write.
    let slow = p.clone();
    let writing = thread::spawn(move || {
        slow.publish(|e| {
            thread::sleep(Duration::from_millis(800));
            *e = 3;
        })
    });
    wait_until("event 3 claimed", || claimed(&p) >= 3);
    // Event 4: no room while `held` sits at -1.
    let other = p.clone();
    let stuck = thread::spawn(move || other.publish(|e| *e = 4));
    wait_until("event 4 claimed", || claimed(&p) >= 4);

    p.shutdown().unwrap(); // closes the bus; no stage to wait for
    let stopping = Instant::now();
    drop(subscription); // after the close: must hand over event 3 (it has room)
    let stop_took = stopping.elapsed();
    drop(held); // now event 4 gets its room

    assert_eq!(writing.join().unwrap(), Ok(3), "event 3 was acknowledged");
    assert_eq!(stuck.join().unwrap(), Ok(4));
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains(&(3, 3)),
        "the subscription stopped after the close never saw event 3, a publish \
         claimed before the close that had room (only slow): saw {seen:?}, \
         its stop took {stop_took:?}"
    );
}

/// `shutdown()` called from a `Subscription`'s handler while
/// another clone's `publish` has claimed a slot and waits for room that this
/// very subscription holds (it commits its batch only when the handler
/// returns): the close puts that claim below `closed_at`, `join` waits for
/// the stage, the stage waits for the claim, the claim waits for the
/// subscription, and the subscription waits in `join`: a permanent
/// deadlock (before subscription threads were known as the bus's own).
/// As from a stage's handler, the call answers
/// `ShutdownError::OnStageThread` at once and the bus is closed.
#[test]
fn shutdown_from_a_subscription_handler_does_not_hang() {
    let p = ringbus::multi_producer(4, || 0u64, Blocking)
        .handle_events_with(|_: &u64, _: Sequence, _: bool| {})
        .build();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<bool>();
    let mut closer = Some(p.clone());
    let subscription = p
        .subscribe_with(move |_: &u64, seq: Sequence, _: bool| {
            if seq == 0 {
                let _ = go_rx.recv_timeout(Duration::from_secs(10));
                if let Some(closer) = closer.take() {
                    let on_its_thread =
                        matches!(closer.shutdown(), Err(ShutdownError::OnStageThread));
                    let _ = done_tx.send(on_its_thread);
                }
            }
        })
        .unwrap();
    // 0..=3 fill the ring behind the subscription (at -1 while in its handler).
    for i in 0..4 {
        p.publish(|e| *e = i).unwrap();
    }
    let other = p.clone();
    let stuck = thread::spawn(move || other.publish(|e| *e = 4)); // claims 4, waits
    wait_until("event 4 claimed", || claimed(&p) >= 4);
    go_tx.send(()).unwrap();

    let returned = done_rx.recv_timeout(Duration::from_secs(5));
    if returned.is_err() {
        // Leak what would block on the deadlock (the subscription's drop
        // joins its thread), then fail.
        std::mem::forget(subscription);
        std::mem::forget(p);
        std::mem::forget(stuck);
        panic!(
            "shutdown() called in a subscription's handler did not return within 5 s: \
             deadlocked with a claim waiting for room the subscription holds"
        );
    }
    assert_eq!(returned, Ok(true), "shutdown in a subscription's handler");
    assert!(p.try_publish(|e| *e = 5).is_err(), "the bus is closed");
    drop(subscription);
    assert_eq!(stuck.join().unwrap(), Ok(4), "claimed before the close");
    p.shutdown().unwrap();
}

/// A multi producer's batch claimed before the close whose first slot has
/// room and whose last has none (held by a poller the stopping thread
/// owns and does not poll): the subscription stopped after the close must
/// not wait for the batch's first event (its producer waits for the last
/// slot's room, which only the stopping thread could give). It stops, and
/// the batch is published once that poller goes.
#[test]
fn a_subscription_stopped_after_the_close_does_not_wait_for_a_batch_without_room() {
    let p = ringbus::multi_producer(4, || u64::MAX, Blocking).build();
    let held = p.subscribe().unwrap(); // never polled: holds the ring at -1
    let seen = Arc::new(Mutex::new(Vec::<Sequence>::new()));
    let s = Arc::clone(&seen);
    let subscription = p
        .subscribe_with(move |_: &u64, seq: Sequence, _: bool| s.lock().unwrap().push(seq))
        .unwrap();
    for i in 0..3 {
        p.publish(|e| *e = i).unwrap();
    }
    // 3 has room, 4 has none while `held` sits at -1.
    let other = p.clone();
    let batch = thread::spawn(move || {
        other.batch_publish(2, |slots| {
            for (i, e) in slots.enumerate() {
                *e = 3 + i as u64;
            }
        })
    });
    wait_until("3 and 4 claimed", || claimed(&p) >= 4);
    p.shutdown().unwrap(); // no stage to wait for
    let (stopped_tx, stopped) = mpsc::channel();
    let stopper = thread::spawn(move || {
        drop(subscription);
        stopped_tx.send(()).unwrap();
    });
    if stopped.recv_timeout(Duration::from_secs(5)).is_err() {
        drop(held); // frees the batch, then the subscription, then fail
        stopper.join().unwrap();
        panic!("a subscription stopped after the close waited for a batch without room");
    }
    stopper.join().unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2]);
    drop(held);
    assert_eq!(batch.join().unwrap(), Ok(4), "claimed before the close");
}
