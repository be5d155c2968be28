//! The loop of a stage with a sequence of its own: wait for what is
//! available, hand it to the handler (in chunks between looks at the halt
//! flag), release it, store the sequence once per batch, notify.

use std::cell::Cell;

use super::{ReleaseOnUnwind, StageContext};
use crate::consume::{Consume, Lookahead};
use crate::fault::Failure;
use crate::parking::Interrupt;
use crate::report::StageReport;
use crate::sequence::Sequence;
use crate::sequencer::Sequencer;
use crate::wait_strategy::WaitStrategy;
use crate::weaken;
use crate::weaken::Weaken;

/// Most events a stage handles between two looks at the halt flag.
pub(super) const HALT_CHECK_EVERY: Sequence = 256;

/// Fewest events in a batch whose chunks are timed: the chunk size adapts
/// so that a chunk takes about [`HALT_CHUNK_TIME`] (a slow handler then
/// sees a halt, and reports its progress, within about that time, or within
/// this many events when they take longer). Smaller batches are not timed
/// (a clock read per batch of one or two events would cost the latency
/// paths), and of a long batch only the first chunk once chunks are at
/// their largest (one clock read per batch for a fast stage).
const TIMED_CHUNK: Sequence = 16;

/// Events in a stage's first chunk of a long batch: a slow handler is
/// timed early; a fast one doubles its chunks to [`HALT_CHECK_EVERY`]
/// within a few chunks.
pub(crate) const FIRST_CHUNK: Sequence = 16;

/// How long one chunk of a long batch should take at most.
const HALT_CHUNK_TIME: std::time::Duration = std::time::Duration::from_millis(1);

/// How much of the ring, in bytes, one step of a stage that shares its
/// thread takes at most: the next stage on the thread then finds those
/// events still in the core's first-level cache, instead of a whole ring's
/// worth (which may not fit even the second level) fetched again per
/// stage. 16 KiB is half a typical L1d. On the pipeline with its stages on
/// one thread (`cargo bench --bench compare -- --scenarios
/// pipeline-1t,diamond-1t`, 9 rounds) steps of a whole ring kept 0.66x and
/// 0.64x the single-stage rate, steps of 16 KiB 0.78x and 0.73x; 4 and 64
/// KiB could not be told apart from 16 within this machine's noise.
const SHARED_STEP_BYTES: usize = 16 * 1024;

/// Events one step of a shared-thread stage takes at most (see
/// [`SHARED_STEP_BYTES`]): 16 KiB of them, but at least 64 (events over
/// 256 bytes take more) and at most 4096.
const fn shared_step<E>() -> Sequence {
    if cfg!(loom) {
        // Loom's models are a few events long: a step of one cuts their
        // batches (model 18).
        return 1;
    }
    let size = if std::mem::size_of::<E>() == 0 {
        1
    } else {
        std::mem::size_of::<E>()
    };
    let events = SHARED_STEP_BYTES / size;
    if events < 64 {
        64
    } else if events > 4096 {
        4096
    } else {
        events as Sequence
    }
}

impl<E, S: Sequencer, W: WaitStrategy> StageContext<E, S, W> {
    /// The stage's loop on a thread of its own: waits (the strategy's way)
    /// for each batch and hands it over, until the bus closes or halts or
    /// the stage fails.
    pub(super) fn process<C: Consume<E>>(
        &self,
        consumer: &mut C,
        report: &mut StageReport,
    ) -> Result<(), Failure> {
        let mut next = self.cell.sequence.get_relaxed() + 1;
        // The last event fully handled, so that a panic (caught at the
        // thread's top) still releases the events before it downstream.
        let progress = Cell::new(next - 1);
        let _release = ReleaseOnUnwind {
            cell: &self.cell,
            progress: &progress,
            enabled: !C::DEFERS_RELEASE,
        };
        self.hook(|| consumer.on_start());
        loop {
            let available = match self.wait_for(next) {
                Ok(available) => available,
                Err(Interrupt::Timeout) => {
                    self.hook(|| consumer.on_timeout(next - 1));
                    continue;
                }
                Err(interrupt) => {
                    self.stop_on(interrupt, report);
                    break;
                }
            };
            // SAFETY: the barrier reported `next..=available`, and our
            // sequence is `next - 1` (stored by the batch before).
            if !unsafe { self.handle_batch(consumer, next, available, report, &progress) }? {
                break;
            }
            next = available + 1;
        }
        Ok(())
    }

