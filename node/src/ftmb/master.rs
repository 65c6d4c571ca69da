//! FTMB's master of one middlebox, without I/O: runs each packet as a transaction over the STM
//! and writes its packet access log (PAL) from the transaction's commit record: one access per
//! partition read or written, with the partition's access order number. It keeps its last
//! [`PAL_RETAINED`] PAL messages, to send again those a link lost.
//!
//! A master of several lanes (worker threads over one store) is a [`Master`] per lane, all
//! numbering their PAL messages from one [`PalNumbers`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
    /// The number of the PAL message written, if the transaction touched state.
    pub number: Option<u64>,
    /// PAL messages the output logger must have before the packet may leave: every number
    /// the master's lanes had taken when the transaction had committed. A transaction takes
    /// its number before it releases its locks, so this covers the packet's own accesses and
    /// those of every transaction whose writes it read (and of theirs, and so on).
    pub needs: u64,
}

/// The PAL numbers of one master, 1, 2, …, shared by its lanes: a transaction that touched
/// state takes the next at its commit, while it still holds its locks
/// ([`ftc_stm::Worker::run_then`]).
#[derive(Debug, Default)]
pub struct PalNumbers(AtomicU64);

impl PalNumbers {
    fn take(&self) -> u64 {
        self.0.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The numbers taken so far.
    fn taken(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
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
    numbers: Arc<PalNumbers>,
    /// The last PAL messages this lane wrote, up to [`PAL_RETAINED`], in the order of their
    /// numbers; the oldest's buffer is reused for the next.
    retained: VecDeque<Vec<u8>>,
    /// The last real snapshot, in the store's snapshot byte form; its buffer is reused.
    snapshot: Vec<u8>,
}

impl<'a> Master<'a> {
    /// The master (or a lane of it) of `head` (a middlebox and a worker of its store), its PAL
    /// messages numbered from `numbers` (shared by every lane of the master).
    pub fn new(
        head: (MbIndex, &'a dyn Middlebox, Worker<'a>),
        headroom: usize,
        numbers: Arc<PalNumbers>,
    ) -> Self {
        let (mb, middlebox, worker) = head;
        Master {
            mb,
            middlebox,
            worker,
            headroom,
            scratch: Vec::new(),
            numbers,
            retained: VecDeque::new(),
            snapshot: Vec::new(),
        }
    }

    pub fn middlebox(&self) -> MbIndex {
        self.mb
    }

    /// Transactions this master (or lane) committed.
    pub fn transactions(&self) -> u64 {
        self.worker.stats().0
    }

    /// Process `packet` at `now`; when it touched state, its PAL message is written to `pal`.
    pub fn process<P>(&mut self, now: u64, packet: &mut Packet<P>, pal: &mut Vec<u8>) -> Processed {
        let numbers = &self.numbers;
        let mut number = None;
        let (verdict, rec) = transact(
            &mut self.worker,
            self.middlebox,
            packet,
            self.headroom,
            now,
            &mut self.scratch,
            |kind| {
                if kind != LogKind::Noop {
                    number = Some(numbers.take());
                }
            },
        );
        let needs = numbers.taken();
        if let Some(n) = number {
            pal::encode(pal, n, rec.kind(), rec.dep_entries());
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
            number,
            needs,
        }
    }

    /// PAL message `number` as sent, if this lane wrote it and still keeps it.
    pub fn retained(&self, number: u64) -> Option<&[u8]> {
        let i = self
            .retained
            .binary_search_by_key(&number, |m| pal::number(m).unwrap_or(0))
            .ok()?;
        Some(&self.retained[i])
    }

    /// A real snapshot: copy the whole store and its vector (every partition locked while it
    /// copies, so no transaction is half in it); the bytes copied. The copy is the store's
    /// snapshot byte form, written straight from its tables into the last snapshot's buffer:
    /// the stall is the copy itself, not a key and value allocated per entry and a sort.
    pub fn snapshot(&mut self) -> u64 {
        self.snapshot.clear();
        self.worker
            .store()
            .export_into(&mut self.snapshot)
            .expect("a middlebox's keys and values are far shorter than MAX_ITEM_LEN (1 MiB)");
        self.snapshot.len() as u64
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
        let mut m = Master::new(
            heads.head(&ring, ring.forwarder()).unwrap(),
            128,
            Arc::default(),
        );
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
            assert_eq!(out.number, Some(i));
            assert_eq!(out.needs, i);
            let h = pal::decode(&pal).unwrap();
            assert_eq!((h.number, h.kind, h.accesses), (i, LogKind::Update, 1));
            assert_eq!(p.bytes.len(), 128, "the headroom is given back");
            assert_eq!(m.retained(i), Some(pal.as_slice()));
        }
        assert_eq!(m.retained(0), None);
        assert_eq!(m.retained(4), None);
        assert_eq!(m.retained(2).map(pal::number), Some(Some(2)));

        // A snapshot is a full copy of the store: it reads back as the same state and vector.
        let store = &heads.stores[0];
        let copied = m.snapshot();
        assert_eq!(copied, m.snapshot.len() as u64);
        let copy = ftc_stm::Store::import(&m.snapshot, 1).unwrap();
        assert_eq!(copy.to_map(), store.to_map());
        assert_eq!(copy.vector(), store.vector());
        // The next one copies into the same buffer.
        let at = m.snapshot.as_ptr();
        assert_eq!(m.snapshot(), copied);
        assert_eq!(m.snapshot.as_ptr(), at);
    }
}
