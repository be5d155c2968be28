//! Creating and opening a bus, and what every handle shares.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytemuck::Pod;

use super::consumer::IpcConsumer;
use super::error::IpcError;
use super::layout::{self, Layout, MAGIC, MULTI, READY, SINGLE, VERSION};
use super::os::{self, Identity};
use super::producer::IpcProducer;
use super::region::Region;
use super::stage::IpcStageBuilder;
use super::table::{self, Lease, ACTIVE};
use crate::loom::{Arc, Ordering};

/// How a consumer waits for events on a shared-memory bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Wait {
    /// Poll with spin hints: the lowest latency, one core burnt per waiter.
    /// Its first 16 looks after a batch are 8 hints apart (looking again at
    /// once would pull the producer's lines away from it at every look),
    /// then it looks at every hint. After 1,024 empty polls in a row it
    /// yields every 64 polls, so spinners on a machine with more of them
    /// than cores leave the producer a core.
    BusySpin,
    /// Poll, yielding the core between polls.
    Yielding,
    /// Poll, sleeping this long between polls (at most
    /// [`Sleeping::MAX_NAP`](crate::Sleeping::MAX_NAP), 100 ms: a close or
    /// a deadline is noticed within that).
    Sleeping(Duration),
    /// Sleep on a futex in the file until a producer wakes it (Linux; a
    /// 50 µs nap elsewhere). Producers make a syscall only while someone
    /// sleeps.
    #[default]
    Blocking,
}

impl From<crate::BusySpin> for Wait {
    fn from(_: crate::BusySpin) -> Self {
        Wait::BusySpin
    }
}
impl From<crate::Yielding> for Wait {
    fn from(_: crate::Yielding) -> Self {
        Wait::Yielding
    }
}
impl From<crate::Sleeping> for Wait {
    fn from(s: crate::Sleeping) -> Self {
        Wait::Sleeping(s.sleep)
    }
}
impl From<crate::Blocking> for Wait {
    fn from(_: crate::Blocking) -> Self {
        Wait::Blocking
    }
}

/// What a shared-memory bus is: the parameters its creator chooses and
/// every opener must match.
#[derive(Debug, Clone)]
pub struct Options {
    capacity: usize,
    multi: bool,
    schema: u64,
    mode: u32,
    consumers: usize,
    producers: usize,
    reclaim_after: Duration,
    hole_timeout: Duration,
    dir: Option<PathBuf>,
}

