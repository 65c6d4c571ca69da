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
//! they do when one thread runs the server). The other way, a lane that reads sockets of its
//! own reads none while `OUT_BATCHES` batches of its lanes' outputs wait for the node's
//! thread (whose sockets carry them out: the UDP data path, edges the lanes do not own), which
//! may be slower than the lanes; its inbox and timers go on. A lane never waits on the node's
//! thread, and only nudges other lanes whose inbox has room (a lane with messages waiting looks
//! again anyway).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Scope;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use ftc_chain::ring::{MbIndex, ServerId};
use ftc_node::lanes::{lane_of, lanes_for};
use ftc_node::links::XdpLinks;
use ftc_node::serve::Congestion;
use ftc_node::server::ExportParts;
use ftc_node::xdp;
use ftc_node::{Frame, Heads, Loss, Output, Packet};
use ftc_stm::Store;

use super::edges::{Edges, Port};
use super::lane::Lane;
use super::loss::RingLoss;
use super::node::{customer_packet, handled, hop_of, keep, tell_retain_full};
use super::poll::{readable, wait_for, wait_readable};
use super::tally::Tally;

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
    /// A recovery began: fence; frames of epochs before `epoch` are stale from now on.
    Fence {
        epoch: u32,
        done: Sender<()>,
    },
    Export {
        group: MbIndex,
        reply: Sender<Option<ExportParts>>,
    },
    /// The reroute: resume, in `epoch`.
    Resume {
        epoch: u32,
        done: Sender<()>,
    },
    Summary(Sender<String>),
    Tally(Sender<Tally>),
    Stop,
}

/// Messages a lane takes per batch at most.
const BATCH: usize = 64;

/// Messages a lane's inbox holds at most.
const INBOX: usize = 4096;

/// Batches of outputs the lanes hand the node's thread that it has not taken, at which lanes
/// stop reading their own sockets ([`LaneThread::reads`]).
const OUT_BATCHES: usize = 64;

/// How long the node waits for every lane to answer a recovery's request.
const ANSWER: Duration = Duration::from_secs(2);

/// A lane's share of the ring links' queues, which it reads and sends on itself, and the
/// failure injection on the frames that arrive there.
#[derive(Debug)]
pub struct OwnLinks {
    pub links: XdpLinks,
    pub loss: RingLoss,
}

/// The sockets a lane reads and sends on itself: its share of the ring links' queues, of the
/// edges' queues, or both.
#[derive(Debug, Default)]
pub struct OwnSockets {
    pub links: Option<OwnLinks>,
    pub edges: Option<Edges>,
}

/// A lane's inbox, seen from whoever fills it: messages go on the channel, and a byte on the
/// socket wakes the lane when it sleeps.
#[derive(Debug)]
struct Inbox {
    tx: Sender<ToLane>,
    waker: UnixDatagram,
    /// Set while the lane waits, or is about to.
    asleep: Arc<AtomicBool>,
}

impl Inbox {
    /// Send `msg`, waiting while the inbox is full; whether the lane is still there.
    fn send(&self, msg: ToLane) -> bool {
        let sent = self.tx.send(msg).is_ok();
        self.wake();
        sent
    }

    /// Send `msg` if the inbox has room; given back otherwise.
    fn try_send(&self, msg: ToLane) -> Result<(), ToLane> {
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.wake();
                Ok(())
            }
            Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) => Err(msg),
        }
    }

    /// Wake the lane if it sleeps: it sets `asleep` before it last looks at the channel, so
    /// either it sees the message or this sees the flag (both sides fence).
    fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.asleep.swap(false, Ordering::SeqCst) {
            // Non-blocking: when the socket is full, a wake-up is pending anyway.
            let _ = self.waker.send(&[1]);
        }
    }
}

/// A lane's end of its inbox.
struct Mailbox {
    rx: Receiver<ToLane>,
    waker: UnixDatagram,
    asleep: Arc<AtomicBool>,
}

impl Mailbox {
    /// A lane's inbox: the end that fills it, and the lane's.
    fn pair() -> io::Result<(Inbox, Mailbox)> {
        let (tx, rx) = crossbeam_channel::bounded(INBOX);
        let (waker_rx, waker_tx) = UnixDatagram::pair()?;
        waker_rx.set_nonblocking(true)?;
        waker_tx.set_nonblocking(true)?;
        let asleep = Arc::new(AtomicBool::new(false));
        let inbox = Inbox {
            tx,
            waker: waker_tx,
            asleep: Arc::clone(&asleep),
        };
        let mailbox = Mailbox {
            rx,
            waker: waker_rx,
            asleep,
        };
        Ok((inbox, mailbox))
    }

