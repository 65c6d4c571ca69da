//! [`HoldQueue`]: the frames a server holds, indexed by what they wait for, so that a frame is
//! offered again only when that may have arrived (DESIGN.md §6), never by walking the queue.
//!
//! A held frame waits for one of two things:
//! - logs its replica cannot apply yet: their [`Waits`], each a partition of a group's MAX to
//!   reach a sequence. [`HoldQueue::free_reached`] frees the frame once MAX got to any of them
//!   (it may then be held again, for what is still missing);
//! - an earlier held frame of its flow (per-flow order, DESIGN.md §10): it has not been offered
//!   to the replica yet, and is freed when that frame leaves the queue ([`HoldQueue::left`]).
//!
//! Freed frames come out oldest arrival first ([`HoldQueue::next_freed`]), so a flow's frames
//! keep their order.
//!
//! A frame held on several waits has an entry in the heap of each; once it is freed through one
//! of them (or leaves), its other entries are stale, and a stale entry whose sequence is never
//! reached would never be popped. Ring frames are not authenticated, so a forged frame can wait
//! on hundreds of partitions for sequences that never come and be freed through one that does,
//! and a frame held again and again adds an entry per hold: left alone, the heaps would grow
//! with what was ever held, not with what is held, and their stale tops would keep the
//! replica's retransmission watches alive ([`HoldQueue::waited`]). So the queue counts its heap
//! entries and the live ones (those of frames still held with the hold that pushed them), and
//! keeps `entries <= 2 * live + STALE_SLACK` after every hold by rebuilding the heaps with only
//! the live entries when a push breaks it; with `live` at most the frames held (bounded by the
//! server's hold limit) times the waits of a frame, the heaps stay within a constant factor of
//! what is held. A rebuild costs the entries it looks at, at least half of them stale and
//! dropped for good, so it costs O(1) per push, amortised. When the last frame leaves, every
//! entry is stale and the heaps are cleared; [`HoldQueue::waited`] drops stale tops before it
//! reports them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use ftc_chain::ring::MbIndex;
use ftc_replica::{Wait, Waits};
use ftc_stm::{Partition, Seq};

use crate::Frame;

/// Stale heap entries the queue may keep beyond twice its live ones before it rebuilds its
/// heaps: rebuilding for a handful of stale entries would cost more than it saves.
const STALE_SLACK: usize = 1024;

/// Held frames of one server (lane), by arrival number.
#[derive(Debug)]
pub(crate) struct HoldQueue<P> {
    /// Every held frame by arrival, less those taken out to be offered again.
    frames: BTreeMap<u64, Held<P>>,
    /// Per flow with held frames, their arrivals in order: the first waits for a log (or is
    /// being offered again), the others wait for it.
    flows: HashMap<u64, VecDeque<u64>>,
    /// Per group and partition, the frames waiting for its MAX.
    waits: BTreeMap<(MbIndex, Partition), Waiting>,
    /// Arrivals of the frames freed, to offer again, the oldest on top.
    freed: BinaryHeap<Reverse<u64>>,
    /// The last hold given out (holds count from 1).
    holds: u64,
    /// Entries in `waits`, stale or not.
    entries: usize,
    /// Entries in `waits` of frames still held with the hold that pushed them (the sum of
    /// [`Held::waits`] over frames with a hold): never more than `entries`, and after every
    /// [`HoldQueue::hold`], `entries <= 2 * live + STALE_SLACK`.
    live: usize,
}

/// Frames waiting for one partition's MAX: (sequence, arrival, hold), the lowest sequence on
/// top. An entry whose hold is not its frame's any more is stale (the frame was freed through
/// another of its waits): it is dropped when reached.
type Waiting = BinaryHeap<Reverse<(Seq, u64, u64)>>;

/// A held frame and its hold: what its entries in [`HoldQueue::waits`] name, or 0 while it
/// waits for its flow or is freed.
#[derive(Debug)]
struct Held<P> {
    frame: Frame<P>,
    hold: u64,
    /// Entries its hold pushed in [`HoldQueue::waits`]: counted in [`HoldQueue::live`] while
    /// `hold` is not 0.
    waits: usize,
    /// Whether its message was handled (it waits for logs, not only for its flow).
    handled: bool,
}

