//! [`Server`]: everything one chain server does with frames, as a state machine without I/O or
//! clock: the forwarder (server 0), the replica, the middlebox's packet transactions, the hold
//! queue, the buffer (last server), in FTC or NF mode. The simulation drives it over a virtual
//! network; the runtime drives it with threads and a transport. `docs/protocol.md` is the spec.
//!
//! Inputs: [`Server::handle_ingress`] (a customer packet, server 0), [`Server::handle_frame`]
//! (a frame from another server), [`Server::handle_timeout`], and [`Server::end_batch`] after
//! each batch of them: what frames free (held frames offered again, refused packets, propagating
//! frames of the forwarder and the replica) is looked at once per batch, there. With several
//! lanes, [`Server::caught_up`] before `end_batch` when the batch emptied the lane's queue.
//! Outputs: [`Server::poll_output`] until `None` after every batch, and
//! [`Server::poll_timeout`] for the next timer.

use std::collections::VecDeque;
use std::sync::Arc;

use ftc_buffer::{Buffer, BufferConfig, Packet as BufferPacket};
use ftc_chain::middlebox::{process_packet, Ctx, Direction, Frame as MbFrame, Middlebox, Verdict};
use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_chain::spec::ChainSpec;
use ftc_chain::wire::{MessageView, MessageWriter, WireError, Written};
use ftc_forwarder::{Forwarder, ForwarderConfig, Ingress, Port, Rejected};
use ftc_replica::{
    Admit, GroupState, ParkedLogs, Replica, ReplicaConfig, ReplicaError, FLAG_ANNOUNCE_REQUEST,
    FLAG_RESENT, FLAG_RETRANSMIT_REQUEST,
};
use ftc_stm::{DepEntry, LogKind, LogSource, StmError, Store, Worker};

use crate::hold::HoldQueue;
use crate::lanes::{Lane, LaneSet};

/// Fault tolerance on (FTC) or off (NF: the same middleboxes, no trailer, no buffer), or one of
/// the FTMB baselines of DESIGN.md §9, which [`crate::ftmb`] runs instead of [`Server`] (a
/// server of another mode behaves as in NF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Ftc,
    Nf,
    /// FTMB: per middlebox a master and a server with its input and output loggers.
    Ftmb,
    /// FTMB with periodic stop-the-world snapshots of each master's state.
    FtmbSnapshot,
}

impl Mode {
    /// Every mode: FTC, then the baselines NF, FTMB and FTMB+snapshot (the order `ftc bench`
    /// runs them in at each point).
    pub const ALL: [Mode; 4] = [Mode::Ftc, Mode::Nf, Mode::Ftmb, Mode::FtmbSnapshot];

    /// The name it goes by on command lines and in reports (`ftc`, `nf`, `ftmb`,
    /// `ftmb-snapshot`), as it serializes.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Ftc => "ftc",
            Mode::Nf => "nf",
            Mode::Ftmb => "ftmb",
            Mode::FtmbSnapshot => "ftmb-snapshot",
        }
    }

    /// Whether this is one of the FTMB baselines.
    pub fn is_ftmb(self) -> bool {
        matches!(self, Mode::Ftmb | Mode::FtmbSnapshot)
    }
}

/// The most room a customer frame takes in a frame between servers (a 1500-byte MTU's
/// Ethernet frame, rounded up).
const CUSTOMER_ROOM: usize = 1536;

/// The longest customer frame: a 1500-byte MTU's, with its Ethernet header (the middleboxes
/// rewrite headers in place, none grows a frame).
const MAX_CUSTOMER_FRAME: usize = 1514;

/// Bytes the message of a frame without a customer packet (a propagating or return frame) fills:
/// the trailer budget and the room of the customer frame it lacks, within a frame's trailer
/// (`max_trailer`, the write buffer's length). In memory, where nothing else bounds a frame,
/// messages up to `max_trailer` (8 KiB) ran slower on 2 cores: Ch-Gen with 128 B of state lost
/// 4.3 % at 8192 bytes and 2.3 % at 3456, and gained 0.6 % at this size (5 alternated rounds
/// against the trailer budget alone); on one core all three gained (6.4, 5.6 and 3.6 %).
fn packetless_budget(config: &ServerConfig, max_trailer: usize) -> usize {
    (config.trailer_budget + CUSTOMER_ROOM).min(max_trailer)
}

/// Writes the message of a frame without a customer packet with `write` into `wbuf`: within
/// [`packetless_budget`], or, when the next log alone is larger than that, within all of `wbuf`
/// (a log is never dropped for lack of room, DESIGN §4).
fn write_packetless(
    config: &ServerConfig,
    wbuf: &mut [u8],
    mut write: impl FnMut(&mut [u8]) -> Result<Option<usize>, WireError>,
) -> Result<Option<usize>, WireError> {
    let fill = packetless_budget(config, wbuf.len());
    match write(&mut wbuf[..fill]) {
        Err(WireError::NoRoom) if fill < wbuf.len() => write(wbuf),
        other => other,
    }
}

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub mode: Mode,
    /// Bytes a trailer may take besides the packet's own logs (which always ride with it).
    pub trailer_budget: usize,
    /// The largest trailer a frame can carry at all: that of a frame without a customer packet
    /// (the inter-server MTU less the NSH header). Frames that carry no packet (propagating
    /// frames, the buffer's return frames) fill up to the trailer budget and a customer frame's
    /// room within it, and all of it for a log larger than that.
    pub max_trailer: usize,
    /// Bytes a middlebox may grow a customer frame by.
    pub headroom: usize,
    /// Frames held (waiting for earlier logs) at which the server reports itself congested:
    /// drivers then stop admitting customer packets into the chain until it drains. Frames
    /// already in the chain, and retransmissions, keep flowing, so what frees the held frames
    /// always gets through.
    pub max_held_frames: usize,
    /// Frames a server holds at most, and packets the buffer refused that it keeps to offer
    /// again (each, 4 × `max_held_frames` if more): past it, a frame that arrives and would wait
    /// is dropped, as a frame lost on a link (its logs come again on request), and a packet the
    /// buffer refuses is dropped; the packet is lost ([`Output::Lost`]) and counted
    /// ([`ServerStats::hold_overflow`], [`ServerStats::refused_overflow`]). In one process
    /// congestion holds the ingress back long before; across processes, where a node cannot
    /// hold back another's ingress, this bounds what a server keeps whatever arrives (frames
    /// whose logs never come: forged on the ring, a predecessor gone quiet). Frames without a
    /// packet (propagating frames, which bring the logs held frames wait for) may fill a
    /// quarter of it more.
    pub hold_limit: usize,
    /// Logs a server (each lane of it) retains at most, over all its groups, while it keeps
    /// running its middlebox's transactions. Retained logs wait for a commit vector from their
    /// group's tail; across processes a successor that still beats but whose data path is cut
    /// (and so is not replaced) covers none, and every later log would be retained for good.
    /// At the limit a customer packet that would run the transaction is lost instead
    /// ([`Output::Lost`], counted in [`ServerStats::retain_overflow`]) and its frame goes on
    /// without it, still carrying the others' logs and commit vectors (what frees retained logs
    /// is never held back); the server counts as congested meanwhile. Logs retained as a member
    /// grow only as its predecessors', which are bounded the same way.
    pub retain_limit: usize,
    pub replica: ReplicaConfig,
    pub forwarder: ForwarderConfig,
    pub buffer: BufferConfig,
    /// In NF mode, the server whose frames leave the chain: by default (`None`) the last
    /// middlebox's, as in memory, where NF runs the middleboxes' servers alone. A deployment
    /// that wires its exit to the ring's last server (processes, the lab) names that one: the
    /// servers without a middlebox before it pass frames on untouched. FTC's exit is always the
    /// ring's last server, the buffer's.
    pub nf_exit: Option<ServerId>,
    /// Frames from other servers come from servers of this process (the in-memory transport),
    /// whose messages this process wrote: they are not checked again, only walked
    /// ([`MessageView::trusted`]). Never for frames read off a network.
    pub trusted_frames: bool,
    /// Emit [`Output::Committed`] and [`Output::AtBuffer`] (for checkers; costs an allocation
    /// per transaction).
    pub observe: bool,
    /// Test hook for the checker's teeth: the buffer releases packets without waiting for
    /// commit vectors. Never set it otherwise.
    #[doc(hidden)]
    pub release_without_commit: bool,
    /// Test hook for the checker's teeth: a fenced server goes on handling frames and timers
    /// until it resumes (sources change while replacements copy them). Never set it otherwise.
    #[doc(hidden)]
    pub run_while_fenced: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            mode: Mode::Ftc,
            trailer_budget: 1024,
            max_trailer: 8192,
            headroom: 128,
            max_held_frames: 4096,
            hold_limit: 16_384,
            retain_limit: 262_144,
            replica: ReplicaConfig::default(),
            forwarder: ForwarderConfig::default(),
            buffer: BufferConfig::default(),
            nf_exit: None,
            trusted_frames: false,
            observe: false,
            release_without_commit: false,
            run_while_fenced: false,
        }
    }
}

