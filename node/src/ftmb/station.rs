//! One FTMB server as a state machine with [`crate::Server`]'s driving interface: a logger
//! server (IL and OL of a middlebox) or a master, taking customer packets and frames and
//! giving [`Output`]s, so that one driver loop runs it in-process or as a process.
//!
//! Frames between stations (NSH context flags and message as on any link):
//! - into a master (from its IL) and between loggers (OL(i) → IL(i+1)): the packet, empty msg;
//! - master → its OL: a PAL message as a frame of its own ([`FLAG_PAL`], no packet), and each
//!   processed packet with its PAL requirement (8 bytes, [`pal::encode_requirement`]) as msg;
//! - OL → its master: a request for lost PAL messages ([`FLAG_PAL_RESEND`], no packet, the
//!   numbers as msg, [`pal::encode_resend`]), which the master answers with those it kept.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use ftc_chain::middlebox::{Middlebox, Verdict};
use ftc_chain::ring::{MbIndex, ServerId};
use ftc_stm::Worker;

use super::logger::{Logger, LoggerStats};
use super::master::{Master, PalNumbers};
use super::pal::{self, FLAG_PAL, FLAG_PAL_RESEND};
use super::{logger_id, master_id, FtmbConfig, Pool, SnapshotKind};
use crate::{Frame, Loss, Output, Packet};

/// Message buffers a station keeps of its own at most.
const SPARE: usize = 256;

/// PAL messages a master sends again for one request at most (the logger asks for the rest
/// once these arrived).
const RESEND_MAX: usize = 1024;

/// What the server at a position of an FTMB chain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The logger server (IL and OL) of middlebox i: position 2i.
    Logger(usize),
    /// The master of middlebox i: position 2i+1.
    Master(usize),
}

impl Role {
    /// The role of `position` in a chain of `k` middleboxes (2k positions); `None` beyond.
    pub fn of(position: ServerId, k: usize) -> Option<Role> {
        let p = usize::from(position.0);
        let i = p / 2;
        (p < 2 * k).then_some(if p % 2 == 0 {
            Role::Logger(i)
        } else {
            Role::Master(i)
        })
    }
}

/// When a master takes its snapshots (FTMB+snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub kind: SnapshotKind,
    /// Nanoseconds between snapshots (at least 1), and the time of the first.
    pub every_ns: u64,
    pub first_at_ns: u64,
}

/// A master's snapshots so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotTally {
    pub taken: u64,
    pub stall_total_ns: u64,
    pub stall_max_ns: u64,
    /// Bytes of state copied (0 for fixed stalls).
    pub bytes: u64,
}

/// Where a station's message buffers (PAL messages, PAL requirements) come from and go: a
/// master writes into them, its logger reads them and gives them back.
#[derive(Debug)]
enum Buffers<'a> {
    /// The station's own spare list (a station in a process of its own).
    Own(Vec<Vec<u8>>),
    /// Shared with the other stations of an in-process run.
    Pool(&'a Pool),
}

impl Buffers<'_> {
    fn take(&mut self) -> Vec<u8> {
        match self {
            Buffers::Own(spare) => spare.pop().unwrap_or_default(),
            Buffers::Pool(pool) => pool.take(),
        }
    }

    fn put(&mut self, mut buf: Vec<u8>) {
        match self {
            Buffers::Own(spare) => {
                if buf.capacity() > 0 && spare.len() < SPARE {
                    buf.clear();
                    spare.push(buf);
                }
            }
            Buffers::Pool(pool) => pool.put(buf),
        }
    }
}

/// A logger server: the IL and OL of one middlebox.
#[derive(Debug)]
struct LoggerSide<P> {
    logger: Logger<P>,
    /// Its master, the only sender of PALs and processed packets to it.
    master: ServerId,
    /// The next middlebox's logger; `None` at the end of the chain.
    next: Option<ServerId>,
    /// Whether it takes the chain's customer packets (the first logger).
    first: bool,
}

/// A master's snapshot schedule.
#[derive(Debug)]
struct Snapshots {
    kind: SnapshotKind,
    every: u64,
    next_at: u64,
}

#[derive(Debug)]
struct MasterSide<'a> {
    master: Master<'a>,
    logger: ServerId,
    /// Test hooks ([`FtmbConfig::pals_after_packet`], [`FtmbConfig::lose_pal_every`]).
    pals_after_packet: bool,
    lose_pal_every: u64,
    snapshots: Option<Snapshots>,
    tally: SnapshotTally,
}

