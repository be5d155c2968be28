//! The sequence barrier: how far a stage may read.
//!
//! A stage with no upstream stage reads what the sequencer reports published;
//! a stage with upstream stages reads up to the slowest of them (each of which
//! only ever passes published events). Upstream sequences are loaded with
//! Acquire, so the upstream handlers' work, including a mutating stage's
//! writes to the events, is visible before this stage reads them.

use crate::loom::{Arc, AtomicBool, AtomicU64, Ordering};
use crate::sequence::{minimum, AtomicSequence, Sequence, INITIAL};
use crate::sequencer::Sequencer;

/// What a stage publishes about itself: its sequence (hot, padded) and
/// whether it stopped after a failure (read only on the waiting path).
#[derive(Debug)]
pub(crate) struct StageCell {
    pub(crate) sequence: AtomicSequence,
    failed: AtomicBool,
    /// True once the stage's thread has finished (its last act).
    exited: AtomicBool,
    /// For a work-pool worker: the events it moved past (its share; its
    /// sequence is the pool's progress, not a count). `None` elsewhere.
    work_done: Option<AtomicU64>,
    /// The stages this one reads after (its barrier's), for `gating`.
    upstream: Box<[Arc<StageCell>]>,
}

impl StageCell {
    pub(crate) fn new() -> Self {
        Self::starting_at(INITIAL)
    }

    /// A cell whose consumer has already passed `sequence`.
    pub(crate) fn starting_at(sequence: Sequence) -> Self {
        Self {
            sequence: AtomicSequence::new(sequence),
            failed: AtomicBool::new(false),
            exited: AtomicBool::new(false),
            work_done: None,
            upstream: Box::new([]),
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

    /// The highest sequence `>= next - 1` this stage may read up to.
    #[inline]
    pub(crate) fn available<S: Sequencer>(&self, sequencer: &S, next: Sequence) -> Sequence {
        match &*self.upstream {
            [] => sequencer.highest_published(next),
            [one] => one.sequence.get(),
            many => minimum(many.iter().map(|s| &s.sequence), Sequence::MAX),
        }
    }
}
