//! `ftc node`: one chain server as a process (DESIGN.md §1, §3, §8). It binds a UDP data socket
//! (frames between servers as NSH in datagrams, [`UdpTransport`]) and a TCP listener for state
//! transfers ([`transfer::serve`], answered from its own [`Server`](ftc_node::Server)), connects to the
//! orchestrator and joins, with the nonce of the orchestrator's challenge. Then:
//! - `Assign`: the initial deployment; it learns its peers and serves in epoch 1;
//! - `Fence`: a recovery began: frames of older epochs are dropped from now on, the server fences;
//! - `Recover` (a replacement): fetch the named groups in parallel, restore, report `Ready`;
//! - `Reroute`: the new peers; resume, report `Resumed`;
//! - `Stop`: exit.
//!
//! A node that serves (assigned, or a replacement that restored its state) and loses its
//! orchestrator (the process died, the connection broke) serves on, without heartbeats, and
//! joins the orchestrator's address again, saying where it stands, until one takes it back, for
//! up to `--headless-for` (module `rejoin`); one that does not serve yet exits.
//!
//! Customer frames (raw Ethernet bytes) enter at server 0 and leave at the last server, over UDP
//! or AF_XDP, or both:
//! - `--ingress ADDR` (server 0): customer frames arrive as UDP datagrams at ADDR; they are
//!   outbound (client to server). A datagram longer than a frame between servers holds beside
//!   its trailer (or than [`MAX_DATAGRAM`]) is dropped and counted.
//! - `--egress ADDR` (the last server): released customer frames go to ADDR as datagrams.
//! - `--edge-in DIR=IFACE` (server 0, repeatable): customer frames arrive on interface IFACE
//!   through AF_XDP, all of direction DIR (`out`: client to server, `in`: server to client); the
//!   forwarder classifies them by the edge they came in on. A node refuses to start when an
//!   edge-in's MTU lets in customer frames longer than frames between servers hold beside their
//!   trailer: the trailer budget, or in FTC the packet's own logs where longer ([`super::room`]).
//! - `--edge-out DIR=IFACE` (the last server, repeatable): released frames of direction DIR
//!   leave on interface IFACE through AF_XDP, unchanged: the chain is a bump in the wire at L2.
//!
//! AF_XDP edges ([`Edges`]) run in copy mode on queue 0 unless configured otherwise
//! ([`NodeConfig::xdp`]); they need root (or CAP_NET_ADMIN, CAP_NET_RAW and CAP_SYS_ADMIN:
//! [`XDP_CAPABILITIES`](ftc_node::xdp::XDP_CAPABILITIES)), and CAP_IPC_LOCK or a locked-memory
//! limit (`ulimit -l`) that holds every port's UMEM. Where AF_XDP is not available, `--edge-kind
//! packet` carries the edges on raw packet sockets (AF_PACKET, CAP_NET_RAW), one system call per
//! frame. The orchestrator passes them on to the end servers' replacements (`ftc orchestrator
//! --edge-in --edge-out`); a replacement waits up to 5 s for a killed node's socket to leave the
//! interface queue. Frames between servers travel on the UDP transport, or with `--ring-next IFACE
//! --ring-prev IFACE` over AF_XDP on the ring links to the successor and from the predecessor
//! ([`XdpLinks`]). One thread runs the server and waits (`ppoll`) on the data socket, the ring
//! links, the ingress socket, the edge-in ports and a wake-up socket; a server of several lanes
//! (its middlebox's `threads`: FTC's and NF's servers, FTMB's masters) runs them on threads of
//! their own, which that thread hands their frames ([`super::lanes`]); with `--link-queues` and
//! `--edge-queues` at least the lanes, each lane reads and sends on its own queues of the ring
//! links and the edges instead ([`XdpLinks::split`], [`Edges::split`]; the node's exit summary then
//! counts their frames by lane), except with `--observe` (the node's thread records every frame)
//! and, for the edges, with `--ingress` or `--egress` (customer frames also come or go by UDP on
//! the node's thread). Helper threads read the control connection, send heartbeats and serve state
//! transfers, and hand what needs the server to that thread. The heartbeat thread runs real-time
//! where the node may (`process::wake_on_time`), so that a busy host does not delay its beats.

use std::io;
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ftc_chain::middlebox::Direction;
use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_chain::spec::ChainSpec;
use ftc_chain::wire::NshRepr;
use ftc_node::ftmb::FtmbConfig;
use ftc_node::links::XdpLinks;
use ftc_node::nsh::{copy_into_spare, flow_of};
use ftc_node::server::LogsTooLong;
use ftc_node::udp::{
    recv_whole, widen_receive_buffer, Datagram, UdpTransport, MAX_DATAGRAM, RECV_BUFFER,
};
use ftc_node::xdp::{XdpConfig, XdpError};
use ftc_node::{Frame, Heads, Loss, Output, Packet, ServerConfig};
use ftc_replica::ReplicaError;

use super::edges::{Edge, EdgeKind, Edges, EdgesError, Port};
use super::heart::{Heart, Pulse};
use super::lanes::Lanes;
use super::loss::{BadLossRate, RingLoss};
use super::observe::{monotonic_ns, packet_id, Recorder};
use super::poll::{readable, wait_for, wait_readable};
use super::rejoin::{prepare, ControlLink};
use super::room::{check_edge, customer_room, Carrier, NoRoom};
use super::serving::{Serving, Spawn, Spawner};
use super::shape::{Shape, Undeployable};
use super::tally::{StatsLine, Tally, STATS_TARGET};
use crate::admission::FIRST_FRAME;
use crate::control::{
    read_message, write_message, ControlError, Key, Message, Nonce, Peer, CONTROL_MAX_BODY,
};
use crate::replacement::Fetched;
use crate::throttle::Throttle;
use crate::transfer;

/// Datagrams read from one socket per round at most.
const BATCH: usize = 64;

/// Customer frames' buffers kept for reuse at most (see [`Node::spare`]).
const SPARE_BUFFERS: usize = 1024;

/// How long a node the orchestrator launched (a replacement) keeps trying to reach it: a
/// replacement started behind a link that is down for a moment (a partition that also cut off
/// the server it replaces, in the same place) joins once the link is back, within the
/// orchestrator's start timeout (5 s by default), instead of failing at once and leaving the
/// recovery to wait for the next launch.
const LAUNCHED_CONNECT_PATIENCE: Duration = Duration::from_secs(4);

