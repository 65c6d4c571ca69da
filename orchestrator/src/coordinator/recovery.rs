//! The bookkeeping of one recovery in progress: which positions failed, what each replacement
//! fetches and how far it got, who still has to acknowledge the reroute, and the phase timings
//! that become its [`RecoveryReport`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ftc_chain::ring::{MbIndex, ServerId};

use crate::detector::Failure;
use crate::plan::Transfer;

/// One finished recovery and how long its phases took.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecoveryReport {
    /// The epoch the chain runs in after it.
    pub epoch: u32,
    /// The positions recovered.
    pub failed: Vec<u16>,
    /// From the first failed server's last heartbeat to its declaration.
    pub detection_ns: u64,
    /// From launch to join, for the slowest replacement.
    pub start_ns: u64,
    /// From `Recover` sent to `Ready`, for the slowest replacement.
    pub transfer_ns: u64,
    /// From `Reroute` sent to the last `Resumed`.
    pub reroute_ns: u64,
    /// From the first declaration to the last `Resumed`.
    pub total_ns: u64,
    /// The state bytes the replacements moved.
    pub bytes: u64,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |ns: u64| ns as f64 / 1e6;
        write!(
            f,
            "epoch {}, recovered {:?}: detection {:.3} ms, start {:.3} ms, transfer {:.3} ms, \
             reroute {:.3} ms, total after detection {:.3} ms, {} bytes",
            self.epoch,
            self.failed,
            ms(self.detection_ns),
            ms(self.start_ns),
            ms(self.transfer_ns),
            ms(self.reroute_ns),
            ms(self.total_ns),
            self.bytes
        )
    }
}

/// One recovery, from the first failure declared to the last `Resumed`.
#[derive(Debug)]
pub(super) struct Recovery {
    /// When the first failure was declared, and how long that server had been silent then.
    declared_at: u64,
    detection_ns: u64,
    /// The replacement at every failed position.
    pub(super) replacements: BTreeMap<ServerId, Replacement>,
    /// Sources a replacement reported it could not fetch from: alive as far as the detector
    /// knows, passed over for other members while there are any ([`crate::plan`]).
    avoided: BTreeSet<ServerId>,
    /// Set once every replacement is ready.
    pub(super) reroute: Option<Reroute>,
}

/// A replacement at one failed position.
#[derive(Debug)]
pub(super) struct Replacement {
    launched_at: u64,
    joined_at: Option<u64>,
    recover_sent_at: u64,
    /// When it reported ready, and the bytes it moved.
    ready: Option<(u64, u64)>,
    /// What it fetches, as last sent to it.
    pub(super) transfers: Vec<Transfer>,
    /// The fetches it reported failed, per group.
    failures: BTreeMap<MbIndex, u32>,
    /// Transfers to send it again once due (nanoseconds): from a source that could not serve
    /// before, after a back-off.
    pub(super) retries: Vec<(u64, Transfer)>,
}

#[derive(Debug)]
pub(super) struct Reroute {
    sent_at: u64,
    /// The positions that have not acknowledged it yet.
    pub(super) awaiting: BTreeSet<ServerId>,
}

impl Recovery {
    pub(super) fn new(first: Failure, declared_at: u64) -> Recovery {
        Recovery {
            declared_at,
            detection_ns: declared_at.saturating_sub(first.last_heartbeat),
            replacements: BTreeMap::new(),
            avoided: BTreeSet::new(),
            reroute: None,
        }
    }

    pub(super) fn failed(&self) -> impl Iterator<Item = ServerId> + '_ {
        self.replacements.keys().copied()
    }

    /// The positions being replaced.
    pub(super) fn failed_set(&self) -> BTreeSet<ServerId> {
        self.failed().collect()
    }

    /// The sources a replacement could not fetch from.
    pub(super) fn avoided(&self) -> &BTreeSet<ServerId> {
        &self.avoided
    }

    pub(super) fn avoid(&mut self, source: ServerId) {
        self.avoided.insert(source);
    }

    /// A replacement (re)launched at `position`; a failed position is not a source to avoid
    /// but one not to use at all.
    pub(super) fn launch(&mut self, position: ServerId, now: u64) {
        self.avoided.remove(&position);
        self.replacements.insert(
            position,
            Replacement {
                launched_at: now,
                joined_at: None,
                recover_sent_at: 0,
                ready: None,
                transfers: Vec::new(),
                failures: BTreeMap::new(),
                retries: Vec::new(),
            },
        );
    }

    /// The replacement at `position` if it is fetching its state (joined, not yet ready).
    pub(super) fn fetching(&mut self, position: ServerId) -> Option<&mut Replacement> {
        self.replacements
            .get_mut(&position)
            .filter(|r| r.joined_at.is_some() && r.ready.is_none())
    }

    /// When the next retry of a fetch is due, if any is pending.
    pub(super) fn next_retry(&self) -> Option<u64> {
        self.replacements
            .values()
            .flat_map(|r| r.retries.iter().map(|&(at, _)| at))
            .min()
    }

    pub(super) fn all_ready(&self) -> bool {
        self.replacements.values().all(|r| r.ready.is_some())
    }

    pub(super) fn start_reroute(&mut self, now: u64, servers: impl Iterator<Item = ServerId>) {
        self.reroute = Some(Reroute {
            sent_at: now,
            awaiting: servers.collect(),
        });
    }

    /// The report of this recovery, finished at `now` in `epoch`.
    pub(super) fn report(&self, epoch: u32, now: u64) -> RecoveryReport {
        let slowest = |phase: fn(&Replacement) -> u64| {
            self.replacements.values().map(phase).max().unwrap_or(0)
        };
        RecoveryReport {
            epoch,
            failed: self.failed().map(|s| s.0).collect(),
            detection_ns: self.detection_ns,
            start_ns: slowest(|r| r.joined_at.map_or(0, |at| at.saturating_sub(r.launched_at))),
            transfer_ns: slowest(|r| {
                r.ready
                    .map_or(0, |(at, _)| at.saturating_sub(r.recover_sent_at))
            }),
            reroute_ns: self
                .reroute
                .as_ref()
                .map_or(0, |r| now.saturating_sub(r.sent_at)),
            total_ns: now.saturating_sub(self.declared_at),
            bytes: self
                .replacements
                .values()
                .filter_map(|r| r.ready)
                .map(|(_, b)| b)
                .sum(),
        }
    }
}

impl Replacement {
    /// Whether it has joined (it is then watched and fetching, or ready).
    pub(super) fn joined(&self) -> bool {
        self.joined_at.is_some()
    }

    pub(super) fn join(&mut self, now: u64, transfers: Vec<Transfer>) {
        self.joined_at = Some(now);
        self.recover_sent_at = now;
        self.transfers = transfers;
    }

    pub(super) fn ready(&mut self, now: u64, bytes: u64) {
        self.ready = Some((now, bytes));
        self.retries.clear();
    }

    /// A fetch of `group` failed: how many of its fetches have, this one included.
    pub(super) fn failed_fetch(&mut self, group: MbIndex) -> u32 {
        let n = self.failures.entry(group).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// The retries due at `now`, taken out.
    pub(super) fn take_due(&mut self, now: u64) -> Vec<Transfer> {
        let (due, later) = self.retries.iter().partition(|&&(at, _)| at <= now);
        self.retries = later;
        due.into_iter().map(|(_, t)| t).collect()
    }
}

impl Reroute {
    /// `server` acknowledged (or will never: it failed); whether nobody is left.
    pub(super) fn done(&mut self, server: ServerId) -> bool {
        self.awaiting.remove(&server);
        self.awaiting.is_empty()
    }
}
