//! A node's server as several lanes (worker threads: the `threads` of its middlebox, DESIGN.md
//! §3), each a [`Lane`] on a thread of its own: a [`ftc_node::Server`] of [`ftc_node::lanes`]
//! over the server's shared stores, or a lane of an FTMB master
//! ([`ftc_node::ftmb::Station::master`] over one worker of its store, the lanes numbering PAL
//! messages from one counter). The node's thread keeps the sockets: it hands each lane the
//! customer frames of the flows hashed to it, a retransmission request to every lane, other
//! frames to each in turn, and carries out what the lanes give back (a lane wakes it when it
//! has outputs). A recovery's fence, export and resume go to every lane, and the node waits for
//! each to answer (FTMB's lanes recover nothing).
//!
//! Memory stays bounded: a lane's inbox holds 4,096 messages at most, and the node's thread
//! waits when the lane a frame is for is that far behind (the sockets' rings fill meanwhile, as
//! they do when one thread runs the server). A lane never waits on the node's thread, and only
//! nudges other lanes whose inbox has room (a lane with messages waiting looks again anyway).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Scope;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ftc_chain::ring::{MbIndex, ServerId};
use ftc_node::lanes::{lane_of, lanes_for};
use ftc_node::serve::{count_congested, recv_until};
use ftc_node::server::ExportParts;
use ftc_node::{Frame, Heads, Output, Packet};

use super::lane::Lane;
use ftc_stm::Store;

/// What reaches a lane.
#[derive(Debug)]
enum ToLane {
    Frame {
        from: ServerId,
        frame: Frame<u32>,
    },
    Ingress(Packet<u32>),
    /// Another lane published news (commit vectors, applied logs): look at held frames and the
    /// buffer again.
    Nudge,
    Fence(Sender<()>),
    Export {
        group: MbIndex,
        reply: Sender<Option<ExportParts>>,
    },
    Resume(Sender<()>),
    Summary(Sender<String>),
    Stop,
}

/// Messages a lane takes per batch at most.
const BATCH: usize = 64;

/// Messages a lane's inbox holds at most.
const INBOX: usize = 4096;

/// How long the node waits for every lane to answer a recovery's request.
const ANSWER: Duration = Duration::from_secs(2);

/// The lanes of a node's server, seen from the node's thread.
#[derive(Debug)]
pub struct Lanes<'h> {
    inboxes: Vec<Sender<ToLane>>,
    outputs: Receiver<Vec<Output<u32>>>,
    /// What is left of the last batch of outputs taken.
    ready: std::vec::IntoIter<Output<u32>>,
    /// Lanes congested now.
    congested: Arc<AtomicUsize>,
    heads: &'h Heads,
    /// The replica stores the lanes share (with `--observe`, the node records them).
    replicas: Vec<(MbIndex, Arc<Store>)>,
    /// The lane the next frame that belongs to no flow goes to.
    turn: usize,
}

impl<'h> Lanes<'h> {
    /// Start a thread in `scope` for each of `servers` (the lanes of one server: at least two,
    /// from [`ftc_node::lanes::lanes`] or [`ftc_node::lanes::join`], or of an FTMB master); a
    /// lane with outputs writes a byte to `waker`. `start` is the node's clock.
    pub fn start<'scope, 'env>(
        scope: &'scope Scope<'scope, 'env>,
        servers: Vec<Box<dyn Lane + 'h>>,
        heads: &'h Heads,
        waker: &UnixDatagram,
        start: Instant,
    ) -> io::Result<Lanes<'h>>
    where
        'h: 'scope,
    {
        let replicas = servers.first().map(|s| s.replicas()).unwrap_or_default();
        let (inboxes, receivers): (Vec<_>, Vec<_>) = servers
            .iter()
            .map(|_| crossbeam_channel::bounded(INBOX))
            .unzip();
        let (out, outputs) = crossbeam_channel::unbounded();
        // Made first: if a thread does not start, dropping it stops those that did.
        let lanes = Lanes {
            inboxes,
            outputs,
            ready: Vec::new().into_iter(),
            congested: Arc::new(AtomicUsize::new(0)),
            heads,
            replicas,
            turn: 0,
        };
        for (i, (server, rx)) in servers.into_iter().zip(receivers).enumerate() {
            let lane = LaneThread {
                peers: lanes.inboxes.clone(),
                out: out.clone(),
                waker: waker.try_clone()?,
                congested: Arc::clone(&lanes.congested),
                start,
            };
            std::thread::Builder::new()
                .name(format!("lane {i}"))
                .spawn_scoped(scope, move || lane.run(server, &rx))?;
        }
        Ok(lanes)
    }

    /// A frame from server `from`, to the lanes it is for ([`lanes_for`]).
    pub fn handle_frame(&mut self, from: ServerId, frame: Frame<u32>) {
        self.turn = self.turn.wrapping_add(1);
        let lanes = lanes_for(&frame, self.turn, self.inboxes.len());
        let last = lanes.end - 1;
        for i in lanes.start..last {
            let frame = frame.clone();
            let _ = self.inboxes[i].send(ToLane::Frame { from, frame });
        }
        let _ = self.inboxes[last].send(ToLane::Frame { from, frame });
    }

    /// A customer packet entering the chain, to the lane of its flow.
    pub fn handle_ingress(&mut self, packet: Packet<u32>) {
        let lane = lane_of(packet.flow, self.inboxes.len());
        let _ = self.inboxes[lane].send(ToLane::Ingress(packet));
    }

