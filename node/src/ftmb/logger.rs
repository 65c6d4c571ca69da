//! FTMB's logger server of one middlebox, without I/O: the input logger (IL) keeps a copy of
//! every packet before the master sees it; the output logger (OL) keeps the master's PAL
//! messages and holds each processed packet until every PAL message it depends on arrived.
//! A PAL message lost on the way is asked for again from the master, and given up on (a
//! violation) only if it does not come.
//!
//! The OL also checks that the master numbered its PAL messages in an order its transactions'
//! dependencies allow (what lets a packet wait for a prefix of numbers): taken in number
//! order, each PAL message's update of a partition must be the next of that partition, and a
//! read must find every update it saw logged already. A master of several lanes numbers them
//! from one counter at commit, under the transaction's locks, for this to hold.

use std::collections::{BTreeMap, VecDeque};

use ftc_stm::LogKind;

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
    /// Resend requests sent to the master for lost PAL messages, PAL messages that came twice
    /// (a resend crossed the original), and PAL messages given up on.
    pub resend_requests: u64,
    pub pal_duplicates: u64,
    pub pals_given_up: u64,
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
        self.resend_requests += other.resend_requests;
        self.pal_duplicates += other.pal_duplicates;
        self.pals_given_up += other.pals_given_up;
        self.max_held = self.max_held.max(other.max_held);
    }
}

/// Nanoseconds a missing PAL message is waited for before the master is asked for it. PAL
/// messages trail packets that need them without being lost: a master's lane sends those it
/// numbered at the end of its batch, while its other lanes' packets may need them already, and
/// later still if the lane waits for a core meanwhile. 200 µs had lossless in-memory runs of
/// two lanes ask for PALs (and get them twice); 5 ms, as FTC's buffer's stall timeout, asks
/// for none. (A test hook has a PAL trail its own packet too:
/// [`crate::ftmb::FtmbConfig::pals_after_packet`].)
pub const ASK_AFTER_NS: u64 = 5_000_000;
/// Nanoseconds between requests for the same missing PAL messages.
pub const ASK_AGAIN_NS: u64 = 2_000_000;
/// Nanoseconds after which a missing PAL message is given up on. The master keeps the last
/// [`crate::ftmb::PAL_RETAINED`] of each lane to resend: about 4 ms of traffic at in-memory
/// rates, tens of milliseconds at the lab's. That suffices because the logger holds the
/// packets that need a missing PAL, so the master numbers little more past it than the
/// packets in flight (in memory the generator's window, 512 by default).
pub const GIVE_UP_NS: u64 = 200_000_000;
/// PAL messages that may wait behind a missing one before it is given up on.
pub const AHEAD_MAX: usize = 65_536;
/// How far past the log's unbroken prefix a PAL message's number, or a packet's PAL
/// requirement, may reach: more than a master numbers in [`GIVE_UP_NS`] (the longest the
/// prefix stays stuck) at 5 million packets a second. One further cannot come from a master
/// and is refused: held, or kept ahead, it would have the logger give up on every number up to
/// it, and a prefix moved to `u64::MAX` counts every later PAL message a duplicate and holds no
/// packet again.
pub const REACH_MAX: u64 = 1 << 20;

/// A missing PAL message: since when, and when to ask for it next.
#[derive(Debug, Clone, Copy)]
struct Gap {
    since: u64,
    ask_at: u64,
}

/// A PAL message that arrived ahead of a missing one: its kind, and the message as received.
#[derive(Debug)]
struct Logged {
    kind: LogKind,
    msg: Vec<u8>,
}

/// The IL and OL of one middlebox (they share a server, as in the thesis's re-implementation).
#[derive(Debug)]
pub struct Logger<P> {
    /// The input log: the last `input.capacity()` packets, slots reused round-robin.
    input: Vec<Vec<u8>>,
    input_capacity: usize,
    /// PAL messages 1 … `pals_seen` all arrived (the master numbers them 1, 2, …).
    pals_seen: u64,
    /// PAL messages above `pals_seen` that arrived (until those before them did).
    ahead: BTreeMap<u64, Logged>,
    /// Per partition, the updates logged by PAL messages 1 … `pals_seen` (counted from the
    /// first access seen); `None` once a PAL message was given up on (the order is unknown).
    updates: Option<Vec<Option<u64>>>,
    /// The first missing PAL message, while one is missing.
    gap: Option<Gap>,
    /// The last PAL message of the log's unbroken prefix, as received (the thesis's OL keeps
    /// only the last PAL). Releases are checked against its number: one that arrived ahead of
    /// a missing one is not in it yet, and one given up on never is.
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
            ahead: BTreeMap::new(),
            updates: Some(Vec::new()),
            gap: None,
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

