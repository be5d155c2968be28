//! What [`Builder::handle_events_with`] and
//! [`Builder::try_handle_events_with`] accept: every handler form, through
//! two traits ([`IntoStage`], [`IntoTryStage`]), so two methods add any
//! stage.
//!
//! | the stage gets          | reads `&E`                 | mutates `&mut E`               |
//! |-------------------------|----------------------------|--------------------------------|
//! | one event per call      | [`EventHandler`]           | [`EventHandlerMut`]            |
//! | … and may fail          | [`TryEventHandler`]        | [`TryEventHandlerMut`]         |
//! | every available event   | [`BatchEventHandler`]      | [`BatchEventHandlerMut`]       |
//! | … and may fail at one   | [`TryBatchEventHandler`]   | [`TryBatchEventHandlerMut`]    |
//!
//! Closures of the matching signature implement each trait, and any of
//! them wrapped in [`factory`] is made on the stage's own thread. The
//! fallible forms have their own method because a closure's return type
//! cannot pick the form: one that only panics (`|..| panic!()`) would fit
//! both.

use crate::builder::Builder;
use crate::consume::{
    Adapter, BatchReader, BatchWriter, Fallible, FallibleWriter, Reader, TryBatchReader,
    TryBatchWriter, Writer,
};
use crate::handler::{
    BatchEventHandler, BatchEventHandlerMut, EventHandler, EventHandlerMut, TryBatchEventHandler,
    TryBatchEventHandlerMut, TryEventHandler, TryEventHandlerMut,
};
use crate::sequencer::Sequencer;
use crate::wait_strategy::WaitStrategy;

macro_rules! stage_trait {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub trait $name<E, Kind> {
            /// Adds the stage to `builder`, the handler moving to the stage
            /// thread.
            #[doc(hidden)]
            fn add_to<S: Sequencer, W: WaitStrategy>(
                self,
                builder: Builder<E, S, W>,
            ) -> Builder<E, S, W>
            where
                Self: Sized + Send + 'static,
                E: Send + Sync + 'static;

            /// Adds the stage to `builder`, the handler made by `make` on the
            /// stage thread.
            #[doc(hidden)]
            fn add_made_to<S: Sequencer, W: WaitStrategy>(
                make: impl FnOnce() -> Self + Send + 'static,
                builder: Builder<E, S, W>,
            ) -> Builder<E, S, W>
            where
                Self: Sized + 'static,
                E: Send + Sync + 'static;
        }
    };
}

stage_trait! {
    /// A handler in any infallible form, for [`Builder::handle_events_with`]:
    /// [`EventHandler`], [`EventHandlerMut`], [`BatchEventHandler`],
    /// [`BatchEventHandlerMut`] (read or mutate, per event or per batch), and
    /// any of them made on the stage thread by a [`factory`].
    ///
    /// `Kind` is inferred from the handler's type (a closure's parameter
    /// types pick the form); it is not meant to be named. A type that
    /// implements two of the handler traits is ambiguous: wrap it in a
    /// closure that calls the one you mean.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not an infallible stage handler for events of type `{E}`",
        label = "not a handler of `{E}`",
        note = "a stage handler is a closure `|e: &{E}, seq: Sequence, end_of_batch: bool|` \
                (`&mut {E}` to mutate), a closure `|batch: Batch<'_, {E}>|` (`BatchMut` to \
                mutate), a type implementing one of the handler traits, or \
                `ringbus::factory(|| handler)`; annotate the closure's parameter types. \
                A handler returning `Result` goes to `try_handle_events_with`"
    )]
    IntoStage
}

stage_trait! {
    /// A handler in any fallible form, for
    /// [`Builder::try_handle_events_with`]: [`TryEventHandler`],
    /// [`TryEventHandlerMut`], [`TryBatchEventHandler`],
    /// [`TryBatchEventHandlerMut`], and any of them made on the stage thread
    /// by a [`factory`]. See [`IntoStage`] for `Kind`.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a fallible stage handler for events of type `{E}`",
        label = "not a fallible handler of `{E}`",
        note = "a fallible stage handler is a closure \
                `|e: &{E}, seq: Sequence, end_of_batch: bool| -> Result<(), Err>` \
                (`&mut {E}` to mutate), a closure \
                `|batch: Batch<'_, {E}>| -> Result<(), (Sequence, Err)>` (`BatchMut` to \
                mutate), a type implementing one of the `Try*` handler traits, or \
                `ringbus::factory(|| handler)`. An infallible handler goes to \
                `handle_events_with`"
    )]
    IntoTryStage
}

/// The kinds of [`IntoStage`] and [`IntoTryStage`]: unnameable outside the
/// crate, so only the handler traits (and [`Factory`]) are stage handlers.
mod kind {
    #[derive(Debug)]
    pub struct Read;
    #[derive(Debug)]
    pub struct Mutate;
    #[derive(Debug)]
    pub struct TryRead;
    #[derive(Debug)]
    pub struct TryMutate;
    #[derive(Debug)]
    pub struct ReadBatch;
    #[derive(Debug)]
    pub struct MutateBatch;
    #[derive(Debug)]
    pub struct TryReadBatch;
    #[derive(Debug)]
    pub struct TryMutateBatch;
    #[derive(Debug)]
    pub struct Made<K>(std::marker::PhantomData<K>);
}

