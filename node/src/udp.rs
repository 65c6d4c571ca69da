//! The UDP transport: frames between servers as NSH bytes (`nsh`) in UDP datagrams, for
//! servers in separate processes or on separate hosts where AF_XDP is not available. Each
//! server has one socket; the peers' addresses say which server a datagram came from.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use ftc_chain::ring::ServerId;

use crate::nsh::{self, Path, Received};
use crate::Frame;

/// Largest datagram: a jumbo frame between servers. A longer frame is not sent
/// ([`UdpError::TooLarge`]), and a longer datagram that arrives is dropped (see [`recv_whole`]).
pub const MAX_DATAGRAM: usize = 9216;

/// The buffer a datagram is read into: a byte longer than [`MAX_DATAGRAM`], so that a longer
/// datagram, which the kernel cuts to the buffer's length, shows by filling it.
pub const RECV_BUFFER: usize = MAX_DATAGRAM + 1;

/// The kernel receive buffer asked for every socket that takes frames or customer datagrams
/// ([`widen_receive_buffer`]): 8 MiB, room for a burst of thousands of frames. The default,
/// `net.core.rmem_default` (208 KiB on Debian), holds about 700 datagrams of 256 bytes, and a
/// buffer releasing the packets a recovery held sends that many at once.
pub const RECEIVE_BUFFER_BYTES: usize = 8 << 20;

/// Why a datagram was not taken.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    #[error("udp: {0}")]
    Io(#[from] io::Error),
    #[error("frame for unknown server {0}")]
    UnknownServer(u16),
    #[error("frame does not encode: {0}")]
    Encode(ftc_chain::wire::WireError),
    #[error("frame of {len} bytes exceeds the largest datagram, {max} bytes")]
    TooLarge { len: usize, max: usize },
}

/// What `recv` found in one datagram.
#[derive(Debug)]
pub enum Datagram {
    /// A frame from a known server, of the current epoch.
    Frame { from: ServerId, received: Received },
    /// Dropped and counted: cut short (longer than [`MAX_DATAGRAM`]), unknown sender, bad
    /// bytes, or a stale epoch (fenced).
    Dropped,
}

/// Counters of the transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpStats {
    pub sent: u64,
    /// Frames not sent for being longer than [`MAX_DATAGRAM`] once encoded.
    pub too_large: u64,
    /// Datagrams received, dropped ones included.
    pub received: u64,
    /// Datagrams longer than [`MAX_DATAGRAM`]: read cut short, and dropped.
    pub truncated: u64,
    pub unknown_sender: u64,
    pub malformed: u64,
    pub stale_epoch: u64,
}

/// One server's UDP endpoint.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    /// Address of every server of the chain, by server id.
    peers: Vec<SocketAddr>,
    chain: u32,
    epoch: u32,
    buf: Vec<u8>,
    /// The timeout the socket is set to (`None`: not set yet).
    wait: Option<Option<Duration>>,
    stats: UdpStats,
}

impl UdpTransport {
    /// Bind `local` and talk to `peers` (indexed by server id) on chain `chain` at `epoch`.
    pub fn bind(
        local: SocketAddr,
        peers: Vec<SocketAddr>,
        chain: u32,
        epoch: u32,
    ) -> Result<Self, UdpError> {
        let socket = UdpSocket::bind(local)?;
        widen_receive_buffer(&socket)?;
        Ok(UdpTransport {
            socket,
            peers,
            chain,
            epoch,
            buf: vec![0; RECV_BUFFER],
            wait: None,
            stats: UdpStats::default(),
        })
    }

