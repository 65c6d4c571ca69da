//! Frames between servers as bytes (the UDP and AF_XDP transports): decoding arbitrary bytes
//! never panics, and what decodes encodes to bytes that decode to the same frame.
#![no_main]

use ftc_node::nsh::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(got) = decode(data) {
        let mut again = Vec::new();
        encode(&got.frame, got.path, &mut again).expect("a decoded frame encodes");
        assert_eq!(decode(&again).expect("an encoded frame decodes"), got);
    }
});
