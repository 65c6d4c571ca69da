//! Zero-copy views of the piggyback message: checked once by [`MessageView::new_checked`], then
//! walked by iterators that cannot panic.
//!
//! ```text
//! header (6): version u8 = 1 | flags u8 | log count u16 | commit-vector count u16
//! log:        middlebox u8 | kind u8 (0 update, 1 read-only, 2 no-op)
//!             | dep count (LEB128) | (partition u16, seq LEB128)*
//!             | write count (LEB128)
//!             | (key len LEB128, key, value tag LEB128 (0 delete, else len + 1), value)*
//! cv:         middlebox u8 | entry count (LEB128) | (partition u16, seq LEB128)*
//! ```
//!
//! A valid message has version 1, exactly the announced numbers of logs and commit vectors and no
//! byte after them; strict minimal LEB128 ([`super::leb128`]); strictly increasing partitions
//! within each log and commit vector; update logs with ≥ 1 dependency and ≥ 1 write, read-only
//! logs with ≥ 1 dependency and no write, no-op logs with neither. (That a log writes each key at
//! most once is the sender's promise; it is not checked here.)

use ftc_stm::{DepEntry, LogKind, LogSource, Partition, Seq, Write};

use super::leb128;
use super::WireError;

/// Version of the piggyback message format.
pub const MESSAGE_VERSION: u8 = 1;
/// Length of the message header.
pub const MESSAGE_HEADER_LEN: usize = 6;

pub(super) mod field {
    pub const VERSION: usize = 0;
    pub const FLAGS: usize = 1;
    pub const LOG_COUNT: core::ops::Range<usize> = 2..4;
    pub const CV_COUNT: core::ops::Range<usize> = 4..6;
}

/// Smallest encoding of one dependency or commit-vector entry: partition (2) + seq (1).
const MIN_ENTRY_LEN: usize = 3;
/// Smallest encoding of one write: key length (1) + value tag (1).
const MIN_WRITE_LEN: usize = 2;

/// A cursor over untrusted bytes; every read is checked.
#[derive(Debug, Clone, Copy)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn u8(&mut self) -> Result<u8, WireError> {
        let (&b, rest) = self.rest.split_first().ok_or(WireError::Truncated)?;
        self.rest = rest;
        Ok(b)
    }

    #[inline(always)]
    fn u16(&mut self) -> Result<u16, WireError> {
        let (b, rest) = self
            .rest
            .split_first_chunk::<2>()
            .ok_or(WireError::Truncated)?;
        self.rest = rest;
        Ok(u16::from_be_bytes(*b))
    }

    #[inline(always)]
    fn var(&mut self) -> Result<u64, WireError> {
        let (v, n) = leb128::read_u64_checked(self.rest)?;
        self.rest = self.rest.get(n..).ok_or(WireError::Truncated)?;
        Ok(v)
    }

    /// A LEB128 length that must fit in usize (else it cannot fit the buffer either).
    #[inline(always)]
    fn len(&mut self) -> Result<usize, WireError> {
        usize::try_from(self.var()?).map_err(|_| WireError::Truncated)
    }

    /// A count of items each at least `min_len` bytes long, which must fit in what is left.
    #[inline(always)]
    fn count(&mut self, min_len: usize) -> Result<usize, WireError> {
        let n = self.len()?;
        if n > self.rest.len() / min_len {
            return Err(WireError::Truncated);
        }
        Ok(n)
    }

    #[inline(always)]
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let (a, rest) = self.rest.split_at_checked(n).ok_or(WireError::Truncated)?;
        self.rest = rest;
        Ok(a)
    }

    #[inline(always)]
    fn write(&mut self) -> Result<Write<'a>, WireError> {
        let key_len = self.len()?;
        let key = self.bytes(key_len)?;
        let value = match self.var()? {
            0 => None,
            tag => {
                let len = usize::try_from(tag - 1).map_err(|_| WireError::Truncated)?;
                Some(self.bytes(len)?)
            }
        };
        Ok(Write { key, value })
    }

    /// Reads `count` entries, checking partitions strictly increase; returns their bytes.
    #[inline(always)]
    fn entries(&mut self, count: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let start = self.rest;
        // One more than the previous partition (0 before the first): the next must reach it.
        let mut min = 0u32;
        for _ in 0..count {
            let p = u32::from(self.u16()?);
            self.var()?;
            if p < min {
                return Err(WireError::BadMessage(what));
            }
            min = p + 1;
        }
        Ok(&start[..start.len() - self.rest.len()])
    }
}

