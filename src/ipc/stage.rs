//! Stages of a shared-memory bus: a thread of this process that joins the
//! bus as a named consumer and hands every event to a handler, under a
//! [`FailurePolicy`], until the bus closes or the stage is halted.
//!
//! A stage is a consumer ([`IpcBus::consumer_after`]) with a thread and a
//! policy around it, so it gates, commits, resumes and is reclaimed as a
//! consumer does. Its failure is a consumer's death: when the policy halts
//! (the default), the stage stops at the failed event without committing
//! it and leaves its entry as a killed process would. The entry keeps
//! gating for the bus's [`reclaim_after`](super::Options::reclaim_after),
//! the stages after it wait there, and a stage (or consumer) that joins
//! under the same name within that time resumes at the failed event; after
//! it, the entry is reclaimed (by a producer that needs the room, or by a
//! stage it holds, which looks at most every millisecond while held, so an
//! idle or closed bus goes on too) and the producers and later stages
//! go on without it. Nothing published is lost for a stage that is
//! restarted in time, and no producer is wedged by one that is not. A
//! panic outside the handler's event calls (in `on_start`,
//! `on_batch_start` or `on_shutdown`) fails the stage the same way, at the
//! first event of the batch it was in; a panic in a dead-letter sink fails
//! it at the event the sink was given (the events before it stay
//! handled); a panic in `on_timeout` fails it where it stands (at its next
//! event), with its counts kept. After a panic that stops the stage (the
//! handler's own too, under a policy that halts) the handler is not called
//! again, not even `on_shutdown`, as in a bus of one process.
//!
//! Unlike an in-process bus, a stage's failure does not halt the bus: other
//! processes' producers and stages go on, and the policy's halt is this
//! stage's alone. [`IpcStage::halt`] is different from a failure: the
//! stage commits what it handled and leaves its place, as a dropped
//! consumer does, so a stage started again under its name joins at the
//! present.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytemuck::Pod;

use super::bus::IpcBus;
use super::consumer::IpcConsumer;
use super::error::{IpcError, IpcPollError};
use crate::fault::{Failure, FailurePolicy};
use crate::handler::{EventHandler, TryEventHandler};
use crate::report::{panic_message, StageReport};
use crate::sequence::Sequence;

/// How long a stage waits for events before it looks at its halt flag.
const HALT_CHECK: Duration = Duration::from_millis(10);

/// Sets up a stage of a shared-memory bus (see [`IpcBus::stage`]).
#[must_use = "a stage starts only with spawn or try_spawn"]
pub struct IpcStageBuilder<E: Pod> {
    bus: IpcBus<E>,
    name: String,
    after: Vec<String>,
    core: Option<usize>,
    policy: FailurePolicy<E>,
    batch: usize,
    timeout: Option<Duration>,
}

