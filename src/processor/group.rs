//! A stage as a unit a thread either runs alone or steps among others
//! ([`Builder::on_thread_of`](crate::Builder::on_thread_of)).
//!
//! A thread of its own runs the stage's loop (`process`), waiting the
//! strategy's way for each batch. A thread shared by several stages steps
//! them in the order they were added (dependencies point at earlier
//! stages, so a pipeline's event goes through every stage in one round),
//! each step handing over whatever its stage has available without
//! waiting; only when no stage moved does the thread wait, the strategy's
//! way, for any of them to have something. Each stage keeps its own
//! sequence (stored once per batch, as on a thread of its own), failure
//! policy, timeout, report and metrics, and a panic or failure ends only
//! its stage: the stages after it see it failed, the others go on.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use super::StageContext;
use crate::bus::Bus;
use crate::consume::Consume;
use crate::fault::Failure;
use crate::report::{StageOutcome, StageReport};
use crate::sequence::Sequence;
use crate::sequencer::Sequencer;
use crate::wait_strategy::{Interrupt, WaitStrategy};

/// A handler given back by the shutdown report, if its stage hands it back.
pub(crate) type HandBack = Option<Box<dyn Any + Send>>;

/// How a stage's run ended: its result, or a panic's payload.
type Ended = std::thread::Result<Result<(), Failure>>;

/// A stage made on its thread; see the module docs.
pub(crate) trait StageTask {
    /// Runs the stage to its end on a thread of its own.
    fn run_alone(self: Box<Self>) -> StageOutcome;
    /// Makes the handler and calls its `on_start` (shared thread).
    fn start(&mut self);
    /// Hands over what is available without waiting; true when the stage
    /// moved (or ended).
    fn step(&mut self) -> bool;
    /// True when a step would do something: events, or an interrupt.
    fn ready(&self) -> bool;
    /// When the handler's `on_timeout` is due, if it has a timeout.
    fn timeout_due(&self) -> Option<Instant>;
    /// Calls `on_timeout` if it is due by `now`.
    fn time_out(&mut self, now: Instant);
    /// The outcome, once the stage ended.
    fn take_outcome(&mut self) -> Option<StageOutcome>;
}

/// The one implementation of [`StageTask`]: a stage's context, how to make
/// its consumer (`F`, on the stage's thread) and what to hand back of it
/// (`G`).
pub(crate) struct Task<E, S, W, C, F, G> {
    cx: StageContext<E, S, W>,
    make: Option<F>,
    hand_back: Option<G>,
    consumer: Option<C>,
    report: StageReport,
    next: Sequence,
    /// Since when the stage had no event (only kept with a timeout).
    idle_since: Instant,
    outcome: Option<StageOutcome>,
}

impl<E, S, W, C, F, G> Task<E, S, W, C, F, G>
where
    S: Sequencer,
    W: WaitStrategy,
    C: Consume<E>,
    F: FnOnce() -> C,
    G: FnOnce(C) -> HandBack,
{
    pub(crate) fn new(cx: StageContext<E, S, W>, make: F, hand_back: G) -> Self {
        Self {
            report: StageReport::named(&cx.name),
            cx,
            make: Some(make),
            hand_back: Some(hand_back),
            consumer: None,
            next: 0,
            idle_since: Instant::now(),
            outcome: None,
        }
    }

    /// The stage ended as `ended` says: shut the handler down (unless it
    /// panicked) and conclude the report, at once, so that producers and
    /// the stages after it learn of a failure now, not when the thread
    /// ends.
    fn end(&mut self, ended: Ended) {
        let consumer = self.consumer.take();
        let outcome = ended.and_then(|result| match consumer {
            Some(consumer) => catch_unwind(AssertUnwindSafe(|| {
                StageContext::<E, S, W>::shut_down(consumer, result)
            })),
            None => Ok((result, None)),
        });
        let report = std::mem::take(&mut self.report);
        let (report, consumer) = self.cx.conclude(report, outcome);
        let hand_back = self.hand_back.take();
        let handler = consumer.and_then(|c| hand_back.and_then(|g| g(c)));
        self.outcome = Some((report, handler));
    }
}

