//! Frames between servers as bytes (DESIGN.md §4), for the transports that carry bytes (UDP,
//! AF_XDP): an NSH header with FTC's context (epoch, trailer length, flags), the customer's
//! frame untouched, and the piggyback message as trailer. A frame's packet handle stays in its
//! process; the receiver names the packet itself and recomputes its flow from its 5-tuple.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;

use ftc_chain::middlebox::Direction;
use ftc_chain::middleboxes::packet::{parse, Parsed};
use ftc_chain::wire::{NshFrame, NshRepr, WireError};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::{Frame, Packet};

/// Context flag: the customer packet travels inbound (from the outside port).
pub const FLAG_INBOUND: u16 = 0x0002;

/// Where a frame is on the chain: the chain's id (NSH service path), the hop, the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    pub chain: u32,
    /// Hop count from the forwarder (NSH service index = 255 − hop).
    pub hop: u8,
    /// The chain configuration's version; frames of another epoch are dropped (fencing).
    pub epoch: u32,
}

impl Path {
    /// Whether a received frame belongs to chain `chain` (its 24-bit service path id) in
    /// `epoch`: transports drop the others (another chain's, or stale ones a recovery fenced).
    pub fn is_of(&self, chain: u32, epoch: u32) -> bool {
        self.epoch == epoch && self.chain == chain & 0x00ff_ffff
    }
}

/// A frame read off the wire: the packet (without a handle) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub path: Path,
    pub frame: Frame<()>,
}

/// Append the bytes of `frame` to `out` (cleared first).
pub fn encode<P>(frame: &Frame<P>, path: Path, out: &mut Vec<u8>) -> Result<(), WireError> {
    let trailer_len = u16::try_from(frame.msg.len()).map_err(|_| WireError::NoRoom)?;
    let inner: &[u8] = frame.packet.as_ref().map_or(&[], |p| &p.bytes);
    let inbound = frame
        .packet
        .as_ref()
        .is_some_and(|p| p.dir == Direction::Inbound);
    let repr = NshRepr {
        dst_mac: [0x02, 0, 0, 0, 0, path.hop.wrapping_add(1)],
        src_mac: [0x02, 0, 0, 0, 0, path.hop],
        propagating: frame.packet.is_none(),
        ttl: 63,
        spi: path.chain & 0x00ff_ffff,
        si: 255 - path.hop,
        epoch: path.epoch,
        flags: frame.flags | if inbound { FLAG_INBOUND } else { 0 },
        trailer_len,
    };
    out.clear();
    out.resize(repr.frame_len(inner.len()), 0);
    repr.emit(&mut NshFrame::new_unchecked(&mut out[..]));
    out[NshRepr::HEADER_LEN..][..inner.len()].copy_from_slice(inner);
    let at = out.len() - frame.msg.len();
    out[at..].copy_from_slice(&frame.msg);
    Ok(())
}

/// Read a frame from bytes that came off the wire, into buffers of its own
/// ([`decode_with`] with no spare buffer).
pub fn decode(bytes: &[u8]) -> Result<Received, WireError> {
    decode_with(bytes, &mut Vec::new())
}

/// `bytes` in a buffer taken from `spare` (a buffer of a frame that left), a new one only when
/// it has none.
pub fn copy_into_spare(bytes: &[u8], spare: &mut Vec<Vec<u8>>) -> Vec<u8> {
    let mut buf = spare.pop().unwrap_or_default();
    buf.clear();
    buf.extend_from_slice(bytes);
    buf
}

