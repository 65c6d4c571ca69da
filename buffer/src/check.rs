//! Test support: building piggyback messages, and an independent output-commit checker that
//! recomputes from every commit vector seen whether a released packet was covered.

use std::collections::BTreeMap;

use ftc_chain::ring::{MbIndex, Ring};
use ftc_chain::wire::{CommitVector, CvRepr, LogRepr, MessageRepr, MessageView};
use ftc_stm::{DepEntry, LogKind};

pub(crate) fn dep(p: u16, s: u64) -> DepEntry {
    DepEntry::new(p, s)
}

/// A log of middlebox `mb` with dependencies `deps` (partitions increasing).
pub(crate) fn log(mb: u8, kind: LogKind, deps: &[(u16, u64)]) -> LogRepr {
    LogRepr {
        middlebox: mb,
        kind,
        deps: deps.iter().map(|&(p, s)| dep(p, s)).collect(),
        writes: match kind {
            LogKind::Update => vec![(b"key".to_vec(), Some(b"value".to_vec()))],
            LogKind::ReadOnly | LogKind::Noop => Vec::new(),
        },
    }
}

/// A commit vector of `mb` with sparse `entries` (partitions increasing).
pub(crate) fn cv(mb: u8, entries: &[(u16, u64)]) -> CvRepr {
    CvRepr {
        middlebox: mb,
        entries: entries.iter().map(|&(p, s)| dep(p, s)).collect(),
    }
}

/// The encoded message of `logs` and `cvs`.
pub(crate) fn encode(logs: Vec<LogRepr>, cvs: Vec<CvRepr>) -> Vec<u8> {
    let repr = MessageRepr {
        flags: 0,
        logs,
        cvs,
    };
    repr.to_vec().expect("valid message")
}

pub(crate) fn view(bytes: &[u8]) -> MessageView<'_> {
    MessageView::new_checked(bytes).expect("valid message")
}

/// Output commit, recomputed: every commit vector the buffer was shown, merged per middlebox,
/// and a check of a release against them with [`CommitVector::covers`] (not the buffer's code).
#[derive(Debug)]
pub(crate) struct Oracle {
    ring: Ring,
    partitions: usize,
    cvs: BTreeMap<u8, CommitVector>,
}

impl Oracle {
    pub fn new(ring: Ring, partitions: usize) -> Self {
        Oracle {
            ring,
            partitions,
            cvs: BTreeMap::new(),
        }
    }

    /// Records the commit vectors of a message the buffer was given.
    pub fn saw(&mut self, msg: &MessageView<'_>) {
        for c in msg.commit_vectors() {
            let p = self.partitions;
            self.cvs
                .entry(c.middlebox())
                .or_insert_with(|| CommitVector::new(p))
                .merge(c.entries());
        }
    }

    /// `Err` naming the first log of a wrapping group in `msg` that the commit vectors seen so
    /// far do not cover: releasing that packet now would break output commit (§4.4.1).
    pub fn check_release(&self, msg: &MessageView<'_>) -> Result<(), String> {
        for l in msg.logs() {
            let j = l.middlebox();
            if usize::from(j) >= self.ring.middleboxes() || !self.ring.wraps(MbIndex(j)) {
                continue;
            }
            // A group no vector was seen for is at zero: CV[p] = 0 covers read-only logs at 0.
            let zero = CommitVector::new(self.partitions);
            let covered = self.cvs.get(&j).unwrap_or(&zero).covers(l.kind(), l.deps());
            if !covered && l.kind() != LogKind::Noop {
                return Err(format!(
                    "released before CV(m{j}) covers its {:?} log with deps {:?} (CV = {:?})",
                    l.kind(),
                    l.deps().collect::<Vec<_>>(),
                    self.cvs.get(&j)
                ));
            }
        }
        Ok(())
    }
}
