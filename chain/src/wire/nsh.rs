//! The NSH frame between chain servers: outer Ethernet, NSH base and service path headers, and the
//! FTC context TLV (epoch, trailer length, flags), as a zero-copy view and an owned repr.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  destination MAC, source MAC (12 bytes)       |
//! |           EtherType 0x894F    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   offset 14
//! |Ver|O|U|    TTL    |  Length=5 |U|U|U|U|MDType=2| NextProto=3  |   base header
//! |          Service Path Identifier (SPI)        | Service Index |   service path header
//! |   Metadata Class = 0xFFF6     |  Type = 0x01  |U| Length = 8  |   context TLV
//! |                            epoch                              |
//! |        trailer length         |             flags             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   offset 34
//! | inner frame (customer Ethernet frame) ...  | trailer (piggyback message)  |
//! ```
//!
//! When the O bit is set (a propagating frame) the inner frame is empty and the trailer starts
//! right after the header; any bytes after it (Ethernet padding) are ignored. Unassigned (U) bits
//! are written as zero and ignored on receipt, as RFC 8300 §2.2 asks.

use super::WireError;

/// EtherType of NSH (RFC 8300 §9.1).
pub const ETHERTYPE_NSH: u16 = 0x894F;
/// Metadata class of FTC's context TLV (from the experimental range, RFC 8300 §9.1.4).
pub const CONTEXT_CLASS: u16 = 0xFFF6;
/// Type of FTC's context TLV within [`CONTEXT_CLASS`].
pub const CONTEXT_TYPE: u8 = 0x01;

const NSH_VERSION: u8 = 0;
/// Whole NSH header in 4-byte words: base (1) + service path (1) + TLV header (1) + value (2).
const NSH_LEN_WORDS: u8 = 5;
const MD_TYPE_2: u8 = 2;
const NEXT_PROTO_ETHERNET: u8 = 3;
const CONTEXT_VALUE_LEN: u8 = 8;

mod field {
    pub type Field = core::ops::Range<usize>;

    pub const DST_MAC: Field = 0..6;
    pub const SRC_MAC: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    /// Ver(2) O(1) U(1) TTL high 4 bits.
    pub const VER_O_TTL: usize = 14;
    /// TTL low 2 bits, Length(6).
    pub const TTL_LEN: usize = 15;
    /// U(4) MD type(4).
    pub const MD_TYPE: usize = 16;
    pub const NEXT_PROTO: usize = 17;
    pub const SPI: Field = 18..21;
    pub const SI: usize = 21;
    pub const CTX_CLASS: Field = 22..24;
    pub const CTX_TYPE: usize = 24;
    /// U(1) Length(7).
    pub const CTX_LEN: usize = 25;
    pub const EPOCH: Field = 26..30;
    pub const TRAILER_LEN: Field = 30..32;
    pub const FLAGS: Field = 32..34;
    pub const PAYLOAD: usize = 34;
}

