//! Ending a bus: halting and closing it, its stage threads' bookkeeping,
//! and joining them into a shutdown report.

use std::time::{Duration, Instant};

use super::Bus;
use crate::loom::{self, thread::JoinHandle, Ordering};
use crate::parking;
use crate::report::{ShutdownError, ShutdownReport, StageOutcome, StageReport};
use crate::sequence::Sequence;
use crate::sequencer::Sequencer;
use crate::wait_strategy::WaitStrategy;

/// How long a timed-out shutdown waits, after halting the bus, for stages
/// that are not stuck in a handler to stop (they notice within a chunk).
const HALT_GRACE: Duration = Duration::from_millis(20);

/// A stage thread; its stages' outcomes go to `Bus::record_outcome`.
pub(crate) type StageThread = JoinHandle<()>;

/// The join's bookkeeping: the stage threads not joined yet, and the first
/// outcome, which every later shutdown call reports again.
pub(super) struct JoinState {
    /// One per stage thread, with the indices of its stages (one, or
    /// several sharing it), in the order the stages were added.
    handles: Vec<(Vec<usize>, Option<StageThread>)>,
    /// The threads of running subscriptions (`subscribe_with`): managed
    /// handlers, which cannot wait for themselves either.
    subscriptions: Vec<loom::thread::ThreadId>,
    outcome: Option<(Verdict, Vec<StageReport>)>,
    /// A caller's deadline passed and it halted the bus: whoever records
    /// the outcome says `TimedOut`, also a caller without a deadline that
    /// got there first (it saw the stages end because of that halt).
    timed_out: bool,
    /// A stage had failed (producers were refused) before that halt: the
    /// outcome is `StageFailed`. Failures the halt itself brought about
    /// (a retry's backoff it ended, under a policy that halts) leave it
    /// `TimedOut`.
    failed_before_timeout: bool,
}

#[derive(Clone, Copy)]
enum Verdict {
    Clean,
    TimedOut,
    StageFailed,
}

impl JoinState {
    /// No thread recorded, no outcome yet.
    pub(super) fn new() -> Self {
        JoinState {
            handles: Vec::new(),
            subscriptions: Vec::new(),
            outcome: None,
            timed_out: false,
            failed_before_timeout: false,
        }
    }
}

impl<E, S: Sequencer, W: WaitStrategy> Bus<E, S, W> {
    /// Stops every stage without draining and wakes everything parked.
    pub(crate) fn halt(&self) {
        // The single producer's limit first (`sequencer/single.rs`), then
        // the flags. Release: whoever sees a flag (Acquire) also sees the
        // refused limit, so a publish after a `Halted` seen anywhere fails.
        // Parked threads recheck the flags after the wake-up below (the
        // parking protocol orders it after these stores).
        self.sequencer.refuse_producers();
        self.control.halted.store(true, Ordering::Release);
        self.control.refusing.store(true, Ordering::Release);
        self.wake_all();
    }

    /// Records that `last` is the final published sequence; stages drain up to
    /// it and exit.
    pub(crate) fn close(&self, last: Sequence) {
        // Release: pairs with the Acquire in `closed_at`.
        self.control.closed_at.store(last, Ordering::Release);
        self.wake_all();
    }

