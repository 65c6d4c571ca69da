//! ftc-sim: the deterministic whole-chain simulation (DESIGN.md §10). One seeded scheduler drives
//! every core of a chain (forwarder, replicas, middleboxes over the STM, buffer) over a virtual
//! clock, with a network that loses, reorders, duplicates and delays frames, and checks after
//! every step:
//! - **output commit**: a released packet's every log is in f+1 stores (each non-head member's
//!   MAX covers it; the head has it by construction);
//! - **per-flow order**: packets of a flow leave in the order they reached the buffer, and in
//!   the order they entered the chain when the network itself does not reorder;
//! - and at the end, once faults stopped and the chain is quiet: every packet that reached the
//!   buffer was released, none vanished inside the chain, and every replica store equals its
//!   head.
//!
//! The same seed replays the same run exactly.

mod net;
mod rng;

use std::collections::{BTreeMap, HashMap, VecDeque};

use ftc_buffer::{Buffer, BufferConfig, Packet};
use ftc_chain::middlebox::{process_packet, Ctx, Direction, Frame as MbFrame, Middlebox};
use ftc_chain::middleboxes;
use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_chain::spec::ChainSpec;
use ftc_chain::wire::MessageView;
use ftc_forwarder::{Forwarder, ForwarderConfig, Ingress, Port};
use ftc_replica::{Admit, Replica, ReplicaConfig, FLAG_RETRANSMIT_REQUEST};
use ftc_stm::{DepEntry, LogKind, LogSource, Partition, Store, Worker};

pub use net::Faults;
use net::{Event, Network};
use rng::Rng;

/// Room for a customer frame, or for a trailer, between servers (jumbo frames).
const FRAME_ROOM: usize = 9000;

/// What to simulate.
#[derive(Debug, Clone)]
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
    /// Give up (a violation) after this many steps.
    pub max_steps: u64,
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
            max_steps: 2_000_000,
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
    pub retransmit_requests: u64,
    pub logs_resent: u64,
    pub max_held_frames: usize,
    pub violations: Vec<String>,
}

/// One packet's life, as the checker sees it.
#[derive(Debug, Default)]
struct PacketInfo {
    flow: u32,
    /// The logs its transactions produced: (middlebox, kind, dependencies).
    logs: Vec<(u8, LogKind, Vec<DepEntry>)>,
    lost: bool,
    dropped: bool,
    at_buffer: bool,
    released: bool,
}

/// A customer packet inside the chain.
#[derive(Debug, Clone)]
struct Pkt {
    id: u64,
    flow: u32,
    dir: Direction,
    bytes: Vec<u8>,
}

/// A frame between servers.
#[derive(Debug, Clone)]
pub(crate) struct SimFrame {
    data: Option<Pkt>,
    flags: u16,
    msg: Vec<u8>,
}

struct Node<'a> {
    head: Option<(MbIndex, &'a dyn Middlebox, Worker<'a>)>,
    replica: Replica,
    held: VecDeque<SimFrame>,
}

struct Sim<'a> {
    ring: Ring,
    config: &'a SimConfig,
    net: Network,
    nodes: Vec<Node<'a>>,
    forwarder: Forwarder,
    buffer: Buffer<u64>,
    packets: BTreeMap<u64, PacketInfo>,
    /// Per flow: packets in the order they reached the buffer, not yet released.
    at_buffer: HashMap<u32, VecDeque<u64>>,
    /// Per flow: the id of the last packet released.
    last_released: HashMap<u32, u64>,
    /// Packets the buffer holds, by id (the buffer holds only their handles).
    parked: HashMap<u64, Pkt>,
    next_id: u64,
    scratch: Vec<u8>,
    report: SimReport,
}

