//! The topology DSL: stages, their dependencies, and their threads.
//!
//! ```text
//! handle_events_with(a)            a ─┐
//! handle_events_with(b)            b ─┴─> and_then() ─> c
//! and_then()
//! handle_events_with(c)
//! ```
//!
//! Handlers added one after another form a *group* that runs in parallel, all
//! depending on the same upstream stages (the ring itself at first).
//! `and_then()` makes the group the upstream of what follows. `after(&[ids])`
//! makes any set of earlier stages the upstream, for diamonds, branches and
//! joins. Only leaf stages (those nothing depends on) gate the producers.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use crate::affinity;
use crate::barrier::{SequenceBarrier, StageCell};
use crate::bus::Bus;
use crate::consume::{Consume, Reader};
use crate::error::BuildError;
use crate::fault::FailurePolicy;
use crate::handler::{
    BatchEventHandler, EventHandler, EventHandlerMut, TryBatchEventHandler, TryEventHandler,
};
use crate::loom::{self, thread, Arc};
use crate::processor::{run_thread, StageContext, StageTask, Task};
use crate::producer::{MultiProducer, SingleProducer};
use crate::ring_buffer::RingBuffer;
use crate::sequence::{AtomicSequence, INITIAL};
use crate::sequencer::{MultiProducerSequencer, Scan, Sequencer, SingleProducerSequencer};
use crate::stage::{factory, IntoStage, IntoTryStage};
use crate::wait_strategy::WaitStrategy;

/// Starts building a bus with one producer: `capacity` slots (a power of two),
/// each filled once by `factory`, and `strategy` for every wait. See
/// [`Builder`] for the stages.
///
/// Events are written and read in place, never moved: the factory runs
/// `capacity` times, here, and a slot's heap memory (a `String`, a `Vec`) is
/// reused by every event that lands in it.
///
/// ```
/// use ringbus::{Blocking, Sequence};
/// let mut producer = ringbus::single_producer(256, Vec::<u8>::new, Blocking)
///     .handle_events_with(|bytes: &Vec<u8>, _: Sequence, _: bool| assert_eq!(bytes.len(), 3))
///     .build();
/// producer.publish(|bytes| { bytes.clear(); bytes.extend_from_slice(b"abc"); }).unwrap();
/// ```
pub fn single_producer<E, F, W>(
    capacity: usize,
    factory: F,
    strategy: W,
) -> Builder<E, SingleProducerSequencer, W>
where
    E: Send + Sync + 'static,
    F: FnMut() -> E + 'static,
    W: WaitStrategy,
{
    Builder::new(capacity, factory, strategy)
}

/// Starts building a bus whose producer handle is `Clone + Send + Sync`, for
/// publishing from several threads; see [`single_producer`] and
/// [`MultiProducer`] (which has an example).
pub fn multi_producer<E, F, W>(
    capacity: usize,
    factory: F,
    strategy: W,
) -> Builder<E, MultiProducerSequencer, W>
where
    E: Send + Sync + 'static,
    F: FnMut() -> E + 'static,
    W: WaitStrategy,
{
    Builder::new(capacity, factory, strategy)
}

/// Names a stage of a builder, for [`Builder::after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StageId {
    bus: u64,
    index: usize,
}

impl StageId {
    /// The stage's position in its builder (0 for the first handler added).
    #[cfg(feature = "serde")]
    pub(crate) fn index(self) -> usize {
        self.index
    }
}

/// Makes a stage's task on its thread (where the handler is made).
type Launch<E, S, W> = Box<dyn FnOnce(StageContext<E, S, W>) -> Box<dyn StageTask> + Send>;

struct StageSpec<E, S, W> {
    name: String,
    work: Option<Arc<AtomicSequence>>,
    deps: Vec<usize>,
    mutating: bool,
    core: Option<usize>,
    timeout: Option<Duration>,
    policy: FailurePolicy<E>,
    launch: Launch<E, S, W>,
    /// The first stage of the thread this one shares (`on_thread_of`).
    thread: Option<usize>,
}

/// Options that apply to the next handler added.
struct Pending<E> {
    core: Option<usize>,
    name: Option<String>,
    timeout: Option<Duration>,
    policy: Option<FailurePolicy<E>>,
    /// The stage whose thread the next handler shares.
    thread_of: Option<usize>,
}

