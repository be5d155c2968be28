//! The scenarios on `ringbus`.

use std::sync::mpsc;
use std::time::Instant;

use hdrhistogram::Histogram;
use ringbus::{
    Blocking, Builder, BusySpin, BusySpinWithHint, EventHandler, PhasedBackoff, Sequence,
    SingleProducerSequencer, Sleeping, WaitStrategy, Yielding,
};

use crate::common::*;

/// Where each thread has a core: plain busy spin, like for like with the
/// disruptor crate's `BusySpin` on the same rows.
const PINNED: BusySpin = BusySpin;
const PINNED_MODE: &str = "busy-spin";
/// For latency: react at once, no `pause` between polls.
const LATENCY: BusySpin = BusySpin;
const LATENCY_MODE: &str = "busy-spin";

/// The graphs whose stages share one thread (2 threads, pinned): napping
/// 1 µs measured 1.2–1.9× busy spin there. The stages' thread is slower
/// per event than the producer, so the throughput is the producer's; a
/// spinning stage thread pulls the cursor's line over at every publish,
/// a napping one lets the producer run and takes whole rings at a time.
fn one_thread() -> Sleeping {
    sleeping(0)
}
const ONE_THREAD_MODE: &str = "sleeping 1 µs, stages on 1 thread";

/// ringbus's single-stage SPSC in the mode of the one-thread graphs, for
/// their ratio to it (`ringbus-1-stage`).
pub fn one_stage(cfg: &Config, pins: Option<(usize, usize)>) -> Sample {
    match cfg.family {
        Family::Best => Sample {
            mode: "sleeping 1 µs",
            ..spsc(cfg, one_thread(), pins, 1)
        },
        _ => run(Scenario::Spsc, cfg, pins),
    }
}

/// The strategy for scenarios with more threads than cores (`--oversubscribed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversubscribed {
    /// The mode measured best here for every oversubscribed row: `Sleeping`
    /// (1 µs, no spin, no yield).
    Auto,
    Yielding,
    Blocking,
    Phased,
    Sleeping,
    YieldThenSleep,
}

impl Oversubscribed {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "yielding" => Self::Yielding,
            "blocking" => Self::Blocking,
            "phased" => Self::Phased,
            "sleeping" => Self::Sleeping,
            "yield-then-sleep" => Self::YieldThenSleep,
            "auto" => Self::Auto,
            _ => return None,
        })
    }

    fn mode(self) -> &'static str {
        match self {
            Self::Yielding => "yielding",
            Self::Blocking => "blocking",
            Self::Phased => "phased backoff (spin, yield, block)",
            Self::Sleeping => "sleeping 1 µs, no spin",
            Self::YieldThenSleep => "10 yields, then sleeping 1 µs",
            Self::Auto => unreachable!("resolved per scenario"),
        }
    }
}

/// Evaluates `$body` with `$w` bound to the chosen oversubscribed strategy.
macro_rules! with_strategy {
    ($choice:expr, |$w:ident| $body:expr) => {{
        let sample = match $choice {
            Oversubscribed::Yielding => {
                let $w = Yielding::default();
                $body
            }
            Oversubscribed::Blocking => {
                let $w = Blocking;
                $body
            }
            Oversubscribed::Phased => {
                let $w = PhasedBackoff::default();
                $body
            }
            Oversubscribed::Sleeping => {
                let $w = sleeping(0);
                $body
            }
            Oversubscribed::YieldThenSleep => {
                let $w = sleeping(10);
                $body
            }
            Oversubscribed::Auto => unreachable!("resolved per scenario"),
        };
        Sample {
            mode: $choice.mode(),
            ..sample
        }
    }};
}

/// Sleeps 1 µs (the OS makes that ~50 µs) after `yields` yields, no spin.
fn sleeping(yields: u32) -> Sleeping {
    Sleeping::new(0, yields, std::time::Duration::from_micros(1))
}

pub fn run(sc: Scenario, cfg: &Config, pins: Option<(usize, usize)>) -> Sample {
    match cfg.family {
        Family::Best => run_best(sc, cfg, pins),
        Family::Spin => run_with(sc, cfg, pins, BusySpin, "busy-spin"),
        Family::Hint => run_with(sc, cfg, pins, BusySpinWithHint, "busy-spin with hint"),
        Family::Sleep => run_with(sc, cfg, pins, sleeping(0), "sleeping 1 µs, no spin"),
    }
}

