//! Reading from a shared-memory bus: a named consumer with its own sequence.
//!
//! What a consumer may read: below the cursor (single producer) or up to the
//! first slot whose mark is not published or a tombstone (multi producer),
//! and below the sequences of the consumers it comes after. It commits its
//! sequence once per batch (Release), which frees the slots for producers.
//!
//! A multi producer's hole: a consumer that stays at a claimed slot for the
//! bus's hole timeout gives it up (`marks::give_up`), then skips it. A
//! claim not marked yet is timed only from a look that found room for it
//! (its claimant may be waiting for room): a look without room, or the
//! first with room after one without, starts the timer again. A sleeping
//! (`Blocking`) consumer sleeps at most half the hole timeout at a time so
//! it can.

use std::time::{Duration, Instant};

use bytemuck::Pod;

use super::bus::{IpcBus, Wait};
use super::error::IpcPollError;
use super::marks::{self, GiveUp, Slot};
use super::os::now_ms;
use super::table::{self, Joined, Lease, ACTIVE, RESUMING};
use crate::loom::Ordering;
use crate::Sequence;

/// A consumer this one comes after, found by name.
#[derive(Debug)]
struct Upstream {
    name: String,
    /// Its entry and lease when last found.
    entry: Option<(usize, Lease)>,
    /// Its sequence when last read (at first: where this one joined).
    last: u64,
    /// Whether it was ever found (or found to have come and gone).
    seen: bool,
    /// Its sequence when a look (at most every ms) last found it holding
    /// this consumer with events waiting: it is checked for death only if
    /// it has not moved since.
    held_at: Option<u64>,
}

/// A consumer of a shared-memory bus (see [`IpcBus::consumer`]). Dropping
/// it leaves the table: it stops gating the producers.
pub struct IpcConsumer<E: Pod> {
    bus: IpcBus<E>,
    name: String,
    pub(crate) index: usize,
    pub(crate) lease: Lease,
    next: u64,
    upstream: Vec<Upstream>,
    /// Each table entry's lease generation when this consumer joined
    /// (empty without upstreams): an upstream that joined and left before
    /// any look found it shows as a free entry under its name with a newer
    /// generation (`came_and_went`).
    generations_at_join: Vec<u64>,
    wait: Wait,
    tombstones: u64,
    resumed_from: Option<u32>,
    /// The pending slot waited at, its mark then, since when (ms), and the
    /// claim counter then.
    hole: Option<(u64, u64, u64, u64)>,
    /// The claim at which the last look found no room (`GiveUp::Held`).
    hole_held: Option<u64>,
    /// Claims below this had waited a hole timeout when the last hole was
    /// given up: the rest of a dead producer's batch goes at once.
    expired_below: u64,
    /// The last slot this consumer gave up (a live producer's claim that
    /// waited for room goes at once only after an earlier slot of it).
    given_up_last: Option<u64>,
    hole_timeout_ms: u64,
    /// False once a loom model "killed" this consumer's process.
    leaves: bool,
    /// When `finished` last found a live producer on a closed bus, and the
    /// producers' leases then: while they are unchanged it reads `/proc`
    /// again at most every millisecond (every look under loom, which has no
    /// clock); a producer that leaves changes its lease.
    producer_seen: Option<(Instant, u64)>,
    /// When this consumer, held by an upstream, last looked whether it is
    /// dead (`upstream_bound`).
    reaped_at: Option<Instant>,
    /// When this consumer last looked whether the unmarked claim it waits
    /// at waits for room (`hole_held`).
    held_looked_at: Option<Instant>,
    /// This process may order a commit before its look at the sleepers
    /// with a compiler fence (`wake_downstream`, as producers do).
    light: bool,
}

impl<E: Pod> std::fmt::Debug for IpcConsumer<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpcConsumer")
            .field("name", &self.name)
            .field("next", &self.next)
            .finish()
    }
}

/// A poll's handler as one that always goes on (`handle_until`).
fn always<E>(mut f: impl FnMut(&E, Sequence, bool)) -> impl FnMut(&E, Sequence, bool) -> bool {
    move |e, seq, end_of_batch| {
        f(e, seq, end_of_batch);
        true
    }
}

