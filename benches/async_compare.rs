//! ringbus (feature `async`) against tokio's channels inside one tokio
//! runtime: the same 16-byte events, the same capacity, the same runtime
//! (multi-threaded, 2 workers), rounds alternating A B A B.
//!
//! - **fan-out**: one producer task, three consumer tasks, each consumer
//!   sees every event: a ringbus poller per consumer (`poll_async`) against
//!   `tokio::sync::broadcast`.
//! - **one consumer**: one producer task, one consumer task: a ringbus
//!   poller against `tokio::sync::mpsc`.
//! - **latency**: one event every 50 µs, timestamped by the producer task,
//!   one consumer task; one-way p50/p99 against `tokio::sync::mpsc`.
//!
//! Producers publish one event per call (`publish_async` / `send`), and
//! consumers take what is available (`poll_async` with a limit of 256 /
//! `recv`). The bus uses `Blocking`, the strategy async tasks wait with.
//!
//! `cargo bench --bench async_compare --features async [-- --rounds N --events N]`
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringbus::{Blocking, PollError, Sequence};

#[path = "common/stats.rs"]
mod stats;
use stats::{median, ratio_cell};

#[derive(Debug, Default, Clone, Copy)]
struct Tick {
    value: u64,
    sent_ns: u64,
}

const CAPACITY: usize = 4096;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

fn expected(events: u64) -> u64 {
    events * (events - 1) / 2
}

