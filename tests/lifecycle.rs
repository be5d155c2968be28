//! Randomized lifecycle test (issues #12 and #24): random topologies and
//! random mixes of every feature, composed, on rings small enough to lap
//! constantly. Every event carries its producer, its index and a checksum.
//!
//! What a case may compose: reader stages (per event or per batch, plain
//! or fallible), a mutating stage in any of the eight forms of
//! `handle_events_with`/`try_handle_events_with` (read or mutate, per event
//! or per batch, fallible or not, by value or `ringbus::factory`; the
//! fallible ones fail once with a wrong write and are retried, and every
//! write is an XOR so a double write shows), a second group that branches
//! off single first-group stages or the work pool (`after`; a stage after
//! the pool must never see an event a worker is still handling), publish
//! closures that panic
//! after writing (the single producer publishes nothing, the multi producer
//! the event), a work pool, a failing stage (a panic or
//! an `Err`), stages sharing a thread (`on_same_thread`, `on_thread_of`)
//! with events of 24, 256 or 1,024 bytes (so a shared step of 64 cuts
//! multi-producer batches), a journal stage under each sync policy (with
//! the journal then damaged at a random byte and reopened), 1-4 producers
//! with batches up to the ring's size, an async producer (`Blocking`),
//! pollers (plain, lag-limited, lazy ones that stop polling and must be
//! evicted, ones whose closure panics, async ones) and subscriptions
//! joining and leaving, halts on any handle, a shutdown on another
//! handle while producers publish, `shutdown`, `shutdown_timeout`, drop;
//! once a halt, a halting failure or a shutdown elsewhere has stopped the
//! bus, half the cases wait for the pollers to end by themselves before
//! the end.
//!
//! Checked after every case: no event read before it was written (checksum),
//! no gap or repeat at any stage or poller, per-producer order, exactly once
//! for pools, every acknowledged event to every stage and every poller that
//! stayed to the end when the bus closed cleanly, a panic in a poll gives
//! the same events again, `Lagged` only for an evicted lag-limited poller,
//! a fallible reader begins at most one call after a `halt()` returned,
//! the journal holds exactly what was acknowledged (clean) and its damage is
//! `Corrupt` or a torn tail as documented, and no hang (a watchdog turns one
//! into a failure naming the seed).
//!
//! Seeded and reproducible: `RINGBUS_LIFECYCLE_SEED=<n>` runs one case,
//! `RINGBUS_LIFECYCLE_CASES=<n>` changes how many run (default 3,000;
//! `ci/tsan.sh` runs 150; not run under Miri), and
//! `RINGBUS_LIFECYCLE_FIRST=<n>` the first seed (default 0), to explore
//! seeds CI does not run.

mod common;
#[cfg(all(feature = "ipc", unix, not(loom)))]
#[path = "lifecycle/ipc.rs"]
mod ipc;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{mix, value, Event, Verifier, PRODUCER_SHIFT};
use ringbus::{
    Batch, BatchEventHandler, BatchMut, Blocking, Builder, EventHandler, EventPoller,
    FailurePolicy, LagLimit, PhasedBackoff, PollError, PublishError, Sequence, Sequencer,
    ShutdownError, ShutdownReport, Sleeping, TryBatchEventHandler, TryEventHandler,
    TryPublishError, WaitStrategy, Yielding,
};

/// Panics in the current case that were not planned (a check failing in
/// a stage, a pool worker or a subscription thread, whose panic the bus
/// catches): the case fails on any.
static UNPLANNED_PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Most events a case publishes (all producers together).
const MAX_EVENTS: usize = 1_200;

/// The async producer's number (the others are 0..4).
#[cfg_attr(not(feature = "async"), allow(dead_code))]
const ASYNC_PRODUCER: u64 = 5;

/// A seeded SplitMix64 stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// An event of a case: the checked `Event`, padded to a size.
trait Ev: Default + Clone + Send + Sync + 'static {
    fn core(&self) -> &Event;
    fn core_mut(&mut self) -> &mut Event;
}

/// `Event` (24 bytes) padded with `N` words.
#[derive(Clone)]
struct Padded<const N: usize> {
    core: Event,
    _pad: [u64; N],
}

impl<const N: usize> Default for Padded<N> {
    fn default() -> Self {
        Self {
            core: Event::default(),
            _pad: [0; N],
        }
    }
}

impl<const N: usize> Ev for Padded<N> {
    fn core(&self) -> &Event {
        &self.core
    }
    fn core_mut(&mut self) -> &mut Event {
        &mut self.core
    }
}

/// The wait strategies of the cases; `Blocking` also serves async code.
trait Strategy: WaitStrategy + Copy {
    /// `poll_async` on a current-thread runtime, where the strategy allows.
    fn poll_async<E: Ev, S: Sequencer>(
        _poller: &mut EventPoller<E, S, Self>,
        _limit: usize,
        _f: &mut dyn FnMut(&E, Sequence, bool),
    ) -> Option<Result<usize, PollError>> {
        None
    }
    /// Reads `poller` as a `Stream` on a current-thread runtime until the
    /// bus closes or halts, it is evicted, or `leave` is set, checking
    /// each item; hands the poller back where the strategy cannot.
    #[allow(clippy::result_large_err)]
    fn stream<E: Ev, S: Sequencer>(
        poller: EventPoller<E, S, Self>,
        _capacity: u64,
        _limited: bool,
        _leave: &AtomicBool,
    ) -> Result<(), EventPoller<E, S, Self>> {
        Err(poller)
    }

    /// Publishes events `0..n` as the async producer, where it can.
    fn publish_async<E: Ev>(
        _producer: ringbus::MultiProducer<E, Self>,
        _n: u64,
        _seed: u64,
    ) -> Option<u64> {
        None
    }
}

impl Strategy for Yielding {}
impl Strategy for Sleeping {}
impl Strategy for PhasedBackoff {}

#[cfg_attr(not(feature = "async"), allow(dead_code))]
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

impl Strategy for Blocking {
    #[cfg(feature = "async")]
    fn stream<E: Ev, S: Sequencer>(
        poller: EventPoller<E, S, Self>,
        capacity: u64,
        limited: bool,
        leave: &AtomicBool,
    ) -> Result<(), EventPoller<E, S, Self>> {
        use tokio_stream::StreamExt;
        let runtime = current_thread();
        let mut stream = poller.into_stream(8, |e: &E| e.core().clone());
        let mut last_per_producer = [None::<u64>; 8];
        runtime.block_on(async {
            loop {
                if leave.load(Ordering::Relaxed) {
                    return;
                }
                match tokio::time::timeout(Duration::from_millis(2), stream.next()).await {
                    Err(_) => {}
                    Ok(None) => return, // closed: every event read
                    Ok(Some(Ok(e))) => {
                        e.verify();
                        let p = (e.value >> PRODUCER_SHIFT) as usize;
                        let i = e.value & ((1 << PRODUCER_SHIFT) - 1);
                        if let Some(last) = last_per_producer[p] {
                            assert_eq!(i, last + 1, "stream: producer {p}'s events out of order");
                        }
                        last_per_producer[p] = Some(i);
                    }
                    Ok(Some(Err(PollError::Lagged { behind }))) => {
                        assert!(
                            limited && behind > capacity,
                            "stream: Lagged {{ {behind} }}"
                        );
                        return;
                    }
                    Ok(Some(Err(_))) => return,
                }
            }
        });
        Ok(())
    }

    #[cfg(feature = "async")]
    fn poll_async<E: Ev, S: Sequencer>(
        poller: &mut EventPoller<E, S, Self>,
        limit: usize,
        f: &mut dyn FnMut(&E, Sequence, bool),
    ) -> Option<Result<usize, PollError>> {
        let runtime = current_thread();
        // Bounded: a poll that would wait for ever (nothing published yet)
        // times out; a timed-out `poll_async` handled nothing.
        Some(runtime.block_on(async {
            match tokio::time::timeout(Duration::from_millis(2), poller.poll_async(limit, f)).await
            {
                Ok(polled) => polled,
                Err(_) => Err(PollError::Timeout),
            }
        }))
    }

