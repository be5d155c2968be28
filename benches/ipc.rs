//! Across processes: the shared-memory bus (`ringbus::ipc`) against a Unix
//! domain socket (std, datagrams) and ringbus in one process (threads, the
//! ceiling), for 1P→1C, 1P→3C (fan-out) and 2P→1C, with events of 8, 64
//! and 1,024 bytes. Each process is this binary started again in a role.
//!
//! Throughput: producers publish as fast as they can; each consumer times
//! its first to last event; the row's figure is events per second at the
//! slowest consumer. Latency: one producer publishes an event every 20 µs
//! (1P→1C, spinning) or after a 20 µs sleep (60–80 µs here; the shapes with
//! more processes than cores), stamped with the host's monotonic clock, and the consumers record the
//! one-way delay (p50, p99, p99.9). Implementations are interleaved round
//! by round (A B C A B C ...) and the median round is reported.
//!
//! Waits: 1P→1C has two processes for two cores and busy-spins (ringbus in
//! one process: `BusySpin`); the rows with more processes than cores
//! (1P→3C: 4, 2P→1C: 3) use yielding waits on both ringbus sides; the
//! socket blocks in the kernel.
//!
//! `cargo bench --bench ipc --features ipc [-- --rounds 3 --events 2000000
//! --sizes 8,64,1024 --shapes 1p1c,1p3c,2p1c]`

#[path = "common/stats.rs"]
mod stats;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringbus::ipc::{IpcPollError, Options, Pod, Wait};

const ROLE: &str = "RINGBUS_IPC_BENCH_ROLE";
const CAPACITY: usize = 4096;
const LATENCY_EVENTS: u64 = 20_000;
const PACE: Duration = Duration::from_micros(20);

