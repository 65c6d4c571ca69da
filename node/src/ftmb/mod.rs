//! The FTMB baselines of DESIGN.md §9 (thesis §4.6): rollback recovery as FTMB (Sherry et al.
//! 2015) does it, re-implemented in the same runtime so that FTC's ratios to it are measured in
//! one build, on one transport, with the same middleboxes and stores.
//!
//! Per middlebox a **master** (M) and, on another server, its **input logger** (IL) and
//! **output logger** (OL): twice the servers of NF, as in the thesis. A packet through
//! middlebox i goes IL(i) (a copy kept) → M(i) (the packet transaction, then one PAL message
//! with an access per partition read or written, sent ahead of the packet) → OL(i) (the packet
//! waits until every PAL message it depends on arrived, and more: see below) → IL(i+1), or out
//! of the chain.
//! IL(i) and OL(i) share the logger server: three hops per middlebox, against one in NF.
//! Each of these servers is a [`Station`], driven as a [`crate::Server`] is: here a thread per
//! station over the in-memory transport. A master whose middlebox has `threads` above 1 runs
//! that many lanes, as FTC's heads do (flows hashed to lanes, one STM worker each); they number
//! their PAL messages from one [`PalNumbers`], each at its transaction's commit under its
//! locks, so that a packet that waits for every number taken when it committed waits for
//! the PALs of all it depends on. The output logger checks that order as the PALs arrive.
//!
//! That wait is coarser than FTMB's own rule, under which a packet waits only for the PALs it
//! depends on: here it waits for every PAL message numbered before it, including other lanes'
//! of transactions it does not depend on, which a lane sends only at the end of its batch.
//! With one lane that costs no wait (the lane's earlier PALs went out ahead of the packet).
//! With several, 0.1–2 % of packets reached their output logger ahead of a PAL they had to
//! wait for (`packets_waited`) in an audit's runs, and 0–7 % in one-second `ftc run --mode
//! ftmb` runs of a Monitor (2 lanes, sharing levels 1 and 2) and a MazuNAT (2 and 4 lanes) on
//! a 2-CPU VM under other load. At sharing level 1 the lanes share no state, so every such
//! wait is for PALs the packet does not depend on. The cost falls on the baseline: FTC/FTMB at
//! several threads errs in FTC's favour, by an amount not measured.
//!
//! **FTMB+snapshot** also stops each master periodically (default every 50 ms, masters
//! staggered over the period so their stalls do not overlap): either a real stop-the-world
//! copy of its store ([`ftc_stm::Store::export_into`], into a buffer the master keeps), or the
//! thesis's fixed 6 ms stall.
//!
//! Like the thesis's re-implementation this is a cost model of FTMB's normal operation: nothing
//! is recovered. A PAL message lost on a link (a test hook, or `ftc node --ring-loss`) is asked
//! for again; with nothing lost none is, since an output logger asks only once a PAL message is
//! [`ASK_AFTER_NS`] late, longer than the lanes' PALs trail packets that need them. Every
//! queue is bounded by the generator's window (packets in flight), and there is at most one
//! PAL message per packet.

mod logger;
mod master;
pub mod pal;
mod serve;
mod station;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use ftc_chain::ring::{Ring, ServerId};
use ftc_chain::spec::ChainSpec;

pub use logger::{
    Logger, LoggerStats, AHEAD_MAX, ASK_AFTER_NS, ASK_AGAIN_NS, GIVE_UP_NS, REACH_MAX,
};
pub use master::{Master, PalNumbers, Processed, PAL_RETAINED};
pub use pal::{PalError, PalHeader, FLAG_PAL, FLAG_PAL_RESEND};
pub use station::{Role, Schedule, SnapshotTally, Station};

use crate::runtime::{Harness, RunConfig, RunReport};
use crate::serve::{inboxes, Hops, Msg, Routes};
use crate::{Heads, Mode};
use serve::serve_station;

/// The stall the thesis adds per snapshot (from FTMB's paper).
pub const THESIS_STALL: Duration = Duration::from_millis(6);

/// What a master does at each snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// Stop processing and copy the whole state store (`real`).
    Real,
    /// Stop processing for a fixed time, as the thesis simulates snapshots (`stall-6ms`).
    Stall(Duration),
}

/// A snapshot kind that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown snapshot kind `{0}`: expected `real` or `stall-<N>ms` with N from 1 to 10000 (the thesis: `stall-6ms`)")]
pub struct BadSnapshotKind(String);

impl FromStr for SnapshotKind {
    type Err = BadSnapshotKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "real" {
            return Ok(SnapshotKind::Real);
        }
        s.strip_prefix("stall-")
            .and_then(|r| r.strip_suffix("ms"))
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| (1..=10_000).contains(n))
            .map(|n| SnapshotKind::Stall(Duration::from_millis(n)))
            .ok_or_else(|| BadSnapshotKind(s.to_string()))
    }
}

