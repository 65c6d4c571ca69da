//! The AF_XDP port (DESIGN.md §3): raw Ethernet frames in and out of one queue of one network
//! interface through an AF_XDP socket (xsk-rs over libxdp), for the chain's edges and the ring
//! links between servers ([`crate::links`]).
//!
//! One UMEM of 4096-byte frames per port, split once: the first [`XdpConfig::rx_frames`] frames
//! circulate between the fill and rx rings, the others between the port's free list, the tx ring
//! and the completion ring. Nothing is allocated per packet: a received frame is lent to the
//! caller's closure and goes straight back to the fill ring (which so stays full), a frame to send
//! is copied into a free UMEM frame, and completed frames return to the free list.
//!
//! - Frames up to [`XdpPort::max_frame`] bytes (4096 minus the kernel's 256 bytes of XDP
//!   headroom: 3840, less where the interface's MTU plus its Ethernet header is less: 1514 at
//!   an MTU of 1500) pass, and VLAN-tagged ones (802.1Q, 802.1ad) a tag's 4 bytes more within
//!   the 3840 (1518 at an MTU of 1500), as the kernel lets them through on receive and on a
//!   packet socket; a longer one is refused ([`SendError::TooLarge`]) and counted, and the
//!   kernel drops longer ones on receive (see [`KernelStats::rx_dropped`]).
//! - Copy mode by default (any interface whose driver takes an XDP program, veth included: libxdp
//!   attaches its program in native mode, which a bridge or a macvlan refuses,
//!   [`XdpError::NoXdp`]); zero-copy with [`XdpConfig::zero_copy`], where the driver supports it
//!   (opening fails otherwise).
//! - Need-wakeup mode: the kernel is only kicked (a `sendto` or `poll`) when it asks to be.
//! - [`XdpPort`] is [`AsFd`]: the fd is readable when frames wait, so a driver can `poll` it
//!   along with its other sockets.
//! - Opening needs CAP_NET_ADMIN, CAP_NET_RAW and CAP_SYS_ADMIN in effect on the calling thread
//!   (root has them): libxdp attaches its default XDP program to the interface (and detaches it
//!   when the last socket closes; a killed process leaves it attached, and the next port on the
//!   interface reuses it), and looks the program and its map up by id, which CAP_BPF does not
//!   allow (see [`XDP_CAPABILITIES`]). They are checked first, and [`XdpError::Privileges`] names
//!   those missing.
//! - A port's UMEM (8 MiB by default) is locked memory: without CAP_IPC_LOCK, the UMEMs of all
//!   of a user's ports count together against RLIMIT_MEMLOCK (`ulimit -l`, 8 MiB on many
//!   systems), and a port past it is refused ([`XdpError::Memlock`]).
//! - libxdp's and libbpf's own messages go to `tracing` (the private `log` module).

use std::ffi::CString;
use std::io::{self, Write};
use std::num::NonZeroU32;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use ftc_forwarder::ETHERNET_HEADER_LEN;
use xsk_rs::config::{BindFlags, FrameSize, Interface, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::netns::{missing_capabilities, thread_status};

#[cfg(target_arch = "x86_64")]
mod log;

/// How long a node waits for an interface queue that a killed process's AF_XDP socket still
/// holds: the kernel releases it a moment after the process dies, later on a busy machine (2 s
/// proved too short on this 2-core one while a lab run tore the last one down).
pub const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// How often a port waiting for its queue ([`XdpPort::open_when_free`]) tries to bind again.
const RETRY_BIND: Duration = Duration::from_millis(1);

/// Frames handled per ring operation at most.
pub const BATCH: usize = 64;

/// Bytes of a UMEM frame (the kernel's XDP headroom comes off it).
const FRAME_SIZE: u32 = 4096;

/// The capabilities opening a port takes, with their bits in a capability set: CAP_NET_ADMIN
/// (attaching the XDP program), CAP_NET_RAW (the AF_XDP socket) and CAP_SYS_ADMIN (libxdp looks
/// the attached program and its map up by id, `BPF_*_GET_FD_BY_ID`, which only CAP_SYS_ADMIN
/// allows; it covers loading the program too, so CAP_BPF is not needed). Found with capset on a
/// thread: these three open ports on a veth; CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF, even with
/// CAP_PERFMON and CAP_IPC_LOCK, do not (libxdp fails with ENOENT, and the bound queue stays
/// busy a while), nor do any two of the three.
pub const XDP_CAPABILITIES: [(u32, &str); 3] = [
    (12, "CAP_NET_ADMIN"),
    (13, "CAP_NET_RAW"),
    (21, "CAP_SYS_ADMIN"),
];

/// Bytes of a VLAN tag, which the MTU does not count (`VLAN_HLEN`): a tagged frame at the
/// EtherType's place (802.1Q's 0x8100, 802.1ad's 0x88a8) may be that much longer.
pub const VLAN_HLEN: usize = 4;

/// How to open a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpConfig {
    /// The interface's queue to bind (a veth has queue 0).
    pub queue: u32,
    /// Zero-copy mode: the NIC's driver must support it. Otherwise copy mode.
    pub zero_copy: bool,
    /// Frames for receiving, also the fill and rx rings' size; a power of two.
    pub rx_frames: u32,
    /// Frames for transmitting, also the tx and completion rings' size; a power of two.
    pub tx_frames: u32,
}

