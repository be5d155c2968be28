//! Stages of the shared-memory bus (`IpcBus::stage`): a pipeline under
//! several producers and a ring that laps, each failure policy, a failed
//! stage resumed at its failed event or reclaimed, halts from another
//! handle, and bad configuration. Forbidden outcomes: an event lost or
//! handled twice, out of its producer's order, read by a later stage
//! before an earlier one handled it, a producer wedged, a join that hangs.
#![cfg(all(feature = "ipc", unix, not(miri), not(loom)))]

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use ringbus::ipc::{IpcBus, IpcError, Options, Pod, Wait, Zeroable};
use ringbus::{FailurePolicy, Sequence};

#[derive(Clone, Copy, Default, Pod, Zeroable, Debug, PartialEq, Eq)]
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
        .prefix("ringbus-ipc-stage")
        .tempdir_in(base)
        .unwrap()
}

fn events() -> u64 {
    if cfg!(debug_assertions) {
        3_000
    } else {
        30_000
    }
}

/// Publishes `0..n` from each of `producers` threads; returns their handles.
fn publish(bus: &IpcBus<Ev>, producers: u64, n: u64) -> Vec<thread::JoinHandle<()>> {
    (0..producers)
        .map(|id| {
            let mut p = bus.producer().unwrap();
            thread::spawn(move || {
                for k in 0..n {
                    if k % 7 == 3 {
                        p.batch_publish(1, |b| {
                            for e in b {
                                *e = Ev { producer: id, k }
                            }
                        })
                        .unwrap();
                    } else {
                        p.publish(|e| *e = Ev { producer: id, k }).unwrap();
                    }
                }
            })
        })
        .collect()
}

/// Per producer, the ks a stage handled, checked in order as they come.
#[derive(Default, Debug)]
struct Seen {
    next: HashMap<u64, u64>,
    skipped: BTreeSet<(u64, u64)>,
}

impl Seen {
    fn see(&mut self, e: &Ev, who: &str) {
        let next = self.next.entry(e.producer).or_default();
        while self.skipped.contains(&(e.producer, *next)) {
            *next += 1;
        }
        assert_eq!(
            e.k, *next,
            "{who}: producer {} expected k {} got {} (lost, twice or out of order)",
            e.producer, *next, e.k
        );
        *next += 1;
    }
    fn complete(&self, producers: u64, n: u64, who: &str) {
        for id in 0..producers {
            let mut next = self.next.get(&id).copied().unwrap_or(0);
            while self.skipped.contains(&(id, next)) {
                next += 1;
            }
            assert_eq!(next, n, "{who}: producer {id} stopped at {next} of {n}");
        }
    }
}

/// Two stages in a pipeline and one beside them, under three producers and
/// a ring of 8 that laps all the time, with every wait: each handles every
/// event once, in order, and the second never before the first.
#[test]
fn a_pipeline_of_stages_under_three_producers_and_a_tiny_ring() {
    for wait in [
        Wait::BusySpin,
        Wait::Yielding,
        Wait::Sleeping(Duration::from_micros(20)),
        Wait::Blocking,
    ] {
        let d = dir();
        let bus = Options::new(8)
            .multi_producer()
            .dir(d.path())
            .create::<Ev>("pipe")
            .unwrap()
            .with_wait(wait);
        let n = events() / 3;
        let first_done = Arc::new(AtomicU64::new(0));
        let seen: Vec<Arc<Mutex<Seen>>> = (0..3).map(|_| Arc::default()).collect();
        let first = {
            let (seen, done) = (seen[0].clone(), first_done.clone());
            bus.stage("first")
                .batch(3)
                .spawn(move |e: &Ev, seq: Sequence, _: bool| {
                    seen.lock().unwrap().see(e, "first");
                    done.store(seq as u64 + 1, Ordering::SeqCst);
                })
                .unwrap()
        };
        let second = {
            let (seen, done) = (seen[1].clone(), first_done.clone());
            bus.stage("second")
                .after(&["first"])
                .spawn(move |e: &Ev, seq: Sequence, _: bool| {
                    let up = done.load(Ordering::SeqCst);
                    assert!(
                        (seq as u64) < up,
                        "second read {seq} before first handled it ({up})"
                    );
                    seen.lock().unwrap().see(e, "second");
                })
                .unwrap()
        };
        let beside = {
            let seen = seen[2].clone();
            bus.stage("beside")
                .spawn(move |e: &Ev, _: Sequence, _: bool| seen.lock().unwrap().see(e, "beside"))
                .unwrap()
        };
        for t in publish(&bus, 3, n) {
            t.join().unwrap();
        }
        // Closed from another handle than the stages': they drain, then end.
        let closer = bus.clone();
        thread::spawn(move || closer.close()).join().unwrap();
        for (stage, seen) in [first, second, beside].into_iter().zip(&seen) {
            let name = stage.name().to_owned();
            let report = stage.join().unwrap();
            assert_eq!(report.handled, 3 * n, "{wait:?} {name}: {report:?}");
            assert!(report.failure.is_none(), "{wait:?} {name}: {report:?}");
            seen.lock().unwrap().complete(3, n, &name);
        }
    }
}

