//! The in-process runtime: a whole chain in one process, a thread per lane (worker thread, as
//! many as the spec's `threads`) of each server, frames over an
//! in-memory transport (crossbeam channels), a traffic generator at the ingress and a sink at
//! the egress that measures latency. This is what `ftc run` drives; the FTMB baselines run in
//! [`crate::ftmb`] on the same harness.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ftc_chain::middlebox::Direction;
use ftc_chain::ring::{Ring, ServerId};
use ftc_chain::spec::ChainSpec;
use ftc_stm::Seq;
use hdrhistogram::Histogram;

use crate::bursts::Bursts;
use crate::ftmb::{FtmbConfig, LoggerStats, SnapshotReport};
use crate::serve::{inboxes, serve, Beat, Ended, Hops, Msg, Routes, Shared, Sink};
use crate::traffic::request;
use crate::{Heads, Mode, Packet, Server, ServerConfig};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub mode: Mode,
    pub duration: Duration,
    /// Packets per second offered; `None`: as fast as the chain takes them (closed loop).
    pub rate: Option<u64>,
    pub flows: u32,
    /// Customer frame size in bytes (Ethernet, without FCS).
    pub size: usize,
    /// Packets in flight at most (closed loop and a bound on memory).
    pub window: u64,
    /// Stop offering traffic after this many packets (or at the end of `duration`, if sooner).
    pub packets: Option<u64>,
    pub server: ServerConfig,
    /// The FTMB baselines' settings (modes `Ftmb` and `FtmbSnapshot`).
    pub ftmb: FtmbConfig,
    /// How long the chain may release nothing while the generator waits for it (its window
    /// full, or a server congested) before the run calls it stalled: the generator stops, and
    /// the report says so among its violations. Without it a stalled chain (a bug) held the
    /// generator until the end of `duration`, up to an hour.
    pub stall: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            mode: Mode::Ftc,
            duration: Duration::from_secs(2),
            rate: None,
            flows: 64,
            size: 256,
            window: 512,
            packets: None,
            // The servers are threads of this process: their frames are trusted.
            server: ServerConfig {
                trusted_frames: true,
                ..ServerConfig::default()
            },
            ftmb: FtmbConfig::default(),
            stall: Duration::from_secs(10),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// The percentiles of `hist`, a histogram of nanoseconds.
    pub fn of(hist: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            p50: us(hist.value_at_quantile(0.5)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            max: us(hist.max()),
        }
    }
}

/// The protocol's traffic between servers over a run, summed over the servers that stopped
/// (FTC mode): how the wrapping groups' logs came back into the chain, and what loss cost.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FrameCounts {
    /// Frames the servers handled, every hop counted (customer and propagating frames).
    pub handled: u64,
    /// Return frames from the buffer to the forwarder (the ring-closing link).
    pub returns: u64,
    /// Logs the buffer returned.
    pub logs_returned: u64,
    /// Logs the forwarder put on customer frames.
    pub logs_attached: u64,
    /// Propagating frames the forwarder sent, and the logs in them.
    pub propagating: u64,
    pub logs_propagated: u64,
    /// Commit vectors the tail on server 0 sent straight back to the buffer's server.
    pub direct_commit_vectors: u64,
    /// Logs the replicas applied, and duplicates they skipped.
    pub logs_applied: u64,
    pub duplicates: u64,
    /// Retransmission requests sent, and logs sent again in answers or resends.
    pub retransmit_requests: u64,
    pub logs_resent: u64,
}

