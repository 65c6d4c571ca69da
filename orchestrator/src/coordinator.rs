//! The orchestrator's state machine (sans-IO): deploys a chain, watches its servers' heartbeats
//! and drives recovery when some fail (DESIGN.md §8).
//!
//! Inputs: [`Coordinator::handle`] (a message from a server) and [`Coordinator::handle_timeout`]
//! (once [`Coordinator::poll_timeout`] has passed). After any input, drain
//! [`Coordinator::poll_command`] (launch a replacement, send a message) and
//! [`Coordinator::poll_report`] (a finished recovery), then re-arm the timer from
//! `poll_timeout`. Time is `now`, in nanoseconds, from any monotonic clock.
//!
//! Deployment: once every position has joined, each gets an `Assign` of epoch 1 and is watched.
//! Recovery: when servers are declared failed, the epoch goes up, every live server gets a
//! `Fence` and every failed position a `Launch`; a replacement that joins gets a `Recover` with
//! its [plan](crate::plan); once all replacements are ready, every server gets a `Reroute`, and
//! once all of them resumed, a [`RecoveryReport`]. A failure declared before the reroute joins
//! the recovery in progress (same epoch, a longer `Fence`); one declared during the reroute is
//! recovered right after it. Failures that would leave a group without an alive member, or
//! more than f servers failed, are suspects (module `suspects`) first: the coordinator waits
//! for them to beat again (a live server on a starved machine) and recovers what remains as soon as it
//! can; it halts ([`Coordinator::halted`]) when the grace runs out, and never runs a recovery
//! that would lose state.
//!
//! Adoption: a coordinator whose first `Join` is a rejoin (a node that serves already, module
//! `adoption`) takes over the running chain instead of deploying one. Once every position
//! rejoined, or `misses + 1` rejoin periods after the first rejoin (a live node tries every
//! period: those that did not are taken for failed, as a failure detector takes a server
//! silent for `misses` heartbeat periods), the chain is in the newest
//! epoch its nodes name; when all rejoined, all in that epoch and none fenced, it runs on as it
//! was, and nothing is sent; otherwise a recovery of the next epoch replaces the positions that
//! did not rejoin (or, when none is missing, just fences and reroutes every node).
//! [`Coordinator::poll_adoption`] says which. A running coordinator takes a rejoin of the node
//! it knows at a position (same addresses, not replaced since) as a heartbeat: its control
//! connection broke and it connected again.

mod adoption;
mod recovery;
mod suspects;

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use ftc_chain::ring::{Ring, ServerId};

use crate::control::{Fetch, Message, Peer, Serving};
use crate::detector::{Detector, Failure};
use crate::plan::{plan, replan, PlanError, Transfer};
use adoption::Adoption;
pub use adoption::{rejoin_period, Adopted};
use recovery::Recovery;
pub use recovery::RecoveryReport;
use suspects::Suspects;

/// How servers are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// How often servers send heartbeats.
    pub heartbeat_period_ns: u64,
    /// How many periods without a heartbeat declare a server failed.
    pub misses: u32,
    /// How long failures beyond what the chain can recover are waited for before the
    /// coordinator halts, in detection timeouts (`heartbeat_period_ns × misses`): a live
    /// server that a loaded machine kept from its heartbeats beats again meanwhile.
    pub suspect_grace: u32,
    /// Whether failed servers are recovered. Deployments whose servers keep no replicas (the
    /// NF and FTMB baselines) are not: a failure halts the coordinator once the grace is over.
    pub recover: bool,
    /// How long a launched replacement may take to join (its process to start and connect);
    /// one that has not joined by then, and not sent a heartbeat for a detection timeout
    /// either, died or never started, and is launched again.
    pub start_timeout_ns: u64,
}

impl CoordinatorConfig {
    /// The silence that declares a server failed, `heartbeat_period_ns × misses`.
    fn detection_ns(&self) -> u64 {
        self.heartbeat_period_ns
            .saturating_mul(u64::from(self.misses))
    }

    /// The longest a failure may go undetected: the silence that declares it, and a period more
    /// for heartbeats that a busy machine delays. A run that waits for recoveries after its
    /// traffic waits this long besides what the recoveries themselves take.
    pub fn detection_bound(&self) -> Duration {
        Duration::from_nanos(self.detection_ns().saturating_add(self.heartbeat_period_ns))
    }
}