/// A stage that panics halts at the event (default policy) without
/// committing it; its entry keeps gating as a dead process's, the stage
/// after it waits, the producers wait, and a stage started again under the
/// name resumes at that very event: nothing is lost or handled twice.
#[test]
fn a_failed_stage_resumes_at_its_failed_event_when_started_again() {
    let d = dir();
    let bus = Options::new(4)
        .multi_producer()
        .dir(d.path())
        .reclaim_after(Duration::from_secs(60))
        .create::<Ev>("resume")
        .unwrap()
        .with_wait(Wait::Blocking);
    let n = events() / 2;
    let fail_at = n / 3;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let after_seen = Arc::new(Mutex::new(Seen::default()));
    let handled = Arc::new(AtomicU64::new(0));
    let handler = |fail: bool| {
        let (seen, handled) = (seen.clone(), handled.clone());
        move |e: &Ev, seq: Sequence, _: bool| {
            if fail && e.producer == 1 && e.k == fail_at {
                panic!("planned failure at {seq}");
            }
            seen.lock().unwrap().see(e, "audit");
            handled.store(seq as u64 + 1, Ordering::SeqCst);
        }
    };
    let audit = bus.stage("audit").spawn(handler(true)).unwrap();
    let after = {
        let (seen, handled) = (after_seen.clone(), handled.clone());
        bus.stage("after")
            .after(&["audit"])
            .spawn(move |e: &Ev, seq: Sequence, _: bool| {
                assert!(
                    (seq as u64) < handled.load(Ordering::SeqCst),
                    "after ran ahead at {seq}"
                );
                seen.lock().unwrap().see(e, "after");
            })
            .unwrap()
    };
    let producers = publish(&bus, 2, n);
    let report = audit.join().unwrap();
    let failure = report.failure.expect("the planned failure");
    assert!(failure.is_panic(), "{failure:?}");
    assert_eq!(report.panics, 1);
    assert_eq!(report.failed, 1);
    // The ring (4) is full behind the failed stage: the producers wait.
    thread::sleep(Duration::from_millis(50));
    assert!(producers.iter().any(|t| !t.is_finished()));
    let audit = bus.stage("audit").spawn(handler(false)).unwrap();
    for t in producers {
        t.join().unwrap();
    }
    bus.close();
    let again = audit.join().unwrap();
    assert!(again.failure.is_none(), "{again:?}");
    assert_eq!(report.handled + again.handled, 2 * n);
    seen.lock().unwrap().complete(2, n, "audit");
    assert_eq!(after.join().unwrap().handled, 2 * n);
    after_seen.lock().unwrap().complete(2, n, "after");
    assert_eq!(bus.metrics().reclaimed, 0);
}

/// A failed stage that nobody starts again is reclaimed after
/// `reclaim_after`: the producers and the stage after it go on.
#[test]
fn a_failed_stage_nobody_restarts_is_reclaimed_and_wedges_nothing() {
    let d = dir();
    let bus = Options::new(4)
        .dir(d.path())
        .reclaim_after(Duration::from_millis(30))
        .create::<Ev>("reclaim")
        .unwrap()
        .with_wait(Wait::Yielding);
    let n = 2_000;
    let failing = bus
        .stage("failing")
        .spawn(|e: &Ev, _: Sequence, _: bool| assert!(e.k != 100, "planned failure"))
        .unwrap();
    let after = bus
        .stage("after")
        .after(&["failing"])
        .spawn(|_: &Ev, _: Sequence, _: bool| {})
        .unwrap();
    for t in publish(&bus, 1, n) {
        t.join().unwrap();
    }
    let report = failing.join().unwrap();
    assert_eq!(report.handled, 100);
    assert!(report.failure.is_some());
    bus.close();
    assert_eq!(after.join().unwrap().handled, n);
    assert_eq!(bus.metrics().reclaimed, 1);
}

/// Skip, dead-letter and retry: every fifth event fails once (an `Err`, a
/// panic on the next); the policy decides, the rest is handled once each.
#[test]
fn each_failure_policy_routes_the_failed_events() {
    for policy in ["skip", "dead-letter", "retry"] {
        let d = dir();
        let bus = Options::new(16)
            .multi_producer()
            .dir(d.path())
            .create::<Ev>("policy")
            .unwrap()
            .with_wait(Wait::Yielding);
        let n = 1_000;
        let (letters_tx, letters) = mpsc::channel();
        let p = match policy {
            "skip" => FailurePolicy::skip(),
            "dead-letter" => FailurePolicy::dead_letter_to(letters_tx),
            _ => FailurePolicy::halt().retry(2, Duration::from_micros(10)),
        };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let failed_once = Arc::new(Mutex::new(BTreeSet::new()));
        let stage = {
            let (seen, failed_once) = (seen.clone(), failed_once.clone());
            bus.stage("s")
                .on_failure(p)
                .try_spawn(move |e: &Ev, _: Sequence, _: bool| -> Result<(), String> {
                    if e.k % 5 == 2 && failed_once.lock().unwrap().insert((e.producer, e.k)) {
                        if policy != "retry" {
                            // Never offered again: the order check skips it.
                            seen.lock().unwrap().skipped.insert((e.producer, e.k));
                        }
                        if e.k % 2 == 0 {
                            return Err(format!("planned error at {}", e.k));
                        }
                        panic!("planned panic at {}", e.k);
                    }
                    seen.lock().unwrap().see(e, "s");
                    Ok(())
                })
                .unwrap()
        };
        for t in publish(&bus, 2, n) {
            t.join().unwrap();
        }
        bus.close();
        let report = stage.join().unwrap();
        let failures = failed_once.lock().unwrap().len() as u64;
        assert_eq!(failures, 2 * (n / 5));
        assert!(report.failure.is_none(), "{policy}: {report:?}");
        assert_eq!(report.processed, 2 * n, "{policy}: {report:?}");
        let seen = seen.lock().unwrap();
        match policy {
            "retry" => {
                assert_eq!(report.retried, failures);
                assert_eq!(report.handled, 2 * n);
            }
            _ => {
                assert_eq!(report.handled, 2 * n - failures, "{policy}: {report:?}");
                let routed: BTreeSet<(u64, u64)> = if policy == "skip" {
                    assert_eq!(report.skipped, failures);
                    failed_once.lock().unwrap().clone()
                } else {
                    assert_eq!(report.dead_lettered, failures);
                    letters
                        .try_iter()
                        .map(|l| (l.event.producer, l.event.k))
                        .collect()
                };
                assert_eq!(routed, *failed_once.lock().unwrap());
                assert_eq!(routed, seen.skipped);
            }
        }
        seen.complete(2, n, policy);
    }
}

