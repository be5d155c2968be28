//! The multi-producer sequencer: `fetch_add` (or CAS) claims and per-slot
//! availability marks, after LMAX's `MultiProducerSequencer`.
//!
//! # Protocol
//!
//! * `claim` counts claimed sequences (so the last claimed is `claim - 1`). Producers reserve `first..=last` with a
//!   Relaxed `fetch_add(n)` (blocking calls) or a CAS (`try_` calls, which
//!   must not reserve what they cannot fill). Bit [`CLOSED`] is set once, by
//!   the close, with an RMW that also fixes the final claimed sequence: a
//!   claim that sees the bit fails, so no claim can slip past the close.
//! * `available[first & mask]` is written by the producer of a batch
//!   `first..=last` after it wrote the events: a Release store of `last`.
//!   Only the batch's first slot is marked; slots inside a batch are skipped
//!   over by the reader, so a batch costs one atomic store, not one per event.
//! * A reader scanning from `next` loads `available[i & mask]` with Acquire.
//!   A value `v >= i` means the batch starting at `i` is published up to
//!   `v`; it continues at `v + 1`. A value `v < i` is left from an earlier
//!   lap (a batch that started at `i - k*capacity` ended before
//!   `i - (k-1)*capacity <= i`), so `i` is not published yet.
//!
//! Readers only ever start a scan at a batch boundary: sequence 0, or one past
//! what an earlier scan reported.

use std::fmt;

use crate::loom::{self, AtomicI64, Ordering, Weaken};
use crate::sequence::{AtomicSequence, Sequence, INITIAL};

use super::sealed::Sealed;

/// The bit of the claim counter that says the bus is closed to producers.
pub(crate) const CLOSED: i64 = 1 << 62;

/// Sequencer of a bus with any number of producers (`ringbus::multi_producer`).
pub struct MultiProducerSequencer {
    claim: AtomicSequence,
    /// Producers' shared cache of the gating minimum (LMAX's
    /// `gatingSequenceCache`); only a hint, reread when it says "full".
    pub(crate) gating_cache: AtomicSequence,
    available: Box<[AtomicI64]>,
    mask: i64,
}

impl fmt::Debug for MultiProducerSequencer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiProducerSequencer")
            .field("claimed", &self.claimed())
            .finish_non_exhaustive()
    }
}

/// Why a claim failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// The bus is closed to producers.
    Closed,
    /// The ring lacks this many free slots.
    Full(usize),
}

impl MultiProducerSequencer {
    /// Reserves the next `n` sequences, capacity or not; returns the last one.
    /// The caller then waits for the slots to be free (gating).
    #[inline]
    pub(crate) fn claim(&self, n: i64) -> Result<Sequence, ClaimError> {
        let claimed_before = self.claim.fetch_add(n);
        if claimed_before & CLOSED != 0 {
            return Err(ClaimError::Closed);
        }
        Ok(claimed_before + n - 1)
    }

    /// Reserves the next `n` sequences only if all of them are free, i.e. not
    /// beyond `free_up_to(last)`, the highest sequence the gating stages let
    /// producers write; never reserves what it cannot fill.
    #[inline]
    pub(crate) fn try_claim(
        &self,
        n: i64,
        mut free_up_to: impl FnMut(Sequence) -> Sequence,
    ) -> Result<Sequence, ClaimError> {
        loop {
            let claimed_before = self.claim.get_relaxed();
            if claimed_before & CLOSED != 0 {
                return Err(ClaimError::Closed);
            }
            let last = claimed_before + n - 1;
            let free = free_up_to(last);
            if free < last {
                return Err(ClaimError::Full((last - free) as usize));
            }
            if self
                .claim
                .compare_exchange(claimed_before, claimed_before + n)
            {
                return Ok(last);
            }
        }
    }

    /// Marks `first..=last` published: one Release store at `first`'s slot.
    #[inline]
    pub(crate) fn publish(&self, first: Sequence, last: Sequence) {
        let flag = &self.available[(first & self.mask) as usize];
        // Release: the event writes of the whole batch happen before the mark;
        // pairs with the Acquire load in `highest_published`.
        flag.store(last, loom::release(Weaken::Available));
    }

    /// Closes the bus to producers. The call that sets the closed bit gets
    /// `Some(last sequence ever claimed)`; later calls get `None` (claims that
    /// failed after the close still bumped the counter, so only the first
    /// value is the true end).
    pub(crate) fn close(&self) -> Option<Sequence> {
        let claimed = self.claim.fetch_or(CLOSED);
        (claimed & CLOSED == 0).then_some(claimed - 1)
    }

    /// For a reader joining at runtime right after `start` (a poller): the
    /// end of the published batch that contains `start + 1` when that batch
    /// began before it, else `start`. The reader can then read up to the
    /// returned value and scan from one past it, a batch boundary.
    ///
    /// A batch is marked only at its first slot, so a reader that starts
    /// inside one must find that slot: the `j` in the last `capacity`
    /// sequences whose mark `v` covers `start + 1` (`j <= start + 1 <= v`) and
    /// belongs to `j`'s lap (`v < j + capacity`; marks of earlier laps are
    /// below `j`, of later ones at least `j + capacity`).
    pub(crate) fn published_batch_end_around(&self, start: Sequence) -> Sequence {
        let capacity = self.mask + 1;
        let target = start + 1;
        let lowest = (target - capacity + 1).max(0);
        for j in (lowest..target).rev() {
            let flag = &self.available[(j & self.mask) as usize];
            // Acquire: as in `highest_published`.
            let v = flag.load(Ordering::Acquire);
            if v >= target && v < j + capacity {
                return v;
            }
        }
        start
    }

    /// True once `close` ran.
    pub(crate) fn is_closed(&self) -> bool {
        self.claim.get_relaxed() & CLOSED != 0
    }
}

impl Sealed for MultiProducerSequencer {
    fn new(capacity: usize) -> Self {
        Self {
            claim: AtomicSequence::new(0),
            gating_cache: AtomicSequence::new(INITIAL),
            available: (0..capacity).map(|_| AtomicI64::new(INITIAL)).collect(),
            mask: capacity as i64 - 1,
        }
    }

    #[inline]
    fn highest_published(&self, next: Sequence) -> Sequence {
        let mut i = next;
        loop {
            let flag = &self.available[(i & self.mask) as usize];
            // Acquire: pairs with the Release in `publish`; the batch's events
            // are visible once its mark is.
            let last = flag.load(Ordering::Acquire);
            if last < i {
                return i - 1;
            }
            i = last + 1;
        }
    }

    fn joining_at(&self, start: Sequence) -> Sequence {
        self.published_batch_end_around(start)
    }

    fn claimed(&self) -> Sequence {
        // After the close, failed claims inflate the counter: callers that
        // care (`MultiProducer::cursor`) use the bus's final sequence instead.
        (self.claim.get_relaxed() & !CLOSED) - 1
    }
}
