//! Publishing into a shared-memory bus.
//!
//! Claim, then room: a producer may write sequence `s` once every consumer
//! has passed `s - capacity`. It keeps the lowest consumer sequence it saw
//! (`cached_min`, never above the first sequence of the claim it was
//! refreshed for, and read after the RMW of the join protocol in
//! `table.rs`) and reads the table again only when the cache says the ring
//! may be full; a producer that
//! still finds it full checks the consumers' processes for life, at most
//! every millisecond, so a dead consumer is reclaimed.
//!
//! After publishing, a fence and a load of the sleepers' mask: a sleeping
//! consumer set its bit (SeqCst) before it looked at the cursor or marks
//! for the last time, so either it sees this publish or this producer sees
//! its bit and wakes it. The fence is asymmetric where the OS allows
//! (`os::light_fences`, Linux's membarrier): the producer's side is a
//! compiler fence and the sleeper pays a barrier on every producer's core
//! once per sleep, so a publish costs no full fence (which waits for the
//! store buffer, that is for the consumers' cores to give up the lines of
//! the slot and the cursor: two thirds of a 64-byte publish's time here).
//! Without membarrier, and in loom models, the producer fences SeqCst.
//!
//! A single producer's `publish` with room known is inline and makes no
//! call: every store a path adds (a call's frame, a spilled register)
//! waits in the store buffer behind the slot's store, which waits for the
//! consumer's core to give the slot's line up, so a frame per publish
//! leaves fewer events in flight. That took 1P→1C with 64-byte events
//! from about 25 to about 90 M events/s here (BENCHMARKS.md, "Across
//! processes"; release builds of the crate's own bench, with LTO; the
//! small functions it calls across modules are `#[inline]` for builds
//! without it).

use std::time::{Duration, Instant};

use bytemuck::Pod;

use super::bus::IpcBus;
use super::error::IpcPublishError;
use super::marks::{self, MarkFailure};
use super::table::{self, Lease};
use crate::loom::{AtomicU64, Ordering};
use crate::weaken;

/// A producer on a shared-memory bus (see [`IpcBus::producer`]). Dropping
/// it frees its place.
pub struct IpcProducer<E: Pod> {
    bus: IpcBus<E>,
    index: usize,
    lease: Lease,
    multi: bool,
    capacity: u64,
    /// Single producer: the next sequence to publish.
    next: u64,
    cached_min: u64,
    last_liveness: Option<Instant>,
    /// This process is registered for sleepers' heavy fences.
    light: bool,
    /// Multi producer: its entry shows a claim waiting for room
    /// (`wait_first..=wait_last`), until the claim's slots are marked.
    /// (Only this handle touches it; atomic so that `&self` may clear it
    /// while the region is borrowed.)
    shows_wait: std::sync::atomic::AtomicBool,
    /// False once a loom model "killed" this producer's process.
    leaves: bool,
    /// One past the last sequence the bus carries (`sequence_limit`).
    limit: u64,
}

impl<E: Pod> std::fmt::Debug for IpcProducer<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpcProducer")
            .field("index", &self.index)
            .field("multi", &self.multi)
            .finish()
    }
}

/// The slots of a batch: one or two runs (the ring wraps), in order.
#[derive(Debug)]
pub struct IpcBatch<'a, E> {
    head: &'a mut [E],
    tail: &'a mut [E],
}

impl<E> IpcBatch<'_, E> {
    /// The number of slots.
    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slot `i` of the batch.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut E> {
        let h = self.head.len();
        if i < h {
            self.head.get_mut(i)
        } else {
            self.tail.get_mut(i - h)
        }
    }

    /// The slots in order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut E> {
        self.head.iter_mut().chain(self.tail.iter_mut())
    }
}

impl<'b, E> IntoIterator for &'b mut IpcBatch<'_, E> {
    type Item = &'b mut E;
    type IntoIter = std::iter::Chain<std::slice::IterMut<'b, E>, std::slice::IterMut<'b, E>>;
    fn into_iter(self) -> Self::IntoIter {
        self.head.iter_mut().chain(self.tail.iter_mut())
    }
}

