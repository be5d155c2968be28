//! What a stage runs for each event.
//!
//! Closures `FnMut(&E, Sequence, bool)` are handlers; implement
//! [`EventHandler`] on a type for the lifecycle callbacks. A mutating stage
//! implements [`EventHandlerMut`] (or is a `FnMut(&mut E, Sequence, bool)`).

use crate::ring_buffer::BatchMut;
use crate::sequence::Sequence;

/// Handles the events of one stage, on the stage's own thread.
///
/// Closures `FnMut(&E, Sequence, bool)` are handlers; implement the trait on
/// a type for the lifecycle callbacks (`on_start`, `on_batch_start`,
/// `on_shutdown`, `on_timeout`). A mutating stage implements
/// [`EventHandlerMut`] (or is a `FnMut(&mut E, Sequence, bool)`); a fallible
/// one implements [`TryEventHandler`].
///
/// A handler added by value must be `Send` (it moves to the stage thread);
/// one added through a [`factory`](crate::factory) is made on the stage
/// thread and need not be. Every handler form is added with
/// [`handle_events_with`](crate::Builder::handle_events_with) (or
/// `try_handle_events_with` for the fallible ones), whose docs show the
/// grid of forms.
///
/// ```
/// use ringbus::{Blocking, EventHandler, Sequence};
///
/// /// Writes events to a buffer and flushes at the end of each batch, as a
/// /// journal would.
/// struct Journal { buffer: Vec<u64>, flushed: usize }
///
/// impl EventHandler<u64> for Journal {
///     fn on_event(&mut self, event: &u64, _seq: Sequence, end_of_batch: bool) {
///         self.buffer.push(*event);
///         if end_of_batch {
///             self.flushed += self.buffer.len();
///             self.buffer.clear();
///         }
///     }
/// }
///
/// let mut producer = ringbus::single_producer(64, || 0u64, Blocking)
///     .handle_events_with(Journal { buffer: Vec::new(), flushed: 0 })
///     .build();
/// producer.batch_publish(10, |slots| slots.for_each(|e| *e = 1)).unwrap();
/// let mut report = producer.shutdown().unwrap();
/// let journal: Journal = report.take_handler(0).unwrap();
/// assert_eq!(journal.flushed, 10);
/// ```
pub trait EventHandler<E> {
    /// Called for each event in sequence order. `end_of_batch` is true for the
    /// last event currently available, a good moment to flush. (A stage
    /// sharing its thread with others takes at most 16 KiB of events, and at
    /// least 64, per step, and a [`Subscription`](crate::Subscription)'s
    /// handler at most `Subscription::MAX_BATCH`: their batches end there
    /// too.)
    fn on_event(&mut self, event: &E, sequence: Sequence, end_of_batch: bool);

    /// Called before each batch: `batch_size` events follow (for a stage,
    /// and for a subscription's handler; not for the workers of a pool,
    /// which take one event at a time wherever it falls in a batch).
    #[inline]
    fn on_batch_start(&mut self, batch_size: u64) {
        let _ = batch_size;
    }

    /// Called once on the stage thread before the first event.
    fn on_start(&mut self) {}

    /// Called once on the stage thread after the last event, also when the
    /// stage stopped on an `Err` or a halt; not when a panic stopped it (a
    /// panic its policy absorbed, by retrying, skipping or dead-lettering,
    /// does not stop the stage). Such a handler is not handed back either.
    fn on_shutdown(&mut self) {}

    /// Called when the stage has a timeout (`Builder::timeout`) and no event
    /// arrived for that long. `sequence` is the last sequence processed.
    fn on_timeout(&mut self, sequence: Sequence) {
        let _ = sequence;
    }
}

impl<E, F> EventHandler<E> for F
where
    F: FnMut(&E, Sequence, bool),
{
    #[inline]
    fn on_event(&mut self, event: &E, sequence: Sequence, end_of_batch: bool) {
        self(event, sequence, end_of_batch)
    }
}

