//! The errors of a shared-memory bus. Each names what happened and the fix.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A shared-memory bus could not be created, opened or joined.
#[derive(Debug)]
#[non_exhaustive]
pub enum IpcError {
    /// The options cannot make a bus (capacity, table sizes, event type).
    Config {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The operating system refused (permissions, no space, ...).
    Io {
        /// The bus's file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// `create` found a file of that name.
    AlreadyExists {
        /// The bus's file.
        path: PathBuf,
    },
    /// `open` (or `remove`) found no file of that name.
    NotFound {
        /// The bus's file.
        path: PathBuf,
    },
    /// The file is not a ringbus bus (or is one being created right now and
    /// not ready within a second).
    NotABus {
        /// The bus's file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// The file was made by another version of the layout.
    Version {
        /// The bus's file.
        path: PathBuf,
        /// The file's version.
        file: u32,
        /// This library's.
        ours: u32,
    },
    /// The bus differs from what this process asked for.
    Mismatch {
        /// The bus's file.
        path: PathBuf,
        /// Which parameter: `capacity`, `event size`, `event alignment`,
        /// `schema`, `producer kind` (1 single, 2 multi) or `file length`.
        field: &'static str,
        /// The file's value.
        file: u64,
        /// This process's.
        ours: u64,
    },
    /// Its creator died before the bus was ready: nobody can use it. Remove
    /// it with [`remove`](super::remove) and create it again.
    Stale {
        /// The bus's file.
        path: PathBuf,
        /// The creator's pid.
        creator: u32,
    },
    /// The single producer's place is held by a live process.
    ProducerBusy {
        /// Its pid.
        pid: u32,
    },
    /// A live consumer already holds this name.
    NameInUse {
        /// The name.
        name: String,
        /// The pid of the process that holds it.
        pid: u32,
    },
    /// Every entry of a table is held by a live (or recently dead) process.
    TableFull {
        /// `consumer` or `producer`.
        table: &'static str,
        /// The table's size.
        size: usize,
    },
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config { reason } => write!(f, "cannot make this shared-memory bus: {reason}"),
            Self::Io { path, op, source } => {
                write!(f, "{op} {}: {source}", path.display())?;
                if *op == "open" && source.kind() == std::io::ErrorKind::PermissionDenied {
                    write!(
                        f,
                        " (the bus's creator chose its file mode, Options::mode, 0600 by default: run as the creator's user, or create the bus with a mode that lets this user in, e.g. 0660 and a shared group)"
                    )?;
                }
                Ok(())
            }
            Self::AlreadyExists { path } => write!(
                f,
                "{} already exists: open it, or remove it first (ringbus::ipc::remove, or Options::remove with the options that name its directory) if no process uses it",
                path.display()
            ),
            Self::NotFound { path } => {
                write!(f, "{} does not exist: create the bus first", path.display())
            }
            Self::NotABus { path, reason } => {
                write!(f, "{} is not a ringbus bus: {reason}", path.display())
            }
            Self::Version { path, file, ours } => write!(
                f,
                "{} has layout version {file}, this library reads version {ours}: use one ringbus version on both sides",
                path.display()
            ),
            Self::Mismatch { path, field, file, ours } if *field == "file length" => write!(
                f,
                "{}: the file's length is {file} bytes (on disk, or as its header records it) where its layout takes {ours}: it was cut short, grown or overwritten since it was made; remove it (ringbus::ipc::remove) and create it again",
                path.display(),
            ),
            Self::Mismatch { path, field, file, ours } => write!(
                f,
                "{}: the bus's {field}{} is {file}, this process asked for {ours}: open it with the same event type and options as its creator",
                path.display(),
                if *field == "producer kind" { " (1 single, 2 multi)" } else { "" }
            ),
            Self::Stale { path, creator } => write!(
                f,
                "{}: its creator (pid {creator}) died before the bus was ready; remove it (ringbus::ipc::remove, or Options::remove with the options that name its directory) and create it again",
                path.display()
            ),
            Self::ProducerBusy { pid } => write!(
                f,
                "the single producer's place is held by live process {pid}: stop it first, or create the bus with multi_producer()"
            ),
            Self::NameInUse { name, pid } => write!(
                f,
                "consumer name {name:?} is held by live process {pid}: choose another name, or stop that consumer"
            ),
            Self::TableFull { table, size } => {
                write!(
                    f,
                    "all {size} {table} entries are in use: create the bus with a larger {table} table"
                )?;
                if *table == "consumer" {
                    f.write_str(
                        " (an entry a dead process left is free `reclaim_after` after it was \
                         first seen dead: retry then)",
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for IpcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A publish on a shared-memory bus did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpcPublishError {
    /// `try_publish`: the ring is full.
    Full,
    /// `publish_timeout`: no room within the time.
    Timeout,
    /// The bus was closed; or this producer's place was taken over by a
    /// process that found its owner dead (a handle used from a process
    /// other than the one that made it: a `fork`ed child, another pid
    /// namespace); or the bus carried all it can (a multi-producer bus's
    /// last lap, [`Options::new`](super::Options::new)), or a peer
    /// overwrote its claim counter (the module's Trust).
    Closed,
    /// A consumer gave this producer's claim up: it took longer than the
    /// bus's hole timeout between claim and publish. The events from
    /// `sequence` on were not delivered (a batch's earlier ones were);
    /// publish them again if they still matter.
    GivenUp {
        /// The first sequence given up.
        sequence: u64,
        /// How many events were lost: the last `lost` of the batch (those
        /// before `sequence` were published).
        lost: usize,
    },
    /// `batch_publish` asked for more slots than the ring has.
    BatchTooLarge {
        /// The size asked for.
        size: usize,
        /// The ring's capacity.
        capacity: usize,
    },
}

impl fmt::Display for IpcPublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => write!(f, "the ring is full: a consumer is behind"),
            Self::Timeout => write!(f, "no room in the ring within the timeout"),
            Self::Closed => write!(
                f,
                "the bus was closed (a closed bus stays closed: remove it and create it again to go on)"
            ),
            Self::GivenUp { sequence, lost } => write!(
                f,
                "{lost} event(s) from sequence {sequence} were given up by the consumers (claim held longer than the bus's hole timeout); publish them again"
            ),
            Self::BatchTooLarge { size, capacity } => write!(
                f,
                "a batch of {size} does not fit a ring of {capacity}: split it"
            ),
        }
    }
}

impl std::error::Error for IpcPublishError {}

/// Why a poll of a shared-memory bus returned no events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpcPollError {
    /// The bus was closed and this consumer handled every event.
    Closed,
    /// Nothing arrived within the timeout.
    Timeout,
    /// This consumer was overtaken: its entry was reclaimed (another
    /// process judged it dead) and producers reused slots it had not read.
    /// Join again to go on from the present.
    Lapped {
        /// The first sequence it could not read.
        sequence: u64,
    },
}

impl fmt::Display for IpcPollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => write!(f, "the bus was closed and every event was handled"),
            Self::Timeout => write!(f, "nothing arrived within the timeout"),
            Self::Lapped { sequence } => write!(
                f,
                "overtaken at sequence {sequence}: this consumer's entry was reclaimed; join again"
            ),
        }
    }
}

impl std::error::Error for IpcPollError {}
