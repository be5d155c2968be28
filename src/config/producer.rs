//! A producer of either kind, as a description says: [`AnyProducer`], with
//! the producer calls as inherent methods.

use std::time::Duration;

use crate::error::{PublishError, SubscribeError, TryPublishError};
use crate::handler::EventHandler;
use crate::metrics::Metrics;
use crate::poller::Subscription;
use crate::producer::{MultiProducer, Publisher, SingleProducer};
use crate::report::{ShutdownError, ShutdownReport};
use crate::ring_buffer::BatchMut;
use crate::sequence::Sequence;
use crate::wait_strategy::AnyStrategy;

/// The producer of a bus built from a [`BusConfig`](super::BusConfig): single or multi, as the
/// description says. It implements [`Publisher`], so publishing code is the
/// same for both; [`try_clone`](AnyProducer::try_clone) gives more handles
/// of a multi-producer bus.
#[must_use = "dropping the producer shuts the bus down: it drains and joins every stage"]
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyProducer<E: Send + Sync + 'static> {
    /// `producer = "single"`.
    Single(SingleProducer<E, AnyStrategy>),
    /// `producer = "multi"`.
    Multi(MultiProducer<E, AnyStrategy>),
}

impl<E: Send + Sync + 'static> AnyProducer<E> {
    /// Another handle on a multi-producer bus (to publish from another
    /// thread); `None` for a single-producer bus, which has exactly one.
    pub fn try_clone(&self) -> Option<Self> {
        match self {
            Self::Single(_) => None,
            Self::Multi(p) => Some(Self::Multi(p.clone())),
        }
    }
}

/// Calls `$call` on whichever producer `$self` holds.
macro_rules! either {
    ($self:expr, $p:ident => $call:expr) => {
        match $self {
            AnyProducer::Single($p) => $call,
            AnyProducer::Multi($p) => $call,
        }
    };
}

impl<E: Send + Sync + 'static> crate::producer::sealed::Sealed for AnyProducer<E> {
    fn bus_id(&self) -> u64 {
        either!(self, p => crate::producer::sealed::Sealed::bus_id(p))
    }
}

/// The producer calls, on whichever producer it holds (no trait import
/// needed); each is [`Producer`](crate::Producer)'s call of the same name.
impl<E: Send + Sync + 'static> AnyProducer<E> {
    /// Writes the next event with `f` and publishes it, waiting while the
    /// ring is full.
    ///
    /// # Errors
    /// `Halted` or `Closed`; `f` is then not called.
    pub fn publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, PublishError> {
        either!(self, p => p.publish(f))
    }
    /// Like [`publish`](Self::publish), failing at once on a full ring.
    ///
    /// # Errors
    /// `Full`, `Halted` or `Closed`; `f` is then not called.
    pub fn try_publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, TryPublishError> {
        either!(self, p => p.try_publish(f))
    }
    /// Like [`publish`](Self::publish), waiting at most `timeout`.
    ///
    /// # Errors
    /// `Timeout`, `Halted` or `Closed`; `f` is then not called.
    pub fn publish_timeout(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&mut E),
    ) -> Result<Sequence, TryPublishError> {
        either!(self, p => p.publish_timeout(timeout, f))
    }

    /// The old name of [`publish_timeout`](Self::publish_timeout).
    ///
    /// # Errors
    /// As for `publish_timeout`.
    #[deprecated(note = "renamed `publish_timeout`")]
    #[doc(hidden)]
    pub fn try_publish_for(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&mut E),
    ) -> Result<Sequence, TryPublishError> {
        self.publish_timeout(timeout, f)
    }
    /// Claims `n` slots, lets `f` write them, publishes them with one store.
    ///
    /// # Errors
    /// `BatchTooLarge`, `Halted` or `Closed`; `f` is then not called.
    pub fn batch_publish(
        &mut self,
        n: usize,
        f: impl FnOnce(BatchMut<'_, E>),
    ) -> Result<Sequence, PublishError> {
        either!(self, p => p.batch_publish(n, f))
    }
    /// Like [`batch_publish`](Self::batch_publish), failing at once when
    /// fewer than `n` slots are free.
    ///
    /// # Errors
    /// `Full` (with the missing slots), `BatchTooLarge`, `Halted` or
    /// `Closed`; `f` is then not called.
    pub fn try_batch_publish(
        &mut self,
        n: usize,
        f: impl FnOnce(BatchMut<'_, E>),
    ) -> Result<Sequence, TryPublishError> {
        either!(self, p => p.try_batch_publish(n, f))
    }
    /// Slots free right now (a racy snapshot).
    pub fn remaining_capacity(&self) -> usize {
        either!(self, p => p.remaining_capacity())
    }
    /// Ring capacity.
    pub fn capacity(&self) -> usize {
        either!(self, p => p.capacity())
    }
    /// The highest sequence claimed (-1 before the first).
    pub fn cursor(&self) -> Sequence {
        either!(self, p => p.cursor())
    }
    /// The highest sequence every gating consumer has passed.
    pub fn minimum_gating_sequence(&self) -> Sequence {
        either!(self, p => p.minimum_gating_sequence())
    }
    /// A [`Metrics`] handle on the bus.
    pub fn metrics(&self) -> Metrics {
        either!(self, p => p.metrics())
    }
    /// Adds a managed handler at runtime, on its own thread.
    ///
    /// # Errors
    /// A halted or closed bus, a bus with a mutating stage, or a thread the
    /// OS refused to start.
    pub fn subscribe_with<H>(&self, handler: H) -> Result<Subscription<H>, SubscribeError>
    where
        H: EventHandler<E> + Send + 'static,
    {
        either!(self, p => p.subscribe_with(handler))
    }
    /// Stops every stage without draining.
    pub fn halt(&self) {
        either!(self, p => p.halt())
    }
    /// Drains every published event through every stage and joins the
    /// stage threads.
    ///
    /// # Errors
    /// A stage that failed, or a call from a handler of this bus.
    pub fn shutdown(self) -> Result<ShutdownReport, ShutdownError> {
        either!(self, p => p.shutdown())
    }
    /// Like [`shutdown`](Self::shutdown), halting after `timeout`.
    ///
    /// # Errors
    /// `TimedOut`, or as for [`shutdown`](Self::shutdown).
    pub fn shutdown_timeout(self, timeout: Duration) -> Result<ShutdownReport, ShutdownError> {
        either!(self, p => p.shutdown_timeout(timeout))
    }
}

crate::producer::delegate_producer!(impl<E> for AnyProducer<E> where E: Send + Sync + 'static);
