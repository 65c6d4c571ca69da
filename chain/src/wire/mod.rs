//! The wire format between chain servers (DESIGN.md §4): NSH frames with the FTC context header,
//! the piggyback message they carry as a trailer, and the commit vectors those messages update.
//!
//! Everything here follows smoltcp's `wire` module: typed zero-copy views over `&[u8]` /
//! `&mut [u8]` whose checked constructors validate the bytes once, after which no accessor or
//! iterator can panic; owned `*Repr` forms for tests and cold paths; and a writer that encodes
//! straight into the caller's buffer. Views and the writer never allocate, and the error type is a
//! small `Copy` enum.
//!
//! - [`NshFrame`] / [`NshRepr`]: outer Ethernet + NSH base, service path and context headers.
//! - [`MessageView`] / [`LogView`] / [`CvView`]: the piggyback message, checked once.
//! - [`MessageWriter`]: encodes logs and commit vectors into a fixed buffer.
//! - [`MessageRepr`] / [`LogRepr`] / [`CvRepr`]: owned forms.
//! - [`CommitVector`]: a dense commit vector merged from sparse entries by element-wise max.

mod commit;
mod message;
mod nsh;
mod repr;
mod writer;

pub use commit::CommitVector;
pub use message::{
    CvIter, CvView, DepIter, LogIter, LogView, MessageView, WriteIter, MESSAGE_HEADER_LEN,
    MESSAGE_VERSION,
};
pub use nsh::{carries_ftc_context, NshFrame, NshRepr, CONTEXT_CLASS, CONTEXT_TYPE, ETHERTYPE_NSH};
pub use repr::{CvRepr, LogRepr, MessageRepr};
pub use writer::{encoded_cv_len, encoded_log_len, Counted, MessageWriter, Written};

/// Why bytes are not a valid frame or message, or why an encoding did not fit.
///
/// Small and `Copy`: building one never allocates, so bad input costs nothing on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    /// The bytes end before a field or an announced length does.
    #[error("truncated")]
    Truncated,
    /// The outer EtherType is not NSH (0x894F).
    #[error("EtherType is not NSH")]
    BadEtherType,
    /// The NSH version is not 0, or the piggyback message version is not [`MESSAGE_VERSION`].
    #[error("unsupported version")]
    BadVersion,
    /// The NSH Length field is not 5 words (base + service path + one 8-byte context TLV).
    #[error("bad NSH length")]
    BadLength,
    /// The NSH MD type is not 2.
    #[error("NSH MD type is not 2")]
    BadMdType,
    /// The NSH next protocol is not Ethernet (3).
    #[error("NSH next protocol is not Ethernet")]
    BadNextProtocol,
    /// The first context TLV is not FTC's (class 0xFFF6, type 1, length 8).
    #[error("context header is not FTC's")]
    BadContext,
    /// The piggyback message breaks a rule; the text says which.
    #[error("bad piggyback message: {0}")]
    BadMessage(&'static str),
    /// The encoding does not fit in the room left; nothing was written.
    #[error("no room left in the buffer")]
    NoRoom,
}

#[cfg(test)]
mod tests;