/// The send stamp: the clock in latency rounds only (reading it costs
/// about as much as a publish).
#[inline(always)]
fn stamp_ns(latency: bool) -> u64 {
    if latency {
        now_ns()
    } else {
        0
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An event of `W` words: word 0 is the send time, word 1 (if any) the
/// producer and index.
trait Ev: Pod + Send + Sync {
    const BYTES: usize;
    fn stamp(&mut self, ts: u64, tag: u64);
    fn ts(&self) -> u64;
}

impl<const W: usize> Ev for [u64; W] {
    const BYTES: usize = W * 8;
    #[inline(always)]
    fn stamp(&mut self, ts: u64, tag: u64) {
        self[0] = ts;
        if W > 1 {
            self[1] = tag;
        }
    }
    #[inline(always)]
    fn ts(&self) -> u64 {
        self[0]
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shape {
    OneOne,
    Fan,
    TwoOne,
}

impl Shape {
    fn producers(self) -> u64 {
        if self == Shape::TwoOne {
            2
        } else {
            1
        }
    }
    fn consumers(self) -> usize {
        if self == Shape::Fan {
            3
        } else {
            1
        }
    }
    fn name(self) -> &'static str {
        match self {
            Shape::OneOne => "1P->1C",
            Shape::Fan => "1P->3C",
            Shape::TwoOne => "2P->1C",
        }
    }
    fn spins(self) -> bool {
        self == Shape::OneOne
    }
}

/// What one consumer measured.
#[derive(Debug, Default, Clone, Copy)]
struct Measured {
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

fn parse_result(line: &str) -> Measured {
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    Measured {
        rate: f[0],
        p50: f[1],
        p99: f[2],
        p999: f[3],
    }
}

/// Counts events until `total` and keeps the delays (latency mode).
struct Recorder {
    total: u64,
    seen: u64,
    first: Option<Instant>,
    last: Instant,
    hist: Histogram<u64>,
    latency: bool,
}

impl Recorder {
    fn new(total: u64, latency: bool) -> Self {
        Self {
            total,
            seen: 0,
            first: None,
            last: Instant::now(),
            hist: Histogram::new(3).unwrap(),
            latency,
        }
    }
    #[inline(always)]
    fn see(&mut self, ts: u64) {
        if self.first.is_none() {
            self.first = Some(Instant::now());
        }
        if self.latency {
            let _ = self.hist.record(now_ns().saturating_sub(ts).max(1));
        }
        self.seen += 1;
        if self.seen == self.total {
            self.last = Instant::now();
        }
    }
    fn done(&self) -> bool {
        self.seen >= self.total
    }
    fn result(&self) -> Measured {
        let secs = self
            .last
            .duration_since(self.first.unwrap())
            .as_secs_f64()
            .max(1e-9);
        let q = |q| self.hist.value_at_quantile(q) as f64;
        Measured {
            rate: (self.seen - 1) as f64 / secs,
            p50: q(0.5),
            p99: q(0.99),
            p999: q(0.999),
        }
    }
    fn print(&self) {
        let m = self.result();
        println!("RESULT {} {} {} {}", m.rate, m.p50, m.p99, m.p999);
    }
}

// ---- Roles (child processes) ----------------------------------------------

struct Role {
    imp: String,
    shape: Shape,
    size: usize,
    events: u64,
    latency: bool,
    id: u64,
    dir: PathBuf,
}

fn role_env(r: &Role) -> String {
    format!(
        "{}|{:?}|{}|{}|{}|{}|{}",
        r.imp,
        r.shape,
        r.size,
        r.events,
        r.latency,
        r.id,
        r.dir.display()
    )
}

fn parse_role(s: &str) -> (String, Role) {
    let p: Vec<&str> = s.split('|').collect();
    let shape = match p[2] {
        "OneOne" => Shape::OneOne,
        "Fan" => Shape::Fan,
        _ => Shape::TwoOne,
    };
    (
        p[0].to_string(),
        Role {
            imp: p[1].to_string(),
            shape,
            size: p[3].parse().unwrap(),
            events: p[4].parse().unwrap(),
            latency: p[5] == "true",
            id: p[6].parse().unwrap(),
            dir: PathBuf::from(p[7]),
        },
    )
}

fn ipc_options(shape: Shape, dir: &Path) -> Options {
    let o = Options::new(CAPACITY).dir(dir).consumers(4);
    if shape == Shape::TwoOne {
        o.multi_producer()
    } else {
        o
    }
}

fn child<E: Ev>(what: &str, r: &Role) {
    let per_producer = r.events / r.shape.producers();
    let total = per_producer * r.shape.producers();
    match (r.imp.as_str(), what) {
        ("ipc", "producer") => {
            let bus = ipc_options(r.shape, &r.dir).open::<E>("bench").unwrap();
            let mut p = bus.producer().unwrap();
            println!("READY");
            wait_for_go(&r.dir);
            for i in 0..per_producer {
                if r.latency {
                    pace(r.shape.spins());
                }
                p.publish(|e| e.stamp(stamp_ns(r.latency), r.id << 40 | i))
                    .unwrap();
            }
        }
        ("ipc", "consumer") => {
            let wait = match (r.shape.spins(), r.latency) {
                (true, _) => Wait::BusySpin,
                (false, false) => Wait::Yielding,
                (false, true) => Wait::Blocking,
            };
            let bus = ipc_options(r.shape, &r.dir)
                .open::<E>("bench")
                .unwrap()
                .with_wait(wait);
            let mut c = bus.consumer(&format!("c{}", r.id)).unwrap();
            println!("READY");
            let mut rec = Recorder::new(total, r.latency);
            while !rec.done() {
                match c.poll_wait(1024, |e, _, _| rec.see(e.ts())) {
                    Ok(_) => {}
                    Err(IpcPollError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            rec.print();
        }
        ("uds", "producer") => {
            let sock = UnixDatagram::unbound().unwrap();
            println!("READY");
            wait_for_go(&r.dir);
            let targets: Vec<PathBuf> = (0..r.shape.consumers())
                .map(|c| r.dir.join(format!("uds{c}")))
                .collect();
            let mut ev = E::zeroed();
            for i in 0..per_producer {
                if r.latency {
                    pace(r.shape.spins());
                }
                ev.stamp(stamp_ns(r.latency), r.id << 40 | i);
                for t in &targets {
                    sock.send_to(bytemuck::bytes_of(&ev), t).unwrap();
                }
            }
        }
        ("uds", "consumer") => {
            let sock = UnixDatagram::bind(r.dir.join(format!("uds{}", r.id))).unwrap();
            println!("READY");
            let mut rec = Recorder::new(total, r.latency);
            let mut ev = E::zeroed();
            while !rec.done() {
                let n = sock.recv(bytemuck::bytes_of_mut(&mut ev)).unwrap();
                assert_eq!(n, E::BYTES);
                rec.see(ev.ts());
            }
            rec.print();
        }
        other => panic!("unknown role {other:?}"),
    }
}

/// Waits between two latency samples: spinning when every process has a
/// core (1P->1C), sleeping otherwise (a spinning producer would take the
/// core the woken consumers need; a sleep lasts 60-80 µs here).
fn pace(spin: bool) {
    if !spin {
        std::thread::sleep(PACE);
        return;
    }
    let until = Instant::now() + PACE;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

fn wait_for_go(dir: &Path) {
    while !dir.join("go").exists() {
        std::thread::sleep(Duration::from_micros(200));
    }
}

// ---- The parent -----------------------------------------------------------

fn run_processes<E: Ev>(
    imp: &str,
    shape: Shape,
    size: usize,
    events: u64,
    latency: bool,
) -> Measured {
    let dir = tempfile::Builder::new()
        .prefix("ringbus-ipc-bench")
        .tempdir_in(if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .unwrap();
    // The creator keeps the bus open until every child is done.
    let _bus = (imp == "ipc").then(|| ipc_options(shape, dir.path()).create::<E>("bench").unwrap());
    let spawn = |what: &str, id: u64| {
        let role = Role {
            imp: imp.into(),
            shape,
            size,
            events,
            latency,
            id,
            dir: dir.path().into(),
        };
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE, format!("{what}|{}", role_env(&role)))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "READY", "{imp} {what} did not start");
        (child, out)
    };
    // Consumers first: they see what is published after they join.
    let consumers: Vec<_> = (0..shape.consumers() as u64)
        .map(|c| spawn("consumer", c))
        .collect();
    let producers: Vec<_> = (0..shape.producers())
        .map(|p| spawn("producer", p))
        .collect();
    std::fs::write(dir.path().join("go"), b"1").unwrap();
    for (mut p, _) in producers {
        assert!(p.wait().unwrap().success());
    }
    let mut results = vec![];
    for (mut c, mut out) in consumers {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(c.wait().unwrap().success());
        results.push(parse_result(&line));
    }
    slowest(&results)
}

fn slowest(results: &[Measured]) -> Measured {
    let mut m = results[0];
    for r in results {
        m.rate = m.rate.min(r.rate);
        m.p50 = m.p50.max(r.p50);
        m.p99 = m.p99.max(r.p99);
        m.p999 = m.p999.max(r.p999);
    }
    m
}

/// ringbus in one process: threads, the same shape and waits.
fn run_in_process<E: Ev>(shape: Shape, events: u64, latency: bool) -> Measured {
    use ringbus::{Blocking, BusySpin, Yielding};
    match (shape.spins(), latency) {
        (true, _) => in_process::<E, _>(shape, events, latency, BusySpin),
        (false, false) => in_process::<E, _>(shape, events, latency, Yielding::default()),
        (false, true) => in_process::<E, _>(shape, events, latency, Blocking),
    }
}

fn in_process<E: Ev, W: ringbus::WaitStrategy>(
    shape: Shape,
    events: u64,
    latency: bool,
    wait: W,
) -> Measured {
    use std::sync::{Arc, Mutex};
    let per_producer = events / shape.producers();
    let total = per_producer * shape.producers();
    let results = Arc::new(Mutex::new(vec![]));
    let stage = |results: Arc<Mutex<Vec<Measured>>>| {
        let mut rec = Recorder::new(total, latency);
        move |e: &E, _seq: ringbus::Sequence, _eob: bool| {
            rec.see(e.ts());
            if rec.done() {
                results.lock().unwrap().push(rec.result());
            }
        }
    };
    let publish = move |p: &mut dyn FnMut(u64)| {
        for i in 0..per_producer {
            if latency {
                pace(shape.spins());
            }
            p(i);
        }
    };
    macro_rules! stages {
        ($builder:expr) => {{
            let mut b = $builder.handle_events_with(stage(results.clone()));
            for _ in 1..shape.consumers() {
                b = b.handle_events_with(stage(results.clone()));
            }
            b.build()
        }};
    }
    if shape == Shape::TwoOne {
        let producer = stages!(ringbus::multi_producer(CAPACITY, E::zeroed, wait));
        let threads: Vec<_> = (0..2u64)
            .map(|id| {
                let p = producer.clone();
                std::thread::spawn(move || {
                    publish(&mut |i| {
                        p.publish(|e: &mut E| e.stamp(stamp_ns(latency), id << 40 | i))
                            .unwrap();
                    })
                })
            })
            .collect();
        drop(producer);
        for t in threads {
            t.join().unwrap();
        }
    } else {
        let mut p = stages!(ringbus::single_producer(CAPACITY, E::zeroed, wait));
        publish(&mut |i| {
            p.publish(|e: &mut E| e.stamp(stamp_ns(latency), i))
                .unwrap();
        });
        drop(p);
    }
    let r = results.lock().unwrap();
    slowest(&r)
}

fn measure<E: Ev>(imp: &str, shape: Shape, size: usize, events: u64, latency: bool) -> Measured {
    match imp {
        "in-process" => run_in_process::<E>(shape, events, latency),
        "uds" => run_processes::<E>(imp, shape, size, (events / 10).max(1000), latency),
        _ => run_processes::<E>(imp, shape, size, events, latency),
    }
}

fn by_size(imp: &str, shape: Shape, size: usize, events: u64, latency: bool) -> Measured {
    match size {
        8 => measure::<[u64; 1]>(imp, shape, size, events, latency),
        64 => measure::<[u64; 8]>(imp, shape, size, events, latency),
        _ => measure::<[u64; 128]>(imp, shape, size, events, latency),
    }
}

fn main() -> Result<(), lexopt::Error> {
    if let Ok(role) = std::env::var(ROLE) {
        let (what, r) = parse_role(&role);
        match r.size {
            8 => child::<[u64; 1]>(&what, &r),
            64 => child::<[u64; 8]>(&what, &r),
            _ => child::<[u64; 128]>(&what, &r),
        }
        return Ok(());
    }
    use lexopt::prelude::*;
    let (mut rounds, mut events) = (3usize, 2_000_000u64);
    let mut sizes = vec![8usize, 64, 1024];
    let mut shapes = vec![Shape::OneOne, Shape::Fan, Shape::TwoOne];
    let mut latency_events = LATENCY_EVENTS;
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        match arg {
            Long("rounds") => rounds = args.value()?.parse()?,
            Long("events") => events = args.value()?.parse()?,
            Long("latency-events") => latency_events = args.value()?.parse()?,
            Long("sizes") => {
                sizes = args
                    .value()?
                    .string()?
                    .split(',')
                    .map(|s| s.parse().unwrap())
                    .collect()
            }
            Long("shapes") => {
                shapes = args
                    .value()?
                    .string()?
                    .split(',')
                    .map(|s| match s {
                        "1p1c" => Shape::OneOne,
                        "1p3c" => Shape::Fan,
                        "2p1c" => Shape::TwoOne,
                        _ => panic!("shapes: 1p1c, 1p3c, 2p1c"),
                    })
                    .collect()
            }
            Long("bench") => {}
            _ => return Err(arg.unexpected()),
        }
    }
    let imps = ["ipc", "in-process", "uds"];
    println!(
        "processes over shared memory: {events} events per throughput round (the socket {}), \
         {latency_events} paced events ({PACE:?} apart) per latency round, ring {CAPACITY}, \
         {rounds} interleaved rounds, medians",
        (events / 10).max(1000)
    );
    println!(
        "{:<8} {:>6} {:<11} {:>12} {:>9} {:>9} {:>9} {:>16}",
        "shape", "bytes", "impl", "M events/s", "p50 ns", "p99 ns", "p99.9 ns", "ipc ÷ this"
    );
    for &shape in &shapes {
        for &size in &sizes {
            let mut rates = vec![vec![]; imps.len()];
            let mut lats: Vec<Vec<Measured>> = vec![vec![]; imps.len()];
            for _ in 0..rounds {
                for (i, imp) in imps.iter().enumerate() {
                    rates[i].push(by_size(imp, shape, size, events, false).rate);
                    lats[i].push(by_size(imp, shape, size, latency_events, true));
                }
            }
            for (i, imp) in imps.iter().enumerate() {
                let med = |f: fn(&Measured) -> f64| {
                    stats::median(&lats[i].iter().map(f).collect::<Vec<_>>())
                };
                let ratios: Vec<f64> = rates[0].iter().zip(&rates[i]).map(|(a, b)| a / b).collect();
                println!(
                    "{:<8} {:>6} {:<11} {:>12.2} {:>9.0} {:>9.0} {:>9.0} {:>16}",
                    shape.name(),
                    size,
                    imp,
                    stats::median(&rates[i]) / 1e6,
                    med(|m| m.p50),
                    med(|m| m.p99),
                    med(|m| m.p999),
                    if i == 0 {
                        "-".to_string()
                    } else {
                        stats::ratio_cell(&ratios)
                    },
                );
            }
        }
    }
    Ok(())
}
