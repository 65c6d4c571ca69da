//! Lanes: the worker threads of one server (DESIGN.md §3). Flows are hashed to lanes, as NIC RSS
//! would; each lane runs its own [`Server`] over the server's shared stores: the head's store
//! serves one STM worker per lane, and the replica stores apply the logs of any lane in
//! dependency order. What one lane learns that the others need is published in a
//! [`LaneShared`]: the commit vectors it merged (so every lane prunes its retained logs and its
//! buffer releases packets), that it applied logs (so frames another lane holds are looked at
//! again), and up to when it handled what reached it (a retransmission request waits until
//! every lane has: [`Server::caught_up`]). A lane that publishes news wakes the lanes that wait
//! ([`Server::take_wakeups`]).
//! Logs a lane holds are parked where the others apply them as soon as they can
//! ([`ParkedLogs`]), so a run of logs of one partition spread over lanes needs no handoffs.
//!
//! A server runs [`MAX_LANES`] lanes at most: which lanes to wake is a [`LaneSet`], a bit per
//! lane. A spec's `threads` (a lane each) is validated against the same bound.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ftc_buffer::Buffer;
use ftc_chain::middlebox::Middlebox;
use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_chain::spec::MAX_THREADS;
use ftc_chain::wire::CommitVector;
use ftc_replica::{GroupState, ParkedLogs, Replica, FLAG_RETRANSMIT_REQUEST};
use ftc_stm::{DepEntry, Partition, Seq, StmError, Worker};

use crate::ftmb::FLAG_PAL_RESEND;
use crate::{Frame, Server, ServerConfig};

/// The most lanes one server runs: what a [`LaneSet`] holds.
pub const MAX_LANES: usize = u64::BITS as usize;

// A server runs a lane per thread of the middlebox it heads (a replica-only server, per thread
// of the most threaded one): every spec the chain crate accepts fits.
const _: () = assert!(MAX_THREADS as usize <= MAX_LANES);

/// Lanes of one server, by index: the lanes to wake ([`Server::take_wakeups`]). Holds indices
/// below [`MAX_LANES`], which [`join`] holds a server's lanes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneSet(u64);

impl LaneSet {
    /// Whether the set has no lane.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set with lane `lane` added.
    fn with(self, lane: usize) -> Self {
        debug_assert!(lane < MAX_LANES, "lane {lane} of at most {MAX_LANES}");
        LaneSet(self.0 | 1 << lane)
    }

    /// The lanes of both sets.
    fn union(self, other: Self) -> Self {
        LaneSet(self.0 | other.0)
    }

    /// The lanes in the set, in order.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut left = self.0;
        std::iter::from_fn(move || {
            let lane = (left != 0).then(|| left.trailing_zeros() as usize)?;
            left &= left - 1;
            Some(lane)
        })
    }
}

/// The lane a flow goes to among `lanes` (a mix of its id, so that consecutive ids spread).
pub fn lane_of(flow: u64, lanes: usize) -> usize {
    if lanes <= 1 {
        return 0;
    }
    let mixed = flow.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    (mixed % lanes as u64) as usize
}

/// Which lanes of the next server a frame from lane `from_lane` goes to, among `lanes`: a
/// customer packet to the lane its flow hashes to, a retransmission request (FTC's for logs,
/// FTMB's for PAL messages) to every lane (any of them may retain what is asked for), anything
/// else to the lane of the sender's index.
pub fn lanes_for<P>(frame: &Frame<P>, from_lane: usize, lanes: usize) -> std::ops::Range<usize> {
    if frame.flags & (FLAG_RETRANSMIT_REQUEST | FLAG_PAL_RESEND) != 0 {
        return 0..lanes;
    }
    let i = match &frame.packet {
        Some(p) => lane_of(p.flow, lanes),
        None => from_lane % lanes.max(1),
    };
    i..i + 1
}

/// What the lanes of one server share.
#[derive(Debug)]
pub struct LaneShared {
    /// Per middlebox of the chain, the commit vector known at this server (merged by max).
    cvs: Vec<Box<[AtomicU64]>>,
    /// Logs applied by all lanes (only its changes matter).
    applied: AtomicU64,
    /// Moves whenever a lane publishes news.
    version: AtomicU64,
    /// Per lane: whether it has frames held or packets at its buffer, which news may free.
    waiting: Box<[AtomicBool]>,
    /// Per lane: the time up to which it handled everything that reached it
    /// ([`Server::caught_up`]).
    caught_up: Box<[AtomicU64]>,
}

impl LaneShared {
    /// Shared state for `lanes` lanes of a server of a chain with `middleboxes` middleboxes of
    /// `partitions` partitions each.
    pub fn new(lanes: usize, middleboxes: usize, partitions: usize) -> Arc<Self> {
        let zeros = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        Arc::new(LaneShared {
            cvs: (0..middleboxes).map(|_| zeros(partitions)).collect(),
            applied: AtomicU64::new(0),
            version: AtomicU64::new(0),
            waiting: (0..lanes).map(|_| AtomicBool::new(false)).collect(),
            caught_up: zeros(lanes),
        })
    }

