//! The load balancer: spreads connections to a virtual address over backends, keeping each
//! connection on the backend it was first given.

use std::net::Ipv4Addr;

use ftc_stm::{Abort, Store, Txn};

use super::packet::{proto, FlowKey, Ipv4Packet};
use crate::middlebox::{Ctx, Direction, Frame, Middlebox, Verdict};
use crate::spec::LoadBalancerConfig;

/// Key tags.
const TAG_CONN: u8 = 1;
const TAG_NEXT: u8 = 2;

/// Outbound TCP/UDP to `vip`: the connection (proto, client address and port, VIP port) is
/// looked up, or given a backend and recorded; the destination becomes the backend. Inbound
/// TCP/UDP from a backend to a client of one of its recorded connections: the source becomes
/// the VIP again. ICMP errors about packets of recorded connections are translated as those
/// packets were, quotes included. Everything else passes unchanged (no backends: packets to the
/// VIP drop).
/// IPv4 fragments after the first carry no ports and pass unchanged: this balancer does not
/// reassemble, so fragmented datagrams to the VIP are not balanced.
///
/// Choice: round robin, with one counter per worker thread, started at the worker's index, so
/// that workers never contend on a shared counter (least-loaded would need a shared load table
/// and connection ends, which a stateless-about-FIN balancer does not see). Connections never
/// expire. A connection's first packet is an update; later ones are read-only transactions.
#[derive(Debug, Clone)]
pub struct LoadBalancer {
    vip: Ipv4Addr,
    backends: Vec<Ipv4Addr>,
}

/// proto, client address, client port, VIP port.
fn conn_key(proto: u8, client: Ipv4Addr, client_port: u16, vip_port: u16) -> [u8; 10] {
    let mut key = [0; 10];
    key[0] = TAG_CONN;
    key[1] = proto;
    key[2..6].copy_from_slice(&client.octets());
    key[6..8].copy_from_slice(&client_port.to_be_bytes());
    key[8..10].copy_from_slice(&vip_port.to_be_bytes());
    key
}

fn decode_backend(value: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(value).ok().map(Ipv4Addr::from)
}

/// The backend of the connection whose outbound (client → VIP) 5-tuple is `outbound`.
pub fn backend_of(store: &Store, outbound: &FlowKey) -> Option<Ipv4Addr> {
    let key = conn_key(outbound.proto, outbound.src, outbound.sport, outbound.dport);
    store.get(&key).as_deref().and_then(decode_backend)
}

impl LoadBalancer {
    pub fn new(config: &LoadBalancerConfig) -> Self {
        LoadBalancer {
            vip: config.vip,
            backends: config.backends.clone(),
        }
    }

    fn outbound(
        &self,
        tx: &mut Txn<'_>,
        frame: &mut Frame<'_>,
        mut p: Ipv4Packet,
        ctx: &Ctx,
    ) -> Result<Verdict, Abort> {
        let flow = *p.flow();
        if self.backends.is_empty() {
            return Ok(Verdict::Drop);
        }
        let key = conn_key(flow.proto, flow.src, flow.sport, flow.dport);
        let backend = match tx.read(&key)?.and_then(decode_backend) {
            Some(b) => b,
            None => {
                let [a, b] = ctx.worker.to_be_bytes();
                let count = tx.counter_add(&[TAG_NEXT, a, b], 1)? - 1;
                let n = self.backends.len() as u64;
                let backend = self.backends[((count + u64::from(ctx.worker)) % n) as usize];
                tx.write(&key, &backend.octets())?;
                backend
            }
        };
        p.set_dst_addr(frame.bytes_mut(), backend);
        Ok(Verdict::Forward)
    }

    fn inbound(
        &self,
        tx: &mut Txn<'_>,
        frame: &mut Frame<'_>,
        mut p: Ipv4Packet,
    ) -> Result<Verdict, Abort> {
        let flow = *p.flow();
        if !self.backends.contains(&flow.src) {
            return Ok(Verdict::Forward);
        }
        let key = conn_key(flow.proto, flow.dst, flow.dport, flow.sport);
        if tx.read(&key)?.and_then(decode_backend) == Some(flow.src) {
            p.set_src_addr(frame.bytes_mut(), self.vip);
        }
        Ok(Verdict::Forward)
    }

