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
//! fallible handler, takes the per-event path in `StageContext::handle_one`.
//!
//! One concept per file: the stage's place in the graph and its thread body
//! here, the loop of a stage with its own sequence in [`stage_loop`], a
//! work-pool worker's loop in [`pool`], and what the stage's failure policy
//! does with a failed event in [`failure`].

mod failure;
mod group;
mod pool;
mod stage_loop;

pub(crate) use group::{run_thread, StageTask, Task};
pub(crate) use stage_loop::FIRST_CHUNK;

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::barrier::{BarrierSources, SequenceBarrier, StageCell};
use crate::bus::Bus;
use crate::consume::Consume;
use crate::fault::{Failure, FailurePolicy};
use crate::loom::Arc;
use crate::parking::{Interrupt, PollResult};
#[cfg(not(loom))]
use crate::report::panic_message;
use crate::report::StageReport;
use crate::sequence::{AtomicSequence, Sequence};
use crate::sequencer::{Scan, Sequencer};
use crate::wait_strategy::WaitStrategy;
use crate::weaken::Weaken;

/// One stage's place in the graph.
pub(crate) struct StageContext<E, S, W> {
    pub(crate) bus: Arc<Bus<E, S, W>>,
    /// The stage's position in its builder.
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) cell: Arc<StageCell>,
    pub(crate) barrier: SequenceBarrier,
    pub(crate) timeout: Option<Duration>,
    pub(crate) policy: FailurePolicy<E>,
    /// For a work-pool worker: the pool's shared claim cursor.
    pub(crate) work: Option<Arc<AtomicSequence>>,
    /// Where the stage's next scan of the ring starts (see `Scan`).
    pub(crate) scan: Cell<Scan>,
    /// Events per chunk of a long batch (see `stage_loop::TIMED_CHUNK`).
    pub(crate) chunk: Cell<Sequence>,
    /// Handler code outside any event runs (the factory, `on_start`,
    /// `on_timeout`, the hand-back and so a handler's `Drop`): a panic
    /// caught while it is set is a panic, not a failed event (`conclude`).
    pub(crate) in_hook: Cell<bool>,
}

/// Failed polls in a row after which a latency-first stage starts to
/// prefetch the slot it waits for. Measured (`cargo bench --bench compare --
/// --scenarios spsc,batch64,latency,pingpong --impls ringbus,disruptor`,
/// both crates on plain busy spin, 7 rounds): prefetching after every failed
/// poll gave single publish 0.75x the disruptor crate; after 64, 1.10x
/// (1.05-1.14), with idle one-way p50 143 ns against 143 ns and the round
/// trip 282 ns against 354 ns.
const PREFETCH_AFTER_MISSES: u32 = 64;

