//! Zero heap allocations per event in steady state, counted by a global
//! allocator across every thread (producers and stage threads alike).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use ringbus::{Blocking, Sequence, Yielding};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counter_stage(seen: Arc<AtomicU64>) -> impl FnMut(&Event, Sequence, bool) + Send + 'static {
    move |e: &Event, _s: Sequence, eob: bool| {
        e.verify();
        if eob {
            seen.store(e.value + 1, Ordering::Release);
        }
    }
}

fn wait_until(seen: &AtomicU64, target: u64) {
    while seen.load(Ordering::Acquire) < target {
        std::thread::yield_now();
    }
}

/// One test function so no other test's allocations are counted.
#[test]
fn steady_state_publishing_allocates_nothing() {
    let events: u64 = if cfg!(miri) { 200 } else { 100_000 };
    bounded(60, move || {
        // Single producer, pipeline, blocking strategy (parking included).
        let seen = Arc::new(AtomicU64::new(0));
        let mut p = ringbus::single_producer(64, Event::default, Blocking)
            .handle_events_with(|_e: &Event, _s: Sequence, _b: bool| {})
            .and_then()
            .handle_events_with(counter_stage(Arc::clone(&seen)))
            .build();
        // Warm up: every thread has started and parked at least once.
        for i in 0..1000 {
            p.publish(|e| e.set(i)).unwrap();
        }
        wait_until(&seen, 1000);
        COUNTING.store(true, Ordering::SeqCst);
        for i in 1000..events {
            p.publish(|e| e.set(i)).unwrap();
        }
        p.batch_publish(16, |slots| {
            for (k, e) in slots.enumerate() {
                e.set(events + k as u64)
            }
        })
        .unwrap();
        wait_until(&seen, events + 16);
        COUNTING.store(false, Ordering::SeqCst);
        let single = ALLOCATIONS.swap(0, Ordering::SeqCst);
        p.shutdown().unwrap();

        // Multi producer, yielding strategy, two stages.
        let seen = Arc::new(AtomicU64::new(0));
        let p = ringbus::multi_producer(64, Event::default, Yielding::default())
            .handle_events_with(counter_stage(Arc::clone(&seen)))
            .handle_events_with(|_e: &Event, _s: Sequence, _b: bool| {})
            .build();
        for i in 0..1000 {
            p.publish(|e| e.set(i)).unwrap();
        }
        wait_until(&seen, 1000);
        COUNTING.store(true, Ordering::SeqCst);
        for i in 1000..events {
            p.publish(|e| e.set(i)).unwrap();
        }
        wait_until(&seen, events);
        COUNTING.store(false, Ordering::SeqCst);
        let multi = ALLOCATIONS.swap(0, Ordering::SeqCst);
        p.shutdown().unwrap();

        assert_eq!(single, 0, "single-producer steady state allocated");
        assert_eq!(multi, 0, "multi-producer steady state allocated");
    });
}
