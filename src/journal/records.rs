//! Reading a journal back: each [`Record`] in order ([`Records`]), or each
//! event decoded ([`Events`]).

use std::fmt;
use std::path::PathBuf;

use super::error::JournalError;
use super::format::{SegmentReader, Step};
use crate::codec::Codec;
use crate::sequence::Sequence;

/// One record of a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// Its journal sequence.
    pub sequence: Sequence,
    /// Its encoded event.
    pub payload: Vec<u8>,
}

/// The records of a journal, in order: see [`Journal::records`](super::Journal::records).
#[derive(Debug)]
pub struct Records {
    pub(super) segments: Vec<(Sequence, PathBuf)>,
    pub(super) next_segment: usize,
    pub(super) reader: Option<SegmentReader>,
    pub(super) from: Sequence,
    /// The sequence the next segment must start with.
    pub(super) expected: Option<Sequence>,
    /// The segment read before the current one, and its length.
    pub(super) prev: Option<(PathBuf, u64)>,
    pub(super) done: bool,
}

impl std::fmt::Debug for SegmentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentReader")
            .field("next", &self.next_sequence())
            .finish_non_exhaustive()
    }
}

impl Records {
    fn step(&mut self) -> Result<Option<Record>, JournalError> {
        let mut payload = Vec::new();
        loop {
            if self.reader.is_none() {
                let Some((first, path)) = self.segments.get(self.next_segment) else {
                    return Ok(None);
                };
                if let Some(expected) = self.expected {
                    if *first != expected {
                        let (prev, end) = self.prev.clone().unwrap_or_default();
                        let reason = if *first > expected {
                            format!(
                                "records {expected}..={} are missing before it: {} ends at \
                                 byte {end} after record {}, and no segment {} follows it \
                                 (deleted, or {} cut short)",
                                first - 1,
                                prev.display(),
                                expected - 1,
                                super::format::segment_name(expected),
                                prev.display()
                            )
                        } else {
                            format!(
                                "the segment starts at {first}, but {} already holds records \
                                 up to {} (a duplicated or restored segment)",
                                prev.display(),
                                expected - 1
                            )
                        };
                        return Err(JournalError::Corrupt {
                            file: path.clone(),
                            offset: 0,
                            reason,
                        });
                    }
                }
                let last = self.next_segment + 1 == self.segments.len();
                self.reader = Some(SegmentReader::open(path, *first, last)?);
                self.next_segment += 1;
            }
            let reader = self.reader.as_mut().expect("opened above");
            match reader.next(&mut payload)? {
                Step::Record(sequence) if sequence < self.from => {}
                Step::Record(sequence) => return Ok(Some(Record { sequence, payload })),
                Step::End => {
                    self.expected = Some(reader.next_sequence());
                    self.prev = Some((reader.path().to_owned(), reader.offset()));
                    self.reader = None;
                }
                Step::Torn(_) => return Ok(None),
            }
        }
    }
}

impl Iterator for Records {
    type Item = Result<Record, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let step = self.step();
        if !matches!(step, Ok(Some(_))) {
            self.done = true;
        }
        step.transpose()
    }
}

/// The decoded events of a journal, in order: see [`Journal::events`](super::Journal::events).
pub struct Events<E, C> {
    pub(super) records: Records,
    pub(super) codec: C,
    pub(super) _event: std::marker::PhantomData<fn() -> E>,
}

impl<E, C> fmt::Debug for Events<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl<E, C: Codec<E>> Iterator for Events<E, C> {
    type Item = Result<(Sequence, E), JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = match self.records.next()? {
            Ok(record) => record,
            Err(e) => return Some(Err(e)),
        };
        Some(
            match crate::codec::decode_catching(&mut self.codec, &record.payload) {
                Ok(event) => Ok((record.sequence, event)),
                Err(source) => {
                    self.records.done = true;
                    Err(JournalError::Decode {
                        sequence: record.sequence,
                        source,
                    })
                }
            },
        )
    }
}
