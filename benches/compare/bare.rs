//! A yardstick: a bare ring written for this benchmark alone.
//!
//! It is the design ringbus and the `disruptor` crate share, cut down to its
//! loads and stores: one array of events, a published cursor (one producer)
//! or a claim counter with per-slot marks (many producers), and the
//! consumer's sequence that gates the producers. No handles, no shutdown or
//! failure handling, no wait strategies, no closures behind a trait: counters
//! stay in registers and every wait is inlined. What a library runs slower
//! than this is roughly the cost of its own code. It is not a ceiling: its
//! waits are the plainest ones (a `pause` spin pinned, a 1 µs sleep
//! otherwise, its producer's too on a full ring), which a library's waits can
//! beat. It is not a library and is only measured on the throughput
//! scenarios.

use std::cell::UnsafeCell;
use std::hint::spin_loop;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::common::*;

struct Ring {
    slots: Box<[UnsafeCell<Ev>]>,
    mask: i64,
    /// One producer: the last published sequence. Many: the claim counter
    /// (sequences handed out so far).
    cursor: CachePadded<AtomicI64>,
    /// The last sequence the consumer finished with.
    consumed: CachePadded<AtomicI64>,
    /// Many producers: `marks[s & mask] == s` once `s` is written.
    marks: Box<[AtomicI64]>,
}

// SAFETY: slots are shared between the producers and the consumers, but the
// protocol below never lets a write overlap another access: a producer writes
// `s` only after the consumer released `s - capacity` (Acquire load of
// `consumed`; in a stage graph, of every leaf's sequence, and every stage has
// a leaf at or after it), and a consumer reads `s` only after it was
// published (Acquire load of `cursor`, of the slot's mark, or of its upstream
// stages' sequences). Reads by several stages of one slot may overlap.
unsafe impl Sync for Ring {}

impl Ring {
    fn new(capacity: usize) -> Self {
        Self {
            slots: (0..capacity)
                .map(|_| UnsafeCell::new(Ev::default()))
                .collect(),
            mask: capacity as i64 - 1,
            cursor: CachePadded::new(AtomicI64::new(-1)),
            consumed: CachePadded::new(AtomicI64::new(-1)),
            marks: (0..capacity).map(|_| AtomicI64::new(-1)).collect(),
        }
    }

    fn slot(&self, s: i64) -> *mut Ev {
        self.slots[(s & self.mask) as usize].get()
    }

    fn capacity(&self) -> i64 {
        self.mask + 1
    }
}

pub fn run(sc: Scenario, cfg: &Config, pins: Option<(usize, usize)>) -> Sample {
    match sc {
        Scenario::Spsc => one_producer(cfg, pins, 1),
        Scenario::Batch64 => one_producer(cfg, pins, 64),
        Scenario::Mp2 => many_producers(cfg, 2),
        Scenario::Mp3 => many_producers(cfg, 3),
        // Each stage's upstream stages; none means it reads the producer's.
        Scenario::Pipeline => graph(cfg, &[&[], &[0], &[1]]),
        Scenario::Multicast => graph(cfg, &[&[], &[], &[]]),
        Scenario::Diamond => graph(cfg, &[&[], &[], &[0, 1]]),
        Scenario::Latency
        | Scenario::PingPong
        | Scenario::PipelineOneThread
        | Scenario::DiamondOneThread
        | Scenario::FanOut => {
            unreachable!("the bare ring runs only the throughput rows of a thread per stage")
        }
    }
}

