//! Tests of the forwarder core against DESIGN §7 and thesis §4.4.1: sanitization at ingress,
//! piggybacking of pending content on customer frames, propagating frames on an idle chain or
//! when pending overflows, back-pressure on the ring-closing link, and a random interleaving
//! property (every log out exactly once, in order, in valid messages within their budgets).

use std::collections::BTreeMap;

use ftc_chain::middlebox::Direction;
use ftc_chain::wire::{
    CvRepr, LogRepr, MessageRepr, MessageView, NshFrame, NshRepr, WireError, MESSAGE_HEADER_LEN,
};
use ftc_forwarder::{
    Backpressure, Forwarder, ForwarderConfig, Ingress, Port, Rejected, MIN_CUSTOMER_FRAME,
};
use ftc_stm::{DepEntry, LogKind};
use proptest::prelude::*;

const PARTITIONS: u32 = 4;
const IDLE: u64 = 100_000;
/// The lazy timeout of the tests that set one (commit vectors alone).
const LAZY: u64 = 3 * IDLE;

fn dep(p: u16, s: u64) -> DepEntry {
    DepEntry::new(p, s)
}

/// An update log of middlebox `mb` whose single dependency's seq is `id` (to track it), with a
/// value of `value_len` bytes.
fn log(mb: u8, id: u64, value_len: usize) -> LogRepr {
    LogRepr {
        middlebox: mb,
        kind: LogKind::Update,
        deps: vec![dep(0, id)],
        writes: vec![(b"k".to_vec(), Some(vec![0xab; value_len]))],
    }
}

fn encode(msg: &MessageRepr) -> Vec<u8> {
    let buf = msg.to_vec().unwrap();
    assert_eq!(buf.len(), msg.buffer_len());
    buf
}

fn return_msg(logs: Vec<LogRepr>, cvs: Vec<CvRepr>) -> Vec<u8> {
    encode(&MessageRepr {
        flags: 0,
        logs,
        cvs,
    })
}

fn give_back(fw: &mut Forwarder, now: u64, bytes: &[u8]) -> Result<(), Backpressure> {
    fw.handle_return(now, &MessageView::new_checked(bytes).unwrap())
}

fn parse(bytes: &[u8]) -> MessageRepr {
    MessageRepr::parse(&MessageView::new_checked(bytes).expect("a valid message"))
}

fn ids(msg: &MessageRepr) -> Vec<u64> {
    msg.logs.iter().map(|l| l.deps[0].seq.0).collect()
}

fn attach(fw: &mut Forwarder, now: u64, room: usize) -> MessageRepr {
    let mut buf = vec![0; room];
    let len = fw.attach(now, &mut buf).unwrap();
    assert!(len <= room.min(fw.config().trailer_budget));
    parse(&buf[..len])
}

/// A propagating frame's room in these tests: four trailer budgets.
const ROOM_BUDGETS: usize = 4;

fn propagate(fw: &mut Forwarder, now: u64) -> Option<MessageRepr> {
    let mut buf = vec![0; ROOM_BUDGETS * fw.config().trailer_budget];
    let len = fw.poll_propagate(now, &mut buf).unwrap()?;
    Some(parse(&buf[..len]))
}

fn config(trailer_budget: usize) -> ForwarderConfig {
    ForwarderConfig {
        trailer_budget,
        idle_timeout_ns: IDLE,
        ..ForwarderConfig::default()
    }
}

/// An ordinary customer frame: Ethernet II, IPv4, TCP, built by etherparse.
fn tcp_frame() -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [192, 0, 2, 7], 64)
        .tcp(40_000, 80, 1, 65_535);
    let payload = b"GET / HTTP/1.1\r\n\r\n";
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).unwrap();
    frame
}

