//! ftc-replica: the replication core of one chain server (sans-IO), per `docs/protocol.md`.
//!
//! A [`Replica`] keeps, for every group the server is a non-head member of, a state store and its
//! MAX vector; it applies, holds and deduplicates the piggyback logs of incoming messages, strips
//! the logs of the group it tails and announces that group's commit vector, retains what it
//! forwarded until commit vectors cover it, and asks for and answers retransmissions.
//!
//! Methods, in the order a driver uses them for one frame:
//! - [`Replica::handle_message`] (input): the incoming message. `Ready`: run the middlebox, then
//!   [`Replica::build_message`]; `Hold`: keep the frame and offer it again once any of what it
//!   waits for ([`Waits`]) may have arrived ([`Replica::max_at`]); the hold queue is the
//!   driver's, and bounded.
//! - [`Replica::build_message`] (output): the message the frame carries on.
//! - [`Replica::handle_retransmit_request`] (input): a frame flagged
//!   [`FLAG_RETRANSMIT_REQUEST`] from the successor.
//! - [`Replica::poll_transmit`] (output, until `None`): propagating frames the core wants sent
//!   now, with their destination: retransmission requests, answers, overflow, resends. These never
//!   wait behind held frames, so back-pressure cannot block the log that frees them. Offer the
//!   held frames again first, and say what frames still wait for ([`Replica::still_holding`]):
//!   a partition is asked for only while frames wait for it.
//! - [`Replica::poll_timeout`]: when to call `poll_transmit` again at the latest.
//!
//! A held frame offered again goes to [`Replica::handle_held_message`] instead.
//!
//! A server of several worker threads (lanes) runs a replica per lane over shared stores
//! ([`Replica::with_stores`]) and shares one [`ParkedLogs`] among them ([`Replica::share_parked`]);
//! its driver says up to when every lane handled what reached it ([`Replica::set_caught_up`]).
//! [`Replica::fence`] at a new epoch.
//!
//! It does no I/O, reads no clock (`now` is nanoseconds from the driver) and draws no randomness.

mod group_state;
mod parked;
mod request;
mod resend;
mod retention;

use std::sync::Arc;

use ftc_chain::outbox::Outbox;
use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_chain::wire::{
    CommitVector, CvView, LogView, MessageView, MessageWriter, WireError, Written,
};
use ftc_stm::{ApplyOutcome, DepEntry, LogKind, LogSource, Partition, Seq, StmError, Store};
use smallvec::SmallVec;

pub use group_state::{GroupState, GroupStateError};
pub use parked::{ParkedLogs, PARKED_MAX};
use request::{Gap, RequestTimer};
use retention::Retention;
pub use retention::ANSWER_LOGS;

/// NSH context flag of a retransmission request (`docs/protocol.md`).
pub const FLAG_RETRANSMIT_REQUEST: u16 = 0x0001;
/// NSH context flag of the buffer's request that the tails of the wrapping groups announce
/// their commit vectors again ([`Replica::announce_max`], `docs/protocol.md`).
pub const FLAG_ANNOUNCE_REQUEST: u16 = 0x0004;
/// NSH context flag of a propagating frame of resent logs ([`Replica::poll_transmit`]): the
/// receiver asks its predecessor at once for what else it lacks ([`Replica::resent_arrived`]).
pub const FLAG_RESENT: u16 = 0x0008;

/// Timers and sizes of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// How long a frame may wait for a missing log before the predecessor is asked for it.
    pub hold_timeout_ns: u64,
    /// How long a retained log may stay uncovered before it is sent to the successor again, at
    /// least: each group's timeout adapts to how long its commit vectors take, up to 8 times
    /// this (docs/protocol.md, Loss).
    pub resend_timeout_ns: u64,
    /// Time between two announcements of the commit vector of a group that does not wrap past
    /// the buffer (no packet waits on it: it only lets the head and members prune what they
    /// retain); well below `resend_timeout_ns`. Wrapping groups announce with every frame.
    pub lazy_announce_ns: u64,
    /// Whether the tail of a wrapping group on the server after the buffer's (server 0, the
    /// forwarder's) also sends each batch's announcements straight back to the buffer, one
    /// hop over the ring-closing link, instead of only along with frames through every server
    /// in between (packets wait at the buffer for those commit vectors; docs/protocol.md).
    pub direct_commit_vectors: bool,
}

impl Default for ReplicaConfig {
    /// Timeouts for one data centre: far above a hop's latency, far below a user's patience.
    fn default() -> Self {
        ReplicaConfig {
            hold_timeout_ns: 2_000_000,
            resend_timeout_ns: 10_000_000,
            lazy_announce_ns: 100_000,
            direct_commit_vectors: true,
        }
    }
}

/// What to do with a frame after its message was handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Every log it carries for this server's groups is applied or satisfied: process it.
    Ready,
    /// Some logs are not applicable (or satisfied) yet: hold the frame and offer it again once
    /// any of what they wait for may have arrived (its other logs are applied meanwhile).
    Hold(Waits),
}

/// What the logs of a held frame wait for: per group and partition that a log not applicable
/// yet waits for, the lowest sequence (the first that can free the frame), one [`Wait`] each.
/// A frame of many logs (a retransmission's) waits for a few partitions, not for every log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waits(SmallVec<[Wait; 2]>);

impl Waits {
    /// The waits, one per group and partition.
    pub fn iter(&self) -> impl Iterator<Item = &Wait> {
        self.0.iter()
    }

