//! [`Heads`]: a chain's middleboxes with the state store each one heads, and the head a server
//! runs.

use ftc_chain::middlebox::Middlebox;
use ftc_chain::middleboxes;
use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_chain::spec::{ChainSpec, MiddleboxSpec};
use ftc_replica::{GroupState, ReplicaError};
use ftc_stm::{StmError, Store};

use crate::lanes::Head;

/// The middleboxes of a chain, in chain order, and their head stores.
#[derive(Debug)]
pub struct Heads {
    pub middleboxes: Vec<Box<dyn Middlebox>>,
    pub stores: Vec<Store>,
}

impl Heads {
    /// Each middlebox of `spec` with a fresh store for `workers(its spec)` workers.
    pub fn new(
        spec: &ChainSpec,
        workers: impl Fn(&MiddleboxSpec) -> u16,
    ) -> Result<Self, StmError> {
        Ok(Heads {
            middleboxes: spec.middlebox.iter().map(middleboxes::build).collect(),
            stores: spec
                .middlebox
                .iter()
                .map(|m| Store::new(spec.chain.partitions, workers(m)))
                .collect::<Result<_, _>>()?,
        })
    }

    /// What a replacement of server `s` heads, its store first restored from its group's state
    /// in `groups` (DESIGN.md §8 step 3: the new head's V is the successor's MAX). The failed
    /// head's worker must have been dropped.
    pub fn restored_head(
        &self,
        ring: &Ring,
        s: ServerId,
        groups: &[GroupState],
    ) -> Result<Option<Head<'_>>, ReplicaError> {
        if let Some(mb) = ring.middlebox_at(s) {
            let state = groups
                .iter()
                .find(|g| g.middlebox == mb)
                .ok_or(ReplicaError::Restore(
                    "the state of the headed group is missing",
                ))?;
            self.stores[usize::from(mb.0)].restore(&state.snapshot)?;
        }
        Ok(self.head(ring, s))
    }

    /// What each lane of server `s` of `ring` from lane `from` on heads: its middlebox and one
    /// worker of that middlebox's store per lane, as many lanes as the store has workers. A
    /// replica-only server (a chain shorter than f + 1) heads nothing, in as many lanes as the
    /// chain's most threaded middlebox.
    pub fn head_lanes(&self, ring: &Ring, s: ServerId, from: u16) -> Vec<Option<Head<'_>>> {
        let Some(mb) = ring.middlebox_at(s) else {
            let most = self.stores.iter().map(Store::workers).max().unwrap_or(1);
            return (from..most.max(1)).map(|_| None).collect();
        };
        let workers = self.stores[usize::from(mb.0)].workers();
        (from..workers).map(|w| Some(self.worker(mb, w))).collect()
    }

    /// What server `s` of `ring` heads: its middlebox and worker 0 of that middlebox's store.
    pub fn head(&self, ring: &Ring, s: ServerId) -> Option<Head<'_>> {
        ring.middlebox_at(s).map(|mb| self.worker(mb, 0))
    }

    /// Middlebox `mb` with worker `w` of its store, which must not be out already.
    fn worker(&self, mb: MbIndex, w: u16) -> Head<'_> {
        let i = usize::from(mb.0);
        let worker = self.stores[i]
            .worker(w)
            .expect("each head hands out each worker once");
        (mb, self.middleboxes[i].as_ref(), worker)
    }
}
