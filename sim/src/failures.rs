//! Failures in the simulation (DESIGN.md §8, §10): crashes of up to f servers at once, lost
//! heartbeats, and the orchestrator's part: detection after missed heartbeats, a new epoch that
//! fences the old one, the replacements' state fetched from the planned sources (through the
//! checked byte form), and the recovery invariant checked after every recovery; and outages of
//! the orchestrator, during which nothing of that happens while the servers serve on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_node::lanes::{export_group, join};
use ftc_node::{Loss, Output, Server};
use ftc_orchestrator::detector::Detector;
use ftc_orchestrator::plan::{plan, Transfer};
use ftc_replica::GroupState;
use ftc_stm::Store;

use crate::net::Event;
use crate::rng::Rng;
use crate::{holds, Sim};

/// Heartbeat period and how many missed ones declare a server failed.
const HEARTBEAT_NS: u64 = 20_000;
const MISSES: u32 = 3;
/// From the declaration to the replacements holding their state: launch and transfer.
const RESTART_NS: u64 = 30_000;
/// Between one replacement's fetch and the next.
const FETCH_GAP_NS: u64 = 3_000;

/// What the orchestrator knows and the world's truth about failed servers.
#[derive(Debug)]
pub(crate) struct Failures {
    rng: Rng,
    /// Servers down (crashed, or killed on suspicion), not yet replaced.
    down: BTreeSet<ServerId>,
    /// Those of them the orchestrator declared failed.
    declared: BTreeSet<ServerId>,
    /// The orchestrator's failure detector.
    detector: Detector,
    /// Whether a recovery is under way (its `Recover` event scheduled).
    recovering: bool,
    /// Heartbeats get lost only before this (while traffic is offered).
    faults_until: u64,
    /// The recovery whose replacements are fetching their state.
    round: Option<Round>,
    /// When the orchestrator is away: from, to.
    outages: Vec<(u64, u64)>,
    /// The replica stores of each server that went down, as they were then (nobody writes
    /// them any more): output commit counts a member that is down by what it held.
    pub(crate) dead: BTreeMap<ServerId, Vec<(MbIndex, Arc<Store>)>>,
}

/// One recovery's fetches: who, what from whom, and what was fetched so far (in order).
#[derive(Debug)]
struct Round {
    failed: Vec<ServerId>,
    transfers: Vec<Transfer>,
    fetched: Vec<(ServerId, Vec<GroupState>)>,
}

impl Failures {
    pub(crate) fn new(ring: Ring, seed: u64) -> Self {
        Failures {
            rng: Rng::new(seed ^ 0xdead_5e4e_0000_0001),
            down: BTreeSet::new(),
            declared: BTreeSet::new(),
            detector: {
                let mut detector = Detector::new(HEARTBEAT_NS, MISSES);
                for s in ring.server_ids() {
                    detector.watch(s, 0);
                }
                detector
            },
            recovering: false,
            faults_until: 0,
            round: None,
            outages: Vec::new(),
            dead: BTreeMap::new(),
        }
    }

    /// When the orchestrator is back, if it is away at `now`.
    fn away(&self, now: u64) -> Option<u64> {
        self.outages
            .iter()
            .filter(|&&(from, to)| (from..to).contains(&now))
            .map(|&(_, to)| to)
            .max()
    }
}