    /// Adds `wait`, or lowers the sequence of the wait for its group and partition.
    fn add(&mut self, wait: Wait) {
        let same = |w: &&mut Wait| w.middlebox == wait.middlebox && w.partition == wait.partition;
        match self.0.iter_mut().find(same) {
            Some(w) => w.seq = w.seq.min(wait.seq),
            None => self.0.push(wait),
        }
    }
}

/// What a log of a held frame waits for: MAX(`middlebox`)\[`partition`\] at this server to reach
/// `seq`, the first dependency of the log that MAX has not reached. Before that the log cannot
/// apply; after it, it may (or wait for another dependency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub middlebox: MbIndex,
    pub partition: Partition,
    pub seq: Seq,
}

impl Wait {
    /// What `log`, which `store` cannot apply or satisfy yet, waits for. When another lane moved
    /// MAX since that check, no dependency may be missing any more: then a wait that is reached
    /// already, so the frame is offered again at the driver's next look.
    fn for_log(middlebox: MbIndex, store: &Store, log: &LogView<'_>) -> Wait {
        let missing = log.deps().find(|d| store.seq(d.partition) < d.seq);
        let (partition, seq) = missing.map_or((Partition(0), Seq(0)), |d| (d.partition, d.seq));
        Wait {
            middlebox,
            partition,
            seq,
        }
    }
}

/// A propagating frame to send: its destination, NSH context flags and message length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub to: ServerId,
    pub flags: u16,
    pub len: usize,
}

/// Why a message could not be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    #[error("log rejected by the store: {0}")]
    Stm(#[from] StmError),
    #[error("message does not encode: {0}")]
    Wire(#[from] WireError),
    #[error("a packet's own logs do not fit its frame: raise the MTU between servers")]
    FrameFull,
    #[error("cannot restore: {0}")]
    Restore(&'static str),
    #[error("message names middlebox {middlebox}; the chain has {middleboxes}")]
    Foreign { middlebox: u8, middleboxes: usize },
}

impl ReplicaError {
    /// Whether the error is the message's, not this server's: a message that passed the wire
    /// check names a middlebox the chain lacks, or a log the store refuses (a dependency on a
    /// partition it lacks, a write outside the log's partitions). Its frame is dropped and
    /// counted, as bytes that do not parse are; the server goes on. Logs of it applied before
    /// the bad one stay applied (and retained where this server is not their tail), as when
    /// the frame is lost after this server: the protocol's loss handling covers the rest.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ReplicaError::Foreign { .. } | ReplicaError::Stm(StmError::Malformed(_))
        )
    }
}

/// Counters of a replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    pub applied: u64,
    /// Update logs that arrived after they were applied here (resent, retransmitted, or
    /// duplicated on the way). Logs of held frames found applied when the frame is offered
    /// again, or parked ones found applied, do not count: they came before.
    pub duplicates: u64,
    pub holds: u64,
    pub stripped: u64,
    pub passed_through: u64,
    pub overflowed: u64,
    pub requests_sent: u64,
    pub requests_answered: u64,
    /// Retransmission requests that came while the answer to an earlier one was still queued
    /// (not answered again: the requester asks again if it still misses something).
    pub requests_deferred: u64,
    pub logs_retransmitted: u64,
    pub logs_resent: u64,
    /// Frames that took a wrapping group's commit vector straight back to the buffer
    /// ([`ReplicaConfig::direct_commit_vectors`]).
    pub direct_commit_vectors: u64,
}

/// This server in one group it does not head.
#[derive(Debug)]
struct Member {
    mb: MbIndex,
    store: Arc<Store>,
    tail: bool,
    retention: Retention,
    /// When to ask the predecessor for the logs this server lacks.
    request: RequestTimer,
}

/// Partitions a tail gathers to announce before it drops those named twice.
const ANNOUNCE_DEDUP: usize = 64;

/// The commit vector this server announces as the tail of `members[member]`.
#[derive(Debug)]
struct Tail {
    member: usize,
    /// Partitions to announce: applied since the last announcement, or seen in a duplicate (a
    /// predecessor resent a log of them, so the announcement never reached it).
    /// (A `Vec`, made with room for twice [`ANNOUNCE_DEDUP`], pushed to one partition at a
    /// time: cheaper than a `SmallVec`, and under callgrind on Ch-2 28 instructions per packet
    /// cheaper than `Vec::extend`.)
    announce: Vec<u16>,
    /// The length of `announce` past which it drops the partitions named twice: twice what it
    /// kept at the last drop, at least [`ANNOUNCE_DEDUP`]. (Past a fixed length, a tail that
    /// had thousands of partitions to announce sorted them all again for each log: after a
    /// recovery, a tail offering 30,000 held frames again spent half its time sorting.)
    dedup_at: usize,
    /// Whether announcements may wait ([`ReplicaConfig::lazy_announce_ns`]): the group does
    /// not wrap past the buffer, so no packet waits on its commit vector.
    lazy: bool,
    /// When the last announcement left.
    announced_at: Option<u64>,
}

impl Tail {
    /// Partitions to announce.
    fn note(&mut self, partitions: impl Iterator<Item = u16>) {
        for p in partitions {
            self.announce.push(p);
        }
        // A lazy announcement gathers many logs' partitions: keep each once.
        if self.announce.len() > self.dedup_at {
            self.announce.sort_unstable();
            self.announce.dedup();
            self.dedup_at = ANNOUNCE_DEDUP.max(2 * self.announce.len());
        }
    }

    /// When what there is to announce is due: at once, or a lazy interval after the last
    /// announcement; `None` when there is nothing.
    fn due(&self, lazy_ns: u64) -> Option<u64> {
        if self.announce.is_empty() {
            return None;
        }
        Some(match (self.lazy, self.announced_at) {
            (true, Some(t)) => t.saturating_add(lazy_ns),
            _ => 0,
        })
    }
}

