//! The firewall: a first-match rule list, optionally letting inbound packets of connections
//! opened from the inside through whatever the rules say.

use ftc_stm::{Abort, Store, Txn};

use super::packet::{is_arp, parse, proto, FlowKey, Ipv4Packet, Parsed};
use crate::middlebox::{Ctx, Direction, Frame, Middlebox, Verdict};
use crate::spec::{Action, FirewallConfig, PortRange, Proto, Rule};

/// Key tag of a recorded connection (its outbound 5-tuple).
const TAG_CONN: u8 = 1;

/// Rules apply to both directions as written (src/dst as on the packet); the first match
/// decides, `default` when none does. A rule with a port range only matches TCP and UDP.
///
/// Without `allow_established` the firewall is stateless: every transaction is a no-op.
/// With it, an allowed outbound TCP, UDP or ICMP echo request records its 5-tuple (written once,
/// so a connection's later packets are read-only transactions), and an inbound packet the rules
/// deny passes when its reverse 5-tuple was recorded (a TCP/UDP reply, an echo reply), as does
/// an ICMP error (destination unreachable, time exceeded, parameter problem) about a recorded
/// connection's packet (the one it quotes). Recorded connections never expire.
///
/// ARP passes (address resolution across the bump in the wire that a chain is); other frames
/// that are not IPv4 (IPv6, …) match no rule: `non_ipv4` decides, `default` when the spec does
/// not say (a firewall that denies by default lets no IPv6 around its rules). Neither touches
/// state.
#[derive(Debug, Clone)]
pub struct Firewall {
    rules: Vec<Rule>,
    default: Action,
    allow_established: bool,
    non_ipv4: Action,
}

/// What `action` does to a frame.
fn verdict(action: Action) -> Verdict {
    match action {
        Action::Allow => Verdict::Forward,
        Action::Deny => Verdict::Drop,
    }
}

fn conn_key(outbound: &FlowKey) -> [u8; 1 + FlowKey::LEN] {
    outbound.tagged(TAG_CONN)
}

/// Whether the connection with outbound 5-tuple `outbound` was recorded.
pub fn is_established(store: &Store, outbound: &FlowKey) -> bool {
    store.get(&conn_key(outbound)).is_some()
}

fn port_matches(range: Option<PortRange>, flow: &FlowKey, port: u16) -> bool {
    range.is_none_or(|r| {
        matches!(flow.proto, proto::TCP | proto::UDP) && (r.first..=r.last).contains(&port)
    })
}

fn rule_matches(rule: &Rule, flow: &FlowKey) -> bool {
    let proto_ok = match rule.proto {
        Proto::Any => true,
        Proto::Tcp => flow.proto == proto::TCP,
        Proto::Udp => flow.proto == proto::UDP,
        Proto::Icmp => flow.proto == proto::ICMP,
    };
    proto_ok
        && rule.src.is_none_or(|n| n.contains(&flow.src))
        && rule.dst.is_none_or(|n| n.contains(&flow.dst))
        && port_matches(rule.sport, flow, flow.sport)
        && port_matches(rule.dport, flow, flow.dport)
}

impl Firewall {
    pub fn new(config: &FirewallConfig) -> Self {
        Firewall {
            rules: config.rules.clone(),
            default: config.default,
            allow_established: config.allow_established,
            non_ipv4: config.non_ipv4.unwrap_or(config.default),
        }
    }

    /// What the rules alone say about `flow`.
    pub fn decide(&self, flow: &FlowKey) -> Action {
        self.rules
            .iter()
            .find(|r| rule_matches(r, flow))
            .map_or(self.default, |r| r.action)
    }

