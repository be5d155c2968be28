//! Three processes over one shared-memory bus: a gateway publishes orders, a
//! matcher polls and handles them, and an audit writer (a stage: a thread
//! with a handler) records each one after the matcher has. A quarter of the way through, the demo SIGKILLs the matcher and starts a
//! new one, which takes the dead one's place. Then it checks that nothing was
//! lost.
//!
//! ```text
//! gateway ──> [ /dev/shm/ringbus.orders-PID ] ──> matcher ──> audit
//!                                                 SIGKILL, restarted: resumes at its last commit
//! ```
//!
//! `cargo run --release --example ipc_orders --features ipc`
//!
//! With no arguments this process supervises: it creates the bus and starts
//! this binary again as `gateway BUS`, `matcher BUS` and `audit BUS`.

use std::error::Error;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use ringbus::ipc::{self, IpcBus, IpcPollError, Options, Pod, Wait, Zeroable};
use ringbus::Sequence;

type Res<T = ()> = Result<T, Box<dyn Error>>;

const ORDERS: u64 = 200_000;

/// Plain data (`Pod`): it is written and read in place in the shared file.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Order {
    id: u64,
    price: u64,
    qty: u32,
    side: u32, // 0 buy, 1 sell
}

/// The creator's options, which every process opens the bus with. A dead
/// consumer keeps its place (and holds the gateway back) for 5 s, which is
/// time enough to restart it.
fn options() -> Options {
    let schema = 1; // Change it whenever `Order` changes.
    Options::new(1024)
        .schema(schema)
        .reclaim_after(Duration::from_secs(5))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [] => supervise(),
        [role, bus] => match (role.as_str(), options().open::<Order>(bus)) {
            (_, Err(e)) => Err(e.into()),
            ("gateway", Ok(bus)) => gateway(&bus),
            ("matcher", Ok(bus)) => consume(&bus, "matcher", &[]),
            ("audit", Ok(bus)) => audit(&bus),
            _ => Err(format!("unknown role {role}").into()),
        },
        _ => Err("usage: ipc_orders [gateway|matcher|audit BUS]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipc_orders: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Publishes orders 0..ORDERS as they "arrive": 1,000 a millisecond.
fn gateway(bus: &IpcBus<Order>) -> Res {
    let mut producer = bus.producer()?;
    for id in 0..ORDERS {
        let (price, qty, side) = (9_900 + id % 200, 1 + (id % 50) as u32, (id % 2) as u32);
        producer.publish(|o| {
            *o = Order {
                id,
                price,
                qty,
                side,
            }
        })?;
        if id % 1_000 == 999 {
            sleep(Duration::from_millis(1));
        }
    }
    println!(
        "gateway (pid {}): published {ORDERS} orders",
        std::process::id()
    );
    Ok(())
}

/// Joins as consumer `name` (behind `after`) and checks that ids come in
/// order with no gap and no repeat, until the bus is closed.
fn consume(bus: &IpcBus<Order>, name: &str, after: &[&str]) -> Res {
    let mut consumer = bus.consumer_after(name, after)?;
    // The gateway is this bus's only producer and started it: order k is
    // sequence k. A resumed consumer starts at the dead one's last commit,
    // so the orders it handled after that commit come again (at least once).
    let first = consumer.next_sequence();
    let me = format!("{name} (pid {})", std::process::id());
    match consumer.resumed_from() {
        Some(dead) => println!("{me}: resumed dead pid {dead}'s place at order {first}"),
        // It joined before the gateway started, so it must see order 0.
        None if first == 0 => println!("{me}: joined at order 0"),
        None => return Err(format!("{me} joined late, at order {first}").into()),
    }
    let (mut next, mut buys, mut notional) = (first, 0u64, 0u64);
    loop {
        let mut bad = None;
        let polled = consumer.poll_wait(256, |o, _seq, _end_of_batch| {
            // A real matcher would match here, an audit writer would write.
            bad = bad.or((o.id != next).then_some((next, o.id)));
            next = o.id + 1;
            buys += u64::from(o.side == 0);
            notional += o.price * u64::from(o.qty);
        });
        if let Some((want, got)) = bad {
            return Err(format!("{me}: expected order {want}, got {got}").into());
        }
        match polled {
            Ok(_) => {}
            Err(IpcPollError::Closed) => break, // closed, and every order handled
            Err(e) => return Err(e.into()),
        }
    }
    if next != ORDERS {
        return Err(format!("{me}: the bus closed after order {next} of {ORDERS}").into());
    }
    println!(
        "{me}: ids {first}..{next} in order, no gap, no repeat ({buys} buys, notional {notional})"
    );
    Ok(())
}

/// The audit writer as a stage (`IpcBus::stage`): a thread of this process
/// that is handed each order after the matcher has handled it, until the
/// bus closes. It joined before the gateway started, so the first order it
/// sees is order 0; an order out of place fails the stage (its report says
/// which), and a restarted audit would resume at that order.
fn audit(bus: &IpcBus<Order>) -> Res {
    let me = format!("audit (pid {})", std::process::id());
    let mut next = 0u64;
    let stage = bus
        .clone()
        .with_wait(Wait::Blocking)
        .stage("audit")
        .after(&["matcher"])
        .try_spawn(move |o: &Order, _seq: Sequence, _end_of_batch: bool| {
            if o.id != next {
                return Err(format!("expected order {next}, got {}", o.id));
            }
            next += 1; // A real audit writer would write the order here.
            Ok(())
        })?;
    println!("{me}: a stage after the matcher, from order 0");
    let report = stage.join()?;
    if let Some(failure) = report.failure {
        return Err(format!("{me}: {failure}").into());
    }
    if report.handled != ORDERS {
        return Err(format!("{me}: the bus closed after {} of {ORDERS}", report.handled).into());
    }
    println!("{me}: ids 0..{ORDERS} in order, no gap, no repeat");
    Ok(())
}

fn supervise() -> Res {
    let name = format!("orders-{}", std::process::id());
    let bus = options().create::<Order>(&name)?;
    println!(
        "supervisor: created {} ({} slots)",
        bus.path().display(),
        bus.capacity()
    );
    let result = demo(&bus, &name);
    result.and(ipc::remove(&name).map_err(Into::into))
}

fn demo(bus: &IpcBus<Order>, name: &str) -> Res {
    // Consumers join first: a consumer sees what is published after it joins.
    let matcher = Proc::start("matcher", name)?;
    let audit = Proc::start("audit", name)?;
    wait_until("both consumers to join", || {
        let joined = bus.metrics().consumers;
        ["matcher", "audit"].map(|n| joined.iter().any(|c| c.name == n)) == [true; 2]
    })?;
    let gateway = Proc::start("gateway", name)?;

    // Mid-stream, SIGKILL the matcher. Its entry stays, and the gateway and
    // the audit wait where it stopped until a new matcher takes its place.
    wait_until("the matcher to pass a quarter", || {
        matcher_next(bus) >= ORDERS / 4
    })?;
    let dead = matcher.1.id();
    matcher.end(true)?;
    let at = matcher_next(bus);
    println!("supervisor: SIGKILLed the matcher (pid {dead}) after it committed orders 0..{at}");
    let matcher = Proc::start("matcher", name)?;

    gateway.end(false)?;
    bus.close(); // The consumers end once they have passed the last order.
    let audited = span(&audit.end(false)?);
    let matched = span(&matcher.end(false)?);
    if audited != Some((0, ORDERS)) || matched != Some((at, ORDERS)) {
        return Err(format!("audit saw {audited:?}, new matcher {matched:?}").into());
    }
    println!("supervisor: ok. The audit saw orders 0..{ORDERS} exactly once, in order;");
    println!("            the matcher's two lives covered 0..{at} and {at}..{ORDERS}");
    Ok(())
}

/// The matcher's committed sequence: the next order it will read.
fn matcher_next(bus: &IpcBus<Order>) -> u64 {
    let consumers = bus.metrics().consumers;
    consumers
        .iter()
        .find(|c| c.name == "matcher")
        .map_or(0, |c| c.next)
}

/// The `A..B` after "ids " in a consumer's summary line.
fn span(out: &str) -> Option<(u64, u64)> {
    let (a, rest) = out.split_once("ids ")?.1.split_once("..")?;
    Some((a.parse().ok()?, rest.split(' ').next()?.parse().ok()?))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Res {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > Duration::from_secs(20) {
            return Err(format!("timed out waiting for {what}").into());
        }
        sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// This binary started again in a role; killed if dropped while it runs
/// (the demo stopped on an error).
struct Proc(&'static str, Child);

impl Proc {
    fn start(role: &'static str, bus: &str) -> Res<Proc> {
        let child = Command::new(std::env::current_exe()?)
            .args([role, bus])
            .stdout(Stdio::piped())
            .spawn()?;
        Ok(Proc(role, child))
    }

    /// Waits for it to exit (SIGKILLed first if `kill`) and prints its
    /// output; returns it if the process succeeded (or died of the SIGKILL).
    fn end(mut self, kill: bool) -> Res<String> {
        if kill {
            self.1.kill()?;
        }
        let mut out = String::new();
        if let Some(mut stdout) = self.1.stdout.take() {
            stdout.read_to_string(&mut out)?;
        }
        let status = self.1.wait()?;
        print!("{out}");
        let killed = kill && status.signal() == Some(9); // 9: SIGKILL
        if status.success() || killed {
            Ok(out)
        } else {
            Err(format!("the {} failed ({status})", self.0).into())
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.1.kill();
        let _ = self.1.wait();
    }
}
