//! The sequence barrier: how far a stage may read.
//!
//! A stage with no upstream stage reads what the sequencer reports published;
//! a stage with upstream stages reads up to the slowest of them (each of which
//! only ever passes published events). Upstream sequences are loaded with
//! Acquire, so the upstream handlers' work, including a mutating stage's
//! writes to the events, is visible before this stage reads them.

use crate::loom::{Arc, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::parking::{PublishSignals, Signal, Sources};
use crate::sequence::{minimum, AtomicSequence, Sequence, INITIAL};
use crate::sequencer::{Scan, Sequencer};
use crate::weaken;

/// What a stage publishes about itself: its sequence (hot, padded) and
/// whether it stopped after a failure (read only on the waiting path).
#[derive(Debug)]
pub(crate) struct StageCell {
    pub(crate) sequence: AtomicSequence,
    /// Where the stages after it and the producers wait for its progress
    /// (parking per edge; see `wait_strategy`).
    pub(crate) signal: Signal,
    failed: AtomicBool,
    /// True once the stage's thread has finished (its last act).
    exited: AtomicBool,
    /// For a work-pool worker: the events it moved past (its share; its
    /// sequence is the pool's progress, not a count). `None` elsewhere.
    work_done: Option<AtomicU64>,
    /// The stages this one reads after (its barrier's), for `gating`.
    upstream: Box<[Arc<StageCell>]>,
    /// For a runtime subscriber with a lag limit: its eviction state.
    pub(crate) lag: Option<LagWatch>,
}

/// Nanoseconds since the first call in this process, plus one (0 means
/// "not set" where these are stored).
fn now_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = EPOCH.get_or_init(std::time::Instant::now);
    epoch.elapsed().as_nanos() as u64 + 1
}

/// The ordering of the eviction protocol's two sides: `strong`, unless this
/// build weakens it (`--cfg ringbus_weaken="evict_order"`, to show loom
/// model 15 fails without it).
fn evict_order(strong: Ordering) -> Ordering {
    if weaken::EVICT_ORDER {
        Ordering::Relaxed
    } else {
        strong
    }
}

const IDLE: usize = 0;
const READING: usize = 1;
const EVICTED: usize = 2;

/// A runtime subscriber's lag limit and eviction state.
///
/// The protocol that keeps an evicted subscriber from reading a slot being
/// overwritten: the subscriber moves `IDLE -> READING` (a CAS) before it
/// reads and back (a Release store) after it committed; a producer evicts
/// it only by a CAS `IDLE -> EVICTED` (AcqRel), so only between two reads
/// and after the last one (which the Release/Acquire pair orders before
/// any write the producer then makes), and it never reads again (its CAS
/// fails on `EVICTED`, which is final).
#[derive(Debug)]
pub(crate) struct LagWatch {
    /// How long it may hold a producer on a full ring, in ns.
    hold_ns: u64,
    state: AtomicUsize,
    /// When it was first seen holding a producer (`now_ns`), 0 if not.
    holding_since: AtomicU64,
    /// How far behind the producers it was when evicted.
    behind: AtomicU64,
}

impl LagWatch {
    pub(crate) fn new(hold: std::time::Duration) -> Self {
        Self {
            hold_ns: u64::try_from(hold.as_nanos()).unwrap_or(u64::MAX),
            state: AtomicUsize::new(IDLE),
            holding_since: AtomicU64::new(0),
            behind: AtomicU64::new(0),
        }
    }