/// A well-formed FTC NSH frame with our context class, as a server of the chain would send it,
/// carrying `inner` and a message with one log (an attempt to inject state).
fn ftc_frame(inner: &[u8], propagating: bool) -> Vec<u8> {
    let trailer = return_msg(vec![log(0, 1, 8)], vec![]);
    let repr = NshRepr {
        dst_mac: [2, 0, 0, 0, 0, 9],
        src_mac: [2, 0, 0, 0, 0, 8],
        propagating,
        ttl: 63,
        spi: 1,
        si: 255,
        epoch: 1,
        flags: 0,
        trailer_len: trailer.len() as u16,
    };
    let mut frame = vec![0; repr.frame_len(inner.len())];
    repr.emit(&mut NshFrame::new_unchecked(&mut frame[..]));
    let mut view = NshFrame::new_checked(&mut frame[..]).unwrap();
    view.inner_mut()
        .copy_from_slice(if propagating { &[] } else { inner });
    view.trailer_mut().copy_from_slice(&trailer);
    frame
}

// ---------------------------------------------------------------------------------------------
// Sanitization and classification (DESIGN §7)
// ---------------------------------------------------------------------------------------------

/// DESIGN §7: a frame from outside that claims our NSH context class is stripped and counted, on
/// either port, whether it poses as a data frame or a propagating frame.
#[test]
fn ftc_frames_from_outside_are_rejected_and_counted_on_either_port() {
    let mut fw = Forwarder::new(PARTITIONS, ForwarderConfig::default());
    let inner = tcp_frame();
    for propagating in [false, true] {
        let frame = ftc_frame(&inner, propagating);
        for port in [Port::Inside, Port::Outside] {
            assert_eq!(
                fw.handle_ingress(0, &frame, port),
                Ingress::Reject(Rejected::ForeignFtcFrame)
            );
        }
    }
    assert_eq!(fw.stats().rejected_foreign_ftc, 4);
    assert_eq!(
        fw.stats().accepted_outbound + fw.stats().accepted_inbound,
        0
    );
    // Nothing of the injected message became pending.
    assert!(!fw.has_pending());
    assert_eq!(fw.poll_timeout(), None);
}

/// DESIGN §7: a switch could strip a VLAN tag, so a tagged frame claiming our class is refused
/// too (one 802.1Q tag, and QinQ).
#[test]
fn vlan_tagged_ftc_frames_are_rejected() {
    let mut fw = Forwarder::new(PARTITIONS, ForwarderConfig::default());
    let frame = ftc_frame(&tcp_frame(), false);
    let mut one = frame[..12].to_vec();
    one.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    one.extend_from_slice(&frame[12..]);
    let mut two = frame[..12].to_vec();
    two.extend_from_slice(&[0x88, 0xa8, 0x00, 0x06, 0x81, 0x00, 0x00, 0x05]);
    two.extend_from_slice(&frame[12..]);
    for f in [&one, &two] {
        assert_eq!(
            fw.handle_ingress(0, f, Port::Outside),
            Ingress::Reject(Rejected::ForeignFtcFrame)
        );
    }
    assert_eq!(fw.stats().rejected_foreign_ftc, 2);
}

/// NSH with another context class is not ours to police: it is a customer frame like any other.
#[test]
fn nsh_frames_of_another_context_class_are_customer_frames() {
    let mut fw = Forwarder::new(PARTITIONS, ForwarderConfig::default());
    let mut frame = ftc_frame(&tcp_frame(), false);
    frame[22..24].copy_from_slice(&0x0001u16.to_be_bytes());
    assert_eq!(
        fw.handle_ingress(0, &frame, Port::Inside),
        Ingress::Accept(Direction::Outbound)
    );
}

/// DESIGN §7: the direction comes from the port: inside → outbound, outside → inbound.
#[test]
fn ordinary_tcp_frames_are_accepted_with_the_direction_of_their_port() {
    let mut fw = Forwarder::new(PARTITIONS, ForwarderConfig::default());
    let frame = tcp_frame();
    assert_eq!(
        fw.handle_ingress(0, &frame, Port::Inside),
        Ingress::Accept(Direction::Outbound)
    );
    assert_eq!(
        fw.handle_ingress(0, &frame, Port::Outside),
        Ingress::Accept(Direction::Inbound)
    );
    assert_eq!(
        fw.handle_ingress(0, &frame, Port::Outside),
        Ingress::Accept(Direction::Inbound)
    );
    assert_eq!(fw.stats().accepted_outbound, 1);
    assert_eq!(fw.stats().accepted_inbound, 2);
    assert_eq!(
        fw.stats().rejected_foreign_ftc + fw.stats().rejected_runt,
        0
    );
}

