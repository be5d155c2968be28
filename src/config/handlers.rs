//! The handlers a description refers to, registered by name ([`Handlers`]),
//! and the wrappers that run them as stages.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::fault::{BoxError, Failure};
use crate::handler::{forward_lifecycle, EventHandler, EventHandlerMut, TryEventHandler};
use crate::sequence::Sequence;

type Sink<E> = Arc<dyn Fn(&str, &E, Sequence, &Failure) + Send + Sync>;
type MakeWorker<E> = Arc<dyn Fn(usize) -> Box<dyn EventHandler<E>> + Send + Sync>;

pub(super) enum Entry<E> {
    Read(Box<dyn EventHandler<E> + Send>),
    Mutate(Box<dyn EventHandlerMut<E> + Send>),
    Try(Box<dyn TryEventHandler<E, Error = BoxError> + Send>),
    Pool(MakeWorker<E>),
}

/// The handlers a [`BusConfig`](super::BusConfig) refers to, by name.
///
/// Each handler serves one stage (it is moved into it); a pool's factory
/// makes one handler per worker; a dead-letter sink may serve many stages.
#[must_use = "handlers do nothing until passed to `BusConfig::build`"]
pub struct Handlers<E> {
    pub(super) entries: HashMap<String, Entry<E>>,
    pub(super) sinks: HashMap<String, Sink<E>>,
    pub(super) registered_twice: Option<String>,
}

impl<E> fmt::Debug for Handlers<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.entries.keys().collect();
        names.sort();
        f.debug_struct("Handlers")
            .field("handlers", &names)
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl<E: 'static> Default for Handlers<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: 'static> Handlers<E> {
    /// No handlers yet.
    pub fn new() -> Self {
        Self {
            entries: HashMap::new(),
            sinks: HashMap::new(),
            registered_twice: None,
        }
    }

    fn insert(mut self, name: String, entry: Entry<E>) -> Self {
        if self.entries.insert(name.clone(), entry).is_some() {
            self.registered_twice.get_or_insert(name);
        }
        self
    }

    /// A reading stage's handler (see
    /// [`Builder::handle_events_with`](crate::Builder::handle_events_with)).
    pub fn handler(
        self,
        name: impl Into<String>,
        handler: impl EventHandler<E> + Send + 'static,
    ) -> Self {
        self.insert(name.into(), Entry::Read(Box::new(handler)))
    }

    /// A mutating stage's handler (see [`EventHandlerMut`]).
    pub fn mutating(
        self,
        name: impl Into<String>,
        handler: impl EventHandlerMut<E> + Send + 'static,
    ) -> Self {
        self.insert(name.into(), Entry::Mutate(Box::new(handler)))
    }

    /// A fallible stage's handler (see [`TryEventHandler`]).
    pub fn fallible<H>(self, name: impl Into<String>, handler: H) -> Self
    where
        H: TryEventHandler<E> + Send + 'static,
    {
        self.insert(name.into(), Entry::Try(Box::new(Erased(handler))))
    }

    /// A work pool's handler factory, called with each worker's index on the
    /// worker's thread (see
    /// [`Builder::handle_events_with_pool`](crate::Builder::handle_events_with_pool));
    /// the stage gives the number of `workers`.
    pub fn pool<H, F>(self, name: impl Into<String>, make: F) -> Self
    where
        H: EventHandler<E> + 'static,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let make: MakeWorker<E> = Arc::new(move |w| Box::new(make(w)));
        self.insert(name.into(), Entry::Pool(make))
    }

    /// A dead-letter sink that `then = { dead-letter = "name" }` refers to;
    /// see [`FailurePolicy::dead_letter`](crate::FailurePolicy::dead_letter).
    pub fn dead_letter_sink(
        mut self,
        name: impl Into<String>,
        sink: impl Fn(&str, &E, Sequence, &Failure) + Send + Sync + 'static,
    ) -> Self {
        let name = name.into();
        if self.sinks.insert(name.clone(), Arc::new(sink)).is_some() {
            self.registered_twice.get_or_insert(name);
        }
        self
    }
}

/// A registered reading handler.
pub(super) struct Dyn<E>(pub(super) Box<dyn EventHandler<E> + Send>);
impl<E> EventHandler<E> for Dyn<E> {
    #[inline]
    fn on_event(&mut self, event: &E, sequence: Sequence, end_of_batch: bool) {
        self.0.on_event(event, sequence, end_of_batch)
    }
    forward_lifecycle!();
}

/// A pool worker's handler, made on its own thread.
pub(super) struct Local<E>(pub(super) Box<dyn EventHandler<E>>);
impl<E> EventHandler<E> for Local<E> {
    #[inline]
    fn on_event(&mut self, event: &E, sequence: Sequence, end_of_batch: bool) {
        self.0.on_event(event, sequence, end_of_batch)
    }
    forward_lifecycle!();
}

/// A registered mutating handler.
pub(super) struct DynMut<E>(pub(super) Box<dyn EventHandlerMut<E> + Send>);
impl<E> EventHandlerMut<E> for DynMut<E> {
    #[inline]
    fn on_event(&mut self, event: &mut E, sequence: Sequence, end_of_batch: bool) {
        self.0.on_event(event, sequence, end_of_batch)
    }
    forward_lifecycle!();
}

/// A registered fallible handler, its error boxed.
pub(super) struct DynTry<E>(pub(super) Box<dyn TryEventHandler<E, Error = BoxError> + Send>);
impl<E> TryEventHandler<E> for DynTry<E> {
    type Error = BoxError;
    #[inline]
    fn on_event(
        &mut self,
        event: &E,
        sequence: Sequence,
        end_of_batch: bool,
    ) -> Result<(), BoxError> {
        self.0.on_event(event, sequence, end_of_batch)
    }
    forward_lifecycle!();
}

/// A fallible handler whose error type is erased into [`BoxError`].
struct Erased<H>(H);
impl<E, H: TryEventHandler<E>> TryEventHandler<E> for Erased<H> {
    type Error = BoxError;
    #[inline]
    fn on_event(
        &mut self,
        event: &E,
        sequence: Sequence,
        end_of_batch: bool,
    ) -> Result<(), BoxError> {
        self.0
            .on_event(event, sequence, end_of_batch)
            .map_err(Into::into)
    }
    forward_lifecycle!();
}
