//! Source NAT: one translation core ([`Nat`]) and two policies for allocating, refreshing and
//! expiring mappings: simple-nat ([`Simple`]) and mazu-nat ([`Mazu`]).
//!
//! Outbound TCP, UDP or ICMP echo request (the identifier is its source port, see [`packet`]):
//! the mapping of its 5-tuple gives the public port, or a port is allocated and both the
//! outbound mapping (5-tuple → public port) and the inbound one (proto, remote address, remote
//! port, public port → original address and port) are written; the source becomes
//! `public_ip:public_port`. Inbound: the destination must be `public_ip` and the inbound mapping
//! must exist (and be live); the destination is written back. An inbound ICMP error
//! (destination unreachable, "fragmentation needed" among them, time exceeded, parameter
//! problem) about a packet of a live mapping goes to its inside host, with the packet it quotes
//! translated back (address, port, checksums); an outbound one, from an inside host about a
//! packet of its connection that came in, leaves from the public address with its quote
//! translated back likewise. Anything else IPv4 (other protocols, other ICMP errors, a pool with
//! no free port) is dropped, so that no inside address leaks; so are IPv4 fragments after the first (they carry no ports, and this NAT does
//! not reassemble). Non-IPv4 frames pass.
//!
//! One pool of public ports serves all protocols. The last-seen time and the closing flag live
//! in the outbound mapping only, so that an inbound packet refreshes the same record.
//!
//! [`packet`]: super::packet

use std::net::Ipv4Addr;

use ftc_stm::{Abort, Record, Store, Txn};

use super::packet::{proto, FlowKey, Ipv4Packet, TcpFlags};
use crate::middlebox::{Ctx, Direction, Frame, Middlebox, Verdict};
use crate::spec::{MazuNatConfig, NatConfig, PortRange};

/// Key tags.
const TAG_OUT: u8 = 1;
const TAG_IN: u8 = 2;
/// simple-nat's allocation counter.
const TAG_NEXT: u8 = 3;
/// mazu-nat: a per-slice allocation cursor.
const TAG_CURSOR: u8 = 4;
/// mazu-nat: which outbound 5-tuple holds a public port.
const TAG_PORT: u8 = 5;

/// An outbound mapping: the value kept under a connection's outbound 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub public_port: u16,
    /// When a packet of the connection was last seen (mazu-nat; creation time for simple-nat).
    pub last_seen_ns: u64,
    /// A FIN or RST was seen (mazu-nat).
    pub closing: bool,
}

impl Record for Mapping {
    const SIZE: usize = 11;

    fn encode(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.public_port.to_be_bytes());
        out[2..10].copy_from_slice(&self.last_seen_ns.to_le_bytes());
        out[10] = u8::from(self.closing);
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; Self::SIZE] = bytes.try_into().ok()?;
        Some(Mapping {
            public_port: u16::from_be_bytes([b[0], b[1]]),
            last_seen_ns: u64::from_le_bytes(b[2..10].try_into().ok()?),
            closing: b[10] != 0,
        })
    }
}

/// An inbound mapping's value: the original source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Original {
    addr: Ipv4Addr,
    port: u16,
}

impl Record for Original {
    const SIZE: usize = 6;

    fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.addr.octets());
        out[4..6].copy_from_slice(&self.port.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; Self::SIZE] = bytes.try_into().ok()?;
        Some(Original {
            addr: Ipv4Addr::new(b[0], b[1], b[2], b[3]),
            port: u16::from_be_bytes([b[4], b[5]]),
        })
    }
}

fn out_key(outbound: &FlowKey) -> [u8; 1 + FlowKey::LEN] {
    outbound.tagged(TAG_OUT)
}

fn in_key(proto: u8, remote: Ipv4Addr, remote_port: u16, public_port: u16) -> [u8; 10] {
    let mut key = [0; 10];
    key[0] = TAG_IN;
    key[1] = proto;
    key[2..6].copy_from_slice(&remote.octets());
    key[6..8].copy_from_slice(&remote_port.to_be_bytes());
    key[8..10].copy_from_slice(&public_port.to_be_bytes());
    key
}

fn port_key(port: u16) -> [u8; 3] {
    let [a, b] = port.to_be_bytes();
    [TAG_PORT, a, b]
}

/// The outbound mapping of the connection whose inside 5-tuple is `outbound`, as stored
/// (mazu-nat: possibly expired; the NAT treats an expired mapping as absent).
pub fn outbound_mapping(store: &Store, outbound: &FlowKey) -> Option<Mapping> {
    store
        .get(&out_key(outbound))
        .as_deref()
        .and_then(Mapping::decode)
}

/// The original (inside) address and port behind `public_port` for packets from
/// `remote:remote_port`, as stored.
pub fn inbound_original(
    store: &Store,
    proto: u8,
    remote: Ipv4Addr,
    remote_port: u16,
    public_port: u16,
) -> Option<(Ipv4Addr, u16)> {
    store
        .get(&in_key(proto, remote, remote_port, public_port))
        .as_deref()
        .and_then(Original::decode)
        .map(|o| (o.addr, o.port))
}

