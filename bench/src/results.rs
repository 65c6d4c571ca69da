//! What a benchmark measured, as it goes out in JSON: per point each mode's medians and runs,
//! the ratios, or a recovery's phases; per experiment its notes; the machine it ran on.

use std::collections::BTreeMap;

use ftc_node::ftmb::SnapshotKind;
use ftc_node::runtime::{RunReport, ThreadBusy};
use ftc_orchestrator::coordinator::RecoveryReport;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::experiment::{Experiment, Point};
use crate::stats::{median, mode_name, Ratios};
use ftc_node::Mode;

/// Everything one `ftc bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// The machine, named (CPU model, CPUs): the absolute figures hold for it only.
    pub machine: String,
    pub transport: &'static str,
    pub quick: bool,
    pub rounds: usize,
    /// Seconds of traffic per run (in memory).
    pub duration_s: f64,
    /// Megabytes downloaded per run and connection (in a lab).
    pub download_mb: Option<u64>,
    /// Downloads at once per run, each over a TCP connection of its own (in a lab).
    pub connections: Option<u32>,
    /// FTMB+snapshot's snapshots (serialized as `real` or `stall-<N>ms`).
    pub snapshot: SnapshotKind,
    pub experiments: Vec<ExperimentInfo>,
    pub points: Vec<PointResult>,
}

/// An experiment's description and what was measured for it besides its points.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentInfo {
    pub experiment: Experiment,
    pub title: &'static str,
    pub notes: &'static [&'static str],
    /// `latency-load`: FTC's closed-loop throughput on the chain, the 100% of its loads.
    pub saturation_pps: Option<f64>,
    /// What the checks of the runs that measured `saturation_pps` found, or why they failed
    /// (then no load was offered: the experiment has no points).
    pub violations: Vec<String>,
}

impl ExperimentInfo {
    /// `experiment`'s description, nothing measured yet.
    pub fn of(experiment: Experiment) -> Self {
        ExperimentInfo {
            experiment,
            title: experiment.title(),
            notes: experiment.notes(),
            saturation_pps: None,
            violations: Vec::new(),
        }
    }
}

/// One point: its parameters and what each mode measured, or the recovery.
#[derive(Debug, Clone, Serialize)]
pub struct PointResult {
    pub experiment: Experiment,
    pub label: String,
    pub params: Map<String, Value>,
    /// The key of the figures the experiment is about ([`crate::experiment::Headline::key`]): `ratios` (of
    /// throughput), `p99_ratios` (`latency-load`, whose modes are offered the same load, so
    /// that their throughput ratios are about 1) or `recovery`.
    pub headline: &'static str,
    /// By mode name (`ftc`, `nf`, `ftmb`, `ftmb-snapshot`); only the modes that were run.
    pub modes: BTreeMap<String, ModeFigures>,
    /// Of the median throughputs.
    pub ratios: Ratios,
    /// Of the median p99 latencies.
    pub p99_ratios: Ratios,
    /// `recovery` only.
    pub recovery: Option<RecoveryFigures>,
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyFigures {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

impl LatencyFigures {
    /// Each percentile's median over `runs`; `None` for no runs.
    fn median(runs: &[LatencyFigures]) -> Option<Self> {
        let med = |f: fn(&LatencyFigures) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Some(LatencyFigures {
            p50: med(|l| l.p50)?,
            p99: med(|l| l.p99)?,
            p999: med(|l| l.p999)?,
        })
    }
}

/// One run of a mode, as the bench got it.
#[derive(Debug, Clone)]
pub enum Run {
    /// It ran and measured latency.
    Measured(RunReport),
    /// It ran but measured no latency (a lab run whose probe got no round trip; its violations
    /// say why): its other figures.
    NoLatency(RunReport),
    /// It failed and measured nothing: why.
    Failed(String),
}

impl Run {
    /// What it measured, unless it failed.
    fn report(&self) -> Option<&RunReport> {
        match self {
            Run::Measured(r) | Run::NoLatency(r) => Some(r),
            Run::Failed(_) => None,
        }
    }

    /// Its latency, if it measured one.
    fn latency(&self) -> Option<LatencyFigures> {
        match self {
            Run::Measured(r) => Some(LatencyFigures {
                p50: r.latency_us.p50,
                p99: r.latency_us.p99,
                p999: r.latency_us.p999,
            }),
            Run::NoLatency(_) | Run::Failed(_) => None,
        }
    }

    /// What its checks found, or why it failed.
    fn violations(&self) -> &[String] {
        match self {
            Run::Measured(r) | Run::NoLatency(r) => &r.violations,
            Run::Failed(why) => std::slice::from_ref(why),
        }
    }
}

/// One run's headline figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunFigures {
    pub throughput_pps: f64,
    /// `null`: the run measured none ([`Run::NoLatency`]).
    pub latency_us: Option<LatencyFigures>,
    pub packets_sent: u64,
    pub packets_released: u64,
    /// In memory: the server thread that spent the largest share of the run on batches, the
    /// one that set the pace if near 1 (`null` in the lab, whose nodes do not report it).
    pub busiest: Option<ThreadBusy>,
    /// What a packet cost the machine, µs of CPU time: in memory, the process's per packet
    /// released ([`RunReport::cpu_us_per_packet`]); in the lab, the whole machine's per frame
    /// delivered (nodes, client, server, orchestrator and the kernel's work for them).
    pub cpu_us_per_packet: Option<f64>,
}

/// One mode at one point: the medians over its runs (each figure's own median over the runs
/// that measured it; a failed run measured nothing), and the runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeFigures {
    /// `null`: every run failed.
    pub throughput_pps: Option<f64>,
    /// `null`: no run measured latency.
    pub latency_us: Option<LatencyFigures>,
    /// The runs that did not fail, in order.
    pub runs: Vec<RunFigures>,
    /// Runs that failed and measured nothing ([`ModeFigures::violations`] says why).
    pub failed_runs: usize,
    /// The median over the runs of [`RunFigures::cpu_us_per_packet`].
    pub cpu_us_per_packet: Option<f64>,
    /// FTMB+snapshot in memory: the median over the runs of each run's mean stall per
    /// snapshot, in microseconds (a run's masters report it; `null` where none was taken).
    pub snapshot_stall_us: Option<f64>,
    /// What the runs' checks found (none expected), and why runs failed.
    pub violations: Vec<String>,
    /// Where a load was offered (`latency-load`): whether the mode carried less than
    /// [`SATURATED_BELOW`] of it, its median throughput behind the pace; `null` where none was.
    pub saturated: Option<bool>,
}

