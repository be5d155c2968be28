//! How a thread waits when it cannot go on: a stage whose next event is not
//! available yet, or a producer whose ring is full.
//!
//! Every strategy runs the same loop, `poll` until it answers, and differs only
//! in what it does between polls: spin, spin with a CPU hint, yield, sleep, or
//! park. One exception: under [`Sleeping`] and
//! [`Blocking`] a producer that finds the ring full first yields for a while
//! (see [`Blocking`]).
//!
//! The parking protocol behind [`Blocking`] and
//! [`PhasedBackoff::with_blocking`] is in `parking.rs`.

use std::fmt;
use std::time::{Duration, Instant};

use crate::loom;
use crate::parking::{park, Sources};
use crate::parking::{Interrupt, PollResult, Signal};

mod sealed {
    use super::*;

    /// The strategy's machinery; sealed so the parking protocol can evolve.
    pub trait Sealed {
        /// Waits until `poll` returns `Ok(Some(_))` or an interrupt, or until
        /// `deadline` passes.
        fn wait<T>(
            &self,
            sources: &impl Sources,
            deadline: Option<Instant>,
            poll: impl FnMut() -> PollResult<T>,
        ) -> Result<T, Interrupt>;

        /// Called after progress was stored (publish, stage advance).
        #[inline(always)]
        fn notify(&self, signal: &Signal) {
            let _ = signal;
        }

        /// Latency first: a waiting stage that found nothing 64 polls in a
        /// row (an idle bus) prefetches the slot it waits for after every
        /// further failed poll. Only [`BusySpin`] sets it.
        const LATENCY_FIRST: bool = false;

        /// [`Sleeping`] and [`Blocking`]: a producer that finds the ring full
        /// yields for a while before it waits this strategy's way (see
        /// `Bus::wait_for_free`). [`PhasedBackoff`] has yield phases of its
        /// own and does not set it.
        const NAPS: bool = false;

        /// [`Self::NAPS`] of the strategy this value stands for (differs
        /// from the const only for [`AnyStrategy`]).
        #[inline(always)]
        fn naps(&self) -> bool {
            Self::NAPS
        }

        /// The longest a waiter sleeps without looking (a nap nothing
        /// wakes): a shutdown gives stopping stages this much more time
        /// before it calls them stuck.
        #[inline(always)]
        fn longest_nap(&self) -> Duration {
            Duration::ZERO
        }
    }
}

/// The instant `timeout` from now, or `None` (no deadline) when that lies
/// beyond what `Instant` can represent (`Duration::MAX` means "forever").
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Polls with a yield between polls until `poll` answers or `until` passes
/// (then `Err(Timeout)`). The clock is read every 8 yields (a yield costs far
/// more than a spin), and first after the first poll.
pub(crate) fn yield_until<T>(
    until: Instant,
    poll: impl FnMut() -> PollResult<T>,
) -> Result<T, Interrupt> {
    poll_loop(Some(until), 8, poll, |_| loom::yield_now())
}

/// A way of waiting, used by stages when nothing is available and by producers
/// when the ring is full.
///
/// | strategy | CPU while idle | wake-up latency | use when |
/// |---|---|---|---|
/// | [`BusySpin`] | 100% | lowest | one pinned core per busy thread |
/// | [`BusySpinWithHint`] | 100% | low | same, when hyper-threads share the core |
/// | [`Yielding`] | 100%, yields | low | threads ≤ cores, not pinned |
/// | [`Sleeping`] | low | ~50–100 µs | more threads than cores, throughput first |
/// | [`Blocking`] | none (8 yields, then parks) | a futex wake (µs) | no CPU while idle with more threads than cores; parks per edge, so a wake reaches only the threads that can move |
/// | [`PhasedBackoff`] | spin, yield, then block or sleep | low when busy | bursty load |
///
/// The trait is sealed: the strategies above are the ones the bus's parking
/// protocol is verified with.
pub trait WaitStrategy:
    sealed::Sealed + Clone + Default + Send + Sync + fmt::Debug + 'static
{
}

