//! What the operating system tells about processes, time and sleeping on a
//! shared word: process identity and liveness, a clock every process of
//! the host shares, futex wait and wake (Linux; elsewhere a short nap),
//! and asymmetric memory barriers (Linux's membarrier) for the publish and
//! sleep handshake.
//!
//! Under loom there are no processes and no clock: a model names its
//! "processes" by number, kills them by setting a flag in the region, every
//! timeout has passed, and the futex is a mutex and condition variable in
//! the region that keeps the futex's one promise (a wait on a word that
//! changed returns; a wake after the change reaches every waiter).

use crate::loom::AtomicU32;
#[cfg(all(not(loom), not(target_os = "linux")))]
use crate::loom::Ordering;
#[cfg(not(loom))]
use std::time::Duration;

/// A process: its pid and its start time (in clock ticks since boot, from
/// `/proc/<pid>/stat` on Linux; 0 elsewhere), so a reused pid is not taken
/// for the process that died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) pid: u32,
    pub(crate) start: u64,
}

impl Identity {
    /// This process.
    #[cfg(not(loom))]
    pub(crate) fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start: stat(pid).map_or(0, |s| s.start),
        }
    }
}

#[cfg(not(loom))]
struct Stat {
    start: u64,
    zombie: bool,
}

/// Fields 3 (state) and 22 (start time) of `/proc/<pid>/stat`; the command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// from its last `)`.
#[cfg(all(not(loom), target_os = "linux"))]
fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some(Stat {
        start,
        zombie: state == "Z" || state == "X",
    })
}

#[cfg(all(not(loom), not(target_os = "linux")))]
fn stat(_pid: u32) -> Option<Stat> {
    None
}

/// Whether the process `who` still runs. A zombie (killed, not yet reaped
/// by its parent) is dead; so is a live process under a reused pid.
#[cfg(not(loom))]
pub(crate) fn alive(who: Identity) -> bool {
    if who.pid == 0 || who.pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the pid
    // exists and may be signalled.
    let r = unsafe { libc::kill(who.pid as libc::pid_t, 0) };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    match stat(who.pid) {
        Some(s) => !s.zombie && (who.start == 0 || s.start == who.start),
        // kill found it, but /proc does not show it (not Linux, hidepid, or
        // another pid namespace): alive, so a live process is never taken
        // for dead. A process that ended since kill is seen at the next look.
        None => true,
    }
}

/// Milliseconds of a clock all processes of the host share (monotonic since
/// boot), never 0.
#[cfg(not(loom))]
pub(crate) fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000).max(1)
}

/// Under loom every timeout has passed at once.
#[cfg(loom)]
pub(crate) fn now_ms() -> u64 {
    u64::MAX >> 21
}

/// Nanoseconds as whole milliseconds, rounded up (a timeout is never cut).
pub(crate) fn ms_up(ns: u64) -> u64 {
    ns / 1_000_000 + u64::from(ns % 1_000_000 != 0)
}

/// A look made at most once a millisecond (every look under loom, whose
/// models must not take paths that depend on the clock): whether one is
/// due now; if so, `last` notes it.
pub(crate) fn due_every_ms(last: &mut Option<std::time::Instant>) -> bool {
    let due =
        cfg!(loom) || last.map_or(true, |t| t.elapsed() >= std::time::Duration::from_millis(1));
    if due {
        *last = Some(std::time::Instant::now());
    }
    due
}

/// Sleeps while `word` holds `seen`, at most `timeout`; returns early on a
/// wake, a change of the word or a signal (callers recheck).
#[cfg(all(not(loom), target_os = "linux"))]
pub(crate) fn futex_wait(word: &AtomicU32, seen: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT on the word's address, which stays mapped while
    // `word` is borrowed; not FUTEX_PRIVATE: other processes wake it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            seen,
            &ts as *const libc::timespec,
        )
    };
}

/// Wakes every process sleeping on `word`.
#[cfg(all(not(loom), target_os = "linux"))]
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on the word's address, which stays mapped while
    // `word` is borrowed.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

// Linux's membarrier commands (include/uapi/linux/membarrier.h).
#[cfg(all(not(loom), target_os = "linux"))]
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_long = 1 << 1;
#[cfg(all(not(loom), target_os = "linux"))]
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_long = 1 << 2;

