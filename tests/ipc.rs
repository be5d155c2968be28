//! The shared-memory bus (`ringbus::ipc`): threads of one process, and real
//! processes (this test binary started again in a role) killed with SIGKILL
//! at random moments. Forbidden outcomes: an event lost for a live
//! consumer, delivered twice, out of its producer's order, or read while
//! written; a dead process wedging the others; a bad file opened.
#![cfg(all(feature = "ipc", unix, not(miri), not(loom)))]

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringbus::ipc::{IpcError, IpcPollError, IpcPublishError, Options, Pod, Wait, Zeroable};

/// An event that shows a torn write: `check` is derived from the rest.
#[derive(Clone, Copy, Default, Pod, Zeroable, Debug)]
#[repr(C)]
struct Ev {
    producer: u64,
    k: u64,
    pad: [u64; 4],
    check: u64,
}

impl Ev {
    fn set(&mut self, producer: u64, k: u64) {
        self.producer = producer;
        self.k = k;
        self.pad = [k ^ 0x55; 4];
        self.check = producer.wrapping_mul(31) ^ k.rotate_left(7);
    }
    fn verify(&self) {
        assert_eq!(
            self.check,
            self.producer.wrapping_mul(31) ^ self.k.rotate_left(7),
            "torn event {self:?}"
        );
        assert_eq!(self.pad, [self.k ^ 0x55; 4], "torn event {self:?}");
    }
}

fn dir() -> tempfile::TempDir {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    tempfile::Builder::new()
        .prefix("ringbus-ipc-test")
        .tempdir_in(base)
        .unwrap()
}

/// Per producer, the ks seen must be 0, 1, 2, ... with nothing twice.
#[derive(Default)]
struct Order(HashMap<u64, u64>);

impl Order {
    fn see(&mut self, e: &Ev) {
        e.verify();
        let next = self.0.entry(e.producer).or_default();
        assert_eq!(
            e.k, *next,
            "producer {}: expected k {} got {} (lost, twice or out of order)",
            e.producer, *next, e.k
        );
        *next += 1;
    }
}

