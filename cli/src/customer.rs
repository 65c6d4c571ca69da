//! Where customer frames enter and leave the chain, and how AF_XDP sockets open: the options
//! `ftc node` takes for itself and `ftc orchestrator` passes on to its replacements.

use std::net::SocketAddr;

use ftc_node::xdp::XdpConfig;
use ftc_orchestrator::process::edges::{Edge, EdgeKind};

#[derive(Debug, clap::Args)]
pub struct CustomerArgs {
    /// Server 0: the UDP address customer frames arrive at.
    #[arg(long, value_name = "ADDR")]
    pub ingress: Option<SocketAddr>,
    /// The last server: the UDP address released customer frames go to.
    #[arg(long, value_name = "ADDR")]
    pub egress: Option<SocketAddr>,
    /// Server 0: customer frames arrive on interface IFACE, all of direction DIR (`out`: client
    /// to server, `in`: server to client). Repeatable. Needs root (AF_XDP:
    /// CAP_NET_ADMIN+CAP_NET_RAW+CAP_SYS_ADMIN; packet sockets: CAP_NET_RAW).
    #[arg(long, value_name = "DIR=IFACE")]
    pub edge_in: Vec<Edge>,
    /// The last server: released frames of direction DIR (`out` or `in`) leave on interface
    /// IFACE, unchanged (a bump in the wire at L2). Repeatable. Needs root.
    #[arg(long, value_name = "DIR=IFACE")]
    pub edge_out: Vec<Edge>,
    /// The sockets of the edges: `xdp` (AF_XDP) or `packet` (raw AF_PACKET sockets, where
    /// AF_XDP is not available; slower, needs CAP_NET_RAW only).
    #[arg(long, default_value = "xdp", value_name = "xdp|packet")]
    pub edge_kind: EdgeKind,
    /// AF_XDP edges: the queues of each edge interface to bind, 1 to 64, from `ftc node`'s
    /// --xdp-queue on. On a NIC that spreads frames over several queues (RSS), a frame on a
    /// queue without a socket passes the chain by: bind them all. With at least as many queues
    /// as the middlebox has threads, each lane (thread) reads and sends on queues of its own
    /// (not with --observe, --ingress or --egress, which keep the edges on the node's thread).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub edge_queues: u32,
    /// AF_XDP edges (and ring links) in zero-copy mode (the NIC driver must support it); copy
    /// mode otherwise.
    #[arg(long)]
    pub xdp_zero_copy: bool,
    /// The interface queue the AF_XDP edges and ring links bind.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub xdp_queue: u32,
    /// Frames of each AF_XDP port's rx ring, and as many of its tx ring (4 KiB each, in one
    /// UMEM): a power of two from 64 to 16384. Longer rings ride out longer waits for a core
    /// at a high rate; shorter ones pin less memory, so a replacement starts sooner.
    #[arg(long, value_name = "N", default_value_t = XdpConfig::DEFAULT_FRAMES, value_parser = parse_frames)]
    pub xdp_frames: u32,
}

impl CustomerArgs {
    /// How the AF_XDP ports open.
    pub fn xdp(&self) -> XdpConfig {
        XdpConfig {
            queue: self.xdp_queue,
            zero_copy: self.xdp_zero_copy,
            rx_frames: self.xdp_frames,
            tx_frames: self.xdp_frames,
        }
    }
}

/// `N` of `--xdp-frames`.
fn parse_frames(text: &str) -> Result<u32, String> {
    let (min, max) = (XdpConfig::MIN_FRAMES, XdpConfig::MAX_FRAMES);
    match text.parse::<u32>() {
        Ok(n) if n.is_power_of_two() && (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?}: expected a power of two from {min} to {max}"
        )),
    }
}
