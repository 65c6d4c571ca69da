//! Generated customer traffic: TCP requests from the inside network to a server behind the
//! chain, for the runtime's generator and the simulation.

/// Flows 0 to `MAX_FLOWS − 1` have 5-tuples of their own ([`request`]).
pub const MAX_FLOWS: u32 = 1 << 24;

/// A TCP/IPv4 request of flow `flow` (client 10.x.y.z, the flow's 24 low bits, with a port
/// of its own) to 198.51.100.10:80 with sequence number `seq`, `size` bytes long in all
/// (Ethernet, no FCS).
pub fn request(flow: u32, seq: u32, size: usize) -> Vec<u8> {
    let [_, x, y, z] = flow.to_be_bytes();
    let client = [10, x, y, z];
    let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(client, [198, 51, 100, 10], 64)
        .tcp(40_000 + (flow % 20_000) as u16, 80, seq, 65_535)
        .ack(1);
    let payload = vec![0x5a; size.saturating_sub(builder.size(0))];
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, &payload).expect("writing to a Vec");
    out
}