/// Each row in ringbus's best mode for it (`--family best`).
fn run_best(sc: Scenario, cfg: &Config, pins: Option<(usize, usize)>) -> Sample {
    let n = cfg.events;
    let over = match cfg.oversubscribed {
        Oversubscribed::Auto => Oversubscribed::Sleeping,
        chosen => chosen,
    };
    match sc {
        Scenario::Spsc => spsc(cfg, PINNED, pins, 1),
        Scenario::Batch64 => spsc(cfg, PINNED, pins, 64),
        Scenario::Mp2 => with_strategy!(over, |w| multi(cfg, w, 2)),
        Scenario::Mp3 => with_strategy!(over, |w| multi(cfg, w, 3)),
        Scenario::Pipeline => with_strategy!(over, |w| graph(cfg, w, pipeline(n, false))),
        Scenario::Multicast => with_strategy!(over, |w| graph(cfg, w, multicast(n))),
        Scenario::Diamond => with_strategy!(over, |w| graph(cfg, w, diamond(n, false))),
        Scenario::FanOut => with_strategy!(over, |w| fan_out(cfg, w)),
        // Two threads, pinned.
        Scenario::PipelineOneThread => graph_pinned(cfg, one_thread(), pins, pipeline(n, true)),
        Scenario::DiamondOneThread => graph_pinned(cfg, one_thread(), pins, diamond(n, true)),
        Scenario::Latency => latency(cfg, LATENCY, pins),
        Scenario::PingPong => ping_pong(cfg, LATENCY, pins),
    }
}

/// A row with more threads than cores with `Blocking` (`ringbus-blocking`),
/// whatever the family.
pub fn blocking(sc: Scenario, cfg: &Config, pins: Option<(usize, usize)>) -> Sample {
    let cfg = Config {
        oversubscribed: Oversubscribed::Blocking,
        family: Family::Best,
        ..cfg.clone()
    };
    run_best(sc, &cfg, pins)
}

/// Every row with `strategy` (`--family spin|hint|sleep`), named `mode`.
fn run_with<W: WaitStrategy + Copy>(
    sc: Scenario,
    cfg: &Config,
    pins: Option<(usize, usize)>,
    strategy: W,
    mode: &'static str,
) -> Sample {
    let n = cfg.events;
    let sample = match sc {
        Scenario::Spsc => spsc(cfg, strategy, pins, 1),
        Scenario::Batch64 => spsc(cfg, strategy, pins, 64),
        Scenario::Mp2 => multi(cfg, strategy, 2),
        Scenario::Mp3 => multi(cfg, strategy, 3),
        Scenario::Pipeline => graph(cfg, strategy, pipeline(n, false)),
        Scenario::Multicast => graph(cfg, strategy, multicast(n)),
        Scenario::Diamond => graph(cfg, strategy, diamond(n, false)),
        Scenario::FanOut => fan_out(cfg, strategy),
        Scenario::PipelineOneThread => graph_pinned(cfg, strategy, pins, pipeline(n, true)),
        Scenario::DiamondOneThread => graph_pinned(cfg, strategy, pins, diamond(n, true)),
        Scenario::Latency => latency(cfg, strategy, pins),
        Scenario::PingPong => ping_pong(cfg, strategy, pins),
    };
    Sample { mode, ..sample }
}

/// Three stages in a row, on one thread if `one_thread`.
fn pipeline<W: WaitStrategy>(
    n: u64,
    one_thread: bool,
) -> impl FnOnce(SingleBuilder<W>, &mut Checks) -> SingleBuilder<W> {
    move |b, c| {
        let b = b.handle_events_with(summing(n, c.add())).and_then();
        let b = if one_thread { b.on_same_thread() } else { b };
        let b = b.handle_events_with(summing(n, c.add())).and_then();
        let b = if one_thread { b.on_same_thread() } else { b };
        b.handle_events_with(summing(n, c.add()))
    }
}

/// Three stages reading the ring side by side.
fn multicast<W: WaitStrategy>(
    n: u64,
) -> impl FnOnce(SingleBuilder<W>, &mut Checks) -> SingleBuilder<W> {
    move |b, c| {
        b.handle_events_with(summing(n, c.add()))
            .handle_events_with(summing(n, c.add()))
            .handle_events_with(summing(n, c.add()))
    }
}

/// Two stages side by side, then one after both; on one thread if
/// `one_thread`.
fn diamond<W: WaitStrategy>(
    n: u64,
    one_thread: bool,
) -> impl FnOnce(SingleBuilder<W>, &mut Checks) -> SingleBuilder<W> {
    move |b, c| {
        let b = b.handle_events_with(summing(n, c.add()));
        let b = if one_thread { b.on_same_thread() } else { b };
        let b = b.handle_events_with(summing(n, c.add())).and_then();
        let b = if one_thread { b.on_same_thread() } else { b };
        b.handle_events_with(summing(n, c.add()))
    }
}

