//! Criterion benches of the LMAX shapes on ringbus alone (the side-by-side
//! comparison with other crates is `benches/compare`).
//!
//! Each bench keeps one bus alive across samples and measures the time to push
//! `iters` events through it until the last stage has seen the last one. The
//! `base` bench runs the same harness with no ring in between: its time is the
//! harness's own overhead per event.
//!
//! `cargo bench --bench shapes`

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringbus::{BusySpinWithHint, Sequence, Sleeping, WaitStrategy};

#[derive(Debug, Default, Clone, Copy)]
struct Ev {
    value: u64,
}

/// A stage that records the last sequence it handled, once per batch.
fn tail(seen: Arc<AtomicI64>) -> impl FnMut(&Ev, Sequence, bool) + Send + 'static {
    let mut sum = 0u64;
    move |e: &Ev, seq: Sequence, end_of_batch: bool| {
        sum = sum.wrapping_add(e.value);
        if end_of_batch {
            black_box(sum);
            seen.store(seq, Ordering::Release);
        }
    }
}

fn work(_e: &Ev, _s: Sequence, _b: bool) {}

fn wait_until(seen: &AtomicI64, target: i64) {
    while seen.load(Ordering::Acquire) < target {
        std::hint::spin_loop();
    }
}

/// Oversubscribed shapes (more threads than this machine's 2 cores) sleep.
fn sleepy() -> Sleeping {
    Sleeping::new(0, 0, Duration::from_micros(1))
}

fn bench_single<W: WaitStrategy>(
    c: &mut Criterion,
    name: &str,
    strategy: W,
    batch: usize,
    shape: impl FnOnce(
        ringbus::Builder<Ev, ringbus::SingleProducerSequencer, W>,
        Arc<AtomicI64>,
    ) -> ringbus::Builder<Ev, ringbus::SingleProducerSequencer, W>,
) {
    let seen = Arc::new(AtomicI64::new(-1));
    let mut producer = shape(
        ringbus::single_producer(1 << 16, Ev::default, strategy),
        Arc::clone(&seen),
    )
    .build();
    let mut group = c.benchmark_group("shapes");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut left = iters;
            while left > 0 {
                let n = (batch as u64).min(left);
                let last = if n == 1 {
                    producer.publish(|e| e.value = left).unwrap()
                } else {
                    producer
                        .batch_publish(n as usize, |slots| slots.for_each(|e| e.value = left))
                        .unwrap()
                };
                left -= n;
                if left == 0 {
                    wait_until(&seen, last);
                }
            }
            start.elapsed()
        })
    });
    group.finish();
    producer.shutdown().unwrap();
}

fn base(c: &mut Criterion) {
    // The harness with no ring: a thread-local write per event and the final
    // wait on an atomic that is already set.
    let seen = AtomicI64::new(-1);
    let mut slot = Ev::default();
    let mut group = c.benchmark_group("shapes");
    group.throughput(Throughput::Elements(1));
    group.bench_function("base", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                black_box(&mut slot).value = i;
            }
            seen.store(iters as i64, Ordering::Release);
            wait_until(&seen, iters as i64);
            start.elapsed()
        })
    });
    group.finish();
}

fn spsc(c: &mut Criterion) {
    bench_single(c, "1p1c", BusySpinWithHint, 1, |b, seen| {
        b.handle_events_with(tail(seen))
    });
}

fn batch64(c: &mut Criterion) {
    bench_single(c, "1p1c_batch64", BusySpinWithHint, 64, |b, seen| {
        b.handle_events_with(tail(seen))
    });
}

fn pipeline(c: &mut Criterion) {
    bench_single(c, "pipeline3", sleepy(), 1, |b, seen| {
        b.handle_events_with(work)
            .and_then()
            .handle_events_with(work)
            .and_then()
            .handle_events_with(tail(seen))
    });
}

fn multicast(c: &mut Criterion) {
    // The slowest of the three gates; `tail` sits on one of them, and the
    // shutdown after the bench drains the others.
    bench_single(c, "multicast3", sleepy(), 1, |b, seen| {
        b.handle_events_with(work)
            .handle_events_with(work)
            .handle_events_with(tail(seen))
    });
}

fn diamond(c: &mut Criterion) {
    bench_single(c, "diamond", sleepy(), 1, |b, seen| {
        b.handle_events_with(work)
            .handle_events_with(work)
            .and_then()
            .handle_events_with(tail(seen))
    });
}

fn mp2(c: &mut Criterion) {
    let seen = Arc::new(AtomicI64::new(-1));
    let producer = ringbus::multi_producer(1 << 16, Ev::default, sleepy())
        .handle_events_with(tail(Arc::clone(&seen)))
        .build();
    let mut group = c.benchmark_group("shapes");
    group.throughput(Throughput::Elements(1));
    group.bench_function("2p1c", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(2);
            let start = Instant::now();
            thread::scope(|s| {
                for _ in 0..2 {
                    let p = producer.clone();
                    s.spawn(move || {
                        for i in 0..per {
                            p.publish(|e| e.value = i).unwrap();
                        }
                    });
                }
            });
            wait_until(&seen, producer.cursor());
            start.elapsed()
        })
    });
    group.finish();
    producer.shutdown().unwrap();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = base, spsc, batch64, mp2, pipeline, multicast, diamond
}
criterion_main!(benches);
