//! The scenarios on the `disruptor` crate (nicholassm), its best mode each.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use disruptor::wait_strategies::WaitStrategy;
use disruptor::{BusySpin, BusySpinWithSpinLoopHint, ProcessorSettings, Producer, Sequence, Sleep};

use crate::common::*;

/// Its mode where threads outnumber cores: busy spin collapses there.
fn oversubscribed() -> Sleep {
    Sleep::new(Duration::from_micros(1))
}
const OVERSUBSCRIBED_MODE: &str = "sleep 1 µs (producer spins when full)";

fn summing(events: u64, check: Check) -> impl FnMut(&Ev, Sequence, bool) + Send + 'static {
    let last = events as Sequence - 1;
    let mut sum = 0u64;
    move |e: &Ev, seq: Sequence, _eob: bool| {
        sum = sum.wrapping_add(e.value);
        if seq == last {
            check.store(sum);
        }
    }
}

pub fn run(sc: Scenario, cfg: &Config, pins: Option<(usize, usize)>) -> Sample {
    match cfg.family {
        Family::Best => run_in(
            sc,
            cfg,
            pins,
            (BusySpin, "busy-spin"),
            (oversubscribed(), OVERSUBSCRIBED_MODE),
        ),
        Family::Spin => run_in(
            sc,
            cfg,
            pins,
            (BusySpin, "busy-spin"),
            (BusySpin, "busy-spin"),
        ),
        Family::Hint => {
            let hint = (BusySpinWithSpinLoopHint, "busy-spin with hint");
            run_in(sc, cfg, pins, hint, hint)
        }
        Family::Sleep => {
            let nap = (oversubscribed(), OVERSUBSCRIBED_MODE);
            run_in(sc, cfg, pins, nap, nap)
        }
    }
}

/// The rows, with `pinned` where every thread has a core (the two-thread
/// rows) and `over` where threads outnumber cores, each with its name.
fn run_in<P: WaitStrategy + 'static, O: WaitStrategy + 'static>(
    sc: Scenario,
    cfg: &Config,
    pins: Option<(usize, usize)>,
    (pinned, pinned_mode): (P, &'static str),
    (over, over_mode): (O, &'static str),
) -> Sample {
    let n = cfg.events;
    let cap = cfg.capacity;
    match sc {
        Scenario::Spsc | Scenario::Batch64 => {
            let check = Check::new();
            let mut builder = disruptor::build_single_producer(cap, Ev::default, pinned);
            if let Some((_, c)) = pins {
                builder = builder.pin_at_core(c);
            }
            let mut producer = builder
                .handle_events_with(summing(n, check.clone()))
                .build();
            let batch = if sc == Scenario::Batch64 { 64 } else { 1 };
            let elapsed = timed_on(pins.map(|p| p.0), move || {
                if batch == 1 {
                    for i in 0..n {
                        producer.publish(|e| e.value = i);
                    }
                } else {
                    let mut i = 0;
                    while i < n {
                        let k = batch.min(n - i) as usize;
                        producer.batch_publish(k, |slots| {
                            for e in slots {
                                e.value = i;
                                i += 1;
                            }
                        });
                    }
                }
                drop(producer);
            });
            check.expect("disruptor consumer", sum_to(n));
            Sample::throughput(n, elapsed, pinned_mode)
        }
        Scenario::Mp2 | Scenario::Mp3 => {
            let producers = if sc == Scenario::Mp2 { 2 } else { 3 };
            let per = n / producers;
            let check = Check::new();
            let producer = disruptor::build_multi_producer(cap, Ev::default, over)
                .handle_events_with(summing(per * producers, check.clone()))
                .build();
            let elapsed = timed_on(None, move || {
                let threads: Vec<_> = (0..producers)
                    .map(|_| {
                        let mut p = producer.clone();
                        std::thread::spawn(move || {
                            for i in 0..per {
                                p.publish(|e| e.value = i);
                            }
                        })
                    })
                    .collect();
                drop(producer);
                for t in threads {
                    t.join().unwrap();
                }
            });
            check.expect("disruptor consumer", producers * sum_to(per));
            Sample::throughput(per * producers, elapsed, over_mode)
        }
        Scenario::FanOut => {
            let per = n / 2;
            let checks: Vec<Check> = (0..3).map(|_| Check::new()).collect();
            let producer = disruptor::build_multi_producer(cap, Ev::default, over)
                .handle_events_with(summing(per * 2, checks[0].clone()))
                .handle_events_with(summing(per * 2, checks[1].clone()))
                .handle_events_with(summing(per * 2, checks[2].clone()))
                .build();
            let elapsed = timed_on(None, move || {
                let threads: Vec<_> = (0..2)
                    .map(|_| {
                        let mut p = producer.clone();
                        std::thread::spawn(move || {
                            for i in 0..per {
                                p.publish(|e| e.value = i);
                            }
                        })
                    })
                    .collect();
                drop(producer);
                for t in threads {
                    t.join().unwrap();
                }
            });
            for (k, c) in checks.iter().enumerate() {
                c.expect(&format!("disruptor subscriber {k}"), 2 * sum_to(per));
            }
            Sample::throughput(per * 2, elapsed, over_mode)
        }
        Scenario::Pipeline
        | Scenario::Multicast
        | Scenario::Diamond
        | Scenario::PipelineOneThread
        | Scenario::DiamondOneThread => {
            let checks: Vec<Check> = (0..3).map(|_| Check::new()).collect();
            let b = disruptor::build_single_producer(cap, Ev::default, over);
            let h = |k: usize| summing(n, checks[k].clone());
            let elapsed = match sc {
                Scenario::Pipeline | Scenario::PipelineOneThread => publish_all(
                    n,
                    b.handle_events_with(h(0))
                        .and_then()
                        .handle_events_with(h(1))
                        .and_then()
                        .handle_events_with(h(2))
                        .build(),
                ),
                Scenario::Multicast => publish_all(
                    n,
                    b.handle_events_with(h(0))
                        .handle_events_with(h(1))
                        .handle_events_with(h(2))
                        .build(),
                ),
                _ => publish_all(
                    n,
                    b.handle_events_with(h(0))
                        .handle_events_with(h(1))
                        .and_then()
                        .handle_events_with(h(2))
                        .build(),
                ),
            };
            for (k, c) in checks.iter().enumerate() {
                c.expect(&format!("disruptor stage {k}"), sum_to(n));
            }
            Sample::throughput(n, elapsed, over_mode)
        }
        Scenario::Latency => latency(cfg, pins, pinned, pinned_mode),
        Scenario::PingPong => ping_pong(cfg, pins, pinned, pinned_mode),
    }
}

/// Publishes `0..n` from an unpinned thread, then drops (drains) the producer.
fn publish_all<P: Producer<Ev> + Send + 'static>(n: u64, mut producer: P) -> Duration {
    timed_on(None, move || {
        for i in 0..n {
            producer.publish(|e| e.value = i);
        }
        drop(producer);
    })
}

fn latency<W: WaitStrategy + 'static>(
    cfg: &Config,
    pins: Option<(usize, usize)>,
    strategy: W,
    mode: &'static str,
) -> Sample {
    let n = cfg.latency_events;
    let interval = cfg.interval;
    let base = Instant::now();
    let (tx, rx) = mpsc::channel();
    let mut hist = histogram();
    let last = n as Sequence - 1;
    let mut builder = disruptor::build_single_producer(cfg.capacity, Ev::default, strategy);
    if let Some((_, c)) = pins {
        builder = builder.pin_at_core(c);
    }
    let mut producer = builder
        .handle_events_with(move |e: &Ev, seq: Sequence, _eob: bool| {
            let _ = hist.record(now_ns(base).saturating_sub(e.stamp).max(1));
            if seq == last {
                let _ = tx.send(hist.clone());
            }
        })
        .build();
    let elapsed = timed_on(pins.map(|p| p.0), move || {
        let mut next = Instant::now();
        for i in 0..n {
            next += interval;
            spin_until(next);
            producer.publish(|e| {
                e.value = i;
                e.stamp = now_ns(base);
            });
        }
        drop(producer);
    });
    let hist = rx.recv().expect("latency histogram");
    assert_eq!(
        hist.len(),
        n,
        "WRONG RESULT: disruptor latency run lost events"
    );
    Sample {
        events: n,
        elapsed,
        latency: Some(hist),
        mode,
    }
}

