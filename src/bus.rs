//! The state one bus shares between its producers and its stage threads.

use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::barrier::StageCell;
use crate::error::SubscribeError;
use crate::loom::{
    self, thread::JoinHandle, Arc, AtomicBool, AtomicI64, AtomicUsize, Mutex, Ordering,
};
use crate::metrics::{Metrics, Source};
use crate::parking::{self, Interrupt, PollResult, Signal, Sources};
use crate::report::ShutdownError;
use crate::report::{ShutdownReport, StageOutcome, StageReport};
use crate::ring_buffer::RingBuffer;
use crate::sequence::{minimum, Sequence};
use crate::sequencer::Sequencer;
use crate::wait_strategy::{self, WaitStrategy};
use crate::weaken;

/// Sequence value of `closed_at` while producers may still publish.
const OPEN: Sequence = Sequence::MAX;

/// Bounds of the yield phase of a producer facing a full ring, in µs (see
/// `Bus::yield_for_room`). There is no such phase under loom: a phase bounded
/// by the clock is not a model; the strategies' own waits, which follow it,
/// are checked.
const FULL_RING_YIELD_MAX_US: usize = 200;
const FULL_RING_YIELD_MIN_US: usize = 8;

/// Rarely written flags, on a line of their own so the per-event loads of
/// `halted` never share a line with hot writes.
#[derive(Debug)]
struct Control {
    /// Every stage stops (`halt()`).
    halted: AtomicBool,
    /// Producers get `Err(Halted)` (`halt()`, or a stage failed).
    refusing: AtomicBool,
    /// The last sequence that will ever be published, once closed.
    closed_at: AtomicI64,
}

/// How long a timed-out shutdown waits, after halting the bus, for stages
/// that are not stuck in a handler to stop (they notice within a chunk).
const HALT_GRACE: Duration = Duration::from_millis(20);

/// A stage thread; its stages' outcomes go to `Bus::record_outcome`.
pub(crate) type StageThread = JoinHandle<()>;

/// The join's bookkeeping: the stage threads not joined yet, and the first
/// outcome, which every later shutdown call reports again.
struct JoinState {
    /// One per stage thread, with the indices of its stages (one, or
    /// several sharing it), in the order the stages were added.
    handles: Vec<(Vec<usize>, Option<StageThread>)>,
    outcome: Option<(Verdict, Vec<StageReport>)>,
}

#[derive(Clone, Copy)]
enum Verdict {
    Clean,
    TimedOut,
    StageFailed,
}

pub(crate) struct Bus<E, S, W> {
    /// The builder's id (as in its `StageId`s): tells a journal whether a
    /// producer publishes into the bus of its journal stage.
    pub(crate) id: u64,
    pub(crate) ring: RingBuffer<E>,
    pub(crate) sequencer: S,
    pub(crate) strategy: W,
    /// Publishes and the bus's own events (close, halt, a thread finished);
    /// each stage and subscriber has a signal of its own (`StageCell`).
    pub(crate) signal: Signal,
    /// The leaf stages and the live pollers: producers may not pass the
    /// slowest. Locked only on the producers' slow path (when their cached
    /// minimum says the ring may be full) and by (un)subscribing pollers; see
    /// `subscribe` for why the lock makes joining at runtime safe.
    gating: Mutex<Vec<Arc<StageCell>>>,
    /// Every stage with its name, for metrics.
    stages: Vec<(String, Arc<StageCell>)>,
    /// How each stage ended (its report and handler), recorded the moment
    /// it ended, so that a stage that ended on a thread still running other
    /// stages is reported as it ended.
    outcomes: Vec<Mutex<Option<StageOutcome>>>,
    /// Pollers may not join a bus with a mutating stage.
    has_mutating_stage: bool,
    control: CachePadded<Control>,
    /// Live producer handles (multi-producer clones).
    pub(crate) producers: AtomicUsize,
    /// Stage threads that have exited.
    finished: AtomicUsize,
    /// Stage threads started; fixed once `build` returns.
    spawned: AtomicUsize,
    joining: Mutex<JoinState>,
    /// True once a shutdown recorded its outcome (wakes the other joiners).
    settled: AtomicBool,
    /// Lag-limited subscribers in the gating set (changed under its lock):
    /// producers facing a full ring look for one to evict only if nonzero.
    lag_limited: AtomicUsize,
    /// Lag-limited subscribers that ever joined (changed under the gating
    /// lock): a producer waiting on a full ring that sees it change
    /// recomputes how often it wakes to evict (issue #24, finding 2).
    lag_joins: AtomicUsize,
    /// How long, in µs, the next producer facing a full ring yields before
    /// it waits the strategy's way (napping strategies only).
    full_ring_yield_us: AtomicUsize,
}

