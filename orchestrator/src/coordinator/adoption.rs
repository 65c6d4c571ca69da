//! The adoption of a running chain by a coordinator that has just started: its predecessor
//! went away (the process died, or was restarted), and the nodes, which served on without it,
//! rejoin saying where they stand ([`Serving`]).

use std::fmt;
use std::time::Duration;

use ftc_chain::ring::ServerId;

use crate::control::Serving;

/// How often a node that lost its orchestrator tries to join it again: every heartbeat period,
/// but no more often than every 10 ms, and at least every second.
pub fn rejoin_period(heartbeat: Duration) -> Duration {
    heartbeat.clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// The rejoins heard so far, from the first one until every position rejoined or the grace
/// ran out.
#[derive(Debug)]
pub(super) struct Adoption {
    /// When the first node rejoined.
    pub(super) since: u64,
    /// When positions that have not rejoined are taken for failed.
    pub(super) deadline: u64,
    /// What each position's node said as it rejoined.
    rejoined: Vec<Option<Serving>>,
}

impl Adoption {
    /// An adoption of `servers` positions started at `now` by a rejoin, with `grace` for the
    /// others.
    pub(super) fn new(now: u64, grace: u64, servers: usize) -> Adoption {
        Adoption {
            since: now,
            deadline: now.saturating_add(grace),
            rejoined: vec![None; servers],
        }
    }

    /// The node at `s` rejoined, saying `serving` (a later rejoin at a position replaces an
    /// earlier one, as the driver's connections do).
    pub(super) fn rejoin(&mut self, s: ServerId, serving: Serving) {
        self.rejoined[usize::from(s.0)] = Some(serving);
    }

    pub(super) fn complete(&self) -> bool {
        self.rejoined.iter().all(Option::is_some)
    }

    /// Every position's rejoin, `None` where its node has not rejoined.
    pub(super) fn rejoined(&self) -> impl Iterator<Item = (ServerId, Option<Serving>)> + '_ {
        (0..).map(ServerId).zip(self.rejoined.iter().copied())
    }

    /// The newest epoch a node is in: the chain's.
    pub(super) fn epoch(&self) -> u32 {
        self.rejoined
            .iter()
            .flatten()
            .map(|s| s.epoch)
            .max()
            .unwrap_or(0)
    }

    /// Whether the chain runs as its nodes left it: all rejoined, all in the newest epoch, and
    /// none fenced waiting for a reroute.
    pub(super) fn undisturbed(&self) -> bool {
        let epoch = self.epoch();
        self.complete()
            && self
                .rejoined
                .iter()
                .flatten()
                .all(|s| s.epoch == epoch && s.flowing())
    }
}

/// How a coordinator took over a running chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Adopted {
    /// The epoch its nodes were in (the newest of them).
    pub epoch: u32,
    /// The positions whose nodes rejoined.
    pub rejoined: Vec<u16>,
    /// The epoch of the recovery that follows, when the chain was not left whole and flowing:
    /// positions that did not rejoin within the grace are replaced, and every node fenced and
    /// rerouted.
    pub recovery: Option<u32>,
    /// More positions did not rejoin than the chain can recover: the coordinator halted
    /// ([`Coordinator::halted`](super::Coordinator::halted) says why) instead.
    pub halted: bool,
}

impl fmt::Display for Adopted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "adopted the chain its nodes ran in epoch {}: positions {:?} rejoined",
            self.epoch, self.rejoined
        )?;
        match self.recovery {
            _ if self.halted => write!(f, "; more are missing than the chain can recover"),
            Some(epoch) => write!(f, "; recovering the rest in epoch {epoch}"),
            None => write!(f, "; it runs on undisturbed"),
        }
    }
}
