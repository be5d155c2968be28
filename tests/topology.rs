//! Every event reaches every stage once, in order, fully written, for the
//! shapes users build: SPSC, fan-out, multi-producer, pipeline, diamond,
//! branch that rejoins, and a mutating stage seen downstream.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use ringbus::{Sequence, Yielding};

fn expect(stats: &Arc<Mutex<Stats>>, count: u64, sum: u64) {
    let s = stats.lock().unwrap().clone();
    assert!(
        s.started && s.shut_down,
        "lifecycle callbacks not run: {s:?}"
    );
    assert_eq!(s.count, count, "events lost or duplicated");
    assert_eq!(s.sum, sum, "wrong payloads");
}

fn seq_sum(n: u64) -> u64 {
    n * (n - 1) / 2
}

#[test]
fn spsc_delivers_every_event_once_in_order() {
    bounded(60, || {
        let (v, stats) = Verifier::new(true);
        let mut p = ringbus::single_producer(256, Event::default, Yielding::default())
            .handle_events_with(v)
            .build();
        for i in 0..N {
            p.publish(|e| e.set(i)).unwrap();
        }
        let report = p.shutdown().unwrap();
        assert_eq!(report.stages[0].processed, N);
        expect(&stats, N, seq_sum(N));
    });
}

#[test]
fn one_producer_three_parallel_stages() {
    bounded(60, || {
        let (a, sa) = Verifier::new(true);
        let (b, sb) = Verifier::new(true);
        let (c, sc) = Verifier::new(true);
        let mut p = ringbus::single_producer(128, Event::default, Yielding::default())
            .handle_events_with(a)
            .handle_events_with(b)
            .handle_events_with(c)
            .build();
        for i in 0..N {
            p.publish(|e| e.set(i)).unwrap();
        }
        drop(p);
        for s in [sa, sb, sc] {
            expect(&s, N, seq_sum(N));
        }
    });
}

