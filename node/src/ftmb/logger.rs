//! FTMB's logger server of one middlebox, without I/O: the input logger (IL) keeps a copy of
//! every packet before the master sees it; the output logger (OL) keeps the master's PAL
//! messages and holds each processed packet until every PAL message it depends on arrived.

use std::collections::VecDeque;

use super::pal::{self, PalError};
use crate::Packet;

/// What a logger did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoggerStats {
    /// Packets the input logger copied.
    pub packets_logged: u64,
    /// PAL messages the output logger received, and the state accesses they logged.
    pub pal_messages: u64,
    pub pal_accesses: u64,
    /// Packets that reached the output logger before the PAL messages they depend on.
    pub packets_waited: u64,
    /// Most packets the output logger held at once.
    pub max_held: usize,
}

impl LoggerStats {
    /// Add another logger's counts (maxima for maxima).
    pub fn add(&mut self, other: &LoggerStats) {
        self.packets_logged += other.packets_logged;
        self.pal_messages += other.pal_messages;
        self.pal_accesses += other.pal_accesses;
        self.packets_waited += other.packets_waited;
        self.max_held = self.max_held.max(other.max_held);
    }
}

/// The IL and OL of one middlebox (they share a server, as in the thesis's re-implementation).
#[derive(Debug)]
pub struct Logger<P> {
    /// The input log: the last `input.capacity()` packets, slots reused round-robin.
    input: Vec<Vec<u8>>,
    input_capacity: usize,
    /// PAL messages received, in order (the master numbers them 1, 2, …).
    pals_seen: u64,
    /// The last PAL message, as received (the thesis's OL keeps only the last PAL).
    last_pal: Vec<u8>,
    /// Processed packets waiting to leave, in the master's order, with their PAL requirement.
    held: VecDeque<(u64, Packet<P>)>,
    max_held: usize,
    release_without_pals: bool,
    stats: LoggerStats,
    violations: Vec<String>,
}

impl<P> Logger<P> {
    /// A logger whose IL keeps the last `input_log` packets (at least 1) and whose OL reports
    /// itself congested at `max_held` held packets. `release_without_pals` is the checker's
    /// test hook: the OL then lets packets go without waiting for their PALs.
    pub fn new(input_log: usize, max_held: usize, release_without_pals: bool) -> Self {
        Logger {
            input: Vec::new(),
            input_capacity: input_log.max(1),
            pals_seen: 0,
            last_pal: Vec::new(),
            held: VecDeque::new(),
            max_held: max_held.max(1),
            release_without_pals,
            stats: LoggerStats::default(),
            violations: Vec::new(),
        }
    }

    pub fn stats(&self) -> &LoggerStats {
        &self.stats
    }

    /// IL: keep a copy of a packet on its way to the master. Once the log is full the oldest
    /// copy's buffer is reused, so the log costs a copy and no allocation per packet.
    pub fn log_input(&mut self, bytes: &[u8]) {
        let slot = (self.stats.packets_logged % self.input_capacity as u64) as usize;
        match self.input.get_mut(slot) {
            Some(copy) => {
                copy.clear();
                copy.extend_from_slice(bytes);
            }
            None => self.input.push(bytes.to_vec()),
        }
        self.stats.packets_logged += 1;
    }

    /// OL: a PAL message from the master. They arrive in the order it numbered them; one out
    /// of order is an error. A later one than due (the PALs between were lost on the way, as a
    /// datagram or a frame can be) is kept all the same, so that a loss costs an error and not
    /// a chain that holds every packet from then on; an earlier one is ignored.
    pub fn handle_pal(&mut self, msg: &[u8]) -> Result<(), PalError> {
        let header = pal::decode(msg)?;
        let expected = self.pals_seen + 1;
        let out_of_order = PalError::OutOfOrder {
            expected,
            got: header.number,
        };
        if header.number < expected {
            return Err(out_of_order);
        }
        self.pals_seen = header.number;
        self.stats.pal_messages += 1;
        self.stats.pal_accesses += u64::from(header.accesses);
        self.last_pal.clear();
        self.last_pal.extend_from_slice(msg);
        if header.number > expected {
            return Err(out_of_order);
        }
        Ok(())
    }

