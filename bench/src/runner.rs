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
use crate::stats::{alternate, median, mode_name};
use crate::{BenchError, Settings};

/// Run `experiments` with `settings` over the in-memory transport, showing progress on stderr.
pub fn run(experiments: &[Experiment], settings: &Settings) -> Result<Results, BenchError> {
    let plans = experiments
        .iter()
        .map(|&e| Ok((e, e.points(settings)?)))
        .collect::<Result<Vec<_>, BenchError>>()?;
    let runs: usize = plans
        .iter()
        .map(|(_, points)| {
            calibrations(points, settings)
                + points.iter().map(|p| runs_of(p, settings)).sum::<usize>()
        })
        .sum();
    let progress = Progress::new(runs as u64);
    let mut results = Results {
        machine: machine(),
        transport: "mem",
        quick: settings.quick,
        rounds: settings.rounds,
        duration_s: settings.duration.as_secs_f64(),
        download_mb: None,
        connections: None,
        snapshot: settings.snapshot,
        experiments: Vec::new(),
        points: Vec::new(),
    };
    for (experiment, points) in plans {
        let mut info = ExperimentInfo::of(experiment);
        for mut point in points {
            if let Work::Compare {
                load: Some(load), ..
            } = point.work
            {
                let saturation = match info.saturation_pps {
                    Some(s) => s,
                    None => *info
                        .saturation_pps
                        .insert(saturation(&point, settings, &progress)),
                };
                let offered = (saturation * load).round().max(1.0) as u64;
                point.config.rate = Some(offered);
                point.params.insert("offered_pps".into(), json!(offered));
            }
            results.points.push(measure(point, settings, &progress));
        }
        results.experiments.push(info);
    }
    progress.finish();
    Ok(results)
}

/// Runs a point takes.
fn runs_of(point: &Point, settings: &Settings) -> usize {
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

/// FTC's closed-loop throughput on `point`'s chain: the median over the rounds.
fn saturation(point: &Point, settings: &Settings, progress: &Progress) -> f64 {
    let config = RunConfig {
        mode: Mode::Ftc,
        rate: None,
        ..point.config.clone()
    };
    let runs: Vec<f64> = (0..settings.rounds)
        .map(|_| {
            progress.run(
                format!(
                    "{}: saturation of {}",
                    point.experiment.name(),
                    point.spec.chain.name
                ),
                || run_chain(&point.spec, &config).throughput_pps,
            )
        })
        .collect();
    median(&runs).unwrap_or(0.0)
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
}
