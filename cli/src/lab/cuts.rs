//! `--cut` and `--isolate` of `ftc lab demo` and `ftc lab run`: links of the lab taken down for
//! a while ([`ftc_orchestrator::lab::cut`]), at a share of the download or a time of the run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use ftc_chain::spec::ChainSpec;
use ftc_node::Mode;
use ftc_orchestrator::lab::cut::{self, CutLink, Cuts, LabCut};
use ftc_orchestrator::lab::deploy::RunConfig;
use ftc_orchestrator::lab::topology::{LabName, Layout, Topology};

use super::Transport;
use crate::chaos::parse_when_down;

#[derive(Debug, clap::Args)]
pub struct CutArgs {
    /// Take the link between servers A and B (a veth pair; `ftc check` shows the ring) down at
    /// WHEN (`ftc lab demo`: once that share of the download has arrived, 0 to 1; `ftc lab
    /// run`: that many seconds after the chain is deployed) and up again DOWN seconds later
    /// (more than 0 and at most 10, default 0.5): nothing crosses it either way meanwhile.
    /// Repeat for more. Needs --transport xdp (over udp the servers' frames take the management
    /// network). In `ftc lab demo`, given without --kill, no server is killed.
    #[arg(long = "cut", value_name = "A-B@WHEN[+DOWN]")]
    pub cuts: Vec<String>,
    /// Cut server POSITION off the management network (its control connection and heartbeats)
    /// at WHEN (as for --cut) for DOWN seconds (more than 0 and at most 10, default 0.5): the
    /// orchestrator declares it failed and replaces it while it still serves, cut off (its
    /// frames are of the old epoch, which the others are fenced out of), and once its link is
    /// back it learns it was replaced and exits. Its replacement runs behind the same link in
    /// the lab, so it joins only then. Repeat for more. FTC only; in `ftc lab demo`, given
    /// without --kill, no server is killed.
    #[arg(long = "isolate", value_name = "POSITION@WHEN[+DOWN]")]
    pub isolations: Vec<String>,
}

impl CutArgs {
    /// The cuts, each checked against the lab `name` of `spec` in `mode` with `transport`;
    /// `when` is WHEN's (name, largest value, unit).
    pub fn parse(
        &self,
        (spec, name): (&ChainSpec, &LabName),
        (mode, transport): (Mode, Transport),
        when: (&str, f64, &str),
    ) -> anyhow::Result<Vec<LabCut>> {
        if mode != Mode::Ftc && !self.isolations.is_empty() {
            anyhow::bail!("--isolate needs --mode ftc: the baselines replace no server");
        }
        let topology = Topology::new(spec, Layout::of(mode), name.clone(), 0)?;
        let flagged = (self.cuts.iter().map(|t| ("--cut", t)))
            .chain(self.isolations.iter().map(|t| ("--isolate", t)));
        flagged
            .map(|(flag, text)| {
                let cut = parse_cut(flag, text, when)?;
                cut.check(&topology, Some(transport.edges()))
                    .map_err(|e| anyhow::anyhow!("{flag} {text:?}: {e}"))?;
                Ok(cut)
            })
            .collect()
    }
}

/// Parse `--cut`'s `A-B@WHEN[+DOWN]`, the link between servers A and B, or `--isolate`'s
/// `POSITION@WHEN[+DOWN]`, server POSITION's management link: down at WHEN (`when`'s name,
/// largest value and unit), for DOWN seconds (0.5 without it).
fn parse_cut(flag: &str, text: &str, when: (&str, f64, &str)) -> anyhow::Result<LabCut> {
    let form = match flag {
        "--cut" => "A-B@WHEN[+DOWN], e.g. 1-2@0.3+0.5",
        _ => "POSITION@WHEN[+DOWN], e.g. 1@0.3+2",
    };
    let bad = || anyhow::anyhow!("{flag} {text:?}: expected {form}");
    let (link, at) = text.split_once('@').ok_or_else(bad)?;
    let server = |s: &str| s.trim().parse::<u16>().map_err(|_| bad());
    let link = match flag {
        "--cut" => {
            let (a, b) = link.split_once('-').ok_or_else(bad)?;
            CutLink::Between(server(a)?, server(b)?)
        }
        _ => CutLink::Management(server(link)?),
    };
    let longest = cut::MAX_DOWN.as_secs_f64();
    let arg = format!("{flag} {text:?}");
    let (at, down) = parse_when_down(&arg, at, when, (CUT_DOWN, longest))?;
    Ok(LabCut { link, at, down })
}

/// How long a `--cut` or `--isolate` without `+DOWN` keeps its link down.
const CUT_DOWN: Duration = Duration::from_millis(500);

/// `ftc lab run`'s cuts in `config`'s lab, their times from the chain's deployment (the first
/// line on `deployed`) until `ended` is raised; each said as it ends, and those the run ended
/// before.
pub fn on_schedule(
    config: &RunConfig,
    cuts: &[LabCut],
    deployed: &Receiver<String>,
    ended: &AtomicBool,
) -> anyhow::Result<()> {
    let lab = &config.topology.name;
    let say = |c: &cut::Cut| {
        let s = |ms: u64| ms as f64 / 1e3;
        outln!(
            "ftc lab {lab}: cut {} at {:.2} s, for {:.2} s",
            c.what,
            s(c.at),
            c.down_s
        );
    };
    let mut cuts = Cuts::new(&config.topology, config.edges, cuts, 1e3)?;
    let start = loop {
        if ended.load(Ordering::Acquire) {
            return Ok(());
        }
        if deployed.recv_timeout(Duration::from_millis(50)).is_ok() {
            break Instant::now();
        }
    };
    let now = || start.elapsed().as_millis() as u64;
    let mut said = Vec::new();
    while !ended.load(Ordering::Acquire) {
        for c in cuts.poll(now())? {
            say(&c);
            said.push(c);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Those still down when the run ended come up now.
    let (made, missed) = cuts.finish(now())?;
    made.iter().filter(|c| !said.contains(c)).for_each(say);
    for (what, at) in missed {
        outln!(
            "ftc lab {lab}: {what} was not cut: the run ended before it was due ({:.2} s)",
            at as f64 / 1e3
        );
    }
    Ok(())
}