impl<E> Pending<E> {
    /// The name of a modifier given with no handler after it, if any.
    fn first_set(&self) -> Option<&'static str> {
        [
            (self.core.is_some(), "pin_at_core"),
            (self.name.is_some(), "thread_name"),
            (self.timeout.is_some(), "timeout"),
            (self.policy.is_some(), "on_failure"),
            (self.thread_of.is_some(), "on_thread_of"),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
    }
}

impl<E> Default for Pending<E> {
    fn default() -> Self {
        Self {
            core: None,
            name: None,
            timeout: None,
            policy: None,
            thread_of: None,
        }
    }
}

/// Builds a bus: its ring, its stages and their dependency graph (the
/// topology DSL). Made by [`single_producer`] or [`multi_producer`].
///
/// ```text
/// handle_events_with(a)            a ─┐
/// handle_events_with(b)            b ─┴─> and_then() ─> c
/// and_then()
/// handle_events_with(c)
/// ```
///
/// Handlers added one after another form a *group* that runs in parallel,
/// every handler on its own thread, all depending on the same upstream
/// stages (the ring itself at first). [`and_then`](Builder::and_then) makes
/// the group the upstream of what follows (a pipeline step).
/// [`after(&[ids])`](Builder::after) makes any set of earlier stages the
/// upstream, for diamonds, branches and joins; [`last_stage`](Builder::last_stage)
/// gives the ids. Only leaf stages (those nothing depends on) gate the
/// producers: the ring never overwrites an event a leaf has not finished.
///
/// Modifiers apply to the next handler added: [`thread_name`](Builder::thread_name),
/// [`pin_at_core`](Builder::pin_at_core), [`timeout`](Builder::timeout),
/// [`on_failure`](Builder::on_failure).
///
/// A diamond: `decode` first, then `risk` and `audit` in parallel, then
/// `book` once both are done with an event.
///
/// ```text
///             ┌─> risk ──┐
/// ring ─> decode         ├─> book
///             └─> audit ─┘
/// ```
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use ringbus::{Blocking, Sequence};
///
/// #[derive(Default)]
/// struct Order { id: u64, price: u64 }
///
/// let booked = Arc::new(AtomicU64::new(0));
/// let b = Arc::clone(&booked);
/// let builder = ringbus::single_producer(1024, Order::default, Blocking)
///     .thread_name("decode")
///     .handle_events_with(|_: &Order, _: Sequence, _: bool| {});
/// let decode = builder.last_stage().unwrap();
/// let builder = builder
///     .after(&[decode])
///     .thread_name("risk")
///     .handle_events_with(|o: &Order, _: Sequence, _: bool| assert!(o.price < 1_000));
/// let risk = builder.last_stage().unwrap();
/// let builder = builder
///     .after(&[decode])
///     .thread_name("audit")
///     .handle_events_with(|_: &Order, _: Sequence, _: bool| {});
/// let audit = builder.last_stage().unwrap();
/// let mut producer = builder
///     .after(&[risk, audit])
///     .thread_name("book")
///     .handle_events_with(move |o: &Order, _: Sequence, _: bool| {
///         b.fetch_add(o.id, Ordering::Relaxed);
///     })
///     .build();
/// for id in 1..=100 {
///     producer.publish(|o| { o.id = id; o.price = 10; }).unwrap();
/// }
/// let report = producer.shutdown().unwrap();
/// assert_eq!(booked.load(Ordering::Relaxed), 5050);
/// assert!(report.stages.iter().all(|s| s.processed == 100));
/// ```
///
/// Errors in the graph are kept until [`try_build`](Builder::try_build), which
/// returns the first one; [`build`](Builder::build) panics with it.
///
/// A builder is neither `Send` nor `Sync` (the event factory need not be);
/// the producer it builds is.
///
/// Building and dropping at once is a warning (`#[must_use]`), since it
/// would start and stop every stage for nothing:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// ringbus::single_producer(8, || 0u64, ringbus::Blocking)
///     .handle_events_with(|_: &u64, _: ringbus::Sequence, _: bool| {})
///     .build();
/// ```
#[must_use = "a builder does nothing until `build()`"]
pub struct Builder<E, S, W> {
    id: u64,
    capacity: usize,
    factory: Box<dyn FnMut() -> E>,
    strategy: W,
    stages: Vec<StageSpec<E, S, W>>,
    /// What the next handler depends on.
    deps: Vec<usize>,
    /// Stages added since the last `and_then` or `after`.
    group: Vec<usize>,
    pending: Pending<E>,
    error: Option<BuildError>,
    _sequencer: PhantomData<S>,
}

