//! Failure policies: a stage that panics or returns an error in a diamond,
//! under each policy, with exactly which events reached which stage; retries;
//! dead letters; the shutdown report against what the handlers saw.

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::*;
use ringbus::{
    Blocking, DeadLetter, Failure, FailurePolicy, PublishError, Sequence, ShutdownError,
    ShutdownReport, Yielding,
};

const EVENTS: u64 = if cfg!(miri) { 200 } else { 10_000 };
const BAD: u64 = 37;

/// Sequences each stage's handler saw, in order.
type Seen = Arc<Mutex<Vec<Sequence>>>;

fn recorder(seen: Seen) -> impl FnMut(&Event, Sequence, bool) + Send + 'static {
    move |e: &Event, seq: Sequence, _eob: bool| {
        e.verify();
        seen.lock().unwrap().push(seq);
    }
}

/// A (records) and B (panics at `BAD`, records the rest) in parallel, then C
/// (records) after both. Publishes until refused; returns what each saw, the
/// report and how many events were accepted.
fn diamond(policy: Option<FailurePolicy<Event>>) -> (Vec<Vec<Sequence>>, ShutdownReport, u64) {
    let seen: Vec<Seen> = (0..3).map(|_| Seen::default()).collect();
    let b_seen = Arc::clone(&seen[1]);
    let mut builder = ringbus::single_producer(64, Event::default, Blocking)
        .thread_name("a")
        .handle_events_with(recorder(Arc::clone(&seen[0])))
        .thread_name("b");
    if let Some(policy) = policy {
        builder = builder.on_failure(policy);
    }
    let mut p = builder
        .handle_events_with(move |e: &Event, seq: Sequence, _eob: bool| {
            if seq as u64 == BAD {
                panic!("bad event {seq}");
            }
            e.verify();
            b_seen.lock().unwrap().push(seq);
        })
        .and_then()
        .thread_name("c")
        .handle_events_with(recorder(Arc::clone(&seen[2])))
        .build();
    let mut accepted = 0;
    for i in 0..EVENTS {
        match p.publish(|e| e.set(i)) {
            Ok(_) => accepted += 1,
            Err(PublishError::Halted) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let report = match p.shutdown() {
        Ok(r) => r,
        Err(ShutdownError::StageFailed(r)) => r,
        Err(e) => panic!("{e}"),
    };
    let seen = seen.iter().map(|s| s.lock().unwrap().clone()).collect();
    (seen, report, accepted)
}

fn all_but_bad(n: u64) -> Vec<Sequence> {
    (0..n as Sequence)
        .filter(|&s| s != BAD as Sequence)
        .collect()
}

#[test]
fn halt_policy_stops_the_stage_and_its_descendants_only() {
    let (seen, report, accepted) = bounded(60, || diamond(None));
    let upto_bad: Vec<Sequence> = (0..BAD as Sequence).collect();
    // A does not depend on B: it drained everything that was accepted.
    assert_eq!(seen[0], (0..accepted as Sequence).collect::<Vec<_>>());
    // B handled everything before the bad event and nothing after it.
    assert_eq!(seen[1], upto_bad);
    // C depends on B: it saw exactly what B finished.
    assert_eq!(seen[2], upto_bad);
    assert!(
        accepted > BAD && accepted < EVENTS,
        "producer was refused: {accepted}"
    );
    let b = &report.stages[1];
    assert_eq!(b.failure, Some(Failure::Panic(format!("bad event {BAD}"))));
    assert_eq!((b.handled, b.failed, b.panics), (BAD, 1, 1));
    assert!(report.stages[2].upstream_failed);
    assert_eq!(report.stages[2].processed, BAD);
    assert_eq!(report.stages[0].processed, accepted);
}

#[test]
fn skip_policy_counts_the_failure_and_goes_on() {
    let (seen, report, accepted) = bounded(60, || diamond(Some(FailurePolicy::skip())));
    assert_eq!(accepted, EVENTS);
    let all: Vec<Sequence> = (0..EVENTS as Sequence).collect();
    assert_eq!(seen[0], all);
    assert_eq!(seen[1], all_but_bad(EVENTS));
    assert_eq!(seen[2], all, "C sees every event, the skipped one included");
    let b = &report.stages[1];
    assert_eq!(
        (b.processed, b.handled, b.failed, b.skipped, b.panics),
        (EVENTS, EVENTS - 1, 1, 1, 1)
    );
    assert!(b.failure.is_none());
}

#[test]
fn dead_letter_policy_hands_over_the_failed_event() {
    let (tx, rx) = mpsc::channel::<DeadLetter<Event>>();
    let (seen, report, accepted) =
        bounded(60, move || diamond(Some(FailurePolicy::dead_letter_to(tx))));
    assert_eq!(accepted, EVENTS);
    let letters: Vec<DeadLetter<Event>> = rx.try_iter().collect();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(
        (letter.stage.as_str(), letter.sequence),
        ("b", BAD as Sequence)
    );
    assert_eq!(letter.event.value, BAD);
    assert_eq!(letter.failure, Failure::Panic(format!("bad event {BAD}")));
    assert_eq!(seen[1], all_but_bad(EVENTS));
    assert_eq!(report.stages[1].dead_lettered, 1);
}

#[test]
fn retries_then_dead_letters_with_a_closure_sink() {
    let letters = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&letters);
    let policy =
        FailurePolicy::dead_letter(move |stage: &str, e: &Event, seq, failure: &Failure| {
            sink.lock()
                .unwrap()
                .push((stage.to_owned(), seq, e.value, failure.clone()));
        })
        .retry(2, Duration::from_micros(10));
    let (seen, report, _) = bounded(60, move || diamond(Some(policy)));
    // The bad event panics on every attempt: 1 + 2 retries, then dead-lettered.
    let b = &report.stages[1];
    assert_eq!(
        (b.retried, b.panics, b.dead_lettered, b.failed),
        (2, 3, 1, 1)
    );
    assert_eq!(
        letters.lock().unwrap().as_slice(),
        &[(
            "b".to_owned(),
            BAD as Sequence,
            BAD,
            Failure::Panic(format!("bad event {BAD}"))
        )]
    );
    assert_eq!(seen[1], all_but_bad(EVENTS));
}

#[derive(Debug)]
struct Flaky(u32);

impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "flaky attempt {}", self.0)
    }
}

