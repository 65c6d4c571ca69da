//! `ftc lab demo`: a real TCP connection through a chain in its lab survives a kill (issue 5).
//! An unmodified HTTP server (`python3 -m http.server`) in the server namespace serves a file of
//! random bytes; an unmodified client (`curl`) in the client namespace downloads it through the
//! chain, whose ends take and send the frames with AF_XDP (or raw packet sockets where AF_XDP is
//! not available); part way through, the middle server's node (or the servers the caller names,
//! each at its own point of the download) is killed with SIGKILL and the orchestrator replaces
//! it. Then the checks: the download
//! completed, no reset, the same SHA-256; the server saw the NAT's public address; every group's
//! replicas equal their head; and every monitor counted every frame the chain delivered (the
//! frames the client's and the server's `eth1` received, which only the chain's last server
//! sends to). With several connections (`DemoConfig::connections`) the client downloads the
//! file that many times at once, each over a TCP connection of its own (curl's `--parallel`), so
//! that the flows spread over the lanes of servers of several threads. With a frame size
//! (`DemoConfig::frame_bytes`) the client advertises the TCP MSS that makes the server's data
//! frames that long, so that a download runs at the packet sizes of the thesis's experiments.
//! With UDP flows (`DemoConfig::udp_flows`) the client first sends a datagram from each of that
//! many ports, which gives the chain's middleboxes state to recover (a NAT a mapping each).
//! With an orchestrator kill (`DemoConfig::kill_orchestrator`) the orchestrator is SIGKILLed part
//! way too: the run starts another, which adopts the chain its nodes kept serving. With cuts
//! (`DemoConfig::cuts`) links between servers, or a server's management link, go down for a
//! while ([`cut`](super::cut)).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use ftc_chain::spec::ChainSpec;
use ftc_node::Mode;
use sha2::{Digest, Sha256};

use super::apply::{self, secret_path, LabError};
use super::cut::{Cut, Cuts, LabCut};
use super::deploy::{self, parse_peers, DeployError, NodeExit, RunConfig};
use super::ops;
use super::probe::{self, RttFigures, PROBE_PORT};
use super::procs;
use super::topology::{Host, LabName, Topology, CLIENT, SERVER};
use crate::checks::check_monitors;
use crate::control::Peer;
use crate::coordinator::RecoveryReport;
use crate::process::chaos::compare_groups;
use crate::process::read_secret;
use crate::process::recent::Recent;

/// The port the HTTP server listens on.
const PORT: u16 = 8080;
/// How long the chain may take to carry its first request, and the download to finish.
const READY: Duration = Duration::from_secs(30);
const DOWNLOAD: Duration = Duration::from_secs(600);
/// A download that moves less than a byte a second for this long is given up (curl's
/// `--speed-time`): the chain has stalled, and waiting out [`DOWNLOAD`] would only hide it.
/// A recovery costs TCP well under a second of retransmissions.
const STALL: Duration = Duration::from_secs(30);
/// How long the replicas may take to converge after the download.
const CONVERGE: Duration = Duration::from_secs(5);
/// How long after a reroute the demo waits for another before it checks the state, and how long
/// reroutes may go on after the download before it gives up waiting for the chain to settle.
const SETTLE: Duration = Duration::from_millis(500);
const SETTLED: Duration = Duration::from_secs(10);

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The chain's run in its lab (with edges, of either kind).
    pub run: RunConfig,
    pub spec: ChainSpec,
    /// Bytes of the file downloaded.
    pub size: u64,
    /// Downloads of the file at once, each over a TCP connection of its own (at least 1).
    pub connections: u32,
    /// The servers killed, each once its share of the downloads has arrived, in the order given;
    /// empty: no kill (an NF run cannot recover a server, and its state is not checked).
    pub kills: Vec<LabKill>,
    /// The share of the downloads (0 to 1) that has arrived when the orchestrator is killed with
    /// SIGKILL: the run starts another, which adopts the chain as its nodes rejoin it (they
    /// serve on meanwhile). `None`: the orchestrator is left alone.
    pub kill_orchestrator: Option<f64>,
    /// Links to take down for a while, each once its share of the downloads has arrived
    /// ([`cut`](super::cut)): between servers only where their frames take those links (AF_XDP
    /// edges).
    pub cuts: Vec<LabCut>,
    /// The downloads' pace at most, all together, in bytes per second (shared out among the
    /// connections: curl's `--limit-rate` paces each); `None`: as fast as the chain carries it.
    pub rate_limit: Option<u64>,
    /// Time round trips through the chain during the download ([`probe`]), one every this
    /// long; `None`: no probe.
    pub probe: Option<Duration>,
    /// The length of the server's data frames, in bytes, from [`FRAME_BYTES`]: the client
    /// advertises an MSS of this less [`FRAME_HEADERS`] on its route to the server. `None`:
    /// full-size frames (1,514 bytes).
    pub frame_bytes: Option<u16>,
    /// UDP flows to open before the download, at most [`MAX_UDP_FLOWS`]: one datagram each,
    /// from client ports 1024, 1025, … to the server's DNS port (which Ch-Rec's firewall lets
    /// out), where a sink takes them. A NAT holds a mapping for each.
    pub udp_flows: u32,
}

/// The most [`DemoConfig::udp_flows`]: the client's ports from 1024 up.
pub const MAX_UDP_FLOWS: u32 = 65_536 - 1024;
/// Where the UDP flows go on the server.
const FLOWS_PORT: u16 = 53;

/// What a data frame holds besides its payload and TCP timestamps (12 bytes, within the MSS):
/// Ethernet, IPv4 and TCP headers.
pub const FRAME_HEADERS: u16 = 14 + 20 + 20;
/// The frame sizes [`DemoConfig::frame_bytes`] takes: Linux's smallest MSS (48) to the
/// links' 1,500-byte MTU.
pub const FRAME_BYTES: std::ops::RangeInclusive<u16> = FRAME_HEADERS + 48..=1514;

/// Refuses a data frame length outside [`FRAME_BYTES`] ([`DemoConfig::frame_bytes`]).
pub fn check_frame_bytes(frame: u16) -> Result<(), DemoError> {
    if FRAME_BYTES.contains(&frame) {
        return Ok(());
    }
    Err(DemoError::Failed(format!(
        "a data frame of {frame} bytes: frames are {} to {} bytes long",
        FRAME_BYTES.start(),
        FRAME_BYTES.end()
    )))
}

