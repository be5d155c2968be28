//! The managed consumer: one thread per handler, reading through its barrier.
//!
//! The loop waits for the next available sequence, runs the handler over the
//! whole available batch, then stores the stage's sequence once (Release) and
//! notifies parked threads.
//!
//! Failures follow the stage's [`FailurePolicy`]. With the default (halt) and
//! an infallible handler, the loop has no per-event failure handling at all:
//! a panic is caught at the thread's top (free while nothing panics). The
//! stage then stops, marks itself failed so the stages after it stop too,
//! and makes producers get `Err(Halted)`; stages that do not depend on it go
//! on draining until the producers are dropped. Any other policy, or a
//! fallible handler, takes the per-event path in [`StageContext::handle_one`].

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::barrier::{SequenceBarrier, StageCell};
use crate::bus::Bus;
use crate::fault::{Failure, FailurePolicy, Finally};
use crate::handler::{
    forward_lifecycle, Batch, BatchEventHandler, EventHandler, EventHandlerMut,
    TryBatchEventHandler, TryEventHandler,
};
use crate::loom::{self, Arc, Weaken};
use crate::ring_buffer::RingView;
use crate::sequence::{AtomicSequence, Sequence};
use crate::sequencer::Sequencer;
use crate::wait_strategy::{Interrupt, PollResult, WaitStrategy};

/// Failed polls in a row after which a latency-first stage starts to
/// prefetch the slot it waits for. Measured (`cargo bench --bench compare --
/// --scenarios spsc,batch64,latency,pingpong --impls ringbus,disruptor`,
/// both crates on plain busy spin, 7 rounds): prefetching after every failed
/// poll gave single publish 0.75x the disruptor crate; after 64, 1.10x
/// (1.05-1.14), with idle one-way p50 143 ns against 143 ns and the round
/// trip 282 ns against 354 ns.
const PREFETCH_AFTER_MISSES: u32 = 64;

/// Events a stage handles between two looks at the halt flag.
const HALT_CHECK_EVERY: Sequence = 256;

/// What a stage did, as returned by `shutdown()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageReport {
    /// The stage's thread name.
    pub name: String,
    /// Events the stage moved past: handled, skipped or dead-lettered.
    pub processed: u64,
    /// Events its handler handled successfully.
    pub handled: u64,
    /// Events whose handling failed after every retry (skipped,
    /// dead-lettered, or the one that stopped the stage).
    pub failed: u64,
    /// Retry attempts.
    pub retried: u64,
    /// Failed events handed to the dead-letter sink.
    pub dead_lettered: u64,
    /// Failed events skipped.
    pub skipped: u64,
    /// Panics caught (every attempt counts).
    pub panics: u64,
    /// Why the stage stopped early, if it did.
    pub failure: Option<Failure>,
    /// True when the stage stopped because a stage it depends on failed.
    pub upstream_failed: bool,
    /// True when a timed-out shutdown left the stage still running (stuck
    /// in its handler): the counts are unknown, and its thread finishes on
    /// its own once the handler returns.
    pub still_running: bool,
}

impl StageReport {
    pub(crate) fn still_running(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            still_running: true,
            ..Self::default()
        }
    }

    pub(crate) fn lost() -> Self {
        Self {
            name: String::from("<unknown>"),
            failure: Some(Failure::Panic(String::from(
                "the stage thread could not be joined",
            ))),
            ..Self::default()
        }
    }
}

/// A stage thread's result: its report and, for handlers added with a value
/// (`Send`), the handler itself.
pub(crate) type StageOutcome = (StageReport, Option<Box<dyn Any + Send>>);

/// What every stage did, in the order the stages were added.
#[derive(Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// One entry per stage.
    pub stages: Vec<StageReport>,
    /// The handlers given by value, returned after their last event.
    states: Vec<Option<Box<dyn Any + Send>>>,
}

impl std::fmt::Debug for ShutdownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownReport")
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

impl ShutdownReport {
    pub(crate) fn new(stages: Vec<StageReport>, states: Vec<Option<Box<dyn Any + Send>>>) -> Self {
        Self { stages, states }
    }

