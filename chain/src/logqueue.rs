//! [`LogQueue`]: encoded piggyback logs back to back in one buffer, oldest first, each with a
//! little metadata; the storage of outboxes and of the logs a replica retains.

use std::collections::VecDeque;

/// A FIFO of encoded logs with metadata `M`; allocation-free once its buffers have grown.
#[derive(Debug, Clone)]
pub struct LogQueue<M> {
    bytes: Vec<u8>,
    /// (start in `bytes`, length, metadata) of each queued log.
    entries: VecDeque<(usize, usize, M)>,
    /// Bytes before this offset belong to logs already popped.
    consumed: usize,
}

impl<M> Default for LogQueue<M> {
    fn default() -> Self {
        LogQueue {
            bytes: Vec::new(),
            entries: VecDeque::new(),
            consumed: 0,
        }
    }
}

impl<M> LogQueue<M> {
    /// Queue an encoded log.
    pub fn push(&mut self, encoded: &[u8], meta: M) {
        self.entries
            .push_back((self.bytes.len(), encoded.len(), meta));
        self.bytes.extend_from_slice(encoded);
    }

    /// The oldest log.
    pub fn front(&self) -> Option<(&[u8], &M)> {
        self.entries
            .front()
            .map(|(s, l, m)| (&self.bytes[*s..s + l], m))
    }

    /// Drop the oldest log.
    pub fn pop_front(&mut self) {
        if let Some((s, l, _)) = self.entries.pop_front() {
            self.consumed = s + l;
            self.compact();
        }
    }

    /// Every log, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &M)> + '_ {
        self.entries
            .iter()
            .map(|(s, l, m)| (&self.bytes[*s..s + l], m))
    }

    /// Every log with mutable metadata, oldest first.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&[u8], &mut M)> + '_ {
        let bytes = &self.bytes;
        self.entries
            .iter_mut()
            .map(move |(s, l, m)| (&bytes[*s..*s + *l], m))
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
        self.bytes.len() - self.consumed
    }

    /// Give back the room of popped logs once they are most of the buffer.
    fn compact(&mut self) {
        if self.entries.is_empty() {
            self.bytes.clear();
            self.consumed = 0;
        } else if self.consumed > self.bytes.len() / 2 {
            self.bytes.drain(..self.consumed);
            for (s, _, _) in &mut self.entries {
                *s -= self.consumed;
            }
            self.consumed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_with_metadata_survives_compaction() {
        let mut q = LogQueue::default();
        for i in 0..100u8 {
            q.push(&[i; 7], u32::from(i));
            if i % 3 == 0 {
                q.pop_front();
            }
        }
        let left: Vec<(Vec<u8>, u32)> = q.iter().map(|(b, m)| (b.to_vec(), *m)).collect();
        assert_eq!(left.len(), 100 - 34);
        for (bytes, m) in &left {
            assert_eq!(bytes, &vec![*m as u8; 7]);
        }
        assert_eq!(q.byte_len(), left.len() * 7);
        for (_, m) in q.iter_mut() {
            *m += 1000;
        }
        assert_eq!(q.front().map(|(_, m)| *m), Some(left[0].1 + 1000));
        while !q.is_empty() {
            q.pop_front();
        }
        assert_eq!(q.byte_len(), 0);
    }
}
