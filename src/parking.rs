//! Where threads wait for each other: every source of progress has a
//! [`Signal`], every thread a [`Parker`], and [`park`] (threads) and
//! [`register`] (async tasks) enlist a waiter with the signals whose
//! progress it waits for.
//!
//! # The parking protocol ([`Blocking`](crate::Blocking), and [`PhasedBackoff::with_blocking`](crate::PhasedBackoff::with_blocking))
//!
//! Parking is per edge of the graph. Every source of progress has a
//! [`Signal`] of its own: the bus's publish signals ([`PublishSignals`]: on
//! a multi-producer bus a few stripes, each producer handle notifying its
//! own, so that producers on different threads do not share one flag's
//! line, which a parked waiter's wake-up writes; one on a single-producer
//! bus) and each stage's and
//! subscriber's (its sequence advanced). A waiter enlists
//! with the signals whose progress could change what it waits for, and
//! only those: a stage with every publish stripe (it reads the ring) or
//! with its upstream stages' (it reads after them); a producer waiting for
//! room with every gating stage's and subscriber's (and, a multi producer,
//! with every publish stripe: another producer's publish moves the
//! published floor);
//! a thread running several stages with all of theirs. So a publish wakes
//! only the stages reading the ring, and a stage's progress only the stages
//! after it and the producers. The bus's own events wake every signal.
//!
//! A signal is a `sleeping` flag and a list of wakers under a mutex (a
//! parked thread's waker wakes its parker; an async task's wakes the task).
//!
//! * A waiter enlists with each of its signals: it takes the signal's lock,
//!   adds its waker (once), sets `sleeping` with an AcqRel swap and lets the
//!   lock go. Then, once for all its signals, it runs the heavy side of an
//!   asymmetric fence ([`fence::heavy`](crate::fence::heavy): a SeqCst fence
//!   and, on x86_64 and aarch64 Linux, a membarrier that has every running
//!   thread of the process execute a full barrier; see `fence.rs` for when
//!   it is not used). Then it polls, and parks if the poll
//!   failed. Woken, it enlists again and polls again.
//! * A notifier has already stored its progress; it runs the light side
//!   ([`fence::light`](crate::fence::light): a compiler fence once the
//!   process registered for membarrier, a SeqCst fence otherwise), then
//!   loads `sleeping` (Relaxed). Only if it is set does it clear it with an
//!   AcqRel swap, and if the swap found it set, it takes the list under the
//!   lock and wakes every waker on it.
//!
//! No wake-up is lost. The waiter's flag store comes before its heavy
//! fence, the notifier's progress store before its light one. The two
//! fences are ordered (with membarrier: the notifier's CPU executed the
//! waiter's barrier, or was switched out and back in, a full barrier, at a
//! point of its program before or after its light fence). If the waiter's
//! comes first, the notifier's load sees the flag set (by this waiter, or
//! later), unless another notifier cleared it in between, and whoever
//! swapped it clear takes the list under the lock. That swap read the
//! waiter's (release; its swap was made under the lock, after its waker
//! went in), so the swapper's critical section comes after the waiter's
//! and finds the waker. If the notifier's fence comes first, the waiter's
//! poll, after its fence, sees the progress. A wake before the park is kept
//! by the waiter's parker (as a thread's park token is), so a wake between
//! the poll and the park is not lost either.
//!
//! A waker stays on the lists of the signals that did not wake it until
//! they next notify: a later, spurious wake, after which the waiter polls
//! and parks again.
//!
//! History. A version before this one had both sides swap the flag (each
//! a read-modify-write, ordered by acquire/release alone), so every publish
//! paid a locked instruction and waited for its stores to drain: the
//! 2P->1C row ran 3.1-3.3x slower than with 1 us naps while hardly ever
//! parking (4-6 parks in 4 M events). An earlier one had a fence and a load
//! on the notifier's side but only the swap on the waiter's, a store-load
//! pair without a fence on one side; loom found the lost wake-up (model
//! `poller_joining_behind_a_limited_poll_misses_nothing`). Each side now
//! has its fence; loom models take SeqCst fences on both (loom has no
//! membarrier), and knob `fence` (the notifier's fence left out) fails
//! them. An earlier version still had one signal per bus, whose every
//! notification woke every parked thread.
//!
//! Cost: a compiler fence (a SeqCst fence where membarrier is not used)
//! and a load of a line nobody writes while nobody sleeps, per publish,
//! batch or stage advance (a producer handle's own stripe); per park
//! episode, a membarrier call and one lock per signal
//! enlisted with (a waiter for publishes enlists with every stripe); and a
//! lock and a wake per parked waiter per episode for the notifier while
//! somebody does.