    /// The hold limit.
    pub(crate) fn hold(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.hold_ns)
    }

    /// Before reading: false once evicted.
    pub(crate) fn begin_read(&self) -> bool {
        // Acquire: nothing of the read moves before the claim of the slot
        // range; mutual exclusion with `try_evict` is the CAS's.
        self.state
            .compare_exchange(IDLE, READING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// After the read and the commit: it moved, so it holds nobody now.
    pub(crate) fn end_read(&self) {
        // Relaxed: a hint for the eviction clock, read under the gating lock.
        self.holding_since.store(0, Ordering::Relaxed);
        // Release: orders the reads before an eviction's Acquire CAS, and
        // so before the producer's writes to the slots read.
        self.state.store(IDLE, evict_order(Ordering::Release));
    }

    /// A read that a panic unwound: nothing was committed, the subscriber
    /// did not move (its hold clock keeps running), and it may be evicted
    /// again, or read the same events again.
    pub(crate) fn abandon_read(&self) {
        // Release: as in `end_read`, the reads happen before an eviction.
        // A CAS from READING only: it never undoes an eviction.
        let _ = self.state.compare_exchange(
            READING,
            IDLE,
            evict_order(Ordering::Release),
            Ordering::Relaxed,
        );
    }

    /// How far behind it was, once evicted.
    pub(crate) fn evicted(&self) -> Option<u64> {
        // Acquire: pairs with the Release half of the evicting CAS in
        // `try_evict`, which follows its store of `behind`.
        (self.state.load(Ordering::Acquire) == EVICTED).then(|| self.behind.load(Ordering::Relaxed))
    }

    /// True when it has held a producer for its hold limit (starting the
    /// clock the first time it is seen holding one).
    fn held_too_long(&self) -> bool {
        let now = now_ns();
        // Relaxed: the clock is advisory; eviction itself is the CAS below.
        let since =
            match self
                .holding_since
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => now,
                Err(since) => since,
            };
        now.saturating_sub(since) >= self.hold_ns
    }

    /// Evicts it if it is not reading; `behind` is how far behind it is.
    fn try_evict(&self, behind: u64) -> bool {
        // Relaxed: published by the CAS's Release half below.
        self.behind.store(behind, Ordering::Relaxed);
        // AcqRel: the Acquire half pairs with `end_read`'s Release, so the
        // subscriber's last reads happen before the writes the caller makes
        // next; the Release half publishes `behind` to `evicted`'s Acquire.
        self.state
            .compare_exchange(
                IDLE,
                EVICTED,
                evict_order(Ordering::AcqRel),
                Ordering::Relaxed,
            )
            .is_ok()
    }
}

impl StageCell {
    /// Evicts this subscriber if it has a lag limit, holds a producer that
    /// wants to write past `wrap_point + capacity` (its sequence is below
    /// `wrap_point`) for longer than the limit, and is not reading.
    pub(crate) fn evict_if_lagging(&self, wrap_point: Sequence, last: Sequence) -> bool {
        let Some(watch) = &self.lag else {
            return false;
        };
        let sequence = self.sequence.get();
        sequence < wrap_point
            && watch.held_too_long()
            && watch.try_evict((last - sequence).max(0) as u64)
    }
}

impl StageCell {
    pub(crate) fn new() -> Self {
        Self::starting_at(INITIAL)
    }

    /// A cell whose consumer has already passed `sequence`.
    pub(crate) fn starting_at(sequence: Sequence) -> Self {
        Self {
            sequence: AtomicSequence::new(sequence),
            signal: Signal::new(),
            failed: AtomicBool::new(false),
            exited: AtomicBool::new(false),
            work_done: None,
            upstream: Box::new([]),
            lag: None,
        }
    }

    /// A runtime subscriber's cell with a lag limit.
    pub(crate) fn limited(sequence: Sequence, hold: std::time::Duration) -> Self {
        Self {
            lag: Some(LagWatch::new(hold)),
            ..Self::starting_at(sequence)
        }
    }

    /// The cell of a build-time stage that reads after `upstream`; a work
    /// pool's worker (`worker`) counts its share of events.
    pub(crate) fn stage(upstream: Vec<Arc<StageCell>>, worker: bool) -> Self {
        Self {
            work_done: worker.then(|| AtomicU64::new(0)),
            upstream: upstream.into_boxed_slice(),
            ..Self::new()
        }
    }

    /// What this cell holds the producers to (Acquire loads): its sequence,
    /// or, once it stopped after a failure and `skip_failed` is set, what
    /// the stages it read after still hold them to. A failed stage reads no
    /// more, but a healthy stage before it may still be reading slots that
    /// only the failed one, a leaf, protected. `Sequence::MAX`: nothing.
    pub(crate) fn gating(&self, skip_failed: bool) -> Sequence {
        if skip_failed && self.has_failed() {
            self.upstream
                .iter()
                .fold(Sequence::MAX, |min, up| min.min(up.gating(true)))
        } else {
            self.sequence.get()
        }
    }