    /// OL: a PAL message from the master. They come in the order it numbered them unless a
    /// link lost some (as a datagram or a frame can be lost): a later one is kept, and the
    /// missing ones are asked for again ([`Logger::poll_resend`]). One that came already
    /// (a resend that crossed the original) is counted and ignored; one numbered further than
    /// [`REACH_MAX`] past the log's prefix is refused.
    pub fn handle_pal(&mut self, msg: &[u8]) -> Result<(), PalError> {
        let header = pal::decode(msg)?;
        let n = header.number;
        if n <= self.pals_seen || self.ahead.contains_key(&n) {
            self.stats.pal_duplicates += 1;
            return Ok(());
        }
        self.within_reach(n)?;
        self.stats.pal_messages += 1;
        self.stats.pal_accesses += u64::from(header.accesses);
        if n == self.pals_seen + 1 {
            // The usual case: it joins the log at once, copied into the last PAL's buffer.
            let mut copy = std::mem::take(&mut self.last_pal);
            copy.clear();
            copy.extend_from_slice(msg);
            self.join(header.kind, copy);
            self.fold_ahead();
        } else {
            let logged = Logged {
                kind: header.kind,
                msg: msg.to_vec(),
            };
            self.ahead.insert(n, logged);
        }
        Ok(())
    }

