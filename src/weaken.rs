//! Weakening knobs: each puts back one old behaviour or drops one ordering,
//! in a build with `--cfg ringbus_weaken="<name>"` (never in a real build),
//! to show that the loom model or test that guards it fails without it.
//! `ci/loom-weakened.sh` checks every knob. Each knob is a `const` here, so
//! a site reads `if weaken::STEP_SCAN { old } else { new }` and the old path
//! compiles away.

use crate::loom::Ordering;

/// `durable_release`: The journal stage's sequence stored before the consumer's `release` (issue #14): stages after the journal see events not yet durable. Caught by tests/journal.rs.
pub(crate) const DURABLE_RELEASE: bool = cfg!(ringbus_weaken = "durable_release");

/// `edge_signal`: A stage's progress signalled on publish stripe 0 instead of its own signal (before parking per edge). Caught by loom model `a_pipeline_parks_per_edge_and_loses_no_wake_up`.
pub(crate) const EDGE_SIGNAL: bool = cfg!(ringbus_weaken = "edge_signal");

/// `evict_order`: The eviction protocol's two sides Relaxed instead of SeqCst. Caught by loom model `evicting_a_subscriber_never_overwrites_what_it_reads`.
pub(crate) const EVICT_ORDER: bool = cfg!(ringbus_weaken = "evict_order");

/// `fence`: The parking notifier's fence before it loads a `sleeping` flag left out, and the flag's swaps Relaxed (the fence alone left out fails the same six models). Caught by loom models `blocking_strategy_loses_no_wake_up`, `a_pipeline_parks_per_edge_and_loses_no_wake_up` and four more (`ci/loom-weakened.sh`).
pub(crate) const FENCE: bool = cfg!(ringbus_weaken = "fence");

/// `ipc_give_up`: A consumer gives up a claim its claimant has not marked even while the ring is full (the claimant may be waiting for room). Caught by tests/ipc.rs `a_claim_waiting_for_room_is_not_given_up`.
#[cfg_attr(not(feature = "ipc"), allow(dead_code))]
pub(crate) const IPC_GIVE_UP: bool = cfg!(ringbus_weaken = "ipc_give_up");

/// `ipc_join`: A producer reads the consumer table without the join protocol's read-modify-write. Caught by loom model `ipc_a_dead_consumer_is_reclaimed_and_a_joiner_misses_nothing`.
#[cfg_attr(not(feature = "ipc"), allow(dead_code))]
pub(crate) const IPC_JOIN: bool = cfg!(ringbus_weaken = "ipc_join");

/// `ipc_publish`: A multi producer's publish mark in shared memory is Relaxed instead of Release. Caught by loom model `ipc_two_producers_publish_and_a_consumer_reads_only_written_slots`.
#[cfg_attr(not(feature = "ipc"), allow(dead_code))]
pub(crate) const IPC_PUBLISH: bool = cfg!(ringbus_weaken = "ipc_publish");

/// `ipc_reuse`: A producer reuses a slot whose given-up writer may still be writing. Caught by loom model `ipc_a_given_up_slot_is_reused_only_after_its_slow_writer_let_go`.
#[cfg_attr(not(feature = "ipc"), allow(dead_code))]
pub(crate) const IPC_REUSE: bool = cfg!(ringbus_weaken = "ipc_reuse");

/// `ipc_skip`: A producer releases an earlier lap's unmarked claim of its slot with a plain store instead of a CAS from the mark it saw, so a slow claimant's mark made meanwhile is overwritten and two producers write the slot. Caught by loom model `ipc_a_claim_left_unmarked_a_lap_behind_is_skipped_never_overwritten`.
#[cfg_attr(not(feature = "ipc"), allow(dead_code))]
pub(crate) const IPC_SKIP: bool = cfg!(ringbus_weaken = "ipc_skip");

/// `ipc_orphan`: A failed stage orphans its consumer entry with a Relaxed CAS, so a consumer that resumes the entry may not see its last commit. Caught by loom model `ipc_an_orphaned_entry_is_resumed_or_reclaimed_never_both`.
#[cfg_attr(not(feature = "ipc"), allow(dead_code))]
pub(crate) const IPC_ORPHAN: bool = cfg!(ringbus_weaken = "ipc_orphan");

