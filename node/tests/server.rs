//! One server as a state machine: bad bytes from the network are dropped and counted, a frame
//! goes on to the next server with the middlebox's log on it, and held frames are offered again
//! when what they wait for arrived, in their flow's order.

use ftc_chain::middlebox::Direction;
use ftc_chain::middleboxes;
use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_chain::spec::ChainSpec;
use ftc_chain::wire::{CvRepr, LogRepr, MessageRepr, MessageView, MessageWriter};
use ftc_node::server::{empty_message, port_of};
use ftc_node::{Frame, Loss, Mode, Output, Packet, Server, ServerConfig};
use ftc_stm::{partition_of, DepEntry, LogKind, Partition, Seq, Store, Worker};

fn ch_rec() -> ChainSpec {
    ChainSpec::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/ch-rec.toml"))
        .unwrap()
}

/// Server 0 of Ch-Rec, heading m0 (the first of `mbs`, Ch-Rec's middleboxes) over `store`.
fn ch_rec_server_0<'a>(
    mbs: &'a [Box<dyn ftc_chain::middlebox::Middlebox>],
    store: &'a Store,
    config: ServerConfig,
) -> Server<'a, u64> {
    let head = Some((MbIndex(0), mbs[0].as_ref(), store.worker(0).unwrap()));
    Server::new(ch_rec().ring(), ServerId(0), 64, head, config).unwrap()
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
    let message = |log: LogRepr| {
        let m = MessageRepr {
            flags: 0,
            logs: vec![log],
            cvs: vec![],
        };
        m.to_vec().unwrap()
    };
    // Well-formed, but naming a middlebox the chain lacks.
    let foreign = message(LogRepr {
        middlebox: 7,
        kind: LogKind::Noop,
        deps: vec![],
        writes: vec![],
    });
    // Well-formed, but longer than any message of the chain (8 KiB): one log of G(0), which
    // server 1 replicates, with a write of 8300 bytes.
    let key = (0u32..)
        .map(|i| i.to_le_bytes().to_vec())
        .find(|k| partition_of(k, 64) == Partition(0))
        .unwrap();
    let huge = message(LogRepr {
        middlebox: 0,
        kind: LogKind::Update,
        deps: vec![DepEntry {
            partition: Partition(0),
            seq: Seq(0),
        }],
        writes: vec![(key, Some(vec![0; 8300]))],
    });
    for junk in [vec![], vec![9; 3], vec![1, 0, 0, 5, 0, 0], foreign, huge] {
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
    assert_eq!(s.stats().bad_frames, 5);
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

/// Server 0 takes the buffer's return frames (the ring-closing link) into its forwarder, which
/// carries what they hold on with customer frames: one naming a middlebox the chain lacks is
/// dropped and counted there, not carried on to a customer frame that the replica would refuse.
#[test]
fn a_return_frame_naming_a_foreign_middlebox_is_dropped_and_counted() {
    let mbs: Vec<_> = ch_rec().middlebox.iter().map(middleboxes::build).collect();
    let store = Store::new(64, 1).unwrap();
    let mut s = ch_rec_server_0(&mbs, &store, ServerConfig::default());
    let cv = |middlebox| CvRepr {
        middlebox,
        entries: vec![DepEntry {
            partition: Partition(0),
            seq: Seq(1),
        }],
    };
    for (middlebox, bad) in [(2, 0), (9, 1)] {
        let msg = MessageRepr {
            flags: 0,
            logs: vec![],
            cvs: vec![cv(middlebox)],
        }
        .to_vec()
        .unwrap();
        s.handle_frame(
            0,
            ServerId(2),
            Frame {
                packet: None,
                flags: 0,
                msg,
            },
        );
        assert_eq!(s.stats().bad_frames, bad, "m{middlebox}");
    }
    assert!(s.error().is_none());
}

#[test]
fn the_first_server_admits_a_packet_and_sends_it_on_with_its_log() {
    let mbs: Vec<_> = ch_rec().middlebox.iter().map(middleboxes::build).collect();
    let store = Store::new(64, 1).unwrap();
    let config = ServerConfig {
        observe: true,
        ..ServerConfig::default()
    };
    let mut s = ch_rec_server_0(&mbs, &store, config);
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
    // The firewall is stateless: its transaction is a no-op, said all the same (observed).
    let committed = s.poll_output();
    assert!(
        matches!(
            committed,
            Some(Output::Committed { handle: 7, middlebox: 0, kind: LogKind::Noop, ref deps })
                if deps.is_empty()
        ),
        "{committed:?}"
    );
    match s.poll_output() {
        Some(Output::Send { to, frame }) => {
            assert_eq!(to, ServerId(1));
            assert_eq!(frame.packet.as_ref().map(|p| p.handle), Some(7));
            // The no-op carries no log.
            let msg = MessageRepr::parse(&MessageView::new_checked(&frame.msg).unwrap());
            assert!(msg.logs.is_empty());
        }
        other => panic!("expected a frame to server 1, got {other:?}"),
    }
}

/// A fenced server loses what reaches it until it resumes: every such packet is said
/// ([`Output::Lost`]) and counted, so that a node's summary accounts for them.
#[test]
fn packets_a_fenced_server_loses_are_counted() {
    let mbs: Vec<_> = ch_rec().middlebox.iter().map(middleboxes::build).collect();
    let store = Store::new(64, 1).unwrap();
    let mut s = ch_rec_server_0(&mbs, &store, ServerConfig::default());
    s.fence();
    s.handle_ingress(0, udp_packet(1, 1), port_of(Direction::Outbound))
        .unwrap();
    s.handle_frame(0, ServerId(2), frame(2, 1, empty_message()));
    let lost: Vec<_> = std::iter::from_fn(|| s.poll_output())
        .filter_map(|o| match o {
            Output::Lost {
                handle,
                why: Loss::Fenced,
            } => Some(handle),
            _ => None,
        })
        .collect();
    assert_eq!(lost, [1, 2]);
    assert_eq!(s.stats().lost, 2);
    s.resume(1);
    s.handle_ingress(1, udp_packet(3, 1), port_of(Direction::Outbound))
        .unwrap();
    assert_eq!(s.stats().lost, 2);
}

/// A message carrying m0's log of a transaction of `w` that writes `key`.
fn m0_log(w: &mut Worker<'_>, key: &[u8]) -> Vec<u8> {
    let rec = w.run(|tx| tx.write(key, b"v")).1;
    let mut msg = vec![0; 512];
    let mut writer = MessageWriter::new(&mut msg, 0).unwrap();
    writer.push_log(0, &rec).unwrap();
    let len = writer.finish();
    msg.truncate(len);
    msg
}

/// A key of none of `taken` among 64 partitions, and its partition.
fn key_outside(taken: &[Partition]) -> (Vec<u8>, Partition) {
    (0u8..)
        .map(|i| vec![b'k', i])
        .map(|k| (partition_of(&k, 64), k))
        .find(|(p, _)| !taken.contains(p))
        .map(|(p, k)| (k, p))
        .unwrap()
}

/// A frame of packet `handle` of `flow` with `msg`.
fn frame(handle: u64, flow: u64, msg: Vec<u8>) -> Frame<u64> {
    Frame {
        packet: Some(Packet {
            handle,
            flow,
            dir: Direction::Outbound,
            bytes: vec![0; 64],
        }),
        flags: 0,
        msg,
    }
}

/// The packets that reached the buffer, in order, since last asked.
fn at_buffer(s: &mut Server<'_, u64>) -> Vec<u64> {
    std::iter::from_fn(|| s.poll_output())
        .filter_map(|o| match o {
            Output::AtBuffer { handle } => Some(handle),
            _ => None,
        })
        .collect()
}

/// Server 1 of a chain of one middlebox (f = 1: m0's tail and the buffer): a frame held for a
/// log of partition p is offered again only once p moved (an apply in another partition leaves
/// it alone), and a later frame of its flow, ready itself, waits behind it.
#[test]
fn a_held_frame_goes_when_its_partition_moves_and_its_flow_waits_behind_it() {
    let ring = Ring::new(1, 1).unwrap();
    let head = Store::new(64, 1).unwrap();
    let mut w = head.worker(0).unwrap();
    let (k, p) = key_outside(&[]);
    let (q_key, q) = key_outside(&[p]);
    let (r_key, _) = key_outside(&[p, q]);
    let first = m0_log(&mut w, &k);
    let second = m0_log(&mut w, &k);
    let other = m0_log(&mut w, &q_key);
    let unrelated = m0_log(&mut w, &r_key);
    let config = ServerConfig {
        observe: true,
        ..ServerConfig::default()
    };
    let mut s: Server<'_, u64> = Server::new(ring, ServerId(1), 64, None, config).unwrap();
    // Each frame a batch of its own, from server 0.
    let deliver = |s: &mut Server<'_, u64>, f| {
        s.handle_frame(0, ServerId(0), f);
        s.end_batch(0);
    };

    deliver(&mut s, frame(2, 7, second));
    deliver(&mut s, frame(3, 7, other));
    assert_eq!(
        at_buffer(&mut s),
        [0u64; 0],
        "2 waits for its log, 3 behind it"
    );
    assert_eq!((s.held(), s.stats().held), (2, 1));

    // A log applied in another partition frees nothing: 2 is not offered again.
    deliver(&mut s, frame(4, 8, unrelated));
    assert_eq!(at_buffer(&mut s), [4]);
    assert_eq!(
        (s.held(), s.stats().held),
        (2, 1),
        "2 was not offered again"
    );

    // The missing log moves p: 2 goes, then 3 of its flow.
    deliver(&mut s, frame(1, 9, first));
    assert_eq!(at_buffer(&mut s), [1, 2, 3]);
    assert_eq!(s.held(), 0);
}