impl ServerConfig {
    /// Whether the messages of `spec`'s chain fit this config's frames: a packet's own logs stay
    /// with it from their heads to their tails whatever the trailer budget, so a chain whose
    /// logs outgrow `max_trailer` would fail on its first packet
    /// ([`ChainSpec::own_logs_bound`]). FTC mode only: the others carry no logs. In memory, where
    /// a frame holds its packet and a message of up to `max_trailer` bytes.
    pub fn check_logs_fit(&self, spec: &ChainSpec) -> Result<(), LogsTooLong> {
        self.logs_fit(spec, self.max_trailer, "")
    }

    /// [`ServerConfig::check_logs_fit`] over links (AF_XDP, UDP) whose frames hold at most
    /// `max_trailer` bytes after the NSH header, the customer packet included: a packet's own
    /// logs must fit beside the largest customer frame (of a 1500-byte MTU), or that packet is
    /// dropped on every (re)transmission and its flow stalls.
    pub fn check_logs_fit_beside_packets(&self, spec: &ChainSpec) -> Result<(), LogsTooLong> {
        let room = self.max_trailer.saturating_sub(MAX_CUSTOMER_FRAME);
        self.logs_fit(spec, room, " beside a full-size customer frame")
    }

    /// The longest trailer a customer frame of `spec`'s chain carries between servers: the
    /// trailer budget, or in FTC the packet's own logs where they may be longer (they always
    /// ride with it, [`ChainSpec::own_logs_bound`]). What a frame needs beside its customer
    /// frame and the NSH header.
    pub fn longest_trailer(&self, spec: &ChainSpec) -> usize {
        match self.mode {
            Mode::Ftc => self.trailer_budget.max(spec.own_logs_bound()),
            _ => self.trailer_budget,
        }
    }

    fn logs_fit(
        &self,
        spec: &ChainSpec,
        room: usize,
        beside: &'static str,
    ) -> Result<(), LogsTooLong> {
        let need = spec.own_logs_bound();
        if self.mode == Mode::Ftc && need > room {
            return Err(LogsTooLong {
                need,
                room,
                beside,
                f: spec.chain.f,
            });
        }
        Ok(())
    }
}

/// A chain whose logs do not fit the frames between its servers ([`ServerConfig::check_logs_fit`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a packet of this chain may carry {need} bytes of logs (each log rides with its packet through the f = {f} servers after its head; a Gen's log holds its `state_size` bytes), more than the {room} bytes frames between its servers hold{beside}: lower `state_size` or `f`")]
pub struct LogsTooLong {
    pub need: usize,
    /// The bytes of logs a frame holds.
    pub room: usize,
    /// Beside what: nothing in memory, a customer frame over links.
    pub beside: &'static str,
    pub f: u8,
}

/// Bytes a new message buffer has room for at least: a message travels the chain in one
/// buffer, each server rewriting it with its logs.
const MESSAGE_ROOM: usize = 512;

/// Buffers of consumed messages a server keeps for its own next messages.
const SPARE: usize = 64;

/// Buffers of consumed messages the forwarder's server keeps: it writes the message of every
/// customer packet, so it keeps as many as a chain has packets in flight, about (the buffers of
/// the others come back in batches; fewer, and a batch that finds it full is lost to it).
const INGRESS_SPARE: usize = 1024;

/// Buffers of consumed messages beyond [`SPARE`] a server gathers before it hands them on to
/// the forwarder's server ([`Server::take_surplus`]), and the most it keeps when nobody takes
/// them (more than a batch of frames consumes, so that none is lost between two takes).
const SURPLUS: usize = 64;
const MAX_SURPLUS: usize = 4 * SURPLUS;

/// A customer packet in the chain; `handle` is the driver's name for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<P> {
    pub handle: P,
    /// Packets of a flow keep their order; any stable id (a hash of the 5-tuple).
    pub flow: u64,
    pub dir: Direction,
    pub bytes: Vec<u8>,
}

/// A frame between servers: a customer packet (or none: a propagating frame) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<P> {
    pub packet: Option<Packet<P>>,
    /// NSH context flags (e.g. a retransmission request).
    pub flags: u16,
    pub msg: Vec<u8>,
}

/// Why a server lost a customer packet ([`Output::Lost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// A recovery's fence dropped it (held, or waiting at the buffer, in the old epoch), or it
    /// reached a fenced server.
    Fenced,
    /// Its frame would have waited in a full hold queue ([`ServerConfig::hold_limit`]).
    HoldFull,
    /// The buffer refused it with as many refused packets kept already
    /// ([`ServerConfig::hold_limit`]).
    RefusedFull,
    /// It would have run its transaction with the retained logs at their limit
    /// ([`ServerConfig::retain_limit`]).
    RetainFull,
    /// An FTMB output logger refused it: what it needs before it leaves did not decode, or is
    /// out of reach.
    BadRequirement,
}

impl Loss {
    /// How reports name it.
    pub fn name(self) -> &'static str {
        match self {
            Loss::Fenced => "fenced",
            Loss::HoldFull => "hold queue full",
            Loss::RefusedFull => "buffer's refused packets full",
            Loss::RetainFull => "retained logs at their limit",
            Loss::BadRequirement => "FTMB requirement unreadable",
        }
    }
}

