//! One server's thread over the in-memory transport: batches of messages in (customer packets,
//! frames, a recovery's control), the server's outputs out, timers, heartbeats. [`crate::runtime`]
//! runs a chain of these; the orchestrator's embedded launcher starts and replaces them.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ftc_chain::middleboxes::packet::{parse, FlowKey, Parsed};
use ftc_chain::ring::{MbIndex, ServerId};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::commit_check::CommitCheck;
use crate::lanes::lanes_for;
use crate::prefetch;
use crate::server::port_of;
use crate::server::ExportParts;
use crate::{Frame, Loss, Output, Packet, Server};

/// What reaches a server thread.
#[derive(Debug)]
pub enum Msg {
    /// A customer packet (server 0).
    Ingress(Packet<u64>),
    /// A frame from another server, sent in `epoch`.
    Frame {
        from: ServerId,
        epoch: u32,
        frame: Frame<u64>,
    },
    /// A recovery began (DESIGN.md §8 step 1): the new epoch; frames of older ones are dropped
    /// from now on, and the server fences its soft state.
    Fence {
        epoch: u32,
    },
    /// A recovery's state transfer asks for a group's state (`None`: not a member); the store
    /// itself is copied by the asker, off this thread ([`Server::export_parts`]).
    Export {
        group: MbIndex,
        reply: Sender<Option<ExportParts>>,
    },
    /// The chain is rerouted (step 4): the servers to send to from now on.
    Resume {
        epoch: u32,
        routes: Hops,
    },
    /// Buffers of messages another server consumed, for this one's next messages (it writes
    /// most: server 0, with the forwarder; [`Server::take_surplus`]).
    Spare(Vec<Vec<u8>>),
    /// Another lane of this server published news (commit vectors, applied logs): look at
    /// held frames and the buffer again.
    Nudge,
    /// Fail now, as a crashed process does (failure injection).
    Kill,
    Stop,
}

/// How a server thread reaches every server of the chain: per server, one sender per lane
/// (worker thread, [`crate::lanes`]).
pub type Hops = Vec<Vec<Sender<Msg>>>;

/// An inbox for each of `n` lanes: the senders that reach them and the receivers they read.
pub fn inboxes(n: usize) -> (Vec<Sender<Msg>>, Vec<Receiver<Msg>>) {
    (0..n).map(|_| crossbeam_channel::unbounded()).unzip()
}

/// Sends `frame` from lane `lane` of server `from` to server `to` over `hops`, to the lanes
/// [`lanes_for`] picks; whether a customer packet was lost because `to` is gone.
pub fn send_frame(
    hops: &Hops,
    from: ServerId,
    lane: usize,
    epoch: u32,
    to: ServerId,
    frame: Frame<u64>,
) -> bool {
    let lanes = &hops[usize::from(to.0)];
    let packet = frame.packet.is_some();
    if let [only] = lanes.as_slice() {
        // One lane (as every FTMB logger has): no lane to pick, no copy to make.
        return only.send(Msg::Frame { from, epoch, frame }).is_err() && packet;
    }
    let picked = lanes_for(&frame, lane, lanes.len());
    let (mut lost, mut frame) = (false, Some(frame));
    for i in picked.clone() {
        // The last lane takes the frame itself; the others (a broadcast) get copies.
        let copy = if i + 1 == picked.end {
            frame.take()
        } else {
            frame.clone()
        };
        if let Some(frame) = copy {
            lost |= lanes[i].send(Msg::Frame { from, epoch, frame }).is_err() && packet;
        }
    }
    lost
}

/// Where each server of a chain is reached now; replaced servers get new entries. Readers that
/// send often cache an entry and look again when [`Routes::version`] moves.
#[derive(Debug)]
pub struct Routes {
    senders: std::sync::RwLock<Hops>,
    version: std::sync::atomic::AtomicU32,
}

impl Routes {
    /// One lane per server.
    pub fn new(senders: Vec<Sender<Msg>>) -> Self {
        Self::with_lanes(senders.into_iter().map(|tx| vec![tx]).collect())
    }