/// Frames that would wait beyond the hold limit (here their logs follow one that never comes,
/// as forged frames' would, or a quiet predecessor's) are dropped, their packets lost and
/// counted, whether they wait for a log or behind their flow: the server keeps no more than the
/// limit whatever arrives. Frames without a packet, which bring the logs that held frames wait
/// for (answers to retransmission requests), may fill a quarter of the limit more. Those it
/// kept go once the missing log comes.
#[test]
fn frames_past_the_hold_limit_are_dropped_and_counted() {
    let ring = Ring::new(1, 1).unwrap();
    let head = Store::new(64, 1).unwrap();
    let mut w = head.worker(0).unwrap();
    let (k, _) = key_outside(&[]);
    let missing = m0_log(&mut w, &k);
    let later: Vec<Vec<u8>> = (0..6).map(|_| m0_log(&mut w, &k)).collect();
    let answers = [later[4].clone(), later[5].clone()];
    let config = ServerConfig {
        observe: true,
        max_held_frames: 1,
        hold_limit: 3,
        ..ServerConfig::default()
    };
    let mut s: Server<'_, u64> = Server::new(ring, ServerId(1), 64, None, config).unwrap();
    let mut lost = Vec::new();
    let deliver = |s: &mut Server<'_, u64>, f| {
        s.handle_frame(0, ServerId(0), f);
        s.end_batch(0);
        std::iter::from_fn(|| s.poll_output())
            .filter_map(|o| match o {
                Output::Lost {
                    handle,
                    why: Loss::HoldFull,
                } => Some(handle),
                Output::AtBuffer { handle } => Some(1000 + handle),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // The limit is 4 × max_held_frames where that is more than hold_limit: 4 frames.
    for (i, msg) in later.into_iter().enumerate() {
        lost.extend(deliver(&mut s, frame(2 + i as u64, 10 + i as u64, msg)));
    }
    assert_eq!(s.held(), 4);
    // Behind a held frame of its flow, with the queue full: dropped too.
    let (q_key, _) = key_outside(&[partition_of(&k, 64)]);
    lost.extend(deliver(&mut s, frame(20, 10, m0_log(&mut w, &q_key))));
    assert_eq!(lost, [6, 7, 20]);
    assert_eq!(
        (s.held(), s.stats().hold_overflow, s.stats().lost),
        (4, 3, 3)
    );
    // Two answers bring the logs of the frames dropped (packets 6 and 7): a quarter of the
    // limit more is one frame. The first waits; the second is dropped, with no packet lost.
    for msg in answers {
        let answer = Frame {
            packet: None,
            flags: 0,
            msg,
        };
        assert_eq!(deliver(&mut s, answer), Vec::<u64>::new());
    }
    assert_eq!(
        (s.held(), s.stats().hold_overflow, s.stats().lost),
        (5, 4, 3)
    );
    // The missing log comes: the frames kept go, in order, and the answer kept is applied.
    let went = deliver(&mut s, frame(1, 9, missing));
    assert_eq!(went, [1001, 1002, 1003, 1004, 1005]);
    assert_eq!(s.held(), 0);
    assert_eq!(s.replica().unwrap().stats().applied, 6);
}

/// An IPv4 UDP packet of `flow` (its source port), as a customer frame.
fn udp_packet(handle: u64, flow: u16) -> Packet<u64> {
    let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [198, 51, 100, 10], 64)
        .udp(flow, 53);
    let mut bytes = Vec::new();
    builder.write(&mut bytes, b"query").unwrap();
    Packet {
        handle,
        flow: u64::from(flow),
        dir: Direction::Outbound,
        bytes,
    }
}

/// The frames without a packet that `s` sends to `to`, since last asked.
fn propagating_to(s: &mut Server<'_, u64>, to: ServerId) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| s.poll_output())
        .filter_map(|o| match o {
            Output::Send { to: t, frame } if t == to && frame.packet.is_none() => Some(frame.msg),
            _ => None,
        })
        .collect()
}

/// A Ch-2 (f = 1) of two middleboxes of one kind (`middlebox`, a TOML table's body): what its
/// servers are made from.
struct Ch2 {
    ring: Ring,
    middleboxes: Vec<Box<dyn ftc_chain::middlebox::Middlebox>>,
    stores: [Store; 2],
}

impl Ch2 {
    fn new(middlebox: &str) -> Self {
        let mb = format!("[[middlebox]]\n{middlebox}\n");
        let spec = ChainSpec::from_toml_str(
            &format!("[chain]\nname = \"ch-2\"\nf = 1\n{mb}{mb}"),
            "test",
        )
        .unwrap();
        Ch2 {
            ring: spec.ring(),
            middleboxes: spec.middlebox.iter().map(middleboxes::build).collect(),
            stores: [Store::new(64, 1).unwrap(), Store::new(64, 1).unwrap()],
        }
    }

    /// Server `i`, heading middlebox `i`.
    fn server(&self, i: u8, config: &ServerConfig) -> Server<'_, u64> {
        let head = Some((
            ftc_chain::ring::MbIndex(i),
            self.middleboxes[usize::from(i)].as_ref(),
            self.stores[usize::from(i)].worker(0).unwrap(),
        ));
        Server::<u64>::new(self.ring, ServerId(u16::from(i)), 64, head, config.clone()).unwrap()
    }
}

