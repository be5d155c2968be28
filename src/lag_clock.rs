//! The clock that wakes async producers held by a lag-limited subscriber
//! (feature `async`).
//!
//! A thread waiting on a full ring wakes at least every quarter of the
//! shortest lag limit to evict a subscriber that held it too long
//! (`Bus::wait_for_free`). An async producer has no thread to time such a
//! wake, and nothing else signals it while the subscriber holding it does
//! not move (issue #24: with a hold longer than zero it waited for ever).
//! So a pending publish hands its waker here with a deadline: one thread
//! per process, started the first time it is needed, wakes each waker at
//! its deadline; the woken publish looks again and evicts. A waker whose
//! publish completed meanwhile is woken for nothing, which is harmless.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::task::Waker;
use std::time::Instant;

/// A waker and when to wake it, ordered by the deadline alone.
struct Due(Instant, Waker);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

/// Wakes `waker` at `deadline` (or soon after).
pub(crate) fn wake_at(deadline: Instant, waker: Waker) {
    static CLOCK: OnceLock<Mutex<Sender<Due>>> = OnceLock::new();
    let clock = CLOCK.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Due>();
        let spawned = std::thread::Builder::new()
            .name("ringbus-lag-clock".into())
            .spawn(move || run(&rx));
        if spawned.is_err() {
            // No thread: wake at once instead (the publish polls again
            // and again, which still evicts in time).
            return Mutex::new(mpsc::channel().0);
        }
        Mutex::new(tx)
    });
    let due = Due(deadline, waker);
    let sent = clock.lock().map(|tx| tx.send(due));
    if let Ok(Err(mpsc::SendError(due))) = sent {
        due.1.wake();
    }
}

fn run(rx: &mpsc::Receiver<Due>) {
    let mut heap: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    loop {
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse(due)| due.0 <= now) {
            if let Some(Reverse(due)) = heap.pop() {
                due.1.wake();
            }
        }
        let next = match heap.peek() {
            Some(Reverse(due)) => rx.recv_timeout(due.0.saturating_duration_since(now)),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(due) => heap.push(Reverse(due)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
