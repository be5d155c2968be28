//! The single producer's claim and publish paths: no read-modify-write;
//! the cursor, read back, says where it is, and the sequencer's limit (a
//! gating minimum seen earlier plus the capacity, or a refusal) says how
//! far it may write before looking at the stages.

use std::time::Duration;

use super::{check_batch, waited, Producer, Wait};
use crate::bus::Bus;
use crate::error::{PublishError, TryPublishError};
use crate::ring_buffer::BatchMut;
use crate::sequence::Sequence;
use crate::sequencer::single::REFUSED;
use crate::sequencer::SingleProducerSequencer;
use crate::wait_strategy::WaitStrategy;

/// The single producer's slow path: its limit (see `sequencer/single.rs`)
/// says `last` may not be free yet, or the bus refuses producers. Rereads
/// the gating stages (and waits, unless `wait` is `Never`), then raises the
/// limit to the minimum seen plus the capacity.
///
/// Kept out of line and away from the producer's own fields on purpose: when
/// it was inlined, its register pressure made the compiler spill the publish
/// loop's counters to the stack, two extra stores per event on a path bound
/// by how fast its stores drain.
#[cold]
#[inline(never)]
fn wait_for_room<E, W: WaitStrategy>(
    bus: &Bus<E, SingleProducerSequencer, W>,
    last: Sequence,
    published: Sequence,
    wait: Wait,
) -> Result<(), TryPublishError> {
    let seen = bus.sequencer.limit();
    if seen == REFUSED || bus.refuses_producers() {
        return Err(TryPublishError::Halted);
    }
    let wrap_point = last - bus.capacity();
    let gating = match wait {
        Wait::Never => {
            let mut min = bus.min_gating(published);
            if min < wrap_point && bus.evict_laggards_and_wake(last) {
                min = bus.min_gating(published);
            }
            if min < wrap_point {
                return Err(TryPublishError::Full {
                    missing: (wrap_point - min) as usize,
                });
            }
            min
        }
        // Nothing is claimed yet (the cursor has not moved): a refusal ends
        // the wait.
        _ => bus.wait_for_free(last, published, wait.deadline(), false)?,
    };
    // A refusal since `seen` was read stays: the raise fails.
    if bus
        .sequencer
        .raise_limit(seen, gating.saturating_add(bus.capacity()))
    {
        Ok(())
    } else {
        Err(TryPublishError::Halted)
    }
}

