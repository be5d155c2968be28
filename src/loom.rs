//! The one place atomics, cells, locks and threads come from.
//!
//! Under `cfg(loom)` these are loom's model-checked types, so the loom models in
//! `loom-tests/` exercise the production code paths, not copies of them. Every
//! other module imports from here instead of `std`.

#[cfg(loom)]
pub(crate) use loom::{
    hint::spin_loop,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread,
};

#[cfg(not(loom))]
pub(crate) use std::{
    hint::spin_loop,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering},
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

/// Where a thread parks, and the waker that wakes it: `park` returns once
/// woken (a wake that came first is kept, as a thread's park token is),
/// or after its timeout.
///
/// A state word and the thread's own park/unpark (a futex on Linux), as
/// std's and crossbeam's parkers do: `EMPTY`, `PARKED` (the thread is in
/// `park`, or about to call `thread::park`) or `NOTIFIED` (a wake is
/// pending). A wake swaps in `NOTIFIED` and unparks the thread only if it
/// found `PARKED`; both sides are read-modify-writes of the one word, so
/// either the parker's `EMPTY -> PARKED` comes first and the waker unparks
/// it (a token `thread::park` keeps if it comes early), or the wake comes
/// first and the parker's exchange fails and it returns at once. A thread
/// is unparked only while it is in `park`, never while it waits on a lock
/// (a stale waker, left on a signal's list, may wake a thread long after
/// it stopped waiting for that signal: it sees `NOTIFIED`, or nothing, at
/// its next park, and polls again). Under loom this is loom's park and
/// unpark, which it checks in a few steps.
///
/// Under loom the claim "unparked only while in `park`" holds exactly, as
/// it must (loom's unpark makes *any* blocked thread runnable, a mutex
/// waiter too): a parker is made per wait there, so it is `EMPTY` or
/// `NOTIFIED` outside `park`; a park has no timeout there; and loom's
/// `thread::park` never returns spuriously. So a waker that saw `PARKED`
/// unparks into the `thread::park` the parker is committed to. Outside
/// loom a wake can race a timeout (the parker takes it and leaves, and the
/// unpark lands later): a spurious return of some later `thread::park` of
/// that thread, which std allows and std's locks ignore.
pub(crate) struct Parker {
    state: AtomicUsize,
    thread: thread::Thread,
}

const EMPTY: usize = 0;
const PARKED: usize = 1;
const NOTIFIED: usize = 2;

impl Parker {
    fn new() -> Self {
        Self {
            state: AtomicUsize::new(EMPTY),
            thread: thread::current(),
        }
    }

    /// Takes a pending wake. Acquire: pairs with the waker's release, so
    /// what it stored before waking is visible after the park (the
    /// callers poll again anyway, through the signals' own acquire).
    fn take_wake(&self) -> bool {
        self.state
            .compare_exchange(NOTIFIED, EMPTY, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Waits until woken, or for at most `timeout` (loom has no clock:
    /// there it waits until woken, and the callers re-check their deadline
    /// themselves).
    pub(crate) fn park(&self, timeout: Option<std::time::Duration>) {
        // Relaxed: the word orders nothing but itself (the wake's swap and
        // this exchange are read-modify-writes of it, so one sees the
        // other); a failure means a wake came first: take it.
        if self
            .state
            .compare_exchange(EMPTY, PARKED, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            let taken = self.take_wake();
            debug_assert!(taken, "only a wake changes a parker's state");
            return;
        }
        // Loom has no clock: there a timed park waits until woken.
        let deadline = timeout
            .filter(|_| !cfg!(loom))
            .and_then(|t| std::time::Instant::now().checked_add(t));
        loop {
            match deadline {
                None => thread::park(),
                Some(deadline) => {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        // Leave; a wake that came meanwhile is taken (its
                        // unpark may leave a token: a spurious return of a
                        // later park, which polls again).
                        // Acquire: as in `take_wake`.
                        self.state.swap(EMPTY, Ordering::Acquire);
                        return;
                    }
                    std::thread::park_timeout(deadline - now);
                }
            }
            if self.take_wake() {
                return;
            }
        }
    }
}

impl std::task::Wake for Parker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        // Release: pairs with the parker's acquire in `take_wake`.
        if self.state.swap(NOTIFIED, Ordering::Release) == PARKED {
            self.thread.unpark();
        }
    }
}

/// The calling thread's parker and its waker: made once per thread (no
/// allocation per wait); under loom, per call.
#[cfg(not(loom))]
pub(crate) fn thread_parker() -> (std::sync::Arc<Parker>, std::task::Waker) {
    std::thread_local! {
        static PARKER: (std::sync::Arc<Parker>, std::task::Waker) = new_pair();
    }
    PARKER
        .try_with(|(parker, waker)| (std::sync::Arc::clone(parker), waker.clone()))
        // During the thread's teardown (a handle dropped by a thread-local
        // destructor): a pair of its own.
        .unwrap_or_else(|_| new_pair())
}

/// Makes the calling thread's parker now (one allocation per thread), so
/// that its first park, in the steady state, allocates nothing.
pub(crate) fn prepare_thread_parker() {
    #[cfg(not(loom))]
    drop(thread_parker());
}

fn new_pair() -> (std::sync::Arc<Parker>, std::task::Waker) {
    let parker = std::sync::Arc::new(Parker::new());
    let waker = std::task::Waker::from(std::sync::Arc::clone(&parker));
    (parker, waker)
}

/// The calling thread's parker and its waker (under loom: a new pair).
#[cfg(loom)]
pub(crate) fn thread_parker() -> (std::sync::Arc<Parker>, std::task::Waker) {
    new_pair()
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

/// The orderings `--cfg ringbus_weaken="<name>"` can turn off, one at a time,
/// to show that a loom model fails without them. Never set in real builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Weaken {
    /// The single producer's cursor store.
    Cursor,
    /// A stage's sequence store.
    Stage,
    /// The multi-producer's availability mark.
    Available,
    /// The multi-producers' shared gating cache.
    GatingCache,
}

/// `Release`, unless this build weakens `what` (loom demonstration only).
#[inline(always)]
pub(crate) fn release(what: Weaken) -> Ordering {
    let weakened = match what {
        Weaken::Cursor => cfg!(ringbus_weaken = "cursor"),
        Weaken::Stage => cfg!(ringbus_weaken = "stage"),
        Weaken::Available => cfg!(ringbus_weaken = "available"),
        Weaken::GatingCache => cfg!(ringbus_weaken = "gating_cache"),
    };
    if weakened {
        Ordering::Relaxed
    } else {
        Ordering::Release
    }
}

/// The ordering of the parking flag's swaps: `AcqRel`, unless this build
/// weakens it (`--cfg ringbus_weaken="fence"`, loom demonstration only).
#[inline(always)]
pub(crate) fn parking_order() -> Ordering {
    if cfg!(ringbus_weaken = "fence") {
        Ordering::Relaxed
    } else {
        Ordering::AcqRel
    }
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
}
