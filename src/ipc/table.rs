//! The producer and consumer tables: who owns each entry (a lease), how an
//! entry is joined, taken over from a dead owner, left, and reclaimed.
//!
//! A lease is one 64-bit word: the owner's pid, a generation bumped at every
//! change of owner, and a state (free, joining, active). Every change of
//! owner is one CAS on the lease that expects the generation it read, so two
//! processes never both win an entry, and a reclaim decided on what one
//! owner did never removes the next owner.
//!
//! Orderings. A joiner's CAS to JOINING is Acquire (it reads what the last
//! owner left); its CAS to ACTIVE is Release. It then does a read-modify-
//! write on the control block's `joins` word (AcqRel) and only then reads
//! the cursor. A producer refreshing its view of the table does the same
//! read-modify-write first, then reads the entries. The two RMWs are
//! ordered: if the producer's came second, it sees the joiner ACTIVE (and
//! its start position); if the joiner's came second, the joiner's cursor
//! read sees every claim the producer made before its refresh, so the
//! bound the producer uses (never above the first sequence of its claim)
//! is at or below where the joiner starts. A leave or reclaim is a Release
//! CAS to FREE.
//!
//! Death. An entry whose owner's process is gone keeps gating for the bus's
//! `reclaim_after` from the moment someone first saw it dead, so a consumer
//! restarted within that time resumes where its predecessor stopped; then
//! the first producer that finds the ring full reclaims it, or a consumer
//! after it that it holds (`reap_upstream`).

use super::layout::{ConsumerEntry, ProducerEntry};
use super::os::{now_ms, Identity};
use super::region::Region;
use crate::loom::{AtomicU64, Ordering};

pub(crate) const FREE: u64 = 0;
pub(crate) const JOINING: u64 = 1;
pub(crate) const ACTIVE: u64 = 2;
/// A consumer taking over a dead one's entry: it gates as ACTIVE, but its
/// start time may not be written yet, so its pid alone says whether it lives.
pub(crate) const RESUMING: u64 = 3;

/// An entry's owner word: pid (bits 0–31), generation (32–61), state (62–63).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease(pub(crate) u64);

impl Lease {
    pub(crate) fn new(state: u64, generation: u64, pid: u32) -> Self {
        Self(state << 62 | (generation & ((1 << 30) - 1)) << 32 | pid as u64)
    }
    pub(crate) fn state(self) -> u64 {
        self.0 >> 62
    }
    pub(crate) fn generation(self) -> u64 {
        (self.0 >> 32) & ((1 << 30) - 1)
    }
    pub(crate) fn pid(self) -> u32 {
        self.0 as u32
    }
    /// The next owner's lease.
    pub(crate) fn next(self, state: u64, pid: u32) -> Self {
        Self::new(state, self.generation() + 1, pid)
    }
    pub(crate) fn load(word: &AtomicU64) -> Self {
        // Acquire: pairs with the Release (or SeqCst) store that made this
        // lease, so the entry's other fields the owner wrote are visible.
        Self(word.load(Ordering::Acquire))
    }
}

fn name_words(name: &str) -> [u64; 4] {
    let mut bytes = [0u8; 32];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    core::array::from_fn(|i| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap()))
}