/// A control connection to the orchestrator at `addr`: one try of 2 s for a node started by
/// hand (an address nobody listens on is said at once); for one the orchestrator `launched`,
/// tries of up to 0.5 s, 100 ms apart, for up to [`LAUNCHED_CONNECT_PATIENCE`].
fn connect(addr: SocketAddr, launched: bool) -> Result<TcpStream, NodeError> {
    let deadline = Instant::now() + LAUNCHED_CONNECT_PATIENCE;
    loop {
        let patience = match launched {
            // A SYN lost on a link that was down is sent again only a second later: a new try
            // sends one sooner.
            true => deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500)),
            false => Duration::from_secs(2),
        };
        match TcpStream::connect_timeout(&addr, patience.max(Duration::from_millis(1))) {
            Ok(stream) => return Ok(stream),
            Err(source) if !launched || Instant::now() + RECONNECT_PAUSE >= deadline => {
                return Err(NodeError::Unreachable { addr, source });
            }
            Err(_) => std::thread::sleep(RECONNECT_PAUSE),
        }
    }
}

/// The pause between a launched node's tries to reach the orchestrator.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// How to run a node.
#[derive(Debug)]
pub struct NodeConfig {
    pub spec: ChainSpec,
    pub position: u16,
    /// The token of the launch that started this node, when the orchestrator's launcher did
    /// ([`LAUNCH_TOKEN_ENV`](super::launcher::LAUNCH_TOKEN_ENV)): its `Join` carries it.
    pub launch: Option<Nonce>,
    pub orchestrator: SocketAddr,
    pub key: Key,
    /// The data socket's address (port 0: any); peers send to it, so not an unspecified IP.
    pub data: SocketAddr,
    /// Server 0: where customer frames arrive.
    pub ingress: Option<SocketAddr>,
    /// The last server: where released customer frames go.
    pub egress: Option<SocketAddr>,
    /// Server 0: AF_XDP interfaces customer frames arrive on, by direction.
    pub edge_in: Vec<Edge>,
    /// The last server: AF_XDP interfaces released frames leave on, by direction.
    pub edge_out: Vec<Edge>,
    /// The sockets of the edges, and how AF_XDP ones are opened.
    pub edge_kind: EdgeKind,
    /// AF_XDP edges: how many queues of each interface to bind, from `xdp.queue` on.
    pub edge_queues: u32,
    pub xdp: XdpConfig,
    /// Frames between servers over AF_XDP on these links (each with the server at its other
    /// end; for FTC the link to the successor and the one from the predecessor) instead of UDP
    /// datagrams.
    pub links: Vec<(ServerId, String)>,
    /// The queues of each link to bind, from `xdp.queue` on: a server of several lanes gives
    /// each lane queues of its own when there are as many as lanes ([`XdpLinks::split`]).
    pub link_queues: u32,
    pub heartbeat: Duration,
    /// How long the node's thread, or a lane of its server, may make no progress before the
    /// node takes itself for hung ([`Pulse`]): it stops heartbeating (the
    /// orchestrator then replaces it as failed) and calls `on_stall`.
    pub stall: Duration,
    /// What a hung node does, with why, after its last heartbeat (on the heartbeat thread: the
    /// node's own thread is stuck). `ftc node` exits.
    pub on_stall: fn(&str),
    /// Test hook for the pulse's teeth: the node's thread hangs this long after it starts.
    /// Never set it otherwise.
    #[doc(hidden)]
    pub hang_after: Option<Duration>,
    /// The chance that a frame from another server is dropped on arrival ([`RingLoss`]: failure
    /// injection; 0 in production).
    pub ring_loss: f64,
    pub server: ServerConfig,
    /// Record what an output-commit check across processes needs into a file in this
    /// directory ([`observe`](super::observe)).
    pub observe: Option<PathBuf>,
    /// The FTMB baselines' settings (with `server.mode` FTMB or FTMB+snapshot).
    pub ftmb: FtmbConfig,
    /// Log a line of what the server counted this often ([`StatsLine`]); `None`: never.
    pub stats_every: Option<Duration>,
    /// How long a node that serves goes on without an orchestrator, joining again, before it
    /// exits ([`NodeError::Orphaned`]); zero: it exits as soon as it loses the orchestrator.
    pub headless_for: Duration,
}

