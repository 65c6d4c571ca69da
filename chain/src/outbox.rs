//! [`Outbox`]: piggyback content waiting for a frame to ride on: encoded logs in arrival order
//! and commit vectors coalesced by element-wise max, written into messages within a budget.
//!
//! The buffer gathers what goes back to the forwarder in one, the forwarder keeps what it will
//! attach to the next packets in one, and a server puts what did not fit a packet's trailer in
//! one. Logs are never dropped. Commit vector entries are coalesced by max and each entry that
//! arrived since the last write is written once; a stale entry (below what is known) is not.
//! An entry equal to one written before is written again: a tail announces an entry again when a
//! predecessor shows it never got it, and that must get through.

use ftc_stm::DepEntry;

use crate::logqueue::LogQueue;
use crate::wire::{CommitVector, Counted, LogView, MessageView, MessageWriter, WireError};

/// Logs and commit vectors waiting to be sent.
#[derive(Debug, Clone)]
pub struct Outbox {
    partitions: usize,
    logs: LogQueue<()>,
    /// Per middlebox: the newest commit vector known, and which of its partitions to write.
    cvs: Vec<Option<PendingCv>>,
    /// Whether any partition of any middlebox is to be written.
    cv_pending: bool,
}

/// One middlebox's newest commit vector and the entries of it still to write.
#[derive(Debug, Clone)]
struct PendingCv {
    known: CommitVector,
    dirty: Vec<bool>,
    /// How many of `dirty` are set: the size of the next write, known without a scan.
    count: usize,
}

impl PendingCv {
    fn new(partitions: usize) -> Self {
        PendingCv {
            known: CommitVector::new(partitions),
            dirty: vec![false; partitions],
            count: 0,
        }
    }

    /// The first `n` (at most [`PendingCv::count`]) entries to write, partitions increasing,
    /// with an exact length.
    fn entries(&self, n: usize) -> impl Iterator<Item = DepEntry> + Clone + '_ {
        debug_assert_eq!(self.count, self.dirty.iter().filter(|&&d| d).count());
        debug_assert!(n <= self.count);
        let dirty = &self.dirty;
        let entries = self
            .known
            .iter()
            .filter(move |e| dirty[usize::from(e.partition.0)]);
        Counted::new(entries.take(n), n)
    }

    /// The first `n` entries to write were written.
    fn written(&mut self, n: usize) {
        if n == self.count {
            self.dirty.fill(false);
        } else {
            for d in self.dirty.iter_mut().filter(|d| **d).take(n) {
                *d = false;
            }
        }
        self.count -= n;
    }
}

impl Outbox {
    /// An empty outbox for middleboxes of `partitions` partitions.
    pub fn new(partitions: usize) -> Self {
        Outbox {
            partitions,
            logs: LogQueue::default(),
            cvs: Vec::new(),
            cv_pending: false,
        }
    }

    /// Drop everything queued.
    pub fn clear(&mut self) {
        *self = Outbox::new(self.partitions);
    }

    /// Queue a log.
    pub fn push_log(&mut self, log: &LogView<'_>) {
        self.logs.push(log, ());
    }

    /// Merge commit vector entries of middlebox `mb`.
    pub fn merge_cv(&mut self, mb: u8, entries: impl Iterator<Item = DepEntry>) {
        let i = usize::from(mb);
        if self.cvs.len() <= i {
            self.cvs.resize(i + 1, None);
        }
        let p = self.partitions;
        let cv = self.cvs[i].get_or_insert_with(|| PendingCv::new(p));
        for e in entries {
            if cv.known.get(e.partition).is_some_and(|k| e.seq >= k) {
                cv.known.merge(std::iter::once(e));
                let dirty = &mut cv.dirty[usize::from(e.partition.0)];
                cv.count += usize::from(!*dirty);
                *dirty = true;
                self.cv_pending = true;
            }
        }
    }

