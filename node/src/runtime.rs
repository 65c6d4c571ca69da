//! The in-process runtime: a whole chain in one process, one thread per server, frames over an
//! in-memory transport (crossbeam channels), a traffic generator at the ingress and a sink at
//! the egress that measures latency. This is what `ftc run` drives.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ftc_chain::middlebox::Direction;
use ftc_chain::ring::{MbIndex, ServerId};
use ftc_chain::spec::ChainSpec;
use hdrhistogram::Histogram;

use crate::server::port_of;
use crate::traffic::request;
use crate::{Frame, Heads, Mode, Output, Packet, Server, ServerConfig};

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
    pub server: ServerConfig,
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
            server: ServerConfig::default(),
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

/// What a run measured.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RunReport {
    pub mode: Option<Mode>,
    pub chain: String,
    pub servers: usize,
    pub duration_s: f64,
    pub packets_sent: u64,
    pub packets_released: u64,
    /// Packets lost to failures (in flight or held when a recovery fenced the old epoch).
    pub packets_lost: u64,
    /// Dropped packets by reason (`"m1 firewall"` …).
    pub packets_dropped: std::collections::BTreeMap<String, u64>,
    pub throughput_pps: f64,
    pub latency_us: Latency,
    pub buffer_mean_hold_us: f64,
    pub frames_held: u64,
    pub violations: Vec<String>,
}

enum Msg {
    Ingress(Packet<u64>),
    Frame { from: ServerId, frame: Frame<u64> },
    Stop,
}

/// Run `spec` in this process with generated traffic.
pub fn run_chain(spec: &ChainSpec, config: &RunConfig) -> RunReport {
    let ring = spec.ring();
    let partitions = spec.chain.partitions;
    let heads = Heads::new(spec, |m| m.threads).expect("a valid spec gives valid stores");
    let servers = if config.mode == Mode::Ftc {
        ring.servers()
    } else {
        ring.middleboxes()
    };
    let server_config = ServerConfig {
        mode: config.mode,
        ..config.server.clone()
    };
    let (txs, rxs): (Vec<Sender<Msg>>, Vec<Receiver<Msg>>) =
        (0..servers).map(|_| crossbeam_channel::unbounded()).unzip();
    let (recycle_tx, recycle_rx) = crossbeam_channel::unbounded::<Vec<u8>>();
    // Packets that left the chain (released, dropped or refused), reported per batch.
    let (credit_tx, credit_rx) = crossbeam_channel::unbounded::<u64>();
    // Servers at a bound (hold queue or buffer): no customer packet enters while any is.
    let congested = AtomicUsize::new(0);
    let start = Instant::now();
    let now = move || start.elapsed().as_nanos() as u64;
    let mut report = RunReport {
        mode: Some(config.mode),
        chain: spec.chain.name.clone(),
        servers,
        ..RunReport::default()
    };

    std::thread::scope(|scope| {
        let handles: Vec<_> = rxs
            .into_iter()
            .enumerate()
            .map(|(i, rx)| {
                let me = ServerId(i as u16);
                let head = heads.head(&ring, me);
                let server = Server::new(ring, me, partitions, head, server_config.clone())
                    .expect("valid partitions");
                let txs = txs.clone();
                let (recycle, credit, congested) =
                    (recycle_tx.clone(), credit_tx.clone(), &congested);
                scope.spawn(move || serve(server, &rx, &txs, &recycle, &credit, congested, now))
            })
            .collect();

        // The traffic generator, on this thread.
        let (sent, mut done) = generate(config, &txs[0], &recycle_rx, &credit_rx, &congested, now);
        report.packets_sent = sent;
        // Let what is in flight drain, then let the replicas settle before stopping.
        let deadline = Instant::now() + Duration::from_secs(5);
        while done < sent {
            match credit_rx.recv_deadline(deadline) {
                Ok(n) => done += n,
                Err(_) => break,
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(50));
        for tx in &txs {
            let _ = tx.send(Msg::Stop);
        }
        let mut hist = Histogram::<u64>::new(3).expect("3 significant figures");
        for (i, h) in handles.into_iter().enumerate() {
            let (server, sink) = h.join().expect("a server thread panicked");
            hist.add(&sink.latency).expect("same histogram bounds");
            report.packets_released += sink.released;
            report.packets_lost += sink.lost;
            for (mb, n) in sink.dropped {
                let kind = heads.middleboxes[usize::from(mb.0)].kind();
                *report
                    .packets_dropped
                    .entry(format!("m{} {kind}", mb.0))
                    .or_default() += n;
            }
            report.frames_held += server.stats().held;
            if let Some(b) = server.buffer() {
                report.buffer_mean_hold_us = b.stats().mean_hold_ns() as f64 / 1000.0;
            }
            if let Some(e) = server.error() {
                report.violations.push(e.to_string());
            }
            if let Some(r) = server.replica() {
                for mb in ring.replicated_by(ServerId(i as u16)) {
                    let (head, copy) = (
                        &heads.stores[usize::from(mb.0)],
                        r.store(mb).expect("members keep stores"),
                    );
                    if head.vector() != copy.vector() || head.to_map() != copy.to_map() {
                        report.violations.push(format!(
                            "replica of m{} on server {i} differs from its head after the run",
                            mb.0
                        ));
                    }
                }
            }
        }
        let dropped: u64 = report.packets_dropped.values().sum();
        if report.packets_released + report.packets_lost + dropped != report.packets_sent {
            report.violations.push(format!(
                "{} packets sent, {} released, {} lost, {dropped} dropped by middleboxes: {} unaccounted for",
                report.packets_sent,
                report.packets_released,
                report.packets_lost,
                report.packets_sent as i64
                    - (report.packets_released + report.packets_lost + dropped) as i64
            ));
        }
        report.duration_s = elapsed;
        report.throughput_pps = report.packets_released as f64 / elapsed;
        let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        report.latency_us = Latency {
            p50: us(0.5),
            p99: us(0.99),
            p999: us(0.999),
            max: hist.max() as f64 / 1000.0,
        };
    });
    report
}

/// What a server thread measured of the packets that left the chain through it.
struct Sink {
    released: u64,
    /// Packets a recovery's fence dropped.
    lost: u64,
    dropped: Vec<(MbIndex, u64)>,
    /// Nanoseconds from entering the chain to leaving it.
    latency: Histogram<u64>,
}

/// One server's thread: batches of messages in, outputs out, timers.
fn serve<'a>(
    mut server: Server<'a, u64>,
    rx: &Receiver<Msg>,
    txs: &[Sender<Msg>],
    recycle: &Sender<Vec<u8>>,
    credit: &Sender<u64>,
    congested: &AtomicUsize,
    now: impl Fn() -> u64,
) -> (Server<'a, u64>, Sink) {
    let mut was_congested = false;
    const BATCH: usize = 64;
    let mut sink = Sink {
        released: 0,
        lost: 0,
        dropped: Vec::new(),
        latency: Histogram::new(3).expect("3 significant figures"),
    };
    let me = server.id();
    loop {
        let first = match server.poll_timeout() {
            Some(t) => {
                let wait = Duration::from_nanos(t.saturating_sub(now()));
                match rx.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                }
            }
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
        };
        let mut stop = false;
        let mut left = 0;
        let t = now();
        if first.is_none() {
            server.handle_timeout(t);
        }
        for msg in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()).take(BATCH))
        {
            match msg {
                Msg::Ingress(packet) => {
                    let port = port_of(packet.dir);
                    if let Err((_, packet)) = server.handle_ingress(t, packet, port) {
                        // Sanitized away: count it as released so the generator's window moves.
                        let _ = recycle.send(packet.bytes);
                        left += 1;
                    }
                }
                Msg::Frame { from, frame } => server.handle_frame(t, from, frame),
                Msg::Stop => stop = true,
            }
        }
        server.end_batch();
        while let Some(out) = server.poll_output() {
            match out {
                Output::Send { to, frame } => {
                    let _ = txs[usize::from(to.0)].send(Msg::Frame { from: me, frame });
                }
                Output::Release { packet, .. } => {
                    sink.released += 1;
                    let _ = sink.latency.record(t.saturating_sub(packet.handle).max(1));
                    let _ = recycle.send(packet.bytes);
                    left += 1;
                }
                Output::Dropped { by, .. } => {
                    match sink.dropped.iter_mut().find(|(m, _)| *m == by) {
                        Some((_, n)) => *n += 1,
                        None => sink.dropped.push((by, 1)),
                    }
                    left += 1;
                }
                Output::Lost { .. } => {
                    sink.lost += 1;
                    left += 1;
                }
                Output::Committed { .. } | Output::AtBuffer { .. } => {}
            }
        }
        if left > 0 {
            let _ = credit.send(left);
        }
        if server.congested() != was_congested {
            was_congested = !was_congested;
            if was_congested {
                congested.fetch_add(1, Ordering::AcqRel);
            } else {
                congested.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if stop {
            break;
        }
    }
    (server, sink)
}

