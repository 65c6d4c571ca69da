//! The benchmark message of `benches/wire.rs`, encoded and/or decoded a fixed number of times:
//! for counting instructions with `valgrind --tool=callgrind` (repeatable, unlike timings).
//!
//! `cargo build --release -p ftc-chain --example wire_ops`, then
//! `valgrind --tool=callgrind target/release/examples/wire_ops {encode|decode|both|check|walk} N` for two
//! values of N: the difference of the totals over the difference of N is the cost of one op.

#[path = "../benches/fixture/mod.rs"]
mod fixture;

use std::hint::black_box;

use fixture::{decode, encode, message};
use ftc_chain::wire::MessageView;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "both".into());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let (logs, cv) = message();
    let mut buf = [0u8; 512];
    let len = encode(&mut buf, &logs, &cv);
    assert_eq!(len, 313);
    let msg = buf[..len].to_vec();
    assert!(decode(&msg) != 0);
    let mut acc = 0u64;
    for _ in 0..n {
        match mode.as_str() {
            "encode" => acc += encode(black_box(&mut buf), black_box(&logs), black_box(&cv)) as u64,
            "decode" => acc = acc.wrapping_add(decode(black_box(&msg))),
            "walk" => {
                let m = MessageView::new_checked(black_box(&msg)).unwrap();
                acc += m.logs().map(|l| l.write_count()).sum::<usize>() as u64;
                acc += m.commit_vectors().map(|c| c.entry_count()).sum::<usize>() as u64;
            }
            "check" => acc += u64::from(MessageView::new_checked(black_box(&msg)).is_ok()),
            _ => {
                let l = encode(black_box(&mut buf), black_box(&logs), black_box(&cv));
                acc = acc.wrapping_add(decode(black_box(&buf[..l])));
            }
        }
    }
    println!("{acc}");
}
