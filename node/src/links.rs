//! The AF_XDP transport between servers: frames as NSH bytes ([`crate::nsh`]) on the two ring
//! links of a server, the one to its successor and the one from its predecessor (veth pairs in
//! the lab, NICs between hosts), each through an [`XdpPort`]. Every frame a server sends goes to
//! a neighbour on the ring (the next server, or the previous one for a retransmission request),
//! so the link it arrives on names its sender. As on the UDP transport, frames of another chain
//! or epoch are dropped and counted (the epoch fences a recovery's stale frames).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use ftc_chain::ring::{Ring, ServerId};

use crate::nsh::{self, Path, Received};
use crate::xdp::{SendError, XdpConfig, XdpError, XdpPort};
use crate::Frame;

/// How long opening a link waits for the queue to be free.
const WAIT: Duration = Duration::from_secs(2);

/// Why a frame was not sent.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("server {0} is not a neighbour on the ring")]
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
}

/// One server's two ring links.
#[derive(Debug)]
pub struct XdpLinks {
    me: ServerId,
    ring: Ring,
    /// To the successor (frames from it are retransmission requests).
    next: XdpPort,
    /// From the predecessor (and to it: retransmission requests).
    prev: XdpPort,
    chain: u32,
    epoch: u32,
    buf: Vec<u8>,
    stats: LinkStats,
}

impl XdpLinks {
    /// Open server `me`'s link to its successor on `next` and from its predecessor on `prev`,
    /// for chain `chain` at `epoch` (waiting up to 2 s for a killed predecessor process's
    /// sockets to leave the queues).
    pub fn open(
        me: ServerId,
        ring: Ring,
        (next, prev): (&str, &str),
        config: XdpConfig,
        chain: u32,
        epoch: u32,
    ) -> Result<Self, XdpError> {
        Ok(XdpLinks {
            me,
            ring,
            next: XdpPort::open_when_free(next, config, WAIT)?,
            prev: XdpPort::open_when_free(prev, config, WAIT)?,
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
        let port = if to == self.ring.next_server(self.me) {
            &mut self.next
        } else if to == self.ring.prev_server(self.me) {
            &mut self.prev
        } else {
            return Err(LinkError::NotANeighbour(to.0));
        };
        let path = Path {
            chain: self.chain,
            hop,
            epoch: self.epoch,
        };
        nsh::encode(frame, path, &mut self.buf).map_err(LinkError::Encode)?;
        port.send(&self.buf).map_err(|source| LinkError::Send {
            iface: port.iface().to_string(),
            source,
        })?;
        self.stats.sent += 1;
        Ok(())
    }

    /// Push queued frames out on both links.
    pub fn flush(&mut self) -> io::Result<()> {
        self.next.flush()?;
        self.prev.flush()
    }

    /// Hand every frame of this chain and epoch received on either link, with its sender, to
    /// `f` (up to a batch per link); how many frames arrived, dropped ones included.
    pub fn recv_batch(&mut self, mut f: impl FnMut(ServerId, Received)) -> io::Result<usize> {
        let (chain, epoch) = (self.chain, self.epoch);
        let stats = &mut self.stats;
        let mut take = |from: ServerId, bytes: &[u8]| {
            stats.received += 1;
            match nsh::decode(bytes) {
                Ok(r) if r.path.is_of(chain, epoch) => f(from, r),
                Ok(_) => stats.stale_epoch += 1,
                Err(_) => stats.malformed += 1,
            }
        };
        let (prev, next) = (
            self.ring.prev_server(self.me),
            self.ring.next_server(self.me),
        );
        let n = self.prev.recv_batch(|bytes| take(prev, bytes))?;
        Ok(n + self.next.recv_batch(|bytes| take(next, bytes))?)
    }

    /// The links' descriptors, readable when frames wait: the predecessor's, then the
    /// successor's.
    pub fn fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.prev.as_fd(), self.next.as_fd()]
    }
}
