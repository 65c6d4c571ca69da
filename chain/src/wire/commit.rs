//! [`CommitVector`]: a middlebox's dense per-partition commit vector, a monotone lower bound
//! merged from the sparse entries that piggyback messages carry.

use ftc_stm::{DepEntry, LogKind, Partition, Seq};

/// For each partition `p` of one middlebox, a sequence number `CV[p]` such that every update
/// transaction on `p` with a pre-increment sequence below `CV[p]` is known to be replicated.
///
/// Merging takes the element-wise max, so it is commutative, idempotent and never moves an entry
/// backwards: a lost, duplicated or reordered message cannot undo progress, and a message need
/// only carry the entries that changed ([`CommitVector::changed_since`]).
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
    /// so such an entry can only come from a peer with another spec (which the epoch fences), and
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

    /// Merges a whole vector (the first `P` of its entries).
    pub fn merge_vector(&mut self, other: &CommitVector) -> bool {
        let mut moved = false;
        for (s, &o) in self.seqs.iter_mut().zip(&other.seqs) {
            if o > *s {
                *s = o;
                moved = true;
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

    /// The entries of `self` that are ahead of `older` (the sparse entries a message needs to
    /// carry); partitions `older` lacks count as 0 there.
    pub fn changed_since<'s>(
        &'s self,
        older: &'s CommitVector,
    ) -> impl Iterator<Item = DepEntry> + Clone + 's {
        self.iter()
            .filter(move |e| older.get(e.partition).unwrap_or_default() < e.seq)
    }
}