async fn ringbus_fanout(events: u64, consumers: usize) -> f64 {
    let mut producer = ringbus::single_producer(CAPACITY, Tick::default, Blocking).build();
    let tasks: Vec<_> = (0..consumers)
        .map(|_| {
            let mut poller = producer.subscribe().unwrap();
            tokio::spawn(async move {
                let mut sum = 0u64;
                loop {
                    let polled = poller
                        .poll_async(256, |t: &Tick, _: Sequence, _: bool| sum += t.value)
                        .await;
                    match polled {
                        Ok(_) => {}
                        Err(PollError::Closed) => return sum,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    for i in 0..events {
        producer
            .publish_async(|t| {
                t.value = i;
            })
            .await
            .unwrap();
    }
    producer.shutdown_async().await.unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap(), expected(events));
    }
    events as f64 / start.elapsed().as_secs_f64()
}

async fn broadcast_fanout(events: u64, consumers: usize) -> f64 {
    let (tx, _) = tokio::sync::broadcast::channel::<Tick>(CAPACITY);
    let tasks: Vec<_> = (0..consumers)
        .map(|_| {
            let mut rx = tx.subscribe();
            tokio::spawn(async move {
                let mut sum = 0u64;
                loop {
                    match rx.recv().await {
                        Ok(t) => sum += t.value,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return sum,
                        Err(e) => panic!("{e}: a lagging receiver lost events"),
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    for i in 0..events {
        // broadcast never waits for room: it overwrites, and a receiver more
        // than CAPACITY behind loses events. Keep it from lagging the way
        // its users must: yield while the slowest receiver is far behind.
        while tx.len() >= CAPACITY - 1 {
            tokio::task::yield_now().await;
        }
        tx.send(Tick {
            value: i,
            sent_ns: 0,
        })
        .unwrap();
    }
    drop(tx);
    for t in tasks {
        assert_eq!(t.await.unwrap(), expected(events));
    }
    events as f64 / start.elapsed().as_secs_f64()
}

async fn mpsc_one(events: u64) -> f64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Tick>(CAPACITY);
    let consumer = tokio::spawn(async move {
        let mut sum = 0u64;
        while let Some(t) = rx.recv().await {
            sum += t.value;
        }
        sum
    });
    let start = Instant::now();
    for i in 0..events {
        tx.send(Tick {
            value: i,
            sent_ns: 0,
        })
        .await
        .unwrap();
    }
    drop(tx);
    assert_eq!(consumer.await.unwrap(), expected(events));
    events as f64 / start.elapsed().as_secs_f64()
}

async fn ringbus_latency(events: u64) -> Histogram<u64> {
    let epoch = Instant::now();
    let mut producer = ringbus::single_producer(CAPACITY, Tick::default, Blocking).build();
    let mut poller = producer.subscribe().unwrap();
    let consumer = tokio::spawn(async move {
        let mut h = Histogram::<u64>::new(3).unwrap();
        loop {
            let polled = poller
                .poll_async(256, |t: &Tick, _: Sequence, _: bool| {
                    let now = epoch.elapsed().as_nanos() as u64;
                    h.record(now.saturating_sub(t.sent_ns)).unwrap();
                })
                .await;
            if let Err(PollError::Closed) = polled {
                return h;
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_micros(50));
    for i in 0..events {
        tick.tick().await;
        producer
            .publish_async(|t| {
                t.value = i;
                t.sent_ns = epoch.elapsed().as_nanos() as u64;
            })
            .await
            .unwrap();
    }
    producer.shutdown_async().await.unwrap();
    consumer.await.unwrap()
}

async fn mpsc_latency(events: u64) -> Histogram<u64> {
    let epoch = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Tick>(CAPACITY);
    let consumer = tokio::spawn(async move {
        let mut h = Histogram::<u64>::new(3).unwrap();
        while let Some(t) = rx.recv().await {
            let now = epoch.elapsed().as_nanos() as u64;
            h.record(now.saturating_sub(t.sent_ns)).unwrap();
        }
        h
    });
    let mut tick = tokio::time::interval(Duration::from_micros(50));
    for i in 0..events {
        tick.tick().await;
        tx.send(Tick {
            value: i,
            sent_ns: epoch.elapsed().as_nanos() as u64,
        })
        .await
        .unwrap();
    }
    drop(tx);
    consumer.await.unwrap()
}

fn main() -> Result<(), lexopt::Error> {
    use lexopt::prelude::*;
    let mut rounds = 7usize;
    let mut events = 2_000_000u64;
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        match arg {
            Long("rounds") => rounds = args.value()?.parse()?,
            Long("events") => events = args.value()?.parse()?,
            Long("bench") => {} // passed by `cargo bench`
            _ => return Err(arg.unexpected()),
        }
    }
    let rt = runtime();
    println!(
        "async comparison: {events} events of 16 bytes, capacity {CAPACITY}, tokio multi-threaded \
         runtime with 2 workers, {rounds} rounds (ringbus, tokio alternating)"
    );
    let mut rows: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
        ("fan-out to 3 consumer tasks (vs broadcast)", vec![], vec![]),
        ("one consumer task (vs mpsc)", vec![], vec![]),
    ];
    for _ in 0..rounds {
        let a = rt.block_on(ringbus_fanout(events, 3));
        let b = rt.block_on(broadcast_fanout(events, 3));
        rows[0].1.push(a);
        rows[0].2.push(b);
        let a = rt.block_on(ringbus_fanout(events, 1));
        let b = rt.block_on(mpsc_one(events));
        rows[1].1.push(a);
        rows[1].2.push(b);
    }
    println!();
    println!("| scenario | ringbus (median) | tokio (median) | ringbus / tokio, per round: median (min-max) |");
    println!("|---|---:|---:|---:|");
    for (name, rb, tk) in &rows {
        let ratios: Vec<f64> = rb.iter().zip(tk).map(|(a, b)| a / b).collect();
        println!(
            "| {name} | {:.2} M/s | {:.2} M/s | {} |",
            median(rb) / 1e6,
            median(tk) / 1e6,
            ratio_cell(&ratios)
        );
    }
    let n = (events / 40).clamp(2_000, 50_000);
    let mut rb = Histogram::<u64>::new(3).unwrap();
    let mut tk = Histogram::<u64>::new(3).unwrap();
    for _ in 0..rounds.min(3) {
        rb.add(rt.block_on(ringbus_latency(n))).unwrap();
        tk.add(rt.block_on(mpsc_latency(n))).unwrap();
    }
    println!();
    println!("| one-way latency, one event every 50 us | p50 | p99 | p99.9 |");
    println!("|---|---:|---:|---:|");
    for (name, h) in [("ringbus (poll_async)", &rb), ("tokio mpsc", &tk)] {
        println!(
            "| {name} | {:.1} us | {:.1} us | {:.1} us |",
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.value_at_quantile(0.999) as f64 / 1e3
        );
    }
    Ok(())
}
