//! `ftc node`: one chain server as its own process (the logic is in
//! `ftc_orchestrator::process::node`). A node the orchestrator launched finds the token of its
//! launch in `FTC_LAUNCH_TOKEN`, which its `Join` carries.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ftc_chain::ring::ServerId;
use ftc_chain::spec::ChainSpec;
use ftc_node::{Mode, ServerConfig};
use ftc_orchestrator::process::launcher::{parse_token, LAUNCH_TOKEN_ENV};
use ftc_orchestrator::process::loss::RingLoss;
use ftc_orchestrator::process::node::{run_node, NodeConfig};
use ftc_orchestrator::process::read_secret;
use ftc_orchestrator::process::shape::Shape;

use crate::customer::CustomerArgs;
use crate::mode::{ModeArg, SnapshotArgs};

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The chain spec (TOML), the same the orchestrator runs.
    spec: PathBuf,
    /// The orchestrator's control address.
    #[arg(long, value_name = "ADDR")]
    orchestrator: SocketAddr,
    /// This server's position on the ring (0 is the forwarder's, the last the buffer's).
    #[arg(long)]
    position: u16,
    /// The file holding the deployment's shared secret.
    #[arg(long, value_name = "FILE")]
    secret_file: PathBuf,
    /// The UDP address of the data path, as peers reach it (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    data: SocketAddr,
    #[command(flatten)]
    customer: CustomerArgs,
    /// Frames to the next server leave on this interface through AF_XDP (the ring link to the
    /// successor), instead of UDP datagrams; needs --ring-prev too (FTC and NF).
    #[arg(
        long,
        value_name = "IFACE",
        requires = "ring_prev",
        conflicts_with = "link"
    )]
    ring_next: Option<String>,
    /// Frames from the previous server arrive on this interface through AF_XDP (the ring link
    /// from the predecessor); needs --ring-next too (FTC and NF).
    #[arg(long, value_name = "IFACE", requires = "ring_next")]
    ring_prev: Option<String>,
    /// Frames to and from the server at POSITION travel on interface IFACE through AF_XDP
    /// (repeatable: one per neighbour), instead of UDP datagrams; how FTMB's servers link up.
    #[arg(long, value_name = "POSITION=IFACE", value_parser = parse_link)]
    link: Vec<(u16, String)>,
    /// The queues of each ring link (--ring-next, --ring-prev, --link) to bind, 1 to 64, from
    /// --xdp-queue on, a socket each. With at least as many queues as the middlebox has
    /// threads, each lane (thread) sends and receives on queues of its own (not with --observe,
    /// which records every frame on the node's thread); otherwise the node's thread reads them
    /// all and hands the frames to the lanes. On a veth a frame sent
    /// on queue q arrives on queue q of the peer, so give every node of the chain the same
    /// number (the veths need as many: `ip link add … numtxqueues N numrxqueues N`).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    link_queues: u32,
    /// Heartbeat period in milliseconds, 0.1 to 10000 (the orchestrator's).
    #[arg(long, default_value_t = 5.0)]
    heartbeat_ms: f64,
    /// A node whose data path (its thread, or a lane of its middlebox) makes no progress for
    /// this many milliseconds hangs (a deadlock, a middlebox caught in a loop): it stops
    /// heartbeating, so that the orchestrator replaces it as failed, and exits with status 3.
    /// At least 10 heartbeat periods and at most 3600000; default 5000 or 10 periods, whichever
    /// is longer.
    #[arg(long)]
    stall_ms: Option<f64>,
    /// `nf` runs the middlebox without fault tolerance (no piggyback logs, replicas or buffer;
    /// the baseline that throughput is compared with); `ftmb` and `ftmb-snapshot` run one
    /// server of the FTMB baseline (position 2i: the logger of middlebox i, 2i+1: its master).
    /// Only FTC's state can be recovered.
    #[arg(long, value_enum, default_value_t = ModeArg::Ftc)]
    mode: ModeArg,
    #[command(flatten)]
    snapshots: SnapshotArgs,
    /// Failure injection: drop each frame that arrives from another server with probability P
    /// (0 to below 1), as a lossy link would; the protocol repairs the loss (holds and
    /// retransmission requests), customer packets in dropped frames are lost as on a real link.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    ring_loss: f64,
    /// Record this node's store sequences, commits and releases into a file in DIR, for an
    /// output-commit check across processes (what `ftc chaos --procs` passes its nodes), for
    /// bounded runs: recording stops, with an error logged, once the file holds 4 GiB. FTC and
    /// NF only: refused with --mode ftmb or ftmb-snapshot.
    #[arg(long, value_name = "DIR")]
    observe: Option<PathBuf>,
    /// Log a line every SECS seconds (0.1 to 3600) of what the server did since the last one:
    /// frames, transactions, customer packets admitted (server 0) and released (the last
    /// server, with their mean hold), logs applied, packets lost, bad frames, retransmission
    /// requests; and what it holds now. Shown whatever FTC_LOG says.
    #[arg(long, value_name = "SECS")]
    stats_every: Option<f64>,
    /// A node that serves and loses its orchestrator (its process died, the connection broke)
    /// serves on and joins the orchestrator's address again, saying where it stands, so that
    /// the orchestrator, or one started in its place with the same spec, secret and --listen,
    /// takes it back; if none does within SECS seconds (0 to 86400), it exits with status 4.
    /// 0: it exits as soon as it loses the orchestrator. A node that does not serve yet (not
    /// assigned, or a replacement still fetching its state) always exits then, with status 4, as
    /// does one that cannot reach the orchestrator when it starts.
    /// A node the orchestrator refuses (declared failed and replaced, not taken back, of
    /// another chain) exits with status 5; one that fails otherwise, with status 2.
    #[arg(long, value_name = "SECS", default_value_t = 600.0)]
    headless_for: f64,
}

