//! Orders are journaled before the order book sees them; the process crashes
//! mid-stream; a restart replays the journal and rebuilds the same book, then
//! takes live orders again.
//!
//! ```text
//! run 1 (a child process):  orders ─> ring ─> journal (fsync per batch) ─> book ─> prints its state
//!                           ... std::process::exit mid-stream (no shutdown, events in flight)
//! run 2 (this process):     Journal::open (recovery) ─> replay_into ─> the same book ─> live orders
//! ```
//!
//! `cargo run --release --example order_journal --features journal [-- DIR]`
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use ringbus::journal::{Journal, JournalOptions, Postcard};
use ringbus::{PhasedBackoff, Sequence};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    buy: bool,
    price: u32,
    quantity: u32,
}

impl Order {
    /// The `id`-th order of a deterministic stream.
    fn nth(id: u64) -> Self {
        let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        Self {
            id,
            buy: h & 1 == 0,
            price: 9_900 + (h >> 8) as u32 % 200,
            quantity: 1 + (h >> 24) as u32 % 50,
        }
    }
}

/// Resting quantity per side and price level.
#[derive(Debug, Default, Clone, PartialEq)]
struct Book {
    levels: BTreeMap<(bool, u32), u64>,
    orders: u64,
}

impl Book {
    fn apply(&mut self, order: &Order) {
        // Crosses the best opposite levels, rests the remainder.
        let mut left = u64::from(order.quantity);
        while left > 0 {
            let best = if order.buy {
                self.levels.range((false, 0)..=(false, order.price)).next()
            } else {
                self.levels
                    .range((true, order.price)..=(true, u32::MAX))
                    .next_back()
            };
            let Some((&level, &resting)) = best else {
                break;
            };
            let traded = left.min(resting);
            left -= traded;
            if traded == resting {
                self.levels.remove(&level);
            } else {
                self.levels.insert(level, resting - traded);
            }
        }
        if left > 0 {
            *self.levels.entry((order.buy, order.price)).or_default() += left;
        }
        self.orders += 1;
    }

    /// A digest of the whole book (FNV-1a over every level).
    fn digest(&self) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for (&(buy, price), &qty) in &self.levels {
            for x in [u64::from(buy), u64::from(price), qty] {
                h = (h ^ x).wrapping_mul(0x0000_0100_0000_01B3);
            }
        }
        h
    }
}

const CRASH_ENV: &str = "ORDER_JOURNAL_CRASH_AFTER";

/// The first run: journal and book orders until it "crashes" after
/// `crash_after` orders (exit without shutdown, events still in the ring).
fn crashing_run(dir: &Path, crash_after: u64) -> ! {
    let journal = Journal::open(dir).expect("open the journal");
    let mut book = Book::default();
    let mut out = std::io::stdout();
    let mut producer = ringbus::single_producer(1024, Order::default, PhasedBackoff::default())
        .journal_to(
            journal
                .writer(Postcard, JournalOptions::default())
                .expect("journal writer"),
        )
        .and_then()
        .thread_name("book")
        .handle_events_with(move |o: &Order, seq: Sequence, end_of_batch: bool| {
            book.apply(o);
            if end_of_batch {
                // What the business logic has acted on so far.
                writeln!(out, "BOOK {seq} {} {}", book.orders, book.digest()).unwrap();
            }
        })
        .build();
    for id in 0..crash_after {
        producer.publish(|o| *o = Order::nth(id)).expect("publish");
    }
    // The crash: no shutdown, no drain, no flush.
    std::process::exit(3);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(n) = std::env::var(CRASH_ENV) {
        let dir = std::env::args().nth(1).expect("dir");
        crashing_run(Path::new(&dir), n.parse()?);
    }
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("order-journal-{}", std::process::id()))
        });
    let _ = std::fs::remove_dir_all(&dir);

    // Run 1, in a child process that dies mid-stream.
    let crash_after = 200_000u64;
    println!(
        "run 1: journaling {crash_after} orders into {} and crashing mid-stream",
        dir.display()
    );
    let mut child = Command::new(std::env::current_exe()?)
        .arg(&dir)
        .env(CRASH_ENV, crash_after.to_string())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut before = None;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        let mut fields = line.split_whitespace().skip(1).map(|f| f.parse::<u64>());
        if let (Some(seq), Some(orders), Some(digest)) =
            (fields.next(), fields.next(), fields.next())
        {
            before = Some((seq? as Sequence, orders?, digest?));
        }
    }
    let status = child.wait()?;
    let (last_seq, orders_before, digest_before) = before.ok_or("the first run booked nothing")?;
    println!(
        "run 1: exited with {status}; the book had acted on {orders_before} orders (up to sequence \
         {last_seq}), digest {digest_before:016x}"
    );

    // Run 2: recover, replay, compare, go on.
    let journal = Journal::open(&dir)?;
    if let Some(cut) = journal.recovered() {
        println!(
            "run 2: cut a torn record off {} at byte {}",
            cut.file.display(),
            cut.offset
        );
    }
    println!(
        "run 2: the journal holds orders {}..{} (every order the book saw, and maybe a few it never got to)",
        journal.first_sequence(),
        journal.next_sequence()
    );
    let rebuilt_at_crash = Arc::new(Mutex::new(None));
    let final_book = Arc::new(Mutex::new(Book::default()));
    let (at_crash, fin) = (Arc::clone(&rebuilt_at_crash), Arc::clone(&final_book));
    let mut book = Book::default();
    let mut producer = ringbus::single_producer(1024, Order::default, PhasedBackoff::default())
        .journal_to(journal.writer(Postcard, JournalOptions::default())?)
        .and_then()
        .thread_name("book")
        .handle_events_with(move |o: &Order, seq: Sequence, end_of_batch: bool| {
            book.apply(o);
            if seq == last_seq {
                *at_crash.lock().unwrap() = Some((book.orders, book.digest()));
            }
            if end_of_batch {
                fin.lock().unwrap().clone_from(&book);
            }
        })
        .build();
    let started = std::time::Instant::now();
    let replayed = journal.replay_into(&mut producer, Postcard, journal.first_sequence())?;
    println!(
        "run 2: replayed {} orders ({}..={}) in {:?}",
        replayed.events,
        replayed.first,
        replayed.last,
        started.elapsed()
    );
    let live = 50_000u64;
    let next = journal.next_sequence() as u64;
    for id in next..next + live {
        producer.publish(|o| *o = Order::nth(id))?;
    }
    producer.shutdown()?;
    let (orders_rebuilt, digest_rebuilt) = rebuilt_at_crash
        .lock()
        .unwrap()
        .ok_or("replay never reached the crash point")?;
    println!(
        "run 2: the rebuilt book at sequence {last_seq}: {orders_rebuilt} orders, digest {digest_rebuilt:016x}"
    );
    assert_eq!(
        (orders_rebuilt, digest_rebuilt),
        (orders_before, digest_before),
        "the rebuilt book differs from the one before the crash"
    );
    println!("run 2: equal to the book before the crash");
    let book = final_book.lock().unwrap();
    println!(
        "run 2: {live} live orders later the book holds {} orders over {} price levels; the journal ends at {}",
        book.orders,
        book.levels.len(),
        Journal::open_read_only(&dir)?.next_sequence()
    );
    assert_eq!(book.orders, next + live);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