impl Options {
    /// A bus of `capacity` events (a power of two, at least 2; checked by
    /// `create` and `open`, as every option is): single producer, schema
    /// 0, mode 0600, 16 consumer entries, 8 producer entries, a dead
    /// consumer reclaimed after 1 s, a hole given up after 1 s.
    ///
    /// A multi-producer bus keeps each slot's lap in 48 bits: it carries
    /// about 2^48 × `capacity` events in its life (at 100 M events a
    /// second, 65 days for a ring of 2, 90 years for one of 1,024); past
    /// that, publishes fail with `Closed` (make a new bus). Choose 1,024 or
    /// more for a bus that lives for years.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            multi: false,
            schema: 0,
            mode: 0o600,
            consumers: 16,
            producers: 8,
            reclaim_after: Duration::from_secs(1),
            hole_timeout: Duration::from_secs(1),
            dir: None,
        }
    }

    /// Several producers at once (processes or threads).
    pub fn multi_producer(mut self) -> Self {
        self.multi = true;
        self
    }

    /// The event type's schema id: two programs with the same event size
    /// but different meanings should use different ids.
    pub fn schema(mut self, id: u64) -> Self {
        self.schema = id;
        self
    }

    /// The file's mode when created (default 0600: this user only).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// The consumer table's size (1–64): live consumers at once.
    pub fn consumers(mut self, n: usize) -> Self {
        self.consumers = n;
        self
    }

    /// The producer table's size (1–1024) of a multi producer bus.
    pub fn producers(mut self, n: usize) -> Self {
        self.producers = n;
        self
    }

    /// How long a dead consumer keeps gating (and can be resumed by a
    /// process that joins under its name) before its entry is reclaimed; at
    /// least 1 ms. Nobody watches for deaths: the time counts from when a
    /// process first finds it dead (a producer that finds the ring full, a
    /// join that finds the table full, a consumer after it that it holds),
    /// so that first look still finds it gating (`Full`, `Timeout`,
    /// `TableFull`), and a look `reclaim_after` later reclaims it.
    pub fn reclaim_after(mut self, d: Duration) -> Self {
        self.reclaim_after = d;
        self
    }

    /// How long consumers wait at a claimed but unpublished slot before
    /// they give it up (multi producer); at least 1 ms. A claim the ring has no room for
    /// (its claimant waits for room, say behind a dead consumer not yet
    /// reclaimed) is not given up: the time counts from when there is room.
    pub fn hole_timeout(mut self, d: Duration) -> Self {
        self.hole_timeout = d;
        self
    }

    /// The directory of the bus's file (default `/dev/shm` on Linux, the
    /// temporary directory elsewhere).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    fn path(&self, name: &str) -> Result<PathBuf, IpcError> {
        let ok = !name.is_empty()
            && name.len() <= 200
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !name.starts_with('.');
        if !ok {
            return Err(IpcError::Config {
                reason: format!(
                    "bus name {name:?}: use 1–200 ASCII letters, digits, '.', '_' or '-', not starting with '.'"
                ),
            });
        }
        let dir = self.dir.clone().unwrap_or_else(os::default_dir);
        Ok(dir.join(format!("ringbus.{name}")))
    }

    fn layout<E: Pod>(&self) -> Result<Layout, IpcError> {
        let config = |reason: String| Err(IpcError::Config { reason });
        if self.capacity < 2 || !self.capacity.is_power_of_two() {
            return config(format!(
                "capacity {} is not a power of two of at least 2",
                self.capacity
            ));
        }
        if self.capacity > 1 << 32 {
            return config(format!("capacity {} is above 2^32", self.capacity));
        }
        if self.consumers == 0 || self.consumers > layout::MAX_CONSUMERS {
            return config(format!(
                "{} consumer entries: use 1 to {}",
                self.consumers,
                layout::MAX_CONSUMERS
            ));
        }
        if self.producers == 0 || self.producers > layout::MAX_PRODUCERS {
            return config(format!(
                "{} producer entries: use 1 to {}",
                self.producers,
                layout::MAX_PRODUCERS
            ));
        }
        if self.reclaim_after < Duration::from_millis(1)
            || self.hole_timeout < Duration::from_millis(1)
        {
            return config(format!(
                "reclaim_after {:?} and hole_timeout {:?}: use at least 1 ms",
                self.reclaim_after, self.hole_timeout
            ));
        }
        let (size, align) = (core::mem::size_of::<E>(), core::mem::align_of::<E>());
        if size == 0 {
            return config("a zero-sized event carries nothing between processes".into());
        }
        if align > layout::MAX_ALIGN {
            return config(format!(
                "event alignment {align} is above {}",
                layout::MAX_ALIGN
            ));
        }
        Layout::new(
            self.capacity,
            size,
            align,
            self.consumers,
            self.producers,
            self.multi,
        )
        .ok_or_else(|| IpcError::Config {
            reason: "the bus does not fit the address space".into(),
        })
    }

    /// Creates the bus `name` (its file must not exist) and opens it.
    ///
    /// # Errors
    /// [`IpcError::Config`] for bad options, [`IpcError::AlreadyExists`],
    /// [`IpcError::Io`] when the OS refuses.
    #[cfg(not(loom))]
    pub fn create<E: Pod>(&self, name: &str) -> Result<IpcBus<E>, IpcError> {
        let layout = self.layout::<E>()?;
        let path = self.path(name)?;
        if std::fs::symlink_metadata(&path).is_ok() {
            return Err(IpcError::AlreadyExists { path });
        }
        // Linux: the bus is made in a file without a name, named only once
        // its header is ready (`os::unnamed_file`), so no opener sees it
        // half made and a creator killed meanwhile leaves nothing. Where
        // that fails (no `O_TMPFILE`, or a sandbox that refuses the link)
        // and elsewhere, it is made under its name, and openers wait for
        // its header (`check_header`).
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Some(file) = os::unnamed_file(dir, self.mode) {
            let region = self.make(&file, layout, &path)?;
            let me = Identity::current();
            self.write_header(&region, &layout, me);
            match os::link_unnamed(&file, &path) {
                Ok(()) => return Ok(IpcBus::new(region, me)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(IpcError::AlreadyExists { path });
                }
                // Dropped, the region unmaps the unnamed file and the
                // system frees it.
                Err(_) => drop(region),
            }
        }
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(self.mode)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => IpcError::AlreadyExists { path: path.clone() },
                _ => IpcError::Io {
                    path: path.clone(),
                    op: "create",
                    source: e,
                },
            })?;
        let region = match self.make(&file, layout, &path) {
            Ok(region) => region,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        let me = Identity::current();
        self.write_header(&region, &layout, me);
        Ok(IpcBus::new(region, me))
    }

    /// Gives a new bus file its mode and size and maps it.
    #[cfg(not(loom))]
    fn make(&self, file: &std::fs::File, layout: Layout, path: &Path) -> Result<Region, IpcError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |op, source| IpcError::Io {
            path: path.to_path_buf(),
            op,
            source,
        };
        // The umask may have removed bits of the mode asked for.
        file.set_permissions(std::fs::Permissions::from_mode(self.mode))
            .map_err(|e| io("chmod", e))?;
        file.set_len(layout.len as u64).map_err(|e| io("size", e))?;
        reserve(file, layout.len).map_err(|e| io("reserve", e))?;
        let map = memmap2::MmapOptions::new()
            .map_raw(file)
            .map_err(|e| io("map", e))?;
        Ok(Region::mapped(map, layout, path.to_path_buf()))
    }

    fn write_header(&self, region: &Region, layout: &Layout, me: Identity) {
        let h = region.header();
        h.creator_pid.store(me.pid, Ordering::Relaxed);
        h.creator_start.store(me.start, Ordering::Relaxed);
        h.kind
            .store(if self.multi { MULTI } else { SINGLE }, Ordering::Relaxed);
        h.capacity.store(layout.capacity as u64, Ordering::Relaxed);
        h.event_size
            .store(layout.event_size as u64, Ordering::Relaxed);
        h.event_align
            .store(layout.event_align as u64, Ordering::Relaxed);
        h.schema.store(self.schema, Ordering::Relaxed);
        h.consumers
            .store(layout.consumers as u64, Ordering::Relaxed);
        h.producers
            .store(layout.producers as u64, Ordering::Relaxed);
        // Saturated: a longer time than u64 nanoseconds is "never".
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        h.reclaim_after_ns
            .store(nanos(self.reclaim_after), Ordering::Relaxed);
        h.hole_timeout_ns
            .store(nanos(self.hole_timeout), Ordering::Relaxed);
        h.file_len.store(layout.len as u64, Ordering::Relaxed);
        h.version.store(VERSION, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Relaxed);
        // Release: every field above before the state openers Acquire.
        h.state.store(READY, Ordering::Release);
    }

    /// Opens the bus `name`, checking that it was made for the same event
    /// type (size and alignment), capacity, schema and producer kind. The
    /// table sizes and timeouts are the creator's (this process's own are
    /// only checked to be valid, as for `create`).
    ///
    /// # Errors
    /// [`IpcError::NotFound`], [`IpcError::NotABus`], [`IpcError::Version`],
    /// [`IpcError::Mismatch`] (naming the field and both values),
    /// [`IpcError::Stale`], [`IpcError::Io`] (permission denied, ...).
    #[cfg(not(loom))]
    pub fn open<E: Pod>(&self, name: &str) -> Result<IpcBus<E>, IpcError> {
        let path = self.path(name)?;
        let io = |op, source| IpcError::Io {
            path: path.clone(),
            op,
            source,
        };
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => IpcError::NotFound { path: path.clone() },
                _ => io("open", e),
            })?;
        let not_a_bus = |reason: String| IpcError::NotABus {
            path: path.clone(),
            reason,
        };
        // The creator sizes the file right after making it: give it a second.
        let started = std::time::Instant::now();
        let header_len = core::mem::size_of::<layout::Header>() as u64;
        loop {
            let len = file.metadata().map_err(|e| io("stat", e))?.len();
            if len >= header_len {
                break;
            }
            if started.elapsed() > Duration::from_secs(1) {
                return Err(not_a_bus(format!("{len} bytes, shorter than a header")));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let map = memmap2::MmapOptions::new()
            .map_raw(&file)
            .map_err(|e| io("map", e))?;
        let len = map.len();
        if (len as u64) < header_len {
            return Err(not_a_bus(format!("{len} bytes, shorter than a header")));
        }
        // A first view of the header alone, to read the parameters.
        let probe = Layout {
            len: header_len as usize,
            ..self.layout::<E>()?
        };
        let region = Region::mapped(map, probe, path.clone());
        let layout = self.check_header::<E>(&region, len, started)?;
        let map = region.into_map();
        Ok(IpcBus::new(
            Region::mapped(map, layout, path),
            Identity::current(),
        ))
    }

    #[cfg(not(loom))]
    fn check_header<E: Pod>(
        &self,
        region: &Region,
        len: usize,
        started: std::time::Instant,
    ) -> Result<Layout, IpcError> {
        let path = &region.path;
        let h = region.header();
        loop {
            // Acquire: the creator's fields, stored before READY (Release).
            if h.state.load(Ordering::Acquire) == READY {
                break;
            }
            let creator = Identity {
                pid: h.creator_pid.load(Ordering::Relaxed),
                start: h.creator_start.load(Ordering::Relaxed),
            };
            let magic = h.magic.load(Ordering::Relaxed);
            if magic != 0 && magic != MAGIC {
                return Err(IpcError::NotABus {
                    path: path.clone(),
                    reason: wrong_magic(magic),
                });
            }
            if started.elapsed() > Duration::from_secs(1) {
                return Err(if creator.pid != 0 && !os::alive(creator) {
                    IpcError::Stale {
                        path: path.clone(),
                        creator: creator.pid,
                    }
                } else {
                    IpcError::NotABus {
                        path: path.clone(),
                        reason: "not ready after 1 s".into(),
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let magic = h.magic.load(Ordering::Relaxed);
        if magic != MAGIC {
            return Err(IpcError::NotABus {
                path: path.clone(),
                reason: wrong_magic(magic),
            });
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != VERSION {
            return Err(IpcError::Version {
                path: path.clone(),
                file: version,
                ours: VERSION,
            });
        }
        let mismatch = |field, file: u64, ours: u64| {
            if file == ours {
                Ok(())
            } else {
                Err(IpcError::Mismatch {
                    path: path.clone(),
                    field,
                    file,
                    ours,
                })
            }
        };
        let kind = h.kind.load(Ordering::Relaxed);
        mismatch(
            "producer kind",
            kind as u64,
            if self.multi { MULTI } else { SINGLE } as u64,
        )?;
        mismatch(
            "capacity",
            h.capacity.load(Ordering::Relaxed),
            self.capacity as u64,
        )?;
        mismatch("schema", h.schema.load(Ordering::Relaxed), self.schema)?;
        let consumers = h.consumers.load(Ordering::Relaxed);
        let producers = h.producers.load(Ordering::Relaxed);
        if consumers == 0
            || consumers > layout::MAX_CONSUMERS as u64
            || producers == 0
            || producers > layout::MAX_PRODUCERS as u64
        {
            return Err(IpcError::NotABus {
                path: path.clone(),
                reason: format!("table sizes {consumers} and {producers} are out of bounds"),
            });
        }
        mismatch(
            "event size",
            h.event_size.load(Ordering::Relaxed),
            core::mem::size_of::<E>() as u64,
        )?;
        mismatch(
            "event alignment",
            h.event_align.load(Ordering::Relaxed),
            core::mem::align_of::<E>() as u64,
        )?;
        let mine = Options {
            consumers: consumers as usize,
            producers: producers as usize,
            ..self.clone()
        };
        let layout = mine.layout::<E>()?;
        mismatch(
            "file length",
            h.file_len.load(Ordering::Relaxed),
            layout.len as u64,
        )?;
        mismatch("file length", len as u64, layout.len as u64)?;
        Ok(layout)
    }

    /// Under loom there are no files: models use [`Options::model`].
    ///
    /// # Errors
    /// Always [`IpcError::Config`].
    #[cfg(loom)]
    pub fn create<E: Pod>(&self, _name: &str) -> Result<IpcBus<E>, IpcError> {
        Err(IpcError::Config {
            reason: "no files under loom: use Options::model".into(),
        })
    }

    /// Under loom there are no files: models use [`Options::model`].
    ///
    /// # Errors
    /// Always [`IpcError::Config`].
    #[cfg(loom)]
    pub fn open<E: Pod>(&self, _name: &str) -> Result<IpcBus<E>, IpcError> {
        Err(IpcError::Config {
            reason: "no files under loom: use Options::model".into(),
        })
    }

    /// Under loom: the bus's structures on the heap, for model process `pid`.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn model<E: Pod>(&self, pid: u32) -> IpcBus<E> {
        let layout = self.layout::<E>().expect("a model's options are valid");
        let region = Region::model(layout);
        let me = Identity { pid, start: 0 };
        self.write_header(&region, &layout, me);
        IpcBus::new(region, me)
    }
}

/// Reserves the file's blocks (Linux: `fallocate`), so that a full
/// `/dev/shm` or memory limit is an error of `create`, not a SIGBUS at a
/// publish's first touch of a ring page. A filesystem that cannot reserve
/// is left as it was.
#[cfg(not(loom))]
fn reserve(file: &std::fs::File, len: usize) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let len = libc::off_t::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        loop {
            // SAFETY: a plain syscall on a descriptor this process holds open.
            let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
            if r == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EOPNOTSUPP | libc::ENOSYS) => return Ok(()),
                _ => return Err(e),
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, len);
        Ok(())
    }
}

/// `NotABus`'s reason for a file that does not start as a bus does.
#[cfg(not(loom))]
fn wrong_magic(found: u64) -> String {
    format!("its first 8 bytes are {found:#018x}, a ringbus bus starts with {MAGIC:#018x}")
}

/// Removes the file of bus `name` from the default directory. Processes
/// that have it open keep their mapping; new `open`s fail.
///
/// # Errors
/// [`IpcError::NotFound`] when there is no such bus; [`IpcError::Io`] for
/// any other refusal of the OS.
pub fn remove(name: &str) -> Result<(), IpcError> {
    Options::new(2).remove(name)
}

impl Options {
    /// Removes the file of bus `name` from this options' directory.
    ///
    /// # Errors
    /// As [`remove`].
    pub fn remove(&self, name: &str) -> Result<(), IpcError> {
        let path = self.path(name)?;
        std::fs::remove_file(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                IpcError::NotFound { path }
            } else {
                IpcError::Io {
                    path,
                    op: "remove",
                    source,
                }
            }
        })
    }
}