    /// Calls `f` with the signals of the cells whose progress moves
    /// [`gating`](Self::gating)`(true)`: this cell's, and once it failed,
    /// those of the stages it read after, which then hold the producers
    /// (parking per edge: a producer waiting for room enlists with these).
    pub(crate) fn each_gating_signal(&self, f: &mut dyn FnMut(&Signal)) {
        f(&self.signal);
        if self.has_failed() {
            for up in self.upstream.iter() {
                up.each_gating_signal(f);
            }
        }
    }

    /// Records that the worker has moved past `count` events in all.
    #[inline]
    pub(crate) fn count_work(&self, count: u64) {
        if let Some(done) = &self.work_done {
            // Relaxed: a monitoring count with one writer; it orders nothing.
            done.store(count, Ordering::Relaxed);
        }
    }

    /// Events moved past: a worker's own share, else one past the sequence.
    pub(crate) fn processed(&self) -> u64 {
        match &self.work_done {
            // Relaxed: as in `count_work`.
            Some(done) => done.load(Ordering::Relaxed),
            None => (self.sequence.get_relaxed() + 1).max(0) as u64,
        }
    }

    /// Marks the stage's thread finished.
    pub(crate) fn exit(&self) {
        // Release: pairs with the Acquire in `has_exited`; the joiner that
        // sees the flag sees the thread's report complete.
        self.exited.store(true, Ordering::Release);
    }

    /// True once the stage's thread has finished.
    pub(crate) fn has_exited(&self) -> bool {
        // Acquire: pairs with the Release in `exit`.
        self.exited.load(Ordering::Acquire)
    }

    /// Marks the stage stopped by a failure; stages after it stop too.
    pub(crate) fn fail(&self) {
        // Release: the stage's last sequence store happens before the flag,
        // so a stage that sees the flag (Acquire) sees that progress too.
        self.failed.store(true, Ordering::Release);
    }

    pub(crate) fn has_failed(&self) -> bool {
        // Acquire: pairs with the Release in `fail`.
        self.failed.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
pub(crate) struct SequenceBarrier {
    upstream: Box<[Arc<StageCell>]>,
}

impl SequenceBarrier {
    pub(crate) fn new(upstream: Vec<Arc<StageCell>>) -> Self {
        Self {
            upstream: upstream.into_boxed_slice(),
        }
    }

    /// The stages this one reads after (none: it reads the ring).
    pub(crate) fn upstream(&self) -> &[Arc<StageCell>] {
        &self.upstream
    }

    /// True when a stage this one waits on stopped after a failure.
    pub(crate) fn upstream_failed(&self) -> bool {
        self.upstream.iter().any(|s| s.has_failed())
    }

    /// True when `next` can never become available: a failed upstream stage
    /// stopped below it. Healthy upstream stages may still advance, so a
    /// failure elsewhere is no reason to stop. The flag is read first
    /// (Acquire), so the sequence read after it is the failed stage's last.
    pub(crate) fn blocked_by_failure(&self, next: Sequence) -> bool {
        self.upstream
            .iter()
            .any(|s| s.has_failed() && s.sequence.get() < next)
    }

    /// The highest sequence `>= next - 1` this stage may read up to; a
    /// stage that reads the ring scans it through its `scan`.
    #[inline]
    pub(crate) fn available<S: Sequencer>(
        &self,
        sequencer: &S,
        scan: &mut Scan,
        next: Sequence,
    ) -> Sequence {
        match &*self.upstream {
            [] => scan.published(sequencer, next),
            [one] => one.sequence.get(),
            many => minimum(many.iter().map(|s| &s.sequence), Sequence::MAX),
        }
    }
}

/// What a stage waits on (parking per edge, see `parking`): every publish
/// stripe of the bus when it reads the ring, else its upstream stages'
/// signals.
pub(crate) struct BarrierSources<'a> {
    pub(crate) published: &'a PublishSignals,
    pub(crate) barrier: &'a SequenceBarrier,
}

impl Sources for BarrierSources<'_> {
    fn each(&self, f: &mut dyn FnMut(&Signal)) {
        match self.barrier.upstream() {
            [] => self.published.each(f),
            upstream => upstream.iter().for_each(|cell| f(&cell.signal)),
        }
    }
}