#[derive(Debug)]
enum Side<'a, P> {
    Logger(LoggerSide<P>),
    Master(MasterSide<'a>),
}

/// One FTMB server (see the module docs), driven like [`crate::Server`].
#[derive(Debug)]
pub struct Station<'a, P> {
    me: ServerId,
    side: Side<'a, P>,
    outputs: VecDeque<Output<P>>,
    buffers: Buffers<'a>,
}

impl<'a, P> Station<'a, P> {
    /// The logger server of middlebox `i` of `k`.
    pub fn logger(i: usize, k: usize, config: &FtmbConfig) -> Self {
        let logger = Logger::new(
            config.input_log,
            config.max_held,
            config.release_without_pals,
        );
        Self::new(
            logger_id(i),
            Side::Logger(LoggerSide {
                logger,
                master: master_id(i),
                next: (i + 1 < k).then(|| logger_id(i + 1)),
                first: i == 0,
            }),
        )
    }

    /// The master of `head` (a middlebox and a worker of its store), or a lane of it, which
    /// may grow packets by `headroom` bytes, numbers its PAL messages from `numbers` (one per
    /// master, shared by its lanes), and takes snapshots on `snapshots` (FTMB+snapshot).
    pub fn master(
        head: (MbIndex, &'a dyn Middlebox, Worker<'a>),
        headroom: usize,
        numbers: Arc<PalNumbers>,
        config: &FtmbConfig,
        snapshots: Option<Schedule>,
    ) -> Self {
        let i = usize::from(head.0 .0);
        Self::new(
            master_id(i),
            Side::Master(MasterSide {
                master: Master::new(head, headroom, numbers),
                logger: logger_id(i),
                pals_after_packet: config.pals_after_packet,
                lose_pal_every: config.lose_pal_every,
                snapshots: snapshots.map(|s| Snapshots {
                    kind: s.kind,
                    every: s.every_ns.max(1),
                    next_at: s.first_at_ns,
                }),
                tally: SnapshotTally::default(),
            }),
        )
    }

    fn new(me: ServerId, side: Side<'a, P>) -> Self {
        Station {
            me,
            side,
            outputs: VecDeque::new(),
            buffers: Buffers::Own(Vec::new()),
        }
    }

    /// Take message buffers from `pool` and give spent ones back to it, instead of a list of
    /// its own (in-process, where the loggers that read messages are not their writers).
    pub(super) fn with_pool(mut self, pool: &'a Pool) -> Self {
        self.buffers = Buffers::Pool(pool);
        self
    }

    pub fn id(&self) -> ServerId {
        self.me
    }

    /// What `ftc run` calls this station's thread: `mI master` or `mI logger`.
    pub fn name(&self) -> String {
        let i = self.me.0 / 2;
        match self.side {
            Side::Logger(_) => format!("m{i} logger"),
            Side::Master(_) => format!("m{i} master"),
        }
    }

    /// A customer packet entering the chain: the first logger takes it; any other station
    /// gives it back.
    pub fn handle_ingress(&mut self, _now: u64, packet: Packet<P>) -> Result<(), Packet<P>> {
        match &mut self.side {
            Side::Logger(l) if l.first => {
                l.input(packet, &mut self.outputs);
                Ok(())
            }
            _ => Err(packet),
        }
    }

    /// A frame from station `from`.
    pub fn handle_frame(&mut self, now: u64, from: ServerId, frame: Frame<P>) {
        match &mut self.side {
            Side::Logger(l) if from == l.master => {
                if frame.flags & FLAG_PAL != 0 {
                    if let Err(e) = l.logger.handle_pal(&frame.msg) {
                        l.logger.violation(format!("logger {}: {e}", self.me.0));
                    }
                } else if let Some(packet) = frame.packet {
                    let refused = match pal::decode_requirement(&frame.msg) {
                        Ok(needs) => l.logger.handle_packet(needs, packet).err(),
                        Err(e) => Some((e, packet)),
                    };
                    if let Some((e, packet)) = refused {
                        l.logger.violation(format!("logger {}: {e}", self.me.0));
                        self.outputs.push_back(Output::Lost {
                            handle: packet.handle,
                            why: Loss::BadRequirement,
                        });
                        self.buffers.put(packet.bytes);
                    }
                }
                self.buffers.put(frame.msg);
            }
            Side::Logger(l) => {
                if let Some(packet) = frame.packet {
                    l.input(packet, &mut self.outputs);
                }
            }
            Side::Master(m) if from == m.logger && frame.flags & FLAG_PAL_RESEND != 0 => {
                // A malformed request (no logger of ours sends one) asks for nothing.
                if let Ok(numbers) = pal::decode_resend(&frame.msg) {
                    m.resend(numbers, &mut self.buffers, &mut self.outputs);
                }
                self.buffers.put(frame.msg);
            }
            Side::Master(m) => {
                if let Some(packet) = frame.packet {
                    m.process(now, packet, &mut self.buffers, &mut self.outputs);
                }
                self.buffers.put(frame.msg);
            }
        }
    }

