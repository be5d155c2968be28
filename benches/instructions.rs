//! Instructions per event on the hot paths, counted by callgrind, for
//! ringbus and the `disruptor` crate: counts that do not drift with the
//! machine's phases, unlike times.
//!
//! ```sh
//! cargo bench --bench instructions            # needs valgrind; ~1 minute
//! cargo bench --bench instructions -- --smoke # runs each workload natively, tiny (CI)
//! ```
//!
//! Each workload runs twice under `valgrind --tool=callgrind
//! --separate-threads=yes`, with `N1` and `N2` events, on a ring larger
//! than both (so no producer ever waits, and setting the ring up costs the
//! same in both runs). The per-event figure of a thread is the difference
//! of its two counts divided by `N2 - N1`: what is fixed (building, thread
//! start, shutdown) cancels out.
//!
//! * **publish**: the producer's thread, `publish` of one event at a time;
//! * **batch publish**: the producer's thread, batches of 64;
//! * **stage loop**: the stage's thread, from the single-publish run. The
//!   stage is held at its start until every event is published, so it
//!   takes them as one batch: its count is the loop and the handler per
//!   event, no waiting.
//!
//! * **multi producer**: the same three on each crate's multi-producer
//!   bus, with one producer handle (the claim's `fetch_add` and the
//!   availability marks, uncontended).
//!
//! Both crates run plain busy spin, the same summing handler and the same
//! 16-byte event.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;

/// Slots in every ring: more than `N2`.
const CAPACITY: usize = 1 << 20;
const N1: u64 = 200_000;
const N2: u64 = 600_000;

#[derive(Debug, Default, Clone, Copy)]
struct Ev {
    value: u64,
    /// Unused: keeps the 16-byte event of the comparison run.
    #[allow(dead_code)]
    stamp: u64,
}

/// ringbus's stage: holds until `gate` opens, then sums.
struct Summing {
    gate: mpsc::Receiver<()>,
    sum: u64,
}

impl ringbus::EventHandler<Ev> for Summing {
    #[inline]
    fn on_event(&mut self, e: &Ev, _: ringbus::Sequence, _: bool) {
        self.sum = self.sum.wrapping_add(e.value);
    }
    fn on_start(&mut self) {
        let _ = self.gate.recv();
    }
    fn on_shutdown(&mut self) {
        black_box(self.sum);
    }
}

/// Publishes `0..n` one at a time (`batch` 1) or in batches, through any
/// producer with ringbus's or the disruptor crate's calls.
macro_rules! publish_all {
    ($producer:expr, $batch:expr, $n:expr, $($ok:tt)*) => {{
        let (batch, n) = ($batch, $n);
        let mut i = 0;
        if batch == 1 {
            while i < n {
                $producer.publish(|e| e.value = i)$($ok)*;
                i += 1;
            }
        } else {
            while i < n {
                let k = batch.min(n - i) as usize;
                $producer
                    .batch_publish(k, |slots| {
                        for e in slots {
                            e.value = i;
                            i += 1;
                        }
                    })$($ok)*;
            }
        }
    }};
}

/// ringbus's multi producer (one handle), as `ringbus_run`.
fn ringbus_multi_run(batch: u64, n: u64) {
    let (open, gate) = mpsc::channel();
    let producer = ringbus::multi_producer(CAPACITY, Ev::default, ringbus::BusySpin)
        .handle_events_with(Summing { gate, sum: 0 })
        .build();
    publish_all!(producer, batch, n, .unwrap());
    open.send(()).unwrap();
    producer.shutdown().unwrap();
}

/// The disruptor crate's multi producer (one handle), as `disruptor_run`.
fn disruptor_multi_run(batch: u64, n: u64) {
    use disruptor::Producer;
    let (open, gate) = mpsc::channel::<()>();
    let mut producer = disruptor::build_multi_producer(CAPACITY, Ev::default, disruptor::BusySpin)
        .handle_events_and_state_with(
            |sum: &mut Sum, e: &Ev, _, _| sum.0 = sum.0.wrapping_add(e.value),
            move || {
                let _ = gate.recv();
                Sum(0)
            },
        )
        .build();
    publish_all!(producer, batch, n,);
    open.send(()).unwrap();
    drop(producer);
}

fn ringbus_run(batch: u64, n: u64) {
    let (open, gate) = mpsc::channel();
    let mut producer = ringbus::single_producer(CAPACITY, Ev::default, ringbus::BusySpin)
        .handle_events_with(Summing { gate, sum: 0 })
        .build();
    publish_all!(producer, batch, n, .unwrap());
    open.send(()).unwrap();
    producer.shutdown().unwrap();
}

/// The disruptor crate's stage state: the sum, observed when the stage
/// ends (as ringbus's `on_shutdown` observes its own), so the compiler
/// cannot drop the summing (and the event reads) as dead code.
struct Sum(u64);