impl FrameCounts {
    /// Add what `server` counted.
    fn add(&mut self, server: &Server<'_, u64>) {
        self.handled += server.stats().frames;
        if let Some(b) = server.buffer() {
            self.returns += b.stats().return_messages;
            self.logs_returned += b.stats().logs_returned;
        }
        if let Some(f) = server.forwarder() {
            self.logs_attached += f.stats().logs_attached;
            self.propagating += f.stats().propagating_frames;
            self.logs_propagated += f.stats().logs_propagated;
        }
        if let Some(r) = server.replica() {
            let s = r.stats();
            self.direct_commit_vectors += s.direct_commit_vectors;
            self.logs_applied += s.applied;
            self.duplicates += s.duplicates;
            self.retransmit_requests += s.requests_sent;
            self.logs_resent += s.logs_retransmitted + s.logs_resent;
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RunReport {
    pub mode: Option<Mode>,
    pub chain: String,
    pub servers: usize,
    pub duration_s: f64,
    pub packets_sent: u64,
    pub packets_released: u64,
    /// Packets lost: to failures (in flight or held when a recovery fenced the old epoch), or
    /// to a server's bounds (its hold queue, its retained logs…).
    pub packets_lost: u64,
    /// Lost packets by why (`"with a failed server"`, `"fenced"`, `"retained logs at their
    /// limit"` …).
    pub packets_lost_why: std::collections::BTreeMap<String, u64>,
    /// Dropped packets by reason (`"m1 firewall"` …).
    pub packets_dropped: std::collections::BTreeMap<String, u64>,
    pub throughput_pps: f64,
    pub latency_us: Latency,
    pub buffer_mean_hold_us: f64,
    pub frames_held: u64,
    /// What moved between the servers besides customer packets (FTC mode; zeros in NF).
    pub frames: FrameCounts,
    /// The FTMB modes: what the loggers logged, over all middleboxes.
    pub ftmb: Option<LoggerStats>,
    /// FTMB+snapshot: the masters' snapshots.
    pub snapshots: Option<SnapshotReport>,
    /// Each server thread's share of the run spent on batches ([`Sink::busy_ns`]), in thread
    /// order. The busiest sets the chain's pace once it nears 1.
    pub busy: Vec<ThreadBusy>,
    /// CPU time the whole process spent from the run's start to the end of its traffic and
    /// drain, in seconds: every thread (servers, generator and sink, an orchestrator). The
    /// bench's lab runs put the whole machine's over the download here (`ftc lab demo`'s
    /// `machine_cpu_s`). `None` where nothing measured it.
    pub cpu_s: Option<f64>,
    /// [`RunReport::cpu_s`] per packet released, in microseconds: what a packet cost this
    /// machine, whatever the threads waited for each other.
    pub cpu_us_per_packet: Option<f64>,
    pub violations: Vec<String>,
}

/// How busy one server thread was over a run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ThreadBusy {
    pub thread: String,
    /// Time spent on batches over the run's time, 0 to 1.
    pub busy: f64,
}

impl RunReport {
    /// The busiest server thread, if any ran.
    pub fn busiest(&self) -> Option<&ThreadBusy> {
        self.busy.iter().max_by(|a, b| a.busy.total_cmp(&b.busy))
    }
}

/// Run `spec` in this process with generated traffic.
pub fn run_chain(spec: &ChainSpec, config: &RunConfig) -> RunReport {
    let heads = Heads::new(spec, |m| m.threads).expect("a valid spec gives valid stores");
    run_chain_on(spec, &heads, config)
}

/// [`run_chain`] over `heads`, the chain's middleboxes and stores (fresh from [`Heads::new`]),
/// which hold the middleboxes' state when it returns.
pub fn run_chain_on(spec: &ChainSpec, heads: &Heads, config: &RunConfig) -> RunReport {
    if config.mode.is_ftmb() {
        return crate::ftmb::run(spec, heads, config);
    }
    let ring = spec.ring();
    let (lanes, hops) = mode_lanes(spec, heads, config.mode, &config.server);
    let servers = hops.len();
    let harness = Harness::new();
    let routes = Routes::with_lanes(hops);
    let shared = harness.shared(None);
    let mut report = RunReport {
        mode: Some(config.mode),
        chain: spec.chain.name.clone(),
        servers,
        ..RunReport::default()
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = lanes
            .into_iter()
            .map(|(server, rx)| {
                let (routes, shared) = (routes.all(), &shared);
                scope.spawn(move || serve(server, &rx, routes, 0, shared))
            })
            .collect();
        let elapsed = harness.drive(config, &routes, Duration::from_secs(5), &mut report);
        for tx in routes.every() {
            let _ = tx.send(Msg::Stop);
        }
        let ended = handles
            .into_iter()
            .map(|h| h.join().expect("a server thread panicked"))
            .collect();
        report.finish(&ring, heads, ended, elapsed);
    });
    report
}

/// The lanes, with their inboxes, of the servers `mode` runs `spec` on over `heads` (every server
/// of the ring under FTC, the middleboxes' servers under NF), configured by `config` in that
/// mode; and the hops that reach them.
pub fn mode_lanes<'h>(
    spec: &ChainSpec,
    heads: &'h Heads,
    mode: Mode,
    config: &ServerConfig,
) -> (Vec<Inboxed<'h>>, Hops) {
    let ring = spec.ring();
    let servers = if mode == Mode::Ftc {
        ring.servers()
    } else {
        ring.middleboxes()
    };
    let config = ServerConfig {
        mode,
        ..config.clone()
    };
    chain_lanes(ring, servers, spec.chain.partitions, heads, &config)
}

