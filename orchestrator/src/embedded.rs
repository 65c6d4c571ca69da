//! The embedded launcher with failure injection (`ftc chaos` on threads, `ftc demo`): a whole
//! chain in this process, a thread per server over the in-memory transport, the orchestrator on
//! a thread of its own driving the [`Coordinator`] from the servers' heartbeats, state transfer
//! over loopback TCP, replacements started as threads, and servers killed at given times.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::Scope;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_chain::spec::ChainSpec;
use ftc_node::commit_check::CommitCheck;
use ftc_node::lanes::join;
use ftc_node::runtime::{chain_lanes, Harness, RunConfig, RunReport};
use ftc_node::serve::{inboxes, serve, Beat, Ended, Msg, Routes, Shared, Sink};
use ftc_node::server::ExportParts;
use ftc_node::{Heads, Mode, Server, ServerConfig};
use ftc_replica::ReplicaError;
use ftc_stm::StmError;

use crate::checks::check_monitors;
use crate::control::{Key, Message, Nonce};
use crate::coordinator::{Command, Coordinator, CoordinatorConfig, RecoveryReport, Unrecoverable};
use crate::plan::PlanError;
use crate::process::succession::OrchestratorKilled;
use crate::replacement::Fetched;
use crate::transfer;

/// A server to kill, and when (from the start of the traffic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub position: ServerId,
    pub at: Duration,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub run: RunConfig,
    pub kills: Vec<Kill>,
    pub coordinator: CoordinatorConfig,
    /// The shared secret that authenticates control and state-transfer messages.
    pub secret: Vec<u8>,
    /// How long recoveries may take after the traffic ends before the run gives up on them,
    /// besides the time a failure may go undetected ([`CoordinatorConfig::detection_bound`]).
    pub settle: Duration,
}

impl Default for ChaosConfig {
    /// Heartbeats every 5 ms, 3 missed declare a failure, 10 × 15 ms of grace for suspects.
    fn default() -> Self {
        ChaosConfig {
            run: RunConfig::default(),
            kills: Vec::new(),
            coordinator: CoordinatorConfig {
                heartbeat_period_ns: 5_000_000,
                ..CoordinatorConfig::default()
            },
            secret: b"ftc embedded".to_vec(),
            settle: Duration::from_secs(10),
        }
    }
}

/// A kill as it happened.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Killed {
    pub position: u16,
    pub at_ms: f64,
}

/// What a chaos run measured and checked.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ChaosReport {
    #[serde(flatten)]
    pub run: RunReport,
    pub kills: Vec<Killed>,
    /// The orchestrator's crashes (`ftc chaos --procs --kill-orchestrator`).
    pub orchestrator_kills: Vec<OrchestratorKilled>,
    pub recoveries: Vec<RecoveryReport>,
    /// Released packets checked for output commit, and the transactions checked for them
    /// (online in embedded runs, from the nodes' records after a `--procs` run).
    pub output_commit_checked: OutputCommitChecked,
    /// How long after the traffic every replica was found equal to its head, in milliseconds
    /// (`--procs`: the states are fetched from the nodes until they are, while they come
    /// nearer; absent where they never were, or in a run of one process, whose check is
    /// immediate).
    pub replicas_equal_after_ms: Option<f64>,
}

/// What the output-commit check of a chaos run looked at ([`CommitCheck`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutputCommitChecked {
    pub packets: u64,
    pub transactions: u64,
}

impl ChaosReport {
    /// An empty report of a fault-tolerant run of `spec`.
    pub fn new(spec: &ChainSpec) -> Self {
        ChaosReport {
            run: RunReport {
                mode: Some(Mode::Ftc),
                chain: spec.chain.name.clone(),
                servers: spec.ring().servers(),
                ..RunReport::default()
            },
            ..ChaosReport::default()
        }
    }
}