/// Remove a mapping pair and its port's owner entry.
fn release(tx: &mut Txn<'_>, outbound: &FlowKey, m: &Mapping) -> Result<(), Abort> {
    tx.delete(&out_key(outbound))?;
    tx.delete(&in_key(
        outbound.proto,
        outbound.dst,
        outbound.dport,
        m.public_port,
    ))?;
    tx.delete(&port_key(m.public_port))
}

/// How a NAT allocates, refreshes and expires mappings.
pub trait NatPolicy: Send + Sync + std::fmt::Debug {
    /// The kind's name in a chain spec.
    const KIND: &'static str;
    /// Whether every packet refreshes its mapping (last-seen time, closing flag).
    const REFRESH: bool;
    /// Whether `m`, a mapping of a `proto` connection, still holds at `now_ns`.
    fn live(&self, m: &Mapping, proto: u8, now_ns: u64) -> bool;
    /// Claim a free public port for `outbound`; `None` when the pool is exhausted.
    fn allocate(
        &self,
        tx: &mut Txn<'_>,
        ctx: &Ctx,
        outbound: &FlowKey,
    ) -> Result<Option<u16>, Abort>;
}

/// A source NAT with policy `P`.
#[derive(Debug, Clone)]
pub struct Nat<P> {
    public_ip: Ipv4Addr,
    policy: P,
}

/// simple-nat: ports from one counter, mappings that never expire.
pub type SimpleNat = Nat<Simple>;
/// mazu-nat: idle timeouts, port reuse, per-worker allocation.
pub type MazuNat = Nat<Mazu>;

/// Ports in the range (0 for an inverted range, which the spec loader rejects anyway).
fn range_len(ports: PortRange) -> u32 {
    (u32::from(ports.last) + 1).saturating_sub(u32::from(ports.first))
}

/// simple-nat's policy: the next free port is `first + counter`; a port is never given back,
/// so the pool runs out after `last - first + 1` connections. Steady-state packets are
/// read-only transactions; the one counter is contended only by connection setups.
#[derive(Debug, Clone)]
pub struct Simple {
    ports: PortRange,
}

impl NatPolicy for Simple {
    const KIND: &'static str = "simple-nat";
    const REFRESH: bool = false;

    fn live(&self, _: &Mapping, _: u8, _: u64) -> bool {
        true
    }

    fn allocate(&self, tx: &mut Txn<'_>, _: &Ctx, _: &FlowKey) -> Result<Option<u16>, Abort> {
        let next = tx.counter(&[TAG_NEXT])?;
        if next >= u64::from(range_len(self.ports)) {
            return Ok(None);
        }
        tx.write(&[TAG_NEXT], &(next + 1).to_le_bytes())?;
        Ok(Some(self.ports.first + next as u16))
    }
}

/// At most this many ports are probed by one packet's allocation (bounds the transaction).
pub(crate) const MAX_PROBES: u64 = 64;

/// mazu-nat's policy. Every packet writes its mapping's last-seen time, so every packet is an
/// update transaction. A mapping expires after `tcp_timeout` (TCP), `tcp_closed_timeout` (TCP
/// after a FIN or RST in either direction) or `udp_timeout` (UDP, ICMP) seconds idle; an expired
/// mapping is treated as absent and its port may be reused.
///
/// Allocator contention: the port range is cut into one slice per worker thread, each with its
/// own cursor key, so that workers setting up connections at once touch different keys (and,
/// but for hash collisions, different partitions) instead of all serialising on one counter.
/// A worker probes its slice from its cursor for a port with no owner, or whose owner's mapping
/// expired (that stale pair is removed), at most `MAX_PROBES` ports per packet; the cursor
/// moves on, so the next packet probes further. The price: a worker whose slice is full drops
/// new connections even when another worker's slice has room. A range smaller than the thread
/// count is one slice shared by all.
#[derive(Debug, Clone)]
pub struct Mazu {
    ports: PortRange,
    slices: u16,
    tcp_timeout_ns: u64,
    tcp_closed_timeout_ns: u64,
    udp_timeout_ns: u64,
}

fn secs_to_ns(secs: u64) -> u64 {
    secs.saturating_mul(1_000_000_000)
}

impl Mazu {
    /// Slice `i`'s first port and length.
    fn slice(&self, i: u16) -> (u16, u64) {
        let len = u64::from(range_len(self.ports));
        let n = u64::from(self.slices);
        let i = u64::from(i);
        let start = i * len / n;
        let end = (i + 1) * len / n;
        (self.ports.first + start as u16, end - start)
    }
}

impl NatPolicy for Mazu {
    const KIND: &'static str = "mazu-nat";
    const REFRESH: bool = true;

    fn live(&self, m: &Mapping, proto: u8, now_ns: u64) -> bool {
        let timeout = match (proto, m.closing) {
            (proto::TCP, true) => self.tcp_closed_timeout_ns,
            (proto::TCP, false) => self.tcp_timeout_ns,
            _ => self.udp_timeout_ns,
        };
        now_ns.saturating_sub(m.last_seen_ns) <= timeout
    }

