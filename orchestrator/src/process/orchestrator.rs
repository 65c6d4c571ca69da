//! `ftc orchestrator`: the orchestrator as a process (DESIGN.md §8). Nodes connect over TCP, are
//! challenged with a fresh nonce, and send authenticated control messages; a malformed or
//! unauthenticated one, a `Join` without its connection's nonce, or a message that claims
//! another position than its connection joined as, is never trusted: it is logged and the
//! connection closed. The messages drive the [`Coordinator`]; its `Send` commands go out on the
//! connection of the position's current node, its `Launch` commands to the [`Launcher`].
//! Its loop and the readers of the control connections run real-time where the process may
//! (`process::wake_on_time`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufReader};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use ftc_chain::ring::Ring;

use super::keepalive::keep_alive;
use super::launcher::{Ended, Launcher};
use super::recent::Recent;
use super::Chain;
use crate::admission::{Admission, Admitted};
use crate::control::{
    read_message, write_message, ControlError, Key, Message, Nonce, Peer, CONTROL_MAX_BODY,
};
use crate::coordinator::{
    Adopted, Command, Coordinator, CoordinatorConfig, RecoveryReport, Unrecoverable,
};
use crate::throttle::Throttle;

/// The longest reason a [`Message::Refused`] gives, in bytes.
const MAX_REASON: usize = 1024;

/// The longest the orchestrator waits between looks at its stop flag.
const TICK: Duration = Duration::from_millis(10);

/// How many times in a row failure detection waits for a reader thread to catch up (200 µs
/// each).
const MAX_DEFERRALS: u32 = 50;

/// What a node declared failed is told as it is cut off ([`Message::Refused`]), followed by the
/// epoch: "declared failed in epoch E; replaced".
pub const DECLARED_FAILED: &str = "declared failed in epoch";

/// What a node that rejoins is told when it is not taken back ([`Message::Refused`]), followed
/// by why: it was declared failed and replaced meanwhile, or this orchestrator deploys a chain
/// of its own.
pub const NOT_TAKEN_BACK: &str = "not taken back";

/// Control connections closed for what did not verify: anyone who reaches the port causes
/// them as fast as they connect.
static UNVERIFIED: Throttle = Throttle::new();

/// How long a write to a node's control connection may block before the connection is closed.
const WRITE_PATIENCE: Duration = Duration::from_secs(1);

/// What the orchestrator knows now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// 0 until every position joined, then 1, then one more per recovery (or, adopted, the
    /// epoch the nodes were in, then one more per recovery).
    pub epoch: u32,
    /// Whether the chain runs undisturbed: deployed or adopted, no recovery under way.
    pub settled: bool,
    /// Every position's live node; `None` until it joins and while it is replaced.
    pub peers: Vec<Option<Peer>>,
    /// The recoveries finished (the latest of them; [`Orchestrator::run`] reports each).
    pub recoveries: Recent<RecoveryReport>,
    /// Control connections closed for a malformed or unauthenticated message.
    pub rejected: u64,
    /// Nodes' messages of another run than the orchestrator's, ignored (and logged at debug).
    pub other_run: u64,
    /// The nodes it started whose processes ended while it ran without being killed (by the
    /// orchestrator cutting one off, or by [`Children::kill`](super::launcher::Children::kill)):
    /// crashes, panics, hangs caught, errors (the latest of them).
    pub ended: Recent<Ended>,
    /// How it took over a running chain whose nodes rejoined it, if it did.
    pub adopted: Option<Adopted>,
}

impl Status {
    /// The chain's state in one line, for the orchestrator's stats lines: its epoch, the
    /// positions up, the recoveries (the last one's time from detection to reroute), the
    /// control connections refused and the nodes it started that ended unasked.
    pub fn line(&self) -> String {
        let up = self.peers.iter().filter(|p| p.is_some()).count();
        let mut line = format!(
            "epoch {}, {up} of {} positions up, {} recoveries",
            self.epoch,
            self.peers.len(),
            self.recoveries.total()
        );
        if let Some(adopted) = &self.adopted {
            let _ = write!(line, ", adopted in epoch {}", adopted.epoch);
        }
        if let Some(last) = self.recoveries.iter().last() {
            let _ = write!(
                line,
                " (the last of {:?} in epoch {}: {:.1} ms after detection)",
                last.failed,
                last.epoch,
                last.total_ns as f64 / 1e6
            );
        }
        let _ = write!(
            line,
            ", control connections refused {}, nodes ended unasked {}",
            self.rejected,
            self.ended.total()
        );
        line
    }
}

