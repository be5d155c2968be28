//! Every wait strategy delivers everything, for stages waiting on the ring,
//! stages waiting on an upstream stage, and producers waiting on a full ring.

mod common;

use std::time::Duration;

use common::*;
use ringbus::{
    Blocking, BusySpin, BusySpinWithHint, PhasedBackoff, Sequence, Sleeping, WaitStrategy, Yielding,
};

/// One producer, a two-stage pipeline plus a parallel stage, a small ring so
/// the producer waits on a full ring as often as the stages wait for events.
fn pipeline_with<W: WaitStrategy>(strategy: W, events: u64) {
    let (a, sa) = Verifier::new(true);
    let (b, sb) = Verifier::new(true);
    let (c, sc) = Verifier::new(true);
    let mut p = ringbus::single_producer(8, Event::default, strategy)
        .handle_events_with(a)
        .handle_events_with(b)
        .and_then()
        .handle_events_with(c)
        .build();
    for i in 0..events {
        p.publish(|e| e.set(i)).unwrap();
    }
    p.shutdown().unwrap();
    for s in [sa, sb, sc] {
        let s = s.lock().unwrap();
        assert_eq!(s.count, events);
        assert_eq!(s.sum, events * (events - 1) / 2);
    }
}

/// Two producers into one stage: multi-producer claims under each strategy.
fn multi_with<W: WaitStrategy>(strategy: W, per: u64) {
    let (v, s) = Verifier::new(false);
    let p = ringbus::multi_producer(8, Event::default, strategy)
        .handle_events_with(v)
        .build();
    let q = p.clone();
    let t = std::thread::spawn(move || {
        for i in 0..per {
            q.publish(|e| e.set(value(1, i))).unwrap();
        }
    });
    for i in 0..per {
        p.publish(|e| e.set(value(0, i))).unwrap();
    }
    t.join().unwrap();
    p.shutdown().unwrap();
    assert_eq!(s.lock().unwrap().count, 2 * per);
}

// Busy strategies with more spinning threads than the machine's 2 cores only
// measure the scheduler; keep their event counts modest.
const SPIN_EVENTS: u64 = scaled(2_000, 100);

#[test]
fn busy_spin() {
    bounded(120, || {
        pipeline_with(BusySpin, SPIN_EVENTS);
        multi_with(BusySpin, SPIN_EVENTS / 2);
    });
}

#[test]
fn busy_spin_with_hint() {
    bounded(120, || {
        pipeline_with(BusySpinWithHint, SPIN_EVENTS);
        multi_with(BusySpinWithHint, SPIN_EVENTS / 2);
    });
}

#[test]
fn yielding() {
    bounded(60, || {
        pipeline_with(Yielding::default(), N);
        multi_with(Yielding::default(), N / 2);
    });
}

#[test]
fn sleeping() {
    let short = Sleeping::default().with_sleep(Duration::from_micros(20));
    bounded(60, move || {
        pipeline_with(short, N / 4);
        multi_with(short, N / 8);
    });
}

#[test]
fn blocking() {
    bounded(60, || {
        pipeline_with(Blocking, N);
        multi_with(Blocking, N / 2);
    });
}

#[test]
fn phased_backoff_with_lock_and_with_sleep() {
    bounded(60, || {
        pipeline_with(PhasedBackoff::default(), N / 2);
        multi_with(PhasedBackoff::default(), N / 4);
        let sleep = PhasedBackoff::with_sleep(Duration::from_micros(5), Duration::from_micros(20));
        pipeline_with(sleep, N / 4);
        multi_with(sleep, N / 8);
        // Phases of `Duration::MAX`: spin or yield for ever, never fall
        // back (a deadline that far out must not overflow the clock).
        let endless = PhasedBackoff::with_blocking(Duration::ZERO, Duration::MAX);
        pipeline_with(endless, N / 8);
        multi_with(endless, N / 16);
    });
}

