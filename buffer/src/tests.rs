//! Unit tests of the buffer, named after the thesis sections they check.

use ftc_chain::ring::{MbIndex, Ring};
use ftc_chain::wire::{MessageRepr, MessageView, WireError};
use ftc_stm::{LogKind, Partition, Seq};

use crate::check::{cv, encode, log, view, Oracle};
use crate::{Buffer, BufferConfig, Packet, Refused};

const P: u32 = 4;
const U: LogKind = LogKind::Update;
const R: LogKind = LogKind::ReadOnly;

/// Ch-Rec (k = 3, f = 1): G(2) = {2, 0} wraps; G(0), G(1) do not.
fn ch_rec() -> Buffer<u64> {
    Buffer::new(Ring::new(3, 1).unwrap(), P, BufferConfig::default())
}

fn pkt(flow: u64, handle: u64) -> Packet<u64> {
    Packet {
        flow,
        len: 100,
        handle,
    }
}

/// Handles of every packet released now.
fn drain(b: &mut Buffer<u64>, now: u64) -> Vec<u64> {
    std::iter::from_fn(|| b.poll_release(now))
        .map(|r| r.handle)
        .collect()
}

/// A propagating frame carrying only `cvs`.
fn cvs_frame(b: &mut Buffer<u64>, now: u64, cvs: Vec<ftc_chain::wire::CvRepr>) {
    let m = encode(vec![], cvs);
    b.handle_frame(now, &view(&m), None).unwrap();
}

fn data(b: &mut Buffer<u64>, now: u64, logs: Vec<ftc_chain::wire::LogRepr>, p: Packet<u64>) {
    let m = encode(logs, vec![]);
    b.handle_frame(now, &view(&m), Some(p)).unwrap();
}

/// §4.4.1: a packet whose message carries no log of a wrapping group leaves at once; a log of a
/// group that does not wrap cannot be there in a correct chain, is counted, and is not waited on.
#[test]
fn packet_without_wrapping_logs_leaves_at_once() {
    let mut b = ch_rec();
    data(&mut b, 0, vec![], pkt(1, 10));
    assert_eq!(drain(&mut b, 0), [10]);
    data(&mut b, 0, vec![log(1, U, &[(0, 3)])], pkt(1, 11));
    data(&mut b, 0, vec![log(2, LogKind::Noop, &[])], pkt(1, 12));
    assert_eq!(drain(&mut b, 0), [11, 12]);
    assert_eq!(b.stats().non_wrapping_logs, 1);
    assert_eq!(b.stats().held_packets, 0);
}

/// §4.4.1: an update log with D[p] waits until CV[p] ≥ D[p] + 1: D[p] is not enough.
#[test]
fn update_log_waits_for_d_plus_one() {
    let mut b = ch_rec();
    data(&mut b, 0, vec![log(2, U, &[(1, 4)])], pkt(1, 10));
    assert_eq!(drain(&mut b, 0), [] as [u64; 0]);
    cvs_frame(&mut b, 1, vec![cv(2, &[(1, 3)])]);
    cvs_frame(&mut b, 2, vec![cv(2, &[(0, 9), (1, 4)])]);
    assert_eq!(
        drain(&mut b, 2),
        [] as [u64; 0],
        "CV[p] = D[p] does not cover an update"
    );
    cvs_frame(&mut b, 3, vec![cv(2, &[(1, 5)])]);
    assert_eq!(drain(&mut b, 3), [10]);
    assert_eq!(
        b.commit_vector(MbIndex(2)).unwrap().get(Partition(1)),
        Some(Seq(5))
    );
    assert!(b.commit_vector(MbIndex(0)).is_none());
}

/// §4.4.1 (and DESIGN §5's read-only logs): a read-only log with D[p] is covered at CV[p] = D[p].
#[test]
fn read_only_log_waits_for_d() {
    let mut b = ch_rec();
    data(&mut b, 0, vec![log(2, R, &[(1, 4)])], pkt(1, 10));
    cvs_frame(&mut b, 1, vec![cv(2, &[(1, 3)])]);
    assert_eq!(drain(&mut b, 1), [] as [u64; 0]);
    cvs_frame(&mut b, 2, vec![cv(2, &[(1, 4)])]);
    assert_eq!(drain(&mut b, 2), [10]);
}