#[test]
fn runts_are_rejected_and_counted() {
    let mut fw = Forwarder::new(PARTITIONS, ForwarderConfig::default());
    let frame = ftc_frame(&tcp_frame(), false);
    for len in 0..MIN_CUSTOMER_FRAME {
        assert_eq!(
            fw.handle_ingress(0, &frame[..len], Port::Inside),
            Ingress::Reject(Rejected::Runt)
        );
    }
    assert_eq!(fw.stats().rejected_runt, MIN_CUSTOMER_FRAME as u64);
    // An Ethernet header and 6 bytes is a (tiny) frame.
    assert_eq!(
        fw.handle_ingress(0, &tcp_frame()[..MIN_CUSTOMER_FRAME], Port::Outside),
        Ingress::Accept(Direction::Inbound)
    );
}

proptest! {
    /// Untrusted bytes never panic the sanitizer, every frame is counted exactly once, and a
    /// runt is exactly a frame shorter than MIN_CUSTOMER_FRAME.
    #[test]
    fn arbitrary_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..128),
                                   inside in any::<bool>()) {
        let mut fw = Forwarder::new(PARTITIONS, ForwarderConfig::default());
        let port = if inside { Port::Inside } else { Port::Outside };
        let verdict = fw.handle_ingress(0, &frame, port);
        prop_assert_eq!(verdict == Ingress::Reject(Rejected::Runt), frame.len() < MIN_CUSTOMER_FRAME);
        let s = fw.stats();
        prop_assert_eq!(s.accepted_inbound + s.accepted_outbound + s.rejected_foreign_ftc + s.rejected_runt, 1);
    }

    /// Whatever follows FTC's header, a frame that claims our class is refused.
    #[test]
    fn any_frame_with_our_header_is_rejected(tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut frame = ftc_frame(&[], true)[..NshRepr::HEADER_LEN].to_vec();
        frame.extend_from_slice(&tail);
        let mut fw = Forwarder::new(PARTITIONS, ForwarderConfig::default());
        prop_assert_eq!(fw.handle_ingress(0, &frame, Port::Outside), Ingress::Reject(Rejected::ForeignFtcFrame));
    }
}

// ---------------------------------------------------------------------------------------------
// Attaching pending content to customer frames (thesis §4.4.1)
// ---------------------------------------------------------------------------------------------

#[test]
fn attach_with_nothing_pending_writes_an_empty_message() {
    let mut fw = Forwarder::new(PARTITIONS, ForwarderConfig::default());
    let mut buf = [0xffu8; 64];
    let len = fw.attach(5, &mut buf).unwrap();
    assert_eq!(len, MESSAGE_HEADER_LEN);
    assert_eq!(parse(&buf[..len]), MessageRepr::default());
    assert_eq!(fw.stats().messages_attached, 0);
    // Too small for even a header: an error, nothing taken.
    assert_eq!(fw.attach(5, &mut buf[..3]), Err(WireError::NoRoom));
}

