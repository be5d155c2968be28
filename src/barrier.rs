//! The sequence barrier: how far a stage may read.
//!
//! A stage with no upstream stage reads what the sequencer reports published;
//! a stage with upstream stages reads up to the slowest of them (each of which
//! only ever passes published events). Upstream sequences are loaded with
//! Acquire, so the upstream handlers' work, including a mutating stage's
//! writes to the events, is visible before this stage reads them.

use crate::loom::Arc;
use crate::sequence::{minimum, AtomicSequence, Sequence};
use crate::sequencer::Sequencer;

#[derive(Debug)]
pub(crate) struct SequenceBarrier {
    upstream: Box<[Arc<AtomicSequence>]>,
}

impl SequenceBarrier {
    pub(crate) fn new(upstream: Vec<Arc<AtomicSequence>>) -> Self {
        Self {
            upstream: upstream.into_boxed_slice(),
        }
    }

    /// The highest sequence `>= next - 1` this stage may read up to.
    #[inline]
    pub(crate) fn available<S: Sequencer>(&self, sequencer: &S, next: Sequence) -> Sequence {
        match &*self.upstream {
            [] => sequencer.highest_published(next),
            [one] => one.get(),
            many => minimum(many.iter().map(|s| &**s), Sequence::MAX),
        }
    }
}