/// The share of the load offered below which a mode is [`ModeFigures::saturated`].
pub const SATURATED_BELOW: f64 = 0.95;

impl ModeFigures {
    /// The medians of `runs`.
    pub fn of(runs: &[Run]) -> Self {
        let reports: Vec<&RunReport> = runs.iter().filter_map(Run::report).collect();
        let latencies: Vec<LatencyFigures> = runs.iter().filter_map(Run::latency).collect();
        ModeFigures {
            throughput_pps: median(&reports.iter().map(|r| r.throughput_pps).collect::<Vec<_>>()),
            latency_us: LatencyFigures::median(&latencies),
            runs: runs
                .iter()
                .filter_map(|run| Some((run.report()?, run.latency())))
                .map(|(r, latency_us)| RunFigures {
                    throughput_pps: r.throughput_pps,
                    latency_us,
                    packets_sent: r.packets_sent,
                    packets_released: r.packets_released,
                    busiest: r.busiest().cloned(),
                    cpu_us_per_packet: r.cpu_us_per_packet,
                })
                .collect(),
            failed_runs: runs.len() - reports.len(),
            cpu_us_per_packet: median(
                &reports
                    .iter()
                    .filter_map(|r| r.cpu_us_per_packet)
                    .collect::<Vec<_>>(),
            ),
            snapshot_stall_us: median(
                &reports
                    .iter()
                    .filter_map(|r| r.snapshots.as_ref())
                    .filter(|s| s.taken > 0)
                    .map(|s| s.stall_mean_us)
                    .collect::<Vec<_>>(),
            ),
            violations: runs
                .iter()
                .flat_map(|r| r.violations().iter().cloned())
                .collect(),
            saturated: None,
        }
    }
}

/// A recovery point: the medians of the phases over the runs, in milliseconds, and the runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecoveryFigures {
    pub detection_ms: Option<f64>,
    pub start_ms: Option<f64>,
    pub transfer_ms: Option<f64>,
    pub reroute_ms: Option<f64>,
    pub total_ms: Option<f64>,
    pub bytes: Option<f64>,
    /// Per run: the recovery of the killed server, and any others.
    pub runs: Vec<RecoveryRun>,
    pub violations: Vec<String>,
}

