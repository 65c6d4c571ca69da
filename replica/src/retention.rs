//! [`Retention`]: the logs of one group that a server forwarded and keeps until a commit vector
//! says they are stored f+1 times, for retransmission to its successor.

use std::collections::BinaryHeap;

use ftc_chain::logqueue::LogQueue;
use ftc_chain::wire::{CommitVector, LogView};
use ftc_stm::{DepEntry, LogKind};

use crate::resend::ResendTimer;

/// The most logs an answer to a retransmission request carries, the nearest to what was asked
/// for ([`Replica::handle_retransmit_request`](crate::Replica::handle_retransmit_request)).
pub const ANSWER_LOGS: usize = 4096;

/// Retained logs of one group (with when each was last sent) and the newest commit vector known.
#[derive(Debug, Clone)]
pub(crate) struct Retention {
    logs: LogQueue<Sent>,
    known: CommitVector,
    /// How long the group's logs wait uncovered before they are sent again.
    timer: ResendTimer,
    /// No resend round starts before this: a round sends what one frame holds, and the rest
    /// waits a timeout (as TCP resends one segment, not its window), or until a commit vector
    /// covers the round's last log ([`Retention::round_end`]).
    next_round: u64,
    /// A dependency of the last log of the last resend round: once a commit vector covers it,
    /// the round arrived, and the next starts at once. A chain that lost many logs of a group
    /// in a failure, and then goes idle (no held frame asks for them), gets them back a frame
    /// per round trip instead of a frame per (backed-off) resend timeout.
    round_end: Option<DepEntry>,
    /// When an answer to the successor's retransmission request last took logs: no resend
    /// round starts within a resend timeout of it ([`Retention::resend_due`]).
    answered_at: Option<u64>,
}

/// When a retained log was last sent, whether it was sent before that, and when it last went
/// in an answer to a retransmission request.
#[derive(Debug, Clone, Copy)]
struct Sent {
    at: u64,
    again: bool,
    answered: Option<u64>,
}

impl Retention {
    pub(crate) fn new(partitions: usize) -> Self {
        Retention {
            logs: LogQueue::default(),
            known: CommitVector::new(partitions),
            timer: ResendTimer::default(),
            next_round: 0,
            round_end: None,
            answered_at: None,
        }
    }

    /// Keep `log` (sent at `now`) until a commit vector covers it.
    pub(crate) fn retain(&mut self, log: &LogView<'_>, now: u64) {
        if !self.covered(log) {
            self.logs.push(
                log,
                Sent {
                    at: now,
                    again: false,
                    answered: None,
                },
            );
        }
    }

    /// The newest commit vector known.
    pub(crate) fn known(&self) -> &CommitVector {
        &self.known
    }

    /// Merge a commit vector (arrived at `now`) and drop the retained logs it covers, oldest
    /// first; the youngest of those sent only once times the group's round trip.
    pub(crate) fn merge_cv(&mut self, cv: impl Iterator<Item = ftc_stm::DepEntry>, now: u64) {
        if self.known.merge(cv) {
            if let Some(sent) = self.prune_front() {
                self.timer.sample(now.saturating_sub(sent));
            }
            let known = &self.known;
            if self
                .round_end
                .take_if(|d| known.get(d.partition).is_some_and(|s| s > d.seq))
                .is_some()
            {
                self.next_round = 0;
                self.timer.round_arrived();
            }
        }
    }

    fn covered(&self, log: &LogView<'_>) -> bool {
        self.known.covers(log.kind(), log.deps())
    }

