//! Tiny rings wrapped many thousands of times: no slot is overwritten before
//! every gating stage passed it, and none is read before it is written.

mod common;

use common::*;
use ringbus::Yielding;

const EVENTS: u64 = if cfg!(miri) { 200 } else { 50_000 };

fn single(capacity: usize) {
    let (a, sa) = Verifier::new(true);
    let (b, sb) = Verifier::new(true);
    let mut p = ringbus::single_producer(capacity, Event::default, Yielding::default())
        .handle_events_with(a)
        .and_then()
        .handle_events_with(b)
        .build();
    for i in 0..EVENTS {
        p.publish(|e| e.set(i)).unwrap();
    }
    p.shutdown().unwrap();
    for s in [sa, sb] {
        assert_eq!(s.lock().unwrap().count, EVENTS);
    }
}

fn multi(capacity: usize) {
    let (a, sa) = Verifier::new(false);
    let p = ringbus::multi_producer(capacity, Event::default, Yielding::default())
        .handle_events_with(a)
        .build();
    let q = p.clone();
    let per = EVENTS / 2;
    let t = std::thread::spawn(move || {
        for i in 0..per {
            q.publish(|e| e.set(value(1, i))).unwrap();
        }
    });
    let batches = capacity >= 2;
    let mut i = 0;
    while i < per {
        // Every third step publishes two events as one batch.
        if batches && i % 3 == 0 && i + 1 < per {
            p.batch_publish(2, |mut slots| {
                slots.next().unwrap().set(value(0, i));
                slots.next().unwrap().set(value(0, i + 1));
            })
            .unwrap();
            i += 2;
        } else {
            p.publish(|e| e.set(value(0, i))).unwrap();
            i += 1;
        }
    }
    t.join().unwrap();
    p.shutdown().unwrap();
    let s = sa.lock().unwrap();
    assert_eq!(s.count, 2 * per);
    assert_eq!(
        s.sum,
        producer_sum(0, per).wrapping_add(producer_sum(1, per))
    );
}

#[test]
fn capacity_1_single_producer() {
    bounded(120, || single(1));
}

#[test]
fn capacity_2_single_producer() {
    bounded(120, || single(2));
}

#[test]
fn capacity_4_single_producer() {
    bounded(120, || single(4));
}

#[test]
fn capacity_1_multi_producer() {
    bounded(120, || multi(1));
}

#[test]
fn capacity_2_multi_producer_with_batches() {
    bounded(120, || multi(2));
}

#[test]
fn capacity_4_multi_producer_with_batches() {
    bounded(120, || multi(4));
}