/// Read-only and no-op logs of a wrapping group hold their packet like any log but do not go
/// back to the forwarder: they replicate nothing, and CV(j) moves when the tail applies the
/// update log that wrote what they read, which went back with its own packet.
#[test]
fn read_only_logs_are_waited_on_but_not_returned() {
    let mut b = ch_rec();
    let mut out = [0u8; 256];
    data(&mut b, 0, vec![log(2, U, &[(1, 3)])], pkt(1, 9));
    data(&mut b, 0, vec![log(2, R, &[(1, 4)])], pkt(2, 10));
    data(&mut b, 0, vec![log(2, LogKind::Noop, &[])], pkt(3, 11));
    assert_eq!(drain(&mut b, 0), [11]);
    let n = b.poll_return(0, &mut out).unwrap().unwrap();
    let repr = MessageRepr::parse(&MessageView::new_checked(&out[..n]).unwrap());
    assert_eq!(repr.logs, vec![log(2, U, &[(1, 3)])]);
    assert_eq!(b.poll_return(0, &mut out), Ok(None));
    let s = b.stats();
    assert_eq!((s.logs_returned, s.logs_kept), (1, 2));
    cvs_frame(&mut b, 1, vec![cv(2, &[(1, 4)])]);
    assert_eq!(drain(&mut b, 1), [9, 10]);
}

/// Commit vectors alone go back at most once per `lazy_return_ns` (they only let heads prune);
/// logs go back at once and take the waiting vectors with them.
#[test]
fn commit_vectors_alone_go_back_lazily_and_logs_at_once() {
    let mut b = ch_rec();
    let lazy = b.config().lazy_return_ns;
    let mut out = [0u8; 256];
    let mut returned = |b: &mut Buffer<u64>, now: u64| {
        let n = b.poll_return(now, &mut out).unwrap()?;
        Some(MessageRepr::parse(
            &MessageView::new_checked(&out[..n]).unwrap(),
        ))
    };
    // The first goes at once: nothing went back before.
    cvs_frame(&mut b, 0, vec![cv(1, &[(0, 1)])]);
    assert_eq!(returned(&mut b, 0).unwrap().cvs, vec![cv(1, &[(0, 1)])]);
    assert_eq!(b.poll_timeout(), None);
    cvs_frame(&mut b, 10, vec![cv(1, &[(0, 2)])]);
    assert!(returned(&mut b, 10).is_none());
    assert_eq!(b.poll_timeout(), Some(lazy));
    assert!(returned(&mut b, lazy - 1).is_none());
    // That timer is the return path's: nothing is held, so the tails are not asked anything.
    assert!(!b.poll_announce_request(lazy));
    assert_eq!(returned(&mut b, lazy).unwrap().cvs, vec![cv(1, &[(0, 2)])]);
    // A vector waits again; a log arrives and both go at once.
    cvs_frame(&mut b, lazy + 1, vec![cv(0, &[(3, 1)])]);
    assert!(returned(&mut b, lazy + 1).is_none());
    data(&mut b, lazy + 2, vec![log(2, U, &[(0, 0)])], pkt(1, 10));
    let m = returned(&mut b, lazy + 2).unwrap();
    assert_eq!((m.logs.len(), m.cvs), (1, vec![cv(0, &[(3, 1)])]));
    assert_eq!(b.stats().return_messages, 3);
}

