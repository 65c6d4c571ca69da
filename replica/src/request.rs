//! [`RequestTimer`]: when a member asks its predecessor in a group for the logs it lacks, and
//! which (docs/protocol.md, Loss): once frames have waited a hold timeout for a partition of the
//! group whose MAX did not move meanwhile, measured in time the server has caught up to; it asks
//! for the gaps between MAX and the logs it holds in the partitions frames wait for.
//!
//! Three things make a wait long without any log being lost, and none is worth a request:
//! - the logs of a partition reach the server in frames of several lanes (worker threads), each
//!   from its own queue, so a lane holds frames whose earlier logs another lane has not read yet.
//!   The timeout therefore counts only time up to which every lane of the server handled what
//!   reached it (the driver's caught-up time, [`crate::Replica::set_caught_up`]): a lane the
//!   operating system did not run for milliseconds holds the very log the others wait for;
//! - another lane applies what a lane's frames wait for (from the parked logs, or its own
//!   frames): the frames go, although this lane applied nothing. Progress is therefore the MAX
//!   of each partition waited for, in the store all lanes share, not what one lane applied;
//! - the server holds the logs after a gap already (in its held frames): asking for every log
//!   after MAX brought them all again, hundreds per request once a lane fell behind, each then
//!   a duplicate at this server and every member after it. A request names the gaps instead
//!   (and what follows the last log held, which may be lost too).
//!
//! When an answer came (MAX moved after a request: an answer carries only the logs nearest MAX,
//! so it may fill the gaps in part) and frames still wait, the next request goes a quarter of a
//! hold timeout after MAX last moved, not a whole one: after a failure, or over a
//! lossy network, many logs go missing, and with rounds a hold timeout apart `ftc sim` with
//! crashes released 8–9 % fewer packets (200 seeds each of Ch-Rec, a Ch-3 of 1–3 lanes and a
//! NAT of 2 lanes). Not at once: the gaps may be logs that a lane of the predecessor, which did
//! not run, is sending only now.

use ftc_stm::{DepEntry, Partition, Seq};
use smallvec::SmallVec;

/// Sequences a watch keeps of the logs held in its partition, the lowest: the gaps up to the
/// highest are asked for, and those after it at a later round.
const HELD_MAX: usize = 64;

/// The most times an unanswered request doubles the wait before the next: 32 hold timeouts
/// (64 ms by default). A successor far behind (its data path was cut for seconds, thousands of
/// logs to apply) that asked every hold timeout sent its predecessor a request for each 2 ms its
/// answers took to arrive, each answered with more logs it then had to take.
const BACKOFF_MAX: u32 = 5;

/// A gap to ask for: the logs of `partition` from `from` up to `to`, exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    pub(crate) partition: Partition,
    pub(crate) from: Seq,
    pub(crate) to: Seq,
}

impl Gap {
    /// Whether dependency `d` falls in one of `gaps` (sorted by partition and start, not
    /// overlapping).
    pub(crate) fn any_holds(gaps: &[Gap], d: &DepEntry) -> bool {
        let after = gaps.partition_point(|g| (g.partition, g.from) <= (d.partition, d.seq));
        after
            .checked_sub(1)
            .is_some_and(|i| gaps[i].partition == d.partition && d.seq < gaps[i].to)
    }

    /// How far dependency `d` lies from the start of the first of `gaps` (sorted as above) in
    /// its partition, when it falls in one of them: the requester's MAX there, so the logs it
    /// can apply first are the nearest.
    pub(crate) fn distance(gaps: &[Gap], d: &DepEntry) -> Option<u64> {
        if !Gap::any_holds(gaps, d) {
            return None;
        }
        let first = gaps.partition_point(|g| g.partition < d.partition);
        Some(d.seq.0 - gaps[first].from.0)
    }
}

/// A partition frames wait for.
#[derive(Debug, Clone)]
struct Watch {
    partition: Partition,
    /// Its MAX when the watch began or last saw it move.
    max: Seq,
    /// Sequences of logs the server holds there (above `max`), rising: the lowest
    /// [`HELD_MAX`].
    held: SmallVec<[Seq; 8]>,
    /// When the watch began, MAX last moved, or the last request for it left.
    since: u64,
    /// Requests for it that went out since MAX last moved: once MAX moves, (part of) the
    /// answer came. Each one unanswered after the first doubles the wait before the next (up
    /// to [`BACKOFF_MAX`] times).
    asked: u32,
    /// An answer came, in full or in part (an answer carries the nearest logs only), and frames
    /// still wait: ask again sooner.
    next_round: bool,
    /// Frames were said to wait for it since the last look.
    noted: bool,
}

impl Watch {
    /// When its partition is to be asked for.
    fn due(&self, hold_timeout_ns: u64) -> u64 {
        if self.next_round {
            self.since.saturating_add(hold_timeout_ns / 4)
        } else {
            let backoff = self.asked.saturating_sub(1).min(BACKOFF_MAX);
            self.since.saturating_add(hold_timeout_ns << backoff)
        }
    }

