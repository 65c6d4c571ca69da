//! Ring math: which server runs which middlebox, which servers replicate which middlebox's state
//! (replication groups), where each group's head and tail sit, and which groups wrap around the
//! ring past the buffer (DESIGN.md §1, §6, §7).
//!
//! A chain of k middleboxes m0 … m(k-1) tolerating f failures runs on n = max(k, f+1) servers
//! 0 … n-1. Server j < k runs middlebox j; servers k … n-1 (present only when k < f+1) are
//! replica-only servers placed before the buffer. The forwarder is on server 0, the buffer on
//! server n-1, and the ring closes with the link n-1 → 0.
//!
//! Replication group G(j) = {j, j+1, …, j+f} mod n, for every middlebox j < k. Server j is its
//! head, (j+f) mod n its tail. G(j) **wraps** when j+f ≥ n: its tail lies past the buffer, at the
//! start of the chain, so the buffer must wait for CV(j) before releasing a packet.
//!
//! Every method that takes a [`ServerId`] or an [`MbIndex`] panics when it is not a server or a
//! middlebox of this ring (like slice indexing); all other misuse is impossible by construction.

use std::fmt;

/// A server's position on the ring, 0 … n-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(pub u16);

/// A middlebox's position in the chain, 0 … k-1; also names its replication group G(j).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MbIndex(pub u8);

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server {}", self.0)
    }
}

impl fmt::Display for MbIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.0)
    }
}

/// Why a ring cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("a chain needs at least one middlebox")]
    NoMiddlebox,
    #[error("a chain has at most {max} middleboxes, not {0}", max = Ring::MAX_MIDDLEBOXES)]
    TooManyMiddleboxes(usize),
    #[error("f (failures tolerated) must be 1..={max}, not {0}", max = Ring::MAX_F)]
    FOutOfRange(usize),
}

/// The layout of one chain on its ring of servers. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ring {
    k: usize,
    f: usize,
    n: usize,
}

impl Ring {
    /// The most middleboxes a chain may have ([`MbIndex`] is a `u8`).
    pub const MAX_MIDDLEBOXES: usize = 255;
    /// The most failures a chain may tolerate.
    pub const MAX_F: usize = 8;

    /// The ring of a chain of `k` middleboxes tolerating `f` failures: 1 ≤ k ≤ 255, 1 ≤ f ≤ 8.
    pub fn new(k: usize, f: usize) -> Result<Ring, RingError> {
        if k == 0 {
            return Err(RingError::NoMiddlebox);
        }
        if k > Self::MAX_MIDDLEBOXES {
            return Err(RingError::TooManyMiddleboxes(k));
        }
        if !(1..=Self::MAX_F).contains(&f) {
            return Err(RingError::FOutOfRange(f));
        }
        Ok(Ring {
            k,
            f,
            n: k.max(f + 1),
        })
    }

    /// n = max(k, f+1): the number of servers on the ring.
    pub const fn servers(&self) -> usize {
        self.n
    }

    /// k: the number of middleboxes in the chain.
    pub const fn middleboxes(&self) -> usize {
        self.k
    }

    /// f: the number of failures tolerated; every group has f+1 members.
    pub const fn f(&self) -> usize {
        self.f
    }

    /// Every server, 0 … n-1.
    pub fn server_ids(&self) -> impl Iterator<Item = ServerId> + Clone {
        (0..self.n).map(|s| ServerId(s as u16))
    }

    /// Every middlebox, m0 … m(k-1).
    pub fn mb_indices(&self) -> impl Iterator<Item = MbIndex> + Clone {
        (0..self.k).map(|j| MbIndex(j as u8))
    }

    /// The server that runs the forwarder (ingress): server 0.
    pub const fn forwarder(&self) -> ServerId {
        ServerId(0)
    }

    /// The server that runs the buffer (egress): server n-1.
    pub const fn buffer(&self) -> ServerId {
        ServerId((self.n - 1) as u16)
    }

