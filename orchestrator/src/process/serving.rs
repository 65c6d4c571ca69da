//! What a node's server thread drives: an FTC (or NF) [`Server`], the lanes of one on threads of
//! their own ([`Lanes`]), or one FTMB [`Station`] (a logger server or a master). All take frames
//! and customer packets and give [`Output`]s, so one event loop ([`super::node`]) runs any; only
//! FTC's exports state.

use std::io;
use std::sync::Arc;

use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_node::ftmb::{master_lanes, FtmbConfig, Role, Station};
use ftc_node::links::XdpLinks;
use ftc_node::server::port_of;
use ftc_node::{Frame, Heads, Mode, Output, Packet, Server, ServerConfig};
use ftc_stm::Store;

use super::edges::Edges;
use super::lane::Lane;
use super::lanes::{Lanes, OwnLinks, OwnSockets};
use super::loss::RingLoss;
use super::tally::Tally;

/// A node's server.
#[derive(Debug)]
pub enum Serving<'h> {
    // Boxed: they differ much in size, and a node has one for its lifetime.
    Ftc(Box<Server<'h, u32>>),
    /// FTC or NF with several lanes (its middlebox's `threads`), each on a thread of its own.
    Lanes(Lanes<'h>),
    Ftmb(Box<Station<'h, u32>>),
}

/// Starts lanes on threads of their own (in the node's thread scope), each with its share of the
/// node's sockets when given one per lane.
pub type Spawn<'a, 'h> =
    &'a dyn Fn(Vec<Box<dyn Lane + 'h>>, Option<Vec<OwnSockets>>) -> io::Result<Lanes<'h>>;

/// How a server of several lanes starts them: with `spawn`, and with the node's ring links and
/// edges shared out among them where they bind a queue per lane ([`XdpLinks::split`],
/// [`Edges::split`]; the node keeps them otherwise, and where it must see every frame sent:
/// `None`), each lane dropping what arrives on its links as the node's `loss` does.
pub struct Spawner<'s, 'a, 'h> {
    pub spawn: Spawn<'a, 'h>,
    pub links: Option<&'s mut Option<XdpLinks>>,
    pub edges: Option<&'s mut Edges>,
    pub loss: &'s mut RingLoss,
}

impl std::fmt::Debug for Spawner<'_, '_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner")
            .field("links", &self.links)
            .field("edges", &self.edges)
            .field("loss", &self.loss)
            .finish_non_exhaustive()
    }
}

impl<'h> Spawner<'_, '_, 'h> {
    fn start(self, lanes: Vec<Box<dyn Lane + 'h>>) -> io::Result<Lanes<'h>> {
        let n = lanes.len();
        let links = self.links.and_then(|slot| match slot.take()?.split(n) {
            Ok(parts) => Some(parts),
            Err(whole) => {
                *slot = Some(whole);
                None
            }
        });
        let edges = self.edges.and_then(|edges| edges.split(n));
        let own = (links.is_some() || edges.is_some()).then(|| {
            let mut links = links.map(Vec::into_iter);
            let mut edges = edges.map(Vec::into_iter);
            let loss = self.loss;
            (0..n)
                .map(|_| OwnSockets {
                    links: links
                        .as_mut()
                        .and_then(Iterator::next)
                        .map(|links| OwnLinks {
                            links,
                            loss: loss.fork(),
                        }),
                    edges: edges.as_mut().and_then(Iterator::next),
                })
                .collect()
        });
        (self.spawn)(lanes, own)
    }
}

impl<'h> Serving<'h> {
    /// The server at `me` in a fresh deployment (`Assign`), at time `now`: FTC's and NF's, and
    /// an FTMB master, in as many lanes as its middlebox has `threads`, more than one started
    /// with `spawn`.
    #[allow(clippy::too_many_arguments)]
    pub fn assigned(
        heads: &'h Heads,
        ring: Ring,
        me: ServerId,
        partitions: u32,
        config: &ServerConfig,
        ftmb: &FtmbConfig,
        now: u64,
        spawn: Spawner<'_, '_, 'h>,
    ) -> io::Result<Serving<'h>> {
        if !config.mode.is_ftmb() {
            let heads = heads.head_lanes(&ring, me, 0);
            let lanes = ftc_node::lanes::lanes(ring, me, partitions, heads, config)
                .expect("the spec's partition count is valid");
            return Serving::of_lanes(lanes, spawn);
        }
        let k = ring.middleboxes();
        let station = |s| Serving::Ftmb(Box::new(s));
        match Role::of(me, k) {
            Some(Role::Logger(i)) => Ok(station(Station::logger(i, k, ftmb))),
            Some(Role::Master(i)) => {
                let snapshots = (config.mode == Mode::FtmbSnapshot).then_some(ftmb.snapshot);
                let lanes = master_lanes(heads, &ring, i, config.headroom, ftmb, snapshots, now);
                one_or_spawned(lanes, spawn, station)
            }
            None => unreachable!("the node checked its position against the deployment"),
        }
    }