    /// The server holds the log of sequence `seq` there.
    fn hold(&mut self, seq: Seq) {
        if seq < self.max {
            return;
        }
        if let Err(i) = self.held.binary_search(&seq) {
            if i < HELD_MAX {
                self.held.insert(i, seq);
                self.held.truncate(HELD_MAX);
            }
        }
    }

    /// The gaps between MAX and the logs held, and everything after the highest (unless more
    /// logs are held than the watch keeps: then what follows is held too, likely).
    fn gaps(&self) -> impl Iterator<Item = Gap> + '_ {
        let mut from = self.max;
        let rest = (self.held.len() < HELD_MAX).then_some(Seq(u64::MAX));
        let ends = self.held.iter().copied().chain(rest);
        ends.filter_map(move |seq| {
            let gap = (seq > from).then_some(Gap {
                partition: self.partition,
                from,
                to: seq,
            });
            from = from.max(Seq(seq.0.saturating_add(1)));
            gap
        })
    }
}

/// The request state of one group at one lane.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestTimer {
    watches: SmallVec<[Watch; 4]>,
    /// When a resent frame brought logs this server lacked: ask for all at the next look.
    resent_at: Option<u64>,
}

impl RequestTimer {
    /// Frames are held at `now` until MAX at `partition`, `max` now, reaches `seq`: the log of
    /// that sequence is held there (or, for a read-only log, what precedes it is needed).
    pub(crate) fn held(&mut self, now: u64, partition: Partition, seq: Seq, max: Seq) {
        let w = match self
            .watches
            .iter_mut()
            .position(|w| w.partition == partition)
        {
            Some(i) => &mut self.watches[i],
            None => {
                self.watches.push(Watch {
                    partition,
                    max,
                    held: SmallVec::new(),
                    since: now,
                    asked: 0,
                    next_round: false,
                    noted: false,
                });
                self.watches.last_mut().expect("just pushed")
            }
        };
        if w.max != max {
            // MAX moved: the wait starts again, sooner if it moved after a request (its answer came).
            w.next_round |= std::mem::take(&mut w.asked) > 0;
            w.max = max;
            w.since = now;
            w.held.retain(|s| *s >= max);
        }
        w.hold(seq);
        w.noted = true;
    }

    /// The server holds the log of sequence `seq` in `partition` (another lane parked it): a
    /// request need not bring it.
    pub(crate) fn also_held(&mut self, partition: Partition, seq: Seq) {
        if let Some(w) = self.watches.iter_mut().find(|w| w.partition == partition) {
            w.hold(seq);
        }
    }

    /// Whether no frame is said to wait for anything.
    pub(crate) fn is_idle(&self) -> bool {
        self.watches.is_empty()
    }

    /// A resent frame brought logs of the group this server lacked at `now`: ask for every log
    /// after MAX at the next look, which is due at once.
    pub(crate) fn resent(&mut self, now: u64) {
        self.resent_at = Some(now);
    }

    /// When to look next, if anything is watched: a hold timeout after the oldest watch began
    /// (compared with the caught-up time), at once after a resent frame, a quarter of it after
    /// an answer that filled the gaps asked for.
    pub(crate) fn due(&self, hold_timeout_ns: u64) -> Option<u64> {
        let watches = self.watches.iter().map(|w| w.due(hold_timeout_ns));
        watches.chain(self.resent_at).min()
    }

    /// The look at `now`, which is due (`clock`: the caught-up time it compares with): whether
    /// to ask, and for which gaps (sorted by partition and start; none: every log after MAX).
    /// `max` reads the partitions' MAX. A partition no frame waited for
    /// since the last look, or whose MAX moved, is no longer watched (its logs are coming; a
    /// frame that still waits for it watches it again from now). When a partition's wait is
    /// due, or a resent frame came, the gaps of every partition watched are asked for, and
    /// again a hold timeout later while frames wait and MAX stays.
    pub(crate) fn look(
        &mut self,
        now: u64,
        clock: u64,
        hold_timeout_ns: u64,
        max: impl Fn(Partition) -> Seq,
    ) -> Option<Vec<Gap>> {
        let resent = self.resent_at.take_if(|&mut t| t <= clock).is_some();
        self.watches
            .retain(|w| std::mem::take(&mut w.noted) && max(w.partition) == w.max);
        if !resent && !self.watches.iter().any(|w| w.due(hold_timeout_ns) <= clock) {
            return None;
        }
        let mut gaps = Vec::new();
        for w in &mut self.watches {
            gaps.extend(w.gaps());
            w.asked = w.asked.saturating_add(1);
            w.since = now;
            w.next_round = false;
        }
        gaps.sort_unstable_by_key(|g| (g.partition, g.from));
        Some(gaps)
    }

