//! [`MessageWriter`]: encodes a piggyback message straight into the caller's fixed buffer, one log
//! or commit vector at a time, with no allocation; a push that does not fit writes nothing.

use ftc_stm::{DepEntry, LogSource, Partition};

use super::message::{
    field, kind_rule, CvView, LogView, CV_HEADER_LEN, DELETE, ENTRY_LEN, LOG_HEADER_LEN,
    MESSAGE_HEADER_LEN, MESSAGE_VERSION, WRITE_HEADER_LEN,
};
use super::WireError;

/// Encodes a piggyback message into a buffer the caller owns (say, the tail of a frame).
///
/// Every push checks the format's rules and the room left first: on error nothing is written, the
/// message so far stays valid, and the caller sends the rest in another frame (a log is never
/// dropped). [`MessageWriter::finish`] patches the counts in the header.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    log_count: u16,
    cv_count: u16,
}

impl<'b> MessageWriter<'b> {
    /// Starts a message with `flags` at the start of `buf`; [`WireError::NoRoom`] if `buf` cannot
    /// hold the 6-byte header.
    pub fn new(buf: &'b mut [u8], flags: u8) -> Result<Self, WireError> {
        let header = buf
            .first_chunk_mut::<MESSAGE_HEADER_LEN>()
            .ok_or(WireError::NoRoom)?;
        *header = [MESSAGE_VERSION, flags, 0, 0, 0, 0];
        Ok(MessageWriter {
            buf,
            len: MESSAGE_HEADER_LEN,
            log_count: 0,
            cv_count: 0,
        })
    }

    /// Bytes written so far, header included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: the header is written at once. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Bytes left in the buffer.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Logs pushed so far.
    pub fn log_count(&self) -> u16 {
        self.log_count
    }

    /// Commit vectors pushed so far.
    pub fn cv_count(&self) -> u16 {
        self.cv_count
    }

    /// The room for the next `n` bytes, if there is.
    #[inline(always)]
    fn room(&mut self, n: usize) -> Result<&mut [u8], WireError> {
        let end = self.len.checked_add(n).ok_or(WireError::NoRoom)?;
        self.buf.get_mut(self.len..end).ok_or(WireError::NoRoom)
    }

    /// Appends `log`, made by middlebox `middlebox`. [`WireError::BadMessage`] if it breaks a
    /// rule of the format (partitions not increasing, wrong numbers of deps or writes for its
    /// kind, longer than 65535 bytes); [`WireError::NoRoom`] if it does not fit or the message
    /// already holds 65535 logs.
    pub fn push_log(&mut self, middlebox: u8, log: &impl LogSource) -> Result<(), WireError> {
        let m = measure_log(log);
        if let Some(rule) = m.broken {
            return Err(WireError::BadMessage(rule));
        }
        if self.log_count == u16::MAX {
            return Err(WireError::NoRoom);
        }
        encode_log(self.room(m.len)?, middlebox, log, &m)?;
        self.len += m.len;
        self.log_count += 1;
        Ok(())
    }

    /// Appends an encoded log as taken from [`LogView::as_bytes`]; it is checked again (cheap)
    /// so that a bad slice cannot spoil the message.
    pub fn push_log_bytes(&mut self, encoded: &[u8]) -> Result<(), WireError> {
        LogView::new_checked(encoded)?;
        self.copy_log(encoded)
    }

    /// Appends a log taken from a checked message as it is (no second check: a view's bytes are
    /// valid by construction).
    pub fn push_log_view(&mut self, log: &LogView<'_>) -> Result<(), WireError> {
        self.copy_log(log.as_bytes())
    }

    fn copy_log(&mut self, encoded: &[u8]) -> Result<(), WireError> {
        if self.log_count == u16::MAX {
            return Err(WireError::NoRoom);
        }
        self.room(encoded.len())?.copy_from_slice(encoded);
        self.len += encoded.len();
        self.log_count += 1;
        Ok(())
    }

    /// Appends a commit vector of middlebox `middlebox` with sparse `entries` (partitions strictly
    /// increasing and at most 65535 of them, else [`WireError::BadMessage`]).
    pub fn push_cv(
        &mut self,
        middlebox: u8,
        entries: impl Iterator<Item = DepEntry> + Clone,
    ) -> Result<(), WireError> {
        let count = measure_cv(entries.clone())?;
        if self.cv_count == u16::MAX {
            return Err(WireError::NoRoom);
        }
        let n = CV_HEADER_LEN + usize::from(count) * ENTRY_LEN;
        encode_cv(self.room(n)?, middlebox, entries, count)?;
        self.len += n;
        self.cv_count += 1;
        Ok(())
    }