    fn stateful(
        &self,
        tx: &mut Txn<'_>,
        bytes: &[u8],
        p: &Ipv4Packet,
        ctx: &Ctx,
    ) -> Result<Verdict, Abort> {
        let flow = p.flow();
        let allowed = self.decide(flow) == Action::Allow;
        match ctx.direction {
            Direction::Outbound if allowed => {
                // TCP, UDP and echo requests have a source port: a connection to record.
                if p.has_sport() {
                    let key = conn_key(flow);
                    if tx.read(&key)?.is_none() {
                        tx.write(&key, &[1])?;
                    }
                }
                Ok(Verdict::Forward)
            }
            Direction::Inbound if !allowed => {
                // A reply of a recorded connection, or an ICMP error about a packet of one (the
                // packet it quotes, as sent out: path MTU discovery needs them).
                let outbound = match p.has_dport() {
                    true => Some(flow.reversed()),
                    false => p.quoted(bytes).map(|q| *q.flow()),
                };
                let known = match outbound {
                    Some(outbound) => tx.read(&conn_key(&outbound))?.is_some(),
                    None => false,
                };
                Ok(if known {
                    Verdict::Forward
                } else {
                    Verdict::Drop
                })
            }
            _ if allowed => Ok(Verdict::Forward),
            _ => Ok(Verdict::Drop),
        }
    }
}

impl Middlebox for Firewall {
    fn kind(&self) -> &'static str {
        "firewall"
    }

    fn process(
        &self,
        tx: &mut Txn<'_>,
        frame: &mut Frame<'_>,
        ctx: &Ctx,
    ) -> Result<Verdict, Abort> {
        let p = match parse(frame.bytes()) {
            Parsed::Ipv4(p) => p,
            // Address resolution across the bump in the wire that a chain is.
            Parsed::NotIpv4 if is_arp(frame.bytes()) => return Ok(Verdict::Forward),
            Parsed::NotIpv4 => return Ok(verdict(self.non_ipv4)),
            Parsed::Malformed => return Ok(Verdict::Drop),
        };
        if self.allow_established {
            return self.stateful(tx, frame.bytes(), &p, ctx);
        }
        Ok(verdict(self.decide(p.flow())))
    }
}

#[cfg(test)]
mod tests {
    use ftc_stm::LogKind;
    use ipnet::Ipv4Net;

    use super::*;
    use crate::middlebox::Direction::*;
    use crate::middleboxes::packet::TcpFlags;
    use crate::middleboxes::testutil::*;

    fn rule(action: Action, proto: Proto, dst: Option<&str>, dport: Option<u16>) -> Rule {
        Rule {
            action,
            proto,
            src: None,
            dst: dst.map(|d| d.parse::<Ipv4Net>().unwrap()),
            sport: None,
            dport: dport.map(|p| PortRange { first: p, last: p }),
        }
    }

    /// Web to SERVER allowed, the rest of SERVER's /24 denied, everything else by `default`.
    fn firewall(default: Action, allow_established: bool) -> Firewall {
        Firewall::new(&FirewallConfig {
            rules: vec![
                rule(
                    Action::Allow,
                    Proto::Tcp,
                    Some("93.184.216.34/32"),
                    Some(80),
                ),
                rule(Action::Deny, Proto::Any, Some("93.184.216.0/24"), None),
            ],
            default,
            allow_established,
            non_ipv4: None,
        })
    }