    /// OL: a packet the master processed; it may leave once `needs` PAL messages arrived.
    pub fn handle_packet(&mut self, needs: u64, packet: Packet<P>) {
        if needs > self.pals_seen {
            self.stats.packets_waited += 1;
        }
        self.held.push_back((needs, packet));
        self.stats.max_held = self.stats.max_held.max(self.held.len());
    }

    /// OL: the next packet that may leave, in the order the master sent them. Every release
    /// is checked against the PAL log itself (the number of the last PAL message kept), not
    /// the counter the rule reads: a packet that leaves before its PALs is a violation.
    pub fn poll_release(&mut self) -> Option<Packet<P>> {
        let &(needs, _) = self.held.front()?;
        if needs > self.pals_seen && !self.release_without_pals {
            return None;
        }
        let logged = pal::number(&self.last_pal).unwrap_or(0);
        if logged < needs {
            self.violation(format!(
                "the output logger released a packet that needs PAL message {needs} when the last it logged is {logged}"
            ));
        }
        self.held.pop_front().map(|(_, packet)| packet)
    }

    /// Whether the OL holds `max_held` packets or more (drivers then admit no new packets).
    pub fn congested(&self) -> bool {
        self.held.len() >= self.max_held
    }

    /// Something that must not happen happened (kept for the run's report, the first 10).
    pub fn violation(&mut self, what: String) {
        if self.violations.len() < 10 {
            self.violations.push(what);
        }
    }

    /// The violations seen so far.
    pub fn take_violations(&mut self) -> Vec<String> {
        std::mem::take(&mut self.violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftc_chain::middlebox::Direction;
    use ftc_stm::{DepEntry, LogKind, Partition, Seq};

    fn packet(handle: u64) -> Packet<u64> {
        Packet {
            handle,
            flow: 0,
            dir: Direction::Outbound,
            bytes: vec![1, 2, 3],
        }
    }

    fn pal_message(number: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let dep = DepEntry {
            partition: Partition(3),
            seq: Seq(number - 1),
        };
        pal::encode(&mut out, number, LogKind::Update, &[dep]);
        out
    }

    #[test]
    fn the_output_logger_holds_a_packet_until_its_pal_arrives() {
        let mut l = Logger::new(2, 8, false);
        for _ in 0..3 {
            l.log_input(&[9; 64]);
        }
        assert_eq!(l.stats().packets_logged, 3);
        assert_eq!(l.input.len(), 2, "the input log is bounded");

        l.handle_packet(1, packet(10));
        l.handle_packet(1, packet(11));
        assert_eq!(l.poll_release(), None);
        l.handle_pal(&pal_message(1)).unwrap();
        assert_eq!(l.poll_release().map(|p| p.handle), Some(10));
        assert_eq!(l.poll_release().map(|p| p.handle), Some(11));
        assert_eq!(l.poll_release(), None);
        assert_eq!(l.stats().packets_waited, 2);
        assert!(l.take_violations().is_empty());

        assert_eq!(
            l.handle_pal(&pal_message(3)),
            Err(PalError::OutOfOrder {
                expected: 2,
                got: 3
            })
        );
        // PAL 2 was lost: the error is reported, and the packets that need PAL 3 go on.
        l.handle_packet(3, packet(12));
        assert_eq!(l.poll_release().map(|p| p.handle), Some(12));
        assert!(
            l.handle_pal(&pal_message(2)).is_err(),
            "a late PAL is ignored"
        );
        assert_eq!(l.stats().pal_messages, 2);
        assert!(l.take_violations().is_empty());
    }

    #[test]
    fn the_check_catches_an_output_logger_that_does_not_wait() {
        let mut l = Logger::new(4, 8, true);
        l.handle_packet(1, packet(10));
        assert!(l.poll_release().is_some());
        assert_eq!(l.take_violations().len(), 1);
    }
}