/// Poll; between polls check the deadline every so often. A spin that
/// found nothing [`LONG_SPIN`] polls in a row counts itself among the long
/// spinners of the process; while there are as many of them as cores this
/// process may use, the spinners burn every core and whatever they wait for
/// (a stage, a producer) cannot run, so each yields its core every
/// [`YIELD_EVERY`] polls until its wait ends. Threads pinned to cores of
/// their own never get there (fewer long spinners than cores) and spin as
/// before.
#[inline(always)]
fn spin_loop<T>(
    deadline: Option<Instant>,
    poll: impl FnMut() -> PollResult<T>,
    #[cfg_attr(loom, allow(unused_mut))] mut relax: impl FnMut(u32),
) -> Result<T, Interrupt> {
    #[cfg(not(loom))]
    {
        let mut long = LongSpin { counted: false };
        poll_loop(deadline, 64, poll, move |tries| {
            relax(tries);
            if tries >= LONG_SPIN && tries % YIELD_EVERY == 0 {
                long.check();
            }
        })
    }
    #[cfg(loom)]
    poll_loop(deadline, 64, poll, relax)
}

#[cfg_attr(loom, allow(dead_code))]
/// Polls in a row after which a spin counts as long (a few µs to tens of
/// µs): longer than a busy stage or producer waits for the other side.
const LONG_SPIN: u32 = 1 << 10;
/// While spinners fill every core, a long spin yields once this many polls.
#[cfg_attr(loom, allow(dead_code))]
const YIELD_EVERY: u32 = 64;

/// Threads of this process in a long spin now. A plain std atomic: a count
/// that only tunes when to yield, ordering nothing.
#[cfg(not(loom))]
static LONG_SPINNERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The cores this process may run on, read once. A pinned thread's own
/// mask says one core, so the list the builder read before any stage
/// thread pinned itself counts too (`affinity::available_cores`).
/// Reads and caches [`usable_cores`] (it allocates the first time).
pub(crate) fn warm_core_count() {
    #[cfg(not(loom))]
    usable_cores();
}

#[cfg(not(loom))]
fn usable_cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| {
        let here = std::thread::available_parallelism().map_or(1, usize::from);
        here.max(crate::affinity::available_cores().len())
    })
}

/// One spin's membership in [`LONG_SPINNERS`], left when the wait ends
/// (also by a panic or a timeout).
#[cfg(not(loom))]
struct LongSpin {
    counted: bool,
}

#[cfg(not(loom))]
impl LongSpin {
    #[cold]
    fn check(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.counted {
            self.counted = true;
            LONG_SPINNERS.fetch_add(1, Relaxed);
        }
        if LONG_SPINNERS.load(Relaxed) >= usable_cores() {
            std::thread::yield_now();
        }
    }
}

