//! The builder's hooks for stage kinds that live with their feature (the
//! journal's `journal_to`).

use std::time::Duration;

use super::Builder;
use crate::error::BuildError;

/// Hooks for stage kinds that live with their feature (the journal's
/// `journal_to`): the builder itself knows nothing of them.
#[cfg_attr(not(all(feature = "journal", unix)), allow(dead_code))]
impl<E, S, W> Builder<E, S, W> {
    /// The pending stage name, or `default` made the pending name (for a
    /// stage kind with a name of its own, such as the journal's).
    pub(crate) fn pending_name_or(&mut self, default: &str) -> String {
        self.pending
            .name
            .get_or_insert_with(|| default.into())
            .clone()
    }

    /// True unless the pending failure policy ends in anything but a halt
    /// (it may retry first).
    pub(crate) fn pending_policy_halts(&self) -> bool {
        self.pending.policy.as_ref().map_or(true, |policy| {
            matches!(policy.finally, crate::fault::Finally::Halt)
        })
    }

    /// The pending timeout, unless one was given.
    pub(crate) fn default_timeout(&mut self, timeout: Option<Duration>) {
        if self.pending.timeout.is_none() {
            self.pending.timeout = timeout;
        }
    }

    /// Makes `build` fail with `error` (the first error wins).
    pub(crate) fn refuse(&mut self, error: BuildError) {
        self.error.get_or_insert(error);
    }

    /// This builder's bus, for a stage that must belong to it alone.
    pub(crate) fn bus_id(&self) -> u64 {
        self.id
    }
}