    /// The lanes of a server (from [`ftc_node::lanes`]): one as it is, more started with `spawn`.
    pub fn of_lanes(lanes: Vec<Server<'h, u32>>, spawn: Spawner<'_, '_, 'h>) -> io::Result<Self> {
        one_or_spawned(lanes, spawn, |s| Serving::Ftc(Box::new(s)))
    }

    /// The replica stores of an FTC server (none for FTMB's).
    pub fn replicas(&self) -> Vec<(MbIndex, Arc<Store>)> {
        match self {
            Serving::Ftc(s) => s.replica_stores(),
            Serving::Lanes(l) => l.replicas().to_vec(),
            Serving::Ftmb(_) => Vec::new(),
        }
    }

    /// When the server's next timer is due (lanes keep their own).
    pub fn poll_timeout(&self) -> Option<u64> {
        match self {
            Serving::Ftc(s) => s.poll_timeout(),
            Serving::Lanes(_) => None,
            Serving::Ftmb(s) => s.poll_timeout(),
        }
    }

    pub fn handle_timeout(&mut self, now: u64) {
        match self {
            Serving::Ftc(s) => s.handle_timeout(now),
            Serving::Lanes(_) => {}
            Serving::Ftmb(s) => s.handle_timeout(now),
        }
    }

    /// Whether the node should take no customer frames for now. Never for an FTMB station: its
    /// output loggers are processes of their own (only the first logger's bound could gate the
    /// ingress), and what a logger holds is bounded in time instead: a lost PAL is asked for
    /// again and given up on after [`ftc_node::ftmb::GIVE_UP_NS`].
    pub fn congested(&self) -> bool {
        match self {
            Serving::Ftc(s) => s.congested(),
            Serving::Lanes(l) => l.congested(),
            Serving::Ftmb(_) => false,
        }
    }

    /// When the server last made progress, at `now` on the node's thread: the oldest lane's
    /// progress ([`Lanes::pulse`], which nudges lanes asleep for `idle` or more), or `now`.
    pub fn pulse(&self, now: u64, idle: u64) -> u64 {
        match self {
            Serving::Lanes(l) => l.pulse(now, idle).min(now),
            Serving::Ftc(_) | Serving::Ftmb(_) => now,
        }
    }

    /// Why the server must stop, if it must: a server's first error (it stopped handling
    /// frames), a lane's thread that ended before it was told to, or an FTMB station's first
    /// violation (a packet released before its PALs, PALs given up on, a malformed PAL
    /// message or requirement). The node then exits with it, as with a broken FTC server:
    /// the run fails where the lab's and the benchmarks' reports see it, rather than in the
    /// node's last log line only.
    pub fn error(&self) -> Option<String> {
        match self {
            Serving::Ftc(s) => s.error().map(ToString::to_string),
            Serving::Lanes(l) => l.error().map(String::from),
            Serving::Ftmb(s) => s.violations().first().cloned(),
        }
    }

    pub fn handle_frame(&mut self, now: u64, from: ServerId, frame: Frame<u32>) {
        match self {
            Serving::Ftc(s) => s.handle_frame(now, from, frame),
            Serving::Lanes(l) => l.handle_frame(from, frame),
            Serving::Ftmb(s) => s.handle_frame(now, from, frame),
        }
    }

    /// A customer packet entering the chain (on the port of its direction); given back when
    /// refused (sanitized away by FTC's forwarder, or not at the chain's entry).
    pub fn handle_ingress(&mut self, now: u64, packet: Packet<u32>) -> Result<(), Packet<u32>> {
        match self {
            Serving::Ftc(s) => {
                let port = port_of(packet.dir);
                s.handle_ingress(now, packet, port).map_err(|(_, p)| p)
            }
            Serving::Lanes(l) => {
                l.handle_ingress(packet);
                Ok(())
            }
            Serving::Ftmb(s) => s.handle_ingress(now, packet),
        }
    }

