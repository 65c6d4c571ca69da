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

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use ftc_chain::ring::MbIndex;
use ftc_replica::{Wait, Waits};
use ftc_stm::{Partition, Seq};

use crate::Frame;

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
                handled: false,
            },
        );
    }

    /// Holds `frame` (of `flow`, if it carries a packet) until any of `waits` may be reached: a
    /// new frame, or the first held frame of its flow offered again.
    pub(crate) fn hold(&mut self, arrival: u64, flow: Option<u64>, frame: Frame<P>, waits: &Waits) {
        if let Some(flow) = flow {
            let queue = self.flows.entry(flow).or_default();
            if queue.front() != Some(&arrival) {
                debug_assert!(queue.is_empty(), "a frame behind its flow was offered");
                queue.push_back(arrival);
            }
        }
        self.holds += 1;
        let hold = self.holds;
        for wait in waits.iter() {
            self.waits
                .entry((wait.middlebox, wait.partition))
                .or_default()
                .push(Reverse((wait.seq, arrival, hold)));
        }
        self.frames.insert(
            arrival,
            Held {
                frame,
                hold,
                handled: true,
            },
        );
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
        self.waits.retain(|&(mb, partition), waiting| {
            let max = max(mb, partition).unwrap_or(Seq(u64::MAX));
            while let Some(&Reverse((seq, arrival, hold))) = waiting.peek() {
                if seq > max {
                    break;
                }
                waiting.pop();
                if let Some(held) = frames.get_mut(&arrival).filter(|h| h.hold == hold) {
                    held.hold = 0;
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
        Some((arrival, held.frame, held.handled))
    }

    /// What frames wait for: per group and partition, the lowest sequence.
    pub(crate) fn waited(&self) -> impl Iterator<Item = Wait> + '_ {
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
        std::mem::take(&mut self.frames)
            .into_values()
            .map(|held| held.frame)
    }
}