/// Producer and consumer both park again and again: the producer pauses so the
/// stage runs dry and parks; the stage pauses so the ring (of 2) fills and the
/// producer parks. A lost wake-up hangs one of them, which `bounded` turns
/// into a failure.
fn repeated_parking<W: WaitStrategy>(strategy: W) {
    let rounds: u64 = scaled(2_000, 20);
    let (v, s) = Verifier::new(true);
    let mut p = ringbus::single_producer(2, Event::default, strategy)
        .handle_events_with(move |e: &Event, seq: Sequence, eob: bool| {
            if seq % 7 == 3 {
                std::thread::sleep(Duration::from_micros(50));
            }
            let _ = (e, eob);
        })
        .and_then()
        .handle_events_with(v)
        .build();
    for i in 0..rounds * 5 {
        p.publish(|e| e.set(i)).unwrap();
        if i % 5 == 0 {
            std::thread::sleep(Duration::from_micros(30));
        }
    }
    p.shutdown().unwrap();
    assert_eq!(s.lock().unwrap().count, rounds * 5);
}

#[test]
fn blocking_producer_and_consumer_park_repeatedly() {
    bounded(60, || repeated_parking(Blocking));
}

#[test]
fn phased_backoff_parks_repeatedly() {
    bounded(60, || {
        repeated_parking(PhasedBackoff::with_blocking(
            Duration::from_nanos(100),
            Duration::from_nanos(100),
        ))
    });
}

/// CPU time (user + system) of the calling thread, from procfs.
#[cfg(target_os = "linux")]
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the parenthesised command: state is field 3; utime and
    // stime are fields 14 and 15, in clock ticks (100 per second on Linux).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Under `Blocking`, a stage waiting on a slow upstream stage parks instead of
/// spinning (LMAX's blocking strategy spins there). The slow stage sleeps
/// ~400 ms in all; a spinning downstream stage would burn about that much CPU,
/// a parked one almost none.
#[test]
#[cfg(all(target_os = "linux", not(miri)))]
fn blocking_stage_parks_while_upstream_is_slow() {
    bounded(60, || {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut p = ringbus::single_producer(64, Event::default, Blocking)
            .handle_events_with(|_e: &Event, _s: Sequence, _eob: bool| {
                std::thread::sleep(Duration::from_millis(2));
            })
            .and_then()
            .handle_events_with(ringbus::factory(move || {
                struct Downstream(std::sync::mpsc::Sender<Duration>);
                impl ringbus::EventHandler<Event> for Downstream {
                    fn on_event(&mut self, _e: &Event, _s: Sequence, _eob: bool) {}
                    fn on_shutdown(&mut self) {
                        let _ = self.0.send(thread_cpu());
                    }
                }
                Downstream(tx)
            }))
            .build();
        for i in 0..200 {
            p.publish(|e| e.set(i)).unwrap();
        }
        p.shutdown().unwrap();
        let cpu = rx.recv().unwrap();
        assert!(
            cpu < Duration::from_millis(150),
            "downstream stage used {cpu:?} of CPU waiting on a stage that slept 400 ms: it spun"
        );
    });
}

/// A stage timeout calls `on_timeout` while nothing arrives.
#[test]
fn stage_timeout_calls_on_timeout() {
    bounded(60, || {
        let (v, s) = Verifier::new(true);
        let mut p = ringbus::single_producer(8, Event::default, Blocking)
            .timeout(Duration::from_millis(5))
            .handle_events_with(v)
            .build();
        p.publish(|e| e.set(0)).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        p.publish(|e| e.set(1)).unwrap();
        p.shutdown().unwrap();
        let s = s.lock().unwrap();
        assert_eq!(s.count, 2);
        assert!(s.timeouts >= 2, "on_timeout called {} times", s.timeouts);
    });
}

/// Calls `publish_timeout` with a deadline inside the yield phase (30 µs) and
/// one beyond it (3 ms): each times out, and not before its deadline.
fn times_out_at_each(
    mut publish_timeout: impl FnMut(Duration) -> Result<Sequence, ringbus::TryPublishError>,
) {
    for d in [Duration::from_micros(30), Duration::from_millis(3)] {
        let start = std::time::Instant::now();
        assert_eq!(publish_timeout(d), Err(ringbus::TryPublishError::Timeout));
        assert!(start.elapsed() >= d, "gave up before its deadline {d:?}");
    }
}