/// Thesis §4.4.1: the forwarder piggybacks the buffer's logs on incoming packets; within the
/// trailer budget, oldest first; what does not fit waits for the next packet (never dropped).
#[test]
fn pending_logs_ride_on_customer_frames_in_order_within_the_budget() {
    let mut fw = Forwarder::new(PARTITIONS, config(128));
    // Each log is 8 + 10 + 4 + 1 + 17 = 40 bytes: three fit a 128-byte budget.
    let logs: Vec<LogRepr> = (1..=8).map(|i| log(1, i, 17)).collect();
    assert_eq!(logs[0].buffer_len(), 40);
    give_back(&mut fw, 10, &return_msg(logs[..4].to_vec(), vec![])).unwrap();
    give_back(&mut fw, 11, &return_msg(logs[4..].to_vec(), vec![])).unwrap();
    // A bigger buffer than the budget: the budget bounds the message.
    let m = attach(&mut fw, 12, 1000);
    assert_eq!(ids(&m), [1, 2, 3]);
    // Less room than the budget: the room bounds it.
    let m = attach(&mut fw, 13, 90);
    assert_eq!(ids(&m), [4, 5]);
    let m = attach(&mut fw, 14, 128);
    assert_eq!(ids(&m), [6, 7, 8]);
    assert!(!fw.has_pending());
    let m = attach(&mut fw, 15, 128);
    assert!(m.logs.is_empty() && m.cvs.is_empty());
    assert_eq!(fw.stats().messages_attached, 3);
    assert_eq!(fw.stats().logs_attached, 8);
    assert_eq!(fw.stats().pending_bytes, 0);
    assert_eq!(fw.stats().max_pending_bytes, 8 * 40);
}

/// DESIGN §4: commit vectors are merged by element-wise max; stale entries are not sent.
#[test]
fn commit_vectors_coalesce_and_only_moved_entries_are_attached() {
    let mut fw = Forwarder::new(PARTITIONS, ForwarderConfig::default());
    let cv = |mb: u8, entries: &[(u16, u64)]| CvRepr {
        middlebox: mb,
        entries: entries.iter().map(|&(p, s)| dep(p, s)).collect(),
    };
    give_back(
        &mut fw,
        1,
        &return_msg(vec![], vec![cv(1, &[(0, 5), (2, 1)])]),
    )
    .unwrap();
    give_back(
        &mut fw,
        2,
        &return_msg(vec![], vec![cv(1, &[(0, 3), (2, 4)]), cv(0, &[(1, 7)])]),
    )
    .unwrap();
    let m = attach(&mut fw, 3, 1024);
    assert_eq!(m.cvs, vec![cv(0, &[(1, 7)]), cv(1, &[(0, 5), (2, 4)])]);
    assert!(!fw.has_pending());
    // A stale vector moves nothing: nothing pending, no timer.
    give_back(
        &mut fw,
        4,
        &return_msg(vec![], vec![cv(1, &[(0, 4), (2, 2)])]),
    )
    .unwrap();
    assert!(!fw.has_pending());
    assert_eq!(fw.poll_timeout(), None);
    // One moved entry: only it is sent.
    give_back(
        &mut fw,
        5,
        &return_msg(vec![], vec![cv(1, &[(0, 4), (3, 9)])]),
    )
    .unwrap();
    let m = attach(&mut fw, 6, 1024);
    assert_eq!(m.cvs, vec![cv(1, &[(3, 9)])]);
}

// ---------------------------------------------------------------------------------------------
// Propagating frames (DESIGN §7)
// ---------------------------------------------------------------------------------------------

#[test]
fn nothing_pending_means_no_propagating_frame_and_no_timer() {
    let mut fw = Forwarder::new(PARTITIONS, ForwarderConfig::default());
    assert_eq!(fw.poll_timeout(), None);
    assert!(propagate(&mut fw, 0).is_none());
    assert!(propagate(&mut fw, u64::MAX).is_none());
    attach(&mut fw, 10, 100);
    assert_eq!(fw.poll_timeout(), None);
    assert!(propagate(&mut fw, 10 + 10 * IDLE).is_none());
}