impl std::error::Error for Flaky {}

#[test]
fn retry_succeeds_on_the_third_attempt() {
    bounded(60, || {
        let attempts = Arc::new(Mutex::new(0u32));
        let tries = Arc::clone(&attempts);
        let (v, stats) = Verifier::new(true);
        let mut p = ringbus::single_producer(16, Event::default, Yielding::default())
            .on_failure(FailurePolicy::halt().retry(5, Duration::from_micros(50)))
            .try_handle_events_with(move |e: &Event, seq: Sequence, _eob: bool| {
                e.verify();
                if seq == 5 {
                    let mut n = tries.lock().unwrap();
                    *n += 1;
                    if *n < 3 {
                        return Err(Flaky(*n));
                    }
                }
                Ok(())
            })
            .and_then()
            .handle_events_with(v)
            .build();
        for i in 0..100 {
            p.publish(|e| e.set(i)).unwrap();
        }
        let report = p.shutdown().unwrap();
        assert_eq!(*attempts.lock().unwrap(), 3);
        let s = &report.stages[0];
        assert_eq!((s.handled, s.retried, s.failed, s.panics), (100, 2, 0, 0));
        assert_eq!(stats.lock().unwrap().count, 100);
    });
}

#[test]
fn fallible_handler_errors_halt_by_default_and_name_the_error() {
    bounded(60, || {
        let mut p = ringbus::single_producer(8, Event::default, Blocking)
            .thread_name("parser")
            .try_handle_events_with(|e: &Event, _seq: Sequence, _eob: bool| {
                if e.value == 3 {
                    Err(format!("cannot parse {}", e.value))
                } else {
                    Ok(())
                }
            })
            .build();
        let mut refused = false;
        for i in 0..1000 {
            if p.publish(|e| e.set(i)) == Err(PublishError::Halted) {
                refused = true;
                break;
            }
        }
        assert!(refused, "a halted bus refuses producers");
        let err = p.shutdown().unwrap_err();
        assert!(
            err.to_string()
                .contains("stage `parser`: handler error: cannot parse 3"),
            "{err}"
        );
    });
}

