//! A handler seen through the one interface the stage loop needs
//! ([`Consume`]), and the adapters from each public handler form to it.

use std::cell::Cell;

use crate::fault::Failure;
use crate::handler::{
    forward_lifecycle, Batch, BatchEventHandler, BatchEventHandlerMut, EventHandler,
    EventHandlerMut, TryBatchEventHandler, TryBatchEventHandlerMut, TryEventHandler,
    TryEventHandlerMut,
};
use crate::ring_buffer::RingView;
use crate::sequence::Sequence;

/// A handler seen through the one interface the loop needs.
pub(crate) trait Consume<E> {
    /// True when `consume` can return an error.
    const FALLIBLE: bool;
    fn on_start(&mut self);
    fn on_shutdown(&mut self);
    fn on_timeout(&mut self, sequence: Sequence);
    fn on_batch_start(&mut self, size: u64);
    /// True when the consumer decides how far the stage may release (the
    /// journal: only what is durable). A panic through the loop then
    /// releases nothing beyond the last [`release`](Consume::release).
    const DEFERS_RELEASE: bool = false;
    /// Called before the stage stores `done` as its sequence, which lets the
    /// stages after it (and the producers) past those events. `Err((upto,
    /// failure))`: only events up to `upto` may be released, and the stage
    /// stops with `failure`. Every other consumer releases all it handled.
    /// `ahead`, given when the batch ended normally, lets the consumer read
    /// the events after `done` that are already available to the stage
    /// while it waits (the journal encodes them while its sync runs).
    #[inline(always)]
    fn release(
        &mut self,
        done: Sequence,
        ahead: Option<&Lookahead<'_, E>>,
    ) -> Result<(), (Sequence, Failure)> {
        let _ = (done, ahead);
        Ok(())
    }
    /// # Safety
    /// The caller holds read permission for `sequence` (and write permission
    /// for a mutating stage).
    unsafe fn consume(
        &mut self,
        ring: RingView<'_, E>,
        sequence: Sequence,
        end_of_batch: bool,
    ) -> Result<(), Failure>;
    /// True when the consumer takes a whole available batch in one
    /// [`consume_range`](Consume::consume_range) (the loop then does not
    /// cut it into chunks between looks at the halt flag).
    const WHOLE_BATCH: bool = false;
    /// True when the consumer handles ranges and reports the first event
    /// that failed ([`try_consume_range`](Consume::try_consume_range)); the
    /// loop then applies the stage's policy to that event alone.
    const FALLIBLE_RANGE: bool = false;
    /// After a panic out of [`try_consume_range`](Consume::try_consume_range):
    /// the event the call was at, when the consumer knows it. A mutating
    /// consumer must say (handing the range over again one event per call,
    /// to find the panic, would write the events before it twice); `None`
    /// lets the loop do that.
    #[inline]
    fn panicked_at(&self) -> Option<Sequence> {
        None
    }
    /// Hands `from..=to` over; `Err((at, failure))`: the events before `at`
    /// were handled and `at` failed.
    ///
    /// # Safety
    /// As for [`consume_range`](Consume::consume_range).
    #[inline]
    unsafe fn try_consume_range(
        &mut self,
        ring: RingView<'_, E>,
        from: Sequence,
        to: Sequence,
    ) -> Result<(), (Sequence, Failure)> {
        for sequence in from..=to {
            // SAFETY: the caller's permission, for each sequence of the range.
            unsafe { self.consume(ring, sequence, sequence == to) }.map_err(|f| (sequence, f))?;
        }
        Ok(())
    }
    /// Hands `from..=to` over on the loop's fast path (infallible
    /// consumers, halt policy); `end_of_batch` is true only at `last`.
    ///
    /// # Safety
    /// As for [`consume`](Consume::consume), for every sequence of the
    /// range; the range is at most the ring's capacity.
    #[inline(always)]
    unsafe fn consume_range(
        &mut self,
        ring: RingView<'_, E>,
        from: Sequence,
        to: Sequence,
        last: Sequence,
        progress: &Cell<Sequence>,
    ) where
        Self: Sized,
    {
        // SAFETY: the caller's permission.
        unsafe { consume_each(self, ring, from, to, last, progress) }
    }
}