impl<E: Pod> std::fmt::Debug for IpcStageBuilder<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpcStageBuilder")
            .field("name", &self.name)
            .field("after", &self.after)
            .field("core", &self.core)
            .field("policy", &self.policy)
            .field("batch", &self.batch)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<E: Pod> IpcStageBuilder<E> {
    pub(crate) fn new(bus: IpcBus<E>, name: &str) -> Self {
        Self {
            bus,
            name: name.into(),
            after: Vec::new(),
            core: None,
            policy: FailurePolicy::default(),
            batch: 1024,
            timeout: None,
        }
    }

    /// The stage reads an event only after every consumer or stage named
    /// here (in any process) has handled it, as
    /// [`consumer_after`](IpcBus::consumer_after) does (a stage whose names
    /// close a cycle is refused when spawned, with [`IpcError::Config`]).
    pub fn after(mut self, upstream: &[&str]) -> Self {
        self.after = upstream.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Pins the stage's thread to `core` (one of
    /// [`available_cores`](crate::available_cores)).
    pub fn pin_at_core(mut self, core: usize) -> Self {
        self.core = Some(core);
        self
    }

    /// What the stage does when its handler fails (an `Err` or a panic):
    /// retry, then halt (the default), skip or dead-letter.
    pub fn on_failure(mut self, policy: FailurePolicy<E>) -> Self {
        self.policy = policy;
        self
    }

    /// The most events handed over (and committed) at once; 1,024 by
    /// default.
    pub fn batch(mut self, limit: usize) -> Self {
        self.batch = limit.max(1);
        self
    }

    /// Calls the handler's `on_timeout` with the last sequence the stage
    /// passed (the last event it handled, or a tombstone it skipped after
    /// it on a multi-producer bus; one below where it started, before any)
    /// whenever no event came for `timeout`, as an in-process stage's
    /// [`timeout`](crate::Builder::timeout) does. A panic in it fails the
    /// stage at its next event (the report keeps its counts). A timeout
    /// shorter than the stage's wait reacts (zero, a few microseconds)
    /// calls `on_timeout` at every idle look: the stage then spins, whatever
    /// its wait strategy.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Joins the bus (on the calling thread, so a name in use is an error
    /// here) and starts the stage's thread with `handler`.
    ///
    /// # Errors
    /// As for [`IpcBus::consumer_after`]; [`IpcError::Config`] for a core
    /// this process may not run on; [`IpcError::Io`] when the thread could
    /// not be started.
    pub fn spawn<H>(self, handler: H) -> Result<IpcStage, IpcError>
    where
        H: EventHandler<E> + Send + 'static,
    {
        self.try_spawn(Infallible(handler))
    }

    /// Like [`spawn`](IpcStageBuilder::spawn) with a fallible handler: an
    /// `Err` is routed by the stage's policy as a panic is.
    ///
    /// # Errors
    /// As for [`spawn`](IpcStageBuilder::spawn).
    pub fn try_spawn<H>(self, handler: H) -> Result<IpcStage, IpcError>
    where
        H: TryEventHandler<E> + Send + 'static,
    {
        if let Some(core) = self.core {
            let cores = crate::affinity::available_cores();
            if !cores.contains(&core) {
                return Err(IpcError::Config {
                    reason: format!(
                        "stage {:?}: core {core} is not one this process may run on \
                         (available: {cores:?}); pick one of those or drop pin_at_core",
                        self.name
                    ),
                });
            }
        }
        let after: Vec<&str> = self.after.iter().map(String::as_str).collect();
        let consumer = self.bus.consumer_after(&self.name, &after)?;
        let halt = Arc::new(AtomicBool::new(false));
        let run = Run {
            consumer: Some(consumer),
            handler,
            policy: self.policy,
            batch: self.batch,
            halt: Arc::clone(&halt),
            core: self.core,
            timeout: self.timeout,
        };
        let thread = std::thread::Builder::new()
            .name(format!("ringbus-ipc-{}", self.name))
            .spawn(move || run.run())
            .map_err(|e| IpcError::Io {
                path: self.bus.path().to_path_buf(),
                op: "start a stage thread for",
                source: e,
            })?;
        Ok(IpcStage {
            name: self.name,
            halt,
            thread: Some(thread),
        })
    }
}

/// A running stage of a shared-memory bus (see [`IpcBus::stage`]).
/// Dropping it halts it and waits for its thread.
#[derive(Debug)]
#[must_use = "dropping an IpcStage halts it"]
pub struct IpcStage {
    name: String,
    halt: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<StageReport, IpcPollError>>>,
}

impl IpcStage {
    /// The stage's name (its consumer's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Asks the stage to stop after the event it is handling (within about
    /// 10 ms when idle): the handler is not called again, not even for the
    /// rest of its batch. It commits what it handled and leaves its place,
    /// as a dropped consumer does: it no longer gates, and stages after it
    /// go on without it.
    pub fn halt(&self) {
        // Release: nothing to publish; the stage polls the flag.
        self.halt.store(true, Ordering::Release);
    }

    /// Whether the stage's thread has ended (the bus closed and it handled
    /// everything, it was halted, or it failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().map_or(true, JoinHandle::is_finished)
    }

    /// Waits for the stage to end (the bus closed and it handled everything,
    /// [`halt`](IpcStage::halt), or a failure its policy halts on) and
    /// returns what it did. A failure is in the report's `failure`, with
    /// the failed event not committed (see the module docs).
    ///
    /// # Errors
    /// [`IpcPollError::Lapped`] when the stage lost its entry (it was
    /// reclaimed or taken over as dead).
    pub fn join(mut self) -> Result<StageReport, IpcPollError> {
        self.wait()
    }

    /// Halts the stage and waits at most `timeout` for it. A stage still in
    /// its handler then is reported `still_running` (its other counts
    /// unknown); its thread ends on its own once the handler returns.
    ///
    /// # Errors
    /// As for [`join`](IpcStage::join).
    pub fn join_timeout(mut self, timeout: Duration) -> Result<StageReport, IpcPollError> {
        self.halt();
        let deadline = Instant::now().checked_add(timeout);
        while !self.is_finished() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                // Detached: the thread finishes (and leaves) on its own.
                self.thread = None;
                let mut report = StageReport::named(&self.name);
                report.still_running = true;
                return Ok(report);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        self.wait()
    }

    fn wait(&mut self) -> Result<StageReport, IpcPollError> {
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|payload| {
                // The stage's own code panicked (a handler's panic is
                // caught per event): report it as the stage's failure.
                let mut report = StageReport::named(&self.name);
                report.panics += 1;
                report.failure = Some(Failure::Panic(panic_message(&*payload)));
                Ok(report)
            }),
            None => Ok(StageReport::named(&self.name)),
        }
    }
}