impl XdpConfig {
    /// The default [`XdpConfig::rx_frames`] and [`XdpConfig::tx_frames`]: 1024 each, a UMEM of
    /// 8 MB per port. Against 2048 each (16 MB), measured in the lab on 2 cores: the same
    /// download throughput, and recoveries 5–20 ms faster (the replacement pins half the pages,
    /// and the killed process's sockets are released sooner). 512 each lost 10 % of NF's
    /// throughput on Ch-2: a ring that short overflows while its node waits for a core.
    pub const DEFAULT_FRAMES: u32 = 1024;

    /// The fewest frames [`XdpConfig::rx_frames`] and [`XdpConfig::tx_frames`] may each be.
    pub const MIN_FRAMES: u32 = 64;

    /// The most frames [`XdpConfig::rx_frames`] and [`XdpConfig::tx_frames`] may each be: a
    /// UMEM of 128 MiB per port at most (`ftc node --xdp-frames` takes up to this).
    pub const MAX_FRAMES: u32 = 16384;

    /// The frames of a port's UMEM (receive and transmit), or why these sizes make no port:
    /// each must be a power of two from [`XdpConfig::MIN_FRAMES`] to
    /// [`XdpConfig::MAX_FRAMES`]. [`XdpPort::open`] checks this first, before any socket.
    pub fn umem_frames(&self) -> Result<NonZeroU32, XdpError> {
        let sizes = [self.rx_frames, self.tx_frames];
        let fits =
            |n: u32| n.is_power_of_two() && (Self::MIN_FRAMES..=Self::MAX_FRAMES).contains(&n);
        self.rx_frames
            .checked_add(self.tx_frames)
            .and_then(NonZeroU32::new)
            .filter(|_| sizes.into_iter().all(fits))
            .ok_or_else(|| {
                XdpError::Config(format!(
                    "rx_frames and tx_frames must be powers of two from {} to {}, not {} and {}",
                    Self::MIN_FRAMES,
                    Self::MAX_FRAMES,
                    self.rx_frames,
                    self.tx_frames
                ))
            })
    }
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            queue: 0,
            zero_copy: false,
            rx_frames: Self::DEFAULT_FRAMES,
            tx_frames: Self::DEFAULT_FRAMES,
        }
    }
}