/// What a server wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<P> {
    /// Put `frame` on the wire to `to`.
    Send { to: ServerId, frame: Frame<P> },
    /// The packet leaves the chain (last server only).
    Release { packet: Packet<P>, hold_ns: u64 },
    /// A middlebox dropped the packet (its message travels on).
    Dropped { handle: P, by: MbIndex },
    /// The packet is lost, as on a wire, for the reason `why`.
    Lost { handle: P, why: Loss },
    /// A packet transaction committed, a no-op too (only with `observe`): every packet that
    /// leaves the chain committed one at each middlebox's head.
    Committed {
        handle: P,
        middlebox: u8,
        kind: LogKind,
        deps: Vec<DepEntry>,
    },
    /// A packet entered the buffer (only with `observe`): packets of a flow leave in this order.
    AtBuffer { handle: P },
}

/// A group's state as a server hands it out without copying the store ([`Server::export_parts`]).
#[derive(Debug)]
pub struct ExportParts {
    /// Encoded logs retained for the successor, oldest first.
    pub retained: Vec<Vec<u8>>,
    /// The replica store; `None` when the server heads the group.
    pub replica: Option<Arc<ftc_stm::Store>>,
}

impl ExportParts {
    /// The group state of `middlebox`, copying the replica store or else `head`, the store of
    /// the server's head.
    pub fn into_group_state(
        self,
        middlebox: MbIndex,
        head: Option<&ftc_stm::Store>,
    ) -> Option<GroupState> {
        let snapshot = self.store(head)?.export_bytes().ok()?;
        Some(GroupState {
            middlebox,
            snapshot,
            retained: self.retained,
        })
    }

    /// [`ExportParts::into_group_state`] in its byte form, the store written straight into it.
    pub fn encode(&self, middlebox: MbIndex, head: Option<&ftc_stm::Store>) -> Option<Vec<u8>> {
        GroupState::encode_store(middlebox, self.store(head)?, &self.retained).ok()
    }

    /// The group's store: the replica's, or else `head`.
    fn store<'s>(&'s self, head: Option<&'s ftc_stm::Store>) -> Option<&'s ftc_stm::Store> {
        self.replica.as_deref().or(head)
    }
}

/// Why a server failed; the chain cannot go on consistently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    #[error("server {server}: {source}")]
    Replica { server: u16, source: ReplicaError },
    #[error("server {server}: {source}")]
    Wire { server: u16, source: WireError },
}

/// Counters of a server.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServerStats {
    pub frames: u64,
    /// Frames from the network whose message did not parse, or that the replica refused
    /// ([`ftc_replica::ReplicaError::is_bad_input`]): dropped.
    pub bad_frames: u64,
    pub held: u64,
    pub max_held: usize,
    pub transactions: u64,
    pub dropped: u64,
    /// Customer packets lost ([`Output::Lost`], each with its [`Loss`]): to a fence or while
    /// fenced, to a full hold queue or list of refused packets, to the retain limit.
    pub lost: u64,
    /// Frames dropped for arriving when the hold queue was full ([`ServerConfig::hold_limit`]).
    pub hold_overflow: u64,
    /// Packets the buffer refused that were dropped, as many kept to offer again already
    /// ([`ServerConfig::hold_limit`]).
    pub refused_overflow: u64,
    /// Customer packets lost instead of transacted, as many logs retained already
    /// ([`ServerConfig::retain_limit`]).
    pub retain_overflow: u64,
}

/// One chain server.
pub struct Server<'a, P> {
    me: ServerId,
    ring: Ring,
    last: ServerId,
    config: ServerConfig,
    head: Option<(MbIndex, &'a dyn Middlebox, Worker<'a>)>,
    replica: Option<Replica>,
    forwarder: Option<Forwarder>,
    buffer: Option<Buffer<u64>>,
    /// Packets the buffer holds: the buffer holds their slot numbers.
    parked: Slab<Packet<P>>,
    /// Packets the buffer refused (back-pressure) with their messages, to offer again in order.
    refused: VecDeque<(Vec<u8>, BufferPacket<u64>)>,
    /// Frames held for logs not applied yet or behind a held frame of their flow.
    held: HoldQueue<P>,
    /// [`Server::applied`] when the held frames were last looked at.
    held_looked_at: u64,
    /// Fenced and not yet resumed (see [`Server::fence`]).
    frozen: bool,
    /// Order of arrival, to keep a flow's frames in order in the hold queue (the last given).
    arrivals: u64,
    outputs: VecDeque<Output<P>>,
    /// Buffers of consumed messages, for the next messages this server writes.
    spare: Vec<Vec<u8>>,
    /// Buffers of consumed messages beyond [`SPARE`], for the server that writes most
    /// messages (the forwarder's: [`Server::take_surplus`]).
    surplus: Vec<Vec<u8>>,
    /// Where messages are written (zeroed once, `max_trailer` long); they are then copied, at
    /// their real length, into a spare buffer.
    wbuf: Vec<u8>,
    scratch: Vec<u8>,
    error: Option<ServerError>,
    stats: ServerStats,
    /// The other worker threads of this server, when it has several ([`crate::lanes`]).
    lane: Option<Lane>,
}

impl<P> std::fmt::Debug for Server<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("me", &self.me)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<'a, P: Clone> Server<'a, P> {
    /// Server `me` of `ring` with its middlebox (if it runs one) and partition count. In NF mode
    /// the last server is [`ServerConfig::nf_exit`], by default server k−1.
    pub fn new(
        ring: Ring,
        me: ServerId,
        partitions: u32,
        head: Option<(MbIndex, &'a dyn Middlebox, Worker<'a>)>,
        config: ServerConfig,
    ) -> Result<Self, StmError> {
        let ftc = config.mode == Mode::Ftc;
        let max_trailer = config.max_trailer.max(config.trailer_budget);
        let last = if ftc {
            ring.buffer()
        } else {
            config
                .nf_exit
                .unwrap_or(ServerId(ring.middleboxes() as u16 - 1))
        };
        Ok(Server {
            me,
            ring,
            last,
            replica: if ftc {
                Some(Replica::new(ring, me, partitions, config.replica)?)
            } else {
                None
            },
            forwarder: (me == ring.forwarder())
                .then(|| Forwarder::new(partitions, config.forwarder)),
            buffer: (ftc && me == last).then(|| Buffer::new(ring, partitions, config.buffer)),
            head,
            config,
            parked: Slab::default(),
            refused: VecDeque::new(),
            held: HoldQueue::default(),
            held_looked_at: u64::MAX,
            frozen: false,
            arrivals: 0,
            outputs: VecDeque::new(),
            spare: Vec::new(),
            surplus: Vec::new(),
            wbuf: vec![0; max_trailer],
            scratch: Vec::new(),
            error: None,
            stats: ServerStats::default(),
            lane: None,
        })
    }

    /// The replacement of server `me` after a failure (DESIGN.md §8 step 3): its replica
    /// restored from `groups`, the state of every group it replicates and of the group it
    /// heads (whose store the driver restored already: see [`crate::Heads::restored_head`]).
    pub fn restore(
        ring: Ring,
        me: ServerId,
        partitions: u32,
        head: Option<(MbIndex, &'a dyn Middlebox, Worker<'a>)>,
        config: ServerConfig,
        groups: &[GroupState],
        now: u64,
    ) -> Result<Self, ReplicaError> {
        let replica_config = config.replica;
        let mut server = Server::new(ring, me, partitions, head, config)?;
        if server.replica.is_some() {
            server.replica = Some(Replica::restore(
                ring,
                me,
                partitions,
                replica_config,
                groups,
                now,
            )?);
        }
        Ok(server)
    }