/// The events after a batch that are already available to its stage, for
/// [`Consume::release`]: published and passed by every upstream stage, and
/// still gated by the stage's own sequence (below them until it releases
/// them), so no producer can write their slots meanwhile.
#[cfg_attr(not(all(feature = "journal", unix)), allow(dead_code))]
pub(crate) struct Lookahead<'a, E> {
    pub(crate) ring: RingView<'a, E>,
    pub(crate) available: &'a dyn Fn() -> Sequence,
}

#[cfg_attr(not(all(feature = "journal", unix)), allow(dead_code))]
impl<E> Lookahead<'_, E> {
    /// The highest sequence available to the stage now.
    pub(crate) fn available(&self) -> Sequence {
        (self.available)()
    }

    /// Reads event `sequence`, one the stage has not released.
    ///
    /// # Safety
    /// `sequence` is above the `done` passed to `release` and at most a
    /// value `available()` returned.
    pub(crate) unsafe fn read<R>(&self, sequence: Sequence, f: impl FnOnce(&E) -> R) -> R {
        // SAFETY: the caller's bounds: published and passed upstream (read
        // permission), and above the stage's stored sequence, which gates
        // the producers (and any stage after this one) below it.
        unsafe { self.ring.read(sequence, f) }
    }
}

/// A stage that reads events.
pub(crate) struct Reader<H>(pub(crate) H);
/// A stage that mutates events.
pub(crate) struct Writer<H>(pub(crate) H);
/// A stage whose handler may return an error.
pub(crate) struct Fallible<H>(pub(crate) H);
/// A stage whose handler takes whole batches.
pub(crate) struct BatchReader<H>(pub(crate) H);
/// A stage whose handler takes whole batches and may fail at an event.
pub(crate) struct TryBatchReader<H>(pub(crate) H);
/// A mutating stage whose handler may return an error.
pub(crate) struct FallibleWriter<H>(pub(crate) H);
/// A mutating stage whose handler takes whole batches.
pub(crate) struct BatchWriter<H>(pub(crate) H);
/// A mutating stage whose handler takes whole batches and may fail at an
/// event; the cell learns how far a call that panicked got (see
/// [`Consume::panicked_at`]).
pub(crate) struct TryBatchWriter<H>(pub(crate) H, Cell<Sequence>);

/// How the builder wraps a handler in its adapter and takes it back.
pub(crate) trait Adapter<H> {
    fn wrap(handler: H) -> Self;
    fn into_inner(self) -> H;
}

macro_rules! one_field_adapter {
    ($($adapter:ident),*) => {$(
        impl<H> Adapter<H> for $adapter<H> {
            fn wrap(handler: H) -> Self {
                Self(handler)
            }
            fn into_inner(self) -> H {
                self.0
            }
        }
    )*};
}
one_field_adapter!(
    Reader,
    Writer,
    Fallible,
    BatchReader,
    TryBatchReader,
    FallibleWriter,
    BatchWriter
);

impl<H> Adapter<H> for TryBatchWriter<H> {
    fn wrap(handler: H) -> Self {
        Self(handler, Cell::new(NOT_DROPPED))
    }
    fn into_inner(self) -> H {
        self.0
    }
}

/// `TryBatchWriter`'s cell before a call: its `BatchMut` was not dropped.
const NOT_DROPPED: Sequence = Sequence::MIN;

