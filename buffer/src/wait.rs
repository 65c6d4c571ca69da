//! What a held packet waits for: its [`Need`]s (one per wrapping group and partition), and the
//! [`Waiters`] index that finds, when a commit vector entry moves, exactly the packets it may free.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use ftc_chain::wire::CommitVector;
use ftc_stm::{LogKind, Partition, Seq};

/// One condition a packet waits for: `CV(group)[partition] ≥ min` (`strict`: `> min`).
///
/// A packet's needs are the logs of its message folded per (group, partition) to the strongest
/// one: an update log with `D[p]` needs `CV[p] > D[p]` (that is, ≥ D[p]+1, written without the
/// overflow), a read-only log `CV[p] ≥ D[p]`. The derived order is by strength: when `(min,
/// strict)` is not met, no larger need is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Need {
    pub min: Seq,
    pub strict: bool,
    /// Index of the wrapping group among the ring's wrapping groups (not the middlebox index).
    pub group: u8,
    pub partition: Partition,
}

impl Need {
    /// The need a log of `kind` with dependency `seq` puts on its partition; `None` for no-op.
    pub fn of(kind: LogKind, group: u8, partition: Partition, seq: Seq) -> Option<Need> {
        let strict = match kind {
            LogKind::Update => true,
            LogKind::ReadOnly => false,
            LogKind::Noop => return None,
        };
        Some(Need {
            min: seq,
            strict,
            group,
            partition,
        })
    }

    /// Whether `cv` (the commit vector of this need's group) meets it. A partition the vector
    /// does not have is never met (as in [`CommitVector::covers`]).
    pub fn met_by(&self, cv: &CommitVector) -> bool {
        cv.get(self.partition)
            .is_some_and(|s| s > self.min || (s == self.min && !self.strict))
    }

    /// Whether this need and `other` constrain the same entry.
    pub fn same_entry(&self, other: &Need) -> bool {
        self.group == other.group && self.partition == other.partition
    }

    /// The strength key: larger is harder to meet.
    fn key(&self) -> (Seq, bool) {
        (self.min, self.strict)
    }

    /// The least commit vector entry that meets this need (`min`, or one more when strict),
    /// beyond `u64` when none does.
    fn threshold(&self) -> u128 {
        u128::from(self.min.0) + u128::from(self.strict)
    }
}

/// Adds `need` to `needs`, keeping one need per (group, partition): the strongest.
pub(crate) fn add_need(needs: &mut Vec<Need>, need: Need) {
    match needs.iter_mut().find(|n| n.same_entry(&need)) {
        Some(n) if n.key() < need.key() => *n = need,
        Some(_) => {}
        None => needs.push(need),
    }
}

/// For every (wrapping group, partition), the packets parked on it, weakest need first.
///
/// Only a packet at the head of its flow is parked, on one need it still lacks, so each held
/// packet is in at most one heap, once: nothing here goes stale. When `CV(g)[p]` moves,
/// [`Waiters::wake`] pops exactly the packets parked on (g, p) that it now meets, in
/// O(woken · log parked).
#[derive(Debug)]
pub(crate) struct Waiters {
    partitions: usize,
    /// Index g · P + p.
    heaps: Vec<BinaryHeap<Parked>>,
}

/// A parked packet: its need's [`Need::threshold`] above its slot (32 bits), weakest need on
/// top; one integer, so that the heap's sifting compares one word pair, not a tuple.
type Parked = Reverse<u128>;

impl Waiters {
    pub fn new(groups: usize, partitions: usize) -> Self {
        Waiters {
            partitions,
            heaps: (0..groups * partitions)
                .map(|_| BinaryHeap::new())
                .collect(),
        }
    }

