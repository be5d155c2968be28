//! Segments that go missing or are cut short between runs, and what the
//! errors name (found by an audit, 2026-12-06; each test fails on 5ea607b):
//!
//! - a missing or cut-short segment in the middle was reported as damage
//!   at byte 0 of the healthy segment after the gap, naming neither the
//!   missing file nor the cut-short one;
//! - a damaged record's error named its file and byte offset but not the
//!   sequence lost there;
//! - the oldest segment removed by hand (not by `delete_before`) was taken
//!   for a deleted one: reading and replaying from `first_sequence()`
//!   succeeded without its events.
#![cfg(all(feature = "journal", unix))]

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use ringbus::journal::{Journal, JournalError, JournalOptions, Postcard};
use ringbus::{Blocking, Sequence};

#[path = "common/journal.rs"]
mod fixtures;
use fixtures::*;

/// Orders in the journals below.
const N: u64 = 200;

/// Small segments: 200 orders make seven or so.
fn small() -> JournalOptions {
    JournalOptions::default().segment_bytes(1024)
}

/// A journal of `N` orders in small segments: its directory and segments.
fn segmented() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = dir();
    drop(write_orders(dir.path(), N, small()));
    let files = segment_files(dir.path());
    assert!(files.len() >= 5, "{} segments", files.len());
    (dir, files)
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

/// The offsets at which the records of a segment start, and its length.
fn record_offsets(segment: &Path) -> (Vec<u64>, u64) {
    let bytes = fs::read(segment).unwrap();
    let mut at = 24usize;
    let mut offsets = Vec::new();
    while at < bytes.len() {
        offsets.push(at as u64);
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 16 + len;
    }
    assert_eq!(at, bytes.len());
    (offsets, bytes.len() as u64)
}

/// The first error reading from `from`, if any.
fn first_error(journal: &Journal, from: Sequence) -> Option<JournalError> {
    match journal.records(from) {
        Err(e) => Some(e),
        Ok(records) => records.into_iter().find_map(Result::err),
    }
}

#[test]
fn a_missing_middle_segment_is_reported_by_its_name() {
    let (dir, files) = segmented();
    let missing = files[2].file_name().unwrap().to_str().unwrap().to_owned();
    fs::remove_file(&files[2]).unwrap();
    let journal = Journal::open_read_only(dir.path()).unwrap();
    let error = first_error(&journal, 0).expect("the gap is an error");
    assert!(
        matches!(error, JournalError::Corrupt { .. }),
        "a gap is damage: {error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&missing),
        "the records of {missing} are gone; the error should name it (the file to \
         restore), not only the healthy segment after the gap: {message}"
    );
}

/// A segment in the middle cut short at a record boundary (a
/// copy or restore that stopped early): reading reports the gap, but
/// names the healthy segment after it, at byte 0, as the damaged file.
#[test]
fn a_middle_segment_cut_short_is_the_file_named() {
    let (dir, files) = segmented();
    let (offsets, _) = record_offsets(&files[2]);
    assert!(offsets.len() > 4);
    OpenOptions::new()
        .write(true)
        .open(&files[2])
        .unwrap()
        .set_len(offsets[3])
        .unwrap();
    let journal = Journal::open_read_only(dir.path()).unwrap();
    let error = first_error(&journal, 0).expect("the gap is an error");
    let message = error.to_string();
    assert!(
        message.contains(&files[2].display().to_string()),
        "{} lost its last records (cut at byte {}); the error names another file: {message}",
        files[2].display(),
        offsets[3]
    );
}