/// The orchestrator of one chain, over TCP.
#[derive(Debug)]
pub struct Orchestrator {
    listener: TcpListener,
    key: Key,
    ring: Ring,
    /// The chain's spec and mode: a node that joins with others is refused.
    chain: Chain,
    /// Its run id, drawn at random when it is made: its nodes' state transfers carry it.
    run: u64,
    config: CoordinatorConfig,
    /// Shared with its [`heir`](Orchestrator::heir)s: failure injection kills nodes through it
    /// whichever orchestrator runs.
    launcher: Arc<Launcher>,
    status: Mutex<Status>,
}

/// An orchestrator to come after one that crashed ([`Orchestrator::heir`]).
#[derive(Debug)]
pub struct Heir {
    key: Key,
    ring: Ring,
    chain: Chain,
    config: CoordinatorConfig,
    /// The nodes' processes stay where a harness reaches them, in the launcher the
    /// orchestrators share.
    launcher: Arc<Launcher>,
}

impl Heir {
    /// The successor, taking connections on `listener` (bound to its predecessor's address once
    /// that let go of it), with a fresh run id: it adopts the chain from the nodes that rejoin.
    pub fn take_over(self, listener: TcpListener) -> Orchestrator {
        self.launcher.forget_launches();
        Orchestrator::with(
            listener,
            (self.ring, self.chain),
            self.key,
            self.config,
            self.launcher,
        )
    }
}

/// What the connection threads report.
#[derive(Debug)]
enum Event {
    /// A connection, challenged with `nonce`.
    Accepted {
        conn: u64,
        stream: TcpStream,
        from: SocketAddr,
        nonce: Nonce,
    },
    Message {
        conn: u64,
        msg: Message,
    },
    /// The connection ended; `rejected` when for a bad message.
    Closed {
        conn: u64,
        rejected: bool,
    },
}

/// A node's control connection.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    from: SocketAddr,
    /// The nonce of its challenge, which its `Join` must carry.
    nonce: Nonce,
    /// The position it joined as.
    position: Option<u16>,
}

/// The connections and which one each position's node uses.
#[derive(Debug)]
struct Conns {
    all: HashMap<u64, Conn>,
    by_position: Vec<Option<u64>>,
    rejected: u64,
}

impl Conns {
    /// A new connection challenged with `nonce`, of no position until its node joins.
    fn accept(&mut self, conn: u64, stream: TcpStream, from: SocketAddr, nonce: Nonce) {
        self.all.insert(
            conn,
            Conn {
                stream,
                from,
                nonce,
                position: None,
            },
        );
    }

    /// `conn`'s node joined as `position`: the position's orders go to it from now on, and a
    /// node that joined there before (during deployment, the last to join counts) is refused.
    fn bind(&mut self, conn: u64, position: u16, key: &Key) {
        if let Some(c) = self.all.get_mut(&conn) {
            c.position = Some(position);
        }
        let slot = &mut self.by_position[usize::from(position)];
        if let Some(before) = slot.replace(conn).filter(|&before| before != conn) {
            let why = format!("another node joined as position {position}");
            self.reject(before, &why, key);
        }
    }

    fn close(&mut self, conn: u64) {
        if let Some(c) = self.all.remove(&conn) {
            let _ = c.stream.shutdown(Shutdown::Both);
            if let Some(slot) = c
                .position
                .and_then(|p| self.by_position.get_mut(usize::from(p)))
            {
                if *slot == Some(conn) {
                    *slot = None;
                }
            }
        }
    }

    /// Cut `conn`'s node off, telling it why (`why`) without waiting: a node declared failed
    /// may have stopped reading, and must not hold up the orchestrator's loop.
    fn cut_off(&mut self, conn: u64, why: &str, key: &Key) {
        if let Some(c) = self.all.get(&conn) {
            let _ = c.stream.set_nonblocking(true);
            refuse(&c.stream, why, key);
        }
        self.close(conn);
    }

    /// Close `conn` for a message that cannot be trusted, telling its node why.
    fn reject(&mut self, conn: u64, why: &str, key: &Key) {
        if let Some(c) = self.all.get(&conn) {
            tracing::warn!("control connection from {}: {why}; closing it", c.from);
            refuse(&c.stream, why, key);
        }
        self.rejected += 1;
        self.close(conn);
    }

