//! The replica core against the thesis: §4.3.1 (chain replication of one middlebox's logs,
//! retransmission), §4.3.3 (dependency vectors: hold until earlier logs arrive), §4.4.1 (the tail
//! strips its group's log and announces its commit vector; commit vectors prune retained logs).

use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_chain::wire::{MessageRepr, MessageView, MessageWriter};
use ftc_replica::{
    Admit, ParkedLogs, Replica, ReplicaConfig, Wait, ANSWER_LOGS, FLAG_RESENT,
    FLAG_RETRANSMIT_REQUEST,
};
use ftc_stm::{DepEntry, LogKind, LogSource, Seq, Store, Worker};

const P: u32 = 8;
const BUDGET: usize = 2048;

fn config() -> ReplicaConfig {
    ReplicaConfig {
        hold_timeout_ns: 1_000,
        resend_timeout_ns: 5_000,
        // Every frame announces (the lazy interval has tests of its own).
        lazy_announce_ns: 0,
        // Commit vectors only ride on frames (the direct path has a test of its own).
        direct_commit_vectors: false,
    }
}

fn replicas(ring: Ring) -> Vec<Replica> {
    ring.server_ids()
        .map(|s| Replica::new(ring, s, P, config()).unwrap())
        .collect()
}

fn empty() -> Vec<u8> {
    let mut buf = vec![0; 16];
    let len = MessageWriter::new(&mut buf, 0).unwrap().finish();
    buf.truncate(len);
    buf
}

/// Server `s` handles `msg` and, when ready, builds its outgoing message with `own` as its log.
fn hop(
    r: &mut Replica,
    now: u64,
    msg: &[u8],
    own: Option<&ftc_stm::CommitRecord<'_>>,
) -> Option<Vec<u8>> {
    let view = MessageView::new_checked(msg).unwrap();
    match r.handle_message(now, &view).unwrap() {
        Admit::Hold { .. } => None,
        Admit::Ready => {
            let mut out = vec![0; BUDGET];
            let len = r
                .build_message(now, &view, own, &mut out, BUDGET)
                .unwrap()
                .len();
            out.truncate(len);
            Some(out)
        }
    }
}

fn write<'w>(w: &'w mut Worker<'_>, key: &[u8], value: u8) -> ftc_stm::CommitRecord<'w> {
    w.run(|tx| tx.write(key, &[value])).1
}

fn repr(msg: &[u8]) -> MessageRepr {
    MessageRepr::parse(&MessageView::new_checked(msg).unwrap())
}

