//! The fan-out row on `tokio::sync::broadcast`: two producer threads, three
//! receivers on threads of their own (`blocking_recv`). A broadcast channel
//! never makes a sender wait: full, it drops its oldest value, and a
//! receiver behind it gets `Lagged`. So the producers hold back (yielding)
//! while the slowest receiver has `capacity - 2` values queued
//! (`Sender::len`), which keeps every value for every receiver; a `Lagged`
//! fails the run.

use std::thread;

use tokio::sync::broadcast;

use crate::common::*;

const MODE: &str = "blocking_recv; producers yield while the slowest receiver is a ring behind";

pub fn run(sc: Scenario, cfg: &Config) -> Sample {
    assert_eq!(
        sc,
        Scenario::FanOut,
        "tokio broadcast runs the fan-out row only"
    );
    let per = cfg.events / 2;
    let cap = cfg.capacity;
    let (tx, _) = broadcast::channel::<Ev>(cap);
    let checks: Vec<Check> = (0..3).map(|_| Check::new()).collect();
    let receivers: Vec<_> = checks
        .iter()
        .map(|check| {
            let mut rx = tx.subscribe();
            let check = check.clone();
            thread::spawn(move || {
                let mut sum = 0u64;
                loop {
                    match rx.blocking_recv() {
                        Ok(e) => sum = sum.wrapping_add(e.value),
                        Err(broadcast::error::RecvError::Closed) => break,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            panic!("WRONG RESULT: a receiver lost {n} values")
                        }
                    }
                }
                check.store(sum);
            })
        })
        .collect();
    let elapsed = timed_on(None, move || {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let tx = tx.clone();
                thread::spawn(move || {
                    for i in 0..per {
                        // Room for both producers' next value.
                        while tx.len() + 2 > cap {
                            thread::yield_now();
                        }
                        tx.send(Ev { value: i, stamp: 0 }).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        for t in threads {
            t.join().unwrap();
        }
        for r in receivers {
            r.join().unwrap();
        }
    });
    for (k, c) in checks.iter().enumerate() {
        c.expect(&format!("tokio broadcast receiver {k}"), 2 * sum_to(per));
    }
    Sample::throughput(per * 2, elapsed, MODE)
}
