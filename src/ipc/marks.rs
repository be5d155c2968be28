//! The multi producer's availability marks, and how a claim that was never
//! published is given up.
//!
//! Each slot has one 64-bit mark: the round it speaks of (sequence ÷
//! capacity, plus one, so an all-zero file means "round −1, done"), the
//! writer (producer entry + 1, 0 for nobody) and a state:
//!
//! ```text
//! round r-1 PUBLISHED/RELEASED --producer CAS--> round r WRITING(p)
//! WRITING(p) --producer CAS, Release--> PUBLISHED(p)         consumers read it
//! WRITING(p) --consumer CAS, hole timeout--> GIVEN_UP(p)     consumers skip it;
//!            p's publish CAS fails, p stores RELEASED(p) and reports the loss
//! WRITING(p), p dead --consumer CAS--> RELEASED(p)           consumers skip it
//! round r-1 done, claimed but unmarked, room for it for a hole timeout
//!            --consumer CAS--> round r RELEASED(nobody)       the claimant's
//!            CAS to WRITING then fails, and it reports the loss
//! round k done, round k+1 claimed but never marked, a later round r
//!            claimed with room, a hole timeout --round r's claimant (or a
//!            consumer at round r) CAS--> round k+1 RELEASED(nobody), one
//!            round at a time (`skip_behind`: nobody reads a round below r
//!            once round r has room)
//! ```
//!
//! A slot is reused (next round) only from PUBLISHED or RELEASED: never
//! while a slow writer may still be writing a given-up slot, so a slow
//! producer's event is never half overwritten, and a given-up event is
//! never delivered (consumers skip GIVEN_UP and RELEASED alike).
//!
//! Orderings: the publish CAS is Release and a consumer's load of the mark
//! Acquire (the event's bytes before the mark); the claim CAS is Acquire
//! (the previous round's readers are done, through the gating sequences,
//! and a previous slow writer's last write is before its RELEASED store,
//! which is Release). Give-up CASes are Relaxed for the data (nobody reads
//! a skipped slot) but AcqRel so the loser of a race sees the winner's state.

use super::region::Region;
use super::table::writer_gone;
use crate::loom::Ordering;
use crate::weaken;

pub(crate) const WRITING: u64 = 1;
pub(crate) const PUBLISHED: u64 = 2;
pub(crate) const GIVEN_UP: u64 = 3;
pub(crate) const RELEASED: u64 = 4;

/// A mark's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark(pub(crate) u64);

impl Mark {
    pub(crate) fn new(round_plus_one: u64, owner: usize, state: u64) -> Self {
        Self(round_plus_one << 16 | (owner as u64 & 0xFFF) << 4 | state)
    }
    pub(crate) fn round(self) -> u64 {
        self.0 >> 16
    }
    pub(crate) fn owner(self) -> usize {
        ((self.0 >> 4) & 0xFFF) as usize
    }
    pub(crate) fn state(self) -> u64 {
        self.0 & 0xF
    }
    /// The previous round is over: its event was read or skipped, and its
    /// writer no longer touches the slot (or never existed).
    fn done(self) -> bool {
        self.0 == 0
            || matches!(self.state(), PUBLISHED | RELEASED)
            || (crate::weaken::IPC_REUSE && self.state() == GIVEN_UP)
    }
}

fn round_of(region: &Region, seq: u64) -> u64 {
    (seq >> region.shift()) + 1
}

/// Why a claimed slot cannot be written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MarkFailure {
    /// A consumer gave the claim up before the producer reached it.
    GivenUp,
    /// The previous round's writer is still writing (it was given up and is
    /// slow): try again.
    Busy,
    /// The slot's mark is two rounds or more behind: a claim of it in an
    /// earlier lap was never marked (its claimant died waiting for room, or
    /// is slow between its claim and its mark). Nobody reads that claim
    /// (the caller has room, so every consumer has passed it);
    /// [`skip_behind`] releases it once it waited a hole timeout.
    Behind,
    /// (A producer's, not this module's.) The caller's time limit passed
    /// while it waited out `Busy` (`try_publish`, `publish_timeout`): the
    /// slot is left unmarked, released later as a dead claimant's is.
    Limit,
    /// (A producer's.) The bus closed while it waited out `Busy` or
    /// `Behind`: the publish says `Closed`, the slot left unmarked.
    Closed,
}

