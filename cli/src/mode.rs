//! `--mode`: what a chain runs as, the same choice for `ftc run`, `ftc node`,
//! `ftc orchestrator` and `ftc lab`, and the snapshot settings of FTMB+snapshot.

use std::time::Duration;

use ftc_node::ftmb::{FtmbConfig, SnapshotKind};
use ftc_node::Mode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Fault tolerant: piggyback logs, replicas, the buffer's release rule.
    Ftc,
    /// No fault tolerance: the same middleboxes, nothing else (the baseline).
    Nf,
    /// FTMB: per middlebox a master and a logger server (input and output logger), packet
    /// access logs (twice NF's servers).
    Ftmb,
    /// FTMB with periodic stop-the-world snapshots of each master (real copies of its store,
    /// or fixed stalls: `--snapshot` where the command runs the nodes).
    FtmbSnapshot,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Mode {
        match mode {
            ModeArg::Ftc => Mode::Ftc,
            ModeArg::Nf => Mode::Nf,
            ModeArg::Ftmb => Mode::Ftmb,
            ModeArg::FtmbSnapshot => Mode::FtmbSnapshot,
        }
    }
}

/// The snapshots of `--mode ftmb-snapshot`.
#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotArgs {
    /// With --mode ftmb-snapshot: what a snapshot is, `real` (copy the master's store) or
    /// `stall-<N>ms` (stand still N ms, 1 to 10000 and less than --snapshot-every-ms, as the
    /// thesis simulates it: `stall-6ms`). Default: real.
    #[arg(long)]
    pub snapshot: Option<SnapshotKind>,
    /// With --mode ftmb-snapshot: milliseconds between a master's snapshots, 1 to 60000.
    /// Default: 50.
    #[arg(long)]
    pub snapshot_every_ms: Option<u64>,
}

impl SnapshotArgs {
    /// The FTMB settings for `mode`, refusing snapshot options for another mode.
    pub fn config(&self, mode: Mode) -> anyhow::Result<FtmbConfig> {
        if mode != Mode::FtmbSnapshot
            && (self.snapshot.is_some() || self.snapshot_every_ms.is_some())
        {
            anyhow::bail!("--snapshot and --snapshot-every-ms apply to --mode ftmb-snapshot only");
        }
        let defaults = FtmbConfig::default();
        let snapshot_every = match self.snapshot_every_ms {
            Some(ms) if !(1..=60_000).contains(&ms) => {
                anyhow::bail!("--snapshot-every-ms must be between 1 and 60000")
            }
            Some(ms) => Duration::from_millis(ms),
            None => defaults.snapshot_every,
        };
        let config = FtmbConfig {
            snapshot: self.snapshot.unwrap_or(defaults.snapshot),
            snapshot_every,
            ..defaults
        };
        check_stall(&config, "--snapshot-every-ms")?;
        Ok(config)
    }
}

/// Refuses `config`'s snapshots when they are stalls as long as the period between them or
/// longer, which leave the masters no time to run; `period` names what set the period.
pub fn check_stall(config: &FtmbConfig, period: &str) -> anyhow::Result<()> {
    match config.snapshot {
        SnapshotKind::Stall(stall) if stall >= config.snapshot_every => anyhow::bail!(
            "a stall of {} ms every {} ms leaves the masters no time to run: --snapshot \
             stall-<N>ms must be shorter than {period}",
            stall.as_millis(),
            config.snapshot_every.as_millis()
        ),
        _ => Ok(()),
    }
}