/// One producer publishing `batch` events per cursor store; one consumer
/// spinning with a `pause`, as ringbus's `BusySpinWithHint`.
fn one_producer(cfg: &Config, pins: Option<(usize, usize)>, batch: i64) -> Sample {
    let n = cfg.events as i64;
    let ring = Arc::new(Ring::new(cfg.capacity));
    let check = Check::new();
    let consumer = {
        let ring = ring.clone();
        let check = check.clone();
        let core = pins.map(|p| p.1);
        thread::spawn(move || {
            pin(core);
            let mut sum = 0u64;
            let mut next = 0;
            while next < n {
                // Acquire: pairs with the producer's Release cursor store;
                // the events up to `available` are written.
                let available = ring.cursor.load(Ordering::Acquire);
                if available < next {
                    spin_loop();
                    continue;
                }
                for s in next..=available {
                    // SAFETY: `s` is published and not yet released to the
                    // producer, which waits for `consumed >= s` before
                    // rewriting the slot.
                    sum = sum.wrapping_add(unsafe { (*ring.slot(s)).value });
                }
                // Release: our reads of the slots happen before the producer
                // rewrites them (it loads `consumed` with Acquire).
                ring.consumed.store(available, Ordering::Release);
                next = available + 1;
            }
            check.store(sum);
        })
    };
    let elapsed = timed_on(pins.map(|p| p.0), move || {
        let capacity = ring.capacity();
        let mut free_up_to = capacity - 1;
        let mut next = 0;
        while next < n {
            let last = (next + batch).min(n) - 1;
            while last > free_up_to {
                // Acquire: pairs with the consumer's Release; it is done
                // reading everything up to the sequence loaded.
                free_up_to = ring.consumed.load(Ordering::Acquire) + capacity;
                if last > free_up_to {
                    spin_loop();
                }
            }
            for s in next..=last {
                // SAFETY: the consumer released `s - capacity` and cannot
                // read `s` before the cursor store below.
                unsafe { (*ring.slot(s)).value = s as u64 };
            }
            // Release: the slot writes happen before the consumer sees them.
            ring.cursor.store(last, Ordering::Release);
            next = last + 1;
        }
        consumer.join().unwrap();
    });
    check.expect("bare ring consumer", sum_to(cfg.events));
    Sample::throughput(
        cfg.events,
        elapsed,
        "bare ring (no library), busy-spin + hint, pinned",
    )
}

