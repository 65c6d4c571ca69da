//! Fuzzes every parser of untrusted bytes in `ftc_chain::wire`: the NSH frame, the ingress
//! sanitization test and the piggyback message; whatever parses must round-trip.
#![no_main]

use ftc_chain::wire::{carries_ftc_context, MessageRepr, MessageView, NshFrame, NshRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_frame(data);
    check_message(data);
    // Random bytes almost never carry a valid NSH header (too many fixed fields): also wrap the
    // input in a valid header built from its first bytes, so the frame and trailer paths run.
    if let [o, ttl, si, t0, t1, e0, e1, rest @ ..] = data {
        let payload_len = rest.len();
        let trailer_len = u16::from_be_bytes([*t0, *t1]) % (payload_len.min(65535) as u16 + 1);
        let repr = NshRepr {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            propagating: o & 1 != 0,
            ttl: ttl & 0x3f,
            spi: u32::from(*si) << 8 | 7,
            si: *si,
            epoch: u32::from_be_bytes([0, 0, *e0, *e1]),
            flags: u16::from(*o),
            trailer_len,
        };
        let mut frame = vec![0u8; NshRepr::HEADER_LEN + payload_len];
        repr.emit(&mut NshFrame::new_unchecked(&mut frame[..]));
        frame[NshRepr::HEADER_LEN..].copy_from_slice(rest);
        let parsed = NshFrame::new_checked(&frame[..]).expect("emitted frame is valid");
        assert_eq!(NshRepr::parse(&parsed), Ok(repr));
        check_frame(&frame);
    }
});

fn check_frame(data: &[u8]) {
    let claims_ftc = carries_ftc_context(data);

    if let Ok(frame) = NshFrame::new_checked(data) {
        assert!(claims_ftc, "a valid FTC frame must be caught at ingress");
        let repr = NshRepr::parse(&frame).expect("checked frame parses");
        let (inner, trailer) = (frame.inner(), frame.trailer());
        assert_eq!(trailer.len(), usize::from(repr.trailer_len));
        // Emit the header over a copy and parse again.
        let mut copy = data.to_vec();
        repr.emit(&mut NshFrame::new_unchecked(&mut copy[..]));
        let again = NshFrame::new_checked(&copy[..]).expect("emitted frame is valid");
        assert_eq!(NshRepr::parse(&again), Ok(repr));
        assert_eq!(again.inner(), inner);
        assert_eq!(again.trailer(), trailer);
        check_message(trailer);
    }
}

fn check_message(bytes: &[u8]) {
    let Ok(m) = MessageView::new_checked(bytes) else {
        return;
    };
    let mut sum = 0u64;
    for log in m.logs() {
        assert_eq!(log.deps().count(), log.dep_count());
        for d in log.deps() {
            sum = sum.wrapping_add(d.seq.0 ^ u64::from(d.partition.0));
        }
        for w in log.writes() {
            sum = sum.wrapping_add(w.key.len() as u64 + w.value.map_or(0, |v| v.len() as u64));
        }
    }
    for cv in m.commit_vectors() {
        for e in cv.entries() {
            sum = sum.wrapping_add(e.seq.0);
        }
    }
    std::hint::black_box(sum);
    let repr = MessageRepr::parse(&m);
    let mut out = vec![0u8; repr.buffer_len()];
    let n = repr.emit(&mut out).expect("a parsed message re-encodes");
    // Encodings are canonical (fixed-width fields, exact lengths), so the bytes come back exactly.
    assert_eq!(&out[..n], bytes);
    let again = MessageView::new_checked(&out[..n]).expect("re-encoded message is valid");
    assert_eq!(MessageRepr::parse(&again), repr);
}
