//! Pins the consumer to a core, publishes at a steady rate from a thread
//! pinned to another, and prints an HdrHistogram percentile table of the
//! one-way latency (publish to handler).
//!
//! `cargo run --release --example pinned_latency [events] [interval-us]`

use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringbus::{BusySpin, EventHandler, Sequence};

#[derive(Debug, Default, Clone, Copy)]
struct Tick {
    sent_ns: u64,
}

struct Recorder {
    base: Instant,
    hist: Histogram<u64>,
    out: mpsc::Sender<Histogram<u64>>,
}

impl EventHandler<Tick> for Recorder {
    fn on_event(&mut self, t: &Tick, _seq: Sequence, _eob: bool) {
        let now = self.base.elapsed().as_nanos() as u64;
        let _ = self.hist.record(now.saturating_sub(t.sent_ns).max(1));
    }

    fn on_shutdown(&mut self) {
        let _ = self.out.send(self.hist.clone());
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let interval = Duration::from_micros(args.next().and_then(|a| a.parse().ok()).unwrap_or(10));
    // Read the core list once, before anything pins itself.
    let cores = ringbus::available_cores().to_vec();
    let (producer_core, consumer_core) = match cores.as_slice() {
        [a, b, ..] => (Some(*a), Some(*b)),
        _ => (None, None),
    };

    let base = Instant::now();
    let (tx, rx) = mpsc::channel();
    let mut builder =
        ringbus::single_producer(1024, Tick::default, BusySpin).thread_name("recorder");
    if let Some(core) = consumer_core {
        builder = builder.pin_at_core(core);
    }
    let mut producer = builder
        .handle_events_with(Recorder {
            base,
            hist: Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("bounds"),
            out: tx,
        })
        .build();

    let sender = std::thread::spawn(move || {
        if let Some(core) = producer_core {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
        }
        let mut next = Instant::now();
        for _ in 0..events {
            next += interval;
            while Instant::now() < next {
                std::hint::spin_loop();
            }
            producer
                .publish(|t| t.sent_ns = base.elapsed().as_nanos() as u64)
                .expect("bus halted");
        }
        producer.shutdown().expect("stage failed");
    });
    sender.join().expect("sender");
    let hist = rx.recv().expect("histogram");

    println!(
        "{events} events, one every {interval:?}; producer on core {producer_core:?}, consumer on core {consumer_core:?} (busy spin)"
    );
    println!("{:>10} {:>12}", "percentile", "latency");
    for q in [50.0, 90.0, 99.0, 99.9, 99.99] {
        println!(
            "{:>10} {:>9} ns",
            format!("p{q}"),
            hist.value_at_percentile(q)
        );
    }
    println!("{:>10} {:>9} ns", "max", hist.max());
    println!("{:>10} {:>9.0} ns", "mean", hist.mean());
    assert_eq!(hist.len(), events, "every event recorded once");
}