/// Marks `seq` as being written by producer entry `me` (its index + 1).
pub(crate) fn begin_write(region: &Region, seq: u64, me: usize) -> Result<(), MarkFailure> {
    let mark = region.mark(seq);
    let round = round_of(region, seq);
    loop {
        let m = Mark(mark.load(Ordering::Acquire));
        if m.round() >= round {
            // Given up before this producer reached it (or, a later round:
            // overtaken by producers a lap ahead while nobody gated).
            return Err(MarkFailure::GivenUp);
        }
        if m.round() + 1 != round && m.0 != 0 {
            // A round before the previous one: a claimant a lap behind has
            // not marked it yet (without consumers to gate, or all of them
            // joined after its claim), or died before it could.
            return Err(if behind(region, m) {
                MarkFailure::Behind
            } else {
                MarkFailure::Busy
            });
        }
        if !m.done() {
            // A slow writer of the previous round, given up or (without
            // consumers to gate it) still writing; a dead one never ends.
            if !writer_gone(region, m.owner()) {
                return Err(MarkFailure::Busy);
            }
        }
        // Acquire: the previous round's writer (its RELEASED store) and
        // readers (through the gating sequences) are done with the slot.
        if mark
            .compare_exchange(
                m.0,
                Mark::new(round, me, WRITING).0,
                Ordering::Acquire,
                Ordering::Acquire,
            )
            .is_ok()
        {
            return Ok(());
        }
    }
}

/// Whether mark `m`, two rounds or more behind the slot's next claim, can
/// be skipped: its own round is over, or its writer is gone.
fn behind(region: &Region, m: Mark) -> bool {
    m.done() || writer_gone(region, m.owner())
}