fn ping_pong<W: WaitStrategy + 'static>(
    cfg: &Config,
    pins: Option<(usize, usize)>,
    strategy: W,
    mode: &'static str,
) -> Sample {
    let rounds = cfg.latency_events;
    let base = Instant::now();
    let (hand_over, handed) =
        mpsc::channel::<disruptor::SingleProducer<Ev, disruptor::SingleConsumerBarrier>>();
    let (done_tx, done) = mpsc::channel();

    let mut ping_producer = None;
    let mut hist = histogram();
    let mut pong_builder = disruptor::build_single_producer(cfg.capacity, Ev::default, strategy);
    if let Some((a, _)) = pins {
        pong_builder = pong_builder.pin_at_core(a);
    }
    let mut pong = pong_builder
        .handle_events_with(move |e: &Ev, seq: Sequence, _eob: bool| {
            let _ = hist.record(now_ns(base).saturating_sub(e.stamp).max(1));
            if ping_producer.is_none() {
                ping_producer = Some(handed.recv().unwrap());
            }
            if seq as u64 + 1 == rounds {
                let _ = done_tx.send((hist.clone(), ping_producer.take()));
            } else if let Some(ping) = ping_producer.as_mut() {
                ping.publish(|p: &mut Ev| {
                    p.value = seq as u64 + 1;
                    p.stamp = now_ns(base);
                });
            }
        })
        .build();
    let mut ping_builder = disruptor::build_single_producer(cfg.capacity, Ev::default, strategy);
    if let Some((_, b)) = pins {
        ping_builder = ping_builder.pin_at_core(b);
    }
    let mut ping = ping_builder
        .handle_events_with(move |e: &Ev, _seq: Sequence, _eob: bool| {
            pong.publish(|p| *p = *e);
        })
        .build();

    let start = Instant::now();
    ping.publish(|p| p.stamp = now_ns(base));
    hand_over.send(ping).unwrap();
    let (hist, ping) = done.recv().expect("ping-pong finished");
    let elapsed = start.elapsed();
    drop(ping);
    assert_eq!(
        hist.len(),
        rounds,
        "WRONG RESULT: disruptor ping-pong lost a round trip"
    );
    Sample {
        events: rounds,
        elapsed,
        latency: Some(hist),
        mode,
    }
}
