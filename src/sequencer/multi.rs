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
//! Readers only ever start a scan at a batch boundary (sequence 0, one past
//! what an earlier scan reported, or the published floor when they join), and
//! only where no producer can have lapped it: the reader's own gating
//! sequence is below the scan's start, so the marks it finds in the next
//! `capacity` slots are from the lap it scans or earlier ones. A scan
//! started behind the reader's gating sequence could follow a later lap's
//! mark past slots still being written (the work-pool bug of issue #12).

use std::fmt;

use crate::loom::{AtomicI64, Ordering};
use crate::sequence::{AtomicSequence, Sequence, INITIAL};
use crate::weaken;
use crate::weaken::Weaken;

use super::sealed::Sealed;

/// The bit of the claim counter that says the bus is closed to producers.
pub(crate) const CLOSED: i64 = 1 << 62;

/// Sequencer of a bus with any number of producers (`ringbus::multi_producer`).
pub struct MultiProducerSequencer {
    claim: AtomicSequence,
    /// Producers' shared cache of the gating minimum (LMAX's
    /// `gatingSequenceCache`), kept as the highest sequence it lets them
    /// write (the minimum plus the capacity, below [`CLOSED`]), so a claim's
    /// check is one comparison; only a hint, reread when it says "full".
    /// See [`room_cached`](Self::room_cached).
    room_cache: AtomicSequence,
    available: Box<[AtomicI64]>,
    mask: i64,
    /// Everything up to here is published: see `published_floor`. Read and
    /// written only under the bus's gating lock.
    frontier: AtomicSequence,
    /// The highest batch end any reader's scan found published (a
    /// high-water mark the readers raise; see `floor_for_consumers`).
    reached: AtomicSequence,
}

impl fmt::Debug for MultiProducerSequencer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiProducerSequencer")
            .field("claimed", &self.claimed())
            .finish_non_exhaustive()
    }
}