/// Under the napping strategies a producer facing a full ring yields for up
/// to 200 µs before it sleeps or parks. A deadline inside that phase and one
/// beyond it are both honoured, for one producer and for many; once the
/// stage moves on, the waiting publish goes through.
fn full_ring_deadlines<W: WaitStrategy>(strategy: W) {
    let (open, gate) = std::sync::mpsc::channel();
    let (v, s) = Verifier::new(true);
    let mut p = ringbus::single_producer(2, Event::default, strategy.clone())
        .handle_events_with(gated_stage(gate))
        .and_then()
        .handle_events_with(v)
        .build();
    // Dropped before `p` if an assertion fails: `p`'s drop must not wait on
    // a stage stuck at the gate.
    let open = open;
    p.publish(|e| e.set(0)).unwrap();
    p.publish(|e| e.set(1)).unwrap();
    times_out_at_each(|d| p.publish_timeout(d, |_| unreachable!()));
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_micros(100));
        for _ in 0..3 {
            open.send(()).unwrap();
        }
    });
    p.publish(|e| e.set(2)).unwrap();
    releaser.join().unwrap();
    p.shutdown().unwrap();
    assert_eq!(s.lock().unwrap().count, 3);

    let (open, gate) = std::sync::mpsc::channel();
    let (v, s) = Verifier::new(false);
    let p = ringbus::multi_producer(2, Event::default, strategy)
        .handle_events_with(gated_stage(gate))
        .and_then()
        .handle_events_with(v)
        .build();
    let open = open; // as above
    p.publish(|e| e.set(value(0, 0))).unwrap();
    p.publish(|e| e.set(value(0, 1))).unwrap();
    times_out_at_each(|d| p.publish_timeout(d, |_| unreachable!()));
    drop(open);
    p.publish(|e| e.set(value(0, 2))).unwrap();
    p.shutdown().unwrap();
    assert_eq!(s.lock().unwrap().count, 3);
}

/// A producer waiting on a full ring, whichever phase of its wait it is in,
/// gets `Err(Halted)` when the bus halts: a multi producer halted by a clone,
/// a single producer halted by a stage's panic.
fn full_ring_halt<W: WaitStrategy>(strategy: W, after: Duration) {
    use ringbus::PublishError;
    let (keep_closed, gate) = std::sync::mpsc::channel::<()>();
    let p = ringbus::multi_producer(2, Event::default, strategy.clone())
        .handle_events_with(gated_stage(gate))
        .build();
    let keep_closed = keep_closed; // dropped before `p` if an assertion fails
    p.publish(|e| e.set(0)).unwrap();
    p.publish(|e| e.set(1)).unwrap();
    let q = p.clone();
    let halter = std::thread::spawn(move || {
        std::thread::sleep(after);
        q.halt();
    });
    assert_eq!(p.publish(|e| e.set(2)), Err(PublishError::Halted));
    halter.join().unwrap();
    drop(keep_closed);
    let _ = p.shutdown();

    // The stage fails `after` the ring is full, not before.
    let (go, full) = std::sync::mpsc::channel::<()>();
    let mut p = ringbus::single_producer(2, Event::default, strategy)
        .handle_events_with(move |_e: &Event, _s: Sequence, _eob: bool| {
            let _ = full.recv();
            std::thread::sleep(after);
            panic!("stage fails while the producer waits");
        })
        .build();
    p.publish(|e| e.set(0)).unwrap();
    p.publish(|e| e.set(1)).unwrap();
    go.send(()).unwrap();
    assert_eq!(p.publish(|e| e.set(2)), Err(PublishError::Halted));
    assert!(p.shutdown().is_err());
}

#[test]
fn napping_producers_on_a_full_ring_honour_deadlines_and_halts() {
    let short = Sleeping::default().with_sleep(Duration::from_micros(20));
    bounded(60, move || {
        full_ring_deadlines(short);
        full_ring_deadlines(Blocking);
        // Halted within the yield phase, and after it.
        for after in [Duration::from_micros(20), Duration::from_millis(5)] {
            full_ring_halt(short, after);
            full_ring_halt(Blocking, after);
        }
    });
}
