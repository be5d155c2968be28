//! The producers' side of a bus: the gating minimum, and waiting for free
//! slots (a yield phase first, then the strategy's wait, waking to evict
//! lag-limited subscribers).

use std::time::{Duration, Instant};

use super::Bus;
use crate::loom::{self, Ordering};
#[cfg(feature = "async")]
use crate::parking;
use crate::parking::{Interrupt, PollResult, Signal, Sources};
use crate::sequence::Sequence;
use crate::sequencer::Sequencer;
use crate::wait_strategy::{self, WaitStrategy};
use crate::weaken;

/// Bounds of the yield phase of a producer facing a full ring, in µs (see
/// `Bus::yield_for_room`). There is no such phase under loom: a phase bounded
/// by the clock is not a model; the strategies' own waits, which follow it,
/// are checked.
pub(super) const FULL_RING_YIELD_MAX_US: usize = 200;
const FULL_RING_YIELD_MIN_US: usize = 8;

impl<E, S: Sequencer, W: WaitStrategy> Bus<E, S, W> {
    /// The slowest gating consumer, or at most `default`.
    ///
    /// Producers pass as `default` the sequence they had fully claimed
    /// before their current claim, never "no limit": a poller may join at
    /// any time, and every limit a producer computes must hold for it too.
    pub(crate) fn min_gating(&self, default: Sequence) -> Sequence {
        self.min_gating_of(default, false)
    }

    /// As `min_gating`; with `skip_failed`, stages stopped by a failure are
    /// left out: for a multi producer whose claim the stages can already see
    /// and which must be published (see `wait_for_free`). A producer that
    /// has claimed nothing keeps them in, so it waits for the refusal that
    /// follows a failure instead of racing it into the failed stage's room.
    pub(crate) fn min_gating_of(&self, default: Sequence, skip_failed: bool) -> Sequence {
        let gating = loom::lock(&self.gating);
        // A stage stopped by a failure reads no more: left out (in favour of
        // the healthy stages before it, see `StageCell::gating`), a claim
        // made before the refusal can still be filled and published for the
        // healthy stages (no hole for them to wait at). Its last read
        // happened before its flag (Release/Acquire), so its slots may be
        // reused.
        let consumers = gating
            .iter()
            .fold(Sequence::MAX, |min, cell| min.min(cell.gating(skip_failed)));
        // Only to show the loom model of a joining poller fails without it.
        if weaken::LIMIT_DEFAULT {
            return consumers;
        }
        // The published floor (a multi producer's; `MAX` for a single one)
        // is at or above every consumer's sequence: consumers pass only
        // published events, and runtime readers join at the floor, which
        // only grows. So it binds only when no consumer gates, and its scan
        // (over marks other producers are writing) is paid only then: on
        // the 2P->1C row, scanning on every refresh of the gating cache
        // cost more than half the throughput.
        if consumers == Sequence::MAX {
            default.min(self.sequencer.gating_floor())
        } else {
            self.sequencer.floor_for_consumers();
            default.min(consumers)
        }
    }

    /// Highest sequence producers may write while the slowest gating stage is
    /// at `min_gating`.
    #[inline]
    pub(crate) fn writable_up_to(&self, min_gating: Sequence) -> Sequence {
        min_gating.saturating_add(self.capacity())
    }

    /// Waits until producers may write up to `last`; returns the gating minimum
    /// then seen. `before` is what was claimed before this claim (see
    /// `min_gating`).
    ///
    /// `Halted` when the bus is halted; when a stage failure refuses the
    /// producers, only if `claimed` is false. A claim the stages can already
    /// see (`claimed`: a multi producer's `fetch_add`) must be published,
    /// or the healthy stages would wait at its hole: it goes on waiting for
    /// the room the healthy stages free (failed stages stop gating).
    pub(crate) fn wait_for_free(
        &self,
        last: Sequence,
        before: Sequence,
        deadline: Option<Instant>,
        claimed: bool,
    ) -> Result<Sequence, Interrupt> {
        // An eviction inside a poll cannot wake the evicted (the poll may
        // run where a signal's lock is held): this wait wakes them when the
        // strategy's wait they were evicted in ends (at once if there is
        // still no room), whether or not its caller then publishes.
        let evicted = std::cell::Cell::new(false);
        let found = self.wait_for_free_polling(last, before, deadline, claimed, &evicted);
        if evicted.get() {
            self.wake_all();
        }
        found
    }

