//! A lab's topology, pure: which namespaces, links and addresses a chain of n servers gets, and
//! the iproute2, sysctl and ethtool operations that make them, in order.
//!
//! ```text
//!  root namespace: bridge {p}-mgmt, 10.77.X.1/24 (the orchestrator listens there)
//!                    │ {p}-m0            │ {p}-m1               │ {p}-m(n-1)
//!                    │ mgmt 10.77.X.10   │ mgmt 10.77.X.11   …  │ mgmt 10.77.X.(9+n)
//!  client eth0 ── cli-in ┌────┐ to1  from0 ┌────┐         ┌────────┐ cli-out ── client eth1
//!  server eth0 ── srv-in │ s0 ├───────────►│ s1 ├── … ───►│ s(n-1) │ srv-out ── server eth1
//!                        └────┘◄───────────────────────────┴────────┘
//!                      from(n-1)      ring-closing link          to0
//! ```
//!
//! The FTMB baselines get twice the middleboxes' servers, s(2i) the logger of middlebox i and
//! s(2i+1) its master, linked as FTMB's frames travel (no ring-closing link): each logger to its
//! master (`to{2i+1}`/`from{2i}`, both ways) and to the next logger (`to{2i+2}`/`from{2i}`);
//! customer frames enter at s0 and leave at the last logger, s(2k-2).
//!
//! The chain is an L2 bump in the wire: the client's eth0 and eth1 share one MAC, the server's
//! too, so a frame the chain releases is taken whichever of its host's interfaces it arrives on.
//! Client and server are 10.78.0.1 and 10.78.0.2 on one /24 with permanent neighbours (no ARP
//! crosses the chain); a NAT's public address is routed from the server back to the client, a
//! load balancer's virtual address from the client to the server, which holds its backends.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ftc_chain::spec::{ChainSpec, MiddleboxKind};
use ftc_node::Mode;
use serde::{Deserialize, Serialize};

use super::ops::Op;

/// The longest lab name: root-namespace link names (`{name}-m{i}`) must fit in 15 bytes.
pub const MAX_NAME: usize = 8;

/// The host part of server 0's management address; server i has `MGMT_FIRST + i`.
const MGMT_FIRST: u8 = 10;

/// The most servers a lab holds (their management addresses end at .254).
pub const MAX_SERVERS: u16 = (254 - MGMT_FIRST as u16) + 1;

/// The MTU of the ring links: room for the piggyback trailer (about 2 KB) behind a full
/// customer frame, and no more than XDP takes on a veth (a page less headroom and the skb's
/// tail: about 3.5 KB; a larger MTU makes AF_XDP sockets fail with ERANGE).
const RING_MTU: u32 = 3500;

/// The longest frame the ring links carry, Ethernet header included.
pub const RING_MAX_FRAME: usize = RING_MTU as usize + 14;

/// The prefix length of the management network and of the customer network.
const PREFIX: u8 = 24;

/// The interfaces of server 0 and of the last server that face the client and the server.
pub const CLI_IN: &str = "cli-in";
pub const SRV_IN: &str = "srv-in";
pub const CLI_OUT: &str = "cli-out";
pub const SRV_OUT: &str = "srv-out";

/// The management interface in every server's namespace.
const MGMT_IFACE: &str = "mgmt";

/// Why a lab cannot be planned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopologyError {
    #[error(
        "bad lab name {0:?}: 1 to {MAX_NAME} lowercase letters and digits, starting with a letter"
    )]
    Name(String),
    #[error("a lab holds at most {MAX_SERVERS} servers; this chain has {0}")]
    TooManyServers(usize),
}

/// A lab's name: the prefix of everything it makes (`{name}-client`, `{name}-s0`, …). Letters
/// and digits only, so that no lab's names can be another lab's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LabName(String);

impl LabName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `namespace` is a name this lab gives its namespaces: `{name}-client`,
    /// `{name}-server`, or `{name}-s` and a server's number as the lab writes it.
    pub fn owns_namespace(&self, namespace: &str) -> bool {
        self.tail(namespace)
            .is_some_and(|rest| matches!(rest, "client" | "server") || numbered(rest, 's'))
    }

    /// Whether `link` is a name this lab gives its links in the root namespace: `{name}-mgmt`,
    /// or `{name}-m` and a server's number as the lab writes it.
    pub fn owns_link(&self, link: &str) -> bool {
        self.tail(link)
            .is_some_and(|rest| rest == "mgmt" || numbered(rest, 'm'))
    }

    /// What follows `{name}-` in `object`, if it starts so.
    fn tail<'a>(&self, object: &'a str) -> Option<&'a str> {
        object.strip_prefix(self.0.as_str())?.strip_prefix('-')
    }
}