#[cfg(not(loom))]
impl Drop for LongSpin {
    fn drop(&mut self) {
        if self.counted {
            LONG_SPINNERS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Polls until `poll` answers or `deadline` passes (then `Err(Timeout)`),
/// calling `relax` between polls and reading the clock every
/// `check_clock_every` polls, after the poll.
#[inline(always)]
fn poll_loop<T>(
    deadline: Option<Instant>,
    check_clock_every: u32,
    mut poll: impl FnMut() -> PollResult<T>,
    mut relax: impl FnMut(u32),
) -> Result<T, Interrupt> {
    let mut tries: u32 = 0;
    loop {
        if let Some(value) = poll()? {
            return Ok(value);
        }
        if let Some(deadline) = deadline {
            if tries % check_clock_every == 0 && Instant::now() >= deadline {
                return Err(Interrupt::Timeout);
            }
        }
        relax(tries);
        tries = tries.wrapping_add(1);
    }
}

/// Spins on the condition without pausing: the lowest latency, a whole core
/// per waiting thread. Only for threads pinned to cores of their own.
///
/// Oversubscribed, it yields: a wait that found nothing 1,024 polls in a
/// row counts itself among the process's long spinners, and while there
/// are as many of them as cores the process may use (so the threads they
/// wait for cannot run), each yields its core every 64 polls. With 2
/// producers and a stage on 2 cores (2P→1C) that took busy spin from
/// 0.85× crossbeam-channel's throughput to 3.21×; pinned two-thread rows
/// do not get there and are unchanged (see BENCHMARKS.md). [`BusySpinWithHint`]
/// does the same.
///
/// Latency first: a stage that has waited 64 polls in a row (the bus is
/// idle) prefetches the slot it waits for after every further failed poll,
/// so the slot's line travels with the cursor's when the event comes. A
/// stage keeping up with a busy producer fails only a few polls in a row and
/// does not prefetch, which would stall the producer's stores.
///
/// Measured like for like against the `disruptor` crate's `BusySpin` (2
/// pinned threads, 7 interleaved rounds, 2026-12-01, a fast phase of the
/// machine): single publish 1.10× its throughput, batches of 64 1.08×, idle
/// one-way p50 equal (143 ns), ping-pong round trip p50 0.80× (282 ns
/// against 354 ns). In a slow phase the same day (9 rounds): 0.85×, 0.95×,
/// 1.00× and 1.23×; see BENCHMARKS.md.
#[derive(Debug, Clone, Copy, Default)]
pub struct BusySpin;

impl sealed::Sealed for BusySpin {
    #[inline]
    fn wait<T>(
        &self,
        _sources: &impl Sources,
        deadline: Option<Instant>,
        poll: impl FnMut() -> PollResult<T>,
    ) -> Result<T, Interrupt> {
        // Under loom every spin must be a yield point.
        spin_loop(deadline, poll, |_| {
            #[cfg(loom)]
            loom::yield_now();
        })
    }

    const LATENCY_FIRST: bool = true;
}
impl WaitStrategy for BusySpin {}

/// Like [`BusySpin`], with a spin-loop hint (`pause`) between polls, which saves
/// power and leaves a hyper-thread sibling more of the core.
#[derive(Debug, Clone, Copy, Default)]
pub struct BusySpinWithHint;

impl sealed::Sealed for BusySpinWithHint {
    #[inline]
    fn wait<T>(
        &self,
        _sources: &impl Sources,
        deadline: Option<Instant>,
        poll: impl FnMut() -> PollResult<T>,
    ) -> Result<T, Interrupt> {
        spin_loop(deadline, poll, |_| loom::spin_loop())
    }
}
impl WaitStrategy for BusySpinWithHint {}

/// Spins `spin_tries` times, then yields the CPU between polls. Good when there
/// are no more busy threads than cores but threads are not pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Yielding {
    /// Polls before the first yield.
    pub spin_tries: u32,
}

impl Default for Yielding {
    /// 100 polls before the first yield.
    fn default() -> Self {
        Self::new(100)
    }
}

impl Yielding {
    /// Polls `spin_tries` times before the first yield.
    pub const fn new(spin_tries: u32) -> Self {
        Self { spin_tries }
    }
}

impl sealed::Sealed for Yielding {
    #[inline]
    fn wait<T>(
        &self,
        _sources: &impl Sources,
        deadline: Option<Instant>,
        poll: impl FnMut() -> PollResult<T>,
    ) -> Result<T, Interrupt> {
        let spin_tries = self.spin_tries;
        spin_loop(deadline, poll, |tries| {
            if tries < spin_tries {
                loom::spin_loop();
            } else {
                loom::yield_now();
            }
        })
    }
}
impl WaitStrategy for Yielding {}

/// Spins, then yields, then sleeps `sleep` between polls: little CPU when idle,
/// at the price of tens of microseconds of latency (the OS timer's slack).
///
/// A producer that finds the ring full first yields for up to 200 µs (see
/// [`Blocking`] for why and how that phase adapts), then waits as above:
/// spins, yields and sleeps.
///
/// A nap is at most [`Sleeping::MAX_NAP`] (100 ms), whatever `sleep` asks
/// for: a close, a halt or a deadline is noticed within that, so a huge
/// nap (`Duration::MAX`) cannot hold a shutdown for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sleeping {
    /// Polls with a spin hint before yielding.
    pub spin_tries: u32,
    /// Polls with a yield before sleeping.
    pub yield_tries: u32,
    /// How long each sleep asks for.
    pub sleep: Duration,
}

impl Default for Sleeping {
    /// 100 spins, 100 yields, then 50 µs naps.
    fn default() -> Self {
        Self::new(100, 100, Duration::from_micros(50))
    }
}

impl Sleeping {
    /// The longest nap taken, whatever `sleep` asks for (see [`Sleeping`]).
    pub const MAX_NAP: Duration = Duration::from_millis(100);