/// Why a port did not open.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("AF_XDP: there is no network interface named {0:?}")]
    NoInterface(String),
    #[error(
        "AF_XDP on {iface}: permission denied: needs root, or CAP_NET_ADMIN, CAP_NET_RAW and \
         CAP_SYS_ADMIN (CAP_BPF is not enough: libxdp looks its XDP program up by id){}",
        lacking(missing)
    )]
    Privileges {
        iface: String,
        /// The capabilities the opening thread lacks (none known where the kernel refused one
        /// that all of them were in effect for: in a user namespace, say).
        missing: Vec<&'static str>,
    },
    #[error(
        "AF_XDP on {iface}: cannot lock the port's UMEM of {bytes} bytes ({source}): without \
         CAP_IPC_LOCK a user's AF_XDP UMEMs together count against the locked-memory limit \
         (RLIMIT_MEMLOCK, `ulimit -l`): raise it, grant CAP_IPC_LOCK, or give ports fewer frames \
         (`ftc node --xdp-frames`)"
    )]
    Memlock {
        iface: String,
        bytes: u64,
        source: io::Error,
    },
    #[error("AF_XDP: this kernel lacks AF_XDP sockets (CONFIG_XDP_SOCKETS)")]
    Unsupported,
    #[error("AF_XDP on {iface}: the driver does not support zero-copy mode (use copy mode)")]
    NoZeroCopy { iface: String },
    #[error(
        "AF_XDP on {iface}: the interface's driver does not take an XDP program (a bridge or a \
         macvlan, say), which an AF_XDP socket needs; an edge there can use a raw packet socket \
         instead (`ftc node --edge-kind packet`)"
    )]
    NoXdp { iface: String },
    #[error("AF_XDP on {iface} queue {queue}: busy (another socket or XDP program holds it)")]
    Busy { iface: String, queue: u32 },
    #[error(
        "AF_XDP on {iface}: no queue {queue}: the interface has {queues} queue(s) (a \
         veth gets more with `ip link add … numtxqueues N numrxqueues N`, at both ends)"
    )]
    NoQueue {
        iface: String,
        queue: u32,
        queues: u32,
    },
    #[error("AF_XDP: {0}")]
    Config(String),
    #[error("AF_XDP on {iface}: {what}: {source}")]
    Io {
        iface: String,
        what: &'static str,
        source: io::Error,
    },
}

/// Why a frame was not queued for sending (counted in [`XdpStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("frame of {len} bytes exceeds the port's {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("no free transmit frame: the kernel has not completed earlier ones")]
    Full,
}

/// The port's own counters (the kernel's of its socket: [`XdpPort::kernel_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Frames received.
    pub rx: u64,
    /// Frames handed to the kernel for sending.
    pub tx: u64,
    /// Frames refused for being longer than [`XdpPort::max_frame`] (a tagged one: its tag more).
    pub tx_too_large: u64,
    /// Frames refused because every transmit frame was in flight.
    pub tx_full: u64,
    /// Received frames the fill ring had no room for at once (handed back at the next batch).
    pub rx_refill_deferred: u64,
}

/// The kernel's counters of the socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Received frames dropped for other reasons: too long for a UMEM frame, or no free frame
    /// on the fill ring (the port's reader fell behind), among others.
    pub rx_dropped: u64,
    /// Received frames dropped because the rx ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
}

/// Counters of several sockets summed.
impl std::ops::AddAssign for KernelStats {
    fn add_assign(&mut self, other: KernelStats) {
        self.rx_dropped += other.rx_dropped;
        self.rx_ring_full += other.rx_ring_full;
        self.rx_fill_ring_empty += other.rx_fill_ring_empty;
        self.rx_invalid_descs += other.rx_invalid_descs;
        self.tx_invalid_descs += other.tx_invalid_descs;
    }
}

/// An AF_XDP socket on one interface queue, with its UMEM.
#[derive(Debug)]
pub struct XdpPort {
    iface: String,
    umem: Umem,
    fill: FillQueue,
    comp: CompQueue,
    tx: TxQueue,
    rx: RxQueue,
    /// Descriptors read off the rx or completion ring, one batch.
    batch: Vec<FrameDesc>,
    /// Transmit frames owned here and unused.
    free: Vec<FrameDesc>,
    /// Transmit frames written and not yet on the tx ring.
    queued: Vec<FrameDesc>,
    /// Received frames not yet back on the fill ring: the kernel may publish its progress on
    /// the fill ring later than the frames it filled (seen on veth in copy mode), so there is
    /// not always room for them at once.
    unfilled: Vec<FrameDesc>,
    tx_ring: u32,
    /// Whether the last flush left frames on the tx ring: the kernel took no more for now
    /// (its socket's send buffer full, say), and they go only with another kick.
    unsent: bool,
    max_frame: usize,
    /// The longest VLAN-tagged frame: a tag longer than `max_frame`, within a UMEM frame.
    max_tagged: usize,
    stats: XdpStats,
}

impl XdpPort {
    /// Open a port on `iface`, queue `config.queue`.
    pub fn open(iface: &str, config: XdpConfig) -> Result<XdpPort, XdpError> {
        XdpPort::open_when_free(iface, config, Duration::ZERO)
    }

