//! Runs experiments: every point's modes in alternation over `rounds` rounds on the in-process
//! runtime ([`run_chain`]), recoveries through the embedded orchestrator ([`run_chaos`]), and
//! the medians and ratios of what they measured.

use ftc_chain::ring::ServerId;
use ftc_node::runtime::{run_chain, RunConfig};
use ftc_node::Mode;
use ftc_orchestrator::coordinator::CoordinatorConfig;
use ftc_orchestrator::embedded::{run_chaos, ChaosConfig, Kill};
use serde_json::json;

use crate::experiment::{Experiment, Point, Work};
use crate::guard::catch;
use crate::progress::Progress;
use crate::results::{
    machine, ExperimentInfo, PointResult, RecoveryFigures, RecoveryRun, Results, Run,
};
use crate::saturation::{self, Calibration, Saturation};
use crate::stats::{alternate, mode_name};
use crate::{BenchError, Settings};

/// An experiment and its points.
pub type Plan = (Experiment, Vec<Point>);

/// The points of `experiments` with `settings`.
pub fn plan(experiments: &[Experiment], settings: &Settings) -> Result<Vec<Plan>, BenchError> {
    experiments
        .iter()
        .map(|&e| Ok((e, e.points(settings)?)))
        .collect()
}

/// Run `experiments` with `settings` over the in-memory transport, showing progress on stderr.
pub fn run(experiments: &[Experiment], settings: &Settings) -> Result<Results, BenchError> {
    let plans = plan(experiments, settings)?;
    let progress = Progress::new(planned_runs(&plans, settings) as u64);
    let (experiments, points) = measure_plans(plans, settings, &progress);
    progress.finish();
    Ok(Results {
        machine: machine(),
        transport: "mem",
        quick: settings.quick,
        rounds: settings.rounds,
        duration_s: settings.duration.as_secs_f64(),
        download_mb: None,
        connections: None,
        snapshot: settings.snapshot,
        experiments,
        points,
    })
}

/// Measure `plans`' points, counting each run on `progress`.
fn measure_plans(
    plans: Vec<Plan>,
    settings: &Settings,
    progress: &Progress,
) -> (Vec<ExperimentInfo>, Vec<PointResult>) {
    let (mut infos, mut results) = (Vec::new(), Vec::new());
    for (experiment, points) in plans {
        let mut info = ExperimentInfo::of(experiment);
        let mut saturation = Saturation::default();
        for mut point in points {
            if let Work::Compare {
                load: Some(load), ..
            } = point.work
            {
                let calibrate = || calibrate(&point, settings, progress);
                let Some([pps]) = saturation.get(&mut info, calibrate) else {
                    progress.skip(runs_of(&point, settings));
                    continue;
                };
                info.saturation_pps = Some(pps);
                let offered = saturation::offered(pps, load);
                point.config.rate = Some(offered);
                point.params.insert("offered_pps".into(), json!(offered));
            }
            results.push(measure(point, settings, progress));
        }
        infos.push(info);
    }
    (infos, results)
}

/// Runs `plans` take, calibrations included: what a progress bar counts to. The lab makes as
/// many runs as in memory.
pub fn planned_runs(plans: &[Plan], settings: &Settings) -> usize {
    plans
        .iter()
        .map(|(_, points)| {
            calibrations(points, settings)
                + points.iter().map(|p| runs_of(p, settings)).sum::<usize>()
        })
        .sum()
}

/// Runs a point takes.
pub fn runs_of(point: &Point, settings: &Settings) -> usize {
    match &point.work {
        Work::Compare { modes, .. } => modes.len() * settings.rounds,
        Work::Recover { .. } => settings.rounds,
    }
}

/// Runs an experiment's calibration takes: one saturation measurement if it offers loads.
fn calibrations(points: &[Point], settings: &Settings) -> usize {
    let loads = points
        .iter()
        .any(|p| matches!(p.work, Work::Compare { load: Some(_), .. }));
    if loads {
        settings.rounds
    } else {
        0
    }
}

/// FTC's closed-loop throughput on `point`'s chain, one run per round.
fn calibrate(point: &Point, settings: &Settings, progress: &Progress) -> Vec<Calibration<1>> {
    let config = RunConfig {
        mode: Mode::Ftc,
        rate: None,
        ..point.config.clone()
    };
    let what = || {
        format!(
            "{}: saturation of {}",
            point.experiment.name(),
            point.spec.chain.name
        )
    };
    (0..settings.rounds)
        .map(|_| {
            progress.run(what(), || {
                let r = catch(|| run_chain(&point.spec, &config))?;
                Ok(([r.throughput_pps], r.violations))
            })
        })
        .collect()
}