/// Hands a one-slot batch's slot to `f`.
fn one<E>(b: &mut IpcBatch<'_, E>, f: impl FnOnce(&mut E)) {
    if let Some(e) = b.get_mut(0) {
        f(e);
    }
}

/// When a claim stops waiting for room.
#[derive(Clone, Copy)]
enum Until {
    Now,
    Never,
    Deadline(Instant),
}

/// Releases a multi producer's marked slots if the publish closure panics,
/// and wakes sleeping consumers to pass them.
struct Abandon<'a> {
    region: &'a super::region::Region,
    first: u64,
    n: u64,
    owner: usize,
    light: bool,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        for seq in self.first..self.first + self.n {
            marks::abandon(self.region, seq, self.owner);
        }
        notify(self.region, self.light);
    }
}

/// Sequences at or above it are a cursor a peer overwrote: no bus reaches
/// them (2^62 events is 1,400 years at 100 M events a second), and below
/// it `first + n` cannot overflow (a batch is at most the capacity).
const SEQUENCE_LIMIT: u64 = 1 << 62;

/// One past the last sequence this bus can carry: [`SEQUENCE_LIMIT`], and
/// on a multi-producer bus the last lap a mark can hold (48 bits of lap
/// plus one, `marks::Mark`; `Options::new` documents it).
fn sequence_limit(region: &super::region::Region) -> u64 {
    if !region.layout.multi {
        return SEQUENCE_LIMIT;
    }
    ((1u64 << 48) - 1)
        .checked_mul(1u64 << region.shift())
        .map_or(SEQUENCE_LIMIT, |end| end.min(SEQUENCE_LIMIT))
}

/// `Closed` for a claim of `first..first + n` past what the bus carries: a
/// cursor a peer overwrote (module docs, Trust), where arithmetic on the
/// claim would overflow, or a multi-producer bus past its last lap.
#[inline]
fn past_the_end(first: u64, n: u64, limit: u64) -> Result<(), IpcPublishError> {
    if first >= SEQUENCE_LIMIT || first + n > limit {
        return Err(IpcPublishError::Closed);
    }
    Ok(())
}

