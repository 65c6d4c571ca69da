//! `ftc sim`: the deterministic whole-chain simulation over a range of seeds, with a report and,
//! for every failing seed, the command that replays it.

use std::path::PathBuf;
use std::process::ExitCode;

use ftc_chain::spec::ChainSpec;
use ftc_orchestrator::process::launcher::quote;
use ftc_sim::{Faults, SimConfig};

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// The chain spec (TOML).
    spec: PathBuf,
    /// How many seeds to run: at least 1, and --first-seed + --seeds below 2^64.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Faults while traffic is offered: any of loss, reorder, dup, delay, heartbeat (lost
    /// heartbeats, which get live servers replaced; each may take `=RATE`, 0 to 0.5, and
    /// without it loss and dup take 0.02, reorder and delay 0.05, heartbeat 0.3),
    /// crash (`=N`, 1 to 100, failure events of 1 to f servers each, default 2; an event that
    /// would put more than f servers down waits for the recovery, so all N happen), cut (`=N`,
    /// 1 to 100, default 2: a random server's frames to its successor are all lost for a tenth
    /// to a half of the traffic's span while its heartbeats go on), outage (`=N`, 1 to 100,
    /// default 2: the orchestrator is away for a tenth to a half of the traffic's span, failures
    /// meanwhile undetected and recoveries paused while the servers serve on), or none.
    #[arg(long, default_value = "loss,reorder,dup,delay")]
    faults: String,
    /// Requests per seed (each released request comes back as a reply), 1 to 1000000. A seed
    /// that recovered from failures offers as many again, without faults, to the recovered
    /// chain once it is quiet.
    #[arg(long, default_value_t = SimConfig::default().packets)]
    packets: u32,
    /// Flows the requests are spread over, 1 to 16777216.
    #[arg(long, default_value_t = SimConfig::default().flows)]
    flows: u32,
    /// Frames a server holds (waiting for logs) before it counts as congested and the ingress
    /// admits no customer packet, at least 1. Small values stress the back-pressure paths.
    #[arg(long, default_value_t = SimConfig::default().max_held_frames)]
    hold_bound: usize,
    /// Packets the buffer holds at most, at least 1; beyond, it refuses them and they wait at
    /// its server. Small values stress the back-pressure paths.
    #[arg(long, default_value_t = SimConfig::default().max_buffered_packets)]
    buffer_packets: usize,
    /// Bytes of trailer a customer frame carries beyond its own logs, 32 to 8192; what does not
    /// fit goes in propagating frames. Small values stress the overflow paths.
    #[arg(long, default_value_t = SimConfig::default().trailer_budget)]
    trailer_budget: usize,
    /// Logs a server retains at most while it transacts, at least 1; past it, packets that
    /// would run a transaction are lost by design (counted apart). Small values stress the
    /// retain limit.
    #[arg(long, default_value_t = SimConfig::default().max_retained_logs)]
    retain_bound: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Summary {
    spec: String,
    seeds: u64,
    first_seed: u64,
    faults: String,
    steps: u64,
    packets_sent: u64,
    packets_released: u64,
    lost_in_network: u64,
    /// Frames lost to link cuts (`cut=N`).
    frames_cut: u64,
    dropped_by_middlebox: u64,
    retransmit_requests: u64,
    logs_resent: u64,
    /// Crash events asked for (`crash=N` per seed) and those that happened: all of them,
    /// unless a seed stopped early at a violation.
    crashes_requested: u64,
    crashes_run: u64,
    failures: u64,
    recoveries: u64,
    lost_to_failures: u64,
    /// Packets lost at a server at its retain limit (`--retain-bound`).
    lost_to_retain_limit: u64,
    /// Packets released by the recovered chains, in the round of traffic offered after them.
    released_after_recovery: u64,
    violations: Vec<Failure>,
}

#[derive(Debug, serde::Serialize)]
struct Failure {
    seed: u64,
    violations: Vec<String>,
    replay: String,
}

/// The most requests per seed: the checker keeps a record of each (about 500 bytes).
const MAX_PACKETS: u32 = 1_000_000;

