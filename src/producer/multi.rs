//! The multi producer's claim and publish paths: `fetch_add` claims (a CAS
//! for `try_` calls), a shared gating cache, and a mark per batch.

use std::time::{Duration, Instant};

use super::{check_batch, waited, Producer, Wait};
use crate::bus::Bus;
use crate::error::{PublishError, TryPublishError};
use crate::loom::{Arc, Ordering};
use crate::parking::Interrupt;
use crate::ring_buffer::BatchMut;
use crate::sequence::Sequence;
use crate::sequencer::multi::{is_closed_claim, ClaimError};
use crate::sequencer::sealed::Sealed as _;
use crate::sequencer::MultiProducerSequencer;
use crate::wait_strategy::WaitStrategy;

/// A multi producer's slow path after a blocking claim of `last - n + 1
/// ..= last`: the shared gating cache says the slots may not be free yet,
/// or the claim came after the close. Refreshes the cache from the gating
/// stages and, if still short, waits. Out of line for the reason given at
/// `single.rs`'s `wait_for_room`.
#[cold]
#[inline(never)]
fn wait_for_claimed_room<E, W: WaitStrategy>(
    bus: &Bus<E, MultiProducerSequencer, W>,
    last: Sequence,
    n: i64,
) -> Result<(), TryPublishError> {
    if is_closed_claim(last) {
        return Err(TryPublishError::Closed);
    }
    let min = refresh_gating_cache(bus, last - n);
    if bus.writable_up_to(min) < last {
        // Shown while it waits (see `Bus::waiting_claims`), also when the
        // wait ends in an error.
        let claim = (last - n + 1, last);
        let shown = ShownClaim { bus, claim };
        lock_claims(bus).push(claim);
        // Claimed: only a halt ends the wait (then nothing drains anyway).
        wait_then_cache(shown.bus, last, last - n, None, true)?;
    }
    Ok(())
}

fn lock_claims<E, W: WaitStrategy>(
    bus: &Bus<E, MultiProducerSequencer, W>,
) -> std::sync::MutexGuard<'_, Vec<(Sequence, Sequence)>> {
    // Nothing panics while it is held.
    bus.waiting_claims
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes a claim off `Bus::waiting_claims` when its wait ends.
struct ShownClaim<'a, E, W: WaitStrategy> {
    bus: &'a Bus<E, MultiProducerSequencer, W>,
    claim: (Sequence, Sequence),
}

impl<E, W: WaitStrategy> Drop for ShownClaim<'_, E, W> {
    fn drop(&mut self) {
        let mut claims = lock_claims(self.bus);
        if let Some(i) = claims.iter().position(|c| *c == self.claim) {
            claims.swap_remove(i);
        }
    }
}

/// Rereads the gating stages for a claim made after `before` and stores the
/// minimum in the multi producers' shared cache; returns it.
fn refresh_gating_cache<E, W: WaitStrategy>(
    bus: &Bus<E, MultiProducerSequencer, W>,
    before: Sequence,
) -> Sequence {
    // Failed stages stay in: a cache that left them out could hand their
    // room to a claim made after the refusal.
    let min = bus.min_gating(before);
    bus.sequencer.cache_room(min);
    min
}

/// Waits until multi producers may write up to `last` (see
/// [`Bus::wait_for_free`]) and stores the gating minimum then seen in their
/// shared cache.
fn wait_then_cache<E, W: WaitStrategy>(
    bus: &Bus<E, MultiProducerSequencer, W>,
    last: Sequence,
    before: Sequence,
    deadline: Option<Instant>,
    claimed: bool,
) -> Result<(), Interrupt> {
    let min = bus.wait_for_free(last, before, deadline, claimed)?;
    if !claimed {
        // A claimed wait's minimum may leave failed stages out; cached, it
        // would hand their room to producers that have claimed nothing.
        bus.sequencer.cache_room(min);
    }
    Ok(())
}