/// A process's handle on a shared-memory bus: makes producers and
/// consumers. Clones share the mapping. A handle names the process that
/// opened the bus (its pid), so a child made by `fork` must open the bus
/// again: producers and consumers made from the parent's handle would be
/// taken for the parent's, and never seen dead when the child dies.
pub struct IpcBus<E> {
    pub(crate) region: Arc<Region>,
    pub(crate) me: Identity,
    pub(crate) wait: Wait,
    _event: PhantomData<fn() -> E>,
}

/// The error of a join that would close a cycle through `upstream`.
fn cycle(name: &str, after: &[&str], upstream: &str) -> IpcError {
    IpcError::Config {
        reason: format!(
            "consumer {name:?} after {after:?} closes a cycle: {upstream:?} already comes \
             after {name:?} (directly or through others), and consumers on a cycle wait for \
             each other for ever; drop one of the `after` names"
        ),
    }
}

impl<E> Clone for IpcBus<E> {
    fn clone(&self) -> Self {
        Self {
            region: self.region.clone(),
            me: self.me,
            wait: self.wait,
            _event: PhantomData,
        }
    }
}

impl<E> std::fmt::Debug for IpcBus<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpcBus")
            .field("layout", &self.region.layout)
            .field("wait", &self.wait)
            .finish()
    }
}