impl<E, S, W: fmt::Debug> fmt::Debug for Builder<E, S, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("capacity", &self.capacity)
            .field("strategy", &self.strategy)
            .field("stages", &self.stages.len())
            .finish_non_exhaustive()
    }
}

impl<E, S, W> Builder<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    fn new(capacity: usize, factory: impl FnMut() -> E + 'static, strategy: W) -> Self {
        Self {
            id: loom::next_bus_id(),
            capacity,
            factory: Box::new(factory),
            strategy,
            stages: Vec::new(),
            deps: Vec::new(),
            group: Vec::new(),
            pending: Pending::default(),
            error: None,
            _sequencer: PhantomData,
        }
    }

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
    /// `timeout`.
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
    ///     .mutate_events_with(|e: &mut u64, _: Sequence, _: bool| *e *= 2)
    ///     .and_then()
    ///     .on_same_thread()
    ///     .mutate_events_with(|e: &mut u64, _: Sequence, _: bool| *e += 1)
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
    pub fn on_thread_of(mut self, stage: StageId) -> Self {
        if stage.bus != self.id || stage.index >= self.stages.len() {
            self.error
                .get_or_insert(BuildError::ForeignStage { stage: stage.index });
            return self;
        }
        let leader = self.stages[stage.index].thread.unwrap_or(stage.index);
        self.pending.thread_of = Some(leader);
        self
    }

    /// Runs the next handler's stage on the thread of the handler added
    /// last; see [`on_thread_of`](Builder::on_thread_of).
    pub fn on_same_thread(self) -> Self {
        match self.last_stage() {
            Some(stage) => self.on_thread_of(stage),
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

    /// Now `try_handle_events_with(ringbus::factory(make))`.
    #[deprecated(note = "use `try_handle_events_with(ringbus::factory(make))`")]
    #[doc(hidden)]
    pub fn try_handle_events_with_factory<H, F>(self, make: F) -> Self
    where
        H: TryEventHandler<E> + 'static,
        F: FnOnce() -> H + Send + 'static,
    {
        self.try_handle_events_with(factory(make))
    }

    /// Now [`handle_events_with`](Builder::handle_events_with), which takes
    /// every handler form.
    #[deprecated(note = "use `handle_events_with`, which takes every handler form")]
    #[doc(hidden)]
    pub fn handle_batches_with<H>(self, handler: H) -> Self
    where
        H: BatchEventHandler<E> + Send + 'static,
    {
        self.handle_events_with(handler)
    }

    /// Now [`try_handle_events_with`](Builder::try_handle_events_with),
    /// which takes every fallible handler form.
    #[deprecated(note = "use `try_handle_events_with`, which takes every fallible handler form")]
    #[doc(hidden)]
    pub fn try_handle_batches_with<H>(self, handler: H) -> Self
    where
        H: TryBatchEventHandler<E> + Send + 'static,
    {
        self.try_handle_events_with(handler)
    }

    /// Now `handle_events_with(ringbus::factory(make))`.
    #[deprecated(note = "use `handle_events_with(ringbus::factory(make))`")]
    #[doc(hidden)]
    pub fn handle_events_with_factory<H, F>(self, make: F) -> Self
    where
        H: EventHandler<E> + 'static,
        F: FnOnce() -> H + Send + 'static,
    {
        self.handle_events_with(factory(make))
    }

    /// Now [`handle_events_with`](Builder::handle_events_with), which takes
    /// every handler form.
    #[deprecated(note = "use `handle_events_with`, which takes every handler form")]
    #[doc(hidden)]
    pub fn mutate_events_with<H>(self, handler: H) -> Self
    where
        H: EventHandlerMut<E> + Send + 'static,
    {
        self.handle_events_with(handler)
    }

    /// Now `handle_events_with(ringbus::factory(make))`.
    #[deprecated(note = "use `handle_events_with(ringbus::factory(make))`")]
    #[doc(hidden)]
    pub fn mutate_events_with_factory<H, F>(self, make: F) -> Self
    where
        H: EventHandlerMut<E> + 'static,
        F: FnOnce() -> H + Send + 'static,
    {
        self.handle_events_with(factory(make))
    }

    /// Adds a work pool: `workers` threads, each made by `make(i)` on its own
    /// thread, and each event handled by exactly one of them (work-queue
    /// semantics, after LMAX's `WorkerPool`). The workers join the current
    /// group; `and_then()` after them waits for every event to be finished
    /// by whichever worker took it. A pending `thread_name` becomes the
    /// prefix `name-0`, `name-1`, …; a pending `pin_at_core` pins every
    /// worker to that core; a pending `timeout` and `on_failure` apply to
    /// every worker (each routes the failures of the events it took).
    /// `workers == 0` makes `build` fail with [`BuildError::EmptyPool`].
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
    /// branches and joins). An empty slice means the ring itself.
    pub fn after(mut self, stages: &[StageId]) -> Self {
        self.group.clear();
        self.deps.clear();
        for stage in stages {
            if stage.bus != self.id || stage.index >= self.stages.len() {
                self.error
                    .get_or_insert(BuildError::ForeignStage { stage: stage.index });
            } else if !self.deps.contains(&stage.index) {
                self.deps.push(stage.index);
            }
        }
        self
    }

    /// The id of the handler added last, for [`after`](Builder::after).
    pub fn last_stage(&self) -> Option<StageId> {
        self.stages
            .len()
            .checked_sub(1)
            .and_then(|index| self.stage_id(index))
    }

    /// The id of the stage at `index`, if there is one.
    pub(crate) fn stage_id(&self, index: usize) -> Option<StageId> {
        (index < self.stages.len()).then_some(StageId {
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
            thread: pending.thread_of,
        });
        self.group.push(index);
        self
    }

    fn validate(&self) -> Result<(), BuildError> {
        if self.capacity == 0 || !self.capacity.is_power_of_two() {
            return Err(BuildError::Capacity {
                capacity: self.capacity,
            });
        }
        if let Some(bad) = self.stages.iter().find(|s| s.name.contains('\0')) {
            return Err(BuildError::BadName {
                name: bad.name.clone(),
            });
        }
        let mut names = std::collections::HashSet::with_capacity(self.stages.len());
        if let Some(dup) = self.stages.iter().find(|s| !names.insert(s.name.as_str())) {
            return Err(BuildError::DuplicateName {
                name: dup.name.clone(),
            });
        }
        // Read once per process before any stage thread of ours pins itself
        // (pinning and the spinning strategies' count of cores use it).
        let available = affinity::available_cores();
        if self.stages.iter().any(|s| s.core.is_some()) {
            if let Some(requested) = self
                .stages
                .iter()
                .filter_map(|s| s.core)
                .find(|c| !available.contains(c))
            {
                return Err(BuildError::NoSuchCore {
                    requested,
                    available: available.to_vec(),
                });
            }
        }
        self.check_shared_threads()?;
        self.check_mutation()
    }

    /// Stages sharing a thread: no pool worker among them, one core.
    fn check_shared_threads(&self) -> Result<(), BuildError> {
        for spec in &self.stages {
            let Some(leader) = spec.thread else {
                continue;
            };
            let first = &self.stages[leader];
            if let Some(worker) = [spec, first].into_iter().find(|s| s.work.is_some()) {
                return Err(BuildError::PoolOnSharedThread {
                    stage: worker.name.clone(),
                });
            }
            // The thread is pinned at the first core one of its stages asks for.
            let thread_core = self
                .stages
                .iter()
                .enumerate()
                .filter(|(i, s)| *i == leader || s.thread == Some(leader))
                .find_map(|(_, s)| s.core.map(|c| (s, c)));
            if let (Some(core), Some((pinned, thread_core))) = (spec.core, thread_core) {
                if core != thread_core {
                    return Err(BuildError::SharedThreadCores {
                        stage: spec.name.clone(),
                        core,
                        thread: pinned.name.clone(),
                        thread_core,
                    });
                }
            }
        }
        Ok(())
    }

    /// A mutating stage must be an ancestor or a descendant of every other.
    fn check_mutation(&self) -> Result<(), BuildError> {
        if !self.stages.iter().any(|s| s.mutating) {
            return Ok(());
        }
        let n = self.stages.len();
        // ancestors[i][j]: stage j finishes with an event before stage i reads it.
        let mut ancestors = vec![vec![false; n]; n];
        for i in 0..n {
            // Dependencies always point at earlier stages, so `d < i` and
            // ancestors[d] is complete by now.
            for &d in &self.stages[i].deps {
                let (done, rest) = ancestors.split_at_mut(i);
                let mine = &mut rest[0];
                mine[d] = true;
                for (a, &inherited) in mine.iter_mut().zip(&done[d]) {
                    *a |= inherited;
                }
            }
        }
        for (m, stage) in self.stages.iter().enumerate().filter(|(_, s)| s.mutating) {
            if let Some(other) = (0..n).find(|&o| o != m && !ancestors[m][o] && !ancestors[o][m]) {
                return Err(BuildError::ConcurrentMutation {
                    mutating: stage.name.clone(),
                    concurrent: self.stages[other].name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Checks the graph, builds the ring and starts every stage thread.
    fn assemble(mut self) -> Result<Arc<Bus<E, S, W>>, BuildError> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        if let Some(modifier) = self.pending.first_set() {
            return Err(BuildError::ModifierWithoutHandler { modifier });
        }
        self.validate()?;
        // Dependencies point at earlier stages, so each cell's upstream
        // cells exist when it is made.
        let mut cells: Vec<Arc<StageCell>> = Vec::with_capacity(self.stages.len());
        for spec in &self.stages {
            let upstream = spec.deps.iter().map(|&d| Arc::clone(&cells[d])).collect();
            cells.push(Arc::new(StageCell::stage(upstream, spec.work.is_some())));
        }
        let mut is_leaf = vec![true; self.stages.len()];
        for stage in &self.stages {
            for &d in &stage.deps {
                is_leaf[d] = false;
            }
        }
        let gating = cells
            .iter()
            .zip(&is_leaf)
            .filter(|(_, &leaf)| leaf)
            .map(|(s, _)| Arc::clone(s))
            .collect();
        let ring = RingBuffer::new(self.capacity, &mut self.factory);
        let named = self
            .stages
            .iter()
            .zip(&cells)
            .map(|(spec, cell)| (spec.name.clone(), Arc::clone(cell)))
            .collect();
        let has_mutating_stage = self.stages.iter().any(|s| s.mutating);
        let bus = Arc::new(Bus::new(
            self.id,
            ring,
            self.strategy,
            gating,
            named,
            has_mutating_stage,
        ));
        // One thread per stage, except the stages that share the thread of
        // an earlier one (`on_thread_of`), in the order they were added.
        let mut threads: Vec<(String, Option<usize>, Vec<usize>, Vec<_>)> = Vec::new();
        let mut thread_of_stage = vec![0; self.stages.len()];
        for (index, (spec, cell)) in self.stages.into_iter().zip(&cells).enumerate() {
            let cx = StageContext {
                bus: Arc::clone(&bus),
                index,
                name: spec.name.clone(),
                cell: Arc::clone(cell),
                barrier: SequenceBarrier::new(
                    spec.deps.iter().map(|&d| Arc::clone(&cells[d])).collect(),
                ),
                timeout: spec.timeout,
                policy: spec.policy,
                work: spec.work,
                // Build-time stages start at the ring's start.
                scan: std::cell::Cell::new(Scan::after(cell.sequence.get_relaxed())),
                chunk: std::cell::Cell::new(crate::processor::FIRST_CHUNK),
            };
            let thread = match spec.thread {
                Some(leader) => thread_of_stage[leader],
                None => {
                    threads.push((spec.name, None, Vec::new(), Vec::new()));
                    threads.len() - 1
                }
            };
            thread_of_stage[index] = thread;
            let (_, core, stages, launches) = &mut threads[thread];
            *core = core.or(spec.core);
            stages.push(index);
            launches.push((spec.launch, cx));
        }
        // The building thread usually publishes: its parker is made now,
        // not at its first park in the steady state (as each stage
        // thread's is when it starts).
        crate::parking::prepare_thread_parker();
        for (name, core, stages, launches) in threads {
            let finished = Arc::clone(&bus);
            let exiting: Vec<_> = stages.iter().map(|&i| Arc::clone(&cells[i])).collect();
            let spawned = thread::Builder::new().name(name).spawn(move || {
                if let Some(core) = core {
                    // A refusal here is not fatal: the core exists (checked
                    // at build), the stage just runs unpinned.
                    let _ = affinity::pin_current_thread(core);
                }
                crate::parking::prepare_thread_parker();
                let tasks: Vec<Box<dyn StageTask>> = launches
                    .into_iter()
                    .map(|(launch, cx)| launch(cx))
                    .collect();
                run_thread(finished, exiting, tasks);
            });
            match spawned {
                Ok(handle) => bus.add_thread(handle, stages),
                Err(e) => {
                    bus.halt();
                    let _ = bus.join(None);
                    return Err(BuildError::Spawn(e));
                }
            }
        }
        Ok(bus)
    }
}

impl<E, W> Builder<E, SingleProducerSequencer, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    /// Starts the stages and returns the producer, or the first configuration
    /// error.
    ///
    /// ```
    /// use ringbus::{BuildError, Blocking};
    /// let err = ringbus::single_producer(1000, || 0u64, Blocking).try_build().unwrap_err();
    /// assert!(matches!(err, BuildError::Capacity { capacity: 1000 }));
    /// assert_eq!(err.to_string(), "ring capacity 1000 is not a power of two; use a power of two such as 1024");
    /// ```
    ///
    /// # Errors
    /// A [`BuildError`] naming the fix: a capacity that is not a power of
    /// two, a core this process may not use, a stage of another bus in
    /// `after`, a mutating stage that could run beside another, a modifier
    /// with no handler after it, an empty pool, a duplicate stage name, or
    /// a thread the OS refused to start (every thread started is then
    /// stopped and joined).
    pub fn try_build(self) -> Result<SingleProducer<E, W>, BuildError> {
        self.assemble().map(SingleProducer::new)
    }

    /// Like [`try_build`](Builder::try_build).
    ///
    /// # Panics
    /// On a configuration error, with its message (which names the fix).
    pub fn build(self) -> SingleProducer<E, W> {
        self.try_build().unwrap_or_else(|e| panic!("ringbus: {e}"))
    }
}

impl<E, W> Builder<E, MultiProducerSequencer, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    /// Starts the stages and returns the first producer handle (clone it for
    /// more), or the first configuration error.
    ///
    /// # Errors
    /// As for the single-producer [`try_build`](Builder::try_build).
    pub fn try_build(self) -> Result<MultiProducer<E, W>, BuildError> {
        self.assemble().map(MultiProducer::new)
    }

    /// Like [`try_build`](Builder::try_build).
    ///
    /// # Panics
    /// On a configuration error, with its message (which names the fix).
    pub fn build(self) -> MultiProducer<E, W> {
        self.try_build().unwrap_or_else(|e| panic!("ringbus: {e}"))
    }
}

/// Hooks for stage kinds that live with their feature (the journal's
/// `journal_to`): the builder itself knows nothing of them.
#[cfg_attr(not(all(feature = "journal", unix)), allow(dead_code))]
impl<E, S, W> Builder<E, S, W> {
    /// The pending stage name, or `default` made the pending name (for a
    /// stage kind with a name of its own, such as the journal's).
    pub(crate) fn pending_name_or(&mut self, default: &str) -> String {
        self.pending
            .name
            .get_or_insert_with(|| default.into())
            .clone()
    }

    /// True unless the pending failure policy ends in anything but a halt
    /// (it may retry first).
    pub(crate) fn pending_policy_halts(&self) -> bool {
        self.pending.policy.as_ref().map_or(true, |policy| {
            matches!(policy.finally, crate::fault::Finally::Halt)
        })
    }

    /// The pending timeout, unless one was given.
    pub(crate) fn default_timeout(&mut self, timeout: Option<Duration>) {
        if self.pending.timeout.is_none() {
            self.pending.timeout = timeout;
        }
    }

    /// Makes `build` fail with `error` (the first error wins).
    pub(crate) fn refuse(&mut self, error: BuildError) {
        self.error.get_or_insert(error);
    }

    /// This builder's bus, for a stage that must belong to it alone.
    pub(crate) fn bus_id(&self) -> u64 {
        self.id
    }
}