    /// An ICMP error about a packet of a recorded connection, translated as that packet was:
    /// inbound, about a client's packet to its backend (from the backend, or a router on the
    /// way), the quote's destination, and the backend's own address as the error's source,
    /// become the VIP again; outbound, a client's error to the VIP about a reply, to the backend
    /// with the quote's source the backend. Any other error passes unchanged.
    fn error(
        &self,
        tx: &mut Txn<'_>,
        frame: &mut Frame<'_>,
        mut p: Ipv4Packet,
        mut quoted: Ipv4Packet,
        direction: Direction,
    ) -> Result<Verdict, Abort> {
        let q = *quoted.flow();
        if !matches!(q.proto, proto::TCP | proto::UDP) {
            return Ok(Verdict::Forward);
        }
        // The connection's client, its port, and the VIP's port.
        let (client, client_port, vip_port) = match direction {
            Direction::Inbound => (q.src, q.sport, q.dport),
            Direction::Outbound if p.flow().dst == self.vip && q.src == self.vip => {
                (q.dst, q.dport, q.sport)
            }
            Direction::Outbound => return Ok(Verdict::Forward),
        };
        let key = conn_key(q.proto, client, client_port, vip_port);
        let Some(backend) = tx.read(&key)?.and_then(decode_backend) else {
            return Ok(Verdict::Forward);
        };
        let bytes = frame.bytes_mut();
        match direction {
            Direction::Inbound if q.dst == backend => {
                quoted.set_dst_addr(bytes, self.vip);
                if p.flow().src == backend {
                    p.set_src_addr(bytes, self.vip);
                }
            }
            Direction::Inbound => {}
            Direction::Outbound => {
                quoted.set_src_addr(bytes, backend);
                p.set_dst_addr(bytes, backend);
            }
        }
        Ok(Verdict::Forward)
    }
}

