//! `IpcMetrics::given_up` counted one tombstone twice when a slow writer
//! that consumers gave up died before it let go and the slot's next round
//! was an unmarked claim nobody waited at: the claimant two laps on
//! (`marks::skip_behind`) turned the dead writer's GIVEN_UP mark into
//! RELEASED and counted it as a new give-up (found by an audit,
//! 2026-12-06; fails on fea1c36).
#![cfg(all(feature = "ipc", unix, not(miri), not(loom)))]

use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use ringbus::ipc::{IpcPublishError, Options, Pod, Zeroable};

#[derive(Clone, Copy, Default, Pod, Zeroable, Debug)]
#[repr(C)]
struct Ev {
    producer: u64,
    k: u64,
}

fn dir() -> tempfile::TempDir {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    tempfile::Builder::new()
        .prefix("ringbus-ipc2-test")
        .tempdir_in(base)
        .unwrap()
}

const ROLE: &str = "RINGBUS_IPC2_GIVEN_UP_ROLE";

struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn opts(dir: &std::path::Path) -> Options {
    Options::new(4)
        .multi_producer()
        .dir(dir)
        .reclaim_after(Duration::from_secs(60))
        .hole_timeout(Duration::from_millis(50))
}

/// Not a test of its own: a child that claims sequence 0 and hangs inside
/// its publish closure.
#[test]
fn ipc2_given_up_child() {
    let Ok(dir) = std::env::var(ROLE) else {
        return;
    };
    let dir = std::path::Path::new(&dir);
    let bus = opts(dir).open::<Ev>("twice").unwrap();
    let mut p = bus.producer().unwrap();
    let _ = p.publish(|e| {
        *e = Ev { producer: 99, k: 0 };
        std::fs::write(dir.join("claimed"), b"1").unwrap();
        thread::sleep(Duration::from_secs(600));
    });
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Two claims are given up (sequence 0, a slow writer the consumer gave
/// up, then killed; sequence 4, a `try_publish` claim left unmarked behind
/// it): `given_up` must be 2. It is 3: the claim of sequence 8 releases
/// the dead writer's GIVEN_UP mark of round 1 (`skip_behind`) and counts
/// that tombstone a second time before it releases sequence 4's claim.
#[test]
fn a_dead_given_up_writer_skipped_two_laps_on_counts_once() {
    let d = dir();
    let bus = opts(d.path()).create::<Ev>("twice").unwrap();
    // This process's producer takes entry 0 before the child: the child's
    // entry is never taken over (a takeover releases its marks uncounted).
    let mut p = bus.producer().unwrap();
    let mut c = bus.consumer("c").unwrap();
    let mut kid = Kid(Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ipc2_given_up_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, d.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap());
    wait_for("the child's claim of 0", || {
        d.path().join("claimed").exists()
    });
    for k in 0..3 {
        assert_eq!(p.publish(|e| *e = Ev { producer: 1, k }), Ok(k + 1));
    }
    // `c` gives the slow writer up (GIVEN_UP) and reads 1..=3.
    let mut seen = vec![];
    wait_for("c to pass 0..=3", || {
        c.poll(8, |e, _, _| seen.push(e.k)).unwrap();
        c.next_sequence() == 4
    });
    assert_eq!(seen, [0, 1, 2]);
    assert_eq!(c.tombstones(), 1);
    assert_eq!(bus.metrics().given_up, 1, "sequence 0 given up");
    // Sequence 4 (slot 0, round 2) is claimed; its slot is still the live
    // given-up writer's: `Full` at once, the claim left unmarked.
    assert_eq!(
        p.try_publish(|e| *e = Ev { producer: 1, k: 3 }),
        Err(IpcPublishError::Full)
    );
    assert_eq!(bus.metrics().cursor, 5);
    // The slow writer dies before it lets go: slot 0 stays GIVEN_UP.
    let _ = kid.0.kill();
    let _ = kid.0.wait();
    // Nobody waits at 4: `c` leaves, `late` joins past it.
    drop(c);
    let mut late = bus.consumer("late").unwrap();
    assert_eq!(late.next_sequence(), 5);
    // 5..=7, then 8: slot 0 again, two rounds past the dead writer's.
    for k in 3..7 {
        assert_eq!(p.publish(|e| *e = Ev { producer: 1, k }), Ok(k + 2));
    }
    let mut got = vec![];
    while late.poll(8, |e, _, _| got.push(e.k)).unwrap() > 0 {}
    assert_eq!(got, [3, 4, 5, 6]);
    // Claims given up: sequence 0 and sequence 4, once each.
    assert_eq!(
        bus.metrics().given_up,
        2,
        "given_up counts sequence 0's tombstone twice ({:?})",
        bus.metrics()
    );
}
