//! What every implementation's runs share: the event, the run configuration,
//! the measurement, pinning, and the result check.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The event every implementation carries: a payload and a timestamp.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ev {
    pub value: u64,
    pub stamp: u64,
}

/// The scenarios, in the LMAX performance-test shapes. One name everywhere:
/// [`Scenario::id`] is what `--scenarios` accepts, what the table prints and
/// what report.json holds (`Serialize` and `Display` both write it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Spsc,
    Batch64,
    Mp2,
    Mp3,
    Pipeline,
    Multicast,
    Diamond,
    /// The pipeline with its three stages on one thread (ringbus's
    /// `on_same_thread`); the `disruptor` crate, which cannot share a
    /// thread, runs the same graph on three.
    PipelineOneThread,
    /// The diamond with its three stages on one thread, as above.
    DiamondOneThread,
    /// Two publishers, three independent subscribers each seeing every
    /// event (an event bus's usual shape).
    FanOut,
    Latency,
    PingPong,
}

impl Scenario {
    pub const ALL: [Scenario; 12] = [
        Scenario::Spsc,
        Scenario::Batch64,
        Scenario::Mp2,
        Scenario::Mp3,
        Scenario::Pipeline,
        Scenario::Multicast,
        Scenario::Diamond,
        Scenario::PipelineOneThread,
        Scenario::DiamondOneThread,
        Scenario::FanOut,
        Scenario::Latency,
        Scenario::PingPong,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Scenario::Spsc => "spsc",
            Scenario::Batch64 => "batch64",
            Scenario::Mp2 => "mp2",
            Scenario::Mp3 => "mp3",
            Scenario::Pipeline => "pipeline",
            Scenario::Multicast => "multicast",
            Scenario::Diamond => "diamond",
            Scenario::PipelineOneThread => "pipeline-1t",
            Scenario::DiamondOneThread => "diamond-1t",
            Scenario::FanOut => "fanout",
            Scenario::Latency => "latency",
            Scenario::PingPong => "pingpong",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Scenario::Spsc => "1P→1C single publish",
            Scenario::Batch64 => "1P→1C batches of 64",
            Scenario::Mp2 => "2P→1C",
            Scenario::Mp3 => "3P→1C",
            Scenario::Pipeline => "1P→3-stage pipeline",
            Scenario::Multicast => "1P→3C multicast",
            Scenario::Diamond => "diamond (A,B → C)",
            Scenario::PipelineOneThread => "pipeline, stages on 1 thread",
            Scenario::DiamondOneThread => "diamond, stages on 1 thread",
            Scenario::FanOut => "2P→3C fan-out",
            Scenario::Latency => "idle one-way latency",
            Scenario::PingPong => "ping-pong round trip",
        }
    }

    /// Threads the scenario runs, producers included.
    pub fn threads(self) -> usize {
        match self {
            Scenario::Spsc | Scenario::Batch64 | Scenario::Latency | Scenario::PingPong => 2,
            Scenario::Mp2 => 3,
            Scenario::Mp3 | Scenario::Pipeline | Scenario::Multicast => 4,
            Scenario::Diamond => 4,
            Scenario::FanOut => 5,
            // ringbus's threads: the peer runs its graph on 4 regardless.
            Scenario::PipelineOneThread | Scenario::DiamondOneThread => 2,
        }
    }

    /// Latency scenarios report percentiles; the others events per second.
    pub fn is_latency(self) -> bool {
        matches!(self, Scenario::Latency | Scenario::PingPong)
    }

    /// Rows whose threads are pinned when there are cores for them: the
    /// two-thread rows, ringbus's side of the shared-thread graphs.
    pub fn pins(self) -> bool {
        matches!(
            self,
            Scenario::Spsc
                | Scenario::Batch64
                | Scenario::Latency
                | Scenario::PingPong
                | Scenario::PipelineOneThread
                | Scenario::DiamondOneThread
        )
    }

    /// Graphs whose ringbus stages share one thread.
    pub fn one_thread(self) -> bool {
        matches!(
            self,
            Scenario::PipelineOneThread | Scenario::DiamondOneThread
        )
    }
}

/// The implementations compared. As for scenarios, [`Impl::id`] is the one
/// name of `--impls`, the table and report.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Ringbus,
    Disruptor,
    Crossbeam,
    StdMpsc,
    /// The design cut to its loads and stores, no library (`bare.rs`): a
    /// yardstick for the library's own cost.
    Bare,
    /// ringbus's own single-stage SPSC run (pinned, in the same mode), beside the
    /// graphs whose stages share one thread: their ratio to it is how much
    /// of the single-stage rate a whole graph on one thread keeps.
    RingbusOneStage,
    /// ringbus with `Blocking` on the rows with more threads than cores,
    /// beside `ringbus` (which naps there): ringbus ÷ it is how much
    /// throughput parking costs against napping.
    RingbusBlocking,
    /// `tokio::sync::broadcast`, on the fan-out row only (the broadcast
    /// peer a tokio user would pick): receivers on threads of their own
    /// (`blocking_recv`), producers holding back while the slowest
    /// receiver is a ring behind (a broadcast channel drops the oldest
    /// values instead of waiting).
    TokioBroadcast,
}