/// The replication core of one server.
#[derive(Debug)]
pub struct Replica {
    ring: Ring,
    me: ServerId,
    partitions: usize,
    config: ReplicaConfig,
    members: Vec<Member>,
    /// The group this server heads and the logs of it retained.
    head: Option<(MbIndex, Retention)>,
    tail: Option<Tail>,
    /// Logs and commit vectors that did not fit a frame, for the next server.
    overflow: Outbox,
    /// Retransmitted logs for the next server.
    answers: Outbox,
    /// Commit vectors for the buffer's server, this server's predecessor
    /// ([`ReplicaConfig::direct_commit_vectors`]); `None` where they do not go straight there.
    direct: Option<Outbox>,
    /// Held logs of this server's lanes, which share its stores (none with one lane).
    parked: Option<Arc<ParkedLogs>>,
    /// With several lanes: the time up to which every lane handled what reached it
    /// ([`Replica::set_caught_up`]); hold timeouts count in it.
    caught_up: Option<u64>,
    /// When [`Replica::poll_transmit`] last looked.
    looked_at: u64,
    stats: ReplicaStats,
}

impl Replica {
    /// The core of server `me` of `ring`, with fresh stores for the groups it replicates.
    pub fn new(
        ring: Ring,
        me: ServerId,
        partitions: u32,
        config: ReplicaConfig,
    ) -> Result<Self, StmError> {
        let stores = ring
            .replicated_by(me)
            .map(|mb| Ok((mb, Arc::new(Store::new(partitions, 1)?))))
            .collect::<Result<Vec<_>, StmError>>()?;
        Ok(Self::with_stores(ring, me, partitions, config, stores))
    }

    /// The core of server `me` with the given replica stores (one per group it replicates, as
    /// after a recovery).
    pub fn with_stores(
        ring: Ring,
        me: ServerId,
        partitions: u32,
        config: ReplicaConfig,
        stores: Vec<(MbIndex, Arc<Store>)>,
    ) -> Self {
        let p = partitions as usize;
        let members: Vec<Member> = stores
            .into_iter()
            .map(|(mb, store)| Member {
                mb,
                store,
                tail: ring.tail(mb) == me,
                retention: Retention::new(p),
                request: RequestTimer::default(),
            })
            .collect();
        let tail = members.iter().position(|m| m.tail).map(|member| Tail {
            member,
            announce: Vec::with_capacity(2 * ANNOUNCE_DEDUP),
            dedup_at: ANNOUNCE_DEDUP,
            lazy: !ring.wraps(members[member].mb),
            announced_at: None,
        });
        // Only where it saves hops: the buffer's server precedes this one and does not follow it
        // too (a chain of two servers, where frames reach it next anyway).
        let direct = (config.direct_commit_vectors
            && tail.as_ref().is_some_and(|t| !t.lazy)
            && ring.prev_server(me) == ring.buffer()
            && ring.next_server(me) != ring.buffer())
        .then(|| Outbox::new(p));
        Replica {
            ring,
            me,
            partitions: p,
            config,
            head: ring.middlebox_at(me).map(|mb| (mb, Retention::new(p))),
            tail,
            direct,
            members,
            overflow: Outbox::new(p),
            answers: Outbox::new(p),
            parked: None,
            caught_up: None,
            looked_at: 0,
            stats: ReplicaStats::default(),
        }
    }

    /// The core of a replacement server `me` after a failure (DESIGN.md §8 step 3), from the
    /// state of every group it replicates and, if it heads a group, that group's retained logs
    /// (its store is the head's, restored by the driver).
    pub fn restore(
        ring: Ring,
        me: ServerId,
        partitions: u32,
        config: ReplicaConfig,
        groups: &[GroupState],
        now: u64,
    ) -> Result<Self, ReplicaError> {
        let stores = ring
            .replicated_by(me)
            .map(|mb| {
                let state =
                    groups
                        .iter()
                        .find(|g| g.middlebox == mb)
                        .ok_or(ReplicaError::Restore(
                            "the state of a replicated group is missing",
                        ))?;
                let store = Store::new(partitions, 1)?;
                store.restore(&state.snapshot)?;
                Ok((mb, Arc::new(store)))
            })
            .collect::<Result<Vec<_>, ReplicaError>>()?;
        let mut replica = Self::with_stores(ring, me, partitions, config, stores);
        for group in groups {
            let retention = match &mut replica.head {
                Some((mb, r)) if *mb == group.middlebox => r,
                _ => match replica.members.iter_mut().find(|m| m.mb == group.middlebox) {
                    Some(m) if m.tail => continue,
                    Some(m) => &mut m.retention,
                    None => {
                        return Err(ReplicaError::Restore(
                            "state of a group this server is not in",
                        ))
                    }
                },
            };
            for log in &group.retained {
                let log = LogView::new_checked(log)?;
                // A dependency on a partition the store lacks could never be covered: the log
                // would be kept, and resent, for good.
                if log.deps().any(|d| u32::from(d.partition.0) >= partitions) {
                    return Err(ReplicaError::Restore(
                        "a retained log depends on a partition the store lacks",
                    ));
                }
                retention.retain(&log, now);
            }
        }
        Ok(replica)
    }