    /// Takes back the handler of stage `index` (in the order stages were
    /// added), with its final state: for handlers added by value with
    /// `handle_events_with`, `mutate_events_with`, `try_handle_events_with`
    /// or `handle_batches_with` that ended without a panic (and the journal
    /// stage's writer). `None` for other stages, a wrong type `H`,
    /// or a second call.
    pub fn take_handler<H: 'static>(&mut self, index: usize) -> Option<H> {
        let state = self.states.get_mut(index)?.take()?;
        match state.downcast::<H>() {
            Ok(handler) => Some(*handler),
            Err(state) => {
                self.states[index] = Some(state);
                None
            }
        }
    }
}

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
    ring: RingView<'a, E>,
    available: &'a dyn Fn() -> Sequence,
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

    fn on_start(&mut self) {
        self.0.on_start()
    }
    fn on_shutdown(&mut self) {
        self.0.on_shutdown()
    }
    fn on_timeout(&mut self, sequence: Sequence) {
        self.0.on_timeout(sequence)
    }
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

    fn on_start(&mut self) {
        self.0.on_start()
    }
    fn on_shutdown(&mut self) {
        self.0.on_shutdown()
    }
    fn on_timeout(&mut self, sequence: Sequence) {
        self.0.on_timeout(sequence)
    }
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

/// One stage's place in the graph.
pub(crate) struct StageContext<E, S, W> {
    pub(crate) bus: Arc<Bus<E, S, W>>,
    pub(crate) name: String,
    pub(crate) cell: Arc<StageCell>,
    pub(crate) barrier: SequenceBarrier,
    pub(crate) timeout: Option<Duration>,
    pub(crate) policy: FailurePolicy<E>,
    /// For a work-pool worker: the pool's shared claim cursor.
    pub(crate) work: Option<Arc<AtomicSequence>>,
}

