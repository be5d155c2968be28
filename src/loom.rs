//! The one place atomics, cells, locks and threads come from.
//!
//! Under `cfg(loom)` these are loom's model-checked types, so the loom models in
//! `loom-tests/` exercise the production code paths, not copies of them. Every
//! other module imports from here instead of `std`.

#[cfg(loom)]
#[allow(unused_imports)] // fence and AtomicU32: the `ipc` feature's
pub(crate) use loom::{
    hint::spin_loop,
    sync::{
        atomic::{fence, AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread,
};

#[cfg(not(loom))]
#[allow(unused_imports)] // fence and AtomicU32: the `ipc` feature's
pub(crate) use std::{
    hint::spin_loop,
    sync::{
        atomic::{fence, AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread,
};

/// Gives the scheduler a chance to run another thread. Under loom this is the
/// model's yield point; spin loops must reach it so loom can explore them.
#[inline]
pub(crate) fn yield_now() {
    thread::yield_now();
}

/// Sleeps for `dur`. Under loom time does not exist, so sleeping is a yield.
#[inline]
pub(crate) fn sleep(dur: std::time::Duration) {
    #[cfg(loom)]
    {
        let _ = dur;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    std::thread::sleep(dur);
}

/// Locks `m`, ignoring poisoning: the data behind our mutexes (waker lists,
/// stage outcomes, the join state) has no invariant a panic can break.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::{MutPtr, UnsafeCell};

#[cfg(not(loom))]
pub(crate) use self::cell::UnsafeCell;

/// A std `UnsafeCell` with loom's tracked-pointer API, so slot accesses are
/// written once and checked by loom under `cfg(loom)`.
#[cfg(not(loom))]
mod cell {
    /// `repr(transparent)`, as std's cell is over `T`: a run of slots has
    /// the layout of a slice of events (`RingView::read_range`).
    #[derive(Debug)]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(core::cell::UnsafeCell::new(value))
        }

        #[inline(always)]
        pub(crate) fn get(&self) -> ConstPtr<T> {
            ConstPtr(self.0.get())
        }

        #[inline(always)]
        pub(crate) fn get_mut(&self) -> MutPtr<T> {
            MutPtr(self.0.get())
        }
    }

    /// A shared access to the cell's value; loom tracks it while it lives.
    pub(crate) struct ConstPtr<T>(*const T);

    impl<T> ConstPtr<T> {
        /// # Safety
        /// No `&mut` to the value may exist while the returned reference lives.
        #[inline(always)]
        pub(crate) unsafe fn deref(&self) -> &T {
            // SAFETY: the caller guarantees no exclusive access overlaps.
            unsafe { &*self.0 }
        }
    }

    /// An exclusive access to the cell's value; loom tracks it while it lives.
    pub(crate) struct MutPtr<T>(*mut T);

    impl<T> MutPtr<T> {
        /// # Safety
        /// No other reference to the value may exist while the returned one lives.
        #[inline(always)]
        #[allow(clippy::mut_from_ref)]
        pub(crate) unsafe fn deref(&self) -> &mut T {
            // SAFETY: the caller guarantees this is the only access.
            unsafe { &mut *self.0 }
        }
    }
}

/// A process-wide unique number for each bus, so a stage id of one bus is
/// recognised when passed to another. A plain std atomic: it takes part in no
/// protocol between threads, and loom forbids its atomics in statics.
pub(crate) fn next_bus_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// What the loom models read to prove they reached their interesting paths.
/// Plain std atomics: they count across loom executions, outside the model.
#[cfg(loom)]
pub mod stats {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    static PARKS: AtomicUsize = AtomicUsize::new(0);

    pub(crate) fn count_park() {
        PARKS.fetch_add(1, Relaxed);
    }

    /// Times any thread parked (a `Blocking` wait), in all
    /// executions so far.
    pub fn parks() -> usize {
        PARKS.load(Relaxed)
    }

    static LOST_RAISES: AtomicUsize = AtomicUsize::new(0);

    pub(crate) fn count_lost_raise() {
        LOST_RAISES.fetch_add(1, Relaxed);
    }

    /// Times a single producer's raise of its limit found a refusal made
    /// since it read the limit, in all executions so far.
    pub fn lost_raises() -> usize {
        LOST_RAISES.load(Relaxed)
    }
}