/// `producers` threads claiming one sequence each with `fetch_add` and
/// marking it; one consumer. Threads outnumber cores: every wait sleeps 1 µs,
/// as ringbus's `Sleeping` does in this row.
fn many_producers(cfg: &Config, producers: u64) -> Sample {
    let per = cfg.events / producers;
    let total = (per * producers) as i64;
    let ring = Arc::new(Ring::new(cfg.capacity));
    let check = Check::new();
    let nap = Duration::from_micros(1);
    let consumer = {
        let ring = ring.clone();
        let check = check.clone();
        thread::spawn(move || {
            let mut sum = 0u64;
            let mut next = 0;
            while next < total {
                let mut s = next;
                // Acquire: pairs with the producer's Release mark store; the
                // slot's event is written.
                while s < total && ring.marks[(s & ring.mask) as usize].load(Ordering::Acquire) == s
                {
                    // SAFETY: `s` is marked and not yet released.
                    sum = sum.wrapping_add(unsafe { (*ring.slot(s)).value });
                    s += 1;
                }
                if s == next {
                    thread::sleep(nap);
                    continue;
                }
                // Release: as in `one_producer`.
                ring.consumed.store(s - 1, Ordering::Release);
                next = s;
            }
            check.store(sum);
        })
    };
    let elapsed = timed_on(None, move || {
        let threads: Vec<_> = (0..producers)
            .map(|_| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let capacity = ring.capacity();
                    let mut free_up_to = capacity - 1;
                    for i in 0..per {
                        // Relaxed: the claim only hands out numbers; the
                        // slot is ordered by `consumed` and the mark.
                        let s = ring.cursor.fetch_add(1, Ordering::Relaxed) + 1;
                        while s > free_up_to {
                            // Acquire: as in `one_producer`.
                            free_up_to = ring.consumed.load(Ordering::Acquire) + capacity;
                            if s > free_up_to {
                                thread::sleep(nap);
                            }
                        }
                        // SAFETY: `s` is ours alone (claimed) and released
                        // by the consumer a lap ago.
                        unsafe { (*ring.slot(s)).value = i };
                        // Release: the write happens before the consumer
                        // reads the slot.
                        ring.marks[(s & ring.mask) as usize].store(s, Ordering::Release);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        consumer.join().unwrap();
    });
    check.expect("bare ring consumer", producers * sum_to(per));
    Sample::throughput(
        per * producers,
        elapsed,
        "bare ring (no library), sleeping 1 µs",
    )
}

/// One producer and a graph of summing stages, `upstream[k]` listing the
/// stages stage `k` reads after (none: it reads after the producer). The
/// producer is gated by the stages no other stage reads after. Threads
/// outnumber cores: every wait sleeps 1 µs, as ringbus's `Sleeping` does in
/// these rows.
fn graph(cfg: &Config, upstream: &'static [&'static [usize]]) -> Sample {
    let n = cfg.events as i64;
    let ring = Arc::new(Ring::new(cfg.capacity));
    let done: Arc<Vec<CachePadded<AtomicI64>>> = Arc::new(
        upstream
            .iter()
            .map(|_| CachePadded::new(AtomicI64::new(-1)))
            .collect(),
    );
    let leaves: Vec<usize> = (0..upstream.len())
        .filter(|k| upstream.iter().all(|ups| !ups.contains(k)))
        .collect();
    let nap = Duration::from_micros(1);
    let checks: Vec<Check> = upstream.iter().map(|_| Check::new()).collect();
    let stages: Vec<_> = upstream
        .iter()
        .enumerate()
        .map(|(k, ups)| {
            let (ring, done, check) = (ring.clone(), done.clone(), checks[k].clone());
            thread::spawn(move || {
                let mut sum = 0u64;
                let mut next = 0;
                while next < n {
                    // Acquire: pairs with the Release store of the producer's
                    // cursor or of an upstream stage's sequence; every event
                    // up to `available` is written.
                    let available = if ups.is_empty() {
                        ring.cursor.load(Ordering::Acquire)
                    } else {
                        ups.iter()
                            .map(|&u| done[u].load(Ordering::Acquire))
                            .min()
                            .unwrap_or(-1)
                    };
                    if available < next {
                        thread::sleep(nap);
                        continue;
                    }
                    for s in next..=available {
                        // SAFETY: `s` is published and the producer waits
                        // for every leaf downstream of us to pass it.
                        sum = sum.wrapping_add(unsafe { (*ring.slot(s)).value });
                    }
                    // Release: our reads happen before the producer (or a
                    // downstream stage) acts on the new sequence.
                    done[k].store(available, Ordering::Release);
                    next = available + 1;
                }
                check.store(sum);
            })
        })
        .collect();
    let elapsed = timed_on(None, move || {
        let capacity = ring.capacity();
        let mut free_up_to = capacity - 1;
        for s in 0..n {
            while s > free_up_to {
                // Acquire: as in `one_producer`, for each leaf.
                free_up_to = leaves
                    .iter()
                    .map(|&k| done[k].load(Ordering::Acquire))
                    .min()
                    .unwrap_or(n)
                    + capacity;
                if s > free_up_to {
                    thread::sleep(nap);
                }
            }
            // SAFETY: every leaf released `s - capacity`, and stages read
            // `s` only after the cursor store below.
            unsafe { (*ring.slot(s)).value = s as u64 };
            // Release: as in `one_producer`.
            ring.cursor.store(s, Ordering::Release);
        }
        for stage in stages {
            stage.join().unwrap();
        }
    });
    for (k, check) in checks.iter().enumerate() {
        check.expect(&format!("bare ring stage {k}"), sum_to(cfg.events));
    }
    Sample::throughput(cfg.events, elapsed, "bare ring (no library), sleeping 1 µs")
}