    /// Whether bytes wait on some connection that its reader thread has not read yet.
    fn unread(&self) -> bool {
        self.all.values().any(|c| {
            let mut n: libc::c_int = 0;
            // SAFETY: FIONREAD stores one c_int through the pointer, which points to `n`; the
            // descriptor is open while `c.stream` lives.
            let r = unsafe { libc::ioctl(c.stream.as_raw_fd(), libc::FIONREAD, &mut n) };
            r == 0 && n > 0
        })
    }

    fn send(&mut self, position: u16, msg: &Message, key: &Key) {
        let Some(conn) = self
            .by_position
            .get(usize::from(position))
            .copied()
            .flatten()
        else {
            tracing::debug!("no node at position {position} for {msg:?}");
            return;
        };
        let c = &self.all[&conn];
        if let Err(e) = write_message(&mut &c.stream, msg, key) {
            tracing::warn!("control connection to node {position} at {}: {e}", c.from);
            self.close(conn);
        }
    }
}

/// Tells the node at the other end of `stream` why its connection is closed (best effort).
fn refuse(stream: &TcpStream, why: &str, key: &Key) {
    let mut reason = why.to_string();
    // Within a control frame whatever the message quoted.
    while reason.len() > MAX_REASON {
        reason.pop();
    }
    let _ = write_message(&mut &*stream, &Message::Refused { reason }, key);
}

/// The position a node → orchestrator message speaks for (`None`: a kind nodes do not send).
fn position_of(msg: &Message) -> Option<u16> {
    match msg {
        Message::Join { position, .. }
        | Message::Heartbeat { position, .. }
        | Message::Ready { position, .. }
        | Message::TransferFailed { position, .. }
        | Message::Resumed { position, .. } => Some(*position),
        _ => None,
    }
}

/// How long the nodes an orchestrator started get to exit after `Stop`.
pub const NODES_EXIT: Duration = Duration::from_secs(2);

impl Orchestrator {
    /// An orchestrator of `ring` taking control connections on `listener`, for nodes that run
    /// `chain`.
    pub fn new(
        listener: TcpListener,
        chain: (Ring, Chain),
        key: Key,
        config: CoordinatorConfig,
        launcher: Launcher,
    ) -> Orchestrator {
        Orchestrator::with(listener, chain, key, config, Arc::new(launcher))
    }

    fn with(
        listener: TcpListener,
        (ring, chain): (Ring, Chain),
        key: Key,
        config: CoordinatorConfig,
        launcher: Arc<Launcher>,
    ) -> Orchestrator {
        Orchestrator {
            listener,
            key,
            ring,
            chain,
            run: fastrand::u64(..),
            config,
            launcher,
            status: Mutex::new(Status {
                peers: vec![None; ring.servers()],
                ..Status::default()
            }),
        }
    }