/// `packets` through server 0 in one batch: the frames it sends on.
fn through_server_0(
    s0: &mut Server<'_, u64>,
    packets: impl IntoIterator<Item = Packet<u64>>,
) -> Vec<Frame<u64>> {
    for packet in packets {
        s0.handle_ingress(0, packet, port_of(Direction::Outbound))
            .unwrap();
    }
    s0.end_batch(0);
    std::iter::from_fn(|| s0.poll_output())
        .filter_map(|o| match o {
            Output::Send { frame, .. } => Some(frame),
            _ => None,
        })
        .collect()
}

/// `frames` from server 0 at server 1, as one batch at `now`.
fn from_server_0(s1: &mut Server<'_, u64>, frames: Vec<Frame<u64>>, now: u64) {
    for f in frames {
        s1.handle_frame(now, ServerId(0), f);
    }
    s1.end_batch(now);
}

/// What a batch of `packets` packets through a Ch-2 of two `middlebox`es (a TOML table's body;
/// f = 1, a 128-byte
/// trailer budget, 4096-byte frames) sends back into the chain: the return frames from the
/// buffer's server 1, then, once server 0 took them back and went idle, its propagating frames
/// to server 1 and how many logs server 0 applied from them.
fn ch2_round_trip(middlebox: &str, packets: u16) -> (Vec<Vec<u8>>, usize, u64) {
    let ch2 = Ch2::new(middlebox);
    let config = ServerConfig {
        trailer_budget: 128,
        max_trailer: 4096,
        ..ServerConfig::default()
    };
    let (mut s0, mut s1) = (ch2.server(0, &config), ch2.server(1, &config));
    // Through server 0, one packet of each flow, one batch.
    let frames = through_server_0(
        &mut s0,
        (0..packets).map(|i| udp_packet(u64::from(i), 1000 + i)),
    );
    assert_eq!(frames.len(), usize::from(packets));
    // Server 1 heads m1, whose group wraps to server 0: its logs go back from the buffer.
    from_server_0(&mut s1, frames, 1);
    assert!(s1.error().is_none(), "{:?}", s1.error());
    let returns = propagating_to(&mut s1, ServerId(0));
    // Server 0 takes them back; no customer frame comes, so once idle propagating frames carry
    // them (server 0, m1's tail, applies them on the way).
    let applied = s0.replica().unwrap().stats().applied;
    for msg in returns.clone() {
        s0.handle_frame(
            2,
            ServerId(1),
            Frame {
                packet: None,
                flags: 0,
                msg,
            },
        );
    }
    s0.end_batch(2);
    let t = s0.poll_timeout().expect("pending logs set a timer");
    s0.handle_timeout(t);
    assert!(s0.error().is_none(), "{:?}", s0.error());
    let propagated = propagating_to(&mut s0, ServerId(1)).len();
    (
        returns,
        propagated,
        s0.replica().unwrap().stats().applied - applied,
    )
}