/// Measure one point. A run that fails (a panic, a recovery run that could not run) is a
/// violation of the point; the others are measured still.
fn measure(point: Point, settings: &Settings, progress: &Progress) -> PointResult {
    let what = |mode: &str| format!("{} {}: {mode}", point.experiment.name(), point.label);
    let mut result = PointResult::empty(&point);
    match &point.work {
        Work::Compare { modes, .. } => {
            let reports = alternate(modes, settings.rounds, |mode| {
                let config = RunConfig {
                    mode,
                    ..point.config.clone()
                };
                progress.run(what(&mode_name(mode)), || {
                    catch(|| run_chain(&point.spec, &config))
                        .map_or_else(Run::Failed, Run::Measured)
                })
            });
            result.compare(modes, &reports);
            if let Some(rate) = point.config.rate {
                result.offered(rate as f64);
            }
        }
        &Work::Recover { kill } => {
            let config = ChaosConfig {
                run: RunConfig {
                    mode: Mode::Ftc,
                    ..point.config.clone()
                },
                kills: vec![Kill {
                    position: ServerId(kill),
                    at: point.config.duration / 2,
                }],
                ..ChaosConfig::default()
            };
            let config = ChaosConfig {
                coordinator: CoordinatorConfig {
                    heartbeat_period_ns: settings.heartbeat.as_nanos() as u64,
                    ..config.coordinator
                },
                ..config
            };
            let mut runs = Vec::new();
            let mut violations = Vec::new();
            for _ in 0..settings.rounds {
                let ran = progress.run(what("ftc, kill"), || {
                    catch(|| run_chaos(&point.spec, &config))
                        .and_then(|r| r.map_err(|e| format!("the recovery run failed: {e}")))
                });
                let r = match ran {
                    Ok(r) => r,
                    Err(why) => {
                        violations.push(why);
                        continue;
                    }
                };
                runs.push(RecoveryRun::of(
                    r.recoveries,
                    kill,
                    r.run.packets_lost,
                    r.run.throughput_pps,
                ));
                violations.extend(r.run.violations);
            }
            result.recovery = Some(RecoveryFigures::of(runs, violations));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A run that panics fails alone: its point records it for every mode, and the next point
    /// is measured.
    #[test]
    fn a_run_that_panics_is_a_violation_of_its_point() {
        let settings = Settings::new(true, Some(1), Some(Duration::from_millis(50)));
        let good = Experiment::ChainLength.points(&settings).unwrap().remove(0);
        let mut bad = good.clone();
        // Not a power of two: the stores refuse it, and run_chain panics.
        bad.spec.chain.partitions = 3;
        let progress = Progress::new(0);
        let failed = measure(bad, &settings, &progress);
        assert_eq!(failed.modes.len(), 4);
        for (mode, f) in &failed.modes {
            assert_eq!((f.failed_runs, f.throughput_pps), (1, None), "{mode}");
            assert!(
                f.violations.len() == 1 && f.violations[0].starts_with("the run panicked: "),
                "{mode}: {:?}",
                f.violations
            );
        }
        assert_eq!(failed.ratios, Default::default());

        let measured = measure(good, &settings, &progress);
        assert!(
            measured.modes.values().all(|f| f.failed_runs == 0),
            "{measured:?}"
        );
    }

    /// The progress bar counts to the runs made: the saturation once per experiment, then
    /// every point's modes.
    #[test]
    fn the_runs_planned_are_the_runs_made() {
        let settings = Settings::new(true, Some(1), Some(Duration::from_millis(50)));
        let plans = plan(&[Experiment::LatencyLoad], &settings).unwrap();
        let planned = planned_runs(&plans, &settings);
        assert_eq!(planned, 1 + 3 * 4, "a saturation, 3 loads of 4 modes");
        let progress = Progress::new(planned as u64);
        let (infos, points) = measure_plans(plans, &settings, &progress);
        assert_eq!(progress.done(), planned as u64);
        assert_eq!(points.len(), 3);
        assert!(infos[0].saturation_pps.is_some_and(|s| s > 0.0));
        for p in &points {
            assert!(p.params["offered_pps"].as_u64().is_some_and(|r| r >= 1));
            assert!(p.modes.values().all(|f| f.saturated.is_some()), "{p:?}");
        }
    }

    /// A saturation that failed offers no load: its reason is the experiment's violation, and
    /// the bar still reaches the end.
    #[test]
    fn a_failed_saturation_is_a_violation_and_offers_no_load() {
        let settings = Settings::new(true, Some(2), Some(Duration::from_millis(50)));
        let mut plans = plan(&[Experiment::LatencyLoad], &settings).unwrap();
        for p in &mut plans[0].1 {
            // Not a power of two: the stores refuse it, and run_chain panics.
            p.spec.chain.partitions = 3;
        }
        let planned = planned_runs(&plans, &settings);
        let progress = Progress::new(planned as u64);
        let (infos, points) = measure_plans(plans, &settings, &progress);
        assert_eq!(progress.done(), planned as u64);
        assert!(points.is_empty(), "{points:?}");
        assert_eq!(infos[0].saturation_pps, None);
        assert_eq!(infos[0].violations.len(), 2, "{:?}", infos[0].violations);
        assert!(infos[0].violations[0].contains("the run panicked"));
        let results = Results {
            machine: String::new(),
            transport: "mem",
            quick: true,
            rounds: 2,
            duration_s: 0.05,
            download_mb: None,
            connections: None,
            snapshot: settings.snapshot,
            experiments: infos,
            points,
        };
        let violations = results.violations();
        assert_eq!(violations.len(), 2, "the command exits 1: {violations:?}");
        assert!(violations[0].starts_with("latency-load: the saturation"));
    }
}
