//! The sequence barrier: how far a stage may read.
//!
//! A stage with no upstream stage reads what the sequencer reports published;
//! a stage with upstream stages reads up to the slowest of them (each of which
//! only ever passes published events). Upstream sequences are loaded with
//! Acquire, so the upstream handlers' work, including a mutating stage's
//! writes to the events, is visible before this stage reads them.

use crate::loom::{Arc, AtomicBool, Ordering};
use crate::sequence::{minimum, AtomicSequence, Sequence, INITIAL};
use crate::sequencer::Sequencer;

/// What a stage publishes about itself: its sequence (hot, padded) and
/// whether it stopped after a failure (read only on the waiting path).
#[derive(Debug)]
pub(crate) struct StageCell {
    pub(crate) sequence: AtomicSequence,
    failed: AtomicBool,
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
        }
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