/// What the demo saw.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DemoReport {
    /// Downloads of the file at once, each over a TCP connection of its own.
    pub connections: u32,
    /// The length of the server's data frames when it was set ([`DemoConfig::frame_bytes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_bytes: Option<u16>,
    /// UDP flows opened before the download ([`DemoConfig::udp_flows`]): datagrams sent, and
    /// those the server's sink got (the others were lost on the way, in the chain or in the
    /// server host's stack).
    pub udp_flows_sent: u32,
    pub udp_flows_arrived: u32,
    /// Bytes downloaded, over every connection.
    pub bytes: u64,
    pub seconds: f64,
    pub throughput_mbit_s: f64,
    /// The TCP handshake's time through the chain (curl's `time_connect`; the slowest of the
    /// connections): about one round trip, both directions through every middlebox.
    pub connect_ms: f64,
    /// The HTTP status curl got (the first other than 200, if any), and curl's exit code (0:
    /// no reset, no timeout).
    pub http_status: u16,
    pub curl_exit: i32,
    /// Whether every download has the served file's SHA-256.
    pub sha256_matches: bool,
    /// The servers killed, in the order they were.
    pub killed: Vec<Killed>,
    /// Bytes of the file that had arrived when the orchestrator was killed, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orchestrator_killed_at: Option<u64>,
    /// The links cut, in the order they went down.
    pub cuts: Vec<Cut>,
    /// The epoch the chain was last rerouted into: after the kills, or after a live node was
    /// replaced for missing heartbeats.
    pub rerouted_epoch: Option<u32>,
    /// The chain's recoveries, as the orchestrator reported them, phases in nanoseconds.
    pub recoveries: Vec<RecoveryReport>,
    /// Servers replaced although the demo did not kill them, one entry per replacement: a live
    /// node that missed `--misses` heartbeats (a loaded host) is declared failed, cut off and
    /// replaced, as fail-stop recovery does. (A node the run started that ended otherwise, a
    /// panic or a crash, is a violation besides.)
    pub replaced_without_kill: Vec<u16>,
    /// The client addresses the HTTP server logged.
    pub server_saw: Vec<String>,
    /// Frames the chain delivered to the client and the server.
    pub frames_delivered: u64,
    /// Frames the chain delivered (both directions: data and acknowledgements) per second of
    /// the download.
    pub frames_per_s: f64,
    /// CPU time the whole machine spent during the download, in seconds (`/proc/stat`: every
    /// process, the nodes, the orchestrator, the client and the server, and the kernel's work
    /// for them), and per frame delivered, in microseconds: what a frame cost the machine. The
    /// kernel counts in ticks of 10 ms, so a download of a fraction of a second reads coarsely.
    pub machine_cpu_s: f64,
    pub machine_cpu_us_per_frame: f64,
    /// Round trips through the chain during the download, when probed.
    pub rtt_us: Option<RttFigures>,
    pub violations: Vec<String>,
}

/// A server to kill during the download.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabKill {
    /// Its ring position.
    pub position: u16,
    /// The share of the file downloaded when it is killed (0 to 1).
    pub at: f64,
}

/// A server the demo killed.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Killed {
    pub position: u16,
    /// Bytes of the file that had arrived then.
    pub at_bytes: u64,
}

/// Why the demo could not run (its checks failing is not an error: see
/// [`DemoReport::violations`]).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("{0}")]
    Failed(String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

/// The programs the demo runs in the hosts' namespaces, with their Debian packages.
const TOOLS: [(&str, &str); 2] = [("curl", "curl"), ("python3", "python3")];

/// Refuses to start when a program of [`TOOLS`] is not there (`on_path` says which are): run in
/// a namespace by `ip netns exec`, a missing one would only show as requests that never get
/// through the chain.
fn check_tools(mut on_path: impl FnMut(&str) -> bool) -> Result<(), LabError> {
    match TOOLS.into_iter().find(|(program, _)| !on_path(program)) {
        Some((program, package)) => Err(LabError::Missing(program, package)),
        None => Ok(()),
    }
}

/// A process killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh directory for the demo of lab `lab` in `parent`: a name no one can guess
/// ([`apply::demo_dir_prefix`], which `ftc lab down` sweeps, and random letters), made by this
/// call (never one that was there, nor a link), that only its owner may enter (0700). Removed
/// when dropped.
fn demo_dir(parent: &Path, lab: &LabName) -> Result<tempfile::TempDir, DemoError> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(&apply::demo_dir_prefix(lab))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
        .map_err(io_error("making the demo's directory"))
}

/// A new file at `path`, for writing: never one that was there, nor through a link.
fn create_new(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Run the demo in the lab of `config.run` (up already). Every process it started is stopped
/// when it returns.
pub fn demo(config: &DemoConfig, stop: &AtomicBool) -> Result<DemoReport, DemoError> {
    // What cannot run is refused before anything starts.
    if let Some(frame) = config.frame_bytes {
        check_frame_bytes(frame)?;
    }
    if config.udp_flows > MAX_UDP_FLOWS {
        return Err(DemoError::Failed(format!(
            "{} UDP flows: at most {MAX_UDP_FLOWS}, from the client's ports 1024 up",
            config.udp_flows
        )));
    }
    check_tools(ops::on_path)?;
    let t = &config.run.topology;
    let total = config.size * u64::from(config.connections.max(1));
    let cuts = Cuts::new(t, config.run.edges, &config.cuts, total as f64)?;
    let dir = demo_dir(&std::env::temp_dir(), &t.name)?;
    let file = dir.path().join("file");
    let sent_sha = write_random(&file, config.size)?;
    // Only this run's server has it: a server an earlier run left behind does not answer it.
    let probe = format!(
        "probe-{}",
        std::iter::repeat_with(fastrand::alphanumeric)
            .take(16)
            .collect::<String>()
    );
    create_new(&dir.path().join(&probe))
        .and_then(|mut f| f.write_all(b"ftc\n"))
        .map_err(io_error("writing the probe"))?;
    let (peers_tx, peers_rx) = crossbeam_channel::unbounded();
    let (recoveries_tx, recoveries_rx) = crossbeam_channel::unbounded();
    if config.run.edges.is_none() {
        return Err(DemoError::Failed(
            "the demo needs the chain's edges (AF_XDP or packet sockets)".into(),
        ));
    }
    let run = RunConfig {
        peers: Some(peers_tx),
        reports_to_stderr: true,
        recoveries: Some(recoveries_tx),
        ..config.run.clone()
    };
    // The hosts' counters run on across the runs in one lab: what this one delivered is what
    // they count beyond this.
    let earlier = delivered(config)?;
    let chain_stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Those cut off are never violations ([`crashes`]); the demo's victims (SIGKILLed, one
        // per --kill) are kept, to be told from a SIGKILL of someone else's.
        let chain = s.spawn(|| {
            let keep = |e: &NodeExit| !e.cut_off();
            deploy::run(&run, &chain_stop, None, &mut io::stderr(), keep)
        });
        let stop_chain = RaiseOnDrop(&chain_stop);
        let report = (|| {
            let (mut run, _, deployed) = next_peers(&peers_rx, READY, &chain)?;
            let server_log = dir.path().join("http.log");
            let mut http = HttpServer::start(&t.host_netns(&SERVER), dir.path(), &server_log)?;
            let _echo = config
                .probe
                .map(|_| probe::echo(&t.host_netns(&SERVER), echo_addr()))
                .transpose()
                .map_err(io_error("starting the probe's echo server"))?;
            let _segments = SegmentCap::set(t.host_netns(&CLIENT), config.frame_bytes)?;
            wait_ready(&t.host_netns(&CLIENT), &mut http, &probe, stop)?;
            let flows = open_udp_flows(t, config.udp_flows)?;
            let (before, busy) = (delivered(config)?, machine_busy_s()?);
            let chain_runs = || !chain.is_finished();
            let (mut report, victims) =
                download(config, (&file, dir.path()), cuts, (stop, &chain_runs))?;
            report.frame_bytes = config.frame_bytes;
            (report.udp_flows_sent, report.udp_flows_arrived) = flows;
            report.machine_cpu_s = machine_busy_s()? - busy;
            let frames = delivered(config)?.saturating_sub(before);
            report.frames_per_s = frames as f64 / report.seconds;
            report.machine_cpu_us_per_frame = report.machine_cpu_s * 1e6 / frames.max(1) as f64;
            report.sha256_matches = true;
            for got in got_files(dir.path(), config.connections) {
                // A download that never connected left no file.
                report.sha256_matches &= got.exists() && sha256_of(&got)? == sent_sha;
            }
            if !report.sha256_matches {
                report
                    .violations
                    .push("the downloaded file differs from the served one".into());
            }
            if report.curl_exit != 0 || report.http_status != 200 {
                report
                    .violations
                    .push(download_failed(report.curl_exit, report.http_status));
            }
            // After a kill, the orchestrator says where the nodes are: rerouted, or adopted by
            // the orchestrator started in place of one killed (of another run).
            let disturbed = !report.killed.is_empty() || report.orchestrator_killed_at.is_some();
            let mut peers = match disturbed.then(|| next_peers(&peers_rx, CONVERGE, &chain)) {
                Some(Ok((now, epoch, peers))) => {
                    run = now;
                    report.rerouted_epoch = Some(epoch);
                    peers
                }
                Some(Err(_)) => {
                    report
                        .violations
                        .push("the chain was neither rerouted nor adopted after the kill".into());
                    deployed
                }
                None => deployed,
            };
            // A busy machine can make a live node miss heartbeats and be replaced too, kill or
            // no kill: the state is checked where the nodes are last.
            follow_reroutes(
                &peers_rx,
                &chain,
                (SETTLE, SETTLED),
                (&mut run, &mut peers),
                &mut report,
            );
            report.recoveries = recoveries_rx.try_iter().collect();
            report.replaced_without_kill =
                replaced_without_kill(&report.recoveries, &report.killed, &report.cuts);
            report.server_saw = clients_logged(&server_log)?;
            let nat: Vec<String> = t.nat_ips.iter().map(Ipv4Addr::to_string).collect();
            report
                .violations
                .extend(nat_violation(&report.server_saw, &nat));
            report.frames_delivered = delivered(config)?.saturating_sub(earlier);
            // Only FTC's servers hold replicas to check against their heads.
            if config.run.mode == Mode::Ftc {
                check_state(config, run, peers, &mut report)?;
            }
            Ok((report, victims))
        })();
        drop(stop_chain);
        let ran = chain.join().expect("the chain's runner does not panic");
        match (report, ran) {
            (Ok((mut report, victims)), Ok(exits)) => {
                report.violations.extend(crashes(&exits, &victims));
                Ok(report)
            }
            (Ok((mut report, _)), Err(deploy)) => {
                report
                    .violations
                    .push(format!("the chain's run failed: {deploy}"));
                Ok(report)
            }
            (Err(e), Err(deploy)) => Err(DemoError::Failed(format!("{e} ({deploy})"))),
            (Err(e), Ok(_)) => Err(e),
        }
    })
}