/// The buffer's return frame and the forwarder's propagating frame carry no customer packet, so
/// each may fill the customer frame's room too, not just the trailer budget: the Monitor logs of
/// a batch of 20 packets go back in one return frame, and leave server 0 in one propagating
/// frame once idle.
#[test]
fn frames_without_a_customer_packet_fill_a_customer_frames_room() {
    let (returns, propagated, applied) = ch2_round_trip("kind = \"monitor\"", 20);
    assert_eq!(returns.len(), 1, "one return frame for the batch");
    let returned = MessageRepr::parse(&MessageView::new_checked(&returns[0]).unwrap());
    assert_eq!(returned.logs.len(), 20);
    assert!(returns[0].len() > 128);
    assert_eq!(propagated, 1);
    assert_eq!(applied, 20);
}

/// DESIGN §4, a log is never dropped for lack of room: a Gen log of 2 KB is larger than what a
/// frame without a customer packet fills (128 + 1536 bytes here), so it goes back, and on from
/// server 0, in frames of their own up to the frame's whole trailer.
#[test]
fn a_log_larger_than_that_room_goes_in_a_frame_of_its_own() {
    let (returns, propagated, applied) = ch2_round_trip("kind = \"gen\"\nstate_size = 2000", 2);
    // (length, logs) of each return frame: the logs went back, in frames beyond that room (a
    // first frame within it carried the commit vectors that fit).
    let returned: Vec<(usize, usize)> = returns
        .iter()
        .map(|m| {
            (
                m.len(),
                MessageRepr::parse(&MessageView::new_checked(m).unwrap())
                    .logs
                    .len(),
            )
        })
        .collect();
    assert_eq!(returned.iter().map(|(_, logs)| logs).sum::<usize>(), 2);
    assert!(returned
        .iter()
        .all(|&(len, logs)| logs == 0 || len > 128 + 1536));
    assert!(propagated >= 1);
    assert_eq!(applied, 2);
}