    /// Queue every log and merge every commit vector of `msg`.
    pub fn absorb(&mut self, msg: &MessageView<'_>) {
        for log in msg.logs() {
            self.push_log(&log);
        }
        for cv in msg.commit_vectors() {
            self.merge_cv(cv.middlebox(), cv.entries());
        }
    }

    /// Number of queued logs.
    pub fn log_count(&self) -> usize {
        self.logs.len()
    }

    /// Bytes of queued logs.
    pub fn log_bytes(&self) -> usize {
        self.logs.byte_len()
    }

    /// Whether nothing waits: no log and no commit vector entry.
    pub fn is_empty(&self) -> bool {
        debug_assert_eq!(
            self.cv_pending,
            self.cvs.iter().flatten().any(|cv| cv.count > 0)
        );
        self.logs.is_empty() && !self.cv_pending
    }

    /// Write queued logs (oldest first) and the pending commit vector entries into `w`, as many
    /// as fit; what does not fit stays queued. Returns whether everything was written.
    pub fn fill(&mut self, w: &mut MessageWriter<'_>) -> Result<bool, WireError> {
        while let Some((log, ())) = self.logs.front() {
            match w.push_log_view(&log) {
                Ok(()) => self.logs.pop_front(),
                Err(WireError::NoRoom) => break,
                Err(e) => return Err(e),
            }
        }
        let mut all = self.logs.is_empty();
        if !self.cv_pending {
            return Ok(all);
        }
        let mut cvs_left = false;
        for (mb, slot) in self.cvs.iter_mut().enumerate() {
            let Some(cv) = slot else { continue };
            if cv.count == 0 {
                continue;
            }
            // A full frame is told apart without walking the entries. A vector that does not
            // fit a message with nothing else in it would not fit any frame of this size: it
            // goes in parts, as many entries as fit, partitions increasing (a commit vector may
            // name any subset of its entries; receivers merge them by element-wise max).
            let room = w.cv_room();
            let fresh = w.log_count() == 0 && w.cv_count() == 0;
            let take = if cv.count <= room {
                cv.count
            } else if fresh && room > 0 {
                room
            } else {
                all = false;
                cvs_left = true;
                continue;
            };
            match w.push_cv(mb as u8, cv.entries(take)) {
                Ok(()) => cv.written(take),
                Err(WireError::NoRoom) => {}
                Err(e) => return Err(e),
            }
            if cv.count > 0 {
                all = false;
                cvs_left = true;
            }
        }
        self.cv_pending = cvs_left;
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use ftc_stm::LogKind;

    use super::*;
    use crate::wire::{LogRepr, MessageRepr};

    fn dep(p: u16, s: u64) -> DepEntry {
        DepEntry::new(p, s)
    }

    fn log(mb: u8, seq: u64) -> Vec<u8> {
        let repr = LogRepr {
            middlebox: mb,
            kind: LogKind::Update,
            deps: vec![dep(1, seq)],
            writes: vec![(b"key".to_vec(), Some(vec![7; 20]))],
        };
        let mut buf = vec![0; repr.buffer_len()];
        repr.emit(&mut buf).unwrap();
        buf
    }

    fn drain(outbox: &mut Outbox, budget: usize) -> (MessageRepr, bool) {
        let mut buf = vec![0; budget];
        let mut w = MessageWriter::new(&mut buf, 0).unwrap();
        let all = outbox.fill(&mut w).unwrap();
        let len = w.finish();
        (
            MessageRepr::parse(&MessageView::new_checked(&buf[..len]).unwrap()),
            all,
        )
    }

    #[test]
    fn logs_leave_in_order_across_frames_and_none_is_lost() {
        let mut outbox = Outbox::new(4);
        let logs: Vec<Vec<u8>> = (0..10).map(|i| log(2, i)).collect();
        for l in &logs {
            outbox.push_log(&LogView::new_checked(l).unwrap());
        }
        let mut seen = Vec::new();
        loop {
            // Room for about three logs per frame.
            let (msg, all) = drain(&mut outbox, 100);
            assert!(!msg.logs.is_empty(), "a frame with room must carry a log");
            seen.extend(msg.logs.iter().map(|l| l.deps[0].seq.0));
            if all {
                break;
            }
        }
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert!(outbox.is_empty());
        assert_eq!(outbox.log_bytes(), 0);
    }

    #[test]
    fn commit_vectors_coalesce_and_stale_entries_are_not_sent() {
        let mut outbox = Outbox::new(4);
        outbox.merge_cv(1, [dep(0, 5), dep(2, 1)].into_iter());
        outbox.merge_cv(1, [dep(0, 3), dep(2, 4)].into_iter());
        let (msg, all) = drain(&mut outbox, 200);
        assert!(all);
        assert_eq!(msg.cvs.len(), 1);
        assert_eq!(msg.cvs[0].entries, vec![dep(0, 5), dep(2, 4)]);
        assert!(outbox.is_empty());
        // A stale entry is not sent; an entry announced again is.
        outbox.merge_cv(1, [dep(0, 4)].into_iter());
        assert!(outbox.is_empty());
        outbox.merge_cv(1, [dep(2, 4)].into_iter());
        let (msg, _) = drain(&mut outbox, 200);
        assert_eq!(msg.cvs[0].entries, vec![dep(2, 4)]);
        outbox.merge_cv(1, [dep(3, 9)].into_iter());
        let (msg, _) = drain(&mut outbox, 200);
        assert_eq!(msg.cvs[0].entries, vec![dep(3, 9)]);
    }

    /// A commit vector that does not fit behind what a message holds waits whole for the next
    /// frame; one that would not fit even an empty message goes in parts, partitions rising.
    #[test]
    fn a_commit_vector_waits_whole_for_room_unless_no_frame_could_hold_it() {
        let mut outbox = Outbox::new(8);
        let entries = || (0..8).map(|p| dep(p, 3));
        let l = log(2, 1);
        outbox.push_log(&LogView::new_checked(&l).unwrap());
        outbox.merge_cv(1, entries());
        // Message header 6, the log, then room for a vector of 7 entries (3 + 70 bytes), not 8.
        let (msg, all) = drain(&mut outbox, 6 + l.len() + 73);
        assert!(!all);
        assert_eq!(msg.logs.len(), 1);
        assert!(msg.cvs.is_empty(), "waits whole: {:?}", msg.cvs);
        // Alone in a message it fits exactly (6 + 3 + 80 bytes).
        let (msg, all) = drain(&mut outbox, 89);
        assert!(all);
        assert_eq!(msg.cvs[0].entries, entries().collect::<Vec<_>>());
        assert!(outbox.is_empty());
        // One byte less and it never fits: 7 entries now, the last one next.
        outbox.merge_cv(1, (0..8).map(|p| dep(p, 4)));
        let (msg, all) = drain(&mut outbox, 88);
        assert!(!all);
        assert_eq!(
            msg.cvs[0].entries,
            (0..7).map(|p| dep(p, 4)).collect::<Vec<_>>()
        );
        let (msg, all) = drain(&mut outbox, 88);
        assert!(all);
        assert_eq!(msg.cvs[0].entries, vec![dep(7, 4)]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn absorb_takes_a_whole_message() {
        let mut src = Outbox::new(4);
        src.push_log(&LogView::new_checked(&log(0, 1)).unwrap());
        src.merge_cv(0, [dep(1, 2)].into_iter());
        let mut buf = vec![0; 200];
        let mut w = MessageWriter::new(&mut buf, 0).unwrap();
        src.fill(&mut w).unwrap();
        let len = w.finish();
        let mut dst = Outbox::new(4);
        dst.absorb(&MessageView::new_checked(&buf[..len]).unwrap());
        assert_eq!(dst.log_count(), 1);
        let (msg, _) = drain(&mut dst, 200);
        assert_eq!(msg.logs.len(), 1);
        assert_eq!(msg.cvs[0].entries, vec![dep(1, 2)]);
    }
}
