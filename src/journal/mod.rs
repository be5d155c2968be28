//! A durable journal: every event appended to segment files before the
//! stages after it see it, and replayed into a fresh bus after a restart
//! (LMAX's journaling stage, for event sourcing). Feature `journal`.
//!
//! ```text
//! producers ─> ring ─> journal (append, fsync per batch) ─> durable cursor ─> business stages
//!                         │
//!                         └─> dir/00000000000000000000.rbj, 00000000000000065536.rbj, …
//! restart:  Journal::open(dir) ─> replay_into(&mut producer) ─> live traffic continues the journal's numbering
//! ```
//!
//! The journal stage is an ordinary stage ([`Builder::journal_to`](crate::Builder::journal_to)):
//! stages added after it with `and_then()` see an event only once the
//! journal made it durable, because the stage's sequence (which their
//! barrier reads) moves past a batch only after the batch was written and
//! synced. What "durable" means is the [`SyncPolicy`]:
//!
//! | policy | an event the stages after the journal saw survives | cost |
//! |---|---|---|
//! | [`EveryBatch`](SyncPolicy::EveryBatch) (default) | a process crash, a kernel crash, a power cut | one `fdatasync` per batch |
//! | [`Interval(d)`](SyncPolicy::Interval) | a process crash; a power cut loses at most about the last `2d` (see the policy) | one `fdatasync` per `d` at most |
//! | [`Never`](SyncPolicy::Never) | a process crash (the kernel holds the data) | none |
//!
//! An event published but not yet released by the journal stage when the
//! process dies may or may not be in the journal; nothing after the journal
//! acted on it, so replaying it (at least once) is safe. A record that a
//! crash cut short is found and cut off by [`Journal::open`]; a damaged
//! record in the middle is an error naming the file and the offset, and
//! every record before it stays readable.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ringbus::journal::{Journal, JournalOptions, Postcard};
//! use ringbus::{Blocking, Sequence};
//!
//! #[derive(Default, serde::Serialize, serde::Deserialize)]
//! struct Deposit { account: u32, cents: u64 }
//!
//! let dir = std::env::temp_dir().join(format!("ringbus-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! for run in 0..2 {
//!     let journal = Journal::open(&dir)?;
//!     let mut balance = 0u64;
//!     let mut producer = ringbus::single_producer(1024, Deposit::default, Blocking)
//!         .journal_to(journal.writer(Postcard, JournalOptions::default())?)
//!         .and_then()
//!         .handle_events_with(move |d: &Deposit, _: Sequence, _: bool| balance += d.cents)
//!         .build();
//!     // Rebuild the state of earlier runs, then take live traffic.
//!     let replayed = journal.replay_into(&mut producer, Postcard, journal.first_sequence())?;
//!     assert_eq!(replayed.events, run * 100);
//!     for cents in 1..=100 {
//!         producer.publish(|d| *d = Deposit { account: 7, cents })?;
//!     }
//!     producer.shutdown()?;
//! }
//! let journal = Journal::open(&dir)?;
//! assert_eq!(journal.next_sequence(), 200);
//! let total: u64 = journal
//!     .events::<Deposit, _>(0, Postcard)?
//!     .map(|r| r.map(|(_, d)| d.cents))
//!     .sum::<Result<u64, _>>()?;
//! assert_eq!(total, 2 * 5050);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

mod error;
mod format;
mod options;
mod records;
mod replay;
mod stats;
mod syncer;
mod writer;

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// The codec, shared with the NATS bridge: [`crate::codec`].
pub use crate::codec::{Codec, FnCodec, Postcard};
pub use error::JournalError;
pub use options::{JournalOptions, SyncPolicy};
pub use records::{Events, Record, Records};
pub use replay::Replayed;
pub use stats::JournalStats;
pub use writer::JournalWriter;

use crate::sequence::Sequence;
use format::{parse_segment_name, SegmentReader, Step};
use stats::Stats;

/// Neither a replay nor a live event yet.
pub(crate) const IDLE: u8 = 0;
/// `replay_into` publishes into the journal stage's bus.
pub(crate) const REPLAYING: u8 = 1;
/// The journal stage saw a live event first: no replay may follow.
pub(crate) const LIVE: u8 = 2;
/// The replay returned: events past `published` are live.
pub(crate) const REPLAYED: u8 = 3;