    /// Raises the shared CV(`mb`) to `local` where it is ahead; whether anything moved.
    fn publish_cv(&self, mb: MbIndex, local: &CommitVector) -> bool {
        let Some(shared) = self.cvs.get(usize::from(mb.0)) else {
            return false;
        };
        let mut moved = false;
        for (e, s) in local.iter().zip(shared.iter()) {
            if e.seq.0 > s.load(Ordering::Relaxed) {
                moved |= s.fetch_max(e.seq.0, Ordering::SeqCst) < e.seq.0;
            }
        }
        moved
    }

    /// The shared CV(`mb`), as dense entries.
    fn cv(&self, mb: MbIndex) -> impl Iterator<Item = DepEntry> + '_ {
        let shared = self.cvs.get(usize::from(mb.0)).map_or(&[][..], |v| &v[..]);
        shared.iter().enumerate().map(|(p, s)| DepEntry {
            partition: Partition(p as u16),
            seq: Seq(s.load(Ordering::SeqCst)),
        })
    }
}

/// One lane's link to the [`LaneShared`] of its server.
#[derive(Debug)]
pub(crate) struct Lane {
    shared: Arc<LaneShared>,
    index: usize,
    /// [`LaneShared::version`] when last pulled.
    seen: u64,
    /// This lane's applied logs already added to [`LaneShared::applied`].
    published_applied: u64,
    /// Published news since [`Server::take_wakeups`] last looked.
    news: bool,
    /// Lanes to wake because a retransmission request waits for them to catch up.
    poke: LaneSet,
}

impl Lane {
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Logs applied by every lane so far (moves when any lane applies).
    pub(crate) fn applied(&self) -> u64 {
        self.shared.applied.load(Ordering::SeqCst)
    }

    /// Publishes what this lane learned since last time: applied logs and commit vectors.
    pub(crate) fn publish(&mut self, replica: &Replica, buffer: Option<&Buffer<u64>>) {
        let mut moved = false;
        let applied = replica.stats().applied;
        if applied > self.published_applied {
            self.shared
                .applied
                .fetch_add(applied - self.published_applied, Ordering::SeqCst);
            self.published_applied = applied;
            moved = true;
        }
        for mb in (0..self.shared.cvs.len()).map(|j| MbIndex(j as u8)) {
            let local = [
                replica.commit_vector(mb),
                buffer.and_then(|b| b.commit_vector(mb)),
            ];
            for cv in local.into_iter().flatten() {
                moved |= self.shared.publish_cv(mb, cv);
            }
        }
        if moved {
            self.shared.version.fetch_add(1, Ordering::SeqCst);
            self.news = true;
        }
    }

    /// This lane handled everything that reached it by `t`.
    pub(crate) fn caught_up_to(&self, t: u64) {
        self.shared.caught_up[self.index].store(t, Ordering::SeqCst);
    }

    /// The time up to which every lane of the server handled everything that reached it.
    pub(crate) fn caught_up(&self) -> u64 {
        let lanes = self.shared.caught_up.iter();
        lanes.map(|t| t.load(Ordering::SeqCst)).min().unwrap_or(0)
    }

    /// The other lanes that have not caught up to `t` are to be woken: a request waits for them.
    pub(crate) fn poke_behind(&mut self, t: u64) {
        let caught_up = &self.shared.caught_up;
        let behind = self.others(|i| caught_up[i].load(Ordering::SeqCst) < t);
        self.poke = self.poke.union(behind);
    }

    /// The other lanes that `pick` picks.
    fn others(&self, pick: impl Fn(usize) -> bool) -> LaneSet {
        let lanes = (0..self.shared.waiting.len()).filter(|&i| i != self.index);
        lanes
            .filter(|&i| pick(i))
            .fold(LaneSet::default(), LaneSet::with)
    }

    /// Says whether this lane waits for news (held frames, packets at its buffer).
    pub(crate) fn set_waiting(&self, waiting: bool) {
        self.shared.waiting[self.index].store(waiting, Ordering::SeqCst);
    }

    /// Merges what other lanes published since the last pull (at `now`); whether there was news.
    pub(crate) fn pull(
        &mut self,
        now: u64,
        replica: &mut Replica,
        mut buffer: Option<&mut Buffer<u64>>,
    ) -> bool {
        let version = self.shared.version.load(Ordering::SeqCst);
        if version == self.seen {
            return false;
        }
        self.seen = version;
        for mb in (0..self.shared.cvs.len()).map(|j| MbIndex(j as u8)) {
            replica.merge_commit_vector(now, mb, self.shared.cv(mb));
            if let Some(b) = buffer.as_deref_mut() {
                b.merge_commit_vector(mb, self.shared.cv(mb));
            }
        }
        true
    }

