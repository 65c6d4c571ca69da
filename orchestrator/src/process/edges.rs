//! A node's edges (`ftc node --edge-in`/`--edge-out`): the interfaces where customer frames
//! enter the chain at server 0 and leave it at the last server, each an AF_XDP socket
//! ([`XdpPort`]) or, where AF_XDP is not available, a raw packet socket ([`PacketPort`]; see
//! [`EdgeKind`]). An edge-in interface says the direction of every frame that arrives on it (the
//! forwarder classifies by port); an edge-out interface sends the released frames of one
//! direction, unchanged (the chain is a bump in the wire at L2). An interface named by several
//! edges is opened once. An AF_XDP edge binds one or more queues of its interface (a NIC with
//! RSS spreads frames over several), a socket each; a flow's released frames all leave through
//! one of them, so that they stay in order. A server of several lanes may share the queues out
//! among its lanes ([`Edges::split`]), each then reading and sending on its own.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::str::FromStr;

use ftc_chain::middlebox::Direction;
use ftc_node::links::share_out;
use ftc_node::packet::{PacketError, PacketPort, PacketStats};
use ftc_node::xdp::{
    open_each, KernelStats, SendError, XdpConfig, XdpError, XdpPort, XdpStats, RELEASE_WAIT,
};

/// The sockets that carry a node's edges (`ftc node --edge-kind`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EdgeKind {
    /// AF_XDP sockets.
    #[default]
    Xdp,
    /// Raw packet sockets (AF_PACKET), where AF_XDP is not available.
    Packet,
}

impl EdgeKind {
    /// Its `--edge-kind` value.
    pub fn name(self) -> &'static str {
        match self {
            EdgeKind::Xdp => "xdp",
            EdgeKind::Packet => "packet",
        }
    }
}

impl FromStr for EdgeKind {
    type Err = String;

    fn from_str(text: &str) -> Result<EdgeKind, String> {
        match text {
            "xdp" => Ok(EdgeKind::Xdp),
            "packet" => Ok(EdgeKind::Packet),
            _ => Err(format!("{text:?}: expected `xdp` or `packet`")),
        }
    }
}

/// An edge's sockets: AF_XDP ones on queues of its interface (at least one), or a packet socket.
#[derive(Debug)]
pub enum Port {
    Xdp(Vec<XdpPort>),
    Packet(PacketPort),
}

/// Why a released frame did not go out on an edge-out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unsent {
    /// Longer than the interface lets out: every frame as long is dropped too.
    TooLong(String),
    /// Anything else (no free transmit frame: a passing state).
    Other(String),
}

/// An edge's counters: an AF_XDP edge's by queue, each with the kernel's of its socket (its
/// drops on receive among them; zero where they cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortStats {
    Xdp(Vec<(XdpStats, KernelStats)>),
    Packet(PacketStats),
}

impl Port {
    /// The interface's name.
    pub fn iface(&self) -> &str {
        match self {
            Port::Xdp(queues) => queues[0].iface(),
            Port::Packet(p) => p.iface(),
        }
    }

    /// Hand the frames received to `f`, in order of arrival on each queue; how many.
    pub fn recv_batch(&mut self, mut f: impl FnMut(&[u8])) -> io::Result<usize> {
        match self {
            Port::Xdp(queues) => queues.iter_mut().map(|q| q.recv_batch(&mut f)).sum(),
            Port::Packet(p) => p.recv_batch(f),
        }
    }

    /// The longest customer frame the port takes in: an AF_XDP socket's longest tagged frame
    /// ([`XdpPort::max_tagged`]), a packet socket's longest ([`PacketPort::max_frame`]).
    pub fn max_received(&self) -> usize {
        match self {
            Port::Xdp(queues) => queues.iter().map(XdpPort::max_tagged).max().unwrap_or(0),
            Port::Packet(p) => p.max_frame(),
        }
    }

