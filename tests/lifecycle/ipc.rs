//! The lifecycle tester's shared-memory mode (`ringbus::ipc`), in threads of
//! one process (the kill tests in tests/ipc.rs use real processes): rings of
//! 2 to 64 that lap constantly, single or 1–3 multi producers publishing
//! one at a time, in batches up to the ring (straddling the wrap), with
//! `try_publish` and `publish_timeout`; publish closures that panic (the
//! claim is let go) or stall past the hole timeout (given up, the producer
//! is told); 1–3 consumers that stay, chained with `consumer_after` or not,
//! each with a random wait strategy, some whose closure panics once (the
//! same events come again); a consumer that leaves and joins again under
//! its name at random moments, and between its hops consumers whose
//! `after` names close a cycle (direct or through a third) join while the
//! producers publish (the last is refused with `Config`); stages (`IpcBus::stage`): "s0", whose
//! handler fails once (an error or a panic) under a random policy (halt,
//! then a supervisor starts it again under its name and it resumes at the
//! failed event; skip; dead-letter; retry; or, with a short
//! `reclaim_after`, left for good), and "s1" after it, sometimes halted
//! from another thread and started again, sometimes with a `timeout`
//! (its `on_timeout` gets the last sequence it passed); and `close` from another handle,
//! at the end or while producers publish (at the end, once "s1" has read
//! everything: an abandoned "s0" on a bus with no producer left is
//! reclaimed by "s1" alone), or while a consumer that stopped reading holds
//! the producers waiting for room (they must get `Closed`; it then reads
//! on to the end).
//!
//! Checked: each event whole (checksum), per producer in order with
//! nothing twice at every consumer; every acknowledged event reaches every
//! consumer that stayed, and nothing that was given up, panicked or
//! refused does; a panicking poll gives the same events again; a
//! consumer after another never passes it; stage "s0" handles every
//! acknowledged event once, in order, across its restarts, but for the one
//! its policy skipped or dead-lettered (an abandoned one: no event it
//! should not have), and "s1" never reads an event before "s0" is done
//! with it, unless "s0" failed and was abandoned.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ringbus::ipc::{IpcBus, IpcPollError, IpcPublishError, Options, Pod, Wait, Zeroable};
use ringbus::{FailurePolicy, Sequence};

use super::Rng;

/// An event that shows a torn or stale slot.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub(crate) struct Small {
    producer: u64,
    k: u64,
    check: u64,
}

/// The same with 1,000 bytes of payload derived from `k`.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub(crate) struct Large {
    producer: u64,
    k: u64,
    check: u64,
    payload: [u64; 125],
}

pub(crate) trait IpcEv: Pod + Send {
    fn set(&mut self, producer: u64, k: u64);
    fn get(&self) -> (u64, u64);
}

fn check(producer: u64, k: u64) -> u64 {
    super::mix(producer << 40 ^ k)
}

impl IpcEv for Small {
    fn set(&mut self, producer: u64, k: u64) {
        *self = Small {
            producer,
            k,
            check: check(producer, k),
        };
    }
    fn get(&self) -> (u64, u64) {
        assert_eq!(
            self.check,
            check(self.producer, self.k),
            "torn or stale event"
        );
        (self.producer, self.k)
    }
}

impl IpcEv for Large {
    fn set(&mut self, producer: u64, k: u64) {
        self.producer = producer;
        self.k = k;
        for (i, w) in self.payload.iter_mut().enumerate() {
            *w = k ^ i as u64;
        }
        self.check = check(producer, k);
    }
    fn get(&self) -> (u64, u64) {
        assert_eq!(
            self.check,
            check(self.producer, self.k),
            "torn or stale event"
        );
        for (i, w) in self.payload.iter().enumerate() {
            assert_eq!(*w, self.k ^ i as u64, "torn or stale payload");
        }
        (self.producer, self.k)
    }
}

/// Per producer: the last k seen (order, nothing twice), and every event.
#[derive(Default)]
struct Seen {
    last: Vec<Option<u64>>,
    all: BTreeSet<(u64, u64)>,
}