impl<E, S: Sequencer, W: WaitStrategy> StageContext<E, S, W> {
    /// Runs the stage to its end; the body of the stage thread. Returns the
    /// handler too, unless it panicked.
    pub(crate) fn run<C: Consume<E>>(self, make: impl FnOnce() -> C) -> (StageReport, Option<C>) {
        let mut report = StageReport {
            name: self.name.clone(),
            ..StageReport::default()
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut consumer = make();
            let result = match &self.work {
                Some(work) => self.process_work(&mut consumer, work, &mut report),
                None => self.process(&mut consumer, &mut report),
            };
            match result {
                // A handler whose panic stopped the stage is not called
                // again, not even `on_shutdown`, and not handed back: its
                // state is whatever the panic left.
                Err(Failure::Panic(message)) => (Err(Failure::Panic(message)), None),
                result => {
                    consumer.on_shutdown();
                    (result, Some(consumer))
                }
            }
        }));
        let (failure, handler) = match outcome {
            Ok((result, consumer)) => (result.err(), consumer),
            Err(payload) => {
                // Under loom a panic is the model reporting a violation: let
                // it reach the model instead of turning it into a failure.
                #[cfg(loom)]
                std::panic::resume_unwind(payload);
                #[cfg(not(loom))]
                {
                    report.panics += 1;
                    report.failed += 1;
                    (Some(Failure::Panic(panic_message(&*payload))), None)
                }
            }
        };
        if failure.is_some() {
            self.fail();
        }
        if self.work.is_some() {
            // A worker handles only its share; it counted them.
            report.processed = report.handled + report.skipped + report.dead_lettered;
        } else {
            // Stages start at sequence 0, so the last sequence passed says
            // how many events the stage moved past.
            report.processed = (self.cell.sequence.get_relaxed() + 1) as u64;
        }
        if self.work.is_none()
            && report.handled + report.skipped + report.dead_lettered < report.processed
        {
            // The fast path counts nothing per event: all of it was handled.
            report.handled = report.processed - report.skipped - report.dead_lettered;
        }
        report.failure = failure;
        (report, handler)
    }

    /// Stops the stages after this one and refuses producers.
    fn fail(&self) {
        self.cell.fail();
        self.bus.refuse_producers();
    }

    fn process<C: Consume<E>>(
        &self,
        consumer: &mut C,
        report: &mut StageReport,
    ) -> Result<(), Failure> {
        let bus = &*self.bus;
        let ring = bus.ring.view();
        let per_event = C::FALLIBLE || self.policy.needs_per_event_handling();
        let mut next = self.cell.sequence.get_relaxed() + 1;
        // The last event fully handled, so that a panic (caught at the
        // thread's top) still releases the events before it downstream.
        let progress = Cell::new(next - 1);
        let _release = ReleaseOnUnwind {
            cell: &self.cell,
            progress: &progress,
            enabled: !C::DEFERS_RELEASE,
        };
        consumer.on_start();
        loop {
            let available = match self.wait_for(next, next) {
                Ok(available) => available,
                Err(Interrupt::Timeout) => {
                    consumer.on_timeout(next - 1);
                    continue;
                }
                Err(Interrupt::Halted) if self.barrier.upstream_failed() => {
                    // Stop the stages after us too.
                    report.upstream_failed = true;
                    self.cell.fail();
                    bus.signal.notify_all();
                    break;
                }
                // (`Lagged` is a subscriber's, never a stage's.)
                Err(Interrupt::Closed | Interrupt::Halted | Interrupt::Lagged(_)) => break,
            };
            consumer.on_batch_start((available - next + 1) as u64);
            let mut done = next - 1;
            let mut failure = None;
            while done < available {
                // A halt stops the stage within a chunk, not at the end of a
                // batch that may span the whole ring (a `WHOLE_BATCH`
                // consumer is checked between batches).
                if bus.is_halted() {
                    break;
                }
                let chunk_end = if C::WHOLE_BATCH && (!per_event || C::FALLIBLE_RANGE) {
                    available
                } else {
                    available.min(done + HALT_CHECK_EVERY)
                };
                if C::FALLIBLE_RANGE {
                    // SAFETY: as below, for the range.
                    let handled = unsafe {
                        self.handle_range(consumer, ring, done + 1, chunk_end, report, &progress)
                    };
                    done = progress.get();
                    if let Err(f) = handled {
                        failure = Some(f);
                        break;
                    }
                } else if per_event {
                    for sequence in done + 1..=chunk_end {
                        // SAFETY: as below, for one sequence of the range.
                        let handled = unsafe {
                            self.handle_one(consumer, ring, sequence, sequence == available, report)
                        };
                        if let Err(f) = handled {
                            failure = Some(f);
                            break;
                        }
                        done = sequence;
                        progress.set(done);
                    }
                    if failure.is_some() {
                        break;
                    }
                } else {
                    // SAFETY: `wait_for` reported `next..=available` published
                    // (or passed by every upstream stage), and our own
                    // sequence, which gates the producers through us or our
                    // descendants, is still below `next`, so no producer
                    // writes these slots meanwhile.
                    unsafe {
                        consumer.consume_range(ring, done + 1, chunk_end, available, &progress)
                    };
                    done = chunk_end;
                }
            }
            // A consumer may hold back what it has not made durable; the
            // store must follow `release` (knob `durable_release` swaps them
            // to show tests/journal.rs catches it).
            let mut released = done;
            if cfg!(ringbus_weaken = "durable_release") {
                self.cell.sequence.set(released, Weaken::Stage);
            }
            let available_now = || self.barrier.available(&bus.sequencer, done + 1);
            let ahead = (C::DEFERS_RELEASE && failure.is_none() && done == available).then_some(
                Lookahead {
                    ring,
                    available: &available_now,
                },
            );
            if let Err((upto, release_failure)) = consumer.release(done, ahead.as_ref()) {
                released = upto;
                failure.get_or_insert(release_failure);
            }
            self.cell.sequence.set(released, Weaken::Stage);
            bus.notify();
            if let Some(failure) = failure {
                return Err(failure);
            }
            if done < available {
                break;
            }
            next = available + 1;
        }
        Ok(())
    }

    /// A work-pool worker (after LMAX's `WorkProcessor`): each event goes to
    /// exactly one worker of the pool.
    ///
    /// Before claiming, a worker raises its own sequence towards the pool
    /// cursor's current value (everything up to it is claimed by someone),
    /// then claims the next sequence with a CAS. So while a worker handles
    /// `k` its sequence is below `k`, and the minimum over the pool, which is
    /// what later stages and the producers wait on, never passes an event
    /// still being handled. The Release store of a worker's sequence comes
    /// after it finished its previous event, so a stage that acquires the
    /// minimum sees every handled event's effects.
    ///
    /// A worker's sequence also never passes `available`, where its next
    /// scan of the ring starts: the other workers may have claimed and
    /// finished far beyond what this worker has scanned, and a sequence
    /// raised to theirs would let producers lap the scan's start, whose
    /// slot would then hold a later lap's mark (a scan following it reads
    /// slots still being written). While it waits, the worker raises its
    /// sequence with every newly available event (up to `next - 1`), so a
    /// lagging scan never holds the producers back for good.
    fn process_work<C: Consume<E>>(
        &self,
        consumer: &mut C,
        work: &AtomicSequence,
        report: &mut StageReport,
    ) -> Result<(), Failure> {
        let bus = &*self.bus;
        let ring = bus.ring.view();
        let per_event = C::FALLIBLE || self.policy.needs_per_event_handling();
        // What the barrier reported; the next scan starts right after it.
        let mut available = self.cell.sequence.get_relaxed();
        let raise = |to: Sequence| {
            if to > self.cell.sequence.get_relaxed() {
                self.cell.sequence.set(to, Weaken::Stage);
                bus.notify();
            }
        };
        consumer.on_start();
        'claims: loop {
            let next = loop {
                let current = work.get_relaxed();
                if cfg!(ringbus_weaken = "pool_scan") {
                    // Only to show the loom model fails without the bound.
                    self.cell.sequence.set(current, Weaken::Stage);
                } else {
                    raise(current.min(available));
                }
                if cfg!(ringbus_weaken = "work_claim") {
                    // Only to show the loom model fails without the CAS.
                    work.set(current + 1, Weaken::Stage);
                    break current + 1;
                }
                if work.compare_exchange(current, current + 1) {
                    break current + 1;
                }
            };
            while next > available {
                // Anything new, not only `next`: see above.
                let wanted = if cfg!(ringbus_weaken = "pool_scan") {
                    next
                } else {
                    available + 1
                };
                match self.wait_for(available + 1, wanted) {
                    Ok(a) => {
                        available = a;
                        raise(a.min(next - 1));
                    }
                    // The claim stands: keep waiting for it.
                    Err(Interrupt::Timeout) => {
                        consumer.on_timeout(self.cell.sequence.get_relaxed())
                    }
                    Err(Interrupt::Halted) if self.barrier.upstream_failed() => {
                        report.upstream_failed = true;
                        self.cell.fail();
                        bus.signal.notify_all();
                        break 'claims;
                    }
                    Err(Interrupt::Closed | Interrupt::Halted | Interrupt::Lagged(_)) => {
                        break 'claims
                    }
                }
            }
            if bus.is_halted() {
                break;
            }
            let before = report.skipped + report.dead_lettered;
            // SAFETY: `next` is published (or passed by every upstream stage),
            // and our sequence, below `next` since before the claim, gates the
            // producers through us or our descendants; the CAS gave `next` to
            // this worker alone.
            let outcome = unsafe {
                if per_event {
                    self.handle_one(consumer, ring, next, next == available, report)
                } else {
                    consumer.consume(ring, next, next == available)
                }
            };
            if let Err(failure) = outcome {
                if !per_event {
                    report.failed += 1;
                }
                return Err(failure);
            }
            if report.skipped + report.dead_lettered == before {
                report.handled += 1;
            }
            // Relaxed: a count for metrics, written by this worker alone.
            self.cell
                .count_work(report.handled + report.skipped + report.dead_lettered);
        }
        Ok(())
    }

    /// Handles one event under the stage's policy: `Ok` when the stage may go
    /// on (handled, skipped or dead-lettered), `Err` when it must stop.
    ///
    /// # Safety
    /// As for [`Consume::consume`].
    unsafe fn handle_one<C: Consume<E>>(
        &self,
        consumer: &mut C,
        ring: RingView<'_, E>,
        sequence: Sequence,
        end_of_batch: bool,
        report: &mut StageReport,
    ) -> Result<(), Failure> {
        let catch = self.policy.needs_per_event_handling() && !cfg!(loom);
        let mut attempt = 0;
        loop {
            let outcome = if catch {
                // SAFETY: the caller's permission for `sequence`.
                let call = || unsafe { consumer.consume(ring, sequence, end_of_batch) };
                catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|payload| {
                    report.panics += 1;
                    Err(Failure::Panic(panic_message(&*payload)))
                })
            } else {
                // SAFETY: the caller's permission for `sequence`.
                unsafe { consumer.consume(ring, sequence, end_of_batch) }
            };
            let Err(failure) = outcome else {
                return Ok(());
            };
            if self.retry_after(&mut attempt, report) {
                continue;
            }
            // SAFETY: the caller's permission for `sequence`; the handler's
            // access ended when `consume` returned.
            return unsafe { self.give_up(ring, sequence, failure, report) };
        }
    }

    /// After a failed attempt: true (once the backoff has passed) when the
    /// stage's policy retries the event, counting the retry.
    fn retry_after(&self, attempt: &mut u32, report: &mut StageReport) -> bool {
        if *attempt < self.policy.retries && !self.bus.is_halted() {
            *attempt += 1;
            report.retried += 1;
            loom::sleep(self.policy.backoff_for(*attempt));
            return true;
        }
        false
    }

    /// Retries used up: applies the policy's last word to `sequence`. `Ok`
    /// when the stage moves past it (skipped or dead-lettered), `Err` when
    /// it must stop.
    ///
    /// # Safety
    /// The caller holds read permission for `sequence`, and no handler
    /// call is accessing it.
    unsafe fn give_up(
        &self,
        ring: RingView<'_, E>,
        sequence: Sequence,
        failure: Failure,
        report: &mut StageReport,
    ) -> Result<(), Failure> {
        report.failed += 1;
        match &self.policy.finally {
            Finally::Halt => Err(failure),
            Finally::Skip => {
                report.skipped += 1;
                Ok(())
            }
            Finally::DeadLetter(sink) => {
                // SAFETY: the caller's permission for `sequence`.
                unsafe { ring.read(sequence, |e| sink(&self.name, e, sequence, &failure)) };
                report.dead_lettered += 1;
                Ok(())
            }
        }
    }

    /// Hands `from..=to` to a range consumer under the stage's policy,
    /// which applies to the one event a call reports failed; `progress`
    /// follows the events the stage may move past. `Err` when the stage
    /// must stop (`progress` is then just below the failed event).
    ///
    /// # Safety
    /// As for [`Consume::consume_range`].
    unsafe fn handle_range<C: Consume<E>>(
        &self,
        consumer: &mut C,
        ring: RingView<'_, E>,
        from: Sequence,
        to: Sequence,
        report: &mut StageReport,
        progress: &Cell<Sequence>,
    ) -> Result<(), Failure> {
        let catch = self.policy.needs_per_event_handling() && !cfg!(loom);
        let (mut start, mut attempt, mut failed_at) = (from, 0, None);
        // After a panic in a call of several events, the events up to its
        // end go one per call, so that the panic is found at its event.
        let mut one_by_one_until = None;
        while start <= to {
            if self.bus.is_halted() {
                // `progress` says how far it got; the loop sees the halt.
                return Ok(());
            }
            let end = match one_by_one_until {
                Some(until) if start <= until => start,
                _ => to,
            };
            // SAFETY: the caller's permission for `from..=to`.
            let mut call = || unsafe { consumer.try_consume_range(ring, start, end) };
            let outcome = if catch {
                match catch_unwind(AssertUnwindSafe(&mut call)) {
                    Ok(outcome) => outcome,
                    Err(payload) => {
                        report.panics += 1;
                        if end > start {
                            one_by_one_until = Some(end);
                            continue;
                        }
                        Err((start, Failure::Panic(panic_message(&*payload))))
                    }
                }
            } else {
                call()
            };
            let Err((at, failure)) = outcome else {
                progress.set(end);
                start = end + 1;
                continue;
            };
            progress.set(at - 1);
            if failed_at != Some(at) {
                // A new event failed: its own count of retries.
                (failed_at, attempt) = (Some(at), 0);
            }
            start = at;
            if self.retry_after(&mut attempt, report) {
                continue;
            }
            // SAFETY: the caller's permission for `at`; the handler's access
            // ended when its call returned.
            unsafe { self.give_up(ring, at, failure, report) }?;
            progress.set(at);
            start = at + 1;
        }
        Ok(())
    }

    /// The highest available sequence `>= next`, or why there is none. The
    /// ring is scanned from `from` (`<= next`).
    #[inline]
    fn wait_for(&self, from: Sequence, next: Sequence) -> Result<Sequence, Interrupt> {
        let bus = &*self.bus;
        let available = self.barrier.available(&bus.sequencer, from);
        if available >= next {
            return Ok(available);
        }
        let deadline = self.timeout.and_then(crate::wait_strategy::deadline_after);
        if !W::LATENCY_FIRST {
            return bus
                .strategy
                .wait(&bus.signal, deadline, || self.poll(from, next));
        }
        // Latency first: once the bus looks idle, prefetch the slot we wait
        // for after every failed poll, so its line travels while we wait for
        // the cursor's, not after it. Pulling the slot over while the
        // producer (or an upstream stage) still works on it stalls that
        // writer's stores, harmless for correctness but costly for
        // throughput; a stage that keeps up with a busy producer fails only
        // a few polls in a row, so it does not prefetch.
        let ring = bus.ring.view();
        let mut misses = 0u32;
        bus.strategy.wait(&bus.signal, deadline, || {
            let found = self.poll(from, next);
            if let Ok(None) = found {
                misses = misses.saturating_add(1);
                if misses >= PREFETCH_AFTER_MISSES {
                    ring.prefetch(next);
                }
            }
            found
        })
    }

    /// One look for `next`: see [`wait_for`](Self::wait_for).
    #[inline(always)]
    fn poll(&self, from: Sequence, next: Sequence) -> PollResult<Sequence> {
        let bus = &*self.bus;
        let available = self.barrier.available(&bus.sequencer, from);
        if available >= next {
            Ok(Some(available))
        } else if bus.is_halted() || self.barrier.blocked_by_failure(next) {
            Err(Interrupt::Halted)
        } else if bus.nothing_more_at(next) {
            // Seen after the producers' last publish (Acquire): look once
            // more before stopping.
            let available = self.barrier.available(&bus.sequencer, from);
            if available >= next {
                Ok(Some(available))
            } else {
                Err(Interrupt::Closed)
            }
        } else {
            Ok(None)
        }
    }
}