/// One recovery run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecoveryRun {
    /// The first recovery of the killed position (`null`: none finished).
    pub recovery: Option<RecoveryReport>,
    /// The run's other recoveries: on a busy machine a live server (or a fresh replacement)
    /// may miss its heartbeats and be replaced too.
    pub other_recoveries: Vec<RecoveryReport>,
    pub packets_lost: u64,
    pub throughput_pps: f64,
}

impl RecoveryRun {
    /// A run whose `recoveries` were reported, in which position `killed` was killed.
    pub fn of(
        mut recoveries: Vec<RecoveryReport>,
        killed: u16,
        packets_lost: u64,
        throughput_pps: f64,
    ) -> Self {
        let recovery = recoveries
            .iter()
            .position(|rec| rec.failed.contains(&killed))
            .map(|i| recoveries.remove(i));
        RecoveryRun {
            recovery,
            other_recoveries: recoveries,
            packets_lost,
            throughput_pps,
        }
    }
}

impl RecoveryFigures {
    /// The medians of `runs`.
    pub fn of(runs: Vec<RecoveryRun>, violations: Vec<String>) -> Self {
        let med = |f: fn(&RecoveryReport) -> u64, scale: f64| {
            let v: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.recovery.as_ref())
                .map(|r| f(r) as f64 / scale)
                .collect();
            median(&v)
        };
        RecoveryFigures {
            detection_ms: med(|r| r.detection_ns, 1e6),
            start_ms: med(|r| r.start_ns, 1e6),
            transfer_ms: med(|r| r.transfer_ns, 1e6),
            reroute_ms: med(|r| r.reroute_ns, 1e6),
            total_ms: med(|r| r.total_ns, 1e6),
            bytes: med(|r| r.bytes, 1.0),
            runs,
            violations,
        }
    }
}

impl Results {
    /// The points of `experiment`.
    pub fn points_of(&self, experiment: Experiment) -> impl Iterator<Item = &PointResult> {
        self.points
            .iter()
            .filter(move |p| p.experiment == experiment)
    }

    /// Every violation any run reported, with its experiment and point (none for an
    /// experiment's saturation).
    pub fn violations(&self) -> Vec<String> {
        let saturations = self.experiments.iter().flat_map(|i| {
            i.violations
                .iter()
                .map(move |v| format!("{}: {v}", i.experiment.name()))
        });
        let points = self.points.iter().flat_map(|p| {
            p.violations()
                .map(move |v| format!("{} {}: {v}", p.experiment.name(), p.label))
        });
        saturations.chain(points).collect()
    }
}

impl PointResult {
    /// `point`'s result before anything is measured.
    pub fn empty(point: &Point) -> Self {
        PointResult {
            experiment: point.experiment,
            label: point.label.clone(),
            params: point.params.clone(),
            headline: point.experiment.headline().key(),
            modes: BTreeMap::new(),
            ratios: Ratios::default(),
            p99_ratios: Ratios::default(),
            recovery: None,
        }
    }

    /// The figures of `modes` from their `runs` (per mode, its rounds), and the ratios of
    /// their medians.
    pub fn compare(&mut self, modes: &[Mode], runs: &[Vec<Run>]) {
        for (&mode, runs) in modes.iter().zip(runs) {
            self.modes.insert(mode_name(mode), ModeFigures::of(runs));
        }
        let medians = |f: fn(&ModeFigures) -> Option<f64>| {
            self.modes
                .iter()
                .filter_map(|(m, figures)| Some((m.clone(), f(figures)?)))
                .collect()
        };
        self.ratios = Ratios::of(&medians(|f| f.throughput_pps));
        self.p99_ratios = Ratios::of(&medians(|f| f.latency_us.map(|l| l.p99)));
    }

    /// Marks each mode [`ModeFigures::saturated`] or not at the load `offered` per second, in
    /// the unit of their throughput.
    pub fn offered(&mut self, offered: f64) {
        for f in self.modes.values_mut() {
            f.saturated = f.throughput_pps.map(|t| t < SATURATED_BELOW * offered);
        }
    }

    /// What the checks of this point's runs found (nothing, normally).
    pub fn violations(&self) -> impl Iterator<Item = &String> {
        let recovery = self.recovery.iter().flat_map(|r| &r.violations);
        self.modes
            .values()
            .flat_map(|m| &m.violations)
            .chain(recovery)
    }
}

