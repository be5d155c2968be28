//! Producer handles: claim slots, write events in place, publish.
//!
//! Every publish call writes through a closure, so a claimed slot is always
//! published (or, for the single producer, never exposed) even if the closure
//! panics: a stage never waits on a slot nobody will publish.

use std::fmt;
use std::time::{Duration, Instant};

mod api;
#[cfg(feature = "async")]
mod awaiting;
#[cfg(feature = "serde")]
pub(crate) use api::sealed;
pub use api::Producer;

use crate::bus::Bus;
use crate::error::{PublishError, SubscribeError, TryPublishError};
use crate::handler::EventHandler;
use crate::loom::{Arc, Ordering, Weaken};
use crate::metrics::Metrics;
use crate::poller::{EventPoller, Subscription};
use crate::report::ShutdownReport;
use crate::ring_buffer::Slots;
use crate::sequence::{Sequence, INITIAL};
use crate::sequencer::multi::ClaimError;
use crate::sequencer::sealed::Sealed as _;
use crate::sequencer::{MultiProducerSequencer, SingleProducerSequencer};
use crate::wait_strategy::{deadline_after, Interrupt, WaitStrategy};
use crate::ShutdownError;

/// How long a claim may wait for free slots.
#[derive(Clone, Copy)]
enum Wait {
    Never,
    Forever,
    Until(Instant),
}

impl Wait {
    /// Until `timeout` from now; forever if that is beyond `Instant`'s range.
    fn after(timeout: Duration) -> Self {
        deadline_after(timeout).map_or(Wait::Forever, Wait::Until)
    }