    /// `hops[i]`: the lanes of server i.
    pub fn with_lanes(hops: Hops) -> Self {
        Routes {
            senders: std::sync::RwLock::new(hops),
            version: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// How server `i` (its first lane) is reached now.
    pub fn get(&self, i: usize) -> Sender<Msg> {
        self.lanes(i)[0].clone()
    }

    /// How each lane of server `i` is reached now.
    pub fn lanes(&self, i: usize) -> Vec<Sender<Msg>> {
        self.senders.read().expect("no writer panics")[i].clone()
    }

    /// Every lane of every server.
    pub fn every(&self) -> Vec<Sender<Msg>> {
        self.all().into_iter().flatten().collect()
    }

    /// Every server, in order.
    pub fn all(&self) -> Hops {
        self.senders.read().expect("no writer panics").clone()
    }

    /// Server `i` is reached through `tx` (one lane) from now on.
    pub fn set(&self, i: usize, tx: Sender<Msg>) {
        self.set_lanes(i, vec![tx]);
    }

    /// Server `i`'s lanes are reached through `lanes` from now on.
    pub fn set_lanes(&self, i: usize, lanes: Vec<Sender<Msg>>) {
        self.senders.write().expect("no writer panics")[i] = lanes;
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Moves whenever an entry changes.
    pub fn version(&self) -> u32 {
        self.version.load(Ordering::Acquire)
    }
}

/// What every server thread of a chain shares.
#[derive(Debug, Clone)]
pub struct Shared<'s, C> {
    /// Buffers of packets that left the chain, back to the generator.
    pub recycle: Sender<Vec<u8>>,
    /// How many packets left the chain (released, dropped, lost), per batch.
    pub credit: Sender<u64>,
    /// Servers at a bound: no customer packet enters while any is.
    pub congested: &'s AtomicUsize,
    /// Nanoseconds since the run began.
    pub now: C,
    /// Heartbeats to the orchestrator: every `period`, `(server, now)`.
    pub heartbeat: Option<(Duration, Sender<Beat>)>,
    /// When set, released packets are checked against it: a flow's packets leave with one
    /// 5-tuple all run long (a NAT's mapping of a live connection never changes, failures or
    /// not). Costs a lock per released packet.
    pub flows: Option<&'s std::sync::Mutex<HashMap<u64, FlowKey>>>,
    /// When set, every released packet is checked for output commit (the servers must
    /// `observe`). Costs a lock per commit and per released packet.
    pub commits: Option<&'s CommitCheck<'s>>,
}

/// A server thread's signs of life for the orchestrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    Heartbeat {
        server: ServerId,
        /// The epoch the server is in.
        epoch: u32,
        at: u64,
    },
    /// The server resumed after a reroute.
    Resumed { server: ServerId, epoch: u32 },
}

/// What a server thread measured: the packets that left the chain through it, and how busy it
/// was.
#[derive(Debug)]
pub struct Sink {
    /// The thread: `server S lane L`, or an FTMB station's `mI master` / `mI logger`.
    pub thread: String,
    /// Nanoseconds spent on batches, from the clock read after a batch's first message came to
    /// the end of its outputs: the rest of the thread's time it waited for messages. On a
    /// machine with fewer cores than busy threads, time spent waiting for a core counts too.
    pub busy_ns: u64,
    pub released: u64,
    /// Packets lost, by why ([`Loss::name`], or [`WITH_A_FAILED_SERVER`]): to failures (held or
    /// parked when fenced, sent to a failed server, of a fenced epoch, inside this server when
    /// it was killed) or to a server's bounds ([`Loss`]).
    pub lost: BTreeMap<&'static str, u64>,
    pub dropped: Vec<(MbIndex, u64)>,
    /// Nanoseconds from entering the chain to leaving it.
    pub latency: Histogram<u64>,
    /// Flows whose released packets changed 5-tuple (see [`Shared::flows`]).
    pub violations: Vec<String>,
}

/// Why packets lost with a failed server (sent to it, inside it when it was killed) were lost.
pub const WITH_A_FAILED_SERVER: &str = "with a failed server";