    /// [`XdpPort::open`], waiting up to `wait` (say [`RELEASE_WAIT`]) while the queue is still
    /// bound: the kernel releases a killed process's AF_XDP socket a moment after it dies (tens
    /// of milliseconds, more on a busy machine), and its replacement opens the same queue. The
    /// UMEM is made once; only the socket is tried again, every `RETRY_BIND` (1 ms), which costs
    /// a fraction of a millisecond (making the UMEM pins its pages: several milliseconds). A
    /// setup that libxdp fails with ENOENT meanwhile (the XDP program's maps not found, seen
    /// rarely in the lab right after a kill) starts over with a new UMEM. A thread without
    /// [`XDP_CAPABILITIES`], with which libxdp fails so too, is refused before any of this.
    pub fn open_when_free(
        iface: &str,
        config: XdpConfig,
        wait: Duration,
    ) -> Result<XdpPort, XdpError> {
        #[cfg(target_arch = "x86_64")]
        log::route();
        let frames = config.umem_frames()?;
        let name = CString::new(iface).map_err(|_| XdpError::NoInterface(iface.into()))?;
        // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
        if unsafe { libc::if_nametoindex(name.as_ptr()) } == 0 {
            return Err(XdpError::NoInterface(iface.into()));
        }
        // Without them libxdp fails half-way, with errors that do not say why.
        let missing = capabilities_lacking();
        if !missing.is_empty() {
            return Err(XdpError::Privileges {
                iface: iface.into(),
                missing,
            });
        }
        probe(iface)?;
        let io_error = |what| {
            let iface = iface.to_string();
            move |source: io::Error| classify(&iface, config, what, source)
        };
        let umem_config = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE).map_err(config_error)?)
            .fill_queue_size(QueueSize::new(config.rx_frames).map_err(config_error)?)
            .comp_queue_size(QueueSize::new(config.tx_frames).map_err(config_error)?)
            .frame_headroom(0)
            .build()
            .map_err(config_error)?;
        // What the UMEM frame holds, and no more than the interface's MTU (which does not count
        // the Ethernet header) lets through: the peer's kernel drops longer frames on receive.
        let room = umem_config.mtu() as usize;
        let max_frame = room.min(iface_mtu(iface).map_or(usize::MAX, |m| m + ETHERNET_HEADER_LEN));
        let max_tagged = room.min(max_frame + VLAN_HLEN);
        let mut bind = BindFlags::XDP_USE_NEED_WAKEUP;
        bind |= if config.zero_copy {
            BindFlags::XDP_ZEROCOPY
        } else {
            BindFlags::XDP_COPY
        };
        let socket_config = SocketConfig::builder()
            .rx_queue_size(QueueSize::new(config.rx_frames).map_err(config_error)?)
            .tx_queue_size(QueueSize::new(config.tx_frames).map_err(config_error)?)
            .bind_flags(bind)
            .build();
        let interface = Interface::new(name);
        let deadline = std::time::Instant::now() + wait;
        let waiting = || std::time::Instant::now() < deadline;
        let (umem, mut descs, (tx, rx, rings)) = loop {
            let (umem, descs) = Umem::new(umem_config, frames, false)
                .map_err(|e| io_error("UMEM")(os_error(&e)))?;
            let socket = loop {
                // SAFETY: the UMEM is new and not shared, so no other socket is bound with it
                // (a bind refused as busy leaves none bound: xsk-rs and libxdp keep the UMEM's
                // fill and completion rings for the next try).
                match unsafe { Socket::new(socket_config, &umem, &interface, config.queue) }
                    .map_err(|e| io_error("socket")(os_error(&e)))
                {
                    Err(XdpError::Busy { .. }) if waiting() => std::thread::sleep(RETRY_BIND),
                    socket => break socket,
                }
            };
            match socket {
                Ok(socket) => break (umem, descs, socket),
                // Seen (rarely) while a killed process's sockets go: libxdp did not find the
                // XDP program's maps. The socket may be bound by then, so the UMEM goes too, and
                // a new one tries again.
                Err(XdpError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT) && waiting() =>
                {
                    tracing::warn!("AF_XDP on {iface}: {source} while setting up; trying again");
                    std::thread::sleep(RETRY_BIND);
                }
                Err(e) => return Err(e),
            }
        };
        let (mut fill, comp) = rings.expect("a UMEM of its own comes with its fill and comp rings");
        let free = descs.split_off(config.rx_frames as usize);
        // SAFETY: the receive frames are this UMEM's and owned here; the fill ring (as large as
        // their count) takes them all.
        let filled = unsafe { fill.produce(&descs) };
        debug_assert_eq!(filled, descs.len());
        tracing::debug!(
            "AF_XDP port on {iface} queue {}: {} mode, {max_frame}-byte frames",
            config.queue,
            if config.zero_copy {
                "zero-copy"
            } else {
                "copy"
            }
        );
        Ok(XdpPort {
            iface: iface.to_string(),
            umem,
            fill,
            comp,
            tx,
            rx,
            batch: vec![FrameDesc::default(); BATCH],
            queued: Vec::with_capacity(free.len()),
            unfilled: Vec::with_capacity(config.rx_frames as usize),
            free,
            tx_ring: config.tx_frames,
            unsent: false,
            max_frame,
            max_tagged,
            stats: XdpStats::default(),
        })
    }

    /// The interface's name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The longest untagged frame the port sends or receives: what a UMEM frame holds, bounded
    /// by the interface's MTU (plus its Ethernet header) when the MTU can be read. A VLAN-tagged
    /// frame may be a tag's 4 bytes longer, within what the UMEM frame holds.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The longest frame the port receives (or sends VLAN-tagged): [`XdpPort::max_frame`] and a
    /// tag, which the kernel lets through beyond the MTU, within what a UMEM frame holds.
    pub fn max_tagged(&self) -> usize {
        self.max_tagged
    }

    pub fn stats(&self) -> XdpStats {
        self.stats
    }

    /// The kernel's counters of the socket, read now: its drops on receive among them, which
    /// the port's own counters cannot see.
    pub fn kernel_stats(&self) -> io::Result<KernelStats> {
        let s = self.rx.fd().xdp_statistics()?;
        Ok(KernelStats {
            rx_dropped: s.rx_dropped(),
            rx_ring_full: s.rx_ring_full(),
            rx_fill_ring_empty: s.rx_fill_ring_empty_descs(),
            rx_invalid_descs: s.rx_invalid_descs(),
            tx_invalid_descs: s.tx_invalid_descs(),
        })
    }

    /// Wait up to `timeout` for received frames; whether some wait.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd that outlives the call.
        match unsafe { libc::poll(&mut pfd, 1, ms) } {
            n if n >= 0 => Ok(n > 0),
            _ => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::Interrupted => Ok(false),
                e => Err(e),
            },
        }
    }

    /// Hand up to [`BATCH`] received frames to `f`, in order; how many. The bytes are the UMEM
    /// frame's, valid during the call only.
    pub fn recv_batch(&mut self, mut f: impl FnMut(&[u8])) -> io::Result<usize> {
        self.refill();
        // SAFETY: the descriptors are filled in from this socket's rx ring, so they are this
        // UMEM's frames.
        let n = unsafe { self.rx.consume(&mut self.batch) };
        for desc in &self.batch[..n] {
            // SAFETY: the kernel handed the frame over on the rx ring and gets it back only
            // below, so nothing writes to it meanwhile.
            f(unsafe { self.umem.data(desc) }.contents());
        }
        if n > 0 {
            self.unfilled.extend_from_slice(&self.batch[..n]);
            self.refill();
            self.stats.rx += n as u64;
        }
        if self.fill.needs_wakeup() {
            self.fill.wakeup(self.rx.fd_mut(), 0)?;
        }
        Ok(n)
    }

    /// Queue `frame` for sending: copied into a free UMEM frame, on the tx ring once
    /// [`BATCH`] are queued or at [`XdpPort::flush`].
    pub fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        let max = match frame.get(12..14) {
            Some(&[0x81, 0x00] | &[0x88, 0xa8]) => self.max_tagged,
            _ => self.max_frame,
        };
        if frame.len() > max {
            self.stats.tx_too_large += 1;
            return Err(SendError::TooLarge {
                len: frame.len(),
                max,
            });
        }
        if self.free.is_empty() {
            // Whatever the kernel finished with; failing that, push the queue and look again.
            self.reap();
            if self.free.is_empty() {
                let _ = self.flush();
            }
        }
        let Some(mut desc) = self.free.pop() else {
            self.stats.tx_full += 1;
            return Err(SendError::Full);
        };
        // SAFETY: the frame is this UMEM's and on no ring (it came from the free list).
        let mut data = unsafe { self.umem.data_mut(&mut desc) };
        let mut cursor = data.cursor();
        cursor.set_pos(0);
        cursor
            .write_all(frame)
            .expect("the frame fits: its length was checked");
        self.queued.push(desc);
        if self.queued.len() >= BATCH {
            let _ = self.flush();
        }
        Ok(())
    }

    /// Put the queued frames on the tx ring, kick the kernel and take back the frames it sent.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.queued.is_empty() {
            // SAFETY: the queued frames are this UMEM's and on no ring; the tx ring is as large
            // as the transmit frames, so it has room for every one not in it.
            let n = unsafe { self.tx.produce(&self.queued) };
            debug_assert_eq!(n, self.queued.len());
            self.queued.drain(..n);
            self.stats.tx += n as u64;
        }
        // In copy mode one kick sends a bounded batch (32 frames in Linux): kick until the ring
        // is drained or the kernel stops asking (zero-copy drivers send on their own).
        for _ in 0..=self.tx_ring / 16 {
            self.reap();
            if self.tx.nb_free_exact() == self.tx_ring || !self.tx.needs_wakeup() {
                break;
            }
            self.tx.wakeup()?;
        }
        self.reap();
        self.unsent = self.tx.nb_free_exact() < self.tx_ring && self.tx.needs_wakeup();
        Ok(())
    }

    /// Whether frames wait on the tx ring for another [`XdpPort::flush`]: the kernel refused
    /// the last kicks (it answers a copy-mode kick with EAGAIN while its socket's send buffer
    /// is full). A driver that goes idle must flush again soon, or they wait for its next
    /// frame, which may never come: a chain whose retransmission requests sit here stalls.
    pub fn unsent(&self) -> bool {
        self.unsent
    }

    /// Received frames back to the fill ring, as many as it has room for (all at once, else one
    /// by one); the rest wait for the next batch.
    fn refill(&mut self) {
        if self.unfilled.is_empty() {
            return;
        }
        // SAFETY: the frames came off the rx ring, are this UMEM's and are no longer used here.
        let mut done = unsafe { self.fill.produce(&self.unfilled) };
        if done == 0 {
            self.stats.rx_refill_deferred += 1;
            while done < self.unfilled.len()
                // SAFETY: as above.
                && unsafe { self.fill.produce_one(&self.unfilled[done]) } == 1
            {
                done += 1;
            }
        }
        self.unfilled.drain(..done);
    }

    /// Frames the kernel finished sending, back to the free list.
    fn reap(&mut self) {
        loop {
            // SAFETY: the completion ring returns this UMEM's transmit frames.
            let n = unsafe { self.comp.consume(&mut self.batch) };
            if n == 0 {
                return;
            }
            self.free.extend_from_slice(&self.batch[..n]);
        }
    }
}