    /// Queue `frame` of flow `flow` for sending (on the flow's queue).
    fn send(&mut self, flow: u64, frame: &[u8]) -> Result<(), Unsent> {
        match self {
            Port::Xdp(queues) => {
                let i = (flow % queues.len() as u64) as usize;
                queues[i].send(frame).map_err(|e| match e {
                    SendError::TooLarge { .. } => Unsent::TooLong(e.to_string()),
                    SendError::Full => Unsent::Other(e.to_string()),
                })
            }
            Port::Packet(p) => p.send(frame).map_err(|e| {
                if e.raw_os_error() == Some(libc::EMSGSIZE) {
                    Unsent::TooLong(format!("a frame of {} bytes: {e}", frame.len()))
                } else {
                    Unsent::Other(e.to_string())
                }
            }),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Port::Xdp(queues) => queues.iter_mut().try_for_each(XdpPort::flush),
            // Each frame went out as it was sent.
            Port::Packet(_) => Ok(()),
        }
    }

    fn unsent(&self) -> bool {
        match self {
            Port::Xdp(queues) => queues.iter().any(XdpPort::unsent),
            Port::Packet(_) => false,
        }
    }

    fn stats(&self) -> PortStats {
        match self {
            Port::Xdp(queues) => PortStats::Xdp(
                queues
                    .iter()
                    .map(|q| (q.stats(), q.kernel_stats().unwrap_or_default()))
                    .collect(),
            ),
            Port::Packet(p) => PortStats::Packet(p.stats()),
        }
    }

    /// The sockets' descriptors, readable when frames wait.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        let (queues, packet) = match self {
            Port::Xdp(queues) => (&queues[..], None),
            Port::Packet(p) => (&[][..], Some(p.as_fd())),
        };
        queues.iter().map(AsFd::as_fd).chain(packet)
    }
}

/// `DIR=IFACE`: frames of direction `DIR` (`out`: client to server, `in`: server to client) on
/// interface `IFACE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub dir: Direction,
    pub iface: String,
}

/// Why an edge's text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected DIR=IFACE with DIR `out` (client to server) or `in` (server to client)")]
pub struct EdgeSyntax(String);

impl FromStr for Edge {
    type Err = EdgeSyntax;

    fn from_str(text: &str) -> Result<Edge, EdgeSyntax> {
        let bad = || EdgeSyntax(text.to_string());
        let (dir, iface) = text.split_once('=').ok_or_else(bad)?;
        let dir = match dir {
            "out" => Direction::Outbound,
            "in" => Direction::Inbound,
            _ => return Err(bad()),
        };
        if iface.is_empty() {
            return Err(bad());
        }
        Ok(Edge {
            dir,
            iface: iface.to_string(),
        })
    }
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self.dir {
            Direction::Outbound => "out",
            Direction::Inbound => "in",
        };
        write!(f, "{dir}={}", self.iface)
    }
}

/// Why a node's edges do not open.
#[derive(Debug, thiserror::Error)]
pub enum EdgesError {
    #[error("--edge-out {0}: another --edge-out already sends that direction")]
    TwoOutputs(Edge),
    #[error("--edge-in {0}: that interface is already an edge-in")]
    TwoInputs(Edge),
    #[error("edge {edge}: {source}")]
    Open { edge: Edge, source: XdpError },
    #[error("edge {edge}: {source}")]
    OpenPacket { edge: Edge, source: PacketError },
}

/// The sockets of a node's edges.
#[derive(Debug, Default)]
pub struct Edges {
    ports: Vec<Port>,
    /// The direction of the frames each port takes in, by port (`None`: an output only).
    input: Vec<Option<Direction>>,
    /// The port that sends each direction's released frames: outbound, inbound.
    output: [Option<usize>; 2],
    /// Whether a released frame too long for its edge-out was warned about (once).
    told_too_long: bool,
}

