//! `ftc run`: a chain in this process over the in-memory transport, with generated traffic, and
//! its throughput, latency and drops; in FTC, in NF, or as one of the FTMB baselines.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ftc_chain::spec::ChainSpec;
use ftc_node::runtime::{run_chain, RunConfig, RunReport};
use ftc_node::traffic::MAX_FLOWS;
use ftc_node::{Mode, ServerConfig};

use crate::mode::{ModeArg, SnapshotArgs};
use crate::watchdog::Watchdog;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The chain spec (TOML).
    spec: PathBuf,
    /// What the servers run: FTC, or a baseline to compare it with.
    #[arg(long, value_enum, default_value = "ftc")]
    mode: ModeArg,
    /// Seconds of traffic, 0.01 to 3600.
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Packets per second offered, 1 to 1000000000 (default: as many as the chain takes,
    /// closed loop).
    #[arg(long)]
    rate: Option<u64>,
    /// Flows the traffic is spread over, 1 to 16777216.
    #[arg(long, default_value_t = 64)]
    flows: u32,
    /// Customer frame size in bytes, 64 to 1500.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Packets in flight at most, 1 to 16384 (what a server keeps waiting at most: its hold
    /// queue, the packets its buffer refused; more in flight would be lost by design).
    #[arg(long, default_value_t = 512)]
    window: u64,
    #[command(flatten)]
    snapshots: SnapshotArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--flows` of the generated traffic: 1 to [`MAX_FLOWS`], each flow a 5-tuple of its own.
pub fn check_flows(flows: u32) -> anyhow::Result<()> {
    if !(1..=MAX_FLOWS).contains(&flows) {
        anyhow::bail!("--flows must be between 1 and {MAX_FLOWS}");
    }
    Ok(())
}

/// `--rate` of the generated traffic, where given: 1 to a packet a nanosecond (the pacer's
/// clock; faster would be no pacing at all).
pub fn check_rate(rate: Option<u64>) -> anyhow::Result<()> {
    if rate.is_some_and(|r| !(1..=1_000_000_000).contains(&r)) {
        anyhow::bail!("--rate must be between 1 and 1000000000 packets/s");
    }
    Ok(())
}

/// How long after its traffic a run may take to stop: the runtime's drain (5 s) and the
/// replicas' settling with room to spare on a loaded machine.
const STOP_WITHIN: Duration = Duration::from_secs(120);

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let spec = ChainSpec::load(&args.spec)?;
    if !(0.01..=3600.0).contains(&args.duration) {
        anyhow::bail!("--duration must be between 0.01 and 3600 seconds");
    }
    if !(64..=1500).contains(&args.size) {
        anyhow::bail!("--size must be between 64 and 1500 bytes");
    }
    check_flows(args.flows)?;
    check_rate(args.rate)?;
    let mode = Mode::from(args.mode);
    let ftmb = args.snapshots.config(mode)?;
    let config = RunConfig {
        mode,
        duration: Duration::from_secs_f64(args.duration),
        rate: args.rate,
        flows: args.flows,
        size: args.size,
        window: args.window,
        ftmb,
        ..RunConfig::default()
    };
    let most = config.server.hold_limit as u64;
    if !(1..=most).contains(&args.window) {
        anyhow::bail!(
            "--window must be 1 to {most}: a server keeps at most {most} packets waiting (frames \
             in its hold queue, packets its buffer refused), and more in flight would be lost"
        );
    }
    ServerConfig {
        mode,
        ..config.server.clone()
    }
    .check_logs_fit(&spec)?;
    let watchdog = Watchdog::exit_after(
        config.duration + STOP_WITHIN,
        format!("`ftc run` of {}", spec.chain.name),
    );
    let r = run_chain(&spec, &config);
    drop(watchdog);
    if args.json {
        outln!("{}", serde_json::to_string(&r)?);
    } else {
        outln!(
            "{} in {} mode on {} server{}, {:.2} s: {} packets sent, {} released, {}, {}",
            r.chain,
            config.mode.name(),
            r.servers,
            if r.servers == 1 { "" } else { "s" },
            r.duration_s,
            r.packets_sent,
            r.packets_released,
            lost(&r),
            dropped(&r)
        );
        outln!("  throughput {:.0} packets/s", r.throughput_pps);
        outln!(
            "  latency µs: p50 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1}",
            r.latency_us.p50,
            r.latency_us.p99,
            r.latency_us.p999,
            r.latency_us.max
        );
        if let (Some(cpu), Some(per)) = (r.cpu_s, r.cpu_us_per_packet) {
            let cores = std::thread::available_parallelism().map_or(0, usize::from);
            outln!(
                "  CPU: {:.2} of {cores} cores busy on average, {per:.2} µs per packet released",
                cpu / r.duration_s.max(f64::MIN_POSITIVE)
            );
        }
        if let Some(b) = r.busiest() {
            // FTMB's loggers run one thread each; servers and FTMB's masters take `threads`.
            let hint = if b.thread.contains("logger") {
                ""
            } else {
                "; `threads` gives a middlebox more lanes"
            };
            outln!(
                "  busiest thread: {}, busy {:.0} % of the run (a thread near 100 % sets the pace{hint})",
                b.thread,
                100.0 * b.busy
            );
        }
        if config.mode == Mode::Ftc {
            outln!(
                "  buffer mean hold {:.1} µs; frames held at replicas {}",
                r.buffer_mean_hold_us,
                r.frames_held
            );
            let f = &r.frames;
            let per = |n: u64| n as f64 / r.packets_sent.max(1) as f64;
            outln!(
                "  per packet sent: {:.2} frames handled, {:.3} return frames, {:.3} propagating frames; logs back into the chain {:.0} % on customer frames",
                per(f.handled),
                per(f.returns),
                per(f.propagating),
                100.0 * f.logs_attached as f64 / (f.logs_attached + f.logs_propagated).max(1) as f64
            );
            if f.retransmit_requests + f.logs_resent > 0 {
                outln!(
                    "  loss repair: {} retransmission requests, {} logs sent again, {} duplicates skipped",
                    f.retransmit_requests, f.logs_resent, f.duplicates
                );
            }
        }
        print_ftmb(&r);
        if r.violations.is_empty() {
            let checks = if mode.is_ftmb() {
                "no packet released before its PALs"
            } else {
                "every replica equal to its head"
            };
            outln!("  checks: every packet accounted for, {checks}");
        } else {
            for v in &r.violations {
                outln!("  VIOLATION: {v}");
            }
        }
    }
    Ok(if r.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The packets lost, by why where the run knows it: `none lost`, or `12 lost (fenced 2, with a
/// failed server 10)`.
pub fn lost(r: &RunReport) -> String {
    if r.packets_lost == 0 {
        return "none lost".to_string();
    }
    by_reason(r.packets_lost, "lost", &r.packets_lost_why)
}

/// `total` `what` and, where known, how many for each reason: `12 lost (fenced 2, …)`.
fn by_reason(total: u64, what: &str, by: &std::collections::BTreeMap<String, u64>) -> String {
    if by.is_empty() {
        return format!("{total} {what}");
    }
    let by: Vec<String> = by.iter().map(|(why, n)| format!("{why} {n}")).collect();
    format!("{total} {what} ({})", by.join(", "))
}

/// The packets the middleboxes dropped, by the middlebox that dropped them (the reason a run
/// knows): `none dropped by middleboxes`, or `12 dropped by middleboxes (m0 firewall 10, m2
/// simple-nat 2)`.
pub fn dropped(r: &RunReport) -> String {
    let total: u64 = r.packets_dropped.values().sum();
    if total == 0 {
        return "none dropped by middleboxes".to_string();
    }
    by_reason(total, "dropped by middleboxes", &r.packets_dropped)
}

/// What the FTMB modes add to the report: the loggers' work and the snapshots.
fn print_ftmb(r: &RunReport) {
    if let Some(f) = &r.ftmb {
        outln!(
            "  FTMB: {} packets logged by input loggers, {} PAL messages ({} accesses), {} packets waited for their PALs",
            f.packets_logged, f.pal_messages, f.pal_accesses, f.packets_waited
        );
    }
    if let Some(s) = &r.snapshots {
        outln!(
            "  snapshots ({}, every {} ms): {} taken {:?}, stall mean {:.1} µs, max {:.1} µs, {} bytes copied",
            s.kind, s.every_ms, s.taken, s.per_master, s.stall_mean_us, s.stall_max_us, s.bytes_copied
        );
    }
}