impl Drop for Sum {
    fn drop(&mut self) {
        black_box(self.0);
    }
}

fn disruptor_run(batch: u64, n: u64) {
    use disruptor::Producer;
    let (open, gate) = mpsc::channel::<()>();
    let mut producer = disruptor::build_single_producer(CAPACITY, Ev::default, disruptor::BusySpin)
        .handle_events_and_state_with(
            |sum: &mut Sum, e: &Ev, _, _| sum.0 = sum.0.wrapping_add(e.value),
            move || {
                let _ = gate.recv();
                Sum(0)
            },
        )
        .build();
    publish_all!(producer, batch, n,);
    open.send(()).unwrap();
    drop(producer);
}

/// One workload in this process.
fn child(imp: &str, batch: u64, n: u64) {
    match imp {
        "ringbus" => ringbus_run(batch, n),
        "disruptor" => disruptor_run(batch, n),
        "ringbus-multi" => ringbus_multi_run(batch, n),
        "disruptor-multi" => disruptor_multi_run(batch, n),
        other => panic!("unknown implementation {other}"),
    }
}

/// Instructions of each thread of one callgrind run: (main, stage).
fn counted(exe: &Path, imp: &str, batch: u64, n: u64) -> (u64, u64) {
    let dir = std::env::temp_dir().join(format!("ringbus-instructions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let out = dir.join("cg.out");
    let status = Command::new("valgrind")
        .args(["--tool=callgrind", "--separate-threads=yes", "--quiet"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(exe)
        .args(["--child", imp, &batch.to_string(), &n.to_string()])
        .status()
        .unwrap_or_else(|e| {
            eprintln!("instructions: cannot run valgrind ({e}); install it (apt-get install valgrind) or pass --smoke");
            std::process::exit(2);
        });
    assert!(status.success(), "valgrind run failed: {status}");
    let total = |thread: u32| -> u64 {
        let file = dir.join(format!("cg.out-{thread:02}"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        text.lines()
            .find_map(|l| {
                l.strip_prefix("summary: ")
                    .or_else(|| l.strip_prefix("totals: "))
            })
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no total in {}", file.display()))
    };
    let counts = (total(1), total(2));
    let _ = std::fs::remove_dir_all(&dir);
    counts
}

fn main() -> Result<(), lexopt::Error> {
    use lexopt::prelude::*;
    let mut smoke = false;
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        match arg {
            // `--child <impl> <batch> <events>`: one workload, under callgrind.
            Long("child") => {
                let imp = args.value()?.string()?;
                child(&imp, args.value()?.parse()?, args.value()?.parse()?);
                return Ok(());
            }
            Long("smoke") => smoke = true,
            Long("bench") => {} // passed by `cargo bench`
            _ => return Err(arg.unexpected()),
        }
    }
    if smoke {
        for imp in ["ringbus", "disruptor", "ringbus-multi", "disruptor-multi"] {
            for batch in [1, 64] {
                child(imp, batch, 10_000);
            }
        }
        println!("instructions: smoke run done (no counts without valgrind)");
        return Ok(());
    }
    let exe = std::env::current_exe().expect("own path");
    println!(
        "instructions per event (callgrind; ({N2} - {N1} events) runs, difference / {})",
        N2 - N1
    );
    println!("| path | ringbus | disruptor crate | ringbus ÷ disruptor |");
    println!("|---|---:|---:|---:|");
    let per_event = |imp: &str, batch: u64| {
        let (main1, stage1) = counted(&exe, imp, batch, N1);
        let (main2, stage2) = counted(&exe, imp, batch, N2);
        let d = (N2 - N1) as f64;
        (
            (main2 as f64 - main1 as f64) / d,
            (stage2 as f64 - stage1 as f64) / d,
        )
    };
    let (rb_pub, rb_stage) = per_event("ringbus", 1);
    let (dis_pub, dis_stage) = per_event("disruptor", 1);
    let (rb_batch, _) = per_event("ringbus", 64);
    let (dis_batch, _) = per_event("disruptor", 64);
    let (rbm_pub, rbm_stage) = per_event("ringbus-multi", 1);
    let (dism_pub, dism_stage) = per_event("disruptor-multi", 1);
    let (rbm_batch, _) = per_event("ringbus-multi", 64);
    let (dism_batch, _) = per_event("disruptor-multi", 64);
    for (path, rb, dis) in [
        ("publish (one event per call)", rb_pub, dis_pub),
        ("batch publish (64 per call)", rb_batch, dis_batch),
        ("stage loop + handler, per event", rb_stage, dis_stage),
        ("multi producer: publish", rbm_pub, dism_pub),
        ("multi producer: batch publish (64)", rbm_batch, dism_batch),
        (
            "multi producer: stage loop + handler",
            rbm_stage,
            dism_stage,
        ),
    ] {
        println!("| {path} | {rb:.2} | {dis:.2} | {:.2}× |", rb / dis);
    }
    Ok(())
}
