//! Orders from two producers go through a validation stage that enriches
//! each order in place, then inventory, shipping and analytics in parallel,
//! then a ledger that runs only after all three (a diamond).
//!
//! `cargo run --release --example order_pipeline [orders-per-desk]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use ringbus::{EventHandler, PhasedBackoff, Sequence};

#[derive(Debug, Default, Clone)]
struct Order {
    desk: u8,
    id: u64,
    sku: u32,
    quantity: u32,
    unit_price_cents: u64,
    // Written by validation, read by everyone after it.
    total_cents: u64,
    valid: bool,
}

/// The ledger keeps running totals and hands them over at shutdown.
struct Ledger {
    orders: u64,
    rejected: u64,
    revenue_cents: u64,
    out: mpsc::Sender<(u64, u64, u64)>,
}

impl EventHandler<Order> for Ledger {
    fn on_event(&mut self, o: &Order, _seq: Sequence, _eob: bool) {
        if o.valid {
            self.orders += 1;
            self.revenue_cents += o.total_cents;
        } else {
            self.rejected += 1;
        }
    }

    fn on_shutdown(&mut self) {
        let _ = self
            .out
            .send((self.orders, self.rejected, self.revenue_cents));
    }
}

/// A stage that reduces valid orders into a shared number.
fn stage(
    f: impl Fn(&Order) -> u64 + Send + 'static,
) -> (
    Arc<AtomicU64>,
    impl FnMut(&Order, Sequence, bool) + Send + 'static,
) {
    let total = Arc::new(AtomicU64::new(0));
    let out = Arc::clone(&total);
    let mut local = 0u64;
    (
        total,
        move |o: &Order, _seq: Sequence, end_of_batch: bool| {
            if o.valid {
                local += f(o);
            }
            if end_of_batch {
                out.store(local, Ordering::Relaxed);
            }
        },
    )
}

fn main() {
    let per_desk: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    // Inventory reserves units, shipping books one parcel per order (labels
    // by desk and id), analytics counts distinct-ish SKUs touched.
    let (inventory, inventory_stage) = stage(|o| u64::from(o.quantity));
    let (shipping, shipping_stage) = stage(|o| u64::from(o.desk < 2 && o.id < u64::MAX));
    let (analytics, analytics_stage) = stage(|o| u64::from(o.sku < 1000));
    let (ledger_tx, ledger_rx) = mpsc::channel();

    // 4 stage threads + 2 desks on a small machine: spin briefly, then block.
    let producer = ringbus::multi_producer(4096, Order::default, PhasedBackoff::default())
        .thread_name("validate")
        .handle_events_with(|o: &mut Order, _seq: Sequence, _eob: bool| {
            o.valid = o.quantity > 0 && o.quantity <= 100;
            o.total_cents = u64::from(o.quantity) * o.unit_price_cents;
        })
        .and_then()
        .thread_name("inventory")
        .handle_events_with(inventory_stage)
        .thread_name("shipping")
        .handle_events_with(shipping_stage)
        .thread_name("analytics")
        .handle_events_with(analytics_stage)
        .and_then()
        .thread_name("ledger")
        .handle_events_with(Ledger {
            orders: 0,
            rejected: 0,
            revenue_cents: 0,
            out: ledger_tx,
        })
        .build();

    let desks: Vec<_> = (0..2u8)
        .map(|desk| {
            let producer = producer.clone();
            thread::spawn(move || {
                let mut expected = (0u64, 0u64);
                for id in 0..per_desk {
                    // Every 50th order has an invalid quantity.
                    let quantity = if id % 50 == 49 {
                        0
                    } else {
                        (id % 7 + 1) as u32
                    };
                    let unit_price_cents = 100 + (id % 13) * 25;
                    producer
                        .publish(|o| {
                            *o = Order {
                                desk,
                                id,
                                sku: (id % 1000) as u32,
                                quantity,
                                unit_price_cents,
                                ..Order::default()
                            }
                        })
                        .expect("bus halted");
                    if quantity > 0 {
                        expected.0 += 1;
                        expected.1 += u64::from(quantity) * unit_price_cents;
                    }
                }
                expected
            })
        })
        .collect();
    let mut expected = (0, 0);
    for desk in desks {
        let (orders, revenue) = desk.join().expect("desk thread");
        expected.0 += orders;
        expected.1 += revenue;
    }
    let report = producer.shutdown().expect("a stage failed");
    let (orders, rejected, revenue) = ledger_rx.recv().expect("ledger total");

    println!("{} orders from 2 desks", 2 * per_desk);
    for stage in &report.stages {
        println!("  {:10} processed {:>8}", stage.name, stage.processed);
    }
    println!(
        "  units reserved {}, parcels booked {}, orders analysed {}",
        inventory.load(Ordering::Relaxed),
        shipping.load(Ordering::Relaxed),
        analytics.load(Ordering::Relaxed)
    );
    assert_eq!(shipping.load(Ordering::Relaxed), expected.0);
    assert_eq!(analytics.load(Ordering::Relaxed), expected.0);
    println!(
        "ledger: {orders} orders, {rejected} rejected, revenue {}.{:02}",
        revenue / 100,
        revenue % 100
    );
    let ok = orders == expected.0 && revenue == expected.1 && orders + rejected == 2 * per_desk;
    println!("ledger check: {}", if ok { "balanced" } else { "MISMATCH" });
    assert!(ok, "ledger {orders}/{revenue} != expected {expected:?}");
}