/// Releases the oldest round of `seq`'s slot that holds up `seq`'s claim
/// (see [`MarkFailure::Behind`]): a dead writer's round, or the next
/// round's claim that was never marked. One round per call, so the
/// claimant of each later round gets its own wait before its claim is
/// released (callers wait a hole timeout between calls, starting again
/// when the mark changes). The caller has room for `seq`: every consumer
/// passed those claims, so nobody reads them. A slow claimant of a
/// released round finds its slot taken (`begin_write` fails with
/// `GivenUp`), as after a consumer's give-up. Returns whether this call
/// released one.
pub(crate) fn skip_behind(region: &Region, seq: u64) -> bool {
    let mark = region.mark(seq);
    let round = round_of(region, seq);
    let m = Mark(mark.load(Ordering::Acquire));
    if m.0 == 0 || m.round() + 1 >= round || !behind(region, m) {
        return false;
    }
    let to = if m.done() {
        Mark::new(m.round() + 1, 0, RELEASED)
    } else {
        Mark::new(m.round(), m.owner(), RELEASED) // its writer is gone
    };
    // A claim made a tombstone here: the next round's unmarked claim, or a
    // dead writer's WRITING. A GIVEN_UP mark was counted when a consumer
    // gave it up (as `release_dead_writer` and `abandon` leave it).
    let counts = m.done() || m.state() == WRITING;
    if weaken::IPC_SKIP {
        mark.store(Mark::new(round - 1, 0, RELEASED).0, Ordering::Relaxed);
        return true;
    }
    // AcqRel: as `give_up`'s CAS (the loser, a claimant marking at last,
    // sees the release).
    if mark
        .compare_exchange(m.0, to.0, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    if counts {
        region
            .control()
            .stats
            .given_up
            .fetch_add(1, Ordering::Relaxed);
    }
    true
}

/// Publishes `seq`, written by producer entry `me`. `Err(())` when a
/// consumer gave it up while it was written: the slot is released and the
/// event is lost (the caller reports it).
pub(crate) fn end_write(region: &Region, seq: u64, me: usize) -> Result<(), ()> {
    let mark = region.mark(seq);
    let round = round_of(region, seq);
    let writing = Mark::new(round, me, WRITING).0;
    // Release: the event's bytes before the mark a consumer Acquires.
    let order = if weaken::IPC_PUBLISH {
        Ordering::Relaxed
    } else {
        Ordering::Release
    };
    match mark.compare_exchange(
        writing,
        Mark::new(round, me, PUBLISHED).0,
        order,
        Ordering::Relaxed,
    ) {
        Ok(_) => Ok(()),
        Err(_) => {
            // Given up: the slot is free again once this writer is done with
            // it. Release: the writes above come before the next round's.
            mark.store(Mark::new(round, me, RELEASED).0, Ordering::Release);
            Err(())
        }
    }
}

/// Gives `seq` up unwritten: the claimant stops (a failed publish closure,
/// or a batch of which another slot was given up).
pub(crate) fn abandon(region: &Region, seq: u64, me: usize) {
    let round = round_of(region, seq);
    // Release: as `end_write`'s failure path. A swap, to see who made the
    // tombstone: a consumer that gave the slot up first counted it.
    let was = region
        .mark(seq)
        .swap(Mark::new(round, me, RELEASED).0, Ordering::Release);
    if was == Mark::new(round, me, WRITING).0 {
        // A tombstone made here: counted as the consumers' give-ups are.
        region
            .control()
            .stats
            .given_up
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// What a consumer finds at `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Published,
    Tombstone,
    /// Claimed by a writer that has not published, or not claimed yet.
    Pending,
    /// The slot belongs to a later round: this reader was overtaken (its
    /// entry was reclaimed, or a peer wrote what no protocol writes).
    Lapped,
}

/// The raw mark of `seq` (to see whether a wait at it made progress).
pub(crate) fn raw(region: &Region, seq: u64) -> u64 {
    region.mark(seq).load(Ordering::Relaxed)
}

/// Whether `seq` is being written by a producer whose process lives.
pub(crate) fn live_writer(region: &Region, seq: u64) -> bool {
    let m = Mark(region.mark(seq).load(Ordering::Acquire));
    m.round() == round_of(region, seq) && m.state() == WRITING && !writer_gone(region, m.owner())
}

/// What a consumer finds at `seq` (Acquire: the event's bytes follow).
pub(crate) fn slot(region: &Region, seq: u64) -> Slot {
    let m = Mark(region.mark(seq).load(Ordering::Acquire));
    let round = round_of(region, seq);
    if m.round() == round {
        match m.state() {
            PUBLISHED => Slot::Published,
            WRITING => Slot::Pending,
            // GIVEN_UP, RELEASED, and any state no protocol writes (a peer
            // wrote it): skipped, never waited at (`give_up` would find
            // nothing to give up there, and the consumer would look again
            // for ever).
            _ => Slot::Tombstone,
        }
    } else if m.round() > round {
        Slot::Lapped
    } else {
        Slot::Pending
    }
}

/// Whether the ring has room for claim `seq` (every gating consumer is
/// less than a lap behind it); with `check_dead`, dead consumers are
/// checked and reclaimed as producers do (`table::min_consumer`).
pub(crate) fn room_for(region: &Region, seq: u64, check_dead: bool) -> bool {
    super::table::min_consumer(region, check_dead).map_or(true, |min| {
        seq < min.saturating_add(region.layout.capacity as u64)
    })
}

/// Whether a live producer waits for room for a claim that holds `seq`
/// and ends past the ring's room (a batch whose first slots have room and
/// its last not): such a claim is not a hole yet.
pub(crate) fn claim_waits(region: &Region, seq: u64) -> bool {
    shown_claim(region, seq).is_some_and(|(_, l)| !room_for(region, l, false))
}

/// The first and last slot of a claim holding `seq` that a live producer
/// shows as one it waited for room for and has not marked yet (whatever
/// the room now, it may have had it only for a moment); the widest, if
/// several seem to.
pub(crate) fn shown_claim(region: &Region, seq: u64) -> Option<(u64, u64)> {
    let places = super::table::producer_places(region);
    let mut range = None::<(u64, u64)>;
    let cap = region.layout.capacity as u64;
    // Relaxed: a bound on what a range may hold (a peer's range past it is
    // not believed).
    let claims = region.control().cursor.load(Ordering::Relaxed);
    for i in 0..places {
        let Some(entry) = region.producer(i) else {
            break;
        };
        // Acquire: the lease first, so that a successor's lease (which it
        // stores, Release, after clearing the range) comes with the cleared
        // range.
        let lease = entry.lease.load(Ordering::Acquire);
        // Acquire: pairs with the producer's Release store of `wait_last`
        // after `wait_first`.
        let l = entry.wait_last.load(Ordering::Acquire);
        let f = entry.wait_first.load(Ordering::Relaxed);
        // A range a claim can have (in order, under a lap, claimed) that
        // holds `seq`, of the same owner as before the range was read, and
        // a live one (a dead one's range is stale; its successor clears
        // it). The owner last: checking it reads /proc.
        if f <= seq
            && seq <= l
            && l - f < cap
            && l < claims
            && l != 0
            // Acquire: as above.
            && entry.lease.load(Ordering::Acquire) == lease
            && !writer_gone(region, i + 1)
        {
            range = Some(range.map_or((f, l), |(mf, ml)| (mf.min(f), ml.max(l))));
        }
    }
    range
}

/// Whether raw mark `mark` leaves `seq` claimed but not marked yet (the
/// mark is from an earlier round).
pub(crate) fn unmarked(region: &Region, seq: u64, mark: u64) -> bool {
    Mark(mark).round() < round_of(region, seq)
}

/// What [`give_up`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUp {
    /// The slot is a tombstone now (by this call or another).
    Done,
    /// Not given up: published, not claimed, or still the previous round's.
    No,
    /// Not given up: claimed but not marked, and the ring has no room for
    /// it (or for the last slot of its claimant's batch, `claim_waits`), so
    /// its claimant may be a live producer waiting for room. The caller's
    /// hole timer starts again.
    Held,
    /// Not given up: claimed but not marked, and the ring has room for it,
    /// but had none at the caller's last look (`held_before`), or had none
    /// until this look reclaimed a dead consumer: the room may be new to
    /// the claimant. The caller's hole timer starts again,
    /// so a claimant gets a whole hole timeout (or up to two) once it can
    /// write.
    Fresh,
}

/// Why an unmarked claim at `seq` (or the older round before it) is kept
/// for now: no room for it or for the last slot of its claimant's batch
/// (`Held`; consumers are checked for life then, so that a dead one past
/// its grace time does not keep the ring "full" for ever, and the room
/// that makes is new to the claimant), or room that was not there at the
/// caller's last look (`Fresh`). `None`: give it up.
fn hold_unmarked(region: &Region, seq: u64, held_before: bool) -> Option<GiveUp> {
    if weaken::IPC_GIVE_UP {
        return None;
    }
    if !room_for(region, seq, false) || claim_waits(region, seq) {
        // Dead consumers past their grace time are reclaimed here: if that
        // made the room, the room is new to the claimant (`Fresh`), and
        // its hole timeout starts now rather than at the next look.
        let _ = super::table::min_consumer(region, true);
        if room_for(region, seq, false) && !claim_waits(region, seq) {
            return Some(GiveUp::Fresh);
        }
        return Some(GiveUp::Held);
    }
    held_before.then_some(GiveUp::Fresh)
}

/// A consumer that waited at least the hole timeout at `seq` gives it up:
/// a dead writer's slot is released, a slow writer's given up, and a claim
/// not yet marked released if its claimant is not held by a full ring, and
/// was not at the caller's last look (`held_before`, when this returned
/// [`GiveUp::Held`] for `seq`).
pub(crate) fn give_up(region: &Region, seq: u64, held_before: bool) -> GiveUp {
    let mark = region.mark(seq);
    let round = round_of(region, seq);
    // SeqCst: the claim counter after the mark, as producers wrote them.
    if region.control().cursor.load(Ordering::SeqCst) <= seq {
        return GiveUp::No; // not claimed: nothing to give up
    }
    loop {
        let m = Mark(mark.load(Ordering::Acquire));
        let to = if m.round() == round {
            match m.state() {
                WRITING if writer_gone(region, m.owner()) => Mark::new(round, m.owner(), RELEASED),
                WRITING => Mark::new(round, m.owner(), GIVEN_UP),
                PUBLISHED => return GiveUp::No,
                _ => return GiveUp::Done,
            }
        } else if m.round() + 1 == round || m.0 == 0 {
            if !m.done() && !writer_gone(region, m.owner()) {
                return GiveUp::No; // the previous round's slow writer holds it
            }
            // The claimant has not marked it. It may wait for room: a claim
            // is given up only if the ring had room for it before this look.
            if let Some(kept) = hold_unmarked(region, seq, held_before) {
                return kept;
            }
            Mark::new(round, 0, RELEASED)
        } else if m.round() > round {
            return GiveUp::Done;
        } else {
            // Two rounds or more behind: a claim of an earlier lap was never
            // marked, and `seq`'s claimant may be waiting for it. Once the
            // ring has room for `seq` nobody reads that claim: release it,
            // and give `seq`'s claimant a whole hole timeout to mark.
            if !behind(region, m) {
                return GiveUp::No; // a slow writer of that round holds it
            }
            if let Some(kept) = hold_unmarked(region, seq, held_before) {
                return kept;
            }
            if skip_behind(region, seq) {
                return GiveUp::Fresh;
            }
            continue; // the mark changed: look again
        };
        // AcqRel: the loser of a race with the writer sees its state.
        if mark
            .compare_exchange(m.0, to.0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            region
                .control()
                .stats
                .given_up
                .fetch_add(1, Ordering::Relaxed);
            return GiveUp::Done;
        }
    }
}

/// A new owner of producer entry `index` releases the marks its dead
/// predecessor left mid-write, so the next round may use those slots.
pub(crate) fn release_dead_writer(region: &Region, index: usize) {
    let owner = index + 1;
    for i in 0..region.layout.capacity as u64 {
        let mark = region.mark(i);
        let mut m = Mark(mark.load(Ordering::Acquire));
        // Again while the mark is still the dead writer's: a consumer may
        // give a WRITING mark up (to GIVEN_UP, which it saw owned by the
        // live new owner) between the load and the exchange; left so, the
        // slot would be refused to every later round (`begin_write`: Busy).
        while m.owner() == owner && matches!(m.state(), WRITING | GIVEN_UP) {
            let released = Mark::new(m.round(), owner, RELEASED);
            // AcqRel: as `give_up`'s exchange, with which it races.
            match mark.compare_exchange(m.0, released.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if m.state() == WRITING {
                        region
                            .control()
                            .stats
                            .given_up
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                Err(_) if crate::weaken::IPC_REPLACE => break,
                Err(now) => m = Mark(now),
            }
        }
    }
}
