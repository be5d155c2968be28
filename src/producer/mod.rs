//! The producer handle: claim slots, write events in place, publish.
//!
//! One type, [`Producer`], generic over the sequencer; what it shares is
//! here, each sequencer's claim and publish paths in `single.rs` and
//! `multi.rs`. Every publish call writes through a closure, so a claimed
//! slot is always published (or, for the single producer, never exposed)
//! even if the closure panics: a stage never waits on a slot nobody will
//! publish.

use std::fmt;
use std::time::{Duration, Instant};

mod api;
#[cfg(feature = "async")]
mod awaiting;
mod multi;
mod single;

pub use api::Publisher;
#[cfg(feature = "serde")]
pub(crate) use api::{delegate_producer, sealed};

use crate::bus::Bus;
use crate::error::{PublishError, SubscribeError, TryPublishError};
use crate::handler::EventHandler;
use crate::loom::{Arc, Ordering};
use crate::metrics::Metrics;
use crate::parking::Interrupt;
use crate::poller::{EventPoller, Subscription};
use crate::report::ShutdownError;
use crate::report::ShutdownReport;
use crate::sequence::Sequence;
use crate::sequencer::{MultiProducerSequencer, Sequencer, SingleProducerSequencer};
use crate::wait_strategy::{deadline_after, WaitStrategy};

/// How long a claim may wait for free slots.
#[derive(Clone, Copy)]
pub(super) enum Wait {
    Never,
    Forever,
    Until(Instant),
}

impl Wait {
    /// Until `timeout` from now; forever if that is beyond `Instant`'s range.
    pub(super) fn after(timeout: Duration) -> Self {
        deadline_after(timeout).map_or(Wait::Forever, Wait::Until)
    }

    pub(super) fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Until(d) => Some(d),
            _ => None,
        }
    }
}

impl From<Interrupt> for TryPublishError {
    fn from(i: Interrupt) -> Self {
        match i {
            Interrupt::Halted => Self::Halted,
            Interrupt::Closed => Self::Closed,
            Interrupt::Timeout => Self::Timeout,
            // A producer's wait never ends with a subscriber's eviction.
            Interrupt::Lagged(_) => Self::Halted,
        }
    }
}

/// Narrows the error of a claim that waits without a deadline, which can
/// neither find the ring full nor time out.
pub(super) fn waited(e: TryPublishError) -> PublishError {
    match e {
        TryPublishError::Closed => PublishError::Closed,
        TryPublishError::BatchTooLarge {
            requested,
            capacity,
        } => PublishError::BatchTooLarge {
            requested,
            capacity,
        },
        TryPublishError::Halted | TryPublishError::Full { .. } | TryPublishError::Timeout => {
            PublishError::Halted
        }
    }
}

pub(super) fn check_batch<E, S, W>(bus: &Bus<E, S, W>, n: usize) -> Result<(), TryPublishError> {
    let capacity = bus.ring.capacity();
    if n > capacity {
        return Err(TryPublishError::BatchTooLarge {
            requested: n,
            capacity,
        });
    }
    Ok(())
}

