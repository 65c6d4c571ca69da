//! [`Retention`]: the logs of one group that a server forwarded and keeps until a commit vector
//! says they are stored f+1 times, for retransmission to its successor.

use ftc_chain::logqueue::LogQueue;
use ftc_chain::wire::{CommitVector, LogView};
use ftc_stm::LogKind;

/// Retained logs of one group (with when each was last sent) and the newest commit vector known.
#[derive(Debug, Clone)]
pub(crate) struct Retention {
    logs: LogQueue<u64>,
    known: CommitVector,
}

impl Retention {
    pub(crate) fn new(partitions: usize) -> Self {
        Retention {
            logs: LogQueue::default(),
            known: CommitVector::new(partitions),
        }
    }

    /// Keep `log` (sent at `now`) until a commit vector covers it.
    pub(crate) fn retain(&mut self, log: &LogView<'_>, now: u64) {
        if !self.covered(log) {
            self.logs.push(log, now);
        }
    }

    /// The newest commit vector known.
    pub(crate) fn known(&self) -> &CommitVector {
        &self.known
    }

    /// Merge a commit vector and drop the retained logs it covers, oldest first.
    pub(crate) fn merge_cv(&mut self, cv: impl Iterator<Item = ftc_stm::DepEntry>) {
        if self.known.merge(cv) {
            self.prune_front();
        }
    }

    fn covered(&self, log: &LogView<'_>) -> bool {
        self.known.covers(log.kind(), log.deps())
    }

    /// The retained logs a server whose MAX is `max` has not applied yet.
    pub(crate) fn missing_at<'a>(
        &'a self,
        max: &'a CommitVector,
    ) -> impl Iterator<Item = LogView<'a>> + 'a {
        self.logs.iter().map(|(log, _)| log).filter(move |l| {
            l.kind() == LogKind::Update
                && l.deps()
                    .any(|d| max.get(d.partition).is_some_and(|m| m <= d.seq))
        })
    }

    /// Retained logs not yet covered and last sent `timeout` or longer before `now`, oldest
    /// first, for `take` (false when it has no room left). A log taken moves to the back with
    /// send time `now`, so the queue stays in send order and this only looks at its front.
    pub(crate) fn resend_due(
        &mut self,
        now: u64,
        timeout: u64,
        mut take: impl FnMut(&LogView<'_>) -> bool,
    ) {
        self.prune_front();
        let mut resent = 0;
        let due = self.logs.len();
        while resent < due {
            let Some((log, &sent)) = self.logs.front() else {
                return;
            };
            if sent.saturating_add(timeout) > now {
                return;
            }
            if !self.covered(&log) {
                if !take(&log) {
                    return;
                }
                self.logs.requeue_front(now);
            } else {
                self.logs.pop_front();
            }
            resent += 1;
        }
    }

    /// Drop covered logs at the front.
    fn prune_front(&mut self) {
        while let Some((log, _)) = self.logs.front() {
            if !self.covered(&log) {
                break;
            }
            self.logs.pop_front();
        }
    }

    /// Every retained log, oldest first.
    pub(crate) fn logs(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.logs.iter().map(|(log, _)| log.as_bytes())
    }

    /// The send time of the oldest retained log (the queue is in send order).
    pub(crate) fn oldest_send(&self) -> Option<u64> {
        self.logs.front().map(|(_, sent)| *sent)
    }

    pub(crate) fn len(&self) -> usize {
        self.logs.len()
    }

    pub(crate) fn byte_len(&self) -> usize {
        self.logs.byte_len()
    }
}
