//! Claim and publish: how producers hand events to the stages.
//!
//! A sequencer owns the producer side's atomics. Its consumer-side question is
//! [`Sealed::highest_published`]: starting from `next`, how far is every event
//! published? The producer-side state lives here too: the single
//! producer's room limit (`single.rs`), the multi producers' claim counter
//! and shared room cache (`multi.rs`).

pub(crate) mod multi;
pub(crate) mod single;

pub use multi::MultiProducerSequencer;
pub use single::SingleProducerSequencer;

use std::fmt;

use crate::sequence::Sequence;
use crate::weaken;

pub(crate) mod sealed {
    use super::*;

    /// The sequencer's machinery, sealed so the protocol can evolve.
    pub trait Sealed: Send + Sync + fmt::Debug + 'static {
        /// A sequencer for a ring of `capacity` slots; `None` when the
        /// allocator refuses its memory (a multi producer's marks).
        fn try_new(capacity: usize) -> Option<Self>
        where
            Self: Sized;

        /// The highest `h >= next - 1` such that every event in `next..=h`
        /// is published; all of them are visible to the caller (Acquire).
        ///
        /// `next` must be the first sequence after a range this sequencer
        /// reported before, or 0, or one past a join point: the
        /// multi-producer marks whole batches at their first slot. Readers
        /// call it only through [`Scan`], which keeps that so (and the
        /// published floor's own scan, from its record).
        fn highest_published(&self, next: Sequence) -> Sequence;

        /// Records that a reader that still gates found everything up to
        /// `end` published (see `MultiProducerSequencer::floor_for_consumers`;
        /// a lag-limited subscriber, which may have been evicted during its
        /// scan, confirms first that it was not).
        fn reached(&self, _end: Sequence) {}

        /// The highest sequence claimed so far (published or not).
        fn claimed(&self) -> Sequence;

        /// True once the producers closed the bus (a multi producer's
        /// claim counter says so; a single producer's handle knows itself).
        fn is_closed(&self) -> bool {
            false
        }

        /// The bus refuses producers from now on (a halt, or a failed
        /// stage): the single producer's limit says so (see
        /// `sequencer/single.rs`); others read the bus's flag.
        fn refuse_producers(&self) {}

        /// Closes the bus to producers: the last sequence ever claimed, for
        /// the call that closed it; `None` for later calls of a multi
        /// producer (a single producer has one handle and answers always).
        fn close_claims(&self) -> Option<Sequence> {
            Some(self.claimed())
        }

        /// The highest sequence up to which producers may count every slot
        /// as consumed whatever the gating stages say (`Sequence::MAX`: no
        /// such bound). Called only under the bus's gating lock, for a
        /// gating minimum with no consumer in it; see
        /// `MultiProducerSequencer::published_floor`.
        fn gating_floor(&self) -> Sequence {
            Sequence::MAX
        }

        /// Several producers share it: another producer's publish can make
        /// room (it moves the published floor, `gating_floor`).
        const MULTI: bool = false;

        /// A gating minimum taken from the consumers is about to be handed
        /// to producers: keep what `gating_floor` scans from at or above it.
        /// Called only under the bus's gating lock, after the consumers'
        /// sequences were loaded.
        fn floor_for_consumers(&self) {}

        /// Where a reader joining at runtime starts: the sequence it has
        /// "passed", given `slowest`, the slowest gating consumer's sequence
        /// (or what was claimed, when there is none). Called under the
        /// gating lock; see `Bus::subscribe`.
        ///
        /// The single producer's cursor can be read from anywhere, so the
        /// reader joins at `slowest` and also gets what the slowest consumer
        /// has not finished. A multi-producer reader must start its scans
        /// at a batch boundary: see `MultiProducerSequencer::join_point`.
        fn join_point(&self, slowest: Sequence) -> Sequence {
            slowest
        }
    }
}

/// A reader's place in what the producers published: the highest sequence
/// its scans found published, from which the next scan starts.
///
/// The multi producer marks a batch only at its first slot, so a scan must
/// start at a batch boundary that no producer can lap (see
/// `sequencer/multi.rs`). A `Scan` can only be made at such a boundary (the
/// start of the ring, or a reader's join point) and only moved by a scan, so
/// every reader starts each scan one past what an earlier scan found, never
/// at a position of its own: a reader that hands over part of what it
/// found (a step capped in size, a poll with a limit, a pool worker) asks
/// again for a position inside the range, and gets the range's end without a
/// scan. Issue #24: a shared-thread stage that rescanned from its own cut
/// lost the rest of a batch that straddled the cut.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scan {
    known: Sequence,
}

impl Scan {
    /// A scan starting after `boundary`: `INITIAL`, or the position a reader
    /// joined at (`Sealed::join_point`), a batch boundary. The reader gates
    /// the producers at or below `boundary` from then on.
    pub(crate) fn after(boundary: Sequence) -> Self {
        Self { known: boundary }
    }

    /// The highest sequence `>= next - 1` whose events are all published
    /// and visible (Acquire), scanning from one past what this scan found
    /// before when that is below `next`. The caller's own gating sequence
    /// must be at most what this scan found (so no producer can lap where
    /// the next scan starts).
    #[inline]
    pub(crate) fn published<S: Sequencer>(&mut self, sequencer: &S, next: Sequence) -> Sequence {
        if self.known < next {
            let found = sequencer.highest_published(self.known + 1);
            if found > self.known {
                sequencer.reached(found);
            }
            self.known = found;
        }
        self.known
    }

    /// As [`published`](Self::published), for a reader that may stop gating
    /// at any moment (a lag-limited subscriber, evicted by a producer): the
    /// scan records nothing in the sequencer; once the reader knows it still
    /// gates, it calls [`confirm`](Self::confirm). An evicted reader's scan
    /// may follow a later lap's marks past a claim still being written, so
    /// what it found must never reach the producers' frontier.
    #[inline]
    pub(crate) fn published_unconfirmed<S: Sequencer>(
        &mut self,
        sequencer: &S,
        next: Sequence,
    ) -> Sequence {
        if self.known < next {
            let found = sequencer.highest_published(self.known + 1);
            if weaken::UNCONFIRMED_SCAN {
                // Only to show the loom model fails when an evicted
                // reader's scan raises the frontier.
                sequencer.reached(found);
            }
            self.known = found;
        }
        self.known
    }

    /// The reader still gates (it holds the read state an eviction needs
    /// to take): what its scans found may now bound the producers.
    pub(crate) fn confirm<S: Sequencer>(self, sequencer: &S) {
        sequencer.reached(self.known);
    }
}

/// Claims and publishes sequences: [`SingleProducerSequencer`] (one producer,
/// no read-modify-write) or [`MultiProducerSequencer`] (any number of
/// producers, `fetch_add` claims and per-slot availability).
pub trait Sequencer: sealed::Sealed {}

impl Sequencer for SingleProducerSequencer {}
impl Sequencer for MultiProducerSequencer {}