    /// What a recovery fetches from this server for `mb`'s group: the store (the head's when
    /// this server heads it) and the logs retained for the successor. `None` when this server
    /// is not in that group.
    pub fn export_group(&self, mb: MbIndex) -> Option<GroupState> {
        self.export_parts(mb)?
            .into_group_state(mb, self.head_store())
    }

    /// [`Server::export_group`] in its byte form, the store written straight into it.
    pub fn export_group_bytes(&self, mb: MbIndex) -> Option<Vec<u8>> {
        self.export_parts(mb)?.encode(mb, self.head_store())
    }

    /// The store of the middlebox this server heads.
    fn head_store(&self) -> Option<&ftc_stm::Store> {
        self.head.as_ref().map(|(_, _, worker)| worker.store())
    }

    /// The cheap part of [`Server::export_group`], for a driver that copies the store on
    /// another thread (a fenced server's stores do not change): the retained logs, and the
    /// replica store unless this server heads the group (the head's store is the driver's).
    pub fn export_parts(&self, mb: MbIndex) -> Option<ExportParts> {
        let replica = self.replica.as_ref()?;
        let retained = replica.retained_logs(mb)?;
        let heads_it = self.head.as_ref().is_some_and(|(head, _, _)| *head == mb);
        Some(ExportParts {
            retained,
            replica: if heads_it {
                None
            } else {
                Some(Arc::clone(replica.store(mb)?))
            },
        })
    }

    /// A new epoch (DESIGN.md §8 step 1): frames held for missing logs and packets waiting at
    /// the buffer are dropped ([`Output::Lost`]), and what the forwarder and the buffer queued
    /// for the ring is forgotten, since logs of the old epoch may be ones the recovery rolls
    /// back. Stores, vectors and retained logs stay. The driver drops frames of older epochs
    /// from then on.
    ///
    /// Until [`Server::resume`] the server is quiescent: it drops every frame and customer
    /// packet ([`Output::Lost`]) and runs no timer, so its state stays what it was at the
    /// fence. Replacements that copy one group at different moments (two failed members fed by
    /// one source) then copy one state, and each member of a group keeps holding at least what
    /// its successor holds, which commit vectors rely on.
    pub fn fence(&mut self) {
        self.frozen = !self.config.run_while_fenced;
        if let Some(r) = self.replica.as_mut() {
            r.fence();
        }
        for frame in self.held.drain() {
            if let Some(packet) = frame.packet {
                self.lose(packet.handle, Loss::Fenced);
            }
        }
        let mut slots: Vec<u64> = std::mem::take(&mut self.refused)
            .into_iter()
            .map(|(_, offer)| offer.handle)
            .collect();
        if let Some(buffer) = self.buffer.as_mut() {
            slots.extend(buffer.fence());
        }
        for slot in slots {
            let packet = self.parked.remove(slot);
            self.lose(packet.handle, Loss::Fenced);
        }
        if let Some(fw) = self.forwarder.as_mut() {
            fw.fence();
        }
    }

    /// How many frames it holds, and packets refused by the buffer it keeps, at most
    /// ([`ServerConfig::hold_limit`]).
    fn hold_limit(&self) -> usize {
        self.config
            .hold_limit
            .max(self.config.max_held_frames.saturating_mul(4))
    }

    /// Whether the hold queue is full for a frame that would wait in it, `with_packet` or
    /// without. A frame without a packet (a propagating frame: an answer to a retransmission
    /// request, resent logs, what overflowed a trailer) may take a quarter of the limit more:
    /// such frames bring the logs that the held frames wait for, and dropping them once
    /// customer frames filled the queue blocked the logs that free it. (Over processes, where
    /// congestion cannot hold another node's ingress back, a tail whose queue had filled took
    /// back the logs a recovery left it lacking a few at a time, for tens of seconds: an
    /// answer from one lane of its predecessor carries every other log of a partition that
    /// both lanes' frames write, so it waits for the other lane's answer, and was dropped.)
    fn hold_full(&self, with_packet: bool) -> bool {
        let limit = self.hold_limit();
        let limit = match with_packet {
            true => limit,
            false => limit.saturating_add(limit / 4),
        };
        self.held.len() >= limit
    }

    /// `frame` would wait in a full hold queue: dropped, as if lost on its link (the logs of
    /// it this server could apply are applied, and retained where this server forwards them;
    /// the others its replica asks for again), and its packet lost.
    fn overflow(&mut self, frame: Frame<P>) {
        self.stats.hold_overflow += 1;
        if let Some(packet) = frame.packet {
            self.lose(packet.handle, Loss::HoldFull);
        }
        self.recycle(frame.msg);
    }

    /// Whether this server heads a group and retains as many logs as it keeps while it
    /// transacts ([`ServerConfig::retain_limit`]).
    fn retain_full(&self) -> bool {
        self.head.is_some()
            && self
                .replica
                .as_ref()
                .is_some_and(|r| r.retained().0 >= self.config.retain_limit)
    }

    /// `packet` would run the transaction with the retained logs at their limit: lost.
    fn retain_overflow(&mut self, packet: Packet<P>) {
        self.stats.retain_overflow += 1;
        self.lose(packet.handle, Loss::RetainFull);
    }

    /// A customer packet is lost here (a fence, a fenced server, a full hold queue, the retained
    /// logs at their limit): said and counted.
    fn lose(&mut self, handle: P, why: Loss) {
        self.stats.lost += 1;
        self.outputs.push_back(Output::Lost { handle, why });
    }

    /// The chain is rerouted after a recovery (DESIGN.md §8 step 4): as a tail, announce the
    /// group's whole commit vector once more (a replaced buffer or member needs it).
    pub fn resume(&mut self, now: u64) {
        self.frozen = false;
        if let Some(r) = self.replica.as_mut() {
            r.announce_max();
        }
        self.settle(now);
    }

    /// This server.
    pub fn id(&self) -> ServerId {
        self.me
    }

    pub fn ring(&self) -> Ring {
        self.ring
    }

    /// The replica core (FTC mode).
    pub fn replica(&self) -> Option<&Replica> {
        self.replica.as_ref()
    }

    /// The forwarder (server 0).
    pub fn forwarder(&self) -> Option<&Forwarder> {
        self.forwarder.as_ref()
    }

    /// The buffer (last server, FTC mode).
    pub fn buffer(&self) -> Option<&Buffer<u64>> {
        self.buffer.as_ref()
    }

    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Frames held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether the hold queue or the buffer is at its bound, the retained logs at theirs, or a
    /// recovery is under way (the server is fenced): admit no customer packet into the chain until no server is congested
    /// (back-pressure at the ingress).
    pub fn congested(&self) -> bool {
        self.held.len() >= self.config.max_held_frames
            || !self.refused.is_empty()
            || self.frozen
            || self.retain_full()
    }

