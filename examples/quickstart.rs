//! The README's quick start, runnable: a mutating "decode" stage, then a
//! sum and an audit in parallel, a million events, checked. Prints the rate.
//! `tests/readme.rs` checks that the README shows exactly the code between
//! the two `quick start` markers below.
//!
//! `cargo run --release --example quickstart`

use std::time::Instant;

fn main() {
    let start = Instant::now();
    // --- quick start begins
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use ringbus::{PhasedBackoff, Sequence};

    #[derive(Default)]
    struct Trade {
        raw: u64,
        price: u64,
    }

    let events = 1_000_000u64;
    let total = Arc::new(AtomicU64::new(0));
    let audited = Arc::new(AtomicU64::new(0));
    let (sum_out, audit_out) = (Arc::clone(&total), Arc::clone(&audited));
    let mut sum = 0u64;

    // PhasedBackoff: spin 10 µs, yield 100 µs, then park. Fast under load,
    // no CPU while idle, fine with more threads than cores.
    let mut producer = ringbus::single_producer(1 << 14, Trade::default, PhasedBackoff::default())
        .thread_name("decode")
        .handle_events_with(|t: &mut Trade, _seq: Sequence, _eob: bool| t.price = t.raw * 2)
        .and_then() // the next stages see decode's writes
        .thread_name("sum")
        .handle_events_with(move |t: &Trade, _seq: Sequence, end_of_batch: bool| {
            sum += t.price;
            if end_of_batch {
                sum_out.store(sum, Ordering::Relaxed);
            }
        })
        .thread_name("audit") // same group as "sum": runs in parallel with it
        .handle_events_with(move |_t: &Trade, seq: Sequence, end_of_batch: bool| {
            if end_of_batch {
                audit_out.store(seq as u64 + 1, Ordering::Relaxed);
            }
        })
        .build();

    for i in 0..events {
        producer.publish(|t| t.raw = i).expect("bus halted"); // waits while the ring is full
    }
    let report = producer.shutdown().expect("a stage failed"); // drains every stage, joins
    assert_eq!(total.load(Ordering::Relaxed), events * (events - 1)); // 2 × (0 + 1 + …)
    assert_eq!(audited.load(Ordering::Relaxed), events);
    assert_eq!(report.stages[1].processed, events);
    // --- quick start ends
    let elapsed = start.elapsed();
    println!(
        "{events} events through decode -> (sum | audit) in {elapsed:.2?}: {:.1} M events/s",
        events as f64 / elapsed.as_secs_f64() / 1e6
    );
}