    /// The other lanes to wake: those a retransmission request waits for, and if this lane
    /// published news since last asked, those waiting for news.
    pub(crate) fn take_wakeups(&mut self) -> LaneSet {
        let poke = std::mem::take(&mut self.poke);
        if !std::mem::take(&mut self.news) {
            return poke;
        }
        let waiting = &self.shared.waiting;
        poke.union(self.others(|i| waiting[i].load(Ordering::SeqCst)))
    }
}

/// What a lane of a server heads: the middlebox and this lane's worker of its store.
pub type Head<'a> = (MbIndex, &'a dyn Middlebox, Worker<'a>);

/// The lanes of server `me`, one per entry of `heads` (lane i's head, if the server heads a
/// group), all over the same fresh replica stores. One lane is a plain [`Server`].
pub fn lanes<'a, P: Clone>(
    ring: Ring,
    me: ServerId,
    partitions: u32,
    heads: Vec<Option<Head<'a>>>,
    config: &ServerConfig,
) -> Result<Vec<Server<'a, P>>, StmError> {
    let mut heads = heads.into_iter();
    let first = Server::new(ring, me, partitions, heads.next().flatten(), config.clone())?;
    join(first, heads, partitions, config)
}

/// `first` (a new or restored server) and a lane beside it for each of `more` (their heads),
/// sharing its replica stores. One lane is `first` alone.
///
/// # Panics
///
/// With more than [`MAX_LANES`] lanes in all (a valid spec's `threads` never asks for more).
pub fn join<'a, P: Clone>(
    first: Server<'a, P>,
    more: impl Iterator<Item = Option<Head<'a>>>,
    partitions: u32,
    config: &ServerConfig,
) -> Result<Vec<Server<'a, P>>, StmError> {
    let (ring, me) = (first.ring(), first.id());
    let stores = first.replica_stores();
    let mut all = vec![first];
    for head in more {
        let mut lane = Server::new(ring, me, partitions, head, config.clone())?;
        lane.share_replica_stores(partitions, stores.clone());
        all.push(lane);
    }
    assert!(
        all.len() <= MAX_LANES,
        "{} lanes: a server runs {MAX_LANES} at most",
        all.len()
    );
    if all.len() > 1 {
        let shared = LaneShared::new(all.len(), ring.middleboxes(), partitions as usize);
        let parked = Arc::new(ParkedLogs::default());
        for (i, lane) in all.iter_mut().enumerate() {
            let link = Lane {
                shared: Arc::clone(&shared),
                index: i,
                seen: 0,
                published_applied: 0,
                news: false,
                poke: LaneSet::default(),
            };
            lane.join_lanes(link, &parked);
        }
    }
    Ok(all)
}

/// The state of `mb`'s group at a server of several lanes: the shared store, and the logs every
/// lane retains.
pub fn export_group<P: Clone>(lanes: &[Server<'_, P>], mb: MbIndex) -> Option<GroupState> {
    let (first, rest) = lanes.split_first()?;
    let mut state = first.export_group(mb)?;
    for lane in rest {
        state.retained.extend(lane.replica()?.retained_logs(mb)?);
    }
    Some(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sets_hold_every_lane_a_server_may_run() {
        assert!(LaneSet::default().is_empty());
        assert_eq!(LaneSet::default().iter().count(), 0);
        let set = [0, 5, MAX_LANES - 1]
            .into_iter()
            .fold(LaneSet::default(), LaneSet::with);
        assert!(!set.is_empty());
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 5, MAX_LANES - 1]);
        let more = LaneSet::default().with(7).union(set);
        assert_eq!(more.iter().collect::<Vec<_>>(), [0, 5, 7, MAX_LANES - 1]);
    }

    #[test]
    fn flows_spread_over_lanes_and_one_lane_takes_all() {
        assert!((0..100).all(|f| lane_of(f, 1) == 0));
        let mut counts = [0usize; 4];
        for f in 0..4000 {
            counts[lane_of(f, 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn published_vectors_only_move_forward() {
        let shared = LaneShared::new(2, 1, 4);
        let mut cv = CommitVector::new(4);
        cv.merge(
            [DepEntry {
                partition: Partition(1),
                seq: Seq(5),
            }]
            .into_iter(),
        );
        assert!(shared.publish_cv(MbIndex(0), &cv));
        assert!(!shared.publish_cv(MbIndex(0), &cv), "nothing new");
        let older = CommitVector::new(4);
        assert!(!shared.publish_cv(MbIndex(0), &older));
        let seqs: Vec<u64> = shared.cv(MbIndex(0)).map(|e| e.seq.0).collect();
        assert_eq!(seqs, [0, 5, 0, 0]);
        assert!(!shared.publish_cv(MbIndex(3), &cv), "no such middlebox");
    }
}