#[test]
fn one_producer_to_two_consumers_in_threads_with_every_wait() {
    for wait in [
        Wait::BusySpin,
        Wait::Yielding,
        Wait::Sleeping(Duration::from_micros(20)),
        Wait::Blocking,
    ] {
        let d = dir();
        let n = 50_000u64;
        let started = Instant::now();
        let bus = Options::new(8)
            .dir(d.path())
            .create::<Ev>("spsc")
            .unwrap()
            .with_wait(wait);
        let consumers: Vec<_> = ["a", "b"]
            .iter()
            .map(|name| {
                let mut c = bus.consumer(name).unwrap();
                thread::spawn(move || {
                    let mut order = Order::default();
                    loop {
                        match c.poll_wait(64, |e, seq, _| {
                            assert_eq!(seq as u64, e.k);
                            order.see(e)
                        }) {
                            Ok(_) => {}
                            Err(IpcPollError::Closed) => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    order.0.get(&7).copied().unwrap_or(0)
                })
            })
            .collect();
        let mut p = bus.producer().unwrap();
        for k in 0..n {
            p.publish(|e| e.set(7, k)).unwrap();
        }
        bus.close();
        assert_eq!(p.publish(|_| {}), Err(IpcPublishError::Closed));
        // Consumers end once the producer let go of its place.
        drop(p);
        for c in consumers {
            assert_eq!(c.join().unwrap(), n, "{wait:?}");
        }
        eprintln!("{wait:?}: {n} events in {:?}", started.elapsed());
    }
}

#[test]
fn three_producers_a_pipeline_and_a_tiny_ring_that_laps() {
    let d = dir();
    let per = if cfg!(debug_assertions) {
        20_000
    } else {
        100_000
    };
    for (cap, batch) in [(2usize, 1usize), (4, 3), (16, 5)] {
        let bus = Options::new(cap)
            .multi_producer()
            .dir(d.path())
            .create::<Ev>(&format!("mp{cap}"))
            .unwrap();
        let mut first = bus.consumer("first").unwrap();
        let mut second = bus.consumer_after("second", &["first"]).unwrap();
        let passed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen_first = passed.clone();
        let c1 = thread::spawn(move || {
            let mut order = Order::default();
            while first.poll_wait(32, |e, _, _| {
                order.see(e);
                seen_first.fetch_add(1, Ordering::SeqCst);
            }) != Err(IpcPollError::Closed)
            {}
            order
        });
        let watch = passed.clone();
        let c2 = thread::spawn(move || {
            let mut order = Order::default();
            while second.poll_wait(32, |e, _, _| {
                order.see(e);
                // The pipeline: `first` handled it before.
                assert!(watch.load(Ordering::SeqCst) > 0);
            }) != Err(IpcPollError::Closed)
            {}
            order
        });
        let producers: Vec<_> = (0..3u64)
            .map(|id| {
                let mut p = bus.producer().unwrap();
                thread::spawn(move || {
                    let mut k = 0;
                    while k < per {
                        let n = batch.min((per - k) as usize);
                        p.batch_publish(n, |slots| {
                            for (i, e) in slots.iter_mut().enumerate() {
                                e.set(id, k + i as u64);
                            }
                        })
                        .unwrap();
                        k += n as u64;
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        bus.close();
        for c in [c1, c2] {
            let order = c.join().unwrap();
            for id in 0..3 {
                assert_eq!(
                    order.0.get(&id).copied(),
                    Some(per),
                    "ring {cap}, producer {id}"
                );
            }
        }
        assert_eq!(bus.metrics().given_up, 0);
    }
}

#[test]
fn a_consumer_joins_at_the_present_and_a_name_is_held_once() {
    let d = dir();
    let bus = Options::new(4).dir(d.path()).create::<Ev>("join").unwrap();
    let mut p = bus.producer().unwrap();
    for k in 0..3 {
        p.publish(|e| e.set(1, k)).unwrap(); // nobody gates: no wait
    }
    let mut c = bus.consumer("late").unwrap();
    assert_eq!(c.next_sequence(), 3);
    assert!(matches!(
        bus.consumer("late"),
        Err(IpcError::NameInUse { .. })
    ));
    assert!(matches!(bus.producer(), Err(IpcError::ProducerBusy { .. })));
    for k in 3..7 {
        p.publish(|e| e.set(1, k)).unwrap();
    }
    assert_eq!(p.try_publish(|e| e.set(1, 7)), Err(IpcPublishError::Full));
    assert_eq!(
        p.publish_timeout(Duration::from_millis(5), |e| e.set(1, 7)),
        Err(IpcPublishError::Timeout)
    );
    let mut ks = vec![];
    c.poll(100, |e, _, _| ks.push(e.k)).unwrap();
    assert_eq!(ks, [3, 4, 5, 6]);
    assert!(matches!(
        p.batch_publish(5, |_| {}),
        Err(IpcPublishError::BatchTooLarge {
            size: 5,
            capacity: 4
        })
    ));
    drop(c);
    let mut again = bus.consumer("late").unwrap();
    assert_eq!(again.poll(10, |_, _, _| {}), Ok(0));
    let m = bus.metrics();
    assert_eq!(m.consumers.len(), 1);
    assert_eq!(m.consumers[0].name, "late");
}

/// A consumer after another that does not exist yet waits for it; when
/// that upstream joins, reads and leaves between two of its looks, it goes
/// on without it ("one that is gone no longer holds this one") instead of
/// waiting at its join point for ever.
#[test]
fn an_upstream_that_came_and_went_unseen_no_longer_holds_its_downstream() {
    let d = dir();
    let bus = Options::new(8)
        .dir(d.path())
        .create::<Ev>("unseen")
        .unwrap();
    let mut b = bus.consumer_after("b", &["a"]).unwrap();
    // Not there yet: b waits.
    assert_eq!(b.poll(10, |_, _, _| {}), Ok(0));
    let mut a = bus.consumer("a").unwrap();
    let mut p = bus.producer().unwrap();
    for k in 0..3 {
        p.publish(|e| e.set(1, k)).unwrap();
    }
    // b does not look while a is there.
    assert_eq!(a.poll(10, |_, _, _| {}), Ok(3));
    drop(a);
    drop(p);
    bus.close();
    let mut order = Order::default();
    let mut n = 0;
    loop {
        match b.poll_timeout(Duration::from_secs(5), 10, |e, _, _| order.see(e)) {
            Ok(k) => n += k,
            Err(IpcPollError::Closed) => break,
            Err(e) => panic!("{e} after {n} events"),
        }
    }
    assert_eq!(n, 3);
    // A downstream joining now, at the end, ends at once.
    let mut c = bus.consumer_after("c", &["a"]).unwrap();
    assert_eq!(c.next_sequence(), 3);
    assert_eq!(c.poll(10, |_, _, _| {}), Err(IpcPollError::Closed));
}

/// An empty batch publishes nothing: where the next event would go, or
/// `Closed` once the bus is closed (a multi producer said 0 and `Ok`).
#[test]
fn an_empty_batch_says_where_the_next_event_goes_or_closed() {
    let d = dir();
    for multi in [false, true] {
        let mut options = Options::new(8).dir(d.path());
        if multi {
            options = options.multi_producer();
        }
        let name = if multi { "empty-multi" } else { "empty-single" };
        let bus = options.create::<Ev>(name).unwrap();
        let mut p = bus.producer().unwrap();
        for k in 0..3 {
            p.publish(|e| e.set(1, k)).unwrap();
        }
        assert_eq!(
            p.batch_publish(0, |_| unreachable!()),
            Ok(3),
            "multi {multi}"
        );
        if multi {
            let mut q = bus.producer().unwrap();
            assert_eq!(q.batch_publish(0, |_| unreachable!()), Ok(3));
        }
        bus.close();
        assert_eq!(
            p.batch_publish(0, |_| unreachable!()),
            Err(IpcPublishError::Closed),
            "multi {multi}"
        );
    }
}

#[test]
fn bad_options_and_files_are_named() {
    let d = dir();
    let o = || Options::new(8).dir(d.path());
    for bad in [
        Options::new(3),
        Options::new(0),
        Options::new(8).consumers(0),
        Options::new(8).consumers(65),
    ] {
        let e = bad.dir(d.path()).create::<Ev>("bad").unwrap_err();
        assert!(matches!(e, IpcError::Config { .. }), "{e}");
    }
    assert!(matches!(
        o().create::<Ev>("a/b"),
        Err(IpcError::Config { .. })
    ));
    assert!(matches!(
        o().open::<Ev>("missing"),
        Err(IpcError::NotFound { .. })
    ));
    let _bus = o().schema(5).create::<Ev>("real").unwrap();
    assert!(matches!(
        o().create::<Ev>("real"),
        Err(IpcError::AlreadyExists { .. })
    ));
    let mismatch = |e: IpcError| match e {
        IpcError::Mismatch {
            field, file, ours, ..
        } => (field, file, ours),
        e => panic!("{e}"),
    };
    assert_eq!(
        mismatch(o().schema(6).open::<Ev>("real").unwrap_err()),
        ("schema", 5, 6)
    );
    assert_eq!(
        mismatch(
            Options::new(16)
                .schema(5)
                .dir(d.path())
                .open::<Ev>("real")
                .unwrap_err()
        ),
        ("capacity", 8, 16)
    );
    let e = o().schema(5).open::<[u64; 3]>("real").unwrap_err();
    assert_eq!(mismatch(e), ("event size", 56, 24));
    let e = o()
        .schema(5)
        .multi_producer()
        .open::<Ev>("real")
        .unwrap_err();
    assert_eq!(mismatch(e).0, "producer kind");
    assert!(o().schema(5).open::<Ev>("real").is_ok());
    let msg = o().schema(6).open::<Ev>("real").unwrap_err().to_string();
    assert!(
        msg.contains("schema is 5") && msg.contains("asked for 6"),
        "{msg}"
    );
    // Not a bus: garbage, and a short file.
    std::fs::write(d.path().join("ringbus.junk"), vec![0xAB; 8192]).unwrap();
    assert!(matches!(
        o().open::<Ev>("junk"),
        Err(IpcError::NotABus { .. })
    ));
    std::fs::write(d.path().join("ringbus.short"), b"RING").unwrap();
    assert!(matches!(
        o().open::<Ev>("short"),
        Err(IpcError::NotABus { .. })
    ));
    // The mode asked for, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    let _g = o().mode(0o640).create::<Ev>("moded").unwrap();
    let mode = std::fs::metadata(d.path().join("ringbus.moded"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    // A process the mode keeps out is told where the mode comes from (as
    // root, which the mode does not stop, only the message is checked).
    let denied = IpcError::Io {
        path: d.path().join("ringbus.moded"),
        op: "open",
        source: std::io::ErrorKind::PermissionDenied.into(),
    };
    assert!(denied.to_string().contains("Options::mode"), "{denied}");
    o().remove("moded").unwrap();
    assert!(matches!(
        o().open::<Ev>("moded"),
        Err(IpcError::NotFound { .. })
    ));
    assert!(matches!(
        o().remove("moded"),
        Err(IpcError::NotFound { .. })
    ));
}

#[test]
fn a_truncated_or_lying_header_never_maps_past_the_file() {
    let d = dir();
    let bus = Options::new(8).dir(d.path()).create::<Ev>("lie").unwrap();
    drop(bus);
    let path = d.path().join("ringbus.lie");
    let bytes = std::fs::read(&path).unwrap();
    // Cut the ring off: the file is shorter than its layout.
    std::fs::write(&path, &bytes[..bytes.len() - 64]).unwrap();
    let e = Options::new(8).dir(d.path()).open::<Ev>("lie").unwrap_err();
    assert!(
        matches!(
            e,
            IpcError::Mismatch {
                field: "file length",
                ..
            }
        ),
        "{e}"
    );
    // Table sizes out of bounds.
    let mut b = bytes.clone();
    b[64..72].copy_from_slice(&u64::MAX.to_le_bytes()); // consumers
    std::fs::write(&path, &b).unwrap();
    let e = Options::new(8).dir(d.path()).open::<Ev>("lie").unwrap_err();
    assert!(matches!(e, IpcError::NotABus { .. }), "{e}");
    // Not a bus: the error shows what the file starts with.
    let mut b = bytes.clone();
    b[0..8].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let e = Options::new(8).dir(d.path()).open::<Ev>("lie").unwrap_err();
    assert!(matches!(e, IpcError::NotABus { .. }), "{e}");
    assert!(e.to_string().contains("0x1122334455667788"), "{e}");
    // Another version.
    let mut b = bytes.clone();
    b[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    assert!(matches!(
        Options::new(8).dir(d.path()).open::<Ev>("lie"),
        Err(IpcError::Version { file: 99, .. })
    ));
}

/// A peer with write access to the file: writes `value` at `offset` of
/// the bus file `name` (the page cache is the mapping, so every process
/// sees it).
fn poke(dir: &std::path::Path, name: &str, offset: u64, value: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(format!("ringbus.{name}")))
        .unwrap();
    f.write_all_at(value, offset).unwrap();
}

/// The u64 at `offset` of the bus file `name`.
fn peek(dir: &std::path::Path, name: &str, offset: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(dir.join(format!("ringbus.{name}"))).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, offset).unwrap();
    u64::from_le_bytes(b)
}

/// Where the claim counter (or the single producer's cursor) is: the first
/// field of the line after the header. Checked against a known count, so a
/// change of the layout fails here, not as a test that proves nothing.
const CURSOR_AT: u64 = 128;

/// A peer that wrote a mark no protocol writes (the slot's current round,
/// state 0) under a claim: the consumer skips it as a tombstone. It gave
/// the slot up, found nothing to give up, and looked again for ever, at
/// 100% of a core, in `poll` and `poll_timeout` alike.
#[test]
fn a_mark_no_protocol_writes_is_skipped_not_looped_on() {
    let d = dir();
    let bus = Options::new(4)
        .multi_producer()
        .hole_timeout(Duration::from_millis(30))
        .dir(d.path())
        .create::<Ev>("mark")
        .unwrap();
    let mut c = bus.consumer("c").unwrap();
    let mut p = bus.producer().unwrap();
    for k in 0..4 {
        p.publish(|e| e.set(1, k)).unwrap();
    }
    assert_eq!(c.poll(8, |e, _, _| e.verify()), Ok(4));
    // A fifth claim, let go by its panicking closure: slot 0, round 2.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.publish(|_| panic!("planned"))
    }));
    assert!(r.is_err());
    assert_eq!(peek(d.path(), "mark", CURSOR_AT), 5, "the claim counter");
    // Find the marks: slot 0 released in round 2 by producer entry 0
    // (owner 1), slots 1-3 published in round 1.
    let mark = |round: u64, state: u64| (round << 16 | 1 << 4 | state).to_le_bytes();
    let bytes = std::fs::read(d.path().join("ringbus.mark")).unwrap();
    let want: Vec<u8> = [mark(2, 4), mark(1, 2), mark(1, 2), mark(1, 2)].concat();
    let at = (0..bytes.len() - 32)
        .step_by(8)
        .find(|&i| bytes[i..i + 32] == want[..])
        .expect("the marks") as u64;
    // Round 2, owner 0, state 0: nothing writes that.
    poke(d.path(), "mark", at, &(2u64 << 16).to_le_bytes());
    let (tx, rx) = std::sync::mpsc::channel();
    let t = thread::spawn(move || {
        let r = c.poll_timeout(Duration::from_millis(300), 8, |e, _, _| e.verify());
        tx.send(r).unwrap();
        c
    });
    let r = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("poll_timeout came back");
    assert!(matches!(r, Ok(0) | Err(IpcPollError::Timeout)), "{r:?}");
    let mut c = t.join().unwrap();
    assert_eq!(c.tombstones(), 1, "the odd mark passed as a tombstone");
    assert_eq!(c.next_sequence(), 5);
    p.publish(|e| e.set(1, 4)).unwrap();
    let mut ks = Vec::new();
    c.poll_timeout(Duration::from_secs(5), 8, |e, _, _| {
        e.verify();
        ks.push(e.k)
    })
    .unwrap();
    assert_eq!(ks, [4]);
}

/// A peer that overwrote the cursor with a sequence no bus reaches: every
/// publish is refused as `Closed` (it overflowed `first + n` and panicked
/// in a debug build, and in a release build claimed slots of a wrapped
/// sequence).
#[test]
fn a_cursor_no_bus_reaches_refuses_publishes() {
    for multi in [false, true] {
        let d = dir();
        let o = Options::new(8).dir(d.path());
        let o = if multi { o.multi_producer() } else { o };
        let bus = o.create::<Ev>("cursor").unwrap();
        let _c = bus.consumer("c").unwrap();
        {
            let mut p = bus.producer().unwrap();
            for k in 0..3 {
                p.publish(|e| e.set(1, k)).unwrap();
            }
        }
        assert_eq!(peek(d.path(), "cursor", CURSOR_AT), 3, "the cursor");
        poke(d.path(), "cursor", CURSOR_AT, &u64::MAX.to_le_bytes());
        let mut p = bus.producer().unwrap();
        assert_eq!(
            p.try_publish(|e| e.set(1, 3)),
            Err(IpcPublishError::Closed),
            "multi {multi}"
        );
        assert_eq!(
            p.publish_timeout(Duration::from_millis(50), |e| e.set(1, 3)),
            Err(IpcPublishError::Closed),
            "multi {multi}"
        );
        assert_eq!(
            p.publish(|e| e.set(1, 3)),
            Err(IpcPublishError::Closed),
            "multi {multi}"
        );
    }
}

/// A multi-producer bus of 2 at the end of its life (its marks keep 48
/// bits of lap): publishes past it fail with `Closed`, as `Options::new`
/// says (the lap overflowed the mark and the publish went on).
#[test]
fn a_multi_producer_bus_past_its_last_lap_refuses_publishes() {
    let d = dir();
    let bus = Options::new(2)
        .multi_producer()
        .dir(d.path())
        .create::<Ev>("laps")
        .unwrap();
    let _c = bus.consumer("c").unwrap();
    let mut p = bus.producer().unwrap();
    p.publish(|e| e.set(1, 0)).unwrap();
    assert_eq!(peek(d.path(), "laps", CURSOR_AT), 1, "the claim counter");
    let end = ((1u64 << 48) - 1) * 2;
    poke(d.path(), "laps", CURSOR_AT, &end.to_le_bytes());
    assert_eq!(p.try_publish(|e| e.set(1, 1)), Err(IpcPublishError::Closed));
    assert_eq!(
        p.publish_timeout(Duration::from_millis(20), |e| e.set(1, 1)),
        Err(IpcPublishError::Closed)
    );
    assert_eq!(p.publish(|e| e.set(1, 1)), Err(IpcPublishError::Closed));
    poke(d.path(), "laps", CURSOR_AT, &(end - 1).to_le_bytes());
    assert_eq!(
        p.batch_publish(2, |_| {}),
        Err(IpcPublishError::Closed),
        "a batch across the end"
    );
}

#[test]
fn a_slow_producer_is_given_up_never_overwritten_and_told() {
    let d = dir();
    let bus = Options::new(4)
        .multi_producer()
        .hole_timeout(Duration::from_millis(30))
        .dir(d.path())
        .create::<Ev>("slow")
        .unwrap();
    let mut c = bus.consumer("c").unwrap();
    let mut slow = bus.producer().unwrap();
    let mut fast = bus.producer().unwrap();
    let slow_thread = thread::spawn(move || {
        let r = slow.publish(|e| {
            e.set(1, 0);
            thread::sleep(Duration::from_millis(200));
            e.set(1, 0);
        });
        (slow, r)
    });
    thread::sleep(Duration::from_millis(20));
    let mut order = Order::default();
    let mut got = 0;
    for k in 0..12 {
        fast.publish(|e| e.set(2, k)).unwrap();
        got += c
            .poll_timeout(Duration::from_secs(5), 16, |e, _, _| order.see(e))
            .unwrap();
    }
    let (_, r) = slow_thread.join().unwrap();
    assert_eq!(
        r,
        Err(IpcPublishError::GivenUp {
            sequence: 0,
            lost: 1
        })
    );
    while c.poll(16, |e, _, _| order.see(e)).unwrap() > 0 {}
    assert_eq!(order.0.get(&2).copied(), Some(12));
    assert_eq!(order.0.get(&1), None, "a given-up event was delivered");
    assert_eq!(c.tombstones(), 1);
    assert_eq!(bus.metrics().given_up, 1);
    let _ = got;
}

/// A batch given up slot by slot while its producer sleeps in the closure,
/// and a publish whose closure panics after its slot was given up: each
/// tombstone counts once in `given_up` (the producer's let-go of a slot a
/// consumer had already given up counted it again: 7 for 4).
#[test]
fn given_up_counts_each_tombstone_once() {
    let d = dir();
    let bus = Options::new(8)
        .multi_producer()
        .hole_timeout(Duration::from_millis(20))
        .dir(d.path())
        .create::<Ev>("count")
        .unwrap();
    let mut c = bus.consumer("c").unwrap();
    let mut p = bus.producer().unwrap();
    let reader = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.tombstones() < 4 && Instant::now() < deadline {
            let _ = c.poll_timeout(Duration::from_millis(10), 8, |e, _, _| e.verify());
        }
        c
    });
    let r = p.batch_publish(3, |slots| {
        for e in slots.iter_mut() {
            e.set(1, 0);
        }
        thread::sleep(Duration::from_millis(200));
    });
    assert_eq!(
        r,
        Err(IpcPublishError::GivenUp {
            sequence: 0,
            lost: 3
        })
    );
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.publish(|_| {
            thread::sleep(Duration::from_millis(100));
            panic!("planned")
        })
    }));
    assert!(r.is_err());
    let c = reader.join().unwrap();
    assert_eq!(c.tombstones(), 4);
    assert_eq!(bus.metrics().given_up, 4, "each tombstone once");
}