/// Run one seeded simulation of `spec`.
pub fn run(spec: &ChainSpec, config: &SimConfig) -> SimReport {
    let ring = spec.ring();
    let partitions = spec.chain.partitions;
    let mbs: Vec<Box<dyn Middlebox>> = spec.middlebox.iter().map(middleboxes::build).collect();
    let heads: Vec<Store> = spec
        .middlebox
        .iter()
        .map(|_| Store::new(partitions, 1).expect("a valid spec gives a valid store"))
        .collect();
    let replica_config = ReplicaConfig {
        hold_timeout_ns: 50_000,
        resend_timeout_ns: 200_000,
    };
    let nodes = ring
        .server_ids()
        .map(|s| Node {
            head: ring.middlebox_at(s).map(|mb| {
                let i = usize::from(mb.0);
                (
                    mb,
                    mbs[i].as_ref(),
                    heads[i].worker(0).expect("one worker per head"),
                )
            }),
            replica: Replica::new(ring, s, partitions, replica_config).expect("valid partitions"),
            held: VecDeque::new(),
        })
        .collect();
    let mut sim = Sim {
        ring,
        config,
        net: Network::new(Rng::new(config.seed), config.faults),
        nodes,
        forwarder: Forwarder::new(
            partitions,
            ForwarderConfig {
                trailer_budget: config.trailer_budget,
                idle_timeout_ns: 20_000,
                max_pending_bytes: 1 << 20,
            },
        ),
        buffer: Buffer::new(ring, partitions, BufferConfig::default()),
        packets: BTreeMap::new(),
        at_buffer: HashMap::new(),
        last_released: HashMap::new(),
        parked: HashMap::new(),
        next_id: 0,
        scratch: Vec::new(),
        report: SimReport {
            seed: config.seed,
            ..SimReport::default()
        },
    };
    sim.inject_traffic();
    sim.run_to_quiet();
    sim.final_checks(&heads);
    sim.report.virtual_time_ns = sim.net.now();
    sim.report
}