use std::fmt;
use std::task::Waker;
use std::time::Instant;

use crossbeam_utils::CachePadded;

use crate::loom::{self, thread, AtomicBool, AtomicUsize, Mutex, Ordering};
use crate::weaken;

/// Why a wait ended without the condition becoming true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// The bus was halted.
    Halted,
    /// Everything was published and processed; nothing more will come.
    Closed,
    /// The deadline passed.
    Timeout,
    /// A lag-limited subscriber was evicted, this many events behind.
    Lagged(u64),
}

/// What one poll of a waited-for condition found.
pub type PollResult<T> = Result<Option<T>, Interrupt>;

/// Wakers on one signal after which an enlisting waiter wakes them all
/// (see [`Signal::enlist`]), while most of them are not live.
const WAKERS_BEFORE_SWEEP: usize = 1024;

/// How many sweeps' worth of wakers a signal remembers, to know a live
/// waiter when it enlists again: live waiters come back a bound at a time,
/// so up to about this many bounds of them (8,000) the bound grows past
/// them and the sweeps stop; beyond, each sweep wakes a bound's worth
/// again (a storm, as with a fixed bound). Dead wakers kept: at most this
/// many bounds, plus the list.
const SWEEPS_REMEMBERED: usize = 8;

/// A signal's wakers, and when an enlisting waiter sweeps them.
struct Waiters {
    list: Vec<Waker>,
    /// The list's length that sets off a sweep.
    sweep_at: usize,
    /// The wakers of the last sweeps not seen since (oldest first, at most
    /// [`SWEEPS_REMEMBERED`] bounds): a live waiter enlists again once
    /// woken, a dropped future's waker never does. Forgotten at a wake of
    /// the whole list.
    swept: Vec<Waker>,
    /// How many of the wakers enlisted since the last sweep came back from
    /// an earlier one.
    came_back: usize,
}