    /// As a tail, announce the whole MAX at once in a propagating frame
    /// ([`Replica::poll_transmit`]): after a recovery's reroute (a replaced buffer knows no
    /// commit vector), and when the buffer asks ([`FLAG_ANNOUNCE_REQUEST`]) because a packet
    /// waits too long for an announcement that got lost.
    pub fn announce_max(&mut self) {
        if let Some(tail) = &self.tail {
            let member = &self.members[tail.member];
            self.overflow
                .merge_cv(member.mb.0, member.store.vector_entries());
        }
    }

    /// The encoded logs of `mb`'s group this server retains, oldest first (for a recovery's
    /// state transfer); `None` when it is not in that group.
    pub fn retained_logs(&self, mb: MbIndex) -> Option<Vec<Vec<u8>>> {
        Some(self.retention(mb)?.logs().map(<[u8]>::to_vec).collect())
    }

    /// This server.
    pub fn server(&self) -> ServerId {
        self.me
    }

    /// MAX(`mb`)\[`partition`\] at this server, if it is a non-head member of `mb`'s group: what
    /// a [`Wait`] compares with. The store is shared with the server's other lanes, so their
    /// applies show here at once.
    pub fn max_at(&self, mb: MbIndex, partition: Partition) -> Option<Seq> {
        Some(self.store(mb)?.seq(partition))
    }

    /// The replica store of `mb`'s group, if this server is a non-head member of it.
    pub fn store(&self, mb: MbIndex) -> Option<&Arc<Store>> {
        self.members.iter().find(|m| m.mb == mb).map(|m| &m.store)
    }

    /// Counters.
    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// The retained logs of every group this server is in, as a member or its head.
    fn retentions(&self) -> impl Iterator<Item = &Retention> {
        let members = self.members.iter().map(|m| &m.retention);
        members.chain(self.head.as_ref().map(|(_, r)| r))
    }

    fn retentions_mut(&mut self) -> impl Iterator<Item = &mut Retention> {
        let members = self.members.iter_mut().map(|m| &mut m.retention);
        members.chain(self.head.as_mut().map(|(_, r)| r))
    }

    /// Retained logs (count, bytes) over all groups, for memory bounds.
    pub fn retained(&self) -> (usize, usize) {
        self.retentions()
            .fold((0, 0), |(n, b), r| (n + r.len(), b + r.byte_len()))
    }

    /// What this server knows of CV(`mb`) (for pruning), if it is in `mb`'s group.
    pub fn commit_vector(&self, mb: MbIndex) -> Option<&CommitVector> {
        self.retention(mb).map(Retention::known)
    }

    /// Merges what this server learned of CV(`mb`) at `now` (in a message, or from another of
    /// its worker threads), pruning the retained logs it covers; ignored unless this server is
    /// in `mb`'s group.
    pub fn merge_commit_vector(
        &mut self,
        now: u64,
        mb: MbIndex,
        entries: impl Iterator<Item = DepEntry>,
    ) {
        if let Some(r) = self.retention_mut(mb) {
            r.merge_cv(entries, now);
        }
    }

    /// The logs of `mb`'s group this server retains, as its head or a member.
    fn retention(&self, mb: MbIndex) -> Option<&Retention> {
        match &self.head {
            Some((head, r)) if *head == mb => Some(r),
            _ => Some(&self.members.iter().find(|m| m.mb == mb)?.retention),
        }
    }

    fn retention_mut(&mut self, mb: MbIndex) -> Option<&mut Retention> {
        match &mut self.head {
            Some((head, r)) if *head == mb => Some(r),
            _ => Some(&mut self.members.iter_mut().find(|m| m.mb == mb)?.retention),
        }
    }

    /// Handle a frame's incoming message: apply or check the logs of this server's groups,
    /// merge commit vectors. (Thesis §4.3.1, §4.3.3, §4.4.1.)
    pub fn handle_message(
        &mut self,
        now: u64,
        msg: &MessageView<'_>,
    ) -> Result<Admit, ReplicaError> {
        self.handle(now, msg, true)
    }

    /// [`Replica::handle_message`] for the message of a held frame offered again. Its logs found
    /// applied are not counted as duplicates: they arrived before they were applied (another
    /// lane applied them from the parked logs, or another copy came meanwhile).
    pub fn handle_held_message(
        &mut self,
        now: u64,
        msg: &MessageView<'_>,
    ) -> Result<Admit, ReplicaError> {
        self.handle(now, msg, false)
    }

    /// [`Replica::handle_message`]; `arrived`: the message is new here, not a held frame's.
    fn handle(
        &mut self,
        now: u64,
        msg: &MessageView<'_>,
        arrived: bool,
    ) -> Result<Admit, ReplicaError> {
        let mut waits = Waits::default();
        let applied = self.stats.applied;
        for log in msg.logs() {
            let Some(member) = self.members.iter_mut().find(|m| m.mb.0 == log.middlebox()) else {
                self.foreign(log.middlebox())?;
                self.stats.passed_through += 1;
                continue;
            };
            let tail = self.tail.as_mut().filter(|_| member.tail);
            let ready = match log.kind() {
                LogKind::Update => took(member, tail, &mut self.stats, &log, now, arrived)?,
                LogKind::ReadOnly => member.store.is_satisfied(log.deps())?,
                LogKind::Noop => true,
            };
            if !ready {
                let wait = Wait::for_log(member.mb, &member.store, &log);
                if let Some(parked) = self
                    .parked
                    .as_ref()
                    .filter(|_| log.kind() == LogKind::Update)
                {
                    parked.park(wait, &log);
                }
                waits.add(wait);
            }
        }
        if self.stats.applied > applied {
            self.apply_parked(now)?;
        }
        self.merge_cvs(now, msg)?;
        if waits.0.is_empty() {
            return Ok(Admit::Ready);
        }
        self.stats.holds += 1;
        for wait in &waits.0 {
            self.still_holding(wait, now);
        }
        Ok(Admit::Hold(waits))
    }