/// DESIGN §7: when no packet arrives for the idle interval and something is pending, a
/// propagating frame carries it, so that the buffer still releases packets on an idle chain.
#[test]
fn idle_chain_gets_a_propagating_frame_after_the_idle_timeout() {
    let mut fw = Forwarder::new(PARTITIONS, config(256));
    let t0 = 1_000_000;
    attach(&mut fw, t0, 256); // the chain was busy until t0
    give_back(
        &mut fw,
        t0 + 10,
        &return_msg(vec![log(2, 1, 8), log(2, 2, 8)], vec![]),
    )
    .unwrap();
    assert_eq!(fw.poll_timeout(), Some(t0 + IDLE));
    assert!(propagate(&mut fw, t0 + 10).is_none());
    assert!(propagate(&mut fw, t0 + IDLE - 1).is_none());
    let m = propagate(&mut fw, t0 + IDLE).unwrap();
    assert_eq!(ids(&m), [1, 2]);
    assert!(propagate(&mut fw, t0 + IDLE).is_none());
    assert_eq!(fw.poll_timeout(), None);
    assert_eq!(fw.stats().propagating_frames, 1);
    assert_eq!(fw.stats().idle_frames, 1);
    assert_eq!(fw.stats().logs_propagated, 2);
}

/// A customer frame that drains pending restarts the idle clock; one that takes only part of it
/// does not, so the oldest content never waits much beyond the idle timeout.
#[test]
fn partial_drains_do_not_postpone_the_idle_deadline() {
    let mut fw = Forwarder::new(PARTITIONS, config(256));
    let t0 = 5_000;
    attach(&mut fw, t0, 256);
    give_back(
        &mut fw,
        t0 + 1,
        &return_msg((1..=3).map(|i| log(0, i, 17)).collect(), vec![]),
    )
    .unwrap();
    // Room for one 40-byte log only, at several times: the deadline stays put.
    for k in 1..=2 {
        let m = attach(&mut fw, t0 + k * IDLE / 3, 50);
        assert_eq!(ids(&m), [k]);
        assert_eq!(fw.poll_timeout(), Some(t0 + IDLE));
    }
    let m = propagate(&mut fw, t0 + IDLE).unwrap();
    assert_eq!(ids(&m), [3]);
    // Drained at t0 + IDLE: new content now waits until t0 + 2 IDLE at most.
    give_back(
        &mut fw,
        t0 + IDLE + 5,
        &return_msg(vec![log(0, 4, 1)], vec![]),
    )
    .unwrap();
    assert_eq!(fw.poll_timeout(), Some(t0 + 2 * IDLE));
}

/// Commit vectors alone (the buffer returns them so that heads can prune) wait for customer
/// frames up to the lazy timeout, not the idle one; a log behind them is due by the idle
/// timeout from the last frame that left with no log pending.
#[test]
fn commit_vectors_alone_wait_the_lazy_timeout_and_logs_do_not() {
    let mut fw = Forwarder::new(
        PARTITIONS,
        ForwarderConfig {
            lazy_timeout_ns: LAZY,
            ..config(256)
        },
    );
    let cv = |s: u64| CvRepr {
        middlebox: 1,
        entries: vec![dep(0, s)],
    };
    let t0 = 1_000_000;
    attach(&mut fw, t0, 256);
    give_back(&mut fw, t0 + 1, &return_msg(vec![], vec![cv(5)])).unwrap();
    assert_eq!(fw.poll_timeout(), Some(t0 + LAZY));
    assert!(propagate(&mut fw, t0 + IDLE).is_none());
    // A customer frame with room for the header only takes nothing; no log was pending, so the
    // logs' clock moves and the commit vector's does not.
    assert!(attach(&mut fw, t0 + 2, MESSAGE_HEADER_LEN).cvs.is_empty());
    give_back(&mut fw, t0 + 3, &return_msg(vec![log(2, 1, 8)], vec![])).unwrap();
    assert_eq!(fw.poll_timeout(), Some(t0 + 2 + IDLE));
    assert!(propagate(&mut fw, t0 + 1 + IDLE).is_none());
    let m = propagate(&mut fw, t0 + 2 + IDLE).unwrap();
    assert_eq!((ids(&m), m.cvs), (vec![1], vec![cv(5)]));
    assert_eq!(fw.poll_timeout(), None);
    // Drained: the next commit vector alone waits the lazy timeout from there.
    let t1 = t0 + 2 + IDLE;
    give_back(&mut fw, t1 + 1, &return_msg(vec![], vec![cv(6)])).unwrap();
    assert_eq!(fw.poll_timeout(), Some(t1 + LAZY));
    assert!(propagate(&mut fw, t1 + LAZY - 1).is_none());
    assert_eq!(propagate(&mut fw, t1 + LAZY).unwrap().cvs, vec![cv(6)]);
    let s = fw.stats();
    assert_eq!((s.idle_frames, s.lazy_frames), (1, 1));
}

