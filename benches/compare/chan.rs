//! The scenarios on crossbeam-channel (and std::sync::mpsc for SPSC): one
//! bounded channel per edge of the graph, one thread per stage.

use std::thread;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::common::*;

const MODE: &str = "blocking (spin, then park)";

/// A stage thread: sums what it receives, forwards it, stores the sum.
fn stage(
    rx: Receiver<Ev>,
    tx: Vec<Sender<Ev>>,
    check: Check,
    core: Option<usize>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        pin(core);
        let mut sum = 0u64;
        for e in rx {
            sum = sum.wrapping_add(e.value);
            for t in &tx {
                t.send(e).unwrap();
            }
        }
        check.store(sum);
    })
}

fn sample(events: u64, elapsed: std::time::Duration) -> Sample {
    Sample::throughput(events, elapsed, MODE)
}

pub fn run(sc: Scenario, cfg: &Config, pins: Option<(usize, usize)>) -> Sample {
    let n = cfg.events;
    let cap = cfg.capacity;
    match sc {
        Scenario::Spsc | Scenario::Batch64 => {
            let (tx, rx) = bounded(cap);
            let check = Check::new();
            let consumer = stage(rx, vec![], check.clone(), pins.map(|p| p.1));
            let elapsed = timed_on(pins.map(|p| p.0), move || {
                for i in 0..n {
                    tx.send(Ev { value: i, stamp: 0 }).unwrap();
                }
                drop(tx);
                consumer.join().unwrap();
            });
            check.expect("crossbeam consumer", sum_to(n));
            let mut s = sample(n, elapsed);
            if sc == Scenario::Batch64 {
                s.mode = "per-event send (no batch API)";
            }
            s
        }
        Scenario::Mp2 | Scenario::Mp3 => {
            let producers = if sc == Scenario::Mp2 { 2 } else { 3 };
            let per = n / producers;
            let (tx, rx) = bounded(cap);
            let check = Check::new();
            let consumer = stage(rx, vec![], check.clone(), None);
            let elapsed = timed_on(None, move || {
                let threads: Vec<_> = (0..producers)
                    .map(|_| {
                        let tx = tx.clone();
                        thread::spawn(move || {
                            for i in 0..per {
                                tx.send(Ev { value: i, stamp: 0 }).unwrap();
                            }
                        })
                    })
                    .collect();
                drop(tx);
                for t in threads {
                    t.join().unwrap();
                }
                consumer.join().unwrap();
            });
            check.expect("crossbeam consumer", producers * sum_to(per));
            sample(per * producers, elapsed)
        }
        Scenario::Pipeline | Scenario::Multicast | Scenario::Diamond => {
            let checks: Vec<Check> = (0..3).map(|_| Check::new()).collect();
            let (heads, threads) = match sc {
                Scenario::Pipeline => {
                    let (t0, r0) = bounded(cap);
                    let (t1, r1) = bounded(cap);
                    let (t2, r2) = bounded(cap);
                    let threads = vec![
                        stage(r0, vec![t1], checks[0].clone(), None),
                        stage(r1, vec![t2], checks[1].clone(), None),
                        stage(r2, vec![], checks[2].clone(), None),
                    ];
                    (vec![t0], threads)
                }
                Scenario::Multicast => {
                    let mut heads = Vec::new();
                    let mut threads = Vec::new();
                    for check in &checks {
                        let (t, r) = bounded(cap);
                        heads.push(t);
                        threads.push(stage(r, vec![], check.clone(), None));
                    }
                    (heads, threads)
                }
                _ => {
                    // A and B forward to C, which joins the two streams.
                    let (ta, ra) = bounded(cap);
                    let (tb, rb) = bounded(cap);
                    let (tac, rac) = bounded::<Ev>(cap);
                    let (tbc, rbc) = bounded::<Ev>(cap);
                    let check_c = checks[2].clone();
                    let join = thread::spawn(move || {
                        let mut sum = 0u64;
                        for a in rac {
                            let b: Ev = rbc.recv().unwrap();
                            assert_eq!(a.value, b.value, "WRONG RESULT: diamond join out of step");
                            sum = sum.wrapping_add(a.value);
                        }
                        check_c.store(sum);
                    });
                    let threads = vec![
                        stage(ra, vec![tac], checks[0].clone(), None),
                        stage(rb, vec![tbc], checks[1].clone(), None),
                        join,
                    ];
                    (vec![ta, tb], threads)
                }
            };
            let elapsed = timed_on(None, move || {
                for i in 0..n {
                    for h in &heads {
                        h.send(Ev { value: i, stamp: 0 }).unwrap();
                    }
                }
                drop(heads);
                for t in threads {
                    t.join().unwrap();
                }
            });
            for (k, c) in checks.iter().enumerate() {
                c.expect(&format!("crossbeam stage {k}"), sum_to(n));
            }
            sample(n, elapsed)
        }
        Scenario::Latency => latency(cfg, pins),
        Scenario::PingPong => ping_pong(cfg, pins),
        Scenario::PipelineOneThread | Scenario::DiamondOneThread => {
            unreachable!("channels have no shared-thread stages")
        }
        Scenario::FanOut => unreachable!("a channel hands each value to one receiver"),
    }
}

