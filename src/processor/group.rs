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
use crate::barrier::StageCell;
use crate::bus::Bus;
use crate::consume::Consume;
use crate::fault::Failure;
use crate::loom::Arc;
use crate::parking::{Interrupt, Signal, Sources};
use crate::report::StageReport;
use crate::sequence::Sequence;
use crate::sequencer::Sequencer;
use crate::wait_strategy::WaitStrategy;

/// A handler given back by the shutdown report, if its stage hands it back.
pub(crate) type HandBack = Option<Box<dyn Any + Send>>;

/// How a stage's run ended: its result, or a panic's payload.
type Ended = std::thread::Result<Result<(), Failure>>;

/// A stage made on its thread; see the module docs. Every stage records
/// its outcome with its bus the moment it ends.
pub(crate) trait StageTask {
    /// Runs the stage to its end on a thread of its own.
    fn run_alone(self: Box<Self>);
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
    /// True once the stage ended.
    fn ended(&self) -> bool;
    /// Calls `f` with each signal the stage waits on (none once ended).
    fn sources(&self, f: &mut dyn FnMut(&Signal));
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
    ended: bool,
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
            ended: false,
        }
    }

    /// The stage ended as `ended` says: shut the handler down (unless it
    /// panicked), conclude the report and record the outcome, at once, so
    /// that producers and the stages after it learn of a failure now, not
    /// when the thread ends. Whatever runs handler code here (`on_shutdown`,
    /// its `Drop`, the hand-back) runs under `catch_unwind`: a panic there
    /// ends this stage only.
    fn end(&mut self, ended: Ended) {
        self.ended = true;
        let consumer = self.consumer.take();
        let hand_back = self.hand_back.take();
        let outcome = match ended {
            Err(payload) => {
                // Its state is whatever the panic left: dropped, not
                // handed back (a panic in its `Drop` changes nothing).
                let _ = catch_unwind(AssertUnwindSafe(move || drop(consumer)));
                Err(payload)
            }
            Ok(result) => {
                let (report, cx) = (&mut self.report, &self.cx);
                catch_unwind(AssertUnwindSafe(move || match consumer {
                    Some(consumer) => cx.hook(|| {
                        StageContext::<E, S, W>::shut_down(
                            consumer,
                            result,
                            |c| hand_back.and_then(|g| g(c)),
                            report,
                        )
                    }),
                    None => (result, None),
                }))
            }
        };
        let report = std::mem::take(&mut self.report);
        let outcome = self.cx.conclude(report, outcome);
        self.cx.bus.record_outcome(self.cx.index, outcome);
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
    fn run_alone(mut self: Box<Self>) {
        let make = self.make.take().expect("a stage runs once");
        let hand_back = self.hand_back.take();
        let outcome = self.cx.run(make, |c| hand_back.and_then(|g| g(c)));
        self.cx.bus.record_outcome(self.cx.index, outcome);
    }

    fn start(&mut self) {
        let Some(make) = self.make.take() else {
            return;
        };
        self.next = self.cx.cell.sequence.get_relaxed() + 1;
        match catch_unwind(AssertUnwindSafe(|| {
            self.cx.hook(|| {
                let mut consumer = make();
                consumer.on_start();
                consumer
            })
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
        self.consumer.is_some() && !matches!(self.cx.poll(self.next), Ok(None))
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
            let cx = &self.cx;
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| {
                cx.hook(|| consumer.on_timeout(sequence))
            })) {
                self.end(Err(payload));
            }
        }
    }

    fn ended(&self) -> bool {
        self.ended
    }

    fn sources(&self, f: &mut dyn FnMut(&Signal)) {
        if !self.ended {
            self.cx.sources().each(f);
        }
    }
}

/// What a shared thread waits on: every signal one of its live stages
/// waits on, so that any of them moving wakes it.
struct GroupSources<'a>(&'a [Box<dyn StageTask>]);

impl Sources for GroupSources<'_> {
    fn each(&self, f: &mut dyn FnMut(&Signal)) {
        for task in self.0 {
            task.sources(f);
        }
    }
}

/// The body of a stage thread: runs its stages (`cells`, made as `tasks`)
/// to their ends, alone or sharing the thread, then marks them finished.
/// The stages' contexts and handlers are dropped before that, so a joiner
/// never waits on a slow `Drop` after a timeout.
pub(crate) fn run_thread<E, S: Sequencer, W: WaitStrategy>(
    bus: Arc<Bus<E, S, W>>,
    cells: Vec<Arc<StageCell>>,
    mut tasks: Vec<Box<dyn StageTask>>,
) {
    let exit = ThreadExit {
        bus: &bus,
        cells: &cells,
    };
    match tasks.pop() {
        Some(task) if tasks.is_empty() => task.run_alone(),
        Some(task) => {
            tasks.push(task);
            run_shared(&bus, tasks);
        }
        None => {}
    }
    drop(exit);
}

/// Marks a stage thread's stages finished when it ends, also when a panic
/// escaped every handler call (a handler's hand-back, a `Drop` outside the
/// stage loop): then its stages count as failed, so the stages after them
/// stop and producers are refused instead of waiting for ever, and `join`
/// reports the stages that recorded nothing as lost.
struct ThreadExit<'a, E, S: Sequencer, W: WaitStrategy> {
    bus: &'a Bus<E, S, W>,
    cells: &'a [Arc<StageCell>],
}

impl<E, S: Sequencer, W: WaitStrategy> Drop for ThreadExit<'_, E, S, W> {
    fn drop(&mut self) {
        // (Under loom a panic is the model's verdict: leave it be.)
        if std::thread::panicking() && !cfg!(loom) {
            self.bus.fail_stages(self.cells.iter().map(|c| &**c));
        }
        for cell in self.cells {
            cell.exit();
        }
        self.bus.thread_finished();
    }
}

/// Runs `tasks`, stages sharing the calling thread, to their ends.
fn run_shared<E, S: Sequencer, W: WaitStrategy>(
    bus: &Bus<E, S, W>,
    mut tasks: Vec<Box<dyn StageTask>>,
) {
    for task in &mut tasks {
        task.start();
    }
    let timeouts = tasks.iter().any(|t| t.timeout_due().is_some());
    loop {
        let mut moved = false;
        for task in &mut tasks {
            moved |= task.step();
        }
        if tasks.iter().all(|t| t.ended()) {
            break;
        }
        if moved {
            // A stage idle beside busy ones still hears of its timeout.
            if timeouts {
                let now = Instant::now();
                for task in &mut tasks {
                    task.time_out(now);
                }
            }
            continue;
        }
        let deadline = tasks.iter().filter_map(|t| t.timeout_due()).min();
        let ready = || Ok(tasks.iter().any(|t| t.ready()).then_some(()));
        let sources = GroupSources(&tasks);
        if let Err(Interrupt::Timeout) = bus.strategy.wait(&sources, deadline, ready) {
            let now = Instant::now();
            for task in &mut tasks {
                task.time_out(now);
            }
        }
    }
}
