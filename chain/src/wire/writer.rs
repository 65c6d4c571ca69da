//! [`MessageWriter`]: encodes a piggyback message straight into the caller's fixed buffer, one log
//! or commit vector at a time, in one pass each and with no allocation; a push that fails leaves
//! the message as it was.

use ftc_stm::{DepEntry, LogSource};

use super::message::{
    kind_fits, kind_rule, CvView, LogView, Rising, CV_HEADER_LEN, DELETE, ENTRY_LEN,
    LOG_HEADER_LEN, MESSAGE_HEADER_LEN, MESSAGE_VERSION, WRITE_HEADER_LEN,
};
use super::WireError;

/// Encodes a piggyback message into a buffer the caller owns (say, the tail of a frame).
///
/// Every push checks the format's rules and the room left: on error the message so far stays as it
/// was (valid), and the caller sends the rest in another frame (a log is never dropped). A push
/// encodes into the bytes after the message before it knows the outcome, so those bytes are
/// scratch: a failed push may have written there. [`MessageWriter::finish`] patches the counts
/// in the header.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    /// The message header, whose counts [`MessageWriter::finish`] fills in.
    header: &'b mut [u8; MESSAGE_HEADER_LEN],
    /// The bytes after the message so far: where the next push encodes.
    rest: &'b mut [u8],
    /// The length of the buffer: the message is what `rest` no longer holds of it.
    buf_len: usize,
    /// Where the logs end (and the commit vectors start): logs come first.
    logs_end: usize,
    log_count: u16,
    cv_count: u16,
}

/// A message a [`MessageWriter`] finished ([`MessageWriter::finish_written`]): its length and
/// layout, so that [`MessageView::written`](super::MessageView::written) views it without
/// checking it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub(super) len: usize,
    pub(super) cvs_start: usize,
    /// The header's count fields as written.
    pub(super) counts: [u8; 4],
}

impl Written {
    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a message has a header. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl<'b> MessageWriter<'b> {
    /// Starts a message with `flags` at the start of `buf`; [`WireError::NoRoom`] if `buf` cannot
    /// hold the 6-byte header.
    pub fn new(buf: &'b mut [u8], flags: u8) -> Result<Self, WireError> {
        let buf_len = buf.len();
        let (header, rest) = buf
            .split_first_chunk_mut::<MESSAGE_HEADER_LEN>()
            .ok_or(WireError::NoRoom)?;
        *header = [MESSAGE_VERSION, flags, 0, 0, 0, 0];
        Ok(MessageWriter {
            header,
            rest,
            buf_len,
            logs_end: MESSAGE_HEADER_LEN,
            log_count: 0,
            cv_count: 0,
        })
    }

    /// Bytes written so far, header included.
    pub fn len(&self) -> usize {
        self.buf_len - self.rest.len()
    }

    /// Always false: the header is written at once. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Bytes left in the buffer.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// How many entries a commit vector may have and still fit in what is left (0 when not
    /// even one does).
    pub fn cv_room(&self) -> usize {
        (self.rest.len().saturating_sub(CV_HEADER_LEN) / ENTRY_LEN).min(MAX_CV_ENTRIES)
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
        self.rest.get_mut(..n).ok_or(WireError::NoRoom)
    }

    /// Takes the `n` bytes after the message, just written, into it; returns them.
    #[inline(always)]
    fn advance(&mut self, n: usize) -> &'b [u8] {
        let rest = core::mem::take(&mut self.rest);
        // Always true: the bytes were written there.
        let (written, rest) = if n <= rest.len() {
            rest.split_at_mut(n)
        } else {
            (Default::default(), rest)
        };
        self.rest = rest;
        written
    }

    /// Appends `log`, made by middlebox `middlebox`. [`WireError::BadMessage`] if it breaks a
    /// rule of the format (partitions not increasing, wrong numbers of deps or writes for its
    /// kind, longer than 65535 bytes); [`WireError::NoRoom`] if it does not fit or the message
    /// already holds 65535 logs.
    ///
    /// One pass over `log`: it is encoded straight after the message while the rules are checked,
    /// and the message grows only once the log proved valid and fitting.
    pub fn push_log(&mut self, middlebox: u8, log: &impl LogSource) -> Result<(), WireError> {
        let n = encode_log(self.rest, middlebox, log)?;
        self.add_log(n).map(|_| ())
    }