#[test]
fn report_counts_equal_what_the_handlers_saw() {
    bounded(60, || {
        let calls = Arc::new(Mutex::new(0u64));
        let count = Arc::clone(&calls);
        let mut p = ringbus::single_producer(32, Event::default, Yielding::default())
            .on_failure(FailurePolicy::skip())
            .try_handle_events_with(move |e: &Event, _s: Sequence, _eob: bool| {
                *count.lock().unwrap() += 1;
                if e.value % 10 == 0 {
                    Err("every tenth fails")
                } else {
                    Ok(())
                }
            })
            .build();
        for i in 0..EVENTS {
            p.publish(|e| e.set(i)).unwrap();
        }
        let report = p.shutdown().unwrap();
        let s = &report.stages[0];
        let failing = EVENTS.div_ceil(10);
        assert_eq!(*calls.lock().unwrap(), EVENTS);
        assert_eq!(
            (s.processed, s.handled, s.skipped, s.failed),
            (EVENTS, EVENTS - failing, failing, failing)
        );
    });
}

/// A handler that counts what it saw, returned by the shutdown report.
struct Counter {
    seen: u64,
    failures_returned: u64,
}

impl ringbus::TryEventHandler<Event> for Counter {
    type Error = String;

    fn on_event(&mut self, e: &Event, _s: Sequence, _eob: bool) -> Result<(), String> {
        self.seen += 1;
        if e.value % 7 == 3 {
            self.failures_returned += 1;
            return Err(format!("value {}", e.value));
        }
        Ok(())
    }
}

#[test]
fn shutdown_report_returns_the_handler_with_its_final_state() {
    bounded(60, || {
        let (tx, rx) = mpsc::channel();
        let mut p = ringbus::single_producer(32, Event::default, Blocking)
            .on_failure(FailurePolicy::dead_letter_to(tx))
            .try_handle_events_with(Counter {
                seen: 0,
                failures_returned: 0,
            })
            .handle_events_with(ringbus::factory(|| |_e: &Event, _s: Sequence, _b: bool| {}))
            .build();
        for i in 0..EVENTS {
            p.publish(|e| e.set(i)).unwrap();
        }
        let mut report = p.shutdown().unwrap();
        let counter: Counter = report.take_handler(0).expect("handler given by value");
        let stage = &report.stages[0];
        assert_eq!(counter.seen, EVENTS);
        assert_eq!(counter.failures_returned, stage.dead_lettered);
        assert_eq!(stage.handled + stage.dead_lettered, counter.seen);
        assert_eq!(rx.try_iter().count() as u64, stage.dead_lettered);
        assert!(report.take_handler::<Counter>(0).is_none(), "taken once");
        assert!(
            report.take_handler::<Counter>(1).is_none(),
            "made on its thread"
        );
    });
}

/// A stage after two upstream stages, one failed and one slow, still gets
/// every event both finished: the slow one may go on advancing.
#[test]
fn stage_after_a_failed_and_a_slow_stage_gets_all_they_finished() {
    bounded(60, || {
        let seen = Seen::default();
        let mut p = ringbus::single_producer(64, Event::default, Blocking)
            .handle_events_with(|_e: &Event, seq: Sequence, _b: bool| {
                if seq == 10 {
                    panic!("fails at 10");
                }
            })
            .handle_events_with(|_e: &Event, _s: Sequence, _b: bool| {
                std::thread::sleep(Duration::from_micros(300));
            })
            .and_then()
            .handle_events_with(recorder(Arc::clone(&seen)))
            .build();
        for i in 0..40 {
            if p.publish(|e| e.set(i)).is_err() {
                break;
            }
        }
        let _ = p.shutdown();
        assert_eq!(*seen.lock().unwrap(), (0..10).collect::<Vec<Sequence>>());
    });
}