impl Sim<'_> {
    fn inject_traffic(&mut self) {
        let mut rng = Rng::new(self.config.seed ^ 0x5eed_7aff_1c00_0001);
        let mut t = 0;
        for _ in 0..self.config.packets {
            t += 500 + rng.below(3_000);
            let flow = rng.below(u64::from(self.config.flows.max(1))) as u32;
            let bytes = request(flow, rng.below(1 << 16) as u32);
            self.net.schedule(
                t,
                Event::Inject(Pkt {
                    id: 0,
                    flow,
                    dir: Direction::Outbound,
                    bytes,
                }),
            );
        }
        // Faults only while traffic is offered; afterwards the chain must heal by itself.
        self.net.faults_until(t);
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
            if self.report.steps > self.config.max_steps {
                let state = self.describe();
                self.violation(format!(
                    "no quiescence after {} steps (livelock?) at t={now}ns; {state}",
                    self.config.max_steps
                ));
                return;
            }
            match event {
                Event::Inject(pkt) => self.ingress(pkt),
                Event::Deliver { from, to, frame } => self.deliver(from, to, frame),
                Event::Timer(s) => self.timer(s),
            }
            if !self.report.violations.is_empty() {
                return;
            }
        }
    }

    fn now(&self) -> u64 {
        self.net.now()
    }

    /// A customer packet reaches server 0: the forwarder admits it and attaches pending content.
    fn ingress(&mut self, mut pkt: Pkt) {
        let now = self.now();
        pkt.id = self.register(PacketInfo {
            flow: pkt.flow,
            ..PacketInfo::default()
        });
        self.report.packets_sent += 1;
        let port = if pkt.dir == Direction::Outbound {
            Port::Inside
        } else {
            Port::Outside
        };
        match self.forwarder.handle_ingress(now, &pkt.bytes, port) {
            Ingress::Accept(dir) if dir == pkt.dir => {}
            other => {
                self.violation(format!("forwarder refused a customer packet: {other:?}"));
                return;
            }
        }
        let mut msg = vec![0; self.config.trailer_budget];
        let len = self
            .forwarder
            .attach(now, &mut msg)
            .expect("attach writes a valid message");
        msg.truncate(len);
        self.process(
            ServerId(0),
            SimFrame {
                data: Some(pkt),
                flags: 0,
                msg,
            },
        );
        self.settle(ServerId(0));
    }

    fn deliver(&mut self, from: ServerId, to: ServerId, frame: SimFrame) {
        let now = self.now();
        let Ok(view) = MessageView::new_checked(&frame.msg) else {
            self.violation("a server sent an invalid message".into());
            return;
        };
        if frame.flags & FLAG_RETRANSMIT_REQUEST != 0 {
            self.nodes[usize::from(to.0)]
                .replica
                .handle_retransmit_request(from, &view);
        } else if to == self.ring.forwarder() && from == self.ring.buffer() {
            // The ring-closing link: return frames (and the last server's overflow and resends)
            // go into the forwarder's pending content.
            let _ = self.forwarder.handle_return(now, &view);
        } else {
            self.process(to, frame);
        }
        self.settle(to);
    }

    fn timer(&mut self, s: ServerId) {
        self.settle(s);
    }

    /// After anything happened at `s`: offer held frames again, send what the cores want sent,
    /// arm the timer.
    fn settle(&mut self, s: ServerId) {
        let now = self.now();
        self.retry_held(s);
        if s == self.ring.forwarder() {
            loop {
                let mut msg = vec![0; self.config.trailer_budget];
                match self.forwarder.poll_propagate(now, &mut msg) {
                    Ok(Some(len)) => {
                        msg.truncate(len);
                        self.process(
                            s,
                            SimFrame {
                                data: None,
                                flags: 0,
                                msg,
                            },
                        );
                        self.retry_held(s);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.violation(format!(
                            "forwarder could not write a propagating frame: {e}"
                        ));
                        return;
                    }
                }
            }
        }
        let mut sends = Vec::new();
        let node = &mut self.nodes[usize::from(s.0)];
        loop {
            let mut msg = vec![0; self.config.trailer_budget];
            match node.replica.poll_transmit(now, &mut msg) {
                Ok(Some(t)) => {
                    msg.truncate(t.len);
                    sends.push((
                        t.to,
                        SimFrame {
                            data: None,
                            flags: t.flags,
                            msg,
                        },
                    ));
                }
                Ok(None) => break,
                Err(e) => {
                    let e = format!("server {} could not write a frame: {e}", s.0);
                    self.violation(e);
                    return;
                }
            }
        }
        for (to, frame) in sends {
            self.report.frames_sent += 1;
            self.send(s, to, frame);
        }
        let node = &self.nodes[usize::from(s.0)];
        let mut deadline = node.replica.poll_timeout();
        if s == self.ring.forwarder() {
            deadline = min_opt(deadline, self.forwarder.poll_timeout());
        }
        if let Some(t) = deadline {
            self.net.arm_timer(s, t.max(now + 1));
        }
        let held = self.nodes.iter().map(|n| n.held.len()).sum();
        self.report.max_held_frames = self.report.max_held_frames.max(held);
    }

    /// Offer the held frames of `s` again, in order, while any goes through. A frame still
    /// held goes back to the end; frames of one flow keep their order (see `process`).
    fn retry_held(&mut self, s: ServerId) {
        loop {
            let n = self.nodes[usize::from(s.0)].held.len();
            let mut progress = false;
            for _ in 0..n {
                let Some(frame) = self.nodes[usize::from(s.0)].held.pop_front() else {
                    break;
                };
                progress |= self.process(s, frame);
            }
            if !progress {
                return;
            }
        }
    }

    /// One server handles one frame. False when the frame was held.
    fn process(&mut self, s: ServerId, frame: SimFrame) -> bool {
        let now = self.now();
        let node = &mut self.nodes[usize::from(s.0)];
        // A frame of a flow with an earlier packet held waits behind it (per-flow order).
        if let Some(pkt) = &frame.data {
            if node.held.iter().any(|h| {
                h.data
                    .as_ref()
                    .is_some_and(|d| d.flow == pkt.flow && d.id < pkt.id)
            }) {
                node.held.push_back(frame);
                return false;
            }
        }
        let view = MessageView::new_checked(&frame.msg).expect("checked on delivery");
        match node.replica.handle_message(now, &view) {
            Ok(Admit::Ready) => {}
            Ok(Admit::Hold { .. }) => {
                node.held.push_back(frame);
                return false;
            }
            Err(e) => {
                self.violation(format!("server {} rejected a message: {e}", s.0));
                return true;
            }
        }
        let mut out = vec![0; FRAME_ROOM];
        let budget = self.config.trailer_budget;
        let mut data = frame.data;
        let built = match (&mut node.head, &mut data) {
            (Some((mb, middlebox, worker)), Some(pkt)) => {
                let mut buf = pkt.bytes.clone();
                buf.resize(FRAME_ROOM.max(buf.len()), 0);
                let mut f = MbFrame::new(&mut buf, pkt.bytes.len()).expect("fits");
                let ctx = Ctx {
                    worker: 0,
                    now_ns: now,
                    direction: pkt.dir,
                };
                let (verdict, rec) =
                    process_packet(worker, *middlebox, &mut f, &ctx, &mut self.scratch);
                let len = f.len();
                let info = self.packets.get_mut(&pkt.id).expect("known packet");
                if rec.kind() != LogKind::Noop {
                    info.logs.push((mb.0, rec.kind(), rec.deps().collect()));
                }
                let built = node
                    .replica
                    .build_message(now, &view, Some(&rec), &mut out, budget);
                buf.truncate(len);
                pkt.bytes = buf;
                if verdict == ftc_chain::middlebox::Verdict::Drop {
                    info.dropped = true;
                    self.report.dropped_by_middlebox += 1;
                    data = None;
                }
                built
            }
            _ => node.replica.build_message(
                now,
                &view,
                None::<&ftc_stm::CommitRecord<'_>>,
                &mut out,
                budget,
            ),
        };
        let len = match built {
            Ok(len) => len,
            Err(e) => {
                self.violation(format!("server {} could not build a message: {e}", s.0));
                return true;
            }
        };
        out.truncate(len);
        let out_frame = SimFrame {
            data,
            flags: 0,
            msg: out,
        };
        if s == self.ring.buffer() {
            self.at_the_buffer(&view, out_frame);
        } else {
            self.report.frames_sent += 1;
            self.send(s, self.ring.next_server(s), out_frame);
        }
        true
    }

    /// The frame leaves server n−1's replica into the buffer.
    fn at_the_buffer(&mut self, incoming: &MessageView<'_>, frame: SimFrame) {
        let now = self.now();
        self.buffer.handle_incoming_cvs(incoming);
        let view = MessageView::new_checked(&frame.msg).expect("built by a replica");
        let packet = frame.data.as_ref().map(|pkt| {
            let info = self.packets.get_mut(&pkt.id).expect("known packet");
            info.at_buffer = true;
            self.at_buffer
                .entry(pkt.flow)
                .or_default()
                .push_back(pkt.id);
            Packet {
                flow: u64::from(pkt.flow),
                len: pkt.bytes.len(),
                handle: pkt.id,
            }
        });
        if self.config.broken_release {
            // The broken rule: out at once, commit vectors or not.
            if let Some(p) = &packet {
                self.release(p.handle, frame.data.clone());
            }
            let _ = self.buffer.handle_frame(now, &view, None);
        } else if self.buffer.handle_frame(now, &view, packet).is_err() {
            self.violation("the buffer refused a packet under a small load".into());
            return;
        }
        let mut pkts: HashMap<u64, Pkt> = frame.data.into_iter().map(|p| (p.id, p)).collect();
        while let Some(r) = self.buffer.poll_release(now) {
            let pkt = pkts
                .remove(&r.handle)
                .or_else(|| self.parked.remove(&r.handle));
            self.release(r.handle, pkt);
        }
        self.parked.extend(pkts);
        loop {
            let mut msg = vec![0; self.config.trailer_budget];
            match self.buffer.poll_return(&mut msg) {
                Ok(Some(len)) => {
                    msg.truncate(len);
                    self.report.frames_sent += 1;
                    self.send(
                        self.ring.buffer(),
                        self.ring.forwarder(),
                        SimFrame {
                            data: None,
                            flags: 0,
                            msg,
                        },
                    );
                }
                Ok(None) => break,
                Err(e) => {
                    self.violation(format!("the buffer could not write a return frame: {e}"));
                    return;
                }
            }
        }
    }
}