impl<P> Default for HoldQueue<P> {
    fn default() -> Self {
        HoldQueue {
            frames: BTreeMap::new(),
            flows: HashMap::new(),
            waits: BTreeMap::new(),
            freed: BinaryHeap::new(),
            holds: 0,
            entries: 0,
            live: 0,
        }
    }
}

impl<P> HoldQueue<P> {
    /// Frames held.
    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Whether a frame of `flow` that arrived as `arrival` must wait behind an earlier held
    /// frame of its flow. O(1).
    pub(crate) fn is_behind(&self, flow: u64, arrival: u64) -> bool {
        // Most frames find nothing held: no hashing then.
        !self.flows.is_empty()
            && self
                .flows
                .get(&flow)
                .and_then(VecDeque::front)
                .is_some_and(|&first| first < arrival)
    }

    /// Holds `frame` behind the held frames of its flow ([`HoldQueue::is_behind`] said so).
    pub(crate) fn hold_behind(&mut self, arrival: u64, flow: u64, frame: Frame<P>) {
        self.flows.entry(flow).or_default().push_back(arrival);
        self.frames.insert(
            arrival,
            Held {
                frame,
                hold: 0,
                waits: 0,
                handled: false,
            },
        );
    }

    /// Holds `frame` (of `flow`, if it carries a packet) until any of `waits` may be reached: a
    /// new frame, or the first held frame of its flow offered again.
    pub(crate) fn hold(&mut self, arrival: u64, flow: Option<u64>, frame: Frame<P>, waits: &Waits) {
        self.hold_on(arrival, flow, frame, waits.iter().copied());
    }

    /// [`HoldQueue::hold`] on waits of any source (tests build theirs).
    fn hold_on(
        &mut self,
        arrival: u64,
        flow: Option<u64>,
        frame: Frame<P>,
        waits: impl Iterator<Item = Wait>,
    ) {
        if let Some(flow) = flow {
            let queue = self.flows.entry(flow).or_default();
            if queue.front() != Some(&arrival) {
                debug_assert!(queue.is_empty(), "a frame behind its flow was offered");
                queue.push_back(arrival);
            }
        }
        self.holds += 1;
        let hold = self.holds;
        let mut pushed = 0;
        for wait in waits {
            self.waits
                .entry((wait.middlebox, wait.partition))
                .or_default()
                .push(Reverse((wait.seq, arrival, hold)));
            pushed += 1;
        }
        let held = Held {
            frame,
            hold,
            waits: pushed,
            handled: true,
        };
        if let Some(old) = self.frames.insert(arrival, held) {
            // Not expected (a frame is held again only once out of the queue), but its entries
            // are stale now all the same.
            if old.hold != 0 {
                self.live -= old.waits;
            }
        }
        self.entries += pushed;
        self.live += pushed;
        if self.entries > 2 * self.live + STALE_SLACK {
            self.rebuild();
        }
    }

    /// Drops every stale entry of the heaps, and the heaps left empty: then `entries == live`.
    /// Costs the entries and heaps, paid for by the stale entries dropped (more than half of
    /// them when `entries > 2 * live + STALE_SLACK`).
    fn rebuild(&mut self) {
        let frames = &self.frames;
        let mut entries = 0;
        self.waits.retain(|_, waiting| {
            waiting.retain(|&Reverse((_, arrival, hold))| is_live(frames, arrival, hold));
            entries += waiting.len();
            !waiting.is_empty()
        });
        debug_assert_eq!(entries, self.live, "live entries miscounted");
        self.entries = entries;
    }

    /// The frame `arrival` (of `flow`) went through or was dropped, not held again: the next
    /// held frame of its flow, if any, is freed.
    pub(crate) fn left(&mut self, arrival: u64, flow: Option<u64>) {
        let Some(flow) = flow.filter(|_| !self.flows.is_empty()) else {
            return;
        };
        let Some(queue) = self.flows.get_mut(&flow) else {
            return;
        };
        if queue.front() != Some(&arrival) {
            return;
        }
        queue.pop_front();
        match queue.front() {
            Some(&next) => self.freed.push(Reverse(next)),
            None => {
                self.flows.remove(&flow);
            }
        }
    }

