//! Loom models of `ringbus`'s production types.
//!
//! The models live in `tests/`; they only build with `--cfg loom`, under which
//! `ringbus` takes its atomics, cells, locks and threads from loom. Run them
//! with `ci/loom.sh` (release build, debug assertions, `LOOM_MAX_PREEMPTIONS=2`).
//!
//! This library holds what the models share: a tiny event type and a counter
//! of how often a model reached the path it exists to explore (a model that
//! never runs its threads concurrently proves nothing, loom issue #392).

use std::sync::atomic::{AtomicUsize, Ordering};

/// An event whose second field must always agree with the first.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ev {
    /// What the producer wrote.
    pub value: u64,
    /// `!value`, written after it: a torn or unwritten event disagrees.
    pub check: u64,
    /// Written by mutating stages.
    pub stamp: u64,
}

impl Ev {
    /// Writes `value` and its check.
    pub fn set(&mut self, value: u64) {
        self.value = value;
        self.check = !value;
        self.stamp = 0;
    }

    /// Panics on a torn or unwritten event.
    pub fn verify(&self) {
        assert_eq!(self.check, !self.value, "torn or unwritten event {self:?}");
    }
}

/// Counts, across every execution of a model, how often it reached a path.
#[derive(Debug, Default)]
pub struct Reached(AtomicUsize);

impl Reached {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self(AtomicUsize::new(0))
    }

    /// Records one more execution that took the path.
    pub fn hit(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// How many executions took the path.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Fails the model if no execution took the path.
    pub fn assert_reached(&self, what: &str) {
        let n = self.count();
        assert!(n > 0, "the model never reached: {what}");
        println!("reached `{what}` in {n} executions");
    }
}

/// A poll closure that checks each event is the next one after `expected`
/// (no gap, no repeat), is fully written, and holds `sequence + 1`, the value
/// the models' producers write; it advances `expected`.
pub fn in_order(expected: &mut i64) -> impl FnMut(&Ev, i64, bool) + '_ {
    move |e: &Ev, seq: i64, _eob: bool| {
        assert_eq!(seq, *expected, "gap or repeat");
        e.verify();
        assert_eq!(
            e.value,
            seq as u64 + 1,
            "slot overwritten before it was read"
        );
        *expected += 1;
    }
}