impl Seen {
    fn see(&mut self, (producer, k): (u64, u64), who: &str) {
        let p = producer as usize;
        if self.last.len() <= p {
            self.last.resize(p + 1, None);
        }
        if let Some(last) = self.last[p] {
            assert!(
                k > last,
                "{who}: producer {producer} k {k} after {last} (twice or out of order)"
            );
        }
        self.last[p] = Some(k);
        self.all.insert((producer, k));
    }
}

/// What each thread of the running case last did, and the case's bus, for
/// the watchdog to print when a case hangs.
static STATUS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
static METRICS: Mutex<Option<Box<dyn Fn() -> String + Send>>> = Mutex::new(None);

fn status(who: &str, what: String) {
    let mut s = STATUS.lock().unwrap();
    match s.iter_mut().find(|(w, _)| w == who) {
        Some(entry) => entry.1 = what,
        None => s.push((who.to_string(), what)),
    }
}

/// Prints what the running case's threads last did (a hang's report).
pub(crate) fn dump() {
    for (who, what) in STATUS.lock().unwrap().iter() {
        eprintln!("  ipc {who}: {what}");
    }
    if let Some(m) = METRICS.lock().unwrap().as_ref() {
        eprintln!("  ipc metrics: {}", m());
    }
}

pub(crate) fn run(seed: u64) {
    STATUS.lock().unwrap().clear();
    let mut rng = Rng(super::mix(seed ^ 0x1BC5_5EED_0000_0001));
    if rng.chance(70) {
        case::<Small>(seed, &mut rng)
    } else {
        case::<Large>(seed, &mut rng)
    }
}

/// Joins "hx" after "hy" (absent: it waits where it joined), then, through
/// "hz" after "hx" when `through`, "hy" after the last: a cycle, refused
/// with `Config`. Every consumer it joined leaves at once. A full table
/// (dead entries not reclaimed yet) skips it.
fn refuse_a_cycle<E: IpcEv>(bus: &IpcBus<E>, through: bool, who: &str) {
    let Ok(x) = bus.consumer_after("hx", &["hy"]) else {
        return;
    };
    let z = if through {
        match bus.consumer_after("hz", &["hx"]) {
            Ok(z) => Some(z),
            Err(ringbus::ipc::IpcError::TableFull { .. }) => return,
            Err(e) => panic!("{who}: hz after hx, no cycle: {e}"),
        }
    } else {
        None
    };
    let last = if through { "hz" } else { "hx" };
    match bus.consumer_after("hy", &[last]) {
        Err(ringbus::ipc::IpcError::Config { reason }) => {
            assert!(reason.contains("cycle"), "{who}: {reason}")
        }
        Err(ringbus::ipc::IpcError::TableFull { .. }) => {}
        Err(e) => panic!("{who}: hy after {last}: {e}"),
        Ok(_) => panic!("{who}: hy after {last} closes a cycle and was accepted"),
    }
    drop((x, z));
}

fn wait(rng: &mut Rng) -> Wait {
    match rng.below(4) {
        0 => Wait::BusySpin,
        1 => Wait::Yielding,
        2 => Wait::Sleeping(Duration::from_micros(20)),
        _ => Wait::Blocking,
    }
}

