//! The shared-memory file's layout: a versioned header, the control lines
//! (cursor, wake word, counters), the producer and consumer tables, the
//! multi producer's availability marks and the ring.
//!
//! Every field that lives in the file is an atomic: another process may
//! write it at any moment, so nothing here is read as plain memory. All
//! zeros is a valid state of every structure (a fresh file is zeros).
//! Offsets are computed from the header's parameters by each process on its
//! own; a value read from the file is never used as an offset, index or
//! length until it was checked against the mapping's length.

use crossbeam_utils::CachePadded;

use crate::loom::{AtomicU32, AtomicU64};

/// "RINGBUS" and a format byte.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"RINGBUS\x01");
/// Bumped whenever any structure in the file changes.
pub(crate) const VERSION: u32 = 4;
/// The consumer table's largest size: sleeping consumers are one bit each
/// of a 64-bit word.
pub(crate) const MAX_CONSUMERS: usize = 64;
/// The producer table's largest size: a mark names its writer in 12 bits.
pub(crate) const MAX_PRODUCERS: usize = 1024;
/// The largest event alignment: the ring starts on a 4 KiB boundary.
pub(crate) const MAX_ALIGN: usize = 4096;
/// Header `state`: ready to open.
pub(crate) const READY: u32 = 1;
/// Header `kind`.
pub(crate) const SINGLE: u32 = 1;
/// Header `kind`.
pub(crate) const MULTI: u32 = 2;

/// The file's first bytes.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Header {
    pub(crate) magic: AtomicU64,
    pub(crate) version: AtomicU32,
    /// 0 while the creator writes the other fields, then [`READY`]
    /// (Release; openers Acquire).
    pub(crate) state: AtomicU32,
    pub(crate) creator_pid: AtomicU32,
    pub(crate) kind: AtomicU32,
    pub(crate) creator_start: AtomicU64,
    pub(crate) capacity: AtomicU64,
    pub(crate) event_size: AtomicU64,
    pub(crate) event_align: AtomicU64,
    pub(crate) schema: AtomicU64,
    pub(crate) consumers: AtomicU64,
    pub(crate) producers: AtomicU64,
    pub(crate) reclaim_after_ns: AtomicU64,
    pub(crate) hole_timeout_ns: AtomicU64,
    pub(crate) file_len: AtomicU64,
}

/// The lines every process touches.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// Single producer: every sequence below it is published (Release by
    /// the producer, Acquire by consumers). Multi producer: the next
    /// sequence to claim (`fetch_add`); availability is in the marks.
    pub(crate) cursor: CachePadded<AtomicU64>,
    /// The futex word and who sleeps on it.
    pub(crate) wake: CachePadded<Wake>,
    /// Counters for metrics, and the closed flag.
    pub(crate) stats: CachePadded<Stats>,
}

/// Sleeping consumers (`Blocking`).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Wake {
    /// Bumped by a producer (or a consumer, for the sleepers after it) that
    /// wakes sleepers; a sleeper waits on the value it read (futex).
    pub(crate) word: AtomicU32,
    /// Set (for good) once a producer or consumer of a process registered
    /// for membarrier joins the bus, to fence lightly: a sleeper whose own
    /// membarrier fails then naps instead of sleeping long (producer.rs).
    pub(crate) light: AtomicU32,
    /// One bit per consumer entry that sleeps or is about to. Producers
    /// read it after publishing (SeqCst fence) and make a syscall only when
    /// it is not zero.
    pub(crate) sleepers: AtomicU64,
    /// One bit per consumer entry that sleeps or is about to while it
    /// comes after other consumers (`consumer_after`). Consumers read it
    /// after committing (SeqCst fence) and wake the sleepers only when it
    /// is not zero, so a downstream is woken by its upstream's commit, not
    /// only by the next publish.
    pub(crate) after: AtomicU64,
}

/// Counters shared by every process.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Claims given up (holes turned into tombstones).
    pub(crate) given_up: AtomicU64,
    /// Consumer entries reclaimed from dead processes.
    pub(crate) reclaimed: AtomicU64,
    /// Producer entries taken over from dead processes.
    pub(crate) producers_replaced: AtomicU64,
    /// Not zero once `close` was called: consumers end after the last event.
    pub(crate) closed: AtomicU32,
    pub(crate) _pad: AtomicU32,
    /// The join protocol's meeting point: a joiner and a producer that
    /// refreshes its view of the table each do a read-modify-write here, so
    /// one of them sees what the other did before (table.rs).
    pub(crate) joins: AtomicU64,
}