/// §4.4.1: every dependency of every wrapping group's log must be covered, not just one.
#[test]
fn every_dependency_of_every_wrapping_group_is_needed() {
    // k = 3, f = 2: n = 3, G(1) and G(2) wrap.
    let mut b: Buffer<u64> = Buffer::new(Ring::new(3, 2).unwrap(), P, BufferConfig::default());
    let logs = vec![log(1, U, &[(0, 2), (3, 7)]), log(2, R, &[(2, 1)])];
    data(&mut b, 0, logs, pkt(1, 10));
    cvs_frame(&mut b, 1, vec![cv(1, &[(0, 3)])]);
    cvs_frame(&mut b, 1, vec![cv(2, &[(2, 1)])]);
    assert_eq!(drain(&mut b, 1), [] as [u64; 0], "CV(1)[3] is still short");
    // CV(2) moving on the same partition must not release it either.
    cvs_frame(&mut b, 1, vec![cv(2, &[(3, 8)])]);
    assert_eq!(drain(&mut b, 1), [] as [u64; 0]);
    cvs_frame(&mut b, 2, vec![cv(1, &[(3, 8)])]);
    assert_eq!(drain(&mut b, 2), [10]);
}

/// §4.4.1: the commit vectors of the packet's own frame count: they are known before release.
#[test]
fn own_frame_cvs_count() {
    let mut b = ch_rec();
    let m = encode(vec![log(2, U, &[(1, 0)])], vec![cv(2, &[(1, 1)])]);
    b.handle_frame(0, &view(&m), Some(pkt(1, 10))).unwrap();
    assert_eq!(drain(&mut b, 0), [10]);
}

/// §4.4.1 / DESIGN §7: per-flow order: a ready packet waits behind an earlier held packet of its
/// flow; a packet of another flow passes.
#[test]
fn per_flow_order_and_other_flows_pass() {
    let mut b = ch_rec();
    data(&mut b, 0, vec![log(2, U, &[(1, 0)])], pkt(1, 10));
    data(&mut b, 1, vec![], pkt(1, 11));
    data(&mut b, 2, vec![log(2, U, &[(2, 0)])], pkt(1, 12));
    data(&mut b, 3, vec![], pkt(2, 20));
    assert_eq!(drain(&mut b, 3), [20]);
    // 12's log is covered first, but it is behind 10 and 11.
    cvs_frame(&mut b, 4, vec![cv(2, &[(2, 1)])]);
    assert_eq!(drain(&mut b, 4), [] as [u64; 0]);
    cvs_frame(&mut b, 5, vec![cv(2, &[(1, 1)])]);
    assert_eq!(drain(&mut b, 5), [10, 11, 12]);
    assert_eq!(b.stats().held_packets, 0);
    // A new packet of flow 1 with nothing to wait for now leaves at once.
    data(&mut b, 6, vec![], pkt(1, 13));
    assert_eq!(drain(&mut b, 6), [13]);
}

/// §4.4.1: a ready packet not yet polled still orders its flow: the next one queues behind it.
#[test]
fn ready_but_unpolled_keeps_order() {
    let mut b = ch_rec();
    data(&mut b, 0, vec![log(2, U, &[(1, 0)])], pkt(1, 10));
    cvs_frame(&mut b, 1, vec![cv(2, &[(1, 1)])]);
    data(&mut b, 2, vec![], pkt(1, 11));
    assert_eq!(drain(&mut b, 2), [10, 11]);
}

/// §4.4.1: propagating frames carry commit vectors on an idle chain and release packets;
/// vectors that arrive duplicated or out of order never move backwards, so they neither release
/// early nor un-release.
#[test]
fn propagating_cvs_release_and_stale_cvs_are_harmless() {
    let mut b = ch_rec();
    data(&mut b, 0, vec![log(2, U, &[(0, 5)])], pkt(1, 10));
    data(&mut b, 0, vec![log(2, U, &[(0, 6)])], pkt(2, 20));
    cvs_frame(&mut b, 1, vec![cv(2, &[(0, 6)])]);
    assert_eq!(drain(&mut b, 1), [10]);
    // Duplicated and older vectors: nothing moves, nothing more is released.
    cvs_frame(&mut b, 2, vec![cv(2, &[(0, 6)])]);
    cvs_frame(&mut b, 3, vec![cv(2, &[(0, 2)])]);
    assert_eq!(drain(&mut b, 3), [] as [u64; 0]);
    assert_eq!(
        b.commit_vector(MbIndex(2)).unwrap().get(Partition(0)),
        Some(Seq(6))
    );
    assert_eq!(b.stats().released, 1);
    cvs_frame(&mut b, 4, vec![cv(2, &[(0, 7)])]);
    assert_eq!(drain(&mut b, 4), [20]);
    assert_eq!(b.stats().propagating_frames, 4);
}

