//! A batch handler against the per-event handler on the same work: the sum
//! of one field of every event.
//!
//! To measure the handler form rather than the producer, the producer
//! publishes batches without writing the slots (`batch_publish(n, |_| {})`:
//! the events keep the values the factory gave them), so the consumer is
//! the bottleneck. Rounds alternate per-event, batch, per-event, … on the
//! same bus shape; the ratio is taken per round and its median reported
//! with min–max.
//!
//! `cargo bench --bench batch_handler [-- --rounds N --events N]`
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ringbus::{Batch, BusySpin, Sequence, WaitStrategy, Yielding};

#[path = "common/stats.rs"]
mod stats;
use stats::{median, ratio_cell};

/// A 32-byte event; the handlers sum `quantity` (the other fields are
/// there for the event's size and never read).
#[derive(Clone, Copy)]
#[allow(dead_code)]
struct Fill {
    price: u64,
    quantity: u64,
    account: u64,
    time: u64,
}

const CAPACITY: usize = 1 << 16;
const PUBLISH: usize = 1 << 12;

fn factory() -> impl FnMut() -> Fill {
    let mut i = 0u64;
    move || {
        i += 1;
        Fill {
            price: 10_000 + i % 97,
            quantity: i % 100,
            account: i,
            time: i,
        }
    }
}

fn expected(events: u64) -> u64 {
    let per_lap: u64 = (1..=CAPACITY as u64).map(|i| i % 100).sum();
    assert_eq!(events % CAPACITY as u64, 0);
    per_lap * (events / CAPACITY as u64)
}

fn run<W: WaitStrategy>(strategy: W, events: u64, batch: bool) -> f64 {
    let total = Arc::new(AtomicU64::new(0));
    let t = Arc::clone(&total);
    let builder = ringbus::single_producer(CAPACITY, factory(), strategy);
    let mut producer = if batch {
        let mut sum = 0u64;
        builder
            .handle_events_with(move |b: Batch<'_, Fill>| {
                let (head, tail) = b.as_slices();
                sum += head.iter().map(|f| f.quantity).sum::<u64>()
                    + tail.iter().map(|f| f.quantity).sum::<u64>();
                if b.last_sequence() as u64 + 1 == events {
                    t.store(sum, Ordering::Release);
                }
            })
            .build()
    } else {
        let mut sum = 0u64;
        builder
            .handle_events_with(move |f: &Fill, seq: Sequence, _: bool| {
                sum += f.quantity;
                if seq as u64 + 1 == events {
                    t.store(sum, Ordering::Release);
                }
            })
            .build()
    };
    let start = Instant::now();
    let mut published = 0u64;
    while published < events {
        producer.batch_publish(PUBLISH, |_| {}).unwrap();
        published += PUBLISH as u64;
    }
    producer.shutdown().unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(total.load(Ordering::Acquire), expected(events));
    events as f64 / secs
}

fn main() -> Result<(), lexopt::Error> {
    use lexopt::prelude::*;
    let mut rounds = 9usize;
    let mut events = 200u64 * CAPACITY as u64;
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        match arg {
            Long("rounds") => rounds = args.value()?.parse()?,
            Long("events") => {
                let n: u64 = args.value()?.parse()?;
                events = n.div_ceil(CAPACITY as u64).max(1) * CAPACITY as u64;
            }
            Long("bench") => {} // passed by `cargo bench`
            _ => return Err(arg.unexpected()),
        }
    }
    let spin = ringbus::available_cores().len() >= 2;
    println!(
        "batch handler vs per-event handler: sum of one field, {events} events of 32 bytes, \
         ring {CAPACITY}, producer publishing {PUBLISH} unwritten slots at a time, {} waits, \
         {rounds} rounds (per-event, batch alternating)",
        if spin { "busy-spin" } else { "yielding" }
    );
    let mut per_event = Vec::new();
    let mut batched = Vec::new();
    let mut ratios = Vec::new();
    for _ in 0..rounds {
        let (a, b) = if spin {
            (run(BusySpin, events, false), run(BusySpin, events, true))
        } else {
            (
                run(Yielding::default(), events, false),
                run(Yielding::default(), events, true),
            )
        };
        per_event.push(a);
        batched.push(b);
        ratios.push(b / a);
    }
    println!();
    println!("| handler | events/s (median) |");
    println!("|---|---:|");
    println!(
        "| per event (`handle_events_with`) | {:.0} M/s |",
        median(&per_event) / 1e6
    );
    println!(
        "| batch (`handle_batches_with`) | {:.0} M/s |",
        median(&batched) / 1e6
    );
    println!("\nbatch / per event, per round: {}", ratio_cell(&ratios));
    Ok(())
}