    /// Shares `parked` with the server's other lanes (which share this replica's stores): logs
    /// this lane holds are parked there, and logs another lane parked are applied here as soon
    /// as they can be ([`ParkedLogs`]).
    pub fn share_parked(&mut self, parked: Arc<ParkedLogs>) {
        self.parked = Some(parked);
    }

    /// A new epoch (DESIGN.md §8 step 1): the driver drops its held frames, and the logs parked
    /// from them go too, since they may be ones the recovery rolls back. The resend timeouts
    /// start again from `resend_timeout`: the rerouted ring is not the one they were learned
    /// on, and the failure itself (no commit vector while it was detected) stretched them.
    pub fn fence(&mut self) {
        if let Some(parked) = &self.parked {
            parked.clear();
        }
        for m in &mut self.members {
            m.request.clear();
        }
        for r in self.retentions_mut() {
            r.forget_timing();
        }
    }

    /// Applies the parked logs that can be now, and those they free.
    fn apply_parked(&mut self, now: u64) -> Result<(), ReplicaError> {
        let Some(parked) = self.parked.as_ref().filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        let mut failed = None;
        parked.drain(|wait, bytes| {
            let member = self.members.iter_mut().find(|m| m.mb == wait.middlebox)?;
            if member.store.seq(wait.partition) < wait.seq {
                return Some(*wait);
            }
            let log = LogView::new_checked(bytes).ok()?;
            let tail = self.tail.as_mut().filter(|_| member.tail);
            match took(member, tail, &mut self.stats, &log, now, false) {
                Ok(true) => None,
                Ok(false) => Some(Wait::for_log(member.mb, &member.store, &log)),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            }
        });
        failed.map_or(Ok(()), |e| Err(e.into()))
    }

    /// A frame flagged [`FLAG_RESENT`] arrived (call this before handling it): its logs were
    /// resent because no commit vector covered them. When it carries an update log of a group
    /// this server has not applied and holds no frame for, this server may lack more of that
    /// group, which nothing else asks for (an idle chain holds no frame for them): the group
    /// asks its predecessor for every log after its MAX at its next look, at once: one answer
    /// then brings everything ([`Replica::handle_retransmit_request`]), instead of a resend
    /// round of one frame per resend timeout.
    ///
    /// Nothing is asked for when the server has all those logs applied already (a commit
    /// vector was slow or lost: the tail announces again when it sees the duplicates), nor
    /// when it holds frames of the group (in any lane): it asks for the gaps they wait for, and
    /// a server that lags far behind its predecessor (a loaded machine) would be sent again
    /// every log its predecessor retains. A saturated NAT chain of two lanes per server was:
    /// 11,000 logs twice in one answer, 160,000 to 240,000 logs sent again in a second.
    pub fn resent_arrived(&mut self, now: u64, msg: &MessageView<'_>) {
        let parked = self.parked.as_deref();
        for log in msg.logs().filter(|l| l.kind() == LogKind::Update) {
            let Some(m) = self.members.iter_mut().find(|m| m.mb.0 == log.middlebox()) else {
                continue;
            };
            // A dependency on a partition the store lacks is the message's error, found when
            // it is handled.
            let partitions = self.partitions;
            let lacks = log.deps().any(|d| {
                usize::from(d.partition.0) < partitions && m.store.seq(d.partition) <= d.seq
            });
            let holds = !m.request.is_idle() || parked.is_some_and(|p| p.holds(m.mb));
            if lacks && !holds {
                m.request.resent(now);
            }
        }
    }

    /// Frames are held at `now` for `wait` (the lowest sequence they wait for there): the
    /// predecessor is asked for the logs of that partition up to it every hold timeout while
    /// this is said and its MAX does not move (see [`Replica::poll_transmit`]).
    /// [`Replica::handle_message`] says it of each hold; a driver that does not offer every
    /// held frame again after each apply says it of what it still holds frames for, once it
    /// offered what may go.
    pub fn still_holding(&mut self, wait: &Wait, now: u64) {
        if let Some(m) = self.members.iter_mut().find(|m| m.mb == wait.middlebox) {
            let max = m.store.seq(wait.partition);
            // A wait reached already frees its frame at the driver's next look.
            if wait.seq > max {
                m.request.held(now, wait.partition, wait.seq, max);
            }
        }
    }

    /// With several lanes (worker threads) over this server's stores: every lane handled all
    /// that had reached it by `t` (the driver's word, gathered over the lanes). Hold timeouts
    /// count in this time, not in the clock: a frame waits for a log that another lane has not
    /// read yet for as long as that lane does not run, and asking the predecessor would only
    /// bring it twice. Without it (one lane) they count in the clock.
    pub fn set_caught_up(&mut self, t: u64) {
        self.caught_up = Some(t);
    }

    /// A retransmission request is due by the clock but waits until the server has caught up
    /// to its due time ([`Replica::set_caught_up`]): that time, for the driver to make the lanes
    /// that have not caught up to it run.
    pub fn request_waits_for(&self) -> Option<u64> {
        let due = self.members.iter().filter_map(|m| self.request_due(m));
        due.filter(|&(_, waits)| waits).map(|(due, _)| due).min()
    }