/// Readable when received frames wait.
impl AsFd for XdpPort {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the socket's fd stays open as long as its queues, which `self` owns.
        unsafe { BorrowedFd::borrow_raw(self.rx.fd().as_raw_fd()) }
    }
}

/// Whether this process may open AF_XDP sockets at all, with a clear error if not.
fn probe(iface: &str) -> Result<(), XdpError> {
    // SAFETY: plain socket(2) call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EAFNOSUPPORT) => XdpError::Unsupported,
            Some(libc::EPERM | libc::EACCES) => XdpError::Privileges {
                iface: iface.into(),
                missing: capabilities_lacking(),
            },
            _ => XdpError::Io {
                iface: iface.into(),
                what: "socket",
                source: e,
            },
        });
    }
    // SAFETY: `fd` was just opened here and is closed once.
    unsafe { libc::close(fd) };
    Ok(())
}

/// An error of xsk-rs's as the OS error under it.
fn os_error(e: &dyn std::error::Error) -> io::Error {
    match e.source().and_then(|s| s.downcast_ref::<io::Error>()) {
        Some(io) => match io.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(io.kind(), io.to_string()),
        },
        None => io::Error::other(e.to_string()),
    }
}

/// A port on each `(interface, queue)` of `sockets` (`config` otherwise), as
/// [`XdpPort::open_when_free`] opens them: the interfaces all at once, so that a replacement's
/// ports are ready together as soon as the killed process's sockets are gone (their UMEMs made
/// meanwhile), and the queues of one interface one after the other (the first attaches the XDP
/// program the others share; two attaching at once collide). In the order of `sockets`.
pub fn open_each(
    sockets: &[(&str, u32)],
    config: XdpConfig,
    wait: Duration,
) -> Vec<Result<XdpPort, XdpError>> {
    let mut ifaces: Vec<&str> = Vec::new();
    for &(iface, _) in sockets {
        if !ifaces.contains(&iface) {
            ifaces.push(iface);
        }
    }
    let mut opened: Vec<_> = std::thread::scope(|s| {
        let opening: Vec<_> = ifaces
            .iter()
            .map(|&iface| {
                s.spawn(move || {
                    let queues = sockets.iter().filter(|&&(i, _)| i == iface);
                    let open = |&(_, queue): &(&str, u32)| {
                        XdpPort::open_when_free(iface, XdpConfig { queue, ..config }, wait)
                    };
                    queues.map(open).collect::<Vec<_>>().into_iter()
                })
            })
            .collect();
        opening
            .into_iter()
            .map(|o| o.join().expect("opening a port does not panic"))
            .collect()
    });
    sockets
        .iter()
        .map(|(iface, _)| {
            let i = ifaces
                .iter()
                .position(|i| i == iface)
                .expect("listed above");
            opened[i].next().expect("one port per socket asked for")
        })
        .collect()
}

