//! `ftc bench --transport xdp`: every experiment in a namespace lab (`ftc lab`), each point's
//! modes as in memory: one `ftc node` process per server in its own network namespace, AF_XDP
//! on every link, and a real TCP download through the chain (curl from python3's http.server)
//! as the traffic, as `ftc lab demo` runs it (recoveries with its kill).
//!
//! Throughput is the frames the chain delivered per second of the download (data one way,
//! acknowledgements the other); latency is the round trips of a TCP echo probe during the
//! download, one every millisecond, each crossing every middlebox twice. A load is curl's pace:
//! that share of FTC's flat-out download rate on the point's chain. The FTMB baselines run in
//! a lab of their own layout (twice the servers, [`Layout::Ftmb`]), brought up in turn with
//! FTC's as the modes alternate.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ftc_chain::spec::ChainSpec;
use ftc_node::runtime::RunReport;
use ftc_node::Mode;
use ftc_orchestrator::lab::apply;
use ftc_orchestrator::lab::demo::{demo, DemoConfig, DemoReport, LabKill, FRAME_HEADERS};
use ftc_orchestrator::lab::deploy::RunConfig;
use ftc_orchestrator::lab::topology::{LabName, Layout, Topology};
use ftc_orchestrator::process::edges::EdgeKind;
use ftc_orchestrator::process::shape::Shape;
use serde_json::json;

use crate::experiment::{
    Experiment, Point, Work, GEN_THREADS, RECOVERY_FTC_ONLY, RECOVERY_PHASES, SATURATED,
};
use crate::progress::Progress;
use crate::results::{
    machine, ExperimentInfo, PointResult, RecoveryFigures, RecoveryRun, Results, Run,
};
use crate::runner::{self, Plan};
use crate::saturation::{self, Calibration, Saturation};
use crate::stats::{alternate, mode_name};
use crate::{BenchError, Settings};

/// The heartbeat period of the lab's runs but recoveries (which take the recovery experiment's,
/// [`Settings::heartbeat`]): no server is killed in them, so detection speed does not matter,
/// and a long period keeps a busy machine's live servers from being suspected.
const HEARTBEAT_MS: f64 = 50.0;
/// Round trips of the latency probe are this far apart.
const PROBE_EVERY: Duration = Duration::from_millis(1);

/// Where and how the lab runs.
#[derive(Debug, Clone)]
pub struct LabSettings {
    /// The lab's name (its namespaces' prefix); brought up for each chain, down at the end.
    pub name: LabName,
    /// The `ftc` executable the orchestrator and nodes run.
    pub exe: PathBuf,
    /// Bytes downloaded per run and connection.
    pub size: u64,
    /// Downloads at once per run, each over a TCP connection of its own.
    pub connections: u32,
}

impl LabSettings {
    /// Megabytes downloaded per run, by default: quick runs download less.
    pub fn default_mb(quick: bool) -> u64 {
        if quick {
            20
        } else {
            200
        }
    }
}

/// Run `experiments` in the lab of `lab`, showing progress on stderr; `stop` (Ctrl-C) ends the
/// run under way. The lab is taken down at the end, whatever happened.
pub fn run(
    experiments: &[Experiment],
    settings: &Settings,
    lab: &LabSettings,
    stop: &AtomicBool,
) -> Result<Results, BenchError> {
    let plans = runner::plan(experiments, settings)?;
    apply::check_host().map_err(|e| BenchError::Lab(e.to_string()))?;
    let runs = runner::planned_runs(&plans, settings);
    let dir = std::env::temp_dir().join(format!("ftc-bench-lab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| BenchError::Write {
        path: dir.clone(),
        source,
    })?;
    let progress = Progress::new(runs as u64);
    let mut bench = LabBench {
        lab,
        settings,
        stop,
        progress: &progress,
        dir: &dir,
        topology: RefCell::new(None),
    };
    let measured = bench.experiments(plans);
    progress.finish();
    let down = apply::down(&lab.name).map_err(|e| BenchError::Lab(e.to_string()));
    let _ = std::fs::remove_dir_all(&dir);
    let (experiments, points) = measured?;
    down?;
    Ok(Results {
        machine: machine(),
        transport: "xdp",
        quick: settings.quick,
        rounds: settings.rounds,
        duration_s: 0.0,
        download_mb: Some(lab.size >> 20),
        connections: Some(lab.connections),
        snapshot: settings.snapshot,
        experiments,
        points,
    })
}

