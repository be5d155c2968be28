//! How the journal stage writes: [`JournalOptions`] and its [`SyncPolicy`].

use std::time::Duration;

/// When the journal stage syncs what it wrote; see the [module docs](super)
/// for what survives what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// One `fdatasync` at the end of every batch, before the stages after
    /// the journal see it (LMAX's batching amortises the cost: the longer a
    /// sync takes, the larger the next batch).
    #[default]
    EveryBatch,
    /// Write at the end of every batch; sync when `d` has passed since the
    /// first unsynced write (checked at batch ends, and when the stage has
    /// been idle for `d`: a write followed by a batch just under `d` later
    /// is synced about `2d` after it, the most a power cut can lose).
    Interval(Duration),
    /// Write at the end of every batch, never sync (the kernel writes back
    /// on its own schedule).
    Never,
}

/// How the journal stage writes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalOptions {
    /// When to sync. Default [`SyncPolicy::EveryBatch`].
    pub sync: SyncPolicy,
    /// A segment is closed, and the next one started, once it holds this
    /// many bytes (it may pass it by one record). Default 64 MiB.
    pub segment_bytes: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            sync: SyncPolicy::EveryBatch,
            segment_bytes: 64 << 20,
        }
    }
}

impl JournalOptions {
    /// Sets the sync policy.
    #[must_use]
    pub fn sync(mut self, policy: SyncPolicy) -> Self {
        self.sync = policy;
        self
    }

    /// Sets the size at which segments roll.
    #[must_use]
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }
}