impl<E, S: Sequencer, W: WaitStrategy> StageContext<E, S, W> {
    /// Runs the stage to its end; the body of a thread the stage has to
    /// itself. Returns what `hand_back` made of the handler too, unless it
    /// panicked. Everything that runs handler code (the factory, the loop,
    /// `on_shutdown`, the hand-back and so a handler's `Drop`) runs under
    /// one `catch_unwind`: a panic anywhere in it is the stage's failure.
    pub(crate) fn run<C: Consume<E>, H>(
        &self,
        make: impl FnOnce() -> C,
        hand_back: impl FnOnce(C) -> Option<H>,
    ) -> (StageReport, Option<H>) {
        let mut report = StageReport::named(&self.name);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut consumer = self.hook(make);
            let result = match &self.work {
                Some(work) => self.process_work(&mut consumer, work, &mut report),
                None => self.process(&mut consumer, &mut report),
            };
            // All of it handler code outside any event: `on_shutdown`,
            // the hand-back, and the handler's `Drop` on every path.
            self.hook(|| Self::shut_down(consumer, result, hand_back, &mut report))
        }));
        self.conclude(report, outcome)
    }

    /// Runs handler code outside any event (see `in_hook`).
    pub(crate) fn hook<T>(&self, f: impl FnOnce() -> T) -> T {
        let outer = self.in_hook.replace(true);
        let t = f();
        self.in_hook.set(outer);
        t
    }

    /// The stage's loop ended with `result`: calls the handler's
    /// `on_shutdown` and hands it back with `hand_back`, unless a panic
    /// stopped the stage. The caller runs this under `catch_unwind`.
    fn shut_down<C: Consume<E>, H>(
        mut consumer: C,
        result: Result<(), Failure>,
        hand_back: impl FnOnce(C) -> Option<H>,
        report: &mut StageReport,
    ) -> (Result<(), Failure>, Option<H>) {
        match result {
            // A handler whose panic stopped the stage is not called
            // again, not even `on_shutdown`, and not handed back: its
            // state is whatever the panic left.
            // (Dropped before the answer is made: a panic in its `Drop`
            // after that would leak the answer, rust-lang/rust#47949.)
            Err(Failure::Panic(message)) => {
                drop(consumer);
                (Err(Failure::Panic(message)), None)
            }
            result => {
                // A panic in `on_shutdown` fails the stage (the first
                // failure stays the report's) and counts as a panic, not
                // as a failed event: every event was handled. (Under loom
                // a panic is the model's verdict: not caught.)
                #[cfg(not(loom))]
                if let Err(payload) =
                    std::panic::catch_unwind(AssertUnwindSafe(|| consumer.on_shutdown()))
                {
                    report.panics += 1;
                    let first = result
                        .err()
                        .unwrap_or_else(|| Failure::Panic(panic_message(&*payload)));
                    // Before the answer is made, as above.
                    drop(consumer);
                    return (Err(first), None);
                }
                #[cfg(loom)]
                {
                    let _ = &report;
                    consumer.on_shutdown();
                }
                (result, hand_back(consumer))
            }
        }
    }

    /// Completes the report of a stage whose run ended with `outcome` (a
    /// panic's payload, or the loop's result and the handler), and stops
    /// the stages after it and the producers if it failed.
    fn conclude<C>(
        &self,
        mut report: StageReport,
        outcome: std::thread::Result<(Result<(), Failure>, Option<C>)>,
    ) -> (StageReport, Option<C>) {
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
                    // Not an event's failure when it came from a hook.
                    if !self.in_hook.get() {
                        report.failed += 1;
                    }
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
        self.bus.fail_stages([&*self.cell]);
    }

    /// The highest sequence `>= next - 1` the stage may read up to; the ring
    /// is scanned from one past what the stage's scans found before (see
    /// `Scan`), whatever part of that it handed over.
    #[inline(always)]
    fn available(&self, next: Sequence) -> Sequence {
        let mut scan = self.scan.get();
        let available = self.barrier.available(&self.bus.sequencer, &mut scan, next);
        self.scan.set(scan);
        available
    }

    /// The highest available sequence `>= next`, or why there is none.
    #[inline]
    fn wait_for(&self, next: Sequence) -> Result<Sequence, Interrupt> {
        let bus = &*self.bus;
        let available = self.available(next);
        if available >= next {
            return Ok(available);
        }
        let deadline = self.timeout.and_then(crate::wait_strategy::deadline_after);
        if !W::LATENCY_FIRST {
            return bus
                .strategy
                .wait(&self.sources(), deadline, || self.poll(next));
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
        bus.strategy.wait(&self.sources(), deadline, || {
            let found = self.poll(next);
            if let Ok(None) = found {
                misses = misses.saturating_add(1);
                if misses >= PREFETCH_AFTER_MISSES {
                    ring.prefetch(next);
                }
            }
            found
        })
    }

    /// What the stage waits on: the signals of its upstream stages, or the
    /// bus's publish stripes when it reads the ring.
    #[inline]
    pub(crate) fn sources(&self) -> BarrierSources<'_> {
        BarrierSources {
            published: &self.bus.signals,
            barrier: &self.barrier,
        }
    }

    /// One look for `next`: see [`wait_for`](Self::wait_for).
    #[inline(always)]
    fn poll(&self, next: Sequence) -> PollResult<Sequence> {
        let bus = &*self.bus;
        let available = self.available(next);
        if available >= next {
            Ok(Some(available))
        } else if bus.is_halted() || self.barrier.blocked_by_failure(next) {
            Err(Interrupt::Halted)
        } else if bus.nothing_more_at(next) {
            // Seen after the producers' last publish (Acquire): look once
            // more before stopping.
            let available = self.available(next);
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
