//! The [`Producer`] trait: what single and multi producers have in common,
//! so code that publishes is written once for both.

use std::time::Duration;

use crate::error::{PublishError, SubscribeError, TryPublishError};
use crate::handler::EventHandler;
use crate::metrics::Metrics;
use crate::poller::Subscription;
use crate::producer::{MultiProducer, SingleProducer};
use crate::report::ShutdownError;
use crate::report::ShutdownReport;
use crate::ring_buffer::BatchMut;
use crate::sequence::Sequence;
use crate::wait_strategy::WaitStrategy;

/// A handle that publishes events into a bus: [`SingleProducer`],
/// [`MultiProducer`], or `config::AnyProducer` (feature `serde`: a bus
/// built from a description). Each method is the inherent method of the same
/// name; see [`SingleProducer`] for what each does, waits for and fails with.
///
/// Methods take `&mut self` because a single producer must be the only one
/// publishing; a [`MultiProducer`] is cloned for more publishers. The trait
/// is for generic code (`fn f(p: &mut impl Publisher<E>)`); it is not object
/// safe (its publishing methods are generic over the closure), and it is
/// sealed: only this crate's producers implement it, so methods can be
/// added without breaking anyone.
///
/// ```
/// use ringbus::{Publisher, Sequence};
///
/// /// Publishes `0..n`, whichever kind of producer it gets.
/// fn count_to<P: Publisher<u64>>(producer: &mut P, n: u64) {
///     for i in 0..n {
///         producer.publish(|e| *e = i).expect("bus halted");
///     }
/// }
///
/// let mut single = ringbus::single_producer(64, || 0u64, ringbus::Blocking)
///     .handle_events_with(|_: &u64, _: Sequence, _: bool| {})
///     .build();
/// let mut multi = ringbus::multi_producer(64, || 0u64, ringbus::Blocking)
///     .handle_events_with(|_: &u64, _: Sequence, _: bool| {})
///     .build();
/// count_to(&mut single, 100);
/// count_to(&mut multi, 100);
/// assert_eq!(single.shutdown().unwrap().stages[0].processed, 100);
/// assert_eq!(multi.shutdown().unwrap().stages[0].processed, 100);
/// ```
pub trait Publisher<E>: sealed::Sealed {
    /// See [`SingleProducer::publish`].
    ///
    /// # Errors
    /// [`PublishError::Halted`] or [`PublishError::Closed`]; `f` is then not
    /// called.
    fn publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, PublishError>;

    /// See [`SingleProducer::try_publish`].
    ///
    /// # Errors
    /// [`TryPublishError::Full`] when the ring has no free slot, or as
    /// [`publish`](Publisher::publish).
    fn try_publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, TryPublishError>;

    /// See [`SingleProducer::publish_timeout`].
    ///
    /// # Errors
    /// [`TryPublishError::Timeout`] when no slot came free in time, or as
    /// [`publish`](Publisher::publish).
    fn publish_timeout(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&mut E),
    ) -> Result<Sequence, TryPublishError>;

    /// The old name of [`publish_timeout`](Publisher::publish_timeout).
    ///
    /// # Errors
    /// As for `publish_timeout`.
    #[deprecated(note = "renamed `publish_timeout`")]
    #[doc(hidden)]
    fn try_publish_for(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&mut E),
    ) -> Result<Sequence, TryPublishError> {
        self.publish_timeout(timeout, f)
    }

    /// See [`SingleProducer::batch_publish`].
    ///
    /// # Errors
    /// [`PublishError::BatchTooLarge`] when `n` exceeds the capacity, or as
    /// [`publish`](Publisher::publish).
    fn batch_publish(
        &mut self,
        n: usize,
        f: impl FnOnce(BatchMut<'_, E>),
    ) -> Result<Sequence, PublishError>;

    /// See [`SingleProducer::try_batch_publish`].
    ///
    /// # Errors
    /// [`TryPublishError::Full`] with the number of missing slots, or as
    /// [`batch_publish`](Publisher::batch_publish).
    fn try_batch_publish(
        &mut self,
        n: usize,
        f: impl FnOnce(BatchMut<'_, E>),
    ) -> Result<Sequence, TryPublishError>;

    /// Slots free right now (a racy snapshot: stages only free more).
    fn remaining_capacity(&self) -> usize;

    /// Ring capacity.
    fn capacity(&self) -> usize;

    /// The highest sequence published or claimed (-1 before the first).
    fn cursor(&self) -> Sequence;

    /// See [`SingleProducer::minimum_gating_sequence`].
    fn minimum_gating_sequence(&self) -> Sequence;

    /// A [`Metrics`] handle on the bus.
    fn metrics(&self) -> Metrics;

    /// See [`SingleProducer::subscribe_with`].
    ///
    /// # Errors
    /// [`SubscribeError`]: a halted or closed bus, a bus with a mutating
    /// stage, or a thread the OS refused to start.
    fn subscribe_with<H>(&self, handler: H) -> Result<Subscription<H>, SubscribeError>
    where
        H: EventHandler<E> + Send + 'static;

    /// Stops every stage without draining.
    fn halt(&self);

    /// Drains every published event through every stage and joins the
    /// stage threads.
    ///
    /// # Errors
    /// See [`SingleProducer::shutdown`].
    fn shutdown(self) -> Result<ShutdownReport, ShutdownError>
    where
        Self: Sized;

    /// Like [`shutdown`](Publisher::shutdown), halting after `timeout`.
    ///
    /// # Errors
    /// See [`SingleProducer::shutdown_timeout`].
    fn shutdown_timeout(self, timeout: Duration) -> Result<ShutdownReport, ShutdownError>
    where
        Self: Sized;
}

pub(crate) mod sealed {
    /// Only the crate's producer handles implement [`Publisher`](super::Publisher).
    pub trait Sealed {
        /// The id of the bus the handle publishes into.
        fn bus_id(&self) -> u64;
    }
}

impl<E: Send + Sync + 'static, W: WaitStrategy> sealed::Sealed for SingleProducer<E, W> {
    fn bus_id(&self) -> u64 {
        self.bus.id
    }
}
impl<E: Send + Sync + 'static, W: WaitStrategy> sealed::Sealed for MultiProducer<E, W> {
    fn bus_id(&self) -> u64 {
        self.bus.id
    }
}