/// Raises its flag when dropped: the chain's runner is told to stop however the demo's part
/// ends, a panic included (the scope would wait for the runner forever).
struct RaiseOnDrop<'a>(&'a AtomicBool);

impl Drop for RaiseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The next nodes line of the orchestrator, within `within`: its run, epoch and nodes.
fn next_peers<T>(
    rx: &Receiver<String>,
    within: Duration,
    chain: &ScopedJoinHandle<'_, T>,
) -> Result<(u64, u32, Vec<Peer>), DemoError> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if chain.is_finished() {
            return Err(DemoError::Failed("the chain stopped".into()));
        }
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
            return parse_peers(&line)
                .ok_or_else(|| DemoError::Failed(format!("cannot read {line:?}")));
        }
    }
    Err(DemoError::Failed(format!(
        "the orchestrator did not say where its nodes are within {within:?}"
    )))
}

/// Follows the reroutes (and adoptions) that come one within `quiet` of the other into `run`,
/// `peers` and `report.rerouted_epoch`, until none came for `quiet`; gives up with a violation
/// once they still come `within` after the call (nodes replaced over and over: the state would
/// be checked on a chain that does not settle).
fn follow_reroutes<T>(
    rx: &Receiver<String>,
    chain: &ScopedJoinHandle<'_, T>,
    (quiet, within): (Duration, Duration),
    (run, peers): (&mut u64, &mut Vec<Peer>),
    report: &mut DemoReport,
) {
    let deadline = Instant::now() + within;
    while let Ok((now, epoch, later)) = next_peers(rx, quiet, chain) {
        report.rerouted_epoch = Some(epoch);
        *run = now;
        *peers = later;
        if Instant::now() >= deadline {
            report.violations.push(format!(
                "the chain did not settle: it was still being rerouted (epoch {epoch}) \
                 {within:?} after the download"
            ));
            return;
        }
    }
}

/// `size` random bytes (xorshift) in `path`; their SHA-256.
fn write_random(path: &Path, size: u64) -> Result<[u8; 32], DemoError> {
    let mut out =
        io::BufWriter::new(create_new(path).map_err(io_error("creating the served file"))?);
    let mut hash = Sha256::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    let mut chunk = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        hash.update(&chunk[..n]);
        out.write_all(&chunk[..n])
            .map_err(io_error("writing the served file"))?;
        left -= n as u64;
    }
    out.flush().map_err(io_error("writing the served file"))?;
    Ok(hash.finalize().into())
}

fn sha256_of(path: &Path) -> Result<[u8; 32], DemoError> {
    let mut file = File::open(path).map_err(io_error("reading the downloaded file"))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io_error("reading the downloaded file"))?;
        if n == 0 {
            return Ok(hash.finalize().into());
        }
        hash.update(&buf[..n]);
    }
}

/// `ip netns exec NETNS` followed by `args`.
fn in_netns(netns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns]).args(args);
    c
}

/// Starts `command` (one of [`in_netns`]'s; `what` names it) the way the lab starts its nodes
/// ([`procs::spawn`]): in a process group of its own, killed should this process die first (a
/// helper left behind would hold its port, and answer a later run's requests).
fn start(command: Command, what: &str) -> Result<Reaped, DemoError> {
    procs::spawn(command, 0)
        .map(Reaped)
        .map_err(io_error(format!("starting {what}")))
}

/// Sends one datagram from each of `flows` client ports to the server's [`FLOWS_PORT`], where a
/// sink takes them (no ICMP error comes back through the chain); how many were sent and how
/// many arrived.
fn open_udp_flows(t: &Topology, flows: u32) -> Result<(u32, u32), DemoError> {
    if flows == 0 {
        return Ok((0, 0));
    }
    let python = |netns: &str, script: &str, args: &[String]| {
        let mut command = in_netns(netns, &["python3", "-c", script]);
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        start(command, "python3")
    };
    let server = (SERVER.ip.to_string(), FLOWS_PORT.to_string());
    // The sink says when it listens, and on SIGTERM how many came.
    let mut sink = python(
        &t.host_netns(&SERVER),
        UDP_SINK,
        &[server.0.clone(), server.1.clone()],
    )?;
    let mut said = BufReader::new(sink.0.stdout.take().expect("piped"));
    let mut line = String::new();
    said.read_line(&mut line)
        .map_err(io_error("reading the UDP sink"))?;
    if line.trim() != "ready" {
        return Err(DemoError::Failed(format!(
            "the UDP sink did not start: {}",
            stderr_of(&mut sink)
        )));
    }
    let mut sender = python(
        &t.host_netns(&CLIENT),
        UDP_SENDER,
        &[CLIENT.ip.to_string(), server.0, server.1, flows.to_string()],
    )?;
    let sent = sender
        .0
        .wait()
        .map_err(io_error("waiting for the UDP sender"))?;
    let mut out = String::new();
    if let Some(mut o) = sender.0.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let sent: u32 = match (sent.success(), out.trim().parse()) {
        (true, Ok(n)) => n,
        _ => {
            return Err(DemoError::Failed(format!(
                "the UDP sender failed ({sent}): {}",
                stderr_of(&mut sender)
            )))
        }
    };
    // The sink reads what is on its way, then counts.
    // SAFETY: kill(2) on the sink's pid, a child not reaped yet (it is reaped when dropped).
    unsafe { libc::kill(sink.0.id() as i32, libc::SIGTERM) };
    line.clear();
    said.read_line(&mut line)
        .map_err(io_error("reading the UDP sink"))?;
    let arrived = line.trim().parse().unwrap_or(0);
    Ok((sent, arrived))
}

/// What `child` wrote to its standard error, once it ended (killed if it had not).
fn stderr_of(child: &mut Reaped) -> String {
    let _ = child.0.kill();
    let mut err = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err.trim().to_string()
}

