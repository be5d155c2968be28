//! What a stage does when its handler fails: an `Err` from a fallible handler
//! ([`TryEventHandler`](crate::TryEventHandler)) or a panic.
//!
//! Each stage has a [`FailurePolicy`], set with
//! [`Builder::on_failure`](crate::Builder::on_failure) before the handler is
//! added: retry the event a bounded number of times with exponential backoff,
//! then dead-letter it, skip it, or halt. **The default is to halt**: the
//! failed stage stops (and so do the stages after it), producers get
//! `Err(Halted)` instead of waiting, and the stages that do not depend on the
//! failed one drain what was already published. Nothing hangs.
//!
//! A failed stage stops gating the producers. So a multi-producer publish
//! that had already claimed its slot when the failure refused the producers
//! is completed (and acknowledged with `Ok`) once the healthy stages free
//! the slot: no healthy stage is ever left waiting at a claim that will not
//! be published. Only `halt()` can leave such a claim, and a halted bus
//! stops every stage anyway.
//!
//! A panic is caught and routed by the same policy. With the default policy
//! the catch is around the stage's whole loop (free while nothing panics);
//! with any other policy it is around each call of the handler, and the
//! handler is called again after a panic only because the policy says so
//! (retry, skip or dead-letter).

use std::fmt;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::report::StageReport;
use crate::sequence::Sequence;

/// The error type a fallible handler's error is kept as.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why handling an event failed.
///
/// An error returned by a [`TryEventHandler`](crate::TryEventHandler) is kept
/// with its type (shared, so a failure can be cloned into dead letters and
/// reports): [`Failure::error`] and [`source`](std::error::Error::source)
/// give it back, and [`Failure::downcast_ref`] recovers the concrete type.
///
/// Two failures compare equal when they are the same kind with the same
/// message (`Display`), so tests can compare reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Failure {
    /// The handler returned this error.
    Error(Arc<dyn std::error::Error + Send + Sync + 'static>),
    /// The handler panicked with this message.
    Panic(String),
}

impl Failure {
    /// A failure from a handler's error value (anything that converts into a
    /// boxed error: an error type, a `String`, a `&str`).
    pub fn from_error(error: impl Into<BoxError>) -> Self {
        Self::Error(Arc::from(error.into()))
    }

    /// The handler's error, if the handler returned one (not for a panic).
    pub fn error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Self::Error(e) => Some(&**e),
            Self::Panic(_) => None,
        }
    }

    /// The handler's error as its concrete type `T`, if it is one.
    ///
    /// ```
    /// use ringbus::Failure;
    /// let failure = Failure::from_error(std::io::Error::other("disk full"));
    /// let io = failure.downcast_ref::<std::io::Error>().unwrap();
    /// assert_eq!(io.to_string(), "disk full");
    /// assert!(Failure::Panic("boom".into()).downcast_ref::<std::io::Error>().is_none());
    /// ```
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.error()?.downcast_ref::<T>()
    }

    /// True for a panic (caught and routed by the stage's policy).
    pub fn is_panic(&self) -> bool {
        matches!(self, Self::Panic(_))
    }
}

impl PartialEq for Failure {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Error(a), Self::Error(b)) => Arc::ptr_eq(a, b) || a.to_string() == b.to_string(),
            (Self::Panic(a), Self::Panic(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Failure {}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Error(e) => write!(f, "handler error: {e}"),
            Failure::Panic(m) => write!(f, "handler panicked: {m}"),
        }
    }
}

impl std::error::Error for Failure {
    /// The handler's own error (none for a panic).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Error(e) => Some(&**e as &(dyn std::error::Error + 'static)),
            Self::Panic(_) => None,
        }
    }
}

/// A failed event handed to a dead-letter channel
/// ([`FailurePolicy::dead_letter_to`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetter<E> {
    /// The stage that failed.
    pub stage: String,
    /// The event's sequence.
    pub sequence: Sequence,
    /// Why it failed (the last attempt's failure).
    pub failure: Failure,
    /// A copy of the event as the stage saw it.
    pub event: E,
}

