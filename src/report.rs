//! What stages report when the bus shuts down.

use std::any::Any;
use std::fmt;

use crate::fault::Failure;

/// What a stage did, as returned by `shutdown()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageReport {
    /// The stage's name (`thread_name`; a thread shared by several stages
    /// is named after the first).
    pub name: String,
    /// Events the stage moved past: handled, skipped or dead-lettered.
    pub processed: u64,
    /// Events its handler handled successfully.
    pub handled: u64,
    /// Events whose handling failed after every retry (skipped,
    /// dead-lettered, or the one that stopped the stage).
    pub failed: u64,
    /// Retry attempts.
    pub retried: u64,
    /// Failed events handed to the dead-letter sink.
    pub dead_lettered: u64,
    /// Failed events skipped.
    pub skipped: u64,
    /// Panics caught (every attempt counts).
    pub panics: u64,
    /// Why the stage stopped early, if it did.
    pub failure: Option<Failure>,
    /// True when the stage stopped because a stage it depends on failed.
    pub upstream_failed: bool,
    /// True when a timed-out shutdown left the stage still running (stuck
    /// in its handler): `processed` is what it had released by then (a
    /// long batch is released in chunks of about a millisecond), the other
    /// counts are unknown, and its thread finishes on its own once the
    /// handler returns.
    pub still_running: bool,
}

impl StageReport {
    pub(crate) fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    pub(crate) fn still_running(name: &str, processed: u64) -> Self {
        Self {
            still_running: true,
            processed,
            ..Self::named(name)
        }
    }

    pub(crate) fn lost(name: &str) -> Self {
        Self {
            failure: Some(Failure::Panic(String::from(
                "the stage thread could not be joined",
            ))),
            ..Self::named(name)
        }
    }
}

/// A stage thread's result: its report and, for handlers added with a value
/// (`Send`), the handler itself.
pub(crate) type StageOutcome = (StageReport, Option<Box<dyn Any + Send>>);

/// What every stage did, in the order the stages were added.
#[derive(Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// One entry per stage.
    pub stages: Vec<StageReport>,
    /// The handlers given by value, returned after their last event.
    states: Vec<Option<Box<dyn Any + Send>>>,
}

impl std::fmt::Debug for ShutdownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownReport")
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

impl ShutdownReport {
    pub(crate) fn new(stages: Vec<StageReport>, states: Vec<Option<Box<dyn Any + Send>>>) -> Self {
        Self { stages, states }
    }

    /// Takes back the handler of stage `index` (in the order stages were
    /// added), with its final state: for handlers added by value (not
    /// through a [`factory`](crate::factory)) with `handle_events_with` or
    /// `try_handle_events_with` that ended without a panic (and the journal
    /// stage's writer). `None` for other stages, a wrong type `H`,
    /// or a second call.
    pub fn take_handler<H: 'static>(&mut self, index: usize) -> Option<H> {
        let state = self.states.get_mut(index)?.take()?;
        match state.downcast::<H>() {
            Ok(handler) => Some(*handler),
            Err(state) => {
                self.states[index] = Some(state);
                None
            }
        }
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("<non-string panic payload>")
    }
}

/// A shutdown did not complete cleanly.
#[derive(Debug)]
#[non_exhaustive]
pub enum ShutdownError {
    /// The stages did not drain within the timeout; the bus was halted. The
    /// threads that stopped were joined and the report counts what they
    /// processed; a stage stuck in its handler is reported `still_running`
    /// and its thread finishes on its own once the handler returns. A
    /// failure the halt brought about (a retry's backoff it cut, under a
    /// policy that halts) is in that stage's report, and the outcome stays
    /// `TimedOut`.
    TimedOut(ShutdownReport),
    /// A stage stopped after a failure (an error or a panic its policy did
    /// not absorb), before any timeout's halt; the report says which stage
    /// and why.
    StageFailed(ShutdownReport),
    /// `shutdown` was called on one of the bus's own stage threads (from a
    /// handler, a subscription's included), which cannot wait for itself. The bus is closed: the stage
    /// threads drain and finish on their own after the handler returns, but
    /// nobody joins them. Shut a bus down from outside its handlers to get
    /// the report.
    OnStageThread,
}

impl fmt::Display for ShutdownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimedOut(report) => {
                f.write_str(
                    "the stages did not drain before the timeout; the bus was halted \
                     (give shutdown_timeout more time or find the slow stage in the report)",
                )?;
                for s in report.stages.iter().filter(|s| s.still_running) {
                    write!(f, "; stage `{}` is still inside its handler", s.name)?;
                }
                Ok(())
            }
            Self::OnStageThread => f.write_str(
                "shutdown was called from a handler of the same bus, which cannot wait \
                 for its own thread; the bus is closed and its stages finish on their \
                 own (shut down from outside the handlers to get the report)",
            ),
            Self::StageFailed(report) => {
                write!(f, "a stage failed and stopped")?;
                for s in &report.stages {
                    if let Some(failure) = &s.failure {
                        write!(f, "; stage `{}`: {failure}", s.name)?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ShutdownError {}
