//! The journal's sync thread: runs `fdatasync` while the journal stage
//! encodes the events that arrived meanwhile (a group commit that keeps the
//! stage's release synchronous: a batch is still released only once its own
//! sync returned).

use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

#[derive(Default)]
struct State {
    /// The file the next sync is for.
    file: Option<Arc<File>>,
    /// Syncs asked for, and done (`completed <= requested`).
    requested: u64,
    completed: u64,
    /// The first failed sync, kept: after a failed `fdatasync` the kernel
    /// may have dropped the dirty pages, so no later sync can vouch for them.
    error: Option<io::Error>,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The thread waits here for work.
    work: Condvar,
    /// The stage waits here for a sync to complete.
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned lock still
        // holds consistent counters.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running sync thread.
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// One sync asked for, to wait on.
#[derive(Clone, Copy)]
pub(crate) struct Ticket(u64);

impl Syncer {
    pub(crate) fn start(name: &str) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("{name}-sync"))
            .spawn(move || run(&theirs))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for `file` to be synced: everything written to it before this
    /// call is covered by the sync the ticket names.
    pub(crate) fn request(&self, file: &Arc<File>) -> Ticket {
        let mut state = self.shared.lock();
        state.file = Some(Arc::clone(file));
        state.requested += 1;
        let ticket = Ticket(state.requested);
        drop(state);
        self.shared.work.notify_one();
        ticket
    }

    /// True once the sync of `ticket` (or a later one) returned.
    pub(crate) fn is_done(&self, ticket: Ticket) -> bool {
        self.shared.lock().completed >= ticket.0
    }

    /// Waits for the sync of `ticket`.
    pub(crate) fn wait(&self, ticket: Ticket) -> io::Result<()> {
        let mut state = self.shared.lock();
        while state.completed < ticket.0 {
            state = self
                .shared
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        match &state.error {
            None => Ok(()),
            Some(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        while state.completed == state.requested && !state.stop {
            state = shared
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.completed == state.requested {
            return;
        }
        let target = state.requested;
        let file = state.file.clone();
        drop(state);
        // Covers every write made before the request(s) up to `target`.
        let result = file.map_or(Ok(()), |f| f.sync_data());
        state = shared.lock();
        if let Err(e) = result {
            state.error.get_or_insert(e);
        }
        state.completed = target;
        shared.done.notify_all();
    }
}
