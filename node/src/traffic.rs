//! Generated customer traffic: TCP requests from the inside network to a server behind the
//! chain, for the runtime's generator and the simulation.

/// A TCP/IPv4 request of flow `flow` (client 10.0.x.y, its own port) to 198.51.100.10:80 with
/// sequence number `seq`, `size` bytes long in all (Ethernet, no FCS).
pub fn request(flow: u32, seq: u32, size: usize) -> Vec<u8> {
    let client = [10, 0, (flow / 250) as u8, (flow % 250 + 1) as u8];
    let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(client, [198, 51, 100, 10], 64)
        .tcp(40_000 + (flow % 20_000) as u16, 80, seq, 65_535)
        .ack(1);
    let payload = vec![0x5a; size.saturating_sub(builder.size(0))];
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, &payload).expect("writing to a Vec");
    out
}
