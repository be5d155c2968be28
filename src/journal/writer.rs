//! The journal stage: appends each event to the current segment and lets
//! the stages after it see an event only once it is durable.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::codec::Codec;
use super::format::{encode_header, seal_record, segment_name, RECORD_HEADER_LEN};
use super::{Inner, JournalError, JournalOptions, SyncPolicy};
use crate::fault::Failure;
use crate::processor::Consume;
use crate::ring_buffer::RingView;
use crate::sequence::Sequence;

/// Encoded records are written out once the buffer holds this much, even
/// within a batch, so a batch as large as the ring does not pile up in
/// memory.
const FLUSH_AT: usize = 1 << 20;

/// The journal stage's handler, made by
/// [`Journal::writer`](super::Journal::writer) and added with
/// [`Builder::journal_to`](crate::Builder::journal_to).
///
/// Each event becomes a record in the write buffer; at the end of every
/// batch the buffer is written to the segment and synced as the
/// [`SyncPolicy`] says, and only then does the stage's sequence (the durable
/// cursor) move past the batch. A failed write or sync stops the bus with
/// the error (which names the file) in the shutdown report; the stage's
/// sequence stays at the last durable event.
pub struct JournalWriter<E, C> {
    inner: Arc<Inner>,
    codec: C,
    options: JournalOptions,
    dir: PathBuf,
    /// The segment being appended to, once there is one.
    file: Option<File>,
    path: PathBuf,
    /// Bytes in the segment file (written, not only buffered).
    seg_len: u64,
    /// Records in the segment, written or buffered.
    seg_records: u64,
    /// Encoded records (and a new segment's header) not yet written.
    buf: Vec<u8>,
    /// The journal sequence the next appended record gets.
    next: Sequence,
    /// Bus sequences below this are replayed records, already in the
    /// journal (a cache of the replay's published count).
    replayed: Sequence,
    /// A live event was seen: no replayed one can follow (a replay must
    /// come before live traffic), so the replay count is not read again.
    live: bool,
    /// Records appended since the last release (counted once per batch).
    appended: u64,
    /// The bus sequence of the last event handled (appended or replayed).
    handled: Sequence,
    /// The bus sequence up to which everything is durable (released).
    durable: Sequence,
    /// Written data not yet synced (`Interval`), and since when.
    unsynced_since: Option<Instant>,
    /// A new segment's directory entry still needs a sync.
    dir_unsynced: bool,
    /// A failed sync on a timeout, reported at the next release.
    deferred: Option<JournalError>,
    _event: PhantomData<fn(&E)>,
}

