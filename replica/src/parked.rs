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
    /// Each log with what it waited for when parked.
    logs: Mutex<Vec<(Wait, Box<[u8]>)>>,
    /// How many are parked (read without the lock).
    len: AtomicUsize,
}

impl ParkedLogs {
    /// Whether no log is parked.
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Drops every parked log (a new epoch: they may be ones the recovery rolls back).
    pub(crate) fn clear(&self) {
        if let Ok(mut logs) = self.logs.lock() {
            logs.clear();
            self.len.store(0, Ordering::Release);
        }
    }

    /// Parks `log`, waiting for `wait` (if it is parked already, it now waits for `wait`), unless
    /// the pool is full.
    pub(crate) fn park(&self, wait: Wait, log: &LogView<'_>) {
        let Ok(mut logs) = self.logs.lock() else {
            return;
        };
        let bytes = log.as_bytes();
        if let Some((w, _)) = logs.iter_mut().find(|(_, b)| **b == *bytes) {
            *w = wait;
        } else if logs.len() < PARKED_MAX {
            logs.push((wait, bytes.into()));
        }
        self.len.store(logs.len(), Ordering::Release);
    }

    /// Whether a log of `mb`'s group is parked (frames of the group are held).
    pub(crate) fn holds(&self, mb: MbIndex) -> bool {
        !self.is_empty()
            && self
                .logs
                .lock()
                .is_ok_and(|logs| logs.iter().any(|(w, _)| w.middlebox == mb))
    }

    /// The dependencies of every parked log of `mb`'s group, to `held`: logs the server holds,
    /// which a retransmission request need not bring again.
    pub(crate) fn held(&self, mb: MbIndex, mut held: impl FnMut(Partition, Seq)) {
        let Ok(logs) = self.logs.lock() else {
            return;
        };
        let parked = logs.iter().filter(|(w, _)| w.middlebox == mb);
        for log in parked.filter_map(|(_, b)| LogView::new_checked(b).ok()) {
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
        let Ok(mut logs) = self.logs.try_lock() else {
            return;
        };
        loop {
            let before = logs.len();
            logs.retain_mut(|(wait, bytes)| match step(wait, bytes) {
                Some(now_waits) => {
                    *wait = now_waits;
                    true
                }
                None => false,
            });
            if logs.len() == before {
                break;
            }
        }
        self.len.store(logs.len(), Ordering::Release);
    }
}
