//! Frames between servers as bytes (the UDP and AF_XDP transports): decoding arbitrary bytes
//! never panics, into spare buffers (holding old bytes) as into new ones, and what decodes
//! encodes to bytes that decode to the same frame.
#![no_main]

use ftc_chain::middlebox::Direction;
use ftc_node::nsh::{decode, decode_with, encode, Path};
use ftc_node::{Frame, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);
    // Random bytes almost never pass the NSH header's fixed fields (a run of 16M inputs did not
    // get past them): also encode a valid frame built from the input, change one of its bytes
    // as the input says, and decode that.
    if let [kind, flags, hop, e0, at0, at1, xor, split, rest @ ..] = data {
        let split = usize::from(*split).min(rest.len());
        let (inner, msg) = rest.split_at(split);
        let frame = Frame {
            packet: (kind & 1 == 0).then(|| Packet {
                handle: (),
                flow: 0,
                dir: if kind & 2 == 0 {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                },
                bytes: inner.to_vec(),
            }),
            flags: u16::from(*flags) << 2,
            msg: msg.to_vec(),
        };
        let path = Path {
            chain: u32::from(*kind) << 8 | 7,
            hop: *hop,
            epoch: u32::from(*e0),
        };
        let mut bytes = Vec::new();
        encode(&frame, path, &mut bytes).expect("a trailer under 64 KiB encodes");
        let got = decode(&bytes).expect("an encoded frame decodes");
        assert_eq!(got.path, path);
        assert_eq!((got.frame.flags, &got.frame.msg), (frame.flags, &frame.msg));
        let what = |p: Option<Packet<()>>| p.map(|p| (p.dir, p.bytes));
        assert_eq!(what(got.frame.packet), what(frame.packet));
        let at = usize::from(u16::from_le_bytes([*at0, *at1])) % bytes.len();
        bytes[at] ^= xor;
        check(&bytes);
    }
});

/// Decoding never panics, and spare buffers change nothing of what it gives; a frame that
/// decodes encodes to bytes that decode to it again.
fn check(data: &[u8]) {
    let mut spare = vec![vec![0xee; 3], data.to_vec()];
    assert_eq!(decode_with(data, &mut spare), decode(data));
    if let Ok(got) = decode(data) {
        let mut again = Vec::new();
        encode(&got.frame, got.path, &mut again).expect("a decoded frame encodes");
        assert_eq!(decode(&again).expect("an encoded frame decodes"), got);
    }
}
