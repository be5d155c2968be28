//! The journal against the disk's own limit.
//!
//! For each sync policy, rounds alternate (A B A B …) between
//! - **journal**: events published through a bus whose only stage is the
//!   journal (postcard records with CRC32C), timed until every event is
//!   durable (shutdown), and
//! - **plain writer**: the same number of bytes written with plain
//!   sequential `write` calls of the journal's average batch size, with the
//!   same number of `fdatasync` calls (one per batch for `EveryBatch`, none
//!   for `Never`): the most a writer could get from this disk at that
//!   cadence.
//!
//! The ratio is taken per round (journal ÷ plain writer) and its median
//! reported with min–max. A latency scenario paces events and measures
//! publish → the stage after the journal, against the same bus with a no-op
//! stage in the journal's place: the added latency per event.
//!
//! `cargo bench --bench journal --features journal [-- --rounds N --events N --dir PATH]`
//! (`dd` with `conv=fdatasync` is run once as a cross-check of the raw
//! sequential bandwidth, when it is installed).
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringbus::journal::{Journal, JournalOptions, Postcard, SyncPolicy};
use ringbus::{Blocking, BusySpin, Sequence, WaitStrategy, Yielding};
use serde::{Deserialize, Serialize};

#[path = "common/stats.rs"]
mod stats;
use stats::{median, ratio_cell};

/// A trade: 74 bytes encoded, 90 with the record header.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Trade {
    id: u64,
    account: u64,
    price: u64,
    quantity: u32,
    buy: bool,
    sent_ns: u64,
    venue: [u8; 16],
    note: [u8; 32],
    memo: [u8; 16],
}

impl Trade {
    fn fill(&mut self, id: u64) {
        self.id = id;
        self.account = id % 10_007;
        self.price = 10_000 + id % 997;
        self.quantity = (id % 100) as u32 + 1;
        self.buy = id & 1 == 0;
        self.venue = *b"XLON-ringbus-dem";
        self.note[..8].copy_from_slice(&id.to_le_bytes());
        self.memo[8..].copy_from_slice(&self.price.to_le_bytes());
    }
}

struct Args {
    latency: bool,
    rounds: usize,
    events: u64,
    dir: PathBuf,
}

fn args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        latency: true,
        rounds: 5,
        events: 1_000_000,
        dir: std::env::var_os("RINGBUS_JOURNAL_DIR").map_or_else(std::env::temp_dir, PathBuf::from),
    };
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        match arg {
            Long("rounds") => a.rounds = args.value()?.parse()?,
            Long("events") => a.events = args.value()?.parse()?,
            Long("dir") => a.dir = args.value()?.into(),
            Long("no-latency") => a.latency = false,
            Long("bench") => {} // passed by `cargo bench`
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(a)
}