    /// [`MessageWriter::push_log`], and a view of the log as encoded (to keep a copy of it
    /// without checking it again).
    pub fn push_log_viewed(
        &mut self,
        middlebox: u8,
        log: &impl LogSource,
    ) -> Result<LogView<'_>, WireError> {
        let n = encode_log(self.rest, middlebox, log)?;
        Ok(LogView::of_checked(self.add_log(n)?))
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
        self.room(encoded.len())?.copy_from_slice(encoded);
        self.add_log(encoded.len()).map(|_| ())
    }

    /// Counts the `n` bytes after the message, just written, as one more log; returns them.
    #[inline(always)]
    fn add_log(&mut self, n: usize) -> Result<&'b [u8], WireError> {
        if self.cv_count > 0 {
            return Err(WireError::BadMessage("a log after a commit vector"));
        }
        self.log_count = self.log_count.checked_add(1).ok_or(WireError::NoRoom)?;
        let log = self.advance(n);
        self.logs_end = self.len();
        Ok(log)
    }

    /// Appends a commit vector of middlebox `middlebox` with sparse `entries` (partitions strictly
    /// increasing and at most 65535 of them, else [`WireError::BadMessage`]).
    pub fn push_cv(
        &mut self,
        middlebox: u8,
        entries: impl Iterator<Item = DepEntry> + Clone,
    ) -> Result<(), WireError> {
        let n = encode_cv(self.rest, middlebox, entries)?;
        self.add_cv(n)
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
        self.room(encoded.len())?.copy_from_slice(encoded);
        self.add_cv(encoded.len())
    }

    /// Counts the `n` bytes after the message, just written, as one more commit vector.
    #[inline(always)]
    fn add_cv(&mut self, n: usize) -> Result<(), WireError> {
        self.cv_count = self.cv_count.checked_add(1).ok_or(WireError::NoRoom)?;
        self.advance(n);
        Ok(())
    }

    /// Writes the counts into the header; returns the length of the message.
    pub fn finish(self) -> usize {
        self.finish_written().len
    }

    /// [`MessageWriter::finish`], with what a view of the message needs to skip checking it.
    pub fn finish_written(self) -> Written {
        // Both counts in one store: a reader that loads them right after (a decode of the
        // message) then gets them from the store buffer instead of waiting on two stores.
        let [_, _, counts @ ..] = self.header;
        *counts = (u32::from(self.log_count) | u32::from(self.cv_count) << 16).to_le_bytes();
        Written {
            len: self.buf_len - self.rest.len(),
            cvs_start: self.logs_end,
            counts: *counts,
        }
    }
}

/// Entries that tell their count up front (an exact `size_hint`), so that
/// [`MessageWriter::push_cv`] checks the room for all of them at once instead of entry by entry.
/// `count` must be how many `entries` yields; a wrong one makes the writer refuse them or stop
/// short, never write past its buffer.
#[derive(Debug, Clone)]
pub struct Counted<I> {
    entries: I,
    left: usize,
}

impl<I> Counted<I> {
    /// `entries`, of which there are `count`.
    pub fn new(entries: I, count: usize) -> Self {
        Counted {
            entries,
            left: count,
        }
    }
}

impl<I: Iterator<Item = DepEntry>> Iterator for Counted<I> {
    type Item = DepEntry;