/// `ipc_reap`: A consumer held by an upstream (and a producer that needs room) reclaims an entry without checking that its owner is dead. Caught by loom model `ipc_a_consumer_after_an_orphan_reclaims_it_or_follows_its_resumer`.
#[cfg_attr(not(feature = "ipc"), allow(dead_code))]
pub(crate) const IPC_REAP: bool = cfg!(ringbus_weaken = "ipc_reap");

/// `ipc_sleepers`: A producer reads the sleeping consumers without the SeqCst fence after publishing (the fence of producers without membarrier and of loom models; a registered Linux producer takes the light path regardless). Caught by loom model `ipc_a_blocking_consumer_is_woken_by_a_publish`.
#[cfg_attr(not(feature = "ipc"), allow(dead_code))]
pub(crate) const IPC_SLEEPERS: bool = cfg!(ringbus_weaken = "ipc_sleepers");

/// `ipc_after`: A consumer reads the sleeping downstream consumers without the SeqCst fence after committing (the fence of consumers without membarrier and of loom models). Caught by loom models `ipc_a_blocking_consumer_after_another_is_woken_by_its_commit` and `ipc_a_blocking_consumer_after_another_is_woken_by_its_join`.
#[cfg_attr(not(feature = "ipc"), allow(dead_code))]
pub(crate) const IPC_AFTER: bool = cfg!(ringbus_weaken = "ipc_after");

/// `ipc_cycle`: A consumer joining after others looks for a cycle through them without the SeqCst fence after it wrote its own upstreams, so two consumers that join at once, each after the other, may both miss the cycle and wait for ever. Caught by loom model `ipc_of_two_consumers_joining_each_after_the_other_one_is_refused`.
#[cfg_attr(not(feature = "ipc"), allow(dead_code))]
pub(crate) const IPC_CYCLE: bool = cfg!(ringbus_weaken = "ipc_cycle");

/// `ipc_replace`: A new owner of a dead producer's place tries once to release each mark the dead one left mid-write, and gives up when a consumer's give-up changed it first (it left the slot given up under the place for ever). Caught by loom model `ipc_a_replaced_dead_writer_and_a_give_up_leave_the_slot_reusable`.
#[cfg_attr(not(feature = "ipc"), allow(dead_code))]
pub(crate) const IPC_REPLACE: bool = cfg!(ringbus_weaken = "ipc_replace");

/// `join_point`: A joining poller searches for its start instead of taking the sequencer's join point. Caught by loom model `poller_joining_behind_a_limited_poll_misses_nothing`; tests/poller.rs.
pub(crate) const JOIN_POINT: bool = cfg!(ringbus_weaken = "join_point");

/// `lag_clock`: No clock wakes an async publish held by a lag-limited subscriber (issue #24, finding 2). Caught by tests/async_bus.rs.
#[cfg_attr(any(not(feature = "async"), loom), allow(dead_code))]
pub(crate) const LAG_CLOCK: bool = cfg!(ringbus_weaken = "lag_clock");

/// `lag_rejoin`: A parked producer does not restart its wait when a lag-limited subscriber joins (issue #24, finding 2). Caught by tests/lag_limit.rs; the lifecycle tester.
pub(crate) const LAG_REJOIN: bool = cfg!(ringbus_weaken = "lag_rejoin");

/// `limit_default`: A poller joins without the default limit on how far it may scan. Caught by loom model `poller_joining_while_the_producer_wraps`.
pub(crate) const LIMIT_DEFAULT: bool = cfg!(ringbus_weaken = "limit_default");

/// `pool_scan`: A work pool worker scans only its own next slot. Caught by loom model `work_pool_behind_two_producers_reads_only_published_slots`; tests/work_pool.rs.
pub(crate) const POOL_SCAN: bool = cfg!(ringbus_weaken = "pool_scan");