    /// `spin_tries` polls with a spin hint, then `yield_tries` polls with a
    /// yield, then polls with a `sleep` nap between them.
    ///
    /// ```
    /// use std::time::Duration;
    /// // What the benchmarks' oversubscribed rows use: no spinning, 1 µs naps
    /// // (the OS makes them ~50 µs).
    /// let nap = ringbus::Sleeping::new(0, 0, Duration::from_micros(1));
    /// assert_eq!(nap.sleep, Duration::from_micros(1));
    /// ```
    pub const fn new(spin_tries: u32, yield_tries: u32, sleep: Duration) -> Self {
        Self {
            spin_tries,
            yield_tries,
            sleep,
        }
    }

    /// The same strategy with `spin_tries` spins.
    pub const fn with_spin_tries(mut self, spin_tries: u32) -> Self {
        self.spin_tries = spin_tries;
        self
    }

    /// The same strategy with `yield_tries` yields.
    pub const fn with_yield_tries(mut self, yield_tries: u32) -> Self {
        self.yield_tries = yield_tries;
        self
    }

    /// The same strategy with `sleep` naps:
    /// `Sleeping::default().with_sleep(Duration::from_micros(20))`.
    pub const fn with_sleep(mut self, sleep: Duration) -> Self {
        self.sleep = sleep;
        self
    }
}

impl sealed::Sealed for Sleeping {
    fn longest_nap(&self) -> Duration {
        self.sleep.min(Sleeping::MAX_NAP)
    }

    #[inline]
    fn wait<T>(
        &self,
        _sources: &impl Sources,
        deadline: Option<Instant>,
        poll: impl FnMut() -> PollResult<T>,
    ) -> Result<T, Interrupt> {
        let Self {
            spin_tries,
            yield_tries,
            sleep,
        } = *self;
        spin_loop(deadline, poll, |tries| {
            if tries < spin_tries {
                loom::spin_loop();
            } else if tries - spin_tries < yield_tries {
                loom::yield_now();
            } else {
                let nap = sleep.min(Self::MAX_NAP);
                let nap = match deadline {
                    Some(d) => nap.min(d.saturating_duration_since(Instant::now())),
                    None => nap,
                };
                loom::sleep(nap);
            }
        })
    }

    const NAPS: bool = true;
}
impl WaitStrategy for Sleeping {}

/// Parks the thread until progress is signalled: no CPU while idle.
///
/// A wait first polls 8 times with a yield between polls (a few
/// microseconds, within any deadline's slack): a thread that parks must be
/// woken, a futex call its notifier pays, while what it waits for often
/// needs only the core it holds. Then it parks *per edge*: on the signals
/// of exactly what it waits for. A stage waits on the publishes or on its
/// upstream stages, a producer facing a full ring on the last stages and
/// subscribers (a multi producer on the publishes too). So a publish wakes only the stages reading the ring, and a
/// stage's progress only the stages after it and the producers. A notifier
/// pays for a wake-up (a lock and a futex call per parked waiter) only
/// while someone is parked on its signal; otherwise a compiler fence and a
/// load of a flag nobody writes meanwhile, on a line of its own (on x86_64
/// and aarch64 Linux; the thread going to park pays a membarrier call
/// instead, a few microseconds; elsewhere both sides pay a full fence).
///
/// # A producer facing a full ring yields first
///
/// With this strategy and with [`Sleeping`], a producer that finds the ring
/// full polls with a yield between polls before it parks or sleeps. The
/// stages it waits on have a whole ring of work, so room usually comes back
/// within microseconds. A sleep lasts tens of microseconds at least, and a
/// parked producer must be woken, so either would leave it idle after room
/// came back; a yield instead hands its core to the stages while they work.
///
/// The yield phase adapts to the bus. It starts at 200 µs, is halved (down
/// to 8 µs) after a phase that found no room, and doubled (up to 200 µs) after
/// one that did. So a bus whose stages really are slow soon falls back to
/// sleeping or parking almost at once.
///
/// Measured on a 2-core machine with 4 threads (1P→3 stages), fast phases of
/// the shared machine: 1.10–1.18× the events per second of sleeping at once
/// under `Sleeping` with 1 µs naps (0.91–1.04× in its slow phases), and
/// 0.96–1.09× under `Blocking` (measured before parking per edge).
#[derive(Debug, Clone, Copy, Default)]
pub struct Blocking;

/// Yields of [`Blocking`] before it parks. Measured on 2 cores with 4
/// threads (1P→3 stages, parking per edge, 3-round runs): 0 yields 58 and
/// 121 M events/s, 4 yields 33 and 110 M, 32 yields 110 and 133 M.
const YIELDS_BEFORE_PARKING: u32 = 8;

impl sealed::Sealed for Blocking {
    #[inline]
    fn wait<T>(
        &self,
        sources: &impl Sources,
        deadline: Option<Instant>,
        mut poll: impl FnMut() -> PollResult<T>,
    ) -> Result<T, Interrupt> {
        if let Some(value) = poll()? {
            return Ok(value);
        }
        // A few yields before parking: a thread that parks must be woken
        // (a futex call the notifier pays), while the thread it waits for
        // often needs only the core this one holds. Not under loom, whose
        // models check the parking protocol (a yield there is no time).
        let mut yields = if cfg!(loom) { 0 } else { YIELDS_BEFORE_PARKING };
        while yields > 0 {
            yields -= 1;
            loom::yield_now();
            if let Some(value) = poll()? {
                return Ok(value);
            }
        }
        park(sources, deadline, poll)
    }

