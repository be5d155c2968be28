//! The guide: how to arrange a bus, choose its waits, handle failures,
//! subscribe at runtime, journal, use it from async code, read its metrics,
//! and what checks its correctness. Each chapter's code is compiled and run
//! as a doctest. The bridge to NATS JetStream has its chapter in the
//! `ringbus-nats` crate (`ringbus_nats::guide`); measurements are in
//! `BENCHMARKS.md`.

#[doc = include_str!("../docs/guide/topology.md")]
pub mod topology {}

#[doc = include_str!("../docs/guide/wait_strategies.md")]
pub mod wait_strategies {}

#[doc = include_str!("../docs/guide/failures.md")]
pub mod failures {}

#[doc = include_str!("../docs/guide/subscribers.md")]
pub mod subscribers {}

#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
#[doc = include_str!("../docs/guide/asynchronous.md")]
pub mod asynchronous {}

#[cfg(all(feature = "journal", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "journal", unix))))]
#[doc = include_str!("../docs/guide/journal.md")]
pub mod journal {}

#[doc = include_str!("../docs/guide/metrics.md")]
pub mod metrics {}

#[doc = include_str!("../docs/guide/examples.md")]
pub mod examples {}

#[doc = include_str!("../docs/guide/correctness.md")]
pub mod correctness {}