/// A producer handle: claims slots, writes events in place and publishes
/// them. [`single_producer`](crate::single_producer) builds a bus with one
/// ([`SingleProducer`]), [`multi_producer`](crate::multi_producer) with
/// handles that clone ([`MultiProducer`]); everything but the publishing
/// calls' receivers is the same for both.
///
/// * **One producer** (`S` = [`SingleProducerSequencer`]): claims need no
///   atomic read-modify-write, only this producer moves the cursor, and it
///   keeps a cached minimum of the gating stages, rereading their sequences
///   only when the cache says the ring may be full. Publishing takes `&mut
///   self`; the handle is `Send + Sync` but not `Clone`.
/// * **Many producers** (`S` = [`MultiProducerSequencer`]): `Clone + Send +
///   Sync`, each clone publishing concurrently through `&self`. Blocking
///   claims take sequences with one `fetch_add`; `try_` claims use a CAS so
///   they never reserve a slot they cannot fill. Each batch is marked
///   published with one store, and stages read only fully written events.
///
/// Dropping the last handle (or [`shutdown`](Producer::shutdown) on any)
/// drains every published event through every stage and joins the stage
/// threads. A clone kept inside a handler of the same bus keeps the bus
/// open (its stages never see the end); shut such a bus down explicitly.
///
/// ```
/// use ringbus::{Blocking, Sequence};
///
/// let mut producer = ringbus::single_producer(8, || 0u64, Blocking)
///     .handle_events_with(|e: &u64, seq: Sequence, _eob: bool| assert_eq!(*e, seq as u64 * 10))
///     .build();
/// let publisher = std::thread::spawn(move || {
///     for i in 0..100 {
///         producer.publish(|e| *e = i * 10).unwrap();
///     }
///     producer // dropping it here would shut the bus down as well
/// });
/// let report = publisher.join().unwrap().shutdown().unwrap();
/// assert_eq!(report.stages[0].processed, 100);
/// ```
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use ringbus::{Blocking, Sequence};
///
/// let sum = Arc::new(AtomicU64::new(0));
/// let s = Arc::clone(&sum);
/// let producer = ringbus::multi_producer(64, || 0u64, Blocking)
///     .handle_events_with(move |e: &u64, _: Sequence, _: bool| {
///         s.fetch_add(*e, Ordering::Relaxed);
///     })
///     .build();
/// let threads: Vec<_> = (0..4)
///     .map(|_| {
///         let p = producer.clone();
///         std::thread::spawn(move || for i in 1..=100 { p.publish(|e| *e = i).unwrap(); })
///     })
///     .collect();
/// threads.into_iter().for_each(|t| t.join().unwrap());
/// producer.shutdown().unwrap(); // or drop the last clone
/// assert_eq!(sum.load(Ordering::Relaxed), 4 * 5050);
/// ```
#[must_use = "dropping the last producer handle shuts the bus down: it drains and joins every stage"]
pub struct Producer<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    pub(crate) bus: Arc<Bus<E, S, W>>,
    /// `shutdown` ran on this handle: its drop has nothing left to do.
    shut_down: bool,
    /// The publish signal this handle notifies (`PublishSignals`): clones
    /// of a multi producer take different ones, so their publishes do not
    /// share one flag's line.
    stripe: usize,
}

/// The producer of a bus with one producer: see [`Producer`].
pub type SingleProducer<E, W> = Producer<E, SingleProducerSequencer, W>;

/// A producer handle of a bus with many producers (`Clone`): see
/// [`Producer`].
pub type MultiProducer<E, W> = Producer<E, MultiProducerSequencer, W>;

