//! Requests rebuilt from the mirror NOTIFY frames captured from real HAProxy.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use haproxy_spop::{Frame, FrameBody};
use spop_mirror::request::{build, ArgNames};

#[test]
fn captured_frames_become_requests() {
    // (file, method, path, body length, truncated)
    let want = [
        (
            "mirror-02-notify.bin",
            "GET",
            "/index.html?x=1&y=%20z",
            0,
            false,
        ),
        ("mirror-03-notify.bin", "POST", "/submit", 14, false),
        ("mirror-04-notify.bin", "GET", "/v10", 0, false),
        ("mirror-05-notify.bin", "POST", "/chunked", 12, false),
        ("mirror-06-notify.bin", "PUT", "/b12k", 12_000, false),
        // Cut to what fits the buffer: 15 096 to 15 112 bytes by version.
        ("mirror-07-notify.bin", "PUT", "/b100k", 15_000, true),
    ];
    for version in [
        "haproxy-2.6.12",
        "haproxy-3.0.11",
        "haproxy-3.2.26",
        "haproxy-3.4.7",
    ] {
        for (file, method, path, body_len, truncated) in want {
            let p = format!(
                "{}/../spop/tests/vectors/{version}/{file}",
                env!("CARGO_MANIFEST_DIR")
            );
            let wire = Bytes::from(std::fs::read(&p).unwrap());
            let frame = Frame::decode(wire.slice(4..)).unwrap();
            let FrameBody::Notify(n) = &frame.body else {
                panic!()
            };
            let msg = n.message("mirror").unwrap();
            let r = build(&msg, &ArgNames::default()).unwrap();
            let what = format!("{version}/{file}");
            assert_eq!(r.method(), method, "{what}");
            assert_eq!(r.path(), path, "{what}");
            if truncated {
                assert!((body_len..16_384).contains(&r.body_len()), "{what}");
            } else {
                assert_eq!(r.body_len(), body_len, "{what}");
            }
            assert_eq!(r.truncated(), truncated, "{what}");
            let host = r.host().unwrap_or_default();
            assert!(host.starts_with(b"127.0.0.1:"), "{what}: {host:?}");
            assert!(
                r.header("content-length").is_none(),
                "{what}: length is recomputed"
            );
            // The request is a compact copy: nothing of it points into the
            // frame (a view would keep the whole frame alive), and its
            // buffer is exactly what is kept.
            let (start, end) = (wire.as_ptr() as usize, wire.as_ptr() as usize + wire.len());
            let buf = r.buffer();
            let at = buf.as_ptr() as usize;
            assert!(
                at + buf.len() <= start || at >= end,
                "{what}: points into the frame"
            );
            let kept: usize = r.method().len()
                + r.path().len()
                + r.version().len()
                + r.host().map_or(0, <[u8]>::len)
                + r.headers().map(|(n, v)| n.len() + v.len()).sum::<usize>()
                + r.body_len();
            assert_eq!(buf.len(), kept, "{what}: buffer is exactly the request");
            assert!(
                r.size() < buf.len() + 1024,
                "{what}: counted size {} for a {}-byte buffer",
                r.size(),
                buf.len()
            );
        }
    }
}