    /// The end of a batch of frames: a logger lets go of the packets whose PALs arrived, then
    /// asks its master for lost PAL messages when due (in that order, so that the packet now
    /// first in line says which PAL messages are still wanted: asked the other way round, a
    /// gap that only that packet shows would wait for the next frame to be seen).
    pub fn end_batch(&mut self, now: u64) {
        let Side::Logger(l) = &mut self.side else {
            return;
        };
        while let Some(packet) = l.logger.poll_release() {
            self.outputs.push_back(match l.next {
                Some(to) => Output::Send {
                    to,
                    frame: Frame {
                        packet: Some(packet),
                        flags: 0,
                        msg: Vec::new(),
                    },
                },
                None => Output::Release { packet, hold_ns: 0 },
            });
        }
        if let Some((first, last)) = l.logger.poll_resend(now) {
            let mut msg = self.buffers.take();
            pal::encode_resend(&mut msg, first, last);
            self.outputs.push_back(Output::Send {
                to: l.master,
                frame: Frame {
                    packet: None,
                    flags: FLAG_PAL_RESEND,
                    msg,
                },
            });
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        self.outputs.pop_front()
    }

    /// When to call [`Station::handle_timeout`]: a master's next snapshot, or when a logger
    /// asks for a missing PAL message (again) or gives up on it.
    pub fn poll_timeout(&self) -> Option<u64> {
        match &self.side {
            Side::Master(m) => m.snapshots.as_ref().map(|s| s.next_at),
            Side::Logger(l) => l.logger.poll_timeout(),
        }
    }

    /// A master takes its snapshot when due: it stands still (in this call) while it copies
    /// its store, or stalls. A logger does what [`Station::end_batch`] does.
    pub fn handle_timeout(&mut self, now: u64) {
        match &mut self.side {
            Side::Master(m) => m.snapshot_if_due(now),
            Side::Logger(_) => self.end_batch(now),
        }
    }

    /// Whether the station is at a bound (an OL holding its most packets): drivers then admit
    /// no new packets.
    pub fn congested(&self) -> bool {
        match &self.side {
            Side::Logger(l) => l.logger.congested(),
            Side::Master(_) => false,
        }
    }

    /// A logger's counts (`None` for a master).
    pub fn logger_stats(&self) -> Option<&LoggerStats> {
        match &self.side {
            Side::Logger(l) => Some(l.logger.stats()),
            Side::Master(_) => None,
        }
    }

    /// Transactions a master (or a lane of one) committed (`None` for a logger).
    pub fn transactions(&self) -> Option<u64> {
        match &self.side {
            Side::Master(m) => Some(m.master.transactions()),
            Side::Logger(_) => None,
        }
    }

    /// A master's snapshots (`None` for a logger).
    pub fn snapshots(&self) -> Option<SnapshotTally> {
        match &self.side {
            Side::Master(m) => Some(m.tally),
            Side::Logger(_) => None,
        }
    }

    /// What must not happen and did and was not taken yet (see [`Station::take_violations`]).
    pub fn violations(&self) -> &[String] {
        match &self.side {
            Side::Logger(l) => l.logger.violations(),
            Side::Master(_) => &[],
        }
    }

    /// What must not happen and did (an OL that released a packet before its PALs, PAL
    /// messages given up on, a malformed PAL message or requirement), the first 10.
    pub fn take_violations(&mut self) -> Vec<String> {
        match &mut self.side {
            Side::Logger(l) => l.logger.take_violations(),
            Side::Master(_) => Vec::new(),
        }
    }

    /// A spent message buffer (of a frame this station sent) for its next messages.
    pub fn recycle(&mut self, msg: Vec<u8>) {
        self.buffers.put(msg);
    }
}

impl<P> LoggerSide<P> {
    /// IL: log a packet on its way to the master.
    fn input(&mut self, packet: Packet<P>, outputs: &mut VecDeque<Output<P>>) {
        self.logger.log_input(&packet.bytes);
        outputs.push_back(Output::Send {
            to: self.master,
            frame: Frame {
                packet: Some(packet),
                flags: 0,
                msg: Vec::new(),
            },
        });
    }
}

impl MasterSide<'_> {
    /// One packet's transaction, then its PAL message (if it touched state) and the packet
    /// (unless dropped) to the logger.
    fn process<P>(
        &mut self,
        now: u64,
        mut packet: Packet<P>,
        buffers: &mut Buffers<'_>,
        outputs: &mut VecDeque<Output<P>>,
    ) {
        let mut pal_msg = buffers.take();
        let out = self.master.process(now, &mut packet, &mut pal_msg);
        let lost = out
            .number
            .is_some_and(|n| self.lose_pal_every > 0 && n % self.lose_pal_every == 0);
        let pal_frame = if out.number.is_some() && !lost {
            Some(Frame {
                packet: None,
                flags: FLAG_PAL,
                msg: pal_msg,
            })
        } else {
            buffers.put(pal_msg);
            None
        };
        let packet_frame = match out.verdict {
            Verdict::Forward => {
                let mut needs = buffers.take();
                pal::encode_requirement(&mut needs, out.needs);
                Some(Frame {
                    packet: Some(packet),
                    flags: 0,
                    msg: needs,
                })
            }
            Verdict::Drop => {
                outputs.push_back(Output::Dropped {
                    handle: packet.handle,
                    by: self.master.middlebox(),
                });
                buffers.put(packet.bytes);
                None
            }
        };
        let order = if self.pals_after_packet {
            [packet_frame, pal_frame]
        } else {
            [pal_frame, packet_frame]
        };
        let to = self.logger;
        outputs.extend(
            order
                .into_iter()
                .flatten()
                .map(|frame| Output::Send { to, frame }),
        );
    }