    /// Wait until a message is in, one of `sockets` is readable, or `timeout` passes (`None`:
    /// no limit); `polls` is the poll set's room, kept from one wait to the next.
    fn wait<'s>(
        &self,
        polls: &mut Vec<libc::pollfd>,
        sockets: impl Iterator<Item = BorrowedFd<'s>>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        self.asleep.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.rx.is_empty() {
            polls.clear();
            polls.push(readable(Some(self.waker.as_fd())));
            polls.extend(sockets.map(|fd| readable(Some(fd))));
            wait_readable(polls, timeout)?;
        }
        self.asleep.store(false, Ordering::SeqCst);
        while self.waker.recv(&mut [0]).is_ok() {}
        Ok(())
    }
}

/// The lanes of a node's server, seen from the node's thread.
#[derive(Debug)]
pub struct Lanes<'h> {
    inboxes: Vec<Arc<Inbox>>,
    outputs: Receiver<Vec<Output<u32>>>,
    /// Batches in `outputs`, not taken yet.
    backlog: Arc<AtomicUsize>,
    /// What is left of the last batch of outputs taken.
    ready: std::vec::IntoIter<Output<u32>>,
    /// Lanes congested now.
    congested: Arc<AtomicUsize>,
    heads: &'h Heads,
    /// The replica stores the lanes share (with `--observe`, the node records them).
    replicas: Vec<(MbIndex, Arc<Store>)>,
    /// The lane the next frame that belongs to no flow goes to.
    turn: usize,
    /// Why a lane stopped before it was told to, if one did (the node then stops).
    failed: Arc<OnceLock<String>>,
    /// When each lane last made progress (nanoseconds on the node's clock): [`Lanes::pulse`].
    pulses: Vec<Arc<AtomicU64>>,
}

impl<'h> Lanes<'h> {
    /// Start a thread in `scope` for each of `servers` (the lanes of one server: at least two,
    /// from [`ftc_node::lanes::lanes`] or [`ftc_node::lanes::join`], or of an FTMB master), each
    /// with its share of the node's sockets when `sockets` has one per lane; a lane with outputs
    /// for the node's thread writes a byte to `waker`. `start` is the node's clock.
    pub fn start<'scope, 'env>(
        scope: &'scope Scope<'scope, 'env>,
        servers: Vec<Box<dyn Lane + 'h>>,
        sockets: Option<Vec<OwnSockets>>,
        heads: &'h Heads,
        waker: &UnixDatagram,
        start: Instant,
    ) -> io::Result<Lanes<'h>>
    where
        'h: 'scope,
    {
        let replicas = servers.first().map(|s| s.replicas()).unwrap_or_default();
        let (inboxes, mailboxes): (Vec<_>, Vec<_>) = servers
            .iter()
            .map(|_| Mailbox::pair())
            .collect::<io::Result<Vec<_>>>()?
            .into_iter()
            .map(|(inbox, mailbox)| (Arc::new(inbox), mailbox))
            .unzip();
        let mut sockets = sockets
            .filter(|s| s.len() == servers.len())
            .map(Vec::into_iter);
        let (out, outputs) = crossbeam_channel::unbounded();
        // Made first: if a thread does not start, dropping it stops those that did.
        let lanes = Lanes {
            inboxes,
            outputs,
            backlog: Arc::new(AtomicUsize::new(0)),
            ready: Vec::new().into_iter(),
            congested: Arc::new(AtomicUsize::new(0)),
            heads,
            replicas,
            turn: 0,
            failed: Arc::new(OnceLock::new()),
            pulses: (0..servers.len())
                .map(|_| Arc::new(AtomicU64::new(start.elapsed().as_nanos() as u64)))
                .collect(),
        };
        for (i, (server, mailbox)) in servers.into_iter().zip(mailboxes).enumerate() {
            let lane = LaneThread {
                index: i,
                peers: lanes.inboxes.clone(),
                out: out.clone(),
                backlog: Arc::clone(&lanes.backlog),
                waker: waker.try_clone()?,
                congested: Arc::clone(&lanes.congested),
                start,
                own: sockets
                    .as_mut()
                    .and_then(Iterator::next)
                    .unwrap_or_default(),
                handoff: Vec::new(),
                handed: 0,
                spare: Vec::new(),
                told_retain_full: false,
                failed: Arc::clone(&lanes.failed),
                pulse: Arc::clone(&lanes.pulses[i]),
            };
            std::thread::Builder::new()
                .name(format!("lane {i}"))
                .spawn_scoped(scope, move || lane.run(server, &mailbox))?;
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
            self.inboxes[i].send(ToLane::Frame { from, frame });
        }
        self.inboxes[last].send(ToLane::Frame { from, frame });
    }

    /// A customer packet entering the chain, to the lane of its flow.
    pub fn handle_ingress(&mut self, packet: Packet<u32>) {
        let lane = lane_of(packet.flow, self.inboxes.len());
        self.inboxes[lane].send(ToLane::Ingress(packet));
    }