/// Whether `rest` is `tag` and a server's number as a lab writes it: decimal, without a sign or a
/// leading zero, below [`MAX_SERVERS`].
fn numbered(rest: &str, tag: char) -> bool {
    rest.strip_prefix(tag).is_some_and(|n| {
        n.parse::<u16>()
            .is_ok_and(|i| i < MAX_SERVERS && i.to_string() == n)
    })
}

impl FromStr for LabName {
    type Err = TopologyError;

    fn from_str(s: &str) -> Result<LabName, TopologyError> {
        let ok = (1..=MAX_NAME).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(LabName(s.to_string()))
        } else {
            Err(TopologyError::Name(s.to_string()))
        }
    }
}

impl TryFrom<String> for LabName {
    type Error = TopologyError;

    fn try_from(s: String) -> Result<LabName, TopologyError> {
        s.parse()
    }
}

impl From<LabName> for String {
    fn from(name: LabName) -> String {
        name.0
    }
}

impl fmt::Display for LabName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An end host of the lab: the client or the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// Its namespace is `{name}-{role}`.
    pub role: &'static str,
    /// On its eth0.
    pub ip: Ipv4Addr,
    /// Of both its interfaces.
    pub mac: [u8; 6],
}

impl Host {
    pub fn mac_text(&self) -> String {
        let m = self.mac;
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// The client: where connections start (outbound traffic enters the chain from it).
pub const CLIENT: Host = Host {
    role: "client",
    ip: Ipv4Addr::new(10, 78, 0, 1),
    mac: [0x02, 0x00, 0x0a, 0x4e, 0x00, 0x01],
};

/// The server: what the client connects to.
pub const SERVER: Host = Host {
    role: "server",
    ip: Ipv4Addr::new(10, 78, 0, 2),
    mac: [0x02, 0x00, 0x0a, 0x4e, 0x00, 0x02],
};

/// How a lab's servers are linked: as FTC's (and NF's) ring, or as the FTMB baselines' loggers
/// and masters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    #[default]
    Ring,
    Ftmb,
}

impl Layout {
    /// The layout that runs `mode`.
    pub fn of(mode: Mode) -> Layout {
        if mode.is_ftmb() {
            Layout::Ftmb
        } else {
            Layout::Ring
        }
    }
}

/// Everything a lab is made of, from a chain spec, a layout, a name and a management subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub name: LabName,
    /// The management network is 10.77.`subnet`.0/24 (one per lab, so labs can coexist).
    pub subnet: u8,
    #[serde(default)]
    pub layout: Layout,
    /// The servers: the ring's, or FTMB's two per middlebox.
    pub servers: u16,
    /// The public addresses of the chain's NATs: the server routes them back to the client.
    pub nat_ips: Vec<Ipv4Addr>,
    /// The virtual addresses of the chain's load balancers: the client routes them to the
    /// server.
    pub vips: Vec<Ipv4Addr>,
    /// The load balancers' backends: addresses of the server (on its loopback).
    pub backends: Vec<Ipv4Addr>,
    /// The queues of each link between servers and of each edge link (rx and tx, at both
    /// ends): the most threads of a middlebox, so that each lane of a server has a queue of its
    /// own on every link (`ftc node --link-queues`, `--edge-queues`).
    #[serde(default = "one_queue")]
    pub queues: u32,
}

/// What a lab recorded before links had several queues has.
fn one_queue() -> u32 {
    1
}

/// The most queues a link gets (`ftc node --link-queues` and `--edge-queues` take no more).
pub const MAX_LINK_QUEUES: u32 = 64;

