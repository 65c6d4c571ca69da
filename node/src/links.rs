//! The AF_XDP transport between servers: frames as NSH bytes ([`crate::nsh`]) on point-to-point
//! links to a server's neighbours (veth pairs in the lab, NICs between hosts), each through an
//! [`XdpPort`]. FTC's servers have two, the link to their successor on the ring and the one from
//! their predecessor; every frame an FTC server sends goes to one of them (the next server, or
//! the previous one for a retransmission request). An FTMB logger has three (its master, the
//! previous and the next logger). A link carries frames both ways and names the neighbour at its
//! other end, so the link a frame arrives on names its sender. As on the UDP transport, frames of
//! another chain or epoch are dropped and counted (the epoch fences a recovery's stale frames).
//!
//! A link may bind several queues of its interface, a socket each: a server of several lanes
//! gives each lane queues of its own ([`XdpLinks::split`]). A sender puts a customer packet's
//! frame on the queue its flow hashes to among its queues of the link ([`lane_of`]), anything
//! else on its first. On a veth a frame sent on queue q arrives on queue q of the other end, so
//! the frames of one flow travel one queue in order, and reach the lane that owns that queue:
//! the flow's own lane where both ends have as many lanes (the nodes of a chain hash flows
//! alike, [`crate::nsh::share_flow_seed`]), or, from a sender of one lane (an FTMB logger, say),
//! the flow's lane at the receiver.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use ftc_chain::ring::ServerId;

use crate::lanes::lane_of;
use crate::nsh::{self, Path, Received};
use crate::xdp::{self, KernelStats, SendError, XdpConfig, XdpError, XdpPort, RELEASE_WAIT};
use crate::Frame;

/// Why a frame was not sent.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("server {0} is not a neighbour: no link leads to it")]
    NotANeighbour(u16),
    #[error("frame does not encode: {0}")]
    Encode(ftc_chain::wire::WireError),
    #[error("{iface}: {source}")]
    Send { iface: String, source: SendError },
}

/// Counters of the links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub sent: u64,
    pub received: u64,
    pub malformed: u64,
    pub stale_epoch: u64,
    /// Frames not sent: that do not encode (a part past the wire format's bounds, such as a
    /// trailer over 65,535 bytes: [`LinkError::Encode`]), longer than a link carries
    /// ([`crate::xdp::SendError::TooLarge`]), or no free transmit frame
    /// ([`crate::xdp::SendError::Full`]).
    pub not_sent: u64,
}

/// One server's links to its neighbours (or a lane's share of their queues).
#[derive(Debug)]
pub struct XdpLinks {
    /// Each link's sockets with the neighbour at its other end, link by link and in order of
    /// queue; frames to a neighbour leave on the first of its sockets (a ring of two servers
    /// has two links between the same pair).
    links: Vec<LinkSocket>,
    /// The queues bound on each link.
    queues: u32,
    chain: u32,
    epoch: u32,
    buf: Vec<u8>,
    stats: LinkStats,
}

/// One socket of a link.
#[derive(Debug)]
struct LinkSocket {
    /// The neighbour at the link's other end.
    peer: ServerId,
    /// Which link (in the order opened).
    link: usize,
    /// Which of the link's queues, from the first bound (0) on.
    queue: u32,
    port: XdpPort,
}

impl XdpLinks {
    /// Open links to the neighbours named with their interfaces, `queues` queues of each from
    /// `config.queue` on, for chain `chain` at `epoch` (all at once, each waiting up to
    /// [`RELEASE_WAIT`] for a killed process's socket to leave its queue: [`xdp::open_each`]).
    pub fn open(
        links: &[(ServerId, &str)],
        config: XdpConfig,
        queues: u32,
        chain: u32,
        epoch: u32,
    ) -> Result<Self, XdpError> {
        let queues = queues.max(1);
        let sockets: Vec<(usize, ServerId, &str, u32)> = links
            .iter()
            .enumerate()
            .flat_map(|(link, &(peer, iface))| (0..queues).map(move |q| (link, peer, iface, q)))
            .collect();
        let named: Vec<(&str, u32)> = sockets
            .iter()
            .map(|&(_, _, iface, q)| (iface, config.queue + q))
            .collect();
        let ports = xdp::open_each(&named, config, RELEASE_WAIT);
        let links = sockets
            .iter()
            .zip(ports)
            .map(|(&(link, peer, _, queue), port)| {
                Ok(LinkSocket {
                    peer,
                    link,
                    queue,
                    port: port?,
                })
            })
            .collect::<Result<_, XdpError>>()?;
        Ok(XdpLinks::of(links, queues, chain, epoch))
    }

    fn of(links: Vec<LinkSocket>, queues: u32, chain: u32, epoch: u32) -> XdpLinks {
        XdpLinks {
            links,
            queues,
            chain,
            epoch,
            buf: Vec::new(),
            stats: LinkStats::default(),
        }
    }