impl<E, S, W> std::fmt::Debug for Bus<E, S, W>
where
    S: Sequencer,
    W: WaitStrategy,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("capacity", &self.ring.capacity())
            .field("sequencer", &self.sequencer)
            .field("strategy", &self.strategy)
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

impl<E, S: Sequencer, W: WaitStrategy> Bus<E, S, W> {
    pub(crate) fn new(
        id: u64,
        ring: RingBuffer<E>,
        strategy: W,
        gating: Vec<Arc<StageCell>>,
        stages: Vec<(String, Arc<StageCell>)>,
        has_mutating_stage: bool,
    ) -> Self {
        Self {
            id,
            outcomes: stages.iter().map(|_| Mutex::new(None)).collect(),
            stages,
            has_mutating_stage,
            sequencer: S::new(ring.capacity()),
            ring,
            strategy,
            signal: Signal::new(),
            gating: Mutex::new(gating),
            control: CachePadded::new(Control {
                halted: AtomicBool::new(false),
                refusing: AtomicBool::new(false),
                closed_at: AtomicI64::new(OPEN),
            }),
            producers: AtomicUsize::new(1),
            finished: AtomicUsize::new(0),
            spawned: AtomicUsize::new(0),
            joining: Mutex::new(JoinState {
                handles: Vec::new(),
                outcome: None,
            }),
            settled: AtomicBool::new(false),
            lag_limited: AtomicUsize::new(0),
            lag_joins: AtomicUsize::new(0),
            full_ring_yield_us: AtomicUsize::new(FULL_RING_YIELD_MAX_US),
        }
    }

    #[inline]
    pub(crate) fn capacity(&self) -> i64 {
        self.ring.capacity() as i64
    }

    /// True once the bus was halted. Relaxed: the flag carries no data; the
    /// waits recheck it after the wake-up that follows it (`wake_all`'s
    /// swaps release it to the waiters' enlisting swaps).
    #[inline]
    pub(crate) fn is_halted(&self) -> bool {
        self.control.halted.load(Ordering::Relaxed)
    }

    /// True once producers must get `Err(Halted)`: the bus was halted or a
    /// stage failed. Relaxed, as `is_halted`.
    #[inline]
    pub(crate) fn refuses_producers(&self) -> bool {
        self.control.refusing.load(Ordering::Relaxed)
    }

    /// A stage stopped after a failure: producers get `Err(Halted)` (waiting
    /// ones wake), stages independent of the failed one go on draining.
    pub(crate) fn refuse_producers(&self) {
        // Relaxed: as in `halt`.
        self.control.refusing.store(true, Ordering::Relaxed);
        self.wake_all();
    }

    /// Nothing more will be published at or after `next`: the producers are
    /// closed past it. (A halted bus may leave claims unpublished; readers
    /// stop on the halt itself.)
    pub(crate) fn nothing_more_at(&self, next: Sequence) -> bool {
        self.closed_at().is_some_and(|last| next > last)
    }

    /// The last sequence that will ever be published, if producers are done.
    #[inline]
    pub(crate) fn closed_at(&self) -> Option<Sequence> {
        // Acquire: pairs with the Release in `close`. Stages need only the
        // number (they exit once past it); the pairing keeps a reader that
        // sees the final sequence from seeing an older state of the bus.
        let at = self.control.closed_at.load(Ordering::Acquire);
        (at != OPEN).then_some(at)
    }

    /// The slowest gating consumer, or at most `default`.
    ///
    /// Producers pass as `default` the sequence they had fully claimed
    /// before their current claim, never "no limit": a poller may join at
    /// any time, and every limit a producer computes must hold for it too.
    pub(crate) fn min_gating(&self, default: Sequence) -> Sequence {
        self.min_gating_of(default, false)
    }