/// Back-pressure at the buffer (DESIGN §7: bounded memory, no silent drop): with room for two
/// held packets, the last server keeps the packets its buffer refuses, with their messages, and
/// offers them again once it released some; all leave, in their flow's order.
#[test]
fn packets_the_buffer_refuses_wait_at_its_server_and_leave_in_order() {
    let ch2 = Ch2::new("kind = \"monitor\"");
    let mut config = ServerConfig::default();
    config.buffer.max_held_packets = 2;
    let (mut s0, mut s1) = (ch2.server(0, &config), ch2.server(1, &config));
    let frames = through_server_0(&mut s0, (0..5).map(|handle| udp_packet(handle, 1000)));
    from_server_0(&mut s1, frames, 1);
    // Three refused on arrival (and again on each try while the buffer is full).
    assert!(s1.buffer().unwrap().stats().refused >= 3);
    let (released, lost) = settle(&mut s0, &mut s1, 2, 5);
    assert_eq!((&released[..], &lost[..]), (&[0, 1, 2, 3, 4][..], &[][..]));
    assert!(s1.buffer().unwrap().stats().max_held_packets <= 2);
}

/// Past the limit on the refused packets a server keeps for its buffer (what bounds it where
/// the ingress is another process's, which it cannot hold back), the newest refused is dropped,
/// its packet lost and counted; the kept ones still leave in their flow's order, and the flow's
/// later packets are not refused on the dropped ones' account.
#[test]
fn refused_packets_past_the_limit_are_dropped_and_the_rest_leave_in_order() {
    let ch2 = Ch2::new("kind = \"monitor\"");
    let mut config = ServerConfig {
        max_held_frames: 1,
        hold_limit: 4,
        ..ServerConfig::default()
    };
    config.buffer.max_held_packets = 2;
    let (mut s0, mut s1) = (ch2.server(0, &config), ch2.server(1, &config));
    let frames = through_server_0(&mut s0, (0..8).map(|handle| udp_packet(handle, 1000)));
    from_server_0(&mut s1, frames, 1);
    assert_eq!(s1.stats().refused_overflow, 2);
    let (released, lost) = settle(&mut s0, &mut s1, 2, 6);
    assert_eq!(
        (&released[..], &lost[..]),
        (&[0, 1, 2, 3, 4, 5][..], &[6, 7][..])
    );
    let refused = s1.buffer().unwrap().stats().refused;
    let frames = through_server_0(&mut s0, [udp_packet(8, 1000)]);
    from_server_0(&mut s1, frames, 100_000_000);
    assert_eq!(
        s1.buffer().unwrap().stats().refused,
        refused,
        "8 taken at once"
    );
    let (released, lost) = settle(&mut s0, &mut s1, 100_000_001, 1);
    assert_eq!((&released[..], &lost[..]), (&[8][..], &[][..]));
}

