//! The preallocated ring of events: the only place slots are accessed.
//!
//! Every slot is filled once by the factory when the ring is built; events are
//! then written and read in place, never moved or reallocated. Who may touch a
//! slot is decided by the sequencer and the barriers, so the accessors here are
//! `unsafe` and state the permission they require.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use crate::loom::UnsafeCell;
use crate::sequence::Sequence;

pub(crate) struct RingBuffer<E> {
    slots: Box<[UnsafeCell<E>]>,
    mask: i64,
}

// SAFETY: the ring owns its events; moving it to another thread moves them,
// which is sound when `E: Send`.
unsafe impl<E: Send> Send for RingBuffer<E> {}
// SAFETY: several threads hold `&RingBuffer` at once. Readers share `&E`
// across threads (needs `E: Sync`); producers and mutating stages get `&mut E`
// on their own thread, which hands the value between threads (needs `E: Send`).
// The sequencer and barriers guarantee a slot is never written while any
// other thread reads or writes it.
unsafe impl<E: Send + Sync> Sync for RingBuffer<E> {}

impl<E> fmt::Debug for RingBuffer<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingBuffer")
            .field("capacity", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<E> RingBuffer<E> {
    /// Builds a ring of `capacity` slots (a power of two, checked by the
    /// caller); `None` when the allocator refuses its memory (the build
    /// reports it instead of aborting the process).
    pub(crate) fn try_new(capacity: usize, mut factory: impl FnMut() -> E) -> Option<Self> {
        debug_assert!(capacity.is_power_of_two());
        let mut slots = Vec::new();
        slots.try_reserve_exact(capacity).ok()?;
        slots.extend((0..capacity).map(|_| UnsafeCell::new(factory())));
        Some(Self {
            slots: slots.into_boxed_slice(),
            mask: capacity as i64 - 1,
        })
    }

    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The ring's base pointer and mask, copied out so hot loops keep them in
    /// registers (loads through `&self` would be repeated after every handler
    /// call, since the ring holds interior-mutable slots).
    #[inline(always)]
    pub(crate) fn view(&self) -> RingView<'_, E> {
        RingView {
            base: self.slots.as_ptr(),
            mask: self.mask,
            _ring: PhantomData,
        }
    }
}

/// A borrowed, `Copy` handle on the ring's slots; see [`RingBuffer::view`].
pub(crate) struct RingView<'a, E> {
    base: *const UnsafeCell<E>,
    mask: i64,
    _ring: PhantomData<&'a RingBuffer<E>>,
}

impl<E> Clone for RingView<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for RingView<'_, E> {}

