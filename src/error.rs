//! Error types. Each message says what happened and what to do about it.

use std::fmt;
use std::io;

/// The largest ring a bus may have: 2^32 slots (2^30 where `usize` has
/// 32 bits). A ring is allocated and filled at build time, so one that size
/// already needs four times its event's size in gigabytes of memory.
pub const MAX_CAPACITY: usize = 1 << if usize::BITS > 32 { 32 } else { 30 };

/// The most workers a pool may have ([`BuildError::PoolTooLarge`]).
pub const MAX_POOL_WORKERS: usize = 1024;

/// A bus could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// The capacity is 0, not a power of two, above [`MAX_CAPACITY`], or
    /// more bytes of events (and, for a multi producer, of its marks, 8
    /// bytes a slot) than one allocation may hold or the allocator gives
    /// (a system that overcommits memory may still kill the process when
    /// the ring is filled).
    Capacity {
        /// The capacity asked for.
        capacity: usize,
    },
    /// `pin_at_core` named a core this process may not run on.
    NoSuchCore {
        /// The core asked for.
        requested: usize,
        /// The cores available to this process when the core list was read.
        available: Vec<usize>,
    },
    /// `after` or `on_thread_of` named a stage of another bus.
    ForeignStage {
        /// The stage's index in its own bus.
        stage: usize,
    },
    /// A mutating stage could run at the same time as another stage reading the
    /// same events.
    ConcurrentMutation {
        /// The mutating stage.
        mutating: String,
        /// A stage that is neither before nor after it.
        concurrent: String,
    },
    /// The operating system refused to start a stage thread.
    Spawn(io::Error),
    /// Two stages have the same name (`thread_name`, or a pool's prefix):
    /// the shutdown report and the metrics would be ambiguous.
    DuplicateName {
        /// The name given twice.
        name: String,
    },
    /// A stage name the OS cannot give a thread (it contains a NUL byte).
    BadName {
        /// The name.
        name: String,
    },
    /// A modifier that applies to the next handler (`pin_at_core`,
    /// `thread_name`, `timeout`, `on_failure`, `on_thread_of`,
    /// `on_same_thread`) had no handler after it.
    ModifierWithoutHandler {
        /// The modifier's name.
        modifier: &'static str,
    },
    /// `handle_events_with_pool(0, ..)`: a pool needs at least one worker.
    EmptyPool {
        /// The index the pool's first stage would have had.
        stage: usize,
    },
    /// `handle_events_with_pool(n, ..)` with `n` above
    /// [`MAX_POOL_WORKERS`]: each worker is a thread.
    PoolTooLarge {
        /// The index the pool's first stage would have had.
        stage: usize,
        /// The workers asked for.
        workers: usize,
    },
    /// A journal stage was given a failure policy that skips or
    /// dead-letters: the stages after it would act on an event the journal
    /// does not hold.
    #[cfg(all(feature = "journal", unix))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "journal", unix))))]
    JournalPolicy {
        /// The journal stage's name.
        stage: String,
    },
    /// A work pool was given `on_thread_of`/`on_same_thread`, or a stage
    /// asked for a pool worker's thread: each worker waits for the event it
    /// claimed, so it cannot share a thread.
    PoolOnSharedThread {
        /// The pool's name (its prefix) or the worker's.
        stage: String,
    },
    /// Stages sharing a thread asked to pin it at different cores.
    SharedThreadCores {
        /// The stage whose `pin_at_core` conflicts.
        stage: String,
        /// The core it asked for.
        core: usize,
        /// The stage of the same thread that pinned it first.
        thread: String,
        /// The core that stage pinned the thread at.
        thread_core: usize,
    },
    /// `on_same_thread()` before any handler was added: there is no thread
    /// to share yet.
    NothingToShare,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Capacity { capacity } if capacity.is_power_of_two() => write!(
                f,
                "ring capacity {capacity} is too large: at most {MAX_CAPACITY} slots, and \
                 no more bytes of events (and marks) than the allocator gives; use a smaller \
                 power of two"
            ),
            Self::Capacity { capacity } => {
                let suggestion = capacity
                    .max(&1)
                    .checked_next_power_of_two()
                    .map(|p| p.min(MAX_CAPACITY));
                write!(f, "ring capacity {capacity} is not a power of two")?;
                if let Some(p) = suggestion {
                    write!(f, "; use a power of two such as {p}")?;
                }
                Ok(())
            }
            Self::NoSuchCore {
                requested,
                available,
            } => write!(
                f,
                "pin_at_core({requested}): no such core for this process; \
                 the available cores are {available:?}"
            ),
            Self::ForeignStage { stage } => write!(
                f,
                "stage #{stage} passed to `after` or `on_thread_of` belongs to another bus \
                 (or to none yet); name only stages of the same builder, from its `last_stage()`"
            ),
            Self::ConcurrentMutation {
                mutating,
                concurrent,
            } => write!(
                f,
                "mutating stage `{mutating}` could run at the same time as stage \
                 `{concurrent}`; order them with `and_then()` or `after(..)` so \
                 one of them depends on the other"
            ),
            Self::Spawn(e) => write!(f, "could not start a stage thread: {e}"),
            Self::DuplicateName { name } => write!(
                f,
                "two stages are named `{name}`; give each `thread_name` (and each pool \
                 prefix) its own name"
            ),
            Self::BadName { name } => write!(
                f,
                "stage name {name:?} contains a NUL byte, which a thread name cannot hold; \
                 remove it"
            ),
            Self::ModifierWithoutHandler { modifier } => write!(
                f,
                "`{modifier}({})` applies to the next handler, but no handler follows it; \
                 add the handler after it or remove it",
                if *modifier == "on_same_thread" {
                    ""
                } else {
                    ".."
                }
            ),
            Self::EmptyPool { stage } => write!(
                f,
                "the work pool at stage #{stage} has 0 workers; give \
                 `handle_events_with_pool` at least 1"
            ),
            Self::PoolTooLarge { stage, workers } => write!(
                f,
                "the work pool at stage #{stage} asks for {workers} workers, a thread each; \
                 give `handle_events_with_pool` at most {MAX_POOL_WORKERS} (about as many \
                 as cores is what a pool can use)"
            ),
            #[cfg(all(feature = "journal", unix))]
            Self::JournalPolicy { stage } => write!(
                f,
                "journal stage `{stage}` may only retry, then halt: skipping or \
                 dead-lettering an event would let the stages after it act on an event \
                 the journal does not hold; use `FailurePolicy::halt().retry(..)`"
            ),
            Self::PoolOnSharedThread { stage } => write!(
                f,
                "work pool `{stage}` cannot share a thread: each worker waits for the \
                 event it claimed; give the pool threads of its own (no `on_thread_of` \
                 or `on_same_thread` before it, and none naming one of its workers)"
            ),
            Self::SharedThreadCores {
                stage,
                core,
                thread,
                thread_core,
            } => write!(
                f,
                "stage `{stage}` asks for core {core} but shares the thread of `{thread}`, \
                 pinned at core {thread_core}; pin a shared thread once, at its first stage"
            ),
            Self::NothingToShare => write!(
                f,
                "`on_same_thread()` came before any handler: there is no thread to share \
                 yet; add the first handler without it"
            ),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

