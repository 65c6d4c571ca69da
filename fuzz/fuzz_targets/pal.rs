//! FTMB's PAL bytes (PAL messages, packet requirements, resend requests, from a master or an
//! output logger over UDP or AF_XDP): decoding arbitrary bytes never panics, what decodes
//! encodes back to the same bytes, and an output logger (with its check of the numbering order)
//! fed any sequence of them, at any times, never panics.
#![no_main]

use ftc_chain::middlebox::Direction;
use ftc_node::ftmb::{pal, Logger};
use ftc_node::Packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = pal::decode(data) {
        // A message that reads back is exactly its header and accesses written again.
        let accesses: Vec<_> = pal::accesses(data).collect();
        assert_eq!(accesses.len(), usize::from(header.accesses));
        let mut again = Vec::new();
        pal::encode(&mut again, header.number, header.kind, &accesses);
        assert_eq!(again, data);
    }
    if let Ok(needs) = pal::decode_requirement(data) {
        let mut again = Vec::new();
        pal::encode_requirement(&mut again, needs);
        assert_eq!(again, data);
    }
    if let Ok(numbers) = pal::decode_resend(data) {
        let mut again = Vec::new();
        pal::encode_resend(&mut again, *numbers.start(), *numbers.end());
        assert_eq!(again, data);
    }

    // Chunks of [op, len, bytes…]: a PAL message, a packet's requirement, a clock tick.
    let mut logger = Logger::<u64>::new(4, 16, false);
    let (mut now, mut rest) = (0u64, data);
    while let [op, len, tail @ ..] = rest {
        let (chunk, next) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = next;
        match op % 3 {
            0 => {
                let _ = logger.handle_pal(chunk);
            }
            1 => {
                if let Ok(needs) = pal::decode_requirement(chunk) {
                    let bytes = vec![0; 4];
                    let packet = Packet {
                        handle: now,
                        flow: 0,
                        dir: Direction::Outbound,
                        bytes,
                    };
                    // One out of reach is refused and given back: dropped here.
                    let _ = logger.handle_packet(needs, packet);
                }
            }
            _ => now = now.saturating_add(u64::from(*len) << 20),
        }
        let _ = logger.poll_resend(now);
        while logger.poll_release().is_some() {}
    }
});
