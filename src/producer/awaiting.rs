//! Publishing and shutting down from async code (feature `async`): the
//! producers' futures. A future waits where a thread would park (the
//! signals of what it waits for, parking per edge: see
//! [`Signal`](crate::parking::Signal)), so no executor thread blocks;
//! no runtime is needed.

use std::future::{poll_fn, Future};
use std::task::{Poll, Waker};

use super::{MultiProducer, SingleProducer};
use crate::error::{PublishError, TryPublishError};
use crate::loom::{self, thread, Arc, Mutex};
use crate::parking::Interrupt;
use crate::report::ShutdownError;
use crate::report::ShutdownReport;
use crate::ring_buffer::BatchMut;
use crate::sequence::Sequence;
use crate::wait_strategy::AsyncWait;

/// Publishes with `try_publish` until it is not full, awaiting room in
/// between; `try_publish` takes `f` only when it claims, so a future
/// dropped while it waits has claimed nothing.
macro_rules! publish_async_body {
    ($self:ident, $n:expr, $try:expr, $f:ident) => {{
        let mut $f = Some($f);
        loop {
            match $try {
                Ok(sequence) => return Ok(sequence),
                Err(TryPublishError::Full { .. }) => {}
                Err(e) => return Err(super::waited(e)),
            }
            let before = $self.cursor();
            let bus = &$self.bus;
            poll_fn(|cx| bus.register_for_free(cx.waker(), before + $n, before))
                .await
                .map_err(|i: Interrupt| super::waited(i.into()))?;
        }
    }};
}

impl<E, W> SingleProducer<E, W>
where
    E: Send + Sync + 'static,
    W: AsyncWait,
{
    /// Like [`publish`](SingleProducer::publish), but awaits room on a full
    /// ring instead of blocking the thread (feature `async`).
    ///
    /// Cancel-safe: a future dropped before it completed claimed nothing
    /// and did not call `f`.
    ///
    /// ```
    /// # futures_lite_block_on(async {
    /// use ringbus::{Blocking, Sequence};
    /// let mut producer = ringbus::single_producer(4, || 0u64, Blocking)
    ///     .handle_events_with(|_: &u64, _: Sequence, _: bool| {})
    ///     .build();
    /// for i in 0..100 {
    ///     producer.publish_async(|e| *e = i).await.unwrap();
    /// }
    /// producer.shutdown_async().await.unwrap();
    /// # });
    /// # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// ```
    ///
    /// # Errors
    /// As for [`publish`](SingleProducer::publish).
    pub async fn publish_async(
        &mut self,
        f: impl FnOnce(&mut E),
    ) -> Result<Sequence, PublishError> {
        publish_async_body!(
            self,
            1,
            self.try_publish(|e| if let Some(f) = f.take() {
                f(e)
            }),
            f
        )
    }

    /// Like [`batch_publish`](SingleProducer::batch_publish), awaiting room
    /// (feature `async`); cancel-safe as
    /// [`publish_async`](SingleProducer::publish_async).
    ///
    /// # Errors
    /// As for [`batch_publish`](SingleProducer::batch_publish).
    pub async fn batch_publish_async(
        &mut self,
        n: usize,
        f: impl FnOnce(BatchMut<'_, E>),
    ) -> Result<Sequence, PublishError> {
        publish_async_body!(
            self,
            n as Sequence,
            self.try_batch_publish(n, |slots| if let Some(f) = f.take() {
                f(slots)
            }),
            f
        )
    }

    /// Like [`shutdown`](SingleProducer::shutdown), awaited: the drain and
    /// the join run on a helper thread, so no executor thread blocks
    /// (feature `async`). The shutdown starts when this is called, not when
    /// the future is first polled: the bus closes at once. Dropping the
    /// future does not stop it. Called on a stage thread of this bus (a
    /// handler), it closes the bus and the future answers
    /// [`ShutdownError::OnStageThread`], whichever thread then polls it.
    ///
    /// # Errors
    /// As for [`shutdown`](SingleProducer::shutdown).
    pub fn shutdown_async(
        self,
    ) -> impl Future<Output = Result<ShutdownReport, ShutdownError>> + Send + 'static {
        // On a stage thread `shutdown` answers at once (`OnStageThread`);
        // on a helper thread it would wait for this very stage.
        let here = self.bus.on_stage_thread();
        off_thread(move || self.shutdown(), here)
    }
}

