//! What a node's server thread drives: an FTC (or NF) [`Server`], or one FTMB [`Station`]
//! (a logger server or a master). Both take frames, customer packets and timeouts and give
//! [`Output`]s, so one event loop ([`super::node`]) runs either; only FTC's exports state.

use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_node::ftmb::{FtmbConfig, Role, Schedule, Station};
use ftc_node::server::port_of;
use ftc_node::{Frame, Heads, Mode, Output, Packet, Server, ServerConfig};

/// A node's server.
#[derive(Debug)]
pub enum Serving<'h> {
    // Boxed: the two differ much in size, and a node has one for its lifetime.
    Ftc(Box<Server<'h, u32>>),
    Ftmb(Box<Station<'h, u32>>),
}

impl<'h> Serving<'h> {
    /// The server at `me` in a fresh deployment (`Assign`), at time `now`.
    pub fn assigned(
        heads: &'h Heads,
        ring: Ring,
        me: ServerId,
        partitions: u32,
        config: &ServerConfig,
        ftmb: &FtmbConfig,
        now: u64,
    ) -> Serving<'h> {
        if !config.mode.is_ftmb() {
            let head = heads.head(&ring, me);
            let server = Server::new(ring, me, partitions, head, config.clone())
                .expect("the spec's partition count is valid");
            return Serving::Ftc(Box::new(server));
        }
        let k = ring.middleboxes();
        Serving::Ftmb(Box::new(match Role::of(me, k) {
            Some(Role::Logger(i)) => Station::logger(i, k, ftmb),
            Some(Role::Master(i)) => {
                let head = heads
                    .head(&ring, ServerId(i as u16))
                    .expect("ring server i < k runs middlebox i");
                // Staggered: master i first stops i/k of a period after master 0.
                let every = (ftmb.snapshot_every.as_nanos() as u64).max(1);
                let schedule = (config.mode == Mode::FtmbSnapshot).then_some(Schedule {
                    kind: ftmb.snapshot,
                    every_ns: every,
                    first_at_ns: now + every + every * i as u64 / k as u64,
                });
                Station::master(head, config.headroom, ftmb, schedule)
            }
            None => unreachable!("the node checked its position against the deployment"),
        }))
    }

    pub fn ftc(&self) -> Option<&Server<'h, u32>> {
        match self {
            Serving::Ftc(s) => Some(s),
            Serving::Ftmb(_) => None,
        }
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        match self {
            Serving::Ftc(s) => s.poll_timeout(),
            Serving::Ftmb(s) => s.poll_timeout(),
        }
    }

    pub fn handle_timeout(&mut self, now: u64) {
        match self {
            Serving::Ftc(s) => s.handle_timeout(now),
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
            Serving::Ftmb(_) => false,
        }
    }

    pub fn handle_frame(&mut self, now: u64, from: ServerId, frame: Frame<u32>) {
        match self {
            Serving::Ftc(s) => s.handle_frame(now, from, frame),
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
            Serving::Ftmb(s) => s.handle_ingress(now, packet),
        }
    }

    pub fn end_batch(&mut self, now: u64) {
        match self {
            Serving::Ftc(s) => s.end_batch(now),
            Serving::Ftmb(s) => s.end_batch(now),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output<u32>> {
        match self {
            Serving::Ftc(s) => s.poll_output(),
            Serving::Ftmb(s) => s.poll_output(),
        }
    }

    /// A spent frame message, for the server's next frames.
    pub fn recycle(&mut self, msg: Vec<u8>) {
        if let Serving::Ftmb(s) = self {
            s.recycle(msg);
        }
    }

    /// A recovery began. An FTMB station has no epochs to fence and goes on.
    pub fn fence(&mut self) {
        if let Serving::Ftc(s) = self {
            s.fence();
        }
    }

    pub fn resume(&mut self, now: u64) {
        if let Serving::Ftc(s) = self {
            s.resume(now);
        }
    }

    /// The encoded state of `group` for a transfer; an FTMB station keeps none to give.
    pub fn export_group_bytes(&self, group: MbIndex) -> Option<Vec<u8>> {
        self.ftc()?.export_group_bytes(group)
    }

    /// What the server counted, for the node's last log line (with an FTMB station's
    /// violations: PAL messages lost on the way, say).
    pub fn summary(&mut self) -> String {
        match self {
            // Where frames sit at the end (held, refused, in the buffer) and what the
            // replica asked for and resent: what a stalled chain is diagnosed from.
            Serving::Ftc(s) => format!(
                "{:?}, frames held now {}, congested {}, replica {:?}, forwarder {:?}, buffer {:?}",
                s.stats(),
                s.held(),
                s.congested(),
                s.replica().map(|r| r.stats()),
                s.forwarder().map(|f| f.stats()),
                s.buffer().map(|b| b.stats()),
            ),
            Serving::Ftmb(s) => {
                let violations = s.take_violations();
                format!(
                    "{:?} {:?}, violations {violations:?}",
                    s.logger_stats(),
                    s.snapshots()
                )
            }
        }
    }
}
