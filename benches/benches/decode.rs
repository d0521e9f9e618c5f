//! Decoding captured HAProxy frames: spop and nbari's `spop` 0.13 side by side.
//!
//! `cargo bench -p spop-benches --bench decode`
//!
//! `decode` is `Frame::decode` alone (validation of the whole frame, no
//! argument materialised); `decode+visit` also iterates every message and
//! argument and touches every value, which is what nbari's parser does
//! eagerly, so `decode+visit` vs `nbari` is the fair comparison.
//! `decode+visit` takes each value as `TypedData` (`Message::args`, strings
//! as refcounted `Bytes` views); `decode+visit_ref` as `TypedRef`
//! (`Message::args_ref`, strings as borrowed slices).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use haproxy_spop::{Frame, FrameBody, TypedData, TypedRef};

fn vector(name: &str) -> Bytes {
    let path = format!(
        "{}/../spop/tests/vectors/haproxy-2.6.12/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn visit(frame: &Frame) -> usize {
    let mut n = 0;
    match &frame.body {
        FrameBody::Notify(notify) => {
            for msg in notify.messages() {
                n += msg.name().len();
                for (name, value) in msg.args() {
                    n += name.len();
                    n += match value {
                        TypedData::String(b) | TypedData::Binary(b) => b.len(),
                        TypedData::Int64(v) => v as usize,
                        _ => 1,
                    };
                }
            }
        }
        FrameBody::HaproxyHello(h) => n += h.max_frame_size as usize + h.supported_versions.len(),
        _ => {}
    }
    n
}

fn visit_ref(frame: &Frame) -> usize {
    let mut n = 0;
    match &frame.body {
        FrameBody::Notify(notify) => {
            for msg in notify.messages() {
                n += msg.name().len();
                for (name, value) in msg.args_ref() {
                    n += name.len();
                    n += match value {
                        TypedRef::String(b) | TypedRef::Binary(b) => b.len(),
                        TypedRef::Int64(v) => v as usize,
                        _ => 1,
                    };
                }
            }
        }
        FrameBody::HaproxyHello(h) => n += h.max_frame_size as usize + h.supported_versions.len(),
        _ => {}
    }
    n
}

fn nbari_visit(frame: &dyn nbari_spop::SpopFrame) -> usize {
    use nbari_spop::frame::FramePayload;
    let mut n = 0;
    match frame.payload() {
        FramePayload::ListOfMessages(messages) => {
            for msg in messages {
                n += msg.name.len();
                for (name, value) in &msg.args {
                    n += name.len();
                    n += match value {
                        nbari_spop::TypedData::String(s) => s.len(),
                        nbari_spop::TypedData::Binary(b) => b.len(),
                        nbari_spop::TypedData::Int64(v) => *v as usize,
                        _ => 1,
                    };
                }
            }
        }
        FramePayload::KVList(kv) => n += kv.len(),
        FramePayload::ListOfActions(a) => n += a.len(),
    }
    n
}

fn bench_decode(c: &mut Criterion) {
    for (label, file) in [
        ("mirror_notify_small", "mirror-02-notify.bin"),
        ("mirror_notify_12k", "mirror-06-notify.bin"),
        ("typed_notify", "typed-01-notify.bin"),
        ("haproxy_hello", "mirror-01-haproxy-hello.bin"),
    ] {
        let wire = vector(file);
        // The codec hands spop the payload after LENGTH as one shared Bytes.
        let payload = wire.slice(4..);
        let _shared = payload.clone();
        let mut g = c.benchmark_group(format!("decode/{label}"));
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function("spop decode", |b| {
            b.iter(|| black_box(Frame::decode(black_box(payload.clone())).unwrap()))
        });
        g.bench_function("spop decode+visit", |b| {
            b.iter(|| {
                let frame = Frame::decode(black_box(payload.clone())).unwrap();
                black_box(visit(&frame))
            })
        });
        g.bench_function("spop decode+visit_ref", |b| {
            b.iter(|| {
                let frame = Frame::decode(black_box(payload.clone())).unwrap();
                black_box(visit_ref(&frame))
            })
        });
        g.bench_function("nbari parse", |b| {
            b.iter(|| {
                let (_, frame) = nbari_spop::parser::parse_frame(black_box(&wire[..])).unwrap();
                black_box(nbari_visit(frame.as_ref()))
            })
        });
        g.finish();
    }
}

fn bench_varint(c: &mut Criterion) {
    let values: Vec<u64> = vec![
        0,
        239,
        240,
        2287,
        2288,
        16380,
        264431,
        264432,
        1 << 40,
        u64::MAX,
    ];
    let mut wire = Vec::new();
    for &v in &values {
        haproxy_spop::varint::encode(v, &mut wire);
    }
    let mut g = c.benchmark_group("varint");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("spop decode x10", |b| {
        b.iter(|| {
            let mut rest = &wire[..];
            let mut sum = 0u64;
            while !rest.is_empty() {
                let (v, used) = haproxy_spop::varint::decode_slice(black_box(rest)).unwrap();
                sum = sum.wrapping_add(v);
                rest = &rest[used..];
            }
            black_box(sum)
        })
    });
    g.bench_function("nbari decode x10", |b| {
        b.iter(|| {
            let mut rest = &wire[..];
            let mut sum = 0u64;
            while !rest.is_empty() {
                let (r, v) = nbari_spop::decode_varint(black_box(rest)).unwrap();
                sum = sum.wrapping_add(v);
                rest = r;
            }
            black_box(sum)
        })
    });
    g.bench_function("spop encode x10", |b| {
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            out.clear();
            for &v in &values {
                haproxy_spop::varint::encode(black_box(v), &mut out);
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_decode, bench_varint
}
criterion_main!(benches);