fn case<E: IpcEv>(seed: u64, rng: &mut Rng) {
    let dir = tempfile::Builder::new()
        .prefix("ringbus-lifecycle")
        .tempdir_in(if cfg!(target_os = "linux") {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .unwrap();
    let capacity = [2usize, 4, 8, 16, 64][rng.below(5) as usize];
    let multi = rng.chance(60);
    let producers = if multi { 1 + rng.below(3) as usize } else { 1 };
    let hole = Duration::from_millis(20 + rng.below(30));
    let mut options = Options::new(capacity)
        .dir(dir.path())
        .hole_timeout(hole)
        .consumers(8);
    if multi {
        options = options.multi_producer();
    }
    let staged = rng.chance(50);
    // A failed "s0" left for good: "s1", held at its failed event, must
    // reclaim it and go on, even once the producers are gone.
    let abandoned = staged && rng.chance(35);
    if abandoned {
        // Half the time longer than the hole timeout: producers' claims
        // wait for room behind the failed s0 past it, and the consumers
        // waiting at them must not give them up once s0 is reclaimed
        // (`marks::GiveUp::Held`).
        let reclaim = if rng.chance(50) {
            1 + rng.below(20)
        } else {
            hole.as_millis() as u64 + 1 + rng.below(40)
        };
        options = options.reclaim_after(Duration::from_millis(reclaim));
    } else if staged {
        // A failed "s0" is started again at once; it must not be reclaimed
        // meanwhile however slow the machine.
        options = options.reclaim_after(Duration::from_secs(60));
    }
    let bus = options.create::<E>("case").unwrap();
    let watched = bus.clone();
    *METRICS.lock().unwrap() = Some(Box::new(move || format!("{:?}", watched.metrics())));
    let who =
        format!("ipc case, seed {seed}, ring {capacity}, multi {multi}, {producers} producers");

    // Consumers that stay: joined before anything is published. Some multi
    // producer cases have none (only the hopper, now and then): producers
    // lap each other, and one preempted between its claim and its mark
    // finds its slot claimed a lap later (`marks::skip_behind`).
    let staying = if multi && !staged && rng.chance(15) {
        0
    } else {
        1 + rng.below(3) as usize
    };
    let mut consumers = vec![];
    // Whether each consumer reads after the one before it.
    let mut chained = vec![];
    for i in 0..staying {
        let name = format!("c{i}");
        let after = (i > 0 && rng.chance(40)).then(|| format!("c{}", i - 1));
        chained.push(after.is_some());
        let b = bus.clone().with_wait(wait(rng));
        let c = match &after {
            Some(a) => b.consumer_after(&name, &[a.as_str()]).unwrap(),
            None => b.consumer(&name).unwrap(),
        };
        let panic_at = rng.chance(30).then(|| rng.below(400));
        consumers.push((c, after, panic_at));
    }
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..staying).map(|_| AtomicU64::new(0)).collect());
    // Now and then one consumer stops reading (after a few polls) until the
    // bus is closed from another handle, then reads on to the end: the
    // producers waiting for room behind it must get `Closed`, and what they
    // had acknowledged must still reach it. (A separate stream, so the
    // other seeds' cases stay as they were.)
    let mut extra = Rng(super::mix(seed ^ 0x57A1_1ED0_C105_ED00));
    let stall = (staying > 0 && extra.chance(15))
        .then(|| (extra.below(staying as u64) as usize, extra.below(20)));
    let stalled = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicBool::new(false));
    // The consumers that read on their own while one stalls (not after it,
    // directly or down a chain): in half the stall cases they must end
    // with `Closed` by themselves, before the stalled one reads again,
    // also at a claim the close let go of that it still holds.
    let free_of_stall: Vec<bool> = (0..staying)
        .map(|i| match stall {
            Some((s, _)) if i == s => false,
            Some((s, _)) if i > s => !(s + 1..=i).all(|j| chained[j]),
            _ => true,
        })
        .collect();
    let end_before_the_stall = stall.is_some() && extra.chance(50);
    let mut consumer_threads: Vec<_> = consumers
        .into_iter()
        .enumerate()
        .map(|(i, (mut c, after, mut panic_at))| {
            let progress = progress.clone();
            let who = format!("{who}, consumer c{i}");
            let stall_after = stall.and_then(|(who, after)| (who == i).then_some(after));
            let (stalled, closed) = (stalled.clone(), closed.clone());
            thread::spawn(move || {
                let mut seen = Seen::default();
                let mut polls = 0u64;
                loop {
                    if stall_after == Some(polls) {
                        status(&format!("c{i}"), "stopped reading until the close".into());
                        stalled.store(true, Ordering::SeqCst);
                        while !closed.load(Ordering::SeqCst) {
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                    polls += 1;
                    status(
                        &format!("c{i}"),
                        format!("poll {polls} at {}", c.next_sequence()),
                    );
                    let mut batch = vec![];
                    let result = catch_unwind(AssertUnwindSafe(|| {
                        c.poll_timeout(Duration::from_millis(5), 16, |e, seq, _| {
                            let seq = seq as u64;
                            if after.is_some() {
                                // The consumer before handled it: its
                                // progress is stored before its commit.
                                let up = progress[i - 1].load(Ordering::SeqCst);
                                assert!(seq < up, "{who}: read {seq} before its upstream ({up})");
                            }
                            progress[i].fetch_max(seq + 1, Ordering::SeqCst);
                            batch.push(e.get());
                            if panic_at == Some(polls) {
                                panic_at = None;
                                panic!("planned panic in an ipc poll");
                            }
                        })
                    }));
                    match result {
                        Err(_) => continue, // the same events come again
                        Ok(Ok(_)) | Ok(Err(IpcPollError::Timeout)) => {}
                        Ok(Err(IpcPollError::Closed)) => break,
                        Ok(Err(e)) => panic!("{who}: {e}"),
                    }
                    for ev in batch {
                        seen.see(ev, &who);
                    }
                }
                (seen, c.tombstones())
            })
        })
        .map(Some)
        .collect();

    let stages = staged.then(|| stages::<E>(&bus, rng, &who, abandoned));

    // A consumer that leaves and joins again under its name.
    let hopping = Arc::new(AtomicBool::new(true));
    // Now and then, between its hops, consumers that would wait for each
    // other (a cycle of `after` names, direct or through a third) try to
    // join while the producers publish: the one closing the cycle must be
    // refused with `Config`, and those joined leave at once (they would
    // gate the producers for ever). A separate stream, so the other seeds'
    // cases stay as they were.
    let cycles = Rng(super::mix(seed ^ 0xC1C1_E5C1_C1E5)).below(3);
    let hopper = {
        let b = bus.clone().with_wait(wait(rng));
        let hopping = hopping.clone();
        let hops = rng.below(5);
        let who = format!("{who}, hopper");
        thread::spawn(move || {
            let mut joined = 0;
            while hopping.load(Ordering::SeqCst) && joined <= hops {
                if cycles > 0 && joined % 2 == 1 {
                    refuse_a_cycle(&b, cycles == 2, &who);
                }
                let mut c = b.consumer("hopper").unwrap();
                joined += 1;
                // A fresh join sees a suffix of each producer's events.
                let mut seen = Seen::default();
                for _ in 0..(1 + joined * 3) {
                    match c.poll_timeout(Duration::from_millis(1), 8, |e, _, _| {
                        seen.see(e.get(), &who)
                    }) {
                        Ok(_) | Err(IpcPollError::Timeout) => {}
                        Err(IpcPollError::Closed) => return,
                        Err(e) => panic!("{who}: {e}"),
                    }
                }
            }
        })
    };

    // Producers: what each had acknowledged.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stalls = Arc::new(AtomicU64::new(if multi { rng.below(3) } else { 0 }));
    let total = 50 + rng.below(super::MAX_EVENTS as u64 / producers as u64);
    let early_close = rng.chance(20).then(|| rng.below(total));
    // A stalled consumer holds the producers: they publish on, and the bus
    // is closed once it has stopped reading (or they are done), not after.
    let early_close = early_close.filter(|_| stall.is_none());
    let published = Arc::new(AtomicU64::new(0));
    let producer_threads: Vec<_> = (0..producers as u64)
        .map(|id| {
            let mut p = bus.producer().unwrap();
            let mut prng = Rng(super::mix(seed ^ id ^ 0xA11C_E5ED));
            let acked = acked.clone();
            let stalls = stalls.clone();
            let published = published.clone();
            let who = format!("{who}, producer {id}");
            thread::spawn(move || {
                let mut k = 0u64;
                while k < total {
                    status(&format!("producer {id}"), format!("publishing k {k}"));
                    let n = if prng.chance(20) {
                        1 + prng.below(capacity as u64)
                    } else {
                        1
                    };
                    let n = n.min(total - k) as usize;
                    let panics = prng.chance(2);
                    let stall = n == 1
                        && prng.chance(3)
                        && stalls
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| s.checked_sub(1))
                            .is_ok();
                    let first = k;
                    let result = catch_unwind(AssertUnwindSafe(|| {
                        let write = |e: &mut E, i: u64| e.set(id, first + i);
                        match (n, prng.below(4)) {
                            (1, 0) => loop {
                                match p.try_publish(|e| {
                                    write(e, 0);
                                    if panics {
                                        panic!("planned panic in an ipc publish");
                                    }
                                }) {
                                    Err(IpcPublishError::Full) => thread::yield_now(),
                                    other => break other.map(|_| ()),
                                }
                            },
                            (1, 1) => loop {
                                match p.publish_timeout(Duration::from_millis(1), |e| write(e, 0)) {
                                    Err(IpcPublishError::Timeout) => {}
                                    other => break other.map(|_| ()),
                                }
                            },
                            (1, _) => p
                                .publish(|e| {
                                    write(e, 0);
                                    if stall {
                                        thread::sleep(hole * 3);
                                        write(e, 0);
                                    }
                                    if panics {
                                        panic!("planned panic in an ipc publish");
                                    }
                                })
                                .map(|_| ()),
                            _ => p
                                .batch_publish(n, |slots| {
                                    for (i, e) in slots.iter_mut().enumerate() {
                                        write(e, i as u64);
                                    }
                                    if panics {
                                        panic!("planned panic in an ipc batch publish");
                                    }
                                })
                                .map(|_| ()),
                        }
                    }));
                    k += n as u64;
                    match result {
                        Err(_) => {} // panicked: nothing of it published
                        Ok(Ok(())) => {
                            let mut a = acked.lock().unwrap();
                            for i in first..k {
                                a.insert((id, i));
                            }
                        }
                        Ok(Err(IpcPublishError::GivenUp { lost, .. })) => {
                            assert!(multi, "{who}: a single producer's claim was given up");
                            // The batch's first n - lost were published.
                            let mut a = acked.lock().unwrap();
                            for i in first..k - lost as u64 {
                                a.insert((id, i));
                            }
                        }
                        Ok(Err(IpcPublishError::Closed)) => {
                            status(&format!("producer {id}"), "closed".into());
                            return;
                        }
                        Ok(Err(e)) => panic!("{who}: {e}"),
                    }
                    if early_close
                        .is_some_and(|at| published.fetch_add(n as u64, Ordering::SeqCst) >= at)
                    {
                        return;
                    }
                }
            })
        })
        .collect();
    // Close from another handle: early (while producers publish) or after.
    let closer = bus.clone();
    let mut early_seen = vec![];
    if early_close.is_some() || stall.is_some() {
        let at = early_close.unwrap_or(0);
        while published.load(Ordering::SeqCst) < at
            && producer_threads.iter().any(|t| !t.is_finished())
        {
            thread::sleep(Duration::from_micros(100));
        }
        if stall.is_some() {
            while !stalled.load(Ordering::SeqCst)
                && producer_threads.iter().any(|t| !t.is_finished())
            {
                thread::sleep(Duration::from_micros(100));
            }
            // Time for the producers to fill the ring and wait behind it.
            thread::sleep(Duration::from_micros(extra.below(5_000)));
        }
        thread::spawn(move || closer.close()).join().unwrap();
        // The stalled consumer reads again only once every producer has
        // returned: `close` alone must end their waits for room.
        for t in producer_threads {
            t.join().unwrap();
        }
        if end_before_the_stall {
            status("case", "consumers free of the stall end first".into());
            for (i, t) in consumer_threads.iter_mut().enumerate() {
                if free_of_stall[i] {
                    let seen = t.take().expect("joined once").join().unwrap();
                    early_seen.push((i, seen));
                }
            }
        }
        closed.store(true, Ordering::SeqCst);
    } else {
        for t in producer_threads {
            t.join().unwrap();
        }
        if let Some(stages) = &stages {
            // The producers are gone and the bus is open: nothing but "s1"
            // itself reclaims an abandoned "s0" now.
            stages.drain(acked.lock().unwrap().len() as u64);
        }
        thread::spawn(move || closer.close()).join().unwrap();
        closed.store(true, Ordering::SeqCst);
    }
    status("case", "producers joined, bus closed".into());
    hopping.store(false, Ordering::SeqCst);
    hopper.join().unwrap();
    status("case", "hopper joined".into());
    let acked = acked.lock().unwrap().clone();
    let late_seen = consumer_threads
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| t.map(|t| (i, t.join().unwrap())))
        .collect::<Vec<_>>();
    // Once every consumer ended: their last give-ups are counted.
    let given_up = bus.metrics().given_up;
    for (i, (seen, tombstones)) in early_seen.into_iter().chain(late_seen) {
        // Every tombstone a consumer passes was made, and counted, once.
        // (Not equality: a consumer may end, `Closed`, at a claim the close
        // let go of while a slower consumer held its slot, and that one
        // gives the claim up later; 2 cases of 4,000 did.)
        assert!(
            tombstones <= given_up,
            "{who}: consumer c{i} passed {tombstones} tombstones, given_up says {given_up}"
        );
        let missing: Vec<_> = acked.difference(&seen.all).take(5).collect();
        assert!(
            missing.is_empty(),
            "{who}: consumer c{i} lost acknowledged events {missing:?}"
        );
        let extra: Vec<_> = seen.all.difference(&acked).take(5).collect();
        assert!(
            extra.is_empty(),
            "{who}: consumer c{i} saw events never acknowledged {extra:?}"
        );
    }
    if let Some(stages) = stages {
        stages.check(&acked, &who);
    }
    drop::<IpcBus<E>>(bus);
}