/// `try_publish` never waits and `publish_timeout` waits at most its
/// timeout, also when the slot they claimed is still written by a slow
/// producer given up a lap before (they waited for it to finish: a second
/// here). They leave their claim unmarked and say `Full` and `Timeout`;
/// the consumer gives those claims up once the slow writer let go, and
/// every acknowledged event arrives once.
#[test]
fn timed_publishes_do_not_wait_for_a_given_up_slow_writer() {
    for timed in [false, true] {
        let d = dir();
        let bus = Options::new(2)
            .multi_producer()
            .hole_timeout(Duration::from_millis(30))
            .dir(d.path())
            .create::<Ev>("slowlap")
            .unwrap();
        let mut c = bus.consumer("c").unwrap();
        let mut slow = bus.producer().unwrap();
        let mut fast = bus.producer().unwrap();
        let (writing, wrote) = std::sync::mpsc::channel();
        let slow_thread = thread::spawn(move || {
            slow.publish(|e| {
                writing.send(()).unwrap();
                thread::sleep(Duration::from_millis(1000));
                e.set(1, 0);
            })
        });
        wrote.recv().unwrap(); // sequence 0 claimed and being written
        let mut order = Order::default();
        fast.publish(|e| e.set(2, 0)).unwrap(); // sequence 1
                                                // The consumer gives sequence 0 up and reads 1: the ring has room
                                                // for 2 and 3, but slot 0 is still the slow writer's.
        wait_for("the slow claim given up", || {
            c.poll(4, |e, _, _| order.see(e)).unwrap();
            c.next_sequence() == 2
        });
        // Sequence 2, slot 0.
        let r = if timed {
            fast.publish_timeout(Duration::from_millis(20), |e| e.set(2, 1))
        } else {
            fast.try_publish(|e| e.set(2, 1))
        };
        let limit = if timed {
            IpcPublishError::Timeout
        } else {
            IpcPublishError::Full
        };
        assert_eq!(r, Err(limit), "timed {timed}");
        let r = slow_thread.join().unwrap();
        assert_eq!(
            r,
            Err(IpcPublishError::GivenUp {
                sequence: 0,
                lost: 1
            })
        );
        for k in 1..6 {
            fast.publish_timeout(Duration::from_secs(10), |e| e.set(2, k))
                .unwrap();
            c.poll_timeout(Duration::from_secs(10), 4, |e, _, _| order.see(e))
                .unwrap();
        }
        while c.poll(4, |e, _, _| order.see(e)).unwrap() > 0 {}
        assert_eq!(order.0.get(&2).copied(), Some(6));
        assert_eq!(order.0.get(&1), None, "a given-up event was delivered");
        // Sequence 0 given up, 2 left by the timed publish.
        assert_eq!(c.tombstones(), 2);
    }
}