/// Before any frame has left, the chain has carried nothing: pending content is due at once.
#[test]
fn content_on_a_fresh_forwarder_is_due_at_once() {
    let mut fw = Forwarder::new(PARTITIONS, ForwarderConfig::default());
    give_back(&mut fw, 7, &return_msg(vec![log(0, 1, 1)], vec![])).unwrap();
    assert_eq!(fw.poll_timeout(), Some(7));
    assert_eq!(ids(&propagate(&mut fw, 7).unwrap()), [1]);
}

/// DESIGN §4: what does not fit goes in propagating frames right behind; pending beyond one
/// trailer budget is sent at once, down to what one budget holds. A propagating frame has no
/// customer frame inside, so it fills the frame's room, not just one trailer budget.
#[test]
fn overflow_beyond_one_budget_is_propagated_at_once_until_below() {
    let budget = 128;
    let mut fw = Forwarder::new(PARTITIONS, config(budget));
    let t0 = 1_000;
    attach(&mut fw, t0, budget);
    // 15 logs of 40 bytes = 600 bytes pending.
    give_back(
        &mut fw,
        t0 + 1,
        &return_msg((1..=15).map(|i| log(3, i, 17)).collect(), vec![]),
    )
    .unwrap();
    assert_eq!(fw.poll_timeout(), Some(t0 + 1));
    let mut seen = Vec::new();
    while let Some(m) = propagate(&mut fw, t0 + 1) {
        seen.extend(ids(&m));
    }
    // One frame of twelve logs (6 + 12 × 40 bytes ≤ 4 × 128); three logs (6 + 120 ≤ 128) wait
    // for a customer frame.
    assert_eq!(seen, (1..=12).collect::<Vec<_>>());
    assert_eq!(fw.stats().overflow_frames, 1);
    assert_eq!(fw.stats().pending_bytes, 120);
    assert_eq!(fw.poll_timeout(), Some(t0 + IDLE));
    assert_eq!(ids(&attach(&mut fw, t0 + 2, budget)), [13, 14, 15]);
}

/// DESIGN §4: never drop a log for lack of room. A log larger than the trailer budget goes in a
/// propagating frame, which may use the whole buffer; if even that is too small, it stays.
#[test]
fn a_log_larger_than_the_budget_is_propagated_never_dropped() {
    let mut fw = Forwarder::new(PARTITIONS, config(64));
    let big = log(0, 1, 100);
    give_back(
        &mut fw,
        0,
        &return_msg(vec![big.clone(), log(0, 2, 1)], vec![]),
    )
    .unwrap();
    // Customer frames cannot carry it, nor the small log behind it (order).
    assert!(attach(&mut fw, 1, 64).logs.is_empty());
    let mut small = [0u8; 80];
    assert_eq!(fw.poll_propagate(1, &mut small), Err(WireError::NoRoom));
    assert!(fw.has_pending());
    let mut buf = [0u8; 200];
    let len = fw.poll_propagate(1, &mut buf).unwrap().unwrap();
    assert!(len > 64);
    let m = parse(&buf[..len]);
    assert_eq!(m.logs[0], big);
    assert_eq!(ids(&m), [1, 2]);
    assert_eq!(fw.stats().propagating_frames, 1);
    assert!(!fw.has_pending());
}

// ---------------------------------------------------------------------------------------------
// Back-pressure on the ring-closing link
// ---------------------------------------------------------------------------------------------

