//! [`LogQueue`]: checked piggyback logs back to back in one buffer, oldest first, each with a
//! little metadata; the storage of outboxes and of the logs a replica retains. Only logs checked
//! once ([`LogView`]s) go in, so they come out as views without being checked again.

use std::collections::VecDeque;

use crate::wire::LogView;

/// A FIFO of encoded logs with metadata `M`; allocation-free once its buffers have grown.
#[derive(Debug, Clone)]
pub struct LogQueue<M> {
    bytes: Vec<u8>,
    /// (start, length, metadata) of each queued log; a start counts every byte ever queued, so
    /// `bytes` holds it at `start − base` and compacting moves no entry.
    entries: VecDeque<(usize, usize, M)>,
    /// How many bytes were dropped from the front of `bytes`.
    base: usize,
    /// Bytes before this offset (counted as starts are) belong to logs already popped.
    consumed: usize,
}

impl<M> Default for LogQueue<M> {
    fn default() -> Self {
        LogQueue {
            bytes: Vec::new(),
            entries: VecDeque::new(),
            base: 0,
            consumed: 0,
        }
    }
}

impl<M> LogQueue<M> {
    /// Queue a log.
    pub fn push(&mut self, log: &LogView<'_>, meta: M) {
        let encoded = log.as_bytes();
        self.entries.push_back((self.end(), encoded.len(), meta));
        self.bytes.extend_from_slice(encoded);
    }

    /// The oldest log.
    pub fn front(&self) -> Option<(LogView<'_>, &M)> {
        self.entries.front().map(|(s, l, m)| (self.view(*s, *l), m))
    }

    /// Move the oldest log to the back, with metadata `meta`.
    pub fn requeue_front(&mut self, meta: M) {
        if let Some(&(s, l, _)) = self.entries.front() {
            self.entries.push_back((self.end(), l, meta));
            let at = s - self.base;
            self.bytes.extend_from_within(at..at + l);
            self.pop_front();
        }
    }

    /// Where the next log queued starts.
    fn end(&self) -> usize {
        self.base + self.bytes.len()
    }

    /// The log queued at `start`, `len` bytes long.
    fn view(&self, start: usize, len: usize) -> LogView<'_> {
        view_in(&self.bytes, self.base, start, len)
    }

    /// Drop the oldest log.
    pub fn pop_front(&mut self) {
        if let Some((s, l, _)) = self.entries.pop_front() {
            self.consumed = s + l;
            self.compact();
        }
    }

    /// Every log, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (LogView<'_>, &M)> + '_ {
        self.entries.iter().map(|(s, l, m)| (self.view(*s, *l), m))
    }

    /// Every log, oldest first, with its metadata to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (LogView<'_>, &mut M)> + '_ {
        let (bytes, base) = (&self.bytes, self.base);
        self.entries
            .iter_mut()
            .map(move |(s, l, m)| (view_in(bytes, base, *s, *l), m))
    }

    /// The log `i` places from the oldest, with its metadata to change.
    pub fn get_mut(&mut self, i: usize) -> Option<(LogView<'_>, &mut M)> {
        let (bytes, base) = (&self.bytes, self.base);
        let (s, l, m) = self.entries.get_mut(i)?;
        Some((view_in(bytes, base, *s, *l), m))
    }

    /// Number of logs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no log is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the queued logs.
    pub fn byte_len(&self) -> usize {
        self.end() - self.consumed
    }

    /// Give back the room of popped logs once they are most of the buffer (the queued logs'
    /// bytes move to the front; their entries stay as they are).
    fn compact(&mut self) {
        let popped = self.consumed - self.base;
        if self.entries.is_empty() || popped > self.bytes.len() / 2 {
            self.bytes.drain(..popped);
            self.base = self.consumed;
        }
    }
}

/// The log at `start`, `len` bytes long, of a queue whose `bytes` begin at `base`.
fn view_in(bytes: &[u8], base: usize, start: usize, len: usize) -> LogView<'_> {
    let at = start - base;
    LogView::of_checked(&bytes[at..at + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::wire::LogRepr;
    use ftc_stm::{DepEntry, LogKind};

    /// An encoded update log, the `i`-th of partition 0, whose one write has `i` as its value.
    fn log(i: u8) -> Vec<u8> {
        let repr = LogRepr {
            middlebox: i % 4,
            kind: LogKind::Update,
            deps: vec![DepEntry::new(0, u64::from(i))],
            writes: vec![(b"k".to_vec(), Some(vec![i]))],
        };
        let mut buf = vec![0; repr.buffer_len()];
        repr.emit(&mut buf).unwrap();
        buf
    }

    #[test]
    fn fifo_with_metadata_survives_compaction() {
        let mut q = LogQueue::default();
        let len = log(0).len();
        for i in 0..100u8 {
            q.push(&LogView::new_checked(&log(i)).unwrap(), u32::from(i));
            if i % 3 == 0 {
                q.pop_front();
            }
        }
        let left: Vec<(Vec<u8>, u32)> =
            q.iter().map(|(l, m)| (l.as_bytes().to_vec(), *m)).collect();
        assert_eq!(left.len(), 100 - 34);
        for (bytes, m) in &left {
            assert_eq!(bytes, &log(*m as u8));
        }
        assert_eq!(q.byte_len(), left.len() * len);
        // The oldest goes to the back, as it was, with its new metadata.
        let (oldest, _) = q.front().map(|(l, m)| (l.as_bytes().to_vec(), *m)).unwrap();
        q.requeue_front(1000);
        let last = q.iter().last().map(|(l, m)| (l.as_bytes().to_vec(), *m));
        assert_eq!(last, Some((oldest, 1000)));
        assert_eq!(q.front().map(|(_, m)| *m), Some(left[1].1));
        assert_eq!(q.len(), left.len());
        while !q.is_empty() {
            q.pop_front();
        }
        assert_eq!(q.byte_len(), 0);
        // Emptied, it starts over: what goes in next is what comes out.
        q.push(&LogView::new_checked(&log(7)).unwrap(), 7);
        assert_eq!(
            q.front().map(|(l, m)| (l.as_bytes().to_vec(), *m)),
            Some((log(7), 7))
        );
        assert_eq!(q.byte_len(), len);
    }
}