impl Default for CoordinatorConfig {
    /// A heartbeat every 10 ms, failed after 3 missed, 10 detection timeouts of grace, 5 s for
    /// a replacement to start: suited to one data centre.
    fn default() -> Self {
        CoordinatorConfig {
            heartbeat_period_ns: 10_000_000,
            misses: 3,
            suspect_grace: 10,
            recover: true,
            start_timeout_ns: 5_000_000_000,
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start a replacement server at `position`, in `epoch`; it joins with a `Join`.
    Launch { position: ServerId, epoch: u32 },
    /// Send `msg` to the server at `to`.
    Send { to: ServerId, msg: Message },
}

/// How many fetches of one group a replacement may report failed before the coordinator gives
/// up on the recovery: each tries the next member of the group, and a member tried before only
/// after a back-off that doubles from a heartbeat period up to 128 of them (with the default
/// 10 ms period, about 4 s of retries in all besides the fetches themselves).
const MAX_FETCH_ATTEMPTS: u32 = 10;

/// Why the coordinator stopped: recovering would lose state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot recover epoch {epoch} after the failure of {failed:?}")]
pub struct Unrecoverable {
    pub epoch: u32,
    pub failed: Vec<u16>,
    #[source]
    pub cause: PlanError,
}

#[derive(Debug)]
enum Phase {
    Deploying,
    /// Taking over a running chain, from its first rejoin.
    Adopting(Adoption),
    Running,
    Recovering(Recovery),
    Halted(Unrecoverable),
}

/// The orchestrator of one chain.
#[derive(Debug)]
pub struct Coordinator {
    ring: Ring,
    /// The run id its `Assign`s and `Recover`s carry (drawn by the driver, as random as it can).
    run: u64,
    /// [`CoordinatorConfig::recover`].
    recover: bool,
    /// [`CoordinatorConfig::start_timeout_ns`].
    start_timeout: u64,
    /// How long an adoption waits for the positions that have not rejoined: `misses + 1` rejoin
    /// periods ([`rejoin_period`]).
    adopt_grace: u64,
    /// The first back-off before a fetch is sent again to a source that could not serve it:
    /// [`CoordinatorConfig::heartbeat_period_ns`].
    retry_ns: u64,
    epoch: u32,
    peers: Vec<Option<Peer>>,
    /// The epoch in which the server now at each position started; heartbeats of older epochs
    /// come from a server that was replaced.
    incarnation: Vec<u32>,
    detector: Detector,
    suspects: Suspects,
    phase: Phase,
    commands: VecDeque<Command>,
    reports: VecDeque<RecoveryReport>,
    adopted: Option<Adopted>,
    stale: u64,
    unexpected: u64,
    other_run: u64,
}

impl Coordinator {
    /// A coordinator waiting for every position of `ring` to join, in the run `run`: a number
    /// no other run of a chain with the same secret uses (the driver draws it at random), which
    /// its `Assign`s and `Recover`s carry, and so the state transfers of its replacements.
    pub fn new(ring: Ring, config: CoordinatorConfig, run: u64) -> Coordinator {
        Coordinator {
            ring,
            run,
            recover: config.recover,
            start_timeout: config.start_timeout_ns,
            adopt_grace:
                (rejoin_period(Duration::from_nanos(config.heartbeat_period_ns)).as_nanos() as u64)
                    .saturating_mul(u64::from(config.misses) + 1),
            retry_ns: config.heartbeat_period_ns,
            epoch: 0,
            peers: vec![None; ring.servers()],
            incarnation: vec![0; ring.servers()],
            detector: Detector::new(config.heartbeat_period_ns, config.misses),
            suspects: Suspects::new(
                config
                    .detection_ns()
                    .saturating_mul(u64::from(config.suspect_grace)),
            ),
            phase: Phase::Deploying,
            commands: VecDeque::new(),
            reports: VecDeque::new(),
            adopted: None,
            stale: 0,
            unexpected: 0,
            other_run: 0,
        }
    }

    /// The current epoch: 0 until the chain is deployed, then 1, then one more per recovery.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Whether the chain runs undisturbed: deployed or adopted, and no recovery under way.
    pub fn running(&self) -> bool {
        matches!(self.phase, Phase::Running)
    }

    /// Every position's live server; `None` until it joins and while it is being replaced.
    pub fn peers(&self) -> &[Option<Peer>] {
        &self.peers
    }

    /// The servers declared failed and not acted on yet: not fenced, not replaced, cleared if
    /// they beat again.
    pub fn suspects(&self) -> impl Iterator<Item = ServerId> + '_ {
        self.suspects.servers()
    }

    /// Why the coordinator halted, if it did; it then ignores every input.
    pub fn halted(&self) -> Option<&Unrecoverable> {
        match &self.phase {
            Phase::Halted(why) => Some(why),
            _ => None,
        }
    }

    /// Messages of an older epoch (or an older server at their position), ignored.
    pub fn stale_messages(&self) -> u64 {
        self.stale
    }

    /// Messages that made no sense now (unknown position, wrong phase, a future epoch, a kind
    /// only servers receive), ignored.
    pub fn unexpected_messages(&self) -> u64 {
        self.unexpected
    }

    /// Messages of another run than this coordinator's (an earlier run's with the same secret,
    /// recorded and replayed, say), ignored.
    pub fn other_run_messages(&self) -> u64 {
        self.other_run
    }

    /// A message from a server; whether it was taken (`false`: it was stale, unexpected or of
    /// another run, and counted so). A driver binds a connection to a position only once that
    /// position's `Join` was taken.
    ///
    /// A replacement launched into the epoch its failed predecessor was fenced in (a failure
    /// added to a recovery in progress) cannot be told from it by epoch: once a `Launch` for a
    /// position is out, the driver must deliver nothing more from the server it replaces (it
    /// closes that server's connection, or kills it).
    pub fn handle(&mut self, now: u64, msg: Message) -> bool {
        let ignored = self.stale + self.unexpected + self.other_run;
        self.take(now, msg);
        self.settle(now);
        self.stale + self.unexpected + self.other_run == ignored
    }

    fn take(&mut self, now: u64, msg: Message) {
        if matches!(self.phase, Phase::Halted(_)) {
            self.unexpected += 1;
            return;
        }
        if msg.run().is_some_and(|run| run != self.run) {
            self.other_run += 1;
            return;
        }
        match msg {
            Message::Join {
                position,
                data,
                transfer,
                serving,
                ..
            } => {
                let peer = Peer {
                    position,
                    data,
                    transfer,
                };
                match serving {
                    None => self.on_join(now, peer),
                    Some(serving) => self.on_rejoin(now, peer, serving),
                }
            }
            Message::Heartbeat {
                position, epoch, ..
            } => self.on_heartbeat(now, position, epoch),
            Message::Ready {
                position,
                epoch,
                bytes,
                ..
            } => self.on_ready(now, position, epoch, bytes),
            Message::TransferFailed {
                position,
                epoch,
                group,
                source,
                ..
            } => self.on_transfer_failed(now, position, epoch, group, source),
            Message::Resumed {
                position, epoch, ..
            } => self.on_resumed(now, position, epoch),
            _ => self.unexpected += 1,
        }
    }

    /// Time passed: declares silent servers failed and recovers them.
    pub fn handle_timeout(&mut self, now: u64) {
        match &self.phase {
            Phase::Halted(_) => return,
            Phase::Adopting(a) if a.deadline <= now => self.adopt(now),
            _ => {}
        }
        while let Some(failure) = self.detector.poll_failed(now) {
            self.on_failure(now, failure);
        }
        self.send_retries(now);
        self.settle(now);
    }

    /// The next thing the driver must do.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When to call [`Coordinator::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let retry = match &self.phase {
            Phase::Halted(_) => return None,
            Phase::Adopting(a) => Some(a.deadline),
            Phase::Recovering(r) => r.next_retry(),
            Phase::Deploying | Phase::Running => None,
        };
        [
            self.detector.poll_timeout(),
            self.suspects.deadline(),
            retry,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The report of a recovery that finished.
    pub fn poll_report(&mut self) -> Option<RecoveryReport> {
        self.reports.pop_front()
    }

    /// How the coordinator took over the running chain its nodes rejoined with, once it did.
    pub fn poll_adoption(&mut self) -> Option<Adopted> {
        self.adopted.take()
    }

    /// `position` as a server of this ring, or `None` (counted) for a stranger.
    fn server(&mut self, position: u16) -> Option<ServerId> {
        if usize::from(position) < self.ring.servers() {
            Some(ServerId(position))
        } else {
            self.unexpected += 1;
            None
        }
    }

    /// Whether `epoch` is the current one; counts it otherwise.
    fn current(&mut self, epoch: u32) -> bool {
        if epoch < self.epoch {
            self.stale += 1;
        } else if epoch > self.epoch {
            self.unexpected += 1;
        }
        epoch == self.epoch
    }

    /// The recovery in progress, if there is one and it is before its reroute; counts the
    /// message otherwise.
    fn fetching_phase(&mut self) -> Option<&mut Recovery> {
        match &mut self.phase {
            Phase::Recovering(r) if r.reroute.is_none() => Some(r),
            _ => {
                self.unexpected += 1;
                None
            }
        }
    }

    fn send(&mut self, to: ServerId, msg: Message) {
        self.commands.push_back(Command::Send { to, msg });
    }

    /// Sends `msg` to every position with a live server.
    fn broadcast(&mut self, msg: &Message) {
        for to in self.live().collect::<Vec<_>>() {
            self.send(to, msg.clone());
        }
    }

    fn live(&self) -> impl Iterator<Item = ServerId> + '_ {
        self.ring
            .server_ids()
            .filter(|s| self.peers[usize::from(s.0)].is_some())
    }

