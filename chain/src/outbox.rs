//! [`Outbox`]: piggyback content waiting for a frame to ride on: encoded logs in arrival order
//! and commit vectors coalesced by element-wise max, written into messages within a budget.
//!
//! The buffer gathers what goes back to the forwarder in one, the forwarder keeps what it will
//! attach to the next packets in one, and a server puts what did not fit a packet's trailer in
//! one. Logs are never dropped; commit vectors only send the entries that moved since they were
//! last written.

use ftc_stm::DepEntry;

use crate::logqueue::LogQueue;
use crate::wire::{CommitVector, MessageView, MessageWriter, WireError};

/// Logs and commit vectors waiting to be sent.
#[derive(Debug, Clone)]
pub struct Outbox {
    partitions: usize,
    logs: LogQueue<()>,
    /// Per middlebox: the newest commit vector known and what was last written of it.
    cvs: Vec<Option<(CommitVector, CommitVector)>>,
}

impl Outbox {
    /// An empty outbox for middleboxes of `partitions` partitions.
    pub fn new(partitions: usize) -> Self {
        Outbox {
            partitions,
            logs: LogQueue::default(),
            cvs: Vec::new(),
        }
    }

    /// Queue an encoded log (as from `LogView::as_bytes`).
    pub fn push_log(&mut self, encoded: &[u8]) {
        self.logs.push(encoded, ());
    }

    /// Merge commit vector entries of middlebox `mb`.
    pub fn merge_cv(&mut self, mb: u8, entries: impl Iterator<Item = DepEntry>) {
        let i = usize::from(mb);
        if self.cvs.len() <= i {
            self.cvs.resize(i + 1, None);
        }
        let p = self.partitions;
        let (known, _) =
            self.cvs[i].get_or_insert_with(|| (CommitVector::new(p), CommitVector::new(p)));
        known.merge(entries);
    }

    /// Queue every log and merge every commit vector of `msg`.
    pub fn absorb(&mut self, msg: &MessageView<'_>) {
        for log in msg.logs() {
            self.push_log(log.as_bytes());
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

    /// Whether nothing waits: no log, and no commit vector entry that moved since last written.
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty() && self.cvs.iter().flatten().all(|(known, sent)| known == sent)
    }

    /// Write queued logs (oldest first) and the commit vector entries that moved into `w`, as many
    /// as fit; what does not fit stays queued. Returns whether everything was written.
    pub fn fill(&mut self, w: &mut MessageWriter<'_>) -> Result<bool, WireError> {
        while let Some((log, ())) = self.logs.front() {
            match w.push_log_bytes(log) {
                Ok(()) => self.logs.pop_front(),
                Err(WireError::NoRoom) => break,
                Err(e) => return Err(e),
            }
        }
        let mut all = self.logs.is_empty();
        for (mb, slot) in self.cvs.iter_mut().enumerate() {
            let Some((known, sent)) = slot else { continue };
            if known == sent {
                continue;
            }
            match w.push_cv(mb as u8, known.changed_since(sent)) {
                Ok(()) => *sent = known.clone(),
                Err(WireError::NoRoom) => all = false,
                Err(e) => return Err(e),
            }
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use ftc_stm::{LogKind, Partition, Seq};

    use super::*;
    use crate::wire::{LogRepr, MessageRepr};

    fn dep(p: u16, s: u64) -> DepEntry {
        DepEntry {
            partition: Partition(p),
            seq: Seq(s),
        }
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
            outbox.push_log(l);
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
    fn commit_vectors_coalesce_and_only_moved_entries_are_sent() {
        let mut outbox = Outbox::new(4);
        outbox.merge_cv(1, [dep(0, 5), dep(2, 1)].into_iter());
        outbox.merge_cv(1, [dep(0, 3), dep(2, 4)].into_iter());
        let (msg, all) = drain(&mut outbox, 200);
        assert!(all);
        assert_eq!(msg.cvs.len(), 1);
        assert_eq!(msg.cvs[0].entries, vec![dep(0, 5), dep(2, 4)]);
        assert!(outbox.is_empty());
        // Nothing moved: nothing to send. A stale entry moves nothing either.
        outbox.merge_cv(1, [dep(0, 4)].into_iter());
        assert!(outbox.is_empty());
        outbox.merge_cv(1, [dep(3, 9)].into_iter());
        let (msg, _) = drain(&mut outbox, 200);
        assert_eq!(msg.cvs[0].entries, vec![dep(3, 9)]);
    }

    #[test]
    fn absorb_takes_a_whole_message() {
        let mut src = Outbox::new(4);
        src.push_log(&log(0, 1));
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