    /// Moves `pals_seen` over the numbers in `ahead` that now follow it.
    fn fold_ahead(&mut self) {
        // Numbers in `ahead` are above `pals_seen`, so at least 1.
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() - 1 != self.pals_seen {
                break;
            }
            let Logged { kind, msg } = entry.remove();
            self.join(kind, msg);
        }
    }

    /// PAL message `msg` (of `kind`), numbered `pals_seen + 1`, joins the log's prefix and
    /// becomes its last PAL.
    fn join(&mut self, kind: LogKind, msg: Vec<u8>) {
        self.advance_to(self.pals_seen + 1);
        self.check_order(kind, &msg);
        self.last_pal = msg;
    }

    /// The only way `pals_seen` moves (to `n`, above it): whatever is missing after `n` is a
    /// new gap, timed from when it is next seen. Progress thus restarts the clock of a gap
    /// that remains, and a gap given up on leaves no clock behind that would have the next
    /// one (a PAL message merely late) given up on at once, never asked for.
    fn advance_to(&mut self, n: u64) {
        self.pals_seen = n;
        self.gap = None;
    }

    /// PAL message `pals_seen` joined the log's prefix: check that its accesses come in an
    /// order the transactions' dependencies allow (see the module docs).
    fn check_order(&mut self, kind: LogKind, msg: &[u8]) {
        let Some(updates) = self.updates.as_mut() else {
            return;
        };
        let mut wrong = None;
        for d in pal::accesses(msg) {
            let p = usize::from(d.partition.0);
            if updates.len() <= p {
                updates.resize(p + 1, None);
            }
            let (seen, before) = (d.seq.0, updates[p].unwrap_or(d.seq.0));
            let in_order = match kind {
                LogKind::Update => before == seen,
                _ => before >= seen,
            };
            if !in_order {
                wrong.get_or_insert((p, seen, before));
            }
            if kind == LogKind::Update {
                updates[p] = Some(seen.saturating_add(1));
            } else {
                updates[p] = Some(before);
            }
        }
        if let Some((p, seen, before)) = wrong {
            let n = self.pals_seen;
            self.violation(format!(
                "PAL message {n} ({kind:?}) accessed partition {p} after {seen} updates of it, but the PAL messages before it log {before}: the master numbered them out of dependency order"
            ));
        }
    }

    /// The highest PAL number known to exist: sent ahead of a gap, or needed by the oldest
    /// held packet.
    fn wanted(&self) -> u64 {
        let ahead = self.ahead.last_key_value().map_or(0, |(&n, _)| n);
        let needed = self.held.front().map_or(0, |&(needs, _)| needs);
        ahead.max(needed)
    }

    /// OL, at the end of each batch and at [`Logger::poll_timeout`]: the PAL messages to ask
    /// the master for again, as the first and last number, if some are missing and it is
    /// time to ask. A PAL message counts as missing once a later one arrived or a held packet
    /// needs it, and is asked for after [`ASK_AFTER_NS`], again every [`ASK_AGAIN_NS`]; after
    /// [`GIVE_UP_NS`] (or once [`AHEAD_MAX`] later ones wait) the logger moves past it, and
    /// reports the packets that leave without it as a violation.
    pub fn poll_resend(&mut self, now: u64) -> Option<(u64, u64)> {
        let wanted = self.wanted();
        if wanted <= self.pals_seen {
            self.gap = None;
            return None;
        }
        let gap = *self.gap.get_or_insert(Gap {
            since: now,
            ask_at: now.saturating_add(ASK_AFTER_NS),
        });
        let first = self.pals_seen + 1;
        let last = self
            .ahead
            .first_key_value()
            .map_or(wanted, |(&next, _)| next - 1);
        if now.saturating_sub(gap.since) >= GIVE_UP_NS || self.ahead.len() >= AHEAD_MAX {
            self.violation(format!(
                "the output logger gave up on PAL messages {first}..={last}: asked for again, they did not come"
            ));
            self.stats.pals_given_up = self.stats.pals_given_up.saturating_add(last - first + 1);
            self.advance_to(last);
            // What the missing ones updated is unknown: the order is no longer checked.
            self.updates = None;
            self.fold_ahead();
            return None;
        }
        if now < gap.ask_at {
            return None;
        }
        self.gap = Some(Gap {
            ask_at: now.saturating_add(ASK_AGAIN_NS),
            ..gap
        });
        self.stats.resend_requests += 1;
        Some((first, last))
    }

    /// When [`Logger::poll_resend`] has something to do next (a missing PAL message).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.gap
            .map(|g| g.ask_at.min(g.since.saturating_add(GIVE_UP_NS)))
    }

    /// Refuses PAL number `n` (a message's, or a packet's requirement) if it lies more than
    /// [`REACH_MAX`] past the log's prefix.
    fn within_reach(&self, n: u64) -> Result<(), PalError> {
        if n.saturating_sub(self.pals_seen) > REACH_MAX {
            return Err(PalError::OutOfReach {
                number: n,
                logged: self.pals_seen,
                max: REACH_MAX,
            });
        }
        Ok(())
    }

    /// OL: a packet the master processed; it may leave once `needs` PAL messages arrived.
    /// A requirement out of [`REACH_MAX`] is refused, the packet given back with why.
    pub fn handle_packet(
        &mut self,
        needs: u64,
        packet: Packet<P>,
    ) -> Result<(), (PalError, Packet<P>)> {
        if let Err(e) = self.within_reach(needs) {
            return Err((e, packet));
        }
        if needs > self.pals_seen {
            self.stats.packets_waited += 1;
        }
        self.held.push_back((needs, packet));
        self.stats.max_held = self.stats.max_held.max(self.held.len());
        Ok(())
    }

    /// OL: the next packet that may leave, in the order the master sent them. Every release
    /// is checked against the PAL log itself (the number in the last PAL message of its
    /// unbroken prefix), not the counter the rule reads: a packet that leaves before all the
    /// PALs it needs arrived (or after one of them was given up on) is a violation.
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

    /// The violations seen and not yet taken.
    pub fn violations(&self) -> &[String] {
        &self.violations
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

        l.handle_packet(1, packet(10)).unwrap();
        l.handle_packet(1, packet(11)).unwrap();
        assert_eq!(l.poll_release(), None);
        l.handle_pal(&pal_message(1)).unwrap();
        assert_eq!(l.poll_release().map(|p| p.handle), Some(10));
        assert_eq!(l.poll_release().map(|p| p.handle), Some(11));
        assert_eq!(l.poll_release(), None);
        assert_eq!(l.stats().packets_waited, 2);
        assert!(l.take_violations().is_empty());

        // PAL 2 is lost: 3 is kept, and a packet that needs 3 waits for 2 as well.
        l.handle_pal(&pal_message(3)).unwrap();
        l.handle_packet(3, packet(12)).unwrap();
        assert_eq!(l.poll_resend(100), None, "not asked for at once");
        assert_eq!(l.poll_timeout(), Some(100 + ASK_AFTER_NS));
        assert_eq!(l.poll_resend(100 + ASK_AFTER_NS), Some((2, 2)));
        assert_eq!(l.poll_resend(101 + ASK_AFTER_NS), None, "asked again later");
        assert_eq!(
            l.poll_resend(100 + ASK_AFTER_NS + ASK_AGAIN_NS),
            Some((2, 2))
        );
        assert_eq!(l.poll_release(), None);
        l.handle_pal(&pal_message(2)).unwrap();
        assert_eq!(l.poll_release().map(|p| p.handle), Some(12));
        // A resend that crossed the original is counted, not kept again.
        l.handle_pal(&pal_message(2)).unwrap();
        assert_eq!(l.poll_resend(1_000_000_000), None);
        let s = l.stats();
        assert_eq!(
            (s.pal_messages, s.pal_duplicates, s.resend_requests),
            (3, 1, 2)
        );
        assert!(l.take_violations().is_empty());
    }

    /// PAL messages that never come: the last ones (only a held packet says they exist) are
    /// asked for too, and after [`GIVE_UP_NS`] the logger moves past them, a violation.
    #[test]
    fn the_output_logger_gives_up_on_pals_that_do_not_come() {
        let mut l = Logger::new(2, 8, false);
        l.handle_packet(2, packet(1)).unwrap();
        assert_eq!(l.poll_resend(10), None);
        assert_eq!(l.poll_resend(10 + ASK_AFTER_NS), Some((1, 2)));
        l.handle_pal(&pal_message(1)).unwrap();
        assert_eq!(l.poll_release(), None);
        // Progress restarts the clock: PAL 2 is given up on GIVE_UP_NS after PAL 1 came.
        assert_eq!(l.poll_resend(20 + ASK_AFTER_NS), None);
        assert_eq!(l.poll_resend(19 + ASK_AFTER_NS + GIVE_UP_NS), Some((2, 2)));
        assert_eq!(l.poll_resend(20 + ASK_AFTER_NS + GIVE_UP_NS), None);
        assert_eq!(l.poll_release().map(|p| p.handle), Some(1));
        assert_eq!(l.stats().pals_given_up, 1);
        // The give-up, then the packet that left without PAL 2.
        let v = l.take_violations();
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("gave up on PAL messages 2..=2"), "{v:?}");
        assert!(v[1].contains("needs PAL message 2"), "{v:?}");
    }

    /// A gap given up on is forgotten with it: the next missing PAL message (one only a held
    /// packet shows, merely late) is a new gap, asked for before it could be given up on.
    #[test]
    fn a_gap_given_up_on_does_not_hurry_the_next_one() {
        let mut l = Logger::new(2, 8, false);
        // PAL 1 is lost for good.
        l.handle_packet(1, packet(1)).unwrap();
        assert_eq!(l.poll_resend(0), None);
        assert_eq!(l.poll_resend(ASK_AFTER_NS), Some((1, 1)));
        assert_eq!(l.poll_resend(GIVE_UP_NS), None, "given up on");
        assert_eq!(l.stats().pals_given_up, 1);
        assert_eq!(l.poll_timeout(), None, "nothing is missing now");
        assert_eq!(l.poll_release().map(|p| p.handle), Some(1));
        // PAL 2 is late: its packet comes first.
        let t = GIVE_UP_NS + 1_000;
        l.handle_packet(2, packet(2)).unwrap();
        assert_eq!(
            l.poll_resend(t),
            None,
            "neither asked for nor given up on yet"
        );
        assert_eq!(l.poll_timeout(), Some(t + ASK_AFTER_NS));
        assert_eq!(l.poll_resend(t + ASK_AFTER_NS), Some((2, 2)));
        assert_eq!(l.poll_release(), None);
        l.handle_pal(&pal_message(2)).unwrap();
        assert_eq!(l.poll_release().map(|p| p.handle), Some(2));
        assert_eq!(l.poll_timeout(), None);
        let s = l.stats();
        assert_eq!((s.pals_given_up, s.resend_requests), (1, 2));
        // The give-up of PAL 1 and the packet that left without it; nothing about PAL 2.
        let v = l.take_violations();
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("gave up on PAL messages 1..=1"), "{v:?}");
    }

    /// Numbers no master can have taken yet (a malformed requirement or PAL message from the
    /// master's address) are refused: no give-up moves the prefix to them, and the gate goes
    /// on holding packets.
    #[test]
    fn numbers_out_of_reach_are_refused() {
        let mut l = Logger::new(2, 8, false);
        for needs in [REACH_MAX + 1, u64::MAX] {
            let (e, p) = l.handle_packet(needs, packet(needs)).unwrap_err();
            assert_eq!(p.handle, needs);
            let want = PalError::OutOfReach {
                number: needs,
                logged: 0,
                max: REACH_MAX,
            };
            assert_eq!(e, want);
        }
        assert!(matches!(
            l.handle_pal(&pal_message(u64::MAX)),
            Err(PalError::OutOfReach { .. })
        ));
        assert_eq!(l.poll_resend(GIVE_UP_NS), None);
        assert_eq!(l.poll_timeout(), None, "nothing is missing");
        assert_eq!(l.stats().pals_given_up, 0);
        l.handle_packet(1, packet(1)).unwrap();
        assert_eq!(l.poll_release(), None, "held until PAL 1 arrives");
        l.handle_pal(&pal_message(1)).unwrap();
        assert_eq!(l.poll_release().map(|p| p.handle), Some(1));
        // As far as the bound reaches is taken.
        l.handle_packet(1 + REACH_MAX, packet(2)).unwrap();
        assert_eq!(l.poll_release(), None);
        assert!(l.take_violations().is_empty());
    }

    /// Lanes that number PAL messages in an order their dependencies do not allow (as one
    /// that took its number after releasing its locks could) are caught, whatever order the
    /// messages arrive in; the same accesses numbered in order are not.
    #[test]
    fn the_output_logger_catches_pals_numbered_out_of_dependency_order() {
        let msg = |number, kind, p, s| {
            let mut out = Vec::new();
            pal::encode(&mut out, number, kind, &[DepEntry::new(p, s)]);
            out
        };
        let (u, r) = (LogKind::Update, LogKind::ReadOnly);
        // Partition 3's updates 0, 1, 2 and a read after update 1, in a right order, then
        // with the third update numbered before the second, and with the read before update 1.
        let good = [
            msg(1, u, 3, 0),
            msg(2, u, 3, 1),
            msg(3, r, 3, 2),
            msg(4, u, 3, 2),
        ];
        let swapped = [msg(1, u, 3, 0), msg(2, u, 3, 2), msg(3, u, 3, 1)];
        let early_read = [msg(1, u, 3, 0), msg(2, r, 3, 2), msg(3, u, 3, 1)];
        // Sequence numbers come off the wire: the largest there is does not overflow the count
        // (the count stays there, so a second update at it is not out of order).
        let last = [msg(1, u, 3, u64::MAX), msg(2, u, 3, u64::MAX)];
        for (pals, wrong) in [
            (&good[..], None),
            (&swapped, Some(2)),
            (&early_read, Some(2)),
            (&last, None),
        ] {
            for reversed in [false, true] {
                let mut l = Logger::<u64>::new(2, 8, false);
                let mut order: Vec<_> = pals.iter().collect();
                if reversed {
                    order.reverse();
                }
                for m in order {
                    l.handle_pal(m).unwrap();
                }
                assert_eq!(l.pals_seen, pals.len() as u64);
                let v = l.take_violations();
                match wrong {
                    None => assert!(v.is_empty(), "{v:?}"),
                    // The first message out of order, and maybe the one it swapped with.
                    Some(n) => assert!(
                        v.first()
                            .is_some_and(|v| v.starts_with(&format!("PAL message {n} "))),
                        "{v:?}"
                    ),
                }
            }
        }
    }

    #[test]
    fn the_check_catches_an_output_logger_that_does_not_wait() {
        let mut l = Logger::new(4, 8, true);
        l.handle_packet(1, packet(10)).unwrap();
        assert!(l.poll_release().is_some());
        assert_eq!(l.take_violations().len(), 1);
        // Only PAL 3 arrived: a packet that needs 2 leaves without 1 and 2 all the same.
        l.handle_pal(&pal_message(3)).unwrap();
        l.handle_packet(2, packet(11)).unwrap();
        assert!(l.poll_release().is_some());
        let v = l.take_violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("needs PAL message 2"), "{v:?}");
        // Once 1 and 2 arrived, 1 … 3 are all logged: a packet that needs 3 is no violation.
        l.handle_pal(&pal_message(1)).unwrap();
        l.handle_pal(&pal_message(2)).unwrap();
        l.handle_packet(3, packet(12)).unwrap();
        assert!(l.poll_release().is_some());
        assert_eq!(l.take_violations(), Vec::<String>::new());
    }
}
