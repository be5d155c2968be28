//! Claim and publish: how producers hand events to the stages.
//!
//! A sequencer owns the producer side's atomics. Its consumer-side question is
//! [`Sealed::highest_published`]: starting from `next`, how far is every event
//! published? The producer-side state (next sequence to claim, cached gating
//! minimum) lives in the producer handles, see `producer.rs`.

pub(crate) mod multi;
mod single;

pub use multi::MultiProducerSequencer;
pub use single::SingleProducerSequencer;

use std::fmt;

use crate::sequence::Sequence;

pub(crate) mod sealed {
    use super::*;

    /// The sequencer's machinery, sealed so the protocol can evolve.
    pub trait Sealed: Send + Sync + fmt::Debug + 'static {
        /// A sequencer for a ring of `capacity` slots.
        fn new(capacity: usize) -> Self
        where
            Self: Sized;

        /// The highest `h >= next - 1` such that every event in `next..=h`
        /// is published; all of them are visible to the caller (Acquire).
        ///
        /// `next` must be the first sequence after a range this sequencer
        /// reported before (or 0): the multi-producer marks whole batches at
        /// their first slot.
        fn highest_published(&self, next: Sequence) -> Sequence;

        /// The highest sequence claimed so far (published or not).
        fn claimed(&self) -> Sequence;

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

/// Claims and publishes sequences: [`SingleProducerSequencer`] (one producer,
/// no read-modify-write) or [`MultiProducerSequencer`] (any number of
/// producers, `fetch_add` claims and per-slot availability).
pub trait Sequencer: sealed::Sealed {}

impl Sequencer for SingleProducerSequencer {}
impl Sequencer for MultiProducerSequencer {}