    /// The retained update logs a successor asked for at `now`, at most [`ANSWER_LOGS`]: those
    /// `distance` places nearest the start of what it asked for (`None`: not asked for), less
    /// those an answer carried within the group's resend timeout (`floor` as adapted): an answer
    /// still on its way, or being applied, is not sent again at each request that follows it.
    /// Each one taken is marked answered at `now`. The nearest first, because the requester
    /// applies a partition's logs in order: after a long cut of its data path, answering the
    /// whole backlog at each request sent it the same logs again and again while it was still
    /// applying the first answer (9.2 million duplicates of 9.8 million logs answered in the
    /// lab, with 262,144 retained); the requester asks again once it applied an answer.
    pub(crate) fn answer(
        &mut self,
        now: u64,
        floor: u64,
        distance: impl Fn(&LogView<'_>) -> Option<u64>,
        mut take: impl FnMut(&LogView<'_>),
    ) {
        let window = self.timer.timeout(floor);
        let fresh = |sent: &Sent| {
            sent.answered
                .is_none_or(|t| now.saturating_sub(t) >= window)
        };
        // The nearest ANSWER_LOGS (distance, place in the queue), the farthest on top.
        let mut nearest = BinaryHeap::new();
        for (i, (log, sent)) in self.logs.iter().enumerate() {
            if log.kind() != LogKind::Update || !fresh(sent) {
                continue;
            }
            let Some(d) = distance(&log) else {
                continue;
            };
            if nearest.len() < ANSWER_LOGS {
                nearest.push((d, i));
            } else if nearest.peek().is_some_and(|&top| (d, i) < top) {
                nearest.pop();
                nearest.push((d, i));
            }
        }
        // Nearest first: the requester applies them as they come instead of holding the frames
        // that bring a log before the one it follows.
        if !nearest.is_empty() {
            self.answered_at = Some(now);
        }
        for (_, i) in nearest.into_sorted_vec() {
            let (log, sent) = self.logs.get_mut(i).expect("a place found above");
            sent.answered = Some(now);
            take(&log);
        }
    }

    /// Retained logs not yet covered and last sent a resend timeout or longer before `now`
    /// (`floor` as adapted by the group's [`ResendTimer`]), oldest first, for `take` (false when
    /// it has no room left). A log taken moves to the back with send time `now`, so the queue
    /// stays in send order and this only looks at its front. A round that sent any doubles the
    /// timeout until a commit vector times a log again, and is the last for a timeout: what did
    /// not fit waits. Resending every uncovered log at once, frame after frame, flooded a
    /// successor that was slow to cover them (a replacement takes over its source's retained
    /// logs), which delayed the commit vectors that would cover them: more rounds followed.
    /// One log that arrives is enough for a tail that already holds the rest to cover them all,
    /// and a successor missing logs asks for them itself: no round starts within a resend
    /// timeout of an answer to its request, which brings the logs it lacks nearest first (a
    /// round sends the oldest, which the answers carry too: in the lab, a successor catching up
    /// with a backlog of 262,144 logs was answered 0.32-0.65 million logs, 0.06-0.40 million of
    /// which arrived twice, with rounds going on beside the answers; without, 262,144-275,602
    /// and 0-13,458).
    pub(crate) fn resend_due(
        &mut self,
        now: u64,
        floor: u64,
        mut take: impl FnMut(&LogView<'_>) -> bool,
    ) {
        self.prune_front();
        let timeout = self.timer.timeout(floor);
        if now < self.next_round.max(self.after_answer(timeout)) {
            return;
        }
        let (mut looked, mut resent) = (0, false);
        let due = self.logs.len();
        while looked < due {
            let Some((log, &sent)) = self.logs.front() else {
                break;
            };
            if sent.at.saturating_add(timeout) > now {
                break;
            }
            if !self.covered(&log) {
                if !take(&log) {
                    break;
                }
                self.round_end = log.deps().next();
                self.logs.requeue_front(Sent {
                    at: now,
                    again: true,
                    answered: sent.answered,
                });
                resent = true;
            } else {
                self.logs.pop_front();
            }
            looked += 1;
        }
        if resent {
            self.timer.backed_off();
            self.next_round = now.saturating_add(self.timer.timeout(floor));
        }
    }

    /// Drop covered logs at the front; when the youngest of them was sent only once.
    fn prune_front(&mut self) -> Option<u64> {
        let mut once = None;
        while let Some((log, &sent)) = self.logs.front() {
            if !self.covered(&log) {
                break;
            }
            if !sent.again {
                once = Some(sent.at);
            }
            self.logs.pop_front();
        }
        once
    }

    /// Every retained log, oldest first.
    pub(crate) fn logs(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.logs.iter().map(|(log, _)| log.as_bytes())
    }

    /// Start the resend timeout again from the configured one (a recovery rerouted the ring).
    pub(crate) fn forget_timing(&mut self) {
        self.timer = ResendTimer::default();
        self.next_round = 0;
        self.round_end = None;
        self.answered_at = None;
    }

    /// The end of the resend timeout `timeout` after the last answer (0: none).
    fn after_answer(&self, timeout: u64) -> u64 {
        self.answered_at.map_or(0, |t| t.saturating_add(timeout))
    }

    /// When the oldest retained log (the queue is in send order) is due to be sent again, given
    /// the configured timeout `floor`.
    pub(crate) fn resend_at(&self, floor: u64) -> Option<u64> {
        let timeout = self.timer.timeout(floor);
        self.logs.front().map(|(_, sent)| {
            let due = sent.at.saturating_add(timeout);
            due.max(self.next_round).max(self.after_answer(timeout))
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.logs.len()
    }

    pub(crate) fn byte_len(&self) -> usize {
        self.logs.byte_len()
    }
}