/// Why a chaos run could not start.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("kill position {position}: the chain has servers 0 to {last}")]
    NoSuchServer { position: u16, last: usize },
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error("cannot listen for state transfers: {0}")]
    Io(#[from] std::io::Error),
}

/// What the orchestrator thread and the replacements it launches share.
struct World<'a, C> {
    ring: Ring,
    partitions: u32,
    heads: &'a Heads,
    server_config: &'a ServerConfig,
    shared: &'a Shared<'a, C>,
    harness: &'a Harness,
    routes: &'a Routes,
    key: &'a Key,
    transfer: &'a [SocketAddr],
    /// The coordinator's run: the servers answer only its state transfers.
    run: u64,
    to_orchestrator: Sender<Message>,
    /// Per position: the control channel of a replacement waiting for its `Recover`.
    launched: Mutex<Vec<Option<Sender<Message>>>>,
    /// How each server thread ended, with what it measured.
    ended: Sender<(Ended<'a>, Sink)>,
    /// The addresses of killed servers: they swallow packets until told to stop at the end.
    killed: Mutex<Vec<Sender<Msg>>>,
    /// Per position: how many replacements were launched; an older one gives up.
    launches: Mutex<Vec<u64>>,
    /// Set (under `launches`) when the run ends: a replacement restored after that does not
    /// serve, since the final `Stop` went out without it.
    ending: AtomicBool,
}

impl<C> World<'_, C> {
    /// Kill the server now at `position`, every lane of it; whether any lane was alive (a
    /// position still dead, its replacement not serving yet, has none).
    fn kill(&self, position: ServerId) -> bool {
        let mut killed = self.killed.lock().expect("no holder panics");
        let victims: Vec<_> = self
            .routes
            .lanes(usize::from(position.0))
            .into_iter()
            .filter(|v| !killed.iter().any(|k| k.same_channel(v)))
            .collect();
        for victim in &victims {
            let _ = victim.send(Msg::Kill);
        }
        let hit = !victims.is_empty();
        killed.extend(victims);
        hit
    }

    /// Whether every `(position, launch)` has a replacement launched after `launch`.
    fn replaced(&self, hits: &[(ServerId, u64)]) -> bool {
        let launches = self.launches.lock().expect("no holder panics");
        hits.iter()
            .all(|&(p, launch)| launches[usize::from(p.0)] > launch)
    }

    /// Send `msg()` to every lane of the server at `to`.
    fn tell(&self, to: ServerId, msg: impl Fn() -> Msg) {
        for lane in self.routes.lanes(usize::from(to.0)) {
            let _ = lane.send(msg());
        }
    }
}