/// A dead-letter sink that panics fails the stage at that event: counted
/// failed once (not dead-lettered), the panic in the report, the entry kept
/// so a stage started again resumes there.
#[test]
fn a_panicking_dead_letter_sink_fails_the_stage_resumably() {
    let d = dir();
    let bus = Options::new(16)
        .dir(d.path())
        .reclaim_after(Duration::from_secs(60))
        .create::<Ev>("sink")
        .unwrap()
        .with_wait(Wait::Yielding);
    let stage = bus
        .stage("s")
        .on_failure(FailurePolicy::dead_letter(|_, _: &Ev, _, _| {
            panic!("the sink fails")
        }))
        .try_spawn(|e: &Ev, _: Sequence, _: bool| -> Result<(), String> {
            if e.k == 3 {
                return Err("fails at 3".into());
            }
            Ok(())
        })
        .unwrap();
    for t in publish(&bus, 1, 8) {
        t.join().unwrap();
    }
    let report = stage.join().unwrap();
    assert_eq!((report.failed, report.dead_lettered), (1, 0), "{report:?}");
    assert_eq!(report.handled, 3, "{report:?}");
    assert!(
        matches!(report.failure, Some(ringbus::Failure::Panic(_))),
        "{report:?}"
    );
    let mut again = bus.consumer("s").unwrap();
    assert!(again.resumed_from().is_some(), "resumed");
    assert_eq!(again.next_sequence(), 3, "at the failed event");
    let _ = again.poll(16, |_, _, _| {});
}

/// Halted from another handle while it sleeps, while producers publish:
/// the join ends, the stage leaves its place, and the producers are not
/// held by it. Dropping a stage halts it too.
#[test]
fn a_stage_halted_from_another_thread_leaves_and_holds_nobody() {
    let d = dir();
    let bus = Options::new(8)
        .dir(d.path())
        .create::<Ev>("halt")
        .unwrap()
        .with_wait(Wait::Blocking);
    let stage = Arc::new(Mutex::new(Some(
        bus.stage("sleepy")
            .spawn(|_: &Ev, _: Sequence, _: bool| thread::sleep(Duration::from_micros(50)))
            .unwrap(),
    )));
    let dropped = bus
        .stage("dropped")
        .spawn(|_: &Ev, _: Sequence, _: bool| {})
        .unwrap();
    let producer = publish(&bus, 1, 5_000);
    let halter = {
        let stage = stage.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(5));
            stage.lock().unwrap().as_ref().unwrap().halt();
        })
    };
    drop(dropped);
    halter.join().unwrap();
    let stage = stage.lock().unwrap().take().unwrap();
    let report = stage.join().unwrap();
    assert!(report.failure.is_none());
    for t in producer {
        t.join().unwrap();
    }
    assert!(
        bus.metrics().consumers.is_empty(),
        "{:?}",
        bus.metrics().consumers
    );
}

