//! The state one bus shares between its producers and its stage threads.

mod room;
mod shutdown;
mod source;
mod subscribers;

use crossbeam_utils::CachePadded;

pub(crate) use source::metrics;

use crate::barrier::StageCell;
use crate::loom::{self, Arc, AtomicBool, AtomicI64, AtomicUsize, Mutex, Ordering};
use crate::parking::PublishSignals;
use crate::report::StageOutcome;
use crate::ring_buffer::RingBuffer;
use crate::sequence::Sequence;
use crate::sequencer::Sequencer;
use crate::wait_strategy::WaitStrategy;
use crate::weaken;
use room::FULL_RING_YIELD_MAX_US;
use shutdown::JoinState;

/// Sequence value of `closed_at` while producers may still publish.
const OPEN: Sequence = Sequence::MAX;

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

pub(crate) struct Bus<E, S, W> {
    /// The builder's id (as in its `StageId`s): tells a journal whether a
    /// producer publishes into the bus of its journal stage.
    pub(crate) id: u64,
    pub(crate) ring: RingBuffer<E>,
    pub(crate) sequencer: S,
    pub(crate) strategy: W,
    /// Publishes, spread over a few stripes on a multi-producer bus (one per
    /// producer handle); each stage and subscriber has a signal of its own
    /// (`StageCell`).
    pub(crate) signals: PublishSignals,
    /// The stripe the next producer handle notifies. A plain std atomic:
    /// it only spreads handles over the stripes, ordering nothing.
    next_stripe: std::sync::atomic::AtomicUsize,
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
    /// The claims (first, last) of multi producers waiting for room, for
    /// a subscription stopping after the close (`EventPoller::
    /// the_next_claim_waits_for_room`): a batch's first slot may have room
    /// while its last has none. Locked only by a producer that waits for
    /// room after its claim, and by that check. A std mutex even under
    /// loom: nothing waits while holding it.
    pub(crate) waiting_claims: std::sync::Mutex<Vec<(Sequence, Sequence)>>,
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
        sequencer: S,
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
            sequencer,
            ring,
            strategy,
            signals: PublishSignals::new(S::MULTI),
            next_stripe: std::sync::atomic::AtomicUsize::new(0),
            gating: Mutex::new(gating),
            control: CachePadded::new(Control {
                halted: AtomicBool::new(false),
                refusing: AtomicBool::new(false),
                closed_at: AtomicI64::new(OPEN),
            }),
            producers: AtomicUsize::new(1),
            finished: AtomicUsize::new(0),
            spawned: AtomicUsize::new(0),
            joining: Mutex::new(JoinState::new()),
            settled: AtomicBool::new(false),
            lag_limited: AtomicUsize::new(0),
            lag_joins: AtomicUsize::new(0),
            full_ring_yield_us: AtomicUsize::new(FULL_RING_YIELD_MAX_US),
            // Room for a few waiters: a first wait for room allocates
            // nothing (tests/no_alloc.rs).
            waiting_claims: std::sync::Mutex::new(Vec::with_capacity(8)),
        }
    }

    #[inline]
    pub(crate) fn capacity(&self) -> i64 {
        self.ring.capacity() as i64
    }

    /// True once the bus was halted. Acquire: pairs with the Release in
    /// `halt`, so a thread that saw the halt also sees the single producer's
    /// refused limit (a plain load on x86). The waits recheck the flag after
    /// the wake-up that follows it (`wake_all`, see `parking.rs`).
    #[inline]
    pub(crate) fn is_halted(&self) -> bool {
        self.control.halted.load(Ordering::Acquire)
    }

    /// True once producers must get `Err(Halted)`: the bus was halted or a
    /// stage failed. Acquire, as `is_halted`.
    #[inline]
    pub(crate) fn refuses_producers(&self) -> bool {
        self.control.refusing.load(Ordering::Acquire)
    }

    /// `refuses_producers` without its Acquire: for the multi producer's
    /// claim, which has no limit word to see (a plain load on x86, one
    /// `ldar` less per publish on aarch64).
    #[inline]
    pub(crate) fn refuses_producers_relaxed(&self) -> bool {
        self.control.refusing.load(Ordering::Relaxed)
    }

    /// Stages that failed (`cells`): the single producer's limit is refused
    /// before their flags are set, so a stage that sees one of them failed
    /// also sees the producers refused; then `refuse_producers`.
    pub(crate) fn fail_stages<'c>(&self, cells: impl IntoIterator<Item = &'c StageCell>) {
        // Knob `refuse_order`: the flags before the limit.
        if !weaken::REFUSE_ORDER {
            self.sequencer.refuse_producers();
        }
        for cell in cells {
            cell.fail();
        }
        self.refuse_producers();
    }

    /// A stage stopped after a failure: producers get `Err(Halted)` (waiting
    /// ones wake), stages independent of the failed one go on draining.
    pub(crate) fn refuse_producers(&self) {
        // Knob `refuse_order`: the flag before the limit (the order before
        // issue #27's review).
        if weaken::REFUSE_ORDER {
            self.control.refusing.store(true, Ordering::Release);
            self.sequencer.refuse_producers();
            self.wake_all();
            return;
        }
        // The limit first, then the flag, Release: as in `halt`.
        self.sequencer.refuse_producers();
        self.control.refusing.store(true, Ordering::Release);
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

    /// Tells parked stages that something was published by the producer
    /// handle of `stripe`.
    #[inline]
    pub(crate) fn notify(&self, stripe: usize) {
        self.strategy.notify(self.signals.stripe(stripe));
    }

    /// The stripe of a new producer handle: handles take the stripes in
    /// use in turn (the one producer of a single-producer bus: 0).
    pub(crate) fn take_stripe(&self) -> usize {
        self.next_stripe
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % self.signals.used()
    }

    /// Tells the stages after `cell` and waiting producers that `cell`
    /// advanced.
    #[inline]
    pub(crate) fn notify_progress(&self, cell: &StageCell) {
        // Knob `edge_signal`: signal publish stripe 0 instead of the cell's,
        // as before parking per edge (to show the loom models of per-edge
        // parking catch a progress signalled on the wrong edge).
        if weaken::EDGE_SIGNAL {
            self.strategy.notify(self.signals.bus());
            return;
        }
        self.strategy.notify(&cell.signal);
    }

    /// Wakes every waiter of every signal of the bus (its publish stripes,
    /// each stage's and each subscriber's): for the bus's own events, which
    /// every wait must see.
    pub(crate) fn wake_all(&self) {
        // Each signal as a notifier does: the bus's event was stored before,
        // so by the parking protocol's argument a waiter either sees it or
        // set a flag this notifier sees (and the list is woken).
        self.signals.notify_if_parked();
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
}