    fn wait_for_free_polling(
        &self,
        last: Sequence,
        before: Sequence,
        deadline: Option<Instant>,
        claimed: bool,
        evicted: &std::cell::Cell<bool>,
    ) -> Result<Sequence, Interrupt> {
        let mut poll = || self.room_for(last, before, claimed, evicted);
        if self.strategy.naps() && !cfg!(loom) {
            if let Some(found) = self.yield_for_room(deadline, &mut poll) {
                return found;
            }
        }
        // With a lag-limited subscriber, wake at least every quarter of its
        // limit to evict it if it held us too long (nobody signals that).
        // Not under loom: a timed wake makes the model's path depend on the
        // real clock (loom then stops: "is the model fully deterministic?"),
        // and its models evict at the first look (`LagLimit::never_hold`).
        // A subscriber that joins while we wait wakes us (`subscribe`), and
        // we then start over with its limit: else a producer parked before
        // it joined would park with no deadline and never evict it.
        loop {
            // Acquire: pairs with `subscribe`'s Release increment, so
            // `shortest_hold` below sees the subscriber counted.
            let joins = self.lag_joins.load(Ordering::Acquire);
            let slice = self.lag_wake_slice().filter(|_| !cfg!(loom));
            let wake = slice.and_then(wait_strategy::deadline_after);
            let until = match (deadline, wake) {
                (Some(d), Some(w)) => Some(d.min(w)),
                (d, w) => d.or(w),
            };
            let found = self.strategy.wait(&ProducerSources(self), until, || {
                // Relaxed: a change only restarts the wait, whose first
                // load (Acquire) synchronises.
                if self.lag_joins.load(Ordering::Relaxed) != joins && !weaken::LAG_REJOIN {
                    // A new limit to wake for: start over.
                    return Err(Interrupt::Timeout);
                }
                let found = poll();
                if evicted.get() && matches!(found, Ok(None)) {
                    // Evicted a subscriber and still no room: end this
                    // wait to wake it (below), then wait again. A wait that
                    // may last for ever must not keep the evicted asleep.
                    return Err(Interrupt::Timeout);
                }
                found
            });
            if evicted.replace(false) {
                self.wake_all();
            }
            match found {
                Err(Interrupt::Timeout) if deadline.map_or(true, |d| Instant::now() < d) => {}
                found => return found,
            }
        }
    }

    /// The async form of `wait_for_free` for a producer that has claimed
    /// nothing (feature `async`): ready with the gating minimum once room
    /// for `last` is there, else `waker` is enlisted with the signals of the
    /// gating stages and subscribers (and every publish stripe, for a multi
    /// producer).
    #[cfg(feature = "async")]
    pub(crate) fn register_for_free(
        &self,
        waker: &std::task::Waker,
        last: Sequence,
        before: Sequence,
    ) -> std::task::Poll<Result<Sequence, Interrupt>> {
        let evicted = std::cell::Cell::new(false);
        let found = parking::register(&ProducerSources(self), waker, || {
            // A halt first, then a close on another handle (`Closed`), as
            // the blocking wait answers them (`room_for`).
            self.room_for(last, before, false, &evicted)
        });
        if evicted.get() {
            // As in `wait_for_free`: the evicted learn it now.
            self.wake_all();
        }
        // Held by a lag-limited subscriber, maybe: look again within a
        // quarter of its limit, as a waiting thread does (see `lag_clock`).
        #[cfg(not(loom))]
        if found.is_pending() && !weaken::LAG_CLOCK {
            if let Some(slice) = self.lag_wake_slice() {
                crate::lag_clock::wake_at(Instant::now() + slice, waker.clone());
            }
        }
        found
    }