/// A failed UMEM or socket creation, by its errno.
fn classify(iface: &str, config: XdpConfig, what: &'static str, source: io::Error) -> XdpError {
    let iface = iface.to_string();
    match source.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => XdpError::Privileges {
            iface,
            missing: capabilities_lacking(),
        },
        // The UMEM's pages are past the locked-memory limit (ENOBUFS), or could not be pinned.
        Some(libc::ENOBUFS | libc::ENOMEM) if what == "UMEM" => XdpError::Memlock {
            iface,
            bytes: config.umem_frames().map_or(0, |n| u64::from(n.get())) * u64::from(FRAME_SIZE),
            source,
        },
        Some(libc::EBUSY) => XdpError::Busy {
            iface,
            queue: config.queue,
        },
        Some(libc::EOPNOTSUPP) if config.zero_copy => XdpError::NoZeroCopy { iface },
        // libxdp attaches its program in native mode, which a driver without XDP refuses.
        Some(libc::EOPNOTSUPP) => XdpError::NoXdp { iface },
        Some(libc::ENODEV) => XdpError::NoInterface(iface),
        Some(libc::EINVAL) => match xdp_queues(&iface) {
            Some(queues) if config.queue >= queues => XdpError::NoQueue {
                queue: config.queue,
                iface,
                queues,
            },
            _ => XdpError::Io {
                iface,
                what,
                source,
            },
        },
        _ => XdpError::Io {
            iface,
            what,
            source,
        },
    }
}