/// A stage summing payloads; stores the sum at the last of `events`.
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

/// The checks of a graph's stages.
#[derive(Default)]
pub struct Checks(Vec<Check>);

impl Checks {
    fn add(&mut self) -> Check {
        let c = Check::new();
        self.0.push(c.clone());
        c
    }
}

fn spsc<W: WaitStrategy>(
    cfg: &Config,
    strategy: W,
    pins: Option<(usize, usize)>,
    batch: u64,
) -> Sample {
    let n = cfg.events;
    let check = Check::new();
    let mut builder = ringbus::single_producer(cfg.capacity, Ev::default, strategy);
    if let Some((_, consumer)) = pins {
        builder = builder.pin_at_core(consumer);
    }
    let mut producer = builder
        .handle_events_with(summing(n, check.clone()))
        .build();
    let elapsed = timed_on(pins.map(|p| p.0), move || {
        if batch == 1 {
            for i in 0..n {
                if producer.publish(|e| e.value = i).is_err() {
                    break;
                }
            }
        } else {
            let mut i = 0;
            while i < n {
                let k = batch.min(n - i) as usize;
                producer
                    .batch_publish(k, |slots| {
                        for e in slots {
                            e.value = i;
                            i += 1;
                        }
                    })
                    .unwrap();
            }
        }
        producer.shutdown().unwrap();
    });
    check.expect("ringbus consumer", sum_to(n));
    Sample {
        events: n,
        elapsed,
        latency: None,
        mode: PINNED_MODE,
    }
}

