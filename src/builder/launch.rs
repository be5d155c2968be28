//! Building: the ring, the bus and its stage threads, started by `build`.

use super::Builder;
use crate::affinity;
use crate::barrier::{SequenceBarrier, StageCell};
use crate::bus::Bus;
use crate::error::BuildError;
use crate::loom::{thread, Arc};
use crate::processor::{run_thread, StageContext, StageTask};
use crate::producer::{MultiProducer, SingleProducer};
use crate::ring_buffer::RingBuffer;
use crate::sequencer::{MultiProducerSequencer, Scan, Sequencer, SingleProducerSequencer};
use crate::wait_strategy::WaitStrategy;

impl<E, S, W> Builder<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    /// Checks the graph, builds the ring and starts every stage thread.
    fn assemble(mut self) -> Result<Arc<Bus<E, S, W>>, BuildError> {
        // The capacity first: it was given first, to the constructor.
        self.validate_capacity()?;
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        if let Some(modifier) = self.pending.first_set() {
            return Err(BuildError::ModifierWithoutHandler { modifier });
        }
        self.validate()?;
        // Dependencies point at earlier stages, so each cell's upstream
        // cells exist when it is made.
        let mut cells: Vec<Arc<StageCell>> = Vec::with_capacity(self.stages.len());
        for spec in &self.stages {
            let upstream = spec.deps.iter().map(|&d| Arc::clone(&cells[d])).collect();
            cells.push(Arc::new(StageCell::stage(upstream, spec.work.is_some())));
        }
        let mut is_leaf = vec![true; self.stages.len()];
        for stage in &self.stages {
            for &d in &stage.deps {
                is_leaf[d] = false;
            }
        }
        let gating = cells
            .iter()
            .zip(&is_leaf)
            .filter(|(_, &leaf)| leaf)
            .map(|(s, _)| Arc::clone(s))
            .collect();
        let ring =
            RingBuffer::try_new(self.capacity, &mut self.factory).ok_or(BuildError::Capacity {
                capacity: self.capacity,
            })?;
        let named = self
            .stages
            .iter()
            .zip(&cells)
            .map(|(spec, cell)| (spec.name.clone(), Arc::clone(cell)))
            .collect();
        let has_mutating_stage = self.stages.iter().any(|s| s.mutating);
        let sequencer = S::try_new(self.capacity).ok_or(BuildError::Capacity {
            capacity: self.capacity,
        })?;
        let bus = Arc::new(Bus::new(
            self.id,
            ring,
            sequencer,
            self.strategy,
            gating,
            named,
            has_mutating_stage,
        ));
        // One thread per stage, except the stages that share the thread of
        // an earlier one (`on_thread_of`), in the order they were added.
        let mut threads: Vec<(String, Option<usize>, Vec<usize>, Vec<_>)> = Vec::new();
        let mut thread_of_stage = vec![0; self.stages.len()];
        for (index, (spec, cell)) in self.stages.into_iter().zip(&cells).enumerate() {
            let cx = StageContext {
                bus: Arc::clone(&bus),
                index,
                name: spec.name.clone(),
                cell: Arc::clone(cell),
                barrier: SequenceBarrier::new(
                    spec.deps.iter().map(|&d| Arc::clone(&cells[d])).collect(),
                ),
                timeout: spec.timeout,
                policy: spec.policy,
                work: spec.work,
                // Build-time stages start at the ring's start.
                scan: std::cell::Cell::new(Scan::after(cell.sequence.get_relaxed())),
                chunk: std::cell::Cell::new(crate::processor::FIRST_CHUNK),
                in_hook: std::cell::Cell::new(false),
            };
            let thread = match spec.thread {
                Some(leader) => thread_of_stage[leader],
                None => {
                    threads.push((spec.name, None, Vec::new(), Vec::new()));
                    threads.len() - 1
                }
            };
            thread_of_stage[index] = thread;
            let (_, core, stages, launches) = &mut threads[thread];
            *core = core.or(spec.core);
            stages.push(index);
            launches.push((spec.launch, cx));
        }
        // The building thread usually publishes: its parker is made now,
        // not at its first park in the steady state (as each stage
        // thread's is when it starts). Likewise the process's choice of
        // fences for the parking protocol, a syscall made once.
        crate::parking::prepare_thread_parker();
        crate::fence::prepare();
        for (name, core, stages, launches) in threads {
            let finished = Arc::clone(&bus);
            let exiting: Vec<_> = stages.iter().map(|&i| Arc::clone(&cells[i])).collect();
            let spawned = thread::Builder::new().name(name).spawn(move || {
                if let Some(core) = core {
                    // A refusal here is not fatal: the core exists (checked
                    // at build), the stage just runs unpinned.
                    let _ = affinity::pin_current_thread(core);
                }
                crate::parking::prepare_thread_parker();
                let tasks: Vec<Box<dyn StageTask>> = launches
                    .into_iter()
                    .map(|(launch, cx)| launch(cx))
                    .collect();
                run_thread(finished, exiting, tasks);
            });
            match spawned {
                Ok(handle) => bus.add_thread(handle, stages),
                Err(e) => {
                    bus.halt();
                    let _ = bus.join(None);
                    return Err(BuildError::Spawn(e));
                }
            }
        }
        Ok(bus)
    }
}

impl<E, W> Builder<E, SingleProducerSequencer, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    /// Starts the stages and returns the producer, or the first configuration
    /// error.
    ///
    /// ```
    /// use ringbus::{BuildError, Blocking};
    /// let err = ringbus::single_producer(1000, || 0u64, Blocking).try_build().unwrap_err();
    /// assert!(matches!(err, BuildError::Capacity { capacity: 1000 }));
    /// assert_eq!(err.to_string(), "ring capacity 1000 is not a power of two; use a power of two such as 1024");
    /// ```
    ///
    /// # Errors
    /// A [`BuildError`] naming the fix, the capacity checked first: a
    /// capacity that is not a power of two or too large, a core this
    /// process may not use, a stage of another bus in `after` or
    /// `on_thread_of`, a mutating stage that could run beside another, a
    /// modifier with no handler after it, an empty pool, a pool on a shared
    /// thread, stages of one thread pinned to different cores, nothing to
    /// share a thread with, a duplicate or bad stage name, or a thread the
    /// OS refused to start (every thread started is then stopped and
    /// joined).
    pub fn try_build(self) -> Result<SingleProducer<E, W>, BuildError> {
        self.assemble().map(SingleProducer::new)
    }

    /// Like [`try_build`](Builder::try_build).
    ///
    /// # Panics
    /// On a configuration error, with its message (which names the fix).
    pub fn build(self) -> SingleProducer<E, W> {
        self.try_build().unwrap_or_else(|e| panic!("ringbus: {e}"))
    }
}

impl<E, W> Builder<E, MultiProducerSequencer, W>
where
    E: Send + Sync + 'static,
    W: WaitStrategy,
{
    /// Starts the stages and returns the first producer handle (clone it for
    /// more), or the first configuration error.
    ///
    /// # Errors
    /// As for the single-producer [`try_build`](Builder::try_build).
    pub fn try_build(self) -> Result<MultiProducer<E, W>, BuildError> {
        self.assemble().map(MultiProducer::new)
    }

    /// Like [`try_build`](Builder::try_build).
    ///
    /// # Panics
    /// On a configuration error, with its message (which names the fix).
    pub fn build(self) -> MultiProducer<E, W> {
        self.try_build().unwrap_or_else(|e| panic!("ringbus: {e}"))
    }
}