/// A LEB128 integer of 4 bytes or more, known to be valid: the value and its length (the whole
/// of `rest` if it is not valid after all). Takes and returns values so that a [`Walk`] can stay
/// in registers.
#[cold]
fn var_long(rest: &[u8]) -> (u64, usize) {
    leb128::read_u64_checked(rest).unwrap_or((0, rest.len()))
}

/// A cursor over bytes that [`MessageView::new_checked`] (or another checked constructor) has
/// validated: it re-reads them without checking the rules again. Every read is still
/// bounds-checked, so it cannot panic; past the end (which a checked view never reaches) it reads
/// zeros and empty slices.
#[derive(Debug, Clone, Copy)]
struct Walk<'a> {
    rest: &'a [u8],
}

impl<'a> Walk<'a> {
    #[inline(always)]
    fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    #[inline(always)]
    fn u16(&mut self) -> u16 {
        match self.rest.split_first_chunk::<2>() {
            Some((b, rest)) => {
                self.rest = rest;
                u16::from_be_bytes(*b)
            }
            None => {
                self.rest = &[];
                0
            }
        }
    }

    /// A LEB128 integer, known to be valid.
    #[inline(always)]
    fn var(&mut self) -> u64 {
        match *self.rest {
            [b0, ref rest @ ..] if b0 < 0x80 => {
                self.rest = rest;
                u64::from(b0)
            }
            [b0, b1, ref rest @ ..] if b1 < 0x80 => {
                self.rest = rest;
                u64::from(b0 & 0x7f) | (u64::from(b1) << 7)
            }
            [b0, b1, b2, ref rest @ ..] if b2 < 0x80 => {
                self.rest = rest;
                u64::from(b0 & 0x7f) | (u64::from(b1 & 0x7f) << 7) | (u64::from(b2) << 14)
            }
            _ => {
                let (v, n) = var_long(self.rest);
                self.rest = self.rest.get(n..).unwrap_or_default();
                v
            }
        }
    }

    /// Skips a LEB128 integer, known to be valid.
    #[inline(always)]
    fn skip_var(&mut self) {
        match *self.rest {
            [b0, ref rest @ ..] if b0 < 0x80 => self.rest = rest,
            [_, b1, ref rest @ ..] if b1 < 0x80 => self.rest = rest,
            [_, _, b2, ref rest @ ..] if b2 < 0x80 => self.rest = rest,
            _ => self.rest = self.rest.get(var_long(self.rest).1..).unwrap_or_default(),
        }
    }

    #[inline(always)]
    fn len(&mut self) -> usize {
        usize::try_from(self.var()).unwrap_or(usize::MAX)
    }

    #[inline(always)]
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        match self.rest.split_at_checked(n) {
            Some((a, rest)) => {
                self.rest = rest;
                a
            }
            None => core::mem::take(&mut self.rest),
        }
    }

    #[inline(always)]
    fn entry(&mut self) -> DepEntry {
        let partition = Partition(self.u16());
        let seq = Seq(self.var());
        DepEntry { partition, seq }
    }

    /// Skips `count` entries; returns their bytes.
    #[inline(always)]
    fn entries(&mut self, count: usize) -> &'a [u8] {
        let start = self.rest;
        for _ in 0..count {
            self.bytes(2);
            self.skip_var();
        }
        &start[..start.len() - self.rest.len()]
    }

    #[inline(always)]
    fn write(&mut self) -> Write<'a> {
        let key_len = self.len();
        let key = self.bytes(key_len);
        let value = match self.var() {
            0 => None,
            tag => Some(self.bytes(usize::try_from(tag - 1).unwrap_or(usize::MAX))),
        };
        Write { key, value }
    }
}

/// A checked piggyback message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageView<'a> {
    bytes: &'a [u8],
    /// Offset of the first commit vector.
    cvs_start: usize,
}

impl<'a> MessageView<'a> {
    /// Validates every rule of the format (module docs) over the whole of `bytes`.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader { rest: bytes };
        if r.u8()? != MESSAGE_VERSION {
            return Err(WireError::BadVersion);
        }
        let _flags = r.u8()?;
        let log_count = r.u16()?;
        let cv_count = r.u16()?;
        for _ in 0..log_count {
            LogView::parse_from(&mut r)?;
        }
        let cvs_start = bytes.len() - r.rest.len();
        for _ in 0..cv_count {
            CvView::parse_from(&mut r)?;
        }
        if !r.rest.is_empty() {
            return Err(WireError::BadMessage(
                "trailing bytes after the last commit vector",
            ));
        }
        Ok(MessageView { bytes, cvs_start })
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Message flags.
    pub fn flags(&self) -> u8 {
        self.bytes[field::FLAGS]
    }