/// What the replay told the writer (for the bus the writer is bound to).
#[derive(Default)]
struct ReplayState {
    /// Bus sequences below this were published by the replay, and checked
    /// to be its own: records the journal already holds. Raised only
    /// after the replay saw that the sequences it got were the ones it
    /// expected.
    published: AtomicI64,
    /// `IDLE` -> `REPLAYING` -> `REPLAYED` (the replay), or `IDLE` ->
    /// `LIVE` (the writer's first live event); whichever moves first wins.
    state: AtomicU8,
    /// Another handle published during the replay (the replay saw it).
    interleaved: AtomicBool,
}

/// State shared by a [`Journal`] and its writer.
struct Inner {
    dir: PathBuf,
    /// The bus of the journal stage (`Builder::journal_to`); 0 before.
    bound_bus: AtomicU64,
    /// The directory's lock (`None` for a read-only journal); released
    /// when the journal and its writer are gone.
    _lock: Option<fs::File>,
    /// The first sequence held, raised by `delete_before`.
    first: AtomicI64,
    /// One `delete_before` at a time: each writes the `FIRST` mark before
    /// it removes anything, and the mark only rises.
    deleting: std::sync::Mutex<()>,
    /// The last journal sequence made durable by the writer.
    durable: AtomicI64,
    replay: ReplayState,
    writer_taken: AtomicBool,
    stats: Stats,
}

/// A torn tail [`Journal::open`] cut off (or an empty last segment it
/// removed, or gave its header when it was the only one).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// The segment.
    pub file: PathBuf,
    /// Where the torn record began; the file now ends there (for an empty
    /// segment: 0, the file removed, or holding just its header).
    pub offset: u64,
    /// Bytes removed.
    pub bytes_cut: u64,
}

/// A journal directory: opened (and recovered) with [`Journal::open`], read
/// with [`records`](Journal::records) and [`events`](Journal::events),
/// replayed into a bus with [`replay_into`](Journal::replay_into), written by
/// the stage made with [`writer`](Journal::writer).
pub struct Journal {
    inner: Arc<Inner>,
    next: Sequence,
    last_segment: Option<(PathBuf, u64, u64)>,
    damage: Option<(PathBuf, u64, String)>,
    recovered: Option<Recovery>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.inner.dir)
            .field("next", &self.next)
            .field("recovered", &self.recovered)
            .finish_non_exhaustive()
    }
}

/// Takes the directory's lock: `flock(LOCK_EX | LOCK_NB)` on `dir/LOCK`,
/// held until the returned file closes (also when the process dies).
fn lock(dir: &Path) -> Result<fs::File, JournalError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| JournalError::io(&path, "open the lock file", e))?;
    // SAFETY: a plain syscall on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.kind() == io::ErrorKind::WouldBlock {
            JournalError::Locked {
                dir: dir.to_owned(),
            }
        } else {
            JournalError::io(&path, "lock", e)
        });
    }
    Ok(file)
}

/// The file that keeps the first sequence the journal holds (as
/// `delete_before` left it), so that segments removed by other means are
/// not taken for deleted ones: 8 bytes little-endian and their CRC32C.
const FIRST_MARK: &str = "FIRST";

/// The first sequence kept, from `dir/FIRST` (`None` when there is none:
/// a journal of an earlier version, until it is opened for writing).
fn read_first_mark(dir: &Path) -> Result<Option<Sequence>, JournalError> {
    let path = dir.join(FIRST_MARK);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JournalError::io(&path, "read", e)),
    };
    let valid = bytes.len() == 12
        && crc32c::crc32c(&bytes[..8]) == u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if !valid {
        return Err(JournalError::Corrupt {
            file: path,
            offset: 0,
            reason: "not the 12 bytes of a first-sequence mark with its checksum (delete it to \
                     take the oldest segment's first record for the journal's first)"
                .into(),
        });
    }
    Ok(Some(i64::from_le_bytes(bytes[..8].try_into().unwrap())))
}

/// Writes `dir/FIRST` (through a temporary file, renamed, then the
/// directory synced).
fn write_first_mark(dir: &Path, first: Sequence) -> Result<(), JournalError> {
    let path = dir.join(FIRST_MARK);
    let tmp = dir.join("FIRST.tmp");
    let mut bytes = first.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    fs::File::create(&tmp)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, &bytes)?;
            file.sync_all()
        })
        .map_err(|e| JournalError::io(&tmp, "write", e))?;
    fs::rename(&tmp, &path).map_err(|e| JournalError::io(&path, "rename FIRST.tmp to", e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io(dir, "sync the directory", e))
}