/// One consumer entry, as [`IpcBus::metrics`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerInfo {
    /// Its name.
    pub name: String,
    /// Its owner's pid; 0 for the place a failed stage left (no owner,
    /// gating until it is resumed or reclaimed, as a dead one does).
    pub pid: u32,
    /// The next sequence it will read.
    pub next: u64,
    /// Whether its process runs.
    pub alive: bool,
    /// Tombstones its place skipped, over every owner that resumed it
    /// (an [`IpcConsumer::tombstones`](super::IpcConsumer::tombstones)
    /// counts its own handle's only).
    pub tombstones: u64,
}

/// A view of the bus's shared state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IpcMetrics {
    /// Single producer: sequences published; multi: sequences claimed.
    pub cursor: u64,
    /// The consumer entries in use.
    pub consumers: Vec<ConsumerInfo>,
    /// Consumer entries reclaimed from dead processes.
    pub reclaimed: u64,
    /// Claims given up (tombstones made).
    pub given_up: u64,
    /// Producer places taken over from dead processes.
    pub producers_replaced: u64,
    /// Whether [`close`](IpcBus::close) was called.
    pub closed: bool,
}

impl<E: Pod> IpcBus<E> {
    fn new(region: Region, me: Identity) -> Self {
        Self {
            region: Arc::new(region),
            me,
            wait: Wait::default(),
            _event: PhantomData,
        }
    }