/// One producer: a single producer's lease (entry 0) or one of a multi
/// producer's writers. A mark names its writer by entry index + 1.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct ProducerEntry {
    /// A [`Lease`](super::table::Lease).
    pub(crate) lease: AtomicU64,
    /// The owner's process start time (pid reuse).
    pub(crate) start: AtomicU64,
    /// The claim (multi producer) this producer waits room for, first
    /// and last sequence, while it waits; `wait_last` 0 when it waits for
    /// none (no claim of the first lap waits). Consumers read it before
    /// they give up a claim that is not marked yet: a batch's first slot
    /// may have room while its last has none (`marks::claim_waits`).
    pub(crate) wait_first: AtomicU64,
    pub(crate) wait_last: AtomicU64,
}

/// One consumer.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct ConsumerEntry {
    /// Every sequence below it was handled: the producers may reuse those
    /// slots. Written by the owner (Release after its handler ran), read
    /// by producers and by the consumers after it (Acquire).
    pub(crate) next: CachePadded<AtomicU64>,
    pub(crate) meta: CachePadded<ConsumerMeta>,
}

/// A consumer entry's slow fields.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct ConsumerMeta {
    /// A [`Lease`](super::table::Lease).
    pub(crate) lease: AtomicU64,
    /// The owner's process start time (pid reuse).
    pub(crate) start: AtomicU64,
    /// When its owner was first seen dead (ms of the monotonic clock) in the
    /// high 44 bits, and the lease generation it was seen under in the low
    /// 20 (0: not seen dead).
    pub(crate) dead_since: AtomicU64,
    /// The name, NUL-padded.
    pub(crate) name: [AtomicU64; 4],
    /// Tombstones this consumer skipped.
    pub(crate) tombstones: AtomicU64,
    /// The order of its fresh join among all joins (1, 2, ...; 0 while it
    /// joins): of two consumers that join under one name at once, the
    /// earlier stays (`table::join_free`). A resumed entry keeps its own.
    pub(crate) ticket: AtomicU64,
    /// The lease generation + 1 under which `upstreams` were written (0:
    /// none); upstreams written under an earlier owner are not its.
    pub(crate) upstreams_of: AtomicU64,
    /// The hashes of the first [`MAX_UPSTREAMS`] names this consumer comes
    /// after (0: none), for `table::cycle_through`.
    pub(crate) upstreams: [AtomicU64; MAX_UPSTREAMS],
}

/// How many of a consumer's upstreams the table keeps (see
/// [`ConsumerMeta::upstreams`]): a cycle through a consumer with more is
/// seen through its first ones only.
pub(crate) const MAX_UPSTREAMS: usize = 6;

/// Where each part of the file is, computed from the parameters alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) capacity: usize,
    pub(crate) event_size: usize,
    pub(crate) event_align: usize,
    pub(crate) consumers: usize,
    pub(crate) producers: usize,
    pub(crate) multi: bool,
    pub(crate) control: usize,
    pub(crate) producer_table: usize,
    pub(crate) consumer_table: usize,
    pub(crate) marks: usize,
    pub(crate) ring: usize,
    pub(crate) len: usize,
}

fn align_up(n: usize, align: usize) -> Option<usize> {
    n.checked_add(align - 1).map(|n| n & !(align - 1))
}

impl Layout {
    /// `None` when the sizes overflow; the caller checked the bounds.
    pub(crate) fn new(
        capacity: usize,
        event_size: usize,
        event_align: usize,
        consumers: usize,
        producers: usize,
        multi: bool,
    ) -> Option<Self> {
        let line = core::mem::align_of::<CachePadded<u8>>().max(64);
        let control = align_up(core::mem::size_of::<Header>(), line)?;
        let producer_table = align_up(control + core::mem::size_of::<Control>(), line)?;
        let ptable = producers.checked_mul(core::mem::size_of::<ProducerEntry>())?;
        let consumer_table = align_up(producer_table.checked_add(ptable)?, line)?;
        let ctable = consumers.checked_mul(core::mem::size_of::<ConsumerEntry>())?;
        let marks = align_up(consumer_table.checked_add(ctable)?, line)?;
        let mark_bytes = if multi { capacity.checked_mul(8)? } else { 0 };
        let ring = align_up(marks.checked_add(mark_bytes)?, MAX_ALIGN)?;
        let len = ring.checked_add(capacity.checked_mul(event_size)?)?;
        Some(Self {
            capacity,
            event_size,
            event_align,
            consumers,
            producers,
            multi,
            control,
            producer_table,
            consumer_table,
            marks,
            ring,
            len,
        })
    }
}