/// Which of [`XDP_CAPABILITIES`] the calling thread lacks (none where its status cannot be read:
/// the kernel then says).
fn capabilities_lacking() -> Vec<&'static str> {
    thread_status()
        .map(|status| missing_capabilities(&status, &XDP_CAPABILITIES))
        .unwrap_or_default()
}

/// The end of [`XdpError::Privileges`]'s message: the capabilities missing, if known.
fn lacking(missing: &[&str]) -> String {
    match missing {
        [] => String::new(),
        _ => format!("; this thread lacks {}", missing.join(", ")),
    }
}

fn config_error(e: impl std::fmt::Display) -> XdpError {
    XdpError::Config(e.to_string())
}

/// How many queues an AF_XDP socket may bind on interface `iface` of the calling thread's
/// network namespace, if the driver says: the kernel refuses a queue id at or past both its
/// receive and its transmit queues, and the driver counts them (`ETHTOOL_GCHANNELS`) as
/// dedicated ones plus combined ones. Asked on a socket made here, as [`iface_mtu`] asks, since
/// sysfs shows the process's namespace and not that of a thread that entered another.
fn xdp_queues(iface: &str) -> Option<u32> {
    /// `struct ethtool_channels` of `<linux/ethtool.h>`.
    #[repr(C)]
    #[derive(Default)]
    struct Channels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx: u32,
        tx: u32,
        other: u32,
        combined: u32,
    }
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    let mut channels = Channels {
        cmd: ETHTOOL_GCHANNELS,
        ..Channels::default()
    };
    let mut req = ifreq(iface)?;
    req.ifr_ifru.ifru_data = (&raw mut channels).cast();
    // SAFETY: SIOCETHTOOL reads the command from and writes the counts into `channels`, which
    // the request points to and which outlives the call.
    unsafe { ioctl(libc::SIOCETHTOOL, &mut req)? };
    Some(
        channels
            .rx
            .max(channels.tx)
            .saturating_add(channels.combined),
    )
}