/// The UDP sink: `python3 -c UDP_SINK ADDR PORT`; says `ready` when it listens, and on
/// SIGTERM how many datagrams it got.
const UDP_SINK: &str = "import signal, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# Room for every flow's datagram (root may go past rmem_max).
s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
s.bind((sys.argv[1], int(sys.argv[2])))
n, asked = 0, False
def done(*_):
    global asked
    asked = True
signal.signal(signal.SIGTERM, done)
print('ready', flush=True)
# Once asked, it reads on until nothing came for 50 ms.
s.settimeout(0.05)
while True:
    try:
        s.recv(2048)
        n += 1
    except socket.timeout:
        if asked:
            break
print(n, flush=True)
";

/// The UDP sender: `python3 -c UDP_SENDER FROM TO PORT FLOWS`; prints how many it sent.
const UDP_SENDER: &str = "import socket, sys, time
src, dst, port, flows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sent = 0
for p in range(1024, 1024 + flows):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((src, p))
        s.sendto(b'ftc', (dst, port))
        sent += 1
    except OSError:
        pass
    s.close()
    # Paced: a busy ingress drops what its queue cannot hold.
    if p % 64 == 0:
        time.sleep(0.001)
print(sent)
";

/// The client's route to the server with an advertised MSS, removed when dropped (a lab is
/// reused by later runs).
struct SegmentCap {
    client: String,
}

impl SegmentCap {
    /// The route of this address (the connected route to the subnet goes on beside it).
    fn route() -> String {
        format!("{}/32", SERVER.ip)
    }