/// A lane and the inbox it reads.
pub type Inboxed<'h> = (Server<'h, u64>, Receiver<Msg>);

/// Fresh lanes of the first `servers` servers of `ring` over `heads` (as many lanes as each
/// server's `threads`), each with its inbox, in server order; and the hops that reach them.
pub fn chain_lanes<'h>(
    ring: Ring,
    servers: usize,
    partitions: u32,
    heads: &'h Heads,
    config: &ServerConfig,
) -> (Vec<Inboxed<'h>>, Hops) {
    let mut all = Vec::new();
    let mut hops = Vec::with_capacity(servers);
    for me in (0..servers).map(|i| ServerId(i as u16)) {
        let heads = heads.head_lanes(&ring, me, 0);
        let lanes =
            crate::lanes::lanes(ring, me, partitions, heads, config).expect("valid partitions");
        let (txs, rxs) = inboxes(lanes.len());
        hops.push(txs);
        all.extend(lanes.into_iter().zip(rxs));
    }
    (all, hops)
}

/// The clock, the generator's channels and the congestion count of a run.
#[derive(Debug)]
pub struct Harness {
    start: Instant,
    /// The process's CPU time at `start`, nanoseconds.
    cpu_start: u64,
    recycle: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
    credit: (Sender<u64>, Receiver<u64>),
    congested: AtomicUsize,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        Harness {
            cpu_start: process_cpu_ns(),
            start: Instant::now(),
            recycle: crossbeam_channel::unbounded(),
            credit: crossbeam_channel::unbounded(),
            congested: AtomicUsize::new(0),
        }
    }

    /// Nanoseconds since the run began.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// What the server threads share, with heartbeats if given.
    pub fn shared(
        &self,
        heartbeat: Option<(Duration, Sender<Beat>)>,
    ) -> Shared<'_, impl Fn() -> u64 + Clone + '_> {
        Shared {
            recycle: self.recycle.0.clone(),
            credit: self.credit.0.clone(),
            congested: &self.congested,
            now: move || self.now(),
            heartbeat,
            flows: None,
            commits: None,
        }
    }

    /// Offer traffic for the configured duration, then let what is in flight leave (up to
    /// `drain`) and the replicas settle; the seconds of the run, and `packets_sent` and
    /// `cpu_s` set. A chain that stalls ([`RunConfig::stall`]) ends the traffic early, with a
    /// violation saying so.
    pub fn drive(
        &self,
        config: &RunConfig,
        routes: &Routes,
        drain: Duration,
        report: &mut RunReport,
    ) -> f64 {
        let (sent, mut done, stalled) = generate(
            config,
            routes,
            &self.recycle.1,
            &self.credit.1,
            &self.congested,
            || self.now(),
        );
        report.packets_sent = sent;
        if stalled {
            report.violations.push(format!(
                "the chain released nothing for {:?} while {} packets were in flight: it \
                 stalled, and its traffic stopped {:.1} s into the run",
                config.stall,
                sent - done,
                self.start.elapsed().as_secs_f64()
            ));
        }
        let deadline = Instant::now() + drain;
        while done < sent {
            match self.credit.1.recv_deadline(deadline) {
                Ok(n) => done += n,
                Err(_) => break,
            }
        }
        let elapsed = self.start.elapsed().as_secs_f64();
        report.cpu_s = Some(process_cpu_ns().saturating_sub(self.cpu_start) as f64 / 1e9);
        std::thread::sleep(Duration::from_millis(50));
        elapsed
    }
}

