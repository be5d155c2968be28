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

// First: rustdoc lists a type's impl blocks in the order their modules are
// declared, and the DSL's methods come before `build`'s (launch).
mod topology;

mod deprecated;
mod hooks;
mod launch;
mod validate;

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use crate::error::BuildError;
use crate::fault::FailurePolicy;
use crate::loom::{self, Arc};
use crate::processor::{StageContext, StageTask};
use crate::sequence::AtomicSequence;
use crate::sequencer::{MultiProducerSequencer, Sequencer, SingleProducerSequencer};
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
///
/// [`MultiProducer`]: crate::MultiProducer
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
    /// The stage whose thread the next handler shares, and which modifier
    /// said so (`on_thread_of` or `on_same_thread`).
    thread_of: Option<(usize, &'static str)>,
}

impl<E> Pending<E> {
    /// The name of a modifier given with no handler after it, if any.
    fn first_set(&self) -> Option<&'static str> {
        [
            (self.core.is_some(), "pin_at_core"),
            (self.name.is_some(), "thread_name"),
            (self.timeout.is_some(), "timeout"),
            (self.policy.is_some(), "on_failure"),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
        .or(self.thread_of.map(|(_, by)| by))
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
}
