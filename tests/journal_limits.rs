//! The journal at the edges of its format: an event too large for a record
//! is refused when written (not acknowledged, then cut off at the next
//! open as a torn tail), and a segment named at the top of the sequence
//! range is an error at open, not an overflow.
#![cfg(all(feature = "journal", unix))]

use std::fs;

use ringbus::codec::FnCodec;
use ringbus::journal::{Journal, JournalOptions};
use ringbus::{Blocking, Sequence, ShutdownError};

/// An event that encodes to 1 GiB + 1 byte is over the record limit: the
/// journal stage fails at it with an error naming the limit (under the
/// default policy, a halt), so nothing after the journal sees it as
/// durable, and the reopened journal ends before it. (It was acknowledged
/// as durable, then cut off as a torn tail at the next open.)
#[test]
fn an_event_over_the_record_limit_is_refused_when_written() {
    const BIG: usize = (1 << 30) + 1;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let codec = FnCodec(
        |v: &u64, out: &mut Vec<u8>| -> Result<(), std::io::Error> {
            out.extend_from_slice(&v.to_le_bytes());
            if *v == 1 {
                out.resize(out.len() + BIG - 8, 0);
            }
            Ok(())
        },
        |bytes: &[u8]| -> Result<u64, std::io::Error> {
            let head: [u8; 8] = bytes
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or(std::io::ErrorKind::InvalidData)?;
            Ok(u64::from_le_bytes(head))
        },
    );
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s = std::sync::Arc::clone(&seen);
    let mut producer = ringbus::single_producer(16, || 0u64, Blocking)
        .journal_to(
            journal
                .writer::<u64, _>(codec, JournalOptions::default())
                .unwrap(),
        )
        .and_then()
        .handle_events_with(move |_: &u64, _: Sequence, _: bool| {
            s.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .build();
    producer.publish(|v| *v = 0).unwrap();
    let _ = producer.publish(|v| *v = 1);
    match producer.shutdown() {
        Err(ShutdownError::StageFailed(report)) => {
            let failure = report.stages[0]
                .failure
                .as_ref()
                .expect("the journal failed");
            assert!(failure.to_string().contains("record limit"), "{failure}");
        }
        other => panic!("expected the journal stage to fail: {other:?}"),
    }
    assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 1);
    drop(journal);
    let reopened = Journal::open(dir.path()).unwrap();
    assert!(reopened.recovered().is_none(), "{:?}", reopened.recovered());
    assert_eq!(reopened.next_sequence(), 1);
}

/// CRC32C (Castagnoli), bitwise, with the `crc32c` crate's `append`
/// meaning.
fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A segment whose name and header say its first sequence is `i64::MAX`
/// (a valid header CRC), with a torn record after it: `Journal::open`
/// answers (an error or a recovery), it does not panic on an overflow.
#[test]
fn a_segment_at_the_top_of_the_sequence_range_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let first = i64::MAX as u64;
    let mut header = [0u8; 24];
    header[..8].copy_from_slice(b"RBJOURNL");
    header[8..12].copy_from_slice(&1u32.to_le_bytes());
    header[16..24].copy_from_slice(&first.to_le_bytes());
    let crc = crc32c_append(crc32c_append(0, &header[..12]), &header[16..24]);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    let mut bytes = header.to_vec();
    // A torn record: a length that runs past the end, then a few bytes.
    let mut torn = [0u8; 32];
    torn[4..8].copy_from_slice(&0xFFFFu32.to_le_bytes());
    bytes.extend_from_slice(&torn);
    fs::write(dir.path().join(format!("{first:020}.rbj")), bytes).unwrap();
    let path = dir.path().to_owned();
    let opened = std::panic::catch_unwind(move || {
        Journal::open(&path)
            .map(|j| j.next_sequence())
            .map_err(|e| e.to_string())
    });
    assert!(
        opened.is_ok(),
        "Journal::open panicked on a sequence read from disk"
    );
}
