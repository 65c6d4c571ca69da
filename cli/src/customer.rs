//! Where customer frames enter and leave the chain: the options `ftc node` takes for itself and
//! `ftc orchestrator` passes on to the replacements of the chain's end servers.

use std::net::SocketAddr;

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
    /// CAP_NET_ADMIN+CAP_NET_RAW+CAP_BPF; packet sockets: CAP_NET_RAW).
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
    /// as the middlebox has threads, each lane (thread) reads and sends on queues of its own.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub edge_queues: u32,
}