    /// As `min_gating`; with `skip_failed`, stages stopped by a failure are
    /// left out: for a multi producer whose claim the stages can already see
    /// and which must be published (see `wait_for_free`). A producer that
    /// has claimed nothing keeps them in, so it waits for the refusal that
    /// follows a failure instead of racing it into the failed stage's room.
    pub(crate) fn min_gating_of(&self, default: Sequence, skip_failed: bool) -> Sequence {
        let gating = loom::lock(&self.gating);
        // A stage stopped by a failure reads no more: left out (in favour of
        // the healthy stages before it, see `StageCell::gating`), a claim
        // made before the refusal can still be filled and published for the
        // healthy stages (no hole for them to wait at). Its last read
        // happened before its flag (Release/Acquire), so its slots may be
        // reused.
        let consumers = gating
            .iter()
            .fold(Sequence::MAX, |min, cell| min.min(cell.gating(skip_failed)));
        // Only to show the loom model of a joining poller fails without it.
        if weaken::LIMIT_DEFAULT {
            return consumers;
        }
        // The published floor (a multi producer's; `MAX` for a single one)
        // is at or above every consumer's sequence: consumers pass only
        // published events, and runtime readers join at the floor, which
        // only grows. So it binds only when no consumer gates, and its scan
        // (over marks other producers are writing) is paid only then: on
        // the 2P->1C row, scanning on every refresh of the gating cache
        // cost more than half the throughput.
        if consumers == Sequence::MAX {
            default.min(self.sequencer.gating_floor())
        } else {
            self.sequencer.floor_for_consumers();
            default.min(consumers)
        }
    }

    /// Adds a consumer at runtime (an event poller): it has "passed" the
    /// returned cell's sequence and gates the producers from now on.
    ///
    /// It starts after the slowest gating consumer, or after everything
    /// claimed when there is none; a multi-producer bus starts it after the
    /// published floor (`Sealed::join_point`). Why producers never overwrite a slot it is
    /// entitled to: a producer writes at most up to a minimum it computed
    /// (under this lock) plus the capacity. A minimum computed before this
    /// subscription came from cursor reads (and a claim) ordered before ours
    /// by the lock; cursors only grow, so it is at most our start. Every
    /// minimum computed after it includes the new cell.
    pub(crate) fn subscribe(
        &self,
        hold: Option<Duration>,
    ) -> Result<Arc<StageCell>, SubscribeError> {
        if self.has_mutating_stage {
            // A poller reads what producers published, so it could read an
            // event while a mutating stage writes it.
            return Err(SubscribeError::MutatingStages);
        }
        let mut gating = loom::lock(&self.gating);
        if self.refuses_producers() {
            return Err(SubscribeError::Halted);
        }
        if self.closed_at().is_some() {
            return Err(SubscribeError::Closed);
        }
        let slowest = minimum(gating.iter().map(|s| &s.sequence), self.sequencer.claimed());
        let start = self.sequencer.join_point(slowest);
        let cell = Arc::new(match hold {
            None => StageCell::starting_at(start),
            Some(hold) => {
                // Relaxed: a hint for producers, changed under the lock.
                self.lag_limited.fetch_add(1, Ordering::Relaxed);
                // Release: a producer that sees the new count (Acquire)
                // sees the `lag_limited` above, so its restart finds the
                // new limit (`wait_for_free`).
                self.lag_joins.fetch_add(1, Ordering::Release);
                StageCell::limited(start, hold)
            }
        });
        gating.push(Arc::clone(&cell));
        drop(gating);
        // A producer waiting for room enlisted with the gating set it saw,
        // which this cell now joins: it must enlist with this one too.
        self.wake_all();
        Ok(cell)
    }

    /// Evicts the runtime subscribers with a lag limit that hold a producer
    /// wanting to write up to `last` (their sequence is below `last -
    /// capacity`) for longer than their limit and are not reading: they
    /// leave the gating set at once, and their next poll says how far
    /// behind they were. True if any was evicted (the caller recomputes
    /// its minimum; its publish then wakes the evicted one). Never takes
    /// a signal's lock.
    pub(crate) fn evict_laggards(&self, last: Sequence) -> bool {
        // Relaxed: a hint (see `lag_limited`); a stale zero only delays an
        // eviction to the next look.
        if self.lag_limited.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let wrap_point = last - self.capacity();
        let mut evicted = 0;
        loom::lock(&self.gating).retain(|cell| {
            let evict = cell.evict_if_lagging(wrap_point, last);
            evicted += usize::from(evict);
            !evict
        });
        // Relaxed: as above.
        self.lag_limited.fetch_sub(evicted, Ordering::Relaxed);
        evicted > 0
    }