fn multi<W: WaitStrategy>(cfg: &Config, strategy: W, producers: u64) -> Sample {
    let per = cfg.events / producers;
    let check = Check::new();
    let producer = ringbus::multi_producer(cfg.capacity, Ev::default, strategy)
        .handle_events_with(summing(per * producers, check.clone()))
        .build();
    let elapsed = timed_on(None, move || {
        let threads: Vec<_> = (0..producers)
            .map(|_| {
                let p = producer.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        p.publish(|e| e.value = i).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        producer.shutdown().unwrap();
    });
    check.expect("ringbus consumer", producers * sum_to(per));
    Sample {
        events: per * producers,
        elapsed,
        latency: None,
        mode: "",
    }
}

/// Two producer threads, three stages side by side, each seeing every event.
fn fan_out<W: WaitStrategy>(cfg: &Config, strategy: W) -> Sample {
    let per = cfg.events / 2;
    let checks: Vec<Check> = (0..3).map(|_| Check::new()).collect();
    let producer = ringbus::multi_producer(cfg.capacity, Ev::default, strategy)
        .handle_events_with(summing(per * 2, checks[0].clone()))
        .handle_events_with(summing(per * 2, checks[1].clone()))
        .handle_events_with(summing(per * 2, checks[2].clone()))
        .build();
    let elapsed = timed_on(None, move || {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let p = producer.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        p.publish(|e| e.value = i).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        producer.shutdown().unwrap();
    });
    for (k, c) in checks.iter().enumerate() {
        c.expect(&format!("ringbus subscriber {k}"), 2 * sum_to(per));
    }
    Sample {
        events: per * 2,
        elapsed,
        latency: None,
        mode: "",
    }
}

type SingleBuilder<W> = Builder<Ev, SingleProducerSequencer, W>;

fn graph<W: WaitStrategy>(
    cfg: &Config,
    strategy: W,
    shape: impl FnOnce(SingleBuilder<W>, &mut Checks) -> SingleBuilder<W>,
) -> Sample {
    graph_pinned(cfg, strategy, None, shape)
}

/// A graph whose producer runs on core `pins.0` and whose first stage
/// (with the thread it shares) on `pins.1`, when given.
fn graph_pinned<W: WaitStrategy>(
    cfg: &Config,
    strategy: W,
    pins: Option<(usize, usize)>,
    shape: impl FnOnce(SingleBuilder<W>, &mut Checks) -> SingleBuilder<W>,
) -> Sample {
    let n = cfg.events;
    let mut checks = Checks::default();
    let mut builder = ringbus::single_producer(cfg.capacity, Ev::default, strategy);
    if let Some((_, consumer)) = pins {
        builder = builder.pin_at_core(consumer);
    }
    let mut producer = shape(builder, &mut checks).build();
    // (The oversubscribed rows name their strategy over this.)
    let mode = ONE_THREAD_MODE;
    let elapsed = timed_on(pins.map(|p| p.0), move || {
        for i in 0..n {
            producer.publish(|e| e.value = i).unwrap();
        }
        producer.shutdown().unwrap();
    });
    for (k, check) in checks.0.iter().enumerate() {
        check.expect(&format!("ringbus stage {k}"), sum_to(n));
    }
    Sample {
        events: n,
        elapsed,
        latency: None,
        mode,
    }
}

/// Records one-way latency; hands the histogram over at shutdown.
struct LatencySink {
    base: Instant,
    hist: Histogram<u64>,
    out: mpsc::Sender<Histogram<u64>>,
}

impl EventHandler<Ev> for LatencySink {
    fn on_event(&mut self, e: &Ev, _seq: Sequence, _eob: bool) {
        let _ = self
            .hist
            .record(now_ns(self.base).saturating_sub(e.stamp).max(1));
    }

    fn on_shutdown(&mut self) {
        let _ = self.out.send(self.hist.clone());
    }
}

fn latency<W: WaitStrategy>(cfg: &Config, strategy: W, pins: Option<(usize, usize)>) -> Sample {
    let n = cfg.latency_events;
    let interval = cfg.interval;
    let base = Instant::now();
    let (tx, rx) = mpsc::channel();
    let mut builder = ringbus::single_producer(cfg.capacity, Ev::default, strategy);
    if let Some((_, consumer)) = pins {
        builder = builder.pin_at_core(consumer);
    }
    let mut producer = builder
        .handle_events_with(LatencySink {
            base,
            hist: histogram(),
            out: tx,
        })
        .build();
    let elapsed = timed_on(pins.map(|p| p.0), move || {
        let mut next = Instant::now();
        for i in 0..n {
            next += interval;
            spin_until(next);
            producer
                .publish(|e| {
                    e.value = i;
                    e.stamp = now_ns(base);
                })
                .unwrap();
        }
        producer.shutdown().unwrap();
    });
    let hist = rx.recv().expect("latency histogram");
    assert_eq!(
        hist.len(),
        n,
        "WRONG RESULT: ringbus latency run lost events"
    );
    Sample {
        events: n,
        elapsed,
        latency: Some(hist),
        mode: LATENCY_MODE,
    }
}

fn ping_pong<W: WaitStrategy + Copy>(
    cfg: &Config,
    strategy: W,
    pins: Option<(usize, usize)>,
) -> Sample {
    let rounds = cfg.latency_events;
    let base = Instant::now();
    let (hand_over, handed) = mpsc::channel::<ringbus::SingleProducer<Ev, W>>();
    let (done_tx, done) = mpsc::channel();

    // Pinger: a stage on the pong ring that owns the ping producer.
    let mut ping_producer = None;
    let mut hist = histogram();
    let mut pong_builder = ringbus::single_producer(cfg.capacity, Ev::default, strategy);
    if let Some((a, _)) = pins {
        pong_builder = pong_builder.pin_at_core(a);
    }
    let mut pong = pong_builder
        .handle_events_with(move |e: &Ev, seq: Sequence, _eob: bool| {
            let _ = hist.record(now_ns(base).saturating_sub(e.stamp).max(1));
            let ping: &mut ringbus::SingleProducer<Ev, W> =
                ping_producer.get_or_insert_with(|| handed.recv().unwrap());
            if seq as u64 + 1 == rounds {
                let _ = done_tx.send((hist.clone(), ping_producer.take()));
            } else {
                ping.publish(|p| {
                    p.value = seq as u64 + 1;
                    p.stamp = now_ns(base);
                })
                .unwrap();
            }
        })
        .build();
    // Ponger: a stage on the ping ring that owns the pong producer.
    let mut ping_builder = ringbus::single_producer(cfg.capacity, Ev::default, strategy);
    if let Some((_, b)) = pins {
        ping_builder = ping_builder.pin_at_core(b);
    }
    let mut ping = ping_builder
        .handle_events_with(move |e: &Ev, _seq: Sequence, _eob: bool| {
            pong.publish(|p| *p = *e).unwrap();
        })
        .build();

    let start = Instant::now();
    ping.publish(|p| p.stamp = now_ns(base)).unwrap();
    hand_over.send(ping).unwrap();
    let (hist, ping) = done.recv().expect("ping-pong finished");
    let elapsed = start.elapsed();
    drop(ping); // closes ping, whose stage then closes pong
    assert_eq!(
        hist.len(),
        rounds,
        "WRONG RESULT: ringbus ping-pong lost a round trip"
    );
    Sample {
        events: rounds,
        elapsed,
        latency: Some(hist),
        mode: LATENCY_MODE,
    }
}