    /// One look for room up to `last` (see `wait_for_free`): the gating
    /// minimum once there is room, after evicting the lag-limited
    /// subscribers that held the producers too long (then `evicted` is
    /// set); `Halted` on a refusal.
    fn room_for(
        &self,
        last: Sequence,
        before: Sequence,
        claimed: bool,
        evicted: &std::cell::Cell<bool>,
    ) -> PollResult<Sequence> {
        // The refusal first: a failed stage stops gating, which may make
        // room that only a claim already made may take.
        if self.is_halted() || (!claimed && self.refuses_producers()) {
            return Err(Interrupt::Halted);
        }
        // Another handle closed the bus: a producer that has claimed nothing
        // gets `Closed` now (a claim already made waits for its room).
        if !claimed && self.closed_at().is_some() {
            return Err(Interrupt::Closed);
        }
        let wrap_point = last - self.capacity();
        let mut min = self.min_gating_of(before, claimed);
        if min < wrap_point && self.evict_laggards(last) {
            evicted.set(true);
            min = self.min_gating_of(before, claimed);
        }
        Ok((min >= wrap_point).then_some(min))
    }

    /// A napping strategy's producer facing a full ring yields first; see
    /// "A producer facing a full ring yields first" on [`Blocking`]. `None`:
    /// no room within the phase (now shorter for the next producer); wait
    /// the strategy's way.
    ///
    /// Room found by the first poll says nothing about yielding (a single
    /// producer comes here whenever its cached minimum is stale), so only a
    /// phase that yielded at least once changes the budget.
    ///
    /// [`Blocking`]: crate::Blocking
    fn yield_for_room(
        &self,
        deadline: Option<Instant>,
        mut poll: impl FnMut() -> PollResult<Sequence>,
    ) -> Option<Result<Sequence, Interrupt>> {
        match poll() {
            Ok(Some(min)) => return Some(Ok(min)),
            Err(interrupt) => return Some(Err(interrupt)),
            Ok(None) => {}
        }
        // Relaxed: a tuning hint the producers share; any value is safe.
        let budget = self.full_ring_yield_us.load(Ordering::Relaxed);
        let until = Instant::now() + Duration::from_micros(budget as u64);
        let phase_end = deadline.map_or(until, |d| d.min(until));
        let (outcome, next_budget) = match wait_strategy::yield_until(phase_end, poll) {
            Ok(min) => (Some(Ok(min)), (budget * 2).min(FULL_RING_YIELD_MAX_US)),
            // The phase, not the caller's deadline, ran out.
            Err(Interrupt::Timeout) if deadline.map_or(true, |d| d > until) => {
                (None, (budget / 2).max(FULL_RING_YIELD_MIN_US))
            }
            Err(interrupt) => (Some(Err(interrupt)), budget),
        };
        if next_budget != budget {
            self.full_ring_yield_us
                .store(next_budget, Ordering::Relaxed);
        }
        outcome
    }
}

/// What a producer waiting for room enlists with (parking per edge, see
/// `wait_strategy`): every gating stage's and subscriber's signal (for a
/// failed one, those of the stages before it), and, for a multi producer,
/// every publish stripe (another producer's publish moves the published
/// floor, which binds when nothing gates). The bus's own events (close,
/// halt) wake every signal.
struct ProducerSources<'a, E, S, W>(&'a Bus<E, S, W>);