impl<E, S, W, C, F, G> StageTask for Task<E, S, W, C, F, G>
where
    S: Sequencer,
    W: WaitStrategy,
    C: Consume<E>,
    F: FnOnce() -> C,
    G: FnOnce(C) -> HandBack,
{
    fn run_alone(mut self: Box<Self>) -> StageOutcome {
        let make = self.make.take().expect("a stage runs once");
        let (report, consumer) = self.cx.run(make);
        let hand_back = self.hand_back.take();
        (report, consumer.and_then(|c| hand_back.and_then(|g| g(c))))
    }

    fn start(&mut self) {
        let Some(make) = self.make.take() else {
            return;
        };
        self.next = self.cx.cell.sequence.get_relaxed() + 1;
        match catch_unwind(AssertUnwindSafe(|| {
            let mut consumer = make();
            consumer.on_start();
            consumer
        })) {
            Ok(consumer) => self.consumer = Some(consumer),
            Err(payload) => self.end(Err(payload)),
        }
    }

    fn step(&mut self) -> bool {
        let Some(consumer) = self.consumer.as_mut() else {
            return false;
        };
        let (cx, next, report) = (&self.cx, &mut self.next, &mut self.report);
        let stepped = catch_unwind(AssertUnwindSafe(|| cx.step(consumer, next, report)));
        match stepped {
            Ok(Ok(Some(moved))) => {
                if moved && self.cx.timeout.is_some() {
                    self.idle_since = Instant::now();
                }
                moved
            }
            Ok(Ok(None)) => {
                self.end(Ok(Ok(())));
                true
            }
            Ok(Err(failure)) => {
                self.end(Ok(Err(failure)));
                true
            }
            Err(payload) => {
                self.end(Err(payload));
                true
            }
        }
    }

    fn ready(&self) -> bool {
        self.consumer.is_some() && !matches!(self.cx.poll(self.next, self.next), Ok(None))
    }

    fn timeout_due(&self) -> Option<Instant> {
        let timeout = self.cx.timeout?;
        self.consumer.as_ref()?;
        self.idle_since.checked_add(timeout)
    }

    fn time_out(&mut self, now: Instant) {
        if self.timeout_due().map_or(true, |due| now < due) {
            return;
        }
        self.idle_since = now;
        let (consumer, sequence) = (self.consumer.as_mut(), self.next - 1);
        if let Some(consumer) = consumer {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| consumer.on_timeout(sequence))) {
                self.end(Err(payload));
            }
        }
    }

    fn take_outcome(&mut self) -> Option<StageOutcome> {
        self.outcome.take()
    }
}

/// Runs `tasks`, stages sharing the calling thread, to their ends; their
/// outcomes in the same order.
pub(crate) fn run_shared<E, S: Sequencer, W: WaitStrategy>(
    bus: &Bus<E, S, W>,
    mut tasks: Vec<Box<dyn StageTask>>,
) -> Vec<StageOutcome> {
    let mut outcomes: Vec<Option<StageOutcome>> = tasks.iter().map(|_| None).collect();
    for task in &mut tasks {
        task.start();
    }
    loop {
        let mut moved = false;
        for task in &mut tasks {
            moved |= task.step();
        }
        for (task, outcome) in tasks.iter_mut().zip(&mut outcomes) {
            if outcome.is_none() {
                *outcome = task.take_outcome();
            }
        }
        if outcomes.iter().all(Option::is_some) {
            break;
        }
        if moved {
            continue;
        }
        let deadline = tasks.iter().filter_map(|t| t.timeout_due()).min();
        let ready = || Ok(tasks.iter().any(|t| t.ready()).then_some(()));
        if let Err(Interrupt::Timeout) = bus.strategy.wait(&bus.signal, deadline, ready) {
            let now = Instant::now();
            for task in &mut tasks {
                task.time_out(now);
            }
        }
    }
    outcomes.into_iter().flatten().collect()
}