    #[cfg(feature = "async")]
    fn publish_async<E: Ev>(
        producer: ringbus::MultiProducer<E, Self>,
        n: u64,
        seed: u64,
    ) -> Option<u64> {
        let mut rng = Rng(seed);
        let runtime = current_thread();
        Some(runtime.block_on(async move {
            let mut i = 0;
            while i < n {
                let published = if rng.chance(50) {
                    producer
                        .publish_async(|e| e.core_mut().set(value(ASYNC_PRODUCER, i)))
                        .await
                        .map(|_| 1)
                } else {
                    let k = (1 + rng.below(4)).min(n - i);
                    let first = i;
                    producer
                        .batch_publish_async(k as usize, |slots| {
                            for (j, e) in slots.enumerate() {
                                e.core_mut().set(value(ASYNC_PRODUCER, first + j as u64));
                            }
                        })
                        .await
                        .map(|_| k)
                };
                match published {
                    Ok(k) => i += k,
                    // A small batch over a ring of 1 or 2: as planned.
                    Err(PublishError::BatchTooLarge { requested, .. }) if requested > 1 => {}
                    Err(_) => break,
                }
            }
            i
        }))
    }
}

/// What the stages and pollers of one case found.
#[derive(Default)]
struct Observed {
    /// Events each reader stage handled (by stage number).
    stage_counts: Mutex<Vec<(usize, u64)>>,
    /// Per sequence: how many pool workers handled it.
    pool_hits: Vec<AtomicU8>,
    /// Pollers that stayed to the end, and subscriptions unsubscribed after
    /// it: (first sequence after the join, one past the last sequence they
    /// saw).
    pollers_to_the_end: Mutex<Vec<(Sequence, Sequence)>>,
    /// Events the failing stage handed to its dead-letter sink.
    dead_letters: AtomicU64,
    /// Set once a `halt()` returned: a fallible reader (handled an event,
    /// or a range, at a time) is called at most once more.
    halted: AtomicBool,
}

/// How a reader stage takes its events.
#[derive(Debug, Clone, Copy)]
enum Kind {
    PerEvent,
    Fallible,
    Batches,
    FallibleBatches,
}

/// A reader stage: checks every event (the shared verifier) and records
/// its count when the bus shuts it down.
struct Reader {
    stage: usize,
    verifier: Verifier,
    observed: Arc<Observed>,
    /// It runs after the work pool: the worker that took an event is done
    /// with it before this stage sees it.
    after_pool: bool,
    /// Calls begun after `Observed::halted` was seen set.
    after_halt: u32,
}

impl Reader {
    fn new(stage: usize, observed: &Arc<Observed>, enriched: bool) -> Self {
        let verifier = Verifier::new(false).0;
        Reader {
            stage,
            verifier: if enriched {
                verifier.enriched()
            } else {
                verifier
            },
            observed: Arc::clone(observed),
            after_pool: false,
            after_halt: 0,
        }
    }

    /// A fallible handler's call: it handles events one call at a time (or
    /// a range per call), and the stage looks for a halt before each call,
    /// so one call at most begins after a `halt()` returned (one that
    /// checked just before it).
    fn call(&mut self) {
        // Acquire: set after `halt()` returned, whose store the stage's
        // check reads.
        if self.observed.halted.load(Ordering::Acquire) {
            self.after_halt += 1;
            assert!(
                self.after_halt <= 1,
                "stage {} called {} times after a halt returned",
                self.stage,
                self.after_halt
            );
        }
    }

    fn after_pool(mut self, after: bool) -> Self {
        self.after_pool = after;
        self
    }

    fn see(&mut self, e: &Event, s: Sequence, b: bool) {
        if self.after_pool {
            let hits = self.observed.pool_hits[s as usize].load(Ordering::Relaxed);
            assert_eq!(
                hits, 1,
                "stage {} after the pool saw event {s} handled by {hits} workers (0: before \
                 its worker was done with it)",
                self.stage
            );
        }
        self.verifier.on_event(e, s, b);
    }

    fn see_batch<E: Ev>(&mut self, batch: Batch<'_, E>) {
        assert!(!batch.is_empty(), "an empty batch");
        let last = batch.last_sequence();
        for (s, e) in batch.iter_with_sequence() {
            self.see(e.core(), s, s == last);
        }
    }

    fn record(&mut self) {
        let count = self.verifier.next_sequence as u64;
        self.observed
            .stage_counts
            .lock()
            .unwrap()
            .push((self.stage, count));
    }
}

impl Reader {
    /// A timeout comes with the last sequence handled.
    fn timed_out(&mut self, sequence: Sequence) {
        assert_eq!(
            sequence,
            self.verifier.next_sequence - 1,
            "on_timeout's sequence"
        );
    }
}

impl<E: Ev> EventHandler<E> for Reader {
    fn on_event(&mut self, e: &E, s: Sequence, b: bool) {
        self.see(e.core(), s, b);
    }
    fn on_shutdown(&mut self) {
        self.record();
    }
    fn on_timeout(&mut self, sequence: Sequence) {
        self.timed_out(sequence);
    }
}

impl<E: Ev> TryEventHandler<E> for Reader {
    type Error = String;
    fn on_event(&mut self, e: &E, s: Sequence, b: bool) -> Result<(), String> {
        self.call();
        self.see(e.core(), s, b);
        Ok(())
    }
    fn on_shutdown(&mut self) {
        self.record();
    }
}

/// A [`Reader`] that takes whole batches (a type implementing both the
/// per-event and the batch traits would be ambiguous to the builder).
struct Batches(Reader);

impl<E: Ev> BatchEventHandler<E> for Batches {
    fn on_batch(&mut self, batch: Batch<'_, E>) {
        self.0.see_batch(batch);
    }
    fn on_shutdown(&mut self) {
        self.0.record();
    }
    fn on_timeout(&mut self, sequence: Sequence) {
        self.0.timed_out(sequence);
    }
}

impl<E: Ev> TryBatchEventHandler<E> for Batches {
    type Error = String;
    fn on_batch(&mut self, batch: Batch<'_, E>) -> Result<(), (Sequence, String)> {
        self.0.call();
        self.0.see_batch(batch);
        Ok(())
    }
    fn on_shutdown(&mut self) {
        self.0.record();
    }
}

/// Checks what a poller (or a runtime subscription) sees: contiguous from
/// where it joined, untorn, each producer's events in order.
#[derive(Clone)]
struct PollCheck {
    next: Option<Sequence>,
    last_per_producer: [Option<u64>; 8],
}

impl PollCheck {
    fn new() -> Self {
        Self {
            next: None,
            last_per_producer: [None; 8],
        }
    }

    fn see(&mut self, e: &Event, seq: Sequence) {
        if let Some(next) = self.next {
            assert_eq!(seq, next, "poller: gap or repeat");
        }
        self.next = Some(seq + 1);
        e.verify();
        let p = (e.value >> PRODUCER_SHIFT) as usize;
        let i = e.value & ((1 << PRODUCER_SHIFT) - 1);
        if let Some(last) = self.last_per_producer[p] {
            assert_eq!(i, last + 1, "poller: producer {p}'s events out of order");
        }
        self.last_per_producer[p] = Some(i);
    }
}