pub fn run(args: &SimArgs) -> anyhow::Result<ExitCode> {
    let spec = ChainSpec::load(&args.spec)?;
    // The simulated servers' frames are the in-memory transport's.
    ftc_node::ServerConfig::default().check_logs_fit(&spec)?;
    let faults = Faults::parse(&args.faults).map_err(anyhow::Error::msg)?;
    if args.hold_bound == 0 || args.buffer_packets == 0 || args.retain_bound == 0 {
        anyhow::bail!("--hold-bound, --buffer-packets and --retain-bound must be positive");
    }
    if !(32..=8192).contains(&args.trailer_budget) {
        anyhow::bail!("--trailer-budget must be between 32 and 8192 bytes");
    }
    crate::run::check_flows(args.flows)?;
    if !(1..=MAX_PACKETS).contains(&args.packets) {
        anyhow::bail!("--packets must be between 1 and {MAX_PACKETS}");
    }
    if args.seeds == 0 || args.first_seed.checked_add(args.seeds).is_none() {
        anyhow::bail!("--seeds must be positive, and --first-seed + --seeds below 2^64");
    }
    let mut s = Summary {
        spec: args.spec.display().to_string(),
        seeds: args.seeds,
        first_seed: args.first_seed,
        faults: args.faults.clone(),
        steps: 0,
        packets_sent: 0,
        packets_released: 0,
        lost_in_network: 0,
        frames_cut: 0,
        dropped_by_middlebox: 0,
        retransmit_requests: 0,
        logs_resent: 0,
        crashes_requested: u64::from(faults.crashes).saturating_mul(args.seeds),
        crashes_run: 0,
        failures: 0,
        recoveries: 0,
        lost_to_failures: 0,
        lost_to_retain_limit: 0,
        released_after_recovery: 0,
        violations: Vec::new(),
    };
    for seed in args.first_seed..args.first_seed + args.seeds {
        let config = SimConfig {
            seed,
            packets: args.packets,
            flows: args.flows,
            faults,
            trailer_budget: args.trailer_budget,
            max_held_frames: args.hold_bound,
            max_buffered_packets: args.buffer_packets,
            max_retained_logs: args.retain_bound,
            ..SimConfig::default()
        };
        let r = ftc_sim::run(&spec, &config);
        s.steps += r.steps;
        s.packets_sent += r.packets_sent;
        s.packets_released += r.packets_released;
        s.lost_in_network += r.lost_in_network;
        s.frames_cut += r.frames_cut;
        s.dropped_by_middlebox += r.dropped_by_middlebox;
        s.retransmit_requests += r.retransmit_requests;
        s.logs_resent += r.logs_resent;
        s.crashes_run += r.crashes;
        s.failures += r.failures;
        s.recoveries += r.recoveries;
        s.lost_to_failures += r.lost_to_failures;
        s.lost_to_retain_limit += r.lost_to_retain_limit;
        s.released_after_recovery += r.released_after_recovery;
        if !r.violations.is_empty() {
            let replay = format!(
                "ftc sim {} --seeds 1 --first-seed {seed} --faults {} --packets {} --flows {} --hold-bound {} --buffer-packets {} --trailer-budget {} --retain-bound {}",
                quote(&args.spec.display().to_string()),
                quote(&args.faults),
                args.packets,
                args.flows,
                args.hold_bound,
                args.buffer_packets,
                args.trailer_budget,
                args.retain_bound
            );
            if !args.json {
                eprintln!("seed {seed} FAILED:");
                for v in &r.violations {
                    eprintln!("  {v}");
                }
                eprintln!("  replay: {replay}");
            }
            s.violations.push(Failure {
                seed,
                violations: r.violations,
                replay,
            });
        }
    }
    if s.crashes_run < s.crashes_requested {
        eprintln!(
            "ftc: warning: {} of the {} crash events asked for happened (seeds that broke an invariant stopped early)",
            s.crashes_run, s.crashes_requested
        );
    }
    if args.json {
        outln!("{}", serde_json::to_string(&s)?);
    } else {
        outln!(
            "{} seed{} of {} (faults: {}): {} steps, {} packets sent, {} released, {} lost in the network, {} dropped by middleboxes, {} retransmission requests, {} logs resent",
            s.seeds,
            if s.seeds == 1 { "" } else { "s" },
            s.spec,
            s.faults,
            s.steps,
            s.packets_sent,
            s.packets_released,
            s.lost_in_network,
            s.dropped_by_middlebox,
            s.retransmit_requests,
            s.logs_resent
        );
        if s.packets_released > s.packets_sent {
            outln!(
                "(more released than sent: a frame the network duplicated goes through the chain as often as it arrives, as in any network; the end hosts drop the copies)"
            );
        }
        if s.crashes_requested > 0 || s.failures > 0 {
            outln!(
                "failures: {} of {} crash events, {} servers failed, {} recoveries, {} packets lost with them; then {} packets released by the recovered chains",
                s.crashes_run,
                s.crashes_requested,
                s.failures,
                s.recoveries,
                s.lost_to_failures,
                s.released_after_recovery
            );
        }
        outln!(
            "invariants (output commit, per-flow order, recovery, losses only while fenced, eventual release, replicas equal heads): {}",
            if s.violations.is_empty() { "all held".to_string() } else { format!("{} seeds FAILED", s.violations.len()) }
        );
    }
    Ok(if s.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
