//! What a lane's thread runs ([`super::lanes`]): a lane of an FTC (or NF) server, or of an FTMB
//! master, behind one interface.

use std::sync::Arc;

use ftc_chain::ring::{MbIndex, ServerId};
use ftc_node::ftmb::Station;
use ftc_node::lanes::LaneSet;
use ftc_node::server::{port_of, ExportParts};
use ftc_node::{Frame, Output, Packet, Server};
use ftc_stm::Store;

use super::tally::Tally;

/// What a lane's thread runs: a lane of an FTC (or NF) server, or of an FTMB master. What only
/// FTC does (recovery, news between lanes) does nothing by default.
pub trait Lane: Send {
    fn poll_timeout(&self) -> Option<u64>;
    fn handle_timeout(&mut self, now: u64);
    fn handle_frame(&mut self, now: u64, from: ServerId, frame: Frame<u32>);
    /// A customer packet entering the chain (one refused leaves it here).
    fn handle_ingress(&mut self, now: u64, packet: Packet<u32>);
    /// The end of a batch; `caught_up` when nothing more is waiting.
    fn end_batch(&mut self, now: u64, caught_up: bool);
    fn poll_output(&mut self) -> Option<Output<u32>>;
    fn congested(&self) -> bool;
    /// Why the lane stopped handling frames, if it did (a server's first error).
    fn error(&self) -> Option<String> {
        None
    }
    /// What the lane counted, for the node's last log line.
    fn summary(&mut self) -> String;
    /// What the lane counted, for the node's stats lines (`ftc node --stats-every`).
    fn tally(&self) -> Tally {
        Tally::default()
    }
    /// The replica stores the lanes share (with `--observe`, the node records them).
    fn replicas(&self) -> Vec<(MbIndex, Arc<Store>)> {
        Vec::new()
    }
    fn fence(&mut self) {}
    fn resume(&mut self, _now: u64) {}
    fn export_parts(&self, _group: MbIndex) -> Option<ExportParts> {
        None
    }
    /// Which lanes to nudge: they may be waiting for news this lane published.
    fn take_wakeups(&mut self) -> LaneSet {
        LaneSet::default()
    }
    /// A spent frame message, for the lane's next messages; given back when the lane writes its
    /// messages into buffers of those it consumes (FTC's and NF's), for the next frames off the
    /// wire.
    fn recycle(&mut self, msg: Vec<u8>) -> Option<Vec<u8>> {
        Some(msg)
    }
    /// Buffers of messages the lane consumed beyond those it keeps, for the next frames off the
    /// wire.
    fn take_surplus(&mut self) -> Option<Vec<Vec<u8>>> {
        None
    }
}

/// The methods a [`Server`] and a [`Station`] have alike, as the trait's: each calls the type's
/// own (inherent methods come first in `Self::` paths).
macro_rules! as_inherent {
    () => {
        fn poll_timeout(&self) -> Option<u64> {
            Self::poll_timeout(self)
        }

        fn handle_timeout(&mut self, now: u64) {
            Self::handle_timeout(self, now);
        }

        fn handle_frame(&mut self, now: u64, from: ServerId, frame: Frame<u32>) {
            Self::handle_frame(self, now, from, frame);
        }

        fn poll_output(&mut self) -> Option<Output<u32>> {
            Self::poll_output(self)
        }

        fn congested(&self) -> bool {
            Self::congested(self)
        }
    };
}

impl Lane for Server<'_, u32> {
    as_inherent!();

    fn handle_ingress(&mut self, now: u64, packet: Packet<u32>) {
        let port = port_of(packet.dir);
        // Sanitized away by the forwarder: it leaves the chain here.
        let _ = Server::handle_ingress(self, now, packet, port);
    }

    fn end_batch(&mut self, now: u64, caught_up: bool) {
        if caught_up {
            self.caught_up(now);
        }
        Server::end_batch(self, now);
    }

    fn summary(&mut self) -> String {
        super::serving::ftc_summary(self)
    }

    fn tally(&self) -> Tally {
        Tally::of_server(self)
    }

    fn replicas(&self) -> Vec<(MbIndex, Arc<Store>)> {
        self.replica_stores()
    }

    fn fence(&mut self) {
        Server::fence(self);
    }

    fn error(&self) -> Option<String> {
        Server::error(self).map(ToString::to_string)
    }

    fn resume(&mut self, now: u64) {
        Server::resume(self, now);
    }

    fn export_parts(&self, group: MbIndex) -> Option<ExportParts> {
        Server::export_parts(self, group)
    }

    fn take_wakeups(&mut self) -> LaneSet {
        Server::take_wakeups(self)
    }

    fn take_surplus(&mut self) -> Option<Vec<Vec<u8>>> {
        Server::take_surplus(self)
    }
}

impl Lane for Station<'_, u32> {
    as_inherent!();

    fn handle_ingress(&mut self, now: u64, packet: Packet<u32>) {
        let _ = Station::handle_ingress(self, now, packet);
    }

    fn end_batch(&mut self, now: u64, _caught_up: bool) {
        Station::end_batch(self, now);
    }

    fn summary(&mut self) -> String {
        super::serving::ftmb_summary(self)
    }

    fn tally(&self) -> Tally {
        Tally::of_station(self)
    }

    fn recycle(&mut self, msg: Vec<u8>) -> Option<Vec<u8>> {
        Station::recycle(self, msg);
        None
    }
}
