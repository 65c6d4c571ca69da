//! Logs that frames held by one lane carry, parked where the other lanes of the server, which
//! share its replica stores, can apply them first.
//!
//! With a counter shared by several worker threads at a head, consecutive logs of one partition
//! ride packets of different flows, so they reach different lanes of the next server. Without
//! the pool, each log waits for its lane to be woken after another lane applied the one before:
//! one thread handoff per log. With it, the lane that applies a log also applies the parked logs
//! that it unblocks, and the lanes that hold their frames find them applied when they look again.
//! The pool only speeds things up: a parked log is also still in its held frame, which is offered
//! again as before.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ftc_chain::ring::MbIndex;
use ftc_chain::wire::LogView;
use ftc_stm::{Partition, Seq};

use crate::Wait;

/// Logs parked at most per server: beyond, held frames wait for their own lane (memory stays
/// bounded whatever the senders do).
pub const PARKED_MAX: usize = 1024;

/// The parked logs of one server, shared by its lanes' replicas.
#[derive(Debug, Default)]
pub struct ParkedLogs {
    pool: Mutex<Pool>,
    /// How many are parked (read without the lock).
    len: AtomicUsize,
}

/// The parked logs, in the order they were parked, and where each is by the hash of its bytes.
///
/// A held frame offered again parks its logs again (they are parked already: only what they
/// wait for changes), so finding a log must not cost a look at every one: a tail whose hold
/// queue had filled (30,000 frames over two lanes, offered again after each apply) spent 60 %
/// of its time comparing bytes when the pool was searched from the front.
#[derive(Debug, Default)]
struct Pool {
    /// Each log with what it waits for and the hash of its bytes.
    logs: Vec<Parked>,
    /// Where the logs are by hash (hashes that collide: the first; the others are looked for
    /// one by one).
    at: HashMap<u64, usize>,
    hasher: RandomState,
}

#[derive(Debug)]
struct Parked {
    wait: Wait,
    hash: u64,
    bytes: Box<[u8]>,
}

/// Bytes of a log that its hash covers: its header and first dependency, which tell the logs
/// of a group apart (two that agree there are told apart by their bytes, at a cost).
const HASHED: usize = 32;

impl Pool {
    /// The hash of a log's `bytes`.
    fn hash(&self, bytes: &[u8]) -> u64 {
        self.hasher.hash_one(&bytes[..bytes.len().min(HASHED)])
    }

    /// Where the log of `bytes` (hashed `hash`) is parked, if it is.
    fn find(&self, hash: u64, bytes: &[u8]) -> Option<usize> {
        let &i = self.at.get(&hash)?;
        if *self.logs[i].bytes == *bytes {
            return Some(i);
        }
        self.logs
            .iter()
            .position(|l| l.hash == hash && *l.bytes == *bytes)
    }

    /// Where each log is, again (the logs moved).
    fn reindex(&mut self) {
        self.at.clear();
        for (i, l) in self.logs.iter().enumerate() {
            self.at.entry(l.hash).or_insert(i);
        }
    }
}

