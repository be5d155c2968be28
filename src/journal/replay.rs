//! Replaying a journal into a bus (`Journal::replay_into`): the guard that
//! ends a replay, and what a replay published (`Replayed`).

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use super::error::JournalError;
use super::{Journal, IDLE, REPLAYED, REPLAYING};
use crate::codec::Codec;
use crate::error::{PublishError, TryPublishError};
use crate::producer::Publisher;
use crate::sequence::Sequence;

/// What [`Journal::replay_into`] published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Replayed {
    /// Events published (bus sequences `0..events`).
    pub events: u64,
    /// The journal sequence of the first.
    pub first: Sequence,
    /// The journal sequence of the last (`first - 1` when none).
    pub last: Sequence,
}

/// Ends the replay however `replay_into` returns.
struct ReplayGuard<'a>(&'a AtomicU8);

impl Drop for ReplayGuard<'_> {
    fn drop(&mut self) {
        // Release: after `published`'s last store, so a writer that reads
        // REPLAYED (Acquire) then reads the final count.
        self.0.store(REPLAYED, Ordering::Release);
    }
}

impl Journal {
    /// Publishes the journal's events from `from` to its end into
    /// `producer`, a bus that has published nothing yet, in order; they get
    /// bus sequences `0..events`. Into the bus whose journal stage is this
    /// journal's [`writer`](Journal::writer), the stage recognises them and
    /// does not append them again, and live events published afterwards
    /// continue the journal's numbering from
    /// [`next_sequence`](Journal::next_sequence). Into any other bus (a
    /// projection, a read model) they are plain events.
    ///
    /// Publish nothing on any handle of the bus until it returns: an event
    /// of another handle in between is refused (the bus halts with
    /// [`JournalError::ReplayInterleaved`]) rather than journaled wrongly.
    ///
    /// # Errors
    /// [`JournalError::ReplayAfterLive`] when the bus already published (or
    /// a replay ran); [`JournalError::ReplayInterleaved`]; the reading
    /// errors of [`records`](Journal::records), [`JournalError::Decode`], or
    /// [`JournalError::Publish`] when the bus halted. Events before the
    /// error were published.
    pub fn replay_into<E, P, C>(
        &self,
        producer: &mut P,
        mut codec: C,
        from: Sequence,
    ) -> Result<Replayed, JournalError>
    where
        P: Publisher<E>,
        C: Codec<E>,
    {
        let mut records = self.records(from)?;
        let published = producer.cursor() + 1;
        let replay = &self.inner.replay;
        let own_bus = self.inner.bound_bus.load(Ordering::Relaxed) == producer.bus_id();
        if published != 0 {
            return Err(JournalError::ReplayAfterLive {
                published: published as u64,
            });
        }
        // AcqRel: against the writer's IDLE -> LIVE; whichever moves first
        // decides whether these events are replayed or refused.
        let _guard = if own_bus {
            if replay
                .state
                .compare_exchange(IDLE, REPLAYING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return Err(JournalError::ReplayAfterLive { published: 0 });
            }
            Some(ReplayGuard(&replay.state))
        } else {
            None
        };
        let chunk = producer.capacity().min(256);
        let mut batch: Vec<E> = Vec::with_capacity(chunk);
        let mut replayed = Replayed {
            events: 0,
            first: from,
            last: from - 1,
        };
        let mut exhausted = false;
        while !exhausted {
            let mut failure = None;
            while batch.len() < chunk {
                match records.next() {
                    Some(Ok(record)) => {
                        match crate::codec::decode_catching(&mut codec, &record.payload) {
                            Ok(event) => batch.push(event),
                            Err(source) => {
                                failure = Some(JournalError::Decode {
                                    sequence: record.sequence,
                                    source,
                                });
                                break;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        failure = Some(e);
                        break;
                    }
                    None => {
                        exhausted = true;
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                let n = batch.len();
                let last = if own_bus {
                    self.publish_replayed(producer, &mut batch, replayed.events)?
                } else {
                    producer
                        .batch_publish(n, |slots| {
                            for (slot, event) in slots.zip(batch.drain(..)) {
                                *slot = event;
                            }
                        })
                        .map_err(JournalError::Publish)?
                };
                let expected = replayed.events as Sequence + n as Sequence - 1;
                if last != expected {
                    // Another handle published in between. Release: the
                    // writer, waiting on these events, reads it (Acquire)
                    // and refuses them.
                    replay.interleaved.store(true, Ordering::Release);
                    producer.halt();
                    return Err(JournalError::ReplayInterleaved {
                        expected,
                        got: last,
                    });
                }
                replayed.events += n as u64;
                replayed.last += n as Sequence;
                if own_bus {
                    // Release: the writer reads the count (Acquire) before
                    // it takes an event below it for a replayed one.
                    replay
                        .published
                        .store(replayed.events as Sequence, Ordering::Release);
                }
            }
            if let Some(failure) = failure {
                return Err(failure);
            }
        }
        Ok(replayed)
    }

    /// Publishes `batch` into the journal stage's own bus. Never waits in a
    /// claim: when the ring is full, the journal stage may itself be
    /// waiting, on an event another handle published after the replay's
    /// last, to learn whether it is a replayed one; so a full ring with a
    /// claim past `done` events (not ours) is the interleaving, reported,
    /// and otherwise the replay retries.
    fn publish_replayed<E, P: Publisher<E>>(
        &self,
        producer: &mut P,
        batch: &mut Vec<E>,
        done: u64,
    ) -> Result<Sequence, JournalError> {
        let n = batch.len();
        let mut tries = 0u32;
        loop {
            let published = producer.try_batch_publish(n, |slots| {
                for (slot, event) in slots.zip(batch.drain(..)) {
                    *slot = event;
                }
            });
            match published {
                Ok(last) => return Ok(last),
                Err(TryPublishError::Full { .. }) => {
                    let claimed = producer.cursor();
                    if claimed + 1 != done as Sequence {
                        // Release: the journal stage, waiting on that
                        // event, reads it (Acquire) and refuses it.
                        self.inner.replay.interleaved.store(true, Ordering::Release);
                        producer.halt();
                        return Err(JournalError::ReplayInterleaved {
                            expected: done as Sequence,
                            got: claimed,
                        });
                    }
                    tries += 1;
                    if tries < 100 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
                Err(TryPublishError::Closed) => {
                    return Err(JournalError::Publish(PublishError::Closed))
                }
                Err(_) => return Err(JournalError::Publish(PublishError::Halted)),
            }
        }
    }
}