impl<E, W> Clone for Producer<E, MultiProducerSequencer, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    fn clone(&self) -> Self {
        // Relaxed: a new handle is made from a live one, so the count cannot
        // reach zero meanwhile (as for `Arc::clone`).
        self.bus.producers.fetch_add(1, Ordering::Relaxed);
        Self::new(Arc::clone(&self.bus))
    }
}

/// Publishes a claimed range when dropped, so a panicking writer cannot leave
/// a claimed slot unpublished (which would stall every stage).
struct PublishOnDrop<'a, E, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    bus: &'a Bus<E, MultiProducerSequencer, W>,
    first: Sequence,
    last: Sequence,
    stripe: usize,
}

impl<E, W> Drop for PublishOnDrop<'_, E, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    #[inline]
    fn drop(&mut self) {
        self.bus.sequencer.publish(self.first, self.last);
        self.bus.notify(self.stripe);
    }
}

impl<E, W> Producer<E, MultiProducerSequencer, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    /// Highest sequence producers may write, from the shared cache when it
    /// suffices for the claim `last - n + 1 ..= last`, else from the gating
    /// consumers (refreshing the cache).
    #[inline]
    fn writable_up_to(&self, last: Sequence, n: i64) -> Sequence {
        let cached = self.bus.sequencer.room_cached();
        if last <= cached {
            return cached;
        }
        self.bus
            .writable_up_to(refresh_gating_cache(&self.bus, last - n))
    }

    /// Reserves `n` slots; returns the last one.
    #[inline]
    fn claim(&self, n: usize, wait: Wait) -> Result<Sequence, TryPublishError> {
        if n > 1 {
            check_batch(&self.bus, n)?;
        }
        if self.bus.refuses_producers_relaxed() {
            return Err(TryPublishError::Halted);
        }
        let seq = &self.bus.sequencer;
        let n = n as i64;
        match wait {
            Wait::Forever => {
                // One comparison for room and the close: a claim after the
                // close is above any cached room (`MultiProducerSequencer::
                // claim`).
                let last = seq.claim(n);
                if last > seq.room_cached() {
                    wait_for_claimed_room(&self.bus, last, n)?;
                }
                Ok(last)
            }
            // A claim with a deadline must not reserve before it knows the
            // slots are free (a reserved slot must be published), so it
            // retries a CAS claim, waiting for room in between.
            Wait::Never | Wait::Until(_) => loop {
                match seq.try_claim(n, |last| self.writable_up_to(last, n)) {
                    Ok(last) => return Ok(last),
                    Err(ClaimError::Closed) => return Err(TryPublishError::Closed),
                    Err(ClaimError::Full(missing)) => {
                        let before = seq.claimed();
                        if self.bus.evict_laggards_and_wake(before + n) {
                            // Room freed: the cache must say so.
                            refresh_gating_cache(&self.bus, before);
                            continue;
                        }
                        let Wait::Until(deadline) = wait else {
                            return Err(TryPublishError::Full { missing });
                        };
                        // Other producers may keep winning the room we wait
                        // for: the deadline bounds the retries too.
                        if Instant::now() >= deadline {
                            return Err(TryPublishError::Timeout);
                        }
                        let before = seq.claimed();
                        wait_then_cache(&self.bus, before + n, before, Some(deadline), false)?;
                    }
                }
            },
        }
    }

    #[inline]
    fn write_one(&self, wait: Wait, f: impl FnOnce(&mut E)) -> Result<Sequence, TryPublishError> {
        let sequence = self.claim(1, wait)?;
        let _publish = PublishOnDrop {
            bus: &self.bus,
            first: sequence,
            last: sequence,
            stripe: self.stripe,
        };
        // SAFETY: this producer alone claimed `sequence`; it is unpublished
        // (no stage reads it) and every gating stage has passed its slot.
        unsafe { self.bus.ring.view().write(sequence, f) };
        Ok(sequence)
    }

    fn write_batch(
        &self,
        n: usize,
        wait: Wait,
        f: impl FnOnce(BatchMut<'_, E>),
    ) -> Result<Sequence, TryPublishError> {
        if n == 0 {
            // Nothing to claim, but the answer a claim would get on a bus
            // that refuses (as the single producer's: `Halted`, `Closed`).
            if self.bus.refuses_producers_relaxed() {
                return Err(TryPublishError::Halted);
            }
            if self.bus.sequencer.is_closed() {
                return Err(TryPublishError::Closed);
            }
            return Ok(self.cursor());
        }
        let last = self.claim(n, wait)?;
        let first = last - n as i64 + 1;
        let _publish = PublishOnDrop {
            bus: &self.bus,
            first,
            last,
            stripe: self.stripe,
        };
        // SAFETY: as in `write_one`, for each of `first..=last` (n <= capacity).
        f(unsafe { self.bus.ring.view().slots_mut(first, last) });
        Ok(last)
    }

    /// Writes the next event in place with `f` and publishes it, waiting with
    /// the bus's strategy while the ring is full. Returns its sequence.
    ///
    /// If `f` panics the event is still published, as far as `f` wrote it
    /// (other producers' later claims may already wait on it).
    ///
    /// Memory effect: a Release store of the batch's availability mark after
    /// `f` returned; stages load it with Acquire before reading the slot.
    ///
    /// # Errors
    /// [`PublishError::Halted`] or [`PublishError::Closed`] (another clone
    /// shut the bus down); `f` is then not called.
    #[inline]
    pub fn publish(&self, f: impl FnOnce(&mut E)) -> Result<Sequence, PublishError> {
        self.write_one(Wait::Forever, f).map_err(waited)
    }

    /// Like [`publish`](Self::publish), but fails at once with
    /// [`TryPublishError::Full`] instead of waiting (its CAS claims nothing
    /// it cannot fill).
    ///
    /// # Errors
    /// [`TryPublishError::Full`], `Halted` or `Closed`; `f` is then not
    /// called.
    #[inline]
    pub fn try_publish(&self, f: impl FnOnce(&mut E)) -> Result<Sequence, TryPublishError> {
        self.write_one(Wait::Never, f)
    }

    /// Like [`publish`](Self::publish), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`TryPublishError::Timeout`], `Halted` or `Closed`; `f` is then not
    /// called.
    pub fn publish_timeout(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut E),
    ) -> Result<Sequence, TryPublishError> {
        self.write_one(Wait::after(timeout), f)
    }

    /// The old name of [`publish_timeout`](Self::publish_timeout).
    #[deprecated(
        note = "renamed `publish_timeout` (one timeout suffix: `poll_timeout`, `shutdown_timeout`)"
    )]
    #[doc(hidden)]
    pub fn try_publish_for(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut E),
    ) -> Result<Sequence, TryPublishError> {
        self.publish_timeout(timeout, f)
    }

    /// Claims `n` consecutive slots, lets `f` write them in order, then
    /// publishes them with one store. Returns the last sequence.
    ///
    /// # Errors
    /// [`PublishError::BatchTooLarge`], `Halted` or `Closed`; `f` is then
    /// not called.
    pub fn batch_publish(
        &self,
        n: usize,
        f: impl FnOnce(BatchMut<'_, E>),
    ) -> Result<Sequence, PublishError> {
        self.write_batch(n, Wait::Forever, f).map_err(waited)
    }

    /// Like [`batch_publish`](Self::batch_publish), but fails at once
    /// when fewer than `n` slots are free; the error says how many are missing.
    ///
    /// # Errors
    /// [`TryPublishError::Full`] with the missing slots, `BatchTooLarge`,
    /// `Halted` or `Closed`; `f` is then not called.
    pub fn try_batch_publish(
        &self,
        n: usize,
        f: impl FnOnce(BatchMut<'_, E>),
    ) -> Result<Sequence, TryPublishError> {
        self.write_batch(n, Wait::Never, f)
    }
}
