//! Metrics: a snapshot of where the producers and every stage are.
//!
//! Taking a snapshot reads the cursors the bus already keeps (Relaxed loads,
//! a racy but consistent-enough picture); nothing is added to the per-event
//! path. A [`Metrics`] handle is cheap to clone and usable from any thread.

use std::fmt;

use crate::barrier::StageCell;
use crate::loom::Arc;
use crate::sequence::Sequence;

/// One stage in a [`MetricsSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct StageMetrics {
    /// The stage's thread name.
    pub name: String,
    /// The last sequence the stage finished (-1 before the first).
    pub sequence: Sequence,
    /// Events published but not yet finished by this stage (on a
    /// multi-producer bus, claimed: a publish still writing, or waiting
    /// for room, counts).
    pub lag: u64,
    /// Events the stage moved past; for a work-pool worker, its own share
    /// (as in its [`StageReport`](crate::StageReport)).
    pub processed: u64,
}

/// One runtime subscriber (an [`EventPoller`](crate::EventPoller) or a
/// [`Subscription`](crate::Subscription)) in a [`MetricsSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct SubscriberMetrics {
    /// The last sequence it finished; before it read anything, the one
    /// before its join point (what it sees starts there: -1 only if it
    /// joined before the first publish).
    pub sequence: Sequence,
    /// Events published (claimed, on a multi-producer bus) but not yet
    /// finished by it: one at the capacity is what holds the producers.
    pub lag: u64,
}

/// Where a bus is, at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Ring capacity.
    pub capacity: usize,
    /// The highest sequence claimed by the producers (-1 before the first).
    pub cursor: Sequence,
    /// Slots producers could claim without waiting.
    pub remaining_capacity: usize,
    /// Every stage, in the order they were added.
    pub stages: Vec<StageMetrics>,
    /// Every runtime subscriber gating the producers now, in the order they
    /// joined (each gates the producers like a leaf stage).
    pub subscribers: Vec<SubscriberMetrics>,
}

/// What a snapshot reads; implemented for the bus (`bus.rs`).
pub(crate) trait Source: Send + Sync {
    fn capacity(&self) -> usize;
    fn cursor(&self) -> Sequence;
    fn min_gating(&self, default: Sequence) -> Sequence;
    fn stages(&self) -> &[(String, Arc<StageCell>)];
    /// The sequences of the runtime subscribers (a lock on the gating set).
    fn subscribers(&self) -> Vec<Sequence>;
    fn clone_box(&self) -> Box<dyn Source>;
}

/// A handle that takes [`MetricsSnapshot`]s of one bus from any thread.
///
/// Taking a snapshot reads the cursors the bus already keeps (Relaxed loads:
/// each value is one the cursor really held, not necessarily all at the same
/// instant); nothing is added to the per-event path. Cheap to clone,
/// `Send + Sync`; it keeps the bus's memory alive but not its threads.
/// With feature `serde` a snapshot serializes (e.g. to JSON for a
/// dashboard).
///
/// ```
/// use ringbus::{Blocking, Sequence};
/// let mut producer = ringbus::single_producer(8, || 0u64, Blocking)
///     .thread_name("audit")
///     .handle_events_with(|_: &u64, _: Sequence, _: bool| {})
///     .build();
/// let metrics = producer.metrics();
/// producer.publish(|e| *e = 1).unwrap();
/// let snapshot = metrics.snapshot();
/// assert_eq!((snapshot.capacity, snapshot.cursor), (8, 0));
/// assert_eq!(snapshot.stages[0].name, "audit");
/// assert!(snapshot.stages[0].lag <= 1);
/// ```
pub struct Metrics {
    source: Box<dyn Source>,
}

impl Clone for Metrics {
    fn clone(&self) -> Self {
        Self {
            source: self.source.clone_box(),
        }
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub(crate) fn new(source: Box<dyn Source>) -> Self {
        Self { source }
    }

    /// Reads every cursor once (Relaxed: a monitoring view; each value is
    /// one the cursor really held, not necessarily at the same instant),
    /// and the list of runtime subscribers under the gating lock.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let source = &*self.source;
        let cursor = source.cursor();
        let stages = source
            .stages()
            .iter()
            .map(|(name, cell)| {
                let sequence = cell.sequence.get_relaxed();
                StageMetrics {
                    name: name.clone(),
                    sequence,
                    lag: (cursor - sequence).max(0) as u64,
                    processed: cell.processed(),
                }
            })
            .collect();
        let subscribers = source
            .subscribers()
            .into_iter()
            .map(|sequence| SubscriberMetrics {
                sequence,
                lag: (cursor - sequence).max(0) as u64,
            })
            .collect();
        let capacity = source.capacity();
        let min = source.min_gating(cursor);
        let used = (cursor - min).clamp(0, capacity as i64) as usize;
        MetricsSnapshot {
            capacity,
            cursor,
            remaining_capacity: capacity - used,
            stages,
            subscribers,
        }
    }
}