/// A producer that claimed a slot and waits for room (a slow consumer holds
/// the ring) is not a hole: a fast consumer waiting at that slot longer
/// than the hole timeout must not give it up.
#[test]
fn a_claim_waiting_for_room_is_not_given_up() {
    let d = dir();
    let bus = Options::new(2)
        .multi_producer()
        .hole_timeout(Duration::from_millis(10))
        .dir(d.path())
        .create::<Ev>("room")
        .unwrap();
    let mut slow = bus.consumer("slow").unwrap();
    let mut fast = bus.consumer("fast").unwrap();
    let mut p = bus.producer().unwrap();
    p.publish(|e| e.set(1, 0)).unwrap();
    p.publish(|e| e.set(1, 1)).unwrap();
    let third = thread::spawn(move || p.publish(|e| e.set(1, 2)));
    let mut order = Order::default();
    // The fast consumer reads 0 and 1, then waits at 2 for 10 hole timeouts.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(100) {
        let _ = fast.poll(8, |e, _, _| order.see(e)).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    let mut slow_order = Order::default();
    while slow.poll(8, |e, _, _| slow_order.see(e)).unwrap() > 0 {}
    assert_eq!(
        third.join().unwrap(),
        Ok(2),
        "a claim waiting for room was given up"
    );
    fast.poll_timeout(Duration::from_secs(5), 8, |e, _, _| order.see(e))
        .unwrap();
    assert_eq!(order.0.get(&1).copied(), Some(3));
    assert_eq!(fast.tombstones(), 0);
}

/// A batch waiting for room for its last slot shows its claim in its
/// producer's entry: a fast consumer waiting at the batch's first slot
/// (which has room) longer than the hole timeout must not give the batch
/// up while its last slot waits for a slow consumer.
#[test]
fn a_batch_waiting_for_room_for_its_last_slot_is_not_given_up() {
    let d = dir();
    let bus = Options::new(8)
        .multi_producer()
        .hole_timeout(Duration::from_millis(10))
        .dir(d.path())
        .create::<Ev>("batchroom")
        .unwrap();
    let mut slow = bus.consumer("slow").unwrap();
    let mut fast = bus.consumer("fast").unwrap();
    let mut p = bus.producer().unwrap();
    for k in 0..7 {
        p.publish(|e| e.set(1, k)).unwrap();
    }
    let mut slow_order = Order::default();
    assert_eq!(slow.poll(2, |e, _, _| slow_order.see(e)).unwrap(), 2);
    let mut order = Order::default();
    while fast.poll(8, |e, _, _| order.see(e)).unwrap() > 0 {}
    // 7..=10: room for 7, none for 10 until `slow` passes 2.
    let batch = thread::spawn(move || {
        p.batch_publish(4, |slots| {
            for (i, e) in slots.iter_mut().enumerate() {
                e.set(1, 7 + i as u64);
            }
        })
    });
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(100) {
        let _ = fast.poll(8, |e, _, _| order.see(e)).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    while slow.poll(8, |e, _, _| slow_order.see(e)).unwrap() > 0 {}
    assert_eq!(
        batch.join().unwrap(),
        Ok(7),
        "a batch waiting for room was given up"
    );
    while order.0.get(&1).copied() != Some(11) {
        fast.poll_timeout(Duration::from_secs(5), 8, |e, _, _| order.see(e))
            .unwrap();
    }
    assert_eq!(fast.tombstones(), 0);
    assert_eq!(bus.metrics().given_up, 0);
}

/// A batch claims in turn with single publishes (one `fetch_add`), so on a
/// ring kept full by another producer's singles and a slow consumer it is
/// never starved: a claim that waited for room for the whole batch before
/// claiming lost every race to the singles.
#[test]
fn a_batch_is_not_starved_by_single_publishes_on_a_full_ring() {
    let d = dir();
    let bus = Options::new(8)
        .multi_producer()
        .dir(d.path())
        .create::<Ev>("starve")
        .unwrap();
    let mut c = bus.consumer("slow").unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Stops the singles however this test ends (else, once the consumer
    // is dropped, they publish on for the rest of the test binary).
    struct Stop(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop = Stop(stop.clone());
    let mut singles = bus.producer().unwrap();
    let s_stop = stop.clone();
    let single = thread::spawn(move || {
        let mut k = 0;
        while !s_stop.load(Ordering::Relaxed) {
            singles.publish(|e| e.set(1, k)).unwrap();
            k += 1;
        }
    });
    let mut batches = bus.producer().unwrap();
    let batch = thread::spawn(move || {
        for b in 0..40u64 {
            batches
                .batch_publish(4, |slots| {
                    for (i, e) in slots.iter_mut().enumerate() {
                        e.set(2, b * 4 + i as u64);
                    }
                })
                .unwrap();
        }
    });
    let mut order = Order::default();
    // 40 batches take milliseconds; claims that wait for room before
    // they claim took about 20 s here.
    let deadline = Instant::now() + Duration::from_secs(5);
    while order.0.get(&2).copied() != Some(160) {
        assert!(
            Instant::now() < deadline,
            "the batches starved: {:?} of 160 batch events after 5 s",
            order.0.get(&2)
        );
        c.poll_timeout(Duration::from_millis(100), 2, |e, _, _| order.see(e))
            .ok();
        thread::sleep(Duration::from_micros(200));
    }
    batch.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    while !single.is_finished() {
        let _ = c.poll(8, |e, _, _| order.see(e));
    }
    single.join().unwrap();
    assert_eq!(c.tombstones(), 0);
}

/// `poll` with a limit of 0 handles and commits nothing (as the in-process
/// poller); it handled and committed one event.
#[test]
fn a_poll_with_a_limit_of_0_handles_nothing() {
    let d = dir();
    let bus = Options::new(8).dir(d.path()).create::<Ev>("zero").unwrap();
    let mut c = bus.consumer("c").unwrap();
    let mut p = bus.producer().unwrap();
    p.publish(|e| e.set(1, 0)).unwrap();
    let mut calls = 0;
    assert_eq!(c.poll(0, |_, _, _| calls += 1), Ok(0));
    assert_eq!((calls, c.next_sequence()), (0, 0));
    let mut order = Order::default();
    assert_eq!(c.poll(8, |e, _, _| order.see(e)), Ok(1));
}

/// A panic in the closure of `poll` commits nothing: the same events come
/// again, and the tombstones among them are counted once (they were
/// counted at each pass). A publish closure's panic makes a tombstone that
/// `IpcMetrics::given_up` counts.
#[test]
fn a_panic_in_poll_gives_the_batch_again_and_counts_its_tombstones_once() {
    let d = dir();
    let bus = Options::new(8)
        .multi_producer()
        .dir(d.path())
        .create::<Ev>("panicpoll")
        .unwrap();
    let mut c = bus.consumer("c").unwrap();
    let mut p = bus.producer().unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = p.publish(|_| panic!("planned panic in a publish closure"));
    }));
    assert!(panicked.is_err());
    for k in 0..3 {
        p.publish(|e| e.set(1, k)).unwrap();
    }
    assert_eq!(bus.metrics().given_up, 1);
    let mut seen = vec![];
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.poll(8, |e, _, _| {
            seen.push(e.k);
            if e.k == 1 {
                panic!("planned panic in a poll");
            }
        })
    }));
    assert!(first.is_err());
    assert_eq!(c.next_sequence(), 0, "nothing committed");
    let mut order = Order::default();
    assert_eq!(c.poll(8, |e, _, _| order.see(e)), Ok(3));
    assert_eq!(seen, [0, 1]);
    assert_eq!(c.tombstones(), 1);
    let info = bus.metrics().consumers;
    assert_eq!(info.iter().map(|i| i.tombstones).collect::<Vec<_>>(), [1]);
}