impl Sim<'_> {
    /// A packet leaves the chain: check output commit and per-flow order, echo requests back.
    fn release(&mut self, id: u64, pkt: Option<Pkt>) {
        let now = self.now();
        self.report.packets_released += 1;
        let Some(info) = self.packets.get_mut(&id) else {
            self.violation(format!("released unknown packet {id}"));
            return;
        };
        info.released = true;
        let flow = info.flow;
        let mut broken = Vec::new();
        for (mb, kind, deps) in &info.logs {
            for member in self.ring.group(MbIndex(*mb)).skip(1) {
                let store = self.nodes[usize::from(member.0)]
                    .replica
                    .store(MbIndex(*mb))
                    .expect("members keep stores");
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
            None => self.violation(format!("packet {id} released without reaching the buffer")),
        }
        if !self.config.faults.reorders() {
            if let Some(&last) = self.last_released.get(&flow) {
                if last > id {
                    self.violation(format!(
                        "per-flow order: packet {id} of flow {flow} left after packet {last}"
                    ));
                }
            }
        }
        self.last_released.insert(flow, id);
        // The server behind the chain answers each request; the reply comes back through it.
        if let Some(pkt) = pkt.filter(|p| p.dir == Direction::Outbound) {
            if let Some(bytes) = reply(&pkt.bytes) {
                let reply = Pkt {
                    id: 0,
                    flow,
                    dir: Direction::Inbound,
                    bytes,
                };
                self.net.schedule(now + 2_000, Event::Inject(reply));
            }
        }
    }

    /// After the run: everything released, nothing vanished, every replica equals its head.
    fn final_checks(&mut self, heads: &[Store]) {
        if !self.report.violations.is_empty() {
            return;
        }
        let mut found = Vec::new();
        for (id, info) in &self.packets {
            if info.at_buffer && !info.released {
                found.push(format!(
                    "packet {id} reached the buffer but was never released"
                ));
            } else if !info.at_buffer && !info.lost && !info.dropped {
                found.push(format!("packet {id} vanished inside the chain (lost by no fault, dropped by no middlebox)"));
            }
        }
        for mb in self.ring.mb_indices() {
            let head = &heads[usize::from(mb.0)];
            for member in self.ring.group(mb).skip(1) {
                let store = self.nodes[usize::from(member.0)]
                    .replica
                    .store(mb)
                    .expect("members keep stores");
                if store.vector() != head.vector() || store.to_map() != head.to_map() {
                    found.push(format!(
                        "store of m{} on server {} differs from its head",
                        mb.0, member.0
                    ));
                }
            }
        }
        for node in &self.nodes {
            self.report.retransmit_requests += node.replica.stats().requests_sent;
            self.report.logs_resent += node.replica.stats().logs_resent;
        }
        for v in found {
            self.violation(v);
        }
    }

    /// Put a frame on the wire from `from` to `to`: the network may lose, delay or duplicate it.
    /// A duplicated customer packet becomes a packet of its own (a new id with the same logs).
    fn send(&mut self, from: ServerId, to: ServerId, frame: SimFrame) {
        let delays = self.net.plan();
        if delays.is_empty() {
            if let Some(pkt) = &frame.data {
                self.packets.get_mut(&pkt.id).expect("known packet").lost = true;
                self.report.lost_in_network += 1;
            }
            return;
        }
        for (i, delay) in delays.into_iter().enumerate() {
            let mut copy = frame.clone();
            if let (true, Some(pkt)) = (i > 0, &mut copy.data) {
                let info = &self.packets[&pkt.id];
                let copy_info = PacketInfo {
                    flow: info.flow,
                    logs: info.logs.clone(),
                    ..PacketInfo::default()
                };
                pkt.id = self.register(copy_info);
            }
            let at = self.now() + delay;
            self.net.schedule(
                at,
                Event::Deliver {
                    from,
                    to,
                    frame: copy,
                },
            );
        }
    }

    /// Where things stand, for a violation's message.
    fn describe(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let st = n.replica.stats();
                format!(
                    "server {i}: held {}, retained {:?}, applied {}, dup {}, requests {}, resent {}",
                    n.held.len(),
                    n.replica.retained(),
                    st.applied,
                    st.duplicates,
                    st.requests_sent,
                    st.logs_resent
                )
            })
            .collect();
        format!(
            "{}; forwarder pending {}; buffer held {}",
            nodes.join("; "),
            self.forwarder.has_pending(),
            self.buffer.stats().held_packets
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

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A TCP request of `flow` from the inside network to the server behind the chain.
fn request(flow: u32, seq: u32) -> Vec<u8> {
    let client = [10, 0, (flow / 250) as u8, (flow % 250 + 1) as u8];
    let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(client, [198, 51, 100, 10], 64)
        .tcp(40_000 + (flow % 20_000) as u16, 80, seq, 65_535)
        .ack(1);
    let payload = [0x5a; 64];
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, &payload).expect("writing to a Vec");
    out
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
