//! Consumers joining and leaving a running bus (event pollers), and the
//! eviction of lag-limited ones that hold the producers too long.

use std::time::Duration;

use super::Bus;
use crate::barrier::StageCell;
use crate::error::SubscribeError;
use crate::loom::{self, Arc, Ordering};
use crate::sequence::{minimum, Sequence};
use crate::sequencer::Sequencer;
use crate::wait_strategy::WaitStrategy;

impl<E, S: Sequencer, W: WaitStrategy> Bus<E, S, W> {
    /// Adds a consumer at runtime (an event poller): it has "passed" the
    /// returned cell's sequence and gates the producers from now on.
    ///
    /// It starts after the slowest gating consumer, or after everything
    /// claimed when there is none; a multi-producer bus starts it after the
    /// published floor (`Sealed::join_point`). Why producers never overwrite a slot it is
    /// entitled to: a producer writes at most up to a minimum it computed
    /// (under this lock) plus the capacity. A minimum computed before this
    /// subscription came from cursor reads (and a claim) ordered before ours
    /// by the lock; cursors only grow, so it is at most our start. Every
    /// minimum computed after it includes the new cell.
    pub(crate) fn subscribe(
        &self,
        hold: Option<Duration>,
    ) -> Result<Arc<StageCell>, SubscribeError> {
        if self.has_mutating_stage {
            // A poller reads what producers published, so it could read an
            // event while a mutating stage writes it.
            return Err(SubscribeError::MutatingStages);
        }
        let mut gating = loom::lock(&self.gating);
        if self.refuses_producers() {
            return Err(SubscribeError::Halted);
        }
        if self.closed_at().is_some() {
            return Err(SubscribeError::Closed);
        }
        let slowest = minimum(gating.iter().map(|s| &s.sequence), self.sequencer.claimed());
        let start = self.sequencer.join_point(slowest);
        let cell = Arc::new(match hold {
            None => StageCell::starting_at(start),
            Some(hold) => {
                // Relaxed: a hint for producers, changed under the lock.
                self.lag_limited.fetch_add(1, Ordering::Relaxed);
                // Release: a producer that sees the new count (Acquire)
                // sees the `lag_limited` above, so its restart finds the
                // new limit (`wait_for_free`).
                self.lag_joins.fetch_add(1, Ordering::Release);
                StageCell::limited(start, hold)
            }
        });
        gating.push(Arc::clone(&cell));
        drop(gating);
        // A producer waiting for room enlisted with the gating set it saw,
        // which this cell now joins: it must enlist with this one too.
        self.wake_all();
        Ok(cell)
    }

    /// Evicts the runtime subscribers with a lag limit that hold a producer
    /// wanting to write up to `last` (their sequence is below `last -
    /// capacity`) for longer than their limit and are not reading: they
    /// leave the gating set at once, and their next poll says how far
    /// behind they were. True if any was evicted: the caller recomputes
    /// its minimum, and wakes the evicted once outside a wait's poll
    /// (`evict_laggards_and_wake`, or `wait_for_free`). Never takes a
    /// signal's lock.
    pub(crate) fn evict_laggards(&self, last: Sequence) -> bool {
        // Relaxed: a hint (see `lag_limited`); a stale zero only delays an
        // eviction to the next look.
        if self.lag_limited.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let wrap_point = last - self.capacity();
        let mut evicted = 0;
        loom::lock(&self.gating).retain(|cell| {
            let evict = cell.evict_if_lagging(wrap_point, last);
            evicted += usize::from(evict);
            !evict
        });
        // Relaxed: as above.
        self.lag_limited.fetch_sub(evicted, Ordering::Relaxed);
        evicted > 0
    }

    /// [`evict_laggards`](Self::evict_laggards) for a caller outside a
    /// wait's poll: the evicted may be parked, and learn it now, whether or
    /// not the caller then publishes.
    pub(crate) fn evict_laggards_and_wake(&self, last: Sequence) -> bool {
        let evicted = self.evict_laggards(last);
        if evicted {
            self.wake_all();
        }
        evicted
    }

    /// The shortest hold limit among the lag-limited subscribers, if any:
    /// a producer waiting on a full ring wakes at least that often to
    /// evict one that held it too long.
    fn shortest_hold(&self) -> Option<Duration> {
        // Relaxed: as in `evict_laggards`.
        if self.lag_limited.load(Ordering::Relaxed) == 0 {
            return None;
        }
        loom::lock(&self.gating)
            .iter()
            .filter_map(|cell| cell.lag.as_ref().map(|w| w.hold()))
            .min()
    }

    /// How often a producer waiting on a full ring wakes to evict a
    /// lag-limited subscriber that held it too long: a quarter of the
    /// shortest limit (at least 100 µs); `None` without such subscribers.
    pub(super) fn lag_wake_slice(&self) -> Option<Duration> {
        self.shortest_hold()
            .map(|hold| (hold / 4).max(Duration::from_micros(100)))
    }

    /// Removes a runtime consumer; producers waiting on it go on.
    pub(crate) fn unsubscribe(&self, cell: &Arc<StageCell>) {
        let mut gating = loom::lock(&self.gating);
        let before = gating.len();
        gating.retain(|c| !Arc::ptr_eq(c, cell));
        if gating.len() < before && cell.lag.is_some() {
            // Relaxed: as in `evict_laggards` (an evicted cell was counted
            // out there).
            self.lag_limited.fetch_sub(1, Ordering::Relaxed);
        }
        drop(gating);
        // A producer waiting for room enlisted with its signal, not with the
        // ones now holding it back: every waiter looks again. The departed
        // cell's own signal first: `wake_all` no longer sees it, and it may
        // be the only one a single producer enlisted with (a bus whose only
        // consumer was this one).
        cell.signal.notify_if_parked();
        self.wake_all();
    }
}