    /// The shortest hold limit among the lag-limited subscribers, if any:
    /// a producer waiting on a full ring wakes at least that often to
    /// evict one that held it too long.
    fn shortest_hold(&self) -> Option<Duration> {
        // Relaxed: as in `evict_laggards`.
        if self.lag_limited.load(Ordering::Relaxed) == 0 {
            return None;
        }
        loom::lock(&self.gating)
            .iter()
            .filter_map(|cell| cell.lag.as_ref().map(|w| w.hold()))
            .min()
    }

    /// How often a producer waiting on a full ring wakes to evict a
    /// lag-limited subscriber that held it too long: a quarter of the
    /// shortest limit (at least 100 µs); `None` without such subscribers.
    fn lag_wake_slice(&self) -> Option<Duration> {
        self.shortest_hold()
            .map(|hold| (hold / 4).max(Duration::from_micros(100)))
    }

    /// Removes a runtime consumer; producers waiting on it go on.
    pub(crate) fn unsubscribe(&self, cell: &Arc<StageCell>) {
        let mut gating = loom::lock(&self.gating);
        let before = gating.len();
        gating.retain(|c| !Arc::ptr_eq(c, cell));
        if gating.len() < before && cell.lag.is_some() {
            // Relaxed: as in `evict_laggards` (an evicted cell was counted
            // out there).
            self.lag_limited.fetch_sub(1, Ordering::Relaxed);
        }
        drop(gating);
        // A producer waiting for room enlisted with its signal, not with the
        // ones now holding it back: every waiter looks again. The departed
        // cell's own signal first: `wake_all` no longer sees it, and it may
        // be the only one a single producer enlisted with (a bus whose only
        // consumer was this one).
        cell.signal.notify_if_parked();
        self.wake_all();
    }

    /// Highest sequence producers may write while the slowest gating stage is
    /// at `min_gating`.
    #[inline]
    pub(crate) fn writable_up_to(&self, min_gating: Sequence) -> Sequence {
        min_gating.saturating_add(self.capacity())
    }

    /// Waits until producers may write up to `last`; returns the gating minimum
    /// then seen. `before` is what was claimed before this claim (see
    /// `min_gating`).
    ///
    /// `Halted` when the bus is halted; when a stage failure refuses the
    /// producers, only if `claimed` is false. A claim the stages can already
    /// see (`claimed`: a multi producer's `fetch_add`) must be published,
    /// or the healthy stages would wait at its hole: it goes on waiting for
    /// the room the healthy stages free (failed stages stop gating).
    pub(crate) fn wait_for_free(
        &self,
        last: Sequence,
        before: Sequence,
        deadline: Option<Instant>,
        claimed: bool,
    ) -> Result<Sequence, Interrupt> {
        let mut poll = || self.room_for(last, before, claimed);
        if self.strategy.naps() && !cfg!(loom) {
            if let Some(found) = self.yield_for_room(deadline, &mut poll) {
                return found;
            }
        }
        // With a lag-limited subscriber, wake at least every quarter of its
        // limit to evict it if it held us too long (nobody signals that).
        // Not under loom: a timed wake makes the model's path depend on the
        // real clock (loom then stops: "is the model fully deterministic?"),
        // and its models evict at the first look (`LagLimit::never_hold`).
        // A subscriber that joins while we wait wakes us (`subscribe`), and
        // we then start over with its limit: else a producer parked before
        // it joined would park with no deadline and never evict it.
        loop {
            // Acquire: pairs with `subscribe`'s Release increment, so
            // `shortest_hold` below sees the subscriber counted.
            let joins = self.lag_joins.load(Ordering::Acquire);
            let slice = self.lag_wake_slice().filter(|_| !cfg!(loom));
            let wake = slice.and_then(wait_strategy::deadline_after);
            let until = match (deadline, wake) {
                (Some(d), Some(w)) => Some(d.min(w)),
                (d, w) => d.or(w),
            };
            let found = self.strategy.wait(&ProducerSources(self), until, || {
                // Relaxed: a change only restarts the wait, whose first
                // load (Acquire) synchronises.
                if self.lag_joins.load(Ordering::Relaxed) != joins && !weaken::LAG_REJOIN {
                    // A new limit to wake for: start over.
                    return Err(Interrupt::Timeout);
                }
                poll()
            });
            match found {
                Err(Interrupt::Timeout) if deadline.map_or(true, |d| Instant::now() < d) => {}
                found => return found,
            }
        }
    }