/// Handles the events of a mutating stage: it gets `&mut E`, and every stage
/// that depends on it sees its writes (LMAX's "unmarshaller" pattern).
///
/// The builder refuses a graph where a mutating stage could run at the same
/// time as any other stage reading the same events.
pub trait EventHandlerMut<E> {
    /// Called for each event in sequence order; see [`EventHandler::on_event`].
    fn on_event(&mut self, event: &mut E, sequence: Sequence, end_of_batch: bool);

    /// See [`EventHandler::on_batch_start`].
    #[inline]
    fn on_batch_start(&mut self, batch_size: u64) {
        let _ = batch_size;
    }

    /// See [`EventHandler::on_start`].
    fn on_start(&mut self) {}

    /// See [`EventHandler::on_shutdown`].
    fn on_shutdown(&mut self) {}

    /// See [`EventHandler::on_timeout`].
    fn on_timeout(&mut self, sequence: Sequence) {
        let _ = sequence;
    }
}

impl<E, F> EventHandlerMut<E> for F
where
    F: FnMut(&mut E, Sequence, bool),
{
    #[inline]
    fn on_event(&mut self, event: &mut E, sequence: Sequence, end_of_batch: bool) {
        self(event, sequence, end_of_batch)
    }
}

/// A handler that can fail: `Err` is routed by the stage's
/// [`FailurePolicy`](crate::FailurePolicy) (retry, dead-letter, skip, halt).
///
/// Closures `FnMut(&E, Sequence, bool) -> Result<(), Err>` are fallible
/// handlers, for any `Err` that converts into a boxed error (an error type,
/// `String`, `&'static str`); add them with
/// [`try_handle_events_with`](crate::Builder::try_handle_events_with).
pub trait TryEventHandler<E> {
    /// The handler's error. The stage keeps it, typed, in the
    /// [`Failure`](crate::Failure) that its policy, dead letters and the
    /// shutdown report see ([`Failure::downcast_ref`](crate::Failure::downcast_ref)
    /// gives the concrete type back).
    type Error: Into<crate::fault::BoxError>;

    /// Called for each event in sequence order; on `Err` the stage's policy
    /// decides whether the same event is offered again.
    ///
    /// # Errors
    /// Whatever the handler could not do; the stage's policy routes it.
    fn on_event(
        &mut self,
        event: &E,
        sequence: Sequence,
        end_of_batch: bool,
    ) -> Result<(), Self::Error>;

    /// See [`EventHandler::on_batch_start`].
    #[inline]
    fn on_batch_start(&mut self, batch_size: u64) {
        let _ = batch_size;
    }

    /// See [`EventHandler::on_start`].
    fn on_start(&mut self) {}

    /// See [`EventHandler::on_shutdown`].
    fn on_shutdown(&mut self) {}

    /// See [`EventHandler::on_timeout`].
    fn on_timeout(&mut self, sequence: Sequence) {
        let _ = sequence;
    }
}

impl<E, F, R> TryEventHandler<E> for F
where
    F: FnMut(&E, Sequence, bool) -> Result<(), R>,
    R: Into<crate::fault::BoxError>,
{
    type Error = R;

    #[inline]
    fn on_event(&mut self, event: &E, sequence: Sequence, end_of_batch: bool) -> Result<(), R> {
        self(event, sequence, end_of_batch)
    }
}

/// A fallible [`EventHandlerMut`]: it gets `&mut E` and may return `Err`,
/// which the stage's [`FailurePolicy`](crate::FailurePolicy) routes. A
/// retried event is offered again with whatever the failed call wrote to it.
/// Closures `FnMut(&mut E, Sequence, bool) -> Result<(), Err>` are fallible
/// mutating handlers.
pub trait TryEventHandlerMut<E> {
    /// See [`TryEventHandler::Error`].
    type Error: Into<crate::fault::BoxError>;

    /// See [`TryEventHandler::on_event`].
    ///
    /// # Errors
    /// Whatever the handler could not do; the stage's policy routes it.
    fn on_event(
        &mut self,
        event: &mut E,
        sequence: Sequence,
        end_of_batch: bool,
    ) -> Result<(), Self::Error>;

