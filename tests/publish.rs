//! The producer API's answers: full rings, oversized batches, batch contents.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::*;
use ringbus::{Blocking, PublishError, Sequence, TryPublishError, Yielding};

/// A stage that blocks until the test lets it go, so the ring stays full.

#[test]
fn try_publish_reports_full_without_waiting() {
    bounded(30, || {
        let (open, gate) = mpsc::channel();
        let mut p = ringbus::single_producer(4, Event::default, Blocking)
            .handle_events_with(gated_stage(gate))
            .build();
        // The stage holds event 0 until released; 4 fit the ring.
        for i in 0..4 {
            assert_eq!(p.try_publish(|e| e.set(i)), Ok(i as Sequence));
        }
        assert_eq!(
            p.try_publish(|_| panic!("must not be called when full")),
            Err(TryPublishError::Full { missing: 1 })
        );
        assert_eq!(
            p.try_batch_publish(3, |_| panic!("must not be called when full")),
            Err(TryPublishError::Full { missing: 3 })
        );
        assert_eq!(p.remaining_capacity(), 0);
        assert_eq!(
            p.publish_timeout(Duration::from_millis(10), |_| unreachable!()),
            Err(TryPublishError::Timeout)
        );
        for _ in 0..4 {
            open.send(()).unwrap();
        }
        drop(open);
        p.publish(|e| e.set(4)).unwrap();
        p.shutdown().unwrap();
    });
}

#[test]
fn multi_producer_try_publish_reports_full_and_claims_nothing() {
    bounded(30, || {
        let (open, gate) = mpsc::channel();
        let (v, s) = Verifier::new(true);
        let p = ringbus::multi_producer(2, Event::default, Blocking)
            .handle_events_with(gated_stage(gate))
            .and_then()
            .handle_events_with(v)
            .build();
        p.try_publish(|e| e.set(0)).unwrap();
        p.try_publish(|e| e.set(1)).unwrap();
        assert_eq!(
            p.try_publish(|_| unreachable!()),
            Err(TryPublishError::Full { missing: 1 })
        );
        assert_eq!(
            p.try_batch_publish(2, |_| unreachable!()),
            Err(TryPublishError::Full { missing: 2 })
        );
        assert_eq!(
            p.publish_timeout(Duration::from_millis(5), |_| unreachable!()),
            Err(TryPublishError::Timeout)
        );
        // Failed tries reserved nothing: the next sequence is 2.
        assert_eq!(p.cursor(), 1);
        drop(open);
        assert_eq!(p.publish(|e| e.set(2)), Ok(2));
        p.shutdown().unwrap();
        assert_eq!(s.lock().unwrap().count, 3);
    });
}

#[test]
fn batch_larger_than_ring_is_an_error_not_a_hang() {
    let mut p = ringbus::single_producer(8, Event::default, Yielding::default())
        .handle_events_with(|_e: &Event, _s: Sequence, _b: bool| {})
        .build();
    let err = p.batch_publish(9, |_| unreachable!()).unwrap_err();
    assert_eq!(
        err,
        PublishError::BatchTooLarge {
            requested: 9,
            capacity: 8
        }
    );
    assert!(err.to_string().contains("at most 8"), "{err}");
    assert!(matches!(
        p.try_batch_publish(100, |_| unreachable!()),
        Err(TryPublishError::BatchTooLarge { .. })
    ));
    let m = ringbus::multi_producer(8, Event::default, Yielding::default())
        .handle_events_with(|_e: &Event, _s: Sequence, _b: bool| {})
        .build();
    assert!(matches!(
        m.batch_publish(9, |_| unreachable!()),
        Err(PublishError::BatchTooLarge { .. })
    ));
    // A full-ring batch is fine.
    assert_eq!(p.batch_publish(8, |s| s.for_each(|e| e.set(0))), Ok(7));
    assert_eq!(p.batch_publish(0, |_| unreachable!()), Ok(7));
    // An empty batch gets the answer a claim would on a halted or closed
    // bus, from both kinds of producer (the multi producer said Ok).
    p.halt();
    assert_eq!(p.batch_publish(0, |_| {}), Err(PublishError::Halted));
    let n = m.clone();
    m.halt();
    assert_eq!(n.batch_publish(0, |_| {}), Err(PublishError::Halted));
    let m = ringbus::multi_producer(8, Event::default, Yielding::default())
        .handle_events_with(|_e: &Event, _s: Sequence, _b: bool| {})
        .build();
    let n = m.clone();
    m.shutdown().unwrap();
    assert_eq!(n.batch_publish(0, |_| {}), Err(PublishError::Closed));
    assert_eq!(n.try_batch_publish(0, |_| {}), Err(TryPublishError::Closed));
}

#[test]
fn batch_slots_are_in_sequence_order_and_all_delivered() {
    bounded(30, || {
        let (v, s) = Verifier::new(true);
        let mut p = ringbus::single_producer(16, Event::default, Yielding::default())
            .handle_events_with(v)
            .build();
        let mut next = 0u64;
        for n in [1usize, 5, 16, 3, 16, 7] {
            let last = p
                .batch_publish(n, |slots| {
                    assert_eq!(slots.len(), n);
                    assert_eq!(slots.next_sequence(), next as Sequence);
                    for e in slots {
                        e.set(next);
                        next += 1;
                    }
                })
                .unwrap();
            assert_eq!(last, next as Sequence - 1);
        }
        p.shutdown().unwrap();
        assert_eq!(s.lock().unwrap().count, next);
    });
}

#[test]
fn producer_without_stages_never_blocks() {
    let mut p = ringbus::single_producer(2, Event::default, Blocking).build();
    for i in 0..10 {
        p.try_publish(|e| e.set(i)).unwrap();
    }
    assert_eq!(p.cursor(), 9);
    assert!(p.shutdown().unwrap().stages.is_empty());
}

#[test]
fn multi_producer_handles_are_send_sync_and_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<ringbus::MultiProducer<Event, Blocking>>();
    fn assert_send<T: Send>() {}
    assert_send::<ringbus::SingleProducer<Event, Blocking>>();
}