    /// The queues of every link shared out among `lanes` lanes ([`share_out`]). Given back whole when the links bind fewer queues
    /// than that (some lane would have none to send on).
    pub fn split(self, lanes: usize) -> Result<Vec<XdpLinks>, XdpLinks> {
        if lanes == 0 || (self.queues as usize) < lanes {
            return Err(self);
        }
        let (queues, chain, epoch) = (self.queues, self.chain, self.epoch);
        let sockets = self.links.into_iter().map(|s| (s.queue, s));
        Ok(share_out(sockets, lanes)
            .into_iter()
            .map(|links| XdpLinks::of(links, queues, chain, epoch))
            .collect())
    }

    /// Move to a new epoch (after a recovery): frames of other epochs are dropped from now on.
    pub fn set_epoch(&mut self, epoch: u32) {
        self.epoch = epoch;
    }

    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// The kernel's counters of the links' sockets, read now and summed: its drops of frames
    /// that arrived while a link's reader was behind among them ([`XdpPort::kernel_stats`]; a
    /// socket whose counters cannot be read counts none).
    pub fn kernel_stats(&self) -> KernelStats {
        let mut sum = KernelStats::default();
        for socket in &self.links {
            sum += socket.port.kernel_stats().unwrap_or_default();
        }
        sum
    }

    /// Queue `frame` for server `to` (a neighbour); `hop` is the receiver's position from the
    /// forwarder. Sent at [`XdpLinks::flush`] or once a batch is queued, on the first link to
    /// `to`: on the queue its packet's flow hashes to among those of the link here (so that
    /// where the receiver's lanes own its queues, the flow's lane reads it), else the first.
    pub fn send<P>(&mut self, to: ServerId, hop: u8, frame: &Frame<P>) -> Result<(), LinkError> {
        let Some(first) = self.links.iter().position(|s| s.peer == to) else {
            return Err(LinkError::NotANeighbour(to.0));
        };
        // A link's sockets are next to each other.
        let link = &mut self.links[first..];
        let sockets = link.iter().take_while(|s| s.link == link[0].link).count();
        let nth = frame
            .packet
            .as_ref()
            .map_or(0, |p| lane_of(p.flow, sockets));
        let port = &mut link[nth].port;
        let path = Path {
            chain: self.chain,
            hop,
            epoch: self.epoch,
        };
        if let Err(e) = nsh::encode(frame, path, &mut self.buf) {
            self.stats.not_sent += 1;
            return Err(LinkError::Encode(e));
        }
        if let Err(source) = port.send(&self.buf) {
            self.stats.not_sent += 1;
            return Err(LinkError::Send {
                iface: port.iface().to_string(),
                source,
            });
        }
        self.stats.sent += 1;
        Ok(())
    }

    /// The longest frame every link carries ([`XdpPort::max_frame`]): the untagged bound, as
    /// the links' frames carry no VLAN tag.
    pub fn max_frame(&self) -> usize {
        self.links
            .iter()
            .map(|s| s.port.max_frame())
            .min()
            .unwrap_or(usize::MAX)
    }

    /// Whether a link has frames waiting for another [`XdpLinks::flush`]
    /// ([`XdpPort::unsent`]).
    pub fn unsent(&self) -> bool {
        self.links.iter().any(|s| s.port.unsent())
    }

    /// Push queued frames out on every link.
    pub fn flush(&mut self) -> io::Result<()> {
        self.links.iter_mut().try_for_each(|s| s.port.flush())
    }

    /// Hand every frame of this chain and epoch received on any link, with its sender, to `f`
    /// (up to a batch per link), in buffers taken from `spare` ([`nsh::decode_with`]); how many
    /// frames arrived, dropped ones included.
    pub fn recv_batch(
        &mut self,
        spare: &mut Vec<Vec<u8>>,
        mut f: impl FnMut(ServerId, Received),
    ) -> io::Result<usize> {
        let (chain, epoch) = (self.chain, self.epoch);
        let stats = &mut self.stats;
        let mut n = 0;
        for LinkSocket {
            peer: from, port, ..
        } in &mut self.links
        {
            n += port.recv_batch(|bytes| {
                stats.received += 1;
                match nsh::decode_with(bytes, spare) {
                    Ok(r) if r.path.is_of(chain, epoch) => f(*from, r),
                    Ok(_) => stats.stale_epoch += 1,
                    Err(_) => stats.malformed += 1,
                }
            })?;
        }
        Ok(n)
    }

    /// The links' descriptors, readable when frames wait, in the order they were opened.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.links.iter().map(|s| s.port.as_fd())
    }
}

/// The `sockets` of an interface's queues (each with its queue's index among those bound, from
/// 0) shared out among `lanes` lanes, in order: lane i takes the queues q with
/// `q % lanes == i` ([`XdpLinks::split`], and the edges' likewise).
pub fn share_out<T>(sockets: impl IntoIterator<Item = (u32, T)>, lanes: usize) -> Vec<Vec<T>> {
    let mut parts: Vec<Vec<T>> = (0..lanes).map(|_| Vec::new()).collect();
    for (queue, socket) in sockets {
        parts[queue as usize % lanes].push(socket);
    }
    parts
}