    /// See [`EventHandler::on_batch_start`].
    #[inline]
    fn on_batch_start(&mut self, batch_size: u64) {
        let _ = batch_size;
    }

    /// See [`EventHandler::on_start`].
    fn on_start(&mut self) {}

    /// See [`EventHandler::on_shutdown`].
    fn on_shutdown(&mut self) {}

    /// See [`EventHandler::on_timeout`].
    fn on_timeout(&mut self, sequence: Sequence) {
        let _ = sequence;
    }
}

impl<E, F, R> TryEventHandlerMut<E> for F
where
    F: FnMut(&mut E, Sequence, bool) -> Result<(), R>,
    R: Into<crate::fault::BoxError>,
{
    type Error = R;

    #[inline]
    fn on_event(&mut self, event: &mut E, sequence: Sequence, end_of_batch: bool) -> Result<(), R> {
        self(event, sequence, end_of_batch)
    }
}

/// A run of events for a [`BatchEventHandler`]: the events from
/// [`first_sequence`](Batch::first_sequence) on, in sequence order, as at
/// most two slices (two when the run wraps past the end of the ring).
#[derive(Debug)]
pub struct Batch<'a, E> {
    first: Sequence,
    head: &'a [E],
    tail: &'a [E],
}

impl<E> Clone for Batch<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Batch<'_, E> {}

impl<'a, E> Batch<'a, E> {
    pub(crate) fn new(first: Sequence, head: &'a [E], tail: &'a [E]) -> Self {
        Self { first, head, tail }
    }

    /// The sequence of the first event.
    pub fn first_sequence(&self) -> Sequence {
        self.first
    }

    /// The sequence of the last event.
    pub fn last_sequence(&self) -> Sequence {
        self.first + self.len() as Sequence - 1
    }

    /// The number of events (at least 1).
    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// Always false: a batch holds at least one event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The events as two slices in order; the second is empty unless the
    /// run wraps past the end of the ring.
    pub fn as_slices(&self) -> (&'a [E], &'a [E]) {
        (self.head, self.tail)
    }

    /// The events in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a E> + 'a {
        self.head.iter().chain(self.tail)
    }

    /// The events in order, each with its sequence.
    pub fn iter_with_sequence(&self) -> impl Iterator<Item = (Sequence, &'a E)> + 'a {
        let first = self.first;
        self.iter()
            .enumerate()
            .map(move |(i, e)| (first + i as Sequence, e))
    }
}

