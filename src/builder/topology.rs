//! The topology DSL on [`Builder`]: the modifiers for the next handler,
//! adding handlers and pools, and the dependency steps (`and_then`, `after`).

use std::any::Any;
use std::time::Duration;

use super::{Builder, Launch, Pending, StageId, StageSpec};
use crate::consume::{Consume, Reader};
use crate::error::BuildError;
use crate::fault::FailurePolicy;
use crate::handler::EventHandler;
use crate::loom::Arc;
use crate::processor::Task;
use crate::sequence::{AtomicSequence, INITIAL};
use crate::sequencer::Sequencer;
use crate::stage::{IntoStage, IntoTryStage};
use crate::wait_strategy::WaitStrategy;

impl<E, S, W> Builder<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    /// Pins the next handler's thread to `core` (an id from
    /// [`available_cores`](crate::available_cores)). A core this process may
    /// not use makes `build` fail with [`BuildError::NoSuchCore`].
    pub fn pin_at_core(mut self, core: usize) -> Self {
        self.pending.core = Some(core);
        self
    }

    /// Names the next handler's stage (its entry in the shutdown report and
    /// the metrics) and its thread; a thread shared by several stages
    /// ([`on_thread_of`](Builder::on_thread_of)) is named after the first.
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.pending.name = Some(name.into());
        self
    }

    /// Calls the next handler's `on_timeout` whenever no event arrived for
    /// `timeout`. (A zero timeout calls it at every idle look, so the stage
    /// spins whatever its wait strategy; a bus description refuses 0.)
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.pending.timeout = Some(timeout);
        self
    }

    /// Runs the next handler's stage on the thread of `stage` (added
    /// before it), instead of a thread of its own. A thread shared by
    /// several stages steps them in the order they were added, each taking
    /// whatever it has available, and waits (the strategy's way) only when
    /// none of them has anything. Each stage keeps its own sequence,
    /// failure policy, timeout, report and metrics; a panic or a failure
    /// ends only its own stage.
    ///
    /// Use it when a graph has more stages than the machine has cores to
    /// spare: a pipeline or a diamond on one thread beside the producer
    /// moves events through every stage in one pass, and nothing waits for
    /// the scheduler. The thread is named after its first stage and pinned
    /// where that stage asked (another stage of it may ask for the same
    /// core only). A stage that blocks (a handler that sleeps, a retry's
    /// backoff) holds up the stages sharing its thread.
    ///
    /// A work pool cannot share a thread ([`BuildError::PoolOnSharedThread`]),
    /// and `stage` must belong to this builder ([`BuildError::ForeignStage`]).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use ringbus::{Blocking, Sequence};
    ///
    /// let total = Arc::new(AtomicU64::new(0));
    /// let t = Arc::clone(&total);
    /// // A three-stage pipeline on one thread.
    /// let mut producer = ringbus::single_producer(1024, || 0u64, Blocking)
    ///     .thread_name("pipeline")
    ///     .handle_events_with(|e: &mut u64, _: Sequence, _: bool| *e *= 2)
    ///     .and_then()
    ///     .on_same_thread()
    ///     .handle_events_with(|e: &mut u64, _: Sequence, _: bool| *e += 1)
    ///     .and_then()
    ///     .on_same_thread()
    ///     .handle_events_with(move |e: &u64, _: Sequence, _: bool| {
    ///         t.fetch_add(*e, Ordering::Relaxed);
    ///     })
    ///     .build();
    /// for i in 1..=100 {
    ///     producer.publish(|e| *e = i).unwrap();
    /// }
    /// let report = producer.shutdown().unwrap();
    /// assert_eq!(total.load(Ordering::Relaxed), 2 * 5050 + 100);
    /// assert_eq!(report.stages.len(), 3);
    /// ```
    pub fn on_thread_of(self, stage: StageId) -> Self {
        self.share_thread(stage, "on_thread_of")
    }

    /// `on_thread_of(stage)`, said by the modifier `by`.
    fn share_thread(mut self, stage: StageId, by: &'static str) -> Self {
        if stage.bus != self.id || stage.index >= self.stages.len() {
            self.error
                .get_or_insert(BuildError::ForeignStage { stage: stage.index });
            return self;
        }
        let leader = self.stages[stage.index].thread.unwrap_or(stage.index);
        self.pending.thread_of = Some((leader, by));
        self
    }

    /// Runs the next handler's stage on the thread of the handler added
    /// last; see [`on_thread_of`](Builder::on_thread_of).
    pub fn on_same_thread(self) -> Self {
        match self.last_stage() {
            Some(stage) => self.share_thread(stage, "on_same_thread"),
            None => {
                let mut this = self;
                this.error.get_or_insert(BuildError::NothingToShare);
                this
            }
        }
    }

    /// Sets what the next handler's stage does when an event fails (an `Err`
    /// from a fallible handler, or a panic): retry, dead-letter, skip or halt.
    /// Without it the stage halts; see [`FailurePolicy`].
    pub fn on_failure(mut self, policy: FailurePolicy<E>) -> Self {
        self.pending.policy = Some(policy);
        self
    }

    /// Adds a stage running `handler` on its own thread, in parallel with the
    /// other handlers of the current group. Two methods add every form of
    /// stage; the handler's signature picks the form (see [`IntoStage`]):
    ///
    /// | the stage gets | reads `&E` | mutates `&mut E` |
    /// |---|---|---|
    /// | one event per call: `handle_events_with` | `\|e: &E, seq: Sequence, end_of_batch: bool\|` | `\|e: &mut E, seq: Sequence, end_of_batch: bool\|` |
    /// | … that may fail: [`try_handle_events_with`](Builder::try_handle_events_with) | the same `-> Result<(), Err>` | the same `-> Result<(), Err>` |
    /// | every available event: `handle_events_with` | `\|batch: Batch<'_, E>\|` | `\|batch: BatchMut<'_, E>\|` |
    /// | … that may fail at one: [`try_handle_events_with`](Builder::try_handle_events_with) | the same `-> Result<(), (Sequence, Err)>` | the same `-> Result<(), (Sequence, Err)>` |
    ///
    /// Each cell is also a trait to implement on a type, for the lifecycle
    /// callbacks ([`EventHandler`], [`EventHandlerMut`], [`TryEventHandler`],
    /// [`TryEventHandlerMut`](crate::TryEventHandlerMut), [`BatchEventHandler`],
    /// [`BatchEventHandlerMut`](crate::BatchEventHandlerMut),
    /// [`TryBatchEventHandler`], [`TryBatchEventHandlerMut`](crate::TryBatchEventHandlerMut)).
    ///
    /// - **Mutating**: stages after it see its writes; `build` fails with
    ///   [`BuildError::ConcurrentMutation`] unless every other stage runs
    ///   strictly before or after it.
    /// - **Batch**: one call gets every event available to the stage, as
    ///   slices of the ring (a [`BatchMut`](crate::BatchMut) yields them as
    ///   `&mut E`).
    /// - **Made on the stage thread**: any form wrapped in
    ///   [`ringbus::factory`](crate::factory)`(|| handler)` need not be `Send`.
    /// - A panic in any handler goes to the stage's [`FailurePolicy`], as
    ///   an `Err` does.
    ///
    /// ```
    /// use ringbus::{Batch, BatchMut, Blocking, Sequence};
    ///
    /// let mut producer = ringbus::single_producer(64, || 0u64, Blocking)
    ///     .handle_events_with(|e: &mut u64, _: Sequence, _: bool| *e *= 2)
    ///     .and_then()
    ///     .handle_events_with(|batch: BatchMut<'_, u64>| batch.for_each(|e| *e += 1))
    ///     .and_then()
    ///     .handle_events_with(|e: &u64, _: Sequence, _: bool| assert_eq!(*e, 41))
    ///     .handle_events_with(|batch: Batch<'_, u64>| assert!(batch.iter().all(|e| *e == 41)))
    ///     .build();
    /// producer.publish(|e| *e = 20).unwrap();
    /// producer.shutdown().unwrap();
    /// ```
    ///
    /// [`EventHandlerMut`]: crate::EventHandlerMut
    /// [`TryEventHandler`]: crate::TryEventHandler
    /// [`BatchEventHandler`]: crate::BatchEventHandler
    /// [`TryBatchEventHandler`]: crate::TryBatchEventHandler
    pub fn handle_events_with<H, K>(self, handler: H) -> Self
    where
        H: IntoStage<E, K> + Send + 'static,
    {
        handler.add_to(self)
    }

    /// Adds a stage running a fallible `handler`, in any of the forms of
    /// the grid in [`handle_events_with`](Builder::handle_events_with)'s
    /// docs (see [`IntoTryStage`]): an `Err` it returns is routed by the
    /// stage's [`FailurePolicy`] (set with [`on_failure`](Builder::on_failure);
    /// halt by default). A batch handler returns the first event it could
    /// not handle with its error, and the policy applies to that event alone.
    ///
    /// ```
    /// use ringbus::{Batch, Blocking, FailurePolicy, Sequence};
    ///
    /// let mut producer = ringbus::single_producer(64, || 0u64, Blocking)
    ///     .on_failure(FailurePolicy::skip())
    ///     .try_handle_events_with(|e: &u64, _: Sequence, _: bool| {
    ///         if *e % 2 == 1 { Ok(()) } else { Err("even") }
    ///     })
    ///     .on_failure(FailurePolicy::skip())
    ///     .try_handle_events_with(|batch: Batch<'_, u64>| match batch.iter_with_sequence().find(|(_, e)| **e == 4) {
    ///         Some((seq, _)) => Err((seq, "four")),
    ///         None => Ok(()),
    ///     })
    ///     .build();
    /// for i in 0..10 {
    ///     producer.publish(|e| *e = i).unwrap();
    /// }
    /// let report = producer.shutdown().unwrap();
    /// assert_eq!((report.stages[0].failed, report.stages[1].failed), (5, 1));
    /// ```
    pub fn try_handle_events_with<H, K>(self, handler: H) -> Self
    where
        H: IntoTryStage<E, K> + Send + 'static,
    {
        handler.add_to(self)
    }

    /// Adds a work pool: `workers` threads, each made by `make(i)` on its own
    /// thread, and each event handled by exactly one of them (work-queue
    /// semantics, after LMAX's `WorkerPool`). The workers join the current
    /// group; `and_then()` after them waits for every event to be finished
    /// by whichever worker took it. A pending `thread_name` becomes the
    /// prefix `name-0`, `name-1`, …; a pending `pin_at_core` pins every
    /// worker to that core; a pending `timeout` and `on_failure` apply to
    /// every worker (each routes the failures of the events it took).
    /// `workers == 0` makes `build` fail with [`BuildError::EmptyPool`],
    /// more than [`MAX_POOL_WORKERS`](crate::MAX_POOL_WORKERS) (1,024) with
    /// [`BuildError::PoolTooLarge`].
    pub fn handle_events_with_pool<H, F>(mut self, workers: usize, make: F) -> Self
    where
        H: EventHandler<E> + 'static,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let pending = std::mem::take(&mut self.pending);
        if pending.thread_of.is_some() {
            self.error.get_or_insert(BuildError::PoolOnSharedThread {
                stage: pending
                    .name
                    .unwrap_or_else(|| format!("ringbus-pool-{}", self.stages.len())),
            });
            return self;
        }
        if workers == 0 {
            self.error.get_or_insert(BuildError::EmptyPool {
                stage: self.stages.len(),
            });
            return self;
        }
        if workers > crate::MAX_POOL_WORKERS {
            self.error.get_or_insert(BuildError::PoolTooLarge {
                stage: self.stages.len(),
                workers,
            });
            return self;
        }
        let prefix = pending
            .name
            .unwrap_or_else(|| format!("ringbus-pool-{}", self.stages.len()));
        let work = Arc::new(AtomicSequence::new(INITIAL));
        let make = Arc::new(make);
        for i in 0..workers {
            let make = Arc::clone(&make);
            self.pending = Pending {
                core: pending.core,
                name: Some(format!("{prefix}-{i}")),
                timeout: pending.timeout,
                policy: pending.policy.clone(),
                thread_of: None,
            };
            self = self.add_made(false, move || Reader(make(i)));
            if let Some(spec) = self.stages.last_mut() {
                spec.work = Some(Arc::clone(&work));
            }
        }
        self
    }

    /// Starts a new group that depends on every handler of the current group
    /// (a pipeline step).
    pub fn and_then(mut self) -> Self {
        if !self.group.is_empty() {
            self.deps = std::mem::take(&mut self.group);
        }
        self
    }

    /// Starts a new group that depends on exactly `stages` (for diamonds,
    /// branches and joins). An empty slice means the ring itself. The id of
    /// a work pool (its [`last_stage`](Builder::last_stage)) stands for the
    /// whole pool: the group waits until every worker is done with an event
    /// (each event goes to one worker, and another may be behind it).
    pub fn after(mut self, stages: &[StageId]) -> Self {
        self.group.clear();
        self.deps.clear();
        for stage in stages {
            if stage.bus != self.id || stage.index >= self.stages.len() {
                self.error
                    .get_or_insert(BuildError::ForeignStage { stage: stage.index });
                continue;
            }
            // A pool's workers share its work sequence: depend on them all.
            let pool = self.stages[stage.index].work.as_ref();
            for (index, spec) in self.stages.iter().enumerate() {
                let member = match (pool, spec.work.as_ref()) {
                    (Some(pool), Some(work)) => Arc::ptr_eq(pool, work),
                    _ => index == stage.index,
                };
                if member && !self.deps.contains(&index) {
                    self.deps.push(index);
                }
            }
        }
        self
    }

    /// The id of the handler added last, for [`after`](Builder::after);
    /// after a work pool, the pool's (`after` waits for all its workers).
    pub fn last_stage(&self) -> Option<StageId> {
        self.stages.len().checked_sub(1).map(|index| StageId {
            bus: self.id,
            index,
        })
    }

    /// Adds a stage whose handler was given by value: the shutdown report
    /// hands it back (`take_handler`) after its last event.
    pub(crate) fn add_owned<C, H>(
        self,
        mutating: bool,
        consumer: C,
        into_handler: fn(C) -> H,
    ) -> Self
    where
        C: Consume<E> + Send + 'static,
        H: Send + 'static,
    {
        self.add(
            mutating,
            Box::new(move |cx| {
                Box::new(Task::new(
                    cx,
                    move || consumer,
                    move |c| Some(Box::new(into_handler(c)) as Box<dyn Any + Send>),
                ))
            }),
        )
    }

    /// Adds a stage whose handler `make` creates on the stage thread.
    pub(crate) fn add_made<C: Consume<E> + 'static>(
        self,
        mutating: bool,
        make: impl FnOnce() -> C + Send + 'static,
    ) -> Self {
        self.add(
            mutating,
            Box::new(move |cx| Box::new(Task::new(cx, make, |_| None))),
        )
    }

    fn add(mut self, mutating: bool, launch: Launch<E, S, W>) -> Self {
        let index = self.stages.len();
        let pending = std::mem::take(&mut self.pending);
        self.stages.push(StageSpec {
            work: None,
            name: pending
                .name
                .unwrap_or_else(|| format!("ringbus-stage-{index}")),
            deps: self.deps.clone(),
            mutating,
            core: pending.core,
            timeout: pending.timeout,
            policy: pending.policy.unwrap_or_default(),
            launch,
            thread: pending.thread_of.map(|(leader, _)| leader),
        });
        self.group.push(index);
        self
    }
}
