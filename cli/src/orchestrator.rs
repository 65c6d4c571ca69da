//! `ftc orchestrator`: the orchestrator as its own process, nodes connecting over TCP (the logic
//! is in `ftc_orchestrator::process::orchestrator`). Says on stderr when every node has joined
//! (`ftc orchestrator: deployed in epoch 1 of run R: …`, R its run id in hexadecimal) and where
//! the nodes are after each recovery (`ftc orchestrator: rerouted in epoch E of run R: …`),
//! prints every recovery, and on SIGINT or SIGTERM tells its nodes to stop before it exits.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use ftc_chain::spec::ChainSpec;
use ftc_node::Mode;
use ftc_orchestrator::coordinator::CoordinatorConfig;
use ftc_orchestrator::process::launcher::{How, Launcher, NodeArgs};
use ftc_orchestrator::process::orchestrator::Orchestrator;
use ftc_orchestrator::process::shape::Shape;
use ftc_orchestrator::process::tally::STATS_TARGET;
use ftc_orchestrator::process::{read_secret, Chain};

use crate::customer::CustomerArgs;
use crate::mode::ModeArg;

#[derive(Debug, clap::Args)]
pub struct OrchestratorArgs {
    /// The chain spec (TOML).
    spec: PathBuf,
    /// The TCP address nodes connect to.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// The file holding the deployment's shared secret.
    #[arg(long, value_name = "FILE")]
    secret_file: PathBuf,
    /// Heartbeat period in milliseconds, 0.1 to 10000.
    #[arg(long, default_value_t = 5.0)]
    heartbeat_ms: f64,
    /// Missed heartbeats that declare a node failed, 1 to 1000.
    #[arg(long, default_value_t = 3)]
    misses: u32,
    /// Seconds a launched replacement may take to join, 0.1 to 3600; one that has not by then is
    /// launched again (it died or never started). Raise it for launchers that take long (ssh,
    /// containers).
    #[arg(long, default_value_t = 5.0)]
    start_timeout: f64,
    /// How replacements start: `local` (`ftc node` on this host), `none` (only logged), or a
    /// command run with `sh -c`, where {position}, {orchestrator}, {spec}, {secret_file},
    /// {heartbeat_ms} and {customer} (this command's `--ingress`/`--egress`, `--edge-in`/
    /// `--edge-out`, `--edge-kind`, `--edge-queues` and, on AF_XDP edges, `--xdp-queue`,
    /// `--xdp-zero-copy` and `--xdp-frames`, for the chain's end servers) are filled in. Each
    /// node it starts leads a process group, killed whole (the node a command started with it)
    /// when the node is cut off and when the orchestrator ends. Each launch has a random token
    /// in the environment (FTC_LAUNCH_TOKEN), and a position takes only the Join of its last
    /// launch: a command that starts the node elsewhere must pass it on (`ssh host
    /// FTC_LAUNCH_TOKEN=$FTC_LAUNCH_TOKEN ftc node …`).
    #[arg(long, value_name = "LAUNCHER", default_value = "local")]
    launch: String,
    /// Where customer frames enter and leave, and how AF_XDP edges open, passed on to the
    /// replacements of the end servers.
    #[command(flatten)]
    customer: CustomerArgs,
    /// What the nodes run (as their `ftc node --mode`): how many positions to deploy (FTMB: two
    /// per middlebox) and whether failed nodes are recovered (FTC only: the baselines keep no
    /// replicas, so a failure stops the orchestrator).
    #[arg(long, value_enum, default_value_t = ModeArg::Ftc)]
    mode: ModeArg,
    /// Log a line of the chain's state every SECS seconds, 0.1 to 3600 (its epoch, positions
    /// up, recoveries, refused connections, nodes ended unasked), shown whatever FTC_LOG says;
    /// the replacements `--launch local` starts log their own (`ftc node --stats-every`; a
    /// command launcher passes its own).
    #[arg(long, value_name = "SECS")]
    stats_every: Option<f64>,
    /// How long, 0 to 86400 seconds, the replacements `--launch local` starts serve on without
    /// an orchestrator (`ftc node --headless-for`; default the node's). Restarted with the same
    /// spec, secret and --listen, an orchestrator adopts the chain whose nodes rejoin it: it
    /// runs on as it was when every node rejoined within misses + 1 rejoin periods of the first
    /// (a node tries every heartbeat period, 10 ms to 1 s), in the epoch it was in; otherwise
    /// the positions that did not are recovered, and every node rerouted, in the next epoch.
    #[arg(long, value_name = "SECS")]
    headless_for: Option<f64>,
    /// Print every recovery as one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &OrchestratorArgs) -> anyhow::Result<ExitCode> {
    crate::log::init("orchestrator");
    let spec = ChainSpec::load(&args.spec)?;
    let key = read_secret(&args.secret_file)?;
    if !(0.1..=10_000.0).contains(&args.heartbeat_ms) {
        anyhow::bail!("--heartbeat-ms must be between 0.1 and 10000");
    }
    if !(1..=1000).contains(&args.misses) {
        anyhow::bail!("--misses must be between 1 and 1000");
    }
    if !(0.1..=3600.0).contains(&args.start_timeout) {
        anyhow::bail!("--start-timeout must be between 0.1 and 3600 seconds");
    }
    let mode = Mode::from(args.mode);
    if mode == Mode::Ftc {
        // Its nodes would each refuse it after joining, and the chain never deploy.
        ftc_node::ServerConfig::default().check_logs_fit_beside_packets(&spec)?;
    }
    let how = How::parse(&args.launch, std::env::current_exe)?;
    if matches!(&how, How::Command(t) if t.contains("{orchestrator}"))
        && args.listen.ip().is_unspecified()
    {
        tracing::warn!(
            "--listen {}: the template's {{orchestrator}} becomes that address, which reaches \
             this host only from this host; listen on an address of this host its nodes reach",
            args.listen
        );
    }
    let stats_every = args
        .stats_every
        .map(crate::node::stats_period)
        .transpose()?;
    let headless_for = args
        .headless_for
        .map(crate::node::headless_time)
        .transpose()?;
    let listener = TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let shape = Shape::of(&spec, mode)?;
    let node_args = NodeArgs {
        orchestrator: listener.local_addr()?,
        spec: args.spec.clone(),
        secret_file: args.secret_file.clone(),
        heartbeat_ms: args.heartbeat_ms,
        ingress: args.customer.ingress,
        egress: args.customer.egress,
        edge_in: args.customer.edge_in.clone(),
        edge_out: args.customer.edge_out.clone(),
        edge_kind: args.customer.edge_kind,
        edge_queues: args.customer.edge_queues,
        xdp: args.customer.xdp(),
        last: shape.exit.0,
        observe: None,
        stats_every,
        headless_for,
    };
    let config = CoordinatorConfig {
        heartbeat_period_ns: (args.heartbeat_ms * 1e6) as u64,
        misses: args.misses,
        recover: shape.recover,
        start_timeout_ns: (args.start_timeout * 1e9) as u64,
        ..CoordinatorConfig::default()
    };
    let orchestrator = Orchestrator::new(
        listener,
        (shape.positions, Chain::new(&spec, mode)),
        key,
        config,
        Launcher::new(how, node_args),
    );
    eprintln!(
        "ftc orchestrator: {} ({} servers) on {}, waiting for its nodes",
        spec.chain.name,
        shape.servers(),
        orchestrator.local_addr()?
    );
    let print = |r: &ftc_orchestrator::coordinator::RecoveryReport| {
        if args.json {
            outln!("{}", serde_json::to_string(r).expect("a report serializes"));
        } else {
            outln!("{r}");
        }
    };
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| announce_peers(&orchestrator, &done, stats_every));
        let result = orchestrator.run(crate::signal::stop_flag(), print);
        done.store(true, Ordering::Release);
        result
    })
    .context("the orchestrator stopped")?;
    Ok(ExitCode::SUCCESS)
}

