//! The README's quick start, runnable: a mutating "decode" stage, then a
//! journal and a sum in parallel. Publishes ten million events and prints the
//! rate and the check. `tests/readme.rs` checks that the README shows exactly
//! the code between the two `quick start` markers below.
//!
//! `cargo run --release --example quickstart [events]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let start = Instant::now();
    // --- quick start begins
    use ringbus::{PhasedBackoff, Sequence};

    #[derive(Default)]
    struct Trade {
        raw: u64,
        price: u64,
    }

    let total = Arc::new(AtomicU64::new(0));
    let journaled = Arc::new(AtomicU64::new(0));
    let (sum_out, journal_out) = (Arc::clone(&total), Arc::clone(&journaled));
    let mut sum = 0u64;

    // PhasedBackoff: spin 10 µs, yield 100 µs, then park. Fast under load,
    // no CPU while idle, fine with more threads than cores.
    let mut producer = ringbus::single_producer(1 << 14, Trade::default, PhasedBackoff::default())
        .thread_name("decode")
        .mutate_events_with(|t: &mut Trade, _seq: Sequence, _eob: bool| t.price = t.raw * 2)
        .and_then() // the next stages see decode's writes
        .thread_name("sum")
        .handle_events_with(move |t: &Trade, _seq: Sequence, end_of_batch: bool| {
            sum += t.price;
            if end_of_batch {
                sum_out.store(sum, Ordering::Relaxed);
            }
        })
        .thread_name("journal") // same group as "sum": runs in parallel with it
        .handle_events_with(move |_t: &Trade, seq: Sequence, end_of_batch: bool| {
            if end_of_batch {
                journal_out.store(seq as u64 + 1, Ordering::Relaxed); // flush here
            }
        })
        .build();

    for i in 0..events {
        producer.publish(|t| t.raw = i).expect("bus halted"); // waits while the ring is full
    }
    let report = producer.shutdown().expect("a stage failed"); // drains every stage, joins
                                                               // --- quick start ends
    let elapsed = start.elapsed();

    let expected = events * events.saturating_sub(1); // 2 * sum(0..events)
    let got = total.load(Ordering::Relaxed);
    println!(
        "{events} events through decode -> (sum | journal) in {elapsed:.2?}: {:.1} M events/s",
        events as f64 / elapsed.as_secs_f64() / 1e6
    );
    for stage in &report.stages {
        println!("  stage {:8} processed {}", stage.name, stage.processed);
    }
    println!("  sum of decoded prices {got} (expected {expected})");
    assert_eq!(got, expected, "wrong sum");
    assert_eq!(journaled.load(Ordering::Relaxed), events);
}