    /// The wait strategy of the consumers made from this handle from now on.
    pub fn with_wait(mut self, wait: impl Into<Wait>) -> Self {
        self.wait = wait.into();
        self
    }

    /// The bus's capacity.
    pub fn capacity(&self) -> usize {
        self.region.layout.capacity
    }

    /// The bus's file (empty under loom, where there is none).
    pub fn path(&self) -> &Path {
        #[cfg(not(loom))]
        return &self.region.path;
        #[cfg(loom)]
        return Path::new("");
    }

    /// Takes a producer: the single producer's place (also when its last
    /// owner died: this process goes on from the cursor), or one of a
    /// multi producer's entries.
    ///
    /// # Errors
    /// [`IpcError::ProducerBusy`] when a live process is the single
    /// producer; [`IpcError::TableFull`].
    pub fn producer(&self) -> Result<IpcProducer<E>, IpcError> {
        match table::join_producer(&self.region, self.me) {
            Ok((index, lease, _)) => Ok(IpcProducer::new(self.clone(), index, lease)),
            Err(table::ProducerFailure::Busy { pid }) => Err(IpcError::ProducerBusy { pid }),
            Err(table::ProducerFailure::Full) => Err(IpcError::TableFull {
                table: "producer",
                size: self.region.layout.producers,
            }),
        }
    }