    fn deadline(self) -> Option<Instant> {
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
fn waited(e: TryPublishError) -> PublishError {
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

fn check_batch<E, S, W>(bus: &Bus<E, S, W>, n: usize) -> Result<(), TryPublishError> {
    let capacity = bus.ring.capacity();
    if n > capacity {
        return Err(TryPublishError::BatchTooLarge {
            requested: n,
            capacity,
        });
    }
    Ok(())
}

/// The single producer's slow path: the cached gating minimum says `last`
/// may not be free yet. Rereads the gating stages (and waits, unless `wait`
/// is `Never`); returns the minimum seen.
///
/// Kept out of line and away from the producer's own fields on purpose: when
/// it was inlined, its register pressure made the compiler spill the publish
/// loop's counters to the stack, two extra stores per event on a path bound
/// by how fast its stores drain.
#[cold]
#[inline(never)]
fn wait_for_room<E, W: WaitStrategy>(
    bus: &Bus<E, SingleProducerSequencer, W>,
    last: Sequence,
    published: Sequence,
    wait: Wait,
) -> Result<Sequence, TryPublishError> {
    let wrap_point = last - bus.capacity();
    match wait {
        Wait::Never => {
            let mut min = bus.min_gating(published);
            if min < wrap_point && bus.evict_laggards(last) {
                min = bus.min_gating(published);
            }
            if min < wrap_point {
                return Err(TryPublishError::Full {
                    missing: (wrap_point - min) as usize,
                });
            }
            Ok(min)
        }
        // Nothing is claimed yet (the cursor has not moved): a refusal ends
        // the wait.
        _ => Ok(bus.wait_for_free(last, published, wait.deadline(), false)?),
    }
}

/// A multi producer's slow path after a blocking claim of `last - n + 1
/// ..= last`: the shared gating cache says the slots may not be free yet.
/// Refreshes the cache from the gating stages and, if still short, waits.
/// Out of line for the reason given at [`wait_for_room`].
#[cold]
#[inline(never)]
fn wait_for_claimed_room<E, W: WaitStrategy>(
    bus: &Bus<E, MultiProducerSequencer, W>,
    last: Sequence,
    n: i64,
) -> Result<(), TryPublishError> {
    let min = refresh_gating_cache(bus, last - n);
    if bus.writable_up_to(min) < last {
        // Claimed: only a halt ends the wait (then nothing drains anyway).
        wait_then_cache(bus, last, last - n, None, true)?;
    }
    Ok(())
}

/// Rereads the gating stages for a claim made after `before` and stores the
/// minimum in the multi producers' shared cache; returns it.
fn refresh_gating_cache<E, W: WaitStrategy>(
    bus: &Bus<E, MultiProducerSequencer, W>,
    before: Sequence,
) -> Sequence {
    // Failed stages stay in: a cache that left them out could hand their
    // room to a claim made after the refusal.
    let min = bus.min_gating(before);
    bus.sequencer.gating_cache.set(min, Weaken::GatingCache);
    min
}

/// Waits until multi producers may write up to `last` (see
/// [`Bus::wait_for_free`]) and stores the gating minimum then seen in their
/// shared cache.
fn wait_then_cache<E, W: WaitStrategy>(
    bus: &Bus<E, MultiProducerSequencer, W>,
    last: Sequence,
    before: Sequence,
    deadline: Option<Instant>,
    claimed: bool,
) -> Result<(), Interrupt> {
    let min = bus.wait_for_free(last, before, deadline, claimed)?;
    if !claimed {
        // A claimed wait's minimum may leave failed stages out; cached, it
        // would hand their room to producers that have claimed nothing.
        bus.sequencer.gating_cache.set(min, Weaken::GatingCache);
    }
    Ok(())
}

/// The one producer of a bus built with [`single_producer`](crate::single_producer).
///
/// Claims need no atomic read-modify-write: only this producer moves the
/// cursor (it rereads it, or under [`BusySpin`](crate::BusySpin) keeps a copy),
/// and it keeps a cached minimum of the gating stages, rereading the stages'
/// sequences only when the cache says the ring may be full.
///
/// Dropping it (or [`shutdown`](SingleProducer::shutdown)) drains every
/// published event through every stage and joins the stage threads.
///
/// `Send + Sync` when `E` is `Send + Sync` (every bus requires it), so it can
/// move to the publishing thread; publishing takes `&mut self`, so one thread
/// publishes at a time. It is not `Clone`: use [`multi_producer`](crate::multi_producer)
/// for several publishing threads.
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
#[must_use = "dropping the producer shuts the bus down: it drains and joins every stage"]
pub struct SingleProducer<E, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    pub(crate) bus: Arc<Bus<E, SingleProducerSequencer, W>>,
    /// How far it may write without looking at the stages again: a gating
    /// minimum seen earlier (the true one is at least that) plus the
    /// capacity, kept added up so the hot path's check is one comparison.
    writable_to: Sequence,
    /// Ring capacity, kept here so the slow path does not reload it.
    capacity: i64,
    shut_down: bool,
}

impl<E, W> fmt::Debug for SingleProducer<E, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleProducer")
            .field("published", &self.cursor())
            .field("bus", &self.bus)
            .finish()
    }
}

