//! ftc-sim: the deterministic whole-chain simulation (DESIGN.md §10). One seeded scheduler drives
//! every core of a chain (forwarder, replicas, middleboxes over the STM, buffer) over a virtual
//! clock, with a network that loses, reorders, duplicates and delays frames, and checks after
//! every step:
//! - **output commit**: a released packet's every log is in f+1 stores (each non-head member's
//!   MAX covers it; the head has it by construction);
//! - **per-flow order**: packets of a flow leave in the order they reached the buffer, and in
//!   the order they entered the chain when the network itself does not reorder (copies it
//!   makes by duplication aside);
//! - **recovery** (with crash or heartbeat faults): after every recovery, each released packet's
//!   writes are in its middleboxes' restored head stores;
//! - **losses**: only a fenced server (a failure declared, not yet recovered) loses packets;
//! - and at the end, once faults stopped and the chain is quiet: every packet that reached the
//!   buffer was released or lost to a failure, none vanished inside the chain, a run without
//!   failures lost none, and every replica store equals its head.
//!
//! A run that recovered from failures then offers the same number of requests again, without
//! faults, to the recovered chain: the replacements must carry traffic and keep replicating it,
//! not only hold the state they were given (the checks above cover this round too).
//!
//! The same seed replays the same run exactly.

mod failures;
mod net;
mod rng;

use std::collections::{BTreeMap, HashMap, VecDeque};

use ftc_buffer::BufferConfig;
use ftc_chain::middlebox::Direction;
use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_chain::spec::ChainSpec;
use ftc_forwarder::ForwarderConfig;
use ftc_node::lanes::{lane_of, lanes, lanes_for};
use ftc_node::server::port_of;
use ftc_node::traffic::request;
use ftc_node::{Frame, Heads, Loss, Output, Packet, Server, ServerConfig};
use ftc_replica::ReplicaConfig;
use ftc_stm::{DepEntry, LogKind, Partition, Store};

pub use net::Faults;

/// Bytes of a simulated request: a 64-byte TCP payload.
const REQUEST_SIZE: usize = 14 + 20 + 20 + 64;
use net::{Event, Network, Node};
use rng::Rng;

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    /// Requests sent into the chain (each released request is echoed back as a reply).
    pub packets: u32,
    pub flows: u32,
    pub faults: Faults,
    pub trailer_budget: usize,
    /// Test hook: the buffer lets packets leave without waiting for commit vectors. The checker
    /// must catch it.
    pub broken_release: bool,
    /// Test hook: the buffer waits by a subtly wrong rule ([`ftc_buffer::Weakened`]). The
    /// checker must catch it.
    pub weakened_release: Option<ftc_buffer::Weakened>,
    /// Test hook: a recovery restores a failed head with an empty state instead of fetching it
    /// (state lost). The checker must catch it.
    pub broken_recovery: bool,
    /// Test hook: fenced servers keep running until the reroute (no quiescence), so sources
    /// may change between the fetches of one recovery. The checker must catch it.
    pub broken_fence: bool,
    /// Test hook: the buffer's server reports the packets it releases whose ids are multiples
    /// of five as lost ([`Output::Lost`]) instead, fenced or not. The checker must catch it.
    pub broken_lose: bool,
    /// Give up (a violation: no quiescence, a livelock?) after this many steps per request
    /// offered, and [`MIN_STEP_LIMIT`] at least ([`SimConfig::step_limit`]). A run takes a few
    /// to some tens of steps per request, also with every fault.
    pub max_steps_per_request: u64,
    /// Held frames at which a server is congested (customer packets then wait at the ingress).
    pub max_held_frames: usize,
    /// Packets the buffer holds at most; beyond, it refuses them and they wait at its server
    /// with their messages (back-pressure).
    pub max_buffered_packets: usize,
    /// Logs a server retains at most while it transacts ([`ServerConfig::retain_limit`]):
    /// past it, packets that would run a transaction are lost by design, and counted apart.
    pub max_retained_logs: usize,
}