impl<E, W> Producer<E, SingleProducerSequencer, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    /// Whether the limit word's latest value says the bus refuses
    /// producers (loom models only: once a refusal is seen, by any means,
    /// the word must say so for good; the refusal stores it first).
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn __loom_limit_refused(&self) -> bool {
        self.bus.sequencer.limit_latest() == REFUSED
    }

    /// Reserves the next `n` slots; returns the last one.
    #[inline]
    fn claim(&mut self, n: usize, wait: Wait) -> Result<Sequence, TryPublishError> {
        if n > 1 {
            check_batch(&self.bus, n)?;
        }
        // Where we are: the cursor, read back. In a tight loop the load is
        // served from our own pending cursor store; keeping a copy instead
        // costs a store per publish, which measured 0.27x the disruptor
        // crate's single publish under `BusySpin` (0.75x without it, same
        // run), for no latency gain measurable here.
        let published = self.cursor();
        let last = published + n as i64;
        // One comparison for room and refusal: a refused bus's limit is
        // below every claim (`sequencer/single.rs`).
        if last > self.bus.sequencer.limit() {
            wait_for_room(&self.bus, last, published, wait)?;
        }
        Ok(last)
    }

    /// Makes everything up to `last` visible to the stages (Release store).
    #[inline]
    fn commit(&mut self, last: Sequence) -> Sequence {
        self.bus.sequencer.publish(last);
        // The one producer's stripe: 0 (a single-producer bus uses one).
        debug_assert_eq!(self.stripe, 0);
        self.bus.notify(0);
        last
    }

    #[inline]
    fn write_one(
        &mut self,
        wait: Wait,
        f: impl FnOnce(&mut E),
    ) -> Result<Sequence, TryPublishError> {
        let sequence = self.claim(1, wait)?;
        // SAFETY: `claim` returned a sequence no stage may read yet (it is
        // past the cursor) whose slot every gating stage has passed.
        unsafe { self.bus.ring.view().write(sequence, f) };
        Ok(self.commit(sequence))
    }

    fn write_batch(
        &mut self,
        n: usize,
        wait: Wait,
        f: impl FnOnce(BatchMut<'_, E>),
    ) -> Result<Sequence, TryPublishError> {
        let last = self.claim(n, wait)?;
        if n == 0 {
            return Ok(last);
        }
        let first = last - n as i64 + 1;
        // SAFETY: as in `write_one`, for each of `first..=last` (n <= capacity).
        f(unsafe { self.bus.ring.view().slots_mut(first, last) });
        Ok(self.commit(last))
    }

    /// Writes the next event in place with `f` and publishes it, waiting with
    /// the bus's strategy while the ring is full. Returns its sequence.
    ///
    /// Memory effect: a Release store of the cursor after `f` returned, so
    /// every stage that sees the sequence sees everything `f` wrote. If `f`
    /// panics, the slot is not published (the panic propagates).
    ///
    /// ```
    /// # use ringbus::{Blocking, Sequence};
    /// let mut producer = ringbus::single_producer(4, || String::new(), Blocking)
    ///     .handle_events_with(|e: &String, _: Sequence, _: bool| assert!(e.starts_with("order")))
    ///     .build();
    /// for i in 0..10 {
    ///     // The slot's String is reused: no allocation once it has grown.
    ///     let seq = producer.publish(|e| { e.clear(); e.push_str("order"); }).unwrap();
    ///     assert_eq!(seq, i);
    /// }
    /// ```
    ///
    /// # Errors
    /// [`PublishError::Halted`] when the bus was halted (by
    /// [`halt`](Self::halt) or a failed stage); `f` is then not
    /// called.
    #[inline]
    pub fn publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, PublishError> {
        self.write_one(Wait::Forever, f).map_err(waited)
    }

    /// Like [`publish`](Self::publish), but fails at once with
    /// [`TryPublishError::Full`] instead of waiting.
    ///
    /// ```
    /// # use ringbus::{Blocking, Sequence, TryPublishError};
    /// # use std::time::Duration;
    /// let (tx, rx) = std::sync::mpsc::channel::<()>();
    /// let mut producer = ringbus::single_producer(2, || 0u8, Blocking)
    ///     .handle_events_with(move |_: &u8, _: Sequence, _: bool| {
    ///         let _ = rx.recv_timeout(Duration::from_secs(10));
    ///     })
    ///     .build();
    /// // The stage holds its first event until we send; the ring of 2 fills.
    /// producer.try_publish(|e| *e = 1).unwrap();
    /// producer.try_publish(|e| *e = 2).unwrap();
    /// assert_eq!(producer.try_publish(|e| *e = 3), Err(TryPublishError::Full { missing: 1 }));
    /// tx.send(()).unwrap();
    /// tx.send(()).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`TryPublishError::Full`] when no slot is free, or
    /// [`TryPublishError::Halted`] as for `publish`; `f` is then not called.
    #[inline]
    pub fn try_publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, TryPublishError> {
        self.write_one(Wait::Never, f)
    }

    /// Like [`publish`](Self::publish), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`TryPublishError::Timeout`] when no slot came free in time, or
    /// [`TryPublishError::Halted`]; `f` is then not called.
    pub fn publish_timeout(
        &mut self,
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
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&mut E),
    ) -> Result<Sequence, TryPublishError> {
        self.publish_timeout(timeout, f)
    }

    /// Claims `n` slots, lets `f` write them in order, then publishes them all
    /// with one store. Returns the last sequence. `n == 0` does nothing.
    ///
    /// ```
    /// # use ringbus::{Blocking, Sequence};
    /// let mut producer = ringbus::single_producer(64, || 0u32, Blocking)
    ///     .handle_events_with(|_: &u32, _: Sequence, _: bool| {})
    ///     .build();
    /// let last = producer
    ///     .batch_publish(16, |slots| {
    ///         for (i, e) in slots.enumerate() {
    ///             *e = i as u32;
    ///         }
    ///     })
    ///     .unwrap();
    /// assert_eq!(last, 15);
    /// ```
    ///
    /// # Errors
    /// [`PublishError::BatchTooLarge`] when `n` exceeds the capacity (it
    /// could never fit), or [`PublishError::Halted`]; `f` is then not called.
    pub fn batch_publish(
        &mut self,
        n: usize,
        f: impl FnOnce(BatchMut<'_, E>),
    ) -> Result<Sequence, PublishError> {
        self.write_batch(n, Wait::Forever, f).map_err(waited)
    }

    /// Like [`batch_publish`](Self::batch_publish), but fails at once
    /// when fewer than `n` slots are free; the error says how many are missing.
    ///
    /// # Errors
    /// [`TryPublishError::Full`] with the missing slots,
    /// [`TryPublishError::BatchTooLarge`], or [`TryPublishError::Halted`];
    /// `f` is then not called.
    pub fn try_batch_publish(
        &mut self,
        n: usize,
        f: impl FnOnce(BatchMut<'_, E>),
    ) -> Result<Sequence, TryPublishError> {
        self.write_batch(n, Wait::Never, f)
    }
}