    fn allocate(
        &self,
        tx: &mut Txn<'_>,
        ctx: &Ctx,
        outbound: &FlowKey,
    ) -> Result<Option<u16>, Abort> {
        let slice = ctx.worker % self.slices;
        let (start, len) = self.slice(slice);
        if len == 0 {
            return Ok(None);
        }
        let [a, b] = slice.to_be_bytes();
        let cursor_key = [TAG_CURSOR, a, b];
        let mut cursor = tx.counter(&cursor_key)?;
        let mut found = None;
        for _ in 0..len.min(MAX_PROBES) {
            let port = start + (cursor % len) as u16;
            cursor = cursor.wrapping_add(1);
            let Some(owner) = tx.read(&port_key(port))?.and_then(FlowKey::decode) else {
                found = Some(port);
                break;
            };
            match tx.record::<Mapping>(&out_key(&owner))? {
                Some(m) if m.public_port == port => {
                    if self.live(&m, owner.proto, ctx.now_ns) {
                        continue;
                    }
                    release(tx, &owner, &m)?;
                }
                // The owner entry outlived its mapping: the port is free.
                _ => {}
            }
            found = Some(port);
            break;
        }
        tx.write(&cursor_key, &cursor.to_le_bytes())?;
        if let Some(port) = found {
            tx.write(&port_key(port), &outbound.to_bytes())?;
        }
        Ok(found)
    }
}

impl Nat<Simple> {
    pub fn new(config: &NatConfig) -> Self {
        Nat {
            public_ip: config.public_ip,
            policy: Simple {
                ports: config.ports,
            },
        }
    }
}

impl Nat<Mazu> {
    /// A mazu-nat whose port range is sliced for `threads` worker threads.
    pub fn new(config: &MazuNatConfig, threads: u16) -> Self {
        let slices = if range_len(config.ports) >= u32::from(threads.max(1)) {
            threads.max(1)
        } else {
            1
        };
        Nat {
            public_ip: config.public_ip,
            policy: Mazu {
                ports: config.ports,
                slices,
                tcp_timeout_ns: secs_to_ns(config.tcp_timeout),
                tcp_closed_timeout_ns: secs_to_ns(config.tcp_closed_timeout),
                udp_timeout_ns: secs_to_ns(config.udp_timeout),
            },
        }
    }
}

/// TCP, UDP and ICMP (echo: the caller checks the rewritable port) are translated.
fn translatable(proto: u8) -> bool {
    matches!(proto, proto::TCP | proto::UDP | proto::ICMP)
}

impl<P: NatPolicy> Nat<P> {
    /// The public address and port of the connection whose inside 5-tuple is `outbound`, as
    /// stored (see [`outbound_mapping`]).
    pub fn lookup_outbound(&self, store: &Store, outbound: &FlowKey) -> Option<(Ipv4Addr, u16)> {
        outbound_mapping(store, outbound).map(|m| (self.public_ip, m.public_port))
    }

    /// Write `m` back after a packet when the policy refreshes (or the mapping is new).
    fn touch(
        &self,
        tx: &mut Txn<'_>,
        key: &[u8],
        mut m: Mapping,
        fresh: bool,
        flags: TcpFlags,
        now_ns: u64,
    ) -> Result<Mapping, Abort> {
        if fresh || P::REFRESH {
            m.last_seen_ns = m.last_seen_ns.max(now_ns);
            m.closing |= P::REFRESH && flags.closing();
            tx.put_record(key, &m)?;
        }
        Ok(m)
    }

    fn outbound(
        &self,
        tx: &mut Txn<'_>,
        frame: &mut Frame<'_>,
        mut p: Ipv4Packet,
        ctx: &Ctx,
    ) -> Result<Verdict, Abort> {
        let flow = *p.flow();
        if !translatable(flow.proto) || !p.has_sport() {
            return Ok(Verdict::Drop);
        }
        let key = out_key(&flow);
        let (m, fresh) = match tx.record::<Mapping>(&key)? {
            Some(m) if self.policy.live(&m, flow.proto, ctx.now_ns) => (m, false),
            stale => {
                if let Some(m) = stale {
                    release(tx, &flow, &m)?;
                }
                let Some(port) = self.policy.allocate(tx, ctx, &flow)? else {
                    return Ok(Verdict::Drop);
                };
                let original = Original {
                    addr: flow.src,
                    port: flow.sport,
                };
                tx.put_record(&in_key(flow.proto, flow.dst, flow.dport, port), &original)?;
                let m = Mapping {
                    public_port: port,
                    last_seen_ns: ctx.now_ns,
                    closing: false,
                };
                (m, true)
            }
        };
        let m = self.touch(tx, &key, m, fresh, p.tcp_flags(), ctx.now_ns)?;
        let bytes = frame.bytes_mut();
        p.set_src_addr(bytes, self.public_ip);
        p.set_sport(bytes, m.public_port);
        Ok(Verdict::Forward)
    }

    fn inbound(
        &self,
        tx: &mut Txn<'_>,
        frame: &mut Frame<'_>,
        mut p: Ipv4Packet,
        ctx: &Ctx,
    ) -> Result<Verdict, Abort> {
        let flow = *p.flow();
        if flow.dst != self.public_ip || !translatable(flow.proto) || !p.has_dport() {
            return Ok(Verdict::Drop);
        }
        let Some((original, key, m)) =
            self.inside(tx, flow.proto, (flow.src, flow.sport), flow.dport, ctx)?
        else {
            return Ok(Verdict::Drop);
        };
        self.touch(tx, &key, m, false, p.tcp_flags(), ctx.now_ns)?;
        let bytes = frame.bytes_mut();
        p.set_dst_addr(bytes, original.addr);
        p.set_dport(bytes, original.port);
        Ok(Verdict::Forward)
    }

