//! `ftc bench`: the thesis's experiments (§4.6) with FTC, NF, FTMB and FTMB+snapshot side by
//! side, over the in-memory transport or in a namespace lab over AF_XDP (every experiment, the
//! same modes; the FTMB baselines in a lab of their own layout): Markdown tables (or one JSON
//! object) on stdout, and with `--out DIR` the JSON, the tables and an SVG plot per experiment
//! in files.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ftc_bench::lab::LabSettings;
use ftc_bench::{markdown, Experiment, Settings};
use ftc_node::ftmb::SnapshotKind;
use ftc_orchestrator::lab::topology::LabName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    /// Servers are threads of this process, frames pass over in-memory channels.
    Mem,
    /// The experiments in a namespace lab: one `ftc node` process per server, AF_XDP on every
    /// link, a TCP download through the chain as traffic (needs root; see `ftc lab demo`).
    Xdp,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The experiment: state-size, sharing, nat-threads, latency-load, chain-length,
    /// replication, recovery, or all.
    experiment: String,
    /// How the chain's servers exchange frames.
    #[arg(long, value_enum, default_value = "mem")]
    transport: Transport,
    /// Fewer points, short runs, one round (default 0.3 s, 1 round; `all` in about 20 s in memory).
    #[arg(long)]
    quick: bool,
    /// Print one JSON object instead of Markdown tables.
    #[arg(long)]
    pub json: bool,
    /// Also write results.json, EXPERIMENT.md and EXPERIMENT.svg into this folder.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Runs of each mode per point, alternated, 1 to 100; medians are reported (default 3;
    /// quick 1).
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Seconds of traffic per run, 0.05 to 3600 (default 2; quick 0.3).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// The heartbeat period of the recovery experiment, in milliseconds, 0.1 to 10000 (3 missed
    /// declare a server failed). On a machine whose cores are all busy, 5 ms heartbeats can be missed by
    /// live servers: a longer period trades detection time for runs that recover.
    #[arg(long, value_name = "MS", default_value_t = 5.0)]
    heartbeat_ms: f64,
    /// With --transport xdp: megabytes downloaded per run and connection, 1 to 100000 (default
    /// 200; quick 20).
    #[arg(long, value_name = "MB")]
    size_mb: Option<u64>,
    /// With --transport xdp: downloads at once per run, each over a TCP connection of its own
    /// (1 to 64; default 1). One TCP connection's pace is bound by its window over the
    /// chain's round trip; several load the chain as many flows do.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: Option<u32>,
    /// What FTMB+snapshot's snapshots are: `real` (copy each master's store, its cost measured)
    /// or `stall-<N>ms` (stand still N ms, less than the 50 ms between snapshots, as the thesis
    /// simulates them: `stall-6ms`).
    #[arg(long, default_value = "real")]
    snapshot: SnapshotKind,
    /// The most worker threads per server in `sharing` (every sharing level up to it, by
    /// doubling) and `nat-threads` (1, 2, 4, … up to it); default 2 and 4. For machines with
    /// the cores to show more.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: Option<u16>,
    /// With --transport xdp: the lab's name (the prefix of its namespaces: 1 to 8 lowercase
    /// letters and digits, starting with a letter), brought up for each chain and taken down at
    /// the end (default ftcbench).
    #[arg(long)]
    lab: Option<LabName>,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let experiments = Experiment::select(&args.experiment)?;
    if args.transport == Transport::Mem {
        let lab_only = [
            ("--size-mb", args.size_mb.is_some()),
            ("--connections", args.connections.is_some()),
            ("--lab", args.lab.is_some()),
        ];
        if let Some((flag, _)) = lab_only.iter().find(|(_, given)| *given) {
            anyhow::bail!("{flag} is for the lab's runs: give it with --transport xdp");
        }
    }
    if args.size_mb.is_some_and(|s| !(1..=100_000).contains(&s)) {
        anyhow::bail!("--size-mb must be between 1 and 100000");
    }
    if args.rounds.is_some_and(|r| !(1..=100).contains(&r)) {
        anyhow::bail!("--rounds must be between 1 and 100");
    }
    if args.duration.is_some_and(|d| !(0.05..=3600.0).contains(&d)) {
        anyhow::bail!("--duration must be between 0.05 and 3600 seconds");
    }
    if !(0.1..=10_000.0).contains(&args.heartbeat_ms) {
        anyhow::bail!("--heartbeat-ms must be between 0.1 and 10000");
    }
    if let Some(dir) = &args.out {
        // Found out now, not after the runs: the directory can be made and written.
        let probe = dir.join(".ftc-bench-probe");
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&probe, b""))
            .and_then(|()| std::fs::remove_file(&probe))
            .with_context(|| format!("--out {}: cannot write there", dir.display()))?;
    }
    let settings = Settings {
        heartbeat: Duration::from_secs_f64(args.heartbeat_ms / 1e3),
        snapshot: args.snapshot,
        threads: args.threads,
        ..Settings::new(
            args.quick,
            args.rounds,
            args.duration.map(Duration::from_secs_f64),
        )
    };
    crate::mode::check_stall(&settings.ftmb(), "the snapshots' period")?;
    let results = match args.transport {
        Transport::Mem => ftc_bench::run(&experiments, &settings)?,
        Transport::Xdp => {
            let lab = LabSettings {
                name: match &args.lab {
                    Some(name) => name.clone(),
                    None => "ftcbench".parse()?,
                },
                exe: std::env::current_exe().context("locating the ftc executable")?,
                size: args
                    .size_mb
                    .unwrap_or_else(|| LabSettings::default_mb(args.quick))
                    << 20,
                connections: args.connections.unwrap_or(1),
            };
            ftc_bench::lab::run(&experiments, &settings, &lab, crate::signal::stop_flag())?
        }
    };
    if args.json {
        outln!("{}", serde_json::to_string(&results)?);
    } else {
        for info in &results.experiments {
            outln!("{}", markdown::experiment(&results, info));
        }
    }
    if let Some(dir) = &args.out {
        ftc_bench::files::write(dir, &results)?;
    }
    let violations = results.violations();
    for v in &violations {
        eprintln!("ftc: VIOLATION: {v}");
    }
    Ok(if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
