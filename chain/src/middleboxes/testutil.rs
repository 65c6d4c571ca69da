//! Test support for the middleboxes: frame builders (etherparse), checksum verification by full
//! recomputation, and a runner that pushes one frame through `process_packet`.

use std::net::Ipv4Addr;

use etherparse::{
    icmpv4::DestUnreachableHeader, Icmpv4Header, Icmpv4Type, NetHeaders, PacketBuilder,
    PacketHeaders, TcpHeader, TransportHeader, VlanId,
};
use ftc_stm::{LogKind, LogSource, Worker};

use super::packet::{proto, FlowKey, TcpFlags};
use crate::middlebox::{process_packet, Ctx, Direction, Frame, Middlebox, Verdict};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const CLIENT2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const SERVER: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);
pub const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// A router on the way to the server.
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const PAYLOAD: &[u8] = b"the quick brown fox jumps over the lazy dog";

pub fn flow(proto: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> FlowKey {
    FlowKey {
        proto,
        src,
        dst,
        sport,
        dport,
    }
}

/// A TCP/IPv4 frame with `flags` (`TcpFlags::*` bits) and a payload.
pub fn tcp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = TcpHeader::new(sport, dport, 1000, 64240);
    h.fin = flags & TcpFlags::FIN != 0;
    h.syn = flags & TcpFlags::SYN != 0;
    h.rst = flags & TcpFlags::RST != 0;
    h.ack = flags & TcpFlags::ACK != 0;
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp_header(h);
    let mut out = Vec::with_capacity(b.size(PAYLOAD.len()));
    b.write(&mut out, PAYLOAD).unwrap();
    out
}

/// A UDP/IPv4 frame with a payload.
pub fn udp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(PAYLOAD.len()));
    b.write(&mut out, PAYLOAD).unwrap();
    out
}

/// A UDP/IPv4 frame behind one 802.1Q tag.
pub fn vlan_udp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .single_vlan(VlanId::try_new(5).unwrap())
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(PAYLOAD.len()));
    b.write(&mut out, PAYLOAD).unwrap();
    out
}

/// An ICMP echo request (or reply) with identifier `id`.
pub fn icmp_echo_frame(src: Ipv4Addr, dst: Ipv4Addr, id: u16, request: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src.octets(), dst.octets(), 64);
    let b = if request {
        b.icmpv4_echo_request(id, 1)
    } else {
        b.icmpv4_echo_reply(id, 1)
    };
    let mut out = Vec::with_capacity(b.size(PAYLOAD.len()));
    b.write(&mut out, PAYLOAD).unwrap();
    out
}

/// The IPv4 packet of an untagged frame built here.
pub fn ip_packet(frame: &[u8]) -> &[u8] {
    &frame[14..14 + ip_total_len(frame)]
}

/// An ICMP "fragmentation needed" error from `src` to `dst` quoting the first `quote` bytes of
/// the IPv4 packet of `about` (an untagged frame built here; all of it if shorter).
pub fn icmp_error_frame(src: Ipv4Addr, dst: Ipv4Addr, about: &[u8], quote: usize) -> Vec<u8> {
    let packet = ip_packet(about);
    let quoted = &packet[..quote.min(packet.len())];
    let needed = DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 };
    let b = PacketBuilder::ethernet2(MAC_B, MAC_A)
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(needed));
    let mut out = Vec::with_capacity(b.size(quoted.len()));
    b.write(&mut out, quoted).unwrap();
    out
}

/// What the ICMP error of an untagged frame built here quotes.
pub fn quote_of(frame: &[u8]) -> &[u8] {
    &ip_packet(frame)[20 + 8..]
}

/// An ARP request frame.
pub fn arp_frame() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&CLIENT.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&SERVER.octets());
    f
}

/// A UDP/IPv6 frame.
pub fn ipv6_frame() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6([1; 16], [2; 16], 64)
        .udp(1, 2);
    let mut out = Vec::new();
    b.write(&mut out, PAYLOAD).unwrap();
    out
}

