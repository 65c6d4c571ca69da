//! Encode + decode of a typical piggyback message: 2 update logs of 2 writes each (16-byte key,
//! 32-byte value), 2 dependencies each, plus 1 commit vector of 4 entries.

mod fixture;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use fixture::{decode, encode, message};
use ftc_chain::wire::MessageView;

fn bench(c: &mut Criterion) {
    let (logs, cv) = message();
    let mut buf = [0u8; 512];
    let n = encode(&mut buf, &logs, &cv);
    assert!(n > 0 && MessageView::new_checked(&buf[..n]).is_ok());
    println!("message: {n} bytes");

    c.bench_function("wire/encode", |b| {
        b.iter(|| encode(black_box(&mut buf), black_box(&logs), black_box(&cv)))
    });
    let msg = buf[..n].to_vec();
    c.bench_function("wire/decode", |b| b.iter(|| decode(black_box(&msg))));
    c.bench_function("wire/encode+decode", |b| {
        b.iter(|| {
            let n = encode(black_box(&mut buf), black_box(&logs), black_box(&cv));
            decode(black_box(&buf[..n]))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