    /// Records the thread that runs `stages`.
    pub(crate) fn add_thread(&self, handle: StageThread, stages: Vec<usize>) {
        loom::lock(&self.joining)
            .handles
            .push((stages, Some(handle)));
        // Relaxed: read by `join` after `build` returned, which happens-after.
        self.spawned.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how stage `index` ended, for `join`.
    pub(crate) fn record_outcome(&self, index: usize, outcome: StageOutcome) {
        *loom::lock(&self.outcomes[index]) = Some(outcome);
    }

    /// Called by each stage thread as its last act.
    pub(crate) fn thread_finished(&self) {
        // Release: the joiner's Acquire load sees the stage's final state.
        self.finished.fetch_add(1, Ordering::Release);
        self.wake_all();
    }

    /// True when the calling thread is one of this bus's stage threads or
    /// runs one of its subscriptions (a handler dropping or shutting down
    /// the last producer): it must not wait for itself.
    pub(crate) fn on_stage_thread(&self) -> bool {
        let me = loom::thread::current().id();
        let joining = loom::lock(&self.joining);
        joining.subscriptions.contains(&me)
            || joining
                .handles
                .iter()
                .filter_map(|(_, h)| h.as_ref())
                .any(|h| h.thread().id() == me)
    }

    /// The calling thread runs a subscription of this bus from now on
    /// (`true`) or no more (`false`).
    pub(crate) fn subscription_thread(&self, running: bool) {
        let me = loom::thread::current().id();
        let mut joining = loom::lock(&self.joining);
        joining.subscriptions.retain(|&t| t != me);
        if running {
            joining.subscriptions.push(me);
        }
    }

    /// Closed, and every stage (each pool worker: the pool) is past the
    /// last sequence: nothing is left to handle.
    fn drained(&self) -> bool {
        self.closed_at().is_some_and(|last| {
            self.stages
                .iter()
                .all(|(_, cell)| cell.sequence.get() >= last)
        })
    }

    /// Waits (parked, never spinning) for every stage thread to finish,
    /// halting the bus if `deadline` passes first (unless the stages have
    /// drained by then: their threads get the grace to end), then joins them.
    ///
    /// After a timeout it returns without waiting for a stage stuck in its
    /// handler: that stage is reported `still_running` and its thread is
    /// left to finish on its own (it holds the bus's memory alive).
    ///
    /// Several callers may join at once or one after another (clones
    /// shutting down, a drop after a shutdown): the first outcome recorded
    /// is every caller's outcome; only the first caller gets the handlers.
    /// Called on one of the bus's own stage threads it joins nothing and
    /// says so; the threads finish once their handlers return.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> Result<ShutdownReport, ShutdownError> {
        if self.on_stage_thread() {
            return Err(ShutdownError::OnStageThread);
        }
        let started = self.spawned.load(Ordering::Relaxed);
        let all_done = || {
            // Acquire: pairs with the Release in `thread_finished`.
            let done = self.finished.load(Ordering::Acquire) >= started;
            // Acquire: pairs with the Release in `record`.
            Ok((done || self.settled.load(Ordering::Acquire)).then_some(()))
        };
        let mut timed_out = parking::park(self.signals.bus(), deadline, all_done).is_err();
        // Every event through every stage by the deadline: the threads are
        // on their way out (`on_shutdown`), so they get the grace to end
        // before anything is called a timeout (a `shutdown_timeout` of 0
        // on a drained bus is clean). Not under loom (no clock).
        let drained = timed_out && !cfg!(loom) && self.drained();
        // A napping stage sees the close or the halt only when its nap ends.
        let halt_grace = HALT_GRACE + self.strategy.longest_nap();
        if drained {
            let grace = Some(Instant::now() + halt_grace);
            timed_out = parking::park(self.signals.bus(), grace, all_done).is_err();
        }
        if timed_out {
            // Before the halt: a caller that sees the stages end because of
            // it (and records the outcome first) sees this too.
            {
                let mut state = loom::lock(&self.joining);
                if !state.timed_out {
                    state.timed_out = true;
                    state.failed_before_timeout = self.refuses_producers();
                }
            }
            self.halt();
            if !cfg!(loom) && !drained {
                // Loom has no clock: its timed waits never time out. (A
                // drained bus had its grace above.)
                let grace = Some(Instant::now() + halt_grace);
                let _ = parking::park(self.signals.bus(), grace, all_done);
            }
        }
        let mut state = loom::lock(&self.joining);
        if let Some((verdict, reports)) = &state.outcome {
            return verdict.report(reports.clone(), Vec::new());
        }
        // By stage, for the stages whose thread was started.
        let mut by_stage: Vec<Option<StageOutcome>> = self.stages.iter().map(|_| None).collect();
        for (stages, slot) in state.handles.iter_mut() {
            // A thread still running keeps its handle (dropping it would
            // detach the thread); the stages on it that ended are reported
            // as they ended, the others as still running.
            let exited = stages.iter().all(|&i| self.stages[i].1.has_exited());
            if exited {
                if let Some(handle) = slot.take() {
                    let _ = handle.join();
                }
            }
            for &i in stages.iter() {
                let name = &self.stages[i].0;
                let recorded = loom::lock(&self.outcomes[i]).take();
                by_stage[i] = Some(recorded.unwrap_or_else(|| match exited {
                    // The thread ended without recording it: a panic
                    // outside every handler call.
                    true => (StageReport::lost(name), None),
                    // What it released by now (a long batch releases
                    // chunk by chunk, so a slow handler shows its progress).
                    false => (
                        StageReport::still_running(name, self.stages[i].1.processed()),
                        None,
                    ),
                }));
            }
        }
        let (reports, handlers): (Vec<_>, Vec<_>) = by_stage.into_iter().flatten().unzip();
        let failed = reports.iter().any(|r| r.failure.is_some());
        let verdict = if failed && (!state.timed_out || state.failed_before_timeout) {
            Verdict::StageFailed
        } else if timed_out || state.timed_out || reports.iter().any(|r| r.still_running) {
            Verdict::TimedOut
        } else {
            Verdict::Clean
        };
        state.outcome = Some((verdict, reports.clone()));
        drop(state);
        // Release: pairs with the Acquire in `join`'s wait.
        self.settled.store(true, Ordering::Release);
        self.signals.bus().notify_all();
        verdict.report(reports, handlers)
    }
}

impl Verdict {
    fn report(
        self,
        stages: Vec<StageReport>,
        handlers: Vec<Option<Box<dyn std::any::Any + Send>>>,
    ) -> Result<ShutdownReport, ShutdownError> {
        let report = ShutdownReport::new(stages, handlers);
        match self {
            Verdict::Clean => Ok(report),
            Verdict::TimedOut => Err(ShutdownError::TimedOut(report)),
            Verdict::StageFailed => Err(ShutdownError::StageFailed(report)),
        }
    }
}
