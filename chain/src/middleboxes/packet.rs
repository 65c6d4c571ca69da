//! Frame helpers shared by the middleboxes: parse an Ethernet/IPv4 frame into its flow key and the
//! offsets of its rewritable fields, and rewrite addresses and ports in place with incremental
//! checksum updates (RFC 1624).
//!
//! Parsing is a hand-written walk over the bytes (no allocation, no copy): the Ethernet header,
//! at most one 802.1Q tag, the IPv4 header (options skipped), then the TCP, UDP or ICMP header.
//! Every offset is checked against the frame once, in [`parse`]; the setters re-check the bounds
//! and do nothing when handed a shorter buffer, so nothing here can panic on network input.
//!
//! Ports of the flow key:
//! - TCP and UDP: the ports.
//! - ICMP echo request: `sport` = identifier, `dport` = 0; echo reply: `sport` = 0, `dport` =
//!   identifier. So the reverse of a request's key is its reply's key, and the identifier is
//!   the request's rewritable *source* port and the reply's rewritable *destination* port: a NAT,
//!   a stateful firewall or a monitor treat a ping like any other flow.
//! - Other ICMP messages, other protocols and non-first IPv4 fragments: both 0, not rewritable.
//!
//! Only the first fragment of a fragmented datagram carries the transport header (and the
//! transport checksum, which the incremental update keeps right for the whole datagram).
//!
//! An ICMP error (destination unreachable, time exceeded, parameter problem) quotes the start of
//! the packet it is about: [`Ipv4Packet::quoted`] parses that packet, as far as it is quoted, into
//! an [`Ipv4Packet`] of its own, whose setters also fold every change into the error's ICMP
//! checksum (a NAT translates the quote as it translates the packets it is about).

use std::net::Ipv4Addr;

/// IP protocol numbers the middleboxes know.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPV4_MIN_HEADER_LEN: usize = 20;
const TCP_MIN_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const ICMP_HEADER_LEN: usize = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// What an ICMP error quotes of its packet's transport header at least (RFC 792): the ports, or
/// an echo's identifier.
const QUOTED_TRANSPORT_LEN: usize = 8;

/// A directional 5-tuple, as seen on a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl FlowKey {
    /// Encoded length: proto, source and destination address, source and destination port.
    pub const LEN: usize = 13;

    /// The key as bytes (big-endian fields), for state keys.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        self.encode(&mut out);
        out
    }

    /// A state key: `tag`, then the key's bytes.
    pub fn tagged(&self, tag: u8) -> [u8; 1 + Self::LEN] {
        let mut out = [tag; 1 + Self::LEN];
        self.encode(&mut out[1..]);
        out
    }

    /// Write the key into `out` (exactly [`Self::LEN`] bytes).
    pub fn encode(&self, out: &mut [u8]) {
        out[0] = self.proto;
        out[1..5].copy_from_slice(&self.src.octets());
        out[5..9].copy_from_slice(&self.dst.octets());
        out[9..11].copy_from_slice(&self.sport.to_be_bytes());
        out[11..13].copy_from_slice(&self.dport.to_be_bytes());
    }

    /// Read a key written by [`Self::encode`].
    pub fn decode(bytes: &[u8]) -> Option<FlowKey> {
        let b: &[u8; Self::LEN] = bytes.try_into().ok()?;
        Some(FlowKey {
            proto: b[0],
            src: Ipv4Addr::new(b[1], b[2], b[3], b[4]),
            dst: Ipv4Addr::new(b[5], b[6], b[7], b[8]),
            sport: u16::from_be_bytes([b[9], b[10]]),
            dport: u16::from_be_bytes([b[11], b[12]]),
        })
    }

    /// The same flow seen from the other direction.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

/// The flag bits of a TCP header (0 for other protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;

    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    /// FIN or RST: the connection is closing.
    pub fn closing(self) -> bool {
        self.fin() || self.rst()
    }
}

/// What a frame turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not IPv4 (ARP, IPv6, …): the middleboxes pass it on untouched.
    NotIpv4,
    /// Claims to be IPv4 but is truncated or inconsistent.
    Malformed,
    Ipv4(Ipv4Packet),
}

/// The transport checksum's kind: whether it covers the pseudo-header and whether 0 means none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checksum {
    /// No transport checksum to keep (other protocols, non-first fragments).
    None,
    /// TCP: covers the pseudo-header.
    Tcp(usize),
    /// UDP: covers the pseudo-header; 0 means "no checksum" and stays 0.
    Udp(usize),
    /// ICMP: covers the ICMP message only.
    Icmp(usize),
}

