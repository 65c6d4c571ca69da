//! ftc-bench: FTC side by side with NF, FTMB and FTMB+snapshot over the in-memory transport, in
//! the experiments of thesis §4.6 (figures 4.5–4.13): every point runs each mode in alternation,
//! the medians and their ratios go out as Markdown tables, one JSON file and SVG plots. Every
//! experiment also runs in a namespace lab over AF_XDP ([`lab`]).

pub mod experiment;
pub mod files;
pub mod guard;
pub mod lab;
pub mod markdown;
pub mod plot;
pub mod progress;
pub mod results;
pub mod runner;
pub mod saturation;
pub mod stats;

mod chains;

use std::time::Duration;

use ftc_node::ftmb::{FtmbConfig, SnapshotKind};

pub use experiment::{Experiment, Point, Work};
pub use results::{ExperimentInfo, PointResult, Results};
pub use runner::run;

/// How long and how often to measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Fewer points and short runs, one round: a smoke run of every experiment.
    pub quick: bool,
    /// Runs of each mode per point (in alternation); the medians are reported.
    pub rounds: usize,
    /// Seconds of traffic per run.
    pub duration: Duration,
    /// The orchestrator's heartbeat period in the recovery experiment (3 missed declare a
    /// server failed): 5 ms, the recovery goal's, unless set.
    pub heartbeat: Duration,
    /// What FTMB+snapshot's snapshots are: real copies of each master's store (the default), or
    /// the thesis's fixed stall (`stall-6ms`).
    pub snapshot: SnapshotKind,
    /// The most worker threads per server of the experiments that vary threads (`sharing`,
    /// `nat-threads`); `None`: their defaults, sized for a small machine.
    pub threads: Option<u16>,
}

impl Settings {
    /// Rounds and duration of a full run.
    pub const FULL: (usize, Duration) = (3, Duration::from_secs(2));
    /// Rounds and duration of a `--quick` run.
    pub const QUICK: (usize, Duration) = (1, Duration::from_millis(300));
    /// The heartbeat period of the recovery experiment by default.
    pub const HEARTBEAT: Duration = Duration::from_millis(5);

    /// FTMB's settings for this run: its snapshot kind, the rest as by default.
    pub fn ftmb(&self) -> FtmbConfig {
        FtmbConfig {
            snapshot: self.snapshot,
            ..FtmbConfig::default()
        }
    }

    /// The defaults of a quick or full run, with what the caller overrides.
    pub fn new(quick: bool, rounds: Option<usize>, duration: Option<Duration>) -> Self {
        let (r, d) = if quick { Self::QUICK } else { Self::FULL };
        Settings {
            quick,
            rounds: rounds.unwrap_or(r),
            duration: duration.unwrap_or(d),
            heartbeat: Self::HEARTBEAT,
            snapshot: SnapshotKind::Real,
            threads: None,
        }
    }
}

/// Why a benchmark could not run or write its results.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("unknown experiment `{0}`: expected one of {names}, all", names = experiment::names())]
    UnknownExperiment(String),
    #[error("a built-in chain spec: {0}")]
    Spec(#[from] ftc_chain::spec::SpecError),
    #[error("drawing the plot of {experiment}: {message}")]
    Plot {
        experiment: &'static str,
        message: String,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("encoding the results as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the lab: {0}")]
    Lab(String),
}
