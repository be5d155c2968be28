//! Limits a build or a wait strategy must not turn into an abort or a
//! hang: memory the allocator refuses (in a child process with a capped
//! address space), and naps too long to notice a close.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ringbus::{Blocking, Sequence, Sleeping};

/// Runs `f` on a thread; `Some(result)` if it returned within `secs`,
/// `None` on a hang (the thread is left behind).
fn returns_within<T: Send + 'static>(
    secs: u64,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs)).ok()
}

const CHILD_ENV: &str = "RINGBUS_BUILD_LIMITS_CHILD";

/// True in the child process started for test `name`.
fn is_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(name)
}

/// Caps this (child) process's address space, so a huge allocation fails
/// here instead of exhausting the machine.
#[cfg(target_os = "linux")]
fn limit_address_space(bytes: u64) {
    let lim = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: a plain syscall with a valid pointer.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
}

/// Runs test `name` of this binary in a child process; its exit status.
#[cfg(target_os = "linux")]
fn run_child(name: &str, secs: u64) -> std::process::ExitStatus {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the child test process");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child `{name}` did not finish within {secs} s");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Child half of the test below: a multi-producer ring of zero-sized
/// events (the ring itself needs no memory) whose marks (8 bytes a slot,
/// 2 GiB here) are more than the allocator gives.
#[test]
fn child_multi_ring_marks_beyond_the_allocator() {
    if !is_child("child_multi_ring_marks_beyond_the_allocator") {
        return;
    }
    #[cfg(target_os = "linux")]
    limit_address_space(1 << 30);
    match ringbus::multi_producer(1 << 28, || (), Blocking).try_build() {
        Ok(p) => drop(p),
        Err(e) => assert!(matches!(e, ringbus::BuildError::Capacity { .. }), "{e}"),
    }
}

/// `BuildError::Capacity` covers "more bytes than the allocator gives": a
/// multi producer's marks were allocated infallibly after the check (which
/// counts the events only), and the process aborted. (Not under Miri, or
/// ThreadSanitizer, whose runtime needs more address space than the cap.)
#[cfg(all(target_os = "linux", not(miri), not(ringbus_tsan)))]
#[test]
fn a_multi_producer_ring_the_allocator_refuses_is_an_error_not_an_abort() {
    let status = run_child("child_multi_ring_marks_beyond_the_allocator", 300);
    assert!(
        status.success(),
        "try_build aborted instead of returning BuildError::Capacity: {status:?}"
    );
}

/// A `Sleeping` nap of `Duration::MAX` (here and as `PhasedBackoff`'s
/// fallback) is cut to `Sleeping::MAX_NAP`: an idle stage notices the
/// close, and `shutdown` returns (it slept for ever).
#[test]
fn a_huge_nap_does_not_hold_a_shutdown() {
    let naps = [
        ringbus::AnyStrategy::Sleeping(Sleeping::new(0, 0, Duration::MAX)),
        ringbus::AnyStrategy::PhasedBackoff(ringbus::PhasedBackoff::new(
            Duration::ZERO,
            Duration::ZERO,
            ringbus::Fallback::Sleep(Duration::MAX),
        )),
    ];
    for strategy in naps {
        let mut p = ringbus::single_producer(8, || 0u64, strategy)
            .handle_events_with(|_: &u64, _: Sequence, _: bool| {})
            .build();
        p.publish(|e| *e = 1).unwrap();
        thread::sleep(Duration::from_millis(50));
        let report = returns_within(10, move || p.shutdown())
            .unwrap_or_else(|| panic!("{strategy:?}: shutdown hung behind a Duration::MAX nap"));
        assert_eq!(report.unwrap().stages[0].processed, 1, "{strategy:?}");
    }
}

/// A pool of more workers than `MAX_POOL_WORKERS` (a thread each) is a
/// build error naming the limit, not one stage made per worker until the
/// allocator gives up (`usize::MAX`) or thousands of threads started.
#[test]
fn a_pool_past_the_largest_is_a_build_error() {
    for workers in [ringbus::MAX_POOL_WORKERS + 1, usize::MAX] {
        let err = ringbus::single_producer(8, || 0u64, Blocking)
            .handle_events_with_pool(workers, |_| |_: &u64, _: Sequence, _: bool| {})
            .try_build()
            .unwrap_err();
        assert!(
            matches!(err, ringbus::BuildError::PoolTooLarge { workers: w, .. } if w == workers),
            "{err}"
        );
        assert!(err.to_string().contains("at most 1024"), "{err}");
    }
}
