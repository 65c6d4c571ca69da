//! [`Buffer`]: the egress state machine on server n−1; it holds each packet until the commit
//! vectors of the wrapping groups cover its message's logs, and gathers what goes back to the
//! forwarder.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::iter;

use ftc_chain::outbox::Outbox;
use ftc_chain::ring::{MbIndex, Ring};
use ftc_chain::wire::{CommitVector, MessageView, MessageWriter, WireError};
use ftc_stm::{DepEntry, LogKind};

use crate::config::{BufferConfig, BufferStats, Weakened};
use crate::wait::{add_need, Need, Waiters};

/// "No slot": the end of a flow's queue or of the free list.
const NONE: u32 = u32::MAX;

/// A customer packet offered to the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<P> {
    /// The packet's flow: packets of one flow leave in the order they were accepted. Any stable
    /// id the driver likes (a keyed hash of the 5-tuple, say); the buffer only compares them.
    pub flow: u64,
    /// Bytes the packet occupies, counted against [`BufferConfig::max_held_bytes`].
    pub len: usize,
    /// The driver's handle on the packet (a `Vec<u8>`, a UMEM frame index …).
    pub handle: P,
}

/// A packet the buffer could not take: it is handed back whole. Back-pressure: the driver keeps
/// it and offers it again with [`Buffer::retry`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("buffer full: packet refused, offer it again with Buffer::retry")]
pub struct Refused<P>(pub Packet<P>);

/// A packet that may leave the chain now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released<P> {
    /// The driver's handle, as offered.
    pub handle: P,
    /// The packet's flow.
    pub flow: u64,
    /// The packet's length, as offered.
    pub len: usize,
    /// Nanoseconds from acceptance to release.
    pub hold_ns: u64,
}

/// One held packet; slots are reused through a free list, wait set storage included.
#[derive(Debug)]
struct Slot<P> {
    /// `Some` while the slot holds a packet.
    handle: Option<P>,
    flow: u64,
    len: usize,
    accepted_at: u64,
    /// The packet's place in the order of acceptance (tells [`Buffer::accepted`]'s entries of
    /// a reused slot apart).
    seq: u64,
    /// What the packet still waits for. Pruned lazily: only checked when it heads its flow.
    needs: Vec<Need>,
    /// The next packet of the same flow, or the next free slot.
    next: u32,
}

/// The queue of held packets of one flow, oldest first.
#[derive(Debug, Clone, Copy)]
struct Flow {
    head: u32,
    tail: u32,
    /// Packets of this flow refused and not yet accepted on [`Buffer::retry`]: while there are
    /// any, new packets of the flow are refused too, so that none overtakes them.
    refused: u32,
}

impl Flow {
    const EMPTY: Flow = Flow {
        head: NONE,
        tail: NONE,
        refused: 0,
    };
}

/// What a middlebox index names, for the buffer.
enum Group {
    /// Not a middlebox of this chain.
    Foreign,
    /// A group that does not wrap: nothing to wait for.
    Plain,
    /// The g-th wrapping group.
    Wrapping(u8),
}

/// Flow ids come from the driver, which derives them by hashing the 5-tuple: [`FlowHasher`]
/// only spreads them, and keeps the core free of randomness.
type FlowMap = HashMap<u64, Flow, BuildHasherDefault<FlowHasher>>;

/// The flow map's hasher: one fold and one multiply per id, where SipHash took about a hundred
/// instructions, four times per packet. Any fixed hash, SipHash with its fixed default key
/// included, can be flooded by whoever picks the ids; `ftc node` derives them with a hash keyed
/// per process (`ftc_node::nsh::flow_of`), so the ids, and with them the buckets, are not the
/// sender's to pick.
#[derive(Debug, Default)]
struct FlowHasher(u64);

