//! The stream sequences an ingress acknowledged lately, kept as ranges, so
//! that a redelivery whose ack was lost on the way is recognised for as
//! long as the server may still send it (its ack wait and then some).
//!
//! Only sequences that follow each other exactly are merged into a range:
//! a gap may be a delivery that a dropped connection lost, which must not
//! be taken for one already handled.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Ranges beyond this many are forgotten oldest first (a consumer whose
/// sequences never follow each other, under a filter, at a high rate); a
/// redelivery they covered is then published again (at least once).
const MAX_RANGES: usize = 1 << 20;
/// Inserts between sweeps of expired ranges.
const SWEEP_EVERY: u32 = 4096;

#[derive(Debug)]
pub(crate) struct Acked {
    /// First sequence -> (last sequence, when the range last grew).
    ranges: BTreeMap<u64, (u64, Instant)>,
    keep: Duration,
    since_sweep: u32,
}

impl Acked {
    /// Remembers each acknowledged sequence for at least `keep`.
    pub(crate) fn new(keep: Duration) -> Self {
        Self {
            ranges: BTreeMap::new(),
            keep,
            since_sweep: 0,
        }
    }

    pub(crate) fn contains(&self, sequence: u64) -> bool {
        self.ranges
            .range(..=sequence)
            .next_back()
            .is_some_and(|(_, &(last, _))| last >= sequence)
    }

    pub(crate) fn insert(&mut self, sequence: u64, now: Instant) {
        let before = self.ranges.range(..=sequence).next_back();
        let start = match before {
            Some((_, &(last, _))) if last >= sequence => return,
            Some((&start, &(last, _))) if last + 1 == sequence => start,
            _ => sequence,
        };
        let mut last = sequence;
        if let Some((after_last, _)) = self.ranges.remove(&(sequence + 1)) {
            last = after_last;
        }
        self.ranges.insert(start, (last, now));
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            self.sweep(now);
        }
    }

    fn sweep(&mut self, now: Instant) {
        let keep = self.keep;
        self.ranges
            .retain(|_, &mut (_, grew)| now.saturating_duration_since(grew) <= keep);
        while self.ranges.len() > MAX_RANGES {
            self.ranges.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_only_what_follows_exactly() {
        let now = Instant::now();
        let mut acked = Acked::new(Duration::from_secs(60));
        for s in [1, 2, 3, 5, 4, 9] {
            acked.insert(s, now);
        }
        assert!((1..=5).all(|s| acked.contains(s)));
        assert!(!acked.contains(6), "a gap is not taken for handled");
        assert!(!acked.contains(8) && acked.contains(9) && !acked.contains(10));
        assert!(!acked.contains(0));
        assert_eq!(acked.ranges.len(), 2, "1..=5 and 9");
    }

    #[test]
    fn forgets_after_keep() {
        let start = Instant::now();
        let mut acked = Acked::new(Duration::from_secs(1));
        acked.insert(7, start);
        let later = start + Duration::from_secs(2);
        for s in 100..100 + u64::from(SWEEP_EVERY) {
            acked.insert(s, later);
        }
        assert!(!acked.contains(7));
        assert!(acked.contains(100) && acked.contains(99 + u64::from(SWEEP_EVERY)));
    }
}
