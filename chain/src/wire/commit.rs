//! [`CommitVector`]: a middlebox's dense per-partition commit vector, a monotone lower bound
//! merged from the sparse entries that piggyback messages carry.

use ftc_stm::{DepEntry, LogKind, Partition, Seq};

/// For each partition `p` of one middlebox, a sequence number `CV[p]` such that every update
/// transaction on `p` with a pre-increment sequence below `CV[p]` is known to be replicated.
///
/// Merging takes the element-wise max, so it is commutative, idempotent and never moves an entry
/// backwards: a lost, duplicated or reordered message cannot undo progress, and a message need
/// only carry the entries that changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommitVector {
    seqs: Vec<Seq>,
}

impl CommitVector {
    /// A vector of `partitions` zeros.
    pub fn new(partitions: usize) -> Self {
        CommitVector {
            seqs: vec![Seq(0); partitions],
        }
    }

    /// Number of partitions P.
    pub fn partitions(&self) -> usize {
        self.seqs.len()
    }

    /// `CV[p]`, or `None` if `p` ≥ P.
    pub fn get(&self, p: Partition) -> Option<Seq> {
        self.seqs.get(usize::from(p.0)).copied()
    }

    /// All entries, dense, in partition order.
    pub fn iter(&self) -> impl Iterator<Item = DepEntry> + Clone + '_ {
        self.seqs.iter().enumerate().map(|(p, &seq)| DepEntry {
            // P ≤ 65536 whenever entries come from the wire; larger vectors are never sent.
            partition: Partition(p as u16),
            seq,
        })
    }

    /// Merges sparse `entries` by element-wise max; returns whether any entry moved forward.
    ///
    /// Entries with partition ≥ P are ignored: the partition count comes from the chain spec,
    /// so such an entry can only come from a peer with another spec (which the orchestrator
    /// refuses at its join, by the spec's fingerprint) or a corrupted frame, and
    /// ignoring it keeps the vector a lower bound.
    pub fn merge(&mut self, entries: impl Iterator<Item = DepEntry>) -> bool {
        let mut moved = false;
        for e in entries {
            if let Some(s) = self.seqs.get_mut(usize::from(e.partition.0)) {
                if e.seq > *s {
                    *s = e.seq;
                    moved = true;
                }
            }
        }
        moved
    }

    /// Whether a log of `kind` with dependencies `deps` is known replicated: an update log with
    /// dependency `D` when `CV[p] ≥ D[p] + 1` for each of its entries, a read-only log when
    /// `CV[p] ≥ D[p]`, a no-op log always. A dependency on a partition ≥ P is never covered.
    pub fn covers(&self, kind: LogKind, mut deps: impl Iterator<Item = DepEntry>) -> bool {
        match kind {
            LogKind::Noop => true,
            LogKind::Update => deps.all(|d| self.get(d.partition).is_some_and(|cv| cv > d.seq)),
            LogKind::ReadOnly => deps.all(|d| self.get(d.partition).is_some_and(|cv| cv >= d.seq)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dep(p: u16, s: u64) -> DepEntry {
        DepEntry::new(p, s)
    }

    #[test]
    fn covers_by_kind() {
        let mut cv = CommitVector::new(4);
        assert!(cv.merge([dep(1, 3), dep(2, 5)].into_iter()));
        assert!(!cv.merge([dep(1, 2)].into_iter()));
        assert_eq!(cv.get(Partition(1)), Some(Seq(3)));
        assert_eq!(cv.get(Partition(4)), None);
        // Update with D[1] = 2: covered once CV[1] ≥ 3.
        assert!(cv.covers(LogKind::Update, [dep(1, 2)].into_iter()));
        assert!(!cv.covers(LogKind::Update, [dep(1, 3)].into_iter()));
        assert!(!cv.covers(LogKind::Update, [dep(1, 2), dep(2, 5)].into_iter()));
        // Read-only with D[1] = 3: covered when CV[1] ≥ 3.
        assert!(cv.covers(LogKind::ReadOnly, [dep(1, 3), dep(2, 5)].into_iter()));
        assert!(!cv.covers(LogKind::ReadOnly, [dep(1, 4)].into_iter()));
        assert!(cv.covers(LogKind::Noop, core::iter::empty()));
        // Out of range: never covered, and ignored by merge.
        assert!(!cv.covers(LogKind::ReadOnly, [dep(9, 0)].into_iter()));
        assert!(!cv.merge([dep(9, 1)].into_iter()));
        // u64::MAX as an update dependency cannot be covered (no overflow).
        assert!(!cv.covers(LogKind::Update, [dep(0, u64::MAX)].into_iter()));
    }

    const P: usize = 8;

    fn vector() -> impl Strategy<Value = Vec<DepEntry>> {
        proptest::collection::vec((0u16..P as u16 + 2, 0u64..20), 0..12)
            .prop_map(|v| v.into_iter().map(|(p, s)| dep(p, s)).collect())
    }

    fn merged(base: &CommitVector, parts: &[&[DepEntry]]) -> CommitVector {
        let mut cv = base.clone();
        for part in parts {
            cv.merge(part.iter().copied());
        }
        cv
    }

    proptest! {
        #[test]
        fn merge_commutes(base in vector(), a in vector(), b in vector()) {
            let base = merged(&CommitVector::new(P), &[&base]);
            prop_assert_eq!(merged(&base, &[&a, &b]), merged(&base, &[&b, &a]));
        }

        #[test]
        fn merge_is_idempotent(base in vector(), a in vector()) {
            let base = merged(&CommitVector::new(P), &[&base]);
            let once = merged(&base, &[&a]);
            let mut twice = once.clone();
            prop_assert!(!twice.merge(a.iter().copied()));
            prop_assert_eq!(twice, once);
        }

        #[test]
        fn merge_is_monotone(base in vector(), a in vector()) {
            let before = merged(&CommitVector::new(P), &[&base]);
            let after = merged(&before, &[&a]);
            for (b, a) in before.iter().zip(after.iter()) {
                prop_assert!(a.seq >= b.seq);
            }
            // And an update log covered before stays covered.
            for e in before.iter().filter(|e| e.seq.0 > 0) {
                let d = dep(e.partition.0, e.seq.0 - 1);
                prop_assert!(after.covers(LogKind::Update, [d].into_iter()));
            }
        }
    }
}