/// A read/write view of an NSH frame between chain servers.
///
/// Build it with [`NshFrame::new_checked`]; after that no accessor panics. Accessors on a frame
/// built with [`NshFrame::new_unchecked`] panic if the buffer is too short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NshFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NshFrame<T> {
    /// Wraps `buffer` without checking anything.
    pub const fn new_unchecked(buffer: T) -> Self {
        NshFrame { buffer }
    }

    /// Wraps `buffer` and validates it with [`NshFrame::check`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check()?;
        Ok(frame)
    }

    /// Validates the whole header and that the trailer fits: afterwards no accessor panics.
    pub fn check(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < NshRepr::HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.ethertype() != ETHERTYPE_NSH {
            return Err(WireError::BadEtherType);
        }
        if b[field::VER_O_TTL] >> 6 != NSH_VERSION {
            return Err(WireError::BadVersion);
        }
        if b[field::TTL_LEN] & 0x3f != NSH_LEN_WORDS {
            return Err(WireError::BadLength);
        }
        if b[field::MD_TYPE] & 0x0f != MD_TYPE_2 {
            return Err(WireError::BadMdType);
        }
        if b[field::NEXT_PROTO] != NEXT_PROTO_ETHERNET {
            return Err(WireError::BadNextProtocol);
        }
        if be16(&b[field::CTX_CLASS]) != CONTEXT_CLASS
            || b[field::CTX_TYPE] != CONTEXT_TYPE
            || b[field::CTX_LEN] & 0x7f != CONTEXT_VALUE_LEN
        {
            return Err(WireError::BadContext);
        }
        if usize::from(self.trailer_len()) > b.len() - NshRepr::HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Outer destination MAC.
    pub fn dst_mac(&self) -> [u8; 6] {
        mac(&self.buffer.as_ref()[field::DST_MAC])
    }

    /// Outer source MAC.
    pub fn src_mac(&self) -> [u8; 6] {
        mac(&self.buffer.as_ref()[field::SRC_MAC])
    }

    /// Outer EtherType.
    pub fn ethertype(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ETHERTYPE])
    }

    /// The O bit: a propagating frame (no inner frame, only a trailer).
    pub fn is_propagating(&self) -> bool {
        self.buffer.as_ref()[field::VER_O_TTL] & 0x20 != 0
    }

    /// NSH TTL (6 bits).
    pub fn ttl(&self) -> u8 {
        let b = self.buffer.as_ref();
        ((b[field::VER_O_TTL] & 0x0f) << 2) | (b[field::TTL_LEN] >> 6)
    }

    /// Service Path Identifier (24 bits): the chain id.
    pub fn spi(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::SPI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// Service Index: 255 - hop.
    pub fn si(&self) -> u8 {
        self.buffer.as_ref()[field::SI]
    }

    /// Epoch of the chain configuration the sender had: fences stale frames.
    pub fn epoch(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::EPOCH];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Length in bytes of the trailer (the piggyback message).
    pub fn trailer_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::TRAILER_LEN])
    }

    /// FTC flags of the context header.
    pub fn flags(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::FLAGS])
    }

    fn inner_range(&self) -> core::ops::Range<usize> {
        let len = self.buffer.as_ref().len();
        if self.is_propagating() {
            field::PAYLOAD..field::PAYLOAD
        } else {
            field::PAYLOAD..len - usize::from(self.trailer_len())
        }
    }

    fn trailer_range(&self) -> core::ops::Range<usize> {
        let len = self.buffer.as_ref().len();
        let tl = usize::from(self.trailer_len());
        if self.is_propagating() {
            field::PAYLOAD..field::PAYLOAD + tl
        } else {
            len - tl..len
        }
    }

    /// The customer's Ethernet frame (empty in a propagating frame).
    pub fn inner(&self) -> &[u8] {
        let r = self.inner_range();
        &self.buffer.as_ref()[r]
    }

    /// The piggyback message bytes.
    pub fn trailer(&self) -> &[u8] {
        let r = self.trailer_range();
        &self.buffer.as_ref()[r]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NshFrame<T> {
    /// Sets the outer destination MAC.
    pub fn set_dst_mac(&mut self, v: [u8; 6]) {
        self.buffer.as_mut()[field::DST_MAC].copy_from_slice(&v);
    }

    /// Sets the outer source MAC.
    pub fn set_src_mac(&mut self, v: [u8; 6]) {
        self.buffer.as_mut()[field::SRC_MAC].copy_from_slice(&v);
    }

    /// Sets the outer EtherType.
    pub fn set_ethertype(&mut self, v: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the O bit.
    pub fn set_propagating(&mut self, v: bool) {
        let b = &mut self.buffer.as_mut()[field::VER_O_TTL];
        *b = (*b & !0x20) | (u8::from(v) << 5);
    }

    /// Sets the TTL; only the low 6 bits are kept.
    pub fn set_ttl(&mut self, v: u8) {
        let b = self.buffer.as_mut();
        b[field::VER_O_TTL] = (b[field::VER_O_TTL] & 0xf0) | ((v >> 2) & 0x0f);
        b[field::TTL_LEN] = (b[field::TTL_LEN] & 0x3f) | ((v & 0x03) << 6);
    }

    /// Sets the SPI; only the low 24 bits are kept.
    pub fn set_spi(&mut self, v: u32) {
        self.buffer.as_mut()[field::SPI].copy_from_slice(&v.to_be_bytes()[1..]);
    }

    /// Sets the Service Index.
    pub fn set_si(&mut self, v: u8) {
        self.buffer.as_mut()[field::SI] = v;
    }

    /// Sets the epoch.
    pub fn set_epoch(&mut self, v: u32) {
        self.buffer.as_mut()[field::EPOCH].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the trailer length. This moves the boundary between inner frame and trailer.
    ///
    /// # Panics
    /// If `v` is more than the bytes after the header: the frame would no longer pass
    /// [`NshFrame::check`], and its accessors would panic.
    pub fn set_trailer_len(&mut self, v: u16) {
        assert!(
            usize::from(v) <= self.buffer.as_ref().len().saturating_sub(field::PAYLOAD),
            "a trailer of {v} bytes does not fit the frame"
        );
        self.buffer.as_mut()[field::TRAILER_LEN].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the FTC flags.
    pub fn set_flags(&mut self, v: u16) {
        self.buffer.as_mut()[field::FLAGS].copy_from_slice(&v.to_be_bytes());
    }

    /// Writes the fixed fields: version 0, U bits 0, Length 5, MD type 2, next protocol
    /// Ethernet, and FTC's context TLV header; leaves O, TTL and the values alone.
    fn set_fixed_fields(&mut self) {
        self.set_ethertype(ETHERTYPE_NSH);
        let b = self.buffer.as_mut();
        b[field::VER_O_TTL] = (NSH_VERSION << 6) | (b[field::VER_O_TTL] & 0x2f);
        b[field::TTL_LEN] = (b[field::TTL_LEN] & 0xc0) | NSH_LEN_WORDS;
        b[field::MD_TYPE] = MD_TYPE_2;
        b[field::NEXT_PROTO] = NEXT_PROTO_ETHERNET;
        b[field::CTX_CLASS].copy_from_slice(&CONTEXT_CLASS.to_be_bytes());
        b[field::CTX_TYPE] = CONTEXT_TYPE;
        b[field::CTX_LEN] = CONTEXT_VALUE_LEN;
    }

    /// The customer's frame, mutable.
    pub fn inner_mut(&mut self) -> &mut [u8] {
        let r = self.inner_range();
        &mut self.buffer.as_mut()[r]
    }

    /// The trailer, mutable.
    pub fn trailer_mut(&mut self) -> &mut [u8] {
        let r = self.trailer_range();
        &mut self.buffer.as_mut()[r]
    }
}

/// The header of an NSH frame between chain servers, owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NshRepr {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// The O bit: a frame that carries only a piggyback message.
    pub propagating: bool,
    /// 6 bits.
    pub ttl: u8,
    /// Chain id, 24 bits.
    pub spi: u32,
    /// 255 - hop.
    pub si: u8,
    pub epoch: u32,
    pub flags: u16,
    pub trailer_len: u16,
}

impl NshRepr {
    /// Bytes from the start of the outer Ethernet header to the inner frame.
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Validates `frame` (as [`NshFrame::check`]) and reads its header.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &NshFrame<&T>) -> Result<NshRepr, WireError> {
        frame.check()?;
        Ok(NshRepr {
            dst_mac: frame.dst_mac(),
            src_mac: frame.src_mac(),
            propagating: frame.is_propagating(),
            ttl: frame.ttl(),
            spi: frame.spi(),
            si: frame.si(),
            epoch: frame.epoch(),
            flags: frame.flags(),
            trailer_len: frame.trailer_len(),
        })
    }

    /// Length of a whole frame with this header around an inner frame of `inner_len` bytes
    /// (ignored when propagating).
    pub fn frame_len(&self, inner_len: usize) -> usize {
        let inner = if self.propagating { 0 } else { inner_len };
        Self::HEADER_LEN + inner + usize::from(self.trailer_len)
    }

    /// Writes the whole header into `frame`. `ttl` keeps its low 6 bits and `spi` its low 24.
    ///
    /// # Panics
    /// If the buffer is shorter than [`NshRepr::HEADER_LEN`]: the caller sizes the buffer it
    /// builds (see [`NshRepr::frame_len`]).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, frame: &mut NshFrame<&mut T>) {
        frame.set_dst_mac(self.dst_mac);
        frame.set_src_mac(self.src_mac);
        frame.set_fixed_fields();
        frame.set_propagating(self.propagating);
        frame.set_ttl(self.ttl);
        frame.set_spi(self.spi);
        frame.set_si(self.si);
        frame.set_epoch(self.epoch);
        frame.set_trailer_len(self.trailer_len);
        frame.set_flags(self.flags);
    }
}

/// Whether `frame`, an Ethernet frame from anywhere, claims to be an FTC frame: its EtherType is
/// NSH, its MD type is 2 and its first context TLV has FTC's class.
///
/// The forwarder drops such frames at ingress so that no customer can inject piggyback messages.
/// It looks at untagged frames only (FTC's own frames carry no VLAN tag), reads three fields and
/// never panics.
pub fn carries_ftc_context(frame: &[u8]) -> bool {
    let (Some(et), Some(md), Some(class)) = (
        frame.get(field::ETHERTYPE),
        frame.get(field::MD_TYPE),
        frame.get(field::CTX_CLASS),
    ) else {
        return false;
    };
    be16(et) == ETHERTYPE_NSH && md & 0x0f == MD_TYPE_2 && be16(class) == CONTEXT_CLASS
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn mac(b: &[u8]) -> [u8; 6] {
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

#[cfg(test)]
// Binary literals are grouped by RFC 8300 bit fields (Ver|O|U|TTL), not by nibbles.
#[allow(clippy::unusual_byte_groupings)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A frame written out byte by byte from RFC 8300's bit layout.
    #[rustfmt::skip]
    const FRAME: [u8; 44] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01,             // dst MAC
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02,             // src MAC
        0x89, 0x4f,                                     // EtherType NSH
        0b00_0_0_1111, 0b11_000101,                     // Ver 0, O 0, U 0, TTL 63, Length 5
        0x02, 0x03,                                     // U 0, MD type 2, next protocol Ethernet
        0x00, 0x01, 0x02, 0xfe,                         // SPI 0x000102, SI 254
        0xff, 0xf6, 0x01, 0x08,                         // class 0xFFF6, type 1, U 0, length 8
        0x00, 0x00, 0x00, 0x07,                         // epoch 7
        0x00, 0x06, 0x80, 0x01,                         // trailer length 6, flags 0x8001
        0xaa, 0xbb, 0xcc, 0xdd,                         // inner frame
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00,             // trailer: an empty message
    ];

    /// A trailer longer than the bytes after the header would make a checked frame's accessors
    /// panic later: it is refused where it is set.
    #[test]
    #[should_panic(expected = "does not fit the frame")]
    fn a_trailer_longer_than_the_frame_is_refused() {
        let mut bytes = [0u8; field::PAYLOAD + 10];
        let mut frame = NshFrame::new_unchecked(&mut bytes[..]);
        frame.set_trailer_len(10);
        frame.set_trailer_len(11);
    }

    fn repr() -> NshRepr {
        NshRepr {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            propagating: false,
            ttl: 63,
            spi: 0x000102,
            si: 254,
            epoch: 7,
            flags: 0x8001,
            trailer_len: 6,
        }
    }

    #[test]
    fn view_reads_hand_built_frame() {
        let f = NshFrame::new_checked(&FRAME[..]).expect("valid");
        assert_eq!(f.dst_mac(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.src_mac(), [2, 0, 0, 0, 0, 2]);
        assert!(!f.is_propagating());
        assert_eq!(f.ttl(), 63);
        assert_eq!(f.spi(), 0x000102);
        assert_eq!(f.si(), 254);
        assert_eq!(f.epoch(), 7);
        assert_eq!(f.trailer_len(), 6);
        assert_eq!(f.flags(), 0x8001);
        assert_eq!(f.inner(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(f.trailer(), &[1, 0, 0, 0, 0, 0]);
        assert_eq!(NshRepr::parse(&f), Ok(repr()));
        assert!(carries_ftc_context(&FRAME));
    }

    #[test]
    fn repr_emits_hand_built_frame() {
        let r = repr();
        let mut buf = [0xffu8; 44];
        assert_eq!(r.frame_len(4), buf.len());
        let mut f = NshFrame::new_unchecked(&mut buf[..]);
        r.emit(&mut f);
        f.inner_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        f.trailer_mut().copy_from_slice(&[1, 0, 0, 0, 0, 0]);
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn setters_keep_neighbouring_bits() {
        let mut buf = FRAME;
        let mut f = NshFrame::new_unchecked(&mut buf[..]);
        f.set_ttl(0b10_1010);
        f.set_propagating(true);
        assert_eq!(f.ttl(), 0b10_1010);
        assert!(f.is_propagating());
        assert_eq!(buf[14], 0b00_1_0_1010);
        assert_eq!(buf[15], 0b10_000101);
        let mut f = NshFrame::new_unchecked(&mut buf[..]);
        f.set_ttl(0);
        f.set_propagating(false);
        f.set_spi(0xabcdef12);
        assert_eq!(f.spi(), 0xcdef12);
        assert_eq!(buf[14..16], [0, 5]);
        assert_eq!(buf[21], 0xfe);
    }

    #[test]
    fn propagating_frame_ignores_padding() {
        let mut buf = [0u8; 60];
        let r = NshRepr {
            propagating: true,
            trailer_len: 6,
            ..repr()
        };
        r.emit(&mut NshFrame::new_unchecked(&mut buf[..]));
        buf[34..40].copy_from_slice(&[1, 0, 0, 0, 0, 0]);
        let f = NshFrame::new_checked(&buf[..]).expect("valid");
        assert!(f.inner().is_empty());
        assert_eq!(f.trailer(), &[1, 0, 0, 0, 0, 0]);
        assert_eq!(NshRepr::parse(&f), Ok(r));
    }

    #[test]
    fn unassigned_bits_are_ignored() {
        let mut buf = FRAME;
        buf[14] |= 0x10;
        buf[16] |= 0xf0;
        buf[25] |= 0x80;
        let f = NshFrame::new_checked(&buf[..]).expect("valid");
        assert_eq!(NshRepr::parse(&f), Ok(repr()));
    }

    #[test]
    fn rejects_each_bad_field() {
        let bad = |i: usize, v: u8| {
            let mut buf = FRAME;
            buf[i] = v;
            NshFrame::new_checked(&buf[..]).err()
        };
        assert_eq!(bad(12, 0x08), Some(WireError::BadEtherType));
        assert_eq!(bad(14, 0x4f), Some(WireError::BadVersion));
        assert_eq!(bad(15, 0xc6), Some(WireError::BadLength));
        assert_eq!(bad(16, 0x01), Some(WireError::BadMdType));
        assert_eq!(bad(17, 0x01), Some(WireError::BadNextProtocol));
        assert_eq!(bad(22, 0x00), Some(WireError::BadContext));
        assert_eq!(bad(24, 0x02), Some(WireError::BadContext));
        assert_eq!(bad(25, 0x10), Some(WireError::BadContext));
        // Trailer longer than what follows the header.
        assert_eq!(bad(31, 11), Some(WireError::Truncated));
        assert_eq!(bad(31, 10), None);
        for cut in 0..NshRepr::HEADER_LEN {
            assert_eq!(
                NshFrame::new_checked(&FRAME[..cut]).err(),
                Some(WireError::Truncated)
            );
        }
    }

    #[test]
    fn carries_ftc_context_cases() {
        assert!(!carries_ftc_context(&[]));
        assert!(!carries_ftc_context(&FRAME[..23]));
        assert!(carries_ftc_context(&FRAME[..24]));
        let mut other_class = FRAME;
        other_class[23] = 0xf5;
        assert!(!carries_ftc_context(&other_class));
        let mut ipv4 = FRAME;
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert!(!carries_ftc_context(&ipv4));
        let mut md1 = FRAME;
        md1[16] = 0x01;
        assert!(!carries_ftc_context(&md1));
    }

    fn any_repr() -> impl Strategy<Value = NshRepr> {
        (
            any::<([u8; 6], [u8; 6], bool)>(),
            0u8..64,
            0u32..1 << 24,
            any::<(u8, u32, u16, u16)>(),
        )
            .prop_map(
                |((dst_mac, src_mac, propagating), ttl, spi, (si, epoch, flags, trailer_len))| {
                    NshRepr {
                        dst_mac,
                        src_mac,
                        propagating,
                        ttl,
                        spi,
                        si,
                        epoch,
                        flags,
                        trailer_len,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn repr_round_trip(r in any_repr(), inner_len in 0usize..64, junk in any::<u8>()) {
            let mut buf = vec![junk; r.frame_len(inner_len)];
            r.emit(&mut NshFrame::new_unchecked(&mut buf[..]));
            let f = NshFrame::new_checked(&buf[..]).expect("emitted frame is valid");
            prop_assert_eq!(NshRepr::parse(&f), Ok(r));
            prop_assert_eq!(f.inner().len(), if r.propagating { 0 } else { inner_len });
            prop_assert_eq!(f.trailer().len(), usize::from(r.trailer_len));
            prop_assert!(carries_ftc_context(&buf));
        }

        #[test]
        fn checked_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = carries_ftc_context(&bytes);
            if let Ok(f) = NshFrame::new_checked(&bytes[..]) {
                let _ = (f.inner(), f.trailer(), f.ttl(), f.spi(), f.epoch());
                prop_assert!(NshRepr::parse(&f).is_ok());
                prop_assert!(carries_ftc_context(&bytes));
            }
        }

        #[test]
        fn checked_never_panics_near_valid(i in 0usize..44, v in any::<u8>(), cut in 0usize..=44) {
            let mut buf = FRAME;
            buf[i] = v;
            if let Ok(f) = NshFrame::new_checked(&buf[..cut]) {
                let _ = (f.inner(), f.trailer());
                prop_assert!(NshRepr::parse(&f).is_ok());
            }
        }
    }
}