/// A multi-producer claim in flight when a stage failed must not leave a
/// hole the independent stage waits at forever: it is filled once the
/// failed stage stops gating, and the independent stage gets it.
#[test]
fn abandoned_claim_after_a_failure_does_not_hang_shutdown() {
    bounded(60, || {
        let (_hold, gate) = mpsc::channel::<()>();
        let seen = Seen::default();
        let p = ringbus::multi_producer(4, Event::default, Blocking)
            .handle_events_with(move |_e: &Event, seq: Sequence, _b: bool| {
                if seq == 0 {
                    // Hold the ring full, then fail.
                    let _ = gate.recv_timeout(Duration::from_millis(50));
                    panic!("fails holding the ring");
                }
            })
            .handle_events_with(recorder(Arc::clone(&seen)))
            .build();
        let mut accepted = 0;
        for i in 0..20 {
            match p.publish(|e| e.set(i)) {
                Ok(_) => accepted += 1,
                Err(PublishError::Halted) => break,
                Err(e) => panic!("{e}"),
            }
        }
        drop(p); // must not hang on the claim made before the refusal
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.len() as u64,
            accepted,
            "the independent stage drained what was accepted"
        );
    });
}

/// Issue #12, finding 10: a handler whose panic stopped its stage (here
/// after `halt().retry(..)` used its retries up) is not called again, not
/// even `on_shutdown`, and is not handed back; one stopped by an `Err` is
/// shut down and handed back. The docs say so on `on_shutdown` and
/// `take_handler`.
#[test]
fn a_handler_stopped_by_a_panic_gets_no_on_shutdown_and_is_not_returned() {
    struct Fails {
        panics: bool,
        shut_down: mpsc::Sender<&'static str>,
    }
    impl ringbus::TryEventHandler<Event> for Fails {
        type Error = std::io::Error;
        fn on_event(&mut self, _e: &Event, seq: Sequence, _b: bool) -> Result<(), Self::Error> {
            if seq == 3 {
                assert!(!self.panics, "panics at 3");
                return Err(std::io::Error::other("fails at 3"));
            }
            Ok(())
        }
        fn on_shutdown(&mut self) {
            let _ = self
                .shut_down
                .send(if self.panics { "panicking" } else { "erring" });
        }
    }
    for panics in [true, false] {
        bounded(60, move || {
            let (tx, rx) = mpsc::channel();
            let mut p = ringbus::single_producer(16, Event::default, Yielding::default())
                .on_failure(FailurePolicy::halt().retry(2, Duration::from_millis(1)))
                .try_handle_events_with(Fails {
                    panics,
                    shut_down: tx,
                })
                .build();
            for i in 0..8 {
                if p.publish(|e| e.set(i)).is_err() {
                    break;
                }
            }
            let mut report = match p.shutdown() {
                Err(ShutdownError::StageFailed(report)) => report,
                other => panic!("expected the failure, got {other:?}"),
            };
            assert_eq!(report.stages[0].retried, 2);
            let returned = report.take_handler::<Fails>(0).is_some();
            let shut_down: Vec<_> = rx.try_iter().collect();
            if panics {
                assert!(matches!(report.stages[0].failure, Some(Failure::Panic(_))));
                assert!(!returned, "a panicked handler was handed back");
                assert!(shut_down.is_empty(), "on_shutdown after a panic");
            } else {
                let failure = report.stages[0].failure.as_ref().expect("a failure");
                assert!(matches!(failure, Failure::Error(_)));
                // The handler's error is kept with its type.
                let io = failure
                    .downcast_ref::<std::io::Error>()
                    .expect("an io::Error");
                assert_eq!(io.kind(), std::io::ErrorKind::Other);
                assert_eq!(io.to_string(), "fails at 3");
                let source = std::error::Error::source(failure).expect("a source");
                assert_eq!(source.to_string(), "fails at 3");
                assert_eq!(failure.to_string(), "handler error: fails at 3");
                assert!(returned);
                assert_eq!(shut_down, ["erring"]);
            }
        });
    }
}