/// An entry's name as stored (lossy for a hostile writer's bytes).
pub(crate) fn read_name(entry: &ConsumerEntry) -> String {
    let mut bytes = Vec::with_capacity(32);
    for w in &entry.meta.name {
        bytes.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(32);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn has_name(entry: &ConsumerEntry, words: &[u64; 4]) -> bool {
    entry
        .meta
        .name
        .iter()
        .zip(words)
        .all(|(a, b)| a.load(Ordering::Relaxed) == *b)
}

/// The owner of a consumer entry under lease `l`. While JOINING or
/// RESUMING the start time may still be the last owner's: the pid alone.
pub(crate) fn consumer_owner(entry: &ConsumerEntry, l: Lease) -> Identity {
    let start = if l.state() == ACTIVE {
        entry.meta.start.load(Ordering::Relaxed)
    } else {
        0
    };
    Identity {
        pid: l.pid(),
        start,
    }
}

/// The owner of a producer entry under lease `l` (the pid alone while
/// JOINING, as for consumers).
pub(crate) fn producer_owner(entry: &ProducerEntry, l: Lease) -> Identity {
    let start = if l.state() == ACTIVE {
        entry.start.load(Ordering::Relaxed)
    } else {
        0
    };
    Identity {
        pid: l.pid(),
        start,
    }
}

/// What joining a consumer entry found.
#[derive(Debug)]
pub(crate) enum Joined {
    /// A fresh entry, starting at `next`.
    Fresh { index: usize, lease: Lease },
    /// The entry of a dead consumer of the same name, resumed where it
    /// stopped.
    Resumed {
        index: usize,
        lease: Lease,
        previous_pid: u32,
    },
}

/// Why a join failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JoinFailure {
    InUse { pid: u32 },
    Full,
}

/// The sequence a joining consumer starts at: every claim made so far is
/// behind it (single producer: everything published); and the join's
/// ticket (its place in the order of joins, from 1).
fn join_point(region: &Region) -> (u64, u64) {
    // AcqRel RMW: the meeting point with refreshing producers (module docs).
    // Wrapping, and never 0 ("no ticket yet"): a peer may have written
    // any value here (the module's Trust).
    let ticket = region
        .control()
        .stats
        .joins
        .fetch_add(1, Ordering::AcqRel)
        .wrapping_add(1)
        .max(1);
    // Acquire: the cursor as of the producers' refreshes ordered before.
    (region.control().cursor.load(Ordering::Acquire), ticket)
}

/// A producer's half of the meeting point, before it reads the table.
pub(crate) fn refresh_point(region: &Region) {
    if !crate::weaken::IPC_JOIN {
        // AcqRel RMW: module docs.
        region.control().stats.joins.fetch_add(0, Ordering::AcqRel);
    }
}

/// Joins the consumer table under `name` as process `me`.
pub(crate) fn join_consumer(
    region: &Region,
    me: Identity,
    name: &str,
) -> Result<Joined, JoinFailure> {
    let words = name_words(name);
    // A live consumer of this name anywhere in the table: in use (before a
    // dead entry of the name is resumed, wherever each lies).
    for index in 0..region.layout.consumers {
        let entry = region.consumer(index).expect("index below the table size");
        let l = Lease::load(&entry.meta.lease);
        if matches!(l.state(), ACTIVE | RESUMING) && has_name(entry, &words) {
            let owner = consumer_owner(entry, l);
            if region.alive(owner) {
                return Err(JoinFailure::InUse { pid: owner.pid });
            }
        }
    }
    // A dead consumer of this name: take its entry over and go on from its
    // sequence. It never stopped gating, so nothing it had not read is gone.
    for index in 0..region.layout.consumers {
        let entry = region.consumer(index).expect("index below the table size");
        let l = Lease::load(&entry.meta.lease);
        if !matches!(l.state(), ACTIVE | RESUMING) || !has_name(entry, &words) {
            continue;
        }
        let owner = consumer_owner(entry, l);
        if region.alive(owner) {
            return Err(JoinFailure::InUse { pid: owner.pid });
        }
        let resuming = l.next(RESUMING, me.pid);
        // AcqRel: Acquire the dead owner's last `next`; RESUMING gates as
        // ACTIVE did, so the entry never stops gating.
        if entry
            .meta
            .lease
            .compare_exchange(l.0, resuming.0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            entry.meta.start.store(me.start, Ordering::Relaxed);
            entry.meta.dead_since.store(0, Ordering::Relaxed);
            let mine = Lease::new(ACTIVE, resuming.generation(), me.pid);
            // Release: the start time before the lease that says to trust
            // it. A CAS: a reclaim of the entry (owner judged dead by its
            // pid) may have come between.
            if entry
                .meta
                .lease
                .compare_exchange(resuming.0, mine.0, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(Joined::Resumed {
                    index,
                    lease: mine,
                    previous_pid: owner.pid,
                });
            }
        }
    }
    for attempt in 0..2 {
        if attempt == 1 {
            // No free entry: look for dead owners, as a producer needing
            // room does, so that on a quiet bus the entries of dead
            // processes do not fill the table for ever (each is reclaimed
            // `reclaim_after` after it was first seen dead).
            let _ = min_consumer(region, true);
        }
        if let Some(joined) = join_free(region, me, &words)? {
            return Ok(joined);
        }
    }
    Err(JoinFailure::Full)
}

/// Takes a free consumer entry under `words`; `None` if none was free.
fn join_free(
    region: &Region,
    me: Identity,
    words: &[u64; 4],
) -> Result<Option<Joined>, JoinFailure> {
    for index in 0..region.layout.consumers {
        let entry = region.consumer(index).expect("index below the table size");
        let l = Lease::load(&entry.meta.lease);
        if l.state() != FREE {
            continue;
        }
        let joining = l.next(JOINING, me.pid);
        // Acquire: what the last owner wrote before its Release leave.
        if entry
            .meta
            .lease
            .compare_exchange(l.0, joining.0, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        entry.meta.start.store(me.start, Ordering::Relaxed);
        entry.meta.dead_since.store(0, Ordering::Relaxed);
        entry.meta.tombstones.store(0, Ordering::Relaxed);
        entry.meta.ticket.store(0, Ordering::Relaxed);
        for (w, v) in entry.meta.name.iter().zip(words) {
            w.store(*v, Ordering::Relaxed);
        }
        // Relaxed: published by the Release lease CAS below. No later than
        // the start set after ACTIVE, so a producer that reads it in
        // between is held no less. Acquire: the cursor as published.
        entry.next.store(
            region.control().cursor.load(Ordering::Acquire),
            Ordering::Relaxed,
        );
        let active = Lease::new(ACTIVE, joining.generation(), me.pid);
        // Release: the name, start time and `next` above before the lease
        // that makes producers read the entry. A CAS, not a store: the
        // entry may have been reclaimed meanwhile (never while this pid
        // lives, but a hostile peer may free it).
        if entry
            .meta
            .lease
            .compare_exchange(joining.0, active.0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        let (start, ticket) = join_point(region);
        // Release: the start position, for producers that read the entry.
        entry.next.store(start, Ordering::Release);
        // Relaxed: only its value matters, to a twin (below) that waits
        // for it.
        entry.meta.ticket.store(ticket, Ordering::Relaxed);
        // Another live consumer under the same name: of two joiners' RMWs
        // in `join_point`, the second sees the first's ACTIVE lease, so the
        // later of two joins at once sees the earlier, and gives way. The
        // earlier stays: a twin with a later ticket gives way itself. A
        // twin whose ticket does not show within a millisecond (its
        // process stalled mid-join, or a peer wrote no ticket) counts as
        // earlier: at most one stays.
        let twin = (0..region.layout.consumers)
            .filter(|&i| i != index)
            .find_map(|i| {
                let other = region.consumer(i).expect("index below the table size");
                let ol = Lease::load(&other.meta.lease);
                if !matches!(ol.state(), ACTIVE | RESUMING) || !has_name(other, words) {
                    return None;
                }
                let started = std::time::Instant::now();
                let theirs = loop {
                    // Relaxed: as the store above.
                    let t = other.meta.ticket.load(Ordering::Relaxed);
                    // (Under loom, no clock: the twin, alive, stores it.)
                    if t != 0
                        || (!cfg!(loom) && started.elapsed() > std::time::Duration::from_millis(1))
                    {
                        break t;
                    }
                    crate::loom::yield_now();
                };
                (theirs == 0 || theirs < ticket).then_some(ol.pid())
            });
        if let Some(pid) = twin {
            leave_consumer(region, index, active);
            return Err(JoinFailure::InUse { pid });
        }
        return Ok(Some(Joined::Fresh {
            index,
            lease: active,
        }));
    }
    Ok(None)
}

/// A name's hash as the upstream lists keep it (never 0: an empty place).
fn name_hash(words: &[u64; 4]) -> u64 {
    // FNV-1a over the name's words: names differ by a byte at least.
    let h = words.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, w| {
        (h ^ w).wrapping_mul(0x0000_0100_0000_01b3)
    });
    h | 1
}

/// Looks for a cycle `name` would close by coming after `after`: a live
/// consumer that `after` reaches through the upstream lists and that comes
/// after `name` itself. Returns its name, if any. Entries of dead owners
/// are left out: they wait for nobody, and whoever resumes one is checked
/// at its own join. `own` is the caller's entry, if it has joined.
pub(crate) fn cycle_through(
    region: &Region,
    own: Option<usize>,
    name: &str,
    after: &[&str],
) -> Option<String> {
    let me = name_hash(&name_words(name));
    // Names reached so far, and those whose lists are still to be read.
    // Bounded by the table: each name is read once.
    let mut seen: Vec<u64> = after.iter().map(|n| name_hash(&name_words(n))).collect();
    let mut todo = seen.clone();
    while let Some(h) = todo.pop() {
        for i in (0..region.layout.consumers).filter(|&i| Some(i) != own) {
            let other = region.consumer(i).expect("index below the table size");
            let l = Lease::load(&other.meta.lease);
            if !matches!(l.state(), ACTIVE | RESUMING) {
                continue;
            }
            let words: [u64; 4] =
                core::array::from_fn(|w| other.meta.name[w].load(Ordering::Relaxed));
            // Acquire: pairs with `declare_upstreams`' Release (its list).
            if name_hash(&words) != h
                || other.meta.upstreams_of.load(Ordering::Acquire) != l.generation() + 1
                || !region.alive(consumer_owner(other, l))
            {
                continue;
            }
            for place in &other.meta.upstreams {
                // Relaxed: as the stores in `declare_upstreams`.
                let up = place.load(Ordering::Relaxed);
                if up == me {
                    return Some(read_name(other));
                }
                if up != 0 && !seen.contains(&up) {
                    seen.push(up);
                    todo.push(up);
                }
            }
        }
    }
    None
}

/// Writes the upstreams of the consumer at `index` (under `lease`, its
/// own), then looks for a cycle through them as [`cycle_through`] does,
/// for two consumers joining at once, each after the other: each writes
/// its list before a SeqCst fence and reads the other's after it; of the
/// two fences, the later one's reads see the earlier one's list, so at
/// least one of the two sees the cycle (both may: both are refused).
pub(crate) fn declare_upstreams(
    region: &Region,
    index: usize,
    lease: Lease,
    name: &str,
    after: &[&str],
) -> Option<String> {
    let entry = region.consumer(index).expect("own entry");
    for (i, place) in entry.meta.upstreams.iter().enumerate() {
        let up = after.get(i).map_or(0, |n| name_hash(&name_words(n)));
        // Relaxed: published by the Release store of `upstreams_of`.
        place.store(up, Ordering::Relaxed);
    }
    // Release: the list above before the generation that says it is this
    // owner's.
    entry
        .meta
        .upstreams_of
        .store(lease.generation() + 1, Ordering::Release);
    if after.is_empty() {
        return None;
    }
    if !crate::weaken::IPC_CYCLE {
        // SeqCst: this list before the reads of the others' (above).
        crate::loom::fence(Ordering::SeqCst);
    }
    cycle_through(region, Some(index), name, after)
}

/// Leaves entry `index` (under `lease`) after a refused join, its name
/// cleared first: a consumer waiting for an upstream of that name must not
/// take it for one that came and went (`consumer::came_and_went`).
pub(crate) fn leave_refused(region: &Region, index: usize, lease: Lease) {
    let entry = region.consumer(index).expect("own entry");
    for w in &entry.meta.name {
        // Relaxed: published by the Release CAS of the leave.
        w.store(0, Ordering::Relaxed);
    }
    leave_consumer(region, index, lease);
}

/// Frees entry `index` if it is still under `lease`.
pub(crate) fn leave_consumer(region: &Region, index: usize, lease: Lease) {
    let entry = region.consumer(index).expect("index below the table size");
    let free = lease.next(FREE, 0);
    // Its bits, while the entry is still its own (after the CAS they may be
    // a new owner's).
    clear_sleeper(region, index);
    // Release: the entry's last sequence is final before it can be reused.
    let _ =
        entry
            .meta
            .lease
            .compare_exchange(lease.0, free.0, Ordering::Release, Ordering::Relaxed);
}

/// Leaves entry `index` as if its owner had died: the same state, no owner
/// (pid 0 is never alive), a new generation, so it gates until reclaimed
/// or resumed. False if it is no longer under `lease`.
pub(crate) fn orphan_consumer(region: &Region, index: usize, lease: Lease) -> bool {
    let entry = region.consumer(index).expect("index below the table size");
    let orphan = lease.next(lease.state(), 0);
    // Release: the entry's last sequence before the lease that lets a
    // successor resume from it.
    let order = if crate::weaken::IPC_ORPHAN {
        Ordering::Relaxed
    } else {
        Ordering::Release
    };
    // Its bits, while the entry is still its own (as `leave_consumer`).
    if still_owned(region, index, lease) {
        clear_sleeper(region, index);
    }
    entry
        .meta
        .lease
        .compare_exchange(lease.0, orphan.0, order, Ordering::Relaxed)
        .is_ok()
}

/// A consumer held by upstream entry `index` (under `l`), which no producer
/// reclaims unless it needs the room: notes its owner dead if it is, and
/// reclaims it after `reclaim_after`. True if reclaimed.
pub(crate) fn reap_upstream(region: &Region, index: usize, l: Lease) -> bool {
    let entry = region.consumer(index).expect("index below the table size");
    reap_if_dead(region, index, entry, l)
}

/// Checks the owner of an ACTIVE or RESUMING entry (under `l`) for life:
/// a dead one is noted, and reclaimed after `reclaim_after` (true); one
/// seen dead before (a transient failure to read its process) and alive
/// now has its grace time start again when it dies.
fn reap_if_dead(region: &Region, index: usize, entry: &ConsumerEntry, l: Lease) -> bool {
    if crate::weaken::IPC_REAP || !region.alive(consumer_owner(entry, l)) {
        return note_dead(region, index, entry, l);
    }
    if entry.meta.dead_since.load(Ordering::Relaxed) != 0 {
        entry.meta.dead_since.store(0, Ordering::Relaxed);
    }
    false
}

pub(crate) fn clear_sleeper(region: &Region, index: usize) {
    let wake = &region.control().wake;
    wake.sleepers
        .fetch_and(!(1u64 << (index % 64)), Ordering::Relaxed);
    wake.after
        .fetch_and(!(1u64 << (index % 64)), Ordering::Relaxed);
}

/// Whether consumer entry `index` may still be trusted to hold the entry
/// under `lease` (false once it was reclaimed or taken over).
pub(crate) fn still_owned(region: &Region, index: usize, lease: Lease) -> bool {
    let entry = region.consumer(index).expect("index below the table size");
    entry.meta.lease.load(Ordering::Acquire) == lease.0
}

/// The lowest sequence a live (or recently dead) consumer has not handled,
/// or `None` without consumers. With `check_dead`, owners are checked for
/// life, dead ones are noted, and entries dead longer than the bus's
/// `reclaim_after` are reclaimed (and no longer gate).
pub(crate) fn min_consumer(region: &Region, check_dead: bool) -> Option<u64> {
    let mut min = None::<u64>;
    for index in 0..region.layout.consumers {
        let entry = region.consumer(index).expect("index below the table size");
        let l = Lease::load(&entry.meta.lease);
        match l.state() {
            ACTIVE | RESUMING => {}
            JOINING if check_dead => {
                // A process that died while joining never set its start.
                if !region.alive(consumer_owner(entry, l)) {
                    note_dead(region, index, entry, l);
                }
                continue;
            }
            _ => continue,
        }
        if check_dead && reap_if_dead(region, index, entry, l) {
            continue;
        }
        // Acquire: the consumer read the slots below `next` before its
        // Release store; a producer reuses them only after this load.
        let next = entry.next.load(Ordering::Acquire);
        min = Some(min.map_or(next, |m: u64| m.min(next)));
    }
    min
}

/// Notes that entry `index`'s owner (under `l`) is dead; reclaims the entry
/// once it has been dead for the bus's `reclaim_after`. True if reclaimed.
fn note_dead(region: &Region, index: usize, entry: &ConsumerEntry, l: Lease) -> bool {
    let tag = l.generation() & 0xF_FFFF;
    let now = now_ms();
    let seen = entry.meta.dead_since.load(Ordering::Relaxed);
    let reclaim_ms = super::os::ms_up(region.header().reclaim_after_ns.load(Ordering::Relaxed));
    if seen == 0 || seen & 0xF_FFFF != tag {
        let _ = entry.meta.dead_since.compare_exchange(
            seen,
            now << 20 | tag,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        // Under loom every grace time has passed at once.
        if !cfg!(loom) {
            return false;
        }
    } else if !cfg!(loom) && now.saturating_sub(seen >> 20) <= reclaim_ms {
        // Dead for more than `reclaim_after` in whole (floored) milliseconds
        // before it is reclaimed: never early.
        return false;
    }
    let free = l.next(FREE, 0);
    // Release: as a leave. Expecting `l` makes sure the owner seen dead is
    // the one removed, not a consumer that took the entry over since.
    if entry
        .meta
        .lease
        .compare_exchange(l.0, free.0, Ordering::Release, Ordering::Relaxed)
        .is_ok()
    {
        region
            .control()
            .stats
            .reclaimed
            .fetch_add(1, Ordering::Relaxed);
        clear_sleeper(region, index);
        return true;
    }
    false
}

/// Why a producer could not join.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ProducerFailure {
    /// The single producer's lease is held by a live process.
    Busy {
        pid: u32,
    },
    Full,
}

/// How many producer entries are in use: all of the table on a multi
/// producer bus, entry 0 on a single producer's.
pub(crate) fn producer_places(region: &Region) -> usize {
    if region.layout.multi {
        region.layout.producers
    } else {
        1
    }
}

/// Takes a producer entry as process `me`: the single producer's (entry 0)
/// if its owner is gone, or a multi producer's free or dead entry. Returns
/// the entry's index and lease, and the pid of a dead predecessor.
pub(crate) fn join_producer(
    region: &Region,
    me: Identity,
) -> Result<(usize, Lease, Option<u32>), ProducerFailure> {
    // This process's layout, never the header's kind: a peer may rewrite
    // that, and a single producer's layout has no marks to release.
    let multi = region.layout.multi;
    let mut index = 0;
    while index < producer_places(region) {
        let entry = region.producer(index).expect("index below the table size");
        let l = Lease::load(&entry.lease);
        let predecessor = match l.state() {
            FREE => None,
            _ => {
                let owner = producer_owner(entry, l);
                if region.alive(owner) {
                    if multi {
                        index += 1;
                        continue;
                    }
                    return Err(ProducerFailure::Busy { pid: owner.pid });
                }
                Some(owner.pid)
            }
        };
        let joining = l.next(JOINING, me.pid);
        // AcqRel: Acquire reads what the last owner left; Release orders
        // nothing yet (the start time is written next).
        if entry
            .lease
            .compare_exchange(l.0, joining.0, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            if !multi {
                // The single producer's one place, taken meanwhile: look
                // again (a loop, not a call: a peer flipping the lease
                // cannot grow the stack), so the loser hears who holds it
                // (`Busy`), not that a table is full.
                continue;
            }
            index += 1;
            continue;
        }
        // Relaxed, as `start`: published by the Release lease CAS below
        // (a consumer reads the lease, Acquire, before the range, and
        // believes the range only if the lease is unchanged after it and
        // its owner lives: `marks::claim_waits`).
        entry.wait_last.store(0, Ordering::Relaxed);
        entry.start.store(me.start, Ordering::Relaxed);
        if predecessor.is_some() {
            region
                .control()
                .stats
                .producers_replaced
                .fetch_add(1, Ordering::Relaxed);
            if multi {
                super::marks::release_dead_writer(region, index);
            }
        }
        let active = Lease::new(ACTIVE, joining.generation(), me.pid);
        // Release: the start time (and the released marks) before the lease
        // that names the owner. A CAS: never overwrite a lease another
        // process took meanwhile.
        if entry
            .lease
            .compare_exchange(joining.0, active.0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            return Err(ProducerFailure::Full);
        }
        return Ok((index, active, predecessor));
    }
    Err(ProducerFailure::Full)
}

/// Frees producer entry `index` if it is still under `lease`.
pub(crate) fn leave_producer(region: &Region, index: usize, lease: Lease) {
    let entry = region.producer(index).expect("index below the table size");
    // Release: the producer's last marks are written before the entry can
    // be reused.
    let _ = entry.lease.compare_exchange(
        lease.0,
        lease.next(FREE, 0).0,
        Ordering::Release,
        Ordering::Relaxed,
    );
}

/// Whether the writer named by a mark (producer entry `owner - 1`) is gone:
/// its entry is free (it left after finishing) or its process died.
pub(crate) fn writer_gone(region: &Region, owner: usize) -> bool {
    let Some(entry) = owner.checked_sub(1).and_then(|i| region.producer(i)) else {
        return true;
    };
    let l = Lease::load(&entry.lease);
    l.state() == FREE || !region.alive(producer_owner(entry, l))
}

/// Whether producer entry `index` is still under `lease`.
#[inline]
pub(crate) fn producer_owned(region: &Region, index: usize, lease: Lease) -> bool {
    let entry = region.producer(index).expect("index below the table size");
    entry.lease.load(Ordering::Acquire) == lease.0
}