    /// PAL messages `numbers` again, those still kept (at most [`RESEND_MAX`]), to the logger.
    fn resend<P>(
        &self,
        numbers: std::ops::RangeInclusive<u64>,
        buffers: &mut Buffers<'_>,
        outputs: &mut VecDeque<Output<P>>,
    ) {
        for n in numbers.take(RESEND_MAX) {
            let Some(kept) = self.master.retained(n) else {
                continue;
            };
            let mut msg = buffers.take();
            msg.clear();
            msg.extend_from_slice(kept);
            outputs.push_back(Output::Send {
                to: self.logger,
                frame: Frame {
                    packet: None,
                    flags: FLAG_PAL,
                    msg,
                },
            });
        }
    }

    /// Take a snapshot if one is due at `now`.
    fn snapshot_if_due(&mut self, now: u64) {
        let Some(s) = self.snapshots.as_mut().filter(|s| now >= s.next_at) else {
            return;
        };
        let began = Instant::now();
        let bytes = match s.kind {
            SnapshotKind::Real => self.master.snapshot(),
            SnapshotKind::Stall(d) => {
                std::thread::sleep(d);
                0
            }
        };
        let stall = began.elapsed().as_nanos() as u64;
        let tally = &mut self.tally;
        tally.taken += 1;
        tally.stall_total_ns += stall;
        tally.stall_max_ns = tally.stall_max_ns.max(stall);
        tally.bytes += bytes;
        s.next_at += s.every;
        if s.next_at <= now + stall {
            s.next_at = now + stall + s.every;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ftc_chain::middlebox::Direction;
    use ftc_chain::ring::Ring;
    use ftc_chain::spec::ChainSpec;

    use super::*;
    use crate::Heads;

    /// A chain of one middlebox of `kind` (with its own `keys`), and its heads.
    fn heads(kind: &str, keys: &str) -> (Ring, Heads) {
        let spec = ChainSpec::from_toml_str(
            &format!("[chain]\nname = \"t\"\nf = 1\n\n[[middlebox]]\nkind = \"{kind}\"\n{keys}"),
            "test",
        )
        .unwrap();
        (spec.ring(), Heads::new(&spec, |_| 1).unwrap())
    }

    fn master<'h>(
        (ring, heads): &'h (Ring, Heads),
        config: &FtmbConfig,
        s: Option<Schedule>,
    ) -> Station<'h, u64> {
        let head = heads.head(ring, ring.forwarder()).unwrap();
        Station::master(head, 128, Arc::default(), config, s)
    }