/// Run `spec` with generated traffic, kill the servers of `config.kills`, let the orchestrator
/// recover them, and check that nothing released was lost.
pub fn run_chaos(spec: &ChainSpec, config: &ChaosConfig) -> Result<ChaosReport, ChaosError> {
    let key = Key::new(&config.secret)?;
    let ring = spec.ring();
    let n = ring.servers();
    if let Some(k) = config.kills.iter().find(|k| usize::from(k.position.0) >= n) {
        return Err(ChaosError::NoSuchServer {
            position: k.position.0,
            last: n - 1,
        });
    }
    let heads = Heads::new(spec, |m| m.threads).expect("a valid spec gives valid stores");
    // The heads report their commits, for the output-commit check.
    let server_config = ServerConfig {
        mode: Mode::Ftc,
        observe: true,
        ..config.run.server.clone()
    };
    let commits = CommitCheck::new(ring, &heads);
    let harness = Harness::new();
    let (beat_tx, beat_rx) = crossbeam_channel::unbounded();
    let period = Duration::from_nanos(config.coordinator.heartbeat_period_ns);
    let flows = Mutex::new(HashMap::new());
    let mut shared = harness.shared(Some((period, beat_tx)));
    shared.flows = Some(&flows);
    shared.commits = Some(&commits);
    let (lanes, hops) = chain_lanes(ring, n, spec.chain.partitions, &heads, &server_config);
    let routes = Routes::with_lanes(hops);
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let transfer_addrs = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<Vec<_>, _>>()?;
    let (orch_tx, orch_rx) = crossbeam_channel::unbounded();
    let (ended_tx, ended_rx) = crossbeam_channel::unbounded();
    let mut report = ChaosReport::new(spec);
    let stop_listeners = AtomicBool::new(false);
    let stop_orchestrator = AtomicBool::new(false);
    // No recovery under way, every position served, no suspect: set by the orchestrator.
    let quiet = AtomicBool::new(true);
    let settle = config.settle + config.coordinator.detection_bound();
    let mut unsettled = false;
    let rejected = AtomicUsize::new(0);
    let world = World {
        ring,
        partitions: spec.chain.partitions,
        heads: &heads,
        server_config: &server_config,
        shared: &shared,
        harness: &harness,
        routes: &routes,
        key: &key,
        transfer: &transfer_addrs,
        run: fastrand::u64(..),
        to_orchestrator: orch_tx,
        launched: Mutex::new(vec![None; n]),
        ended: ended_tx,
        killed: Mutex::new(Vec::new()),
        launches: Mutex::new(vec![0; n]),
        ending: AtomicBool::new(false),
    };
    let elapsed = std::thread::scope(|scope| {
        for (server, rx) in lanes {
            let (r, shared, ended) = (routes.all(), &shared, world.ended.clone());
            scope.spawn(move || {
                let _ = ended.send(serve(server, &rx, r, 1, shared));
            });
        }
        for (i, listener) in listeners.iter().enumerate() {
            let (heads, routes, key, ours) = (&heads, &routes, &key, world.run);
            let (stop, rejected) = (&stop_listeners, &rejected);
            scope.spawn(move || {
                let export = |run: u64, _epoch: u32, group: MbIndex| {
                    (run == ours).then(|| export(heads, routes, i, group))?
                };
                let refuse = |e: &crate::control::ControlError| {
                    tracing::warn!("server {i}: refused a state transfer request: {e}");
                    rejected.fetch_add(1, Ordering::Relaxed);
                };
                let run = AtomicU64::new(ours);
                if let Err(e) = transfer::serve(listener, key, &run, stop, export, refuse) {
                    tracing::error!("server {i}: state transfers stopped: {e}");
                }
            });
        }
        let world = &world;
        let (stop, quiet_flag) = (&stop_orchestrator, &quiet);
        let coordinator = Coordinator::new(ring, config.coordinator, world.run);
        let orchestrator = scope.spawn(move || {
            orchestrate(
                scope,
                world,
                coordinator,
                &beat_rx,
                &orch_rx,
                stop,
                quiet_flag,
            )
        });
        let killer = scope.spawn(|| {
            let mut kills = config.kills.clone();
            kills.sort_by_key(|k| k.at);
            let start = Instant::now();
            kills
                .into_iter()
                .filter_map(|k| {
                    std::thread::sleep(k.at.saturating_sub(start.elapsed()));
                    let launch =
                        world.launches.lock().expect("no holder panics")[usize::from(k.position.0)];
                    if !world.kill(k.position) {
                        // Down already, its replacement not yet started: no second failure.
                        tracing::warn!("server {} is down already: not killed", k.position.0);
                        return None;
                    }
                    let killed = Killed {
                        position: k.position.0,
                        at_ms: start.elapsed().as_secs_f64() * 1e3,
                    };
                    Some((killed, (k.position, launch)))
                })
                .unzip::<_, _, Vec<_>, Vec<_>>()
        });
        let elapsed = harness.drive(
            &config.run,
            &routes,
            Duration::from_secs(5),
            &mut report.run,
        );
        let (kills, hits) = killer.join().expect("the killer thread panicked");
        report.kills = kills;
        let settled = || quiet.load(Ordering::Acquire) && world.replaced(&hits);
        // Let the last recovery finish and the replicas converge: a kill late in the traffic may
        // not even be detected yet. A coordinator that gave up ends its thread.
        let deadline = Instant::now() + settle;
        while !settled() && !orchestrator.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100));
        stop_orchestrator.store(true, Ordering::Release);
        let (recoveries, halted) = orchestrator.join().expect("the orchestrator panicked");
        report.recoveries = recoveries;
        unsettled = halted.is_none() && !settled();
        report
            .run
            .violations
            .extend(halted.map(|why| halted_violation(&why, &report.kills, &ring)));
        // From here no replacement registers its lanes: every lane that serves gets the `Stop`.
        {
            let _launches = world.launches.lock().expect("no holder panics");
            world.ending.store(true, Ordering::Release);
        }
        // The dead servers' addresses too: they swallow packets until the end.
        let killed = std::mem::take(&mut *world.killed.lock().expect("no holder panics"));
        for tx in routes.every().into_iter().chain(killed) {
            let _ = tx.send(Msg::Stop);
        }
        // A replacement still waiting for its plan gives up.
        world.launched.lock().expect("no holder panics").fill(None);
        stop_listeners.store(true, Ordering::Release);
        elapsed
    });
    drop(world);
    let (packets, transactions) = commits.checked();
    report.output_commit_checked = OutputCommitChecked {
        packets,
        transactions,
    };
    report
        .run
        .finish(&ring, &heads, ended_rx.try_iter().collect(), elapsed);
    if unsettled {
        report.run.violations.push(format!(
            "the recoveries did not finish within {settle:?} after the traffic ended"
        ));
    }
    check_monitors(
        &heads.middleboxes,
        |i| heads.stores[i].to_map().into_values().collect(),
        report.run.packets_released,
        &mut report.run.violations,
    );
    Ok(report)
}