impl<E, W> MultiProducer<E, W>
where
    E: Send + Sync + 'static,
    W: AsyncWait,
{
    /// Like [`publish`](MultiProducer::publish), but awaits room on a full
    /// ring instead of blocking the thread (feature `async`). Cancel-safe:
    /// a future dropped before it completed claimed nothing.
    ///
    /// # Errors
    /// As for [`publish`](MultiProducer::publish).
    pub async fn publish_async(&self, f: impl FnOnce(&mut E)) -> Result<Sequence, PublishError> {
        publish_async_body!(
            self,
            1,
            self.try_publish(|e| if let Some(f) = f.take() {
                f(e)
            }),
            f
        )
    }

    /// Like [`batch_publish`](MultiProducer::batch_publish), awaiting room
    /// (feature `async`); cancel-safe.
    ///
    /// # Errors
    /// As for [`batch_publish`](MultiProducer::batch_publish).
    pub async fn batch_publish_async(
        &self,
        n: usize,
        f: impl FnOnce(BatchMut<'_, E>),
    ) -> Result<Sequence, PublishError> {
        publish_async_body!(
            self,
            n as Sequence,
            self.try_batch_publish(n, |slots| if let Some(f) = f.take() {
                f(slots)
            }),
            f
        )
    }

    /// Like [`shutdown`](MultiProducer::shutdown), awaited on a helper
    /// thread (feature `async`); as
    /// [`SingleProducer::shutdown_async`]: it starts when called (every
    /// clone's publishes get `Closed` from then), and on a stage thread it
    /// answers `OnStageThread`.
    ///
    /// # Errors
    /// As for [`shutdown`](MultiProducer::shutdown).
    pub fn shutdown_async(
        self,
    ) -> impl Future<Output = Result<ShutdownReport, ShutdownError>> + Send + 'static {
        let here = self.bus.on_stage_thread();
        off_thread(move || self.shutdown(), here)
    }
}

/// Runs `work` on a helper thread and completes with its result (a panic
/// in it resumes in the awaiting task). With `here` (a stage thread, where
/// `shutdown` closes the bus and answers at once) `work` runs now, on the
/// calling thread, wherever the future is then polled; if the thread
/// cannot be started, when the future is first polled.
fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
    here: bool,
) -> impl Future<Output = T> + Send + 'static {
    struct Slot<T> {
        result: Option<std::thread::Result<T>>,
        waker: Option<Waker>,
    }
    let slot = Arc::new(Mutex::new(Slot {
        result: None,
        waker: None,
    }));
    let theirs = Arc::clone(&slot);
    let work = if here {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        loom::lock(&slot).result = Some(result);
        None
    } else {
        Some(work)
    };
    let work = Arc::new(Mutex::new(work));
    let spare = Arc::clone(&work);
    let spawned = here
        || thread::Builder::new()
            .name("ringbus-shutdown".into())
            .spawn(move || {
                let work = loom::lock(&spare).take();
                if let Some(work) = work {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
                    let mut slot = loom::lock(&theirs);
                    slot.result = Some(result);
                    if let Some(waker) = slot.waker.take() {
                        drop(slot);
                        waker.wake();
                    }
                }
            })
            .is_ok();
    poll_fn(move |cx| {
        if !spawned {
            let work = loom::lock(&work).take();
            if let Some(work) = work {
                return Poll::Ready(work());
            }
        }
        let mut slot = loom::lock(&slot);
        match slot.result.take() {
            Some(Ok(result)) => Poll::Ready(result),
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
}