    /// Frees the frames whose wait is reached: `max` gives MAX of a group's partition now
    /// (`None`: not this server's to wait for, so free them). Costs the (group, partition)
    /// pairs waited for plus the frames freed, not the frames held.
    pub(crate) fn free_reached(&mut self, max: impl Fn(MbIndex, Partition) -> Option<Seq>) {
        let (frames, freed) = (&mut self.frames, &mut self.freed);
        let (entries, live) = (&mut self.entries, &mut self.live);
        self.waits.retain(|&(mb, partition), waiting| {
            let max = max(mb, partition).unwrap_or(Seq(u64::MAX));
            while let Some(&Reverse((seq, arrival, hold))) = waiting.peek() {
                if seq > max {
                    break;
                }
                waiting.pop();
                *entries -= 1;
                if let Some(held) = frames.get_mut(&arrival).filter(|h| h.hold == hold) {
                    // Its other entries are stale from now on.
                    held.hold = 0;
                    *live -= held.waits;
                    freed.push(Reverse(arrival));
                }
            }
            !waiting.is_empty()
        });
    }

    /// The oldest freed frame, out of the queue to be offered again (with its arrival, and
    /// whether its message was handled before).
    pub(crate) fn next_freed(&mut self) -> Option<(u64, Frame<P>, bool)> {
        let Reverse(arrival) = self.freed.pop()?;
        let held = self.frames.remove(&arrival)?;
        if held.hold != 0 {
            self.live -= held.waits;
        }
        if self.frames.is_empty() {
            // Nothing held: every entry is stale.
            debug_assert_eq!(self.live, 0, "live entries miscounted");
            self.waits.clear();
            self.entries = 0;
            self.live = 0;
        }
        Some((arrival, held.frame, held.handled))
    }

    /// What frames wait for: per group and partition, the lowest sequence of a frame still
    /// held on it. Stale tops are dropped first (each once, so at a cost paid by its push): a
    /// stale top would keep the replica asking for what no frame waits for.
    pub(crate) fn waited(&mut self) -> impl Iterator<Item = Wait> + '_ {
        let (frames, entries) = (&self.frames, &mut self.entries);
        self.waits.retain(|_, waiting| {
            while let Some(&Reverse((_, arrival, hold))) = waiting.peek() {
                if is_live(frames, arrival, hold) {
                    break;
                }
                waiting.pop();
                *entries -= 1;
            }
            !waiting.is_empty()
        });
        self.waits
            .iter()
            .filter_map(|(&(middlebox, partition), waiting)| {
                let Reverse((seq, _, _)) = *waiting.peek()?;
                Some(Wait {
                    middlebox,
                    partition,
                    seq,
                })
            })
    }

    /// Every held frame, oldest first, leaving the queue empty (a fence drops them).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Frame<P>> {
        self.flows.clear();
        self.waits.clear();
        self.freed.clear();
        self.entries = 0;
        self.live = 0;
        std::mem::take(&mut self.frames)
            .into_values()
            .map(|held| held.frame)
    }
}