impl<E, H: EventHandler<E>> Consume<E> for Reader<H> {
    const FALLIBLE: bool = false;
    forward_lifecycle!();
    #[inline]
    unsafe fn consume(
        &mut self,
        ring: RingView<'_, E>,
        sequence: Sequence,
        eob: bool,
    ) -> Result<(), Failure> {
        // SAFETY: the loop only passes sequences its barrier reported available
        // and its own (gating) sequence has not passed yet.
        unsafe { ring.read(sequence, |e| self.0.on_event(e, sequence, eob)) };
        Ok(())
    }
    #[cfg(not(loom))]
    #[inline(always)]
    unsafe fn consume_range(
        &mut self,
        ring: RingView<'_, E>,
        from: Sequence,
        to: Sequence,
        last: Sequence,
        progress: &Cell<Sequence>,
    ) {
        // SAFETY: the caller's permission for the whole range, which is at
        // most the ring's capacity.
        unsafe {
            ring.read_range(from, to, |head, tail| {
                consume_slices(head, tail, from, to, last, progress, |e, s, eob| {
                    self.0.on_event(e, s, eob)
                })
            })
        }
    }
}

impl<E, H: EventHandlerMut<E>> Consume<E> for Writer<H> {
    const FALLIBLE: bool = false;
    forward_lifecycle!();
    #[inline]
    unsafe fn consume(
        &mut self,
        ring: RingView<'_, E>,
        sequence: Sequence,
        eob: bool,
    ) -> Result<(), Failure> {
        // SAFETY: as for `Reader`, and the builder proved every other stage
        // reading this event is ordered before or after this one (no stage
        // runs concurrently with a mutating stage), so the access is exclusive.
        unsafe { ring.write(sequence, |e| self.0.on_event(e, sequence, eob)) };
        Ok(())
    }
}

impl<E, H: TryEventHandler<E>> Consume<E> for Fallible<H> {
    const FALLIBLE: bool = true;
    forward_lifecycle!();
    #[inline]
    unsafe fn consume(
        &mut self,
        ring: RingView<'_, E>,
        sequence: Sequence,
        eob: bool,
    ) -> Result<(), Failure> {
        // SAFETY: as for `Reader`.
        unsafe { ring.read(sequence, |e| self.0.on_event(e, sequence, eob)) }
            .map_err(Failure::from_error)
    }
}

impl<E, H: BatchEventHandler<E>> Consume<E> for BatchReader<H> {
    const FALLIBLE: bool = false;
    // Under loom the slice view is compiled out and events go one at a
    // time: keep the halt checks between chunks there too.
    const WHOLE_BATCH: bool = !cfg!(loom);

    forward_lifecycle!(without_batch_start);
    #[inline]
    fn on_batch_start(&mut self, _size: u64) {}

    /// One event: a batch of one (the per-event path of a stage whose
    /// policy retries, skips or dead-letters; and every path under loom).
    #[inline]
    unsafe fn consume(
        &mut self,
        ring: RingView<'_, E>,
        sequence: Sequence,
        _eob: bool,
    ) -> Result<(), Failure> {
        // SAFETY: as for `Reader`.
        unsafe {
            ring.read(sequence, |e| {
                self.0
                    .on_batch(Batch::new(sequence, std::slice::from_ref(e), &[]))
            })
        };
        Ok(())
    }

    #[cfg(not(loom))]
    #[inline(always)]
    unsafe fn consume_range(
        &mut self,
        ring: RingView<'_, E>,
        from: Sequence,
        to: Sequence,
        _last: Sequence,
        progress: &Cell<Sequence>,
    ) {
        // SAFETY: the caller's permission for the whole range, which is at
        // most the ring's capacity.
        unsafe {
            ring.read_range(from, to, |head, tail| {
                self.0.on_batch(Batch::new(from, head, tail))
            })
        };
        progress.set(to);
    }
}

impl<E, H: TryBatchEventHandler<E>> Consume<E> for TryBatchReader<H> {
    const FALLIBLE: bool = true;
    const FALLIBLE_RANGE: bool = true;
    // Under loom the slice view is compiled out: batches of one there.
    const WHOLE_BATCH: bool = !cfg!(loom);

    forward_lifecycle!(without_batch_start);
    #[inline]
    fn on_batch_start(&mut self, _size: u64) {}

