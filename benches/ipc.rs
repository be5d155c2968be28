//! Across processes: the shared-memory bus (`ringbus::ipc`) against a Unix
//! domain socket (std, datagrams), ringbus in one process (threads, the
//! ceiling) and any peer built under `peers/` (`--peer iceoryx2=BINARY`),
//! for 1P→1C, 1P→3C (fan-out) and 2P→1C, with events of 8, 64 and 1,024
//! bytes. Each process is this binary (or the peer's) started again in a
//! role (`common/ipc_roles.rs`).
//!
//! Throughput: producers publish as fast as they can; each consumer times
//! its first to last event; the row's figure is events per second at the
//! slowest consumer. Latency: one producer publishes an event every 20 µs
//! (1P→1C, spinning) or after a 20 µs sleep (60–80 µs here; the shapes
//! with more processes than cores), stamped with the host's monotonic
//! clock, and the consumers record the one-way delay (p50, p99, p99.9).
//! Implementations are interleaved round by round (A B C A B C ...); the
//! median round is reported, and each ratio is the median of the rounds'
//! ratios with its spread.
//!
//! Waits, the same for every polling implementation: 1P→1C has two
//! processes for two cores and busy-spins (ringbus: `BusySpin`); the rows
//! with more processes than cores (1P→3C: 4, 2P→1C: 3) poll and yield
//! (ringbus: `Yielding`). `ipc-blocking` is the shared-memory bus with
//! `Wait::Blocking` consumers (a futex), on every row; the socket blocks in
//! the kernel.
//!
//! `cargo bench --bench ipc --features ipc [-- --rounds 3 --events 2000000
//! --sizes 8,64,1024 --shapes 1p1c,1p3c,2p1c --impls ipc,in-process
//! --peer NAME=BINARY]` (`--impls` chooses which of ringbus's own rows
//! run, always in the order ipc, ipc-blocking, in-process, uds,
//! ipc-threads, before any peer; `ipc-threads` is the bus with its
//! producer and consumer as threads of one process, 1P→1C only, and runs
//! only when named; the first row is the ratios' base);
//! `ci/bench-peers.sh` builds the peers and runs it with them.

