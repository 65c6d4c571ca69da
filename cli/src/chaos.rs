//! `ftc chaos`: failure injection for users. Runs a chain with traffic, kills the named servers,
//! lets the orchestrator recover them, and checks that nothing released was lost. The servers
//! are threads of this process, or with `--procs` `ftc node` processes killed with SIGKILL.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ftc_chain::ring::ServerId;
use ftc_chain::spec::ChainSpec;
use ftc_node::runtime::RunConfig;
use ftc_orchestrator::embedded::{run_chaos, ChaosConfig, ChaosReport, Kill};
use ftc_orchestrator::process::chaos::{run_procs, ProcsConfig};
use ftc_orchestrator::process::succession::OrchestratorKill;

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// The chain spec (TOML).
    spec: PathBuf,
    /// A server to kill: its ring position (`ftc check` lists them), optionally `@SECONDS` into
    /// the traffic, 0 to --duration (default: half way). Repeat for more. The chain recovers at
    /// most f failed servers at once, and a kill counts until its recovery ends: more than f
    /// servers killed within 2 heartbeat periods of each other (a kill is not detected sooner)
    /// are refused; more than f of one group killed further apart, but before the first is
    /// recovered, make the orchestrator halt, and the report names the group and the kills.
    #[arg(
        long = "kill",
        value_name = "POSITION[@SECS]",
        required_unless_present = "orchestrator_kills"
    )]
    kills: Vec<String>,
    /// With --procs: crash the orchestrator SECS into the traffic (0 to --duration), as a kill
    /// of its process would (its control connections closed, nothing said), and start the next
    /// one on its address DOWN seconds later (0 to 60, default 0.2). The nodes serve on without
    /// it and rejoin the next one, which adopts the chain and recovers what failed meanwhile.
    /// Repeat for more.
    #[arg(long = "kill-orchestrator", value_name = "SECS[+DOWN]")]
    orchestrator_kills: Vec<String>,
    /// Seconds of traffic, 0.05 to 3600.
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Packets per second offered, 1 to 1000000000 (default: as many as the chain takes,
    /// closed loop; with --procs, 20000, and at most 50 million packets in all).
    #[arg(long)]
    rate: Option<u64>,
    /// Flows the traffic is spread over, 1 to 16777216.
    #[arg(long, default_value_t = 64)]
    flows: u32,
    /// Heartbeat period in milliseconds, 0.1 to 10000; 3 missed declare a server failed. The
    /// run goes on after the traffic until every kill is detected and recovered, for at most
    /// 10 s plus 4 periods.
    #[arg(long, default_value_t = 5.0)]
    heartbeat_ms: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Every server an `ftc node` process (the orchestrator on a thread of this one), customer
    /// frames over UDP, kills with SIGKILL.
    #[arg(long)]
    procs: bool,
    /// With --procs: every node logs a line of what its server did every SECS seconds, 0.1 to
    /// 3600 (`ftc node --stats-every`; shown at `FTC_LOG=info`): held frames, applied logs,
    /// retransmission requests, losses.
    #[arg(long, value_name = "SECS")]
    stats_every: Option<f64>,
}

/// Customer frames per second with --procs when --rate is not given.
const PROCS_RATE: u64 = 20_000;

/// Packets one `--procs` run may send at most (its sink keeps 9 bytes per packet).
const MAX_PROCS_PACKETS: u64 = 50_000_000;

/// Parse `POSITION[@SECS]`; a kill without a time happens at `default_at`.
fn parse_kill(text: &str, default_at: Duration) -> anyhow::Result<Kill> {
    let (pos, at) = match text.split_once('@') {
        Some((p, a)) => (p, Some(a)),
        None => (text, None),
    };
    let position: u16 = pos
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("--kill {text:?}: the position must be a server number"))?;
    let at = match at {
        None => default_at,
        Some(a) => {
            let secs: f64 = a
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("--kill {text:?}: the time must be in seconds"))?;
            if !(0.0..=3600.0).contains(&secs) {
                anyhow::bail!("--kill {text:?}: the time must be between 0 and 3600 seconds");
            }
            Duration::from_secs_f64(secs)
        }
    };
    Ok(Kill {
        position: ServerId(position),
        at,
    })
}

