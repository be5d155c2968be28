//! `ringbus`: a lock-free, preallocated ring buffer event bus in the style of
//! the LMAX Disruptor.
//!
//! Producers claim slots, write events in place and publish; consumer stages,
//! arranged in a dependency graph, each read at their own pace through a
//! sequence barrier and track their own sequence; the slowest leaf stage gates
//! the producers. Nothing is allocated, locked or dispatched dynamically per
//! event (a bus built from a description, `config`, calls its handlers
//! through a pointer).
//!
//! ```text
//! producers ──claim/publish──> [ ring of preallocated events ]
//!                                   │ sequence barriers
//!                  ┌────────────────┼─────────────────┐
//!               stage a          stage b         poller (runtime)
//!                  └──── and_then ──┘
//!                        stage c  (leaf: gates the producers)
//! ```
//!
//! # Quick start
//!
//! ```
//! use std::sync::atomic::{AtomicI64, Ordering};
//! use std::sync::Arc;
//! use ringbus::{Blocking, Sequence};
//!
//! #[derive(Default)]
//! struct Event {
//!     value: i64,
//! }
//!
//! let sum = Arc::new(AtomicI64::new(0));
//! let total = Arc::clone(&sum);
//! // `Blocking` parks idle threads: safe on any machine. Switch to
//! // `BusySpin` with `pin_at_core` once each busy thread has a core.
//! let mut producer = ringbus::single_producer(1024, Event::default, Blocking)
//!     .thread_name("validate")
//!     .handle_events_with(|e: &Event, _seq: Sequence, _end_of_batch: bool| {
//!         assert!(e.value > 0);
//!     })
//!     .and_then()
//!     .thread_name("sum")
//!     .handle_events_with(move |e: &Event, _seq: Sequence, _end_of_batch: bool| {
//!         total.fetch_add(e.value, Ordering::Relaxed);
//!     })
//!     .build();
//! for i in 1..=100 {
//!     producer.publish(|e| e.value = i).unwrap();
//! }
//! producer.batch_publish(2, |slots| for e in slots { e.value = 1 }).unwrap();
//! drop(producer); // drains every stage, then joins their threads
//! assert_eq!(sum.load(Ordering::Relaxed), 5050 + 2);
//! ```
//!
//! # Where to read on
//!
//! * **Topology**: [`Builder`] (groups, `and_then`, `after` for diamonds,
//!   work pools, mutating stages, pinning), made by [`single_producer`] or
//!   [`multi_producer`].
//! * **Publishing**: [`SingleProducer`], [`MultiProducer`], and the
//!   [`Producer`] trait for code that takes either.
//! * **Handlers**: [`EventHandler`], [`EventHandlerMut`], [`TryEventHandler`].
//! * **Waiting**: [`WaitStrategy`] has the table of strategies and when to
//!   use each; [`AnyStrategy`] picks one at run time.
//! * **Failures**: [`FailurePolicy`] (retry, dead-letter, skip, halt) and
//!   [`Failure`]; nothing hangs when a handler fails.
//! * **Runtime subscribers**: [`EventPoller`] (pull, from your own thread)
//!   and [`Subscription`] (a managed handler), joining and leaving while the
//!   producers run.
//! * **Shutdown**: dropping the last producer drains and joins;
//!   [`SingleProducer::shutdown`] returns a [`ShutdownReport`].
//! * **Metrics**: [`Metrics`] snapshots of every cursor, from any thread.
//! * **Configuration**: `config` (feature `serde`) builds a bus described
//!   in TOML or JSON.
//!
//! # Guarantees
//!
//! * Every published event reaches every stage once, in sequence order, so
//!   each producer's events arrive in that producer's order (a work pool
//!   counts as one stage: each event reaches one of its workers). A failure
//!   policy may skip or dead-letter an event instead, and a halt stops
//!   delivery; the report counts both.
//! * A stage sees an event only after every stage it depends on finished
//!   with it, and after the producer published it (Release/Acquire); a
//!   mutating stage's writes are visible to the stages after it.
//! * No call hangs: a halted or failed bus answers producers with an error,
//!   `shutdown_timeout` is bounded by its argument, and drops work in any
//!   order on any thread. The protocols are model-checked with loom and the
//!   unsafe code runs under Miri and ThreadSanitizer in CI.
//!
//! # Threads and handles
//!
//! | type | `Send` | `Sync` | `Clone` | dropping it |
//! |---|---|---|---|---|
//! | [`Builder`] | no | no | no | nothing started yet |
//! | [`SingleProducer`] | yes | yes | no | drains and joins the stages |
//! | [`MultiProducer`] | yes | yes | yes | the last clone drains and joins |
//! | [`EventPoller`] | yes | yes | no | stops gating the producers |
//! | [`Subscription`] | yes | yes | no | stops its thread after the batch in hand (on a closed bus, after the last event) |
//! | [`Metrics`] | yes | yes | yes | nothing |
//! | [`ShutdownReport`] | yes | no | no | drops the returned handlers |
//!
//! (`E: Send + Sync + 'static` for every bus; `Subscription<H>` is `Send`
//! when `H` is.)
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `serde` | off | `Serialize`/`Deserialize` for [`MetricsSnapshot`]; the `config` module (bus descriptions) |
//! | `async` | off | `publish_async`, `batch_publish_async`, `shutdown_async` on the producers and `poll_async`, `into_stream` (a `Stream`) on pollers, for a bus whose wait strategy is [`Blocking`]; no runtime dependency (adds `futures-core`) |
//! | `codec` | off | the `codec` module: the `Codec` trait the journal and the NATS bridge encode events with, `Postcard` and `FnCodec` (implies `serde`; adds postcard) |
//! | `journal` | off | the `journal` module: durable segment files, a durable cursor, replay (implies `serde`; adds postcard and crc32c) |
//! | `ipc` | off | the `ipc` module: a bus in a shared-memory file shared by processes on one host (unix; adds memmap2, bytemuck and libc) |
//!
//! Without features the crate depends on `crossbeam-utils` and
//! `core_affinity` only.
#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
#![warn(
    clippy::undocumented_unsafe_blocks,
    clippy::missing_errors_doc,
    clippy::missing_panics_doc
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod affinity;
mod barrier;
mod builder;
mod bus;
#[cfg(feature = "codec")]
#[cfg_attr(docsrs, doc(cfg(feature = "codec")))]
pub mod codec;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod config;
mod consume;
mod error;
mod fault;
mod fence;
pub mod guide;
mod handler;
#[cfg(all(feature = "ipc", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "ipc", unix))))]
pub mod ipc;
#[cfg(all(feature = "journal", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "journal", unix))))]
pub mod journal;
#[cfg(all(feature = "async", not(loom)))]
mod lag_clock;
mod loom;
mod metrics;
mod parking;
mod poller;
mod processor;
mod producer;
mod report;
mod ring_buffer;
mod sequence;
mod sequencer;
mod stage;
mod wait_strategy;
mod weaken;

