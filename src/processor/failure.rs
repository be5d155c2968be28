//! What a stage's [`FailurePolicy`](crate::FailurePolicy) does with a
//! failed event: retry it after a backoff, then halt, skip or dead-letter.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::StageContext;
use crate::consume::Consume;
use crate::fault::Failure;
use crate::report::{panic_message, StageReport};
use crate::ring_buffer::RingView;
use crate::sequence::Sequence;
use crate::sequencer::Sequencer;
use crate::wait_strategy::WaitStrategy;

impl<E, S: Sequencer, W: WaitStrategy> StageContext<E, S, W> {
    /// Handles one event under the stage's policy: `Ok` when the stage may go
    /// on (handled, skipped or dead-lettered), `Err` when it must stop.
    ///
    /// # Safety
    /// As for [`Consume::consume`].
    pub(super) unsafe fn handle_one<C: Consume<E>>(
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
    pub(super) fn retry_after(&self, attempt: &mut u32, report: &mut StageReport) -> bool {
        self.policy
            .retry_after(attempt, || self.bus.is_halted(), report)
    }

    /// Retries used up: applies the policy's last word to `sequence`. `Ok`
    /// when the stage moves past it (skipped or dead-lettered), `Err` when
    /// it must stop.
    ///
    /// # Safety
    /// The caller holds read permission for `sequence`, and no handler
    /// call is accessing it.
    pub(super) unsafe fn give_up(
        &self,
        ring: RingView<'_, E>,
        sequence: Sequence,
        failure: Failure,
        report: &mut StageReport,
    ) -> Result<(), Failure> {
        self.policy
            .give_up(&self.name, sequence, failure, report, |sink| {
                // SAFETY: the caller's permission for `sequence`.
                unsafe { ring.read(sequence, |e| sink(e)) }
            })
    }

    /// Hands `from..=to` to a range consumer under the stage's policy,
    /// which applies to the one event a call reports failed; `progress`
    /// follows the events the stage may move past. `Err` when the stage
    /// must stop (`progress` is then just below the failed event).
    ///
    /// # Safety
    /// As for [`Consume::consume_range`].
    pub(super) unsafe fn handle_range<C: Consume<E>>(
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
                        let failure = Failure::Panic(panic_message(&*payload));
                        match consumer.panicked_at() {
                            // A mutating consumer says where it was: the
                            // events before that are handled (handing them
                            // over again would write them twice).
                            Some(at) => Err((at.clamp(start, end), failure)),
                            None if end > start => {
                                one_by_one_until = Some(end);
                                continue;
                            }
                            None => Err((start, failure)),
                        }
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
}