    fn next(&mut self) -> Option<DepEntry> {
        let e = self.entries.next()?;
        self.left = self.left.saturating_sub(1);
        Some(e)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// Size of `log` encoded, and the first rule it breaks if any, in one pass.
pub(super) struct LogMeasure {
    pub len: usize,
    pub broken: Option<&'static str>,
}

/// Measures `log` without encoding it: for [`encoded_log_len`], and to tell why an encoding
/// failed.
pub(super) fn measure_log(log: &impl LogSource) -> LogMeasure {
    let deps = Entries::of(log.deps());
    let mut len = LOG_HEADER_LEN + deps.count * ENTRY_LEN;
    let mut write_count = 0usize;
    for w in log.writes() {
        write_count += 1;
        len += WRITE_HEADER_LEN + w.key.len() + w.value.map_or(0, <[u8]>::len);
    }
    let broken = if !deps.increasing {
        Some("log dependency partitions not increasing")
    } else if len > MAX_LOG_LEN {
        // Then no count or length field overflows either: each entry or write takes ≥ 3 bytes,
        // and a key or value of 65535 bytes or more makes the log longer.
        Some("log longer than 65535 bytes")
    } else if !kind_fits(log.kind(), deps.count, write_count) {
        Some(kind_rule(log.kind()))
    } else {
        None
    };
    LogMeasure { len, broken }
}

/// The longest log: its length field is a u16.
const MAX_LOG_LEN: usize = u16::MAX as usize;

/// How many dependency or commit-vector entries there are, and whether their partitions strictly
/// increase.
struct Entries {
    count: usize,
    increasing: bool,
}

impl Entries {
    fn of(entries: impl Iterator<Item = DepEntry>) -> Self {
        let mut rising = Rising::default();
        let mut seen = Entries {
            count: 0,
            increasing: true,
        };
        for e in entries {
            seen.increasing &= rising.see(e.partition.0);
            seen.count += 1;
        }
        seen
    }
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
    let seen = Entries::of(entries);
    if !seen.increasing {
        return Err(WireError::BadMessage(
            "commit vector partitions not increasing",
        ));
    }
    if seen.count > MAX_CV_ENTRIES {
        return Err(WireError::BadMessage(
            "commit vector with more than 65535 entries",
        ));
    }
    Ok(CV_HEADER_LEN + seen.count * ENTRY_LEN)
}

/// The most entries a commit vector holds: its count field is a u16.
const MAX_CV_ENTRIES: usize = u16::MAX as usize;

/// Encodes `log` at the start of `out` in one pass, checking the rules of the format as it goes;
/// returns the bytes it took. On error, bytes of `out` may have been written all the same.
///
/// [`WireError::BadMessage`] if `log` breaks a rule, even when it does not fit either;
/// [`WireError::NoRoom`] if it obeys them but does not fit.
#[inline(always)]
pub(super) fn encode_log(
    out: &mut [u8],
    middlebox: u8,
    log: &impl LogSource,
) -> Result<usize, WireError> {
    let room = out.len();
    let Some((header, body)) = out.split_first_chunk_mut::<LOG_HEADER_LEN>() else {
        return Err(log_refused(log));
    };
    let mut c = Cursor { rest: body };
    let Some((dep_count, write_count)) = c.log_body(log) else {
        return Err(log_refused(log));
    };
    let len = room - c.rest.len();
    if len > MAX_LOG_LEN || !kind_fits(log.kind(), dep_count, write_count) {
        return Err(log_refused(log));
    }
    // `len` ≤ 65535, so the counts are too.
    let [l0, l1] = (len as u16).to_le_bytes();
    let [d0, d1] = (dep_count as u16).to_le_bytes();
    let [w0, w1] = (write_count as u16).to_le_bytes();
    *header = [l0, l1, middlebox, log.kind().code(), d0, d1, w0, w1];
    Ok(len)
}

/// Why [`encode_log`] gave up on `log`: the rule it breaks if any, else [`WireError::NoRoom`].
#[cold]
#[inline(never)]
fn log_refused(log: &impl LogSource) -> WireError {
    match measure_log(log).broken {
        Some(rule) => WireError::BadMessage(rule),
        None => WireError::NoRoom,
    }
}

/// Encodes a commit vector of `entries` at the start of `out` in one pass, checking the rules;
/// returns the bytes it took. On error, bytes of `out` may have been written all the same.
///
/// [`WireError::BadMessage`] if the entries break a rule, even when they do not fit either;
/// [`WireError::NoRoom`] if they obey them but do not fit.
#[inline(always)]
pub(super) fn encode_cv(
    out: &mut [u8],
    middlebox: u8,
    entries: impl Iterator<Item = DepEntry> + Clone,
) -> Result<usize, WireError> {
    let written = out
        .split_first_chunk_mut::<CV_HEADER_LEN>()
        .and_then(|(header, body)| Some((header, Cursor { rest: body }.entries(entries.clone())?)))
        .filter(|&(_, count)| count <= MAX_CV_ENTRIES);
    let Some((header, count)) = written else {
        return Err(cv_refused(entries));
    };
    let [c0, c1] = (count as u16).to_le_bytes();
    *header = [middlebox, c0, c1];
    Ok(CV_HEADER_LEN + count * ENTRY_LEN)
}

/// Why [`encode_cv`] gave up on `entries`: the rule they break if any, else
/// [`WireError::NoRoom`].
#[cold]
#[inline(never)]
fn cv_refused(entries: impl Iterator<Item = DepEntry>) -> WireError {
    match encoded_cv_len(entries) {
        Ok(_) => WireError::NoRoom,
        Err(e) => e,
    }
}

/// Writes forward through a slice. Its methods give up (`None`) as soon as something does not
/// fit or breaks a rule they see; the cold paths then say which.
struct Cursor<'o> {
    rest: &'o mut [u8],
}

impl<'o> Cursor<'o> {
    /// Writes `entries`, partitions strictly increasing; how many there were.
    #[inline(always)]
    fn entries(&mut self, entries: impl Iterator<Item = DepEntry> + Clone) -> Option<usize> {
        // When the iterator tells its length, the room for all of it is checked once.
        let (n, upper) = entries.size_hint();
        if upper == Some(n) {
            let room = n
                .checked_mul(ENTRY_LEN)
                .and_then(|len| core::mem::take(&mut self.rest).split_at_mut_checked(len));
            let (out, rest) = room?;
            let mut rising = Rising::default();
            let mut count = 0;
            for (out, e) in out.chunks_exact_mut(ENTRY_LEN).zip(entries.clone()) {
                if !rising.see(e.partition.0) {
                    return None;
                }
                out.copy_from_slice(&entry_bytes(e));
                count += 1;
            }
            // A length told wrong (not a bug of ours) is caught here, and the caller gives up.
            if count != n || entries.clone().nth(n).is_some() {
                return None;
            }
            self.rest = rest;
            return Some(count);
        }
        let mut rising = Rising::default();
        let mut count = 0;
        for e in entries {
            if !rising.see(e.partition.0) {
                return None;
            }
            let (out, rest) = core::mem::take(&mut self.rest).split_first_chunk_mut()?;
            *out = entry_bytes(e);
            self.rest = rest;
            count += 1;
        }
        Some(count)
    }

