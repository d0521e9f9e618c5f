//! Encoding the replies an agent sends: ACKs and AGENT-HELLO, spop and nbari's
//! `spop` 0.13 side by side, into a reused buffer.
//!
//! `cargo bench -p spop-benches --bench encode`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use haproxy_spop::{Ack, AgentHello, Capabilities, Frame, VarScope};
use nbari_spop::SpopFrame;

fn spop_ack(n: usize) -> Frame {
    let mut ack = Ack::new();
    for (i, name) in NAMES.iter().take(n).enumerate() {
        ack = ack.set_var(VarScope::TRANSACTION, *name, i as i64);
    }
    Frame::ack(7, 1, ack)
}

const NAMES: [&str; 5] = ["ip_score", "mirrored", "country", "asn", "risk"];

fn nbari_ack(n: usize) -> nbari_spop::frames::Ack {
    let mut ack = nbari_spop::frames::Ack::new(7, 1);
    for (i, name) in NAMES.iter().take(n).enumerate() {
        ack = ack.set_var(nbari_spop::VarScope::Transaction, name, i as i64);
    }
    ack
}

fn bench_encode(c: &mut Criterion) {
    for n in [1, 5] {
        let len = spop_ack(n).encoded_len() as u64 + 4;
        let mut g = c.benchmark_group(format!("encode/ack_{n}_set_var"));
        g.throughput(Throughput::Bytes(len));
        g.bench_function("spop build+encode", |b| {
            let mut buf = BytesMut::with_capacity(256);
            b.iter(|| {
                buf.clear();
                spop_ack(black_box(n))
                    .encode_framed(&mut buf, 16380)
                    .unwrap();
                black_box(buf.len())
            })
        });
        g.bench_function("nbari build+serialize_into", |b| {
            let mut buf = Vec::with_capacity(256);
            b.iter(|| {
                buf.clear();
                nbari_ack(black_box(n)).serialize_into(&mut buf).unwrap();
                black_box(buf.len())
            })
        });
        g.finish();
    }

    let hello = Frame::agent_hello(AgentHello::new(16380, Capabilities::PIPELINING));
    let mut g = c.benchmark_group("encode/agent_hello");
    g.throughput(Throughput::Bytes(hello.encoded_len() as u64 + 4));
    g.bench_function("spop encode", |b| {
        let mut buf = BytesMut::with_capacity(256);
        b.iter(|| {
            buf.clear();
            black_box(&hello).encode_framed(&mut buf, 16380).unwrap();
            black_box(buf.len())
        })
    });
    g.bench_function("nbari serialize_into", |b| {
        let mut buf = Vec::with_capacity(256);
        let hello = nbari_spop::frames::AgentHello {
            version: nbari_spop::Version::new(2, 0, 0),
            max_frame_size: 16380,
            capabilities: vec![nbari_spop::frames::FrameCapabilities::Pipelining],
        };
        b.iter(|| {
            buf.clear();
            black_box(&hello).serialize_into(&mut buf).unwrap();
            black_box(buf.len())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_encode
}
criterion_main!(benches);
