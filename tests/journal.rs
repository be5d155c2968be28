//! The journal: records on disk in order and intact, the durable cursor,
//! every sync policy, segment rolls, recovery from a torn tail, damage in
//! the middle, replay that continues the numbering, and disk errors through
//! the failure policy. (The SIGKILL crash test is `tests/journal_crash.rs`.)
#![cfg(feature = "journal")]

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bounded;
use ringbus::journal::{Codec, Journal, JournalError, JournalOptions, Postcard, SyncPolicy};
use ringbus::{
    Blocking, BoxError, BuildError, BusySpin, FailurePolicy, PhasedBackoff, PublishError, Sequence,
    ShutdownError, Sleeping, WaitStrategy, Yielding,
};

#[path = "common/journal.rs"]
mod fixtures;
use fixtures::*;

#[test]
fn three_producers_on_a_ring_that_laps_every_record_in_order_and_intact() {
    const PER: u64 = if cfg!(debug_assertions) {
        5_000
    } else {
        50_000
    };
    bounded(60, || {
        let dir = dir();
        let journal = Journal::open(dir.path()).unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let s = Arc::clone(&seen);
        let producer = ringbus::multi_producer(8, Order::default, Yielding::default())
            .journal_to(journal.writer(Postcard, JournalOptions::default()).unwrap())
            .and_then()
            .handle_events_with(move |_: &Order, _: Sequence, _: bool| {
                s.fetch_add(1, Ordering::Relaxed);
            })
            .build();
        let threads: Vec<_> = (0..3u32)
            .map(|p| {
                let producer = producer.clone();
                std::thread::spawn(move || {
                    for n in 0..PER {
                        producer.publish(|o| *o = Order::new(p, n)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        producer.shutdown().unwrap();
        assert_eq!(seen.load(Ordering::Relaxed), 3 * PER);
        let events = read_all(&Journal::open_read_only(dir.path()).unwrap());
        assert_eq!(events.len() as u64, 3 * PER, "no record lost or doubled");
        let mut next = [0u64; 3];
        for (i, (seq, order)) in events.iter().enumerate() {
            assert_eq!(*seq, i as Sequence, "sequences are consecutive");
            let p = order.producer as usize;
            assert_eq!(order.n, next[p], "producer {p}'s order");
            assert_eq!(order.note, format!("order {} of {p}", order.n));
            next[p] += 1;
        }
        let stats = journal.stats();
        assert_eq!(stats.records, 3 * PER);
        assert!(stats.syncs >= 1 && stats.syncs <= 3 * PER, "{stats:?}");
    });
}

/// The durable cursor: a stage after the journal checks, for every event it
/// sees, that the writer already reported it durable and, at the end of each
/// batch, that the record is in the segment file.
fn durable_before_downstream<W: WaitStrategy>(strategy: W, sync: SyncPolicy) {
    let n: u64 = if cfg!(debug_assertions) {
        3_000
    } else {
        20_000
    };
    let dir = dir();
    let journal = Arc::new(Journal::open(dir.path()).unwrap());
    let reader = Arc::clone(&journal);
    let early = Arc::new(Mutex::new(Vec::new()));
    let e = Arc::clone(&early);
    let mut producer = ringbus::single_producer(16, Order::default, strategy)
        .journal_to(
            journal
                .writer(Postcard, JournalOptions::default().sync(sync))
                .unwrap(),
        )
        .and_then()
        .handle_events_with(move |o: &Order, seq: Sequence, end_of_batch: bool| {
            if reader.durable_sequence() < seq {
                e.lock().unwrap().push(seq);
            }
            if end_of_batch && seq % 97 == 0 {
                let on_disk = reader.records(seq).unwrap().next();
                match on_disk {
                    Some(Ok(record)) => {
                        assert_eq!(record.sequence, seq);
                        let decoded: Order = Postcard.decode(&record.payload).unwrap();
                        assert_eq!(&decoded, o);
                    }
                    _ => e.lock().unwrap().push(-seq - 1),
                }
            }
        })
        .build();
    for i in 0..n {
        producer.publish(|o| *o = Order::new(1, i)).unwrap();
    }
    producer.shutdown().unwrap();
    let early = early.lock().unwrap();
    assert!(
        early.is_empty(),
        "{} events seen after the journal before they were durable (negative: \
         missing from the file), the first: {:?}",
        early.len(),
        &early[..early.len().min(8)]
    );
    assert_eq!(read_all(&journal).len() as u64, n);
    let stats = journal.stats();
    match sync {
        SyncPolicy::Never => assert_eq!(stats.syncs, 0),
        _ => assert!(stats.syncs >= 1, "{stats:?}"),
    }
}

#[test]
fn stages_after_the_journal_see_only_durable_events_under_every_strategy() {
    bounded(120, || {
        durable_before_downstream(Blocking, SyncPolicy::EveryBatch);
        durable_before_downstream(Yielding::default(), SyncPolicy::EveryBatch);
        durable_before_downstream(Sleeping::default(), SyncPolicy::Never);
        durable_before_downstream(
            PhasedBackoff::default(),
            SyncPolicy::Interval(Duration::from_millis(2)),
        );
        if ringbus::available_cores().len() >= 2 {
            durable_before_downstream(BusySpin, SyncPolicy::EveryBatch);
        }
    });
}

#[test]
fn every_batch_syncs_once_per_batch_at_most() {
    bounded(30, || {
        let dir = dir();
        let journal = Journal::open(dir.path()).unwrap();
        let mut producer = ringbus::single_producer(1024, Order::default, Blocking)
            .journal_to(journal.writer(Postcard, JournalOptions::default()).unwrap())
            .build();
        // Ten batches of 100, each published at once and drained before
        // the next: at most one sync per batch (the journal batches them).
        for b in 0..10 {
            producer
                .batch_publish(100, |slots| {
                    for (i, o) in slots.enumerate() {
                        *o = Order::new(0, b * 100 + i as u64);
                    }
                })
                .unwrap();
            while journal.durable_sequence() < (b as Sequence + 1) * 100 - 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        producer.shutdown().unwrap();
        let stats = journal.stats();
        assert!((10..=20).contains(&stats.syncs), "{stats:?}");
        assert_eq!(stats.records, 1000);
    });
}

#[test]
fn interval_policy_syncs_an_idle_journal() {
    bounded(30, || {
        let dir = dir();
        let journal = Journal::open(dir.path()).unwrap();
        let options =
            JournalOptions::default().sync(SyncPolicy::Interval(Duration::from_millis(20)));
        let mut producer = ringbus::single_producer(64, Order::default, Blocking)
            .journal_to(journal.writer(Postcard, options).unwrap())
            .build();
        producer.publish(|o| *o = Order::new(0, 0)).unwrap();
        while journal.durable_sequence() < 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Written at once, synced within the interval though nothing else
        // arrives (the stage's idle timeout).
        let waited = std::time::Instant::now();
        while journal.stats().syncs == 0 {
            assert!(waited.elapsed() < Duration::from_secs(10), "never synced");
            std::thread::sleep(Duration::from_millis(5));
        }
        producer.shutdown().unwrap();
    });
}

#[test]
fn segments_roll_at_their_size_and_old_ones_can_be_deleted() {
    bounded(30, || {
        let dir = dir();
        let options = JournalOptions::default().segment_bytes(1024);
        write_orders(dir.path(), 500, options.clone());
        let files = segment_files(dir.path());
        assert!(files.len() > 10, "{} segments", files.len());
        for file in &files[..files.len() - 1] {
            let len = fs::metadata(file).unwrap().len();
            assert!(
                (1024..1024 + 64).contains(&len),
                "{} is {len} bytes",
                file.display()
            );
        }
        // A reader deletes nothing.
        assert!(matches!(
            Journal::open_read_only(dir.path())
                .unwrap()
                .delete_before(250),
            Err(JournalError::ReadOnly)
        ));
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.first_sequence(), 0);
        assert_eq!(journal.next_sequence(), 500);
        // A snapshot at 250: whole segments below it go, the one holding
        // 250 stays.
        let deleted = journal.delete_before(250).unwrap();
        assert!(deleted > 0);
        let first = journal.first_sequence();
        drop(journal);
        // A second open while the first holds the directory is refused;
        // reading alone is not.
        let journal = Journal::open(dir.path()).unwrap();
        assert!(matches!(
            Journal::open(dir.path()),
            Err(JournalError::Locked { .. })
        ));
        assert_eq!(
            Journal::open_read_only(dir.path())
                .unwrap()
                .first_sequence(),
            first
        );
        assert_eq!(journal.first_sequence(), first, "the same after reopening");
        assert!(first > 0 && first <= 250, "first {first}");
        assert!(matches!(
            journal.records(0),
            Err(JournalError::BeforeStart { from: 0, first: f }) if f == first
        ));
        let events = read_all(&journal);
        assert_eq!(events.first().unwrap().0, first);
        assert_eq!(events.last().unwrap().0, 499);
        // Reading from the middle of a segment starts at that record.
        let from_300: Vec<_> = journal
            .records(300)
            .unwrap()
            .map(|r| r.unwrap().sequence)
            .collect();
        assert_eq!(from_300, (300..500).collect::<Vec<_>>());
        // And the writer goes on after reopening.
        drop(journal);
        write_orders(dir.path(), 10, options);
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.next_sequence(), 510);
        assert_eq!(read_all(&journal).last().unwrap().1, Order::new(0, 509));
    });
}

#[test]
fn a_torn_last_record_is_cut_off_and_the_numbering_goes_on() {
    bounded(30, || {
        for cut in [1u64, 7, 16, 20] {
            let dir = dir();
            write_orders(dir.path(), 100, JournalOptions::default());
            let file = segment_files(dir.path()).pop().unwrap();
            let len = fs::metadata(&file).unwrap().len();
            // A crash in the middle of the last record's write.
            OpenOptions::new()
                .write(true)
                .open(&file)
                .unwrap()
                .set_len(len - cut)
                .unwrap();
            let journal = Journal::open(dir.path()).unwrap();
            let recovery = journal.recovered().expect("a torn tail").clone();
            assert_eq!(recovery.file, file);
            assert_eq!(
                journal.next_sequence(),
                99,
                "record 99 was torn (cut {cut})"
            );
            assert_eq!(fs::metadata(&file).unwrap().len(), recovery.offset);
            drop(journal);
            write_orders(dir.path(), 5, JournalOptions::default());
            let events = read_all(&Journal::open(dir.path()).unwrap());
            assert_eq!(events.len(), 104);
            assert!(events
                .iter()
                .enumerate()
                .all(|(i, (s, _))| *s == i as Sequence));
        }
    });
}

/// A crash just after a roll made the next segment's file (its header not
/// written yet), with `delete_before` having deleted every segment before
/// it: the reopened journal goes on numbering from that segment's first
/// sequence. It started again at 0 (the empty segment removed, nothing
/// left to read the numbering from), and a replay from a snapshot point
/// then skipped events.
#[test]
fn a_crash_after_a_roll_and_a_delete_before_keeps_the_numbering() {
    bounded(30, || {
        let dir = dir();
        let options = JournalOptions::default().segment_bytes(1024);
        write_orders(dir.path(), 100, options.clone());
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.next_sequence(), 100);
        // The roll's new file, empty: the process died before writing its
        // header. Then a snapshot at 100 deletes everything before it.
        fs::File::create(dir.path().join(format!("{:020}.rbj", 100))).unwrap();
        journal.delete_before(100).unwrap();
        drop(journal);
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.next_sequence(), 100, "the numbering went back");
        assert_eq!(journal.first_sequence(), 100);
        drop(journal);
        write_orders(dir.path(), 5, options);
        let journal = Journal::open(dir.path()).unwrap();
        let sequences: Vec<Sequence> = read_all(&journal).iter().map(|(s, _)| *s).collect();
        assert_eq!(sequences, (100..105).collect::<Vec<_>>());
    });
}

#[test]
fn garbage_after_the_last_record_is_a_torn_write() {
    let dir = dir();
    write_orders(dir.path(), 50, JournalOptions::default());
    let file = segment_files(dir.path()).pop().unwrap();
    // A record header whose payload never made it (zeros, as a crash after
    // the file grew but before its data was written can leave).
    let mut f = OpenOptions::new().append(true).open(&file).unwrap();
    f.write_all(&[1, 2, 3, 4, 40, 0, 0, 0]).unwrap();
    f.write_all(&[0u8; 48]).unwrap();
    drop(f);
    let journal = Journal::open(dir.path()).unwrap();
    assert_eq!(journal.recovered().unwrap().bytes_cut, 56);
    assert_eq!(journal.next_sequence(), 50);
    assert_eq!(read_all(&journal).len(), 50);
}

/// A bus of the journal (with `codec`) and, after it, a stage counting the
/// events it sees.
fn journal_then_count<C: Codec<Order>>(
    journal: &Journal,
    codec: C,
) -> (ringbus::SingleProducer<Order, Blocking>, Arc<AtomicU64>) {
    let seen = Arc::new(AtomicU64::new(0));
    let s = Arc::clone(&seen);
    let producer = ringbus::single_producer(64, Order::default, Blocking)
        .journal_to(journal.writer(codec, JournalOptions::default()).unwrap())
        .and_then()
        .handle_events_with(move |_: &Order, _: Sequence, _: bool| {
            s.fetch_add(1, Ordering::Relaxed);
        })
        .build();
    (producer, seen)
}

/// The first sequence of a segment, from its file name.
fn first_sequence_of(segment: &Path) -> Sequence {
    segment
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Flips one byte of record `index`'s payload in `file`.
fn damage_record(file: &Path, index: usize) -> u64 {
    let mut bytes = fs::read(file).unwrap();
    let mut at = 24usize;
    for _ in 0..index {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 16 + len;
    }
    bytes[at + 17] ^= 0x55;
    fs::write(file, bytes).unwrap();
    at as u64
}

#[test]
fn damage_in_the_middle_is_an_error_naming_file_and_offset_and_the_records_before_stay_readable() {
    let dir = dir();
    write_orders(dir.path(), 100, JournalOptions::default());
    let file = segment_files(dir.path()).pop().unwrap();
    let offset = damage_record(&file, 40);
    let journal = Journal::open(dir.path()).unwrap();
    assert!(journal.recovered().is_none(), "damage is not a torn tail");
    let mut records = journal.records(0).unwrap();
    for i in 0..40 {
        assert_eq!(records.next().unwrap().unwrap().sequence, i);
    }
    match records.next() {
        Some(Err(JournalError::Corrupt {
            file: f,
            offset: o,
            reason,
        })) => {
            assert_eq!((f, o), (file.clone(), offset));
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("expected damage at record 40, got {other:?}"),
    }
    assert!(records.next().is_none());
    // No writer appends after damage.
    let err = journal
        .writer::<Order, _>(Postcard, JournalOptions::default())
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&file.display().to_string()) && message.contains(&offset.to_string()),
        "{message}"
    );
    // Nor is the file changed.
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        fs::read(&file).unwrap().len() as u64
    );
}

#[test]
fn damage_in_an_earlier_segment_shows_when_reading_reaches_it() {
    let dir = dir();
    write_orders(
        dir.path(),
        200,
        JournalOptions::default().segment_bytes(1024),
    );
    let files = segment_files(dir.path());
    let offset = damage_record(&files[1], 2);
    let journal = Journal::open(dir.path()).unwrap();
    let first_of_second = first_sequence_of(&files[1]);
    let read: Vec<_> = journal.records(0).unwrap().collect();
    let (ok, err): (Vec<_>, Vec<_>) = read.into_iter().partition(Result::is_ok);
    assert_eq!(ok.len() as Sequence, first_of_second + 2);
    match &err[..] {
        [Err(JournalError::Corrupt {
            file, offset: o, ..
        })] => {
            assert_eq!((file, *o), (&files[1], offset));
        }
        other => panic!("{other:?}"),
    }
    // A missing segment in the middle is a gap, also named.
    fs::remove_file(&files[3]).unwrap();
    let journal = Journal::open_read_only(dir.path()).unwrap();
    let first_of_third = first_sequence_of(&files[2]);
    let after: Vec<_> = journal.records(first_of_third).unwrap().collect();
    assert!(
        matches!(after.last(), Some(Err(JournalError::Corrupt { file, .. })) if *file == files[4]),
        "{after:?}"
    );
}

#[test]
fn replay_rebuilds_state_then_live_events_continue_the_numbering() {
    bounded(60, || {
        let dir = dir();
        let mut expected_total = 0u64;
        for run in 0..3u64 {
            let journal = Journal::open(dir.path()).unwrap();
            let total = Arc::new(AtomicU64::new(0));
            let t = Arc::clone(&total);
            let mut producer = ringbus::multi_producer(16, Order::default, Blocking)
                .journal_to(
                    journal
                        .writer(Postcard, JournalOptions::default().segment_bytes(4096))
                        .unwrap(),
                )
                .and_then()
                .handle_events_with(move |o: &Order, _: Sequence, _: bool| {
                    t.fetch_add(o.n, Ordering::Relaxed);
                })
                .build();
            let replayed = journal
                .replay_into(&mut producer, Postcard, journal.first_sequence())
                .unwrap();
            assert_eq!(replayed.events, run * 300);
            assert_eq!(
                (replayed.first, replayed.last),
                (0, run as Sequence * 300 - 1)
            );
            // A second replay, or one after live traffic, is refused.
            assert!(matches!(
                journal.replay_into(&mut producer, Postcard, 0),
                Err(JournalError::ReplayAfterLive { .. })
            ));
            for i in 0..300 {
                let n = run * 300 + i;
                producer.publish(|o| *o = Order::new(2, n)).unwrap();
                expected_total += n;
            }
            producer.shutdown().unwrap();
            assert_eq!(total.load(Ordering::Relaxed), expected_total, "run {run}");
            assert_eq!(
                journal.stats().records,
                300,
                "replayed events are not written again"
            );
        }
        let events = read_all(&Journal::open(dir.path()).unwrap());
        assert_eq!(events.len(), 900);
        for (i, (seq, order)) in events.iter().enumerate() {
            assert_eq!((*seq, order.n), (i as Sequence, i as u64));
        }
    });
}

#[test]
fn replay_from_a_snapshot_point_and_a_bus_without_a_journal_stage() {
    let dir = dir();
    write_orders(
        dir.path(),
        400,
        JournalOptions::default().segment_bytes(2048),
    );
    let journal = Journal::open(dir.path()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let mut producer = ringbus::single_producer(4, Order::default, Yielding::default())
        .handle_events_with(move |o: &Order, _: Sequence, _: bool| s.lock().unwrap().push(o.n))
        .build();
    let replayed = journal.replay_into(&mut producer, Postcard, 350).unwrap();
    assert_eq!(
        (replayed.events, replayed.first, replayed.last),
        (50, 350, 399)
    );
    producer.shutdown().unwrap();
    assert_eq!(*seen.lock().unwrap(), (350..400).collect::<Vec<_>>());
}

#[test]
fn replay_after_a_live_publish_is_refused() {
    let dir = dir();
    write_orders(dir.path(), 10, JournalOptions::default());
    let journal = Journal::open(dir.path()).unwrap();
    let mut producer = ringbus::single_producer(16, Order::default, Blocking)
        .journal_to(journal.writer(Postcard, JournalOptions::default()).unwrap())
        .build();
    producer.publish(|o| *o = Order::new(0, 10)).unwrap();
    let err = journal.replay_into(&mut producer, Postcard, 0).unwrap_err();
    assert!(
        matches!(err, JournalError::ReplayAfterLive { published: 1 }),
        "{err}"
    );
    assert!(err.to_string().contains("fresh bus"));
    assert!(matches!(
        journal.writer::<Order, _>(Postcard, JournalOptions::default()),
        Err(JournalError::WriterTaken)
    ));
    producer.shutdown().unwrap();
    assert_eq!(
        Journal::open_read_only(dir.path()).unwrap().next_sequence(),
        11
    );
}

#[test]
fn a_journal_stage_may_not_skip_or_dead_letter() {
    let dir = dir();
    let journal = Journal::open(dir.path()).unwrap();
    let built = ringbus::single_producer(16, Order::default, Blocking)
        .on_failure(FailurePolicy::skip())
        .journal_to(journal.writer(Postcard, JournalOptions::default()).unwrap())
        .try_build();
    match built {
        Err(e @ BuildError::JournalPolicy { .. }) => {
            assert!(e.to_string().contains("halt"), "{e}");
        }
        other => panic!("expected JournalPolicy, got {other:?}"),
    }
}

/// A codec that fails on one event.
struct Picky;
impl Codec<Order> for Picky {
    fn encode(&mut self, event: &Order, out: &mut Vec<u8>) -> Result<(), BoxError> {
        if event.n == 13 {
            return Err("unlucky order".into());
        }
        Postcard.encode(event, out)
    }
    fn decode(&mut self, bytes: &[u8]) -> Result<Order, BoxError> {
        Postcard.decode(bytes)
    }
}

#[test]
fn an_encoding_error_halts_the_bus_and_the_events_before_it_are_durable() {
    bounded(30, || {
        let dir = dir();
        let journal = Journal::open(dir.path()).unwrap();
        let (mut producer, seen) = journal_then_count(&journal, Picky);
        let mut halted = false;
        for n in 0..1000 {
            if let Err(PublishError::Halted) = producer.publish(|o| *o = Order::new(0, n)) {
                halted = true;
                break;
            }
        }
        let report = failed_report(producer.shutdown());
        assert!(halted || report.stages[0].failure.is_some());
        let failure = report.stages[0]
            .failure
            .as_ref()
            .expect("the journal stage failed");
        let error = failure
            .downcast_ref::<JournalError>()
            .expect("a JournalError");
        assert!(
            matches!(error, JournalError::Encode { sequence: 13, .. }),
            "{error}"
        );
        assert_eq!(
            seen.load(Ordering::Relaxed),
            13,
            "the stage after saw 0..13, durable"
        );
        assert!(report.stages[1].upstream_failed);
        let journal = Journal::open_read_only(dir.path()).unwrap();
        assert_eq!(journal.next_sequence(), 13);
    });
}

#[test]
fn a_full_disk_halts_the_bus_with_an_error_naming_the_file() {
    if !Path::new("/dev/full").exists() {
        panic!("/dev/full is needed to fill a disk on purpose");
    }
    bounded(30, || {
        let dir = dir();
        write_orders(dir.path(), 10, JournalOptions::default());
        let journal = Journal::open(dir.path()).unwrap();
        // The disk fills up under the writer: its segment is /dev/full
        // (reads as empty, every write fails with ENOSPC).
        let file = segment_files(dir.path()).pop().unwrap();
        fs::rename(&file, dir.path().join("saved")).unwrap();
        std::os::unix::fs::symlink("/dev/full", &file).unwrap();
        let (mut producer, seen) = journal_then_count(&journal, Postcard);
        let mut refused = None;
        for n in 10..10_000 {
            if let Err(e) = producer.publish(|o| *o = Order::new(0, n)) {
                refused = Some(e);
                break;
            }
        }
        assert_eq!(
            refused,
            Some(PublishError::Halted),
            "producers are refused, not hung"
        );
        let report = failed_report(producer.shutdown());
        let failure = report.stages[0]
            .failure
            .as_ref()
            .expect("the journal failed");
        let message = failure.to_string();
        assert!(
            message.contains("No space left on device")
                && message.contains(&file.display().to_string()),
            "{message}"
        );
        assert!(matches!(
            failure.downcast_ref::<JournalError>(),
            Some(JournalError::Io {
                op: "append to",
                ..
            })
        ));
        assert_eq!(
            seen.load(Ordering::Relaxed),
            0,
            "nothing after the journal saw an event it lost"
        );
    });
}

#[test]
fn a_writer_taking_over_a_segment_syncs_it_before_releasing_replayed_events() {
    // Records a killed process wrote but never synced are replayed: under
    // `EveryBatch` the stages after the journal may see them only once the
    // segment was synced by this run.
    let dir = dir();
    write_orders(
        dir.path(),
        10,
        JournalOptions::default().sync(SyncPolicy::Never),
    );
    let journal = Journal::open(dir.path()).unwrap();
    let durable_when_seen = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&durable_when_seen);
    let mut producer = ringbus::single_producer(16, Order::default, Blocking)
        .journal_to(journal.writer(Postcard, JournalOptions::default()).unwrap())
        .and_then()
        .handle_events_with(move |_: &Order, seq: Sequence, _: bool| seen.lock().unwrap().push(seq))
        .build();
    let replayed = journal.replay_into(&mut producer, Postcard, 0).unwrap();
    assert_eq!(replayed.events, 10);
    producer.shutdown().unwrap();
    assert_eq!(
        *durable_when_seen.lock().unwrap(),
        (0..10).collect::<Vec<_>>()
    );
    let stats = journal.stats();
    assert_eq!(
        (stats.records, stats.syncs),
        (0, 1),
        "no record written, one sync of the taken-over segment"
    );
}

#[test]
fn a_live_publish_during_replay_halts_the_bus_instead_of_losing_it() {
    bounded(60, || {
        let dir = dir();
        write_orders(dir.path(), 2_000, JournalOptions::default());
        let journal = Journal::open(dir.path()).unwrap();
        let (first_seen_tx, first_seen_rx) = std::sync::mpsc::channel();
        let producer = ringbus::multi_producer(16, Order::default, Blocking)
            .journal_to(journal.writer(Postcard, JournalOptions::default()).unwrap())
            .and_then()
            .handle_events_with(move |_: &Order, seq: Sequence, _: bool| {
                if seq == 0 {
                    let _ = first_seen_tx.send(());
                }
                // A slow stage: the replay of 2,000 events through a ring
                // of 16 takes well over the time the other handle needs.
                std::thread::sleep(Duration::from_micros(50));
            })
            .build();
        let other = producer.clone();
        let live = std::thread::spawn(move || {
            first_seen_rx.recv().unwrap();
            let _ = other.publish(|o| *o = Order::new(9, 0));
        });
        let mut replaying = producer.clone();
        let result = journal.replay_into(&mut replaying, Postcard, 0);
        live.join().unwrap();
        // Whichever saw it first (the replay, by the sequence it got, or the
        // journal stage, by an event past the replayed ones during the
        // replay) halted the bus.
        match result {
            Err(e @ JournalError::ReplayInterleaved { .. }) => {
                assert!(e.to_string().contains("after replay_into returned"), "{e}");
            }
            Err(JournalError::Publish(PublishError::Halted)) => {}
            other => panic!("expected ReplayInterleaved or a halt, got {other:?}"),
        }
        assert!(matches!(
            producer.publish(|_| {}),
            Err(PublishError::Halted)
        ));
        drop(replaying);
        if let Err(ShutdownError::StageFailed(report)) = producer.shutdown() {
            let failure = report.stages[0].failure.as_ref().unwrap();
            assert!(
                matches!(
                    failure.downcast_ref(),
                    Some(JournalError::ReplayInterleaved { .. })
                ),
                "{failure}"
            );
        }
        // The journal holds exactly what it held: nothing was written for
        // the interleaved events.
        assert_eq!(
            Journal::open_read_only(dir.path()).unwrap().next_sequence(),
            2_000
        );
    });
}

#[test]
fn a_replay_into_another_bus_leaves_the_journal_stage_alone() {
    // A projection rebuilt from the journal while the journal's own bus
    // takes live events: the live events are journaled, not taken for
    // replayed ones.
    bounded(30, || {
        let dir = dir();
        write_orders(dir.path(), 100, JournalOptions::default());
        let journal = Journal::open(dir.path()).unwrap();
        let mut live = ringbus::single_producer(64, Order::default, Blocking)
            .journal_to(journal.writer(Postcard, JournalOptions::default()).unwrap())
            .build();
        let count = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&count);
        let mut projection = ringbus::single_producer(64, Order::default, Blocking)
            .handle_events_with(move |_: &Order, _: Sequence, _: bool| {
                c.fetch_add(1, Ordering::Relaxed);
            })
            .build();
        let replayed = journal.replay_into(&mut projection, Postcard, 0).unwrap();
        assert_eq!(replayed.events, 100);
        for n in 100..150 {
            live.publish(|o| *o = Order::new(0, n)).unwrap();
        }
        live.shutdown().unwrap();
        projection.shutdown().unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 100);
        assert_eq!(journal.stats().records, 50);
        let events = read_all(&Journal::open_read_only(dir.path()).unwrap());
        assert_eq!(events.len(), 150);
        assert_eq!(events[149].1, Order::new(0, 149));
    });
}