/// A record damaged in the middle: the error names the file and the
/// byte offset (as documented) but not the record's sequence, which the
/// reader knows (the one it expected there) and which is what the user
/// needs to decide what to restore or replay from.
#[test]
fn a_damaged_record_is_named_by_its_sequence() {
    let (dir, files) = segmented();
    let segment = &files[2];
    let first = first_sequence_of(segment);
    let (offsets, len) = record_offsets(segment);
    let path = segment.display().to_string();
    // A record whose sequence shows nowhere else in today's message (the
    // path, its offset, the next record's offset).
    let (index, sequence) = (1..offsets.len() - 1)
        .map(|i| (i, first + i as Sequence))
        .find(|&(i, s)| {
            let s = s.to_string();
            !path.contains(&s)
                && !offsets[i].to_string().contains(&s)
                && !offsets.get(i + 1).unwrap_or(&len).to_string().contains(&s)
        })
        .expect("a record whose sequence is not in the path or the offsets");
    let mut bytes = fs::read(segment).unwrap();
    bytes[offsets[index] as usize + 17] ^= 0x55;
    fs::write(segment, bytes).unwrap();
    let journal = Journal::open_read_only(dir.path()).unwrap();
    let error = first_error(&journal, 0).expect("the damage is an error");
    match &error {
        JournalError::Corrupt { file, offset, .. } => {
            assert_eq!(
                (file, *offset),
                (segment, offsets[index]),
                "file and offset"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&sequence.to_string()),
        "record {sequence} is the one lost at byte {}; the error does not say which: {message}",
        offsets[index]
    );
}

/// A bus without a journal stage (a projection) that counts nothing.
fn projection() -> ringbus::SingleProducer<Order, Blocking> {
    ringbus::single_producer(64, Order::default, Blocking)
        .handle_events_with(|_: &Order, _: Sequence, _: bool| {})
        .build()
}

/// `first_sequence()` is "0 for a new journal; higher after
/// `delete_before`". Here `delete_before` was never called: the oldest
/// segment was removed by hand (a clean-up script, a mistaken `rm`). The
/// journal must not present the rest as complete: opening it may fail, or
/// reading and replaying from `first_sequence()` must report the missing
/// records. Both succeeded without the segment's events, and `records(0)`
/// said `BeforeStart` ("records before N were deleted ... start at
/// first_sequence()"), pointing the user at the silent skip.
#[test]
fn the_oldest_segment_deleted_by_hand_is_not_taken_for_delete_before() {
    let (dir, files) = segmented();
    let lost = first_sequence_of(&files[1]);
    fs::remove_file(&files[0]).unwrap();
    let Ok(journal) = Journal::open(dir.path()) else {
        return; // refused at open: the loss is reported
    };
    let first = journal.first_sequence();
    let read: Result<Vec<Sequence>, JournalError> = journal
        .events::<Order, _>(first, Postcard)
        .and_then(|events| events.map(|r| r.map(|(s, _)| s)).collect());
    assert!(
        read.is_err(),
        "events 0..{lost} went with {} (removed by hand; delete_before never ran), yet \
         first_sequence() says {first} and reading from it returns {} events and no error",
        files[0].display(),
        read.as_ref().map_or(0, Vec::len)
    );
    let mut producer = projection();
    let replayed = journal.replay_into(&mut producer, Postcard, first);
    producer.shutdown().unwrap();
    assert!(
        replayed.is_err(),
        "replay_into(first_sequence()) rebuilt state without events 0..{lost} and \
         reported success: {replayed:?}"
    );
}

/// What `delete_before` removed is not missing: reading from the new first
/// sequence succeeds, and so after opening the journal again.
#[test]
fn what_delete_before_removed_is_not_taken_for_missing() {
    let (dir, files) = segmented();
    let kept = first_sequence_of(&files[2]);
    let journal = Journal::open(dir.path()).unwrap();
    assert_eq!(journal.delete_before(kept).unwrap(), 2);
    assert_eq!(journal.first_sequence(), kept);
    let read = |journal: &Journal| -> Vec<Sequence> {
        journal
            .events::<Order, _>(journal.first_sequence(), Postcard)
            .unwrap()
            .map(|r| r.unwrap().0)
            .collect()
    };
    assert_eq!(read(&journal), (kept..N as Sequence).collect::<Vec<_>>());
    assert!(matches!(
        journal.records(0),
        Err(JournalError::BeforeStart { from: 0, first }) if first == kept
    ));
    drop(journal);
    let journal = Journal::open(dir.path()).unwrap();
    assert_eq!(journal.first_sequence(), kept);
    assert_eq!(read(&journal), (kept..N as Sequence).collect::<Vec<_>>());
    // And a segment removed by hand after that is missing again.
    drop(journal);
    fs::remove_file(&files[2]).unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    assert_eq!(journal.first_sequence(), kept);
    let Err(err) = journal.records(kept) else {
        panic!("the removed segment is missing");
    };
    assert!(err.to_string().contains("missing"), "{err}");
}
