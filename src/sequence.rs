//! The padded atomic cursor every producer and stage publishes its progress in.
//!
//! A [`Sequence`] is the position of an event in the unbounded stream of
//! events: the first event published has sequence 0. The slot it occupies is
//! `sequence & (capacity - 1)`. Cursors start at [`INITIAL`] (-1: nothing yet).

use crossbeam_utils::CachePadded;

use crate::loom::{AtomicI64, Ordering};
use crate::weaken::Weaken;

/// Position of an event in the stream: 0 for the first event published.
pub type Sequence = i64;

/// The value of a cursor before anything was published or processed.
pub const INITIAL: Sequence = -1;

/// An atomic sequence cursor on its own cache line.
///
/// A stage's sequence and the single producer's cursor have exactly one
/// writer; the multi-producer's claim counter and gating cache are written by
/// every producer. Progress is stored with `Release` after the work the value
/// stands for; readers load with `Acquire` before touching the slots it covers.
#[derive(Debug)]
pub(crate) struct AtomicSequence(CachePadded<AtomicI64>);

impl AtomicSequence {
    pub(crate) fn new(value: Sequence) -> Self {
        Self(CachePadded::new(AtomicI64::new(value)))
    }

    /// Acquire load: everything the writer did before its `set` is visible.
    #[inline]
    pub(crate) fn get(&self) -> Sequence {
        // Acquire: pairs with the Release in `set`, so the slots (or the
        // upstream stage's writes) up to this value are visible to us.
        self.0.load(Ordering::Acquire)
    }

    /// A load that orders nothing; for the cursor's own writer and for metrics.
    #[inline]
    pub(crate) fn get_relaxed(&self) -> Sequence {
        self.0.load(Ordering::Relaxed)
    }

    /// Release store: publishes all work done up to `value`.
    ///
    /// `weaken` names this store for `--cfg ringbus_weaken="<name>"`, which
    /// makes it Relaxed to show the loom models catch the missing ordering.
    #[inline]
    pub(crate) fn set(&self, value: Sequence, weaken: Weaken) {
        // Release: the slot writes (producer) or the finished handling
        // (stage) before this store are visible to whoever acquires it.
        self.0.store(value, crate::weaken::release(weaken));
    }

    /// A store that orders nothing; for values guarded by a lock.
    #[inline]
    pub(crate) fn set_relaxed(&self, value: Sequence) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Atomic add returning the previous value; used by the multi-producer claim.
    #[inline]
    pub(crate) fn fetch_add(&self, n: i64) -> Sequence {
        // Relaxed: the claim only reserves numbers; slot visibility is carried
        // by the per-slot availability flags, not by the claim cursor.
        self.0.fetch_add(n, Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn compare_exchange(&self, current: Sequence, new: Sequence) -> bool {
        // Relaxed: as for `fetch_add`, the claim cursor carries no data.
        self.0
            .compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Raises the value to `value` if it is higher (a high-water mark).
    #[inline]
    pub(crate) fn raise_relaxed(&self, value: Sequence) {
        // Relaxed: the multi-producer's `reached` mark; its readers are
        // ordered after the writer's later Release stores (see there).
        if value > self.0.load(Ordering::Relaxed) {
            self.0.fetch_max(value, Ordering::Relaxed);
        }
    }

    /// Atomic or returning the previous value; sets the multi-producer's closed bit.
    pub(crate) fn fetch_or(&self, bits: i64) -> Sequence {
        // Relaxed: claims and the close are RMWs of this one counter, so the
        // close sees every earlier claim and every later claim sees the bit;
        // nothing else is published through it.
        self.0.fetch_or(bits, Ordering::Relaxed)
    }
}

/// The minimum of `default` and all `sequences` (Acquire loads).
#[inline]
pub(crate) fn minimum<'a>(
    sequences: impl IntoIterator<Item = &'a AtomicSequence>,
    default: Sequence,
) -> Sequence {
    sequences
        .into_iter()
        .fold(default, |min, s| min.min(s.get()))
}
