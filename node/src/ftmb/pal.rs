//! Packet access logs (PALs): FTMB's record of one packet transaction's accesses to shared state,
//! and the byte forms a master sends its output logger (one PAL message per transaction that
//! touched state, and with each packet the number of PAL messages it must wait for).
//!
//! A PAL message, big-endian: number u64 (1, 2, … per master), kind u8 ([`LogKind::code`]),
//! access count u16, then per access partition u16 and the partition's access order number u64
//! (the transaction's dependency entries, DESIGN.md §5).
//!
//! A PAL message lost on a link is asked for again: the output logger sends its master a resend
//! request, two big-endian u64, the first and the last number it lacks.

use ftc_stm::{DepEntry, LogKind};

/// NSH context flag of a frame that carries a PAL message (master → output logger).
pub const FLAG_PAL: u16 = 0x0100;

/// NSH context flag of a frame that asks for PAL messages again (output logger → master).
pub const FLAG_PAL_RESEND: u16 = 0x0200;

const HEADER_LEN: usize = 8 + 1 + 2;
const ACCESS_LEN: usize = 2 + 8;

/// A PAL message or a packet's PAL requirement that does not read back, or that names a
/// PAL number no master can have taken yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PalError {
    #[error("malformed PAL message: {0}")]
    Malformed(&'static str),
    #[error("a packet's PAL requirement is {0} bytes, not 8")]
    BadRequirement(usize),
    #[error("PAL number {number} is more than {max} past the {logged} PAL messages logged: no master numbers that far ahead")]
    OutOfReach { number: u64, logged: u64, max: u64 },
    #[error("malformed PAL resend request: {0}")]
    BadResend(&'static str),
}

/// The header of a PAL message read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PalHeader {
    pub number: u64,
    pub kind: LogKind,
    pub accesses: u16,
}

/// Write PAL message `number` of a transaction of `kind` that accessed `deps` into `out`
/// (cleared first; its capacity is reused).
pub fn encode(out: &mut Vec<u8>, number: u64, kind: LogKind, deps: &[DepEntry]) {
    out.clear();
    out.extend_from_slice(&number.to_be_bytes());
    out.push(kind.code());
    // A store has at most 65536 partitions, each accessed once per transaction.
    out.extend_from_slice(&(deps.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    for d in deps.iter().take(usize::from(u16::MAX)) {
        out.extend_from_slice(&d.partition.0.to_be_bytes());
        out.extend_from_slice(&d.seq.0.to_be_bytes());
    }
}

/// Read a PAL message's header, checking that its accesses fill the rest exactly.
pub fn decode(bytes: &[u8]) -> Result<PalHeader, PalError> {
    let (head, rest) = bytes
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(PalError::Malformed("shorter than its header"))?;
    let kind = LogKind::from_code(head[8])
        .filter(|k| *k != LogKind::Noop)
        .ok_or(PalError::Malformed("not a read-only or update kind"))?;
    let accesses = u16::from_be_bytes([head[9], head[10]]);
    if accesses == 0 || rest.len() != usize::from(accesses) * ACCESS_LEN {
        return Err(PalError::Malformed(
            "access count does not match its length",
        ));
    }
    Ok(PalHeader {
        number: number(bytes).unwrap_or(0),
        kind,
        accesses,
    })
}

/// The accesses of a PAL message that [`decode`] read back.
pub fn accesses(bytes: &[u8]) -> impl Iterator<Item = DepEntry> + '_ {
    bytes
        .get(HEADER_LEN..)
        .unwrap_or_default()
        .chunks_exact(ACCESS_LEN)
        .map(|a| {
            let (p, s) = a.split_at(2);
            DepEntry::new(
                u16::from_be_bytes([p[0], p[1]]),
                u64::from_be_bytes(s.try_into().expect("8 bytes")),
            )
        })
}

/// The number of a PAL message (its first 8 bytes), without checking the rest.
pub fn number(bytes: &[u8]) -> Option<u64> {
    bytes.first_chunk::<8>().map(|b| u64::from_be_bytes(*b))
}

/// Write a packet's PAL requirement: it may leave once `needs` PAL messages arrived.
pub fn encode_requirement(out: &mut Vec<u8>, needs: u64) {
    out.clear();
    out.extend_from_slice(&needs.to_be_bytes());
}

/// Read a packet's PAL requirement.
pub fn decode_requirement(bytes: &[u8]) -> Result<u64, PalError> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| PalError::BadRequirement(bytes.len()))?;
    Ok(u64::from_be_bytes(b))
}

/// Write a request for PAL messages `first..=last` again.
pub fn encode_resend(out: &mut Vec<u8>, first: u64, last: u64) {
    out.clear();
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&last.to_be_bytes());
}

/// Read a resend request: the numbers asked for, at least one, none of them 0.
pub fn decode_resend(bytes: &[u8]) -> Result<std::ops::RangeInclusive<u64>, PalError> {
    let b: &[u8; 16] = bytes
        .try_into()
        .map_err(|_| PalError::BadResend("not 16 bytes"))?;
    let [first, last] = [&b[..8], &b[8..]].map(|h| u64::from_be_bytes(h.try_into().unwrap()));
    if first == 0 || first > last {
        return Err(PalError::BadResend("not a range of PAL numbers"));
    }
    Ok(first..=last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(p: u16, s: u64) -> DepEntry {
        DepEntry::new(p, s)
    }

    #[test]
    fn a_pal_message_reads_back_and_bad_ones_are_refused() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, LogKind::Update, &[dep(1, 5), dep(9, 0)]);
        assert_eq!(buf.len(), HEADER_LEN + 2 * ACCESS_LEN);
        let h = decode(&buf).unwrap();
        assert_eq!((h.number, h.kind, h.accesses), (7, LogKind::Update, 2));
        assert_eq!(accesses(&buf).collect::<Vec<_>>(), [dep(1, 5), dep(9, 0)]);
        assert!(decode(&buf[..buf.len() - 1]).is_err());
        assert!(decode(&buf[..5]).is_err());
        buf[8] = LogKind::Noop.code();
        assert!(decode(&buf).is_err());
        encode(&mut buf, 1, LogKind::ReadOnly, &[]);
        assert!(decode(&buf).is_err(), "a PAL logs at least one access");

        encode_requirement(&mut buf, 42);
        assert_eq!(decode_requirement(&buf), Ok(42));
        assert_eq!(
            decode_requirement(&buf[..3]),
            Err(PalError::BadRequirement(3))
        );

        encode_resend(&mut buf, 3, 9);
        assert_eq!(decode_resend(&buf), Ok(3..=9));
        assert!(decode_resend(&buf[..15]).is_err());
        for (first, last) in [(0, 4), (5, 4)] {
            encode_resend(&mut buf, first, last);
            assert!(decode_resend(&buf).is_err(), "{first}..={last}");
        }
    }
}