struct JournalRun {
    /// Until every event was released (durable under the policy).
    secs: f64,
    /// Until every byte was on disk (one more `fdatasync` for `Never`).
    on_disk_secs: f64,
    bytes: u64,
    writes: u64,
    syncs: u64,
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("ringbus-bench-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&path);
    fs::create_dir_all(&path).unwrap();
    path
}

fn journal_run(dir: &Path, events: u64, sync: SyncPolicy) -> JournalRun {
    if std::env::var("RINGBUS_JOURNAL_STRATEGY").is_ok_and(|s| s == "yielding") {
        journal_run_with(dir, events, sync, Yielding::default())
    } else {
        journal_run_with(dir, events, sync, Blocking)
    }
}

fn journal_run_with<W: WaitStrategy>(
    dir: &Path,
    events: u64,
    sync: SyncPolicy,
    strategy: W,
) -> JournalRun {
    let path = fresh(dir, "journal");
    let journal = Journal::open(&path).unwrap();
    let options = JournalOptions::default().sync(sync).segment_bytes(1 << 30);
    let mut producer = ringbus::single_producer(4096, Trade::default, strategy)
        .journal_to(journal.writer(Postcard, options).unwrap())
        .build();
    let start = Instant::now();
    let mut id = 0;
    while id < events {
        let n = 64.min(events - id) as usize;
        producer
            .batch_publish(n, |slots| {
                for t in slots {
                    t.fill(id);
                    id += 1;
                }
            })
            .unwrap();
    }
    producer.shutdown().unwrap();
    let secs = start.elapsed().as_secs_f64();
    for entry in fs::read_dir(&path).unwrap() {
        File::open(entry.unwrap().path())
            .unwrap()
            .sync_data()
            .unwrap();
    }
    let on_disk_secs = start.elapsed().as_secs_f64();
    let stats = journal.stats();
    assert_eq!(stats.records, events);
    fs::remove_dir_all(&path).unwrap();
    JournalRun {
        secs,
        on_disk_secs,
        bytes: stats.bytes,
        writes: stats.writes,
        syncs: stats.syncs,
    }
}

/// `bytes` in writes of `chunk` bytes, with `fdatasync` after every
/// `sync_every` writes (never when 0). Returns the seconds until written
/// and until on disk (one more `fdatasync` at the end).
fn plain_run(dir: &Path, bytes: u64, chunk: usize, sync_every: u64) -> (f64, f64) {
    let path = fresh(dir, "plain");
    let file_path = path.join("data");
    let data = vec![0x5au8; chunk];
    let start = Instant::now();
    let mut file: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file_path)
        .unwrap();
    let mut written = 0u64;
    let mut writes = 0u64;
    while written < bytes {
        let n = chunk.min((bytes - written) as usize);
        file.write_all(&data[..n]).unwrap();
        written += n as u64;
        writes += 1;
        if sync_every > 0 && writes % sync_every == 0 {
            file.sync_data().unwrap();
        }
    }
    let written = start.elapsed().as_secs_f64();
    file.sync_data().unwrap();
    drop(file);
    let on_disk = start.elapsed().as_secs_f64();
    fs::remove_dir_all(&path).unwrap();
    (written, on_disk)
}

/// One row: `measure` gives (journal seconds, plain seconds) per round.
fn row(rounds: Vec<(f64, f64, u64, f64)>, name: &str, events: u64) {
    let ratios: Vec<f64> = rounds.iter().map(|(j, p, _, _)| p / j).collect();
    let journal_mbs: Vec<f64> = rounds
        .iter()
        .map(|(j, _, b, _)| *b as f64 / j / 1e6)
        .collect();
    let plain_mbs: Vec<f64> = rounds
        .iter()
        .map(|(_, p, b, _)| *b as f64 / p / 1e6)
        .collect();
    let events_per_s: Vec<f64> = rounds.iter().map(|(j, ..)| events as f64 / j).collect();
    let chunk: Vec<f64> = rounds.iter().map(|(.., c)| *c).collect();
    println!(
        "| {name} | {:.2} M/s | {:.0} MB/s | {:.0} MB/s | {} | {:.0} KiB |",
        median(&events_per_s) / 1e6,
        median(&journal_mbs),
        median(&plain_mbs),
        ratio_cell(&ratios),
        median(&chunk) / 1024.0,
    );
}

fn throughput(args: &Args) {
    let mut per_batch = Vec::new();
    let mut cached = Vec::new();
    let mut on_disk = Vec::new();
    for _ in 0..args.rounds {
        // fsync per batch: the plain writer writes the journal's bytes in
        // as many writes and with as many fdatasync calls.
        let j = journal_run(&args.dir, args.events, SyncPolicy::EveryBatch);
        let chunk = (j.bytes / j.writes.max(1)) as usize;
        let every = (j.writes / j.syncs.max(1)).max(1);
        let (_, p) = plain_run(&args.dir, j.bytes, chunk.max(1), every);
        per_batch.push((j.secs, p, j.bytes, chunk as f64));
        // No fsync: the same bytes in as many writes, none synced; timed
        // until written (the page cache) and until on disk.
        let j = journal_run(&args.dir, args.events, SyncPolicy::Never);
        let chunk = (j.bytes / j.writes.max(1)) as usize;
        let (written, synced) = plain_run(&args.dir, j.bytes, chunk.max(1), 0);
        cached.push((j.secs, written, j.bytes, chunk as f64));
        on_disk.push((j.on_disk_secs, synced, j.bytes, chunk as f64));
    }
    row(per_batch, "fsync per batch", args.events);
    row(cached, "no fsync, until written (page cache)", args.events);
    row(
        on_disk,
        "no fsync, until on disk (one fdatasync at the end)",
        args.events,
    );
}