impl Sink {
    /// What server thread `thread` measures: nothing yet. Every sink names its thread (the
    /// reports list each thread's share of the run by name).
    pub fn new(thread: String) -> Self {
        Sink {
            thread,
            busy_ns: 0,
            released: 0,
            lost: BTreeMap::new(),
            dropped: Vec::new(),
            latency: Histogram::new(3).expect("3 significant figures"),
            violations: Vec::new(),
        }
    }

    /// `n` packets lost, for `why`.
    pub fn lose(&mut self, why: &'static str, n: u64) {
        if n > 0 {
            *self.lost.entry(why).or_default() += n;
        }
    }

    /// Violations kept per server thread at most: the first ones say what went wrong.
    const MAX_VIOLATIONS: usize = 10;

    /// Keep `v`, unless this thread already kept [`Sink::MAX_VIOLATIONS`].
    fn violation(&mut self, v: String) {
        if self.violations.len() < Self::MAX_VIOLATIONS {
            self.violations.push(v);
        }
    }

    /// Middlebox `by` dropped a packet.
    pub fn dropped_by(&mut self, by: MbIndex) {
        match self.dropped.iter_mut().find(|(m, _)| *m == by) {
            Some((_, n)) => *n += 1,
            None => self.dropped.push((by, 1)),
        }
    }

    /// `packet` left the chain at `now`: counted, its latency recorded, its buffer back to the
    /// generator.
    pub fn release(&mut self, now: u64, packet: Packet<u64>, recycle: &Sender<Vec<u8>>) {
        self.released += 1;
        let _ = self
            .latency
            .record(now.saturating_sub(packet.handle).max(1));
        let _ = recycle.send(packet.bytes);
    }

    /// Carry out a server's output at `now`: a frame goes out through `send` (which says
    /// whether its customer packet was lost because the next server is gone), a packet that
    /// leaves the chain is counted (and checked, as `shared` says); how many packets left the
    /// chain (the generator's credits).
    #[inline]
    pub(crate) fn act<C>(
        &mut self,
        out: Output<u64>,
        now: u64,
        shared: &Shared<'_, C>,
        send: impl FnOnce(ServerId, Frame<u64>) -> bool,
    ) -> u64 {
        match out {
            Output::Send { to, frame } => {
                if send(to, frame) {
                    // The next server failed: the packet is lost with it.
                    self.lose(WITH_A_FAILED_SERVER, 1);
                    return 1;
                }
                0
            }
            Output::Release { packet, .. } => {
                if let Some(flows) = shared.flows {
                    check_flow(flows, &packet, self);
                }
                if let Some(Err(e)) = shared.commits.map(|c| c.released(packet.handle)) {
                    self.violation(e);
                }
                self.release(now, packet, &shared.recycle);
                1
            }
            Output::Dropped { by, handle } => {
                if let Some(check) = shared.commits {
                    check.forget(handle);
                }
                self.dropped_by(by);
                1
            }
            Output::Lost { handle, why } => {
                if let Some(check) = shared.commits {
                    check.forget(handle);
                }
                self.lose(why.name(), 1);
                1
            }
            Output::Committed {
                handle,
                middlebox,
                kind,
                deps,
            } => {
                if let Some(check) = shared.commits {
                    check.committed(handle, middlebox, kind, deps);
                }
                0
            }
            Output::AtBuffer { .. } => 0,
        }
    }
}

/// The next message for a server thread, waiting until `deadline` at most when there is one
/// (`now` reads the clock): `Ok(None)` when the deadline came first, `Err` once no sender is
/// left.
pub fn recv_until<M>(
    rx: &Receiver<M>,
    deadline: Option<u64>,
    now: impl Fn() -> u64,
) -> Result<Option<M>, RecvTimeoutError> {
    match deadline {
        Some(t) => match rx.recv_timeout(Duration::from_nanos(t.saturating_sub(now()))) {
            Ok(m) => Ok(Some(m)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(e) => Err(e),
        },
        None => rx
            .recv()
            .map(Some)
            .map_err(|_| RecvTimeoutError::Disconnected),
    }
}

/// A server thread's batch of messages: taken off its inbox at once, then handled one by one.
/// Taking the next one asks the CPU for the bytes of the one after it (its packet and its
/// message), so that their cache misses (the sending thread's core wrote them) overlap with
/// handling this one instead of stalling the next.
#[derive(Debug, Default)]
pub(crate) struct Batch(VecDeque<Msg>);

impl Batch {
    /// Takes `first` (if any), then those already waiting, [`BATCH`] at most.
    pub(crate) fn fill(&mut self, first: Option<Msg>, rx: &Receiver<Msg>) {
        self.0.extend(first);
        self.0
            .extend(std::iter::from_fn(|| rx.try_recv().ok()).take(BATCH));
        if let Some(m) = self.0.front() {
            m.prefetch();
        }
    }

    /// What is left of the batch, taken out (a killed server's: it counts their packets lost).
    fn rest(&mut self) -> std::collections::vec_deque::Drain<'_, Msg> {
        self.0.drain(..)
    }
}