/// Offer traffic to server 0 for the configured duration; returns the packets sent and how many
/// of them have left the chain so far.
fn generate(
    config: &RunConfig,
    ingress: &Sender<Msg>,
    recycle: &Receiver<Vec<u8>>,
    credits: &Receiver<u64>,
    congested: &AtomicUsize,
    now: impl Fn() -> u64,
) -> (u64, u64) {
    let templates: Vec<Vec<u8>> = (0..config.flows.max(1))
        .map(|f| request(f, 1, config.size))
        .collect();
    let stop_at = now() + config.duration.as_nanos() as u64;
    let interval = config.rate.map(|r| 1_000_000_000 / r.max(1));
    let (mut sent, mut done) = (0u64, 0u64);
    let mut next_at = now();
    loop {
        done += credits.try_iter().sum::<u64>();
        let t = now();
        if t >= stop_at {
            break;
        }
        // A full window, or a congested server, waits for packets to leave: blocking gives the
        // core to the servers.
        if sent - done >= config.window || (congested.load(Ordering::Acquire) > 0 && sent > done) {
            let wait = Duration::from_nanos(stop_at - t);
            match credits.recv_timeout(wait) {
                Ok(n) => done += n,
                Err(_) => break,
            }
            continue;
        }
        if let Some(iv) = interval {
            if t < next_at {
                std::thread::sleep(Duration::from_nanos((next_at - t).min(50_000)));
                continue;
            }
            next_at += iv;
        }
        let flow = (sent % templates.len() as u64) as usize;
        let mut bytes = recycle.try_recv().unwrap_or_default();
        bytes.clear();
        bytes.extend_from_slice(&templates[flow]);
        let packet = Packet {
            handle: t,
            flow: flow as u64,
            dir: Direction::Outbound,
            bytes,
        };
        if ingress.send(Msg::Ingress(packet)).is_err() {
            break;
        }
        sent += 1;
    }
    (sent, done)
}