impl Sim<'_> {
    /// Schedule the crashes (at random times while traffic is offered) and the heartbeats.
    pub(crate) fn schedule_failures(&mut self, traffic_end: u64) {
        let faults = self.config.faults;
        if faults.crashes == 0 && faults.heartbeat_loss == 0.0 && faults.outages == 0 {
            return;
        }
        // From a stream of the seed of their own, so that runs without outages are the runs
        // they were.
        let mut rng = Rng::new(self.config.seed ^ 0x007a_6e00_0000_0004);
        for _ in 0..faults.outages {
            self.failures.outages.push(rng.stretch(traffic_end));
        }
        let f = self.ring.f() as u64;
        for _ in 0..faults.crashes {
            let at = self.failures.rng.below(traffic_end.max(1));
            let count = 1 + self.failures.rng.below(f) as u32;
            self.net.schedule(at, Event::Crash(count));
        }
        self.failures.faults_until = traffic_end;
        self.net.schedule(HEARTBEAT_NS, Event::Heartbeat);
    }

    /// `count` live servers fail. The fault model keeps at most f down at once: while fewer
    /// than `count` more may fail (an earlier failure is not recovered yet), the event waits a
    /// heartbeat period and tries again, so that every crash event asked for happens, in full.
    pub(crate) fn crash(&mut self, count: u32) {
        let room = self.ring.f().saturating_sub(self.failures.down.len());
        if (count as usize) > room {
            self.net
                .schedule(self.now() + HEARTBEAT_NS, Event::Crash(count));
            return;
        }
        self.report.crashes += 1;
        for _ in 0..count {
            let alive: Vec<ServerId> = self
                .ring
                .server_ids()
                .filter(|s| self.servers[usize::from(s.0)].is_some())
                .collect();
            let victim = alive[self.failures.rng.below(alive.len() as u64) as usize];
            self.take_down(victim);
        }
    }

    /// Server `s` stops: its process and everything in it are gone.
    fn take_down(&mut self, s: ServerId) {
        self.report.failures += 1;
        self.failures.down.insert(s);
        let stores = self.first_lane(s).and_then(Server::replica).map(|r| {
            self.ring
                .replicated_by(s)
                .filter_map(|mb| Some((mb, Arc::clone(r.store(mb)?))))
                .collect()
        });
        self.failures.dead.insert(s, stores.unwrap_or_default());
        self.fenced[usize::from(s.0)] = true;
        for mut server in self.servers[usize::from(s.0)].take().into_iter().flatten() {
            // The packets inside it are lost with it.
            server.fence();
            while let Some(out) = server.poll_output() {
                if let Output::Lost { handle, why } = out {
                    self.lost_by(s, handle, why);
                }
            }
        }
    }

    /// Live servers send heartbeats (some get lost); the orchestrator declares the servers
    /// whose last heartbeat is too old failed, and starts a recovery.
    pub(crate) fn heartbeat(&mut self) {
        let now = self.now();
        if self.failures.away(now).is_some() {
            // Nobody hears heartbeats. Once the orchestrator is back, its detector takes the
            // time it was not asked as its own lateness, nobody's silence: a server that
            // crashed meanwhile is declared a detection timeout after the return.
            self.net.schedule(now + HEARTBEAT_NS, Event::Heartbeat);
            return;
        }
        let loss = if now < self.failures.faults_until {
            self.config.faults.heartbeat_loss
        } else {
            0.0
        };
        for s in self.ring.server_ids() {
            if self.servers[usize::from(s.0)].is_some() && !self.failures.rng.chance(loss) {
                self.failures.detector.heartbeat(s, now);
            }
        }
        // Declared servers are no longer watched, until their replacements start.
        let mut waiting = Vec::new();
        while let Some(failure) = self.failures.detector.poll_failed(now) {
            let s = failure.server;
            if !self.failures.down.contains(&s) {
                // Suspected on lost heartbeats: the orchestrator fences it off and replaces it,
                // as for a crash; the fault model keeps at most f down, so past that it waits.
                if self.failures.down.len() >= self.ring.f() {
                    waiting.push(failure);
                    continue;
                }
                self.take_down(s);
            }
            self.declare(s);
        }
        for failure in waiting {
            self.failures
                .detector
                .watch(failure.server, failure.last_heartbeat);
        }
        if !self.failures.declared.is_empty() && !self.failures.recovering {
            self.failures.recovering = true;
            self.net.schedule(now + RESTART_NS, Event::Recover);
        }
        // Heartbeats go on until every crash event happened and was recovered.
        let quiet = now >= self.failures.faults_until
            && self.failures.down.is_empty()
            && self.report.crashes == u64::from(self.config.faults.crashes);
        if !quiet || self.failures.recovering {
            self.net.schedule(now + HEARTBEAT_NS, Event::Heartbeat);
        }
    }

    /// The orchestrator declares `s` failed: a new epoch, and every live server fences the old
    /// one (DESIGN.md §8 step 1).
    fn declare(&mut self, s: ServerId) {
        // Declared servers are no longer watched, until their replacements start: a source found
        // dead during a fetch, declared here before the detector noticed its silence, would
        // otherwise be declared again once it did, and that stale declaration would replace
        // the server a second time after its recovery (seed 5001893 of Ch-5 with f = 2).
        self.failures.detector.unwatch(s);
        self.failures.declared.insert(s);
        self.epoch += 1;
        for i in self.ring.server_ids() {
            self.fenced[usize::from(i.0)] = true;
            for server in self.servers[usize::from(i.0)].iter_mut().flatten() {
                server.fence();
            }
            self.drain_server(i);
        }
    }

    /// The replacements are up: plan who fetches what from whom (a source found down is
    /// declared failed too and the plan made again); the fetches follow, one replacement at a
    /// time, with the rest of the chain going on in between, as in a real recovery.
    pub(crate) fn recover(&mut self) {
        if let Some(back) = self.failures.away(self.now()) {
            self.net.schedule(back, Event::Recover);
            return;
        }
        let transfers = loop {
            let transfers = plan(&self.ring, &self.failures.declared, &BTreeSet::new())
                .expect("the fault model keeps at most f servers down");
            match transfers
                .iter()
                .find(|t| self.failures.down.contains(&t.source))
            {
                Some(t) => self.declare(t.source),
                None => break transfers,
            }
        };
        let failed = std::mem::take(&mut self.failures.declared)
            .into_iter()
            .collect();
        self.failures.round = Some(Round {
            failed,
            transfers,
            fetched: Vec::new(),
        });
        self.net.schedule(self.now() + FETCH_GAP_NS, Event::Fetch);
    }

    /// The next replacement fetches its groups' state; after the last, the chain reroutes. A
    /// source that failed meanwhile makes the round start over with a new plan.
    pub(crate) fn fetch(&mut self) {
        let now = self.now();
        if let Some(back) = self.failures.away(now) {
            self.net.schedule(back, Event::Fetch);
            return;
        }
        let Some(mut round) = self.failures.round.take() else {
            return;
        };
        let s = round.failed[round.fetched.len()];
        let mine: Vec<Transfer> = round
            .transfers
            .iter()
            .filter(|t| t.to == s)
            .copied()
            .collect();
        if let Some(t) = mine.iter().find(|t| self.failures.down.contains(&t.source)) {
            let dead = t.source;
            if !self.failures.declared.contains(&dead) {
                self.declare(dead);
            }
            self.failures.declared.extend(round.failed);
            self.net.schedule(now + FETCH_GAP_NS, Event::Recover);
            return;
        }
        let groups: Vec<GroupState> = mine.iter().map(|t| self.export(t)).collect();
        round.fetched.push((s, groups));
        if round.fetched.len() < round.failed.len() {
            self.failures.round = Some(round);
            self.net.schedule(now + FETCH_GAP_NS, Event::Fetch);
            return;
        }
        for (s, groups) in round.fetched {
            let head = self
                .heads
                .restored_head(&self.ring, s, &groups)
                .expect("a planned transfer restores the head");
            let server = Server::restore(
                self.ring,
                s,
                self.partitions,
                head,
                self.server_config.clone(),
                &groups,
                now,
            )
            .expect("a planned transfer restores the replica");
            let more = self.heads.head_lanes(&self.ring, s, 1).into_iter();
            let lanes =
                join(server, more, self.partitions, &self.server_config).expect("valid partitions");
            self.servers[usize::from(s.0)] = Some(lanes);
            self.failures.down.remove(&s);
            self.failures.detector.watch(s, now);
        }
        self.failures.recovering = false;
        self.report.recoveries += 1;
        self.check_recovery();
        for s in self.ring.server_ids() {
            // A server down (crashed since the round began) stays fenced until it is replaced.
            if let Some(lanes) = self.servers[usize::from(s.0)].as_mut() {
                for server in lanes {
                    server.resume(now);
                }
                self.fenced[usize::from(s.0)] = false;
            }
            self.drain_server(s);
        }
    }

    /// What a transfer moves, through the checked byte form.
    fn export(&self, t: &Transfer) -> GroupState {
        let source = self.servers[usize::from(t.source.0)]
            .as_ref()
            .expect("sources are alive");
        let state = export_group(source, t.group).expect("a source is in the group");
        let bytes = state.encode().expect("a store encodes");
        let mut state = GroupState::decode(&bytes).expect("what encodes decodes");
        if self.config.broken_recovery && t.as_head {
            let empty = ftc_stm::Store::new(self.partitions, 1).expect("valid");
            state.snapshot = empty.export_bytes().expect("an empty store exports");
        }
        state
    }

    /// DESIGN.md §10: every released packet's effects are in the restored head stores: what
    /// it wrote, and what it read (a write it read may be of a packet that never left).
    fn check_recovery(&mut self) {
        let mut broken = Vec::new();
        for (id, info) in self.packets.iter().filter(|(_, i)| i.released) {
            for (mb, kind, deps) in &info.logs {
                let head = &self.heads.stores[usize::from(*mb)];
                if !holds(head, *kind, deps) {
                    broken.push(format!(
                        "recovery: packet {id} was released, but its {kind:?} log of m{mb} ({deps:?}) is not covered by the recovered state"
                    ));
                }
            }
        }
        for v in broken {
            self.violation(v);
        }
    }

    /// Server `s` says it lost a packet ([`Output::Lost`]) for the reason `why`: only a fenced
    /// server may, since a fence is what drops the packets a server holds, and it comes only
    /// with a failure; or a server at its retain limit, by design.
    pub(crate) fn lost_by(&mut self, s: ServerId, id: u64, why: Loss) {
        if why == Loss::RetainFull {
            self.report.lost_to_retain_limit += 1;
            return self.forget(id);
        }
        if !self.fenced[usize::from(s.0)] {
            let now = self.now();
            self.violation(format!(
                "lost without a failure: server {} lost packet {id} at t={now}ns while not fenced",
                s.0
            ));
        }
        self.lost_to_failure(id);
    }

    /// A packet lost to a failure: inside a failed server, sent to one, or fenced.
    pub(crate) fn lost_to_failure(&mut self, id: u64) {
        self.report.lost_to_failures += 1;
        self.forget(id);
    }

    /// A packet lost: no longer expected to leave.
    fn forget(&mut self, id: u64) {
        let info = self.info(id);
        info.failed = true;
        let flow = info.flow;
        if let Some(queue) = self.at_buffer.get_mut(&flow) {
            queue.retain(|&x| x != id);
        }
    }
}
