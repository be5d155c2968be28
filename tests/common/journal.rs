//! What the journal tests share: an order event, and writing, reading and
//! failing journals.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

use ringbus::journal::{Journal, JournalOptions, Postcard};
use ringbus::{Blocking, Sequence, ShutdownError, ShutdownReport};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub producer: u32,
    pub n: u64,
    pub note: String,
}

impl Order {
    pub fn new(producer: u32, n: u64) -> Self {
        Self {
            producer,
            n,
            note: format!("order {n} of {producer}"),
        }
    }
}

/// The report of a bus whose journal stage failed.
pub fn failed_report(shutdown: Result<ShutdownReport, ShutdownError>) -> ShutdownReport {
    match shutdown {
        Err(ShutdownError::StageFailed(report)) => report,
        other => panic!("expected a failed stage, got {other:?}"),
    }
}

pub fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn read_all(journal: &Journal) -> Vec<(Sequence, Order)> {
    journal
        .events::<Order, _>(journal.first_sequence(), Postcard)
        .expect("records")
        .collect::<Result<Vec<_>, _>>()
        .expect("every record reads")
}

pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rbj"))
        .collect();
    files.sort();
    files
}

/// Writes `n` orders through a journaling single-producer bus.
pub fn write_orders(dir: &Path, n: u64, options: JournalOptions) -> Journal {
    let journal = Journal::open(dir).unwrap();
    let mut producer = ringbus::single_producer(64, Order::default, Blocking)
        .journal_to(journal.writer(Postcard, options).unwrap())
        .build();
    let start = journal.next_sequence() as u64;
    for i in start..start + n {
        producer.publish(|o| *o = Order::new(0, i)).unwrap();
    }
    producer.shutdown().unwrap();
    journal
}
