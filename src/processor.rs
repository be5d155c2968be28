//! The managed consumer: one thread per handler, reading through its barrier.
//!
//! The loop waits for the next available sequence, runs the handler over the
//! whole available batch, then stores the stage's sequence once (Release) and
//! notifies parked threads. A panic anywhere in the handler is caught at the
//! thread's top (free on the path where nothing panics), halts the bus so no
//! producer or other stage waits forever on this one, and is reported by
//! `shutdown()`.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::barrier::SequenceBarrier;
use crate::bus::Bus;
use crate::handler::{EventHandler, EventHandlerMut};
use crate::loom::{Arc, Weaken};
use crate::ring_buffer::RingView;
use crate::sequence::{AtomicSequence, Sequence};
use crate::sequencer::Sequencer;
use crate::wait_strategy::{Interrupt, WaitStrategy};

/// Events a stage handles between two looks at the halt flag.
const HALT_CHECK_EVERY: Sequence = 256;

/// What a stage did, as returned by `shutdown()`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageReport {
    /// The stage's thread name.
    pub name: String,
    /// Events its handler was given.
    pub processed: u64,
    /// The panic message, if its handler panicked.
    pub panic: Option<String>,
}

impl StageReport {
    pub(crate) fn lost() -> Self {
        Self {
            name: String::from("<unknown>"),
            processed: 0,
            panic: Some(String::from("the stage thread could not be joined")),
        }
    }
}

/// What every stage did, in the order the stages were added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// One entry per stage.
    pub stages: Vec<StageReport>,
}

/// A handler seen through the one interface the loop needs.
pub(crate) trait Consume<E> {
    fn on_start(&mut self);
    fn on_shutdown(&mut self);
    fn on_timeout(&mut self, sequence: Sequence);
    fn on_batch_start(&mut self, size: u64);
    /// # Safety
    /// The caller holds read permission for `sequence` (and write permission
    /// for a mutating stage).
    unsafe fn consume(&mut self, ring: RingView<'_, E>, sequence: Sequence, end_of_batch: bool);
}

/// A stage that reads events.
pub(crate) struct Reader<H>(pub(crate) H);
/// A stage that mutates events.
pub(crate) struct Writer<H>(pub(crate) H);

impl<E, H: EventHandler<E>> Consume<E> for Reader<H> {
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
    fn on_batch_start(&mut self, size: u64) {
        self.0.on_batch_start(size)
    }
    #[inline]
    unsafe fn consume(&mut self, ring: RingView<'_, E>, sequence: Sequence, end_of_batch: bool) {
        // SAFETY: the loop only passes sequences its barrier reported available
        // and its own (gating) sequence has not passed yet.
        unsafe { ring.read(sequence, |e| self.0.on_event(e, sequence, end_of_batch)) }
    }
}

impl<E, H: EventHandlerMut<E>> Consume<E> for Writer<H> {
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
    fn on_batch_start(&mut self, size: u64) {
        self.0.on_batch_start(size)
    }
    #[inline]
    unsafe fn consume(&mut self, ring: RingView<'_, E>, sequence: Sequence, end_of_batch: bool) {
        // SAFETY: as for `Reader`, and the builder proved every other stage
        // reading this event is ordered before or after this one (no stage
        // runs concurrently with a mutating stage), so the access is exclusive.
        unsafe { ring.write(sequence, |e| self.0.on_event(e, sequence, end_of_batch)) }
    }
}

/// One stage's place in the graph.
pub(crate) struct StageContext<E, S, W> {
    pub(crate) bus: Arc<Bus<E, S, W>>,
    pub(crate) name: String,
    pub(crate) sequence: Arc<AtomicSequence>,
    pub(crate) barrier: SequenceBarrier,
    pub(crate) timeout: Option<Duration>,
}

impl<E, S: Sequencer, W: WaitStrategy> StageContext<E, S, W> {
    /// Runs the stage to its end; the body of the stage thread.
    pub(crate) fn run<C: Consume<E>>(self, make: impl FnOnce() -> C) -> StageReport {
        let mut processed = 0;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut consumer = make();
            self.process(&mut consumer, &mut processed);
        }));
        let panic = outcome.err().map(|payload| {
            // Halt so no producer or stage waits on this one forever.
            self.bus.halt();
            // Under loom a panic is the model reporting a violation: let it
            // reach the model instead of turning it into a halt.
            #[cfg(loom)]
            std::panic::resume_unwind(payload);
            #[cfg(not(loom))]
            panic_message(&*payload)
        });
        self.bus.thread_finished();
        StageReport {
            name: self.name,
            processed,
            panic,
        }
    }

    fn process<C: Consume<E>>(&self, consumer: &mut C, processed: &mut u64) {
        let bus = &*self.bus;
        let ring = bus.ring.view();
        consumer.on_start();
        let mut next = self.sequence.get_relaxed() + 1;
        loop {
            let available = match self.wait_for(next) {
                Ok(available) => available,
                Err(Interrupt::Timeout) => {
                    consumer.on_timeout(next - 1);
                    continue;
                }
                Err(Interrupt::Closed | Interrupt::Halted) => break,
            };
            consumer.on_batch_start((available - next + 1) as u64);
            let mut done = next - 1;
            while done < available {
                // A halt stops the stage within a chunk, not at the end of a
                // batch that may span the whole ring.
                if bus.is_halted() {
                    break;
                }
                let chunk_end = available.min(done + HALT_CHECK_EVERY);
                // SAFETY: `wait_for` reported `next..=available` published (or
                // passed by every upstream stage), and our own sequence, which
                // gates the producers through us or our descendants, is still
                // below `next`, so no producer writes these slots meanwhile.
                unsafe { consume_range(consumer, ring, done + 1, chunk_end, available) };
                done = chunk_end;
            }
            *processed += (done - next + 1) as u64;
            self.sequence.set(done, Weaken::Stage);
            bus.notify();
            if done < available {
                break;
            }
            next = available + 1;
        }
        consumer.on_shutdown();
    }

    /// The highest available sequence `>= next`, or why there is none.
    #[inline]
    fn wait_for(&self, next: Sequence) -> Result<Sequence, Interrupt> {
        let bus = &*self.bus;
        let available = self.barrier.available(&bus.sequencer, next);
        if available >= next {
            return Ok(available);
        }
        let deadline = self.timeout.map(|t| Instant::now() + t);
        bus.strategy.wait(&bus.signal, deadline, || {
            let available = self.barrier.available(&bus.sequencer, next);
            if available >= next {
                Ok(Some(available))
            } else if bus.is_halted() {
                Err(Interrupt::Halted)
            } else if bus.closed_at().is_some_and(|last| next > last) {
                Err(Interrupt::Closed)
            } else {
                Ok(None)
            }
        })
    }
}

/// Hands `from..=to` to the handler; `end_of_batch` is true only at `last`.
///
/// # Safety
/// As for [`Consume::consume`], for every sequence of the range.
#[inline(always)]
unsafe fn consume_range<E, C: Consume<E>>(
    consumer: &mut C,
    ring: RingView<'_, E>,
    from: Sequence,
    to: Sequence,
    last: Sequence,
) {
    // The last event of the batch is handled apart, so the loop body carries
    // no end-of-batch comparison.
    let plain_end = if to == last { to } else { to + 1 };
    for sequence in from..plain_end {
        // SAFETY: the caller's permission covers the range.
        unsafe { consumer.consume(ring, sequence, false) };
    }
    if to == last {
        // SAFETY: as above.
        unsafe { consumer.consume(ring, last, true) };
    }
}

#[cfg_attr(loom, allow(dead_code))]
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("<non-string panic payload>")
    }
}
