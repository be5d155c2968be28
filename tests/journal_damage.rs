//! The journal reader under every damage (issue #24, finding 5): a small
//! journal truncated at every byte, and every byte of every record flipped.
//! Forbidden: a record before the damage lost; damage followed anywhere by
//! a valid record cut off as if it were a torn tail (that deleted the valid
//! records after it, and a writer then reused their sequence numbers).
//! Required: such damage is `Corrupt`, naming the file and the damaged
//! record's offset, with no writer; only damage at the very end (the last
//! record) is cut as a torn tail.
#![cfg(feature = "journal")]

mod common;

use std::fs;
use std::path::Path;

use ringbus::journal::{Journal, JournalError, JournalOptions, Postcard};
use ringbus::Sequence;

#[path = "common/journal.rs"]
mod fixtures;
use fixtures::*;

const RECORDS: u64 = 12;

/// The offsets at which the records of a one-segment journal start, and
/// its length.
fn record_offsets(bytes: &[u8]) -> Vec<u64> {
    let mut at = 24usize;
    let mut offsets = Vec::new();
    while at < bytes.len() {
        offsets.push(at as u64);
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 16 + len;
    }
    assert_eq!(at, bytes.len());
    offsets
}

/// A fresh journal of `RECORDS` orders in one segment: its directory, the
/// segment's path and bytes.
fn pristine() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = dir();
    drop(write_orders(dir.path(), RECORDS, JournalOptions::default()));
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    let bytes = fs::read(&files[0]).unwrap();
    (dir, files[0].clone(), bytes)
}

/// The records readable from the start, until the end or an error.
fn readable(journal: &Journal) -> (Vec<Sequence>, Option<JournalError>) {
    let mut seen = Vec::new();
    for record in journal.records(0).unwrap() {
        match record {
            Ok(r) => seen.push(r.sequence),
            Err(e) => return (seen, Some(e)),
        }
    }
    (seen, None)
}

/// Opens the damaged journal in `dir` and checks the outcome for damage in
/// record `r` (starting at `at`); `what` names the damage.
fn check(dir: &Path, file: &Path, r: usize, at: u64, last: bool, damaged_len: u64, what: &str) {
    let journal = Journal::open(dir).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    let (seen, error) = readable(&journal);
    let before: Vec<Sequence> = (0..r as Sequence).collect();
    assert_eq!(seen, before, "{what}: the records before the damage");
    if last {
        // Damage at the very end: a torn tail, cut at the record.
        let recovery = journal
            .recovered()
            .unwrap_or_else(|| panic!("{what}: a torn tail, cut"));
        assert_eq!(recovery.offset, at, "{what}: cut where the record began");
        assert!(error.is_none(), "{what}: {error:?}");
        assert_eq!(journal.next_sequence(), r as Sequence, "{what}");
        assert_eq!(fs::metadata(file).unwrap().len(), at, "{what}");
    } else {
        assert!(
            journal.recovered().is_none(),
            "{what}: valid records follow: not a torn tail (cut at {:?})",
            journal.recovered().map(|r| r.offset)
        );
        match error {
            Some(JournalError::Corrupt {
                file: f, offset, ..
            }) => assert_eq!((f.as_path(), offset), (file, at), "{what}"),
            other => panic!("{what}: expected Corrupt at {at}, got {other:?}"),
        }
        assert_eq!(
            fs::metadata(file).unwrap().len(),
            damaged_len,
            "{what}: the file is left as it was"
        );
        let refused = journal.writer::<Order, _>(Postcard, JournalOptions::default());
        let message = refused
            .map(|_| ())
            .expect_err("no writer after damage")
            .to_string();
        assert!(
            message.contains(&file.display().to_string()) && message.contains(&at.to_string()),
            "{what}: {message}"
        );
    }
}

#[test]
fn every_flipped_byte_is_corrupt_or_a_torn_tail_and_loses_nothing() {
    let (dir, file, bytes) = pristine();
    let offsets = record_offsets(&bytes);
    assert_eq!(offsets.len() as u64, RECORDS);
    for (r, &at) in offsets.iter().enumerate() {
        let end = offsets.get(r + 1).copied().unwrap_or(bytes.len() as u64);
        for byte in at..end {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut damaged = bytes.clone();
                damaged[byte as usize] ^= flip;
                fs::write(&file, &damaged).unwrap();
                let what = format!("record {r} at {at}, byte {byte} ^ {flip:#x}");
                let last = r + 1 == offsets.len();
                check(dir.path(), &file, r, at, last, bytes.len() as u64, &what);
            }
        }
    }
}

#[test]
fn a_journal_cut_at_every_byte_keeps_every_whole_record() {
    let (dir, file, bytes) = pristine();
    let offsets = record_offsets(&bytes);
    for len in 24..=bytes.len() as u64 {
        fs::write(&file, &bytes[..len as usize]).unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let whole = offsets.iter().filter(|&&at| at < len).count();
        let (seen, error) = readable(&journal);
        assert!(error.is_none(), "cut at {len}: {error:?}");
        match offsets.iter().position(|&at| at == len) {
            // Cut between records: nothing torn.
            Some(r) => {
                assert!(journal.recovered().is_none(), "cut at {len}");
                assert_eq!(seen.len(), r, "cut at {len}");
            }
            None if len == bytes.len() as u64 => {
                assert_eq!(seen.len() as u64, RECORDS);
            }
            None => {
                // Inside record `whole - 1`: torn, cut where it began.
                let r = whole - 1;
                let recovery = journal.recovered().expect("a torn tail");
                assert_eq!(recovery.offset, offsets[r], "cut at {len}");
                assert_eq!(seen.len(), r, "cut at {len}: the whole records before");
            }
        }
        assert_eq!(
            seen,
            (0..seen.len() as Sequence).collect::<Vec<_>>(),
            "cut at {len}"
        );
        drop(journal);
    }
    // A header cut short: a segment never written, removed.
    for len in 0..24 {
        fs::write(&file, &bytes[..len]).unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(readable(&journal).0.len(), 0, "header cut at {len}");
        assert_eq!(journal.next_sequence(), 0);
        drop(journal);
    }
}