    /// One event: a batch of one.
    unsafe fn consume(
        &mut self,
        ring: RingView<'_, E>,
        sequence: Sequence,
        _eob: bool,
    ) -> Result<(), Failure> {
        // SAFETY: as for `Reader`.
        unsafe {
            ring.read(sequence, |e| {
                self.0
                    .on_batch(Batch::new(sequence, std::slice::from_ref(e), &[]))
            })
        }
        .map_err(|(_, error)| Failure::from_error(error))
    }

    #[cfg(not(loom))]
    unsafe fn try_consume_range(
        &mut self,
        ring: RingView<'_, E>,
        from: Sequence,
        to: Sequence,
    ) -> Result<(), (Sequence, Failure)> {
        // SAFETY: the caller's permission for the whole range, which is at
        // most the ring's capacity.
        unsafe {
            ring.read_range(from, to, |head, tail| {
                self.0.on_batch(Batch::new(from, head, tail))
            })
        }
        .map_err(|(at, error)| (at.clamp(from, to), Failure::from_error(error)))
    }
}

impl<E, H: TryEventHandlerMut<E>> Consume<E> for FallibleWriter<H> {
    const FALLIBLE: bool = true;
    forward_lifecycle!();
    #[inline]
    unsafe fn consume(
        &mut self,
        ring: RingView<'_, E>,
        sequence: Sequence,
        eob: bool,
    ) -> Result<(), Failure> {
        // SAFETY: as for `Writer`.
        unsafe { ring.write(sequence, |e| self.0.on_event(e, sequence, eob)) }
            .map_err(Failure::from_error)
    }
}

impl<E, H: BatchEventHandlerMut<E>> Consume<E> for BatchWriter<H> {
    const FALLIBLE: bool = false;
    // As for `BatchReader`: batches of one under loom.
    const WHOLE_BATCH: bool = !cfg!(loom);

    forward_lifecycle!(without_batch_start);
    #[inline]
    fn on_batch_start(&mut self, _size: u64) {}

    /// One event: a batch of one.
    #[inline]
    unsafe fn consume(
        &mut self,
        ring: RingView<'_, E>,
        sequence: Sequence,
        _eob: bool,
    ) -> Result<(), Failure> {
        // SAFETY: as for `Writer`, for the one sequence; what the iterator
        // yields stays within the call, as in `consume_range`.
        self.0
            .on_batch(unsafe { ring.slots_mut(sequence, sequence) });
        Ok(())
    }

    #[cfg(not(loom))]
    #[inline(always)]
    unsafe fn consume_range(
        &mut self,
        ring: RingView<'_, E>,
        from: Sequence,
        to: Sequence,
        _last: Sequence,
        progress: &Cell<Sequence>,
    ) {
        // SAFETY: the caller's write permission for the whole range (as for
        // `Writer`), which is at most the ring's capacity; the handler's
        // `on_batch` is generic over the iterator's lifetime, so what it
        // yields stays within the call.
        self.0.on_batch(unsafe { ring.slots_mut(from, to) });
        progress.set(to);
    }
}

impl<E, H: TryBatchEventHandlerMut<E>> Consume<E> for TryBatchWriter<H> {
    const FALLIBLE: bool = true;
    const FALLIBLE_RANGE: bool = true;
    // As for `BatchReader`: batches of one under loom.
    const WHOLE_BATCH: bool = !cfg!(loom);

    forward_lifecycle!(without_batch_start);
    #[inline]
    fn on_batch_start(&mut self, _size: u64) {}

    /// One event: a batch of one.
    unsafe fn consume(
        &mut self,
        ring: RingView<'_, E>,
        sequence: Sequence,
        _eob: bool,
    ) -> Result<(), Failure> {
        // SAFETY: as for `Writer`, for the one sequence; the handler's
        // `on_batch` is generic over the iterator's lifetime, so what it
        // yields stays within the call.
        self.0
            .on_batch(unsafe { ring.slots_mut(sequence, sequence) })
            .map_err(|(_, error)| Failure::from_error(error))
    }