impl<E, W> SingleProducer<E, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    pub(crate) fn new(bus: Arc<Bus<E, SingleProducerSequencer, W>>) -> Self {
        let bus_capacity = bus.capacity();
        Self {
            capacity: bus_capacity,
            bus,
            writable_to: INITIAL + bus_capacity,
            shut_down: false,
        }
    }

    /// Reserves the next `n` slots; returns the last one.
    #[inline]
    fn claim(&mut self, n: usize, wait: Wait) -> Result<Sequence, TryPublishError> {
        if n > 1 {
            check_batch(&self.bus, n)?;
        }
        if self.bus.refuses_producers() {
            return Err(TryPublishError::Halted);
        }
        // Where we are: the cursor, read back. In a tight loop the load is
        // served from our own pending cursor store; keeping a copy instead
        // costs a store per publish, which measured 0.27x the disruptor
        // crate's single publish under `BusySpin` (0.75x without it, same
        // run), for no latency gain measurable here.
        let published = self.cursor();
        let last = published + n as i64;
        if last > self.writable_to {
            let gating = wait_for_room(&self.bus, last, published, wait)?;
            self.writable_to = gating.saturating_add(self.capacity);
        }
        Ok(last)
    }

    /// Makes everything up to `last` visible to the stages (Release store).
    #[inline]
    fn commit(&mut self, last: Sequence) -> Sequence {
        self.bus.sequencer.publish(last);
        self.bus.notify();
        last
    }

    #[inline]
    fn write_one(
        &mut self,
        wait: Wait,
        f: impl FnOnce(&mut E),
    ) -> Result<Sequence, TryPublishError> {
        let sequence = self.claim(1, wait)?;
        // SAFETY: `claim` returned a sequence no stage may read yet (it is
        // past the cursor) whose slot every gating stage has passed.
        unsafe { self.bus.ring.view().write(sequence, f) };
        Ok(self.commit(sequence))
    }

    fn write_batch(
        &mut self,
        n: usize,
        wait: Wait,
        f: impl FnOnce(Slots<'_, E>),
    ) -> Result<Sequence, TryPublishError> {
        let last = self.claim(n, wait)?;
        if n == 0 {
            return Ok(last);
        }
        let first = last - n as i64 + 1;
        // SAFETY: as in `write_one`, for each of `first..=last` (n <= capacity).
        f(unsafe { self.bus.ring.view().slots_mut(first, last) });
        Ok(self.commit(last))
    }

    /// Writes the next event in place with `f` and publishes it, waiting with
    /// the bus's strategy while the ring is full. Returns its sequence.
    ///
    /// Memory effect: a Release store of the cursor after `f` returned, so
    /// every stage that sees the sequence sees everything `f` wrote. If `f`
    /// panics, the slot is not published (the panic propagates).
    ///
    /// ```
    /// # use ringbus::{Blocking, Sequence};
    /// let mut producer = ringbus::single_producer(4, || String::new(), Blocking)
    ///     .handle_events_with(|e: &String, _: Sequence, _: bool| assert!(e.starts_with("order")))
    ///     .build();
    /// for i in 0..10 {
    ///     // The slot's String is reused: no allocation once it has grown.
    ///     let seq = producer.publish(|e| { e.clear(); e.push_str("order"); }).unwrap();
    ///     assert_eq!(seq, i);
    /// }
    /// ```
    ///
    /// # Errors
    /// [`PublishError::Halted`] when the bus was halted (by
    /// [`halt`](SingleProducer::halt) or a failed stage); `f` is then not
    /// called.
    #[inline]
    pub fn publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, PublishError> {
        self.write_one(Wait::Forever, f).map_err(waited)
    }

    /// Like [`publish`](SingleProducer::publish), but fails at once with
    /// [`TryPublishError::Full`] instead of waiting.
    ///
    /// ```
    /// # use ringbus::{Blocking, Sequence, TryPublishError};
    /// # use std::time::Duration;
    /// let (tx, rx) = std::sync::mpsc::channel::<()>();
    /// let mut producer = ringbus::single_producer(2, || 0u8, Blocking)
    ///     .handle_events_with(move |_: &u8, _: Sequence, _: bool| {
    ///         let _ = rx.recv_timeout(Duration::from_secs(10));
    ///     })
    ///     .build();
    /// // The stage holds its first event until we send; the ring of 2 fills.
    /// producer.try_publish(|e| *e = 1).unwrap();
    /// producer.try_publish(|e| *e = 2).unwrap();
    /// assert_eq!(producer.try_publish(|e| *e = 3), Err(TryPublishError::Full { missing: 1 }));
    /// tx.send(()).unwrap();
    /// tx.send(()).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`TryPublishError::Full`] when no slot is free, or
    /// [`TryPublishError::Halted`] as for `publish`; `f` is then not called.
    #[inline]
    pub fn try_publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, TryPublishError> {
        self.write_one(Wait::Never, f)
    }

    /// Like [`publish`](SingleProducer::publish), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`TryPublishError::Timeout`] when no slot came free in time, or
    /// [`TryPublishError::Halted`]; `f` is then not called.
    pub fn try_publish_for(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&mut E),
    ) -> Result<Sequence, TryPublishError> {
        self.write_one(Wait::after(timeout), f)
    }

    /// Claims `n` slots, lets `f` write them in order, then publishes them all
    /// with one store. Returns the last sequence. `n == 0` does nothing.
    ///
    /// ```
    /// # use ringbus::{Blocking, Sequence};
    /// let mut producer = ringbus::single_producer(64, || 0u32, Blocking)
    ///     .handle_events_with(|_: &u32, _: Sequence, _: bool| {})
    ///     .build();
    /// let last = producer
    ///     .batch_publish(16, |slots| {
    ///         for (i, e) in slots.enumerate() {
    ///             *e = i as u32;
    ///         }
    ///     })
    ///     .unwrap();
    /// assert_eq!(last, 15);
    /// ```
    ///
    /// # Errors
    /// [`PublishError::BatchTooLarge`] when `n` exceeds the capacity (it
    /// could never fit), or [`PublishError::Halted`]; `f` is then not called.
    pub fn batch_publish(
        &mut self,
        n: usize,
        f: impl FnOnce(Slots<'_, E>),
    ) -> Result<Sequence, PublishError> {
        self.write_batch(n, Wait::Forever, f).map_err(waited)
    }

    /// Like [`batch_publish`](SingleProducer::batch_publish), but fails at once
    /// when fewer than `n` slots are free; the error says how many are missing.
    ///
    /// # Errors
    /// [`TryPublishError::Full`] with the missing slots,
    /// [`TryPublishError::BatchTooLarge`], or [`TryPublishError::Halted`];
    /// `f` is then not called.
    pub fn try_batch_publish(
        &mut self,
        n: usize,
        f: impl FnOnce(Slots<'_, E>),
    ) -> Result<Sequence, TryPublishError> {
        self.write_batch(n, Wait::Never, f)
    }

    /// Slots free right now (a racy snapshot: stages only free more).
    pub fn remaining_capacity(&self) -> usize {
        let published = self.cursor();
        let min = self.bus.min_gating(published);
        (self.bus.capacity() - (published - min)) as usize
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
    /// claimed after this returns (and possibly some that the slowest
    /// consumer had not finished yet).
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
    pub fn subscribe(&self) -> Result<EventPoller<E, SingleProducerSequencer, W>, SubscribeError> {
        crate::poller::subscribe(&self.bus, None)
    }

    /// Like [`subscribe`](SingleProducer::subscribe), for a poller that may
    /// hold the producers on a full ring for at most `limit`: past it, it
    /// is evicted (it stops gating at once) and its next poll returns
    /// [`PollError::Lagged`](crate::PollError::Lagged) with how far behind
    /// it was. It never reads an event being overwritten.
    ///
    /// ```
    /// use ringbus::{Blocking, LagLimit, PollError, Sequence};
    /// let mut producer = ringbus::single_producer(4, || 0u64, Blocking).build();
    /// let mut slow = producer.subscribe_with_lag_limit(LagLimit::never_hold()).unwrap();
    /// for i in 0..10 {
    ///     producer.publish(|e| *e = i).unwrap(); // never waits for `slow`
    /// }
    /// let polled = slow.poll(8, |_: &u64, _: Sequence, _: bool| {});
    /// assert!(matches!(polled, Err(PollError::Lagged { behind }) if behind >= 4));
    /// ```
    ///
    /// # Errors
    /// As for [`subscribe`](SingleProducer::subscribe).
    pub fn subscribe_with_lag_limit(
        &self,
        limit: crate::LagLimit,
    ) -> Result<EventPoller<E, SingleProducerSequencer, W>, SubscribeError> {
        crate::poller::subscribe(&self.bus, Some(limit))
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
    /// As for [`subscribe`](SingleProducer::subscribe), and
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

    /// The last sequence published (-1 before the first).
    pub fn cursor(&self) -> Sequence {
        self.bus.sequencer.claimed()
    }

    /// Stops every stage without draining; publishes that start after this
    /// returns fail with `Halted`. Dropping or shutting down the producer then
    /// joins the threads.
    pub fn halt(&self) {
        self.bus.halt();
    }

    /// Drains every published event through every stage, then joins the stage
    /// threads; reports what each stage did.
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

    /// Like [`shutdown`](SingleProducer::shutdown), but halts the bus if the
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
        self.bus.close(self.cursor());
        self.bus.join(deadline)
    }
}

impl<E, W> Drop for SingleProducer<E, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    fn drop(&mut self) {
        // AcqRel: as for the multi-producer handles (`producers_gone`).
        self.bus.producers.fetch_sub(1, Ordering::AcqRel);
        if !self.shut_down {
            self.bus.close(self.cursor());
            let _ = self.bus.join(None);
        }
    }
}

/// A producer of a bus built with [`multi_producer`](crate::multi_producer):
/// `Clone + Send + Sync`, each clone publishing concurrently.
///
/// Blocking claims take sequences with one `fetch_add`; `try_` claims use a
/// CAS so they never reserve a slot they cannot fill. Each batch is marked
/// published with one store, and stages read only fully written events.
///
/// Dropping the last clone (or [`shutdown`](MultiProducer::shutdown) on any
/// clone) drains every published event through every stage and joins the
/// stage threads. A clone kept inside a handler of the same bus keeps the bus
/// open (its stages never see the end); shut such a bus down explicitly.
///
/// `Clone + Send + Sync` (as every bus requires `E: Send + Sync`).
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
pub struct MultiProducer<E, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    bus: Arc<Bus<E, MultiProducerSequencer, W>>,
}