impl<E, S: Sequencer, W: WaitStrategy> Sources for ProducerSources<'_, E, S, W> {
    fn each(&self, f: &mut dyn FnMut(&Signal)) {
        if S::MULTI {
            self.0.signals.each(f);
        }
        // Under the gating lock (then a signal's: never the other way round;
        // enlisting wakes nothing under it).
        for cell in loom::lock(&self.0.gating).iter() {
            // A failed stage's upstream stages hold the producers instead
            // (`StageCell::gating`); its failure woke every waiter first.
            cell.each_gating_signal(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    use super::{Ordering, FULL_RING_YIELD_MAX_US, FULL_RING_YIELD_MIN_US};
    use crate::parking::Interrupt;
    use crate::sequence::Sequence;
    use crate::wait_strategy::Sleeping;

    /// The yield phase's bookkeeping, driven with scripted polls (no stage,
    /// no timing races): it halves after a phase that found no room, down to
    /// its floor; doubles after one that found room, up to its ceiling; and
    /// leaves the budget alone when room is there at once, when the caller's
    /// deadline ends the wait, and on a halt.
    #[test]
    fn full_ring_yield_phase_adapts() {
        let p = crate::single_producer(2, || 0u64, Sleeping::default())
            .handle_events_with(|_e: &u64, _s: Sequence, _eob: bool| {})
            .build();
        let bus = &*p.bus;
        let budget = || bus.full_ring_yield_us.load(Ordering::Relaxed);
        let set = |us: usize| bus.full_ring_yield_us.store(us, Ordering::Relaxed);
        // Room after `n` failed polls (never, for `None`).
        let room_after = |n: Option<u32>| {
            let polls = Cell::new(0u32);
            move || {
                polls.set(polls.get() + 1);
                Ok(n.filter(|&n| polls.get() > n).map(|_| 7))
            }
        };
        assert_eq!(budget(), FULL_RING_YIELD_MAX_US);

        let mut expected = FULL_RING_YIELD_MAX_US;
        while expected > FULL_RING_YIELD_MIN_US {
            assert_eq!(bus.yield_for_room(None, room_after(None)), None);
            expected = (expected / 2).max(FULL_RING_YIELD_MIN_US);
            assert_eq!(budget(), expected);
        }
        assert_eq!(bus.yield_for_room(None, room_after(None)), None);
        assert_eq!(budget(), FULL_RING_YIELD_MIN_US, "stays at its floor");

        // Room at the phase's first poll, which comes before its first look
        // at the clock: no race with the (short, or under Miri fast) clock.
        assert_eq!(bus.yield_for_room(None, room_after(Some(1))), Some(Ok(7)));
        assert_eq!(budget(), 2 * FULL_RING_YIELD_MIN_US);

        set(150);
        assert_eq!(bus.yield_for_room(None, room_after(Some(1))), Some(Ok(7)));
        assert_eq!(budget(), FULL_RING_YIELD_MAX_US, "capped at its ceiling");

        set(64);
        assert_eq!(bus.yield_for_room(None, room_after(Some(0))), Some(Ok(7)));
        assert_eq!(budget(), 64, "room at the first poll is no evidence");

        // A long phase cut short by the caller's deadline: a timeout at the
        // deadline, not at the phase's end, and no change.
        set(10_000_000);
        let start = Instant::now();
        let deadline = start + Duration::from_millis(2);
        assert_eq!(
            bus.yield_for_room(Some(deadline), room_after(None)),
            Some(Err(Interrupt::Timeout))
        );
        assert!(Instant::now() >= deadline);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "waited for the phase"
        );
        assert_eq!(budget(), 10_000_000);

        let halted_after = |n: u32| {
            let polls = Cell::new(0u32);
            move || {
                polls.set(polls.get() + 1);
                if polls.get() > n {
                    Err(Interrupt::Halted)
                } else {
                    Ok(None)
                }
            }
        };
        set(64);
        assert_eq!(
            bus.yield_for_room(None, halted_after(1)),
            Some(Err(Interrupt::Halted))
        );
        assert_eq!(budget(), 64);
        drop(p);
    }
}