    /// One step of a stage that shares its thread (see `group`): hands over
    /// what is available after `*next` without waiting, at most a first-level
    /// cache's worth of events (see [`SHARED_STEP_BYTES`]; a consumer that
    /// decides its own releases, the journal, takes all, for its group
    /// commit). `Ok(Some(true))`
    /// when it handled a batch, `Ok(Some(false))` when nothing was there,
    /// `Ok(None)` when the stage has ended (closed, halted, or its upstream
    /// failed).
    pub(super) fn step<C: Consume<E>>(
        &self,
        consumer: &mut C,
        next: &mut Sequence,
        report: &mut StageReport,
    ) -> Result<Option<bool>, Failure> {
        let available = match self.poll(*next) {
            Ok(Some(available)) if C::DEFERS_RELEASE => available,
            Ok(Some(available)) => available.min(*next + shared_step::<E>() - 1),
            Ok(None) => return Ok(Some(false)),
            Err(interrupt) => {
                self.stop_on(interrupt, report);
                return Ok(None);
            }
        };
        let progress = Cell::new(*next - 1);
        let _release = ReleaseOnUnwind {
            cell: &self.cell,
            progress: &progress,
            enabled: !C::DEFERS_RELEASE,
        };
        // SAFETY: the barrier reported `*next..=available`, and our
        // sequence is `*next - 1` (stored by the step before).
        if !unsafe { self.handle_batch(consumer, *next, available, report, &progress) }? {
            return Ok(None);
        }
        *next = available + 1;
        if weaken::STEP_SCAN {
            // Only to show the tests fail: the next scan starts at the cut
            // (issue #24, finding 1), inside a batch.
            self.scan.set(crate::sequencer::Scan::after(available));
        }
        Ok(Some(true))
    }

    /// Sizes the next chunk from how long the last one took: halved (or
    /// less) when it took longer than [`HALT_CHUNK_TIME`], doubled up to
    /// [`HALT_CHECK_EVERY`] when it took under a quarter of it.
    fn adapt_chunk(&self, took: std::time::Duration) {
        let chunk = self.chunk.get();
        let next = if took > HALT_CHUNK_TIME {
            let ratio = (took.as_nanos() / HALT_CHUNK_TIME.as_nanos()).max(2) as Sequence;
            (chunk / ratio).max(1)
        } else if took < HALT_CHUNK_TIME / 4 {
            (chunk * 2).min(HALT_CHECK_EVERY)
        } else {
            chunk
        };
        self.chunk.set(next);
    }

    /// A wait for events ended without any: after a failure upstream, stop
    /// the stages after this one too.
    fn stop_on(&self, interrupt: Interrupt, report: &mut StageReport) {
        // (`Lagged` is a subscriber's, never a stage's; `Closed` and a halt
        // end the stage as it is.)
        if interrupt == Interrupt::Halted && self.barrier.upstream_failed() {
            report.upstream_failed = true;
            self.cell.fail();
            self.bus.wake_all();
        }
    }

