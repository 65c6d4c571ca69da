//! The FTMB threads over the in-memory transport, on the runtime's messages ([`Msg`]): a
//! logger server (IL and OL) and a master per middlebox, each handling batches of messages.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ftc_chain::middlebox::Verdict;
use ftc_chain::ring::ServerId;

use super::logger::{Logger, LoggerStats};
use super::master::Master;
use super::pal::{self, FLAG_PAL};
use super::{Pool, SnapshotKind};
use crate::serve::{Msg, Shared, Sink, BATCH};
use crate::{Frame, Packet};

/// Where a logger server sends.
#[derive(Debug)]
pub(super) struct LoggerLinks {
    pub me: ServerId,
    /// Its master, which is also the only sender of PALs and processed packets to it.
    pub master: (ServerId, Sender<Msg>),
    /// The next middlebox's logger; `None` at the end of the chain.
    pub next: Option<Sender<Msg>>,
}

/// Where a master sends.
#[derive(Debug)]
pub(super) struct MasterLinks {
    pub me: ServerId,
    pub logger: Sender<Msg>,
    /// Test hook ([`super::FtmbConfig::pals_after_packet`]).
    pub pals_after_packet: bool,
}

/// When and how a master takes its snapshots.
#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    pub kind: SnapshotKind,
    /// Nanoseconds between snapshots, and the time of the next.
    pub every: u64,
    pub next_at: u64,
}

/// A master's snapshots.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SnapshotTally {
    pub taken: u64,
    pub stall_total_ns: u64,
    pub stall_max_ns: u64,
    pub bytes: u64,
}

fn frame_msg(from: ServerId, packet: Option<Packet<u64>>, flags: u16, msg: Vec<u8>) -> Msg {
    Msg::Frame {
        from,
        epoch: 0,
        frame: Frame { packet, flags, msg },
    }
}

/// Run a logger server until stopped: packets from outside or from the previous middlebox's
/// OL are logged (IL) and passed to the master; PAL messages and processed packets from the
/// master go through the OL to the next logger, or out of the chain.
pub(super) fn serve_logger<C: Fn() -> u64>(
    mut logger: Logger<u64>,
    rx: &Receiver<Msg>,
    links: &LoggerLinks,
    pool: &Pool,
    shared: &Shared<'_, C>,
) -> (LoggerStats, Sink) {
    let mut sink = Sink::default();
    let mut was_congested = false;
    let (master, to_master) = &links.master;
    let input = |logger: &mut Logger<u64>, packet: Packet<u64>| {
        logger.log_input(&packet.bytes);
        to_master
            .send(frame_msg(links.me, Some(packet), 0, Vec::new()))
            .is_ok()
    };
    while let Ok(first) = rx.recv() {
        let (mut stop, mut left) = (false, 0);
        let t = (shared.now)();
        for msg in
            std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok()).take(BATCH))
        {
            match msg {
                Msg::Frame { from, frame, .. } if from == *master => {
                    if frame.flags & FLAG_PAL != 0 {
                        if let Err(e) = logger.handle_pal(&frame.msg) {
                            logger.violation(format!("logger {}: {e}", links.me.0));
                        }
                    } else if let Some(packet) = frame.packet {
                        match pal::decode_requirement(&frame.msg) {
                            Ok(needs) => logger.handle_packet(needs, packet),
                            Err(e) => {
                                logger.violation(format!("logger {}: {e}", links.me.0));
                                sink.lost += 1;
                                left += 1;
                            }
                        }
                    }
                    pool.put(frame.msg);
                }
                Msg::Ingress(packet)
                | Msg::Frame {
                    frame:
                        Frame {
                            packet: Some(packet),
                            ..
                        },
                    ..
                } => {
                    if !input(&mut logger, packet) {
                        sink.lost += 1;
                        left += 1;
                    }
                }
                Msg::Stop => stop = true,
                // The baselines recover nothing: no fence, transfer or kill reaches them.
                Msg::Frame { .. }
                | Msg::Fence { .. }
                | Msg::Export { .. }
                | Msg::Resume { .. }
                | Msg::Nudge
                | Msg::Kill => {}
            }
        }
        while let Some(packet) = logger.poll_release() {
            left += 1;
            match &links.next {
                Some(next) => {
                    if next
                        .send(frame_msg(links.me, Some(packet), 0, Vec::new()))
                        .is_ok()
                    {
                        left -= 1;
                    } else {
                        sink.lost += 1;
                    }
                }
                None => sink.release(t, packet, &shared.recycle),
            }
        }
        if left > 0 {
            let _ = shared.credit.send(left);
        }
        shared.set_congested(&mut was_congested, logger.congested());
        if stop {
            break;
        }
    }
    shared.set_congested(&mut was_congested, false);
    sink.violations.extend(logger.take_violations());
    (logger.stats().clone(), sink)
}