    /// Joins as consumer `name` (1–32 bytes): at the present, or, if a
    /// dead consumer had this name and was not reclaimed yet, where it
    /// stopped. On a multi producer bus "the present" is the claim
    /// counter, as for an LMAX gating sequence added at run time: a
    /// `publish` that claimed before the join (one waiting for room in a
    /// full ring, say) is not delivered to this consumer even if it
    /// completes after the join. Join consumers before their producers
    /// start to see everything.
    ///
    /// # Errors
    /// [`IpcError::NameInUse`], [`IpcError::TableFull`],
    /// [`IpcError::Config`] for a bad name.
    pub fn consumer(&self, name: &str) -> Result<IpcConsumer<E>, IpcError> {
        self.consumer_after(name, &[])
    }

    /// Sets up a stage: a thread of this process that joins as consumer
    /// `name` and hands every event to a handler, under a
    /// [`FailurePolicy`](crate::FailurePolicy), until the bus closes or the
    /// stage is halted. It waits with this handle's [`Wait`]
    /// ([`with_wait`](IpcBus::with_wait)).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use ringbus::ipc::{self, Wait};
    ///
    /// let bus = ipc::Options::new(1024).open::<[u64; 2]>("orders")?;
    /// let audit = bus
    ///     .with_wait(Wait::Blocking)
    ///     .stage("audit")
    ///     .after(&["matcher"])
    ///     .spawn(|order: &[u64; 2], seq: ringbus::Sequence, _end_of_batch: bool| {
    ///         println!("{seq}: order {}", order[0]);
    ///     })?;
    /// // ... later, in any process: bus.close(); then, once every
    /// // producer has let go of its place (dropped, or its process died)
    /// // and the stage has passed the last event:
    /// let report = audit.join()?;
    /// println!("audited {} orders", report.handled);
    /// # Ok(()) }
    /// ```
    ///
    /// A stage that fails stops at the failed event and leaves its entry as
    /// a killed process would, so a stage started again under the same
    /// name within the bus's `reclaim_after` resumes at that event (see
    /// [`IpcStage`](super::IpcStage)).
    pub fn stage(&self, name: &str) -> IpcStageBuilder<E> {
        IpcStageBuilder::new(self.clone(), name)
    }

