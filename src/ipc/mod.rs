//! A bus in a shared-memory file, shared by processes on one host (feature
//! `ipc`; unix; `Blocking` sleeps on a futex on Linux and naps elsewhere).
//!
//! One process [creates](Options::create) a named bus; others
//! [open](Options::open) it with the same event type and options. Each
//! process then takes a [`producer`](IpcBus::producer) or joins as a named
//! [`consumer`](IpcBus::consumer): the ring, the cursor, the availability
//! marks and a table of consumers (each with its sequence and its owner
//! process) live in the file, so a producer writes an event in place and a
//! consumer in another process reads it there, without a copy or a syscall.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ringbus::ipc::{self, Pod, Zeroable};
//!
//! #[derive(Clone, Copy, Default, Pod, Zeroable)]
//! #[repr(C)]
//! struct Order { id: u64, price: u64, qty: u32, side: u32 }
//!
//! // First, in the gateway process:
//! let bus = ipc::Options::new(1024).schema(1).create::<Order>("orders")?;
//!
//! // Then in the matcher process: it sees what is published after it joins.
//! let bus = ipc::Options::new(1024).schema(1).open::<Order>("orders")?;
//! let mut matcher = bus.consumer("matcher")?;
//!
//! // In the gateway, once the matcher has joined:
//! let mut producer = bus.producer()?;
//! producer.publish(|o| *o = Order { id: 1, price: 100, qty: 5, side: 0 })?;
//!
//! // In the matcher:
//! matcher.poll_wait(64, |order, seq, _end_of_batch| println!("{seq}: {}", order.id))?;
//! # Ok(()) }
//! ```
//!
//! A slot keeps the bytes of its last lap: a publish closure writes every
//! field it means (here the whole event).
//!
//! (Add `bytemuck = { version = "1", features = ["derive"] }` to derive
//! `Pod`.)
//!
//! # The model
//!
//! - **Events are plain data** ([`Pod`]): no pointers, a fixed size. A
//!   variable payload is a byte array with a length inside the event.
//! - **Single or multi producer.** A single producer is one process at a
//!   time; if it dies, a new process takes its place with
//!   [`producer`](IpcBus::producer) and goes on from the cursor. A multi
//!   producer bus takes one producer per process or thread, each claiming
//!   with a `fetch_add` and marking each slot it publishes.
//! - **Consumers have names and sequences.** A consumer sees what is
//!   published after it joins (start consumers before producers publish
//!   what they must see); every live consumer gates the producers;
//!   [`consumer_after`](IpcBus::consumer_after) makes a stage that reads an
//!   event only after the named consumers have (a pipeline or a diamond
//!   across processes). Consumers commit after each batch.
//! - **Stages**: [`IpcBus::stage`] runs a consumer on a thread of its own
//!   with a handler (the crate's [`EventHandler`](crate::EventHandler) or
//!   [`TryEventHandler`](crate::TryEventHandler)) and a
//!   [`FailurePolicy`](crate::FailurePolicy); a stage that fails leaves its
//!   entry as a killed process would, so one started again under its name
//!   resumes at the failed event ([`IpcStage`]).
//! - **A dead consumer** (its process gone) keeps gating for the bus's
//!   [`reclaim_after`](Options::reclaim_after): a process that joins under
//!   its name within that time resumes at its sequence, so nothing is lost
//!   for it (events it handled but had not committed come again: at least
//!   once). After that time its entry is reclaimed
//!   ([`IpcMetrics::reclaimed`]) by the first producer that finds the ring
//!   full, by a join that finds the table full, or by a consumer after it
//!   that it holds (so a bus that went quiet, or closed, does not keep the
//!   events it never handled from the consumers after it). Nobody watches
//!   for deaths: the time counts from when one of them first finds it dead.
//! - **A producer killed between claim and publish** (multi producer) leaves
//!   a hole. A consumer that waited [`hole_timeout`](Options::hole_timeout)
//!   at it gives it up: a tombstone that every consumer skips and counts
//!   ([`IpcConsumer::tombstones`]). A producer that was only slow is never
//!   overwritten: its publish fails with [`IpcPublishError::GivenUp`], and
//!   its slot is reused only after it let go of it. A claim waiting for
//!   room in a full ring is not slow: the timeout counts from when the
//!   ring has room for it (for a batch, for its last slot). A claim its
//!   claimant died before marking, which no consumer
//!   waits at any more (they left, or joined after it), is released a
//!   hole timeout after the next lap's claim of its slot reaches it.
//! - **Waits**: [`Wait::BusySpin`], [`Wait::Yielding`], [`Wait::Sleeping`],
//!   and [`Wait::Blocking`], which sleeps on a futex in the file; a producer
//!   pays a load per publish (and, where Linux's membarrier is missing, a
//!   fence) and makes a syscall only while a consumer sleeps; a consumer
//!   going to sleep pays a membarrier (a barrier on the cores running the
//!   bus's processes). A consumer that comes after others
//!   ([`IpcBus::consumer_after`]) is woken by their commits too: each
//!   commit pays a load (and, without membarrier, a fence), and while such
//!   a consumer sleeps, every commit wakes the sleepers. A producer waiting for room in the ring spins, yields
//!   and then naps (50 µs), whatever the strategy.
//! - **Closing**: [`IpcBus::close`] ends the bus for everyone: producers get
//!   [`IpcPublishError::Closed`]; consumers get [`IpcPollError::Closed`]
//!   once every producer has let go of its place (dropped, or died) and
//!   they passed the last event, so a publish that raced the close is
//!   never left behind.
//!
//! # Trust
//!
//! Every value read from the file is checked before it is used as an
//! offset, index or length: a peer with write access can corrupt events and
//! the bus's state (then producers and consumers get errors, or wrong
//! events), never make this process read or write outside the mapping. The
//! file's mode (0600 by default, [`Options::mode`]) is the only access
//! control. Two limits of that promise:
//!
//! - **Truncation.** A peer that shortens the file (`ftruncate`) makes the
//!   next touch of a page past its new end raise `SIGBUS` in every process
//!   that maps it: the mapping stays, the pages behind it do not. Nothing a
//!   process of its own can check prevents it; keep the file's mode tight.
//!   (`create` reserves the file's blocks on Linux, so a full `/dev/shm` is
//!   an error of `create`, not a `SIGBUS` later.)
//! - **Events written behind a reader.** A handler gets `&E` into the
//!   mapping. `E: Pod` makes any bytes a valid value, but a peer that
//!   writes a slot while it is read (no protocol does) races with the
//!   reader: a field read twice may differ. Copy an event out (`*e`) before
//!   checking a field you then rely on if peers are not trusted.
//!
//! # Stale buses
//!
//! A bus outlives its processes: a new producer and new consumers can open
//! it and go on, until it is [closed](IpcBus::close): a closed bus stays
//! closed ([`remove`] it and create it again). On Linux a creator that
//! dies before the bus is ready leaves nothing: the bus is made in a file
//! without a name (`O_TMPFILE`) and named only once its header is written,
//! so no process ever opens a half-made bus. Elsewhere (or on a filesystem
//! without `O_TMPFILE`) it leaves a file that [`Options::open`] reports as
//! [`IpcError::Stale`] (once it wrote its pid; before that, as
//! [`IpcError::NotABus`], "not ready after 1 s"); [`remove`] it
//! ([`Options::remove`] for a bus in another directory). Let one process
//! do that: `remove` unlinks whatever file has the name, so if two
//! processes saw `Stale` and one has already made the bus again, the
//! other's `remove` takes the new bus's name away from it (its processes
//! go on, on a file nobody can open).
//!
//! # Platforms
//!
//! Linux first: the file lives in `/dev/shm`, process liveness comes from
//! `/proc` (start times guard against reused pids, zombies count as dead),
//! and `Blocking` sleeps on a futex. Other unix systems use the temporary
//! directory, `kill(pid, 0)` alone, and naps instead of the futex. Every
//! process of a bus must be in one pid namespace (containers sharing
//! `/dev/shm` need a shared pid namespace): a process this one cannot see
//! counts as dead, and its consumer entry is reclaimed.

mod bus;
mod consumer;
mod error;
mod layout;
mod marks;
mod os;
mod producer;
mod region;
mod stage;
mod table;

pub use bus::{remove, ConsumerInfo, IpcBus, IpcMetrics, Options, Wait};
pub use bytemuck::{Pod, Zeroable};
pub use consumer::IpcConsumer;
pub use error::{IpcError, IpcPollError, IpcPublishError};
pub use producer::{IpcBatch, IpcProducer};
pub use stage::{IpcStage, IpcStageBuilder};