    /// The async form of `wait_for_free` for a producer that has claimed
    /// nothing (feature `async`): ready with the gating minimum once room
    /// for `last` is there, else `waker` is enlisted with the signals of the
    /// gating stages and subscribers (and the bus's, for a multi producer).
    #[cfg(feature = "async")]
    pub(crate) fn register_for_free(
        &self,
        waker: &std::task::Waker,
        last: Sequence,
        before: Sequence,
    ) -> std::task::Poll<Result<Sequence, Interrupt>> {
        let found = parking::register(&ProducerSources(self), waker, || {
            // Another handle closed the bus: nothing more is accepted.
            if self.closed_at().is_some() {
                return Err(Interrupt::Closed);
            }
            self.room_for(last, before, false)
        });
        // Held by a lag-limited subscriber, maybe: look again within a
        // quarter of its limit, as a waiting thread does (see `lag_clock`).
        #[cfg(not(loom))]
        if found.is_pending() && !weaken::LAG_CLOCK {
            if let Some(slice) = self.lag_wake_slice() {
                crate::lag_clock::wake_at(Instant::now() + slice, waker.clone());
            }
        }
        found
    }

    /// One look for room up to `last` (see `wait_for_free`): the gating
    /// minimum once there is room, after evicting the lag-limited
    /// subscribers that held the producers too long; `Halted` on a
    /// refusal.
    fn room_for(&self, last: Sequence, before: Sequence, claimed: bool) -> PollResult<Sequence> {
        // The refusal first: a failed stage stops gating, which may make
        // room that only a claim already made may take.
        if self.is_halted() || (!claimed && self.refuses_producers()) {
            return Err(Interrupt::Halted);
        }
        let wrap_point = last - self.capacity();
        let mut min = self.min_gating_of(before, claimed);
        if min < wrap_point && self.evict_laggards(last) {
            min = self.min_gating_of(before, claimed);
        }
        Ok((min >= wrap_point).then_some(min))
    }

    /// A napping strategy's producer facing a full ring yields first; see
    /// "A producer facing a full ring yields first" on [`Blocking`]. `None`:
    /// no room within the phase (now shorter for the next producer); wait
    /// the strategy's way.
    ///
    /// Room found by the first poll says nothing about yielding (a single
    /// producer comes here whenever its cached minimum is stale), so only a
    /// phase that yielded at least once changes the budget.
    ///
    /// [`Blocking`]: crate::Blocking
    fn yield_for_room(
        &self,
        deadline: Option<Instant>,
        mut poll: impl FnMut() -> PollResult<Sequence>,
    ) -> Option<Result<Sequence, Interrupt>> {
        match poll() {
            Ok(Some(min)) => return Some(Ok(min)),
            Err(interrupt) => return Some(Err(interrupt)),
            Ok(None) => {}
        }
        // Relaxed: a tuning hint the producers share; any value is safe.
        let budget = self.full_ring_yield_us.load(Ordering::Relaxed);
        let until = Instant::now() + Duration::from_micros(budget as u64);
        let phase_end = deadline.map_or(until, |d| d.min(until));
        let (outcome, next_budget) = match wait_strategy::yield_until(phase_end, poll) {
            Ok(min) => (Some(Ok(min)), (budget * 2).min(FULL_RING_YIELD_MAX_US)),
            // The phase, not the caller's deadline, ran out.
            Err(Interrupt::Timeout) if deadline.map_or(true, |d| d > until) => {
                (None, (budget / 2).max(FULL_RING_YIELD_MIN_US))
            }
            Err(interrupt) => (Some(Err(interrupt)), budget),
        };
        if next_budget != budget {
            self.full_ring_yield_us
                .store(next_budget, Ordering::Relaxed);
        }
        outcome
    }

    /// Tells parked stages that something was published.
    #[inline]
    pub(crate) fn notify(&self) {
        self.strategy.notify(&self.signal);
    }