impl Drop for IpcStage {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.halt();
            let _ = self.wait();
        }
    }
}

/// An [`EventHandler`] as a handler that never fails.
struct Infallible<H>(H);

impl<E, H: EventHandler<E>> TryEventHandler<E> for Infallible<H> {
    type Error = std::convert::Infallible;

    #[inline]
    fn on_event(
        &mut self,
        event: &E,
        sequence: Sequence,
        end_of_batch: bool,
    ) -> Result<(), Self::Error> {
        self.0.on_event(event, sequence, end_of_batch);
        Ok(())
    }

    fn on_batch_start(&mut self, batch_size: u64) {
        self.0.on_batch_start(batch_size);
    }

    fn on_start(&mut self) {
        self.0.on_start();
    }

    fn on_shutdown(&mut self) {
        self.0.on_shutdown();
    }

    fn on_timeout(&mut self, sequence: Sequence) {
        self.0.on_timeout(sequence);
    }
}

/// How a stage's loop ended.
enum Exit {
    /// Halted, or the bus closed and everything was handled.
    Done,
    /// Its policy halted on a failure.
    Failed,
    /// Its entry was reclaimed or taken over.
    Lost(IpcPollError),
}

/// What the stage's thread owns. If the thread unwinds (a panic outside
/// the handler's event calls), dropping it orphans the consumer's entry,
/// so the stage fails as a killed process would instead of leaving.
struct Run<E: Pod, H> {
    consumer: Option<IpcConsumer<E>>,
    handler: H,
    policy: FailurePolicy<E>,
    batch: usize,
    halt: Arc<AtomicBool>,
    core: Option<usize>,
    timeout: Option<Duration>,
}

impl<E: Pod, H> Drop for Run<E, H> {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            if std::thread::panicking() {
                consumer.abandon();
            }
        }
    }
}

