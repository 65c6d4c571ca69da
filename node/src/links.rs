//! The AF_XDP transport between servers: frames as NSH bytes ([`crate::nsh`]) on point-to-point
//! links to a server's neighbours (veth pairs in the lab, NICs between hosts), each through an
//! [`XdpPort`]. FTC's servers have two, the link to their successor on the ring and the one from
//! their predecessor; every frame an FTC server sends goes to one of them (the next server, or
//! the previous one for a retransmission request). An FTMB logger has three (its master, the
//! previous and the next logger). A link carries frames both ways and names the neighbour at its
//! other end, so the link a frame arrives on names its sender. As on the UDP transport, frames of
//! another chain or epoch are dropped and counted (the epoch fences a recovery's stale frames).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use ftc_chain::ring::ServerId;

use crate::nsh::{self, Path, Received};
use crate::xdp::{self, SendError, XdpConfig, XdpError, XdpPort, RELEASE_WAIT};
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
    /// Frames not sent: longer than a link carries ([`crate::xdp::SendError::TooLarge`]), or
    /// no free transmit frame ([`crate::xdp::SendError::Full`]).
    pub not_sent: u64,
}

/// One server's links to its neighbours.
#[derive(Debug)]
pub struct XdpLinks {
    /// Each link with the neighbour at its other end; frames to a neighbour leave on the first
    /// of its links (a ring of two servers has two links between the same pair).
    links: Vec<(ServerId, XdpPort)>,
    chain: u32,
    epoch: u32,
    buf: Vec<u8>,
    stats: LinkStats,
}

impl XdpLinks {
    /// Open links to the neighbours named with their interfaces, for chain `chain` at `epoch`
    /// (all at once, each waiting up to [`RELEASE_WAIT`] for a killed process's socket to leave
    /// its queue: [`xdp::open_each`]).
    pub fn open(
        links: &[(ServerId, &str)],
        config: XdpConfig,
        chain: u32,
        epoch: u32,
    ) -> Result<Self, XdpError> {
        let sockets: Vec<(&str, u32)> = links.iter().map(|&(_, i)| (i, config.queue)).collect();
        let ports = xdp::open_each(&sockets, config, RELEASE_WAIT);
        Ok(XdpLinks {
            links: links
                .iter()
                .map(|&(peer, _)| peer)
                .zip(ports)
                .map(|(peer, port)| Ok((peer, port?)))
                .collect::<Result<_, XdpError>>()?,
            chain,
            epoch,
            buf: Vec::new(),
            stats: LinkStats::default(),
        })
    }

    /// Move to a new epoch (after a recovery): frames of other epochs are dropped from now on.
    pub fn set_epoch(&mut self, epoch: u32) {
        self.epoch = epoch;
    }

    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Queue `frame` for server `to` (a neighbour); `hop` is the receiver's position from the
    /// forwarder. Sent at [`XdpLinks::flush`] or once a batch is queued.
    pub fn send<P>(&mut self, to: ServerId, hop: u8, frame: &Frame<P>) -> Result<(), LinkError> {
        let Some((_, port)) = self.links.iter_mut().find(|(peer, _)| *peer == to) else {
            return Err(LinkError::NotANeighbour(to.0));
        };
        let path = Path {
            chain: self.chain,
            hop,
            epoch: self.epoch,
        };
        nsh::encode(frame, path, &mut self.buf).map_err(LinkError::Encode)?;
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

    /// The longest frame every link carries ([`XdpPort::max_frame`]).
    pub fn max_frame(&self) -> usize {
        self.links
            .iter()
            .map(|(_, port)| port.max_frame())
            .min()
            .unwrap_or(usize::MAX)
    }

    /// Whether a link has frames waiting for another [`XdpLinks::flush`]
    /// ([`XdpPort::unsent`]).
    pub fn unsent(&self) -> bool {
        self.links.iter().any(|(_, port)| port.unsent())
    }

    /// Push queued frames out on every link.
    pub fn flush(&mut self) -> io::Result<()> {
        self.links.iter_mut().try_for_each(|(_, port)| port.flush())
    }

    /// Hand every frame of this chain and epoch received on any link, with its sender, to `f`
    /// (up to a batch per link); how many frames arrived, dropped ones included.
    pub fn recv_batch(&mut self, mut f: impl FnMut(ServerId, Received)) -> io::Result<usize> {
        let (chain, epoch) = (self.chain, self.epoch);
        let stats = &mut self.stats;
        let mut n = 0;
        for (from, port) in &mut self.links {
            n += port.recv_batch(|bytes| {
                stats.received += 1;
                match nsh::decode(bytes) {
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
        self.links.iter().map(|(_, port)| port.as_fd())
    }
}