/// `packets` offered to server 0 in one batch: the frames it sends on, and the packets it lost.
fn into_server_0(
    s0: &mut Server<'_, u64>,
    packets: impl IntoIterator<Item = Packet<u64>>,
) -> (Vec<Frame<u64>>, Vec<u64>) {
    for packet in packets {
        s0.handle_ingress(0, packet, port_of(Direction::Outbound))
            .unwrap();
    }
    s0.end_batch(0);
    let (mut frames, mut lost) = (Vec::new(), Vec::new());
    for o in std::iter::from_fn(|| s0.poll_output()) {
        match o {
            Output::Send { frame, .. } => frames.push(frame),
            Output::Lost {
                handle,
                why: Loss::RetainFull,
            } => lost.push(handle),
            _ => {}
        }
    }
    (frames, lost)
}

/// Server 0 retains m0's logs until server 1, m0's tail, covers them. At the retain limit (as
/// when server 1 still beats but its data path is cut, and covers nothing) server 0 takes no
/// customer packet into a transaction: the packet is lost and counted, and the server counts as
/// congested, until the commit vector comes and prunes; then packets go through again.
#[test]
fn past_the_retain_limit_the_first_server_loses_packets_until_logs_are_covered() {
    let ch2 = Ch2::new("kind = \"monitor\"");
    let limited = ServerConfig {
        retain_limit: 2,
        ..ServerConfig::default()
    };
    let (mut s0, mut s1) = (
        ch2.server(0, &limited),
        ch2.server(1, &ServerConfig::default()),
    );
    let (frames, lost) = into_server_0(&mut s0, (0..4).map(|h| udp_packet(h, 1000 + h as u16)));
    assert_eq!((frames.len(), &lost[..]), (2, &[2, 3][..]));
    assert_eq!(s0.stats().retain_overflow, 2);
    assert!(s0.congested());
    from_server_0(&mut s1, frames, 1);
    let (released, lost) = settle(&mut s0, &mut s1, 2, 2);
    assert_eq!((&released[..], &lost[..]), (&[0, 1][..], &[][..]));
    assert!(!s0.congested(), "covered logs pruned");
    let (frames, lost) = into_server_0(&mut s0, [udp_packet(4, 1004)]);
    assert_eq!((frames.len(), &lost[..]), (1, &[][..]));
    from_server_0(&mut s1, frames, 100_000_000);
    let (released, _) = settle(&mut s0, &mut s1, 100_000_001, 1);
    assert_eq!(released, [4]);
    assert_eq!(s0.stats().retain_overflow, 2);
}