/// A group's state from the server at `position` now, as bytes (`None`: not a member, or the
/// server is dead and does not answer). Each lane hands out the logs it retains; the store
/// (shared by the lanes) is copied here, so that a large one does not keep the server from its
/// heartbeats.
fn export(heads: &Heads, routes: &Routes, position: usize, group: MbIndex) -> Option<Vec<u8>> {
    let t = Instant::now();
    let lanes = routes.lanes(position);
    let (tx, rx) = crossbeam_channel::bounded(lanes.len());
    for lane in &lanes {
        lane.send(Msg::Export {
            group,
            reply: tx.clone(),
        })
        .ok()?;
    }
    let mut parts: Option<ExportParts> = None;
    for _ in &lanes {
        let lane = rx.recv_timeout(Duration::from_secs(2)).ok()??;
        match &mut parts {
            None => parts = Some(lane),
            Some(p) => p.retained.extend(lane.retained),
        }
    }
    let parts = parts?;
    let asked = t.elapsed();
    let head = heads.stores.get(usize::from(group.0));
    let bytes = parts.encode(group, head);
    tracing::debug!(
        "server {position}: exported m{} in {:.2} ms ({:.2} ms waiting for the server thread)",
        group.0,
        t.elapsed().as_secs_f64() * 1e3,
        asked.as_secs_f64() * 1e3
    );
    bytes
}

