//! The checks `build` makes of a builder's graph before it starts anything.

use super::Builder;
use crate::affinity;
use crate::error::BuildError;
use crate::sequencer::Sequencer;
use crate::wait_strategy::WaitStrategy;

impl<E, S, W> Builder<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    pub(super) fn validate_capacity(&self) -> Result<(), BuildError> {
        // Above the largest ring, or more bytes than an allocation may
        // have: an error rather than a panic or an abort in the allocator.
        let too_large = self.capacity > crate::error::MAX_CAPACITY
            || self
                .capacity
                .checked_mul(std::mem::size_of::<E>())
                .map_or(true, |bytes| bytes > isize::MAX as usize);
        if self.capacity == 0 || !self.capacity.is_power_of_two() || too_large {
            return Err(BuildError::Capacity {
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<(), BuildError> {
        if let Some(bad) = self.stages.iter().find(|s| s.name.contains('\0')) {
            return Err(BuildError::BadName {
                name: bad.name.clone(),
            });
        }
        let mut names = std::collections::HashSet::with_capacity(self.stages.len());
        if let Some(dup) = self.stages.iter().find(|s| !names.insert(s.name.as_str())) {
            return Err(BuildError::DuplicateName {
                name: dup.name.clone(),
            });
        }
        // Read once per process before any stage thread of ours pins itself
        // (pinning and the spinning strategies' count of cores use it).
        let available = affinity::available_cores();
        // The spinning strategies' count of usable cores, cached now, so a
        // first long spin later never allocates (tests/no_alloc.rs saw 4
        // allocations under ThreadSanitizer's slowdown).
        crate::wait_strategy::warm_core_count();
        if self.stages.iter().any(|s| s.core.is_some()) {
            if let Some(requested) = self
                .stages
                .iter()
                .filter_map(|s| s.core)
                .find(|c| !available.contains(c))
            {
                return Err(BuildError::NoSuchCore {
                    requested,
                    available: available.to_vec(),
                });
            }
        }
        self.check_shared_threads()?;
        self.check_mutation()
    }

    /// Stages sharing a thread: no pool worker among them, one core.
    fn check_shared_threads(&self) -> Result<(), BuildError> {
        for spec in &self.stages {
            let Some(leader) = spec.thread else {
                continue;
            };
            let first = &self.stages[leader];
            if let Some(worker) = [spec, first].into_iter().find(|s| s.work.is_some()) {
                return Err(BuildError::PoolOnSharedThread {
                    stage: worker.name.clone(),
                });
            }
            // The thread is pinned at the first core one of its stages asks for.
            let thread_core = self
                .stages
                .iter()
                .enumerate()
                .filter(|(i, s)| *i == leader || s.thread == Some(leader))
                .find_map(|(_, s)| s.core.map(|c| (s, c)));
            if let (Some(core), Some((pinned, thread_core))) = (spec.core, thread_core) {
                if core != thread_core {
                    return Err(BuildError::SharedThreadCores {
                        stage: spec.name.clone(),
                        core,
                        thread: pinned.name.clone(),
                        thread_core,
                    });
                }
            }
        }
        Ok(())
    }

    /// A mutating stage must be an ancestor or a descendant of every other.
    fn check_mutation(&self) -> Result<(), BuildError> {
        if !self.stages.iter().any(|s| s.mutating) {
            return Ok(());
        }
        let n = self.stages.len();
        // ancestors[i][j]: stage j finishes with an event before stage i reads it.
        let mut ancestors = vec![vec![false; n]; n];
        for i in 0..n {
            // Dependencies always point at earlier stages, so `d < i` and
            // ancestors[d] is complete by now.
            for &d in &self.stages[i].deps {
                let (done, rest) = ancestors.split_at_mut(i);
                let mine = &mut rest[0];
                mine[d] = true;
                for (a, &inherited) in mine.iter_mut().zip(&done[d]) {
                    *a |= inherited;
                }
            }
        }
        for (m, stage) in self.stages.iter().enumerate().filter(|(_, s)| s.mutating) {
            if let Some(other) = (0..n).find(|&o| o != m && !ancestors[m][o] && !ancestors[o][m]) {
                return Err(BuildError::ConcurrentMutation {
                    mutating: stage.name.clone(),
                    concurrent: self.stages[other].name.clone(),
                });
            }
        }
        Ok(())
    }
}