/// The fewest steps a run may take before it is given up: short runs have room for many
/// timeouts and recoveries.
pub const MIN_STEP_LIMIT: u64 = 2_000_000;

impl SimConfig {
    /// The steps after which a run is given up: long runs get room in proportion (a fixed
    /// limit reported runs of many requests as livelocks).
    pub fn step_limit(&self) -> u64 {
        (self.max_steps_per_request * u64::from(self.packets)).max(MIN_STEP_LIMIT)
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            packets: 200,
            flows: 8,
            faults: Faults::default(),
            trailer_budget: 512,
            broken_release: false,
            weakened_release: None,
            broken_recovery: false,
            broken_fence: false,
            broken_lose: false,
            max_steps_per_request: 1_000,
            max_held_frames: 4096,
            max_buffered_packets: BufferConfig::DEFAULT_MAX_HELD_PACKETS,
            max_retained_logs: ServerConfig::default().retain_limit,
        }
    }
}

/// What happened, and every invariant that broke.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SimReport {
    pub seed: u64,
    pub steps: u64,
    pub virtual_time_ns: u64,
    pub packets_sent: u64,
    pub packets_released: u64,
    pub dropped_by_middlebox: u64,
    pub lost_in_network: u64,
    pub frames_sent: u64,
    /// Frames lost to link cuts ([`Faults::cuts`]), counted in `lost_in_network` too when they
    /// carried a customer packet.
    pub frames_cut: u64,
    pub retransmit_requests: u64,
    pub logs_resent: u64,
    pub max_held_frames: usize,
    /// Customer packets kept waiting at the ingress by back-pressure (a congested server).
    pub ingress_deferred: u64,
    /// Offers of packets that the buffer refused (back-pressure), over the buffer's server as
    /// it stands at the end.
    pub buffer_refused: u64,
    /// Crash events that happened ([`Faults::crashes`] asked for; each waits while fewer
    /// servers than it kills may fail, so all happen unless the run stopped at a violation).
    pub crashes: u64,
    /// Servers failed (crashed, or declared failed on lost heartbeats) and recovered.
    pub failures: u64,
    pub recoveries: u64,
    /// Packets lost to failures (inside a failed server, or fenced with the old epoch).
    pub lost_to_failures: u64,
    /// Packets lost at a server that retained as many logs as it keeps while it transacts
    /// ([`SimConfig::max_retained_logs`]).
    pub lost_to_retain_limit: u64,
    /// Packets released in the round of traffic offered after the recoveries, once the chain
    /// was quiet (requests and their replies; 0 when nothing failed).
    pub released_after_recovery: u64,
    pub violations: Vec<String>,
}

/// One packet's life, as the checker sees it.
#[derive(Debug, Default)]
struct PacketInfo {
    flow: u32,
    /// The logs its transactions produced: (middlebox, kind, dependencies).
    logs: Vec<(u8, LogKind, Vec<DepEntry>)>,
    lost: bool,
    /// Lost to a failure (including fenced at a recovery).
    failed: bool,
    dropped: bool,
    at_buffer: bool,
    released: bool,
    /// A copy the network made of another packet (duplication): it may arrive after later
    /// packets of its flow, so it is not held to the order packets entered the chain.
    copy: bool,
}

/// Frames carry the packet id as handle.
pub(crate) type SimFrame = Frame<u64>;
pub(crate) type Pkt = Packet<u64>;

struct Sim<'a> {
    ring: Ring,
    partitions: u32,
    config: &'a SimConfig,
    server_config: ServerConfig,
    heads: &'a Heads,
    net: Network,
    /// The lanes of each server; `None` while a server is down.
    servers: Vec<Option<Vec<Server<'a, u64>>>>,
    /// Per server: fenced, from a declared failure (or its own failure) until the recovery
    /// resumes it. Only a fenced server may lose packets ([`Output::Lost`]).
    fenced: Vec<bool>,
    epoch: u32,
    failures: failures::Failures,
    packets: BTreeMap<u64, PacketInfo>,
    /// Per flow: packets in the order they entered the buffer, not yet released.
    at_buffer: HashMap<u32, VecDeque<u64>>,
    /// Per flow: the id of the last packet released that is not a copy.
    last_released: HashMap<u32, u64>,
    next_id: u64,
    /// Customer packets waiting outside the chain while a server pushes back (congested), in
    /// the order they came; the first is offered again every [`ADMIT_RETRY_NS`] until it enters.
    waiting: VecDeque<Pkt>,
    report: SimReport,
}