/// The IPv4 total length of a frame built here.
pub fn ip_total_len(frame: &[u8]) -> usize {
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    match h.net {
        Some(NetHeaders::Ipv4(ip, _)) => usize::from(ip.total_len),
        _ => panic!("not IPv4"),
    }
}

/// Offset of the UDP checksum in an untagged UDP/IPv4 frame built here (no IP options).
pub const UDP_CHECKSUM_AT: usize = 14 + 20 + 6;

/// The flow key of a frame, parsed by etherparse (independently of `packet::parse`).
pub fn flow_of(frame: &[u8]) -> FlowKey {
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = h.net else {
        panic!("not IPv4")
    };
    let (proto, sport, dport) = match h.transport {
        Some(TransportHeader::Tcp(t)) => (proto::TCP, t.source_port, t.destination_port),
        Some(TransportHeader::Udp(u)) => (proto::UDP, u.source_port, u.destination_port),
        _ => (ip.protocol.0, 0, 0),
    };
    flow(proto, ip.source.into(), sport, ip.destination.into(), dport)
}

/// Recompute every checksum of an IPv4 frame from scratch and compare with what it carries.
pub fn assert_checksums(frame: &[u8]) {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("frame parses");
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("not IPv4")
    };
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let payload = h.payload.slice();
    match &h.transport {
        Some(TransportHeader::Tcp(t)) => {
            assert_eq!(
                t.checksum,
                t.calc_checksum_ipv4(ip, payload).unwrap(),
                "TCP checksum"
            )
        }
        Some(TransportHeader::Udp(u)) => {
            if u.checksum != 0 {
                assert_eq!(
                    u.checksum,
                    u.calc_checksum_ipv4(ip, payload).unwrap(),
                    "UDP checksum"
                )
            }
        }
        Some(TransportHeader::Icmpv4(i)) => {
            let expected = Icmpv4Header::with_checksum(i.icmp_type.clone(), payload);
            assert_eq!(i.checksum, expected.checksum, "ICMP checksum");
        }
        other => panic!("unexpected transport {other:?}"),
    }
}

pub fn ctx(worker: u16, now_ns: u64, direction: Direction) -> Ctx {
    Ctx {
        worker,
        now_ns,
        direction,
    }
}

/// Run `frame` through `mb` as one transaction of `worker`; the frame is rewritten in place.
pub fn run(
    worker: &mut Worker<'_>,
    mb: &dyn Middlebox,
    frame: &mut Vec<u8>,
    ctx: Ctx,
) -> (Verdict, LogKind) {
    let len = frame.len();
    let mut f = Frame::new(frame, len).unwrap();
    let mut scratch = Vec::new();
    let (verdict, record) = process_packet(worker, mb, &mut f, &ctx, &mut scratch, |_| ());
    let kind = record.kind();
    let new_len = f.len();
    frame.truncate(new_len);
    (verdict, kind)
}

/// Outbound then inbound, every prefix of a few valid frames: nothing may panic, and what is
/// not a whole IPv4 packet is never rewritten into something else.
pub fn assert_prefixes_never_panic(mb: &dyn Middlebox) {
    let store = ftc_stm::Store::new(16, 1).unwrap();
    let mut w = store.worker(0).unwrap();
    let frames = [
        tcp_frame(CLIENT, 1234, SERVER, 80, TcpFlags::SYN),
        udp_frame(CLIENT, 53, SERVER, 5353),
        icmp_echo_frame(CLIENT, SERVER, 7, true),
        vlan_udp_frame(CLIENT, 1, SERVER, 2),
        tcp_frame(SERVER, 80, PUBLIC, 10000, TcpFlags::ACK),
        icmp_error_frame(ROUTER, PUBLIC, &udp_frame(PUBLIC, 10000, SERVER, 53), 64),
    ];
    for original in frames {
        for len in 0..=original.len() {
            for dir in [Direction::Outbound, Direction::Inbound] {
                let mut f = original[..len].to_vec();
                run(&mut w, mb, &mut f, ctx(0, len as u64, dir));
            }
        }
    }
}