#[test]
fn bad_stage_configuration_is_named() {
    let d = dir();
    let bus = Options::new(8).dir(d.path()).create::<Ev>("bad").unwrap();
    let _a = bus
        .stage("a")
        .spawn(|_: &Ev, _: Sequence, _: bool| {})
        .unwrap();
    match bus.stage("a").spawn(|_: &Ev, _: Sequence, _: bool| {}) {
        Err(IpcError::NameInUse { name, .. }) => assert_eq!(name, "a"),
        other => panic!("{other:?}"),
    }
    match bus
        .stage("b")
        .pin_at_core(100_000)
        .spawn(|_: &Ev, _: Sequence, _: bool| {})
    {
        Err(e @ IpcError::Config { .. }) => {
            assert!(e.to_string().contains("pin_at_core"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    match bus
        .stage("c")
        .after(&["c"])
        .spawn(|_: &Ev, _: Sequence, _: bool| {})
    {
        Err(IpcError::Config { .. }) => {}
        other => panic!("{other:?}"),
    }
    // The refused stages took no place.
    assert_eq!(bus.metrics().consumers.len(), 1);
}

/// Waits for `f` on another thread, at most `secs` (a hang detector, not a
/// speed check: what it waits for takes milliseconds).
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what}: still waiting after {secs} s (a hang)"))
}

/// A stage idle in a `Blocking` sleep ends when halted; `join_timeout`
/// returns even when the handler is stuck, saying so.
#[test]
fn an_idle_stage_halts_and_join_timeout_bounds_a_stuck_one() {
    let d = dir();
    let bus = Options::new(8)
        .dir(d.path())
        .create::<Ev>("idle")
        .unwrap()
        .with_wait(Wait::Blocking);
    let idle = bus
        .stage("idle")
        .spawn(|_: &Ev, _: Sequence, _: bool| {})
        .unwrap();
    thread::sleep(Duration::from_millis(20)); // asleep on the futex by now
    idle.halt();
    let report = within(10, "an idle stage's join", move || idle.join().unwrap());
    assert_eq!(report.handled, 0);
    let stuck = bus
        .stage("stuck")
        .spawn(|_: &Ev, _: Sequence, _: bool| thread::sleep(Duration::from_secs(2)))
        .unwrap();
    bus.producer().unwrap().publish(|e| e.k = 1).unwrap();
    thread::sleep(Duration::from_millis(20)); // in its handler by now
    let report = within(10, "join_timeout", move || {
        stuck.join_timeout(Duration::from_millis(50)).unwrap()
    });
    assert!(report.still_running, "{report:?}");
}

/// A stage that failed and is not started again holds the stage after it
/// until it is reclaimed; on a closed bus with room to spare no producer
/// waits to reclaim it, so the stage after it does: it ends, having
/// handled every event.
#[test]
fn on_a_closed_bus_the_stage_after_a_failed_one_ends() {
    let d = dir();
    let bus = Options::new(64)
        .dir(d.path())
        .reclaim_after(Duration::from_millis(20))
        .create::<Ev>("closed")
        .unwrap()
        .with_wait(Wait::Blocking);
    let failing = bus
        .stage("failing")
        .spawn(|e: &Ev, _: Sequence, _: bool| assert!(e.k != 10, "planned failure"))
        .unwrap();
    let after = bus
        .stage("after")
        .after(&["failing"])
        .spawn(|_: &Ev, _: Sequence, _: bool| {})
        .unwrap();
    for t in publish(&bus, 1, 30) {
        t.join().unwrap();
    }
    let report = failing.join().unwrap();
    assert_eq!(report.handled, 10);
    bus.close();
    let report = within(10, "the stage after a failed one", move || {
        after.join().unwrap()
    });
    assert_eq!(report.handled, 30);
    assert_eq!(bus.metrics().reclaimed, 1);
}

/// On an open bus that went quiet (a producer still attached, publishing
/// nothing, the ring never full) no producer reclaims a failed stage, so
/// the stage after it does, after `reclaim_after`: it goes on to the last
/// event without a close, under every wait, and the reclaim is counted.
#[test]
fn on_a_quiet_open_bus_the_stage_after_a_failed_one_reclaims_it_and_goes_on() {
    for (i, wait) in [
        Wait::Blocking,
        Wait::BusySpin,
        Wait::Yielding,
        Wait::Sleeping(Duration::from_micros(200)),
    ]
    .into_iter()
    .enumerate()
    {
        let d = dir();
        let bus = Options::new(64)
            .dir(d.path())
            .reclaim_after(Duration::from_millis(20))
            .create::<Ev>("quiet")
            .unwrap()
            .with_wait(wait);
        let failing = bus
            .stage("failing")
            .spawn(|e: &Ev, _: Sequence, _: bool| assert!(e.k != 10, "planned failure"))
            .unwrap();
        let read = Arc::new(AtomicU64::new(0));
        let r = read.clone();
        let after = bus
            .stage("after")
            .after(&["failing"])
            .spawn(move |e: &Ev, _: Sequence, _: bool| {
                assert_eq!(e.k, r.fetch_add(1, Ordering::SeqCst), "out of order");
            })
            .unwrap();
        // Kept: the bus has a producer (open, not closed) that is idle.
        let mut p = bus.producer().unwrap();
        for k in 0..30 {
            p.publish(|e| *e = Ev { producer: 0, k }).unwrap();
        }
        assert_eq!(failing.join().unwrap().handled, 10);
        let r = read.clone();
        within(
            10,
            &format!("wait {i}: the stage after a failed one"),
            move || {
                while r.load(Ordering::SeqCst) < 30 {
                    thread::sleep(Duration::from_millis(1));
                }
            },
        );
        assert_eq!(bus.metrics().reclaimed, 1, "wait {i}");
        assert!(!bus.is_closed());
        // The producer goes on: the reclaimed stage no longer gates it.
        for k in 30..200 {
            p.publish(|e| *e = Ev { producer: 0, k }).unwrap();
        }
        drop(p);
        bus.close();
        let report = within(10, "the stage after, closed", move || after.join().unwrap());
        assert_eq!(report.handled, 200, "wait {i}");
    }
}

/// A consumer after a stage that fails and is reclaimed (by a producer
/// that needs the room) before the consumer's first poll: the stage was
/// there when the consumer joined, so it is gone, not "not seen yet", and
/// the consumer reads everything instead of waiting where it joined.
#[test]
fn an_upstream_reclaimed_before_the_first_poll_no_longer_holds() {
    let d = dir();
    let bus = Options::new(4)
        .dir(d.path())
        .reclaim_after(Duration::from_millis(5))
        .create::<Ev>("early")
        .unwrap();
    let failing = bus
        .stage("failing")
        .spawn(|_: &Ev, _: Sequence, _: bool| panic!("planned failure"))
        .unwrap();
    let mut after = bus.consumer_after("after", &["failing"]).unwrap();
    let mut p = bus.producer().unwrap();
    p.publish(|e| *e = Ev { producer: 0, k: 0 }).unwrap();
    let report = within(10, "the failing stage", move || failing.join().unwrap());
    assert_eq!(report.handled, 0);
    // The ring fills behind "after" and the dead stage; a producer that
    // needs room reclaims the stage once it has been dead for 5 ms.
    for k in 1..4 {
        p.publish(|e| *e = Ev { producer: 0, k }).unwrap();
    }
    let start = std::time::Instant::now();
    while bus.metrics().reclaimed == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "never reclaimed");
        let _ = p.try_publish(|e| *e = Ev { producer: 0, k: 99 });
        thread::sleep(Duration::from_millis(1));
    }
    // The first poll of "after".
    let mut seen = vec![];
    let start = std::time::Instant::now();
    while seen.len() < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "held by a reclaimed upstream: {seen:?}"
        );
        after
            .poll_timeout(Duration::from_millis(1), 16, |e, _, _| seen.push(e.k))
            .or_else(|e| match e {
                ringbus::ipc::IpcPollError::Timeout => Ok(0),
                e => Err(e),
            })
            .unwrap();
    }
    assert_eq!(seen[..4], [0, 1, 2, 3]);
}