/// How often the first packet waiting at the ingress for back-pressure to end is offered again.
const ADMIT_RETRY_NS: u64 = 10_000;

/// Run one seeded simulation of `spec`.
pub fn run(spec: &ChainSpec, config: &SimConfig) -> SimReport {
    let ring = spec.ring();
    let partitions = spec.chain.partitions;
    // A server runs a lane (worker thread) per `threads` of the middlebox it heads.
    let heads = Heads::new(spec, |m| m.threads).expect("a valid spec gives valid stores");
    let server_config = ServerConfig {
        trailer_budget: config.trailer_budget,
        replica: ReplicaConfig {
            hold_timeout_ns: 50_000,
            resend_timeout_ns: 200_000,
            lazy_announce_ns: 20_000,
            direct_commit_vectors: true,
        },
        forwarder: ForwarderConfig {
            trailer_budget: config.trailer_budget,
            idle_timeout_ns: 20_000,
            lazy_timeout_ns: 50_000,
            max_pending_bytes: 1 << 20,
        },
        buffer: BufferConfig {
            max_held_packets: config.max_buffered_packets,
            stall_timeout_ns: 300_000,
            lazy_return_ns: 50_000,
            weakened: config.weakened_release,
            ..BufferConfig::default()
        },
        observe: true,
        max_held_frames: config.max_held_frames,
        retain_limit: config.max_retained_logs,
        release_without_commit: config.broken_release,
        run_while_fenced: config.broken_fence,
        ..ServerConfig::default()
    };
    let servers = ring
        .server_ids()
        .map(|s| {
            let heads = heads.head_lanes(&ring, s, 0);
            Some(lanes(ring, s, partitions, heads, &server_config).expect("valid partitions"))
        })
        .collect();
    let mut sim = Sim {
        ring,
        partitions,
        config,
        server_config,
        heads: &heads,
        net: Network::new(Rng::new(config.seed), config.faults),
        servers,
        fenced: vec![false; ring.server_ids().count()],
        epoch: 0,
        failures: failures::Failures::new(ring, config.seed),
        packets: BTreeMap::new(),
        at_buffer: HashMap::new(),
        last_released: HashMap::new(),
        next_id: 0,
        waiting: VecDeque::new(),
        report: SimReport {
            seed: config.seed,
            ..SimReport::default()
        },
    };
    let end = sim.inject_traffic(0, 0x5eed_7aff_1c00_0001);
    // Faults only while traffic is offered; afterwards the chain must heal by itself.
    sim.net.faults_until(end);
    sim.schedule_failures(end);
    sim.schedule_cuts(end);
    sim.run_to_quiet();
    if sim.report.recoveries > 0 && sim.report.violations.is_empty() {
        let before = sim.report.packets_released;
        sim.inject_traffic(sim.now(), 0xafe7_2eca_0e00_0002);
        sim.run_to_quiet();
        sim.report.released_after_recovery = sim.report.packets_released - before;
    }
    sim.final_checks();
    sim.report.virtual_time_ns = sim.net.now();
    sim.report.frames_cut = sim.net.frames_cut;
    sim.report
}

impl<'a> Sim<'a> {
    /// Schedule the configured number of requests from `start` on, spaced by random gaps drawn
    /// from the seed and `stream`; returns when the last is offered.
    fn inject_traffic(&mut self, start: u64, stream: u64) -> u64 {
        let mut rng = Rng::new(self.config.seed ^ stream);
        let mut t = start;
        for _ in 0..self.config.packets {
            t += 500 + rng.below(3_000);
            let flow = rng.below(u64::from(self.config.flows.max(1))) as u32;
            let bytes = request(flow, rng.below(1 << 16) as u32, REQUEST_SIZE);
            let packet = Packet {
                handle: 0,
                flow: u64::from(flow),
                dir: Direction::Outbound,
                bytes,
            };
            self.net.schedule(t, Event::Inject(packet));
        }
        t
    }