/// One source of progress's parking place; see the module docs.
pub struct Signal {
    sleeping: CachePadded<AtomicBool>,
    /// Who waits for this signal's progress: parked threads (a waker that
    /// unparks them) and async tasks; all woken, and dropped, by a wake.
    waiters: Mutex<Waiters>,
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal")
            .field("sleeping", &self.sleeping.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

impl Signal {
    pub(crate) fn new() -> Self {
        Self {
            sleeping: CachePadded::new(AtomicBool::new(false)),
            // Room for a few waiters now, so that enlisting allocates
            // nothing in the steady state (a drain keeps the capacity).
            waiters: Mutex::new(Waiters {
                list: Vec::with_capacity(4),
                sweep_at: WAKERS_BEFORE_SWEEP,
                swept: Vec::new(),
                came_back: 0,
            }),
        }
    }

    /// Wakes this signal's waiters if there are any. Call after storing
    /// progress.
    #[inline]
    pub(crate) fn notify_if_parked(&self) {
        crate::fence::light();
        // Relaxed: ordered after our progress by the fence above; see the
        // module docs.
        if self.sleeping.load(Ordering::Relaxed) {
            self.clear_and_wake();
        }
    }

    /// The flag was seen set: clears it and, if this swap is the one that
    /// found it set, wakes the list.
    #[cold]
    fn clear_and_wake(&self) {
        // AcqRel: acquires the enlisting of the waiter whose swap set the
        // flag, so the lock taken below comes after its waker went in; see
        // the module docs.
        if self.sleeping.swap(false, weaken::parking_order()) {
            self.notify_all();
        }
    }

    /// Wakes every waiter of this signal, unconditionally.
    pub(crate) fn notify_all(&self) {
        // The wakers on the list now, a few at a time, woken outside the
        // lock (a waker may run its task on this thread, which may enlist
        // again). Draining keeps the list's capacity, so enlisting again
        // allocates nothing. From the front: the wakers there came first,
        // and a waiter enlisting meanwhile goes to the back (taking from the
        // back would take a newcomer in an earlier waiter's place and leave
        // that one asleep). The first count bounds the work, whoever enlists
        // meanwhile (they polled after enlisting, or are woken next time).
        const AT_ONCE: usize = 8;
        let mut left = usize::MAX;
        loop {
            let mut batch: [Option<Waker>; AT_ONCE] = Default::default();
            let mut taken = 0;
            let forgotten;
            {
                let mut waiters = loom::lock(&self.waiters);
                // Everyone is woken: nothing swept needs remembering (its
                // live waiters come back as after this wake).
                forgotten = if left == usize::MAX {
                    waiters.came_back = 0;
                    std::mem::take(&mut waiters.swept)
                } else {
                    Vec::new()
                };
                left = left.min(waiters.list.len());
                let k = AT_ONCE.min(left);
                for (slot, waker) in batch.iter_mut().zip(waiters.list.drain(..k)) {
                    *slot = Some(waker);
                    taken += 1;
                }
            }
            left -= taken;
            drop(forgotten); // outside the lock: a waker's drop runs code
            for waker in batch.iter_mut().filter_map(Option::take) {
                waker.wake();
            }
            if taken == 0 || left == 0 {
                return;
            }
        }
    }

    /// Adds `waker` to the waiters (once) and sets the flag, under the lock;
    /// see the module docs. Returns the wakers of a sweep, for the caller to
    /// wake once it holds no lock, and wakers to drop then.
    fn enlist(&self, waker: &Waker) -> (Vec<Waker>, Vec<Waker>) {
        let mut waiters = loom::lock(&self.waiters);
        let mut forgotten = Vec::new();
        // A future dropped while it waited leaves its waker here until the
        // next wake; past a bound, wake them all (live waiters enlist again,
        // dead wakers are freed), so a stream of cancelled waits cannot grow
        // the list for ever. If most of what enlisted since the last sweep
        // came back from earlier sweeps (live waiters, more than the
        // bound), the bound doubles what this sweep takes: a fixed one
        // would have each sweep's waiters, enlisting again, set off the
        // next sweep for ever (a wake storm). Otherwise it goes back to its
        // start, so dropped futures' wakers cannot grow the list past it
        // (nor `swept` past its few bounds).
        let stale = if waiters.list.len() >= waiters.sweep_at {
            let taken = std::mem::take(&mut waiters.list);
            let live = waiters.came_back > 0 && waiters.came_back.saturating_mul(2) >= taken.len();
            waiters.sweep_at = if live {
                taken.len().saturating_mul(2)
            } else {
                WAKERS_BEFORE_SWEEP
            };
            waiters.came_back = 0;
            waiters.swept.extend(taken.iter().cloned());
            let keep = SWEEPS_REMEMBERED.saturating_mul(waiters.sweep_at);
            if waiters.swept.len() > keep {
                let extra = waiters.swept.len() - keep;
                forgotten.extend(waiters.swept.drain(..extra));
            }
            taken
        } else {
            Vec::new()
        };
        if !waiters.list.iter().any(|w| w.will_wake(waker)) {
            // From the back: returners come from the newest sweep, which
            // is at the end, and removing near the end moves little.
            if let Some(i) = waiters.swept.iter().rposition(|w| w.will_wake(waker)) {
                forgotten.push(waiters.swept.remove(i));
                waiters.came_back += 1;
            }
            // Knob `waker_lock`: add the waker in a second critical section,
            // after the flag is set, leaving a gap a wake can fall into (to
            // show the loom models of parking catch it).
            if weaken::WAKER_LOCK {
                // AcqRel: as below.
                self.sleeping.swap(true, weaken::parking_order());
                drop(waiters);
                loom::lock(&self.waiters).list.push(waker.clone());
                return (stale, forgotten);
            }
            waiters.list.push(waker.clone());
        }
        // AcqRel: releases our enlisting to the notifier whose swap reads
        // this value; see the module docs. (The waiter's fence comes after
        // all its signals: `enlist_all`.)
        self.sleeping.swap(true, weaken::parking_order());
        (stale, forgotten)
    }
}

/// Enlists `waker` with every signal of `sources`, runs the waiter's heavy
/// fence, then wakes the stale wakers a sweep took (holding no lock by
/// then). False when the fence could not be made (see
/// [`fence::heavy`](crate::fence::heavy)): a notifier may miss the flags,
/// so the caller must not wait long for a wake.
fn enlist_all(sources: &impl Sources, waker: &Waker) -> bool {
    let (mut stale, mut forgotten) = (Vec::new(), Vec::new());
    sources.each(&mut |signal| {
        let (wake, drop) = signal.enlist(waker);
        stale.extend(wake);
        forgotten.extend(drop);
    });
    let fenced = crate::fence::heavy();
    drop(forgotten);
    for waker in stale {
        waker.wake();
    }
    fenced
}

/// How long a park may last when the waiter's fence could not be made.
const UNFENCED_PARK: std::time::Duration = std::time::Duration::from_micros(100);

impl Sources for Signal {
    #[inline]
    fn each(&self, f: &mut dyn FnMut(&Signal)) {
        f(self)
    }
}

/// The async form of [`park`] (feature `async`): enlists `waker` with
/// `sources`, then polls once; if the poll fails the waker stays enlisted,
/// to be woken by the next notification of one of them.
#[cfg_attr(not(feature = "async"), allow(dead_code))]
pub(crate) fn register<T>(
    sources: &impl Sources,
    waker: &Waker,
    mut poll: impl FnMut() -> PollResult<T>,
) -> std::task::Poll<Result<T, Interrupt>> {
    use std::task::Poll;
    let fenced = enlist_all(sources, waker);
    match poll() {
        Ok(Some(value)) => Poll::Ready(Ok(value)),
        Err(interrupt) => Poll::Ready(Err(interrupt)),
        Ok(None) => {
            #[cfg(loom)]
            loom::stats::count_park();
            if !fenced {
                // A notifier may miss our flags: be polled again after a
                // short while (the clock thread wakes the task), not at
                // once, which would spin on failing syscalls.
                #[cfg(all(feature = "async", not(loom)))]
                crate::lag_clock::wake_at(Instant::now() + UNFENCED_PARK, waker.clone());
                #[cfg(not(all(feature = "async", not(loom))))]
                waker.wake_by_ref();
            }
            Poll::Pending
        }
    }
}

/// Parks the calling thread until `poll` answers, enlisted with `sources`;
/// see the module docs for the protocol.
pub(crate) fn park<T>(
    sources: &impl Sources,
    deadline: Option<Instant>,
    mut poll: impl FnMut() -> PollResult<T>,
) -> Result<T, Interrupt> {
    let (parker, waker) = thread_parker();
    loop {
        let fenced = enlist_all(sources, &waker);
        match poll() {
            Ok(Some(value)) => return Ok(value),
            Err(interrupt) => return Err(interrupt),
            Ok(None) => {}
        }
        #[cfg(loom)]
        loom::stats::count_park();
        // A waiter whose fence could not be made naps briefly instead (a
        // notifier may miss its flags); it polls again after either.
        let cap = (!fenced).then_some(UNFENCED_PARK);
        match deadline {
            None => parker.park(cap),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Interrupt::Timeout);
                }
                let left = deadline - now;
                parker.park(Some(cap.map_or(left, |cap| cap.min(left))));
            }
        }
    }
}