/// `timeout`: on an idle bus `on_timeout` comes again and again with the
/// last sequence the stage handled (-1 before any), and after events with
/// the last of them; a panic in it fails the stage as a hook's does, and
/// the stage started again resumes after what it had handled.
#[test]
fn a_stage_timeout_calls_on_timeout_with_the_last_sequence_handled() {
    struct Timed {
        calls: Arc<Mutex<Vec<Sequence>>>,
        last: Sequence,
        handled: Arc<Mutex<Vec<u64>>>,
        panic_on_call: Option<usize>,
    }
    impl ringbus::EventHandler<Ev> for Timed {
        fn on_event(&mut self, e: &Ev, seq: Sequence, _: bool) {
            self.last = seq;
            self.handled.lock().unwrap().push(e.k);
        }
        fn on_timeout(&mut self, seq: Sequence) {
            assert_eq!(seq, self.last, "on_timeout's sequence is the last handled");
            let n = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(seq);
                calls.len()
            };
            if Some(n) == self.panic_on_call {
                panic!("planned panic in on_timeout");
            }
        }
    }
    let d = dir();
    let bus = Options::new(8)
        .dir(d.path())
        .create::<Ev>("timed")
        .unwrap()
        .with_wait(Wait::Blocking);
    let timed = |last: Sequence, panic_on_call: Option<usize>| Timed {
        calls: Arc::new(Mutex::new(vec![])),
        last,
        handled: Arc::new(Mutex::new(vec![])),
        panic_on_call,
    };
    let wait_for = |what: &str, calls: &Arc<Mutex<Vec<Sequence>>>, f: fn(&[Sequence]) -> bool| {
        let calls = calls.clone();
        within(10, what, move || {
            while !f(&calls.lock().unwrap()) {
                thread::sleep(Duration::from_millis(1));
            }
        });
    };
    let h = timed(-1, None);
    let (calls, handled) = (h.calls.clone(), h.handled.clone());
    let stage = bus
        .stage("timed")
        .timeout(Duration::from_millis(5))
        .spawn(h)
        .unwrap();
    wait_for("two timeouts while idle", &calls, |c| c.len() >= 2);
    assert!(calls.lock().unwrap().iter().all(|&s| s == -1));
    let mut p = bus.producer().unwrap();
    for k in 0..5 {
        p.publish(|e| *e = Ev { producer: 0, k }).unwrap();
    }
    wait_for("a timeout after the events", &calls, |c| {
        c.last() == Some(&4)
    });
    stage.halt();
    let report = stage.join().unwrap();
    assert!(report.failure.is_none(), "{report:?}");
    assert_eq!(report.handled, 5);
    assert_eq!(*handled.lock().unwrap(), [0, 1, 2, 3, 4]);

    // A panic in on_timeout fails the stage at its place.
    let h = timed(4, Some(1));
    let calls = h.calls.clone();
    let failing = bus
        .stage("timed")
        .timeout(Duration::from_millis(2))
        .spawn(h)
        .unwrap();
    wait_for("the panicking timeout", &calls, |c| !c.is_empty());
    let report = within(10, "the failed stage", move || failing.join().unwrap());
    assert_eq!(report.panics, 1, "{report:?}");
    assert!(
        report
            .failure
            .as_ref()
            .is_some_and(|f| f.to_string().contains("planned panic in on_timeout")),
        "{report:?}"
    );
    for k in 5..7 {
        p.publish(|e| *e = Ev { producer: 0, k }).unwrap();
    }
    // Started again: it resumes where the failed one stopped.
    let h = timed(4, None);
    let handled = h.handled.clone();
    let again = bus.stage("timed").spawn(h).unwrap();
    let seen = handled.clone();
    within(10, "the resumed stage", move || {
        while seen.lock().unwrap().len() < 2 {
            thread::sleep(Duration::from_millis(1));
        }
    });
    again.halt();
    assert_eq!(again.join().unwrap().handled, 2);
    assert_eq!(*handled.lock().unwrap(), [5, 6]);
}

/// The handler's hooks: `on_start` and `on_shutdown` once each (no
/// `on_shutdown` after a hook's panic), every
/// batch announced by `on_batch_start` with its size and ended by one
/// `end_of_batch`; a panic in a hook fails the stage as a handler's does,
/// and a stage started again resumes at that batch's first event.
#[test]
fn hooks_are_called_and_a_panicking_hook_fails_the_stage_resumably() {
    #[derive(Default)]
    struct Calls {
        starts: u64,
        shutdowns: u64,
        batches: Vec<u64>,
        ends: u64,
        events: Vec<u64>,
    }
    struct Hooked {
        calls: Arc<Mutex<Calls>>,
        panic_at_batch: Option<usize>,
    }
    impl ringbus::EventHandler<Ev> for Hooked {
        fn on_event(&mut self, e: &Ev, _: Sequence, end_of_batch: bool) {
            let mut c = self.calls.lock().unwrap();
            c.events.push(e.k);
            c.ends += u64::from(end_of_batch);
        }
        fn on_batch_start(&mut self, n: u64) {
            let mut c = self.calls.lock().unwrap();
            c.batches.push(n);
            if Some(c.batches.len()) == self.panic_at_batch {
                drop(c);
                panic!("planned panic in on_batch_start");
            }
        }
        fn on_start(&mut self) {
            self.calls.lock().unwrap().starts += 1;
        }
        fn on_shutdown(&mut self) {
            self.calls.lock().unwrap().shutdowns += 1;
        }
    }
    let d = dir();
    let bus = Options::new(16)
        .dir(d.path())
        .reclaim_after(Duration::from_secs(60))
        .create::<Ev>("hooks")
        .unwrap()
        .with_wait(Wait::Yielding);
    let first = Arc::new(Mutex::new(Calls::default()));
    let stage = bus
        .stage("hooked")
        .batch(5)
        .spawn(Hooked {
            calls: first.clone(),
            panic_at_batch: Some(3),
        })
        .unwrap();
    let n = 200;
    let producer = publish(&bus, 1, n);
    let report = stage.join().unwrap();
    assert!(report.failure.is_some(), "{report:?}");
    // Its counts are kept: the two batches it handled.
    let handled_first = first.lock().unwrap().events.len() as u64;
    assert_eq!(report.handled, handled_first, "{report:?}");
    assert_eq!(report.panics, 1, "{report:?}");
    let second = Arc::new(Mutex::new(Calls::default()));
    let stage = bus
        .stage("hooked")
        .batch(5)
        .spawn(Hooked {
            calls: second.clone(),
            panic_at_batch: None,
        })
        .unwrap();
    for t in producer {
        t.join().unwrap();
    }
    bus.close();
    let report = stage.join().unwrap();
    assert!(report.failure.is_none(), "{report:?}");
    let (a, b) = (first.lock().unwrap(), second.lock().unwrap());
    // Two batches handled, the third failed before its first event: the
    // second life starts at that event.
    assert_eq!(a.batches.len(), 3);
    assert_eq!(a.events.len() as u64, a.batches[0] + a.batches[1]);
    let all: Vec<u64> = a.events.iter().chain(&b.events).copied().collect();
    assert_eq!(
        all,
        (0..n).collect::<Vec<_>>(),
        "lost, twice or out of order"
    );
    // A hook's panic ends the handler's calls: no on_shutdown then.
    assert_eq!((a.starts, a.shutdowns), (1, 0));
    assert_eq!((b.starts, b.shutdowns), (1, 1));
    assert_eq!(b.batches.iter().sum::<u64>(), b.events.len() as u64);
    assert_eq!(b.ends, b.batches.len() as u64, "one end_of_batch per batch");
    assert!(b.batches.iter().all(|&n| (1..=5).contains(&n)));
}