    /// The lanes' next output, if one is waiting.
    pub fn poll_output(&mut self) -> Option<Output<u32>> {
        loop {
            if let Some(out) = self.ready.next() {
                return Some(out);
            }
            self.ready = self.outputs.try_recv().ok()?.into_iter();
            self.backlog.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Why a lane stopped before it was told to (its server failed, it panicked, or it could
    /// not wait for its sockets): it handles nothing any more, so the node must stop too.
    pub fn error(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }

    /// The oldest of the lanes' last progress (nanoseconds on the node's clock), for the node's
    /// [`Pulse`](super::heart::Pulse). A lane asleep, and silent for `idle` nanoseconds or more,
    /// is nudged: one that is alive then makes progress again at once, and one that hangs (its
    /// thread caught somewhere) does not.
    pub fn pulse(&self, now: u64, idle: u64) -> u64 {
        let lanes = self.pulses.iter().zip(&self.inboxes);
        lanes
            .map(|(pulse, inbox)| {
                let at = pulse.load(Ordering::Acquire);
                if now.saturating_sub(at) >= idle && inbox.asleep.load(Ordering::Acquire) {
                    let _ = inbox.try_send(ToLane::Nudge);
                }
                at
            })
            .min()
            .unwrap_or(now)
    }

    /// Whether a lane is congested (the node then takes no customer frames).
    pub fn congested(&self) -> bool {
        self.congested.load(Ordering::Acquire) > 0
    }

    /// Every lane fences (a recovery began, of `epoch`); returns once each has.
    pub fn fence(&self, epoch: u32) {
        if self.ask_all(|done| ToLane::Fence { epoch, done }).len() < self.inboxes.len() {
            tracing::error!("a lane did not fence within {ANSWER:?}");
        }
    }

    /// Every lane resumes (the reroute, in `epoch`); returns once each has.
    pub fn resume(&self, epoch: u32) {
        if self.ask_all(|done| ToLane::Resume { epoch, done }).len() < self.inboxes.len() {
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

    /// What the lanes counted, summed (only those that answered within `ANSWER`).
    pub fn tally(&self) -> Tally {
        let lanes = self.ask_all(ToLane::Tally);
        lanes.into_iter().fold(Tally::default(), Tally::plus)
    }

    /// Sends every lane the request `ask` makes of a reply channel; their answers, in lane
    /// order (only those before the first lane that did not answer within [`ANSWER`]).
    fn ask_all<T>(&self, ask: impl Fn(Sender<T>) -> ToLane) -> Vec<T> {
        let replies: Vec<_> = self
            .inboxes
            .iter()
            .filter_map(|lane| {
                let (tx, rx) = crossbeam_channel::bounded(1);
                lane.send(ask(tx)).then_some(rx)
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
            lane.send(ToLane::Stop);
        }
    }
}

/// What a lane's thread holds besides its server and inbox.
struct LaneThread {
    /// This lane's index among the server's.
    index: usize,
    /// Every lane's inbox (its own included), for nudges and frames for other lanes.
    peers: Vec<Arc<Inbox>>,
    out: Sender<Vec<Output<u32>>>,
    /// [`Lanes::backlog`].
    backlog: Arc<AtomicUsize>,
    waker: UnixDatagram,
    congested: Arc<AtomicUsize>,
    start: Instant,
    /// The sockets it reads and sends on itself.
    own: OwnSockets,
    /// Frames read on its sockets for lanes whose inbox was full, in order of arrival.
    handoff: Vec<(usize, ToLane)>,
    /// Frames read on its sockets and handed to other lanes (a retransmission request to
    /// every lane counts once).
    handed: u64,
    /// Buffers of frames that left (customer frames', messages'), for the next customer frames
    /// that arrive on its edges and the next frames off its links.
    spare: Vec<Vec<u8>>,
    /// [`Lanes::error`].
    failed: Arc<OnceLock<String>>,
    /// When it last made progress ([`Lanes::pulse`]).
    pulse: Arc<AtomicU64>,
    /// Whether it said that its server lost a packet at the retain limit ([`tell_retain_full`]).
    told_retain_full: bool,
}

/// Tells the node's thread why a lane's thread ended, when it ends before it was told to stop
/// (a panic included): `why` is cleared on a stop.
struct Failing<'a> {
    failed: &'a OnceLock<String>,
    waker: Option<&'a UnixDatagram>,
    index: usize,
    why: Option<String>,
}

impl Drop for Failing<'_> {
    fn drop(&mut self) {
        let Some(why) = self.why.take() else {
            return;
        };
        tracing::error!("lane {}: {why}", self.index);
        let _ = self.failed.set(format!("lane {}: {why}", self.index));
        if let Some(waker) = self.waker {
            let _ = waker.send(&[1]);
        }
    }
}

impl LaneThread {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Batches of messages (and frames off its sockets) in, the server's outputs out, until
    /// stopped.
    fn run(mut self, mut server: Box<dyn Lane + '_>, mailbox: &Mailbox) {
        let congested = Arc::clone(&self.congested);
        let mut congestion = Congestion::new(&congested);
        let (failed, waker) = (Arc::clone(&self.failed), self.waker.try_clone());
        let mut failing = Failing {
            failed: &failed,
            waker: waker.as_ref().ok(),
            index: self.index,
            why: Some("its thread ended unexpectedly (a panic)".to_string()),
        };
        let mut stop = false;
        let mut polls = Vec::new();
        while !stop {
            let (links, edges) = (self.links(), self.own.edges.as_ref());
            // Frames the kernel did not take yet, or that wait for another lane's room: soon.
            // A congested chain takes no customer frames, and no lane says when it is not.
            let congested = self.congested.load(Ordering::Acquire) > 0;
            // Nothing wakes a lane when the node's thread takes outputs: it looks again soon.
            let soon = !self.reads()
                || links.is_some_and(XdpLinks::unsent)
                || edges.is_some_and(|e| e.unsent() || (congested && e.inputs().next().is_some()));
            let timeout = wait_for(self.now(), server.poll_timeout(), soon);
            // Frames for a full lane, or outputs for the node's thread, wait: the sockets' rings
            // hold the rest meanwhile.
            let reading = self.reads();
            let links = links
                .filter(|_| reading)
                .into_iter()
                .flat_map(XdpLinks::fds);
            let edges = edges.filter(|_| reading && !congested);
            let edges = edges
                .into_iter()
                .flat_map(|e| e.inputs().flat_map(Port::fds));
            if let Err(e) = mailbox.wait(&mut polls, links.chain(edges), timeout) {
                failing.why = Some(format!("waiting: {e}"));
                break;
            }
            let t = self.now();
            self.pulse.store(t, Ordering::Release);
            if server.poll_timeout().is_some_and(|at| at <= t) {
                server.handle_timeout(t);
            }
            for msg in mailbox.rx.try_iter().take(BATCH) {
                stop |= self.handle(&mut *server, t, msg);
            }
            self.hand_off();
            // Caught up when its inbox is empty, no socket had a whole batch waiting (each gives
            // a batch at most) and no frame waits for another lane: else frames that reached
            // the server may still be unread.
            let read = self.read_links(&mut *server, t) + self.read_edges(&mut *server, t);
            let caught_up = mailbox.rx.is_empty() && read < xdp::BATCH;
            server.end_batch(t, caught_up && self.handoff.is_empty());
            let wake = server.take_wakeups();
            for lane in wake.iter().filter_map(|i| self.peers.get(i)) {
                let _ = lane.try_send(ToLane::Nudge);
            }
            self.carry_out(&mut *server);
            congestion.set(server.congested());
            if let Some(e) = server.error() {
                failing.why = Some(format!("its server failed: {e}"));
                break;
            }
        }
        if stop {
            failing.why = None;
        }
    }

    /// Its share of the ring links, if it has one.
    fn links(&self) -> Option<&XdpLinks> {
        self.own.links.as_ref().map(|own| &own.links)
    }

    /// One message from the inbox; whether the lane stops.
    fn handle(&mut self, server: &mut dyn Lane, t: u64, msg: ToLane) -> bool {
        let links = self.own.links.as_mut().map(|own| &mut own.links);
        match msg {
            ToLane::Frame { from, frame } => server.handle_frame(t, from, frame),
            ToLane::Ingress(packet) => server.handle_ingress(t, packet),
            ToLane::Nudge => {}
            ToLane::Fence { epoch, done } => {
                if let Some(links) = links {
                    links.set_epoch(epoch);
                }
                server.fence();
                let _ = done.send(());
            }
            ToLane::Export { group, reply } => {
                let _ = reply.send(server.export_parts(group));
            }
            ToLane::Resume { epoch, done } => {
                if let Some(links) = links {
                    links.set_epoch(epoch);
                }
                server.resume(t);
                let _ = done.send(());
            }
            ToLane::Summary(reply) => {
                let mut summary = server.summary();
                if let Some(links) = links {
                    summary += &format!(
                        ", links {:?}, the kernel's {:?}",
                        links.stats(),
                        links.kernel_stats()
                    );
                }
                if let Some(edges) = &self.own.edges {
                    summary += &format!(", edges {:?}", edges.stats());
                }
                if self.own.links.is_some() || self.own.edges.is_some() {
                    summary += &format!(", handed to other lanes {}", self.handed);
                }
                let _ = reply.send(summary);
            }
            ToLane::Tally(reply) => {
                let tally = server.tally();
                let _ = reply.send(tally.with_sockets(self.links(), self.own.edges.as_ref()));
            }
            ToLane::Stop => return true,
        }
        false
    }

    /// The frames waiting for other lanes, to those with room, in order (a lane's later frames
    /// wait behind one that did not fit).
    fn hand_off(&mut self) {
        let mut full = 0u64;
        for (lane, msg) in std::mem::take(&mut self.handoff) {
            if full >> lane & 1 == 0 {
                match self.peers[lane].try_send(msg) {
                    Ok(()) => continue,
                    Err(msg) => {
                        full |= 1 << lane;
                        self.handoff.push((lane, msg));
                    }
                }
            } else {
                self.handoff.push((lane, msg));
            }
        }
    }

    /// A batch of frames off its links (unless frames still wait for other lanes): its own to
    /// the server, the rest to the lanes they are for. How many arrived.
    fn read_links(&mut self, server: &mut dyn Lane, t: u64) -> usize {
        let reads = self.reads();
        let Some(OwnLinks { links, loss }) = self.own.links.as_mut().filter(|_| reads) else {
            return 0;
        };
        let (me, lanes, handoff) = (self.index, self.peers.len(), &mut self.handoff);
        let (handed, spare) = (&mut self.handed, &mut self.spare);
        let mut deliver = |lane: usize, from, frame| {
            if lane == me {
                server.handle_frame(t, from, frame);
            } else {
                handoff.push((lane, ToLane::Frame { from, frame }));
            }
        };
        let received = links.recv_batch(spare, |from, r| {
            if loss.drops() {
                return;
            }
            let frame = handled(r.frame, false);
            let to = lanes_for(&frame, me, lanes);
            *handed += u64::from(to != (me..me + 1));
            let last = to.end - 1;
            for lane in to.start..last {
                deliver(lane, from, frame.clone());
            }
            deliver(last, from, frame);
        });
        let read = received.unwrap_or_else(|e| {
            tracing::warn!("lane {me}: ring links: {e}");
            0
        });
        self.hand_off();
        read
    }

    /// A batch of customer frames off its edges (unless frames still wait for other lanes, or
    /// the chain is congested): those of its flows to the server, the rest to their lanes. How
    /// many arrived.
    fn read_edges(&mut self, server: &mut dyn Lane, t: u64) -> usize {
        let congested = self.congested.load(Ordering::Acquire) > 0;
        let reads = self.reads();
        let Some(edges) = self.own.edges.as_mut().filter(|_| reads && !congested) else {
            return 0;
        };
        let (me, lanes) = (self.index, self.peers.len());
        let (handoff, spare, handed) = (&mut self.handoff, &mut self.spare, &mut self.handed);
        let mut read = 0;
        for (port, dir) in edges.inputs_mut() {
            let received = port.recv_batch(|bytes| {
                let packet = customer_packet(bytes, dir, spare, false);
                match lane_of(packet.flow, lanes) {
                    lane if lane == me => server.handle_ingress(t, packet),
                    lane => {
                        *handed += 1;
                        handoff.push((lane, ToLane::Ingress(packet)));
                    }
                }
            });
            read += received.unwrap_or_else(|e| {
                tracing::warn!("lane {me}: edge-in {}: {e}", port.iface());
                0
            });
        }
        self.hand_off();
        read
    }

    /// Whether it reads its own sockets now: not while frames it read wait for other lanes,
    /// nor while [`OUT_BATCHES`] batches of outputs wait for the node's thread.
    fn reads(&self) -> bool {
        self.handoff.is_empty() && self.backlog.load(Ordering::Acquire) < OUT_BATCHES
    }

    /// The server's outputs: frames to other servers onto its own links, and released ones
    /// onto its own edges, when it has them; what the node's thread carries out to it (woken
    /// for them), and nothing else (the node only records the rest, and then the lane has no
    /// sockets).
    fn carry_out(&mut self, server: &mut dyn Lane) {
        let mut outputs = Vec::new();
        let own = self.own.links.is_some() || self.own.edges.is_some();
        while let Some(out) = server.poll_output() {
            match out {
                Output::Send { to, frame } if self.own.links.is_some() => {
                    let links = &mut self.own.links.as_mut().expect("checked").links;
                    if let Err(e) = links.send(to, hop_of(to), &frame) {
                        tracing::debug!("lane {}: sending to {to}: {e}", self.index);
                    }
                    if let Some(packet) = frame.packet {
                        keep(&mut self.spare, packet.bytes);
                    }
                    if let Some(msg) = server.recycle(frame.msg) {
                        keep(&mut self.spare, msg);
                    }
                }
                Output::Release { packet, .. }
                    if self.own.edges.as_ref().is_some_and(|e| e.sends(packet.dir)) =>
                {
                    let edges = self.own.edges.as_mut().expect("checked");
                    edges.send(packet.dir, packet.flow, &packet.bytes);
                    keep(&mut self.spare, packet.bytes);
                }
                out @ (Output::Send { .. } | Output::Release { .. }) => outputs.push(out),
                Output::Lost {
                    why: Loss::RetainFull,
                    ..
                } if own => {
                    tell_retain_full(
                        format_args!("lane {}", self.index),
                        &mut self.told_retain_full,
                    );
                }
                _ if own => {}
                out => outputs.push(out),
            }
        }
        if self.own.links.is_some() {
            for buffer in server.take_surplus().into_iter().flatten() {
                keep(&mut self.spare, buffer);
            }
        }
        if let Some(Err(e)) = self.own.links.as_mut().map(|own| own.links.flush()) {
            tracing::debug!("lane {}: ring links: {e}", self.index);
        }
        if let Some(edges) = self.own.edges.as_mut() {
            edges.flush();
        }
        if !outputs.is_empty() {
            self.backlog.fetch_add(1, Ordering::AcqRel);
            let _ = self.out.send(outputs);
            // Non-blocking: when the socket is full, a wake-up is pending anyway.
            let _ = self.waker.send(&[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lane's thread over `lanes` inboxes (its own first), and their lanes' ends.
    fn lane_of(lanes: usize) -> (LaneThread, Vec<Mailbox>) {
        let (inboxes, mailboxes): (Vec<_>, Vec<_>) = (0..lanes)
            .map(|_| Mailbox::pair().unwrap())
            .map(|(inbox, mailbox)| (Arc::new(inbox), mailbox))
            .unzip();
        let (waker, _) = UnixDatagram::pair().unwrap();
        let lane = LaneThread {
            index: 0,
            peers: inboxes,
            out: crossbeam_channel::unbounded().0,
            backlog: Arc::new(AtomicUsize::new(0)),
            waker,
            congested: Arc::new(AtomicUsize::new(0)),
            start: Instant::now(),
            own: OwnSockets::default(),
            handoff: Vec::new(),
            handed: 0,
            spare: Vec::new(),
            failed: Arc::new(OnceLock::new()),
            pulse: Arc::new(AtomicU64::new(0)),
            told_retain_full: false,
        };
        (lane, mailboxes)
    }

    /// A lane that fails (its server's error) at its first frame, or panics there; or that
    /// hangs there: says so on `hangs.0`, and waits until `hangs.1` says go on (or is dropped),
    /// then takes frames as ever.
    #[derive(Default)]
    struct Failing {
        panics: bool,
        failed: bool,
        hangs: Option<(Sender<()>, Receiver<()>)>,
    }

    impl Lane for Failing {
        fn poll_timeout(&self) -> Option<u64> {
            None
        }
        fn handle_timeout(&mut self, _: u64) {}
        fn handle_frame(&mut self, _: u64, _: ServerId, _: Frame<u32>) {
            if let Some((hanging, go_on)) = self.hangs.take() {
                let _ = hanging.send(());
                let _ = go_on.recv();
                return;
            }
            assert!(!self.panics, "a bug in a lane");
            self.failed = true;
        }
        fn handle_ingress(&mut self, _: u64, _: Packet<u32>) {}
        fn end_batch(&mut self, _: u64, _: bool) {}
        fn poll_output(&mut self) -> Option<Output<u32>> {
            None
        }
        fn congested(&self) -> bool {
            false
        }
        fn error(&self) -> Option<String> {
            self.failed.then(|| "a frame it could not take".to_string())
        }
        fn summary(&mut self) -> String {
            String::new()
        }
    }

    /// A lane that gives back one output per frame.
    #[derive(Default)]
    struct Echo(Vec<Output<u32>>);

    impl Lane for Echo {
        fn poll_timeout(&self) -> Option<u64> {
            None
        }
        fn handle_timeout(&mut self, _: u64) {}
        fn handle_frame(&mut self, _: u64, to: ServerId, frame: Frame<u32>) {
            self.0.push(Output::Send { to, frame });
        }
        fn handle_ingress(&mut self, _: u64, _: Packet<u32>) {}
        fn end_batch(&mut self, _: u64, _: bool) {}
        fn poll_output(&mut self) -> Option<Output<u32>> {
            self.0.pop()
        }
        fn congested(&self) -> bool {
            false
        }
        fn error(&self) -> Option<String> {
            None
        }
        fn summary(&mut self) -> String {
            String::new()
        }
    }

    /// A lane reads its own sockets only while fewer than [`OUT_BATCHES`] batches of its
    /// outputs wait for the node's thread (which carries them out on its own sockets, and may be
    /// slower than the lanes): past that, what arrives waits in the sockets' rings instead of
    /// piling up in memory. Each batch the node's thread takes counts down.
    #[test]
    fn a_lane_reads_no_socket_while_its_outputs_wait_for_the_node_thread() {
        let (mut lane, _mailboxes) = lane_of(1);
        let (out, outputs) = crossbeam_channel::unbounded();
        lane.out = out;
        let mut server = Echo::default();
        let frame = || Frame {
            packet: None,
            flags: 0,
            msg: Vec::new(),
        };
        for i in 0..OUT_BATCHES {
            assert!(lane.reads(), "batch {i}");
            server.handle_frame(0, ServerId(1), frame());
            lane.carry_out(&mut server);
        }
        assert!(!lane.reads());
        // The node's thread takes one batch (as Lanes::poll_output does): the lane reads again.
        assert_eq!(outputs.try_recv().unwrap().len(), 1);
        lane.backlog.fetch_sub(1, Ordering::AcqRel);
        assert!(lane.reads());
    }

    /// The node's thread counts down every batch it takes: once it took all, none is counted.
    #[test]
    fn the_node_thread_counts_down_the_batches_it_takes() {
        let heads = one_monitor();
        let (node, waker) = UnixDatagram::pair().unwrap();
        node.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::thread::scope(|s| {
            let lanes: Vec<Box<dyn Lane>> =
                vec![Box::new(Echo::default()), Box::new(Echo::default())];
            let mut lanes = Lanes::start(s, lanes, None, &heads, &waker, Instant::now()).unwrap();
            for lane in 0..2 {
                lanes.inboxes[lane].send(ToLane::Frame {
                    from: ServerId(0),
                    frame: Frame {
                        packet: None,
                        flags: 0,
                        msg: Vec::new(),
                    },
                });
            }
            let mut taken = 0;
            while taken < 2 {
                node.recv(&mut [0]).unwrap();
                taken += std::iter::from_fn(|| lanes.poll_output()).count();
            }
            assert_eq!(lanes.backlog.load(Ordering::Acquire), 0);
        });
    }

    /// The stores of a chain of one monitor, f = 1, one lane each.
    fn one_monitor() -> Heads {
        let spec = ftc_chain::spec::ChainSpec::from_toml_str(
            "[chain]\nname = \"t\"\nf = 1\n\n[[middlebox]]\nkind = \"monitor\"\n",
            "test",
        )
        .unwrap();
        Heads::new(&spec, |_| 1).unwrap()
    }

    /// A lane whose server failed, or whose thread panicked, handles nothing any more: the
    /// lanes say why and wake the node's thread, which then stops (and is replaced) instead of
    /// beating for a server that drops everything. Lanes told to stop report nothing.
    #[test]
    fn a_lane_that_fails_or_panics_is_reported() {
        let heads = one_monitor();
        let (node, waker) = UnixDatagram::pair().unwrap();
        node.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let frame = || Frame {
            packet: None,
            flags: 0,
            msg: Vec::new(),
        };
        for panics in [false, true] {
            node.set_nonblocking(true).unwrap();
            while node.recv(&mut [0]).is_ok() {}
            node.set_nonblocking(false).unwrap();
            let mut reported = None;
            // The scope raises a lane's panic again once every thread ended, as the node's does
            // (the process then exits).
            let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                std::thread::scope(|s| {
                    let lanes: Vec<Box<dyn Lane>> = vec![
                        Box::new(Failing::default()),
                        Box::new(Failing {
                            panics,
                            ..Failing::default()
                        }),
                    ];
                    let mut lanes =
                        Lanes::start(s, lanes, None, &heads, &waker, Instant::now()).unwrap();
                    assert_eq!(lanes.error(), None);
                    lanes.inboxes[1].send(ToLane::Frame {
                        from: ServerId(0),
                        frame: frame(),
                    });
                    node.recv(&mut [0]).unwrap();
                    reported = lanes.error().map(String::from);
                    lanes.handle_frame(ServerId(0), frame());
                })
            }));
            assert_eq!(ended.is_err(), panics);
            let why = if panics {
                "lane 1: its thread ended unexpectedly (a panic)"
            } else {
                "lane 1: its server failed: a frame it could not take"
            };
            assert_eq!(reported.as_deref(), Some(why));
        }
        // Lanes told to stop report nothing (their threads all ended with the scope).
        let failed = std::thread::scope(|s| {
            let lanes: Vec<Box<dyn Lane>> = (0..2)
                .map(|_| Box::new(Failing::default()) as Box<dyn Lane>)
                .collect();
            let lanes = Lanes::start(s, lanes, None, &heads, &waker, Instant::now()).unwrap();
            Arc::clone(&lanes.failed)
        });
        assert_eq!(failed.get(), None);
    }

    /// The lanes' pulse is the oldest lane's last progress: idle lanes, nudged, make progress
    /// again, and a lane caught in a frame (a middlebox in a loop, a deadlock) holds the pulse
    /// back until it goes on.
    #[test]
    fn a_hanging_lane_holds_the_pulse_back_and_idle_ones_do_not() {
        let heads = one_monitor();
        let (_node, waker) = UnixDatagram::pair().unwrap();
        let start = Instant::now();
        let now = || start.elapsed().as_nanos() as u64;
        let ms = |n: u64| n * 1_000_000;
        // Nudged at every look (silent for 1 ns or more), the lanes' pulse catches up with the
        // clock when every lane is alive.
        let catches_up = |lanes: &Lanes, since: u64| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while lanes.pulse(now(), 1) < since {
                assert!(Instant::now() < deadline, "an idle lane made no progress");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        std::thread::scope(|s| {
            // Dropped after the lanes (told to stop), even on a failed assertion: the hanging
            // lane goes on then, and the scope ends.
            let (go_on, waits) = crossbeam_channel::bounded(0);
            let (says, hanging) = crossbeam_channel::bounded(1);
            let lanes: Vec<Box<dyn Lane>> = vec![
                Box::new(Failing::default()),
                Box::new(Failing {
                    hangs: Some((says, waits)),
                    ..Failing::default()
                }),
            ];
            let lanes = Lanes::start(s, lanes, None, &heads, &waker, start).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            catches_up(&lanes, ms(20));
            lanes.inboxes[1].send(tagged(1));
            hanging.recv().unwrap();
            let hung = now();
            std::thread::sleep(Duration::from_millis(50));
            for _ in 0..10 {
                assert!(lanes.pulse(now(), 1) <= hung);
                std::thread::sleep(Duration::from_millis(5));
            }
            go_on.send(()).unwrap();
            catches_up(&lanes, hung + ms(50));
        });
    }

    /// A frame told apart by its sender.
    fn tagged(tag: u16) -> ToLane {
        ToLane::Frame {
            from: ServerId(tag),
            frame: Frame {
                packet: None,
                flags: 0,
                msg: Vec::new(),
            },
        }
    }

    fn tags(mailbox: &Mailbox) -> Vec<u16> {
        let tag = |msg| match msg {
            ToLane::Frame { from, .. } => Some(from.0),
            _ => None,
        };
        mailbox.rx.try_iter().filter_map(tag).collect()
    }

    /// Frames for a lane whose inbox is full wait in the lane that read them, in order, and a
    /// later frame for that lane never overtakes them; other lanes' frames go on meanwhile.
    #[test]
    fn frames_for_a_full_lane_wait_in_order_and_others_pass() {
        let (mut lane, mailboxes) = lane_of(3);
        for _ in 0..INBOX {
            lane.peers[1].try_send(ToLane::Nudge).unwrap();
        }
        lane.handoff = vec![(1, tagged(10)), (2, tagged(20)), (1, tagged(11))];
        lane.hand_off();
        assert_eq!(tags(&mailboxes[2]), [20]);
        assert_eq!(lane.handoff.len(), 2);
        // Room for one: the first waiting frame takes it, the second still waits behind it.
        mailboxes[1].rx.recv().unwrap();
        lane.handoff.push((2, tagged(21)));
        lane.hand_off();
        assert_eq!(tags(&mailboxes[2]), [21]);
        assert_eq!(lane.handoff.len(), 1);
        // Behind the nudges that filled it, lane 1 has the first frame; the second comes next.
        let nudges = mailboxes[1].rx.try_iter().take(INBOX - 1);
        assert!(nudges.into_iter().all(|m| matches!(m, ToLane::Nudge)));
        assert_eq!(tags(&mailboxes[1]), [10]);
        lane.hand_off();
        assert_eq!(tags(&mailboxes[1]), [11]);
        assert!(lane.handoff.is_empty());
    }

    /// A message put in while the lane sleeps wakes it; one put in before it looks is seen
    /// without sleeping.
    #[test]
    fn a_message_wakes_a_sleeping_lane() {
        let (inbox, mailbox) = Mailbox::pair().unwrap();
        // A wait of up to 5 s that ends well before.
        let wakes = |why: &str| {
            let t = Instant::now();
            let timeout = Some(Duration::from_secs(5));
            mailbox
                .wait(&mut Vec::new(), std::iter::empty(), timeout)
                .unwrap();
            assert!(t.elapsed() < Duration::from_secs(4), "{why}");
        };
        assert!(inbox.send(ToLane::Nudge));
        wakes("it waited with a message in");
        mailbox.rx.try_recv().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                inbox.send(ToLane::Nudge);
            });
            wakes("the message did not wake it");
        });
        assert!(matches!(mailbox.rx.try_recv(), Ok(ToLane::Nudge)));
    }
}