/// A failed leaf stops gating a claim made before the refusal, but a healthy
/// stage before it may still be reading: the producers must stay behind
/// that one. (Found by `tests/lifecycle.rs`, seed 767: the healthy stage saw
/// events overwritten by a later lap.)
#[test]
fn healthy_stage_before_a_failed_leaf_still_gates_claims_in_flight() {
    bounded(60, || {
        let (slow, slow_stats) = Verifier::new(false);
        let slow = {
            let mut slow = slow;
            move |e: &Event, s: Sequence, b: bool| {
                if s == 0 {
                    // Long enough for the failure to stop the leaf.
                    std::thread::sleep(Duration::from_millis(100));
                }
                ringbus::EventHandler::on_event(&mut slow, e, s, b);
            }
        };
        let p = ringbus::multi_producer(4, Event::default, Blocking)
            .thread_name("slow")
            .handle_events_with(slow)
            .thread_name("fails")
            .handle_events_with(|_e: &Event, seq: Sequence, _b: bool| {
                assert!(seq != 0, "fails at 0");
            })
            .and_then()
            .thread_name("leaf")
            .handle_events_with(|_e: &Event, _s: Sequence, _b: bool| {})
            .build();
        let producers: Vec<_> = (0..3u64)
            .map(|k| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let mut accepted = 0;
                    while accepted < 50 && p.publish(|e| e.set(value(k, accepted))).is_ok() {
                        accepted += 1;
                    }
                    accepted
                })
            })
            .collect();
        let accepted: u64 = producers.into_iter().map(|t| t.join().unwrap()).sum();
        let report = match p.shutdown() {
            Err(ShutdownError::StageFailed(report)) => report,
            other => panic!("expected the failure, got {other:?}"),
        };
        assert_eq!(report.stages[0].failure, None, "{report:?}");
        assert_eq!(report.stages[0].processed, accepted, "{report:?}");
        let _ = slow_stats;
    });
}

/// A handler made on its stage's thread (by a factory) whose `Drop` panics
/// when the stage hands it back after a clean run: the stage reports that
/// panic as its own failure, with its counts, not as a lost thread.
#[test]
fn a_factory_handler_whose_drop_panics_is_reported_as_its_stage_failure() {
    struct PanicsInDrop;
    impl ringbus::EventHandler<Event> for PanicsInDrop {
        fn on_event(&mut self, _: &Event, _: Sequence, _: bool) {}
    }
    impl Drop for PanicsInDrop {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("panics in drop");
            }
        }
    }
    bounded(60, || {
        let mut p = ringbus::single_producer(8, Event::default, Blocking)
            .handle_events_with(ringbus::factory(|| PanicsInDrop))
            .handle_events_with(|_e: &Event, _s: Sequence, _b: bool| {})
            .build();
        for i in 0..100 {
            p.publish(|e| e.set(i)).unwrap();
        }
        let Err(ShutdownError::StageFailed(report)) = p.shutdown() else {
            panic!("the panic in Drop must be reported");
        };
        let stage = &report.stages[0];
        let failure = stage.failure.as_ref().expect("the stage failed");
        assert!(
            failure.to_string().contains("panics in drop"),
            "the stage's own panic, not a lost thread: {failure}"
        );
        assert_eq!((stage.processed, stage.handled), (100, 100));
        assert!(report.stages[1].failure.is_none());
        assert_eq!(report.stages[1].processed, 100);
    });
}

/// A halt during a retry's backoff ends it: the handler is not called
/// again, the policy decides the event's fate (skipped here), and the
/// shutdown does not wait out the backoff (a timed shutdown shorter than
/// it succeeds). `events` are published at once (one batch).
fn halt_in_a_retry_backoff(events: usize) {
    let calls = Arc::new(Mutex::new(0u32));
    let counted = Arc::clone(&calls);
    let (failed, first_failure) = mpsc::channel();
    let mut p = ringbus::single_producer(64, Event::default, Blocking)
        .on_failure(FailurePolicy::skip().retry(3, Duration::from_secs(20)))
        .try_handle_events_with(move |_: &Event, _: Sequence, _: bool| {
            *counted.lock().unwrap() += 1;
            let _ = failed.send(());
            Err::<(), _>(std::io::Error::other("always"))
        })
        .build();
    p.batch_publish(events, |slots| {
        for (i, e) in slots.enumerate() {
            e.set(i as u64);
        }
    })
    .unwrap();
    first_failure.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50)); // in its first backoff
    p.halt();
    let report = match p.shutdown_timeout(Duration::from_secs(5)) {
        Ok(report) | Err(ShutdownError::StageFailed(report)) => report,
        Err(e) => panic!("the shutdown waited out the backoff: {e:?}"),
    };
    assert_eq!(*calls.lock().unwrap(), 1, "called again after the halt");
    assert_eq!(report.stages[0].retried, 0, "{:?}", report.stages[0]);
    assert_eq!(report.stages[0].skipped, 1, "{:?}", report.stages[0]);
}