impl<E, S, W> Producer<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    pub(crate) fn new(bus: Arc<Bus<E, S, W>>) -> Self {
        Self {
            stripe: bus.take_stripe(),
            bus,
            shut_down: false,
        }
    }

    /// Slots free right now (a racy snapshot: stages only free more).
    pub fn remaining_capacity(&self) -> usize {
        let claimed = self.cursor();
        let min = self.bus.min_gating(claimed);
        (self.bus.capacity() - (claimed - min)).max(0) as usize
    }

    /// Ring capacity.
    pub fn capacity(&self) -> usize {
        self.bus.ring.capacity()
    }

    /// A handle that takes [`MetricsSnapshot`](crate::MetricsSnapshot)s of
    /// this bus (cursor, remaining capacity, each stage's sequence and lag)
    /// from any thread, at no cost to the event path.
    pub fn metrics(&self) -> Metrics {
        crate::bus::metrics(&self.bus)
    }

    /// Adds an [`EventPoller`] at runtime, without stopping or slowing the
    /// producers. It gates them until dropped, and sees every event
    /// claimed after this returns: on a single-producer bus also those the
    /// slowest consumer had not finished yet; on a multi-producer bus it
    /// starts after the highest sequence up to which everything was
    /// published, so it also sees claims still being written.
    ///
    /// ```
    /// # use ringbus::{Blocking, Sequence};
    /// let mut producer = ringbus::single_producer(16, || 0u64, Blocking)
    ///     .handle_events_with(|_: &u64, _: Sequence, _: bool| {})
    ///     .build();
    /// let mut poller = producer.subscribe().unwrap();
    /// producer.publish(|e| *e = 7).unwrap();
    /// let mut seen = Vec::new();
    /// poller.poll_wait(usize::MAX, |e, seq, _eob| seen.push((*e, seq))).unwrap();
    /// assert_eq!(seen, [(7, 0)]);
    /// ```
    ///
    /// # Errors
    /// [`SubscribeError::Halted`] or [`SubscribeError::Closed`] for a bus
    /// that stopped, [`SubscribeError::MutatingStages`] for a bus with a
    /// mutating stage (a poller could read an event while it is written).
    pub fn subscribe(&self) -> Result<EventPoller<E, S, W>, SubscribeError> {
        crate::poller::subscribe(&self.bus, None)
    }

    /// Like [`subscribe`](Producer::subscribe), for a poller that may
    /// hold the producers on a full ring for at most `limit`: past it, it
    /// is evicted (it stops gating at once) and its next poll returns
    /// [`PollError::Lagged`](crate::PollError::Lagged) with how far behind
    /// it was. It never reads an event being overwritten.
    ///
    /// ```
    /// use ringbus::{Blocking, LagLimit, PollError, Sequence};
    /// let mut producer = ringbus::single_producer(4, || 0u64, Blocking).build();
    /// let mut slow = producer.subscribe_lag_limited(LagLimit::never_hold()).unwrap();
    /// for i in 0..10 {
    ///     producer.publish(|e| *e = i).unwrap(); // never waits for `slow`
    /// }
    /// let polled = slow.poll(8, |_: &u64, _: Sequence, _: bool| {});
    /// assert!(matches!(polled, Err(PollError::Lagged { behind }) if behind >= 4));
    /// ```
    ///
    /// # Errors
    /// As for [`subscribe`](Producer::subscribe).
    pub fn subscribe_lag_limited(
        &self,
        limit: crate::poller::LagLimit,
    ) -> Result<EventPoller<E, S, W>, SubscribeError> {
        crate::poller::subscribe(&self.bus, Some(limit))
    }

    /// The old name of [`subscribe_lag_limited`](Self::subscribe_lag_limited).
    ///
    /// # Errors
    /// As for `subscribe_lag_limited`.
    #[deprecated(note = "renamed `subscribe_lag_limited` (`subscribe_with` takes a handler)")]
    #[doc(hidden)]
    pub fn subscribe_with_lag_limit(
        &self,
        limit: crate::poller::LagLimit,
    ) -> Result<EventPoller<E, S, W>, SubscribeError> {
        self.subscribe_lag_limited(limit)
    }

    /// Adds a managed handler at runtime: its own thread, fed like a stage
    /// reading off the ring, seeing what a poller subscribed now would see.
    /// Drop or [`unsubscribe`](Subscription::unsubscribe) it to stop it.
    ///
    /// ```
    /// # use ringbus::{Blocking, Sequence};
    /// let mut producer = ringbus::single_producer(16, || 0u64, Blocking).build();
    /// let mut total = 0;
    /// let dashboard = producer
    ///     .subscribe_with(move |e: &u64, _: Sequence, _: bool| total += *e)
    ///     .unwrap();
    /// for i in 1..=4 {
    ///     producer.publish(|e| *e = i).unwrap();
    /// }
    /// drop(producer); // the subscription ends after the last event
    /// # drop(dashboard);
    /// ```
    ///
    /// # Errors
    /// As for [`subscribe`](Producer::subscribe), and
    /// [`SubscribeError::Spawn`] when the OS refused the thread.
    pub fn subscribe_with<H>(&self, handler: H) -> Result<Subscription<H>, SubscribeError>
    where
        H: EventHandler<E> + Send + 'static,
    {
        crate::poller::subscribe_with(&self.bus, handler)
    }

    /// The highest sequence every gating consumer has passed: every leaf
    /// stage and runtime subscriber has handled (or skipped, or
    /// dead-lettered) all events up to it, and the stages before them too
    /// (the cursor when nothing gates). Takes the gating lock; a snapshot
    /// that only grows. LMAX's `getMinimumGatingSequence`: what a bridge
    /// acknowledges upstream once the bus is done with it.
    pub fn minimum_gating_sequence(&self) -> Sequence {
        self.bus.min_gating(self.cursor())
    }

    /// The highest sequence claimed (-1 before the first): for a single
    /// producer the last published; on a multi-producer bus, after the
    /// close, the last sequence ever claimed.
    pub fn cursor(&self) -> Sequence {
        let seq = &self.bus.sequencer;
        if S::MULTI && seq.is_closed() {
            // Refused claims inflate the counter after the close: only the
            // final sequence is the true end. The closer stores it right
            // after setting the closed bit; a caller that came in between
            // waits for that store.
            loop {
                if let Some(last) = self.bus.closed_at() {
                    return last;
                }
                crate::loom::yield_now();
            }
        }
        seq.claimed()
    }

    /// Stops every stage without draining; publishes (on every handle) that
    /// start once the halt is visible to them fail with `Halted` (on a
    /// multi-producer bus one already past its check may still succeed; a
    /// halted bus does not deliver it). Dropping or shutting down the
    /// producer then joins the threads.
    pub fn halt(&self) {
        self.bus.halt();
    }

    /// Closes the bus to producers (on a multi-producer bus, to every
    /// clone: their publishes fail with `Closed`), drains every event
    /// claimed before through every stage, then joins the stage threads;
    /// reports what each stage did. Every `shutdown` call, on any clone,
    /// gets the same outcome.
    ///
    /// It waits for everything claimed before the close, and so for what
    /// holds those claims: a stage stuck in its handler, or (a claim
    /// waiting for room) an [`EventPoller`](crate::EventPoller) that holds
    /// the ring and is neither polled nor dropped. Drop such pollers first,
    /// or bound the wait with [`shutdown_timeout`](Self::shutdown_timeout).
    /// Called inside a `publish` closure of another clone, it waits for
    /// that very claim, published only once the closure returns: it never
    /// returns (shut down after the publish).
    ///
    /// ```
    /// # use ringbus::{Blocking, Sequence};
    /// let mut producer = ringbus::single_producer(16, || 0u64, Blocking)
    ///     .thread_name("count")
    ///     .handle_events_with(|_: &u64, _: Sequence, _: bool| {})
    ///     .build();
    /// producer.publish(|e| *e = 1).unwrap();
    /// let report = producer.shutdown().unwrap();
    /// assert_eq!((report.stages[0].name.as_str(), report.stages[0].processed), ("count", 1));
    /// ```
    ///
    /// # Errors
    /// [`ShutdownError::StageFailed`] when a stage stopped on a failure its
    /// policy did not absorb (the report says which and why);
    /// [`ShutdownError::OnStageThread`] when called from a handler of this
    /// bus.
    pub fn shutdown(self) -> Result<ShutdownReport, ShutdownError> {
        self.finish(None)
    }

    /// Like [`shutdown`](Producer::shutdown), but halts the bus if the
    /// stages have not drained within `timeout` and says so.
    ///
    /// # Errors
    /// [`ShutdownError::TimedOut`] (the bus was halted; the report names a
    /// stage still inside its handler), or as for `shutdown`.
    pub fn shutdown_timeout(self, timeout: Duration) -> Result<ShutdownReport, ShutdownError> {
        self.finish(deadline_after(timeout))
    }

    fn finish(mut self, deadline: Option<Instant>) -> Result<ShutdownReport, ShutdownError> {
        self.shut_down = true;
        self.close();
        self.bus.join(deadline)
    }

    /// Closes the bus to producers. On a multi-producer bus only the call
    /// that set the closed bit knows the true final sequence; later calls
    /// do nothing.
    fn close(&self) {
        if let Some(last) = self.bus.sequencer.close_claims() {
            self.bus.close(last);
        }
    }
}

impl<E, S, W> Drop for Producer<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    fn drop(&mut self) {
        // AcqRel: as in `Arc::drop`, every other handle's last use of the
        // bus happens-before the close done by the handle that reaches zero
        // (a single producer is the only handle).
        let last = self.bus.producers.fetch_sub(1, Ordering::AcqRel) == 1;
        if last && !self.shut_down {
            self.close();
            let _ = self.bus.join(None);
        }
    }
}

impl<E, S, W> fmt::Debug for Producer<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(if S::MULTI {
            "MultiProducer"
        } else {
            "SingleProducer"
        })
        .field("cursor", &self.cursor())
        .field("bus", &self.bus)
        .finish()
    }
}
