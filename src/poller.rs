//! The event poller: a consumer driven from the user's own thread or event
//! loop instead of a managed stage thread, joining and leaving at runtime.
//!
//! [`subscribe`](crate::SingleProducer::subscribe) registers a new gating
//! consumer without stopping or slowing the producers (see `Bus::subscribe`
//! for why joining while producers wrap the ring is safe). Each poll hands
//! the available events, in order, to a closure; returning from it commits
//! them (a Release store of the poller's sequence). If the closure panics
//! nothing is committed and the same events come again on the next poll.
//! Dropping the poller removes it from the gating set, so an abandoned poller
//! never holds the producers back.
//!
//! What a poller sees: every event claimed after `subscribe` returned (for a
//! single producer: published after it), in order, once. A poller of a
//! single-producer bus also sees those the slowest existing consumer had not
//! finished yet; one of a multi-producer bus starts after the published
//! floor, so it also sees claims still being written when it joined (see
//! `MultiProducerSequencer::join_point`).

use std::fmt;
use std::time::{Duration, Instant};

use crate::barrier::{LagWatch, StageCell};
use crate::bus::Bus;
use crate::loom::Arc;
use crate::parking::Interrupt;
use crate::sequence::Sequence;
use crate::sequencer::{Scan, Sequencer};
use crate::wait_strategy::WaitStrategy;
use crate::weaken;
use crate::weaken::Weaken;

/// Why a poll returned no events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PollError {
    /// The producers are gone and this poller has handled everything.
    Closed,
    /// The bus was halted.
    Halted,
    /// Nothing arrived within the timeout.
    Timeout,
    /// This subscriber held the producers longer than its
    /// [`LagLimit`] allowed and was evicted: it no longer gates them, and
    /// reads nothing more. Subscribe again to go on from the present.
    Lagged {
        /// How many events behind the producers it was when evicted.
        behind: u64,
    },
}

/// How long a runtime subscriber may hold the producers on a full ring
/// before it is evicted ([`PollError::Lagged`]), for
/// `subscribe_lag_limited` on the producers. A subscriber without one
/// holds them as long as it takes, as a stage does.
///
/// Eviction is checked by a producer that finds the ring full: one waiting
/// with a blocking strategy wakes at least every quarter of the limit to
/// check, and so does an async producer (`publish_async`; a clock thread,
/// started the first time one is held by a lag-limited subscriber, wakes
/// it), also when the subscriber joined while it was already waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LagLimit {
    /// How long it may hold a producer.
    pub hold: Duration,
}

impl LagLimit {
    /// Never hold a producer: evicted as soon as one finds the ring full
    /// because of it (tokio `broadcast`'s receivers, without ever reading
    /// an overwritten event).
    pub const fn never_hold() -> Self {
        Self {
            hold: Duration::ZERO,
        }
    }

    /// Hold a producer for at most `hold`.
    pub const fn hold_at_most(hold: Duration) -> Self {
        Self { hold }
    }
}

impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PollError::Closed => "the bus is closed and every event was handled",
            PollError::Halted => "the bus was halted",
            PollError::Timeout => "no event within the timeout",
            PollError::Lagged { behind } => {
                return write!(
                    f,
                    "this subscriber fell {behind} events behind and held the producers past \
                     its lag limit, so it was evicted; subscribe again to go on"
                )
            }
        })
    }
}

impl std::error::Error for PollError {}