impl Middlebox for LoadBalancer {
    fn kind(&self) -> &'static str {
        "load-balancer"
    }

    fn process(
        &self,
        tx: &mut Txn<'_>,
        frame: &mut Frame<'_>,
        ctx: &Ctx,
    ) -> Result<Verdict, Abort> {
        let p = match super::ipv4_or(frame.bytes()) {
            Ok(p) => p,
            Err(verdict) => return Ok(verdict),
        };
        if let Some(quoted) = p.quoted(frame.bytes()) {
            return self.error(tx, frame, p, quoted, ctx.direction);
        }
        if !matches!(p.flow().proto, proto::TCP | proto::UDP) || !p.has_sport() {
            return Ok(Verdict::Forward);
        }
        match ctx.direction {
            Direction::Outbound if p.flow().dst == self.vip => self.outbound(tx, frame, p, ctx),
            Direction::Inbound => self.inbound(tx, frame, p),
            Direction::Outbound => Ok(Verdict::Forward),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ftc_stm::LogKind;

    use super::*;
    use crate::middlebox::Direction::*;
    use crate::middleboxes::packet::TcpFlags;
    use crate::middleboxes::testutil::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    const BACKENDS: [Ipv4Addr; 3] = [
        Ipv4Addr::new(10, 1, 0, 1),
        Ipv4Addr::new(10, 1, 0, 2),
        Ipv4Addr::new(10, 1, 0, 3),
    ];

    fn lb() -> LoadBalancer {
        LoadBalancer::new(&LoadBalancerConfig {
            vip: VIP,
            backends: BACKENDS.to_vec(),
        })
    }

    #[test]
    fn connection_stays_on_its_backend_and_replies_come_from_the_vip() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let lb = lb();
        let mut first = None;
        for (i, flags) in [TcpFlags::SYN, TcpFlags::ACK, TcpFlags::ACK]
            .into_iter()
            .enumerate()
        {
            let mut f = tcp_frame(CLIENT, 40000, VIP, 443, flags);
            let (verdict, kind) = run(&mut w, &lb, &mut f, ctx(0, 0, Outbound));
            assert_eq!(verdict, Verdict::Forward);
            assert_eq!(
                kind,
                if i == 0 {
                    LogKind::Update
                } else {
                    LogKind::ReadOnly
                }
            );
            assert_checksums(&f);
            let seen = flow_of(&f);
            assert_eq!((seen.src, seen.sport, seen.dport), (CLIENT, 40000, 443));
            assert_eq!(*first.get_or_insert(seen.dst), seen.dst);
        }
        let backend = first.unwrap();
        let outbound = flow(proto::TCP, CLIENT, 40000, VIP, 443);
        assert_eq!(backend_of(&store, &outbound), Some(backend));

        let mut f = tcp_frame(backend, 443, CLIENT, 40000, TcpFlags::ACK);
        assert_eq!(
            run(&mut w, &lb, &mut f, ctx(0, 0, Inbound)),
            (Verdict::Forward, LogKind::ReadOnly)
        );
        assert_checksums(&f);
        assert_eq!(flow_of(&f), outbound.reversed());

        // A reply from another backend is not this connection's: unchanged.
        let other = *BACKENDS.iter().find(|b| **b != backend).unwrap();
        let mut f = tcp_frame(other, 443, CLIENT, 40000, TcpFlags::ACK);
        let before = f.clone();
        run(&mut w, &lb, &mut f, ctx(0, 0, Inbound));
        assert_eq!(f, before);
    }

    #[test]
    fn connections_spread_over_all_backends() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let lb = lb();
        let mut per_backend = HashMap::new();
        for port in 0..30u16 {
            let mut f = udp_frame(CLIENT, 1000 + port, VIP, 53);
            run(&mut w, &lb, &mut f, ctx(0, 0, Outbound));
            assert_checksums(&f);
            *per_backend.entry(flow_of(&f).dst).or_insert(0) += 1;
        }
        assert_eq!(per_backend.len(), 3);
        assert!(per_backend.values().all(|n| *n == 10));
    }

    #[test]
    fn other_traffic_passes_untouched() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let lb = lb();
        for (mut f, dir) in [
            (udp_frame(SERVER, 1, CLIENT, 53), Outbound),
            (icmp_echo_frame(SERVER, VIP, 1, true), Outbound),
            (udp_frame(CLIENT, 1, SERVER, 53), Inbound),
            (arp_frame(), Outbound),
        ] {
            let before = f.clone();
            assert_eq!(
                run(&mut w, &lb, &mut f, ctx(0, 0, dir)),
                (Verdict::Forward, LogKind::Noop)
            );
            assert_eq!(f, before);
        }
    }

    /// ICMP errors about a connection's packets are translated as those packets were: the
    /// backend's (or a router's on the way to it) about a client's datagram reaches the client
    /// quoting the datagram byte for byte as sent to the VIP (from the VIP, when the backend sent
    /// it); the client's about a reply reaches the backend quoting the reply as the backend sent
    /// it; read-only. An error of no connection passes unchanged.
    #[test]
    fn icmp_errors_are_translated_as_their_packets_were() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let lb = lb();
        let sent = udp_frame(CLIENT, 5000, VIP, 53);
        let mut to_backend = sent.clone();
        assert_eq!(
            run(&mut w, &lb, &mut to_backend, ctx(0, 0, Outbound)).0,
            Verdict::Forward
        );
        let backend = flow_of(&to_backend).dst;
        let reply = udp_frame(backend, 53, CLIENT, 5000);
        let mut to_client = reply.clone();
        run(&mut w, &lb, &mut to_client, ctx(0, 0, Inbound));
        let quoted = |frame: &[u8], quote: usize| {
            let packet = ip_packet(frame);
            packet[..quote.min(packet.len())].to_vec()
        };
        for quote in [20 + 8, usize::MAX] {
            let cases = [
                (backend, CLIENT, &to_backend, Inbound, VIP, &sent),
                (ROUTER, CLIENT, &to_backend, Inbound, ROUTER, &sent),
                (CLIENT, VIP, &to_client, Outbound, CLIENT, &reply),
            ];
            for (src, dst, about, dir, from, original) in cases {
                let mut error = icmp_error_frame(src, dst, about, quote);
                assert_eq!(
                    run(&mut w, &lb, &mut error, ctx(0, 0, dir)),
                    (Verdict::Forward, LogKind::ReadOnly)
                );
                assert_checksums(&error);
                let to = if dir == Outbound { backend } else { dst };
                assert_eq!(flow_of(&error), flow(proto::ICMP, from, 0, to, 0));
                assert_eq!(quote_of(&error), quoted(original, quote));
            }
        }
        let stranger = udp_frame(CLIENT, 5001, backend, 53);
        let error = icmp_error_frame(backend, CLIENT, &stranger, 64);
        let mut passed = error.clone();
        run(&mut w, &lb, &mut passed, ctx(0, 0, Inbound));
        assert_eq!(passed, error);
    }

    #[test]
    fn prefixes_never_panic() {
        assert_prefixes_never_panic(&lb());
    }
}
