//! Shutdown drains, halt stops, failures never hang producers or stages, and
//! no stage thread outlives the bus.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::*;
use ringbus::{
    Blocking, Failure, PublishError, Sequence, ShutdownError, TryPublishError, Yielding,
};

fn slow_stage(every: u64) -> impl FnMut(&Event, Sequence, bool) + Send + 'static {
    move |e: &Event, seq: Sequence, _b: bool| {
        e.verify();
        if seq as u64 % every == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

#[test]
fn shutdown_with_events_in_flight_delivers_each_exactly_once() {
    bounded(60, || {
        let (a, sa) = Verifier::new(true);
        let (b, sb) = Verifier::new(true);
        let (c, sc) = Verifier::new(true);
        let mut p = ringbus::single_producer(1024, Event::default, Blocking)
            .handle_events_with(slow_stage(64))
            .handle_events_with(a)
            .and_then()
            .handle_events_with(b)
            .and_then()
            .handle_events_with(c)
            .build();
        let n = N / 10;
        for i in 0..n {
            p.publish(|e| e.set(i)).unwrap();
        }
        // The ring is still full of unprocessed events here.
        let report = p.shutdown().unwrap();
        assert!(report.stages.iter().all(|s| s.processed == n), "{report:?}");
        for s in [sa, sb, sc] {
            let s = s.lock().unwrap();
            assert_eq!((s.count, s.sum), (n, n * (n - 1) / 2));
        }
    });
}

#[test]
fn dropping_the_last_producer_drains_too() {
    bounded(60, || {
        let (a, sa) = Verifier::new(false);
        let p = ringbus::multi_producer(256, Event::default, Yielding::default())
            .handle_events_with(slow_stage(128))
            .and_then()
            .handle_events_with(a)
            .build();
        let q = p.clone();
        for i in 0..5_000 {
            p.publish(|e| e.set(value(0, i))).unwrap();
            q.publish(|e| e.set(value(1, i))).unwrap();
        }
        drop(p);
        drop(q); // last handle: drains and joins here
        assert_eq!(sa.lock().unwrap().count, 10_000);
    });
}

#[test]
fn shutdown_while_other_clones_publish_loses_nothing_acknowledged() {
    bounded(60, || {
        let (a, sa) = Verifier::new(false);
        let p = ringbus::multi_producer(64, Event::default, Yielding::default())
            .handle_events_with(a)
            .build();
        let accepted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let q = p.clone();
                let accepted = Arc::clone(&accepted);
                std::thread::spawn(move || {
                    let mut i = 0;
                    loop {
                        match q.publish(|e| e.set(value(t, i))) {
                            Ok(_) => i += 1,
                            Err(PublishError::Closed) => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    assert_eq!(
                        q.try_publish(|_| unreachable!()),
                        Err(TryPublishError::Closed)
                    );
                    accepted.fetch_add(i, Ordering::Relaxed);
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        let report = p.shutdown().unwrap();
        for t in threads {
            t.join().unwrap();
        }
        let accepted = accepted.load(Ordering::Relaxed);
        assert!(accepted > 0);
        assert_eq!(sa.lock().unwrap().count, accepted);
        assert_eq!(report.stages[0].processed, accepted);
    });
}

#[test]
fn halt_stops_without_draining_and_refuses_publishes() {
    bounded(60, || {
        let (gate_tx, gate) = mpsc::channel::<()>();
        let (a, sa) = Verifier::new(true);
        let mut p = ringbus::single_producer(64, Event::default, Blocking)
            .handle_events_with(move |_e: &Event, _s: Sequence, _b: bool| {
                let _ = gate.recv_timeout(Duration::from_millis(1));
            })
            .and_then()
            .handle_events_with(a)
            .build();
        for i in 0..64 {
            p.publish(|e| e.set(i)).unwrap();
        }
        p.halt();
        assert_eq!(p.publish(|_| unreachable!()), Err(PublishError::Halted));
        assert_eq!(
            p.try_publish(|_| unreachable!()),
            Err(TryPublishError::Halted)
        );
        drop(gate_tx);
        let report = p.shutdown().unwrap();
        let s = sa.lock().unwrap();
        assert!(s.shut_down, "on_shutdown runs after a halt too");
        assert!(s.count < 64, "a halted bus does not drain: {}", s.count);
        assert_eq!(report.stages[1].processed, s.count);
    });
}

#[test]
fn producer_blocked_on_full_ring_gets_an_error_when_a_stage_panics() {
    bounded(60, || {
        let mut p = ringbus::single_producer(8, Event::default, Blocking)
            .thread_name("panicky")
            .handle_events_with(|_e: &Event, seq: Sequence, _b: bool| {
                if seq == 3 {
                    std::thread::sleep(Duration::from_millis(20));
                    panic!("boom at 3");
                }
            })
            .handle_events_with(|_e: &Event, _s: Sequence, _b: bool| {})
            .build();
        let started = Instant::now();
        let mut result = Ok(0);
        for i in 0..1000 {
            result = p.publish(|e| e.set(i));
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(PublishError::Halted));
        assert!(started.elapsed() < Duration::from_secs(30));
        match p.shutdown() {
            Err(ShutdownError::StageFailed(report)) => {
                assert_eq!(report.stages[0].name, "panicky");
                assert_eq!(
                    report.stages[0].failure,
                    Some(Failure::Panic("boom at 3".into()))
                );
                assert_eq!(report.stages[0].handled, 3);
                // The independent stage drained everything published.
                assert!(report.stages[1].failure.is_none());
                assert!(report.stages[1].processed >= 3);
            }
            other => panic!("expected a panic report, got {other:?}"),
        }
    });
}

#[test]
fn multi_producer_blocked_on_full_ring_wakes_on_halt() {
    bounded(60, || {
        let (_keep_closed, gate) = mpsc::channel::<()>();
        let p = ringbus::multi_producer(4, Event::default, Blocking)
            .handle_events_with(move |_e: &Event, _s: Sequence, _b: bool| {
                let _ = gate.recv();
            })
            .build();
        let q = p.clone();
        let blocked = std::thread::spawn(move || {
            let mut last = Ok(0);
            for i in 0..100 {
                last = q.publish(|e| e.set(i));
                if last.is_err() {
                    break;
                }
            }
            last
        });
        std::thread::sleep(Duration::from_millis(50));
        p.halt();
        assert_eq!(blocked.join().unwrap(), Err(PublishError::Halted));
        // The stage is stuck in its handler until the gate's sender drops.
        drop(_keep_closed);
        p.shutdown().unwrap();
    });
}

#[test]
fn shutdown_timeout_reports_that_it_timed_out() {
    bounded(60, || {
        let mut p = ringbus::single_producer(1024, Event::default, Blocking)
            .handle_events_with(|_e: &Event, _s: Sequence, _b: bool| {
                std::thread::sleep(Duration::from_millis(1));
            })
            .build();
        for i in 0..1000 {
            p.publish(|e| e.set(i)).unwrap();
        }
        match p.shutdown_timeout(Duration::from_millis(30)) {
            Err(ShutdownError::TimedOut(report)) => {
                assert!(report.stages[0].processed < 1000);
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    });
}

#[test]
fn shutdown_timeout_succeeds_when_drained_in_time() {
    bounded(60, || {
        let mut p = ringbus::single_producer(64, Event::default, Blocking)
            .handle_events_with(|_e: &Event, _s: Sequence, _b: bool| {})
            .build();
        for i in 0..100 {
            p.publish(|e| e.set(i)).unwrap();
        }
        let report = p.shutdown_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(report.stages[0].processed, 100);
    });
}

#[test]
fn panic_in_a_multi_producer_closure_still_publishes_the_slot() {
    bounded(60, || {
        let (a, sa) = Verifier::new(true);
        let p = ringbus::multi_producer(4, Event::default, Blocking)
            .handle_events_with(a)
            .build();
        p.publish(|e| e.set(0)).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.publish(|e| {
                e.set(1);
                panic!("writer fails after writing");
            })
        }));
        assert!(caught.is_err());
        for i in 2..10 {
            p.publish(|e| e.set(i)).unwrap();
        }
        p.shutdown().unwrap();
        assert_eq!(
            sa.lock().unwrap().count,
            10,
            "a stage waited on the panicked slot"
        );
    });
}

#[test]
#[cfg(all(target_os = "linux", not(miri)))]
fn no_stage_thread_outlives_shutdown() {
    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == name)
            .count()
    }
    bounded(60, || {
        let (seen, running) = mpsc::channel();
        let mut p = ringbus::single_producer(64, Event::default, Blocking)
            .thread_name("rb-outlive-a")
            .handle_events_with(|_e: &Event, _s: Sequence, _b: bool| {})
            .and_then()
            .thread_name("rb-outlive-a")
            .handle_events_with(move |_e: &Event, _s: Sequence, _b: bool| {
                let _ = seen.send(());
            })
            .build();
        p.publish(|e| e.set(0)).unwrap();
        // Both stages run once the second saw the event.
        running.recv().unwrap();
        assert_eq!(threads_named("rb-outlive-a"), 2);
        p.shutdown().unwrap();
        assert_eq!(threads_named("rb-outlive-a"), 0);
    });
}

/// Two clones shut down while a third keeps trying to publish: the refused
/// claims must not move the end of the stream, or the stages would wait for an
/// event that never comes.
#[test]
fn concurrent_shutdowns_with_refused_publishes_do_not_hang() {
    bounded(60, || {
        let (v, s) = Verifier::new(false);
        let a = ringbus::multi_producer(64, Event::default, Blocking)
            .handle_events_with(slow_stage(1))
            .and_then()
            .handle_events_with(v)
            .build();
        let (b, c) = (a.clone(), a.clone());
        for i in 0..50 {
            a.publish(|e| e.set(value(0, i))).unwrap();
        }
        let first = std::thread::spawn(move || a.shutdown().map(|_| ()));
        let mut accepted = 50;
        while c.publish(|e| e.set(value(0, accepted))).is_ok() {
            accepted += 1;
        }
        // More refused claims after the close, then a second shutdown.
        for _ in 0..5 {
            assert_eq!(c.publish(|_| unreachable!()), Err(PublishError::Closed));
        }
        assert_eq!(c.cursor(), accepted as Sequence - 1);
        b.shutdown().unwrap();
        first.join().unwrap().unwrap();
        drop(c);
        assert_eq!(s.lock().unwrap().count, accepted);
    });
}
