//! A work-pool worker's loop: each event goes to exactly one worker.

use super::StageContext;
use crate::consume::Consume;
use crate::fault::Failure;
use crate::parking::Interrupt;
use crate::report::StageReport;
use crate::sequence::{AtomicSequence, Sequence};
use crate::sequencer::Sequencer;
use crate::wait_strategy::WaitStrategy;
use crate::weaken;
use crate::weaken::Weaken;

impl<E, S: Sequencer, W: WaitStrategy> StageContext<E, S, W> {
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
    pub(super) fn process_work<C: Consume<E>>(
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
                bus.notify_progress(&self.cell);
            }
        };
        self.hook(|| consumer.on_start());
        'claims: loop {
            let next = loop {
                let current = work.get_relaxed();
                if weaken::POOL_SCAN {
                    // Only to show the loom model fails without the bound.
                    self.cell.sequence.set(current, Weaken::Stage);
                } else {
                    raise(current.min(available));
                }
                if weaken::WORK_CLAIM {
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
                let wanted = if weaken::POOL_SCAN {
                    next
                } else {
                    available + 1
                };
                match self.wait_for(wanted) {
                    Ok(a) => {
                        available = a;
                        raise(a.min(next - 1));
                    }
                    // The claim stands: keep waiting for it.
                    Err(Interrupt::Timeout) => {
                        self.hook(|| consumer.on_timeout(self.cell.sequence.get_relaxed()))
                    }
                    Err(Interrupt::Halted) if self.barrier.upstream_failed() => {
                        report.upstream_failed = true;
                        self.cell.fail();
                        bus.wake_all();
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
}
