//! Servers declared failed that the coordinator has not acted on yet (not fenced, not
//! replaced): those declared during a reroute, recovered once it finishes, and those that
//! would leave more failed than the chain can recover (more than f, or a whole group). A
//! loaded machine can keep a live server from its heartbeats as long as a dead one is silent,
//! so these are not a verdict yet: a suspect that beats again is cleared, the rest are
//! recovered as soon as they can be, and the coordinator halts only if they could not be for
//! a whole grace.

use std::collections::BTreeMap;

use ftc_chain::ring::ServerId;

use crate::detector::Failure;

#[derive(Debug)]
pub(super) struct Suspects {
    /// Each suspect's failure and when it was declared.
    declared: BTreeMap<ServerId, (Failure, u64)>,
    /// How long recovering every suspect may stay impossible before the coordinator halts.
    grace_ns: u64,
    /// Since when it has been impossible, if it is.
    unrecoverable_since: Option<u64>,
}

impl Suspects {
    pub(super) fn new(grace_ns: u64) -> Suspects {
        Suspects {
            declared: BTreeMap::new(),
            grace_ns,
            unrecoverable_since: None,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.declared.is_empty()
    }

    pub(super) fn servers(&self) -> impl Iterator<Item = ServerId> + '_ {
        self.declared.keys().copied()
    }

    pub(super) fn insert(&mut self, failure: Failure, declared_at: u64) {
        self.declared.insert(failure.server, (failure, declared_at));
    }

    /// `server` sent a heartbeat: whether it was a suspect (it no longer is).
    pub(super) fn clear(&mut self, server: ServerId) -> bool {
        let was = self.declared.remove(&server).is_some();
        if self.declared.is_empty() {
            self.unrecoverable_since = None;
        }
        was
    }

    /// Every suspect, to be recovered now (failure, declared at), the first declared first (a
    /// recovery they start counts from it), then in order of position.
    pub(super) fn take(&mut self) -> Vec<(Failure, u64)> {
        self.recoverable();
        let mut all: Vec<_> = std::mem::take(&mut self.declared).into_values().collect();
        all.sort_by_key(|&(failure, declared_at)| (declared_at, failure.server));
        all
    }

    /// Recovering every suspect is possible (again).
    pub(super) fn recoverable(&mut self) {
        self.unrecoverable_since = None;
    }

    /// Recovering every suspect is impossible at `now`: whether it has been for the grace.
    pub(super) fn unrecoverable(&mut self, now: u64) -> bool {
        let since = *self.unrecoverable_since.get_or_insert(now);
        now.saturating_sub(since) >= self.grace_ns
    }

    /// When the grace runs out, if recovering the suspects is impossible.
    pub(super) fn deadline(&self) -> Option<u64> {
        self.unrecoverable_since
            .map(|since| since.saturating_add(self.grace_ns))
    }
}