#[test]
fn a_halt_ends_a_retry_backoff_and_the_handler_is_not_called_again() {
    bounded(60, || halt_in_a_retry_backoff(1));
}

/// The same with the failing event first of a batch of ten: the halt that
/// ended the retry stops the stage there, and an infallible handler under
/// a policy with skips (handled one event at a time) is not called after a
/// halt either. Both were called for the rest of their chunk (up to 16
/// events) after it.
#[test]
fn a_halt_mid_batch_calls_the_handler_no_more() {
    bounded(60, || {
        halt_in_a_retry_backoff(10);

        // Infallible, one event at a time (the policy skips): halted while
        // it handles the first event of ten.
        let calls = Arc::new(Mutex::new(0u32));
        let counted = Arc::clone(&calls);
        let (started, first_call) = mpsc::channel();
        let (halted, go_on) = mpsc::channel::<()>();
        let go_on = Mutex::new(go_on);
        let mut p = ringbus::single_producer(64, Event::default, Blocking)
            .on_failure(FailurePolicy::skip())
            .handle_events_with(move |_: &Event, _: Sequence, _: bool| {
                *counted.lock().unwrap() += 1;
                let _ = started.send(());
                let _ = go_on.lock().unwrap().recv_timeout(Duration::from_secs(5));
            })
            .build();
        p.batch_publish(10, |slots| {
            for (i, e) in slots.enumerate() {
                e.set(i as u64);
            }
        })
        .unwrap();
        first_call.recv().unwrap();
        p.halt();
        drop(halted); // the first call returns
        let _ = p.shutdown_timeout(Duration::from_secs(5));
        assert_eq!(*calls.lock().unwrap(), 1, "called again after the halt");
    });
}

/// A dead-letter sink that panics stops the stage with the panic, and the
/// event it was given counts failed once, not dead-lettered.
#[test]
fn a_panicking_dead_letter_sink_counts_the_event_failed_once() {
    bounded(60, || {
        let mut p = ringbus::single_producer(8, Event::default, Blocking)
            .on_failure(FailurePolicy::dead_letter(|_, _: &Event, _, _| {
                panic!("the sink fails")
            }))
            .try_handle_events_with(|e: &Event, _: Sequence, _: bool| {
                if e.value == 3 {
                    Err("fails at 3")
                } else {
                    Ok(())
                }
            })
            .build();
        for i in 0..6 {
            if p.publish(|e| e.set(i)).is_err() {
                break;
            }
        }
        let report = match p.shutdown() {
            Err(ShutdownError::StageFailed(report)) => report,
            other => panic!("expected the failure, got {other:?}"),
        };
        let stage = &report.stages[0];
        assert_eq!((stage.failed, stage.dead_lettered), (1, 0), "{stage:?}");
        assert!(
            matches!(stage.failure, Some(Failure::Panic(_))),
            "{stage:?}"
        );
    });
}

