//! A raw packet socket (AF_PACKET) on one interface: the chain's edges where AF_XDP is not
//! available (an older kernel, a container without BPF). Whole Ethernet frames in and out, one
//! system call per frame: slower than [`crate::xdp::XdpPort`], and needs only CAP_NET_RAW.
//! Frames this socket sends are not read back by it. A frame longer than [`MAX_FRAME`] (an
//! interface's MTU may allow one) is dropped and counted ([`PacketStats::rx_truncated`]), not
//! handed on cut short. The longest frame a socket hands on is [`PacketPort::max_frame`].

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use ftc_forwarder::ETHERNET_HEADER_LEN;

use crate::xdp::{iface_mtu, VLAN_HLEN};

/// Frames handed to the visitor of [`PacketPort::recv_batch`] per call at most.
pub const BATCH: usize = 64;
/// The longest frame read: a jumbo frame.
pub const MAX_FRAME: usize = 9216;
/// `PACKET_IGNORE_OUTGOING` (Linux 4.20): the socket does not see the frames it sends.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// Why a packet socket did not open.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("AF_PACKET: there is no network interface named {0:?}")]
    NoInterface(String),
    #[error("AF_PACKET on {iface}: permission denied: needs root or CAP_NET_RAW")]
    Privileges { iface: String },
    #[error("AF_PACKET on {iface}: {what}: {source}")]
    Io {
        iface: String,
        what: &'static str,
        source: io::Error,
    },
}

/// The socket's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketStats {
    pub rx: u64,
    /// Received frames longer than [`MAX_FRAME`]: read cut short, and dropped.
    pub rx_truncated: u64,
    pub tx: u64,
    /// Frames the kernel refused to send (its queue full, or too long for the link).
    pub tx_failed: u64,
}

/// A raw packet socket bound to one interface.
#[derive(Debug)]
pub struct PacketPort {
    iface: String,
    fd: OwnedFd,
    /// [`PacketPort::max_frame`].
    max_frame: usize,
    buf: Vec<u8>,
    stats: PacketStats,
}

impl PacketPort {
    /// Open a socket on `iface` that sends frames, and receives every frame arriving on it when
    /// `receive` (an output-only socket takes none, so none queue up unread).
    pub fn open(iface: &str, receive: bool) -> Result<PacketPort, PacketError> {
        let io_error = |what| {
            let source = io::Error::last_os_error();
            match source.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => PacketError::Privileges {
                    iface: iface.to_string(),
                },
                _ => PacketError::Io {
                    iface: iface.to_string(),
                    what,
                    source,
                },
            }
        };
        let name = CString::new(iface).map_err(|_| PacketError::NoInterface(iface.into()))?;
        // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(PacketError::NoInterface(iface.into()));
        }
        // Protocol 0 receives nothing; ETH_P_ALL every frame. The socket is made with 0 and
        // takes its protocol at bind, with its interface: made with ETH_P_ALL, it would queue
        // the frames of every interface until bound.
        let protocol = if receive {
            (libc::ETH_P_ALL as u16).to_be()
        } else {
            0
        };
        let kind = libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, kind, 0) };
        if raw < 0 {
            return Err(io_error("socket"));
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = index as i32;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_ll of `len` bytes that outlives the call.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
                len,
            )
        };
        if bound < 0 {
            return Err(io_error("bind"));
        }
        let one: libc::c_int = 1;
        // SAFETY: a c_int option value that outlives the call. A kernel without the option
        // (before 4.20) refuses it: the frames sent then come back and are read as arriving.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_IGNORE_OUTGOING,
                std::ptr::from_ref(&one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let max_frame = iface_mtu(iface).map_or(MAX_FRAME, |mtu| {
            (mtu + ETHERNET_HEADER_LEN + VLAN_HLEN).min(MAX_FRAME)
        });
        Ok(PacketPort {
            iface: iface.to_string(),
            fd,
            max_frame,
            buf: vec![0; MAX_FRAME],
            stats: PacketStats::default(),
        })
    }

    /// The interface's name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    pub fn stats(&self) -> PacketStats {
        self.stats
    }

    /// The longest frame the socket hands on: one of the interface's MTU, with its Ethernet
    /// header and a VLAN tag (the kernel lets a tag through beyond the MTU), within
    /// [`MAX_FRAME`] ([`MAX_FRAME`] itself where the MTU cannot be read), as read at open.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Hand up to [`BATCH`] received frames to `f`, in order; how many. The bytes are valid
    /// during the call only. Of up to [`BATCH`] frames read, those longer than [`MAX_FRAME`] are
    /// dropped and counted instead.
    pub fn recv_batch(&mut self, mut f: impl FnMut(&[u8])) -> io::Result<usize> {
        let mut n = 0;
        let mut read = 0;
        while read < BATCH {
            // SAFETY: `buf` is valid for writes of its length for the call. With MSG_TRUNC a
            // packet socket returns the frame's whole length, even where it wrote less.
            let got = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if got < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(n),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            read += 1;
            if got as usize > self.buf.len() {
                self.stats.rx_truncated += 1;
                continue;
            }
            f(&self.buf[..got as usize]);
            n += 1;
            self.stats.rx += 1;
        }
        Ok(n)
    }

    /// Send `frame` on the interface now.
    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is valid for reads of its length for the call.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            self.stats.tx_failed += 1;
            return Err(io::Error::last_os_error());
        }
        self.stats.tx += 1;
        Ok(())
    }
}

impl AsFd for PacketPort {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