/// The orchestrator's thread: heartbeats and servers' messages into the coordinator, its
/// commands out (a launch starts a replacement thread). Ends on `stop`; returns the recoveries
/// and, if the coordinator gave up, why.
fn orchestrate<'scope, 'env, 'w: 'scope, C: Fn() -> u64 + Sync>(
    scope: &'scope Scope<'scope, 'env>,
    world: &'scope World<'w, C>,
    mut coordinator: Coordinator,
    beats: &Receiver<Beat>,
    messages: &Receiver<Message>,
    stop: &AtomicBool,
    quiet: &AtomicBool,
) -> (Vec<RecoveryReport>, Option<Unrecoverable>) {
    let now = || world.harness.now();
    let pid = std::process::id();
    let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
    for (i, &transfer) in world.transfer.iter().enumerate() {
        coordinator.handle(
            now(),
            Message::Join {
                position: i as u16,
                pid,
                // The servers are threads of this process, of the one spec: nothing to tell apart.
                chain: 0,
                data: nowhere,
                transfer,
                // No connection to challenge: the servers are threads of this process.
                nonce: Nonce::default(),
                launch: None,
                serving: None,
            },
        );
    }
    let mut seq = 0;
    let mut reports = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let t = now();
        let wait = coordinator
            .poll_timeout()
            .map_or(5_000_000, |at| at.saturating_sub(t).min(5_000_000));
        crossbeam_channel::select! {
            recv(beats) -> beat => match beat {
                Ok(beat) => {
                    coordinator.handle(now(), beat_message(beat, world.run, &mut seq));
                }
                Err(_) => break,
            },
            recv(messages) -> msg => if let Ok(msg) = msg {
                coordinator.handle(now(), msg);
            },
            default(Duration::from_nanos(wait)) => {}
        }
        // Everything that arrived first: a thread that was not scheduled for a while must not
        // declare servers failed whose heartbeats wait in its queue.
        for beat in beats.try_iter() {
            coordinator.handle(now(), beat_message(beat, world.run, &mut seq));
        }
        for msg in messages.try_iter() {
            coordinator.handle(now(), msg);
        }
        coordinator.handle_timeout(now());
        while let Some(command) = coordinator.poll_command() {
            match command {
                Command::Launch { position, epoch } => launch(scope, world, position, epoch),
                Command::Send { to, msg } => deliver(world, to, msg),
            }
        }
        while let Some(r) = coordinator.poll_report() {
            tracing::info!("recovery: {r}");
            reports.push(r);
        }
        if let Some(why) = coordinator.halted() {
            return (reports, Some(why.clone()));
        }
        let recovered = reports.len() as u32 + 1 == coordinator.epoch();
        let all_up = coordinator.peers().iter().all(Option::is_some);
        let unsuspected = coordinator.suspects().next().is_none();
        quiet.store(recovered && all_up && unsuspected, Ordering::Release);
    }
    (reports, None)
}

/// The violation of a chaos run whose orchestrator gave up, said plainly: what was lost before
/// a recovery could end (for a group that lost every member, the group and its servers), the
/// kills that did it, and the servers declared failed that were not killed (live servers that
/// missed their heartbeats: more than f failures at once that only a loaded machine made).
pub fn halted_violation(why: &Unrecoverable, kills: &[Killed], ring: &Ring) -> String {
    let mut lost: Vec<u16> = why.failed.clone();
    let what = match why.cause {
        PlanError::NoAliveMember { group } => {
            let members: Vec<u16> = ring.group(group).map(|s| s.0).collect();
            lost.extend(&members);
            format!(
                "every server of group {group} ({members:?}) failed before a recovery could end, \
                 so its state is lost"
            )
        }
        PlanError::TooManyFailures { failed, f } => format!(
            "{failed} servers ({:?}) failed before a recovery could end, more than the f = {f} \
             the chain recovers at once",
            why.failed
        ),
        ref cause => cause.to_string(),
    };
    lost.sort_unstable();
    lost.dedup();
    let killed: Vec<String> = kills
        .iter()
        .filter(|k| lost.contains(&k.position))
        .map(|k| format!("server {} at {:.1} ms", k.position, k.at_ms))
        .collect();
    let live: Vec<u16> = lost
        .iter()
        .copied()
        .filter(|p| !kills.iter().any(|k| k.position == *p))
        .collect();
    let mut text = format!("the orchestrator halted: {what}");
    if !killed.is_empty() {
        text += &format!(
            "; killed: {} (a kill counts against f until its recovery ends)",
            killed.join(", ")
        );
    }
    if !live.is_empty() {
        text += &format!(
            "; servers {live:?} were not killed but missed their heartbeats (a busy machine: a \
             longer heartbeat period avoids that)"
        );
    }
    text + &format!(" [{why}]")
}