/// A panic in `on_shutdown`, after every event was handled, fails the
/// stage and counts as a panic, not as a failed event (`failed` counts
/// events whose handling failed): the report reads 10 handled, 0 failed,
/// 1 panic. On a stage of its own thread and on a shared thread alike.
#[test]
fn a_panic_in_on_shutdown_is_a_panic_not_a_failed_event() {
    struct PanicsAtShutdown;
    impl ringbus::EventHandler<Event> for PanicsAtShutdown {
        fn on_event(&mut self, _: &Event, _: Sequence, _: bool) {}
        fn on_shutdown(&mut self) {
            panic!("planned panic in on_shutdown");
        }
    }
    for shared in [false, true] {
        let mut b = ringbus::single_producer(16, Event::default, Blocking)
            .handle_events_with(|_: &Event, _: Sequence, _: bool| {})
            .and_then();
        if shared {
            b = b.on_same_thread();
        }
        let mut p = b.handle_events_with(PanicsAtShutdown).build();
        for i in 0..10 {
            p.publish(|e| e.set(i)).unwrap();
        }
        let report = match p.shutdown() {
            Err(ringbus::ShutdownError::StageFailed(report)) => report,
            other => panic!("shared {shared}: expected StageFailed, got {other:?}"),
        };
        let s = &report.stages[1];
        assert_eq!(
            (s.handled, s.failed, s.panics),
            (10, 0, 1),
            "shared {shared}: {s:?}"
        );
        assert!(
            matches!(&s.failure, Some(ringbus::Failure::Panic(m)) if m.contains("on_shutdown")),
            "{s:?}"
        );
    }
}