    /// The first error this server met; it stops handling frames after one.
    pub fn error(&self) -> Option<&ServerError> {
        self.error.as_ref()
    }

    /// A customer packet reaches the chain (server 0) on `port`.
    pub fn handle_ingress(
        &mut self,
        now: u64,
        packet: Packet<P>,
        port: Port,
    ) -> Result<(), (Rejected, Packet<P>)> {
        if self.frozen {
            self.lose(packet.handle, Loss::Fenced);
            return Ok(());
        }
        if self.retain_full() {
            self.retain_overflow(packet);
            return Ok(());
        }
        let forwarder = self
            .forwarder
            .as_mut()
            .expect("customer packets enter at server 0");
        match forwarder.handle_ingress(now, &packet.bytes, port) {
            Ingress::Accept(_) => {}
            Ingress::Reject(why) => return Err((why, packet)),
        }
        let len = if self.config.mode == Mode::Ftc {
            match forwarder.attach(now, &mut self.wbuf[..self.config.trailer_budget]) {
                Ok(len) => len,
                Err(source) => {
                    self.fail(ServerError::Wire {
                        server: self.me.0,
                        source,
                    });
                    return Ok(());
                }
            }
        } else {
            0
        };
        let msg = self.message(len);
        self.offer(
            now,
            Frame {
                packet: Some(packet),
                flags: 0,
                msg,
            },
        );
        Ok(())
    }

    /// A frame from server `from`.
    pub fn handle_frame(&mut self, now: u64, from: ServerId, frame: Frame<P>) {
        if self.error.is_some() {
            return;
        }
        if self.frozen {
            if let Some(packet) = frame.packet {
                self.lose(packet.handle, Loss::Fenced);
            }
            return;
        }
        if frame.flags & FLAG_ANNOUNCE_REQUEST != 0 {
            return self.handle_announce_request(frame);
        }
        let request = frame.flags & FLAG_RETRANSMIT_REQUEST != 0;
        let resent = frame.flags & FLAG_RESENT != 0;
        let returned =
            self.forwarder.is_some() && from == self.ring.buffer() && self.config.mode == Mode::Ftc;
        if request || returned {
            match self.view(&frame.msg) {
                // The forwarder would carry a foreign entry on to the next customer frame, which
                // this server's replica would then refuse: drop it here.
                Ok(view) if !self.names_chain_only(&view) => self.stats.bad_frames += 1,
                Ok(view) if request => {
                    if let Some(r) = self.replica.as_mut() {
                        r.handle_retransmit_request(now, from, &view);
                    }
                }
                Ok(view) => {
                    // The ring-closing link: what the last server sends back rides on later
                    // packets. Back-pressure (pending over `max_pending_bytes`, counted by the
                    // forwarder) needs no pause in reading here: pending over one trailer
                    // budget is overflowing, so this batch's end drains it in propagating
                    // frames before the next batch is read, and pending stays within what one
                    // batch of return frames brings.
                    if let Some(fw) = self.forwarder.as_mut() {
                        let _ = fw.handle_return(now, &view);
                    }
                    // Resent logs come this way too when this server is in their group.
                    if let Some(r) = self.replica.as_mut().filter(|_| resent) {
                        r.resent_arrived(now, &view);
                    }
                }
                Err(_) => self.stats.bad_frames += 1,
            }
            self.recycle(frame.msg);
        } else {
            self.offer(now, frame);
        }
    }

    /// The buffer asks the tails of the wrapping groups (servers 0 … f−1, in ring order) to
    /// announce their commit vectors again: announce, and pass the request on to the next
    /// such tail.
    fn handle_announce_request(&mut self, frame: Frame<P>) {
        if let Some(r) = self.replica.as_mut() {
            r.announce_max();
        }
        let next = self.ring.next_server(self.me);
        if self
            .ring
            .tails_at(next)
            .any(|mb| self.ring.wrapping_groups().any(|w| w == mb))
        {
            self.outputs.push_back(Output::Send { to: next, frame });
        } else {
            self.recycle(frame.msg);
        }
    }

    /// A timer set from [`Server::poll_timeout`] went off.
    pub fn handle_timeout(&mut self, now: u64) {
        if self.error.is_none() && !self.frozen {
            // What the other lanes learned first: a lane woken by its resend timer resent logs
            // that a commit vector another lane had merged covered already.
            if let (Some(lane), Some(replica)) = (self.lane.as_mut(), self.replica.as_mut()) {
                lane.pull(now, replica, self.buffer.as_mut());
            }
            self.settle(now);
        }
    }