    /// Appends an encoded commit vector as taken from [`CvView::as_bytes`] (checked again).
    pub fn push_cv_bytes(&mut self, encoded: &[u8]) -> Result<(), WireError> {
        CvView::new_checked(encoded)?;
        self.copy_cv(encoded)
    }

    /// Appends a commit vector taken from a checked message as it is (no second check).
    pub fn push_cv_view(&mut self, cv: &CvView<'_>) -> Result<(), WireError> {
        self.copy_cv(cv.as_bytes())
    }

    fn copy_cv(&mut self, encoded: &[u8]) -> Result<(), WireError> {
        if self.cv_count == u16::MAX {
            return Err(WireError::NoRoom);
        }
        self.room(encoded.len())?.copy_from_slice(encoded);
        self.len += encoded.len();
        self.cv_count += 1;
        Ok(())
    }

    /// Writes the counts into the header; returns the length of the message.
    pub fn finish(self) -> usize {
        self.buf[field::LOG_COUNT].copy_from_slice(&self.log_count.to_le_bytes());
        self.buf[field::CV_COUNT].copy_from_slice(&self.cv_count.to_le_bytes());
        self.len
    }
}

/// Size of `log` encoded, its counts, and the first rule it breaks if any, in one pass.
pub(super) struct LogMeasure {
    pub len: usize,
    pub dep_count: u16,
    pub write_count: u16,
    pub broken: Option<&'static str>,
}

#[inline(always)]
pub(super) fn measure_log(log: &impl LogSource) -> LogMeasure {
    let (dep_count, increasing) = measure_entries(log.deps());
    let mut len = LOG_HEADER_LEN + dep_count * ENTRY_LEN;
    let mut write_count = 0usize;
    for w in log.writes() {
        write_count += 1;
        len += WRITE_HEADER_LEN + w.key.len() + w.value.map_or(0, <[u8]>::len);
    }
    let rule = kind_rule(log.kind(), dep_count, write_count);
    let broken = if !increasing {
        Some("log dependency partitions not increasing")
    } else if len > usize::from(u16::MAX) {
        // Then no count or length field overflows either: each entry or write takes ≥ 3 bytes,
        // and a key or value of 65535 bytes or more makes the log longer.
        Some("log longer than 65535 bytes")
    } else {
        rule
    };
    LogMeasure {
        len,
        dep_count: u16::try_from(dep_count).unwrap_or(u16::MAX),
        write_count: u16::try_from(write_count).unwrap_or(u16::MAX),
        broken,
    }
}

/// Number of entries, and whether partitions strictly increase.
#[inline(always)]
fn measure_entries(entries: impl Iterator<Item = DepEntry>) -> (usize, bool) {
    let mut count = 0;
    let mut increasing = true;
    let mut prev: Option<Partition> = None;
    for e in entries {
        count += 1;
        increasing &= prev.is_none_or(|p| e.partition > p);
        prev = Some(e.partition);
    }
    (count, increasing)
}

/// Number of a commit vector's entries, or [`WireError::BadMessage`] if they break a rule.
#[inline(always)]
fn measure_cv(entries: impl Iterator<Item = DepEntry>) -> Result<u16, WireError> {
    let (count, increasing) = measure_entries(entries);
    if !increasing {
        return Err(WireError::BadMessage(
            "commit vector partitions not increasing",
        ));
    }
    u16::try_from(count)
        .map_err(|_| WireError::BadMessage("commit vector with more than 65535 entries"))
}

/// Bytes `log` takes encoded, or [`WireError::BadMessage`] if it breaks a rule of the format.
pub fn encoded_log_len(log: &impl LogSource) -> Result<usize, WireError> {
    let m = measure_log(log);
    match m.broken {
        Some(rule) => Err(WireError::BadMessage(rule)),
        None => Ok(m.len),
    }
}

/// Bytes a commit vector with `entries` takes encoded, or [`WireError::BadMessage`] if its
/// partitions do not strictly increase or there are more than 65535.
pub fn encoded_cv_len(entries: impl Iterator<Item = DepEntry>) -> Result<usize, WireError> {
    Ok(CV_HEADER_LEN + usize::from(measure_cv(entries)?) * ENTRY_LEN)
}