/// A codec that panics on a record: reading and replaying say
/// `JournalError::Decode` for it (the codec's panic as the error), as for a
/// record it cannot decode, instead of passing the panic on; the events
/// before it come first.
#[test]
fn a_codec_panicking_on_a_record_is_a_decode_error() {
    struct PanicsAt5;
    impl Codec<Order> for PanicsAt5 {
        fn encode(&mut self, o: &Order, out: &mut Vec<u8>) -> Result<(), ringbus::BoxError> {
            Codec::<Order>::encode(&mut Postcard, o, out)
        }
        fn decode(&mut self, bytes: &[u8]) -> Result<Order, ringbus::BoxError> {
            let o: Order = Codec::<Order>::decode(&mut Postcard, bytes)?;
            assert_ne!(o, Order::new(0, 5), "planned panic");
            Ok(o)
        }
    }
    let dir = dir();
    write_orders(dir.path(), 10, JournalOptions::default());
    let journal = Journal::open(dir.path()).unwrap();
    let read: Vec<_> = journal.events(0, PanicsAt5).unwrap().collect();
    assert_eq!(read.len(), 6, "five events, then the error: {read:?}");
    match &read[5] {
        Err(JournalError::Decode {
            sequence: 5,
            source,
        }) => {
            assert!(
                source.to_string().contains("the codec panicked: "),
                "{source}"
            )
        }
        other => panic!("expected a decode error at 5, got {other:?}"),
    }
    let seen = Arc::new(AtomicU64::new(0));
    let s = Arc::clone(&seen);
    let mut producer = ringbus::single_producer(16, Order::default, Blocking)
        .handle_events_with(move |_: &Order, _: Sequence, _: bool| {
            s.fetch_add(1, Ordering::Relaxed);
        })
        .build();
    let err = journal
        .replay_into(&mut producer, PanicsAt5, 0)
        .unwrap_err();
    assert!(
        matches!(err, JournalError::Decode { sequence: 5, .. }),
        "{err}"
    );
    producer.shutdown().unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), 5);
}