/// docs/protocol.md step 4: server n−1's replica strips CV(j) when t(j) = 0, so the buffer takes
/// commit vectors from the incoming message too.
#[test]
fn incoming_cvs_release() {
    let mut b = ch_rec();
    data(&mut b, 0, vec![log(2, U, &[(0, 0)])], pkt(1, 10));
    let m = encode(vec![], vec![cv(2, &[(0, 1)])]);
    b.handle_incoming_cvs(&view(&m));
    assert_eq!(drain(&mut b, 0), [10]);
    // Merged only: not queued for the return path.
    let mut out = [0u8; 256];
    let m = b.poll_return(0, &mut out).unwrap().unwrap();
    let repr = MessageRepr::parse(&MessageView::new_checked(&out[..m]).unwrap());
    assert!(repr.cvs.is_empty() && repr.logs.len() == 1);
}

/// §4.4.1 (bounded buffer, DESIGN §6's back-pressure): at the bound the packet is handed back
/// whole, but its message's commit vectors are merged (freeing held packets) and its logs go
/// back to the forwarder; once retried and covered, nothing is lost.
#[test]
fn back_pressure_refuses_but_merges_and_returns() {
    let config = BufferConfig {
        max_held_packets: 2,
        max_held_bytes: 1000,
        ..BufferConfig::default()
    };
    let mut b: Buffer<u64> = Buffer::new(Ring::new(3, 1).unwrap(), P, config);
    data(&mut b, 0, vec![log(2, U, &[(0, 0)])], pkt(1, 10));
    data(&mut b, 0, vec![log(2, U, &[(0, 1)])], pkt(2, 20));
    let third = encode(vec![log(2, U, &[(0, 2)])], vec![cv(2, &[(0, 1)])]);
    let err = b
        .handle_frame(1, &view(&third), Some(pkt(3, 30)))
        .unwrap_err();
    assert_eq!(err, Refused(pkt(3, 30)));
    assert_eq!(b.stats().refused, 1);
    // Its CV freed packet 10 …
    assert_eq!(drain(&mut b, 1), [10]);
    // … and its log went to the return path with the others, its CV too.
    let mut out = [0u8; 512];
    let n = b.poll_return(0, &mut out).unwrap().unwrap();
    let repr = MessageRepr::parse(&MessageView::new_checked(&out[..n]).unwrap());
    let seqs: Vec<u64> = repr.logs.iter().map(|l| l.deps[0].seq.0).collect();
    assert_eq!(seqs, [0, 1, 2]);
    assert_eq!(repr.cvs, vec![cv(2, &[(0, 1)])]);
    assert_eq!(b.poll_return(0, &mut out), Ok(None));
    // Retried: taken now, its log not queued again.
    b.retry(2, &view(&third), err.0).unwrap();
    assert_eq!(b.poll_return(0, &mut out), Ok(None));
    cvs_frame(&mut b, 3, vec![cv(2, &[(0, 3)])]);
    assert_eq!(drain(&mut b, 3), [20, 30]);
    let s = b.stats();
    assert_eq!(
        (s.accepted, s.released, s.held_packets, s.held_bytes),
        (3, 3, 0, 0)
    );
}