/// A hole timeout (or reclaim time) beyond what u64 nanoseconds hold means
/// "never"; it wrapped to 0, and every claim was given up at first sight.
#[test]
fn a_hole_timeout_too_long_to_count_in_nanoseconds_is_never() {
    let d = dir();
    let bus = Options::new(8)
        .multi_producer()
        .hole_timeout(Duration::from_secs(1 << 60))
        .reclaim_after(Duration::from_secs(1 << 60))
        .dir(d.path())
        .create::<Ev>("forever")
        .unwrap();
    let mut c = bus.consumer("c").unwrap();
    let mut p = bus.producer().unwrap();
    let (claimed, is_claimed) = std::sync::mpsc::channel();
    let slow = thread::spawn(move || {
        p.publish(|e| {
            e.set(1, 0);
            claimed.send(()).unwrap();
            thread::sleep(Duration::from_millis(100));
        })
    });
    is_claimed.recv().unwrap();
    let mut order = Order::default();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(50) {
        let _ = c.poll(8, |e, _, _| order.see(e)).unwrap();
    }
    assert_eq!(slow.join().unwrap(), Ok(0), "a slow writer was given up");
    assert_eq!(
        c.poll_timeout(Duration::from_secs(5), 8, |e, _, _| order.see(e)),
        Ok(1)
    );
    assert_eq!(bus.metrics().given_up, 0);
}

// ---- Processes ------------------------------------------------------------

const ROLE: &str = "RINGBUS_IPC_ROLE";

/// A child process that is killed when dropped, so a failed test (a panic
/// mid-round) leaves no child behind waiting on its bus.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        kill(self);
    }
}