impl Topology {
    pub fn new(
        spec: &ChainSpec,
        layout: Layout,
        name: LabName,
        subnet: u8,
    ) -> Result<Topology, TopologyError> {
        let servers = match layout {
            Layout::Ring => spec.ring().servers(),
            Layout::Ftmb => 2 * spec.ring().middleboxes(),
        };
        if servers > usize::from(MAX_SERVERS) {
            return Err(TopologyError::TooManyServers(servers));
        }
        let addresses = |of: &dyn Fn(&MiddleboxKind) -> Vec<Ipv4Addr>| {
            let mut all: Vec<Ipv4Addr> = spec.middlebox.iter().flat_map(|m| of(&m.kind)).collect();
            all.sort_unstable();
            all.dedup();
            all
        };
        Ok(Topology {
            name,
            subnet,
            layout,
            servers: servers as u16,
            nat_ips: addresses(&|kind| match kind {
                MiddleboxKind::SimpleNat(c) => vec![c.public_ip],
                MiddleboxKind::MazuNat(c) => vec![c.public_ip],
                _ => Vec::new(),
            }),
            vips: addresses(&|kind| match kind {
                MiddleboxKind::LoadBalancer(c) => vec![c.vip],
                _ => Vec::new(),
            }),
            backends: addresses(&|kind| match kind {
                MiddleboxKind::LoadBalancer(c) => c.backends.clone(),
                _ => Vec::new(),
            }),
            queues: spec
                .middlebox
                .iter()
                .map(|m| u32::from(m.threads))
                .max()
                .unwrap_or(1)
                .clamp(1, MAX_LINK_QUEUES),
        })
    }

    /// Whether `other` has the same shape: the same layout, servers, link queues, routes and
    /// addresses.
    pub fn same_shape(&self, other: &Topology) -> bool {
        (self.layout, self.servers, self.queues) == (other.layout, other.servers, other.queues)
            && (&self.nat_ips, &self.vips, &self.backends)
                == (&other.nat_ips, &other.vips, &other.backends)
    }

    /// The namespace of `host`.
    pub fn host_netns(&self, host: &Host) -> String {
        format!("{}-{}", self.name, host.role)
    }

    /// The namespace of server `i`.
    pub fn server_netns(&self, i: u16) -> String {
        format!("{}-s{i}", self.name)
    }

    /// Every namespace: the client's, the server's, the servers'.
    pub fn namespaces(&self) -> Vec<String> {
        let mut all = vec![self.host_netns(&CLIENT), self.host_netns(&SERVER)];
        all.extend((0..self.servers).map(|i| self.server_netns(i)));
        all
    }

    /// The management bridge, in the root namespace.
    pub fn bridge(&self) -> String {
        format!("{}-mgmt", self.name)
    }

    /// The root-namespace end of server `i`'s management link.
    pub fn mgmt_link(&self, i: u16) -> String {
        format!("{}-m{i}", self.name)
    }

    /// Every link in the root namespace: the bridge and the management links.
    pub fn root_links(&self) -> Vec<String> {
        let mut all = vec![self.bridge()];
        all.extend((0..self.servers).map(|i| self.mgmt_link(i)));
        all
    }