/// The producer calls a case uses, on either kind of producer.
trait Prod<E: Ev>: Send {
    type Seq: Sequencer;
    type W: Strategy;
    /// A publish whose closure panicked still published the event (as the
    /// closure wrote it): the multi producer, whose claim others wait on.
    const PUBLISHES_ON_PANIC: bool;
    fn publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, PublishError>;
    fn try_publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, TryPublishError>;
    fn publish_timeout(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&mut E),
    ) -> Result<Sequence, TryPublishError>;
    fn try_batch(
        &mut self,
        n: usize,
        f: impl FnOnce(ringbus::BatchMut<'_, E>),
    ) -> Result<Sequence, TryPublishError>;
    fn batch(
        &mut self,
        n: usize,
        f: impl FnOnce(ringbus::BatchMut<'_, E>),
    ) -> Result<Sequence, PublishError>;
    fn subscribe(&self, limit: Option<LagLimit>) -> Option<EventPoller<E, Self::Seq, Self::W>>;
    fn subscribe_with(
        &self,
        handler: SubscriptionCheck,
    ) -> Option<ringbus::Subscription<SubscriptionCheck>>;
    fn halt(&self);
    fn shutdown(self, timeout: Option<Duration>) -> Result<ShutdownReport, ShutdownError>;
    fn capacity(&self) -> usize;
    /// Another handle on the bus, for a producer that has them (multi).
    fn another(&self) -> Option<Self>
    where
        Self: Sized;
}

macro_rules! prod {
    ($ty:ident, $seq:ty, $another:expr, $publishes_on_panic:literal) => {
        impl<E: Ev, W: Strategy> Prod<E> for ringbus::$ty<E, W> {
            type Seq = $seq;
            type W = W;
            const PUBLISHES_ON_PANIC: bool = $publishes_on_panic;
            fn publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, PublishError> {
                ringbus::$ty::publish(self, f)
            }
            fn try_publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, TryPublishError> {
                ringbus::$ty::try_publish(self, f)
            }
            fn publish_timeout(
                &mut self,
                timeout: Duration,
                f: impl FnOnce(&mut E),
            ) -> Result<Sequence, TryPublishError> {
                ringbus::$ty::publish_timeout(self, timeout, f)
            }
            fn try_batch(
                &mut self,
                n: usize,
                f: impl FnOnce(ringbus::BatchMut<'_, E>),
            ) -> Result<Sequence, TryPublishError> {
                self.try_batch_publish(n, f)
            }
            fn batch(
                &mut self,
                n: usize,
                f: impl FnOnce(ringbus::BatchMut<'_, E>),
            ) -> Result<Sequence, PublishError> {
                self.batch_publish(n, f)
            }
            fn subscribe(&self, limit: Option<LagLimit>) -> Option<EventPoller<E, $seq, W>> {
                match limit {
                    None => ringbus::$ty::subscribe(self).ok(),
                    Some(limit) => self.subscribe_lag_limited(limit).ok(),
                }
            }
            fn subscribe_with(
                &self,
                handler: SubscriptionCheck,
            ) -> Option<ringbus::Subscription<SubscriptionCheck>> {
                ringbus::$ty::subscribe_with(self, handler).ok()
            }
            fn halt(&self) {
                ringbus::$ty::halt(self)
            }
            fn shutdown(self, timeout: Option<Duration>) -> Result<ShutdownReport, ShutdownError> {
                match timeout {
                    None => ringbus::$ty::shutdown(self),
                    Some(t) => self.shutdown_timeout(t),
                }
            }
            fn capacity(&self) -> usize {
                self.metrics().snapshot().capacity
            }
            fn another(&self) -> Option<Self> {
                let another: fn(&Self) -> Option<Self> = $another;
                another(self)
            }
        }
    };
}
prod!(
    SingleProducer,
    ringbus::SingleProducerSequencer,
    |_p| None,
    false
);
prod!(
    MultiProducer,
    ringbus::MultiProducerSequencer,
    |p: &Self| Some(p.clone()),
    true
);

/// A runtime subscription's handler (`subscribe_with`): checks what it sees.
/// With `.1`, a slow one (a nap every eighth event), so that it is behind
/// when the case ends and a stop finds a batch in hand.
struct SubscriptionCheck(PollCheck, bool);

impl<E: Ev> EventHandler<E> for SubscriptionCheck {
    fn on_event(&mut self, e: &E, s: Sequence, _b: bool) {
        self.0.see(e.core(), s);
        if self.1 && s % 8 == 0 {
            thread::sleep(Duration::from_micros(20));
        }
    }
}

/// A subscription whose handler shuts the bus down (on a clone it holds)
/// at the first event at or past `at`, while producers may wait for room
/// this very subscription holds: the call must answer `OnStageThread` at
/// once (it cannot wait for them). What it answered goes to `answer` (a
/// panic here would end only the subscription's thread).
struct ShutsDown {
    check: PollCheck,
    at: Sequence,
    closer: Option<Box<dyn FnOnce() -> Result<ShutdownReport, ShutdownError> + Send>>,
    answer: Arc<Mutex<Option<String>>>,
}

impl<E: Ev> EventHandler<E> for ShutsDown {
    fn on_event(&mut self, e: &E, s: Sequence, _b: bool) {
        self.check.see(e.core(), s);
        if s >= self.at {
            if let Some(shutdown) = self.closer.take() {
                let answer = format!("{:?}", shutdown().err());
                *self.answer.lock().unwrap() = Some(answer);
            }
        }
    }
}

/// The random topology of a case.
#[derive(Debug)]
struct Topology {
    capacity: usize,
    /// Reader stages in the first group (with how each reads), and in a
    /// second group after it.
    first: Vec<Kind>,
    second: Vec<Kind>,
    /// A work pool of this many workers in the first group (0: none).
    pool: usize,
    /// A mutating stage before everything (pollers may not join then), in
    /// one of eight forms: bit 0 fallible (an `Err` once at some events,
    /// retried), bit 1 whole batches (`BatchMut`), bit 2 made by a factory.
    mutating: Option<u8>,
    /// A stage that fails at this sequence, in the first group.
    fails_at: Option<Sequence>,
    /// How it fails: 0 a panic, 1 an `Err`, 2 a batch handler's `Err`, 3 a
    /// batch handler's panic.
    fails_how: u8,
    /// The failing stage's policy: 0 halt, 1 skip, 2 dead-letter, 3 two
    /// retries then skip, 4 a retry then halt.
    fails_policy: u8,
    /// Runtime subscribers are allowed.
    pollers: bool,
    /// The stages share threads: each group's stages run on the thread of
    /// the first group's first stage (pool workers excepted).
    shared: bool,
    /// A journal stage before everything, with this sync policy.
    #[cfg(feature = "journal")]
    journal: Option<ringbus::journal::SyncPolicy>,
    /// The second group branches (`after`): each of its stages after one
    /// stage of the first group (or its pool), not after the whole group.
    branches: bool,
    /// Which of the first group's stages (or its pool) the branches start at.
    branch_pick: usize,
    /// Some publish closures panic after writing their event (the single
    /// producer then publishes nothing, the multi producer the event).
    panicky: bool,
}

fn kind(rng: &mut Rng) -> Kind {
    [
        Kind::PerEvent,
        Kind::Fallible,
        Kind::Batches,
        Kind::FallibleBatches,
    ][rng.below(4) as usize]
}

impl Topology {
    /// True when the planned failure stops the bus (a halt policy).
    fn failure_halts(&self) -> bool {
        matches!(self.fails_policy, 0 | 4)
    }

    /// True when the planned failure stops the bus once `acknowledged`
    /// events are published (its event is among them).
    fn halted_by_failure(&self, acknowledged: u64) -> bool {
        self.failure_halts()
            && self
                .fails_at
                .is_some_and(|at| at < acknowledged as Sequence)
    }

    fn random(rng: &mut Rng, big_events: bool) -> Self {
        let mutating = rng.chance(15).then(|| rng.below(8) as u8);
        let first = (0..rng.below(3)).map(|_| kind(rng)).collect();
        let second = (0..rng.below(2)).map(|_| kind(rng)).collect();
        Self {
            // Tiny rings that lap, or rings of 64-256 where a shared step
            // (64 events of 256 bytes and more) cuts a batch.
            // (Events of 256 bytes and more: rings of 128-512 half the
            // time, where a step of 64 cuts batches.)
            capacity: if rng.chance(if big_events { 50 } else { 15 }) {
                1 << (7 + rng.below(3))
            } else {
                1 << rng.below(5)
            },
            first,
            second,
            pool: if rng.chance(40) {
                2 + rng.below(2) as usize
            } else {
                0
            },
            mutating,
            fails_at: rng
                .chance(10)
                .then(|| rng.below(MAX_EVENTS as u64) as Sequence),
            fails_how: rng.below(4) as u8,
            fails_policy: rng.below(5) as u8,
            pollers: mutating.is_none(),
            shared: rng.chance(50),
            #[cfg(feature = "journal")]
            journal: (mutating.is_none() && rng.chance(15)).then(|| {
                use ringbus::journal::SyncPolicy;
                [
                    SyncPolicy::EveryBatch,
                    SyncPolicy::Interval(Duration::from_millis(1 + rng.below(5))),
                    SyncPolicy::Never,
                ][rng.below(3) as usize]
            }),
            // Drawn by the caller from a stream of their own, so the draws
            // above (and the seeds that found earlier bugs) stay as they were.
            branches: false,
            branch_pick: 0,
            panicky: false,
        }
    }

    /// Adds a reader stage of `kind` (every third with a timeout of 1 ms,
    /// whose `on_timeout` checks its sequence).
    fn reader<E: Ev, S: Sequencer, W: Strategy>(
        b: Builder<E, S, W>,
        kind: Kind,
        reader: Reader,
    ) -> Builder<E, S, W> {
        let b = if reader.stage % 3 == 1 {
            b.timeout(Duration::from_millis(1))
        } else {
            b
        };
        match kind {
            Kind::PerEvent => b.handle_events_with(reader),
            Kind::Fallible => b.try_handle_events_with(reader),
            Kind::Batches => b.handle_events_with(Batches(reader)),
            Kind::FallibleBatches => b.try_handle_events_with(Batches(reader)),
        }
    }

    /// Adds the mutating stage in `form` (see `Topology::mutating`). A
    /// fallible form fails once at every event whose sequence is 13 mod 97
    /// and is retried, so a retried event (and a retried batch starting at
    /// it) is handed over again after a partial write.
    fn mutator<E: Ev, S: Sequencer, W: Strategy>(
        b: Builder<E, S, W>,
        form: u8,
    ) -> Builder<E, S, W> {
        /// An XOR, so that writing an event twice undoes the first write
        /// (the readers' check of `enriched` then fails); a failed call's
        /// write (`u64::MAX`) is cleared first, as a retried handler must.
        fn enrich<E: Ev>(e: &mut E) {
            let e = e.core_mut();
            e.verify();
            if e.enriched == u64::MAX {
                e.enriched = 0;
            }
            e.enriched ^= mix(e.value) ^ 1;
        }
        let fails = |seq: Sequence, last: &mut Sequence| {
            let fail = seq % 97 == 13 && *last != seq;
            if fail {
                *last = seq;
            }
            fail
        };
        let fallible = form & 1 == 1;
        let batches = form & 2 == 2;
        let made = form & 4 == 4;
        let b = b.thread_name("mutator");
        let b = if fallible {
            b.on_failure(FailurePolicy::halt().retry(2, Duration::ZERO))
        } else {
            b
        };
        match (fallible, batches, made) {
            (false, false, false) => {
                b.handle_events_with(|e: &mut E, _: Sequence, _: bool| enrich(e))
            }
            (false, false, true) => b.handle_events_with(ringbus::factory(|| {
                |e: &mut E, _: Sequence, _: bool| enrich(e)
            })),
            (false, true, false) => {
                b.handle_events_with(|batch: BatchMut<'_, E>| batch.for_each(enrich))
            }
            (false, true, true) => b.handle_events_with(ringbus::factory(|| {
                |batch: BatchMut<'_, E>| batch.for_each(enrich)
            })),
            (true, false, made) => {
                let make = move || {
                    let mut last = -1;
                    move |e: &mut E, seq: Sequence, _: bool| {
                        if fails(seq, &mut last) {
                            // A wrong write the retry must redo: an event
                            // skipped instead of retried shows it.
                            e.core_mut().enriched = u64::MAX;
                            return Err("transient");
                        }
                        enrich(e);
                        Ok(())
                    }
                };
                if made {
                    b.try_handle_events_with(ringbus::factory(make))
                } else {
                    b.try_handle_events_with(make())
                }
            }
            (true, true, made) => {
                let make = move || {
                    let mut last = -1;
                    move |mut batch: BatchMut<'_, E>| loop {
                        let seq = batch.next_sequence();
                        let Some(e) = batch.next() else {
                            return Ok(());
                        };
                        if fails(seq, &mut last) {
                            e.core_mut().enriched = u64::MAX;
                            return Err((seq, "transient"));
                        }
                        enrich(e);
                    }
                };
                if made {
                    b.try_handle_events_with(ringbus::factory(make))
                } else {
                    b.try_handle_events_with(make())
                }
            }
        }
    }

    fn build<E: Ev, S: Sequencer, W: Strategy>(
        &self,
        builder: Builder<E, S, W>,
        observed: &Arc<Observed>,
        #[cfg(feature = "journal")] journal: Option<&ringbus::journal::Journal>,
    ) -> Builder<E, S, W> {
        let mut b = builder;
        // The thread the stages share, once there is a first stage.
        let mut host = None;
        #[cfg(feature = "journal")]
        if let (Some(journal), Some(sync)) = (journal, self.journal) {
            let options = ringbus::journal::JournalOptions::default().sync(sync);
            b = b.journal_to(journal.writer(EvCodec, options).unwrap());
            host = b.last_stage();
            b = b.and_then();
        }
        if let Some(form) = self.mutating {
            b = Self::mutator(b, form);
            host = b.last_stage();
            b = b.and_then();
        }
        let share = |b: Builder<E, S, W>, host: Option<ringbus::StageId>| match host {
            Some(stage) if self.shared => b.on_thread_of(stage),
            _ => b,
        };
        let mut first_ids = Vec::new();
        for (stage, &kind) in self.first.iter().enumerate() {
            b = share(b, host);
            b = Self::reader(
                b,
                kind,
                Reader::new(stage, observed, self.mutating.is_some()),
            );
            first_ids.extend(b.last_stage());
            host = host.or(b.last_stage());
        }
        if self.pool > 0 {
            let observed = Arc::clone(observed);
            b = b.handle_events_with_pool(self.pool, move |_i| {
                let observed = Arc::clone(&observed);
                move |e: &E, seq: Sequence, _eob: bool| {
                    e.core().verify();
                    let hits = observed.pool_hits[seq as usize].fetch_add(1, Ordering::Relaxed);
                    assert_eq!(hits, 0, "pool: event {seq} handled twice");
                }
            });
            // The pool's id, for a branch after it: it stands for every
            // worker (`after` waits for them all).
            first_ids.extend(b.last_stage());
        }
        if let Some(at) = self.fails_at {
            let letters = Arc::clone(observed);
            let policy = match self.fails_policy {
                0 => ringbus::FailurePolicy::halt(),
                1 => ringbus::FailurePolicy::skip(),
                2 => ringbus::FailurePolicy::dead_letter(move |stage, e: &E, seq, _failure| {
                    assert_eq!((stage, seq), ("fails", at), "a dead letter");
                    e.core().verify();
                    letters.dead_letters.fetch_add(1, Ordering::Relaxed);
                }),
                3 => ringbus::FailurePolicy::skip().retry(2, Duration::ZERO),
                _ => ringbus::FailurePolicy::halt().retry(1, Duration::ZERO),
            };
            b = share(b, host).thread_name("fails").on_failure(policy);
            b = match self.fails_how {
                0 => b.handle_events_with(move |_e: &E, seq: Sequence, _eob: bool| {
                    assert!(seq != at, "planned failure at {at}");
                }),
                1 => b.try_handle_events_with(move |_e: &E, seq: Sequence, _eob: bool| {
                    if seq == at {
                        Err(format!("planned failure at {at}"))
                    } else {
                        Ok(())
                    }
                }),
                2 => b.try_handle_events_with(move |batch: Batch<'_, E>| {
                    let range = batch.first_sequence()..=batch.last_sequence();
                    if range.contains(&at) {
                        Err((at, format!("planned failure at {at}")))
                    } else {
                        Ok(())
                    }
                }),
                _ => b.handle_events_with(move |batch: Batch<'_, E>| {
                    let range = batch.first_sequence()..=batch.last_sequence();
                    assert!(!range.contains(&at), "planned failure at {at}");
                }),
            };
            host = host.or(b.last_stage());
        }
        if !self.second.is_empty() {
            let branches = self.branches && !first_ids.is_empty();
            if !branches {
                b = b.and_then();
            }
            for (stage, &kind) in self.second.iter().enumerate() {
                // After the whole first group, or a branch off one of its
                // readers or its pool (the others and the failing stage
                // stay leaves).
                let after_pool = if branches {
                    let upstream = first_ids[(stage + self.branch_pick) % first_ids.len()];
                    b = b.after(&[upstream]);
                    self.pool > 0 && Some(upstream) == first_ids.last().copied()
                } else {
                    self.pool > 0
                };
                b = share(b, host);
                b = Self::reader(
                    b,
                    kind,
                    Reader::new(100 + stage, observed, self.mutating.is_some())
                        .after_pool(after_pool),
                );
                host = host.or(b.last_stage());
            }
        }
        if self.first.len() + self.second.len() + self.pool == 0
            && self.fails_at.is_none()
            && !self.pollers
        {
            // A bus with only a mutating stage: still checks the events.
            b = b.handle_events_with(Reader::new(200, observed, true));
        }
        b
    }
}

/// The journal's codec for a case's events: value and check.
#[cfg(feature = "journal")]
struct EvCodec;

#[cfg(feature = "journal")]
impl<E: Ev> ringbus::journal::Codec<E> for EvCodec {
    fn encode(&mut self, e: &E, out: &mut Vec<u8>) -> Result<(), ringbus::BoxError> {
        out.extend_from_slice(&e.core().value.to_le_bytes());
        out.extend_from_slice(&e.core().check.to_le_bytes());
        Ok(())
    }
    fn decode(&mut self, bytes: &[u8]) -> Result<E, ringbus::BoxError> {
        let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
        let mut e = E::default();
        e.core_mut().value = word(0);
        e.core_mut().check = word(1);
        Ok(e)
    }
}

/// How a poller behaves.
#[derive(Debug, Clone, Copy)]
struct PollerKind {
    lag: Option<LagLimit>,
    /// Stops polling after this many polls (lag-limited ones only: a lazy
    /// poller without a limit would hold the producers for ever).
    lazy_after: Option<u32>,
    /// Its closure panics now and then.
    panics: bool,
    /// Polls with `poll_async` now and then (where the strategy allows).
    awaits: bool,
    /// Reads as an async `Stream` (`into_stream`), where the strategy
    /// allows (not lazy).
    streams: bool,
}

impl PollerKind {
    fn random(rng: &mut Rng) -> Self {
        let lag = rng.chance(40).then(|| {
            if rng.chance(40) {
                LagLimit::never_hold()
            } else {
                LagLimit::hold_at_most(Duration::from_millis(1 + rng.below(30)))
            }
        });
        Self {
            lag,
            lazy_after: (lag.is_some() && rng.chance(50)).then(|| rng.below(4) as u32),
            panics: rng.chance(30),
            awaits: rng.chance(40),
            streams: rng.chance(25),
        }
    }
}

/// A poller on its own thread, polling with random limits until the bus
/// closes, it is told to leave, the bus halts, or it is evicted.
struct PollerThread {
    leave: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

fn spawn_poller<E: Ev, S: Sequencer, W: Strategy>(
    mut poller: EventPoller<E, S, W>,
    capacity: u64,
    kind: PollerKind,
    seed: u64,
    observed: &Arc<Observed>,
) -> PollerThread {
    let leave = Arc::new(AtomicBool::new(false));
    let leaving = Arc::clone(&leave);
    let observed = Arc::clone(observed);
    let thread = thread::spawn(move || {
        if kind.streams && kind.lazy_after.is_none() {
            let limited = kind.lag.is_some();
            match W::stream(poller, capacity, limited, &leaving) {
                Ok(()) => return,
                Err(back) => poller = back,
            }
        }
        let mut rng = Rng(seed);
        let joined = poller.sequence() + 1;
        let mut check = PollCheck::new();
        let mut polls = 0u32;
        loop {
            let leave = leaving.load(Ordering::Relaxed);
            if leave && kind.lazy_after.is_none() {
                return; // dropping the poller unsubscribes it
            }
            if leave {
                // A lazy one, at the end: it was evicted (or the bus closed
                // or halted); what it reads until then is intact and
                // contiguous.
                loop {
                    match poller.poll(64, |e, s, _| check.see(e.core(), s)) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(PollError::Lagged { behind }) => {
                            assert!(behind > capacity, "Lagged {{ behind: {behind} }}");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            }
            if kind.lazy_after.is_some_and(|after| polls >= after) {
                // Holds the producers until evicted (or told to leave).
                thread::sleep(Duration::from_millis(1));
                continue;
            }
            polls += 1;
            let limit = 1 + rng.below(8) as usize;
            // A panic at the `panic_at`-th event of this poll: nothing of
            // the poll is committed, the same events come again.
            let panic_at = (kind.panics && rng.chance(15)).then(|| rng.below(limit as u64));
            let before = check.clone();
            let mut seen = 0u64;
            let mut see = |e: &E, s: Sequence, _: bool| {
                if panic_at == Some(seen) {
                    panic!("planned panic in a poll");
                }
                seen += 1;
                check.see(e.core(), s);
            };
            let polled = catch_unwind(AssertUnwindSafe(|| {
                let awaited = if kind.awaits && rng.chance(50) {
                    W::poll_async(&mut poller, limit, &mut see)
                } else {
                    None
                };
                match awaited {
                    Some(polled) => polled,
                    None if rng.chance(50) => {
                        poller.poll_timeout(Duration::from_millis(2), limit, &mut see)
                    }
                    None => {
                        let polled = poller.poll(limit, &mut see);
                        if polled == Ok(0) {
                            thread::yield_now();
                        }
                        polled
                    }
                }
            }));
            let polled = match polled {
                Ok(polled) => polled,
                Err(_) => {
                    check = before;
                    continue;
                }
            };
            match polled {
                Ok(_) | Err(PollError::Timeout) => {}
                Err(PollError::Closed) => {
                    let end = check.next.unwrap_or(joined);
                    observed
                        .pollers_to_the_end
                        .lock()
                        .unwrap()
                        .push((joined, end));
                    return;
                }
                Err(PollError::Halted) => return,
                Err(PollError::Lagged { behind }) => {
                    assert!(kind.lag.is_some(), "Lagged without a lag limit");
                    // Evicted only once more than a ring behind (a
                    // `behind` of 0 said one never evicted).
                    assert!(
                        behind > capacity,
                        "Lagged {{ behind: {behind} }}: not evicted"
                    );
                    return;
                }
                Err(e) => panic!("{e}"),
            }
        }
    });
    PollerThread { leave, thread }
}

/// How a case ends.
#[derive(Debug, Clone, Copy)]
enum End {
    Shutdown,
    ShutdownTimeout,
    Drop,
    /// The last handle dropped on a thread of its own.
    DropElsewhere,
}

/// What the producing side reports: events acknowledged, and whether the
/// bus was halted or refused (a failure) along the way.
struct Produced {
    acknowledged: u64,
    refused: bool,
}

/// Publishes events `from..from + budget` as producer `k` with random
/// calls (batches up to the ring's size, or small ones of up to 4, which
/// a ring of 1 or 2 refuses as `BatchTooLarge`); stops early when refused or
/// closed (by a shutdown on another handle).
fn produce<E: Ev, P: Prod<E>>(
    p: &mut P,
    k: u64,
    from: u64,
    budget: u64,
    rng: &mut Rng,
    panicky: bool,
) -> Produced {
    let budget = from + budget;
    let capacity = p.capacity() as u64;
    let mut i = from;
    let refused = std::cell::Cell::new(false);
    let closed = std::cell::Cell::new(false);
    let failed = |e: PublishError| match e {
        PublishError::Closed => closed.set(true),
        _ => {
            if std::env::var("RINGBUS_LIFECYCLE_SEED").is_ok() {
                eprintln!("producer {k} refused: {e:?}");
            }
            refused.set(true)
        }
    };
    while i < budget && !refused.get() && !closed.get() {
        match rng.below(7) {
            5 => {
                let timeout = Duration::from_micros(rng.below(2_000));
                match p.publish_timeout(timeout, |e| e.core_mut().set(value(k, i))) {
                    Ok(_) => i += 1,
                    Err(TryPublishError::Full { .. } | TryPublishError::Timeout) => {}
                    Err(TryPublishError::Closed) => failed(PublishError::Closed),
                    Err(_) => failed(PublishError::Halted),
                }
            }
            6 => {
                let n = (1 + rng.below(capacity)).min(budget - i) as usize;
                let first = i;
                let tried = p.try_batch(n, |slots| {
                    for (j, e) in slots.enumerate() {
                        e.core_mut().set(value(k, first + j as u64));
                    }
                });
                match tried {
                    Ok(_) => i += n as u64,
                    Err(TryPublishError::Full { .. }) => thread::yield_now(),
                    Err(TryPublishError::Closed) => failed(PublishError::Closed),
                    Err(_) => failed(PublishError::Halted),
                }
            }
            0 | 1 if panicky && rng.below(50) == 0 => {
                let v = value(k, i);
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    p.publish(|e| {
                        e.core_mut().set(v);
                        panic!("planned panic in a publish closure");
                    })
                }));
                match outcome {
                    // The closure ran and panicked after writing the event.
                    Err(_) if P::PUBLISHES_ON_PANIC => i += 1,
                    Err(_) => {}
                    Ok(Err(e)) => failed(e),
                    Ok(Ok(_)) => unreachable!("the closure panics"),
                }
            }
            0 | 1 => match p.publish(|e| e.core_mut().set(value(k, i))) {
                Ok(_) => i += 1,
                Err(e) => failed(e),
            },
            2 => match p.try_publish(|e| e.core_mut().set(value(k, i))) {
                Ok(_) => i += 1,
                Err(TryPublishError::Full { .. }) => thread::yield_now(),
                Err(TryPublishError::Closed) => failed(PublishError::Closed),
                Err(_) => failed(PublishError::Halted),
            },
            r => {
                // Small batches, or up to the whole ring.
                let most = if r == 3 { 4 } else { capacity };
                let n = (1 + rng.below(most)).min(budget - i) as usize;
                let first = i;
                let batch = p.batch(n, |slots| {
                    for (j, e) in slots.enumerate() {
                        e.core_mut().set(value(k, first + j as u64));
                    }
                });
                match batch {
                    Ok(_) => i += n as u64,
                    // A small batch of up to 4 on a ring of 1 or 2.
                    Err(PublishError::BatchTooLarge {
                        requested,
                        capacity: c,
                    }) => assert!(
                        requested == n && requested > c && c as u64 == capacity,
                        "BatchTooLarge {{ requested: {requested}, capacity: {c} }} for {n} \
                         on a ring of {capacity}"
                    ),
                    Err(e) => failed(e),
                }
            }
        }
    }
    Produced {
        acknowledged: i - from,
        refused: refused.get(),
    }
}

/// Runs one case of the given strategy; panics (naming nothing: the caller
/// adds the seed) when a check fails.
fn run_case<E: Ev, W: Strategy>(seed: u64, strategy: W) {
    let mut rng = Rng(seed);
    let mut topology = Topology::random(&mut rng, std::mem::size_of::<E>() >= 256);
    {
        let mut extra = Rng(mix(seed ^ 0x5DEE_CE66_D1CE_4E5B));
        topology.branches = extra.chance(30);
        topology.panicky = extra.chance(20);
        // Uniform over 1, 2 or 3 first-group ids; drawn last, so the draws
        // before it stay those of earlier seeds.
        topology.branch_pick = extra.below(6) as usize;
    }
    let observed = Arc::new(Observed {
        pool_hits: (0..MAX_EVENTS).map(|_| AtomicU8::new(0)).collect(),
        ..Observed::default()
    });
    let multi = rng.chance(70);
    let end = [
        End::Shutdown,
        End::ShutdownTimeout,
        End::Drop,
        End::DropElsewhere,
    ][rng.below(4) as usize];
    let halts = rng.chance(10);
    // Multi: another handle halts, or shuts the bus down while others
    // still publish.
    let other_halts = multi && halts && rng.chance(50);
    let other_shuts_down = multi && rng.chance(8);
    let async_producer = multi && rng.chance(30);
    if std::env::var("RINGBUS_LIFECYCLE_SEED").is_ok() {
        eprintln!(
            "seed {seed}: {topology:?}, {} bytes, multi {multi}, end {end:?}, halts {halts} \
             (other {other_halts}), other shuts down {other_shuts_down}, async {async_producer}",
            std::mem::size_of::<E>()
        );
    }
    #[cfg(feature = "journal")]
    let journal_dir = topology.journal.map(|_| tempfile::tempdir().unwrap());
    #[cfg(feature = "journal")]
    let journal = journal_dir
        .as_ref()
        .map(|dir| ringbus::journal::Journal::open(dir.path()).unwrap());
    macro_rules! build {
        ($b:expr) => {
            topology.build(
                $b,
                &observed,
                #[cfg(feature = "journal")]
                journal.as_ref(),
            )
        };
    }
    let (acknowledged, refused, outcome) = if multi {
        let producers = 1 + rng.below(4);
        let builder = ringbus::multi_producer(topology.capacity, E::default, strategy);
        let p = build!(builder).build();
        let budget = MAX_EVENTS as u64 / (producers + u64::from(async_producer));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicBool::new(false));
        let own = std::cell::Cell::new(0);
        // Now and then a subscription shuts the bus down from its handler
        // (its own stream, so the other seeds' cases stay as they were).
        let mut sub_rng = Rng(mix(seed ^ 0x5B5C_F00D_0000_0001));
        let answer = Arc::new(Mutex::new(None::<String>));
        let shutting = sub_rng
            .chance(10)
            .then(|| {
                let closer = p.clone();
                p.subscribe_with(ShutsDown {
                    check: PollCheck::new(),
                    at: sub_rng.below(64) as Sequence,
                    closer: Some(Box::new(move || closer.shutdown())),
                    answer: Arc::clone(&answer),
                })
                .ok()
            })
            .flatten();
        if std::env::var("RINGBUS_LIFECYCLE_SEED").is_ok() {
            eprintln!("a subscription shuts down: {}", shutting.is_some());
        }
        let mut threads: Vec<_> = (1..producers)
            .map(|k| {
                let mut p = p.clone();
                let (acknowledged, refused) = (Arc::clone(&acknowledged), Arc::clone(&refused));
                let observed = Arc::clone(&observed);
                let mut rng = Rng(seed ^ (k << 32));
                let (halt, shut_down) = (other_halts && k == 1, other_shuts_down && k == 1);
                let panicky = topology.panicky;
                thread::spawn(move || {
                    let produced = produce(&mut p, k, 0, budget, &mut rng, panicky);
                    acknowledged.fetch_add(produced.acknowledged, Ordering::Relaxed);
                    refused.fetch_or(produced.refused, Ordering::Relaxed);
                    if halt {
                        p.halt();
                        // Release: after the halt (`Reader::call`).
                        observed.halted.store(true, Ordering::Release);
                        refused.store(true, Ordering::Relaxed);
                    }
                    if shut_down {
                        // The others may still publish: they get `Closed`.
                        // A timeout halts the bus: the case is not clean.
                        let timeout = Duration::from_millis(1 + rng.below(100));
                        if p.shutdown_timeout(timeout).is_err() {
                            refused.store(true, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        if async_producer {
            let p = p.clone();
            let acknowledged = Arc::clone(&acknowledged);
            let seed = seed ^ 0xA5;
            threads.push(thread::spawn(move || {
                if let Some(n) = W::publish_async(p, budget, seed) {
                    acknowledged.fetch_add(n, Ordering::Relaxed);
                }
            }));
        }
        let outcome = control(
            p,
            &topology,
            halts && !other_halts,
            end,
            &mut rng,
            &observed,
            |p, rng| {
                let from = own.get();
                let produced = produce(p, 0, from, budget / 4, rng, topology.panicky);
                own.set(from + produced.acknowledged);
                acknowledged.fetch_add(produced.acknowledged, Ordering::Relaxed);
                refused.fetch_or(produced.refused, Ordering::Relaxed);
            },
            || {
                for t in threads {
                    join(t);
                }
                // Its handler given back: it had seen no gap (a failed
                // check panics its thread: `None`). Unless it shut the bus
                // down, it stops without draining.
                if let Some(s) = shutting {
                    assert!(s.unsubscribe().is_some(), "a subscription's check failed");
                }
                if let Some(answer) = answer.lock().unwrap().as_deref() {
                    assert_eq!(
                        answer, "Some(OnStageThread)",
                        "shutdown in a subscription's handler"
                    );
                }
            },
            || {
                refused.load(Ordering::Relaxed)
                    || answer.lock().unwrap().is_some()
                    || (other_shuts_down && producers > 1)
                    || topology.halted_by_failure(acknowledged.load(Ordering::Relaxed))
            },
        );
        (
            acknowledged.load(Ordering::Relaxed),
            refused.load(Ordering::Relaxed),
            outcome,
        )
    } else {
        let builder = ringbus::single_producer(topology.capacity, E::default, strategy);
        let p = build!(builder).build();
        let acknowledged = std::cell::Cell::new(0);
        let refused = std::cell::Cell::new(false);
        let outcome = control(
            p,
            &topology,
            halts,
            end,
            &mut rng,
            &observed,
            |p, rng| {
                let produced = produce(
                    p,
                    0,
                    acknowledged.get(),
                    MAX_EVENTS as u64 / 4,
                    rng,
                    topology.panicky,
                );
                acknowledged.set(acknowledged.get() + produced.acknowledged);
                refused.set(refused.get() | produced.refused);
            },
            || {},
            || refused.get() || topology.halted_by_failure(acknowledged.get()),
        );
        (acknowledged.get(), refused.get(), outcome)
    };
    let clean = match &outcome {
        // A drop reports nothing: a planned failure at an event that was
        // published happened all the same.
        Ok(_) => !halts && !refused && !topology.halted_by_failure(acknowledged),
        Err(ShutdownError::StageFailed(report)) => {
            for stage in &report.stages {
                if let Some(failure) = &stage.failure {
                    // The mutating stage's planned transient error, when a
                    // halt came while it waited to retry it.
                    let halted_in_retry = halts
                        && stage.name == "mutator"
                        && failure.to_string().contains("transient");
                    if !halted_in_retry {
                        assert_eq!(stage.name, "fails", "an unplanned failure: {failure}");
                    }
                }
            }
            false
        }
        Err(ShutdownError::TimedOut(_)) => false,
        Err(e) => panic!("unexpected shutdown outcome: {e}"),
    };
    // Exactly once for pools, always (no event twice; checked as handled).
    if clean {
        let stages = observed.stage_counts.lock().unwrap();
        for (stage, count) in stages.iter() {
            assert_eq!(*count, acknowledged, "stage {stage} missed events");
        }
        if topology.pool > 0 {
            for (seq, hits) in observed.pool_hits[..acknowledged as usize]
                .iter()
                .enumerate()
            {
                assert_eq!(hits.load(Ordering::Relaxed), 1, "pool: event {seq} lost");
            }
        }
        for &(_joined, end) in observed.pollers_to_the_end.lock().unwrap().iter() {
            assert_eq!(end, acknowledged as Sequence, "a poller missed events");
        }
        if let (Some(at), 2) = (topology.fails_at, topology.fails_policy) {
            let letters = observed.dead_letters.load(Ordering::Relaxed);
            let expected = u64::from(at < acknowledged as Sequence);
            assert_eq!(letters, expected, "dead letters of the failing stage");
        }
    }
    // (The report hands back the journal's writer, which holds its lock.)
    drop(outcome);
    #[cfg(feature = "journal")]
    if let Some(dir) = journal_dir {
        drop(journal);
        check_journal::<E>(dir.path(), clean.then_some(acknowledged), &mut rng);
    }
}

/// After a case with a journal stage: the journal holds a contiguous run
/// of intact events in each producer's order (all that was acknowledged,
/// after a clean run); then a random byte of a random record is flipped,
/// and reopening must keep every record before it, and report the damage
/// as `Corrupt` (file and offset, no writer) unless it is in the last
/// record, which is cut as a torn tail (issue #24, finding 5).
#[cfg(feature = "journal")]
fn check_journal<E: Ev>(dir: &std::path::Path, expected: Option<u64>, rng: &mut Rng) {
    use ringbus::journal::{Journal, JournalError, JournalOptions};
    // A stage thread left running by a timed-out shutdown may still hold
    // the journal's lock for a moment.
    let open = || {
        for _ in 0..500 {
            match Journal::open(dir) {
                Err(JournalError::Locked { .. }) => thread::sleep(Duration::from_millis(10)),
                other => return other.unwrap(),
            }
        }
        panic!("the journal stayed locked");
    };
    let journal = open();
    let events: Vec<(Sequence, E)> = journal
        .events::<E, _>(0, EvCodec)
        .unwrap()
        .collect::<Result<_, _>>()
        .expect("every record reads");
    let mut check = PollCheck::new();
    for (s, e) in &events {
        check.see(e.core(), *s);
    }
    if let Some(expected) = expected {
        assert_eq!(
            events.len() as u64,
            expected,
            "the journal holds every event"
        );
    }
    drop(journal);
    // Damage: only the last segment, where a torn tail may be.
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rbj"))
        .collect();
    segments.sort();
    let Some(file) = segments.pop() else { return };
    let mut bytes = std::fs::read(&file).unwrap();
    let mut offsets = Vec::new();
    let mut at = 24usize;
    while at + 16 <= bytes.len() {
        offsets.push(at);
        at += 16 + u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    }
    if offsets.is_empty() {
        return;
    }
    let before_segment = events.len() - offsets.len();
    let r = rng.below(offsets.len() as u64) as usize;
    let end = offsets.get(r + 1).copied().unwrap_or(bytes.len());
    // Half the time in the record's header (its length, sequence, CRC).
    let within = if rng.chance(50) { 16 } else { end - offsets[r] };
    let byte = offsets[r] + rng.below(within as u64) as usize;
    bytes[byte] ^= 1 << rng.below(8);
    std::fs::write(&file, &bytes).unwrap();
    let journal = open();
    let mut records = journal.records(0).unwrap();
    for s in 0..(before_segment + r) as Sequence {
        let record = records.next().unwrap_or_else(|| panic!("record {s} lost"));
        assert_eq!(record.unwrap().sequence, s, "a record before the damage");
    }
    let last = r + 1 == offsets.len();
    match (records.next(), last) {
        (None, true) => {
            let cut = journal.recovered().expect("a torn tail cut");
            assert_eq!(cut.offset, offsets[r] as u64);
        }
        (
            Some(Err(JournalError::Corrupt {
                file: f, offset, ..
            })),
            false,
        ) => {
            assert_eq!((f, offset), (file.clone(), offsets[r] as u64));
            assert!(journal.recovered().is_none());
            assert!(journal
                .writer::<E, _>(EvCodec, JournalOptions::default())
                .is_err());
        }
        (other, _) => panic!(
            "damage at byte {byte} of record {r} of {} (last: {last}): got {other:?}, cut {:?}",
            offsets.len(),
            journal.recovered()
        ),
    }
}

/// The controlling thread: runs the own producer's share in slices, with
/// random subscribe / unsubscribe / halt actions between them, then ends
/// the case the chosen way. `others` joins the other producers first;
/// `stopped` then says whether the bus is stopped (refused, failed under a
/// halting policy, shut down elsewhere), so that pollers must end alone.
#[allow(clippy::too_many_arguments)]
fn control<E: Ev, P: Prod<E> + 'static>(
    mut p: P,
    topology: &Topology,
    halts: bool,
    end: End,
    rng: &mut Rng,
    observed: &Arc<Observed>,
    mut produce_slice: impl FnMut(&mut P, &mut Rng),
    others: impl FnOnce(),
    stopped: impl FnOnce() -> bool,
) -> Result<ShutdownReport, ShutdownError> {
    let mut halted = false;
    // Its own stream (read off `rng` without moving it), so the draws of
    // the case's end stay those of the seed.
    let mut extra = Rng(mix(rng.0 ^ 0x5709_9ED0_0000_0001));
    let mut pollers: Vec<(PollerThread, PollerKind)> = Vec::new();
    let mut subscriptions = Vec::new();
    for _ in 0..4 {
        // A lag-limited subscriber that joins from another thread while
        // this one publishes (and others may be parked on a full ring),
        // then never polls: the producers must evict it, also those whose
        // wait began before it joined.
        let late = (topology.pollers && rng.chance(30))
            .then(|| p.another())
            .flatten()
            .map(|handle| {
                let (pause, hold) = (rng.below(1_000), 1 + rng.below(20));
                let kind = PollerKind {
                    lag: Some(LagLimit::hold_at_most(Duration::from_millis(hold))),
                    lazy_after: Some(0),
                    panics: false,
                    awaits: false,
                    streams: false,
                };
                let (capacity, seed, observed) =
                    (topology.capacity as u64, rng.next(), Arc::clone(observed));
                let joined = thread::spawn(move || {
                    thread::sleep(Duration::from_micros(pause));
                    let poller = handle.subscribe(kind.lag);
                    drop(handle);
                    poller.map(|poller| spawn_poller(poller, capacity, kind, seed, &observed))
                });
                (joined, kind)
            });
        produce_slice(&mut p, rng);
        if let Some((joined, kind)) = late {
            match joined.join() {
                Ok(Some(poller)) => pollers.push((poller, kind)),
                Ok(None) => {}
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        if topology.pollers && rng.chance(50) {
            let kind = PollerKind::random(rng);
            if let Some(poller) = p.subscribe(kind.lag) {
                let capacity = topology.capacity as u64;
                let poller = spawn_poller(poller, capacity, kind, rng.next(), observed);
                pollers.push((poller, kind));
            }
        }
        if topology.pollers && rng.chance(15) {
            let slow = extra.chance(50);
            if let Some(s) = p.subscribe_with(SubscriptionCheck(PollCheck::new(), slow)) {
                subscriptions.push(s);
            }
        }
        if !pollers.is_empty() && rng.chance(30) {
            let (leaving, _) = pollers.swap_remove(rng.below(pollers.len() as u64) as usize);
            leaving.leave.store(true, Ordering::Relaxed);
            join(leaving.thread);
        }
        if !subscriptions.is_empty() && rng.chance(30) {
            let leaving: ringbus::Subscription<SubscriptionCheck> = subscriptions.swap_remove(0);
            assert!(
                leaving.unsubscribe().is_some(),
                "a subscription's check failed"
            );
        }
        if halts && rng.chance(25) {
            p.halt();
            // Release: after the halt (`Reader::call`).
            observed.halted.store(true, Ordering::Release);
            halted = true;
        }
    }
    others();
    let stop = stopped();
    if std::env::var("RINGBUS_LIFECYCLE_SEED").is_ok() {
        eprintln!("halted {halted}, stopped {stop}");
    }
    if (halted || stop) && extra.chance(50) {
        // The bus is stopped (halted, failed under a halting policy, or
        // shut down on another handle) and nobody publishes: every poller
        // that polls learns so by itself, before any shutdown here (a
        // poller that waits for ever hangs the case: the watchdog).
        let (polling, lazy): (Vec<_>, Vec<_>) = pollers
            .into_iter()
            .partition(|(_, kind)| kind.lazy_after.is_none());
        for (poller, _) in polling {
            join(poller.thread);
        }
        pollers = lazy;
    }
    let outcome = match end {
        End::Shutdown => p.shutdown(None),
        End::ShutdownTimeout => {
            let timeout = Duration::from_millis(1 + rng.below(200));
            // Now and then a plain shutdown on another handle at the same
            // time: every call sees the same outcome (one that times out
            // halts the bus for both: `TimedOut`, not a clean `Ok` over
            // events the stages never saw).
            let twin = extra
                .chance(30)
                .then(|| p.another())
                .flatten()
                .map(|other| thread::spawn(move || other.shutdown(None)));
            let outcome = p.shutdown(Some(timeout));
            if let Some(twin) = twin {
                let other = twin.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
                let same = matches!(
                    (&outcome, &other),
                    (Ok(_), Ok(_))
                        | (
                            Err(ShutdownError::TimedOut(_)),
                            Err(ShutdownError::TimedOut(_))
                        )
                        | (
                            Err(ShutdownError::StageFailed(_)),
                            Err(ShutdownError::StageFailed(_))
                        )
                );
                assert!(
                    same,
                    "two shutdowns, two outcomes: {outcome:?} and {other:?}"
                );
            }
            outcome
        }
        End::Drop => {
            drop(p);
            Ok(ShutdownReport::default())
        }
        End::DropElsewhere => {
            join(thread::spawn(move || drop(p)));
            Ok(ShutdownReport::default())
        }
    };
    for (poller, kind) in pollers {
        // Pollers end by themselves (closed, halted, evicted); lazy ones
        // are told to leave.
        if kind.lazy_after.is_some() {
            poller.leave.store(true, Ordering::Relaxed);
        }
        join(poller.thread);
    }
    for s in subscriptions {
        let check = s.unsubscribe().expect("a subscription's check failed");
        // Unsubscribed after the end: it hands its handler every event
        // left first, so one that saw any saw them to the last (checked
        // against what was acknowledged, in a clean case).
        if let Some(end) = check.0.next {
            observed.pollers_to_the_end.lock().unwrap().push((end, end));
        }
    }
    outcome
}

/// Joins a thread of the case, passing its panic (with its message) on.
fn join(thread: thread::JoinHandle<()>) {
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

fn run_sized<W: Strategy>(seed: u64, strategy: W) {
    // 24-byte events in half the cases; 256 and 1,024 bytes make a shared
    // step 64 events.
    match (seed / 4) % 4 {
        0 | 1 => run_case::<Padded<0>, W>(seed, strategy),
        2 => run_case::<Padded<29>, W>(seed, strategy),
        _ => run_case::<Padded<125>, W>(seed, strategy),
    }
}

fn run_seed(seed: u64) {
    UNPLANNED_PANICS.store(0, Ordering::Relaxed);
    let (done, finished) = mpsc::channel();
    let ipc_only = std::env::var("RINGBUS_LIFECYCLE_IPC_ONLY").is_ok();
    let case = thread::spawn(move || {
        match seed % 4 {
            _ if ipc_only => {}
            0 => run_sized(seed, Blocking),
            1 => run_sized(seed, Yielding::default()),
            2 => run_sized(seed, Sleeping::default()),
            _ => run_sized(seed, PhasedBackoff::default()),
        }
        // Every sixth case also runs a shared-memory bus (tests/lifecycle/ipc.rs).
        #[cfg(all(feature = "ipc", unix, not(loom)))]
        if seed % 6 == 5 {
            ipc::run(seed);
        }
        let _ = done.send(());
    });
    let limit = Duration::from_secs(if cfg!(miri) { 3_000 } else { 60 });
    match finished.recv_timeout(limit) {
        Ok(()) => {
            case.join().unwrap();
            let unplanned = UNPLANNED_PANICS.load(Ordering::Relaxed);
            assert_eq!(
                unplanned, 0,
                "lifecycle case failed, seed {seed} (RINGBUS_LIFECYCLE_SEED={seed}): {unplanned} \
                 unplanned panics in its threads (see above)"
            );
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = case.join() {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!(
                    "lifecycle case failed, seed {seed} (RINGBUS_LIFECYCLE_SEED={seed}): {message}"
                );
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            #[cfg(all(feature = "ipc", unix, not(loom)))]
            if seed % 6 == 5 {
                ipc::dump();
            }
            panic!("lifecycle case hung, seed {seed} (RINGBUS_LIFECYCLE_SEED={seed})")
        }
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "threads, sleeps and thousands of cases: days under Miri; the pool and \
              poller tests cover the unsafe paths there"
)]
fn random_lifecycles_lose_nothing_and_never_hang() {
    // Planned panics (stages, poll closures) would each print a message.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let planned = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .is_some_and(|m| m.starts_with("planned "));
        if !planned {
            UNPLANNED_PANICS.fetch_add(1, Ordering::Relaxed);
            hook(info);
        }
    }));
    if let Ok(seed) = std::env::var("RINGBUS_LIFECYCLE_SEED") {
        run_seed(seed.parse().expect("RINGBUS_LIFECYCLE_SEED is a number"));
        return;
    }
    let cases: u64 = std::env::var("RINGBUS_LIFECYCLE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3_000);
    let first: u64 = std::env::var("RINGBUS_LIFECYCLE_FIRST")
        .ok()
        .map(|n| n.parse().expect("RINGBUS_LIFECYCLE_FIRST is a number"))
        .unwrap_or(0);
    for seed in first..first + cases {
        run_seed(seed);
    }
}