/// Producers of a multi-producer bus claim, then wait for room while a
/// failed stage holds the ring (its entry gates for `reclaim_after`, far
/// longer than the hole timeout). A consumer waits at their claims all
/// that time. Once the failed stage is reclaimed, the claims are theirs to
/// publish: the consumer gives a claim up only a whole hole timeout after
/// the ring had room for it, so no live producer gets `GivenUp` for having
/// waited for room. Before, the consumer gave every such claim up the
/// moment the stage was reclaimed.
#[test]
fn claims_waiting_for_room_behind_a_failed_stage_are_not_given_up() {
    for wait in [Wait::BusySpin, Wait::Blocking] {
        let d = dir();
        let bus = Options::new(8)
            .multi_producer()
            .dir(d.path())
            .reclaim_after(Duration::from_millis(400))
            .hole_timeout(Duration::from_millis(100))
            .create::<Ev>("held")
            .unwrap()
            .with_wait(wait);
        let failing = bus
            .stage("failing")
            .spawn(|_: &Ev, _: Sequence, _: bool| panic!("planned failure"))
            .unwrap();
        let mut live = bus.consumer("live").unwrap();
        let per = 40u64;
        let producers: Vec<_> = (0..3u64)
            .map(|id| {
                let mut p = bus.producer().unwrap();
                thread::spawn(move || {
                    (0..per)
                        .map(|k| p.publish(|e| *e = Ev { producer: id, k }))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let live = within(20, &format!("{wait:?}: the live consumer"), move || {
            let mut seen: HashMap<u64, u64> = HashMap::new();
            while seen.values().sum::<u64>() < 3 * per {
                live.poll_timeout(Duration::from_secs(10), 16, |e, _, _| {
                    let next = seen.entry(e.producer).or_default();
                    assert_eq!(e.k, *next, "producer {}: lost or out of order", e.producer);
                    *next += 1;
                })
                .unwrap();
            }
            live
        });
        for p in producers {
            let results = p.join().unwrap();
            assert!(
                results.iter().all(Result::is_ok),
                "{wait:?}: a producer waiting for room lost its claim: {:?}",
                results.iter().filter(|r| r.is_err()).collect::<Vec<_>>()
            );
        }
        assert_eq!(live.tombstones(), 0, "{wait:?}");
        let m = bus.metrics();
        assert_eq!((m.reclaimed, m.given_up), (1, 0), "{wait:?}");
        let _ = failing.join();
        bus.close();
    }
}

/// A panic in `on_shutdown` after a halt fails the stage as the module
/// docs say: the report keeps its counts and names the panic, and the
/// entry stays for a successor, which resumes where the stage stopped.
/// Before, the entry was left first (a successor joined at the present)
/// and the thread's panic gave a report with no counts.
#[test]
fn a_panic_in_on_shutdown_after_a_halt_fails_the_stage_resumably() {
    struct PanicsAtShutdown(Arc<AtomicU64>);
    impl ringbus::EventHandler<Ev> for PanicsAtShutdown {
        fn on_event(&mut self, _: &Ev, _: Sequence, _: bool) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn on_shutdown(&mut self) {
            panic!("planned panic in on_shutdown");
        }
    }
    let d = dir();
    let bus = Options::new(16)
        .dir(d.path())
        .reclaim_after(Duration::from_secs(60))
        .create::<Ev>("shutdownpanic")
        .unwrap()
        .with_wait(Wait::Yielding);
    let handled = Arc::new(AtomicU64::new(0));
    let stage = bus
        .stage("shut")
        .spawn(PanicsAtShutdown(handled.clone()))
        .unwrap();
    let mut p = bus.producer().unwrap();
    for k in 0..10 {
        p.publish(|e| *e = Ev { producer: 1, k }).unwrap();
    }
    let start = std::time::Instant::now();
    while handled.load(Ordering::SeqCst) < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the stage never handled 10"
        );
        thread::sleep(Duration::from_millis(1));
    }
    stage.halt();
    let report = stage.join().unwrap();
    assert_eq!(report.handled, 10, "{report:?}");
    assert!(
        matches!(&report.failure, Some(ringbus::Failure::Panic(m)) if m.contains("on_shutdown")),
        "{report:?}"
    );
    for k in 10..15 {
        p.publish(|e| *e = Ev { producer: 1, k }).unwrap();
    }
    let successor = bus.consumer("shut").unwrap();
    assert_eq!(
        successor.next_sequence(),
        10,
        "resumed where the stage stopped"
    );
}

/// A panic of the handler itself (default policy: the stage fails) ends
/// the handler's calls as a hook's does: no `on_shutdown`, as the handler
/// docs say and a bus of one process does; an `Err` still gets it.
#[test]
fn no_on_shutdown_after_the_handler_panicked() {
    struct Fails {
        panics: bool,
        shutdowns: Arc<AtomicU64>,
    }
    impl ringbus::TryEventHandler<Ev> for Fails {
        type Error = String;
        fn on_event(&mut self, e: &Ev, _: Sequence, _: bool) -> Result<(), String> {
            match (e.k, self.panics) {
                (3, true) => panic!("planned panic"),
                (3, false) => Err("planned error".into()),
                _ => Ok(()),
            }
        }
        fn on_shutdown(&mut self) {
            self.shutdowns.fetch_add(1, Ordering::Relaxed);
        }
    }
    for panics in [true, false] {
        let d = dir();
        let bus = Options::new(16)
            .dir(d.path())
            .create::<Ev>("failing")
            .unwrap()
            .with_wait(Wait::Yielding);
        let shutdowns = Arc::new(AtomicU64::new(0));
        let stage = bus
            .stage("s")
            .try_spawn(Fails {
                panics,
                shutdowns: shutdowns.clone(),
            })
            .unwrap();
        for t in publish(&bus, 1, 8) {
            t.join().unwrap();
        }
        let report = stage.join().unwrap();
        assert_eq!(report.handled, 3, "panics {panics}: {report:?}");
        assert_eq!(
            shutdowns.load(Ordering::Relaxed),
            u64::from(!panics),
            "panics {panics}"
        );
        bus.close();
    }
}

/// `IpcStage::halt` says the stage "commits what it handled and
/// leaves its place, as a dropped consumer does". The failure guide says
/// "a halted stage does not call the handler again", and the in-process
/// stage loop checks the halt before each event when it handles them one by
/// one (stage_loop.rs, commit f5e3ecc). The ipc stage checks its halt flag
/// only between batches (stage.rs, `run`). So after `halt()` returns it keeps
/// calling the handler for the rest of the batch (up to 1,024 events). Any
/// event there that fails gets no retry (retry_after sees the halt), so under
/// `halt().retry(..)` a clean halt turns into a failed stage: the report
/// carries a failure, and the entry is orphaned (pid 0) and keeps gating the
/// producers for `reclaim_after`.
#[test]
fn a_halt_mid_batch_calls_the_handler_no_more_and_leaves_cleanly() {
    use std::sync::atomic::AtomicBool;
    let d = dir();
    let bus = Options::new(64)
        .dir(d.path())
        .reclaim_after(Duration::from_secs(60))
        .create::<Ev>("haltbatch")
        .unwrap()
        .with_wait(Wait::Yielding);
    // An upstream the test drives. It passes 20 events in one poll, so the
    // stage gets all 20 in one batch.
    let mut gate = bus.consumer("gate").unwrap();
    let halted = Arc::new(AtomicBool::new(false));
    let calls_after_halt = Arc::new(AtomicU64::new(0));
    let attempts_at_1 = Arc::new(AtomicU64::new(0));
    let (in_first_tx, in_first) = mpsc::channel::<()>();
    let stage = {
        let (halted, calls_after_halt, attempts_at_1) = (
            halted.clone(),
            calls_after_halt.clone(),
            attempts_at_1.clone(),
        );
        bus.stage("s")
            .after(&["gate"])
            .on_failure(FailurePolicy::halt().retry(3, Duration::from_millis(1)))
            .try_spawn(move |e: &Ev, _: Sequence, _: bool| -> Result<(), String> {
                if halted.load(Ordering::SeqCst) {
                    calls_after_halt.fetch_add(1, Ordering::SeqCst);
                }
                match e.k {
                    0 => {
                        // The test halts the stage while it is here.
                        in_first_tx.send(()).unwrap();
                        thread::sleep(Duration::from_millis(200));
                        Ok(())
                    }
                    // A transient failure: the policy's retry would absorb it.
                    1 if attempts_at_1.fetch_add(1, Ordering::SeqCst) == 0 => {
                        Err("transient".into())
                    }
                    _ => Ok(()),
                }
            })
            .unwrap()
    };
    let mut p = bus.producer().unwrap();
    for k in 0..20 {
        p.publish(|e| *e = Ev { producer: 0, k }).unwrap();
    }
    assert_eq!(gate.poll(64, |_, _, _| {}).unwrap(), 20);
    in_first
        .recv_timeout(Duration::from_secs(10))
        .expect("the stage never got event 0");
    stage.halt();
    halted.store(true, Ordering::SeqCst); // the handler sleeps 200 ms more
    let report = within(10, "the halted stage", move || stage.join().unwrap());
    assert_eq!(
        calls_after_halt.load(Ordering::SeqCst),
        0,
        "the handler was called after halt() returned: {report:?}"
    );
    assert!(
        report.failure.is_none(),
        "a halt turned into a failure: {report:?}"
    );
    let m = bus.metrics();
    assert!(
        !m.consumers.iter().any(|c| c.name == "s"),
        "the halted stage left an orphaned entry that gates: {:?}",
        m.consumers
    );
    drop(p);
    drop(gate);
}

/// `on_batch_start(batch_size)` is documented as "batch_size events
/// follow". On a multi-producer bus the ipc stage passes the count of
/// *slots*, tombstones included (consumer.rs `handle_until`:
/// `batch(stop - self.next)`). Fewer `on_event` calls come than were
/// announced, so a handler that sizes a buffer or counts down to the end of
/// the batch from it gets it wrong. The existing hooks test runs only on a
/// single-producer bus, which has no tombstones.
#[test]
fn on_batch_start_announces_events_not_tombstones() {
    struct Counted(Arc<Mutex<(Vec<u64>, u64)>>);
    impl ringbus::EventHandler<Ev> for Counted {
        fn on_event(&mut self, _: &Ev, _: Sequence, _: bool) {
            self.0.lock().unwrap().1 += 1;
        }
        fn on_batch_start(&mut self, n: u64) {
            self.0.lock().unwrap().0.push(n);
        }
    }
    let d = dir();
    let bus = Options::new(16)
        .multi_producer()
        .dir(d.path())
        .create::<Ev>("tombbatch")
        .unwrap()
        .with_wait(Wait::Yielding);
    // An upstream the test drives: the stage gets 0, the tombstone and 2 in
    // one batch.
    let mut gate = bus.consumer("gate").unwrap();
    let calls = Arc::new(Mutex::new((Vec::new(), 0u64)));
    let stage = bus
        .stage("s")
        .after(&["gate"])
        .spawn(Counted(calls.clone()))
        .unwrap();
    let mut p = bus.producer().unwrap();
    p.publish(|e| *e = Ev { producer: 0, k: 0 }).unwrap();
    // A publish whose closure panics lets its claim go: a tombstone at 1.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = p.publish(|_| panic!("planned panic in a publish"));
    }));
    assert!(panicked.is_err());
    p.publish(|e| *e = Ev { producer: 0, k: 2 }).unwrap();
    assert_eq!(gate.poll(16, |_, _, _| {}).unwrap(), 2);
    assert_eq!(gate.next_sequence(), 3, "the tombstone was passed too");
    let c = calls.clone();
    within(10, "the stage's two events", move || {
        while c.lock().unwrap().1 < 2 {
            thread::sleep(Duration::from_millis(1));
        }
    });
    stage.halt();
    let report = stage.join().unwrap();
    assert_eq!(report.handled, 2);
    let (batches, events) = calls.lock().unwrap().clone();
    assert_eq!(
        batches.iter().sum::<u64>(),
        events,
        "on_batch_start announced {batches:?} for {events} events"
    );
    drop(p);
    drop(gate);
}