    /// The bridge's address: the orchestrator listens there.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    /// Server `i`'s address on the management network: its node's data and transfer sockets.
    pub fn mgmt_ip(&self, i: u16) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, MGMT_FIRST + i as u8)
    }

    /// Where customer frames leave the chain: the ring's last server, or FTMB's last logger.
    pub fn exit(&self) -> u16 {
        match self.layout {
            Layout::Ring => self.servers - 1,
            Layout::Ftmb => self.servers - 2,
        }
    }

    /// The links between servers, each from server a to server b: a veth pair named `to{b}` in
    /// a's namespace and `from{a}` in b's. Frames cross them both ways.
    pub fn links(&self) -> Vec<(u16, u16)> {
        match self.layout {
            Layout::Ring => (0..self.servers)
                .map(|i| (i, (i + 1) % self.servers))
                .collect(),
            Layout::Ftmb => (0..self.servers)
                .step_by(2)
                .flat_map(|l| {
                    let next = Some((l, l + 2)).filter(|_| l + 2 < self.servers);
                    std::iter::once((l, l + 1)).chain(next)
                })
                .collect(),
        }
    }

    /// The link from server `a` to server `b`: (its name in `a`, its name in `b`).
    pub fn link_names(a: u16, b: u16) -> (String, String) {
        (format!("to{b}"), format!("from{a}"))
    }

    /// The link options of `ftc node` at `position` (AF_XDP between servers). On a ring, frames
    /// to its successor leave on its link to it, frames from its predecessor arrive on the
    /// predecessor's link (`--ring-next`, `--ring-prev`); in FTMB's layout every link of the
    /// server names the server at its other end (`--link POSITION=IFACE`). Links of several
    /// queues bind them all (`--link-queues`).
    pub fn link_args(&self, position: u16) -> Vec<String> {
        let mut args = Vec::new();
        if self.queues > 1 {
            args.extend(["--link-queues".to_string(), self.queues.to_string()]);
        }
        if self.layout == Layout::Ring {
            let prev = (position + self.servers - 1) % self.servers;
            let next = (position + 1) % self.servers;
            let (to_next, _) = Self::link_names(position, next);
            let (_, from_prev) = Self::link_names(prev, position);
            args.extend([
                "--ring-next".into(),
                to_next,
                "--ring-prev".into(),
                from_prev,
            ]);
            return args;
        }
        for (a, b) in self.links() {
            let (in_a, in_b) = Self::link_names(a, b);
            if a == position {
                args.extend(["--link".to_string(), format!("{b}={in_a}")]);
            }
            if b == position {
                args.extend(["--link".to_string(), format!("{a}={in_b}")]);
            }
        }
        args
    }

    /// The edge options of `ftc node` at `position` (AF_XDP edges): server 0 takes frames from
    /// the client (outbound) and the server (inbound); the last server sends released outbound
    /// frames to the server and inbound ones to the client (FTMB: the last logger). Both for a
    /// chain of one server. Edges of several queues bind them all (`--edge-queues`).
    pub fn edge_args(&self, position: u16) -> Vec<String> {
        let mut args = Vec::new();
        let mut add = |flag: &str, dir: &str, iface: &str| {
            args.extend([flag.to_string(), format!("{dir}={iface}")]);
        };
        if position == 0 {
            add("--edge-in", "out", CLI_IN);
            add("--edge-in", "in", SRV_IN);
        }
        if position == self.exit() {
            add("--edge-out", "out", SRV_OUT);
            add("--edge-out", "in", CLI_OUT);
        }
        if !args.is_empty() && self.queues > 1 {
            args.extend(["--edge-queues".to_string(), self.queues.to_string()]);
        }
        args
    }

    /// The operations that build the lab, in order: namespaces and their sysctls first (so the
    /// interfaces made after them inherit the defaults), then the management network, the ring,
    /// the edges, the hosts' addresses, neighbours and routes, and last the offloads.
    pub fn ops(&self) -> Vec<Op> {
        let mut ops: Vec<Op> = self
            .namespaces()
            .into_iter()
            .map(|ns| Op::ip(None, ["netns", "add", &ns]))
            .collect();
        for ns in self.namespaces() {
            // No IPv6: no router solicitations, DAD or MLD frames wander into the chain.
            for scope in ["all", "default"] {
                ops.push(Op::sysctl(
                    &ns,
                    &format!("net.ipv6.conf.{scope}.disable_ipv6"),
                    1,
                ));
            }
        }
        for host in [CLIENT, SERVER] {
            // Frames come back on eth1, which has no address: no reverse-path filter.
            for scope in ["all", "default"] {
                let key = format!("net.ipv4.conf.{scope}.rp_filter");
                ops.push(Op::sysctl(&self.host_netns(&host), &key, 0));
            }
        }
        self.mgmt_ops(&mut ops);
        self.ring_ops(&mut ops);
        self.edge_ops(&mut ops);
        self.host_ops(&mut ops);
        ops
    }

    fn mgmt_ops(&self, ops: &mut Vec<Op>) {
        let bridge = self.bridge();
        ops.push(Op::ip(None, ["link", "add", &bridge, "type", "bridge"]));
        let addr = format!("{}/{PREFIX}", self.bridge_ip());
        ops.push(Op::ip(None, ["addr", "add", &addr, "dev", &bridge]));
        ops.push(Op::ip(None, ["link", "set", &bridge, "up"]));
        for i in 0..self.servers {
            let (ns, link) = (self.server_netns(i), self.mgmt_link(i));
            ops.push(Op::ip(
                None,
                [
                    "link", "add", &link, "type", "veth", "peer", "name", MGMT_IFACE, "netns", &ns,
                ],
            ));
            ops.push(Op::ip(
                None,
                ["link", "set", &link, "master", &bridge, "up"],
            ));
            let addr = format!("{}/{PREFIX}", self.mgmt_ip(i));
            ops.push(Op::ip(Some(&ns), ["addr", "add", &addr, "dev", MGMT_IFACE]));
            ops.push(Op::ip(Some(&ns), ["link", "set", MGMT_IFACE, "up"]));
            ops.push(Op::ip(Some(&ns), ["link", "set", "lo", "up"]));
        }
    }

    fn ring_ops(&self, ops: &mut Vec<Op>) {
        let mtu = RING_MTU.to_string();
        for (a, b) in self.links() {
            let (a_ns, b_ns) = (self.server_netns(a), self.server_netns(b));
            let (here, there) = Self::link_names(a, b);
            ops.push(veth(&a_ns, &here, &b_ns, &there, &[], &mtu, self.queues));
            ops.push(Op::ip(Some(&a_ns), ["link", "set", &here, "up"]));
            ops.push(Op::ip(Some(&b_ns), ["link", "set", &there, "up"]));
        }
    }

    /// The four edge links: each host's eth0 to server 0, its eth1 to the exit server.
    fn edge_links(&self) -> [(Host, &'static str, u16, &'static str); 4] {
        [
            (CLIENT, "eth0", 0, CLI_IN),
            (SERVER, "eth0", 0, SRV_IN),
            (CLIENT, "eth1", self.exit(), CLI_OUT),
            (SERVER, "eth1", self.exit(), SRV_OUT),
        ]
    }

    fn edge_ops(&self, ops: &mut Vec<Op>) {
        for (host, iface, server, chain_side) in self.edge_links() {
            let (host_ns, server_ns) = (self.host_netns(&host), self.server_netns(server));
            let mac = host.mac_text();
            ops.push(veth(
                &host_ns,
                iface,
                &server_ns,
                chain_side,
                &["address", &mac],
                "1500",
                self.queues,
            ));
            ops.push(Op::ip(Some(&host_ns), ["link", "set", iface, "up"]));
            ops.push(Op::ip(Some(&server_ns), ["link", "set", chain_side, "up"]));
        }
    }

    fn host_ops(&self, ops: &mut Vec<Op>) {
        for (me, peer) in [(CLIENT, SERVER), (SERVER, CLIENT)] {
            let ns = self.host_netns(&me);
            ops.push(Op::ip(Some(&ns), ["link", "set", "lo", "up"]));
            let addr = format!("{}/{PREFIX}", me.ip);
            ops.push(Op::ip(Some(&ns), ["addr", "add", &addr, "dev", "eth0"]));
            ops.push(neighbour(&ns, peer.ip, &peer));
        }
        // Replies to a NAT's public address go back to the client, through the chain; a load
        // balancer's virtual address is reached through the chain, at one of the server's
        // addresses.
        for (from, ips, to) in [
            (SERVER, &self.nat_ips, CLIENT),
            (CLIENT, &self.vips, SERVER),
        ] {
            let ns = self.host_netns(&from);
            for ip in ips {
                let route = format!("{ip}/32");
                ops.push(Op::ip(Some(&ns), ["route", "add", &route, "dev", "eth0"]));
                ops.push(neighbour(&ns, *ip, &to));
            }
        }
        let server_ns = self.host_netns(&SERVER);
        for ip in self.backends.iter().filter(|&&ip| ip != SERVER.ip) {
            let addr = format!("{ip}/32");
            ops.push(Op::ip(
                Some(&server_ns),
                ["addr", "add", &addr, "dev", "lo"],
            ));
        }
        // Full checksums in every frame: a frame taken by AF_XDP is never completed by the
        // kernel, so a host must not leave its checksums (or segmentation) to an offload; and
        // a NAPI queue on each host interface, for frames XDP redirects to it.
        for (host, iface, _, _) in self.edge_links() {
            ops.push(Op::Offloads {
                netns: self.host_netns(&host),
                iface: iface.to_string(),
            });
        }
    }
}