/// How many signals publishes are spread over: each producer handle
/// notifies one of them (its stripe), so producers on different threads
/// load and, while someone is parked, swap different flags, and do not
/// pass one cache line back and forth. Waiters for publishes enlist with
/// all of them. (Two
/// under loom: enough for two producers to notify different ones.)
pub(crate) const STRIPES: usize = if cfg!(loom) { 2 } else { 4 };

/// The bus's publish signals (see [`STRIPES`]): as many in use as the bus
/// can have producer handles, 1 for a single producer (a stripe nobody
/// notifies would keep its waiters' wakers until a bus event). Stripe 0 is
/// also where the last thread to finish tells a joining `shutdown`; the
/// bus's other events (close, halt, a thread finished, a failure) wake
/// every signal of the bus (`Bus::wake_all`).
pub(crate) struct PublishSignals {
    stripes: [Signal; STRIPES],
    /// Stripes in use: `1..=STRIPES`.
    used: usize,
}

impl PublishSignals {
    /// `multi`: the bus has a multi producer, whose handles take stripes
    /// in turn.
    pub(crate) fn new(multi: bool) -> Self {
        Self {
            stripes: std::array::from_fn(|_| Signal::new()),
            used: if multi { STRIPES } else { 1 },
        }
    }

    /// Stripes in use.
    #[inline(always)]
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// The signal of `stripe` (any number below `used`).
    #[inline(always)]
    pub(crate) fn stripe(&self, stripe: usize) -> &Signal {
        &self.stripes[stripe % STRIPES]
    }