/// A pull consumer of one bus, polled from the user's own thread; made by
/// `subscribe` on a producer. Polls hand the available events in order to a
/// closure and commit them when it returns (not if it panics: they come
/// again). It sees every event claimed after `subscribe` returned; on a
/// single-producer bus also the ones the slowest consumer had not finished,
/// on a multi-producer bus also claims still being written when it joined.
/// Dropping it stops it gating the producers.
///
/// A poller joins and leaves at any time without stopping or slowing the
/// producers. Until dropped it gates them like a leaf stage: a poller that
/// is never polled holds the ring full, so poll it or drop it.
///
/// `Send + Sync` (move it to the thread or task that polls); polling takes
/// `&mut self`.
///
/// ```
/// use ringbus::{Blocking, PollError, Sequence};
///
/// let mut producer = ringbus::multi_producer(64, || 0u64, Blocking).build();
/// let mut poller = producer.subscribe().unwrap();
/// let consumer = std::thread::spawn(move || {
///     let mut sum = 0;
///     loop {
///         match poller.poll_wait(16, |e, _seq, _end_of_batch| sum += *e) {
///             Ok(_) => {}
///             Err(PollError::Closed) => return sum, // producers gone, all handled
///             Err(e) => panic!("{e}"),
///         }
///     }
/// });
/// for i in 1..=100 {
///     producer.publish(|e| *e = i).unwrap();
/// }
/// drop(producer);
/// assert_eq!(consumer.join().unwrap(), 5050);
/// ```
#[must_use = "a poller gates the producers until dropped; dropping it at once unsubscribes"]
pub struct EventPoller<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    bus: Arc<Bus<E, S, W>>,
    cell: Arc<StageCell>,
    /// Where the next scan of the ring starts: after the highest sequence
    /// known published.
    scan: Scan,
}

impl<E, S, W> fmt::Debug for EventPoller<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventPoller")
            .field("sequence", &self.sequence())
            .finish_non_exhaustive()
    }
}