    /// What an orchestrator started in the place of this one after it crashed
    /// ([`run_until_crash`](Orchestrator::run_until_crash)) takes from it: the chain, secret
    /// and settings, nothing of what it knew (the launches it made included).
    pub fn heir(&self) -> Heir {
        Heir {
            key: self.key.clone(),
            ring: self.ring,
            chain: self.chain.clone(),
            config: self.config,
            launcher: Arc::clone(&self.launcher),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The run id its `Assign`s and `Recover`s carry (random: another orchestrator's, or this
    /// chain's in an earlier run, is another), as a state transfer to its nodes must.
    pub fn run_id(&self) -> u64 {
        self.run
    }

    pub fn launcher(&self) -> &Arc<Launcher> {
        &self.launcher
    }

    pub fn status(&self) -> Status {
        self.status.lock().expect("no holder panics").clone()
    }

    /// Deploy the chain as its nodes join, watch it and recover failures, until `stop` (then
    /// every node gets `Stop`, and those it started up to [`NODES_EXIT`] to exit) or until a
    /// failure cannot be recovered. `report` hears of every
    /// finished recovery.
    pub fn run(
        &self,
        stop: &AtomicBool,
        report: impl FnMut(&RecoveryReport),
    ) -> Result<(), Unrecoverable> {
        self.run_until_crash(stop, &AtomicBool::new(false), report)
    }

    /// [`run`](Orchestrator::run), or, once `crash` is raised, end as a process killed then
    /// would (failure injection, `ftc chaos --procs --kill-orchestrator`): every control
    /// connection closed without a word, the nodes left running, the listener closed when this
    /// orchestrator is dropped.
    pub fn run_until_crash(
        &self,
        stop: &AtomicBool,
        crash: &AtomicBool,
        mut report: impl FnMut(&RecoveryReport),
    ) -> Result<(), Unrecoverable> {
        let _on_time = super::wake_on_time("failure detection");
        let start = Instant::now();
        let now = || start.elapsed().as_nanos() as u64;
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut coordinator = Coordinator::new(self.ring, self.config, self.run);
        let mut conns = Conns {
            all: HashMap::new(),
            by_position: vec![None; self.ring.servers()],
            rejected: 0,
        };
        // Raised when this loop ends, by `stop` or by a halt.
        let ended = AtomicBool::new(false);
        // Control connections until their first message: each has a thread, and joined nodes
        // need the descriptors.
        let admission = Admission::new("control connection");
        std::thread::scope(|s| {
            let acceptor = {
                let (tx, ended, admission) = (tx.clone(), &ended, &admission);
                s.spawn(move || self.accept(s, &tx, ended, admission))
            };
            let mut outcome = Ok(());
            let mut deferred = 0;
            while !stop.load(Ordering::Acquire) {
                if crash.load(Ordering::Acquire) {
                    tracing::warn!("orchestrator of run {:016x}: crashed", self.run);
                    break;
                }
                let t = now();
                let wait = coordinator.poll_timeout().map_or(TICK, |at| {
                    Duration::from_nanos(at.saturating_sub(t)).min(TICK)
                });
                match rx.recv_timeout(wait) {
                    Ok(event) => {
                        let later: Vec<_> = rx.try_iter().collect();
                        for event in std::iter::once(event).chain(later) {
                            self.event(event, &mut conns, &mut coordinator, now());
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        unreachable!("this thread holds a sender")
                    }
                }
                let due = coordinator.poll_timeout().is_some_and(|at| at <= now());
                if due && deferred < MAX_DEFERRALS && rx.is_empty() && conns.unread() {
                    // A reader thread has not got to a heartbeat that arrived yet (a loaded
                    // host): let it, before anyone is declared failed.
                    deferred += 1;
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                deferred = 0;
                coordinator.handle_timeout(now());
                while let Some(command) = coordinator.poll_command() {
                    match command {
                        Command::Launch { position, epoch } => {
                            // Fail-stop: a node declared failed is cut off, and exits, even
                            // if it was only slow; its replacement takes its place. It is told
                            // why, so that its last word is not that of a node the
                            // orchestrator never trusted. One this launcher started is killed
                            // too, so that it lets go of the position's sockets at once even
                            // if it is busy (a replacement launched again may be in the
                            // middle of a fetch).
                            if let Some(conn) = conns.by_position[usize::from(position.0)] {
                                let why = format!("{DECLARED_FAILED} {epoch}; replaced");
                                conns.cut_off(conn, &why, &self.key);
                            }
                            if let Err(e) = self.launcher.children().kill(position.0) {
                                tracing::warn!(
                                    "cannot stop the node at position {}: {e}",
                                    position.0
                                );
                            }
                            tracing::info!(
                                "epoch {epoch}: launching a replacement at position {}",
                                position.0
                            );
                            if let Err(e) = self.launcher.launch(position.0) {
                                tracing::error!(
                                    "cannot launch a node at position {}: {e}",
                                    position.0
                                );
                            }
                        }
                        Command::Send { to, msg } => conns.send(to.0, &msg, &self.key),
                    }
                }
                let mut status = self.status.lock().expect("no holder panics");
                for ended in self.launcher.children().ended_unasked() {
                    tracing::warn!("{ended}, not stopped by the orchestrator");
                    status.ended.push(ended);
                }
                if let Some(adopted) = coordinator.poll_adoption() {
                    tracing::warn!("{adopted}");
                    status.adopted = Some(adopted);
                }
                while let Some(r) = coordinator.poll_report() {
                    tracing::info!("recovery: {r}");
                    report(&r);
                    status.recoveries.push(r);
                }
                status.epoch = coordinator.epoch();
                status.settled = coordinator.running();
                status.peers = coordinator.peers().to_vec();
                status.rejected = conns.rejected;
                status.other_run = coordinator.other_run_messages();
                drop(status);
                if let Some(why) = coordinator.halted() {
                    outcome = Err(why.clone());
                    break;
                }
            }
            ended.store(true, Ordering::Release);
            acceptor.join().expect("the acceptor panicked");
            // Connections accepted meanwhile are closed too, so that their readers end.
            for event in rx.try_iter() {
                if let Event::Accepted {
                    conn,
                    stream,
                    from,
                    nonce,
                } = event
                {
                    conns.accept(conn, stream, from, nonce);
                }
            }
            let crashed = crash.load(Ordering::Acquire);
            if !crashed {
                for position in 0..self.ring.servers() as u16 {
                    conns.send(position, &Message::Stop, &self.key);
                }
            }
            for conn in conns.all.keys().copied().collect::<Vec<_>>() {
                conns.close(conn);
            }
            if crashed {
                return outcome;
            }
            // The nodes this orchestrator started get a moment to exit by themselves, with
            // their exit summary, before what is left is killed. (Killed at once, a
            // replacement could lose its summary: the lab demo's check of answered
            // retransmission requests, which only a replacement may have answered, failed now
            // and then.)
            self.launcher.children().shutdown(NODES_EXIT);
            outcome
        })
    }

    /// Take connections until `stop`; each gets a reader thread, and a place in `admission`
    /// until its first message.
    fn accept<'s>(
        &'s self,
        s: &'s std::thread::Scope<'s, '_>,
        tx: &Sender<Event>,
        stop: &AtomicBool,
        admission: &'s Admission,
    ) {
        if let Err(e) = self.listener.set_nonblocking(true) {
            tracing::error!("control listener: {e}");
            return;
        }
        let mut next = 0;
        while !stop.load(Ordering::Acquire) {
            let (stream, from) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        tracing::warn!("control listener: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
            };
            let reader = stream
                .set_nonblocking(false)
                .and_then(|()| stream.set_nodelay(true))
                .and_then(|()| keep_alive(&stream))
                // Orders are few and small: a write that blocks has a node that stopped
                // reading at the other end, and must not hold up the orchestrator's loop.
                .and_then(|()| stream.set_write_timeout(Some(WRITE_PATIENCE)))
                .and_then(|()| stream.try_clone())
                .and_then(|reader| Ok((admission.admit(&stream)?, reader)));
            let (admitted, reader) = match reader {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("control connection from {from}: {e}");
                    continue;
                }
            };
            next += 1;
            let conn = next;
            let nonce = super::unguessable();
            let _ = tx.send(Event::Accepted {
                conn,
                stream,
                from,
                nonce,
            });
            let spawned = std::thread::Builder::new()
                .name("control reader".into())
                .spawn_scoped(s, {
                    let tx = tx.clone();
                    move || self.read(conn, &reader, from, nonce, &tx, admitted)
                });
            if let Err(e) = spawned {
                tracing::warn!("control connection from {from}: no thread to read it: {e}");
                let _ = tx.send(Event::Closed {
                    conn,
                    rejected: false,
                });
            }
        }
    }

    /// A connection's messages, once it is challenged with `nonce`, until it ends or sends one
    /// that cannot be trusted, or has not sent its whole first message by the deadline of its
    /// place among the `admitted` ([`FIRST_FRAME`](crate::admission::FIRST_FRAME) after it
    /// opened), which it holds until then.
    fn read(
        &self,
        conn: u64,
        stream: &TcpStream,
        from: SocketAddr,
        nonce: Nonce,
        tx: &Sender<Event>,
        admitted: Admitted<'_>,
    ) {
        let _on_time = super::wake_on_time("control reader");
        let challenge = Message::Challenge {
            run: self.run,
            nonce,
            heartbeat_ns: self.config.heartbeat_period_ns,
        };
        if let Err(e) = write_message(&mut &*stream, &challenge, &self.key) {
            tracing::debug!("control connection from {from}: cannot challenge it: {e}");
            let _ = stream.shutdown(Shutdown::Both);
            let _ = tx.send(Event::Closed {
                conn,
                rejected: false,
            });
            return;
        }
        let mut reader = BufReader::new(admitted.reader(stream));
        let mut admitted = Some(admitted);
        let rejected = loop {
            match read_message(&mut reader, &self.key, CONTROL_MAX_BODY) {
                Ok(msg) => {
                    if admitted.take().is_some() {
                        // From now on the detector watches it: silence is its business.
                        if let Err(e) = reader.get_mut().lift() {
                            tracing::warn!("control connection from {from}: {e}");
                        }
                    }
                    let _ = tx.send(Event::Message { conn, msg });
                }
                Err(ControlError::Closed) => break false,
                Err(ControlError::Io(e)) => {
                    tracing::debug!("control connection from {from} ended: {e}");
                    break false;
                }
                Err(e) => {
                    // Not answered: what cannot be verified may come from anyone, and a tagged
                    // answer quoting it would tag what they chose. Nor logged each time.
                    if let Some(more) = UNVERIFIED.admit(Instant::now()) {
                        tracing::warn!("control connection from {from}: {e}; closing it{more}");
                    }
                    let _ = stream.shutdown(Shutdown::Both);
                    break true;
                }
            }
        };
        let _ = tx.send(Event::Closed { conn, rejected });
    }

    fn event(&self, event: Event, conns: &mut Conns, coordinator: &mut Coordinator, now: u64) {
        match event {
            Event::Accepted {
                conn,
                stream,
                from,
                nonce,
            } => conns.accept(conn, stream, from, nonce),
            Event::Closed { conn, rejected } => {
                conns.rejected += u64::from(rejected);
                conns.close(conn);
            }
            Event::Message { conn, msg } => {
                let Some(c) = conns.all.get_mut(&conn) else {
                    return;
                };
                let Some(position) = position_of(&msg) else {
                    return conns.reject(
                        conn,
                        "a node sent a message only the orchestrator sends",
                        &self.key,
                    );
                };
                if usize::from(position) >= self.ring.servers() {
                    let why = format!("no position {position} in this chain");
                    return conns.reject(conn, &why, &self.key);
                }
                // Declared failed and replaced while it had no connection, or a node of a chain
                // this orchestrator does not run.
                let not_taken_back = |epoch: u32| {
                    format!(
                        "{NOT_TAKEN_BACK}: position {position} is not this node's in epoch \
                         {epoch} (declared failed and replaced, or the orchestrator deploys a new \
                         chain)"
                    )
                };
                if let Message::Join {
                    chain,
                    nonce,
                    launch,
                    serving,
                    ..
                } = msg
                {
                    if nonce != c.nonce {
                        let why = "the Join does not carry its connection's challenge (a Join \
                                   recorded on another connection, replayed?)";
                        return conns.reject(conn, why, &self.key);
                    }
                    if let Some(why) = self.launcher.refusal(position, launch) {
                        // A node that served there and rejoins after the launcher launched
                        // another in its place was replaced: it is told so, whatever its launch.
                        let why = if serving.is_some() {
                            not_taken_back(coordinator.epoch())
                        } else {
                            why
                        };
                        return conns.reject(conn, &why, &self.key);
                    }
                    if let Some(why) = self.chain.refusal(chain) {
                        return conns.reject(conn, &why, &self.key);
                    }
                }
                let joins = match (c.position, &msg) {
                    (None, Message::Join { .. }) => true,
                    (Some(joined), _)
                        if joined == position && !matches!(msg, Message::Join { .. }) =>
                    {
                        false
                    }
                    (None, _) => {
                        return conns.reject(conn, "a message before the node joined", &self.key)
                    }
                    (Some(joined), _) => {
                        let why = format!("the node joined as position {joined} and sent {msg:?}");
                        return conns.reject(conn, &why, &self.key);
                    }
                };
                let rejoins = matches!(
                    msg,
                    Message::Join {
                        serving: Some(_),
                        ..
                    }
                );
                let other_run = coordinator.other_run_messages();
                let taken = coordinator.handle(now, msg);
                if coordinator.other_run_messages() > other_run {
                    tracing::debug!(
                        "control connection from {} (position {position}): ignored a message of \
                         another run",
                        c.from
                    );
                }
                if joins && taken {
                    conns.bind(conn, position, &self.key);
                } else if rejoins {
                    conns.reject(conn, &not_taken_back(coordinator.epoch()), &self.key);
                } else if joins {
                    // A second node for a position whose node is alive, or a replacement the
                    // orchestrator did not launch (or one launched again meanwhile): bound to
                    // the position, it would get that position's orders instead of its node.
                    let why = format!(
                        "no node is awaited at position {position} now (epoch {})",
                        coordinator.epoch()
                    );
                    conns.reject(conn, &why, &self.key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
