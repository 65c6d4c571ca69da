//! One chain server (`ftc_node::Server`) fed frames from its peers as bytes, and at server 0
//! customer packets too: whatever the messages say (a middlebox or partition the chain lacks,
//! logs out of order, sizes at the limits, any context flags), the server neither panics nor
//! stops (docs/protocol.md: a frame it cannot use is dropped and counted; it never stops a
//! server), its outputs stay bounded, and so does what it keeps: the frames it holds
//! (`ServerConfig::hold_limit`), the packets its buffer holds
//! (`BufferConfig::max_held_packets`) and the logs it retains as the head of its group
//! (`ServerConfig::retain_limit`).
//!
//! The first byte sets the run up. Bits 0–1: the server's position (modulo the ring's 3
//! servers). Bit 2: small bounds, from the next two bytes (little-endian; 3 bits each, 1 … 8):
//! bits 0–2 `max_held_frames`, 3–5 `hold_limit`, 6–8 `retain_limit`, 9–11 the buffer's
//! `max_held_packets`; without it the defaults, which no input reaches. Bit 3: the chain is
//! monitor → firewall → simple-nat with f = 2 instead of Ch-Rec with f = 1 (server 0 then heads
//! a stateful middlebox, whose logs it retains, and is the middle member of m2's group, whose
//! logs it retains as they pass). Bit 4: at server 0, a frame whose sender byte has bit 6 set is
//! a customer packet instead (`Server::handle_ingress`; its message bytes are skipped). The
//! first byte of the seeds in `seeds/server` (0, 1, 2) keeps the defaults and Ch-Rec.
#![no_main]

use ftc_chain::middlebox::Direction;
use ftc_chain::middleboxes;
use ftc_chain::ring::{MbIndex, ServerId};
use ftc_chain::spec::ChainSpec;
use ftc_node::server::port_of;
use ftc_node::{Frame, Packet, Server, ServerConfig};
use ftc_stm::Store;
use libfuzzer_sys::fuzz_target;

/// Ch-Rec (firewall → monitor → simple-nat, f = 1) with 8 partitions, so that fuzzed messages
/// reach partitions past the end as well as inside.
const SPEC: &str = "[chain]\nname = \"fuzz\"\nf = 1\npartitions = 8\n\n\
    [[middlebox]]\nkind = \"firewall\"\ndefault = \"allow\"\n\n\
    [[middlebox]]\nkind = \"monitor\"\n\n\
    [[middlebox]]\nkind = \"simple-nat\"\npublic_ip = \"198.51.100.1\"\n";

/// The same middleboxes with the monitor first and f = 2: every server is a group's middle
/// member (it retains the logs that pass), and server 0, where customer packets enter, writes
/// state of its own.
const SPEC_F2: &str = "[chain]\nname = \"fuzz-f2\"\nf = 2\npartitions = 8\n\n\
    [[middlebox]]\nkind = \"monitor\"\n\n\
    [[middlebox]]\nkind = \"firewall\"\ndefault = \"allow\"\n\n\
    [[middlebox]]\nkind = \"simple-nat\"\npublic_ip = \"198.51.100.1\"\n";

/// Outputs taken after each frame at most: a server that kept producing would be a bug.
const OUTPUTS: usize = 10_000;

/// First byte: small bounds follow.
const BOUNDED: u8 = 0x04;
/// First byte: the f = 2 chain.
const F2: u8 = 0x08;
/// First byte: customer packets at server 0.
const INGRESS: u8 = 0x10;
/// Sender byte, with [`INGRESS`]: a customer packet.
const CUSTOMER: u8 = 0x40;

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let mut config = ServerConfig::default();
    let bounded = first & BOUNDED != 0;
    if bounded {
        let [b0, b1, tail @ ..] = rest else {
            return;
        };
        rest = tail;
        let bits = u16::from_le_bytes([*b0, *b1]);
        let small = |shift: u32| usize::from((bits >> shift) & 7) + 1;
        config.max_held_frames = small(0);
        config.hold_limit = small(3);
        config.retain_limit = small(6);
        config.buffer.max_held_packets = small(9);
    }
    let spec = if first & F2 != 0 { SPEC_F2 } else { SPEC };
    let spec = ChainSpec::from_toml_str(spec, "fuzz").expect("the spec is valid");
    let ring = spec.ring();
    let me = ServerId(u16::from(first & 3) % ring.servers() as u16);
    let ingress = first & INGRESS != 0 && me == ring.forwarder();
    let mbs: Vec<_> = spec.middlebox.iter().map(middleboxes::build).collect();
    let store = Store::new(spec.chain.partitions, 1).expect("a valid store");
    let mb = MbIndex(me.0 as u8);
    let head = Some((
        mb,
        mbs[usize::from(me.0)].as_ref(),
        store.worker(0).unwrap(),
    ));
    // What the server may keep (`Server::hold_limit`: frames held, and refused packets besides).
    let hold_limit = config
        .hold_limit
        .max(config.max_held_frames.saturating_mul(4));
    let retain_limit = config.retain_limit;
    let max_held_packets = config.buffer.max_held_packets;
    // Whether every group this server replicates has it for its tail: tails keep no logs (they
    // announce commit vectors), so all it retains is its own group's.
    let retains_own_only = ring.replicated_by(me).all(|g| ring.tail(g) == me);
    let mut s: Server<'_, u64> =
        Server::new(ring, me, spec.chain.partitions, head, config).expect("a server");
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
        let dir = if from & 0x80 == 0 {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        if ingress && from & CUSTOMER != 0 {
            let packet = Packet {
                handle: now,
                flow: u64::from(*from),
                dir,
                bytes: packet.to_vec(),
            };
            // A packet the forwarder rejects (malformed, too long) is the driver's to drop.
            let _ = s.handle_ingress(now, packet, port_of(dir));
        } else {
            let frame = Frame {
                packet: (plen > 0).then(|| Packet {
                    handle: now,
                    flow: u64::from(*from),
                    dir,
                    bytes: packet.to_vec(),
                }),
                flags: u16::from_le_bytes([*f0, *f1]),
                msg: msg.to_vec(),
            };
            let from = ServerId(u16::from(*from) % ring.servers() as u16);
            s.handle_frame(now, from, frame);
        }
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
        assert!(
            s.held() <= hold_limit,
            "{} frames held, past the limit of {hold_limit}",
            s.held()
        );
        if let Some(b) = s.buffer() {
            let held = b.stats().held_packets;
            assert!(
                held <= max_held_packets,
                "the buffer holds {held} packets, past its {max_held_packets}"
            );
        }
        // The retained logs. A transaction runs only while the server retains fewer than
        // `retain_limit` logs in all, and adds at most its own log: its own group's stay within
        // the limit. Logs it retains as a middle member of another group are kept whatever the
        // limit (they only pass through: what frees retained logs is never held back), so they
        // are bounded by nothing here (in a chain, by the predecessors' own limits; forged
        // frames bring any number), and the total is only bounded where there are none.
        if let Some(r) = s.replica() {
            let retained = r.retained().0;
            if retains_own_only {
                assert!(
                    retained <= retain_limit,
                    "{retained} logs retained, past the limit of {retain_limit}"
                );
            } else if bounded {
                // Copies the logs: only where the limit keeps them few.
                let own = r.retained_logs(mb).map_or(0, |logs| logs.len());
                assert!(
                    own <= retain_limit,
                    "{own} logs of its own group retained, past the limit of {retain_limit}"
                );
            }
        }
    }
});