impl std::fmt::Display for SnapshotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotKind::Real => write!(f, "real"),
            SnapshotKind::Stall(d) => write!(f, "stall-{}ms", d.as_millis()),
        }
    }
}

/// As its name (`real`, `stall-6ms`), as bench results record it.
impl serde::Serialize for SnapshotKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Settings of the FTMB baselines.
#[derive(Debug, Clone)]
pub struct FtmbConfig {
    /// What a snapshot is (FTMB+snapshot only).
    pub snapshot: SnapshotKind,
    /// Time between a master's snapshots (FTMB+snapshot only).
    pub snapshot_every: Duration,
    /// Packets each input logger keeps (its slots are reused round-robin).
    pub input_log: usize,
    /// Packets an output logger holds at which it reports itself congested.
    pub max_held: usize,
    /// Test hook: masters send each packet ahead of its PAL message (output loggers must hold
    /// it). Never set it otherwise.
    #[doc(hidden)]
    pub pals_after_packet: bool,
    /// Test hook for the checker's teeth: output loggers release packets without waiting for
    /// their PALs. Never set it otherwise.
    #[doc(hidden)]
    pub release_without_pals: bool,
    /// Test hook: masters do not send every n-th PAL message (as if a link lost it; they keep
    /// it for resending). 0: they send all. Never set it otherwise.
    #[doc(hidden)]
    pub lose_pal_every: u64,
}

impl Default for FtmbConfig {
    fn default() -> Self {
        FtmbConfig {
            snapshot: SnapshotKind::Real,
            snapshot_every: Duration::from_millis(50),
            input_log: 4096,
            max_held: 4096,
            pals_after_packet: false,
            release_without_pals: false,
            lose_pal_every: 0,
        }
    }
}

/// The masters' snapshots in an FTMB+snapshot run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SnapshotReport {
    /// `real` or `stall-<N>ms`.
    pub kind: String,
    pub every_ms: f64,
    /// Snapshots taken by all masters, and by each (m0 first).
    pub taken: u64,
    pub per_master: Vec<u64>,
    /// How long masters stood still per snapshot, in microseconds.
    pub stall_mean_us: f64,
    pub stall_max_us: f64,
    /// Bytes of state copied by all snapshots together, in the stores' snapshot byte form (0
    /// for a fixed stall).
    pub bytes_copied: u64,
}

impl SnapshotReport {
    fn new(kind: SnapshotKind, every: Duration, tallies: &[SnapshotTally]) -> Self {
        let taken = tallies.iter().map(|t| t.taken).sum::<u64>();
        let total_ns = tallies.iter().map(|t| t.stall_total_ns).sum::<u64>();
        SnapshotReport {
            kind: kind.to_string(),
            every_ms: every.as_secs_f64() * 1e3,
            taken,
            per_master: tallies.iter().map(|t| t.taken).collect(),
            stall_mean_us: if taken == 0 {
                0.0
            } else {
                total_ns as f64 / taken as f64 / 1e3
            },
            stall_max_us: tallies.iter().map(|t| t.stall_max_ns).max().unwrap_or(0) as f64 / 1e3,
            bytes_copied: tallies.iter().map(|t| t.bytes).sum(),
        }
    }
}

/// Message buffers (PAL messages, PAL requirements) passed back from the loggers that read
/// them to the masters that write them, so that the hot path reuses them.
#[derive(Debug)]
struct Pool {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
}

impl Pool {
    fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(4096);
        Pool { tx, rx }
    }

    fn take(&self) -> Vec<u8> {
        self.rx.try_recv().unwrap_or_default()
    }

    fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() > 0 {
            buf.clear();
            let _ = self.tx.try_send(buf);
        }
    }
}

/// The logger server of middlebox `i`, and its master: 2i and 2i+1 (IL(0) takes the traffic).
fn logger_id(i: usize) -> ServerId {
    ServerId((2 * i) as u16)
}

fn master_id(i: usize) -> ServerId {
    ServerId((2 * i + 1) as u16)
}