/// Consumers that would wait for each other for ever (a cycle of `after`
/// names, direct or through others, stages or plain consumers) are refused
/// with `Config` naming the cycle; the refused one takes no place, and a
/// diamond (no cycle) is accepted.
#[test]
fn a_cycle_of_consumers_is_refused_not_a_silent_deadlock() {
    let d = dir();
    let bus = Options::new(4)
        .dir(d.path())
        .consumers(8)
        .create::<Ev>("cycle")
        .unwrap()
        .with_wait(Wait::Yielding);
    let cycle = |r: Result<_, IpcError>, what: &str| match r {
        Err(IpcError::Config { reason }) => {
            assert!(reason.contains("cycle"), "{what}: {reason}");
        }
        Err(e) => panic!("{what}: {e}"),
        Ok(_) => panic!("{what}: a cycle was accepted"),
    };
    // Directly: stages, the upstream not joined yet when the first starts.
    let a = bus
        .stage("a")
        .after(&["b"])
        .spawn(|_: &Ev, _: Sequence, _: bool| {})
        .unwrap();
    cycle(
        bus.stage("b")
            .after(&["a"])
            .spawn(|_: &Ev, _: Sequence, _: bool| {})
            .map(|_| ()),
        "b after a after b",
    );
    // Through others: plain consumers.
    let c = bus.consumer_after("c", &["a"]).unwrap();
    cycle(
        bus.consumer_after("b", &["x", "c"]).map(|_| ()),
        "b after c after a after b",
    );
    // The refused ones took no place: "b" joins without upstreams, and a
    // diamond after it is accepted.
    let b = bus.consumer("b").unwrap();
    let left = bus.consumer_after("left", &["b"]).unwrap();
    let right = bus.consumer_after("right", &["b"]).unwrap();
    let join = bus.consumer_after("join", &["left", "right"]).unwrap();
    assert_eq!(bus.metrics().consumers.len(), 6);
    // The pipeline moves: nothing waits for ever.
    let mut p = bus.producer().unwrap();
    let mut all = vec![b, left, right, join, c];
    for k in 0..12 {
        p.publish_timeout(Duration::from_secs(10), |e| *e = Ev { producer: 0, k })
            .unwrap();
        for consumer in &mut all {
            let got = consumer
                .poll_timeout(Duration::from_secs(10), 1, |e, _, _| assert_eq!(e.k, k))
                .unwrap();
            assert_eq!(got, 1);
        }
    }
    a.halt();
    a.join().unwrap();
}