impl Edges {
    /// Open the ports of `inputs` (edge-in) and `outputs` (edge-out) as `kind` sockets: one
    /// per interface, which receives if an edge-in names it. AF_XDP ones with `xdp`, on
    /// `queues` queues of each interface from `xdp.queue` on, all at once ([`open_each`]).
    pub fn open(
        inputs: &[Edge],
        outputs: &[Edge],
        kind: EdgeKind,
        xdp: XdpConfig,
        queues: u32,
    ) -> Result<Edges, EdgesError> {
        // Each interface once, in the order first named, with whether it receives.
        let mut named: Vec<(&Edge, bool)> = Vec::new();
        fn port_of<'e>(named: &mut Vec<(&'e Edge, bool)>, edge: &'e Edge, input: bool) -> usize {
            match named.iter().position(|(e, _)| e.iface == edge.iface) {
                Some(i) => {
                    named[i].1 |= input;
                    i
                }
                None => {
                    named.push((edge, input));
                    named.len() - 1
                }
            }
        }
        let mut input = Vec::new();
        let mut output = [None; 2];
        for edge in inputs {
            let port = port_of(&mut named, edge, true);
            input.resize(input.len().max(port + 1), None);
            if input[port].replace(edge.dir).is_some() {
                return Err(EdgesError::TwoInputs(edge.clone()));
            }
        }
        for edge in outputs {
            let port = port_of(&mut named, edge, false);
            if output[slot(edge.dir)].replace(port).is_some() {
                return Err(EdgesError::TwoOutputs(edge.clone()));
            }
        }
        input.resize(named.len(), None);
        let ports = match kind {
            EdgeKind::Xdp => {
                let queues = (0..queues.max(1)).map(|q| xdp.queue + q);
                let sockets: Vec<(&str, u32)> = named
                    .iter()
                    .flat_map(|(e, _)| queues.clone().map(|q| (e.iface.as_str(), q)))
                    .collect();
                let mut opened = open_each(&sockets, xdp, RELEASE_WAIT).into_iter();
                named
                    .iter()
                    .map(|&(edge, _)| {
                        let port: Result<Vec<_>, _> = opened.by_ref().take(queues.len()).collect();
                        port.map(Port::Xdp).map_err(|source| EdgesError::Open {
                            edge: edge.clone(),
                            source,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            EdgeKind::Packet => named
                .iter()
                .map(
                    |&(edge, receives)| match PacketPort::open(&edge.iface, receives) {
                        Ok(port) => Ok(Port::Packet(port)),
                        Err(source) => Err(EdgesError::OpenPacket {
                            edge: edge.clone(),
                            source,
                        }),
                    },
                )
                .collect::<Result<Vec<_>, _>>()?,
        };
        for (edge, _) in &named {
            tracing::info!("edge {edge}: {kind:?} on {}", edge.iface);
        }
        Ok(Edges {
            ports,
            input,
            output,
            told_too_long: false,
        })
    }

    /// The edges' queues shared out among `lanes` lanes, as [`XdpLinks`] shares links'
    /// ([`share_out`]): every lane gets every interface, on its own queues. `None` (the edges left as they are) for packet sockets,
    /// or when a port binds fewer queues than that.
    ///
    /// [`XdpLinks`]: ftc_node::links::XdpLinks
    pub fn split(&mut self, lanes: usize) -> Option<Vec<Edges>> {
        let queues = |port: &Port| match port {
            Port::Xdp(queues) => queues.len(),
            Port::Packet(_) => 0,
        };
        if lanes == 0 || self.ports.is_empty() || self.ports.iter().any(|p| queues(p) < lanes) {
            return None;
        }
        let mut parts: Vec<Edges> = (0..lanes)
            .map(|_| Edges {
                ports: Vec::new(),
                input: self.input.clone(),
                output: self.output,
                told_too_long: false,
            })
            .collect();
        for port in std::mem::take(&mut self.ports) {
            let Port::Xdp(sockets) = port else {
                unreachable!("checked above: AF_XDP ports only");
            };
            let queues = (0..).zip(sockets);
            for (part, share) in parts.iter_mut().zip(share_out(queues, lanes)) {
                part.ports.push(Port::Xdp(share));
            }
        }
        *self = Edges::default();
        Some(parts)
    }

    /// Whether released frames of direction `dir` leave here.
    pub fn sends(&self, dir: Direction) -> bool {
        self.output[slot(dir)].is_some()
    }

    /// The ports customer frames arrive on, with their direction.
    pub fn inputs_mut(&mut self) -> impl Iterator<Item = (&mut Port, Direction)> {
        self.ports
            .iter_mut()
            .zip(&self.input)
            .filter_map(|(port, dir)| Some((port, (*dir)?)))
    }

    /// The ports customer frames arrive on.
    pub fn inputs(&self) -> impl Iterator<Item = &Port> {
        self.ports
            .iter()
            .zip(&self.input)
            .filter_map(|(port, dir)| dir.map(|_| port))
    }

    /// The port that takes in the longest customer frames, with their length
    /// ([`Port::max_received`]); `None` without edge-ins.
    pub fn longest_input(&self) -> Option<(&Port, usize)> {
        self.inputs()
            .map(|port| (port, port.max_received()))
            .max_by_key(|&(_, len)| len)
    }

    /// Queue a released frame of direction `dir` and flow `flow` on its edge-out, if there is
    /// one.
    pub fn send(&mut self, dir: Direction, flow: u64, frame: &[u8]) {
        let Some(i) = self.output[slot(dir)] else {
            return;
        };
        let port = &mut self.ports[i];
        match port.send(flow, frame) {
            Ok(()) => {}
            // Counted by the port; an edge-out of a smaller MTU than the chain's edge-in drops
            // every frame that long, which the operator is told once.
            Err(Unsent::TooLong(why)) if !self.told_too_long => {
                self.told_too_long = true;
                let iface = port.iface();
                tracing::warn!(
                    "edge-out {iface}: {why}: released frames this long are dropped (and \
                     counted); give {iface} an MTU as large as the chain's edge-in's"
                );
            }
            Err(Unsent::TooLong(_)) => {}
            Err(Unsent::Other(why)) => tracing::debug!("edge-out {}: {why}", port.iface()),
        }
    }

    /// Hand every queued frame to the kernel.
    pub fn flush(&mut self) {
        for i in self.output.iter().flatten() {
            let port = &mut self.ports[*i];
            if let Err(e) = port.flush() {
                tracing::warn!("edge-out {}: {e}", port.iface());
            }
        }
    }

    /// Whether an edge-out port has frames waiting for another [`Edges::flush`].
    pub fn unsent(&self) -> bool {
        self.output
            .iter()
            .flatten()
            .any(|&i| self.ports[i].unsent())
    }

    /// Each port's interface and counters.
    pub fn stats(&self) -> Vec<(String, PortStats)> {
        self.ports
            .iter()
            .map(|p| (p.iface().to_string(), p.stats()))
            .collect()
    }
}

fn slot(dir: Direction) -> usize {
    match dir {
        Direction::Outbound => 0,
        Direction::Inbound => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_parse_and_print() {
        let e: Edge = "out=veth0".parse().unwrap();
        assert_eq!(
            e,
            Edge {
                dir: Direction::Outbound,
                iface: "veth0".into()
            }
        );
        assert_eq!(e.to_string(), "out=veth0");
        assert_eq!("in=eth1".parse::<Edge>().unwrap().dir, Direction::Inbound);
        for bad in ["veth0", "up=veth0", "out=", "=veth0"] {
            let err = bad.parse::<Edge>().unwrap_err();
            assert!(err.to_string().contains("expected DIR=IFACE"), "{err}");
        }
    }

    #[test]
    fn a_missing_interface_is_named() {
        let edge: Edge = "out=ftcx-nosuch1".parse().unwrap();
        let xdp = XdpConfig::default();
        let err = Edges::open(std::slice::from_ref(&edge), &[], EdgeKind::Xdp, xdp, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "edge out=ftcx-nosuch1: AF_XDP: there is no network interface named \"ftcx-nosuch1\""
        );
        let err = Edges::open(&[edge], &[], EdgeKind::Packet, xdp, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "edge out=ftcx-nosuch1: AF_PACKET: there is no network interface named \"ftcx-nosuch1\""
        );
    }

    /// An AF_XDP edge's counters carry the kernel's of each socket, which the node's summary
    /// and stats lines print: of 200 frames to an edge-in of 64 receive frames that nobody reads, 64 wait on
    /// its rx ring and the kernel drops the others (its fill ring empty), which the port's own
    /// counters cannot see.
    #[test]
    fn an_edge_s_counters_carry_the_kernel_s_drops() {
        use ftc_node::netns::{namespaces_denied, Netns};
        if let Some(why) = namespaces_denied() {
            eprintln!("skipped: AF_XDP on a veth pair in a network namespace: {why}");
            return;
        }
        let ns = Netns::create("ftce").unwrap();
        ns.veth("ea", "eb").unwrap();
        let small = XdpConfig {
            rx_frames: 64,
            tx_frames: 64,
            ..XdpConfig::default()
        };
        let stats = ns.run(|| {
            let input: Edge = "out=eb".parse().unwrap();
            let edges = Edges::open(&[input], &[], EdgeKind::Xdp, small, 1).unwrap();
            let mut a = XdpPort::open("ea", small).unwrap();
            let mut frame = vec![0xff; 6];
            frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x88, 0xb5]);
            frame.resize(100, 0);
            for i in 0..200 {
                a.send(&frame).expect("a free transmit frame");
                if i % 16 == 15 {
                    a.flush().unwrap();
                }
            }
            a.flush().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
            let tally = crate::process::tally::Tally::default().with_sockets(None, Some(&edges));
            (edges.stats(), tally)
        });
        let (stats, tally) = stats.unwrap();
        // So do its stats lines.
        assert_eq!(tally.kernel_drops, 200 - 64);
        let [(iface, PortStats::Xdp(queues))] = &stats[..] else {
            panic!("one AF_XDP edge: {stats:?}");
        };
        let [(own, kernel)] = &queues[..] else {
            panic!("one queue: {stats:?}");
        };
        assert_eq!(iface, "eb");
        assert_eq!(own.rx, 0, "nobody read: {stats:?}");
        assert_eq!(kernel.rx_dropped, 200 - 64, "{stats:?}");
        assert!(kernel.rx_fill_ring_empty > 0, "{stats:?}");
    }

    /// A released frame longer than its edge-out lets out (an MTU below the edge-in's) is told
    /// apart from a passing failure, with AF_XDP and packet sockets alike: warned about once,
    /// counted every time.
    #[test]
    fn frames_too_long_for_an_edge_out_are_told_apart() {
        use ftc_node::netns::{namespaces_denied, Netns};
        if let Some(why) = namespaces_denied() {
            eprintln!("skipped: edge-outs on a veth pair in a network namespace: {why}");
            return;
        }
        let ns = Netns::create("ftcm").unwrap();
        ns.veth("oa", "ob").unwrap();
        ns.ip(&["link", "set", "oa", "mtu", "1000"]).unwrap();
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
        frame.resize(1400, 0);
        let seen = ns.run(|| {
            [EdgeKind::Packet, EdgeKind::Xdp].map(|kind| {
                let output: Edge = "out=oa".parse().unwrap();
                let mut edges = Edges::open(&[], &[output], kind, XdpConfig::default(), 1).unwrap();
                let fits = edges.ports[0].send(0, &frame[..1014]);
                let long = edges.ports[0].send(0, &frame);
                assert!(!edges.told_too_long);
                edges.send(Direction::Outbound, 0, &frame);
                edges.send(Direction::Outbound, 0, &frame);
                edges.flush();
                (kind, fits, long, edges.told_too_long, edges.stats())
            })
        });
        for (kind, fits, long, told, stats) in seen.unwrap() {
            assert_eq!(fits, Ok(()), "{kind:?}");
            assert!(
                matches!(long, Err(Unsent::TooLong(_))),
                "{kind:?}: {long:?}"
            );
            assert!(told, "{kind:?}");
            let unsent = match &stats[0].1 {
                PortStats::Xdp(queues) => queues[0].0.tx_too_large,
                PortStats::Packet(p) => p.tx_failed,
            };
            assert_eq!(unsent, 3, "{kind:?}: {stats:?}");
        }
    }
}