/// `refuse_order`: A stage failure sets the bus's refusing flag before it refuses the single producer's limit, so a thread that saw the refusal may still publish. Caught by loom model `a_producer_that_saw_the_refusal_is_refused`.
pub(crate) const REFUSE_ORDER: bool = cfg!(ringbus_weaken = "refuse_order");

/// `single_refuse`: The single producer raises its limit with a plain store, which can overwrite a refusal made meanwhile: a publish after a halt succeeds. Caught by loom model `a_refusal_racing_the_single_producers_refresh_is_kept`.
pub(crate) const SINGLE_REFUSE: bool = cfg!(ringbus_weaken = "single_refuse");

/// `reached`: Readers leave the published floor's scan start stale (issue #16). Caught by tests/poller.rs.
pub(crate) const REACHED: bool = cfg!(ringbus_weaken = "reached");

/// `read_guard`: No unwind guard around a lag-limited poll's read (issue #24, finding 3). Caught by tests/lag_limit.rs; the lifecycle tester.
pub(crate) const READ_GUARD: bool = cfg!(ringbus_weaken = "read_guard");

/// `step_scan`: A shared-thread step rescans from its own cut inside a batch (issue #24, finding 1). Caught by loom model `a_shared_step_that_cuts_a_batch_loses_nothing`; tests/shared_thread.rs; the lifecycle tester.
pub(crate) const STEP_SCAN: bool = cfg!(ringbus_weaken = "step_scan");

/// `torn_scan`: The journal reader trusts a damaged length field to find what follows (issue #24, finding 5). Caught by tests/journal_damage.rs; the lifecycle tester.
#[cfg_attr(not(all(feature = "journal", unix)), allow(dead_code))]
pub(crate) const TORN_SCAN: bool = cfg!(ringbus_weaken = "torn_scan");

/// `unconfirmed_scan`: An evicted lag-limited poller's scan records what it found (issue #24, finding 4). Caught by nothing yet: the interleaving is beyond loom's budget.
pub(crate) const UNCONFIRMED_SCAN: bool = cfg!(ringbus_weaken = "unconfirmed_scan");

/// `waker_lock`: A waiter adds its waker in a second critical section, after setting the flag. Caught by loom models `awaiting_poller_is_woken_by_a_publish`, `a_pipeline_parks_per_edge_and_loses_no_wake_up`.
pub(crate) const WAKER_LOCK: bool = cfg!(ringbus_weaken = "waker_lock");

/// `work_claim`: Two pool workers may claim the same event. Caught by loom model `work_pool_hands_each_event_to_exactly_one_worker`.
pub(crate) const WORK_CLAIM: bool = cfg!(ringbus_weaken = "work_claim");

/// The orderings `--cfg ringbus_weaken="<name>"` can turn off, one at a time,
/// to show that a loom model fails without them. Never set in real builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Weaken {
    /// The single producer's cursor store.
    Cursor,
    /// A stage's sequence store.
    Stage,
    /// The multi-producer's availability mark.
    Available,
    /// The multi-producers' shared gating cache.
    GatingCache,
}

/// `Release`, unless this build weakens `what` (loom demonstration only).
#[inline(always)]
pub(crate) fn release(what: Weaken) -> Ordering {
    let weakened = match what {
        Weaken::Cursor => cfg!(ringbus_weaken = "cursor"),
        Weaken::Stage => cfg!(ringbus_weaken = "stage"),
        Weaken::Available => cfg!(ringbus_weaken = "available"),
        Weaken::GatingCache => cfg!(ringbus_weaken = "gating_cache"),
    };
    if weakened {
        Ordering::Relaxed
    } else {
        Ordering::Release
    }
}

/// The ordering of the parking flag's swaps: `AcqRel`, unless this build
/// weakens it (`--cfg ringbus_weaken="fence"`, loom demonstration only).
#[inline(always)]
pub(crate) fn parking_order() -> Ordering {
    if cfg!(ringbus_weaken = "fence") {
        Ordering::Relaxed
    } else {
        Ordering::AcqRel
    }
}