/// Server 1 retains m1's logs until server 0, m1's tail, covers them. At its retain limit a
/// frame from server 0 goes on without its packet (lost, counted): its m0 logs are still
/// applied (server 1 is m0's tail; their commit vector goes back to server 0 all the same),
/// and once m1's logs are covered packets are transacted again.
#[test]
fn past_the_retain_limit_a_frame_goes_on_without_its_packet() {
    let ch2 = Ch2::new("kind = \"monitor\"");
    let limited = ServerConfig {
        retain_limit: 2,
        ..ServerConfig::default()
    };
    let (mut s0, mut s1) = (
        ch2.server(0, &ServerConfig::default()),
        ch2.server(1, &limited),
    );
    let frames = through_server_0(&mut s0, (0..4).map(|h| udp_packet(h, 1000 + h as u16)));
    assert_eq!(frames.len(), 4);
    from_server_0(&mut s1, frames, 1);
    assert_eq!(s1.stats().retain_overflow, 2);
    assert_eq!(s1.stats().transactions, 2);
    assert_eq!(
        s1.replica().unwrap().stats().applied,
        4,
        "every m0 log applied"
    );
    let (released, lost) = settle(&mut s0, &mut s1, 2, 2);
    assert_eq!((&released[..], &lost[..]), (&[0, 1][..], &[2, 3][..]));
    // The commit vector covering the lost packets' logs goes back once due, lazily.
    assert_eq!(settle(&mut s0, &mut s1, 30_000_000, 0), (vec![], vec![]));
    assert_eq!(
        s0.replica().unwrap().retained().0,
        0,
        "m0's logs all covered"
    );
    let frames = through_server_0(&mut s0, [udp_packet(4, 1004)]);
    from_server_0(&mut s1, frames, 100_000_000);
    let (released, _) = settle(&mut s0, &mut s1, 100_000_001, 1);
    assert_eq!(released, [4]);
    assert_eq!(s1.stats().retain_overflow, 2);
}

/// Runs servers 0 and 1 of a Ch-2 from `now` on, a millisecond a round, until `want` packets
/// left server 1 (20 rounds at most): what leaves server 1 goes back to server 0 (m1's logs to
/// its group's tail), server 0's propagating frames to server 1 (the commit vectors). The
/// packets released and lost, in order.
fn settle(
    s0: &mut Server<'_, u64>,
    s1: &mut Server<'_, u64>,
    mut now: u64,
    want: usize,
) -> (Vec<u64>, Vec<u64>) {
    let (mut released, mut lost) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        for o in std::iter::from_fn(|| s1.poll_output()) {
            match o {
                Output::Send { to, frame } => {
                    assert_eq!(to, ServerId(0));
                    s0.handle_frame(now, ServerId(1), frame);
                }
                Output::Release { packet, .. } => released.push(packet.handle),
                Output::Lost { handle, .. } => lost.push(handle),
                _ => {}
            }
        }
        s0.end_batch(now);
        if let Some(t) = s0.poll_timeout() {
            s0.handle_timeout(t.max(now));
        }
        for msg in propagating_to(s0, ServerId(1)) {
            let frame = Frame {
                packet: None,
                flags: 0,
                msg,
            };
            s1.handle_frame(now, ServerId(0), frame);
        }
        s1.end_batch(now);
        now += 1_000_000;
        if released.len() == want {
            break;
        }
    }
    assert!(s0.error().is_none() && s1.error().is_none());
    (released, lost)
}