/// A server thread's sign of life as the coordinator's message, in the run `run`.
fn beat_message(beat: Beat, run: u64, seq: &mut u64) -> Message {
    match beat {
        Beat::Heartbeat { server, epoch, .. } => {
            *seq += 1;
            Message::Heartbeat {
                run,
                position: server.0,
                epoch,
                seq: *seq,
            }
        }
        Beat::Resumed { server, epoch } => Message::Resumed {
            run,
            position: server.0,
            epoch,
        },
    }
}

/// Carry out a coordinator's message to the server at `to`.
fn deliver<C>(world: &World<'_, C>, to: ServerId, msg: Message) {
    match msg {
        Message::Fence { epoch, .. } => world.tell(to, || Msg::Fence { epoch }),
        Message::Recover { .. } => {
            let launched = world.launched.lock().expect("no holder panics");
            if let Some(tx) = &launched[usize::from(to.0)] {
                let _ = tx.send(msg);
            }
        }
        Message::Reroute { epoch, .. } => {
            let routes = world.routes.all();
            world.tell(to, || Msg::Resume {
                epoch,
                routes: routes.clone(),
            });
        }
        Message::Stop => world.tell(to, || Msg::Stop),
        // The embedded servers were configured when they were spawned.
        _ => {}
    }
}

/// Start a replacement for `position` on a thread of the run.
fn launch<'scope, 'env, 'w: 'scope, C: Fn() -> u64 + Sync>(
    scope: &'scope Scope<'scope, 'env>,
    world: &'scope World<'w, C>,
    position: ServerId,
    epoch: u32,
) {
    // A server declared failed on missed heartbeats may still run: it is stopped first, as an
    // operator's fencing would (its frames are of an old epoch anyway).
    world.kill(position);
    let (tx, rx) = crossbeam_channel::unbounded();
    let i = usize::from(position.0);
    world.launched.lock().expect("no holder panics")[i] = Some(tx);
    let launch = {
        let mut launches = world.launches.lock().expect("no holder panics");
        launches[i] += 1;
        launches[i]
    };
    scope.spawn(move || {
        if let Some(ended) = replacement(world, position, epoch, launch, &rx) {
            let _ = world.ended.send(ended);
        }
    });
}

/// A replacement: join, fetch every group's state (in parallel, over TCP) as the orchestrator
/// planned, restore, report ready, serve; how its first lane ended, or `None` if it never
/// served (the orchestrator halted or went away first, or launched another for the position):
/// no server thread ran, so there is nothing to report.
fn replacement<'w, C: Fn() -> u64 + Sync>(
    world: &World<'w, C>,
    position: ServerId,
    epoch: u32,
    launch: u64,
    control: &Receiver<Message>,
) -> Option<(Ended<'w>, Sink)> {
    // It is watched from its join on: it sends heartbeats while it fetches and restores. Its
    // heartbeat thread waits on `restoring`, not in a sleep, so that the replacement serves as
    // soon as it is restored (the reroute waits for it), not up to a period later.
    let restored = std::thread::scope(|s| {
        let (restoring, done) = crossbeam_channel::bounded::<()>(0);
        if let Some((period, beats)) = &world.shared.heartbeat {
            s.spawn(move || loop {
                let at = world.harness.now();
                let _ = beats.send(Beat::Heartbeat {
                    server: position,
                    epoch,
                    at,
                });
                if done.recv_timeout(*period) != Err(RecvTimeoutError::Timeout) {
                    return;
                }
            });
        }
        let restored = restore(world, position, launch, control);
        drop(restoring);
        restored
    });
    let (lanes, rxs, epoch) = restored?;
    // Lane 0 runs on this thread, the others beside it.
    Some(std::thread::scope(|s| {
        let mut lanes = lanes.into_iter().zip(rxs);
        let (first, first_rx) = lanes.next().expect("a server has a lane");
        for (server, rx) in lanes {
            s.spawn(move || {
                let ended = serve(server, &rx, world.routes.all(), epoch, world.shared);
                let _ = world.ended.send(ended);
            });
        }
        serve(first, &first_rx, world.routes.all(), epoch, world.shared)
    }))
}

