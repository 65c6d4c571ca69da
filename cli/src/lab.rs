//! `ftc lab`: a chain in network namespaces on this host (the logic is in
//! `ftc_orchestrator::lab`). `up` makes the namespaces and links, `down` removes them (also
//! what a crashed `up` left), `status` shows them, `run` runs the chain's orchestrator and nodes
//! there until Ctrl-C or for a while, bringing the lab up (and down again) if it is not up, and
//! `demo` runs them the same way for a TCP download through the chain while servers are killed,
//! then checks the file, the NAT, the replicas and the monitors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use ftc_chain::spec::ChainSpec;
use ftc_chain::wire::NshRepr;
use ftc_node::ftmb::FtmbConfig;
use ftc_node::{Mode, ServerConfig};
use ftc_orchestrator::lab::apply::{self, LabError};
use ftc_orchestrator::lab::demo::{self, DemoConfig, LabKill};
use ftc_orchestrator::lab::deploy::{self, NodeExit, RunConfig};
use ftc_orchestrator::lab::topology::{LabName, Layout, Topology, CLIENT, RING_MAX_FRAME, SERVER};
use ftc_orchestrator::process::edges::EdgeKind;
use ftc_orchestrator::process::loss::RingLoss;
use ftc_orchestrator::process::shape::Shape;

use crate::chaos::parse_when_down;
use crate::mode::{ModeArg, SnapshotArgs};
use cuts::CutArgs;

mod cuts;

