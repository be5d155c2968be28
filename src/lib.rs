//! `ringbus`: a lock-free, preallocated ring buffer event bus in the style of
//! the LMAX Disruptor.
//!
//! Producers claim slots, write events in place and publish; consumer stages,
//! arranged in a dependency graph, each read at their own pace through a
//! sequence barrier and track their own sequence; the slowest leaf stage gates
//! the producers.
//!
//! ```
//! use std::sync::atomic::{AtomicI64, Ordering};
//! use std::sync::Arc;
//! use ringbus::{BusySpinWithHint, Sequence};
//!
//! #[derive(Default)]
//! struct Event {
//!     value: i64,
//! }
//!
//! let sum = Arc::new(AtomicI64::new(0));
//! let total = Arc::clone(&sum);
//! let mut producer = ringbus::single_producer(1024, Event::default, BusySpinWithHint)
//!     .handle_events_with(|e: &Event, _seq: Sequence, _end_of_batch: bool| {
//!         assert!(e.value > 0);
//!     })
//!     .and_then()
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
#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod affinity;
mod barrier;
mod builder;
mod bus;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod config;
mod error;
mod fault;
mod handler;
mod loom;
mod metrics;
mod poller;
mod processor;
mod producer;
mod ring_buffer;
mod sequence;
mod sequencer;
mod wait_strategy;

pub use affinity::available_cores;
pub use builder::{multi_producer, single_producer, Builder, StageId};
pub use error::{BuildError, PublishError, ShutdownError, SubscribeError, TryPublishError};
pub use fault::{BoxError, DeadLetter, Failure, FailurePolicy};
pub use handler::{EventHandler, EventHandlerMut, TryEventHandler};
#[cfg(loom)]
#[doc(hidden)]
pub use loom::stats as __loom_stats;
pub use metrics::{Metrics, MetricsSnapshot, StageMetrics};
pub use poller::{EventPoller, PollError, Subscription};
pub use processor::{ShutdownReport, StageReport};
pub use producer::{MultiProducer, Producer, SingleProducer};
pub use ring_buffer::Slots;
pub use sequence::Sequence;
pub use sequencer::{MultiProducerSequencer, Sequencer, SingleProducerSequencer};
pub use wait_strategy::{
    AnyStrategy, Blocking, BusySpin, BusySpinWithHint, Fallback, PhasedBackoff, Sleeping,
    WaitStrategy, Yielding,
};