    /// Every position's peer; only called once all are known.
    fn all_peers(&self) -> Vec<Peer> {
        self.peers.iter().flatten().copied().collect()
    }

    fn on_join(&mut self, now: u64, peer: Peer) {
        let position = peer.position;
        let Some(s) = self.server(position) else {
            return;
        };
        match &mut self.phase {
            Phase::Deploying => {
                self.peers[usize::from(position)] = Some(peer);
                if self.peers.iter().all(Option::is_some) {
                    self.assign(now);
                }
            }
            Phase::Recovering(r)
                if r.reroute.is_none()
                    && r.replacements.get(&s).is_some_and(|rep| !rep.joined()) =>
            {
                self.peers[usize::from(position)] = Some(peer);
                self.detector.watch(s, now);
                self.recover(now, s);
            }
            _ => self.unexpected += 1,
        }
    }

    /// A node that serves already joined again. A coordinator that has just started adopts the
    /// chain; a running one takes it back if it is the node it knows at `peer.position`, whose
    /// control connection broke: a heartbeat (before a reroute it names the epoch it was fenced
    /// in or later, as its heartbeats do), and, during a reroute, once it follows the current
    /// epoch's routing, its `Resumed`, which the broken connection may have lost.
    fn on_rejoin(&mut self, now: u64, peer: Peer, serving: Serving) {
        let position = peer.position;
        let Some(s) = self.server(position) else {
            return;
        };
        let i = usize::from(position);
        match &mut self.phase {
            Phase::Deploying if self.peers.iter().all(Option::is_none) => {
                let mut a = Adoption::new(now, self.adopt_grace, self.ring.servers());
                a.rejoin(s, serving);
                self.phase = Phase::Adopting(a);
            }
            Phase::Adopting(a) => a.rejoin(s, serving),
            Phase::Running | Phase::Recovering(_)
                if self.peers[i] == Some(peer)
                    && (self.incarnation[i]..=self.epoch).contains(&serving.epoch) =>
            {
                self.on_heartbeat(now, position, serving.epoch);
                let rerouting = matches!(&self.phase, Phase::Recovering(r)
                    if r.reroute.as_ref().is_some_and(|x| x.awaiting.contains(&s)));
                if rerouting && serving.routed == self.epoch {
                    self.on_resumed(now, position, serving.routed);
                }
                return;
            }
            _ => {
                self.unexpected += 1;
                return;
            }
        }
        self.peers[i] = Some(peer);
        if matches!(&self.phase, Phase::Adopting(a) if a.complete()) {
            self.adopt(now);
        }
    }