    /// The middlebox that `server` runs; `None` for a replica-only server (k ≤ server < n).
    pub fn middlebox_at(&self, server: ServerId) -> Option<MbIndex> {
        let s = self.server(server);
        (s < self.k).then_some(MbIndex(s as u8))
    }

    /// The server that runs middlebox `mb`: the head of its group, server `mb`.
    pub fn server_of(&self, mb: MbIndex) -> ServerId {
        self.head(mb)
    }

    /// The members of G(mb) in replication order: head first, tail last (f+1 servers).
    pub fn group(&self, mb: MbIndex) -> impl Iterator<Item = ServerId> + Clone {
        let j = self.mb(mb);
        let n = self.n;
        (0..=self.f).map(move |p| ServerId(((j + p) % n) as u16))
    }

    /// The head of G(mb): the server that runs middlebox `mb`.
    pub fn head(&self, mb: MbIndex) -> ServerId {
        ServerId(self.mb(mb) as u16)
    }

    /// The tail of G(mb): server (mb + f) mod n.
    pub fn tail(&self, mb: MbIndex) -> ServerId {
        ServerId(((self.mb(mb) + self.f) % self.n) as u16)
    }

    /// Where `server` sits in G(mb): 0 = head … f = tail; `None` if it is not a member.
    pub fn position_in_group(&self, mb: MbIndex, server: ServerId) -> Option<usize> {
        let j = self.mb(mb);
        let s = self.server(server);
        let p = (s + self.n - j) % self.n;
        (p <= self.f).then_some(p)
    }

    /// Every group `server` is a member of, with its position in it, head position first.
    ///
    /// Each server is in exactly min(k, f+1) groups; it heads at most one and tails at most one.
    pub fn groups_of(&self, server: ServerId) -> impl Iterator<Item = (MbIndex, usize)> + Clone {
        let s = self.server(server);
        let (k, n) = (self.k, self.n);
        (0..=self.f).filter_map(move |p| {
            let j = (s + n - p) % n;
            (j < k).then_some((MbIndex(j as u8), p))
        })
    }

    /// The groups where `server` is a non-head member: it keeps a replica store for each.
    pub fn replicated_by(&self, server: ServerId) -> impl Iterator<Item = MbIndex> + Clone {
        self.groups_of(server)
            .filter(|&(_, p)| p > 0)
            .map(|(mb, _)| mb)
    }

    /// The member after `server` in G(mb), which it forwards replicated logs to; `None` if
    /// `server` is the tail or not a member.
    pub fn successor_in_group(&self, mb: MbIndex, server: ServerId) -> Option<ServerId> {
        let p = self.position_in_group(mb, server)?;
        (p < self.f).then(|| self.next_server(server))
    }

    /// The member before `server` in G(mb), which it receives logs from (and asks for
    /// retransmissions); `None` if `server` is the head or not a member.
    pub fn predecessor_in_group(&self, mb: MbIndex, server: ServerId) -> Option<ServerId> {
        let p = self.position_in_group(mb, server)?;
        (p > 0).then(|| self.prev_server(server))
    }

    /// The next server on the ring; the buffer's next server is the forwarder (the ring-closing
    /// link n-1 → 0).
    pub fn next_server(&self, server: ServerId) -> ServerId {
        ServerId(((self.server(server) + 1) % self.n) as u16)
    }

    /// The previous server on the ring; the forwarder's previous server is the buffer.
    pub fn prev_server(&self, server: ServerId) -> ServerId {
        ServerId(((self.server(server) + self.n - 1) % self.n) as u16)
    }

    /// Whether G(mb) wraps: mb + f ≥ n, so its tail lies past the buffer and the buffer must wait
    /// for CV(mb).
    pub fn wraps(&self, mb: MbIndex) -> bool {
        self.mb(mb) + self.f >= self.n
    }