/// A stage's handler `f` whose `on_timeout` must get the last sequence it
/// passed: at or past the last event it handled (tombstones after it count
/// as passed), never lower than the previous timeout's, and below the next
/// event it handles; and must come no sooner than `timeout` after the last
/// event or timeout (a bound the stage keeps by construction, not a speed
/// check).
struct TimeoutChecked<F> {
    f: F,
    who: String,
    /// The last event's sequence and the last timeout's.
    last: (Option<Sequence>, Option<Sequence>),
    timeout: Option<Duration>,
    /// When the last event or timeout came.
    since: std::time::Instant,
}

impl<E, F: FnMut(&E, Sequence, bool)> ringbus::EventHandler<E> for TimeoutChecked<F> {
    fn on_event(&mut self, e: &E, seq: Sequence, end_of_batch: bool) {
        let who = &self.who;
        assert!(
            self.last.1.map_or(true, |t| t < seq),
            "{who}: event {seq} after on_timeout said {:?} was passed",
            self.last.1
        );
        (self.f)(e, seq, end_of_batch);
        self.last.0 = Some(seq);
        self.since = std::time::Instant::now();
    }
    fn on_timeout(&mut self, seq: Sequence) {
        let who = &self.who;
        let idle = self.since.elapsed();
        let timeout = self.timeout.expect("on_timeout without a timeout");
        assert!(
            idle >= timeout,
            "{who}: on_timeout after {idle:?} idle, below the timeout {timeout:?}"
        );
        self.since = std::time::Instant::now();
        let (event, timeout) = self.last;
        assert!(
            event.map_or(true, |l| seq >= l) && timeout.map_or(true, |t| seq >= t),
            "{who}: on_timeout({seq}) after event {event:?} and timeout {timeout:?}"
        );
        self.last.1 = Some(seq);
    }
}