    /// Joins as consumer `name`, reading each event only after every
    /// consumer named in `after` has handled it. Until one of them is first
    /// seen (or seen to have left since this one joined, while no consumer
    /// is joining and its table entry is not taken by another yet), this
    /// one waits where it joined. Start the upstreams first: an
    /// upstream that joins after this one starts at the present, as every
    /// consumer does, so the events published between the two joins reach
    /// this one without it. A dead one keeps holding this
    /// one until it is reclaimed (a process that resumes it goes on from
    /// there); this one reclaims it itself after the bus's `reclaim_after`
    /// if no producer did. One that is gone (it left, or was reclaimed) no
    /// longer holds this one: it goes on without it, and a new consumer
    /// joining under that name holds it again from the new one's position.
    /// One started after its upstream is gone waits for a new one, even
    /// after a [`close`](IpcBus::close): with events published after its
    /// join and an upstream that never joins, its polls do not end with
    /// `Closed` (nothing may pass an upstream that was never seen).
    ///
    /// Consumers that would wait for each other (a cycle: "a" after "b"
    /// and "b" after "a", directly or through others) are refused: the one
    /// whose join closes the cycle gets [`IpcError::Config`] naming it. A
    /// dead consumer (its process killed, or a failed stage) waits for
    /// nobody, so its upstreams count only once a process resumes it: that
    /// resume is the join refused. Of two joining at once, at least one is
    /// refused; one that saw the refused one in the table for that moment
    /// may take it for an upstream that left, and go on without it (as
    /// without any upstream that left). The table keeps each consumer's
    /// first 6 upstream names for this, so a cycle through a consumer with
    /// more is seen through those 6 only.
    ///
    /// # Errors
    /// As for [`consumer`](IpcBus::consumer), and
    /// [`IpcError::Config`] for a cycle or a consumer after itself.
    pub fn consumer_after(&self, name: &str, after: &[&str]) -> Result<IpcConsumer<E>, IpcError> {
        for n in std::iter::once(&name).chain(after) {
            if n.is_empty() || n.len() > 32 || n.contains('\0') {
                return Err(IpcError::Config {
                    reason: format!("consumer name {n:?}: use 1–32 bytes, no NUL"),
                });
            }
        }
        if after.contains(&name) {
            return Err(IpcError::Config {
                reason: format!("consumer {name:?} cannot come after itself"),
            });
        }
        // A cycle seen before the join leaves the table as it was (a dead
        // entry of this name keeps its place and its reclaim timer).
        if let Some(upstream) = table::cycle_through(&self.region, None, name, after) {
            return Err(cycle(name, after, &upstream));
        }
        // Before the join: an upstream there now that leaves before this
        // one's first look shows as come and gone (`came_and_went`).
        let generations = if after.is_empty() {
            Vec::new()
        } else {
            super::consumer::generations(&self.region)
        };
        match table::join_consumer(&self.region, self.me, name) {
            Ok(joined) => {
                let consumer = IpcConsumer::new(self.clone(), name, joined, after, generations);
                // Again with this one's list in the table: a consumer
                // joining at the same time, after this one, may close the
                // cycle (`table::declare_upstreams`).
                let Some(upstream) = table::declare_upstreams(
                    &self.region,
                    consumer.index,
                    consumer.lease,
                    name,
                    after,
                ) else {
                    return Ok(consumer);
                };
                // A resumed entry stays as its dead owner left it (its
                // place and sequence); a fresh one leaves, nameless.
                if consumer.resumed_from().is_some() {
                    consumer.abandon();
                } else {
                    consumer.leave_refused();
                }
                Err(cycle(name, after, &upstream))
            }
            Err(table::JoinFailure::InUse { pid }) => Err(IpcError::NameInUse {
                name: name.into(),
                pid,
            }),
            Err(table::JoinFailure::Full) => Err(IpcError::TableFull {
                table: "consumer",
                size: self.region.layout.consumers,
            }),
        }
    }