    /// When `m`'s retransmission request is due, and whether it waits for the lanes to catch up
    /// to that time (it was due by the clock when [`Replica::poll_transmit`] last looked).
    fn request_due(&self, m: &Member) -> Option<(u64, bool)> {
        let due = m.request.due(self.config.hold_timeout_ns)?;
        let waits = self
            .caught_up
            .is_some_and(|t| due > t && due <= self.looked_at);
        Some((due, waits))
    }

    fn merge_cvs(&mut self, now: u64, msg: &MessageView<'_>) -> Result<(), ReplicaError> {
        for cv in msg.commit_vectors() {
            self.foreign(cv.middlebox())?;
            self.merge_commit_vector(now, MbIndex(cv.middlebox()), cv.entries());
        }
        Ok(())
    }

    /// [`ReplicaError::Foreign`] when `mb` is not a middlebox of the chain: the wire check sees
    /// only a message's structure, and the ring's lookups take the chain's middleboxes only.
    fn foreign(&self, mb: u8) -> Result<(), ReplicaError> {
        let middleboxes = self.ring.middleboxes();
        match usize::from(mb) < middleboxes {
            true => Ok(()),
            false => Err(ReplicaError::Foreign {
                middlebox: mb,
                middleboxes,
            }),
        }
    }

    /// Write the message a frame carries on into `out` (what it wrote: its length, and a view of
    /// it through [`MessageView::written`]): the incoming logs less those this server
    /// tails, `own` (this server's log, if it heads a group), the commit vectors still on their
    /// way, and the commit vector of the group this server tails.
    ///
    /// The packet's own logs (those of groups j ≤ this server: the heads it passed on this trip;
    /// logs the forwarder attached belong to groups whose tails come before their heads) always
    /// stay with it, bounded only by `out`: the buffer's release rule and the tails' stripping
    /// rely on a packet carrying its logs. Everything else keeps to `budget` bytes; what does not
    /// fit goes to the next server in propagating frames ([`Replica::poll_transmit`]).
    pub fn build_message(
        &mut self,
        now: u64,
        incoming: &MessageView<'_>,
        own: Option<&impl LogSource>,
        out: &mut [u8],
        budget: usize,
    ) -> Result<Written, ReplicaError> {
        let me = self.me.0;
        let mut w = MessageWriter::new(out, 0)?;
        let mut deferred = false;
        for log in incoming.logs() {
            let mb = MbIndex(log.middlebox());
            if self.ring.tail(mb) == self.me {
                self.stats.stripped += 1;
            } else if u16::from(mb.0) <= me {
                w.push_log_view(&log).map_err(|_| ReplicaError::FrameFull)?;
            } else {
                deferred = true;
            }
        }
        if let (Some(log), Some((mb, retention))) = (own, &mut self.head) {
            if log.kind() != LogKind::Noop {
                let encoded = w.push_log_viewed(mb.0, log).map_err(|e| match e {
                    WireError::NoRoom => ReplicaError::FrameFull,
                    e => e.into(),
                })?;
                if log.kind() == LogKind::Update {
                    retention.retain(&encoded, now);
                }
            }
        }
        if deferred {
            for log in incoming.logs().filter(|l| u16::from(l.middlebox()) > me) {
                if self.ring.tail(MbIndex(log.middlebox())) == self.me {
                    continue;
                }
                if w.len() + log.as_bytes().len() > budget
                    || push_or(&mut w, |w| w.push_log_view(&log))?
                {
                    self.overflow.push_log(&log);
                    self.stats.overflowed += 1;
                }
            }
        }
        let next = self.ring.next_server(self.me);
        for cv in incoming.commit_vectors() {
            // From its tail a commit vector goes round the ring up to the tail's predecessor,
            // the last member that needs it.
            if self.ring.tail(MbIndex(cv.middlebox())) == next {
                continue;
            }
            if w.len() + cv.as_bytes().len() > budget || push_or(&mut w, |w| w.push_cv_view(&cv))? {
                self.overflow.merge_cv(cv.middlebox(), cv.entries());
            }
        }
        self.announce_commit_vector(now, &mut w, budget)?;
        Ok(w.finish_written())
    }

    /// As the tail of a group: the entries of its MAX that moved since last announced, and those
    /// to announce again (thesis §4.4.1: the tail attaches its MAX as the commit vector). Costs
    /// what moved, not the partition count.
    ///
    /// The tail of a group that does not wrap announces at most once per
    /// [`ReplicaConfig::lazy_announce_ns`] (what no frame carried by then leaves in a
    /// propagating frame, [`Replica::poll_transmit`]).
    fn announce_commit_vector(
        &mut self,
        now: u64,
        w: &mut MessageWriter<'_>,
        budget: usize,
    ) -> Result<(), ReplicaError> {
        let Some((mb, entries)) = self.take_announcement(now) else {
            return Ok(());
        };
        if let Some(direct) = &mut self.direct {
            direct.merge_cv(mb, entries.iter().copied());
        }
        // More entries than one commit vector holds (a lazy tail of 65,536 partitions that saw
        // every one move) go in parts too, from the overflow.
        let fits = ftc_chain::wire::encoded_cv_len(entries.iter().copied())
            .is_ok_and(|len| w.len() + len <= budget);
        if !fits || push_or(w, |w| w.push_cv(mb, entries.iter().copied()))? {
            self.overflow.merge_cv(mb, entries.iter().copied());
        }
        Ok(())
    }

    /// When the lazy tail's announcement that no frame took is due, if there is one.
    fn lazy_announcement_due(&self) -> Option<u64> {
        self.tail
            .as_ref()
            .filter(|t| t.lazy)
            .and_then(|t| t.due(self.config.lazy_announce_ns))
    }