/// Run a master until stopped: each packet's transaction, then its PAL message and the packet
/// to the logger; on schedule, a snapshot during which nothing is processed.
pub(super) fn serve_master<C: Fn() -> u64>(
    mut master: Master<'_>,
    rx: &Receiver<Msg>,
    links: &MasterLinks,
    mut schedule: Option<Schedule>,
    pool: &Pool,
    shared: &Shared<'_, C>,
) -> (SnapshotTally, Sink) {
    let mut sink = Sink::default();
    let mut tally = SnapshotTally::default();
    let now = &shared.now;
    loop {
        let first = match &schedule {
            Some(s) => match rx.recv_timeout(Duration::from_nanos(s.next_at.saturating_sub(now())))
            {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
        };
        if let Some(s) = schedule.as_mut().filter(|s| now() >= s.next_at) {
            snapshot(&master, s, &mut tally, now());
        }
        let (mut stop, mut left) = (false, 0);
        let t = now();
        for msg in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()).take(BATCH))
        {
            match msg {
                Msg::Frame {
                    frame:
                        Frame {
                            packet: Some(packet),
                            ..
                        },
                    ..
                } => left += process(&mut master, t, packet, links, pool, shared, &mut sink),
                Msg::Stop => stop = true,
                // Only the logger sends to a master, and only packets.
                Msg::Ingress(_)
                | Msg::Frame { .. }
                | Msg::Fence { .. }
                | Msg::Export { .. }
                | Msg::Resume { .. }
                | Msg::Nudge
                | Msg::Kill => {}
            }
        }
        if left > 0 {
            let _ = shared.credit.send(left);
        }
        if stop {
            break;
        }
    }
    (tally, sink)
}

/// One packet through the master: the transaction, then the PAL message (if it touched state)
/// and the packet (unless dropped) to the logger. How many packets left the chain here.
fn process<C>(
    master: &mut Master<'_>,
    now: u64,
    mut packet: Packet<u64>,
    links: &MasterLinks,
    pool: &Pool,
    shared: &Shared<'_, C>,
    sink: &mut Sink,
) -> u64 {
    let mut pal_msg = pool.take();
    let out = master.process(now, &mut packet, &mut pal_msg);
    let pal_frame = if out.pal {
        Some(frame_msg(links.me, None, FLAG_PAL, pal_msg))
    } else {
        pool.put(pal_msg);
        None
    };
    let mut left = 0;
    let packet_frame = match out.verdict {
        Verdict::Forward => {
            let mut needs = pool.take();
            pal::encode_requirement(&mut needs, out.needs);
            Some(frame_msg(links.me, Some(packet), 0, needs))
        }
        Verdict::Drop => {
            sink.dropped_by(master.middlebox());
            let _ = shared.recycle.send(packet.bytes);
            left += 1;
            None
        }
    };
    let order = if links.pals_after_packet {
        [packet_frame, pal_frame]
    } else {
        [pal_frame, packet_frame]
    };
    for msg in order.into_iter().flatten() {
        let carries = matches!(&msg, Msg::Frame { frame, .. } if frame.packet.is_some());
        if links.logger.send(msg).is_err() && carries {
            sink.lost += 1;
            left += 1;
        }
    }
    left
}

/// Take a snapshot now (`at`): the master stands still while it copies its store or stalls.
fn snapshot(master: &Master<'_>, s: &mut Schedule, tally: &mut SnapshotTally, at: u64) {
    let began = Instant::now();
    let bytes = match s.kind {
        SnapshotKind::Real => master.snapshot(),
        SnapshotKind::Stall(d) => {
            std::thread::sleep(d);
            0
        }
    };
    let stall = began.elapsed().as_nanos() as u64;
    tally.taken += 1;
    tally.stall_total_ns += stall;
    tally.stall_max_ns = tally.stall_max_ns.max(stall);
    tally.bytes += bytes;
    s.next_at += s.every;
    if s.next_at <= at + stall {
        s.next_at = at + stall + s.every;
    }
}