/// The downtime of an orchestrator crash that gives none.
const ORCHESTRATOR_DOWN: Duration = Duration::from_millis(200);

/// Parse `SECS[+DOWN]`, within the traffic's `duration`.
fn parse_orchestrator_kill(text: &str, duration: Duration) -> anyhow::Result<OrchestratorKill> {
    let when = ("time", duration.as_secs_f64(), " seconds");
    let down = (ORCHESTRATOR_DOWN, 60.0);
    let (at, down) = parse_when_down(&format!("--kill-orchestrator {text:?}"), text, when, down)?;
    Ok(OrchestratorKill {
        at: Duration::from_secs_f64(at),
        down,
    })
}

/// `WHEN[+DOWN]` (`--kill-orchestrator` of `ftc chaos --procs` and `ftc lab demo`, `--cut` of
/// `ftc lab demo`; `arg` names the argument in errors): WHEN is `when`'s (name, largest value,
/// unit), 0 at least; DOWN is in seconds, 0 to `down`'s largest, and its default without it.
pub fn parse_when_down(
    arg: &str,
    text: &str,
    (what, max, unit): (&str, f64, &str),
    (default, down_max): (Duration, f64),
) -> anyhow::Result<(f64, Duration)> {
    let number = |what: &str, value: &str, max: f64, unit: &str| -> anyhow::Result<f64> {
        value
            .trim()
            .parse()
            .ok()
            .filter(|v| (0.0..=max).contains(v))
            .with_context(|| format!("{arg}: the {what} must be between 0 and {max}{unit}"))
    };
    let (when, down) = match text.split_once('+') {
        Some((when, down)) => {
            let down = number("downtime", down, down_max, " seconds")?;
            (when, Duration::from_secs_f64(down))
        }
        None => (text, default),
    };
    Ok((number(what, when, max, unit)?, down))
}

/// Refuses kills that cannot make a meaningful run: after the traffic, the same server twice at
/// once, or more than `f` servers killed within `window` of each other: a kill is not even
/// detected that soon, so they fail together, and more than f cannot be recovered (the
/// orchestrator would only report so).
fn check_kills(kills: &[Kill], duration: Duration, f: u8, window: Duration) -> anyhow::Result<()> {
    if let Some(k) = kills.iter().find(|k| k.at > duration) {
        anyhow::bail!(
            "--kill {}@{}: after the traffic ends ({} s)",
            k.position.0,
            k.at.as_secs_f64(),
            duration.as_secs_f64()
        );
    }
    check_at_once(
        kills,
        f,
        window.as_secs_f64(),
        |k| (k.position.0, k.at.as_secs_f64()),
        "s",
    )
}