#[path = "common/ipc_roles.rs"]
mod ipc_roles;
#[path = "common/stats.rs"]
mod stats;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipc_roles::*;
use ringbus::ipc::{IpcPollError, Options, Wait};

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
        ("ipc" | "ipc-blocking", "producer") => {
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
        ("ipc" | "ipc-blocking", "consumer") => {
            let wait = if r.imp == "ipc-blocking" {
                Wait::Blocking
            } else if r.shape.spins() {
                Wait::BusySpin
            } else {
                Wait::Yielding
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

// ---- The parent -----------------------------------------------------------

fn run_processes<E: Ev>(
    program: &Path,
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
    let _bus = imp
        .starts_with("ipc")
        .then(|| ipc_options(shape, dir.path()).create::<E>("bench").unwrap());
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
        let mut child = Command::new(program)
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

/// The shared-memory bus with its producer and consumer as threads of one
/// process (1P->1C only): what the bus costs apart from being processes.
fn run_ipc_threads<E: Ev>(shape: Shape, events: u64, latency: bool) -> Measured {
    assert_eq!(shape, Shape::OneOne, "ipc-threads: 1p1c only");
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let bus = ipc_options(shape, dir.path()).create::<E>("bench").unwrap();
    let mut c = bus
        .clone()
        .with_wait(Wait::BusySpin)
        .consumer("c0")
        .unwrap();
    let consumer = std::thread::spawn(move || {
        let mut rec = Recorder::new(events, latency);
        while !rec.done() {
            c.poll_wait(1024, |e, _, _| rec.see(e.ts())).unwrap();
        }
        rec.result()
    });
    let mut p = bus.producer().unwrap();
    for i in 0..events {
        if latency {
            pace(true);
        }
        p.publish(|e| e.stamp(stamp_ns(latency), i)).unwrap();
    }
    consumer.join().unwrap()
}

/// ringbus in one process: threads, the same shape and waits.
fn run_in_process<E: Ev>(shape: Shape, events: u64, latency: bool) -> Measured {
    use ringbus::{BusySpin, Yielding};
    if shape.spins() {
        in_process::<E, _>(shape, events, latency, BusySpin)
    } else {
        in_process::<E, _>(shape, events, latency, Yielding::default())
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

/// An implementation measured: ringbus's own (this binary's roles, or
/// threads in this process), or a peer's binary that runs the roles of
/// `common/ipc_roles.rs` (`--peer NAME=BINARY`).
struct Imp {
    name: String,
    program: PathBuf,
}

fn measure<E: Ev>(imp: &Imp, shape: Shape, size: usize, events: u64, latency: bool) -> Measured {
    let name = imp.name.as_str();
    match name {
        "in-process" => run_in_process::<E>(shape, events, latency),
        "ipc-threads" => run_ipc_threads::<E>(shape, events, latency),
        "uds" => run_processes::<E>(
            &imp.program,
            name,
            shape,
            size,
            (events / 10).max(1000),
            latency,
        ),
        _ => run_processes::<E>(&imp.program, name, shape, size, events, latency),
    }
}

fn by_size(imp: &Imp, shape: Shape, size: usize, events: u64, latency: bool) -> Measured {
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
    let me = std::env::current_exe().unwrap();
    // `ipc-threads` (1P->1C only) runs when `--impls` names it.
    let known = ["ipc", "ipc-blocking", "in-process", "uds", "ipc-threads"];
    let own = |names: &[&str]| -> Vec<Imp> {
        names
            .iter()
            .map(|name| Imp {
                name: name.to_string(),
                program: me.clone(),
            })
            .collect()
    };
    let mut imps = own(&known[..4]);
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
            Long("peer") => {
                let spec = args.value()?.string()?;
                let (name, program) = spec
                    .split_once('=')
                    .expect("--peer NAME=BINARY (a peer built from peers/)");
                let program = PathBuf::from(program);
                assert!(
                    program.is_file(),
                    "--peer {name}: no binary at {} (build it first: see peers/README.md)",
                    program.display()
                );
                imps.push(Imp {
                    name: name.into(),
                    program,
                });
            }
            Long("impls") => {
                let keep: Vec<String> = args
                    .value()?
                    .string()?
                    .split(',')
                    .map(String::from)
                    .collect();
                imps.retain(|imp| !known.contains(&imp.name.as_str()));
                let chosen: Vec<&str> = known
                    .iter()
                    .copied()
                    .filter(|k| keep.iter().any(|n| n == k))
                    .collect();
                let mut mine = own(&chosen);
                mine.append(&mut imps);
                imps = mine;
            }
            Long("bench") => {}
            _ => return Err(arg.unexpected()),
        }
    }
    println!(
        "processes over shared memory: {events} events per throughput round (the socket {}), \
         {latency_events} paced events ({PACE:?} apart) per latency round, ring {CAPACITY}, \
         {rounds} interleaved rounds, medians",
        (events / 10).max(1000)
    );
    println!(
        "{:<8} {:>6} {:<11} {:>12} {:>9} {:>9} {:>9} {:>18} {:>18}",
        "shape",
        "bytes",
        "impl",
        "M events/s",
        "p50 ns",
        "p99 ns",
        "p99.9 ns",
        "rate: ipc ÷ this",
        "p50: ipc ÷ this"
    );
    for &shape in &shapes {
        for &size in &sizes {
            let mut rates = vec![vec![]; imps.len()];
            let mut lats: Vec<Vec<Measured>> = vec![vec![]; imps.len()];
            for _ in 0..rounds {
                for (i, imp) in imps.iter().enumerate() {
                    if imp.name == "ipc-threads" && shape != Shape::OneOne {
                        // 1P->1C only: its row says NaN elsewhere.
                        rates[i].push(f64::NAN);
                        lats[i].push(Measured::default());
                        continue;
                    }
                    rates[i].push(by_size(imp, shape, size, events, false).rate);
                    lats[i].push(by_size(imp, shape, size, latency_events, true));
                }
            }
            for (i, imp) in imps.iter().enumerate() {
                let med = |f: fn(&Measured) -> f64| {
                    stats::median(&lats[i].iter().map(f).collect::<Vec<_>>())
                };
                let ratios: Vec<f64> = rates[0].iter().zip(&rates[i]).map(|(a, b)| a / b).collect();
                let p50s: Vec<f64> = lats[0]
                    .iter()
                    .zip(&lats[i])
                    .map(|(a, b)| a.p50 / b.p50)
                    .collect();
                let cell = |r: &[f64]| {
                    if i == 0 {
                        "-".to_string()
                    } else {
                        stats::ratio_cell(r)
                    }
                };
                println!(
                    "{:<8} {:>6} {:<11} {:>12.2} {:>9.0} {:>9.0} {:>9.0} {:>18} {:>18}",
                    shape.name(),
                    size,
                    imp.name,
                    stats::median(&rates[i]) / 1e6,
                    med(|m| m.p50),
                    med(|m| m.p99),
                    med(|m| m.p999),
                    cell(&ratios),
                    cell(&p50s),
                );
            }
        }
    }
    Ok(())
}
