//! [`MessageWriter`]: encodes a piggyback message straight into the caller's fixed buffer, one log
//! or commit vector at a time, with no allocation; a push that does not fit writes nothing.

use ftc_stm::{DepEntry, LogKind, LogSource, Partition};

use super::leb128::{self, len_u64};
use super::message::{field, CvView, LogView, MESSAGE_HEADER_LEN, MESSAGE_VERSION};
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
        let header = buf.get_mut(..MESSAGE_HEADER_LEN).ok_or(WireError::NoRoom)?;
        header.fill(0);
        header[field::VERSION] = MESSAGE_VERSION;
        header[field::FLAGS] = flags;
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
    fn room(&mut self, n: usize) -> Result<&mut [u8], WireError> {
        let end = self.len.checked_add(n).ok_or(WireError::NoRoom)?;
        self.buf.get_mut(self.len..end).ok_or(WireError::NoRoom)
    }

    /// Appends `log`, made by middlebox `middlebox`. [`WireError::BadMessage`] if it breaks a
    /// rule of the format (partitions not increasing, wrong numbers of deps or writes for its
    /// kind); [`WireError::NoRoom`] if it does not fit or the message already holds 65535 logs.
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
    /// increasing, else [`WireError::BadMessage`]).
    pub fn push_cv(
        &mut self,
        middlebox: u8,
        entries: impl Iterator<Item = DepEntry> + Clone,
    ) -> Result<(), WireError> {
        let (entries_len, count, increasing) = measure_entries(entries.clone());
        if !increasing {
            return Err(WireError::BadMessage(
                "commit vector partitions not increasing",
            ));
        }
        if self.cv_count == u16::MAX {
            return Err(WireError::NoRoom);
        }
        let n = 1 + len_u64(count as u64) + entries_len;
        let mut c = Cursor::new(self.room(n)?);
        c.u8(middlebox)?;
        c.var(count as u64)?;
        for e in entries.take(count) {
            c.entry(e)?;
        }
        c.done()?;
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
        self.buf[field::LOG_COUNT].copy_from_slice(&self.log_count.to_be_bytes());
        self.buf[field::CV_COUNT].copy_from_slice(&self.cv_count.to_be_bytes());
        self.len
    }
}

/// Size of `log` encoded and whether it obeys the rules, in one pass.
pub(super) struct LogMeasure {
    pub len: usize,
    pub dep_count: usize,
    pub write_count: usize,
    pub broken: Option<&'static str>,
}

pub(super) fn measure_log(log: &impl LogSource) -> LogMeasure {
    let mut len = 2;
    let mut broken = None;
    let (deps_len, dep_count, increasing) = measure_entries(log.deps());
    len += len_u64(dep_count as u64) + deps_len;
    if !increasing {
        broken = Some("log dependency partitions not increasing");
    }
    let mut write_count = 0usize;
    for w in log.writes() {
        write_count += 1;
        len += len_u64(w.key.len() as u64) + w.key.len();
        len += match w.value {
            None => 1,
            Some(v) => len_u64(v.len() as u64 + 1) + v.len(),
        };
    }
    len += len_u64(write_count as u64);
    let rule = match log.kind() {
        LogKind::Update if dep_count == 0 || write_count == 0 => {
            Some("update logs need a dependency and a write")
        }
        LogKind::ReadOnly if dep_count == 0 || write_count != 0 => {
            Some("read-only logs need a dependency and no write")
        }
        LogKind::Noop if dep_count != 0 || write_count != 0 => {
            Some("no-op logs have no dependency and no write")
        }
        _ => None,
    };
    LogMeasure {
        len,
        dep_count,
        write_count,
        broken: broken.or(rule),
    }
}

/// Encoded length of the entries, their number, and whether partitions strictly increase.
fn measure_entries(entries: impl Iterator<Item = DepEntry>) -> (usize, usize, bool) {
    let mut len = 0;
    let mut count = 0;
    let mut increasing = true;
    let mut prev: Option<Partition> = None;
    for e in entries {
        len += 2 + len_u64(e.seq.0);
        count += 1;
        increasing &= prev.is_none_or(|p| e.partition > p);
        prev = Some(e.partition);
    }
    (len, count, increasing)
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
/// partitions do not strictly increase.
pub fn encoded_cv_len(entries: impl Iterator<Item = DepEntry>) -> Result<usize, WireError> {
    let (len, count, increasing) = measure_entries(entries);
    if !increasing {
        return Err(WireError::BadMessage(
            "commit vector partitions not increasing",
        ));
    }
    Ok(1 + len_u64(count as u64) + len)
}

/// Encodes `log` into exactly `out`, sized by `m` = [`measure_log`]`(log)`; no rule check.
pub(super) fn encode_log(
    out: &mut [u8],
    middlebox: u8,
    log: &impl LogSource,
    m: &LogMeasure,
) -> Result<(), WireError> {
    let mut c = Cursor::new(out);
    c.u8(middlebox)?;
    c.u8(log.kind().code())?;
    c.var(m.dep_count as u64)?;
    for e in log.deps().take(m.dep_count) {
        c.entry(e)?;
    }
    c.var(m.write_count as u64)?;
    for w in log.writes().take(m.write_count) {
        c.var(w.key.len() as u64)?;
        c.bytes(w.key)?;
        match w.value {
            None => c.u8(0)?,
            Some(v) => {
                c.var(v.len() as u64 + 1)?;
                c.bytes(v)?;
            }
        }
    }
    c.done()
}

/// Writes into a slice sized beforehand; every write is checked all the same, so a `LogSource`
/// that yields different items on a second pass gets an error, not a panic.
struct Cursor<'o> {
    out: &'o mut [u8],
    pos: usize,
}

const CHANGED: WireError = WireError::BadMessage("log source changed while it was encoded");

impl<'o> Cursor<'o> {
    fn new(out: &'o mut [u8]) -> Self {
        Cursor { out, pos: 0 }
    }

    #[inline(always)]
    fn u8(&mut self, v: u8) -> Result<(), WireError> {
        *self.out.get_mut(self.pos).ok_or(CHANGED)? = v;
        self.pos += 1;
        Ok(())
    }

    #[inline(always)]
    fn bytes(&mut self, v: &[u8]) -> Result<(), WireError> {
        let end = self.pos.checked_add(v.len()).ok_or(CHANGED)?;
        copy_short(self.out.get_mut(self.pos..end).ok_or(CHANGED)?, v);
        self.pos = end;
        Ok(())
    }

    #[inline(always)]
    fn var(&mut self, v: u64) -> Result<(), WireError> {
        let rest = self.out.get_mut(self.pos..).ok_or(CHANGED)?;
        self.pos += leb128::write_u64(rest, v).ok_or(CHANGED)?;
        Ok(())
    }

    #[inline(always)]
    fn entry(&mut self, e: DepEntry) -> Result<(), WireError> {
        self.bytes(&e.partition.0.to_be_bytes())?;
        self.var(e.seq.0)
    }

    fn done(&self) -> Result<(), WireError> {
        if self.pos == self.out.len() {
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
    match src.len() {
        0 => {}
        1..=3 => {
            // First, middle and last byte cover 1 to 3 bytes.
            let n = src.len();
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        4..=7 => two::<4>(dst, src),
        8..=16 => two::<8>(dst, src),
        17..=32 => two::<16>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}
