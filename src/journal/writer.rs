//! The journal stage: appends each event to the current segment and lets
//! the stages after it see an event only once it is durable.

use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::format::{encode_header, seal_record, segment_name, MAX_PAYLOAD, RECORD_HEADER_LEN};
use super::syncer::Syncer;
use super::{Inner, JournalError, JournalOptions, SyncPolicy};
use crate::builder::Builder;
use crate::codec::Codec;
use crate::consume::{Consume, Lookahead};
use crate::error::BuildError;
use crate::fault::Failure;
use crate::ring_buffer::RingView;
use crate::sequence::Sequence;
use crate::sequencer::Sequencer;
use crate::wait_strategy::WaitStrategy;

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
/// cursor) move past the batch. Under [`SyncPolicy::EveryBatch`] the sync
/// runs on a helper thread (`journal-sync`) while the stage encodes the
/// events that arrived meanwhile (group commit); the batch is still
/// released only once its own sync returned. A failed write or sync stops the bus with
/// the error (which names the file) in the shutdown report; the stage's
/// sequence stays at the last durable event.
pub struct JournalWriter<E, C> {
    inner: Arc<Inner>,
    codec: C,
    options: JournalOptions,
    dir: PathBuf,
    /// The segment being appended to, once there is one (shared with the
    /// sync thread).
    file: Option<Arc<File>>,
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
    /// Records in `buf`.
    buf_records: u64,
    /// The last bus sequence encoded ahead of its batch (while a sync ran);
    /// `consume` skips up to it.
    pre_encoded: Sequence,
    /// The sync thread of `EveryBatch`, started at the first sync.
    syncer: Option<Syncer>,
    /// The bus sequence of the last event handled (appended or replayed).
    handled: Sequence,
    /// The bus sequence up to which everything is durable (released).
    durable: Sequence,
    /// Written data not yet synced (`Interval`), and since when.
    unsynced_since: Option<Instant>,
    /// A new segment's directory entry still needs a sync.
    dir_unsynced: bool,
    /// A segment taken over from an earlier run: the first release syncs
    /// it under `Interval` too, whatever the interval.
    sync_owed: bool,
    /// A failed sync on a timeout, reported at the next release.
    deferred: Option<JournalError>,
    /// Set by the first failed sync (or a write that could not be undone):
    /// after a failed `fdatasync` the kernel may have dropped the dirty
    /// pages, so a later sync that succeeds proves nothing. Every later
    /// release fails with this.
    broken: Option<String>,
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
        let (file, path, seg_len, seg_records): (Option<Arc<File>>, _, _, _) = match last_segment {
            Some((path, len, records)) => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| JournalError::io(&path, "open for appending", e))?;
                (Some(Arc::new(file)), path, len, records)
            }
            None => (None, PathBuf::new(), 0, 0),
        };
        let took_over = file.is_some();
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
            buf_records: 0,
            pre_encoded: crate::sequence::INITIAL,
            syncer: None,
            handled: crate::sequence::INITIAL,
            durable: crate::sequence::INITIAL,
            // A segment taken over from an earlier run may hold records
            // written but never synced (a killed process): the first
            // release syncs it, and its directory entry, before the stages
            // after the journal see anything, replayed events included.
            unsynced_since: took_over.then(Instant::now),
            dir_unsynced: took_over,
            sync_owed: took_over,
            deferred: None,
            broken: None,
            _event: PhantomData,
        })
    }

    /// The interval of an `Interval` policy: the stage's idle timeout, so a
    /// quiet bus still syncs.
    pub(crate) fn sync_interval(&self) -> Option<Duration> {
        match self.options.sync {
            // Zero syncs at every batch end: no idle timer needed.
            SyncPolicy::Interval(every) if !every.is_zero() => Some(every),
            _ => None,
        }
    }

    /// True when bus sequence `sequence` is a record the replay published
    /// (already in the journal).
    /// Ties the writer to its bus: only a replay into that bus is
    /// replayed through this stage (`Builder::journal_to`).
    pub(crate) fn bind(&self, bus: u64) {
        self.inner.bound_bus.store(bus, Ordering::Relaxed);
    }

    /// Whether bus sequence `sequence` is a record the replay published
    /// (already in the journal): `Some(true)`, a live event: `Some(false)`,
    /// or not known yet while the replay runs and `wait` is false: `None`.
    /// An event past the checked replayed ones waits until the replay
    /// checked its batch or ended; one the replay found interleaved is an
    /// error, so it is neither journaled nor taken for a replayed one.
    fn classify(&mut self, sequence: Sequence, wait: bool) -> Result<Option<bool>, JournalError> {
        if self.live {
            return Ok(Some(false));
        }
        let replay = &self.inner.replay;
        let mut waited = 0u32;
        loop {
            if sequence < self.replayed {
                return Ok(Some(true));
            }
            // Acquire (both): the state first, so that after REPLAYED the
            // count read next is the final one (stored before it).
            let state = replay.state.load(Ordering::Acquire);
            self.replayed = replay.published.load(Ordering::Acquire);
            if sequence < self.replayed {
                return Ok(Some(true));
            }
            // Acquire: pairs with the replay's Release when it saw another
            // handle's event among its own.
            if replay.interleaved.load(Ordering::Acquire) {
                return Err(JournalError::ReplayInterleaved {
                    expected: self.replayed,
                    got: sequence,
                });
            }
            match state {
                super::IDLE => {
                    // AcqRel: against the replay's IDLE -> REPLAYING.
                    if replay
                        .state
                        .compare_exchange(
                            super::IDLE,
                            super::LIVE,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
                        .is_ok()
                    {
                        self.live = true;
                        return Ok(Some(false));
                    }
                }
                super::REPLAYING if !wait => return Ok(None),
                super::REPLAYING => {
                    // The replay raises its count right after its publish
                    // returns: a short wait.
                    waited += 1;
                    if waited < 100 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                }
                _ => {
                    self.live = true;
                    return Ok(Some(false));
                }
            }
        }
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
            // A payload the reader would take for damage (and cut off as
            // a torn tail at the next open) is refused here.
            // A codec that cut the buffer short of the record's header.
            Ok(Ok(())) if self.buf.len() < at + RECORD_HEADER_LEN => {
                Some("the codec shortened the journal's buffer instead of appending".into())
            }
            Ok(Ok(())) if (self.buf.len() - at - RECORD_HEADER_LEN) as u64 > MAX_PAYLOAD => {
                let len = self.buf.len() - at - RECORD_HEADER_LEN;
                Some(
                    format!(
                        "an encoded event of {len} bytes is over the journal's record limit \
                         of {MAX_PAYLOAD} bytes (1 GiB): keep events smaller, or journal a \
                         reference to the data instead"
                    )
                    .into(),
                )
            }
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("the codec panicked".into()),
        };
        if let Some(source) = failure {
            self.buf.truncate(at);
            // An oversized event's bytes are not kept for the writer's life.
            self.buf.shrink_to(FLUSH_AT);
            return Err(JournalError::Encode {
                sequence: self.next,
                source,
            });
        }
        seal_record(&mut self.buf, at, self.next);
        self.next += 1;
        self.seg_records += 1;
        self.buf_records += 1;
        Ok(())
    }

    /// Starts the segment whose first record is `self.next`.
    fn create_segment(&mut self) -> Result<(), JournalError> {
        debug_assert!(self.buf.is_empty());
        let path = self.dir.join(segment_name(self.next));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| JournalError::io(&path, "create segment", e))?;
        self.buf.extend_from_slice(&encode_header(self.next));
        self.file = Some(Arc::new(file));
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
        if let Some(reason) = &self.broken {
            return Err(self.broken_error(reason.clone()));
        }
        let Some(file) = self.file.as_deref() else {
            return Ok(());
        };
        // At the segment's known end, not O_APPEND: after a failed write
        // the retry lands on the same bytes, whatever part of the failed
        // one reached the file.
        if let Err(e) = file.write_all_at(&self.buf, self.seg_len) {
            if let Err(cut) = file.set_len(self.seg_len) {
                self.broken = Some(format!(
                    "a failed write ({e}) could not be cut back ({cut})"
                ));
            }
            return Err(JournalError::io(&self.path, "append to", e));
        }
        self.seg_len += self.buf.len() as u64;
        let stats = &self.inner.stats;
        stats
            .bytes
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        stats.writes.fetch_add(1, Ordering::Relaxed);
        stats
            .records
            .fetch_add(std::mem::take(&mut self.buf_records), Ordering::Relaxed);
        self.buf.clear();
        if self.unsynced_since.is_none() {
            self.unsynced_since = Some(Instant::now());
        }
        Ok(())
    }

    /// The segment to sync, if anything written is unsynced; an error once
    /// the writer broke.
    fn to_sync(&self) -> Result<Option<Arc<File>>, JournalError> {
        let Some(file) = self.file.as_ref() else {
            return Ok(None);
        };
        if self.unsynced_since.is_none() {
            return Ok(None);
        }
        if let Some(reason) = &self.broken {
            return Err(self.broken_error(reason.clone()));
        }
        Ok(Some(Arc::clone(file)))
    }

    /// `fdatasync` on the segment (and on the directory after a new segment).
    fn sync(&mut self) -> Result<(), JournalError> {
        let Some(file) = self.to_sync()? else {
            return Ok(());
        };
        if let Err(e) = file.sync_data() {
            self.broken = Some(format!("fdatasync failed: {e}"));
            return Err(JournalError::io(&self.path, "sync", e));
        }
        self.synced()
    }

    /// The error of every write and sync after the journal broke.
    fn broken_error(&self, reason: String) -> JournalError {
        JournalError::io(
            &self.path,
            "trust a sync of",
            std::io::Error::other(format!(
                "{reason}; nothing written since can be vouched for: restart, and \
                 `Journal::open` keeps what was durable"
            )),
        )
    }

    /// After the segment's data was synced: the directory entry of a new
    /// segment, and the bookkeeping.
    fn synced(&mut self) -> Result<(), JournalError> {
        if self.dir_unsynced {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| JournalError::io(&self.dir, "sync the directory", e))?;
            self.dir_unsynced = false;
        }
        self.unsynced_since = None;
        self.sync_owed = false;
        self.inner.stats.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Makes everything handled durable under the policy; under
    /// `EveryBatch`, encodes what `ahead` offers while the sync runs.
    fn make_durable(&mut self, ahead: Option<&Lookahead<'_, E>>) -> Result<(), JournalError> {
        if let Some(deferred) = self.deferred.take() {
            return Err(deferred);
        }
        self.write_out()?;
        match self.options.sync {
            SyncPolicy::EveryBatch => self.sync_overlapped(ahead)?,
            SyncPolicy::Interval(every) => {
                if self.sync_owed
                    || self
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

impl<E, C: Codec<E>> JournalWriter<E, C> {
    /// The sync of `EveryBatch`: on the sync thread, while this thread
    /// encodes the events after the batch that are already available.
    fn sync_overlapped(&mut self, ahead: Option<&Lookahead<'_, E>>) -> Result<(), JournalError> {
        let Some(file) = self.to_sync()? else {
            return Ok(());
        };
        if self.syncer.is_none() {
            let syncer = Syncer::start("journal")
                .map_err(|e| JournalError::io(&self.path, "start the sync thread for", e))?;
            self.syncer = Some(syncer);
        }
        // Written by this thread (in `make_durable`), synced by that one:
        // handing the write to the sync thread too (double buffering)
        // measured 0.35-0.46x of the plain writer against 0.58-0.77x this
        // way (benches/journal.rs, 3 x 5 rounds, alternating).
        let syncer = self.syncer.take().expect("started above");
        let ticket = syncer.request(&file);
        if let Some(ahead) = ahead {
            self.encode_ahead(ahead, || syncer.is_done(ticket));
        }
        let result = syncer.wait(ticket);
        self.syncer = Some(syncer);
        if let Err(e) = result {
            self.broken = Some(format!("fdatasync failed: {e}"));
            return Err(JournalError::io(&self.path, "sync", e));
        }
        self.synced()
    }

    /// Encodes available events after the batch until `done()` (the sync
    /// returned), the buffer is full, a segment would roll, or nothing more
    /// is available. A record that fails to encode is left for `consume`,
    /// which reports it through the policy.
    fn encode_ahead(&mut self, ahead: &Lookahead<'_, E>, done: impl Fn() -> bool) {
        let mut from = self.handled.max(self.pre_encoded) + 1;
        while !done() {
            let available = ahead.available();
            if available < from {
                return;
            }
            for sequence in from..=available {
                if self.buf.len() >= FLUSH_AT
                    || self.file.is_none()
                    || self.seg_len + self.buf.len() as u64 >= self.options.segment_bytes
                    || (sequence & 63 == 0 && done())
                {
                    return;
                }
                let Ok(Some(replayed)) = self.classify(sequence, false) else {
                    return; // undecided yet, or an error `consume` reports
                };
                if !replayed {
                    // SAFETY: `sequence` is above the batch being released
                    // and at most what `available()` returned.
                    let appended = unsafe { ahead.read(sequence, |event| self.append(event)) };
                    if appended.is_err() {
                        return;
                    }
                }
                self.pre_encoded = sequence;
            }
            from = available + 1;
        }
    }
}

impl<E, C> Drop for JournalWriter<E, C> {
    fn drop(&mut self) {
        // Stops and joins the sync thread (it finishes the sync it runs).
        self.syncer.take();
    }
}

impl<E, C: Codec<E>> Consume<E> for JournalWriter<E, C> {
    const FALLIBLE: bool = true;
    const DEFERS_RELEASE: bool = true;

    fn on_start(&mut self) {}

    fn on_shutdown(&mut self) {
        // Everything released was written (records encoded ahead of a halt
        // were never released, and are dropped); an interval policy may
        // still owe a sync. A writer already broken was counted when it
        // stopped the stage.
        let failed = self.deferred.take().is_some()
            || (self.broken.is_none()
                && self.options.sync != SyncPolicy::Never
                && self.sync().is_err());
        if failed {
            self.inner.stats.sync_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.syncer.take();
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
        if sequence > self.pre_encoded
            && self.classify(sequence, true).map_err(Failure::from_error)? == Some(false)
        {
            // SAFETY: the stage loop passes only sequences its barrier
            // reported available and its own (gating) sequence has not
            // passed, so the slot is published and no producer writes it.
            unsafe { ring.read(sequence, |event| self.append(event)) }
                .map_err(Failure::from_error)?;
        }
        self.handled = sequence;
        Ok(())
    }

    fn release(
        &mut self,
        done: Sequence,
        ahead: Option<&Lookahead<'_, E>>,
    ) -> Result<(), (Sequence, Failure)> {
        debug_assert!(done <= self.handled || self.handled == crate::sequence::INITIAL);
        if done <= self.durable && self.deferred.is_none() {
            return Ok(());
        }
        match self.make_durable(ahead) {
            Ok(()) => {
                self.durable = done;
                // What is written: all appended but the records encoded
                // ahead, still in the buffer. Release: a reader of the
                // durable sequence finds the records written (the writes
                // came before this store).
                let written = self.next - 1 - self.buf_records as Sequence;
                self.inner.durable.store(written, Ordering::Release);
                Ok(())
            }
            Err(e) => Err((self.durable, Failure::from_error(e))),
        }
    }
}

impl<E, S, W> Builder<E, S, W>
where
    E: Send + Sync + 'static,
    S: Sequencer,
    W: WaitStrategy,
{
    /// Adds the journal stage: every event is appended to the journal's
    /// segment files, and the stages added after it (with `and_then()` or
    /// `after`) see an event only once it is durable under the writer's
    /// [`SyncPolicy`](crate::journal::SyncPolicy). See [`journal`](crate::journal).
    ///
    /// The stage is named `journal` unless `thread_name` says otherwise. A
    /// pending `on_failure` may retry but must end in halt (a journal cannot
    /// skip an event); anything else makes `build` fail with
    /// [`BuildError::JournalPolicy`]. With an interval policy the stage's
    /// `timeout` defaults to the interval, so an idle bus still syncs.
    #[cfg_attr(docsrs, doc(cfg(all(feature = "journal", unix))))]
    pub fn journal_to<C: Codec<E>>(mut self, writer: JournalWriter<E, C>) -> Self {
        let stage = self.pending_name_or("journal");
        if !self.pending_policy_halts() {
            self.refuse(BuildError::JournalPolicy { stage });
        }
        self.default_timeout(writer.sync_interval());
        writer.bind(self.bus_id());
        self.add_owned(false, writer, |w| w)
    }
}