/// §4.4.1 on a chain of two (f = 1): server 1 applies m0's log, strips it as the tail of G(0)
/// and announces CV(0); server 0 consumes CV(0) as the last member that needs it.
#[test]
fn tail_applies_strips_and_announces_its_commit_vector() {
    let ring = Ring::new(2, 1).unwrap();
    let mut rs = replicas(ring);
    let head0 = Store::new(P, 1).unwrap();
    let mut w0 = head0.worker(0).unwrap();

    let rec = write(&mut w0, b"a", 1);
    let m1 = hop(&mut rs[0], 0, &empty(), Some(&rec)).unwrap();
    assert_eq!(repr(&m1).logs.len(), 1);
    let m2 = hop(&mut rs[1], 0, &m1, None::<&ftc_stm::CommitRecord<'_>>).unwrap();
    let r2 = repr(&m2);
    assert!(r2.logs.is_empty(), "the tail strips its group's log");
    assert_eq!(r2.cvs.len(), 1);
    assert_eq!(r2.cvs[0].middlebox, 0);
    assert_eq!(rs[1].store(MbIndex(0)).unwrap().to_map(), head0.to_map());
    assert_eq!(rs[1].stats().stripped, 1);
    // The head retained its log until CV(0) came back round.
    assert_eq!(rs[0].retained().0, 1);
    let m3 = hop(&mut rs[0], 0, &m2, None::<&ftc_stm::CommitRecord<'_>>).unwrap();
    assert_eq!(
        rs[0].retained().0,
        0,
        "CV(0) pruned the head's retained log"
    );
    assert!(
        repr(&m3).cvs.is_empty(),
        "server 0 is the last member that needs CV(0)"
    );
}

/// On a chain of three (f = 1) the tail of the wrapping group G(2), server 0, sends CV(2) straight
/// back to the buffer's server 2 as well as along with the frame (which reaches it only through
/// server 1): packets wait at the buffer for it. One frame per batch of announcements. On a
/// chain of two, frames from server 0 go to the buffer's server next anyway: no direct frame.
#[test]
fn the_tail_after_the_buffer_sends_wrapping_commit_vectors_straight_back() {
    let ring = Ring::new(3, 1).unwrap();
    let config = ReplicaConfig {
        direct_commit_vectors: true,
        ..config()
    };
    let mut r0 = Replica::new(ring, ServerId(0), P, config).unwrap();
    let mut r2 = Replica::new(ring, ServerId(2), P, config).unwrap();
    let head2 = Store::new(P, 1).unwrap();
    let mut w2 = head2.worker(0).unwrap();
    let mut sent = Vec::new();
    for value in 1..=2 {
        let rec = write(&mut w2, b"w", value);
        // The head's frame; the buffer returns its log to the forwarder, which attaches it to a
        // frame entering server 0.
        sent.push(hop(&mut r2, 0, &empty(), Some(&rec)).unwrap());
    }
    for msg in &sent {
        let out = hop(&mut r0, 10, msg, None::<&ftc_stm::CommitRecord<'_>>).unwrap();
        let along = repr(&out);
        assert!(along.logs.is_empty(), "the tail strips G(2)'s log");
        assert_eq!(along.cvs.len(), 1, "CV(2) still rides along");
    }
    assert_eq!(r0.store(MbIndex(2)).unwrap().to_map(), head2.to_map());
    assert_eq!(r0.poll_timeout(), Some(0));
    let mut out = vec![0; BUDGET];
    let t = r0
        .poll_transmit(10, &mut out)
        .unwrap()
        .expect("a direct frame");
    assert_eq!((t.to, t.flags), (ServerId(2), 0));
    let frame = out[..t.len].to_vec();
    let direct = repr(&frame);
    assert!(direct.logs.is_empty());
    assert_eq!(direct.cvs.len(), 1);
    assert_eq!(direct.cvs[0].middlebox, 2);
    let partition = direct.cvs[0].entries[0].partition;
    assert_eq!(
        direct.cvs[0].entries,
        [DepEntry {
            partition,
            seq: Seq(2),
        }],
        "both announcements in one frame, at the newest"
    );
    assert_eq!(r0.stats().direct_commit_vectors, 1);
    assert_eq!(r0.poll_transmit(10, &mut out).unwrap(), None);
    // The buffer's server takes it as any frame: its head prunes what CV(2) covers.
    assert_eq!(r2.retained().0, 2);
    hop(&mut r2, 20, &frame, None::<&ftc_stm::CommitRecord<'_>>).unwrap();
    assert_eq!(r2.retained().0, 0, "CV(2) pruned the head's retained logs");

    // A chain of two: none.
    let ring = Ring::new(2, 1).unwrap();
    let mut r0 = Replica::new(ring, ServerId(0), P, config).unwrap();
    let head1 = Store::new(P, 1).unwrap();
    let mut w1 = head1.worker(0).unwrap();
    let mut r1 = Replica::new(ring, ServerId(1), P, config).unwrap();
    let msg = hop(&mut r1, 0, &empty(), Some(&write(&mut w1, b"w", 1))).unwrap();
    hop(&mut r0, 10, &msg, None::<&ftc_stm::CommitRecord<'_>>).unwrap();
    assert_eq!(r0.poll_timeout(), None);
    assert_eq!(r0.stats().direct_commit_vectors, 0);
}

/// A hold names what it waits for: the partition of the missing log and the sequence MAX must
/// reach there, which [`Replica::max_at`] shows once the gap closed.
#[test]
fn a_hold_says_what_it_waits_for() {
    let ring = Ring::new(2, 1).unwrap();
    let mut rs = replicas(ring);
    let head0 = Store::new(P, 1).unwrap();
    let mut w0 = head0.worker(0).unwrap();
    let mut sent = |rs: &mut Vec<Replica>| {
        let rec = write(&mut w0, b"k", 1);
        let partition = rec.deps().next().unwrap().partition;
        (hop(&mut rs[0], 0, &empty(), Some(&rec)).unwrap(), partition)
    };
    let (first, partition) = sent(&mut rs);
    let (second, _) = sent(&mut rs);
    let view = MessageView::new_checked(&second).unwrap();
    let wait = Wait {
        middlebox: MbIndex(0),
        partition,
        seq: Seq(1),
    };
    let Admit::Hold(waits) = rs[1].handle_message(0, &view).unwrap() else {
        panic!("held");
    };
    assert_eq!(waits.iter().collect::<Vec<_>>(), [&wait]);
    assert_eq!(rs[1].max_at(MbIndex(0), partition), Some(Seq(0)));
    hop(&mut rs[1], 0, &first, None::<&ftc_stm::CommitRecord<'_>>).unwrap();
    assert_eq!(rs[1].max_at(MbIndex(0), partition), Some(Seq(1)), "reached");
    assert_eq!(rs[1].handle_message(0, &view).unwrap(), Admit::Ready);
}

/// §4.3.3: a log that arrives before an earlier one of its partitions is held; once the earlier
/// one is applied the held frame goes through, and the replica equals the head.
#[test]
fn out_of_order_logs_are_held_until_the_gap_closes() {
    let ring = Ring::new(2, 1).unwrap();
    let mut rs = replicas(ring);
    let head0 = Store::new(P, 1).unwrap();
    let mut w0 = head0.worker(0).unwrap();
    let first = {
        let rec = write(&mut w0, b"k", 1);
        hop(&mut rs[0], 0, &empty(), Some(&rec)).unwrap()
    };
    let second = {
        let rec = write(&mut w0, b"k", 2);
        hop(&mut rs[0], 0, &empty(), Some(&rec)).unwrap()
    };
    assert!(
        hop(&mut rs[1], 0, &second, None::<&ftc_stm::CommitRecord<'_>>).is_none(),
        "held"
    );
    assert!(hop(&mut rs[1], 0, &first, None::<&ftc_stm::CommitRecord<'_>>).is_some());
    assert!(
        hop(&mut rs[1], 0, &second, None::<&ftc_stm::CommitRecord<'_>>).is_some(),
        "released after the gap closed"
    );
    // Delivered again: a duplicate, harmless.
    assert!(hop(&mut rs[1], 0, &first, None::<&ftc_stm::CommitRecord<'_>>).is_some());
    assert_eq!(rs[1].stats().duplicates, 1);
    assert_eq!(rs[1].store(MbIndex(0)).unwrap().to_map(), head0.to_map());
}

/// §4.3.1: a replica whose frame waits too long for a missing log asks its predecessor, which
/// answers from its retained logs; the requester applies them and the held frame goes through.
/// The request names the gap, from MAX up to the log the held frame carries: that one is not
/// sent again.
/// Here k = 1, f = 2: server 0 heads G(0), server 1 is a middle member, server 2 the tail.
#[test]
fn a_held_frame_triggers_a_retransmission_from_the_predecessor() {
    let ring = Ring::new(1, 2).unwrap();
    let mut rs = replicas(ring);
    let head0 = Store::new(P, 1).unwrap();
    let mut w0 = head0.worker(0).unwrap();
    let none = None::<&ftc_stm::CommitRecord<'_>>;
    let lost = {
        let rec = write(&mut w0, b"k", 1);
        let m = hop(&mut rs[0], 0, &empty(), Some(&rec)).unwrap();
        hop(&mut rs[1], 0, &m, none).unwrap()
    };
    let later = {
        let rec = write(&mut w0, b"k", 2);
        let m = hop(&mut rs[0], 10, &empty(), Some(&rec)).unwrap();
        hop(&mut rs[1], 10, &m, none).unwrap()
    };
    drop(lost); // the frame from server 1 to server 2 is lost
    assert!(
        hop(&mut rs[2], 20, &later, none).is_none(),
        "held: an earlier log of its partition is missing"
    );
    let mut out = vec![0; BUDGET];
    assert_eq!(
        rs[2].poll_transmit(500, &mut out).unwrap(),
        None,
        "not before the hold timeout"
    );
    let t = rs[2]
        .poll_transmit(1_020, &mut out)
        .unwrap()
        .expect("a retransmission request");
    assert_eq!((t.to, t.flags), (ServerId(1), FLAG_RETRANSMIT_REQUEST));
    let request = out[..t.len].to_vec();
    rs[1].handle_retransmit_request(
        1_025,
        ServerId(2),
        &MessageView::new_checked(&request).unwrap(),
    );
    // The same request again before the answer left queues nothing twice.
    rs[1].handle_retransmit_request(
        1_025,
        ServerId(2),
        &MessageView::new_checked(&request).unwrap(),
    );
    assert_eq!(
        (
            rs[1].stats().requests_answered,
            rs[1].stats().requests_deferred
        ),
        (1, 1)
    );
    let t = rs[1]
        .poll_transmit(1_030, &mut out)
        .unwrap()
        .expect("the answer");
    assert_eq!((t.to, t.flags), (ServerId(2), 0));
    let answer = out[..t.len].to_vec();
    assert_eq!(
        repr(&answer).logs.len(),
        1,
        "only the log in the gap: the tail holds the later one already"
    );
    assert_eq!(rs[1].poll_transmit(1_030, &mut out).unwrap(), None, "once");
    // Asked again while the answer may still be on its way (within the resend timeout): the
    // log it carried is not sent again; asked after that, it is.
    let again = |rs: &mut Vec<Replica>, now: u64, out: &mut Vec<u8>| {
        rs[1].handle_retransmit_request(
            now,
            ServerId(2),
            &MessageView::new_checked(&request).unwrap(),
        );
        rs[1]
            .poll_transmit(now, out)
            .unwrap()
            .map(|t| repr(&out[..t.len]).logs.len())
    };
    assert_eq!(again(&mut rs, 1_035, &mut out), None, "answered just now");
    let timeout = config().resend_timeout_ns;
    assert_eq!(again(&mut rs, 1_025 + timeout, &mut out), Some(1));
    assert!(hop(&mut rs[2], 1_040, &answer, none).is_some());
    assert!(
        hop(&mut rs[2], 1_050, &later, none).is_some(),
        "the held frame goes through"
    );
    assert_eq!(rs[2].store(MbIndex(0)).unwrap().to_map(), head0.to_map());
}

/// Server 1 of a group of three (ring of one middlebox, f = 2) sends its retained log again at
/// `due` and not before: what it sent, to server 2.
fn resent_at(r: &mut Replica, due: u64) -> Vec<u8> {
    let mut out = vec![0; BUDGET];
    assert_eq!(r.poll_timeout(), Some(due));
    assert_eq!(r.poll_transmit(due - 1, &mut out).unwrap(), None);
    let t = r.poll_transmit(due, &mut out).unwrap().expect("a resend");
    assert_eq!(t.to, ServerId(2));
    out.truncate(t.len);
    out
}

/// §4.3.1: when a group's last log is lost nothing later reveals the gap; the member that
/// retained it sends it again after the resend timeout, until a commit vector covers it.
#[test]
fn an_uncovered_retained_log_is_resent() {
    let mut rs = replicas(Ring::new(1, 2).unwrap());
    let head0 = Store::new(P, 1).unwrap();
    let mut w0 = head0.worker(0).unwrap();
    let none = None::<&ftc_stm::CommitRecord<'_>>;
    let rec = write(&mut w0, b"k", 1);
    let m = hop(&mut rs[0], 0, &empty(), Some(&rec)).unwrap();
    let _lost = hop(&mut rs[1], 0, &m, none).unwrap();
    let resent = resent_at(&mut rs[1], 5_000);
    let to_head = hop(&mut rs[2], 5_001, &resent, none).unwrap();
    assert_eq!(rs[2].store(MbIndex(0)).unwrap().to_map(), head0.to_map());
    // CV(0) goes 2 → 0 → 1 and prunes both retained copies.
    let at1 = hop(&mut rs[0], 5_002, &to_head, none).unwrap();
    hop(&mut rs[1], 5_003, &at1, none).unwrap();
    assert_eq!(rs[0].retained().0 + rs[1].retained().0, 0);
    assert_eq!(rs[1].poll_timeout(), None);

    // §4.3.1 under load: the resend timeout follows how long commit vectors take to cover the
    // member's logs (RFC 6298's estimator, never below `resend_timeout`), and each round of
    // resends doubles it until a commit vector times a log again: a fixed timeout shorter
    // than the commit vectors' round trip would resend every log. A fence forgets it all.
    // Log 2 is sent at 10 µs and covered at server 1 6 µs later (the floor is 5 µs).
    let rec = write(&mut w0, b"k", 2);
    let m = hop(&mut rs[0], 10_000, &empty(), Some(&rec)).unwrap();
    let m = hop(&mut rs[1], 10_000, &m, none).unwrap();
    let to_head = hop(&mut rs[2], 10_000, &m, none).unwrap();
    let at1 = hop(&mut rs[0], 16_000, &to_head, none).unwrap();
    hop(&mut rs[1], 16_000, &at1, none).unwrap();
    assert_eq!(rs[1].retained().0, 0);
    // Log 3 is lost after server 1: its resend waits 6 + 4 · 3 = 18 µs, not 5.
    let rec = write(&mut w0, b"k", 3);
    let m = hop(&mut rs[0], 40_000, &empty(), Some(&rec)).unwrap();
    let _lost = hop(&mut rs[1], 40_000, &m, none).unwrap();
    resent_at(&mut rs[1], 58_000);
    // That round doubled the timeout to 36 µs; the next doubling stops at 8 × 5 µs.
    resent_at(&mut rs[1], 94_000);
    assert_eq!(rs[1].poll_timeout(), Some(134_000));
    // A recovery's fence starts the timeout again from the floor.
    rs[1].fence();
    assert_eq!(rs[1].poll_timeout(), Some(99_000));
}

/// On a group of three (ring of one middlebox, f = 2): 200 logs of 40 bytes of value that
/// `head0` writes reach server 1 and are all lost after it.
fn lose_200_logs_after_server_1(rs: &mut [Replica], head0: &Store) {
    lose_logs_after_server_1(rs, head0, 200);
}

/// Server 0 writes `n` logs of one key; server 1 applies and forwards them; server 2 gets none.
fn lose_logs_after_server_1(rs: &mut [Replica], head0: &Store, n: usize) {
    let mut w0 = head0.worker(0).unwrap();
    for i in 0..n {
        let rec = w0.run(|tx| tx.write(b"k", &[i as u8; 40])).1;
        let m = hop(&mut rs[0], 0, &empty(), Some(&rec)).unwrap();
        let _lost = hop(&mut rs[1], 0, &m, None::<&ftc_stm::CommitRecord<'_>>).unwrap();
    }
}

/// After [`lose_logs_after_server_1`]: server 0 writes one more log at `now`, server 1 forwards
/// it, and server 2 holds its frame (it lacks the earlier ones): the frame.
fn held_at_server_2(rs: &mut [Replica], head0: &Store, now: u64) -> Vec<u8> {
    let none = None::<&ftc_stm::CommitRecord<'_>>;
    let mut w0 = head0.worker(0).unwrap();
    let rec = write(&mut w0, b"k", 7);
    let m = hop(&mut rs[0], now, &empty(), Some(&rec)).unwrap();
    let later = hop(&mut rs[1], now, &m, none).unwrap();
    assert!(hop(&mut rs[2], now, &later, none).is_none(), "held");
    later
}

/// An answer carries at most [`ANSWER_LOGS`] logs, the nearest to the requester's MAX first,
/// even when a resend round moved them to the back of the retained queue: the requester applies
/// each frame as it comes, and asks for the rest once it has. Answering every log it lacked at
/// each request sent a successor whose data path came back after a 15 s cut (262,144 logs
/// retained behind it in the lab) the same logs again and again while it still applied the
/// first answer: 8.5 million logs answered, 8.2 million of them duplicates.
#[test]
fn an_answer_carries_the_nearest_logs_first_and_no_more_than_answer_logs() {
    let mut rs = replicas(Ring::new(1, 2).unwrap());
    let head0 = Store::new(P, 1).unwrap();
    let none = None::<&ftc_stm::CommitRecord<'_>>;
    let lost = ANSWER_LOGS + 300;
    lose_logs_after_server_1(&mut rs, &head0, lost);
    // A resend round (lost too) moves the oldest logs to the back of server 1's queue.
    let resent = repr(&resent_at(&mut rs[1], 5_000)).logs.len();
    assert!(resent > 1);
    // A later frame reaches server 2, which holds it and asks for the gap a timeout later.
    let later = held_at_server_2(&mut rs, &head0, 5_100);
    let mut answers = Vec::new();
    let ask = |rs: &mut Vec<Replica>, now: u64, answers: &mut Vec<Vec<u8>>| {
        let mut out = vec![0; BUDGET];
        let t = rs[2]
            .poll_transmit(now, &mut out)
            .unwrap()
            .expect("a request");
        assert_eq!((t.to, t.flags), (ServerId(1), FLAG_RETRANSMIT_REQUEST));
        let request = out[..t.len].to_vec();
        rs[1].handle_retransmit_request(
            now,
            ServerId(2),
            &MessageView::new_checked(&request).unwrap(),
        );
        while let Some(t) = rs[1].poll_transmit(now, &mut out).unwrap() {
            assert_eq!((t.to, t.flags), (ServerId(2), 0));
            answers.push(out[..t.len].to_vec());
        }
    };
    ask(&mut rs, 6_100, &mut answers);
    let seqs: Vec<u64> = answers
        .iter()
        .flat_map(|a| repr(a).logs)
        .map(|l| l.deps[0].seq.0)
        .collect();
    assert_eq!(seqs.len(), ANSWER_LOGS, "the nearest only");
    assert_eq!(
        seqs,
        (0..ANSWER_LOGS as u64).collect::<Vec<_>>(),
        "in order"
    );
    for a in answers.drain(..) {
        assert!(
            hop(&mut rs[2], 6_200, &a, none).is_some(),
            "applied as it comes"
        );
    }
    // MAX moved, and the frame still waits: the rest is asked for a quarter timeout later.
    assert!(hop(&mut rs[2], 6_200, &later, none).is_none());
    ask(&mut rs, 6_450, &mut answers);
    let rest: usize = answers.iter().map(|a| repr(a).logs.len()).sum();
    assert_eq!(rest, lost - ANSWER_LOGS);
    for a in answers.drain(..) {
        assert!(hop(&mut rs[2], 6_500, &a, none).is_some());
    }
    assert!(
        hop(&mut rs[2], 6_500, &later, none).is_some(),
        "the held frame goes"
    );
    assert_eq!(rs[2].store(MbIndex(0)).unwrap().to_map(), head0.to_map());
}

/// No resend round starts within a resend timeout of an answer to the successor's request: the
/// answers bring it what it lacks, nearest first, and a round would send it the oldest logs
/// again (in the lab, a successor catching up with a backlog of 262,144 logs got up to 0.40
/// million twice with rounds going on beside the answers; without, at most 13,458).
#[test]
fn no_resend_round_starts_within_a_timeout_of_an_answer() {
    let mut rs = replicas(Ring::new(1, 2).unwrap());
    let head0 = Store::new(P, 1).unwrap();
    lose_200_logs_after_server_1(&mut rs, &head0);
    held_at_server_2(&mut rs, &head0, 3_000);
    let mut out = vec![0; BUDGET];
    let t = rs[2]
        .poll_transmit(4_000, &mut out)
        .unwrap()
        .expect("a request");
    let request = out[..t.len].to_vec();
    rs[1].handle_retransmit_request(
        4_000,
        ServerId(2),
        &MessageView::new_checked(&request).unwrap(),
    );
    while let Some(t) = rs[1].poll_transmit(4_000, &mut out).unwrap() {
        assert_eq!((t.to, t.flags), (ServerId(2), 0), "the answer");
    }
    // The 200 logs' resend was due at 5,000 (sent at 0): it waits for 4,000 + the timeout.
    assert_eq!(rs[1].poll_timeout(), Some(9_000));
    assert_eq!(rs[1].poll_transmit(5_000, &mut out).unwrap(), None);
    let t = rs[1]
        .poll_transmit(9_000, &mut out)
        .unwrap()
        .expect("a resend");
    assert_eq!((t.to, t.flags), (ServerId(2), FLAG_RESENT));
}

/// A round of resends sends what one frame holds; the rest waits a timeout. Resending every
/// uncovered log at once, frame after frame, flooded a successor slow to cover them (after a
/// recovery a replacement takes over its source's retained logs), which delayed the commit
/// vectors that would cover them, and more rounds followed.
#[test]
fn a_resend_round_sends_one_frame_and_the_rest_waits() {
    let mut rs = replicas(Ring::new(1, 2).unwrap());
    let head0 = Store::new(P, 1).unwrap();
    lose_200_logs_after_server_1(&mut rs, &head0);
    assert_eq!(rs[1].retained().0, 200);
    let first = resent_at(&mut rs[1], 5_000);
    let logs = repr(&first).logs.len();
    assert!(logs > 1 && logs < 200, "{logs} logs in the first frame");
    // The others are due too, but wait for the next round: the doubled timeout.
    let mut out = vec![0; BUDGET];
    assert_eq!(rs[1].poll_transmit(5_000, &mut out).unwrap(), None);
    assert_eq!(rs[1].poll_timeout(), Some(15_000));
    let second = resent_at(&mut rs[1], 15_000);
    assert_eq!(repr(&second).logs.len(), logs, "the next frame's worth");
    assert_eq!(rs[1].stats().logs_resent, 2 * logs as u64);
}

/// A chain that lost many logs of a group in a failure and then went idle: no held frame asks
/// for them, so the resends bring them. A round's frame is flagged [`FLAG_RESENT`]: the member
/// that gets it lacking some of its logs asks its predecessor at once for everything else it
/// lacks, and one answer brings it all (a member that has them all asks for nothing). And once a commit vector covers a round's last log, the next round goes at
/// once (a frame per round trip, not per backed-off timeout).
#[test]
fn resent_logs_make_the_successor_ask_for_the_rest_and_covered_rounds_go_on_at_once() {
    let mut rs = replicas(Ring::new(1, 2).unwrap());
    let head0 = Store::new(P, 1).unwrap();
    let none = None::<&ftc_stm::CommitRecord<'_>>;
    lose_200_logs_after_server_1(&mut rs, &head0);
    let mut out = vec![0; BUDGET];
    let t = rs[1]
        .poll_transmit(5_000, &mut out)
        .unwrap()
        .expect("a resend");
    assert_eq!((t.to, t.flags), (ServerId(2), FLAG_RESENT));
    let first = out[..t.len].to_vec();
    let sent = repr(&first).logs.len();

    // Without asking: the tail applies the round and announces; once CV(0) covers the round's
    // last log at server 1, the next round is due at once, not at the doubled timeout.
    let mut idle = replicas(Ring::new(1, 2).unwrap());
    std::mem::swap(&mut idle[2], &mut rs[2]);
    let to_head = hop(&mut idle[2], 5_100, &first, none).unwrap();
    let at1 = hop(&mut rs[0], 5_200, &to_head, none).unwrap();
    hop(&mut rs[1], 5_300, &at1, none).unwrap();
    assert_eq!(rs[1].poll_timeout(), Some(5_000), "due at once");
    let t = rs[1]
        .poll_transmit(5_300, &mut out)
        .unwrap()
        .expect("the next round");
    assert_eq!(repr(&out[..t.len]).logs.len(), sent);

    // That tail has every log of the first round: the round again says only that a commit
    // vector was slow (the duplicates make it announce again), and it asks for nothing.
    let view = MessageView::new_checked(&first).unwrap();
    idle[2].resent_arrived(5_400, &view);
    assert_eq!(idle[2].handle_message(5_400, &view).unwrap(), Admit::Ready);
    while let Some(t) = idle[2].poll_transmit(5_400, &mut out).unwrap() {
        assert_eq!(
            (t.to, t.flags),
            (ServerId(0), 0),
            "an announcement, no request"
        );
    }

    // Asking: a fresh tail gets the first round's frame, flagged, and asks server 1 for the
    // rest at once; one answer brings every log it lacks.
    rs[2].resent_arrived(5_400, &view);
    assert_eq!(rs[2].handle_message(5_400, &view).unwrap(), Admit::Ready);
    let t = rs[2]
        .poll_transmit(5_400, &mut out)
        .unwrap()
        .expect("a request");
    assert_eq!((t.to, t.flags), (ServerId(1), FLAG_RETRANSMIT_REQUEST));
    let request = out[..t.len].to_vec();
    rs[1].handle_retransmit_request(
        5_450,
        ServerId(2),
        &MessageView::new_checked(&request).unwrap(),
    );
    let mut answers = Vec::new();
    while let Some(t) = rs[1].poll_transmit(5_500, &mut out).unwrap() {
        assert_eq!((t.to, t.flags), (ServerId(2), 0));
        answers.push(out[..t.len].to_vec());
    }
    // The answer brings the nearest logs first, whatever their place in the retained queue
    // (the first round's went to its back): each frame applies as it comes.
    for a in &answers {
        assert!(hop(&mut rs[2], 5_600, a, none).is_some());
    }
    assert_eq!(rs[2].store(MbIndex(0)).unwrap().vector(), head0.vector());
    assert_eq!(rs[2].store(MbIndex(0)).unwrap().to_map(), head0.to_map());
}

/// A packet's own logs stay with it whatever the budget: the buffer's release rule and the tails
/// rely on it. Logs the forwarder attached for other packets (groups whose tails come before
/// their heads) do not fit a small budget: they ride in propagating frames right behind.
#[test]
fn own_logs_stay_with_the_packet_and_other_logs_overflow() {
    let ring = Ring::new(3, 2).unwrap();
    let mut rs = replicas(ring);
    let head2 = Store::new(P, 1).unwrap();
    let mut w2 = head2.worker(0).unwrap();
    // A log of m2 on its way back round: head 2 → buffer (2) → forwarder → server 0 → tail 1.
    let returned = {
        let rec = w2.run(|tx| tx.write(b"big", &[7; 64])).1;
        assert_eq!(rec.kind(), LogKind::Update);
        hop(&mut rs[2], 0, &empty(), Some(&rec)).unwrap()
    };
    let head0 = Store::new(P, 1).unwrap();
    let mut w0 = head0.worker(0).unwrap();
    let rec = w0.run(|tx| tx.write(b"own", &[1; 64])).1;
    let view = MessageView::new_checked(&returned).unwrap();
    assert_eq!(rs[0].handle_message(0, &view).unwrap(), Admit::Ready);
    let mut out = vec![0; BUDGET];
    let len = rs[0]
        .build_message(0, &view, Some(&rec), &mut out, 16)
        .unwrap()
        .len();
    let sent = repr(&out[..len]);
    assert_eq!(
        sent.logs.iter().map(|l| l.middlebox).collect::<Vec<_>>(),
        vec![0],
        "own log kept, over budget"
    );
    assert_eq!(rs[0].stats().overflowed, 1);
    let t = rs[0]
        .poll_transmit(0, &mut out)
        .unwrap()
        .expect("overflow frame");
    assert_eq!(t.to, ServerId(1));
    assert_eq!(
        repr(&out[..t.len])
            .logs
            .iter()
            .map(|l| l.middlebox)
            .collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(rs[0].poll_transmit(0, &mut out).unwrap(), None);
    // Own logs that do not fit the frame at all are an error, not a silent drop.
    let mut tiny = vec![0; 16];
    assert_eq!(
        rs[0].build_message(0, &view, Some(&rec), &mut tiny, 16),
        Err(ftc_replica::ReplicaError::FrameFull)
    );
}

/// A predecessor that resends a log shows the tail's commit vector never reached it: the tail
/// announces those partitions again, though they did not move.
#[test]
fn a_duplicate_at_the_tail_makes_it_announce_again() {
    let ring = Ring::new(2, 1).unwrap();
    let mut rs = replicas(ring);
    let head0 = Store::new(P, 1).unwrap();
    let mut w0 = head0.worker(0).unwrap();
    let none = None::<&ftc_stm::CommitRecord<'_>>;
    let rec = write(&mut w0, b"k", 1);
    let m = hop(&mut rs[0], 0, &empty(), Some(&rec)).unwrap();
    assert_eq!(repr(&hop(&mut rs[1], 0, &m, none).unwrap()).cvs.len(), 1);
    assert!(
        repr(&hop(&mut rs[1], 0, &empty(), none).unwrap())
            .cvs
            .is_empty(),
        "nothing moved"
    );
    let again = repr(&hop(&mut rs[1], 0, &m, none).unwrap());
    assert_eq!(again.cvs.len(), 1, "announced again after the duplicate");
    assert_eq!(again.cvs[0].entries.len(), 1);
}

/// Two lanes of one server share its stores and parked logs (the thesis' worker threads, §4.3.3
/// with concurrent replicas): a log held by one lane is applied by the other as soon as the log
/// before it arrives there, without waiting for the first lane to look again, and retained once.
#[test]
fn a_lane_applies_the_logs_another_lane_holds() {
    let ring = Ring::new(1, 2).unwrap();
    let mut rs = replicas(ring);
    let store = std::sync::Arc::clone(rs[1].store(MbIndex(0)).unwrap());
    let mut lanes = [1, 1].map(|s| {
        Replica::with_stores(
            ring,
            ServerId(s),
            P,
            config(),
            vec![(MbIndex(0), std::sync::Arc::clone(&store))],
        )
    });
    let parked = std::sync::Arc::new(ParkedLogs::default());
    for lane in &mut lanes {
        lane.share_parked(std::sync::Arc::clone(&parked));
    }
    let head0 = Store::new(P, 1).unwrap();
    let mut w0 = head0.worker(0).unwrap();
    let msgs: Vec<Vec<u8>> = (1..=3)
        .map(|v| {
            let rec = write(&mut w0, b"k", v);
            hop(&mut rs[0], 0, &empty(), Some(&rec)).unwrap()
        })
        .collect();
    let none = None::<&ftc_stm::CommitRecord<'_>>;
    // Lane 0 gets the second and third logs first: both held and parked.
    assert!(hop(&mut lanes[0], 0, &msgs[2], none).is_none());
    assert!(hop(&mut lanes[0], 0, &msgs[1], none).is_none());
    assert!(!parked.is_empty());
    // Lane 1 gets the first: it applies it, then the two parked ones.
    assert!(hop(&mut lanes[1], 0, &msgs[0], none).is_some());
    assert!(parked.is_empty(), "every parked log applied");
    assert_eq!(store.to_map(), head0.to_map());
    assert_eq!(lanes[1].stats().applied, 3);
    assert_eq!(lanes[1].retained().0, 3, "the lane that applied retains");
    // Lane 0 looks again: its frames go, their logs duplicates, retained nowhere else.
    assert!(hop(&mut lanes[0], 0, &msgs[1], none).is_some());
    assert!(hop(&mut lanes[0], 0, &msgs[2], none).is_some());
    assert_eq!(lanes[0].stats().duplicates, 2);
    assert_eq!(lanes[0].retained().0, 0);
}

/// A tail whose group does not wrap past the buffer (no packet waits on its commit vector, it
/// only lets the head and members prune) announces at most once per lazy interval; what no
/// frame took by then leaves in a propagating frame to the next server. The tail of a wrapping
/// group announces with every frame.
#[test]
fn tails_of_groups_that_do_not_wrap_announce_lazily() {
    const LAZY: u64 = 1_000;
    let ring = Ring::new(3, 1).unwrap();
    let config = ReplicaConfig {
        lazy_announce_ns: LAZY,
        ..config()
    };
    let mut rs: Vec<Replica> = ring
        .server_ids()
        .map(|s| Replica::new(ring, s, P, config).unwrap())
        .collect();
    let none = None::<&ftc_stm::CommitRecord<'_>>;
    let head0 = Store::new(P, 1).unwrap();
    let mut w0 = head0.worker(0).unwrap();
    // Server 1 tails G(0), which does not wrap.
    let mut cvs_after_1 = |rs: &mut Vec<Replica>, now: u64, value: u8| {
        let rec = write(&mut w0, b"a", value);
        let m = hop(&mut rs[0], now, &empty(), Some(&rec)).unwrap();
        repr(&hop(&mut rs[1], now, &m, none).unwrap()).cvs
    };
    assert_eq!(
        cvs_after_1(&mut rs, 0, 1).len(),
        1,
        "the first goes at once"
    );
    assert!(cvs_after_1(&mut rs, 10, 2).is_empty());
    assert!(cvs_after_1(&mut rs, 20, 3).is_empty());
    assert_eq!(rs[1].poll_timeout(), Some(LAZY));
    let mut out = vec![0; BUDGET];
    assert_eq!(rs[1].poll_transmit(LAZY - 1, &mut out).unwrap(), None);
    let t = rs[1].poll_transmit(LAZY, &mut out).unwrap().unwrap();
    assert_eq!((t.to, t.flags), (ServerId(2), 0));
    let cvs = repr(&out[..t.len]).cvs;
    assert_eq!((cvs.len(), cvs[0].middlebox), (1, 0));
    assert_eq!(cvs[0].entries[0].seq, Seq(3), "MAX after the three writes");
    assert_eq!(rs[1].poll_timeout(), None);
    // A frame a lazy interval later carries the next announcement itself.
    assert!(cvs_after_1(&mut rs, LAZY + 10, 4).is_empty());
    assert_eq!(cvs_after_1(&mut rs, 2 * LAZY, 5).len(), 1);

    // Server 0 tails G(2), which wraps: the buffer waits on it, every frame announces.
    let head2 = Store::new(P, 1).unwrap();
    let mut w2 = head2.worker(0).unwrap();
    for (now, value) in [(0, 1), (10, 2), (20, 3)] {
        let rec = write(&mut w2, b"b", value);
        let m = hop(&mut rs[2], now, &empty(), Some(&rec)).unwrap();
        let cvs = repr(&hop(&mut rs[0], now, &m, none).unwrap()).cvs;
        assert_eq!(cvs.iter().filter(|c| c.middlebox == 2).count(), 1);
    }
}

/// Messages that pass the wire check (structure only) but name what the chain lacks are the
/// message's error, which the driver drops and counts ([`ftc_replica::ReplicaError::is_bad_input`]),
/// not a panic or a stopped server: a middlebox outside the chain in a log or a commit vector, a
/// dependency on a partition the store lacks (also in a resent frame, looked at before it is
/// handled), a write outside its log's partitions. Nothing of them is applied, and the replica
/// goes on applying good logs.
#[test]
fn messages_naming_what_the_chain_lacks_are_bad_input() {
    use ftc_chain::wire::{CvRepr, LogRepr};
    use ftc_stm::Partition;
    let ring = Ring::new(3, 1).unwrap();
    // Server 1 tails G(0), whose head is server 0.
    let mut r = Replica::new(ring, ServerId(1), P, config()).unwrap();
    let key_in = |p: u16| key_where(P, |q| q == p);
    let update = |partition: u16, seq: u64, key: Vec<u8>| LogRepr {
        middlebox: 0,
        kind: LogKind::Update,
        deps: vec![DepEntry {
            partition: Partition(partition),
            seq: Seq(seq),
        }],
        writes: vec![(key, Some(vec![1]))],
    };
    let message = |logs: Vec<LogRepr>, cvs: Vec<CvRepr>| {
        let m = MessageRepr {
            flags: 0,
            logs,
            cvs,
        };
        m.to_vec().unwrap()
    };
    let foreign_log = LogRepr {
        middlebox: 7,
        kind: LogKind::Noop,
        deps: vec![],
        writes: vec![],
    };
    let foreign_cv = CvRepr {
        middlebox: 9,
        entries: vec![DepEntry {
            partition: Partition(0),
            seq: Seq(1),
        }],
    };
    let last = message(vec![update(0, 0, key_in(1))], vec![]);
    for bad in [
        message(vec![foreign_log], vec![]),
        message(vec![], vec![foreign_cv]),
        message(vec![update(P as u16, 0, key_in(0))], vec![]),
        last.clone(),
    ] {
        let view = MessageView::new_checked(&bad).unwrap();
        // (The last one's dependency is in range and lacking: as a resent log it would make
        // the replica ask for it, rightly.)
        if bad != last {
            r.resent_arrived(0, &view);
        }
        let e = r.handle_message(0, &view).unwrap_err();
        assert!(e.is_bad_input(), "{:?}: {e}", repr(&bad));
    }
    assert_eq!(r.max_at(MbIndex(0), Partition(0)), Some(Seq(0)));
    // No retransmission request was started for them either.
    let fresh = Replica::new(ring, ServerId(1), P, config()).unwrap();
    assert_eq!(r.poll_timeout(), fresh.poll_timeout());
    let good = message(vec![update(0, 0, key_in(0))], vec![]);
    assert!(hop(&mut r, 0, &good, None).is_some());
    assert_eq!(r.max_at(MbIndex(0), Partition(0)), Some(Seq(1)));
}

/// A lazy tail (thesis §4.4.1) whose group has 65,536 partitions and saw every one move since its
/// last announcement announces them all, in parts: more entries than one commit vector holds
/// (its count is a u16) is not an error that stops the server.
#[test]
fn an_announcement_of_every_partition_goes_in_parts() {
    use ftc_chain::wire::LogRepr;
    use ftc_stm::Partition;
    const ALL: u32 = 65_536;
    const PER_LOG: u32 = 6_000;
    let ring = Ring::new(3, 1).unwrap();
    // Server 1 tails G(0), which does not wrap: its tail announces lazily.
    let mut r = Replica::new(ring, ServerId(1), ALL, config()).unwrap();
    let mut last = Vec::new();
    for start in (0..ALL).step_by(PER_LOG as usize) {
        let end = (start + PER_LOG).min(ALL);
        let key = key_where(ALL, |p| (start..end).contains(&u32::from(p)));
        let m = MessageRepr {
            flags: 0,
            logs: vec![LogRepr {
                middlebox: 0,
                kind: LogKind::Update,
                deps: (start..end)
                    .map(|p| DepEntry {
                        partition: Partition(p as u16),
                        seq: Seq(0),
                    })
                    .collect(),
                writes: vec![(key, Some(vec![1]))],
            }],
            cvs: vec![],
        };
        last = m.to_vec().unwrap();
        let view = MessageView::new_checked(&last).unwrap();
        assert_eq!(r.handle_message(0, &view).unwrap(), Admit::Ready);
    }
    let view = MessageView::new_checked(&last).unwrap();
    let mut out = vec![0; 8192];
    let written = r
        .build_message(1, &view, None::<&ftc_stm::CommitRecord<'_>>, &mut out, 1024)
        .unwrap();
    let mut announced = std::collections::BTreeSet::new();
    let mut note = |msg: &[u8]| {
        for cv in repr(msg).cvs.iter().filter(|cv| cv.middlebox == 0) {
            for e in &cv.entries {
                assert_eq!(e.seq, Seq(1));
                announced.insert(e.partition.0);
            }
        }
    };
    note(&out[..written.len()]);
    let mut frames = 0;
    while let Some(t) = r.poll_transmit(1, &mut out).unwrap() {
        note(&out[..t.len]);
        frames += 1;
        assert!(frames < 1_000, "poll_transmit does not run dry");
    }
    assert_eq!(announced.len(), ALL as usize);
    assert!(frames > 1, "{frames} frames");
}

/// The first of the keys 0, 1, 2, … (as 4 little-endian bytes) whose partition among
/// `partitions` is `wanted`.
fn key_where(partitions: u32, wanted: impl Fn(u16) -> bool) -> Vec<u8> {
    (0u32..)
        .map(|i| i.to_le_bytes().to_vec())
        .find(|k| wanted(ftc_stm::partition_of(k, partitions).0))
        .unwrap()
}
