//! Control frames (orchestrator ↔ servers, state transfer): decoding arbitrary bytes never
//! panics, and what decodes re-encodes to the very same bytes (the encoding is canonical) and
//! reads the same from a stream. The tag makes random frames fail before their body is parsed,
//! so the input is also framed and tagged here, independently of the crate, to reach the body
//! parser: the first byte picks the kind, the rest is the body.
#![no_main]

use std::io::Cursor;

use ftc_orchestrator::control::{
    decode, encode, read_message, ControlError, Key, KEY_CONTEXT, VERSION,
};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz";
const MAX_BODY: usize = 1 << 20;

fn check(key: &Key, frame: &[u8]) {
    let decoded = decode(frame, key, MAX_BODY);
    let read = read_message(&mut Cursor::new(frame), key, MAX_BODY);
    match &decoded {
        Ok(msg) => assert_eq!(&encode(msg, key), frame, "{msg:?} re-encodes differently"),
        Err(ControlError::Io(e)) => panic!("decode reported I/O: {e}"),
        Err(_) => {}
    }
    // A stream reads the first frame of the bytes: the whole of them exactly when they decode.
    match read {
        Ok(msg) => {
            let first = encode(&msg, key);
            assert!(frame.starts_with(&first), "{msg:?} read from other bytes");
            assert_eq!(decoded.is_ok(), first.len() == frame.len());
        }
        Err(_) => assert!(decoded.is_err(), "a frame that decodes does not read"),
    }
}

fuzz_target!(|data: &[u8]| {
    let key = Key::new(SECRET).unwrap();
    check(&key, data);
    if let Some((&kind, body)) = data.split_first() {
        let mut frame = b"FTCC".to_vec();
        frame.extend_from_slice(&[VERSION, kind]);
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(body);
        let mac = blake3::keyed_hash(&blake3::derive_key(KEY_CONTEXT, SECRET), &frame);
        frame.extend_from_slice(mac.as_bytes());
        check(&key, &frame);
    }
});