    /// An ICMP error about a packet of a live mapping's connection (`quoted`), translated back
    /// as that packet was. Inbound, from outside about a packet this NAT sent out (from the
    /// public address): to the connection's inside host, quoting the packet it sent, so that it
    /// learns of the error (path MTU discovery needs the "fragmentation needed" ones). Outbound,
    /// from an inside host about a packet of its connection that came in (a reply whose
    /// destination the NAT translated): from the public address, quoting the packet as it
    /// arrived. The mapping is read, never refreshed: an error does not keep it alive. Errors
    /// about packets of no live mapping are dropped.
    fn error(
        &self,
        tx: &mut Txn<'_>,
        frame: &mut Frame<'_>,
        mut p: Ipv4Packet,
        mut quoted: Ipv4Packet,
        ctx: &Ctx,
    ) -> Result<Verdict, Abort> {
        let q = *quoted.flow();
        if !translatable(q.proto) {
            return Ok(Verdict::Drop);
        }
        match ctx.direction {
            Direction::Inbound => {
                let ours = p.flow().dst == self.public_ip && q.src == self.public_ip;
                let found = match ours && quoted.has_sport() {
                    true => self.inside(tx, q.proto, (q.dst, q.dport), q.sport, ctx)?,
                    false => None,
                };
                let Some((original, _, _)) = found else {
                    return Ok(Verdict::Drop);
                };
                let bytes = frame.bytes_mut();
                quoted.set_src_addr(bytes, original.addr);
                quoted.set_sport(bytes, original.port);
                p.set_dst_addr(bytes, original.addr);
            }
            Direction::Outbound => {
                let mapping = match q.dst == p.flow().src && quoted.has_dport() {
                    true => tx.record::<Mapping>(&out_key(&q.reversed()))?,
                    false => None,
                };
                let Some(m) = mapping.filter(|m| self.policy.live(m, q.proto, ctx.now_ns)) else {
                    return Ok(Verdict::Drop);
                };
                let bytes = frame.bytes_mut();
                quoted.set_dst_addr(bytes, self.public_ip);
                quoted.set_dport(bytes, m.public_port);
                p.set_src_addr(bytes, self.public_ip);
            }
        }
        Ok(Verdict::Forward)
    }

    /// The inside end of the `proto` connection between `remote` (address, port) and
    /// `public_port`, when its mapping holds: the original address and port, the outbound
    /// mapping's key and the mapping.
    fn inside(
        &self,
        tx: &mut Txn<'_>,
        proto: u8,
        (remote, remote_port): (Ipv4Addr, u16),
        public_port: u16,
        ctx: &Ctx,
    ) -> Result<Option<(Original, [u8; 1 + FlowKey::LEN], Mapping)>, Abort> {
        let Some(original) =
            tx.record::<Original>(&in_key(proto, remote, remote_port, public_port))?
        else {
            return Ok(None);
        };
        let outbound = FlowKey {
            proto,
            src: original.addr,
            dst: remote,
            sport: original.port,
            dport: remote_port,
        };
        let key = out_key(&outbound);
        Ok(match tx.record::<Mapping>(&key)? {
            Some(m) if m.public_port == public_port && self.policy.live(&m, proto, ctx.now_ns) => {
                Some((original, key, m))
            }
            _ => None,
        })
    }
}