    /// The adoption is over (every position rejoined, or the grace ran out): the chain runs on
    /// in the newest epoch its nodes name, or a recovery of the next one begins.
    fn adopt(&mut self, now: u64) {
        let Phase::Adopting(a) = std::mem::replace(&mut self.phase, Phase::Running) else {
            unreachable!("only an adoption is adopted");
        };
        let epoch = a.epoch();
        self.epoch = epoch;
        let mut missing = BTreeSet::new();
        for (s, serving) in a.rejoined() {
            match serving {
                Some(serving) => {
                    self.incarnation[usize::from(s.0)] = serving.epoch;
                    self.detector.watch(s, now);
                }
                None => {
                    missing.insert(s);
                }
            }
        }
        let undisturbed = a.undisturbed();
        let planned = if undisturbed {
            Ok(Vec::new())
        } else if self.recover || missing.is_empty() {
            plan(&self.ring, &missing, &BTreeSet::new())
        } else {
            Err(PlanError::NotRecovered)
        };
        self.adopted = Some(Adopted {
            epoch,
            rejoined: self.live().map(|s| s.0).collect(),
            recovery: (!undisturbed && planned.is_ok()).then_some(epoch + 1),
            halted: planned.is_err(),
        });
        if undisturbed {
            return;
        }
        if let Err(cause) = planned {
            self.phase = Phase::Halted(Unrecoverable {
                epoch,
                failed: missing.iter().map(|s| s.0).collect(),
                cause,
            });
            return;
        }
        self.epoch = epoch + 1;
        let first = Failure {
            server: missing.first().copied().unwrap_or(ServerId(0)),
            last_heartbeat: a.since,
        };
        self.phase = Phase::Recovering(Recovery::new(first, now));
        if missing.is_empty() {
            self.broadcast(&Message::Fence {
                epoch: self.epoch,
                failed: Vec::new(),
            });
            self.reroute(now);
        }
        for s in missing {
            self.add_failure(now, s);
        }
    }

