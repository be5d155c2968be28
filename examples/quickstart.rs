//! A three-stage bus: a mutating "decode" stage, then a journal and a sum in
//! parallel. Publishes ten million events and prints the rate and the check.
//!
//! `cargo run --release --example quickstart [events]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ringbus::{Sequence, Yielding};

#[derive(Default)]
struct Trade {
    raw: u64,
    price: u64,
}

fn main() {
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let total = Arc::new(AtomicU64::new(0));
    let journaled = Arc::new(AtomicU64::new(0));
    let (sum_out, journal_out) = (Arc::clone(&total), Arc::clone(&journaled));

    let mut sum = 0u64;
    let mut producer = ringbus::single_producer(1 << 14, Trade::default, Yielding::default())
        .thread_name("decode")
        .mutate_events_with(|t: &mut Trade, _seq: Sequence, _eob: bool| t.price = t.raw * 2)
        .and_then()
        .thread_name("sum")
        .handle_events_with(move |t: &Trade, _seq: Sequence, eob: bool| {
            sum += t.price;
            if eob {
                sum_out.store(sum, Ordering::Relaxed);
            }
        })
        .thread_name("journal")
        .handle_events_with(move |_t: &Trade, seq: Sequence, eob: bool| {
            if eob {
                journal_out.store(seq as u64 + 1, Ordering::Relaxed);
            }
        })
        .build();

    let start = Instant::now();
    for i in 0..events {
        producer.publish(|t| t.raw = i).expect("bus halted");
    }
    let report = producer.shutdown().expect("a stage failed");
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