    fn packet(handle: u64) -> Packet<u64> {
        Packet {
            handle,
            flow: 7,
            dir: Direction::Outbound,
            bytes: crate::traffic::request(7, handle as u32, 128),
        }
    }

    /// The logger and the master of a one-middlebox chain of `heads`, as configured by default.
    fn logger_and_master<'h>(heads: &'h (Ring, Heads)) -> (Station<'h, u64>, Station<'h, u64>) {
        let config = FtmbConfig::default();
        (Station::logger(0, 1, &config), master(heads, &config, None))
    }

    /// Customer packet `handle` as a frame between stations.
    fn packet_frame(handle: u64) -> Frame<u64> {
        Frame {
            packet: Some(packet(handle)),
            flags: 0,
            msg: Vec::new(),
        }
    }

    /// Everything `s` wants done now, each a frame sent (with where to) or else its output.
    fn drain(s: &mut Station<'_, u64>) -> Vec<Output<u64>> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    /// The frames in `outs`, all sent to `to`.
    fn frames_to(to: ServerId, outs: Vec<Output<u64>>) -> Vec<Frame<u64>> {
        outs.into_iter()
            .map(|o| match o {
                Output::Send { to: t, frame } if t == to => frame,
                other => panic!("not a frame to {to}: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn roles_alternate_logger_and_master_up_to_2k() {
        assert_eq!(Role::of(ServerId(0), 2), Some(Role::Logger(0)));
        assert_eq!(Role::of(ServerId(1), 2), Some(Role::Master(0)));
        assert_eq!(Role::of(ServerId(2), 2), Some(Role::Logger(1)));
        assert_eq!(Role::of(ServerId(3), 2), Some(Role::Master(1)));
        assert_eq!(Role::of(ServerId(4), 2), None);
        assert_eq!(Role::of(ServerId(0), 0), None);
    }

    #[test]
    fn a_packet_leaves_the_last_logger_only_after_its_pal() {
        let heads = heads("monitor", "sharing_level = 1\n");
        let config = FtmbConfig {
            pals_after_packet: true,
            ..FtmbConfig::default()
        };
        let mut logger = Station::logger(0, 1, &config);
        let mut m = master(&heads, &config, None);
        let (l_id, m_id) = (logger.id(), m.id());
        assert_eq!((l_id, m_id), (ServerId(0), ServerId(1)));

        logger.handle_ingress(1, packet(1)).unwrap();
        logger.end_batch(1);
        let to_master = frames_to(m_id, drain(&mut logger));
        assert_eq!(to_master.len(), 1);
        assert!(to_master[0].packet.is_some() && to_master[0].msg.is_empty());

        for f in to_master {
            m.handle_frame(2, l_id, f);
        }
        m.end_batch(2);
        let mut back = frames_to(l_id, drain(&mut m));
        // The test hook sends the packet first: the OL must hold it.
        assert_eq!(back.len(), 2);
        let pal = back.pop().unwrap();
        let processed = back.pop().unwrap();
        assert_eq!(pal.flags & FLAG_PAL, FLAG_PAL);
        assert!(pal.packet.is_none());
        assert_eq!(pal::decode(&pal.msg).unwrap().number, 1);
        assert_eq!(pal::decode_requirement(&processed.msg), Ok(1));

        logger.handle_frame(3, m_id, processed);
        logger.end_batch(3);
        assert!(drain(&mut logger).is_empty(), "held until its PAL arrives");
        logger.handle_frame(4, m_id, pal);
        logger.end_batch(4);
        match drain(&mut logger).as_slice() {
            [Output::Release { packet, hold_ns: 0 }] => assert_eq!(packet.handle, 1),
            other => panic!("{other:?}"),
        }
        let stats = logger.logger_stats().unwrap();
        assert_eq!(
            (
                stats.packets_logged,
                stats.pal_messages,
                stats.packets_waited
            ),
            (1, 1, 1)
        );
        assert!(logger.take_violations().is_empty());
        assert_eq!(m.snapshots(), Some(SnapshotTally::default()));
        assert!(m.logger_stats().is_none());
    }

    /// A PAL message lost on the link: the OL holds the packet, asks its master for the PAL
    /// again once [`ASK_AFTER_NS`] passed (its timeout says when), and lets the packet go when
    /// the resent PAL arrives; a PAL the master no longer keeps is not sent.
    #[test]
    fn a_lost_pal_is_asked_for_again_and_the_packet_waits_for_it() {
        use super::super::logger::ASK_AFTER_NS;
        let heads = heads("monitor", "sharing_level = 1\n");
        let (mut logger, mut m) = logger_and_master(&heads);
        let (l_id, m_id) = (logger.id(), m.id());

        m.handle_frame(1, l_id, packet_frame(1));
        let [pal, processed]: [Frame<u64>; 2] = frames_to(l_id, drain(&mut m)).try_into().unwrap();
        assert_eq!(pal.flags, FLAG_PAL);
        drop(pal); // lost on the link
        logger.handle_frame(2, m_id, processed);
        logger.end_batch(2);
        assert!(drain(&mut logger).is_empty(), "held, and not asked for yet");
        let at = logger.poll_timeout().expect("a timeout to ask at");
        assert_eq!(at, 2 + ASK_AFTER_NS);
        logger.handle_timeout(at);
        let [request]: [Frame<u64>; 1] = frames_to(m_id, drain(&mut logger)).try_into().unwrap();
        assert_eq!(
            (request.flags, request.packet.is_none()),
            (FLAG_PAL_RESEND, true)
        );
        assert_eq!(pal::decode_resend(&request.msg), Ok(1..=1));

        m.handle_frame(at + 1, l_id, request);
        let [resent]: [Frame<u64>; 1] = frames_to(l_id, drain(&mut m)).try_into().unwrap();
        assert_eq!(pal::decode(&resent.msg).unwrap().number, 1);
        logger.handle_frame(at + 2, m_id, resent);
        logger.end_batch(at + 2);
        match drain(&mut logger).as_slice() {
            [Output::Release { packet, .. }] => assert_eq!(packet.handle, 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(logger.poll_timeout(), None, "nothing missing any more");
        let stats = logger.logger_stats().unwrap();
        assert_eq!((stats.resend_requests, stats.pals_given_up), (1, 0));
        assert!(logger.take_violations().is_empty());

        // Asked for what it never sent (or no longer keeps), the master sends nothing.
        let mut msg = Vec::new();
        pal::encode_resend(&mut msg, 2, 9);
        m.handle_frame(
            at + 3,
            l_id,
            Frame {
                packet: None,
                flags: FLAG_PAL_RESEND,
                msg,
            },
        );
        assert!(drain(&mut m).is_empty());
    }

    /// The last PAL message of a burst lost, and nothing after it: in the batch that lets the
    /// packets before it go, the OL sees the gap (the packet now first in line needs it) and
    /// sets a timeout to ask for it, rather than wait for a frame that may never come.
    #[test]
    fn the_last_lost_pal_is_asked_for_with_nothing_after_it() {
        let heads = heads("monitor", "sharing_level = 1\n");
        let (mut logger, mut m) = logger_and_master(&heads);
        let (l_id, m_id) = (logger.id(), m.id());
        for handle in [1, 2] {
            m.handle_frame(handle, l_id, packet_frame(handle));
        }
        let [pal1, p1, _lost, p2]: [Frame<u64>; 4] =
            frames_to(l_id, drain(&mut m)).try_into().unwrap();
        for frame in [pal1, p1, p2] {
            logger.handle_frame(3, m_id, frame);
        }
        logger.end_batch(3);
        match drain(&mut logger).as_slice() {
            [Output::Release { packet, .. }] => assert_eq!(packet.handle, 1),
            other => panic!("{other:?}"),
        }
        let at = logger
            .poll_timeout()
            .expect("a timeout to ask for PAL 2 at");
        logger.handle_timeout(at);
        let [request]: [Frame<u64>; 1] = frames_to(m_id, drain(&mut logger)).try_into().unwrap();
        assert_eq!(pal::decode_resend(&request.msg), Ok(2..=2));
    }

    #[test]
    fn a_dropped_packet_is_reported_and_nothing_goes_on() {
        let heads = heads("firewall", "default = \"deny\"\n");
        let mut m = master(&heads, &FtmbConfig::default(), None);
        let frame = packet_frame(5);
        m.handle_frame(1, ServerId(0), frame);
        match drain(&mut m).as_slice() {
            [Output::Dropped { handle: 5, by }] => assert_eq!(*by, MbIndex(0)),
            other => panic!("{other:?}"),
        }
    }

    /// A requirement that does not read back, or that no master can have numbered yet.
    #[test]
    fn a_malformed_requirement_loses_its_packet_and_is_a_violation() {
        let mut logger = Station::logger(0, 1, &FtmbConfig::default());
        let mut far = Vec::new();
        pal::encode_requirement(&mut far, u64::MAX);
        for (handle, msg) in [(9, vec![0; 3]), (10, far)] {
            let frame = Frame {
                packet: Some(packet(handle)),
                flags: 0,
                msg,
            };
            logger.handle_frame(1, ServerId(1), frame);
            logger.end_batch(1);
            assert_eq!(
                drain(&mut logger),
                vec![Output::Lost {
                    handle,
                    why: Loss::BadRequirement
                }]
            );
        }
        let v = logger.take_violations();
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[1].contains("no master numbers that far ahead"), "{v:?}");
        assert_eq!(
            logger.poll_timeout(),
            None,
            "nothing to ask for or give up on"
        );
    }

    #[test]
    fn only_the_first_logger_takes_customer_packets() {
        let heads = heads("monitor", "sharing_level = 1\n");
        let config = FtmbConfig::default();
        let mut second = Station::<u64>::logger(1, 2, &config);
        assert_eq!(
            second.handle_ingress(1, packet(1)).map_err(|p| p.handle),
            Err(1)
        );
        let mut m = master(&heads, &config, None);
        assert_eq!(m.handle_ingress(1, packet(2)).map_err(|p| p.handle), Err(2));
        assert!(drain(&mut second).is_empty() && drain(&mut m).is_empty());
        // Packets from the previous middlebox's OL are logged and go to the master.
        second.handle_frame(1, ServerId(0), packet_frame(3));
        assert_eq!(frames_to(ServerId(3), drain(&mut second)).len(), 1);
    }

    #[test]
    fn a_master_snapshots_when_its_timeout_comes_and_reschedules() {
        let heads = heads("monitor", "sharing_level = 1\n");
        let stall = Duration::from_millis(1);
        let schedule = Schedule {
            kind: SnapshotKind::Stall(stall),
            every_ns: 1_000,
            first_at_ns: 500,
        };
        let mut m = master(&heads, &FtmbConfig::default(), Some(schedule));
        assert_eq!(m.poll_timeout(), Some(500));
        m.handle_timeout(499);
        assert_eq!(m.snapshots().unwrap().taken, 0, "not due yet");
        m.handle_timeout(500);
        let tally = m.snapshots().unwrap();
        assert_eq!(tally.taken, 1);
        assert!(tally.stall_max_ns >= stall.as_nanos() as u64);
        assert_eq!(tally.bytes, 0);
        // The next is a period after the stall ended, not a missed one right away.
        let next = m.poll_timeout().unwrap();
        assert!(next >= 500 + tally.stall_max_ns + 1_000, "{next}");

        let real = Schedule {
            kind: SnapshotKind::Real,
            ..schedule
        };
        let heads = self::heads("monitor", "sharing_level = 1\n");
        let mut m = master(&heads, &FtmbConfig::default(), Some(real));
        m.handle_timeout(600);
        assert!(m.snapshots().unwrap().bytes > 0);
        assert!(Station::<u64>::logger(0, 1, &FtmbConfig::default())
            .poll_timeout()
            .is_none());
    }

    #[test]
    fn a_master_writes_its_messages_into_recycled_buffers() {
        let heads = heads("monitor", "sharing_level = 1\n");
        let mut m = master(&heads, &FtmbConfig::default(), None);
        let spent = Vec::with_capacity(64);
        let at = spent.as_ptr();
        m.recycle(spent);
        let frame = packet_frame(1);
        m.handle_frame(1, ServerId(0), frame);
        let frames = frames_to(ServerId(0), drain(&mut m));
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].flags, FLAG_PAL);
        assert_eq!(
            frames[0].msg.as_ptr(),
            at,
            "the PAL message reuses the buffer"
        );
    }
}
