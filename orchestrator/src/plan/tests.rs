use super::*;

fn s(i: u16) -> ServerId {
    ServerId(i)
}

fn m(j: u8) -> MbIndex {
    MbIndex(j)
}

fn set(servers: &[u16]) -> BTreeSet<ServerId> {
    servers.iter().copied().map(ServerId).collect()
}

fn t(to: u16, group: u8, as_head: bool, source: u16) -> Transfer {
    Transfer {
        to: s(to),
        group: m(group),
        as_head,
        source: s(source),
    }
}

#[test]
fn ch_rec_middle_server() {
    // k = 3, f = 1: G(0) = {0, 1}, G(1) = {1, 2}, G(2) = {2, 0}.
    let ring = Ring::new(3, 1).unwrap();
    assert_eq!(
        plan(&ring, &set(&[1]), &set(&[])).unwrap(),
        [t(1, 1, true, 2), t(1, 0, false, 0)]
    );
    // Server 0 replicates the wrapping G(2) from its predecessor, the buffer's server.
    assert_eq!(
        plan(&ring, &set(&[0]), &set(&[])).unwrap(),
        [t(0, 0, true, 1), t(0, 2, false, 2)]
    );
    assert_eq!(plan(&ring, &set(&[]), &set(&[])).unwrap(), []);
}

#[test]
fn replica_only_servers_fetch_as_replicas() {
    // k = 1, f = 2: servers 1 and 2 only replicate G(0) = {0, 1, 2}.
    let ring = Ring::new(1, 2).unwrap();
    assert_eq!(
        plan(&ring, &set(&[0]), &set(&[])).unwrap(),
        [t(0, 0, true, 1)]
    );
    assert_eq!(
        plan(&ring, &set(&[0, 1]), &set(&[])).unwrap(),
        [t(0, 0, true, 2), t(1, 0, false, 2)]
    );
    assert_eq!(
        plan(&ring, &set(&[2]), &set(&[])).unwrap(),
        [t(2, 0, false, 1)]
    );
    assert_eq!(
        plan(&ring, &set(&[1, 2]), &set(&[])).unwrap(),
        [t(1, 0, false, 0), t(2, 0, false, 0)]
    );
}

#[test]
fn a_replica_falls_back_to_a_successor_when_every_predecessor_failed() {
    // k = 4, f = 3: G(1) = {1, 2, 3, 0}; servers 1 and 2 failed, so 2 fetches G(1) from 3.
    let ring = Ring::new(4, 3).unwrap();
    let transfers = plan(&ring, &set(&[1, 2]), &set(&[])).unwrap();
    assert!(transfers.contains(&t(2, 1, false, 3)));
    assert!(transfers.contains(&t(1, 1, true, 3)));
    // G(0) = {0, 1, 2, 3}: 2's predecessor 1 failed, so it goes back to the head.
    assert!(transfers.contains(&t(2, 0, false, 0)));
}

#[test]
fn errors_say_what_is_wrong() {
    let ring = Ring::new(3, 1).unwrap();
    assert_eq!(
        plan(&ring, &set(&[1, 3]), &set(&[])),
        Err(PlanError::NotInRing {
            server: s(3),
            servers: 3
        })
    );
    // 0 and 1 are all of G(0).
    assert_eq!(
        plan(&ring, &set(&[0, 1]), &set(&[])),
        Err(PlanError::NoAliveMember { group: m(0) })
    );
    // k = 5, f = 1: servers 0 and 3 failed; every group keeps a member, but f is exceeded.
    let ring = Ring::new(5, 1).unwrap();
    assert_eq!(
        plan(&ring, &set(&[0, 3]), &set(&[])),
        Err(PlanError::TooManyFailures { failed: 2, f: 1 })
    );
    let transfer = t(1, 1, true, 2);
    assert_eq!(
        replan(&ring, &set(&[1]), &set(&[]), &transfer, s(7)),
        Err(PlanError::NotInRing {
            server: s(7),
            servers: 5
        })
    );
}

#[test]
fn replan_moves_to_the_next_alive_member() {
    // k = 3, f = 2: G(1) = {1, 2, 0}. Server 1 failed; its head transfer came from 2.
    let ring = Ring::new(3, 2).unwrap();
    let failed = set(&[1]);
    let none = set(&[]);
    let first = plan(&ring, &failed, &none).unwrap()[0];
    assert_eq!(first, t(1, 1, true, 2));
    let second = replan(&ring, &failed, &none, &first, s(2)).unwrap();
    assert_eq!(second, t(1, 1, true, 0));
    // Once 0 could not serve either, the nearest of the two is taken again: neither is known
    // to be dead, and no other member is left.
    assert_eq!(
        replan(&ring, &failed, &set(&[2]), &second, s(0)).unwrap(),
        first
    );
    // With 0 failed, 2 is the only source, however often it could not serve.
    assert_eq!(
        replan(&ring, &set(&[0, 1]), &set(&[2]), &first, s(2)).unwrap(),
        first
    );
    // A plan passes over avoided sources while it can.
    assert_eq!(plan(&ring, &failed, &set(&[2])).unwrap()[0], second);
    assert_eq!(plan(&ring, &failed, &set(&[0, 2])).unwrap()[0], first);
}