impl Hasher for FlowHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Folding the high half in first lets ids that differ only there land apart.
        self.0 = (self.0 ^ id ^ (id >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The egress core of a chain (DESIGN.md §7, thesis §4.4.1). Sans-IO: time comes in as `now`
/// (nanoseconds, any fixed origin), packets as opaque handles `P`.
///
/// # Calls
///
/// - inputs: [`Buffer::handle_frame`] for every frame that leaves server n−1's replica,
///   [`Buffer::retry`] for a refused packet, [`Buffer::handle_incoming_cvs`] for the message
///   that *entered* server n−1's replica (see there);
/// - outputs: [`Buffer::poll_release`] (packets that may leave the chain) and
///   [`Buffer::poll_return`] (messages for the forwarder over the ring-closing link);
/// - getters: [`Buffer::stats`], [`Buffer::commit_vector`].
///
/// A driver loop: take a batch of frames and hand each to `handle_frame` (refused packets are
/// kept and given to `retry` first in the next batch, in the order refused); then call
/// `poll_release` until `None` and `poll_return` until `None`. The driver **must drain
/// `poll_return` every batch**: the return queue is bounded only by that (it holds each log once
/// and one commit vector per middlebox), and the logs in it are what frees held packets.
///
/// # Release rule
///
/// A packet may leave when for every log L of a wrapping group j in its message, CV(j) covers L
/// (update: CV\[p\] ≥ D\[p\]+1; read-only: CV\[p\] ≥ D\[p\]; no-op: nothing), and every earlier
/// accepted packet of its flow has left. Only the first held packet of each flow is examined,
/// parked on one (group, partition) entry it still lacks; a commit vector entry that moves wakes
/// exactly the packets parked on it that it now satisfies. Per frame the cost is O(logs · deps)
/// to build the packet's wait set plus O(entries moved + woken · log held); nothing is scanned
/// per held packet, and after warm-up nothing is allocated per packet (slots, wait sets, heaps
/// and scratch vectors keep their storage).
#[derive(Debug)]
pub struct Buffer<P> {
    ring: Ring,
    config: BufferConfig,
    /// P: partitions per middlebox.
    partitions: usize,
    /// Middlebox index of the first wrapping group: they are n−f … k−1.
    first_wrapping: usize,
    /// CV(j) of each wrapping group, in order.
    cvs: Vec<CommitVector>,
    waiters: Waiters,
    slots: Vec<Slot<P>>,
    /// Held packets in the order they were accepted, as (seq, slot), with entries of packets
    /// gone since (dropped when they reach the front, or all at once when they outnumber the
    /// held packets): the front is the oldest held packet, for [`Buffer::poll_timeout`].
    accepted: VecDeque<(u64, u32)>,
    /// Packets accepted so far.
    accepted_count: u64,
    free: u32,
    flows: FlowMap,
    /// Packets that may leave, in the order they became free to.
    ready: VecDeque<u32>,
    /// The return path to the forwarder.
    outbox: Outbox,
    stats: BufferStats,
    /// Scratch: commit vector entries that moved in the current message.
    moved: Vec<(u8, ftc_stm::Partition)>,
    /// Scratch: packets woken by them.
    woken: Vec<u32>,
    /// When the tails were last asked to announce again.
    requested_at: Option<u64>,
    /// When the last return message was written (commit vectors alone wait
    /// [`BufferConfig::lazy_return_ns`] after it).
    returned_at: Option<u64>,
}

impl<P> Buffer<P> {
    /// A buffer for `ring`, whose middleboxes have `partitions` partitions each. A
    /// `max_held_packets` above `u32::MAX − 1` is lowered to it.
    pub fn new(ring: Ring, partitions: u32, config: BufferConfig) -> Self {
        let partitions = partitions as usize;
        let first_wrapping = ring.servers() - ring.f();
        let groups = ring.wrapping_groups().count();
        let config = BufferConfig {
            max_held_packets: config.max_held_packets.min(NONE as usize - 1),
            ..config
        };
        Buffer {
            ring,
            config,
            partitions,
            first_wrapping,
            cvs: (0..groups).map(|_| CommitVector::new(partitions)).collect(),
            waiters: Waiters::new(groups, partitions),
            slots: Vec::new(),
            accepted: VecDeque::new(),
            accepted_count: 0,
            free: NONE,
            flows: FlowMap::default(),
            ready: VecDeque::new(),
            outbox: Outbox::new(partitions),
            stats: BufferStats::default(),
            moved: Vec::new(),
            woken: Vec::new(),
            requested_at: None,
            returned_at: None,
        }
    }

    /// A frame that left server n−1's replica, with its outgoing message `msg`; `packet` is
    /// `None` for a propagating frame.
    ///
    /// Always, even when the packet is refused: the message's commit vectors are merged (which
    /// may free held packets) and its update logs of wrapping groups and all its commit vectors are
    /// queued for the return path. Then the packet is accepted, or handed back as
    /// [`Refused`] when holding it would exceed a bound of [`BufferConfig`] or an earlier
    /// packet of its flow is still refused (so that it cannot overtake it).
    pub fn handle_frame(
        &mut self,
        now: u64,
        msg: &MessageView<'_>,
        packet: Option<Packet<P>>,
    ) -> Result<(), Refused<P>> {
        match packet {
            Some(_) => self.stats.data_frames += 1,
            None => self.stats.propagating_frames += 1,
        }
        self.queue_return(msg);
        self.merge_cvs(msg);
        match packet {
            Some(packet) => self.offer(now, msg, packet, false),
            None => Ok(()),
        }
    }

    /// Offers again a packet that was [`Refused`], with the message of its frame. The
    /// message's commit vectors are merged again (harmless), its logs are not queued again.
    ///
    /// The driver retries the refused packets of a flow in the order they were refused, before
    /// any later packet of that flow (which the buffer refuses meanwhile anyway).
    pub fn retry(
        &mut self,
        now: u64,
        msg: &MessageView<'_>,
        packet: Packet<P>,
    ) -> Result<(), Refused<P>> {
        self.merge_cvs(msg);
        self.offer(now, msg, packet, true)
    }

    /// The message that *entered* server n−1's replica: merges its commit vectors, nothing
    /// else. Needed because that replica strips CV(j) of the group whose tail is server 0
    /// (t(j) − 1 = n − 1, docs/protocol.md step 4) from its outgoing message, so the buffer would
    /// never see it in [`Buffer::handle_frame`]. Harmless when the vectors come again there.
    pub fn handle_incoming_cvs(&mut self, msg: &MessageView<'_>) {
        self.merge_cvs(msg);
    }

    /// The next packet that may leave the chain, with its hold time; packets of one flow come
    /// out in the order they were accepted.
    pub fn poll_release(&mut self, now: u64) -> Option<Released<P>> {
        let i = self.ready.pop_front()?;
        let slot = &mut self.slots[i as usize];
        let handle = slot.handle.take()?;
        let hold_ns = now.saturating_sub(slot.accepted_at);
        let released = Released {
            handle,
            flow: slot.flow,
            len: slot.len,
            hold_ns,
        };
        slot.next = self.free;
        self.free = i;
        let s = &mut self.stats;
        s.released += 1;
        s.held_packets -= 1;
        s.held_bytes -= released.len;
        s.total_hold_ns = s.total_hold_ns.saturating_add(hold_ns);
        s.max_hold_ns = s.max_hold_ns.max(hold_ns);
        self.forget_released();
        Some(released)
    }

    /// Writes a return message for the forwarder into `out` (a return frame carries no customer
    /// packet: the driver gives the trailer budget and a customer frame's room, and all of a
    /// frame's trailer when the next log needs it) and returns its length; `Ok(None)` when nothing
    /// is due. Call until `None`, every batch and after [`Buffer::poll_timeout`]. Logs leave in
    /// arrival order, commit vectors coalesced (only entries that moved since last written).
    /// [`WireError::NoRoom`] if `out` cannot hold the next log (it stays queued): `out` must be
    /// at least as large as the trailers the logs came in.
    ///
    /// Logs are due at once: held packets wait for them to reach their groups' tails. Commit
    /// vectors alone are due [`BufferConfig::lazy_return_ns`] after the last return message:
    /// they only let the heads and members past the buffer prune what they retain, so a
    /// return frame every batch for them alone would cost the ring-closing link (and the
    /// forwarder, which carries them on) a frame per batch for nothing urgent.
    pub fn poll_return(&mut self, now: u64, out: &mut [u8]) -> Result<Option<usize>, WireError> {
        if self.outbox.is_empty() || self.return_due().is_some_and(|t| now < t) {
            return Ok(None);
        }
        let mut w = MessageWriter::new(out, 0)?;
        self.outbox.fill(&mut w)?;
        if w.log_count() == 0 && w.cv_count() == 0 {
            return Err(WireError::NoRoom);
        }
        self.stats.return_messages += 1;
        self.returned_at = Some(now);
        Ok(Some(w.finish()))
    }

    /// When what the return path holds is due, if not at once: commit vectors alone wait
    /// [`BufferConfig::lazy_return_ns`] after the last return message; logs never wait.
    fn return_due(&self) -> Option<u64> {
        if self.outbox.log_count() > 0 {
            return None;
        }
        let t = self.returned_at?;
        Some(t.saturating_add(self.config.lazy_return_ns))
    }

    /// A new epoch after a failure (DESIGN.md §8): every held packet is dropped (returned, to
    /// account for them) and nothing queued for the forwarder survives, since a log of the old
    /// epoch may be one the recovery rolled back. The commit vectors stay: they only ever grow
    /// and stay true across a recovery (a restored group holds at least what its tail had).
    pub fn fence(&mut self) -> Vec<P> {
        let mut fresh = Buffer::new(self.ring, self.partitions as u32, self.config);
        std::mem::swap(&mut fresh.cvs, &mut self.cvs);
        fresh.stats = BufferStats {
            held_packets: 0,
            held_bytes: 0,
            ..self.stats
        };
        let old = std::mem::replace(self, fresh);
        old.slots.into_iter().filter_map(|s| s.handle).collect()
    }

    /// Whether to ask the tails of the wrapping groups to announce their commit vectors again
    /// now: the oldest held packet has waited [`BufferConfig::stall_timeout_ns`], and so has
    /// the last request. The driver sends the request towards the forwarder (server 0, the
    /// first such tail; docs/protocol.md).
    pub fn poll_announce_request(&mut self, now: u64) -> bool {
        let due = self.stall_due().is_some_and(|t| t <= now);
        if due {
            self.requested_at = Some(now);
            self.stats.announce_requests += 1;
        }
        due
    }

    /// When to call again: [`Buffer::poll_announce_request`] may say yes (while packets are
    /// held), or [`Buffer::poll_return`] has commit vectors due.
    pub fn poll_timeout(&self) -> Option<u64> {
        let lazy = (!self.outbox.is_empty())
            .then(|| self.return_due())
            .flatten();
        self.stall_due().into_iter().chain(lazy).min()
    }

    /// When to ask the tails to announce again: the oldest held packet, or the last request,
    /// is [`BufferConfig::stall_timeout_ns`] old.
    fn stall_due(&self) -> Option<u64> {
        let &(_, i) = self.accepted.front()?;
        let oldest = self.slots[i as usize].accepted_at;
        let t = self.config.stall_timeout_ns;
        Some(oldest.max(self.requested_at.unwrap_or(0)).saturating_add(t))
    }

    /// Counters and current occupancy.
    pub fn stats(&self) -> &BufferStats {
        &self.stats
    }

    /// What the buffer knows of CV(`mb`); `None` unless `mb` is a wrapping group of the chain
    /// (the only vectors it keeps).
    pub fn commit_vector(&self, mb: MbIndex) -> Option<&CommitVector> {
        match self.group(mb.0) {
            Group::Wrapping(g) => self.cvs.get(usize::from(g)),
            Group::Foreign | Group::Plain => None,
        }
    }

    /// The bounds in force.
    pub fn config(&self) -> &BufferConfig {
        &self.config
    }

    fn group(&self, mb: u8) -> Group {
        let j = usize::from(mb);
        if j >= self.ring.middleboxes() {
            Group::Foreign
        } else if self.ring.wraps(MbIndex(mb)) {
            // j ≥ n − f and j < k ≤ 255, so the difference fits.
            Group::Wrapping((j - self.first_wrapping) as u8)
        } else {
            Group::Plain
        }
    }

    /// The return path: update logs of wrapping groups and every commit vector of the chain's
    /// middleboxes; anomalies are counted here, once per frame.
    ///
    /// Read-only and no-op logs of wrapping groups stay here: they replicate nothing. The
    /// packet waits until CV(j) covers what it read, and CV(j) moves when the tail applies the
    /// update log that wrote it, which went back with its own packet; a lost announcement is
    /// asked for again ([`Buffer::poll_announce_request`]). A chain whose last middlebox mostly
    /// reads (a NAT on established connections) would otherwise send a return frame per batch,
    /// and the forwarder a propagating frame for it whenever customer frames are sparse.
    fn queue_return(&mut self, msg: &MessageView<'_>) {
        let partitions = self.partitions;
        for log in msg.logs() {
            let group = self.group(log.middlebox());
            if matches!(group, Group::Wrapping(_))
                && log.kind() != LogKind::Noop
                && log.deps().any(|d| usize::from(d.partition.0) >= partitions)
            {
                self.stats.uncoverable_deps += 1;
            }
            match group {
                Group::Foreign => self.stats.foreign_middlebox += 1,
                Group::Plain => self.stats.non_wrapping_logs += 1,
                Group::Wrapping(_) if log.kind() != LogKind::Update => {
                    self.stats.logs_kept += 1;
                }
                Group::Wrapping(_) => {
                    self.outbox.push_log(&log);
                    self.stats.logs_returned += 1;
                }
            }
        }
        for cv in msg.commit_vectors() {
            match self.group(cv.middlebox()) {
                Group::Foreign => self.stats.foreign_middlebox += 1,
                Group::Plain | Group::Wrapping(_) => {
                    self.outbox.merge_cv(cv.middlebox(), cv.entries());
                }
            }
        }
    }

    /// Merges the commit vectors of wrapping groups in `msg`, then advances the flows whose
    /// first packet was parked on an entry that moved.
    fn merge_cvs(&mut self, msg: &MessageView<'_>) {
        self.moved.clear();
        for cv in msg.commit_vectors() {
            self.merge_entries(cv.middlebox(), cv.entries());
        }
        self.wake_moved();
    }

    /// Merges what another worker thread of this server learned of CV(`mb`), waking the packets
    /// it frees; ignored unless `mb` is a wrapping group.
    pub fn merge_commit_vector(&mut self, mb: MbIndex, entries: impl Iterator<Item = DepEntry>) {
        self.moved.clear();
        self.merge_entries(mb.0, entries);
        self.wake_moved();
    }

    fn merge_entries(&mut self, mb: u8, entries: impl Iterator<Item = DepEntry>) {
        let Group::Wrapping(g) = self.group(mb) else {
            return;
        };
        let known = &mut self.cvs[usize::from(g)];
        for e in entries {
            if known.merge(iter::once(e)) {
                self.moved.push((g, e.partition));
                self.stats.cv_entries_moved += 1;
            }
        }
    }

    /// Wakes the packets that the entries in `moved` free.
    fn wake_moved(&mut self) {
        if self.moved.is_empty() {
            return;
        }
        let mut woken = std::mem::take(&mut self.woken);
        woken.clear();
        for &(g, p) in &self.moved {
            self.waiters
                .wake(g, p, &self.cvs[usize::from(g)], &mut woken);
        }
        for &i in &woken {
            let flow = self.slots[i as usize].flow;
            self.advance(flow);
        }
        self.woken = woken;
    }

    /// The driver gives up a packet of flow `flow` that was [`Refused`], the last it was
    /// handed back, instead of offering it again (it drops it, past its own bound on the
    /// packets it keeps for the buffer): later packets of the flow are no longer refused on its
    /// account.
    pub fn give_up(&mut self, flow: u64) {
        if let Entry::Occupied(mut entry) = self.flows.entry(flow) {
            let f = entry.get_mut();
            f.refused = f.refused.saturating_sub(1);
            if f.refused == 0 && f.head == NONE {
                entry.remove();
            }
        }
    }

    /// Accepts `packet` or refuses it (see [`Buffer::handle_frame`], [`Buffer::retry`]).
    fn offer(
        &mut self,
        now: u64,
        msg: &MessageView<'_>,
        packet: Packet<P>,
        retry: bool,
    ) -> Result<(), Refused<P>> {
        let flow_id = packet.flow;
        let behind_refused = !retry && self.flows.get(&flow_id).is_some_and(|f| f.refused > 0);
        // An empty buffer takes any packet, so that bounds below one packet (or one smaller
        // than the packet) cannot refuse it for good and stall its flow and the chain.
        let full = self.stats.held_packets > 0
            && (self.stats.held_packets >= self.config.max_held_packets
                || self.stats.held_bytes.saturating_add(packet.len) > self.config.max_held_bytes);
        if full || behind_refused {
            self.stats.refused += 1;
            if !retry {
                self.flows.entry(flow_id).or_insert(Flow::EMPTY).refused += 1;
            }
            return Err(Refused(packet));
        }

        let i = self.alloc(now, packet);
        self.fill_needs(msg, i);
        let s = &mut self.stats;
        s.accepted += 1;
        s.held_packets += 1;
        s.held_bytes += self.slots[i as usize].len;
        s.max_held_packets = s.max_held_packets.max(s.held_packets);

        let flow = self.flows.entry(flow_id).or_insert(Flow::EMPTY);
        if retry {
            flow.refused = flow.refused.saturating_sub(1);
        }
        if flow.tail == NONE {
            flow.head = i;
            flow.tail = i;
            self.advance(flow_id);
        } else {
            // Waits behind the flow's earlier packets; examined when it reaches the head.
            self.slots[flow.tail as usize].next = i;
            flow.tail = i;
        }
        Ok(())
    }

    /// A slot for `packet`, from the free list if there is one.
    fn alloc(&mut self, now: u64, packet: Packet<P>) -> u32 {
        let Packet { flow, len, handle } = packet;
        let seq = self.accepted_count;
        self.accepted_count += 1;
        let i = self.alloc_slot(now, flow, len, handle, seq);
        self.accepted.push_back((seq, i));
        i
    }

    fn alloc_slot(&mut self, now: u64, flow: u64, len: usize, handle: P, seq: u64) -> u32 {
        if self.free != NONE {
            let i = self.free;
            let slot = &mut self.slots[i as usize];
            self.free = slot.next;
            slot.handle = Some(handle);
            slot.flow = flow;
            slot.len = len;
            slot.accepted_at = now;
            slot.seq = seq;
            slot.needs.clear();
            slot.next = NONE;
            i
        } else {
            // Fewer than max_held_packets ≤ u32::MAX − 1 slots exist.
            let i = self.slots.len() as u32;
            self.slots.push(Slot {
                handle: Some(handle),
                flow,
                len,
                accepted_at: now,
                seq,
                needs: Vec::new(),
                next: NONE,
            });
            i
        }
    }

    /// Drops the entries of [`Buffer::accepted`] whose packets left: at the front, and all of
    /// them once they outnumber the held packets (so the queue stays within twice the held
    /// packets, at O(1) amortized per packet).
    fn forget_released(&mut self) {
        let slots = &self.slots;
        let held = |&(seq, i): &(u64, u32)| {
            let slot = &slots[i as usize];
            slot.seq == seq && slot.handle.is_some()
        };
        while self.accepted.front().is_some_and(|e| !held(e)) {
            self.accepted.pop_front();
        }
        if self.accepted.len() > 2 * self.stats.held_packets + 16 {
            self.accepted.retain(held);
        }
    }

    /// Sets slot `i`'s needs from the logs of wrapping groups in `msg`, leaving out those met.
    fn fill_needs(&mut self, msg: &MessageView<'_>, i: u32) {
        let mut needs = std::mem::take(&mut self.slots[i as usize].needs);
        for log in msg.logs() {
            let Group::Wrapping(g) = self.group(log.middlebox()) else {
                continue;
            };
            let cv = &self.cvs[usize::from(g)];
            let kind = match (self.config.weakened, log.kind()) {
                (Some(Weakened::UpdatesAtEqual), LogKind::Update) => LogKind::ReadOnly,
                (Some(Weakened::ReadOnlyFree), LogKind::ReadOnly) => LogKind::Noop,
                (_, kind) => kind,
            };
            for d in log.deps() {
                if let Some(n) = Need::of(kind, g, d.partition, d.seq) {
                    if !n.met_by(cv) {
                        add_need(&mut needs, n);
                    }
                }
            }
        }
        self.slots[i as usize].needs = needs;
    }

    /// Moves the first packets of `flow_id` to the ready queue while their needs are met; parks
    /// the first that still lacks something on one need it lacks.
    fn advance(&mut self, flow_id: u64) {
        let Entry::Occupied(mut entry) = self.flows.entry(flow_id) else {
            return;
        };
        let flow = entry.get_mut();
        while flow.head != NONE {
            let i = flow.head;
            let slot = &mut self.slots[i as usize];
            let cvs = &self.cvs;
            slot.needs.retain(|n| !n.met_by(&cvs[usize::from(n.group)]));
            if let Some(need) = slot.needs.first() {
                // Out of range partitions cannot be parked: the packet stays at the head for
                // good (counted in `uncoverable_deps`).
                self.waiters.park(need, i);
                return;
            }
            flow.head = slot.next;
            slot.next = NONE;
            if flow.head == NONE {
                flow.tail = NONE;
            }
            self.ready.push_back(i);
        }
        if flow.refused == 0 {
            entry.remove();
        }
    }
}