/// Two consumers that join at once, each after the other, many times over:
/// at least one is refused every time (the loom model
/// `ipc_of_two_consumers_joining_each_after_the_other_one_is_refused`
/// checks the interleavings).
#[test]
fn of_two_consumers_joining_each_after_the_other_at_least_one_is_refused() {
    let d = dir();
    let bus = Options::new(4)
        .dir(d.path())
        .create::<Ev>("cycle2")
        .unwrap();
    for round in 0..if cfg!(miri) { 5 } else { 300 } {
        let start = Arc::new(std::sync::Barrier::new(2));
        let join = |name: &'static str, after: &'static str| {
            let (bus, start) = (bus.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                bus.consumer_after(name, &[after])
            })
        };
        let (x, y) = (join("x", "y"), join("y", "x"));
        let (x, y) = (x.join().unwrap(), y.join().unwrap());
        assert!(
            x.is_err() || y.is_err(),
            "round {round}: both joined, each after the other"
        );
        for r in [&x, &y] {
            if let Err(e) = r {
                assert!(matches!(e, IpcError::Config { .. }), "{e}");
            }
        }
        drop((x, y));
        assert!(bus.metrics().consumers.is_empty());
    }
}

/// A join refused for a cycle leaves no trace a consumer waiting for that
/// name would take for an upstream that came and went: "d", waiting for an
/// "a" that never joined, still passes nothing after "a after d" is
/// refused (it passed all 3 events when the refused entry kept its name).
#[test]
fn a_refused_join_leaves_no_trace() {
    let d = dir();
    let bus = Options::new(8)
        .dir(d.path())
        .create::<Ev>("cycle3")
        .unwrap()
        .with_wait(Wait::Yielding);
    let mut waiting = bus.consumer_after("d", &["a"]).unwrap();
    assert!(matches!(
        bus.consumer_after("a", &["d"]),
        Err(IpcError::Config { .. })
    ));
    let mut p = bus.producer().unwrap();
    for k in 0..3 {
        p.publish(|e| *e = Ev { producer: 0, k }).unwrap();
    }
    assert!(matches!(
        waiting.poll_timeout(Duration::from_millis(50), 8, |_, _, _| {}),
        Err(ringbus::ipc::IpcPollError::Timeout)
    ));
    assert_eq!(
        waiting.next_sequence(),
        0,
        "d passed an upstream never seen"
    );
}