/// Handles the events of one stage a batch at a time: each call gets every
/// event available to the stage at once (on a thread shared with other
/// stages, at most 16 KiB of them, and at least 64, per call), as slices of the ring
/// ([`Batch`]), so a handler can work in bulk (sum, encode, write) without
/// a call per event. Added with
/// [`handle_events_with`](crate::Builder::handle_events_with); closures
/// `FnMut(Batch<'_, E>)` are batch handlers.
///
/// A stage with any failure policy but a plain halt without retries hands
/// its events over one at a time (batches of one), so that a retry, skip or
/// dead letter is per event. A batch that panics under the plain halt
/// releases none of its events to the stages after it. A halt takes effect
/// between batches.
///
/// ```
/// use ringbus::{Batch, Blocking};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
///
/// let total = Arc::new(AtomicU64::new(0));
/// let sum = Arc::clone(&total);
/// let mut producer = ringbus::single_producer(64, || 0u64, Blocking)
///     .handle_events_with(move |batch: Batch<'_, u64>| {
///         let (head, tail) = batch.as_slices();
///         let s: u64 = head.iter().sum::<u64>() + tail.iter().sum::<u64>();
///         sum.fetch_add(s, Ordering::Relaxed);
///     })
///     .build();
/// for i in 1..=100 {
///     producer.publish(|e| *e = i).unwrap();
/// }
/// producer.shutdown().unwrap();
/// assert_eq!(total.load(Ordering::Relaxed), 5050);
/// ```
pub trait BatchEventHandler<E> {
    /// Called with each batch, in sequence order.
    fn on_batch(&mut self, batch: Batch<'_, E>);

    /// See [`EventHandler::on_start`].
    fn on_start(&mut self) {}

    /// See [`EventHandler::on_shutdown`].
    fn on_shutdown(&mut self) {}

    /// See [`EventHandler::on_timeout`].
    fn on_timeout(&mut self, sequence: Sequence) {
        let _ = sequence;
    }
}

impl<E, F> BatchEventHandler<E> for F
where
    F: FnMut(Batch<'_, E>),
{
    #[inline]
    fn on_batch(&mut self, batch: Batch<'_, E>) {
        self(batch)
    }
}

/// A fallible [`BatchEventHandler`]: it gets every available batch at once
/// and reports the first event it could not handle, so a handler that
/// works in bulk (a network publish with a window of acknowledgements in
/// flight) still fails per event. Added with
/// [`try_handle_events_with`](crate::Builder::try_handle_events_with);
/// closures `FnMut(Batch<'_, E>) -> Result<(), (Sequence, Err)>` are
/// fallible batch handlers.
///
/// `Err((at, error))` says the events before `at` were handled and `at`
/// failed (an `at` outside the batch is taken as its nearest end). The
/// stage's [`FailurePolicy`](crate::FailurePolicy) then decides about
/// `at` alone: a retry calls the handler again, after the backoff, with a
/// batch that starts at `at` (the rest of the batch, and whatever became
/// available since is left for the next call); skip or dead-letter moves
/// past `at` and hands the rest of the batch over in a new call; halt
/// stops the stage with its sequence at `at - 1`. The retry count starts
/// afresh when a call got past the event that failed before. A panic
/// under a policy other than a plain halt is located first: the events of
/// the call that panicked are handed over again one per call, and the
/// policy applies to the event whose call panics (the handler must cope
/// with seeing again the events before it, as after any retry).
///
/// The stage stores its sequence once the call returned, so the stages
/// after it (and the producers) pass an event only after the handler
/// finished with it, as for every other handler.
///
/// ```
/// use ringbus::{Batch, Blocking, FailurePolicy, Sequence};
/// use std::time::Duration;
///
/// let mut flaky = true;
/// let mut producer = ringbus::single_producer(64, || 0u64, Blocking)
///     .on_failure(FailurePolicy::halt().retry(3, Duration::from_millis(1)))
///     .try_handle_events_with(move |batch: Batch<'_, u64>| {
///         for (seq, value) in batch.iter_with_sequence() {
///             if *value == 7 && std::mem::take(&mut flaky) {
///                 return Err((seq, "timed out"));
///             }
///         }
///         Ok(())
///     })
///     .build();
/// for i in 0..10 {
///     producer.publish(|e| *e = i).unwrap();
/// }
/// let report = producer.shutdown().unwrap();
/// assert_eq!((report.stages[0].handled, report.stages[0].retried), (10, 1));
/// ```
pub trait TryBatchEventHandler<E> {
    /// The handler's error, kept typed in the [`Failure`](crate::Failure).
    type Error: Into<crate::fault::BoxError>;

    /// Called with each batch, in sequence order.
    ///
    /// # Errors
    /// `(at, error)`: the first event not handled, and why; the events
    /// before it were handled.
    fn on_batch(&mut self, batch: Batch<'_, E>) -> Result<(), (Sequence, Self::Error)>;

    /// See [`EventHandler::on_start`].
    fn on_start(&mut self) {}

    /// See [`EventHandler::on_shutdown`].
    fn on_shutdown(&mut self) {}

    /// See [`EventHandler::on_timeout`].
    fn on_timeout(&mut self, sequence: Sequence) {
        let _ = sequence;
    }
}

impl<E, F, R> TryBatchEventHandler<E> for F
where
    F: FnMut(Batch<'_, E>) -> Result<(), (Sequence, R)>,
    R: Into<crate::fault::BoxError>,
{
    type Error = R;

    #[inline]
    fn on_batch(&mut self, batch: Batch<'_, E>) -> Result<(), (Sequence, R)> {
        self(batch)
    }
}

/// A mutating [`BatchEventHandler`]: each call gets every available event
/// at once as a [`BatchMut`] (the type a producer's `batch_publish` hands
/// out), yielding `&mut E` in sequence order. Closures
/// `FnMut(BatchMut<'_, E>)` are mutating batch handlers. The builder's rule
/// for mutating stages applies (see [`EventHandlerMut`]).
///
/// As for [`BatchEventHandler`]: under a plain halt a batch that panics
/// releases none of its events to the stages after it (the stage stops);
/// under any other policy the stage hands its events over one per call, so
/// that a retry, skip or dead letter is per event.
pub trait BatchEventHandlerMut<E> {
    /// Called with each batch, in sequence order.
    fn on_batch(&mut self, batch: BatchMut<'_, E>);

    /// See [`EventHandler::on_start`].
    fn on_start(&mut self) {}

    /// See [`EventHandler::on_shutdown`].
    fn on_shutdown(&mut self) {}

    /// See [`EventHandler::on_timeout`].
    fn on_timeout(&mut self, sequence: Sequence) {
        let _ = sequence;
    }
}

impl<E, F> BatchEventHandlerMut<E> for F
where
    F: FnMut(BatchMut<'_, E>),
{
    #[inline]
    fn on_batch(&mut self, batch: BatchMut<'_, E>) {
        self(batch)
    }
}

/// A fallible [`BatchEventHandlerMut`]: `Err((at, error))` says the events
/// before `at` were handled and `at` failed, with the semantics of
/// [`TryBatchEventHandler`] (a retried batch starts at `at`, and `at` keeps
/// whatever the failed call wrote to it). [`BatchMut::next_sequence`] gives
/// the sequence of the event the iterator yields next. A panic is taken as
/// a failure of the event the iterator yielded last (the first of the
/// batch if none): the events before it are handled and never handed over
/// again, so none is written twice. Closures
/// `FnMut(BatchMut<'_, E>) -> Result<(), (Sequence, Err)>` are fallible
/// mutating batch handlers.
pub trait TryBatchEventHandlerMut<E> {
    /// See [`TryBatchEventHandler::Error`].
    type Error: Into<crate::fault::BoxError>;

    /// Called with each batch, in sequence order.
    ///
    /// # Errors
    /// `(at, error)`: the first event not handled, and why.
    fn on_batch(&mut self, batch: BatchMut<'_, E>) -> Result<(), (Sequence, Self::Error)>;

    /// See [`EventHandler::on_start`].
    fn on_start(&mut self) {}

    /// See [`EventHandler::on_shutdown`].
    fn on_shutdown(&mut self) {}

    /// See [`EventHandler::on_timeout`].
    fn on_timeout(&mut self, sequence: Sequence) {
        let _ = sequence;
    }
}

impl<E, F, R> TryBatchEventHandlerMut<E> for F
where
    F: FnMut(BatchMut<'_, E>) -> Result<(), (Sequence, R)>,
    R: Into<crate::fault::BoxError>,
{
    type Error = R;

    #[inline]
    fn on_batch(&mut self, batch: BatchMut<'_, E>) -> Result<(), (Sequence, R)> {
        self(batch)
    }
}

/// Implements the lifecycle callbacks of a one-field wrapper (`Wrapper(h)`)
/// by forwarding them to the wrapped handler: the stage adapters in
/// `consume.rs` and the pointer wrappers in `config.rs`. With
/// `without_batch_start`, `on_batch_start` is left to the caller.
macro_rules! forward_lifecycle {
    () => {
        #[inline]
        fn on_batch_start(&mut self, batch_size: u64) {
            self.0.on_batch_start(batch_size)
        }
        forward_lifecycle!(without_batch_start);
    };
    // For handlers that take whole batches (they have no `on_batch_start`).
    (without_batch_start) => {
        fn on_start(&mut self) {
            self.0.on_start()
        }
        fn on_shutdown(&mut self) {
            self.0.on_shutdown()
        }
        fn on_timeout(&mut self, sequence: Sequence) {
            self.0.on_timeout(sequence)
        }
    };
}
pub(crate) use forward_lifecycle;