    /// The address this endpoint is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, UdpError> {
        Ok(self.socket.local_addr()?)
    }

    /// Move to a new epoch (after a recovery): frames of other epochs are dropped from now on.
    pub fn set_epoch(&mut self, epoch: u32) {
        self.epoch = epoch;
    }

    /// The servers of the chain from now on, by server id (a recovery replaced some).
    pub fn set_peers(&mut self, peers: Vec<SocketAddr>) {
        self.peers = peers;
    }

    pub fn stats(&self) -> &UdpStats {
        &self.stats
    }

    /// Send `frame` to server `to`; `hop` is the receiver's position from the forwarder. A frame
    /// longer than [`MAX_DATAGRAM`] once encoded is refused and counted (`too_large`): the
    /// receiver would drop it.
    pub fn send<P>(&mut self, to: ServerId, hop: u8, frame: &Frame<P>) -> Result<(), UdpError> {
        let addr = *self
            .peers
            .get(usize::from(to.0))
            .ok_or(UdpError::UnknownServer(to.0))?;
        let mut bytes = std::mem::take(&mut self.buf);
        let path = Path {
            chain: self.chain,
            hop,
            epoch: self.epoch,
        };
        let result = nsh::encode(frame, path, &mut bytes).map_err(UdpError::Encode);
        let sent = result.and_then(|()| match bytes.len() {
            len if len > MAX_DATAGRAM => Err(UdpError::TooLarge {
                len,
                max: MAX_DATAGRAM,
            }),
            _ => Ok(self.socket.send_to(&bytes, addr)?),
        });
        bytes.resize(RECV_BUFFER, 0);
        self.buf = bytes;
        if let Err(UdpError::TooLarge { .. }) = sent {
            self.stats.too_large += 1;
        }
        sent?;
        self.stats.sent += 1;
        Ok(())
    }

    /// Wait up to `timeout` (`None`: forever, zero: not at all) for a datagram; `Ok(None)` when
    /// none came. A frame's parts are read into buffers taken from `spare`
    /// ([`nsh::decode_with`]).
    pub fn recv(
        &mut self,
        timeout: Option<Duration>,
        spare: &mut Vec<Vec<u8>>,
    ) -> Result<Option<Datagram>, UdpError> {
        if self.wait != Some(timeout) {
            // A socket timeout is a whole clock tick at least (milliseconds): "do not wait" is
            // the socket's non-blocking mode instead.
            let zero = timeout.is_some_and(|t| t.is_zero());
            self.socket.set_nonblocking(zero)?;
            if !zero {
                self.socket.set_read_timeout(timeout)?;
            }
            self.wait = Some(timeout);
        }
        let (len, src) = match recv_whole(&self.socket, &mut self.buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        self.stats.received += 1;
        let Some(len) = len else {
            self.stats.truncated += 1;
            return Ok(Some(Datagram::Dropped));
        };
        let Some(from) = self.peers.iter().position(|p| *p == src) else {
            self.stats.unknown_sender += 1;
            return Ok(Some(Datagram::Dropped));
        };
        let received = match nsh::decode_with(&self.buf[..len], spare) {
            Ok(r) => r,
            Err(_) => {
                self.stats.malformed += 1;
                return Ok(Some(Datagram::Dropped));
            }
        };
        if !received.path.is_of(self.chain, self.epoch) {
            self.stats.stale_epoch += 1;
            return Ok(Some(Datagram::Dropped));
        }
        Ok(Some(Datagram::Frame {
            from: ServerId(from as u16),
            received,
        }))
    }
}

/// Read one datagram of `socket` into `buf` (of [`RECV_BUFFER`] bytes at least): its length and
/// its sender, the length `None` for a datagram longer than [`MAX_DATAGRAM`], which the read cut
/// short (the caller drops it: decoded, its bytes would be a frame's first part only).
pub fn recv_whole(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(Option<usize>, SocketAddr)> {
    debug_assert!(buf.len() > MAX_DATAGRAM, "no room to see a longer datagram");
    let (len, from) = socket.recv_from(buf)?;
    Ok(((len <= MAX_DATAGRAM).then_some(len), from))
}

/// Ask the kernel for a receive buffer of [`RECEIVE_BUFFER_BYTES`] on `socket`, past
/// `net.core.rmem_max` where the process may (`SO_RCVBUFFORCE`, with CAP_NET_ADMIN), else up to
/// it (`SO_RCVBUF`); the size granted, which the kernel doubles for its bookkeeping. Datagrams
/// that find the buffer full are dropped by the kernel, counted only in `UdpRcvbufErrors`.
pub fn widen_receive_buffer(socket: &UdpSocket) -> io::Result<usize> {
    let fd = socket.as_raw_fd();
    let set = |option| {
        let bytes = RECEIVE_BUFFER_BYTES as libc::c_int;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `fd` is an open socket; the option value is a c_int of `len` bytes.
        unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, option, (&raw const bytes).cast(), len) }
    };
    if set(libc::SO_RCVBUFFORCE) != 0 && set(libc::SO_RCVBUF) != 0 {
        return Err(io::Error::last_os_error());
    }
    receive_buffer(socket)
}

/// The size of `socket`'s receive buffer (`SO_RCVBUF`: twice what was asked for, within limits).
pub fn receive_buffer(socket: &UdpSocket) -> io::Result<usize> {
    let fd = socket.as_raw_fd();
    let mut granted: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as above; `granted` has room for the c_int the kernel writes, `len` says so.
    let got = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw mut granted).cast(),
            &mut len,
        )
    };
    if got != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(granted as usize)
}

/// The socket, for drivers that wait on several sources at once (`poll`).
impl AsFd for UdpTransport {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::empty_message;
    use crate::Packet;
    use ftc_chain::middlebox::Direction;

    fn pair() -> (UdpTransport, UdpTransport) {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let a = UdpSocket::bind(any).unwrap();
        let b = UdpSocket::bind(any).unwrap();
        let peers = vec![a.local_addr().unwrap(), b.local_addr().unwrap()];
        drop((a, b));
        let a = UdpTransport::bind(peers[0], peers.clone(), 1, 5).unwrap();
        let b = UdpTransport::bind(peers[1], peers, 1, 5).unwrap();
        (a, b)
    }