impl Impl {
    pub const ALL: [Impl; 8] = [
        Impl::Ringbus,
        Impl::Disruptor,
        Impl::Crossbeam,
        Impl::StdMpsc,
        Impl::Bare,
        Impl::RingbusOneStage,
        Impl::RingbusBlocking,
        Impl::TokioBroadcast,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Impl::Ringbus => "ringbus",
            Impl::Disruptor => "disruptor",
            Impl::Crossbeam => "crossbeam-channel",
            Impl::StdMpsc => "std-mpsc",
            Impl::Bare => "bare-ring",
            Impl::RingbusOneStage => "ringbus-1-stage",
            Impl::RingbusBlocking => "ringbus-blocking",
            Impl::TokioBroadcast => "tokio-broadcast",
        }
    }

    /// `std::sync::mpsc` is only compared on SPSC, the bare ring on the
    /// throughput rows.
    pub fn runs(self, sc: Scenario) -> bool {
        match self {
            Impl::StdMpsc => sc == Scenario::Spsc,
            Impl::Bare => !sc.is_latency() && !sc.one_thread() && sc != Scenario::FanOut,
            // A channel hands each value to one receiver: no fan-out.
            Impl::Crossbeam => !sc.one_thread() && sc != Scenario::FanOut,
            Impl::TokioBroadcast => sc == Scenario::FanOut,
            Impl::RingbusOneStage => sc.one_thread(),
            Impl::RingbusBlocking => sc.threads() > 2 && !sc.one_thread(),
            _ => true,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.id())
    }
}

impl fmt::Display for Impl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.id())
    }
}

impl serde::Serialize for Scenario {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

impl serde::Serialize for Impl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Events per throughput run.
    pub events: u64,
    /// Events (or round trips) per latency run.
    pub latency_events: u64,
    /// Gap between two events of the idle-latency run.
    pub interval: Duration,
    pub capacity: usize,
    /// The two cores to pin a two-thread scenario to, if pinning.
    pub cores: Option<(usize, usize)>,
    /// ringbus's wait strategy where threads outnumber cores.
    pub oversubscribed: crate::rb::Oversubscribed,
    /// The wait family both libraries run every row in (`--family`).
    pub family: Family,
}

/// Which way both libraries wait, on every row of one run (`--family`):
/// like for like, or each library's best mode per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Each library's best mode per row, as measured on 2 cores: busy spin
    /// on the two-thread rows (single publish, batches, latency), 1 µs naps
    /// on the rows of 3–4 threads (and, for ringbus, on the rows whose
    /// stages share a thread).
    Best,
    /// Plain busy spin everywhere (both crates' `BusySpin`).
    Spin,
    /// Busy spin with a spin-loop hint everywhere (`BusySpinWithHint`,
    /// the disruptor crate's `BusySpinWithSpinLoopHint`).
    Hint,
    /// 1 µs naps everywhere (`Sleeping::new(0, 0, 1 µs)`, the disruptor
    /// crate's `Sleep::new(1 µs)`).
    Sleep,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Best, Family::Spin, Family::Hint, Family::Sleep];

    pub fn id(self) -> &'static str {
        match self {
            Family::Best => "best",
            Family::Spin => "spin",
            Family::Hint => "hint",
            Family::Sleep => "sleep",
        }
    }
}

impl Config {
    /// Pinning applies only where every thread can have a core of its own.
    pub fn pin_for(&self, sc: Scenario, machine_cores: usize) -> Option<(usize, usize)> {
        if sc.threads() <= machine_cores {
            self.cores
        } else {
            None
        }
    }
}

/// What one run measured.
#[derive(Debug)]
pub struct Sample {
    pub events: u64,
    pub elapsed: Duration,
    /// Nanoseconds: one-way latency or round-trip time.
    pub latency: Option<Histogram<u64>>,
    /// The waiting mode the implementation used in this run.
    pub mode: &'static str,
}

impl Sample {
    /// A throughput run's sample (no latency histogram).
    pub fn throughput(events: u64, elapsed: Duration, mode: &'static str) -> Self {
        Self {
            events,
            elapsed,
            latency: None,
            mode,
        }
    }

    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// Pins the calling thread if asked.
pub fn pin(core: Option<usize>) {
    if let Some(core) = core {
        core_affinity::set_for_current(core_affinity::CoreId { id: core });
    }
}

/// Sum of `0..n`.
pub fn sum_to(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// A consumer's result slot: the stage stores its sum when it sees the last
/// sequence, the run checks it after the drain.
#[derive(Debug, Default, Clone)]
pub struct Check(Arc<AtomicU64>);

impl Check {
    pub fn new() -> Self {
        Self(Arc::new(AtomicU64::new(u64::MAX)))
    }

    pub fn store(&self, sum: u64) {
        self.0.store(sum, Ordering::Release);
    }

    /// Fails the whole comparison loudly on a wrong answer.
    pub fn expect(&self, what: &str, expected: u64) {
        let got = self.0.load(Ordering::Acquire);
        assert_eq!(
            got, expected,
            "WRONG RESULT: {what} summed {got}, expected {expected}: a fast wrong answer"
        );
    }
}

/// Times `producer` on a thread pinned to `core`; returns its duration. The
/// closure must return only once every consumer finished (drain included).
pub fn timed_on(core: Option<usize>, producer: impl FnOnce() + Send + 'static) -> Duration {
    thread::spawn(move || {
        pin(core);
        let start = Instant::now();
        producer();
        start.elapsed()
    })
    .join()
    .expect("producer thread panicked")
}

/// Nanoseconds since `base`: the timestamp of latency events.
#[inline]
pub fn now_ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// Busy-waits until `deadline` (the producer of the idle-latency run).
#[inline]
pub fn spin_until(deadline: Instant) {
    while Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}