#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Make a lab for a chain: namespaces, management bridge, ring links, edges, addresses.
    Up {
        /// The chain spec (TOML).
        spec: PathBuf,
        #[command(flatten)]
        name: NameArg,
        /// Remove the lab first if it exists.
        #[arg(long)]
        force: bool,
        /// The mode the lab is for: FTMB's servers are linked otherwise than FTC's ring (and
        /// there are twice as many); FTC and NF share a layout.
        #[arg(long, value_enum, default_value_t = ModeArg::Ftc)]
        mode: ModeArg,
        /// Print the commands instead of running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove a lab: every namespace and link named after it, and the processes in them.
    Down {
        #[command(flatten)]
        name: NameArg,
    },
    /// Show what exists of a lab.
    Status {
        #[command(flatten)]
        name: NameArg,
    },
    /// Run a chain in its lab (brought up first if it is not) until Ctrl-C or --duration.
    Run(RunArgs),
    /// A real TCP download through the chain (curl from python3's http.server; AF_XDP sockets at
    /// the chain's ends, or AF_PACKET sockets with --transport udp) while the middle server's
    /// node (or those named with --kill) is killed with SIGKILL; checks the file, the NAT, the
    /// replicas and the monitors.
    Demo(DemoArgs),
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The chain spec (TOML).
    spec: PathBuf,
    #[command(flatten)]
    name: NameArg,
    /// Megabytes of the file downloaded, 1 to 100000.
    #[arg(long, default_value_t = 200)]
    size_mb: u64,
    /// Downloads of the file at once, each over a TCP connection of its own (1 to 64): flows
    /// spread over the lanes of middleboxes of several `threads`. Kill shares and --rate-mbit
    /// are of all of them together.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: u32,
    /// The length of the server's data frames in bytes (102 to 1514; Ethernet, IPv4 and TCP
    /// headers included): the client advertises the TCP MSS that gives them, to download at
    /// small packet sizes. Default: full-size frames.
    #[arg(long, value_name = "BYTES")]
    frame_bytes: Option<u16>,
    /// UDP flows to open before the download (0 to 64512), to give the middleboxes state to
    /// recover: a datagram from each of that many client ports to the server's DNS port. A NAT
    /// maps each: leave it ports for the download (Ch-Rec's NAT has 50,001).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=i64::from(demo::MAX_UDP_FLOWS)))]
    udp_flows: u32,
    /// The share of the download (of every connection's together) when the middle server is
    /// killed (and any --kill without its own share), 0 to 1.
    #[arg(long, default_value_t = 0.3)]
    kill_at: f64,
    /// A server to kill instead of the middle one: its ring position, optionally `@SHARE` of
    /// the file downloaded (default: --kill-at). Repeat for more, in the order given; up to f
    /// killed at once are recovered. A server killed again waits for its replacement to run.
    #[arg(
        long = "kill",
        value_name = "POSITION[@SHARE]",
        conflicts_with = "no_kill"
    )]
    kills: Vec<String>,
    /// Also kill the orchestrator with SIGKILL once this share of the download (0 to 1) has
    /// arrived: the nodes serve on without it, the lab run starts another on the same address
    /// DOWN seconds later (0 to 3600, default 0), and it adopts the chain as they rejoin it,
    /// recovering the servers killed meanwhile (FTC only).
    #[arg(long, value_name = "SHARE[+DOWN]")]
    kill_orchestrator: Option<String>,
    #[command(flatten)]
    cuts: CutArgs,
    /// The sockets at the chain's edges.
    #[arg(long, value_enum, default_value_t = Transport::Xdp)]
    transport: Transport,
    /// What the nodes run: FTC, or a baseline (`nf`, `ftmb`, `ftmb-snapshot`: no kill, no
    /// state checks; for comparing throughput and latency). FTMB needs a lab of its layout
    /// (`ftc lab up --mode ftmb`; made here when no lab is up).
    #[arg(long, value_enum, default_value_t = ModeArg::Ftc)]
    mode: ModeArg,
    #[command(flatten)]
    snapshots: SnapshotArgs,
    /// Run FTC without the kill: for throughput and latency figures (the state checks still
    /// run).
    #[arg(long)]
    no_kill: bool,
    /// Pace the download at this many Mbit/s at most, 0.01 to 1000000 (curl's `--limit-rate`,
    /// shared out among the connections), e.g. half what the chain carries flat out, to see
    /// latency under a given load.
    #[arg(long)]
    rate_mbit: Option<f64>,
    /// Milliseconds between round trips of the latency probe (a TCP echo through the chain
    /// during the download), 0 to 10000; 0: no probe.
    #[arg(long, default_value_t = 1.0)]
    probe_ms: f64,
    #[command(flatten)]
    nodes: NodeArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How the lab's nodes detect failures, and the failures injected on their links.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Heartbeat period in milliseconds, 0.1 to 10000.
    #[arg(long, default_value_t = 5.0)]
    heartbeat_ms: f64,
    /// Missed heartbeats that declare a node failed, 1 to 1000.
    #[arg(long, default_value_t = 3)]
    misses: u32,
    /// Failure injection: every node drops each frame that arrives from another server with
    /// probability P (`ftc node --ring-loss`); the chain repairs the loss.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    ring_loss: f64,
    /// Every node logs a line of what its server did every SECS seconds, 0.1 to 3600
    /// (`ftc node --stats-every`).
    #[arg(long, value_name = "SECS")]
    stats_every: Option<f64>,
}

#[derive(Debug, clap::Args)]
pub struct NameArg {
    /// The lab's name, the prefix of its namespaces and links: 1 to 8 lowercase letters and
    /// digits, starting with a letter.
    #[arg(long, default_value = "ftc")]
    name: LabName,
}

/// How frames travel in the lab. Either way server 0 and the last server take and send customer
/// frames on the edge links (`ftc node --edge-in`/`--edge-out`); over `udp` the nodes exchange
/// frames with each other over UDP on the management network, over `xdp` on the links between
/// their namespaces (AF_XDP, `ftc node --ring-next`/`--ring-prev`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// The edges on raw packet sockets (AF_PACKET), UDP between the nodes: for hosts without
    /// AF_XDP.
    Udp,
    /// The edges and the links between the nodes on AF_XDP sockets.
    Xdp,
}

