//! The built-in middleboxes (thesis §4.6): monitor, simple-nat, mazu-nat, gen, firewall and
//! load-balancer, and [`build`], which makes one from its spec.
//!
//! Common rules, so that each file only says where it differs:
//! - Each middlebox has its own store: a key starts with a tag byte naming its kind of entry,
//!   and keys and values are small fixed-size arrays built on the stack.
//! - Non-IPv4 frames (ARP, IPv6, …) pass unchanged and touch no state, except in the monitor
//!   (counts them), gen (writes state for them) and the firewall (ARP passes; for the rest its
//!   `non_ipv4`, else its `default`, decides).
//! - A frame that claims IPv4 but is truncated or inconsistent ([`packet::Parsed::Malformed`]) is
//!   dropped without touching state (a rewriting middlebox cannot handle it, and a firewall or
//!   NAT must not let it through), except by the monitor, which only counts (as "other") and
//!   passes everything.

pub mod firewall;
pub mod gen;
pub mod load_balancer;
pub mod monitor;
pub mod nat;
pub mod packet;

#[cfg(test)]
mod testutil;

pub use firewall::Firewall;
pub use gen::Gen;
pub use load_balancer::LoadBalancer;
pub use monitor::Monitor;
pub use nat::{MazuNat, SimpleNat};
pub use packet::{FlowKey, Ipv4Packet, Parsed, TcpFlags};

use crate::middlebox::{Middlebox, Verdict};
use crate::spec::{MiddleboxKind, MiddleboxSpec};

/// The middlebox a spec describes.
pub fn build(spec: &MiddleboxSpec) -> Box<dyn Middlebox> {
    match &spec.kind {
        MiddleboxKind::Monitor(c) => Box::new(Monitor::new(c)),
        MiddleboxKind::SimpleNat(c) => Box::new(SimpleNat::new(c)),
        MiddleboxKind::MazuNat(c) => Box::new(MazuNat::new(c, spec.threads)),
        MiddleboxKind::Gen(c) => Box::new(Gen::new(c)),
        MiddleboxKind::Firewall(c) => Box::new(Firewall::new(c)),
        MiddleboxKind::LoadBalancer(c) => Box::new(LoadBalancer::new(c)),
    }
}

/// The IPv4 packet in `frame`, or what to do with a frame that is not one under the common
/// rules: non-IPv4 passes, malformed IPv4 drops.
fn ipv4_or(frame: &[u8]) -> Result<Ipv4Packet, Verdict> {
    match packet::parse(frame) {
        Parsed::Ipv4(p) => Ok(p),
        Parsed::NotIpv4 => Err(Verdict::Forward),
        Parsed::Malformed => Err(Verdict::Drop),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::spec::*;

    #[test]
    fn build_makes_every_kind() {
        let ip = Ipv4Addr::new(198, 51, 100, 1);
        let ports = PortRange {
            first: 10000,
            last: 10099,
        };
        let kinds = [
            (
                MiddleboxKind::Monitor(MonitorConfig {
                    counters: CounterMode::Shared,
                    sharing_level: 0,
                }),
                "monitor",
            ),
            (
                MiddleboxKind::SimpleNat(NatConfig {
                    public_ip: ip,
                    ports,
                }),
                "simple-nat",
            ),
            (
                MiddleboxKind::MazuNat(MazuNatConfig {
                    public_ip: ip,
                    ports,
                    tcp_timeout: 7440,
                    tcp_closed_timeout: 240,
                    udp_timeout: 300,
                }),
                "mazu-nat",
            ),
            (MiddleboxKind::Gen(GenConfig { state_size: 64 }), "gen"),
            (
                MiddleboxKind::Firewall(FirewallConfig {
                    rules: vec![],
                    default: Action::Allow,
                    allow_established: false,
                    non_ipv4: None,
                }),
                "firewall",
            ),
            (
                MiddleboxKind::LoadBalancer(LoadBalancerConfig {
                    vip: ip,
                    backends: vec![],
                }),
                "load-balancer",
            ),
        ];
        for (kind, name) in kinds {
            let mb = build(&MiddleboxSpec { threads: 4, kind });
            assert_eq!(mb.kind(), name);
        }
    }
}