/// Whether the heap entry of `arrival` pushed by `hold` is live: its frame is still held with
/// that hold.
fn is_live<P>(frames: &BTreeMap<u64, Held<P>>, arrival: u64, hold: u64) -> bool {
    frames.get(&arrival).is_some_and(|h| h.hold == hold)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sequence no partition reaches in these tests.
    const NEVER: u64 = 1 << 40;

    fn frame() -> Frame<u64> {
        Frame {
            packet: None,
            flags: 0,
            msg: Vec::new(),
        }
    }

    fn wait(partition: u16, seq: u64) -> Wait {
        Wait {
            middlebox: MbIndex(0),
            partition: Partition(partition),
            seq: Seq(seq),
        }
    }

    /// The heap entries as counted, checked against the heaps themselves.
    fn entries(q: &HoldQueue<u64>) -> usize {
        let counted: usize = q.waits.values().map(BinaryHeap::len).sum();
        assert_eq!(q.entries, counted, "heap entries miscounted");
        q.entries
    }

    /// The forged frames of the audit: each waits on many partitions for sequences that never
    /// come and on one that does, is freed through that one and passes. Their other entries are
    /// stale and never reached; the heaps must not keep them past the bound, must not report
    /// them, and must be empty once nothing is held.
    #[test]
    fn frames_freed_through_one_wait_leave_heaps_bounded_and_empty_once_nothing_is_held() {
        let mut q = HoldQueue::default();
        // Held for good (until the end), so that the queue never empties meanwhile.
        q.hold_on(1, None, frame(), [wait(0, NEVER)].into_iter());
        for arrival in 2..10_002 {
            let waits = (2..10).map(|p| wait(p, NEVER)).chain([wait(1, arrival)]);
            q.hold_on(arrival, None, frame(), waits);
            // At most 2 frames of 9 waits held at once: 10 live entries.
            assert!(q.live <= 10, "live entries {}", q.live);
            assert!(
                entries(&q) <= 2 * 10 + STALE_SLACK,
                "{} heap entries for {} frames held",
                q.entries,
                q.len()
            );
            q.free_reached(|_, p| Some(Seq(if p == Partition(1) { arrival } else { 0 })));
            assert_eq!(q.next_freed().map(|(a, _, _)| a), Some(arrival));
            assert!(q.next_freed().is_none());
            assert_eq!(q.len(), 1);
        }
        assert_eq!(q.live, 1);
        // Stale entries are left (those since the last rebuild), never reached: the last frame
        // leaving clears them.
        q.free_reached(|_, p| Some(Seq(if p == Partition(0) { NEVER } else { 0 })));
        assert_eq!(q.next_freed().map(|(a, _, _)| a), Some(1));
        assert!(q.is_empty());
        assert_eq!(entries(&q), 0);
        assert!(q.waits.is_empty());
        assert_eq!(q.live, 0);
        assert_eq!(q.waited().count(), 0);
    }

    /// A frame freed and held again, over and over, while another frame stays held: each hold
    /// leaves a stale entry on the wait never reached, which must not pile up past the bound.
    #[test]
    fn a_frame_held_again_and_again_does_not_pile_up_entries() {
        let mut q = HoldQueue::default();
        q.hold_on(1, None, frame(), [wait(0, NEVER)].into_iter());
        for seq in 1..10_001 {
            q.hold_on(2, None, frame(), [wait(1, seq), wait(3, NEVER)].into_iter());
            assert_eq!(q.live, 3);
            assert!(
                entries(&q) <= 2 * 3 + STALE_SLACK,
                "{} heap entries after {seq} holds of one frame",
                q.entries
            );
            q.free_reached(|_, p| Some(Seq(if p == Partition(1) { seq } else { 0 })));
            assert_eq!(q.next_freed().map(|(a, _, _)| a), Some(2));
            assert_eq!(q.live, 1);
        }
    }

    /// waited reports, per partition, the lowest sequence a held frame still waits for: not
    /// that of a frame freed through another wait.
    #[test]
    fn waited_reports_no_stale_tops() {
        let mut q = HoldQueue::default();
        q.hold_on(1, None, frame(), [wait(0, 5), wait(1, 100)].into_iter());
        q.hold_on(2, None, frame(), [wait(1, 200)].into_iter());
        let mut waited: Vec<Wait> = q.waited().collect();
        waited.sort_by_key(|w| w.partition);
        assert_eq!(waited, [wait(0, 5), wait(1, 100)]);
        q.free_reached(|_, p| Some(Seq(if p == Partition(0) { 5 } else { 0 })));
        assert_eq!(q.next_freed().map(|(a, _, _)| a), Some(1));
        assert_eq!(q.waited().collect::<Vec<_>>(), [wait(1, 200)]);
        assert_eq!(entries(&q), 1);
    }
}