/// Asymmetric fences, the producer's light side: registers this process
/// for [`heavy_fence`]'s barriers (once; later calls answer from the first).
/// True when it did: a publish may then order its store before its load of
/// the sleepers with a compiler fence alone, because a consumer going to
/// sleep runs [`heavy_fence`], which makes every running thread of every
/// registered process execute a full barrier. Either this producer's load
/// comes after that barrier and sees the sleeper's bit, or its store came
/// before it and the sleeper's recheck sees the publish; a producer that
/// is not running has passed a context switch, a full barrier. False
/// (another OS or architecture, a kernel or seccomp filter without
/// membarrier, `RINGBUS_MEMBARRIER=0`): the producer keeps its SeqCst fence. (That a producer registered after a
/// consumer went to sleep is covered too rests on the kernel's barrier at
/// registration, which membarrier(2) implies but does not spell out.)
#[cfg(all(not(loom), target_os = "linux"))]
pub(crate) fn light_fences() -> bool {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // The same limits as in one process (`fence::light_allowed`).
    *REGISTERED.get_or_init(|| {
        crate::fence::light_allowed()
            && crate::fence::membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)
    })
}

/// The sleeper's heavy side of [`light_fences`]: a full barrier on every
/// running thread of the registered processes (inter-processor interrupts,
/// microseconds, more under virtualisation, and the kernel serialises
/// such calls host-wide), paid once per sleep. False when the kernel
/// refused: the caller must not sleep long if a light producer exists.
#[cfg(all(not(loom), target_os = "linux"))]
pub(crate) fn heavy_fence() -> bool {
    crate::fence::membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)
}

/// No membarrier (other unix, or loom, whose models keep the producer's
/// SeqCst fence): producers fence.
#[cfg(any(loom, not(target_os = "linux")))]
pub(crate) fn light_fences() -> bool {
    false
}

/// No membarrier: nothing to do, as no producer is light.
#[cfg(any(loom, not(target_os = "linux")))]
pub(crate) fn heavy_fence() -> bool {
    true
}

/// No futex: a short nap stands for the wait (other unix).
#[cfg(all(not(loom), not(target_os = "linux")))]
pub(crate) fn futex_wait(word: &AtomicU32, seen: u32, timeout: Duration) {
    if word.load(Ordering::Relaxed) == seen {
        std::thread::sleep(timeout.min(Duration::from_micros(50)));
    }
}

/// No futex: sleepers nap and look again (other unix).
#[cfg(all(not(loom), not(target_os = "linux")))]
pub(crate) fn futex_wake(_word: &AtomicU32) {}

/// A futex for loom models: the check of the word and the sleep are one
/// step under the mutex, as in the kernel.
#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct ModelFutex {
    lock: loom::sync::Mutex<()>,
    cond: loom::sync::Condvar,
}

#[cfg(loom)]
impl ModelFutex {
    pub(crate) fn wait(&self, word: &AtomicU32, seen: u32) {
        let guard = crate::loom::lock(&self.lock);
        if word.load(crate::loom::Ordering::SeqCst) == seen {
            let _guard = self.cond.wait(guard);
        }
    }

    pub(crate) fn wake(&self) {
        let _guard = crate::loom::lock(&self.lock);
        self.cond.notify_all();
    }
}

/// `/dev/shm/ringbus.<name>` on Linux (memory, never written to disk), the
/// temporary directory elsewhere.
pub(crate) fn default_dir() -> std::path::PathBuf {
    if cfg!(target_os = "linux") {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    }
}

/// A file without a name in `dir` (`O_TMPFILE`), with `mode`: the bus is
/// made in it and [`link_unnamed`] gives it its name once its header is
/// ready, so no process ever opens a bus being made, and a creator killed
/// before that leaves nothing behind. `None` where the filesystem or the
/// kernel has no `O_TMPFILE`, or without `/proc` (the caller makes the
/// file under its name).
#[cfg(all(not(loom), target_os = "linux"))]
pub(crate) fn unnamed_file(dir: &std::path::Path, mode: u32) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if !std::path::Path::new("/proc/self/fd").is_dir() {
        return None; // `link_unnamed` needs it
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(mode)
        .open(dir)
        .ok()
}

/// No `O_TMPFILE`: the caller makes the file under its name.
#[cfg(all(not(loom), not(target_os = "linux")))]
pub(crate) fn unnamed_file(_dir: &std::path::Path, _mode: u32) -> Option<std::fs::File> {
    None
}

/// Names a file from [`unnamed_file`] `path`, atomically; fails with
/// `AlreadyExists` when `path` exists (nothing is replaced).
#[cfg(all(not(loom), target_os = "linux"))]
pub(crate) fn link_unnamed(file: &std::fs::File, path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    let invalid = |_| std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let from =
        std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(invalid)?;
    let to = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(invalid)?;
    // SAFETY: two NUL-terminated paths that outlive the call; linkat reads
    // them and writes nothing of ours. `/proc/self/fd/N` with
    // AT_SYMLINK_FOLLOW links the open file itself (no privilege needed,
    // unlike AT_EMPTY_PATH).
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Never called: [`unnamed_file`] gives no file here.
#[cfg(all(not(loom), not(target_os = "linux")))]
pub(crate) fn link_unnamed(_file: &std::fs::File, _path: &std::path::Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}