/// What the reader must know about `experiment` in a lab: its in-memory notes, but for loads,
/// which pace a download here rather than a packet generator, packet sizes, which are the
/// server's data frames, and recoveries, of state that UDP flows made.
fn notes(experiment: Experiment) -> &'static [&'static str] {
    match experiment {
        Experiment::StateSize => &[
            GEN_THREADS,
            "Packet sizes are those of the server's data frames: the client advertises the TCP \
             MSS that gives them (`ftc lab demo --frame-bytes`); the throughput counts the \
             acknowledgements too. Each download carries `--size-mb`'s share of payload at \
             that size, so that it has about as many frames as one of full-size frames.",
        ],
        Experiment::Recovery => &[
            RECOVERY_FTC_ONLY,
            "Before the download the client opens `flows` UDP flows (`ftc lab demo \
             --udp-flows`: a datagram from each of as many ports to the server's DNS port, a \
             NAT mapping each); the NAT's server's node is killed (SIGKILL) half way through \
             the download. TCP resends what the kill lost, so no packet is counted lost. \
             Throughput is the download's, recovery included.",
            RECOVERY_PHASES,
        ],
        Experiment::LatencyLoad => &[
            "Offered loads pace the download (curl's `--limit-rate`) at fractions of FTC's \
             flat-out download rate on Ch-Rec, measured just before; both modes get the same \
             pace. curl paces in bursts, so queues build even below saturation. `p99_ratios` \
             compare tail latencies.",
            SATURATED,
        ],
        e => e.notes(),
    }
}

/// The modes of `point` a lab runs.
fn modes_of(point: &Point) -> Vec<Mode> {
    match &point.work {
        Work::Compare { modes, .. } => modes.clone(),
        Work::Recover { .. } => vec![Mode::Ftc],
    }
}

/// A lab benchmark under way.
struct LabBench<'a> {
    lab: &'a LabSettings,
    settings: &'a Settings,
    stop: &'a AtomicBool,
    progress: &'a Progress,
    /// Where the specs the nodes read are written.
    dir: &'a Path,
    /// The lab as it is up now.
    topology: RefCell<Option<Topology>>,
}

type Measured = (Vec<ExperimentInfo>, Vec<PointResult>);