/// Each consumer entry's lease generation, for [`came_and_went`], read
/// before a join.
pub(crate) fn generations(region: &super::region::Region) -> Vec<u64> {
    (0..region.layout.consumers)
        .map_while(|i| region.consumer(i))
        .map(|entry| Lease::load(&entry.meta.lease).generation())
        .collect()
}

/// Whether a consumer named `name` joined since `generations` were read
/// (each entry's lease generation then) and is gone: a free entry under its
/// name whose generation moved on, its name read between two equal looks
/// at its lease (a join rewriting it meanwhile is not believed). Not while
/// any entry is being joined: that may be a new one under the name, which
/// holds this consumer once it is active.
fn came_and_went(region: &super::region::Region, generations: &[u64], name: &str) -> bool {
    let entries = || (0..generations.len()).filter_map(|i| region.consumer(i));
    if entries().any(|entry| Lease::load(&entry.meta.lease).state() == table::JOINING) {
        return false;
    }
    generations.iter().enumerate().any(|(i, &then)| {
        region.consumer(i).is_some_and(|entry| {
            let l = Lease::load(&entry.meta.lease);
            l.state() == table::FREE && l.generation() != then && {
                let named = table::read_name(entry) == name;
                // Acquire: the name's loads come before the lease's second
                // look (a seqlock's reader).
                crate::loom::fence(Ordering::Acquire);
                named && entry.meta.lease.load(Ordering::Relaxed) == l.0
            }
        })
    })
}

/// A busy-spinning consumer's first looks after a batch, and the spin hints
/// between two of them (`IpcConsumer::idle`).
const BACKOFF_LOOKS: u32 = 16;
const BACKOFF_HINTS: u32 = 8;

