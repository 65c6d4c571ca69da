//! `ftc node`: one chain server as its own process (the logic is in
//! `ftc_orchestrator::process::node`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ftc_chain::spec::ChainSpec;
use ftc_node::xdp::XdpConfig;
use ftc_node::{Mode, ServerConfig};
use ftc_orchestrator::process::node::{run_node, NodeConfig};
use ftc_orchestrator::process::read_secret;

use crate::customer::CustomerArgs;

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
    /// AF_XDP edges in zero-copy mode (the NIC driver must support it); copy mode otherwise.
    #[arg(long)]
    xdp_zero_copy: bool,
    /// The interface queue the AF_XDP edges and ring links bind.
    #[arg(long, value_name = "N", default_value_t = 0)]
    xdp_queue: u32,
    /// Frames to the next server leave on this interface through AF_XDP (the ring link to the
    /// successor), instead of UDP datagrams; needs --ring-prev too.
    #[arg(long, value_name = "IFACE", requires = "ring_prev")]
    ring_next: Option<String>,
    /// Frames from the previous server arrive on this interface through AF_XDP (the ring link
    /// from the predecessor); needs --ring-next too.
    #[arg(long, value_name = "IFACE", requires = "ring_next")]
    ring_prev: Option<String>,
    /// Heartbeat period in milliseconds (the orchestrator's).
    #[arg(long, default_value_t = 5.0)]
    heartbeat_ms: f64,
    /// `nf` runs the middlebox without fault tolerance (no piggyback logs, replicas or buffer;
    /// the baseline that throughput is compared with). Its state cannot be recovered.
    #[arg(long, value_enum, default_value_t = NodeMode::Ftc)]
    mode: NodeMode,
    /// Record this node's store sequences, commits and releases into a file in DIR, for an
    /// output-commit check across processes (what `ftc chaos --procs` passes its nodes).
    #[arg(long, value_name = "DIR")]
    observe: Option<PathBuf>,
}

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum NodeMode {
    Ftc,
    Nf,
}

pub fn run(args: &NodeArgs) -> anyhow::Result<ExitCode> {
    crate::log::init("node");
    let spec = ChainSpec::load(&args.spec)?;
    let key = read_secret(&args.secret_file)?;
    if !(0.1..=10_000.0).contains(&args.heartbeat_ms) {
        anyhow::bail!("--heartbeat-ms must be between 0.1 and 10000");
    }
    let config = NodeConfig {
        spec,
        position: args.position,
        orchestrator: args.orchestrator,
        key,
        data: args.data,
        ingress: args.customer.ingress,
        egress: args.customer.egress,
        edge_in: args.customer.edge_in.clone(),
        edge_out: args.customer.edge_out.clone(),
        edge_kind: args.customer.edge_kind,
        xdp: XdpConfig {
            queue: args.xdp_queue,
            zero_copy: args.xdp_zero_copy,
            ..XdpConfig::default()
        },
        ring: args.ring_next.clone().zip(args.ring_prev.clone()),
        heartbeat: Duration::from_secs_f64(args.heartbeat_ms / 1e3),
        server: ServerConfig {
            mode: match args.mode {
                NodeMode::Ftc => Mode::Ftc,
                NodeMode::Nf => Mode::Nf,
            },
            // Test hook for the output-commit check's teeth (`cli/tests/procs.rs`): the
            // buffer releases packets without waiting for commit vectors. Never set it
            // otherwise.
            release_without_commit: std::env::var_os("FTC_TEST_RELEASE_WITHOUT_COMMIT").is_some(),
            ..ServerConfig::default()
        },
        observe: args.observe.clone(),
    };
    run_node(&config).map_err(|e| anyhow::anyhow!("node {}: {e}", args.position))?;
    Ok(ExitCode::SUCCESS)
}