    /// The groups that wrap, in order; there are min(f, k-1) of them.
    pub fn wrapping_groups(&self) -> impl Iterator<Item = MbIndex> + Clone {
        // j + f ≥ n ⇔ j ≥ n - f, and n - f ≥ 1 since n ≥ f + 1: G(0) never wraps.
        (self.n - self.f..self.k).map(|j| MbIndex(j as u8))
    }

    /// The groups whose tail is `server`: it strips their logs and emits their commit vectors.
    /// At most one, since tails are distinct; none for the servers that tail no group.
    pub fn tails_at(&self, server: ServerId) -> impl Iterator<Item = MbIndex> + Clone {
        let s = self.server(server);
        let j = (s + self.n - self.f) % self.n;
        (j < self.k).then_some(MbIndex(j as u8)).into_iter()
    }

    fn server(&self, server: ServerId) -> usize {
        let s = usize::from(server.0);
        assert!(
            s < self.n,
            "{server} is not on a ring of {} servers",
            self.n
        );
        s
    }

    fn mb(&self, mb: MbIndex) -> usize {
        let j = usize::from(mb.0);
        assert!(
            j < self.k,
            "{mb} is not in a chain of {} middleboxes",
            self.k
        );
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(i: u16) -> ServerId {
        ServerId(i)
    }
    fn m(j: u8) -> MbIndex {
        MbIndex(j)
    }
    fn group(r: &Ring, j: u8) -> Vec<u16> {
        r.group(m(j)).map(|s| s.0).collect()
    }

    #[test]
    fn constructor_checks_its_arguments() {
        assert_eq!(Ring::new(0, 1), Err(RingError::NoMiddlebox));
        assert_eq!(Ring::new(256, 1), Err(RingError::TooManyMiddleboxes(256)));
        assert_eq!(Ring::new(3, 0), Err(RingError::FOutOfRange(0)));
        assert_eq!(Ring::new(3, 9), Err(RingError::FOutOfRange(9)));
        assert!(Ring::new(255, 8).is_ok());
        assert!(Ring::new(1, 1).is_ok());
    }

    #[test]
    fn ch_rec_k3_f1() {
        let r = Ring::new(3, 1).unwrap();
        assert_eq!((r.servers(), r.middleboxes(), r.f()), (3, 3, 1));
        assert_eq!(group(&r, 0), [0, 1]);
        assert_eq!(group(&r, 1), [1, 2]);
        assert_eq!(group(&r, 2), [2, 0]);
        assert!(!r.wraps(m(0)) && !r.wraps(m(1)) && r.wraps(m(2)));
        assert_eq!(r.wrapping_groups().collect::<Vec<_>>(), [m(2)]);
        assert_eq!(r.forwarder(), s(0));
        assert_eq!(r.buffer(), s(2));
        assert_eq!(r.next_server(s(2)), s(0));
        assert_eq!(r.prev_server(s(0)), s(2));
        assert_eq!(r.tail(m(2)), s(0));
        assert_eq!(r.tails_at(s(0)).collect::<Vec<_>>(), [m(2)]);
        assert_eq!(r.tails_at(s(1)).collect::<Vec<_>>(), [m(0)]);
        assert_eq!(
            r.groups_of(s(0)).collect::<Vec<_>>(),
            [(m(0), 0), (m(2), 1)]
        );
        assert_eq!(r.replicated_by(s(0)).collect::<Vec<_>>(), [m(2)]);
        assert_eq!(r.replicated_by(s(1)).collect::<Vec<_>>(), [m(0)]);
        assert_eq!(r.successor_in_group(m(2), s(2)), Some(s(0)));
        assert_eq!(r.successor_in_group(m(2), s(0)), None);
        assert_eq!(r.predecessor_in_group(m(2), s(0)), Some(s(2)));
        assert_eq!(r.predecessor_in_group(m(2), s(2)), None);
        assert_eq!(r.predecessor_in_group(m(0), s(2)), None);
        assert_eq!(r.position_in_group(m(0), s(2)), None);
        for j in 0..3 {
            assert_eq!(r.middlebox_at(s(j)), Some(m(j as u8)));
        }
    }

    #[test]
    fn single_middlebox_f2_has_replica_only_servers() {
        let r = Ring::new(1, 2).unwrap();
        assert_eq!(r.servers(), 3);
        assert_eq!(r.middlebox_at(s(0)), Some(m(0)));
        assert_eq!(r.middlebox_at(s(1)), None);
        assert_eq!(r.middlebox_at(s(2)), None);
        assert_eq!(group(&r, 0), [0, 1, 2]);
        assert_eq!(r.tail(m(0)), s(2));
        assert_eq!(r.buffer(), s(2));
        assert!(!r.wraps(m(0)));
        assert_eq!(r.wrapping_groups().count(), 0);
        assert_eq!(r.replicated_by(s(1)).collect::<Vec<_>>(), [m(0)]);
        assert_eq!(r.groups_of(s(2)).collect::<Vec<_>>(), [(m(0), 2)]);
        assert_eq!(r.tails_at(s(2)).collect::<Vec<_>>(), [m(0)]);
        assert_eq!(r.tails_at(s(0)).count(), 0);
        assert_eq!(r.tails_at(s(1)).count(), 0);
    }

    #[test]
    fn two_middleboxes_f2() {
        // n = 3; server 2 is replica-only; G(1) = {1, 2, 0} wraps.
        let r = Ring::new(2, 2).unwrap();
        assert_eq!(r.servers(), 3);
        assert_eq!(group(&r, 0), [0, 1, 2]);
        assert_eq!(group(&r, 1), [1, 2, 0]);
        assert_eq!(r.wrapping_groups().collect::<Vec<_>>(), [m(1)]);
        assert_eq!(
            r.groups_of(s(2)).collect::<Vec<_>>(),
            [(m(1), 1), (m(0), 2)]
        );
    }

    #[test]
    fn k5_f4() {
        let r = Ring::new(5, 4).unwrap();
        assert_eq!(r.servers(), 5);
        assert_eq!(group(&r, 0), [0, 1, 2, 3, 4]);
        assert_eq!(group(&r, 3), [3, 4, 0, 1, 2]);
        assert_eq!(r.tail(m(1)), s(0));
        assert_eq!(
            r.wrapping_groups().collect::<Vec<_>>(),
            [m(1), m(2), m(3), m(4)]
        );
        // Every server is in all five groups.
        for i in 0..5 {
            assert_eq!(r.groups_of(s(i)).count(), 5);
            assert_eq!(r.replicated_by(s(i)).count(), 4);
        }
        assert_eq!(r.position_in_group(m(3), s(1)), Some(3));
        assert_eq!(r.successor_in_group(m(3), s(1)), Some(s(2)));
        assert_eq!(r.successor_in_group(m(3), s(2)), None);
    }

    #[test]
    #[should_panic(expected = "not on a ring")]
    fn foreign_server_panics() {
        let _ = Ring::new(3, 1).unwrap().middlebox_at(s(3));
    }

    #[test]
    #[should_panic(expected = "not in a chain")]
    fn foreign_middlebox_panics() {
        let _ = Ring::new(1, 2).unwrap().head(m(1));
    }

    proptest! {
        #[test]
        fn invariants(k in 1usize..=12, f in 1usize..=8) {
            let r = Ring::new(k, f).unwrap();
            let n = r.servers();
            // n = max(k, f+1); the forwarder is server 0, the buffer server n-1.
            prop_assert_eq!(n, k.max(f + 1));
            prop_assert_eq!(r.buffer(), ServerId(n as u16 - 1));
            let mut tails = std::collections::HashSet::new();
            let mut memberships = vec![0usize; n];
            for j in r.mb_indices() {
                let g: Vec<ServerId> = r.group(j).collect();
                // Every group has f+1 distinct members, head first (the middlebox's own server),
                // tail last, consecutive on the ring.
                prop_assert_eq!(g.len(), f + 1);
                let distinct: std::collections::HashSet<_> = g.iter().collect();
                prop_assert_eq!(distinct.len(), f + 1);
                prop_assert_eq!(g[0], r.head(j));
                prop_assert_eq!(g[0], ServerId(u16::from(j.0)));
                prop_assert_eq!(r.middlebox_at(g[0]), Some(j));
                prop_assert_eq!(*g.last().unwrap(), r.tail(j));
                for w in g.windows(2) {
                    prop_assert_eq!(r.next_server(w[0]), w[1]);
                    prop_assert_eq!(r.successor_in_group(j, w[0]), Some(w[1]));
                    prop_assert_eq!(r.predecessor_in_group(j, w[1]), Some(w[0]));
                }
                prop_assert_eq!(r.successor_in_group(j, r.tail(j)), None);
                prop_assert_eq!(r.predecessor_in_group(j, r.head(j)), None);
                // position_in_group agrees with group(), and is None exactly for non-members.
                for (p, &srv) in g.iter().enumerate() {
                    prop_assert_eq!(r.position_in_group(j, srv), Some(p));
                    memberships[usize::from(srv.0)] += 1;
                }
                for srv in r.server_ids() {
                    prop_assert_eq!(r.position_in_group(j, srv).is_some(), g.contains(&srv));
                }
                // wraps(j) ⇔ j + f ≥ n ⇔ the tail comes before the head in server order
                // ⇔ the group's members are not increasing along the chain.
                prop_assert_eq!(r.wraps(j), usize::from(j.0) + f >= n);
                prop_assert_eq!(r.wraps(j), r.tail(j) < r.head(j));
                prop_assert_eq!(r.wraps(j), g.windows(2).any(|w| w[1] < w[0]));
                // Tails are distinct, and tails_at finds the group of each tail.
                prop_assert!(tails.insert(r.tail(j)));
                prop_assert_eq!(r.tails_at(r.tail(j)).collect::<Vec<_>>(), vec![j]);
            }
            // There are min(f, k-1) wrapping groups, and wrapping_groups lists exactly those
            // j with wraps(j), in order.
            let wrapping: Vec<MbIndex> = r.wrapping_groups().collect();
            prop_assert_eq!(wrapping.len(), f.min(k - 1));
            prop_assert_eq!(wrapping, r.mb_indices().filter(|&j| r.wraps(j)).collect::<Vec<_>>());
            for srv in r.server_ids() {
                let groups: Vec<(MbIndex, usize)> = r.groups_of(srv).collect();
                // Each server is in exactly min(k, f+1) groups: its positions p = 0..=f name the
                // distinct groups (s - p) mod n (distinct as f+1 ≤ n); all of them are
                // middleboxes when n = k, and when n = f+1 > k the p's cover every residue, so
                // exactly the k middleboxes. This also equals the membership count via group().
                prop_assert_eq!(groups.len(), k.min(f + 1));
                prop_assert_eq!(groups.len(), memberships[usize::from(srv.0)]);
                for &(j, p) in &groups {
                    prop_assert_eq!(r.position_in_group(j, srv), Some(p));
                }
                // A server heads a group iff it runs a middlebox (replica-only servers head none)
                // and then it is that middlebox's group; it replicates all its other groups.
                let heads: Vec<MbIndex> =
                    groups.iter().filter(|g| g.1 == 0).map(|g| g.0).collect();
                prop_assert_eq!(heads, r.middlebox_at(srv).into_iter().collect::<Vec<_>>());
                prop_assert_eq!(
                    r.replicated_by(srv).count(),
                    groups.len() - usize::from(r.middlebox_at(srv).is_some())
                );
                // Server s tails a group iff some group has s as tail.
                prop_assert_eq!(r.tails_at(srv).count(), usize::from(tails.contains(&srv)));
                prop_assert_eq!(r.prev_server(r.next_server(srv)), srv);
            }
        }
    }
}