fn multi_producer_run(producers: u64, stages: usize, batch: usize) {
    let per = N / producers;
    let mut builder = ringbus::multi_producer(64, Event::default, Yielding::default());
    let mut outs = Vec::new();
    for _ in 0..stages {
        let (v, s) = Verifier::new(false);
        builder = builder.handle_events_with(v);
        outs.push(s);
    }
    let producer = builder.build();
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let producer = producer.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while i < per {
                    if batch == 1 {
                        producer.publish(|e| e.set(value(p, i))).unwrap();
                        i += 1;
                    } else {
                        let n = batch.min((per - i) as usize);
                        producer
                            .batch_publish(n, |slots| {
                                for e in slots {
                                    e.set(value(p, i));
                                    i += 1;
                                }
                            })
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let report = producer.shutdown().unwrap();
    let sum = (0..producers).fold(0u64, |s, p| s.wrapping_add(producer_sum(p, per)));
    for (out, stage) in outs.iter().zip(&report.stages) {
        expect(out, per * producers, sum);
        assert_eq!(stage.processed, per * producers);
    }
}

#[test]
fn two_producers_one_stage_keep_each_producers_order() {
    bounded(60, || multi_producer_run(2, 1, 1));
}

#[test]
fn three_producers_two_stages_keep_each_producers_order() {
    bounded(60, || multi_producer_run(3, 2, 1));
}

#[test]
fn four_producers_batches_two_stages() {
    bounded(60, || multi_producer_run(4, 2, 7));
}

#[test]
fn two_producers_batches_one_stage() {
    bounded(60, || multi_producer_run(2, 1, 16));
}

#[test]
fn pipeline_of_three() {
    bounded(60, || {
        let (a, sa) = Verifier::new(true);
        let (b, sb) = Verifier::new(true);
        let (c, sc) = Verifier::new(true);
        let mut p = ringbus::single_producer(64, Event::default, Yielding::default())
            .handle_events_with(a)
            .and_then()
            .handle_events_with(b)
            .and_then()
            .handle_events_with(c)
            .build();
        for i in 0..N {
            p.publish(|e| e.set(i)).unwrap();
        }
        p.shutdown().unwrap();
        for s in [sa, sb, sc] {
            expect(&s, N, seq_sum(N));
        }
    });
}

#[test]
fn diamond_waits_for_both_branches() {
    bounded(60, || {
        let progress: Arc<Vec<_>> = Arc::new(
            (0..3)
                .map(|_| std::sync::atomic::AtomicI64::new(-1))
                .collect(),
        );
        let (v, s) = Verifier::new(true);
        let mut p = ringbus::single_producer(32, Event::default, Yielding::default())
            .handle_events_with(ordered_stage(0, vec![], progress.clone()))
            .handle_events_with(ordered_stage(1, vec![], progress.clone()))
            .and_then()
            .handle_events_with(ordered_stage(2, vec![0, 1], progress.clone()))
            .handle_events_with(v)
            .build();
        for i in 0..N {
            p.publish(|e| e.set(i)).unwrap();
        }
        p.shutdown().unwrap();
        expect(&s, N, seq_sum(N));
        for stage in progress.iter() {
            assert_eq!(
                stage.load(std::sync::atomic::Ordering::Relaxed),
                N as i64 - 1
            );
        }
    });
}

#[test]
fn branch_that_rejoins() {
    // a -> b -> d, a -> c -> d, and e straight off the ring joining d too.
    bounded(60, || {
        let progress: Arc<Vec<_>> = Arc::new(
            (0..5)
                .map(|_| std::sync::atomic::AtomicI64::new(-1))
                .collect(),
        );
        let builder = ringbus::single_producer(16, Event::default, Yielding::default())
            .handle_events_with(ordered_stage(0, vec![], progress.clone()));
        let a = builder.last_stage().unwrap();
        let builder =
            builder
                .and_then()
                .handle_events_with(ordered_stage(1, vec![0], progress.clone()));
        let b = builder.last_stage().unwrap();
        let builder = builder
            .after(&[a])
            .thread_name("branch-c")
            .handle_events_with(ordered_stage(2, vec![0], progress.clone()));
        let c = builder.last_stage().unwrap();
        let builder =
            builder
                .after(&[])
                .handle_events_with(ordered_stage(3, vec![], progress.clone()));
        let e = builder.last_stage().unwrap();
        let mut p = builder
            .after(&[b, c, e])
            .handle_events_with(ordered_stage(4, vec![1, 2, 3], progress.clone()))
            .build();
        for i in 0..N {
            p.publish(|e| e.set(i)).unwrap();
        }
        let report = p.shutdown().unwrap();
        assert_eq!(report.stages[2].name, "branch-c");
        assert!(report.stages.iter().all(|s| s.processed == N));
    });
}

#[test]
fn mutating_stage_writes_are_seen_downstream() {
    bounded(60, || {
        let (v1, s1) = Verifier::new(true);
        let (v2, s2) = Verifier::new(true);
        let mut p = ringbus::single_producer(64, Event::default, Yielding::default())
            .handle_events_with(|e: &mut Event, seq: Sequence, _eob: bool| {
                e.verify();
                assert_eq!(e.enriched, 0, "event {seq} was not reset by its producer");
                e.enriched = mix(e.value) ^ 1;
            })
            .and_then()
            .handle_events_with(v1.enriched())
            .handle_events_with(v2.enriched())
            .build();
        for i in 0..N {
            p.publish(|e| e.set(i)).unwrap();
        }
        p.shutdown().unwrap();
        expect(&s1, N, seq_sum(N));
        expect(&s2, N, seq_sum(N));
    });
}

#[test]
fn handler_made_on_its_own_thread_may_be_not_send() {
    use std::rc::Rc;
    bounded(60, || {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut p = ringbus::single_producer(8, Event::default, Yielding::default())
            .handle_events_with(ringbus::factory(move || {
                // Rc is !Send: it can only exist because the handler is made
                // on the stage's thread.
                let count = Rc::new(std::cell::Cell::new(0u64));
                let tx = tx.clone();
                move |_e: &Event, _s: Sequence, eob: bool| {
                    count.set(count.get() + 1);
                    if eob {
                        let _ = tx.send(count.get());
                    }
                }
            }))
            .build();
        // (23 s under Miri at 1,000.)
        let n = if cfg!(miri) { 100 } else { 1000 };
        for i in 0..n {
            p.publish(|e| e.set(i)).unwrap();
        }
        p.shutdown().unwrap();
        assert_eq!(rx.try_iter().last(), Some(n));
    });
}
