//! `ftc chaos --procs`: a whole chain as processes on this host, real failures. The orchestrator
//! runs on a thread of this process with the local launcher; every server is an `ftc node`
//! process. This process sends customer frames into server 0's ingress socket and receives what
//! the last server releases at its egress socket, kills the named nodes with SIGKILL at the given
//! times, lets the orchestrator recover them, and then checks: a recovery reported for every
//! kill, every group's replicas equal to its head (each member's state fetched over its
//! state-transfer port), every monitor's counters at least the packets released, no packet
//! released twice, no flow's NAT mapping changed, and output commit for every released packet
//! (from what the nodes recorded, [`observe`](super::observe)). UDP may lose packets under
//! load: they count as lost (sent − released), never as a violation.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ftc_chain::middleboxes::packet::{parse, Parsed};
use ftc_chain::ring::{MbIndex, Ring};
use ftc_chain::spec::ChainSpec;
use ftc_node::runtime::{logs_behind, vector_difference, Latency, RunReport};
use ftc_node::traffic::request;
use ftc_node::udp::widen_receive_buffer;
use ftc_replica::GroupState;
use ftc_stm::Snapshot;
use hdrhistogram::Histogram;

use super::launcher::{How, Launcher, NodeArgs};
use super::node::{EXIT_LOST_ORCHESTRATOR, EXIT_REFUSED};
use super::observe::packet_id;
use super::orchestrator::Orchestrator;
use super::succession::{OrchestratorKill, OrchestratorKilled, Succession};
use crate::checks::check_monitors;
use crate::control::{ControlError, Key, Peer};
use crate::coordinator::{CoordinatorConfig, RecoveryReport};
use crate::embedded::{halted_violation, ChaosReport, Kill, Killed, OutputCommitChecked};
use crate::transfer;

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcsConfig {
    /// The `ftc` executable the nodes run.
    pub exe: PathBuf,
    /// The chain spec's file, for the nodes.
    pub spec_path: PathBuf,
    pub duration: Duration,
    /// Customer frames per second.
    pub rate: u64,
    pub flows: u32,
    /// Customer frame size in bytes.
    pub size: usize,
    pub kills: Vec<Kill>,
    /// The orchestrator's crashes: the nodes serve on without it, and the next one started on
    /// its address adopts the chain.
    pub orchestrator_kills: Vec<OrchestratorKill>,
    pub coordinator: CoordinatorConfig,
    /// How long the nodes may take to start and join.
    pub deploy: Duration,
    /// How long recoveries may take after the traffic ends before the run gives up on them,
    /// besides the time a failure may go undetected ([`CoordinatorConfig::detection_bound`]).
    pub settle: Duration,
    /// Every node logs what its server did this often (`ftc node --stats-every`).
    pub stats_every: Option<Duration>,
}

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum ProcsError {
    #[error("kill position {position}: the chain has servers 0 to {last}")]
    NoSuchServer { position: u16, last: usize },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the chain was not deployed within {within:?}: positions {missing:?} never joined")]
    NotDeployed {
        within: Duration,
        missing: Vec<usize>,
    },
    #[error("node {position} exited before the chain was deployed ({status}); its error is above")]
    ExitedBeforeDeployed { position: u16, status: String },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> ProcsError {
    let what = what.into();
    move |source| ProcsError::Io { what, source }
}

/// A file removed when dropped.
#[derive(Debug)]
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A directory removed, with what is in it, when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Result<TempDir, ProcsError> {
        let path = std::env::temp_dir().join(format!("ftc-chaos-{}-{name}", std::process::id()));
        std::fs::create_dir(&path).map_err(io_error(format!("creating {}", path.display())))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh random secret in a file only this user reads.
fn secret_file() -> Result<(TempFile, Key), ProcsError> {
    let mut random = [0; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(io_error("reading /dev/urandom"))?;
    let secret: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let path = std::env::temp_dir().join(format!(
        "ftc-chaos-{}-{}.secret",
        std::process::id(),
        &secret[..8]
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(secret.as_bytes()))
        .map_err(io_error(format!("writing {}", path.display())))?;
    Ok((TempFile(path), Key::new(secret.as_bytes())?))
}

/// Sets a flag when dropped: whatever way a scope is left, its threads see it.
#[derive(Debug)]
struct RaiseOnDrop<'a>(&'a AtomicBool);

impl Drop for RaiseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Run `spec` as processes, kill the nodes of `config.kills`, check what came out.
pub fn run_procs(spec: &ChainSpec, config: &ProcsConfig) -> Result<ChaosReport, ProcsError> {
    let ring = spec.ring();
    let n = ring.servers();
    if let Some(k) = config.kills.iter().find(|k| usize::from(k.position.0) >= n) {
        return Err(ProcsError::NoSuchServer {
            position: k.position.0,
            last: n - 1,
        });
    }
    let (secret, key) = secret_file()?;
    let observed = TempDir::new("observed")?;
    let localhost = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let egress = UdpSocket::bind(localhost).map_err(io_error("binding the egress socket"))?;
    egress
        .set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(io_error("egress socket"))?;
    // The buffer's node sends the packets a recovery held all at once: in the default buffer,
    // the kernel dropped some, which the output-commit check then counted as never arrived.
    widen_receive_buffer(&egress).map_err(io_error("egress socket"))?;
    let sender = UdpSocket::bind(localhost).map_err(io_error("binding the sending socket"))?;
    // A free port for server 0's ingress (and its replacements'), which server 0 binds.
    let ingress = free_fixed_port().map_err(io_error("choosing an ingress port"))?;
    let listener = TcpListener::bind(localhost).map_err(io_error("binding the orchestrator"))?;
    let args = NodeArgs {
        ingress: Some(ingress),
        egress: Some(egress.local_addr().map_err(io_error("egress socket"))?),
        observe: Some(observed.0.clone()),
        stats_every: config.stats_every,
        // Nodes that outlived this process (a crash) must not serve on for want of it for
        // longer than the orchestrator's longest downtime needs.
        headless_for: Some(
            config
                .orchestrator_kills
                .iter()
                .map(|k| k.down + HEADLESS_MARGIN)
                .max()
                .unwrap_or(Duration::ZERO),
        ),
        ..NodeArgs::without_customers(
            listener.local_addr().map_err(io_error("orchestrator"))?,
            config.spec_path.clone(),
            secret.0.clone(),
            config.coordinator.heartbeat_period_ns as f64 / 1e6,
            ring.buffer().0,
        )
    };
    let launcher = Launcher::new(
        How::Local {
            exe: config.exe.clone(),
        },
        args,
    );
    let orchestrators = Succession::new(Orchestrator::new(
        listener,
        (ring, super::Chain::new(spec, ftc_node::Mode::Ftc)),
        key.clone(),
        config.coordinator,
        launcher,
    ))
    .map_err(io_error("orchestrator"))?;
    let mut report = ChaosReport::new(spec);
    let stop = AtomicBool::new(false);
    let capacity =
        ((config.rate as f64 * config.duration.as_secs_f64() * 1.1) as usize).saturating_add(1024);
    let sink = Sink::new(capacity, config.flows);
    // Every recovery of the run (the orchestrator's status keeps only the latest).
    let recoveries = Mutex::new(Vec::new());
    std::thread::scope(|s| -> Result<(), ProcsError> {
        let stopping = RaiseOnDrop(&stop);
        let orchestrating = s.spawn(|| {
            orchestrators.run(&stop, |r| {
                recoveries.lock().expect("no holder panics").push(r.clone())
            })
        });
        let finished = || recoveries.lock().expect("no holder panics");
        for position in 0..n as u16 {
            orchestrators
                .launcher()
                .launch(position)
                .map_err(io_error(format!("starting node {position}")))?;
        }
        let first = orchestrators
            .current()
            .expect("no crash before the traffic");
        wait_deployed(&first, config.deploy)?;
        drop(first);
        let received = s.spawn(|| sink.receive(&egress, &stop));
        let start = Instant::now();
        orchestrators.started(start);
        let orch = &orchestrators;
        let killer = s.spawn(move || kill(orch.launcher(), &config.kills, start));
        let crasher = s.spawn(move || crash(orch, &config.orchestrator_kills, start));
        report.run.packets_sent = send(&sender, ingress, config, &sink, start);
        let traffic_end = Instant::now();
        report.kills = killer.join().expect("the killer panicked");
        crasher.join().expect("the orchestrator's killer panicked");
        let done = || orchestrating.is_finished();
        let settle = config.settle + config.coordinator.detection_bound();
        let deadline = Instant::now() + settle;
        let unrecovered = |kills| recovered(&finished(), kills, &orchestrators.crashes());
        while !(unrecovered(&report.kills).is_empty() || done()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Let what is in flight leave.
        let quiet = Duration::from_millis(100);
        let deadline = Instant::now() + Duration::from_secs(3);
        while sink.since_last() < quiet && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The traffic's time, or longer where releases went on past it: throughput over the
        // time to the last arrival alone overstates it wherever releases stopped early.
        report.run.duration_s = sink.last_since(start).max(config.duration).as_secs_f64();
        report.recoveries = finished().clone();
        // Only the kills and the orchestrator's cut-offs end nodes in a run, and after a crash
        // of the orchestrator the loss of it, or its successor's refusal: any other end is a
        // crash, a panic, a hang caught, or an error the node stopped on.
        let (ended, forgotten) = orchestrators.ended();
        for (after_crash, ended) in ended {
            let status = ended.status.code().and_then(|c| u8::try_from(c).ok());
            if after_crash && matches!(status, Some(EXIT_LOST_ORCHESTRATOR | EXIT_REFUSED)) {
                tracing::info!("{ended}: it lost its orchestrator, or was refused by the next");
                continue;
            }
            report.run.violations.push(format!(
                "{ended}: neither killed by the run nor cut off by the orchestrator"
            ));
        }
        if forgotten > 0 {
            report.run.violations.push(format!(
                "{forgotten} more nodes ended, neither killed by the run nor cut off by the \
                 orchestrator"
            ));
        }
        report.orchestrator_kills = orchestrators.crashes();
        let missing = recovered(
            &report.recoveries,
            &report.kills,
            &report.orchestrator_kills,
        );
        match orchestrators.current() {
            Some(o) if missing.is_empty() && !done() => {
                check_state(spec, (&ring, &key), &o, &sink, traffic_end, &mut report);
            }
            Some(_) => {}
            None => report.run.violations.push(
                "no orchestrator runs after the last crash: the next one could not start (its \
                 error is above)"
                    .to_string(),
            ),
        }
        drop(stopping);
        let (outcome, sink_violations) = (
            orchestrating.join().expect("the orchestrator panicked"),
            received.join().expect("the receiver panicked"),
        );
        // A halted orchestrator is why kills were not recovered: that is the violation to read.
        match outcome {
            Err(why) => {
                let violation = halted_violation(&why, &report.kills, &ring);
                report.run.violations.push(violation);
            }
            Ok(()) if !missing.is_empty() => report.run.violations.push(format!(
                "no recovery reported for the kill of {missing:?} within {settle:?}"
            )),
            Ok(()) => {}
        }
        report.run.violations.extend(sink_violations);
        Ok(())
    })?;
    sink.finish(&mut report.run);
    match super::observe::check(
        &observed.0,
        (ring.middleboxes(), ring.f()),
        sink.released_ids(),
    ) {
        Ok(checked) => {
            report.output_commit_checked = OutputCommitChecked {
                packets: checked.packets,
                transactions: checked.transactions,
            };
            report.run.violations.extend(checked.violations);
        }
        Err(e) => report.run.violations.push(format!(
            "output commit could not be checked: reading what the nodes recorded: {e}"
        )),
    }
    Ok(report)
}

/// A UDP port on 127.0.0.1 that is free now, below the kernel's ephemeral range: between this
/// choice and server 0's bind (and again at a replacement's), sockets bound to port 0 all over
/// the machine cannot take it, as they could take a port the kernel handed out (a chaos run
/// among parallel tests once failed so).
fn free_fixed_port() -> io::Result<SocketAddr> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let below = 10_000..ephemeral_start.max(10_001);
    for _ in 0..100 {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, fastrand::u16(below.clone())));
        if UdpSocket::bind(addr).is_ok() {
            return Ok(addr);
        }
    }
    // A machine whose low ports are all taken: any free one.
    UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?.local_addr()
}

/// How much longer than the orchestrator's longest downtime the nodes of a run that crashes it
/// serve on without one.
const HEADLESS_MARGIN: Duration = Duration::from_secs(10);

/// Wait until every node joined and got its `Assign`.
fn wait_deployed(orchestrator: &Orchestrator, within: Duration) -> Result<(), ProcsError> {
    let deadline = Instant::now() + within;
    while orchestrator.status().epoch == 0 {
        let exited = orchestrator
            .launcher()
            .children()
            .exited()
            .map_err(io_error("watching the nodes"))?;
        if let Some((position, status)) = exited.first() {
            return Err(ProcsError::ExitedBeforeDeployed {
                position: *position,
                status: status.to_string(),
            });
        }
        if Instant::now() >= deadline {
            let joined = orchestrator.status().peers;
            let missing: Vec<usize> = (0..joined.len()).filter(|&i| joined[i].is_none()).collect();
            return Err(ProcsError::NotDeployed { within, missing });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Crash the orchestrator at the times of `kills` (from `start`), each time until the next one
/// runs (or none is left to crash: the last one halted).
fn crash(orchestrators: &Succession, kills: &[OrchestratorKill], start: Instant) {
    let mut kills = kills.to_vec();
    kills.sort_by_key(|k| k.at);
    for k in kills {
        std::thread::sleep(k.at.saturating_sub(start.elapsed()));
        tracing::info!("crashing the orchestrator for {:?}", k.down);
        orchestrators.crash(k.down);
    }
}

/// Kill the nodes of `kills` at their times (from `start`) with SIGKILL.
fn kill(launcher: &Launcher, kills: &[Kill], start: Instant) -> Vec<Killed> {
    let mut kills = kills.to_vec();
    kills.sort_by_key(|k| k.at);
    kills
        .into_iter()
        .filter_map(|k| {
            std::thread::sleep(k.at.saturating_sub(start.elapsed()));
            match launcher.children().kill(k.position.0) {
                Ok(Some(pid)) => tracing::info!("killed node {} (pid {pid})", k.position.0),
                Ok(None) => {
                    tracing::warn!("no node runs at position {} to kill", k.position.0);
                    return None;
                }
                Err(e) => {
                    tracing::warn!("killing node {}: {e}", k.position.0);
                    return None;
                }
            }
            Some(Killed {
                position: k.position.0,
                at_ms: start.elapsed().as_secs_f64() * 1e3,
            })
        })
        .collect()
}

/// The killed positions no finished recovery covers yet (a position killed twice needs two).
/// The orchestrator's crash after a kill may leave its recovery unreported, its replacement
/// serving: the next orchestrator's adoption covers the kill where the position rejoined then
/// (the killed node cannot).
fn recovered(
    recoveries: &[RecoveryReport],
    kills: &[Killed],
    crashes: &[OrchestratorKilled],
) -> Vec<u16> {
    let mut missing = Vec::new();
    let mut counted: HashMap<u16, usize> = HashMap::new();
    for k in kills {
        let needed = counted.entry(k.position).or_default();
        *needed += 1;
        let covered = recoveries
            .iter()
            .filter(|r| r.failed.contains(&k.position))
            .count();
        let adopted = crashes.iter().any(|c| {
            c.at_ms >= k.at_ms
                && c.adopted
                    .as_ref()
                    .is_some_and(|a| a.rejoined.contains(&k.position))
        });
        if covered < *needed && !adopted {
            missing.push(k.position);
        }
    }
    missing
}

/// Offer `config.rate` frames per second to `ingress` for `config.duration`: packet i is a TCP
/// request of flow i mod flows with TCP sequence number i. The packets sent.
fn send(
    socket: &UdpSocket,
    ingress: SocketAddr,
    config: &ProcsConfig,
    sink: &Sink,
    start: Instant,
) -> u64 {
    let interval = Duration::from_nanos(1_000_000_000 / config.rate.max(1));
    let flows = u64::from(config.flows.max(1));
    let mut sent = 0u64;
    while start.elapsed() < config.duration && (sent as usize) < sink.sent_at.len() {
        let due = interval * (sent as u32);
        let now = start.elapsed();
        if now < due {
            std::thread::sleep((due - now).min(Duration::from_micros(200)));
            continue;
        }
        let frame = request((sent % flows) as u32, sent as u32, config.size);
        sink.sent_at[sent as usize].store(sink.now(), Ordering::Release);
        if let Err(e) = socket.send_to(&frame, ingress) {
            tracing::debug!("sending to the ingress: {e}");
        }
        sent += 1;
    }
    sent
}

/// What the egress receives, and when each packet was sent.
#[derive(Debug)]
struct Sink {
    /// Times below are nanoseconds since then.
    origin: Instant,
    /// Per packet number: when it was sent.
    sent_at: Vec<AtomicU64>,
    flows: u64,
    /// When the last frame arrived.
    last: AtomicU64,
    measured: Mutex<Measured>,
}

#[derive(Debug)]
struct Measured {
    released: u64,
    seen: Vec<bool>,
    latency: Histogram<u64>,
}

impl Sink {
    fn new(capacity: usize, flows: u32) -> Sink {
        Sink {
            origin: Instant::now(),
            sent_at: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            flows: u64::from(flows.max(1)),
            last: AtomicU64::new(0),
            measured: Mutex::new(Measured {
                released: 0,
                seen: vec![false; capacity],
                latency: Histogram::new(3).expect("3 significant figures"),
            }),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// How long ago the last frame arrived.
    fn since_last(&self) -> Duration {
        Duration::from_nanos(self.now().saturating_sub(self.last.load(Ordering::Acquire)))
    }

    /// From `start` to the last frame's arrival.
    fn last_since(&self, start: Instant) -> Duration {
        let last = self.origin + Duration::from_nanos(self.last.load(Ordering::Acquire));
        last.saturating_duration_since(start)
    }

    /// Receive until `stop`; the violations seen (a packet released twice or never sent, a
    /// flow whose source address or port changed).
    fn receive(&self, socket: &UdpSocket, stop: &AtomicBool) -> Vec<String> {
        let mut violations = Vec::new();
        let mut mappings = HashMap::new();
        let mut buf = vec![0; 65_536];
        while !stop.load(Ordering::Acquire) {
            let Ok(len) = socket.recv(&mut buf) else {
                continue;
            };
            let now = self.now();
            self.last.store(now, Ordering::Release);
            let frame = &buf[..len];
            let (Parsed::Ipv4(p), Some(seq)) = (parse(frame), packet_id(frame)) else {
                violations.push(format!(
                    "a released frame of {len} bytes is not the TCP/IPv4 sent"
                ));
                continue;
            };
            let seq = u64::from(seq);
            let mut m = self.measured.lock().expect("no holder panics");
            let Some(seen) = m.seen.get_mut(seq as usize) else {
                violations.push(format!("released packet {seq} was never sent"));
                continue;
            };
            if std::mem::replace(seen, true) {
                violations.push(format!("packet {seq} was released twice"));
                continue;
            }
            m.released += 1;
            let sent_at = self.sent_at[seq as usize].load(Ordering::Acquire);
            let _ = m.latency.record(now.saturating_sub(sent_at).max(1));
            let key = *p.flow();
            let flow = seq % self.flows;
            let first = *mappings.entry(flow).or_insert(key);
            if first != key && violations.len() < 10 {
                violations.push(format!(
                    "flow {flow} left the chain as {}:{} after leaving as {}:{} (a NAT mapping of a live connection changed)",
                    key.src, key.sport, first.src, first.sport
                ));
            }
        }
        violations
    }

    fn released(&self) -> u64 {
        self.measured.lock().expect("no holder panics").released
    }

    /// The ids of the packets released.
    fn released_ids(&self) -> impl Iterator<Item = u32> {
        let m = self.measured.lock().expect("no holder panics");
        let ids: Vec<u32> = (0u32..)
            .zip(&m.seen)
            .filter(|(_, &seen)| seen)
            .map(|(i, _)| i)
            .collect();
        ids.into_iter()
    }

    /// Released, lost, throughput and latency into `run`.
    fn finish(&self, run: &mut RunReport) {
        let m = self.measured.lock().expect("no holder panics");
        run.packets_released = m.released;
        run.packets_lost = run.packets_sent.saturating_sub(m.released);
        run.throughput_pps = m.released as f64 / run.duration_s;
        run.latency_us = Latency::of(&m.latency);
    }
}

/// How long the state is compared again while the replicas do not come nearer their heads
/// before a difference counts: the last logs and commit vectors of the run may still be on their
/// way (resent after the replicas' timeouts), and a recovery may still be running.
const STATE_CONVERGES: Duration = Duration::from_secs(3);

/// How long the state is compared again at most, the replicas coming nearer all along: after
/// an overload that made a replica drop thousands of frames its hold queue had no room for, it
/// takes their logs back an answer at a time (`ftc chaos --procs` of the load balancer at
/// 100,000 packets/s and 100,000 flows on 2 CPUs: about 7 s).
const STATE_CONVERGES_AT_MOST: Duration = Duration::from_secs(60);

/// Every group's replicas equal its head, and every monitor counted every released packet.
/// Each member's state is fetched over its state-transfer port; `traffic_end` is when the
/// traffic ended, from which the report counts how long the replicas took.
fn check_state(
    spec: &ChainSpec,
    (ring, key): (&Ring, &Key),
    orchestrator: &Orchestrator,
    sink: &Sink,
    traffic_end: Instant,
    report: &mut ChaosReport,
) {
    let mut differences = Vec::new();
    let mut heads: Vec<Snapshot> = Vec::new();
    let mut convergence = Convergence::new(Instant::now());
    while convergence.goes_on(Instant::now()) {
        let status = orchestrator.status();
        differences.clear();
        heads.clear();
        if !status.settled {
            differences.push(format!(
                "a recovery into epoch {} is still running",
                status.epoch
            ));
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let behind = compare_groups(
            ring,
            key,
            (orchestrator.run_id(), status.epoch),
            &status.peers,
            &mut heads,
            &mut differences,
        );
        if differences.is_empty() {
            report.replicas_equal_after_ms = Some(traffic_end.elapsed().as_secs_f64() * 1e3);
            break;
        }
        convergence.behind(behind, Instant::now());
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = &mut report.run;
    run.violations.append(&mut differences);
    if heads.len() == spec.middlebox.len() {
        let middleboxes: Vec<_> = spec
            .middlebox
            .iter()
            .map(ftc_chain::middleboxes::build)
            .collect();
        let values = |i: usize| heads[i].entries.iter().map(|(_, v)| v.clone()).collect();
        check_monitors(&middleboxes, values, sink.released(), &mut run.violations);
    }
}

/// Whether the replicas still come nearer their heads: the state is compared again while
/// they came nearer within [`STATE_CONVERGES`], for [`STATE_CONVERGES_AT_MOST`] at most.
#[derive(Debug, Clone, Copy)]
struct Convergence {
    started: Instant,
    /// The fewest logs the replicas lacked at a look, and when they last lacked fewer.
    nearest: (u64, Instant),
}

impl Convergence {
    fn new(now: Instant) -> Self {
        Convergence {
            started: now,
            nearest: (u64::MAX, now),
        }
    }

    /// The replicas lacked `logs` against their heads at `now`.
    fn behind(&mut self, logs: u64, now: Instant) {
        if logs < self.nearest.0 {
            self.nearest = (logs, now);
        }
    }

    /// Whether to compare again at `now`.
    fn goes_on(&self, now: Instant) -> bool {
        now.duration_since(self.nearest.1) < STATE_CONVERGES
            && now.duration_since(self.started) < STATE_CONVERGES_AT_MOST
    }
}

/// Every group's state fetched from every member (`peers`, of `epoch` in the run `run`): each
/// head's into `heads`, in middlebox order, and what differs from its head, or could not be
/// fetched, into `differences`; how many logs the replicas lack against their heads, in all.
pub(crate) fn compare_groups(
    ring: &Ring,
    key: &Key,
    (run, epoch): (u64, u32),
    peers: &[Option<Peer>],
    heads: &mut Vec<Snapshot>,
    differences: &mut Vec<String>,
) -> u64 {
    let mut behind = 0;
    for mb in ring.mb_indices() {
        match group_states(ring, key, (run, epoch), peers, mb) {
            Ok((head, replicas)) => {
                for (server, replica) in replicas {
                    if replica != head {
                        behind += logs_behind(&head.vector, &replica.vector);
                        differences.push(format!(
                            "replica of m{} on server {server} differs from its head after the \
                             run ({})",
                            mb.0,
                            vector_difference(&head.vector, &replica.vector)
                        ));
                    }
                }
                heads.push(head);
            }
            Err(why) => differences.push(why),
        }
    }
    behind
}

/// The state of `mb`'s group at its head, and at each other member (by position).
fn group_states(
    ring: &Ring,
    key: &Key,
    (run, epoch): (u64, u32),
    peers: &[Option<Peer>],
    mb: MbIndex,
) -> Result<(Snapshot, Vec<(u16, Snapshot)>), String> {
    let head = ring.head(mb);
    let mut head_state = None;
    let mut replicas = Vec::new();
    for server in ring.group(mb) {
        let peer = peers[usize::from(server.0)]
            .ok_or_else(|| format!("server {} is not up at the end of the run", server.0))?;
        let as_head = server == head;
        let bytes = transfer::fetch(
            peer.transfer,
            key,
            run,
            epoch,
            mb.0,
            as_head,
            Duration::from_secs(1),
        )
        .map_err(|e| format!("fetching m{} from server {}: {e}", mb.0, server.0))?;
        let state = GroupState::decode(&bytes)
            .map_err(|e| format!("m{} from server {}: {e}", mb.0, server.0))?;
        let snapshot = Snapshot::decode(&state.snapshot)
            .map_err(|e| format!("m{} from server {}: {e}", mb.0, server.0))?;
        if as_head {
            head_state = Some(snapshot);
        } else {
            replicas.push((server.0, snapshot));
        }
    }
    let head_state = head_state.expect("a group has its head");
    Ok((head_state, replicas))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state check waits for replicas that keep coming nearer their heads (an overloaded
    /// replica takes the logs it dropped back for seconds), and gives up on ones that stopped
    /// coming nearer, or after the longest wait however they move.
    #[test]
    fn the_state_check_waits_while_the_replicas_come_nearer() {
        let t0 = Instant::now();
        let s = |secs: f64| t0 + Duration::from_secs_f64(secs);
        let mut c = Convergence::new(t0);
        assert!(c.goes_on(s(2.9)), "the first look comes within the wait");
        c.behind(1_000, s(0.1));
        c.behind(1_000, s(2.0));
        assert!(!c.goes_on(s(3.2)), "no nearer for 3.1 s");
        let mut c = Convergence::new(t0);
        for (i, at) in (0..50).map(|i| (i, 0.5 + i as f64)) {
            c.behind(1_000 - i, s(at));
            assert!(c.goes_on(s(at + 2.9)), "nearer each second, at {at} s");
        }
        c.behind(900, s(59.0));
        assert!(c.goes_on(s(59.9)));
        assert!(!c.goes_on(s(60.0)), "60 s at most");
        // Farther than before is not nearer: a replica that falls behind again does not keep
        // the check going.
        let mut c = Convergence::new(t0);
        c.behind(10, s(0.5));
        c.behind(20, s(3.0));
        c.behind(15, s(3.4));
        assert!(!c.goes_on(s(3.6)));
    }
}