/// DESIGN §6/§7: back-pressure, never loss: beyond `max_pending_bytes` the return message is
/// still absorbed and the driver is told to stop reading; once drained, returns are accepted.
#[test]
fn backpressure_keeps_the_logs_and_draining_restores_normal_operation() {
    let budget = 128;
    let mut fw = Forwarder::new(
        PARTITIONS,
        ForwarderConfig {
            trailer_budget: budget,
            idle_timeout_ns: IDLE,
            lazy_timeout_ns: LAZY,
            max_pending_bytes: 200,
        },
    );
    attach(&mut fw, 0, budget);
    let mut next = 1;
    let mut give = |fw: &mut Forwarder| {
        let r = give_back(
            fw,
            1,
            &return_msg(vec![log(0, next, 17), log(0, next + 1, 17)], vec![]),
        );
        next += 2;
        r
    };
    for _ in 0..2 {
        give(&mut fw).unwrap(); // 80, 160 bytes
    }
    assert_eq!(
        give(&mut fw),
        Err(Backpressure {
            pending_bytes: 240,
            limit: 200
        })
    );
    assert_eq!(fw.stats().backpressure, 1);
    // The driver stops reading and drains: overflow frames at once.
    let mut seen = Vec::new();
    while let Some(m) = propagate(&mut fw, 2) {
        seen.extend(ids(&m));
    }
    assert!(fw.stats().pending_bytes <= 200);
    give(&mut fw).unwrap();
    seen.extend(ids(&attach(&mut fw, 3, budget)));
    while let Some(m) = propagate(&mut fw, 3 + IDLE) {
        seen.extend(ids(&m));
    }
    assert_eq!(seen, (1..=8).collect::<Vec<_>>());
    assert!(!fw.has_pending());
}

// ---------------------------------------------------------------------------------------------
// Random interleavings
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// A return message: logs (middlebox, value length) and commit vectors (middlebox, entries).
    Return {
        logs: Vec<(u8, usize)>,
        cvs: Vec<(u8, BTreeMap<u16, u64>)>,
    },
    /// A customer frame with this much trailer room.
    Customer(usize),
    /// The driver drains `poll_propagate`, with a buffer of this many budgets.
    Propagate(usize),
    /// Time passes.
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let cv = (
        0u8..3,
        proptest::collection::btree_map(0u16..PARTITIONS as u16, 1u64..50, 1..4),
    );
    prop_oneof![
        3 => (
            proptest::collection::vec((0u8..3, 1usize..27), 0..6),
            proptest::collection::vec(cv, 0..3),
        )
            .prop_map(|(logs, cvs)| Op::Return { logs, cvs }),
        3 => (0usize..400).prop_map(Op::Customer),
        2 => (1usize..3).prop_map(Op::Propagate),
        2 => (0u64..2 * IDLE).prop_map(Op::Tick),
    ]
}

/// Collects what leaves the forwarder and checks each message.
#[derive(Default)]
struct Sink {
    ids: Vec<u64>,
    /// Per (middlebox, partition): the highest commit-vector entry sent.
    cv_sent: BTreeMap<(u8, u16), u64>,
}

impl Sink {
    fn take(&mut self, bytes: &[u8], budget: usize) -> Result<(), TestCaseError> {
        prop_assert!(bytes.len() <= budget, "{} > budget {}", bytes.len(), budget);
        let view = MessageView::new_checked(bytes);
        prop_assert!(view.is_ok(), "invalid message: {:?}", view);
        let msg = MessageRepr::parse(&view.unwrap());
        self.ids.extend(ids(&msg));
        for cv in &msg.cvs {
            for e in &cv.entries {
                let sent = self
                    .cv_sent
                    .entry((cv.middlebox, e.partition.0))
                    .or_default();
                // Stale entries are not sent: none goes below what was sent before (an equal one
                // may go again: a tail announces an entry again when it was lost).
                prop_assert!(
                    e.seq.0 >= *sent,
                    "entry {:?} of cv {} went backwards",
                    e,
                    cv.middlebox
                );
                *sent = e.seq.0;
            }
        }
        Ok(())
    }
}