type Sink<E> = Arc<dyn Fn(&str, &E, Sequence, &Failure) + Send + Sync>;

/// What happens once retries are used up.
pub(crate) enum Finally<E> {
    Halt,
    Skip,
    DeadLetter(Sink<E>),
}

impl<E> Clone for Finally<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Halt => Self::Halt,
            Self::Skip => Self::Skip,
            Self::DeadLetter(sink) => Self::DeadLetter(Arc::clone(sink)),
        }
    }
}

/// How a stage handles a failed event (an `Err` from a fallible handler, or a
/// panic).
///
/// Retry the event a bounded number of times with exponential backoff, then
/// dead-letter it, skip it, or halt. **The default is to halt**: the failed
/// stage stops (and so do the stages after it, once they have handled what it
/// finished), producers get `Err(Halted)` instead of waiting, and the stages
/// that do not depend on the failed one drain what was published. Nothing
/// hangs.
///
/// Set it with [`Builder::on_failure`](crate::Builder::on_failure) before the
/// handler it applies to. A failed stage stops gating the producers: a
/// multi-producer publish that had already claimed its slot when the failure
/// refused the producers is completed (and acknowledged with `Ok`) once the
/// healthy stages free the slot, so no healthy stage ever waits at a claim
/// that will not be published.
///
/// A panic is caught and routed by the same policy. With the default policy
/// the catch is around the stage's whole loop (free while nothing panics);
/// with any other policy it is around each call of the handler, and the
/// handler is called again after a panic only because the policy says so.
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use ringbus::{Blocking, FailurePolicy, Sequence};
///
/// let (dead_letters, failed) = mpsc::channel();
/// let mut producer = ringbus::single_producer(64, || 0u64, Blocking)
///     .on_failure(
///         FailurePolicy::dead_letter_to(dead_letters).retry(2, Duration::from_millis(1)),
///     )
///     .thread_name("crm")
///     .try_handle_events_with(|id: &u64, _: Sequence, _: bool| {
///         if *id == 7 { Err(format!("CRM refused user {id}")) } else { Ok(()) }
///     })
///     .build();
/// for id in 0..10 {
///     producer.publish(|e| *e = id).unwrap();
/// }
/// let report = producer.shutdown().unwrap();
/// let letter = failed.recv().unwrap();
/// assert_eq!((letter.stage.as_str(), letter.event), ("crm", 7));
/// assert_eq!(letter.failure.to_string(), "handler error: CRM refused user 7");
/// assert_eq!((report.stages[0].retried, report.stages[0].dead_lettered), (2, 1));
/// ```
pub struct FailurePolicy<E> {
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) finally: Finally<E>,
}

impl<E> Clone for FailurePolicy<E> {
    fn clone(&self) -> Self {
        Self {
            retries: self.retries,
            backoff: self.backoff,
            finally: self.finally.clone(),
        }
    }
}

impl<E> fmt::Debug for FailurePolicy<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let finally = match self.finally {
            Finally::Halt => "halt",
            Finally::Skip => "skip",
            Finally::DeadLetter(_) => "dead-letter",
        };
        f.debug_struct("FailurePolicy")
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("then", &finally)
            .finish()
    }
}

impl<E> Default for FailurePolicy<E> {
    /// [`FailurePolicy::halt`].
    fn default() -> Self {
        Self::halt()
    }
}

impl<E> FailurePolicy<E> {
    fn with(finally: Finally<E>) -> Self {
        Self {
            retries: 0,
            backoff: Duration::ZERO,
            finally,
        }
    }

    /// Stop the stage and the stages after it; producers get `Err(Halted)`;
    /// independent stages drain what was published. The default.
    pub fn halt() -> Self {
        Self::with(Finally::Halt)
    }

    /// Count the event as failed and go on with the next one.
    pub fn skip() -> Self {
        Self::with(Finally::Skip)
    }

    /// Give the event to `sink` (stage name, event, sequence, failure), then
    /// go on. The sink runs on the stage thread; keep it short.
    pub fn dead_letter(
        sink: impl Fn(&str, &E, Sequence, &Failure) + Send + Sync + 'static,
    ) -> Self {
        Self::with(Finally::DeadLetter(Arc::new(sink)))
    }