    /// Closes the bus for every process: publishes fail with `Closed`, and
    /// consumers end with `Closed` once every producer has let go of its
    /// place (dropped, or its process died) and they passed the last event.
    /// (A claim the close let go of while it waited for room that another
    /// consumer still holds cannot be passed yet: a consumer ends at it,
    /// its `next_sequence()` there; that other consumer passes it as a
    /// tombstone, a hole timeout after it has room.)
    pub fn close(&self) {
        // Release: producers and consumers Acquire it.
        self.region
            .control()
            .stats
            .closed
            .store(1, Ordering::Release);
        self.region
            .control()
            .wake
            .word
            .fetch_add(1, Ordering::SeqCst);
        self.region.futex_wake();
    }

    /// Whether the bus was closed.
    #[inline]
    pub fn is_closed(&self) -> bool {
        // Acquire: see `close`.
        self.region.control().stats.closed.load(Ordering::Acquire) != 0
    }

    /// The bus's shared state now: cursor, consumers (with liveness),
    /// counters.
    pub fn metrics(&self) -> IpcMetrics {
        let r = &self.region;
        let stats = &r.control().stats;
        let consumers = (0..r.layout.consumers)
            .filter_map(|i| {
                let entry = r.consumer(i)?;
                let l = Lease::load(&entry.meta.lease);
                (l.state() == ACTIVE).then(|| ConsumerInfo {
                    name: table::read_name(entry),
                    pid: l.pid(),
                    next: entry.next.load(Ordering::Acquire),
                    alive: r.alive(table::consumer_owner(entry, l)),
                    tombstones: entry.meta.tombstones.load(Ordering::Relaxed),
                })
            })
            .collect();
        IpcMetrics {
            cursor: r.control().cursor.load(Ordering::Acquire),
            consumers,
            reclaimed: stats.reclaimed.load(Ordering::Relaxed),
            given_up: stats.given_up.load(Ordering::Relaxed),
            producers_replaced: stats.producers_replaced.load(Ordering::Relaxed),
            closed: stats.closed.load(Ordering::Relaxed) != 0,
        }
    }

    /// Under loom: the same bus as seen from model process `pid`.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn as_process(&self, pid: u32) -> Self {
        Self {
            me: Identity { pid, start: 0 },
            ..self.clone()
        }
    }

    /// Under loom: model process `pid` dies.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn kill(&self, pid: u32) {
        self.region.kill(pid);
    }
}