    /// Hands `next..=available` (reported available by the barrier) to the
    /// consumer under the stage's policy, releases what it may, stores the
    /// stage's sequence and notifies. `Ok(false)` when a halt cut the batch
    /// short (the stage ends); `progress` follows the events handled.
    ///
    /// # Safety
    /// This stage's barrier reported `next..=available` available, and the
    /// stage's sequence is `next - 1`.
    #[inline]
    unsafe fn handle_batch<C: Consume<E>>(
        &self,
        consumer: &mut C,
        next: Sequence,
        available: Sequence,
        report: &mut StageReport,
        progress: &Cell<Sequence>,
    ) -> Result<bool, Failure> {
        let bus = &*self.bus;
        let ring = bus.ring.view();
        let per_event = C::FALLIBLE || self.policy.needs_per_event_handling();
        self.hook(|| consumer.on_batch_start((available - next + 1) as u64));
        let mut done = next - 1;
        let mut failure = None;
        let whole = C::WHOLE_BATCH && (!per_event || C::FALLIBLE_RANGE);
        // Long batches are timed chunk by chunk (see `TIMED_CHUNK`).
        let timed = !whole && available - next + 1 >= TIMED_CHUNK;
        let mut chunks = 0u32;
        while done < available {
            // A halt stops the stage within a chunk, not at the end of a
            // batch that may span the whole ring (a `WHOLE_BATCH`
            // consumer is checked between batches).
            if bus.is_halted() {
                break;
            }
            chunks += 1;
            if done >= next
                && !C::DEFERS_RELEASE
                && (self.chunk.get() < HALT_CHECK_EVERY || chunks % 16 == 0)
            {
                // Within a long batch: what is handled is released now (at
                // every chunk of a slow handler, every 4,096 events of a
                // fast one), so a shutdown that times out reports it and
                // producers and the stages after this one may go on
                // (issue #24, item 7).
                self.cell.sequence.set(done, Weaken::Stage);
                bus.notify_progress(&self.cell);
            }
            let chunk_end = if whole {
                available
            } else {
                available.min(done + self.chunk.get())
            };
            // The first chunk of a long batch is timed, and every chunk
            // while they are short (a slow handler): a fast stage reads the
            // clock once per batch.
            let started = (timed && (done < next || self.chunk.get() < HALT_CHECK_EVERY))
                .then(std::time::Instant::now);
            if C::FALLIBLE_RANGE {
                // SAFETY: as below, for the range.
                let handled = unsafe {
                    self.handle_range(consumer, ring, done + 1, chunk_end, report, progress)
                };
                done = progress.get();
                if let Err(f) = handled {
                    failure = Some(f);
                    break;
                }
            } else if per_event {
                let first = done + 1;
                for sequence in first..=chunk_end {
                    // Handled one by one (a fallible handler, or a policy
                    // with retries, skips or dead letters): a halt stops
                    // the stage before the next event, so a halt that
                    // ended a retry's backoff calls the handler no more
                    // (the chunk's first event was checked above).
                    if sequence > first && bus.is_halted() {
                        break;
                    }
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
                // SAFETY: the barrier reported `next..=available` published
                // (or passed by every upstream stage; the caller's
                // promise), and our own sequence, which gates the producers through us or our
                // descendants, is still below `next`, so no producer
                // writes these slots meanwhile.
                unsafe { consumer.consume_range(ring, done + 1, chunk_end, available, progress) };
                done = chunk_end;
            }
            if let Some(started) = started {
                self.adapt_chunk(started.elapsed());
            }
        }
        // A consumer may hold back what it has not made durable; the
        // store must follow `release` (knob `durable_release` swaps them
        // to show tests/journal.rs catches it).
        let mut released = done;
        if weaken::DURABLE_RELEASE {
            self.cell.sequence.set(released, Weaken::Stage);
        }
        // Always a fresh scan (from one past what was found): a look-ahead
        // during a sync must see what was published meanwhile.
        let available_now = || self.available(Sequence::MAX);
        let ahead =
            (C::DEFERS_RELEASE && failure.is_none() && done == available).then_some(Lookahead {
                ring,
                available: &available_now,
            });
        if let Err((upto, release_failure)) = consumer.release(done, ahead.as_ref()) {
            released = upto;
            failure.get_or_insert(release_failure);
        }
        self.cell.sequence.set(released, Weaken::Stage);
        bus.notify_progress(&self.cell);
        if let Some(failure) = failure {
            return Err(failure);
        }
        // Short of `available` only after a halt.
        Ok(done == available)
    }
}