/// Publish → stage-after-the-journal latency at a paced rate, with the
/// journal and with a no-op stage in its place.
fn latency<W: WaitStrategy>(args: &Args, strategy: W, journal: bool) -> Histogram<u64> {
    let epoch = Instant::now();
    let hist = std::sync::Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let h = std::sync::Arc::clone(&hist);
    let path = fresh(&args.dir, "latency");
    let j = Journal::open(&path).unwrap();
    let builder = ringbus::single_producer(4096, Trade::default, strategy);
    let builder = if journal {
        builder.journal_to(j.writer(Postcard, JournalOptions::default()).unwrap())
    } else {
        builder.handle_events_with(|_: &Trade, _: Sequence, _: bool| {})
    };
    let mut local = Histogram::<u64>::new(3).unwrap();
    let mut producer = builder
        .and_then()
        .handle_events_with(move |t: &Trade, _: Sequence, end_of_batch: bool| {
            let now = epoch.elapsed().as_nanos() as u64;
            local.record(now.saturating_sub(t.sent_ns)).unwrap();
            if end_of_batch {
                h.lock().unwrap().add(&local).unwrap();
                local.reset();
            }
        })
        .build();
    let n = (args.events / 20).max(10_000);
    let gap = Duration::from_micros(20);
    let mut next = Instant::now();
    for id in 0..n {
        while Instant::now() < next {
            std::hint::spin_loop();
        }
        next += gap;
        producer
            .publish(|t| {
                t.fill(id);
                t.sent_ns = epoch.elapsed().as_nanos() as u64;
            })
            .unwrap();
    }
    producer.shutdown().unwrap();
    fs::remove_dir_all(&path).unwrap();
    let hist = hist.lock().unwrap().clone();
    hist
}

fn dd_check(dir: &Path) {
    let path = fresh(dir, "dd");
    let out = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=512", "conv=fdatasync"])
        .arg(format!("of={}", path.join("dd").display()))
        .output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stderr);
        if let Some(line) = text.lines().last() {
            println!("dd if=/dev/zero bs=1M count=512 conv=fdatasync: {line}");
        }
    }
    let _ = fs::remove_dir_all(&path);
}

fn main() -> Result<(), lexopt::Error> {
    let args = args()?;
    println!(
        "journal bench: {} events (90-byte records) per round, {} rounds, in {} ({} cores)",
        args.events,
        args.rounds,
        args.dir.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    dd_check(&args.dir);
    println!();
    println!("| policy | journal events/s | journal MB/s | plain writer MB/s | journal / plain, per round: median (min-max) | bytes per write |");
    println!("|---|---:|---:|---:|---:|---:|");
    throughput(&args);
    if !args.latency {
        return Ok(());
    }
    println!();
    println!("| latency, publish -> stage after (one event every 20 us) | p50 | p99 | p99.9 |");
    println!("|---|---:|---:|---:|");
    let cores = ringbus::available_cores();
    let rows: Vec<(&str, Histogram<u64>)> = if cores.len() >= 3 {
        vec![
            ("no-op stage, busy spin", latency(&args, BusySpin, false)),
            (
                "journal (fsync per batch), busy spin",
                latency(&args, BusySpin, true),
            ),
        ]
    } else {
        // 3 threads on 2 cores: blocking waits, or the scheduler decides.
        vec![
            ("no-op stage, blocking", latency(&args, Blocking, false)),
            (
                "journal (fsync per batch), blocking",
                latency(&args, Blocking, true),
            ),
        ]
    };
    for (name, h) in &rows {
        println!(
            "| {name} | {:.1} us | {:.1} us | {:.1} us |",
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.value_at_quantile(0.999) as f64 / 1e3
        );
    }
    let added50 = rows[1].1.value_at_quantile(0.5) as f64 - rows[0].1.value_at_quantile(0.5) as f64;
    let added99 =
        rows[1].1.value_at_quantile(0.99) as f64 - rows[0].1.value_at_quantile(0.99) as f64;
    println!(
        "\nadded by the journal: p50 {:.1} us, p99 {:.1} us",
        added50 / 1e3,
        added99 / 1e3
    );
    Ok(())
}