    /// The tail's announcement if one is due at `now`: its group and the entries of MAX it
    /// names.
    fn take_announcement(&mut self, now: u64) -> Option<(u8, SmallVec<[DepEntry; 16]>)> {
        let tail = self.tail.as_mut()?;
        if tail.due(self.config.lazy_announce_ns)? > now {
            return None;
        }
        tail.announced_at = Some(now);
        let member = &self.members[tail.member];
        tail.announce.sort_unstable();
        tail.announce.dedup();
        tail.dedup_at = ANNOUNCE_DEDUP;
        let entries: SmallVec<[DepEntry; 16]> = tail
            .announce
            .drain(..)
            .map(|p| DepEntry {
                partition: Partition(p),
                seq: member.store.seq(Partition(p)),
            })
            .collect();
        Some((member.mb.0, entries))
    }

    /// A retransmission request from `from` (the successor in some group), at `now`: queue the
    /// retained logs of that group it has not applied (or only those in the gaps it names),
    /// less those an earlier answer carried within the group's resend timeout, at most
    /// [`ANSWER_LOGS`] of them, the nearest to its MAX first (docs/protocol.md, Loss). (Thesis
    /// §4.3.1.)
    pub fn handle_retransmit_request(&mut self, now: u64, from: ServerId, msg: &MessageView<'_>) {
        if from != self.ring.next_server(self.me) {
            return;
        }
        // The last answer has not gone out yet: it holds what this request asks for too, or
        // the requester asks again. Answering every request in full would queue the same logs
        // again behind it each time, faster than they leave when the successor lags far.
        if !self.answers.is_empty() {
            self.stats.requests_deferred += 1;
            return;
        }
        let mut cvs = msg.commit_vectors().peekable();
        while let Some(cv) = cvs.next() {
            // One vector: MAX; pairs of vectors of the group: gaps ([`push_request`]).
            let more: SmallVec<[CvView<'_>; 8]> =
                std::iter::from_fn(|| cvs.next_if(|c| c.middlebox() == cv.middlebox())).collect();
            let mut max = CommitVector::new(self.partitions);
            let gaps = if more.is_empty() {
                max.merge(cv.entries());
                None
            } else {
                Some(read_gaps(std::iter::once(cv).chain(more)))
            };
            let distance = |log: &LogView<'_>| match &gaps {
                None => log
                    .deps()
                    .filter_map(|d| d.seq.0.checked_sub(max.get(d.partition)?.0))
                    .min(),
                Some(gaps) => log.deps().filter_map(|d| Gap::distance(gaps, &d)).min(),
            };
            let retention = match &mut self.head {
                Some((mb, r)) if mb.0 == cv.middlebox() => r,
                _ => match self.members.iter_mut().find(|m| m.mb.0 == cv.middlebox()) {
                    Some(m) => &mut m.retention,
                    None => continue,
                },
            };
            self.stats.requests_answered += 1;
            let (answers, stats) = (&mut self.answers, &mut self.stats);
            retention.answer(now, self.config.resend_timeout_ns, distance, |log| {
                answers.push_log(log);
                stats.logs_retransmitted += 1;
            });
        }
    }

    /// The next propagating frame to send now, written into `out`: a retransmission request to
    /// the predecessor, retransmitted logs, overflow or resent logs to the successor.
    pub fn poll_transmit(
        &mut self,
        now: u64,
        out: &mut [u8],
    ) -> Result<Option<Transmit>, ReplicaError> {
        let prev = self.ring.prev_server(self.me);
        let next = self.ring.next_server(self.me);
        // A lazy announcement no frame took: it goes on its own, with whatever else waits.
        // (Others ride on the next frame, as they always did.)
        if self.tail.as_ref().is_some_and(|t| t.lazy) {
            if let Some((mb, entries)) = self.take_announcement(now) {
                self.overflow.merge_cv(mb, entries.into_iter());
            }
        }
        self.looked_at = now;
        let timeout = self.config.hold_timeout_ns;
        let clock = self.caught_up.map_or(now, |t| t.min(now));
        for m in &mut self.members {
            if m.request.due(timeout).is_none_or(|at| clock < at) {
                continue;
            }
            if let Some(parked) = &self.parked {
                parked.held(m.mb, |p, seq| m.request.also_held(p, seq));
            }
            let store = &m.store;
            let Some(gaps) = m.request.look(now, clock, timeout, |p| store.seq(p)) else {
                continue;
            };
            let mut w = MessageWriter::new(out, 0)?;
            push_request(&mut w, m.mb.0, store, &gaps)?;
            self.stats.requests_sent += 1;
            return Ok(Some(Transmit {
                to: prev,
                flags: FLAG_RETRANSMIT_REQUEST,
                len: w.finish(),
            }));
        }
        if let Some(direct) = self.direct.as_mut().filter(|d| !d.is_empty()) {
            let transmit = drain_to(direct, out, prev)?;
            self.stats.direct_commit_vectors += 1;
            return Ok(Some(transmit));
        }
        for outbox in [&mut self.answers, &mut self.overflow] {
            if !outbox.is_empty() {
                return drain_to(outbox, out, next).map(Some);
            }
        }
        let timeout = self.config.resend_timeout_ns;
        let mut w = MessageWriter::new(out, 0)?;
        let mut resent = 0;
        for r in self.retentions_mut() {
            r.resend_due(now, timeout, |log| {
                let ok = w.push_log_view(log).is_ok();
                resent += u64::from(ok);
                ok
            });
        }
        self.stats.logs_resent += resent;
        Ok((resent > 0).then(|| Transmit {
            to: next,
            flags: FLAG_RESENT,
            len: w.finish(),
        }))
    }