impl LabBench<'_> {
    fn experiments(&mut self, plans: Vec<Plan>) -> Result<Measured, BenchError> {
        let (mut infos, mut results) = (Vec::new(), Vec::new());
        for (experiment, points) in plans {
            let mut info = ExperimentInfo {
                notes: notes(experiment),
                ..ExperimentInfo::of(experiment)
            };
            // FTC's flat-out download rate (bytes/s and frames/s), the 100% of the experiment's
            // loads.
            let mut saturation = Saturation::default();
            for mut point in points {
                let spec_path = self.prepare(&point)?;
                if let Work::Recover { kill } = point.work {
                    results.push(self.recover(&point, &spec_path, kill));
                    continue;
                }
                // The pace in bytes/s, and in frames/s as the throughput counts them.
                let (mut rate_limit, mut offered_frames) = (None, None);
                if let Work::Compare {
                    load: Some(load), ..
                } = point.work
                {
                    let calibrate = || self.calibrate(&point, &spec_path);
                    let Some([bytes_s, frames_s]) = saturation.get(&mut info, calibrate) else {
                        self.progress.skip(runner::runs_of(&point, self.settings));
                        continue;
                    };
                    info.saturation_pps = Some(frames_s);
                    let offered = saturation::offered(bytes_s, load);
                    rate_limit = Some(offered);
                    offered_frames = Some(frames_s * load);
                    point.params.insert(
                        "offered_mbit_s".into(),
                        json!((offered as f64 * 8e-5).round() / 10.0),
                    );
                }
                let modes = modes_of(&point);
                let what = |mode: Mode| {
                    format!(
                        "{} {} in the lab: {}",
                        point.experiment.name(),
                        point.label,
                        mode_name(mode)
                    )
                };
                let reports = alternate(&modes, self.settings.rounds, |mode| {
                    self.progress.run(what(mode), || {
                        run_of(
                            &point.spec,
                            mode,
                            self.download(&point, &spec_path, mode, rate_limit, Vec::new()),
                        )
                    })
                });
                let mut result = PointResult::empty(&point);
                result.compare(&modes, &reports);
                if let Some(frames) = offered_frames {
                    result.offered(frames);
                }
                results.push(result);
            }
            infos.push(info);
        }
        Ok((infos, results))
    }

    /// Writes `point`'s spec where the nodes read it; its path.
    fn prepare(&self, point: &Point) -> Result<PathBuf, BenchError> {
        let text = &point.lab.spec;
        let path = self.dir.join(format!("{}.toml", point.spec.chain.name));
        std::fs::write(&path, text).map_err(|source| BenchError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// The lab for `spec` in `mode`: the one up, or brought up again when the chain's or the
    /// mode's shape differs from it.
    fn lab_for(&self, spec: &ChainSpec, mode: Mode) -> Result<Topology, BenchError> {
        let lab_error = |e: &dyn std::fmt::Display| BenchError::Lab(e.to_string());
        let layout = Layout::of(mode);
        let wanted =
            Topology::new(spec, layout, self.lab.name.clone(), 0).map_err(|e| lab_error(&e))?;
        let mut current = self.topology.borrow_mut();
        if let Some(t) = current.as_ref().filter(|t| t.same_shape(&wanted)) {
            return Ok(t.clone());
        }
        let up = apply::up(spec, layout, &self.lab.name, true).map_err(|e| lab_error(&e))?;
        for warning in &up.warnings {
            eprintln!("ftc bench: lab {}: warning: {warning}", self.lab.name);
        }
        Ok(current.insert(up.topology).clone())
    }

    /// FTC's flat-out download through `point`'s chain, one per round: its bytes and frames
    /// per second.
    fn calibrate(&self, point: &Point, spec_path: &Path) -> Vec<Calibration<2>> {
        (0..self.settings.rounds)
            .map(|_| {
                let what = format!(
                    "{}: saturation of {} in the lab",
                    point.experiment.name(),
                    point.spec.chain.name
                );
                self.progress.run(what, || {
                    let r = self
                        .download(point, spec_path, Mode::Ftc, None, Vec::new())
                        .map_err(|e| format!("the lab run failed: {e}"))?;
                    Ok(([r.bytes as f64 / r.seconds, r.frames_per_s], r.violations))
                })
            })
            .collect()
    }

    /// `point`'s recoveries, one per round: server `kill` killed half way through a download.
    fn recover(&self, point: &Point, spec_path: &Path, kill: u16) -> PointResult {
        let (mut runs, mut violations) = (Vec::new(), Vec::new());
        for _ in 0..self.settings.rounds {
            let what = format!(
                "{} {} in the lab: ftc, kill",
                point.experiment.name(),
                point.label
            );
            let kills = vec![LabKill {
                position: kill,
                at: 0.5,
            }];
            let ran = self.progress.run(what, || {
                self.download(point, spec_path, Mode::Ftc, None, kills)
            });
            match ran {
                Ok(r) => {
                    // TCP resends what the kill lost: no packet count to give.
                    runs.push(RecoveryRun::of(r.recoveries, kill, 0, r.frames_per_s));
                    violations.extend(r.violations);
                }
                Err(e) => violations.push(e.to_string()),
            }
        }
        let mut result = PointResult::empty(point);
        result.recovery = Some(RecoveryFigures::of(runs, violations));
        result
    }

    /// One download through `point`'s chain in `mode`, paced at `rate_limit` bytes/s if
    /// given, with `kills`.
    fn download(
        &self,
        point: &Point,
        spec_path: &Path,
        mode: Mode,
        rate_limit: Option<u64>,
        kills: Vec<LabKill>,
    ) -> Result<DemoReport, BenchError> {
        let spec = &point.spec;
        let frame_bytes = point.lab.frame_bytes;
        let topology = self.lab_for(spec, mode)?;
        let config = DemoConfig {
            run: RunConfig {
                exe: self.lab.exe.clone(),
                spec: spec_path.to_path_buf(),
                topology,
                heartbeat_ms: if kills.is_empty() {
                    HEARTBEAT_MS
                } else {
                    self.settings.heartbeat.as_secs_f64() * 1e3
                },
                misses: 3,
                ring_loss: 0.0,
                stats_every: None,
                edges: Some(EdgeKind::Xdp),
                peers: None,
                reports_to_stderr: true,
                recoveries: None,
                mode,
                ftmb: self.settings.ftmb(),
                orchestrator_down: Duration::ZERO,
            },
            spec: spec.clone(),
            size: download_size(self.lab.size, frame_bytes),
            connections: self.lab.connections,
            kills,
            kill_orchestrator: None,
            cuts: Vec::new(),
            rate_limit,
            probe: Some(PROBE_EVERY),
            frame_bytes,
            udp_flows: point.lab.udp_flows,
        };
        demo(&config, self.stop).map_err(|e| BenchError::Lab(e.to_string()))
    }
}

/// Bytes per download when the server's data frames are `frame_bytes` long: `full`'s share
/// of payload, so that the download has about as many frames as one of full-size frames and
/// lasts about as long.
fn download_size(full: u64, frame_bytes: Option<u16>) -> u64 {
    // The payload of a frame: less the headers and TCP's timestamps.
    let payload = |frame: u16| u64::from(frame - FRAME_HEADERS - 12);
    match frame_bytes {
        None => full,
        Some(frame) => (full * payload(frame) / payload(1514)).max(MIN_DOWNLOAD),
    }
}

/// The smallest download of [`download_size`].
const MIN_DOWNLOAD: u64 = 256 << 10;

/// A lab run's figures as a run: frames delivered per second as the throughput, the probe's
/// round trips as the latency (none where the probe got none).
fn run_of(spec: &ChainSpec, mode: Mode, ran: Result<DemoReport, BenchError>) -> Run {
    let r = match ran {
        Ok(r) => r,
        Err(e) => return Run::Failed(format!("the lab run failed: {e}")),
    };
    let delivered = (r.frames_per_s * r.seconds).round() as u64;
    let probed = r.rtt_us.is_some();
    let report = RunReport {
        mode: Some(mode),
        chain: spec.chain.name.clone(),
        servers: Shape::of(spec, mode).map_or(0, |s| s.servers()),
        duration_s: r.seconds,
        packets_sent: delivered,
        packets_released: delivered,
        throughput_pps: r.frames_per_s,
        cpu_s: Some(r.machine_cpu_s),
        cpu_us_per_packet: Some(r.machine_cpu_us_per_frame),
        latency_us: r.rtt_us.map(|rtt| rtt.latency).unwrap_or_default(),
        violations: r.violations,
        ..RunReport::default()
    };
    if probed {
        Run::Measured(report)
    } else {
        Run::NoLatency(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_of_small_frames_carry_their_share_of_payload() {
        assert_eq!(download_size(200 << 20, None), 200 << 20);
        // 62 of 1,448 bytes of payload a frame.
        assert_eq!(download_size(1448 << 20, Some(128)), 62 << 20);
        assert_eq!(download_size(1 << 20, Some(1514)), 1 << 20);
        assert_eq!(download_size(1 << 20, Some(102)), MIN_DOWNLOAD);
    }
}