/// Encodes `log` into exactly `out`, sized by `m` = [`measure_log`]`(log)`; no rule check.
#[inline(always)]
pub(super) fn encode_log(
    out: &mut [u8],
    middlebox: u8,
    log: &impl LogSource,
    m: &LogMeasure,
) -> Result<(), WireError> {
    let mut c = Cursor::new(out);
    // `len` ≤ 65535 when no rule is broken.
    let [l0, l1] = (m.len as u16).to_le_bytes();
    let [d0, d1] = m.dep_count.to_le_bytes();
    let [w0, w1] = m.write_count.to_le_bytes();
    c.put([l0, l1, middlebox, log.kind().code(), d0, d1, w0, w1])?;
    c.entries(log.deps(), m.dep_count)?;
    let mut writes = 0u16;
    for w in log.writes().take(usize::from(m.write_count)) {
        let value = w.value.unwrap_or_default();
        let value_len = w.value.map_or(DELETE, |v| v.len() as u16);
        let [k0, k1] = (w.key.len() as u16).to_le_bytes();
        let [v0, v1] = value_len.to_le_bytes();
        let (header, data) = c
            .take(WRITE_HEADER_LEN + w.key.len() + value.len())?
            .split_first_chunk_mut()
            .ok_or(CHANGED)?;
        *header = [k0, k1, v0, v1];
        let (key, rest) = data.split_at_mut_checked(w.key.len()).ok_or(CHANGED)?;
        copy_short(key, w.key);
        copy_short(rest, value);
        writes += 1;
    }
    if writes != m.write_count {
        return Err(CHANGED);
    }
    c.done()
}

/// Encodes a commit vector of `count` `entries` into exactly `out` (sized by
/// [`encoded_cv_len`]);
/// no rule check.
#[inline(always)]
pub(super) fn encode_cv(
    out: &mut [u8],
    middlebox: u8,
    entries: impl Iterator<Item = DepEntry>,
    count: u16,
) -> Result<(), WireError> {
    let mut c = Cursor::new(out);
    let [c0, c1] = count.to_le_bytes();
    c.put([middlebox, c0, c1])?;
    c.entries(entries, count)?;
    c.done()
}

/// Writes into a slice sized beforehand; every write is checked all the same, so a `LogSource`
/// that yields different items on a second pass gets an error, not a panic.
struct Cursor<'o> {
    rest: &'o mut [u8],
}

const CHANGED: WireError = WireError::BadMessage("log source changed while it was encoded");

impl<'o> Cursor<'o> {
    #[inline(always)]
    fn new(out: &'o mut [u8]) -> Self {
        Cursor { rest: out }
    }

    /// The next `n` bytes, to fill.
    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'o mut [u8], WireError> {
        let (a, rest) = core::mem::take(&mut self.rest)
            .split_at_mut_checked(n)
            .ok_or(CHANGED)?;
        self.rest = rest;
        Ok(a)
    }

    /// Writes a fixed-size group of bytes.
    #[inline(always)]
    fn put<const N: usize>(&mut self, v: [u8; N]) -> Result<(), WireError> {
        let (a, rest) = core::mem::take(&mut self.rest)
            .split_first_chunk_mut::<N>()
            .ok_or(CHANGED)?;
        *a = v;
        self.rest = rest;
        Ok(())
    }

    /// Writes `count` of `entries`.
    #[inline(always)]
    fn entries(
        &mut self,
        entries: impl Iterator<Item = DepEntry>,
        count: u16,
    ) -> Result<(), WireError> {
        let mut written = 0u16;
        for e in entries.take(usize::from(count)) {
            let [p0, p1] = e.partition.0.to_le_bytes();
            let [s0, s1, s2, s3, s4, s5, s6, s7] = e.seq.0.to_le_bytes();
            self.put([p0, p1, s0, s1, s2, s3, s4, s5, s6, s7])?;
            written += 1;
        }
        if written != count {
            return Err(CHANGED);
        }
        Ok(())
    }

    #[inline(always)]
    fn done(&self) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CHANGED)
        }
    }
}

/// `dst.copy_from_slice(src)` (same lengths), with keys and values up to 32 bytes copied inline
/// by two overlapping fixed-size moves instead of a call to `memcpy`.
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    fn two<const N: usize>(dst: &mut [u8], src: &[u8]) {
        if let (Some(d), Some(s)) = (dst.first_chunk_mut::<N>(), src.first_chunk::<N>()) {
            *d = *s;
        }
        if let (Some(d), Some(s)) = (dst.last_chunk_mut::<N>(), src.last_chunk::<N>()) {
            *d = *s;
        }
    }
    if dst.len() != src.len() {
        return;
    }
    // Longest first: keys of 16 bytes and values of 32 take two comparisons each.
    let n = src.len();
    if n > 16 {
        if n <= 32 {
            two::<16>(dst, src);
        } else {
            dst.copy_from_slice(src);
        }
    } else if n >= 8 {
        two::<8>(dst, src);
    } else if n >= 4 {
        two::<4>(dst, src);
    } else if n > 0 {
        // First, middle and last byte cover 1 to 3 bytes.
        dst[0] = src[0];
        dst[n / 2] = src[n / 2];
        dst[n - 1] = src[n - 1];
    }
}
