//! Recovery's replica side (DESIGN.md §8 step 3): a group's state moves as checked bytes, and a
//! replacement restored from its sources goes on where the failed server stopped: it announces
//! its MAX as a tail, and answers retransmission requests from the logs it took over.

use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_chain::wire::{MessageRepr, MessageView, MessageWriter};
use ftc_replica::{
    Admit, GroupState, GroupStateError, Replica, ReplicaConfig, FLAG_RETRANSMIT_REQUEST,
};
use ftc_stm::{CommitRecord, Store, Worker};

const P: u32 = 8;
const BUDGET: usize = 4096;

fn config() -> ReplicaConfig {
    ReplicaConfig {
        hold_timeout_ns: 1_000,
        resend_timeout_ns: 1_000_000,
        // Every frame announces (the lazy interval has tests of its own).
        lazy_announce_ns: 0,
        // Commit vectors only ride on frames (the direct path has a test of its own).
        direct_commit_vectors: false,
    }
}

fn empty() -> Vec<u8> {
    let mut buf = vec![0; 16];
    let len = MessageWriter::new(&mut buf, 0).unwrap().finish();
    buf.truncate(len);
    buf
}

fn hop(r: &mut Replica, now: u64, msg: &[u8], own: Option<&CommitRecord<'_>>) -> Option<Vec<u8>> {
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

fn relay(r: &mut Replica, now: u64, msg: &[u8]) -> Option<Vec<u8>> {
    hop(r, now, msg, None::<&CommitRecord<'_>>)
}

fn write<'w>(w: &'w mut Worker<'_>, key: &[u8], value: u8) -> CommitRecord<'w> {
    w.run(|tx| tx.write(key, &[value])).1
}

/// What a source sends for `mb`'s group: its store and the logs it retains.
fn state_of(store: &Store, source: &Replica, mb: MbIndex) -> GroupState {
    GroupState {
        middlebox: mb,
        snapshot: store.export_bytes().unwrap(),
        retained: source.retained_logs(mb).unwrap(),
    }
}

#[test]
fn group_state_round_trips_and_bad_bytes_are_refused() {
    let ring = Ring::new(2, 1).unwrap();
    let mut r0 = Replica::new(ring, ServerId(0), P, config()).unwrap();
    let head = Store::new(P, 1).unwrap();
    let mut w = head.worker(0).unwrap();
    for i in 0..3 {
        let rec = write(&mut w, &[b'k', i], i);
        hop(&mut r0, 0, &empty(), Some(&rec)).unwrap();
    }
    let state = state_of(&head, &r0, MbIndex(0));
    assert_eq!(
        state.retained.len(),
        3,
        "the head retains its uncommitted logs"
    );
    let bytes = state.encode().unwrap();
    assert_eq!(GroupState::decode(&bytes).unwrap(), state);
    // Written straight from the store, the same bytes.
    assert_eq!(
        GroupState::encode_store(MbIndex(0), &head, &state.retained).unwrap(),
        bytes
    );
    for cut in 0..bytes.len() {
        assert!(GroupState::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut other = state.clone();
    other.middlebox = MbIndex(1);
    assert_eq!(
        GroupState::decode(&other.encode().unwrap()),
        Err(GroupStateError::Malformed(
            "a retained log belongs to another middlebox"
        ))
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(GroupState::decode(&trailing).is_err());
}

/// k = 3, f = 1: server 1 (head of m1, tail of G(0)) fails. Its replacement takes m0's group
/// from the head, server 0, and at the reroute announces CV(0) over everything it holds, which
/// prunes what server 0 retained.
#[test]
fn a_restored_tail_announces_its_max_and_prunes_its_predecessor() {
    let ring = Ring::new(3, 1).unwrap();
    let mut r0 = Replica::new(ring, ServerId(0), P, config()).unwrap();
    let mut r1 = Replica::new(ring, ServerId(1), P, config()).unwrap();
    let head0 = Store::new(P, 1).unwrap();
    let mut w0 = head0.worker(0).unwrap();
    let a = {
        let rec = write(&mut w0, b"a", 1);
        hop(&mut r0, 0, &empty(), Some(&rec)).unwrap()
    };
    let _lost = {
        let rec = write(&mut w0, b"b", 2);
        hop(&mut r0, 0, &empty(), Some(&rec)).unwrap()
    };
    relay(&mut r1, 0, &a).unwrap();
    assert_eq!(r0.retained().0, 2);
    drop(r1); // server 1 fails.

    let groups = [state_of(&head0, &r0, MbIndex(0))];
    let mut r1 = Replica::restore(ring, ServerId(1), P, config(), &groups, 10).unwrap();
    assert_eq!(r1.store(MbIndex(0)).unwrap().to_map(), head0.to_map());
    let mut buf = vec![0; BUDGET];
    assert_eq!(r1.poll_transmit(10, &mut buf).unwrap(), None);
    r1.announce_max(); // at the reroute
    let t = r1
        .poll_transmit(10, &mut buf)
        .unwrap()
        .expect("the announcement goes at once");
    assert_eq!(t.to, ServerId(2));
    let out = buf[..t.len].to_vec();
    let repr = MessageRepr::parse(&MessageView::new_checked(&out).unwrap());
    assert_eq!(repr.cvs.len(), 1, "the new tail announces CV(0)");
    // Round the ring (server 2 passes it on) back to server 0, which prunes.
    let mut r2 = Replica::new(ring, ServerId(2), P, config()).unwrap();
    let back = relay(&mut r2, 10, &out).unwrap();
    relay(&mut r0, 10, &back).unwrap();
    assert_eq!(r0.retained().0, 0, "CV(0) covered both retained logs");
}

/// k = 3, f = 2: server 1, the middle of G(0), fails while server 2 still misses a log. The
/// replacement takes G(0) from server 0 with its retained logs, and answers server 2's
/// retransmission request from them.
#[test]
fn a_restored_member_answers_retransmissions_from_the_logs_it_took_over() {
    let ring = Ring::new(3, 2).unwrap();
    let mut r0 = Replica::new(ring, ServerId(0), P, config()).unwrap();
    let mut r1 = Replica::new(ring, ServerId(1), P, config()).unwrap();
    let mut r2 = Replica::new(ring, ServerId(2), P, config()).unwrap();
    let head0 = Store::new(P, 1).unwrap();
    let mut w0 = head0.worker(0).unwrap();
    let mut msgs = Vec::new();
    for v in 1..=3 {
        let rec = write(&mut w0, b"k", v);
        msgs.push(hop(&mut r0, 0, &empty(), Some(&rec)).unwrap());
    }
    let at1: Vec<_> = msgs.iter().map(|m| relay(&mut r1, 0, m).unwrap()).collect();
    relay(&mut r2, 0, &at1[0]).unwrap();
    drop(r1); // server 1 fails; server 2 never got the second and third logs.

    let groups = [
        state_of(&head0, &r0, MbIndex(0)),
        // m2's group {2, 0, 1}: server 1 is its tail; its predecessor is server 0.
        GroupState {
            middlebox: MbIndex(2),
            snapshot: r0.store(MbIndex(2)).unwrap().export_bytes().unwrap(),
            retained: r0.retained_logs(MbIndex(2)).unwrap(),
        },
    ];
    let mut r1 = Replica::restore(ring, ServerId(1), P, config(), &groups, 0).unwrap();
    // Server 0 goes on: the next log reaches server 2 through the replacement and is held.
    let rec = write(&mut w0, b"k", 4);
    let fourth = hop(&mut r0, 5_000, &empty(), Some(&rec)).unwrap();
    let via1 = relay(&mut r1, 5_000, &fourth).unwrap();
    assert!(
        relay(&mut r2, 5_000, &via1).is_none(),
        "held: logs 2 and 3 are missing"
    );
    let mut buf = vec![0; BUDGET];
    let t = r2.poll_transmit(7_000, &mut buf).unwrap().unwrap();
    assert_eq!((t.to, t.flags), (ServerId(1), FLAG_RETRANSMIT_REQUEST));
    r1.handle_retransmit_request(
        7_000,
        ServerId(2),
        &MessageView::new_checked(&buf[..t.len]).unwrap(),
    );
    let answer = r1.poll_transmit(7_000, &mut buf).unwrap().unwrap();
    assert_eq!(answer.to, ServerId(2));
    let answer = buf[..answer.len].to_vec();
    relay(&mut r2, 7_000, &answer).unwrap();
    relay(&mut r2, 7_000, &via1).unwrap();
    assert_eq!(r2.store(MbIndex(0)).unwrap().to_map(), head0.to_map());
    assert_eq!(r2.store(MbIndex(0)).unwrap().vector(), head0.vector());
}

#[test]
fn restore_refuses_missing_or_foreign_groups() {
    let ring = Ring::new(3, 1).unwrap();
    let head0 = Store::new(P, 1).unwrap();
    let r0 = Replica::new(ring, ServerId(0), P, config()).unwrap();
    // Server 1 replicates m0: with no state for it, no restore.
    assert!(Replica::restore(ring, ServerId(1), P, config(), &[], 0).is_err());
    // Server 2 replicates m1, not m0.
    let r1 = Replica::new(ring, ServerId(1), P, config()).unwrap();
    let m1 = state_of(&Store::new(P, 1).unwrap(), &r1, MbIndex(1));
    assert!(Replica::restore(ring, ServerId(2), P, config(), std::slice::from_ref(&m1), 0).is_ok());
    let foreign = [m1, state_of(&head0, &r0, MbIndex(0))];
    assert!(matches!(
        Replica::restore(ring, ServerId(2), P, config(), &foreign, 0),
        Err(ftc_replica::ReplicaError::Restore(_))
    ));
}

/// A retained log that depends on a partition past the store's could never be covered (it
/// would be kept and resent for good): the state is refused. One inside the store is taken.
#[test]
fn restore_refuses_retained_logs_of_partitions_the_store_lacks() {
    use ftc_chain::wire::LogRepr;
    use ftc_stm::{DepEntry, LogKind};
    let ring = Ring::new(3, 1).unwrap();
    let log = |partition: u16| {
        let repr = LogRepr {
            middlebox: 1,
            kind: LogKind::Update,
            deps: vec![DepEntry::new(partition, 0)],
            writes: vec![(b"k".to_vec(), Some(vec![1]))],
        };
        let mut buf = vec![0; repr.buffer_len()];
        repr.emit(&mut buf).unwrap();
        buf
    };
    let empty = Store::new(P, 1).unwrap().export_bytes().unwrap();
    let state = |mb: u8, retained: Vec<Vec<u8>>| GroupState {
        middlebox: MbIndex(mb),
        snapshot: empty.clone(),
        retained,
    };
    // Server 1 heads m1 (its retained logs are its own) and replicates m0.
    let groups = |partition| [state(0, vec![]), state(1, vec![log(partition)])];
    let r1 = Replica::restore(ring, ServerId(1), P, config(), &groups(P as u16 - 1), 0);
    assert_eq!(r1.unwrap().retained().0, 1);
    assert!(matches!(
        Replica::restore(ring, ServerId(1), P, config(), &groups(P as u16), 0),
        Err(ftc_replica::ReplicaError::Restore(why)) if why.contains("partition")
    ));
}
