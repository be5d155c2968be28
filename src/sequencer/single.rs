//! The single-producer sequencer: one cursor, written only by the one producer.
//!
//! The producer writes the slots, then stores the cursor with Release; stages
//! load it with Acquire, so every slot up to it is visible to them. No CAS and
//! no per-slot flags: the cursor alone says what is published.
//!
//! # The producer's limit
//!
//! How far the producer may write without looking at the stages (a gating
//! minimum it saw, plus the capacity) lives here, in an atomic word, not in
//! the producer handle: a bus that refuses producers (a halt, or a failed
//! stage) stores [`REFUSED`] there, so the hot path's one comparison
//! (`last > limit`) is also its halt check, and a publish costs no load of
//! the bus's flags. Only two parties write the word: the producer, which
//! raises it on its slow path with a compare-exchange from the value it
//! read, and the refusal, which swaps in `REFUSED` for good. Both are
//! read-modify-writes of one word, so they are totally ordered and each
//! reads the newest value:
//! a raise that comes after the refusal reads `REFUSED`, not the value it
//! expected, and fails (the producer reports `Halted`); one that comes
//! before it is overwritten. So once the refusal is in the word nothing
//! takes it out, and any publish that starts after the refusal became
//! visible to the producer's thread fails. Relaxed throughout: the word
//! carries no data, only its own value. The refusal is swapped in before
//! the bus's flags are stored (Release) and before a failed stage's flag,
//! so a thread that sees either also sees the refused limit.

use crossbeam_utils::CachePadded;

use crate::loom::{AtomicI64, Ordering};
use crate::sequence::{AtomicSequence, Sequence, INITIAL};
use crate::weaken::{self, Weaken};

/// The producer's limit once the bus refuses producers: below every claim.
pub(crate) const REFUSED: Sequence = Sequence::MIN;

use super::sealed::Sealed;

/// Sequencer of a bus with exactly one producer (`ringbus::single_producer`).
#[derive(Debug)]
pub struct SingleProducerSequencer {
    cursor: AtomicSequence,
    /// How far the producer may write before looking at the stages again,
    /// or [`REFUSED`]; see the module docs.
    limit: CachePadded<AtomicI64>,
}

impl SingleProducerSequencer {
    /// Publishes everything up to and including `sequence` (Release store).
    #[inline]
    pub(crate) fn publish(&self, sequence: Sequence) {
        self.cursor.set(sequence, Weaken::Cursor);
    }

    /// How far the producer may write without looking at the stages, or
    /// [`REFUSED`].
    #[inline(always)]
    pub(crate) fn limit(&self) -> Sequence {
        self.limit.load(Ordering::Relaxed)
    }

    /// The limit's latest value (a read-modify-write reads the last value in
    /// the word's modification order); loom models only.
    #[cfg(loom)]
    pub(crate) fn limit_latest(&self) -> Sequence {
        self.limit.fetch_add(0, Ordering::Relaxed)
    }

    /// Raises the limit from `seen` (what [`limit`](Self::limit) returned)
    /// to `to`; false if the bus refused producers meanwhile (see the module
    /// docs).
    pub(crate) fn raise_limit(&self, seen: Sequence, to: Sequence) -> bool {
        // Knob `single_refuse`: a plain store, which can overwrite a refusal
        // made since `seen` was read.
        if weaken::SINGLE_REFUSE {
            self.limit.store(to, Ordering::Relaxed);
            return true;
        }
        // Relaxed: see the module docs (one word, totally ordered).
        let raised = self
            .limit
            .compare_exchange(seen, to, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();

        #[cfg(loom)]
        if !raised {
            crate::loom::stats::count_lost_raise();
        }
        raised
    }
}

impl Sealed for SingleProducerSequencer {
    fn try_new(capacity: usize) -> Option<Self> {
        Some(Self {
            cursor: AtomicSequence::new(INITIAL),
            limit: CachePadded::new(AtomicI64::new(INITIAL + capacity as i64)),
        })
    }

    fn refuse_producers(&self) {
        // A swap, not a store: both writers' writes are read-modify-writes,
        // each reading the newest value (loom orders a plain store only by
        // what its thread saw, so it could read a raise as newer).
        // Relaxed: see the module docs.
        self.limit.swap(REFUSED, Ordering::Relaxed);
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
