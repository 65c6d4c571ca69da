//! [`Recent`]: the latest few of a list that grows for as long as a process runs (the
//! orchestrator's recoveries, the nodes that ended), and how many there were in all, so that
//! neither memory nor the copies its readers take grow with its uptime.

use std::collections::VecDeque;

/// The last [`Recent::KEPT`] items pushed, oldest first, and the count of all pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recent<T> {
    kept: VecDeque<T>,
    total: u64,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Recent {
            kept: VecDeque::new(),
            total: 0,
        }
    }
}

impl<T> Recent<T> {
    /// How many items are kept.
    pub const KEPT: usize = 64;

    /// Add `item`, forgetting the oldest past [`Recent::KEPT`].
    pub fn push(&mut self, item: T) {
        if self.kept.len() == Self::KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back(item);
        self.total += 1;
    }

    /// How many were pushed in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// How many were pushed and are no longer kept.
    pub fn forgotten(&self) -> u64 {
        self.total - self.kept.len() as u64
    }

    /// The items kept, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.kept.iter()
    }

    /// The items kept that were pushed after the first `seen` (those a reader that saw `seen`
    /// in all has not seen yet, less any forgotten meanwhile), oldest first.
    pub fn since(&self, seen: u64) -> impl Iterator<Item = &T> {
        let skip = seen.saturating_sub(self.forgotten());
        self.kept
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_are_kept_and_all_are_counted() {
        let mut r = Recent::default();
        let n = Recent::<u64>::KEPT as u64 + 10;
        for i in 0..n {
            r.push(i);
        }
        assert_eq!((r.total(), r.forgotten()), (n, 10));
        assert_eq!(
            r.iter().copied().collect::<Vec<_>>(),
            (10..n).collect::<Vec<_>>()
        );
        // A reader that saw 3 has missed those forgotten: it is given what is kept.
        assert_eq!(r.since(3).next(), Some(&10));
        assert_eq!(
            r.since(n - 2).copied().collect::<Vec<_>>(),
            vec![n - 2, n - 1]
        );
        assert_eq!(r.since(n).count(), 0);
        assert_eq!(r.since(n + 5).count(), 0);
    }
}