    #[test]
    fn frames_cross_loopback_and_stale_epochs_are_fenced() {
        let (mut a, mut b) = pair();
        let frame = Frame {
            packet: Some(Packet {
                handle: 1u64,
                flow: 0,
                dir: Direction::Inbound,
                bytes: vec![0xab; 60],
            }),
            flags: 0,
            msg: empty_message(),
        };
        a.send(ServerId(1), 1, &frame).unwrap();
        match b
            .recv(Some(Duration::from_secs(2)), &mut Vec::new())
            .unwrap()
        {
            Some(Datagram::Frame { from, received }) => {
                assert_eq!(from, ServerId(0));
                assert_eq!(received.path.hop, 1);
                let p = received.frame.packet.unwrap();
                assert_eq!((p.dir, p.bytes.len()), (Direction::Inbound, 60));
            }
            other => panic!("expected a frame, got {other:?}"),
        }
        // After a recovery the receiver moves on: a frame of the old epoch is dropped.
        b.set_epoch(6);
        a.send(ServerId(1), 1, &frame).unwrap();
        assert!(matches!(
            b.recv(Some(Duration::from_secs(2)), &mut Vec::new())
                .unwrap(),
            Some(Datagram::Dropped)
        ));
        assert_eq!(b.stats().stale_epoch, 1);
        assert!(b
            .recv(Some(Duration::from_millis(10)), &mut Vec::new())
            .unwrap()
            .is_none());
        let started = std::time::Instant::now();
        assert!(b
            .recv(Some(Duration::ZERO), &mut Vec::new())
            .unwrap()
            .is_none());
        assert!(
            started.elapsed() < Duration::from_millis(1),
            "a zero timeout does not wait"
        );
        assert!(matches!(
            a.send(ServerId(9), 0, &frame),
            Err(UdpError::UnknownServer(9))
        ));
    }

    /// The kernel drops datagrams that find a socket's buffer full, counting them nowhere the
    /// node reads: a burst of frames must fit. Without privileges, `net.core.rmem_max` bounds
    /// what a socket gets; this process, if root, gets the whole size asked for.
    #[test]
    fn sockets_get_a_receive_buffer_for_bursts() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let default = receive_buffer(&socket).unwrap();
        let granted = widen_receive_buffer(&socket).unwrap();
        assert_eq!(granted, receive_buffer(&socket).unwrap());
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .map(|s| s.trim().parse().unwrap())
            .unwrap_or(0);
        let floor = if crate::netns::is_root() {
            2 * RECEIVE_BUFFER_BYTES
        } else {
            (2 * rmem_max).min(2 * RECEIVE_BUFFER_BYTES)
        };
        assert!(
            granted >= floor.max(default),
            "{granted} < {floor} (default {default})"
        );
    }

    #[test]
    fn garbage_and_strangers_are_dropped() {
        let (_a, mut b) = pair();
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        stranger.send_to(b"hello", b.local_addr().unwrap()).unwrap();
        assert!(matches!(
            b.recv(Some(Duration::from_secs(2)), &mut Vec::new())
                .unwrap(),
            Some(Datagram::Dropped)
        ));
        assert_eq!(b.stats().unknown_sender, 1);
    }

    /// A frame longer than a datagram once encoded is refused and counted, not sent.
    #[test]
    fn a_frame_longer_than_a_datagram_is_refused_and_counted() {
        let (mut a, mut b) = pair();
        let mut frame = Frame::<()> {
            packet: None,
            flags: 0,
            msg: vec![0; MAX_DATAGRAM],
        };
        let err = a.send(ServerId(1), 1, &frame).unwrap_err();
        let len = MAX_DATAGRAM + ftc_chain::wire::NshRepr::HEADER_LEN;
        assert!(
            matches!(err, UdpError::TooLarge { len: l, max: MAX_DATAGRAM } if l == len),
            "{err}"
        );
        assert_eq!((a.stats().too_large, a.stats().sent), (1, 0));
        assert!(b
            .recv(Some(Duration::from_millis(50)), &mut Vec::new())
            .unwrap()
            .is_none());
        // The longest that fits still goes, and arrives whole.
        frame
            .msg
            .truncate(MAX_DATAGRAM - ftc_chain::wire::NshRepr::HEADER_LEN);
        a.send(ServerId(1), 1, &frame).unwrap();
        match b
            .recv(Some(Duration::from_secs(2)), &mut Vec::new())
            .unwrap()
        {
            Some(Datagram::Frame { received, .. }) => {
                assert_eq!(received.frame.msg, frame.msg);
            }
            other => panic!("expected a frame, got {other:?}"),
        }
        assert_eq!((a.stats().too_large, a.stats().sent), (1, 1));
    }

    /// A datagram longer than [`MAX_DATAGRAM`] is read cut short: it is dropped and counted,
    /// not decoded, whoever sent it.
    #[test]
    fn a_datagram_longer_than_the_largest_is_dropped_as_truncated() {
        let (_a, mut b) = pair();
        let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
        raw.send_to(&[0; 9300], b.local_addr().unwrap()).unwrap();
        assert!(matches!(
            b.recv(Some(Duration::from_secs(2)), &mut Vec::new())
                .unwrap(),
            Some(Datagram::Dropped)
        ));
        let stats = b.stats();
        assert_eq!(
            (
                stats.received,
                stats.truncated,
                stats.unknown_sender,
                stats.malformed
            ),
            (1, 1, 0, 0),
            "{stats:?}"
        );
    }
}