/// Say on stderr when every node has joined (`deployed in epoch 1 of run R: …`; `adopted in
/// epoch E …` when they rejoined in epoch E, serving already) and after every recovery once the
/// chain is rerouted (`rerouted in epoch E of run R: …`): the epoch, the run
/// id (which a state transfer to the nodes must name: `ftc lab demo` fetches their state to
/// check it) and where each node is; and each node it started that exited without being
/// stopped (`node P (pid N) exited (STATUS)`).
///
/// With `stats_every`, also log the chain's status
/// ([`Status::line`](ftc_orchestrator::process::orchestrator::Status::line)) that often.
fn announce_peers(orchestrator: &Orchestrator, done: &AtomicBool, stats_every: Option<Duration>) {
    let (mut announced, mut told) = (0, 0);
    // The period, and when the next line is due.
    let mut stats = stats_every.map(|every| (every, Instant::now() + every));
    while !done.load(Ordering::Acquire) {
        let status = orchestrator.status();
        if let Some((every, due)) = stats.as_mut().filter(|(_, due)| Instant::now() >= *due) {
            tracing::info!(target: STATS_TARGET, "chain: {}", status.line());
            *due = Instant::now() + *every;
        }
        let peers: Option<Vec<_>> = status.peers.iter().copied().collect();
        if let Some(peers) = peers.filter(|_| status.settled && status.epoch > announced) {
            let nodes: Vec<String> = peers
                .iter()
                .map(|p| {
                    format!(
                        "node {} data {} transfer {}",
                        p.position, p.data, p.transfer
                    )
                })
                .collect();
            let what = match &status.adopted {
                Some(a) if a.epoch == status.epoch => "adopted",
                _ if status.epoch == 1 => "deployed",
                _ => "rerouted",
            };
            eprintln!(
                "ftc orchestrator: {what} in epoch {} of run {:016x}: {}",
                status.epoch,
                orchestrator.run_id(),
                nodes.join(", ")
            );
            announced = status.epoch;
        }
        for ended in status.ended.since(told) {
            eprintln!("ftc orchestrator: {ended}");
        }
        told = status.ended.total();
        std::thread::sleep(Duration::from_millis(10));
    }
}