    #[test]
    fn first_match_decides_and_stateless_is_noop() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let fw = firewall(Action::Allow, false);
        let cases = [
            (
                tcp_frame(CLIENT, 1, SERVER, 80, TcpFlags::SYN),
                Verdict::Forward,
            ),
            (
                tcp_frame(CLIENT, 1, SERVER, 443, TcpFlags::SYN),
                Verdict::Drop,
            ),
            (udp_frame(CLIENT, 1, SERVER, 80), Verdict::Drop),
            (udp_frame(CLIENT, 1, CLIENT2, 80), Verdict::Forward),
            (arp_frame(), Verdict::Forward),
            (ipv6_frame(), Verdict::Forward),
        ];
        for (mut f, verdict) in cases {
            let before = f.clone();
            assert_eq!(
                run(&mut w, &fw, &mut f, ctx(0, 0, Outbound)),
                (verdict, LogKind::Noop)
            );
            assert_eq!(f, before);
        }
        let deny_all = firewall(Action::Deny, false);
        let mut f = udp_frame(CLIENT, 1, CLIENT2, 80);
        assert_eq!(
            run(&mut w, &deny_all, &mut f, ctx(0, 0, Outbound)).0,
            Verdict::Drop
        );
        assert!(store.is_empty());
    }

    #[test]
    fn port_rules_do_not_match_icmp() {
        let fw = firewall(Action::Deny, false);
        let echo = flow(proto::ICMP, CLIENT, 80, SERVER, 0);
        assert_eq!(fw.decide(&echo), Action::Deny);
    }

    #[test]
    fn allow_established_lets_replies_in() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        // Only web to SERVER is allowed: the replies pass only as an established connection.
        let fw = firewall(Action::Deny, true);
        let reply = || tcp_frame(SERVER, 80, CLIENT, 1234, TcpFlags::ACK);
        let mut f = reply();
        assert_eq!(
            run(&mut w, &fw, &mut f, ctx(0, 0, Inbound)),
            (Verdict::Drop, LogKind::ReadOnly)
        );
        let mut f = tcp_frame(CLIENT, 1234, SERVER, 80, TcpFlags::SYN);
        assert_eq!(
            run(&mut w, &fw, &mut f, ctx(0, 0, Outbound)),
            (Verdict::Forward, LogKind::Update)
        );
        let mut f = tcp_frame(CLIENT, 1234, SERVER, 80, TcpFlags::ACK);
        assert_eq!(
            run(&mut w, &fw, &mut f, ctx(0, 0, Outbound)),
            (Verdict::Forward, LogKind::ReadOnly)
        );
        assert!(is_established(
            &store,
            &flow(proto::TCP, CLIENT, 1234, SERVER, 80)
        ));
        let mut f = reply();
        assert_eq!(
            run(&mut w, &fw, &mut f, ctx(0, 0, Inbound)),
            (Verdict::Forward, LogKind::ReadOnly)
        );
        // Another client port is not established.
        let mut f = tcp_frame(SERVER, 80, CLIENT, 1235, TcpFlags::ACK);
        assert_eq!(
            run(&mut w, &fw, &mut f, ctx(0, 0, Inbound)).0,
            Verdict::Drop
        );
        // A denied outbound packet records nothing.
        let mut f = udp_frame(CLIENT, 5, SERVER, 53);
        assert_eq!(
            run(&mut w, &fw, &mut f, ctx(0, 0, Outbound)),
            (Verdict::Drop, LogKind::Noop)
        );
        assert_eq!(store.len(), 1);
    }

    /// Frames that are not IPv4 match no rule: a firewall that denies by default drops them
    /// (no IPv6 around its IPv4 rules) unless `non_ipv4` lets them pass, and `non_ipv4` drops
    /// them from one that allows by default; ARP passes whatever they say; either way they
    /// touch no state, in both directions, stateful or not.
    #[test]
    fn non_ipv4_frames_go_as_non_ipv4_or_default_says() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let cases = [
            (Action::Deny, None, Verdict::Drop),
            (Action::Deny, Some(Action::Allow), Verdict::Forward),
            (Action::Allow, Some(Action::Deny), Verdict::Drop),
            (Action::Allow, Some(Action::Allow), Verdict::Forward),
        ];
        for (default, non_ipv4, verdict) in cases {
            for allow_established in [false, true] {
                let fw = Firewall {
                    non_ipv4: non_ipv4.unwrap_or(default),
                    ..firewall(default, allow_established)
                };
                for dir in [Outbound, Inbound] {
                    let frames = [(ipv6_frame(), verdict), (arp_frame(), Verdict::Forward)];
                    for (mut f, verdict) in frames {
                        assert_eq!(
                            run(&mut w, &fw, &mut f, ctx(0, 0, dir)),
                            (verdict, LogKind::Noop),
                            "default {default:?}, non_ipv4 {non_ipv4:?}, {dir:?}"
                        );
                    }
                }
            }
        }
        assert!(store.is_empty());
        // What the spec says reaches the firewall.
        let config = FirewallConfig {
            rules: Vec::new(),
            default: Action::Deny,
            allow_established: false,
            non_ipv4: Some(Action::Allow),
        };
        assert_eq!(Firewall::new(&config).non_ipv4, Action::Allow);
        let config = FirewallConfig {
            non_ipv4: None,
            ..config
        };
        assert_eq!(Firewall::new(&config).non_ipv4, Action::Deny);
    }

    #[test]
    fn allow_established_covers_ping() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let fw = Firewall::new(&FirewallConfig {
            rules: vec![Rule {
                action: Action::Deny,
                proto: Proto::Icmp,
                src: Some("93.184.216.0/24".parse().unwrap()),
                dst: None,
                sport: None,
                dport: None,
            }],
            default: Action::Allow,
            allow_established: true,
            non_ipv4: None,
        });
        let mut f = icmp_echo_frame(SERVER, CLIENT, 9, false);
        assert_eq!(
            run(&mut w, &fw, &mut f, ctx(0, 0, Inbound)).0,
            Verdict::Drop
        );
        let mut f = icmp_echo_frame(CLIENT, SERVER, 9, true);
        assert_eq!(
            run(&mut w, &fw, &mut f, ctx(0, 0, Outbound)).0,
            Verdict::Forward
        );
        let mut f = icmp_echo_frame(SERVER, CLIENT, 9, false);
        assert_eq!(
            run(&mut w, &fw, &mut f, ctx(0, 0, Inbound)).0,
            Verdict::Forward
        );
    }

    /// With `allow_established`, an inbound ICMP error the rules deny passes when the packet it
    /// quotes is of a recorded connection (path MTU discovery), as a read-only transaction, and
    /// is dropped otherwise; the stateless firewall decides by its rules alone.
    #[test]
    fn allow_established_lets_errors_about_recorded_connections_in() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let fw = firewall(Action::Deny, true);
        let mut sent = tcp_frame(CLIENT, 1234, SERVER, 80, TcpFlags::SYN);
        let before = sent.clone();
        assert_eq!(
            run(&mut w, &fw, &mut sent, ctx(0, 0, Outbound)),
            (Verdict::Forward, LogKind::Update)
        );
        let other = tcp_frame(CLIENT, 1234, SERVER, 81, TcpFlags::SYN);
        for quote in [20 + 8, usize::MAX] {
            let mut error = icmp_error_frame(ROUTER, CLIENT, &sent, quote);
            let unchanged = error.clone();
            assert_eq!(
                run(&mut w, &fw, &mut error, ctx(0, 0, Inbound)),
                (Verdict::Forward, LogKind::ReadOnly)
            );
            assert_eq!(error, unchanged);
            let mut error = icmp_error_frame(ROUTER, CLIENT, &other, quote);
            assert_eq!(
                run(&mut w, &fw, &mut error, ctx(0, 0, Inbound)).0,
                Verdict::Drop
            );
            let mut error = icmp_error_frame(ROUTER, CLIENT, &sent, quote);
            let stateless = firewall(Action::Deny, false);
            assert_eq!(
                run(&mut w, &stateless, &mut error, ctx(0, 0, Inbound)).0,
                Verdict::Drop
            );
        }
        assert_eq!(sent, before);
    }

    #[test]
    fn prefixes_never_panic() {
        assert_prefixes_never_panic(&firewall(Action::Allow, true));
        assert_prefixes_never_panic(&firewall(Action::Deny, false));
    }
}