fn latency(cfg: &Config, pins: Option<(usize, usize)>) -> Sample {
    let n = cfg.latency_events;
    let interval = cfg.interval;
    let base = Instant::now();
    let (tx, rx) = bounded::<Ev>(cfg.capacity);
    let consumer_core = pins.map(|p| p.1);
    let consumer = thread::spawn(move || {
        pin(consumer_core);
        let mut hist = histogram();
        for e in rx {
            let _ = hist.record(now_ns(base).saturating_sub(e.stamp).max(1));
        }
        hist
    });
    let elapsed = timed_on(pins.map(|p| p.0), move || {
        let mut next = Instant::now();
        for i in 0..n {
            next += interval;
            spin_until(next);
            tx.send(Ev {
                value: i,
                stamp: now_ns(base),
            })
            .unwrap();
        }
    });
    let hist = consumer.join().unwrap();
    assert_eq!(
        hist.len(),
        n,
        "WRONG RESULT: crossbeam latency run lost events"
    );
    Sample {
        events: n,
        elapsed,
        latency: Some(hist),
        mode: MODE,
    }
}

fn ping_pong(cfg: &Config, pins: Option<(usize, usize)>) -> Sample {
    let rounds = cfg.latency_events;
    let base = Instant::now();
    let (ping_tx, ping_rx) = bounded::<Ev>(cfg.capacity);
    let (pong_tx, pong_rx) = bounded::<Ev>(cfg.capacity);
    let ponger_core = pins.map(|p| p.1);
    let ponger = thread::spawn(move || {
        pin(ponger_core);
        for e in ping_rx {
            pong_tx.send(e).unwrap();
        }
    });
    let pinger_core = pins.map(|p| p.0);
    let start = Instant::now();
    let hist = thread::spawn(move || {
        pin(pinger_core);
        let mut hist = histogram();
        for i in 0..rounds {
            ping_tx
                .send(Ev {
                    value: i,
                    stamp: now_ns(base),
                })
                .unwrap();
            let e = pong_rx.recv().unwrap();
            let _ = hist.record(now_ns(base).saturating_sub(e.stamp).max(1));
        }
        hist
    })
    .join()
    .unwrap();
    let elapsed = start.elapsed();
    ponger.join().unwrap();
    Sample {
        events: rounds,
        elapsed,
        latency: Some(hist),
        mode: MODE,
    }
}

/// `std::sync::mpsc::sync_channel`, SPSC only.
pub fn run_std(cfg: &Config, pins: Option<(usize, usize)>) -> Sample {
    let n = cfg.events;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Ev>(cfg.capacity);
    let check = Check::new();
    let out = check.clone();
    let consumer_core = pins.map(|p| p.1);
    let consumer = thread::spawn(move || {
        pin(consumer_core);
        let mut sum = 0u64;
        for e in rx {
            sum = sum.wrapping_add(e.value);
        }
        out.store(sum);
    });
    let elapsed = timed_on(pins.map(|p| p.0), move || {
        for i in 0..n {
            tx.send(Ev { value: i, stamp: 0 }).unwrap();
        }
        drop(tx);
        consumer.join().unwrap();
    });
    check.expect("std mpsc consumer", sum_to(n));
    Sample {
        events: n,
        elapsed,
        latency: None,
        mode: "blocking",
    }
}