    /// Advertise the MSS of `frame_bytes` (checked: [`check_frame_bytes`]) from `client` (also
    /// removes what an interrupted run left); `None`: nothing to advertise.
    fn set(client: String, frame_bytes: Option<u16>) -> Result<Option<Self>, DemoError> {
        let cap = SegmentCap { client };
        let Some(frame) = frame_bytes else {
            cap.remove();
            return Ok(None);
        };
        let mss = (frame - FRAME_HEADERS).to_string();
        let route = Self::route();
        let out = in_netns(&cap.client, &["ip", "route", "replace", &route])
            .args(["dev", "eth0", "advmss", &mss])
            .output()
            .map_err(io_error("running ip route"))?;
        if !out.status.success() {
            return Err(DemoError::Failed(format!(
                "advertising an MSS of {mss} in {}: {}",
                cap.client,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(Some(cap))
    }

    fn remove(&self) {
        let _ = in_netns(&self.client, &["ip", "route", "del", &Self::route()])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for SegmentCap {
    fn drop(&mut self) {
        self.remove();
    }
}

/// What `python3 -m http.server` says once it listens.
const SERVING: &str = "Serving HTTP on";

/// `python3 -m http.server` in the server's namespace, stopped when dropped.
struct HttpServer {
    process: Reaped,
    netns: String,
    /// Where it says what it does: that it serves, each request, its errors.
    log: PathBuf,
}

impl HttpServer {
    /// Starts it in `netns`, serving `dir`, saying what it does in `log`; returns once it
    /// serves, an error if it exited instead (its port taken, say).
    fn start(netns: &str, dir: &Path, log: &Path) -> Result<HttpServer, DemoError> {
        let dir = dir.display().to_string();
        let (ip, port) = (SERVER.ip.to_string(), PORT.to_string());
        // Unbuffered (-u): its line that it serves is in the log at once.
        let mut command = in_netns(
            netns,
            &["python3", "-u", "-m", "http.server", &port, "--bind", &ip],
        );
        command.args(["--directory", &dir]);
        HttpServer::serving(command, netns, log, READY)
    }

    /// Starts `command`, a server that says [`SERVING`] once it listens, its standard output
    /// and error in `log`; returns once it said so, an error if it exited first or said nothing
    /// `within`.
    fn serving(
        mut command: Command,
        netns: &str,
        log: &Path,
        within: Duration,
    ) -> Result<HttpServer, DemoError> {
        let out = create_new(log).map_err(io_error("creating the HTTP server's log"))?;
        let err = out
            .try_clone()
            .map_err(io_error("creating the HTTP server's log"))?;
        command.stdout(out).stderr(err);
        let mut server = HttpServer {
            process: start(command, "python3 -m http.server")?,
            netns: netns.to_string(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + within;
        loop {
            server.running()?;
            let said = std::fs::read_to_string(log).unwrap_or_default();
            if said.contains(SERVING) {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                return Err(DemoError::Failed(format!(
                    "the HTTP server in {netns} did not say it serves within {within:?}: {}",
                    said.trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An error, with the end of what it said, once it exited.
    fn running(&mut self) -> Result<(), DemoError> {
        let Some(status) = self
            .process
            .0
            .try_wait()
            .map_err(io_error("watching the HTTP server"))?
        else {
            return Ok(());
        };
        let said = std::fs::read_to_string(&self.log).unwrap_or_default();
        let last: Vec<&str> = said.lines().rev().take(3).collect();
        Err(DemoError::Failed(format!(
            "the HTTP server in {} exited ({status}): {}",
            self.netns,
            last.into_iter().rev().collect::<Vec<_>>().join(" / ")
        )))
    }
}

/// Where the probe's echo server listens: beside the HTTP server.
fn echo_addr() -> std::net::SocketAddrV4 {
    std::net::SocketAddrV4::new(SERVER.ip, PROBE_PORT)
}

fn url(path: &str) -> String {
    format!("http://{}:{PORT}/{path}", SERVER.ip)
}

/// What a failed download's violation says: curl's exit code and the HTTP status, and for
/// curl's timeout (28) which limit it hit.
fn download_failed(curl_exit: i32, http_status: u16) -> String {
    let why = if curl_exit == CURL_TIMED_OUT {
        format!(
            " (curl gave up: the download moved less than a byte a second for {STALL:?}, \
             or ran past {DOWNLOAD:?}; the chain stalled)"
        )
    } else {
        String::new()
    };
    format!("the download failed: curl exit {curl_exit}, HTTP {http_status}{why}")
}

/// curl's exit code when `--max-time` or `--speed-time` ran out.
const CURL_TIMED_OUT: i32 = 28;

/// Until a small request through the chain, for `probe` (a file only this run's server has),
/// succeeds: the nodes' AF_XDP sockets are up. An error once the HTTP server exited.
fn wait_ready(
    client: &str,
    http: &mut HttpServer,
    probe: &str,
    stop: &AtomicBool,
) -> Result<(), DemoError> {
    let deadline = Instant::now() + READY;
    while Instant::now() < deadline && !stop.load(Ordering::Acquire) {
        http.running()?;
        let mut curl = in_netns(client, &["curl", "-sf", "--max-time", "2", &url(probe)]);
        curl.stdout(Stdio::null()).stderr(Stdio::null());
        let got = start(curl, "curl")?
            .0
            .wait()
            .map_err(io_error("waiting for curl"))?;
        if got.success() {
            return http.running();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(DemoError::Failed(format!(
        "no request got through the chain within {READY:?}"
    )))
}

/// Downloads `file` (served from `dir`) as `config` says, making the kills and the `cuts` on the
/// way; stopped early when `stop` is raised or the chain's run ends (`chain_runs` says no more).
/// The report of the download, and the processes killed.
fn download(
    config: &DemoConfig,
    (file, dir): (&Path, &Path),
    mut cuts: Cuts,
    (stop, chain_runs): (&AtomicBool, &dyn Fn() -> bool),
) -> Result<(DemoReport, Vec<Victim>), DemoError> {
    let t = &config.run.topology;
    let got = got_files(dir, config.connections);
    let (max_time, stall) = (DOWNLOAD.as_secs().to_string(), STALL.as_secs().to_string());
    let probe = config
        .probe
        .map(|every| probe::probe(&t.host_netns(&CLIENT), echo_addr(), every));
    let started = Instant::now();
    let mut command = in_netns(
        &t.host_netns(&CLIENT),
        &["curl", "-sS", "--max-time", &max_time],
    );
    command.args(["--speed-limit", "1", "--speed-time", &stall]);
    if got.len() > 1 {
        let at_once = got.len().to_string();
        command.args([
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            &at_once,
        ]);
    }
    if let Some(rate) = config.rate_limit {
        let each = (rate / got.len() as u64).max(1);
        command.args(["--limit-rate", &each.to_string()]);
    }
    command.args(["-w", "%{http_code} %{time_connect}\\n"]);
    for path in &got {
        command.arg("-o").arg(path).arg(url("file"));
    }
    command.stdout(Stdio::piped());
    let mut curl = start(command, "curl")?;
    let mut report = DemoReport::default();
    let total = config.size * got.len() as u64;
    let mut kills = config.kills.iter().map(|k| {
        let at = (total as f64 * k.at.clamp(0.0, 1.0)) as u64;
        (k.position, at)
    });
    let mut next_kill = kills.next();
    let mut orchestrator_due = config
        .kill_orchestrator
        .map(|share| (total as f64 * share.clamp(0.0, 1.0)) as u64);
    let mut victims = Vec::new();
    let status = loop {
        if let Some(status) = curl.0.try_wait().map_err(io_error("waiting for curl"))? {
            break status;
        }
        if stop.load(Ordering::Acquire) {
            return Err(DemoError::Failed("interrupted".into()));
        }
        // An orchestrator that halted (more servers failed than the chain recovers) ends it:
        // the download would only stall.
        if !chain_runs() {
            return Err(DemoError::Failed(
                "the chain's run ended during the download".into(),
            ));
        }
        let arrived = bytes_in(&got);
        // A kill waits while its server's namespace runs no process it has not killed yet: a
        // server killed a moment ago is killed again once its replacement runs there.
        while let Some((position, _)) = next_kill.filter(|&(_, at)| arrived >= at) {
            if !kill_netns(&t.server_netns(position), &mut victims)? {
                break;
            }
            report.killed.push(Killed {
                position,
                at_bytes: arrived,
            });
            next_kill = kills.next();
        }
        if orchestrator_due.is_some_and(|at| arrived >= at) && kill_orchestrator(t)? {
            report.orchestrator_killed_at = Some(arrived);
            orchestrator_due = None;
        }
        cuts.poll(arrived)?;
        std::thread::sleep(Duration::from_millis(20));
    };
    let missed;
    (report.cuts, missed) = cuts.finish(bytes_in(&got))?;
    for (what, at) in missed {
        report.violations.push(format!(
            "{what} was not cut: the download ended before it was due ({at} bytes)"
        ));
    }
    if let Some(at) = orchestrator_due {
        report.violations.push(format!(
            "the orchestrator was not killed: the download ended before it was due ({at} bytes)"
        ));
    }
    for (position, at) in next_kill.into_iter().chain(kills) {
        report.violations.push(format!(
            "server {position} was not killed: the download ended before it was due ({at} bytes)"
        ));
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.curl_exit = status.code().unwrap_or(-1);
    match probe.map(probe::Probe::finish) {
        Some(Ok(rtt)) => report.rtt_us = Some(rtt),
        Some(Err(e)) => report
            .violations
            .push(format!("the round-trip probe failed: {e}")),
        None => {}
    }
    let mut written = String::new();
    if let Some(out) = curl.0.stdout.as_mut() {
        let _ = out.read_to_string(&mut written);
    }
    // A line per download: its HTTP status and its connect time in seconds.
    let lines: Vec<(u16, f64)> = written
        .lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            let code = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            let connect = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
            (code, connect)
        })
        .collect();
    report.connections = config.connections;
    report.http_status = match lines.iter().find(|(code, _)| *code != 200) {
        Some(&(code, _)) => code,
        None if lines.len() == got.len() => 200,
        None => 0,
    };
    report.connect_ms = lines.iter().map(|l| l.1 * 1e3).fold(0.0, f64::max);
    report.bytes = bytes_in(&got);
    report.throughput_mbit_s = report.bytes as f64 * 8.0 / report.seconds / 1e6;
    let served = std::fs::metadata(file).map_or(0, |m| m.len()) * got.len() as u64;
    if report.bytes != served {
        report
            .violations
            .push(format!("{} of {served} bytes downloaded", report.bytes));
    }
    Ok((report, victims))
}

/// Where each of `connections` downloads goes (one at least).
fn got_files(dir: &Path, connections: u32) -> Vec<PathBuf> {
    (0..connections.max(1))
        .map(|i| dir.join(format!("got{i}")))
        .collect()
}

/// The bytes in `files` so far.
fn bytes_in(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum()
}

/// The positions `recoveries` replaced more often than `killed` killed them and `cuts` cut them
/// off, once per extra replacement, in position order.
fn replaced_without_kill(
    recoveries: &[RecoveryReport],
    killed: &[Killed],
    cuts: &[Cut],
) -> Vec<u16> {
    let mut extra = std::collections::BTreeMap::<u16, i64>::new();
    for &position in recoveries.iter().flat_map(|r| &r.failed) {
        *extra.entry(position).or_default() += 1;
    }
    let cut_off = cuts.iter().filter_map(|c| c.cut_off);
    for position in killed.iter().map(|k| k.position).chain(cut_off) {
        *extra.entry(position).or_default() -= 1;
    }
    extra
        .into_iter()
        .flat_map(|(position, n)| std::iter::repeat_n(position, n.max(0) as usize))
        .collect()
}

/// A process the demo killed, told apart from a later one that reuses its id (a replacement
/// may get the id of a node killed earlier once the ids wrap around).
#[derive(Debug, Clone, PartialEq)]
struct Victim {
    pid: i32,
    /// When it started, in clock ticks after boot.
    started: u64,
}

/// SIGKILL to the orchestrator of the lab's run: the process running `ftc orchestrator` with the
/// lab's secret file; false if none runs (the run is starting another).
fn kill_orchestrator(t: &Topology) -> Result<bool, DemoError> {
    let secret = secret_path(&t.name);
    let secret = secret.to_string_lossy();
    for pid in procs::pids().map_err(io_error("listing /proc"))? {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<_> = cmdline
            .split(|&b| b == 0)
            .map(String::from_utf8_lossy)
            .collect();
        let ours = args.get(1).is_some_and(|a| a == "orchestrator")
            && args
                .windows(2)
                .any(|w| w[0] == "--secret-file" && w[1] == secret);
        if ours {
            tracing::info!("killing the orchestrator (pid {pid})");
            // SAFETY: kill touches no memory; a pid reused meanwhile by another process gets
            // a SIGKILL only if it runs this lab's orchestrator too.
            return Ok(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } == 0);
        }
    }
    Ok(false)
}

/// SIGKILL to every process in `netns` (a node, there) not in `killed` (a process killed
/// earlier may still be dying there); false if it killed none (none other runs there, or those
/// listed were gone before the signal). Adds those it kills to `killed`.
fn kill_netns(netns: &str, killed: &mut Vec<Victim>) -> Result<bool, DemoError> {
    let out = Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .map_err(io_error(format!("listing the processes in {netns}")))?;
    if !out.status.success() {
        return Err(DemoError::Failed(format!(
            "listing the processes in {netns}: `ip netns pids {netns}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut any = false;
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
    {
        // One that is gone already has no start time, and is not killed.
        let Some(started) = start_time(pid) else {
            continue;
        };
        let victim = Victim { pid, started };
        if killed.contains(&victim) {
            continue;
        }
        // SAFETY: kill(2) with a pid and a signal number has no memory effects.
        if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
            killed.push(victim);
            any = true;
        }
    }
    Ok(any)
}

/// When process `pid` started, in clock ticks after boot; `None` once it is gone.
fn start_time(pid: i32) -> Option<u64> {
    stat_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The start time in a `/proc/PID/stat` line: its 22nd field.
fn stat_start_time(stat: &str) -> Option<u64> {
    // The command name (the 2nd field) is in parentheses and may hold anything, spaces and
    // parentheses included: the fields from the 3rd follow its last `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// What the ends of the nodes the run started break: a node ends by the demo's SIGKILL (one of
/// `victims`), or cut off by the orchestrator ([`NodeExit::cut_off`]: declared failed while it
/// ran, as on a loaded host, and named in [`DemoReport::replaced_without_kill`]). Any other end
/// is a violation: a panic (status 101), a crash (a signal), a data path that hung (`ftc node`
/// exits with status 3), an error, another's SIGKILL (the kernel's, out of memory). `exits` holds
/// only the latest: earlier ones it forgot, unchecked, are a violation too (the demo kills one
/// node per --kill, far fewer than are kept).
fn crashes(exits: &Recent<NodeExit>, victims: &[Victim]) -> Vec<String> {
    use std::os::unix::process::ExitStatusExt;
    let mut crashes: Vec<_> = exits
        .iter()
        .filter(|e| {
            let ours = victims.iter().any(|v| i64::from(v.pid) == i64::from(e.pid));
            !(ours && e.status.signal() == Some(libc::SIGKILL) || e.cut_off())
        })
        .map(NodeExit::while_the_chain_ran)
        .collect();
    if exits.forgotten() > 0 {
        crashes.push(format!(
            "and {} more nodes exited while the chain ran, earlier, not kept (the run keeps the \
             latest {}) nor checked",
            exits.forgotten(),
            Recent::<NodeExit>::KEPT
        ));
    }
    crashes
}

/// What breaks the NAT check, if anything: the HTTP server saw only the NAT's public addresses
/// `nat` (none: no NAT in the chain, nothing to check), and saw one at least (a log with no
/// request in it proves nothing).
fn nat_violation(server_saw: &[String], nat: &[String]) -> Option<String> {
    if nat.is_empty() {
        return None;
    }
    if server_saw.is_empty() {
        return Some(format!(
            "the HTTP server logged no client: the NAT's public address {nat:?} was not seen"
        ));
    }
    let other = server_saw.iter().find(|a| !nat.contains(a))?;
    Some(format!(
        "the HTTP server saw {other}, not the NAT's public address {nat:?}"
    ))
}

/// The client addresses in the HTTP server's log (`ADDR - - [date] "GET …" …`).
fn clients_logged(log: &Path) -> Result<Vec<String>, DemoError> {
    let file = File::open(log).map_err(io_error("reading the HTTP server's log"))?;
    let mut seen: Vec<String> = BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.contains("\"GET "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    seen.sort();
    seen.dedup();
    Ok(seen)
}

/// Frames the chain delivered to the client and the server so far.
fn delivered(config: &DemoConfig) -> Result<u64, DemoError> {
    Ok(delivered_to(config, &CLIENT)? + delivered_to(config, &SERVER)?)
}

/// Frames received on `eth1` of `host`: only the chain's last server sends there.
fn delivered_to(config: &DemoConfig, host: &Host) -> Result<u64, DemoError> {
    let netns = config.run.topology.host_netns(host);
    let out = in_netns(
        &netns,
        &["cat", "/sys/class/net/eth1/statistics/rx_packets"],
    )
    .output()
    .map_err(io_error("reading a host's counters"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| DemoError::Failed(format!("no frame counter on {netns} eth1")))
}

/// CPU time the machine has spent so far, all its CPUs, in seconds: `/proc/stat`'s time not
/// idle (user, nice, system, irq, softirq, steal; guests are counted within user).
fn machine_busy_s() -> Result<f64, DemoError> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(io_error("reading /proc/stat"))?;
    let ticks = busy_ticks(&stat)
        .ok_or_else(|| DemoError::Failed("/proc/stat has no `cpu` line to read".into()))?;
    // SAFETY: sysconf only reads a configuration value.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks as f64 / per_s.max(1) as f64)
}

/// The busy ticks of `/proc/stat`'s first (`cpu`, all CPUs) line.
fn busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let t: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal …
    let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| t.get(i)).sum();
    (t.len() >= 4).then_some(busy)
}

/// Every group's replicas equal its head, and every monitor counted every frame delivered; the
/// state is fetched as in the orchestrator's run `run`.
fn check_state(
    config: &DemoConfig,
    run: u64,
    peers: Vec<Peer>,
    report: &mut DemoReport,
) -> Result<(), DemoError> {
    let key = read_secret(&secret_path(&config.run.topology.name))
        .map_err(|e| DemoError::Failed(e.to_string()))?;
    let ring = config.spec.ring();
    let mut slots = vec![None; ring.servers()];
    for p in peers {
        if let Some(slot) = slots.get_mut(usize::from(p.position)) {
            *slot = Some(p);
        }
    }
    let epoch = report.rerouted_epoch.unwrap_or(1);
    let (mut heads, mut differences) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + CONVERGE;
    loop {
        heads.clear();
        differences.clear();
        compare_groups(
            &ring,
            &key,
            (run, epoch),
            &slots,
            &mut heads,
            &mut differences,
        );
        if differences.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    report.violations.append(&mut differences);
    if heads.len() == config.spec.middlebox.len() {
        let middleboxes: Vec<_> = config
            .spec
            .middlebox
            .iter()
            .map(ftc_chain::middleboxes::build)
            .collect();
        let values = |i: usize| heads[i].entries.iter().map(|(_, v)| v.clone()).collect();
        check_monitors(
            &middleboxes,
            values,
            report.frames_delivered,
            &mut report.violations,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::node::NodeError;
    use std::process::ExitStatus;

    /// The demo's directory is made anew, private, whatever waits at the name an earlier demo's
    /// would have had (a link to elsewhere, a directory made by someone else); its files are
    /// made anew too.
    #[test]
    fn the_demo_s_directory_and_files_are_fresh_and_private() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let parent = tempfile::tempdir().unwrap();
        let elsewhere = parent.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let pid = std::process::id();
        symlink(
            &elsewhere,
            parent.path().join(format!("ftc-lab-demo-lab1-{pid}")),
        )
        .unwrap();
        let planted = parent.path().join(format!("ftc-lab-demo-lab2-{pid}"));
        std::fs::create_dir(&planted).unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
        let lab = |name: &str| name.parse::<LabName>().unwrap();
        let dirs = [
            demo_dir(parent.path(), &lab("lab1")).unwrap(),
            demo_dir(parent.path(), &lab("lab1")).unwrap(),
            demo_dir(parent.path(), &lab("lab2")).unwrap(),
        ];
        for (dir, lab) in dirs.iter().zip(["lab1", "lab1", "lab2"]) {
            let meta = std::fs::symlink_metadata(dir.path()).unwrap();
            assert!(meta.is_dir(), "{meta:?}");
            assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
            let name = dir.path().file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with(&format!("ftc-lab-demo-{lab}-")), "{name}");
            assert_ne!(name, format!("ftc-lab-demo-{lab}-{pid}"));
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
        assert_ne!(dirs[0].path(), dirs[1].path());
        // A file planted as a link into the directory is not written through.
        let planted_file = dirs[0].path().join("file");
        symlink(elsewhere.join("victim"), &planted_file).unwrap();
        assert!(write_random(&planted_file, 10).is_err());
        assert!(!elsewhere.join("victim").exists());
        let sha = write_random(&dirs[1].path().join("file"), 100_000).unwrap();
        assert_eq!(sha256_of(&dirs[1].path().join("file")).unwrap(), sha);
        // Gone once dropped.
        let first = dirs[0].path().to_path_buf();
        drop(dirs);
        assert!(!first.exists());
        assert!(elsewhere.exists() && planted.exists());
    }

    /// A helper program missing is named before anything starts, not taken for a chain that
    /// carries no request.
    #[test]
    fn a_missing_curl_or_python3_is_named() {
        assert!(check_tools(|_| true).is_ok());
        let missing = |absent: &'static str| check_tools(move |p| p != absent).unwrap_err();
        assert!(matches!(
            missing("python3"),
            LabError::Missing("python3", "python3")
        ));
        assert!(matches!(missing("curl"), LabError::Missing("curl", "curl")));
        let said = DemoError::from(missing("curl")).to_string();
        assert!(said.contains("`curl`") && said.contains("PATH"), "{said}");
        // What is looked for is what the demo runs.
        let mut asked = Vec::new();
        let _ = check_tools(|p| {
            asked.push(p.to_string());
            true
        });
        assert_eq!(asked, ["curl", "python3"]);
    }

    /// The server saw the NAT's public addresses only, and one at least; without a NAT there
    /// is nothing to check.
    #[test]
    fn the_nat_check_wants_the_public_address_seen() {
        let saw = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let nat = saw(&["203.0.113.1"]);
        assert_eq!(nat_violation(&saw(&["203.0.113.1"]), &nat), None);
        assert_eq!(
            nat_violation(&saw(&["10.0.0.2", "203.0.113.1"]), &nat).as_deref(),
            Some("the HTTP server saw 10.0.0.2, not the NAT's public address [\"203.0.113.1\"]")
        );
        // An empty log proves nothing: it does not pass.
        let none = nat_violation(&[], &nat).expect("a violation");
        assert!(none.contains("logged no client"), "{none}");
        assert_eq!(nat_violation(&[], &[]), None);
        assert_eq!(nat_violation(&saw(&["10.0.0.2"]), &[]), None);
    }

    /// A panic in the demo's part still stops the chain's runner, which the scope waits for.
    #[test]
    fn the_chain_s_runner_stops_when_the_checks_panic() {
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let panicked = std::panic::catch_unwind(|| {
            std::thread::scope(|s| {
                // A runner that stops on its flag (and gives up after a minute, so that the
                // test fails rather than hangs).
                s.spawn(|| {
                    while !stop.load(Ordering::Acquire)
                        && started.elapsed() < Duration::from_secs(60)
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                });
                let _stop_chain = RaiseOnDrop(&stop);
                panic!("a check panicked");
            })
        });
        assert!(panicked.is_err());
        assert!(stop.load(Ordering::Acquire));
        assert!(started.elapsed() < SETTLED, "{:?}", started.elapsed());
    }

    /// Reroutes are followed to the last; ones that never stop are given up on at the deadline,
    /// with a violation.
    #[test]
    fn reroutes_are_followed_until_the_chain_settles_or_the_deadline() {
        let said = |what: &str, epoch: u32, run: u32| {
            format!(
                "ftc orchestrator: {what} in epoch {epoch} of run {run}: node 0 data \
                 10.77.0.10:1 transfer 10.77.0.10:2"
            )
        };
        let line = |epoch: u32| said("rerouted", epoch, 1);
        let quiet = Duration::from_millis(100);
        let (tx, rx) = crossbeam_channel::unbounded();
        let (chain_stop, sending) = (AtomicBool::new(false), AtomicBool::new(true));
        std::thread::scope(|s| {
            let chain = s.spawn(|| {
                while !chain_stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            let (mut run, mut peers, mut report) = (0, Vec::new(), DemoReport::default());
            tx.send(line(2)).unwrap();
            // An orchestrator started in place of one killed adopted the chain: its run next.
            tx.send(said("adopted", 2, 7)).unwrap();
            tx.send(said("rerouted", 3, 7)).unwrap();
            let now = (&mut run, &mut peers);
            follow_reroutes(&rx, &chain, (quiet, SETTLED), now, &mut report);
            assert_eq!(report.rerouted_epoch, Some(3));
            assert_eq!((run, peers.len()), (7, 1));
            assert!(report.violations.is_empty(), "{:?}", report.violations);
            // Rerouted every 20 ms from now on (for 10 s at most: a test that fails, not hangs).
            s.spawn(|| {
                let mut epoch = 4;
                while sending.load(Ordering::Acquire) && epoch < 500 {
                    tx.send(line(epoch)).unwrap();
                    epoch += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let started = Instant::now();
            let within = 5 * quiet;
            let now = (&mut run, &mut peers);
            follow_reroutes(&rx, &chain, (quiet, within), now, &mut report);
            let took = started.elapsed();
            sending.store(false, Ordering::Release);
            chain_stop.store(true, Ordering::Release);
            assert!(
                took >= within && took < within + Duration::from_secs(2),
                "{took:?}"
            );
            assert!(
                report.rerouted_epoch > Some(4),
                "{:?}",
                report.rerouted_epoch
            );
            assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
            assert!(
                report.violations[0].starts_with("the chain did not settle"),
                "{:?}",
                report.violations
            );
        });
    }

    /// A namespace whose processes cannot be listed is an error, not one where nothing runs
    /// yet (the kill would wait for the download to end).
    #[test]
    fn killing_in_a_namespace_that_is_not_there_fails() {
        let mut killed = Vec::new();
        let e = kill_netns("ftc-demo-test-no-such-netns", &mut killed).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("listing the processes in ftc-demo-test-no-such-netns"),
            "{e}"
        );
        assert!(killed.is_empty());
    }

    /// A process is known by its start time besides its id: a later one with the same id is
    /// another.
    #[test]
    fn processes_are_told_apart_by_their_start_time() {
        let stat = |comm: &str, start: u64| {
            format!(
                "4242 ({comm}) S 1 4242 4242 0 -1 4194560 97 0 0 0 1 0 0 0 20 0 1 0 {start} \
                 9318400 800 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n"
            )
        };
        assert_eq!(stat_start_time(&stat("ftc", 4987015)), Some(4987015));
        assert_eq!(stat_start_time(&stat("a) R 1 2 (b", 77)), Some(77));
        assert_eq!(stat_start_time("4242 (ftc) S 1 2"), None);
        assert_eq!(stat_start_time("no command name"), None);
        // This process's, read twice, is one; a child's (started later) is another.
        let me = std::process::id() as i32;
        assert_eq!(start_time(me), start_time(me));
        assert!(start_time(me).is_some());
        let mut child = Command::new("sleep").arg("10").spawn().unwrap();
        let theirs = start_time(child.id() as i32);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(theirs >= start_time(me), "{theirs:?}");
        assert_eq!(start_time(child.id() as i32), None);
    }

    /// A helper is started in a process group of its own, and killed when the thread that
    /// started it ends without stopping it (as when the demo is killed).
    #[test]
    fn helpers_lead_their_group_and_die_with_their_starter() {
        let pid = std::thread::spawn(|| {
            let mut sleep = Command::new("sleep");
            sleep.arg("30");
            let helper = start(sleep, "sleep").unwrap();
            let pid = helper.0.id();
            // Not stopped by its drop: only its starter's end is left to stop it.
            std::mem::forget(helper);
            pid
        })
        .join()
        .unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let group = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2));
        let deadline = Instant::now() + Duration::from_secs(5);
        while procs::alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let dead = !procs::alive(pid);
        // SAFETY: waitpid on our own child (a zombie by now, or killed here), no memory shared.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
        }
        assert_eq!(group, Some(pid.to_string().as_str()), "{stat}");
        assert!(dead, "sleep {pid} outlived the thread that started it");
    }

    /// The HTTP server is used once it said it serves; one that exits instead (its port held by
    /// a server an earlier run left behind, say) or says nothing is an error that says why.
    #[test]
    fn the_http_server_is_waited_for_and_its_end_reported() {
        let dir = tempfile::tempdir().unwrap();
        let sh = |script: &str| {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            c
        };
        let within = Duration::from_secs(10);
        let log = |name: &str| dir.path().join(name);
        let serves = format!("sleep 0.2; echo '{SERVING} 10.0.0.2 port 8080'; exec sleep 30");
        let started = Instant::now();
        let mut server = HttpServer::serving(sh(&serves), "ns1", &log("a"), within).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(server.running().is_ok());
        // It ends: said so, with its last words.
        // SAFETY: kill(2) on our own child, not reaped yet.
        unsafe { libc::kill(server.process.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        let mut ended = server.running();
        while ended.is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            ended = server.running();
        }
        let ended = ended.unwrap_err().to_string();
        assert!(
            ended.starts_with("the HTTP server in ns1 exited (signal: 15"),
            "{ended}"
        );
        assert!(
            ended.ends_with(&format!("{SERVING} 10.0.0.2 port 8080")),
            "{ended}"
        );
        let taken = "echo 'OSError: [Errno 98] Address already in use' >&2; exit 1";
        let e = HttpServer::serving(sh(taken), "ns1", &log("b"), within).err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some(
                "the HTTP server in ns1 exited (exit status: 1): \
                 OSError: [Errno 98] Address already in use"
            )
        );
        let silent = HttpServer::serving(
            sh("exec sleep 30"),
            "ns1",
            &log("c"),
            Duration::from_millis(250),
        )
        .err()
        .map(|e| e.to_string());
        assert!(
            silent.as_deref().is_some_and(
                |e| e.starts_with("the HTTP server in ns1 did not say it serves within 250ms")
            ),
            "{silent:?}"
        );
        // The log is never one that was there.
        assert!(HttpServer::serving(sh(&serves), "ns1", &log("a"), within).is_err());
    }

    /// A node's end passes when the demo killed it or the orchestrator cut it off; a panic, a
    /// crash, a hang, an error or another's SIGKILL is a violation, with the node's last words.
    #[test]
    fn nodes_that_crash_are_violations() {
        use std::os::unix::process::ExitStatusExt;
        let exit = |pid: u32, raw: i32, said: &str| NodeExit {
            position: 1,
            pid,
            status: ExitStatus::from_raw(raw),
            said: said.to_string(),
        };
        let code = |c: i32| c << 8;
        let victims = [Victim {
            pid: 100,
            started: 7,
        }];
        let gone = format!("ftc: node 1: {}", NodeError::OrchestratorGone);
        let recent = |exits: &[NodeExit]| {
            let mut recent = Recent::default();
            exits.iter().cloned().for_each(|e| recent.push(e));
            recent
        };
        let fine = [exit(100, libc::SIGKILL, ""), exit(101, code(4), &gone)];
        assert_eq!(crashes(&recent(&fine), &victims), Vec::<String>::new());
        let panicked = "thread 'main' panicked at node/src/serve.rs:1:1: oops";
        let bad = [
            exit(102, code(101), panicked),
            exit(103, libc::SIGSEGV, ""),
            exit(104, code(3), "ftc: the data path hung; exiting"),
            exit(105, code(2), "ftc: node 1: cannot bind the data socket"),
            // A SIGKILL the demo did not send, and one of ours that ended otherwise.
            exit(106, libc::SIGKILL, ""),
            exit(100, code(101), panicked),
        ];
        let said = crashes(&recent(&bad), &victims);
        assert_eq!(said.len(), bad.len(), "{said:?}");
        assert_eq!(
            said[0],
            format!("node 1 (pid 102) exited (exit status: 101) while the chain ran: {panicked}")
        );
        assert!(
            said[1].starts_with("node 1 (pid 103) exited (signal: 11"),
            "{}",
            said[1]
        );
        assert!(said[1].ends_with("while the chain ran"), "{}", said[1]);
        assert!(said[2].contains("(exit status: 3)"), "{}", said[2]);
        // Exits the run did not keep were not checked: a violation of their own.
        let mut many = recent(&fine);
        for _ in 0..Recent::<NodeExit>::KEPT {
            many.push(exit(100, libc::SIGKILL, ""));
        }
        let said = crashes(&many, &victims);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].starts_with("and 2 more nodes exited while the chain ran"),
            "{}",
            said[0]
        );
    }

    #[test]
    fn busy_ticks_are_the_first_lines_time_not_idle() {
        let stat = "cpu  10 2 30 400 5 6 7 8 9 0\ncpu0 1 1 1 1 1 1 1 1 1 1\nintr 1\n";
        assert_eq!(busy_ticks(stat), Some(10 + 2 + 30 + 6 + 7 + 8));
        // Old kernels have fewer fields: what is there counts.
        assert_eq!(busy_ticks("cpu 1 2 3 4\n"), Some(6));
        assert_eq!(busy_ticks("cpu0 1 2 3 4\n"), None);
        assert_eq!(busy_ticks("cpu 1 x 3 4\n"), None);
    }

    #[test]
    fn a_timed_out_download_says_the_chain_stalled() {
        assert_eq!(
            download_failed(7, 0),
            "the download failed: curl exit 7, HTTP 0"
        );
        let stalled = download_failed(CURL_TIMED_OUT, 200);
        assert!(
            stalled.starts_with("the download failed: curl exit 28, HTTP 200 (curl gave up")
                && stalled.contains("30s")
                && stalled.ends_with("the chain stalled)"),
            "{stalled}"
        );
    }

    fn recovered(epoch: u32, failed: &[u16]) -> RecoveryReport {
        RecoveryReport {
            epoch,
            failed: failed.to_vec(),
            detection_ns: 15_000_000,
            start_ns: 60_000_000,
            transfer_ns: 1_000_000,
            reroute_ns: 300_000,
            total_ns: 62_000_000,
            bytes: 1609,
        }
    }

    fn killed(position: u16) -> Killed {
        Killed {
            position,
            at_bytes: 1,
        }
    }

    /// Every kill accounts for one replacement of its server (two killed at once are recovered
    /// together); a replacement beyond the kills of its server is one of a live node.
    #[test]
    fn replacements_beyond_the_kills_are_named() {
        let kills = [killed(1), killed(0), killed(2), killed(1)];
        let ours = [
            recovered(2, &[1]),
            recovered(3, &[0]),
            recovered(4, &[2]),
            recovered(5, &[1]),
        ];
        assert_eq!(replaced_without_kill(&ours, &kills, &[]), Vec::<u16>::new());
        let mut more = ours.to_vec();
        more.insert(2, recovered(4, &[1]));
        more.push(recovered(7, &[2, 0]));
        more.push(recovered(8, &[2]));
        assert_eq!(replaced_without_kill(&more, &kills, &[]), vec![0, 1, 2, 2]);
        // A server cut off the management network is expected to be replaced too, and one
        // that was not (back before it was declared failed) is no surprise.
        let isolated = |p| Cut {
            cut_off: Some(p),
            ..Cut::default()
        };
        let between = Cut::default();
        let cuts = [isolated(2), between, isolated(0), isolated(1)];
        assert_eq!(replaced_without_kill(&more, &kills, &cuts), vec![2]);
        let together = [recovered(2, &[0, 2])];
        assert_eq!(
            replaced_without_kill(&together, &[killed(0), killed(2)], &[]),
            Vec::<u16>::new()
        );
        // A recovery the orchestrator never finished (more than f killed) is not reported.
        assert_eq!(replaced_without_kill(&[], &kills, &[]), Vec::<u16>::new());
    }
}