/// This machine: its CPU model and how many CPUs this process may use.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{model}, {cpus} CPUs, {}", std::env::consts::OS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftc_node::runtime::Latency;

    fn report(pps: f64, p99: f64) -> RunReport {
        RunReport {
            throughput_pps: pps,
            latency_us: Latency {
                p50: p99 / 2.0,
                p99,
                ..Latency::default()
            },
            ..RunReport::default()
        }
    }

    #[test]
    fn mode_figures_are_medians_of_each_figure() {
        let f = ModeFigures::of(&[
            Run::Measured(report(300.0, 10.0)),
            Run::Measured(report(100.0, 30.0)),
            Run::Measured(report(200.0, 20.0)),
        ]);
        assert_eq!(f.throughput_pps, Some(200.0));
        let latency = f.latency_us.unwrap();
        assert_eq!((latency.p99, latency.p50), (20.0, 10.0));
        assert_eq!((f.runs.len(), f.failed_runs), (3, 0));
        assert_eq!(f.runs[1].throughput_pps, 100.0, "runs kept in order");
        assert!(f.violations.is_empty());
    }

    /// A failed run is no zero in the medians, nor is a latency a run did not measure.
    #[test]
    fn failed_runs_and_missing_latencies_stay_out_of_the_medians() {
        let f = ModeFigures::of(&[
            Run::Measured(report(300.0, 10.0)),
            Run::Failed("the lab run failed: no lab".into()),
            Run::NoLatency(report(100.0, 0.0)),
        ]);
        assert_eq!(f.throughput_pps, Some(200.0));
        assert_eq!(f.latency_us.map(|l| l.p99), Some(10.0));
        assert_eq!((f.runs.len(), f.failed_runs), (2, 1));
        assert_eq!(f.runs[1].latency_us, None);
        assert_eq!(f.violations, ["the lab run failed: no lab"]);

        let none = ModeFigures::of(&[Run::Failed("x".into())]);
        assert_eq!((none.throughput_pps, none.latency_us), (None, None));

        // A mode whose runs all failed has no ratio; the others still do.
        let settings = crate::Settings::new(true, None, None);
        let mut point = PointResult::empty(&Experiment::ChainLength.points(&settings).unwrap()[0]);
        point.compare(
            &[Mode::Ftc, Mode::Nf, Mode::Ftmb],
            &[
                vec![Run::Measured(report(300.0, 10.0))],
                vec![Run::Failed("x".into())],
                vec![Run::NoLatency(report(100.0, 0.0))],
            ],
        );
        assert_eq!(point.ratios.ftc_over_nf, None);
        assert_eq!(point.ratios.ftc_over_ftmb, Some(3.0));
        assert_eq!(point.p99_ratios.ftc_over_ftmb, None);
        assert_eq!(point.violations().collect::<Vec<_>>(), ["x"]);

        assert_eq!(point.modes["ftc"].saturated, None, "no load offered");
        // 300 and 100 pps carried of 310 offered.
        point.offered(310.0);
        let saturated = |m: &str| point.modes[m].saturated;
        assert_eq!(saturated("ftc"), Some(false));
        assert_eq!(saturated("ftmb"), Some(true));
        assert_eq!(saturated("nf"), None, "no run measured its throughput");
    }

    /// Each point names the ratios its experiment is about: latency-load's are its p99s.
    #[test]
    fn points_name_their_headline_figures() {
        let settings = crate::Settings::new(true, None, None);
        let headline = |e: Experiment| {
            let point = PointResult::empty(&e.points(&settings).unwrap()[0]);
            let json = serde_json::to_value(&point).unwrap();
            assert!(json.get(json["headline"].as_str().unwrap()).is_some());
            json["headline"].clone()
        };
        assert_eq!(headline(Experiment::LatencyLoad), "p99_ratios");
        assert_eq!(headline(Experiment::ChainLength), "ratios");
        assert_eq!(headline(Experiment::Recovery), "recovery");
    }

    #[test]
    fn recovery_medians_skip_runs_without_a_recovery() {
        let rec = |total_ms: u64| RecoveryRun {
            recovery: Some(RecoveryReport {
                epoch: 2,
                failed: vec![2],
                detection_ns: 0,
                start_ns: 0,
                transfer_ns: 0,
                reroute_ns: 0,
                total_ns: total_ms * 1_000_000,
                bytes: 1000,
            }),
            other_recoveries: vec![],
            packets_lost: 0,
            throughput_pps: 0.0,
        };
        let none = RecoveryRun {
            recovery: None,
            ..rec(0)
        };
        let f = RecoveryFigures::of(vec![rec(10), none, rec(30)], vec![]);
        assert_eq!(f.total_ms, Some(20.0));
        assert_eq!(f.bytes, Some(1000.0));
    }
}