/// The period of `--stats-every SECS`.
pub fn stats_period(secs: f64) -> anyhow::Result<Duration> {
    if !(0.1..=3600.0).contains(&secs) {
        anyhow::bail!("--stats-every must be between 0.1 and 3600 seconds, not {secs}");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The time of `--headless-for SECS`.
pub fn headless_time(secs: f64) -> anyhow::Result<Duration> {
    if !(0.0..=86_400.0).contains(&secs) {
        anyhow::bail!("--headless-for must be between 0 and 86400 seconds, not {secs}");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `POSITION=IFACE` of `--link`.
fn parse_link(text: &str) -> Result<(u16, String), String> {
    let (position, iface) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected POSITION=IFACE"))?;
    let position = position
        .parse()
        .map_err(|_| format!("{text:?}: {position:?} is not a position"))?;
    if iface.is_empty() {
        return Err(format!("{text:?}: no interface"));
    }
    Ok((position, iface.to_string()))
}

pub fn run(args: &NodeArgs) -> anyhow::Result<ExitCode> {
    crate::log::init("node");
    let spec = ChainSpec::load(&args.spec)?;
    let key = read_secret(&args.secret_file)?;
    if !(0.1..=10_000.0).contains(&args.heartbeat_ms) {
        anyhow::bail!("--heartbeat-ms must be between 0.1 and 10000");
    }
    let stall_ms = args
        .stall_ms
        .unwrap_or((10.0 * args.heartbeat_ms).max(5000.0));
    if !(10.0 * args.heartbeat_ms..=3_600_000.0).contains(&stall_ms) {
        anyhow::bail!(
            "--stall-ms must be between 10 heartbeat periods ({} ms) and 3600000",
            10.0 * args.heartbeat_ms
        );
    }
    RingLoss::check(args.ring_loss).context("--ring-loss")?;
    let stats_every = args.stats_every.map(stats_period).transpose()?;
    let headless_for = headless_time(args.headless_for)?;
    let queues = args.customer.edge_queues.max(args.link_queues);
    let first = args.customer.xdp_queue;
    if first.checked_add(queues - 1).is_none() {
        anyhow::bail!("--xdp-queue {first} + {queues} queues passes the last queue number");
    }
    let mode = Mode::from(args.mode);
    let ftmb = args.snapshots.config(mode)?;
    let links = match (&args.ring_next, &args.ring_prev) {
        (Some(next), Some(prev)) => {
            if mode.is_ftmb() {
                anyhow::bail!(
                    "--ring-next and --ring-prev are for FTC and NF: FTMB's servers take --link"
                );
            }
            let (ring, me) = (spec.ring(), ServerId(args.position));
            if usize::from(args.position) >= ring.servers() {
                anyhow::bail!(
                    "node {}: position {}: the chain has servers 0 to {}",
                    args.position,
                    args.position,
                    ring.servers() - 1
                );
            }
            vec![
                (ring.next_server(me), next.clone()),
                (ring.prev_server(me), prev.clone()),
            ]
        }
        _ => {
            let positions = Shape::of(&spec, mode)?.positions.servers();
            if let Some((p, iface)) = args
                .link
                .iter()
                .find(|(p, _)| usize::from(*p) >= positions || *p == args.position)
            {
                anyhow::bail!(
                    "--link {p}={iface}: the peers of node {} are positions 0 to {} but its own",
                    args.position,
                    positions - 1
                );
            }
            args.link
                .iter()
                .map(|(p, iface)| (ServerId(*p), iface.clone()))
                .collect()
        }
    };
    let launch = match std::env::var(LAUNCH_TOKEN_ENV) {
        Ok(text) => Some(parse_token(&text).with_context(|| {
            format!("{LAUNCH_TOKEN_ENV} is not a launch token (32 hexadecimal digits)")
        })?),
        Err(_) => None,
    };
    let config = NodeConfig {
        spec,
        position: args.position,
        launch,
        orchestrator: args.orchestrator,
        key,
        data: args.data,
        ingress: args.customer.ingress,
        egress: args.customer.egress,
        edge_in: args.customer.edge_in.clone(),
        edge_out: args.customer.edge_out.clone(),
        edge_kind: args.customer.edge_kind,
        edge_queues: args.customer.edge_queues,
        xdp: args.customer.xdp(),
        links,
        link_queues: args.link_queues,
        heartbeat: Duration::from_secs_f64(args.heartbeat_ms / 1e3),
        stall: Duration::from_secs_f64(stall_ms / 1e3),
        on_stall: |why| {
            eprintln!("ftc: {why}; exiting");
            std::process::exit(3);
        },
        // Test hook for the pulse's teeth (`cli/tests/procs.rs`): the node's thread hangs
        // this many milliseconds after it starts. Never set it otherwise.
        hang_after: std::env::var("FTC_TEST_HANG_AFTER_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis),
        ring_loss: args.ring_loss,
        server: ServerConfig {
            mode,
            // Test hook for the output-commit check's teeth (`cli/tests/procs.rs`): the
            // buffer releases packets without waiting for commit vectors. Never set it
            // otherwise.
            release_without_commit: std::env::var_os("FTC_TEST_RELEASE_WITHOUT_COMMIT").is_some(),
            ..ServerConfig::default()
        },
        observe: args.observe.clone(),
        ftmb,
        stats_every,
        headless_for,
    };
    match run_node(&config) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            let why = anyhow::anyhow!("node {}: {e}", args.position);
            match e.exit_status() {
                Some(status) => {
                    eprintln!("ftc: {why}");
                    Ok(ExitCode::from(status))
                }
                None => Err(why),
            }
        }
    }
}
