//! Output commit checked on a running chain (DESIGN.md §10): when a packet leaves the chain,
//! every write it depends on must already be in the f+1 stores of its middlebox's group.
//!
//! The heads report each packet transaction they commit (`Output::Committed`, with
//! `ServerConfig::observe`); when the packet is released, [`CommitCheck::released`] looks at the
//! sequences of the group's stores (the head's and every member's replica, replacements
//! included) without stopping the chain: sequences only grow, so a store that shows a write at
//! release time held it then. An update log of partition p with dependency seq s is in a store
//! whose sequence of p is past s; the state a read-only log read is in a store whose sequence of
//! p reached s. Costs a lock per commit and per release: for chaos runs and checks, not for
//! throughput figures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_stm::{DepEntry, LogKind, Store};

use crate::{Heads, Server};

/// One transaction a packet committed at a head.
#[derive(Debug)]
struct Commit {
    middlebox: MbIndex,
    kind: LogKind,
    deps: Vec<DepEntry>,
}

/// The replica stores of one group, by the member that keeps each.
type Members = Vec<(ServerId, Arc<Store>)>;

/// Checks output commit for the packets of one run; shared by every server thread.
#[derive(Debug)]
pub struct CommitCheck<'h> {
    ring: Ring,
    heads: &'h Heads,
    /// Per middlebox, the replica stores of its group by member (a restored server replaces its
    /// predecessor's).
    replicas: Mutex<Vec<Members>>,
    /// The commits of the packets in the chain, by handle.
    pending: Mutex<HashMap<u64, Vec<Commit>>>,
    /// Released packets checked, and the logs checked for them.
    packets: AtomicU64,
    logs: AtomicU64,
}

impl<'h> CommitCheck<'h> {
    /// A check of the chain laid out by `ring` whose heads' stores are `heads`.
    pub fn new(ring: Ring, heads: &'h Heads) -> Self {
        CommitCheck {
            ring,
            heads,
            replicas: Mutex::new(vec![Vec::new(); heads.stores.len()]),
            pending: Mutex::new(HashMap::new()),
            packets: AtomicU64::new(0),
            logs: AtomicU64::new(0),
        }
    }

    /// `server` starts serving (at deployment, or restored at a recovery): its replica stores
    /// are the ones of its groups from now on.
    pub fn register(&self, server: &Server<'_, u64>) {
        let Some(replica) = server.replica() else {
            return;
        };
        let me = server.id();
        let mut replicas = self.replicas.lock().expect("no holder panics");
        for mb in self.ring.replicated_by(me) {
            let Some(store) = replica.store(mb) else {
                continue;
            };
            let members = &mut replicas[usize::from(mb.0)];
            members.retain(|(s, _)| *s != me);
            members.push((me, Arc::clone(store)));
        }
    }

    /// The packet `handle` committed a transaction at the head of `middlebox`.
    pub fn committed(&self, handle: u64, middlebox: u8, kind: LogKind, deps: Vec<DepEntry>) {
        let commit = Commit {
            middlebox: MbIndex(middlebox),
            kind,
            deps,
        };
        let mut pending = self.pending.lock().expect("no holder panics");
        pending.entry(handle).or_default().push(commit);
    }

    /// The packet `handle` left the chain without being released (dropped or lost).
    pub fn forget(&self, handle: u64) {
        self.pending
            .lock()
            .expect("no holder panics")
            .remove(&handle);
    }

    /// The packet `handle` is released: every transaction it committed must be in the f+1
    /// stores of its group. Says which is not.
    pub fn released(&self, handle: u64) -> Result<(), String> {
        let commits = self
            .pending
            .lock()
            .expect("no holder panics")
            .remove(&handle)
            .unwrap_or_default();
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.logs.fetch_add(commits.len() as u64, Ordering::Relaxed);
        // A head reports every transaction (no-ops included) before it sends the packet on: a
        // released packet without one at some middlebox was checked against nothing there.
        let middleboxes = self.heads.stores.len();
        if let Some(mb) =
            (0..middleboxes).find(|&mb| !commits.iter().any(|c| usize::from(c.middlebox.0) == mb))
        {
            return Err(format!(
                "output commit: a packet left the chain with no commit recorded at m{mb}'s head"
            ));
        }
        let replicas = self.replicas.lock().expect("no holder panics");
        let needed = self.ring.f() + 1;
        // A transaction that depends on nothing (a no-op) has nothing to be in the stores.
        for c in commits.iter().filter(|c| !c.deps.is_empty()) {
            let head = &self.heads.stores[usize::from(c.middlebox.0)];
            let members = &replicas[usize::from(c.middlebox.0)];
            let stores = std::iter::once(head).chain(members.iter().map(|(_, s)| &**s));
            let holding = stores.filter(|s| holds(s, c)).count();
            if holding < needed {
                return Err(format!(
                    "output commit: a packet left the chain when m{}'s {:?} transaction (dependencies {:?}) was in {holding} of the {needed} stores it needs",
                    c.middlebox.0, c.kind, c.deps
                ));
            }
        }
        Ok(())
    }

    /// How many released packets, and how many of their transactions, were checked.
    pub fn checked(&self) -> (u64, u64) {
        (
            self.packets.load(Ordering::Relaxed),
            self.logs.load(Ordering::Relaxed),
        )
    }
}

/// Whether `store` holds the effects of `c`.
fn holds(store: &Store, c: &Commit) -> bool {
    c.deps.iter().all(|d| {
        let seq = store.seq(d.partition).0;
        match c.kind {
            LogKind::Update => seq > d.seq.0,
            LogKind::ReadOnly | LogKind::Noop => seq >= d.seq.0,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftc_chain::spec::ChainSpec;

    /// A packet released with a commit recorded at one middlebox's head but not the other's
    /// (whose head reports every transaction before the packet moves on) is a violation, not a
    /// packet checked against nothing there.
    #[test]
    fn a_release_with_no_commit_recorded_at_a_head_is_a_violation() {
        let spec = ChainSpec::from_toml_str(
            "[chain]\nname = \"c\"\nf = 1\n[[middlebox]]\nkind = \"monitor\"\n\
             [[middlebox]]\nkind = \"monitor\"\n",
            "test",
        )
        .unwrap();
        let heads = Heads::new(&spec, |m| m.threads).unwrap();
        let check = CommitCheck::new(spec.ring(), &heads);
        let noop = |check: &CommitCheck<'_>, handle, mb| {
            check.committed(handle, mb, LogKind::Noop, Vec::new());
        };
        noop(&check, 1, 0);
        assert_eq!(
            check.released(1),
            Err(
                "output commit: a packet left the chain with no commit recorded at m1's head"
                    .into()
            )
        );
        noop(&check, 2, 0);
        noop(&check, 2, 1);
        assert_eq!(check.released(2), Ok(()));
    }
}