/// The lanes of middlebox `i`'s master in a chain of `ring` over `heads`, one per worker of its
/// store, numbering their PAL messages from one [`PalNumbers`], each free to grow packets by
/// `headroom` bytes. With `snapshots` (FTMB+snapshot), master i first stops i/k of a period
/// after master 0, which stops a period after `now`: every lane stalls at once, and a real
/// copy is made once, by lane 0 (the others wait on the partition locks it holds meanwhile).
pub fn master_lanes<'h, P>(
    heads: &'h Heads,
    ring: &Ring,
    i: usize,
    headroom: usize,
    config: &FtmbConfig,
    snapshots: Option<SnapshotKind>,
    now: u64,
) -> Vec<Station<'h, P>> {
    let k = ring.middleboxes() as u64;
    let every = (config.snapshot_every.as_nanos() as u64).max(1);
    let schedule = snapshots.map(|kind| Schedule {
        kind,
        every_ns: every,
        first_at_ns: now + every + every * i as u64 / k,
    });
    let numbers = Arc::new(PalNumbers::default());
    heads
        .head_lanes(ring, ServerId(i as u16), 0)
        .into_iter()
        .enumerate()
        .map(|(lane, head)| {
            let head = head.expect("server i < k runs middlebox i");
            let schedule = schedule.filter(|s| lane == 0 || s.kind != SnapshotKind::Real);
            Station::master(head, headroom, Arc::clone(&numbers), config, schedule)
        })
        .collect()
}

/// Run `spec` in FTMB or FTMB+snapshot mode (as `config.mode` says) over `heads`, with
/// generated traffic, on the runtime's harness. A master runs as many lanes (threads) as its
/// store has workers, flows hashed to lanes as FTC's are; loggers run one.
pub fn run(spec: &ChainSpec, heads: &Heads, config: &RunConfig) -> RunReport {
    let ring = spec.ring();
    let k = ring.middleboxes();
    let harness = Harness::new();
    let shared = harness.shared(None);
    let pool = Pool::new();
    let snapshots = (config.mode == Mode::FtmbSnapshot).then_some(config.ftmb.snapshot);
    let mut report = RunReport {
        mode: Some(config.mode),
        chain: spec.chain.name.clone(),
        servers: 2 * k,
        ..RunReport::default()
    };
    // Per position, its station's lanes.
    let mut stations: Vec<Vec<Station<'_, u64>>> = Vec::with_capacity(2 * k);
    for i in 0..k {
        let (headroom, now) = (config.server.headroom, harness.now());
        stations.push(vec![Station::logger(i, k, &config.ftmb)]);
        stations.push(master_lanes(
            heads,
            &ring,
            i,
            headroom,
            &config.ftmb,
            snapshots,
            now,
        ));
    }
    let (hops, rxs): (Hops, Vec<_>) = stations.iter().map(|lanes| inboxes(lanes.len())).unzip();
    let routes = Routes::with_lanes(hops);
    std::thread::scope(|scope| {
        let threads: Vec<_> = stations
            .into_iter()
            .zip(rxs)
            .flat_map(|(lanes, rxs)| {
                let several = lanes.len() > 1;
                lanes
                    .into_iter()
                    .zip(rxs)
                    .enumerate()
                    .map(move |(lane, (s, rx))| {
                        let name = match several {
                            true => format!("{} lane {lane}", s.name()),
                            false => s.name(),
                        };
                        (lane, name, s, rx)
                    })
            })
            .map(|(lane, name, station, rx)| {
                let (station, hops, shared) = (station.with_pool(&pool), routes.all(), &shared);
                let h = scope.spawn(move || serve_station(station, name, &rx, &hops, shared));
                (lane, h)
            })
            .collect();
        let elapsed = harness.drive(config, &routes, Duration::from_secs(5), &mut report);
        for tx in routes.every() {
            let _ = tx.send(Msg::Stop);
        }
        let mut sinks = Vec::with_capacity(2 * k);
        let mut stats = LoggerStats::default();
        let mut tallies = Vec::with_capacity(k);
        for (lane, h) in threads {
            let (station, sink) = h.join().expect("an FTMB station's thread panicked");
            if let Some(s) = station.logger_stats() {
                stats.add(s);
            }
            // A master's lanes stall together: its first lane's tally is the master's.
            tallies.extend(station.snapshots().filter(|_| lane == 0));
            sinks.push(sink);
        }
        report.account(heads, sinks, elapsed);
        report.ftmb = Some(stats);
        report.snapshots =
            snapshots.map(|kind| SnapshotReport::new(kind, config.ftmb.snapshot_every, &tallies));
    });
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_kinds_parse_and_print() {
        assert_eq!("real".parse(), Ok(SnapshotKind::Real));
        assert_eq!("stall-6ms".parse(), Ok(SnapshotKind::Stall(THESIS_STALL)));
        assert_eq!(SnapshotKind::Stall(THESIS_STALL).to_string(), "stall-6ms");
        for bad in ["", "stall", "stall-0ms", "stall-6", "stall-6s", "fork"] {
            assert!(bad.parse::<SnapshotKind>().is_err(), "{bad}");
        }
    }
}