/// Hands `from..=to` to the handler one event at a time; `end_of_batch` is
/// true only at `last`.
///
/// # Safety
/// As for [`Consume::consume`], for every sequence of the range.
#[inline(always)]
unsafe fn consume_each<E, C: Consume<E>>(
    consumer: &mut C,
    ring: RingView<'_, E>,
    from: Sequence,
    to: Sequence,
    last: Sequence,
    progress: &Cell<Sequence>,
) {
    // The last event of the batch is handled apart, so the loop body carries
    // no end-of-batch comparison. Infallible consumers only: results are Ok.
    let plain_end = if to == last { to } else { to + 1 };
    for sequence in from..plain_end {
        // SAFETY: the caller's permission covers the range.
        let _ = unsafe { consumer.consume(ring, sequence, false) };
        progress.set(sequence);
    }
    if to == last {
        // SAFETY: as above.
        let _ = unsafe { consumer.consume(ring, last, true) };
        progress.set(last);
    }
}

/// On a panic through the stage loop, publishes the stage's progress up to
/// the event before the one that panicked (or before the batch that
/// panicked, for a batch handler), so the stages after it get every event
/// this stage finished (then see it failed and stop).
struct ReleaseOnUnwind<'a> {
    cell: &'a StageCell,
    progress: &'a Cell<Sequence>,
    /// False for a consumer that decides what may be released.
    enabled: bool,
}

impl Drop for ReleaseOnUnwind<'_> {
    fn drop(&mut self) {
        if self.enabled && std::thread::panicking() {
            self.cell.sequence.set(self.progress.get(), Weaken::Stage);
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("<non-string panic payload>")
    }
}