impl<E: Pod> IpcConsumer<E> {
    pub(crate) fn new(
        bus: IpcBus<E>,
        name: &str,
        joined: Joined,
        after: &[&str],
        generations_at_join: Vec<u64>,
    ) -> Self {
        let (index, lease, resumed_from) = match joined {
            Joined::Fresh { index, lease } => (index, lease, None),
            Joined::Resumed {
                index,
                lease,
                previous_pid,
            } => (index, lease, Some(previous_pid)),
        };
        // A dead predecessor's sleeper bits, if it died asleep: they would
        // make every publish and commit wake sleepers for nothing.
        table::clear_sleeper(&bus.region, index);
        let entry = bus.region.consumer(index).expect("joined entry");
        // Acquire: the sequence its predecessor (or the join) stored.
        let next = entry.next.load(Ordering::Acquire);
        let upstream = after
            .iter()
            .map(|n| Upstream {
                name: (*n).into(),
                entry: None,
                last: next,
                seen: false,
                held_at: None,
            })
            .collect();
        let hole_timeout_ms =
            super::os::ms_up(bus.region.header().hole_timeout_ns.load(Ordering::Relaxed));
        let wait = bus.wait;
        let light = super::producer::light(&bus.region);
        let mut consumer = Self {
            bus,
            name: name.into(),
            index,
            lease,
            next,
            upstream,
            generations_at_join,
            wait,
            tombstones: 0,
            resumed_from,
            hole: None,
            hole_held: None,
            expired_below: 0,
            given_up_last: None,
            hole_timeout_ms,
            leaves: true,
            producer_seen: None,
            reaped_at: None,
            held_looked_at: None,
            light,
        };
        // Upstreams present now count as seen: one reclaimed before this
        // consumer's first poll no longer holds it (`consumer_after`).
        consumer.read_upstreams();
        // A consumer asleep after this one's name (joined before it) may go
        // on now, as may one held by an entry this join reclaimed.
        consumer.wake_downstream();
        consumer
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next sequence it will read.
    pub fn next_sequence(&self) -> u64 {
        self.next
    }

    /// The pid of the dead consumer whose place (and sequence) this one
    /// took, if it resumed one; 0 for the place of a stage that failed
    /// (its process may live on: the place has no owner).
    pub fn resumed_from(&self) -> Option<u32> {
        self.resumed_from
    }

    /// Given-up claims this handle skipped (a resumed place's earlier
    /// owners' are in its [`ConsumerInfo::tombstones`](super::ConsumerInfo)).
    pub fn tombstones(&self) -> u64 {
        self.tombstones
    }

    /// How this consumer waits from now on.
    pub fn set_wait(&mut self, wait: impl Into<Wait>) {
        self.wait = wait.into();
    }

    /// Handles up to `limit` available events with `f(event, sequence,
    /// end_of_batch)` and commits them; never waits (but may give up a hole
    /// it has waited at long enough). `Ok(0)` when nothing is available, or
    /// with a `limit` of 0. If `f` panics nothing of the batch is
    /// committed: the same events come again (at least once).
    ///
    /// Memory effect: an Acquire load of the cursor or marks before reading;
    /// a Release store of the consumer's sequence after `f` returned.
    ///
    /// # Errors
    /// [`IpcPollError::Closed`] once the bus is closed and everything was
    /// handled; [`IpcPollError::Lapped`] when this consumer was overtaken.
    pub fn poll(
        &mut self,
        limit: usize,
        f: impl FnMut(&E, Sequence, bool),
    ) -> Result<usize, IpcPollError> {
        let end = self.available()?;
        if end == self.next {
            return if self.finished() {
                Err(IpcPollError::Closed)
            } else {
                Ok(0)
            };
        }
        Ok(self.handle_until(end, limit, |_| {}, always(f)))
    }

    /// Like [`poll`](IpcConsumer::poll), waiting with this consumer's
    /// [`Wait`] until at least one event or tombstone was passed (`Ok(0)`:
    /// only tombstones).
    ///
    /// # Errors
    /// As for [`poll`](IpcConsumer::poll).
    pub fn poll_wait(
        &mut self,
        limit: usize,
        f: impl FnMut(&E, Sequence, bool),
    ) -> Result<usize, IpcPollError> {
        self.wait_then_handle(None, limit, f)
    }

    /// Like [`poll_wait`](IpcConsumer::poll_wait), waiting at most
    /// `timeout`.
    ///
    /// # Errors
    /// [`IpcPollError::Timeout`], or as for [`poll`](IpcConsumer::poll).
    pub fn poll_timeout(
        &mut self,
        timeout: Duration,
        limit: usize,
        f: impl FnMut(&E, Sequence, bool),
    ) -> Result<usize, IpcPollError> {
        self.wait_then_handle(Instant::now().checked_add(timeout), limit, f)
    }

    fn wait_then_handle(
        &mut self,
        deadline: Option<Instant>,
        limit: usize,
        f: impl FnMut(&E, Sequence, bool),
    ) -> Result<usize, IpcPollError> {
        self.wait_then_handle_until(deadline, limit, |_| {}, always(f))
    }

    /// Waits as [`poll_timeout`](IpcConsumer::poll_timeout) does, then
    /// hands events to `f` as [`handle_until`](Self::handle_until) does.
    pub(crate) fn wait_then_handle_until(
        &mut self,
        deadline: Option<Instant>,
        limit: usize,
        batch: impl FnOnce(u64),
        f: impl FnMut(&E, Sequence, bool) -> bool,
    ) -> Result<usize, IpcPollError> {
        let mut tries = 0u32;
        loop {
            let end = self.available()?;
            if end != self.next {
                return Ok(self.handle_until(end, limit, batch, f));
            }
            if self.finished() {
                return Err(IpcPollError::Closed);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(IpcPollError::Timeout);
            }
            tries = tries.saturating_add(1);
            self.idle(tries, deadline);
        }
    }

    fn idle(&mut self, tries: u32, deadline: Option<Instant>) {
        match self.wait {
            // Spinners of several processes cannot count each other as the
            // in-process ones do: a spin that found nothing 1,024 times in
            // a row yields every 64 polls, so on a full machine the
            // producer it waits for gets a core.
            Wait::BusySpin if tries >= 1024 && tries % 64 == 0 => crate::loom::yield_now(),
            // Racing a busy producer (the first polls after a batch), a
            // consumer that looks again at once pulls the cursor's and the
            // slots' lines back from the producer's core at every look and
            // stalls its stores: it waits a few spin hints between looks, so
            // the producer runs ahead and the next batch is longer. Idle
            // longer than that (a paced producer), it looks at every hint,
            // for the latency of the next event.
            Wait::BusySpin if tries <= BACKOFF_LOOKS => {
                for _ in 0..BACKOFF_HINTS {
                    crate::loom::spin_loop();
                }
            }
            Wait::BusySpin => crate::loom::spin_loop(),
            Wait::Yielding => crate::loom::yield_now(),
            Wait::Sleeping(d) => {
                let d = d.min(crate::Sleeping::MAX_NAP);
                crate::loom::sleep(
                    deadline.map_or(d, |t| d.min(t.saturating_duration_since(Instant::now()))),
                )
            }
            Wait::Blocking if tries < 64 && !cfg!(loom) => crate::loom::yield_now(),
            Wait::Blocking => self.sleep(deadline),
        }
    }

    /// Sleeps on the futex until a producer (or, for a consumer after
    /// others, an upstream's commit) wakes it, the deadline or half
    /// the hole timeout (to give a hole up), at most 100 ms (100 µs when
    /// its membarrier failed and a producer is light).
    fn sleep(&mut self, deadline: Option<Instant>) {
        let region = self.bus.region.clone();
        let wake = &region.control().wake;
        let bit = 1u64 << (self.index % 64);
        // Woken by its upstreams' commits too (`wake_downstream`).
        let downstream = !self.upstream.is_empty();
        // SeqCst: the bit before the last look at the cursor and marks; a
        // producer's publish, fence, then load of the bits (producer.rs).
        wake.sleepers.fetch_or(bit, Ordering::SeqCst);
        if downstream {
            // SeqCst: the bit before the last look at the upstreams'
            // sequences; an upstream's commit, fence, then load of the bits.
            wake.after.fetch_or(bit, Ordering::SeqCst);
        }
        // SeqCst: the looks at the cursor and marks below are Acquire loads,
        // outside the SeqCst order; the fence puts them after the bit.
        crate::loom::fence(Ordering::SeqCst);
        // The heavy side of the producers' light fences (producer.rs): after
        // it, a producer's publish is visible here or its next load of the
        // sleepers sees the bit.
        let fenced = super::os::heavy_fence();
        let seen = wake.word.load(Ordering::SeqCst);
        let ready = match self.available() {
            Ok(end) => end != self.next,
            Err(_) => true,
        } || self.finished();
        if !ready {
            let mut slice = Duration::from_millis((self.hole_timeout_ms / 2).clamp(1, 100));
            // SeqCst: after the fence above, as the producers' flag is
            // before theirs (producer.rs, `light`).
            if !fenced && wake.light.load(Ordering::SeqCst) != 0 {
                // A light producer may miss the bit: look again soon.
                slice = slice.min(Duration::from_micros(100));
            }
            if let Some(d) = deadline {
                slice = slice.min(d.saturating_duration_since(Instant::now()));
            }
            region.futex_wait(seen, slice);
        }
        wake.sleepers.fetch_and(!bit, Ordering::Relaxed);
        wake.after.fetch_and(!bit, Ordering::Relaxed);
    }

    /// After a join, a commit or a leave: wakes the consumers asleep behind
    /// another (perhaps this one), if any. The sleeper's side is `sleep`:
    /// its bit, a fence, then its look at its upstreams' sequences.
    /// Linux only: elsewhere sleepers nap at most 50 µs (`os::futex_wait`).
    #[inline]
    fn wake_downstream(&self) {
        if !cfg!(any(loom, target_os = "linux")) {
            return;
        }
        let region = &*self.bus.region;
        let wake = &region.control().wake;
        if self.light {
            // SeqCst: keeps the compiler from moving the load of the bits
            // above the commit; the sleeper's heavy fence orders them in
            // the hardware (producer.rs module docs).
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else if !crate::weaken::IPC_AFTER {
            // SeqCst: orders the commit before the load of the bits.
            crate::loom::fence(Ordering::SeqCst);
        }
        if wake.after.load(Ordering::Relaxed) != 0 {
            super::producer::wake_sleepers(region);
        }
    }

    /// Closed, every producer gone (left or dead), and everything they
    /// published or claimed passed. A producer that publishes after the
    /// close (its claim came before it) holds its place until it drops, so
    /// its event is never left behind.
    fn finished(&mut self) -> bool {
        let region = &*self.bus.region;
        let control = region.control();
        // Acquire: see `IpcBus::close`.
        if control.stats.closed.load(Ordering::Acquire) == 0
            || (self.next < control.cursor.load(Ordering::Acquire)
                && !self.stuck_at_a_claim_let_go()
                && !self.held_at_an_unmarked_claim(false))
        {
            return false;
        }
        let places = table::producer_places(region);
        let leases = (0..places).fold(0u64, |acc, i| {
            let entry = region.producer(i).expect("index below the table size");
            acc.rotate_left(7) ^ entry.lease.load(Ordering::Relaxed)
        });
        if !cfg!(loom)
            && self
                .producer_seen
                .is_some_and(|(t, seen)| seen == leases && t.elapsed() < Duration::from_millis(1))
        {
            // A producer was alive a moment ago and none left since: idle
            // polls of a closed bus do not read /proc each.
            return false;
        }
        for i in 0..places {
            let entry = region.producer(i).expect("index below the table size");
            // Acquire: a producer's last publish comes before its Release
            // leave, so the cursor read below sees it.
            let l = Lease::load(&entry.lease);
            if l.state() != table::FREE && region.alive(table::producer_owner(entry, l)) {
                self.producer_seen = Some((Instant::now(), leases));
                return false;
            }
        }
        // Acquire: as above. The claim is looked at again (not the answer
        // of the first look): its producer may have marked it before it left.
        self.next >= control.cursor.load(Ordering::Acquire)
            || self.stuck_at_a_claim_let_go()
            || self.held_at_an_unmarked_claim(true)
    }

    /// With every producer gone after the close: whether this consumer,
    /// held at `next` by an upstream, is at a claim nobody marked with no
    /// event published after it. Its upstream may have ended at that claim
    /// (`stuck_at_a_claim_let_go`, while the ring had no room for it) and
    /// never pass it: it would pass only tombstones, so nothing is left to
    /// read and this one ends too, instead of waiting for it for ever.
    /// Without `nothing_after`, only the first part (the marks after it
    /// are read once the producers are known to be gone: up to a ring of
    /// them).
    fn held_at_an_unmarked_claim(&self, nothing_after: bool) -> bool {
        let region = &*self.bus.region;
        if !region.layout.multi
            || self.upstream.is_empty()
            || !matches!(marks::slot(region, self.next), Slot::Pending)
            || !marks::unmarked(region, self.next, marks::raw(region, self.next))
        {
            return false;
        }
        if !nothing_after {
            return true;
        }
        // Acquire: the claims, and the marks of those published. Claims
        // a ring or more past `next` cannot be published while this
        // consumer gates their slots' earlier rounds.
        let claims = region.control().cursor.load(Ordering::Acquire);
        let end = claims.min(self.next.saturating_add(region.layout.capacity as u64));
        (self.next..end).all(|seq| marks::slot(region, seq) != Slot::Published)
    }

    /// With every producer gone after the close: whether `next` is a claim
    /// nobody marked that the ring has no room for (another live consumer
    /// has not read the slot's previous round). Its producer let go of it
    /// when the close ended its wait for room (`IpcProducer::claim`), or
    /// died waiting: nobody will write it, nor anything after it (no later
    /// claim had room either), and it cannot be given up while the slot
    /// holds an event another consumer has yet to read. So nothing is left
    /// to read: the consumer ends instead of waiting at it for ever.
    fn stuck_at_a_claim_let_go(&self) -> bool {
        let region = &*self.bus.region;
        region.layout.multi
            && matches!(marks::slot(region, self.next), Slot::Pending)
            && marks::unmarked(region, self.next, marks::raw(region, self.next))
            && !marks::room_for(region, self.next, false)
    }

    /// The end of what can be passed now: events and tombstones in
    /// `self.next..end`.
    fn available(&mut self) -> Result<u64, IpcPollError> {
        let bound = self.upstream_bound();
        let region = &*self.bus.region;
        if !table::still_owned(region, self.index, self.lease) {
            return Err(IpcPollError::Lapped {
                sequence: self.next,
            });
        }
        let cap = region.layout.capacity as u64;
        if !region.layout.multi {
            // Acquire: the events' bytes, written before the cursor's
            // Release store.
            let cursor = region.control().cursor.load(Ordering::Acquire);
            if cursor > self.next.saturating_add(cap) {
                return Err(IpcPollError::Lapped {
                    sequence: self.next,
                });
            }
            return Ok(cursor.min(bound).max(self.next));
        }
        let limit = bound.min(self.next.saturating_add(cap));
        let mut end = self.next;
        while end < limit {
            match marks::slot(region, end) {
                Slot::Published | Slot::Tombstone => end += 1,
                Slot::Lapped => return Err(IpcPollError::Lapped { sequence: end }),
                Slot::Pending if end == self.next => {
                    // SeqCst: as `give_up` reads the claim counter.
                    let claims = region.control().cursor.load(Ordering::SeqCst);
                    if claims <= end {
                        self.hole = None; // not claimed: no hole to time
                        break;
                    }
                    let mark = marks::raw(region, end);
                    let starting =
                        !matches!(self.hole, Some((s, m, _, _)) if s == end && m == mark);
                    // On arrival whether the ring has room for the claim;
                    // then every millisecond, also for the last slot of its
                    // claimant's batch (`claim_waits` reads the producers'
                    // entries, which they write as they wait: not at every
                    // arrival).
                    let look = !cfg!(loom)
                        && !crate::weaken::IPC_GIVE_UP
                        && marks::unmarked(region, end, mark);
                    let due = look && super::os::due_every_ms(&mut self.held_looked_at);
                    if look
                        && (starting || due)
                        && (!marks::room_for(region, end, false)
                            || (due && marks::claim_waits(region, end)))
                    {
                        // A claim without room (for it, or for the last
                        // slot of its batch): its claimant may be waiting
                        // for room. Its hole timeout counts once there is
                        // room (`GiveUp::Fresh`), for a consumer that
                        // arrives late at it too.
                        self.hole_held = Some(end);
                    }
                    // Claimed before the last hole's timer started: it has
                    // waited as long, unless a live writer is at it now, or
                    // its live claimant waited for room (which it may have
                    // had only since that hole was passed: its timeout
                    // counts from then, so it gets a timer of its own).
                    let expired = (end < self.expired_below
                        && !marks::live_writer(region, end)
                        && marks::shown_claim(region, end).map_or(true, |(first, _)| {
                            // Unless this consumer gave up an earlier slot
                            // of the same claim: it waited for all of it.
                            self.given_up_last.is_some_and(|g| first <= g && g < end)
                        }))
                        || hole_expired(&mut self.hole, self.hole_timeout_ms, end, mark, claims);
                    if expired {
                        let held_before = self.hole_held == Some(end);
                        let outcome = marks::give_up(region, end, held_before);
                        self.hole_held = (outcome == GiveUp::Held).then_some(end);
                        match outcome {
                            GiveUp::Done => {
                                self.given_up_last = Some(end);
                                if let Some((_, _, _, claims_then)) = self.hole.take() {
                                    self.expired_below = self.expired_below.max(claims_then);
                                }
                                continue;
                            }
                            GiveUp::Held | GiveUp::Fresh => {
                                // Its claimant may be waiting for room (a
                                // dead consumer held the ring), or have had
                                // room only since the last look: it gets a
                                // whole hole timeout once the room is there.
                                self.hole = Some((end, mark, now_ms(), claims));
                                self.expired_below = self.expired_below.min(end);
                            }
                            GiveUp::No => {}
                        }
                    }
                    break;
                }
                Slot::Pending => break,
            }
        }
        Ok(end)
    }

    /// The lowest sequence of the consumers this one comes after (u64::MAX
    /// without any). A gone upstream bounds at its last sequence seen.
    ///
    /// Held by a dead upstream (its process killed, or a failed stage's
    /// orphaned entry) with events waiting, this consumer notes it dead and
    /// reclaims it after the bus's `reclaim_after`: a producer reclaims
    /// dead entries only when it needs their room, so on a bus that went
    /// quiet, or closed, nothing else would, and the events the dead one
    /// never handled would stay unread here for ever. It looks at most
    /// every millisecond (every look under loom), and checks an upstream's
    /// process only when that upstream has not moved since the last look.
    fn upstream_bound(&mut self) -> u64 {
        if self.upstream.is_empty() {
            return u64::MAX;
        }
        let bound = self.read_upstreams();
        let region = &*self.bus.region;
        // Relaxed: only whether something was claimed past this consumer;
        // what it reads is ordered by `available`'s own loads.
        if bound > self.next
            || region.control().cursor.load(Ordering::Relaxed) <= self.next
            || !super::os::due_every_ms(&mut self.reaped_at)
        {
            return bound;
        }
        let mut reaped = false;
        for up in &mut self.upstream {
            let Some((i, l)) = up.entry else { continue };
            if up.last > self.next {
                up.held_at = None;
                continue;
            }
            let still = cfg!(loom) || up.held_at == Some(up.last);
            up.held_at = Some(up.last);
            if still && table::reap_upstream(region, i, l) {
                // Reclaimed: gone.
                up.entry = None;
                up.held_at = None;
                reaped = true;
            }
        }
        if reaped {
            self.read_upstreams()
        } else {
            bound
        }
    }

    /// Reads the sequences of the consumers this one comes after; the
    /// lowest (`upstream_bound`).
    fn read_upstreams(&mut self) -> u64 {
        let region = &*self.bus.region;
        let mut bound = u64::MAX;
        for up in &mut self.upstream {
            // Its entry while it holds it; else the entry now under its
            // name (a resume keeps the entry, a new join takes another).
            let current = up.entry.filter(|&(i, l)| table::still_owned(region, i, l));
            let found = current.or_else(|| {
                (0..region.layout.consumers).find_map(|i| {
                    let entry = region.consumer(i)?;
                    let l = Lease::load(&entry.meta.lease);
                    (matches!(l.state(), ACTIVE | RESUMING) && table::read_name(entry) == up.name)
                        .then_some((i, l))
                })
            });
            up.entry = found;
            match found {
                Some((i, _)) => {
                    up.seen = true;
                    // Acquire: the upstream read these events before its
                    // Release store of `next`.
                    up.last = region
                        .consumer(i)
                        .expect("found entry")
                        .next
                        .load(Ordering::Acquire);
                    bound = bound.min(up.last);
                }
                // Never seen yet: wait where this consumer joined, unless
                // it joined and left (or was reclaimed) between two looks.
                None if !up.seen && !came_and_went(region, &self.generations_at_join, &up.name) => {
                    bound = bound.min(up.last)
                }
                // Gone (left, or dead and reclaimed): go on without it.
                None => up.seen = true,
            }
        }
        bound
    }

    /// Hands `next..end` (at most `limit`) to `f`, which says whether to go
    /// on: the event it says `false` for is not committed, so it comes
    /// again (to this consumer, or to one that resumes its entry).
    /// `batch(n)` first, `n` the events that follow (tombstones are not
    /// counted). Returns the events handled.
    fn handle_until(
        &mut self,
        end: u64,
        limit: usize,
        batch: impl FnOnce(u64),
        mut f: impl FnMut(&E, Sequence, bool) -> bool,
    ) -> usize {
        if limit == 0 {
            return 0; // as the in-process poller: nothing handled
        }
        let region = &*self.bus.region;
        let stop = end.min(self.next.saturating_add(limit as u64));
        // The batch's events and its last (tombstones may follow it). A
        // mark below `end` no longer changes: it is published or given up,
        // and no producer reuses its slot before this consumer passes it.
        let (events, last) = if region.layout.multi {
            (self.next..stop).fold((0, stop), |(n, last), seq| {
                if marks::slot(region, seq) == Slot::Published {
                    (n + 1, seq)
                } else {
                    (n, last)
                }
            })
        } else {
            (stop - self.next, stop - 1)
        };
        batch(events);
        let mut handled = 0;
        let mut committed = stop;
        // Counted once committed: a panic in `f` commits nothing, and the
        // same tombstones are passed again.
        let mut tombstones = 0;
        for seq in self.next..stop {
            if region.layout.multi && marks::slot(region, seq) != Slot::Published {
                tombstones += 1;
                continue;
            }
            // SAFETY: `seq` is published (cursor or mark, Acquire) and below
            // what this consumer gates, so no producer writes it until this
            // consumer's sequence passes it; Pod events may hold any bytes.
            let go_on = unsafe {
                region.with_slot(seq, false, |p| {
                    f(&*(p as *const E), seq as Sequence, seq == last)
                })
            };
            if !go_on {
                committed = seq;
                break;
            }
            handled += 1;
        }
        if tombstones > 0 {
            self.tombstones += tombstones;
            region
                .consumer(self.index)
                .expect("own entry")
                .meta
                .tombstones
                .fetch_add(tombstones, Ordering::Relaxed);
        }
        self.next = committed;
        self.hole = None;
        // Release: the reads above before the producers reuse the slots.
        region
            .consumer(self.index)
            .expect("own entry")
            .next
            .store(committed, Ordering::Release);
        self.wake_downstream();
        handled
    }
}

impl<E: Pod> IpcConsumer<E> {
    /// Stops as a killed process would: the entry stays, owned by no live
    /// process, so it gates for the bus's `reclaim_after` at the sequence
    /// last committed, and a consumer joining under this name within that
    /// time resumes there (a failed stage, stage.rs).
    pub(crate) fn abandon(mut self) {
        if table::orphan_consumer(&self.bus.region, self.index, self.lease) {
            self.leaves = false;
        }
    }

    /// Leaves after a refused join (a cycle): as a drop, but its entry's
    /// name cleared first (`table::leave_refused`).
    pub(crate) fn leave_refused(mut self) {
        self.leaves = false;
        table::leave_refused(&self.bus.region, self.index, self.lease);
        self.wake_downstream();
    }

    /// Under loom: this consumer fails as a stage does (`abandon`).
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn orphan(self) {
        self.abandon();
    }

    /// Under loom: this consumer's process dies (its entry stays).
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn die(mut self) {
        self.leaves = false;
    }
}

impl<E: Pod> Drop for IpcConsumer<E> {
    fn drop(&mut self) {
        if self.leaves {
            table::leave_consumer(&self.bus.region, self.index, self.lease);
            // Its downstreams go on without it.
            self.wake_downstream();
        }
    }
}

/// Whether a consumer has waited at claimed `seq`, its mark unchanged, for
/// the hole timeout (`hole`: the slot waited at, its mark then, since when,
/// the claim counter then).
/// The timer starts again whenever the mark changes (claimed, then marked
/// WRITING: a live writer at work).
fn hole_expired(
    hole: &mut Option<(u64, u64, u64, u64)>,
    timeout_ms: u64,
    seq: u64,
    mark: u64,
    claims: u64,
) -> bool {
    hole_expired_at(hole, timeout_ms, seq, mark, claims, now_ms())
}

/// [`hole_expired`] at millisecond `now`.
fn hole_expired_at(
    hole: &mut Option<(u64, u64, u64, u64)>,
    timeout_ms: u64,
    seq: u64,
    mark: u64,
    claims: u64,
    now: u64,
) -> bool {
    match *hole {
        Some((s, m, since, _)) if s == seq && m == mark => {
            // More than the timeout in whole milliseconds: the clock counts
            // them (floored), so this much has passed, never less.
            now.saturating_sub(since) > timeout_ms || cfg!(loom)
        }
        _ => {
            *hole = Some((seq, mark, now, claims));
            cfg!(loom)
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::os::ms_up;
    use super::hole_expired_at;

    /// The clock counts whole milliseconds (floored): a hole seen at 100
    /// (it may be 100.999) has waited a 1 ms timeout only at 102, and a
    /// timeout of 1.5 ms counts as 2. A hole seen at 100.999 was given up
    /// at 101, a microsecond later.
    #[test]
    fn a_hole_timeout_is_never_cut_short_by_the_millisecond_clock() {
        let mut hole = None;
        assert!(!hole_expired_at(&mut hole, 1, 7, 0, 8, 100));
        assert!(!hole_expired_at(&mut hole, 1, 7, 0, 8, 101));
        assert!(hole_expired_at(&mut hole, 1, 7, 0, 8, 102));
        assert_eq!((ms_up(1_500_000), ms_up(2_000_000), ms_up(0)), (2, 2, 0));
    }
}