    #[inline]
    fn notify(&self, signal: &Signal) {
        signal.notify_if_parked();
    }

    const NAPS: bool = true;
}
impl WaitStrategy for Blocking {}

/// A wait strategy async tasks can wait with (feature `async`): one whose
/// producers and stages signal their progress, so that an awaiting task is
/// woken instead of polled. [`Blocking`] is one: a task registers its waker
/// where a thread would park, and a publisher pays for waking it only while
/// someone waits (the same fence and load as otherwise). Spinning or
/// napping strategies signal nothing, so they are not.
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub trait AsyncWait: WaitStrategy {}

#[cfg(feature = "async")]
impl AsyncWait for Blocking {}

/// What [`PhasedBackoff`] does once spinning and yielding ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// Park as [`Blocking`] does.
    Blocking,
    /// Sleep this long between polls (at most [`Sleeping::MAX_NAP`]), as
    /// [`Sleeping`] does.
    Sleep(Duration),
}

impl Fallback {
    /// The old name of [`Fallback::Blocking`].
    #[deprecated(note = "renamed `Fallback::Blocking`")]
    #[doc(hidden)]
    #[allow(non_upper_case_globals)]
    pub const Block: Fallback = Fallback::Blocking;
}

/// Spins for `spin`, yields until `spin + yield_for`, then falls back to
/// blocking or sleeping: low latency under load, no CPU when idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PhasedBackoff {
    /// How long to spin before yielding.
    pub spin: Duration,
    /// How long to yield before falling back.
    pub yield_for: Duration,
    /// What to do after that.
    pub fallback: Fallback,
}

impl Default for PhasedBackoff {
    /// Spin 10 µs, yield 100 µs, then block.
    fn default() -> Self {
        Self::with_blocking(Duration::from_micros(10), Duration::from_micros(100))
    }
}

impl PhasedBackoff {
    /// Spin for `spin`, yield until `spin + yield_for`, then `fallback`.
    pub const fn new(spin: Duration, yield_for: Duration, fallback: Fallback) -> Self {
        Self {
            spin,
            yield_for,
            fallback,
        }
    }

    /// Spin, yield, then park as [`Blocking`] does.
    pub const fn with_blocking(spin: Duration, yield_for: Duration) -> Self {
        Self::new(spin, yield_for, Fallback::Blocking)
    }

    /// The old name of [`with_blocking`](Self::with_blocking).
    #[deprecated(note = "renamed `with_blocking` (blocking is spelled `Blocking` everywhere)")]
    #[doc(hidden)]
    pub const fn with_lock(spin: Duration, yield_for: Duration) -> Self {
        Self::with_blocking(spin, yield_for)
    }

    /// Spin, yield, then sleep 50 µs between polls as [`Sleeping`] does.
    pub const fn with_sleep(spin: Duration, yield_for: Duration) -> Self {
        Self::new(spin, yield_for, Fallback::Sleep(Duration::from_micros(50)))
    }
}