/// A restored replacement: its lanes, their inputs, and the epoch it serves in.
type Restored<'w> = (Vec<Server<'w, u64>>, Vec<Receiver<Msg>>, u32);

/// A replacement's recovery: join, fetch, restore, register, report ready; its lanes and their
/// inputs, or `None` when the orchestrator went away or launched another replacement for the
/// position meanwhile.
fn restore<'w, C>(
    world: &World<'w, C>,
    position: ServerId,
    launch: u64,
    control: &Receiver<Message>,
) -> Option<Restored<'w>> {
    let _ = world.to_orchestrator.send(Message::Join {
        position: position.0,
        pid: std::process::id(),
        chain: 0,
        data: SocketAddr::from(([0, 0, 0, 0], 0)),
        transfer: world.transfer[usize::from(position.0)],
        nonce: Nonce::default(),
        launch: None,
        serving: None,
    });
    let mut fetched = Fetched::default();
    let epoch = loop {
        let Ok(Message::Recover { run, epoch, fetch }) = control.recv() else {
            return None;
        };
        let done = fetched.fetch(world.key, run, epoch, &fetch, |f, e| {
            tracing::warn!(
                "server {}: fetching m{} from server {}: {e}",
                position.0,
                f.group,
                f.source
            );
            let _ = world.to_orchestrator.send(Message::TransferFailed {
                run,
                position: position.0,
                epoch,
                group: f.group,
                source: f.source,
            });
        });
        if done {
            break epoch;
        }
    };
    let bytes = fetched.bytes();
    let superseded =
        || world.launches.lock().expect("no holder panics")[usize::from(position.0)] != launch;
    if superseded() {
        return None;
    }
    // The server it replaces lets go of the head's store when it stops (and so does a
    // replacement launched before this one, which may be restoring it right now).
    let deadline = Instant::now() + Duration::from_secs(2);
    let server = loop {
        let restored = fetched.restore(
            world.heads,
            world.ring,
            position,
            world.partitions,
            world.server_config.clone(),
            world.harness.now(),
        );
        match restored {
            Err(ReplicaError::Stm(StmError::BadSnapshot(_)))
                if Instant::now() < deadline && !superseded() =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(server) => break server,
            Err(e) => {
                // It stops: silent, it is declared failed and launched again (unless another
                // replacement already took its place).
                if !superseded() {
                    tracing::error!("server {}: cannot restore its state: {e}", position.0);
                }
                return None;
            }
        }
    };
    // The head's store is restored, so no worker of the failed server holds it any more.
    let more = world.heads.head_lanes(&world.ring, position, 1).into_iter();
    let lanes =
        join(server, more, world.partitions, world.server_config).expect("valid partitions");
    let (txs, rxs) = inboxes(lanes.len());
    {
        // Registered under `launches`, and only while the run goes on (see `World::ending`).
        let launches = world.launches.lock().expect("no holder panics");
        if launches[usize::from(position.0)] != launch || world.ending.load(Ordering::Acquire) {
            return None;
        }
        world.routes.set_lanes(usize::from(position.0), txs);
    }
    world.launched.lock().expect("no holder panics")[usize::from(position.0)] = None;
    let _ = world.to_orchestrator.send(Message::Ready {
        run: world.run,
        position: position.0,
        epoch,
        bytes,
    });
    Some((lanes, rxs, epoch))
}