pub use affinity::available_cores;
pub use builder::{multi_producer, single_producer, Builder, StageId};
pub use error::{
    BuildError, PublishError, SubscribeError, TryPublishError, MAX_CAPACITY, MAX_POOL_WORKERS,
};
pub use fault::{BoxError, DeadLetter, Failure, FailurePolicy};
pub use handler::{
    Batch, BatchEventHandler, BatchEventHandlerMut, EventHandler, EventHandlerMut,
    TryBatchEventHandler, TryBatchEventHandlerMut, TryEventHandler, TryEventHandlerMut,
};
#[cfg(loom)]
#[doc(hidden)]
pub use loom::stats as __loom_stats;
pub use metrics::{Metrics, MetricsSnapshot, StageMetrics, SubscriberMetrics};
#[cfg(feature = "async")]
pub use poller::EventStream;
pub use poller::{EventPoller, LagLimit, PollError, Subscription};
pub use producer::{MultiProducer, Producer, Publisher, SingleProducer};
pub use report::{ShutdownError, ShutdownReport, StageReport};
pub use ring_buffer::BatchMut;
#[allow(deprecated)]
pub use ring_buffer::Slots;
pub use sequence::Sequence;
pub use sequencer::{MultiProducerSequencer, Sequencer, SingleProducerSequencer};
pub use stage::{factory, Factory, IntoStage, IntoTryStage};
#[cfg(feature = "async")]
pub use wait_strategy::AsyncWait;
pub use wait_strategy::{
    AnyStrategy, Blocking, BusySpin, BusySpinWithHint, Fallback, PhasedBackoff, Sleeping,
    WaitStrategy, Yielding,
};

/// The README's code blocks, compiled and run as doctests (not under Miri:
/// the quick start publishes a million events).
#[cfg(all(doctest, not(miri)))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
