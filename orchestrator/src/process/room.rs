//! Room for customer frames between servers (DESIGN.md §4): a frame between servers holds the
//! NSH header, a whole customer frame and its trailer (the trailer budget, or in FTC the
//! packet's own logs where longer: they always ride with it), so the ring's links must carry
//! the longest customer frame that enters the chain with both. [`check_edge`] refuses, when a
//! node starts, an edge-in whose MTU lets longer customer frames in (the links would refuse
//! their frames, and FTC would lose the logs they carry: the flow stalls); [`customer_room`]
//! bounds the customer datagrams that enter by UDP, which no MTU bounds.

use std::fmt;

use ftc_chain::wire::NshRepr;
use ftc_forwarder::ETHERNET_HEADER_LEN;
use ftc_node::xdp::VLAN_HLEN;

/// The longest customer frame that fits a frame between servers of up to `max_frame` bytes
/// beside the NSH header and `trailer` bytes of trailer.
pub fn customer_room(max_frame: usize, trailer: usize) -> usize {
    max_frame.saturating_sub(NshRepr::HEADER_LEN + trailer)
}

/// What carries the frames between servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// Ring links (AF_XDP), whose MTU bounds their frames.
    Links,
    /// UDP datagrams, of up to [`ftc_node::udp::MAX_DATAGRAM`] bytes.
    Udp,
}

/// An edge-in lets in customer frames longer than frames between servers hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoRoom {
    pub iface: String,
    /// The edge's MTU, when it could be read.
    pub mtu: Option<usize>,
    /// The longest customer frame the edge takes in.
    pub customer: usize,
    /// The longest trailer beside it ([`ServerConfig::longest_trailer`]).
    ///
    /// [`ServerConfig::longest_trailer`]: ftc_node::ServerConfig::longest_trailer
    pub trailer: usize,
    /// The longest frame between servers.
    pub max_frame: usize,
    pub carrier: Carrier,
}

impl fmt::Display for NoRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let need = self.customer + NshRepr::HEADER_LEN + self.trailer;
        write!(
            f,
            "edge-in {} takes customer frames of up to {} bytes",
            self.iface, self.customer
        )?;
        if let Some(mtu) = self.mtu {
            write!(f, " (MTU {mtu}, with the Ethernet header and a VLAN tag)")?;
        }
        write!(
            f,
            "; with the {}-byte NSH header and a trailer of up to {} bytes (the trailer budget, \
             or a packet's own logs where longer), frames between servers need {need} bytes, \
             but ",
            NshRepr::HEADER_LEN,
            self.trailer
        )?;
        let edge_mtu = customer_room(self.max_frame, self.trailer)
            .checked_sub(ETHERNET_HEADER_LEN + VLAN_HLEN)
            .filter(|&m| m > 0);
        match self.carrier {
            Carrier::Links => write!(
                f,
                "the ring links carry {} (MTU {}): give the ring links an MTU of {} or more",
                self.max_frame,
                self.max_frame.saturating_sub(ETHERNET_HEADER_LEN),
                need - ETHERNET_HEADER_LEN
            )?,
            Carrier::Udp => write!(
                f,
                "UDP datagrams between servers carry {}: carry them on ring links of an MTU of \
                 {} or more",
                self.max_frame,
                need - ETHERNET_HEADER_LEN
            )?,
        }
        match edge_mtu {
            Some(mtu) => write!(f, ", or the edge one of {mtu} or less"),
            None => Ok(()),
        }
    }
}

/// Refuses edge-in `iface` (of MTU `mtu`, when known) if it takes customer frames of up to
/// `customer` bytes that frames between servers of up to `max_frame` bytes, carried as
/// `carrier` says, do not hold with the NSH header and `trailer` bytes of trailer
/// ([`ftc_node::ServerConfig::longest_trailer`]).
pub fn check_edge(
    iface: &str,
    mtu: Option<usize>,
    customer: usize,
    trailer: usize,
    max_frame: usize,
    carrier: Carrier,
) -> Result<(), NoRoom> {
    if customer <= customer_room(max_frame, trailer) {
        return Ok(());
    }
    Err(NoRoom {
        iface: iface.to_string(),
        mtu,
        customer,
        trailer,
        max_frame,
        carrier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lab's edges (MTU 1500) fit its ring links (MTU 3500) with the default trailer budget;
    /// a jumbo edge does not, and the refusal names both MTUs and what would do.
    #[test]
    fn an_edge_longer_than_the_links_hold_is_refused_with_what_would_do() {
        let tagged = |mtu: usize| mtu + ETHERNET_HEADER_LEN + VLAN_HLEN;
        assert_eq!(
            check_edge(
                "cli-in",
                Some(1500),
                tagged(1500),
                1024,
                3514,
                Carrier::Links
            ),
            Ok(())
        );
        let header = NshRepr::HEADER_LEN;
        // The longest that fits, and a byte more.
        let room = 3514 - header - 1024;
        assert_eq!(customer_room(3514, 1024), room);
        assert!(check_edge("e", None, room, 1024, 3514, Carrier::Links).is_ok());
        let err = check_edge("e", None, room + 1, 1024, 3514, Carrier::Links).unwrap_err();
        assert_eq!(err.customer, room + 1);
        let err = check_edge(
            "cli-in",
            Some(9000),
            tagged(9000),
            1024,
            3514,
            Carrier::Links,
        )
        .unwrap_err()
        .to_string();
        let need = 9018 + header + 1024;
        assert_eq!(
            err,
            format!(
                "edge-in cli-in takes customer frames of up to 9018 bytes (MTU 9000, with the \
                 Ethernet header and a VLAN tag); with the {header}-byte NSH header and a trailer \
                 of up to 1024 bytes (the trailer budget, or a packet's own logs where longer), \
                 frames between servers need {need} bytes, but the ring links carry 3514 (MTU \
                 3500): give the ring links an MTU of {} or more, or the edge one of {} or less",
                need - 14,
                room - 18
            )
        );
        let err = check_edge("e", Some(9000), 9018, 1024, 9216, Carrier::Udp).unwrap_err();
        assert!(
            err.to_string()
                .contains("UDP datagrams between servers carry 9216: carry them on ring links"),
            "{err}"
        );
    }
}