/// Refuses a kill given twice, a server killed again within `window` of its kill, and more than
/// `f` servers killed at the same moment or, with a `window` above 0, within `window` of each
/// other (moments closer than a nanosecond's worth of rounding count as equal); `what` gives a
/// kill's position and moment, in `unit`.
pub fn check_at_once<K>(
    kills: &[K],
    f: u8,
    window: f64,
    what: impl Fn(&K) -> (u16, f64),
    unit: &str,
) -> anyhow::Result<()> {
    const ROUNDING: f64 = 1e-9;
    for (i, k) in kills.iter().enumerate() {
        let (position, at) = what(k);
        let again = kills[..i]
            .iter()
            .map(&what)
            .find(|&(p, earlier)| p == position && (at - earlier).abs() <= window + ROUNDING);
        if let Some((_, earlier)) = again {
            if (at - earlier).abs() <= ROUNDING {
                anyhow::bail!("--kill {position}@{at} is given twice");
            }
            anyhow::bail!(
                "--kill {position}@{at} and {position}@{earlier}: server {position} is killed \
                 again within {window} {unit} of its kill, before it is even detected failed \
                 (kill it again later than that)"
            );
        }
    }
    for k in kills {
        let from = what(k).1;
        let mut together: Vec<(u16, f64)> = kills
            .iter()
            .map(&what)
            .filter(|&(_, at)| at >= from - ROUNDING && at - from <= window + ROUNDING)
            .collect();
        together.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mut servers: Vec<u16> = together.iter().map(|&(p, _)| p).collect();
        servers.sort_unstable();
        servers.dedup();
        if servers.len() <= usize::from(f) {
            continue;
        }
        if together.iter().all(|&(_, at)| at - from <= ROUNDING) {
            anyhow::bail!(
                "{} servers killed at {from} {unit}: the chain recovers at most f = {f} failed at once",
                servers.len()
            );
        }
        let list: Vec<String> = together.iter().map(|(p, at)| format!("{p}@{at}")).collect();
        anyhow::bail!(
            "servers {servers:?} killed within {window} {unit} of each other ({}): a kill is not \
             detected sooner, so they fail together, and the chain recovers at most f = {f} \
             failed at once",
            list.join(", ")
        );
    }
    Ok(())
}