    /// Stripe 0.
    #[inline(always)]
    pub(crate) fn bus(&self) -> &Signal {
        &self.stripes[0]
    }

    /// Wakes the waiters of every stripe in use, as a notifier does.
    pub(crate) fn notify_if_parked(&self) {
        for signal in &self.stripes[..self.used] {
            signal.notify_if_parked();
        }
    }
}

impl fmt::Debug for PublishSignals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.stripes).finish()
    }
}

impl Sources for PublishSignals {
    #[inline]
    fn each(&self, f: &mut dyn FnMut(&Signal)) {
        for signal in &self.stripes[..self.used] {
            f(signal);
        }
    }
}

mod sealed {
    use super::Signal;

    /// The signals a waiter enlists with: those whose progress could change
    /// what its poll answers (see the module docs). Sealed with the
    /// strategies.
    pub trait Sources {
        /// Calls `f` with each signal.
        fn each(&self, f: &mut dyn FnMut(&Signal));
    }
}
pub(crate) use sealed::Sources;

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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Signal, SWEEPS_REMEMBERED, WAKERS_BEFORE_SWEEP};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Wake, Waker};

    /// A waker that counts the live ones and, woken, queues its number.
    struct Counted {
        n: usize,
        live: Arc<AtomicUsize>,
        woken: Arc<Mutex<Vec<usize>>>,
    }

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.woken.lock().unwrap().push(self.n);
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn counted(n: usize, live: &Arc<AtomicUsize>, woken: &Arc<Mutex<Vec<usize>>>) -> Waker {
        live.fetch_add(1, Ordering::Relaxed);
        Waker::from(Arc::new(Counted {
            n,
            live: Arc::clone(live),
            woken: Arc::clone(woken),
        }))
    }

    /// Wakers of waits dropped while they waited (cancelled futures), on a
    /// signal that never notifies: the list and the sweeps remembered keep
    /// at most a few bounds' worth alive. (A bound that doubled at every
    /// sweep kept 7,800 of 15,000.)
    #[test]
    #[cfg_attr(miri, ignore = "thousands of wakers scanned under a lock: too slow")]
    fn wakers_of_dropped_waits_are_swept_and_freed() {
        let signal = Signal::new();
        let live = Arc::new(AtomicUsize::new(0));
        let woken = Arc::new(Mutex::new(Vec::new()));
        for n in 0..15_000 {
            let waker = counted(n, &live, &woken);
            let (stale, forgotten) = signal.enlist(&waker);
            drop(forgotten);
            for stale in stale {
                stale.wake();
            }
        }
        let kept = live.load(Ordering::Relaxed);
        let bound = (SWEEPS_REMEMBERED + 1) * WAKERS_BEFORE_SWEEP + 1;
        assert!(kept <= bound, "{kept} wakers kept");
    }

    /// More live waiters than the bound, each enlisting again once woken (a
    /// task polled again): the sweeps stop once the bound has grown past
    /// them. With a fixed bound each sweep's waiters set off the next, for
    /// ever.
    #[test]
    #[cfg_attr(miri, ignore = "thousands of wakers scanned under a lock: too slow")]
    fn live_waiters_past_the_bound_do_not_sweep_each_other_for_ever() {
        for waiters in [1_500, 3_000, 6_000] {
            live_waiters_settle(waiters);
        }
    }

    fn live_waiters_settle(waiters: usize) {
        let signal = Signal::new();
        let live = Arc::new(AtomicUsize::new(0));
        let woken = Arc::new(Mutex::new(Vec::new()));
        let wakers: Vec<Waker> = (0..waiters).map(|n| counted(n, &live, &woken)).collect();
        let enlist = |waker: &Waker| {
            let (stale, forgotten) = signal.enlist(waker);
            drop(forgotten);
            for stale in stale {
                stale.wake();
            }
        };
        for waker in &wakers {
            enlist(waker);
        }
        let mut enlists = waiters;
        loop {
            let again = std::mem::take(&mut *woken.lock().unwrap());
            if again.is_empty() {
                break;
            }
            for n in again {
                enlist(&wakers[n]);
                enlists += 1;
            }
            assert!(
                enlists < 20 * waiters,
                "{waiters} waiters, a wake storm: {enlists} enlists"
            );
        }
    }
}