    /// Writes the dependencies and writes of `log`; how many of each there were.
    #[inline(always)]
    fn log_body(&mut self, log: &impl LogSource) -> Option<(usize, usize)> {
        let dep_count = self.entries(log.deps())?;
        let mut write_count = 0usize;
        let mut rest = core::mem::take(&mut self.rest);
        for w in log.writes() {
            // A wrong length from a key or value of 65535 bytes or more is never sent: the log is
            // then longer than 65535 bytes, which `encode_log` refuses.
            let [k0, k1] = (w.key.len() as u16).to_le_bytes();
            // Header and key in one check of the room (a slice is at most `isize::MAX` bytes, so
            // the sum cannot overflow).
            let (head, mut tail) = rest.split_at_mut_checked(WRITE_HEADER_LEN + w.key.len())?;
            let (header, key) = head.split_first_chunk_mut::<WRITE_HEADER_LEN>()?;
            copy_short(key, w.key);
            // A branch, not a select: a delete copies nothing.
            let value_len = match w.value {
                Some(value) => {
                    let (data, after) = tail.split_at_mut_checked(value.len())?;
                    copy_short(data, value);
                    tail = after;
                    value.len() as u16
                }
                None => DELETE,
            };
            let [v0, v1] = value_len.to_le_bytes();
            *header = [k0, k1, v0, v1];
            rest = tail;
            write_count += 1;
        }
        self.rest = rest;
        Some((dep_count, write_count))
    }
}

/// One dependency or commit-vector entry, encoded.
#[inline(always)]
fn entry_bytes(e: DepEntry) -> [u8; ENTRY_LEN] {
    let [p0, p1] = e.partition.0.to_le_bytes();
    let [s0, s1, s2, s3, s4, s5, s6, s7] = e.seq.0.to_le_bytes();
    [p0, p1, s0, s1, s2, s3, s4, s5, s6, s7]
}

/// `dst.copy_from_slice(src)` (same lengths), inline and with no call to `memcpy`: keys and values
/// up to 32 bytes by two overlapping fixed-size moves, longer ones 16 bytes at a time.
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
    // 16 to 32 bytes (keys of 16 bytes, values of 32) first, in one comparison.
    let n = src.len();
    if n.wrapping_sub(16) <= 16 {
        two::<16>(dst, src);
    } else if n > 32 {
        // 16 bytes at a time and the last 16 (overlapping): no call to `memcpy`, whose clobbered
        // registers would cost the loops around spills for every log.
        for (d, s) in dst.chunks_exact_mut(16).zip(src.chunks_exact(16)) {
            d.copy_from_slice(s);
        }
        two::<16>(dst, src);
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