pub fn run(args: &ChaosArgs) -> anyhow::Result<ExitCode> {
    let spec = ChainSpec::load(&args.spec)?;
    // FTC's frames must carry the chain's logs: refuse it here rather than at the first packet.
    let server = ftc_node::ServerConfig::default();
    if args.procs {
        server.check_logs_fit_beside_packets(&spec)?;
    } else {
        server.check_logs_fit(&spec)?;
    }
    if !(0.05..=3600.0).contains(&args.duration) {
        anyhow::bail!("--duration must be between 0.05 and 3600 seconds");
    }
    if !(0.1..=10_000.0).contains(&args.heartbeat_ms) {
        anyhow::bail!("--heartbeat-ms must be between 0.1 and 10000");
    }
    crate::run::check_flows(args.flows)?;
    crate::run::check_rate(args.rate)?;
    if args.procs {
        let packets = args.rate.unwrap_or(PROCS_RATE) as f64 * args.duration;
        if packets > MAX_PROCS_PACKETS as f64 {
            anyhow::bail!(
                "--rate × --duration must be at most {MAX_PROCS_PACKETS} packets with --procs \
                 (the sink keeps when each packet was sent): lower --rate or --duration"
            );
        }
    }
    let duration = Duration::from_secs_f64(args.duration);
    let kills = args
        .kills
        .iter()
        .map(|k| parse_kill(k, duration / 2))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let orchestrator_kills = args
        .orchestrator_kills
        .iter()
        .map(|k| parse_orchestrator_kill(k, duration))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let stats_every = args
        .stats_every
        .map(crate::node::stats_period)
        .transpose()?;
    if stats_every.is_some() && !args.procs {
        anyhow::bail!("--stats-every needs --procs (without it, `ftc chaos` reports at the end)");
    }
    if !orchestrator_kills.is_empty() && !args.procs {
        anyhow::bail!(
            "--kill-orchestrator needs --procs (without it, the orchestrator is part of the \
             chain's process)"
        );
    }
    let mut config = ChaosConfig {
        run: RunConfig {
            duration,
            rate: args.rate,
            flows: args.flows,
            ..RunConfig::default()
        },
        kills,
        ..ChaosConfig::default()
    };
    config.coordinator.heartbeat_period_ns = (args.heartbeat_ms * 1e6) as u64;
    // A server is declared failed once silent for `misses` periods: at the soonest `misses − 1`
    // periods after its kill (its last heartbeat just before), and only recovered after that.
    let undetected = Duration::from_nanos(
        config.coordinator.heartbeat_period_ns
            * u64::from(config.coordinator.misses.saturating_sub(1)),
    );
    check_kills(&config.kills, duration, spec.chain.f, undetected)?;
    crate::log::init("chaos");
    let r = if args.procs {
        let procs = ProcsConfig {
            exe: std::env::current_exe()?,
            spec_path: args.spec.clone(),
            duration,
            rate: args.rate.unwrap_or(PROCS_RATE),
            flows: args.flows,
            size: config.run.size,
            kills: config.kills,
            orchestrator_kills,
            coordinator: config.coordinator,
            deploy: Duration::from_secs(10),
            settle: config.settle,
            stats_every,
        };
        run_procs(&spec, &procs)?
    } else {
        run_chaos(&spec, &config)?
    };
    if args.json {
        outln!("{}", serde_json::to_string(&r)?);
    } else {
        print_report(&r, args.procs);
    }
    Ok(if r.run.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The report for people: kills, recovery phases, traffic, verdict. Over processes (UDP between
/// them) packets may also be lost on the wire, so they are not all accounted for one by one.
pub fn print_report(r: &ChaosReport, procs: bool) {
    for k in &r.kills {
        outln!("killed server {} at {:.1} ms", k.position, k.at_ms);
    }
    for k in &r.orchestrator_kills {
        let next = match (k.back_at_ms, &k.adopted) {
            (Some(back), Some(adopted)) => {
                format!("the next one started at {back:.1} ms, {adopted}")
            }
            (Some(back), None) => {
                format!("the next one started at {back:.1} ms and had not adopted the chain yet")
            }
            (None, _) => "no other one started before the run ended".to_string(),
        };
        outln!("crashed the orchestrator at {:.1} ms; {next}", k.at_ms);
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    for rec in &r.recoveries {
        let suspected: Vec<u16> = rec
            .failed
            .iter()
            .copied()
            .filter(|p| !r.kills.iter().any(|k| k.position == *p))
            .collect();
        if !suspected.is_empty() {
            outln!(
                "(servers {suspected:?} were not killed: they missed their heartbeats on this busy machine, so the orchestrator fenced them off and replaced them too)"
            );
        }
        outln!(
            "recovered {:?} (epoch {}): detection {:.2} ms, replacement start {:.2} ms, state transfer {:.2} ms ({} bytes), reroute {:.2} ms, total after detection {:.2} ms",
            rec.failed,
            rec.epoch,
            ms(rec.detection_ns),
            ms(rec.start_ns),
            ms(rec.transfer_ns),
            rec.bytes,
            ms(rec.reroute_ns),
            ms(rec.total_ns)
        );
    }
    let run = &r.run;
    // Over processes a dropped packet is not told apart from a lost one: both never come back.
    let dropped = if procs {
        " (packets the middleboxes dropped among them)".to_string()
    } else {
        format!(", {}", crate::run::dropped(run))
    };
    outln!(
        "{}: {} packets sent, {} released, {}{dropped}, {:.0} packets/s, latency p50 {:.1} µs, p99 {:.1} µs",
        run.chain,
        run.packets_sent,
        run.packets_released,
        crate::run::lost(run),
        run.throughput_pps,
        run.latency_us.p50,
        run.latency_us.p99
    );
    if run.violations.is_empty() {
        let accounted = if procs {
            "every released packet one that was sent, released once"
        } else {
            "every packet accounted for"
        };
        let accounted = format!(
            "{accounted}, output commit held for every released packet ({} transactions checked)",
            r.output_commit_checked.transactions
        );
        let after = r
            .replicas_equal_after_ms
            .map(|ms| format!(" ({ms:.0} ms after the traffic)"))
            .unwrap_or_default();
        outln!(
            "consistent: every kill recovered, {accounted}, every replica equal to its recovered head{after}, monitors counted every released packet, no flow's NAT mapping changed"
        );
    } else {
        for v in &run.violations {
            outln!("VIOLATION: {v}");
        }
    }
}
