//! FTMB's master of one middlebox, without I/O: runs each packet as a transaction over the STM
//! and writes its packet access log (PAL) from the transaction's commit record: one access per
//! partition read or written, with the partition's access order number. It keeps its last
//! [`PAL_RETAINED`] PAL messages, to send again those a link lost.

use std::collections::VecDeque;

use ftc_chain::middlebox::{Middlebox, Verdict};
use ftc_chain::ring::MbIndex;
use ftc_stm::{LogKind, LogSource, Worker};

use super::pal;
use crate::server::transact;
use crate::Packet;

/// What the master did with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Processed {
    pub verdict: Verdict,
    /// Whether the transaction touched state, so that a PAL message was written.
    pub pal: bool,
    /// PAL messages the output logger must have before the packet may leave: all this master
    /// sent so far. Numbers follow commit order, so they cover the packet's own accesses and
    /// those of every earlier transaction whose writes it read.
    pub needs: u64,
}

/// PAL messages a master keeps for resending (its input logger keeps as many packets).
pub const PAL_RETAINED: usize = 4096;

/// One middlebox's master.
#[derive(Debug)]
pub struct Master<'a> {
    mb: MbIndex,
    middlebox: &'a dyn Middlebox,
    worker: Worker<'a>,
    /// Bytes a middlebox may grow a packet by.
    headroom: usize,
    scratch: Vec<u8>,
    pals: u64,
    /// The last PAL messages written, up to [`PAL_RETAINED`], the newest (number `pals`) last;
    /// the oldest's buffer is reused for the next.
    retained: VecDeque<Vec<u8>>,
}

impl<'a> Master<'a> {
    /// The master of `head` (a middlebox and a worker of its store).
    pub fn new(head: (MbIndex, &'a dyn Middlebox, Worker<'a>), headroom: usize) -> Self {
        let (mb, middlebox, worker) = head;
        Master {
            mb,
            middlebox,
            worker,
            headroom,
            scratch: Vec::new(),
            pals: 0,
            retained: VecDeque::new(),
        }
    }

    pub fn middlebox(&self) -> MbIndex {
        self.mb
    }

    /// Process `packet` at `now`; when it touched state, its PAL message is written to `pal`.
    pub fn process<P>(&mut self, now: u64, packet: &mut Packet<P>, pal: &mut Vec<u8>) -> Processed {
        let (verdict, rec) = transact(
            &mut self.worker,
            self.middlebox,
            packet,
            self.headroom,
            now,
            &mut self.scratch,
        );
        let logged = rec.kind() != LogKind::Noop;
        if logged {
            self.pals += 1;
            pal::encode(pal, self.pals, rec.kind(), rec.dep_entries());
            let mut copy = match self.retained.len() {
                PAL_RETAINED.. => self.retained.pop_front().unwrap_or_default(),
                _ => Vec::new(),
            };
            copy.clear();
            copy.extend_from_slice(pal);
            self.retained.push_back(copy);
        }
        Processed {
            verdict,
            pal: logged,
            needs: self.pals,
        }
    }

    /// PAL message `number` as sent, if it is still kept.
    pub fn retained(&self, number: u64) -> Option<&[u8]> {
        let oldest = self.pals + 1 - self.retained.len() as u64;
        let i = number.checked_sub(oldest)?;
        self.retained
            .get(usize::try_from(i).ok()?)
            .map(Vec::as_slice)
    }

    /// A real snapshot: copy the whole store and its vector (every partition locked while it
    /// copies, so no transaction is half in it); the bytes copied.
    pub fn snapshot(&self) -> u64 {
        let s = self.worker.store().export();
        let entries: usize = s.entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        (s.vector.len() * 8 + entries) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftc_chain::middlebox::Direction;
    use ftc_chain::spec::ChainSpec;

    #[test]
    fn a_monitor_master_logs_one_pal_per_packet_and_snapshots_its_counter() {
        let spec = ChainSpec::from_toml_str(
            "[chain]\nname = \"m\"\nf = 1\n\n[[middlebox]]\nkind = \"monitor\"\nsharing_level = 1\n",
            "test",
        )
        .unwrap();
        let heads = crate::Heads::new(&spec, |_| 1).unwrap();
        let ring = spec.ring();
        let mut m = Master::new(heads.head(&ring, ring.forwarder()).unwrap(), 128);
        let mut pal = Vec::new();
        for i in 1..=3u64 {
            let mut p = Packet {
                handle: i,
                flow: 0,
                dir: Direction::Outbound,
                bytes: crate::traffic::request(0, 1, 128),
            };
            let out = m.process(i, &mut p, &mut pal);
            assert_eq!(out.verdict, Verdict::Forward);
            assert!(out.pal);
            assert_eq!(out.needs, i);
            let h = pal::decode(&pal).unwrap();
            assert_eq!((h.number, h.kind, h.accesses), (i, LogKind::Update, 1));
            assert_eq!(p.bytes.len(), 128, "the headroom is given back");
            assert_eq!(m.retained(i), Some(pal.as_slice()));
        }
        assert_eq!(m.retained(0), None);
        assert_eq!(m.retained(4), None);
        assert_eq!(m.retained(2).map(pal::number), Some(Some(2)));
        assert!(m.snapshot() > 0);
    }
}