impl<E, S, W> EventPoller<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    pub(crate) fn new(bus: Arc<Bus<E, S, W>>, cell: Arc<StageCell>) -> Self {
        // The join point is a batch boundary (see `Sealed::join_point`).
        let scan = Scan::after(cell.sequence.get_relaxed());
        Self { bus, cell, scan }
    }

    /// The last sequence this poller committed; it starts right after the
    /// position it joined at.
    pub fn sequence(&self) -> Sequence {
        self.cell.sequence.get_relaxed()
    }

    /// Handles up to `limit` available events with `f(event, sequence,
    /// end_of_batch)` and commits them; never waits. `Ok(0)` when nothing is
    /// available yet.
    ///
    /// Memory effect: an Acquire load of what producers (and the stages it
    /// follows) published before reading; a Release store of the poller's
    /// sequence after `f` returned, which frees the slots for producers.
    ///
    /// # Errors
    /// [`PollError::Closed`] once the producers are gone and every event was
    /// handled; [`PollError::Halted`] when the bus was halted, or when a
    /// stage failed (producers get `Halted`) and every event claimed
    /// before was handled. (A publish whose closure was still running when
    /// the stage failed may complete after that: the stages independent of
    /// the failed one get it, a poller that returned `Halted` does not.)
    pub fn poll(
        &mut self,
        limit: usize,
        f: impl FnMut(&E, Sequence, bool),
    ) -> Result<usize, PollError> {
        let next = self.sequence() + 1;
        match self.check(next) {
            Ok(Some(available)) => self.handle(next, available, limit, f),
            Ok(None) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Like [`poll`](EventPoller::poll), but waits with the bus's wait
    /// strategy until at least one event is available.
    ///
    /// # Errors
    /// As for [`poll`](EventPoller::poll).
    pub fn poll_wait(
        &mut self,
        limit: usize,
        f: impl FnMut(&E, Sequence, bool),
    ) -> Result<usize, PollError> {
        self.wait_then_handle(None, limit, f)
    }

    /// Like [`poll_wait`](EventPoller::poll_wait), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`PollError::Timeout`] when nothing arrived in time, or as for
    /// [`poll`](EventPoller::poll).
    pub fn poll_timeout(
        &mut self,
        timeout: Duration,
        limit: usize,
        f: impl FnMut(&E, Sequence, bool),
    ) -> Result<usize, PollError> {
        self.wait_then_handle(crate::wait_strategy::deadline_after(timeout), limit, f)
    }

    fn wait_then_handle(
        &mut self,
        deadline: Option<Instant>,
        limit: usize,
        f: impl FnMut(&E, Sequence, bool),
    ) -> Result<usize, PollError> {
        self.wait_then_handle_batch(deadline, limit, |_| {}, f)
    }

    /// `wait_then_handle`, telling `batch` how many events follow first.
    pub(crate) fn wait_then_handle_batch(
        &mut self,
        deadline: Option<Instant>,
        limit: usize,
        batch: impl FnOnce(u64),
        f: impl FnMut(&E, Sequence, bool),
    ) -> Result<usize, PollError> {
        let next = self.sequence() + 1;
        let bus = Arc::clone(&self.bus);
        let available = bus
            .strategy
            .wait(&bus.signals, deadline, || {
                self.check(next).map_err(to_interrupt)
            })
            .map_err(from_interrupt)?;
        self.handle_batch(next, available, limit, batch, f)
    }

    /// After the close: whether the claim this poller waits for (the one
    /// holding its next sequence) may wait for room: its slot's previous
    /// lap is not read yet by every consumer, or a multi producer shows it
    /// waiting (a batch's first slot may have room while its last has
    /// none). Not the last claim's room: a claim with room before one
    /// without is only slow, and is published without anything from this
    /// poller. (A claim not shown yet is seen at the next look.)
    fn the_next_claim_waits_for_room(&self) -> bool {
        let next = self.sequence() + 1;
        let wrap_point = next - self.bus.capacity() as Sequence;
        self.bus.min_gating(next) < wrap_point
            || self
                .bus
                .waiting_claims
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .any(|&(first, last)| first <= next && next <= last)
    }

    /// The highest available sequence `>= next`, `None` if none yet, or why
    /// none will come.
    fn check(&mut self, next: Sequence) -> Result<Option<Sequence>, PollError> {
        if let Some(behind) = self.cell.lag.as_ref().and_then(|w| w.evicted()) {
            return Err(PollError::Lagged { behind });
        }
        let available = self.scan_for(next);
        if available >= next {
            Ok(Some(available))
        } else if self.bus.is_halted() {
            Err(PollError::Halted)
        } else if self.bus.refuses_producers()
            // After the close, the final sequence: claims refused since
            // then still count in `claimed`.
            && next > self.bus.closed_at().unwrap_or_else(|| self.bus.sequencer.claimed())
        {
            // A stage failed: producers are refused, and every claim made
            // was passed (a claim in flight is published, and wakes us):
            // nothing more comes, so say so rather than wait for ever, and
            // say `Halted` as producers do, also once the bus is closed
            // (shut down after the failure). Look once more first, as
            // below.
            let available = self.scan_for(next);
            if available >= next {
                Ok(Some(available))
            } else {
                Err(PollError::Halted)
            }
        } else if self.bus.nothing_more_at(next) {
            // Seen after the producers' last publish: look once more.
            let available = self.scan_for(next);
            if available >= next {
                Ok(Some(available))
            } else {
                Err(PollError::Closed)
            }
        } else {
            Ok(None)
        }
    }

    /// The highest sequence known published `>= next - 1`. A lag-limited
    /// subscriber can be evicted between the check above and its scan, and
    /// then producers may lap it: its scan records nothing until `handle`
    /// knows it still gates (issue #24, finding 4).
    fn scan_for(&mut self, next: Sequence) -> Sequence {
        let sequencer = &self.bus.sequencer;
        if self.cell.lag.is_some() {
            self.scan.published_unconfirmed(sequencer, next)
        } else {
            self.scan.published(sequencer, next)
        }
    }

    fn handle(
        &mut self,
        next: Sequence,
        available: Sequence,
        limit: usize,
        f: impl FnMut(&E, Sequence, bool),
    ) -> Result<usize, PollError> {
        self.handle_batch(next, available, limit, |_| {}, f)
    }

    /// `handle`, telling `batch` how many events follow first (a
    /// subscription's `on_batch_start`).
    fn handle_batch(
        &mut self,
        next: Sequence,
        available: Sequence,
        limit: usize,
        batch: impl FnOnce(u64),
        mut f: impl FnMut(&E, Sequence, bool),
    ) -> Result<usize, PollError> {
        if limit == 0 {
            return Ok(0);
        }
        let watch = self.cell.lag.as_ref();
        // Puts a lag-limited subscriber back to "not reading" however the
        // read ends: committed, or unwound by a panic in `f` (then nothing
        // is committed and the same events come again; issue #24, finding 3).
        let reading = match watch {
            Some(watch) => {
                if !watch.begin_read() {
                    let behind = watch.evicted().unwrap_or(0);
                    return Err(PollError::Lagged { behind });
                }
                // Not evicted before this point (eviction is final), so not
                // during the scan either: what it found may bound producers.
                self.scan.confirm(&self.bus.sequencer);
                Some(Reading(watch))
            }
            None => None,
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let end = available.min(next.saturating_add(limit - 1));
        let ring = self.bus.ring.view();
        batch((end - next + 1) as u64);
        for sequence in next..=end {
            // SAFETY: `check` saw `next..=available` published (Acquire), and
            // our sequence, which gates the producers since `subscribe`
            // (a lag-limited one: while it holds the read state), is still
            // below `next`, so no producer writes these slots.
            unsafe { ring.read(sequence, |e| f(e, sequence, sequence == end)) };
        }
        self.cell.sequence.set(end, Weaken::Stage);
        if let Some(reading) = reading {
            reading.commit();
        }
        self.bus.notify_progress(&self.cell);
        Ok((end - next + 1) as usize)
    }
}

/// A lag-limited subscriber's read in progress; see `handle`.
struct Reading<'a>(&'a LagWatch);

impl Reading<'_> {
    /// The read committed: back to "not reading". The guard is gone first,
    /// so it cannot run after `end_read` (a later eviction is final).
    fn commit(self) {
        let watch = self.0;
        std::mem::forget(self);
        watch.end_read();
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() && !weaken::READ_GUARD {
            self.0.abandon_read();
        }
    }
}