proptest! {
    /// Thesis §4.4.1 / DESIGN §4: across any interleaving of return messages, customer frames of
    /// any trailer room, propagating polls and time, every absorbed log leaves exactly once and
    /// in order, every message is valid and within its budget, commit vectors arrive merged, and
    /// at the end (time past the idle timeout) nothing is left pending.
    #[test]
    fn every_log_leaves_exactly_once_in_order(
        budget in 64usize..300,
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        let mut fw = Forwarder::new(PARTITIONS, ForwarderConfig {
            trailer_budget: budget,
            idle_timeout_ns: IDLE,
            lazy_timeout_ns: LAZY,
            max_pending_bytes: 4 * budget,
        });
        let mut now = 0u64;
        let mut next_id = 1u64;
        let mut cv_in: BTreeMap<(u8, u16), u64> = BTreeMap::new();
        let mut sink = Sink::default();
        let drain = |fw: &mut Forwarder, now: u64, size: usize, sink: &mut Sink| -> Result<(), TestCaseError> {
            let mut buf = vec![0u8; size];
            let mut frames = 0;
            while let Some(len) = fw.poll_propagate(now, &mut buf).unwrap() {
                sink.take(&buf[..len], size)?;
                frames += 1;
                prop_assert!(frames < 10_000, "livelock");
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Return { logs, cvs } => {
                    let logs = logs.into_iter().map(|(mb, len)| {
                        next_id += 1;
                        log(mb, next_id - 1, len)
                    }).collect();
                    let cvs = cvs.into_iter().map(|(mb, entries)| {
                        for (&p, &s) in &entries {
                            let e = cv_in.entry((mb, p)).or_default();
                            *e = (*e).max(s);
                        }
                        CvRepr { middlebox: mb, entries: entries.into_iter().map(|(p, s)| dep(p, s)).collect() }
                    }).collect();
                    let bytes = return_msg(logs, cvs);
                    if give_back(&mut fw, now, &bytes).is_err() {
                        // Back-pressure: the driver drains before reading on.
                        drain(&mut fw, now, budget, &mut sink)?;
                        prop_assert!(fw.stats().pending_bytes <= 4 * budget);
                    }
                }
                Op::Customer(room) => {
                    let mut buf = vec![0u8; room];
                    match fw.attach(now, &mut buf) {
                        Ok(len) => sink.take(&buf[..len], budget.min(room))?,
                        Err(e) => {
                            prop_assert_eq!(e, WireError::NoRoom);
                            prop_assert!(room < MESSAGE_HEADER_LEN);
                        }
                    }
                }
                Op::Propagate(budgets) => drain(&mut fw, now, budgets * budget, &mut sink)?,
                Op::Tick(dt) => now += dt,
            }
            if let Some(t) = fw.poll_timeout() {
                // Overflow is due at once; logs within one idle timeout of now, commit
                // vectors alone within one lazy timeout.
                let bound = if fw.stats().pending_bytes > 0 { IDLE } else { LAZY };
                prop_assert!(t <= now + bound, "due at {} > {} + {}", t, now, bound);
            }
        }
        // The chain goes quiet: the idle timer fires and drains everything.
        // Overflow frames come first, then the idle timer fires for the rest.
        for _ in 0..3 {
            if let Some(t) = fw.poll_timeout() {
                now = now.max(t);
            }
            drain(&mut fw, now, budget, &mut sink)?;
        }
        prop_assert!(!fw.has_pending());
        prop_assert_eq!(fw.poll_timeout(), None);
        prop_assert_eq!(&sink.ids, &(1..next_id).collect::<Vec<_>>());
        prop_assert_eq!(&sink.cv_sent, &cv_in);
        let s = fw.stats();
        prop_assert_eq!(s.logs_attached + s.logs_propagated, next_id - 1);
        prop_assert_eq!(s.pending_bytes, 0);
    }
}
