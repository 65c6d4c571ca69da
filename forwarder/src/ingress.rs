//! Sanitizing and classifying a customer frame as it enters the chain (DESIGN §7): which port it
//! came in on gives its direction, and a frame that claims FTC's NSH context class is refused.

use ftc_chain::middlebox::Direction;
use ftc_chain::wire::{carries_ftc_context, NshRepr, MESSAGE_HEADER_LEN};

/// Length of an untagged Ethernet header.
pub const ETHERNET_HEADER_LEN: usize = 14;

/// The shortest Ethernet frame on a wire (without its FCS); a NIC pads shorter ones to it.
const ETHERNET_MIN_FRAME: usize = 60;

/// The shortest customer frame the chain accepts: 20 bytes, so that its data frame (the NSH
/// header, the frame, at least an empty message's header) is never shorter than the shortest
/// Ethernet frame on a wire (60 bytes without its FCS). A shorter data frame would be padded on a physical link, and the
/// trailer, which a receiver reads from the frame's end, lost with the packet. No shorter
/// frame carries anything a middlebox could act on (an IPv4 header alone is 20 bytes).
pub const MIN_CUSTOMER_FRAME: usize = ETHERNET_MIN_FRAME - NshRepr::HEADER_LEN - MESSAGE_HEADER_LEN;

/// IEEE 802.1Q customer VLAN tag.
const ETHERTYPE_VLAN: u16 = 0x8100;
/// IEEE 802.1ad service VLAN tag (QinQ).
const ETHERTYPE_QINQ: u16 = 0x88A8;
/// Length of one VLAN tag (TPID + TCI).
const VLAN_TAG_LEN: usize = 4;
/// How many stacked VLAN tags the sanitizer looks through.
const MAX_VLAN_TAGS: usize = 2;

/// Where a customer frame entered the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// The port facing the clients (the inside of the network the chain protects).
    Inside,
    /// The port facing the servers (the outside).
    Outside,
}

impl Port {
    /// The direction of a packet that entered on this port: inside → outbound, outside → inbound.
    pub fn direction(self) -> Direction {
        match self {
            Port::Inside => Direction::Outbound,
            Port::Outside => Direction::Inbound,
        }
    }
}

/// What the forwarder decided about a frame from outside the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ingress {
    /// A customer frame: wrap it in an NSH data frame and let it pass the chain this way.
    Accept(Direction),
    /// Drop it; the reason is counted in [`crate::ForwarderStats`].
    Reject(Rejected),
}

/// Why a frame from outside the chain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejected {
    /// The frame is NSH with MD type 2 and our context class 0xFFF6 (possibly behind up to two
    /// VLAN tags): someone outside the chain tries to inject piggyback logs or commit vectors.
    #[error("frame from outside carries FTC's NSH context class")]
    ForeignFtcFrame,
    /// The frame is shorter than [`MIN_CUSTOMER_FRAME`] (20 bytes).
    #[error("frame shorter than 20 bytes")]
    Runt,
}

/// Classifies `frame`, which entered on `port`. Reads a few header fields; never panics.
pub fn classify(frame: &[u8], port: Port) -> Ingress {
    if frame.len() < MIN_CUSTOMER_FRAME {
        return Ingress::Reject(Rejected::Runt);
    }
    if claims_ftc_context(frame) {
        return Ingress::Reject(Rejected::ForeignFtcFrame);
    }
    Ingress::Accept(port.direction())
}

/// Whether `frame` is an FTC frame, untagged or behind up to [`MAX_VLAN_TAGS`] VLAN tags.
///
/// FTC's own frames are untagged, so [`carries_ftc_context`] checks fixed offsets. A tagged frame
/// claiming our class is refused too: a switch on the way could strip the tag. Each tag shifts
/// the EtherType and NSH fields by 4 bytes and the MAC addresses are not looked at, so dropping
/// 4 bytes per tag from the front lines the fields up with the untagged layout.
fn claims_ftc_context(frame: &[u8]) -> bool {
    let mut offset = 0;
    for _ in 0..=MAX_VLAN_TAGS {
        let Some(rest) = frame.get(offset..) else {
            return false;
        };
        if carries_ftc_context(rest) {
            return true;
        }
        match rest.get(12..14) {
            Some(&[a, b])
                if matches!(u16::from_be_bytes([a, b]), ETHERTYPE_VLAN | ETHERTYPE_QINQ) =>
            {
                offset += VLAN_TAG_LEN;
            }
            _ => return false,
        }
    }
    false
}