/// `ip link add A netns NS_A [EXTRA…] mtu MTU [QUEUES] type veth peer name B netns NS_B mtu MTU
/// [QUEUES]`, QUEUES `numtxqueues N numrxqueues N` for `queues` above 1.
fn veth(ns_a: &str, a: &str, ns_b: &str, b: &str, extra: &[&str], mtu: &str, queues: u32) -> Op {
    let n = queues.to_string();
    let counts: &[&str] = if queues > 1 {
        &["numtxqueues", &n, "numrxqueues", &n]
    } else {
        &[]
    };
    let mut args = vec!["link", "add", a, "netns", ns_a];
    args.extend_from_slice(extra);
    args.extend(["mtu", mtu]);
    args.extend_from_slice(counts);
    args.extend(["type", "veth", "peer", "name", b, "netns", ns_b, "mtu", mtu]);
    args.extend_from_slice(counts);
    Op::ip(None, args)
}

/// A permanent neighbour in `ns`: `ip` is at `host`'s MAC, on eth0.
fn neighbour(ns: &str, ip: Ipv4Addr, host: &Host) -> Op {
    let (ip, mac) = (ip.to_string(), host.mac_text());
    Op::ip(
        Some(ns),
        [
            "neigh",
            "add",
            &ip,
            "lladdr",
            &mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    )
}

#[cfg(test)]
mod tests;
