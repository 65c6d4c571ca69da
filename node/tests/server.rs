//! One server as a state machine: bad bytes from the network are dropped and counted, and a
//! frame goes on to the next server with the middlebox's log on it.

use ftc_chain::middlebox::Direction;
use ftc_chain::middleboxes;
use ftc_chain::ring::{Ring, ServerId};
use ftc_chain::spec::ChainSpec;
use ftc_chain::wire::{MessageRepr, MessageView};
use ftc_node::server::{empty_message, port_of};
use ftc_node::{Frame, Output, Packet, Server, ServerConfig};
use ftc_stm::Store;

fn ch_rec() -> ChainSpec {
    ChainSpec::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/ch-rec.toml"))
        .unwrap()
}

#[test]
fn garbage_from_the_network_is_dropped_and_counted() {
    let spec = ch_rec();
    let ring = spec.ring();
    let mb = middleboxes::build(&spec.middlebox[1]);
    let store = Store::new(64, 1).unwrap();
    let head = Some((
        ftc_chain::ring::MbIndex(1),
        mb.as_ref(),
        store.worker(0).unwrap(),
    ));
    let mut s: Server<'_, u64> =
        Server::new(ring, ServerId(1), 64, head, ServerConfig::default()).unwrap();
    for junk in [vec![], vec![9; 3], vec![1, 0, 0, 5, 0, 0]] {
        s.handle_frame(
            0,
            ServerId(0),
            Frame {
                packet: None,
                flags: 0,
                msg: junk,
            },
        );
    }
    assert_eq!(s.stats().bad_frames, 3);
    assert!(s.error().is_none());
    assert_eq!(s.poll_output(), None);
    // Still works: an empty propagating frame goes on.
    s.handle_frame(
        1,
        ServerId(0),
        Frame {
            packet: None,
            flags: 0,
            msg: empty_message(),
        },
    );
    assert!(matches!(
        s.poll_output(),
        Some(Output::Send {
            to: ServerId(2),
            ..
        })
    ));
}

#[test]
fn the_first_server_admits_a_packet_and_sends_it_on_with_its_log() {
    let spec = ch_rec();
    let ring: Ring = spec.ring();
    let mbs: Vec<_> = spec.middlebox.iter().map(middleboxes::build).collect();
    let store = Store::new(64, 1).unwrap();
    let head = Some((
        ftc_chain::ring::MbIndex(0),
        mbs[0].as_ref(),
        store.worker(0).unwrap(),
    ));
    let config = ServerConfig {
        observe: true,
        ..ServerConfig::default()
    };
    let mut s: Server<'_, u64> = Server::new(ring, ServerId(0), 64, head, config).unwrap();
    let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [198, 51, 100, 10], 64)
        .udp(5353, 53);
    let mut bytes = Vec::new();
    builder.write(&mut bytes, b"query").unwrap();
    let packet = Packet {
        handle: 7,
        flow: 1,
        dir: Direction::Outbound,
        bytes,
    };
    s.handle_ingress(0, packet, port_of(Direction::Outbound))
        .unwrap();
    match s.poll_output() {
        Some(Output::Send { to, frame }) => {
            assert_eq!(to, ServerId(1));
            assert_eq!(frame.packet.as_ref().map(|p| p.handle), Some(7));
            // The firewall is stateless: its transaction is a no-op and carries no log.
            let msg = MessageRepr::parse(&MessageView::new_checked(&frame.msg).unwrap());
            assert!(msg.logs.is_empty());
        }
        other => panic!("expected a frame to server 1, got {other:?}"),
    }
}