macro_rules! into_stage {
    ($trait:ident, $bound:ident, $kind:ident, $adapter:ident, $mutating:literal) => {
        impl<E, H: $bound<E>> $trait<E, kind::$kind> for H {
            fn add_to<S: Sequencer, W: WaitStrategy>(
                self,
                builder: Builder<E, S, W>,
            ) -> Builder<E, S, W>
            where
                Self: Send + 'static,
                E: Send + Sync + 'static,
            {
                builder.add_owned(
                    $mutating,
                    <$adapter<H>>::wrap(self),
                    <$adapter<H>>::into_inner,
                )
            }

            fn add_made_to<S: Sequencer, W: WaitStrategy>(
                make: impl FnOnce() -> Self + Send + 'static,
                builder: Builder<E, S, W>,
            ) -> Builder<E, S, W>
            where
                Self: 'static,
                E: Send + Sync + 'static,
            {
                builder.add_made($mutating, move || <$adapter<H>>::wrap(make()))
            }
        }
    };
}

into_stage!(IntoStage, EventHandler, Read, Reader, false);
into_stage!(IntoStage, EventHandlerMut, Mutate, Writer, true);
into_stage!(IntoStage, BatchEventHandler, ReadBatch, BatchReader, false);
into_stage!(
    IntoStage,
    BatchEventHandlerMut,
    MutateBatch,
    BatchWriter,
    true
);
into_stage!(IntoTryStage, TryEventHandler, TryRead, Fallible, false);
into_stage!(
    IntoTryStage,
    TryEventHandlerMut,
    TryMutate,
    FallibleWriter,
    true
);
into_stage!(
    IntoTryStage,
    TryBatchEventHandler,
    TryReadBatch,
    TryBatchReader,
    false
);
into_stage!(
    IntoTryStage,
    TryBatchEventHandlerMut,
    TryMutateBatch,
    TryBatchWriter,
    true
);

/// A handler made on its stage's own thread, so it (and any state it owns)
/// need not be `Send`: pass it to [`Builder::handle_events_with`] (or
/// [`Builder::try_handle_events_with`] for a fallible handler). Made by
/// [`factory`].
#[derive(Debug, Clone, Copy)]
pub struct Factory<F>(F);

/// Wraps `make` so the stage's handler is made by it on the stage's own
/// thread, just before `on_start`; any handler form works.
///
/// ```
/// use ringbus::{Blocking, Sequence};
/// use std::rc::Rc;
///
/// let mut producer = ringbus::single_producer(64, || 0u64, Blocking)
///     .handle_events_with(ringbus::factory(|| {
///         let seen = Rc::new(0u64); // not `Send`: it never leaves the stage thread
///         let mut count = 0;
///         move |e: &u64, _: Sequence, _: bool| { count += *e + *seen; }
///     }))
///     .build();
/// producer.publish(|e| *e = 1).unwrap();
/// producer.shutdown().unwrap();
/// ```
pub fn factory<F>(make: F) -> Factory<F> {
    Factory(make)
}

impl<E, F, H, K> IntoStage<E, kind::Made<K>> for Factory<F>
where
    F: FnOnce() -> H + Send + 'static,
    H: IntoStage<E, K> + 'static,
{
    fn add_to<S: Sequencer, W: WaitStrategy>(self, builder: Builder<E, S, W>) -> Builder<E, S, W>
    where
        E: Send + Sync + 'static,
    {
        H::add_made_to(self.0, builder)
    }

    fn add_made_to<S: Sequencer, W: WaitStrategy>(
        make: impl FnOnce() -> Self + Send + 'static,
        builder: Builder<E, S, W>,
    ) -> Builder<E, S, W>
    where
        E: Send + Sync + 'static,
    {
        H::add_made_to(move || (make().0)(), builder)
    }
}

impl<E, F, H, K> IntoTryStage<E, kind::Made<K>> for Factory<F>
where
    F: FnOnce() -> H + Send + 'static,
    H: IntoTryStage<E, K> + 'static,
{
    fn add_to<S: Sequencer, W: WaitStrategy>(self, builder: Builder<E, S, W>) -> Builder<E, S, W>
    where
        E: Send + Sync + 'static,
    {
        H::add_made_to(self.0, builder)
    }

    fn add_made_to<S: Sequencer, W: WaitStrategy>(
        make: impl FnOnce() -> Self + Send + 'static,
        builder: Builder<E, S, W>,
    ) -> Builder<E, S, W>
    where
        E: Send + Sync + 'static,
    {
        H::add_made_to(move || (make().0)(), builder)
    }
}