/// A `shutdown_timeout` that ends a retry's backoff under a policy that
/// halts says `TimedOut` ("halts the bus if it has not drained in time and
/// says so"): the failure the halt brought about (the retries it cut) is
/// in the report, but the bus had not failed before the timeout. It said
/// `StageFailed`. A stage that failed before the timeout (beside one stuck
/// in its handler) still makes it `StageFailed`.
#[test]
fn a_shutdown_timeout_that_cuts_a_retry_says_timed_out() {
    bounded(60, || {
        let (failing, first_failure) = mpsc::channel();
        let p = ringbus::multi_producer(8, Event::default, Blocking)
            .on_failure(FailurePolicy::halt().retry(10, Duration::from_secs(1)))
            .try_handle_events_with(move |_: &Event, _: Sequence, _: bool| {
                let _ = failing.send(());
                Err::<(), _>(std::io::Error::other("always"))
            })
            .build();
        p.publish(|e| e.set(0)).unwrap();
        first_failure.recv().unwrap(); // in its first backoff now
        match p.shutdown_timeout(Duration::from_millis(50)) {
            Err(ShutdownError::TimedOut(report)) => {
                // Failed (the cut retry), or, on a slow machine (Miri), not
                // yet stopped after the halt's grace: still running.
                let s = &report.stages[0];
                assert_eq!(s.processed, 0, "{s:?}");
                assert!(s.failed == 1 || s.still_running, "{s:?}");
            }
            other => panic!("expected TimedOut, got {other:?}"),
        }
    });
    bounded(60, || {
        let stuck = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let hold = Arc::clone(&stuck);
        let (entered, in_handler) = mpsc::channel();
        let p = ringbus::multi_producer(8, Event::default, Blocking)
            .try_handle_events_with(|_: &Event, _: Sequence, _: bool| {
                Err::<(), _>(std::io::Error::other("fails at once"))
            })
            .handle_events_with(move |_: &Event, _: Sequence, _: bool| {
                let _ = entered.send(());
                while hold.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .build();
        p.publish(|e| e.set(0)).unwrap();
        in_handler.recv().unwrap();
        while p.publish(|e| e.set(1)).is_ok() {
            std::thread::sleep(Duration::from_millis(1)); // until the failure
        }
        let outcome = p.shutdown_timeout(Duration::from_millis(50));
        stuck.store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(
            matches!(outcome, Err(ShutdownError::StageFailed(_))),
            "{outcome:?}"
        );
    });
}

fn stage_failed(
    result: Result<ringbus::ShutdownReport, ringbus::ShutdownError>,
) -> ringbus::ShutdownReport {
    match result {
        Err(ringbus::ShutdownError::StageFailed(report)) => report,
        other => panic!("expected StageFailed, got {other:?}"),
    }
}

/// A panic in `on_timeout`, `on_start` or a factory-made handler's `Drop`
/// counts as a panic, not as a failed event (`failed` is "events whose
/// handling failed"): each was counted `failed: 1`, on a stage that had
/// seen no event, or that had handled all of its 10. On a stage of its own
/// thread and on a shared thread alike.
#[test]
fn a_panic_outside_any_event_is_a_panic_not_a_failed_event() {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Set just before a planned panic: the test waits for it (a slow
    /// machine, or Miri, may not have reached the hook by the shutdown).
    static PANICKED: AtomicBool = AtomicBool::new(false);
    struct PanicsIn(&'static str);
    impl ringbus::EventHandler<u64> for PanicsIn {
        fn on_event(&mut self, _: &u64, _: Sequence, _: bool) {}
        fn on_start(&mut self) {
            if self.0 == "on_start" {
                PANICKED.store(true, Ordering::SeqCst);
                panic!("planned panic in on_start");
            }
        }
        fn on_timeout(&mut self, _: Sequence) {
            if self.0 == "on_timeout" {
                PANICKED.store(true, Ordering::SeqCst);
                panic!("planned panic in on_timeout");
            }
        }
        fn on_batch_start(&mut self, _: u64) {
            if self.0 == "on_batch_start" {
                PANICKED.store(true, Ordering::SeqCst);
                panic!("planned panic in on_batch_start");
            }
        }
    }
    impl Drop for PanicsIn {
        fn drop(&mut self) {
            if self.0 == "drop" && !std::thread::panicking() {
                panic!("planned panic in drop");
            }
        }
    }
    for shared in [false, true] {
        for hook in ["on_start", "on_timeout", "on_batch_start", "drop"] {
            // Before the build: the stage thread may reach on_start before
            // `build` returns (the flag was cleared after it, and a slow
            // run under TSan lost the store and waited for ever).
            PANICKED.store(false, Ordering::SeqCst);
            let mut b = ringbus::single_producer(16, || 0u64, Blocking)
                .handle_events_with(|_: &u64, _: Sequence, _: bool| {})
                .and_then();
            if shared {
                b = b.on_same_thread();
            }
            let mut p = b
                .timeout(Duration::from_millis(5))
                .handle_events_with(ringbus::factory(move || PanicsIn(hook)))
                .build();
            let events = if hook == "drop" { 10 } else { 0 };
            let published = if hook == "on_batch_start" { 1 } else { events };
            for i in 0..published {
                p.publish(|e| *e = i).unwrap();
            }
            if hook != "drop" {
                let start = std::time::Instant::now();
                while !PANICKED.load(Ordering::SeqCst) {
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "{hook} never ran"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let report = stage_failed(p.shutdown());
            let s = &report.stages[1];
            assert!(s.failure.as_ref().is_some_and(|f| f.is_panic()), "{s:?}");
            assert_eq!(
                (s.handled, s.failed, s.panics),
                (events, 0, 1),
                "shared {shared}, panic in {hook}: {s:?}"
            );
        }
    }
}

/// An event's panic under a per-event policy that ends in a halt, then a
/// panic in the handler's `Drop` as the stage shuts down: one failed event
/// (counted once, when its policy gave up), however many panics.
#[test]
fn a_panic_in_drop_after_a_failed_event_counts_the_event_once() {
    struct FailsThenPanicsInDrop;
    impl ringbus::EventHandler<u64> for FailsThenPanicsInDrop {
        fn on_event(&mut self, e: &u64, _: Sequence, _: bool) {
            if *e == 3 {
                panic!("planned panic at event 3");
            }
        }
    }
    impl Drop for FailsThenPanicsInDrop {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("planned panic in drop");
            }
        }
    }
    let mut p = ringbus::single_producer(16, || 0u64, Blocking)
        .on_failure(FailurePolicy::halt().retry(1, Duration::from_millis(1)))
        .handle_events_with(ringbus::factory(|| FailsThenPanicsInDrop))
        .build();
    for i in 0..6 {
        let _ = p.publish(|e| *e = i);
    }
    let report = stage_failed(p.shutdown());
    let s = &report.stages[0];
    assert_eq!((s.handled, s.failed), (3, 1), "{s:?}");
    assert!(s.panics >= 2, "{s:?}");
}
