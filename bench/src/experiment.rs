//! The experiments (thesis §4.6, figures 4.5–4.13): what each varies, its points (parameters, a
//! chain spec, a run configuration and the modes to compare) in full and `--quick` runs, and
//! what the reader must know about them.

use std::str::FromStr;

use ftc_chain::spec::ChainSpec;
use ftc_node::runtime::RunConfig;
use ftc_node::Mode;
use serde_json::{json, Map, Value};

use crate::chains::{self, Chain};
use crate::{BenchError, Settings};

/// The notes of the recovery experiment on what it compares and what its phases are.
pub const RECOVERY_FTC_ONLY: &str = "FTC only: the baselines have no recovery in this runtime, \
     so no ratios.";
pub const RECOVERY_PHASES: &str = "The orchestrator declares the killed server failed after 3 \
     missed heartbeats (every 5 ms unless `--heartbeat-ms` says otherwise). The phases are \
     those of the killed position's first recovery; \"other recoveries\" counts, per run, \
     servers that a busy machine kept from their heartbeats and that were replaced too.";

/// The note of the experiments that offer loads on the modes that could not keep up.
pub const SATURATED: &str = "A mode that carried less than 95% of the load offered is marked \
     saturated (`(sat.)`; `saturated` in the JSON): it fell behind the pace, and its latencies \
     are those of an overloaded chain, not of that load.";

/// The note of the state-size experiment on its middleboxes' threads.
pub const GEN_THREADS: &str = "Each Gen runs one worker thread, as in the thesis.";

/// The note of the experiments that vary worker threads.
const LANES_TAKE_FLOWS: &str = "A flow keeps to one lane, so in a lab (`--transport xdp`) more \
     threads can only carry more traffic with as many TCP connections at once (`--connections`).";

/// One experiment of `ftc bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Experiment {
    StateSize,
    Sharing,
    NatThreads,
    LatencyLoad,
    ChainLength,
    Replication,
    Recovery,
}

/// The experiments' names, comma-separated (for messages).
pub fn names() -> String {
    Experiment::ALL.map(Experiment::name).join(", ")
}

/// 1, 2, 4, … up to `most`, and `most` itself where it is no power of two.
fn doublings(most: u16) -> impl Iterator<Item = u16> {
    let powers =
        std::iter::successors(Some(1u16), |&t| t.checked_mul(2)).take_while(move |&t| t < most);
    powers.chain([most.max(1)])
}

impl FromStr for Experiment {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Experiment::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| BenchError::UnknownExperiment(s.to_string()))
    }
}

/// What a point measures: the modes side by side, or FTC's recovery from a kill.
#[derive(Debug, Clone)]
pub enum Work {
    /// Run every mode in alternation. With `load`, the offered rate is that fraction of FTC's
    /// closed-loop throughput on the point's chain, measured first.
    Compare { modes: Vec<Mode>, load: Option<f64> },
    /// Kill the server at this ring position half way through the traffic; FTC only.
    Recover { kill: u16 },
}

/// The figure an experiment's plot and ratio columns are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headline {
    /// Median throughput of each mode, and FTC's over the baselines'.
    Throughput,
    /// Median p99 latency of each mode, and FTC's over the baselines'.
    P99Latency,
    /// FTC's recovery phases.
    Recovery,
}

impl Headline {
    /// The key of a point's JSON that holds it: `ratios`, `p99_ratios` or `recovery`.
    pub fn key(self) -> &'static str {
        match self {
            Headline::Throughput => "ratios",
            Headline::P99Latency => "p99_ratios",
            Headline::Recovery => "recovery",
        }
    }
}

/// One point of an experiment.
#[derive(Debug, Clone)]
pub struct Point {
    pub experiment: Experiment,
    /// What distinguishes the point (JSON values by name).
    pub params: Map<String, Value>,
    /// A short label for plots.
    pub label: String,
    pub spec: ChainSpec,
    /// How the point runs in a lab (`--transport xdp`).
    pub lab: InLab,
    pub config: RunConfig,
    pub work: Work,
}

/// How a point runs in a lab.
#[derive(Debug, Clone)]
pub struct InLab {
    /// The point's spec as TOML: the lab's nodes read it from a file.
    pub spec: String,
    /// The length of the server's data frames (`DemoConfig::frame_bytes`); `None`: full size.
    pub frame_bytes: Option<u16>,
    /// UDP flows opened before the download (`DemoConfig::udp_flows`).
    pub udp_flows: u32,
}

