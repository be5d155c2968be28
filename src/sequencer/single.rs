//! The single-producer sequencer: one cursor, written only by the one producer.
//!
//! The producer writes the slots, then stores the cursor with Release; stages
//! load it with Acquire, so every slot up to it is visible to them. No CAS and
//! no per-slot flags: the cursor alone says what is published.

use crate::sequence::{AtomicSequence, Sequence, INITIAL};
use crate::weaken::Weaken;

use super::sealed::Sealed;

/// Sequencer of a bus with exactly one producer (`ringbus::single_producer`).
#[derive(Debug)]
pub struct SingleProducerSequencer {
    cursor: AtomicSequence,
}

impl SingleProducerSequencer {
    /// Publishes everything up to and including `sequence` (Release store).
    #[inline]
    pub(crate) fn publish(&self, sequence: Sequence) {
        self.cursor.set(sequence, Weaken::Cursor);
    }
}

impl Sealed for SingleProducerSequencer {
    fn new(_capacity: usize) -> Self {
        Self {
            cursor: AtomicSequence::new(INITIAL),
        }
    }

    #[inline]
    fn highest_published(&self, _next: Sequence) -> Sequence {
        self.cursor.get()
    }

    #[inline]
    fn claimed(&self) -> Sequence {
        self.cursor.get_relaxed()
    }
}