    pub fn end_batch(&mut self, now: u64) {
        match self {
            Serving::Ftc(s) => s.end_batch(now),
            Serving::Lanes(_) => {}
            Serving::Ftmb(s) => s.end_batch(now),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output<u32>> {
        match self {
            Serving::Ftc(s) => s.poll_output(),
            Serving::Lanes(l) => l.poll_output(),
            Serving::Ftmb(s) => s.poll_output(),
        }
    }

    /// A spent frame message: an FTMB station keeps it for its next messages, and so does a
    /// server of one lane where it has room ([`Server::give_back`]); the rest go back for the
    /// node's next frames off the wire (lanes write theirs into buffers of messages they
    /// consume).
    pub fn recycle(&mut self, msg: Vec<u8>) -> Option<Vec<u8>> {
        match self {
            Serving::Ftmb(s) => {
                s.recycle(msg);
                None
            }
            Serving::Ftc(s) => s.give_back(msg),
            Serving::Lanes(_) => Some(msg),
        }
    }

    /// Buffers of messages the server consumed beyond those it keeps ([`Server::take_surplus`]),
    /// for the node's next frames off the wire.
    pub fn take_surplus(&mut self) -> Option<Vec<Vec<u8>>> {
        match self {
            Serving::Ftc(s) => s.take_surplus(),
            Serving::Lanes(_) | Serving::Ftmb(_) => None,
        }
    }

    /// A recovery of `epoch` began (every lane has fenced on return). An FTMB station has no
    /// epochs to fence and goes on.
    pub fn fence(&mut self, epoch: u32) {
        match self {
            Serving::Ftc(s) => s.fence(),
            Serving::Lanes(l) => l.fence(epoch),
            Serving::Ftmb(_) => {}
        }
    }

    /// The reroute: go on in `epoch`.
    pub fn resume(&mut self, now: u64, epoch: u32) {
        match self {
            Serving::Ftc(s) => s.resume(now),
            Serving::Lanes(l) => l.resume(epoch),
            Serving::Ftmb(_) => {}
        }
    }

    /// The encoded state of `group` for a transfer; an FTMB station keeps none to give.
    pub fn export_group_bytes(&self, group: MbIndex) -> Option<Vec<u8>> {
        match self {
            Serving::Ftc(s) => s.export_group_bytes(group),
            Serving::Lanes(l) => l.export_group_bytes(group),
            Serving::Ftmb(_) => None,
        }
    }

    /// What the server counted so far, and holds now, summed over its lanes (for the node's
    /// stats lines).
    pub fn tally(&self) -> Tally {
        match self {
            Serving::Ftc(s) => Tally::of_server(s),
            Serving::Lanes(l) => l.tally(),
            Serving::Ftmb(s) => Tally::of_station(s),
        }
    }

    /// What the server counted, for the node's last log line (with an FTMB station's
    /// violations: PAL messages lost on the way, say).
    pub fn summary(&mut self) -> String {
        match self {
            Serving::Ftc(s) => ftc_summary(s),
            Serving::Lanes(l) => l.summary(),
            Serving::Ftmb(s) => ftmb_summary(s),
        }
    }
}

/// A server of `lanes` (at least one): the only one as `one` makes it serve, or more started
/// with `spawn`.
fn one_or_spawned<'h, L: Lane + 'h>(
    mut lanes: Vec<L>,
    spawn: Spawner<'_, '_, 'h>,
    one: impl FnOnce(L) -> Serving<'h>,
) -> io::Result<Serving<'h>> {
    if lanes.len() > 1 {
        let boxed = lanes.into_iter().map(|l| Box::new(l) as Box<dyn Lane + 'h>);
        return spawn.start(boxed.collect()).map(Serving::Lanes);
    }
    Ok(one(lanes.pop().expect("a server has a lane")))
}

/// What an FTMB station (or a lane of a master) counted, and its violations (PAL messages lost
/// on the way, say).
pub fn ftmb_summary(s: &mut Station<'_, u32>) -> String {
    let violations = s.take_violations();
    format!(
        "transactions {:?}, logger {:?}, snapshots {:?}, violations {violations:?}",
        s.transactions(),
        s.logger_stats(),
        s.snapshots()
    )
}

/// What an FTC (or NF) server or lane counted: where frames sit at the end (held, refused, in the
/// buffer) and what the replica asked for and resent, what a stalled chain is diagnosed from.
pub fn ftc_summary(s: &Server<'_, u32>) -> String {
    format!(
        "{:?}, frames held now {}, congested {}, replica {:?}, forwarder {:?}, buffer {:?}",
        s.stats(),
        s.held(),
        s.congested(),
        s.replica().map(|r| r.stats()),
        s.forwarder().map(|f| f.stats()),
        s.buffer().map(|b| b.stats()),
    )
}

#[cfg(test)]
mod tests {
    use ftc_chain::middlebox::Direction;
    use ftc_node::ftmb::{pal, FtmbConfig};

    use super::*;

    /// An FTMB output logger that lets a packet go before its PAL message (its test hook):
    /// the violation is the server's error, which the node exits with.
    #[test]
    fn an_ftmb_stations_first_violation_is_its_error() {
        let config = FtmbConfig {
            release_without_pals: true,
            ..FtmbConfig::default()
        };
        let mut serving = Serving::Ftmb(Box::new(Station::logger(0, 1, &config)));
        assert_eq!(serving.error(), None);
        let mut needs = Vec::new();
        pal::encode_requirement(&mut needs, 1);
        let packet = Packet {
            handle: 7,
            flow: 0,
            dir: Direction::Outbound,
            bytes: vec![0; 64],
        };
        let frame = Frame {
            packet: Some(packet),
            flags: 0,
            msg: needs,
        };
        // From its master, at position 1.
        serving.handle_frame(1, ServerId(1), frame);
        serving.end_batch(1);
        assert!(matches!(
            serving.poll_output(),
            Some(Output::Release { packet, .. }) if packet.handle == 7
        ));
        let error = serving.error().expect("the violation is an error");
        assert!(
            error.contains("released a packet that needs PAL message 1"),
            "{error}"
        );
    }
}