    /// Number of logs.
    pub fn log_count(&self) -> u16 {
        be16(&self.bytes[field::LOG_COUNT])
    }

    /// Number of commit vectors.
    pub fn cv_count(&self) -> u16 {
        be16(&self.bytes[field::CV_COUNT])
    }

    /// The logs, in order.
    pub fn logs(&self) -> LogIter<'a> {
        LogIter {
            r: Walk {
                rest: &self.bytes[MESSAGE_HEADER_LEN..self.cvs_start],
            },
            remaining: usize::from(self.log_count()),
        }
    }

    /// The commit vectors, in order.
    pub fn commit_vectors(&self) -> CvIter<'a> {
        CvIter {
            r: Walk {
                rest: &self.bytes[self.cvs_start..],
            },
            remaining: usize::from(self.cv_count()),
        }
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// One checked log of a piggyback message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogView<'a> {
    bytes: &'a [u8],
    middlebox: u8,
    kind: LogKind,
    dep_count: usize,
    deps: &'a [u8],
    write_count: usize,
    writes: &'a [u8],
}

impl<'a> LogView<'a> {
    /// Validates `bytes` as exactly one encoded log.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader { rest: bytes };
        let log = Self::parse_from(&mut r)?;
        if !r.rest.is_empty() {
            return Err(WireError::BadMessage("trailing bytes after the log"));
        }
        Ok(log)
    }

    #[inline]
    fn parse_from(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let start = r.rest;
        let middlebox = r.u8()?;
        let kind = LogKind::from_code(r.u8()?).ok_or(WireError::BadMessage("unknown log kind"))?;
        let dep_count = r.count(MIN_ENTRY_LEN)?;
        let rule = match kind {
            LogKind::Update | LogKind::ReadOnly if dep_count == 0 => {
                Some("update and read-only logs need a dependency")
            }
            LogKind::Noop if dep_count != 0 => Some("no-op logs have no dependency"),
            _ => None,
        };
        if let Some(rule) = rule {
            return Err(WireError::BadMessage(rule));
        }
        let deps = r.entries(dep_count, "log dependency partitions not increasing")?;
        let write_count = r.count(MIN_WRITE_LEN)?;
        let rule = match kind {
            LogKind::Update if write_count == 0 => Some("update logs need a write"),
            LogKind::ReadOnly | LogKind::Noop if write_count != 0 => {
                Some("read-only and no-op logs have no write")
            }
            _ => None,
        };
        if let Some(rule) = rule {
            return Err(WireError::BadMessage(rule));
        }
        let writes_start = r.rest;
        for _ in 0..write_count {
            r.write()?;
        }
        let writes = &writes_start[..writes_start.len() - r.rest.len()];
        Ok(LogView {
            bytes: &start[..start.len() - r.rest.len()],
            middlebox,
            kind,
            dep_count,
            deps,
            write_count,
            writes,
        })
    }

    /// Re-reads a log that [`MessageView::new_checked`] has checked: finds its parts without
    /// checking the rules again. Still bounds-checked, so it cannot panic.
    #[inline(always)]
    fn parse_checked_from(r: &mut Walk<'a>) -> Self {
        let start = r.rest;
        let middlebox = r.u8();
        let kind = LogKind::from_code(r.u8()).unwrap_or(LogKind::Noop);
        let dep_count = r.len();
        let deps = r.entries(dep_count);
        let write_count = r.len();
        let writes_start = r.rest;
        for _ in 0..write_count {
            let key_len = r.len();
            r.bytes(key_len);
            let tag = r.var();
            if tag != 0 {
                r.bytes(usize::try_from(tag - 1).unwrap_or(usize::MAX));
            }
        }
        let writes = &writes_start[..writes_start.len() - r.rest.len()];
        LogView {
            bytes: &start[..start.len() - r.rest.len()],
            middlebox,
            kind,
            dep_count,
            deps,
            write_count,
            writes,
        }
    }

    /// The whole encoded log: a server forwards it with [`super::MessageWriter::push_log_bytes`].
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Index of the middlebox (in chain order) whose transaction made this log.
    pub fn middlebox(&self) -> u8 {
        self.middlebox
    }

    /// What the transaction did.
    pub fn kind(&self) -> LogKind {
        self.kind
    }

    /// Number of dependency entries.
    pub fn dep_count(&self) -> usize {
        self.dep_count
    }

    /// Number of writes.
    pub fn write_count(&self) -> usize {
        self.write_count
    }

    /// The dependency entries, partitions strictly increasing.
    pub fn deps(&self) -> DepIter<'a> {
        DepIter {
            r: Walk { rest: self.deps },
            remaining: self.dep_count,
        }
    }

    /// The writes, in the order the transaction made them.
    pub fn writes(&self) -> WriteIter<'a> {
        WriteIter {
            r: Walk { rest: self.writes },
            remaining: self.write_count,
        }
    }
}