fn to_interrupt(e: PollError) -> Interrupt {
    match e {
        PollError::Closed => Interrupt::Closed,
        PollError::Halted => Interrupt::Halted,
        PollError::Timeout => Interrupt::Timeout,
        PollError::Lagged { behind } => Interrupt::Lagged(behind),
    }
}

fn from_interrupt(i: Interrupt) -> PollError {
    match i {
        Interrupt::Closed => PollError::Closed,
        Interrupt::Halted => PollError::Halted,
        Interrupt::Timeout => PollError::Timeout,
        Interrupt::Lagged(behind) => PollError::Lagged { behind },
    }
}

impl<E, S, W> Drop for EventPoller<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    fn drop(&mut self) {
        self.bus.unsubscribe(&self.cell);
    }
}

/// Subscribes a poller to `bus` (what the producers' `subscribe` calls).
pub(crate) fn subscribe<E, S, W>(
    bus: &Arc<Bus<E, S, W>>,
    limit: Option<LagLimit>,
) -> Result<EventPoller<E, S, W>, crate::error::SubscribeError>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    let cell = bus.subscribe(limit.map(|l| l.hold))?;
    Ok(EventPoller::new(Arc::clone(bus), cell))
}

/// A managed handler added at runtime: a thread that polls the bus and hands
/// each event to the handler, as a stage would. Dropping it (or
/// [`unsubscribe`](Subscription::unsubscribe)) stops the thread within about
/// [`Subscription::STOP_LATENCY`] after the batch in hand (at most
/// [`Subscription::MAX_BATCH`] events) and removes it from the gating set.
/// It also ends when the bus closes, after the last event: on a bus closed
/// to producers (shut down, or its last producer dropped), dropping or
/// unsubscribing it first hands the handler every event left, so the
/// handler given back has seen them all (but for a publish on another
/// clone that claimed before the close and waits for room: that room may
/// be the stopping thread's own to give, so it is not waited for).
///
/// It sees the same events an [`EventPoller`] subscribed at the same moment
/// would: everything claimed after `subscribe_with` returned.
#[must_use = "dropping a subscription stops its handler (after the batch in hand)"]
pub struct Subscription<H> {
    stop: Arc<crate::loom::AtomicBool>,
    thread: Option<crate::loom::thread::JoinHandle<Option<H>>>,
}

impl<H> fmt::Debug for Subscription<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl<H> Subscription<H> {
    /// How long the subscription's thread may take to notice it should stop.
    pub const STOP_LATENCY: Duration = Duration::from_millis(10);

    /// The most events the handler gets in one batch: the thread looks for
    /// a stop between batches.
    pub const MAX_BATCH: usize = 256;