/// A chain whose own logs outgrow the frames between its servers is refused before it runs (it
/// would fail on its first packet), in FTC mode; NF carries no logs.
#[test]
fn a_chain_whose_logs_outgrow_its_frames_is_refused_up_front() {
    let gen = "\n[[middlebox]]\nkind = \"gen\"\nstate_size = 4096\n";
    let spec = ChainSpec::from_toml_str(
        &format!("[chain]\nname = \"big\"\nf = 2\n{gen}{gen}{gen}"),
        "test",
    )
    .unwrap();
    let e = ServerConfig::default().check_logs_fit(&spec).unwrap_err();
    assert_eq!((e.need, e.room), (8326, 8192));
    assert!(e.to_string().contains("state_size"), "{e}");
    // Over links of 3,500-byte frames (the lab's), beside a full-size customer frame: one Gen
    // of 1,800 bytes fits, one of 2,000 does not (its flow would stall, a full-size packet
    // dropped at every retransmission).
    let links = ServerConfig {
        max_trailer: 3480,
        ..ServerConfig::default()
    };
    let one_gen = |size: u32| {
        let text = format!(
            "[chain]\nname = \"g\"\nf = 1\n\n[[middlebox]]\nkind = \"gen\"\nstate_size = {size}\n"
        );
        ChainSpec::from_toml_str(&text, "test").unwrap()
    };
    assert!(links.check_logs_fit_beside_packets(&one_gen(1800)).is_ok());
    let e = links
        .check_logs_fit_beside_packets(&one_gen(2000))
        .unwrap_err();
    assert_eq!(e.room, 3480 - 1514);
    assert!(
        e.to_string().contains("beside a full-size customer frame"),
        "{e}"
    );
    assert!(
        links.check_logs_fit(&one_gen(2000)).is_ok(),
        "in memory it fits"
    );
    let nf = ServerConfig {
        mode: Mode::Nf,
        ..ServerConfig::default()
    };
    assert!(nf.check_logs_fit(&spec).is_ok());
    assert!(ServerConfig::default().check_logs_fit(&ch_rec()).is_ok());
}

/// NF mode on a chain shorter than f + 1 (one monitor, two servers): by default the monitor's
/// server releases the packet, as in memory; deployed with its exit at the ring's last server
/// (`nf_exit`), it sends the packet on, and the server without a middlebox passes it out
/// untouched.
#[test]
fn nf_releases_at_the_exit_it_is_given_and_servers_without_a_middlebox_pass_frames_on() {
    let spec = ChainSpec::from_toml_str(
        "[chain]\nname = \"m\"\nf = 1\n[[middlebox]]\nkind = \"monitor\"\n",
        "test",
    )
    .unwrap();
    let ring = spec.ring();
    let mb = middleboxes::build(&spec.middlebox[0]);
    let store = Store::new(64, 1).unwrap();
    let nf = |nf_exit| ServerConfig {
        mode: Mode::Nf,
        nf_exit,
        ..ServerConfig::default()
    };
    let head = || {
        Some((
            ftc_chain::ring::MbIndex(0),
            mb.as_ref(),
            store.worker(0).unwrap(),
        ))
    };
    let mut alone: Server<'_, u64> = Server::new(ring, ServerId(0), 64, head(), nf(None)).unwrap();
    alone
        .handle_ingress(0, udp_packet(1, 1), port_of(Direction::Outbound))
        .unwrap();
    assert!(matches!(
        alone.poll_output(),
        Some(Output::Release { packet, .. }) if packet.handle == 1
    ));
    drop(alone);

    let exit = Some(ServerId(1));
    let mut first: Server<'_, u64> = Server::new(ring, ServerId(0), 64, head(), nf(exit)).unwrap();
    let mut last: Server<'_, u64> = Server::new(ring, ServerId(1), 64, None, nf(exit)).unwrap();
    first
        .handle_ingress(0, udp_packet(2, 1), port_of(Direction::Outbound))
        .unwrap();
    let Some(Output::Send { to, frame }) = first.poll_output() else {
        panic!("NF's first server sends the packet on");
    };
    assert_eq!(to, ServerId(1));
    let bytes = frame.packet.as_ref().unwrap().bytes.clone();
    last.handle_frame(1, ServerId(0), frame);
    match last.poll_output() {
        Some(Output::Release { packet, .. }) => {
            assert_eq!((packet.handle, &packet.bytes), (2, &bytes));
        }
        other => panic!("the exit releases the packet, not {other:?}"),
    }
    assert!(last.poll_output().is_none());
}