    #[inline]
    fn panicked_at(&self) -> Option<Sequence> {
        // The last event its iterator yielded (the one the handler was
        // at), or the first of the range when it yielded none.
        let yielded = self.1.get();
        (yielded != NOT_DROPPED).then_some(yielded)
    }

    #[cfg(not(loom))]
    unsafe fn try_consume_range(
        &mut self,
        ring: RingView<'_, E>,
        from: Sequence,
        to: Sequence,
    ) -> Result<(), (Sequence, Failure)> {
        self.1.set(NOT_DROPPED);
        // SAFETY: the caller's write permission for the whole range (as for
        // `Writer`), which is at most the ring's capacity; the handler's
        // `on_batch` is generic over the iterator's lifetime, so what it
        // yields stays within the call.
        let slots = unsafe { ring.slots_mut_reporting(from, to, &self.1) };
        self.0
            .on_batch(slots)
            .map_err(|(at, error)| (at.clamp(from, to), Failure::from_error(error)))
    }
}

/// Hands `from..=to` to the handler one event at a time; `end_of_batch` is
/// true only at `last`.
///
/// # Safety
/// As for [`Consume::consume`], for every sequence of the range.
#[inline(always)]
pub(crate) unsafe fn consume_each<E, C: Consume<E>>(
    consumer: &mut C,
    ring: RingView<'_, E>,
    from: Sequence,
    to: Sequence,
    last: Sequence,
    progress: &Cell<Sequence>,
) {
    let mut mark = Mark { progress, at: from };
    // The last event of the batch is handled apart, so the loop body carries
    // no end-of-batch comparison. Infallible consumers only: results are Ok.
    let plain_end = if to == last { to } else { to + 1 };
    for sequence in from..plain_end {
        mark.at = sequence;
        // SAFETY: the caller's permission covers the range.
        let _ = unsafe { consumer.consume(ring, sequence, false) };
    }
    if to == last {
        mark.at = last;
        // SAFETY: as above.
        let _ = unsafe { consumer.consume(ring, last, true) };
    }
    mark.at = to + 1;
}

/// Sets `progress` to the event before `at` when dropped: after the
/// range (`at` is then `to + 1`), or during a panic in the handler at
/// `at`. A local the compiler can keep in a register, where a store to
/// `progress` per event (memory the ring's cells may alias, as far as
/// it knows) cost an instruction per event.
pub(crate) struct Mark<'a> {
    progress: &'a Cell<Sequence>,
    at: Sequence,
}
impl Drop for Mark<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.progress.set(self.at - 1);
    }
}

/// Hands `from..=to`, the events of `head` then `tail` (as `read_range`
/// gives them), to `on_event` with their sequences, walking the slices (no
/// index arithmetic per event); `end_of_batch` is true only at `last`.
/// `progress` ends at `to`, or before the event whose handler panicked.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn consume_slices<E>(
    head: &[E],
    tail: &[E],
    from: Sequence,
    to: Sequence,
    last: Sequence,
    progress: &Cell<Sequence>,
    mut on_event: impl FnMut(&E, Sequence, bool),
) {
    let mut mark = Mark { progress, at: from };
    let ends_batch = to == last;
    // The last event of the batch is handled apart, so the loops carry no
    // end-of-batch comparison.
    let plain = head.len() + tail.len() - usize::from(ends_batch);
    let head_plain = plain.min(head.len());
    for e in &head[..head_plain] {
        on_event(e, mark.at, false);
        mark.at += 1;
    }
    for e in &tail[..plain - head_plain] {
        on_event(e, mark.at, false);
        mark.at += 1;
    }
    if ends_batch {
        let e = tail
            .last()
            .or(head.last())
            .expect("a range of at least one event");
        on_event(e, mark.at, true);
        mark.at += 1;
    }
}
