//! One chain server (`ftc_node::Server`) fed frames from its peers as bytes: whatever the
//! messages say (a middlebox or partition the chain lacks, logs out of order, sizes at the limits,
//! any context flags), the server neither panics nor stops (docs/protocol.md: a frame it cannot
//! use is dropped and counted; it never stops a server), and its outputs stay bounded.
#![no_main]

use ftc_chain::middlebox::Direction;
use ftc_chain::middleboxes;
use ftc_chain::ring::{MbIndex, ServerId};
use ftc_chain::spec::ChainSpec;
use ftc_node::{Frame, Packet, Server, ServerConfig};
use ftc_stm::Store;
use libfuzzer_sys::fuzz_target;

/// Ch-Rec (firewall → monitor → simple-nat, f = 1) with 8 partitions, so that fuzzed messages
/// reach partitions past the end as well as inside.
const SPEC: &str = "[chain]\nname = \"fuzz\"\nf = 1\npartitions = 8\n\n\
    [[middlebox]]\nkind = \"firewall\"\ndefault = \"allow\"\n\n\
    [[middlebox]]\nkind = \"monitor\"\n\n\
    [[middlebox]]\nkind = \"simple-nat\"\npublic_ip = \"198.51.100.1\"\n";

/// Outputs taken after each frame at most: a server that kept producing would be a bug.
const OUTPUTS: usize = 10_000;

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let spec = ChainSpec::from_toml_str(SPEC, "fuzz").expect("the spec is valid");
    let ring = spec.ring();
    let me = ServerId(u16::from(first) % ring.servers() as u16);
    let mbs: Vec<_> = spec.middlebox.iter().map(middleboxes::build).collect();
    let store = Store::new(spec.chain.partitions, 1).expect("a valid store");
    let mb = MbIndex(me.0 as u8);
    let head = Some((
        mb,
        mbs[usize::from(me.0)].as_ref(),
        store.worker(0).unwrap(),
    ));
    let mut s: Server<'_, u64> = Server::new(
        ring,
        me,
        spec.chain.partitions,
        head,
        ServerConfig::default(),
    )
    .expect("a server");
    let mut now = 0u64;
    // Each frame: from (1 byte), flags (2), a packet's length (1; 0: none), the message's length
    // (2), the packet's bytes, the message's bytes.
    while let [from, f0, f1, plen, m0, m1, tail @ ..] = rest {
        let plen = usize::from(*plen);
        let mlen = usize::from(u16::from_le_bytes([*m0, *m1]));
        let Some((packet, tail)) = tail.split_at_checked(plen) else {
            return;
        };
        let mlen = mlen.min(tail.len());
        let (msg, tail) = tail.split_at(mlen);
        rest = tail;
        now += 10_000;
        let frame = Frame {
            packet: (plen > 0).then(|| Packet {
                handle: now,
                flow: u64::from(*from),
                dir: if from & 0x80 == 0 {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                },
                bytes: packet.to_vec(),
            }),
            flags: u16::from_le_bytes([*f0, *f1]),
            msg: msg.to_vec(),
        };
        let from = ServerId(u16::from(*from) % ring.servers() as u16);
        s.handle_frame(now, from, frame);
        s.end_batch(now);
        if s.poll_timeout().is_some_and(|at| at <= now) {
            s.handle_timeout(now);
        }
        let mut taken = 0;
        while s.poll_output().is_some() {
            taken += 1;
            assert!(taken < OUTPUTS, "the server does not run dry of outputs");
        }
        if let Some(e) = s.error() {
            panic!("a peer's frame stopped the server: {e}");
        }
    }
});
