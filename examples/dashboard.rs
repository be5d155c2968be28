//! Several producers emit metric events at different rates; an aggregating
//! stage keeps per-second rates per source; a terminal dashboard refreshes in
//! place while it runs (with each stage's lag from the bus's metrics
//! snapshot), then prints a summary.
//!
//! `cargo run --release --example dashboard [seconds]`

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringbus::{PhasedBackoff, Sequence};

#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    source: u8,
    value: f64,
}

const SOURCES: [(&str, u64); 3] = [("api", 40_000), ("db", 15_000), ("cache", 80_000)];

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    counts: BTreeMap<u8, u64>,
    rates: BTreeMap<u8, u64>,
    totals: BTreeMap<u8, u64>,
    sums: BTreeMap<u8, f64>,
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let window = Arc::new(Mutex::new(Window::default()));
    let agg = Arc::clone(&window);
    let mut local: BTreeMap<u8, u64> = BTreeMap::new();

    let producer = ringbus::multi_producer(8192, Sample::default, PhasedBackoff::default())
        .thread_name("aggregate")
        .handle_events_with(move |s: &Sample, _seq: Sequence, end_of_batch: bool| {
            *local.entry(s.source).or_default() += 1;
            if end_of_batch {
                // Fold the batch into the shared window once per batch.
                let mut w = agg.lock().expect("window");
                let now = Instant::now();
                let started = *w.started.get_or_insert(now);
                for (src, n) in std::mem::take(&mut local) {
                    *w.counts.entry(src).or_default() += n;
                    *w.totals.entry(src).or_default() += n;
                }
                if now.duration_since(started) >= Duration::from_secs(1) {
                    w.rates = std::mem::take(&mut w.counts);
                    w.started = Some(now);
                }
            }
            let _ = s.value;
        })
        .thread_name("archive")
        .handle_events_with({
            let w = Arc::clone(&window);
            let mut sums: BTreeMap<u8, f64> = BTreeMap::new();
            move |s: &Sample, _seq: Sequence, end_of_batch: bool| {
                *sums.entry(s.source).or_default() += s.value;
                if end_of_batch {
                    w.lock().expect("window").sums = sums.clone();
                }
            }
        })
        .build();
    let metrics = producer.metrics();

    let stop = Instant::now() + Duration::from_secs(seconds);
    let emitters: Vec<_> = SOURCES
        .iter()
        .enumerate()
        .map(|(i, &(_, per_second))| {
            let producer = producer.clone();
            thread::spawn(move || {
                let gap = Duration::from_nanos(1_000_000_000 / per_second);
                let mut next = Instant::now();
                let mut sent = 0u64;
                while Instant::now() < stop {
                    // Emit in small bursts to hold the rate without a timer per event.
                    next += gap * 100;
                    producer
                        .batch_publish(100, |slots| {
                            for s in slots {
                                s.source = i as u8;
                                s.value = (sent % 100) as f64;
                                sent += 1;
                            }
                        })
                        .expect("bus halted");
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                }
                sent
            })
        })
        .collect();

    let tty = std::io::stdout().is_terminal();
    let mut out = std::io::stdout();
    let mut frames = 0;
    while Instant::now() < stop {
        thread::sleep(Duration::from_millis(250));
        let snap = metrics.snapshot();
        let w = window.lock().expect("window");
        let mut frame = String::new();
        frame.push_str(&format!(
            "ringbus dashboard  cursor {:>9}  free slots {:>5}/{}\n",
            snap.cursor, snap.remaining_capacity, snap.capacity
        ));
        for (i, (name, target)) in SOURCES.iter().enumerate() {
            let rate = w.rates.get(&(i as u8)).copied().unwrap_or(0);
            frame.push_str(&format!(
                "  {name:<6} {rate:>8} events/s (target {target})\n"
            ));
        }
        for stage in &snap.stages {
            frame.push_str(&format!(
                "  stage {:<10} lag {:>6}\n",
                stage.name, stage.lag
            ));
        }
        drop(w);
        if tty {
            if frames > 0 {
                // Move back up over the previous frame and redraw in place.
                let lines = frame.lines().count();
                let _ = write!(out, "\x1b[{lines}A\x1b[J");
            }
            let _ = write!(out, "{frame}");
            let _ = out.flush();
        } else if frames % 4 == 3 {
            let _ = write!(out, "{frame}");
        }
        frames += 1;
    }

    let sent: Vec<u64> = emitters
        .into_iter()
        .map(|t| t.join().expect("emitter"))
        .collect();
    let report = producer.shutdown().expect("a stage failed");
    let w = window.lock().expect("window");
    println!("\nsummary after {seconds} s:");
    for (i, (name, _)) in SOURCES.iter().enumerate() {
        let total = w.totals.get(&(i as u8)).copied().unwrap_or(0);
        let mean = w.sums.get(&(i as u8)).copied().unwrap_or(0.0) / total.max(1) as f64;
        println!(
            "  {name:<6} sent {:>8}, aggregated {total:>8}, mean value {mean:.1}",
            sent[i]
        );
        assert_eq!(total, sent[i], "every sample aggregated once");
    }
    for stage in &report.stages {
        println!("  stage {:<10} processed {}", stage.name, stage.processed);
    }
}