    /// When [`Replica::poll_transmit`] has something to do at the latest (`Some(now)`-or-earlier
    /// means at once).
    pub fn poll_timeout(&self) -> Option<u64> {
        let direct = self.direct.as_ref().is_some_and(|d| !d.is_empty());
        if direct || !self.answers.is_empty() || !self.overflow.is_empty() {
            return Some(0);
        }
        // A request due by the clock that waits for the lanes to catch up is looked at again
        // every quarter of a hold timeout (the driver makes those lanes run meanwhile).
        let again = self
            .looked_at
            .saturating_add(self.config.hold_timeout_ns / 4);
        let holds = self.members.iter().filter_map(|m| {
            let (due, waits) = self.request_due(m)?;
            Some(if waits { again } else { due })
        });
        let resends = self
            .retentions()
            .filter_map(|r| r.resend_at(self.config.resend_timeout_ns));
        holds
            .chain(resends)
            .chain(self.lazy_announcement_due())
            .min()
    }
}

/// Offers update `log` to `member`'s store: whether it is in (applied now, or a duplicate),
/// with the bookkeeping of either. `tail` is the tail's announcement if `member` is its group's
/// tail. `arrived`: the log just came (a duplicate is counted), not held here before.
fn took(
    member: &mut Member,
    tail: Option<&mut Tail>,
    stats: &mut ReplicaStats,
    log: &LogView<'_>,
    now: u64,
    arrived: bool,
) -> Result<bool, StmError> {
    match member.store.apply(log)? {
        ApplyOutcome::Applied => {
            stats.applied += 1;
            match tail {
                Some(tail) => tail.note(log.deps().map(|d| d.partition.0)),
                None => member.retention.retain(log, now),
            }
            Ok(true)
        }
        ApplyOutcome::Duplicate => {
            stats.duplicates += u64::from(arrived);
            if let Some(tail) = tail {
                tail.note(log.deps().map(|d| d.partition.0));
            }
            Ok(true)
        }
        ApplyOutcome::Hold => Ok(false),
    }
}

/// Writes a retransmission request for `mb`'s group (docs/protocol.md, Loss): without `gaps`,
/// a commit vector, MAX from `store`, for every log after it (its entries above 0, as many as
/// fit: the predecessor takes an entry left out as 0 and answers with more logs than needed,
/// which the requester skips as duplicates). With `gaps` (sorted by partition and start),
/// pairs of vectors: the k-th names, for each partition with k + 1 gaps or more, the start and
/// the end of its k-th gap; as many as fit.
fn push_request(
    w: &mut MessageWriter<'_>,
    mb: u8,
    store: &Store,
    gaps: &[Gap],
) -> Result<(), WireError> {
    if gaps.is_empty() {
        return w.push_cv(mb, store.vector_entries().take(w.cv_room()));
    }
    let partitions: Vec<&[Gap]> = gaps.chunk_by(|a, b| a.partition == b.partition).collect();
    let pairs = partitions.iter().map(|p| p.len()).max().unwrap_or(0);
    let entry = |seq: fn(&Gap) -> Seq| {
        move |g: &Gap| DepEntry {
            partition: g.partition,
            seq: seq(g),
        }
    };
    for k in 0..pairs {
        let kth: SmallVec<[Gap; 16]> = partitions
            .iter()
            .filter_map(|p| p.get(k))
            .copied()
            .collect();
        let fit = kth.len().min(w.cv_room().saturating_sub(1) / 2);
        if fit == 0 {
            break;
        }
        w.push_cv(mb, kth[..fit].iter().map(entry(|g| g.from)))?;
        w.push_cv(mb, kth[..fit].iter().map(entry(|g| g.to)))?;
    }
    Ok(())
}

/// The gaps that pairs of commit vectors name ([`push_request`]), sorted by partition and
/// start.
fn read_gaps<'a>(mut cvs: impl Iterator<Item = CvView<'a>>) -> Vec<Gap> {
    let mut gaps = Vec::new();
    while let (Some(starts), Some(ends)) = (cvs.next(), cvs.next()) {
        let pairs = starts.entries().zip(ends.entries());
        gaps.extend(
            pairs
                .filter(|(s, e)| s.partition == e.partition)
                .map(|(s, e)| Gap {
                    partition: s.partition,
                    from: s.seq,
                    to: e.seq,
                }),
        );
    }
    gaps.sort_unstable_by_key(|g| (g.partition, g.from));
    gaps
}

/// A propagating frame to `to` with as much of `outbox` as fits `out` (the rest stays).
/// [`WireError::NoRoom`] when `out` holds nothing of a non-empty `outbox`: an empty frame
/// would leave it as it was, and the driver would be asked for another at once, for good.
fn drain_to(outbox: &mut Outbox, out: &mut [u8], to: ServerId) -> Result<Transmit, ReplicaError> {
    let mut w = MessageWriter::new(out, 0)?;
    outbox.fill(&mut w)?;
    if w.log_count() == 0 && w.cv_count() == 0 {
        return Err(WireError::NoRoom.into());
    }
    Ok(Transmit {
        to,
        flags: 0,
        len: w.finish(),
    })
}

/// Try a push; `Ok(true)` when it did not fit (the caller keeps the item for later).
fn push_or(
    w: &mut MessageWriter<'_>,
    push: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), WireError>,
) -> Result<bool, WireError> {
    match push(w) {
        Ok(()) => Ok(false),
        Err(WireError::NoRoom) => Ok(true),
        Err(e) => Err(e),
    }
}