/// The stages of a case: "s0" under its supervisor, "s1" after it.
struct Stages {
    s0: thread::JoinHandle<(Seen, BTreeSet<(u64, u64)>)>,
    s1: thread::JoinHandle<(Seen, bool)>,
    /// "s0" is not started again after its failure.
    abandoned: bool,
    /// "s1" is halted and started again (at the present).
    s1_halts: bool,
    /// Events "s1" has read.
    s1_read: Arc<AtomicU64>,
    /// "s0" failed (its planned failure).
    s0_failed: Arc<AtomicBool>,
}

/// `abandoned`: "s0" halts on its failure and is not started again.
fn stages<E: IpcEv>(bus: &IpcBus<E>, rng: &mut Rng, who: &str, abandoned: bool) -> Stages {
    let progress = Arc::new(AtomicU64::new(0));
    let fail_at = rng.below(300);
    let error = rng.chance(50);
    let policy = rng.below(4);
    let policy = if abandoned { 0 } else { policy };
    let s0_wait = wait(rng);
    // Events s0's policy moved past without handling them.
    let routed = Arc::new(Mutex::new(BTreeSet::new()));
    let seen0 = Arc::new(Mutex::new(Seen::default()));
    let handled = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let handler = {
        let (progress, routed, seen0) = (progress.clone(), routed.clone(), seen0.clone());
        let (handled, failed, who) = (handled.clone(), failed.clone(), format!("{who}, s0"));
        move || {
            let (progress, routed, seen0) = (progress.clone(), routed.clone(), seen0.clone());
            let (handled, failed, who) = (handled.clone(), failed.clone(), who.clone());
            move |e: &E, seq: Sequence, _: bool| -> Result<(), String> {
                status("s0", format!("at {seq}"));
                if handled.load(Ordering::SeqCst) == fail_at && !failed.swap(true, Ordering::SeqCst)
                {
                    if matches!(policy, 1 | 2) {
                        // Skipped or dead-lettered: never offered again,
                        // and s0 is done with it.
                        routed.lock().unwrap().insert(e.get());
                        progress.fetch_max(seq as u64 + 1, Ordering::SeqCst);
                    }
                    if error {
                        return Err(format!("planned failure at {seq}"));
                    }
                    panic!("planned panic in an ipc stage at {seq}");
                }
                seen0.lock().unwrap().see(e.get(), &who);
                handled.fetch_add(1, Ordering::SeqCst);
                // Done with it: s1 may read it from now on.
                progress.fetch_max(seq as u64 + 1, Ordering::SeqCst);
                Ok(())
            }
        }
    };
    let policy_for = move || match policy {
        0 => FailurePolicy::halt(),
        1 => FailurePolicy::skip(),
        2 => FailurePolicy::dead_letter(|_: &str, _: &E, _: Sequence, _: &ringbus::Failure| {}),
        _ => FailurePolicy::halt().retry(1, Duration::ZERO),
    };
    let b0 = bus.clone().with_wait(s0_wait);
    let first = b0
        .stage("s0")
        .batch(1 + rng.below(16) as usize)
        .on_failure(policy_for())
        .try_spawn(handler())
        .unwrap();
    let s0 = {
        let who = format!("{who}, s0 supervisor");
        thread::spawn(move || {
            let mut stage = first;
            loop {
                let report = stage.join().unwrap_or_else(|e| panic!("{who}: {e}"));
                // A check that failed inside the handler is a failure the
                // policy routed: only the planned one may be there.
                let most = u64::from(policy != 3);
                assert!(report.failed <= most, "{who}: policy {policy}: {report:?}");
                match &report.failure {
                    None => break,
                    Some(failure) => {
                        assert!(failure.to_string().contains("planned"), "{who}: {failure}");
                        assert_eq!(policy, 0, "{who}: policy {policy} halted: {report:?}");
                        if abandoned {
                            status("s0", "failed: left for good".into());
                            break;
                        }
                        status("s0", "failed: starting it again".into());
                        // Resumes at the failed event.
                        stage = b0
                            .stage("s0")
                            .on_failure(policy_for())
                            .try_spawn(handler())
                            .unwrap_or_else(|e| panic!("{who}: restart: {e}"));
                    }
                }
            }
            let seen = std::mem::take(&mut *seen0.lock().unwrap());
            let routed = routed.lock().unwrap().clone();
            (seen, routed)
        })
    };
    let b1 = bus.clone().with_wait(wait(rng));
    // Not after an abandoned s0: started again once s0 is gone, s1 would
    // wait where it joined for an s0 that never comes (`consumer_after`).
    let halt_after = rng
        .chance(25)
        .then(|| Duration::from_micros(rng.below(3000)))
        .filter(|_| !abandoned);
    // A stage timeout on s1 (`on_timeout` checked by `TimeoutChecked`).
    let s1_timeout = rng
        .chance(50)
        .then(|| Duration::from_micros(200 + rng.below(3000)));
    let s1_read = Arc::new(AtomicU64::new(0));
    let s1 = {
        let who = format!("{who}, s1");
        let spawn = {
            let who = who.clone();
            let s1_read = s1_read.clone();
            move || {
                let (progress, mine_who) = (progress.clone(), who.clone());
                let (s1_read, bus) = (s1_read.clone(), b1.clone());
                let seen = Arc::new(Mutex::new(Seen::default()));
                let mine = seen.clone();
                let mut builder = b1.stage("s1").after(&["s0"]);
                if let Some(t) = s1_timeout {
                    builder = builder.timeout(t);
                }
                let stage = builder
                    .spawn(TimeoutChecked {
                        who: mine_who.clone(),
                        last: (None, None),
                        timeout: s1_timeout,
                        since: std::time::Instant::now(),
                        f: move |e: &E, seq: Sequence, _: bool| {
                            let up = progress.load(Ordering::SeqCst);
                            // Past an abandoned s0 only once its entry was
                            // reclaimed (s1 saw it go: the table says so now).
                            let reclaimed = || {
                                let m = bus.metrics();
                                !m.consumers.iter().any(|c| c.name == "s0")
                            };
                            assert!(
                                (seq as u64) < up || (abandoned && reclaimed()),
                                "{mine_who}: read {seq} before s0 ({up})"
                            );
                            mine.lock().unwrap().see(e.get(), &mine_who);
                            s1_read.fetch_add(1, Ordering::SeqCst);
                        },
                    })
                    .unwrap_or_else(|e| panic!("{who}: {e}"));
                (stage, seen)
            }
        };
        // Joined before anything is published, as s0 was.
        let first = spawn();
        thread::spawn(move || {
            let (stage, mut seen) = first;
            let mut halted = false;
            if let Some(after) = halt_after {
                // Halted from another thread, then started again: it left,
                // so it joins at the present (order is checked, not
                // completeness).
                let stage = Arc::new(stage);
                let halter = stage.clone();
                thread::spawn(move || {
                    thread::sleep(after);
                    halter.halt();
                })
                .join()
                .unwrap();
                let stage = Arc::try_unwrap(stage).unwrap();
                let report = stage.join().unwrap_or_else(|e| panic!("{who}: {e}"));
                assert!(report.failure.is_none(), "{who}: {report:?}");
                halted = true;
                let (again, fresh) = spawn();
                seen = fresh;
                let report = again.join().unwrap_or_else(|e| panic!("{who}: {e}"));
                assert!(report.failure.is_none(), "{who}: {report:?}");
            } else {
                let report = stage.join().unwrap_or_else(|e| panic!("{who}: {e}"));
                assert!(report.failure.is_none(), "{who}: {report:?}");
            }
            status("s1", "done".into());
            let seen = std::mem::take(&mut *seen.lock().unwrap());
            (seen, halted)
        })
    };
    Stages {
        s0,
        s1,
        abandoned,
        s1_halts: halt_after.is_some(),
        s1_read,
        s0_failed: failed,
    }
}