    fn assign(&mut self, now: u64) {
        self.epoch = 1;
        self.incarnation.fill(1);
        let peers = self.all_peers();
        for s in self.ring.server_ids() {
            self.detector.watch(s, now);
            self.send(
                s,
                Message::Assign {
                    run: self.run,
                    epoch: 1,
                    position: s.0,
                    peers: peers.clone(),
                },
            );
        }
        self.phase = Phase::Running;
    }

    /// The replacement at `s` joined: plan its transfers and send them.
    fn recover(&mut self, now: u64, s: ServerId) {
        let Phase::Recovering(r) = &mut self.phase else {
            unreachable!("replacements join during a recovery");
        };
        let transfers = match plan(&self.ring, &r.failed_set(), r.avoided()) {
            Ok(all) => all.into_iter().filter(|t| t.to == s).collect::<Vec<_>>(),
            Err(cause) => return self.halt(cause),
        };
        r.replacements
            .get_mut(&s)
            .expect("the replacement joined")
            .join(now, transfers.clone());
        self.send_recover(s, &transfers);
    }

    fn send_recover(&mut self, to: ServerId, transfers: &[Transfer]) {
        let fetch = transfers.iter().map(|t| self.fetch(t)).collect();
        let (run, epoch) = (self.run, self.epoch);
        self.send(to, Message::Recover { run, epoch, fetch });
    }

    fn fetch(&self, t: &Transfer) -> Fetch {
        let source = self.peers[usize::from(t.source.0)]
            .expect("sources are never failed, so their servers are known");
        Fetch {
            group: t.group.0,
            as_head: t.as_head,
            source: t.source.0,
            addr: source.transfer,
        }
    }

    fn on_heartbeat(&mut self, now: u64, position: u16, epoch: u32) {
        let Some(s) = self.server(position) else {
            return;
        };
        if matches!(self.phase, Phase::Adopting(_)) {
            // The rejoined nodes beat on; they are watched once the chain is adopted.
        } else if epoch < self.incarnation[usize::from(position)] {
            self.stale += 1;
        } else if epoch > self.epoch {
            self.unexpected += 1;
        } else if self.suspects.clear(s) {
            // Only late: nothing was done to it yet, it is watched again.
            self.detector.watch(s, now);
        } else {
            self.detector.heartbeat(s, now);
        }
    }

    fn on_ready(&mut self, now: u64, position: u16, epoch: u32, bytes: u64) {
        let Some(s) = self.server(position) else {
            return;
        };
        if !self.current(epoch) {
            return;
        }
        let Some(r) = self.fetching_phase() else {
            return;
        };
        let Some(replacement) = r.fetching(s) else {
            self.unexpected += 1;
            return;
        };
        replacement.ready(now, bytes);
        if r.all_ready() {
            self.reroute(now);
        }
    }

    /// The recovery in progress reroutes: every server gets the routes of the current epoch,
    /// and the recovery waits for each to resume.
    fn reroute(&mut self, now: u64) {
        let servers = self.ring.server_ids();
        if let Phase::Recovering(r) = &mut self.phase {
            r.start_reroute(now, servers);
        }
        let msg = Message::Reroute {
            epoch: self.epoch,
            peers: self.all_peers(),
        };
        self.broadcast(&msg);
    }