impl sealed::Sealed for PhasedBackoff {
    fn longest_nap(&self) -> Duration {
        match self.fallback {
            Fallback::Sleep(nap) => nap.min(Sleeping::MAX_NAP),
            Fallback::Blocking => Duration::ZERO,
        }
    }

    fn wait<T>(
        &self,
        sources: &impl Sources,
        deadline: Option<Instant>,
        mut poll: impl FnMut() -> PollResult<T>,
    ) -> Result<T, Interrupt> {
        const CHECK_CLOCK_EVERY: u32 = 64;
        let start = Instant::now();
        // Saturated: `Duration::MAX` phases mean "no end" (an `Instant`
        // that far out does not exist).
        let yield_until = self
            .spin
            .checked_add(self.yield_for)
            .and_then(|d| start.checked_add(d));
        let mut tries: u32 = 0;
        let mut now = start;
        loop {
            if let Some(value) = poll()? {
                return Ok(value);
            }
            if tries % CHECK_CLOCK_EVERY == 0 {
                now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Err(Interrupt::Timeout);
                }
                if yield_until.is_some_and(|u| now >= u) {
                    break;
                }
            }
            if now - start < self.spin {
                loom::spin_loop();
            } else {
                loom::yield_now();
            }
            tries = tries.wrapping_add(1);
        }
        match self.fallback {
            Fallback::Blocking => park(sources, deadline, poll),
            Fallback::Sleep(sleep) => Sleeping::new(0, 0, sleep).wait(sources, deadline, poll),
        }
    }

    #[inline]
    fn notify(&self, signal: &Signal) {
        if self.fallback == Fallback::Blocking {
            signal.notify_if_parked();
        }
    }
}
impl WaitStrategy for PhasedBackoff {}

/// One of the strategies above, chosen at run time (from a configuration
/// file or a command line) rather than by type.
///
/// Each wait and notification matches on the variant first, a predictable
/// branch. What [`BusySpin`] does only because its type says so at compile
/// time (a stage prefetching the slot it
/// waits for) is not done under `AnyStrategy::BusySpin`; use the type itself
/// for the lowest latency.
///
/// ```
/// use ringbus::{AnyStrategy, Blocking};
/// let strategy: AnyStrategy = Blocking.into();
/// let producer = ringbus::single_producer(64, || 0u64, strategy).build();
/// # drop(producer);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnyStrategy {
    /// [`BusySpin`].
    BusySpin,
    /// [`BusySpinWithHint`].
    BusySpinWithHint,
    /// [`Yielding`].
    Yielding(Yielding),
    /// [`Sleeping`].
    Sleeping(Sleeping),
    /// [`Blocking`].
    Blocking,
    /// [`PhasedBackoff`].
    PhasedBackoff(PhasedBackoff),
}

impl Default for AnyStrategy {
    /// [`Blocking`]: no CPU while idle, safe on any machine.
    fn default() -> Self {
        Self::Blocking
    }
}

macro_rules! any_strategy_from {
    ($($unit:ident),* ; $($data:ident),*) => {
        $(impl From<$unit> for AnyStrategy {
            fn from(_: $unit) -> Self {
                Self::$unit
            }
        })*
        $(impl From<$data> for AnyStrategy {
            fn from(s: $data) -> Self {
                Self::$data(s)
            }
        })*
    };
}
any_strategy_from!(BusySpin, BusySpinWithHint, Blocking; Yielding, Sleeping, PhasedBackoff);

/// Calls `$body` with `$s` bound to the strategy value of `$any`.
macro_rules! dispatch {
    ($any:expr, $s:ident => $body:expr) => {
        match $any {
            AnyStrategy::BusySpin => {
                let $s = &BusySpin;
                $body
            }
            AnyStrategy::BusySpinWithHint => {
                let $s = &BusySpinWithHint;
                $body
            }
            AnyStrategy::Yielding($s) => $body,
            AnyStrategy::Sleeping($s) => $body,
            AnyStrategy::Blocking => {
                let $s = &Blocking;
                $body
            }
            AnyStrategy::PhasedBackoff($s) => $body,
        }
    };
}

impl sealed::Sealed for AnyStrategy {
    #[inline]
    fn wait<T>(
        &self,
        sources: &impl Sources,
        deadline: Option<Instant>,
        poll: impl FnMut() -> PollResult<T>,
    ) -> Result<T, Interrupt> {
        dispatch!(self, s => s.wait(sources, deadline, poll))
    }