/// Implements [`Publisher`] for a handle by calling its inherent methods
/// (the producers here, `config::AnyProducer` there).
macro_rules! delegate_producer {
    (impl<$($g:ident),*> for $handle:ty where $($bounds:tt)*) => {
        impl<$($g),*> $crate::producer::Publisher<E> for $handle
        where
            $($bounds)*
        {
            #[inline]
            fn publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, PublishError> {
                <$handle>::publish(self, f)
            }
            #[inline]
            fn try_publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, TryPublishError> {
                <$handle>::try_publish(self, f)
            }
            fn publish_timeout(
                &mut self,
                timeout: Duration,
                f: impl FnOnce(&mut E),
            ) -> Result<Sequence, TryPublishError> {
                <$handle>::publish_timeout(self, timeout, f)
            }
            #[inline]
            fn batch_publish(
                &mut self,
                n: usize,
                f: impl FnOnce(BatchMut<'_, E>),
            ) -> Result<Sequence, PublishError> {
                <$handle>::batch_publish(self, n, f)
            }
            fn try_batch_publish(
                &mut self,
                n: usize,
                f: impl FnOnce(BatchMut<'_, E>),
            ) -> Result<Sequence, TryPublishError> {
                <$handle>::try_batch_publish(self, n, f)
            }
            fn remaining_capacity(&self) -> usize {
                <$handle>::remaining_capacity(self)
            }
            fn capacity(&self) -> usize {
                <$handle>::capacity(self)
            }
            fn cursor(&self) -> Sequence {
                <$handle>::cursor(self)
            }
            fn minimum_gating_sequence(&self) -> Sequence {
                <$handle>::minimum_gating_sequence(self)
            }
            fn metrics(&self) -> Metrics {
                <$handle>::metrics(self)
            }
            fn subscribe_with<H>(&self, handler: H) -> Result<Subscription<H>, SubscribeError>
            where
                H: EventHandler<E> + Send + 'static,
            {
                <$handle>::subscribe_with(self, handler)
            }
            fn halt(&self) {
                <$handle>::halt(self)
            }
            fn shutdown(self) -> Result<ShutdownReport, ShutdownError> {
                <$handle>::shutdown(self)
            }
            fn shutdown_timeout(self, timeout: Duration) -> Result<ShutdownReport, ShutdownError> {
                <$handle>::shutdown_timeout(self, timeout)
            }
        }
    };
}

#[cfg(feature = "serde")]
pub(crate) use delegate_producer;

delegate_producer!(impl<E, W> for SingleProducer<E, W> where E: Send + Sync + 'static, W: WaitStrategy);
delegate_producer!(impl<E, W> for MultiProducer<E, W> where E: Send + Sync + 'static, W: WaitStrategy);