/// A blocking publish failed; the closure was not called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The bus was halted (by `halt()` or a failed stage); nothing more is
    /// processed.
    Halted,
    /// The bus was shut down; no more events are accepted.
    Closed,
    /// The batch is larger than the ring and can never fit.
    BatchTooLarge {
        /// Events asked for.
        requested: usize,
        /// Ring capacity.
        capacity: usize,
    },
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Halted => f.write_str("the bus was halted; build a new bus to go on"),
            Self::Closed => f.write_str("the bus was shut down; no more events are accepted"),
            Self::BatchTooLarge {
                requested,
                capacity,
            } => write!(
                f,
                "a batch of {requested} events cannot fit a ring of {capacity}; \
                 split it into batches of at most {capacity}"
            ),
        }
    }
}

impl std::error::Error for PublishError {}

/// A publish that does not wait failed; the closure was not called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TryPublishError {
    /// The ring lacks `missing` free slots; try again once stages caught up.
    Full {
        /// How many more free slots the call needed.
        missing: usize,
    },
    /// The wait for free slots ran out of time.
    Timeout,
    /// The bus was halted.
    Halted,
    /// The bus was shut down.
    Closed,
    /// The batch is larger than the ring and can never fit.
    BatchTooLarge {
        /// Events asked for.
        requested: usize,
        /// Ring capacity.
        capacity: usize,
    },
}

impl fmt::Display for TryPublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full { missing } => write!(
                f,
                "the ring is full ({missing} more free slot(s) needed); retry later, \
                 use the waiting `publish`, or make the ring larger"
            ),
            Self::Timeout => f.write_str("no free slot within the timeout"),
            Self::Halted => PublishError::Halted.fmt(f),
            Self::Closed => PublishError::Closed.fmt(f),
            Self::BatchTooLarge {
                requested,
                capacity,
            } => PublishError::BatchTooLarge {
                requested: *requested,
                capacity: *capacity,
            }
            .fmt(f),
        }
    }
}

impl std::error::Error for TryPublishError {}

impl From<PublishError> for TryPublishError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Halted => Self::Halted,
            PublishError::Closed => Self::Closed,
            PublishError::BatchTooLarge {
                requested,
                capacity,
            } => Self::BatchTooLarge {
                requested,
                capacity,
            },
        }
    }
}

/// A runtime subscriber ([`subscribe`](crate::SingleProducer::subscribe),
/// [`subscribe_with`](crate::SingleProducer::subscribe_with)) could not join.
#[derive(Debug)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The bus has a mutating stage: a runtime reader could read an event
    /// while that stage writes it.
    MutatingStages,
    /// The bus was halted; nothing more is processed.
    Halted,
    /// The bus was shut down; no more events are published.
    Closed,
    /// The operating system refused to start the subscription's thread.
    Spawn(io::Error),
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MutatingStages => f.write_str(
                "a runtime subscriber cannot join a bus with a mutating stage (it could \
                 read an event while that stage writes it); add the consumer at build \
                 time after the mutating stage instead",
            ),
            Self::Halted => f.write_str("the bus was halted; nothing more is processed"),
            Self::Closed => f.write_str("the bus was shut down; nothing more is published"),
            Self::Spawn(e) => write!(f, "could not start the subscription's thread: {e}"),
        }
    }
}

impl std::error::Error for SubscribeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn(e) => Some(e),
            _ => None,
        }
    }
}