    /// Send a [`DeadLetter`] with a clone of the event to `channel`, then go
    /// on. If the receiver is gone the letter is dropped (and still counted).
    pub fn dead_letter_to(channel: mpsc::Sender<DeadLetter<E>>) -> Self
    where
        E: Clone + Send + 'static,
    {
        let channel = std::sync::Mutex::new(channel);
        Self::dead_letter(move |stage, event: &E, sequence, failure| {
            let letter = DeadLetter {
                stage: stage.to_owned(),
                sequence,
                failure: failure.clone(),
                event: event.clone(),
            };
            if let Ok(channel) = channel.lock() {
                let _ = channel.send(letter);
            }
        })
    }

    /// First retry a failed event up to `times` more times, waiting `backoff`,
    /// then twice that, and so on (capped at 1 s) between attempts; only then
    /// apply this policy. A halt (of the bus, or of an `ipc` stage) ends the
    /// retries at once: the policy then decides the event's fate as if they
    /// were used up (skipped, dead-lettered, or the stage stops at it), so a
    /// halt never waits out a long backoff.
    pub fn retry(mut self, times: u32, backoff: Duration) -> Self {
        self.retries = times;
        self.backoff = backoff;
        self
    }

    /// The wait before retry number `attempt` (1-based).
    pub(crate) fn backoff_for(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.backoff
            .saturating_mul(factor)
            .min(Duration::from_secs(1))
    }

    /// After a failed attempt: true (once the backoff has passed) when the
    /// policy retries the event, counting the retry; never once `halted()`
    /// (asked only while retries are left), which the backoff looks at
    /// every few milliseconds: a halt ends it, and the event is not tried
    /// again.
    pub(crate) fn retry_after(
        &self,
        attempt: &mut u32,
        halted: impl Fn() -> bool,
        report: &mut StageReport,
    ) -> bool {
        if *attempt >= self.retries || halted() {
            return false;
        }
        let backoff = self.backoff_for(*attempt + 1);
        if cfg!(loom) {
            crate::loom::sleep(backoff);
        } else {
            let until = std::time::Instant::now() + backoff;
            loop {
                let left = until.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() || halted() {
                    break;
                }
                crate::loom::sleep(left.min(Duration::from_millis(5)));
            }
        }
        if halted() {
            return false;
        }
        *attempt += 1;
        report.retried += 1;
        true
    }

    /// Retries used up: the policy's last word on the event at `sequence`
    /// of stage `stage`. `Ok` when the stage moves past it (skipped or
    /// dead-lettered), `Err` when it must stop. `read` hands the event to
    /// the closure it is given (only a dead-letter sink needs it).
    pub(crate) fn give_up(
        &self,
        stage: &str,
        sequence: Sequence,
        failure: Failure,
        report: &mut StageReport,
        read: impl FnOnce(&mut dyn FnMut(&E)),
    ) -> Result<(), Failure> {
        match &self.finally {
            Finally::Halt => {
                report.failed += 1;
                Err(failure)
            }
            Finally::Skip => {
                report.failed += 1;
                report.skipped += 1;
                Ok(())
            }
            Finally::DeadLetter(sink) => {
                report.failed += 1;
                // A sink that panics stops the stage with its panic (the
                // event counted failed, not dead-lettered).
                let send = std::panic::AssertUnwindSafe(|| {
                    read(&mut |e| sink(stage, e, sequence, &failure))
                });
                if let Err(payload) = std::panic::catch_unwind(send) {
                    report.panics += 1;
                    return Err(Failure::Panic(crate::report::panic_message(&*payload)));
                }
                report.dead_lettered += 1;
                Ok(())
            }
        }
    }

    /// True when the stage needs the per-event path (anything but a plain halt).
    pub(crate) fn needs_per_event_handling(&self) -> bool {
        self.retries > 0 || !matches!(self.finally, Finally::Halt)
    }
}
