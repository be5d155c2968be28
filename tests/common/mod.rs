//! Shared test fixtures: an event whose payload is derived from what the
//! producer meant to write, and a verifying stage that fails loudly on a torn,
//! unpublished, lost, duplicated or reordered event.
#![allow(dead_code)]

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ringbus::{EventHandler, Sequence};

/// Events per test run; small under Miri, which is ~1000x slower.
pub const N: u64 = scaled(200_000, 300);

/// A stress test's volume: `full`, `miri` under Miri, and a quarter under
/// ThreadSanitizer (`ci/tsan.sh` sets `--cfg ringbus_tsan`), which is ~10x
/// slower and finds races by the interleavings it watches, not by volume.
pub const fn scaled(full: u64, miri: u64) -> u64 {
    if cfg!(miri) {
        miri
    } else if cfg!(ringbus_tsan) {
        full / 4
    } else {
        full
    }
}

/// Bits of `value` that hold the per-producer counter.
pub const PRODUCER_SHIFT: u32 = 40;

#[derive(Debug, Default, Clone)]
pub struct Event {
    pub value: u64,
    pub check: u64,
    /// Written by mutating stages.
    pub enriched: u64,
}

/// SplitMix64: a payload check that a torn write cannot satisfy by accident.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Event {
    pub fn set(&mut self, value: u64) {
        self.value = value;
        self.check = mix(value);
        self.enriched = 0;
    }

    pub fn verify(&self) {
        assert_eq!(
            self.check,
            mix(self.value),
            "torn or unwritten event {self:?}"
        );
    }
}

/// The value producer `p` writes for its `i`-th event.
pub fn value(p: u64, i: u64) -> u64 {
    (p << PRODUCER_SHIFT) | i
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub count: u64,
    pub sum: u64,
    pub started: bool,
    pub shut_down: bool,
    pub timeouts: u64,
}

/// A stage that checks every event and records what it saw.
///
/// * sequences arrive contiguous from 0: nothing lost or duplicated;
/// * the payload's check matches: nothing torn or unpublished;
/// * with `single_source`, value == sequence; otherwise each producer's
///   counter increases by exactly one: per-producer order;
/// * with `needs_enriched`, a mutating stage upstream wrote `enriched`.
pub struct Verifier {
    pub next_sequence: Sequence,
    pub single_source: bool,
    pub needs_enriched: bool,
    pub last_per_producer: Vec<Option<u64>>,
    pub stats: Stats,
    pub out: Arc<Mutex<Stats>>,
}

impl Verifier {
    pub fn new(single_source: bool) -> (Self, Arc<Mutex<Stats>>) {
        let out = Arc::new(Mutex::new(Stats::default()));
        (
            Self {
                next_sequence: 0,
                single_source,
                needs_enriched: false,
                last_per_producer: vec![None; 8],
                stats: Stats::default(),
                out: Arc::clone(&out),
            },
            out,
        )
    }

    pub fn enriched(mut self) -> Self {
        self.needs_enriched = true;
        self
    }
}

impl EventHandler<Event> for Verifier {
    fn on_event(&mut self, e: &Event, sequence: Sequence, _end_of_batch: bool) {
        assert_eq!(sequence, self.next_sequence, "sequence gap or repeat");
        self.next_sequence += 1;
        e.verify();
        if self.single_source {
            assert_eq!(
                e.value, sequence as u64,
                "event {sequence} holds another's value"
            );
        } else {
            let p = (e.value >> PRODUCER_SHIFT) as usize;
            let i = e.value & ((1 << PRODUCER_SHIFT) - 1);
            let expected = self.last_per_producer[p].map_or(0, |last| last + 1);
            assert_eq!(i, expected, "producer {p}'s events out of order");
            self.last_per_producer[p] = Some(i);
        }
        if self.needs_enriched {
            assert_eq!(
                e.enriched,
                mix(e.value) ^ 1,
                "mutating stage's write not visible"
            );
        }
        self.stats.count += 1;
        self.stats.sum = self.stats.sum.wrapping_add(e.value);
    }

    fn on_start(&mut self) {
        self.stats.started = true;
    }

    fn on_shutdown(&mut self) {
        self.stats.shut_down = true;
        *self.out.lock().unwrap() = self.stats.clone();
    }

    fn on_timeout(&mut self, _sequence: Sequence) {
        self.stats.timeouts += 1;
    }
}

/// Sum of the values producer `p` writes for `0..n`.
pub fn producer_sum(p: u64, n: u64) -> u64 {
    (0..n).fold(0u64, |s, i| s.wrapping_add(value(p, i)))
}

/// Runs `f` on a thread and fails the test if it has not finished within
/// `secs` seconds: a lost wake-up or a deadlock fails instead of hanging.
pub fn bounded<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(if cfg!(miri) {
        secs * 100
    } else {
        secs
    })) {
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

/// A stage that holds each event until the gate lets it go (or the gate's
/// sender is dropped).
pub fn gated_stage(
    gate: mpsc::Receiver<()>,
) -> impl FnMut(&Event, Sequence, bool) + Send + 'static {
    move |_e: &Event, _s: Sequence, _eob: bool| {
        let _ = gate.recv();
    }
}

/// A stage that records the highest sequence it finished into a shared array,
/// and asserts that each of its upstream stages had finished the event first.
pub fn ordered_stage(
    me: usize,
    upstream: Vec<usize>,
    progress: Arc<Vec<std::sync::atomic::AtomicI64>>,
) -> impl FnMut(&Event, Sequence, bool) + Send + 'static {
    use std::sync::atomic::Ordering;
    let mut next = 0;
    move |e: &Event, seq: Sequence, _eob: bool| {
        assert_eq!(seq, next);
        next += 1;
        e.verify();
        assert_eq!(e.value, seq as u64);
        for &u in &upstream {
            // A stage stores its sequence once per batch, so this only holds
            // if our barrier waited for it.
            let done = progress[u].load(Ordering::Acquire);
            assert!(
                done >= seq,
                "stage {me} saw {seq} before upstream {u} finished it"
            );
        }
        progress[me].store(seq, Ordering::Release);
    }
}
