//! Owned forms of the piggyback message, its logs and commit vectors: for tests, tools and cold
//! paths. The hot path uses the views and [`super::MessageWriter`].

use ftc_stm::{DepEntry, LogKind, LogSource, Write};

use super::message::{CV_HEADER_LEN, ENTRY_LEN};
use super::writer::{encode_cv, encode_log, measure_log};
use super::{CvView, LogView, MessageView, MessageWriter, WireError, MESSAGE_HEADER_LEN};

/// A whole piggyback message, owned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageRepr {
    pub flags: u8,
    pub logs: Vec<LogRepr>,
    pub cvs: Vec<CvRepr>,
}

/// One log, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRepr {
    pub middlebox: u8,
    pub kind: LogKind,
    /// Partitions strictly increasing.
    pub deps: Vec<DepEntry>,
    /// Key and value (`None` = delete), in order.
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// One commit vector, owned: sparse entries, partitions strictly increasing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CvRepr {
    pub middlebox: u8,
    pub entries: Vec<DepEntry>,
}

impl MessageRepr {
    /// Copies out a checked message (cannot fail: the view was checked when built).
    pub fn parse(view: &MessageView<'_>) -> MessageRepr {
        MessageRepr {
            flags: view.flags(),
            logs: view.logs().map(|l| LogRepr::parse(&l)).collect(),
            cvs: view.commit_vectors().map(|c| CvRepr::parse(&c)).collect(),
        }
    }

    /// Bytes the message takes encoded.
    pub fn buffer_len(&self) -> usize {
        MESSAGE_HEADER_LEN
            + self.logs.iter().map(LogRepr::buffer_len).sum::<usize>()
            + self.cvs.iter().map(CvRepr::buffer_len).sum::<usize>()
    }

    /// Encodes the message at the start of `buf`; returns the bytes written.
    /// [`WireError::BadMessage`] if a log or vector breaks a rule, [`WireError::NoRoom`] if it
    /// does not fit (or has more than 65535 logs or vectors).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut w = MessageWriter::new(buf, self.flags)?;
        for log in &self.logs {
            w.push_log(log.middlebox, log)?;
        }
        for cv in &self.cvs {
            w.push_cv(cv.middlebox, cv.entries.iter().copied())?;
        }
        Ok(w.finish())
    }

    /// The message encoded, in a buffer of its own (errors as [`MessageRepr::emit`]'s).
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut buf = vec![0; self.buffer_len()];
        let len = self.emit(&mut buf)?;
        buf.truncate(len);
        Ok(buf)
    }
}

impl LogRepr {
    /// Copies out a checked log.
    pub fn parse(view: &LogView<'_>) -> LogRepr {
        LogRepr {
            middlebox: view.middlebox(),
            kind: view.kind(),
            deps: view.deps().collect(),
            writes: view
                .writes()
                .map(|w| (w.key.to_vec(), w.value.map(<[u8]>::to_vec)))
                .collect(),
        }
    }

    /// Bytes the log takes encoded (whether or not it obeys the rules).
    pub fn buffer_len(&self) -> usize {
        measure_log(self).len
    }

    /// Encodes the log alone at the start of `buf`; returns the bytes written. On error, bytes of
    /// `buf` may have been written all the same.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        encode_log(buf, self.middlebox, self)
    }
}

impl LogSource for LogRepr {
    fn kind(&self) -> LogKind {
        self.kind
    }

    fn deps(&self) -> impl Iterator<Item = DepEntry> + Clone + '_ {
        self.deps.iter().copied()
    }

    fn writes(&self) -> impl Iterator<Item = Write<'_>> + '_ {
        self.writes.iter().map(|(k, v)| Write {
            key: k,
            value: v.as_deref(),
        })
    }
}

impl CvRepr {
    /// Copies out a checked commit vector.
    pub fn parse(view: &CvView<'_>) -> CvRepr {
        CvRepr {
            middlebox: view.middlebox(),
            entries: view.entries().collect(),
        }
    }

    /// Bytes the vector takes encoded (whether or not it obeys the rules).
    pub fn buffer_len(&self) -> usize {
        CV_HEADER_LEN + self.entries.len() * ENTRY_LEN
    }

    /// Encodes the vector alone at the start of `buf`; returns the bytes written. On error, bytes
    /// of `buf` may have been written all the same.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        encode_cv(buf, self.middlebox, self.entries.iter().copied())
    }
}