/// The byte bound refuses like the packet bound.
#[test]
fn byte_bound_refuses() {
    let config = BufferConfig {
        max_held_packets: 100,
        max_held_bytes: 250,
        ..BufferConfig::default()
    };
    let mut b: Buffer<u64> = Buffer::new(Ring::new(3, 1).unwrap(), P, config);
    data(&mut b, 0, vec![log(2, U, &[(0, 0)])], pkt(1, 10));
    data(&mut b, 0, vec![log(2, U, &[(0, 1)])], pkt(2, 20));
    let m = encode(vec![], vec![]);
    assert!(b.handle_frame(0, &view(&m), Some(pkt(3, 30))).is_err());
    let small = Packet {
        flow: 4,
        len: 50,
        handle: 40,
    };
    b.handle_frame(0, &view(&m), Some(small)).unwrap();
    assert_eq!(b.stats().held_bytes, 250);
    assert_eq!(drain(&mut b, 0), [40]);
}

/// Bounds below one packet cannot stall the chain: an empty buffer takes any packet, however
/// large, and a bound of no packets at all holds one.
#[test]
fn an_empty_buffer_takes_a_packet_beyond_its_bounds() {
    let config = BufferConfig {
        max_held_packets: 0,
        max_held_bytes: 50,
        ..BufferConfig::default()
    };
    let mut b: Buffer<u64> = Buffer::new(Ring::new(3, 1).unwrap(), P, config);
    data(&mut b, 0, vec![log(2, U, &[(0, 0)])], pkt(1, 10));
    let empty = encode(vec![], vec![]);
    let refused = b
        .handle_frame(0, &view(&empty), Some(pkt(2, 20)))
        .unwrap_err();
    cvs_frame(&mut b, 1, vec![cv(2, &[(0, 1)])]);
    assert_eq!(drain(&mut b, 1), [10]);
    b.retry(2, &view(&empty), refused.0).unwrap();
    assert_eq!(drain(&mut b, 2), [20]);
}

/// DESIGN §7 per-flow order under back-pressure: while a flow has a refused packet outstanding,
/// its later packets are refused too (even with room), so none overtakes it; other flows pass.
#[test]
fn refused_packet_is_not_overtaken_by_its_flow() {
    let config = BufferConfig {
        max_held_packets: 1,
        max_held_bytes: 1000,
        ..BufferConfig::default()
    };
    let mut b: Buffer<u64> = Buffer::new(Ring::new(3, 1).unwrap(), P, config);
    data(&mut b, 0, vec![log(2, U, &[(0, 0)])], pkt(1, 10));
    let empty = encode(vec![], vec![]);
    let a = b
        .handle_frame(0, &view(&empty), Some(pkt(2, 20)))
        .unwrap_err();
    cvs_frame(&mut b, 1, vec![cv(2, &[(0, 1)])]);
    assert_eq!(drain(&mut b, 1), [10]);
    // Room now, but flow 2 has a refused packet: 21 is refused; flow 3 passes.
    let c = b
        .handle_frame(1, &view(&empty), Some(pkt(2, 21)))
        .unwrap_err();
    b.handle_frame(1, &view(&empty), Some(pkt(3, 30))).unwrap();
    assert_eq!(drain(&mut b, 1), [30]);
    b.retry(2, &view(&empty), a.0).unwrap();
    assert_eq!(drain(&mut b, 2), [20]);
    b.retry(2, &view(&empty), c.0).unwrap();
    assert_eq!(drain(&mut b, 2), [21]);
    data(&mut b, 3, vec![], pkt(2, 22));
    assert_eq!(drain(&mut b, 3), [22]);
}