    /// A replacement could not fetch `group` from `source`: it fetches from the next member of
    /// the group instead, or, when every other member failed or could not serve either, from
    /// the same sources again after a back-off (a source that cannot serve is not declared
    /// failed for it: only the detector declares failures). After [`MAX_FETCH_ATTEMPTS`]
    /// failed fetches of one group the coordinator halts.
    fn on_transfer_failed(&mut self, now: u64, position: u16, epoch: u32, group: u8, source: u16) {
        let Some(s) = self.server(position) else {
            return;
        };
        if !self.current(epoch) {
            return;
        }
        let (ring, retry_ns) = (self.ring, self.retry_ns);
        let Some(r) = self.fetching_phase() else {
            return;
        };
        let (failed, avoided) = (r.failed_set(), r.avoided().clone());
        let Some(replacement) = r.fetching(s) else {
            self.unexpected += 1;
            return;
        };
        let Some(i) = replacement
            .transfers
            .iter()
            .position(|t| t.group.0 == group)
        else {
            self.unexpected += 1;
            return;
        };
        let t = replacement.transfers[i];
        if t.source.0 != source || replacement.retries.iter().any(|(_, x)| x.group == t.group) {
            // About a source it was already moved away from, or a report sent twice.
            self.stale += 1;
            return;
        }
        let attempts = replacement.failed_fetch(t.group);
        if attempts >= MAX_FETCH_ATTEMPTS {
            return self.halt(PlanError::Unserved {
                group: t.group,
                to: s,
                attempts,
            });
        }
        let again = match replan(&ring, &failed, &avoided, &t, t.source) {
            Ok(again) => again,
            Err(cause) => return self.halt(cause),
        };
        replacement.transfers[i] = again;
        let tried = again.source == t.source || avoided.contains(&again.source);
        if tried {
            let backoff = retry_ns.saturating_mul(1 << (attempts - 1).min(7));
            replacement
                .retries
                .push((now.saturating_add(backoff), again));
        }
        r.avoid(t.source);
        if !tried {
            self.send_recover(s, &[again]);
        }
    }

    /// Sends the fetches whose back-off is over ([`Coordinator::on_transfer_failed`]).
    fn send_retries(&mut self, now: u64) {
        let Phase::Recovering(r) = &mut self.phase else {
            return;
        };
        let due: Vec<(ServerId, Vec<Transfer>)> = r
            .replacements
            .iter_mut()
            .map(|(&s, rep)| (s, rep.take_due(now)))
            .filter(|(_, due)| !due.is_empty())
            .collect();
        for (s, transfers) in due {
            self.send_recover(s, &transfers);
        }
    }

    fn on_resumed(&mut self, now: u64, position: u16, epoch: u32) {
        let Some(s) = self.server(position) else {
            return;
        };
        if !self.current(epoch) {
            return;
        }
        match &mut self.phase {
            Phase::Recovering(r) if r.reroute.as_ref().is_some_and(|x| x.awaiting.contains(&s)) => {
                if r.reroute.as_mut().expect("checked").done(s) {
                    self.finish(now);
                }
            }
            _ => self.unexpected += 1,
        }
    }

    /// The recovery in progress is complete: report it (the suspects are recovered next).
    fn finish(&mut self, now: u64) {
        let Phase::Recovering(r) = std::mem::replace(&mut self.phase, Phase::Running) else {
            unreachable!("only a recovery finishes");
        };
        self.reports.push_back(r.report(self.epoch, now));
    }

    /// The detector declared a server failed at `now`: a replacement that died before it was
    /// ready (or did not join within the start timeout) is launched again, anything else is a
    /// suspect until [`Coordinator::settle`].
    fn on_failure(&mut self, now: u64, failure: Failure) {
        let s = failure.server;
        match &mut self.phase {
            Phase::Recovering(r) if r.reroute.is_none() && r.replacements.contains_key(&s) => {
                self.relaunch(now, s);
            }
            Phase::Running | Phase::Recovering(_) => self.suspects.insert(failure, now),
            Phase::Deploying | Phase::Adopting(_) | Phase::Halted(_) => {}
        }
    }