    #[inline]
    fn notify(&self, signal: &Signal) {
        dispatch!(self, s => s.notify(signal))
    }

    #[inline]
    fn naps(&self) -> bool {
        matches!(self, Self::Sleeping(_) | Self::Blocking)
    }

    fn longest_nap(&self) -> Duration {
        dispatch!(self, s => s.longest_nap())
    }
}
impl WaitStrategy for AnyStrategy {}

#[cfg(test)]
mod tests {
    use super::sealed::Sealed;
    use super::*;

    /// The tests that spin long take turns, so the count of long spinners
    /// is theirs alone.
    static SPINNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// A long spin counts itself while it lasts and leaves the count when
    /// its wait ends: by an answer, a timeout or a panic in the poll.
    #[test]
    #[cfg(not(any(miri, loom)))]
    fn a_long_spin_leaves_the_count_however_it_ends() {
        use std::sync::atomic::Ordering::Relaxed;
        let _turn = SPINNING.lock().unwrap_or_else(|e| e.into_inner());
        let signal = Signal::new();
        let mut polls = 0u32;
        let seen = BusySpin.wait(&signal, None, || {
            polls += 1;
            Ok((polls == 4 * LONG_SPIN).then(|| LONG_SPINNERS.load(Relaxed)))
        });
        assert!(seen.unwrap() >= 1, "counted while spinning long");
        let deadline = Instant::now() + Duration::from_millis(20);
        let r: Result<(), _> = BusySpinWithHint.wait(&signal, Some(deadline), || Ok(None));
        assert_eq!(r, Err(Interrupt::Timeout));
        let mut polls = 0u32;
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: Result<(), _> = BusySpin.wait(&signal, None, || {
                polls += 1;
                assert!(polls < 4 * LONG_SPIN, "a poll that panics");
                Ok(None)
            });
        }));
        assert!(panicked.is_err());
        assert_eq!(
            LONG_SPINNERS.load(Relaxed),
            0,
            "every long spin left the count"
        );
    }

    fn times_out<W: WaitStrategy>(strategy: W) {
        let signal = Signal::new();
        let deadline = Instant::now() + Duration::from_millis(5);
        let r: Result<(), _> = strategy.wait(&signal, Some(deadline), || Ok(None));
        assert_eq!(r, Err(Interrupt::Timeout));
        assert!(Instant::now() >= deadline);
    }

    #[test]
    fn every_strategy_honours_its_deadline() {
        let _turn = SPINNING.lock().unwrap_or_else(|e| e.into_inner());
        times_out(BusySpin);
        times_out(BusySpinWithHint);
        times_out(Yielding::default());
        times_out(Sleeping::default());
        times_out(Blocking);
        times_out(PhasedBackoff::default());
        for any in [
            AnyStrategy::BusySpin,
            AnyStrategy::BusySpinWithHint,
            Yielding::default().into(),
            Sleeping::default().into(),
            AnyStrategy::Blocking,
            PhasedBackoff::default().into(),
        ] {
            times_out(any);
        }
        // The run-time choice naps (a full ring's yield phase) exactly when
        // the strategy it stands for does.
        assert_eq!(AnyStrategy::BusySpin.naps(), BusySpin::NAPS);
        assert_eq!(AnyStrategy::BusySpinWithHint.naps(), BusySpinWithHint::NAPS);
        assert_eq!(
            AnyStrategy::from(Yielding::default()).naps(),
            Yielding::NAPS
        );
        assert_eq!(
            AnyStrategy::from(Sleeping::default()).naps(),
            Sleeping::NAPS
        );
        assert_eq!(AnyStrategy::Blocking.naps(), Blocking::NAPS);
        assert_eq!(
            AnyStrategy::from(PhasedBackoff::default()).naps(),
            PhasedBackoff::NAPS
        );
        times_out(PhasedBackoff::with_sleep(
            Duration::from_micros(1),
            Duration::from_micros(1),
        ));
    }

    #[test]
    fn interrupt_ends_the_wait() {
        let signal = Signal::new();
        let r: Result<(), _> = Blocking.wait(&signal, None, || Err(Interrupt::Halted));
        assert_eq!(r, Err(Interrupt::Halted));
    }
}
