//! What a stage runs for each event.
//!
//! Closures `FnMut(&E, Sequence, bool)` are handlers; implement
//! [`EventHandler`] on a type for the lifecycle callbacks. A mutating stage
//! implements [`EventHandlerMut`] (or is a `FnMut(&mut E, Sequence, bool)`).

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
/// one added with a factory (`handle_events_with_factory`) is made on the
/// stage thread and need not be.
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
    /// last event currently available, a good moment to flush.
    fn on_event(&mut self, event: &E, sequence: Sequence, end_of_batch: bool);

    /// Called before each batch: `batch_size` events follow.
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

/// Implements the lifecycle callbacks of a one-field wrapper (`Wrapper(h)`)
/// by forwarding them to the wrapped handler: the stage adapters in
/// `processor.rs` and the pointer wrappers in `config.rs`.
macro_rules! forward_lifecycle {
    () => {
        #[inline]
        fn on_batch_start(&mut self, batch_size: u64) {
            self.0.on_batch_start(batch_size)
        }
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
