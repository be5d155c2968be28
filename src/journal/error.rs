//! What goes wrong with a journal: [`JournalError`], naming the file (and
//! the offset) it concerns.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::PublishError;
use crate::fault::BoxError;
use crate::sequence::Sequence;

/// What went wrong with a journal. Each names the file (and the offset, for
/// damage) it concerns, except [`Decode`](Self::Decode), which names the
/// record's sequence (the record itself is intact: its checksum matched).
#[derive(Debug)]
#[non_exhaustive]
pub enum JournalError {
    /// A file operation failed (disk full, permission, read-only file
    /// system, …).
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("append to", "sync", "create segment", …).
        op: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// A record or header is damaged in the middle of the journal (a torn
    /// last record is not an error: [`Journal::open`](super::Journal::open) cuts it off).
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// The byte offset of the damaged record in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An event could not be encoded (it halts the journal stage).
    Encode {
        /// The journal sequence it would have had.
        sequence: Sequence,
        /// The codec's error.
        source: BoxError,
    },
    /// Another [`Journal::open`](super::Journal::open) (in this process or another) holds the
    /// directory: one process recovers and writes a journal at a time.
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// A journal opened with [`Journal::open_read_only`](super::Journal::open_read_only)
    /// takes no writer and deletes nothing.
    ReadOnly,
    /// While `replay_into` published, another handle of the bus published
    /// too, so replayed and live events are interleaved; the bus was
    /// halted (the journal stage could not tell them apart).
    ReplayInterleaved {
        /// The bus sequence the replay expected.
        expected: Sequence,
        /// The one it got.
        got: Sequence,
    },
    /// A record could not be decoded (a changed event type, or another
    /// codec), or the codec panicked on it (`the codec panicked: ..`).
    Decode {
        /// The record's sequence.
        sequence: Sequence,
        /// The codec's error.
        source: BoxError,
    },
    /// Records before `first` were deleted
    /// ([`Journal::delete_before`](super::Journal::delete_before)).
    BeforeStart {
        /// The sequence asked for.
        from: Sequence,
        /// The first sequence the journal holds.
        first: Sequence,
    },
    /// `replay_into` was called on a bus that already published events,
    /// or twice: replayed events must come first.
    ReplayAfterLive {
        /// Events the bus had published.
        published: u64,
    },
    /// A second writer for the same journal: one journal has one journal
    /// stage.
    WriterTaken,
    /// The bus refused the replayed events.
    Publish(PublishError),
}

impl JournalError {
    pub(crate) fn io(path: &Path, op: &'static str, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            op,
            source,
        }
    }
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, op, source } => {
                write!(f, "journal: could not {op} {}: {source}", path.display())
            }
            // Segments missing (a gap, or the start), or a bad `FIRST`
            // mark: the reason says what is wrong and what to do.
            Self::Corrupt { file, reason, .. }
                if reason.contains(" are missing") || file.ends_with("FIRST") =>
            {
                write!(f, "journal: {}: {reason}", file.display())
            }
            Self::Corrupt {
                file,
                offset,
                reason,
            } => write!(
                f,
                "journal: {} is damaged at byte {offset}: {reason}; the records before it \
                 are readable; restore the file from a replica or cut the journal there \
                 (a journal with damage takes no new writer)",
                file.display()
            ),
            Self::Encode { sequence, source } => {
                write!(f, "journal: could not encode event {sequence}: {source}")
            }
            Self::Locked { dir } => write!(
                f,
                "journal: {} is open elsewhere (a writer or a recovery holds it); close \
                 that one, or read with `Journal::open_read_only`",
                dir.display()
            ),
            Self::ReadOnly => write!(
                f,
                "journal: opened with `open_read_only`, which takes no writer and \
                 deletes nothing; use `Journal::open`"
            ),
            Self::ReplayInterleaved { expected, got } => write!(
                f,
                "journal: another handle published during replay_into (bus sequence {got} \
                 where the replay expected {expected}); the bus was halted: publish only \
                 after replay_into returned"
            ),
            Self::Decode { sequence, source } => write!(
                f,
                "journal: could not decode record {sequence}: {source}; read it with the \
                 codec and event type that wrote it"
            ),
            Self::BeforeStart { from, first } => write!(
                f,
                "journal: records before {first} were deleted, {from} asked for; start at \
                 `first_sequence()`"
            ),
            Self::ReplayAfterLive { published } => write!(
                f,
                "journal: replay_into on a bus that already published {published} events \
                 (or replayed once); replay into a fresh bus before any live publish"
            ),
            Self::WriterTaken => write!(
                f,
                "journal: this journal already has a writer; a journal has one journal stage"
            ),
            Self::Publish(e) => write!(f, "journal: the bus refused a replayed event: {e}"),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Decode { source, .. } | Self::Encode { source, .. } => Some(&**source),
            Self::Publish(e) => Some(e),
            _ => None,
        }
    }
}
