//! The metrics view of a bus.

use super::Bus;
use crate::barrier::StageCell;
use crate::loom::{self, Arc};
use crate::metrics::{Metrics, Source};
use crate::sequence::Sequence;
use crate::sequencer::Sequencer;
use crate::wait_strategy::WaitStrategy;

/// The metrics view of a bus.
struct BusSource<E, S, W>(Arc<Bus<E, S, W>>);

impl<E, S, W> Source for BusSource<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    fn capacity(&self) -> usize {
        self.0.ring.capacity()
    }

    fn cursor(&self) -> Sequence {
        // After a close, refused claims inflate the claim counter: the final
        // sequence is the true end.
        self.0
            .closed_at()
            .unwrap_or_else(|| self.0.sequencer.claimed())
    }

    fn min_gating(&self, default: Sequence) -> Sequence {
        self.0.min_gating(default)
    }

    fn stages(&self) -> &[(String, Arc<StageCell>)] {
        &self.0.stages
    }

    fn subscribers(&self) -> Vec<Sequence> {
        let stages = &self.0.stages;
        loom::lock(&self.0.gating)
            .iter()
            .filter(|cell| !stages.iter().any(|(_, s)| Arc::ptr_eq(s, cell)))
            .map(|cell| cell.sequence.get_relaxed())
            .collect()
    }

    fn clone_box(&self) -> Box<dyn Source> {
        Box::new(BusSource(Arc::clone(&self.0)))
    }
}

/// A metrics handle on `bus`.
pub(crate) fn metrics<E, S, W>(bus: &Arc<Bus<E, S, W>>) -> Metrics
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    Metrics::new(Box::new(BusSource(Arc::clone(bus))))
}