/// Read a frame from bytes that came off the wire. The NSH part is checked here; the message
/// is checked by the server that handles it. The customer frame and the message are copied
/// into buffers taken from `spare` (those of frames that left: a driver keeps them there), a
/// new one only when it has none, so that a steady flow of frames allocates none (an empty
/// message takes none).
pub fn decode_with(bytes: &[u8], spare: &mut Vec<Vec<u8>>) -> Result<Received, WireError> {
    let nsh = NshFrame::new_checked(bytes)?;
    let repr = NshRepr::parse(&nsh)?;
    let path = Path {
        chain: repr.spi,
        hop: 255 - repr.si,
        epoch: repr.epoch,
    };
    let mut copy = |part: &[u8]| {
        if part.is_empty() {
            return Vec::new();
        }
        copy_into_spare(part, spare)
    };
    let packet = (!repr.propagating).then(|| {
        let bytes = copy(nsh.inner());
        let dir = if repr.flags & FLAG_INBOUND != 0 {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        Packet {
            handle: (),
            flow: flow_of(&bytes),
            dir,
            bytes,
        }
    });
    let frame = Frame {
        packet,
        flags: repr.flags & !FLAG_INBOUND,
        msg: copy(nsh.trailer()),
    };
    Ok(Received { path, frame })
}

/// A customer frame's flow: a hash of its 5-tuple (0 for frames that are not IPv4). The same
/// connection gives the same flow at a server, since every middlebox rewrites a connection's
/// packets alike.
///
/// The hash is keyed with a secret (`flow_seed`): flows pick worker lanes and index the hold
/// queue's and the buffer's flow maps, and whoever sends the chain its traffic picks the
/// 5-tuples, so with a fixed hash they could aim many flows at one lane or one bucket. The
/// secret is drawn once per process, or set before first use with [`share_flow_seed`]: the
/// servers of a chain (`ftc node`) derive it from the deployment's secret, so that a flow has
/// the same lane at each of them, and its frames cross from lane to lane of the same index
/// (each lane sends and reads on its own queues of the links) with no handoff. (Seeded XXH3 is
/// no cryptographic PRF; it resists flooding as well as hashbrown's default hasher.)
pub fn flow_of(frame: &[u8]) -> u64 {
    match parse(frame) {
        Parsed::Ipv4(p) => xxh3_64_with_seed(&p.flow().to_bytes(), flow_seed()),
        Parsed::NotIpv4 | Parsed::Malformed => 0,
    }
}

static SEED: OnceLock<u64> = OnceLock::new();

/// This process's key for [`flow_of`]: the one shared, or drawn from the OS's randomness on
/// first use.
fn flow_seed() -> u64 {
    *SEED.get_or_init(|| RandomState::new().hash_one(0u64))
}

/// Key [`flow_of`] with `seed` (a secret the servers of a chain share), before its first use;
/// whether it took (not if a flow was hashed or a seed shared before).
pub fn share_flow_seed(seed: u64) -> bool {
    SEED.set(seed).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::empty_message;

    fn tcp(src: [u8; 4], sport: u16) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, [198, 51, 100, 10], 64)
            .tcp(sport, 80, 1, 1000);
        let mut out = Vec::new();
        b.write(&mut out, b"payload").unwrap();
        out
    }

    #[test]
    fn frames_round_trip_through_bytes() {
        let path = Path {
            chain: 7,
            hop: 2,
            epoch: 9,
        };
        let mut buf = Vec::new();
        for dir in [Direction::Outbound, Direction::Inbound] {
            let bytes = tcp([10, 0, 0, 1], 4000);
            let packet = Packet {
                handle: 42u64,
                flow: 1,
                dir,
                bytes: bytes.clone(),
            };
            let frame = Frame {
                packet: Some(packet),
                flags: 0,
                msg: empty_message(),
            };
            encode(&frame, path, &mut buf).unwrap();
            let got = decode(&buf).unwrap();
            assert_eq!(got.path, path);
            let p = got.frame.packet.unwrap();
            assert_eq!((p.dir, &p.bytes), (dir, &bytes));
            assert_eq!(p.flow, flow_of(&bytes));
            assert_eq!(got.frame.msg, empty_message());
            assert_eq!(got.frame.flags, 0);
        }
        // A propagating retransmission request: no packet, the flag kept.
        let frame: Frame<u64> = Frame {
            packet: None,
            flags: ftc_replica::FLAG_RETRANSMIT_REQUEST,
            msg: empty_message(),
        };
        encode(&frame, path, &mut buf).unwrap();
        let got = decode(&buf).unwrap();
        assert_eq!(
            got.frame,
            Frame {
                packet: None,
                flags: ftc_replica::FLAG_RETRANSMIT_REQUEST,
                msg: empty_message()
            }
        );
    }

    /// The shortest customer frame the forwarder takes, with nothing to carry, makes a data
    /// frame of the 60 bytes a physical link pads shorter frames to: padding never lands where
    /// the receiver reads the trailer from (the frame's end).
    #[test]
    fn the_shortest_data_frame_is_not_padded_into_its_trailer() {
        let path = Path {
            chain: 7,
            hop: 0,
            epoch: 1,
        };
        let inner = tcp([10, 0, 0, 1], 4000)[..ftc_forwarder::MIN_CUSTOMER_FRAME].to_vec();
        let frame = Frame {
            packet: Some(Packet {
                handle: 0u64,
                flow: 0,
                dir: Direction::Outbound,
                bytes: inner.clone(),
            }),
            flags: 0,
            msg: empty_message(),
        };
        let mut buf = Vec::new();
        encode(&frame, path, &mut buf).unwrap();
        assert_eq!(buf.len(), 60);
        let got = decode(&buf).unwrap().frame;
        assert_eq!(
            (got.packet.unwrap().bytes, got.msg),
            (inner, empty_message())
        );
    }

    /// Decoding into spare buffers takes them, as they are, for the customer frame and the
    /// message (no new buffer), and gives the frame [`decode`] gives.
    #[test]
    fn frames_decode_into_spare_buffers() {
        let path = Path {
            chain: 7,
            hop: 1,
            epoch: 2,
        };
        let frame = Frame {
            packet: Some(Packet {
                handle: 0u64,
                flow: 0,
                dir: Direction::Inbound,
                bytes: tcp([10, 0, 0, 1], 4000),
            }),
            flags: 0,
            msg: vec![7; 300],
        };
        let mut bytes = Vec::new();
        encode(&frame, path, &mut bytes).unwrap();
        let mut spare = vec![vec![1; 4096], vec![2; 4096]];
        let at: Vec<*const u8> = spare.iter().map(|b| b.as_ptr()).collect();
        let got = decode_with(&bytes, &mut spare).unwrap();
        assert!(spare.is_empty());
        assert_eq!(got, decode(&bytes).unwrap());
        let packet = got.frame.packet.as_ref().unwrap();
        assert_eq!(
            [packet.bytes.as_ptr(), got.frame.msg.as_ptr()],
            [at[1], at[0]]
        );
        assert_eq!(packet.bytes.capacity(), 4096);
        // An empty message takes no buffer.
        let propagating = Frame::<()> {
            packet: None,
            flags: 0,
            msg: Vec::new(),
        };
        encode(&propagating, path, &mut bytes).unwrap();
        let mut spare = vec![vec![0; 64]];
        assert_eq!(decode_with(&bytes, &mut spare).unwrap().frame, propagating);
        assert_eq!(spare.len(), 1);
    }

    #[test]
    fn flows_follow_the_five_tuple_and_garbage_is_refused() {
        assert_eq!(
            flow_of(&tcp([10, 0, 0, 1], 4000)),
            flow_of(&tcp([10, 0, 0, 1], 4000))
        );
        assert_ne!(
            flow_of(&tcp([10, 0, 0, 1], 4000)),
            flow_of(&tcp([10, 0, 0, 1], 4001))
        );
        assert_eq!(flow_of(&[0; 10]), 0);
        // Keyed: not the fixed hash anyone can compute from the 5-tuple.
        let frame = tcp([10, 0, 0, 1], 4000);
        let Parsed::Ipv4(p) = parse(&frame) else {
            panic!("an IPv4 frame")
        };
        let five_tuple = p.flow().to_bytes();
        assert_ne!(flow_of(&frame), ftc_stm::key_hash(&five_tuple));
        assert_ne!(flow_of(&frame), xxh3_64_with_seed(&five_tuple, 0));
        for junk in [&[][..], &[0u8; 20], &tcp([10, 0, 0, 1], 1)] {
            assert!(
                decode(junk).is_err(),
                "a customer frame is not an NSH frame"
            );
        }
    }
}