impl Stages {
    /// Waits until "s1" has read all `acked` events (the watchdog reports
    /// a hang), when it is not halted on purpose.
    fn drain(&self, acked: u64) {
        if self.s1_halts {
            return;
        }
        status("case", format!("waiting for s1 to read {acked} events"));
        while self.s1_read.load(Ordering::SeqCst) < acked {
            thread::sleep(Duration::from_micros(200));
        }
    }

    fn check(self, acked: &BTreeSet<(u64, u64)>, who: &str) {
        let (seen, routed) = self.s0.join().unwrap();
        let (seen1, halted) = self.s1.join().unwrap();
        if !halted {
            // s1 reads every event on the ring, s0's routed one too.
            let missing: Vec<_> = acked.difference(&seen1.all).take(5).collect();
            assert!(
                missing.is_empty(),
                "{who}: s1 lost acknowledged events {missing:?}"
            );
        }
        let extra: Vec<_> = seen1.all.difference(acked).take(5).collect();
        assert!(
            extra.is_empty(),
            "{who}: s1 saw events never acknowledged {extra:?}"
        );
        assert!(routed.len() <= 1, "{who}: s0 routed {routed:?}");
        let expected: BTreeSet<_> = acked.difference(&routed).copied().collect();
        let missing: Vec<_> = expected.difference(&seen.all).take(5).collect();
        // An abandoned s0 handled what came before its failure only.
        let abandoned = self.abandoned && self.s0_failed.load(Ordering::SeqCst);
        assert!(
            missing.is_empty() || abandoned,
            "{who}: s0 lost acknowledged events {missing:?}"
        );
        let extra: Vec<_> = seen.all.difference(&expected).take(5).collect();
        assert!(
            extra.is_empty(),
            "{who}: s0 saw events it should not have {extra:?}"
        );
    }
}