    /// Stops the handler's thread and returns the handler (with its state),
    /// or `None` if it panicked. On a bus closed to producers it first hands
    /// the handler every event left (see [`Subscription`]).
    pub fn unsubscribe(mut self) -> Option<H> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Option<H> {
        // Release: a close made before this call is seen by the thread once
        // it sees the flag (it then drains rather than stops).
        self.stop.store(true, crate::loom::Ordering::Release);
        self.thread.take().and_then(|t| t.join().ok().flatten())
    }
}

impl<H> Drop for Subscription<H> {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Starts `handler` on its own thread, fed by a new poller of `bus`.
pub(crate) fn subscribe_with<E, S, W, H>(
    bus: &Arc<Bus<E, S, W>>,
    mut handler: H,
) -> Result<Subscription<H>, crate::error::SubscribeError>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
    H: crate::handler::EventHandler<E> + Send + 'static,
{
    let mut poller = subscribe(bus, None)?;
    let stop = Arc::new(crate::loom::AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = crate::loom::thread::Builder::new()
        .name("ringbus-subscription".into())
        .spawn(move || {
            // Its handler's `shutdown` (or drop of the last producer)
            // answers at once, as a stage's does: it cannot wait for the
            // claims this subscription's room holds.
            let bus = Arc::clone(&poller.bus);
            bus.subscription_thread(true);
            let run = std::panic::AssertUnwindSafe(|| {
                handler.on_start();
                loop {
                    // Acquire: pairs with `stop_and_join`'s Release. A stop
                    // asked for after the close drains what is left: the
                    // handler given back has seen every event (the loop
                    // ends at `Closed`).
                    let stop_asked = stopping.load(crate::loom::Ordering::Acquire);
                    if stop_asked && poller.bus.closed_at().is_none() {
                        break;
                    }
                    // As a stage: `on_batch_start` before each batch.
                    let handler = &mut handler;
                    let starts = std::cell::RefCell::new(handler);
                    let polled = poller.wait_then_handle_batch(
                        crate::wait_strategy::deadline_after(Subscription::<H>::STOP_LATENCY),
                        Subscription::<H>::MAX_BATCH,
                        |n| starts.borrow_mut().on_batch_start(n),
                        |e, seq, eob| starts.borrow_mut().on_event(e, seq, eob),
                    );
                    match polled {
                        // Draining after the close, nothing came for a
                        // `STOP_LATENCY`, and the claim made before the close
                        // that it waits for has no room: that room may be the caller's
                        // own to give (an unpolled poller, this very
                        // subscription dropped in a stage's handler), so
                        // the claim is not waited for. A claim with room
                        // is only slow: waited for.
                        Err(PollError::Timeout)
                            if stop_asked && poller.the_next_claim_waits_for_room() =>
                        {
                            break
                        }
                        Ok(_) | Err(PollError::Timeout) => {}
                        Err(PollError::Closed | PollError::Halted | PollError::Lagged { .. }) => {
                            break
                        }
                    }
                }
                handler.on_shutdown();
                handler
            });
            let handler = std::panic::catch_unwind(run).ok();
            bus.subscription_thread(false);
            handler
        })
        .map_err(crate::SubscribeError::Spawn)?;
    Ok(Subscription {
        stop,
        thread: Some(thread),
    })
}

#[cfg(feature = "async")]
impl<E, S, W> EventPoller<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: crate::wait_strategy::AsyncWait,
{
    /// Like [`poll_wait`](EventPoller::poll_wait), but awaits the first
    /// event instead of blocking the thread (feature `async`): the task is
    /// woken by the publish that makes events available. Cancel-safe: a
    /// future dropped before it completed handled nothing.
    ///
    /// # Errors
    /// As for [`poll`](EventPoller::poll).
    pub async fn poll_async(
        &mut self,
        limit: usize,
        f: impl FnMut(&E, Sequence, bool),
    ) -> Result<usize, PollError> {
        let next = self.sequence() + 1;
        let available = std::future::poll_fn(|cx| self.poll_available(cx, next)).await?;
        self.handle(next, available, limit, f)
    }

    /// The highest available sequence `>= next`, or why none will come; if
    /// none is available yet, `cx`'s waker is registered to be woken by the
    /// publish (or close, halt, eviction) that changes that.
    fn poll_available(
        &mut self,
        cx: &mut std::task::Context<'_>,
        next: Sequence,
    ) -> std::task::Poll<Result<Sequence, PollError>> {
        use std::task::Poll;
        match self.check(next) {
            Ok(Some(available)) => Poll::Ready(Ok(available)),
            Err(e) => Poll::Ready(Err(e)),
            Ok(None) => {
                let bus = Arc::clone(&self.bus);
                crate::parking::register(&bus.signals, cx.waker(), || {
                    self.check(next).map_err(to_interrupt)
                })
                .map(|found| found.map_err(from_interrupt))
            }
        }
    }

    /// This poller as a [`Stream`](futures_core::Stream) of `map(&event)`
    /// (feature `async`), for `select!` and `StreamExt`. It takes up to
    /// `batch` events at a time into a buffer (committing them, so the
    /// producers may reuse their slots) and yields them one by one; items
    /// still buffered when the stream is dropped are lost to this
    /// subscriber. The stream ends after the last event once the producers
    /// are gone; on a halted bus it yields `Err(PollError::Halted)`, and
    /// once evicted (a lag limit) `Err(PollError::Lagged { .. })`, then
    /// ends. Dropping it unsubscribes, as for the poller. A `batch` of 0
    /// takes 1; one above the ring's capacity takes the capacity (no poll
    /// finds more), so `usize::MAX` means "whatever is there".
    pub fn into_stream<T, F>(self, batch: usize, map: F) -> EventStream<E, S, W, T, F>
    where
        F: FnMut(&E) -> T,
    {
        let batch = batch.clamp(1, self.bus.capacity() as usize);
        EventStream {
            poller: self,
            map,
            // Grown as needed: a batch of the whole ring may never fill.
            buffer: std::collections::VecDeque::with_capacity(batch.min(256)),
            batch,
            done: false,
        }
    }
}

/// An [`EventPoller`] as a [`Stream`](futures_core::Stream) of mapped,
/// owned items; made by [`EventPoller::into_stream`] (feature `async`).
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
#[must_use = "a stream does nothing unless polled; dropping it unsubscribes"]
pub struct EventStream<E, S, W, T, F>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    poller: EventPoller<E, S, W>,
    map: F,
    buffer: std::collections::VecDeque<T>,
    batch: usize,
    done: bool,
}

#[cfg(feature = "async")]
impl<E, S, W, T, F> std::fmt::Debug for EventStream<E, S, W, T, F>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("sequence", &self.poller.sequence())
            .field("buffered", &self.buffer.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

// No field is pinned structurally (the stream only ever takes `&mut` of
// them), so the stream may move whatever `T` and `F` are.
#[cfg(feature = "async")]
impl<E, S, W, T, F> Unpin for EventStream<E, S, W, T, F>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
}

#[cfg(feature = "async")]
impl<E, S, W, T, F> futures_core::Stream for EventStream<E, S, W, T, F>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: crate::wait_strategy::AsyncWait,
    F: FnMut(&E) -> T,
{
    type Item = Result<T, PollError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Some(item) = this.buffer.pop_front() {
            return Poll::Ready(Some(Ok(item)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let poller = &mut this.poller;
        let next = poller.sequence() + 1;
        match poller.poll_available(cx, next) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(available)) => {
                let (buffer, map, batch) = (&mut this.buffer, &mut this.map, this.batch);
                // A panic in `map` leaves the batch uncommitted (it comes
                // again): drop what was mapped of it, or it would be
                // yielded twice.
                let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    poller.handle(next, available, batch, |e, _, _| buffer.push_back(map(e)))
                }));
                match handled {
                    Err(panic) => {
                        this.buffer.clear();
                        std::panic::resume_unwind(panic);
                    }
                    Ok(Err(lagged)) => {
                        this.done = true;
                        Poll::Ready(Some(Err(lagged)))
                    }
                    Ok(Ok(_)) => Poll::Ready(this.buffer.pop_front().map(Ok)),
                }
            }
            // The producers are gone and everything was read: the end.
            Poll::Ready(Err(PollError::Closed)) => {
                this.done = true;
                Poll::Ready(None)
            }
            // Halted or evicted: say so, then end.
            Poll::Ready(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}
