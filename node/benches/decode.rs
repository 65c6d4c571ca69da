//! Reading frames off the wire ([`ftc_node::nsh`]): a batch of frames decoded into buffers of
//! their own (`decode`, each frame's two allocated and freed) against the same batch decoded into
//! the buffers of the batch before (`decode_with`, as a node does with the buffers of the frames
//! it sent or released), for a full-size and a short customer frame.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ftc_chain::middlebox::Direction;
use ftc_node::nsh::{decode, decode_with, encode, Path, Received};
use ftc_node::{Frame, Packet};

/// Frames a node reads per round, at most (a link's batch).
const BATCH: usize = 64;

/// Trailer bytes: a message with a log and a commit vector or two.
const TRAILER: usize = 300;

/// A data frame's bytes with a customer frame of `len` bytes.
fn wire_frame(len: usize) -> Vec<u8> {
    let frame = Frame {
        packet: Some(Packet {
            handle: (),
            flow: 0,
            dir: Direction::Outbound,
            bytes: (0..len).map(|i| i as u8).collect(),
        }),
        flags: 0,
        msg: vec![0x5a; TRAILER],
    };
    let path = Path {
        chain: 7,
        hop: 1,
        epoch: 1,
    };
    let mut bytes = Vec::new();
    encode(&frame, path, &mut bytes).expect("the frame encodes");
    bytes
}

fn decode_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(3));
    for len in [1514, 64] {
        let bytes = wire_frame(len);
        let mut batch: Vec<Received> = Vec::with_capacity(BATCH);
        group.bench_function(format!("new buffers, {len}-byte customer frame"), |b| {
            b.iter(|| {
                batch.extend((0..BATCH).map(|_| decode(black_box(&bytes)).expect("decodes")));
                black_box(&batch);
                batch.clear();
            });
        });
        let mut spare: Vec<Vec<u8>> = Vec::new();
        group.bench_function(format!("spare buffers, {len}-byte customer frame"), |b| {
            b.iter(|| {
                batch.extend(
                    (0..BATCH)
                        .map(|_| decode_with(black_box(&bytes), &mut spare).expect("decodes")),
                );
                black_box(&batch);
                for r in batch.drain(..) {
                    spare.extend(r.frame.packet.map(|p| p.bytes));
                    spare.push(r.frame.msg);
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decode_batch);
criterion_main!(benches);