/// Why a node stopped other than by the orchestrator's `Stop`.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Shape(#[from] Undeployable),
    #[error("position {position}: the chain has servers 0 to {last}")]
    NoSuchPosition { position: u16, last: usize },
    #[error("--{option} is only for server {only} (this is server {position})")]
    NotAnEnd {
        option: &'static str,
        only: u16,
        position: u16,
    },
    #[error("--observe records FTC's and NF's servers, not FTMB's")]
    ObserveFtmb,
    #[error("--data {0}: give the address peers reach this node at, not an unspecified one")]
    UnspecifiedData(SocketAddr),
    #[error("cannot bind the {what} at {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("cannot reach the orchestrator at {addr}: {source}")]
    Unreachable { addr: SocketAddr, source: io::Error },
    #[error(
        "the control connection to the orchestrator ended (it stopped or was killed, or cut \
         this node off: its log says which)"
    )]
    OrchestratorGone,
    #[error("lost the control connection to the orchestrator: {0}")]
    LostOrchestrator(ControlError),
    #[error("no orchestrator took this node back within --headless-for")]
    Orphaned,
    #[error("the orchestrator refused this node: {0}")]
    Refused(String),
    #[error(
        "this node beats every {node_ms} ms, the orchestrator expects a heartbeat every \
         {orchestrator_ms} ms: give the node --heartbeat-ms {orchestrator_ms}"
    )]
    OtherHeartbeat { node_ms: f64, orchestrator_ms: f64 },
    #[error(
        "the orchestrator's first message is {0}, not the challenge a Join answers (an \
         orchestrator of another control protocol version?)"
    )]
    NoChallenge(String),
    #[error(
        "the orchestrator's challenge does not verify: this node's secret file is not the \
         orchestrator's"
    )]
    WrongSecret,
    #[error(
        "the server failed: {0} (the node exits, so that the orchestrator replaces it, or halts a \
         deployment that keeps no replicas)"
    )]
    Failed(String),
    #[error("control connection to the orchestrator: {0}")]
    Control(#[from] ControlError),
    #[error(transparent)]
    Edges(#[from] EdgesError),
    #[error("ring links: {0}")]
    Links(#[from] XdpError),
    #[error("the ring's links carry frames of {max_frame} bytes: no room for a trailer budget of {budget} behind the {header}-byte NSH header")]
    LinksTooShort {
        max_frame: usize,
        header: usize,
        budget: usize,
    },
    #[error(transparent)]
    NoRoom(#[from] NoRoom),
    #[error(transparent)]
    LogsTooLong(#[from] LogsTooLong),
    #[error("--ring-loss: {0}")]
    RingLoss(#[from] BadLossRate),
    #[error("--observe {dir}: {source}")]
    Observe { dir: String, source: io::Error },
    #[error("cannot restore the replacement from the fetched state: {0}")]
    Restore(#[from] ReplicaError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// `ftc node`'s exit status when it has no orchestrator: none was reachable when it started,
/// the control connection closed or broke where the node could not serve on (it served not
/// yet, or `--headless-for` is zero), or no orchestrator took it back within `--headless-for`.
pub const EXIT_LOST_ORCHESTRATOR: u8 = 4;

/// `ftc node`'s exit status when the orchestrator refused it: declared failed and replaced, not
/// taken back, or not of the chain the orchestrator runs ([`NodeError::Refused`] says why).
pub const EXIT_REFUSED: u8 = 5;

impl NodeError {
    /// The exit status of a node that stopped so, where it has one of its own: losing the
    /// orchestrator and being refused by it are the orchestrator's doing, which a harness or a
    /// supervisor tells from the node's own failures (those exit with the CLI's status for an
    /// error).
    pub fn exit_status(&self) -> Option<u8> {
        match self {
            NodeError::Unreachable { .. }
            | NodeError::OrchestratorGone
            | NodeError::LostOrchestrator(_)
            | NodeError::Orphaned => Some(EXIT_LOST_ORCHESTRATOR),
            NodeError::Refused(_) => Some(EXIT_REFUSED),
            _ => None,
        }
    }
}

/// The chain's NSH service path id, the same in every node: FNV-1a of its name, 24 bits.
pub fn chain_id(spec: &ChainSpec) -> u32 {
    let hash = spec.chain.name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash & 0x00ff_ffff
}

/// What the helper threads hand to the server's thread.
#[derive(Debug)]
pub(super) enum NodeEvent {
    Control(Message),
    /// The control connection ended (with the error that ended it): the node's thread says
    /// whether to rejoin ([`super::rejoin`]).
    Closed(Option<ControlError>),
    /// An orchestrator took the node back.
    Rejoined,
    /// None did, by the deadline, or one refused it.
    NotRejoined(NodeError),
    /// A state transfer asks for `group` in `epoch` of the run `run`: the encoded `GroupState`,
    /// or `None`.
    Export {
        run: u64,
        epoch: u32,
        group: MbIndex,
        reply: Sender<Option<Vec<u8>>>,
    },
}

/// The server thread's queue, and the socket that wakes it from `ppoll`.
#[derive(Debug)]
pub(super) struct Inbox {
    tx: Sender<NodeEvent>,
    waker: UnixDatagram,
}

impl Inbox {
    pub(super) fn post(&self, event: NodeEvent) {
        let _ = self.tx.send(event);
        // Non-blocking: when the socket is full, a wake-up is pending anyway.
        let _ = self.waker.send(&[1]);
    }
}

/// Run a node until the orchestrator stops it.
pub fn run_node(config: &NodeConfig) -> Result<(), NodeError> {
    // Before any flow is hashed: a flow then has the same lane at every server.
    if !ftc_node::nsh::share_flow_seed(config.key.flow_seed()) {
        tracing::warn!("flows were hashed before the chain's flow key was set: lanes may differ");
    }
    let ring = config.spec.ring();
    let shape = Shape::of(&config.spec, config.server.mode)?;
    let last = shape.servers() - 1;
    if usize::from(config.position) > last {
        return Err(NodeError::NoSuchPosition {
            position: config.position,
            last,
        });
    }
    let me = ServerId(config.position);
    for (option, given, end) in [
        ("ingress", config.ingress.is_some(), shape.entry),
        ("egress", config.egress.is_some(), shape.exit),
        ("edge-in", !config.edge_in.is_empty(), shape.entry),
        ("edge-out", !config.edge_out.is_empty(), shape.exit),
    ] {
        if given && me != end {
            return Err(NodeError::NotAnEnd {
                option,
                only: end.0,
                position: me.0,
            });
        }
    }
    if config.observe.is_some() && config.server.mode.is_ftmb() {
        return Err(NodeError::ObserveFtmb);
    }
    if config.data.ip().is_unspecified() {
        return Err(NodeError::UnspecifiedData(config.data));
    }
    let bind_error = |what, addr| move |source| NodeError::Bind { what, addr, source };
    let transport = UdpTransport::bind(config.data, Vec::new(), chain_id(&config.spec), 0)
        .map_err(|e| match e {
            ftc_node::udp::UdpError::Io(source) => bind_error("data socket", config.data)(source),
            other => NodeError::Io(io::Error::other(other)),
        })?;
    let data = transport.local_addr().map_err(io::Error::other)?;
    let transfer_at = SocketAddr::new(data.ip(), 0);
    let listener =
        TcpListener::bind(transfer_at).map_err(bind_error("transfer listener", transfer_at))?;
    let ingress = match config.ingress {
        Some(addr) => {
            let socket = bind_ingress(addr).map_err(bind_error("ingress socket", addr))?;
            socket.set_nonblocking(true)?;
            Some(socket)
        }
        None => None,
    };
    let egress = match config.egress {
        Some(addr) => {
            let any = match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            let from = SocketAddr::new(any, 0);
            Some((
                UdpSocket::bind(from).map_err(bind_error("egress socket", from))?,
                addr,
            ))
        }
        None => None,
    };
    // The edges and the ring links open at once: a replacement's ports each wait for the
    // killed node's socket on their queue, and are ready together when those are gone.
    let (edges, links) = std::thread::scope(|s| {
        let edges = s.spawn(|| {
            Edges::open(
                &config.edge_in,
                &config.edge_out,
                config.edge_kind,
                config.xdp,
                config.edge_queues,
            )
        });
        let links = (!config.links.is_empty()).then(|| {
            let named: Vec<_> = config
                .links
                .iter()
                .map(|(peer, iface)| (*peer, iface.as_str()))
                .collect();
            XdpLinks::open(
                &named,
                config.xdp,
                config.link_queues,
                chain_id(&config.spec),
                0,
            )
        });
        (
            edges.join().expect("opening the edges does not panic"),
            links,
        )
    });
    let edges = edges?;
    let links = links.transpose()?;
    // A propagating frame (a retransmission's answer, resent logs, overflow) is all trailer:
    // it must fit the ring's links, or they drop it and what it carries never arrives.
    let max_frame = match &links {
        Some(links) => links.max_frame(),
        None => MAX_DATAGRAM,
    };
    let max_trailer = max_frame.saturating_sub(NshRepr::HEADER_LEN);
    if max_trailer < config.server.trailer_budget {
        return Err(NodeError::LinksTooShort {
            max_frame,
            header: NshRepr::HEADER_LEN,
            budget: config.server.trailer_budget,
        });
    }
    // A customer frame travels whole, beside its trailer (the budget, or its own logs where
    // longer): an edge that lets in longer ones than that is refused now rather than each
    // such frame lost on the links later.
    let trailer = config.server.longest_trailer(&config.spec);
    if let Some((port, customer)) = edges.longest_input() {
        let iface = port.iface();
        let carrier = match links {
            Some(_) => Carrier::Links,
            None => Carrier::Udp,
        };
        let mtu = ftc_node::xdp::iface_mtu(iface);
        check_edge(iface, mtu, customer, trailer, max_frame, carrier)?;
    }
    let heads = Heads::new(&config.spec, |m| m.threads).expect("a valid spec gives valid stores");
    // What would keep this node from serving is refused before it joins: an orchestrator
    // would otherwise count it as deployed, and wait for its replacement.
    let recorder = match &config.observe {
        Some(dir) => Some(
            Recorder::create(dir, me.0).map_err(|source| NodeError::Observe {
                dir: dir.display().to_string(),
                source,
            })?,
        ),
        None => None,
    };
    let server_config = ServerConfig {
        observe: config.server.observe || recorder.is_some(),
        nf_exit: Some(shape.exit),
        max_trailer: config.server.max_trailer.min(max_trailer),
        ..config.server.clone()
    };
    server_config.check_logs_fit_beside_packets(&config.spec)?;
    let control = connect(config.orchestrator, config.launch.is_some())?;
    prepare(&control)?;
    let writer = Mutex::new(control.try_clone()?);
    let key = &config.key;
    let (run, nonce) = challenge(&control, key, config.heartbeat)?;
    let join = Message::Join {
        position: me.0,
        pid: std::process::id(),
        chain: super::chain_fingerprint(&config.spec, config.server.mode),
        data,
        transfer: listener.local_addr()?,
        nonce,
        launch: config.launch,
        serving: None,
    };
    send(&writer, key, &join)?;
    tracing::info!("node {me}: joined with data {data}");
    let run = AtomicU64::new(run);
    let routed = AtomicU32::new(0);
    let (wake_rx, wake_tx) = UnixDatagram::pair()?;
    wake_rx.set_nonblocking(true)?;
    wake_tx.set_nonblocking(true)?;
    let (tx, events) = crossbeam_channel::unbounded();
    let inbox = Inbox { tx, waker: wake_tx };
    let (rejoin, rejoins) = crossbeam_channel::bounded(1);
    let loss = RingLoss::new(config.ring_loss, fastrand::u64(..))?;
    let epoch = AtomicU32::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let pulse = Pulse::new(start);
    std::thread::scope(|s| {
        let spawn = |lanes, links| Lanes::start(s, lanes, links, &heads, &inbox.waker, start);
        let link = ControlLink {
            orchestrator: config.orchestrator,
            key,
            heartbeat: config.heartbeat,
            join,
            writer: &writer,
            run: &run,
            epoch: &epoch,
            routed: &routed,
            stop: &stop,
        };
        let (inbox, rejoins) = (&inbox, &rejoins);
        s.spawn(move || link.run(control, inbox, rejoins));
        s.spawn(|| {
            Heart {
                writer: &writer,
                key,
                run: &run,
                me,
                epoch: &epoch,
                stop: &stop,
                pulse: &pulse,
                waker: &inbox.waker,
            }
            .beat(config.heartbeat, config.stall, config.on_stall);
        });
        s.spawn(|| {
            let export = |run, epoch, group| {
                let (reply, answer) = crossbeam_channel::bounded(1);
                inbox.post(NodeEvent::Export {
                    run,
                    epoch,
                    group,
                    reply,
                });
                answer.recv_timeout(Duration::from_secs(2)).ok().flatten()
            };
            // Anyone who reaches the port causes these as fast as they connect.
            let refused = Throttle::new();
            let refuse = |e: &ControlError| match e {
                ControlError::Closed => {
                    tracing::debug!("node {me}: a state transfer connection closed unasked");
                }
                e => {
                    if let Some(more) = refused.admit(Instant::now()) {
                        tracing::warn!("node {me}: refused a state transfer request: {e}{more}");
                    }
                }
            };
            if let Err(e) = transfer::serve(&listener, key, &run, &stop, export, refuse) {
                tracing::error!("node {me}: state transfers stopped: {e}");
            }
        });
        let mut node = Node {
            me,
            ring,
            partitions: config.spec.chain.partitions,
            key,
            heads: &heads,
            server_config: &server_config,
            ftmb: &config.ftmb,
            servers: shape.servers(),
            pulse: &pulse,
            idle: config.heartbeat.as_nanos() as u64,
            hang_after: config.hang_after,
            spawn: &spawn,
            transport,
            links,
            loss,
            ingress,
            customer_room: customer_room(max_frame, trailer),
            ingress_too_long: 0,
            told_retain_full: false,
            egress,
            edges,
            spare: Vec::with_capacity(SPARE_BUFFERS),
            writer: &writer,
            run: &run,
            epoch: &epoch,
            routed: &routed,
            rejoin,
            headless_for: config.headless_for,
            orchestrator: config.orchestrator,
            headless_since: None,
            server: None,
            serving: false,
            fetched: Fetched::default(),
            recorder,
            unsent: Unsent::default(),
            stats: config
                .stats_every
                .map(|every| StatsLine::new(every, pulse.now())),
        };
        // However the node's loop ends (a panic included), its heartbeats and control reader
        // end with it: a node whose data path is gone must not look alive.
        let _ending = Ending {
            stop: &stop,
            writer: &writer,
        };
        let result = node.run(&events, &wake_rx);
        tracing::info!(
            "node {me}: data path {:?}, ring links {:?}, the kernel's {:?}, frames dropped by --ring-loss {}, customer datagrams too long {}, edges {:?}, {:?}, server {:?}",
            node.transport.stats(),
            node.links.as_ref().map(XdpLinks::stats),
            node.links.as_ref().map(XdpLinks::kernel_stats),
            node.loss.dropped(),
            node.ingress_too_long,
            node.edges.stats(),
            node.unsent,
            node.server.as_mut().map(Serving::summary)
        );
        result
    })
}

/// Stops a node's helper threads (heartbeats, control reader, transfer service) when dropped.
struct Ending<'a> {
    stop: &'a AtomicBool,
    /// The control connection of the moment (the reader reads a clone of it).
    writer: &'a Mutex<TcpStream>,
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = writer.shutdown(Shutdown::Both);
    }
}

/// The ingress socket. A replacement of server 0 may start before the node it replaces has
/// quite gone (a node declared failed exits once the orchestrator cuts it off): the address
/// frees up then.
fn bind_ingress(addr: SocketAddr) -> io::Result<UdpSocket> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match UdpSocket::bind(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(socket) => {
                widen_receive_buffer(&socket)?;
                return Ok(socket);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The orchestrator's run and the nonce the node's `Join` must carry: the
/// [`Challenge`](Message::Challenge) the control connection starts with, read (no byte beyond
/// it) within [`FIRST_FRAME`].
pub(super) fn challenge(
    control: &TcpStream,
    key: &Key,
    heartbeat: Duration,
) -> Result<(u64, Nonce), NodeError> {
    control.set_read_timeout(Some(FIRST_FRAME))?;
    let first = read_message(&mut &*control, key, CONTROL_MAX_BODY);
    control.set_read_timeout(None)?;
    match first {
        Ok(Message::Challenge { heartbeat_ns, .. })
            if u128::from(heartbeat_ns).abs_diff(heartbeat.as_nanos()) > 1_000 =>
        {
            // Within a microsecond: both sides round their milliseconds to nanoseconds.
            Err(NodeError::OtherHeartbeat {
                node_ms: heartbeat.as_secs_f64() * 1e3,
                orchestrator_ms: heartbeat_ns as f64 / 1e6,
            })
        }
        Ok(Message::Challenge { run, nonce, .. }) => Ok((run, nonce)),
        Ok(Message::Refused { reason }) => Err(NodeError::Refused(reason)),
        Ok(other) => Err(NodeError::NoChallenge(format!("{other:?}"))),
        Err(ControlError::Closed) => Err(NodeError::OrchestratorGone),
        Err(ControlError::BadTag) => Err(NodeError::WrongSecret),
        Err(e) => Err(e.into()),
    }
}

/// Send `msg` to the orchestrator.
fn send(writer: &Mutex<TcpStream>, key: &Key, msg: &Message) -> io::Result<()> {
    write_message(&mut *writer.lock().expect("no holder panics"), msg, key)
}

/// Up to [`BATCH`] customer datagrams of the ingress `socket`, read into `buf` (of
/// [`RECV_BUFFER`] bytes), each handed to `enter`; one longer than `room` bytes is dropped and
/// counted in `too_long` instead: its frame between servers would not fit the links (no MTU
/// bounds what enters by UDP, as an edge's does: [`super::room`]), or, longer than
/// [`MAX_DATAGRAM`], the read cut it short (the chain would carry a customer frame's first part
/// as if it were the frame).
fn read_ingress(
    socket: &UdpSocket,
    buf: &mut [u8],
    room: usize,
    too_long: &mut u64,
    mut enter: impl FnMut(&[u8]),
) -> io::Result<()> {
    for _ in 0..BATCH {
        match recv_whole(socket, buf) {
            Ok((Some(len), _)) if len <= room => enter(&buf[..len]),
            Ok(_) => *too_long += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A customer frame that arrived (of direction `dir`) as a packet, in a buffer from `spare`.
pub(super) fn customer_packet(
    bytes: &[u8],
    dir: Direction,
    spare: &mut Vec<Vec<u8>>,
    observed: bool,
) -> Packet<u32> {
    let copy = copy_into_spare(bytes, spare);
    Packet {
        handle: handle_of(&copy, observed),
        flow: flow_of(&copy),
        dir,
        bytes: copy,
    }
}

/// Says once (`told`) that `who` lost a customer packet at the retain limit
/// ([`ServerConfig::retain_limit`]): its successor covers none of its logs.
pub(super) fn tell_retain_full(who: std::fmt::Arguments<'_>, told: &mut bool) {
    if !std::mem::replace(told, true) {
        tracing::warn!(
            "{who}: retains as many logs as it keeps while none is covered by a commit vector: its \
             successor acknowledges nothing (its data path cut while it still beats, or far too \
             slow); customer packets are lost until it does (retain_overflow in the summary)"
        );
    }
}

/// Keep a buffer of a frame that left (its customer frame's, or its message's) for the next
/// customer frame or frame off the wire, up to [`SPARE_BUFFERS`] (one that never held anything
/// is no use).
pub(super) fn keep(spare: &mut Vec<Vec<u8>>, bytes: Vec<u8>) {
    if spare.len() < SPARE_BUFFERS && bytes.capacity() > 0 {
        spare.push(bytes);
    }
}

/// The server's thread.
struct Node<'a, 'h> {
    me: ServerId,
    ring: Ring,
    partitions: u32,
    key: &'a Key,
    heads: &'h Heads,
    server_config: &'a ServerConfig,
    ftmb: &'a FtmbConfig,
    /// The deployment's positions ([`Shape::servers`]).
    servers: usize,
    /// When the node's thread, and every lane, last made progress (its heartbeats need it);
    /// its clock is the node's.
    pulse: &'a Pulse,
    /// Nanoseconds a lane may sleep before the node's thread nudges it, to show it is alive:
    /// a heartbeat period.
    idle: u64,
    /// [`NodeConfig::hang_after`].
    hang_after: Option<Duration>,
    /// Starts the threads of a server of several lanes.
    spawn: Spawn<'a, 'h>,
    transport: UdpTransport,
    /// With `--ring-next`/`--ring-prev` or `--link`: frames between servers go over these
    /// instead.
    links: Option<XdpLinks>,
    /// Failure injection: frames from other servers dropped on arrival.
    loss: RingLoss,
    ingress: Option<UdpSocket>,
    /// The longest customer frame that enters: one that fits frames between servers beside its
    /// trailer ([`customer_room`], [`ServerConfig::longest_trailer`]).
    customer_room: usize,
    /// Customer datagrams longer than `customer_room` (or than [`MAX_DATAGRAM`], cut short)
    /// the ingress socket dropped ([`read_ingress`]).
    ingress_too_long: u64,
    /// Whether it said that its server lost a packet at the retain limit ([`tell_retain_full`]).
    told_retain_full: bool,
    egress: Option<(UdpSocket, SocketAddr)>,
    edges: Edges,
    /// Buffers of frames that left this server (their customer frames', their messages'),
    /// reused for the next customer frames that enter and the next frames off the wire (so
    /// that a steady flow allocates none).
    spare: Vec<Vec<u8>>,
    writer: &'a Mutex<TcpStream>,
    /// The orchestrator's run, from its challenge (the latest one's, after a rejoin): state
    /// transfers of other runs get nothing, and an `Assign` or `Recover` of another run is
    /// ignored.
    run: &'a AtomicU64,
    /// The epoch the node is in (heartbeats carry it).
    epoch: &'a AtomicU32,
    /// The epoch of its last `Assign` or `Reroute`, which a rejoin names.
    routed: &'a AtomicU32,
    /// Tells the control thread, once the connection broke, to rejoin until then.
    rejoin: Sender<Instant>,
    /// [`NodeConfig::headless_for`].
    headless_for: Duration,
    /// The orchestrator's address, for the log.
    orchestrator: SocketAddr,
    /// Since when it serves without an orchestrator (its clock), if it does.
    headless_since: Option<u64>,
    /// Set on `Assign`, or once a replacement restored its state.
    /// Customer packets' handles are their ids ([`packet_id`]) when observed, else 0.
    server: Option<Serving<'h>>,
    /// Whether frames flow: after `Assign`, or a replacement's `Reroute`.
    serving: bool,
    /// A replacement's state, as it arrives.
    fetched: Fetched,
    /// With `--observe`: the records of this node's stores, commits and releases.
    recorder: Option<Recorder>,
    /// Frames and released packets this thread could not send, for its last log line.
    unsent: Unsent,
    /// With `--stats-every`: when the next stats line is due, and what the last one counted.
    stats: Option<StatsLine>,
}

/// What a node's thread could not send (the counters below the transports count the rest:
/// ring links and edges their refused frames).
#[derive(Debug, Default)]
struct Unsent {
    /// Frames to other servers the UDP data socket refused (a full send buffer, say).
    frames: u64,
    /// Released packets the egress socket refused.
    egress: u64,
    /// Released packets no edge and no egress socket takes (of a direction nobody listens on).
    unrouted: u64,
}

impl<'a, 'h> Node<'a, 'h> {
    fn now(&self) -> u64 {
        self.pulse.now()
    }

    /// The run of the orchestrator it follows.
    fn run_id(&self) -> u64 {
        self.run.load(Ordering::Acquire)
    }

    /// Serve until `Stop`.
    fn run(&mut self, events: &Receiver<NodeEvent>, waker: &UnixDatagram) -> Result<(), NodeError> {
        /// Where the edge-in ports' entries start in the poll set.
        const EDGES: usize = 3;
        let mut buf = vec![0; RECV_BUFFER];
        let mut polls = Vec::new();
        loop {
            if self
                .hang_after
                .is_some_and(|t| self.now() >= t.as_nanos() as u64)
            {
                tracing::warn!("node {}: its thread hangs (a test hook)", self.me.0);
                loop {
                    std::thread::park();
                }
            }
            let server = self.server.as_ref().filter(|_| self.serving);
            let unsent = self.edges.unsent() || self.links.as_ref().is_some_and(XdpLinks::unsent);
            // A congested chain takes no customer frames: they wait in the socket or rx ring.
            // Lanes do not say when they stop being congested (one that reads and sends on its
            // own links wakes nobody): look again soon.
            let accepting = server.is_some_and(|s| !s.congested());
            let soon = unsent || matches!(server, Some(Serving::Lanes(_))) && !accepting;
            let at = server.and_then(Serving::poll_timeout);
            let at = at
                .into_iter()
                .chain(self.stats.as_ref().map(StatsLine::due))
                .min();
            let timeout = wait_for(self.now(), at, soon);
            polls.clear();
            polls.push(readable(Some(waker.as_fd())));
            polls.push(readable(server.map(|_| self.transport.as_fd())));
            let ingress = self.ingress.as_ref().filter(|_| accepting);
            polls.push(readable(ingress.map(AsFd::as_fd)));
            for fd in self.edges.inputs().flat_map(Port::fds) {
                polls.push(readable(Some(fd).filter(|_| accepting)));
            }
            let links = polls.len();
            for fd in self.links.iter().flat_map(XdpLinks::fds) {
                polls.push(readable(server.map(|_| fd)));
            }
            wait_readable(&mut polls, timeout)?;
            let (frames, customers) = (polls[1].revents != 0, polls[2].revents != 0);
            let linked = polls[links..].iter().any(|p| p.revents != 0);
            while waker.recv(&mut buf).is_ok() {}
            for event in events.try_iter() {
                if self.handle(event)? {
                    return Ok(());
                }
            }
            let t = self.now();
            let at = self.server.as_ref().map_or(t, |s| s.pulse(t, self.idle));
            self.pulse.beat(at);
            if let Some(stats) = self.stats.as_mut().filter(|s| s.due() <= t) {
                let sockets = |t: Tally| t.with_sockets(self.links.as_ref(), Some(&self.edges));
                let tally = self.server.as_ref().map(Serving::tally).map(sockets);
                let line = stats.line(t, tally);
                tracing::info!(target: STATS_TARGET, "{}: {line}", self.me);
            }
            // A server that failed drops everything from then on, while the heartbeats (from
            // threads of their own) would keep it in the chain: it leaves, and is replaced.
            if let Some(why) = self.server.as_ref().and_then(Serving::error) {
                return Err(NodeError::Failed(why));
            }
            let Some(server) = self.server.as_mut().filter(|_| self.serving) else {
                continue;
            };
            let observed = self.recorder.is_some();
            let (loss, spare) = (&mut self.loss, &mut self.spare);
            for _ in 0..if frames { BATCH } else { 0 } {
                match self.transport.recv(Some(Duration::ZERO), spare) {
                    Ok(Some(Datagram::Frame { .. })) if loss.drops() => {}
                    Ok(Some(Datagram::Frame { from, received })) => {
                        server.handle_frame(t, from, handled(received.frame, observed));
                    }
                    Ok(Some(Datagram::Dropped)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("node {}: data socket: {e}", self.me);
                        break;
                    }
                }
            }
            if let Some(links) = self.links.as_mut().filter(|_| linked) {
                let received = links.recv_batch(spare, |from, r| {
                    if !loss.drops() {
                        server.handle_frame(t, from, handled(r.frame, observed));
                    }
                });
                if let Err(e) = received {
                    tracing::warn!("node {}: ring links: {e}", self.me);
                }
            }
            let mut enter = |bytes: &[u8], dir| {
                let packet = customer_packet(bytes, dir, spare, observed);
                // A frame the forwarder sanitized away just leaves.
                if let Err(packet) = server.handle_ingress(t, packet) {
                    keep(spare, packet.bytes);
                }
            };
            if let Some(socket) = self.ingress.as_ref().filter(|_| customers) {
                let too_long = &mut self.ingress_too_long;
                let room = self.customer_room;
                let read = read_ingress(socket, &mut buf, room, too_long, |bytes| {
                    enter(bytes, Direction::Outbound);
                });
                if let Err(e) = read {
                    tracing::warn!("node {}: ingress socket: {e}", self.me);
                }
            }
            // A port is ready when one of its sockets (one per queue) is.
            let mut ready = polls[EDGES..links].iter().map(|p| p.revents != 0);
            for (port, dir) in self.edges.inputs_mut() {
                let sockets = port.fds().count();
                if !ready.by_ref().take(sockets).fold(false, |any, r| any | r) {
                    continue;
                }
                if let Err(e) = port.recv_batch(|bytes| enter(bytes, dir)) {
                    tracing::warn!("node {}: edge-in {}: {e}", self.me, port.iface());
                }
            }
            if server.poll_timeout().is_some_and(|at| at <= t) {
                server.handle_timeout(t);
            }
            server.end_batch(t);
            self.flush();
            let surplus = self.server.as_mut().and_then(Serving::take_surplus);
            for buffer in surplus.into_iter().flatten() {
                keep(&mut self.spare, buffer);
            }
        }
    }

    /// Carry out the server's outputs (recorded first, when observed).
    fn flush(&mut self) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        if let Some(recorder) = self.recorder.as_mut() {
            let outputs: Vec<_> = std::iter::from_fn(|| server.poll_output()).collect();
            let replicas = server.replicas();
            if let Err(e) = record(
                recorder, self.heads, &self.ring, self.me, &replicas, &outputs,
            ) {
                tracing::error!("node {}: --observe: {e}; recording stops", self.me);
                self.recorder = None;
            }
            for out in outputs {
                self.act(out);
            }
        } else {
            while let Some(out) = self.server.as_mut().and_then(Serving::poll_output) {
                self.act(out);
            }
        }
        self.edges.flush();
        if let Some(Err(e)) = self.links.as_mut().map(XdpLinks::flush) {
            tracing::debug!("node {}: ring links: {e}", self.me);
        }
    }

    /// Carry out one of the server's outputs.
    fn act(&mut self, out: Output<u32>) {
        match out {
            Output::Send { to, frame } => {
                let hop = hop_of(to);
                let sent = match self.links.as_mut() {
                    Some(links) => links.send(to, hop, &frame).map_err(|e| e.to_string()),
                    None => self
                        .transport
                        .send(to, hop, &frame)
                        .map_err(|e| e.to_string()),
                };
                if let Err(e) = sent {
                    // Over the links, the links count it too (`not_sent`).
                    self.unsent.frames += u64::from(self.links.is_none());
                    tracing::debug!("node {}: sending to {to}: {e}", self.me);
                }
                if let Some(packet) = frame.packet {
                    keep(&mut self.spare, packet.bytes);
                }
                let msg = match self.server.as_mut() {
                    Some(server) => server.recycle(frame.msg),
                    None => Some(frame.msg),
                };
                if let Some(msg) = msg {
                    keep(&mut self.spare, msg);
                }
            }
            Output::Release { packet, .. } => {
                if let Some((socket, to)) = &self.egress {
                    if let Err(e) = socket.send_to(&packet.bytes, to) {
                        self.unsent.egress += 1;
                        tracing::debug!("node {}: egress to {to}: {e}", self.me);
                    }
                } else if !self.edges.sends(packet.dir) {
                    self.unsent.unrouted += 1;
                }
                self.edges.send(packet.dir, packet.flow, &packet.bytes);
                keep(&mut self.spare, packet.bytes);
            }
            Output::Lost {
                why: Loss::RetainFull,
                ..
            } => tell_retain_full(format_args!("node {}", self.me), &mut self.told_retain_full),
            // Lost (a fence, a full queue), dropped by a middlebox: it leaves the chain here.
            Output::Dropped { .. }
            | Output::Lost { .. }
            | Output::Committed { .. }
            | Output::AtBuffer { .. } => {}
        }
    }

    /// How a server of several lanes starts them: each with its share of the ring links and
    /// the edges, unless the node records what it sends (`--observe`); the edges also stay
    /// when customer frames come or go by UDP too (`--ingress`, `--egress`).
    fn spawner(&mut self) -> Spawner<'_, 'a, 'h> {
        let own = self.recorder.is_none();
        let udp = self.ingress.is_some() || self.egress.is_some();
        Spawner {
            spawn: self.spawn,
            links: own.then_some(&mut self.links),
            edges: (own && !udp).then_some(&mut self.edges),
            loss: &mut self.loss,
        }
    }

    fn set_epoch(&mut self, epoch: u32) {
        self.epoch.store(epoch, Ordering::Release);
        self.transport.set_epoch(epoch);
        if let Some(links) = self.links.as_mut() {
            links.set_epoch(epoch);
        }
    }

    /// Frames go to (and come from) `peers` in `epoch` from now on.
    fn route(&mut self, epoch: u32, peers: &[Peer]) {
        let nowhere = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        let mut addrs = vec![nowhere; self.servers];
        for p in peers {
            if let Some(a) = addrs.get_mut(usize::from(p.position)) {
                *a = p.data;
            }
        }
        self.transport.set_peers(addrs);
        self.set_epoch(epoch);
        self.routed.store(epoch, Ordering::Release);
    }

    /// The control connection ended (`why`, if by an error): a node that serves serves on and
    /// rejoins ([`super::rejoin`]), unless `--headless-for` is zero; one that does not yet (not
    /// assigned, or a replacement still fetching) ends with the connection's end.
    fn lost_orchestrator(&mut self, why: Option<ControlError>) -> Result<bool, NodeError> {
        let end = why.map_or(NodeError::OrchestratorGone, NodeError::LostOrchestrator);
        if self.server.is_none() || self.headless_for.is_zero() {
            return Err(end);
        }
        let deadline = Instant::now() + self.headless_for;
        if self.rejoin.send(deadline).is_err() {
            return Err(end);
        }
        self.headless_since = Some(self.now());
        tracing::warn!(
            "node {}: lost the orchestrator ({end}); serving on in epoch {}, joining it again at \
             {} for up to {:.1?}",
            self.me,
            self.epoch.load(Ordering::Acquire),
            self.orchestrator,
            self.headless_for
        );
        Ok(false)
    }

    /// One event; whether the node stops.
    fn handle(&mut self, event: NodeEvent) -> Result<bool, NodeError> {
        match event {
            NodeEvent::Closed(why) => self.lost_orchestrator(why),
            NodeEvent::Rejoined => {
                let since = self.headless_since.take().unwrap_or(0);
                tracing::warn!(
                    "node {}: rejoined the orchestrator at {} after {:.1} ms without one",
                    self.me,
                    self.orchestrator,
                    self.now().saturating_sub(since) as f64 / 1e6
                );
                Ok(false)
            }
            NodeEvent::NotRejoined(e) => Err(e),
            NodeEvent::Export {
                run,
                epoch,
                group,
                reply,
            } => {
                let _ = reply.send(self.export(run, epoch, group));
                Ok(false)
            }
            NodeEvent::Control(msg) => self.control(msg),
        }
    }

    /// A group's state for a transfer of `epoch` in the run `run`. A request of a newer epoch
    /// than this node's fences first: the orchestrator declared that epoch, its `Fence` is still
    /// on its way, and the state must not move on after it is exported. A request of another
    /// run (an earlier run's, replayed) gets nothing, and fences nothing.
    fn export(&mut self, run: u64, epoch: u32, group: MbIndex) -> Option<Vec<u8>> {
        let current = self.epoch.load(Ordering::Acquire);
        if self.run_id() != run || epoch < current || self.server.is_none() {
            return None;
        }
        if epoch > current {
            self.fence(epoch);
        }
        self.server.as_ref()?.export_group_bytes(group)
    }

    fn fence(&mut self, epoch: u32) {
        self.set_epoch(epoch);
        if let Some(server) = self.server.as_mut() {
            server.fence(epoch);
        }
        self.flush();
    }

    /// A message from the orchestrator; whether the node stops.
    fn control(&mut self, msg: Message) -> Result<bool, NodeError> {
        let me = self.me;
        match msg {
            Message::Assign {
                run,
                epoch,
                position,
                peers,
            } if position == me.0 && run == self.run_id() && self.server.is_none() => {
                // First: lanes that take their share of the links take it in this epoch.
                self.route(epoch, &peers);
                let now = self.now();
                self.server = Some(Serving::assigned(
                    self.heads,
                    self.ring,
                    me,
                    self.partitions,
                    self.server_config,
                    self.ftmb,
                    now,
                    self.spawner(),
                )?);
                self.serving = true;
                tracing::info!("node {me}: serving in epoch {epoch}");
            }
            Message::Fence { epoch, .. } => self.fence(epoch),
            Message::Recover { run, epoch, fetch }
                if run == self.run_id() && self.server.is_none() =>
            {
                // Fetches end by their own timeouts; restoring a large state takes a while.
                let pulse = self.pulse;
                let _busy = pulse.busy();
                self.set_epoch(epoch);
                let (writer, key) = (self.writer, self.key);
                let done = self.fetched.fetch(key, run, epoch, &fetch, |f, e| {
                    tracing::warn!(
                        "node {me}: fetching m{} from server {}: {e}",
                        f.group,
                        f.source
                    );
                    let failed = Message::TransferFailed {
                        run,
                        position: me.0,
                        epoch,
                        group: f.group,
                        source: f.source,
                    };
                    let _ = send(writer, key, &failed);
                });
                if done {
                    let fetched = std::mem::take(&mut self.fetched);
                    let bytes = fetched.bytes();
                    let now = self.now();
                    let server = fetched.restore(
                        self.heads,
                        self.ring,
                        me,
                        self.partitions,
                        self.server_config.clone(),
                        now,
                    )?;
                    // The other lanes beside the restored one, over its replica stores.
                    let more = self.heads.head_lanes(&self.ring, me, 1).into_iter();
                    let mut lanes =
                        ftc_node::lanes::join(server, more, self.partitions, self.server_config)
                            .expect("the spec's partition count is valid");
                    // Quiescent until the reroute, as the fenced servers around it: lanes that
                    // own links and edges serve on their own threads from now on, and would
                    // take customer packets and send them to successors that drop them.
                    for lane in &mut lanes {
                        lane.fence();
                    }
                    self.server = Some(Serving::of_lanes(lanes, self.spawner())?);
                    send(
                        writer,
                        key,
                        &Message::Ready {
                            run,
                            position: me.0,
                            epoch,
                            bytes,
                        },
                    )?;
                    tracing::info!("node {me}: restored {bytes} bytes of state, ready");
                }
            }
            Message::Reroute { epoch, peers } if self.server.is_some() => {
                self.route(epoch, &peers);
                let now = self.now();
                if let Some(server) = self.server.as_mut() {
                    server.resume(now, epoch);
                }
                self.serving = true;
                self.flush();
                let resumed = Message::Resumed {
                    run: self.run_id(),
                    position: me.0,
                    epoch,
                };
                // A connection that broke meanwhile is its reader's to report: the node serves
                // on, and its rejoin, naming the routing it follows, tells what this would.
                if let Err(e) = send(self.writer, self.key, &resumed) {
                    tracing::debug!("node {me}: cannot report {resumed:?}: {e}");
                }
            }
            Message::Stop => return Ok(true),
            Message::Refused { reason } => return Err(NodeError::Refused(reason)),
            other => tracing::warn!("node {me}: ignored an unexpected control message: {other:?}"),
        }
        Ok(false)
    }
}

/// What a frame to server `to` says of its receiver: its position from the forwarder.
pub(super) fn hop_of(to: ServerId) -> u8 {
    u8::try_from(to.0).unwrap_or(u8::MAX)
}

/// A customer packet's handle: its id when observed ([`packet_id`]), else 0.
fn handle_of(bytes: &[u8], observed: bool) -> u32 {
    if observed {
        packet_id(bytes).unwrap_or(0)
    } else {
        0
    }
}

/// A frame off the wire with its packet's handle ([`handle_of`]).
pub(super) fn handled(frame: Frame<()>, observed: bool) -> Frame<u32> {
    Frame {
        packet: frame.packet.map(|p| Packet {
            handle: handle_of(&p.bytes, observed),
            flow: p.flow,
            dir: p.dir,
            bytes: p.bytes,
        }),
        flags: frame.flags,
        msg: frame.msg,
    }
}

/// Records what the outputs of a batch and the server's stores (its head's, and `replicas`)
/// say, into the file, before any of the outputs is carried out.
fn record(
    recorder: &mut Recorder,
    heads: &Heads,
    ring: &Ring,
    me: ServerId,
    replicas: &[(MbIndex, Arc<ftc_stm::Store>)],
    outputs: &[Output<u32>],
) -> io::Result<()> {
    let head = ring
        .middlebox_at(me)
        .map(|mb| (mb, &heads.stores[usize::from(mb.0)]));
    let replicas = replicas.iter().map(|(mb, s)| (*mb, &**s));
    let t = recorder.stores(head.into_iter().chain(replicas), monotonic_ns)?;
    for out in outputs {
        match out {
            Output::Committed {
                handle,
                middlebox,
                kind,
                deps,
            } => recorder.commit(t, *handle, MbIndex(*middlebox), *kind, deps)?,
            Output::Release { packet, .. } => recorder.release(t, packet.handle)?,
            _ => {}
        }
    }
    recorder.flush()
}

#[cfg(test)]
mod tests;
