//! What every process of the cross-process bench shares: its role (taken
//! from the environment), the events, the recorder and the pacing. The
//! bench (`benches/ipc.rs`) and each peer measured beside it (a crate of
//! its own under `peers/`, run with `--peer NAME=BINARY`) take this file in
//! with `#[path = ".../common/ipc_roles.rs"] mod ipc_roles;`, so a peer's
//! processes are started, paced and timed exactly as ringbus's are.
#![allow(dead_code)] // the bench and the peers each use a part

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytemuck::Pod;
use hdrhistogram::Histogram;

pub const ROLE: &str = "RINGBUS_IPC_BENCH_ROLE";
pub const CAPACITY: usize = 4096;
pub const LATENCY_EVENTS: u64 = 20_000;
pub const PACE: Duration = Duration::from_micros(20);

/// The send stamp: the clock in latency rounds only (reading it costs
/// about as much as a publish).
#[inline(always)]
pub fn stamp_ns(latency: bool) -> u64 {
    if latency {
        now_ns()
    } else {
        0
    }
}

pub fn now_ns() -> u64 {
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
pub trait Ev: Pod + Send + Sync {
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
pub enum Shape {
    OneOne,
    Fan,
    TwoOne,
}

impl Shape {
    pub fn producers(self) -> u64 {
        if self == Shape::TwoOne {
            2
        } else {
            1
        }
    }
    pub fn consumers(self) -> usize {
        if self == Shape::Fan {
            3
        } else {
            1
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Shape::OneOne => "1P->1C",
            Shape::Fan => "1P->3C",
            Shape::TwoOne => "2P->1C",
        }
    }
    pub fn spins(self) -> bool {
        self == Shape::OneOne
    }
}

/// What one consumer measured.
#[derive(Debug, Default, Clone, Copy)]
pub struct Measured {
    pub rate: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

/// Reads a child's `RESULT rate p50 p99 p99.9` line.
pub fn parse_result(line: &str) -> Measured {
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
pub struct Recorder {
    total: u64,
    seen: u64,
    first: Option<Instant>,
    last: Instant,
    hist: Histogram<u64>,
    latency: bool,
}

impl Recorder {
    pub fn new(total: u64, latency: bool) -> Self {
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
    pub fn see(&mut self, ts: u64) {
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
    /// Stops counting short of the total (a transport that lost events):
    /// the rate is over what was seen. Returns how many are missing.
    pub fn give_up(&mut self) -> u64 {
        self.last = Instant::now();
        self.total - self.seen
    }
    pub fn done(&self) -> bool {
        self.seen >= self.total
    }
    pub fn result(&self) -> Measured {
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
    pub fn print(&self) {
        let m = self.result();
        println!("RESULT {} {} {} {}", m.rate, m.p50, m.p99, m.p999);
    }
}

// ---- Roles (child processes) ----------------------------------------------

/// What a child process is to do.
pub struct Role {
    pub imp: String,
    pub shape: Shape,
    pub size: usize,
    pub events: u64,
    pub latency: bool,
    pub id: u64,
    pub dir: PathBuf,
}

pub fn role_env(r: &Role) -> String {
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

pub fn parse_role(s: &str) -> (String, Role) {
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

/// Waits between two latency samples: spinning when every process has a
/// core (1P->1C), sleeping otherwise (a spinning producer would take the
/// core the woken consumers need; a sleep lasts 60-80 µs here).
pub fn pace(spin: bool) {
    if !spin {
        std::thread::sleep(PACE);
        return;
    }
    let until = Instant::now() + PACE;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Waits until the parent says go (every process has started).
pub fn wait_for_go(dir: &Path) {
    while !dir.join("go").exists() {
        std::thread::sleep(Duration::from_micros(200));
    }
}