    /// The configured link cuts, each while traffic is offered (before `traffic_end`): a random
    /// server's frames to its successor are lost from a random time for a tenth to a half of
    /// the traffic's span (drawn from a stream of the seed of their own, so that runs without
    /// cuts are the runs they were).
    fn schedule_cuts(&mut self, traffic_end: u64) {
        let mut rng = Rng::new(self.config.seed ^ 0xc075_11c0_0000_0003);
        let servers = self.ring.server_ids().count() as u64;
        for _ in 0..self.config.faults.cuts {
            let from = ServerId(rng.below(servers) as u16);
            let (start, end) = rng.stretch(traffic_end);
            self.net.cut(from, start, end);
        }
    }

    /// A fresh packet id: ids follow the order packets entered the chain.
    fn register(&mut self, info: PacketInfo) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.packets.insert(id, info);
        id
    }

    fn run_to_quiet(&mut self) {
        while let Some((now, event)) = self.net.pop() {
            self.report.steps += 1;
            if self.report.steps > self.config.step_limit() {
                let state = self.describe();
                self.violation(format!(
                    "no quiescence after {} steps (livelock?) at t={now}ns; {state}",
                    self.config.step_limit()
                ));
                return;
            }
            let at = match event {
                Event::Inject(packet)
                    if !self.waiting.is_empty() || self.all().any(Server::congested) =>
                {
                    // Back-pressure: the packet waits outside the chain, behind those waiting
                    // already (one retry at a time, however many wait).
                    self.report.ingress_deferred += 1;
                    if self.waiting.is_empty() {
                        self.net.schedule(now + ADMIT_RETRY_NS, Event::Admit);
                    }
                    self.waiting.push_back(packet);
                    continue;
                }
                Event::Admit if self.all().any(Server::congested) => {
                    self.net.schedule(now + ADMIT_RETRY_NS, Event::Admit);
                    continue;
                }
                Event::Admit => {
                    let Some(packet) = self.waiting.pop_front() else {
                        continue;
                    };
                    if !self.waiting.is_empty() {
                        // The next once this one (and what it sets off now) is handled.
                        self.net.schedule(now, Event::Admit);
                    }
                    match self.enter(now, packet) {
                        Some(at) => at,
                        None => continue,
                    }
                }
                Event::Inject(packet) => match self.enter(now, packet) {
                    Some(at) => at,
                    None => continue,
                },
                Event::Deliver {
                    from,
                    to,
                    epoch,
                    frame,
                } => match (epoch == self.epoch, self.lane_mut(to)) {
                    (true, Some(server)) => {
                        server.handle_frame(now, from, frame);
                        to
                    }
                    _ => {
                        // Fenced (an older epoch) or sent to a failed server.
                        if let Some(p) = frame.packet {
                            self.lost_to_failure(p.handle);
                        }
                        continue;
                    }
                },
                Event::Timer(node) => match self.lane_mut(node) {
                    Some(server) => {
                        server.handle_timeout(now);
                        node
                    }
                    None => continue,
                },
                Event::Crash(count) => {
                    self.crash(count);
                    continue;
                }
                Event::Heartbeat => {
                    self.heartbeat();
                    continue;
                }
                Event::Recover => {
                    self.recover();
                    continue;
                }
                Event::Fetch => {
                    self.fetch();
                    continue;
                }
            };
            self.drain(at);
            if !self.report.violations.is_empty() {
                return;
            }
        }
    }

    fn now(&self) -> u64 {
        self.net.now()
    }

    /// A customer packet enters the chain at the forwarder (lost if its server is down): the
    /// lane it went to.
    fn enter(&mut self, now: u64, mut packet: Pkt) -> Option<Node> {
        self.report.packets_sent += 1;
        packet.handle = self.register(PacketInfo {
            flow: packet.flow as u32,
            ..PacketInfo::default()
        });
        let port = port_of(packet.dir);
        let s = self.ring.forwarder();
        let Some(lanes) = self.servers[usize::from(s.0)].as_mut() else {
            self.lost_to_failure(packet.handle);
            return None;
        };
        let lane = lane_of(packet.flow, lanes.len());
        if let Err((why, _)) = lanes[lane].handle_ingress(now, packet, port) {
            self.violation(format!("the forwarder refused a customer packet: {why}"));
        }
        Some((s, lane))
    }

    /// Every live lane of every server.
    fn all(&self) -> impl Iterator<Item = &Server<'_, u64>> + '_ {
        self.servers.iter().flatten().flatten()
    }

    /// Lane `node`, if its server is up.
    fn lane_mut(&mut self, (s, lane): Node) -> Option<&mut Server<'a, u64>> {
        self.servers[usize::from(s.0)].as_mut()?.get_mut(lane)
    }

    /// The first lane of server `s` (its replica stores are every lane's), if it is up.
    fn first_lane(&self, s: ServerId) -> Option<&Server<'a, u64>> {
        self.servers[usize::from(s.0)].as_ref()?.first()
    }

    /// [`Sim::drain`] every lane of server `s`.
    fn drain_server(&mut self, s: ServerId) {
        let lanes = self.servers[usize::from(s.0)].as_ref().map_or(0, Vec::len);
        for lane in 0..lanes {
            self.drain((s, lane));
        }
    }

    /// Carry out what lane `node` wants done, check what leaves, arm its timer and wake the
    /// lanes its news may free.
    fn drain(&mut self, node: Node) {
        let now = self.now();
        let Some(server) = self.lane_mut(node) else {
            return;
        };
        server.caught_up(now);
        server.end_batch(now);
        let wake = server.take_wakeups();
        while let Some(out) = self.lane_mut(node).and_then(Server::poll_output) {
            match out {
                Output::Lost { handle, why } => self.lost_by(node.0, handle, why),
                Output::Release { packet, .. }
                    if self.config.broken_lose && packet.handle % 5 == 0 =>
                {
                    self.lost_by(node.0, packet.handle, Loss::Fenced);
                }
                Output::Send { to, frame } => self.send(node, to, frame),
                Output::Release { packet, .. } => self.release(packet),
                Output::Dropped { handle, .. } => {
                    self.report.dropped_by_middlebox += 1;
                    self.info(handle).dropped = true;
                }
                Output::Committed {
                    handle,
                    middlebox,
                    kind,
                    deps,
                } => {
                    self.info(handle).logs.push((middlebox, kind, deps));
                }
                Output::AtBuffer { handle } => {
                    let info = self.info(handle);
                    info.at_buffer = true;
                    let flow = info.flow;
                    self.at_buffer.entry(flow).or_default().push_back(handle);
                }
            }
        }
        let Some(server) = self.lane_mut(node) else {
            return;
        };
        let (error, timeout) = (
            server.error().map(ToString::to_string),
            server.poll_timeout(),
        );
        if let Some(e) = error {
            self.violation(e);
        }
        if let Some(t) = timeout {
            self.net.arm_timer(node, t.max(now + 1));
        }
        for lane in wake.iter() {
            self.net.arm_timer((node.0, lane), now + 1);
        }
        let held = self.all().map(Server::held).sum();
        self.report.max_held_frames = self.report.max_held_frames.max(held);
    }

    fn info(&mut self, id: u64) -> &mut PacketInfo {
        self.packets
            .get_mut(&id)
            .expect("every packet is registered")
    }

    /// A packet leaves the chain: check output commit and per-flow order, echo requests back.
    fn release(&mut self, packet: Pkt) {
        let now = self.now();
        let id = packet.handle;
        self.report.packets_released += 1;
        let info = self.info(id);
        info.released = true;
        let (flow, copy) = (info.flow, info.copy);
        let mut broken = Vec::new();
        for (mb, kind, deps) in &self.packets[&id].logs {
            for member in self.ring.group(MbIndex(*mb)).skip(1) {
                // A member down now counts by what its stores held when it went down.
                let store = match self.first_lane(member) {
                    Some(server) => {
                        let replica = server.replica().expect("FTC mode");
                        replica.store(MbIndex(*mb)).expect("members keep stores")
                    }
                    None => self.failures.dead[&member]
                        .iter()
                        .find(|(m, _)| m.0 == *mb)
                        .map(|(_, store)| store)
                        .expect("a server down kept its stores"),
                };
                if !holds(store, *kind, deps) {
                    broken.push(format!(
                        "output commit: packet {id} left at t={now}ns before its {kind:?} log of m{mb} ({deps:?}) reached server {}",
                        member.0
                    ));
                }
            }
        }
        for v in broken {
            self.violation(v);
        }
        let queue = self.at_buffer.entry(flow).or_default();
        match queue.iter().position(|&x| x == id) {
            Some(0) => {
                queue.pop_front();
            }
            Some(_) => self.violation(format!(
                "per-flow order: packet {id} of flow {flow} overtook an earlier one at the buffer"
            )),
            None => self.violation(format!("packet {id} released without entering the buffer")),
        }
        if !copy && !self.config.faults.reorders() {
            if let Some(&last) = self.last_released.get(&flow) {
                if last > id {
                    self.violation(format!(
                        "per-flow order: packet {id} of flow {flow} left after packet {last}"
                    ));
                }
            }
            self.last_released.insert(flow, id);
        }
        // The server behind the chain answers each request; the reply comes back through it.
        if packet.dir == Direction::Outbound {
            if let Some(bytes) = reply(&packet.bytes) {
                let reply = Packet {
                    handle: 0,
                    flow: packet.flow,
                    dir: Direction::Inbound,
                    bytes,
                };
                self.net.schedule(now + 2_000, Event::Inject(reply));
            }
        }
    }

    /// After the run: everything released, nothing vanished, every replica equals its head.
    fn final_checks(&mut self) {
        if !self.report.violations.is_empty() {
            return;
        }
        let mut found = Vec::new();
        if let Some(down) = self.servers.iter().position(Option::is_none) {
            found.push(format!("server {down} was never recovered"));
        }
        if self.report.failures == 0 && self.report.lost_to_failures > 0 {
            found.push(format!(
                "lost without a failure: {} packets lost to failures in a run without any",
                self.report.lost_to_failures
            ));
        }
        for (id, info) in &self.packets {
            if info.failed {
                continue;
            }
            if info.at_buffer && !info.released {
                found.push(format!(
                    "packet {id} reached the buffer but was never released"
                ));
            } else if !info.at_buffer && !info.lost && !info.dropped && !info.released {
                found.push(format!("packet {id} vanished inside the chain (lost by no fault, dropped by no middlebox)"));
            }
        }
        for mb in self.ring.mb_indices() {
            let head = &self.heads.stores[usize::from(mb.0)];
            for member in self.ring.group(mb).skip(1) {
                let Some(server) = self.first_lane(member) else {
                    continue;
                };
                let replica = server.replica().expect("FTC mode");
                let store = replica.store(mb).expect("members keep stores");
                if store.vector() != head.vector() || store.to_map() != head.to_map() {
                    found.push(format!(
                        "store of m{} on server {} differs from its head",
                        mb.0, member.0
                    ));
                }
            }
        }
        let (requests, resent) = self.all().fold((0, 0), |(q, r), server| {
            let st = server.replica().expect("FTC mode").stats();
            (q + st.requests_sent, r + st.logs_resent)
        });
        self.report.retransmit_requests += requests;
        self.report.logs_resent += resent;
        self.report.buffer_refused += self
            .all()
            .filter_map(|server| server.buffer())
            .map(|b| b.stats().refused)
            .sum::<u64>();
        for v in found {
            self.violation(v);
        }
    }

    /// Put a frame on the wire from lane `from` to server `to`, to the lanes it goes to there.
    fn send(&mut self, from: Node, to: ServerId, frame: SimFrame) {
        let lanes = self.servers[usize::from(to.0)].as_ref().map_or(1, Vec::len);
        let picked = lanes_for(&frame, from.1, lanes);
        for lane in picked {
            self.send_one(from.0, (to, lane), frame.clone());
        }
    }

    /// Put a frame on the wire from `from` to lane `to`: the network may lose, delay or
    /// duplicate it. A duplicate of a customer packet becomes a packet of its own, a copy (a
    /// new id, the same logs); the first delivery keeps the frame's id.
    fn send_one(&mut self, from: ServerId, to: Node, frame: SimFrame) {
        self.report.frames_sent += 1;
        let next = to.0 == self.ring.next_server(from);
        let delays = self.net.plan(from, next);
        if delays.is_empty() {
            if let Some(packet) = &frame.packet {
                self.info(packet.handle).lost = true;
                self.report.lost_in_network += 1;
            }
            return;
        }
        for (i, delay) in delays.into_iter().enumerate() {
            let mut copy = frame.clone();
            if let (true, Some(packet)) = (i > 0, &mut copy.packet) {
                let info = &self.packets[&packet.handle];
                let copy_info = PacketInfo {
                    flow: info.flow,
                    logs: info.logs.clone(),
                    copy: true,
                    ..PacketInfo::default()
                };
                packet.handle = self.register(copy_info);
            }
            let at = self.now() + delay;
            self.net.schedule(
                at,
                Event::Deliver {
                    from,
                    to,
                    epoch: self.epoch,
                    frame: copy,
                },
            );
        }
    }

    /// Where things stand, for a violation's message.
    fn describe(&self) -> String {
        let servers: Vec<String> = self
            .servers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.as_ref()?)))
            .flat_map(|(i, lanes)| lanes.iter().map(move |s| (i, s)))
            .map(|(i, s)| {
                let r = s.replica().expect("FTC mode");
                let st = r.stats();
                format!(
                    "server {i} lane {}: held {}, retained {:?}, applied {}, dup {}, requests {}, resent {}",
                    s.lane(),
                    s.held(),
                    r.retained(),
                    st.applied,
                    st.duplicates,
                    st.requests_sent,
                    st.logs_resent
                )
            })
            .collect();
        let lanes = |s: ServerId| self.servers[usize::from(s.0)].iter().flatten();
        let pending = lanes(ServerId(0))
            .filter_map(Server::forwarder)
            .any(|f| f.has_pending());
        let buffered: usize = lanes(self.ring.buffer())
            .filter_map(Server::buffer)
            .map(|b| b.stats().held_packets)
            .sum();
        format!(
            "{}; forwarder pending {pending}; buffer held {buffered}; waiting at the ingress {}",
            servers.join("; "),
            self.waiting.len()
        )
    }

    fn violation(&mut self, v: String) {
        if self.report.violations.len() < 20 {
            self.report.violations.push(v);
        }
    }
}

/// Whether `store` (a replica's MAX) covers a log: an update when MAX[p] > D[p] for all p, a
/// read-only log when MAX[p] >= D[p].
fn holds(store: &Store, kind: LogKind, deps: &[DepEntry]) -> bool {
    deps.iter().all(|d| {
        let max = store.seq(Partition(d.partition.0));
        match kind {
            LogKind::Update => max > d.seq,
            LogKind::ReadOnly => max >= d.seq,
            LogKind::Noop => true,
        }
    })
}

/// The server's answer to a request as it left the chain: addresses and ports swapped.
fn reply(request: &[u8]) -> Option<Vec<u8>> {
    let p = etherparse::SlicedPacket::from_ethernet(request).ok()?;
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
        return None;
    };
    let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else {
        return None;
    };
    let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
        .ipv4(ip.header().destination(), ip.header().source(), 64)
        .tcp(tcp.destination_port(), tcp.source_port(), 1, 65_535)
        .ack(tcp.sequence_number().wrapping_add(1));
    let mut out = Vec::with_capacity(builder.size(32));
    builder.write(&mut out, &[0xa5; 32]).ok()?;
    Some(out)
}