    /// Acts on the suspects: a reroute does not wait for them; all of them are recovered at
    /// once (outside a reroute) if the chain can recover them with what failed before; if it
    /// cannot for the whole grace, the coordinator halts.
    fn settle(&mut self, now: u64) {
        if let Phase::Recovering(r) = &mut self.phase {
            if let Some(reroute) = &mut r.reroute {
                for s in self.suspects.servers() {
                    reroute.done(s);
                }
                if reroute.awaiting.is_empty() {
                    self.finish(now);
                }
            }
        }
        if self.suspects.is_empty() {
            return;
        }
        // Once the replacements are ready, only the suspects would be failed.
        let (mut failed, can_act) = match &self.phase {
            Phase::Running => (BTreeSet::new(), true),
            Phase::Recovering(r) if r.reroute.is_none() => (r.failed_set(), true),
            Phase::Recovering(_) => (BTreeSet::new(), false),
            Phase::Deploying | Phase::Adopting(_) | Phase::Halted(_) => return,
        };
        failed.extend(self.suspects.servers());
        let planned = if self.recover {
            plan(&self.ring, &failed, &BTreeSet::new())
        } else {
            Err(PlanError::NotRecovered)
        };
        match planned {
            Ok(_) if can_act => {
                for (failure, declared_at) in self.suspects.take() {
                    self.act(now, failure, declared_at);
                }
            }
            Ok(_) => self.suspects.recoverable(),
            Err(cause) => {
                if self.suspects.unrecoverable(now) {
                    self.halt(cause);
                }
            }
        }
    }

    /// Recover `failure`, declared at `declared_at`: in a new recovery, or in the one in
    /// progress (before its reroute).
    fn act(&mut self, now: u64, failure: Failure, declared_at: u64) {
        if matches!(self.phase, Phase::Running) {
            self.epoch += 1;
            self.phase = Phase::Recovering(Recovery::new(failure, declared_at));
        }
        self.add_failure(now, failure.server);
    }

    /// `s` failed during the recovery in progress (before its reroute): fence it off, launch its
    /// replacement, and launch again every replacement that was told to fetch from it.
    ///
    /// Moving only the transfers from `s` to other sources is not enough. A replacement may
    /// already hold what it fetched from `s`, perhaps more than the group's other members planned
    /// without `s` will hold (a replica that fetched from a head ahead of the new head, which
    /// comes from a successor): the replica would then skip the new head's logs as duplicates.
    /// And one may be past its last fetch, about to report ready, and never read a new
    /// `Recover`; or still wait on `s`. A fresh replacement fetches everything from live sources.
    fn add_failure(&mut self, now: u64, s: ServerId) {
        let Phase::Recovering(r) = &mut self.phase else {
            unreachable!("failures are added to a recovery");
        };
        r.launch(s, now);
        if let Err(cause) = plan(&self.ring, &r.failed_set(), r.avoided()) {
            return self.halt(cause);
        }
        let again: Vec<ServerId> = r
            .replacements
            .iter()
            .filter(|(_, rep)| rep.joined() && rep.transfers.iter().any(|t| t.source == s))
            .map(|(&to, _)| to)
            .collect();
        let failed: Vec<u16> = r.failed().map(|x| x.0).collect();
        self.peers[usize::from(s.0)] = None;
        self.incarnation[usize::from(s.0)] = self.epoch;
        let epoch = self.epoch;
        self.broadcast(&Message::Fence { epoch, failed });
        self.commands
            .push_back(Command::Launch { position: s, epoch });
        self.detector.watch_start(s, now, self.start_timeout);
        for to in again {
            self.relaunch(now, to);
        }
    }

    /// Launches a new replacement at `position`, where one is already recovering: the one there
    /// failed, or must start again ([`Coordinator::add_failure`]). The launcher stops the old one.
    fn relaunch(&mut self, now: u64, position: ServerId) {
        let Phase::Recovering(r) = &mut self.phase else {
            unreachable!("replacements are launched again during a recovery");
        };
        r.launch(position, now);
        self.peers[usize::from(position.0)] = None;
        let epoch = self.epoch;
        self.commands.push_back(Command::Launch { position, epoch });
        self.detector.watch_start(position, now, self.start_timeout);
    }

    fn halt(&mut self, cause: PlanError) {
        let mut failed: BTreeSet<u16> = self.suspects.servers().map(|s| s.0).collect();
        if let Phase::Recovering(r) = &self.phase {
            failed.extend(r.failed().map(|s| s.0));
        }
        let failed = failed.into_iter().collect();
        self.phase = Phase::Halted(Unrecoverable {
            epoch: self.epoch,
            failed,
            cause,
        });
    }
}

#[cfg(test)]
mod tests;
