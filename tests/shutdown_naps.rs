//! A napping strategy (`Sleeping`, `PhasedBackoff` with `Fallback::Sleep`)
//! notices a close or a halt only after its nap, up to `Sleeping::MAX_NAP`
//! (100 ms); a shutdown gave stopping stages a fixed 20 ms. Found by an
//! audit (2026-12-06); both tests failed on 5ea607b:
//!
//! * `shutdown_timeout(Duration::ZERO)` on a drained bus (documented
//!   clean) returned `TimedOut`, halted the bus and reported an idle stage
//!   `still_running`;
//! * after a real timeout, stages that only waited for the stuck one were
//!   reported `still_running`, "still inside its handler".

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ringbus::{AnyStrategy, Fallback, PhasedBackoff, Sequence, ShutdownError, Sleeping};

/// Runs `f` on a thread and fails the test if it has not finished within
/// `secs` seconds.
fn bounded<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => {
            worker.join().unwrap();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!(),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("did not finish within {secs} s: hang"),
    }
}

/// Naps of 100 ms (`Sleeping::MAX_NAP`), by both napping strategies.
fn napping() -> [AnyStrategy; 2] {
    [
        Sleeping::default()
            .with_sleep(Duration::from_millis(100))
            .into(),
        PhasedBackoff::new(
            Duration::from_micros(10),
            Duration::from_micros(100),
            Fallback::Sleep(Duration::from_millis(100)),
        )
        .into(),
    ]
}

const IDLE_STAGES: usize = 4;

#[test]
// Timing: under Miri and ThreadSanitizer a stage's way out (its last poll,
// on_shutdown, the thread's end) may take longer than the grace itself.
#[cfg_attr(
    any(miri, ringbus_tsan),
    ignore = "the grace is wall-clock time; Miri and TSan run far slower"
)]
fn a_zero_shutdown_timeout_on_a_drained_napping_bus_is_clean() {
    for strategy in napping() {
        bounded(30, move || {
            let mut builder = ringbus::single_producer(16, || 0u64, strategy);
            for i in 0..IDLE_STAGES {
                builder = builder
                    .thread_name(format!("idle-{i}"))
                    .handle_events_with(|_: &u64, _: Sequence, _: bool| {});
            }
            let mut producer = builder.build();
            for i in 0..10 {
                producer.publish(|e| *e = i).unwrap();
            }
            // Drained: every stage has handled every event ...
            let metrics = producer.metrics();
            while metrics.snapshot().stages.iter().any(|s| s.processed < 10) {
                thread::sleep(Duration::from_millis(1));
            }
            // ... and is idle, in its nap.
            thread::sleep(Duration::from_millis(30));
            let outcome = producer.shutdown_timeout(Duration::ZERO);
            assert!(
                outcome.is_ok(),
                "{strategy:?}: shutdown_timeout(ZERO) on a drained bus must be clean, got {outcome:?}"
            );
            let report = outcome.unwrap();
            for stage in &report.stages {
                assert_eq!(stage.processed, 10);
                assert_eq!(stage.handled, 10, "{stage:?}");
                assert!(!stage.still_running, "{stage:?}");
            }
        });
    }
}

#[test]
// Timing: under Miri and ThreadSanitizer a stage's way out (its last poll,
// on_shutdown, the thread's end) may take longer than the grace itself.
#[cfg_attr(
    any(miri, ringbus_tsan),
    ignore = "the grace is wall-clock time; Miri and TSan run far slower"
)]
fn a_timed_out_shutdown_reports_only_the_stuck_stage_as_inside_its_handler() {
    for strategy in napping() {
        bounded(30, move || {
            let (release, gate) = mpsc::channel::<()>();
            let (entered, inside) = mpsc::channel::<()>();
            let mut builder = ringbus::single_producer(16, || 0u64, strategy)
                .thread_name("stuck")
                .handle_events_with(move |_: &u64, _: Sequence, _: bool| {
                    let _ = entered.send(());
                    let _ = gate.recv();
                })
                .and_then();
            // Stages after the stuck one: they wait (napping) for it, never
            // inside a handler, and only the timeout's halt ends them.
            for i in 0..IDLE_STAGES {
                builder = builder
                    .thread_name(format!("waiting-{i}"))
                    .handle_events_with(|_: &u64, _: Sequence, _: bool| {});
            }
            let mut producer = builder.build();
            producer.publish(|e| *e = 1).unwrap();
            // The stuck stage is inside its handler; the others nap.
            inside.recv().unwrap();
            thread::sleep(Duration::from_millis(30));
            let outcome = producer.shutdown_timeout(Duration::from_millis(50));
            let Err(ShutdownError::TimedOut(report)) = &outcome else {
                panic!("{strategy:?}: expected TimedOut, got {outcome:?}");
            };
            assert!(report.stages[0].still_running, "{:?}", report.stages[0]);
            let message = outcome.as_ref().unwrap_err().to_string();
            for waiting in &report.stages[1..] {
                assert!(
                    !waiting.still_running,
                    "{strategy:?}: stage `{}` was waiting for the stuck stage, not \
                     inside a handler, yet is reported still_running; message: {message}",
                    waiting.name
                );
                assert!(
                    !message.contains(&format!("`{}` is still inside its handler", waiting.name)),
                    "{strategy:?}: {message}"
                );
            }
            drop(release);
        });
    }
}