/// CPU time this process has spent so far, all threads, in nanoseconds.
fn process_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to; the clock id is a constant Linux has.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "CLOCK_PROCESS_CPUTIME_ID is always there on Linux");
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl RunReport {
    /// Fold in what the server threads measured, and check: every packet accounted for, every
    /// live replica equal to its head.
    pub fn finish(
        &mut self,
        ring: &Ring,
        heads: &Heads,
        ended: Vec<(Ended<'_>, Sink)>,
        elapsed: f64,
    ) {
        let mut sinks = Vec::with_capacity(ended.len());
        let (mut hold_ns, mut held) = (0u64, 0u64);
        for (end, sink) in ended {
            sinks.push(sink);
            let Ended::Stopped(server) = end else {
                continue;
            };
            let i = server.id();
            self.frames_held += server.stats().held;
            if self.mode == Some(Mode::Ftc) {
                self.frames.add(&server);
            }
            if let Some(b) = server.buffer() {
                hold_ns = hold_ns.saturating_add(b.stats().total_hold_ns);
                held += b.stats().released;
            }
            if let Some(e) = server.error() {
                self.violations.push(e.to_string());
            }
            if let Some(r) = server.replica() {
                for mb in ring.replicated_by(i) {
                    let (head, copy) = (
                        &heads.stores[usize::from(mb.0)],
                        r.store(mb).expect("members keep stores"),
                    );
                    let (hv, cv) = (head.vector(), copy.vector());
                    if hv != cv || head.to_map() != copy.to_map() {
                        self.violations.push(format!(
                            "replica of m{} on server {} differs from its head after the run ({})",
                            mb.0,
                            i.0,
                            vector_difference(&hv, &cv)
                        ));
                    }
                }
            }
        }
        if let Some(mean) = hold_ns.checked_div(held) {
            self.buffer_mean_hold_us = mean as f64 / 1000.0;
        }
        self.account(heads, sinks, elapsed);
    }

    /// Fold in what the threads' sinks measured over `elapsed` seconds, and check that every
    /// packet sent is accounted for.
    pub fn account(&mut self, heads: &Heads, sinks: Vec<Sink>, elapsed: f64) {
        let mut hist = Histogram::<u64>::new(3).expect("3 significant figures");
        for sink in sinks {
            self.busy.push(ThreadBusy {
                busy: sink.busy_ns as f64 / 1e9 / elapsed.max(f64::MIN_POSITIVE),
                thread: sink.thread,
            });
            hist.add(&sink.latency).expect("same histogram bounds");
            self.packets_released += sink.released;
            for (why, n) in sink.lost {
                self.packets_lost += n;
                *self.packets_lost_why.entry(why.to_string()).or_default() += n;
            }
            self.violations.extend(sink.violations);
            for (mb, n) in sink.dropped {
                let kind = heads.middleboxes[usize::from(mb.0)].kind();
                *self
                    .packets_dropped
                    .entry(format!("m{} {kind}", mb.0))
                    .or_default() += n;
            }
        }
        let dropped: u64 = self.packets_dropped.values().sum();
        let accounted = self.packets_released + self.packets_lost + dropped;
        if accounted != self.packets_sent {
            self.violations.push(format!(
                "{} packets sent, {} released, {} lost, {dropped} dropped by middleboxes: {} unaccounted for",
                self.packets_sent,
                self.packets_released,
                self.packets_lost,
                self.packets_sent as i64 - accounted as i64
            ));
        }
        self.duration_s = elapsed;
        self.throughput_pps = self.packets_released as f64 / elapsed;
        self.cpu_us_per_packet = self
            .cpu_s
            .filter(|_| self.packets_released > 0)
            .map(|s| s * 1e6 / self.packets_released as f64);
        self.latency_us = Latency::of(&hist);
    }
}

/// Flows whose frame the generator makes once.
const TEMPLATES: u32 = 1 << 16;

/// Offer traffic to server 0 for the configured duration; returns the packets sent and how many
/// of them have left the chain so far. Server 0 is looked up again whenever `routes` change (a
/// recovery replaced it).
fn generate(
    config: &RunConfig,
    routes: &Routes,
    recycle: &Receiver<Vec<u8>>,
    credits: &Receiver<u64>,
    congested: &AtomicUsize,
    now: impl Fn() -> u64,
) -> (u64, u64, bool) {
    // The first flows' frames are made once; any beyond, per packet (memory stays bounded
    // whatever `flows` is).
    let flows = config.flows.max(1);
    let templates: Vec<Vec<u8>> = (0..flows.min(TEMPLATES))
        .map(|f| request(f, 1, config.size))
        .collect();
    let stop_at = now() + config.duration.as_nanos() as u64;
    let mut pacer = Pacer::new(config.rate, now());
    // Packets made (some may wait in a burst, `bursts` counts those sent) and left.
    let (mut made, mut done) = (0u64, 0u64);
    // Handles are the times latencies start from, made unique: checks key packets by them.
    let mut last_handle = 0;
    let (mut version, mut ingress) = (routes.version(), routes.lanes(0));
    let mut bursts = Bursts::default();
    let stall = config.stall.as_nanos() as u64;
    // When a packet last left, or the run began: the chain stalled once that is `stall` ago.
    let mut left_at = now();
    let mut stalled = false;
    loop {
        let t = now();
        let before = done;
        done += credits.try_iter().sum::<u64>();
        if done > before {
            left_at = t;
        }
        if t >= stop_at || config.packets.is_some_and(|n| made >= n) {
            break;
        }
        // Waiting below for packets to leave, no longer than this.
        let patience = (stop_at - t).min(left_at.saturating_add(stall).saturating_sub(t));
        // A full window, or a congested server, waits for packets to leave: blocking gives the
        // core to the servers. What waits in bursts goes first.
        let full = bursts.sent() - done >= config.window;
        if (full || congested.load(Ordering::Acquire) > 0) && bursts.flush(&ingress).is_err() {
            break;
        }
        let waiting = bursts.sent() - done >= config.window;
        if waiting || congested.load(Ordering::Acquire) > 0 {
            if patience == 0 {
                stalled = true;
                break;
            }
            pacer.hold(t);
            // Congested, looked at again every millisecond: a recovery may end with nothing
            // in flight.
            let wait = if waiting {
                patience
            } else {
                patience.min(1_000_000)
            };
            if let Ok(n) = credits.recv_timeout(Duration::from_nanos(wait)) {
                done += n;
                left_at = now();
            }
            continue;
        }
        let start = match pacer.next(t) {
            Ok(start) => start,
            Err(due) => {
                // Until the next packet is due; a millisecond at most, so that the end of the
                // run and congestion are seen in time. (Capped at 50 µs, a slow rate woke the
                // generator 20,000 times a second: at 1,000 packets/s on Ch-2 the run took
                // 0.42-0.45 CPU-s in 2 s against 0.17-0.18 now; bench/RESULTS.md, session 32.)
                std::thread::sleep(Duration::from_nanos((due - t).min(1_000_000)));
                continue;
            }
        };
        let flow = (made % u64::from(flows)) as u32;
        let mut bytes = recycle.try_recv().unwrap_or_default();
        bytes.clear();
        match templates.get(flow as usize) {
            Some(frame) => bytes.extend_from_slice(frame),
            None => bytes.extend_from_slice(&request(flow, 1, config.size)),
        }
        last_handle = start.max(last_handle + 1);
        let packet = Packet {
            handle: last_handle,
            flow: u64::from(flow),
            dir: Direction::Outbound,
            bytes,
        };
        if routes.version() != version {
            version = routes.version();
            ingress = routes.lanes(0);
        }
        made += 1;
        // Paced traffic leaves as made; flat out, in bursts per lane.
        let mut pushed = bursts.push(&ingress, packet);
        if pacer.paced() {
            pushed = pushed.and_then(|()| bursts.flush(&ingress));
        }
        if pushed.is_err() {
            // Server 0 is gone for good (the run is ending).
            break;
        }
    }
    let _ = bursts.flush(&ingress);
    (bursts.sent(), done, stalled)
}

/// When the generator's packets are due, and when their latencies start. Paced, one is due
/// every `1 / rate` from the start. A packet the chain held back (the window full of packets
/// not yet released, or a server congested) counts the wait, from its due time or from when the
/// hold began if later: it would have waited at a real ingress (else a chain that falls behind
/// its offered load hides its queue: coordinated omission). A packet the generator sent late
/// for its own reasons (its thread not scheduled on this shared machine, its sleep's slack)
/// starts when sent: a real source's packets arrive whatever the chain does with the cores.
/// Flat out, a packet's latency starts when it is made.
#[derive(Debug)]
struct Pacer {
    /// Nanoseconds between packets; `None`: flat out.
    interval: Option<u64>,
    next_at: u64,
    /// When the chain began holding the generator back, until it caught up with its schedule.
    held_since: Option<u64>,
}

impl Pacer {
    /// `rate` packets per second (`None`: flat out) from `start`, nanoseconds.
    fn new(rate: Option<u64>, start: u64) -> Self {
        Pacer {
            interval: rate.map(|r| 1_000_000_000 / r.max(1)),
            next_at: start,
            held_since: None,
        }
    }

    fn paced(&self) -> bool {
        self.interval.is_some()
    }

    /// The chain holds the generator back at `t`.
    fn hold(&mut self, t: u64) {
        if self.paced() {
            self.held_since.get_or_insert(t);
        }
    }

    /// At `t`: when the latency of the next packet starts, now that one may go; or, paced and
    /// none due yet (the generator caught up), `Err` of when the next is due.
    fn next(&mut self, t: u64) -> Result<u64, u64> {
        match self.interval {
            None => Ok(t),
            Some(_) if t < self.next_at => {
                self.held_since = None;
                Err(self.next_at)
            }
            Some(interval) => {
                let due = self.next_at;
                self.next_at += interval;
                Ok(self.held_since.map_or(t, |held| due.max(held)))
            }
        }
    }
}

/// How many logs a replica whose vector is `copy` lacks against its head's `head`: what it
/// lags by, summed over the partitions (0 where it is not behind).
pub fn logs_behind(head: &[Seq], copy: &[Seq]) -> u64 {
    head.iter()
        .zip(copy)
        .map(|(h, c)| h.0.saturating_sub(c.0))
        .sum()
}

/// Where a replica's vector `copy` differs from its head's `head`: the first partition that
/// does and how many do, or that the vectors agree (and so the entries differ).
pub fn vector_difference(head: &[Seq], copy: &[Seq]) -> String {
    let mut differ = head
        .iter()
        .zip(copy)
        .enumerate()
        .filter(|(_, (h, c))| h != c);
    match differ.next() {
        None => "equal vectors, different entries".to_string(),
        Some((p, (h, c))) => format!(
            "partition {p} at {} in the head, {} here; {} partitions differ",
            h.0,
            c.0,
            1 + differ.count()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A paced packet the chain held back counts the wait, from its due time or the hold's
    /// start; one the generator sent late for its own reasons starts when sent. Flat out, a
    /// packet's latency starts when it goes.
    #[test]
    fn paced_latencies_count_the_chain_s_holds_not_the_generator_s_lateness() {
        // 1,000 packets/s from t = 5 ms: due at 5, 6, 7 … ms.
        let ms = 1_000_000;
        let mut paced = Pacer::new(Some(1_000), 5 * ms);
        assert_eq!(paced.next(4 * ms), Err(5 * ms), "none due yet");
        assert_eq!(paced.next(5 * ms), Ok(5 * ms));
        assert_eq!(paced.next(5 * ms + 10), Err(6 * ms));
        // Held back by the chain from 6.5 ms to 9.5 ms: the four due since go at once, the
        // first from when the hold began, the others from when they were due.
        let late = 9 * ms + ms / 2;
        paced.hold(6 * ms + ms / 2);
        paced.hold(8 * ms);
        let starts: Vec<_> = std::iter::from_fn(|| paced.next(late).ok()).collect();
        assert_eq!(starts, [6 * ms + ms / 2, 7 * ms, 8 * ms, 9 * ms]);
        assert_eq!(paced.next(late), Err(10 * ms));
        // Caught up; then late by 1.5 ms for its own reasons (not scheduled): from when sent.
        let late = 11 * ms + ms / 2;
        let starts: Vec<_> = std::iter::from_fn(|| paced.next(late).ok()).collect();
        assert_eq!(starts, [late, late]);

        let mut flat_out = Pacer::new(None, 5 * ms);
        assert!(!flat_out.paced());
        assert_eq!(flat_out.next(4 * ms), Ok(4 * ms));
        assert_eq!(flat_out.next(late), Ok(late));
    }

    /// A chain that releases nothing while the generator's window is full stalled: the run
    /// says so and stops its traffic, instead of waiting for the end of its duration (an hour
    /// at most; here 2 s, and without the check the run lasts that long and reports no stall).
    /// Server 0's inbox is never read.
    #[test]
    fn a_chain_that_releases_nothing_stalls_the_run_which_says_so() {
        let (tx, _never_read) = crossbeam_channel::unbounded();
        let routes = Routes::new(vec![tx]);
        let config = RunConfig {
            duration: Duration::from_secs(2),
            window: 8,
            stall: Duration::from_millis(50),
            ..RunConfig::default()
        };
        let mut report = RunReport::default();
        Harness::new().drive(&config, &routes, Duration::from_millis(10), &mut report);
        assert_eq!(report.packets_sent, 8, "a window's worth");
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(
            report.violations[0].starts_with("the chain released nothing for 50ms while 8 packets"),
            "{}",
            report.violations[0]
        );
    }
}