/// §4.4.1 return path: the wrapped logs of many frames come back to the forwarder in order, the
/// commit vectors coalesced, each message within `out`, none lost; non-wrapping logs and
/// foreign middleboxes are not returned.
#[test]
fn return_path_in_order_coalesced_within_budget() {
    let mut b = ch_rec();
    for i in 0..40u64 {
        let logs = vec![log(2, U, &[(0, i)]), log(0, U, &[(1, i)])];
        let cvs = vec![
            cv(2, &[(0, i), (2, 40 - i)]),
            cv(1, &[(3, i)]),
            cv(9, &[(0, 1)]),
        ];
        let m = encode(logs, cvs);
        b.handle_frame(i, &view(&m), None).unwrap();
    }
    assert_eq!(b.stats().non_wrapping_logs, 40);
    assert_eq!(b.stats().foreign_middlebox, 40);
    let mut seqs = Vec::new();
    let mut cvs = Oracle::new(Ring::new(3, 1).unwrap(), P as usize);
    let mut out = [0u8; 96];
    let mut messages = 0;
    while let Some(n) = b.poll_return(0, &mut out).unwrap() {
        assert!(n <= out.len());
        messages += 1;
        let m = MessageView::new_checked(&out[..n]).unwrap();
        for l in m.logs() {
            assert_eq!(l.middlebox(), 2);
            seqs.push(l.deps().next().unwrap().seq.0);
        }
        cvs.saw(&m);
        assert!(messages < 100, "poll_return must make progress");
    }
    assert!(messages > 1);
    assert_eq!(seqs, (0..40).collect::<Vec<_>>());
    // The coalesced vectors reach the maxima: CV(2) = {0: 39, 2: 40}, CV(1) = {3: 39}.
    let probe = encode(
        vec![log(2, R, &[(0, 39), (2, 40)]), log(1, R, &[(3, 39)])],
        vec![],
    );
    assert!(cvs.check_release(&view(&probe)).is_ok());
    assert_eq!(b.stats().return_messages, messages);
    assert!(b.poll_return(0, &mut out).unwrap().is_none());
}

/// A return buffer too small for the next log is an error, not a silent loss or a livelock.
#[test]
fn return_buffer_too_small() {
    let mut b = ch_rec();
    data(&mut b, 0, vec![log(2, U, &[(0, 0)])], pkt(1, 10));
    let mut tiny = [0u8; 10];
    assert_eq!(b.poll_return(0, &mut tiny), Err(WireError::NoRoom));
    let mut out = [0u8; 128];
    assert!(b.poll_return(0, &mut out).unwrap().is_some());
}

/// Stats: hold times from acceptance to release, and the mean.
#[test]
fn hold_time_stats() {
    let mut b = ch_rec();
    data(&mut b, 100, vec![log(2, U, &[(0, 0)])], pkt(1, 10));
    data(&mut b, 200, vec![], pkt(2, 20));
    let r = b.poll_release(250).unwrap();
    assert_eq!((r.handle, r.hold_ns, r.flow, r.len), (20, 50, 2, 100));
    cvs_frame(&mut b, 300, vec![cv(2, &[(0, 1)])]);
    assert_eq!(b.poll_release(350).unwrap().hold_ns, 250);
    let s = b.stats();
    assert_eq!(
        (s.total_hold_ns, s.max_hold_ns, s.mean_hold_ns()),
        (300, 250, 150)
    );
    assert_eq!(s.max_held_packets, 2);
}

/// §4.4.1 output commit cannot be proved for a dependency outside the partitions: the packet
/// is held for good (and counted), its flow behind it; other flows are unaffected.
#[test]
fn uncoverable_dependency_is_held() {
    let mut b = ch_rec();
    data(&mut b, 0, vec![log(2, U, &[(0, 0), (9, 0)])], pkt(1, 10));
    data(&mut b, 0, vec![], pkt(1, 11));
    cvs_frame(&mut b, 1, vec![cv(2, &[(0, 5), (9, 5)])]);
    data(&mut b, 2, vec![], pkt(2, 20));
    assert_eq!(drain(&mut b, 2), [20]);
    assert_eq!(b.stats().uncoverable_deps, 1);
    assert_eq!(b.stats().held_packets, 2);
    // A read-only log of a wrapping group is held for good alike, and counted alike.
    data(&mut b, 3, vec![log(2, R, &[(9, 0)])], pkt(3, 30));
    assert_eq!(drain(&mut b, 3), [] as [u64; 0]);
    assert_eq!(b.stats().uncoverable_deps, 2);
    assert_eq!(b.stats().held_packets, 3);
}