/// The MTU of interface `iface` in the calling thread's network namespace, if it can be read:
/// asked of the kernel (`SIOCGIFMTU`) on a socket made here, which is of the namespace the
/// thread is in. Sysfs shows the process's namespace instead, not that of a thread that entered
/// another with `setns` (ports opened inside [`crate::netns::Netns::run`]): there it found no
/// such interface, or a same-named one of the wrong namespace.
pub fn iface_mtu(iface: &str) -> Option<usize> {
    let mut req = ifreq(iface)?;
    // SAFETY: SIOCGIFMTU reads the name from and writes the MTU into `req`.
    unsafe { ioctl(libc::SIOCGIFMTU, &mut req)? };
    // SAFETY: a successful SIOCGIFMTU filled in the union's MTU.
    usize::try_from(unsafe { req.ifr_ifru.ifru_mtu }).ok()
}

/// A request naming interface `iface`; `None` for a name no interface can have.
fn ifreq(iface: &str) -> Option<libc::ifreq> {
    // SAFETY: an all-zero ifreq is valid (a C struct of integers and arrays).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = iface.as_bytes();
    // The name and its NUL fit (the rest of the array stays zero).
    if name.len() >= req.ifr_name.len() || name.contains(&0) {
        return None;
    }
    for (to, &from) in req.ifr_name.iter_mut().zip(name) {
        *to = from as libc::c_char;
    }
    Some(req)
}

/// An interface ioctl `request` on `req`, on a socket of the calling thread's network
/// namespace; `None` where it fails.
///
/// # Safety
/// `req` must be what `request` reads and writes, pointers in it included.
unsafe fn ioctl(request: libc::Ioctl, req: &mut libc::ifreq) -> Option<()> {
    // SAFETY: plain socket(2) call; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just opened here and is owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the caller vouches for `req` (see above).
    (unsafe { libc::ioctl(socket.as_raw_fd(), request, req) } == 0).then_some(())
}

#[cfg(test)]
mod tests {
    use super::{iface_mtu, XdpConfig, XdpError};

    /// A port's sizes are checked before anything opens: powers of two in bounds make a UMEM of
    /// both rings' frames; others, sums past a u32 included, are a configuration error.
    #[test]
    fn ring_sizes_are_checked_before_a_port_opens() {
        let sizes = |rx_frames, tx_frames| {
            XdpConfig {
                rx_frames,
                tx_frames,
                ..XdpConfig::default()
            }
            .umem_frames()
        };
        assert_eq!(XdpConfig::default().umem_frames().unwrap().get(), 2048);
        assert_eq!(sizes(64, XdpConfig::MAX_FRAMES).unwrap().get(), 64 + 16384);
        for (rx, tx) in [
            (1 << 31, 1 << 31),
            (1 << 31, 64),
            (XdpConfig::MAX_FRAMES * 2, 64),
            (32, 64),
            (100, 64),
            (0, 0),
        ] {
            let err = sizes(rx, tx).unwrap_err();
            assert!(matches!(err, XdpError::Config(_)), "{rx} and {tx}: {err}");
            assert!(err.to_string().contains("from 64 to 16384"), "{err}");
        }
    }

    /// A port's longest frame is bounded by its interface's MTU, which the kernel gives as sysfs
    /// shows it (this thread is in the process's namespace); an interface that is not there, or
    /// a name no interface can have, has none to read.
    #[test]
    fn interface_mtus_are_asked_of_the_kernel() {
        let lo = std::fs::read_to_string("/sys/class/net/lo/mtu");
        match lo {
            Ok(text) => assert_eq!(iface_mtu("lo"), text.trim().parse().ok()),
            Err(_) => eprintln!("skipped the loopback half: no /sys/class/net/lo/mtu here"),
        }
        assert_eq!(iface_mtu("no-such-iface"), None);
        assert_eq!(iface_mtu("a-name-too-long-for-linux"), None);
        assert_eq!(iface_mtu("l\0o"), None);
    }
}