impl Iterator for Batch {
    type Item = Msg;

    fn next(&mut self) -> Option<Msg> {
        let m = self.0.pop_front()?;
        if let Some(next) = self.0.front() {
            next.prefetch();
        }
        Some(m)
    }
}

impl Msg {
    /// Asks for the first bytes of what handling this message reads first.
    fn prefetch(&self) {
        match self {
            Msg::Ingress(p) => prefetch::read(&p.bytes),
            Msg::Frame { frame, .. } => {
                if let Some(p) = &frame.packet {
                    prefetch::read(&p.bytes);
                }
                prefetch::read(&frame.msg);
            }
            _ => {}
        }
    }
}

impl<'s, C> Shared<'s, C> {
    /// A server thread's share of [`Shared::congested`], not counted yet.
    pub fn congestion(&self) -> Congestion<'s> {
        Congestion::new(self.congested)
    }
}

/// One thread's share of a count of congested threads: counted while the thread says it is
/// congested, and no longer once dropped, however the thread ends (stopped, killed, panicking).
/// A thread that ended counted for good would keep the ingress closed until the run ends (the
/// generator, and a node's edges, take no customer packet while the count is above 0).
#[derive(Debug)]
pub struct Congestion<'c> {
    count: &'c AtomicUsize,
    /// Whether this thread is in `count` now.
    counted: bool,
}

impl<'c> Congestion<'c> {
    /// A thread's share of `count`, not counted yet.
    pub fn new(count: &'c AtomicUsize) -> Self {
        Congestion {
            count,
            counted: false,
        }
    }

