//! Two services, two processes, one JetStream stream between them.
//!
//! * `orders`: an order service. Its bus prices each order, then an egress
//!   stage publishes it to `orders.new` (acked, deduplicated); a stage
//!   after the egress counts what the stream holds.
//! * `analytics`: an analytics service. An ingress feeds its bus from the
//!   durable consumer `analytics`; a stage totals revenue per region and
//!   checks every order arrives once, in order. Messages are acked only
//!   after that stage handled them.
//! * `demo` (the default): starts `analytics` and `orders` as child
//!   processes and checks the result. CI runs it against a server of its own.
//!
//! ```text
//! nats-server -js -sd /tmp/nats-demo &                     # a JetStream server on 4222
//! cargo run --release -p ringbus-nats --example order_services -- analytics --expect 200000 &
//! cargo run --release -p ringbus-nats --example order_services -- orders --count 200000
//! ```
//! Kill the server (`kill %1`) while orders flow and start it again with the
//! same command: both services reconnect, the egress resends what was not
//! acknowledged, and analytics still counts every order once. The server's
//! URL comes from `NATS_URL` (default `nats://127.0.0.1:4222`).

use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringbus::{Blocking, Sequence};
use ringbus_nats::async_nats::jetstream::stream;
use ringbus_nats::{EgressExt, EgressOptions, IngressOptions, Link, LinkOptions, Postcard};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    region: u8,
    quantity: u32,
    price_cents: u64,
}

const REGIONS: usize = 4;

fn url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn connect() -> Link {
    let link = Link::connect(&url(), LinkOptions::default()).unwrap_or_else(|e| {
        eprintln!("{e}\nstart one with: nats-server -js -sd /tmp/nats-demo");
        std::process::exit(2)
    });
    let config = stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    // Both services may start at once: the one whose create loses the race
    // finds the other's stream on its next look.
    let mut attempts = 0;
    while let Err(e) = link.ensure_stream(config.clone()) {
        attempts += 1;
        assert!(attempts < 5, "the ORDERS stream: {e}");
        std::thread::sleep(Duration::from_millis(100));
    }
    link
}

fn orders(count: u64) -> ExitCode {
    let link = connect();
    // One identity per run: a restarted service must not be taken for a resend.
    let identity = format!("orders-{}-{}", std::process::id(), now_millis());
    let egress = link.egress(Postcard, EgressOptions::new("orders.new", identity));
    let stats = egress.stats();
    let in_stream = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&in_stream);
    let mut bus = ringbus::single_producer(4096, Order::default, Blocking)
        .thread_name("pricing")
        .handle_events_with(|o: &mut Order, _: Sequence, _: bool| {
            o.price_cents = u64::from(o.quantity) * (990 + o.id % 20);
        })
        .and_then()
        .thread_name("nats-egress")
        .egress_to(egress)
        .and_then()
        .handle_events_with(move |_: &Order, _: Sequence, _: bool| {
            counted.fetch_add(1, Ordering::Relaxed);
        })
        .build();
    let start = Instant::now();
    for id in 0..count {
        let published = bus.publish(|o| {
            o.id = id;
            o.region = (id % REGIONS as u64) as u8;
            o.quantity = 1 + (id % 7) as u32;
        });
        if let Err(e) = published {
            eprintln!("orders: {e}");
            return ExitCode::FAILURE;
        }
    }
    match bus.shutdown() {
        Ok(_) => {
            let secs = start.elapsed().as_secs_f64();
            println!(
                "orders: {count} orders in the stream in {secs:.2} s ({:.0} orders/s); acked {}, \
                 resent {}, duplicates dropped by the server {}",
                count as f64 / secs,
                stats.acked(),
                stats.resent(),
                stats.duplicates()
            );
            assert_eq!(in_stream.load(Ordering::Relaxed), count);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("orders: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Default)]
struct Totals {
    next_id: u64,
    out_of_order: u64,
    revenue: [u64; REGIONS],
}

fn analytics(expect: u64, timeout: Duration) -> ExitCode {
    let link = connect();
    let totals = Arc::new(Mutex::new(Totals::default()));
    let t = Arc::clone(&totals);
    let bus = ringbus::single_producer(4096, Order::default, Blocking)
        .thread_name("revenue")
        .handle_events_with(move |o: &Order, _: Sequence, _: bool| {
            let mut t = t.lock().unwrap();
            if o.id != t.next_id {
                t.out_of_order += 1;
            }
            t.next_id = o.id + 1;
            t.revenue[o.region as usize] += o.price_cents;
        })
        .build();
    let options = IngressOptions::new("ORDERS", "analytics").filter_subject("orders.new");
    let ingress = link.ingress(Postcard, options, bus).expect("the ingress");
    let start = Instant::now();
    while totals.lock().unwrap().next_id < expect && start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (bus, report) = ingress.stop().map_err(|(_, e)| e).expect("the ingress ran");
    bus.shutdown().expect("the analytics bus drained");
    let t = totals.lock().unwrap();
    let revenue: u64 = t.revenue.iter().sum();
    println!(
        "analytics: {} orders, revenue {revenue} cents by region {:?}; {} out of order; ingress {report:?}",
        t.next_id, t.revenue, t.out_of_order
    );
    if t.next_id == expect && t.out_of_order == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("analytics: expected orders 0..{expect} once each, in order");
        ExitCode::FAILURE
    }
}

fn demo(count: u64) -> ExitCode {
    // The stream first, so the two services do not race to create it.
    drop(connect());
    let me = std::env::current_exe().expect("this program");
    let mut analytics = Command::new(&me)
        .args(["analytics", "--expect", &count.to_string()])
        .spawn()
        .expect("analytics");
    let orders = Command::new(&me)
        .args(["orders", "--count", &count.to_string()])
        .status()
        .expect("orders");
    let analytics = analytics.wait().expect("analytics");
    if orders.success() && analytics.success() {
        println!("demo: {count} orders from one process to the other through JetStream");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("orders") => orders(arg("--count", 200_000)),
        Some("analytics") => analytics(
            arg("--expect", 200_000),
            Duration::from_secs(arg("--timeout-secs", 120)),
        ),
        None | Some("demo") => demo(arg("--count", 200_000)),
        Some(other) => {
            eprintln!("unknown role `{other}`: orders, analytics or demo");
            ExitCode::from(2)
        }
    }
}