    /// Tells the stages after `cell` and waiting producers that `cell`
    /// advanced.
    #[inline]
    pub(crate) fn notify_progress(&self, cell: &StageCell) {
        // Knob `edge_signal`: signal the bus's signal instead of the cell's,
        // as before parking per edge (to show the loom models of per-edge
        // parking catch a progress signalled on the wrong edge).
        if weaken::EDGE_SIGNAL {
            self.strategy.notify(&self.signal);
            return;
        }
        self.strategy.notify(&cell.signal);
    }

    /// Wakes every waiter of every signal of the bus (its own, each stage's
    /// and each subscriber's): for the bus's own events, which every wait
    /// must see.
    pub(crate) fn wake_all(&self) {
        // Each signal as a notifier does: the bus's event was stored before,
        // so by the parking protocol's argument a waiter either sees it or
        // set the flag this swap reads (and the list is woken).
        self.signal.notify_if_parked();
        for (_, cell) in &self.stages {
            cell.signal.notify_if_parked();
        }
        // Subscribers (stage cells among them are looked at twice,
        // harmlessly); collected first, so no waker runs under the lock.
        let gating: Vec<_> = loom::lock(&self.gating).iter().map(Arc::clone).collect();
        for cell in gating {
            cell.signal.notify_if_parked();
        }
    }

    /// Stops every stage without draining and wakes everything parked.
    pub(crate) fn halt(&self) {
        // Relaxed: the flag carries no data; parked threads recheck it after
        // the wake-up below, whose swaps (AcqRel) release it to them.
        self.control.halted.store(true, Ordering::Relaxed);
        self.control.refusing.store(true, Ordering::Relaxed);
        self.wake_all();
    }

    /// Records that `last` is the final published sequence; stages drain up to
    /// it and exit.
    pub(crate) fn close(&self, last: Sequence) {
        // Release: pairs with the Acquire in `closed_at`.
        self.control.closed_at.store(last, Ordering::Release);
        self.wake_all();
    }

    /// Records the thread that runs `stages`.
    pub(crate) fn add_thread(&self, handle: StageThread, stages: Vec<usize>) {
        loom::lock(&self.joining)
            .handles
            .push((stages, Some(handle)));
        // Relaxed: read by `join` after `build` returned, which happens-after.
        self.spawned.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how stage `index` ended, for `join`.
    pub(crate) fn record_outcome(&self, index: usize, outcome: StageOutcome) {
        *loom::lock(&self.outcomes[index]) = Some(outcome);
    }

    /// Called by each stage thread as its last act.
    pub(crate) fn thread_finished(&self) {
        // Release: the joiner's Acquire load sees the stage's final state.
        self.finished.fetch_add(1, Ordering::Release);
        self.wake_all();
    }

    /// True when the calling thread is one of this bus's stage threads (a
    /// handler dropping or shutting down the last producer): it must not
    /// wait for itself.
    pub(crate) fn on_stage_thread(&self) -> bool {
        let me = loom::thread::current().id();
        loom::lock(&self.joining)
            .handles
            .iter()
            .filter_map(|(_, h)| h.as_ref())
            .any(|h| h.thread().id() == me)
    }

    /// Waits (parked, never spinning) for every stage thread to finish,
    /// halting the bus if `deadline` passes first, then joins them.
    ///
    /// After a timeout it returns without waiting for a stage stuck in its
    /// handler: that stage is reported `still_running` and its thread is
    /// left to finish on its own (it holds the bus's memory alive).
    ///
    /// Several callers may join at once or one after another (clones
    /// shutting down, a drop after a shutdown): the first outcome recorded
    /// is every caller's outcome; only the first caller gets the handlers.
    /// Called on one of the bus's own stage threads it joins nothing and
    /// says so; the threads finish once their handlers return.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> Result<ShutdownReport, ShutdownError> {
        if self.on_stage_thread() {
            return Err(ShutdownError::OnStageThread);
        }
        let started = self.spawned.load(Ordering::Relaxed);
        let all_done = || {
            // Acquire: pairs with the Release in `thread_finished`.
            let done = self.finished.load(Ordering::Acquire) >= started;
            // Acquire: pairs with the Release in `record`.
            Ok((done || self.settled.load(Ordering::Acquire)).then_some(()))
        };
        let timed_out = parking::park(&self.signal, deadline, all_done).is_err();
        if timed_out {
            self.halt();
            if !cfg!(loom) {
                // Loom has no clock: its timed waits never time out.
                let grace = Some(Instant::now() + HALT_GRACE);
                let _ = parking::park(&self.signal, grace, all_done);
            }
        }
        let mut state = loom::lock(&self.joining);
        if let Some((verdict, reports)) = &state.outcome {
            return verdict.report(reports.clone(), Vec::new());
        }
        // By stage, for the stages whose thread was started.
        let mut by_stage: Vec<Option<StageOutcome>> = self.stages.iter().map(|_| None).collect();
        for (stages, slot) in state.handles.iter_mut() {
            // A thread still running keeps its handle (dropping it would
            // detach the thread); the stages on it that ended are reported
            // as they ended, the others as still running.
            let exited = stages.iter().all(|&i| self.stages[i].1.has_exited());
            if exited {
                if let Some(handle) = slot.take() {
                    let _ = handle.join();
                }
            }
            for &i in stages.iter() {
                let name = &self.stages[i].0;
                let recorded = loom::lock(&self.outcomes[i]).take();
                by_stage[i] = Some(recorded.unwrap_or_else(|| match exited {
                    // The thread ended without recording it: a panic
                    // outside every handler call.
                    true => (StageReport::lost(name), None),
                    // What it released by now (a long batch releases
                    // chunk by chunk, so a slow handler shows its progress).
                    false => (
                        StageReport::still_running(name, self.stages[i].1.processed()),
                        None,
                    ),
                }));
            }
        }
        let (reports, handlers): (Vec<_>, Vec<_>) = by_stage.into_iter().flatten().unzip();
        let verdict = if reports.iter().any(|r| r.failure.is_some()) {
            Verdict::StageFailed
        } else if timed_out || reports.iter().any(|r| r.still_running) {
            Verdict::TimedOut
        } else {
            Verdict::Clean
        };
        state.outcome = Some((verdict, reports.clone()));
        drop(state);
        // Release: pairs with the Acquire in `join`'s wait.
        self.settled.store(true, Ordering::Release);
        self.signal.notify_all();
        verdict.report(reports, handlers)
    }
}