fn spawn(role: &str, dir: &std::path::Path, name: &str, extra: &str) -> Kid {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, format!("{role}|{}|{name}|{extra}", dir.display()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Kid(child)
}

fn kill(kid: &mut Kid) {
    let _ = kid.0.kill(); // SIGKILL
    let _ = kid.0.wait();
}

fn kill_opts(dir: &std::path::Path, multi: bool) -> Options {
    let o = Options::new(8)
        .dir(dir)
        .reclaim_after(Duration::from_millis(100))
        .hole_timeout(Duration::from_millis(50));
    if multi {
        o.multi_producer()
    } else {
        o
    }
}

/// Not a test of its own: the body of a child process, chosen by `ROLE`.
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let parts: Vec<&str> = role.split('|').collect();
    let (role, dir, name, extra) = (parts[0], std::path::Path::new(parts[1]), parts[2], parts[3]);
    match role {
        // Publishes k = 0, 1, ... as producer `extra`, forever.
        "producer" | "sp-producer" => {
            let bus = kill_opts(dir, role == "producer").open::<Ev>(name).unwrap();
            let id: u64 = extra.parse().unwrap();
            let mut p = loop {
                match bus.producer() {
                    Ok(p) => break p,
                    Err(IpcError::ProducerBusy { .. }) => thread::sleep(Duration::from_millis(1)),
                    Err(e) => panic!("{e}"),
                }
            };
            let mut k = 0;
            loop {
                match p.publish(|e| e.set(id, k)) {
                    Ok(_) => k += 1,
                    Err(IpcPublishError::GivenUp { .. }) => {} // publish k again
                    Err(IpcPublishError::Closed) => return,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        // Reads as consumer `extra`, checking order, forever.
        "consumer" => {
            let bus = kill_opts(dir, true).open::<Ev>(name).unwrap();
            let mut c = bus.consumer(extra).unwrap();
            loop {
                match c.poll_wait(16, |e, _, _| e.verify()) {
                    Ok(_) => {}
                    Err(IpcPollError::Closed) => return,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        // Joins as `b` after `a` (extra "b>a"), says so, and waits to be
        // killed.
        "consumer-after" => {
            let bus = kill_opts(dir, true).open::<Ev>(name).unwrap();
            let (b, a) = extra.split_once('>').unwrap();
            let _c = bus.consumer_after(b, &[a]).unwrap();
            std::fs::write(dir.join("joined"), b"1").unwrap();
            thread::sleep(Duration::from_secs(600));
        }
        // Takes a producer place, claims, and hangs inside the closure.
        "hang-in-claim" => {
            let bus = kill_opts(dir, true).open::<Ev>(name).unwrap();
            let mut p = bus.producer().unwrap();
            let _ = p.publish(|e| {
                e.set(99, 0);
                std::fs::write(dir.join("claimed"), b"1").unwrap();
                thread::sleep(Duration::from_secs(600));
            });
        }
        // Claims a batch of 6 and hangs inside the closure.
        "hang-in-batch" => {
            let bus = kill_opts(dir, true).open::<Ev>(name).unwrap();
            let mut p = bus.producer().unwrap();
            let _ = p.batch_publish(6, |slots| {
                for e in slots.iter_mut() {
                    e.set(99, 0);
                }
                std::fs::write(dir.join("claimed"), b"1").unwrap();
                thread::sleep(Duration::from_secs(600));
            });
        }
        // Creates buses `name`.0, `name`.1, ... (big ones: each takes a
        // while to make), forever; says when it starts.
        "creator" => {
            std::fs::write(dir.join("started"), b"1").unwrap();
            for i in 0.. {
                let _ = Options::new(1 << 14)
                    .dir(dir)
                    .create::<Ev>(&format!("{name}.{i}"))
                    .unwrap();
            }
        }
        r => panic!("unknown role {r}"),
    }
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

/// A creator killed at random moments while it makes bus after bus: every
/// bus under a name opens (none is half made, `NotABus` or `Stale`), and
/// nothing else is left in the directory.
#[test]
fn a_creator_killed_mid_create_leaves_no_half_made_bus() {
    let mut made = 0;
    for seed in 0..12u64 {
        let d = dir();
        if !unnamed_files_work(d.path()) {
            return; // other unix, or a filesystem without O_TMPFILE
        }
        let mut kid = spawn("creator", d.path(), "made", "");
        wait_for("the creator to start", || d.path().join("started").exists());
        thread::sleep(Duration::from_micros(300 + seed * 200));
        kill(&mut kid);
        std::fs::remove_file(d.path().join("started")).unwrap();
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        made += names.len();
        for file in &names {
            let name = file
                .strip_prefix("ringbus.")
                .unwrap_or_else(|| panic!("a stray file {file:?}"));
            if let Err(e) = Options::new(1 << 14).dir(d.path()).open::<Ev>(name) {
                panic!("seed {seed}: {file} of {} files: {e}", names.len());
            }
        }
    }
    assert!(made > 0, "no kill came after a create");
}

/// Whether `dir` takes files without a name (Linux's `O_TMPFILE`), which
/// `create` makes its buses in.
fn unnamed_files_work(dir: &std::path::Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
            .is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

#[test]
fn a_killed_consumer_process_stops_gating_and_is_reclaimed() {
    let d = dir();
    let bus = kill_opts(d.path(), true).create::<Ev>("deadc").unwrap();
    let mut child = spawn("consumer", d.path(), "deadc", "victim");
    wait_for("the child to join", || bus.metrics().consumers.len() == 1);
    kill(&mut child);
    let mut p = bus.producer().unwrap();
    for k in 0..100 {
        // Only try_publish: it too checks the consumers for life.
        let mut tries = 0u64;
        while p.try_publish(|e| e.set(1, k)) == Err(IpcPublishError::Full) {
            tries += 1;
            assert!(tries < 200_000, "wedged by a dead consumer");
            thread::sleep(Duration::from_micros(50));
        }
    }
    let m = bus.metrics();
    assert_eq!(m.reclaimed, 1);
    assert!(m.consumers.is_empty());
}

/// A consumer process killed while a consumer after it (in this process)
/// waits, on a bus that stays open with an idle producer and a ring that
/// never fills: no producer needs the room, so the one after the dead one
/// reclaims it after `reclaim_after` and reads every event; the departure
/// shows in the metrics.
#[test]
fn a_killed_upstream_on_a_quiet_bus_is_reclaimed_by_the_consumer_after_it() {
    let d = dir();
    let bus = kill_opts(d.path(), true).create::<Ev>("quiet").unwrap();
    let mut child = spawn("consumer", d.path(), "quiet", "upstream");
    wait_for("the child to join", || bus.metrics().consumers.len() == 1);
    let mut after = bus
        .clone()
        .with_wait(Wait::Blocking)
        .consumer_after("after", &["upstream"])
        .unwrap();
    kill(&mut child);
    let mut p = bus.producer().unwrap();
    for k in 0..6 {
        p.publish(|e| e.set(1, k)).unwrap();
    }
    let mut next = 0;
    wait_for("the consumer after the dead one to read everything", || {
        match after.poll_timeout(Duration::from_millis(5), 16, |e, _, _| {
            e.verify();
            assert_eq!(e.k, next, "out of order");
            next += 1;
        }) {
            Ok(_) | Err(IpcPollError::Timeout) => {}
            Err(e) => panic!("{e}"),
        }
        next == 6
    });
    let m = bus.metrics();
    assert_eq!(m.reclaimed, 1);
    assert_eq!(m.consumers.len(), 1, "only the one after: {m:?}");
    assert!(!m.closed);
    drop(p);
}

#[test]
fn a_consumer_restarted_within_reclaim_after_resumes_where_it_stopped() {
    let d = dir();
    let bus = Options::new(8)
        .multi_producer()
        .dir(d.path())
        .reclaim_after(Duration::from_secs(30))
        .create::<Ev>("resume")
        .unwrap();
    let mut child = spawn("consumer", d.path(), "resume", "matcher");
    wait_for("the child to join", || bus.metrics().consumers.len() == 1);
    let mut p = bus.producer().unwrap();
    for k in 0..20 {
        p.publish(|e| e.set(1, k)).unwrap();
    }
    kill(&mut child);
    // The dead matcher gates: the ring fills and stays full.
    for k in 20..28 {
        let _ = p.publish_timeout(Duration::from_millis(1), |e| e.set(1, k));
    }
    let stopped = bus.metrics().consumers[0].next;
    let again = bus.consumer("matcher").unwrap();
    assert!(again.resumed_from().is_some());
    assert_eq!(again.next_sequence(), stopped);
}

#[test]
fn a_producer_killed_mid_claim_leaves_a_tombstone_and_nothing_else_is_lost() {
    let d = dir();
    let bus = kill_opts(d.path(), true).create::<Ev>("hole").unwrap();
    let mut c = bus.consumer("c").unwrap();
    let mut child = spawn("hang-in-claim", d.path(), "hole", "");
    wait_for("the claim", || d.path().join("claimed").exists());
    kill(&mut child);
    let mut p = bus.producer().unwrap();
    let mut order = Order::default();
    for k in 0..50 {
        p.publish(|e| e.set(1, k)).unwrap();
        c.poll_timeout(Duration::from_secs(5), 8, |e, _, _| order.see(e))
            .unwrap();
    }
    while c.poll(8, |e, _, _| order.see(e)).unwrap() > 0 {}
    assert_eq!(order.0.get(&1).copied(), Some(50));
    assert_eq!(order.0.get(&99), None);
    assert_eq!(c.tombstones(), 1);
}

/// A live producer's claim that waited for room behind a dead claim is not
/// taken for a hole when the dead claim is given up: it was claimed before
/// that hole's timer started, but its hole timeout counts from when the
/// ring has room for it, which is only once the dead claim is passed. (A
/// consumer used to give it up at once, and its publish said `GivenUp`.)
#[test]
fn a_claim_waiting_behind_a_dead_claim_is_not_given_up_with_it() {
    for round in 0..3 {
        let d = dir();
        // A hole timeout long enough for the woken producer to mark its
        // claim on a loaded machine (the timer starts once it has room).
        let bus = kill_opts(d.path(), true)
            .hole_timeout(Duration::from_millis(300))
            .create::<Ev>("behinddead")
            .unwrap();
        let mut c = bus.consumer("c").unwrap();
        // Taken before the child dies: a place taken after would be the
        // dead one's, whose new owner releases its claim at once.
        let mut p = bus.producer().unwrap();
        let mut child = spawn("hang-in-claim", d.path(), "behinddead", "");
        wait_for("the claim", || d.path().join("claimed").exists());
        kill(&mut child);
        // Sequence 0 is the dead claim; 1..=7 fill the ring of 8 and the
        // eighth publish claims 8 and waits for room.
        let publisher = thread::spawn(move || {
            (0..8)
                .map(|k| p.publish(|e| e.set(1, k)))
                .collect::<Vec<_>>()
        });
        wait_for("the waiting claim", || bus.metrics().cursor >= 9);
        thread::sleep(Duration::from_millis(30));
        let mut order = Order::default();
        while order.0.get(&1).copied().unwrap_or(0) < 8 {
            match c.poll_timeout(Duration::from_millis(200), 8, |e, _, _| order.see(e)) {
                Ok(_) => {}
                Err(IpcPollError::Timeout) if publisher.is_finished() => break,
                Err(IpcPollError::Timeout) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        let results = publisher.join().unwrap();
        assert!(
            results.iter().all(Result::is_ok),
            "round {round}: a live producer's publish was given up: {results:?}"
        );
        assert_eq!(order.0.get(&1).copied(), Some(8), "round {round}");
        assert_eq!(c.tombstones(), 1, "round {round}");
    }
}

#[test]
fn a_producer_killed_inside_a_batch_leaves_tombstones_for_all_of_it() {
    let d = dir();
    let bus = kill_opts(d.path(), true).create::<Ev>("batchhole").unwrap();
    let mut c = bus.consumer("c").unwrap();
    let mut child = spawn("hang-in-batch", d.path(), "batchhole", "");
    wait_for("the claim", || d.path().join("claimed").exists());
    kill(&mut child);
    let mut p = bus.producer().unwrap();
    let mut order = Order::default();
    for k in 0..20 {
        p.publish(|e| e.set(1, k)).unwrap();
        c.poll_timeout(Duration::from_secs(10), 8, |e, _, _| order.see(e))
            .unwrap();
    }
    while c.poll(8, |e, _, _| order.see(e)).unwrap() > 0 {}
    assert_eq!(order.0.get(&1).copied(), Some(20));
    assert_eq!(c.tombstones(), 6);
}

/// A producer process killed while its claim waited for room leaves that
/// claim unmarked. Once the consumers that gated it are gone (the one
/// holding the ring left, the others joined after the claim), nobody gives
/// it up, and a lap later the next claim of its slot found the slot's mark
/// two rounds behind and waited for ever, even after the close. The next
/// claim now releases it after a hole timeout; a consumer waiting there
/// does too, and after the close it ends.
#[test]
fn a_producer_killed_while_its_claim_waits_for_room_wedges_no_later_lap() {
    for close_early in [false, true] {
        let d = dir();
        // Closing early, the close must come before the claim of 16 stops
        // waiting behind 8 (a hole timeout): a long one, so it does.
        let hole = Duration::from_millis(if close_early { 2_000 } else { 50 });
        let bus = kill_opts(d.path(), true)
            .hole_timeout(hole)
            .create::<Ev>("behind")
            .unwrap();
        let gate = bus.consumer("gate").unwrap(); // never reads: holds the ring
        let mut child = spawn("producer", d.path(), "behind", "7");
        // 0..=7 published, 8 claimed and waiting for room.
        wait_for("the claim that waits", || bus.metrics().cursor == 9);
        kill(&mut child);
        drop(gate);
        let mut late = bus.consumer("late").unwrap();
        assert_eq!(late.next_sequence(), 9);
        let mut p = bus.producer().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let rounds = if close_early { 8 } else { 20 };
        let producer = thread::spawn(move || {
            for k in 0..rounds {
                // 9..=15, then 16, in the slot of the unmarked 8.
                let r = p.publish(|e| e.set(1, k));
                let stop = r.is_err();
                tx.send(r).unwrap();
                if stop {
                    break;
                }
            }
        });
        let mut order = Order::default();
        let mut results = vec![];
        let deadline = Instant::now() + Duration::from_secs(10);
        while results.len() < rounds as usize {
            assert!(
                Instant::now() < deadline,
                "wedged after {} publishes ({:?})",
                results.len(),
                bus.metrics()
            );
            match rx.recv_timeout(Duration::from_millis(10)) {
                Ok(r) => results.push(r),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
            let _ = late.poll(8, |e, _, _| order.see(e)).unwrap();
            if close_early && results.len() == 7 {
                // The claim of 16 waits for its slot: close now.
                thread::sleep(Duration::from_millis(5));
                bus.close();
            }
        }
        producer.join().unwrap();
        let published = results.iter().take_while(|r| r.is_ok()).count() as u64;
        if !close_early {
            assert_eq!(published, rounds, "{results:?}");
        } else {
            // The close ends the wait behind 8 with `Closed` (it used to
            // say `GivenUp`, "publish it again", on a closed bus).
            assert_eq!(
                results.last(),
                Some(&Err(IpcPublishError::Closed)),
                "{results:?}"
            );
        }
        // Everything published reaches `late`, then `Closed`.
        bus.close();
        loop {
            assert!(
                Instant::now() < deadline,
                "no `Closed` ({:?})",
                bus.metrics()
            );
            match late.poll_timeout(Duration::from_millis(100), 8, |e, _, _| order.see(e)) {
                Ok(_) | Err(IpcPollError::Timeout) => {}
                Err(IpcPollError::Closed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(order.0.get(&1).copied().unwrap_or(0), published);
        // The claim of 8 was released (by the claimant of 16, or by `late`
        // at 16 after the close), unless the close came before 16 was
        // claimed (`Closed`: nothing waited behind 8).
        if !matches!(results.last(), Some(Err(IpcPublishError::Closed))) {
            assert!(bus.metrics().given_up >= 1, "{:?}", bus.metrics());
        }
    }
}

/// A consumer process killed on a quiet bus (no producer needing room, no
/// consumer after it) left its entry taken for ever, so with a table of 1
/// every later join failed with `TableFull`. A join that finds no free
/// entry now looks for dead owners: the first one notes the dead, a join
/// `reclaim_after` later gets the entry.
#[test]
fn a_dead_consumer_on_a_quiet_bus_frees_its_entry_for_a_later_join() {
    let d = dir();
    let bus = kill_opts(d.path(), true)
        .consumers(1)
        .create::<Ev>("quietfull")
        .unwrap();
    let mut child = spawn("consumer", d.path(), "quietfull", "gone");
    wait_for("the child to join", || bus.metrics().consumers.len() == 1);
    kill(&mut child);
    let err = bus.consumer("next").unwrap_err();
    assert!(matches!(err, IpcError::TableFull { .. }), "{err}");
    assert!(err.to_string().contains("retry"), "{err}");
    let mut joined = None;
    wait_for("the dead entry to be reclaimed", || {
        match bus.consumer("next") {
            Ok(c) => joined = Some(c),
            Err(IpcError::TableFull { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        joined.is_some()
    });
    assert_eq!(bus.metrics().reclaimed, 1);
}

/// A multi producer that claimed and waits for room when the bus closes
/// (a dead consumer, not yet reclaimed, holds the ring): it returns
/// `Closed`, its claim left unmarked; the live consumer gives the claim up
/// once the dead one is reclaimed, and ends.
#[test]
fn close_while_a_claim_waits_behind_a_dead_consumer_ends_everyone() {
    let d = dir();
    let bus = Options::new(8)
        .multi_producer()
        .dir(d.path())
        .reclaim_after(Duration::from_millis(300))
        .hole_timeout(Duration::from_millis(50))
        .create::<Ev>("closewait")
        .unwrap();
    let mut live = bus.consumer("live").unwrap();
    let mut child = spawn("consumer", d.path(), "closewait", "dead");
    wait_for("the child to join", || bus.metrics().consumers.len() == 2);
    let mut p = bus.producer().unwrap();
    // The child reads what comes while it lives; kill it, then fill the ring.
    kill(&mut child);
    let producer = thread::spawn(move || {
        let mut results = vec![];
        for k in 0..30 {
            let r = p.publish(|e| e.set(1, k));
            let stop = r.is_err();
            results.push(r);
            if stop {
                break;
            }
        }
        results
    });
    let mut order = Order::default();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(20) {
        let _ = live.poll(8, |e, _, _| order.see(e));
    }
    bus.close();
    loop {
        match live.poll_timeout(Duration::from_secs(10), 8, |e, _, _| order.see(e)) {
            Ok(_) => {}
            Err(IpcPollError::Closed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let results = producer.join().unwrap();
    let acked = results.iter().filter(|r| r.is_ok()).count() as u64;
    assert_eq!(order.0.get(&1).copied().unwrap_or(0), acked, "{results:?}");
    assert!(
        results
            .last()
            .is_some_and(|r| *r == Err(IpcPublishError::Closed)),
        "{results:?}"
    );
}

/// A close on another handle ends multi producers waiting for room behind
/// a live consumer that does not read (a single publish, and a batch with
/// room for half of it): `Closed`, not a wait as long as that consumer's
/// pause. The consumer then reads everything acknowledged, passes the
/// claims let go (those with room at once, the rest a hole timeout after
/// it reaches them) and ends with `Closed`.
#[test]
fn close_ends_multi_producers_waiting_behind_a_consumer_that_does_not_read() {
    // `idle_peer`: a second live consumer has read nothing when the close
    // comes. The claim the close let go of has no room while it has not
    // read the slot's last round, so the first consumer cannot give it up;
    // it used to wait there for ever instead of ending with `Closed`.
    for (batch, idle_peer) in [(false, false), (true, false), (false, true), (true, true)] {
        let case = format!("batch {batch}, idle peer {idle_peer}");
        let d = dir();
        let bus = Options::new(4)
            .multi_producer()
            .dir(d.path())
            .hole_timeout(Duration::from_millis(50))
            .create::<Ev>("stalled")
            .unwrap();
        let mut c = bus.consumer("c").unwrap();
        let mut idle = idle_peer.then(|| bus.consumer("idle").unwrap());
        let mut order = Order::default();
        let mut p = bus.producer().unwrap();
        for k in 0..4 {
            p.publish(|e| e.set(1, k)).unwrap();
        }
        if batch {
            // Two slots of room for a batch of four (none with an idle peer).
            assert_eq!(c.poll(2, |e, _, _| order.see(e)), Ok(2));
        }
        let (done, finished) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let r = if batch {
                p.batch_publish(4, |slots| {
                    for (i, e) in slots.iter_mut().enumerate() {
                        e.set(1, 4 + i as u64);
                    }
                })
            } else {
                p.publish(|e| e.set(1, 4))
            };
            let _ = done.send((r, p));
        });
        thread::sleep(Duration::from_millis(30)); // it claims and waits
        bus.clone().close();
        let (r, p) = finished
            .recv_timeout(Duration::from_secs(20))
            .expect("the publish still waits after the close");
        assert_eq!(r, Err(IpcPublishError::Closed), "{case}");
        drop(p);
        let drain = |c: &mut ringbus::ipc::IpcConsumer<Ev>, order: &mut Order| {
            let mut passed = 0;
            loop {
                match c.poll_timeout(Duration::from_secs(10), 8, |e, _, _| order.see(e)) {
                    Ok(n) => passed += n,
                    Err(IpcPollError::Closed) => break passed,
                    Err(e) => panic!("{case}: {e}"),
                }
            }
        };
        let passed = drain(&mut c, &mut order);
        assert_eq!(order.0.get(&1).copied(), Some(4), "{case}");
        assert_eq!(passed, if batch { 2 } else { 4 }, "{case}");
        let (next, tombstones) = match (idle_peer, batch) {
            (true, _) => (4, 0), // it ends at the claim it cannot pass
            (false, true) => (8, 4),
            (false, false) => (5, 1),
        };
        assert_eq!(c.next_sequence(), next, "{case}");
        assert_eq!(c.tombstones(), tombstones, "{case}");
        if let Some(idle) = idle.as_mut() {
            // The peer reads everything, then passes the claim (it has
            // room now) and ends too.
            let mut peer_order = Order::default();
            assert_eq!(drain(idle, &mut peer_order), 4, "{case}");
            assert_eq!(peer_order.0.get(&1).copied(), Some(4), "{case}");
            assert_eq!(idle.next_sequence(), if batch { 8 } else { 5 }, "{case}");
        }
    }
}

#[test]
fn a_dead_single_producer_is_replaced_and_the_sequence_goes_on() {
    let d = dir();
    let bus = kill_opts(d.path(), false).create::<Ev>("sp").unwrap();
    let mut c = bus.consumer("c").unwrap();
    let mut child = spawn("sp-producer", d.path(), "sp", "5");
    let mut last = None::<u64>;
    let mut seen = 0;
    while seen < 30 {
        seen += c
            .poll_timeout(Duration::from_secs(10), 8, |e, seq, _| {
                e.verify();
                assert_eq!(e.producer, 5);
                if let Some(l) = last {
                    assert_eq!(seq as u64, l + 1);
                }
                last = Some(seq as u64);
            })
            .unwrap();
    }
    kill(&mut child);
    // What the dead producer published is all there, in order.
    while c
        .poll(8, |e, seq, _| {
            e.verify();
            assert_eq!(e.producer, 5);
            assert_eq!(Some(seq as u64), last.map(|l| l + 1));
            last = Some(seq as u64);
        })
        .unwrap()
        > 0
    {}
    // A peer rewrote the header's producer kind (offset 20) to multi: the
    // replacement goes by this process's layout, which has no marks (it
    // released "marks" past the end of a single producer's file).
    poke(d.path(), "sp", 20, &2u32.to_le_bytes());
    let mut p = bus.producer().unwrap(); // the dead one's place
    assert!(
        matches!(bus.producer(), Err(IpcError::ProducerBusy { .. })),
        "one place, taken"
    );
    let seq = p.publish(|e| e.set(6, 0)).unwrap();
    while c
        .poll(8, |e, s, _| {
            e.verify();
            if e.producer == 6 {
                assert_eq!(s as u64, seq);
            }
        })
        .unwrap()
        > 0
    {}
    assert_eq!(c.next_sequence(), seq + 1);
    assert_eq!(bus.metrics().producers_replaced, 1);
}

/// Seeded rounds: 2 producer processes and 1 consumer process on a ring of
/// 8, with this process consuming too; once all three run, a random child
/// is killed at a random moment, then the rest run on. This process's
/// consumer must see each producer's events exactly once, in order, at
/// least 100 more of each live producer after the kill (within 20 s), and
/// then, after the close, `Closed`: the dead stop gating, and a killed
/// producer's open claim is given up.
#[test]
fn seeded_kill_rounds() {
    let rounds = std::env::var("RINGBUS_IPC_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(12u64);
    for seed in 0..rounds {
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let d = dir();
        let bus = kill_opts(d.path(), true).create::<Ev>("rounds").unwrap();
        let mut mine = bus.consumer("parent").unwrap();
        let mut kids = vec![
            spawn("producer", d.path(), "rounds", "1"),
            spawn("producer", d.path(), "rounds", "2"),
            spawn("consumer", d.path(), "rounds", "kid"),
        ];
        let victim = (next() % 3) as usize;
        let kill_after = 200 + next() % 3_000;
        let mut order = Order::default();
        let mut events = 0u64;
        // The count starts once every child runs (both producers seen, the
        // child consumer joined), so the kill comes mid-stream, not before
        // a slow child started (which left a round with one producer).
        let mut live_at = None::<u64>;
        // Per producer, what was seen when the victim was killed.
        let mut at_kill = None::<HashMap<u64, u64>>;
        let live_producers: Vec<u64> = [1u64, 2]
            .into_iter()
            .filter(|&id| victim != (id - 1) as usize)
            .collect();
        // Each live producer published this many events after the kill (a
        // producer napping in a wait for room may notice the room only
        // after the other one published thousands).
        let went_on = |order: &Order, at_kill: &Option<HashMap<u64, u64>>| {
            at_kill.as_ref().is_some_and(|at| {
                live_producers.iter().all(|id| {
                    order.0.get(id).copied().unwrap_or(0) >= at.get(id).copied().unwrap_or(0) + 100
                })
            })
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while live_at.map_or(true, |at| events < at + kill_after + 3_000)
            || !went_on(&order, &at_kill)
        {
            assert!(
                Instant::now() < deadline,
                "seed {seed}: wedged at {events} events (victim {victim}, live at {live_at:?}; \
                 seen per producer {:?}, at the kill {at_kill:?}; {:?})",
                order.0,
                bus.metrics()
            );
            events += mine
                .poll_timeout(Duration::from_millis(100), 64, |e, _, _| order.see(e))
                .map_or(0, |n| n as u64);
            if live_at.is_none()
                && order.0.len() == 2
                && bus.metrics().consumers.iter().any(|c| c.name == "kid")
            {
                live_at = Some(events);
            }
            if live_at.is_some_and(|at| events >= at + kill_after) && at_kill.is_none() {
                kill(&mut kids[victim]);
                at_kill = Some(order.0.clone());
            }
        }
        bus.close();
        // Read on until the close reaches this consumer: a producer whose
        // claim came before the close waits for the room this frees.
        loop {
            assert!(
                Instant::now() < deadline,
                "seed {seed}: no `Closed` after the close (victim {victim}; {:?})",
                bus.metrics()
            );
            match mine.poll_timeout(Duration::from_millis(100), 64, |e, _, _| order.see(e)) {
                Ok(_) | Err(IpcPollError::Timeout) => {}
                Err(IpcPollError::Closed) => break,
                Err(e) => panic!("seed {seed}: {e}"),
            }
        }
        for kid in &mut kids {
            let start = Instant::now();
            while kid.0.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(10) {
                thread::sleep(Duration::from_millis(1));
            }
            kill(kid);
        }
        let m = bus.metrics();
        if victim == 2 {
            assert!(
                m.consumers.iter().all(|c| c.name != "kid" || !c.alive),
                "seed {seed}"
            );
        }
    }
}

/// A pipeline `c -> d` on a multi-producer bus; `d` lags a whole ring
/// behind, so a publish waits for room when the bus closes: it returns
/// `Closed` and leaves its claim (sequence 4) unmarked. `c` reads 0..=3 and,
/// as `IpcBus::close` documents, "ends at it" with `Closed` (no room: `d`
/// has not read slot 0's round), its `next_sequence()` 4. Then `d` reads
/// 0..=3 and must end with `Closed`. Before the fix, `d` is bounded by `c`'s
/// sequence (4): `available()` never reaches the hole logic
/// (`limit == next`), and `finished()` no longer finds the claim stuck (the
/// ring has room now that `d` read slot 0). `c`, having said `Closed`, is
/// never polled again, so `d`'s polls time out for ever (poll_wait hangs).
/// Dropping `c` frees `d`; keeping the handle (as this test does, and as a
/// process that got `Closed` and has not exited yet does) did not: `d` now
/// ends at the claim too, nothing being published after it.
#[test]
fn a_consumer_after_one_that_ended_at_a_let_go_claim_ends_too() {
    let d = dir();
    let bus = Options::new(4)
        .multi_producer()
        .hole_timeout(Duration::from_millis(50))
        .dir(d.path())
        .create::<Ev>("letgo-pipeline")
        .unwrap();
    let mut c = bus.consumer("c").unwrap();
    let mut down = bus.consumer_after("d", &["c"]).unwrap();
    let mut p = bus.producer().unwrap();
    for k in 0..4 {
        p.publish(|e| e.set(1, k)).unwrap();
    }
    // Sequence 4 claims and waits for room (both consumers are at 0).
    let publisher = thread::spawn(move || {
        let r = p.publish(|e| e.set(1, 4));
        drop(p); // every producer lets go of its place
        r
    });
    wait_for("the claim of 4", || bus.metrics().cursor == 5);
    thread::sleep(Duration::from_millis(20));
    bus.close();
    assert_eq!(publisher.join().unwrap(), Err(IpcPublishError::Closed));
    // `c` reads everything and ends at the let-go claim, as documented.
    let mut order = Order::default();
    loop {
        match c.poll_timeout(Duration::from_secs(5), 8, |e, _, _| order.see(e)) {
            Ok(_) => {}
            Err(IpcPollError::Closed) => break,
            Err(e) => panic!("c: {e}"),
        }
    }
    assert_eq!(order.0.get(&1).copied(), Some(4));
    assert_eq!(c.next_sequence(), 4);
    // `d` reads what `c` handled, then must end too (c is kept, not polled).
    let mut down_order = Order::default();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(
            Instant::now() < deadline,
            "d never ends after the close: at {} with {:?} events, bounded by c at {} \
             ({:?})",
            down.next_sequence(),
            down_order.0.get(&1),
            c.next_sequence(),
            bus.metrics()
        );
        match down.poll_timeout(Duration::from_millis(100), 8, |e, _, _| down_order.see(e)) {
            Ok(_) | Err(IpcPollError::Timeout) => {}
            Err(IpcPollError::Closed) => break,
            Err(e) => panic!("d: {e}"),
        }
    }
    assert_eq!(down_order.0.get(&1).copied(), Some(4));
    drop(c);
}

/// A killed consumer's upstreams close no cycle: it waits for nobody (its
/// entry only holds its place), so "a" after "b" joins although the dead
/// "b" came after "a"; and a process resuming "b" after "a" is then refused.
#[test]
fn a_killed_consumer_closes_no_cycle_until_it_is_resumed() {
    let d = dir();
    let bus = kill_opts(d.path(), true)
        .reclaim_after(Duration::from_secs(60))
        .create::<Ev>("deadcycle")
        .unwrap();
    let mut kid = spawn("consumer-after", d.path(), "deadcycle", "b>a");
    wait_for("the child's join", || d.path().join("joined").exists());
    kill(&mut kid);
    let a = bus
        .consumer_after("a", &["b"])
        .expect("a dead consumer's upstreams closed a cycle");
    match bus.consumer_after("b", &["a"]) {
        Err(IpcError::Config { reason }) => assert!(reason.contains("cycle"), "{reason}"),
        other => panic!("resuming b after a: {:?}", other.map(|c| c.next_sequence())),
    }
    drop(a);
}

/// A `Wait::Sleeping` nap is cut to `Sleeping::MAX_NAP` (100 ms): a
/// consumer sleeping `Duration::MAX` between polls still ends at a close.
#[test]
fn a_huge_sleeping_nap_still_sees_the_close() {
    let d = dir();
    let bus = Options::new(8)
        .dir(d.path())
        .create::<Ev>("nap")
        .unwrap()
        .with_wait(Wait::Sleeping(Duration::MAX));
    let mut c = bus.consumer("c").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(c.poll_wait(8, |_, _, _| {}));
    });
    thread::sleep(Duration::from_millis(50));
    bus.close();
    let ended = rx.recv_timeout(Duration::from_secs(10));
    assert_eq!(
        ended.expect("a consumer sleeping Duration::MAX missed the close"),
        Err(IpcPollError::Closed)
    );
}
