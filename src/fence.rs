//! Asymmetric fences (Linux's membarrier): a light side that costs a
//! compiler fence, for the path taken at every publish, and a heavy side
//! that makes every running thread of the process execute a full barrier,
//! for the path taken once per park.
//!
//! The parking protocol (`parking.rs`) needs a store-load order on both
//! sides: a notifier stores its progress, then loads a `sleeping` flag; a
//! waiter stores the flag, then loads the progress. With a SeqCst fence on
//! each side, one of them sees the other's store. A SeqCst fence (or a
//! read-modify-write, as the flag's swap was) costs a locked instruction
//! and a drained store buffer at every publish, which measured 3.1-3.3x
//! the time of napping per event on the 2P->1C row. With membarrier, the
//! notifier's fence is a compiler fence ([`light`]) and the waiter's is
//! [`heavy`]: the kernel interrupts every CPU running a thread of this
//! process and has it execute a full barrier, and a thread not running has
//! passed a context switch, itself a full barrier. So either the
//! notifier's load comes after that barrier (and sees the flag), or its
//! store came before it (and the waiter's poll sees the progress).
//!
//! The process decides once, at the first bus it builds (`prepare`), and
//! the decision never changes: every thread then uses the same pair. Light
//! fences are used only on x86_64 and aarch64 Linux, where a thread that is
//! not running has passed the scheduler's full barrier (RISC-V kernels
//! before 6.9 register but lack it), and not when the environment variable
//! `RINGBUS_MEMBARRIER` is `0` (for a sandbox that fakes the syscall's
//! success). Otherwise (another OS or architecture, a kernel or seccomp
//! filter without membarrier, loom, Miri) both sides use SeqCst fences.
//!
//! Cost, measured on this 2-core VM (a C loop, 20,000 calls): a membarrier
//! call takes 0.35 us when no other thread of the process runs and 5-8 us
//! when one spins on the other core (an inter-processor interrupt, which
//! also stops that thread for a moment), per park episode.

use crate::loom::{fence, Ordering};

/// Not yet decided.
#[cfg(all(not(loom), target_os = "linux"))]
const UNKNOWN: u8 = 0;
/// Registered: notifiers use compiler fences, waiters membarrier.
#[cfg(all(not(loom), target_os = "linux"))]
const LIGHT: u8 = 1;
/// Membarrier refused: SeqCst fences on both sides.
#[cfg(all(not(loom), target_os = "linux"))]
const FENCED: u8 = 2;

/// The process's choice, made once (`UNKNOWN` to `LIGHT` or `FENCED`, by a
/// compare-exchange, never changed after). A plain std atomic: it orders
/// nothing but itself (a notifier that reads `LIGHT` knows a registration
/// completed, which is all the waiters' membarrier needs).
#[cfg(all(not(loom), target_os = "linux"))]
static STATE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(UNKNOWN);

// Linux's membarrier commands (include/uapi/linux/membarrier.h).
#[cfg(all(not(loom), target_os = "linux"))]
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
#[cfg(all(not(loom), target_os = "linux"))]
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// One membarrier(2) call; true when the kernel did it.
#[cfg(all(not(loom), target_os = "linux"))]
pub(crate) fn membarrier(cmd: libc::c_long) -> bool {
    // SAFETY: membarrier takes no pointers; its commands only issue or
    // register for barriers.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_uint,
            0 as libc::c_int,
        ) == 0
    }
}

/// Whether light fences may be used at all here: x86_64 or aarch64 (a
/// thread that is not running has passed the scheduler's full barrier),
/// not under Miri (it has no membarrier), and not with
/// `RINGBUS_MEMBARRIER=0`. The ipc feature's producers ask too.
#[cfg(all(not(loom), target_os = "linux"))]
pub(crate) fn light_allowed() -> bool {
    cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
        && !cfg!(miri)
        && std::env::var_os("RINGBUS_MEMBARRIER").map_or(true, |v| v != "0")
}

/// Decides, once per process, whether notifiers may use light fences
/// (registering for [`heavy`]'s barriers); later calls answer with the
/// decision. Called when a bus is built, so the first publish pays no
/// syscall.
pub(crate) fn prepare() -> bool {
    #[cfg(all(not(loom), target_os = "linux"))]
    {
        use std::sync::atomic::Ordering::Relaxed;
        match STATE.load(Relaxed) {
            LIGHT => true,
            FENCED => false,
            _ => {
                let mine =
                    if light_allowed() && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) {
                        LIGHT
                    } else {
                        FENCED
                    };
                // The first decision stands: a thread whose registration
                // failed where another's succeeded (a per-thread seccomp
                // filter, a failed allocation) must not make the process
                // fence on one side only. Registration is per process, so
                // once one succeeded every thread's membarrier works (a
                // failure is handled by the caller of `heavy`).
                match STATE.compare_exchange(UNKNOWN, mine, Relaxed, Relaxed) {
                    Ok(_) => mine == LIGHT,
                    Err(decided) => decided == LIGHT,
                }
            }
        }
    }
    #[cfg(any(loom, not(target_os = "linux")))]
    false
}

/// The notifier's side, between storing its progress and loading the
/// `sleeping` flag: a compiler fence once registered, else a SeqCst fence;
/// only a process that has not decided yet takes the cold path.
#[inline(always)]
pub(crate) fn light() {
    #[cfg(all(not(loom), target_os = "linux"))]
    match STATE.load(std::sync::atomic::Ordering::Relaxed) {
        LIGHT => {
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
            return;
        }
        FENCED => {
            full();
            return;
        }
        _ => {}
    }
    light_slow();
}

#[cold]
fn light_slow() {
    #[cfg(all(not(loom), target_os = "linux"))]
    if prepare() {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        return;
    }
    full();
}

/// The notifier's fence when it is not light.
#[inline(always)]
fn full() {
    // Knob `fence`: the notifier's fence left out (loom models of parking
    // then lose wake-ups).
    if crate::weaken::FENCE {
        return;
    }
    // SeqCst: pairs with the waiter's fence in `heavy` (see the module docs).
    fence(Ordering::SeqCst);
}

/// The waiter's side, between setting its `sleeping` flags and polling.
/// False when notifiers may be light and the kernel refused the barrier
/// (it should not, once registered): the caller must then not park for
/// long, as a notifier may miss its flag.
pub(crate) fn heavy() -> bool {
    // SeqCst: pairs with the notifier's fence in `light` when it fences.
    fence(Ordering::SeqCst);
    #[cfg(all(not(loom), target_os = "linux"))]
    if prepare() {
        return membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
    }
    true
}