/// What a producer waiting for room enlists with (parking per edge, see
/// `wait_strategy`): every gating stage's and subscriber's signal (for a
/// failed one, those of the stages before it), and, for a multi producer,
/// the bus's (another producer's publish moves the published floor, which
/// binds when nothing gates). The bus's own events (close, halt) wake
/// every signal.
struct ProducerSources<'a, E, S, W>(&'a Bus<E, S, W>);

impl<E, S: Sequencer, W: WaitStrategy> Sources for ProducerSources<'_, E, S, W> {
    fn each(&self, f: &mut dyn FnMut(&Signal)) {
        if S::MULTI {
            f(&self.0.signal);
        }
        // Under the gating lock (then a signal's: never the other way round;
        // enlisting wakes nothing under it).
        for cell in loom::lock(&self.0.gating).iter() {
            // A failed stage's upstream stages hold the producers instead
            // (`StageCell::gating`); its failure woke every waiter first.
            cell.each_gating_signal(f);
        }
    }
}

impl Verdict {
    fn report(
        self,
        stages: Vec<StageReport>,
        handlers: Vec<Option<Box<dyn std::any::Any + Send>>>,
    ) -> Result<ShutdownReport, ShutdownError> {
        let report = ShutdownReport::new(stages, handlers);
        match self {
            Verdict::Clean => Ok(report),
            Verdict::TimedOut => Err(ShutdownError::TimedOut(report)),
            Verdict::StageFailed => Err(ShutdownError::StageFailed(report)),
        }
    }
}

/// The metrics view of a bus.
struct BusSource<E, S, W>(Arc<Bus<E, S, W>>);