    /// The lanes' next output, if one is waiting.
    pub fn poll_output(&mut self) -> Option<Output<u32>> {
        loop {
            if let Some(out) = self.ready.next() {
                return Some(out);
            }
            self.ready = self.outputs.try_recv().ok()?.into_iter();
        }
    }

    /// Whether a lane is congested (the node then takes no customer frames).
    pub fn congested(&self) -> bool {
        self.congested.load(Ordering::Acquire) > 0
    }

    /// Every lane fences (a recovery began); returns once each has.
    pub fn fence(&self) {
        if self.ask_all(ToLane::Fence).len() < self.inboxes.len() {
            tracing::error!("a lane did not fence within {ANSWER:?}");
        }
    }

    /// Every lane resumes (the reroute); returns once each has.
    pub fn resume(&self) {
        if self.ask_all(ToLane::Resume).len() < self.inboxes.len() {
            tracing::error!("a lane did not resume within {ANSWER:?}");
        }
    }

    /// The encoded state of `group`: the shared store, and the logs every lane retains (none
    /// unless every lane answered: the orchestrator then fetches the group elsewhere).
    pub fn export_group_bytes(&self, group: MbIndex) -> Option<Vec<u8>> {
        let answers = self.ask_all(|reply| ToLane::Export { group, reply });
        if answers.len() < self.inboxes.len() {
            tracing::error!(
                "a lane did not answer an export of m{} within {ANSWER:?}",
                group.0
            );
            return None;
        }
        let mut lanes = answers.into_iter();
        let mut parts = lanes.next()??;
        for lane in lanes {
            parts.retained.extend(lane?.retained);
        }
        parts.encode(group, self.heads.stores.get(usize::from(group.0)))
    }

    /// The replica stores the lanes share.
    pub fn replicas(&self) -> &[(MbIndex, Arc<Store>)] {
        &self.replicas
    }

    /// What each lane counted.
    pub fn summary(&self) -> String {
        let lanes = self.ask_all(ToLane::Summary);
        lanes
            .iter()
            .enumerate()
            .map(|(i, s)| format!("lane {i}: {s}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Sends every lane the request `ask` makes of a reply channel; their answers, in lane
    /// order (only those before the first lane that did not answer within [`ANSWER`]).
    fn ask_all<T>(&self, ask: impl Fn(Sender<T>) -> ToLane) -> Vec<T> {
        let replies: Vec<_> = self
            .inboxes
            .iter()
            .filter_map(|lane| {
                let (tx, rx) = crossbeam_channel::bounded(1);
                lane.send(ask(tx)).ok().map(|_| rx)
            })
            .collect();
        let deadline = Instant::now() + ANSWER;
        replies
            .iter()
            .map_while(|rx| rx.recv_deadline(deadline).ok())
            .collect()
    }
}

impl Drop for Lanes<'_> {
    fn drop(&mut self) {
        for lane in &self.inboxes {
            let _ = lane.send(ToLane::Stop);
        }
    }
}

/// What a lane's thread holds besides its server and inbox.
struct LaneThread {
    /// Every lane's inbox (its own included), for nudges.
    peers: Vec<Sender<ToLane>>,
    out: Sender<Vec<Output<u32>>>,
    waker: UnixDatagram,
    congested: Arc<AtomicUsize>,
    start: Instant,
}

impl LaneThread {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Batches of messages in, the server's outputs out, until stopped.
    fn run(self, mut server: Box<dyn Lane + '_>, rx: &Receiver<ToLane>) {
        let mut was_congested = false;
        let mut stop = false;
        while !stop {
            let Ok(first) = recv_until(rx, server.poll_timeout(), || self.now()) else {
                break;
            };
            let t = self.now();
            if server.poll_timeout().is_some_and(|at| at <= t) {
                server.handle_timeout(t);
            }
            let more = std::iter::from_fn(|| rx.try_recv().ok()).take(BATCH);
            for msg in first.into_iter().chain(more) {
                match msg {
                    ToLane::Frame { from, frame } => server.handle_frame(t, from, frame),
                    ToLane::Ingress(packet) => server.handle_ingress(t, packet),
                    ToLane::Nudge => {}
                    ToLane::Fence(done) => {
                        server.fence();
                        let _ = done.send(());
                    }
                    ToLane::Export { group, reply } => {
                        let _ = reply.send(server.export_parts(group));
                    }
                    ToLane::Resume(done) => {
                        server.resume(t);
                        let _ = done.send(());
                    }
                    ToLane::Summary(reply) => {
                        let _ = reply.send(server.summary());
                    }
                    ToLane::Stop => stop = true,
                }
            }
            server.end_batch(t, rx.is_empty());
            let wake = server.take_wakeups();
            for (_, lane) in self
                .peers
                .iter()
                .enumerate()
                .filter(|(i, _)| wake >> i & 1 == 1)
            {
                let _ = lane.try_send(ToLane::Nudge);
            }
            let outputs: Vec<_> = std::iter::from_fn(|| server.poll_output()).collect();
            if !outputs.is_empty() {
                let _ = self.out.send(outputs);
                // Non-blocking: when the socket is full, a wake-up is pending anyway.
                let _ = self.waker.send(&[1]);
            }
            count_congested(&self.congested, &mut was_congested, server.congested());
        }
        count_congested(&self.congested, &mut was_congested, false);
    }
}
