//! The builder's deprecated forwarding methods (hidden from the docs), each
//! now a form of `handle_events_with` or `try_handle_events_with`.

use super::Builder;
use crate::handler::{
    BatchEventHandler, EventHandler, EventHandlerMut, TryBatchEventHandler, TryEventHandler,
};
use crate::sequencer::Sequencer;
use crate::stage::factory;
use crate::wait_strategy::WaitStrategy;

impl<E, S, W> Builder<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    /// Now `try_handle_events_with(ringbus::factory(make))`.
    #[deprecated(note = "use `try_handle_events_with(ringbus::factory(make))`")]
    #[doc(hidden)]
    pub fn try_handle_events_with_factory<H, F>(self, make: F) -> Self
    where
        H: TryEventHandler<E> + 'static,
        F: FnOnce() -> H + Send + 'static,
    {
        self.try_handle_events_with(factory(make))
    }

    /// Now [`handle_events_with`](Builder::handle_events_with), which takes
    /// every handler form.
    #[deprecated(note = "use `handle_events_with`, which takes every handler form")]
    #[doc(hidden)]
    pub fn handle_batches_with<H>(self, handler: H) -> Self
    where
        H: BatchEventHandler<E> + Send + 'static,
    {
        self.handle_events_with(handler)
    }

    /// Now [`try_handle_events_with`](Builder::try_handle_events_with),
    /// which takes every fallible handler form.
    #[deprecated(note = "use `try_handle_events_with`, which takes every fallible handler form")]
    #[doc(hidden)]
    pub fn try_handle_batches_with<H>(self, handler: H) -> Self
    where
        H: TryBatchEventHandler<E> + Send + 'static,
    {
        self.try_handle_events_with(handler)
    }

    /// Now `handle_events_with(ringbus::factory(make))`.
    #[deprecated(note = "use `handle_events_with(ringbus::factory(make))`")]
    #[doc(hidden)]
    pub fn handle_events_with_factory<H, F>(self, make: F) -> Self
    where
        H: EventHandler<E> + 'static,
        F: FnOnce() -> H + Send + 'static,
    {
        self.handle_events_with(factory(make))
    }

    /// Now [`handle_events_with`](Builder::handle_events_with), which takes
    /// every handler form.
    #[deprecated(note = "use `handle_events_with`, which takes every handler form")]
    #[doc(hidden)]
    pub fn mutate_events_with<H>(self, handler: H) -> Self
    where
        H: EventHandlerMut<E> + Send + 'static,
    {
        self.handle_events_with(handler)
    }

    /// Now `handle_events_with(ringbus::factory(make))`.
    #[deprecated(note = "use `handle_events_with(ringbus::factory(make))`")]
    #[doc(hidden)]
    pub fn mutate_events_with_factory<H, F>(self, make: F) -> Self
    where
        H: EventHandlerMut<E> + 'static,
        F: FnOnce() -> H + Send + 'static,
    {
        self.handle_events_with(factory(make))
    }
}