impl LogSource for LogView<'_> {
    fn kind(&self) -> LogKind {
        self.kind
    }

    fn deps(&self) -> impl Iterator<Item = DepEntry> + Clone + '_ {
        LogView::deps(self)
    }

    fn writes(&self) -> impl Iterator<Item = Write<'_>> + '_ {
        LogView::writes(self)
    }
}

/// One checked commit vector of a piggyback message: sparse entries, partitions increasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CvView<'a> {
    bytes: &'a [u8],
    middlebox: u8,
    count: usize,
    entries: &'a [u8],
}

impl<'a> CvView<'a> {
    /// Validates `bytes` as exactly one encoded commit vector.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader { rest: bytes };
        let cv = Self::parse_from(&mut r)?;
        if !r.rest.is_empty() {
            return Err(WireError::BadMessage(
                "trailing bytes after the commit vector",
            ));
        }
        Ok(cv)
    }

    #[inline]
    fn parse_from(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let start = r.rest;
        let middlebox = r.u8()?;
        let count = r.count(MIN_ENTRY_LEN)?;
        let entries = r.entries(count, "commit vector partitions not increasing")?;
        Ok(CvView {
            bytes: &start[..start.len() - r.rest.len()],
            middlebox,
            count,
            entries,
        })
    }

    /// Re-reads a commit vector that [`MessageView::new_checked`] has checked.
    #[inline(always)]
    fn parse_checked_from(r: &mut Walk<'a>) -> Self {
        let start = r.rest;
        let middlebox = r.u8();
        let count = r.len();
        let entries = r.entries(count);
        CvView {
            bytes: &start[..start.len() - r.rest.len()],
            middlebox,
            count,
            entries,
        }
    }

    /// The whole encoded commit vector.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Index of the middlebox whose state this vector describes.
    pub fn middlebox(&self) -> u8 {
        self.middlebox
    }

    /// Number of entries.
    pub fn entry_count(&self) -> usize {
        self.count
    }

    /// The entries, partitions strictly increasing.
    pub fn entries(&self) -> DepIter<'a> {
        DepIter {
            r: Walk { rest: self.entries },
            remaining: self.count,
        }
    }
}

/// Iterator over the logs of a [`MessageView`].
#[derive(Debug, Clone)]
pub struct LogIter<'a> {
    r: Walk<'a>,
    remaining: usize,
}

impl<'a> Iterator for LogIter<'a> {
    type Item = LogView<'a>;

    #[inline]
    fn next(&mut self) -> Option<LogView<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(LogView::parse_checked_from(&mut self.r))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for LogIter<'_> {}

/// Iterator over the commit vectors of a [`MessageView`].
#[derive(Debug, Clone)]
pub struct CvIter<'a> {
    r: Walk<'a>,
    remaining: usize,
}

impl<'a> Iterator for CvIter<'a> {
    type Item = CvView<'a>;

    #[inline]
    fn next(&mut self) -> Option<CvView<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(CvView::parse_checked_from(&mut self.r))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for CvIter<'_> {}

/// Iterator over dependency or commit-vector entries.
#[derive(Debug, Clone)]
pub struct DepIter<'a> {
    r: Walk<'a>,
    remaining: usize,
}

impl Iterator for DepIter<'_> {
    type Item = DepEntry;

    #[inline]
    fn next(&mut self) -> Option<DepEntry> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(self.r.entry())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for DepIter<'_> {}

/// Iterator over the writes of a log.
#[derive(Debug, Clone)]
pub struct WriteIter<'a> {
    r: Walk<'a>,
    remaining: usize,
}

impl<'a> Iterator for WriteIter<'a> {
    type Item = Write<'a>;

    #[inline]
    fn next(&mut self) -> Option<Write<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(self.r.write())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for WriteIter<'_> {}
