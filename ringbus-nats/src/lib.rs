//! Bridges a [`ringbus`] event bus to NATS JetStream, so events can
//! leave a process (or a machine) and come back into another bus, at least
//! once end to end, with duplicates dropped by sequence.
//!
//! ```text
//! service A: producers -> ring -> ... -> egress stage --(acked, deduplicated)--> JetStream stream
//! service B: durable pull consumer -> ingress -> ring -> stages -> ack after the leaf stages
//! ```
//!
//! * [`Egress`] is a stage of A's bus ([`EgressExt::egress_to`]): it
//!   encodes each event ([`Codec`], [`Postcard`] by default) and publishes
//!   it with a window of acks in flight. Its stage sequence passes an event
//!   only once the server acknowledged it, so the stages after it and the
//!   producers' gating reflect what the stream holds. Each message carries
//!   `Nats-Msg-Id: <producer id>:<sequence>`; a failure goes through the
//!   stage's [`FailurePolicy`](ringbus::FailurePolicy), whose retry sends
//!   again from the first unacknowledged event.
//! * [`Ingress`] reads a durable pull consumer into B's bus and acks a
//!   message only once every gating stage of B's bus handled it.
//! * [`Link`] is the connection (one server or a cluster, with user and
//!   password or a token) and the runtime the client runs on.
//!
//! ```no_run
//! use ringbus::{Blocking, Sequence};
//! use ringbus_nats::{EgressExt, EgressOptions, IngressOptions, Link, LinkOptions, Postcard};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let link = Link::connect("nats://127.0.0.1:4222", LinkOptions::default())?;
//! link.ensure_stream(async_nats::jetstream::stream::Config {
//!     name: "ORDERS".into(),
//!     subjects: vec!["orders.>".into()],
//!     ..Default::default()
//! })?;
//! // Service A: every order leaves through the egress stage.
//! let egress = link.egress(Postcard, EgressOptions::new("orders.new", "order-service-1"));
//! let mut orders = ringbus::single_producer(1024, || 0u64, Blocking).egress_to(egress).build();
//! orders.publish(|e| *e = 42)?;
//! orders.shutdown()?;
//! // Service B: the orders come into another bus.
//! let bus = ringbus::single_producer(1024, || 0u64, Blocking)
//!     .handle_events_with(|order: &u64, _: Sequence, _: bool| println!("order {order}"))
//!     .build();
//! let ingress = link.ingress(Postcard, IngressOptions::new("ORDERS", "analytics"), bus)?;
//! // ...
//! let (bus, report) = ingress.stop().map_err(|(_, e)| e)?;
//! bus.shutdown()?;
//! println!("{report:?}");
//! # Ok(()) }
//! ```
#![deny(missing_docs, missing_debug_implementations, unsafe_code)]

mod acked;
#[doc = include_str!("../../docs/guide/bridge.md")]
pub mod guide {}
mod egress;
mod ingress;
mod link;
mod unrecovered;

pub use async_nats;
pub use egress::{Egress, EgressError, EgressExt, EgressOptions, EgressStats};
pub use ingress::{Ingress, IngressError, IngressOptions, IngressReport};
pub use link::{Auth, Link, LinkError, LinkOptions};
/// The codec, shared with ringbus's journal ([`ringbus::codec`]).
pub use ringbus::codec::{Codec, FnCodec, Postcard};