/// Whether `last`, as [`MultiProducerSequencer::claim`] returned it, was
/// claimed after the close (and so is no sequence at all).
#[inline]
pub(crate) fn is_closed_claim(last: Sequence) -> bool {
    last & CLOSED != 0
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
    ///
    /// A claim made after the close returns a sequence with bit [`CLOSED`]
    /// set: above anything [`room_cached`](Self::room_cached) says, so the
    /// caller's room check sends it to its slow path, which must check
    /// [`is_closed_claim`] first. (So a claim's fast path is one
    /// comparison for both.)
    #[inline]
    pub(crate) fn claim(&self, n: i64) -> Sequence {
        self.claim.fetch_add(n) + n - 1
    }

    /// The highest sequence the shared cache lets producers write: a gating
    /// minimum seen earlier plus the capacity (the true one is at least
    /// that); always below [`CLOSED`]. Acquire: pairs with the Release of
    /// [`cache_room`](Self::cache_room), so a producer relying on another's
    /// refresh synchronises with the stages that freed the slots.
    #[inline(always)]
    pub(crate) fn room_cached(&self) -> Sequence {
        self.room_cache.get()
    }

    /// Stores `min_gating`, a gating minimum just read, in the shared cache.
    pub(crate) fn cache_room(&self, min_gating: Sequence) {
        let room = min_gating.saturating_add(self.mask + 1).min(CLOSED - 1);
        self.room_cache.set(room, Weaken::GatingCache);
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
        let index = (first & self.mask) as usize;
        debug_assert!(index < self.available.len());
        // SAFETY: `available` has `mask + 1` marks (`new`) and `index` is
        // masked, so it is in bounds (a checked index cost three
        // instructions a publish).
        let flag = unsafe { self.available.get_unchecked(index) };
        // Release: the event writes of the whole batch happen before the mark;
        // pairs with the Acquire load in `highest_published`.
        flag.store(last, weaken::release(Weaken::Available));
    }

    /// Closes the bus to producers. The call that sets the closed bit gets
    /// `Some(last sequence ever claimed)`; later calls get `None` (claims that
    /// failed after the close still bumped the counter, so only the first
    /// value is the true end).
    pub(crate) fn close(&self) -> Option<Sequence> {
        let claimed = self.claim.fetch_or(CLOSED);
        (claimed & CLOSED == 0).then_some(claimed - 1)
    }

    /// Where a reader joining at runtime starts (see `Sealed::join_point`):
    /// after the published floor, a batch boundary that no producer can lap
    /// (it gates them). The reader sees every event published after that,
    /// which includes every event claimed after it joined.
    ///
    /// Joining further back, at the slowest consumer, is not possible: that
    /// position can lie inside a batch whose mark sits at the batch's first
    /// slot, and that slot may already carry the mark of a later lap (the
    /// consumers that gate it have passed it), so no scan could ever find
    /// where to start. `--cfg ringbus_weaken="join_point"` restores that
    /// search, only to show the loom model catches it.
    pub(crate) fn join_point(&self, slowest: Sequence) -> Sequence {
        if weaken::JOIN_POINT {
            return self.batch_end_around(slowest);
        }
        self.published_floor()
    }

    /// The highest `h` such that everything up to `h` is published, found
    /// by a scan from the last such value; the caller holds the bus's gating
    /// lock, which serialises the scans.
    ///
    /// It bounds every gating minimum (`Sealed::gating_floor`): a slot is
    /// reused only once the event before it in the slot is published, not
    /// merely claimed. Without it, a bus with no consumer (a bus of pollers
    /// only, between subscriptions) would let a producer lap a claim still
    /// being written.
    ///
    /// The frontier is a batch boundary at or above every gating value
    /// handed to producers, so no producer can lap the start of the next
    /// scan, and the scan never follows a later lap's mark. A gating minimum
    /// that comes from consumers needs no scan: every consumer's sequence is
    /// at or below the true floor, and the frontier is raised to the
    /// readers' own scan results instead (`floor_for_consumers`). Only a
    /// minimum with no consumer scans. The frontier must never be moved to
    /// a consumer's sequence: a poll with a limit, or a pool worker, can
    /// stop inside a batch, where no scan could start.
    pub(crate) fn published_floor(&self) -> Sequence {
        let from = self.frontier.get_relaxed() + 1;
        let floor = self.highest_published(from);
        if floor >= from {
            // Relaxed: read and written only under the gating lock. The
            // marks it summarises were acquired by the scan above, so a
            // producer that reuses these slots after this lock (or after the
            // gating cache's Release store) writes after their events.
            self.frontier.set_relaxed(floor);
        }
        floor
    }

    /// The removed join search (loom demonstration only): the end of the
    /// published batch containing `start + 1` if its first-slot mark is still
    /// there, else `start`.
    fn batch_end_around(&self, start: Sequence) -> Sequence {
        let capacity = self.mask + 1;
        let target = start + 1;
        for j in ((target - capacity + 1).max(0)..target).rev() {
            // Acquire: as in `highest_published`.
            let v = self.available[(j & self.mask) as usize].load(Ordering::Acquire);
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
    fn try_new(capacity: usize) -> Option<Self> {
        // A mark per slot: refused memory is a build error, not an abort.
        let mut available = Vec::new();
        available.try_reserve_exact(capacity).ok()?;
        available.extend((0..capacity).map(|_| AtomicI64::new(INITIAL)));
        Some(Self {
            claim: AtomicSequence::new(0),
            room_cache: AtomicSequence::new(INITIAL + capacity as i64),
            available: available.into_boxed_slice(),
            mask: capacity as i64 - 1,
            frontier: AtomicSequence::new(INITIAL),
            reached: AtomicSequence::new(INITIAL),
        })
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

    fn join_point(&self, slowest: Sequence) -> Sequence {
        MultiProducerSequencer::join_point(self, slowest)
    }

    fn is_closed(&self) -> bool {
        MultiProducerSequencer::is_closed(self)
    }

    fn close_claims(&self) -> Option<Sequence> {
        self.close()
    }

    fn reached(&self, end: Sequence) {
        // Knob `reached`: readers leave it stale (the published floor's
        // scan then starts from an old place).
        if !weaken::REACHED {
            self.reached.raise_relaxed(end);
        }
    }

    fn gating_floor(&self) -> Sequence {
        self.published_floor()
    }

    const MULTI: bool = true;

    fn floor_for_consumers(&self) {
        // Every reader raises `reached` in its scan (a lag-limited poller:
        // in `Scan::confirm`, once it knows it was not evicted) before it
        // stores a sequence at or below the scan's end (Release), and every consumer
        // sequence is at or below that of a reader of the ring before it.
        // The caller acquired the consumers' sequences before this load, so
        // it sees `reached` at or above each of them (Relaxed suffices:
        // the raise happens-before the load). The frontier thus stays at or
        // above every gating value handed out, on a batch end, without a
        // scan of its own.
        let reached = self.reached.get_relaxed();
        // Relaxed: the frontier is read and written only under the lock.
        if reached > self.frontier.get_relaxed() {
            self.frontier.set_relaxed(reached);
        }
    }

    fn claimed(&self) -> Sequence {
        // After the close, failed claims inflate the counter: callers that
        // care (`MultiProducer::cursor`) use the bus's final sequence instead.
        (self.claim.get_relaxed() & !CLOSED) - 1
    }
}