impl ParkedLogs {
    /// Whether no log is parked.
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Drops every parked log (a new epoch: they may be ones the recovery rolls back).
    pub(crate) fn clear(&self) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.logs.clear();
            pool.at.clear();
            self.len.store(0, Ordering::Release);
        }
    }

    /// Parks `log`, waiting for `wait` (if it is parked already, it now waits for `wait`), unless
    /// the pool is full.
    pub(crate) fn park(&self, wait: Wait, log: &LogView<'_>) {
        let Ok(mut pool) = self.pool.lock() else {
            return;
        };
        let bytes = log.as_bytes();
        let hash = pool.hash(bytes);
        if let Some(i) = pool.find(hash, bytes) {
            pool.logs[i].wait = wait;
        } else if pool.logs.len() < PARKED_MAX {
            let i = pool.logs.len();
            pool.at.entry(hash).or_insert(i);
            pool.logs.push(Parked {
                wait,
                hash,
                bytes: bytes.into(),
            });
        }
        self.len.store(pool.logs.len(), Ordering::Release);
    }

    /// Whether a log of `mb`'s group is parked (frames of the group are held).
    pub(crate) fn holds(&self, mb: MbIndex) -> bool {
        !self.is_empty()
            && self
                .pool
                .lock()
                .is_ok_and(|pool| pool.logs.iter().any(|l| l.wait.middlebox == mb))
    }

    /// The dependencies of every parked log of `mb`'s group, to `held`: logs the server holds,
    /// which a retransmission request need not bring again.
    pub(crate) fn held(&self, mb: MbIndex, mut held: impl FnMut(Partition, Seq)) {
        let Ok(pool) = self.pool.lock() else {
            return;
        };
        let parked = pool.logs.iter().filter(|l| l.wait.middlebox == mb);
        for log in parked.filter_map(|l| LogView::new_checked(&l.bytes).ok()) {
            for d in log.deps() {
                held(d.partition, d.seq);
            }
        }
    }

    /// Offers every parked log to `step`, again and again while that frees more. `step` says
    /// what the log waits for now, or `None` when it is done with it (applied, a duplicate, or
    /// bytes that do not check): then it leaves the pool. Skipped while another lane drains: what
    /// that lane leaves waits for the next drain or its frame's own lane.
    pub(crate) fn drain(&self, mut step: impl FnMut(&Wait, &[u8]) -> Option<Wait>) {
        let Ok(mut pool) = self.pool.try_lock() else {
            return;
        };
        let parked = pool.logs.len();
        loop {
            let before = pool.logs.len();
            pool.logs.retain_mut(|l| match step(&l.wait, &l.bytes) {
                Some(now_waits) => {
                    l.wait = now_waits;
                    true
                }
                None => false,
            });
            if pool.logs.len() == before {
                break;
            }
        }
        if pool.logs.len() != parked {
            pool.reindex();
        }
        self.len.store(pool.logs.len(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use ftc_chain::wire::LogRepr;
    use ftc_stm::{DepEntry, LogKind};

    use super::*;

    /// The bytes of an update log of m0 that writes `value`, after `seq` in partition 0.
    fn log(seq: u64, value: u8) -> Vec<u8> {
        let repr = LogRepr {
            middlebox: 0,
            kind: LogKind::Update,
            deps: vec![DepEntry {
                partition: Partition(0),
                seq: Seq(seq),
            }],
            writes: vec![(b"k".to_vec(), Some(vec![value]))],
        };
        let mut buf = vec![0; repr.buffer_len()];
        let len = repr.emit(&mut buf).unwrap();
        buf.truncate(len);
        buf
    }

    fn wait(seq: u64) -> Wait {
        Wait {
            middlebox: MbIndex(0),
            partition: Partition(0),
            seq: Seq(seq),
        }
    }

    /// What the pool holds: each log's sequence and what it waits for, in order.
    fn parked(pool: &ParkedLogs) -> Vec<(u64, u64)> {
        let mut all = Vec::new();
        pool.drain(|w, bytes| {
            let seq = LogView::new_checked(bytes)
                .unwrap()
                .deps()
                .next()
                .unwrap()
                .seq;
            all.push((seq.0, w.seq.0));
            Some(*w)
        });
        all
    }

    /// A log parked again (its frame offered again) is found, whatever logs left the pool
    /// meanwhile: only what it waits for changes, and the pool does not fill with copies.
    #[test]
    fn a_log_parked_again_is_found_and_waits_for_what_it_waits_for_now() {
        let pool = ParkedLogs::default();
        let logs: Vec<Vec<u8>> = (1..=5).map(|s| log(s, s as u8)).collect();
        for (i, bytes) in logs.iter().enumerate() {
            pool.park(wait(i as u64), &LogView::new_checked(bytes).unwrap());
        }
        pool.park(wait(9), &LogView::new_checked(&logs[3]).unwrap());
        assert_eq!(
            parked(&pool),
            [(1, 0), (2, 1), (3, 2), (4, 9), (5, 4)],
            "parked once each, in order"
        );
        // The first two leave (applied): the others moved in the pool.
        pool.drain(|w, _| (w.seq.0 >= 2).then_some(*w));
        pool.park(wait(7), &LogView::new_checked(&logs[4]).unwrap());
        pool.park(wait(8), &LogView::new_checked(&logs[2]).unwrap());
        assert_eq!(parked(&pool), [(3, 8), (4, 9), (5, 7)]);
        pool.clear();
        assert!(pool.is_empty());
        pool.park(wait(1), &LogView::new_checked(&logs[0]).unwrap());
        assert_eq!(parked(&pool), [(1, 1)]);
    }

    /// The pool takes at most PARKED_MAX logs; one parked already is still found when it is full.
    #[test]
    fn a_full_pool_takes_no_more_but_finds_what_it_has() {
        let pool = ParkedLogs::default();
        let logs: Vec<Vec<u8>> = (0..=PARKED_MAX as u64).map(|s| log(s, 1)).collect();
        for bytes in &logs {
            pool.park(wait(0), &LogView::new_checked(bytes).unwrap());
        }
        pool.park(wait(5), &LogView::new_checked(&logs[10]).unwrap());
        let all = parked(&pool);
        assert_eq!(all.len(), PARKED_MAX);
        assert_eq!(all[10], (10, 5));
        assert!(all.iter().all(|&(seq, _)| seq < PARKED_MAX as u64));
    }
}