impl Experiment {
    pub const ALL: [Experiment; 7] = [
        Experiment::StateSize,
        Experiment::Sharing,
        Experiment::NatThreads,
        Experiment::LatencyLoad,
        Experiment::ChainLength,
        Experiment::Replication,
        Experiment::Recovery,
    ];

    /// `name`'s experiments: one, or all of them for `all`.
    pub fn select(name: &str) -> Result<Vec<Experiment>, BenchError> {
        if name == "all" {
            return Ok(Experiment::ALL.to_vec());
        }
        Ok(vec![name.parse()?])
    }

    pub fn name(self) -> &'static str {
        match self {
            Experiment::StateSize => "state-size",
            Experiment::Sharing => "sharing",
            Experiment::NatThreads => "nat-threads",
            Experiment::LatencyLoad => "latency-load",
            Experiment::ChainLength => "chain-length",
            Experiment::Replication => "replication",
            Experiment::Recovery => "recovery",
        }
    }

    /// What it shows, and where in the thesis.
    pub fn title(self) -> &'static str {
        match self {
            Experiment::StateSize => "Throughput against state size, Ch-Gen (thesis Fig. 4.5)",
            Experiment::Sharing => "Throughput of a Monitor by sharing level (thesis Fig. 4.6)",
            Experiment::NatThreads => "Throughput of MazuNAT by threads (thesis Fig. 4.7)",
            Experiment::LatencyLoad => "Latency against offered load, Ch-Rec (thesis Fig. 4.8)",
            Experiment::ChainLength => {
                "Throughput and latency against chain length, Ch-2 … Ch-5 (thesis Figs. 4.9, 4.10)"
            }
            Experiment::Replication => "Ch-5 tolerating f = 1 … 4 failures (thesis Fig. 4.12)",
            Experiment::Recovery => {
                "Recovery of Ch-Rec's NAT server against flow count (thesis Fig. 4.13)"
            }
        }
    }

    /// What its plot shows and its table's ratios compare.
    pub fn headline(self) -> Headline {
        match self {
            Experiment::LatencyLoad => Headline::P99Latency,
            Experiment::Recovery => Headline::Recovery,
            _ => Headline::Throughput,
        }
    }

    /// What a reader of the figures must know.
    pub fn notes(self) -> &'static [&'static str] {
        match self {
            Experiment::StateSize => &[GEN_THREADS],
            Experiment::Sharing => &[
                "Worker threads per server as labelled: 2 unless `--threads` says more (the \
                 thesis uses 8; the machine's core count bounds what more threads can show). \
                 Sharing level L: every L threads share one counter (level 1: each thread its \
                 own); per-flow counters for contrast. FTMB's masters run as many lanes as FTC's heads, numbering \
                 their PAL messages from one counter; its loggers run one thread.",
                LANES_TAKE_FLOWS,
            ],
            Experiment::NatThreads => &[
                "Worker threads per server; FTC runs that many lanes at the NAT's server and at \
                 its replica-only successor, NF at the NAT's server (in a lab, whose exit is the \
                 successor's, also there, passing frames on); FTMB's master runs that many lanes \
                 (its loggers one thread each). Throughput can only grow with threads while \
                 cores are free: the chain's servers, the generator and the sink share this \
                 machine's cores.",
                LANES_TAKE_FLOWS,
            ],
            Experiment::LatencyLoad => &[
                "Offered loads are fractions of FTC's closed-loop throughput on Ch-Rec, measured \
                 just before (`saturation_pps`); every mode is offered the same load, with at \
                 most `window` packets in flight. A packet the chain held back (the window \
                 full, a server congested) counts its wait from when it was due, so a mode that \
                 falls behind counts its queue; the generator's own lateness on this shared \
                 machine is not counted. `p99_ratios` compare tail latencies.",
                SATURATED,
            ],
            Experiment::ChainLength => {
                &["Monitors run one worker thread (8 in the thesis), sharing level 1."]
            }
            Experiment::Replication => &[
                "FTC and NF only: the FTMB baselines have no f (one logger server per master). \
                 NF does not depend on f; it is run at every point as the reference.",
            ],
            Experiment::Recovery => &[
                RECOVERY_FTC_ONLY,
                "The NAT's server is killed half way through the traffic. The NAT holds one \
                 mapping per flow it saw before the kill, at most `flows`.",
                RECOVERY_PHASES,
            ],
        }
    }

    /// The points of a full or quick run.
    pub fn points(self, settings: &Settings) -> Result<Vec<Point>, BenchError> {
        let quick = settings.quick;
        let pick = |full: &'static [u64], few: &'static [u64]| if quick { few } else { full };
        let base = RunConfig {
            duration: settings.duration,
            ftmb: settings.ftmb(),
            ..RunConfig::default()
        };
        let compare = |modes: &[Mode]| Work::Compare {
            modes: modes.to_vec(),
            load: None,
        };
        let point = |params: Value, label: String, chain: Chain, config: RunConfig, work| {
            let Value::Object(params) = params else {
                unreachable!("parameters are a JSON object")
            };
            Point {
                experiment: self,
                params,
                label,
                spec: chain.spec,
                lab: InLab {
                    spec: chain.text,
                    frame_bytes: None,
                    udp_flows: 0,
                },
                config,
                work,
            }
        };
        let mut points = Vec::new();
        match self {
            Experiment::StateSize => {
                for &size in pick(&[128, 256, 512], &[128, 512]) {
                    for &state in pick(&[16, 64, 128, 256], &[16, 256]) {
                        let mut p = point(
                            json!({ "packet_size": size, "state_size": state }),
                            format!("{size}B pkt, {state}B state"),
                            chains::ch_gen(state as u32)?,
                            RunConfig {
                                size: size as usize,
                                ..base.clone()
                            },
                            compare(&Mode::ALL),
                        );
                        // In a lab, the client's MSS makes the server's data frames this long.
                        p.lab.frame_bytes = Some(size as u16);
                        points.push(p);
                    }
                }
            }
            Experiment::Sharing => {
                // `None`: per-flow counters. One thread, then every sharing level (powers of two)
                // on the most threads.
                let most = settings.threads.unwrap_or(2);
                let levels = doublings(most).map(Some).chain([None]);
                let one = (most > 1).then_some((Some(1), 1));
                let points_of = one.into_iter().chain(levels.map(|l| (l, most)));
                for (sharing, threads) in points_of {
                    let counters = if sharing.is_some() {
                        "shared"
                    } else {
                        "per-flow"
                    };
                    let level = sharing.map_or("per-flow".to_string(), |l| format!("level {l}"));
                    points.push(point(
                        json!({ "counters": counters, "sharing_level": sharing, "threads": threads }),
                        format!("{level}, {threads} thr"),
                        chains::monitor(sharing, threads)?,
                        base.clone(),
                        compare(&Mode::ALL),
                    ));
                }
            }
            Experiment::NatThreads => {
                let counts: Vec<u16> = match settings.threads {
                    None => pick(&[1, 2, 4], &[1, 2])
                        .iter()
                        .map(|&t| t as u16)
                        .collect(),
                    Some(most) if quick => {
                        doublings(most).filter(|&t| t == 1 || t == most).collect()
                    }
                    Some(most) => doublings(most).collect(),
                };
                for threads in counts {
                    let plural = if threads == 1 { "" } else { "s" };
                    points.push(point(
                        json!({ "threads": threads }),
                        format!("{threads} thread{plural}"),
                        chains::mazu_nat(threads)?,
                        base.clone(),
                        compare(&Mode::ALL),
                    ));
                }
            }
            Experiment::LatencyLoad => {
                for &percent in pick(&[10, 30, 50, 70, 90, 110], &[25, 50, 90]) {
                    let load = percent as f64 / 100.0;
                    points.push(point(
                        json!({ "load_fraction": load }),
                        format!("{percent}% load"),
                        chains::ch_rec()?,
                        base.clone(),
                        Work::Compare {
                            modes: Mode::ALL.to_vec(),
                            load: Some(load),
                        },
                    ));
                }
            }
            Experiment::ChainLength => {
                for &n in pick(&[2, 3, 4, 5], &[2, 5]) {
                    points.push(point(
                        json!({ "chain": format!("ch-{n}"), "middleboxes": n }),
                        format!("Ch-{n}"),
                        chains::ch_n(n as usize, 1)?,
                        base.clone(),
                        compare(&Mode::ALL),
                    ));
                }
            }
            Experiment::Replication => {
                for &f in pick(&[1, 2, 3, 4], &[1, 4]) {
                    let chain = chains::ch_n(5, f as u8)?;
                    points.push(point(
                        json!({ "chain": "ch-5", "f": f, "servers": chain.spec.ring().servers() }),
                        format!("f = {f}"),
                        chain,
                        base.clone(),
                        compare(&[Mode::Ftc, Mode::Nf]),
                    ));
                }
            }
            Experiment::Recovery => {
                // The NAT's 50,001 ports hold 40,000 mappings and the run's TCP connections.
                for &flows in pick(&[1_000, 10_000, 40_000], &[1_000, 10_000]) {
                    let chain = chains::ch_rec()?;
                    let kill = chains::nat_position(&chain.spec).expect("Ch-Rec has a NAT");
                    let mut p = point(
                        json!({ "chain": "ch-rec", "flows": flows, "killed_server": kill }),
                        format!("{}k flows", flows / 1000),
                        chain,
                        RunConfig {
                            flows: flows as u32,
                            ..base.clone()
                        },
                        Work::Recover { kill },
                    );
                    // In a lab, UDP flows opened before the download give the NAT its state.
                    p.lab.udp_flows = flows as u32;
                    points.push(p);
                }
            }
        }
        Ok(points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_names_are_refused() {
        for e in Experiment::ALL {
            assert_eq!(e.name().parse::<Experiment>().unwrap(), e);
        }
        assert_eq!(Experiment::select("all").unwrap().len(), 7);
        let err = Experiment::select("latency").unwrap_err().to_string();
        assert!(
            err.contains("`latency`") && err.contains("chain-length"),
            "{err}"
        );
    }

    #[test]
    fn every_experiment_has_points_with_valid_specs() {
        for quick in [true, false] {
            let settings = Settings::new(quick, None, None);
            for e in Experiment::ALL {
                let points = e.points(&settings).unwrap();
                assert!(!points.is_empty(), "{}", e.name());
                for p in points {
                    p.spec.validate().unwrap();
                    assert_eq!(p.config.duration, settings.duration);
                    let lab = ChainSpec::from_toml_str(&p.lab.spec, "lab spec").unwrap();
                    assert_eq!(lab, p.spec, "{} {}", e.name(), p.label);
                }
            }
        }
    }

    /// `--threads`: the thread experiments' points by default, and up to the number given.
    #[test]
    fn threads_set_the_thread_experiments_points() {
        let threads_of = |e: Experiment, quick: bool, most: Option<u16>| {
            let settings = Settings {
                threads: most,
                ..Settings::new(quick, None, None)
            };
            let points = e.points(&settings).unwrap();
            for p in &points {
                p.spec.validate().unwrap();
            }
            points
                .iter()
                .map(|p| (p.spec.middlebox[0].threads, p.label.clone()))
                .collect::<Vec<_>>()
        };
        let counts = |v: Vec<(u16, String)>| v.into_iter().map(|(t, _)| t).collect::<Vec<_>>();
        assert_eq!(
            counts(threads_of(Experiment::NatThreads, false, None)),
            [1, 2, 4]
        );
        assert_eq!(
            counts(threads_of(Experiment::NatThreads, true, None)),
            [1, 2]
        );
        assert_eq!(
            counts(threads_of(Experiment::NatThreads, false, Some(8))),
            [1, 2, 4, 8]
        );
        assert_eq!(
            counts(threads_of(Experiment::NatThreads, false, Some(6))),
            [1, 2, 4, 6]
        );
        assert_eq!(
            counts(threads_of(Experiment::NatThreads, true, Some(8))),
            [1, 8]
        );
        assert_eq!(
            counts(threads_of(Experiment::NatThreads, true, Some(1))),
            [1]
        );
        assert_eq!(threads_of(Experiment::Sharing, false, Some(1)).len(), 2);
        let labels = |v: Vec<(u16, String)>| v.into_iter().map(|(_, l)| l).collect::<Vec<_>>();
        assert_eq!(
            labels(threads_of(Experiment::Sharing, false, None)),
            [
                "level 1, 1 thr",
                "level 1, 2 thr",
                "level 2, 2 thr",
                "per-flow, 2 thr"
            ]
        );
        assert_eq!(
            labels(threads_of(Experiment::Sharing, false, Some(8))),
            [
                "level 1, 1 thr",
                "level 1, 8 thr",
                "level 2, 8 thr",
                "level 4, 8 thr",
                "level 8, 8 thr",
                "per-flow, 8 thr"
            ]
        );
    }
}