    /// The thread's congestion is `now`.
    pub fn set(&mut self, now: bool) {
        if now != self.counted {
            self.counted = now;
            if now {
                self.count.fetch_add(1, Ordering::AcqRel);
            } else {
                self.count.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl Drop for Congestion<'_> {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// How a server thread ended.
#[derive(Debug)]
pub enum Ended<'a> {
    Stopped(Box<Server<'a, u64>>),
    Killed,
}

/// Messages handled per batch at most.
const BATCH: usize = 64;

/// What a server's heartbeat thread reads of it.
#[derive(Debug)]
struct Life {
    /// Cleared when the server is killed or stops: the heartbeats stop.
    alive: AtomicBool,
    /// The epoch the server is in.
    epoch: AtomicU32,
}

/// Run `server` until stopped or killed: `routes[i]` reaches server i; frames are of `epoch`.
///
/// With heartbeats ([`Shared::heartbeat`]), a thread beside the server's sends them every
/// period until the server is killed or stops, as `ftc node`'s helper thread does: a thread
/// that mostly sleeps is scheduled as soon as it wakes, so a server busy with traffic on a
/// loaded machine is not taken for failed (fail-stop: a dead server's beats stop at once).
pub fn serve<'a, C: Fn() -> u64 + Sync>(
    server: Server<'a, u64>,
    rx: &Receiver<Msg>,
    routes: Hops,
    epoch: u32,
    shared: &Shared<'_, C>,
) -> (Ended<'a>, Sink) {
    let life = Life {
        alive: AtomicBool::new(true),
        epoch: AtomicU32::new(epoch),
    };
    let me = server.id();
    std::thread::scope(|s| {
        if let Some((period, beats)) = &shared.heartbeat {
            let life = &life;
            s.spawn(move || {
                while life.alive.load(Ordering::Acquire) {
                    let _ = beats.send(Beat::Heartbeat {
                        server: me,
                        epoch: life.epoch.load(Ordering::Acquire),
                        at: (shared.now)(),
                    });
                    std::thread::sleep(*period);
                }
            });
        }
        let ended = run(server, rx, routes, epoch, shared, &life);
        life.alive.store(false, Ordering::Release);
        ended
    })
}

/// Names the calling thread `name` (what `top -H`, `ps -L` and profilers show), shortened to
/// Linux's 15 bytes: ` lane ` becomes ` l`, then the end is cut.
pub fn name_thread(name: &str) {
    let mut short = name.to_string();
    if short.len() > 15 {
        short = short.replace(" lane ", " l");
    }
    while short.len() > 15 {
        short.pop();
    }
    if let Ok(c) = std::ffi::CString::new(short) {
        // SAFETY: a valid C string of at most 15 bytes, for this very thread.
        unsafe { libc::pthread_setname_np(libc::pthread_self(), c.as_ptr()) };
    }
}

/// [`serve`]'s loop; `life` says when the server dies and which epoch it is in.
fn run<'a, C: Fn() -> u64>(
    mut server: Server<'a, u64>,
    rx: &Receiver<Msg>,
    mut routes: Hops,
    mut epoch: u32,
    shared: &Shared<'_, C>,
    life: &Life,
) -> (Ended<'a>, Sink) {
    let mut congestion = shared.congestion();
    let me = server.id();
    let mut sink = Sink::new(format!("server {} lane {}", me.0, server.lane()));
    name_thread(&format!("srv {} lane {}", me.0, server.lane()));
    let mut batch = Batch::default();
    let now = &shared.now;
    if let Some(check) = shared.commits {
        check.register(&server);
    }
    loop {
        let Ok(first) = recv_until(rx, server.poll_timeout(), now) else {
            break;
        };
        let mut stop = false;
        let mut left = 0;
        let t = now();
        if first.is_none() {
            server.handle_timeout(t);
        }
        batch.fill(first, rx);
        while let Some(msg) = batch.next() {
            match msg {
                Msg::Ingress(packet) => {
                    let port = port_of(packet.dir);
                    if let Err((_, packet)) = server.handle_ingress(t, packet, port) {
                        // Sanitized away: it left the chain, so the generator's window moves.
                        let _ = shared.recycle.send(packet.bytes);
                        left += 1;
                    }
                }
                Msg::Frame {
                    from,
                    epoch: e,
                    frame,
                } => {
                    if e == epoch {
                        server.handle_frame(t, from, frame);
                    } else if frame.packet.is_some() {
                        sink.lose(Loss::Fenced.name(), 1);
                        left += 1;
                    }
                }
                Msg::Fence { epoch: e } => {
                    epoch = e;
                    life.epoch.store(e, Ordering::Release);
                    server.fence();
                }
                Msg::Export { group, reply } => {
                    let _ = reply.send(server.export_parts(group));
                }
                Msg::Resume {
                    epoch: e,
                    routes: r,
                } => {
                    epoch = e;
                    life.epoch.store(e, Ordering::Release);
                    routes = r;
                    server.resume(t);
                    if let Some((_, beats)) = &shared.heartbeat {
                        let _ = beats.send(Beat::Resumed { server: me, epoch });
                    }
                }
                Msg::Kill => {
                    life.alive.store(false, Ordering::Release);
                    left += die(&mut server, &mut sink);
                    // Its state is gone with it (the head's store can be restored into).
                    drop(server);
                    let _ = shared.credit.send(left);
                    // A dead server holds no traffic back while its address swallows the rest.
                    congestion.set(false);
                    black_hole(batch.rest().chain(rx), &mut sink, &shared.credit);
                    return (Ended::Killed, sink);
                }
                Msg::Spare(buffers) => server.take_spare(buffers),
                Msg::Nudge => {}
                Msg::Stop => stop = true,
            }
        }
        if rx.is_empty() {
            server.caught_up(t);
        }
        server.end_batch(t);
        let wake = server.take_wakeups();
        if !wake.is_empty() {
            let lanes = &routes[usize::from(me.0)];
            for tx in wake.iter().filter_map(|i| lanes.get(i)) {
                let _ = tx.send(Msg::Nudge);
            }
        }
        let lane = server.lane();
        while let Some(out) = server.poll_output() {
            left += sink.act(out, t, shared, |to, frame| {
                send_frame(&routes, me, lane, epoch, to, frame)
            });
        }
        if left > 0 {
            let _ = shared.credit.send(left);
        }
        if let Some(buffers) = server.take_surplus() {
            pass_back(&routes, lane, buffers);
        }
        sink.busy_ns += now().saturating_sub(t);
        congestion.set(server.congested());
        if stop {
            break;
        }
    }
    (Ended::Stopped(Box::new(server)), sink)
}

/// Buffers of consumed messages to server 0's lane `lane` (or its first), where customer
/// packets get their messages (server 0 gathers none: [`Server::take_surplus`]).
fn pass_back(routes: &Hops, lane: usize, buffers: Vec<Vec<u8>>) {
    let lanes = routes.first().map(Vec::as_slice).unwrap_or_default();
    if let Some(tx) = lanes.get(lane).or(lanes.first()) {
        let _ = tx.send(Msg::Spare(buffers));
    }
}

/// The server dies. A real crash reports nothing; the harness still counts the packets that
/// die with it (held, parked, or handled in its last batch and not yet sent) so that every
/// packet sent is accounted for.
fn die(server: &mut Server<'_, u64>, sink: &mut Sink) -> u64 {
    server.fence();
    let mut lost = 0;
    while let Some(out) = server.poll_output() {
        lost += u64::from(match out {
            Output::Send { frame, .. } => frame.packet.is_some(),
            Output::Release { .. } | Output::Dropped { .. } | Output::Lost { .. } => true,
            Output::Committed { .. } | Output::AtBuffer { .. } => false,
        });
    }
    sink.lose(WITH_A_FAILED_SERVER, lost);
    lost
}

/// What a dead server's address does until the run ends: swallow everything (what was left of
/// its last batch, then its inbox; a state transfer asking it gets no answer), counting the
/// packets lost in it.
fn black_hole(msgs: impl Iterator<Item = Msg>, sink: &mut Sink, credit: &Sender<u64>) {
    for msg in msgs {
        let lost = match msg {
            Msg::Stop => return,
            Msg::Ingress(_) => 1,
            Msg::Frame { frame, .. } => u64::from(frame.packet.is_some()),
            _ => 0,
        };
        if lost > 0 {
            sink.lose(WITH_A_FAILED_SERVER, lost);
            let _ = credit.send(lost);
        }
    }
}

/// A released packet's 5-tuple must be the one its flow left with before.
fn check_flow(
    flows: &std::sync::Mutex<HashMap<u64, FlowKey>>,
    packet: &Packet<u64>,
    sink: &mut Sink,
) {
    let Parsed::Ipv4(p) = parse(&packet.bytes) else {
        return;
    };
    let key = *p.flow();
    let mut flows = flows.lock().expect("no holder panics");
    let first = *flows.entry(packet.flow).or_insert(key);
    if first != key {
        sink.violation(format!(
            "flow {} left the chain as {}:{} after leaving as {}:{} (a NAT mapping of a live connection changed)",
            packet.flow, key.src, key.sport, first.src, first.sport
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::name_thread;

    /// The name the kernel holds for the calling thread.
    fn comm() -> String {
        std::fs::read_to_string("/proc/thread-self/comm")
            .unwrap()
            .trim_end()
            .to_string()
    }

    #[test]
    fn threads_are_named_within_linux_15_bytes() {
        std::thread::spawn(|| {
            name_thread("srv 3 lane 1");
            assert_eq!(comm(), "srv 3 lane 1");
            name_thread("m12 master lane 3");
            assert_eq!(comm(), "m12 master l3");
            name_thread("a name far longer than fifteen");
            assert_eq!(comm(), "a name far long");
        })
        .join()
        .unwrap();
    }
}