/// The output-commit checker used by the property test flags a release that breaks §4.4.1: a
/// release rule that took CV[p] ≥ D[p] for updates would be caught.
#[test]
fn checker_flags_a_violating_release() {
    let ring = Ring::new(3, 1).unwrap();
    let mut oracle = Oracle::new(ring, P as usize);
    let frame = encode(vec![log(2, U, &[(1, 4)])], vec![]);
    assert!(oracle.check_release(&view(&frame)).is_err(), "no CV at all");
    oracle.saw(&view(&encode(vec![], vec![cv(2, &[(1, 4)])])));
    let err = oracle.check_release(&view(&frame)).unwrap_err();
    assert!(err.contains("CV(m2)"), "{err}");
    // Read-only at D[p] and logs of non-wrapping groups are fine.
    let ok = encode(vec![log(2, R, &[(1, 4)]), log(0, U, &[(0, 9)])], vec![]);
    assert!(oracle.check_release(&view(&ok)).is_ok());
    oracle.saw(&view(&encode(vec![], vec![cv(2, &[(1, 5)])])));
    assert!(oracle.check_release(&view(&frame)).is_ok());
}

/// A packet held past the stall timeout (its commit vector lost on the way, or never sent to a
/// buffer that a recovery replaced) makes the buffer ask the tails to announce again, once per
/// timeout; a buffer holding nothing never asks.
#[test]
fn a_stalled_packet_asks_for_announcements_once_per_timeout() {
    let t = BufferConfig::DEFAULT_STALL_TIMEOUT_NS;
    let mut b = ch_rec();
    assert_eq!(b.poll_timeout(), None);
    assert!(!b.poll_announce_request(10 * t));
    data(&mut b, 100, vec![log(2, U, &[(0, 0)])], pkt(1, 10));
    assert_eq!(b.poll_timeout(), Some(100 + t));
    assert!(!b.poll_announce_request(99 + t));
    assert!(b.poll_announce_request(100 + t));
    assert!(!b.poll_announce_request(101 + t), "asked already");
    assert_eq!(b.poll_timeout(), Some(100 + 2 * t));
    assert!(b.poll_announce_request(100 + 2 * t));
    assert_eq!(b.stats().announce_requests, 2);
    cvs_frame(&mut b, 100 + 2 * t, vec![cv(2, &[(0, 1)])]);
    assert_eq!(drain(&mut b, 100 + 2 * t), [10]);
    assert_eq!(b.poll_timeout(), None);
}

/// The stall timer follows the oldest packet still held, whatever order packets of different
/// flows leave in, and slots reused by later packets do not confuse it.
#[test]
fn the_stall_timer_follows_the_oldest_held_packet() {
    let t = BufferConfig::DEFAULT_STALL_TIMEOUT_NS;
    let mut b = ch_rec();
    data(&mut b, 100, vec![log(2, U, &[(0, 0)])], pkt(1, 10));
    data(&mut b, 200, vec![log(2, U, &[(1, 0)])], pkt(2, 20));
    data(&mut b, 300, vec![log(2, U, &[(2, 0)])], pkt(3, 30));
    assert_eq!(b.poll_timeout(), Some(100 + t));
    // The middle one leaves first: the oldest is still the first.
    cvs_frame(&mut b, 400, vec![cv(2, &[(1, 1)])]);
    assert_eq!(drain(&mut b, 400), [20]);
    assert_eq!(b.poll_timeout(), Some(100 + t));
    // A new packet takes the freed slot; then the first leaves: the oldest is the third.
    data(&mut b, 500, vec![log(2, U, &[(3, 0)])], pkt(4, 40));
    cvs_frame(&mut b, 600, vec![cv(2, &[(0, 1)])]);
    assert_eq!(drain(&mut b, 600), [10]);
    assert_eq!(b.poll_timeout(), Some(300 + t));
    cvs_frame(&mut b, 700, vec![cv(2, &[(2, 1), (3, 1)])]);
    assert_eq!(drain(&mut b, 700), [30, 40]);
    assert_eq!(b.poll_timeout(), None);
}