impl<E, S, W> Source for BusSource<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    fn capacity(&self) -> usize {
        self.0.ring.capacity()
    }

    fn cursor(&self) -> Sequence {
        // After a close, refused claims inflate the claim counter: the final
        // sequence is the true end.
        self.0
            .closed_at()
            .unwrap_or_else(|| self.0.sequencer.claimed())
    }

    fn min_gating(&self, default: Sequence) -> Sequence {
        self.0.min_gating(default)
    }

    fn stages(&self) -> &[(String, Arc<StageCell>)] {
        &self.0.stages
    }

    fn subscribers(&self) -> Vec<Sequence> {
        let stages = &self.0.stages;
        loom::lock(&self.0.gating)
            .iter()
            .filter(|cell| !stages.iter().any(|(_, s)| Arc::ptr_eq(s, cell)))
            .map(|cell| cell.sequence.get_relaxed())
            .collect()
    }

    fn clone_box(&self) -> Box<dyn Source> {
        Box::new(BusSource(Arc::clone(&self.0)))
    }
}

/// A metrics handle on `bus`.
pub(crate) fn metrics<E, S, W>(bus: &Arc<Bus<E, S, W>>) -> Metrics
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    Metrics::new(Box::new(BusSource(Arc::clone(bus))))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    use super::{Ordering, FULL_RING_YIELD_MAX_US, FULL_RING_YIELD_MIN_US};
    use crate::parking::Interrupt;
    use crate::{Sequence, Sleeping};

    /// The yield phase's bookkeeping, driven with scripted polls (no stage,
    /// no timing races): it halves after a phase that found no room, down to
    /// its floor; doubles after one that found room, up to its ceiling; and
    /// leaves the budget alone when room is there at once, when the caller's
    /// deadline ends the wait, and on a halt.
    #[test]
    fn full_ring_yield_phase_adapts() {
        let p = crate::single_producer(2, || 0u64, Sleeping::default())
            .handle_events_with(|_e: &u64, _s: Sequence, _eob: bool| {})
            .build();
        let bus = &*p.bus;
        let budget = || bus.full_ring_yield_us.load(Ordering::Relaxed);
        let set = |us: usize| bus.full_ring_yield_us.store(us, Ordering::Relaxed);
        // Room after `n` failed polls (never, for `None`).
        let room_after = |n: Option<u32>| {
            let polls = Cell::new(0u32);
            move || {
                polls.set(polls.get() + 1);
                Ok(n.filter(|&n| polls.get() > n).map(|_| 7))
            }
        };
        assert_eq!(budget(), FULL_RING_YIELD_MAX_US);

        let mut expected = FULL_RING_YIELD_MAX_US;
        while expected > FULL_RING_YIELD_MIN_US {
            assert_eq!(bus.yield_for_room(None, room_after(None)), None);
            expected = (expected / 2).max(FULL_RING_YIELD_MIN_US);
            assert_eq!(budget(), expected);
        }
        assert_eq!(bus.yield_for_room(None, room_after(None)), None);
        assert_eq!(budget(), FULL_RING_YIELD_MIN_US, "stays at its floor");

        // Room at the phase's first poll, which comes before its first look
        // at the clock: no race with the (short, or under Miri fast) clock.
        assert_eq!(bus.yield_for_room(None, room_after(Some(1))), Some(Ok(7)));
        assert_eq!(budget(), 2 * FULL_RING_YIELD_MIN_US);

        set(150);
        assert_eq!(bus.yield_for_room(None, room_after(Some(1))), Some(Ok(7)));
        assert_eq!(budget(), FULL_RING_YIELD_MAX_US, "capped at its ceiling");

        set(64);
        assert_eq!(bus.yield_for_room(None, room_after(Some(0))), Some(Ok(7)));
        assert_eq!(budget(), 64, "room at the first poll is no evidence");

        // A long phase cut short by the caller's deadline: a timeout at the
        // deadline, not at the phase's end, and no change.
        set(10_000_000);
        let start = Instant::now();
        let deadline = start + Duration::from_millis(2);
        assert_eq!(
            bus.yield_for_room(Some(deadline), room_after(None)),
            Some(Err(Interrupt::Timeout))
        );
        assert!(Instant::now() >= deadline);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "waited for the phase"
        );
        assert_eq!(budget(), 10_000_000);

        let halted_after = |n: u32| {
            let polls = Cell::new(0u32);
            move || {
                polls.set(polls.get() + 1);
                if polls.get() > n {
                    Err(Interrupt::Halted)
                } else {
                    Ok(None)
                }
            }
        };
        set(64);
        assert_eq!(
            bus.yield_for_room(None, halted_after(1)),
            Some(Err(Interrupt::Halted))
        );
        assert_eq!(budget(), 64);
        drop(p);
    }
}