    /// Parks `slot` on `need`; false if the need's partition is out of range (it can never be
    /// met, so there is nothing to park on).
    pub fn park(&mut self, need: &Need, slot: u32) -> bool {
        let p = usize::from(need.partition.0);
        if p >= self.partitions {
            return false;
        }
        let i = usize::from(need.group) * self.partitions + p;
        match self.heaps.get_mut(i) {
            Some(heap) => {
                heap.push(Reverse(need.threshold() << 32 | u128::from(slot)));
                true
            }
            None => false,
        }
    }

    /// Moves into `woken` every slot parked on (`group`, `partition`) that `cv` now meets.
    pub fn wake(
        &mut self,
        group: u8,
        partition: Partition,
        cv: &CommitVector,
        woken: &mut Vec<u32>,
    ) {
        let i = usize::from(group) * self.partitions + usize::from(partition.0);
        // A partition the vector does not have meets nothing (as in [`Need::met_by`]).
        let (Some(heap), Some(at)) = (self.heaps.get_mut(i), cv.get(partition)) else {
            return;
        };
        let met = (u128::from(at.0) + 1) << 32;
        while let Some(&Reverse(parked)) = heap.peek() {
            if parked >= met {
                break;
            }
            heap.pop();
            // The low 32 bits are the slot.
            woken.push(parked as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftc_stm::DepEntry;

    fn cv(entries: &[(u16, u64)]) -> CommitVector {
        let mut cv = CommitVector::new(4);
        cv.merge(entries.iter().map(|&(p, s)| DepEntry {
            partition: Partition(p),
            seq: Seq(s),
        }));
        cv
    }

    /// §4.4.1: an update with D[p] is covered at CV[p] = D[p]+1, a read-only log at D[p]; the
    /// derived order is strength, so folding keeps the strongest.
    #[test]
    fn needs_agree_with_covers_and_fold_to_the_strongest() {
        let up = Need::of(LogKind::Update, 0, Partition(1), Seq(4)).unwrap();
        let ro = Need::of(LogKind::ReadOnly, 0, Partition(1), Seq(4)).unwrap();
        assert!(Need::of(LogKind::Noop, 0, Partition(1), Seq(4)).is_none());
        assert!(!up.met_by(&cv(&[(1, 4)])) && up.met_by(&cv(&[(1, 5)])));
        assert!(!ro.met_by(&cv(&[(1, 3)])) && ro.met_by(&cv(&[(1, 4)])));
        let far = Need::of(LogKind::ReadOnly, 0, Partition(9), Seq(0)).unwrap();
        assert!(!far.met_by(&cv(&[(1, 4)])));
        let max = Need::of(LogKind::Update, 0, Partition(1), Seq(u64::MAX)).unwrap();
        assert!(!max.met_by(&cv(&[(1, u64::MAX)])));

        let mut needs = Vec::new();
        add_need(&mut needs, ro);
        add_need(&mut needs, up);
        add_need(
            &mut needs,
            Need::of(LogKind::ReadOnly, 0, Partition(1), Seq(3)).unwrap(),
        );
        assert_eq!(needs, [up]);
    }

    #[test]
    fn wake_pops_exactly_the_met() {
        let mut w = Waiters::new(1, 4);
        for (slot, seq) in [(0u32, 5u64), (1, 2), (2, 3), (3, 9)] {
            let n = Need::of(LogKind::Update, 0, Partition(2), Seq(seq)).unwrap();
            assert!(w.park(&n, slot));
        }
        assert!(!w.park(
            &Need::of(LogKind::Update, 0, Partition(7), Seq(0)).unwrap(),
            9
        ));
        let mut woken = Vec::new();
        w.wake(0, Partition(2), &cv(&[(2, 4)]), &mut woken);
        assert_eq!(woken, [1, 2]);
        woken.clear();
        w.wake(0, Partition(2), &cv(&[(2, 4)]), &mut woken);
        assert!(woken.is_empty());
        w.wake(0, Partition(2), &cv(&[(2, 10)]), &mut woken);
        assert_eq!(woken, [0, 3]);
    }
}
