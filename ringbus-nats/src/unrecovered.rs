//! Stream sequences whose delivery was lost and which the stream did not
//! give back when the ingress read them (a read answered "no message", and
//! the check that followed could not show the answer wrong: deleted since,
//! or a store error the server reports the same way). Their messages, if
//! they still exist, are delivered again after the ack wait; such a
//! redelivery must be published (late), never taken for one already
//! handled and acked unpublished.
//!
//! Kept as ranges. Past [`MAX_RANGES`], the two ranges closest to each
//! other are merged: the gap between them counts as unrecovered too, so a
//! redelivery there (an ack lost) is published again. Widening only ever
//! trades a loss for a duplicate.

use std::collections::BTreeMap;

/// Ranges beyond this many are merged with their nearest neighbour.
const MAX_RANGES: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct Unrecovered {
    /// First sequence -> last sequence (inclusive); never touching.
    ranges: BTreeMap<u64, u64>,
}

impl Unrecovered {
    #[cfg(test)]
    fn contains(&self, sequence: u64) -> bool {
        self.ranges
            .range(..=sequence)
            .next_back()
            .is_some_and(|(_, &last)| last >= sequence)
    }

    /// Adds `first..=last`, merging what overlaps or touches it.
    pub(crate) fn insert(&mut self, first: u64, last: u64) {
        if first > last {
            return;
        }
        let (mut first, mut last) = (first, last);
        if let Some((&start, &end)) = self.ranges.range(..=first).next_back() {
            if end.saturating_add(1) >= first {
                first = start;
                last = last.max(end);
                self.ranges.remove(&start);
            }
        }
        while let Some((&start, &end)) = self.ranges.range(first..).next() {
            if start > last.saturating_add(1) {
                break;
            }
            last = last.max(end);
            self.ranges.remove(&start);
        }
        self.ranges.insert(first, last);
        if self.ranges.len() > MAX_RANGES {
            self.merge_closest();
        }
    }

    /// Takes `sequence` out (its message was published); true if it was in.
    pub(crate) fn remove(&mut self, sequence: u64) -> bool {
        let Some((&start, &end)) = self.ranges.range(..=sequence).next_back() else {
            return false;
        };
        if end < sequence {
            return false;
        }
        self.ranges.remove(&start);
        if start < sequence {
            self.ranges.insert(start, sequence - 1);
        }
        if sequence < end {
            self.ranges.insert(sequence + 1, end);
        }
        true
    }

    /// Merges the two neighbouring ranges with the smallest gap.
    fn merge_closest(&mut self) {
        let mut best: Option<(u64, u64, u64)> = None;
        let mut previous: Option<(u64, u64)> = None;
        for (&start, &end) in &self.ranges {
            if let Some((p_start, p_end)) = previous {
                let gap = start - p_end;
                if best.is_none_or(|(g, ..)| gap < g) {
                    best = Some((gap, p_start, start));
                }
            }
            previous = Some((start, end));
        }
        if let Some((_, first, second)) = best {
            let end = self.ranges.remove(&second).expect("a range");
            self.ranges.insert(first, end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_what_touches_and_splits_on_remove() {
        let mut u = Unrecovered::default();
        u.insert(10, 12);
        u.insert(13, 13);
        u.insert(20, 25);
        u.insert(11, 21);
        assert_eq!(u.ranges.len(), 1);
        assert!((10..=25).all(|s| u.contains(s)));
        assert!(!u.contains(9) && !u.contains(26));
        assert!(u.remove(15));
        assert!(!u.remove(15));
        assert!(!u.contains(15) && u.contains(14) && u.contains(16));
        assert!(u.remove(10) && u.remove(25));
        assert_eq!(u.ranges, BTreeMap::from([(11, 14), (16, 24)]));
        assert!(!u.remove(100));
    }

    #[test]
    fn too_many_ranges_widen_never_shrink() {
        let mut u = Unrecovered::default();
        for i in 0..=MAX_RANGES as u64 {
            // Gaps of 9, except one of 1 between the first two.
            let start = if i == 0 { 0 } else { 2 + (i - 1) * 10 };
            u.insert(start, start);
        }
        assert_eq!(u.ranges.len(), MAX_RANGES);
        assert!(
            u.contains(0) && u.contains(1) && u.contains(2),
            "closest merged"
        );
        assert!((1..=MAX_RANGES as u64).all(|i| u.contains(2 + (i - 1) * 10)));
    }
}