impl<'a, E> RingView<'a, E> {
    #[inline(always)]
    fn slot(self, sequence: Sequence) -> &'a UnsafeCell<E> {
        let index = (sequence & self.mask) as usize;
        // SAFETY: `base` points at the ring's `mask + 1` slots, borrowed for
        // 'a, and the masked index is below `mask + 1` (a power of two).
        unsafe { &*self.base.add(index) }
    }

    /// Asks the CPU to bring the slot of `sequence` into this core's cache
    /// (x86-64; a no-op elsewhere and under loom and Miri). Not an access: no
    /// permission is needed, and the slot may be mid-write.
    #[inline(always)]
    pub(crate) fn prefetch(self, sequence: Sequence) {
        #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
        {
            let index = (sequence & self.mask) as usize;
            // `wrapping_add` stays in bounds (masked index) without asserting
            // it; the pointer is only a hint and is never dereferenced.
            let ptr = self.base.wrapping_add(index).cast::<i8>();
            // SAFETY: a prefetch is not a memory access: it cannot fault or
            // race, whatever the address and whoever writes the slot.
            unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(ptr) };
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom), not(miri))))]
        let _ = sequence;
    }

    /// Runs `f` on the event at `sequence`, shared.
    ///
    /// # Safety
    /// The caller must have read permission for `sequence`: it was published
    /// (observed with an Acquire load of the cursor, availability flag or
    /// upstream stage sequence covering it) and the caller's own sequence, which
    /// gates the producers, is still below it, so nobody writes it meanwhile.
    #[inline(always)]
    pub(crate) unsafe fn read<R>(self, sequence: Sequence, f: impl FnOnce(&E) -> R) -> R {
        let ptr = self.slot(sequence).get();
        // SAFETY: the caller's read permission excludes every writer.
        f(unsafe { ptr.deref() })
    }

    /// Runs `f` on the event at `sequence`, exclusive.
    ///
    /// # Safety
    /// The caller must have write permission for `sequence`: a producer that
    /// claimed it and has not published it yet, or a mutating stage that every
    /// other reader of the slot is ordered before or after (checked at build).
    #[inline(always)]
    pub(crate) unsafe fn write<R>(self, sequence: Sequence, f: impl FnOnce(&mut E) -> R) -> R {
        let ptr = self.slot(sequence).get_mut();
        // SAFETY: the caller's write permission excludes every other access.
        f(unsafe { ptr.deref() })
    }

    /// Runs `f` on the events of `first..=last`, shared, as at most two
    /// slices in sequence order (the second when the range wraps past the
    /// end of the ring; empty otherwise).
    ///
    /// # Safety
    /// As for [`RingView::read`], for every sequence of the range, and the
    /// range is at most `capacity` long.
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) unsafe fn read_range<R>(
        self,
        first: Sequence,
        last: Sequence,
        f: impl FnOnce(&[E], &[E]) -> R,
    ) -> R {
        debug_assert!(first <= last && last - first <= self.mask);
        let capacity = (self.mask + 1) as usize;
        let start = (first & self.mask) as usize;
        let len = (last - first + 1) as usize;
        let head_len = len.min(capacity - start);
        // The cells are `repr(transparent)` over `E` (ours over std's, std's
        // over `E`), so the slots are laid out as `[E]`.
        let base = self.base.cast::<E>();
        // SAFETY: `start + head_len <= capacity` and `len - head_len <=
        // start`, so both runs lie within the ring's slots; the caller's read
        // permission for the whole range excludes every writer while `f`
        // runs, and the slices do not outlive it.
        let (head, tail) = unsafe {
            (
                std::slice::from_raw_parts(base.add(start), head_len),
                std::slice::from_raw_parts(base, len - head_len),
            )
        };
        f(head, tail)
    }

    /// The events of `first..=last`, exclusive, in order.
    ///
    /// # Safety
    /// As for [`RingView::write`], for every sequence of the range, and the
    /// range is at most `capacity` long. The caller keeps that permission
    /// for as long as the references the iterator yields may be used: the
    /// `'a` it returns is the ring's borrow, longer than that, so the
    /// caller hands the iterator over where its lifetime is generic (a
    /// handler's `on_batch(BatchMut<'_, E>)`, a producer's closure), which
    /// keeps the references within the call.
    #[inline]
    pub(crate) unsafe fn slots_mut(self, first: Sequence, last: Sequence) -> BatchMut<'a, E> {
        debug_assert!(last - first <= self.mask);
        BatchMut {
            ring: self,
            next: first,
            last,
            yielded: None,
            #[cfg(loom)]
            guards: Vec::new(),
        }
    }

    /// As [`slots_mut`](Self::slots_mut), and when the iterator is dropped
    /// (also while a panic unwinds the handler that held it), `yielded` is
    /// set to the last sequence it yielded (`first - 1` for none).
    ///
    /// # Safety
    /// As for [`slots_mut`](Self::slots_mut).
    #[inline]
    #[cfg(not(loom))]
    pub(crate) unsafe fn slots_mut_reporting<'b>(
        self,
        first: Sequence,
        last: Sequence,
        yielded: &'b Cell<Sequence>,
    ) -> BatchMut<'b, E>
    where
        'a: 'b,
    {
        // SAFETY: the caller's permission, as for `slots_mut`.
        let mut slots: BatchMut<'b, E> = unsafe { self.slots_mut(first, last) };
        slots.yielded = Some(yielded);
        slots
    }
}

/// A run of events yielded as `&mut E` in sequence order: the claimed slots
/// of a producer's `batch_publish` (they become visible to the stages only
/// after the closure returns), and the batch a mutating batch handler
/// ([`BatchEventHandlerMut`](crate::BatchEventHandlerMut)) gets. The read-only
/// batch of a stage is [`Batch`](crate::Batch).
pub struct BatchMut<'a, E> {
    ring: RingView<'a, E>,
    next: Sequence,
    last: Sequence,
    /// Where a stage learns how far its handler got (see
    /// `RingView::slots_mut_reporting`); `None` for a producer's batch.
    yielded: Option<&'a Cell<Sequence>>,
    // Loom tracks an access while its pointer guard lives; keep them alive as
    // long as the references we hand out may be used.
    #[cfg(loom)]
    guards: Vec<crate::loom::MutPtr<E>>,
}

impl<E> fmt::Debug for BatchMut<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchMut")
            .field("next", &self.next)
            .field("last", &self.last)
            .finish()
    }
}

impl<E> BatchMut<'_, E> {
    /// The sequence of the next slot this iterator yields.
    pub fn next_sequence(&self) -> Sequence {
        self.next
    }
}

impl<'a, E> Iterator for BatchMut<'a, E> {
    type Item = &'a mut E;

    #[inline]
    fn next(&mut self) -> Option<&'a mut E> {
        if self.next > self.last {
            return None;
        }
        let ptr = self.ring.slot(self.next).get_mut();
        self.next += 1;
        // SAFETY: `slots_mut`'s caller holds write permission for the whole
        // range while the references may be used (they stay within the call
        // the iterator was handed to; see `slots_mut`), and each sequence is
        // yielded once, so the `&mut` references never alias.
        let event: &'a mut E = unsafe { &mut *(ptr.deref() as *mut E) };
        #[cfg(loom)]
        self.guards.push(ptr);
        Some(event)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.last - self.next + 1).max(0) as usize;
        (n, Some(n))
    }
}

impl<E> ExactSizeIterator for BatchMut<'_, E> {}

impl<E> Drop for BatchMut<'_, E> {
    #[inline]
    fn drop(&mut self) {
        if let Some(yielded) = self.yielded {
            yielded.set(self.next - 1);
        }
    }
}

/// The old name of [`BatchMut`].
#[deprecated(note = "renamed `BatchMut`, the producer's and the mutating stage's batch")]
pub type Slots<'a, E> = BatchMut<'a, E>;