/// The segment files in `dir`, by first sequence.
fn list_segments(dir: &Path) -> Result<Vec<(Sequence, PathBuf)>, JournalError> {
    let mut segments = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| JournalError::io(dir, "list", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io(dir, "list", e))?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_segment_name) {
            segments.push((first, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(first, _)| *first);
    Ok(segments)
}

impl Journal {
    /// Opens the journal in `dir` (created if missing), locks it (one
    /// `open` at a time, across processes: [`JournalError::Locked`]
    /// otherwise) and recovers it: a record that a crash left incomplete or
    /// half-written at the end of the last segment is cut off
    /// ([`recovered`](Journal::recovered) says where), and empty segments a
    /// crash left behind are removed (when one is the only segment left,
    /// it is given its header instead: the numbering goes on from it).
    /// Only the last segment is read in full; damage in an earlier one
    /// shows when reading reaches it.
    ///
    /// # Errors
    /// [`JournalError::Locked`]; [`JournalError::Io`] when the directory
    /// cannot be created, locked or read, an empty last segment cannot be
    /// removed or given its header, or the torn tail cannot be cut
    /// (read such a journal with [`open_read_only`](Journal::open_read_only));
    /// [`JournalError::Corrupt`] when the last segment's header is not a
    /// journal's.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, JournalError> {
        let dir = dir.as_ref().to_owned();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| JournalError::io(&dir, "create", e))?;
            // The new directory's entry in its parent, or a power cut soon
            // after the first run could take the whole journal with it.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| JournalError::io(parent, "sync the directory", e))?;
            }
        }
        let lock = lock(&dir)?;
        Self::open_with(dir, Some(lock))
    }

    /// Opens the journal in `dir` for reading only: no lock, nothing
    /// changed on disk (a torn tail reads as the end), no writer. For
    /// tools, and for reading a journal another process writes.
    ///
    /// # Errors
    /// As for [`open`](Journal::open), but for the lock and the cutting.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Self, JournalError> {
        Self::open_with(dir.as_ref().to_owned(), None)
    }

    fn open_with(dir: PathBuf, lock: Option<fs::File>) -> Result<Self, JournalError> {
        let writable = lock.is_some();
        // Before the listing: a writer elsewhere (this journal opened read
        // only) may roll and delete meanwhile, and a mark read after the
        // listing could lie past every segment listed.
        let mark = read_first_mark(&dir)?;
        let mut listed = list_segments(&dir)?;
        let mut recovered = None;
        // The first sequence of a segment left out below: the numbering
        // goes on from there even when no segment is left (the ones
        // before it deleted by `delete_before`).
        let mut unwritten_from = None;
        // Last segments shorter than a header: created, never written.
        while let Some(&(from, ref path)) = listed.last() {
            let len = fs::metadata(path)
                .map_err(|e| JournalError::io(path, "stat", e))?
                .len();
            if len >= format::HEADER_LEN {
                break;
            }
            if writable && listed.len() == 1 {
                // The only segment (`delete_before` took the ones before
                // it): written with its header, an empty segment, it keeps
                // the numbering on disk for the next open too.
                let header = format::encode_header(from);
                let file = OpenOptions::new().write(true).open(path);
                file.and_then(|mut file| {
                    file.set_len(0)?;
                    std::io::Write::write_all(&mut file, &header)?;
                    file.sync_all()
                })
                .map_err(|e| JournalError::io(path, "write the header of", e))?;
                // Its directory entry too: the run that made it may have
                // died before syncing it, and a journal opened without a
                // writer syncs nothing later.
                fs::File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| JournalError::io(&dir, "sync the directory", e))?;
                recovered = Some(Recovery {
                    file: path.clone(),
                    offset: 0,
                    bytes_cut: len,
                });
                break;
            }
            if writable {
                fs::remove_file(path).map_err(|e| JournalError::io(path, "remove", e))?;
                recovered = Some(Recovery {
                    file: path.clone(),
                    offset: 0,
                    bytes_cut: len,
                });
            }
            unwritten_from = Some(from);
            listed.pop();
        }
        let mut next = listed
            .first()
            .map(|(first, _)| *first)
            .or(unwritten_from)
            .unwrap_or(0);
        let mut last_segment = None;
        let mut damage = None;
        if let Some((first, path)) = listed.last() {
            let mut reader = SegmentReader::open(path, *first, true)?;
            let mut payload = Vec::new();
            let mut records = 0;
            loop {
                match reader.next(&mut payload) {
                    Ok(Step::Record(_)) => records += 1,
                    Ok(Step::End) => break,
                    Ok(Step::Torn(_)) if !writable => break,
                    Ok(Step::Torn(offset)) => {
                        let len = fs::metadata(path)
                            .map_err(|e| JournalError::io(path, "stat", e))?
                            .len();
                        let file = OpenOptions::new().write(true).open(path).map_err(|e| {
                            JournalError::io(path, "open to cut the torn tail of", e)
                        })?;
                        file.set_len(offset)
                            .and_then(|()| file.sync_all())
                            .map_err(|e| JournalError::io(path, "cut the torn tail of", e))?;
                        recovered = Some(Recovery {
                            file: path.clone(),
                            offset,
                            bytes_cut: len - offset,
                        });
                        break;
                    }
                    Err(JournalError::Corrupt {
                        file,
                        offset,
                        reason,
                    }) => {
                        damage = Some((file, offset, reason));
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            next = reader.next_sequence();
            last_segment = Some((path.clone(), reader.offset(), records));
        }
        let listed_first = listed.first().map_or(next, |(first, _)| *first);
        // The first record kept, as `delete_before` left it: segments
        // before the oldest one listed that it did not delete were removed
        // by other means, and reading from there says so (`records`).
        let first = match mark {
            Some(mark) if mark > next => {
                return Err(JournalError::Corrupt {
                    file: dir.join(format::segment_name(mark)),
                    offset: 0,
                    reason: format!(
                        "the journal's first record is {mark} ({}), but its segments end \
                         before it (next sequence {next}): segments were removed without \
                         delete_before; restore them, or delete {} to accept the loss",
                        dir.join(FIRST_MARK).display(),
                        dir.join(FIRST_MARK).display()
                    ),
                });
            }
            Some(mark) => mark,
            None => {
                if writable {
                    write_first_mark(&dir, listed_first)?;
                }
                listed_first
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                bound_bus: AtomicU64::new(0),
                _lock: lock,
                first: AtomicI64::new(first),
                deleting: std::sync::Mutex::new(()),
                durable: AtomicI64::new(next - 1),
                replay: ReplayState::default(),
                writer_taken: AtomicBool::new(false),
                stats: Stats::default(),
            }),
            next,
            last_segment,
            damage,
            recovered,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The first sequence the journal holds (0 for a new journal; higher
    /// after [`delete_before`](Journal::delete_before), which keeps it in
    /// the file `FIRST`). Segments removed otherwise do not raise it:
    /// reading from it then fails with [`JournalError::Corrupt`] naming the
    /// records missing (delete `FIRST` to accept the loss).
    pub fn first_sequence(&self) -> Sequence {
        self.inner.first.load(Ordering::Relaxed)
    }

    /// The sequence the next record gets: one past the last record found
    /// at open. The journal stage's first live event gets it.
    pub fn next_sequence(&self) -> Sequence {
        self.next
    }

    /// The last journal sequence the writer made durable (under its
    /// [`SyncPolicy`]); before its first release, the last one found at
    /// open (-1 for none), which a killed process may have left written
    /// but not synced: the writer syncs it before its first release.
    pub fn durable_sequence(&self) -> Sequence {
        // Acquire: pairs with the writer's Release after its write and sync.
        self.inner.durable.load(Ordering::Acquire)
    }

    /// The torn tail that [`open`](Journal::open) cut off, if any.
    pub fn recovered(&self) -> Option<&Recovery> {
        self.recovered.as_ref()
    }

    /// The writer's counters.
    pub fn stats(&self) -> JournalStats {
        let s = &self.inner.stats;
        JournalStats {
            records: s.records.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            writes: s.writes.load(Ordering::Relaxed),
            syncs: s.syncs.load(Ordering::Relaxed),
            segments: s.segments.load(Ordering::Relaxed),
            sync_errors: s.sync_errors.load(Ordering::Relaxed),
        }
    }

    /// The handler of the journal stage, for
    /// [`Builder::journal_to`](crate::Builder::journal_to). Live events are
    /// appended from [`next_sequence`](Journal::next_sequence) on; events
    /// published by [`replay_into`](Journal::replay_into) are already in the
    /// journal and are not written again.
    ///
    /// # Errors
    /// [`JournalError::Corrupt`] when the last segment is damaged in the
    /// middle (appending after damage would bury it);
    /// [`JournalError::WriterTaken`] for a second writer;
    /// [`JournalError::Io`] when the last segment cannot be opened for
    /// appending.
    pub fn writer<E, C: Codec<E>>(
        &self,
        codec: C,
        options: JournalOptions,
    ) -> Result<JournalWriter<E, C>, JournalError> {
        if self.inner._lock.is_none() {
            return Err(JournalError::ReadOnly);
        }
        if let Some((file, offset, reason)) = &self.damage {
            return Err(JournalError::Corrupt {
                file: file.clone(),
                offset: *offset,
                reason: reason.clone(),
            });
        }
        if self.inner.writer_taken.swap(true, Ordering::Relaxed) {
            return Err(JournalError::WriterTaken);
        }
        JournalWriter::new(
            Arc::clone(&self.inner),
            codec,
            options,
            self.next,
            self.last_segment.clone(),
        )
    }

    /// The records from `from` on, in order, each checked; the iterator
    /// ends after the first error, or at the end of the segments present
    /// when `records` was called (the last one read up to where it ends when
    /// reading reaches it; a record being written there reads as the end).
    ///
    /// # Errors
    /// [`JournalError::BeforeStart`] when `from` was deleted;
    /// [`JournalError::Io`] when the directory cannot be listed.
    pub fn records(&self, from: Sequence) -> Result<Records, JournalError> {
        let segments = list_segments(&self.inner.dir)?;
        let listed_first = segments.first().map_or(self.next, |(first, _)| *first);
        let first = read_first_mark(&self.inner.dir)?.unwrap_or(listed_first);
        if from < first {
            return Err(JournalError::BeforeStart { from, first });
        }
        if from < listed_first {
            let mark = self.inner.dir.join(FIRST_MARK);
            return Err(JournalError::Corrupt {
                file: self.inner.dir.join(format::segment_name(first)),
                offset: 0,
                reason: format!(
                    "records {first}..={} are missing: the segments that held them were \
                     removed without delete_before (which keeps the first record kept in \
                     {}); restore them, or delete {} to accept the loss",
                    listed_first - 1,
                    mark.display(),
                    mark.display()
                ),
            });
        }
        // The last segment starting at or before `from`.
        let start = segments
            .iter()
            .rposition(|(first, _)| *first <= from)
            .unwrap_or(0);
        Ok(Records {
            segments: segments.into_iter().skip(start).collect(),
            next_segment: 0,
            reader: None,
            from,
            expected: None,
            prev: None,
            done: false,
        })
    }

    /// The events from `from` on, decoded with `codec`: `(sequence, event)`.
    ///
    /// # Errors
    /// As for [`records`](Journal::records).
    pub fn events<E, C: Codec<E>>(
        &self,
        from: Sequence,
        codec: C,
    ) -> Result<Events<E, C>, JournalError> {
        Ok(Events {
            records: self.records(from)?,
            codec,
            _event: std::marker::PhantomData,
        })
    }

    /// Deletes the segments that hold only records before `sequence` (a
    /// snapshot point: the state up to it is saved elsewhere). The segment
    /// being written is never deleted, so a few records before `sequence`
    /// may stay. Returns how many segments were deleted.
    ///
    /// # Errors
    /// [`JournalError::ReadOnly`] on a journal opened with
    /// [`open_read_only`](Journal::open_read_only), which changes nothing;
    /// [`JournalError::Io`] when the directory cannot be listed or a file
    /// removed.
    pub fn delete_before(&self, sequence: Sequence) -> Result<usize, JournalError> {
        if self.inner._lock.is_none() {
            return Err(JournalError::ReadOnly);
        }
        let _one_at_a_time = self
            .inner
            .deleting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let segments = list_segments(&self.inner.dir)?;
        // The segments whose successor starts at or before `sequence`.
        let doomed = segments
            .windows(2)
            .take_while(|pair| pair[1].0 <= sequence)
            .count();
        if doomed == 0 {
            return Ok(0);
        }
        let new_first = segments[doomed].0;
        // In memory first (a higher first is always safe: reads start at
        // or after it), then on disk, then the removals: a crash after the
        // mark leaves segments below it, which reads treat as deleted (and
        // the next call removes). The mark only rises.
        self.inner.first.fetch_max(new_first, Ordering::Relaxed);
        if !matches!(read_first_mark(&self.inner.dir)?, Some(mark) if mark >= new_first) {
            write_first_mark(&self.inner.dir, new_first)?;
        }
        let mut deleted = 0;
        for (_, path) in &segments[..doomed] {
            fs::remove_file(path).map_err(|e| JournalError::io(path, "remove", e))?;
            deleted += 1;
        }
        if deleted > 0 {
            let dir = &self.inner.dir;
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| JournalError::io(dir, "sync the directory", e))?;
        }
        Ok(deleted)
    }
}