impl<E, W> fmt::Debug for MultiProducer<E, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiProducer")
            .field("bus", &self.bus)
            .finish()
    }
}

impl<E, W> Clone for MultiProducer<E, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    fn clone(&self) -> Self {
        // Relaxed: a new handle is made from a live one, so the count cannot
        // reach zero meanwhile (as for `Arc::clone`).
        self.bus.producers.fetch_add(1, Ordering::Relaxed);
        Self {
            bus: Arc::clone(&self.bus),
        }
    }
}

/// Publishes a claimed range when dropped, so a panicking writer cannot leave
/// a claimed slot unpublished (which would stall every stage).
struct PublishOnDrop<'a, E, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    bus: &'a Bus<E, MultiProducerSequencer, W>,
    first: Sequence,
    last: Sequence,
}

impl<E, W> Drop for PublishOnDrop<'_, E, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    #[inline]
    fn drop(&mut self) {
        self.bus.sequencer.publish(self.first, self.last);
        self.bus.notify();
    }
}

impl<E, W> MultiProducer<E, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    pub(crate) fn new(bus: Arc<Bus<E, MultiProducerSequencer, W>>) -> Self {
        Self { bus }
    }

    /// Highest sequence producers may write, from the shared cache when it
    /// suffices for the claim `last - n + 1 ..= last`, else from the gating
    /// consumers (refreshing the cache).
    #[inline]
    fn writable_up_to(&self, last: Sequence, n: i64) -> Sequence {
        let seq = &self.bus.sequencer;
        let cached = seq.gating_cache.get();
        if last - self.bus.capacity() <= cached {
            return self.bus.writable_up_to(cached);
        }
        self.bus
            .writable_up_to(refresh_gating_cache(&self.bus, last - n))
    }

    /// Reserves `n` slots; returns the last one.
    #[inline]
    fn claim(&self, n: usize, wait: Wait) -> Result<Sequence, TryPublishError> {
        check_batch(&self.bus, n)?;
        if self.bus.refuses_producers() {
            return Err(TryPublishError::Halted);
        }
        let seq = &self.bus.sequencer;
        let n = n as i64;
        match wait {
            Wait::Forever => {
                let last = seq.claim(n).map_err(|_| TryPublishError::Closed)?;
                // The gating cache is Release-stored/Acquire-loaded, so a
                // producer relying on another's refresh still synchronises
                // with the stages that freed the slots.
                if last - self.bus.capacity() > seq.gating_cache.get() {
                    wait_for_claimed_room(&self.bus, last, n)?;
                }
                Ok(last)
            }
            // A claim with a deadline must not reserve before it knows the
            // slots are free (a reserved slot must be published), so it
            // retries a CAS claim, waiting for room in between.
            Wait::Never | Wait::Until(_) => loop {
                match seq.try_claim(n, |last| self.writable_up_to(last, n)) {
                    Ok(last) => return Ok(last),
                    Err(ClaimError::Closed) => return Err(TryPublishError::Closed),
                    Err(ClaimError::Full(missing)) => {
                        let before = seq.claimed();
                        if self.bus.evict_laggards(before + n) {
                            // Room freed: the cache must say so.
                            refresh_gating_cache(&self.bus, before);
                            continue;
                        }
                        let Wait::Until(deadline) = wait else {
                            return Err(TryPublishError::Full { missing });
                        };
                        // Other producers may keep winning the room we wait
                        // for: the deadline bounds the retries too.
                        if Instant::now() >= deadline {
                            return Err(TryPublishError::Timeout);
                        }
                        let before = seq.claimed();
                        wait_then_cache(&self.bus, before + n, before, Some(deadline), false)?;
                    }
                }
            },
        }
    }

    #[inline]
    fn write_one(&self, wait: Wait, f: impl FnOnce(&mut E)) -> Result<Sequence, TryPublishError> {
        let sequence = self.claim(1, wait)?;
        let _publish = PublishOnDrop {
            bus: &self.bus,
            first: sequence,
            last: sequence,
        };
        // SAFETY: this producer alone claimed `sequence`; it is unpublished
        // (no stage reads it) and every gating stage has passed its slot.
        unsafe { self.bus.ring.view().write(sequence, f) };
        Ok(sequence)
    }

    fn write_batch(
        &self,
        n: usize,
        wait: Wait,
        f: impl FnOnce(Slots<'_, E>),
    ) -> Result<Sequence, TryPublishError> {
        if n == 0 {
            check_batch(&self.bus, n)?;
            return Ok(self.cursor());
        }
        let last = self.claim(n, wait)?;
        let first = last - n as i64 + 1;
        let _publish = PublishOnDrop {
            bus: &self.bus,
            first,
            last,
        };
        // SAFETY: as in `write_one`, for each of `first..=last` (n <= capacity).
        f(unsafe { self.bus.ring.view().slots_mut(first, last) });
        Ok(last)
    }

    /// Writes the next event in place with `f` and publishes it, waiting with
    /// the bus's strategy while the ring is full. Returns its sequence.
    ///
    /// If `f` panics the event is still published, as far as `f` wrote it
    /// (other producers' later claims may already wait on it).
    ///
    /// Memory effect: a Release store of the batch's availability mark after
    /// `f` returned; stages load it with Acquire before reading the slot.
    ///
    /// # Errors
    /// [`PublishError::Halted`] or [`PublishError::Closed`] (another clone
    /// shut the bus down); `f` is then not called.
    #[inline]
    pub fn publish(&self, f: impl FnOnce(&mut E)) -> Result<Sequence, PublishError> {
        self.write_one(Wait::Forever, f).map_err(waited)
    }

    /// Like [`publish`](MultiProducer::publish), but fails at once with
    /// [`TryPublishError::Full`] instead of waiting (its CAS claims nothing
    /// it cannot fill).
    ///
    /// # Errors
    /// [`TryPublishError::Full`], `Halted` or `Closed`; `f` is then not
    /// called.
    #[inline]
    pub fn try_publish(&self, f: impl FnOnce(&mut E)) -> Result<Sequence, TryPublishError> {
        self.write_one(Wait::Never, f)
    }

    /// Like [`publish`](MultiProducer::publish), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`TryPublishError::Timeout`], `Halted` or `Closed`; `f` is then not
    /// called.
    pub fn try_publish_for(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut E),
    ) -> Result<Sequence, TryPublishError> {
        self.write_one(Wait::after(timeout), f)
    }

    /// Claims `n` consecutive slots, lets `f` write them in order, then
    /// publishes them with one store. Returns the last sequence.
    ///
    /// # Errors
    /// [`PublishError::BatchTooLarge`], `Halted` or `Closed`; `f` is then
    /// not called.
    pub fn batch_publish(
        &self,
        n: usize,
        f: impl FnOnce(Slots<'_, E>),
    ) -> Result<Sequence, PublishError> {
        self.write_batch(n, Wait::Forever, f).map_err(waited)
    }

    /// Like [`batch_publish`](MultiProducer::batch_publish), but fails at once
    /// when fewer than `n` slots are free; the error says how many are missing.
    ///
    /// # Errors
    /// [`TryPublishError::Full`] with the missing slots, `BatchTooLarge`,
    /// `Halted` or `Closed`; `f` is then not called.
    pub fn try_batch_publish(
        &self,
        n: usize,
        f: impl FnOnce(Slots<'_, E>),
    ) -> Result<Sequence, TryPublishError> {
        self.write_batch(n, Wait::Never, f)
    }

    /// Slots free right now (a racy snapshot).
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
    /// published after the highest sequence up to which everything was
    /// published when this ran, so every event claimed after this returns.
    ///
    /// # Errors
    /// As for [`SingleProducer::subscribe`].
    pub fn subscribe(&self) -> Result<EventPoller<E, MultiProducerSequencer, W>, SubscribeError> {
        crate::poller::subscribe(&self.bus, None)
    }

    /// Like [`subscribe`](MultiProducer::subscribe), with a lag limit; see
    /// [`SingleProducer::subscribe_with_lag_limit`].
    ///
    /// # Errors
    /// As for [`subscribe`](MultiProducer::subscribe).
    pub fn subscribe_with_lag_limit(
        &self,
        limit: crate::LagLimit,
    ) -> Result<EventPoller<E, MultiProducerSequencer, W>, SubscribeError> {
        crate::poller::subscribe(&self.bus, Some(limit))
    }

    /// Adds a managed handler at runtime: its own thread, fed like a stage
    /// reading off the ring, seeing what a poller subscribed now would see.
    /// Drop or [`unsubscribe`](Subscription::unsubscribe) it to stop it.
    ///
    /// # Errors
    /// As for [`SingleProducer::subscribe_with`].
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

    /// The highest sequence claimed by any producer (-1 before the first);
    /// after the close, the last sequence ever claimed.
    pub fn cursor(&self) -> Sequence {
        let seq = &self.bus.sequencer;
        if seq.is_closed() {
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

    /// Stops every stage without draining; publishes on every clone that
    /// start once the halt is visible to them fail with `Halted` (one already
    /// past its check may still succeed; a halted bus does not deliver it).
    pub fn halt(&self) {
        self.bus.halt();
    }

    /// Closes the bus to every clone (their publishes fail with `Closed`),
    /// drains every event claimed before, and joins the stage threads.
    ///
    /// # Errors
    /// As for [`SingleProducer::shutdown`].
    pub fn shutdown(self) -> Result<ShutdownReport, ShutdownError> {
        self.finish(None)
    }

    /// Like [`shutdown`](MultiProducer::shutdown), but halts the bus if the
    /// stages have not drained within `timeout` and says so.
    ///
    /// # Errors
    /// As for [`SingleProducer::shutdown_timeout`].
    pub fn shutdown_timeout(self, timeout: Duration) -> Result<ShutdownReport, ShutdownError> {
        self.finish(deadline_after(timeout))
    }

    fn finish(self, deadline: Option<Instant>) -> Result<ShutdownReport, ShutdownError> {
        self.close();
        self.bus.join(deadline)
    }

    /// Closes the bus to producers, once: only the call that set the closed
    /// bit knows the true final sequence.
    fn close(&self) {
        if let Some(last) = self.bus.sequencer.close() {
            self.bus.close(last);
        }
    }
}

impl<E, W> Drop for MultiProducer<E, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    fn drop(&mut self) {
        // AcqRel: as in `Arc::drop`, every other handle's last use of the
        // bus happens-before the close done by the handle that reaches zero.
        if self.bus.producers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.close();
            let _ = self.bus.join(None);
        }
    }
}