    /// A new epoch: the held frames are dropped.
    pub(crate) fn clear(&mut self) {
        *self = RequestTimer::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_000;

    /// Gaps, each (partition, from, to); `to` 0 for all after `from`.
    fn gaps(gaps: &[(u16, u64, u64)]) -> Option<Vec<Gap>> {
        let gap = |&(p, from, to)| Gap {
            partition: Partition(p),
            from: Seq(from),
            to: Seq(if to == 0 { u64::MAX } else { to }),
        };
        Some(gaps.iter().map(gap).collect())
    }

    #[test]
    fn a_stuck_partition_is_asked_for_every_timeout_and_a_moving_one_is_not() {
        let mut r = RequestTimer::default();
        assert_eq!(r.due(T), None);
        r.held(10, Partition(3), Seq(9), Seq(5));
        r.held(20, Partition(3), Seq(7), Seq(5));
        assert_eq!(r.due(T), Some(1_010));
        // Partition 3 moved: not asked for, no longer watched.
        assert_eq!(r.look(1_010, 1_010, T, |_| Seq(6)), None);
        assert_eq!(r.due(T), None);
        let max = |p: Partition| if p == Partition(3) { Seq(6) } else { Seq(2) };
        r.held(1_500, Partition(3), Seq(9), Seq(6));
        r.held(1_500, Partition(3), Seq(7), Seq(6));
        r.held(1_600, Partition(4), Seq(4), Seq(2));
        r.also_held(Partition(4), Seq(3));
        assert_eq!(r.due(T), Some(2_500));
        // Partition 3 is overdue by the caught-up time: the gaps of both are asked for, between
        // MAX and the logs held (6, and 8; 2), and what follows those.
        let asked = gaps(&[(3, 6, 7), (3, 8, 9), (3, 10, 0), (4, 2, 3), (4, 5, 0)]);
        assert_eq!(r.look(2_700, 2_500, T, max), asked);
        // Again a timeout later while frames wait.
        assert_eq!(r.due(T), Some(3_700));
        r.held(3_000, Partition(4), Seq(4), Seq(2));
        assert_eq!(r.look(3_700, 3_700, T, max), gaps(&[(4, 2, 3), (4, 5, 0)]));
        // No frame waits any more: nothing is watched.
        assert_eq!(r.look(4_700, 4_700, T, max), None);
        assert_eq!(r.due(T), None);
    }

    #[test]
    fn once_an_answer_filled_the_gaps_frames_still_waiting_ask_sooner() {
        let mut r = RequestTimer::default();
        r.held(0, Partition(0), Seq(9), Seq(5));
        let max = |_| Seq(5);
        assert_eq!(r.look(1_000, 1_000, T, max), gaps(&[(0, 5, 9), (0, 10, 0)]));
        // The answer brought 5 to 8; log 9 applied, and a frame waits for 12 (11 was lost too).
        r.held(1_100, Partition(0), Seq(12), Seq(11));
        assert_eq!(r.due(T), Some(1_350));
        let asked = gaps(&[(0, 11, 12), (0, 13, 0)]);
        assert_eq!(r.look(1_350, 1_350, T, |_| Seq(11)), asked);
        // An answer that did not fill the gap (the predecessor lacked it too): a timeout, then
        // twice that, and so on, while MAX stays.
        r.held(1_400, Partition(0), Seq(12), Seq(11));
        assert_eq!(r.look(2_350, 2_350, T, |_| Seq(11)), asked);
        r.held(2_400, Partition(0), Seq(20), Seq(11));
        assert_eq!(r.due(T), Some(4_350));
        let asked = gaps(&[(0, 11, 12), (0, 13, 20), (0, 21, 0)]);
        assert_eq!(r.look(4_350, 4_350, T, |_| Seq(11)), asked);
        r.held(4_400, Partition(0), Seq(20), Seq(11));
        assert_eq!(r.due(T), Some(8_350));
        // An answer that came in part (it carries the nearest logs only): MAX moved but frames
        // still wait for what it left out; asked again a quarter timeout after MAX moved.
        r.held(8_400, Partition(0), Seq(20), Seq(15));
        assert_eq!(r.due(T), Some(8_650));
        assert_eq!(
            r.look(8_650, 8_650, T, |_| Seq(15)),
            gaps(&[(0, 15, 20), (0, 21, 0)])
        );
    }

    #[test]
    fn a_resent_frame_asks_at_the_next_look() {
        let mut r = RequestTimer::default();
        r.held(0, Partition(0), Seq(3), Seq(1));
        r.resent(500);
        assert_eq!(r.due(T), Some(500));
        assert_eq!(
            r.look(600, 600, T, |_| Seq(1)),
            gaps(&[(0, 1, 3), (0, 4, 0)])
        );
        assert_eq!(r.due(T), Some(1_600));
    }

    #[test]
    fn gaps_hold_the_sequences_between_their_ends() {
        let g = gaps(&[(0, 2, 4), (0, 6, 7), (3, 0, 1)]).unwrap();
        let holds = |p, s| Gap::any_holds(&g, &dep(p, s));
        assert!(!holds(0, 1) && holds(0, 2) && holds(0, 3) && !holds(0, 4));
        assert!(!holds(0, 5) && holds(0, 6) && !holds(0, 7));
        assert!(holds(3, 0) && !holds(3, 1) && !holds(1, 2) && !holds(4, 0));
    }

    fn dep(p: u16, s: u64) -> DepEntry {
        DepEntry {
            partition: Partition(p),
            seq: Seq(s),
        }
    }
}