    /// When to call [`Server::handle_timeout`] at the latest.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.frozen {
            return None;
        }
        let replica = self.replica.as_ref().and_then(Replica::poll_timeout);
        let forwarder = self.forwarder.as_ref().and_then(Forwarder::poll_timeout);
        let buffer = self.buffer.as_ref().and_then(Buffer::poll_timeout);
        [replica, forwarder, buffer].into_iter().flatten().min()
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        self.outputs.pop_front()
    }

    /// Keep the buffer of a message this server consumed, for its next message
    /// ([`Server::spare_bound`] at most), or, at another server, for the forwarder's
    /// ([`MAX_SURPLUS`] at most): where a chain's messages are written (server 0) and where most
    /// are consumed (the buffer's) are different threads, and a buffer freed on one thread and
    /// allocated again on another costs both of them far more than passing it back a batch at a
    /// time.
    fn recycle(&mut self, msg: Vec<u8>) {
        if let Some(msg) = self.give_back(msg) {
            if self.forwarder.is_none() && self.surplus.len() < MAX_SURPLUS {
                self.surplus.push(msg);
            }
        }
    }

    /// Buffers of consumed messages this server keeps for its own messages: [`SPARE`], or
    /// [`INGRESS_SPARE`] at the forwarder's server.
    fn spare_bound(&self) -> usize {
        if self.forwarder.is_some() {
            INGRESS_SPARE
        } else {
            SPARE
        }
    }

    /// Buffers of consumed messages for the forwarder's server, once there are `SURPLUS` of
    /// them: a driver whose servers are threads of one process passes them on to
    /// [`Server::take_spare`] there. The forwarder's server gathers none: what it cannot keep,
    /// it drops.
    pub fn take_surplus(&mut self) -> Option<Vec<Vec<u8>>> {
        // The next gathering starts with its room: growing from nothing cost five
        // reallocations per hand-off.
        (self.surplus.len() >= SURPLUS)
            .then(|| std::mem::replace(&mut self.surplus, Vec::with_capacity(SURPLUS)))
    }

    /// The message of a frame this server sent, once the transport has its bytes: kept for
    /// this server's next messages where there is room (`Server::spare_bound`), else given
    /// back, emptied (a buffer that never held anything is dropped). A server of its own
    /// process gets few consumed messages back to write in (the wrapped logs come back
    /// coalesced), and the forwarder's writes one per packet: without these it allocated a
    /// message buffer per customer packet.
    pub fn give_back(&mut self, mut msg: Vec<u8>) -> Option<Vec<u8>> {
        if msg.capacity() == 0 {
            return None;
        }
        msg.clear();
        if self.spare.len() >= self.spare_bound() {
            return Some(msg);
        }
        self.spare.push(msg);
        None
    }

    /// Buffers another server consumed messages in, for this server's next messages (what
    /// is beyond `Server::spare_bound` is dropped).
    pub fn take_spare(&mut self, buffers: Vec<Vec<u8>>) {
        let room = self.spare_bound().saturating_sub(self.spare.len());
        self.spare.extend(buffers.into_iter().take(room));
    }

    /// The first `len` bytes of the write buffer, in a buffer of their own (none when there are
    /// no bytes: NF's messages).
    fn message(&mut self, len: usize) -> Vec<u8> {
        if len == 0 {
            return Vec::new();
        }
        let mut msg = self.spare.pop().unwrap_or_default();
        // The next message's buffer, likely last written on another server's core.
        if let Some(next) = self.spare.last() {
            crate::prefetch::write(next);
        }
        msg.clear();
        // Room for what the next servers add, so that a message grows on its way rarely.
        msg.reserve(len.max(MESSAGE_ROOM));
        msg.extend_from_slice(&self.wbuf[..len]);
        msg
    }

    /// The message of a frame from another server, checked unless the frames are trusted
    /// ([`ServerConfig::trusted_frames`]).
    fn view<'m>(&self, msg: &'m [u8]) -> Result<MessageView<'m>, WireError> {
        if self.config.trusted_frames {
            MessageView::trusted(msg)
        } else {
            MessageView::new_checked(msg)
        }
    }

    /// Whether every log and commit vector of `msg` names a middlebox of the chain.
    fn names_chain_only(&self, msg: &MessageView<'_>) -> bool {
        let k = self.ring.middleboxes();
        msg.logs().all(|l| usize::from(l.middlebox()) < k)
            && msg
                .commit_vectors()
                .all(|cv| usize::from(cv.middlebox()) < k)
    }

    fn fail(&mut self, e: ServerError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Offer held and refused packets again, let the forwarder and the replica send what they
    /// want.
    fn settle(&mut self, now: u64) {
        self.retry_refused(now);
        self.retry_held(now);
        while let Some(fw) = self.forwarder.as_mut() {
            match write_packetless(&self.config, &mut self.wbuf, |out| {
                fw.poll_propagate(now, out)
            }) {
                Ok(Some(len)) => {
                    let msg = self.message(len);
                    self.offer(
                        now,
                        Frame {
                            packet: None,
                            flags: 0,
                            msg,
                        },
                    );
                    self.retry_held(now);
                }
                Ok(None) => break,
                Err(source) => {
                    return self.fail(ServerError::Wire {
                        server: self.me.0,
                        source,
                    })
                }
            }
        }
        // Held frames and propagating frames that went through may have released packets: room
        // for those still refused.
        self.retry_refused(now);
        if let (Some(lane), Some(r)) = (self.lane.as_ref(), self.replica.as_mut()) {
            r.set_caught_up(lane.caught_up());
        }
        // The replica asks for what frames still wait for (once they were offered again).
        if let Some(r) = self
            .replica
            .as_mut()
            .filter(|r| r.poll_timeout().is_some_and(|t| t <= now))
        {
            for wait in self.held.waited() {
                r.still_holding(&wait, now);
            }
        }
        // Most frames find nothing due: asking when is cheaper than writing nothing.
        while let Some(r) = self
            .replica
            .as_mut()
            .filter(|r| r.poll_timeout().is_some_and(|t| t <= now))
        {
            match r.poll_transmit(now, &mut self.wbuf) {
                Ok(Some(t)) => {
                    let msg = self.message(t.len);
                    self.outputs.push_back(Output::Send {
                        to: t.to,
                        frame: Frame {
                            packet: None,
                            flags: t.flags,
                            msg,
                        },
                    });
                }
                Ok(None) => break,
                Err(source) => {
                    return self.fail(ServerError::Replica {
                        server: self.me.0,
                        source,
                    })
                }
            }
        }
        if let (Some(lane), Some(t)) = (
            self.lane.as_mut(),
            self.replica.as_ref().and_then(Replica::request_waits_for),
        ) {
            lane.poke_behind(t);
        }
        if self
            .buffer
            .as_mut()
            .is_some_and(|b| b.poll_announce_request(now))
        {
            let len = empty_message_len(&mut self.wbuf);
            let msg = self.message(len);
            self.outputs.push_back(Output::Send {
                to: self.ring.forwarder(),
                frame: Frame {
                    packet: None,
                    flags: FLAG_ANNOUNCE_REQUEST,
                    msg,
                },
            });
        }
        self.stats.max_held = self.stats.max_held.max(self.held.len());
    }

    /// Held frames again, oldest first, those that may go now: a frame with a log whose wait
    /// MAX reached, and then the frames of its flow behind it, in order. Only a log applied
    /// since the last look can free any, so without one this costs nothing; with one it costs
    /// the (group, partition) pairs waited for and the frames freed, not the frames held.
    fn retry_held(&mut self, now: u64) {
        loop {
            let applied = self.applied();
            if self.held.is_empty() || applied == self.held_looked_at {
                return;
            }
            self.held_looked_at = applied;
            let Some(replica) = self.replica.as_ref() else {
                return;
            };
            self.held.free_reached(|mb, p| replica.max_at(mb, p));
            while let Some((arrival, frame, again)) = self.held.next_freed() {
                self.process(now, arrival, frame, again);
            }
        }
    }

    /// Moves whenever this server (any of its lanes) applies a log: what moves MAX, and so what
    /// frees held frames. Only its changes mean anything.
    fn applied(&self) -> u64 {
        let mine = self.replica.as_ref().map_or(0, |r| r.stats().applied);
        mine + self.lane.as_ref().map_or(0, Lane::applied)
    }

    fn offer(&mut self, now: u64, frame: Frame<P>) {
        self.arrivals += 1;
        self.stats.frames += 1;
        self.process(now, self.arrivals, frame, false);
    }

    /// Handle one frame (it may end up held); when it goes (through, or dropped), the next
    /// held frame of its flow may go too. `again`: a held frame whose message was handled.
    fn process(&mut self, now: u64, arrival: u64, frame: Frame<P>, again: bool) {
        let flow = frame.packet.as_ref().map(|p| p.flow);
        if !self.process_or_hold(now, arrival, flow, frame, again) {
            self.held.left(arrival, flow);
        }
    }

    /// [`Server::process`] less the flow's bookkeeping; whether the frame was held.
    fn process_or_hold(
        &mut self,
        now: u64,
        arrival: u64,
        flow: Option<u64>,
        mut frame: Frame<P>,
        again: bool,
    ) -> bool {
        if self.error.is_some() {
            return false;
        }
        // A packet waits behind an earlier held packet of its flow (per-flow order).
        if let Some(flow) = flow.filter(|&f| self.held.is_behind(f, arrival)) {
            if !again && self.hold_full(true) {
                self.overflow(frame);
                return false;
            }
            self.held.hold_behind(arrival, flow, frame);
            return true;
        }
        // The message is checked once per hop (walked only, when frames are trusted); the
        // replica reads it and the next message is built from it.
        let view = match self.replica.is_some().then(|| self.view(&frame.msg)) {
            None => None,
            // A message longer than this server writes could neither go on with its packet nor
            // be split into propagating frames: no server of the chain sends one.
            Some(Ok(view)) if frame.msg.len() <= self.wbuf.len() => Some(view),
            Some(_) => {
                // Bad bytes from the network: dropped and counted, never trusted.
                self.stats.bad_frames += 1;
                return false;
            }
        };
        if let (Some(r), Some(v)) = (self.replica.as_mut(), &view) {
            let res = if again {
                r.handle_held_message(now, v)
            } else {
                if frame.flags & FLAG_RESENT != 0 {
                    r.resent_arrived(now, v);
                }
                r.handle_message(now, v)
            };
            match res {
                Ok(Admit::Ready) => {}
                // A frame offered again was held already: it stays (its message was handled).
                Ok(Admit::Hold(_)) if !again && self.hold_full(frame.packet.is_some()) => {
                    self.overflow(frame);
                    return false;
                }
                Ok(Admit::Hold(waits)) => {
                    self.stats.held += 1;
                    self.held.hold(arrival, flow, frame, &waits);
                    return true;
                }
                Err(source) if source.is_bad_input() => {
                    self.stats.bad_frames += 1;
                    return false;
                }
                Err(source) => {
                    self.fail(ServerError::Replica {
                        server: self.me.0,
                        source,
                    });
                    return false;
                }
            }
        }
        // No transaction while the retained logs are at their limit: the frame goes on without
        // its packet, with the others' logs and commit vectors.
        if frame.packet.is_some() && self.retain_full() {
            let packet = frame.packet.take().expect("checked");
            self.retain_overflow(packet);
        }
        let written = match self.run_middlebox_and_build(now, &mut frame.packet, view.as_ref()) {
            Ok(written) => written,
            Err(e) => {
                self.fail(e);
                return false;
            }
        };
        if self.me == self.last {
            self.at_the_end(now, view.as_ref(), frame.packet.take(), written);
            self.recycle(frame.msg);
        } else {
            // The incoming message is read: its buffer carries the next one (buffers stay with
            // their frames instead of piling up here and running short at the ingress).
            frame.msg.clear();
            frame
                .msg
                .extend_from_slice(&self.wbuf[..written.map_or(0, |w| w.len())]);
            frame.flags = 0;
            self.outputs.push_back(Output::Send {
                to: self.ring.next_server(self.me),
                frame,
            });
        }
        false
    }

    /// The packet transaction (if this server heads a group and the frame carries a packet) and
    /// the outgoing message, into the write buffer (none without a replica: NF).
    fn run_middlebox_and_build(
        &mut self,
        now: u64,
        packet: &mut Option<Packet<P>>,
        view: Option<&MessageView<'_>>,
    ) -> Result<Option<Written>, ServerError> {
        let me = self.me.0;
        let budget = match packet {
            Some(_) => self.config.trailer_budget,
            None => packetless_budget(&self.config, self.wbuf.len()),
        };
        let out = &mut self.wbuf[..];
        let none = None::<&ftc_stm::CommitRecord<'_>>;
        let written = match (&mut self.head, packet.as_mut()) {
            (Some((mb, middlebox, worker)), Some(pkt)) => {
                self.stats.transactions += 1;
                let (verdict, rec) = transact(
                    worker,
                    *middlebox,
                    pkt,
                    self.config.headroom,
                    now,
                    &mut self.scratch,
                    |_| (),
                );
                if self.config.observe {
                    self.outputs.push_back(Output::Committed {
                        handle: pkt.handle.clone(),
                        middlebox: mb.0,
                        kind: rec.kind(),
                        deps: rec.deps().collect(),
                    });
                }
                let built = match (&mut self.replica, view) {
                    (Some(r), Some(v)) => {
                        r.build_message(now, v, Some(&rec), out, budget).map(Some)
                    }
                    _ => Ok(None),
                };
                if verdict == Verdict::Drop {
                    self.stats.dropped += 1;
                    self.outputs.push_back(Output::Dropped {
                        handle: pkt.handle.clone(),
                        by: *mb,
                    });
                    *packet = None;
                }
                built
            }
            _ => match (&mut self.replica, view) {
                (Some(r), Some(v)) => r.build_message(now, v, none, out, budget).map(Some),
                _ => Ok(None),
            },
        };
        written.map_err(|source| ServerError::Replica { server: me, source })
    }

    /// The frame leaves the last server: into the buffer (FTC), out of the chain (NF). Its
    /// message is the one `written` at the start of the write buffer (not checked again); it is
    /// copied out only if the buffer refuses the packet and it must wait.
    fn at_the_end(
        &mut self,
        now: u64,
        incoming: Option<&MessageView<'_>>,
        packet: Option<Packet<P>>,
        written: Option<Written>,
    ) {
        let limit = self.hold_limit();
        let Some(buffer) = self.buffer.as_mut() else {
            if let Some(packet) = packet {
                self.outputs
                    .push_back(Output::Release { packet, hold_ns: 0 });
            }
            return;
        };
        if let Some(v) = incoming {
            buffer.handle_incoming_cvs(v);
        }
        let msg = &self.wbuf[..written.map_or(0, |w| w.len())];
        let view = match written.map_or_else(
            || MessageView::new_checked(msg),
            |w| MessageView::written(msg, w),
        ) {
            Ok(v) => v,
            Err(source) => {
                return self.fail(ServerError::Wire {
                    server: self.me.0,
                    source,
                })
            }
        };
        let observe = self.config.observe;
        let outputs = &mut self.outputs;
        let offered = packet.map(|packet| {
            if observe {
                outputs.push_back(Output::AtBuffer {
                    handle: packet.handle.clone(),
                });
            }
            let len = packet.bytes.len();
            let flow = packet.flow;
            BufferPacket {
                flow,
                len,
                handle: self.parked.insert(packet),
            }
        });
        if self.config.release_without_commit {
            if let Some(offer) = offered {
                let packet = self.parked.remove(offer.handle);
                self.outputs
                    .push_back(Output::Release { packet, hold_ns: 0 });
            }
            let _ = buffer.handle_frame(now, &view, None);
        } else if let Err(refused) = buffer.handle_frame(now, &view, offered) {
            let offer = refused.0;
            if self.refused.len() < limit {
                // Back-pressure: keep it and offer it again once the buffer released something.
                self.refused.push_back((msg.to_vec(), offer));
            } else {
                // As many wait already: the newest is dropped (its flow's order holds).
                buffer.give_up(offer.flow);
                let packet = self.parked.remove(offer.handle);
                self.stats.refused_overflow += 1;
                self.lose(packet.handle, Loss::RefusedFull);
            }
        }
        self.drain_buffer(now);
    }

    /// Offer the packets the buffer refused again, oldest first, until it refuses one, and
    /// release what may leave; while that makes room, again. (A packet accepted again may
    /// be ready at once, and it holds its room until released: stopping at the first refusal
    /// without releasing could leave refused packets with room free and nothing to come that
    /// would offer them again, the ingress held back by them.)
    fn retry_refused(&mut self, now: u64) {
        loop {
            let Some(buffer) = self.buffer.as_mut() else {
                return;
            };
            while let Some((msg, offer)) = self.refused.pop_front() {
                let Ok(view) = MessageView::new_checked(&msg) else {
                    continue;
                };
                if let Err(refused) = buffer.retry(now, &view, offer) {
                    self.refused.push_front((msg, refused.0));
                    break;
                }
            }
            if self.drain_buffer(now) == 0 || self.refused.is_empty() {
                return;
            }
        }
    }

    /// Released packets out of the chain; how many.
    fn drain_buffer(&mut self, now: u64) -> usize {
        let Some(buffer) = self.buffer.as_mut() else {
            return 0;
        };
        let mut released = 0;
        while let Some(r) = buffer.poll_release(now) {
            let packet = self.parked.remove(r.handle);
            self.outputs.push_back(Output::Release {
                packet,
                hold_ns: r.hold_ns,
            });
            released += 1;
        }
        released
    }

    /// The end of a batch of inputs at `now`: what the batch freed (held frames, refused
    /// packets) offered again and what the forwarder and the replica want sent, news exchanged
    /// with the server's other lanes, and the buffer's return frames to the forwarder, coalesced
    /// over the batch (one frame carries the logs and commit vectors of many packets).
    pub fn end_batch(&mut self, now: u64) {
        if self.error.is_none() && !self.frozen {
            self.settle(now);
        }
        self.sync_lanes(now);
        loop {
            let Some(buffer) = self.buffer.as_mut() else {
                return;
            };
            match write_packetless(&self.config, &mut self.wbuf, |out| {
                buffer.poll_return(now, out)
            }) {
                Ok(Some(len)) => {
                    let msg = self.message(len);
                    let to = self.ring.forwarder();
                    self.outputs.push_back(Output::Send {
                        to,
                        frame: Frame {
                            packet: None,
                            flags: 0,
                            msg,
                        },
                    });
                }
                Ok(None) => break,
                Err(source) => {
                    return self.fail(ServerError::Wire {
                        server: self.me.0,
                        source,
                    })
                }
            }
        }
    }

    /// Publishes this lane's news, says whether it waits for others', and takes theirs: held
    /// frames are offered again and the buffer releases what the merged vectors free.
    fn sync_lanes(&mut self, now: u64) {
        let (Some(lane), Some(replica)) = (self.lane.as_mut(), self.replica.as_mut()) else {
            return;
        };
        if self.error.is_some() || self.frozen {
            return;
        }
        lane.publish(replica, self.buffer.as_ref());
        let waiting = !self.held.is_empty()
            || !self.refused.is_empty()
            || self
                .buffer
                .as_ref()
                .is_some_and(|b| b.stats().held_packets > 0);
        lane.set_waiting(waiting);
        if lane.pull(now, replica, self.buffer.as_mut()) {
            // Offers held frames and refused packets again and releases what may leave.
            self.settle(now);
        }
    }

    /// The driver handed this lane every input that had reached it by `now` (its queue is
    /// empty): with several lanes, a retransmission request waits until every lane of the
    /// server has caught up to its due time ([`Replica::set_caught_up`]). Drivers of several
    /// lanes say it after each batch that emptied the queue, before [`Server::end_batch`].
    pub fn caught_up(&mut self, now: u64) {
        if let Some(lane) = self.lane.as_ref() {
            lane.caught_up_to(now);
        }
    }

    /// The other lanes of this server to wake because this one published news they wait for,
    /// or because a retransmission request waits for them to catch up; none with one lane.
    /// Drivers ask after each batch.
    pub fn take_wakeups(&mut self) -> LaneSet {
        self.lane
            .as_mut()
            .map_or(LaneSet::default(), Lane::take_wakeups)
    }

    /// Which lane of its server this is (0 when it has one).
    pub fn lane(&self) -> usize {
        self.lane.as_ref().map_or(0, Lane::index)
    }

    /// The replica stores of the groups this server replicates (the server's lanes share them).
    pub fn replica_stores(&self) -> Vec<(MbIndex, Arc<Store>)> {
        let Some(replica) = &self.replica else {
            return Vec::new();
        };
        self.ring
            .replicated_by(self.me)
            .filter_map(|mb| Some((mb, Arc::clone(replica.store(mb)?))))
            .collect()
    }

    /// Replicates into `stores` (another lane's) instead of this lane's own.
    pub(crate) fn share_replica_stores(
        &mut self,
        partitions: u32,
        stores: Vec<(MbIndex, Arc<Store>)>,
    ) {
        if self.replica.is_some() {
            self.replica = Some(Replica::with_stores(
                self.ring,
                self.me,
                partitions,
                self.config.replica,
                stores,
            ));
        }
    }

    /// Joins the server's other lanes: what they publish, and their parked logs.
    pub(crate) fn join_lanes(&mut self, lane: Lane, parked: &Arc<ParkedLogs>) {
        self.lane = Some(lane);
        if let Some(r) = self.replica.as_mut() {
            r.share_parked(Arc::clone(parked));
        }
    }
}

