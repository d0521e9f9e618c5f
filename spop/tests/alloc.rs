//! Decoding the captured mirror NOTIFY frames makes no heap allocation beyond
//! the buffer itself: strings and binaries are views into it.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::path::Path;

use bytes::{Bytes, BytesMut};
use haproxy_spop::{Frame, FrameBody, SpopCodec};
use tokio_util::codec::Decoder;

/// Heap allocations (and reallocations) the current thread makes in `f`,
/// counted by allocation-counter's global allocator.
fn allocations(f: impl FnOnce()) -> u64 {
    allocation_counter::measure(f).count_total
}

fn mirror_frames() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut out = Vec::new();
    for v in [
        "haproxy-2.6.12",
        "haproxy-3.0.11",
        "haproxy-3.2.26",
        "haproxy-3.4.7",
    ] {
        for i in 2..=7 {
            out.push(std::fs::read(root.join(v).join(format!("mirror-0{i}-notify.bin"))).unwrap());
        }
    }
    out
}

/// Decodes, then visits every message, argument and header.
fn decode_and_visit(payload: Bytes) -> usize {
    let frame = Frame::decode(payload).unwrap();
    let FrameBody::Notify(notify) = &frame.body else {
        panic!()
    };
    let mut touched = 0;
    for msg in notify.messages() {
        touched += msg.name().len();
        for (name, value) in msg.args() {
            touched += name.len() + value.as_bytes().map_or(1, Bytes::len);
        }
        for (name, value) in msg.args_ref() {
            touched += name.len() + value.as_bytes().map_or(1, <[u8]>::len);
        }
        for (n, v) in msg.headers("arg_hdrs").unwrap().iter() {
            touched += n.len() + v.len();
        }
        touched += msg.bytes("arg_method").unwrap().len();
    }
    touched
}

// One #[test] so the measurements never overlap.
#[test]
fn decoding_mirror_notify_frames_allocates_nothing() {
    let frames = mirror_frames();
    assert_eq!(frames.len(), 24);
    for raw in &frames {
        // The buffer, shared (as the codec leaves it): made outside the count.
        let payload = Bytes::from(raw[4..].to_vec());
        let keep = payload.clone();
        let mut touched = 0;
        let n = allocations(|| touched = decode_and_visit(payload));
        assert!(touched > 100);
        assert_eq!(n, 0, "allocations decoding a {} byte NOTIFY", raw.len());
        drop(keep);
    }

    // Through the codec: frames split off one read buffer. BytesMut's first
    // split turns its storage into a shared one (one small allocation, once
    // per buffer); after that, nothing per frame.
    let stream: Vec<u8> = frames.iter().flatten().copied().collect();
    let mut buf = BytesMut::with_capacity(stream.len() * 8);
    for _ in 0..8 {
        buf.extend_from_slice(&stream);
    }
    let mut codec = SpopCodec::with_max_frame_size(1 << 20);
    let mut decoded = 0;
    let n = allocations(|| {
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            let FrameBody::Notify(notify) = &frame.body else {
                panic!()
            };
            for msg in notify.messages() {
                decoded += msg.args().count();
            }
        }
    });
    assert_eq!(decoded, 8 * 24 * 5);
    assert!(n <= 1, "{n} allocations for 192 frames through the codec");
}
