//! The journal writer's counters: [`JournalStats`], read from the atomics
//! the writer counts in.

use std::sync::atomic::AtomicU64;

/// Counters of a journal's writer, read with [`Journal::stats`](super::Journal::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalStats {
    /// Records written to segment files (replayed events are not written
    /// again).
    pub records: u64,
    /// Bytes written to segment files (headers included).
    pub bytes: u64,
    /// `write` calls made (one per batch, more when a batch passes 1 MiB).
    pub writes: u64,
    /// `fdatasync` calls made.
    pub syncs: u64,
    /// Segments created.
    pub segments: u64,
    /// Syncs that failed at shutdown (all others stop the bus).
    pub sync_errors: u64,
}

#[derive(Default)]
pub(super) struct Stats {
    pub(super) records: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) writes: AtomicU64,
    pub(super) syncs: AtomicU64,
    pub(super) segments: AtomicU64,
    pub(super) sync_errors: AtomicU64,
}