#[test]
fn a_source_that_cannot_serve_is_not_counted_as_failed() {
    // k = 3, f = 1: G(1) = {1, 2}. The replacement at 1 could not fetch from 2: 2 is its only
    // source, and still only one server failed.
    let ring = Ring::new(3, 1).unwrap();
    let first = t(1, 1, true, 2);
    assert_eq!(
        replan(&ring, &set(&[1]), &set(&[]), &first, s(2)),
        Ok(first)
    );
}

/// Every subset of the ring's servers.
fn subsets(n: usize) -> impl Iterator<Item = BTreeSet<ServerId>> {
    (0u32..1 << n).map(move |bits| {
        (0..n as u16)
            .filter(|&i| bits & (1 << i) != 0)
            .map(ServerId)
            .collect()
    })
}

fn lost_group(ring: &Ring, failed: &BTreeSet<ServerId>) -> Option<MbIndex> {
    ring.mb_indices()
        .find(|&g| ring.group(g).all(|m| failed.contains(&m)))
}

/// The source is alive, in the group, and the nearest by the rule: every member between it and
/// `to` failed, and it is a successor only when every predecessor failed.
fn check_transfer(ring: &Ring, failed: &BTreeSet<ServerId>, tr: &Transfer) {
    let members: Vec<ServerId> = ring.group(tr.group).collect();
    let pos = |srv| members.iter().position(|&x| x == srv);
    let to = pos(tr.to).expect("to is a member");
    let source = pos(tr.source).expect("the source is a member");
    assert!(failed.contains(&tr.to), "{tr:?}");
    assert!(!failed.contains(&tr.source), "{tr:?}: source failed");
    assert_eq!(tr.as_head, ring.head(tr.group) == tr.to, "{tr:?}");
    let skipped = if source < to {
        source + 1..to
    } else {
        assert!(members[..to].iter().all(|x| failed.contains(x)), "{tr:?}");
        to + 1..source
    };
    assert!(
        members[skipped].iter().all(|x| failed.contains(x)),
        "{tr:?} skipped an alive member"
    );
}

#[test]
fn every_failed_set_on_small_rings() {
    for k in 1..=5 {
        for f in 1..=3 {
            let ring = Ring::new(k, f).unwrap();
            for failed in subsets(ring.servers()) {
                let got = plan(&ring, &failed, &set(&[]));
                if let Some(group) = lost_group(&ring, &failed) {
                    assert!(
                        matches!(got, Err(PlanError::NoAliveMember { group: g })
                            if ring.group(g).all(|x| failed.contains(&x))),
                        "k={k} f={f} {failed:?}: {got:?}, {group} is lost"
                    );
                    continue;
                }
                if failed.len() > f {
                    assert_eq!(
                        got,
                        Err(PlanError::TooManyFailures {
                            failed: failed.len(),
                            f
                        })
                    );
                    continue;
                }
                let transfers = got.unwrap();
                // Every group of every failed server, once.
                let mut covered: Vec<(ServerId, MbIndex)> =
                    transfers.iter().map(|t| (t.to, t.group)).collect();
                covered.sort();
                let mut wanted: Vec<(ServerId, MbIndex)> = failed
                    .iter()
                    .flat_map(|&x| ring.groups_of(x).map(move |(g, _)| (x, g)))
                    .collect();
                wanted.sort();
                assert_eq!(covered, wanted, "k={k} f={f} {failed:?}");
                for tr in &transfers {
                    check_transfer(&ring, &failed, tr);
                    check_replan(&ring, &failed, tr);
                }
            }
        }
    }
}

/// Replanning after a fetch from the source failed takes the member that planning with the
/// source failed would, or the same source when no other member is alive.
fn check_replan(ring: &Ring, failed: &BTreeSet<ServerId>, tr: &Transfer) {
    let mut with_dead = failed.clone();
    with_dead.insert(tr.source);
    let again = replan(ring, failed, &BTreeSet::new(), tr, tr.source).unwrap();
    if ring.group(tr.group).all(|x| with_dead.contains(&x)) {
        assert_eq!(again, *tr);
    } else {
        assert_ne!(again.source, tr.source);
        assert_eq!(
            (again.to, again.group, again.as_head),
            (tr.to, tr.group, tr.as_head)
        );
        check_transfer(ring, &with_dead, &again);
    }
}