impl<E, C> std::fmt::Debug for JournalWriter<E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalWriter")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl<E, C: Codec<E>> JournalWriter<E, C> {
    pub(super) fn new(
        inner: Arc<Inner>,
        codec: C,
        options: JournalOptions,
        next: Sequence,
        last_segment: Option<(PathBuf, u64, u64)>,
    ) -> Result<Self, JournalError> {
        let dir = inner.dir.clone();
        let (file, path, seg_len, seg_records) = match last_segment {
            Some((path, len, records)) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| JournalError::io(&path, "open for appending", e))?;
                (Some(file), path, len, records)
            }
            None => (None, PathBuf::new(), 0, 0),
        };
        Ok(Self {
            inner,
            codec,
            options,
            dir,
            file,
            path,
            seg_len,
            seg_records,
            buf: Vec::with_capacity(FLUSH_AT + (FLUSH_AT >> 2)),
            next,
            replayed: 0,
            live: false,
            appended: 0,
            handled: crate::sequence::INITIAL,
            durable: crate::sequence::INITIAL,
            unsynced_since: None,
            dir_unsynced: false,
            deferred: None,
            _event: PhantomData,
        })
    }

    /// The interval of an `Interval` policy: the stage's idle timeout, so a
    /// quiet bus still syncs.
    pub(crate) fn sync_interval(&self) -> Option<Duration> {
        match self.options.sync {
            SyncPolicy::Interval(every) => Some(every),
            _ => None,
        }
    }

    /// True when bus sequence `sequence` is a record the replay published
    /// (already in the journal).
    #[inline]
    fn is_replayed(&mut self, sequence: Sequence) -> bool {
        if self.live {
            return false;
        }
        if sequence < self.replayed {
            return true;
        }
        // Acquire: pairs with the replay's Release before it published the
        // batch holding `sequence`; this event's slot was read after that.
        self.replayed = self.inner.replay.published.load(Ordering::Acquire);
        self.live = sequence >= self.replayed;
        !self.live
    }

    fn append(&mut self, event: &E) -> Result<(), JournalError> {
        if self.buf.len() >= FLUSH_AT {
            self.write_out()?;
        }
        if self.file.is_some()
            && self.seg_records > 0
            && self.seg_len + self.buf.len() as u64 >= self.options.segment_bytes
        {
            self.roll()?;
        }
        if self.file.is_none() {
            self.create_segment()?;
        }
        let at = self.buf.len();
        self.buf.resize(at + RECORD_HEADER_LEN, 0);
        let codec = &mut self.codec;
        let buf = &mut self.buf;
        let encoded = catch_unwind(AssertUnwindSafe(|| codec.encode(event, buf)));
        let failure = match encoded {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(String::from("the codec panicked")),
        };
        if let Some(reason) = failure {
            self.buf.truncate(at);
            return Err(JournalError::Encode {
                sequence: self.next,
                reason,
            });
        }
        seal_record(&mut self.buf, at, self.next);
        self.next += 1;
        self.seg_records += 1;
        Ok(())
    }

    /// Starts the segment whose first record is `self.next`.
    fn create_segment(&mut self) -> Result<(), JournalError> {
        debug_assert!(self.buf.is_empty());
        let path = self.dir.join(segment_name(self.next));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| JournalError::io(&path, "create segment", e))?;
        self.buf.extend_from_slice(&encode_header(self.next));
        self.file = Some(file);
        self.path = path;
        self.seg_len = 0;
        self.seg_records = 0;
        self.dir_unsynced = true;
        self.inner.stats.segments.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Finishes the current segment: written, and synced unless the policy
    /// never syncs.
    fn roll(&mut self) -> Result<(), JournalError> {
        self.write_out()?;
        if self.options.sync != SyncPolicy::Never {
            self.sync()?;
        }
        self.file = None;
        Ok(())
    }

    /// Writes the buffer to the segment. On an error the segment is cut back
    /// to its length before the write and the buffer kept, so a retry writes
    /// the same bytes once.
    fn write_out(&mut self) -> Result<(), JournalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        if let Err(e) = file.write_all(&self.buf) {
            let _ = file.set_len(self.seg_len);
            return Err(JournalError::io(&self.path, "append to", e));
        }
        self.seg_len += self.buf.len() as u64;
        let stats = &self.inner.stats;
        stats
            .bytes
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        stats.writes.fetch_add(1, Ordering::Relaxed);
        self.buf.clear();
        if self.unsynced_since.is_none() {
            self.unsynced_since = Some(Instant::now());
        }
        Ok(())
    }

    /// `fdatasync` on the segment (and on the directory after a new segment).
    fn sync(&mut self) -> Result<(), JournalError> {
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        if self.unsynced_since.is_none() {
            return Ok(());
        }
        file.sync_data()
            .map_err(|e| JournalError::io(&self.path, "sync", e))?;
        if self.dir_unsynced {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| JournalError::io(&self.dir, "sync the directory", e))?;
            self.dir_unsynced = false;
        }
        self.unsynced_since = None;
        self.inner.stats.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Makes everything handled durable under the policy.
    fn make_durable(&mut self) -> Result<(), JournalError> {
        if let Some(deferred) = self.deferred.take() {
            return Err(deferred);
        }
        self.write_out()?;
        match self.options.sync {
            SyncPolicy::EveryBatch => self.sync()?,
            SyncPolicy::Interval(every) => {
                if self
                    .unsynced_since
                    .is_some_and(|since| since.elapsed() >= every)
                {
                    self.sync()?;
                }
            }
            SyncPolicy::Never => {}
        }
        Ok(())
    }
}

impl<E, C: Codec<E>> Consume<E> for JournalWriter<E, C> {
    const FALLIBLE: bool = true;
    const DEFERS_RELEASE: bool = true;

    fn on_start(&mut self) {}

    fn on_shutdown(&mut self) {
        // Everything handled was released, so written; an interval policy
        // may still owe a sync.
        if self.options.sync != SyncPolicy::Never && self.sync().is_err() {
            self.inner.stats.sync_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_timeout(&mut self, _sequence: Sequence) {
        if let SyncPolicy::Interval(_) = self.options.sync {
            if let Err(e) = self.sync() {
                self.deferred.get_or_insert(e);
            }
        }
    }

    #[inline]
    fn on_batch_start(&mut self, _size: u64) {}

    #[inline]
    unsafe fn consume(
        &mut self,
        ring: RingView<'_, E>,
        sequence: Sequence,
        _end_of_batch: bool,
    ) -> Result<(), Failure> {
        if !self.is_replayed(sequence) {
            // SAFETY: the stage loop passes only sequences its barrier
            // reported available and its own (gating) sequence has not
            // passed, so the slot is published and no producer writes it.
            unsafe { ring.read(sequence, |event| self.append(event)) }
                .map_err(Failure::from_error)?;
            self.appended += 1;
        }
        self.handled = sequence;
        Ok(())
    }

    fn release(&mut self, done: Sequence) -> Result<(), (Sequence, Failure)> {
        debug_assert!(done <= self.handled || self.handled == crate::sequence::INITIAL);
        if done <= self.durable {
            return Ok(());
        }
        match self.make_durable() {
            Ok(()) => {
                self.durable = done;
                self.inner
                    .stats
                    .records
                    .fetch_add(std::mem::take(&mut self.appended), Ordering::Relaxed);
                // Release: a reader of the durable sequence finds the
                // records written (the writes came before this store).
                self.inner.durable.store(self.next - 1, Ordering::Release);
                Ok(())
            }
            Err(e) => Err((self.durable, Failure::from_error(e))),
        }
    }
}