/// Wakes sleeping consumers, if any, after a publish (or a release of
/// slots) by a producer whose process is `light` (module docs).
#[inline]
fn notify(region: &super::region::Region, light: bool) {
    let wake = &region.control().wake;
    if light {
        // SeqCst: keeps the compiler from moving the load of the sleepers
        // above the publish; the sleeper's heavy fence orders them in the
        // hardware (module docs).
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else if !weaken::IPC_SLEEPERS {
        // SeqCst: orders the publish above before the load of the sleepers
        // (module docs).
        crate::loom::fence(Ordering::SeqCst);
    }
    if wake.sleepers.load(Ordering::Relaxed) != 0 {
        wake_sleepers(region);
    }
}

/// Out of the publish path: a publish's stores wait in the store buffer for
/// the consumers' cores to give up the slot's and the cursor's lines, and
/// every store the path adds (a spilled register, a call's frame) takes a
/// place there, so fewer events are in flight at once.
#[cold]
#[inline(never)]
pub(crate) fn wake_sleepers(region: &super::region::Region) {
    // SeqCst: a sleeper that read the word before this bump sleeps on the
    // old value, and the futex returns at once or is woken.
    region.control().wake.word.fetch_add(1, Ordering::SeqCst);
    region.futex_wake();
}

/// A single producer makes every sequence below `next` visible, then wakes
/// sleepers.
#[inline(always)]
fn publish_cursor(region: &super::region::Region, next: u64, light: bool) {
    // Release: the events' bytes before the cursor that consumers Acquire.
    let order = if weaken::IPC_PUBLISH {
        Ordering::Relaxed
    } else {
        Ordering::Release
    };
    region.control().cursor.store(next, order);
    notify(region, light);
}

/// Whether this process's producers and consumers may use light fences;
/// if so, says so in the file first (`Wake::light`), for sleepers whose
/// heavy fence fails.
pub(crate) fn light(region: &super::region::Region) -> bool {
    if !super::os::light_fences() {
        return false;
    }
    // SeqCst RMW, then a SeqCst fence: a sleeper that reads no flag after
    // its own fence set its bit before this producer's later loads of the
    // sleepers, which then see it.
    region.control().wake.light.fetch_or(1, Ordering::SeqCst);
    crate::loom::fence(Ordering::SeqCst);
    true
}

impl<E: Pod> IpcProducer<E> {
    pub(crate) fn new(bus: IpcBus<E>, index: usize, lease: Lease) -> Self {
        let multi = bus.region.layout.multi;
        let capacity = bus.region.layout.capacity as u64;
        // Acquire: a single producer's cursor was last written by this
        // process's predecessor (or, multi, by any producer).
        let next = bus.region.control().cursor.load(Ordering::Acquire);
        let light = light(&bus.region);
        let limit = sequence_limit(&bus.region);
        // `cached_min` 0: the first claim past the first lap reads the table.
        Self {
            bus,
            index,
            lease,
            multi,
            capacity,
            next,
            cached_min: 0,
            last_liveness: None,
            light,
            shows_wait: std::sync::atomic::AtomicBool::new(false),
            leaves: true,
            limit,
        }
    }

    /// Takes the claim shown waiting for room out of this producer's entry
    /// (its slots are marked, or let go).
    #[inline]
    fn unshow_wait(&self) {
        // Relaxed: this handle's own flag (a load and a store, no
        // read-modify-write: nobody else writes it).
        if self.shows_wait.load(std::sync::atomic::Ordering::Relaxed) {
            self.shows_wait
                .store(false, std::sync::atomic::Ordering::Relaxed);
            // Release: after the marks (a consumer that Acquires the cleared
            // range and then looks at a mark sees it).
            self.entry().wait_last.store(0, Ordering::Release);
        }
    }

    fn entry(&self) -> &super::layout::ProducerEntry {
        self.bus
            .region
            .producer(self.index)
            .expect("index below the table size")
    }

    fn cursor(&self) -> &AtomicU64 {
        &self.bus.region.control().cursor
    }

    /// Publishes one event written by `f`, waiting for room as long as
    /// live consumers hold the ring. Returns its sequence.
    ///
    /// Memory effect: a Release store (single producer: the cursor; multi:
    /// the slot's mark) after `f` wrote the slot.
    ///
    /// # Errors
    /// [`IpcPublishError::Closed`]; [`IpcPublishError::GivenUp`] (multi
    /// producer, the claim outlived the hole timeout).
    #[inline]
    pub fn publish(&mut self, f: impl FnOnce(&mut E)) -> Result<u64, IpcPublishError> {
        self.publish_one(|| Until::Never, f)
    }

    /// One event: inline when a single producer knows it has room, else
    /// through `publish_n`.
    #[inline(always)]
    fn publish_one(
        &mut self,
        until: impl FnOnce() -> Until,
        f: impl FnOnce(&mut E),
    ) -> Result<u64, IpcPublishError> {
        if !self.multi {
            let seq = self.next;
            // The single producer's common case, inline and without a
            // frame: room known (`cached_min`), the bus open, the place
            // still this producer's. Anything else takes `publish_n`.
            if seq < self.cached_min.saturating_add(self.capacity)
                && !self.bus.is_closed()
                && table::producer_owned(&self.bus.region, self.index, self.lease)
            {
                // SAFETY: `seq` is this single producer's next sequence,
                // unpublished, and every consumer has passed its previous
                // round (`cached_min` is at or below every gating
                // consumer's sequence: 0 at first, then read from the table
                // after the RMW of the join protocol); Pod events may hold
                // any bytes.
                unsafe {
                    self.bus
                        .region
                        .with_slot(seq, true, |p| f(&mut *(p as *mut E)))
                };
                self.next = seq + 1;
                publish_cursor(&self.bus.region, seq + 1, self.light);
                return Ok(seq);
            }
        }
        self.publish_n(1, until(), |b| one(b, f))
    }

    /// Like [`publish`](IpcProducer::publish), but never waits for room.
    /// (Multi producer: two waits are left. Up to the bus's `hole_timeout`,
    /// when its slot still holds an earlier lap's claim that was never
    /// marked, a dead producer's: a claimant releases it, and on a bus
    /// without consumers only claimants do. And, while no consumer gates
    /// the slot's earlier round (a bus without consumers, or consumers
    /// that all joined after that round was claimed), for a producer a lap
    /// behind still writing the slot, however long it writes. When
    /// the slot is a writer's that consumers gave up, still writing, it
    /// says `Full` at once, but its claim is a hole the consumers give up
    /// a hole timeout after that writer lets go.)
    ///
    /// # Errors
    /// [`IpcPublishError::Full`], or as for `publish`.
    #[inline]
    pub fn try_publish(&mut self, f: impl FnOnce(&mut E)) -> Result<u64, IpcPublishError> {
        self.publish_one(|| Until::Now, f)
    }

    /// Like [`publish`](IpcProducer::publish), waiting at most `timeout`
    /// for room. (Multi producer: the waits [`try_publish`](Self::try_publish)
    /// names are not bounded by `timeout` either: up to the bus's
    /// `hole_timeout` behind an earlier lap's claim that was never marked,
    /// and, while no consumer gates that earlier round (none, or all
    /// joined after it was claimed), as long as a producer a lap behind
    /// still writes the slot.)
    ///
    /// # Errors
    /// [`IpcPublishError::Timeout`], or as for `publish`.
    pub fn publish_timeout(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&mut E),
    ) -> Result<u64, IpcPublishError> {
        // The clock only when the event must wait.
        let until = || {
            Instant::now()
                .checked_add(timeout)
                .map_or(Until::Never, Until::Deadline)
        };
        self.publish_one(until, f)
    }

    /// Publishes `n` events at once, written by `f` into consecutive slots
    /// (each producer's batch stays in order and contiguous). Returns the
    /// first sequence. A multi producer's batch that waits for room for its
    /// last slot is not taken for a hole meanwhile, though its first slots
    /// have room. An empty batch publishes nothing and returns where the
    /// next event would go (`Closed` on a closed bus, as any publish).
    ///
    /// # Errors
    /// [`IpcPublishError::BatchTooLarge`] when `n` exceeds the capacity, or
    /// as for `publish`.
    pub fn batch_publish(
        &mut self,
        n: usize,
        f: impl FnOnce(&mut IpcBatch<'_, E>),
    ) -> Result<u64, IpcPublishError> {
        self.publish_n(n, Until::Never, f)
    }

    fn publish_n(
        &mut self,
        n: usize,
        until: Until,
        f: impl FnOnce(&mut IpcBatch<'_, E>),
    ) -> Result<u64, IpcPublishError> {
        if n as u64 > self.capacity {
            return Err(IpcPublishError::BatchTooLarge {
                size: n,
                capacity: self.capacity as usize,
            });
        }
        if n == 0 {
            // Nothing to publish: the answer a claim would get when closed,
            // else where the next event would go (a multi producer's claims
            // are counted on the bus, not by this handle).
            self.check_open()?;
            return Ok(if self.multi {
                self.cursor().load(Ordering::Relaxed)
            } else {
                self.next
            });
        }
        let first = self.claim(n as u64, until)?;
        let region: &super::region::Region = &self.bus.region;
        let owner = self.index + 1;
        if self.multi {
            let mut carried = None;
            for seq in first..first + n as u64 {
                if let Err(failure) = self.begin_write(seq, owner, &mut carried, until) {
                    // Nothing of the batch is written: let go of what was
                    // marked, and of the rest without marking it.
                    for done in first..seq {
                        marks::abandon(region, done, owner);
                    }
                    if failure == MarkFailure::Limit {
                        // Out of time: the rest stays unmarked (marking it
                        // may wait too); consumers give it up.
                        self.notify();
                        return Err(match until {
                            Until::Now => IpcPublishError::Full,
                            _ => IpcPublishError::Timeout,
                        });
                    }
                    self.let_go(seq + 1..first + n as u64);
                    self.unshow_wait();
                    if failure == MarkFailure::Closed {
                        return Err(IpcPublishError::Closed);
                    }
                    return Err(IpcPublishError::GivenUp {
                        sequence: first,
                        lost: n,
                    });
                }
            }
            self.unshow_wait();
        }
        let guard = self.multi.then(|| Abandon {
            region,
            first,
            n: n as u64,
            owner,
            light: self.light,
        });
        // SAFETY: the slots first..first+n are this producer's: it claimed
        // them, every consumer has passed their previous round (`claim`),
        // and (multi producer) it marked each WRITING, which no other
        // producer does for this round and no consumer reads.
        unsafe { self.write(first, n, f) };
        let lost = if let Some(guard) = guard {
            std::mem::forget(guard);
            // In order; once one slot was given up, the rest of the batch
            // is let go too, so what was published is always a prefix.
            let mut lost = None::<(u64, usize)>;
            for seq in first..first + n as u64 {
                if lost.is_some() {
                    marks::abandon(region, seq, owner);
                } else if marks::end_write(region, seq, owner).is_err() {
                    lost = Some((seq, (first + n as u64 - seq) as usize));
                }
            }
            lost
        } else {
            self.next = first + n as u64;
            publish_cursor(region, self.next, self.light);
            return Ok(first);
        };
        self.notify();
        match lost {
            Some((sequence, lost)) => Err(IpcPublishError::GivenUp { sequence, lost }),
            None => Ok(first),
        }
    }

    /// Marks `seq` WRITING; waits out a slow writer of the previous round
    /// or a claim a lap behind (`begin_write_waiting`, out of line: a
    /// bigger publish path costs the single producer's inline publish,
    /// whose code shares the function, about a quarter of its 1P→1C rate
    /// across processes here).
    /// `carried`: when the wait behind a claim a lap behind began at an
    /// earlier slot of the same batch (the claims behind a batch are
    /// usually one dead batch's: one hole timeout for all of them, not one
    /// per slot).
    /// `until`: a `try_publish` or `publish_timeout` waits no longer than
    /// its limit (`MarkFailure::Limit`).
    #[inline]
    fn begin_write(
        &self,
        seq: u64,
        owner: usize,
        carried: &mut Option<Instant>,
        until: Until,
    ) -> Result<(), MarkFailure> {
        match marks::begin_write(&self.bus.region, seq, owner) {
            Err(MarkFailure::Busy | MarkFailure::Behind) => {
                self.begin_write_waiting(seq, owner, carried, until)
            }
            other => other,
        }
    }

    #[cold]
    #[inline(never)]
    fn begin_write_waiting(
        &self,
        seq: u64,
        owner: usize,
        carried: &mut Option<Instant>,
        until: Until,
    ) -> Result<(), MarkFailure> {
        let region = &self.bus.region;
        let mut tries = 0u32;
        let mut behind_since = None::<(u64, Instant)>;
        loop {
            match marks::begin_write(region, seq, owner) {
                // A writer of the previous round still writes: wait for it,
                // unless the bus closes, or (a writer consumers gave up,
                // slow) the caller's limit passes: the claim then stays
                // unmarked, and the consumers that gave the writer up give
                // it up too. A live writer not given up (no consumer gates
                // it) is waited for whatever the limit: a claim left behind
                // it would be one more for each lap while it writes.
                Err(MarkFailure::Busy) if !self.bus.is_closed() => {
                    let given_up = marks::Mark(marks::raw(region, seq)).state() == marks::GIVEN_UP;
                    match until {
                        Until::Now if given_up => return Err(MarkFailure::Limit),
                        Until::Deadline(d) if given_up && Instant::now() >= d => {
                            return Err(MarkFailure::Limit)
                        }
                        _ => {}
                    }
                }
                // (Not limited by the caller's time: a timed publish that
                // left these unmarked too would pile claims up behind one
                // another on a bus without consumers, none released.)
                // An earlier lap's claim of the slot was never marked: wait
                // for its claimant a hole timeout (it may be slow), then
                // release it (a dead one never marks).
                Err(MarkFailure::Behind) if !self.bus.is_closed() => {
                    // The wait starts again whenever the mark moves (a round
                    // released: the next round's claimant gets its own),
                    // and goes on from the batch's slot before at first.
                    let mark = marks::raw(region, seq);
                    let since = match behind_since {
                        Some((m, since)) if m == mark => since,
                        Some(_) => behind_since.insert((mark, Instant::now())).1,
                        None => {
                            let since = carried.unwrap_or_else(Instant::now);
                            behind_since.insert((mark, since)).1
                        }
                    };
                    let timeout = Duration::from_nanos(
                        region.header().hole_timeout_ns.load(Ordering::Relaxed),
                    );
                    if cfg!(loom) || since.elapsed() >= timeout {
                        marks::skip_behind(region, seq);
                        *carried = Some(since);
                        continue;
                    }
                }
                // Closed meanwhile: the publish says so (not `GivenUp`,
                // whose "publish it again" cannot work on a closed bus).
                Err(MarkFailure::Busy | MarkFailure::Behind) => return Err(MarkFailure::Closed),
                other => return other,
            }
            tries += 1;
            if tries < 128 || cfg!(loom) {
                crate::loom::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Lets go of claimed, unmarked slots without writing them (consumers
    /// pass them as tombstones), then wakes sleepers.
    fn let_go(&self, seqs: std::ops::Range<u64>) {
        let owner = self.index + 1;
        let mut carried = None;
        for seq in seqs {
            if self
                .begin_write(seq, owner, &mut carried, Until::Never)
                .is_ok()
            {
                marks::abandon(&self.bus.region, seq, owner);
            }
        }
        self.notify();
    }

    /// Wakes sleeping consumers, if any.
    #[inline]
    fn notify(&self) {
        notify(&self.bus.region, self.light);
    }

    /// Runs `f` on the slots `first..first + n`. Under loom the write of
    /// the first slot spans `f`, so a model sees a write that overlaps it.
    ///
    /// # Safety
    /// The caller owns the slots.
    unsafe fn write(&self, first: u64, n: usize, f: impl FnOnce(&mut IpcBatch<'_, E>)) {
        if n == 1 {
            // SAFETY: the caller owns the slot; Pod events may hold any bytes.
            unsafe {
                self.bus.region.with_slot(first, true, |p| {
                    f(&mut IpcBatch {
                        head: core::slice::from_raw_parts_mut(p as *mut E, 1),
                        tail: &mut [],
                    })
                })
            }
        } else {
            // SAFETY: the caller owns the slots.
            f(&mut unsafe { self.slots(first, n) })
        }
    }

    /// # Safety
    /// The caller owns the slots `first..first + n`.
    unsafe fn slots(&self, first: u64, n: usize) -> IpcBatch<'_, E> {
        let cap = self.capacity as usize;
        let start = (first % self.capacity) as usize;
        let head_len = n.min(cap - start);
        let region = &self.bus.region;
        // SAFETY: the caller owns the slots; `with_slot` points at the first
        // of each run, and the runs lie inside the ring (`start + head_len
        // <= cap`). Pod events may hold any bytes.
        unsafe {
            let head = region.with_slot(first, true, |p| {
                core::slice::from_raw_parts_mut(p as *mut E, head_len)
            });
            let tail: &mut [E] = if n > head_len {
                region.with_slot(first + head_len as u64, true, |p| {
                    core::slice::from_raw_parts_mut(p as *mut E, n - head_len)
                })
            } else {
                &mut []
            };
            IpcBatch { head, tail }
        }
    }

    /// `Closed` when the bus is closed, or when another process took this
    /// producer's place (it was judged dead): publishing would write where
    /// the new owner writes.
    fn check_open(&self) -> Result<(), IpcPublishError> {
        if self.bus.is_closed() || !table::producer_owned(&self.bus.region, self.index, self.lease)
        {
            return Err(IpcPublishError::Closed);
        }
        Ok(())
    }

    /// Claims `n` sequences once there is room for them.
    fn claim(&mut self, n: u64, until: Until) -> Result<u64, IpcPublishError> {
        self.check_open()?;
        if !self.multi {
            let first = self.next;
            past_the_end(first, n, self.limit)?;
            self.wait_for_room(first, first + n - 1, until, true)?;
            return Ok(first);
        }
        if let Until::Never = until {
            // Refused before the claim, so a bus at its end is not pushed
            // further past it (checked again after: another producer may
            // claim meanwhile). Not under loom: a look that changes no
            // state, at the end of a bus's life, which would cost the
            // models a scheduling point (and a bound's worth of
            // interleavings) at every claim.
            if !cfg!(loom) {
                past_the_end(self.cursor().load(Ordering::Relaxed), n, self.limit)?;
            }
            // AcqRel: a total order of claims; nothing is published by it.
            let first = self.cursor().fetch_add(n, Ordering::AcqRel);
            past_the_end(first, n, self.limit)?;
            let last = first + n - 1;
            // Claimed: wait for room until the bus closes, then let go of
            // the slots that have room (consumers pass them at once); the
            // rest stay unmarked, and consumers give them up a hole timeout
            // after the ring has room for them (a consumer that never reads
            // again must not keep this publish from returning `Closed`).
            // While it waits, the claim is in this producer's entry: a
            // consumer at a slot of it that has room (a batch's first)
            // does not take it for a hole (`marks::claim_waits`).
            let waits = last >= self.cached_min.saturating_add(self.capacity);
            // Shown until its slots are marked (`publish_n`), so a consumer
            // never finds the claim both unmarked and not shown.
            if waits {
                self.entry().wait_first.store(first, Ordering::Relaxed);
                // Release: `wait_first` before it (`claim_waits` Acquires).
                self.entry().wait_last.store(last, Ordering::Release);
                // Relaxed: this handle's own flag.
                self.shows_wait
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let waited = self.wait_for_room(first, last, until, true);
            if waited.is_err() || self.bus.is_closed() {
                // Only the slots with room: marking one whose previous
                // round a consumer has not read would take it from them.
                let room_end = self
                    .cached_min
                    .saturating_add(self.capacity)
                    .clamp(first, first + n);
                self.let_go(first..room_end);
                self.unshow_wait();
                return Err(IpcPublishError::Closed);
            }
            return Ok(first);
        }
        // Claim only once there is room, so a timed-out claim leaves no hole.
        loop {
            let first = self.cursor().load(Ordering::Acquire);
            past_the_end(first, n, self.limit)?;
            self.wait_for_room(first, first + n - 1, until, true)?;
            // AcqRel: as fetch_add.
            if self
                .cursor()
                .compare_exchange(first, first + n, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(first);
            }
        }
    }

    /// Waits until `last` fits; `close_stops`: a close ends the wait
    /// (`Closed`). Checks consumers for life from the second look on (at
    /// once for calls that do not wait), at most every millisecond.
    fn wait_for_room(
        &mut self,
        first: u64,
        last: u64,
        until: Until,
        close_stops: bool,
    ) -> Result<(), IpcPublishError> {
        if last < self.cached_min.saturating_add(self.capacity) {
            return Ok(());
        }
        let mut tries = 0u32;
        loop {
            let check_dead = (tries > 0 || !matches!(until, Until::Never))
                && super::os::due_every_ms(&mut self.last_liveness);
            // The producer's side of the join protocol (table.rs).
            table::refresh_point(&self.bus.region);
            let min = table::min_consumer(&self.bus.region, check_dead).unwrap_or(first);
            self.cached_min = min.min(first);
            if last < self.cached_min.saturating_add(self.capacity) {
                return Ok(());
            }
            if close_stops && self.bus.is_closed() {
                return Err(IpcPublishError::Closed);
            }
            match until {
                Until::Now => return Err(IpcPublishError::Full),
                Until::Deadline(d) if Instant::now() >= d => return Err(IpcPublishError::Timeout),
                _ => {}
            }
            tries += 1;
            if tries < 64 {
                crate::loom::spin_loop();
            } else if tries < 128 || cfg!(loom) {
                crate::loom::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

impl<E: Pod> IpcProducer<E> {
    /// Under loom: claims the next slot, marks it being written, and this
    /// producer's process dies there (its place is not left).
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn die_writing(mut self) {
        let seq = self.claim(1, Until::Now).expect("room for the claim");
        let mut carried = None;
        self.begin_write(seq, self.index + 1, &mut carried, Until::Now)
            .expect("marked");
        self.leaves = false;
    }
}

impl<E: Pod> Drop for IpcProducer<E> {
    fn drop(&mut self) {
        if !self.leaves {
            return;
        }
        table::leave_producer(&self.bus.region, self.index, self.lease);
        // Sleeping consumers of a closed bus end once producers are gone.
        self.notify();
    }
}