impl Transport {
    fn edges(self) -> EdgeKind {
        match self {
            Transport::Udp => EdgeKind::Packet,
            Transport::Xdp => EdgeKind::Xdp,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The chain spec (TOML).
    spec: PathBuf,
    #[command(flatten)]
    name: NameArg,
    /// How frames travel: the edges' sockets, and between the nodes.
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    transport: Transport,
    /// Stop after this many seconds, 0.01 to 1000000 (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// What the nodes run; FTMB needs a lab of its layout (`ftc lab up --mode ftmb`).
    #[arg(long, value_enum, default_value_t = ModeArg::Ftc)]
    mode: ModeArg,
    #[command(flatten)]
    snapshots: SnapshotArgs,
    #[command(flatten)]
    nodes: NodeArgs,
    #[command(flatten)]
    cuts: CutArgs,
}

pub fn run(command: &LabCommand) -> anyhow::Result<ExitCode> {
    crate::log::init("lab");
    match command {
        LabCommand::Up {
            spec,
            name,
            force,
            mode,
            dry_run,
        } => up(
            spec,
            &name.name,
            Layout::of((*mode).into()),
            *force,
            *dry_run,
        ),
        LabCommand::Down { name } => {
            let down = apply::down(&name.name)?;
            outln!(
                "lab {}: removed {} namespaces, {} links, killed {} processes{}",
                name.name,
                down.namespaces.len(),
                down.links.len(),
                down.killed.len(),
                if down.recorded {
                    ""
                } else {
                    " (it had no state file: removed what is named as it names its objects)"
                }
            );
            for (what, names) in [("namespaces", &down.namespaces), ("links", &down.links)] {
                if !names.is_empty() {
                    outln!("  {what}: {}", names.join(" "));
                }
            }
            for k in &down.killed {
                outln!(
                    "  killed process {} ({}) in {}",
                    k.pid,
                    k.command,
                    k.namespace
                );
            }
            for dir in &down.dirs {
                outln!("  removed the demo's directory {}", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Status { name } => status(&name.name),
        LabCommand::Run(args) => run_chain(args),
        LabCommand::Demo(args) => demo(args),
    }
}

fn up(
    spec: &Path,
    name: &LabName,
    layout: Layout,
    force: bool,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let spec = ChainSpec::load(spec)?;
    if dry_run {
        let topology = Topology::new(&spec, layout, name.clone(), 0)?;
        outln!("# lab {name}; `up` picks a free management subnet 10.77.X.0/24 (here X = 0)");
        for op in topology.ops() {
            outln!("{op}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let up = apply::up(&spec, layout, name, force)?;
    for warning in &up.warnings {
        eprintln!("ftc lab: warning: {warning}");
    }
    describe(&up.topology);
    Ok(ExitCode::SUCCESS)
}

/// What a lab is: its namespaces and addresses.
fn describe(t: &Topology) {
    let (last, exit) = (t.servers - 1, t.exit());
    outln!(
        "lab {} is up: {} servers {}-s0 … {}-s{last}, management bridge {} {}/24",
        t.name,
        t.servers,
        t.name,
        t.name,
        t.bridge(),
        t.bridge_ip()
    );
    for i in 0..t.servers {
        outln!("  {}: mgmt {}", t.server_netns(i), t.mgmt_ip(i));
    }
    if t.queues > 1 {
        outln!(
            "  every link between servers and every edge link: {} queues (a lane's own each)",
            t.queues
        );
    }
    for host in [CLIENT, SERVER] {
        outln!(
            "  {}: eth0 {}/24 (to {}-s0), eth1 (from {}-s{exit}), MAC {}",
            t.host_netns(&host),
            host.ip,
            t.name,
            t.name,
            host.mac_text()
        );
    }
    for ip in &t.nat_ips {
        outln!(
            "  {}: {ip}/32 (a NAT's public address) back through the chain to the client",
            t.host_netns(&SERVER)
        );
    }
    for ip in &t.vips {
        outln!(
            "  {}: {ip}/32 (a load balancer's address) through the chain to the server",
            t.host_netns(&CLIENT)
        );
    }
    if !t.backends.is_empty() {
        outln!(
            "  {}: backends {:?} on its loopback",
            t.host_netns(&SERVER),
            t.backends
        );
    }
}

/// What exists of lab `name`; failure when nothing does, or when its `up` did not finish.
fn status(name: &LabName) -> anyhow::Result<ExitCode> {
    let status = apply::status(name)?;
    if status.recorded.is_none() && status.namespaces.is_empty() && status.links.is_empty() {
        outln!("lab {name} does not exist");
        return Ok(ExitCode::FAILURE);
    }
    let complete = status.recorded.as_ref().is_none_or(|r| r.complete);
    match &status.recorded {
        Some(r) if r.complete => describe(&r.topology),
        Some(_) => outln!("{}", LabError::Incomplete(name.clone())),
        None => outln!("lab {name}: no state file (`ftc lab down` removes what is left)"),
    }
    outln!("namespaces: {}", status.namespaces.join(" "));
    outln!("root links: {}", status.links.join(" "));
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_chain(args: &RunArgs) -> anyhow::Result<ExitCode> {
    if args.duration.is_some_and(|d| !(0.01..=1e6).contains(&d)) {
        anyhow::bail!("--duration must be between 0.01 and 1000000 seconds");
    }
    let duration = args.duration.map(Duration::from_secs_f64);
    let edges = args.transport.edges();
    let mode = Mode::from(args.mode);
    let ftmb = args.snapshots.config(mode)?;
    let spec = ChainSpec::load(&args.spec)?;
    let when = ("time", args.duration.unwrap_or(1e6), " seconds");
    let cuts = args
        .cuts
        .parse((&spec, &args.name.name), (mode, args.transport), when)?;
    let say = |a: std::fmt::Arguments<'_>| outln!("{a}");
    in_lab(
        &args.spec,
        &args.name.name,
        &args.nodes,
        (edges, mode, ftmb),
        say,
        |config, stop| {
            // The cuts count from the deployment, which the orchestrator's first line says.
            let (deployed_tx, deployed) = crossbeam_channel::unbounded();
            let config = RunConfig {
                peers: Some(deployed_tx),
                ..config
            };
            let ran = AtomicBool::new(false);
            // A node killed by a signal (an operator's failure injection) or cut off by the
            // orchestrator is the chain's business; one that ended on its own (a panic, a data
            // path that hung, an error) is the run's failure. Every exit is said as it happens;
            // only the latest of those are kept.
            let (ended, cut) = std::thread::scope(|s| {
                let cutter = (!cuts.is_empty())
                    .then(|| s.spawn(|| cuts::on_schedule(&config, &cuts, &deployed, &ran)));
                let ended = deploy::run(
                    &config,
                    stop,
                    duration,
                    &mut std::io::stdout(),
                    NodeExit::ended_on_its_own,
                );
                ran.store(true, Ordering::Release);
                let cut = cutter.map_or(Ok(()), |c| c.join().expect("the cutter does not panic"));
                (ended, cut)
            });
            let ended = ended?;
            cut?;
            for e in ended.iter() {
                outln!("VIOLATION: {}", e.while_the_chain_ran());
            }
            if ended.forgotten() > 0 {
                outln!(
                    "VIOLATION: and {} more nodes that ended on their own while the chain ran \
                     (earlier, not kept: the run keeps the latest {})",
                    ended.forgotten(),
                    ended.iter().count()
                );
            }
            Ok(if ended.total() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        },
    )
}

fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    if args.size_mb == 0 || args.size_mb > 100_000 {
        anyhow::bail!("--size-mb must be between 1 and 100000");
    }
    if !(0.0..=1.0).contains(&args.kill_at) {
        anyhow::bail!("--kill-at must be between 0 and 1");
    }
    let kill_orchestrator = args
        .kill_orchestrator
        .as_deref()
        .map(|text| {
            let share = ("share", 1.0, "");
            let arg = format!("--kill-orchestrator {text:?}");
            parse_when_down(&arg, text, share, (Duration::ZERO, 3600.0))
        })
        .transpose()?;
    if args
        .rate_mbit
        .is_some_and(|r| !(0.01..=1_000_000.0).contains(&r))
    {
        anyhow::bail!("--rate-mbit must be between 0.01 and 1000000");
    }
    if !(0.0..=10_000.0).contains(&args.probe_ms) {
        anyhow::bail!("--probe-ms must be between 0 and 10000");
    }
    if let Some(bytes) = args.frame_bytes {
        demo::check_frame_bytes(bytes).context("--frame-bytes")?;
    }
    let spec = ChainSpec::load(&args.spec)?;
    let mode = Mode::from(args.mode);
    let ftmb = args.snapshots.config(mode)?;
    let ftc = mode == Mode::Ftc;
    if !ftc && !args.kills.is_empty() {
        anyhow::bail!("--kill needs --mode ftc: the baselines recover no server");
    }
    if !ftc && args.kill_orchestrator.is_some() {
        anyhow::bail!("--kill-orchestrator needs --mode ftc: the baselines' nodes are not adopted");
    }
    let share = ("share", 1.0, "");
    let cuts = args
        .cuts
        .parse((&spec, &args.name.name), (mode, args.transport), share)?;
    let servers = spec.ring().servers();
    let kills = if !ftc || args.no_kill || (args.kills.is_empty() && !cuts.is_empty()) {
        Vec::new()
    } else if args.kills.is_empty() {
        vec![LabKill {
            position: (servers / 2) as u16,
            at: args.kill_at,
        }]
    } else {
        let kills: Vec<LabKill> = args
            .kills
            .iter()
            .map(|k| parse_kill(k, args.kill_at, servers))
            .collect::<anyhow::Result<_>>()?;
        crate::chaos::check_at_once(
            &kills,
            spec.chain.f,
            0.0,
            |k| (k.position, k.at),
            "of the download",
        )?;
        kills
    };
    // With --json, standard output is the report alone.
    let say = |a: std::fmt::Arguments<'_>| {
        if args.json {
            eprintln!("{a}");
        } else {
            outln!("{a}");
        }
    };
    in_lab(
        &args.spec,
        &args.name.name,
        &args.nodes,
        (args.transport.edges(), mode, ftmb),
        say,
        |run, stop| {
            let config = DemoConfig {
                run: RunConfig {
                    orchestrator_down: kill_orchestrator.map_or(Duration::ZERO, |k| k.1),
                    ..run
                },
                spec,
                size: args.size_mb << 20,
                connections: args.connections,
                kills,
                kill_orchestrator: kill_orchestrator.map(|k| k.0),
                cuts,
                rate_limit: args.rate_mbit.map(|r| (r * 1e6 / 8.0) as u64),
                probe: (args.probe_ms > 0.0).then(|| Duration::from_secs_f64(args.probe_ms / 1e3)),
                frame_bytes: args.frame_bytes,
                udp_flows: args.udp_flows,
            };
            let r = demo::demo(&config, stop)?;
            if args.json {
                outln!("{}", serde_json::to_string(&r)?);
            } else {
                outln!(
                "downloaded {} bytes over {} connection(s) in {:.2} s ({:.0} Mbit/s, TCP handshake {:.3} ms): HTTP {}, curl exit {}, SHA-256 {}",
                r.bytes,
                r.connections,
                r.seconds,
                r.throughput_mbit_s,
                r.connect_ms,
                r.http_status,
                r.curl_exit,
                if r.sha256_matches { "matches" } else { "DIFFERS" }
            );
                if let Some(at) = r.orchestrator_killed_at {
                    outln!("killed the orchestrator after {at} bytes; another adopted the chain");
                }
                for k in &r.killed {
                    outln!("killed server {} after {} bytes", k.position, k.at_bytes);
                }
                for c in &r.cuts {
                    outln!(
                        "cut {} after {} bytes, for {:.2} s (up again after {} bytes)",
                        c.what,
                        c.at,
                        c.down_s,
                        c.up_at
                    );
                }
                if !r.killed.is_empty() || r.rerouted_epoch.is_some() {
                    outln!(
                        "rerouted into epoch {}",
                        r.rerouted_epoch.map_or("-".into(), |e| e.to_string())
                    );
                }
                let ms: Vec<f64> = r
                    .recoveries
                    .iter()
                    .map(|x| x.total_ns as f64 / 1e6)
                    .collect();
                match (ms.as_slice(), ftc_bench::stats::median(&ms)) {
                    ([one], _) => {
                        outln!("1 recovery, from its detection to the reroute: {one:.1} ms")
                    }
                    (_, Some(median)) => outln!(
                        "{} recoveries, each from its detection to the reroute: median {median:.1} ms, max {:.1} ms",
                        ms.len(),
                        ms.iter().copied().fold(f64::MIN, f64::max)
                    ),
                    (_, None) => {}
                }
                if !r.replaced_without_kill.is_empty() {
                    outln!(
                        "replaced without a kill: server {:?}: a live node that missed {} heartbeats \
                         (a loaded host) is declared failed, cut off and replaced; --heartbeat-ms and \
                         --misses set the silence a node may keep",
                        r.replaced_without_kill, args.nodes.misses
                    );
                }
                if let Some(rtt) = &r.rtt_us {
                    outln!(
                        "round trips through the chain during the download ({} probes): p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
                        rtt.samples, rtt.latency.p50, rtt.latency.p99, rtt.latency.p999, rtt.latency.max
                    );
                }
                outln!(
                    "the HTTP server saw {:?}; the chain delivered {} frames ({:.0} frames/s during the download; the machine's CPU: {:.2} s, {:.2} µs per frame)",
                    r.server_saw, r.frames_delivered, r.frames_per_s, r.machine_cpu_s, r.machine_cpu_us_per_frame
                );
                if r.udp_flows_sent > 0 {
                    outln!(
                        "before the download: {} UDP flows opened, {} of their datagrams arrived",
                        r.udp_flows_sent,
                        r.udp_flows_arrived
                    );
                }
                if r.violations.is_empty() && !(r.killed.is_empty() && r.cuts.is_empty()) {
                    let survived = [(r.killed.len(), "kill"), (r.cuts.len(), "cut")]
                        .into_iter()
                        .filter(|&(n, _)| n > 0)
                        .map(|(n, what)| format!("the {what}{}", if n == 1 { "" } else { "s" }))
                        .collect::<Vec<_>>()
                        .join(" and ");
                    outln!("consistent: the download survived {survived}, every replica equals its head, every monitor counted every delivered frame");
                } else if !ftc {
                    outln!(
                        "{} baseline: no kill, no state checks",
                        mode.name().to_uppercase()
                    );
                } else if r.violations.is_empty() {
                    outln!("consistent (no kill): every replica equals its head, every monitor counted every delivered frame");
                }
                for v in &r.violations {
                    outln!("VIOLATION: {v}");
                }
            }
            Ok(if r.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        },
    )
}

/// Parse `POSITION[@SHARE]` for a chain of `servers` servers; a kill without a share happens at
/// `default_at`.
fn parse_kill(text: &str, default_at: f64, servers: usize) -> anyhow::Result<LabKill> {
    let (pos, at) = text.split_once('@').unwrap_or((text, ""));
    let position: u16 = pos
        .trim()
        .parse()
        .ok()
        .filter(|&p| usize::from(p) < servers)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--kill {text:?}: the position must be a server of the chain, 0 to {}",
                servers - 1
            )
        })?;
    let at = match at.trim() {
        "" if !text.contains('@') => default_at,
        a => a
            .parse::<f64>()
            .ok()
            .filter(|s| (0.0..=1.0).contains(s))
            .ok_or_else(|| {
                anyhow::anyhow!("--kill {text:?}: the share must be a number from 0 to 1")
            })?,
    };
    Ok(LabKill { position, at })
}

/// Run `job` on the chain of `spec` in lab `name` (brought up first, and down again after, if it
/// was not up) with edges of `edges`, nodes in `mode`, with Ctrl-C raising its stop flag.
fn in_lab(
    spec_path: &Path,
    name: &LabName,
    nodes: &NodeArgs,
    (edges, mode, ftmb): (EdgeKind, Mode, FtmbConfig),
    say: impl Fn(std::fmt::Arguments<'_>),
    job: impl FnOnce(RunConfig, &AtomicBool) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let spec = ChainSpec::load(spec_path)?;
    let path = spec_path
        .canonicalize()
        .with_context(|| format!("{}", spec_path.display()))?;
    if !(0.1..=10_000.0).contains(&nodes.heartbeat_ms) {
        anyhow::bail!("--heartbeat-ms must be between 0.1 and 10000");
    }
    if !(1..=1000).contains(&nodes.misses) {
        anyhow::bail!("--misses must be between 1 and 1000");
    }
    RingLoss::check(nodes.ring_loss).context("--ring-loss")?;
    let stats_every = nodes
        .stats_every
        .map(crate::node::stats_period)
        .transpose()?;
    // What the orchestrator and the nodes would find out, and the lab only after a timeout.
    Shape::of(&spec, mode)?;
    if mode == Mode::Ftc {
        let links = ServerConfig {
            max_trailer: RING_MAX_FRAME - NshRepr::HEADER_LEN,
            ..ServerConfig::default()
        };
        links.check_logs_fit_beside_packets(&spec)?;
    }
    apply::check_host()?;
    let layout = Layout::of(mode);
    // From here on Ctrl-C stops the run (before the chain is deployed too) and takes down a lab
    // it brought up.
    let stop = crate::signal::stop_flag();
    // The lab this run brought up, to take down again.
    let (topology, take_down) = match apply::load(name)? {
        Some(t) => {
            let wanted = Topology::new(&spec, layout, name.clone(), t.subnet)?;
            if !t.same_shape(&wanted) {
                anyhow::bail!(
                    "lab {name} was made for another chain or mode ({} servers in the {:?} \
                     layout, {} queues per link, NAT {:?}, load balancer {:?}): `ftc lab up \
                     --force --name {name} --mode {} SPEC` remakes it for this one",
                    t.servers,
                    t.layout,
                    t.queues,
                    t.nat_ips,
                    t.vips,
                    mode.name(),
                );
            }
            (t, TakeDown(None))
        }
        None => {
            let up = apply::up(&spec, layout, name, false)?;
            for warning in &up.warnings {
                eprintln!("ftc lab: warning: {warning}");
            }
            (up.topology, TakeDown(Some(name)))
        }
    };
    let config = RunConfig {
        exe: std::env::current_exe().context("locating the ftc executable")?,
        spec: path,
        topology,
        heartbeat_ms: nodes.heartbeat_ms,
        misses: nodes.misses,
        ring_loss: nodes.ring_loss,
        stats_every,
        edges: Some(edges),
        peers: None,
        reports_to_stderr: false,
        recoveries: None,
        mode,
        ftmb,
        orchestrator_down: Duration::ZERO,
    };
    let ran = job(config, stop);
    let taken_down = take_down.now();
    if let Ok(true) = taken_down {
        say(format_args!("lab {name}: taken down"));
    }
    let code = ran.with_context(|| format!("lab {name}"))?;
    taken_down?;
    Ok(code)
}

/// The lab a run brought up, if it did: taken down when dropped, so that an early return or a
/// panic of the run leaves no lab behind.
struct TakeDown<'a>(Option<&'a LabName>);

impl TakeDown<'_> {
    /// Take the lab down now; whether there was one to.
    fn now(mut self) -> Result<bool, LabError> {
        self.0
            .take()
            .map(apply::down)
            .transpose()
            .map(|d| d.is_some())
    }
}

impl Drop for TakeDown<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.0.take() {
            match apply::down(name) {
                Ok(_) => eprintln!("ftc lab: lab {name} taken down"),
                Err(e) => eprintln!("ftc lab: taking lab {name} down: {e}"),
            }
        }
    }
}
