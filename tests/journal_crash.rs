//! The journal against a real crash: a child process publishes through a
//! journaling bus and prints every event the stage after the journal saw
//! (so: durable), with the state that stage had built; the parent kills it
//! with SIGKILL at a random moment, many times over the same directory.
//! After each kill the journal must hold every event reported durable,
//! intact and in order, and replaying it must rebuild the reported state.
//! Each child first replays the journal, then continues the numbering, so
//! recovery (a torn tail cut off) and continuation are crossed with kills
//! during replay, segment rolls, writes and syncs.
//!
//! `RINGBUS_CRASH_RUNS` (default 16) and `RINGBUS_CRASH_SEED` scale and
//! steer it.
#![cfg(all(feature = "journal", unix))]

use std::io::{BufWriter, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ringbus::journal::{Journal, JournalOptions, Postcard};
use ringbus::{Blocking, Sequence};
use serde::{Deserialize, Serialize};

const CHILD_DIR: &str = "RINGBUS_CRASH_CHILD_DIR";

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Tick {
    seq: Sequence,
    value: u64,
    pad: Vec<u8>,
}

/// The value event `seq` carries (SplitMix64 of its sequence).
fn value_of(seq: Sequence) -> u64 {
    let mut x = (seq as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn fill(tick: &mut Tick, seq: Sequence) {
    tick.seq = seq;
    tick.value = value_of(seq);
    tick.pad.clear();
    tick.pad.resize((seq % 61) as usize, seq as u8);
}

/// The state the stage after the journal builds (order matters).
fn step(state: u64, tick: &Tick) -> u64 {
    (state ^ tick.value).wrapping_mul(0x0000_0100_0000_01B3)
}

/// The child: replay, then publish until killed.
fn child(dir: &Path) {
    let journal = Journal::open(dir).expect("open");
    let from = journal.first_sequence();
    // The test harness printed `test crash_child_entry ... ` without a
    // line end: start the report on a line of its own.
    println!();
    let mut out = BufWriter::new(std::io::stdout());
    let mut state = 0u64;
    let options = JournalOptions::default().segment_bytes(32 << 10);
    let mut producer = ringbus::single_producer(64, Tick::default, Blocking)
        .journal_to(journal.writer(Postcard, options).expect("writer"))
        .and_then()
        .handle_events_with(move |t: &Tick, seq: Sequence, end_of_batch: bool| {
            // Replayed events have bus sequences 0.., then live ones go on
            // from the journal's end: the journal sequence is `from + seq`.
            let journal_seq = from + seq;
            if t.seq != journal_seq
                || t.value != value_of(journal_seq)
                || t.pad.len() != (journal_seq % 61) as usize
            {
                writeln!(out, "BAD {journal_seq} {t:?}").unwrap();
            }
            state = step(state, t);
            writeln!(out, "D {journal_seq} {state}").unwrap();
            if end_of_batch {
                out.flush().unwrap();
            }
        })
        .build();
    let replayed = journal
        .replay_into(&mut producer, Postcard, from)
        .expect("replay");
    assert_eq!(replayed.events as Sequence, journal.next_sequence() - from);
    let mut stdout = std::io::stdout();
    writeln!(stdout, "LIVE").unwrap();
    stdout.flush().unwrap();
    let mut seq = journal.next_sequence();
    loop {
        producer.publish(|t| fill(t, seq)).expect("publish");
        seq += 1;
    }
}

#[test]
fn crash_child_entry() {
    // The child process's entry point; as a plain test it does nothing.
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        child(Path::new(&dir));
    }
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

#[test]
fn every_event_reported_durable_survives_sigkill_and_replay_rebuilds_the_state() {
    let runs: u64 = std::env::var("RINGBUS_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let seed: u64 = std::env::var("RINGBUS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("RINGBUS_CRASH_SEED={seed}");
    let mut rng = Lcg(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut killed_live = 0;
    let mut recovered_tails = 0;
    for run in 0..runs {
        let before = Journal::open(dir.path()).unwrap().next_sequence();
        // Mostly during live traffic; every fourth run early (during start
        // and replay), counted from the spawn. Planned, not drawn, so a
        // run of unlucky draws cannot leave too few live kills.
        let early = run % 4 == 3;
        let delay = if early {
            1 + rng.next(30)
        } else {
            rng.next(60)
        };
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (live_tx, live_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let mut chunk = [0u8; 1 << 16];
            loop {
                let n = stdout.read(&mut chunk).unwrap();
                if n == 0 {
                    return text;
                }
                text.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
                if text.contains("\nLIVE\n") {
                    let _ = live_tx.send(());
                }
            }
        });
        if !early {
            // Replay grows with the journal: count from when it finished.
            live_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the child never went live");
        }
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let text = reader.join().unwrap();
        if status.signal() != Some(9) {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("run {run}: the child ended on its own ({status}):\n{err}");
        }
        // Complete lines only: the kill may cut the last one.
        let complete = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        let mut reported = Vec::new();
        for line in complete.lines() {
            if line.starts_with("BAD") {
                panic!("run {run}: the stage after the journal saw a wrong event: {line}");
            }
            if let Some(rest) = line.strip_prefix("D ") {
                let (seq, state) = rest.split_once(' ').unwrap();
                reported.push((
                    seq.parse::<Sequence>().unwrap(),
                    state.parse::<u64>().unwrap(),
                ));
            }
        }
        // What the journal holds now, and the state a replay builds.
        let journal = Journal::open(dir.path()).unwrap();
        if journal.recovered().is_some() {
            recovered_tails += 1;
        }
        let mut states = Vec::new();
        let mut state = 0u64;
        for (i, event) in journal.events::<Tick, _>(0, Postcard).unwrap().enumerate() {
            let (seq, tick) = event.unwrap_or_else(|e| panic!("run {run}: {e}"));
            assert_eq!(seq, i as Sequence, "run {run}: records in order");
            assert_eq!(tick.seq, seq, "run {run}: record {seq} intact");
            assert_eq!(tick.value, value_of(seq), "run {run}: record {seq} intact");
            state = step(state, &tick);
            states.push(state);
        }
        assert!(
            journal.next_sequence() >= before,
            "run {run}: the journal shrank below what was durable"
        );
        for (i, &(seq, state)) in reported.iter().enumerate() {
            assert_eq!(
                seq, i as Sequence,
                "run {run}: the stage saw every event from 0 in order"
            );
            let rebuilt = states.get(seq as usize).unwrap_or_else(|| {
                panic!(
                    "run {run}: event {seq} was reported durable but the journal ends at {}",
                    journal.next_sequence()
                )
            });
            assert_eq!(
                *rebuilt, state,
                "run {run}: replay rebuilds the state at {seq}"
            );
        }
        if !early {
            assert!(text.contains("\nLIVE\n"));
            killed_live += 1;
        }
        eprintln!(
            "run {run}: killed {delay} ms after {}; {} events reported, journal {before} -> {}{}",
            if early { "the start" } else { "going live" },
            reported.len(),
            journal.next_sequence(),
            if journal.recovered().is_some() {
                ", torn tail cut"
            } else {
                ""
            }
        );
    }
    eprintln!(
        "{killed_live} of {runs} runs killed during live traffic; {recovered_tails} torn tails cut"
    );
    assert_eq!(
        killed_live,
        runs - runs / 4,
        "every planned live kill landed"
    );
    assert!(
        Journal::open(dir.path()).unwrap().next_sequence() > 0,
        "nothing was ever journaled"
    );
}