/// An IPv4 packet inside a frame (or quoted by an ICMP error in one): its flow key and where its
/// rewritable fields are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet {
    flow: FlowKey,
    ip: usize,
    checksum: Checksum,
    sport_at: Option<usize>,
    dport_at: Option<usize>,
    tcp_flags: TcpFlags,
    /// A packet quoted by an ICMP error: where the error's checksum is, which covers every byte
    /// of the quote.
    quoted_in: Option<usize>,
}

/// Parse `frame` (Ethernet II, at most one 802.1Q tag, IPv4).
pub fn parse(frame: &[u8]) -> Parsed {
    parse_inner(frame).unwrap_or(Parsed::Malformed)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn addr(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

/// The frame's ethertype (behind at most one 802.1Q tag) and where its payload starts.
fn ethertype(frame: &[u8]) -> Option<(u16, usize)> {
    let ethertype = be16(frame, ETH_HEADER_LEN - 2)?;
    match ethertype {
        ETHERTYPE_VLAN => Some((
            be16(frame, ETH_HEADER_LEN + VLAN_TAG_LEN - 2)?,
            ETH_HEADER_LEN + VLAN_TAG_LEN,
        )),
        _ => Some((ethertype, ETH_HEADER_LEN)),
    }
}

/// Whether `frame` is ARP (behind at most one 802.1Q tag).
pub fn is_arp(frame: &[u8]) -> bool {
    ethertype(frame).is_some_and(|(t, _)| t == ETHERTYPE_ARP)
}

/// `None` means malformed.
fn parse_inner(frame: &[u8]) -> Option<Parsed> {
    let (ethertype, ip) = ethertype(frame)?;
    if ethertype != ETHERTYPE_IPV4 {
        return Some(Parsed::NotIpv4);
    }
    let first = *frame.get(ip)?;
    let header_len = usize::from(first & 0x0f) * 4;
    let total_len = usize::from(be16(frame, ip + 2)?);
    // The frame may be longer (Ethernet padding), never shorter.
    if first >> 4 != 4
        || header_len < IPV4_MIN_HEADER_LEN
        || total_len < header_len
        || ip + total_len > frame.len()
    {
        return None;
    }
    let end = ip + total_len;
    let protocol = frame[ip + 9];
    let fragment_offset = be16(frame, ip + 6)? & 0x1fff;
    let mut packet = Ipv4Packet::bare(frame, ip, None)?;
    if fragment_offset != 0 {
        return Some(Parsed::Ipv4(packet));
    }
    let l4 = ip + header_len;
    let l4_len = end - l4;
    match protocol {
        proto::TCP => {
            let data_offset = usize::from(frame[l4..end].get(12)? >> 4) * 4;
            if l4_len < TCP_MIN_HEADER_LEN
                || data_offset < TCP_MIN_HEADER_LEN
                || data_offset > l4_len
            {
                return None;
            }
            packet.checksum = Checksum::Tcp(l4 + 16);
            packet.tcp_flags = TcpFlags(frame[l4 + 13]);
        }
        proto::UDP => {
            if l4_len < UDP_HEADER_LEN {
                return None;
            }
            packet.checksum = Checksum::Udp(l4 + 6);
        }
        proto::ICMP => {
            if l4_len < ICMP_HEADER_LEN {
                return None;
            }
            packet.checksum = Checksum::Icmp(l4 + 2);
            let id = be16(frame, l4 + 4)?;
            match frame[l4] {
                ICMP_ECHO_REQUEST => {
                    packet.flow.sport = id;
                    packet.sport_at = Some(l4 + 4);
                }
                ICMP_ECHO_REPLY => {
                    packet.flow.dport = id;
                    packet.dport_at = Some(l4 + 4);
                }
                _ => {}
            }
            return Some(Parsed::Ipv4(packet));
        }
        _ => return Some(Parsed::Ipv4(packet)),
    }
    packet.flow.sport = be16(frame, l4)?;
    packet.flow.dport = be16(frame, l4 + 2)?;
    packet.sport_at = Some(l4);
    packet.dport_at = Some(l4 + 2);
    Some(Parsed::Ipv4(packet))
}

/// RFC 1624 eqn. 3: the checksum `hc` after the 16-bit words `old` became `new`
/// (`HC' = ~(~HC + ~m + m')` in ones' complement arithmetic).
fn checksum_update(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!hc);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        sum += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        sum += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The checksum at `csum_at` once the 16-bit words `old` became `new`; `None` when there is
/// none to change (out of the frame, or a UDP checksum of 0: none).
fn patched_checksum(
    frame: &[u8],
    csum_at: usize,
    old: &[u8],
    new: &[u8],
    udp: bool,
) -> Option<u16> {
    let hc = be16(frame, csum_at)?;
    if udp && hc == 0 {
        return None;
    }
    let updated = checksum_update(hc, old, new);
    Some(if udp && updated == 0 { 0xffff } else { updated })
}

impl Ipv4Packet {
    /// The packet whose IPv4 header is at `ip` (its protocol and addresses, which the caller
    /// checked are there), before its transport header is looked at: no ports, nothing
    /// rewritable beyond the addresses.
    fn bare(frame: &[u8], ip: usize, quoted_in: Option<usize>) -> Option<Ipv4Packet> {
        Some(Ipv4Packet {
            flow: FlowKey {
                proto: *frame.get(ip + 9)?,
                src: addr(frame, ip + 12)?,
                dst: addr(frame, ip + 16)?,
                sport: 0,
                dport: 0,
            },
            ip,
            checksum: Checksum::None,
            sport_at: None,
            dport_at: None,
            tcp_flags: TcpFlags(0),
            quoted_in,
        })
    }

    /// The flow key (reflects the rewrites made so far).
    pub fn flow(&self) -> &FlowKey {
        &self.flow
    }

    /// The TCP flags (0 unless TCP).
    pub fn tcp_flags(&self) -> TcpFlags {
        self.tcp_flags
    }

    /// Whether the source port (TCP, UDP, ICMP echo request identifier) can be rewritten.
    pub fn has_sport(&self) -> bool {
        self.sport_at.is_some()
    }

    /// Whether the destination port (TCP, UDP, ICMP echo reply identifier) can be rewritten.
    pub fn has_dport(&self) -> bool {
        self.dport_at.is_some()
    }

    /// Set the source address, fixing the IPv4 and transport checksums.
    pub fn set_src_addr(&mut self, frame: &mut [u8], addr: Ipv4Addr) {
        if self.set_addr(frame, self.ip + 12, addr) {
            self.flow.src = addr;
        }
    }

    /// Set the destination address, fixing the IPv4 and transport checksums.
    pub fn set_dst_addr(&mut self, frame: &mut [u8], addr: Ipv4Addr) {
        if self.set_addr(frame, self.ip + 16, addr) {
            self.flow.dst = addr;
        }
    }

    /// Set the source port; false (and nothing changed) when the packet has none.
    pub fn set_sport(&mut self, frame: &mut [u8], port: u16) -> bool {
        let done = self
            .sport_at
            .is_some_and(|at| self.set_port(frame, at, port));
        if done {
            self.flow.sport = port;
        }
        done
    }

    /// Set the destination port; false (and nothing changed) when the packet has none.
    pub fn set_dport(&mut self, frame: &mut [u8], port: u16) -> bool {
        let done = self
            .dport_at
            .is_some_and(|at| self.set_port(frame, at, port));
        if done {
            self.flow.dport = port;
        }
        done
    }

    fn set_addr(&self, frame: &mut [u8], at: usize, addr: Ipv4Addr) -> bool {
        let Some(old) = frame.get(at..at + 4) else {
            return false;
        };
        let old: [u8; 4] = old.try_into().unwrap_or_default();
        let new = addr.octets();
        self.write(frame, at, &new);
        self.patch_checksum(frame, self.ip + 10, &old, &new, false);
        // The pseudo-header holds the addresses; ICMP's checksum does not cover them.
        match self.checksum {
            Checksum::Tcp(c) => self.patch_checksum(frame, c, &old, &new, false),
            Checksum::Udp(c) => self.patch_checksum(frame, c, &old, &new, true),
            Checksum::Icmp(_) | Checksum::None => {}
        }
        true
    }

    fn set_port(&self, frame: &mut [u8], at: usize, port: u16) -> bool {
        let Some(old) = frame.get(at..at + 2) else {
            return false;
        };
        let old = [old[0], old[1]];
        let new = port.to_be_bytes();
        self.write(frame, at, &new);
        match self.checksum {
            Checksum::Tcp(c) | Checksum::Icmp(c) => {
                self.patch_checksum(frame, c, &old, &new, false)
            }
            Checksum::Udp(c) => self.patch_checksum(frame, c, &old, &new, true),
            Checksum::None => {}
        }
        true
    }

    /// Fold the change of the words `old` to `new` into the checksum at `csum_at`.
    fn patch_checksum(&self, frame: &mut [u8], csum_at: usize, old: &[u8], new: &[u8], udp: bool) {
        if let Some(updated) = patched_checksum(frame, csum_at, old, new, udp) {
            self.write(frame, csum_at, &updated.to_be_bytes());
        }
    }

    /// Write `new` (2 or 4 bytes at an even offset from the packet's start) at `at`, which the
    /// caller checked is in the frame; in a quoted packet, the change is folded into the ICMP
    /// error's checksum too.
    fn write(&self, frame: &mut [u8], at: usize, new: &[u8]) {
        let Some(field) = frame.get_mut(at..at + new.len()) else {
            return;
        };
        let mut old = [0; 4];
        old[..new.len()].copy_from_slice(field);
        field.copy_from_slice(new);
        if let Some(icmp) = self.quoted_in {
            if let Some(updated) = patched_checksum(frame, icmp, &old[..new.len()], new, false) {
                frame[icmp..icmp + 2].copy_from_slice(&updated.to_be_bytes());
            }
        }
    }

    /// When this packet is an ICMP error (destination unreachable, time exceeded, parameter
    /// problem): the packet it quotes, whose whole IPv4 header and the first 8 bytes of its
    /// transport header at least (its ports, or an echo's identifier) must be quoted.
    /// Its flow key is as that packet was; its setters keep its IPv4 header checksum, its
    /// transport checksum (when quoted) and the error's ICMP checksum right.
    pub fn quoted(&self, frame: &[u8]) -> Option<Ipv4Packet> {
        let Checksum::Icmp(icmp_checksum) = self.checksum else {
            return None;
        };
        if self.quoted_in.is_some() {
            return None;
        }
        let icmp = icmp_checksum - 2;
        if !matches!(
            frame.get(icmp)?,
            &(ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM)
        ) {
            return None;
        }
        let end = self.ip + usize::from(be16(frame, self.ip + 2)?);
        let ip = icmp + ICMP_HEADER_LEN;
        let first = *frame.get(ip)?;
        let header_len = usize::from(first & 0x0f) * 4;
        let l4 = ip + header_len;
        // A quoted fragment after the first has no ports to translate.
        if first >> 4 != 4
            || header_len < IPV4_MIN_HEADER_LEN
            || l4 + QUOTED_TRANSPORT_LEN > end.min(frame.len())
            || be16(frame, ip + 6)? & 0x1fff != 0
        {
            return None;
        }
        let protocol = frame[ip + 9];
        let mut packet = Ipv4Packet::bare(frame, ip, Some(icmp_checksum))?;
        let quoted = |at: usize| at + 2 <= end.min(frame.len());
        match protocol {
            proto::TCP | proto::UDP => {
                packet.flow.sport = be16(frame, l4)?;
                packet.flow.dport = be16(frame, l4 + 2)?;
                packet.sport_at = Some(l4);
                packet.dport_at = Some(l4 + 2);
                packet.checksum = match protocol {
                    proto::UDP => Checksum::Udp(l4 + 6),
                    _ if quoted(l4 + 16) => Checksum::Tcp(l4 + 16),
                    // Past the quote: nothing to keep right.
                    _ => Checksum::None,
                };
                if protocol == proto::TCP {
                    packet.tcp_flags = TcpFlags(*frame.get(l4 + 13).unwrap_or(&0));
                }
            }
            proto::ICMP if frame[l4] == ICMP_ECHO_REQUEST => {
                packet.flow.sport = be16(frame, l4 + 4)?;
                packet.sport_at = Some(l4 + 4);
                packet.checksum = Checksum::Icmp(l4 + 2);
            }
            proto::ICMP if frame[l4] == ICMP_ECHO_REPLY => {
                packet.flow.dport = be16(frame, l4 + 4)?;
                packet.dport_at = Some(l4 + 4);
                packet.checksum = Checksum::Icmp(l4 + 2);
            }
            _ => {}
        }
        Some(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleboxes::testutil::*;

    #[test]
    fn parses_tcp_udp_icmp_and_vlan() {
        let f = tcp_frame(CLIENT, 1234, SERVER, 80, TcpFlags::SYN);
        let Parsed::Ipv4(p) = parse(&f) else {
            panic!("not parsed")
        };
        assert_eq!(*p.flow(), flow(proto::TCP, CLIENT, 1234, SERVER, 80));
        assert!(p.tcp_flags().syn() && !p.tcp_flags().closing());

        let f = udp_frame(CLIENT, 53, SERVER, 5353);
        let Parsed::Ipv4(p) = parse(&f) else {
            panic!("not parsed")
        };
        assert_eq!(*p.flow(), flow(proto::UDP, CLIENT, 53, SERVER, 5353));

        let f = icmp_echo_frame(CLIENT, SERVER, 77, true);
        let Parsed::Ipv4(p) = parse(&f) else {
            panic!("not parsed")
        };
        assert_eq!(*p.flow(), flow(proto::ICMP, CLIENT, 77, SERVER, 0));
        assert!(p.has_sport() && !p.has_dport());
        let f = icmp_echo_frame(SERVER, CLIENT, 77, false);
        let Parsed::Ipv4(p) = parse(&f) else {
            panic!("not parsed")
        };
        assert_eq!(*p.flow(), flow(proto::ICMP, SERVER, 0, CLIENT, 77));

        let f = vlan_udp_frame(CLIENT, 1, SERVER, 2);
        let Parsed::Ipv4(p) = parse(&f) else {
            panic!("not parsed")
        };
        assert_eq!(*p.flow(), flow(proto::UDP, CLIENT, 1, SERVER, 2));

        assert_eq!(parse(&arp_frame()), Parsed::NotIpv4);
        assert_eq!(parse(&ipv6_frame()), Parsed::NotIpv4);
    }

    #[test]
    fn flow_key_round_trips_and_reverses() {
        let k = flow(proto::TCP, CLIENT, 1234, SERVER, 80);
        assert_eq!(FlowKey::decode(&k.to_bytes()), Some(k));
        assert_eq!(FlowKey::decode(&[0; 12]), None);
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(k.reversed().src, SERVER);
    }

    #[test]
    fn rewrites_keep_checksums_right() {
        let frames = [
            tcp_frame(CLIENT, 1234, SERVER, 80, TcpFlags::ACK),
            udp_frame(CLIENT, 53, SERVER, 5353),
            vlan_udp_frame(CLIENT, 1, SERVER, 2),
            icmp_echo_frame(CLIENT, SERVER, 77, true),
            icmp_echo_frame(SERVER, CLIENT, 77, false),
        ];
        for original in frames {
            // Many values, so that the end-around carry and the 0/0xffff cases come up.
            for i in 0..2000u32 {
                let mut f = original.clone();
                let Parsed::Ipv4(mut p) = parse(&f) else {
                    panic!("not parsed")
                };
                let a = Ipv4Addr::from(i.wrapping_mul(0x9e37_79b9));
                let port = (i.wrapping_mul(40503) & 0xffff) as u16;
                p.set_src_addr(&mut f, a);
                p.set_dst_addr(&mut f, Ipv4Addr::from(!i));
                p.set_sport(&mut f, port);
                p.set_dport(&mut f, !port);
                assert_checksums(&f);
                let Parsed::Ipv4(q) = parse(&f) else {
                    panic!("not parsed")
                };
                assert_eq!(q.flow(), p.flow());
                assert_eq!(q.flow().src, a);
            }
        }
    }

    #[test]
    fn udp_without_checksum_stays_without() {
        let mut f = udp_frame(CLIENT, 53, SERVER, 5353);
        let at = UDP_CHECKSUM_AT;
        f[at..at + 2].copy_from_slice(&[0, 0]);
        let Parsed::Ipv4(mut p) = parse(&f) else {
            panic!("not parsed")
        };
        p.set_src_addr(&mut f, Ipv4Addr::new(9, 9, 9, 9));
        p.set_sport(&mut f, 999);
        assert_eq!(&f[at..at + 2], &[0, 0]);
    }

    #[test]
    fn every_prefix_parses_without_panic() {
        for original in [
            tcp_frame(CLIENT, 1234, SERVER, 80, TcpFlags::ACK),
            udp_frame(CLIENT, 53, SERVER, 5353),
            icmp_echo_frame(CLIENT, SERVER, 77, true),
            vlan_udp_frame(CLIENT, 1, SERVER, 2),
        ] {
            for len in 0..original.len() {
                let mut f = original[..len].to_vec();
                if let Parsed::Ipv4(mut p) = parse(&f) {
                    p.set_src_addr(&mut f, CLIENT);
                    p.set_dport(&mut f, 1);
                }
            }
            // A frame with a corrupt IPv4 length or header length is malformed.
            let mut f = original.clone();
            let ip = f.len() - ip_total_len(&original);
            f[ip] = 0x44;
            assert_eq!(parse(&f), Parsed::Malformed);
        }
    }

    proptest::proptest! {
        /// Valid frames with random bytes overwritten and a random length: parsing and
        /// rewriting never panic, whatever the headers now claim.
        #[test]
        fn mutated_frames_never_panic(
            which in 0usize..6,
            edits in proptest::collection::vec((0usize..128, proptest::prelude::any::<u8>()), 0..8),
            cut in 0usize..128,
        ) {
            let mut f = match which {
                0 => tcp_frame(CLIENT, 1234, SERVER, 80, TcpFlags::ACK),
                1 => udp_frame(CLIENT, 53, SERVER, 5353),
                2 => icmp_echo_frame(CLIENT, SERVER, 77, true),
                3 => vlan_udp_frame(CLIENT, 1, SERVER, 2),
                4 => icmp_error_frame(ROUTER, PUBLIC, &tcp_frame(PUBLIC, 1, SERVER, 80, 0), 64),
                _ => icmp_error_frame(ROUTER, PUBLIC, &icmp_echo_frame(PUBLIC, SERVER, 7, true), 28),
            };
            for (at, byte) in edits {
                if let Some(b) = f.get_mut(at) {
                    *b = byte;
                }
            }
            f.truncate(f.len().saturating_sub(cut));
            if let Parsed::Ipv4(mut p) = parse(&f) {
                p.set_src_addr(&mut f, PUBLIC);
                p.set_dst_addr(&mut f, CLIENT2);
                p.set_sport(&mut f, 1);
                p.set_dport(&mut f, 2);
                if let Some(mut q) = p.quoted(&f) {
                    q.set_src_addr(&mut f, CLIENT);
                    q.set_dst_addr(&mut f, SERVER);
                    q.set_sport(&mut f, 3);
                    q.set_dport(&mut f, 4);
                    proptest::prop_assert!(q.quoted(&f).is_none(), "a quote quotes nothing");
                }
            }
        }
    }

    /// ARP is told from IPv4, IPv6 and the rest, behind a VLAN tag too.
    #[test]
    fn arp_is_arp_behind_a_tag_too() {
        let arp = arp_frame();
        let mut tagged = arp[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged.extend_from_slice(&arp[12..]);
        assert!(is_arp(&arp) && is_arp(&tagged));
        assert_eq!(parse(&tagged), Parsed::NotIpv4);
        for other in [
            ipv6_frame(),
            udp_frame(CLIENT, 1, SERVER, 2),
            vlan_udp_frame(CLIENT, 1, SERVER, 2),
        ] {
            assert!(!is_arp(&other));
        }
        assert!(!is_arp(&arp[..13]));
    }

    /// An ICMP error's quote parses as the packet it quotes, but only for the error types, only
    /// while its IPv4 header and 8 bytes after it are there, and never from a quote.
    #[test]
    fn quotes_of_icmp_errors_parse_as_their_packets() {
        let about = udp_frame(PUBLIC, 10000, SERVER, 53);
        let error = icmp_error_frame(ROUTER, PUBLIC, &about, 64);
        let Parsed::Ipv4(p) = parse(&error) else {
            panic!("an ICMP error is IPv4")
        };
        let q = p.quoted(&error).expect("a quote");
        assert_eq!(*q.flow(), flow(proto::UDP, PUBLIC, 10000, SERVER, 53));
        assert!(q.has_sport() && q.has_dport());
        // Not an error: an echo request's payload quotes nothing.
        let Parsed::Ipv4(echo) = parse(&icmp_echo_frame(CLIENT, SERVER, 1, true)) else {
            panic!()
        };
        assert_eq!(echo.quoted(&icmp_echo_frame(CLIENT, SERVER, 1, true)), None);
        for quote in [0, 20, 20 + 7] {
            let short = icmp_error_frame(ROUTER, PUBLIC, &about, quote);
            let Parsed::Ipv4(p) = parse(&short) else {
                panic!()
            };
            assert_eq!(p.quoted(&short), None, "{quote} bytes quoted");
        }
        let Parsed::Ipv4(p) = parse(&icmp_error_frame(ROUTER, PUBLIC, &about, 20 + 8)) else {
            panic!()
        };
        assert!(p
            .quoted(&icmp_error_frame(ROUTER, PUBLIC, &about, 20 + 8))
            .is_some());
    }
}