impl<E: Pod, H: TryEventHandler<E>> Run<E, H> {
    fn run(mut self) -> Result<StageReport, IpcPollError> {
        if let Some(core) = self.core {
            crate::affinity::pin_current_thread(core);
        }
        let name = self.name().to_owned();
        let mut report = StageReport::named(&name);
        self.handler.on_start();
        // Since when no event came (for `on_timeout`).
        let mut idle_since = Instant::now();
        // A panic stopped the stage (a hook's, a sink's or the handler's):
        // the handler is not called again, not even `on_shutdown` (its
        // state is whatever the panic left).
        let mut hook_panicked = false;
        let end = loop {
            // Acquire: pairs with `halt`'s store (a flag, nothing to read).
            if self.halt.load(Ordering::Acquire) {
                break Exit::Done;
            }
            let Self {
                consumer,
                handler,
                policy,
                batch,
                halt,
                timeout,
                ..
            } = &mut self;
            let consumer = consumer.as_mut().expect("taken only at the end");
            if let Some(t) = *timeout {
                if idle_since.elapsed() >= t {
                    let last = (consumer.next_sequence() as Sequence).wrapping_sub(1);
                    // Caught as a handler's panic is: the stage fails where
                    // it stands, and its report keeps its counts.
                    if let Err(payload) =
                        catch_unwind(AssertUnwindSafe(|| handler.on_timeout(last)))
                    {
                        report.panics += 1;
                        report.failure = Some(Failure::Panic(panic_message(&*payload)));
                        hook_panicked = true;
                        break Exit::Failed;
                    }
                    idle_since = Instant::now();
                }
            }
            // Wake for the halt flag, and for the timeout when it is sooner.
            let wait = timeout.map_or(HALT_CHECK, |t| {
                HALT_CHECK.min(t.saturating_sub(idle_since.elapsed()))
            });
            let mut failed = None;
            // The batch's size, for the handler before its first event.
            let size = Cell::new(None);
            // A panic in `on_batch_start` commits nothing of the batch, as
            // in any poll: caught here, it fails the stage at the batch's
            // first event, and the report keeps its counts. (A dead-letter
            // sink's panic is caught in `give_up`: it fails the stage at
            // its event, `failed` below.)
            let polled = catch_unwind(AssertUnwindSafe(|| {
                consumer.wait_then_handle_until(
                    Instant::now().checked_add(wait),
                    *batch,
                    |n| size.set(Some(n)),
                    |event, sequence, end_of_batch| {
                        // A halted stage calls the handler no more, not
                        // even for the rest of its batch: this event is
                        // not committed (it comes again to whoever resumes
                        // the stage), and the loop's top sees the halt.
                        // Acquire: pairs with `halt`'s store (a flag).
                        if halt.load(Ordering::Acquire) {
                            return false;
                        }
                        if let Some(n) = size.take() {
                            handler.on_batch_start(n);
                        }
                        let handled = handle_one(
                            handler,
                            policy,
                            halt,
                            &name,
                            event,
                            sequence,
                            end_of_batch,
                            &mut report,
                        );
                        match handled {
                            Ok(()) => true,
                            Err(failure) => {
                                failed = Some(failure);
                                false
                            }
                        }
                    },
                )
            }));
            let polled = match polled {
                Ok(polled) => polled,
                Err(payload) => {
                    report.panics += 1;
                    report.failure = Some(Failure::Panic(panic_message(&*payload)));
                    hook_panicked = true;
                    break Exit::Failed;
                }
            };
            if matches!(polled, Ok(n) if n > 0) {
                idle_since = Instant::now();
            }
            match polled {
                Ok(_) if failed.is_some() => {
                    // A panic (the handler's, or its dead-letter sink's)
                    // leaves the handler's state unknown: no `on_shutdown`.
                    hook_panicked = matches!(failed, Some(Failure::Panic(_)));
                    report.failure = failed;
                    break Exit::Failed;
                }
                Ok(_) | Err(IpcPollError::Timeout) => {}
                Err(IpcPollError::Closed) => break Exit::Done,
                Err(e) => break Exit::Lost(e),
            }
        };
        let consumer = self.consumer.take().expect("taken only here");
        // `on_shutdown` while the entry is still the stage's: a panic in it
        // fails the stage as the module docs say (the entry stays, for a
        // successor to resume where the stage stopped), with its counts.
        let handler = &mut self.handler;
        let shutdown = if hook_panicked {
            Ok(())
        } else {
            catch_unwind(AssertUnwindSafe(|| handler.on_shutdown()))
        };
        let end = match (end, shutdown) {
            (Exit::Done, Err(payload)) => {
                report.panics += 1;
                report.failure = Some(Failure::Panic(panic_message(&*payload)));
                Exit::Failed
            }
            (end, Err(_)) => {
                report.panics += 1; // the first failure stays the report's
                end
            }
            (end, Ok(())) => end,
        };
        match end {
            Exit::Done => {
                drop(consumer); // commits nothing more; leaves its place
                Ok(report)
            }
            // Stopped at the failed event: its entry stays as a dead
            // process's, so a successor resumes at that event.
            Exit::Failed => {
                consumer.abandon();
                Ok(report)
            }
            Exit::Lost(e) => Err(e),
        }
    }

    fn name(&self) -> &str {
        self.consumer.as_ref().map_or("", IpcConsumer::name)
    }
}

/// Handles one event under `policy`: `Ok` when the stage may go on
/// (handled, skipped or dead-lettered), `Err` when it must stop there.
#[allow(clippy::too_many_arguments)]
fn handle_one<E, H: TryEventHandler<E>>(
    handler: &mut H,
    policy: &FailurePolicy<E>,
    halt: &AtomicBool,
    name: &str,
    event: &E,
    sequence: Sequence,
    end_of_batch: bool,
    report: &mut StageReport,
) -> Result<(), Failure> {
    let mut attempt = 0;
    loop {
        let call = || handler.on_event(event, sequence, end_of_batch);
        let failure = match catch_unwind(AssertUnwindSafe(call)) {
            Ok(Ok(())) => {
                report.handled += 1;
                report.processed += 1;
                return Ok(());
            }
            Ok(Err(e)) => Failure::from_error(e),
            Err(payload) => {
                report.panics += 1;
                Failure::Panic(panic_message(&*payload))
            }
        };
        // Relaxed: a flag; a halted stage retries no more.
        if policy.retry_after(&mut attempt, || halt.load(Ordering::Relaxed), report) {
            continue;
        }
        let routed = policy.give_up(name, sequence, failure, report, |sink| sink(event));
        if routed.is_ok() {
            report.processed += 1;
        }
        return routed;
    }
}