impl<P: NatPolicy> Middlebox for Nat<P> {
    fn kind(&self) -> &'static str {
        P::KIND
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
            return self.error(tx, frame, p, quoted, ctx);
        }
        match ctx.direction {
            Direction::Outbound => self.outbound(tx, frame, p, ctx),
            Direction::Inbound => self.inbound(tx, frame, p, ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use ftc_stm::{LogKind, Worker};

    use super::*;
    use crate::middlebox::Direction::*;
    use crate::middleboxes::packet::{parse, Parsed};
    use crate::middleboxes::testutil::*;

    const SEC: u64 = 1_000_000_000;

    fn ports(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    fn simple(first: u16, last: u16) -> SimpleNat {
        SimpleNat::new(&NatConfig {
            public_ip: PUBLIC,
            ports: ports(first, last),
        })
    }

    fn mazu(first: u16, last: u16, threads: u16) -> MazuNat {
        MazuNat::new(
            &MazuNatConfig {
                public_ip: PUBLIC,
                ports: ports(first, last),
                tcp_timeout: 1000,
                tcp_closed_timeout: 10,
                udp_timeout: 30,
            },
            threads,
        )
    }

    /// Send `frame` through `nat`; on Forward, check its checksums and return its flow.
    fn send(
        w: &mut Worker<'_>,
        nat: &dyn Middlebox,
        mut frame: Vec<u8>,
        dir: Direction,
        now_ns: u64,
    ) -> (Verdict, LogKind, Option<FlowKey>) {
        let (verdict, kind) = run(w, nat, &mut frame, ctx(w.id(), now_ns, dir));
        let seen = (verdict == Verdict::Forward).then(|| {
            assert_checksums(&frame);
            match parse(&frame) {
                Parsed::Ipv4(p) => *p.flow(),
                other => panic!("forwarded {other:?}"),
            }
        });
        (verdict, kind, seen)
    }

    /// The public port an outbound packet got (asserting it was translated).
    fn public_port(seen: Option<FlowKey>) -> u16 {
        let seen = seen.expect("forwarded");
        assert_eq!(seen.src, PUBLIC);
        seen.sport
    }

    #[test]
    fn simple_connection_keeps_its_port_and_replies_come_back() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let nat = simple(10000, 10099);
        let inside = flow(proto::TCP, CLIENT, 1234, SERVER, 80);
        let syn = || tcp_frame(CLIENT, 1234, SERVER, 80, TcpFlags::SYN);
        let (v, kind, seen) = send(&mut w, &nat, syn(), Outbound, 0);
        assert_eq!((v, kind), (Verdict::Forward, LogKind::Update));
        let port = public_port(seen);
        assert!((10000..=10099).contains(&port));
        assert_eq!(seen.unwrap().dst, SERVER);
        assert_eq!(seen.unwrap().dport, 80);
        for _ in 0..3 {
            let (v, kind, seen) = send(&mut w, &nat, syn(), Outbound, 5 * SEC);
            assert_eq!((v, kind), (Verdict::Forward, LogKind::ReadOnly));
            assert_eq!(public_port(seen), port);
        }
        assert_eq!(nat.lookup_outbound(&store, &inside), Some((PUBLIC, port)));
        assert_eq!(
            inbound_original(&store, proto::TCP, SERVER, 80, port),
            Some((CLIENT, 1234))
        );

        let reply = tcp_frame(SERVER, 80, PUBLIC, port, TcpFlags::SYN | TcpFlags::ACK);
        let (v, kind, seen) = send(&mut w, &nat, reply, Inbound, 6 * SEC);
        assert_eq!((v, kind), (Verdict::Forward, LogKind::ReadOnly));
        assert_eq!(seen, Some(inside.reversed()));
    }

    #[test]
    fn distinct_connections_get_distinct_ports() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let nat = simple(10000, 10099);
        let frames = [
            tcp_frame(CLIENT, 1234, SERVER, 80, TcpFlags::SYN),
            tcp_frame(CLIENT, 1235, SERVER, 80, TcpFlags::SYN),
            tcp_frame(CLIENT2, 1234, SERVER, 80, TcpFlags::SYN),
            udp_frame(CLIENT, 1234, SERVER, 80),
            tcp_frame(CLIENT, 1234, SERVER, 443, TcpFlags::SYN),
        ];
        let mut seen_ports = HashSet::new();
        for f in frames {
            let original = flow_of(&f);
            let (_, _, seen) = send(&mut w, &nat, f, Outbound, 0);
            let port = public_port(seen);
            assert!(seen_ports.insert(port), "port {port} given twice");
            // Each reply goes back to its own client.
            let reply = seen.unwrap().reversed();
            let frame = if reply.proto == proto::TCP {
                tcp_frame(
                    reply.src,
                    reply.sport,
                    reply.dst,
                    reply.dport,
                    TcpFlags::ACK,
                )
            } else {
                udp_frame(reply.src, reply.sport, reply.dst, reply.dport)
            };
            let (v, _, back) = send(&mut w, &nat, frame, Inbound, 0);
            assert_eq!(v, Verdict::Forward);
            assert_eq!(back, Some(original.reversed()));
        }
    }

    #[test]
    fn unknown_inbound_is_dropped_and_non_ip_passes() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        for nat in [
            &simple(10000, 10099) as &dyn Middlebox,
            &mazu(10000, 10099, 1),
        ] {
            let (_, _, seen) = send(
                &mut w,
                nat,
                udp_frame(CLIENT, 5000, SERVER, 53),
                Outbound,
                0,
            );
            let port = public_port(seen);
            // Wrong remote port, unused public port, not addressed to the public address.
            for f in [
                udp_frame(SERVER, 54, PUBLIC, port),
                udp_frame(SERVER, 53, PUBLIC, port.wrapping_add(1)),
                udp_frame(SERVER, 53, CLIENT, port),
                tcp_frame(SERVER, 53, PUBLIC, port, TcpFlags::ACK),
            ] {
                assert_eq!(send(&mut w, nat, f, Inbound, 0).0, Verdict::Drop);
            }
            for dir in [Outbound, Inbound] {
                let mut f = arp_frame();
                let before = f.clone();
                assert_eq!(
                    run(&mut w, nat, &mut f, ctx(0, 0, dir)),
                    (Verdict::Forward, LogKind::Noop)
                );
                assert_eq!(f, before);
            }
            // An echo reply from inside has no source identifier to translate.
            let f = icmp_echo_frame(CLIENT, SERVER, 3, false);
            assert_eq!(send(&mut w, nat, f, Outbound, 0).0, Verdict::Drop);
        }
    }

    #[test]
    fn pool_exhaustion_drops_new_connections_only() {
        for nat in [
            &simple(20000, 20002) as &dyn Middlebox,
            &mazu(20000, 20002, 1),
        ] {
            let store = Store::new(16, 1).unwrap();
            let mut w = store.worker(0).unwrap();
            let mut given = HashSet::new();
            for sport in 0..3 {
                let f = udp_frame(CLIENT, sport, SERVER, 53);
                given.insert(public_port(send(&mut w, nat, f, Outbound, 0).2));
            }
            assert_eq!(given, HashSet::from([20000, 20001, 20002]));
            let f = udp_frame(CLIENT, 3, SERVER, 53);
            assert_eq!(send(&mut w, nat, f, Outbound, 0).0, Verdict::Drop);
            let f = udp_frame(CLIENT, 1, SERVER, 53);
            assert_eq!(send(&mut w, nat, f, Outbound, 0).0, Verdict::Forward);
        }
    }

    #[test]
    fn ping_is_translated_by_identifier() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let nat = simple(10000, 10099);
        let f = icmp_echo_frame(CLIENT, SERVER, 42, true);
        let (v, _, seen) = send(&mut w, &nat, f, Outbound, 0);
        assert_eq!(v, Verdict::Forward);
        let id = public_port(seen);
        let f = icmp_echo_frame(SERVER, PUBLIC, id, false);
        let (v, _, back) = send(&mut w, &nat, f, Inbound, 0);
        assert_eq!(v, Verdict::Forward);
        assert_eq!(back, Some(flow(proto::ICMP, SERVER, 0, CLIENT, 42)));
    }

    /// Path MTU discovery through the NAT: a router's "fragmentation needed" (or any ICMP error)
    /// about a packet the NAT sent out reaches the inside host that sent it, quoting that very
    /// packet (every translated byte, checksums included, back as the host sent it), for TCP,
    /// UDP and pings, quoted whole or only as far as RFC 792 asks; a read-only transaction.
    #[test]
    fn icmp_errors_about_translated_packets_reach_their_inside_host() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let nat = simple(10000, 10099);
        let sent = [
            tcp_frame(CLIENT, 1234, SERVER, 80, TcpFlags::ACK),
            udp_frame(CLIENT, 7, SERVER, 53),
            icmp_echo_frame(CLIENT, SERVER, 42, true),
        ];
        for original in sent {
            let mut out = original.clone();
            let (v, _) = run(&mut w, &nat, &mut out, ctx(0, 0, Outbound));
            assert_eq!(v, Verdict::Forward);
            for quote in [20 + 8, usize::MAX] {
                let error = icmp_error_frame(ROUTER, PUBLIC, &out, quote);
                let mut back = error.clone();
                let (v, kind) = run(&mut w, &nat, &mut back, ctx(0, SEC, Inbound));
                assert_eq!((v, kind), (Verdict::Forward, LogKind::ReadOnly));
                assert_checksums(&back);
                assert_eq!(flow_of(&back), flow(proto::ICMP, ROUTER, 0, CLIENT, 0));
                let packet = ip_packet(&original);
                assert_eq!(quote_of(&back), &packet[..quote.min(packet.len())]);
                // The router's header but for its destination (and checksum), and the error's
                // type and code, are untouched.
                assert_eq!(back[..14 + 10], error[..14 + 10]);
                assert_eq!(back[14 + 12..14 + 16], error[14 + 12..14 + 16]);
                assert_eq!(back[14 + 20..14 + 20 + 2], error[14 + 20..14 + 20 + 2]);
            }
        }
    }

    /// An inside host's ICMP error about a packet that came in through the NAT (a UDP reply to a
    /// closed socket, say) leaves from the public address, quoting that packet byte for byte as
    /// it arrived, for TCP, UDP and pings, quoted whole or as RFC 792 asks; read-only. Another
    /// inside host's error about it is dropped.
    #[test]
    fn icmp_errors_from_inside_about_replies_leave_translated() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let nat = simple(10000, 10099);
        type Reply = fn(u16) -> Vec<u8>;
        let connections: [(Vec<u8>, Reply); 3] = [
            (udp_frame(CLIENT, 7, SERVER, 53), |port| {
                udp_frame(SERVER, 53, PUBLIC, port)
            }),
            (tcp_frame(CLIENT, 1234, SERVER, 80, TcpFlags::SYN), |port| {
                tcp_frame(SERVER, 80, PUBLIC, port, TcpFlags::ACK)
            }),
            (icmp_echo_frame(CLIENT, SERVER, 42, true), |id| {
                icmp_echo_frame(SERVER, PUBLIC, id, false)
            }),
        ];
        for (request, reply) in connections {
            let port = public_port(send(&mut w, &nat, request, Outbound, 0).2);
            let arrived = reply(port);
            let mut delivered = arrived.clone();
            let (v, _) = run(&mut w, &nat, &mut delivered, ctx(0, 0, Inbound));
            assert_eq!(v, Verdict::Forward);
            for quote in [20 + 8, usize::MAX] {
                let mut error = icmp_error_frame(CLIENT, SERVER, &delivered, quote);
                let (v, kind) = run(&mut w, &nat, &mut error, ctx(0, SEC, Outbound));
                assert_eq!((v, kind), (Verdict::Forward, LogKind::ReadOnly));
                assert_checksums(&error);
                assert_eq!(flow_of(&error), flow(proto::ICMP, PUBLIC, 0, SERVER, 0));
                let packet = ip_packet(&arrived);
                assert_eq!(quote_of(&error), &packet[..quote.min(packet.len())]);
            }
            let other = icmp_error_frame(CLIENT2, SERVER, &delivered, 64);
            assert_eq!(send(&mut w, &nat, other, Outbound, SEC).0, Verdict::Drop);
        }
    }

    /// ICMP errors the NAT does not pass: about a packet of no mapping, about a packet not from
    /// its public address, quoting too little to find the connection, and about a mapping that
    /// expired; an error does not keep a mapping alive.
    #[test]
    fn icmp_errors_of_no_live_mapping_are_dropped_and_refresh_nothing() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let nat = mazu(10000, 10099, 1);
        let mut out = udp_frame(CLIENT, 7, SERVER, 53);
        assert_eq!(
            run(&mut w, &nat, &mut out, ctx(0, 0, Outbound)).0,
            Verdict::Forward
        );
        let port = flow_of(&out).sport;
        let mut inbound = |frame: Vec<u8>, at| send(&mut w, &nat, frame, Inbound, at).0;
        let unknown = udp_frame(PUBLIC, port, SERVER, 54);
        assert_eq!(
            inbound(icmp_error_frame(ROUTER, PUBLIC, &unknown, 64), 0),
            Verdict::Drop
        );
        let inside = udp_frame(CLIENT, 7, SERVER, 53);
        assert_eq!(
            inbound(icmp_error_frame(ROUTER, PUBLIC, &inside, 64), 0),
            Verdict::Drop
        );
        assert_eq!(
            inbound(icmp_error_frame(ROUTER, PUBLIC, &out, 20 + 4), 0),
            Verdict::Drop
        );
        assert_eq!(
            inbound(icmp_error_frame(ROUTER, CLIENT, &out, 64), 0),
            Verdict::Drop,
            "not to the public address"
        );
        assert_eq!(
            inbound(icmp_error_frame(ROUTER, PUBLIC, &out, 64), 20 * SEC),
            Verdict::Forward
        );
        let mapping = flow(proto::UDP, CLIENT, 7, SERVER, 53);
        assert_eq!(outbound_mapping(&store, &mapping).unwrap().last_seen_ns, 0);
        // 30 s of UDP idleness expire the mapping, errors or not.
        assert_eq!(
            inbound(icmp_error_frame(ROUTER, PUBLIC, &out, 64), 31 * SEC),
            Verdict::Drop
        );
    }

    #[test]
    fn mazu_updates_on_every_packet() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let nat = mazu(10000, 10099, 1);
        let inside = flow(proto::UDP, CLIENT, 7, SERVER, 53);
        let (_, kind, seen) = send(&mut w, &nat, udp_frame(CLIENT, 7, SERVER, 53), Outbound, 0);
        assert_eq!(kind, LogKind::Update);
        let port = public_port(seen);
        let (v, kind, _) = send(
            &mut w,
            &nat,
            udp_frame(SERVER, 53, PUBLIC, port),
            Inbound,
            SEC,
        );
        assert_eq!((v, kind), (Verdict::Forward, LogKind::Update));
        assert_eq!(outbound_mapping(&store, &inside).unwrap().last_seen_ns, SEC);
        let (_, kind, _) = send(
            &mut w,
            &nat,
            udp_frame(CLIENT, 7, SERVER, 53),
            Outbound,
            2 * SEC,
        );
        assert_eq!(kind, LogKind::Update);
        assert_eq!(
            outbound_mapping(&store, &inside).unwrap().last_seen_ns,
            2 * SEC
        );
    }

    #[test]
    fn mazu_expires_idle_mappings_and_reuses_their_ports() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let nat = mazu(30000, 30000, 1);
        let a = || udp_frame(CLIENT, 1, SERVER, 53);
        let b = || udp_frame(CLIENT2, 2, SERVER, 53);
        assert_eq!(public_port(send(&mut w, &nat, a(), Outbound, 0).2), 30000);
        // Still live after 30 s idle: B finds no port.
        assert_eq!(send(&mut w, &nat, b(), Outbound, 30 * SEC).0, Verdict::Drop);
        // Idle for more than 30 s: expired, and its port goes to B.
        assert_eq!(
            public_port(send(&mut w, &nat, b(), Outbound, 31 * SEC).2),
            30000
        );
        let a_inside = flow(proto::UDP, CLIENT, 1, SERVER, 53);
        let b_inside = flow(proto::UDP, CLIENT2, 2, SERVER, 53);
        assert_eq!(outbound_mapping(&store, &a_inside), None);
        assert_eq!(
            inbound_original(&store, proto::UDP, SERVER, 53, 30000),
            Some((CLIENT2, 2))
        );
        let reply = udp_frame(SERVER, 53, PUBLIC, 30000);
        let (v, _, back) = send(&mut w, &nat, reply, Inbound, 32 * SEC);
        assert_eq!((v, back), (Verdict::Forward, Some(b_inside.reversed())));
        // B expires too; an inbound packet then finds nothing live.
        let reply = udp_frame(SERVER, 53, PUBLIC, 30000);
        assert_eq!(
            send(&mut w, &nat, reply, Inbound, 63 * SEC).0,
            Verdict::Drop
        );
        // B's own next packet after expiry starts a fresh mapping.
        assert_eq!(
            public_port(send(&mut w, &nat, b(), Outbound, 64 * SEC).2),
            30000
        );
        assert_eq!(
            outbound_mapping(&store, &b_inside).unwrap().last_seen_ns,
            64 * SEC
        );
    }

    #[test]
    fn mazu_fin_or_rst_shortens_the_timeout() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let nat = mazu(10000, 10099, 1);
        let port_of = |sport: u16, w: &mut Worker<'_>| {
            let f = tcp_frame(CLIENT, sport, SERVER, 80, TcpFlags::SYN);
            public_port(send(w, &nat, f, Outbound, 0).2)
        };
        let (closed, rst, open) = (port_of(1, &mut w), port_of(2, &mut w), port_of(3, &mut w));
        let f = tcp_frame(CLIENT, 1, SERVER, 80, TcpFlags::FIN | TcpFlags::ACK);
        assert_eq!(send(&mut w, &nat, f, Outbound, SEC).0, Verdict::Forward);
        let f = tcp_frame(SERVER, 80, PUBLIC, rst, TcpFlags::RST);
        assert_eq!(send(&mut w, &nat, f, Inbound, SEC).0, Verdict::Forward);
        let inside = flow(proto::TCP, CLIENT, 1, SERVER, 80);
        assert!(outbound_mapping(&store, &inside).unwrap().closing);
        // Idle 10 s after the FIN/RST: still live (and refreshed); idle 11 s: gone. The open one lives on.
        for (port, live_at_11) in [(closed, false), (rst, false), (open, true)] {
            let f = tcp_frame(SERVER, 80, PUBLIC, port, TcpFlags::ACK);
            assert_eq!(send(&mut w, &nat, f, Inbound, 11 * SEC).0, Verdict::Forward);
            let f = tcp_frame(SERVER, 80, PUBLIC, port, TcpFlags::ACK);
            let want = if live_at_11 {
                Verdict::Forward
            } else {
                Verdict::Drop
            };
            assert_eq!(send(&mut w, &nat, f, Inbound, 22 * SEC).0, want);
        }
    }

    /// Two worker threads set up many connections at once: every connection gets its own port,
    /// and the stored mappings agree with what the packets carried.
    fn concurrent_allocation(nat: &dyn Middlebox) {
        const PER_THREAD: u16 = 300;
        let store = Store::new(64, 2).unwrap();
        let results: Vec<(FlowKey, u16)> = std::thread::scope(|s| {
            let handles: Vec<_> = [CLIENT, CLIENT2]
                .into_iter()
                .enumerate()
                .map(|(id, client)| {
                    let store = &store;
                    s.spawn(move || {
                        let mut w = store.worker(id as u16).unwrap();
                        let mut got = Vec::new();
                        for sport in 0..PER_THREAD {
                            let f = udp_frame(client, 1000 + sport, SERVER, 53);
                            let inside = flow_of(&f);
                            let port = public_port(send(&mut w, nat, f, Outbound, 0).2);
                            // The same connection again keeps its port.
                            let f = udp_frame(client, 1000 + sport, SERVER, 53);
                            assert_eq!(public_port(send(&mut w, nat, f, Outbound, 1).2), port);
                            got.push((inside, port));
                        }
                        got
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let ports: HashSet<u16> = results.iter().map(|(_, p)| *p).collect();
        assert_eq!(ports.len(), 2 * usize::from(PER_THREAD));
        for (inside, port) in results {
            assert_eq!(
                outbound_mapping(&store, &inside).map(|m| m.public_port),
                Some(port)
            );
            assert_eq!(
                inbound_original(&store, proto::UDP, SERVER, 53, port),
                Some((inside.src, inside.sport))
            );
        }
    }

    #[test]
    fn concurrent_allocation_simple() {
        concurrent_allocation(&simple(10000, 60000));
    }

    #[test]
    fn concurrent_allocation_mazu() {
        concurrent_allocation(&mazu(10000, 60000, 2));
    }

    /// Configured for one thread but run by two: both allocate from the one slice, so they
    /// contend on its cursor and the port owner table.
    #[test]
    fn concurrent_allocation_mazu_shared_slice() {
        concurrent_allocation(&mazu(10000, 60000, 1));
    }

    #[test]
    fn kinds_and_slices() {
        assert_eq!(simple(1, 2).kind(), "simple-nat");
        let m = mazu(100, 199, 4);
        assert_eq!(m.kind(), "mazu-nat");
        let slices: Vec<_> = (0..4).map(|i| m.policy.slice(i)).collect();
        assert_eq!(slices, [(100, 25), (125, 25), (150, 25), (175, 25)]);
        assert_eq!(mazu(100, 101, 4).policy.slices, 1);
        // An inverted range is an empty pool, not a panic.
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        for nat in [&simple(10, 9) as &dyn Middlebox, &mazu(10, 9, 2)] {
            let f = udp_frame(CLIENT, 1, SERVER, 2);
            assert_eq!(send(&mut w, nat, f, Outbound, 0).0, Verdict::Drop);
        }
    }

    #[test]
    fn mapping_records_round_trip() {
        let m = Mapping {
            public_port: 4242,
            last_seen_ns: u64::MAX - 1,
            closing: true,
        };
        let mut buf = [0; Mapping::SIZE];
        m.encode(&mut buf);
        assert_eq!(Mapping::decode(&buf), Some(m));
        assert_eq!(Mapping::decode(&buf[1..]), None);
    }

    #[test]
    fn prefixes_never_panic() {
        assert_prefixes_never_panic(&simple(10000, 10010));
        assert_prefixes_never_panic(&mazu(10000, 10010, 1));
    }
}