/// Run `packet` through `middlebox` as a transaction of `worker` at `now`, the packet free to
/// grow by `headroom` bytes; its verdict and commit record. `at_commit` runs at the commit, under
/// the transaction's locks ([`Worker::run_then`]).
pub(crate) fn transact<'w, P>(
    worker: &'w mut Worker<'_>,
    middlebox: &dyn Middlebox,
    packet: &mut Packet<P>,
    headroom: usize,
    now: u64,
    scratch: &mut Vec<u8>,
    at_commit: impl FnOnce(LogKind),
) -> (Verdict, ftc_stm::CommitRecord<'w>) {
    let len = packet.bytes.len();
    packet.bytes.resize(len + headroom, 0);
    let mut f = MbFrame::new(&mut packet.bytes, len).expect("len fits the buffer");
    let ctx = Ctx {
        worker: worker.id(),
        now_ns: now,
        direction: packet.dir,
    };
    let (verdict, rec) = process_packet(worker, middlebox, &mut f, &ctx, scratch, at_commit);
    let new_len = f.len();
    packet.bytes.truncate(new_len);
    (verdict, rec)
}

/// Values in reusable numbered slots: O(1) insert and remove, no hashing.
#[derive(Debug)]
struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<u64>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    fn insert(&mut self, value: T) -> u64 {
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(value);
                i
            }
            None => {
                self.slots.push(Some(value));
                self.slots.len() as u64 - 1
            }
        }
    }

    /// The value in slot `i`; the buffer only gives back slots it was given, once.
    fn remove(&mut self, i: u64) -> T {
        let value = self.slots[i as usize]
            .take()
            .expect("the buffer releases what it was given, once");
        self.free.push(i);
        value
    }
}

/// An empty piggyback message (what a frame carries when nothing rides on it).
pub fn empty_message() -> Vec<u8> {
    let mut buf = vec![0; ftc_chain::wire::MESSAGE_HEADER_LEN];
    let len = empty_message_len(&mut buf);
    buf.truncate(len);
    buf
}

/// Write an empty piggyback message at the start of `buf`; its length.
fn empty_message_len(buf: &mut [u8]) -> usize {
    MessageWriter::new(buf, 0)
        .map(MessageWriter::finish)
        .unwrap_or(0)
}

/// A direction's port at the forwarder.
pub fn port_of(dir: Direction) -> Port {
    match dir {
        Direction::Outbound => Port::Inside,
        Direction::Inbound => Port::Outside,
    }
}
