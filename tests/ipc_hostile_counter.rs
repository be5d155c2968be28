//! A peer that wrote the file's join counter (`Stats::joins`, the join
//! protocol's meeting point) made every later consumer join panic with an
//! arithmetic overflow in debug builds: `table::join_point` added 1 to the
//! `fetch_add`'s result. The module's Trust section promises errors or
//! wrong events from a corrupted file, never a crash (found by an audit,
//! 2026-12-06; fails on fea1c36).
#![cfg(all(feature = "ipc", unix, not(miri), not(loom)))]

use std::time::Duration;

use ringbus::ipc::{Options, Pod, Zeroable};

#[derive(Clone, Copy, Default, Pod, Zeroable, Debug)]
#[repr(C)]
struct Ev {
    k: u64,
}

fn dir() -> tempfile::TempDir {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    tempfile::Builder::new()
        .prefix("ringbus-ipc2-hostile")
        .tempdir_in(base)
        .unwrap()
}

fn poke(dir: &std::path::Path, name: &str, offset: u64, value: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(format!("ringbus.{name}")))
        .unwrap();
    f.write_all_at(value, offset).unwrap();
}

fn peek(dir: &std::path::Path, name: &str, offset: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(dir.join(format!("ringbus.{name}"))).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, offset).unwrap();
    u64::from_le_bytes(b)
}

/// The control block starts at 128 (the claim counter, tests/ipc.rs
/// `CURSOR_AT`); its stats line (given_up, reclaimed, producers_replaced,
/// closed + pad, joins) at 128 + 2 × 128; `joins` 32 bytes into it. Checked
/// against a known count below, so a layout change fails loudly.
const JOINS_AT: u64 = 128 + 256 + 32;

#[test]
fn a_peer_written_join_counter_is_not_a_panic() {
    for multi in [false, true] {
        let d = dir();
        let o = Options::new(8)
            .dir(d.path())
            .reclaim_after(Duration::from_millis(50));
        let o = if multi { o.multi_producer() } else { o };
        let bus = o.create::<Ev>("joins").unwrap();
        // Two fresh joins: the counter says 2.
        drop(bus.consumer("a").unwrap());
        drop(bus.consumer("b").unwrap());
        assert_eq!(
            peek(d.path(), "joins", JOINS_AT),
            2,
            "the join counter's offset"
        );
        // A peer writes the counter's last value.
        poke(d.path(), "joins", JOINS_AT, &u64::MAX.to_le_bytes());
        let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            bus.consumer("c").map(|c| c.next_sequence())
        }));
        match joined {
            // Joined, or refused with an error: either keeps the promise.
            Ok(r) => {
                let _ = r;
            }
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("multi {multi}: a join panicked on a peer-written counter: {msg}");
            }
        }
        // And the bus still works for this process afterwards.
        let mut p = bus.producer().unwrap();
        p.publish(|e| e.k = 7).unwrap();
    }
}
